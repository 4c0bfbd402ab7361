//! podctl: the podd command-line client. Output and errors follow kubectl's: aligned tables
//! with kubectl's columns, `-o json|yaml|wide|name`, and messages that name the object and
//! what to do.

// A command-line tool: printing to stdout and stderr is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// Every [dependencies] entry is used (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod age;
mod apply;
mod cli;
mod commands;
mod get;
mod manifest;
mod table;
mod views;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = commands::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

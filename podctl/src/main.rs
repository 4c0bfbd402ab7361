//! podctl: the podd command-line client.

mod age;
mod cli;
mod manifest;
mod table;
mod views;

fn main() {}

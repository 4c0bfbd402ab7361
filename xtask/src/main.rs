//! `cargo xtask`: the project's build, test, benchmark and node-setup tasks.
//!
//! The xtask is a command-line tool whose output is its interface, so it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod build_ebpf;
mod cluster;
mod codegen_protobuf;
mod fuzz;
mod libtest_failures;
mod oci_conformance;
mod prereqs;
mod process;
mod quickstart;
mod test_all;
mod up;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "podd's build, test, benchmark and node-setup tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel-side eBPF crate (pinned toolchain, bpf-linker) where the loader embeds it.
    BuildEbpf,
    /// Run every `vm_*` integration test target inside one QEMU boot of Debian 12's kernel.
    VmTest(VmTestArgs),
    /// The whole suite: build-ebpf, fmt, clippy, host tests, fuzzing, the VM suite and the
    /// deliberate-failure check. Ends with `N passed, N failed`.
    Test,
    /// Set up this Debian 12 node (apt prerequisites, release build, install) and start podd.
    Up(up::UpArgs),
    /// Run the README's setup command and quickstart from a fresh clone (of HEAD), in a network
    /// namespace of its own, then `podd reset`, and check nothing is left.
    Quickstart,
    /// A multi-node cluster on this machine: `cluster up --nodes N`, `cluster down`.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Build the cargo-fuzz targets (fuzz/) and run each for a bounded time on its corpus.
    Fuzz(fuzz::FuzzArgs),
    /// Regenerate api/src/protobuf/messages.rs (the protobuf field table) from the k8s-pb and
    /// k8s-openapi crates in the cargo registry.
    CodegenProtobuf {
        /// The k8s-pb crate's directory (default: found in the cargo registry).
        #[arg(long)]
        k8s_pb: Option<PathBuf>,
        /// The k8s-openapi crate's directory (default: found in the cargo registry).
        #[arg(long)]
        k8s_openapi: Option<PathBuf>,
    },
    /// Build the OCI runtime-tools validation suite once (cached) and run every binary of it
    /// against podd-oci; prints each binary's TAP counts and fails on an unexpected failure.
    OciConformance(OciConformanceArgs),
    /// Run a benchmark: `cargo xtask bench NAME` (no NAME lists them).
    Bench {
        /// Benchmark name, e.g. scheduler, runtime, lb, pods, control-plane, e2e.
        name: Option<String>,
        /// Extra arguments for the benchmark binary.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Build podd, podd-shim and podctl and start a server and N agents.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Stop the cluster and remove everything it made.
    Down,
}

#[derive(clap::Args)]
struct OciConformanceArgs {
    /// Where the suite is built (default: $PODD_OCI_CONFORMANCE_CACHE or /var/cache/podd-oci-conformance).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The suite's source tarball (default: ../shared/conformance/runtime-tools-260e151.tar.gz).
    #[arg(long)]
    tarball: Option<PathBuf>,
    /// The runtime to test (default: a release build of podd-oci).
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Kill one validation binary after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Only these validation binaries, e.g. `linux_seccomp` (default: all).
    only: Vec<String>,
}

#[derive(clap::Args)]
struct VmTestArgs {
    /// Only these packages' `vm_*` targets (default: the whole workspace).
    #[arg(short = 'p', long = "package")]
    packages: Vec<String>,
    /// Only these `vm_*` targets, e.g. `--test vm_harness` (repeatable).
    #[arg(long = "test")]
    targets: Vec<String>,
    /// Pass PODD_VM_FAIL_ON_PURPOSE=1 into the guest, so the harness's deliberate failure fails.
    #[arg(long)]
    fail_on_purpose: bool,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = 2400)]
    timeout: u64,
    /// Kill one test binary after this many seconds inside the guest.
    #[arg(long, default_value_t = 900)]
    binary_timeout: u64,
    /// Where the kernel and busybox downloads are cached (default: $PODD_VM_CACHE or /var/cache/podd-vm).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Guest memory, as QEMU's -m takes it.
    #[arg(long, default_value = "4G")]
    memory: String,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Show the kernel's boot messages.
    #[arg(long)]
    verbose_kernel: bool,
    /// Only tests whose name contains this (passed to each test binary as its filter).
    #[arg(last = true)]
    filter: Vec<String>,
}

impl VmTestArgs {
    fn into_options(self) -> vm::VmOptions {
        let fail_on_purpose = self.fail_on_purpose
            || std::env::var("PODD_VM_FAIL_ON_PURPOSE").is_ok_and(|v| v == "1");
        vm::VmOptions {
            // Building the whole workspace needs the eBPF object; one package may not.
            build_ebpf: self.packages.is_empty(),
            packages: self.packages,
            targets: self.targets,
            fail_on_purpose,
            timeout: std::time::Duration::from_secs(self.timeout),
            binary_timeout_secs: self.binary_timeout,
            cache_dir: self.cache_dir.unwrap_or_else(vm::default_cache_dir),
            memory: self.memory,
            cpus: self.cpus,
            verbose_kernel: self.verbose_kernel,
            filter: self.filter,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BuildEbpf => build_ebpf::build_ebpf().map(|()| true),
        Command::VmTest(args) => vm::vm_test(&args.into_options()).map(|report| report.success()),
        Command::Test => test_all::run(),
        Command::Up(args) => up::run(&args).map(|()| true),
        Command::Quickstart => quickstart::run().map(|()| true),
        Command::Cluster {
            action: ClusterAction::Up { nodes },
        } => cluster::up(nodes).map(|()| true),
        Command::Cluster {
            action: ClusterAction::Down,
        } => cluster::down().map(|()| true),
        Command::Fuzz(args) => fuzz::run_cli(&args),
        Command::CodegenProtobuf {
            k8s_pb,
            k8s_openapi,
        } => codegen_protobuf::run(k8s_pb, k8s_openapi).map(|()| true),
        Command::OciConformance(args) => oci_conformance::run_suite(&oci_conformance::Options {
            cache_dir: args
                .cache_dir
                .unwrap_or_else(oci_conformance::default_cache_dir),
            tarball: args
                .tarball
                .unwrap_or_else(oci_conformance::default_tarball),
            runtime: args.runtime,
            timeout: std::time::Duration::from_secs(args.timeout),
            only: args.only,
        }),
        Command::Bench { name, args } => bench::run(name.as_deref(), &args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

//! `cargo xtask build-ebpf`: builds the kernel-side eBPF crate (`ebpf/podd-ebpf`) that
//! `podd-lb` embeds. (Owned by the eBPF work.)
//!
//! Installs what is missing, once, and says so: `rust-src` of the workspace's pinned toolchain
//! (for `-Z build-std=core`), LLVM 22 development packages (apt) and `bpf-linker` 0.13.0 built
//! against them. Then builds `podd-ebpf` in release for `bpfel-unknown-none` into
//! `ebpf/podd-ebpf/target/`, where `ebpf/podd-lb/build.rs` picks the object up.
//!
//! Why the pinned toolchain and not nightly: bpf-linker reads rustc's LLVM bitcode, so rustc's
//! LLVM must not be newer than bpf-linker's. Nightly moved to LLVM 23 (its bitcode fails with
//! "Invalid record"); the pinned 1.95.0 is LLVM 22, like Debian's llvm-22 that bpf-linker is
//! built against, and never moves. `RUSTC_BOOTSTRAP=1` lets it take `-Z build-std`.
#![allow(clippy::print_stderr)]

use anyhow::{Context, bail};
use std::process::Command;

use crate::process::workspace_root;

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const APT_PACKAGES: [&str; 4] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];

/// A command with the outer cargo's environment removed, so that nested cargo/rustup pick the
/// toolchain and target dir we ask for, not the ones `cargo xtask` runs under.
fn clean(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let keep = k == "CARGO_HOME" || k == "RUSTUP_HOME";
        if !keep
            && (k.starts_with("CARGO_")
                || k.starts_with("RUSTC")
                || k.starts_with("RUSTUP_TOOLCHAIN")
                || k == "RUSTFLAGS"
                || k == "RUSTDOCFLAGS")
        {
            c.env_remove(&k);
        }
    }
    c
}

fn run(mut c: Command, what: &str) -> anyhow::Result<()> {
    eprintln!("build-ebpf: {what}: {c:?}");
    let status = c.status().with_context(|| format!("running {c:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status}): {c:?}");
    }
    Ok(())
}

fn output(mut c: Command) -> String {
    c.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The toolchain the workspace pins in rust-toolchain.toml (its LLVM is bpf-linker's).
fn pinned_toolchain() -> anyhow::Result<String> {
    let path = workspace_root().join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.split('"').nth(1))
        .next()
        .map(str::to_string)
        .with_context(|| format!("{} names no channel", path.display()))
}

fn ensure_rust_src(toolchain: &str) -> anyhow::Result<()> {
    let mut list = clean("rustup");
    list.args(["component", "list", "--installed", "--toolchain", toolchain]);
    if output(list).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("build-ebpf: {toolchain} has no rust-src; installing it");
    let mut c = clean("rustup");
    c.args(["toolchain", "install", toolchain, "--profile", "minimal"])
        .args(["--component", "rust-src"]);
    run(c, &format!("installing {toolchain} + rust-src"))
}

fn bpf_linker_ok() -> bool {
    let mut c = clean("bpf-linker");
    c.arg("--version");
    output(c).contains(BPF_LINKER_VERSION)
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let mut c = Command::new("dpkg-query");
            c.args(["-W", "-f=${Status}", p]);
            !output(c).contains("install ok installed")
        })
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "build-ebpf: bpf-linker needs LLVM 22 development files; installing {missing:?} with apt-get"
        );
        let mut c = Command::new("apt-get");
        c.args(["install", "-y"]).args(&missing);
        run(c, "installing LLVM 22 development packages")?;
    }
    eprintln!("build-ebpf: installing bpf-linker {BPF_LINKER_VERSION} built against {LLVM_PREFIX}");
    let mut c = clean("cargo");
    c.env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    run(c, "installing bpf-linker")?;
    if !bpf_linker_ok() {
        bail!(
            "bpf-linker {BPF_LINKER_VERSION} is still not on PATH after installing; add ~/.cargo/bin to PATH"
        );
    }
    Ok(())
}

pub fn build_ebpf() -> anyhow::Result<()> {
    let toolchain = pinned_toolchain()?;
    ensure_rust_src(&toolchain)?;
    ensure_bpf_linker()?;
    let crate_dir = workspace_root().join("ebpf/podd-ebpf");
    let target_dir = crate_dir.join("target");
    let mut c = clean("cargo");
    c.current_dir(&crate_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .arg(format!("+{toolchain}"))
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ]);
    c.arg(&target_dir);
    run(c, "building podd-ebpf")?;
    let object = target_dir.join("bpfel-unknown-none/release/podd-ebpf");
    if !object.exists() {
        bail!("the build finished but {} is missing", object.display());
    }
    eprintln!(
        "build-ebpf: built {} (embedded by podd-lb)",
        object.display()
    );
    Ok(())
}

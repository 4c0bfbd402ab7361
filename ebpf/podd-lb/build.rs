//! Embeds the kernel object built by `cargo xtask build-ebpf`.
//!
//! The eBPF crate needs `-Z build-std=core` (the pinned toolchain with RUSTC_BOOTSTRAP=1) and
//! bpf-linker, so the normal build does not compile it; it takes the object from
//! `ebpf/podd-ebpf/target/bpfel-unknown-none/release/`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_source(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let ebpf_dir = manifest.join("../podd-ebpf");
    let object = ebpf_dir.join("target/bpfel-unknown-none/release/podd-ebpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("podd-lb.bpf.o");
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rerun-if-changed={}", ebpf_dir.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../podd-lb-common/src").display()
    );

    let built = match std::fs::metadata(&object).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(_) => panic!(
            "\n\npodd-lb embeds the eBPF object {}, which is not built yet.\n\
             Run `cargo xtask build-ebpf` first (it installs the pinned toolchain's rust-src and \
             bpf-linker if missing, then builds ebpf/podd-ebpf for bpfel-unknown-none).\n\n",
            object.display()
        ),
    };
    let sources = [ebpf_dir.join("src"), manifest.join("../podd-lb-common/src")];
    if sources
        .iter()
        .filter_map(|d| newest_source(d))
        .any(|t| t > built)
    {
        println!(
            "cargo:warning=the eBPF object is older than its sources; run `cargo xtask build-ebpf`"
        );
    }
    std::fs::copy(&object, &out)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", object.display(), out.display()));
}

//! `cargo xtask build-ebpf`: builds the kernel-side eBPF crate. (Owned by the eBPF work.)

pub fn build_ebpf() -> anyhow::Result<()> {
    anyhow::bail!("build-ebpf is not implemented yet")
}

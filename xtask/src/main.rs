mod build_ebpf;

fn main() -> anyhow::Result<()> {
    build_ebpf::build_ebpf()
}

//! The same end-to-end scenario as `e2e_cluster`, in the VM: Debian 12's 6.1 kernel with the
//! cgroup v2 controllers (and cgroup2 mounted with nsdelegate, as systemd hosts have it).
//!
//! Run by `cargo xtask vm-test -p podd-tests --test vm_e2e_cluster` after
//! `cargo build -p podd -p podd-pod -p podctl`.

mod scenario;

#[test]
#[ignore = "vm: the scenario with real cgroup v2 controllers; run by cargo xtask vm-test"]
fn three_node_cluster_end_to_end_in_the_vm() -> anyhow::Result<()> {
    assert_eq!(
        std::env::var("PODD_IN_VM").as_deref(),
        Ok("1"),
        "run it with `cargo xtask vm-test`"
    );
    scenario::three_node_cluster_end_to_end()
}

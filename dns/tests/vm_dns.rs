//! The cluster DNS test on the VM's Debian 6.1 kernel (`cargo xtask vm-test`).

mod common;

#[test]
#[ignore = "vm: runs on the 6.1 kernel; run by cargo xtask vm-test"]
fn vm_raw_queries_from_a_pod_namespace() {
    common::raw_queries();
}

//! Class 2 in the VM: the device attack of `security::devices` on Debian's 6.1 kernel, where
//! the pod cgroups live in a real cgroup2 tree with every controller (the host runs it on its
//! hybrid tree). A default pod makes and opens nodes for the guest's loop, tun and fuse
//! devices in its /dev and its root filesystem; every open must fail.

#[path = "../security/pod_node.rs"]
pub(crate) mod pod_node;

use pod_node::{
    PodNode, assert_default_pod_refused, attack_script, cgroup2_mount, exec_sh, sleeper,
    wait_running,
};

#[test]
#[ignore = "vm: needs Debian's kernel and a cgroup2 tree with controllers; run by cargo xtask vm-test"]
fn a_default_pod_can_neither_make_nor_open_host_devices_in_the_vm() {
    assert_eq!(
        std::env::var("PODD_IN_VM").as_deref(),
        Ok("1"),
        "this test runs inside the VM (cargo xtask vm-test)"
    );
    assert_eq!(
        cgroup2_mount(),
        std::path::Path::new("/sys/fs/cgroup"),
        "the guest's cgroup2 is at /sys/fs/cgroup"
    );
    let node = PodNode::new("vmdev", 220);
    let m = node.manager();
    let images = node.busybox();
    let pod = sleeper("vm-dev-attack", "sec-vmdev-1", "busybox", None);
    m.run_pod(&pod, &images).unwrap();
    wait_running(&m, "sec-vmdev-1");
    let (_, out) = exec_sh(&m, "sec-vmdev-1", &attack_script());
    println!("default pod in the VM:\n{out}");
    assert_default_pod_refused(&out);
    m.stop_pod("sec-vmdev-1").unwrap();
}

//! The core load-balancer tests on the VM's Debian 12 kernel (6.1), run by
//! `cargo xtask vm-test` inside one QEMU boot (cgroup2 at /sys/fs/cgroup there).

mod common;
use common::scenarios;

#[test]
#[ignore = "vm: runs on the Debian 6.1 kernel; run by cargo xtask vm-test"]
fn vm_spread_over_three_backends() {
    scenarios::spread_over_three_backends();
}

#[test]
#[ignore = "vm: runs on the Debian 6.1 kernel; run by cargo xtask vm-test"]
fn vm_udp_reply_and_peer_are_the_vip() {
    scenarios::udp_reply_and_peer_are_the_vip();
}

#[test]
#[ignore = "vm: runs on the Debian 6.1 kernel; run by cargo xtask vm-test"]
fn vm_unready_backend_gets_no_new_connections() {
    scenarios::unready_backend_gets_no_new_connections();
}

#[test]
#[ignore = "vm: runs on the Debian 6.1 kernel; run by cargo xtask vm-test"]
fn vm_no_backend_refuses_at_once() {
    scenarios::no_backend_refuses_at_once();
}

#[test]
#[ignore = "vm: runs on the Debian 6.1 kernel; run by cargo xtask vm-test"]
fn vm_process_outside_cgroup_is_not_redirected() {
    scenarios::process_outside_cgroup_is_not_redirected();
}

#[test]
#[ignore = "vm: runs on the Debian 6.1 kernel; run by cargo xtask vm-test"]
fn vm_ten_thousand_services_and_minimal_resync() {
    scenarios::ten_thousand_services_and_minimal_resync();
}

#[test]
#[ignore = "vm: runs on the Debian 6.1 kernel; run by cargo xtask vm-test"]
fn vm_restart_keeps_service_reachable() {
    scenarios::restart_keeps_service_reachable();
}

#[test]
#[ignore = "vm: runs on the Debian 6.1 kernel; run by cargo xtask vm-test"]
fn vm_affinity_and_maglev_are_sticky() {
    scenarios::affinity_and_maglev_are_sticky();
}

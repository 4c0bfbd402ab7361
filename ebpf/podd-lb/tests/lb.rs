//! The load balancer on this host's kernel, for real: programs attached to a test cgroup,
//! clients and backends in network namespaces the tests make. Run as root.

mod common;
use common::scenarios;

#[test]
fn spread_over_three_backends() {
    scenarios::spread_over_three_backends();
}

#[test]
fn udp_reply_and_peer_are_the_vip() {
    scenarios::udp_reply_and_peer_are_the_vip();
}

#[test]
fn unready_backend_gets_no_new_connections() {
    scenarios::unready_backend_gets_no_new_connections();
}

#[test]
fn no_backend_refuses_at_once() {
    scenarios::no_backend_refuses_at_once();
}

#[test]
fn process_outside_cgroup_is_not_redirected() {
    scenarios::process_outside_cgroup_is_not_redirected();
}

#[test]
fn ten_thousand_services_and_minimal_resync() {
    scenarios::ten_thousand_services_and_minimal_resync();
}

#[test]
fn restart_keeps_service_reachable() {
    scenarios::restart_keeps_service_reachable();
}

#[test]
fn affinity_and_maglev_are_sticky() {
    scenarios::affinity_and_maglev_are_sticky();
}

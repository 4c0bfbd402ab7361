//! The pod network on Debian 12's 6.1 kernel (the oldest podd supports), in
//! the VM: sandbox namespaces, two nodes, cross-node TCP by pod IP through
//! synced routes, and a teardown that leaves nothing.

mod common;

use std::net::Ipv4Addr;

use common::{TestEnv, link_names, node_network, tcp_echo_server, tcp_request};
use podd_net::node::default_node_pod_cidr;
use podd_net::{NsKind, PeerRoute, SandboxNamespaces};

#[test]
#[ignore = "vm: runs on Debian 12's 6.1 kernel; run by cargo xtask vm-test"]
fn pod_network_works_on_the_oldest_supported_kernel() {
    let env = TestEnv::new("vmnet");
    let (node1, node2, node_ip1, node_ip2) = env.two_nodes();
    let net1 = node_network(&env, &node1, 1);
    let net2 = node_network(&env, &node2, 2);
    let a = SandboxNamespaces::create(&env.ns_root(), "a", Some("a")).unwrap();
    let b = SandboxNamespaces::create(&env.ns_root(), "b", Some("b")).unwrap();
    let pod_a = net1.attach_pod("uid-a", a.net_path()).unwrap();
    let pod_b = net2.attach_pod("uid-b", b.net_path()).unwrap();
    net1.sync_routes(&[PeerRoute {
        cidr: default_node_pod_cidr(2),
        via: node_ip2,
    }])
    .unwrap();
    net2.sync_routes(&[PeerRoute {
        cidr: default_node_pod_cidr(1),
        via: node_ip1,
    }])
    .unwrap();

    let server = tcp_echo_server(b.net_path(), pod_b.ip, 7000, 1);
    assert_eq!(
        tcp_request(a.net_path(), pod_b.ip, 7000, "vm").unwrap(),
        "echo:vm"
    );
    server.join().unwrap();
    assert_eq!(pod_a.ip, Ipv4Addr::new(10, 244, 1, 2));

    let links_before: Vec<String> = link_names(node1.path())
        .into_iter()
        .filter(|l| l != &pod_a.host_veth)
        .collect();
    net1.detach_pod("uid-a").unwrap();
    net2.detach_pod("uid-b").unwrap();
    a.remove().unwrap();
    b.remove().unwrap();
    assert_eq!(link_names(node1.path()), links_before);
    assert!(env.mounts().iter().all(|m| !m.contains("/ns/")));
    for kind in NsKind::SANDBOX {
        assert!(!env.ns_root().join(kind.dir_name()).join("a").exists());
    }
}

//! Pod networking on real kernels, as root. Every topology lives in network
//! namespaces the test made (a "node" namespace has only lo, the bridge and
//! veths: no route leads out of it), under a per-test directory whose guard
//! removes them all.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use common::{
    TestEnv, ip_in, link_names, node_network, ping, tcp_echo_server, tcp_request, try_ip_in,
};
use podd_net::netlink::{Netlink, Route};
use podd_net::node::default_node_pod_cidr;
use podd_net::{
    Ipv4Cidr, NetError, NodeNetConfig, NodeNetwork, NsKind, PeerRoute, SandboxNamespaces,
    host_veth_name, run_in_namespace,
};

fn ns_inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn sandbox_namespaces_are_held_adopted_and_removed() {
    let env = TestEnv::new("sandbox");
    let sandbox = SandboxNamespaces::create(&env.ns_root(), "pod-a", Some("web-0")).unwrap();
    for (kind, path) in sandbox.kinds_and_paths() {
        let host = format!("/proc/self/ns/{}", kind.proc_name());
        assert_ne!(
            ns_inode(&path),
            ns_inode(Path::new(&host)),
            "{kind:?} is new"
        );
    }
    let hostname = run_in_namespace(sandbox.uts_path(), NsKind::Uts, || {
        nix::unistd::gethostname().unwrap()
    })
    .unwrap();
    assert_eq!(hostname, "web-0");
    assert_ne!(nix::unistd::gethostname().unwrap(), "web-0");
    assert_eq!(env.mounts().len(), 3);

    // A second sandbox of the same name is refused, and the first is intact.
    let err = SandboxNamespaces::create(&env.ns_root(), "pod-a", None).unwrap_err();
    assert!(matches!(err, NetError::Conflict { .. }), "{err}");
    assert_eq!(env.mounts().len(), 3);
    // Bad input is refused before anything is made.
    assert!(SandboxNamespaces::create(&env.ns_root(), "../x", None).is_err());
    assert!(SandboxNamespaces::create(&env.ns_root(), "pod-b", Some("bad_host")).is_err());
    assert!(!env.ns_root().join("netns/pod-b").exists());

    assert_eq!(
        SandboxNamespaces::list(&env.ns_root()).unwrap(),
        vec!["pod-a".to_string()]
    );
    // A restarted agent adopts it by name.
    let adopted = SandboxNamespaces::open(&env.ns_root(), "pod-a").unwrap();
    assert_eq!(adopted, sandbox);
    assert_eq!(ns_inode(adopted.net_path()), ns_inode(sandbox.net_path()));

    sandbox.remove().unwrap();
    assert!(env.mounts().is_empty());
    for kind in NsKind::SANDBOX {
        assert!(!env.ns_root().join(kind.dir_name()).join("pod-a").exists());
    }
    assert!(SandboxNamespaces::open(&env.ns_root(), "pod-a").is_err());
    assert!(SandboxNamespaces::list(&env.ns_root()).unwrap().is_empty());
    // Removing again, or by name, is a no-op.
    adopted.remove().unwrap();
    SandboxNamespaces::remove_by_name(&env.ns_root(), "pod-a").unwrap();
}

#[test]
fn pod_gets_eth0_address_default_route_and_loopback() {
    let env = TestEnv::new("podnet");
    let node = env.node_netns("node1");
    let network = node_network(&env, &node, 1);
    // Setup is idempotent, as a restarted agent needs.
    let again = node_network(&env, &node, 1);
    assert_eq!(again.bridge_index(), network.bridge_index());
    let forwarding = run_in_namespace(node.path(), NsKind::Net, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()
    })
    .unwrap();
    assert_eq!(forwarding.trim(), "1");

    let sandbox = SandboxNamespaces::create(&env.ns_root(), "pod-a", Some("pod-a")).unwrap();
    let pod = network.attach_pod("uid-a", sandbox.net_path()).unwrap();
    assert_eq!(pod.ip, Ipv4Addr::new(10, 244, 1, 2));
    assert_eq!(pod.gateway, Ipv4Addr::new(10, 244, 1, 1));

    // Seen independently through iproute2.
    let addresses = ip_in(
        sandbox.net_path(),
        &["-4", "-o", "addr", "show", "dev", "eth0"],
    );
    assert!(addresses.contains("inet 10.244.1.2/24"), "{addresses}");
    let links = ip_in(sandbox.net_path(), &["-o", "link", "show"]);
    assert!(links.contains("lo: <LOOPBACK,UP,LOWER_UP>"), "{links}");
    assert!(links.contains("eth0@"), "{links}");
    let routes = ip_in(sandbox.net_path(), &["-4", "route", "show"]);
    assert!(
        routes.contains("default via 10.244.1.1 dev eth0"),
        "{routes}"
    );
    let bridge_side = ip_in(node.path(), &["-o", "link", "show", "master", "podd0"]);
    assert!(bridge_side.contains(&pod.host_veth), "{bridge_side}");
    // Administratively up (the operational state follows asynchronously).
    assert!(bridge_side.contains(",UP"), "{bridge_side}");
    let bridge_address = ip_in(node.path(), &["-4", "-o", "addr", "show", "dev", "podd0"]);
    assert!(
        bridge_address.contains("inet 10.244.1.1/24"),
        "{bridge_address}"
    );
    // Fixed MACs derived from the IPs, so ARP caches never go stale.
    let eth0 = ip_in(sandbox.net_path(), &["link", "show", "eth0"]);
    assert!(eth0.contains("link/ether 0a:58:0a:f4:01:02"), "{eth0}");
    let bridge = ip_in(node.path(), &["link", "show", "podd0"]);
    assert!(bridge.contains("link/ether 0a:58:0a:f4:01:01"), "{bridge}");

    // Loopback works inside the pod, and the gateway answers.
    let server = tcp_echo_server(sandbox.net_path(), Ipv4Addr::LOCALHOST, 8080, 1);
    let reply = tcp_request(sandbox.net_path(), Ipv4Addr::LOCALHOST, 8080, "lo").unwrap();
    assert_eq!(reply, "echo:lo");
    server.join().unwrap();
    assert!(ping(
        sandbox.net_path(),
        pod.gateway,
        Duration::from_secs(5)
    ));

    // The agent finds the pod's network again by uid.
    assert_eq!(network.pod_network("uid-a").unwrap(), Some(pod.clone()));

    network.detach_pod("uid-a").unwrap();
    sandbox.remove().unwrap();
    // The bridge keeps its MAC when its ports go.
    let bridge = ip_in(node.path(), &["link", "show", "podd0"]);
    assert!(bridge.contains("link/ether 0a:58:0a:f4:01:01"), "{bridge}");
}

#[test]
fn two_pods_on_one_bridge_reach_each_other() {
    let env = TestEnv::new("samenode");
    let node = env.node_netns("node1");
    let network = node_network(&env, &node, 1);
    let a = SandboxNamespaces::create(&env.ns_root(), "a", None).unwrap();
    let b = SandboxNamespaces::create(&env.ns_root(), "b", None).unwrap();
    let pod_a = network.attach_pod("uid-a", a.net_path()).unwrap();
    let pod_b = network.attach_pod("uid-b", b.net_path()).unwrap();
    assert_ne!(pod_a.ip, pod_b.ip);

    assert!(ping(a.net_path(), pod_b.ip, Duration::from_secs(5)));
    assert!(ping(b.net_path(), pod_a.ip, Duration::from_secs(5)));
    let server = tcp_echo_server(b.net_path(), pod_b.ip, 9000, 1);
    assert_eq!(
        tcp_request(a.net_path(), pod_b.ip, 9000, "hi b").unwrap(),
        "echo:hi b"
    );
    server.join().unwrap();
    let server = tcp_echo_server(a.net_path(), pod_a.ip, 9001, 1);
    assert_eq!(
        tcp_request(b.net_path(), pod_a.ip, 9001, "hi a").unwrap(),
        "echo:hi a"
    );
    server.join().unwrap();

    // After detaching b, a can no longer reach it.
    network.detach_pod("uid-b").unwrap();
    assert!(!ping(a.net_path(), pod_b.ip, Duration::from_millis(600)));
    network.detach_pod("uid-a").unwrap();
    a.remove().unwrap();
    b.remove().unwrap();
}

/// Two nodes as network namespaces joined by a veth (172.31.250.1 <->
/// 172.31.250.2), each with its own bridge and pod CIDR; routes from
/// `sync_routes` carry pod traffic across.
#[test]
fn pods_on_two_nodes_reach_each_other_through_synced_routes() {
    let env = TestEnv::new("crossnode");
    let (node1, node2, node_ip1, node_ip2) = env.two_nodes();
    let net1 = node_network(&env, &node1, 1);
    let net2 = node_network(&env, &node2, 2);
    let a = SandboxNamespaces::create(&env.ns_root(), "a", None).unwrap();
    let b = SandboxNamespaces::create(&env.ns_root(), "b", None).unwrap();
    let pod_a = net1.attach_pod("uid-a", a.net_path()).unwrap();
    let pod_b = net2.attach_pod("uid-b", b.net_path()).unwrap();
    assert_eq!(pod_a.ip, Ipv4Addr::new(10, 244, 1, 2));
    assert_eq!(pod_b.ip, Ipv4Addr::new(10, 244, 2, 2));

    // Without routes the other node's pods are unreachable.
    assert!(!ping(a.net_path(), pod_b.ip, Duration::from_millis(500)));

    // An admin's route that podd must never touch, in node1.
    {
        let mut n1 = Netlink::open_in(node1.path()).unwrap();
        n1.add_route(
            &Route {
                destination: Ipv4Addr::new(10, 99, 0, 0),
                prefix_len: 16,
                gateway: Some(node_ip2),
                output_interface: None,
                protocol: 4, // "static"
            },
            false,
        )
        .unwrap();
    }

    let cidr1 = default_node_pod_cidr(1);
    let cidr2 = default_node_pod_cidr(2);
    // Node1 also gets a stale route to a node that left.
    let gone: Ipv4Cidr = "10.244.7.0/24".parse().unwrap();
    let first = net1
        .sync_routes(&[
            PeerRoute {
                cidr: cidr2,
                via: node_ip2,
            },
            PeerRoute {
                cidr: gone,
                via: node_ip2,
            },
        ])
        .unwrap();
    assert_eq!(first.added.len(), 2);
    let report1 = net1
        .sync_routes(&[PeerRoute {
            cidr: cidr2,
            via: node_ip2,
        }])
        .unwrap();
    assert_eq!(report1.unchanged, 1);
    assert_eq!(
        report1.removed,
        vec![PeerRoute {
            cidr: gone,
            via: node_ip2
        }]
    );
    // A node whose IP is unreachable fails alone; the others' routes go in.
    let unreachable = PeerRoute {
        cidr: "10.244.9.0/24".parse().unwrap(),
        via: Ipv4Addr::new(172, 31, 99, 9),
    };
    let report2 = net2
        .sync_routes(&[
            unreachable,
            PeerRoute {
                cidr: cidr1,
                via: node_ip1,
            },
        ])
        .unwrap();
    assert_eq!(report2.added.len(), 1);
    assert_eq!(report2.failed.len(), 1, "{report2:?}");
    assert_eq!(report2.failed[0].route, unreachable);

    let routes1 = ip_in(node1.path(), &["-4", "route", "show"]);
    assert!(
        routes1.contains("10.244.2.0/24 via 172.31.250.2") && routes1.contains("proto 173"),
        "{routes1}"
    );
    assert!(!routes1.contains("10.244.7.0"), "{routes1}");
    assert!(routes1.contains("10.99.0.0/16"), "{routes1}");
    assert!(
        !routes1.contains("default"),
        "node namespaces have no way out: {routes1}"
    );

    // Cluster and service CIDRs never follow a default route out of a node:
    // even with one (here towards node2, itself without a way out), a pod
    // CIDR no node route covers is refused in node1.
    let guards = ip_in(
        node1.path(),
        &["-4", "route", "show", "type", "unreachable"],
    );
    assert!(guards.contains("10.244.0.0/16 proto 173"), "{guards}");
    assert!(guards.contains("10.96.0.0/12 proto 173"), "{guards}");
    ip_in(
        node1.path(),
        &["route", "add", "default", "via", "172.31.250.2"],
    );
    let (routed, text) = try_ip_in(node1.path(), &["route", "get", "10.244.50.9"]);
    assert!(
        !routed,
        "a pod IP without a node route must not be routed: {text}"
    );
    let (routed, text) = try_ip_in(node1.path(), &["route", "get", "10.96.0.10"]);
    assert!(!routed, "a service VIP must not be routed: {text}");
    let to_pod_b = ip_in(node1.path(), &["route", "get", &pod_b.ip.to_string()]);
    assert!(to_pod_b.contains("via 172.31.250.2"), "{to_pod_b}");
    ip_in(node1.path(), &["route", "del", "default"]);

    assert!(ping(a.net_path(), pod_b.ip, Duration::from_secs(5)));
    assert!(ping(b.net_path(), pod_a.ip, Duration::from_secs(5)));
    let server = tcp_echo_server(b.net_path(), pod_b.ip, 7000, 1);
    assert_eq!(
        tcp_request(a.net_path(), pod_b.ip, 7000, "across").unwrap(),
        "echo:across"
    );
    server.join().unwrap();
    let server = tcp_echo_server(a.net_path(), pod_a.ip, 7001, 1);
    assert_eq!(
        tcp_request(b.net_path(), pod_a.ip, 7001, "back").unwrap(),
        "echo:back"
    );
    server.join().unwrap();

    // An empty list removes podd's routes and only those.
    let cleared = net1.sync_routes(&[]).unwrap();
    assert_eq!(cleared.removed.len(), 1);
    let routes1 = ip_in(node1.path(), &["-4", "route", "show"]);
    assert!(!routes1.contains("10.244.2.0"), "{routes1}");
    assert!(routes1.contains("10.99.0.0/16"), "{routes1}");
    assert!(!ping(a.net_path(), pod_b.ip, Duration::from_millis(500)));

    net1.detach_pod("uid-a").unwrap();
    net2.detach_pod("uid-b").unwrap();
    a.remove().unwrap();
    b.remove().unwrap();
}

#[test]
fn leases_survive_an_agent_restart_without_duplicates() {
    let env = TestEnv::new("restart");
    let node = env.node_netns("node1");
    let mut sandboxes = Vec::new();
    let mut before = Vec::new();
    {
        let network = node_network(&env, &node, 1);
        for i in 0..3 {
            let sandbox =
                SandboxNamespaces::create(&env.ns_root(), &format!("p{i}"), None).unwrap();
            before.push(
                network
                    .attach_pod(&format!("uid-{i}"), sandbox.net_path())
                    .unwrap(),
            );
            sandboxes.push(sandbox);
        }
        // Free the middle one, so a naive allocator would hand out its IP next.
        network.detach_pod("uid-1").unwrap();
        // The agent "dies": nothing is torn down.
    }
    let network = node_network(&env, &node, 1);
    let leases = network.leases().unwrap();
    assert_eq!(
        leases.values().cloned().collect::<Vec<_>>(),
        vec!["uid-0".to_string(), "uid-2".to_string()]
    );
    assert_eq!(
        network.pod_network("uid-0").unwrap(),
        Some(before[0].clone())
    );
    assert_eq!(
        network.pod_network("uid-2").unwrap(),
        Some(before[2].clone())
    );
    assert_eq!(network.pod_network("uid-1").unwrap(), None);

    let fresh = SandboxNamespaces::create(&env.ns_root(), "p3", None).unwrap();
    let new_pod = network.attach_pod("uid-3", fresh.net_path()).unwrap();
    let held: HashSet<Ipv4Addr> = [before[0].ip, before[2].ip].into();
    assert!(
        !held.contains(&new_pod.ip),
        "{} handed out twice",
        new_pod.ip
    );
    assert!(
        new_pod.ip > before[2].ip,
        "next-fit continues after the last lease"
    );
    sandboxes.push(fresh);

    // Reconcile with only uid-0 and uid-3 alive: uid-2's lease and veth go.
    let live: HashSet<String> = ["uid-0".to_string(), "uid-3".to_string()].into();
    let report = network.reconcile(&live).unwrap();
    assert_eq!(
        report.freed_leases,
        vec![(before[2].ip, "uid-2".to_string())]
    );
    assert_eq!(report.deleted_veths, vec![host_veth_name("uid-2")]);
    assert!(ping(
        sandboxes[3].net_path(),
        before[0].ip,
        Duration::from_secs(5)
    ));

    for uid in ["uid-0", "uid-3"] {
        network.detach_pod(uid).unwrap();
    }
    for sandbox in sandboxes {
        sandbox.remove().unwrap();
    }
}

#[test]
fn teardown_leaves_no_namespace_veth_lease_or_mount() {
    let env = TestEnv::new("teardown");
    let node = env.node_netns("node1");
    let network = node_network(&env, &node, 1);
    let links_before = link_names(node.path());
    let sandbox = SandboxNamespaces::create(&env.ns_root(), "pod", None).unwrap();
    let pod = network.attach_pod("uid-t", sandbox.net_path()).unwrap();
    let lease = network
        .config()
        .ipam_dir
        .join("10.244.1.0-24")
        .join(pod.ip.to_string());
    assert!(lease.exists());
    assert!(link_names(node.path()).contains(&pod.host_veth));

    network.detach_pod("uid-t").unwrap();
    sandbox.remove().unwrap();

    assert!(!lease.exists(), "lease left behind");
    assert_eq!(link_names(node.path()), links_before, "veth left behind");
    for kind in NsKind::SANDBOX {
        assert!(!env.ns_root().join(kind.dir_name()).join("pod").exists());
    }
    // Only the node namespace (made by the test itself) is still mounted.
    assert_eq!(env.mounts(), vec![node.path().display().to_string()]);
    // Detaching twice is fine.
    network.detach_pod("uid-t").unwrap();

    // Destroying the node network removes the bridge and podd's routes.
    network.destroy().unwrap();
    assert!(!link_names(node.path()).contains(&"podd0".to_string()));
    let routes = ip_in(node.path(), &["-4", "route", "show", "table", "all"]);
    assert!(!routes.contains("proto 173"), "{routes}");
}

#[test]
fn a_failed_attach_leaves_nothing_half_made() {
    let env = TestEnv::new("badattach");
    let node = env.node_netns("node1");
    let network = node_network(&env, &node, 1);
    let links_before = link_names(node.path());

    // No such namespace.
    let err = network
        .attach_pod("uid-x", &env.root.join("missing"))
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // A namespace that already has an eth0.
    let sandbox = SandboxNamespaces::create(&env.ns_root(), "taken", None).unwrap();
    {
        let mut inside = Netlink::open_in(sandbox.net_path()).unwrap();
        inside.add_bridge("eth0", None).unwrap();
    }
    let err = network.attach_pod("uid-y", sandbox.net_path()).unwrap_err();
    assert!(err.to_string().contains("veth"), "{err}");
    // A bad owner is refused before anything is made.
    assert!(network.attach_pod("", sandbox.net_path()).is_err());

    assert_eq!(link_names(node.path()), links_before);
    let lease_dir = network.config().ipam_dir.join("10.244.1.0-24");
    let leases: Vec<_> = std::fs::read_dir(lease_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.parse::<Ipv4Addr>().is_ok())
        .collect();
    assert!(leases.is_empty(), "{leases:?}");
    sandbox.remove().unwrap();
}

#[test]
fn setup_refuses_a_non_bridge_with_the_bridge_name() {
    let env = TestEnv::new("notbridge");
    let node = env.node_netns("node1");
    {
        use std::os::fd::AsFd;
        let mut n = Netlink::open_in(node.path()).unwrap();
        n.add_bridge("holder", None).unwrap();
        let holder = n.link_by_name("holder").unwrap().unwrap();
        let me = std::fs::File::open(node.path()).unwrap();
        n.add_veth_pair("podd0", holder.index, "peer0", me.as_fd(), None, None)
            .unwrap();
    }
    let mut config = NodeNetConfig::new(default_node_pod_cidr(1));
    config.node_netns = Some(node.path().to_path_buf());
    config.ipam_dir = env.ipam_dir("node1");
    let err = NodeNetwork::setup(config).unwrap_err();
    assert!(err.to_string().contains("not a bridge"), "{err}");
}

/// Removing the sandbox really frees the network namespace, and with it the
/// veth pair, even while another mount namespace (as a container has, here
/// with private propagation from a private root) holds a copy of the mount:
/// unlinking the mount point detaches the copies too.
#[test]
fn removing_the_sandbox_frees_the_namespace_even_from_copied_mount_tables() {
    let env = TestEnv::new("mntcopy");
    let node = env.node_netns("node1");
    let network = node_network(&env, &node, 1);
    let sandbox = SandboxNamespaces::create(&env.ns_root(), "pod", None).unwrap();
    let pod = network.attach_pod("uid-m", sandbox.net_path()).unwrap();

    let (copied_tx, copied_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let netns_file = sandbox.net_path().to_path_buf();
    let holder = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        // As a container runtime does (on this host / is private, so the
        // copy is private too and no unmount propagates into it).
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        copied_tx.send(netns_file.exists()).unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
        // What this mount namespace sees after the pod was removed.
        common::mounts_under(netns_file.parent().unwrap())
            .into_iter()
            .any(|m| Path::new(&m) == netns_file)
    });
    assert!(
        copied_rx.recv().unwrap(),
        "the copy sees the namespace file"
    );

    // Remove the namespaces without detaching first, as after a crash.
    sandbox.remove().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while link_names(node.path()).contains(&pod.host_veth) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pod namespace (and its veth) outlived the sandbox"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    done_tx.send(()).unwrap();
    assert!(
        !holder.join().unwrap(),
        "the unmount reached the copied mount table"
    );
    network.detach_pod("uid-m").unwrap();
}

/// The agent may set up several pods at once: concurrent attaches from
/// several threads get distinct IPs and working networks.
#[test]
fn concurrent_attaches_get_distinct_working_networks() {
    let env = TestEnv::new("concurrent");
    let node = env.node_netns("node1");
    let network = node_network(&env, &node, 1);
    let sandboxes: Vec<SandboxNamespaces> = (0..8)
        .map(|i| SandboxNamespaces::create(&env.ns_root(), &format!("c{i}"), None).unwrap())
        .collect();
    let pods: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = sandboxes
            .iter()
            .enumerate()
            .map(|(i, sandbox)| {
                let network = &network;
                scope.spawn(move || {
                    network
                        .attach_pod(&format!("uid-{i}"), sandbox.net_path())
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    assert_eq!(ips.len(), pods.len());
    // Every pod reaches the next one.
    for (i, sandbox) in sandboxes.iter().enumerate() {
        let next = &pods[(i + 1) % pods.len()];
        assert!(
            ping(sandbox.net_path(), next.ip, Duration::from_secs(5)),
            "pod {i} cannot reach {}",
            next.ip
        );
    }
    for (i, sandbox) in sandboxes.into_iter().enumerate() {
        network.detach_pod(&format!("uid-{i}")).unwrap();
        sandbox.remove().unwrap();
    }
}

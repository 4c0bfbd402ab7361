//! Shared test fixtures: a per-test state directory whose guard releases every
//! namespace made under it, and traffic helpers that run inside namespaces.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, recvfrom, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use podd_net::netlink::Netlink;
use podd_net::netns::release_namespace_root;
use podd_net::node::default_node_pod_cidr;
use podd_net::{NamedNamespace, NodeNetConfig, NodeNetwork, NsKind, run_in_namespace};

/// A test's private state directory under /run. Everything the test creates
/// (namespace files, IPAM leases) lives here; dropping the guard unmounts
/// every namespace file and removes the directory, which destroys the
/// test's namespaces and with them every interface inside them.
pub struct TestEnv {
    pub root: PathBuf,
}

impl TestEnv {
    pub fn new(prefix: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "podd-net integration tests create namespaces and need root"
        );
        let root = PathBuf::from(format!(
            "/run/podd-test-net/{prefix}-{}",
            std::process::id()
        ));
        let env = TestEnv { root };
        env.cleanup();
        // Another test's guard may remove the shared parent meanwhile: retry.
        let mut attempts = 0;
        while let Err(e) = fs::create_dir_all(&env.root) {
            attempts += 1;
            assert!(attempts < 20, "create {}: {e}", env.root.display());
        }
        env
    }

    /// Where pod sandbox namespaces go.
    pub fn ns_root(&self) -> PathBuf {
        self.root.join("ns")
    }

    /// Where node network namespaces go (kept apart from pods').
    pub fn nodes_root(&self) -> PathBuf {
        self.root.join("nodes")
    }

    pub fn ipam_dir(&self, node: &str) -> PathBuf {
        self.root.join("ipam").join(node)
    }

    /// A fresh network namespace playing a node, with loopback up and
    /// nothing else: no route leads out of it.
    pub fn node_netns(&self, name: &str) -> NamedNamespace {
        let ns = NamedNamespace::create(&self.nodes_root(), name, NsKind::Net).unwrap();
        let mut netlink = Netlink::open_in(ns.path()).unwrap();
        let lo = netlink.link_by_name("lo").unwrap().unwrap();
        netlink.set_link_up(lo.index, true).unwrap();
        ns
    }

    /// Two "nodes": network namespaces joined by a veth, node1 holding
    /// 172.31.250.1/24 (on a small uplink bridge) and node2 172.31.250.2/24.
    /// Nothing else is in them: no route leads out.
    pub fn two_nodes(&self) -> (NamedNamespace, NamedNamespace, Ipv4Addr, Ipv4Addr) {
        let node1 = self.node_netns("node1");
        let node2 = self.node_netns("node2");
        let node_ip1 = Ipv4Addr::new(172, 31, 250, 1);
        let node_ip2 = Ipv4Addr::new(172, 31, 250, 2);
        let mut n1 = Netlink::open_in(node1.path()).unwrap();
        let node2_file = fs::File::open(node2.path()).unwrap();
        // add_veth_pair attaches its first end to a bridge: node1's uplink is
        // a bridge holding its IP, and the veth's peer sits in node2.
        n1.add_bridge("uplink", None).unwrap();
        let uplink = n1.link_by_name("uplink").unwrap().unwrap();
        n1.add_veth_pair(
            "wire1",
            uplink.index,
            "wire2",
            node2_file.as_fd(),
            None,
            None,
        )
        .unwrap();
        n1.add_address(uplink.index, node_ip1, 24).unwrap();
        n1.set_link_up(uplink.index, true).unwrap();
        let mut n2 = Netlink::open_in(node2.path()).unwrap();
        let wire2 = n2.link_by_name("wire2").unwrap().unwrap();
        n2.add_address(wire2.index, node_ip2, 24).unwrap();
        n2.set_link_up(wire2.index, true).unwrap();
        (node1, node2, node_ip1, node_ip2)
    }

    #[allow(clippy::print_stderr)] // a failed cleanup must be visible, and Drop cannot panic
    fn cleanup(&self) {
        for base in [self.ns_root(), self.nodes_root()] {
            if let Err(e) = release_namespace_root(&base) {
                eprintln!("cleanup of {}: {e}", base.display());
            }
        }
        let _ = fs::remove_dir_all(&self.root);
        if let Some(parent) = self.root.parent() {
            let _ = fs::remove_dir(parent); // only if no other test uses it
        }
    }

    /// Namespace files mounted under this test's directory (not counting
    /// the shared directory mounts that hold them), from /proc/self/mountinfo.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(&self.root)
            .into_iter()
            .filter(|m| !Path::new(m).is_dir())
            .collect()
    }

    /// Every mount under this test's directory, directories included.
    pub fn all_mounts(&self) -> Vec<String> {
        mounts_under(&self.root)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Node `n`'s pod network (pod CIDR 10.244.n.0/24) inside its namespace,
/// with its leases under the test's directory.
pub fn node_network(env: &TestEnv, node: &NamedNamespace, n: u8) -> NodeNetwork {
    let mut config = NodeNetConfig::new(default_node_pod_cidr(n));
    config.node_netns = Some(node.path().to_path_buf());
    config.ipam_dir = env.ipam_dir(&format!("node{n}"));
    NodeNetwork::setup(config).unwrap()
}

pub fn mounts_under(root: &Path) -> Vec<String> {
    let prefix = format!("{}/", root.display());
    // thread-self: a thread may have its own mount namespace.
    fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_string))
        .filter(|mount_point| mount_point.starts_with(&prefix))
        .collect()
}

/// Runs `ip ARGS` inside the namespace at `ns` (test-only independent view).
pub fn ip_in(ns: &Path, args: &[&str]) -> String {
    let output = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg("ip")
        .args(args)
        .output()
        .expect("nsenter and ip (util-linux, iproute2) are needed by the tests");
    assert!(
        output.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Like [`ip_in`], for commands expected to fail: (success, stdout + stderr).
pub fn try_ip_in(ns: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg("ip")
        .args(args)
        .output()
        .expect("nsenter and ip (util-linux, iproute2) are needed by the tests");
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A TCP server inside namespace `ns`, listening on `ip:port`, that answers
/// each of `connections` clients by echoing what it read, prefixed.
pub fn tcp_echo_server(ns: &Path, ip: Ipv4Addr, port: u16, connections: usize) -> JoinHandle<()> {
    let listener = run_in_namespace(ns, NsKind::Net, || {
        TcpListener::bind(SocketAddrV4::new(ip, port))
    })
    .unwrap()
    .unwrap();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 64];
            let n = stream.read(&mut buf).unwrap();
            stream.write_all(b"echo:").unwrap();
            stream.write_all(&buf[..n]).unwrap();
        }
    })
}

/// Connects from inside namespace `ns` to `ip:port`, sends `message`, and
/// returns the reply. The socket is made inside the namespace and used from
/// this thread.
pub fn tcp_request(ns: &Path, ip: Ipv4Addr, port: u16, message: &str) -> std::io::Result<String> {
    let target = SocketAddr::V4(SocketAddrV4::new(ip, port));
    let mut stream = run_in_namespace(ns, NsKind::Net, || {
        TcpStream::connect_timeout(&target, Duration::from_secs(3))
    })
    .unwrap()?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(message.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Sends ICMP echo requests from inside `ns` to `target` until one is
/// answered (true) or `timeout` passes (false). Raw socket; needs root.
pub fn ping(ns: &Path, target: Ipv4Addr, timeout: Duration) -> bool {
    run_in_namespace(ns, NsKind::Net, || {
        let socket = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Icmp,
        )
        .unwrap();
        setsockopt(&socket, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000)).unwrap();
        let id = (std::process::id() & 0xffff) as u16;
        let deadline = Instant::now() + timeout;
        let mut sequence = 0u16;
        while Instant::now() < deadline {
            sequence += 1;
            let packet = echo_request(id, sequence);
            let to = SockaddrIn::from(SocketAddrV4::new(target, 0));
            let _ = sendto(socket.as_raw_fd(), &packet, &to, MsgFlags::empty());
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = recvfrom::<SockaddrIn>(socket.as_raw_fd(), &mut buf) {
                let from_target = from.map(|a| a.ip() == target).unwrap_or(false);
                let header_len = usize::from(buf[0] & 0x0f) * 4;
                if n >= header_len + 8
                    && from_target
                    && buf[header_len] == 0
                    && u16::from_be_bytes([buf[header_len + 4], buf[header_len + 5]]) == id
                {
                    return true;
                }
            }
        }
        false
    })
    .unwrap()
}

fn echo_request(id: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![8u8, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(b"podd-net-test-ping");
    let checksum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The links of a namespace, by name.
pub fn link_names(ns: &Path) -> Vec<String> {
    let mut netlink = Netlink::open_in(ns).unwrap();
    netlink
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect()
}

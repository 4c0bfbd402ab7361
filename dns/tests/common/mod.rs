//! A node namespace running the cluster DNS (plus a second server acting as the upstream
//! resolver) and a pod-like namespace that queries it, joined by a veth pair. No packet leaves
//! these namespaces; guards remove them.
#![allow(dead_code)]

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use podd_dns::{DnsConfig, DnsServer, ServiceRecord};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 5, 1);
pub const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 5, 2);
pub const WEB_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
pub const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
    // SAFETY: setns with a valid namespace fd changes only this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

pub struct Topo {
    pub node: String,
    pub pod: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Topo {
    /// Starts the cluster DNS on NODE_IP:53 (upstream: a second server on NODE_IP:5353 that
    /// knows `www.example.svc.test`), with `web.default` → WEB_VIP.
    pub fn new(test: &str) -> Topo {
        let node = format!("pdns-{test}-{}-n", std::process::id());
        let pod = format!("pdns-{test}-{}-p", std::process::id());
        for ns in [&node, &pod] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        let tag = std::process::id() % 100_000;
        let (a, b) = (format!("pdn{tag}"), format!("pdp{tag}"));
        run(
            "ip",
            &[
                "-n", &node, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &pod,
            ],
        );
        run(
            "ip",
            &["-n", &node, "addr", "add", "10.244.5.1/24", "dev", &a],
        );
        run(
            "ip",
            &["-n", &pod, "addr", "add", "10.244.5.2/24", "dev", &b],
        );
        run("ip", &["-n", &node, "link", "set", &a, "up"]);
        run("ip", &["-n", &pod, "link", "set", &b, "up"]);

        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let node2 = node.clone();
        let server = std::thread::spawn(move || {
            enter_netns(&node2);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut up_cfg = DnsConfig::new(SocketAddr::from((NODE_IP, 5353)));
                up_cfg.domain = "test".into();
                let upstream = DnsServer::start(up_cfg).await.unwrap();
                upstream.set_services(&[ServiceRecord {
                    name: "www".into(),
                    namespace: "example".into(),
                    ip: UPSTREAM_ANSWER,
                }]);
                let mut cfg = DnsConfig::new(SocketAddr::from((NODE_IP, 53)));
                cfg.upstream = Some(upstream.local_addr());
                let dns = DnsServer::start(cfg).await.unwrap();
                dns.set_services(&[ServiceRecord {
                    name: "web".into(),
                    namespace: "default".into(),
                    ip: WEB_VIP,
                }]);
                ready_tx.send(()).unwrap();
                tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                })
                .await
                .unwrap();
                drop(dns);
                drop(upstream);
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("DNS server started");
        Topo {
            node,
            pod,
            stop: Some(stop_tx),
            server: Some(server),
        }
    }

    /// One UDP query from the pod namespace.
    pub fn query(&self, name: &str, t: RecordType) -> Message {
        let pod = self.pod.clone();
        let name = name.to_string();
        std::thread::spawn(move || {
            enter_netns(&pod);
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut m = Message::query();
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(Name::from_ascii(&name).unwrap(), t));
            s.send_to(&m.to_vec().unwrap(), (NODE_IP, 53)).unwrap();
            let mut buf = [0u8; 1500];
            let n = s.recv(&mut buf).unwrap();
            let r = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(r.metadata.id, m.metadata.id);
            r
        })
        .join()
        .unwrap()
    }
}

pub fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// FQDN, forwarded and unknown names, by raw queries from the pod namespace.
pub fn raw_queries() {
    let topo = Topo::new("raw");
    let m = topo.query("web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&m), vec![WEB_VIP]);
    let m = topo.query("www.example.svc.test.", RecordType::A);
    assert_eq!(
        a_records(&m),
        vec![UPSTREAM_ANSWER],
        "forwarded to the upstream"
    );
    let m = topo.query("nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

impl Drop for Topo {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
        for ns in [&self.node, &self.pod] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

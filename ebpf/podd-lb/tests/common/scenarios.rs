//! The load-balancer scenarios, run on this host (tests/lb.rs) and in the 6.1 VM (tests/vm_lb.rs).

use super::*;
use podd_lb::{Frontend, LoadBalancer, Protocol, Selection, ServiceEntry};
use std::io::ErrorKind;
use std::net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn stats_of(lb: &LoadBalancer, f: &Frontend) -> podd_lb::ServiceStats {
    lb.stats()
        .unwrap()
        .into_iter()
        .find(|(g, _)| g == f)
        .map(|(_, s)| s)
        .expect("service has stats")
}

fn finish(lb: LoadBalancer, topo: &Topo) {
    let pin_dir = topo.config().pin_dir;
    lb.shutdown().expect("clean shutdown");
    assert!(!pin_dir.exists(), "shutdown leaves nothing pinned");
}

/// 10,000 connections from the attached cgroup spread uniformly over 3 backends.
pub fn spread_over_three_backends() {
    let _serial = serial();
    let topo = Topo::new("spread", 3);
    let _backends = Backends::start(&topo.server, 3);
    let mut lb = topo.start_lb();
    let svc = service(1, 80, Protocol::Tcp, Selection::Random, &[0, 1, 2]);
    lb.sync(std::slice::from_ref(&svc)).unwrap();
    let vip = SocketAddrV4::new(svc.frontend.vip, 80);
    let counts = {
        let _in = topo.cgroup.enter();
        tcp_spread(&topo.client, vip, 10_000)
    };
    let counts = &counts[..3];
    let chi = chi_square(counts);
    // χ² with 2 degrees of freedom: P(χ² > 13.82) = 0.001.
    assert!(chi < 13.82, "not uniform: {counts:?}, chi² = {chi:.2}");
    let s = stats_of(&lb, &svc.frontend);
    assert_eq!(s.connections, 10_000);
    assert_eq!(s.no_backend, 0);
    finish(lb, &topo);
}

/// UDP through a VIP: the reply comes from the VIP, getpeername says the VIP (UDP and TCP).
pub fn udp_reply_and_peer_are_the_vip() {
    let _serial = serial();
    let topo = Topo::new("udp", 2);
    let _backends = Backends::start(&topo.server, 2);
    let mut lb = topo.start_lb();
    let udp = service(2, 53, Protocol::Udp, Selection::Random, &[0, 1]);
    let tcp = service(2, 80, Protocol::Tcp, Selection::Random, &[0, 1]);
    lb.sync(&[udp.clone(), tcp]).unwrap();
    let udp_vip = SocketAddr::V4(SocketAddrV4::new(vip(2), 53));
    let tcp_vip = SocketAddr::V4(SocketAddrV4::new(vip(2), 80));
    let _in = topo.cgroup.enter();
    topo.client.run(move || {
        // Unconnected: sendmsg4 rewrites, recvmsg4 restores the source.
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for _ in 0..20 {
            s.send_to(b"hello", udp_vip).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = s.recv_from(&mut buf).unwrap();
            assert_eq!(from, udp_vip, "reply source must be the VIP");
            assert!(buf[0] < 2);
            assert_eq!(&buf[1..n], b"hello");
        }
        // Connected: connect4 rewrites once, getpeername4 shows the VIP.
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.connect(udp_vip).unwrap();
        assert_eq!(c.peer_addr().unwrap(), udp_vip);
        c.send(b"x").unwrap();
        let mut buf = [0u8; 8];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[1..n], b"x");
        // TCP getpeername.
        let t = TcpStream::connect(tcp_vip).unwrap();
        assert_eq!(t.peer_addr().unwrap(), tcp_vip);
    });
    assert!(stats_of(&lb, &udp.frontend).connections >= 21);
    drop(_in);
    finish(lb, &topo);
}

/// A backend removed from the ready set gets no new connection once `sync` returns, while its
/// established connections keep working.
pub fn unready_backend_gets_no_new_connections() {
    let _serial = serial();
    let topo = Topo::new("unready", 3);
    let _backends = Backends::start(&topo.server, 3);
    let mut lb = topo.start_lb();
    let svc = service(3, 80, Protocol::Tcp, Selection::Random, &[0, 1, 2]);
    lb.sync(std::slice::from_ref(&svc)).unwrap();
    let vip = SocketAddrV4::new(svc.frontend.vip, 80);
    let _in = topo.cgroup.enter();
    // Hold one established connection to backend 2.
    let mut held = topo.client.run(move || {
        for _ in 0..1000 {
            let mut s = TcpStream::connect(vip).unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            if b[0] == 2 {
                return s;
            }
        }
        panic!("never reached backend 2");
    });
    let unready = service(3, 80, Protocol::Tcp, Selection::Random, &[0, 1]);
    let report = lb.sync(std::slice::from_ref(&unready)).unwrap();
    assert!(report.total() <= 3, "{report:?}");
    let counts = tcp_spread(&topo.client, vip, 2000);
    assert_eq!(
        counts[2], 0,
        "unready backend got new connections: {counts:?}"
    );
    assert!(counts[0] > 0 && counts[1] > 0);
    // The established connection still works.
    held.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    held.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    drop(held);
    drop(_in);
    finish(lb, &topo);
}

/// A service without ready backends refuses at once: TCP connect gets ECONNREFUSED, connected
/// UDP gets ECONNREFUSED on the first receive, an unconnected send gets EPERM.
pub fn no_backend_refuses_at_once() {
    let _serial = serial();
    let topo = Topo::new("refuse", 1);
    let mut lb = topo.start_lb();
    let tcp = service(4, 80, Protocol::Tcp, Selection::Random, &[]);
    let udp = service(4, 53, Protocol::Udp, Selection::Random, &[]);
    lb.sync(&[tcp.clone(), udp]).unwrap();
    let _in = topo.cgroup.enter();
    topo.client.run(|| {
        let start = Instant::now();
        let err = TcpStream::connect_timeout(
            &SocketAddr::V4(SocketAddrV4::new(vip(4), 80)),
            Duration::from_secs(5),
        )
        .unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert!(took < Duration::from_millis(500), "took {took:?}");

        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        u.connect(SocketAddrV4::new(vip(4), 53)).unwrap();
        let _ = u.send(b"q");
        let mut buf = [0u8; 8];
        let err = u.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

        let v = UdpSocket::bind("0.0.0.0:0").unwrap();
        let err = v.send_to(b"q", SocketAddrV4::new(vip(4), 53)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    });
    assert!(stats_of(&lb, &tcp.frontend).no_backend >= 1);
    drop(_in);
    finish(lb, &topo);
}

/// Only processes in the attached cgroup are redirected.
pub fn process_outside_cgroup_is_not_redirected() {
    let _serial = serial();
    let topo = Topo::new("outside", 1);
    let _backends = Backends::start(&topo.server, 1);
    let mut lb = topo.start_lb();
    lb.sync(&[service(5, 80, Protocol::Tcp, Selection::Random, &[0])])
        .unwrap();
    let vip = SocketAddrV4::new(vip(5), 80);
    // Outside: the VIP is a plain address with no route in the client namespace.
    let err = topo.client.run(move || tcp_probe(vip).unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
    let _in = topo.cgroup.enter();
    assert_eq!(topo.client.run(move || tcp_probe(vip).unwrap()), 0);
    drop(_in);
    finish(lb, &topo);
}

fn many(services: u32, backends: u32) -> Vec<ServiceEntry> {
    (0..services)
        .map(|s| ServiceEntry {
            frontend: Frontend {
                vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + s),
                port: 80,
                protocol: Protocol::Tcp,
            },
            selection: Selection::Random,
            backends: (0..backends)
                .map(|b| {
                    SocketAddrV4::new(
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + s * 16 + b),
                        8080,
                    )
                })
                .collect(),
        })
        .collect()
}

/// 10,000 services with 10 backends each load; a full re-sync with one change writes one
/// element; a loader restarted on the same pins re-adopts them and writes nothing.
pub fn ten_thousand_services_and_minimal_resync() {
    let _serial = serial();
    let topo = Topo::new("scale", 1);
    let mut lb = topo.start_lb();
    let mut desired = many(10_000, 10);
    let r = lb.sync(&desired).unwrap();
    assert_eq!(r.service_writes, 10_000);
    assert_eq!(r.backend_writes, 100_000);
    assert_eq!(lb.service_count(), 10_000);
    assert_eq!(
        lb.sync(&desired).unwrap().total(),
        0,
        "identical re-sync writes nothing"
    );
    desired[4321].backends[7] = SocketAddrV4::new(Ipv4Addr::new(10, 244, 200, 7), 8080);
    let r = lb.sync(&desired).unwrap();
    assert_eq!(r.total(), 1, "{r:?}");
    assert_eq!(r.backend_writes, 1);
    // A restarted loader reads the maps back: nothing to write.
    drop(lb);
    let mut lb = topo.start_lb();
    assert_eq!(lb.service_count(), 10_000);
    assert_eq!(lb.sync(&desired).unwrap().total(), 0);
    finish(lb, &topo);
}

/// A loader restart (drop without shutdown, start again) never interrupts the service.
pub fn restart_keeps_service_reachable() {
    let _serial = serial();
    let topo = Topo::new("restart", 2);
    let _backends = Backends::start(&topo.server, 2);
    let mut lb = topo.start_lb();
    let svc = service(6, 80, Protocol::Tcp, Selection::Random, &[0, 1]);
    lb.sync(std::slice::from_ref(&svc)).unwrap();
    let vip = SocketAddrV4::new(svc.frontend.vip, 80);
    let _in = topo.cgroup.enter();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        topo.client.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match tcp_probe(vip) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let links_before = lb.links().to_vec();
        drop(lb);
        std::thread::sleep(Duration::from_millis(100));
        lb = topo.start_lb();
        assert_eq!(lb.sync(std::slice::from_ref(&svc)).unwrap().total(), 0);
        for l in links_before {
            assert!(!l.exists(), "old link {} replaced", l.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "{failed} connections failed across restarts ({ok} ok)"
    );
    assert!(ok > 100, "{ok}");
    // After shutdown the VIP is no longer translated.
    finish(lb, &topo);
    let err = topo.client.run(move || tcp_probe(vip).unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
    drop(_in);
}

/// ClientIP affinity and Maglev keep one client namespace on one backend; when that backend
/// goes, affinity picks another and keeps it.
pub fn affinity_and_maglev_are_sticky() {
    let _serial = serial();
    let topo = Topo::new("sticky", 3);
    let _backends = Backends::start(&topo.server, 3);
    let mut lb = topo.start_lb();
    let aff = service(7, 80, Protocol::Tcp, Selection::ClientIp, &[0, 1, 2]);
    let mag = service(8, 80, Protocol::Tcp, Selection::Maglev, &[0, 1, 2]);
    lb.sync(&[aff.clone(), mag.clone()]).unwrap();
    let _in = topo.cgroup.enter();
    let one = |counts: Vec<usize>| -> usize {
        let used: Vec<usize> = (0..3).filter(|i| counts[*i] > 0).collect();
        assert_eq!(used.len(), 1, "not sticky: {counts:?}");
        used[0]
    };
    let a = one(tcp_spread(&topo.client, SocketAddrV4::new(vip(7), 80), 200));
    let m = one(tcp_spread(&topo.client, SocketAddrV4::new(vip(8), 80), 200));
    let rest: Vec<u8> = (0..3u8).filter(|i| *i as usize != a).collect();
    let aff2 = service(7, 80, Protocol::Tcp, Selection::ClientIp, &rest);
    lb.sync(&[aff2, mag]).unwrap();
    let a2 = one(tcp_spread(&topo.client, SocketAddrV4::new(vip(7), 80), 200));
    assert_ne!(a, a2);
    // Maglev untouched by the other service's change.
    assert_eq!(
        m,
        one(tcp_spread(&topo.client, SocketAddrV4::new(vip(8), 80), 50))
    );
    drop(_in);
    finish(lb, &topo);
}

//! `cargo xtask bench lb`: short TCP connections through a service VIP (eBPF socket LB) vs
//! straight to the pod IP vs kube-proxy-style iptables DNAT, with 1, 1,000 and 10,000 services;
//! and the time to apply one endpoint change with 10,000 services, map update vs
//! iptables-restore. Root. Everything runs inside network namespaces the bench makes.
//!
//! Options (after `--`): `--quick` (shorter runs, for a smoke test).
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Topo, run};
use podd_lb::{Frontend, Protocol, Selection, ServiceEntry};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BACKENDS_PER_SERVICE: u32 = 10;
const PORT: u16 = 8080;

fn vip_of(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + i)
}

fn backend_of(b: u32) -> SocketAddrV4 {
    SocketAddrV4::new(common::backend_ip(b as u8), PORT)
}

fn services(n: u32) -> Vec<ServiceEntry> {
    (0..n)
        .map(|i| ServiceEntry {
            frontend: Frontend {
                vip: vip_of(i),
                port: 80,
                protocol: Protocol::Tcp,
            },
            selection: Selection::Random,
            backends: (0..BACKENDS_PER_SERVICE).map(backend_of).collect(),
        })
        .collect()
}

/// kube-proxy's iptables mode, as `iptables-restore` input: KUBE-SERVICES matches the VIP and
/// jumps to KUBE-SVC-*, which picks a KUBE-SEP-* with `statistic --mode random` probabilities
/// 1/n, 1/(n-1), ..., which marks hairpin traffic for masquerade and DNATs to the endpoint.
fn kube_proxy_rules(n: u32, changed: Option<(u32, SocketAddrV4)>) -> String {
    let mut chains = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    let mut rules = String::from(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n",
    );
    for i in 0..n {
        let svc = format!("KUBE-SVC-{i:016X}");
        chains.push_str(&format!(":{svc} - [0:0]\n"));
        rules.push_str(&format!(
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"bench/svc{i}:http cluster IP\" -m tcp --dport 80 -j {svc}\n",
            vip_of(i)
        ));
        for b in 0..BACKENDS_PER_SERVICE {
            let sep = format!("KUBE-SEP-{:016X}", (u64::from(i) << 8) | u64::from(b));
            chains.push_str(&format!(":{sep} - [0:0]\n"));
            let left = BACKENDS_PER_SERVICE - b;
            if left > 1 {
                rules.push_str(&format!(
                    "-A {svc} -m comment --comment \"bench/svc{i}:http\" -m statistic --mode random --probability {:.11} -j {sep}\n",
                    1.0 / f64::from(left)
                ));
            } else {
                rules.push_str(&format!(
                    "-A {svc} -m comment --comment \"bench/svc{i}:http\" -j {sep}\n"
                ));
            }
            let ep = match changed {
                Some((s, ep)) if s == i && b == 0 => ep,
                _ => backend_of(b),
            };
            rules.push_str(&format!(
                "-A {sep} -s {}/32 -m comment --comment \"bench/svc{i}:http\" -j KUBE-MARK-MASQ\n\
                 -A {sep} -p tcp -m comment --comment \"bench/svc{i}:http\" -m tcp -j DNAT --to-destination {ep}\n",
                ep.ip()
            ));
        }
    }
    chains + &rules + "COMMIT\n"
}

fn iptables_restore(netns: &str, rules: &str) -> Duration {
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-restore"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn iptables-restore");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "iptables-restore failed");
    start.elapsed()
}

/// Connections per second for `dur`: connect, send 4 bytes, read the 4-byte reply, close. `target(i)` gives the i-th destination.
fn conn_rate(topo: &Topo, dur: Duration, targets: Vec<SocketAddrV4>) -> f64 {
    topo.client.run(move || {
        let mut i = 0usize;
        let start = Instant::now();
        let mut buf = [0u8; 8];
        while start.elapsed() < dur {
            for _ in 0..64 {
                let t = targets[i % targets.len()];
                i += 1;
                let mut s = TcpStream::connect(t).expect("connect");
                s.write_all(b"ping").unwrap();
                s.read_exact(&mut buf[..4]).unwrap();
                // The client closes first, so TIME_WAIT stays on the client, whose kernel
                // reuses its own ports safely (tcp_tw_reuse); a server-side TIME_WAIT would
                // make reused ports stall differently per mode (the NATed ISN differs).
                drop(s);
            }
        }
        i as f64 / start.elapsed().as_secs_f64()
    })
}

fn connect4_stats(lb: &podd_lb::LoadBalancer) -> podd_lb::ProgramStats {
    lb.program_stats()
        .expect("program stats")
        .into_iter()
        .find(|p| p.program == "podd_connect4")
        .expect("connect4 is loaded")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A server in the server namespace on every backend address: two threads accepting on one
/// listener; each connection: read 4 bytes, write them back, wait for the client's close.
fn start_server(topo: &Topo) -> Vec<i32> {
    let (tx, rx) = std::sync::mpsc::channel();
    topo.server.spawn(move || {
        let l = TcpListener::bind(("0.0.0.0", PORT)).expect("bind the bench server");
        tx.send(l.as_raw_fd()).unwrap();
        let l2 = l.try_clone().unwrap();
        std::thread::spawn(move || serve(l2));
        serve(l);
    });
    vec![rx.recv().unwrap()]
}

fn serve(l: TcpListener) {
    let mut buf = [0u8; 4];
    while let Ok((mut s, _)) = l.accept() {
        if s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
            let _ = s.read(&mut buf);
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dur = Duration::from_millis(if quick { 100 } else { 250 });
    let rounds = if quick { 3 } else { 15 };
    let counts: &[u32] = &[1, 1_000, 10_000];

    let topo = Topo::new("bench", BACKENDS_PER_SERVICE as u8);
    for (k, v) in [
        ("net.ipv4.ip_local_port_range", "1024 65535"),
        ("net.ipv4.tcp_tw_reuse", "1"),
    ] {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &topo.client.name,
                "sysctl",
                "-q",
                "-w",
                &format!("{k}={v}"),
            ],
        );
    }
    let server_fds = start_server(&topo);
    let mut lb = topo.start_lb();
    // The kernel's own account of the connect4 program's run time: a noise-free measure of what
    // the load balancer adds to each connect(), whatever else the machine is doing.
    let _stats = podd_lb::enable_program_stats().expect("BPF_ENABLE_STATS");

    println!(
        "podd lb benchmark: short TCP connections (connect, 4-byte request, 4-byte reply, close), one client thread, {BACKENDS_PER_SERVICE} backends per service; direct and VIP runs interleaved, medians of {rounds} runs of {dur:?}"
    );
    let direct_targets: Vec<SocketAddrV4> = (0..BACKENDS_PER_SERVICE).map(backend_of).collect();
    let mut rows = Vec::new();
    let mut prog = Vec::new();
    for &n in counts {
        lb.sync(&services(n)).expect("sync");
        // Spread over all services so that map lookups are not all one cache line.
        let vip_targets: Vec<SocketAddrV4> = (0..n.min(4096))
            .map(|i| SocketAddrV4::new(vip_of(i * (n / n.min(4096))), 80))
            .collect();
        let (mut d, mut v) = (Vec::new(), Vec::new());
        let before = connect4_stats(&lb);
        for _ in 0..rounds {
            d.push(conn_rate(&topo, dur, direct_targets.clone()));
            let _in = topo.cgroup.enter();
            v.push(conn_rate(&topo, dur, vip_targets.clone()));
        }
        // The cost is the median of the per-round ratios: each direct run and the VIP run right
        // after it see the same background load.
        let cost = median(d.iter().zip(&v).map(|(d, v)| d / v - 1.0).collect());
        let after = connect4_stats(&lb);
        let calls = after.run_count - before.run_count;
        let ns = (after.run_time - before.run_time).as_nanos() as f64 / calls.max(1) as f64;
        rows.push((n, median(d), median(v), cost));
        prog.push((n, ns, calls));
    }

    // The same through kube-proxy-style iptables rules, in the client namespace (with a route
    // for the service CIDR so that the VIP is routable before DNAT, as on a kube-proxy node; it
    // leads only into the bench's server namespace).
    let vc = {
        let out = Command::new("ip")
            .args([
                "-n",
                &topo.client.name,
                "-o",
                "link",
                "show",
                "type",
                "veth",
            ])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.split(':')
            .nth(1)
            .unwrap()
            .trim()
            .split('@')
            .next()
            .unwrap()
            .to_string()
    };
    run(
        "ip",
        &[
            "-n",
            &topo.client.name,
            "route",
            "add",
            "10.96.0.0/12",
            "dev",
            &vc,
        ],
    );
    let mut ipt = Vec::new();
    let mut restore_full = Duration::ZERO;
    for &n in counts {
        let t = iptables_restore(&topo.client.name, &kube_proxy_rules(n, None));
        if n == 10_000 {
            restore_full = t;
        }
        let vip_targets: Vec<SocketAddrV4> = (0..n.min(4096))
            .map(|i| SocketAddrV4::new(vip_of(i * (n / n.min(4096))), 80))
            .collect();
        let mut r = Vec::new();
        for _ in 0..rounds {
            r.push(conn_rate(&topo, dur, vip_targets.clone()));
        }
        ipt.push(median(r));
    }

    println!();
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "services", "direct/s", "eBPF VIP/s", "eBPF cost", "iptables/s", "iptables cost"
    );
    for ((n, d, v, cost), i) in rows.iter().zip(&ipt) {
        println!(
            "{n:>9} {d:>12.0} {v:>12.0} {:>11.1}% {i:>12.0} {:>13.1}%",
            cost * 100.0,
            (d / i - 1.0) * 100.0
        );
    }

    println!();
    println!("time in podd_connect4 per connect() (kernel BPF run-time statistics):");
    for ((n, ns, calls), (_, _, v, _)) in prog.iter().zip(&rows) {
        let per_conn_ns = 1e9 / v;
        println!(
            "{n:>9} services: {ns:>7.0} ns per call over {calls} calls = {:.3}% of a connection ({:.1} µs)",
            ns / per_conn_ns * 100.0,
            per_conn_ns / 1e3
        );
    }

    // One endpoint change with 10,000 services installed.
    lb.sync(&services(10_000)).unwrap();
    let mut entry = services(1).remove(0);
    entry.frontend.vip = vip_of(4321);
    let alt = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 99), PORT);
    let mut upserts = Vec::new();
    let mut writes = Vec::new();
    for k in 0..200 {
        entry.backends[0] = if k % 2 == 0 { alt } else { backend_of(0) };
        let start = Instant::now();
        let r = lb.upsert(&entry).unwrap();
        upserts.push(start.elapsed().as_secs_f64());
        writes.push(r.total());
    }
    let mut full = services(10_000);
    let mut syncs = Vec::new();
    for k in 0..5 {
        full[4321].backends[0] = if k % 2 == 0 { alt } else { backend_of(0) };
        let start = Instant::now();
        lb.sync(&full).unwrap();
        syncs.push(start.elapsed().as_secs_f64());
    }
    let mut restores = Vec::new();
    for k in 0..if quick { 1 } else { 2 } {
        let ch = (k % 2 == 0).then_some((4321, alt));
        restores
            .push(iptables_restore(&topo.client.name, &kube_proxy_rules(10_000, ch)).as_secs_f64());
    }
    let up = median(upserts.clone());
    let rs = median(restores);
    println!();
    println!("one endpoint change with 10,000 services installed:");
    println!(
        "  eBPF upsert (one service, {} map write):  median {:>9.1} µs",
        writes[0],
        up * 1e6
    );
    println!(
        "  eBPF full sync (diff of all 10,000):       median {:>9.1} µs",
        median(syncs) * 1e6
    );
    println!(
        "  iptables-restore of the whole nat table:   median {:>9.1} µs (first load {:.1} ms)",
        rs * 1e6,
        restore_full.as_secs_f64() * 1e3
    );
    println!(
        "  ratio iptables-restore / eBPF upsert:      {:.1e}x",
        rs / up
    );

    lb.shutdown().unwrap();
    for fd in server_fds {
        // SAFETY: wakes the server's blocking accept; the fd is owned by the server thread.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

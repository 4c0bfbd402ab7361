//! Test topology for the load balancer: network namespaces, a cgroup, a private bpffs, backends.
//!
//! Every packet stays inside two network namespaces the test makes: `<prefix>-c` (the client,
//! 10.244.0.1/24) and `<prefix>-s` (the backends, 10.244.0.10-19/24), joined by a veth pair,
//! with no other interfaces and no default route. VIPs (10.96/12) are only ever reached through
//! the programs' rewrite. Everything is removed by guards' `Drop`.
#![allow(dead_code)]

pub mod scenarios;

use podd_lb::{Frontend, LbConfig, LoadBalancer, Protocol, Selection, ServiceEntry};
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Tests move the whole test process into their cgroup while acting as a client: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const BACKEND_PORT: u16 = 8080;

pub fn backend_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, 10 + i)
}

pub fn backend(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(backend_ip(i), BACKEND_PORT)
}

pub fn vip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, n)
}

pub fn service(
    vip_n: u8,
    port: u16,
    proto: Protocol,
    sel: Selection,
    backends: &[u8],
) -> ServiceEntry {
    ServiceEntry {
        frontend: Frontend {
            vip: vip(vip_n),
            port,
            protocol: proto,
        },
        selection: sel,
        backends: backends.iter().map(|i| backend(*i)).collect(),
    }
}

/// cgroup v2 root: the unified tree of this hybrid host, or the VM's cgroup2 root, found as
/// podd finds it.
pub fn cgroup2_root() -> PathBuf {
    podd_runtime::cgroups::detect_root().expect("a cgroup v2 hierarchy")
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }

    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in netns panicked")
    }
}

pub fn enter_netns(path: &Path) {
    let f = fs::File::open(path).expect("open netns");
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A cgroup v2 directory the test owns.
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn new(name: &str) -> Cgroup {
        let path = cgroup2_root().join(name);
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).expect("create cgroup");
        Cgroup { path }
    }

    /// Moves this whole process in, until the guard drops.
    pub fn enter(&self) -> InCgroup {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("process has a cgroup v2 path")
            .trim_start_matches('/')
            .to_string();
        let back = cgroup2_root().join(rel);
        fs::write(
            self.path.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .unwrap();
        InCgroup { back }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.path);
    }
}

pub struct InCgroup {
    back: PathBuf,
}

impl Drop for InCgroup {
    fn drop(&mut self) {
        fs::write(
            self.back.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .expect("move the test process back");
    }
}

/// A private bpffs mounted under /tmp.
pub struct Bpffs {
    pub dir: PathBuf,
}

impl Bpffs {
    pub fn new(name: &str) -> Bpffs {
        let dir = PathBuf::from("/tmp").join(name);
        let _ = Command::new("umount").arg(&dir).output();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        run("mount", &["-t", "bpf", "bpf", dir.to_str().unwrap()]);
        Bpffs { dir }
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A backend server set: TCP and UDP on each backend IP. A TCP connection first receives the
/// backend index (one byte), then has everything echoed; a UDP datagram is answered with the
/// index followed by the datagram.
pub struct Backends {
    stop: Arc<AtomicBool>,
    fds: Vec<i32>,
    threads: Vec<JoinHandle<()>>,
}

impl Backends {
    pub fn start(ns: &Netns, count: u8) -> Backends {
        let stop = Arc::new(AtomicBool::new(false));
        let mut fds = Vec::new();
        let mut threads = Vec::new();
        for i in 0..count {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop2 = stop.clone();
            let stop3 = stop.clone();
            threads.push(ns.spawn(move || {
                let l = TcpListener::bind(backend(i)).expect("bind tcp backend");
                let u = UdpSocket::bind(backend(i)).expect("bind udp backend");
                tx.send(l.as_raw_fd()).unwrap();
                // The UDP server polls its stop flag: a shutdown(2) would wake recv_from with
                // an empty source address, which std's recv_from panics on.
                u.set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("udp backend read timeout");
                let udp = std::thread::spawn(move || {
                    let mut buf = [0u8; 1500];
                    while !stop3.load(Ordering::Relaxed) {
                        match u.recv_from(&mut buf[1..]) {
                            Ok((n, from)) => {
                                buf[0] = i;
                                let _ = u.send_to(&buf[..n + 1], from);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                });
                while let Ok((mut s, _)) = l.accept() {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    if s.write_all(&[i]).is_err() {
                        continue;
                    }
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 256];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
                let _ = udp.join();
            }));
            fds.push(rx.recv().unwrap());
        }
        Backends { stop, fds, threads }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for fd in &self.fds {
            // SAFETY: shutting down a listening socket owned by a server thread wakes its
            // blocking accept; the fd stays open until that thread drops it.
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Everything a load-balancer test needs.
pub struct Topo {
    pub client: Netns,
    pub server: Netns,
    pub cgroup: Cgroup,
    pub bpffs: Bpffs,
}

impl Topo {
    pub fn new(test: &str, backends: u8) -> Topo {
        let prefix = format!("plb-{test}-{}", std::process::id());
        let client = Netns::new(format!("{prefix}-c"));
        let server = Netns::new(format!("{prefix}-s"));
        // Interface names are limited to 15 bytes: "pc<pid>"/"ps<pid>" plus a test hash.
        let tag = format!("{:x}", fxhash(test) & 0xffff);
        let (vc, vs) = (format!("plc{tag}"), format!("pls{tag}"));
        run(
            "ip",
            &[
                "-n",
                &client.name,
                "link",
                "add",
                &vc,
                "type",
                "veth",
                "peer",
                "name",
                &vs,
                "netns",
                &server.name,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &client.name,
                "addr",
                "add",
                "10.244.0.1/24",
                "dev",
                &vc,
            ],
        );
        run("ip", &["-n", &client.name, "link", "set", &vc, "up"]);
        for i in 0..backends.max(1) {
            let a = format!("{}/24", backend_ip(i));
            run("ip", &["-n", &server.name, "addr", "add", &a, "dev", &vs]);
        }
        run("ip", &["-n", &server.name, "link", "set", &vs, "up"]);
        let cgroup = Cgroup::new(&prefix);
        let bpffs = Bpffs::new(&format!("{prefix}-bpffs"));
        Topo {
            client,
            server,
            cgroup,
            bpffs,
        }
    }

    pub fn config(&self) -> LbConfig {
        LbConfig {
            pin_dir: self.bpffs.dir.join("podd"),
            cgroups: vec![self.cgroup.path.clone()],
        }
    }

    pub fn start_lb(&self) -> LoadBalancer {
        LoadBalancer::start(self.config()).expect("start the load balancer")
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Connects (from the calling thread's netns) and returns the backend index it reached.
pub fn tcp_probe(addr: SocketAddrV4) -> std::io::Result<u8> {
    let mut s = TcpStream::connect_timeout(&addr.into(), std::time::Duration::from_secs(2))?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(b[0])
}

/// Counts, per backend index, `n` TCP connections to `addr` made from the client netns.
pub fn tcp_spread(client: &Netns, addr: SocketAddrV4, n: usize) -> Vec<usize> {
    client.run(move || {
        let mut counts = vec![0usize; 16];
        for _ in 0..n {
            let b = tcp_probe(addr).expect("connect through the VIP");
            counts[b as usize] += 1;
        }
        counts
    })
}

/// The χ² statistic of observed counts against a uniform distribution.
pub fn chi_square(counts: &[usize]) -> f64 {
    let total: usize = counts.iter().sum();
    let e = total as f64 / counts.len() as f64;
    counts.iter().map(|&o| (o as f64 - e).powi(2) / e).sum()
}

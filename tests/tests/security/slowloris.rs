//! Class 6, connections: slowloris, idle keep-alive and connection floods against the API
//! server (TLS and its Unix socket) and the agent endpoint (:10250), and watch floods.
//!
//! Before the fix, 20,000 idle or half-sent connections exhausted the server's file
//! descriptors: nothing ever closed them. Each test here is that attack on loopback, with
//! short configured timeouts so it is quick; the defaults are asserted on their own.

use podd_control_plane::conn_limits::ConnLimits;
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const ADMIN: &str = "admin-token-for-the-slowloris-tests";

struct Plane {
    plane: ControlPlane,
    addr: SocketAddr,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(limits: ConnLimits) -> Plane {
    let dir = tempfile::Builder::new()
        .prefix("podd-sec-slowloris-")
        .tempdir()
        .unwrap();
    let socket = dir.path().join("api.sock");
    let cfg = ControlPlaneConfig {
        data_dir: None,
        socket: Some(socket.clone()),
        tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        admin_token: Some(ADMIN.into()),
        controllers: None,
        limits,
        ..ControlPlaneConfig::default()
    };
    let store: Arc<dyn podd_store::Store> = Arc::new(podd_store::MemStore::new());
    let plane = ControlPlane::start(store, cfg)
        .await
        .expect("start a control plane on loopback");
    let addr = plane.tls_addr.expect("a TLS listener");
    Plane {
        plane,
        addr,
        socket,
        _dir: dir,
    }
}

fn short_limits() -> ConnLimits {
    ConnLimits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        tls_handshake_timeout: Duration::from_secs(3),
        max_connections_per_ip: 40,
        max_connections: 500,
        ..ConnLimits::default()
    }
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all local), so
/// the attacker's per-source cap is not the legitimate client's.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    s.connect(to).await.expect("connect to the API port")
}

/// True when the peer closed the connection (EOF or reset) within `wait`; data is skipped.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends `bytes` one at a time every `every`, until the server closes the connection; Some
/// (bytes sent) when it did within `wait`.
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    every: Duration,
    wait: Duration,
) -> Option<usize> {
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < wait {
        if sent < bytes.len() {
            if s.write_all(&bytes[sent..sent + 1]).await.is_err() || s.flush().await.is_err() {
                return Some(sent);
            }
            sent += 1;
        }
        if closed_within(s, every).await {
            return Some(sent);
        }
    }
    None
}

fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn tls_from(
    p: &Plane,
    from: Ipv4Addr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = connect_from(from, p.addr).await;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tls_connector(&p.plane.ca_pem)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the API server")
}

fn socket_inodes() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The server's own open sockets on TCP port `port` (its accepted connections, not the
/// listener, not this test's client ends): the file descriptors the attack costs it.
fn server_tcp_fds(port: u16) -> usize {
    let ours = socket_inodes();
    let text = std::fs::read_to_string("/proc/self/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            let listening = f.get(3) == Some(&"0A");
            let inode = f.get(9).and_then(|i| i.parse::<u64>().ok());
            local_port == Some(port) && !listening && inode.is_some_and(|i| ours.contains(&i))
        })
        .count()
}

/// The server's accepted connections on the Unix socket at `path` (they carry its path;
/// clients do not).
fn server_unix_fds(path: &Path) -> usize {
    let ours = socket_inodes();
    let path = path.to_string_lossy();
    let text = std::fs::read_to_string("/proc/self/net/unix").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening = f.get(3) == Some(&"00010000");
            let inode = f.get(6).and_then(|i| i.parse::<u64>().ok());
            f.get(7) == Some(&path.as_ref())
                && !listening
                && inode.is_some_and(|i| ours.contains(&i))
        })
        .count()
}

async fn legit_request_works(p: &Plane, what: &str) {
    let c = p.plane.admin_tls_client().unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.raw(
            hyper::Method::GET,
            "/api/v1/namespaces/default/pods",
            None,
            "application/json",
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("{what}: a normal request got no answer: the attack starved the server")
    })
    .unwrap_or_else(|e| panic!("{what}: a normal request failed: {e}"));
    assert_eq!(r.status, 200, "{what}: {:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_default_to_their_documented_values() {
    let d = ConnLimits::default();
    assert_eq!(d.header_read_timeout, Duration::from_secs(10));
    assert_eq!(d.idle_timeout, Duration::from_secs(90));
    assert_eq!(d.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(d.body_read_timeout, Duration::from_secs(60));
    assert_eq!(d.max_connections_per_ip, 256);
    assert_eq!(d.max_connections, 4096);
    assert_eq!(d.max_watches_per_identity, 100);
    assert_eq!(d.max_watches, 2048);
    assert_eq!(
        ControlPlaneConfig::default().limits,
        d,
        "a server started without limits must get the defaults"
    );
    assert_eq!(
        podd_control_plane::conn_limits::process_limits(),
        &d,
        "the agent endpoint's limits default to the same values"
    );
}

/// Half-sent TLS handshakes, half-sent headers and idle keep-alive connections on the TLS
/// port are all closed; beyond the per-source cap connections are refused at once; the
/// server's descriptors stay bounded and it keeps answering others throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_api_port_is_cut_off_and_bounded() {
    let p = start(short_limits()).await;
    let port = p.addr.port();
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let cap = 40;

    // 1. Hold the per-source cap with TLS handshakes that never finish: a record header
    //    announcing a ClientHello, then nothing.
    let mut held = Vec::new();
    for _ in 0..cap {
        let mut s = connect_from(attacker, p.addr).await;
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        held.push(s);
    }
    // 2. Twenty more from the same source: refused at once.
    let mut extra = Vec::new();
    for _ in 0..20 {
        extra.push(connect_from(attacker, p.addr).await);
    }
    let mut refused = 0;
    for s in &mut extra {
        if closed_within(s, Duration::from_millis(1500)).await {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 20,
        "connections beyond the per-source cap of {cap} must be closed at once; only {refused} of 20 were"
    );
    let during = server_tcp_fds(port);
    println!("server-side sockets on :{port} during the attack: {during}");
    assert!(
        during <= cap + 5,
        "the server holds {during} sockets for one source capped at {cap}: the cap leaks"
    );
    legit_request_works(&p, "during the handshake flood").await;

    // 3. Headers sent byte by byte over a finished handshake, from another source.
    let mut slow = tls_from(&p, Ipv4Addr::new(127, 0, 0, 3)).await;
    let request = b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: podd\r\nX-Slow: ";
    let sent = trickle(
        &mut slow,
        request,
        Duration::from_millis(150),
        Duration::from_secs(15),
    )
    .await;
    let sent = sent.expect(
        "a request whose headers trickle in byte by byte was never closed: slowloris holds a \
         descriptor forever",
    );
    println!("slow headers: closed after {sent} bytes");

    // 4. An idle keep-alive connection is closed after the idle timeout.
    let mut idle = tls_from(&p, Ipv4Addr::new(127, 0, 0, 4)).await;
    let req =
        format!("GET /healthz HTTP/1.1\r\nHost: podd\r\nAuthorization: Bearer {ADMIN}\r\n\r\n");
    idle.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(15)).await,
        "an idle keep-alive connection stayed open: idle clients pin descriptors forever"
    );

    // 5. The half-done handshakes were closed by the handshake timeout.
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(15)).await,
            "half-sent TLS handshake {i} was never closed"
        );
    }
    legit_request_works(&p, "after the attack").await;
    let after = server_tcp_fds(port);
    println!("server-side sockets on :{port} after the attack: {after}");
    assert!(
        after <= 3,
        "the server still holds {after} sockets after every attacking connection timed out"
    );
    drop(held);
    p.plane.shutdown().await;
}

/// The root-only Unix socket gets the same header timeout: a stuck local client does not pin
/// descriptors either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_unix_socket_is_cut_off() {
    let p = start(short_limits()).await;
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::UnixStream::connect(&p.socket).await.unwrap();
        s.write_all(b"GET /api/v1/pods HTTP/1.1\r\nHo")
            .await
            .unwrap();
        conns.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server_unix_fds(&p.socket) < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "server-side unix sockets during the attack: {}",
        server_unix_fds(&p.socket)
    );
    for (i, s) in conns.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(15)).await,
            "half-sent request {i} on the Unix socket was never closed"
        );
    }
    let after = server_unix_fds(&p.socket);
    assert_eq!(
        after, 0,
        "the server still holds {after} of the stalled Unix connections"
    );
    p.plane.shutdown().await;
}

/// Reads an HTTP response head (status code and the raw head) from a fresh watch request.
async fn open_watch<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    auth: Option<&str>,
) -> (u16, String) {
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /api/v1/namespaces/default/pods?watch=true HTTP/1.1\r\nHost: podd\r\n{auth}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&head).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the watch answered nothing")
            .unwrap();
        assert!(n > 0, "the server closed the watch connection");
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// Watches beyond the per-identity and total caps get 429 TooManyRequests, as a Kubernetes
/// Status with a Retry-After; a closed watch gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_beyond_the_caps_get_429() {
    let p = start(ConnLimits {
        max_watches_per_identity: 3,
        max_watches: 5,
        ..short_limits()
    })
    .await;
    let mut admin = Vec::new();
    for i in 0..3 {
        let mut s = tls_from(&p, Ipv4Addr::new(127, 0, 0, 5)).await;
        let (code, head) = open_watch(&mut s, Some(ADMIN)).await;
        assert_eq!(code, 200, "admin watch {i}: {head}");
        admin.push(s);
    }
    let mut s = tls_from(&p, Ipv4Addr::new(127, 0, 0, 5)).await;
    let (code, head) = open_watch(&mut s, Some(ADMIN)).await;
    assert_eq!(
        code, 429,
        "a 4th watch of one identity over a cap of 3 was accepted: watches are unbounded\n{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 10"), "no Retry-After: {head}");
    let mut body = head[head.find("\r\n\r\n").unwrap() + 4..].to_string();
    let mut buf = [0u8; 4096];
    while !body.contains("TooManyRequests") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "no Status body: {head}{body}");
        body.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    while body.matches('{').count() != body.matches('}').count() {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the Status body was cut short: {body}");
        body.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let json = &body[body.find('{').unwrap()..body.rfind('}').unwrap() + 1];
    let st: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["code"], 429);
    assert_eq!(st["reason"], "TooManyRequests");
    assert_eq!(st["details"]["retryAfterSeconds"], 10);

    // Local root counts towards the total only: 2 more fill it, the next is refused.
    let mut local = Vec::new();
    for i in 0..2 {
        let mut u = tokio::net::UnixStream::connect(&p.socket).await.unwrap();
        let (code, head) = open_watch(&mut u, None).await;
        assert_eq!(code, 200, "local watch {i}: {head}");
        local.push(u);
    }
    let mut u = tokio::net::UnixStream::connect(&p.socket).await.unwrap();
    let (code, head) = open_watch(&mut u, None).await;
    assert_eq!(
        code, 429,
        "a watch over the server's total cap was accepted\n{head}"
    );

    // A watcher that goes away frees its slot, without any event on the watched kind.
    drop(admin.pop());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut s = tls_from(&p, Ipv4Addr::new(127, 0, 0, 5)).await;
        let (code, head) = open_watch(&mut s, Some(ADMIN)).await;
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed watch never gave its slot back: {head}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    p.plane.shutdown().await;
}

/// Opens `n` TCP connections to `addr` from inside the netns at `netns`, each sending the
/// start of a TLS record announcing a ClientHello and then nothing.
fn half_handshakes_from(
    netns: PathBuf,
    addr: SocketAddr,
    n: usize,
) -> std::io::Result<Vec<std::net::TcpStream>> {
    std::thread::spawn(move || {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&netns)?;
        // SAFETY: setns(2) on an fd we own; it changes only this thread's network namespace.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        (0..n)
            .map(|_| {
                let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                // Refused connections may already be closed: a failed write is fine.
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]);
                Ok(s)
            })
            .collect()
    })
    .join()
    .expect("the connecting thread panicked")
}

/// True when the peer closed `s` (EOF or reset) within `wait`.
fn std_closed_within(s: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The real agent endpoint, started by `podd agent` in a one-node cluster on this machine
/// (network namespaces, no route out): half-done TLS handshakes on :10250 are closed after
/// the default 10 s handshake timeout, connections beyond the per-source cap of 256 are
/// refused at once, and the agent's descriptors stay bounded.
#[test]
fn slowloris_on_the_agent_endpoint_is_cut_off_and_bounded() {
    let prefix = format!("sl{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("podd-{prefix}"));
    let c = podd_tests::cluster::Cluster::up_at(1, &prefix, &dir).expect("a one-node cluster");
    let node = c.state.nodes[0].clone();
    let pid = node.agent_pid.expect("the agent runs");
    let netns = PathBuf::from("/var/run/netns").join(&node.netns);
    let addr: SocketAddr = format!("{}:10250", node.ip).parse().unwrap();
    let cap = ConnLimits::default().max_connections_per_ip;
    // The endpoint starts once the agent has its serving certificate.
    let log = format!("agent-{}.log", node.name);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.log(&log).contains("agent endpoint") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = open_fds(pid);

    let mut held = half_handshakes_from(netns.clone(), addr, cap)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}\nagent log:\n{}", c.log(&log)));
    // Let the agent accept them all before the next ones count as over the cap.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) < before + cap && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut extra = half_handshakes_from(netns, addr, 20).expect("connect to :10250");
    let refused = extra
        .iter_mut()
        .map(|s| std_closed_within(s, Duration::from_millis(1500)))
        .filter(|closed| *closed)
        .count();
    let during = open_fds(pid);
    println!("agent fds: {before} before, {during} during the attack; {refused} of 20 refused");
    assert_eq!(
        refused, 20,
        "connections to :10250 beyond the per-source cap of {cap} must be closed at once"
    );
    assert!(
        during <= before + cap + 10,
        "the agent holds {during} fds (from {before}) for one source capped at {cap}"
    );
    let (code, body) = c
        .agent_request(0, "GET", "/healthz", None, None)
        .expect("the agent answers on its socket during the attack");
    assert_eq!(code, 200, "{body}");

    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            std_closed_within(s, Duration::from_secs(30)),
            "half-done TLS handshake {i} on :10250 was never closed"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > before + 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = open_fds(pid);
    println!("agent fds after the attack: {after}");
    assert!(
        after <= before + 5,
        "the agent still holds {after} fds (from {before}) after the attack timed out"
    );
    drop(held);
    c.down().expect("the cluster comes down without leaks");
}

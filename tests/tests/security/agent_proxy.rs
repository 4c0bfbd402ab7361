//! Class 3: the server trusts a node's word about where to proxy (and class 4's file modes of
//! the store, keys and tokens).
//!
//! Each test is the attack of a node that holds its own agent token (or held it, before
//! `podd token delete`): redirect the API server's `pods/log` and `pods/exec` to an address of
//! its choosing, get a token sent to it, impersonate another node's agent, or talk to an
//! agent's TCP port without being the API server. Everything runs in-process on loopback
//! (127.0.17.x, port 10250; the API server on 127.0.0.1).

use podd_client::Client;
use podd_control_plane::agent_proxy::{AGENT_PORT, AgentCertificate};
use podd_control_plane::tls::{CertAndKey, TlsMaterial};
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Plane {
    plane: ControlPlane,
    dir: tempfile::TempDir,
    addr: String,
}

async fn start_plane(store_url: Option<&str>, dir: tempfile::TempDir) -> Plane {
    let store = match store_url {
        Some(u) => podd_store::open(u).await.unwrap(),
        None => podd_store::open("memory:").await.unwrap(),
    };
    let cfg = ControlPlaneConfig {
        data_dir: Some(dir.path().to_path_buf()),
        socket: Some(dir.path().join("podd.sock")),
        tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        controllers: None,
        ..ControlPlaneConfig::default()
    };
    let plane = ControlPlane::start(store, cfg).await.unwrap();
    let addr = format!("127.0.0.1:{}", plane.tls_addr.unwrap().port());
    Plane { plane, dir, addr }
}

async fn plane() -> Plane {
    start_plane(None, tempfile::tempdir().unwrap()).await
}

impl Plane {
    fn admin(&self) -> Client {
        self.plane.admin_tls_client().unwrap()
    }
    fn as_token(&self, token: &str) -> Client {
        Client::tls(&self.addr, &self.plane.ca_pem, token).unwrap()
    }
    /// `podd token create NODE`.
    fn node_token(&self, node: &str) -> String {
        self.plane.auth.issue_node_token(node).unwrap()
    }
}

/// One request; (status, body).
async fn call(c: &Client, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let m = hyper::Method::from_bytes(method.as_bytes()).unwrap();
    let body = body.map(|b| b.to_string().into_bytes());
    let ct = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    match c.raw(m, path, body, ct).await {
        Ok(r) => (
            r.status.as_u16(),
            String::from_utf8_lossy(&r.body).into_owned(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// Registers `node` at `ip` as its agent does (its own token, over TLS).
async fn register(c: &Client, node: &str, ip: IpAddr) -> (u16, String) {
    call(
        c,
        "POST",
        "/api/v1/nodes",
        Some(json!({
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
            "status": {"addresses": [
                {"type": "InternalIP", "address": ip.to_string()},
                {"type": "Hostname", "address": node},
            ]},
        })),
    )
    .await
}

/// A pod bound to `node`, created by the admin.
async fn pod_on(admin: &Client, name: &str, node: &str) {
    let (code, body) = call(
        admin,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1"}]},
        })),
    )
    .await;
    assert_eq!(code, 201, "creating pod {name}: {body}");
}

fn log_path(pod: &str) -> String {
    format!("/api/v1/namespaces/default/pods/{pod}/log")
}

fn exec_path(pod: &str) -> String {
    format!("/api/v1/namespaces/default/pods/{pod}/exec?command=id")
}

/// What arrived at a listener: one entry per connection, with the first bytes it sent.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Vec<u8>>>>);

impl Seen {
    fn get(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }
    fn push(&self, b: Vec<u8>) {
        self.0.lock().unwrap().push(b);
    }
}

async fn first_bytes<S: tokio::io::AsyncRead + Unpin>(mut s: S) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        _ => Vec::new(),
    }
}

/// A plain TCP listener that records every connection and its first bytes.
async fn tcp_trap(addr: SocketAddr) -> (Seen, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("binding the trap {addr}: {e}"));
    let seen = Seen::default();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            s.push(first_bytes(c).await);
        }
    });
    (seen, task)
}

async fn unix_trap(path: &Path) -> (Seen, tokio::task::JoinHandle<()>) {
    let l = tokio::net::UnixListener::bind(path).unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            s.push(first_bytes(c).await);
        }
    });
    (seen, task)
}

const FAKE_AGENT_ANSWER: &str = "answer-of-the-agent-that-holds-the-certificate";

/// A TLS "agent" on `addr` with `cfg`; records the HTTP request heads it gets after a
/// completed handshake, and answers each with FAKE_AGENT_ANSWER.
async fn tls_agent(
    addr: SocketAddr,
    cfg: Arc<rustls::ServerConfig>,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("binding the agent {addr}: {e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let seen = Seen::default();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(5), acceptor.accept(c)).await
                else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let Ok(n) = tls.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                s.push(buf[..n].to_vec());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{FAKE_AGENT_ANSWER}",
                    FAKE_AGENT_ANSWER.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (seen, task)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A TLS server config that asks nothing of its clients (an impostor agent).
fn impostor_config(c: &CertAndKey) -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs(&c.cert_pem), key(&c.key_pem))
            .unwrap(),
    )
}

async fn agent_certificate(c: &Client, node: &str) -> Result<AgentCertificate, (u16, String)> {
    let (code, body) = call(
        c,
        "POST",
        &format!("/api/v1/nodes/{node}/certificate"),
        None,
    )
    .await;
    if code != 200 {
        return Err((code, body));
    }
    Ok(serde_json::from_str(&body).unwrap())
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 17, last])
}

fn agent_addr(last: u8) -> SocketAddr {
    SocketAddr::new(ip(last), AGENT_PORT)
}

/// Lets a connection that the server might still make arrive.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_node_token_cannot_choose_where_the_server_proxies() {
    let p = plane().await;
    let admin = p.admin();
    let evil = p.as_token(&p.node_token("evil"));
    let (code, body) = register(&evil, "evil", ip(1)).await;
    assert_eq!(code, 201, "the node registers: {body}");
    pod_on(&admin, "victim-pod", "evil").await;

    // Where the node would like the root server to send the admin's requests.
    let tcp_addr = SocketAddr::from(([127, 0, 17, 2], 18443));
    let (tcp_seen, _t) = tcp_trap(tcp_addr).await;
    let sock = p.dir.path().join("node-chosen.sock");
    let (unix_seen, _u) = unix_trap(&sock).await;

    let nodes = "/api/v1/nodes/evil";
    let attempts: Vec<(&str, &str, Value, &str)> = vec![
        (
            "PATCH",
            nodes,
            json!({"metadata": {"annotations": {"podd.io/agent-endpoint": format!("http://{tcp_addr}")}}}),
            "a redirect of the agent endpoint to a TCP address",
        ),
        (
            "PATCH",
            nodes,
            json!({"metadata": {"annotations": {"podd.io/agent-endpoint": format!("unix://{}", sock.display())}}}),
            "a redirect of the agent endpoint to a local Unix socket",
        ),
        (
            "PUT",
            nodes,
            json!({"metadata": {"name": "evil", "annotations": {"podd.io/agent-endpoint": format!("http://{tcp_addr}")}}}),
            "a whole-object PUT carrying the endpoint annotation",
        ),
        (
            "PATCH",
            nodes,
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
            "a label the scheduler acts on",
        ),
        (
            "PATCH",
            nodes,
            json!({"spec": {"unschedulable": false, "taints": []}}),
            "its own spec",
        ),
        (
            "PATCH",
            "/api/v1/nodes/evil/status",
            json!({"status": {"addresses": [{"type": "InternalIP", "address": tcp_addr.ip().to_string()}]}}),
            "moving its registered InternalIP",
        ),
        (
            "PUT",
            "/api/v1/nodes/evil/status",
            json!({"metadata": {"name": "evil"}, "status": {}}),
            "dropping its registered InternalIP (to register another one later)",
        ),
        (
            "DELETE",
            nodes,
            Value::Null,
            "deleting its Node (to register again at another address)",
        ),
        (
            "POST",
            "/api/v1/nodes",
            json!({"metadata": {"name": "evil2"}, "status": {"addresses": [{"type": "InternalIP", "address": "127.0.17.2"}]}}),
            "registering another node",
        ),
        (
            "POST",
            "/api/v1/nodes/other/certificate",
            Value::Null,
            "getting another node's agent certificate",
        ),
    ];
    for (method, path, body, what) in attempts {
        let body = (!body.is_null()).then_some(body);
        let (code, text) = call(&evil, method, path, body).await;
        assert_eq!(
            code, 403,
            "a node token was allowed {what} ({method} {path}): {text}"
        );
    }
    // The lease and status of its own Node still work.
    let (code, text) = call(
        &evil,
        "PATCH",
        "/api/v1/nodes/evil/status",
        Some(json!({"status": {"leaseRenewTime": "2026-01-01T00:00:00.000000000Z"}})),
    )
    .await;
    assert_eq!(code, 200, "the lease renewal: {text}");

    // Even an endpoint annotation already in the store (an older version's, or an admin's
    // mistake) is not followed: the server goes to the registered InternalIP only.
    for ep in [
        format!("http://{tcp_addr}"),
        format!("unix://{}", sock.display()),
    ] {
        let (code, text) = call(
            &admin,
            "PATCH",
            nodes,
            Some(json!({"metadata": {"annotations": {"podd.io/agent-endpoint": ep}}})),
        )
        .await;
        assert_eq!(code, 200, "{text}");
        for path in [log_path("victim-pod"), exec_path("victim-pod")] {
            let method = if path.contains("/exec") {
                "POST"
            } else {
                "GET"
            };
            let (code, text) = call(&admin, method, &path, None).await;
            assert_eq!(
                code, 503,
                "nothing listens at the registered address: {text}"
            );
            assert!(
                text.contains(&agent_addr(1).to_string()),
                "the server went to the registered address, not {ep}: {text}"
            );
        }
    }
    settle().await;
    assert!(
        tcp_seen.get().is_empty(),
        "the root API server connected to the TCP address the node chose: {:?}",
        tcp_seen.get()
    );
    assert!(
        unix_seen.get().is_empty(),
        "the root API server sent the admin's request to the node-chosen Unix socket: {:?}",
        unix_seen.get()
    );
    println!("node-token redirect refused (403) and never followed");
}

#[tokio::test]
async fn a_revoked_node_gets_nothing_back() {
    let p = plane().await;
    let admin = p.admin();
    let token = p.node_token("gone");
    let gone = p.as_token(&token);
    assert_eq!(register(&gone, "gone", ip(3)).await.0, 201);
    pod_on(&admin, "gone-pod", "gone").await;
    // Whatever listens at the node's registered address records what the server sends.
    let (seen, _t) = tcp_trap(agent_addr(3)).await;

    assert!(p.plane.auth.revoke_node_token("gone").unwrap());
    let tokens = p.dir.path().join("tokens/nodes");
    let attempts: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/api/v1/nodes", None),
        (
            "PATCH",
            "/api/v1/nodes/gone/status",
            Some(json!({"status": {"leaseRenewTime": "2026-01-01T00:00:00.000000000Z"}})),
        ),
        (
            "POST",
            "/api/v1/nodes",
            Some(json!({"metadata": {"name": "gone"}})),
        ),
        ("POST", "/api/v1/nodes/gone/certificate", None),
    ];
    for (method, path, body) in attempts {
        let (code, text) = call(&gone, method, path, body).await;
        assert_eq!(
            code, 401,
            "the revoked token still works for {method} {path}: {text}"
        );
    }
    // The admin reads the node's pod's log: the server must not mint a token for the node.
    let (code, text) = call(&admin, "GET", &log_path("gone-pod"), None).await;
    assert_ne!(code, 200, "{text}");
    settle().await;
    let files: Vec<_> = std::fs::read_dir(&tokens)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        files.is_empty(),
        "the server issued a token for the revoked node: {files:?}"
    );
    let (code, text) = call(&gone, "GET", "/api/v1/nodes", None).await;
    assert_eq!(
        code, 401,
        "the revoked node got a working token back: {text}"
    );
    // What reached the node's address is a TLS handshake, never a request or a token in clear.
    for bytes in seen.get() {
        assert_eq!(
            bytes.first(),
            Some(&0x16),
            "the server sent the node something else than a TLS handshake: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("Bearer") && !text.contains(&token),
            "a token crossed the network in clear: {text:?}"
        );
    }
    println!("revoked node: 401 everywhere, no token issued or sent");
}

#[tokio::test]
async fn the_server_refuses_an_agent_that_is_not_that_node() {
    let p = plane().await;
    let admin = p.admin();
    let victim = p.as_token(&p.node_token("victim"));
    assert_eq!(register(&victim, "victim", ip(4)).await.0, 201);
    let other = p.as_token(&p.node_token("other"));
    assert_eq!(register(&other, "other", ip(5)).await.0, 201);
    pod_on(&admin, "pod-on-victim", "victim").await;

    // 1: a certificate for the victim's name, from a CA that is not the cluster's.
    let foreign = TlsMaterial::generate(&[]).unwrap();
    let forged = foreign.issue_agent_cert("victim", Some(ip(4))).unwrap();
    // 2: a genuine cluster certificate, but another node's.
    let genuine_other = agent_certificate(&other, "other").await.unwrap();
    let other_pair = CertAndKey {
        cert_pem: genuine_other.certificate,
        key_pem: genuine_other.key,
    };
    for (cert, what) in [
        (forged, "a certificate from another CA"),
        (other_pair, "another node's certificate"),
    ] {
        let (seen, task) = tls_agent(agent_addr(4), impostor_config(&cert)).await;
        let (code, text) = call(&admin, "GET", &log_path("pod-on-victim"), None).await;
        assert_eq!(
            code, 503,
            "the server talked to an agent with {what}: {text}"
        );
        assert!(text.contains("TLS"), "{text}");
        settle().await;
        assert!(
            seen.get().is_empty(),
            "the server sent the admin's request to an agent with {what}: {:?}",
            seen.get()
        );
        task.abort();
        let _ = task.await;
    }

    // The victim's own certificate (as its agent gets it at join) is accepted, and the
    // server authenticates to it with its client certificate.
    let own = agent_certificate(&victim, "victim").await.unwrap();
    let cfg = podd_control_plane::tls::agent_server_config(
        &CertAndKey {
            cert_pem: own.certificate,
            key_pem: own.key,
        },
        &own.ca,
    )
    .unwrap();
    let (seen, _task) = tls_agent(agent_addr(4), cfg).await;
    let (code, text) = call(&admin, "GET", &log_path("pod-on-victim"), None).await;
    assert_eq!((code, text.as_str()), (200, FAKE_AGENT_ANSWER));
    let requests = seen.get();
    assert_eq!(requests.len(), 1);
    let head = String::from_utf8_lossy(&requests[0]);
    assert!(head.starts_with("GET /pods/"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("authorization"),
        "the server sent a credential in the request: {head}"
    );
    println!("impostor agents refused; the real one reached over mutual TLS");
}

/// Connects to `addr` as `client` (None: plain TCP), sends an HTTP request, and returns what
/// came back.
async fn hostile_request(
    addr: SocketAddr,
    node: &str,
    client: Option<rustls::ClientConfig>,
) -> String {
    let req = b"GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n";
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    match client {
        None => {
            let mut tcp = tcp;
            let _ = tcp.write_all(req).await;
            let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut out)).await;
        }
        Some(cfg) => {
            let name = ServerName::try_from(format!("{node}.agent.podd")).unwrap();
            let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
            else {
                return String::new();
            };
            let _ = tls.write_all(req).await;
            let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut out)).await;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_agent_endpoint_serves_only_the_api_server() {
    let p = plane().await;
    let node = p.as_token(&p.node_token("n6"));
    assert_eq!(register(&node, "n6", ip(6)).await.0, 201);
    let other = p.as_token(&p.node_token("n7"));
    assert_eq!(register(&other, "n7", ip(7)).await.0, 201);
    // The agent's TLS config, built as the agent builds it from what it gets at join.
    let own = agent_certificate(&node, "n6").await.unwrap();
    let cfg = podd_control_plane::tls::agent_server_config(
        &CertAndKey {
            cert_pem: own.certificate.clone(),
            key_pem: own.key.clone(),
        },
        &own.ca,
    )
    .unwrap();
    let (seen, _task) = tls_agent(agent_addr(6), cfg).await;

    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in certs(&own.ca) {
            r.add(c).unwrap();
        }
        Arc::new(r)
    };
    let builder = || {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
    };
    let foreign = TlsMaterial::generate(&[]).unwrap();
    let foreign_client = foreign.issue_server_client_cert().unwrap();
    let n7 = agent_certificate(&other, "n7").await.unwrap();
    let attempts: Vec<(Option<rustls::ClientConfig>, &str)> = vec![
        (None, "plain HTTP"),
        (
            Some(builder().with_no_client_auth()),
            "TLS without a client certificate",
        ),
        (
            Some(
                builder()
                    .with_client_auth_cert(certs(&n7.certificate), key(&n7.key))
                    .unwrap(),
            ),
            "TLS with another node's (serving) certificate",
        ),
        (
            Some(
                builder()
                    .with_client_auth_cert(
                        certs(&foreign_client.cert_pem),
                        key(&foreign_client.key_pem),
                    )
                    .unwrap(),
            ),
            "TLS with a client certificate from another CA",
        ),
    ];
    for (client, what) in attempts {
        let answer = hostile_request(agent_addr(6), "n6", client).await;
        assert!(
            !answer.contains("HTTP/1.1"),
            "the agent endpoint answered {what}: {answer:?}"
        );
    }
    assert!(
        seen.get().is_empty(),
        "a request reached the agent without the API server's client certificate: {:?}",
        seen.get()
    );
    // The API server itself gets through.
    let admin = p.admin();
    pod_on(&admin, "pod-on-n6", "n6").await;
    let (code, text) = call(&admin, "POST", &exec_path("pod-on-n6"), None).await;
    assert_eq!((code, text.as_str()), (200, FAKE_AGENT_ANSWER));
    println!("agent endpoint: plain HTTP, no client certificate, wrong certificates refused");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn secret_paths(data: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let files = [
        "podd.db",
        "podd.db-wal",
        "podd.db-shm",
        "pki/ca.crt",
        "pki/ca.key",
        "pki/server.crt",
        "pki/server.key",
        "pki/client-ca.crt",
        "pki/client-ca.key",
        "tokens/admin",
        "tokens/nodes/n1",
    ]
    .iter()
    .map(|f| data.join(f))
    .collect();
    let dirs = ["", "pki", "tokens", "tokens/nodes"]
        .iter()
        .map(|d| data.join(d))
        .collect();
    (files, dirs)
}

fn assert_private(data: &Path, when: &str) {
    let (files, dirs) = secret_paths(data);
    for f in files {
        assert_eq!(
            mode(&f),
            0o600,
            "{when}: {} is readable by other host users",
            f.display()
        );
    }
    for d in dirs {
        assert_eq!(
            mode(&d),
            0o700,
            "{when}: {} is open to other host users",
            d.display()
        );
    }
}

#[tokio::test]
async fn store_keys_and_tokens_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::tempdir().unwrap();
    let data = top.path().join("var-lib-podd");
    let url = format!("sqlite://{}", data.join("podd.db").display());
    // The server's data dir is the store's directory, as in the default install.
    let start = || async {
        let store = podd_store::open(&url).await.unwrap();
        let cfg = ControlPlaneConfig {
            data_dir: Some(data.clone()),
            socket: None,
            tls_addr: None,
            controllers: None,
            ..ControlPlaneConfig::default()
        };
        let plane = ControlPlane::start(store, cfg).await.unwrap();
        plane.auth.issue_node_token("n1").unwrap();
        plane
    };
    let plane = start().await;
    // A write, so the WAL and shared memory exist.
    plane
        .registry
        .create(
            podd_api::Kind::Node,
            "",
            json!({"metadata": {"name": "n1"}}),
        )
        .await
        .unwrap();
    assert_private(&data, "a new install");
    plane.shutdown().await;

    // An install made by an older podd: world-readable database, certificates and directories.
    let (files, dirs) = secret_paths(&data);
    for f in files.iter().filter(|f| f.exists()) {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    for d in &dirs {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let plane = start().await;
    plane
        .registry
        .create(
            podd_api::Kind::Node,
            "",
            json!({"metadata": {"name": "n2"}}),
        )
        .await
        .unwrap();
    assert_private(&data, "an older install after a restart");
    plane.shutdown().await;
    println!("store, WAL, keys, CA and tokens 0600 in 0700 directories");
}

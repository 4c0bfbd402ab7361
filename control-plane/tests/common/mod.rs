//! Shared test helpers: a control plane on an in-memory store (or SQLite, or a real etcd on
//! loopback), with its socket in a temp dir.
#![allow(dead_code)]

use podd_control_plane::controllers::ControllerConfig;
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use podd_store::{MemStore, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct TestPlane {
    pub plane: ControlPlane,
    pub store: Arc<dyn Store>,
    pub client: podd_client::Client,
    _dir: tempfile::TempDir,
    /// What the store lives in (a SQLite file's directory, an etcd process); dropped last.
    _backend: Option<Box<dyn std::any::Any + Send>>,
}

/// The store a test plane runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    /// A real etcd (Debian's etcd-server) started on loopback for the test.
    Etcd,
}

/// A control plane on `backend`, with `controllers`.
pub async fn start_with(backend: Backend, controllers: Option<ControllerConfig>) -> TestPlane {
    let (store, guard): (Arc<dyn Store>, Option<Box<dyn std::any::Any + Send>>) = match backend {
        Backend::Memory => (Arc::new(MemStore::new()), None),
        Backend::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("podd-cp-sqlite-")
                .tempdir()
                .unwrap();
            let url = format!("sqlite://{}", dir.path().join("podd.db").display());
            (podd_store::open(&url).await.unwrap(), Some(Box::new(dir)))
        }
        Backend::Etcd => {
            let etcd = podd_store::testing::EtcdServer::start()
                .await
                .expect("start etcd (Debian: etcd-server)");
            let store = podd_store::open(&etcd.url()).await.unwrap();
            (store, Some(Box::new(etcd)))
        }
    };
    let mut t = start_on(store, controllers).await;
    t._backend = guard;
    t
}

pub fn fast_controllers() -> ControllerConfig {
    ControllerConfig {
        resync: Duration::from_secs(2),
        node_grace: Duration::from_secs(2),
        node_monitor_period: Duration::from_millis(100),
        hpa_period: Duration::from_millis(200),
        ..ControllerConfig::default()
    }
}

pub async fn start(controllers: Option<ControllerConfig>) -> TestPlane {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    start_on(store, controllers).await
}

pub async fn start_on(store: Arc<dyn Store>, controllers: Option<ControllerConfig>) -> TestPlane {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("podd.sock");
    let cfg = ControlPlaneConfig {
        data_dir: None,
        socket: Some(socket.clone()),
        tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        admin_token: Some("admin-token-for-tests".into()),
        controllers,
        ..ControlPlaneConfig::default()
    };
    let plane = ControlPlane::start(store.clone(), cfg).await.unwrap();
    let client = podd_client::Client::unix(&socket);
    TestPlane {
        plane,
        store,
        client,
        _dir: dir,
        _backend: None,
    }
}

/// Polls `f` until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn deployment(name: &str, replicas: u32) -> podd_api::Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    "ports": [{"containerPort": 8080}]}]}
            }
        }
    }))
    .unwrap()
}

pub fn pod(name: &str, labels: &[(&str, &str)]) -> podd_api::Pod {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}
    }))
    .unwrap()
}

/// A Node with a name only (no Ready condition: nothing runs its pods).
pub fn node(name: &str) -> podd_api::Node {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap()
}

/// A Node whose Ready condition is True (its pods wait for its agent to stop them).
pub fn ready_node(name: &str) -> podd_api::Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

/// One answer with its headers.
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: serde_json::Value,
}

/// Sends one request over the plane's Unix socket with the given headers, keeping the answer's
/// headers (the client does not expose them).
pub async fn request(
    t: &TestPlane,
    method: hyper::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> Answer {
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    request_bytes(t, method, path, headers, body).await
}

/// [`request`] with a body of any bytes (protobuf).
pub async fn request_bytes(
    t: &TestPlane,
    method: hyper::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    use http_body_util::{BodyExt, Full};
    let socket = t.plane.socket.clone().unwrap();
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    Answer {
        status,
        headers,
        body,
    }
}

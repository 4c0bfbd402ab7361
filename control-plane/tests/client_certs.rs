//! Client certificates on the API port, as kube-apiserver's x509 authenticator: a certificate
//! from the client CA is the user in its CN with its O values as groups (`system:masters` is
//! the admin, `system:node:<name>` in `system:nodes` is that node with a node token's
//! restrictions); an expired, foreign or rotated-out certificate is a 401 Status; with a valid
//! certificate the bearer token beside it is not looked at, with a refused one the token
//! decides. Through kube-rs (a kubeconfig with client-certificate-data) and a raw rustls
//! client.

use http_body_util::{BodyExt, Full};
use podd_api::Node;
use podd_control_plane::tls::{CertAndKey, TlsMaterial};
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use podd_store::{MemStore, Store};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

async fn start(store: Arc<dyn Store>, dir: &std::path::Path) -> ControlPlane {
    let cfg = ControlPlaneConfig {
        data_dir: Some(dir.to_path_buf()),
        socket: Some(dir.join("podd.sock")),
        tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        controllers: None,
        ..ControlPlaneConfig::default()
    };
    ControlPlane::start(store, cfg).await.unwrap()
}

/// A kube-rs client for `plane` authenticating with `cert` (a kubeconfig with
/// client-certificate-data and client-key-data, as `podd kubeconfig --client-cert` writes).
async fn kube_client(plane: &ControlPlane, cert: &CertAndKey) -> kube::Client {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let port = plane.tls_addr.unwrap().port();
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "podd", "cluster": {
            "server": format!("https://127.0.0.1:{port}"),
            "certificate-authority-data": b64(&plane.ca_pem),
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": b64(&cert.cert_pem),
            "client-key-data": b64(&cert.key_pem),
        }}],
        "contexts": [{"name": "podd", "context": {"cluster": "podd", "user": "admin"}}],
        "current-context": "podd",
    }))
    .unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube-rs reads a client-certificate kubeconfig");
    kube::Client::try_from(config).expect("kube-rs client")
}

/// One request over a fresh rustls connection presenting `cert` (if any) and `token` (if
/// any): the status and the JSON body.
async fn raw(
    plane: &ControlPlane,
    cert: Option<&CertAndKey>,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(plane.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = plane.tls_addr.unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", addr.port()))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("the handshake succeeds whatever the certificate: it is judged per request");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header(
            "content-type",
            if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            },
        );
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = sender
        .send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    )
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}})
}

#[tokio::test]
async fn client_certificates_authenticate_as_kubernetes_x509() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let plane = start(store.clone(), dir.path()).await;
    // The server's own PKI, as `podd kubeconfig --client-cert` reads it.
    let pki = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
    let admin = pki.issue_admin_client_cert().unwrap();

    // kube-rs with the admin certificate: the admin (system:masters).
    let client = kube_client(&plane, &admin).await;
    let nodes: kube::Api<Node> = kube::Api::all(client);
    for name in ["n1", "n2"] {
        nodes
            .create(
                &Default::default(),
                &serde_json::from_value(node(name)).unwrap(),
            )
            .await
            .expect("system:masters may create Nodes");
    }
    assert_eq!(
        nodes.list(&Default::default()).await.unwrap().items.len(),
        2
    );

    // whoami: the certificate's user and groups.
    let (status, review) = raw(
        &plane,
        Some(&admin),
        None,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
    )
    .await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(
        review["status"]["userInfo"],
        json!({"username": "system:admin", "groups": ["system:masters", "system:authenticated"]})
    );

    // A certificate from another server's client CA: 401 Status, as kube-apiserver.
    let foreign = TlsMaterial::generate(&[])
        .unwrap()
        .issue_admin_client_cert()
        .unwrap();
    let (status, body) = raw(&plane, Some(&foreign), None, "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    // ... with a valid token beside it, the token decides (the next authenticator).
    let (status, body) = raw(
        &plane,
        Some(&foreign),
        Some("not-a-token"),
        "GET",
        "/api/v1/nodes",
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let token = plane.auth.admin_token().to_string();
    let (status, body) = raw(
        &plane,
        Some(&foreign),
        Some(&token),
        "GET",
        "/api/v1/nodes",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // An expired certificate from the right CA: 401.
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let expired = pki
        .issue_client_cert(
            "system:admin",
            &["system:masters"],
            now - 2 * hour,
            now - hour,
        )
        .unwrap();
    let (status, body) = raw(&plane, Some(&expired), None, "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("xpired"),
        "{body}"
    );

    // A node's certificate: the node identity, with a node token's restrictions.
    let n1 = pki
        .issue_client_cert("system:node:n1", &["system:nodes"], now, now + hour)
        .unwrap();
    let (status, body) = raw(&plane, Some(&n1), None, "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 200, "a node reads: {body}");
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let (status, body) = raw(
        &plane,
        Some(&n1),
        None,
        "PATCH",
        "/api/v1/nodes/n1/status",
        Some(ready.clone()),
    )
    .await;
    assert_eq!(status, 200, "its own Node's status: {body}");
    let (status, body) = raw(
        &plane,
        Some(&n1),
        None,
        "PATCH",
        "/api/v1/nodes/n2/status",
        Some(ready.clone()),
    )
    .await;
    assert_eq!(status, 403, "another Node's status: {body}");
    let (status, body) = raw(
        &plane,
        Some(&n1),
        None,
        "PATCH",
        "/api/v1/nodes/n1",
        Some(json!({"metadata": {"labels": {"zone": "a"}}})),
    )
    .await;
    assert_eq!(status, 403, "its own Node's labels: {body}");
    // With the admin token beside the node certificate: x509 comes first, the token is not
    // looked at, so the node's restrictions still apply.
    let (status, body) = raw(
        &plane,
        Some(&n1),
        Some(&token),
        "POST",
        "/api/v1/namespaces",
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, review) = raw(
        &plane,
        Some(&n1),
        Some(&token),
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(review["status"]["userInfo"]["username"], "system:node:n1");

    // Any other user is authenticated (whoami works) and authorised for nothing else.
    let bob = pki
        .issue_client_cert("bob", &["dev"], now, now + hour)
        .unwrap();
    let (status, review) = raw(
        &plane,
        Some(&bob),
        None,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(
        review["status"]["userInfo"],
        json!({"username": "bob", "groups": ["dev", "system:authenticated"]})
    );
    let (status, body) = raw(&plane, Some(&bob), None, "GET", "/api/v1/pods", None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = raw(
        &plane,
        Some(&bob),
        None,
        "POST",
        "/api/v1/nodes/n1/certificate",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // Token clients are unchanged.
    let (status, body) = raw(&plane, None, Some(&token), "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = raw(&plane, None, None, "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 401);

    // Rotating the client CA (and restarting the server) revokes every certificate it issued.
    plane.shutdown().await;
    TlsMaterial::rotate_client_ca(dir.path()).unwrap();
    let plane = start(store, dir.path()).await;
    let (status, body) = raw(&plane, Some(&admin), None, "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 401, "{body}");
    let fresh = TlsMaterial::load_or_generate(dir.path(), &[])
        .unwrap()
        .issue_admin_client_cert()
        .unwrap();
    let nodes: kube::Api<Node> = kube::Api::all(kube_client(&plane, &fresh).await);
    assert_eq!(
        nodes.list(&Default::default()).await.unwrap().items.len(),
        2
    );
    plane.shutdown().await;
}

//! kubectl with a client-certificate kubeconfig (`client-certificate-data`,
//! `client-key-data`, as `podd kubeconfig --client-cert` writes): the admin certificate
//! (`system:admin` in `system:masters`) reads and writes, `kubectl auth whoami` names it, a
//! node's certificate has a node's restrictions, and a certificate from another client CA is
//! not logged in.

use podd_control_plane::tls::{CertAndKey, TlsMaterial};
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use podd_store::{MemStore, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into()))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run kubectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Standard base64 with padding (the `-data` fields of a kubeconfig).
fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig for `server` whose user is `cert`, written 0600.
fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, cert: &CertAndKey) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: podd\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {}\nusers:\n- name: podd\n  user:\n    \
         client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: podd\n  \
         context:\n    cluster: podd\n    user: podd\ncurrent-context: podd\n",
        b64(ca_pem),
        b64(&cert.cert_pem),
        b64(&cert.key_pem),
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create kubeconfig");
    f.write_all(text.as_bytes()).expect("write kubeconfig");
    path.to_path_buf()
}

#[test]
fn kubectl_with_a_client_certificate() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("podd-kubectl-certs-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    let plane = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        ControlPlane::start(
            store,
            ControlPlaneConfig {
                data_dir: Some(data.clone()),
                socket: Some(dir.path().join("podd.sock")),
                tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                controllers: None,
                ..ControlPlaneConfig::default()
            },
        )
        .await
        .expect("start the control plane")
    });
    let server = format!("https://127.0.0.1:{}", plane.tls_addr.unwrap().port());
    // The server's client CA, as `podd kubeconfig --client-cert` uses it.
    let pki = TlsMaterial::load_or_generate(&data, &[]).unwrap();
    let home = dir.path();
    let admin = write_kubeconfig(
        &dir.path().join("admin.yaml"),
        &server,
        &plane.ca_pem,
        &pki.issue_admin_client_cert().unwrap(),
    );

    // The admin certificate writes and reads.
    let node = dir.path().join("node.yaml");
    std::fs::write(&node, "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n").unwrap();
    let (code, out, err) = kubectl(&admin, home, &["apply", "-f", node.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kubectl(&admin, home, &["get", "nodes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("n1 ")), "{out}");

    // kubectl auth whoami: a SelfSubjectReview (authentication.k8s.io/v1).
    let (code, out, err) = kubectl(&admin, home, &["auth", "whoami", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let review: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(review["kind"], "SelfSubjectReview", "{review}");
    assert_eq!(review["status"]["userInfo"]["username"], "system:admin");
    assert_eq!(
        review["status"]["userInfo"]["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );
    let (code, out, err) = kubectl(&admin, home, &["auth", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("system:admin"), "{out}");

    // A node's certificate: reads, its own status, nothing of its Node's metadata.
    let now = std::time::SystemTime::now();
    let hour = std::time::Duration::from_secs(3600);
    let n1 = write_kubeconfig(
        &dir.path().join("n1.yaml"),
        &server,
        &plane.ca_pem,
        &pki.issue_client_cert("system:node:n1", &["system:nodes"], now, now + hour)
            .unwrap(),
    );
    let (code, out, err) = kubectl(&n1, home, &["get", "nodes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("n1"), "{out}");
    let (code, _, err) = kubectl(&n1, home, &["label", "node", "n1", "zone=a"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    let (code, out, err) = kubectl(&n1, home, &["auth", "whoami", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("system:node:n1"), "{out}");

    // Another server's client CA: not logged in.
    let foreign = write_kubeconfig(
        &dir.path().join("foreign.yaml"),
        &server,
        &plane.ca_pem,
        &TlsMaterial::generate(&[])
            .unwrap()
            .issue_admin_client_cert()
            .unwrap(),
    );
    let (code, _, err) = kubectl(&foreign, home, &["get", "nodes"]);
    assert_ne!(code, 0);
    assert!(err.contains("You must be logged in"), "{err}");
    assert!(err.contains("client certificate is not valid"), "{err}");

    rt.block_on(plane.shutdown());
}

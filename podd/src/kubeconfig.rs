//! The admin kubeconfig: what kubectl, kube-rs or the Python client need to reach this server
//! as the admin (the server URL, the cluster CA, the admin bearer token). The server writes it
//! at start to `/etc/podd/kubeconfig` (root-only, as k3s writes its k3s.yaml), and
//! `podd kubeconfig` prints the same. The API server authenticates clients by bearer token
//! (it asks for no client certificate), so the user entry carries the admin token.

use anyhow::{Context, Result};
use kube::config::Kubeconfig;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Where the server writes the admin kubeconfig by default.
pub const DEFAULT_PATH: &str = "/etc/podd/kubeconfig";

/// The name of the cluster, user and context entries.
const NAME: &str = "podd";

/// The URL clients use for a server listening on `listen`: the node's address (or loopback
/// when the server listens on every address and the node has none), which the server's
/// certificate names.
pub fn server_url(listen: SocketAddr, advertise: Option<std::net::Ipv4Addr>) -> String {
    let host = if listen.ip().is_unspecified() {
        advertise.map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string())
    } else {
        listen.ip().to_string()
    };
    format!("https://{host}:{}", listen.port())
}

/// The admin kubeconfig of the server whose data directory is `data_dir` (its `pki/ca.crt`
/// and admin token), at `server` (`https://HOST:PORT`).
pub fn admin(data_dir: &Path, server: &str) -> Result<Kubeconfig> {
    let ca_path = data_dir.join("pki/ca.crt");
    let ca = std::fs::read(&ca_path).with_context(|| {
        format!(
            "reading the cluster CA {} (the server creates it at its first start)",
            ca_path.display()
        )
    })?;
    let auth = podd_control_plane::auth::Authenticator::load_or_init(data_dir)
        .with_context(|| format!("reading the admin token under {}", data_dir.display()))?;
    build(server, &ca, auth.admin_token())
}

/// A kubeconfig with one cluster (`server`, CA `ca_pem`), one user (bearer `token`) and the
/// context joining them, current.
pub fn build(server: &str, ca_pem: &[u8], token: &str) -> Result<Kubeconfig> {
    use base64::Engine;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": {
            "server": server,
            "certificate-authority-data": encode(ca_pem),
        }}],
        "users": [{"name": NAME, "user": {"token": token}}],
        "contexts": [{"name": NAME, "context": {"cluster": NAME, "user": NAME}}],
        "current-context": NAME,
    });
    serde_json::from_value(value).context("building the kubeconfig")
}

/// The kubeconfig as YAML, the form kubectl writes.
pub fn to_yaml(k: &Kubeconfig) -> Result<String> {
    serde_yaml::to_string(k).context("encoding the kubeconfig as YAML")
}

/// Writes `k` to `path`, mode 0600 from its creation (through a temp file and a rename, so a
/// reader never sees half of it); the parent directory is made 0700 when missing.
pub fn write(path: &Path, k: &Kubeconfig) -> Result<()> {
    let text = to_yaml(k)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // Per process: two servers on one machine (test clusters) never share a temp file.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    // The mode of an existing file is not what create_new's mode set: make sure.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("moving {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_written_kubeconfig_loads_and_is_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let tls = podd_control_plane::tls::TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        let server = server_url("0.0.0.0:6443".parse().unwrap(), None);
        assert_eq!(server, "https://127.0.0.1:6443");
        let k = admin(dir.path(), &server).unwrap();
        let path = dir.path().join("etc/podd/kubeconfig");
        write(&path, &k).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Written again over an existing file: still 0600, same content.
        write(&path, &k).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = Kubeconfig::read_from(&path).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(loaded, &Default::default())
            .await
            .unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");
        let token = podd_control_plane::auth::Authenticator::load_or_init(dir.path())
            .unwrap()
            .admin_token()
            .to_string();
        assert!(text.contains(&token), "the admin token is in it");
        let roots = cfg.root_cert.expect("the CA is in it");
        assert_eq!(roots.len(), 1);
        assert!(tls.ca_cert_pem.contains("BEGIN CERTIFICATE"));
        assert_eq!(
            server_url(
                "0.0.0.0:6443".parse().unwrap(),
                Some("10.0.0.5".parse().unwrap())
            ),
            "https://10.0.0.5:6443"
        );
    }
}

//! The admin kubeconfig: what kubectl, kube-rs or the Python client need to reach this server
//! as the admin (the server URL, the cluster CA, the admin bearer token). The server writes it
//! at start to `/etc/podd/kubeconfig` (root-only, as k3s writes its k3s.yaml), and
//! `podd kubeconfig` prints the same. Its user entry carries the admin bearer token.
//!
//! `podd kubeconfig --client-cert` instead issues a fresh admin client certificate from the
//! client CA (`CN=system:admin, O=system:masters`, ECDSA P-256, one year) and puts it and its
//! key in the user entry (`client-certificate-data`, `client-key-data`), as k3s' k3s.yaml
//! does. The token stays the default: every client podd ships and tests (podd-client, the
//! harnesses, the Python client) reads it, and it never expires; a certificate lapses after a
//! year and can only be revoked by rotating the client CA (all at once). A certificate
//! kubeconfig is for when the admin token should not be handed out: it can be revoked without
//! changing the token every node's `podd kubeconfig` reads. See docs/SECURITY.md.

use anyhow::{Context, Result};
use kube::config::Kubeconfig;
use std::ffi::OsStr;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
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

/// The admin kubeconfig with a new admin client certificate (issued by the client CA under
/// `data_dir/pki`) instead of the token. Nothing is written to the data directory: the
/// certificate and its key exist only in the returned kubeconfig.
pub fn admin_client_cert(data_dir: &Path, server: &str) -> Result<Kubeconfig> {
    let pki = data_dir.join("pki");
    // Never generate the server's PKI from here: the server makes it (with its addresses).
    for f in ["ca.crt", "client-ca.crt", "client-ca.key"] {
        let p = pki.join(f);
        if !p.exists() {
            anyhow::bail!(
                "{} is missing: the server creates it at start (restart a server older than \
                 client certificates once)",
                p.display()
            );
        }
    }
    let tls = podd_control_plane::tls::TlsMaterial::load_or_generate(data_dir, &[])
        .with_context(|| format!("reading the CAs under {}", pki.display()))?;
    let cert = tls
        .issue_admin_client_cert()
        .context("issuing the admin client certificate")?;
    build_with_cert(
        server,
        tls.ca_cert_pem.as_bytes(),
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
    )
}

fn encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A kubeconfig with one cluster (`server`, CA `ca_pem`), one user (bearer `token`) and the
/// context joining them, current.
pub fn build(server: &str, ca_pem: &[u8], token: &str) -> Result<Kubeconfig> {
    build_with_user(server, ca_pem, serde_json::json!({"token": token}))
}

/// [`build`] with a client certificate and key (PEM) as the user.
pub fn build_with_cert(
    server: &str,
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Kubeconfig> {
    build_with_user(
        server,
        ca_pem,
        serde_json::json!({
            "client-certificate-data": encode(cert_pem),
            "client-key-data": encode(key_pem),
        }),
    )
}

fn build_with_user(server: &str, ca_pem: &[u8], user: serde_json::Value) -> Result<Kubeconfig> {
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": {
            "server": server,
            "certificate-authority-data": encode(ca_pem),
        }}],
        "users": [{"name": NAME, "user": user}],
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

/// The file in the server's data directory naming the kubeconfig the server wrote: `podd
/// reset` removes that file and no other, so a reset of another node (a test cluster's agent,
/// say) never touches a kubeconfig some other server wrote.
const RECORD: &str = "written-kubeconfig";

/// Writes the server's admin kubeconfig to `path` and records it in `data_dir` for reset.
pub fn write_recorded(data_dir: &Path, path: &Path, k: &Kubeconfig) -> Result<()> {
    let record = data_dir.join(RECORD);
    let path =
        std::path::absolute(path).with_context(|| format!("making {} absolute", path.display()))?;
    // Recorded before the write: a crash between the two leaves a record of nothing, never
    // a kubeconfig nobody removes.
    let mut text = path.as_os_str().as_bytes().to_vec();
    text.push(b'\n');
    std::fs::write(&record, text).with_context(|| format!("writing {}", record.display()))?;
    write(&path, k)
}

/// Removes the kubeconfig the server of `data_dir` recorded, and the record; returns the
/// kubeconfig's path when there was one.
pub fn remove_recorded(data_dir: &Path) -> Result<Option<std::path::PathBuf>> {
    let record = data_dir.join(RECORD);
    let text = match std::fs::read(&record) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", record.display())),
    };
    let path =
        Path::new(OsStr::from_bytes(text.strip_suffix(b"\n").unwrap_or(&text))).to_path_buf();
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    std::fs::remove_file(&record).with_context(|| format!("removing {}", record.display()))?;
    Ok(Some(path))
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

    #[test]
    fn reset_removes_only_the_kubeconfig_its_own_server_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (server_dir, other_dir) = (dir.path().join("server"), dir.path().join("agent"));
        std::fs::create_dir_all(&server_dir).unwrap();
        std::fs::create_dir_all(&other_dir).unwrap();
        podd_control_plane::tls::TlsMaterial::load_or_generate(&server_dir, &[]).unwrap();
        let k = admin(&server_dir, "https://127.0.0.1:6443").unwrap();
        let path = dir.path().join("etc/podd/kubeconfig");
        write_recorded(&server_dir, &path, &k).unwrap();
        assert!(path.exists());

        // Another data directory (another node) recorded nothing: its reset leaves it.
        assert_eq!(remove_recorded(&other_dir).unwrap(), None);
        assert!(path.exists());
        // The server's own removes it and the record; a second time finds nothing.
        assert_eq!(remove_recorded(&server_dir).unwrap(), Some(path.clone()));
        assert!(!path.exists());
        assert!(!server_dir.join(RECORD).exists());
        assert_eq!(remove_recorded(&server_dir).unwrap(), None);

        // A kubeconfig someone removed already: the record still goes.
        write_recorded(&server_dir, &path, &k).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(remove_recorded(&server_dir).unwrap(), Some(path));
        assert!(!server_dir.join(RECORD).exists());
    }

    #[tokio::test]
    async fn the_client_cert_kubeconfig_carries_an_admin_certificate_and_no_token() {
        let dir = tempfile::tempdir().unwrap();
        // Before the server made its PKI: refused, and nothing generated.
        let e = admin_client_cert(dir.path(), "https://127.0.0.1:6443").unwrap_err();
        assert!(e.to_string().contains("ca.crt is missing"), "{e}");
        assert!(!dir.path().join("pki").exists());
        let tls = podd_control_plane::tls::TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        let k = admin_client_cert(dir.path(), "https://127.0.0.1:6443").unwrap();
        let path = dir.path().join("kubeconfig");
        write(&path, &k).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("client-certificate-data"), "{text}");
        assert!(text.contains("client-key-data"), "{text}");
        assert!(!text.contains("token"), "{text}");
        // kube-rs reads it: identity from the certificate and key.
        let loaded = Kubeconfig::read_from(&path).unwrap();
        let user = loaded.auth_infos[0].auth_info.clone().unwrap();
        let cert_pem = user.client_certificate_data.clone().unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(loaded, &Default::default())
            .await
            .unwrap();
        assert!(cfg.auth_info.client_key_data.is_some());
        // The certificate is system:admin in system:masters, from the client CA.
        use base64::Engine;
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(cert_pem)
                .unwrap(),
        )
        .unwrap();
        let subject = tls.client_cert_auth().unwrap().verify(&[der]).unwrap();
        assert_eq!(subject.common_name, "system:admin");
        assert_eq!(subject.organizations, ["system:masters"]);
        // The data directory holds no issued certificate or key.
        let mut pki: Vec<_> = std::fs::read_dir(dir.path().join("pki"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        pki.sort();
        assert_eq!(
            pki,
            [
                "ca.crt",
                "ca.key",
                "client-ca.crt",
                "client-ca.key",
                "server.crt",
                "server.key"
            ]
        );
    }
}

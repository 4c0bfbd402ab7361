//! TLS material: a cluster CA and a server certificate, generated once at init with rcgen and
//! kept under the data directory (`<data>/pki/`, mode 0700, every file 0600), and the rustls
//! configs built from them.
//!
//! The CA also secures the agent endpoint (port 10250): at join the server issues each node a
//! serving certificate for `<node>.agent.podd` and the node's registered IP (extended key usage
//! serverAuth only), and to itself a client certificate (clientAuth only). The agent accepts
//! only clients with a CA-issued clientAuth certificate; the server accepts only an agent whose
//! certificate names the node it meant to reach.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not generate the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("could not {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}; delete the pki directory to generate new ones")]
    BadPem { path: PathBuf, what: &'static str },
    #[error(
        "this server has no cluster CA key (pki/ca.key; installs made before the agent endpoint \
         used TLS did not keep it), so it cannot issue agent certificates; remove the pki \
         directory, restart the server and give the nodes the new pki/ca.crt"
    )]
    NoCaKey,
    #[error("{0:?} is not a node name a certificate can carry")]
    BadNodeName(String),
    #[error("rustls rejected the configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// PEM-encoded CA certificate (and key, when this server keeps it), server certificate and
/// server key.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub ca_cert_pem: String,
    /// None for installs made before the CA key was kept: they cannot issue agent certificates.
    pub ca_key_pem: Option<String>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The DNS name in a node's agent certificate, which the server checks when it connects.
pub fn agent_server_name(node: &str) -> String {
    format!("{node}.agent.podd")
}

/// Creates `dir` (and its parents) with mode 0700, and tightens it to 0700 if it existed.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a secret file: created 0600 (no window where it is readable by others), and set to
/// 0600 if it existed with another mode.
pub fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}

/// Sets an existing file to 0600 (older installs wrote certificates 0644).
pub fn tighten_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o7777 != 0o600 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Io { op, path, source }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(io_err("read", path))
}

fn gen_err(what: &'static str) -> impl Fn(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

/// The CA's parameters: the same every time, so a CA rebuilt from its key (rcgen cannot parse
/// a certificate without x509-parser) issues certificates that chain to the stored ca.crt.
fn ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("CA parameters"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "podd cluster CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca)
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::BadPem {
            path: what.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn private_key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsError::BadPem {
        path: what.into(),
        what: "private key",
    })
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem, "ca.crt")? {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// Generates a new CA and a server certificate for `sans` (IP addresses and DNS names).
    pub fn generate(sans: &[String]) -> Result<TlsMaterial, TlsError> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let ca_key = KeyPair::generate().map_err(gen_err("CA key"))?;
        let ca_cert = ca_params()?
            .self_signed(&ca_key)
            .map_err(gen_err("CA certificate"))?;
        let mut names: Vec<String> = sans.to_vec();
        for default in ["127.0.0.1", "localhost", "podd"] {
            if !names.iter().any(|n| n == default) {
                names.push(default.into());
            }
        }
        let mut server = CertificateParams::new(names).map_err(gen_err("server parameters"))?;
        server
            .distinguished_name
            .push(DnType::CommonName, "podd API server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(gen_err("server key"))?;
        let cert = server
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(gen_err("server certificate"))?;
        Ok(TlsMaterial {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem: Some(ca_key.serialize_pem()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads `<dir>/pki/{ca.crt,ca.key,server.crt,server.key}`, generating them on first use.
    /// The directory is kept 0700 and the files 0600, also for existing installs.
    pub fn load_or_generate(dir: &Path, sans: &[String]) -> Result<TlsMaterial, TlsError> {
        let pki = dir.join("pki");
        let (ca, ca_key, crt, key) = (
            pki.join("ca.crt"),
            pki.join("ca.key"),
            pki.join("server.crt"),
            pki.join("server.key"),
        );
        if ca.exists() && crt.exists() && key.exists() {
            private_dir(&pki).map_err(io_err("restrict", &pki))?;
            for f in [&ca, &ca_key, &crt, &key] {
                tighten_file(f).map_err(io_err("restrict", f))?;
            }
            let ca_key_pem = if ca_key.exists() {
                Some(read(&ca_key)?)
            } else {
                tracing::warn!(
                    "{} is missing: this server cannot issue agent certificates, so logs and exec of other nodes fail; remove {} to generate a new CA",
                    ca_key.display(),
                    pki.display()
                );
                None
            };
            return Ok(TlsMaterial {
                ca_cert_pem: read(&ca)?,
                ca_key_pem,
                cert_pem: read(&crt)?,
                key_pem: read(&key)?,
            });
        }
        private_dir(&pki).map_err(io_err("create", &pki))?;
        let m = TlsMaterial::generate(sans)?;
        let w = |path: &Path, data: &str| {
            write_private_file(path, data.as_bytes()).map_err(io_err("write", path))
        };
        if let Some(k) = &m.ca_key_pem {
            w(&ca_key, k)?;
        }
        w(&ca, &m.ca_cert_pem)?;
        w(&crt, &m.cert_pem)?;
        w(&key, &m.key_pem)?;
        Ok(m)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = certs(&self.cert_pem, "server.crt")?;
        let key = private_key(&self.key_pem, "server.key")?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The CA as an rcgen issuer, rebuilt from its key.
    fn issuer(&self) -> Result<(rcgen::Certificate, rcgen::KeyPair), TlsError> {
        let pem = self.ca_key_pem.as_deref().ok_or(TlsError::NoCaKey)?;
        let key = rcgen::KeyPair::from_pem(pem).map_err(|_| TlsError::BadPem {
            path: "ca.key".into(),
            what: "private key",
        })?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(gen_err("CA issuer"))?;
        Ok((cert, key))
    }

    fn issue(
        &self,
        what: &'static str,
        common_name: String,
        sans: Vec<rcgen::SanType>,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> Result<CertAndKey, TlsError> {
        let (ca, ca_key) = self.issuer()?;
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![usage];
        p.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().map_err(gen_err(what))?;
        let cert = p.signed_by(&key, &ca, &ca_key).map_err(gen_err(what))?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The serving certificate of `node`'s agent endpoint: for `<node>.agent.podd` and the
    /// node's registered address, usable only to serve (serverAuth), so no agent can present
    /// it as the API server's client certificate to another agent.
    pub fn issue_agent_cert(&self, node: &str, ip: Option<IpAddr>) -> Result<CertAndKey, TlsError> {
        let dns = agent_server_name(node);
        let dns_name = rcgen::Ia5String::try_from(dns.as_str())
            .map_err(|_| TlsError::BadNodeName(node.into()))?;
        let mut sans = vec![rcgen::SanType::DnsName(dns_name)];
        sans.extend(ip.map(rcgen::SanType::IpAddress));
        self.issue(
            "agent certificate",
            format!("podd agent {node}"),
            sans,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// The API server's client certificate towards the agents (clientAuth only).
    pub fn issue_server_client_cert(&self) -> Result<CertAndKey, TlsError> {
        self.issue(
            "API server client certificate",
            "podd API server".into(),
            Vec::new(),
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// The agent endpoint's TLS config: its own certificate, and a client certificate issued by
/// the cluster CA for client authentication required from every peer.
pub fn agent_server_config(
    agent: &CertAndKey,
    ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
            .build()
            .map_err(|e| rustls::Error::General(format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&agent.cert_pem, "agent certificate")?,
            private_key(&agent.key_pem, "agent key")?,
        )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The API server's TLS config towards the agents: trusts only the cluster CA and presents
/// `client` (from [`TlsMaterial::issue_server_client_cert`]).
pub fn agent_client_config(
    ca_pem: &str,
    client: &CertAndKey,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(
            certs(&client.cert_pem, "client certificate")?,
            private_key(&client.key_pem, "client key")?,
        )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The name the server checks in `node`'s agent certificate.
pub fn agent_tls_name(node: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(agent_server_name(node)).map_err(|_| TlsError::BadNodeName(node.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn pki_files_are_private_and_old_modes_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert!(m.ca_key_pem.is_some());
        let pki = dir.path().join("pki");
        assert_eq!(mode(&pki), 0o700);
        for f in ["ca.crt", "ca.key", "server.crt", "server.key"] {
            assert_eq!(mode(&pki.join(f)), 0o600, "{f}");
        }
        // An install made by an older podd: 0755 directory, 0644 certificates.
        std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(pki.join("ca.crt"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let again = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert_eq!(again.ca_cert_pem, m.ca_cert_pem);
        assert_eq!(mode(&pki), 0o700);
        assert_eq!(mode(&pki.join("ca.crt")), 0o600);
    }

    #[test]
    fn issued_certificates_chain_to_the_stored_ca() {
        let dir = tempfile::tempdir().unwrap();
        TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        // Loaded again: the issuer is rebuilt from ca.key.
        let m = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        let agent = m
            .issue_agent_cert("n1", Some("127.0.0.1".parse().unwrap()))
            .unwrap();
        assert!(agent_server_config(&agent, &m.ca_cert_pem).is_ok());
        let client = m.issue_server_client_cert().unwrap();
        assert!(agent_client_config(&m.ca_cert_pem, &client).is_ok());
        let no_key = TlsMaterial {
            ca_key_pem: None,
            ..m
        };
        assert!(matches!(
            no_key.issue_server_client_cert(),
            Err(TlsError::NoCaKey)
        ));
    }
}

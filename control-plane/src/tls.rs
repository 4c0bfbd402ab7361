//! TLS material: a cluster CA and a server certificate, generated once at init with rcgen and
//! kept under the data directory (`<data>/pki/`), and the rustls configs built from them.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
    #[error("rustls rejected the configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// PEM-encoded CA certificate, server certificate and server key.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub ca_cert_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

fn write_file(path: &Path, data: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |op, source| TlsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io("create", e))?;
    f.write_all(data.as_bytes()).map_err(|e| io("write", e))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

impl TlsMaterial {
    /// Generates a new CA and a server certificate for `sans` (IP addresses and DNS names).
    pub fn generate(sans: &[String]) -> Result<TlsMaterial, TlsError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let g = |what| move |source| TlsError::Generate { what, source };
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(g("CA parameters"))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "podd cluster CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(g("CA key"))?;
        let ca_cert = ca.self_signed(&ca_key).map_err(g("CA certificate"))?;
        let mut names: Vec<String> = sans.to_vec();
        for default in ["127.0.0.1", "localhost", "podd"] {
            if !names.iter().any(|n| n == default) {
                names.push(default.into());
            }
        }
        let mut server = CertificateParams::new(names).map_err(g("server parameters"))?;
        server
            .distinguished_name
            .push(DnType::CommonName, "podd API server");
        let key = KeyPair::generate().map_err(g("server key"))?;
        let cert = server
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(g("server certificate"))?;
        Ok(TlsMaterial {
            ca_cert_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads `<dir>/pki/{ca.crt,server.crt,server.key}`, generating them on first use.
    pub fn load_or_generate(dir: &Path, sans: &[String]) -> Result<TlsMaterial, TlsError> {
        let pki = dir.join("pki");
        let (ca, crt, key) = (
            pki.join("ca.crt"),
            pki.join("server.crt"),
            pki.join("server.key"),
        );
        if ca.exists() && crt.exists() && key.exists() {
            return Ok(TlsMaterial {
                ca_cert_pem: read(&ca)?,
                cert_pem: read(&crt)?,
                key_pem: read(&key)?,
            });
        }
        std::fs::create_dir_all(&pki).map_err(|source| TlsError::Io {
            op: "create",
            path: pki.clone(),
            source,
        })?;
        let m = TlsMaterial::generate(sans)?;
        write_file(&ca, &m.ca_cert_pem, 0o644)?;
        write_file(&crt, &m.cert_pem, 0o644)?;
        write_file(&key, &m.key_pem, 0o600)?;
        Ok(m)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .filter_map(Result::ok)
                .collect();
        if certs.is_empty() {
            return Err(TlsError::BadPem {
                path: "server.crt".into(),
                what: "certificate",
            });
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|_| {
            TlsError::BadPem {
                path: "server.key".into(),
                what: "private key",
            }
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

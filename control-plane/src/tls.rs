//! TLS material: a cluster CA and a server certificate, generated once at init with rcgen and
//! kept under the data directory (`<data>/pki/`, mode 0700, every file 0600), and the rustls
//! configs built from them.
//!
//! The CA also secures the agent endpoint (port 10250): at join the server issues each node a
//! serving certificate for `<node>.agent.podd` and the node's registered IP (extended key usage
//! serverAuth only), and to itself a client certificate (clientAuth only). The agent accepts
//! only clients with a CA-issued clientAuth certificate; the server accepts only an agent whose
//! certificate names the node it meant to reach.
//!
//! A second CA, the client CA (`pki/client-ca.crt`, as k3s' client-ca.crt), signs client
//! certificates for the API port (6443), which authenticate as Kubernetes' x509 authenticator
//! does: user = the subject's CN, groups = its O values. The TLS handshake asks for a
//! certificate but accepts any (it checks only that the client holds the key); the chain, the
//! clientAuth usage and the validity period are checked on each request against the client CA
//! ([`ClientCertAuth::verify`]), so an expired or foreign certificate is a 401 Status, not a
//! broken connection, as with kube-apiserver. A client CA apart from the cluster CA means that
//! rotating it (delete `pki/client-ca.*` and restart the server) revokes every client
//! certificate and nothing else: the cluster CA clients trust and the agent certificates stay.

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
    #[error(
        "this server keeps no client CA key (pki/client-ca.key), so it cannot issue client \
         certificates; remove pki/client-ca.crt and restart the server to generate a client CA"
    )]
    NoClientCaKey,
    #[error("a client certificate cannot carry {0}")]
    BadSubject(String),
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
    /// The CA that signs client certificates for the API port (`pki/client-ca.crt`).
    pub client_ca_cert_pem: String,
    /// Its key (`pki/client-ca.key`); None when only the certificate is kept (a client CA
    /// managed outside podd): this server then verifies client certificates but issues none.
    pub client_ca_key_pem: Option<String>,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The user of the admin client certificate (k3s' and kubeadm's admin user).
pub const ADMIN_USER: &str = "system:admin";
/// Kubernetes' superuser group: a client certificate with this O is the admin.
pub const MASTERS_GROUP: &str = "system:masters";
/// How long an issued admin client certificate is valid: one year, as k3s' and kubeadm's.
pub const CLIENT_CERT_VALIDITY: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 3600);

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

/// The client CA's parameters (fixed, as [`ca_params`], so an issuer rebuilt from the key
/// chains to the stored client-ca.crt).
fn client_ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut ca =
        CertificateParams::new(Vec::<String>::new()).map_err(gen_err("client CA parameters"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "podd client CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca)
}

/// A new client CA: (certificate PEM, key PEM).
fn generate_client_ca() -> Result<(String, String), TlsError> {
    let key = rcgen::KeyPair::generate().map_err(gen_err("client CA key"))?;
    let cert = client_ca_params()?
        .self_signed(&key)
        .map_err(gen_err("client CA certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Loads `<pki>/client-ca.{crt,key}`, generating them when the certificate is missing (new
/// installs, and installs made before client certificates).
fn load_or_generate_client_ca(pki: &Path) -> Result<(String, Option<String>), TlsError> {
    let (crt, key) = (pki.join("client-ca.crt"), pki.join("client-ca.key"));
    if crt.exists() {
        for f in [&crt, &key] {
            tighten_file(f).map_err(io_err("restrict", f))?;
        }
        let key_pem = if key.exists() {
            Some(read(&key)?)
        } else {
            None
        };
        return Ok((read(&crt)?, key_pem));
    }
    let (cert_pem, key_pem) = generate_client_ca()?;
    // The key first: a certificate on disk without its key would stay keyless.
    write_private_file(&key, key_pem.as_bytes()).map_err(io_err("write", &key))?;
    write_private_file(&crt, cert_pem.as_bytes()).map_err(io_err("write", &crt))?;
    tracing::info!(path = %crt.display(), "generated the client CA");
    Ok((cert_pem, Some(key_pem)))
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
        let (client_ca_cert_pem, client_ca_key_pem) = generate_client_ca()?;
        Ok(TlsMaterial {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem: Some(ca_key.serialize_pem()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            client_ca_cert_pem,
            client_ca_key_pem: Some(client_ca_key_pem),
        })
    }

    /// Loads `<dir>/pki/{ca.crt,ca.key,server.crt,server.key,client-ca.crt,client-ca.key}`,
    /// generating them on first use (the client CA also when only it is missing). The
    /// directory is kept 0700 and the files 0600, also for existing installs.
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
            let (client_ca_cert_pem, client_ca_key_pem) = load_or_generate_client_ca(&pki)?;
            return Ok(TlsMaterial {
                ca_cert_pem: read(&ca)?,
                ca_key_pem,
                cert_pem: read(&crt)?,
                key_pem: read(&key)?,
                client_ca_cert_pem,
                client_ca_key_pem,
            });
        }
        private_dir(&pki).map_err(io_err("create", &pki))?;
        let mut m = TlsMaterial::generate(sans)?;
        // A client CA kept from an earlier install (or placed by the admin) stays.
        (m.client_ca_cert_pem, m.client_ca_key_pem) = load_or_generate_client_ca(&pki)?;
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

    /// Replaces the client CA under `<dir>/pki` with a new one: every client certificate
    /// issued so far stops working once the server loads it (at its next start).
    pub fn rotate_client_ca(dir: &Path) -> Result<(), TlsError> {
        let pki = dir.join("pki");
        private_dir(&pki).map_err(io_err("create", &pki))?;
        for f in ["client-ca.crt", "client-ca.key"] {
            let path = pki.join(f);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
        }
        load_or_generate_client_ca(&pki).map(|_| ())
    }

    /// The API port's TLS config: the server certificate, and a request for a client
    /// certificate that any client may leave out (token clients) and that is checked per
    /// request ([`ClientCertAuth`]).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = certs(&self.cert_pem, "server.crt")?;
        let key = private_key(&self.key_pem, "server.key")?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(self.client_cert_auth()?))
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The verifier of client certificates against the client CA.
    pub fn client_cert_auth(&self) -> Result<ClientCertAuth, TlsError> {
        ClientCertAuth::new(&self.client_ca_cert_pem)
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

    /// A client certificate for the API port, signed by the client CA: subject CN `user`,
    /// O `group` (if any), ECDSA P-256, clientAuth only, valid from `not_before` to
    /// `not_after`. At most one group: rcgen 0.13 keeps one value per attribute type in a
    /// name (the verifier reads any number of O values, from certificates made elsewhere).
    pub fn issue_client_cert(
        &self,
        user: &str,
        groups: &[&str],
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Result<CertAndKey, TlsError> {
        use rcgen::{DnType, DnValue};
        if user.is_empty() {
            return Err(TlsError::BadSubject("an empty user name".into()));
        }
        if groups.len() > 1 {
            return Err(TlsError::BadSubject(format!(
                "more than one group ({groups:?}): podd issues certificates with one O"
            )));
        }
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(DnType::CommonName, DnValue::Utf8String(user.into()));
        for g in groups {
            dn.push(DnType::OrganizationName, DnValue::Utf8String((*g).into()));
        }
        self.issue_client_cert_named(dn, not_before, not_after)
    }

    /// [`TlsMaterial::issue_client_cert`] for the subject `dn`.
    fn issue_client_cert_named(
        &self,
        dn: rcgen::DistinguishedName,
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Result<CertAndKey, TlsError> {
        use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
        let pem = self
            .client_ca_key_pem
            .as_deref()
            .ok_or(TlsError::NoClientCaKey)?;
        let ca_key = rcgen::KeyPair::from_pem(pem).map_err(|_| TlsError::BadPem {
            path: "client-ca.key".into(),
            what: "private key",
        })?;
        let ca = client_ca_params()?
            .self_signed(&ca_key)
            .map_err(gen_err("client CA issuer"))?;
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.not_before = not_before.into();
        p.not_after = not_after.into();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(gen_err("client key"))?;
        let cert = p
            .signed_by(&key, &ca, &ca_key)
            .map_err(gen_err("client certificate"))?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The admin's client certificate: CN `system:admin`, O `system:masters` (Kubernetes'
    /// superuser group), valid for one year from now.
    pub fn issue_admin_client_cert(&self) -> Result<CertAndKey, TlsError> {
        let now = std::time::SystemTime::now();
        self.issue_client_cert(
            ADMIN_USER,
            &[MASTERS_GROUP],
            now,
            now + CLIENT_CERT_VALIDITY,
        )
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

/// The certificate chain a TLS client presented (end entity first), kept with the connection
/// so each request on it is authenticated by [`ClientCertAuth::verify`].
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Vec<CertificateDer<'static>>);

/// The subject of a verified client certificate, as Kubernetes reads it: the user is the
/// common name, the groups are the organization values in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSubject {
    pub common_name: String,
    pub organizations: Vec<String>,
}

/// Verifies client certificates against the client CA.
///
/// As a rustls [`ClientCertVerifier`](rustls::server::danger::ClientCertVerifier) it asks
/// every client for a certificate (naming the client CA), lets clients send none, and accepts
/// any chain at the handshake once the client proves it holds the key: the chain itself is
/// checked on every request by [`ClientCertAuth::verify`] (WebPKI, clientAuth usage, at the
/// request's time), so a refused certificate is a 401 the client can read, and a certificate
/// that expires while its connection is open stops working then.
#[derive(Debug)]
pub struct ClientCertAuth {
    webpki: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl ClientCertAuth {
    /// A verifier for certificates issued by the CA(s) in `client_ca_pem`.
    pub fn new(client_ca_pem: &str) -> Result<ClientCertAuth, TlsError> {
        let webpki = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(client_ca_pem)?,
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(format!("client certificate verifier: {e}")))?;
        Ok(ClientCertAuth { webpki })
    }

    /// Checks `chain` (end entity first) against the client CA now: signature chain,
    /// validity period and the clientAuth usage; then reads the subject. The error says why
    /// the certificate is refused.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> Result<ClientSubject, String> {
        self.verify_at(chain, rustls::pki_types::UnixTime::now())
    }

    /// [`ClientCertAuth::verify`] at time `now`.
    pub fn verify_at(
        &self,
        chain: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ClientSubject, String> {
        let (end, intermediates) = chain
            .split_first()
            .ok_or_else(|| "the client sent an empty certificate chain".to_string())?;
        self.webpki
            .verify_client_cert(end, intermediates, now)
            .map_err(|e| format!("the client certificate is not valid: {e}"))?;
        client_subject(end).ok_or_else(|| {
            "the client certificate's subject could not be read (CN and O must be UTF-8, \
             printable or IA5 strings)"
                .to_string()
        })
    }
}

impl rustls::server::danger::ClientCertVerifier for ClientCertAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // Deferred to each request (ClientCertAuth::verify), so that a refused certificate
        // is a 401 Status as kube-apiserver answers, and a bearer token on the same
        // connection can still authenticate. The handshake signature below still proves the
        // client holds the certificate's key.
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// One DER element of `input`: (tag, contents, what follows). Single-byte tags and definite
/// lengths only, which is all a certificate's TBS and names use.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

const DER_SEQUENCE: u8 = 0x30;
const DER_SET: u8 = 0x31;
const DER_OID: u8 = 0x06;
/// id-at-commonName (2.5.4.3) and id-at-organizationName (2.5.4.10), DER-encoded.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// The subject CN and O values of a certificate (DER). As Go's crypto/x509 (which
/// kube-apiserver uses), the last CN is the common name and every O is a group. None when the
/// certificate or a CN/O value cannot be read.
pub fn client_subject(cert: &CertificateDer<'_>) -> Option<ClientSubject> {
    let (tag, cert, _) = der_next(cert.as_ref())?;
    (tag == DER_SEQUENCE).then_some(())?;
    let (tag, tbs, _) = der_next(cert)?;
    (tag == DER_SEQUENCE).then_some(())?;
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, validity, subject.
    let (tag, _, after) = der_next(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = der_next(rest)?.2;
    }
    let (tag, mut rdns, _) = der_next(rest)?;
    (tag == DER_SEQUENCE).then_some(())?;
    let mut subject = ClientSubject {
        common_name: String::new(),
        organizations: Vec::new(),
    };
    while !rdns.is_empty() {
        let (tag, mut set, next) = der_next(rdns)?;
        (tag == DER_SET).then_some(())?;
        rdns = next;
        while !set.is_empty() {
            let (tag, atv, next) = der_next(set)?;
            (tag == DER_SEQUENCE).then_some(())?;
            set = next;
            let (tag, oid, value) = der_next(atv)?;
            (tag == DER_OID).then_some(())?;
            if oid != OID_CN && oid != OID_O {
                continue;
            }
            let (tag, text, _) = der_next(value)?;
            // UTF8String, PrintableString, IA5String.
            if !matches!(tag, 0x0c | 0x13 | 0x16) {
                return None;
            }
            let text = std::str::from_utf8(text).ok()?.to_string();
            if oid == OID_CN {
                subject.common_name = text;
            } else {
                subject.organizations.push(text);
            }
        }
    }
    Some(subject)
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

    fn chain(c: &CertAndKey) -> Vec<CertificateDer<'static>> {
        certs(&c.cert_pem, "test certificate").unwrap()
    }

    fn at(t: std::time::SystemTime) -> rustls::pki_types::UnixTime {
        rustls::pki_types::UnixTime::since_unix_epoch(
            t.duration_since(std::time::UNIX_EPOCH).unwrap(),
        )
    }

    #[test]
    fn the_admin_client_certificate_is_system_admin_in_system_masters_for_a_year() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        let pki = dir.path().join("pki");
        for f in ["client-ca.crt", "client-ca.key"] {
            assert_eq!(mode(&pki.join(f)), 0o600, "{f}");
        }
        assert_ne!(m.client_ca_cert_pem, m.ca_cert_pem, "a CA of its own");
        let admin = m.issue_admin_client_cert().unwrap();
        let key = rcgen::KeyPair::from_pem(&admin.key_pem).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        // Loaded again (as `podd kubeconfig` and the server each do): the same client CA,
        // and the certificate verifies against it.
        let again = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert_eq!(again.client_ca_cert_pem, m.client_ca_cert_pem);
        let v = again.client_cert_auth().unwrap();
        let subject = v.verify(&chain(&admin)).unwrap();
        assert_eq!(
            subject,
            ClientSubject {
                common_name: "system:admin".into(),
                organizations: vec!["system:masters".into()],
            }
        );
        // Valid for a year from now, not longer.
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(24 * 3600);
        assert!(v.verify_at(&chain(&admin), at(now + 364 * day)).is_ok());
        let e = v
            .verify_at(&chain(&admin), at(now + 366 * day))
            .unwrap_err();
        assert!(e.contains("xpired"), "{e}");
    }

    #[test]
    fn client_certificates_from_elsewhere_expired_or_of_a_rotated_ca_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        let v = m.client_cert_auth().unwrap();
        let now = std::time::SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        let node = m
            .issue_client_cert("system:node:n1", &["system:nodes"], now, now + hour)
            .unwrap();
        let s = v.verify(&chain(&node)).unwrap();
        assert_eq!(s.common_name, "system:node:n1");
        assert_eq!(s.organizations, ["system:nodes"]);
        // Several O values (made elsewhere; rcgen takes a second one as a custom type with
        // the same OID): every one is a group, in order.
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "alice");
        dn.push(rcgen::DnType::OrganizationName, "dev");
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]), "ops");
        let alice = m.issue_client_cert_named(dn, now, now + hour).unwrap();
        let s = v.verify(&chain(&alice)).unwrap();
        assert_eq!(s.common_name, "alice");
        assert_eq!(s.organizations, ["dev", "ops"]);
        assert!(matches!(
            m.issue_client_cert("alice", &["dev", "ops"], now, now + hour),
            Err(TlsError::BadSubject(_))
        ));
        // Expired.
        let old = m
            .issue_client_cert(
                "system:admin",
                &["system:masters"],
                now - 2 * hour,
                now - hour,
            )
            .unwrap();
        let e = v.verify(&chain(&old)).unwrap_err();
        assert!(e.contains("xpired"), "{e}");
        // Another server's client CA.
        let other = TlsMaterial::generate(&[]).unwrap();
        let foreign = other.issue_admin_client_cert().unwrap();
        assert!(v.verify(&chain(&foreign)).is_err());
        // The cluster CA's certificates (agents' serving ones, the server's client one) are
        // not client certificates of the API port.
        let server_client = m.issue_server_client_cert().unwrap();
        assert!(v.verify(&chain(&server_client)).is_err());
        let agent = m.issue_agent_cert("n1", None).unwrap();
        assert!(v.verify(&chain(&agent)).is_err());
        // Rotating the client CA revokes everything it issued.
        let admin = m.issue_admin_client_cert().unwrap();
        TlsMaterial::rotate_client_ca(dir.path()).unwrap();
        let rotated = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert_ne!(rotated.client_ca_cert_pem, m.client_ca_cert_pem);
        assert_eq!(rotated.ca_cert_pem, m.ca_cert_pem, "the cluster CA stays");
        let v2 = rotated.client_cert_auth().unwrap();
        assert!(v2.verify(&chain(&admin)).is_err());
        assert!(
            v2.verify(&chain(&rotated.issue_admin_client_cert().unwrap()))
                .is_ok()
        );
        // An empty user name is not issued; a keyless client CA issues nothing.
        assert!(m.issue_client_cert("", &[], now, now + hour).is_err());
        let keyless = TlsMaterial {
            client_ca_key_pem: None,
            ..m
        };
        assert!(matches!(
            keyless.issue_admin_client_cert(),
            Err(TlsError::NoClientCaKey)
        ));
    }

    #[test]
    fn an_install_without_a_client_ca_gets_one_and_keeps_its_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        let pki = dir.path().join("pki");
        std::fs::remove_file(pki.join("client-ca.crt")).unwrap();
        std::fs::remove_file(pki.join("client-ca.key")).unwrap();
        let again = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert_eq!(again.ca_cert_pem, m.ca_cert_pem);
        assert!(again.client_ca_key_pem.is_some());
        assert!(pki.join("client-ca.key").exists());
        assert!(again.server_config().is_ok());
    }

    #[test]
    fn the_subject_reader_refuses_what_it_cannot_read() {
        assert_eq!(client_subject(&CertificateDer::from(vec![])), None);
        assert_eq!(
            client_subject(&CertificateDer::from(vec![0x30, 0x05, 0x30])),
            None
        );
        assert_eq!(
            client_subject(&CertificateDer::from(vec![
                0x30, 0x84, 0xff, 0xff, 0xff, 0xff
            ])),
            None
        );
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

//! Connections: Unix socket or TLS, HTTP/1.1 with keep-alive, pooled.

use crate::Error;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per client.
const MAX_IDLE: usize = 64;

enum Target {
    Unix(PathBuf),
    Tls {
        addr: String,
        name: ServerName<'static>,
        connector: tokio_rustls::TlsConnector,
    },
}

pub(crate) struct Connector {
    target: Target,
    token: Option<String>,
    endpoint: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Connector {
    pub(crate) fn unix(path: PathBuf) -> Connector {
        Connector {
            endpoint: format!("unix://{}", path.display()),
            target: Target::Unix(path),
            token: None,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn tls(addr: &str, ca_pem: &str, token: Option<String>) -> Result<Connector, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| Error::Tls(format!("bad CA PEM: {e:?}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("bad CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Tls("the CA file holds no certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(addr)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = ServerName::try_from(host.clone())
            .map_err(|e| Error::Tls(format!("bad server name {host:?}: {e}")))?;
        Ok(Connector {
            endpoint: format!("https://{addr}"),
            target: Target::Tls {
                addr: addr.to_string(),
                name,
                connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            },
            token,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn http_err(&self, e: impl std::fmt::Display) -> Error {
        Error::Http {
            endpoint: self.endpoint.clone(),
            message: e.to_string(),
        }
    }

    fn connect_err(&self, source: std::io::Error) -> Error {
        Error::Connect {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let fut = async {
            match &self.target {
                Target::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p)
                        .await
                        .map_err(|e| self.connect_err(e))?;
                    self.handshake(s).await
                }
                Target::Tls {
                    addr,
                    name,
                    connector,
                } => {
                    let tcp = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| self.connect_err(e))?;
                    let _ = tcp.set_nodelay(true);
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| Error::Tls(format!("handshake with {addr}: {e}")))?;
                    self.handshake(tls).await
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| {
                self.connect_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no connection within 5 s",
                ))
            })?
    }

    async fn handshake<S>(&self, io: S) -> Result<SendRequest<Full<Bytes>>, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.http_err(e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "API connection closed with an error");
            }
        });
        Ok(sender)
    }

    async fn checkout(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        loop {
            let cand = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match cand {
                Some(mut s) => {
                    if s.is_closed() {
                        continue;
                    }
                    if s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                None => return self.connect().await,
            }
        }
    }

    fn checkin(&self, s: SendRequest<Full<Bytes>>) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "podd")
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            b = b.header(hyper::header::CONTENT_TYPE, content_type);
        }
        if let Some(t) = &self.token {
            b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.http_err(e))
    }

    /// Sends a request. A `dedicated` connection (for watches) is not returned to the pool;
    /// otherwise the connection goes back once the caller has read the body.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
        dedicated: bool,
    ) -> Result<Response<Incoming>, Error> {
        // A pooled connection may have been closed by the server just now; retry once on a
        // fresh one for requests that are safe to resend.
        let idempotent = method == Method::GET;
        for attempt in 0..2 {
            let mut s = if dedicated || attempt > 0 {
                self.connect().await?
            } else {
                self.checkout().await?
            };
            let req = self.build(method.clone(), path, body.clone(), content_type)?;
            let fut = s.send_request(req);
            let res = if dedicated {
                fut.await
            } else {
                match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                    Ok(r) => r,
                    Err(_) => return Err(self.http_err(format!("no answer to {path} within 60 s"))),
                }
            };
            match res {
                Ok(resp) => {
                    if !dedicated {
                        self.checkin(s);
                    }
                    return Ok(resp);
                }
                Err(e) if attempt == 0 && (idempotent || e.is_canceled() || e.is_closed()) => {
                    tracing::debug!(error = %e, "retrying on a fresh connection");
                    continue;
                }
                Err(e) => return Err(self.http_err(e)),
            }
        }
        Err(self.http_err("unreachable: retries exhausted"))
    }
}

/// Splits a streamed body into newline-terminated lines.
pub(crate) fn lines<S, E>(
    body: S,
    endpoint: String,
) -> impl Stream<Item = Result<Bytes, Error>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
{
    futures::stream::unfold(
        (body, bytes::BytesMut::new(), false),
        move |(mut body, mut buf, done)| {
            let endpoint = endpoint.clone();
            async move {
                loop {
                    if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line = buf.split_to(pos + 1).freeze().slice(..pos);
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        return Some((Ok(line), (body, buf, done)));
                    }
                    if done {
                        return None;
                    }
                    match body.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            let err = Error::Http {
                                endpoint,
                                message: format!("watch stream broke: {e}"),
                            };
                            return Some((Err(err), (body, buf, true)));
                        }
                        None => return None,
                    }
                }
            }
        },
    )
}

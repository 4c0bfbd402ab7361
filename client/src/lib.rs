//! A typed async client for the podd API (Kubernetes' API), over the node's Unix socket or
//! over TLS with a bearer token. Objects are k8s-openapi's types, as `podd_api` re-exports
//! them; every kind in [`podd_api::Kind`] is reachable through [`Client::api`].
//!
//! ```no_run
//! # async fn f() -> Result<(), podd_client::Error> {
//! use podd_api::Pod;
//! let client = podd_client::Client::unix("/run/podd/podd.sock");
//! let pods = client.api::<Pod>(Some("default")).list(&Default::default()).await?;
//! # Ok(()) }
//! ```
//!
//! Connections are HTTP/1.1 with keep-alive, pooled and shared by every clone of a `Client`;
//! each watch takes a connection of its own. `watcher` lists, then watches from the list's
//! resourceVersion, and relists by itself when the server answers 410 Expired.

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod api;
mod config;
mod conn;
mod params;
mod watcher;

pub use api::{Api, Deleted, EventStream, WatchEvent};
pub use config::{ClientConfig, ConfigError};
pub use params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, Propagation, content_type,
};
pub use podd_api::patch::PatchType;
pub use watcher::{WatcherEvent, watcher};

use bytes::Bytes;
use conn::Connector;
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use podd_api::{Kind, Object, Status};
use std::pin::Pin;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a Kubernetes Status (404, 409, 410, 422, ...).
    #[error("{}", status_text(.0))]
    Api(Box<Status>),
    #[error("could not connect to the podd API at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("HTTP error talking to {endpoint}: {message}")]
    Http { endpoint: String, message: String },
    #[error("could not decode the server's answer: {0}")]
    Decode(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// `Deployment.apps "web" is invalid: spec.replicas: ... (422 Invalid)`, with every cause that
/// the message does not already name.
fn status_text(s: &Status) -> String {
    let message = s.message.as_deref().unwrap_or("");
    let mut out = match (s.code, s.reason.as_deref()) {
        (Some(c), Some(r)) => format!("{message} ({c} {r})"),
        (Some(c), None) => format!("{message} ({c})"),
        (None, Some(r)) => format!("{message} ({r})"),
        (None, None) => message.to_string(),
    };
    let causes = s.details.as_ref().and_then(|d| d.causes.as_ref());
    for c in causes.into_iter().flatten() {
        let field = c.field.as_deref().unwrap_or("");
        let msg = c.message.as_deref().unwrap_or("");
        if !message.contains(msg) {
            out.push_str(&format!("\n  {field}: {msg}"));
        }
    }
    out
}

impl Error {
    /// The Status of an API error.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Api(s) => Some(s),
            _ => None,
        }
    }

    /// The HTTP status code, for API errors.
    pub fn code(&self) -> Option<u16> {
        self.status()
            .and_then(|s| s.code)
            .and_then(|c| u16::try_from(c).ok())
    }

    /// The Status reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`, ...).
    pub fn reason(&self) -> Option<&str> {
        self.status().and_then(|s| s.reason.as_deref())
    }

    /// The Status message.
    pub fn message(&self) -> Option<&str> {
        self.status().and_then(|s| s.message.as_deref())
    }

    /// The Status's `details.causes`: `(field, reason, message)` of each problem.
    pub fn causes(&self) -> Vec<(&str, &str, &str)> {
        self.status()
            .and_then(|s| s.details.as_ref())
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c.field.as_deref().unwrap_or(""),
                    c.reason.as_deref().unwrap_or(""),
                    c.message.as_deref().unwrap_or(""),
                )
            })
            .collect()
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
    pub fn is_expired(&self) -> bool {
        self.code() == Some(410)
    }
}

pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn with_query(path: String, q: &[(&str, String)]) -> String {
    if q.is_empty() {
        return path;
    }
    let qs: Vec<String> = q
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_component(v)))
        .collect();
    format!("{path}?{}", qs.join("&"))
}

/// The API path of a kind, a namespace (None: all namespaces / cluster-scoped) and a name.
pub fn resource_path(kind: Kind, ns: Option<&str>, name: Option<&str>) -> String {
    let mut p = kind.group_prefix();
    if kind.namespaced()
        && let Some(ns) = ns
    {
        p.push_str("/namespaces/");
        p.push_str(ns);
    }
    p.push('/');
    p.push_str(kind.plural());
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

/// A handle on the API server; cheap to clone (clones share the connection pool).
#[derive(Clone)]
pub struct Client {
    conn: Arc<Connector>,
}

/// A response whose body has been read.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

/// The Status of a non-2xx answer (or one made from the HTTP status when the body is not a
/// Status).
pub(crate) fn decode_error(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) if s.code.is_some_and(|c| c != 0) => Error::Api(Box::new(s)),
        _ => Error::Api(Box::new(podd_api::status_failure(
            status.as_u16(),
            status.canonical_reason().unwrap_or("Unknown"),
            String::from_utf8_lossy(body).into_owned(),
        ))),
    }
}

impl Client {
    /// A client of the local server's Unix socket (no token needed; root only).
    pub fn unix(path: impl Into<std::path::PathBuf>) -> Client {
        Client {
            conn: Arc::new(Connector::unix(path.into())),
        }
    }

    /// A client of `addr` (`host:port`) over TLS, trusting `ca_pem`, sending `token`.
    pub fn tls(addr: &str, ca_pem: &str, token: &str) -> Result<Client, Error> {
        Ok(Client {
            conn: Arc::new(Connector::tls(addr, ca_pem, Some(token.to_string()))?),
        })
    }

    /// Like `tls`, but without a token (for checking that the server refuses it).
    pub fn tls_anonymous(addr: &str, ca_pem: &str) -> Result<Client, Error> {
        Ok(Client {
            conn: Arc::new(Connector::tls(addr, ca_pem, None)?),
        })
    }

    pub fn from_config(cfg: &ClientConfig) -> Result<Client, Error> {
        cfg.client()
    }

    /// Where this client connects, for messages.
    pub fn endpoint(&self) -> &str {
        self.conn.endpoint()
    }

    /// Sends one request and reads the whole answer; non-2xx answers are not errors here.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<RawResponse, Error> {
        let resp = self
            .conn
            .send(method, path, body, content_type, false)
            .await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.conn.http_err(e))?
            .to_bytes();
        Ok(RawResponse { status, body })
    }

    /// Sends a request and decodes a 2xx JSON answer into `R`, or the Status into an Error.
    pub async fn request<R: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<R, Error> {
        let r = self.raw(method, path, body, content_type).await?;
        if !r.status.is_success() {
            return Err(decode_error(r.status, &r.body));
        }
        serde_json::from_slice(&r.body).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }

    /// A typed handle on one kind in one namespace (None: all namespaces, or cluster-scoped).
    pub fn api<T: Object>(&self, ns: Option<&str>) -> Api<T> {
        Api::new(self.clone(), ns)
    }

    /// Sends a GET-like request and streams a 2xx body as it arrives; other answers are
    /// decoded into an Error.
    pub async fn stream(&self, method: Method, path: &str) -> Result<ByteStream, Error> {
        let resp = self.conn.send(method, path, None, JSON, true).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.conn.http_err(e))?
                .to_bytes();
            return Err(decode_error(status, &body));
        }
        let conn = self.conn.clone();
        Ok(resp
            .into_body()
            .into_data_stream()
            .map(move |r| r.map_err(|e| conn.http_err(e)))
            .boxed())
    }

    /// Streams the newline-separated lines of a 2xx body (watch streams).
    pub(crate) async fn stream_lines(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, Error>> + Send + use<>, Error> {
        let resp = self.conn.send(Method::GET, path, None, JSON, true).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.conn.http_err(e))?
                .to_bytes();
            return Err(decode_error(status, &body));
        }
        let endpoint = self.endpoint().to_string();
        Ok(conn::lines(resp.into_body().into_data_stream(), endpoint))
    }
}

pub(crate) const JSON: &str = "application/json";

/// A response body read chunk by chunk as it arrives (`podctl logs -f`).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        assert_eq!(
            resource_path(Kind::Deployment, Some("default"), Some("web")),
            "/apis/apps/v1/namespaces/default/deployments/web"
        );
        assert_eq!(
            resource_path(Kind::Node, Some("x"), Some("n1")),
            "/api/v1/nodes/n1"
        );
        assert_eq!(resource_path(Kind::Pod, None, None), "/api/v1/pods");
        assert_eq!(
            resource_path(Kind::Lease, Some("kube-node-lease"), Some("n1")),
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        );
        assert_eq!(
            with_query("/p".into(), &ListParams::labels("app in (web)").query()),
            "/p?labelSelector=app%20in%20%28web%29"
        );
    }

    #[test]
    fn errors_carry_the_status() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure",
            "message":"Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "reason":"Invalid","code":422,
            "details":{"name":"web","kind":"Deployment","causes":[{"reason":"FieldValueInvalid",
            "message":"Invalid value: -1: must be greater than or equal to 0","field":"spec.replicas"}]}}"#;
        let e = decode_error(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(e.code(), Some(422));
        assert_eq!(e.reason(), Some("Invalid"));
        assert_eq!(e.causes()[0].0, "spec.replicas");
        assert!(e.to_string().contains("422 Invalid"), "{e}");

        let e = decode_error(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(e.code(), Some(502));
        assert!(e.to_string().contains("upstream down"));
    }
}

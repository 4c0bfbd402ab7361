//! A typed async client for the podd API, over the node's Unix socket or over TLS with a bearer
//! token.
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
//! each watch takes a connection of its own. `Api::watcher` lists, then watches from the
//! list's resourceVersion, and relists by itself when the server answers 410 Expired.

mod config;
mod conn;
mod watcher;

pub use config::{ClientConfig, ConfigError};
pub use watcher::{WatcherEvent, watcher};

use bytes::Bytes;
use conn::Connector;
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use podd_api::{Kind, List, Object, Status, WatchEvent};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a Kubernetes Status (404, 409, 410, 422, ...).
    #[error("{} ({})", .0.message, .0.code)]
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

impl Error {
    /// The HTTP status code, for API errors.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Api(s) => Some(s.code),
            _ => None,
        }
    }
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Api(s) => Some(&s.reason),
            _ => None,
        }
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

/// What a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// `app=web,tier!=db`.
    pub label_selector: Option<String>,
    /// `spec.nodeName=node-1`.
    pub field_selector: Option<String>,
    /// Ends a watch after this many seconds.
    pub timeout_seconds: Option<u64>,
}

impl ListParams {
    pub fn labels(s: &str) -> ListParams {
        ListParams {
            label_selector: Some(s.to_string()),
            ..ListParams::default()
        }
    }
    pub fn fields(s: &str) -> ListParams {
        ListParams {
            field_selector: Some(s.to_string()),
            ..ListParams::default()
        }
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(l) = &self.label_selector {
            q.push(("labelSelector", l.clone()));
        }
        if let Some(f) = &self.field_selector {
            q.push(("fieldSelector", f.clone()));
        }
        if let Some(t) = self.timeout_seconds {
            q.push(("timeoutSeconds", t.to_string()));
        }
        q
    }
}

fn encode_component(s: &str) -> String {
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

fn with_query(path: String, q: &[(&str, String)]) -> String {
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
    let mut p = kind.group_prefix().to_string();
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

fn decode_error(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) if s.code != 0 => Error::Api(Box::new(s)),
        _ => Error::Api(Box::new(Status::failure(
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
        Api {
            client: self.clone(),
            ns: ns.map(String::from),
            _t: PhantomData,
        }
    }
}

/// Typed operations on one kind.
pub struct Api<T> {
    client: Client,
    ns: Option<String>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Api<T> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            ns: self.ns.clone(),
            _t: PhantomData,
        }
    }
}

pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<WatchEvent<T>, Error>> + Send>>;

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Decode(e.to_string()))
}

const JSON: &str = "application/json";
const MERGE_PATCH: &str = "application/merge-patch+json";

impl<T: Object> Api<T> {
    fn ns_for_write(&self, obj: Option<&T>) -> Option<String> {
        if !T::KIND.namespaced() {
            return None;
        }
        self.ns
            .clone()
            .or_else(|| {
                obj.map(|o| o.metadata().namespace.clone())
                    .filter(|n| !n.is_empty())
            })
            .or_else(|| Some("default".into()))
    }

    fn path(&self, ns: Option<&str>, name: Option<&str>) -> String {
        resource_path(T::KIND, ns, name)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn get(&self, name: &str) -> Result<T, Error> {
        let ns = self.ns_for_write(None);
        self.client
            .request(
                Method::GET,
                &self.path(ns.as_deref(), Some(name)),
                None,
                JSON,
            )
            .await
    }

    /// Like `get`, but None when the object does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<T>, Error> {
        match self.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self, lp: &ListParams) -> Result<List<T>, Error> {
        let path = with_query(self.path(self.ns.as_deref(), None), &lp.query());
        self.client.request(Method::GET, &path, None, JSON).await
    }

    pub async fn create(&self, obj: &T) -> Result<T, Error> {
        let ns = self.ns_for_write(Some(obj));
        self.client
            .request(
                Method::POST,
                &self.path(ns.as_deref(), None),
                Some(to_json(obj)?),
                JSON,
            )
            .await
    }

    /// Replaces the object; fails with 409 if its resourceVersion is not the stored one.
    pub async fn update(&self, obj: &T) -> Result<T, Error> {
        let ns = self.ns_for_write(Some(obj));
        let p = self.path(ns.as_deref(), Some(&obj.metadata().name));
        self.client
            .request(Method::PUT, &p, Some(to_json(obj)?), JSON)
            .await
    }

    /// Replaces the object's status.
    pub async fn update_status(&self, obj: &T) -> Result<T, Error> {
        let ns = self.ns_for_write(Some(obj));
        let p = format!(
            "{}/status",
            self.path(ns.as_deref(), Some(&obj.metadata().name))
        );
        self.client
            .request(Method::PUT, &p, Some(to_json(obj)?), JSON)
            .await
    }

    /// Applies a JSON merge patch.
    pub async fn patch(&self, name: &str, patch: &serde_json::Value) -> Result<T, Error> {
        let ns = self.ns_for_write(None);
        let p = self.path(ns.as_deref(), Some(name));
        self.client
            .request(Method::PATCH, &p, Some(to_json(patch)?), MERGE_PATCH)
            .await
    }

    /// Applies a JSON merge patch to the status.
    pub async fn patch_status(&self, name: &str, patch: &serde_json::Value) -> Result<T, Error> {
        let ns = self.ns_for_write(None);
        let p = format!("{}/status", self.path(ns.as_deref(), Some(name)));
        self.client
            .request(Method::PATCH, &p, Some(to_json(patch)?), MERGE_PATCH)
            .await
    }

    /// Deletes the object (and, on the server, what it owns); returns it as it was.
    pub async fn delete(&self, name: &str) -> Result<T, Error> {
        let ns = self.ns_for_write(None);
        self.client
            .request(
                Method::DELETE,
                &self.path(ns.as_deref(), Some(name)),
                None,
                JSON,
            )
            .await
    }

    /// Sets a Deployment's replicas through the scale subresource.
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<serde_json::Value, Error> {
        let ns = self.ns_for_write(None);
        let p = format!("{}/scale", self.path(ns.as_deref(), Some(name)));
        let body = serde_json::json!({"spec": {"replicas": replicas}});
        self.client
            .request(Method::PUT, &p, Some(to_json(&body)?), JSON)
            .await
    }

    /// Events after `resource_version` ("0" or "": the current objects as ADDED first). A
    /// compacted version fails with a 410 error; so does an ERROR event in the stream.
    pub async fn watch(
        &self,
        lp: &ListParams,
        resource_version: &str,
    ) -> Result<EventStream<T>, Error> {
        let mut q = lp.query();
        q.push(("watch", "true".into()));
        q.push(("resourceVersion", resource_version.to_string()));
        let path = with_query(self.path(self.ns.as_deref(), None), &q);
        let resp = self
            .client
            .conn
            .send(Method::GET, &path, None, JSON, true)
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.client.conn.http_err(e))?
                .to_bytes();
            return Err(decode_error(status, &body));
        }
        let endpoint = self.client.endpoint().to_string();
        let body = resp.into_body().into_data_stream();
        let lines = conn::lines(body, endpoint);
        Ok(lines
            .map(|line| {
                let line = line?;
                let raw: WatchEvent<serde_json::Value> = serde_json::from_slice(&line)
                    .map_err(|e| Error::Decode(format!("watch event: {e}")))?;
                if raw.kind == podd_api::EventType::Error {
                    let st: Status = serde_json::from_value(raw.object)
                        .map_err(|e| Error::Decode(e.to_string()))?;
                    return Err(Error::Api(Box::new(st)));
                }
                let object: T = serde_json::from_value(raw.object)
                    .map_err(|e| Error::Decode(format!("watch event object: {e}")))?;
                Ok(WatchEvent {
                    kind: raw.kind,
                    object,
                })
            })
            .boxed())
    }
}

/// A response body read chunk by chunk as it arrives (`podctl logs -f`).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

impl Client {
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
}

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
            with_query("/p".into(), &ListParams::labels("app=web").query()),
            "/p?labelSelector=app%3Dweb"
        );
    }
}

//! The HTTP/JSON API: Kubernetes' paths and shapes over hyper, on a root-only Unix socket and on
//! TCP with TLS and bearer tokens.

use crate::auth::{Action, Authenticator, Identity, Verb, authorize};
use crate::cache::{CacheEvent, CachedObject};
use crate::conn_limits::{ConnGate, ConnLimits, Gate, Permit, serve_http1};
use crate::error::ApiError;
use crate::registry::{
    DeleteOptions, FieldSelector, Filter, ListOptions, Propagation, Registry, Subresource,
    WriteOptions, Written,
};
use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use podd_api::patch::PatchType;
use podd_api::schema::FieldValidation;
use podd_api::selector::Selector;
use podd_api::{Kind, WatchEventType as EventType};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted: 3 MiB, as kube-apiserver (`MaxRequestBodyBytes`). Stored
/// objects are further limited to 1.5 MiB ([`crate::registry::MAX_OBJECT_BYTES`]).
pub const MAX_BODY: usize = 3 << 20;

/// How a connection came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tls,
}

pub struct ApiServer {
    pub registry: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    /// How to reach and trust the node agents (pods/log, pods/exec, agent certificates).
    pub agents: Arc<crate::agent_proxy::AgentLink>,
    /// Connection and watch limits ([`crate::conn_limits`]).
    pub limits: ConnLimits,
    /// Open watches, per identity and in total (see [`watch_gate`]).
    pub watches: Arc<Gate<String>>,
}

/// The watch gate for `limits`.
pub fn watch_gate(limits: &ConnLimits) -> Arc<Gate<String>> {
    Gate::new(
        "watches",
        limits.max_watches,
        limits.max_watches_per_identity,
    )
}

impl ApiServer {
    /// `kubectl exec|attach|port-forward` over WebSocket: accepts the upgrade with the best
    /// protocol both sides speak, then relays to the pod's node (see [`crate::streaming`]).
    fn stream_websocket(
        &self,
        req: Request<Incoming>,
        ns: String,
        name: String,
        sub: &str,
        query: String,
    ) -> Result<Response<Body>, ApiError> {
        crate::streaming::serve_websocket(
            req,
            self.registry.clone(),
            self.agents.clone(),
            ns,
            name,
            sub,
            query,
        )
    }

    /// A watch slot for `id`, or 429 TooManyRequests with a Retry-After.
    fn admit_watch(&self, id: &Identity) -> Result<Permit<String>, ApiError> {
        let key = match id {
            // Local root is trusted: it counts only towards the total.
            Identity::Local => None,
            Identity::Admin => Some("admin".to_string()),
            Identity::Node(n) => Some(format!("node {n}")),
            Identity::User(u) => Some(format!("user {}", u.name)),
        };
        self.watches
            .admit(key)
            .map_err(|r| ApiError::TooManyRequests {
                message: format!("too many watches: {r}; close some, or retry later"),
                retry_after_seconds: 10,
            })
    }
}

fn full(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(body.into()).boxed())
        .expect("static response parts are valid")
}

fn json_response(code: StatusCode, v: &serde_json::Value) -> Response<Body> {
    full(code, serde_json::to_vec(v).unwrap_or_default())
}

fn error_response(e: &ApiError) -> Response<Body> {
    let st = e.to_status();
    let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let ApiError::TooManyRequests {
        retry_after_seconds,
        ..
    } = e
    {
        // Kubernetes puts the delay in both the header and details.retryAfterSeconds.
        let mut v = crate::error::status_json(&st);
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "details".into(),
                serde_json::json!({"retryAfterSeconds": retry_after_seconds}),
            );
        }
        let mut r = json_response(code, &v);
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, (*retry_after_seconds).into());
        return r;
    }
    json_response(code, &crate::error::status_json(&st))
}

/// Decodes `%XX` and `+` in a query component.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// A parsed resource path.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    kind: Kind,
    /// The version the path names: the kind's stored one, or an older one also served
    /// (autoscaling/v1 HorizontalPodAutoscalers), converted by podd_api::convert.
    version: &'static str,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || ApiError::NotFoundPath(format!("no API resource at {path}"));
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("/api/v1".to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return Err(not_found()),
    };
    if rest.is_empty() {
        return Err(not_found());
    }
    let (namespace, rest) = match rest {
        // A Namespace's own subresources, not a resource inside it.
        ["namespaces", _, "status" | "finalize"] => (None, rest),
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(not_found()),
    };
    let (kind, version) = Kind::from_path(&group, plural).ok_or_else(not_found)?;
    if !kind.namespaced() && namespace.is_some() {
        return Err(not_found());
    }
    if kind.namespaced() && namespace.is_none() && name.is_some() {
        return Err(not_found());
    }
    Ok(Route {
        kind,
        version,
        namespace,
        name,
        sub,
    })
}

fn too_large(len: impl std::fmt::Display) -> ApiError {
    ApiError::TooLarge(format!(
        "the request body is too large: {len} bytes, and at most {MAX_BODY} are accepted"
    ))
}

/// How much of a refused body is still read and thrown away, and for how long, before the
/// connection closes: a client still sending when the 413 goes out would otherwise get a
/// connection reset (the kernel resets a socket closed with unread data) instead of the answer.
/// Go's net/http, and so kube-apiserver, does the same.
const DRAIN_MAX: u64 = 4 * MAX_BODY as u64;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads and discards what is left of a refused body, bounded by [`DRAIN_MAX`] and
/// [`DRAIN_TIME`], in the background while the answer is written.
fn drain(mut body: Incoming, already: u64) {
    tokio::spawn(async move {
        let mut seen = already;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while seen <= DRAIN_MAX {
                match body.frame().await {
                    Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len() as u64),
                    _ => break,
                }
            }
        })
        .await;
    });
}

/// How a request's body is encoded, by its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyType {
    Json,
    /// Kubernetes' protobuf (kubectl's generators send it).
    Protobuf,
    /// A server-side apply body: YAML, of which JSON is a part.
    Yaml,
}

/// Reads an object body in the encoding its Content-Type names, as JSON. A body that is not
/// what its Content-Type says gets a 400 that says which it looks like.
async fn read_object(
    req: Request<Incoming>,
    body_type: BodyType,
    timeout: Duration,
) -> Result<serde_json::Value, ApiError> {
    let buf = read_body(req, timeout).await?;
    let looks_protobuf = buf.starts_with(podd_api::protobuf::MAGIC);
    match body_type {
        BodyType::Protobuf => podd_api::protobuf::decode(&buf).map_err(|e| {
            let hint = if buf.first() == Some(&b'{') {
                "; the body looks like JSON: send it with Content-Type application/json"
            } else {
                ""
            };
            ApiError::BadRequest(format!(
                "the protobuf request body could not be read: {e}{hint}"
            ))
        }),
        _ if looks_protobuf => Err(ApiError::BadRequest(format!(
            "the request body is Kubernetes protobuf, but its Content-Type says otherwise; send \
             it with Content-Type {PROTOBUF}"
        ))),
        BodyType::Json => serde_json::from_slice(&buf)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}"))),
        BodyType::Yaml => serde_json::from_slice(&buf).or_else(|_| {
            serde_yaml::from_slice(&buf).map_err(|e| {
                ApiError::BadRequest(format!("the apply body is neither JSON nor YAML: {e}"))
            })
        }),
    }
}

/// A JSON body that may be absent (DELETE's DeleteOptions); client-go's typed clients send
/// it in protobuf.
async fn read_optional_json(
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<Option<serde_json::Value>, ApiError> {
    let protobuf = body_type(&header(&req, hyper::header::CONTENT_TYPE))
        .is_ok_and(|t| t == BodyType::Protobuf);
    let buf = read_body(req, timeout).await?;
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if protobuf || buf.starts_with(podd_api::protobuf::MAGIC) {
        return podd_api::protobuf::decode(&buf).map(Some).map_err(|e| {
            ApiError::BadRequest(format!(
                "the protobuf DeleteOptions body could not be read: {e}"
            ))
        });
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

/// Reads a body of at most [`MAX_BODY`] bytes within `timeout`.
async fn read_body(req: Request<Incoming>, timeout: Duration) -> Result<BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    if let Some(len) = declared
        && len > MAX_BODY as u64
    {
        if len <= DRAIN_MAX {
            drain(body, 0);
        }
        return Err(too_large(len));
    }
    let mut buf = BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            })?;
            if let Some(d) = frame.data_ref() {
                if buf.len() + d.len() > MAX_BODY {
                    return Err(too_large(format!("more than {MAX_BODY}")));
                }
                buf.extend_from_slice(d);
            }
        }
        Ok(())
    };
    let read = tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::Timeout(format!(
            "the request body did not arrive within {timeout:?}"
        ))
    })?;
    if let Err(e) = read {
        if matches!(e, ApiError::TooLarge(_)) {
            drain(body, buf.len() as u64);
        }
        return Err(e);
    }
    Ok(buf)
}

/// A list's metadata: its revision, and the continue token and remaining count of a page.
fn list_meta(rev: i64, cont: &Option<String>, remaining: Option<usize>) -> serde_json::Value {
    let mut m = serde_json::json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        m["continue"] = c.clone().into();
    }
    if let Some(r) = remaining {
        m["remainingItemCount"] = r.into();
    }
    m
}

/// An object's JSON in `version` of its kind (as stored when that is the stored version).
fn json_in_version<'a>(kind: Kind, version: &str, json: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if podd_api::convert::is_stored(kind, version) {
        return std::borrow::Cow::Borrowed(json);
    }
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    std::borrow::Cow::Owned(
        serde_json::to_vec(&podd_api::convert::to_version(kind, version, &v)).unwrap_or_default(),
    )
}

fn list_body(
    kind: Kind,
    version: &str,
    items: &[Arc<CachedObject>],
    rev: i64,
    cont: &Option<String>,
    remaining: Option<usize>,
) -> Bytes {
    let mut out =
        BytesMut::with_capacity(128 + items.iter().map(|o| o.json.len() + 1).sum::<usize>());
    out.extend_from_slice(
        format!(
            r#"{{"kind":"{}List","apiVersion":"{}","metadata":{},"items":["#,
            kind.name(),
            kind.api_version_at(version),
            list_meta(rev, cont, remaining),
        )
        .as_bytes(),
    );
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(&json_in_version(kind, version, &o.json));
    }
    out.extend_from_slice(b"]}");
    out.freeze()
}

/// Kubernetes' protobuf media type: read in request bodies, and sent when negotiated
/// ([`crate::negotiate`]).
const PROTOBUF: &str = podd_api::protobuf::CONTENT_TYPE;

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// 406 for a client that accepts neither JSON nor protobuf ([`crate::negotiate`]).
fn check_accept(accept: &str) -> Result<(), ApiError> {
    crate::negotiate::Negotiation::new(accept, false).check(accept)
}

/// How a request's response is encoded: by its Accept header; a watch of a kind with a
/// protobuf message may stream protobuf.
fn negotiation(req: &Request<Incoming>) -> crate::negotiate::Negotiation {
    let accept = header(req, hyper::header::ACCEPT);
    let query = req.uri().query().unwrap_or_default();
    let watch = query_param(query, "watch").is_some_and(|w| w == "true" || w == "1");
    let protobuf_watch = watch
        && parse_path(req.uri().path()).is_ok_and(|r| {
            r.sub.is_none()
                && podd_api::protobuf::encodable(&r.kind.api_version_at(r.version), r.kind.name())
        });
    crate::negotiate::Negotiation::new(&accept, protobuf_watch)
}

/// The encoding of a create or update body: JSON or Kubernetes' protobuf; 415 otherwise.
fn body_type(content_type: &str) -> Result<BodyType, ApiError> {
    let t = content_type.split(';').next().unwrap_or("").trim();
    if t == PROTOBUF {
        return Ok(BodyType::Protobuf);
    }
    if t.is_empty() || t == "application/json" || t.ends_with("+json") || t == "*/*" {
        return Ok(BodyType::Json);
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "the body's media type {t:?} is not supported; send application/json or {PROTOBUF}"
    )))
}

/// The patch type of a PATCH's Content-Type; 415 for anything else.
fn patch_type(content_type: &str) -> Result<PatchType, ApiError> {
    PatchType::from_content_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "the body of a PATCH must be application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json or application/apply-patch+yaml, not {content_type:?}"
        ))
    })
}

/// Whether the Accept header asks for a meta.k8s.io Table (as kubectl get does).
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.split(';').any(|p| p.trim() == "as=Table"))
}

/// `dryRun` and `fieldValidation` of a write.
fn write_options(query: &str) -> Result<WriteOptions, ApiError> {
    let dry_run = match query_param(query, "dryRun").as_deref() {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid dry run value: {other:?}; the only value is All"
            )));
        }
    };
    let field_validation = match query_param(query, "fieldValidation").as_deref() {
        None | Some("") => FieldValidation::default(),
        Some(v) => FieldValidation::parse(v).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "fieldValidation {v:?} is not one of Ignore, Warn or Strict"
            ))
        })?,
    };
    Ok(WriteOptions {
        dry_run,
        field_validation,
        field_manager: query_param(query, "fieldManager"),
        force: query_param(query, "force").is_some_and(|f| f == "true"),
        user_agent: String::new(),
        version: String::new(),
    })
}

/// A `Warning:` header value (RFC 7234 warn-code 299, as kube-apiserver sends).
fn warning_header(text: &str) -> Option<hyper::header::HeaderValue> {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    hyper::header::HeaderValue::from_str(&format!("299 - \"{escaped}\"")).ok()
}

/// A write's answer: the object, with its warnings as headers.
fn written(code: StatusCode, w: &Written) -> Response<Body> {
    let mut r = json_response(code, &w.object);
    for warning in &w.warnings {
        if let Some(h) = warning_header(warning) {
            r.headers_mut().append(hyper::header::WARNING, h);
        }
    }
    r
}

/// DeleteOptions from the body (metav1 DeleteOptions) and the query, the query winning.
fn delete_options(
    query: &str,
    body: Option<&serde_json::Value>,
) -> Result<DeleteOptions, ApiError> {
    let empty = serde_json::Value::Null;
    let b = body.unwrap_or(&empty);
    let mut opts = DeleteOptions::default();
    let propagation = query_param(query, "propagationPolicy")
        .or_else(|| b["propagationPolicy"].as_str().map(String::from));
    let orphan = query_param(query, "orphanDependents")
        .map(|o| o == "true")
        .or_else(|| b["orphanDependents"].as_bool());
    opts.propagation = match (propagation, orphan) {
        (Some(p), _) if !p.is_empty() => Propagation::parse(&p)?,
        (_, Some(true)) => Propagation::Orphan,
        _ => Propagation::Background,
    };
    opts.grace_period_seconds = match query_param(query, "gracePeriodSeconds") {
        Some(g) => Some(g.parse::<i64>().map_err(|_| {
            ApiError::BadRequest(format!("gracePeriodSeconds {g:?} is not a number"))
        })?),
        None => b["gracePeriodSeconds"].as_i64(),
    };
    if opts.grace_period_seconds.is_some_and(|g| g < 0) {
        opts.grace_period_seconds = Some(0);
    }
    opts.precondition_rv = query_param(query, "resourceVersion")
        .or_else(|| {
            b.pointer("/preconditions/resourceVersion")
                .and_then(|r| r.as_str())
                .map(String::from)
        })
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse()
                .map_err(|_| ApiError::BadRequest(format!("resourceVersion {r:?} is not a number")))
        })
        .transpose()?;
    opts.precondition_uid = b
        .pointer("/preconditions/uid")
        .and_then(|u| u.as_str())
        .map(String::from);
    let body_dry = b["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|x| x == "All"));
    opts.dry_run = write_options(query)?.dry_run || body_dry;
    Ok(opts)
}

/// Authorises a write outside the registry (the usage report): a node may post only its own
/// node's usage.
fn authorize_other(id: &Identity, method: &Method, path: &str) -> Result<(), ApiError> {
    let Identity::Node(node) = id else {
        return Ok(());
    };
    let own_usage = format!("/apis/podd.dev/v1/nodes/{node}/usage");
    if *method == Method::POST && path.trim_end_matches('/') == own_usage {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "node {node:?} may not {method} {path}: an agent token may post only its own node's usage"
    )))
}

fn event_line(ty: EventType, json: &[u8]) -> Bytes {
    let t = ty.as_str();
    let mut b = BytesMut::with_capacity(json.len() + 32);
    b.extend_from_slice(br#"{"type":""#);
    b.extend_from_slice(t.as_bytes());
    b.extend_from_slice(br#"","object":"#);
    b.extend_from_slice(json);
    b.extend_from_slice(b"}\n");
    b.freeze()
}

/// What a watcher with `prefix` and `filter` sees of one event, if anything.
fn translate(ev: &CacheEvent, prefix: &str, filter: &Filter) -> Option<EventType> {
    if !ev.object.key.starts_with(prefix) {
        return None;
    }
    let now = filter.matches(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
    match ev.kind {
        EventType::Deleted => now.then_some(EventType::Deleted),
        _ => match (before, now) {
            (false, true) => Some(EventType::Added),
            (true, true) => Some(EventType::Modified),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        },
    }
}

impl ApiServer {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        transport: Transport,
    ) -> Response<Body> {
        let mutating = matches!(
            *req.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        let t = Instant::now();
        // Responses are built in JSON; the negotiated encoding is applied last (protobuf).
        let negotiation = negotiation(&req);
        let resp = match self.route(req, transport).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        let resp = negotiation.respond(resp).await;
        if mutating {
            self.registry.http_mutating_latency.record(t.elapsed());
        }
        resp
    }

    /// Prometheus' text format: scheduling latency, placement failures, objects by kind and
    /// pods by phase (node agents export their own pods, restarts and LB connections).
    fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let m = &self.registry.metrics;
        let mut out = String::new();
        m.scheduling.render(
            &mut out,
            "podd_scheduling_duration_seconds",
            "From a pod's first sight by the scheduler loop to its binding.",
        );
        let _ = writeln!(
            out,
            "# HELP podd_unschedulable_total Placement attempts that found no node.\n\
             # TYPE podd_unschedulable_total counter\npodd_unschedulable_total {}",
            m.unschedulable.load(std::sync::atomic::Ordering::Relaxed)
        );
        let cache = self.registry.cache();
        let _ = writeln!(
            out,
            "# HELP podd_objects Objects in the store, by kind.\n# TYPE podd_objects gauge"
        );
        let mut pods = Vec::new();
        for kind in Kind::ALL {
            let (objs, _) = cache.snapshot(kind, &kind.key_prefix(None));
            let _ = writeln!(
                out,
                "podd_objects{{kind=\"{}\"}} {}",
                kind.plural(),
                objs.len()
            );
            if kind == Kind::Pod {
                pods = objs;
            }
        }
        let mut phases: std::collections::BTreeMap<String, usize> = Default::default();
        for p in pods.iter().filter_map(|o| o.decode::<podd_api::Pod>()) {
            *phases
                .entry(podd_api::resources::pod_phase(&p).to_string())
                .or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP podd_cluster_pods Pods in the cluster, by phase.\n# TYPE podd_cluster_pods gauge"
        );
        for (phase, n) in phases {
            let _ = writeln!(out, "podd_cluster_pods{{phase=\"{phase}\"}} {n}");
        }
        out
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        transport: Transport,
    ) -> Result<Response<Body>, ApiError> {
        let identity = match transport {
            Transport::Unix => Identity::Local,
            Transport::Tls => {
                let h = req
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|h| h.to_str().ok());
                // The client certificate first, then the token (crate::auth).
                let peer = req.extensions().get::<Arc<crate::tls::PeerCertificates>>();
                self.auth.authenticate_request(peer.map(|p| &**p), h)?
            }
        };
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        crate::auth::authorize_request(&identity, req.method().as_str(), &path)?;
        if *req.method() == Method::POST
            && path.trim_end_matches('/') == crate::auth::SELF_SUBJECT_REVIEW_PATH
        {
            // kubectl auth whoami: create-only, answers who the caller is.
            read_body(req, self.limits.body_read_timeout).await?;
            return Ok(json_response(
                StatusCode::CREATED,
                &crate::auth::self_subject_review(&identity),
            ));
        }
        if path == "/healthz" || path == "/readyz" {
            return Ok(full(StatusCode::OK, "ok"));
        }
        if path == "/metrics" {
            return Ok(full(StatusCode::OK, self.metrics_text()));
        }
        let accept = header(&req, hyper::header::ACCEPT);
        let content_type = header(&req, hyper::header::CONTENT_TYPE);
        check_accept(&accept)?;
        let route = match parse_path(&path) {
            Ok(r) => r,
            Err(e) => {
                let method = req.method().clone();
                if method != Method::GET && method != Method::HEAD {
                    authorize_other(&identity, &method, &path)?;
                }
                if let Some(node) = crate::discovery::usage_report_node(&method, &path) {
                    let node = node.to_string();
                    let body = read_body(req, self.limits.body_read_timeout).await?;
                    return crate::discovery::record_usage(self, &node, &body);
                }
                if let Some(r) =
                    crate::discovery::route(self, &method, &path, &query, req.headers())
                {
                    return Ok(r);
                }
                if path == "/version" || path == "/version/" {
                    return Ok(json_response(
                        StatusCode::OK,
                        &serde_json::json!({"major": "1", "minor": "34",
                            "gitVersion": "v1.34.0-podd", "platform": "linux/amd64"}),
                    ));
                }
                return Err(e);
            }
        };
        let ns = route.namespace.clone().unwrap_or_default();
        let kind = route.kind;
        let method = req.method().clone();
        let sub = match route.sub.as_deref() {
            None => Subresource::Main,
            Some("status") if kind.has_status() => Subresource::Status,
            Some("scale") if kind.info().has_scale => Subresource::Scale,
            Some("finalize") if kind == Kind::Namespace && method == Method::PUT => {
                Subresource::Finalize
            }
            Some(sub @ ("log" | "exec" | "attach" | "portforward")) if kind == Kind::Pod => {
                let name = route
                    .name
                    .clone()
                    .ok_or_else(|| ApiError::BadRequest(format!("pods/{sub} needs a pod name")))?;
                // Reading logs and running commands is for admins and local root only.
                if matches!(identity, Identity::Node(_)) {
                    return Err(ApiError::Forbidden(format!(
                        "an agent token may not use pods/{sub}"
                    )));
                }
                if sub != "log" && crate::streaming::is_websocket_upgrade(req.headers()) {
                    return self.stream_websocket(req, ns, name, sub, query);
                }
                if sub != "log" && crate::streaming::spdy_upgrade::is_spdy_upgrade(req.headers()) {
                    return Ok(crate::streaming::spdy_upgrade::serve(
                        req,
                        self.registry.clone(),
                        self.agents.clone(),
                        ns,
                        name,
                        sub,
                        query,
                    ));
                }
                if sub == "attach" || sub == "portforward" {
                    return Err(ApiError::BadRequest(format!(
                        "pods/{sub} is served over a WebSocket or SPDY/3.1 upgrade only"
                    )));
                }
                return crate::agent_proxy::proxy(
                    &self.registry,
                    &self.agents,
                    &ns,
                    &name,
                    sub,
                    &method,
                    &query,
                    Bytes::new(),
                )
                .await;
            }
            Some("certificate") if kind == Kind::Node && method == Method::POST => {
                let name = route.name.clone().ok_or_else(|| {
                    ApiError::BadRequest("nodes/certificate needs a node name".into())
                })?;
                return crate::agent_proxy::certificate(
                    &self.registry,
                    &self.agents,
                    &identity,
                    &name,
                )
                .await;
            }
            Some(other) => {
                if let Some(r) =
                    crate::discovery::route(self, &method, &path, &query, req.headers())
                {
                    return Ok(r);
                }
                return Err(ApiError::NotFoundPath(format!(
                    "{} has no subresource {other:?}",
                    kind.plural()
                )));
            }
        };
        let table = wants_table(&accept);
        let include_object =
            query_param(&query, "includeObject").unwrap_or_else(|| "Metadata".into());
        let mut write_opts = write_options(&query)?;
        // Field managers default to the User-Agent; other versions are converted.
        write_opts.user_agent = header(&req, hyper::header::USER_AGENT);
        write_opts.version = route.version.to_string();
        if method == Method::GET {
            let cache = self.registry.cache();
            crate::node_reads::authorize_read(&identity, kind, &ns, route.name.as_deref(), cache)?;
        }
        match (&method, &route.name) {
            (&Method::GET, None) => {
                let filter = Filter {
                    labels: query_param(&query, "labelSelector")
                        .filter(|s| !s.is_empty())
                        .map(|s| Selector::parse(&s))
                        .transpose()
                        .map_err(|e| {
                            ApiError::BadRequest(format!("unable to parse requirement: {e}"))
                        })?,
                    fields: FieldSelector::parse(
                        &query_param(&query, "fieldSelector").unwrap_or_default(),
                    )?,
                };
                if query_param(&query, "watch").is_some_and(|w| w == "true" || w == "1") {
                    let rv = query_param(&query, "resourceVersion").unwrap_or_default();
                    let timeout = query_param(&query, "timeoutSeconds")
                        .and_then(|t| t.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let permit = self.admit_watch(&identity)?;
                    let opts = WatchOptions {
                        bookmarks: query_param(&query, "allowWatchBookmarks")
                            .is_some_and(|b| b == "true" || b == "1"),
                        table: table.then_some(include_object),
                        version: route.version,
                        timeout,
                        bookmark_every: BOOKMARK_EVERY,
                    };
                    return self
                        .watch(kind, route.namespace.as_deref(), filter, &rv, opts, permit)
                        .await;
                }
                let opts = ListOptions {
                    filter,
                    limit: query_param(&query, "limit")
                        .map(|l| {
                            l.parse::<usize>().map_err(|_| {
                                ApiError::BadRequest(format!("limit {l:?} is not a number"))
                            })
                        })
                        .transpose()?,
                    continue_token: query_param(&query, "continue").filter(|c| !c.is_empty()),
                    resource_version: query_param(&query, "resourceVersion").unwrap_or_default(),
                    resource_version_match: query_param(&query, "resourceVersionMatch")
                        .filter(|m| !m.is_empty()),
                };
                let page = self
                    .registry
                    .list_page(kind, route.namespace.as_deref(), &opts)
                    .await?;
                if table {
                    // Rendering thousands of rows is CPU work: off the async workers.
                    let items = page.items.clone();
                    let include = include_object.clone();
                    let meta = list_meta(page.revision, &page.continue_token, page.remaining);
                    let body = tokio::task::spawn_blocking(move || {
                        let json: Vec<&[u8]> = items.iter().map(|o| &o.json[..]).collect();
                        crate::table::table_of_json(kind, &json, &include, &meta)
                    })
                    .await
                    .map_err(|e| ApiError::Internal(format!("rendering the table: {e}")))?;
                    return Ok(full(StatusCode::OK, body));
                }
                Ok(full(
                    StatusCode::OK,
                    list_body(
                        kind,
                        route.version,
                        &page.items,
                        page.revision,
                        &page.continue_token,
                        page.remaining,
                    ),
                ))
            }
            (&Method::GET, Some(name)) => {
                let v = self.registry.get(kind, &ns, name).await?;
                if sub == Subresource::Scale {
                    return Ok(json_response(StatusCode::OK, &scale_of(&v)));
                }
                if table {
                    let t = crate::table::to_table(kind, &[v], &include_object);
                    return Ok(json_response(StatusCode::OK, &t));
                }
                let v = podd_api::convert::to_version(kind, route.version, &v);
                Ok(json_response(StatusCode::OK, &v))
            }
            (&Method::POST, None) => {
                let ty = body_type(&content_type)?;
                let body = read_object(req, ty, self.limits.body_read_timeout).await?;
                let name = body
                    .pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                self.check(
                    &identity,
                    kind,
                    &ns,
                    &name,
                    Verb::Create,
                    false,
                    Some(&body),
                )
                .await?;
                let w = self
                    .registry
                    .create_with(kind, &ns, body, &write_opts)
                    .await?;
                Ok(written(StatusCode::CREATED, &w))
            }
            (&Method::PUT, Some(name)) | (&Method::PATCH, Some(name)) => {
                let is_status = sub == Subresource::Status;
                let (verb, patch_type, ty) = if method == Method::PUT {
                    (Verb::Update, None, body_type(&content_type)?)
                } else {
                    let p = patch_type(&content_type)?;
                    let ty = if p == PatchType::Apply {
                        BodyType::Yaml
                    } else {
                        BodyType::Json
                    };
                    (Verb::Patch, Some(p), ty)
                };
                let body = read_object(req, ty, self.limits.body_read_timeout).await?;
                self.check(&identity, kind, &ns, name, verb, is_status, Some(&body))
                    .await?;
                let w = match patch_type {
                    None => {
                        self.registry
                            .update_with(kind, &ns, name, body, sub, &write_opts)
                            .await?
                    }
                    Some(ty) => {
                        self.registry
                            .patch_with(kind, &ns, name, ty, body, sub, &write_opts)
                            .await?
                    }
                };
                if sub == Subresource::Scale {
                    return Ok(json_response(StatusCode::OK, &scale_of(&w.object)));
                }
                Ok(written(StatusCode::OK, &w))
            }
            (&Method::DELETE, Some(name)) => {
                self.check(&identity, kind, &ns, name, Verb::Delete, false, None)
                    .await?;
                let body = read_optional_json(req, self.limits.body_read_timeout).await?;
                let opts = delete_options(&query, body.as_ref())?;
                let v = self.registry.delete_with(kind, &ns, name, &opts).await?;
                let v = podd_api::convert::to_version(kind, route.version, &v);
                Ok(json_response(StatusCode::OK, &v))
            }
            _ => Err(ApiError::MethodNotAllowed(format!(
                "{method} is not allowed on {path}"
            ))),
        }
    }

    /// Authorises a write; a node identity's against the allow-list in [`authorize`], which
    /// may look at the body and the stored object.
    #[allow(clippy::too_many_arguments)]
    async fn check(
        &self,
        id: &Identity,
        kind: Kind,
        ns: &str,
        name: &str,
        verb: Verb,
        status: bool,
        body: Option<&serde_json::Value>,
    ) -> Result<(), ApiError> {
        if id.is_admin() {
            return Ok(());
        }
        let pod_node = if kind == Kind::Pod && !name.is_empty() {
            self.registry.get(kind, ns, name).await.ok().and_then(|v| {
                v.pointer("/spec/nodeName")
                    .and_then(|n| n.as_str())
                    .map(String::from)
            })
        } else {
            None
        };
        let mut action = Action {
            verb,
            kind,
            namespace: ns,
            name,
            status,
            pod_node: pod_node.as_deref(),
            body,
            current: None,
        };
        let current = if crate::auth::needs_current(&action) {
            self.registry.get(kind, ns, name).await.ok()
        } else {
            None
        };
        action.current = current.as_ref();
        authorize(id, &action)
    }

    async fn watch(
        &self,
        kind: Kind,
        ns: Option<&str>,
        filter: Filter,
        rv: &str,
        opts: WatchOptions,
        permit: Permit<String>,
    ) -> Result<Response<Body>, ApiError> {
        let prefix = kind.key_prefix(ns.filter(|n| !n.is_empty()));
        let cache = self.registry.cache().clone();
        let render = Renderer {
            kind,
            table: opts.table.clone(),
            version: opts.version,
        };
        let (initial, after, rx) = match rv.parse::<i64>() {
            Ok(n) if n > 0 => match cache.subscribe(kind, n) {
                Ok(s) => (
                    s.backlog
                        .iter()
                        .filter_map(|ev| {
                            translate(ev, &prefix, &filter).map(|t| render.line(t, &ev.object.json))
                        })
                        .collect::<Vec<_>>(),
                    n,
                    s.rx,
                ),
                Err(oldest) => {
                    // Older than the cache's window: the store may still have that history
                    // (e.g. just after a restart); it answers Compacted when it has not.
                    return match self.registry.store().watch(&prefix, n).await {
                        Ok(stream) => Ok(store_watch(kind, stream, filter, opts, permit)),
                        Err(podd_store::StoreError::Compacted { .. }) => Err(ApiError::Expired(
                            format!("too old resource version: {n} ({oldest})"),
                        )),
                        Err(e) => Err(e.into()),
                    };
                }
            },
            Ok(_) | Err(_) if rv.is_empty() || rv == "0" => {
                let (items, rev, rx) = cache.snapshot_and_subscribe(kind, &prefix);
                let lines = items
                    .iter()
                    .filter(|o| filter.matches(o))
                    .map(|o| render.line(EventType::Added, &o.json))
                    .collect();
                (lines, rev, rx)
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "resourceVersion {rv:?} is not a number"
                )));
            }
        };
        let (mut tx, body_rx) =
            futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        tokio::spawn(async move {
            // The watch holds its slot until it ends.
            let _permit = permit;
            let deadline = opts.timeout.map(|t| Instant::now() + t);
            for line in initial {
                if tx.send(Ok(Frame::data(line))).await.is_err() {
                    return;
                }
            }
            let mut rx = rx;
            let mut last = after;
            let mut bookmark = tokio::time::interval_at(
                tokio::time::Instant::now() + opts.bookmark_every,
                opts.bookmark_every,
            );
            loop {
                let next = tokio::select! {
                    r = until(deadline, rx.recv()) => match r {
                        Some(r) => Some(r),
                        None => {
                            // Timed out: a last bookmark tells the client where to resume.
                            if opts.bookmarks {
                                let rev = drain_then_revision(&cache, &mut rx, &mut last, &prefix, &filter, &render, &mut tx).await;
                                let _ = tx.send(Ok(Frame::data(render.bookmark(rev)))).await;
                            }
                            return;
                        }
                    },
                    _ = bookmark.tick(), if opts.bookmarks => None,
                    // A watcher that went away frees its slot without waiting for an event.
                    _ = client_gone(&tx) => return,
                };
                let Some(next) = next else {
                    let Some(rev) = drain_then_revision(
                        &cache, &mut rx, &mut last, &prefix, &filter, &render, &mut tx,
                    )
                    .await
                    else {
                        return;
                    };
                    if tx
                        .send(Ok(Frame::data(render.bookmark(Some(rev)))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                };
                match next {
                    Ok(ev) => {
                        if !send_event(&ev, &mut last, &prefix, &filter, &render, &mut tx).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let st = ApiError::Expired(format!(
                            "the watcher fell {n} events behind and was cut off"
                        ))
                        .to_status_json();
                        let json = serde_json::to_vec(&st).unwrap_or_default();
                        let _ = tx
                            .send(Ok(Frame::data(event_line(EventType::Error, &json))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        // The cache relisted; the client must too.
                        let st = ApiError::Expired("the server's watch cache was reset".into())
                            .to_status_json();
                        let json = serde_json::to_vec(&st).unwrap_or_default();
                        let _ = tx
                            .send(Ok(Frame::data(event_line(EventType::Error, &json))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(streaming(body_rx))
    }
}

/// How often a watch that allows bookmarks gets one.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

/// What a watch sends besides events.
#[derive(Debug, Clone)]
struct WatchOptions {
    bookmarks: bool,
    /// Objects as one-row Tables, with this `includeObject`.
    table: Option<String>,
    /// The version objects are sent in.
    version: &'static str,
    timeout: Option<Duration>,
    bookmark_every: Duration,
}

/// Renders a watch's lines: objects as they are, or as Tables.
struct Renderer {
    kind: Kind,
    table: Option<String>,
    version: &'static str,
}

impl Renderer {
    fn line(&self, ty: EventType, json: &[u8]) -> Bytes {
        match &self.table {
            None => event_line(ty, &json_in_version(self.kind, self.version, json)),
            Some(include) => {
                let obj: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
                let t = crate::table::to_table(self.kind, &[obj], include);
                event_line(ty, &serde_json::to_vec(&t).unwrap_or_default())
            }
        }
    }

    /// A BOOKMARK: an object of the kind with only its resourceVersion.
    fn bookmark(&self, rev: Option<i64>) -> Bytes {
        let obj = serde_json::json!({
            "kind": self.kind.name(),
            "apiVersion": self.kind.api_version_at(self.version),
            "metadata": {"resourceVersion": rev.unwrap_or_default().to_string()},
        });
        event_line(
            EventType::Bookmark,
            &serde_json::to_vec(&obj).unwrap_or_default(),
        )
    }
}

type FrameTx = futures::channel::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// Sends what the watcher sees of `ev`; false once the client is gone.
async fn send_event(
    ev: &CacheEvent,
    last: &mut i64,
    prefix: &str,
    filter: &Filter,
    render: &Renderer,
    tx: &mut FrameTx,
) -> bool {
    if ev.revision <= *last {
        return true;
    }
    *last = ev.revision;
    match translate(ev, prefix, filter) {
        Some(t) => tx
            .send(Ok(Frame::data(render.line(t, &ev.object.json))))
            .await
            .is_ok(),
        None => true,
    }
}

/// The revision a bookmark may carry: the cache's, once every event up to it that is already
/// queued for this watcher has been sent (the cache queues an event before its revision
/// moves). None when the client is gone or the watch must end.
async fn drain_then_revision(
    cache: &crate::cache::WatchCache,
    rx: &mut broadcast::Receiver<Arc<CacheEvent>>,
    last: &mut i64,
    prefix: &str,
    filter: &Filter,
    render: &Renderer,
    tx: &mut FrameTx,
) -> Option<i64> {
    let rev = cache.revision();
    loop {
        match rx.try_recv() {
            Ok(ev) => {
                if !send_event(&ev, last, prefix, filter, render, tx).await {
                    return None;
                }
            }
            Err(broadcast::error::TryRecvError::Empty) => break,
            Err(_) => return None,
        }
    }
    Some(rev.max(*last))
}

/// `f`'s output, or None once `deadline` passes.
async fn until<T>(deadline: Option<Instant>, f: impl std::future::Future<Output = T>) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), f).await.ok(),
        None => Some(f.await),
    }
}

/// Resolves once the response body of a stream is dropped (its connection closed).
async fn client_gone<T>(tx: &futures::channel::mpsc::Sender<T>) {
    while !tx.is_closed() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn streaming(
    body_rx: futures::channel::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(StreamBody::new(body_rx).boxed())
        .expect("static response parts are valid")
}

/// A watch served straight from the store, for revisions older than the cache's window.
/// Selector transitions are not computed here: an event is sent when the object (after the
/// change, or before a delete) matches.
fn store_watch(
    kind: Kind,
    mut stream: podd_store::WatchStream,
    filter: Filter,
    opts: WatchOptions,
    permit: Permit<String>,
) -> Response<Body> {
    let timeout = opts.timeout;
    let render = Renderer {
        kind,
        table: opts.table,
        version: opts.version,
    };
    use futures::StreamExt;
    let (mut tx, body_rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        let _permit = permit;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let next = tokio::select! {
                r = until(deadline, stream.next()) => match r {
                    Some(r) => r,
                    None => return,
                },
                _ = client_gone(&tx) => return,
            };
            let line = match next {
                Some(Ok(ev)) => {
                    let Some(o) = CachedObject::from_stored(
                        kind,
                        &ev.kv.key,
                        &ev.kv.value,
                        ev.kv.mod_revision,
                    ) else {
                        continue;
                    };
                    if !filter.matches(&o) {
                        continue;
                    }
                    let ty = match ev.kind {
                        podd_store::EventKind::Created => EventType::Added,
                        podd_store::EventKind::Modified => EventType::Modified,
                        podd_store::EventKind::Deleted => EventType::Deleted,
                    };
                    render.line(ty, &o.json)
                }
                Some(Err(e)) => {
                    let st = ApiError::from(e).to_status_json();
                    let json = serde_json::to_vec(&st).unwrap_or_default();
                    let _ = tx
                        .send(Ok(Frame::data(event_line(EventType::Error, &json))))
                        .await;
                    return;
                }
                None => return,
            };
            if tx.send(Ok(Frame::data(line))).await.is_err() {
                return;
            }
        }
    });
    streaming(body_rx)
}

/// The autoscaling/v1 Scale view of a Deployment.
fn scale_of(v: &serde_json::Value) -> serde_json::Value {
    let replicas = v.pointer("/spec/replicas").cloned().unwrap_or(1.into());
    let selector = v
        .pointer("/spec/selector/matchLabels")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    serde_json::json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": v.pointer("/metadata/name"),
            "namespace": v.pointer("/metadata/namespace"),
            "resourceVersion": v.pointer("/metadata/resourceVersion"),
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": v.pointer("/status/replicas").cloned().unwrap_or(0.into()), "selector": selector},
    })
}

async fn serve_conn<S>(
    api: Arc<ApiServer>,
    io: S,
    transport: Transport,
    peer: Option<Arc<crate::tls::PeerCertificates>>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = api.limits.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let api = api.clone();
        // The TLS client's certificate chain, authenticated per request (crate::auth).
        if let Some(p) = &peer {
            req.extensions_mut().insert(p.clone());
        }
        async move { Ok::<_, Infallible>(api.handle(req, transport).await) }
    });
    let conn = serve_http1(hyper_util::rt::TokioIo::new(io), &limits, svc);
    tokio::select! {
        end = conn => end.log("api"),
        _ = shutdown.changed() => {}
    }
}

/// Binds the Unix socket (mode 0600; a stale socket file is replaced).
pub fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves the API on a Unix socket until `shutdown`; removes the socket file at the end.
pub async fn serve_unix(
    api: Arc<ApiServer>,
    listener: tokio::net::UnixListener,
    path: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    // Local root only, but still bounded: a stuck local client must not exhaust the fds.
    let gate = ConnGate::for_connections("connections to the API socket", &api.limits);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    // Over the cap, the stream is dropped (closed) at once.
                    let Ok(permit) = gate.admit(None) else { continue };
                    let (api, sd) = (api.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        serve_conn(api, stream, Transport::Unix, None, sd).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the Unix socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Serves the API over TLS until `shutdown`.
pub async fn serve_tls(
    api: Arc<ApiServer>,
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let gate = ConnGate::for_connections("connections to the API port", &api.limits);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    // Over the caps, the stream is dropped (closed) at once, before any read.
                    let Ok(permit) = gate.admit(Some(peer.ip())) else { continue };
                    let _ = stream.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let api = api.clone();
                    let sd = shutdown.clone();
                    tokio::spawn(async move {
                        match crate::conn_limits::tls_accept(&acceptor, stream, &api.limits).await {
                            Ok(tls) => {
                                let peer = tls.get_ref().1.peer_certificates().map(|c| {
                                    Arc::new(crate::tls::PeerCertificates(
                                        c.iter().map(|d| d.clone().into_owned()).collect(),
                                    ))
                                });
                                serve_conn(api, tls, Transport::Tls, peer, sd).await
                            }
                            Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the TLS port failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let r = parse_path("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            r,
            Route {
                kind: Kind::Pod,
                version: "v1",
                namespace: Some("default".into()),
                name: Some("web".into()),
                sub: Some("status".into())
            }
        );
        assert_eq!(parse_path("/api/v1/nodes/n1").unwrap().kind, Kind::Node);
        assert_eq!(parse_path("/api/v1/pods").unwrap().namespace, None);
        assert_eq!(
            parse_path("/apis/apps/v1/namespaces/x/deployments")
                .unwrap()
                .kind,
            Kind::Deployment
        );
        assert!(parse_path("/api/v1/deployments").is_err());
        assert!(parse_path("/api/v1/namespaces/x/nodes/n").is_err());
        assert!(parse_path("/api/v1/pods/p").is_err());
        assert_eq!(
            parse_path("/apis/autoscaling/v2/namespaces/d/horizontalpodautoscalers/h")
                .unwrap()
                .kind,
            Kind::HorizontalPodAutoscaler
        );
        let v1 =
            parse_path("/apis/autoscaling/v1/namespaces/d/horizontalpodautoscalers/h").unwrap();
        assert_eq!((v1.kind, v1.version), (Kind::HorizontalPodAutoscaler, "v1"));
    }

    #[test]
    fn every_kind_has_its_group_path() {
        for kind in Kind::ALL {
            let ns = if kind.namespaced() {
                "namespaces/x/"
            } else {
                ""
            };
            let p = format!("{}/{ns}{}/n", kind.group_prefix(), kind.plural());
            assert_eq!(parse_path(&p).unwrap().kind, kind, "{p}");
            let list = format!("{}/{}", kind.group_prefix(), kind.plural());
            assert_eq!(parse_path(&list).unwrap().kind, kind, "{list}");
        }
        assert!(parse_path("/api/v1").is_err());
        assert!(parse_path("/apis/apps/v1").is_err());
        assert!(parse_path("/apis/podd.dev/v1/nodes/n1/usage").is_err());
    }

    #[test]
    fn media_types() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(wants_table(kubectl));
        assert!(!wants_table("application/json"));
        assert!(check_accept(kubectl).is_ok());
        assert!(check_accept("application/vnd.kubernetes.protobuf, */*").is_ok());
        // Protobuf is served (crate::negotiate); what is neither JSON nor protobuf is 406.
        assert!(check_accept("application/vnd.kubernetes.protobuf").is_ok());
        assert!(matches!(
            check_accept("application/yaml"),
            Err(ApiError::NotAcceptable(_))
        ));
        assert_eq!(
            body_type("application/json; charset=utf-8").unwrap(),
            BodyType::Json
        );
        assert_eq!(
            body_type("application/vnd.kubernetes.protobuf").unwrap(),
            BodyType::Protobuf
        );
        assert!(matches!(
            body_type("text/plain"),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert_eq!(
            warning_header(r#"unknown field "spec.foo""#).unwrap(),
            r#"299 - "unknown field \"spec.foo\"""#
        );
    }

    #[test]
    fn delete_options_from_body_and_query() {
        let body = serde_json::json!({"kind": "DeleteOptions", "propagationPolicy": "Orphan",
            "gracePeriodSeconds": 5, "preconditions": {"uid": "u", "resourceVersion": "7"}});
        let o = delete_options("", Some(&body)).unwrap();
        assert_eq!(o.propagation, Propagation::Orphan);
        assert_eq!(o.grace_period_seconds, Some(5));
        assert_eq!(o.precondition_uid.as_deref(), Some("u"));
        assert_eq!(o.precondition_rv, Some(7));
        let o = delete_options(
            "propagationPolicy=Foreground&gracePeriodSeconds=0&dryRun=All",
            Some(&body),
        )
        .unwrap();
        assert_eq!(o.propagation, Propagation::Foreground);
        assert_eq!(o.grace_period_seconds, Some(0));
        assert!(o.dry_run);
        assert!(delete_options("propagationPolicy=Sometimes", None).is_err());
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_param("labelSelector=app%3Dweb&watch=true", "labelSelector").as_deref(),
            Some("app=web")
        );
        assert_eq!(query_param("a=1", "b"), None);
        assert_eq!(percent_decode("100%"), "100%");
    }
}

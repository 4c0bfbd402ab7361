//! The API's self-description and the endpoints outside the registry: `/version`, discovery
//! (`/api`, `/apis`, `/api/v1`, `/apis/GROUP`, `/apis/GROUP/VERSION`, and aggregated discovery
//! apidiscovery.k8s.io/v2), `/openapi/v2` and `/openapi/v3`, metrics.k8s.io/v1beta1, and the
//! agents' usage reports (`POST /apis/podd.dev/v1/nodes/NODE/usage`).
//!
//! The documents are built in [`groups`] and [`openapi`], the metrics in [`metrics`]; this
//! module routes and answers.

pub mod groups;
pub mod metrics;
pub mod openapi;

use crate::error::ApiError;
use crate::http::{ApiServer, Body, query_param, wants_table};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Response, StatusCode};
use podd_api::metrics::UsageReport;
use podd_api::selector::Selector;
use podd_api::{Node, Pod, ResourceExt, Status};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Answers the paths the registry does not serve; None for every other path (and for the
/// usage report, whose body [`record_usage`] takes).
pub fn route(
    api: &ApiServer,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Option<Response<Body>> {
    let trimmed = path.trim_end_matches('/');
    let answer = answer(api, trimmed, query, headers)?;
    if method != Method::GET && method != Method::HEAD {
        return Some(status_response(&podd_api::status_failure(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}; only GET is"),
        )));
    }
    Some(answer)
}

/// The node a request reports usage for, when it is a usage report
/// (`POST /apis/podd.dev/v1/nodes/NODE/usage`). The HTTP layer authorises it (a node
/// identity only for its own node), reads the body, and hands it to [`record_usage`].
pub fn usage_report_node<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    if method != Method::POST {
        return None;
    }
    let node = path
        .trim_end_matches('/')
        .strip_prefix("/apis/podd.dev/v1/nodes/")?
        .strip_suffix("/usage")?;
    (!node.is_empty() && !node.contains('/')).then_some(node)
}

/// Records `node`'s usage report (a [`UsageReport`] as JSON), replacing its last one.
pub fn record_usage(api: &ApiServer, node: &str, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let report: UsageReport = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the usage report of node {node:?} does not decode: {e}"
        ))
    })?;
    api.registry.usage.record(node, report);
    Ok(json_bytes(
        StatusCode::OK,
        "application/json",
        Bytes::from_static(
            br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":200}"#,
        ),
    ))
}

/// The answer for `path` (no trailing slash), whatever the method; None when not ours.
fn answer(api: &ApiServer, path: &str, query: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    let header = |name: hyper::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Some(json(&groups::version())),
        [root @ ("api" | "apis")] => Some(
            match groups::aggregated_version(header(hyper::header::ACCEPT)) {
                Some(v) => json_bytes(
                    StatusCode::OK,
                    &groups::aggregated_content_type(v),
                    serde_json::to_vec(&groups::aggregated(*root == "api", v))
                        .unwrap_or_default()
                        .into(),
                ),
                None if *root == "api" => json(&groups::api_versions(header(hyper::header::HOST))),
                None => json(&groups::api_group_list()),
            },
        ),
        ["api", version] => groups::api_resource_list("", version).map(|v| json(&v)),
        ["apis", group] => groups::api_group(group).map(|v| json(&v)),
        ["apis", group, version] => groups::api_resource_list(group, version).map(|v| json(&v)),
        ["apis", groups::METRICS_GROUP, groups::METRICS_VERSION, ..] => {
            let p = metrics::parse(path)?;
            Some(metrics_answer(
                api,
                &p,
                query,
                header(hyper::header::ACCEPT),
            ))
        }
        ["openapi", "v2"] => Some(json_bytes(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(openapi::v2()),
        )),
        ["openapi", "v3"] => Some(json_bytes(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(openapi::v3_index()),
        )),
        ["openapi", "v3", rest @ ..] => {
            let (hash, doc) = openapi::v3(&rest.join("/"))?;
            let mut r = json_bytes(StatusCode::OK, "application/json", Bytes::from_static(doc));
            let h = r.headers_mut();
            if let Ok(v) = format!("\"{hash}\"").parse() {
                h.insert(hyper::header::ETAG, v);
            }
            // A URL with the document's hash names that document forever, as kube-apiserver
            // tells clients.
            let immutable = query_param(query, "hash").is_some_and(|q| q == hash);
            let cc = if immutable {
                "public, immutable"
            } else {
                "no-cache, private"
            };
            h.insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static(cc),
            );
            Some(r)
        }
        _ => None,
    }
}

/// Labels of the nodes and pods the metrics are of, from the watch cache.
struct CachedLabels {
    nodes: HashMap<String, BTreeMap<String, String>>,
    pods: HashMap<(String, String), BTreeMap<String, String>>,
}

impl metrics::Labels for CachedLabels {
    fn node(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.nodes.get(name).cloned()
    }
    fn pod(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

fn metrics_answer(
    api: &ApiServer,
    p: &metrics::MetricsPath,
    query: &str,
    accept: &str,
) -> Response<Body> {
    let labels = match query_param(query, "labelSelector").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match Selector::parse(&s) {
            Ok(sel) => Some(sel),
            Err(e) => {
                return status_response(&podd_api::status_failure(
                    400,
                    "BadRequest",
                    e.to_string(),
                ));
            }
        },
    };
    let fields = match metrics::FieldSelector::parse(
        &query_param(query, "fieldSelector").unwrap_or_default(),
    ) {
        Ok(f) => f,
        Err(st) => return status_response(&st),
    };
    let cached = match p {
        metrics::MetricsPath::Nodes | metrics::MetricsPath::Node(_) => CachedLabels {
            nodes: api
                .registry
                .cached::<Node>(None)
                .into_iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect(),
            pods: HashMap::new(),
        },
        metrics::MetricsPath::Pods(ns) => CachedLabels {
            nodes: HashMap::new(),
            pods: pod_labels(api, ns.as_deref()),
        },
        metrics::MetricsPath::Pod { namespace, .. } => CachedLabels {
            nodes: HashMap::new(),
            pods: pod_labels(api, Some(namespace)),
        },
    };
    let opts = metrics::ListOptions { labels, fields };
    match metrics::answer(&api.registry.usage, &cached, p, &opts) {
        Ok(v) if wants_table(accept) => {
            let include = query_param(query, "includeObject").unwrap_or_default();
            match crate::table::IncludeObject::parse(&include) {
                Some(i) => json(&metrics::to_table(&v, i)),
                None => status_response(&podd_api::status_failure(
                    400,
                    "BadRequest",
                    format!("includeObject must be None, Metadata or Object, not {include:?}"),
                )),
            }
        }
        Ok(v) => json(&v),
        Err(st) => status_response(&st),
    }
}

fn pod_labels(
    api: &ApiServer,
    ns: Option<&str>,
) -> HashMap<(String, String), BTreeMap<String, String>> {
    api.registry
        .cached::<Pod>(ns)
        .into_iter()
        .map(|p| {
            let key = (p.namespace().unwrap_or_default(), p.name_any());
            (key, p.labels().clone())
        })
        .collect()
}

fn json_bytes(code: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed());
    *r.status_mut() = code;
    if let Ok(ct) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    r
}

fn json(v: &Value) -> Response<Body> {
    json_bytes(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default().into(),
    )
}

fn status_response(st: &Status) -> Response<Body> {
    let code = st
        .code
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut v = serde_json::to_value(st).unwrap_or_default();
    v["kind"] = "Status".into();
    v["apiVersion"] = "v1".into();
    json_bytes(
        code,
        "application/json",
        serde_json::to_vec(&v).unwrap_or_default().into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_report_paths() {
        assert_eq!(
            usage_report_node(&Method::POST, "/apis/podd.dev/v1/nodes/n1/usage"),
            Some("n1")
        );
        assert_eq!(
            usage_report_node(&Method::POST, "/apis/podd.dev/v1/nodes/n1/usage/"),
            Some("n1")
        );
        assert_eq!(
            usage_report_node(&Method::GET, "/apis/podd.dev/v1/nodes/n1/usage"),
            None
        );
        assert_eq!(
            usage_report_node(&Method::POST, "/apis/podd.dev/v1/nodes//usage"),
            None
        );
        assert_eq!(
            usage_report_node(&Method::POST, "/apis/podd.dev/v1/nodes/a/b/usage"),
            None
        );
    }

    #[test]
    fn table_is_wanted_when_asked_first() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table(
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
        assert!(!wants_table(""));
    }
}

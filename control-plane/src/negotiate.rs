//! Response content negotiation, as kube-apiserver does it: the Accept header's media types
//! by q-value then order; `application/vnd.kubernetes.protobuf` gets Kubernetes' protobuf
//! (the `k8s\0` magic and a `runtime.Unknown` envelope) for every object, list and Status that
//! has a protobuf message, and watches get `application/vnd.kubernetes.protobuf;stream=watch`
//! (each event a 4-byte big-endian length and a `WatchEvent`). What has no protobuf form (a
//! Table, `/version`, an object with a field the message lacks) is answered in JSON when the
//! client accepts JSON too (kubectl sends `application/vnd.kubernetes.protobuf,
//! application/json`), and 406 Not Acceptable only when it accepts nothing the server can send.
//!
//! Routes build JSON; [`Negotiation::respond`] is the one place a response is re-encoded.

use crate::error::ApiError;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body as _, Frame};
use hyper::{Response, StatusCode};
use podd_api::protobuf;
use serde_json::Value;
use std::convert::Infallible;

type Body = crate::http::Body;

/// What one request accepts, and how its response is to be encoded.
#[derive(Debug, Clone, Default)]
pub struct Negotiation {
    /// Protobuf ranks above JSON in the Accept header.
    prefer_protobuf: bool,
    json_ok: bool,
    protobuf_ok: bool,
    /// The request is a watch whose objects have a protobuf message.
    protobuf_watch: bool,
}

/// One media range of an Accept header.
#[derive(Debug, PartialEq)]
struct Range<'a> {
    media: &'a str,
    /// Whether it names a conversion (`as=Table`, `as=PartialObjectMetadata`).
    converted: bool,
    q: f32,
}

fn ranges(accept: &str) -> Vec<Range<'_>> {
    let mut out: Vec<Range<'_>> = accept
        .split(',')
        .filter_map(|r| {
            let mut parts = r.split(';').map(str::trim);
            let media = parts.next().filter(|m| !m.is_empty())?;
            let (mut q, mut converted) = (1.0f32, false);
            for p in parts {
                match p.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                    Some(("q", v)) => q = v.parse().unwrap_or(1.0),
                    Some(("as", _)) => converted = true,
                    _ => {}
                }
            }
            (q > 0.0).then_some(Range {
                media,
                converted,
                q,
            })
        })
        .collect();
    // Stable: equal q-values keep the client's order.
    out.sort_by(|a, b| b.q.total_cmp(&a.q));
    out
}

fn is_json(r: &Range<'_>) -> bool {
    matches!(
        r.media.to_ascii_lowercase().as_str(),
        "application/json" | "*/*" | "application/*"
    )
}

fn is_protobuf(r: &Range<'_>) -> bool {
    !r.converted && r.media.eq_ignore_ascii_case(protobuf::CONTENT_TYPE)
}

impl Negotiation {
    /// From the request's Accept header; `protobuf_watch` when the request is a watch of a
    /// kind that has a protobuf message.
    pub fn new(accept: &str, protobuf_watch: bool) -> Negotiation {
        if accept.trim().is_empty() {
            return Negotiation {
                json_ok: true,
                ..Negotiation::default()
            };
        }
        let rs = ranges(accept);
        let json_ok = rs.iter().any(is_json);
        let protobuf_ok = rs.iter().any(is_protobuf);
        let prefer_protobuf = rs
            .iter()
            .find(|r| is_json(r) || is_protobuf(r))
            .is_some_and(is_protobuf);
        Negotiation {
            prefer_protobuf,
            json_ok,
            protobuf_ok,
            protobuf_watch: protobuf_watch && prefer_protobuf,
        }
    }

    /// 406 when the client accepts neither JSON nor protobuf.
    pub fn check(&self, accept: &str) -> Result<(), ApiError> {
        if self.json_ok || self.protobuf_ok {
            return Ok(());
        }
        Err(ApiError::NotAcceptable(format!(
            "the request accepts only {accept:?}; the server sends application/json and {}",
            protobuf::CONTENT_TYPE
        )))
    }

    /// Whether responses are sent in protobuf when they can be.
    pub fn prefers_protobuf(&self) -> bool {
        self.prefer_protobuf
    }

    /// Re-encodes a JSON response as the client prefers: whole bodies into one protobuf
    /// object, a watch stream into length-prefixed protobuf events. Other responses (text,
    /// upgrades, JSON the client prefers) pass through.
    pub async fn respond(&self, resp: Response<Body>) -> Response<Body> {
        let is_json = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        if !is_json || (!self.prefer_protobuf && self.json_ok) {
            return resp;
        }
        let whole = resp.body().size_hint().exact().is_some();
        if !whole {
            return if self.protobuf_watch && resp.status() == StatusCode::OK {
                protobuf_watch(resp)
            } else {
                resp
            };
        }
        let (mut parts, body) = resp.into_parts();
        let Ok(bytes) = body.collect().await.map(|c| c.to_bytes());
        let encoded = serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|v| protobuf::encode(&v).map_err(|e| e.to_string()));
        match encoded {
            Ok(pb) => {
                parts.headers.insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(protobuf::CONTENT_TYPE),
                );
                parts.headers.remove(hyper::header::CONTENT_LENGTH);
                Response::from_parts(parts, Full::new(Bytes::from(pb)).boxed())
            }
            Err(why) if self.json_ok => {
                tracing::debug!(why, "answering in JSON: the response has no protobuf form");
                Response::from_parts(parts, Full::new(bytes).boxed())
            }
            Err(why) => {
                let e = ApiError::NotAcceptable(format!(
                    "the response has no {} form ({why}); accept application/json",
                    protobuf::CONTENT_TYPE
                ));
                let body = serde_json::to_vec(&e.to_status_json()).unwrap_or_default();
                Response::builder()
                    .status(StatusCode::NOT_ACCEPTABLE)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)).boxed())
                    .expect("static response parts are valid")
            }
        }
    }
}

/// One JSON watch line (`{"type":..,"object":..}`) as a protobuf watch frame.
pub fn watch_line_to_frame(line: &[u8]) -> Result<Vec<u8>, String> {
    let ev: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let ty = ev["type"].as_str().unwrap_or_default();
    protobuf::encode_watch_frame(ty, &ev["object"]).map_err(|e| e.to_string())
}

/// A JSON watch stream (one event per line) re-framed as a protobuf watch.
fn protobuf_watch(resp: Response<Body>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let frames = body
        .into_data_stream()
        .scan(BytesMut::new(), |buf, chunk| {
            let Ok(chunk) = chunk;
            buf.extend_from_slice(&chunk);
            let mut out = BytesMut::new();
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(i + 1);
                match watch_line_to_frame(&line[..i]) {
                    Ok(f) => out.extend_from_slice(&f),
                    Err(why) => tracing::warn!(why, "a watch event has no protobuf form; skipped"),
                }
            }
            futures::future::ready(Some(out.freeze()))
        })
        .filter(|b| futures::future::ready(!b.is_empty()))
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    parts.headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(protobuf::WATCH_CONTENT_TYPE),
    );
    Response::from_parts(parts, BodyExt::boxed(StreamBody::new(frames)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_rank_by_q_then_order() {
        let kubectl = "application/vnd.kubernetes.protobuf,application/json";
        let n = Negotiation::new(kubectl, true);
        assert!(n.prefer_protobuf && n.json_ok && n.protobuf_watch);
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(!Negotiation::new(table, true).prefer_protobuf);
        let n = Negotiation::new(
            "application/json;q=0.5, application/vnd.kubernetes.protobuf",
            false,
        );
        assert!(n.prefer_protobuf && !n.protobuf_watch);
        assert!(
            !Negotiation::new(
                "application/json, application/vnd.kubernetes.protobuf",
                true
            )
            .prefer_protobuf
        );
        assert!(!Negotiation::new("", true).prefer_protobuf);
        assert!(!Negotiation::new("*/*", true).prefer_protobuf);
        // A protobuf Table is not served: JSON it is.
        let n = Negotiation::new(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json",
            true,
        );
        assert!(!n.prefer_protobuf);
        // q=0 refuses.
        let n = Negotiation::new(
            "application/vnd.kubernetes.protobuf;q=0, application/json",
            true,
        );
        assert!(!n.prefer_protobuf && !n.protobuf_ok);
    }

    #[test]
    fn nothing_servable_is_406() {
        let n = Negotiation::new("application/yaml", false);
        assert!(matches!(
            n.check("application/yaml"),
            Err(ApiError::NotAcceptable(_))
        ));
        assert!(
            Negotiation::new(protobuf::CONTENT_TYPE, false)
                .check("")
                .is_ok()
        );
        assert!(Negotiation::new("", false).check("").is_ok());
    }

    fn json_resp(v: &Value) -> Response<Body> {
        Response::builder()
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap())).boxed())
            .unwrap()
    }

    async fn body(r: Response<Body>) -> (String, Bytes) {
        let ct = r.headers()[hyper::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let Ok(b) = r.into_body().collect().await.map(|c| c.to_bytes());
        (ct, b)
    }

    #[tokio::test]
    async fn objects_are_encoded_and_what_cannot_be_stays_json() {
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let n = Negotiation::new(
            "application/vnd.kubernetes.protobuf, application/json",
            false,
        );
        let (ct, b) = body(n.respond(json_resp(&pod)).await).await;
        assert_eq!(ct, protobuf::CONTENT_TYPE);
        assert_eq!(protobuf::decode(&b).unwrap(), pod);
        let table = serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "Table"});
        let (ct, b) = body(n.respond(json_resp(&table)).await).await;
        assert_eq!(ct, "application/json");
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap(), table);
        // Protobuf only, and no protobuf form: 406.
        let n = Negotiation::new(protobuf::CONTENT_TYPE, false);
        let r = n.respond(json_resp(&table)).await;
        assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    }

    #[tokio::test]
    async fn watch_streams_are_reframed() {
        let lines = [
            "{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\"}}}\n{\"type\":\"MOD",
            "IFIED\",\"object\":{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"b\"}}}\n",
        ];
        let chunks = futures::stream::iter(
            lines.map(|l| Ok::<_, Infallible>(Frame::data(Bytes::from_static(l.as_bytes())))),
        );
        let resp = Response::builder()
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(BodyExt::boxed(StreamBody::new(chunks)))
            .unwrap();
        let n = Negotiation::new("application/vnd.kubernetes.protobuf,application/json", true);
        let (ct, b) = body(n.respond(resp).await).await;
        assert_eq!(ct, protobuf::WATCH_CONTENT_TYPE);
        let mut rest = &b[..];
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let (ty, obj) = protobuf::decode_watch_event(&rest[4..4 + len]).unwrap();
            seen.push((ty, obj["metadata"]["name"].as_str().unwrap().to_string()));
            rest = &rest[4 + len..];
        }
        assert_eq!(
            seen,
            [
                ("ADDED".to_string(), "a".to_string()),
                ("MODIFIED".into(), "b".into())
            ]
        );
    }
}

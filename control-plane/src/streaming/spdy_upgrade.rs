//! The streaming subresources over a plain HTTP/1.1 upgrade to SPDY/3.1, kubectl's older
//! transport (and its fallback when the WebSocket upgrade fails): the request carries
//! `Connection: Upgrade`, `Upgrade: SPDY/3.1` and one `X-Stream-Protocol-Version` per
//! protocol the client speaks, in its order of preference. The server answers 101 with the
//! first of them it speaks in `X-Stream-Protocol-Version` (`v4.channel.k8s.io` for exec and
//! attach, `portforward.k8s.io` for port-forward), or 403 listing its own in
//! `X-Accepted-Stream-Protocol-Versions`, and the connection becomes one SPDY session
//! ([`super::spdy_wire::over_raw`]) served by [`super::remotecommand`] or
//! [`super::portforward`], which reach the pod's agent exactly as the WebSocket path does.

use super::{portforward, remotecommand, spdy_wire};
use crate::agent_proxy::AgentLink;
use crate::error::ApiError;
use crate::http::Body;
use crate::registry::Registry;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderMap, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use std::sync::Arc;

/// The `Upgrade` token of a SPDY session.
pub const UPGRADE_PROTOCOL: &str = "SPDY/3.1";

/// The header naming the stream protocols the client offers, and the one chosen.
pub const PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";

/// The header listing the server's protocols when none of the client's is spoken.
pub const ACCEPTED_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";

fn tokens<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether the request asks to upgrade to SPDY/3.1.
pub fn is_spdy_upgrade(headers: &HeaderMap) -> bool {
    tokens(headers, CONNECTION.as_str()).any(|t| t.eq_ignore_ascii_case("upgrade"))
        && tokens(headers, UPGRADE.as_str()).any(|t| t.eq_ignore_ascii_case(UPGRADE_PROTOCOL))
}

/// The stream protocol to speak: the first the client offers that is one of `ours`.
pub fn negotiate(headers: &HeaderMap, ours: &[&'static str]) -> Option<&'static str> {
    tokens(headers, PROTOCOL_VERSION)
        .find_map(|offered| ours.iter().copied().find(|p| *p == offered))
}

/// The 101 answer switching to SPDY/3.1 with stream protocol `protocol`.
pub fn accept(protocol: &'static str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, HeaderValue::from_static("Upgrade"))
        .header(UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL))
        .header(PROTOCOL_VERSION, HeaderValue::from_static(protocol))
        .body(Empty::new().boxed())
        .expect("static response parts are valid")
}

/// The 403 answer when the client offers none of `ours`, listing them as Kubernetes does.
pub fn refuse(headers: &HeaderMap, ours: &[&'static str]) -> Response<Body> {
    let offered: Vec<&str> = tokens(headers, PROTOCOL_VERSION).collect();
    let status = ApiError::Forbidden(format!(
        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {ours:?}"
    ))
    .to_status_json();
    let mut resp = Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header(CONTENT_TYPE, "application/json");
    for p in ours {
        resp = resp.header(ACCEPTED_PROTOCOL_VERSIONS, HeaderValue::from_static(p));
    }
    resp.body(Full::new(status.to_string().into()).boxed())
        .expect("static response parts are valid")
}

/// Serves `pods/{name}/{exec|attach|portforward}` upgraded to SPDY/3.1: answers 101 with the
/// negotiated stream protocol and runs the session, in a task, against the pod's agent.
pub fn serve(
    req: Request<Incoming>,
    registry: Arc<Registry>,
    agents: Arc<AgentLink>,
    ns: String,
    name: String,
    sub: &str,
    query: String,
) -> Response<Body> {
    let ours: &[&'static str] = if sub == "portforward" {
        &[portforward::SPDY_PROTOCOL]
    } else {
        &remotecommand::PROTOCOLS
    };
    let Some(protocol) = negotiate(req.headers(), ours) else {
        return refuse(req.headers(), ours);
    };
    let sub = sub.to_string();
    tokio::spawn(async move {
        let io = match hyper::upgrade::on(req).await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, %sub, "the SPDY upgrade failed");
                return;
            }
        };
        let wire = spdy_wire::over_raw(io);
        if sub == "portforward" {
            portforward::serve(wire, super::port_connector(registry, agents, ns, name)).await;
            return;
        }
        let wanted = remotecommand::Wanted::from_query(&query);
        let argv = super::command_argv(&query);
        let agent = async {
            crate::agent_proxy::upgrade(&registry, &agents, &ns, &name, &sub, &query)
                .await
                .map_err(|e| e.to_string())
        };
        remotecommand::serve(wire, wanted, argv, agent).await;
    });
    accept(protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn kubectls_spdy_upgrade_is_recognised_and_negotiated() {
        // As kubectl's SPDY executor sends it: one header line per protocol, best first.
        let h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v3.channel.k8s.io"),
            ("x-stream-protocol-version", "v2.channel.k8s.io"),
            ("x-stream-protocol-version", "channel.k8s.io"),
        ]);
        assert!(is_spdy_upgrade(&h));
        assert_eq!(
            negotiate(&h, &remotecommand::PROTOCOLS),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(&h, &[portforward::SPDY_PROTOCOL]), None);
        let r = accept("v4.channel.k8s.io");
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(r.headers()[UPGRADE], "SPDY/3.1");
        assert_eq!(r.headers()[CONNECTION], "Upgrade");
        assert_eq!(r.headers()[PROTOCOL_VERSION], "v4.channel.k8s.io");

        let pf = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "spdy/3.1"),
            ("x-stream-protocol-version", "portforward.k8s.io"),
        ]);
        assert!(is_spdy_upgrade(&pf));
        assert_eq!(
            negotiate(&pf, &[portforward::SPDY_PROTOCOL]),
            Some("portforward.k8s.io")
        );
    }

    #[test]
    fn other_upgrades_and_unknown_protocols_are_not_taken() {
        assert!(!is_spdy_upgrade(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_spdy_upgrade(&headers(&[("upgrade", "SPDY/3.1")])));
        let old = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            (
                "x-stream-protocol-version",
                "v2.channel.k8s.io, channel.k8s.io",
            ),
        ]);
        assert_eq!(negotiate(&old, &remotecommand::PROTOCOLS), None);
        let r = refuse(&old, &remotecommand::PROTOCOLS);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[ACCEPTED_PROTOCOL_VERSIONS], "v4.channel.k8s.io");
        assert_eq!(
            negotiate(&HeaderMap::new(), &remotecommand::PROTOCOLS),
            None
        );
    }
}

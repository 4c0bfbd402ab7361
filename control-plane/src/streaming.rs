//! The streaming subresources kubectl reaches over WebSocket: `pods/exec` and `pods/attach`
//! (channel protocol `v5.channel.k8s.io`, and `v4.channel.k8s.io` for older clients) and
//! `pods/portforward` (SPDY/3.1 tunnelled over a WebSocket, [`portforward`]); and the same
//! three over kubectl's older transport, a plain upgrade to SPDY/3.1 ([`spdy_upgrade`]).
//!
//! Exec and attach: binary messages whose first byte is the channel (0 stdin, 1 stdout,
//! 2 stderr, 3 the final Status, 4 terminal resize; in v5, `[255, N]` closes the client's
//! stream N). The command's exit code travels in the Status on channel 3, which kubectl
//! turns into its own exit code.
//!
//! The API server does not run anything: it opens a streaming connection to the agent of
//! the pod's node (`POST /pods/{uid}/exec|attach|portforward` with `Upgrade: podd-stream`,
//! over the agent link's mTLS or the local socket, see [`crate::agent_proxy::upgrade`]) and
//! relays. On that hop exec and attach speak [`frames`]; port-forward is a plain byte stream
//! per forwarded connection. Stdin bytes are forwarded as they arrive and output as it is
//! produced, so interactive shells (`kubectl exec -it`) work.

pub mod frames;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod spdy_upgrade;
pub mod spdy_wire;

use crate::agent_proxy::AgentLink;
use crate::error::ApiError;
use crate::http::Body;
use crate::registry::Registry;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The channel protocols served for exec and attach, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Whether the request asks to upgrade to a WebSocket.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    has(CONNECTION, "upgrade") && has(UPGRADE, "websocket")
}

/// The protocol to speak: the first of `ours` the client offers.
pub fn negotiate(headers: &HeaderMap, ours: &[&'static str]) -> Option<&'static str> {
    let offered: Vec<String> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .collect();
    ours.iter()
        .copied()
        .find(|p| offered.iter().any(|o| o == p))
}

/// The 101 answer accepting the upgrade with `protocol`; None without a Sec-WebSocket-Key.
pub fn accept(headers: &HeaderMap, protocol: &str) -> Option<Response<Body>> {
    let key = headers.get(SEC_WEBSOCKET_KEY)?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, HeaderValue::from_static("Upgrade"))
        .header(UPGRADE, HeaderValue::from_static("websocket"))
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .header(SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Empty::new().boxed())
        .ok()
}

/// The Status sent on the error channel when the command ends, as kubelet words it.
pub fn exit_status(exit_code: i32, argv: &[String]) -> serde_json::Value {
    if exit_code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {argv:?}, exit code {exit_code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]}
    })
}

/// The Status sent on the error channel when the command could not run at all.
pub fn failure_status(message: &str) -> serde_json::Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

/// The Status for the agent's end frame (`{"exitCode":N}` or `{"error":"..."}`).
pub fn end_status(end: &[u8], argv: &[String]) -> serde_json::Value {
    match serde_json::from_slice::<frames::End>(end) {
        Ok(frames::End { error: Some(e), .. }) => failure_status(&e),
        Ok(frames::End {
            exit_code: Some(c), ..
        }) => exit_status(c, argv),
        Ok(_) => exit_status(0, argv),
        Err(e) => failure_status(&format!("the agent's end frame is not JSON: {e}")),
    }
}

/// The command of an exec request: its `command` query parameters, in order.
pub(crate) fn command_argv(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| crate::http::percent_decode(k) == "command")
        .map(|(_, v)| crate::http::percent_decode(v))
        .collect()
}

/// A byte stream to a port of the pod, opened through its node's agent.
pub(crate) type PodConnection = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// Opens connections to ports of pod `ns/name` (for [`portforward::serve`]).
pub(crate) fn port_connector(
    registry: Arc<Registry>,
    agents: Arc<AgentLink>,
    ns: String,
    name: String,
) -> impl Fn(u16) -> BoxFuture<'static, Result<PodConnection, String>> + Send + Sync + 'static {
    move |port: u16| {
        let (registry, agents, ns, name) =
            (registry.clone(), agents.clone(), ns.clone(), name.clone());
        Box::pin(async move {
            crate::agent_proxy::upgrade(
                &registry,
                &agents,
                &ns,
                &name,
                "portforward",
                &format!("port={port}"),
            )
            .await
            .map_err(|e| e.to_string())
        })
    }
}

/// Serves `pods/{name}/{exec|attach|portforward}` upgraded to a WebSocket: answers 101 with
/// the negotiated protocol and relays, in a task, between kubectl and the pod's agent.
pub fn serve_websocket(
    req: Request<Incoming>,
    registry: Arc<Registry>,
    agents: Arc<AgentLink>,
    ns: String,
    name: String,
    sub: &str,
    query: String,
) -> Result<Response<Body>, ApiError> {
    let ours: &[&'static str] = if sub == "portforward" {
        &[portforward::PROTOCOL]
    } else {
        &PROTOCOLS
    };
    let protocol = negotiate(req.headers(), ours).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "pods/{sub} speaks the WebSocket protocols {}; the client offered none of them",
            ours.join(", ")
        ))
    })?;
    let resp = accept(req.headers(), protocol).ok_or_else(|| {
        ApiError::BadRequest("the WebSocket upgrade has no Sec-WebSocket-Key".into())
    })?;
    let sub = sub.to_string();
    tokio::spawn(async move {
        let io = match hyper::upgrade::on(req).await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, %sub, "the WebSocket upgrade failed");
                return;
            }
        };
        if sub == "portforward" {
            let wire = spdy_wire::over_websocket(io).await;
            portforward::serve(wire, port_connector(registry, agents, ns, name)).await;
            return;
        }
        let argv = command_argv(&query);
        let agent = async {
            crate::agent_proxy::upgrade(&registry, &agents, &ns, &name, &sub, &query)
                .await
                .map_err(|e| e.to_string())
        };
        serve_channels(io, argv, agent).await;
    });
    Ok(resp)
}

/// Relays one exec or attach session between kubectl's WebSocket (`io`) and the agent's
/// stream (`agent`, in [`frames`]): stdin and resizes up as they come, output down as it
/// comes, then the final Status and a normal close.
pub async fn serve_channels<IO, A, F>(io: IO, argv: Vec<String>, agent: F)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: std::future::Future<Output = Result<A, String>>,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let agent = match agent.await {
        Ok(a) => a,
        Err(e) => {
            let _ = send(
                &mut sink,
                ERROR,
                failure_status(&e).to_string().into_bytes(),
            )
            .await;
            let _ = sink.send(normal_close()).await;
            return;
        }
    };
    let (mut ar, mut aw) = tokio::io::split(agent);
    // Up: kubectl → agent. Ends when kubectl closes; the agent then sees the end of its
    // connection and stops the command (an interactive shell gets a hangup).
    let up = tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let frame = match data.split_first() {
                Some((&STDIN, rest)) => frames::encode(frames::STDIN, rest),
                Some((&RESIZE, rest)) => frames::encode(frames::RESIZE, rest),
                Some((&CLOSE, [STDIN, ..])) => frames::encode(frames::CLOSE, &[frames::STDIN]),
                _ => continue,
            };
            if aw.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = aw.shutdown().await;
    });
    // Down: agent → kubectl, until the end frame.
    let status = loop {
        match frames::read(&mut ar).await {
            Ok(Some((frames::STDOUT, data))) => {
                if send(&mut sink, STDOUT, data).await.is_err() {
                    up.abort();
                    return;
                }
            }
            Ok(Some((frames::STDERR, data))) => {
                if send(&mut sink, STDERR, data).await.is_err() {
                    up.abort();
                    return;
                }
            }
            Ok(Some((frames::STATUS, data))) => break end_status(&data, &argv),
            Ok(Some(_)) => {}
            Ok(None) => break failure_status("the node's agent ended the stream without a status"),
            Err(e) => break failure_status(&format!("reading from the node's agent: {e}")),
        }
    };
    let _ = send(&mut sink, ERROR, status.to_string().into_bytes()).await;
    let _ = sink.send(normal_close()).await;
    // Wait (bounded) for the client's close, so it reads everything before the socket goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), up).await;
}

/// A close frame with status 1000 (kubectl reports a close without a status as an error).
fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

async fn send<S>(sink: &mut S, channel: u8, mut data: Vec<u8>) -> Result<(), S::Error>
where
    S: futures::Sink<Message> + Unpin,
{
    data.insert(0, channel);
    sink.send(Message::Binary(data.into())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io, channel.k8s.io"),
        );
        h.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert!(is_websocket_upgrade(&h));
        assert_eq!(negotiate(&h, &PROTOCOLS), Some("v5.channel.k8s.io"));
        let r = accept(&h, "v5.channel.k8s.io").unwrap();
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        // RFC 6455's example key and answer.
        assert_eq!(
            r.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("channel.k8s.io"),
        );
        assert_eq!(negotiate(&h, &PROTOCOLS), None);
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("SPDY/3.1+portforward.k8s.io"),
        );
        assert_eq!(
            negotiate(&h, &[portforward::PROTOCOL]),
            Some(portforward::PROTOCOL)
        );
    }

    #[tokio::test]
    async fn a_session_streams_stdin_output_resize_and_the_exit_code() {
        let (server, client) = tokio::io::duplex(1 << 16);
        let (agent_here, mut agent_there) = tokio::io::duplex(1 << 16);
        let argv = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let srv = tokio::spawn(serve_channels(server, argv, async { Ok(agent_here) }));
        let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        // A fake agent: echoes each stdin frame at once (interactive), reports resizes on
        // stderr, and ends with exit code 3 when stdin closes.
        let fake = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((ch, p)) = frames::read(&mut agent_there).await.unwrap() {
                seen.push(ch);
                let out = match ch {
                    frames::STDIN => frames::encode(frames::STDOUT, &p),
                    frames::RESIZE => frames::encode(frames::STDERR, &p),
                    frames::CLOSE => frames::encode(frames::STATUS, br#"{"exitCode":3}"#),
                    _ => continue,
                };
                agent_there.write_all(&out).await.unwrap();
                if ch == frames::CLOSE {
                    break;
                }
            }
            let mut rest = Vec::new();
            let _ = agent_there.read_to_end(&mut rest).await;
            seen
        });
        c.send(Message::Binary(b"\x00hello".to_vec().into()))
            .await
            .unwrap();
        // The echo comes back before stdin is closed: the session is interactive.
        let Some(Ok(Message::Binary(b))) = c.next().await else {
            panic!("no echo")
        };
        assert_eq!(&b[..], b"\x01hello");
        c.send(Message::Binary(
            br#"{"Width":80,"Height":24}"#
                .iter()
                .fold(vec![RESIZE], |mut v, b| {
                    v.push(*b);
                    v
                })
                .into(),
        ))
        .await
        .unwrap();
        c.send(Message::Binary(vec![CLOSE, STDIN].into()))
            .await
            .unwrap();
        let (mut err, mut status) = (Vec::new(), None);
        while let Some(Ok(m)) = c.next().await {
            let Message::Binary(b) = m else { break };
            match b[0] {
                STDERR => err.extend_from_slice(&b[1..]),
                ERROR => {
                    status = Some(serde_json::from_slice::<serde_json::Value>(&b[1..]).unwrap())
                }
                _ => {}
            }
        }
        drop(c);
        srv.await.unwrap();
        assert_eq!(
            fake.await.unwrap(),
            [frames::STDIN, frames::RESIZE, frames::CLOSE]
        );
        assert_eq!(err, br#"{"Width":80,"Height":24}"#);
        let status = status.unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
    }

    #[tokio::test]
    async fn an_unreachable_agent_is_a_failure_status() {
        let (server, client) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(serve_channels(server, vec!["true".into()], async {
            Err::<tokio::io::DuplexStream, _>("node is gone".to_string())
        }));
        let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let Some(Ok(Message::Binary(b))) = c.next().await else {
            panic!("no status")
        };
        assert_eq!(b[0], ERROR);
        assert!(String::from_utf8_lossy(&b[1..]).contains("node is gone"));
        drop(c);
        srv.await.unwrap();
    }
}

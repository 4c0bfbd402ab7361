//! `pods/exec` over the WebSocket protocol kubectl speaks (`v5.channel.k8s.io`, and
//! `v4.channel.k8s.io` for older clients): binary messages whose first byte is the channel
//! (0 stdin, 1 stdout, 2 stderr, 3 the final Status, 4 terminal resize; in v5, `[255, N]`
//! closes the client's stream N). The command's exit code travels in the Status on channel 3,
//! which kubectl turns into its own exit code.
//!
//! The node runs the command to completion (the agent's exec is not interactive): stdin, when
//! asked for, is read whole first (until the client closes it), then the output is sent. That
//! is what `kubectl exec POD -- CMD`, `echo x | kubectl exec -i` and `kubectl cp` need;
//! interactive terminals (`-it`) are not served yet.

use crate::http::Body;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The channel protocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The most stdin read before the command runs (as a request body's limit, bounded).
pub const MAX_STDIN: usize = 64 << 20;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// What the node's command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// Reads the agent's exec answer: `{"exitCode", "stdout", "stderr"}`, with the bytes in
/// `stdoutBase64`/`stderrBase64` when the agent sends them (binary output such as `kubectl
/// cp`'s tar stream).
pub fn exec_output_from_agent(body: &[u8]) -> Result<ExecOutput, String> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the agent's exec answer is not JSON: {e}"))?;
    let bytes = |b64: &str, text: &str| -> Result<Vec<u8>, String> {
        match v.get(b64).and_then(serde_json::Value::as_str) {
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("the agent's {b64} is not base64: {e}")),
            None => Ok(v
                .get(text)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .as_bytes()
                .to_vec()),
        }
    };
    Ok(ExecOutput {
        stdout: bytes("stdoutBase64", "stdout")?,
        stderr: bytes("stderrBase64", "stderr")?,
        exit_code: v
            .get("exitCode")
            .and_then(serde_json::Value::as_i64)
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1),
    })
}

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

/// The channel protocol to speak: the first of ours the client offers.
pub fn negotiate(headers: &HeaderMap) -> Option<&'static str> {
    let offered: Vec<String> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .collect();
    PROTOCOLS
        .into_iter()
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

/// Serves one exec session on an upgraded connection: reads stdin (when `stdin`), runs the
/// command with it through `run`, sends its output and final Status, and closes.
pub async fn serve_exec<IO, F, Fut>(io: IO, stdin: bool, argv: Vec<String>, run: F)
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<ExecOutput, String>>,
{
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let input = if stdin {
        match read_stdin(&mut ws).await {
            Ok(b) => b,
            Err(e) => {
                let _ = send(&mut ws, ERROR, failure_status(&e).to_string().into_bytes()).await;
                let _ = ws.send(normal_close()).await;
                return;
            }
        }
    } else {
        Vec::new()
    };
    let status = match run(input).await {
        Ok(out) => {
            for (channel, data) in [(STDOUT, out.stdout), (STDERR, out.stderr)] {
                for chunk in data.chunks(32 << 10) {
                    if send(&mut ws, channel, chunk.to_vec()).await.is_err() {
                        return;
                    }
                }
            }
            exit_status(out.exit_code, &argv)
        }
        Err(e) => failure_status(&e),
    };
    let _ = send(&mut ws, ERROR, status.to_string().into_bytes()).await;
    let _ = ws.send(normal_close()).await;
    // Wait (bounded) for the client's close, so it reads everything before the socket goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
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

async fn send<IO: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<IO>,
    channel: u8,
    mut data: Vec<u8>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    data.insert(0, channel);
    ws.send(Message::Binary(data.into())).await
}

/// Reads the client's stdin until it closes it (`[255, 0]` in v5) or the connection.
async fn read_stdin<IO: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<IO>,
) -> Result<Vec<u8>, String> {
    let mut input = Vec::new();
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| format!("reading stdin: {e}"))?;
        let data = match msg {
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        match data.split_first() {
            Some((&STDIN, rest)) => {
                if input.len() + rest.len() > MAX_STDIN {
                    return Err(format!(
                        "stdin is larger than {} MiB; copy large files another way",
                        MAX_STDIN >> 20
                    ));
                }
                input.extend_from_slice(rest);
            }
            Some((&CLOSE, [STDIN, ..])) => break,
            _ => {}
        }
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(negotiate(&h), Some("v5.channel.k8s.io"));
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
        assert_eq!(negotiate(&h), None);
    }

    #[tokio::test]
    async fn a_session_carries_stdin_output_and_the_exit_code() {
        let (server, client) = tokio::io::duplex(1 << 16);
        let argv = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let srv = tokio::spawn(serve_exec(server, true, argv, |stdin| async move {
            Ok(ExecOutput {
                stdout: stdin,
                stderr: b"warn".to_vec(),
                exit_code: 3,
            })
        }));
        let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        c.send(Message::Binary(b"\x00hello ".to_vec().into()))
            .await
            .unwrap();
        c.send(Message::Binary(b"\x00world".to_vec().into()))
            .await
            .unwrap();
        c.send(Message::Binary(vec![CLOSE, STDIN].into()))
            .await
            .unwrap();
        let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), None);
        while let Some(Ok(m)) = c.next().await {
            let Message::Binary(b) = m else { break };
            match b[0] {
                STDOUT => out.extend_from_slice(&b[1..]),
                STDERR => err.extend_from_slice(&b[1..]),
                ERROR => {
                    status = Some(serde_json::from_slice::<serde_json::Value>(&b[1..]).unwrap())
                }
                _ => {}
            }
        }
        drop(c);
        srv.await.unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(err, b"warn");
        let status = status.unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
    }
}

//! `pods/portforward`: a SPDY/3.1 session (see [`super::spdy`]), which kubectl 1.32 tunnels
//! over a WebSocket by default (subprotocol `SPDY/3.1+portforward.k8s.io`) and older kubectl,
//! or kubectl with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, speaks raw on a connection
//! upgraded to `SPDY/3.1` (protocol `portforward.k8s.io`); [`super::spdy_wire`] carries both.
//!
//! For every local connection kubectl opens two SPDY streams with the headers `streamtype`
//! (`error`, then `data`), `port` and `requestid`. The server answers each SYN_STREAM with a
//! SYN_REPLY, opens a byte stream to that port of the pod (through `connect`, the agent
//! hop), and relays: the pod's bytes as DATA frames on the data stream, kubectl's DATA frames
//! to the pod. When the pod's side ends, the data stream is finished (FIN) and so is the
//! error stream, after a message on it if the connection failed; kubectl waits for that.
//! PINGs are echoed. Flow control is not enforced (kubectl's SPDY library does not either).

use super::spdy::{self, Frame};
use super::spdy_wire::Wire;
use std::collections::HashMap;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The WebSocket subprotocol kubectl offers for port forwarding.
pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// The `X-Stream-Protocol-Version` of port forwarding over a raw SPDY upgrade.
pub const SPDY_PROTOCOL: &str = "portforward.k8s.io";

/// The most bytes put in one DATA frame.
const CHUNK: usize = 32 << 10;

#[derive(Default)]
struct Request {
    error: Option<u32>,
    data: Option<(u32, u16)>,
    started: bool,
}

/// Serves one port-forward session on `wire` until kubectl goes away.
/// `connect(port)` opens a byte stream to the pod's `port`.
pub async fn serve<C, Fut, S>(wire: Wire, connect: C)
where
    C: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, String>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Wire {
        mut frames,
        out: out_tx,
        writer,
    } = wire;
    let mut requests: HashMap<String, Request> = HashMap::new();
    let mut to_pod: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut relays: HashMap<u32, tokio::task::AbortHandle> = HashMap::new();
    let connect = std::sync::Arc::new(connect);
    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: bad SPDY from the client");
                let _ = out_tx
                    .send(Frame::GoAway {
                        last_stream: 0,
                        status: 1,
                    })
                    .await;
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => {
                let _ = out_tx
                    .send(Frame::SynReply {
                        stream,
                        headers: Vec::new(),
                        fin: false,
                    })
                    .await;
                tracing::debug!(stream, ?headers, "port-forward: new stream");
                let kind = spdy::header(&headers, "streamtype").unwrap_or_default();
                let id = spdy::header(&headers, "requestid")
                    .unwrap_or_default()
                    .to_string();
                let port = spdy::header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                let req = requests.entry(id.clone()).or_default();
                match (kind, port) {
                    ("error", _) => req.error = Some(stream),
                    ("data", Some(port)) if port > 0 => req.data = Some((stream, port)),
                    _ => {
                        let _ = out_tx
                            .send(Frame::RstStream {
                                stream,
                                status: spdy::RST_PROTOCOL_ERROR,
                            })
                            .await;
                        continue;
                    }
                }
                if let (Some(error), Some((data, port)), false) = (req.error, req.data, req.started)
                {
                    req.started = true;
                    let (tx, rx) = mpsc::channel(64);
                    to_pod.insert(data, tx);
                    let task = tokio::spawn(relay(
                        connect.clone(),
                        port,
                        data,
                        error,
                        rx,
                        out_tx.clone(),
                    ));
                    relays.insert(data, task.abort_handle());
                    requests.remove(&id);
                }
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = to_pod.get(&stream) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        to_pod.remove(&stream);
                    }
                    if fin {
                        // Dropping the sender half-closes the pod connection.
                        to_pod.remove(&stream);
                    }
                }
            }
            Frame::RstStream { stream, .. } => {
                to_pod.remove(&stream);
                if let Some(t) = relays.remove(&stream) {
                    t.abort();
                }
            }
            Frame::Ping(id) => {
                let _ = out_tx.send(Frame::Ping(id)).await;
            }
            Frame::GoAway { .. } => break,
            _ => {}
        }
    }
    tracing::debug!("port-forward: session ended");
    for (_, t) in relays {
        t.abort();
    }
    drop(to_pod);
    drop(out_tx);
    let _ = writer.await;
}

/// One forwarded connection: the pod's bytes to the data stream, kubectl's to the pod.
async fn relay<C, Fut, S>(
    connect: std::sync::Arc<C>,
    port: u16,
    data: u32,
    error: u32,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Frame>,
) where
    C: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, String>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let finish = |stream: u32| Frame::Data {
        stream,
        fin: true,
        data: Vec::new(),
    };
    let conn = match connect(port).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(port, error = %e, "port-forward: connecting to the pod failed");
            let msg = format!("error forwarding port {port} to the pod: {e}");
            let _ = out
                .send(Frame::Data {
                    stream: error,
                    fin: false,
                    data: msg.into_bytes(),
                })
                .await;
            let _ = out.send(finish(data)).await;
            let _ = out.send(finish(error)).await;
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let upstream = async move {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let f = Frame::Data {
                        stream: data,
                        fin: false,
                        data: buf[..n].to_vec(),
                    };
                    if out.send(f).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    // The pod's end decides: once it closes, the streams finish (kubectl then closes its
    // local connection); the upload half may still be running and is dropped.
    tokio::pin!(upstream);
    tokio::select! {
        _ = downstream => {}
        _ = &mut upstream => {
            // kubectl finished sending; keep relaying the pod's answer to the end.
            let mut buf = vec![0u8; CHUNK];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let f = Frame::Data { stream: data, fin: false, data: buf[..n].to_vec() };
                        if out.send(f).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = out.send(finish(data)).await;
    let _ = out.send(finish(error)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming::spdy::Codec;
    use crate::streaming::spdy_wire::over_websocket;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn next_frames(
        ws: &mut WebSocketStream<tokio::io::DuplexStream>,
        codec: &mut Codec,
        until: impl Fn(&[Frame]) -> bool,
    ) -> Vec<Frame> {
        let mut got = Vec::new();
        while !until(&got) {
            let Some(Ok(Message::Binary(b))) = ws.next().await else {
                break;
            };
            codec.push(&b);
            while let Some(f) = codec.next_frame().unwrap() {
                got.push(f);
            }
        }
        got
    }

    /// The "pod": an echo service on port 8080 that upper-cases, refusing other ports.
    async fn upper_case_echo_on_8080(port: u16) -> Result<tokio::io::DuplexStream, String> {
        if port != 8080 {
            return Err(format!("connection refused on {port}"));
        }
        let (a, mut b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = b.read_to_end(&mut buf).await;
            let _ = b.write_all(&buf.to_ascii_uppercase()).await;
        });
        Ok(a)
    }

    #[tokio::test]
    async fn a_forwarded_connection_echoes_through_spdy() {
        let (server, client) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(async move {
            serve(over_websocket(server).await, upper_case_echo_on_8080).await
        });
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let (mut tx, mut rx) = (Codec::new(), Codec::new());
        let h = |t: &str, port: &str| -> spdy::Headers {
            vec![
                ("streamtype".into(), t.into()),
                ("port".into(), port.into()),
                ("requestid".into(), "0".into()),
            ]
        };
        for f in [
            Frame::SynStream {
                stream: 1,
                headers: h("error", "8080"),
                fin: false,
            },
            Frame::SynStream {
                stream: 3,
                headers: h("data", "8080"),
                fin: false,
            },
            Frame::Ping(1),
            Frame::Data {
                stream: 3,
                fin: true,
                data: b"hello".to_vec(),
            },
        ] {
            ws.send(Message::Binary(tx.encode(&f).into()))
                .await
                .unwrap();
        }
        let got = next_frames(&mut ws, &mut rx, |g| {
            g.iter().any(|f| {
                matches!(
                    f,
                    Frame::Data {
                        stream: 1,
                        fin: true,
                        ..
                    }
                )
            })
        })
        .await;
        assert!(got.contains(&Frame::SynReply {
            stream: 1,
            headers: vec![],
            fin: false
        }));
        assert!(got.contains(&Frame::Ping(1)));
        let body: Vec<u8> = got
            .iter()
            .filter_map(|f| match f {
                Frame::Data {
                    stream: 3, data, ..
                } => Some(data.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat();
        assert_eq!(body, b"HELLO");
        // A refused port: a message on the error stream, and both finish.
        for f in [
            Frame::SynStream {
                stream: 5,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "9".into()),
                    ("requestid".into(), "1".into()),
                ],
                fin: false,
            },
            Frame::SynStream {
                stream: 7,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("port".into(), "9".into()),
                    ("requestid".into(), "1".into()),
                ],
                fin: false,
            },
        ] {
            ws.send(Message::Binary(tx.encode(&f).into()))
                .await
                .unwrap();
        }
        let got = next_frames(&mut ws, &mut rx, |g| {
            g.iter().any(|f| {
                matches!(
                    f,
                    Frame::Data {
                        stream: 5,
                        fin: true,
                        ..
                    }
                )
            })
        })
        .await;
        let err: Vec<u8> = got
            .iter()
            .filter_map(|f| match f {
                Frame::Data {
                    stream: 5, data, ..
                } => Some(data.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat();
        assert!(String::from_utf8_lossy(&err).contains("connection refused on 9"));
        ws.close(None).await.unwrap();
        drop(ws);
        srv.await.unwrap();
    }
}

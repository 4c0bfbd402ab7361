//! How a SPDY/3.1 session's bytes travel between kubectl and the server: inside WebSocket
//! binary messages (kubectl 1.31+'s port-forward, subprotocol `SPDY/3.1+portforward.k8s.io`)
//! or raw on an HTTP/1.1 connection upgraded to `SPDY/3.1` (kubectl's SPDY executor and
//! dialer, see [`super::spdy_upgrade`]). Either way the session reads frames through one
//! [`FrameReader`] and sends them through one writer task, which owns the header compressor:
//! header blocks must leave in the order they were compressed.

use super::spdy::{Codec, Frame, SpdyError};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// How many frames may wait for the writer.
const QUEUE: usize = 256;

/// The most bytes read from a raw connection at once.
const READ_CHUNK: usize = 32 << 10;

/// One SPDY session's two directions.
pub struct Wire {
    /// The client's frames, as they arrive.
    pub frames: FrameReader,
    /// Frames to send, in order. Dropping every sender ends the writer, which then closes
    /// the connection (a WebSocket close, or a shutdown of the raw stream).
    pub out: mpsc::Sender<Frame>,
    /// The writer task; await it after dropping `out` so the last frames are flushed.
    pub writer: JoinHandle<()>,
}

/// Received SPDY bytes, parsed into frames.
pub struct FrameReader {
    chunks: BoxStream<'static, Vec<u8>>,
    codec: Codec,
}

impl FrameReader {
    /// The next frame: None when the client has gone, an error when it sent bad SPDY.
    pub async fn next(&mut self) -> Option<Result<Frame, SpdyError>> {
        loop {
            match self.codec.next_frame() {
                Ok(Some(f)) => return Some(Ok(f)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            let bytes = self.chunks.next().await?;
            self.codec.push(&bytes);
        }
    }
}

/// A session whose SPDY bytes ride in the binary messages of a WebSocket on `io`.
pub async fn over_websocket<IO>(io: IO) -> Wire
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, source) = ws.split();
    let chunks = source
        .take_while(|m| {
            let go_on = match m {
                Ok(Message::Close(_)) => false,
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY over WebSocket: the client's WebSocket failed");
                    false
                }
            };
            futures::future::ready(go_on)
        })
        .filter_map(|m| {
            futures::future::ready(match m {
                Ok(Message::Binary(b)) => Some(b.to_vec()),
                _ => None,
            })
        })
        .boxed();
    let (out, mut rx) = mpsc::channel::<Frame>(QUEUE);
    let writer = tokio::spawn(async move {
        let mut codec = Codec::new();
        while let Some(f) = rx.recv().await {
            if sink
                .send(Message::Binary(codec.encode(&f).into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = sink.close().await;
    });
    Wire {
        frames: FrameReader {
            chunks,
            codec: Codec::new(),
        },
        out,
        writer,
    }
}

/// A session whose SPDY bytes are the connection itself (`Upgrade: SPDY/3.1`).
pub fn over_raw<IO>(io: IO) -> Wire
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(io);
    let chunks = futures::stream::unfold(rd, |mut rd| async move {
        let mut buf = vec![0u8; READ_CHUNK];
        match rd.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((buf, rd))
            }
            Err(e) => {
                tracing::debug!(error = %e, "SPDY: reading from the client failed");
                None
            }
        }
    })
    .boxed();
    let (out, mut rx) = mpsc::channel::<Frame>(QUEUE);
    let writer = tokio::spawn(async move {
        let mut codec = Codec::new();
        while let Some(f) = rx.recv().await {
            if wr.write_all(&codec.encode(&f)).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    Wire {
        frames: FrameReader {
            chunks,
            codec: Codec::new(),
        },
        out,
        writer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn raw_frames_go_both_ways_and_the_end_closes_the_stream() {
        let (server, mut client) = tokio::io::duplex(1 << 16);
        let mut wire = over_raw(server);
        let mut codec = Codec::new();
        // Two frames written in one piece, and a third cut in two.
        let mut bytes = codec.encode(&Frame::Ping(1));
        bytes.extend(codec.encode(&Frame::SynStream {
            stream: 1,
            headers: vec![("streamtype".into(), "error".into())],
            fin: false,
        }));
        let third = codec.encode(&Frame::Data {
            stream: 1,
            fin: true,
            data: b"bye".to_vec(),
        });
        client.write_all(&bytes).await.unwrap();
        client.write_all(&third[..5]).await.unwrap();
        assert_eq!(wire.frames.next().await, Some(Ok(Frame::Ping(1))));
        assert!(matches!(
            wire.frames.next().await,
            Some(Ok(Frame::SynStream { stream: 1, .. }))
        ));
        client.write_all(&third[5..]).await.unwrap();
        assert_eq!(
            wire.frames.next().await,
            Some(Ok(Frame::Data {
                stream: 1,
                fin: true,
                data: b"bye".to_vec()
            }))
        );
        wire.out.send(Frame::Ping(1)).await.unwrap();
        drop(wire.out);
        wire.writer.await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        let mut rx = Codec::new();
        rx.push(&back);
        assert_eq!(rx.next_frame().unwrap(), Some(Frame::Ping(1)));
        drop(client);
        assert_eq!(wire.frames.next().await, None);
    }
}

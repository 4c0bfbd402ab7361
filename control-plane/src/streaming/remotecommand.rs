//! `pods/exec` and `pods/attach` over a raw SPDY/3.1 session: what kubectl before 1.30 speaks,
//! and kubectl 1.30+ when its WebSocket upgrade is refused or
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` (protocol `v4.channel.k8s.io` in
//! `X-Stream-Protocol-Version`, see [`super::spdy_upgrade`]).
//!
//! Instead of channel bytes, each stream of the command is a SPDY stream that kubectl opens
//! with a `streamtype` header: `error` always, `stdin`, `stdout`, `stderr` as the query asks
//! (`stdin=true` ...), and `resize` with `tty=true`. The server answers each with a SYN_REPLY,
//! waits until every stream the query asked for is open, then relays to the same agent
//! stream as the WebSocket path ([`super::frames`]): stdin's DATA as it comes (its FIN closes
//! the command's stdin), the resize stream's JSON sizes as resizes, the command's output as
//! DATA on stdout and stderr. At the end stdout and stderr are finished, and the error stream
//! carries the final Status (v4: the same JSON as the WebSocket's channel 3, so kubectl exits
//! with the command's code) and is finished too.

use super::frames::{self, TermSize};
use super::spdy::{self, Frame};
use super::spdy_wire::{FrameReader, Wire};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The `X-Stream-Protocol-Version`s served. Only v4 carries the exit code (in a Status);
/// every kubectl since 1.5 offers it.
pub const PROTOCOLS: [&str; 1] = ["v4.channel.k8s.io"];

/// How long kubectl has to open the streams it asked for (kubelet's default too).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the session waits, after the final Status, for kubectl to hang up.
const LINGER: Duration = Duration::from_secs(5);

/// The most output bytes put in one DATA frame.
const CHUNK: usize = 32 << 10;

/// What a SPDY stream carries, from its `streamtype` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl StreamType {
    pub fn of(headers: &spdy::Headers) -> Option<StreamType> {
        Some(match spdy::header(headers, "streamtype")? {
            "error" => StreamType::Error,
            "stdin" => StreamType::Stdin,
            "stdout" => StreamType::Stdout,
            "stderr" => StreamType::Stderr,
            "resize" => StreamType::Resize,
            _ => return None,
        })
    }
}

/// The streams a request asks for, from its query (`stdin`, `stdout`, `stderr`, `tty`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Wanted {
    pub fn from_query(query: &str) -> Wanted {
        let mut w = Wanted::default();
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            // Go's ParseBool, which the API server's query decoding uses.
            let on = matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True");
            match k {
                "stdin" => w.stdin = on,
                "stdout" => w.stdout = on,
                "stderr" => w.stderr = on,
                "tty" => w.tty = on,
                _ => {}
            }
        }
        w
    }

    /// Whether the client is to open a stream of type `t` (the error stream always).
    pub fn expects(&self, t: StreamType) -> bool {
        match t {
            StreamType::Error => true,
            StreamType::Stdin => self.stdin,
            StreamType::Stdout => self.stdout,
            StreamType::Stderr => self.stderr,
            StreamType::Resize => self.tty,
        }
    }
}

/// The ids of the streams kubectl opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams {
    pub error: Option<u32>,
    pub stdin: Option<u32>,
    pub stdout: Option<u32>,
    pub stderr: Option<u32>,
    pub resize: Option<u32>,
}

impl Streams {
    fn slot(&mut self, t: StreamType) -> &mut Option<u32> {
        match t {
            StreamType::Error => &mut self.error,
            StreamType::Stdin => &mut self.stdin,
            StreamType::Stdout => &mut self.stdout,
            StreamType::Stderr => &mut self.stderr,
            StreamType::Resize => &mut self.resize,
        }
    }

    /// Records stream `id` of type `t`; false when the request did not ask for that type
    /// or it is open already.
    pub fn add(&mut self, wanted: Wanted, t: StreamType, id: u32) -> bool {
        let slot = self.slot(t);
        if !wanted.expects(t) || slot.is_some() {
            return false;
        }
        *slot = Some(id);
        true
    }

    /// Whether every stream the request asked for is open.
    pub fn complete(&self, wanted: Wanted) -> bool {
        let mut copy = *self;
        [
            StreamType::Error,
            StreamType::Stdin,
            StreamType::Stdout,
            StreamType::Stderr,
            StreamType::Resize,
        ]
        .into_iter()
        .all(|t| !wanted.expects(t) || copy.slot(t).is_some())
    }
}

/// Takes every whole terminal size out of `buf` (kubectl writes one JSON object after the
/// other on the resize stream); an incomplete one stays for the next bytes.
pub fn take_resizes(buf: &mut Vec<u8>) -> Vec<TermSize> {
    let mut sizes = Vec::new();
    let mut used = 0;
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
    loop {
        match values.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                used = values.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "exec over SPDY: a resize that is not a size");
                used = buf.len();
                break;
            }
            None => {
                used = buf.len();
                break;
            }
        }
    }
    buf.drain(..used);
    sizes
}

/// Serves one exec or attach session on `wire`: waits for the streams `wanted` names, then
/// relays between them and the agent's stream (`agent`, in [`frames`]).
pub async fn serve<A, F>(wire: Wire, wanted: Wanted, argv: Vec<String>, agent: F)
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = Result<A, String>>,
{
    let Wire {
        mut frames,
        out,
        writer,
    } = wire;
    let opened = tokio::time::timeout(
        STREAM_CREATION_TIMEOUT,
        open_streams(&mut frames, &out, wanted),
    )
    .await;
    let streams = match opened {
        Ok(Some(s)) => s,
        Ok(None) => {
            tracing::debug!("exec over SPDY: the client left before opening its streams");
            drop(out);
            let _ = writer.await;
            return;
        }
        Err(_) => {
            tracing::info!(
                ?wanted,
                "exec over SPDY: the client did not open its streams in time"
            );
            drop(out);
            let _ = writer.await;
            return;
        }
    };
    let agent = match agent.await {
        Ok(a) => a,
        Err(e) => {
            finish(&out, streams, super::failure_status(&e)).await;
            linger(&mut frames, &out).await;
            drop(out);
            let _ = writer.await;
            return;
        }
    };
    let (ar, mut aw) = tokio::io::split(agent);
    let mut down = tokio::spawn(relay_output(ar, out.clone(), streams, argv));
    let mut resizes = Vec::new();
    let ended = loop {
        let frame = tokio::select! {
            f = frames.next() => f,
            _ = &mut down => break true,
        };
        let up = match frame {
            None | Some(Ok(Frame::GoAway { .. })) => break false,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "exec over SPDY: bad SPDY from the client");
                break false;
            }
            Some(Ok(Frame::Data { stream, fin, data })) if Some(stream) == streams.stdin => {
                let mut up = Vec::new();
                if !data.is_empty() {
                    up.extend(frames::encode(frames::STDIN, &data));
                }
                if fin {
                    up.extend(frames::encode(frames::CLOSE, &[frames::STDIN]));
                }
                up
            }
            Some(Ok(Frame::Data { stream, data, .. })) if Some(stream) == streams.resize => {
                resizes.extend_from_slice(&data);
                take_resizes(&mut resizes)
                    .iter()
                    .filter_map(|s| serde_json::to_vec(s).ok())
                    .flat_map(|json| frames::encode(frames::RESIZE, &json))
                    .collect()
            }
            Some(Ok(Frame::Ping(id))) => {
                let _ = out.send(Frame::Ping(id)).await;
                continue;
            }
            Some(Ok(Frame::SynStream { stream, .. })) => {
                // Every stream was opened before the command started; no more are taken.
                let _ = out
                    .send(Frame::RstStream {
                        stream,
                        status: spdy::RST_PROTOCOL_ERROR,
                    })
                    .await;
                continue;
            }
            Some(Ok(_)) => continue,
        };
        if !up.is_empty() && aw.write_all(&up).await.is_err() {
            // The agent is gone; its end frame (or its absence) is on the way down.
            let _ = (&mut down).await;
            break true;
        }
    };
    if ended {
        linger(&mut frames, &out).await;
    } else {
        // kubectl is gone: closing the agent stream stops the command (a shell gets a hangup).
        let _ = aw.shutdown().await;
        down.abort();
    }
    drop(out);
    let _ = writer.await;
}

/// Answers SYN_STREAMs until every stream `wanted` names is open; None if the client
/// leaves first.
async fn open_streams(
    frames: &mut FrameReader,
    out: &mpsc::Sender<Frame>,
    wanted: Wanted,
) -> Option<Streams> {
    let mut streams = Streams::default();
    while !streams.complete(wanted) {
        match frames.next().await? {
            Ok(Frame::SynStream {
                stream, headers, ..
            }) => {
                let accepted =
                    StreamType::of(&headers).is_some_and(|t| streams.add(wanted, t, stream));
                let answer = if accepted {
                    Frame::SynReply {
                        stream,
                        headers: Vec::new(),
                        fin: false,
                    }
                } else {
                    tracing::debug!(?headers, ?wanted, "exec over SPDY: a stream not asked for");
                    Frame::RstStream {
                        stream,
                        status: spdy::RST_PROTOCOL_ERROR,
                    }
                };
                out.send(answer).await.ok()?;
            }
            Ok(Frame::Ping(id)) => out.send(Frame::Ping(id)).await.ok()?,
            Ok(Frame::GoAway { .. }) => return None,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "exec over SPDY: bad SPDY from the client");
                return None;
            }
        }
    }
    Some(streams)
}

/// The agent's output to stdout and stderr as it comes, then the final Status.
async fn relay_output<R>(
    mut agent: R,
    out: mpsc::Sender<Frame>,
    streams: Streams,
    argv: Vec<String>,
) where
    R: AsyncRead + Unpin,
{
    let status = loop {
        let (stream, data) = match frames::read(&mut agent).await {
            Ok(Some((frames::STDOUT, data))) => (streams.stdout, data),
            Ok(Some((frames::STDERR, data))) => (streams.stderr, data),
            Ok(Some((frames::STATUS, data))) => break super::end_status(&data, &argv),
            Ok(Some(_)) => continue,
            Ok(None) => {
                break super::failure_status("the node's agent ended the stream without a status");
            }
            Err(e) => break super::failure_status(&format!("reading from the node's agent: {e}")),
        };
        // Output for a stream the client did not ask for is dropped, as kubelet does.
        let Some(stream) = stream else { continue };
        for piece in data.chunks(CHUNK) {
            let f = Frame::Data {
                stream,
                fin: false,
                data: piece.to_vec(),
            };
            if out.send(f).await.is_err() {
                return;
            }
        }
    };
    finish(&out, streams, status).await;
}

/// Finishes the output streams and puts `status` on the error stream, finishing it too.
async fn finish(out: &mpsc::Sender<Frame>, streams: Streams, status: serde_json::Value) {
    let end = |stream| Frame::Data {
        stream,
        fin: true,
        data: Vec::new(),
    };
    for stream in [streams.stdout, streams.stderr].into_iter().flatten() {
        let _ = out.send(end(stream)).await;
    }
    if let Some(error) = streams.error {
        let _ = out
            .send(Frame::Data {
                stream: error,
                fin: false,
                data: status.to_string().into_bytes(),
            })
            .await;
        let _ = out.send(end(error)).await;
    }
}

/// Waits (bounded) for kubectl to hang up after the end, so it reads everything before the
/// connection goes; PINGs are still answered.
async fn linger(frames: &mut FrameReader, out: &mpsc::Sender<Frame>) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(f)) = frames.next().await {
            match f {
                Frame::Ping(id) => {
                    let _ = out.send(Frame::Ping(id)).await;
                }
                Frame::GoAway { .. } => return,
                _ => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming::spdy::Codec;
    use crate::streaming::spdy_wire::over_raw;
    use tokio::io::{AsyncReadExt, DuplexStream, ReadHalf, WriteHalf};

    #[test]
    fn the_query_names_the_streams() {
        let w = Wanted::from_query("command=sh&container=c&stdin=true&stdout=1&stderr=false&tty=");
        assert_eq!(
            w,
            Wanted {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: false
            }
        );
        let mut s = Streams::default();
        assert!(!s.complete(w));
        assert!(s.add(w, StreamType::Error, 1));
        assert!(!s.add(w, StreamType::Error, 3), "one error stream");
        assert!(!s.add(w, StreamType::Stderr, 3), "stderr was not asked for");
        assert!(!s.add(w, StreamType::Resize, 3), "no resize without tty");
        assert!(s.add(w, StreamType::Stdin, 5));
        assert!(!s.complete(w));
        assert!(s.add(w, StreamType::Stdout, 7));
        assert!(s.complete(w));
        let tty = Wanted::from_query("stdout=true&tty=true");
        assert!(tty.expects(StreamType::Resize) && !tty.expects(StreamType::Stdin));
    }

    #[test]
    fn stream_types_come_from_the_streamtype_header() {
        let h = |v: &str| vec![("streamtype".to_string(), v.to_string())];
        assert_eq!(StreamType::of(&h("stdin")), Some(StreamType::Stdin));
        assert_eq!(StreamType::of(&h("resize")), Some(StreamType::Resize));
        assert_eq!(StreamType::of(&h("data")), None);
        assert_eq!(StreamType::of(&Vec::new()), None);
    }

    #[test]
    fn resizes_are_taken_whole_across_pieces() {
        let mut buf = br#"{"Width":80,"Height":24}
{"Width":100,"Hei"#
            .to_vec();
        assert_eq!(
            take_resizes(&mut buf),
            [TermSize {
                width: 80,
                height: 24
            }]
        );
        buf.extend_from_slice(b"ght\":40}\n");
        assert_eq!(
            take_resizes(&mut buf),
            [TermSize {
                width: 100,
                height: 40
            }]
        );
        assert!(take_resizes(&mut buf).is_empty());
        // Garbage is dropped rather than kept forever.
        buf.extend_from_slice(b"nonsense");
        assert!(take_resizes(&mut buf).is_empty());
        assert!(buf.is_empty());
    }

    /// kubectl's side of a raw SPDY session: writes frames, reads them back.
    struct Client {
        rd: ReadHalf<DuplexStream>,
        wr: WriteHalf<DuplexStream>,
        tx: Codec,
        rx: Codec,
    }

    impl Client {
        async fn send(&mut self, f: Frame) {
            let bytes = self.tx.encode(&f);
            self.wr.write_all(&bytes).await.unwrap();
        }

        async fn open(&mut self, stream: u32, kind: &str) {
            self.send(Frame::SynStream {
                stream,
                headers: vec![("streamtype".into(), kind.into())],
                fin: false,
            })
            .await;
        }

        /// Frames until the error stream is finished (or the connection ends).
        async fn until_error_finished(&mut self, error: u32) -> Vec<Frame> {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            loop {
                while let Some(f) = self.rx.next_frame().unwrap() {
                    let done =
                        matches!(f, Frame::Data { stream, fin: true, .. } if stream == error);
                    got.push(f);
                    if done {
                        return got;
                    }
                }
                let n = self.rd.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                self.rx.push(&buf[..n]);
            }
        }
    }

    fn data_of(frames: &[Frame], want: u32) -> Vec<u8> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data { stream, data, .. } if *stream == want => Some(data.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat()
    }

    fn start(
        query: &str,
        agent: Result<DuplexStream, String>,
    ) -> (Client, tokio::task::JoinHandle<()>) {
        let (server, client) = tokio::io::duplex(1 << 16);
        let wanted = Wanted::from_query(query);
        let argv = vec!["sh".to_string()];
        let srv = tokio::spawn(serve(over_raw(server), wanted, argv, async { agent }));
        let (rd, wr) = tokio::io::split(client);
        let client = Client {
            rd,
            wr,
            tx: Codec::new(),
            rx: Codec::new(),
        };
        (client, srv)
    }

    #[tokio::test]
    async fn a_session_relays_stdin_resizes_output_and_the_exit_code() {
        let (agent_here, mut agent_there) = tokio::io::duplex(1 << 16);
        let (mut c, srv) = start("stdin=true&stdout=true&stderr=true", Ok(agent_here));
        // A fake agent: echoes stdin on stdout, reports resizes on stderr (none expected
        // here: no tty), and ends with exit code 3 when stdin closes.
        let fake = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((ch, p)) = frames::read(&mut agent_there).await.unwrap() {
                seen.push(ch);
                let reply = match ch {
                    frames::STDIN => frames::encode(frames::STDOUT, &p),
                    frames::CLOSE => {
                        let mut r = frames::encode(frames::STDERR, b"bye");
                        r.extend(frames::encode(frames::STATUS, br#"{"exitCode":3}"#));
                        r
                    }
                    _ => continue,
                };
                agent_there.write_all(&reply).await.unwrap();
                if ch == frames::CLOSE {
                    break;
                }
            }
            seen
        });
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
            c.open(id, kind).await;
        }
        c.send(Frame::Ping(9)).await;
        c.send(Frame::Data {
            stream: 3,
            fin: false,
            data: b"hello".to_vec(),
        })
        .await;
        c.send(Frame::Data {
            stream: 3,
            fin: true,
            data: Vec::new(),
        })
        .await;
        let got = c.until_error_finished(1).await;
        for id in [1, 3, 5, 7] {
            assert!(
                got.contains(&Frame::SynReply {
                    stream: id,
                    headers: vec![],
                    fin: false
                }),
                "stream {id} answered: {got:?}"
            );
        }
        assert!(got.contains(&Frame::Ping(9)));
        assert_eq!(data_of(&got, 5), b"hello");
        assert_eq!(data_of(&got, 7), b"bye");
        for id in [5, 7] {
            assert!(got.contains(&Frame::Data {
                stream: id,
                fin: true,
                data: vec![]
            }));
        }
        let status: serde_json::Value = serde_json::from_slice(&data_of(&got, 1)).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert_eq!(
            fake.await.unwrap(),
            [frames::STDIN, frames::CLOSE],
            "stdin's FIN closed the command's stdin"
        );
        drop(c);
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn a_tty_session_passes_resizes_on() {
        let (agent_here, mut agent_there) = tokio::io::duplex(1 << 16);
        let (mut c, srv) = start("stdout=true&tty=true", Ok(agent_here));
        let fake = tokio::spawn(async move {
            let Some((frames::RESIZE, p)) = frames::read(&mut agent_there).await.unwrap() else {
                panic!("not a resize first")
            };
            let mut reply = frames::encode(frames::STDOUT, &p);
            reply.extend(frames::encode(frames::STATUS, br#"{"exitCode":0}"#));
            agent_there.write_all(&reply).await.unwrap();
        });
        c.open(1, "error").await;
        c.open(3, "stdout").await;
        c.open(5, "resize").await;
        c.send(Frame::Data {
            stream: 5,
            fin: false,
            data: b"{\"Width\":111,\"Height\":33}\n".to_vec(),
        })
        .await;
        let got = c.until_error_finished(1).await;
        fake.await.unwrap();
        assert_eq!(data_of(&got, 3), br#"{"Width":111,"Height":33}"#);
        let status: serde_json::Value = serde_json::from_slice(&data_of(&got, 1)).unwrap();
        assert_eq!(status["status"], "Success");
        drop(c);
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_agent_is_a_failure_on_the_error_stream() {
        let (mut c, srv) = start("stdout=true", Err("node is gone".into()));
        c.open(1, "error").await;
        // A stream the query did not ask for is refused.
        c.open(3, "stdin").await;
        c.open(5, "stdout").await;
        let got = c.until_error_finished(1).await;
        assert!(got.contains(&Frame::RstStream {
            stream: 3,
            status: spdy::RST_PROTOCOL_ERROR
        }));
        let status: serde_json::Value = serde_json::from_slice(&data_of(&got, 1)).unwrap();
        assert_eq!(status["status"], "Failure");
        assert!(status["message"].as_str().unwrap().contains("node is gone"));
        drop(c);
        srv.await.unwrap();
    }
}

//! `pods/attach` on the node: the container's live output and, for a container with
//! `stdin: true`, its standard input; for a `tty: true` container, its terminal.
//!
//! The shim lends each session what it may have over the container's attach socket
//! (`podd_pod::shim::attach`): the write end of the container's stdin, or for a terminal the
//! pty master (input and resizes, TIOCSWINSZ) and the terminal's output as it comes. Without
//! a terminal the output is the container's log from its current end (the stdout and stderr
//! the shim writes there), so every attached client sees the live stream with the stream each
//! record came from, and nothing is lost for `kubectl logs`. The client's end of stdin is
//! told to the shim, which closes a `stdinOnce` container's stdin then (the container reads
//! an end of file, or its terminal hangs up), as after the first attach in Kubernetes. The
//! session ends when the container stops running (or its terminal ends) or the client goes
//! away. Pods started by an older shim have no attach socket: their stdin FIFO is written
//! directly.

use podd_control_plane::streaming::frames::{self, End, TermSize};
use podd_pod::logs::{LogReader, Stream};
use podd_pod::manager::PodManager;
use podd_pod::shim::ContainerState;
use podd_pod::shim::attach::Grant;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub uid: String,
    pub container: String,
    pub stdin: bool,
}

/// Whether the container runs now (by the shim's status).
fn running(manager: &PodManager, uid: &str, container: &str) -> bool {
    manager.status(uid).is_some_and(|(s, alive)| {
        alive
            && s.containers
                .iter()
                .any(|c| c.name == container && matches!(c.state, ContainerState::Running { .. }))
    })
}

fn end_frame(end: &End) -> Vec<u8> {
    frames::encode(
        frames::STATUS,
        serde_json::to_string(end).unwrap_or_default().as_bytes(),
    )
}

/// What one session got: where its input goes and where its output comes from.
struct Plumbing {
    /// The stdin write end or the pty master, when stdin was granted.
    input: Option<OwnedFd>,
    /// The container has a terminal: output comes on the shim's socket, resizes apply.
    terminal: bool,
    /// The shim's socket, split: terminal output comes on the read half; the end of the
    /// client's stdin goes on the write half; closing it ends the session at the shim.
    socket: Option<(OwnedReadHalf, OwnedWriteHalf)>,
}

/// Asks the shim for the container's stdin (or output only); falls back to the stdin FIFO
/// of a pod from an older shim.
async fn plumbing(manager: &PodManager, req: &AttachRequest) -> Plumbing {
    let dir = manager.state_dir(&req.uid);
    let (container, want) = (req.container.clone(), req.stdin);
    let grant = tokio::task::spawn_blocking(move || {
        podd_pod::shim::attach::connect(&dir, &container, want)
    })
    .await;
    let socket = |s: std::os::unix::net::UnixStream| {
        s.set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(s))
            .map(tokio::net::UnixStream::into_split)
            .ok()
    };
    match grant {
        Ok(Ok(Some(Grant::Terminal { socket: s, master }))) => Plumbing {
            input: master,
            terminal: true,
            socket: socket(s),
        },
        Ok(Ok(Some(Grant::Stdin { socket: s, input }))) => Plumbing {
            input: Some(input),
            terminal: false,
            socket: socket(s),
        },
        Ok(Ok(Some(Grant::OutputOnly { socket: s }))) => Plumbing {
            input: None,
            terminal: false,
            socket: socket(s),
        },
        other => {
            if let Ok(Err(e)) = &other {
                tracing::info!(error = %e, container = %req.container, "the shim's attach socket; attaching from the log");
            }
            let fifo =
                podd_pod::shim::plan::stdin_fifo(&manager.state_dir(&req.uid), &req.container);
            // The shim holds the FIFO open for reading, so this open does not block.
            let input = if req.stdin && fifo.exists() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&fifo)
                    .ok()
                    .map(OwnedFd::from)
            } else {
                None
            };
            Plumbing {
                input,
                terminal: false,
                socket: None,
            }
        }
    }
}

/// Serves one attach session on the upgraded connection `io`.
pub async fn attach<IO>(io: IO, manager: Arc<PodManager>, req: AttachRequest)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(io);
    if !running(&manager, &req.uid, &req.container) {
        let end = End {
            exit_code: None,
            error: Some(format!(
                "container {} is not running, so it cannot be attached to",
                req.container
            )),
        };
        let _ = wr.write_all(&end_frame(&end)).await;
        let _ = wr.shutdown().await;
        return;
    }
    let Plumbing {
        input,
        terminal,
        socket,
    } = plumbing(&manager, &req).await;
    let (socket_rd, socket_wr) = match socket {
        Some((r, w)) => (Some(r), Some(w)),
        None => (None, None),
    };
    let gone = Arc::new(AtomicBool::new(false));
    let mut input = tokio::spawn(forward_input(rd, input, terminal, socket_wr, gone.clone()));
    match (terminal, socket_rd) {
        (true, Some(socket_rd)) => {
            tokio::select! {
                _ = terminal_output(socket_rd, &mut wr) => {}
                _ = &mut input => {}
            }
        }
        (_, socket_rd) => {
            log_output(&manager, &req, &mut wr, gone).await;
            drop(socket_rd);
        }
    }
    // Dropping the input side closes our stdin copy and the shim's socket.
    input.abort();
    let _ = input.await;
    let end = End {
        exit_code: Some(0),
        error: None,
    };
    let _ = wr.write_all(&end_frame(&end)).await;
    let _ = wr.shutdown().await;
}

/// The client's frames: stdin into the container's stdin (or terminal), resizes to the
/// terminal, and the end of stdin told to the shim. Marks `gone` when the client is.
async fn forward_input<R>(
    mut rd: R,
    input: Option<OwnedFd>,
    terminal: bool,
    mut shim: Option<OwnedWriteHalf>,
    gone: Arc<AtomicBool>,
) where
    R: AsyncRead + Unpin,
{
    let mut master = input
        .as_ref()
        .filter(|_| terminal)
        .and_then(|f| f.try_clone().ok());
    let mut tx = input.map(|fd| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        // A blocking writer: a pipe or pty whose reader is slow makes it wait, not spin.
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::File::from(fd);
            while let Some(b) = rx.blocking_recv() {
                if f.write_all(&b).is_err() {
                    return;
                }
            }
        });
        tx
    });
    while let Ok(Some((ch, payload))) = frames::read(&mut rd).await {
        match ch {
            frames::STDIN => {
                if let Some(t) = &tx
                    && t.send(payload).await.is_err()
                {
                    tx = None;
                }
            }
            frames::RESIZE => {
                let Some(m) = &master else { continue };
                match serde_json::from_slice::<TermSize>(&payload) {
                    Ok(size) => {
                        if let Err(e) = super::stream::resize(m, size) {
                            tracing::debug!(error = %e, "resizing the attached terminal");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "a resize that is not JSON"),
                }
            }
            frames::CLOSE if payload.first() == Some(&frames::STDIN) => {
                tx = None;
                master = None;
                if let Some(s) = shim.as_mut() {
                    let _ = s.write_all(&[podd_pod::shim::attach::STDIN_DONE]).await;
                }
            }
            _ => {}
        }
    }
    gone.store(true, Ordering::Relaxed);
}

/// The terminal's output from the shim, as it comes, until the terminal ends.
async fn terminal_output<W: AsyncWrite + Unpin>(mut from: OwnedReadHalf, to: &mut W) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to
                    .write_all(&frames::encode(frames::STDOUT, &buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// The log from its current end, while the container runs and the client is there.
async fn log_output<W: AsyncWrite + Unpin>(
    manager: &Arc<PodManager>,
    req: &AttachRequest,
    wr: &mut W,
    gone: Arc<AtomicBool>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let reader = LogReader::new(&manager.log_path(&req.uid, &req.container));
    let (m, uid, name, g) = (
        manager.clone(),
        req.uid.clone(),
        req.container.clone(),
        gone.clone(),
    );
    let follower = tokio::task::spawn_blocking(move || {
        let last_check = std::cell::Cell::new(std::time::Instant::now());
        let stopped = std::cell::Cell::new(false);
        let _ = reader.follow(
            Some(0),
            Duration::from_millis(50),
            |l| {
                let mut text = l.text.clone().into_bytes();
                if l.full {
                    text.push(b'\n');
                }
                let ch = match l.stream {
                    Stream::Stdout => frames::STDOUT,
                    Stream::Stderr => frames::STDERR,
                };
                tx.blocking_send(frames::encode(ch, &text)).is_ok()
            },
            || {
                if g.load(Ordering::Relaxed) || tx.is_closed() {
                    return true;
                }
                // The container's end is checked a few times a second; the follower reads
                // what it wrote before stopping on the next round.
                if last_check.get().elapsed() > Duration::from_millis(300) {
                    last_check.set(std::time::Instant::now());
                    if stopped.get() {
                        return true;
                    }
                    stopped.set(!running(&m, &uid, &name));
                }
                false
            },
        );
    });
    while let Some(b) = rx.recv().await {
        if wr.write_all(&b).await.is_err() {
            gone.store(true, Ordering::Relaxed);
            break;
        }
    }
    let _ = follower.await;
}

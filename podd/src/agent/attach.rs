//! `pods/attach` on the node: the container's live output and, for a container with
//! `stdin: true`, its standard input.
//!
//! The container's stdout and stderr already flow through the shim into its log (see
//! `podd_pod::shim`); attach follows that log from its current end, so every attached client
//! sees the live stream (with the stream each record came from) and nothing is lost for
//! `kubectl logs`. A `stdin: true` container's fd 0 is a FIFO the shim holds open
//! (`podd_pod::shim::plan::stdin_fifo`): attach writes the client's stdin bytes into it, so
//! the container reads them as they come. The session ends when the container stops
//! running or the client goes away. A container with `tty: true` is attached the same way:
//! its output and input are not a terminal here (no resize).

use podd_control_plane::streaming::frames::{self, End};
use podd_pod::logs::{LogReader, Stream};
use podd_pod::manager::PodManager;
use podd_pod::shim::ContainerState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

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

/// Serves one attach session on the upgraded connection `io`.
pub async fn attach<IO>(io: IO, manager: Arc<PodManager>, req: AttachRequest)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    if !running(&manager, &req.uid, &req.container) {
        let end = End {
            exit_code: None,
            error: Some(format!(
                "container {} is not running, so it cannot be attached to",
                req.container
            )),
        };
        let _ = wr
            .write_all(&frames::encode(
                frames::STATUS,
                serde_json::to_string(&end).unwrap_or_default().as_bytes(),
            ))
            .await;
        let _ = wr.shutdown().await;
        return;
    }
    let gone = Arc::new(AtomicBool::new(false));
    // Input: into the stdin FIFO, when the container has one and the client sends stdin.
    let fifo = podd_pod::shim::plan::stdin_fifo(&manager.state_dir(&req.uid), &req.container);
    let wants_stdin = req.stdin && fifo.exists();
    let g = gone.clone();
    let input = tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        if wants_stdin {
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                // The shim holds the FIFO open for reading, so this open does not block.
                let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
                    return;
                };
                while let Some(b) = rx.blocking_recv() {
                    if f.write_all(&b).is_err() {
                        return;
                    }
                }
            });
        }
        while let Ok(Some((ch, payload))) = frames::read(&mut rd).await {
            if ch == frames::STDIN && wants_stdin && tx.send(payload).await.is_err() {
                break;
            }
        }
        g.store(true, Ordering::Relaxed);
    });
    // Output: the log from its current end, while the container runs.
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
    input.abort();
    let end = End {
        exit_code: Some(0),
        error: None,
    };
    let _ = wr
        .write_all(&frames::encode(
            frames::STATUS,
            serde_json::to_string(&end).unwrap_or_default().as_bytes(),
        ))
        .await;
    let _ = wr.shutdown().await;
}

//! The agent's streaming endpoints, reached by the API server with `Upgrade: podd-stream`
//! (see `podd_control_plane::streaming`): after the 101 the connection carries
//! `podd_control_plane::streaming::frames` (exec, attach) or the raw bytes of one forwarded
//! TCP connection (portforward).
//!
//! - exec: `podd-shim exec` runs the command in the container. Without a terminal its stdin,
//!   stdout and stderr are pipes relayed chunk by chunk. With `tty=true` the shim asks the
//!   runtime for a pty (opened in the container's devpts) whose master comes back to us over
//!   a private Unix socket (SCM_RIGHTS); we relay the master and apply resizes with
//!   TIOCSWINSZ. The end frame carries the exit code.
//! - portforward: connects to 127.0.0.1:PORT from a thread inside the pod's network
//!   namespace, then relays bytes.

use podd_control_plane::streaming::frames::{self, End, TermSize};
use podd_pod::manager::PodManager;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// What an exec runs and how.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub uid: String,
    pub container: String,
    pub argv: Vec<String>,
    pub stdin: bool,
    pub tty: bool,
}

/// How long output still drains after the command ended (a background process may hold the
/// pipes or the terminal open forever).
const DRAIN: Duration = Duration::from_secs(2);

/// Writes frames to the API server from many producers, in order.
fn frame_writer<W: AsyncWrite + Unpin + Send + 'static>(
    mut w: W,
) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let task = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    });
    (tx, task)
}

/// Copies `r` to `tx` as frames of `channel` until it ends.
async fn pump<R: AsyncRead + Unpin>(mut r: R, channel: u8, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(frames::encode(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn end_frame(end: &End) -> Vec<u8> {
    frames::encode(
        frames::STATUS,
        serde_json::to_string(end).unwrap_or_default().as_bytes(),
    )
}

/// Serves one exec session on the upgraded connection `io`.
pub async fn exec<IO>(io: IO, manager: Arc<PodManager>, req: ExecRequest)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (tx, writer) = frame_writer(wr);
    let end = if req.tty {
        exec_tty(rd, &tx, &manager, &req).await
    } else {
        exec_pipes(rd, &tx, &manager, &req).await
    };
    let end = match end {
        Ok(code) => End {
            exit_code: Some(code),
            error: None,
        },
        Err(e) => End {
            exit_code: None,
            error: Some(e),
        },
    };
    let _ = tx.send(end_frame(&end)).await;
    drop(tx);
    let _ = writer.await;
}

/// The exit code of a finished `podd-shim exec` (the command's, or 128+signal).
fn code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

async fn exec_pipes<R>(
    mut rd: R,
    tx: &mpsc::Sender<Vec<u8>>,
    manager: &PodManager,
    req: &ExecRequest,
) -> Result<i32, String>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    use std::process::Stdio;
    let mut cmd =
        tokio::process::Command::from(manager.exec_command(&req.uid, &req.container, &req.argv));
    cmd.stdin(if req.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting podd-shim exec: {e}"))?;
    let mut stdin = child.stdin.take();
    let out = tokio::spawn(pump(
        child.stdout.take().expect("piped"),
        frames::STDOUT,
        tx.clone(),
    ));
    let err = tokio::spawn(pump(
        child.stderr.take().expect("piped"),
        frames::STDERR,
        tx.clone(),
    ));
    // Input: stdin bytes as they come; the client's close of stdin closes the pipe.
    let input = async move {
        while let Ok(Some((ch, payload))) = frames::read(&mut rd).await {
            match ch {
                frames::STDIN => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&payload).await.is_err()
                    {
                        stdin = None;
                    }
                }
                frames::CLOSE if payload.first() == Some(&frames::STDIN) => stdin = None,
                _ => {}
            }
        }
        // The API server went away (kubectl is gone): stdin ends too.
    };
    tokio::pin!(input);
    let status = tokio::select! {
        s = child.wait() => s,
        _ = &mut input => child.wait().await,
    }
    .map_err(|e| format!("waiting for podd-shim exec: {e}"))?;
    let _ = tokio::time::timeout(DRAIN, async {
        let _ = out.await;
        let _ = err.await;
    })
    .await;
    Ok(code_of(status))
}

/// A fresh, private path for the console socket of one exec.
fn console_path(manager: &PodManager, uid: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("tty-{}-{n}.sock", std::process::id());
    let dir = manager.state_dir(uid);
    // sun_path holds 108 bytes; a deep run dir falls back to /run.
    if dir.as_os_str().len() + name.len() < 100 {
        dir.join(name)
    } else {
        PathBuf::from("/run").join(format!("podd-{name}"))
    }
}

/// Receives the pty master the runtime sends over the console socket.
fn receive_master(stream: std::os::unix::net::UnixStream) -> Result<OwnedFd, String> {
    match podd_pod::fdpass::receive_fd(&stream) {
        Ok((_, Some(master))) => Ok(master),
        Ok((_, None)) => Err("the console socket message carried no pty".into()),
        Err(e) => Err(format!("receiving the pty from the console socket: {e}")),
    }
}

nix::ioctl_write_ptr_bad!(set_winsize, nix::libc::TIOCSWINSZ, nix::libc::winsize);

/// Applies a terminal size to the pty (the kernel signals SIGWINCH to its foreground group).
pub fn resize(master: &OwnedFd, size: TermSize) -> nix::Result<()> {
    let ws = nix::libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call.
    unsafe { set_winsize(master.as_raw_fd(), &ws) }.map(|_| ())
}

/// Removes the console socket file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn exec_tty<R>(
    mut rd: R,
    tx: &mpsc::Sender<Vec<u8>>,
    manager: &PodManager,
    req: &ExecRequest,
) -> Result<i32, String>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    use std::process::Stdio;
    let path = console_path(manager, &req.uid);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("binding the console socket {}: {e}", path.display()))?;
    let _cleanup = RemoveOnDrop(path.clone());
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("restricting {}: {e}", path.display()))?;
    }
    let mut cmd = tokio::process::Command::from(manager.exec_command_with(
        &req.uid,
        &req.container,
        &req.argv,
        Some(&path),
    ));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting podd-shim exec: {e}"))?;
    // The shim's own messages (a command not found, a stopped container) go to the terminal.
    let shim_out = tokio::spawn(pump(
        child.stdout.take().expect("piped"),
        frames::STDOUT,
        tx.clone(),
    ));
    let shim_err = tokio::spawn(pump(
        child.stderr.take().expect("piped"),
        frames::STDOUT,
        tx.clone(),
    ));
    let conn = tokio::select! {
        c = tokio::time::timeout(Duration::from_secs(30), listener.accept()) => c,
        s = child.wait() => {
            // The shim ended before a terminal came: it failed; its stderr says why.
            let _ = tokio::time::timeout(DRAIN, async { let _ = shim_out.await; let _ = shim_err.await; }).await;
            return s.map(code_of).map_err(|e| format!("waiting for podd-shim exec: {e}"));
        }
    };
    let (stream, _) = conn
        .map_err(|_| "no terminal came from the runtime within 30s".to_string())?
        .map_err(|e| format!("accepting on the console socket: {e}"))?;
    let stream = stream
        .into_std()
        .map_err(|e| format!("console socket: {e}"))?;
    let _ = stream.set_nonblocking(false);
    let master = tokio::task::spawn_blocking(move || receive_master(stream))
        .await
        .map_err(|e| format!("receiving the pty: {e}"))??;
    let master = Arc::new(master);

    // Output: a blocking reader thread (EIO once every slave fd is closed).
    let reader_fd = master
        .try_clone()
        .map_err(|e| format!("duplicating the pty: {e}"))?;
    let out_tx = tx.clone();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::from(reader_fd);
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if out_tx
                        .blocking_send(frames::encode(frames::STDOUT, &buf[..n]))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    });
    // Input: a blocking writer thread fed by the frames.
    let (in_tx, mut in_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer_fd = master
        .try_clone()
        .map_err(|e| format!("duplicating the pty: {e}"))?;
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::File::from(writer_fd);
        while let Some(b) = in_rx.blocking_recv() {
            if f.write_all(&b).is_err() {
                return;
            }
        }
    });
    let m = master.clone();
    let input = async move {
        while let Ok(Some((ch, payload))) = frames::read(&mut rd).await {
            match ch {
                frames::STDIN => {
                    let Ok(()) = in_tx.send(payload).await else {
                        break;
                    };
                }
                frames::RESIZE => match serde_json::from_slice::<TermSize>(&payload) {
                    Ok(size) => {
                        if let Err(e) = resize(&m, size) {
                            tracing::debug!(error = %e, "resizing the exec terminal");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "a resize that is not JSON"),
                },
                // The end of input on a terminal is its EOF character.
                frames::CLOSE if payload.first() == Some(&frames::STDIN) => {
                    let _ = in_tx.send(vec![0x04]).await;
                }
                _ => {}
            }
        }
    };
    let input = tokio::spawn(input);
    let status = child.wait().await;
    input.abort();
    // Our master copies keep the terminal alive: closing them hangs up what is left.
    let _ = tokio::time::timeout(DRAIN, output).await;
    drop(master);
    let _ = tokio::time::timeout(DRAIN, async {
        let _ = shim_out.await;
        let _ = shim_err.await;
    })
    .await;
    status
        .map(code_of)
        .map_err(|e| format!("waiting for podd-shim exec: {e}"))
}

/// Connects to `127.0.0.1:port` inside the pod's network namespace.
pub async fn connect_in_pod(netns: &Path, port: u16) -> Result<tokio::net::TcpStream, String> {
    let ns = netns.to_path_buf();
    let std_stream = tokio::task::spawn_blocking(move || {
        podd_net::netns::run_in_namespace(&ns, podd_net::netns::NsKind::Net, || {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(5),
            )
        })
    })
    .await
    .map_err(|e| format!("entering the pod network: {e}"))?
    .map_err(|e| format!("entering the pod network {}: {e}", netns.display()))?
    .map_err(|e| format!("connecting to port {port} in the pod: {e}"))?;
    std_stream
        .set_nonblocking(true)
        .map_err(|e| format!("port {port}: {e}"))?;
    let _ = std_stream.set_nodelay(true);
    tokio::net::TcpStream::from_std(std_stream).map_err(|e| format!("port {port}: {e}"))
}

/// Relays one forwarded connection between the API server and the pod's port.
pub async fn portforward<IO>(io: IO, mut conn: tokio::net::TcpStream)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = io;
    let _ = tokio::io::copy_bidirectional(&mut io, &mut conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_sets_the_terminal_size() {
        let pty = nix::pty::openpty(None, None).unwrap();
        resize(
            &pty.master,
            TermSize {
                width: 123,
                height: 45,
            },
        )
        .unwrap();
        let mut ws = nix::libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the valid pointer.
        let r = unsafe { nix::libc::ioctl(pty.slave.as_raw_fd(), nix::libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(r, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (123, 45));
    }

    #[test]
    fn the_master_crosses_a_unix_socket() {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let fds = [pty.master.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"/dev/pts/9")];
        sendmsg::<()>(
            a.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let got = receive_master(b).unwrap();
        // The received fd is the same terminal: a resize through it shows on the slave.
        resize(
            &got,
            TermSize {
                width: 7,
                height: 3,
            },
        )
        .unwrap();
        let mut ws = nix::libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the valid pointer.
        unsafe { nix::libc::ioctl(pty.slave.as_raw_fd(), nix::libc::TIOCGWINSZ, &mut ws) };
        assert_eq!((ws.ws_col, ws.ws_row), (7, 3));
    }
}

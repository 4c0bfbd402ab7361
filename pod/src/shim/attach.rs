//! A container's standard input and terminal, lent to `kubectl attach` sessions.
//!
//! The shim serves one Unix socket per container that has `stdin: true` or `tty: true`
//! ([`socket_path`], 0600 in the pod's state directory). The agent connects, sends one byte
//! ([`WANT_STDIN`] or [`OUTPUT_ONLY`]) and gets one message back, with a file descriptor
//! (SCM_RIGHTS, [`crate::fdpass`]) when stdin is granted:
//!
//! - `T` (terminal): the container's stdio is a pty whose master the shim holds; its output
//!   (also copied to the log) follows on this socket as raw bytes, for as long as the
//!   terminal lives. With stdin granted the fd is the master: the agent writes the client's
//!   input to it and applies resizes (TIOCSWINSZ).
//! - `S` (stdin): the fd is the write end of the container's stdin; output is the log's.
//! - `N` (nothing): no stdin (not asked for, or a `stdinOnce` stdin already used).
//!
//! The agent sends [`STDIN_DONE`] when the client closed its stdin, and closes the socket
//! when the session ends. With `stdinOnce: true` that closes the container's stdin, as
//! Kubernetes does after the first attach: the shim drops its copy of the stdin pipe (the
//! container reads an end of file) or of the pty master (the terminal hangs up: reads end
//! and the session gets SIGHUP). Each run of the container has its own stdin and terminal.

use crate::fdpass;
use crate::logs::{LogWriter, Stream};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The agent asks for the container's stdin (and, with a terminal, its output).
pub const WANT_STDIN: u8 = b'i';
/// The agent asks for output only.
pub const OUTPUT_ONLY: u8 = b'o';
/// The client closed its stdin.
pub const STDIN_DONE: u8 = b'c';
const TERMINAL: u8 = b'T';
const STDIN: u8 = b'S';
const NOTHING: u8 = b'N';

/// How long a slow attached client may hold the terminal's output up before it is dropped.
const SUBSCRIBER_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The attach socket of the container at `index` in the pod's plan (by index, not name: a
/// Unix socket path holds at most 107 bytes).
pub fn socket_path(pod_dir: &Path, index: usize) -> PathBuf {
    pod_dir.join(format!("attach-{index}.sock"))
}

/// What the shim lent to one attach session.
#[derive(Debug)]
pub enum Grant {
    /// The container has a terminal; its output comes on `socket`. `master` (when stdin was
    /// granted) takes the input and the resizes.
    Terminal {
        socket: UnixStream,
        master: Option<OwnedFd>,
    },
    /// The write end of the container's stdin; the output is the log's.
    Stdin { socket: UnixStream, input: OwnedFd },
    /// No stdin; the output is the log's.
    OutputOnly { socket: UnixStream },
}

/// Asks the shim of the pod in `pod_dir` for `container`'s stdin (or only its output).
/// `Ok(None)`: the container has no attach socket (neither stdin nor a terminal, or a pod
/// started by an older shim).
pub fn connect(
    pod_dir: &Path,
    container: &str,
    want_stdin: bool,
) -> std::io::Result<Option<Grant>> {
    let plan = super::ShimPlan::load(pod_dir)?;
    let Some(index) = plan.containers.iter().position(|c| c.name == container) else {
        return Ok(None);
    };
    let path = socket_path(pod_dir, index);
    let mut socket = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    socket.write_all(&[if want_stdin { WANT_STDIN } else { OUTPUT_ONLY }])?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (msg, fd) = fdpass::receive_fd(&socket).map_err(std::io::Error::from)?;
    socket.set_read_timeout(None)?;
    Ok(Some(match (msg.first(), fd) {
        (Some(&TERMINAL), master) => Grant::Terminal { socket, master },
        (Some(&STDIN), Some(input)) => Grant::Stdin { socket, input },
        (Some(&NOTHING), _) => Grant::OutputOnly { socket },
        (other, _) => {
            return Err(std::io::Error::other(format!(
                "the shim answered the attach request with {other:?}"
            )));
        }
    }))
}

/// The shim's side for one container: its current run's stdin (or pty master) and the
/// sessions that follow its terminal.
#[derive(Debug)]
pub(super) struct AttachPoint {
    name: String,
    tty: bool,
    stdin: bool,
    stdin_once: bool,
    state: Mutex<RunIo>,
}

#[derive(Debug, Default)]
struct RunIo {
    /// Counts the container's runs; a session belongs to the run it began in.
    run: u64,
    /// The stdin write end or the pty master, while the run's stdin is open.
    input: Option<Arc<OwnedFd>>,
    /// A `stdinOnce` stdin went to a session already.
    once_taken: bool,
    /// Sessions following the terminal's output, by id.
    subscribers: Vec<(u64, UnixStream)>,
    next_id: u64,
}

/// What [`AttachPoint::grant`] decided for one session.
struct Session {
    run: u64,
    took_once: bool,
    id: Option<u64>,
}

impl AttachPoint {
    pub(super) fn new(name: &str, tty: bool, stdin: bool, stdin_once: bool) -> AttachPoint {
        AttachPoint {
            name: name.to_string(),
            tty,
            stdin,
            stdin_once,
            state: Mutex::new(RunIo::default()),
        }
    }

    pub(super) fn tty(&self) -> bool {
        self.tty
    }

    fn lock(&self) -> MutexGuard<'_, RunIo> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new run of the container with this stdin write end or pty master; the sessions of
    /// the last run end. Returns the run's number.
    pub(super) fn begin_run(&self, input: Option<Arc<OwnedFd>>) -> u64 {
        let mut st = self.lock();
        st.run += 1;
        st.input = input;
        st.once_taken = false;
        for (_, s) in st.subscribers.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        st.run
    }

    /// The run ended: its stdin closes and its sessions end.
    pub(super) fn end_run(&self, run: u64) {
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        st.input = None;
        for (_, s) in st.subscribers.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Whether the run's stdin (the terminal, for a pty) is still open.
    fn open(&self, run: u64) -> bool {
        let st = self.lock();
        st.run == run && st.input.is_some()
    }

    /// Sends terminal output to every session of the run; a session that does not take it
    /// within a second is dropped rather than stalling the container.
    fn broadcast(&self, run: u64, data: &[u8]) {
        let mut st = self.lock();
        if st.run != run {
            return;
        }
        st.subscribers.retain_mut(|(_, s)| {
            let ok = s.write_all(data).is_ok();
            if !ok {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            ok
        });
    }

    /// Answers one session's request on `conn`.
    fn grant(&self, conn: &UnixStream, want_stdin: bool) -> std::io::Result<Session> {
        let mut st = self.lock();
        let give = want_stdin && self.stdin && !(self.stdin_once && st.once_taken);
        let fd = match (&st.input, give) {
            (Some(input), true) => Some(input.try_clone()?),
            _ => None,
        };
        let took_once = fd.is_some() && self.stdin_once;
        if took_once {
            st.once_taken = true;
        }
        let tag = match (self.tty, &fd) {
            (true, _) => TERMINAL,
            (false, Some(_)) => STDIN,
            (false, None) => NOTHING,
        };
        fdpass::send_fd(conn, &[tag], fd.as_ref().map(|f| f.as_fd()))
            .map_err(std::io::Error::from)?;
        // Output follows the answer, so the session joins only now.
        let id = if self.tty {
            let s = conn.try_clone()?;
            s.set_write_timeout(Some(SUBSCRIBER_WRITE_TIMEOUT))?;
            let id = st.next_id;
            st.next_id += 1;
            st.subscribers.push((id, s));
            Some(id)
        } else {
            None
        };
        Ok(Session {
            run: st.run,
            took_once,
            id,
        })
    }

    /// The session's client closed its stdin: a `stdinOnce` stdin closes for good.
    fn stdin_done(&self, session: &Session) {
        let mut st = self.lock();
        if session.took_once && st.run == session.run && st.input.take().is_some() {
            tracing::info!(container = %self.name, "stdinOnce: the attach session ended, closing stdin");
        }
    }

    fn leave(&self, session: &Session) {
        self.stdin_done(session);
        if let Some(id) = session.id {
            self.lock().subscribers.retain(|(i, _)| *i != id);
        }
    }

    /// Serves the attach socket at `path` on a thread of its own, for the shim's life.
    pub(super) fn serve(self: &Arc<Self>, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let point = self.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(conn) => {
                        let p = point.clone();
                        std::thread::spawn(move || p.session(conn));
                    }
                    Err(e) => tracing::warn!(error = %e, "accepting an attach session"),
                }
            }
        });
        Ok(())
    }

    fn session(&self, mut conn: UnixStream) {
        let mut req = [0u8; 1];
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        if conn.read_exact(&mut req).is_err() {
            return;
        }
        let _ = conn.set_read_timeout(None);
        let session = match self.grant(&conn, req[0] == WANT_STDIN) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, container = %self.name, "answering an attach session");
                return;
            }
        };
        // The agent sends nothing more but STDIN_DONE; the end of the socket ends the session.
        let mut b = [0u8; 1];
        loop {
            match conn.read(&mut b) {
                Ok(0) => break,
                Ok(_) if b[0] == STDIN_DONE => self.stdin_done(&session),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.leave(&session);
    }
}

/// Copies the terminal's output to the log and to the attached sessions until the terminal
/// ends (every slave fd closed: EIO) or its stdin is closed (`stdinOnce`): then the shim
/// drops its master, which hangs the terminal up once the agent has dropped its copy too.
pub(super) fn pump_terminal(
    master: Arc<OwnedFd>,
    log: Arc<Mutex<LogWriter>>,
    point: Arc<AttachPoint>,
    run: u64,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while point.open(run) {
            let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(0) | Err(nix::Error::EINTR) => continue,
                Ok(_) => {}
                Err(_) => break,
            }
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Ok(mut w) = log.lock()
                        && let Err(e) = w.write(Stream::Stdout, &buf[..n])
                    {
                        tracing::warn!(error = %e, "writing the container log");
                    }
                    point.broadcast(run, &buf[..n]);
                }
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                // EIO: the container's side is closed for good.
                Err(_) => break,
            }
        }
        point.end_run(run);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(tty: bool, once: bool) -> (Arc<AttachPoint>, tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attach-0.sock");
        let p = Arc::new(AttachPoint::new("c", tty, true, once));
        p.serve(&path).unwrap();
        (p, dir, path)
    }

    fn ask(path: &Path, want: u8) -> (UnixStream, Vec<u8>, Option<OwnedFd>) {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(&[want]).unwrap();
        let (msg, fd) = fdpass::receive_fd(&s).unwrap();
        (s, msg, fd)
    }

    /// Reads `r` until it ends (with a bound, so a bug fails instead of hanging).
    fn read_all(r: OwnedFd) -> String {
        let mut f = std::fs::File::from(r);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the container's stdin ended")
    }

    #[test]
    fn stdin_once_goes_to_one_session_and_closes_when_it_ends() {
        let (p, _dir, path) = point(false, true);
        let (r, w) = nix::unistd::pipe().unwrap();
        p.begin_run(Some(Arc::new(w)));
        let (s, msg, fd) = ask(&path, WANT_STDIN);
        assert_eq!(msg, [STDIN]);
        let mut input = std::fs::File::from(fd.unwrap());
        input.write_all(b"hello\n").unwrap();
        // A second session gets no stdin.
        let (_s2, msg2, fd2) = ask(&path, WANT_STDIN);
        assert_eq!(msg2, [NOTHING]);
        assert!(fd2.is_none());
        // The first session ends: the container reads its input and then an end of file.
        drop(input);
        drop(s);
        assert_eq!(read_all(r), "hello\n");
    }

    #[test]
    fn stdin_without_once_stays_open_for_the_next_session() {
        let (p, _dir, path) = point(false, false);
        let (_r, w) = nix::unistd::pipe().unwrap();
        p.begin_run(Some(Arc::new(w)));
        let (s, msg, _fd) = ask(&path, WANT_STDIN);
        assert_eq!(msg, [STDIN]);
        drop(s);
        let (_s, msg, fd) = ask(&path, WANT_STDIN);
        assert_eq!(msg, [STDIN]);
        assert!(fd.is_some());
        let (_s, msg, fd) = ask(&path, OUTPUT_ONLY);
        assert_eq!((msg, fd.is_none()), (vec![NOTHING], true));
    }

    #[test]
    fn a_terminal_streams_its_output_and_hangs_up_after_a_once_session() {
        let (p, dir, path) = point(true, true);
        let pty = nix::pty::openpty(None, None).unwrap();
        let master = Arc::new(pty.master);
        let run = p.begin_run(Some(master.clone()));
        let log = Arc::new(Mutex::new(
            LogWriter::open(&dir.path().join("c.log"), crate::logs::Rotation::default()).unwrap(),
        ));
        pump_terminal(master, log, p.clone(), run);
        let (mut s, msg, fd) = ask(&path, WANT_STDIN);
        assert_eq!(msg, [TERMINAL]);
        // Input through the lent master reaches the slave; output on the slave comes back.
        let mut m = std::fs::File::from(fd.unwrap());
        m.write_all(b"x\n").unwrap();
        let mut slave = std::fs::File::from(pty.slave);
        let mut got = [0u8; 2];
        slave.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x\n");
        slave.write_all(b"out\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut seen = Vec::new();
        let mut b = [0u8; 64];
        while !String::from_utf8_lossy(&seen).contains("out") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "the output ended early: {seen:?}");
            seen.extend_from_slice(&b[..n]);
        }
        // The session's stdin ends: both masters close and the slave reads the hangup.
        drop(m);
        s.write_all(&[STDIN_DONE]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let hung_up = loop {
            let mut fds = [nix::poll::PollFd::new(
                slave.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            let r = fds[0].revents().unwrap_or(nix::poll::PollFlags::empty());
            if r.contains(nix::poll::PollFlags::POLLHUP) {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
        };
        assert!(hung_up, "the terminal hangs up after the stdinOnce session");
        // And the session's output stream ends.
        let mut rest = Vec::new();
        assert!(s.read_to_end(&mut rest).is_ok());
    }
}

//! The shim's threads: one supervisor per container, one prober per pod, and the signal
//! watcher that stops everything on SIGTERM.

use super::attach::{AttachPoint, pump_terminal};
use super::plan::{ShimContainer, ShimPlan};
use super::status::PodRuntimeStatus;
use super::types::{ContainerState, ContainerStatus, Probe};
use super::volume_watch;
use crate::backoff::{Backoff, should_restart};
use crate::logs::{LogWriter, Rotation, Stream};
use crate::probe::{Outcome, ProbeState, check_http, check_tcp};
use crate::timefmt::rfc3339;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use podd_runtime::{Container, CreateOptions};
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("pod shim in {dir}: reading plan.json failed: {source}")]
    Plan {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod shim in {dir}: writing status.json failed: {source}")]
    Status {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod shim: blocking SIGTERM failed: {0}")]
    Signals(nix::Error),
}

struct Shared {
    plan: ShimPlan,
    dir: PathBuf,
    status: Mutex<PodRuntimeStatus>,
    stop: AtomicBool,
    wake: (Mutex<()>, Condvar),
    /// fds 0-2 are process-wide: containers are created one at a time.
    create_lock: Mutex<()>,
    /// Per container: its stdin and terminal for attach sessions (with stdin or tty).
    attach: Vec<Option<Arc<AttachPoint>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps for `d` unless the shim is told to stop first.
    fn sleep(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        while !self.stopping() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            guard = self
                .wake
                .1
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn update(&self, f: impl FnOnce(&mut PodRuntimeStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.clone();
        f(&mut s);
        if *s != before
            && let Err(e) = s.save(&self.dir)
        {
            tracing::error!(error = %e, pod = %self.plan.pod, "writing status.json");
        }
    }

    fn pid(&self, i: usize) -> i32 {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).pids[i]
    }
}

/// Runs the shim for the pod whose state directory is `dir` until SIGTERM, or until every
/// container has ended for good.
pub fn run(dir: &Path) -> Result<(), ShimError> {
    let plan = ShimPlan::load(dir).map_err(|source| ShimError::Plan {
        dir: dir.to_path_buf(),
        source,
    })?;
    // Block the stop signals before any thread exists, so only the watcher receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().map_err(ShimError::Signals)?;

    let n = plan.containers.len();
    let status = PodRuntimeStatus {
        shim_pid: std::process::id() as i32,
        containers: plan
            .containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone(),
                image_id: c.image_id.clone(),
                ..ContainerStatus::default()
            })
            .collect(),
        pids: vec![0; n],
        stopped: false,
        evicted: None,
    };
    status.save(dir).map_err(|source| ShimError::Status {
        dir: dir.to_path_buf(),
        source,
    })?;
    let attach = plan
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| serve_attach(dir, i, c))
        .collect();
    let shared = Arc::new(Shared {
        plan,
        dir: dir.to_path_buf(),
        status: Mutex::new(status),
        stop: AtomicBool::new(false),
        wake: (Mutex::new(()), Condvar::new()),
        create_lock: Mutex::new(()),
        attach,
    });

    let watcher = shared.clone();
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            tracing::info!(%sig, pod = %watcher.plan.pod, "stopping the pod");
        }
        // A deletion's own grace period (deletionGracePeriodSeconds), when the agent set
        // one, wins over the pod's terminationGracePeriodSeconds.
        let grace =
            super::plan::read_grace(&watcher.dir).unwrap_or(watcher.plan.grace_period_seconds);
        stop_all(&watcher, Duration::from_secs(grace));
    });
    if !shared.plan.volume_watch.limits.is_empty() {
        let w = shared.clone();
        std::thread::spawn(move || watch_volumes(&w));
    }
    if shared
        .plan
        .containers
        .iter()
        .any(|c| c.readiness_probe.is_some() || c.liveness_probe.is_some())
    {
        let prober = shared.clone();
        std::thread::spawn(move || probe_loop(&prober));
    }
    let supervisors: Vec<_> = (0..n)
        .map(|i| {
            let s = shared.clone();
            std::thread::spawn(move || supervise(&s, i))
        })
        .collect();
    for t in supervisors {
        let _ = t.join();
    }
    shared.update(|s| s.stopped = true);
    Ok(())
}

/// The attach socket of a container with stdin or a terminal (see [`super::attach`]).
fn serve_attach(dir: &Path, i: usize, c: &ShimContainer) -> Option<Arc<AttachPoint>> {
    if !c.stdin && !c.tty {
        return None;
    }
    let point = Arc::new(AttachPoint::new(&c.name, c.tty, c.stdin, c.stdin_once));
    let path = super::attach::socket_path(dir, i);
    if let Err(e) = point.serve(&path) {
        // The container still runs; attach then has its output only.
        tracing::error!(error = %e, path = %path.display(), container = %c.name, "serving the attach socket");
    }
    Some(point)
}

/// SIGTERM to every running container, SIGKILL after the grace period (at once when it is
/// zero), repeated until no container runs, so that one starting meanwhile goes too.
fn stop_all(shared: &Shared, grace: Duration) {
    shared.stop.store(true, Ordering::SeqCst);
    shared.wake.1.notify_all();
    let signal_all = |sig: Signal| {
        for c in &shared.plan.containers {
            if let Ok(container) = Container::load(&shared.plan.runtime_root, &c.id) {
                let _ = container.kill(sig, true);
            }
        }
    };
    let running = || (0..shared.plan.containers.len()).any(|i| shared.pid(i) != 0);
    if !grace.is_zero() {
        signal_all(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        signal_all(Signal::SIGKILL);
        if !running() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Measures the pod's limited emptyDirs; evicts the pod (SIGKILL to every container, no
/// restart) when one is over its sizeLimit.
fn watch_volumes(shared: &Shared) {
    let eviction = volume_watch::watch(
        &shared.plan.volume_watch,
        |d| shared.sleep(d),
        || shared.stopping(),
    );
    if let Some(eviction) = eviction {
        tracing::warn!(pod = %shared.plan.pod, message = %eviction.message, "evicting the pod");
        shared.update(|s| s.evicted = Some(eviction));
        stop_all(shared, Duration::ZERO);
    }
}

fn supervise(shared: &Shared, i: usize) {
    let plan = &shared.plan;
    let spec = &plan.containers[i];
    let mut backoff = Backoff::new(
        Duration::from_millis(plan.backoff_initial_ms),
        Duration::from_millis(plan.backoff_max_ms),
    );
    let log = match LogWriter::open(&spec.log_path, Rotation::default()) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            tracing::error!(error = %e, "opening the container log");
            set_waiting(shared, i, "CreateContainerError", &e.to_string());
            return;
        }
    };
    let mut runs = 0u64;
    while !shared.stopping() {
        let started = Instant::now();
        // Each run after the first keeps the last one's log for `kubectl logs --previous`.
        if runs > 0
            && let Ok(mut w) = log.lock()
            && let Err(e) = w.new_run()
        {
            tracing::warn!(error = %e, "keeping the previous run's log");
        }
        runs += 1;
        let container = match start(shared, i, &log) {
            Ok(c) => c,
            Err(message) => {
                tracing::warn!(container = %spec.name, pod = %plan.pod, %message, "container did not start");
                set_waiting(shared, i, "CreateContainerError", &message);
                shared.sleep(
                    backoff
                        .on_exit(Duration::ZERO)
                        .max(Duration::from_millis(100)),
                );
                continue;
            }
        };
        let (container, attach_run) = container;
        let pid = container.pid();
        shared.update(|s| {
            s.pids[i] = pid;
            let cs = &mut s.containers[i];
            cs.state = ContainerState::Running {
                started_at: rfc3339(SystemTime::now()),
            };
            cs.ready = spec.readiness_probe.is_none();
        });
        let code = container.wait().unwrap_or(-1);
        // A pipe's stdin closes with the run; a terminal's pump ends the run when it hangs up.
        if let Some((point, run)) = &attach_run
            && !point.tty()
        {
            point.end_run(*run);
        }
        let oom = container
            .stats()
            .ok()
            .and_then(|s| s.memory_events.get("oom_kill").copied())
            .unwrap_or(0)
            > 0;
        if let Err(e) = container.delete(true) {
            tracing::warn!(error = %e, container = %spec.name, "deleting the exited container");
        }
        if let Ok(mut w) = log.lock() {
            let _ = w.flush();
        }
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let terminated = ContainerState::Terminated {
            exit_code: code,
            signal: (code > 128).then_some(code - 128),
            reason: reason.into(),
            finished_at: rfc3339(SystemTime::now()),
        };
        tracing::info!(container = %spec.name, pod = %plan.pod, code, reason, "container exited");
        let restart = !shared.stopping() && should_restart(plan.restart_policy, code);
        let delay = backoff.on_exit(started.elapsed());
        shared.update(|s| {
            s.pids[i] = 0;
            let cs = &mut s.containers[i];
            cs.ready = false;
            if restart {
                cs.last_state = Some(terminated.clone());
                cs.state = ContainerState::waiting(
                    "CrashLoopBackOff",
                    &format!(
                        "back-off {}s restarting container {} ({reason}, exit code {code})",
                        delay.as_secs_f64().ceil(),
                        spec.name
                    ),
                );
            } else {
                cs.state = terminated.clone();
            }
        });
        if !restart {
            break;
        }
        shared.sleep(delay);
        if shared.stopping() {
            break;
        }
        shared.update(|s| s.containers[i].restart_count += 1);
    }
}

fn set_waiting(shared: &Shared, i: usize, reason: &str, message: &str) {
    tracing::debug!(reason, message, "container waiting");
    shared.update(|s| {
        s.containers[i].state = ContainerState::waiting(reason, message);
        s.containers[i].ready = false;
    });
}

/// One run's attach point and run number, while the container runs.
type AttachRun = Option<(Arc<AttachPoint>, u64)>;

/// Creates and starts one container with its stdout and stderr on fresh pipes (or, with
/// `tty: true`, on a pty).
fn start(
    shared: &Shared,
    i: usize,
    log: &Arc<Mutex<LogWriter>>,
) -> Result<(Container, AttachRun), String> {
    let spec = &shared.plan.containers[i];
    // A container left by an earlier shim of this pod goes first.
    if let Ok(old) = Container::load(&shared.plan.runtime_root, &spec.id) {
        let _ = old.delete(true);
    }
    let mut opts = CreateOptions::new(&shared.plan.runtime_root);
    opts.cgroup_root = shared.plan.cgroup_root.clone();
    if spec.tty {
        return start_tty(shared, i, opts, log);
    }
    let (out_r, out_w) = pipe().map_err(|e| format!("creating the stdout pipe: {e}"))?;
    let (err_r, err_w) = pipe().map_err(|e| format!("creating the stderr pipe: {e}"))?;
    let stdin = if spec.stdin {
        Some(run_stdin(shared, spec)?)
    } else {
        None
    };
    let mut container = {
        let _one_at_a_time = shared.create_lock.lock().unwrap_or_else(|e| e.into_inner());
        with_stdio(
            stdin.as_ref().map(|(theirs, _)| theirs),
            &out_w,
            &err_w,
            || Container::create(&spec.id, &spec.bundle, &spec.spec, &opts),
        )
        .map_err(|e| e.to_string())?
    };
    drop((out_w, err_w));
    pump(out_r, Stream::Stdout, log.clone());
    pump(err_r, Stream::Stderr, log.clone());
    let attach_run = shared.attach[i].clone().map(|p| {
        let run = p.begin_run(stdin.map(|(_, ours)| Arc::new(ours)));
        (p, run)
    });
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        if let Some((p, run)) = &attach_run {
            p.end_run(*run);
        }
        return Err(e.to_string());
    }
    Ok((container, attach_run))
}

/// Creates and starts a `tty: true` container: the runtime opens a pty in the container's
/// devpts, makes its slave the process's controlling terminal and stdio, and sends the master
/// to a console socket of ours (as for `kubectl exec -t`). The shim keeps the master: its
/// output goes to the log and to attach sessions; sessions write input and resizes to it.
fn start_tty(
    shared: &Shared,
    i: usize,
    mut opts: CreateOptions,
    log: &Arc<Mutex<LogWriter>>,
) -> Result<(Container, AttachRun), String> {
    let spec = &shared.plan.containers[i];
    let point = shared.attach[i]
        .clone()
        .ok_or("a tty container has no attach point")?;
    let console = shared.dir.join(format!("console-{i}.sock"));
    let _ = std::fs::remove_file(&console);
    let listener = std::os::unix::net::UnixListener::bind(&console)
        .map_err(|e| format!("binding the console socket {}: {e}", console.display()))?;
    let mut oci = spec.spec.clone();
    let mut process = oci.process().clone().unwrap_or_default();
    process.set_terminal(Some(true));
    // As the CRI runtimes do for a tty container.
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    process.set_env(Some(env));
    oci.set_process(Some(process));
    opts.console_socket = Some(console.clone());
    let created = File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| format!("opening /dev/null: {e}"))
        .and_then(|null| {
            let _one_at_a_time = shared.create_lock.lock().unwrap_or_else(|e| e.into_inner());
            with_stdio(Some(&null), &null, &null, || {
                Container::create(&spec.id, &spec.bundle, &oci, &opts)
            })
            .map_err(|e| e.to_string())
        });
    // The runtime connected and sent the master during create: it waits in the backlog.
    let master = created.and_then(|c| {
        let (conn, _) = listener
            .accept()
            .map_err(|e| format!("accepting on the console socket: {e}"))?;
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        match crate::fdpass::receive_fd(&conn) {
            Ok((_, Some(master))) => Ok((c, master)),
            Ok((_, None)) => Err("the runtime sent no pty master".to_string()),
            Err(e) => Err(format!("receiving the pty master: {e}")),
        }
    });
    let _ = std::fs::remove_file(&console);
    let (mut container, master) = master?;
    let master = Arc::new(master);
    let run = point.begin_run(Some(master.clone()));
    pump_terminal(master, log.clone(), point.clone(), run);
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        point.end_run(run);
        return Err(e.to_string());
    }
    Ok((container, Some((point, run))))
}

/// The stdin of one run of a `stdin: true` container: (the container's end, the shim's).
/// Without `stdinOnce` both are the pod's FIFO, held read-write so the container never
/// reads an end of file; with it, a pipe of the run's own, whose write end closes after the
/// first attach session (see [`super::attach`]).
fn run_stdin(shared: &Shared, spec: &ShimContainer) -> Result<(OwnedFd, OwnedFd), String> {
    if spec.stdin_once {
        let (r, w) = pipe().map_err(|e| format!("creating the stdin pipe: {e}"))?;
        return Ok((r, w));
    }
    let fifo = OwnedFd::from(stdin_fifo(shared, spec)?);
    let ours = fifo
        .try_clone()
        .map_err(|e| format!("duplicating the stdin FIFO: {e}"))?;
    Ok((fifo, ours))
}

/// The FIFO that is a `stdin: true` container's fd 0, opened read-write: the container never
/// reads an end of file while the shim lives, and `kubectl attach -i` (the agent) writes
/// into it. Made once per pod; a restarted container gets the same one.
fn stdin_fifo(shared: &Shared, spec: &ShimContainer) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = shared
        .plan
        .runtime_root
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = crate::shim::plan::stdin_fifo(&dir, &spec.name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(format!("creating the stdin FIFO {}: {e}", path.display())),
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("opening the stdin FIFO {}: {e}", path.display()))
}

fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// Runs `f` with fds 1 and 2 pointing at the given pipes and fd 0 at the stdin FIFO (or
/// /dev/null), so that the
/// container's init inherits them; restores the shim's own afterwards.
fn with_stdio<T>(
    stdin: Option<&OwnedFd>,
    out: &OwnedFd,
    err: &OwnedFd,
    f: impl FnOnce() -> T,
) -> T {
    use nix::unistd::{dup, dup2};
    let saved: Vec<Option<i32>> = (0..3).map(|fd| dup(fd).ok()).collect();
    match stdin {
        Some(fifo) => {
            let _ = dup2(fifo.as_raw_fd(), 0);
        }
        None => {
            if let Ok(null) = File::open("/dev/null") {
                let _ = dup2(null.as_raw_fd(), 0);
            }
        }
    }
    let _ = dup2(out.as_raw_fd(), 1);
    let _ = dup2(err.as_raw_fd(), 2);
    let result = f();
    for (fd, s) in saved.into_iter().enumerate() {
        if let Some(s) = s {
            let _ = dup2(s, fd as i32);
            let _ = nix::unistd::close(s);
        }
    }
    result
}

/// Copies one pipe into the log until the container closes it.
fn pump(fd: OwnedFd, stream: Stream, log: Arc<Mutex<LogWriter>>) {
    std::thread::spawn(move || {
        let mut f = File::from(fd);
        let mut buf = [0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Ok(mut w) = log.lock()
                        && let Err(e) = w.write(stream, &buf[..n])
                    {
                        tracing::warn!(error = %e, "writing the container log");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
}

/// Probe state of one container, reset when it restarts.
struct Probes {
    pid: i32,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
}

/// Runs every probe of the pod from inside its network namespace.
fn probe_loop(shared: &Shared) {
    let plan = &shared.plan;
    match File::open(&plan.netns) {
        Ok(ns) => {
            if let Err(e) = nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET) {
                tracing::error!(error = %e, netns = %plan.netns.display(), "probes cannot enter the pod network");
                return;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, netns = %plan.netns.display(), "probes cannot open the pod network");
            return;
        }
    }
    let ip = plan
        .pod_ip
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut probes: Vec<Probes> = plan
        .containers
        .iter()
        .map(|_| Probes {
            pid: 0,
            readiness: None,
            liveness: None,
        })
        .collect();
    while !shared.stopping() {
        for (i, c) in plan.containers.iter().enumerate() {
            let pid = shared.pid(i);
            let p = &mut probes[i];
            if pid != p.pid {
                let now = Instant::now();
                p.pid = pid;
                p.readiness = c
                    .readiness_probe
                    .clone()
                    .map(|pr| ProbeState::readiness(pr, now));
                p.liveness = c
                    .liveness_probe
                    .clone()
                    .map(|pr| ProbeState::liveness(pr, now));
            }
            if pid == 0 {
                continue;
            }
            let now = Instant::now();
            if let Some(r) = p.readiness.as_mut()
                && r.due(now)
            {
                let outcome = check(shared, c, r.probe(), ip);
                if r.record(now, outcome) {
                    let ready = r.passing();
                    tracing::info!(container = %c.name, ready, "readiness changed");
                    shared.update(|s| s.containers[i].ready = ready && s.pids[i] == pid);
                }
            }
            if let Some(l) = p.liveness.as_mut()
                && l.due(now)
            {
                let outcome = check(shared, c, l.probe(), ip);
                if l.record(now, outcome) && !l.passing() {
                    tracing::warn!(container = %c.name, pod = %plan.pod, "liveness probe failed; restarting");
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        shared.sleep(Duration::from_millis(100));
    }
}

fn check(shared: &Shared, c: &ShimContainer, probe: &Probe, ip: IpAddr) -> Outcome {
    let timeout = Duration::from_secs(u64::from(probe.timeout().max(1)));
    if let Some(t) = &probe.tcp_socket {
        return check_tcp(ip, t.port, timeout);
    }
    if let Some(h) = &probe.http_get {
        return check_http(ip, h.port, &h.path, timeout);
    }
    if let Some(e) = &probe.exec {
        return exec_probe(shared, c, &e.command, timeout);
    }
    Outcome::Failure
}

/// Runs the probe's command inside the container; exit 0 within the timeout passes.
fn exec_probe(
    shared: &Shared,
    c: &ShimContainer,
    command: &[String],
    timeout: Duration,
) -> Outcome {
    let Ok(container) = Container::load(&shared.plan.runtime_root, &c.id) else {
        return Outcome::Failure;
    };
    let Some(mut process) = c.spec.process().clone() else {
        return Outcome::Failure;
    };
    process.set_args(Some(command.to_vec()));
    let pid = match container.exec(&process, &Default::default()) {
        Ok(pid) => Pid::from_raw(pid),
        Err(_) => return Outcome::Failure,
    };
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, 0)) => return Outcome::Success,
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => {
                return Outcome::Failure;
            }
            Ok(_) if Instant::now() >= deadline => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Outcome::Failure;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

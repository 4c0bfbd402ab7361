//! podd-oci: an OCI runtime (the runc command line) on podd-runtime.

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use podd_runtime::{Container, CreateOptions, ExecOptions, spec};

#[derive(Parser, Debug)]
#[command(
    name = "podd-oci",
    version,
    about = "OCI container runtime of podd (runc-compatible command line)"
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/podd-oci")]
    root: PathBuf,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// cgroup v2 directory that cgroupsPath is relative to (default: the cgroup2 mount).
    #[arg(long = "cgroup-root", global = true, env = "PODD_OCI_CGROUP_ROOT")]
    cgroup_root: Option<PathBuf>,
    /// systemd cgroup driver (not supported; podd-oci manages cgroupfs paths).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write the container's init pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Pass N extra fds (from 3) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for compatibility; session keyrings are not created.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Accepted for compatibility; pivot_root is always used.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Container id.
    id: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create, start, wait, delete; exits with the container's exit code.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return after start instead of waiting.
        #[arg(short, long)]
        detach: bool,
    },
    /// Print the state JSON.
    State { id: String },
    /// Send a signal (default SIGTERM).
    Kill {
        /// Signal every process in the container's cgroup.
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a stopped (or, with --force, any) container.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Freeze a running container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List containers.
    List {
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the pids in the container's cgroup.
    Ps {
        /// table or json
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
    },
    /// Print cgroup stats as JSON.
    Events {
        /// Print once and exit.
        #[arg(long)]
        stats: bool,
        id: String,
    },
    /// Run a process inside a running container.
    Exec {
        /// process.json describing the process (else the args below with the bundle's process).
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(short, long)]
        detach: bool,
        #[arg(short, long)]
        tty: bool,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Write a default config.json into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Print the runtime's features as JSON.
    Features,
}

fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow!("unknown signal number {n}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    Signal::from_str(&name).map_err(|_| anyhow!("unknown signal {s:?}"))
}

fn create_opts(cli: &Cli, a: &CreateArgs) -> CreateOptions {
    let mut o = CreateOptions::new(&cli.root);
    o.cgroup_root = cli.cgroup_root.clone();
    o.console_socket = a.console_socket.clone();
    o.pid_file = a.pid_file.clone();
    o.preserve_fds = a.preserve_fds;
    o
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn run(cli: &Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!(
            "--systemd-cgroup is not supported: podd-oci manages cgroupfs paths (use a path cgroupsPath)"
        );
    }
    match &cli.cmd {
        Cmd::Create(a) => {
            if a.no_pivot {
                tracing::warn!("--no-pivot ignored: podd-oci always uses pivot_root");
            }
            Container::create_from_bundle(&a.id, &a.bundle, &create_opts(cli, a))?;
        }
        Cmd::Start { id } => Container::load(&cli.root, id)?.start_settled()?,
        Cmd::Run { create, detach } => {
            // Block the signals to forward before the container exists, so none is lost; the
            // container's init clears its mask.
            let forwarded = forwarded_signals();
            if !*detach {
                forwarded.thread_block().context("block signals")?;
            }
            let mut c = Container::create_from_bundle(
                &create.id,
                &create.bundle,
                &create_opts(cli, create),
            )?;
            // Attached, nobody acts on `start` returning: the program only has to run (the
            // wait below sees it exit). Detached, the caller goes on at once, as after `start`.
            let started = if *detach {
                c.start_settled()
            } else {
                c.start()
            };
            if let Err(e) = started {
                let _ = c.clone().delete(true);
                return Err(e.into());
            }
            if *detach {
                return Ok(0);
            }
            let code = wait_forwarding(c.pid(), &forwarded)?;
            c.delete(true)?;
            return Ok(code);
        }
        Cmd::State { id } => print_json(&Container::load(&cli.root, id)?.oci_state())?,
        Cmd::Kill { all, id, signal } => {
            Container::load(&cli.root, id)?.kill(parse_signal(signal)?, *all)?
        }
        Cmd::Delete { force, id } => match Container::load(&cli.root, id) {
            Ok(c) => c.delete(*force)?,
            // delete --force of a missing container succeeds, as runc's does.
            Err(podd_runtime::Error::NotFound { .. }) if *force => {}
            Err(e) => return Err(e.into()),
        },
        Cmd::Pause { id } => Container::load(&cli.root, id)?.pause()?,
        Cmd::Resume { id } => Container::load(&cli.root, id)?.resume()?,
        Cmd::List { quiet } => {
            let mut out = std::io::stdout().lock();
            if !quiet {
                writeln!(out, "{:<24} {:>8} {:<10} BUNDLE", "ID", "PID", "STATUS")?;
            }
            for id in Container::list(&cli.root)? {
                if *quiet {
                    writeln!(out, "{id}")?;
                } else if let Ok(c) = Container::load(&cli.root, &id) {
                    let s = c.oci_state();
                    writeln!(
                        out,
                        "{:<24} {:>8} {:<10} {}",
                        s.id,
                        s.pid,
                        s.status,
                        s.bundle.display()
                    )?;
                }
            }
        }
        Cmd::Ps { format, id } => {
            let c = Container::load(&cli.root, id)?;
            let pids = match c.cgroup() {
                Some(cg) => cg.pids()?,
                None => vec![c.pid()],
            };
            if format == "json" {
                print_json(&pids)?;
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(out, "PID")?;
                for p in pids {
                    writeln!(out, "{p}")?;
                }
            }
        }
        Cmd::Events { id, .. } => print_json(&Container::load(&cli.root, id)?.stats()?)?,
        Cmd::Exec {
            process,
            console_socket,
            pid_file,
            detach,
            tty,
            cwd,
            env,
            preserve_fds,
            id,
            args,
        } => {
            let c = Container::load(&cli.root, id)?;
            let mut p: oci_spec::runtime::Process = match process {
                Some(path) => serde_json::from_slice(
                    &std::fs::read(path).with_context(|| format!("read {}", path.display()))?,
                )
                .with_context(|| format!("parse process {}", path.display()))?,
                None => {
                    if args.is_empty() {
                        bail!("exec needs a command (or --process FILE)");
                    }
                    let bundle = c.oci_state().bundle;
                    let mut p = spec::load_bundle(&bundle)?
                        .process()
                        .clone()
                        .unwrap_or_default();
                    p.set_args(Some(args.clone()));
                    p.set_terminal(Some(*tty));
                    p
                }
            };
            if let Some(cwd) = cwd {
                p.set_cwd(cwd.clone());
            }
            if !env.is_empty() {
                let mut e = p.env().clone().unwrap_or_default();
                e.extend(env.iter().cloned());
                p.set_env(Some(e));
            }
            let opts = ExecOptions {
                console_socket: console_socket.clone(),
                preserve_fds: *preserve_fds,
            };
            let forwarded = forwarded_signals();
            if !*detach {
                forwarded.thread_block().context("block signals")?;
            }
            let pid = c.exec(&p, &opts)?;
            if let Some(pf) = pid_file {
                std::fs::write(pf, pid.to_string())
                    .with_context(|| format!("write {}", pf.display()))?;
            }
            if *detach {
                return Ok(0);
            }
            return wait_forwarding(pid, &forwarded);
        }
        Cmd::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} exists; remove it first", path.display());
            }
            let mut s = oci_spec::runtime::Spec::default();
            s.set_hostname(Some("podd".into()));
            // Deny all devices but the defaults, as `runc spec` does.
            if let Some(mut linux) = s.linux().clone() {
                linux.set_resources(Some(serde_json::from_value(
                    serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]}),
                )?));
                s.set_linux(Some(linux));
            }
            std::fs::write(&path, serde_json::to_vec_pretty(&s)?)
                .with_context(|| format!("write {}", path.display()))?;
        }
        Cmd::Features => print_json(&serde_json::json!({
            "ociVersionMin": "1.0.0",
            "ociVersionMax": podd_runtime::OCI_VERSION,
            "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
            "mountOptions": ["ro", "rw", "nosuid", "nodev", "noexec", "bind", "rbind", "rprivate", "rslave", "rshared"],
            "linux": {
                "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
                "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "cgroup": { "v1": false, "v2": true, "systemd": false },
                "seccomp": { "enabled": true },
                "apparmor": { "enabled": false },
                "selinux": { "enabled": false },
            },
        }))?,
    }
    Ok(0)
}

fn forwarded_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal::*;
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [
        SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

/// Wait for `pid` (our child: the container's init or an exec'd process), forwarding the
/// signals we receive to it.
fn wait_forwarding(pid: i32, set: &nix::sys::signal::SigSet) -> Result<i32> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let pid = nix::unistd::Pid::from_raw(pid);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e).context("wait for the container"),
        }
        let sig = set.wait().context("wait for signals")?;
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
}

/// The current time in RFC 3339 (UTC).
fn rfc3339_now() -> String {
    // RFC 3339 with nanoseconds, as runc's log lines.
    format!("{:.9}", jiff::Timestamp::now())
}

fn init_logging(cli: &Cli) -> Result<()> {
    let level = if cli.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PODD_OCI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &cli.log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("open log file {}", path.display()))?;
            if cli.log_format == "json" {
                builder
                    .json()
                    .with_writer(std::sync::Mutex::new(file))
                    .init();
            } else {
                builder
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .init();
            }
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn log_error(cli: &Cli, msg: &str) {
    // Engines (containerd, podman) read the last error from the log file in runc's JSON shape.
    if let Some(path) = &cli.log
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let line = if cli.log_format == "json" {
            serde_json::json!({"level": "error", "msg": msg, "time": rfc3339_now()}).to_string()
        } else {
            format!("{} error: {msg}", rfc3339_now())
        };
        let _ = writeln!(f, "{line}");
    }
    let _ = writeln!(std::io::stderr(), "podd-oci: {msg}");
}

/// Whether the command line may name a command whose processes enter a container (create,
/// run, exec). Read from the raw arguments, before clap parses them, so the process that
/// re-executes itself does not parse twice. A subcommand is matched only by its exact name (no
/// aliases, no inferred prefixes), so one that enters a container always shows up here; a
/// false positive (a container named `run`) only costs the re-execution.
fn may_enter_a_container() -> bool {
    std::env::args_os()
        .skip(1)
        .any(|a| a == "create" || a == "run" || a == "exec")
}

fn main() {
    // The commands whose processes enter a container run from a sealed copy of this binary, so
    // the container cannot reach (and overwrite) the host's file through /proc/<pid>/exe.
    if may_enter_a_container()
        && let Err(e) = podd_runtime::sealed_exe::ensure("podd-oci")
    {
        let _ = writeln!(std::io::stderr(), "podd-oci: {e}");
        std::process::exit(1);
    }
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        let _ = writeln!(std::io::stderr(), "podd-oci: {e:#}");
        std::process::exit(1);
    }
    match run(&cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            log_error(&cli, &format!("{e:#}"));
            std::process::exit(1);
        }
    }
}

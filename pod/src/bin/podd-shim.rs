//! `podd-shim POD_STATE_DIR`: the per-pod supervisor the agent starts (see `podd_pod::shim`).
//! It runs detached from the agent, logs to `POD_STATE_DIR/shim.log`, and exits when the pod's
//! containers have ended for good or on SIGTERM.
//!
//! `podd-shim exec POD_STATE_DIR CONTAINER [--console-socket PATH] -- CMD [ARGS...]` runs a
//! command inside a running container with this process's stdio (or, with a console socket,
//! a pty whose master is sent there) and exits with its exit code; the agent uses it for
//! `kubectl exec` and keeps its own file descriptors untouched.

use anyhow::{Context, bail};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    // Both modes fork processes that enter containers: run from an unwritable copy of this binary
    // so a container cannot reach the host's file through /proc/<pid>/exe (CVE-2019-5736).
    podd_runtime::sealed_exe::ensure("podd-shim")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "exec") {
        let code = exec(&args[1..])?;
        std::process::exit(code);
    }
    let dir: PathBuf = args.first().map(PathBuf::from).context(
        "usage: podd-shim POD_STATE_DIR | podd-shim exec POD_STATE_DIR CONTAINER -- CMD...",
    )?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(podd_pod::shim::plan::SHIM_LOG_FILE))
        .with_context(|| format!("opening the shim log in {}", dir.display()))?;
    tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(log))
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PODD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    podd_pod::shim::run(&dir).with_context(|| format!("pod shim for {}", dir.display()))
}

fn exec(args: &[std::ffi::OsString]) -> anyhow::Result<i32> {
    let (Some(dir), Some(container)) = (args.first(), args.get(1)) else {
        bail!("usage: podd-shim exec POD_STATE_DIR CONTAINER -- CMD [ARGS...]");
    };
    let dir = PathBuf::from(dir);
    let container = container.to_string_lossy().to_string();
    // Options between the container and `--`: `--console-socket PATH` (a terminal).
    let opts: Vec<&std::ffi::OsString> = args[2..].iter().take_while(|a| *a != "--").collect();
    let console = match opts.as_slice() {
        [] => None,
        [flag, path] if *flag == "--console-socket" => Some(PathBuf::from(path)),
        other => bail!("exec into {container}: unknown options {other:?} before --"),
    };
    let argv: Vec<String> = args[2..]
        .iter()
        .skip_while(|a| *a != "--")
        .skip(1)
        .map(|a| a.to_string_lossy().to_string())
        .collect();
    if argv.is_empty() {
        bail!("exec into {container}: no command given after --");
    }
    podd_pod::shim::exec(&dir, &container, &argv, console.as_deref()).with_context(|| {
        format!(
            "exec into container {container:?} of the pod in {}",
            dir.display()
        )
    })
}

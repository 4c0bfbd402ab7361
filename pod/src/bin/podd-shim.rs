//! `podd-shim POD_STATE_DIR`: the per-pod supervisor the agent starts (see `podd_pod::shim`).
//! It runs detached from the agent, logs to `POD_STATE_DIR/shim.log`, and exits when the pod's
//! containers have ended for good or on SIGTERM.

use anyhow::Context;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: podd-shim POD_STATE_DIR")?;
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

//! OCI hooks: run a program with the container state on stdin, with an optional timeout.
//!
//! prestart, createRuntime, createContainer and startContainer hooks fail the operation
//! ([`run_all`]); poststart and poststop hooks only warn, and the remaining ones still run
//! ([`run_all_warn`]).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};
use crate::state::OciState;

/// Run each hook in order; the first failure stops the list.
pub fn run_all(kind: &'static str, hooks: Option<&Vec<Hook>>, state: &OciState) -> Result<()> {
    let Some(hooks) = hooks else { return Ok(()) };
    if hooks.is_empty() {
        return Ok(());
    }
    let body = serde_json::to_vec(state).map_err(|e| Error::Init(format!("encode state: {e}")))?;
    for hook in hooks {
        run_one(kind, hook, &body)?;
    }
    Ok(())
}

/// Run every hook in order; a failing hook is logged as a warning and the rest still run
/// (the spec's rule for poststart and poststop hooks). Returns how many failed.
pub fn run_all_warn(kind: &'static str, hooks: Option<&Vec<Hook>>, state: &OciState) -> usize {
    let Some(hooks) = hooks.filter(|h| !h.is_empty()) else {
        return 0;
    };
    let body = match serde_json::to_vec(state) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(kind, error = %e, "cannot encode the state for the hooks; none run");
            return hooks.len();
        }
    };
    let mut failed = 0;
    for hook in hooks {
        if let Err(e) = run_one(kind, hook, &body) {
            failed += 1;
            tracing::warn!(kind, id = %state.id, error = %e, "hook failed; the remaining hooks still run");
        }
    }
    failed
}

fn run_one(kind: &'static str, hook: &Hook, state: &[u8]) -> Result<()> {
    let fail = |message: String| Error::Hook {
        kind,
        path: hook.path().clone(),
        message,
    };
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args()
        && let Some((arg0, rest)) = args.split_first()
    {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin must not fail the write.
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait().map_err(|e| fail(format!("wait: {e}")))? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(fail(format!("exited with {status}"))),
            None => {}
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

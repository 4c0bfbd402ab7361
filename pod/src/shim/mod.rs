//! The pod shim: one small supervisor process per pod, which outlives agent restarts.
//!
//! The agent prepares the sandbox (namespaces, network, volumes, rootfs), writes a
//! [`ShimPlan`] into the pod's state directory and starts the shim (the podd binary in shim
//! mode, detached). The shim runs each container through the runtime, pumps its stdout and
//! stderr into rotated log files, restarts it by the pod's restartPolicy with back-off, runs
//! the readiness and liveness probes, and keeps `status.json` current. A restarted agent
//! reads `status.json` and finds the pod as it left it. SIGTERM stops the containers (with
//! the grace period) and ends the shim; the agent then tears the sandbox down.

pub mod attach;
pub mod plan;
pub mod status;
mod supervisor;
pub mod types;
pub mod volume_watch;

pub use plan::{ShimContainer, ShimPlan, VolumeLimit, VolumeWatch};
pub use status::{Eviction, PodRuntimeStatus, read_status};
pub use supervisor::run;
pub use types::{ContainerState, ContainerStatus, Probe, RestartPolicy};

/// Runs `argv` inside the pod's running container `container` with the caller's stdio and
/// returns its exit code (128+signal when killed).
///
/// With `console_socket`, the command gets a terminal instead: a pty opened in the
/// container's devpts, its controlling terminal and stdio; the pty's master goes to that Unix
/// socket (SCM_RIGHTS), where the agent relays it (`kubectl exec -t`). `TERM` defaults to
/// `xterm` then.
pub fn exec(
    pod_dir: &std::path::Path,
    container: &str,
    argv: &[String],
    console_socket: Option<&std::path::Path>,
) -> Result<i32, ExecError> {
    use nix::sys::wait::{WaitStatus, waitpid};
    let plan =
        ShimPlan::load(pod_dir).map_err(|e| ExecError(format!("reading the pod plan: {e}")))?;
    let c = plan
        .containers
        .iter()
        .find(|c| c.name == container)
        .ok_or_else(|| {
            let names: Vec<&str> = plan.containers.iter().map(|c| c.name.as_str()).collect();
            ExecError(format!(
                "the pod {} has no container {container:?}; its containers are {}",
                plan.pod,
                names.join(", ")
            ))
        })?;
    let running = podd_runtime::Container::load(&plan.runtime_root, &c.id)
        .map_err(|e| ExecError(format!("the container is not running: {e}")))?;
    let mut process = c.spec.process().clone().unwrap_or_default();
    process.set_args(Some(argv.to_vec()));
    process.set_terminal(Some(console_socket.is_some()));
    if console_socket.is_some() {
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".to_string());
        }
        process.set_env(Some(env));
    }
    let opts = podd_runtime::ExecOptions {
        console_socket: console_socket.map(std::path::Path::to_path_buf),
        ..Default::default()
    };
    let pid = running
        .exec(&process, &opts)
        .map_err(|e| ExecError(e.to_string()))?;
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(ExecError(format!("waiting for the command: {e}"))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

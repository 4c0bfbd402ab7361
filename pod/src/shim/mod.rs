//! The pod shim: one small supervisor process per pod, which outlives agent restarts.
//!
//! The agent prepares the sandbox (namespaces, network, volumes, rootfs), writes a
//! [`ShimPlan`] into the pod's state directory and starts the shim (the podd binary in shim
//! mode, detached). The shim runs each container through the runtime, pumps its stdout and
//! stderr into rotated log files, restarts it by the pod's restartPolicy with back-off, runs
//! the readiness and liveness probes, and keeps `status.json` current. A restarted agent
//! reads `status.json` and finds the pod as it left it. SIGTERM stops the containers (with
//! the grace period) and ends the shim; the agent then tears the sandbox down.

pub mod plan;
pub mod status;
mod supervisor;

pub use plan::{ShimContainer, ShimPlan};
pub use status::{PodRuntimeStatus, read_status};
pub use supervisor::run;

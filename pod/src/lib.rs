//! Pods on a node: everything that turns a Pod object into running containers, for the agent.
//!
//! The pure parts (restart back-off, probe state, log format and rotation, usage arithmetic)
//! live in their own modules so that they are unit-tested without a kernel.

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
// Dependencies of the podd-shim binary only (a package's binaries share its dependencies).
use anyhow as _;
use tracing_subscriber as _;

pub mod atomic_writer;
pub mod backoff;
pub mod downward;
pub mod env;
pub mod etc_files;
pub mod fdpass;
pub mod logs;
pub mod manager;
pub mod pod_status;
pub mod probe;
pub mod projection;
pub mod shim;
pub mod sources;
pub mod spec;
pub mod stats;
pub mod timefmt;
pub mod tree;
pub mod volumes;

/// `namespace/name` of a pod, for messages.
pub fn pod_name(pod: &podd_api::Pod) -> String {
    use podd_api::ResourceExt;
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

//! The pod's runtime status, written by the shim on every change and read by the agent.

use super::plan::{STATUS_FILE, write_atomic};
use super::types::ContainerStatus;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRuntimeStatus {
    pub shim_pid: i32,
    pub containers: Vec<ContainerStatus>,
    /// Host pids of the containers' init processes while they run (0 when not running).
    pub pids: Vec<i32>,
    /// Set when the shim has stopped every container and is about to exit.
    pub stopped: bool,
    /// Set when the shim evicted the pod (an emptyDir over its sizeLimit): the pod is Failed
    /// with this reason and message, and is not run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted: Option<Eviction>,
}

/// Why a pod was evicted, as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    /// "Evicted".
    pub reason: String,
    /// `Usage of EmptyDir volume "scratch" exceeds the limit "1Mi".`
    pub message: String,
}

impl PodRuntimeStatus {
    pub fn save(&self, pod_dir: &Path) -> std::io::Result<()> {
        let data = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        write_atomic(&pod_dir.join(STATUS_FILE), &data)
    }

    pub fn all_ready(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.ready)
    }
}

/// The last status the pod's shim wrote; None before its first write.
pub fn read_status(pod_dir: &Path) -> std::io::Result<Option<PodRuntimeStatus>> {
    match std::fs::read(pod_dir.join(STATUS_FILE)) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

//! What the agent tells a pod's shim to run (`<pod state dir>/plan.json`).

use super::types::{Probe, RestartPolicy};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimPlan {
    /// `namespace/name`, for messages.
    pub pod: String,
    pub pod_uid: String,
    /// The runtime's state root for this pod's containers.
    pub runtime_root: PathBuf,
    /// The cgroup v2 directory that container cgroup paths are relative to.
    pub cgroup_root: Option<PathBuf>,
    /// The pod's network namespace, where TCP and HTTP probes run.
    pub netns: PathBuf,
    pub pod_ip: Option<Ipv4Addr>,
    pub restart_policy: RestartPolicy,
    pub grace_period_seconds: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub containers: Vec<ShimContainer>,
    /// The emptyDirs the shim measures, evicting the pod when one is over its sizeLimit.
    #[serde(default)]
    pub volume_watch: VolumeWatch,
}

/// The pod's disk-backed emptyDirs that have a sizeLimit, and how they are measured. The
/// shim measures each one every `interval_ms` (stretched so that measuring takes at most a
/// tenth of the time) and evicts the pod when one is over its limit, as the kubelet does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeWatch {
    pub limits: Vec<VolumeLimit>,
    pub interval_ms: u64,
    /// The most inodes one measurement of a volume looks at, which bounds its cost; a
    /// volume holding more is evicted too, since its usage cannot be known.
    pub max_entries: u64,
}

impl Default for VolumeWatch {
    fn default() -> Self {
        VolumeWatch {
            limits: Vec::new(),
            interval_ms: DEFAULT_VOLUME_CHECK_MS,
            max_entries: DEFAULT_VOLUME_MAX_ENTRIES,
        }
    }
}

/// One emptyDir whose disk usage is limited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeLimit {
    pub name: String,
    /// The volume's directory on the node.
    pub path: PathBuf,
    pub limit_bytes: u64,
    /// The limit as the pod spec gives it ("1Mi"), for the eviction message.
    pub limit: String,
}

/// The default interval between two measurements of a pod's limited emptyDirs.
pub const DEFAULT_VOLUME_CHECK_MS: u64 = 1000;
/// The default cap on the inodes one measurement of a volume looks at.
pub const DEFAULT_VOLUME_MAX_ENTRIES: u64 = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimContainer {
    pub name: String,
    pub image: String,
    /// The runtime's container id: `<pod uid>-<name>`.
    pub id: String,
    /// The bundle directory (holds the rootfs mount point).
    pub bundle: PathBuf,
    pub spec: Spec,
    pub log_path: PathBuf,
    /// The image's identity for `containerStatuses[].imageID` (empty in older plans).
    #[serde(default)]
    pub image_id: String,
    pub readiness_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    /// The container asked for `stdin: true`: its fd 0 is a FIFO the shim keeps open
    /// ([`stdin_fifo`]), where `kubectl attach -i` writes.
    #[serde(default)]
    pub stdin: bool,
    /// `stdinOnce: true`: stdin closes when the first attach session that took it ends
    /// (see [`super::attach`]).
    #[serde(default)]
    pub stdin_once: bool,
    /// `tty: true`: the container's stdio is a pty whose master the shim holds.
    #[serde(default)]
    pub tty: bool,
}

/// The FIFO that is the stdin of `container` (with `stdin: true`) of the pod whose state
/// directory is `pod_dir`.
pub fn stdin_fifo(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("stdin").join(container)
}

pub const PLAN_FILE: &str = "plan.json";
pub const STATUS_FILE: &str = "status.json";
pub const SHIM_LOG_FILE: &str = "shim.log";
/// The grace period of a deletion, in seconds, written by the agent before it stops the shim.
pub const GRACE_FILE: &str = "grace";

/// Records the grace period the shim gives the containers when it is stopped next.
pub fn write_grace(pod_dir: &Path, seconds: u64) -> std::io::Result<()> {
    write_atomic(&pod_dir.join(GRACE_FILE), seconds.to_string().as_bytes())
}

/// The grace period [`write_grace`] recorded, if any.
pub fn read_grace(pod_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(pod_dir.join(GRACE_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl ShimPlan {
    pub fn load(pod_dir: &Path) -> std::io::Result<ShimPlan> {
        let text = std::fs::read(pod_dir.join(PLAN_FILE))?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// Writes the plan atomically, so a shim never reads half of one.
    pub fn save(&self, pod_dir: &Path) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&pod_dir.join(PLAN_FILE), &data)
    }
}

pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

//! Persistent container state: `<root>/<id>/state.json` plus the `exec.fifo` that holds a
//! created container until `start`.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hooks, LinuxSeccomp};
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::error::{Error, Result, io_err};

/// OCI status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created; the init process waits for `start`.
    Created,
    /// The user process runs.
    Running,
    /// Frozen through cgroup.freeze.
    Paused,
    /// The process has exited.
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The state a runtime reports (`podd-oci state`), as the OCI runtime spec defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// Spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Host pid of the init process (0 once stopped).
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Annotations from the spec.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// What podd-oci remembers about a container between invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Container id.
    pub id: String,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Host pid of init.
    pub pid: i32,
    /// Start time of init (field 22 of /proc/pid/stat), to tell a reused pid apart.
    pub pid_start_time: u64,
    /// Unix seconds at creation.
    pub created: u64,
    /// Annotations from the spec.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The container's cgroup, if it has one.
    pub cgroup: Option<Cgroup>,
    /// Hooks from the spec (poststart and poststop run after create returned).
    #[serde(default)]
    pub hooks: Option<Hooks>,
    /// The seccomp filter, applied to processes exec'd into the container too.
    #[serde(default)]
    pub seccomp: Option<LinuxSeccomp>,
    /// Whether the container has its own user namespace (for exec).
    #[serde(default)]
    pub user_ns: bool,
    /// Set once `start` succeeded.
    #[serde(default)]
    pub started: bool,
    /// config.json had no `process`: the container can be created, but `start` is an error
    /// (the spec: "This operation MUST generate an error if process was not set").
    #[serde(default)]
    pub no_process: bool,
}

/// Check a container id is usable as a directory name.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// Process state letter and start time of `pid` (field 22 of /proc/pid/stat), zombies included.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parens: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

/// Start time of `pid` from /proc, or None if it is gone or a zombie.
pub fn pid_start_time(pid: i32) -> Option<u64> {
    match proc_stat(pid)? {
        ('Z' | 'X', _) => None,
        (_, start) => Some(start),
    }
}

impl State {
    /// The container's state directory.
    pub fn dir(root: &Path, id: &str) -> PathBuf {
        root.join(id)
    }

    /// Load `<root>/<id>/state.json`.
    pub fn load(root: &Path, id: &str) -> Result<State> {
        validate_id(id)?;
        let file = Self::dir(root, id).join("state.json");
        let text = match fs::read(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    id: id.to_string(),
                    root: root.to_path_buf(),
                });
            }
            Err(e) => return Err(io_err("read", file)(e)),
        };
        serde_json::from_slice(&text)
            .map_err(|e| Error::Init(format!("corrupt state {}: {e}", file.display())))
    }

    /// Write state.json atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let dir = Self::dir(root, &self.id);
        let tmp = dir.join("state.json.tmp");
        let body =
            serde_json::to_vec(self).map_err(|e| Error::Init(format!("encode state: {e}")))?;
        fs::write(&tmp, body).map_err(io_err("write", tmp.clone()))?;
        fs::rename(&tmp, dir.join("state.json")).map_err(io_err("rename", tmp))
    }

    /// Whether the init process is still alive (and is the same process).
    pub fn alive(&self) -> bool {
        self.pid > 0 && pid_start_time(self.pid) == Some(self.pid_start_time)
    }

    /// Current status, derived from the process, the fifo and the cgroup.
    pub fn status(&self, root: &Path) -> Status {
        if !self.alive() {
            return Status::Stopped;
        }
        if self.cgroup.as_ref().is_some_and(|c| c.is_frozen()) {
            return Status::Paused;
        }
        if !self.started && Self::dir(root, &self.id).join("exec.fifo").exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// The OCI state document.
    pub fn oci(&self, root: &Path) -> OciState {
        let status = self.status(root);
        OciState {
            oci_version: crate::OCI_VERSION.to_string(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_x").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("a/b").is_err());
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(pid_start_time(std::process::id() as i32).is_some());
        assert!(pid_start_time(i32::MAX).is_none());
    }
}

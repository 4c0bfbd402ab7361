//! Pod volumes: emptyDir (a per-pod directory, or a size-limited tmpfs) and hostPath (a bind
//! mount). The pod's [`PodVolumes`] owns what it created and removes it with the pod.

use crate::shim::VolumeLimit;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use podd_api::{Memory, Pod, Volume};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("pod {pod}: volume {volume:?} has neither emptyDir nor hostPath; set exactly one")]
    NoSource { pod: String, volume: String },
    #[error("pod {pod}: volume {volume:?} sets both emptyDir and hostPath; set exactly one")]
    TwoSources { pod: String, volume: String },
    #[error(
        "pod {pod}: hostPath volume {volume:?}: {path} {problem}; create it on the node or use type DirectoryOrCreate"
    )]
    HostPath {
        pod: String,
        volume: String,
        path: PathBuf,
        problem: &'static str,
    },
    #[error(
        "pod {pod}: container {container:?} mounts volume {volume:?}, which the pod does not define; add it to spec.volumes"
    )]
    UnknownVolume {
        pod: String,
        container: String,
        volume: String,
    },
    #[error("pod {pod}: volume {volume:?}: {op} {path} failed: {source}")]
    Io {
        pod: String,
        volume: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A volume as the containers see it: a host path to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVolume {
    pub host_path: PathBuf,
    /// Backed by a tmpfs that the pod owns.
    pub tmpfs: bool,
}

/// The volumes of one pod, created under `<pod dir>/volumes/`. The pod's owner calls
/// [`PodVolumes::remove`] when the pod is deleted; dropping the value leaves them in place,
/// since a running pod outlives the agent that made it.
#[derive(Debug)]
pub struct PodVolumes {
    pod: String,
    root: PathBuf,
    pub volumes: BTreeMap<String, ResolvedVolume>,
    tmpfs_mounts: Vec<PathBuf>,
    /// The pod's memory limit (the sum of its containers'), which also caps its tmpfs volumes.
    pod_memory: Option<u64>,
}

use crate::pod_name;

fn volumes_of(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

/// Whether an emptyDir is a tmpfs (`medium: Memory`).
fn in_memory(e: &podd_api::EmptyDirVolumeSource) -> bool {
    e.medium.as_deref() == Some("Memory")
}

/// An emptyDir's sizeLimit in bytes, with the limit as written.
fn size_limit(e: &podd_api::EmptyDirVolumeSource) -> Option<(u64, String)> {
    let q = e.size_limit.as_ref()?;
    Memory::try_from(q).ok().map(|m| (m.bytes(), q.0.clone()))
}

impl PodVolumes {
    /// Checks every volume and mount first, then creates the emptyDirs; on any failure what was
    /// created is removed again.
    pub fn create(pod: &Pod, pod_dir: &Path) -> Result<PodVolumes, VolumeError> {
        let name = pod_name(pod);
        let volumes = volumes_of(pod);
        let spec = pod.spec.as_ref();
        let containers = spec.map_or(&[][..], |s| &s.containers[..]);
        let init = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default();
        for c in containers.iter().chain(init) {
            for m in c.volume_mounts.iter().flatten() {
                if !volumes.iter().any(|v| v.name == m.name) {
                    return Err(VolumeError::UnknownVolume {
                        pod: name,
                        container: c.name.clone(),
                        volume: m.name.clone(),
                    });
                }
            }
        }
        for v in volumes {
            check_source(&name, v)?;
        }
        let mut vols = PodVolumes {
            pod: name,
            root: pod_dir.join("volumes"),
            volumes: BTreeMap::new(),
            tmpfs_mounts: Vec::new(),
            pod_memory: crate::spec::pod_limits(pod).1,
        };
        for v in volumes {
            match vols.make(v) {
                Ok(resolved) => {
                    vols.volumes.insert(v.name.clone(), resolved);
                }
                Err(e) => {
                    // Leave nothing half-created behind.
                    if let Err(cleanup) = vols.remove() {
                        tracing::warn!(error = %cleanup, "cleaning up after a failed volume setup");
                    }
                    return Err(e);
                }
            }
        }
        Ok(vols)
    }

    /// Adopts the volumes of a pod that already runs (after an agent restart).
    pub fn adopt(pod: &Pod, pod_dir: &Path) -> PodVolumes {
        let root = pod_dir.join("volumes");
        let mut volumes = BTreeMap::new();
        let mut tmpfs_mounts = Vec::new();
        for v in volumes_of(pod) {
            if let Some(h) = &v.host_path {
                volumes.insert(
                    v.name.clone(),
                    ResolvedVolume {
                        host_path: PathBuf::from(&h.path),
                        tmpfs: false,
                    },
                );
            } else if let Some(e) = &v.empty_dir {
                let dir = root.join("empty-dir").join(&v.name);
                let tmpfs = in_memory(e);
                if tmpfs {
                    tmpfs_mounts.push(dir.clone());
                }
                volumes.insert(
                    v.name.clone(),
                    ResolvedVolume {
                        host_path: dir,
                        tmpfs,
                    },
                );
            }
        }
        PodVolumes {
            pod: pod_name(pod),
            root,
            volumes,
            tmpfs_mounts,
            pod_memory: crate::spec::pod_limits(pod).1,
        }
    }

    /// The disk-backed emptyDirs with a sizeLimit, which the pod's shim measures and evicts
    /// the pod for (see `shim::volume_watch`). Memory-backed ones need no watch: their tmpfs
    /// is mounted with the limit as its size.
    pub fn size_limits(&self, pod: &Pod) -> Vec<VolumeLimit> {
        volumes_of(pod)
            .iter()
            .filter_map(|v| {
                let e = v.empty_dir.as_ref().filter(|e| !in_memory(e))?;
                let (limit_bytes, limit) = size_limit(e)?;
                Some(VolumeLimit {
                    name: v.name.clone(),
                    path: self.volumes.get(&v.name)?.host_path.clone(),
                    limit_bytes,
                    limit,
                })
            })
            .collect()
    }

    fn io(
        &self,
        volume: &str,
        op: &'static str,
        path: &Path,
    ) -> impl FnOnce(io::Error) -> VolumeError {
        let (pod, volume, path) = (self.pod.clone(), volume.to_string(), path.to_path_buf());
        move |source| VolumeError::Io {
            pod,
            volume,
            op,
            path,
            source,
        }
    }

    fn make(&mut self, v: &Volume) -> Result<ResolvedVolume, VolumeError> {
        if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            if h.type_.as_deref() == Some("DirectoryOrCreate") && !path.exists() {
                fs::create_dir_all(&path).map_err(self.io(&v.name, "create", &path))?;
            }
            return Ok(ResolvedVolume {
                host_path: path,
                tmpfs: false,
            });
        }
        let e = v.empty_dir.as_ref().expect("checked: one source");
        let dir = self.root.join("empty-dir").join(&v.name);
        fs::create_dir_all(&dir).map_err(self.io(&v.name, "create", &dir))?;
        let tmpfs = in_memory(e);
        if tmpfs {
            let size = memory_volume_bytes(size_limit(e).map(|(b, _)| b), self.pod_memory)
                .map(|b| format!("size={b}"))
                .unwrap_or_default();
            let opts = format!("mode=0777{}{size}", if size.is_empty() { "" } else { "," });
            mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(opts.as_str()),
            )
            .map_err(|e| self.io(&v.name, "mount tmpfs on", &dir)(e.into()))?;
            self.tmpfs_mounts.push(dir.clone());
        }
        Ok(ResolvedVolume {
            host_path: dir,
            tmpfs,
        })
    }

    /// Unmounts tmpfs volumes and removes the pod's volume directory. hostPaths are the
    /// node's and are left alone. Idempotent.
    pub fn remove(&mut self) -> Result<(), VolumeError> {
        for dir in std::mem::take(&mut self.tmpfs_mounts) {
            match umount2(&dir, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => {
                    return Err(self.io("", "unmount", &dir)(e.into()));
                }
            }
        }
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("", "remove", &self.root.clone())(e)),
        }
    }
}

/// The size of a `medium: Memory` emptyDir's tmpfs: its sizeLimit, capped by the pod's
/// memory limit, as Kubernetes sizes it (the pages are charged to the writing container's
/// memory cgroup as well). None leaves the kernel's default (half the node's memory).
fn memory_volume_bytes(size_limit: Option<u64>, pod_memory: Option<u64>) -> Option<u64> {
    match (size_limit, pod_memory) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn check_source(pod: &str, v: &Volume) -> Result<(), VolumeError> {
    match (&v.empty_dir, &v.host_path) {
        (None, None) => Err(VolumeError::NoSource {
            pod: pod.into(),
            volume: v.name.clone(),
        }),
        (Some(_), Some(_)) => Err(VolumeError::TwoSources {
            pod: pod.into(),
            volume: v.name.clone(),
        }),
        (None, Some(h)) => {
            let path = PathBuf::from(&h.path);
            let err = |problem| VolumeError::HostPath {
                pod: pod.into(),
                volume: v.name.clone(),
                path: path.clone(),
                problem,
            };
            if !path.is_absolute() {
                return Err(err("is not an absolute path"));
            }
            match h.type_.as_deref().unwrap_or_default() {
                "DirectoryOrCreate" => Ok(()),
                "Directory" if !path.is_dir() => Err(err("is not an existing directory")),
                "File" if !path.is_file() => Err(err("is not an existing file")),
                "" if !path.exists() => Err(err("does not exist")),
                _ => Ok(()),
            }
        }
        (Some(_), None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_volumes_are_capped_by_the_pod_memory_limit() {
        assert_eq!(
            memory_volume_bytes(Some(1 << 20), Some(64 << 20)),
            Some(1 << 20)
        );
        assert_eq!(
            memory_volume_bytes(Some(64 << 20), Some(1 << 20)),
            Some(1 << 20)
        );
        assert_eq!(memory_volume_bytes(None, Some(8 << 20)), Some(8 << 20));
        assert_eq!(memory_volume_bytes(Some(8 << 20), None), Some(8 << 20));
        assert_eq!(memory_volume_bytes(None, None), None);
    }
}

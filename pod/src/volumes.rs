//! Pod volumes: emptyDir (a per-pod directory, or a size-limited tmpfs), hostPath (a bind
//! mount), and the configuration volumes: configMap and downwardAPI (a per-pod directory),
//! secret and projected (a tmpfs, never the node's disk), whose files the atomic writer keeps
//! ([`crate::atomic_writer`]). The pod's [`PodVolumes`] owns what it created and removes it
//! with the pod.

use crate::atomic_writer::{self, WriteError};
use crate::downward::NodeFacts;
use crate::projection::{ConfigVolumeKind, PayloadError, volume_payload};
use crate::shim::VolumeLimit;
use crate::sources::ConfigSources;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use podd_api::{Memory, Pod, Volume};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "pod {pod}: volume {volume:?} has no source this node supports; set exactly one of emptyDir, hostPath, configMap, secret, downwardAPI or projected"
    )]
    NoSource { pod: String, volume: String },
    #[error(
        "pod {pod}: volume {volume:?} sets more than one source; set exactly one of emptyDir, hostPath, configMap, secret, downwardAPI or projected"
    )]
    TwoSources { pod: String, volume: String },
    /// The files of a configuration volume cannot be made (yet): a missing ConfigMap,
    /// Secret or key, or a source this node does not support.
    #[error("pod {pod}: volume {volume:?}: {}", reason.message())]
    Config {
        pod: String,
        volume: String,
        reason: PayloadError,
    },
    #[error("pod {pod}: volume {volume:?}: {source}")]
    Write {
        pod: String,
        volume: String,
        #[source]
        source: WriteError,
    },
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
    /// Mounted read-only whatever the volumeMount says (configuration volumes, as in
    /// Kubernetes: their files are the node's to update).
    pub read_only: bool,
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
    /// [`Self::create_with`] for a pod that takes nothing from ConfigMaps or Secrets.
    pub fn create(pod: &Pod, pod_dir: &Path) -> Result<PodVolumes, VolumeError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        Self::create_with(
            pod,
            pod_dir,
            &ConfigSources::new(&ns),
            &NodeFacts::default(),
        )
    }

    /// Checks every volume and mount first (configuration volumes' files included), then
    /// creates the volumes; on any failure what was created is removed again.
    pub fn create_with(
        pod: &Pod,
        pod_dir: &Path,
        sources: &ConfigSources,
        facts: &NodeFacts,
    ) -> Result<PodVolumes, VolumeError> {
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
        let mut payloads = BTreeMap::new();
        for v in volumes {
            check_source(&name, v)?;
            if let Some(p) = volume_payload(pod, v, sources, facts) {
                let payload = p.map_err(|reason| VolumeError::Config {
                    pod: name.clone(),
                    volume: v.name.clone(),
                    reason,
                })?;
                payloads.insert(v.name.clone(), payload);
            }
        }
        let mut vols = PodVolumes {
            pod: name,
            root: pod_dir.join("volumes"),
            volumes: BTreeMap::new(),
            tmpfs_mounts: Vec::new(),
            pod_memory: crate::spec::pod_limits(pod).1,
        };
        for v in volumes {
            match vols.make(v, payloads.get(&v.name)) {
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
                        read_only: false,
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
                        read_only: false,
                    },
                );
            } else if let Some(kind) = ConfigVolumeKind::of(v) {
                let dir = root.join(kind.dir()).join(&v.name);
                if kind.on_tmpfs() {
                    tmpfs_mounts.push(dir.clone());
                }
                volumes.insert(
                    v.name.clone(),
                    ResolvedVolume {
                        host_path: dir,
                        tmpfs: kind.on_tmpfs(),
                        read_only: true,
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

    fn make(
        &mut self,
        v: &Volume,
        payload: Option<&atomic_writer::Payload>,
    ) -> Result<ResolvedVolume, VolumeError> {
        if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            if h.type_.as_deref() == Some("DirectoryOrCreate") && !path.exists() {
                fs::create_dir_all(&path).map_err(self.io(&v.name, "create", &path))?;
            }
            return Ok(ResolvedVolume {
                host_path: path,
                tmpfs: false,
                read_only: false,
            });
        }
        if let Some(kind) = ConfigVolumeKind::of(v) {
            let dir = self.root.join(kind.dir()).join(&v.name);
            fs::create_dir_all(&dir).map_err(self.io(&v.name, "create", &dir))?;
            if kind.on_tmpfs() {
                let size = memory_volume_bytes(None, self.pod_memory)
                    .map(|b| format!(",size={b}"))
                    .unwrap_or_default();
                self.mount_tmpfs(&v.name, &dir, &format!("mode=0755{size}"))?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(self.io(&v.name, "chmod", &dir))?;
            }
            let empty = atomic_writer::Payload::new();
            atomic_writer::write(&dir, payload.unwrap_or(&empty)).map_err(|source| {
                VolumeError::Write {
                    pod: self.pod.clone(),
                    volume: v.name.clone(),
                    source,
                }
            })?;
            return Ok(ResolvedVolume {
                host_path: dir,
                tmpfs: kind.on_tmpfs(),
                read_only: true,
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
            self.mount_tmpfs(&v.name, &dir, &opts)?;
        }
        Ok(ResolvedVolume {
            host_path: dir,
            tmpfs,
            read_only: false,
        })
    }

    /// Mounts a tmpfs the pod owns on `dir` (nosuid, nodev).
    fn mount_tmpfs(&mut self, volume: &str, dir: &Path, opts: &str) -> Result<(), VolumeError> {
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts),
        )
        .map_err(|e| self.io(volume, "mount tmpfs on", dir)(e.into()))?;
        self.tmpfs_mounts.push(dir.to_path_buf());
        Ok(())
    }

    /// Rewrites the files of the pod's configuration volumes from `sources` (fetched again)
    /// and `facts`; a volume whose content is unchanged is not touched. A volume whose source
    /// has gone keeps its last files, as the kubelet keeps them. Returns the volumes updated.
    pub fn refresh(
        &self,
        pod: &Pod,
        sources: &ConfigSources,
        facts: &NodeFacts,
    ) -> Result<Vec<String>, VolumeError> {
        let mut updated = Vec::new();
        for v in volumes_of(pod) {
            let Some(resolved) = self.volumes.get(&v.name).filter(|r| r.read_only) else {
                continue;
            };
            let payload = match volume_payload(pod, v, sources, facts) {
                Some(Ok(p)) => p,
                Some(Err(reason)) => {
                    tracing::info!(pod = %self.pod, volume = %v.name, reason = reason.message(),
                        "keeping a volume's files: its source cannot be read");
                    continue;
                }
                None => continue,
            };
            let changed =
                atomic_writer::write(&resolved.host_path, &payload).map_err(|source| {
                    VolumeError::Write {
                        pod: self.pod.clone(),
                        volume: v.name.clone(),
                        source,
                    }
                })?;
            if changed {
                updated.push(v.name.clone());
            }
        }
        Ok(updated)
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
    let sources = [
        v.empty_dir.is_some(),
        v.host_path.is_some(),
        v.config_map.is_some(),
        v.secret.is_some(),
        v.downward_api.is_some(),
        v.projected.is_some(),
    ];
    let count = sources.iter().filter(|s| **s).count();
    // Any other source Kubernetes has (a cloud disk, nfs, a PVC) is not one a node of
    // podd can mount: counted as none, unless it comes with one of ours.
    let others = serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_object().map(|o| o.len()))
        .unwrap_or(1)
        .saturating_sub(1 + count);
    if count > 1 || (count == 1 && others > 0) {
        return Err(VolumeError::TwoSources {
            pod: pod.into(),
            volume: v.name.clone(),
        });
    }
    if count == 0 {
        return Err(VolumeError::NoSource {
            pod: pod.into(),
            volume: v.name.clone(),
        });
    }
    match (&v.empty_dir, &v.host_path) {
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
        _ => Ok(()),
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

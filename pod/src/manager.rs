//! The pod manager: turns a Pod object into a sandbox and a running shim, finds pods again
//! after an agent restart, and removes everything a pod had when it is deleted.
//!
//! Every step of setup has an idempotent counterpart in [`PodManager::teardown`], which works
//! from what is on disk alone. A setup that fails half-way calls it, so nothing is left
//! half-created; a deleted pod calls it after its shim has stopped the containers.
//!
//! Layout (DESIGN.md): `<run>/pods/<uid>/` holds the shim's plan, status, log and the runtime
//! state; `<run>/{netns,ipcns,utsns}/<uid>` the sandbox; `<data>/pods/<uid>/` the volumes, the
//! /etc files, the container logs and rootfs overlays; the cgroups are
//! `<cgroup root>/<parent>/<uid>/<container>`.
//!
//! `<run>/pods` and `<data>/pods`, and each pod's directory in them, are 0700 and root's:
//! they hold what containers wrote (upper directories, volumes), which may be setuid
//! binaries or device nodes, so no host user may reach into them. They are created with that
//! mode (no window at a wider one), and [`PodManager::new`] tightens them on an existing node.

use crate::downward::NodeFacts;
use crate::etc_files::{self, EtcConfig};
use crate::projection::PayloadError;
use crate::shim::{PodRuntimeStatus, ShimContainer, ShimPlan, read_status};
use crate::sources::ConfigSources;
use crate::spec::{
    CPU_PERIOD_US, ContainerPlan, ProcessPlan, SharedNamespaces, container_spec, pod_limits,
};
use crate::volumes::{PodVolumes, VolumeError};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use podd_api::Pod;
use podd_image::{OverlayRootfs, UnpackedImage};
use podd_net::{NodeNetwork, SandboxNamespaces};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod {pod}: {reason}")]
    Invalid { pod: String, reason: String },
    #[error(
        "pod {pod}: image {image:?} for container {container:?} was not prepared; pull it first"
    )]
    ImageMissing {
        pod: String,
        container: String,
        image: String,
    },
    #[error("pod {pod}: {step} failed: {source}")]
    Net {
        pod: String,
        step: &'static str,
        #[source]
        source: podd_net::NetError,
    },
    #[error("pod {pod}: {step} failed: {source}")]
    Image {
        pod: String,
        step: &'static str,
        #[source]
        source: Box<podd_image::ImageError>,
    },
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("pod {pod}: {source}")]
    Spec {
        pod: String,
        #[source]
        source: crate::spec::SpecError,
    },
    #[error("pod {pod}: {op} {path} failed: {source}")]
    Io {
        pod: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pod {pod}: pod limits need the {controller} controller, which {cgroup} does not offer; run on a node with cgroup v2 controllers or drop the limits"
    )]
    Controller {
        pod: String,
        controller: &'static str,
        cgroup: PathBuf,
    },
    #[error("pod {pod}: no such pod on this node")]
    NotFound { pod: String },
    /// A container's configuration cannot be made into a process yet (an env `valueFrom`
    /// the node cannot resolve, a probe's unknown port name): the kubelet's
    /// CreateContainerConfigError. The container is not started.
    #[error("pod {pod}, container {container:?}: {reason}")]
    Config {
        pod: String,
        container: String,
        reason: String,
    },
}

impl PodError {
    /// The container waiting reason Kubernetes reports for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            PodError::Config { .. } => "CreateContainerConfigError",
            _ => "CreateContainerError",
        }
    }
}

/// The first container that mounts volume `volume` (the first container if none does), to
/// name in a configuration error about the volume.
fn container_mounting(pod: &Pod, volume: &str) -> String {
    let containers = pod.spec.as_ref().map_or(&[][..], |s| &s.containers[..]);
    containers
        .iter()
        .find(|c| c.volume_mounts.iter().flatten().any(|m| m.name == volume))
        .or(containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// Where a node keeps its pods, and how they run.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// `/run/podd`: shim state and sandbox namespaces.
    pub run_dir: PathBuf,
    /// `/var/lib/podd`: volumes, logs, rootfs overlays.
    pub data_dir: PathBuf,
    /// The cgroup v2 directory the node's pod cgroups live under.
    pub cgroup_root: PathBuf,
    /// Relative to `cgroup_root`: `podd/pods`.
    pub cgroup_parent: PathBuf,
    pub shim_binary: PathBuf,
    pub cluster_domain: String,
    pub dns_server: Option<Ipv4Addr>,
    /// What pods get as resolv.conf when there is no cluster DNS.
    pub node_resolv_conf: String,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Size of each pod's shared /dev/shm.
    pub shm_bytes: u64,
    /// What the node has: a pod whose limits add up to more is refused.
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
    /// How often each pod's shim measures its disk-backed emptyDirs against their
    /// sizeLimit (evicting the pod when one is over), and the most inodes one measurement
    /// looks at. See `shim::volume_watch` for the overshoot this interval allows.
    pub volume_check_interval: Duration,
    pub volume_max_entries: u64,
    /// The node's IP, for the downward API's `status.hostIP`.
    pub node_ip: Option<Ipv4Addr>,
}

impl PodConfig {
    pub fn new(run_dir: &Path, data_dir: &Path, cgroup_root: &Path, shim_binary: &Path) -> Self {
        PodConfig {
            run_dir: run_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            cgroup_root: cgroup_root.to_path_buf(),
            cgroup_parent: PathBuf::from("podd/pods"),
            shim_binary: shim_binary.to_path_buf(),
            cluster_domain: "cluster.local".into(),
            dns_server: None,
            node_resolv_conf: String::new(),
            backoff_initial: crate::backoff::INITIAL_BACKOFF,
            backoff_max: crate::backoff::MAX_BACKOFF,
            shm_bytes: 64 << 20,
            node_cpu_millis: node_cpu_millis(),
            node_memory_bytes: node_memory_bytes(),
            volume_check_interval: Duration::from_millis(
                crate::shim::plan::DEFAULT_VOLUME_CHECK_MS,
            ),
            volume_max_entries: crate::shim::plan::DEFAULT_VOLUME_MAX_ENTRIES,
            node_ip: None,
        }
    }
}

/// What the agent learns about a pod it started or found.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub uid: String,
    pub ip: Option<Ipv4Addr>,
    pub shim_pid: i32,
    /// Per container, the envFrom keys skipped as invalid variable names (the kubelet
    /// reports them in an InvalidEnvironmentVariableNames event). Empty for a pod found.
    pub skipped_env: Vec<(String, Vec<String>)>,
}

pub struct PodManager {
    cfg: PodConfig,
    net: Arc<NodeNetwork>,
}

const POD_FILE: &str = "pod.json";

/// Controllers a pod cgroup gets wherever the node has them: limits and usage.
const STATS_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

use crate::pod_name;

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl PodManager {
    /// Also tightens the pod directories of an existing node (see the module docs); it
    /// creates nothing, so that `podd reset` can build one too.
    pub fn new(cfg: PodConfig, net: Arc<NodeNetwork>) -> PodManager {
        let m = PodManager { cfg, net };
        for dir in m.private_roots() {
            if let Err(e) = tighten_existing(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "making the pod directories private");
            }
        }
        m
    }

    /// The directories under which every pod's content lives.
    fn private_roots(&self) -> [PathBuf; 2] {
        [
            self.cfg.run_dir.join("pods"),
            self.cfg.data_dir.join("pods"),
        ]
    }

    pub fn config(&self) -> &PodConfig {
        &self.cfg
    }

    pub fn state_dir(&self, uid: &str) -> PathBuf {
        self.cfg.run_dir.join("pods").join(uid)
    }

    pub fn data_dir(&self, uid: &str) -> PathBuf {
        self.cfg.data_dir.join("pods").join(uid)
    }

    fn pod_cgroup(&self, uid: &str) -> PathBuf {
        self.cfg.cgroup_root.join(&self.cfg.cgroup_parent).join(uid)
    }

    /// A container's log file, for `podctl logs`.
    pub fn log_path(&self, uid: &str, container: &str) -> PathBuf {
        self.data_dir(uid)
            .join("logs")
            .join(container)
            .join("0.log")
    }

    /// [`Self::run_pod_with`] for a pod that takes nothing from ConfigMaps or Secrets (a
    /// reference to one is a configuration error: it does not exist here).
    pub fn run_pod(
        &self,
        pod: &Pod,
        images: &BTreeMap<String, UnpackedImage>,
    ) -> Result<PodInfo, PodError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        self.run_pod_with(pod, images, &ConfigSources::new(&ns))
    }

    /// What the downward API needs from this node; `pod_ip` once the pod has one.
    pub fn node_facts(&self, pod_ip: Option<Ipv4Addr>) -> NodeFacts {
        let ephemeral = nix::sys::statvfs::statvfs(&self.cfg.data_dir)
            .map(|s| s.blocks().saturating_mul(s.fragment_size()))
            .unwrap_or(0);
        NodeFacts {
            pod_ip: pod_ip.map(Into::into),
            host_ip: self.cfg.node_ip.map(Into::into),
            allocatable_cpu_millis: self.cfg.node_cpu_millis,
            allocatable_memory_bytes: self.cfg.node_memory_bytes,
            allocatable_ephemeral_bytes: ephemeral,
        }
    }

    /// Creates the pod's sandbox and starts its shim. `images` maps each container's image
    /// reference to the unpacked image; `sources` holds the ConfigMaps and Secrets of the
    /// pod's namespace that it references (see [`crate::sources::references`]). A missing
    /// one (not optional) is a [`PodError::Config`] naming it, and nothing is created.
    /// On failure nothing of the pod is left.
    pub fn run_pod_with(
        &self,
        pod: &Pod,
        images: &BTreeMap<String, UnpackedImage>,
        sources: &ConfigSources,
    ) -> Result<PodInfo, PodError> {
        let name = pod_name(pod);
        let uid = uid_of(pod);
        if uid.is_empty() || uid.contains('/') || uid.starts_with('.') {
            return Err(PodError::Invalid {
                pod: name,
                reason: format!(
                    "metadata.uid {uid:?} is not a usable identifier; the API server sets it"
                ),
            });
        }
        let Some(spec) = pod.spec.as_ref().filter(|s| !s.containers.is_empty()) else {
            return Err(PodError::Invalid {
                pod: name,
                reason: "spec.containers is empty; add a container".into(),
            });
        };
        let pod_name_field = pod.metadata.name.as_deref().unwrap_or_default();
        if let Some(e) = podd_api::validation::check_dns1123_subdomain(pod_name_field) {
            return Err(PodError::Invalid {
                pod: name,
                reason: format!("metadata.name: {e}"),
            });
        }
        if let Err(errs) = podd_api::validation::validate(pod) {
            return Err(PodError::Invalid {
                pod: name,
                reason: errs.to_string(),
            });
        }
        let (cpu, memory) = pod_limits(pod);
        if let Some(cpu) = cpu.filter(|&c| c > self.cfg.node_cpu_millis) {
            return Err(PodError::Invalid {
                pod: name,
                reason: format!(
                    "the containers' cpu limits add up to {cpu}m, more than this node's {}m; lower them",
                    self.cfg.node_cpu_millis
                ),
            });
        }
        if let Some(mem) = memory.filter(|&m| m > self.cfg.node_memory_bytes) {
            return Err(PodError::Invalid {
                pod: name,
                reason: format!(
                    "the containers' memory limits add up to {mem} bytes, more than this node's {} bytes; lower them",
                    self.cfg.node_memory_bytes
                ),
            });
        }
        if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(PodError::Invalid {
                pod: name,
                reason: "spec.initContainers are not supported by podd's node agent yet; run that step in the main container's command".into(),
            });
        }
        // Checked before anything is created, with the facts known now (the pod's IP comes
        // later and is never missing).
        let facts = self.node_facts(None);
        for v in spec.volumes.iter().flatten() {
            match crate::projection::volume_payload(pod, v, sources, &facts) {
                Some(Err(PayloadError::Missing(reason))) => {
                    return Err(PodError::Config {
                        pod: name,
                        container: container_mounting(pod, &v.name),
                        reason: format!("volume {:?}: {reason}", v.name),
                    });
                }
                Some(Err(PayloadError::Unsupported(reason))) => {
                    return Err(PodError::Invalid { pod: name, reason });
                }
                _ => {}
            }
        }
        for c in &spec.containers {
            let image = c.image.clone().unwrap_or_default();
            if !images.contains_key(&image) {
                return Err(PodError::ImageMissing {
                    pod: name,
                    container: c.name.clone(),
                    image,
                });
            }
            let probes = [&c.readiness_probe, &c.liveness_probe];
            let probe_error = probes
                .into_iter()
                .flatten()
                .find_map(|p| crate::shim::Probe::resolve(p, &spec.containers).err());
            let env_error = crate::env::container_env(pod, c, sources, &facts).err();
            if let Some(reason) = env_error.or(probe_error) {
                return Err(PodError::Config {
                    pod: name,
                    container: c.name.clone(),
                    reason,
                });
            }
        }
        if let Some(existing) = self.find(&uid) {
            return Ok(existing);
        }
        match self.setup(pod, images, sources) {
            Ok(info) => Ok(info),
            Err(e) => {
                if let Err(cleanup) = self.teardown(&uid) {
                    tracing::warn!(pod = %name, error = %cleanup, "cleaning up a pod that failed to start");
                }
                Err(e)
            }
        }
    }

    fn setup(
        &self,
        pod: &Pod,
        images: &BTreeMap<String, UnpackedImage>,
        sources: &ConfigSources,
    ) -> Result<PodInfo, PodError> {
        let name = pod_name(pod);
        let uid = &uid_of(pod);
        let pod_spec = pod.spec.as_ref().expect("checked by run_pod");
        let io = |op: &'static str, path: &Path| {
            let (pod, path) = (name.clone(), path.to_path_buf());
            move |source| PodError::Io {
                pod,
                op,
                path,
                source,
            }
        };
        let state = self.state_dir(uid);
        let data = self.data_dir(uid);
        for d in self.private_roots().iter().chain([&state, &data]) {
            private_dir(d).map_err(io("create", d))?;
        }
        fs::write(
            state.join(POD_FILE),
            serde_json::to_vec(pod).map_err(|e| io("serialise", &state)(io::Error::other(e)))?,
        )
        .map_err(io("write", &state.join(POD_FILE)))?;

        let hostname = &crate::spec::hostname(pod);
        let sandbox = SandboxNamespaces::create(&self.cfg.run_dir, uid, Some(hostname)).map_err(
            |source| PodError::Net {
                pod: name.clone(),
                step: "creating the sandbox namespaces",
                source,
            },
        )?;
        let network = self
            .net
            .attach_pod(uid, sandbox.net_path())
            .map_err(|source| PodError::Net {
                pod: name.clone(),
                step: "connecting the pod network",
                source,
            })?;
        let facts = self.node_facts(Some(network.ip));
        let volumes = PodVolumes::create_with(pod, &data, sources, &facts)?;

        let shm = state.join("shm");
        fs::create_dir_all(&shm).map_err(io("create", &shm))?;
        nix::mount::mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,size={}", self.cfg.shm_bytes).as_str()),
        )
        .map_err(|e| io("mount tmpfs on", &shm)(e.into()))?;

        let etc = data.join("etc");
        fs::create_dir_all(&etc).map_err(io("create", &etc))?;
        let etc_cfg = EtcConfig {
            hostname: hostname.clone(),
            pod_ip: Some(network.ip),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            cluster_domain: self.cfg.cluster_domain.clone(),
            dns_server: self.cfg.dns_server,
        };
        for (file, text) in [
            ("hosts", etc_files::hosts(&etc_cfg)),
            ("hostname", etc_files::hostname(&etc_cfg)),
            (
                "resolv.conf",
                etc_files::resolv_conf(&etc_cfg, &self.cfg.node_resolv_conf),
            ),
        ] {
            fs::write(etc.join(file), text).map_err(io("write", &etc.join(file)))?;
        }

        let controllers = self.root_controllers();
        self.make_pod_cgroup(pod, &controllers)?;

        let shared = SharedNamespaces {
            net: sandbox.net_path().to_path_buf(),
            ipc: sandbox.ipc_path().to_path_buf(),
            uts: sandbox.uts_path().to_path_buf(),
        };
        let containers_dir = data.join("containers");
        fs::create_dir_all(&containers_dir).map_err(io("create", &containers_dir))?;
        let cpu_controller = offers(&controllers, "cpu");
        if !cpu_controller
            && pod_spec
                .containers
                .iter()
                .any(|c| podd_api::resources::requests(&c.resources).0.is_some())
        {
            tracing::info!(pod = %pod_name(pod), cgroup = %self.cfg.cgroup_root.display(),
                "no cpu controller here: the pod's CPU requests set no cpu.weight (the scheduler still counts them)");
        }
        let mut containers = Vec::new();
        let mut skipped_env = Vec::new();
        for c in &pod_spec.containers {
            let image_name = c.image.clone().unwrap_or_default();
            let image = &images[&image_name];
            let dir = containers_dir.join(&c.name);
            let rootfs = OverlayRootfs::mount(image, &dir).map_err(|source| PodError::Image {
                pod: name.clone(),
                step: "mounting the container rootfs",
                source: Box::new(source),
            })?;
            let defaults = podd_image::ImageDefaults::from_config(&image.config);
            let env = crate::env::container_env(pod, c, sources, &facts).map_err(|reason| {
                PodError::Config {
                    pod: name.clone(),
                    container: c.name.clone(),
                    reason,
                }
            })?;
            if !env.skipped.is_empty() {
                skipped_env.push((c.name.clone(), env.skipped.clone()));
            }
            // `$(VAR)` in command and args, from the container's own environment (not the
            // image's), as Kubernetes expands them.
            let expand = |list: &Option<Vec<String>>| -> Vec<String> {
                list.iter().flatten().map(|a| env.expand(a)).collect()
            };
            let merged = podd_image::merge(
                &image_name,
                &defaults,
                &expand(&c.command),
                &expand(&c.args),
                &env.vars,
                c.working_dir.as_deref(),
            )
            .map_err(|source| PodError::Image {
                pod: name.clone(),
                step: "merging the image's process with the container's",
                source: Box::new(source),
            })?;
            let sc = c.security_context.clone().unwrap_or_default();
            let id = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
            let (run_as_user, run_as_group) = (id(sc.run_as_user), id(sc.run_as_group));
            let (uid_n, gid_n) = match (run_as_user, &merged.user) {
                (Some(u), _) => (u, run_as_group.unwrap_or(u)),
                (None, Some(user)) => {
                    let r = podd_image::resolve_user(&image_name, user, rootfs.path()).map_err(
                        |source| PodError::Image {
                            pod: name.clone(),
                            step: "resolving the image's user",
                            source: Box::new(source),
                        },
                    )?;
                    (r.uid, run_as_group.unwrap_or(r.gid))
                }
                (None, None) => (0, run_as_group.unwrap_or(0)),
            };
            let mut env: Vec<String> = merged.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.insert(
                    0,
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                );
            }
            env.push(format!("HOSTNAME={hostname}"));
            let spec = container_spec(&ContainerPlan {
                pod,
                container: c,
                process: ProcessPlan {
                    args: merged.argv.clone(),
                    env,
                    cwd: merged.cwd.clone(),
                    uid: uid_n,
                    gid: gid_n,
                },
                rootfs: rootfs.path().to_path_buf(),
                namespaces: &shared,
                cgroups_path: self.cfg.cgroup_parent.join(uid).join(&c.name),
                volumes: &volumes.volumes,
                etc_dir: &etc,
                shm_dir: Some(&shm),
                cpu_controller,
            })
            .map_err(|source| PodError::Spec {
                pod: name.clone(),
                source,
            })?;
            let probe = |p: &Option<podd_api::Probe>| {
                p.as_ref()
                    .and_then(|p| crate::shim::Probe::resolve(p, &pod_spec.containers).ok())
            };
            containers.push(ShimContainer {
                name: c.name.clone(),
                image: image_name.clone(),
                image_id: image.image_id.clone(),
                id: format!("{uid}-{}", c.name),
                bundle: dir.clone(),
                spec,
                log_path: self.log_path(uid, &c.name),
                readiness_probe: probe(&c.readiness_probe),
                liveness_probe: probe(&c.liveness_probe),
                stdin: c.stdin.unwrap_or(false),
                stdin_once: c.stdin_once.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
            });
            // The mount stays for the pod's life; teardown finds it again by its directory.
            std::mem::forget(rootfs);
        }

        let plan = ShimPlan {
            pod: name.clone(),
            pod_uid: uid.clone(),
            runtime_root: state.join("runtime"),
            cgroup_root: Some(self.cfg.cgroup_root.clone()),
            netns: shared.net.clone(),
            pod_ip: Some(network.ip),
            restart_policy: crate::shim::RestartPolicy::of(Some(pod_spec)),
            grace_period_seconds: grace_period(pod),
            backoff_initial_ms: self.cfg.backoff_initial.as_millis() as u64,
            backoff_max_ms: self.cfg.backoff_max.as_millis() as u64,
            containers,
            volume_watch: crate::shim::VolumeWatch {
                limits: volumes.size_limits(pod),
                interval_ms: self.cfg.volume_check_interval.as_millis() as u64,
                max_entries: self.cfg.volume_max_entries,
            },
        };
        plan.save(&state)
            .map_err(io("write the shim plan in", &state))?;
        let shim_pid = self
            .spawn_shim(&state)
            .map_err(io("start the shim", &self.cfg.shim_binary))?;
        tracing::info!(pod = %name, ip = %network.ip, shim_pid, "pod started");
        Ok(PodInfo {
            uid: uid.clone(),
            ip: Some(network.ip),
            shim_pid,
            skipped_env,
        })
    }

    /// The controllers the node's cgroup root offers to its children (`cgroup.controllers`).
    fn root_controllers(&self) -> String {
        fs::read_to_string(self.cfg.cgroup_root.join("cgroup.controllers")).unwrap_or_default()
    }

    /// The pod cgroup carries the sum of its containers' limits, as the kubelet sets it.
    /// `available` is [`Self::root_controllers`].
    fn make_pod_cgroup(&self, pod: &Pod, available: &str) -> Result<(), PodError> {
        let name = pod_name(pod);
        let dir = self.pod_cgroup(&uid_of(pod));
        fs::create_dir_all(&dir).map_err(|source| PodError::Io {
            pod: name.clone(),
            op: "create the pod cgroup",
            path: dir.clone(),
            source,
        })?;
        let (cpu, memory) = pod_limits(pod);
        // Where the node offers them, the stats controllers are on for every pod, limits or
        // not, so that usage (memory.current, cpu.stat) is there for `top` and autoscaling.
        let offered = |c: &str| offers(available, c);
        for controller in STATS_CONTROLLERS {
            if offered(controller)
                && let Err(e) = enable_controller(&self.cfg.cgroup_root, &dir, controller)
            {
                tracing::warn!(pod = %name, controller, error = %e, "enabling a cgroup controller");
            }
        }
        for (controller, file, value) in [
            (
                "cpu",
                "cpu.max",
                cpu.map(|m| format!("{} {CPU_PERIOD_US}", (m * CPU_PERIOD_US / 1000).max(1000))),
            ),
            ("memory", "memory.max", memory.map(|b| b.to_string())),
        ] {
            let Some(value) = value else { continue };
            if !offered(controller) || !dir.join(file).exists() {
                return Err(PodError::Controller {
                    pod: name.clone(),
                    controller,
                    cgroup: self.cfg.cgroup_root.clone(),
                });
            }
            fs::write(dir.join(file), &value).map_err(|source| PodError::Io {
                pod: name.clone(),
                op: "set the pod limit in",
                path: dir.join(file),
                source,
            })?;
        }
        Ok(())
    }

    /// Starts `podd-shim STATE_DIR` in its own session with no stdio, so that it outlives
    /// the agent; the agent is its parent until then and reaps it with [`PodManager::reap`].
    fn spawn_shim(&self, state: &Path) -> io::Result<i32> {
        let mut cmd = Command::new(&self.cfg.shim_binary);
        cmd.arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(child.id() as i32)
    }

    /// Reaps shims that were this process's children and have exited (no-op for adopted ones).
    pub fn reap(&self) {
        for uid in self.list() {
            if let Ok(Some(s)) = read_status(&self.state_dir(&uid)) {
                reap_shim(s.shim_pid);
            }
        }
    }

    /// The uids of the pods this node has state for.
    pub fn list(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(self.cfg.run_dir.join("pods"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join(POD_FILE).exists())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The Pod object a pod was started from.
    pub fn pod(&self, uid: &str) -> Option<Pod> {
        let data = fs::read(self.state_dir(uid).join(POD_FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// A pod started earlier (perhaps by a previous agent process) whose shim still runs.
    pub fn find(&self, uid: &str) -> Option<PodInfo> {
        let status = read_status(&self.state_dir(uid)).ok()??;
        if !alive(status.shim_pid) && !status.stopped {
            return None;
        }
        let ip = self.net.pod_network(uid).ok().flatten().map(|n| n.ip);
        Some(PodInfo {
            uid: uid.to_string(),
            ip,
            shim_pid: status.shim_pid,
            skipped_env: Vec::new(),
        })
    }

    /// Rewrites the files of a running pod's configMap, secret, downwardAPI and projected
    /// volumes from `sources` (fetched again) and `pod` (the object as the API has it now,
    /// for its labels and annotations). Unchanged volumes are not touched; the containers'
    /// env stays as it was, as in Kubernetes. Returns the volumes updated.
    pub fn refresh_volumes(
        &self,
        uid: &str,
        pod: &Pod,
        sources: &ConfigSources,
    ) -> Result<Vec<String>, PodError> {
        let Some(started) = self.pod(uid) else {
            return Err(PodError::NotFound { pod: pod_name(pod) });
        };
        let volumes = PodVolumes::adopt(&started, &self.data_dir(uid));
        let ip = self.net.pod_network(uid).ok().flatten().map(|n| n.ip);
        // The volumes are the started pod's; only metadata may have changed since.
        let mut current = started.clone();
        current.metadata.labels = pod.metadata.labels.clone();
        current.metadata.annotations = pod.metadata.annotations.clone();
        Ok(volumes.refresh(&current, sources, &self.node_facts(ip))?)
    }

    /// What the pod's shim last reported, and whether the shim is still there.
    pub fn status(&self, uid: &str) -> Option<(PodRuntimeStatus, bool)> {
        let s = read_status(&self.state_dir(uid)).ok()??;
        let alive = alive(s.shim_pid);
        Some((s, alive))
    }

    /// Stops the pod's containers (SIGTERM, then SIGKILL after the grace period, done by the
    /// shim) and removes everything the pod had.
    pub fn stop_pod(&self, uid: &str) -> Result<(), PodError> {
        self.stop_pod_with_grace(uid, None)
    }

    /// [`Self::stop_pod`] with the grace period of a deletion (`deletionGracePeriodSeconds`),
    /// which replaces the pod's terminationGracePeriodSeconds when given.
    pub fn stop_pod_with_grace(&self, uid: &str, grace: Option<u64>) -> Result<(), PodError> {
        let state = self.state_dir(uid);
        if !state.exists() && !self.data_dir(uid).exists() {
            return Ok(());
        }
        if let Ok(Some(s)) = read_status(&state)
            && alive(s.shim_pid)
        {
            let grace = match grace {
                Some(g) => {
                    if let Err(e) = crate::shim::plan::write_grace(&state, g) {
                        tracing::warn!(pod = %uid, error = %e, "recording the deletion's grace period");
                    }
                    g
                }
                None => self.pod(uid).as_ref().map_or(30, grace_period),
            };
            let _ = kill(Pid::from_raw(s.shim_pid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(grace + 5);
            while alive(s.shim_pid) && Instant::now() < deadline {
                reap_shim(s.shim_pid);
                std::thread::sleep(Duration::from_millis(10));
            }
            if alive(s.shim_pid) {
                let _ = kill(Pid::from_raw(s.shim_pid), Signal::SIGKILL);
            }
            reap_shim(s.shim_pid);
        }
        self.teardown(uid)
    }

    /// Removes whatever exists of pod `uid`, in reverse order of setup. Idempotent.
    pub fn teardown(&self, uid: &str) -> Result<(), PodError> {
        let name = self
            .pod(uid)
            .map(|p| pod_name(&p))
            .unwrap_or_else(|| uid.to_string());
        let state = self.state_dir(uid);
        let data = self.data_dir(uid);
        let io = |op: &'static str, path: &Path| {
            let (pod, path) = (name.clone(), path.to_path_buf());
            move |source| PodError::Io {
                pod,
                op,
                path,
                source,
            }
        };
        // Containers the shim did not get to delete (a killed shim).
        let runtime = state.join("runtime");
        if let Ok(ids) = podd_runtime::Container::list(&runtime) {
            for id in ids {
                if let Ok(c) = podd_runtime::Container::load(&runtime, &id) {
                    let _ = c.delete(true);
                }
            }
        }
        if let Ok(entries) = fs::read_dir(data.join("containers")) {
            for e in entries.flatten() {
                OverlayRootfs::adopt(&e.path())
                    .teardown()
                    .map_err(|source| PodError::Image {
                        pod: name.clone(),
                        step: "removing the container rootfs",
                        source: Box::new(source),
                    })?;
            }
        }
        if let Some(pod) = self.pod(uid) {
            PodVolumes::adopt(&pod, &data).remove()?;
        }
        let shm = state.join("shm");
        match nix::mount::umount2(&shm, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(io("unmount", &shm)(e.into())),
        }
        self.net.detach_pod(uid).map_err(|source| PodError::Net {
            pod: name.clone(),
            step: "removing the pod network",
            source,
        })?;
        SandboxNamespaces::remove_by_name(&self.cfg.run_dir, uid).map_err(|source| {
            PodError::Net {
                pod: name.clone(),
                step: "removing the sandbox namespaces",
                source,
            }
        })?;
        remove_cgroup_tree(&self.pod_cgroup(uid))
            .map_err(io("remove the pod cgroup", &self.pod_cgroup(uid)))?;
        for d in [&data, &state] {
            match fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", d)(e)),
            }
        }
        tracing::info!(pod = %name, "pod removed");
        Ok(())
    }

    /// Runs a command in a running container through `podd-shim exec`, with the given stdio,
    /// so the agent never changes its own file descriptors.
    pub fn exec_command(&self, uid: &str, container: &str, argv: &[String]) -> Command {
        self.exec_command_with(uid, container, argv, None)
    }

    /// [`Self::exec_command`], with a terminal when `console_socket` is given: the command's
    /// pty master is sent to that Unix socket (see [`crate::shim::exec`]).
    pub fn exec_command_with(
        &self,
        uid: &str,
        container: &str,
        argv: &[String],
        console_socket: Option<&Path>,
    ) -> Command {
        let mut cmd = Command::new(&self.cfg.shim_binary);
        cmd.arg("exec").arg(self.state_dir(uid)).arg(container);
        if let Some(sock) = console_socket {
            cmd.arg("--console-socket").arg(sock);
        }
        cmd.arg("--").args(argv);
        cmd
    }

    /// The network namespace of a pod running here (for port forwarding), from its plan.
    pub fn pod_netns(&self, uid: &str) -> Option<PathBuf> {
        crate::shim::ShimPlan::load(&self.state_dir(uid))
            .ok()
            .map(|p| p.netns)
    }

    /// CPU time used by the pod so far (cpu.stat usage_usec of the pod cgroup, which keeps
    /// counting across container restarts) and its memory working set; None where the
    /// cgroup files are not there (a node without the controllers).
    pub fn usage(&self, uid: &str) -> (Option<u64>, Option<u64>) {
        cgroup_usage(&self.pod_cgroup(uid))
    }

    /// The same per container of the pod, by container name (containers running now).
    pub fn container_usage(&self, uid: &str) -> BTreeMap<String, (Option<u64>, Option<u64>)> {
        let mut out = BTreeMap::new();
        if let Ok(entries) = fs::read_dir(self.pod_cgroup(uid)) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                if let Ok(name) = e.file_name().into_string() {
                    out.insert(name, cgroup_usage(&e.path()));
                }
            }
        }
        out
    }
}

/// Creates `dir` 0700 (its missing parents as usual), or tightens it to 0700 if it exists.
/// The mode is given to mkdir itself, so the directory is never reachable at a wider one.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(dir),
        Err(e) => Err(e),
    }
}

/// Sets an existing directory to 0700; refuses anything that is not a directory (a symlink
/// planted where the directory should be).
fn tighten(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        ));
    }
    if meta.permissions().mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Tightens `root` and each pod directory in it, if they exist (a node set up by an earlier
/// podd, when they were 0755).
fn tighten_existing(root: &Path) -> io::Result<()> {
    match tighten(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    for e in fs::read_dir(root)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            tighten(&e.path())?;
        }
    }
    Ok(())
}

/// (cpu.stat usage_usec, memory working set) of one cgroup directory.
fn cgroup_usage(dir: &Path) -> (Option<u64>, Option<u64>) {
    let cpu = fs::read_to_string(dir.join("cpu.stat"))
        .ok()
        .and_then(|t| crate::stats::cpu_usage_usec(&t));
    let mem = fs::read_to_string(dir.join("memory.current"))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(|cur| {
            let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
            crate::stats::working_set(cur, &stat)
        });
    (cpu, mem)
}

/// This machine's CPUs in millicores (what the process may run on).
fn node_cpu_millis() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000
}

/// This machine's memory (MemTotal of /proc/meminfo).
fn node_memory_bytes() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib * 1024)
}

fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // A zombie still answers kill(0); it is gone for our purposes.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether a `cgroup.controllers` list names `controller`.
fn offers(available: &str, controller: &str) -> bool {
    available.split_whitespace().any(|a| a == controller)
}

/// Enables `controller` in the subtree_control of `root` and of every cgroup down to `dir`
/// itself, so that `dir` has it and its children can use it.
fn enable_controller(root: &Path, dir: &Path, controller: &str) -> io::Result<()> {
    let available = fs::read_to_string(root.join("cgroup.controllers"))?;
    if !offers(&available, controller) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "controller missing",
        ));
    }
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let mut cur = root.to_path_buf();
    fs::write(cur.join("cgroup.subtree_control"), format!("+{controller}"))?;
    for part in rel.components() {
        cur.push(part);
        fs::create_dir_all(&cur)?;
        fs::write(cur.join("cgroup.subtree_control"), format!("+{controller}"))?;
    }
    Ok(())
}

/// Collects the exit status of shim `pid` if it was our child and has exited; a shim adopted
/// from an earlier agent is not our child (ECHILD) and is left to init.
fn reap_shim(pid: i32) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    if pid <= 0 {
        return;
    }
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
}

/// Removes a cgroup directory and its children, deepest first (cgroupfs needs rmdir).
pub fn remove_cgroup_tree(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        if e.file_type()?.is_dir() {
            remove_cgroup_tree(&e.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The pod's terminationGracePeriodSeconds (30 when unset, as Kubernetes defaults it).
pub fn grace_period(pod: &Pod) -> u64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn pod_directories_are_made_private_and_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let pods = tmp.path().join("data/pods");
        private_dir(&pods.join("u1")).unwrap();
        assert_eq!(mode(&pods.join("u1")), 0o700);
        // An older install: 0755 everywhere.
        fs::set_permissions(&pods, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(pods.join("u1"), fs::Permissions::from_mode(0o755)).unwrap();
        tighten_existing(&pods).unwrap();
        assert_eq!((mode(&pods), mode(&pods.join("u1"))), (0o700, 0o700));
        // Missing roots are left alone; a symlink where a directory belongs is refused.
        tighten_existing(&tmp.path().join("absent")).unwrap();
        assert!(!tmp.path().join("absent").exists());
        std::os::unix::fs::symlink("/tmp", tmp.path().join("link")).unwrap();
        assert!(private_dir(&tmp.path().join("link")).is_err());
        assert_eq!(
            mode(Path::new("/tmp")) & 0o777,
            0o777,
            "the target is untouched"
        );
    }
}

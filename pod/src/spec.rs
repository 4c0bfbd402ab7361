//! The OCI runtime spec of one container of a pod: the image's process merged with the
//! container's, the pod's shared namespaces joined by path, its own mount, PID and cgroup
//! namespaces, volumes and the pod's /etc files bound in, and its resources as cgroup limits.
//!
//! Devices: every container gets the OCI default device allow-list as
//! `linux.resources.devices` (deny all, then null, zero, full, random, urandom, tty, console,
//! ptmx and the pts), which the runtime compiles into a cgroup device BPF program; volumes and
//! the /etc files are bound `nodev` (the image root is mounted `nodev` by the image crate), so
//! only the container's own /dev holds usable nodes. CAP_MKNOD stays in the default set, as in
//! containerd's: a node made with it cannot be opened (the program refuses everything outside
//! the list, and every other mount is `nodev`). `securityContext.privileged` is the one way out,
//! as in Kubernetes: every capability podd holds, every device allowed and the host's device
//! nodes, no masked or read-only paths, a writable /sys.

use crate::volumes::ResolvedVolume;
use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxCpuBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, Spec, UserBuilder,
};
use podd_api::{Container, Pod};
use podd_runtime::devices::DEFAULT_DEVICES;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "pod {pod}, container {container:?}: no command: the image has no Entrypoint or Cmd; set command in the container spec"
    )]
    NoCommand { pod: String, container: String },
    #[error(
        "pod {pod}, container {container:?}: securityContext.{field} is not supported by podd; {fix}"
    )]
    Unsupported {
        pod: String,
        container: String,
        field: String,
        fix: String,
    },
    #[error(
        "pod {pod}, container {container:?}: securityContext.privileged is true and allowPrivilegeEscalation is false, which contradict each other; drop one"
    )]
    PrivilegedWithoutEscalation { pod: String, container: String },
    #[error(
        "pod {pod}, container {container:?}: listing the host's devices in {dir} for the privileged container failed: {source}"
    )]
    HostDevices {
        pod: String,
        container: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {pod}, container {container:?}: building the OCI spec failed: {source}")]
    Oci {
        pod: String,
        container: String,
        #[source]
        source: OciSpecError,
    },
}

/// The process to run, after the image config and the container spec are merged
/// (by the image layer, as Kubernetes merges Entrypoint/Cmd with command/args).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
}

/// The pod's namespaces that every container joins.
#[derive(Debug, Clone)]
pub struct SharedNamespaces {
    pub net: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
}

/// Everything needed to write one container's spec.
pub struct ContainerPlan<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub process: ProcessPlan,
    pub rootfs: PathBuf,
    pub namespaces: &'a SharedNamespaces,
    /// The container's cgroup, relative to the cgroup root: `podd/pods/<uid>/<container>`.
    pub cgroups_path: PathBuf,
    pub volumes: &'a BTreeMap<String, ResolvedVolume>,
    /// Holds the pod's `hosts`, `hostname` and `resolv.conf`.
    pub etc_dir: &'a Path,
    /// The pod's shared /dev/shm (a tmpfs the sandbox owns), so that its containers share
    /// POSIX shared memory as they share the IPC namespace.
    pub shm_dir: Option<&'a Path>,
    /// Whether the node's cgroup tree has the cpu controller. Without it a CPU *request*
    /// (a share weight, best effort) is left out of the spec and the scheduler still counts
    /// it; a CPU *limit* is a guarantee, so it stays and the runtime refuses to run without it.
    pub cpu_controller: bool,
}

/// CFS period podd uses; the quota is the CPU limit's share of it.
pub const CPU_PERIOD_US: u64 = 100_000;

pub fn container_spec(plan: &ContainerPlan<'_>) -> Result<Spec, SpecError> {
    let pod_name = crate::pod_name(plan.pod);
    let c = plan.container;
    let oci = |source| SpecError::Oci {
        pod: pod_name.clone(),
        container: c.name.clone(),
        source,
    };
    if plan.process.args.is_empty() {
        return Err(SpecError::NoCommand {
            pod: pod_name.clone(),
            container: c.name.clone(),
        });
    }

    let mut spec = Spec::default();
    spec.set_hostname(Some(hostname(plan.pod)));

    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(plan.process.args.clone()));
    process.set_env(Some(plan.process.env.clone()));
    process.set_cwd(PathBuf::from(if plan.process.cwd.is_empty() {
        "/"
    } else {
        &plan.process.cwd
    }));
    process.set_user(
        UserBuilder::default()
            .uid(plan.process.uid)
            .gid(plan.process.gid)
            .build()
            .map_err(oci)?,
    );
    process.set_terminal(Some(false));
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged == Some(true);
    if privileged && sc.allow_privilege_escalation == Some(false) {
        // Kubernetes' validation refuses the pair too.
        return Err(SpecError::PrivilegedWithoutEscalation {
            pod: pod_name.clone(),
            container: c.name.clone(),
        });
    }
    if sc.allow_privilege_escalation == Some(false) {
        process.set_no_new_privileges(Some(true));
    }
    process.set_capabilities(Some(capabilities(&pod_name, c, &sc)?));
    spec.set_process(Some(process));

    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(plan.rootfs.clone());
    root.set_readonly(Some(sc.read_only_root_filesystem == Some(true)));
    spec.set_root(Some(root));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if privileged {
        // As Kubernetes gives a privileged container: /sys (and its cgroup) writable.
        for m in mounts
            .iter_mut()
            .filter(|m| m.destination().starts_with("/sys"))
        {
            let options = m.options().clone().unwrap_or_default();
            m.set_options(Some(
                options
                    .into_iter()
                    .map(|o| if o == "ro" { "rw".to_string() } else { o })
                    .collect(),
            ));
        }
    }
    if let Some(shm) = plan.shm_dir {
        mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
        mounts.push(bind(shm, Path::new("/dev/shm"), false).map_err(oci)?);
    }
    mounts.extend(etc_mounts(plan.etc_dir).map_err(oci)?);
    for m in c.volume_mounts.iter().flatten() {
        if let Some(v) = plan.volumes.get(&m.name) {
            let read_only = m.read_only == Some(true) || v.read_only;
            mounts.push(bind(&v.host_path, Path::new(&m.mount_path), read_only).map_err(oci)?);
        }
    }
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(namespaces(plan.namespaces).map_err(oci)?));
    linux.set_cgroups_path(Some(PathBuf::from("/").join(&plan.cgroups_path)));
    let mut resources = resources(c, plan.cpu_controller).map_err(oci)?;
    resources.set_devices(Some(device_rules(privileged).map_err(oci)?));
    linux.set_resources(Some(resources));
    if privileged {
        linux.set_masked_paths(Some(Vec::new()));
        linux.set_readonly_paths(Some(Vec::new()));
        let dev = Path::new("/dev");
        linux.set_devices(Some(host_devices(dev).map_err(|source| {
            SpecError::HostDevices {
                pod: pod_name.clone(),
                container: c.name.clone(),
                dir: dev.to_path_buf(),
                source,
            }
        })?));
    }
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The capabilities a Kubernetes container gets by default (containerd's and Docker's set);
/// `securityContext.capabilities` drops from and adds to it.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability of Linux 6.x, by number (CAP_CHOWN is 0): a privileged container holds
/// those of them that the node's podd holds itself (containerd's `WithAllCurrentCapabilities`),
/// since no process can grant more than it has.
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// [`ALL_CAPABILITIES`] that this process holds (its `CapEff`); all of them when that cannot
/// be read.
fn current_capabilities() -> Vec<&'static str> {
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| eff & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// `linux.resources.devices`: deny every device, then allow [`DEFAULT_DEVICES`] (read,
/// write, mknod); a privileged container may use every device.
fn device_rules(privileged: bool) -> Result<Vec<LinuxDeviceCgroup>, OciSpecError> {
    if privileged {
        return Ok(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rwm")
                .build()?,
        ]);
    }
    let mut rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
    ];
    for (major, minor) in DEFAULT_DEVICES {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access("rwm");
        if let Some(minor) = minor {
            rule = rule.minor(minor);
        }
        rules.push(rule.build()?);
    }
    Ok(rules)
}

/// The host's device nodes under `dev`, for a privileged container's /dev, as containerd's
/// `WithHostDevices` lists them: character and block devices, not the per-instance
/// filesystems (pts, shm, mqueue), the fd links or the console, and not ptmx (the runtime
/// links it to the container's own devpts).
pub fn host_devices(dev: &Path) -> std::io::Result<Vec<LinuxDevice>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut dirs = vec![dev.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let path = entry.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Gone since read_dir (a hot-unplugged device).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let skip = [".lxc", ".lxd-mounts", ".udev", "fd", "mqueue", "pts", "shm"];
                if !(dir == dev && skip.iter().any(|s| name == *s)) {
                    dirs.push(path);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            if dir == dev && (name == "console" || name == "ptmx") {
                continue;
            }
            let rdev = meta.rdev();
            let device = LinuxDeviceBuilder::default()
                .path(path)
                .typ(typ)
                .major(nix::sys::stat::major(rdev) as i64)
                .minor(nix::sys::stat::minor(rdev) as i64)
                .file_mode(meta.mode() & 0o7777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build()
                .map_err(std::io::Error::other)?;
            out.push(device);
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

/// The bounding, effective and permitted sets (as containerd sets them for Kubernetes:
/// nothing inheritable or ambient, so a non-root process holds none). A privileged
/// container holds every capability, and its add and drop lists do not apply.
fn capabilities(
    pod: &str,
    c: &Container,
    sc: &podd_api::SecurityContext,
) -> Result<LinuxCapabilities, SpecError> {
    let unsupported = |field: &str, fix: &str| SpecError::Unsupported {
        pod: pod.to_string(),
        container: c.name.clone(),
        field: field.to_string(),
        fix: fix.to_string(),
    };
    let parse = |field: &str, name: &str| {
        serde_json::from_value::<Capability>(serde_json::Value::String(name.to_string())).map_err(
            |_| {
                unsupported(
                    field,
                    &format!("{name:?} is not a Linux capability (write e.g. NET_ADMIN)"),
                )
            },
        )
    };
    let mut set = Capabilities::new();
    let privileged = sc.privileged == Some(true);
    let base: Vec<&str> = if privileged {
        current_capabilities()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    for name in base {
        set.insert(parse("capabilities", name)?);
    }
    if let Some(caps) = sc.capabilities.as_ref().filter(|_| !privileged) {
        for name in caps.drop.iter().flatten() {
            if name.eq_ignore_ascii_case("ALL") {
                set.clear();
            } else {
                set.remove(&parse("capabilities.drop", name)?);
            }
        }
        for name in caps.add.iter().flatten() {
            if name.eq_ignore_ascii_case("ALL") {
                return Err(unsupported(
                    "capabilities.add: ALL",
                    "list the capabilities the container needs",
                ));
            }
            set.insert(parse("capabilities.add", name)?);
        }
    }
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(Capabilities::new()));
    caps.set_ambient(Some(Capabilities::new()));
    Ok(caps)
}

/// The pod's hostname: `spec.hostname`, or its name.
pub fn hostname(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default())
}

fn namespaces(shared: &SharedNamespaces) -> Result<Vec<LinuxNamespace>, OciSpecError> {
    let join = |typ, path: &Path| {
        LinuxNamespaceBuilder::default()
            .typ(typ)
            .path(path.to_path_buf())
            .build()
    };
    let own = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    Ok(vec![
        join(LinuxNamespaceType::Network, &shared.net)?,
        join(LinuxNamespaceType::Ipc, &shared.ipc)?,
        join(LinuxNamespaceType::Uts, &shared.uts)?,
        own(LinuxNamespaceType::Mount)?,
        own(LinuxNamespaceType::Pid)?,
        own(LinuxNamespaceType::Cgroup)?,
    ])
}

/// Binds are `nodev`: a device node in a volume, a hostPath or the pod's files never opens.
fn bind(source: &Path, dest: &Path, read_only: bool) -> Result<Mount, OciSpecError> {
    let mut options = vec![
        "rbind".to_string(),
        "rprivate".to_string(),
        "nodev".to_string(),
    ];
    options.push(if read_only { "ro" } else { "rw" }.to_string());
    MountBuilder::default()
        .destination(dest.to_path_buf())
        .typ("bind")
        .source(source.to_path_buf())
        .options(options)
        .build()
}

fn etc_mounts(etc_dir: &Path) -> Result<Vec<Mount>, OciSpecError> {
    ["hosts", "hostname", "resolv.conf"]
        .iter()
        .map(|f| bind(&etc_dir.join(f), &Path::new("/etc").join(f), false))
        .collect()
}

/// Kubernetes' mapping: limits become hard caps (memory.max, cpu.max); the CPU request
/// becomes the share weight (1 core = 1024 shares).
fn resources(
    c: &Container,
    cpu_controller: bool,
) -> Result<oci_spec::runtime::LinuxResources, OciSpecError> {
    let mut r = LinuxResourcesBuilder::default();
    let (limit_cpu, limit_memory) = podd_api::resources::limits(&c.resources);
    let (req_cpu, _) = podd_api::resources::effective_requests(c);
    let mut cpu = LinuxCpuBuilder::default();
    if req_cpu.millis() > 0 && cpu_controller {
        cpu = cpu.shares((req_cpu.millis() * 1024 / 1000).max(2));
    }
    if let Some(l) = limit_cpu {
        cpu = cpu
            .quota((l.millis() * CPU_PERIOD_US / 1000).max(1000) as i64)
            .period(CPU_PERIOD_US);
    }
    r = r.cpu(cpu.build()?);
    if let Some(m) = limit_memory {
        r = r.memory(
            LinuxMemoryBuilder::default()
                .limit(m.bytes() as i64)
                .build()?,
        );
    }
    if let Some(p) = podd_api::resources::pids_limit(&c.resources) {
        r = r.pids(LinuxPidsBuilder::default().limit(p as i64).build()?);
    }
    r.build()
}

/// The pod cgroup's limits: the sum of its containers' limits, as the kubelet sets them,
/// when every container has one (otherwise that resource is unlimited at pod level).
pub fn pod_limits(pod: &Pod) -> (Option<u64>, Option<u64>) {
    let containers = pod.spec.as_ref().map_or(&[][..], |s| &s.containers[..]);
    let sum = |f: &dyn Fn(&Container) -> Option<u64>| -> Option<u64> {
        containers.iter().map(f).sum::<Option<u64>>()
    };
    (
        sum(&|c| {
            podd_api::resources::limits(&c.resources)
                .0
                .map(|v| v.millis())
        }),
        sum(&|c| {
            podd_api::resources::limits(&c.resources)
                .1
                .map(|v| v.bytes())
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::VolumeMount;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [
                {"name": "a", "image": "busybox",
                 "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi", "podd.dev/pids": "50"}},
                 "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}]},
                {"name": "b", "image": "busybox", "resources": {"limits": {"cpu": "1", "memory": "32Mi"}}}
            ]}
        }))
        .unwrap()
    }

    fn plan_spec(pod: &Pod, args: Vec<String>) -> Result<Spec, SpecError> {
        let ns = SharedNamespaces {
            net: "/run/podd/netns/u1".into(),
            ipc: "/run/podd/ipcns/u1".into(),
            uts: "/run/podd/utsns/u1".into(),
        };
        let mut vols = BTreeMap::new();
        vols.insert(
            "data".to_string(),
            ResolvedVolume {
                host_path: "/var/lib/podd/pods/u1/volumes/empty-dir/data".into(),
                tmpfs: false,
                read_only: false,
            },
        );
        container_spec(&ContainerPlan {
            pod,
            container: &pod.spec.as_ref().unwrap().containers[0],
            process: ProcessPlan {
                args,
                env: vec!["A=1".into()],
                cwd: String::new(),
                uid: 0,
                gid: 0,
            },
            rootfs: "/rootfs".into(),
            namespaces: &ns,
            cgroups_path: "podd/pods/u1/a".into(),
            volumes: &vols,
            etc_dir: Path::new("/var/lib/podd/pods/u1/etc"),
            shm_dir: Some(Path::new("/run/podd/pods/u1/shm")),
            cpu_controller: true,
        })
    }

    #[test]
    fn joins_the_pods_namespaces_and_owns_the_rest() {
        let pod = pod();
        let spec = plan_spec(&pod, vec!["sh".into()]).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        let path_of = |t| ns.iter().find(|n| n.typ() == t).unwrap().path().clone();
        assert_eq!(
            path_of(LinuxNamespaceType::Network),
            Some("/run/podd/netns/u1".into())
        );
        assert_eq!(
            path_of(LinuxNamespaceType::Ipc),
            Some("/run/podd/ipcns/u1".into())
        );
        assert_eq!(path_of(LinuxNamespaceType::Mount), None);
        assert_eq!(path_of(LinuxNamespaceType::Pid), None);
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/podd/pods/u1/a"))
        );
        assert_eq!(spec.hostname().as_deref(), Some("web"));
    }

    #[test]
    fn resources_become_cgroup_limits() {
        let pod = pod();
        let spec = plan_spec(&pod, vec!["sh".into()]).unwrap();
        let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        let cpu = r.cpu().clone().unwrap();
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(CPU_PERIOD_US));
        assert_eq!(cpu.shares(), Some(256));
        assert_eq!(r.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.pids().unwrap().limit(), 50);
        assert_eq!(pod_limits(&pod), (Some(1500), Some(96 << 20)));
    }

    #[test]
    fn without_a_cpu_controller_a_request_is_no_weight_but_a_limit_stays() {
        let pod = pod();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let cpu = resources(c, false).unwrap().cpu().clone().unwrap();
        assert_eq!(cpu.shares(), None, "no weight to set");
        assert_eq!(cpu.quota(), Some(50_000), "the limit is still asked for");
    }

    #[test]
    fn volumes_and_etc_files_are_bound() {
        let pod = pod();
        let spec = plan_spec(&pod, vec!["sh".into()]).unwrap();
        let mounts = spec.mounts().as_ref().unwrap();
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert!(data.options().as_ref().unwrap().contains(&"ro".to_string()));
        let shm: Vec<_> = mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/dev/shm"))
            .collect();
        assert_eq!(shm.len(), 1, "the pod's shm replaces the private one");
        assert_eq!(
            shm[0].source().as_deref(),
            Some(Path::new("/run/podd/pods/u1/shm"))
        );
        for f in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
            assert!(
                mounts.iter().any(|m| m.destination() == Path::new(f)),
                "{f}"
            );
        }
        let _ = VolumeMount::default();
    }

    #[test]
    fn capabilities_are_kubernetes_defaults_with_drops_and_adds() {
        let mut pod = pod();
        let caps_of = |pod: &Pod| {
            let spec = plan_spec(pod, vec!["sh".into()]).unwrap();
            spec.process()
                .as_ref()
                .unwrap()
                .capabilities()
                .clone()
                .unwrap()
        };
        let caps = caps_of(&pod);
        let eff = caps.effective().clone().unwrap();
        assert_eq!(eff.len(), DEFAULT_CAPABILITIES.len());
        assert!(eff.contains(&Capability::Chown) && eff.contains(&Capability::Setuid));
        assert!(!eff.contains(&Capability::SysAdmin));
        assert!(caps.ambient().clone().unwrap().is_empty());

        pod.spec.as_mut().unwrap().containers[0].security_context = Some(
            serde_json::from_value(serde_json::json!(
                {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "cap_kill"]}}
            ))
            .unwrap(),
        );
        let eff = caps_of(&pod).effective().clone().unwrap();
        assert_eq!(
            eff,
            [Capability::NetAdmin, Capability::Kill]
                .into_iter()
                .collect()
        );

        pod.spec.as_mut().unwrap().containers[0].security_context = Some(
            serde_json::from_value(serde_json::json!({"capabilities": {"add": ["FLY"]}})).unwrap(),
        );
        let e = plan_spec(&pod, vec!["sh".into()]).unwrap_err().to_string();
        assert!(e.contains("\"FLY\" is not a Linux capability"), "{e}");
    }

    fn device_rules_of(spec: &Spec) -> Vec<LinuxDeviceCgroup> {
        spec.linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap()
    }

    /// Whether the rules (last match wins, as cgroup v1 and the runtime read them) let the
    /// container read or write char device major:minor.
    fn allows(rules: &[LinuxDeviceCgroup], major: i64, minor: i64) -> bool {
        rules
            .iter()
            .rev()
            .find(|r| {
                r.typ()
                    .is_none_or(|t| t == LinuxDeviceType::C || t == LinuxDeviceType::A)
                    && r.major().is_none_or(|m| m == major)
                    && r.minor().is_none_or(|m| m == minor)
                    && r.access().as_deref().is_some_and(|a| a.contains('r'))
            })
            .is_some_and(|r| r.allow())
    }

    #[test]
    fn a_default_container_may_use_only_the_oci_default_devices() {
        let pod = pod();
        let spec = plan_spec(&pod, vec!["sh".into()]).unwrap();
        let rules = device_rules_of(&spec);
        assert!(
            !rules[0].allow() && rules[0].typ().is_none(),
            "deny all first"
        );
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
        ] {
            assert!(allows(&rules, major, minor), "c {major}:{minor} allowed");
        }
        assert!(allows(&rules, 136, 4), "the container's pts");
        // loop-control, tun, fuse, kmsg, mem, and the block devices.
        for (major, minor) in [(10, 237), (10, 200), (10, 229), (1, 11), (1, 1), (7, 0)] {
            assert!(
                !allows(&rules, major, minor),
                "c {major}:{minor} must be refused"
            );
        }
        assert!(
            rules
                .iter()
                .all(|r| !r.allow() || r.typ() == Some(LinuxDeviceType::C)),
            "no block device is allowed: {rules:?}"
        );
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.devices().as_ref().is_none_or(|d| d.is_empty()));
        assert!(!linux.masked_paths().clone().unwrap().is_empty());
        assert!(!linux.readonly_paths().clone().unwrap().is_empty());
    }

    #[test]
    fn only_the_containers_own_dev_is_mounted_with_devices() {
        let pod = pod();
        let spec = plan_spec(&pod, vec!["sh".into()]).unwrap();
        for m in spec.mounts().as_ref().unwrap() {
            let options = m.options().clone().unwrap_or_default();
            if m.destination() == Path::new("/dev") {
                assert_eq!(m.typ().as_deref(), Some("tmpfs"));
                assert!(!options.contains(&"nodev".to_string()), "{m:?}");
            } else if m.destination() != Path::new("/proc")
                && m.destination() != Path::new("/dev/pts")
            {
                // proc has no device nodes and devpts holds the container's own terminals;
                // every other mount is nodev.
                assert!(options.contains(&"nodev".to_string()), "{m:?} is not nodev");
            }
        }
    }

    #[test]
    fn privileged_is_the_explicit_way_out() {
        let mut pod = pod();
        pod.spec.as_mut().unwrap().containers[0].security_context = Some(
            serde_json::from_value(serde_json::json!(
                {"privileged": true, "capabilities": {"drop": ["ALL"]}}
            ))
            .unwrap(),
        );
        let spec = plan_spec(&pod, vec!["sh".into()]).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        let eff = caps.effective().clone().unwrap();
        assert_eq!(
            eff.len(),
            current_capabilities().len(),
            "every capability podd has"
        );
        assert!(eff.contains(&Capability::SysAdmin) && eff.contains(&Capability::Mknod));
        assert_eq!(caps.bounding(), caps.effective());

        let rules = device_rules_of(&spec);
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow() && rules[0].typ().is_none() && rules[0].major().is_none());
        let linux = spec.linux().as_ref().unwrap();
        let devices = linux.devices().clone().unwrap();
        assert!(
            devices
                .iter()
                .any(|d| d.path() == Path::new("/dev/null") && d.major() == 1 && d.minor() == 3),
            "the host's /dev: {devices:?}"
        );
        assert!(
            !devices
                .iter()
                .any(|d| d.path().starts_with("/dev/pts") || d.path() == Path::new("/dev/console")),
            "{devices:?}"
        );
        assert_eq!(linux.masked_paths().clone(), Some(vec![]));
        assert_eq!(linux.readonly_paths().clone(), Some(vec![]));
        let sys = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        let options = sys.options().clone().unwrap();
        assert!(
            options.contains(&"rw".to_string()) && !options.contains(&"ro".to_string()),
            "{options:?}"
        );
        assert!(linux.seccomp().is_none());

        pod.spec.as_mut().unwrap().containers[0].security_context = Some(
            serde_json::from_value(serde_json::json!(
                {"privileged": true, "allowPrivilegeEscalation": false}
            ))
            .unwrap(),
        );
        let e = plan_spec(&pod, vec!["sh".into()]).unwrap_err().to_string();
        assert!(e.contains("contradict"), "{e}");
        // The API refuses the pair too, so such a pod never reaches a node.
        let errs = podd_api::validation::validate(&pod).unwrap_err();
        assert!(
            errs.to_string()
                .contains("cannot set allowPrivilegeEscalation to false and privileged to true"),
            "{errs}"
        );
    }

    #[test]
    fn host_devices_lists_device_nodes_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("net")).unwrap();
        std::fs::create_dir(dir.path().join("pts")).unwrap();
        std::fs::write(dir.path().join("plain"), "x").unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).unwrap();
        let mk = |p: &str, major, minor| {
            nix::sys::stat::mknod(
                &dir.path().join(p),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o620),
                nix::sys::stat::makedev(major, minor),
            )
            .unwrap()
        };
        mk("net/tun", 10, 200);
        mk("pts/0", 136, 0);
        mk("console", 5, 1);
        let devices = host_devices(dir.path()).unwrap();
        assert_eq!(devices.len(), 1, "{devices:?}");
        let tun = &devices[0];
        assert_eq!(tun.path(), &dir.path().join("net/tun"));
        assert_eq!(
            (tun.typ(), tun.major(), tun.minor()),
            (LinuxDeviceType::C, 10, 200)
        );
        assert!(tun.file_mode().is_some());
    }

    #[test]
    fn no_command_is_a_clear_error() {
        let pod = pod();
        let e = plan_spec(&pod, vec![]).unwrap_err().to_string();
        assert!(
            e.contains("default/web") && e.contains("set command"),
            "{e}"
        );
    }
}

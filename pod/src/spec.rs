//! The OCI runtime spec of one container of a pod: the image's process merged with the
//! container's, the pod's shared namespaces joined by path, its own mount, PID and cgroup
//! namespaces, volumes and the pod's /etc files bound in, and its resources as cgroup limits.

use crate::volumes::ResolvedVolume;
use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, Spec, UserBuilder,
};
use podd_api::pod::{Container, Pod};
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
    let pod_name = format!("{}/{}", plan.pod.metadata.namespace, plan.pod.metadata.name);
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
    if sc.allow_privilege_escalation == Some(false) {
        process.set_no_new_privileges(Some(true));
    }
    process.set_capabilities(Some(capabilities(&pod_name, c, &sc)?));
    spec.set_process(Some(process));

    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(plan.rootfs.clone());
    root.set_readonly(Some(sc.read_only_root_filesystem));
    spec.set_root(Some(root));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if let Some(shm) = plan.shm_dir {
        mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
        mounts.push(bind(shm, Path::new("/dev/shm"), false).map_err(oci)?);
    }
    mounts.extend(etc_mounts(plan.etc_dir).map_err(oci)?);
    for m in &c.volume_mounts {
        if let Some(v) = plan.volumes.get(&m.name) {
            mounts.push(bind(&v.host_path, Path::new(&m.mount_path), m.read_only).map_err(oci)?);
        }
    }
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(namespaces(plan.namespaces).map_err(oci)?));
    linux.set_cgroups_path(Some(PathBuf::from("/").join(&plan.cgroups_path)));
    linux.set_resources(Some(resources(c, plan.cpu_controller).map_err(oci)?));
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

/// The bounding, effective and permitted sets (as containerd sets them for Kubernetes:
/// nothing inheritable or ambient, so a non-root process holds none).
fn capabilities(
    pod: &str,
    c: &Container,
    sc: &podd_api::pod::SecurityContext,
) -> Result<LinuxCapabilities, SpecError> {
    let unsupported = |field: &str, fix: &str| SpecError::Unsupported {
        pod: pod.to_string(),
        container: c.name.clone(),
        field: field.to_string(),
        fix: fix.to_string(),
    };
    if sc.privileged {
        return Err(unsupported(
            "privileged",
            "add the capabilities the container needs under securityContext.capabilities.add",
        ));
    }
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
    for name in DEFAULT_CAPABILITIES {
        set.insert(parse("capabilities", name)?);
    }
    if let Some(caps) = &sc.capabilities {
        for name in &caps.drop {
            if name.eq_ignore_ascii_case("ALL") {
                set.clear();
            } else {
                set.remove(&parse("capabilities.drop", name)?);
            }
        }
        for name in &caps.add {
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

fn hostname(pod: &Pod) -> String {
    if pod.spec.hostname.is_empty() {
        pod.metadata.name.clone()
    } else {
        pod.spec.hostname.clone()
    }
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

fn bind(source: &Path, dest: &Path, read_only: bool) -> Result<Mount, OciSpecError> {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
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
    let limits = &c.resources.limits;
    let (req_cpu, _) = c.resources.effective_requests();
    let mut cpu = LinuxCpuBuilder::default();
    if req_cpu.millis() > 0 && cpu_controller {
        cpu = cpu.shares((req_cpu.millis() * 1024 / 1000).max(2));
    }
    if let Some(l) = limits.cpu {
        cpu = cpu
            .quota((l.millis() * CPU_PERIOD_US / 1000).max(1000) as i64)
            .period(CPU_PERIOD_US);
    }
    r = r.cpu(cpu.build()?);
    if let Some(m) = limits.memory {
        r = r.memory(
            LinuxMemoryBuilder::default()
                .limit(m.bytes() as i64)
                .build()?,
        );
    }
    if let Some(p) = limits.pids {
        r = r.pids(LinuxPidsBuilder::default().limit(p as i64).build()?);
    }
    r.build()
}

/// The pod cgroup's limits: the sum of its containers' limits, as the kubelet sets them,
/// when every container has one (otherwise that resource is unlimited at pod level).
pub fn pod_limits(pod: &Pod) -> (Option<u64>, Option<u64>) {
    let sum = |f: &dyn Fn(&Container) -> Option<u64>| -> Option<u64> {
        pod.spec.containers.iter().map(f).sum::<Option<u64>>()
    };
    (
        sum(&|c| c.resources.limits.cpu.map(|v| v.millis())),
        sum(&|c| c.resources.limits.memory.map(|v| v.bytes())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::pod::VolumeMount;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [
                {"name": "a", "image": "busybox",
                 "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi", "pids": 50}},
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
            },
        );
        container_spec(&ContainerPlan {
            pod,
            container: &pod.spec.containers[0],
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
        let c = &pod.spec.containers[0];
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

        pod.spec.containers[0].security_context = Some(
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

        pod.spec.containers[0].security_context = Some(
            serde_json::from_value(serde_json::json!({"capabilities": {"add": ["FLY"]}})).unwrap(),
        );
        let e = plan_spec(&pod, vec!["sh".into()]).unwrap_err().to_string();
        assert!(e.contains("\"FLY\" is not a Linux capability"), "{e}");
        pod.spec.containers[0].security_context =
            Some(serde_json::from_value(serde_json::json!({"privileged": true})).unwrap());
        let e = plan_spec(&pod, vec!["sh".into()]).unwrap_err().to_string();
        assert!(
            e.contains("securityContext.privileged is not supported"),
            "{e}"
        );
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

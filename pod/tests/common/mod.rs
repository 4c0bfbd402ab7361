//! Shared by the pod tests and the `pods` benchmark: a test "node" (a network namespace with
//! the node bridge, a cgroup subtree, state directories), busybox images, pod objects, waits,
//! and the checks that a node has nothing left of its pods. Each item is used by some of the
//! targets that include this module, not all.
#![allow(dead_code)]

use podd_api::Pod;
use podd_image::{Compression, ImageStore, PullPolicy, RegistryOptions, UnpackedImage};
use podd_net::netlink::Netlink;
use podd_net::{Ipv4Cidr, NamedNamespace, NodeNetConfig, NodeNetwork, NsKind};
use podd_pod::manager::{PodConfig, PodManager};
use podd_pod::pod_status::pod_status;
use podd_pod::shim::ContainerState;
use podd_pod::shim::PodRuntimeStatus;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cgroup v2 mount this machine offers podd, found as podd finds it: `/sys/fs/cgroup` when
/// it is cgroup2 (the VM, with controllers), else the hybrid host's `/sys/fs/cgroup/unified`.
pub fn cgroup2_mount() -> PathBuf {
    podd_runtime::cgroups::detect_root().expect("a cgroup2 mount")
}

/// The test's node: a network namespace with the bridge, a cgroup subtree, state dirs; all
/// removed on drop (pods first, so that a failing test leaves nothing either).
pub struct Node {
    pub tmp: tempfile::TempDir,
    pub node_ns: Option<NamedNamespace>,
    pub cgroup_root: PathBuf,
    pub cidr: Ipv4Cidr,
    pub shim: PathBuf,
}

impl Node {
    /// `tag` makes the names unique per test; `third_octet` picks the node's /24.
    pub fn new(tag: &str, third_octet: u8, shim: &Path) -> Node {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("podd-pod-{tag}-"))
            .tempdir()
            .unwrap();
        let name = format!("pt{tag}-{}", std::process::id());
        let node_ns =
            NamedNamespace::create(&tmp.path().join("nodes"), &name, NsKind::Net).unwrap();
        let cgroup_root = cgroup2_mount().join(&name);
        std::fs::create_dir_all(&cgroup_root).unwrap();
        Node {
            tmp,
            node_ns: Some(node_ns),
            cgroup_root,
            cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, third_octet, 0), 24).unwrap(),
            shim: shim.to_path_buf(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub fn netns_path(&self) -> PathBuf {
        self.node_ns.as_ref().unwrap().path().to_path_buf()
    }

    pub fn net_config(&self) -> NodeNetConfig {
        net_config(self.tmp.path(), &self.netns_path(), self.cidr)
    }

    pub fn pod_config(&self) -> PodConfig {
        pod_config(self.tmp.path(), &self.cgroup_root, &self.shim)
    }

    /// A pod manager as an agent process would build it; call again to "restart the agent".
    pub fn manager(&self) -> PodManager {
        let net = Arc::new(NodeNetwork::setup(self.net_config()).unwrap());
        PodManager::new(self.pod_config(), net)
    }

    /// The image store of this node.
    pub fn store(&self) -> ImageStore {
        ImageStore::open(self.path("images")).unwrap()
    }

    /// `busybox` and `busybox-httpd` from an OCI layout written by podd-image's test helper.
    pub fn images(&self) -> BTreeMap<String, UnpackedImage> {
        busybox_images(self.tmp.path())
    }

    /// Every leftover of the node's pods: state, namespaces, mounts, leases, veths, cgroups.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in [
            "run/netns",
            "run/ipcns",
            "run/utsns",
            "run/pods",
            "data/pods",
        ] {
            for e in std::fs::read_dir(self.path(dir)).into_iter().flatten() {
                out.push(format!("file {}", e.unwrap().path().display()));
            }
        }
        let d = self.tmp.path().to_str().unwrap().to_string();
        for m in mounts_under(&d) {
            if !m.contains("/nodes/") && !m.contains("/images/") {
                out.push(format!("mount {m}"));
            }
        }
        out.extend(
            lease_files(&self.path("ipam"))
                .into_iter()
                .map(|l| format!("lease {l}")),
        );
        if let Ok(mut nl) = Netlink::open_in(&self.netns_path()) {
            for l in nl.links().unwrap_or_default() {
                if l.name.starts_with("pdv") {
                    out.push(format!("veth {}", l.name));
                }
            }
        }
        for d in sub_dirs(&self.cgroup_root) {
            if !d.ends_with("/podd") && !d.ends_with("/podd/pods") {
                out.push(format!("cgroup {d}"));
            }
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Pods a failed test left: stop them before their network and cgroups go.
        if let Ok(net) = NodeNetwork::setup(self.net_config()) {
            let m = PodManager::new(self.pod_config(), Arc::new(net));
            for uid in m.list() {
                let _ = m.stop_pod(&uid);
            }
            drop(m);
            if let Ok(net) = NodeNetwork::setup(self.net_config()) {
                let _ = net.destroy();
            }
        }
        if let Some(ns) = self.node_ns.take() {
            let _ = ns.remove();
        }
        let mut dirs = sub_dirs(&self.cgroup_root);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.cgroup_root);
    }
}

/// The node network of a test node whose files are under `dir`.
pub fn net_config(dir: &Path, netns: &Path, cidr: Ipv4Cidr) -> NodeNetConfig {
    let mut c = NodeNetConfig::new(cidr);
    c.node_netns = Some(netns.to_path_buf());
    c.ipam_dir = dir.join("ipam");
    c
}

/// The pod configuration of a test node whose files are under `dir`, with short back-off.
pub fn pod_config(dir: &Path, cgroup_root: &Path, shim: &Path) -> PodConfig {
    let mut cfg = PodConfig::new(&dir.join("run"), &dir.join("data"), cgroup_root, shim);
    cfg.backoff_initial = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(800);
    cfg
}

/// `busybox` and `busybox-httpd` from the OCI layout `<dir>/layout` (written when missing),
/// unpacked into the store `<dir>/images`.
pub fn busybox_images(dir: &Path) -> BTreeMap<String, UnpackedImage> {
    let layout = dir.join("layout");
    if !layout.join("index.json").exists() {
        podd_image::testing::write_busybox_layout(&layout, Compression::Gzip).unwrap();
    }
    let store = ImageStore::open(dir.join("images")).unwrap();
    let mut out = BTreeMap::new();
    for name in ["busybox", "busybox-httpd"] {
        let reference = format!("oci:{}:{name}:latest", layout.display());
        out.insert(
            name.to_string(),
            prepare(&store, &reference, &Default::default()),
        );
    }
    out
}

/// Prepares (pulls or imports, verifies, unpacks) an image into `store`.
pub fn prepare(store: &ImageStore, reference: &str, opts: &RegistryOptions) -> UnpackedImage {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(store.prepare(reference, PullPolicy::IfNotPresent, opts))
        .unwrap_or_else(|e| panic!("preparing {reference}: {e}"))
}

/// A pod object in namespace default with these containers (and optional extra spec fields).
pub fn pod(name: &str, uid: &str, containers: serde_json::Value) -> Pod {
    pod_with(name, uid, containers, serde_json::json!({}))
}

pub fn pod_with(
    name: &str,
    uid: &str,
    containers: serde_json::Value,
    extra_spec: serde_json::Value,
) -> Pod {
    let mut spec =
        serde_json::json!({"containers": containers, "terminationGracePeriodSeconds": 2});
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": spec
    }))
    .unwrap()
}

/// Waits until `f` holds for the pod's runtime status; panics with the status and shim log.
pub fn wait_for(
    m: &PodManager,
    uid: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&PodRuntimeStatus) -> bool,
) -> PodRuntimeStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((s, _)) = m.status(uid)
            && f(&s)
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "pod {uid}: timed out waiting for {what}; status {:?}; shim log:\n{}",
            m.status(uid),
            std::fs::read_to_string(m.state_dir(uid).join("shim.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every container of the pod is running.
pub fn all_running(s: &PodRuntimeStatus) -> bool {
    !s.containers.is_empty()
        && s.containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Running { .. }))
}

pub fn wait_ready(m: &PodManager, uid: &str) {
    wait_for(m, uid, "Running and ready", Duration::from_secs(20), |rt| {
        let s = pod_status(&Pod::default(), rt, true, None);
        s.phase.as_deref() == Some("Running") && status_ready(&s)
    });
}

/// The status's Ready condition is True.
pub fn status_ready(s: &podd_api::PodStatus) -> bool {
    s.conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Runs a command in a container of a running pod: (exit code, stdout + stderr).
pub fn exec(m: &PodManager, uid: &str, container: &str, argv: &[&str]) -> (i32, String) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let out = m.exec_command(uid, container, &argv).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Mount points at or under `dir`, from this process's mount table.
pub fn mounts_under(dir: &str) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// Lease files under the IPAM directory (its `last` next-fit marker is not a lease).
pub fn lease_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        if e.path().is_dir() {
            out.extend(lease_files(&e.path()));
        } else if e.file_name() != "last" {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// Every directory below `dir`, parents before children.
pub fn sub_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = Vec::new();
    for e in entries.flatten().filter(|e| e.path().is_dir()) {
        out.push(e.path().display().to_string());
        out.extend(sub_dirs(&e.path()));
    }
    out
}

/// A process's resident set and proportional set size in KiB (from /proc).
pub fn rss_pss_kib(pid: i32) -> (u64, u64) {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (field(&status, "VmRSS:"), field(&rollup, "Pss:"))
}

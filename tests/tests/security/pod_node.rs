//! The pod-manager node and the device attack shared by `security::devices`,
//! `security::host_users` and `vm_security::devices` (included by path in both targets).
#![allow(dead_code)]

use podd_api::Pod;
use podd_api::resources::{pod_is_ready, pod_phase};
use podd_image::{Compression, ImageStore, PullPolicy, RegistryOptions, UnpackedImage};
use podd_net::{Ipv4Cidr, NamedNamespace, NodeNetConfig, NodeNetwork, NsKind};
use podd_pod::manager::{PodConfig, PodManager};
use podd_pod::pod_status::pod_status;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A test node for the pod manager: a network namespace holding the node bridge (so no pod
/// packet can leave), a cgroup subtree, and state directories in a temporary directory; all
/// removed on drop, pods first, so a failed test leaves nothing behind.
pub(crate) struct PodNode {
    pub tmp: tempfile::TempDir,
    node_ns: Option<NamedNamespace>,
    pub cgroup_root: PathBuf,
    cidr: Ipv4Cidr,
    shim: PathBuf,
}

/// `/sys/fs/cgroup` where it is cgroup2 (the VM), else the hybrid host's unified tree, found as
/// podd finds it.
pub(crate) fn cgroup2_mount() -> PathBuf {
    podd_runtime::cgroups::detect_root().expect("a cgroup2 mount")
}

impl PodNode {
    /// `tag` names the node's netns, cgroup and directory; `third_octet` its pod /24.
    pub fn new(tag: &str, third_octet: u8) -> PodNode {
        let shim = podd_tests::cluster::bin_dir().unwrap().join("podd-shim");
        assert!(
            shim.exists(),
            "{} is missing: build it first with `cargo build -p podd-pod --bin podd-shim` (same profile and target dir), or set PODD_BIN_DIR",
            shim.display()
        );
        let tmp = tempfile::Builder::new()
            .prefix(&format!("podd-sec-{tag}-"))
            .tempdir()
            .unwrap();
        let name = format!("ps{tag}-{}", std::process::id());
        let node_ns =
            NamedNamespace::create(&tmp.path().join("nodes"), &name, NsKind::Net).unwrap();
        let cgroup_root = cgroup2_mount().join(&name);
        std::fs::create_dir_all(&cgroup_root).unwrap();
        PodNode {
            tmp,
            node_ns: Some(node_ns),
            cgroup_root,
            cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, third_octet, 0), 24).unwrap(),
            shim,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn net_config(&self) -> NodeNetConfig {
        let mut c = NodeNetConfig::new(self.cidr);
        c.node_netns = Some(self.node_ns.as_ref().unwrap().path().to_path_buf());
        c.ipam_dir = self.path("ipam");
        c
    }

    pub fn pod_config(&self) -> PodConfig {
        let mut cfg = PodConfig::new(
            &self.path("run"),
            &self.path("data"),
            &self.cgroup_root,
            &self.shim,
        );
        cfg.backoff_initial = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_millis(800);
        cfg
    }

    /// A pod manager as the agent builds it (again: as a restarted agent does).
    pub fn manager(&self) -> PodManager {
        let net = Arc::new(NodeNetwork::setup(self.net_config()).unwrap());
        PodManager::new(self.pod_config(), net)
    }

    /// Imports the image `name` of the OCI layout `layout` into the node's image store.
    pub fn import(&self, layout: &Path, name: &str) -> UnpackedImage {
        let store = ImageStore::open(self.path("images")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reference = format!("oci:{}:{name}:latest", layout.display());
        rt.block_on(store.prepare(
            &reference,
            PullPolicy::IfNotPresent,
            &RegistryOptions::default(),
        ))
        .unwrap()
    }

    /// `busybox` (Cmd `sh`) from the test layout.
    pub fn busybox(&self) -> BTreeMap<String, UnpackedImage> {
        let layout = self.path("layout");
        podd_image::testing::write_busybox_layout(&layout, Compression::Gzip).unwrap();
        BTreeMap::from([("busybox".to_string(), self.import(&layout, "busybox"))])
    }
}

impl Drop for PodNode {
    fn drop(&mut self) {
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
        let mut dirs = Vec::new();
        let mut todo = vec![self.cgroup_root.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
            dirs.push(d);
        }
        // Deepest first: cgroupfs removes only empty directories.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A pod of one container `c` running `sleep 3600`, with `security_context` if given.
pub(crate) fn sleeper(
    name: &str,
    uid: &str,
    image: &str,
    security_context: Option<serde_json::Value>,
) -> Pod {
    let mut c = serde_json::json!({"name": "c", "image": image, "command": ["sleep", "3600"]});
    if let Some(sc) = security_context {
        c["securityContext"] = sc;
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"containers": [c], "terminationGracePeriodSeconds": 1}
    }))
    .unwrap()
}

pub(crate) fn wait_running(m: &PodManager, uid: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((rt, alive)) = m.status(uid)
            && let Some(pod) = m.pod(uid)
        {
            let status = pod_status(&pod, &rt, alive, None);
            let pod = Pod {
                status: Some(status),
                ..pod
            };
            if pod_phase(&pod) == "Running" && pod_is_ready(&pod) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pod {uid} never ran: {:?}",
            m.status(uid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a shell script in container `c` of the pod; returns its exit code and output.
pub(crate) fn exec_sh(m: &PodManager, uid: &str, script: &str) -> (i32, String) {
    let argv = ["sh".to_string(), "-c".to_string(), script.to_string()];
    let out = m.exec_command(uid, "c", &argv).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The host devices the attack goes for: (name, path in the host's /dev, type, major, minor).
pub(crate) const TARGETS: [(&str, &str, &str, u32, u32); 4] = [
    ("loop-control", "loop-control", "c", 10, 237),
    ("loop0", "loop0", "b", 7, 0),
    ("tun", "net/tun", "c", 10, 200),
    ("fuse", "fuse", "c", 10, 229),
];

/// The attack as a script: for each target, whether it is in /dev and opens, then mknod in
/// /dev and in the root filesystem and open. Prints `RESULT <where> <name> opened|refused`.
pub(crate) fn attack_script() -> String {
    let mut s = String::from(
        "try() { if (exec 3<>\"$2\") 2>/tmp/err; then echo \"RESULT $1 opened\"; \
         else echo \"RESULT $1 refused: $(cat /tmp/err)\"; fi; }\n",
    );
    for (name, path, typ, major, minor) in TARGETS {
        s.push_str(&format!(
            "if [ -e /dev/{path} ]; then try 'present {name}' /dev/{path}; \
             else echo 'RESULT present {name} absent'; fi\n\
             mknod /dev/podd-sec-{name} {typ} {major} {minor} && echo 'MKNOD dev {name}'\n\
             try 'dev {name}' /dev/podd-sec-{name}\n\
             mknod /podd-sec-{name} {typ} {major} {minor} && echo 'MKNOD root {name}'\n\
             try 'root {name}' /podd-sec-{name}\n\
             rm -f /dev/podd-sec-{name} /podd-sec-{name}\n"
        ));
    }
    s
}

/// The result line of `what` (e.g. `dev tun`).
pub(crate) fn result<'a>(out: &'a str, what: &str) -> &'a str {
    let prefix = format!("RESULT {what} ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no result for {what} in:\n{out}"))
}

/// Which of the targets this host has (the attack needs the driver to exist to mean anything).
pub(crate) fn host_has(path: &str) -> bool {
    Path::new("/dev").join(path).exists()
}

/// Checks the output of [`attack_script`] in a default pod: no target is in its /dev, and
/// every node it made, in /dev (the device program: EPERM) or in its root filesystem
/// (`nodev`), is refused.
pub(crate) fn assert_default_pod_refused(out: &str) {
    let mut checked = 0;
    for (name, path, ..) in TARGETS {
        if !host_has(path) {
            println!("this host has no /dev/{path}; skipping {name}");
            continue;
        }
        checked += 1;
        assert_eq!(
            result(out, &format!("present {name}")),
            "absent",
            "the host's {name} is in a default pod's /dev"
        );
        for place in ["dev", "root"] {
            let r = result(out, &format!("{place} {name}"));
            assert!(
                r.starts_with("refused"),
                "a default pod opened the host's {name} through a node it made in its {place}: it could use the host device"
            );
        }
        // In /dev (devices allowed on the mount) the device program refuses; in the root
        // filesystem, the nodev mount already does.
        let dev = result(out, &format!("dev {name}"));
        assert!(
            !out.contains(&format!("MKNOD dev {name}")) || dev.contains("not permitted"),
            "the refusal in /dev should come from the device program (EPERM): {dev}"
        );
    }
    assert!(checked > 0, "this host has none of the target devices");
}

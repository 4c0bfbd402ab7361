//! The pod manager end to end on this host (root): images from an OCI layout, a node bridge
//! in a network namespace the test made, pods with IPs, probes, exec, an agent restart that
//! adopts running pods without reusing an IP, and deletion that leaves nothing behind.

use podd_api::Pod;
use podd_image::{Compression, ImageStore, PullPolicy, RegistryOptions, UnpackedImage};
use podd_net::netlink::Netlink;
use podd_net::{Ipv4Cidr, NamedNamespace, NodeNetConfig, NodeNetwork, NsKind};
use podd_pod::manager::{PodConfig, PodError, PodManager};
use podd_pod::pod_status::pod_status;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The test's node: a network namespace with the bridge, a cgroup subtree, state dirs.
struct Node {
    tmp: tempfile::TempDir,
    node_ns: Option<NamedNamespace>,
    cgroup_root: PathBuf,
    cidr: Ipv4Cidr,
}

impl Node {
    fn new(tag: &str, third_octet: u8) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let name = format!("pm{tag}-{}", std::process::id());
        let node_ns =
            NamedNamespace::create(&tmp.path().join("nodes"), &name, NsKind::Net).unwrap();
        let cgroup_root = podd_runtime::cgroups::detect_root().unwrap().join(&name);
        std::fs::create_dir_all(&cgroup_root).unwrap();
        Node {
            tmp,
            node_ns: Some(node_ns),
            cgroup_root,
            cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, third_octet, 0), 24).unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn net_config(&self) -> NodeNetConfig {
        let mut c = NodeNetConfig::new(self.cidr);
        c.node_netns = Some(self.node_ns.as_ref().unwrap().path().to_path_buf());
        c.ipam_dir = self.path("ipam");
        c
    }

    /// A pod manager as an agent process would build it; call again to "restart the agent".
    fn manager(&self) -> PodManager {
        let net = Arc::new(NodeNetwork::setup(self.net_config()).unwrap());
        let mut cfg = PodConfig::new(
            &self.path("run"),
            &self.path("data"),
            &self.cgroup_root,
            Path::new(env!("CARGO_BIN_EXE_podd-shim")),
        );
        cfg.backoff_initial = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_millis(500);
        PodManager::new(cfg, net)
    }

    fn images(&self) -> BTreeMap<String, UnpackedImage> {
        let layout = self.path("layout");
        podd_image::testing::write_busybox_layout(&layout, Compression::Gzip).unwrap();
        let store = ImageStore::open(self.path("images")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = BTreeMap::new();
        for name in ["busybox", "busybox-httpd"] {
            let reference = format!("oci:{}:{name}:latest", layout.display());
            let img = rt
                .block_on(store.prepare(
                    &reference,
                    PullPolicy::IfNotPresent,
                    &RegistryOptions::default(),
                ))
                .unwrap();
            out.insert(name.to_string(), img);
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(net) = NodeNetwork::setup(self.net_config()) {
            let _ = net.destroy();
        }
        if let Some(ns) = self.node_ns.take() {
            let _ = ns.remove();
        }
        // Deepest first: cgroupfs removes only empty directories (podd/pods, podd, root).
        let mut dirs = walk_dirs(&self.cgroup_root);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.cgroup_root);
    }
}

fn pod(name: &str, uid: &str, containers: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 2}
    }))
    .unwrap()
}

fn wait_ready(m: &PodManager, uid: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((rt, alive)) = m.status(uid) {
            let s = pod_status(&Pod::default(), &rt, alive, None);
            let ready = s
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if s.phase.as_deref() == Some("Running") && ready {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pod {uid} never became ready: {:?}",
            m.status(uid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn exec(m: &PodManager, uid: &str, container: &str, argv: &[&str]) -> (i32, String) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let out = m.exec_command(uid, container, &argv).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_str().unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(d))
        .map(str::to_string)
        .collect()
}

#[test]
fn pods_run_talk_survive_an_agent_restart_and_leave_nothing() {
    let node = Node::new("a", 71);
    let images = node.images();
    let m = node.manager();

    let web = pod(
        "web",
        "uid-web",
        serde_json::json!([
            {"name": "httpd", "image": "busybox-httpd",
             "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}},
            {"name": "side", "image": "busybox", "command": ["sleep", "1000"]}
        ]),
    );
    let client = pod(
        "client",
        "uid-client",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["sleep", "1000"]}]),
    );
    let web_info = m.run_pod(&web, &images).unwrap();
    let client_info = m.run_pod(&client, &images).unwrap();
    let web_ip = web_info.ip.unwrap();
    assert!(node.cidr.contains(web_ip));
    assert_ne!(Some(web_ip), client_info.ip);
    wait_ready(&m, "uid-web");
    wait_ready(&m, "uid-client");

    // Pod to pod over the bridge, by pod IP; and localhost inside the pod.
    let (code, out) = exec(
        &m,
        "uid-client",
        "c",
        &["wget", "-q", "-O", "-", &format!("http://{web_ip}:8080/")],
    );
    assert_eq!(code, 0, "{out}");
    let (code, local) = exec(
        &m,
        "uid-web",
        "side",
        &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
    );
    assert_eq!(code, 0, "{local}");
    assert_eq!(out, local, "the same page by pod IP and by localhost");
    let (_, hostname) = exec(&m, "uid-web", "side", &["hostname"]);
    assert_eq!(hostname.trim(), "web");
    let (_, resolv) = exec(&m, "uid-web", "side", &["cat", "/etc/hosts"]);
    assert!(resolv.contains(&format!("{web_ip}\tweb")), "{resolv}");
    let (code, _) = exec(&m, "uid-web", "side", &["sh", "-c", "exit 7"]);
    assert_eq!(code, 7, "exec returns the command's exit code");

    // The agent restarts: a new manager finds both pods, running, with their IPs.
    drop(m);
    let m = node.manager();
    let again = m.find("uid-web").expect("the running pod is adopted");
    assert_eq!(again.ip, Some(web_ip));
    assert_eq!(m.list(), ["uid-client", "uid-web"]);
    let third = m
        .run_pod(
            &pod("third", "uid-third", serde_json::json!([{"name": "c", "image": "busybox", "command": ["sleep", "1000"]}])),
            &images,
        )
        .unwrap();
    assert!(
        third.ip != Some(web_ip) && third.ip != client_info.ip,
        "no IP is handed out twice"
    );
    let (code, _) = exec(
        &m,
        "uid-client",
        "c",
        &["wget", "-q", "-O", "-", &format!("http://{web_ip}:8080/")],
    );
    assert_eq!(code, 0, "service continues across the agent restart");

    for uid in ["uid-web", "uid-client", "uid-third"] {
        m.stop_pod(uid).unwrap();
    }
    // Nothing is left: no state, namespaces, mounts, veths, leases or cgroups.
    assert!(m.list().is_empty());
    assert!(
        mounts_under(node.tmp.path())
            .iter()
            .all(|p| p.contains("/nodes/")),
        "{:?}",
        mounts_under(node.tmp.path())
    );
    for dir in [
        "run/netns",
        "run/ipcns",
        "run/utsns",
        "run/pods",
        "data/pods",
    ] {
        let n = std::fs::read_dir(node.path(dir))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(n, 0, "{dir} is empty");
    }
    let leases: usize = walk_files(&node.path("ipam"));
    assert_eq!(leases, 0, "no IP lease is left");
    let mut nl = Netlink::open_in(node.node_ns.as_ref().unwrap().path()).unwrap();
    let veths: Vec<String> = nl
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n.starts_with("pdv"))
        .collect();
    assert!(veths.is_empty(), "{veths:?}");
    let cgroups = walk_dirs(&node.cgroup_root);
    assert!(cgroups.iter().all(|d| !d.contains("uid-")), "{cgroups:?}");
}

#[test]
fn bad_pods_get_clear_errors_and_leave_nothing() {
    let node = Node::new("b", 72);
    let images = node.images();
    let m = node.manager();
    let unknown = pod(
        "x",
        "uid-x",
        serde_json::json!([{"name": "c", "image": "nginx:1.25"}]),
    );
    let e = m.run_pod(&unknown, &images).unwrap_err();
    assert!(matches!(e, PodError::ImageMissing { .. }), "{e}");
    assert!(e.to_string().contains("default/x") && e.to_string().contains("nginx:1.25"));

    let mut missing = pod(
        "y",
        "uid-y",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["true"],
        "volumeMounts": [{"name": "h", "mountPath": "/h"}]}]),
    );
    missing.spec.as_mut().unwrap().volumes = serde_json::from_value(serde_json::json!([
        {"name": "h", "hostPath": {"path": "/nonexistent/podd-pm-test", "type": "Directory"}}
    ]))
    .unwrap();
    let e = m.run_pod(&missing, &images).unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/podd-pm-test") && e.contains("default/y"),
        "{e}"
    );

    let mut limited = pod(
        "z",
        "uid-z",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["true"],
        "resources": {"limits": {"memory": "32Mi"}}}]),
    );
    limited.metadata.uid = Some("uid-z".into());
    let e = m.run_pod(&limited, &images).unwrap_err().to_string();
    assert!(
        e.contains("memory controller"),
        "limits without controllers are refused clearly: {e}"
    );

    // Names that would become paths, hostnames and cgroups must be valid DNS names.
    let bad_name = pod(
        "Bad_Name",
        "uid-n",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["true"]}]),
    );
    let e = m.run_pod(&bad_name, &images).unwrap_err().to_string();
    assert!(
        e.contains("default/Bad_Name") && e.contains("metadata.name"),
        "{e}"
    );
    let bad_container = pod(
        "n",
        "uid-n",
        serde_json::json!([{"name": "../escape", "image": "busybox", "command": ["true"]}]),
    );
    let e = m.run_pod(&bad_container, &images).unwrap_err().to_string();
    assert!(e.contains("spec.containers[0].name"), "{e}");

    // Limits beyond what the node has.
    let huge = pod(
        "huge",
        "uid-huge",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["true"],
        "resources": {"limits": {"memory": "64Ti", "cpu": "1"}}}]),
    );
    let e = m.run_pod(&huge, &images).unwrap_err().to_string();
    assert!(
        e.contains("memory limits add up to") && e.contains("lower them"),
        "{e}"
    );
    let mut init = pod(
        "init",
        "uid-init",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["true"]}]),
    );
    let spec = init.spec.as_mut().unwrap();
    spec.init_containers = Some(spec.containers.clone());
    spec.init_containers.as_mut().unwrap()[0].name = "setup".into();
    let e = m.run_pod(&init, &images).unwrap_err().to_string();
    assert!(e.contains("initContainers"), "{e}");

    // An env valueFrom the node cannot resolve yet never starts with an empty value.
    let value_from = pod(
        "vf",
        "uid-vf",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["true"],
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]}]),
    );
    let e = m.run_pod(&value_from, &images).unwrap_err();
    assert_eq!(e.reason(), "CreateContainerConfigError");
    assert!(
        matches!(&e, PodError::Config { container, .. } if container == "c")
            && e.to_string().contains("PASSWORD")
            && e.to_string().contains("valueFrom"),
        "{e}"
    );
    // A probe on a port name no container has.
    let bad_probe = pod(
        "bp",
        "uid-bp",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["true"],
        "readinessProbe": {"tcpSocket": {"port": "http"}}}]),
    );
    let e = m.run_pod(&bad_probe, &images).unwrap_err().to_string();
    assert!(e.contains("\"http\""), "{e}");

    assert!(m.list().is_empty());
    assert_eq!(
        walk_files(&node.path("ipam")),
        0,
        "no lease leaked: {:?}",
        list_files(&node.path("ipam"))
    );
    assert!(
        mounts_under(&node.path("data")).is_empty() && mounts_under(&node.path("run")).is_empty()
    );
    for dir in ["run/netns", "run/pods", "data/pods"] {
        assert_eq!(
            std::fs::read_dir(node.path(dir))
                .map(|d| d.count())
                .unwrap_or(0),
            0,
            "{dir}"
        );
    }
}

/// Lease files under the IPAM directory (its `last` next-fit marker is not a lease).
fn walk_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk_files(&e.path())
            } else {
                usize::from(e.file_name() != "last")
            }
        })
        .sum()
}

fn walk_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = Vec::new();
    for e in entries.flatten().filter(|e| e.path().is_dir()) {
        out.push(e.path().display().to_string());
        out.extend(walk_dirs(&e.path()));
    }
    out
}

fn list_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        if e.path().is_dir() {
            out.extend(list_files(&e.path()));
        } else {
            out.push(format!(
                "{} = {}",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            ));
        }
    }
    out
}

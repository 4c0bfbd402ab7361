//! Class 7: `podd reset` after hostile pods must remove everything, and never anything else.
//!
//! The attack: a node runs pods that make their own removal hard, then `podd reset` (the real
//! binary, in the node's network namespace, on the node's directories) is run:
//! - a container that ignores SIGTERM, whose shim was then SIGKILLed (a stale `status.json`
//!   and orphaned container processes);
//! - in its emptyDir: symlinks to a host canary directory and to `/`, names with a tab, a
//!   newline and spaces, a directory nested 300 levels deep, and a file made immutable (as
//!   `chattr +i` does, for a pod granted CAP_LINUX_IMMUTABLE; the default set lacks it);
//! - a bind mount of the host canary directory inside the pod's volume, kept busy by a
//!   process whose working directory is in it (the old reset's `remove_dir_all` went
//!   through it and deleted the host's files), and an extra tmpfs in its state directory;
//! - a stale pod state whose `status.json` names an unrelated live process as its shim (the
//!   old reset SIGKILLed it).
//!
//! Reset must exit 0 having removed every podd process, cgroup, mount, namespace file, veth,
//! the bridge, the load balancer's pins, and the directories, while the canary and the
//! unrelated process are untouched. A second run, with a failure forced (a pin directory
//! that is not bpffs), reports that failure, exits non-zero, and still removes the rest.

use super::devices::pod_node::cgroup2_mount;
use podd_api::Pod;
use podd_image::{Compression, ImageStore, PullPolicy, RegistryOptions, UnpackedImage};
use podd_net::netlink::Netlink;
use podd_net::{Ipv4Cidr, NamedNamespace, NodeNetConfig, NodeNetwork, NsKind};
use podd_pod::manager::{PodConfig, PodManager};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A node laid out as `podd reset` expects it (`<data>/ipam`, `<data>/pods`, `<run>`), in a
/// temporary directory, with its own network namespace, cgroup subtree and bpffs. Drop
/// removes whatever a failed test left.
struct ResetNode {
    tmp: tempfile::TempDir,
    node_ns: Option<NamedNamespace>,
    cgroup_root: PathBuf,
    cidr: Ipv4Cidr,
    bin: PathBuf,
    children: Vec<Child>,
}

impl ResetNode {
    fn new() -> ResetNode {
        let bin = podd_tests::cluster::bin_dir().unwrap();
        for b in ["podd", "podd-shim"] {
            assert!(
                bin.join(b).exists(),
                "{} is missing: build it first with `cargo build -p podd -p podd-pod` (same \
                 profile and target dir), or set PODD_BIN_DIR",
                bin.join(b).display()
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("podd-sec-reset-")
            .tempdir()
            .unwrap();
        let name = format!("psreset-{}", std::process::id());
        let node_ns =
            NamedNamespace::create(&tmp.path().join("nodes"), &name, NsKind::Net).unwrap();
        let cgroup_root = cgroup2_mount().join(&name);
        std::fs::create_dir_all(&cgroup_root).unwrap();
        let bpf = tmp.path().join("bpf");
        std::fs::create_dir_all(&bpf).unwrap();
        nix::mount::mount(
            Some("bpf"),
            &bpf,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        ResetNode {
            tmp,
            node_ns: Some(node_ns),
            cgroup_root,
            cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, 223, 0), 24).unwrap(),
            bin,
            children: Vec::new(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn netns(&self) -> PathBuf {
        self.node_ns.as_ref().unwrap().path().to_path_buf()
    }

    fn net_config(&self) -> NodeNetConfig {
        let mut c = NodeNetConfig::new(self.cidr);
        c.node_netns = Some(self.netns());
        c.ipam_dir = self.path("data/ipam");
        c
    }

    fn manager(&self) -> PodManager {
        let net = Arc::new(NodeNetwork::setup(self.net_config()).unwrap());
        let mut cfg = PodConfig::new(
            &self.path("run"),
            &self.path("data"),
            &self.cgroup_root,
            &self.bin.join("podd-shim"),
        );
        cfg.backoff_initial = Duration::from_millis(100);
        PodManager::new(cfg, net)
    }

    fn busybox(&self) -> BTreeMap<String, UnpackedImage> {
        let layout = self.path("layout");
        podd_image::testing::write_busybox_layout(&layout, Compression::Gzip).unwrap();
        // The image store is outside the node's data directory: the test's, not podd's.
        let store = ImageStore::open(self.path("store")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reference = format!("oci:{}:busybox:latest", layout.display());
        let img = rt
            .block_on(store.prepare(
                &reference,
                PullPolicy::IfNotPresent,
                &RegistryOptions::default(),
            ))
            .unwrap();
        BTreeMap::from([("busybox".to_string(), img)])
    }

    /// A process of the test's own (not podd's), which reset must leave alone.
    fn spawn_bystander(&mut self, cwd: &Path) -> i32 {
        let child = Command::new("sleep")
            .arg("300")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }

    /// Runs `podd reset` on this node, in its network namespace.
    fn reset(&self, pin_dir: &Path) -> Output {
        let ns = std::fs::File::open(self.netns()).unwrap();
        let mut cmd = Command::new(self.bin.join("podd"));
        cmd.arg("reset")
            .arg("--data-dir")
            .arg(self.path("data"))
            .arg("--run-dir")
            .arg(self.path("run"))
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .arg("--bpf-pin-dir")
            .arg(pin_dir);
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; `fd` stays open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        drop(ns);
        out
    }

    /// What podd left on this node, by kind.
    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let run = self.path("run");
        let shims = podd_tests::cluster::shim_pids(&run);
        if !shims.is_empty() {
            out.push(format!("shims {shims:?}"));
        }
        let procs = podd_tests::cluster::procs_under(&self.cgroup_root);
        if !procs.is_empty() {
            out.push(format!("processes in podd's cgroups {procs:?}"));
        }
        if self.cgroup_root.join("podd").exists() {
            out.push(format!(
                "cgroup {}",
                self.cgroup_root.join("podd").display()
            ));
        }
        let tmp = self.tmp.path().display().to_string();
        for m in mounts_under(&tmp) {
            let own = m.contains("/nodes/") || m == format!("{tmp}/bpf");
            if !own {
                out.push(format!("mount {m}"));
            }
        }
        for d in ["run", "data/pods", "data/ipam", "bpf/podd"] {
            if self.path(d).exists() {
                out.push(format!("directory {d}"));
            }
        }
        if let Ok(mut nl) = Netlink::open_in(&self.netns()) {
            for l in nl.links().unwrap_or_default() {
                if l.name.starts_with("pdv") || l.name == podd_net::node::DEFAULT_BRIDGE {
                    out.push(format!("link {}", l.name));
                }
            }
        }
        out
    }
}

impl Drop for ResetNode {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Kill first, without grace (the hostile container ignores SIGTERM and asks for an
        // hour), then tear down what a failed reset left.
        for pid in podd_tests::cluster::shim_pids(&self.path("run")) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::write(self.cgroup_root.join("cgroup.kill"), "1");
        std::thread::sleep(Duration::from_millis(200));
        // Nothing is removed through a mount (the canary is bind-mounted into a volume).
        for m in mounts_under(&self.path("data").display().to_string()) {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        if self.path("data/ipam").exists()
            && let Ok(net) = NodeNetwork::setup(self.net_config())
        {
            let m = PodManager::new(
                PodConfig::new(
                    &self.path("run"),
                    &self.path("data"),
                    &self.cgroup_root,
                    &self.bin.join("podd-shim"),
                ),
                Arc::new(net),
            );
            m.reap();
            for uid in m.list() {
                let _ = m.teardown(&uid);
            }
            drop(m);
            if let Ok(net) = NodeNetwork::setup(self.net_config()) {
                let _ = net.destroy();
            }
        }
        let tmp = self.tmp.path().display().to_string();
        for m in mounts_under(&tmp) {
            if !m.contains("/nodes/") {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if let Some(ns) = self.node_ns.take() {
            let _ = ns.remove();
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut dirs = podd_tests_sub_dirs(&self.cgroup_root);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.cgroup_root);
        let _ = podd_pod::tree::remove_tree(self.tmp.path());
    }
}

fn podd_tests_sub_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path());
            out.extend(podd_tests_sub_dirs(&e.path()));
        }
    }
    out
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(dir))
        .map(str::to_string)
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.len()));
    out
}

fn pod(name: &str, uid: &str, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {
            "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "terminationGracePeriodSeconds": 3600,
        }
    }))
    .unwrap()
}

fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets the immutable flag on a file, as `chattr +i` does.
fn make_immutable(path: &Path) {
    nix::ioctl_read!(getflags, b'f', 1, libc::c_long);
    nix::ioctl_write_ptr!(setflags, b'f', 2, libc::c_long);
    let f = std::fs::File::open(path).unwrap();
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes an int into `flags`.
    unsafe { getflags(f.as_raw_fd(), &mut flags) }.unwrap();
    flags |= 0x10; // FS_IMMUTABLE_FL
    // SAFETY: FS_IOC_SETFLAGS reads an int from `flags`.
    unsafe { setflags(f.as_raw_fd(), &flags) }.unwrap();
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[test]
fn reset_after_hostile_pods_removes_everything_and_nothing_else() {
    let mut node = ResetNode::new();
    let canary = node.path("canary");
    std::fs::create_dir_all(canary.join("sub")).unwrap();
    std::fs::write(canary.join("keep"), "host file").unwrap();
    std::fs::write(canary.join("sub/keep"), "host file").unwrap();
    let images = node.busybox();
    let m = node.manager();

    // The hostile pod: ignores SIGTERM, and fills its emptyDir with traps.
    let hostile = format!(
        "cd /scratch && ln -s {canary} escape && ln -s / root && ln -s /etc/passwd passwd && \
         mkdir -p \"a b/$(printf 'tab\\there')\" \"$(printf 'new\\nline')\" mnt && \
         echo locked > locked && \
         (i=0; while [ $i -lt 300 ]; do mkdir d && cd d; i=$((i+1)); done; echo bottom > f) && \
         touch /scratch/ready; trap '' TERM; while :; do sleep 1; done",
        canary = canary.display()
    );
    m.run_pod(&pod("hostile", "sec-reset-hostile", &hostile), &images)
        .unwrap();
    // A plain second pod, so reset has more than one to go through.
    m.run_pod(
        &pod(
            "plain",
            "sec-reset-plain",
            "touch /scratch/ready; sleep 3600",
        ),
        &images,
    )
    .unwrap();
    let volume = |uid: &str| m.data_dir(uid).join("volumes/empty-dir/scratch");
    for uid in ["sec-reset-hostile", "sec-reset-plain"] {
        wait_until(
            &format!("pod {uid} to set up its volume"),
            Duration::from_secs(30),
            || volume(uid).join("ready").exists(),
        );
    }
    let vol = volume("sec-reset-hostile");
    make_immutable(&vol.join("locked"));
    // The host's canary bind-mounted inside the pod's volume, and kept busy.
    nix::mount::mount(
        Some(&canary),
        &vol.join("mnt"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let busy = node.spawn_bystander(&vol.join("mnt"));
    let extra = m.state_dir("sec-reset-hostile").join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &extra,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    // The hostile pod's shim dies uncleanly: its container runs on, its status is stale.
    let (status, _) = m.status("sec-reset-hostile").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(status.shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    m.reap();
    // A stale pod whose status names an unrelated live process as its shim.
    let home = node.tmp.path().to_path_buf();
    let innocent = node.spawn_bystander(&home);
    let stale = node.path("run/pods/sec-reset-stale");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(
        stale.join("pod.json"),
        serde_json::to_vec(&pod("stale", "sec-reset-stale", "true")).unwrap(),
    )
    .unwrap();
    std::fs::write(
        stale.join("status.json"),
        format!(r#"{{"shim_pid":{innocent},"containers":[],"pids":[],"stopped":false}}"#),
    )
    .unwrap();
    // Leftover load-balancer pins.
    let pins = node.path("bpf/podd");
    std::fs::create_dir_all(pins.join("links")).unwrap();
    drop(m);
    let before = node.leftovers();
    assert!(
        before.iter().any(|l| l.starts_with("processes")) && before.len() > 4,
        "the node should have pods to remove: {before:?}"
    );

    let out = node.reset(&pins);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("podd reset: {}\n{stdout}{stderr}", out.status);

    assert_eq!(
        std::fs::read_to_string(canary.join("keep")).ok().as_deref(),
        Some("host file"),
        "reset deleted a host file through a symlink or bind mount in a pod's volume"
    );
    assert_eq!(
        std::fs::read_to_string(canary.join("sub/keep"))
            .ok()
            .as_deref(),
        Some("host file"),
        "reset deleted a host file through a bind mount in a pod's volume"
    );
    assert!(
        alive(innocent),
        "reset killed an unrelated process named by a stale status.json"
    );
    assert!(alive(busy), "reset killed a process that was not podd's");
    let left = node.leftovers();
    assert!(left.is_empty(), "reset left: {left:?}\n{stdout}{stderr}");
    assert!(
        out.status.success() && stdout.contains("podd reset: done"),
        "reset failed although it removed everything: {stdout}{stderr}"
    );

    // A second run, on a node with leftovers and a failure it cannot fix: a pin directory
    // that is not bpffs. It reports that failure and still removes the rest.
    std::fs::create_dir_all(node.cgroup_root.join("podd/pods/x/c")).unwrap();
    std::fs::create_dir_all(node.path("data/pods/x/volumes/empty-dir/v")).unwrap();
    std::os::unix::fs::symlink(&canary, node.path("data/pods/x/volumes/empty-dir/v/l")).unwrap();
    std::fs::create_dir_all(node.path("run/pods/x")).unwrap();
    let not_bpffs = node.path("not-bpffs");
    std::fs::create_dir_all(&not_bpffs).unwrap();
    let out = node.reset(&not_bpffs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("second podd reset: {}\n{stderr}", out.status);
    assert!(!out.status.success(), "a forced failure was not reported");
    assert!(
        stderr.contains("load balancer") && stderr.contains("1 thing(s)"),
        "the failure is not reported alone: {stderr}"
    );
    let left = node.leftovers();
    assert!(
        left.is_empty(),
        "after a failure, reset stopped early: {left:?}"
    );
    assert!(canary.join("keep").exists() && canary.join("sub/keep").exists());
}

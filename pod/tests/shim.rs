//! The pod shim for real (root): containers of one pod in shared namespaces, logs, restarts
//! with back-off, readiness, SIGTERM, and nothing left behind. Runs on the host's cgroup v2
//! tree without controllers, so no limits are asked for here (the VM suite tests limits).

use podd_api::Pod;
use podd_net::netns::SandboxNamespaces;
use podd_pod::etc_files::{self, EtcConfig};
use podd_pod::shim::{ContainerState, RestartPolicy};
use podd_pod::shim::{PodRuntimeStatus, ShimContainer, ShimPlan, read_status};
use podd_pod::spec::{ContainerPlan, ProcessPlan, SharedNamespaces, container_spec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A busybox root filesystem shared by the tests' containers.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "dev", "proc", "sys", "tmp", "www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("www/index.html"), "hello from the pod\n").unwrap();
    root
}

/// One test pod: its namespaces, cgroup root, state dir and shim, all removed on drop.
struct TestPod {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ns_root: PathBuf,
    name: String,
    cgroup_root: PathBuf,
    shim: Option<Child>,
}

impl TestPod {
    fn start(pod_json: serde_json::Value, restart: RestartPolicy) -> TestPod {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("shimt-{}-{n}", std::process::id());
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = busybox_rootfs(tmp.path());
        let dir = tmp.path().join("pod");
        let ns_root = tmp.path().join("ns");
        std::fs::create_dir_all(&dir).unwrap();
        let cgroup_root = podd_runtime::cgroups::detect_root().unwrap().join(&name);
        std::fs::create_dir_all(&cgroup_root).unwrap();
        let sandbox = SandboxNamespaces::create(&ns_root, &name, Some("testpod")).unwrap();
        let shared = SharedNamespaces {
            net: sandbox.net_path().to_path_buf(),
            ipc: sandbox.ipc_path().to_path_buf(),
            uts: sandbox.uts_path().to_path_buf(),
        };
        // Loopback up inside the pod, as the network layer does for real pods.
        sandbox
            .run_in_net(|| {
                Command::new("/bin/busybox")
                    .args(["ip", "link", "set", "lo", "up"])
                    .status()
                    .unwrap()
            })
            .unwrap();
        let pod: Pod = serde_json::from_value(pod_json).unwrap();
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let cfg = EtcConfig {
            hostname: pod.metadata.name.clone().unwrap_or_default(),
            pod_ip: None,
            namespace: "default".into(),
            cluster_domain: "cluster.local".into(),
            dns_server: None,
        };
        std::fs::write(etc.join("hosts"), etc_files::hosts(&cfg)).unwrap();
        std::fs::write(etc.join("hostname"), etc_files::hostname(&cfg)).unwrap();
        std::fs::write(etc.join("resolv.conf"), "").unwrap();
        let shm = dir.join("shm");
        std::fs::create_dir_all(&shm).unwrap();
        let volumes = BTreeMap::new();
        let pod_containers = &pod.spec.as_ref().unwrap().containers;
        let containers = pod_containers
            .iter()
            .map(|c| {
                let spec = container_spec(&ContainerPlan {
                    pod: &pod,
                    container: c,
                    process: ProcessPlan {
                        args: c.command.clone().unwrap_or_default(),
                        env: vec!["PATH=/bin".into()],
                        cwd: "/".into(),
                        uid: 0,
                        gid: 0,
                    },
                    rootfs: rootfs.clone(),
                    namespaces: &shared,
                    cgroups_path: PathBuf::from(format!("pods/{name}/{}", c.name)),
                    volumes: &volumes,
                    etc_dir: &etc,
                    shm_dir: Some(&shm),
                    // These pods ask for no CPU; the host's cgroup tree has no cpu controller.
                    cpu_controller: false,
                })
                .unwrap();
                let bundle = dir.join("containers").join(&c.name);
                std::fs::create_dir_all(&bundle).unwrap();
                ShimContainer {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    id: format!("{name}-{}", c.name),
                    bundle: bundle.clone(),
                    spec,
                    log_path: dir.join("logs").join(&c.name).join("0.log"),
                    readiness_probe: c
                        .readiness_probe
                        .as_ref()
                        .map(|p| podd_pod::shim::Probe::resolve(p, pod_containers).unwrap()),
                    liveness_probe: c
                        .liveness_probe
                        .as_ref()
                        .map(|p| podd_pod::shim::Probe::resolve(p, pod_containers).unwrap()),
                    stdin: c.stdin.unwrap_or(false),
                    stdin_once: c.stdin_once.unwrap_or(false),
                    tty: c.tty.unwrap_or(false),
                }
            })
            .collect();
        let plan = ShimPlan {
            pod: format!(
                "default/{}",
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            pod_uid: name.clone(),
            runtime_root: dir.join("runtime"),
            cgroup_root: Some(cgroup_root.clone()),
            netns: shared.net.clone(),
            pod_ip: None,
            restart_policy: restart,
            grace_period_seconds: 2,
            backoff_initial_ms: 100,
            backoff_max_ms: 400,
            containers,
            volume_watch: Default::default(),
        };
        plan.save(&dir).unwrap();
        let shim = Command::new(env!("CARGO_BIN_EXE_podd-shim"))
            .arg(&dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        TestPod {
            _tmp: tmp,
            dir,
            ns_root,
            name,
            cgroup_root,
            shim: Some(shim),
        }
    }

    fn status(&self) -> PodRuntimeStatus {
        read_status(&self.dir).unwrap().unwrap_or_default()
    }

    fn wait_for(&self, what: &str, f: impl Fn(&PodRuntimeStatus) -> bool) -> PodRuntimeStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {s:?}; shim log:\n{}",
                std::fs::read_to_string(self.dir.join("shim.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self, container: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(container).join("0.log"))
            .unwrap_or_default()
    }

    fn wait_log(&self, container: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log(container);
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{container}'s log never said {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to the shim, as the agent does when the pod is deleted; returns its status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut shim = self.shim.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        shim.wait().unwrap()
    }
}

impl Drop for TestPod {
    fn drop(&mut self) {
        if self.shim.is_some() {
            let _ = self.stop();
        }
        let _ = SandboxNamespaces::remove_by_name(&self.ns_root, &self.name);
        remove_cgroup_tree(&self.cgroup_root);
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn running(s: &PodRuntimeStatus) -> bool {
    !s.containers.is_empty()
        && s.containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Running { .. }))
}

#[test]
fn two_containers_share_localhost_shm_and_hostname() {
    let mut pod = TestPod::start(
        serde_json::json!({
            "metadata": {"name": "duo", "namespace": "default"},
            "spec": {"containers": [
                {"name": "server", "image": "busybox",
                 "command": ["sh", "-c", "echo secret > /dev/shm/token; echo started; exec httpd -f -p 8080 -h /www"]},
                {"name": "client", "image": "busybox",
                 "command": ["sh", "-c", "sleep 0.5; until wget -q -O - http://127.0.0.1:8080/; do sleep 0.2; done; cat /dev/shm/token; hostname; echo pid=$$; exec sleep 1000"]}
            ]}
        }),
        RestartPolicy::Always,
    );
    pod.wait_for("both containers running", running);
    pod.wait_log("server", "started");
    let client = pod.wait_log("client", "pid=");
    assert!(
        client.contains("hello from the pod"),
        "reached the other container on localhost:\n{client}"
    );
    assert!(
        client.contains("stdout F secret"),
        "read the other container's POSIX shm:\n{client}"
    );
    assert!(
        client.contains("stdout F duo"),
        "the pod's hostname:\n{client}"
    );
    assert!(
        client.contains("stdout F pid=1"),
        "each container has its own PID namespace:\n{client}"
    );
    let status = pod.stop();
    assert!(status.success(), "the shim exits cleanly on SIGTERM");
    let s = pod.status();
    assert!(s.stopped);
    assert!(s.pids.iter().all(|&p| p == 0));
    assert!(
        std::fs::read_dir(pod.dir.join("runtime"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "no container state is left"
    );
}

#[test]
fn a_crashing_container_restarts_with_back_off() {
    let pod = TestPod::start(
        serde_json::json!({
            "metadata": {"name": "crash", "namespace": "default"},
            "spec": {"containers": [
                {"name": "c", "image": "busybox", "command": ["sh", "-c", "echo run; exit 3"]}
            ]}
        }),
        RestartPolicy::Always,
    );
    let s = pod.wait_for("three restarts", |s| {
        s.containers.first().is_some_and(|c| c.restart_count >= 3)
    });
    match &s.containers[0].last_state {
        Some(ContainerState::Terminated {
            exit_code, reason, ..
        }) => {
            assert_eq!(*exit_code, 3);
            assert_eq!(reason, "Error");
        }
        other => panic!("last state {other:?}"),
    }
    let runs = pod.log("c").matches("stdout F run").count();
    assert!(runs >= 3, "every run logged ({runs})");
}

#[test]
fn never_policy_ends_the_pod_and_the_shim() {
    let mut pod = TestPod::start(
        serde_json::json!({
            "metadata": {"name": "job", "namespace": "default"},
            "spec": {"containers": [
                {"name": "c", "image": "busybox", "command": ["sh", "-c", "echo done"]}
            ]}
        }),
        RestartPolicy::Never,
    );
    let s = pod.wait_for("the shim to finish", |s| s.stopped);
    match &s.containers[0].state {
        ContainerState::Terminated {
            exit_code, reason, ..
        } => {
            assert_eq!(*exit_code, 0);
            assert_eq!(reason, "Completed");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.containers[0].restart_count, 0);
    let status = pod.shim.take().unwrap().wait().unwrap();
    assert!(status.success());
}

#[test]
fn readiness_follows_the_probe_and_liveness_restarts() {
    let pod = TestPod::start(
        serde_json::json!({
            "metadata": {"name": "probed", "namespace": "default"},
            "spec": {"containers": [
                {"name": "web", "image": "busybox",
                 "command": ["sh", "-c", "sleep 1; exec httpd -f -p 8081 -h /www"],
                 "readinessProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1},
                 "livenessProbe": {"exec": {"command": ["sh", "-c", "test ! -e /tmp/sick"]}, "periodSeconds": 1, "failureThreshold": 1}},
                {"name": "sick", "image": "busybox", "command": ["sleep", "1000"],
                 "livenessProbe": {"httpGet": {"path": "/", "port": 9999}, "periodSeconds": 1, "failureThreshold": 2}}
            ]}
        }),
        RestartPolicy::Always,
    );
    let s = pod.wait_for("web to become ready", |s| {
        s.containers.first().is_some_and(|c| c.ready)
    });
    assert!(matches!(
        s.containers[0].state,
        ContainerState::Running { .. }
    ));
    assert!(
        !s.all_ready() || s.containers[1].ready,
        "readiness is per container"
    );
    // Nothing listens on 9999: the liveness probe fails and the container is restarted.
    pod.wait_for("the sick container to be restarted", |s| {
        s.containers.get(1).is_some_and(|c| c.restart_count >= 1)
    });
    assert_eq!(
        pod.status().containers[0].restart_count,
        0,
        "a live container stays"
    );
}

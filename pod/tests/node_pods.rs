//! Pods through the pod manager on this host (root), each in a node network namespace the test
//! made: images from the loopback registry and from an oci-archive, emptyDirs shared by a
//! pod's containers, a crashing container restarted with back-off and its log followed, and
//! the agent process killed with SIGKILL and started again.

mod common;

use common::{Node, all_running, exec, pod, pod_with, wait_for, wait_ready};
use podd_api::Pod;
use podd_image::testing::{self, TestRegistry};
use podd_pod::logs::{LogLine, LogReader};
use podd_pod::manager::PodManager;
use podd_pod::pod_status::pod_status;
use podd_pod::shim::ContainerState;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_podd-shim");

fn node(tag: &str, octet: u8) -> Node {
    Node::new(tag, octet, Path::new(SHIM))
}

fn assert_clean(node: &Node, m: &PodManager) {
    assert!(m.list().is_empty(), "{:?}", m.list());
    let left = node.leftovers();
    assert!(left.is_empty(), "the deleted pods left: {left:#?}");
}

#[test]
fn pods_run_images_from_the_loopback_registry_and_an_oci_archive() {
    let node = node("img", 74);
    let local = node.images(); // writes the layout
    let registry = TestRegistry::start_http().unwrap();
    let pushed = format!("{}/podd/busybox-httpd:v1", registry.host());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(testing::push_layout(
        &node.path("layout"),
        "busybox-httpd:latest",
        &pushed,
        &registry.options(),
    ))
    .unwrap();
    let archive = node.path("busybox.tar");
    testing::write_oci_archive(&node.path("layout"), &archive).unwrap();
    let from_archive = format!("oci-archive:{}:busybox:latest", archive.display());

    // A store of its own, so the registry image is really pulled (not found locally).
    let store = podd_image::ImageStore::open(node.path("pulled")).unwrap();
    let mut images = local;
    images.insert(
        pushed.clone(),
        common::prepare(&store, &pushed, &registry.options()),
    );
    images.insert(
        from_archive.clone(),
        common::prepare(&store, &from_archive, &Default::default()),
    );

    let m = node.manager();
    let web = m
        .run_pod(
            &pod(
                "web",
                "uid-imgweb",
                serde_json::json!([{"name": "httpd", "image": pushed,
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]),
            ),
            &images,
        )
        .unwrap();
    m.run_pod(
        &pod(
            "client",
            "uid-imgclient",
            serde_json::json!([{"name": "c", "image": from_archive, "command": ["sleep", "1000"]}]),
        ),
        &images,
    )
    .unwrap();
    wait_ready(&m, "uid-imgweb");
    wait_ready(&m, "uid-imgclient");
    // The archive's container reaches the registry image's server by pod IP.
    let (code, page) = exec(
        &m,
        "uid-imgclient",
        "c",
        &[
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{}:8080/", web.ip.unwrap()),
        ],
    );
    assert_eq!(code, 0, "{page}");
    assert_eq!(page, testing::HTTPD_INDEX);

    m.stop_pod("uid-imgweb").unwrap();
    m.stop_pod("uid-imgclient").unwrap();
    assert_clean(&node, &m);
}

#[test]
fn empty_dirs_are_shared_by_a_pods_containers_and_tmpfs_ones_are_size_limited() {
    let node = node("vol", 75);
    let images = node.images();
    let m = node.manager();
    let p = pod_with(
        "share",
        "uid-volshare",
        serde_json::json!([
            {"name": "writer", "image": "busybox",
             "command": ["sh", "-c", "echo hello from the writer > /scratch/msg; exec sleep 1000"],
             "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}, {"name": "mem", "mountPath": "/mem"}]},
            {"name": "reader", "image": "busybox",
             "command": ["sh", "-c", "until [ -e /shared/msg ]; do sleep 0.1; done; cat /shared/msg; exec sleep 1000"],
             "volumeMounts": [{"name": "scratch", "mountPath": "/shared", "readOnly": true}, {"name": "mem", "mountPath": "/mem"}],
             "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}}
        ]),
        serde_json::json!({"volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
        ]}),
    );
    m.run_pod(&p, &images).unwrap();
    wait_for(
        &m,
        "uid-volshare",
        "both running",
        Duration::from_secs(20),
        all_running,
    );
    let log = LogReader::new(&m.log_path("uid-volshare", "reader"));
    wait_until("the reader read the writer's file", || {
        log.read(None)
            .unwrap()
            .iter()
            .any(|l| l.text == "hello from the writer")
    });
    // The reader's mount is read-only; the Memory emptyDir is shared too, and full at 1 MiB.
    let (code, _) = exec(&m, "uid-volshare", "reader", &["touch", "/shared/x"]);
    assert_ne!(code, 0, "readOnly mount refuses writes");
    let (code, out) = exec(
        &m,
        "uid-volshare",
        "writer",
        &["sh", "-c", "echo in-memory > /mem/note"],
    );
    assert_eq!(code, 0, "{out}");
    let (_, note) = exec(&m, "uid-volshare", "reader", &["cat", "/mem/note"]);
    assert_eq!(note, "in-memory\n");
    let (code, out) = exec(
        &m,
        "uid-volshare",
        "writer",
        &["dd", "if=/dev/zero", "of=/mem/big", "bs=1024", "count=2048"],
    );
    assert_ne!(code, 0, "2 MiB do not fit a 1Mi tmpfs: {out}");
    assert!(out.contains("No space left"), "{out}");
    let (_, df) = exec(&m, "uid-volshare", "reader", &["df", "-k", "/mem"]);
    assert!(
        df.lines().nth(1).is_some_and(|l| l.contains(" 1024 ")),
        "{df}"
    );
    // Kubernetes' default capabilities, and securityContext.capabilities.
    let cap_eff = |c: &str| {
        exec(
            &m,
            "uid-volshare",
            c,
            &["grep", "CapEff", "/proc/self/status"],
        )
        .1
    };
    assert!(
        cap_eff("writer").contains("00000000a80425fb"),
        "{}",
        cap_eff("writer")
    );
    assert!(
        cap_eff("reader").contains("0000000000001000"),
        "{}",
        cap_eff("reader")
    );
    let volumes = m.data_dir("uid-volshare").join("volumes");
    assert!(volumes.join("empty-dir/scratch/msg").exists());

    m.stop_pod("uid-volshare").unwrap();
    assert!(!volumes.exists(), "the emptyDirs go with the pod");
    assert_clean(&node, &m);
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Seconds since midnight of a log record's RFC 3339 UTC timestamp.
fn seconds_of_day(ts: &str) -> f64 {
    let t: podd_api::jiff::Timestamp = ts.parse().unwrap();
    (t.as_nanosecond().rem_euclid(86_400_000_000_000)) as f64 / 1e9
}

#[test]
fn a_crashing_container_restarts_with_back_off_and_its_log_is_followed() {
    let node = node("crash", 76);
    let images = node.images();
    let m = node.manager();
    let uid = "uid-crash";
    m.run_pod(
        &pod(
            "crash",
            uid,
            serde_json::json!([{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo run $$; echo oops >&2; exit 3"]}]),
        ),
        &images,
    )
    .unwrap();

    // `podctl logs -f`: follow from the first record on, on its own thread.
    let reader = LogReader::new(&m.log_path(uid, "c"));
    let followed: Arc<Mutex<Vec<LogLine>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (followed, stop) = (followed.clone(), stop.clone());
        let reader = LogReader::new(&m.log_path(uid, "c"));
        std::thread::spawn(move || {
            reader.follow(
                None,
                Duration::from_millis(20),
                |l| {
                    followed.lock().unwrap().push(l.clone());
                    true
                },
                || stop.load(Ordering::SeqCst),
            )
        })
    };

    // Back-off 100 ms doubling to 800 ms (the node's setting for tests; 10 s to 5 min by default).
    let s = wait_for(&m, uid, "4 restarts", Duration::from_secs(30), |s| {
        s.containers[0].restart_count >= 4
    });
    let c = &s.containers[0];
    match &c.last_state {
        Some(ContainerState::Terminated {
            exit_code, reason, ..
        }) => assert_eq!((*exit_code, reason.as_str()), (3, "Error")),
        other => panic!("lastState {other:?}"),
    }
    let api = pod_status(&Pod::default(), &s, true, None);
    assert_eq!(
        api.phase.as_deref(),
        Some("Running"),
        "a restarting pod is Running"
    );
    assert_eq!(
        api.container_statuses.as_ref().unwrap()[0].restart_count as u32,
        c.restart_count
    );

    wait_until("the follower saw 5 runs", || {
        followed
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.text.starts_with("run "))
            .count()
            >= 5
    });
    stop.store(true, Ordering::SeqCst);
    follower.join().unwrap().unwrap();
    let followed = followed.lock().unwrap().clone();
    let runs: Vec<&LogLine> = followed
        .iter()
        .filter(|l| l.text.starts_with("run "))
        .collect();
    assert!(
        followed
            .iter()
            .any(|l| l.text == "oops" && l.stream == podd_pod::logs::Stream::Stderr),
        "stderr is logged too"
    );
    // The delays between runs double: 0, 100, 200, 400 ms (plus the run itself).
    let t: Vec<f64> = runs.iter().map(|l| seconds_of_day(&l.timestamp)).collect();
    let gaps: Vec<f64> = t
        .windows(2)
        .map(|w| (w[1] - w[0]).rem_euclid(86400.0))
        .collect();
    // Only lower bounds: a loaded machine makes every gap longer, never shorter than the
    // back-off (the exact schedule is unit-tested in backoff.rs).
    assert!(
        gaps[1] >= 0.09 && gaps[2] >= 0.19 && gaps[3] >= 0.39,
        "back-off delays {gaps:?}"
    );

    // A plain read with a tail, as `podctl logs --tail 2`.
    let tail = reader.read(Some(2)).unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(
        tail.last(),
        reader.read(None).unwrap().last(),
        "the tail ends with the newest record"
    );

    m.stop_pod(uid).unwrap();
    assert_clean(&node, &m);
}

/// The environment variable that turns this test binary into an agent process (see
/// [`agent_process`]); its value is the job file.
const AGENT_JOB: &str = "PODD_POD_TEST_AGENT_JOB";

/// What a test asks of an agent process.
#[derive(serde::Serialize, serde::Deserialize)]
struct AgentJob {
    dir: PathBuf,
    netns: PathBuf,
    cidr_octet: u8,
    cgroup_root: PathBuf,
    pods: Vec<Pod>,
    result: PathBuf,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct AgentPod {
    uid: String,
    ip: Option<Ipv4Addr>,
    shim_pid: i32,
    pids: Vec<i32>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct AgentResult {
    agent_pid: u32,
    /// Pods found on start (an agent restart).
    adopted: Vec<AgentPod>,
    /// Pods this agent started.
    started: Vec<AgentPod>,
}

fn agent_pod(m: &PodManager, uid: &str, ip: Option<Ipv4Addr>, shim_pid: i32) -> AgentPod {
    AgentPod {
        uid: uid.to_string(),
        ip,
        shim_pid,
        pids: m.status(uid).map(|(s, _)| s.pids).unwrap_or_default(),
    }
}

/// Not a test of its own: when [`AGENT_JOB`] is set, this test binary was started by
/// `the_agent_killed_with_sigkill...` as an agent process. It builds a pod manager as the agent
/// does, adopts the pods on the node, starts the job's pods, reports, and runs until killed.
#[test]
fn agent_process() {
    let Some(job) = std::env::var_os(AGENT_JOB) else {
        return;
    };
    let job: AgentJob = serde_json::from_slice(&std::fs::read(job).unwrap()).unwrap();
    let cidr = podd_net::Ipv4Cidr::new(Ipv4Addr::new(10, 244, job.cidr_octet, 0), 24).unwrap();
    let net = podd_net::NodeNetwork::setup(common::net_config(&job.dir, &job.netns, cidr)).unwrap();
    let m = PodManager::new(
        common::pod_config(&job.dir, &job.cgroup_root, Path::new(SHIM)),
        Arc::new(net),
    );
    let adopted = m
        .list()
        .iter()
        .filter_map(|uid| m.find(uid))
        .map(|i| agent_pod(&m, &i.uid, i.ip, i.shim_pid))
        .collect();
    let images = common::busybox_images(&job.dir);
    let mut started = Vec::new();
    for p in &job.pods {
        let info = m.run_pod(p, &images).unwrap();
        wait_ready(&m, &info.uid);
        started.push(agent_pod(&m, &info.uid, info.ip, info.shim_pid));
    }
    let result = AgentResult {
        agent_pid: std::process::id(),
        adopted,
        started,
    };
    let tmp = job.result.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&result).unwrap()).unwrap();
    std::fs::rename(&tmp, &job.result).unwrap();
    loop {
        m.reap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts this test binary as an agent process with a job, and waits for its report.
fn start_agent(node: &Node, name: &str, pods: Vec<Pod>) -> (Child, AgentResult) {
    let result = node.path(&format!("{name}.result.json"));
    let job = AgentJob {
        dir: node.tmp.path().to_path_buf(),
        netns: node.netns_path(),
        cidr_octet: node.cidr.network().octets()[2],
        cgroup_root: node.cgroup_root.clone(),
        pods,
        result: result.clone(),
    };
    let job_path = node.path(&format!("{name}.job.json"));
    std::fs::write(&job_path, serde_json::to_vec(&job).unwrap()).unwrap();
    let log = std::fs::File::create(node.path(&format!("{name}.log"))).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "agent_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(AGENT_JOB, &job_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(data) = std::fs::read(&result) {
            return (child, serde_json::from_slice(&data).unwrap());
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "agent {name} exited with {status}:\n{}",
                std::fs::read_to_string(node.path(&format!("{name}.log"))).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "agent {name} never reported");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigkill(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

/// A live process (not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[test]
fn the_agent_killed_with_sigkill_leaves_pods_running_and_a_new_agent_adopts_them() {
    let node = node("kill", 73);
    node.images(); // unpacked once; the agents find them in the store
    let web = pod(
        "web",
        "uid-killweb",
        serde_json::json!([
            {"name": "httpd", "image": "busybox-httpd",
             "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}},
            {"name": "side", "image": "busybox", "command": ["sleep", "1000"]}
        ]),
    );
    let client = pod(
        "client",
        "uid-killclient",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["sleep", "1000"]}]),
    );
    let (mut first, before) = start_agent(&node, "agent1", vec![web, client]);
    assert!(before.adopted.is_empty());
    assert_eq!(before.started.len(), 2);
    for p in &before.started {
        assert!(p.pids.iter().all(|&pid| pid > 0), "{p:?}");
    }
    sigkill(&mut first);

    // The pods run on without their agent: the same shim and container processes.
    std::thread::sleep(Duration::from_millis(500));
    let reader = node.manager();
    for p in &before.started {
        assert!(alive(p.shim_pid), "shim of {} survived", p.uid);
        for &pid in &p.pids {
            assert!(alive(pid), "container process {pid} of {} survived", p.uid);
        }
    }

    // A new agent adopts both pods as they are, and gives a new pod an unused IP.
    let third = pod(
        "third",
        "uid-killthird",
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["sleep", "1000"]}]),
    );
    let (mut second, after) = start_agent(&node, "agent2", vec![third]);
    assert_ne!(after.agent_pid, first.id());
    let mut adopted = after.adopted.clone();
    adopted.sort_by(|a, b| a.uid.cmp(&b.uid));
    let mut expected = before.started.clone();
    expected.sort_by(|a, b| a.uid.cmp(&b.uid));
    assert_eq!(
        adopted, expected,
        "adopted with the same IPs, shims and container pids (never restarted)"
    );
    let new_ip = after.started[0].ip.unwrap();
    assert!(
        before.started.iter().all(|p| p.ip != Some(new_ip)),
        "no IP is handed out twice: {new_ip}"
    );
    sigkill(&mut second);

    // Still serving, still the first processes, no restarts.
    let web_ip = before
        .started
        .iter()
        .find(|p| p.uid == "uid-killweb")
        .unwrap()
        .ip
        .unwrap();
    let (code, page) = exec(
        &reader,
        "uid-killthird",
        "c",
        &["wget", "-q", "-O", "-", &format!("http://{web_ip}:8080/")],
    );
    assert_eq!(code, 0, "{page}");
    for p in &before.started {
        let (s, shim_alive) = reader.status(&p.uid).unwrap();
        assert!(shim_alive);
        assert_eq!(s.pids, p.pids);
        assert!(s.containers.iter().all(|c| c.restart_count == 0));
    }

    for uid in ["uid-killweb", "uid-killclient", "uid-killthird"] {
        reader.stop_pod(uid).unwrap();
    }
    for p in &before.started {
        assert!(!alive(p.shim_pid));
    }
    assert_clean(&node, &reader);
}

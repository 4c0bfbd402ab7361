//! VM tests: pod resource limits and usage, which need cgroup v2 controllers (the host's
//! unified tree has none). `cargo xtask vm-test -p podd-pod` runs them in QEMU, where cgroup2
//! with every controller is at /sys/fs/cgroup; each test's node uses a child of it.

mod common;

use common::{Node, all_running, pod_with, wait_for};
use podd_pod::logs::LogReader;
use podd_pod::manager::PodManager;
use podd_pod::pod_status::pod_status;
use podd_pod::shim::ContainerState;
use podd_pod::stats::{CpuSample, millicores, stat_field};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_podd-shim");

fn node(tag: &str, octet: u8) -> Node {
    Node::new(tag, octet, Path::new(SHIM))
}

fn pod_cgroup(node: &Node, uid: &str) -> PathBuf {
    node.cgroup_root.join("podd/pods").join(uid)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn finish(node: &Node, m: &PodManager, uid: &str) {
    m.stop_pod(uid).unwrap();
    assert!(m.list().is_empty());
    let left = node.leftovers();
    assert!(left.is_empty(), "the deleted pod left: {left:#?}");
}

fn wait_log(m: &PodManager, uid: &str, container: &str, text: &str) {
    let log = LogReader::new(&m.log_path(uid, container));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.read(None).unwrap().iter().any(|l| l.text == text) {
        assert!(
            Instant::now() < deadline,
            "{container} never logged {text:?}: {:?}",
            log.read(None)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn a_container_over_its_memory_limit_is_oom_killed_and_the_pod_cgroup_sums_the_limits() {
    let node = node("oom", 81);
    let images = node.images();
    let m = node.manager();
    let uid = "uid-oom";
    let p = pod_with(
        "oom",
        uid,
        serde_json::json!([
            // dd's 256 MiB buffer is far over the 32 MiB limit.
            {"name": "hog", "image": "busybox",
             "command": ["sh", "-c", "sleep 1; exec dd if=/dev/zero of=/dev/null bs=256M count=1"],
             "resources": {"limits": {"memory": "32Mi", "cpu": "200m"}}},
            {"name": "idle", "image": "busybox", "command": ["sleep", "1000"],
             "resources": {"limits": {"memory": "64Mi", "cpu": "300m", "pids": 20}}}
        ]),
        serde_json::json!({"restartPolicy": "Never"}),
    );
    m.run_pod(&p, &images).unwrap();
    wait_for(
        &m,
        uid,
        "both running",
        Duration::from_secs(20),
        all_running,
    );

    // The pod cgroup carries the sums; each container cgroup its own limits.
    let pod_cg = pod_cgroup(&node, uid);
    assert_eq!(read(&pod_cg.join("memory.max")), (96u64 << 20).to_string());
    assert_eq!(read(&pod_cg.join("cpu.max")), "50000 100000");
    assert_eq!(
        read(&pod_cg.join("hog/memory.max")),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(&pod_cg.join("hog/cpu.max")), "20000 100000");
    assert_eq!(
        read(&pod_cg.join("idle/memory.max")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read(&pod_cg.join("idle/cpu.max")), "30000 100000");
    assert_eq!(read(&pod_cg.join("idle/pids.max")), "20");

    let s = wait_for(&m, uid, "hog terminated", Duration::from_secs(30), |s| {
        matches!(s.containers[0].state, ContainerState::Terminated { .. })
    });
    match &s.containers[0].state {
        ContainerState::Terminated {
            exit_code,
            signal,
            reason,
            ..
        } => {
            assert_eq!(reason, "OOMKilled");
            assert_eq!(*exit_code, 137);
            assert_eq!(*signal, Some(9));
        }
        other => panic!("{other:?}"),
    }
    let api = pod_status(&podd_api::Pod::default(), &s, true, None);
    let state = api.container_statuses.as_ref().unwrap()[0].state.clone();
    assert_eq!(
        state
            .and_then(|s| s.terminated)
            .and_then(|t| t.reason)
            .as_deref(),
        Some("OOMKilled")
    );
    assert!(
        matches!(s.containers[1].state, ContainerState::Running { .. }),
        "the other container runs on"
    );
    // The kill is counted on the pod cgroup too (memory.events is hierarchical).
    let events = read(&pod_cg.join("memory.events"));
    assert!(
        stat_field(&events, "oom_kill").unwrap_or(0) >= 1,
        "{events}"
    );
    finish(&node, &m, uid);
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn a_cpu_limit_throttles_and_usage_reports_cpu_and_memory() {
    let node = node("cpu", 82);
    let images = node.images();
    let m = node.manager();
    let uid = "uid-cpu";
    let p = pod_with(
        "cpu",
        uid,
        serde_json::json!([
            {"name": "spin", "image": "busybox", "command": ["sh", "-c", "while :; do :; done"],
             "resources": {"limits": {"cpu": "100m"}}},
            // No limits at all: usage is reported anyway.
            {"name": "fill", "image": "busybox",
             "command": ["sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 && echo filled && exec sleep 1000"]}
        ]),
        serde_json::json!({}),
    );
    m.run_pod(&p, &images).unwrap();
    wait_for(
        &m,
        uid,
        "both running",
        Duration::from_secs(20),
        all_running,
    );
    wait_log(&m, uid, "fill", "filled");

    let sample = |m: &PodManager| CpuSample {
        at: Instant::now(),
        usage_usec: m.usage(uid).0.expect("cpu usage"),
    };
    let per_a = m.container_usage(uid);
    let a = sample(&m);
    std::thread::sleep(Duration::from_secs(3));
    let b = sample(&m);
    let per_b = m.container_usage(uid);
    let mc = millicores(a, b);
    assert!(
        (40..=200).contains(&mc),
        "a 100m limit holds the spinning pod near 100 millicores: {mc}"
    );
    let spin_stat = read(&pod_cgroup(&node, uid).join("spin/cpu.stat"));
    assert!(
        stat_field(&spin_stat, "nr_throttled").unwrap_or(0) > 0,
        "{spin_stat}"
    );

    let (_, mem) = m.usage(uid);
    let mem = mem.expect("memory working set");
    assert!(mem >= 24 << 20, "the 24 MiB in /dev/shm count: {mem}");
    let fill_mem = per_b["fill"].1.expect("fill's memory");
    assert!(fill_mem >= 24 << 20, "{fill_mem}");
    let used = |c: &str| per_b[c].0.unwrap() - per_a[c].0.unwrap();
    assert!(
        used("spin") > used("fill") + 50_000,
        "per container: spin used {} µs, the sleeping fill {} µs",
        used("spin"),
        used("fill")
    );
    finish(&node, &m, uid);
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn a_pids_limit_stops_forks() {
    let node = node("pids", 83);
    let images = node.images();
    let m = node.manager();
    let uid = "uid-pids";
    let p = pod_with(
        "pids",
        uid,
        serde_json::json!([
            {"name": "forker", "image": "busybox",
             "command": ["sh", "-c", "(for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1000 & done) 2>/dev/null; echo forked; exec sleep 1000"],
             "resources": {"limits": {"pids": 5}}}
        ]),
        serde_json::json!({"restartPolicy": "Never"}),
    );
    m.run_pod(&p, &images).unwrap();
    wait_log(&m, uid, "forker", "forked");
    let cg = pod_cgroup(&node, uid).join("forker");
    assert_eq!(read(&cg.join("pids.max")), "5");
    let current: u64 = read(&cg.join("pids.current")).parse().unwrap();
    assert!(current <= 5, "pids.current {current}");
    let events = read(&cg.join("pids.events"));
    assert!(
        stat_field(&events, "max").unwrap_or(0) >= 1,
        "forks were refused: {events}"
    );
    finish(&node, &m, uid);
}

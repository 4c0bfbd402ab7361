//! VM tests: cgroup v2 limits that need controllers (the host's unified tree has none).
//! Run by `cargo xtask vm-test` (cgroup2 with all controllers at /sys/fs/cgroup in the guest).

mod common;

use std::time::{Duration, Instant};

use common::Env;
use podd_runtime::Container;

const VM: &str = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test";

fn with_resources(
    env: &Env,
    id: &str,
    args: &[&str],
    resources: serde_json::Value,
) -> oci_spec::runtime::Spec {
    let mut spec = env.spec(id, args);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(serde_json::from_value(resources).unwrap()));
    spec.set_linux(Some(linux));
    spec
}

fn read(env: &Env, id: &str, file: &str) -> String {
    std::fs::read_to_string(env.cgroup_dir().join(id).join(file))
        .unwrap_or_else(|e| panic!("read {file}: {e}"))
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn oom_kill_at_memory_max() {
    let _ = VM;
    let env = Env::new("vm-oom");
    // dd allocates a 256 MiB buffer: far above memory.max.
    let spec = with_resources(
        &env,
        "oom",
        &[
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=256M",
            "count=1",
        ],
        serde_json::json!({"memory": {"limit": 33554432}}),
    );
    let mut c = Container::create("oom", env.dir.path(), &spec, &env.opts()).unwrap();
    assert_eq!(read(&env, "oom", "memory.max").trim(), "33554432");
    c.start().unwrap();
    let code = c.wait().unwrap();
    assert_eq!(code, 128 + 9, "the OOM killer SIGKILLs the process");
    let stats = c.stats().unwrap();
    assert!(
        stats.memory_events.get("oom_kill").copied().unwrap_or(0) >= 1,
        "memory.events: {:?}",
        stats.memory_events
    );
    c.delete(false).unwrap();
    env.assert_clean();
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn pids_max_limits_forks() {
    let env = Env::new("vm-pids");
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done 2>/tmp/fork-errors; echo started > /tmp/marker; sleep 1";
    let spec = with_resources(
        &env,
        "pids",
        &["/bin/sh", "-c", script],
        serde_json::json!({"pids": {"limit": 4}}),
    );
    let mut c = Container::create("pids", env.dir.path(), &spec, &env.opts()).unwrap();
    assert_eq!(read(&env, "pids", "pids.max").trim(), "4");
    c.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !env.rootfs.join("tmp/marker").exists()
        && c.status() != podd_runtime::Status::Stopped
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = c.stats().unwrap();
    assert!(
        stats.pids_current.unwrap() <= 4,
        "pids.current {:?}",
        stats.pids_current
    );
    let _ = c.wait();
    let events = read(&env, "pids", "pids.events");
    let max: u64 = events.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(max >= 1, "forks were refused at pids.max: {events}");
    let errors = std::fs::read_to_string(env.rootfs.join("tmp/fork-errors")).unwrap_or_default();
    assert!(
        errors.contains("fork"),
        "sh reports the refused fork: {errors}"
    );
    c.delete(true).unwrap();
    env.assert_clean();
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn cpu_max_throttles() {
    // A capped busy loop beside an uncapped one, side by side: under TCG the guest's clock and
    // CPU time follow how much the host lets the VM run, so absolute shares are noisy; the
    // ratio between two loops that run at the same time is not (2 vCPUs: each loop can have
    // one). Without enforcement the ratio is ~1; with a 10% quota it is ~0.1.
    let env = Env::new("vm-cpu");
    let busy = ["/bin/sh", "-c", "while :; do :; done"];
    let capped = with_resources(
        &env,
        "cpu",
        &busy,
        serde_json::json!({"cpu": {"quota": 10000, "period": 100000, "shares": 512}}),
    );
    let free = with_resources(
        &env,
        "cpu-free",
        &busy,
        serde_json::json!({"cpu": {"shares": 512}}),
    );
    let mut c = Container::create("cpu", env.dir.path(), &capped, &env.opts()).unwrap();
    let mut f = Container::create("cpu-free", env.dir.path(), &free, &env.opts()).unwrap();
    assert_eq!(read(&env, "cpu", "cpu.max").trim(), "10000 100000");
    assert_eq!(read(&env, "cpu-free", "cpu.max").trim(), "max 100000");
    c.start().unwrap();
    f.start().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let stats = c.stats().unwrap();
    let free_stats = f.stats().unwrap();
    let usage = stats.cpu["usage_usec"];
    let free_usage = free_stats.cpu["usage_usec"];
    assert!(stats.cpu["nr_throttled"] > 0, "cpu.stat: {:?}", stats.cpu);
    assert!(
        usage * 2 < free_usage,
        "10% quota: the capped loop used {usage}us while the free one used {free_usage}us"
    );
    c.delete(true).unwrap();
    f.delete(true).unwrap();
    env.assert_clean();
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn freeze_and_thaw() {
    let env = Env::new("vm-freeze");
    let spec = env.spec(
        "frz",
        &["/bin/sh", "-c", "while :; do echo x >> /tmp/counter; done"],
    );
    let mut c = Container::create("frz", env.dir.path(), &spec, &env.opts()).unwrap();
    c.start().unwrap();
    let counter = || {
        std::fs::metadata(env.rootfs.join("tmp/counter"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while counter() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    c.pause().unwrap();
    assert_eq!(c.status(), podd_runtime::Status::Paused);
    let a = counter();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(), a, "no progress while frozen");
    c.resume().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(counter(), a, "progress after thaw");
    c.delete(true).unwrap();
    env.assert_clean();
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn limits_land_in_the_cgroup_files_and_stats_read_back() {
    let env = Env::new("vm-files");
    let spec = with_resources(
        &env,
        "files",
        &["/bin/sleep", "30"],
        serde_json::json!({
            "cpu": {"shares": 2048, "cpus": "0", "mems": "0"},
            "memory": {"limit": 134217728, "reservation": 16777216},
            "pids": {"limit": 100},
            "unified": {"memory.high": "100000000"}
        }),
    );
    let mut c = Container::create("files", env.dir.path(), &spec, &env.opts()).unwrap();
    assert_eq!(
        read(&env, "files", "cpu.weight").trim(),
        podd_runtime::cgroups::shares_to_weight(2048).to_string()
    );
    assert_eq!(read(&env, "files", "cpuset.cpus").trim(), "0");
    assert_eq!(read(&env, "files", "memory.max").trim(), "134217728");
    assert_eq!(read(&env, "files", "memory.low").trim(), "16777216");
    assert_eq!(
        read(&env, "files", "memory.high").trim(),
        "99999744",
        "unified keys are written as given (page-rounded by the kernel)"
    );
    assert_eq!(read(&env, "files", "pids.max").trim(), "100");
    c.start().unwrap();
    let stats = c.stats().unwrap();
    assert!(stats.memory_current.unwrap() > 0, "memory.current");
    assert_eq!(stats.pids_current, Some(1));
    assert!(stats.cpu.contains_key("usage_usec"));
    c.delete(true).unwrap();
    env.assert_clean();
}

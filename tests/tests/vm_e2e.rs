//! VM e2e: a one-node cluster in the guest, where cgroup v2 limits are real. A pod limited to
//! 32Mi that allocates 64Mi is OOM-killed, and its status says OOMKilled. A pod limited to
//! 100m of CPU is throttled to it under load, and the autoscaler scales its Deployment out on
//! that use and back in when the load stops.
//!
//! Run by `cargo xtask vm-test -p podd-tests` after `cargo build -p podd -p podd-pod -p podctl`
//! (the guest sees the host's target dir read-only).
#![allow(clippy::print_stdout)]

use anyhow::{Context, Result};
use podd_tests::cluster::{Cluster, wait_for};
use podd_tests::workloads::{AUTOSCALE_BURN, BURN_WHILE_LOADED};
use std::time::{Duration, Instant};

fn oom_reason(p: &serde_json::Value) -> bool {
    let cs = &p["status"]["containerStatuses"][0];
    cs["lastState"]["terminated"]["reason"] == "OOMKilled"
        || cs["state"]["terminated"]["reason"] == "OOMKilled"
}

fn assert_in_vm() {
    assert_eq!(
        std::env::var("PODD_IN_VM").as_deref(),
        Ok("1"),
        "this test needs the VM's cgroup v2 controllers: run it with `cargo xtask vm-test`"
    );
}

fn ready_count(c: &Cluster, selector: &str) -> Result<usize> {
    Ok(c.get_items("pods", Some(selector))?
        .iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["phase"] == "Running"
                && podd_tests::cluster::condition_true(p, "Ready")
        })
        .count())
}

/// A cgroup v2 stat file's field (`nr_throttled` of cpu.stat).
fn stat_field(path: &std::path::Path, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "vm: needs the cgroup v2 cpu controller; run by cargo xtask vm-test"]
fn cpu_limit_is_enforced_and_the_autoscaler_scales_on_it() -> Result<()> {
    assert_in_vm();
    let c = Cluster::up(1)?;
    c.podctl(&[
        "run",
        "burn",
        "--image",
        "busybox",
        "--cpu",
        "100m",
        "--",
        "sh",
        "-c",
        BURN_WHILE_LOADED,
    ])?;
    wait_for(Duration::from_secs(120), "the burn pod ready", || {
        Ok(ready_count(&c, "app=burn")? == 1)
    })
    .with_context(|| format!("agent: {}", c.log("agent-node-1.log")))?;
    let pod = c.get_items("pods", Some("app=burn"))?.remove(0);
    let (name, uid) = (
        pod["metadata"]["name"]
            .as_str()
            .context("name")?
            .to_string(),
        pod["metadata"]["uid"].as_str().context("uid")?.to_string(),
    );
    let cg = c.state.nodes[0]
        .cgroup_root
        .join("podd/pods")
        .join(&uid)
        .join("burn");
    assert_eq!(
        std::fs::read_to_string(cg.join("cpu.max"))?.trim(),
        "10000 100000",
        "100m is 10 ms of every 100 ms"
    );
    c.podctl(&["exec", &name, "--", "touch", "/tmp/load"])?;
    wait_for(
        Duration::from_secs(60),
        "the busy container throttled",
        || Ok(stat_field(&cg.join("cpu.stat"), "nr_throttled") >= 5),
    )?;
    // Measured over 3 s: a busy loop held to 100m uses at most about 0.1 s of CPU a second.
    let (u0, t0) = (
        stat_field(&cg.join("cpu.stat"), "usage_usec"),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let used = stat_field(&cg.join("cpu.stat"), "usage_usec") - u0;
    let millis = used as f64 / 1000.0 / t0.elapsed().as_secs_f64();
    println!("the 100m container used {millis:.0}m of CPU while busy");
    assert!(
        millis < 150.0,
        "the CPU limit is not enforced: {millis:.0}m"
    );

    // At its limit the pod uses 100% of its request: over the 50% target, so the autoscaler
    // adds replicas; when the load stops, it goes back to 1 after the 10 s window.
    c.podctl(&AUTOSCALE_BURN)?;
    wait_for(
        Duration::from_secs(180),
        "the autoscaler to scale out",
        || Ok(ready_count(&c, "app=burn")? >= 2),
    )
    .with_context(|| {
        c.podctl(&["get", "hpa", "burn", "-o", "json"])
            .unwrap_or_default()
    })?;
    c.podctl(&["exec", &name, "--", "rm", "/tmp/load"])?;
    wait_for(
        Duration::from_secs(180),
        "the autoscaler to scale in",
        || Ok(c.get_items("pods", Some("app=burn"))?.len() == 1),
    )
    .with_context(|| {
        c.podctl(&["get", "hpa", "burn", "-o", "json"])
            .unwrap_or_default()
    })?;
    println!("autoscaled out on the throttled pod's use, and back in");
    c.podctl(&["delete", "hpa", "burn"])?;
    c.podctl(&["delete", "deployment", "burn"])?;
    wait_for(Duration::from_secs(60), "no pods", || {
        Ok(c.get_items("pods", None)?.is_empty())
    })?;
    c.down()
}

#[test]
#[ignore = "vm: needs cgroup v2 memory limits; run by cargo xtask vm-test"]
fn memory_limit_oom_kills_and_reports_oomkilled() -> Result<()> {
    assert_in_vm();
    let c = Cluster::up(1)?;
    // dd allocates (and fills) its 64 MiB block buffer: over the 32Mi limit.
    c.podctl(&[
        "run",
        "hog",
        "--image",
        "busybox",
        "--memory",
        "32Mi",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ])?;
    let mut seen = None;
    wait_for(Duration::from_secs(60), "the hog pod OOMKilled", || {
        let pods = c.get_items("pods", Some("app=hog"))?;
        seen = pods.first().cloned();
        Ok(pods.iter().any(oom_reason))
    })
    .with_context(|| format!("pod: {seen:#?}\nagent: {}", c.log("agent-node-1.log")))?;
    println!("hog pod: {:#}", seen.unwrap_or_default()["status"]);
    c.podctl(&["delete", "deployment", "hog"])?;
    wait_for(Duration::from_secs(60), "no pods", || {
        Ok(c.get_items("pods", None)?.is_empty())
    })?;
    c.down()
}

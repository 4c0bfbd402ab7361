//! VM e2e: a one-node cluster in the guest, where cgroup v2 limits are real. A pod limited to
//! 32Mi that allocates 64Mi is OOM-killed, and its status says OOMKilled.
//!
//! Run by `cargo xtask vm-test -p podd-tests` after `cargo build -p podd -p podd-pod -p podctl`
//! (the guest sees the host's target dir read-only).
#![allow(clippy::print_stdout)]

use anyhow::{Context, Result};
use podd_tests::cluster::{Cluster, wait_for};
use std::time::Duration;

fn oom_reason(p: &serde_json::Value) -> bool {
    let cs = &p["status"]["containerStatuses"][0];
    cs["lastState"]["terminated"]["reason"] == "OOMKilled"
        || cs["state"]["terminated"]["reason"] == "OOMKilled"
}

#[test]
#[ignore = "vm: needs cgroup v2 memory limits; run by cargo xtask vm-test"]
fn memory_limit_oom_kills_and_reports_oomkilled() -> Result<()> {
    assert_eq!(
        std::env::var("PODD_IN_VM").as_deref(),
        Ok("1"),
        "this test needs the VM's cgroup v2 controllers: run it with `cargo xtask vm-test`"
    );
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

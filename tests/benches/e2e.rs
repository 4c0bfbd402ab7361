//! `cargo xtask bench e2e`: on a 3-node cluster of network namespaces (podd_tests::cluster),
//! the time from `podctl run --replicas 30` to 30 ready pods, the service failover time after
//! a node crash (and the failed requests), the agent's idle RSS and the per-pod overhead
//! (agent RSS delta per pod + shim RSS). Each figure is printed beside the goal.
//!
//! Needs root and release binaries: `cargo build --release -p podd -p podd-pod -p podctl`
//! (or PODD_BIN_DIR pointing at built ones).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::{Context, Result};
use podd_tests::cluster::{Cluster, shim_pids, wait_for};
use podd_tests::workloads::{FOREVER, start_web_and_client};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["phase"] == "Running"
        && podd_tests::cluster::condition_true(p, "Ready")
}

fn ready_count(c: &Cluster, sel: &str) -> Result<(usize, Vec<Value>)> {
    let items = c.get_items("pods", Some(sel))?;
    Ok((items.iter().filter(|p| ready(p)).count(), items))
}

fn agent_rss(c: &Cluster) -> Vec<u64> {
    c.state
        .nodes
        .iter()
        .map(|n| n.agent_pid.map(rss_kib).unwrap_or(0))
        .collect()
}

fn row(what: &str, value: f64, unit: &str, goal: f64) {
    println!(
        "{what:<44} {value:>9.2} {unit:<4} goal {goal:>6.1} {unit:<4} ratio {:>5.2}",
        value / goal
    );
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let c = Cluster::up(3)?;
    let up_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let idle = agent_rss(&c);
    let idle_max = idle.iter().copied().max().unwrap_or(0) as f64 / 1024.0;

    // --- 30 pods ---
    let t0 = Instant::now();
    c.podctl(&[
        "run",
        "bench",
        "--image",
        "busybox",
        "--replicas",
        "30",
        "--",
        "sh",
        "-c",
        FOREVER,
    ])?;
    wait_for(Duration::from_secs(120), "30 ready pods", || {
        Ok(ready_count(&c, "app=bench")?.0 == 30)
    })?;
    let startup = t0.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let busy = agent_rss(&c);
    let (_, pods) = ready_count(&c, "app=bench")?;
    let mut per_node = vec![0usize; c.state.nodes.len()];
    for p in &pods {
        if let Some(i) = p["spec"]["nodeName"].as_str().and_then(|n| c.node(n)) {
            per_node[i] += 1;
        }
    }
    let agent_delta_per_pod: f64 = idle
        .iter()
        .zip(&busy)
        .map(|(a, b)| b.saturating_sub(*a) as f64)
        .sum::<f64>()
        / 30.0
        / 1024.0;
    let shims: Vec<i32> = c
        .state
        .nodes
        .iter()
        .flat_map(|n| shim_pids(&n.run_dir))
        .collect();
    let shim_avg =
        shims.iter().map(|p| rss_kib(*p) as f64).sum::<f64>() / shims.len().max(1) as f64 / 1024.0;
    c.podctl(&["delete", "deployment", "bench"])?;
    wait_for(Duration::from_secs(120), "the bench pods gone", || {
        Ok(c.get_items("pods", Some("app=bench"))?.is_empty())
    })?;

    // --- failover ---
    start_web_and_client(&c)?;
    wait_for(Duration::from_secs(60), "web and client ready", || {
        Ok(ready_count(&c, "app=web")?.0 == 3 && ready_count(&c, "app=client")?.0 == 1)
    })?;
    let client = ready_count(&c, "app=client")?.1.remove(0);
    let client_node = client["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let client_uid = client["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let client_ctr = client["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ci = c.node(&client_node).context("client node")?;
    let (_, web) = ready_count(&c, "app=web")?;
    let crash = web
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .find(|n| *n != "node-1" && *n != client_node)
        .context("a node to crash")?
        .to_string();
    let crash_i = c.node(&crash).context("crash node")?;
    wait_for(Duration::from_secs(20), "3 endpoints", || {
        let e = c.get_items("endpoints", None)?;
        Ok(e.iter().any(|e| {
            e["metadata"]["name"] == "web"
                && e["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(3)
        }))
    })?;
    let vip = c
        .get_items("services", None)?
        .into_iter()
        .find(|s| s["metadata"]["name"] == "web")
        .and_then(|s| s["spec"]["clusterIP"].as_str().map(String::from))
        .context("the web service's cluster IP")?;
    let url = format!("http://{vip}/");
    let stop = AtomicBool::new(false);
    let fetch = || {
        c.exec(
            ci,
            &client_uid,
            &client_ctr,
            &["timeout", "2", "wget", "-q", "-O", "-", &url],
        )
        .map(|o| o.status.success())
        .unwrap_or(false)
    };
    let mut crashed_at = Instant::now();
    let (results, not_ready, replaced) = std::thread::scope(|s| -> Result<_> {
        let h = s.spawn(|| {
            let mut r = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let ok = fetch();
                r.push((Instant::now(), ok));
            }
            r
        });
        // Past the server's node-startup grace (10 s), so the crash meets the normal 2 s
        // grace, as it would on a server that has been up a while.
        let settle = Duration::from_secs(12).saturating_sub(up_at.elapsed());
        std::thread::sleep(settle.max(Duration::from_secs(1)));
        crashed_at = Instant::now();
        let waited = (|| -> Result<(Duration, Duration)> {
            c.crash_node(crash_i)?;
            wait_for(Duration::from_secs(30), "NotReady", || {
                Ok(!c.ready_nodes()?.contains(&crash))
            })?;
            let nr = crashed_at.elapsed();
            wait_for(Duration::from_secs(60), "replacement", || {
                let (_, pods) = ready_count(&c, "app=web")?;
                Ok(pods.iter().filter(|p| ready(p)).count() == 3
                    && pods
                        .iter()
                        .filter(|p| ready(p))
                        .all(|p| p["spec"]["nodeName"] != crash.as_str()))
            })?;
            Ok((nr, crashed_at.elapsed()))
        })();
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("request loop panicked"))?;
        let (nr, rep) = waited?;
        Ok((r, nr, rep))
    })?;
    let failed: Vec<Instant> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| *t)
        .collect();
    let failover = failed
        .last()
        .map(|t| t.duration_since(crashed_at))
        .unwrap_or_default();
    let after = results
        .iter()
        .filter(|(t, ok)| !ok && t.duration_since(crashed_at) > replaced)
        .count();

    println!("\npodd e2e benchmark (3 nodes, netns cluster)");
    row(
        "30 pods: podctl run to 30 ready",
        startup.as_secs_f64(),
        "s",
        2.0,
    );
    println!("  pods per node: {per_node:?}");
    row(
        "failover: crash to last failed request",
        failover.as_secs_f64(),
        "s",
        5.0,
    );
    println!(
        "  node NotReady after {:.2} s, pods replaced after {:.2} s; {} of {} requests failed, {} after the replacement",
        not_ready.as_secs_f64(),
        replaced.as_secs_f64(),
        failed.len(),
        results.len(),
        after
    );
    row("agent idle RSS (largest of 3)", idle_max, "MiB", 30.0);
    println!("  per node: {:?} KiB", idle);
    println!(
        "per-pod overhead: agent +{agent_delta_per_pod:.2} MiB per pod, shim {shim_avg:.2} MiB each ({} shims)",
        shims.len()
    );
    c.down()
}

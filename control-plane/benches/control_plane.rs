//! `cargo xtask bench control-plane`: the control plane at scale, with hollow nodes.
//!
//! For each store (memory, SQLite, etcd) and each cluster size (1,000 and 5,000 hollow nodes,
//! 30 pods each) it measures, side by side:
//! - pods per second end to end: Deployments created over the API, pods created by the
//!   deployment controller, placed by the scheduler loop, bound, and reported Running by the
//!   hollow nodes (over the Unix socket, as agents would);
//! - latency percentiles of mutating calls (every registry write, in-process controllers
//!   included, and the HTTP view of the agents' writes), against Kubernetes' SLO (p99 <= 1 s)
//!   and our goal (p99 <= 100 ms);
//! - the time to replace the pods of a node that stops: detection (lease grace) and
//!   replacement after it, against Kubernetes' default 5 min 50 s;
//! - the server's memory (RSS); the hollow nodes run in a child process, so it is the
//!   server's alone.
//!
//! Environment: PODD_BENCH_NODES (default "1000,5000"), PODD_BENCH_PODS_PER_NODE (30),
//! PODD_BENCH_STORES (default "memory,sqlite,etcd"; etcd needs the `etcd` binary).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use podd_api::Kind;
use podd_control_plane::controllers::ControllerConfig;
use podd_control_plane::hollow::{HollowConfig, HollowFleet};
use podd_control_plane::metrics::percentile;
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REPLICAS_PER_DEPLOYMENT: u32 = 100;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn rss_kib(pid: &str) -> u64 {
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

/// Heartbeat and grace scale with the cluster, as kubemark runs do: 500 ms / 2 s for small
/// clusters, up to 10 s / 40 s (Kubernetes' own defaults) at 5,000 nodes.
fn heartbeat_for(nodes: usize) -> Duration {
    Duration::from_millis((nodes as u64 * 2).clamp(500, 10_000))
}

fn main() {
    if std::env::var("PODD_BENCH_ROLE").as_deref() == Ok("hollow") {
        hollow_child();
        return;
    }
    let nodes: Vec<usize> = env_or("PODD_BENCH_NODES", "1000,5000")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let ppn: usize = env_or("PODD_BENCH_PODS_PER_NODE", "30")
        .parse()
        .unwrap_or(30);
    let stores: Vec<String> = env_or("PODD_BENCH_STORES", "memory,sqlite,etcd")
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut results = Vec::new();
    for &n in &nodes {
        for s in &stores {
            println!("== {n} hollow nodes x {ppn} pods on {s} ==");
            match rt.block_on(run_one(s, n, ppn)) {
                Ok(r) => {
                    r.print();
                    results.push(r);
                }
                Err(e) => println!("   skipped: {e}"),
            }
        }
    }
    println!();
    println!("== summary (side by side) ==");
    println!(
        "{:<8} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}",
        "store",
        "nodes",
        "pods",
        "pods/s",
        "p50 ms",
        "p99 ms",
        "http p99",
        "detect s",
        "replace s",
        "total s",
        "RSS MiB"
    );
    for r in &results {
        println!(
            "{:<8} {:>6} {:>7} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>10.2} {:>10.1} {:>9}",
            r.store,
            r.nodes,
            r.pods,
            r.pods_per_sec,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.http_p99_us as f64 / 1000.0,
            r.detect.as_secs_f64(),
            r.replace.as_secs_f64(),
            (r.detect + r.replace).as_secs_f64(),
            r.rss_kib / 1024
        );
    }
    for r in &results {
        println!(
            "ratios {} {}: p99 / Kubernetes SLO (1 s) = {:.3}; p99 / goal (100 ms) = {:.2}; node replacement / Kubernetes default (350 s) = {:.3}",
            r.store,
            r.nodes,
            r.p99_us as f64 / 1e6,
            r.p99_us as f64 / 1e5,
            (r.detect + r.replace).as_secs_f64() / 350.0
        );
    }
}

struct BenchResult {
    store: String,
    nodes: usize,
    pods: usize,
    register: Duration,
    pods_per_sec: f64,
    create_elapsed: Duration,
    p50_us: u32,
    p90_us: u32,
    p99_us: u32,
    max_us: u32,
    writes: usize,
    http_p50_us: u32,
    http_p99_us: u32,
    http_writes: usize,
    grace: Duration,
    detect: Duration,
    replace: Duration,
    lost: usize,
    rss_kib: u64,
    hollow_rss_kib: u64,
    /// Stored writes while the pods were created, by kind (most first).
    writes_by_kind: Vec<(Kind, usize)>,
}

impl BenchResult {
    fn print(&self) {
        println!(
            "   registered {} nodes in {:.1}s",
            self.nodes,
            self.register.as_secs_f64()
        );
        println!(
            "   {} pods Running in {:.1}s: {:.0} pods/s end to end (API -> controller -> scheduler -> binding -> Running)",
            self.pods,
            self.create_elapsed.as_secs_f64(),
            self.pods_per_sec
        );
        println!(
            "   mutating calls (all {} registry writes): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
            self.writes,
            self.p50_us as f64 / 1e3,
            self.p90_us as f64 / 1e3,
            self.p99_us as f64 / 1e3,
            self.max_us as f64 / 1e3
        );
        let per_pod: Vec<String> = self
            .writes_by_kind
            .iter()
            .map(|(kind, n)| format!("{} {:.2}", kind.plural(), *n as f64 / self.pods as f64))
            .collect();
        let total: usize = self.writes_by_kind.iter().map(|(_, n)| n).sum();
        println!(
            "   stored writes per pod: {:.2} ({})",
            total as f64 / self.pods as f64,
            per_pod.join(", ")
        );
        println!(
            "   mutating HTTP calls (the {} agents' writes): p50 {:.2} ms, p99 {:.2} ms",
            self.http_writes,
            self.http_p50_us as f64 / 1e3,
            self.http_p99_us as f64 / 1e3
        );
        println!(
            "   node loss ({} pods, lease grace {:.0}s): NotReady after {:.1}s, pods replaced {:.2}s later",
            self.lost,
            self.grace.as_secs_f64(),
            self.detect.as_secs_f64(),
            self.replace.as_secs_f64()
        );
        println!(
            "   server RSS {} MiB (hollow nodes' process {} MiB)",
            self.rss_kib / 1024,
            self.hollow_rss_kib / 1024
        );
    }
}

struct Child {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Child {
    fn command(&mut self, line: &str) -> String {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        let _ = writeln!(stdin, "{line}");
        let _ = stdin.flush();
        let mut reply = String::new();
        let _ = self.out.read_line(&mut reply);
        reply.trim().to_string()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open_store(
    name: &str,
    dir: &std::path::Path,
) -> Result<
    (
        Arc<dyn podd_store::Store>,
        Option<podd_store::testing::EtcdServer>,
    ),
    String,
> {
    match name {
        "memory" => Ok((Arc::new(podd_store::MemStore::new()), None)),
        "sqlite" => {
            let url = format!("sqlite://{}", dir.join("podd.db").display());
            Ok((
                podd_store::open(&url).await.map_err(|e| e.to_string())?,
                None,
            ))
        }
        "etcd" => {
            let etcd = podd_store::testing::EtcdServer::start()
                .await
                .map_err(|e| format!("could not start etcd: {e}"))?;
            let store = podd_store::open(&etcd.url())
                .await
                .map_err(|e| e.to_string())?;
            Ok((store, Some(etcd)))
        }
        other => Err(format!("unknown store {other:?}")),
    }
}

fn is_running(json: &[u8]) -> bool {
    let has = |needle: &[u8]| json.windows(needle.len()).any(|w| w == needle);
    // Running with its containers ready (as hollow nodes report), and not being deleted.
    has(br#""phase":"Running""#) && has(br#""ready":true"#) && !has(br#""deletionTimestamp""#)
}

async fn run_one(store_name: &str, nodes: usize, ppn: usize) -> Result<BenchResult, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (store, _etcd) = open_store(store_name, dir.path()).await?;
    let heartbeat = heartbeat_for(nodes);
    let grace = heartbeat * 4;
    let socket = dir.path().join("podd.sock");
    let cfg = ControlPlaneConfig {
        socket: Some(socket.clone()),
        tls_addr: None,
        registry: podd_control_plane::registry::RegistryConfig {
            // Room for 5,000+ nodes of /24 each (100.64.0.0/10 holds 16,384).
            cluster_cidr: "100.64.0.0/10".into(),
            ..Default::default()
        },
        cache: podd_control_plane::cache::CacheConfig {
            window: 200_000,
            window_bytes: usize::MAX,
            fanout_buffer: 1 << 17,
        },
        controllers: Some(ControllerConfig {
            node_grace: grace,
            node_monitor_period: Duration::from_millis(250),
            resync: Duration::from_secs(60),
            write_concurrency: 64,
            ..ControllerConfig::default()
        }),
        ..ControlPlaneConfig::default()
    };
    let plane = ControlPlane::start(store, cfg)
        .await
        .map_err(|e| e.to_string())?;
    let registry = plane.registry.clone();
    let cache = registry.cache().clone();

    // The hollow nodes, in a child process.
    let t_reg = Instant::now();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env("PODD_BENCH_ROLE", "hollow")
        .env("PODD_BENCH_SOCKET", &socket)
        .env("PODD_BENCH_NODES", nodes.to_string())
        .env("PODD_BENCH_HEARTBEAT_MS", heartbeat.as_millis().to_string())
        .env("PODD_BENCH_MAX_PODS", (ppn * 2).max(110).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start the hollow nodes: {e}"))?;
    let out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut child = Child { child, out };
    let mut line = String::new();
    let out = &mut child.out;
    tokio::task::block_in_place(|| out.read_line(&mut line)).map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        return Err(format!("hollow nodes did not start: {line:?}"));
    }
    let register = t_reg.elapsed();
    let child_pid = child.child.id().to_string();
    registry.mutating_latency.take();
    registry.http_mutating_latency.take();

    // Track running pods (and where) from the cache's events: cheap byte checks, no decoding.
    let mut rx = cache.subscribe_now(Kind::Pod);
    let writes_by_kind = count_writes(&cache);
    let total = nodes * ppn;
    let client = plane.local_client().expect("a socket");
    let deps = client.api::<podd_api::Deployment>(Some("default"));
    let n_deps = total.div_ceil(REPLICAS_PER_DEPLOYMENT as usize);
    let t0 = Instant::now();
    let creator = tokio::spawn(async move {
        use futures::StreamExt;
        let futs = (0..n_deps).map(|i| {
            let deps = deps.clone();
            async move {
                let replicas = REPLICAS_PER_DEPLOYMENT.min((total - i * REPLICAS_PER_DEPLOYMENT as usize) as u32);
                let d: podd_api::Deployment = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("app-{i}")},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                        "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                            "spec": {"containers": [{"name": "c", "image": "registry.local/app:1",
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
                }))
                .expect("a valid deployment");
                deps.create(&d).await
            }
        });
        let results: Vec<_> = futures::stream::iter(futs)
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().filter(|r| r.is_err()).count()
    });
    let mut running: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while running.len() < total {
        if Instant::now() > deadline {
            return Err(format!(
                "only {}/{total} pods running after 30 min",
                running.len()
            ));
        }
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Ok(ev)) => track(&mut running, &ev),
            Ok(Err(e)) => return Err(format!("the bench's event feed broke: {e}")),
            Err(_) => println!("   ... {}/{total} running", running.len()),
        }
    }
    let create_elapsed = t0.elapsed();
    let writes_by_kind = writes_by_kind.finish().await;
    let failed_creates = creator.await.unwrap_or(0);
    if failed_creates > 0 {
        println!("   warning: {failed_creates} deployment creates failed");
    }
    let lat = registry.mutating_latency.take();
    let http = registry.http_mutating_latency.take();

    // A node stops.
    let victim = "hollow-0".to_string();
    let lost = running.values().filter(|n| **n == victim).count();
    let t1 = Instant::now();
    let reply = tokio::task::block_in_place(|| child.command(&format!("stop {victim}")));
    if reply != "ok" {
        return Err(format!("the hollow child did not stop the node: {reply:?}"));
    }
    let mut detect = None;
    loop {
        if detect.is_none() {
            let ready = cache
                .get(Kind::Node, &Kind::Node.key("", &victim))
                .and_then(|o| o.decode::<podd_api::Node>())
                .is_some_and(|n| podd_api::resources::node_is_ready(&n));
            if !ready {
                detect = Some(t1.elapsed());
            }
        }
        if detect.is_some() && running.len() >= total && !running.values().any(|n| *n == victim) {
            break;
        }
        if t1.elapsed() > grace + Duration::from_secs(600) {
            return Err("pods of the lost node were not replaced within 10 min".into());
        }
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Ok(ev)) => track(&mut running, &ev),
            Ok(Err(e)) => return Err(format!("the bench's event feed broke: {e}")),
            Err(_) => {}
        }
    }
    let detect = detect.unwrap_or_default();
    let replace = t1.elapsed() - detect;
    let rss = rss_kib("self");
    let hollow_rss = rss_kib(&child_pid);
    tokio::task::block_in_place(|| child.command("quit"));
    drop(child);
    plane.shutdown().await;
    Ok(BenchResult {
        store: store_name.to_string(),
        nodes,
        pods: total,
        register,
        pods_per_sec: total as f64 / create_elapsed.as_secs_f64(),
        create_elapsed,
        p50_us: percentile(&lat, 50.0),
        p90_us: percentile(&lat, 90.0),
        p99_us: percentile(&lat, 99.0),
        max_us: percentile(&lat, 100.0),
        writes: lat.len(),
        http_p50_us: percentile(&http, 50.0),
        http_p99_us: percentile(&http, 99.0),
        http_writes: http.len(),
        grace,
        detect,
        replace,
        lost,
        rss_kib: rss,
        hollow_rss_kib: hollow_rss,
        writes_by_kind,
    })
}

/// Counts the cache's events (one per stored write) of every kind while pods are created: the
/// writes each pod costs, by kind.
struct WriteCounter {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<(Kind, tokio::task::JoinHandle<usize>)>,
}

fn count_writes(cache: &podd_control_plane::cache::WatchCache) -> WriteCounter {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks = Kind::ALL
        .iter()
        .map(|&kind| {
            let mut rx = cache.subscribe_now(kind);
            let mut stopped = stopped.clone();
            let task = tokio::spawn(async move {
                let mut n = 0;
                loop {
                    tokio::select! {
                        ev = rx.recv() => match ev {
                            Ok(_) => n += 1,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => n += k as usize,
                            Err(_) => break,
                        },
                        _ = stopped.changed() => break,
                    }
                }
                n
            });
            (kind, task)
        })
        .collect();
    WriteCounter { stop, tasks }
}

impl WriteCounter {
    async fn finish(self) -> Vec<(Kind, usize)> {
        let _ = self.stop.send(true);
        let mut counts = Vec::new();
        for (kind, task) in self.tasks {
            let n = task.await.unwrap_or(0);
            if n > 0 {
                counts.push((kind, n));
            }
        }
        counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        counts
    }
}

fn track(running: &mut HashMap<String, String>, ev: &podd_control_plane::cache::CacheEvent) {
    let key = &ev.object.key;
    if ev.kind == podd_api::WatchEventType::Deleted || !is_running(&ev.object.json) {
        running.remove(key);
    } else {
        running.insert(key.clone(), ev.object.node_name.clone());
    }
}

/// The child process: N hollow nodes over the server's Unix socket; "stop NAME", "start
/// NAME" and "quit" on stdin.
fn hollow_child() {
    let socket = env_or("PODD_BENCH_SOCKET", "/run/podd/podd.sock");
    let nodes: usize = env_or("PODD_BENCH_NODES", "100").parse().unwrap_or(100);
    let hb: u64 = env_or("PODD_BENCH_HEARTBEAT_MS", "500")
        .parse()
        .unwrap_or(500);
    let max_pods: u32 = env_or("PODD_BENCH_MAX_PODS", "110").parse().unwrap_or(110);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = podd_client::Client::unix(&socket);
    let names: Vec<String> = (0..nodes).map(|i| format!("hollow-{i}")).collect();
    let config = HollowConfig {
        heartbeat: Duration::from_millis(hb),
        max_pods,
        cpu: podd_api::Cpu(8000),
        memory: podd_api::Memory(32 << 30),
        ..HollowConfig::default()
    };
    let fleet = match rt.block_on(HollowFleet::start(client, &names, config)) {
        Ok(f) => f,
        Err(e) => {
            println!("error {e}");
            return;
        }
    };
    println!("ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("stop"), Some(n)) => fleet.stop_node(n),
            (Some("start"), Some(n)) => fleet.start_node(n),
            (Some("quit"), _) | (None, _) => {
                println!("ok");
                break;
            }
            _ => {}
        }
        println!("ok");
    }
    rt.block_on(fleet.shutdown());
}

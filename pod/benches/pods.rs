//! Benchmark (`cargo xtask bench pods`, root): pod start latency and memory per pod.
//!
//! - pod start: a 1-container busybox pod with network (sandbox namespaces, veth on the node
//!   bridge, IPAM lease, /etc files, shm, cgroup, overlay rootfs, shim, container), from the
//!   `PodManager::run_pod` call until its status says Running; then the pod is deleted
//!   (`stop_pod`, timed separately).
//! - baseline, alternating with it on the same machine: the runtime's bare container,
//!   `Container::create` + `start` + `wait` of busybox `true` on a ready rootfs.
//! - memory per pod: with PODD_POD_BENCH_RESIDENT pods running, each shim's RSS and PSS from
//!   /proc, and how much the managing process (the agent) grew per pod.
//!
//! Everything runs in a node network namespace and cgroup subtree the benchmark makes and
//! removes. Iterations: PODD_POD_BENCH_N (default 100).

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Node, pod_with, rss_pss_kib};
use podd_pod::manager::PodManager;
use podd_runtime::{Container, CreateOptions};
use std::path::Path;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (median, p99) in milliseconds.
fn summary(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let n = samples.len();
    (ms(samples[n / 2]), ms(samples[(n * 99 / 100).min(n - 1)]))
}

fn sleeper(i: usize) -> podd_api::Pod {
    pod_with(
        &format!("bench-{i}"),
        &format!("uid-bench-{i}"),
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["sleep", "100000"]}]),
        serde_json::json!({"terminationGracePeriodSeconds": 0}),
    )
}

/// Polls the pod's status until its container runs.
fn wait_running(m: &PodManager, uid: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((s, _)) = m.status(uid)
            && s.pids.first().is_some_and(|&p| p > 0)
        {
            return;
        }
        assert!(Instant::now() < deadline, "pod {uid} never ran");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("pods benchmark: needs root (namespaces, mounts, cgroups); skipped");
        return;
    }
    let n = env_usize("PODD_POD_BENCH_N", 100);
    let resident = env_usize("PODD_POD_BENCH_RESIDENT", 20);
    let node = Node::new("bench", 90, Path::new(env!("CARGO_BIN_EXE_podd-shim")));
    let images = node.images();
    let m = node.manager();

    // The bare container's bundle: one overlay rootfs over the same busybox image, reused.
    let bare_dir = node.path("bare");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let rootfs =
        podd_image::OverlayRootfs::mount(&images["busybox"], &bare_dir.join("bundle")).unwrap();
    let mut spec = oci_spec::runtime::Spec::default();
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(rootfs.path().to_path_buf());
    spec.set_root(Some(root));
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(vec!["/bin/true".into()]));
    spec.set_process(Some(process));
    let mut opts = CreateOptions::new(bare_dir.join("state"));
    opts.cgroup_root = Some(node.cgroup_root.clone());

    let (mut pod_start, mut pod_delete, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let mut s = spec.clone();
        let mut linux = s.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(format!("/bare/c{i}").into()));
        s.set_linux(Some(linux));
        let t = Instant::now();
        let mut c =
            Container::create(&format!("bare-{i}"), &bare_dir.join("bundle"), &s, &opts).unwrap();
        c.start().unwrap();
        assert_eq!(c.wait().unwrap(), 0);
        bare.push(t.elapsed());
        c.delete(true).unwrap();

        let p = sleeper(i);
        let t = Instant::now();
        let info = m.run_pod(&p, &images).unwrap();
        wait_running(&m, &info.uid);
        pod_start.push(t.elapsed());
        let t = Instant::now();
        m.stop_pod(&info.uid).unwrap();
        pod_delete.push(t.elapsed());
    }
    let _ = std::fs::remove_dir(node.cgroup_root.join("bare"));
    rootfs.teardown().unwrap();

    // Memory: `resident` pods at once.
    let before = rss_pss_kib(std::process::id() as i32);
    let mut shims = Vec::new();
    for i in 0..resident {
        let info = m.run_pod(&sleeper(n + i), &images).unwrap();
        wait_running(&m, &info.uid);
        shims.push(info);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_pss_kib(std::process::id() as i32);
    let (mut rss, mut pss) = (0u64, 0u64);
    for s in &shims {
        let (r, p) = rss_pss_kib(s.shim_pid);
        rss += r;
        pss += p;
    }
    for s in &shims {
        m.stop_pod(&s.uid).unwrap();
    }
    let leftovers = node.leftovers();

    let (ps_med, ps_p99) = summary(&mut pod_start);
    let (pd_med, pd_p99) = summary(&mut pod_delete);
    let (b_med, b_p99) = summary(&mut bare);
    let per = |kib: u64| kib as f64 / resident.max(1) as f64;
    println!("pods benchmark: {n} pods, alternating with the bare runtime, same machine");
    println!("  {:<58} {:>9} {:>9}", "", "median", "p99");
    println!(
        "  {:<58} {:>6.2} ms {:>6.2} ms",
        "pod start: run_pod -> Running (1 container, network)", ps_med, ps_p99
    );
    println!(
        "  {:<58} {:>6.2} ms {:>6.2} ms",
        "bare runtime: create + start + wait of busybox `true`", b_med, b_p99
    );
    println!(
        "  {:<58} {:>8.2}x {:>8.2}x",
        "ratio pod start / bare container",
        ps_med / b_med,
        ps_p99 / b_p99
    );
    println!(
        "  {:<58} {:>6.2} ms {:>6.2} ms",
        "pod delete: stop_pod (grace 0) -> nothing left", pd_med, pd_p99
    );
    println!("memory per pod ({resident} pods running):");
    println!(
        "  shim RSS {:.0} KiB, PSS {:.0} KiB per pod; agent (pod manager) {:+.0} KiB RSS per pod",
        per(rss),
        per(pss),
        (after.0 as f64 - before.0 as f64) / resident.max(1) as f64
    );
    assert!(leftovers.is_empty(), "the benchmark left: {leftovers:#?}");
}

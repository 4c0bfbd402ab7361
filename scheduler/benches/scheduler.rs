//! `cargo xtask bench scheduler`: placement throughput, memory and quality of podd's scheduler,
//! side by side with a naive Kubernetes-style full scan written here as the reference.
//!
//! Scenarios:
//! 1. 5,000 nodes x 50,000 pods (500 Deployments of 100 replicas, some with a nodeSelector or
//!    tolerations): pods/s, heap bytes, and quality against the naive full scan and against
//!    Kubernetes-style sampling (`percentageOfNodesToScore`).
//!    1b. bin packing (MostAllocated): index vs full scan, nodes used.
//!    1c. filling a cluster to the brim (the last pods are unschedulable).
//! 2. 15,000 nodes, DaemonSet-like: one pod pinned to each node (hostname selector).
//! 3. The cost of one placement at 500, 5,000 and 50,000 nodes (clusters half full).
//!
//! `--quick` shrinks every size by 10x (a smoke run).

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use podd_api::Toleration;
use podd_scheduler::reference::{fits, ports_free, static_check};
use podd_scheduler::{
    NOT_READY_TAINT, NodeInfo, NodeUsage, PodInfo, SCALE, Scheduler, SchedulerConfig, ZONE_LABEL,
    score_node, tie_key,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

// ---- a counting allocator: live heap bytes ----

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// the counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with this layout (all allocations go there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the caller guarantees `new_size` is valid for the layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// CPU time of this thread: unlike wall-clock time, not inflated when other processes compete
/// for the machine's cores.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Measures CPU seconds of the current thread spent in `f`.
struct Timer(f64);
impl Timer {
    fn start() -> Timer {
        Timer(thread_cpu_secs())
    }
    fn secs(&self) -> f64 {
        thread_cpu_secs() - self.0
    }
}

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

// ---- deterministic workload ----

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

fn cluster(n: usize, seed: u64) -> Vec<NodeInfo> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let name = format!("node-{i:05}");
            let (cpu, mem) =
                [(8000, 32 * GI), (16_000, 64 * GI), (32_000, 128 * GI)][rng.below(3) as usize];
            let mut labels = BTreeMap::new();
            labels.insert("kubernetes.io/hostname".to_string(), name.clone());
            labels.insert(ZONE_LABEL.to_string(), ZONES[i % 3].to_string());
            if rng.below(10) < 3 {
                labels.insert("disk".to_string(), "ssd".to_string());
            }
            let taints = if rng.below(20) == 0 {
                vec![podd_api::Taint {
                    key: "dedicated".into(),
                    value: Some("gpu".into()),
                    effect: "NoSchedule".into(),
                    time_added: None,
                }]
            } else {
                vec![]
            };
            NodeInfo {
                name,
                allocatable_cpu_millis: cpu,
                allocatable_memory: mem,
                max_pods: 110,
                labels,
                taints,
                ready: true,
                unschedulable: false,
            }
        })
        .collect()
}

/// `deployments` x `replicas` pods, interleaved as a controller creating them would be.
fn workload(deployments: usize, replicas: usize, seed: u64) -> Vec<PodInfo> {
    let mut rng = Rng(seed);
    let templates: Vec<PodInfo> = (0..deployments)
        .map(|d| {
            let cpu = [100, 250, 500, 1000][rng.below(4) as usize];
            let mem = [128 * MI, 256 * MI, 512 * MI, GI, 2 * GI][rng.below(5) as usize];
            let mut p = PodInfo {
                cpu_millis: cpu,
                memory: mem,
                spread_group: Some(format!("rs-{d}")),
                ..Default::default()
            };
            match rng.below(10) {
                0 => {
                    p.node_selector.insert("disk".into(), "ssd".into());
                }
                1 => {
                    p.tolerations = vec![Toleration {
                        key: Some("dedicated".into()),
                        operator: Some("Equal".into()),
                        value: Some("gpu".into()),
                        ..Default::default()
                    }]
                }
                _ => {}
            }
            p
        })
        .collect();
    let mut pods = Vec::with_capacity(deployments * replicas);
    // Deployments scale up in waves of 10 replicas, interleaved.
    for wave in 0..replicas.div_ceil(10) {
        for (d, t) in templates.iter().enumerate() {
            for r in wave * 10..((wave + 1) * 10).min(replicas) {
                let mut p = t.clone();
                p.key = format!("default/deploy-{d}-{r}");
                pods.push(p);
            }
        }
    }
    pods
}

// ---- the baseline: a naive Kubernetes-style scheduler ----

/// Filter every node, score every node, take the best: what kube-scheduler does per pod
/// with `percentageOfNodesToScore: 100`, with the same filters and score formula as podd's
/// (so placements are comparable one to one). Replica counts are kept in hash maps (kube-
/// scheduler recounts them from its pod cache every cycle, which is slower still).
struct Naive {
    cfg: SchedulerConfig,
    nodes: Vec<NaiveNode>,
    node_replicas: HashMap<(usize, String), u32>,
    zone_replicas: HashMap<(Option<String>, String), u32>,
    /// With `sample_percent` < 100: score only that share of feasible nodes, from a rotating
    /// start (Kubernetes' percentageOfNodesToScore, adaptive lower bound 100 nodes).
    sample_percent: usize,
    next_start: usize,
    last_score: Option<i64>,
}

struct NaiveNode {
    info: NodeInfo,
    usage: NodeUsage,
    ports: Vec<(u16, u32)>,
}

impl Naive {
    fn new(cfg: SchedulerConfig, nodes: &[NodeInfo], sample_percent: usize) -> Naive {
        Naive {
            cfg,
            nodes: nodes
                .iter()
                .map(|n| NaiveNode {
                    usage: NodeUsage {
                        alloc_cpu: n.allocatable_cpu_millis,
                        alloc_mem: n.allocatable_memory,
                        max_pods: n.max_pods,
                        ..Default::default()
                    },
                    info: n.clone(),
                    ports: vec![],
                })
                .collect(),
            node_replicas: HashMap::new(),
            zone_replicas: HashMap::new(),
            sample_percent,
            next_start: 0,
            last_score: None,
        }
    }

    fn bind(&mut self, pod: &PodInfo, i: usize) {
        let n = &mut self.nodes[i];
        n.usage.req_cpu += pod.cpu_millis;
        n.usage.req_mem += pod.memory;
        n.usage.pods += 1;
        if let Some(g) = &pod.spread_group {
            *self.node_replicas.entry((i, g.clone())).or_insert(0) += 1;
            let zone = n.info.labels.get(ZONE_LABEL).cloned();
            *self.zone_replicas.entry((zone, g.clone())).or_insert(0) += 1;
        }
    }

    fn schedule(&mut self, pod: &PodInfo) -> Option<usize> {
        let n = self.nodes.len();
        let want = if self.sample_percent >= 100 {
            usize::MAX
        } else {
            (n * self.sample_percent / 100).max(100)
        };
        let i = self.choose(pod, want)?.2;
        self.bind(pod, i);
        Some(i)
    }

    /// Like `schedule`, and also returns how much lower the chosen node's score is than the
    /// best node's (a full scan on the same state): the quality cost of sampling.
    fn schedule_with_regret(&mut self, pod: &PodInfo) -> (Option<usize>, i64) {
        let start = self.next_start;
        let full = self.choose(pod, usize::MAX);
        self.next_start = start;
        let placed = self.schedule(pod);
        let regret = match (full, placed) {
            (Some(f), Some(_)) => f.0 - self.last_score.unwrap_or(f.0),
            _ => 0,
        };
        (placed, regret)
    }

    /// The best feasible node among the first `want` feasible ones from the rotating start.
    fn choose(&mut self, pod: &PodInfo, want: usize) -> Option<(i64, u64, usize)> {
        let n = self.nodes.len();
        let start = self.next_start;
        let mut feasible = Vec::new();
        let mut visited = 0;
        for k in 0..n {
            if feasible.len() >= want {
                break;
            }
            visited += 1;
            let i = (start + k) % n;
            let node = &self.nodes[i];
            let Ok(prefer) = static_check(&node.info, pod) else {
                continue;
            };
            if fits(&node.usage, pod.cpu_millis, pod.memory)
                && ports_free(&node.ports, &pod.host_ports)
            {
                feasible.push((i, prefer));
            }
        }
        self.next_start = (start + visited) % n.max(1);
        let mut best: Option<(i64, u64, usize)> = None;
        for (i, prefer) in feasible {
            let node = &self.nodes[i];
            let (nc, zc) = match &pod.spread_group {
                Some(g) => (
                    self.node_replicas
                        .get(&(i, g.clone()))
                        .copied()
                        .unwrap_or(0),
                    self.zone_replicas
                        .get(&(node.info.labels.get(ZONE_LABEL).cloned(), g.clone()))
                        .copied()
                        .unwrap_or(0),
                ),
                None => (0, 0),
            };
            let score = score_node(
                &self.cfg,
                &node.usage,
                pod.cpu_millis,
                pod.memory,
                nc,
                zc,
                prefer,
            );
            let tie = tie_key(self.cfg.seed, &pod.key, &node.info.name);
            if best.is_none_or(|(s, t, _)| score > s || (score == s && tie < t)) {
                best = Some((score, tie, i));
            }
        }
        self.last_score = best.map(|b| b.0);
        best
    }
}

// ---- quality ----

struct Quality {
    /// Per-node CPU utilisation (requested / allocatable): max - min, and standard deviation.
    util_range: f64,
    util_stddev: f64,
    /// Worst replicas-on-one-node and worst zone skew over all Deployments.
    max_per_node: u32,
    max_zone_skew: u32,
    unschedulable: usize,
}

fn quality(nodes: &[NodeInfo], pods: &[PodInfo], placed: &[Option<usize>]) -> Quality {
    let mut req = vec![0u64; nodes.len()];
    let mut per_node: HashMap<(&str, usize), u32> = HashMap::new();
    let mut per_zone: HashMap<&str, [u32; 3]> = HashMap::new();
    for (p, at) in pods.iter().zip(placed) {
        let Some(i) = *at else { continue };
        req[i] += p.cpu_millis;
        let g = p.spread_group.as_deref().unwrap_or("");
        *per_node.entry((g, i)).or_insert(0) += 1;
        per_zone.entry(g).or_insert([0; 3])[i % 3] += 1;
    }
    let utils: Vec<f64> = req
        .iter()
        .zip(nodes)
        .map(|(r, n)| *r as f64 / n.allocatable_cpu_millis as f64)
        .collect();
    let mean = utils.iter().sum::<f64>() / utils.len() as f64;
    let var = utils.iter().map(|u| (u - mean).powi(2)).sum::<f64>() / utils.len() as f64;
    let max = utils.iter().cloned().fold(f64::MIN, f64::max);
    let min = utils.iter().cloned().fold(f64::MAX, f64::min);
    Quality {
        util_range: max - min,
        util_stddev: var.sqrt(),
        max_per_node: per_node.values().copied().max().unwrap_or(0),
        max_zone_skew: per_zone
            .values()
            .map(|z| z.iter().max().unwrap() - z.iter().min().unwrap())
            .max()
            .unwrap_or(0),
        unschedulable: placed.iter().filter(|p| p.is_none()).count(),
    }
}

fn print_quality(name: &str, q: &Quality, same: Option<f64>) {
    println!(
        "  {name:<34} util range {:>6.3}  stddev {:>6.4}  max replicas/node {:>2}  max zone skew {:>2}  unschedulable {:>3}  identical to full scan {}",
        q.util_range,
        q.util_stddev,
        q.max_per_node,
        q.max_zone_skew,
        q.unschedulable,
        same.map(|s| format!("{:.2}%", s * 100.0))
            .unwrap_or_else(|| "(reference)".into())
    );
}

// ---- runs ----

fn run_podd(
    cfg: SchedulerConfig,
    nodes: &[NodeInfo],
    pods: &[PodInfo],
) -> (Vec<Option<usize>>, f64, usize) {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let before = live();
    let mut s = Scheduler::new(cfg);
    for n in nodes {
        s.upsert_node(n.clone());
    }
    let t = Timer::start();
    let placed: Vec<Option<usize>> = pods
        .iter()
        .map(|p| s.schedule(p).ok().map(|n| index[n.as_str()]))
        .collect();
    let secs = t.secs();
    // The scheduler's heap only: not the result vector of this harness.
    let bytes = live() - before - placed.capacity() * std::mem::size_of::<Option<usize>>();
    black_box(&s);
    (placed, secs, bytes)
}

fn run_naive(
    cfg: SchedulerConfig,
    nodes: &[NodeInfo],
    pods: &[PodInfo],
    pct: usize,
) -> (Vec<Option<usize>>, f64) {
    let mut s = Naive::new(cfg, nodes, pct);
    let t = Timer::start();
    let placed: Vec<Option<usize>> = pods.iter().map(|p| s.schedule(p)).collect();
    (placed, t.secs())
}

fn same_rate(a: &[Option<usize>], b: &[Option<usize>]) -> f64 {
    let n = a.len().min(b.len());
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n.max(1) as f64
}

fn scenario_throughput(scale: usize) {
    let (n_nodes, deployments, replicas) = (5000 / scale, 500 / scale, 100);
    let nodes = cluster(n_nodes, 1);
    let pods = workload(deployments, replicas, 2);
    println!(
        "\n== 1. {} nodes x {} pods ({} Deployments x {} replicas; 10% with a nodeSelector, 10% tolerating a taint) ==",
        nodes.len(),
        pods.len(),
        deployments,
        replicas
    );
    let cfg = SchedulerConfig::default();
    let (podd, podd_s, podd_bytes) = run_podd(cfg.clone(), &nodes, &pods);
    let (scan, scan_s, _) = run_podd(
        SchedulerConfig {
            use_index: false,
            ..cfg.clone()
        },
        &nodes,
        &pods,
    );
    // The naive baseline is slow: run it on a prefix, which also measures quality there.
    let prefix = (pods.len() / 5).max(1);
    let (naive, naive_s) = run_naive(cfg.clone(), &nodes, &pods[..prefix], 100);
    let naive_rate = prefix as f64 / naive_s;
    let podd_rate = pods.len() as f64 / podd_s;
    let scan_rate = pods.len() as f64 / scan_s;
    println!(
        "  podd (score index)                 {podd_rate:>10.0} pods/s  ({:.2} s)",
        podd_s
    );
    println!(
        "  podd (full scan, use_index=false)  {scan_rate:>10.0} pods/s  ({:.2} s)",
        scan_s
    );
    println!(
        "  naive Kubernetes-style full scan   {naive_rate:>10.0} pods/s  (first {prefix} pods, {:.2} s)",
        naive_s
    );
    println!(
        "  ratio: podd index / naive = {:.1}x; podd index / podd scan = {:.1}x",
        podd_rate / naive_rate,
        podd_rate / scan_rate
    );
    println!(
        "  memory: podd scheduler holding {} nodes + {} pods: {:.1} MiB live heap ({:.0} bytes/pod, all included)",
        nodes.len(),
        pods.len(),
        podd_bytes as f64 / MI as f64,
        podd_bytes as f64 / pods.len() as f64
    );
    println!("  quality (all {} pods):", pods.len());
    print_quality("podd full scan", &quality(&nodes, &pods, &scan), None);
    print_quality(
        "podd score index",
        &quality(&nodes, &pods, &podd),
        Some(same_rate(&podd, &scan)),
    );
    println!("  quality (first {prefix} pods, against the naive scan):");
    print_quality(
        "naive full scan",
        &quality(&nodes, &pods[..prefix], &naive),
        None,
    );
    print_quality(
        "podd score index",
        &quality(&nodes, &pods[..prefix], &podd[..prefix]),
        Some(same_rate(&podd, &naive)),
    );
    for pct in [10, 50] {
        let (sampled, s) = run_naive(cfg.clone(), &nodes, &pods[..prefix], pct);
        print_quality(
            &format!("naive, sampling {pct}% of nodes"),
            &quality(&nodes, &pods[..prefix], &sampled),
            Some(same_rate(&sampled, &naive)),
        );
        // Same run again, now also scoring every node to measure what sampling lost.
        let mut naive_s = Naive::new(cfg.clone(), &nodes, pct);
        let regret: i64 = pods[..prefix]
            .iter()
            .map(|p| naive_s.schedule_with_regret(p).1)
            .sum();
        println!(
            "  {:<34} {:>10.0} pods/s; mean score loss per pod vs the best node {:.4} (score units of 100% of one resource)",
            "",
            prefix as f64 / s,
            regret as f64 / prefix as f64 / SCALE as f64
        );
    }
}

fn scenario_bin_packing(scale: usize) {
    let (n_nodes, deployments, replicas) = (5000 / scale, 200 / scale, 100);
    let nodes = cluster(n_nodes, 8);
    let pods = workload(deployments, replicas, 9);
    println!(
        "\n== 1b. bin packing (MostAllocated): {} nodes x {} pods ==",
        nodes.len(),
        pods.len()
    );
    let cfg = SchedulerConfig {
        strategy: podd_scheduler::ResourceStrategy::MostAllocated,
        ..Default::default()
    };
    let (podd, podd_s, _) = run_podd(cfg.clone(), &nodes, &pods);
    let (scan, scan_s, _) = run_podd(
        SchedulerConfig {
            use_index: false,
            ..cfg
        },
        &nodes,
        &pods,
    );
    let used = |placed: &[Option<usize>]| {
        let mut u = vec![false; nodes.len()];
        for i in placed.iter().flatten() {
            u[*i] = true;
        }
        u.iter().filter(|x| **x).count()
    };
    println!(
        "  podd index {:>10.0} pods/s, full scan {:>8.0} pods/s ({:.0}x); identical placements {:.2}%; nodes used {} (scan: {})",
        pods.len() as f64 / podd_s,
        pods.len() as f64 / scan_s,
        scan_s / podd_s,
        same_rate(&podd, &scan) * 100.0,
        used(&podd),
        used(&scan)
    );
}

/// Filling a cluster to the brim: the index walks past full nodes; failures are diagnosed.
fn scenario_fill(scale: usize) {
    let n_nodes = 2000 / scale;
    let mut nodes = cluster(n_nodes, 10);
    for n in &mut nodes {
        n.allocatable_cpu_millis = 8000;
        n.allocatable_memory = 32 * GI;
        n.taints.clear();
    }
    // Capacity: 16 pods of 500m per node; ask for 5% more than fits.
    let total = n_nodes * 16 * 105 / 100;
    let mut rng = Rng(11);
    let pods: Vec<PodInfo> = (0..total)
        .map(|i| PodInfo {
            key: format!("default/fill-{i}"),
            cpu_millis: 500,
            memory: [256 * MI, 512 * MI, GI, 3 * GI][rng.below(4) as usize],
            spread_group: Some(format!("rs-{}", i % 97)),
            ..Default::default()
        })
        .collect();
    println!(
        "\n== 1c. filling {} nodes to the brim: {} pods, 5% more than fit ==",
        n_nodes, total
    );
    let (podd, podd_s, _) = run_podd(SchedulerConfig::default(), &nodes, &pods);
    let (scan, scan_s, _) = run_podd(
        SchedulerConfig {
            use_index: false,
            ..Default::default()
        },
        &nodes,
        &pods,
    );
    let placed = podd.iter().flatten().count();
    println!(
        "  podd index {:>8.0} pods/s, full scan {:>8.0} pods/s ({:.1}x); placed {} (scan {}), identical {:.2}%",
        total as f64 / podd_s,
        total as f64 / scan_s,
        scan_s / podd_s,
        placed,
        scan.iter().flatten().count(),
        same_rate(&podd, &scan) * 100.0
    );
}

fn scenario_daemonset(scale: usize) {
    let n_nodes = 15_000 / scale;
    let nodes = cluster(n_nodes, 3);
    println!(
        "\n== 2. {n_nodes} nodes, DaemonSet-like: one pod pinned to each node (hostname selector, tolerates not-ready) =="
    );
    let pods: Vec<PodInfo> = nodes
        .iter()
        .map(|n| {
            let mut p = PodInfo {
                key: format!("kube-system/agent-{}", n.name),
                cpu_millis: 100,
                memory: 64 * MI,
                spread_group: Some("ds-agent".into()),
                ..Default::default()
            };
            p.node_selector
                .insert("kubernetes.io/hostname".into(), n.name.clone());
            p.tolerations = vec![
                Toleration {
                    key: Some(NOT_READY_TAINT.into()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                },
                Toleration {
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                },
            ];
            p
        })
        .collect();
    let cfg = SchedulerConfig::default();
    let (podd, podd_s, bytes) = run_podd(cfg.clone(), &nodes, &pods);
    let prefix = (pods.len() / 15).max(1);
    let (naive, naive_s) = run_naive(cfg, &nodes, &pods[..prefix], 100);
    let ok = podd.iter().enumerate().all(|(i, p)| *p == Some(i));
    let naive_ok = naive.iter().enumerate().all(|(i, p)| *p == Some(i));
    let (pr, nr) = (pods.len() as f64 / podd_s, prefix as f64 / naive_s);
    println!(
        "  podd                              {pr:>10.0} pods/s  ({podd_s:.3} s, every pod on its node: {ok})"
    );
    println!(
        "  naive full scan                   {nr:>10.0} pods/s  (first {prefix} pods; correct: {naive_ok})"
    );
    println!(
        "  ratio: {:.0}x; memory {:.1} MiB",
        pr / nr,
        bytes as f64 / MI as f64
    );
}

fn scenario_growth(scale: usize) {
    println!(
        "\n== 3. cost of one placement as the cluster grows (clusters prefilled to ~50% CPU) =="
    );
    println!(
        "  {:>7}  {:>14}  {:>14}  {:>14}  {:>9}  {:>8}",
        "nodes", "podd index", "podd scan", "naive scan", "naive/idx", "states"
    );
    for n_nodes in [500, 5000, 50_000] {
        let n_nodes = (n_nodes / scale).max(50);
        let nodes = cluster(n_nodes, 4);
        // Prefill: bound pods (as read from the store at start-up), random nodes.
        let mut rng = Rng(5);
        let filler = workload(n_nodes / 10, 80, 6);
        let mut prefill: Vec<(PodInfo, usize)> = Vec::new();
        let mut used = vec![0u64; n_nodes];
        for p in filler {
            let i = rng.below(n_nodes as u64) as usize;
            if (used[i] + p.cpu_millis) * 2 <= nodes[i].allocatable_cpu_millis
                && nodes[i].taints.is_empty()
            {
                used[i] += p.cpu_millis;
                prefill.push((p, i));
            }
        }
        let measured = workload(20, 100, 7);
        let runs = if n_nodes >= 50_000 / scale { 200 } else { 1000 }.min(measured.len());
        let mut podd = Scheduler::new(SchedulerConfig::default());
        let mut scan = Scheduler::new(SchedulerConfig {
            use_index: false,
            ..Default::default()
        });
        let mut naive = Naive::new(SchedulerConfig::default(), &nodes, 100);
        for n in &nodes {
            podd.upsert_node(n.clone());
            scan.upsert_node(n.clone());
        }
        for (p, i) in &prefill {
            podd.assume_bound(p, &nodes[*i].name);
            scan.assume_bound(p, &nodes[*i].name);
            naive.bind(p, *i);
        }
        // Warm up: build the index of every constraint class the measured pods use (once per
        // class in a scheduler's life), without placing anything.
        for (i, p) in measured.iter().enumerate() {
            let warm = PodInfo {
                key: format!("default/warm-{i}"),
                cpu_millis: 1,
                memory: 1,
                ..p.clone()
            };
            podd.schedule(&warm).ok();
            podd.forget_pod(&warm.key);
        }
        let time = |f: &mut dyn FnMut(&PodInfo), pods: &[PodInfo]| {
            let t = Timer::start();
            for p in pods {
                f(p);
            }
            t.secs() / pods.len() as f64
        };
        let t_idx = time(&mut |p| drop(black_box(podd.schedule(p))), &measured);
        let t_scan = time(
            &mut |p| drop(black_box(scan.schedule(p))),
            &measured[..runs],
        );
        let t_naive = time(&mut |p| _ = black_box(naive.schedule(p)), &measured[..runs]);
        println!(
            "  {:>7}  {:>11.2} µs  {:>11.2} µs  {:>11.2} µs  {:>8.0}x  {:>8}",
            n_nodes,
            t_idx * 1e6,
            t_scan * 1e6,
            t_naive * 1e6,
            t_naive / t_idx,
            podd.indexed_groups()
        );
    }
    println!("  (states: distinct node states the index holds, over all constraint classes)");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    if std::env::args().any(|a| a == "--profile") {
        // Only podd's index on scenario 1, for `perf record`.
        let (_, secs, _) = run_podd(
            SchedulerConfig::default(),
            &cluster(5000, 1),
            &workload(500, 100, 2),
        );
        println!("{:.0} pods/s", 50_000.0 / secs);
        return;
    }
    println!(
        "podd scheduler benchmark{} (one thread; times are this thread's CPU time)",
        if quick { " (--quick: sizes / 10)" } else { "" }
    );
    scenario_throughput(scale);
    scenario_bin_packing(scale);
    scenario_fill(scale);
    scenario_daemonset(scale);
    scenario_growth(scale);
}

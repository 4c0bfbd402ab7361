//! Property tests: random clusters and operation sequences, checked against an independent
//! model written here from the public filter and score functions.
//!
//! - no placement over-commits a node on cpu, memory, pods or host ports;
//! - every placement passes every filter (taints, selector, affinity, readiness, cordon);
//! - the chosen node is the best by score then tie key (a full scan), and the index path and
//!   the scan path agree on every answer;
//! - the scheduler's own accounting equals the model's.

mod common;

use common::*;
use podd_api::k8s_openapi::api::core::v1::PreferredSchedulingTerm;
use podd_api::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};
use podd_scheduler::reference::{fits, ports_free, static_check};
use podd_scheduler::{
    NodeInfo, NodeUsage, PodInfo, ResourceStrategy, Scheduler, SchedulerConfig, ZONE_LABEL,
    score_node, tie_key,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    Upsert { node: u8, variant: u8 },
    Remove { node: u8 },
    Schedule { pod: PodSpec },
    Forget { pick: u16 },
}

#[derive(Debug, Clone)]
struct PodSpec {
    cpu: u64,
    mem: u64,
    port: Option<u16>,
    selector: bool,
    affinity: bool,
    preferred: bool,
    tolerate: bool,
    group: Option<u8>,
}

const SHAPES: [(u64, u64, u32); 3] = [(2000, 4 * GI, 4), (4000, 8 * GI, 6), (1000, 8 * GI, 3)];

fn node_info(idx: u8, variant: u8) -> NodeInfo {
    let (cpu, mem, max) = SHAPES[idx as usize % SHAPES.len()];
    let mut n = node(&format!("n{idx}"), cpu, mem);
    n.max_pods = max;
    match variant % 4 {
        0 => {}
        1 => {
            n.labels.insert("disk".into(), "ssd".into());
        }
        2 => n.taints = vec![taint("dedicated", "x", "NoSchedule")],
        _ => n.taints = vec![taint("soft", "", "PreferNoSchedule")],
    }
    match variant / 4 % 4 {
        0 | 1 => {
            n.labels
                .insert(ZONE_LABEL.into(), ["a", "b", "c"][idx as usize % 3].into());
        }
        2 => n.ready = false,
        _ => n.unschedulable = true,
    }
    n
}

fn pod_info(key: &str, s: &PodSpec) -> PodInfo {
    let mut p = pod(key, s.cpu, s.mem);
    p.host_ports = s.port.into_iter().collect();
    if s.selector {
        p.node_selector.insert("disk".into(), "ssd".into());
    }
    if s.affinity {
        p.required_affinity = Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: ZONE_LABEL.into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                }]),
                match_fields: None,
            }],
        });
    }
    if s.preferred {
        let term = |key: &str, value: &str, weight: i32| PreferredSchedulingTerm {
            weight,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.into(),
                    operator: "In".into(),
                    values: Some(vec![value.into()]),
                }]),
                match_fields: None,
            },
        };
        p.preferred_affinity = vec![term("disk", "ssd", 60), term(ZONE_LABEL, "c", 30)];
    }
    if s.tolerate {
        p.tolerations = vec![toleration("dedicated", "x")];
    }
    p.spread_group = s.group.map(|g| format!("g{g}"));
    p
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let pod = (
        prop::sample::select(vec![0u64, 100, 250, 500, 1000, 1500]),
        prop::sample::select(vec![0u64, 256 << 20, GI, 3 * GI]),
        prop::option::weighted(0.2, prop::sample::select(vec![80u16, 81])),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.6, 0u8..3),
    )
        .prop_map(
            |(cpu, mem, port, selector, affinity, preferred, tolerate, group)| PodSpec {
                cpu,
                mem,
                port,
                selector,
                affinity,
                preferred,
                tolerate,
                group,
            },
        );
    prop_oneof![
        2 => (0u8..10, 0u8..16).prop_map(|(node, variant)| Op::Upsert { node, variant }),
        1 => (0u8..10).prop_map(|node| Op::Remove { node }),
        8 => pod.prop_map(|pod| Op::Schedule { pod }),
        2 => any::<u16>().prop_map(|pick| Op::Forget { pick }),
    ]
}

fn config_strategy() -> impl Strategy<Value = SchedulerConfig> {
    (
        any::<bool>(),
        any::<bool>(),
        0i64..3,
        0i64..3,
        0i64..4,
        0i64..4,
        any::<u64>(),
    )
        .prop_map(|(most, hard, wr, wb, wn, wz, seed)| SchedulerConfig {
            strategy: if most {
                ResourceStrategy::MostAllocated
            } else {
                ResourceStrategy::LeastAllocated
            },
            zone_spread_hard: hard,
            resource_weight: wr,
            balanced_weight: wb,
            node_spread_weight: wn,
            zone_spread_weight: wz,
            seed,
            ..Default::default()
        })
}

/// Cases per property: `PROPTEST_CASES` when set (for long soak runs), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The cluster as the test sees it.
#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, NodeInfo>,
    /// pod key -> (pod, node)
    pods: BTreeMap<String, (PodInfo, String)>,
}

impl Model {
    fn usage(&self, name: &str) -> NodeUsage {
        let n = &self.nodes[name];
        let mut u = NodeUsage {
            alloc_cpu: n.allocatable_cpu_millis,
            alloc_mem: n.allocatable_memory,
            max_pods: n.max_pods,
            ..Default::default()
        };
        for (p, node) in self.pods.values() {
            if node == name {
                u.req_cpu += p.cpu_millis;
                u.req_mem += p.memory;
                u.pods += 1;
            }
        }
        u
    }

    fn ports(&self, name: &str) -> Vec<(u16, u32)> {
        let mut m: BTreeMap<u16, u32> = BTreeMap::new();
        for (p, node) in self.pods.values() {
            if node == name {
                for port in &p.host_ports {
                    *m.entry(*port).or_insert(0) += 1;
                }
            }
        }
        m.into_iter().collect()
    }

    fn zone(&self, name: &str) -> Option<&String> {
        self.nodes[name].labels.get(ZONE_LABEL)
    }

    fn replicas(&self, group: &Option<String>, on: impl Fn(&str) -> bool) -> u32 {
        let Some(g) = group else { return 0 };
        self.pods
            .values()
            .filter(|(p, n)| {
                p.spread_group.as_ref() == Some(g) && self.nodes.contains_key(n) && on(n)
            })
            .count() as u32
    }

    /// The reference: filter every node, score every node, take the best (score, then tie key).
    fn best(&self, cfg: &SchedulerConfig, pod: &PodInfo) -> Option<String> {
        let statics: Vec<(&String, u32)> = self
            .nodes
            .iter()
            .filter_map(|(name, n)| static_check(n, pod).ok().map(|p| (name, p)))
            .collect();
        let hard = cfg.zone_spread_hard && pod.spread_group.is_some();
        let eligible: BTreeSet<&String> =
            statics.iter().filter_map(|(n, _)| self.zone(n)).collect();
        let zone_count = |z: &String| self.replicas(&pod.spread_group, |n| self.zone(n) == Some(z));
        let min_zone = eligible.iter().map(|z| zone_count(z)).min().unwrap_or(0);
        let mut best: Option<(i64, u64, &String)> = None;
        for (name, prefer) in statics {
            let u = self.usage(name);
            if !fits(&u, pod.cpu_millis, pod.memory)
                || !ports_free(&self.ports(name), &pod.host_ports)
            {
                continue;
            }
            let zc = match self.zone(name) {
                Some(z) => zone_count(z),
                None => self.replicas(&pod.spread_group, |n| self.zone(n).is_none()),
            };
            if hard && (self.zone(name).is_none() || zc + 1 > min_zone + cfg.zone_max_skew) {
                continue;
            }
            let nc = self.replicas(&pod.spread_group, |n| n == name.as_str());
            let score = score_node(cfg, &u, pod.cpu_millis, pod.memory, nc, zc, prefer);
            let tie = tie_key(cfg.seed, &pod.key, name);
            let better = match best {
                None => true,
                Some((s, t, _)) => score > s || (score == s && tie < t),
            };
            if better {
                best = Some((score, tie, name));
            }
        }
        best.map(|b| b.2.clone())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    #[test]
    fn placements_respect_filters_never_overcommit_and_equal_a_full_scan(
        cfg in config_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..120),
    ) {
        let mut indexed = Scheduler::new(cfg.clone());
        let mut scanned = Scheduler::new(SchedulerConfig { use_index: false, ..cfg.clone() });
        let mut model = Model::default();
        let mut next = 0usize;
        for op in ops {
            match op {
                Op::Upsert { node, variant } => {
                    let info = node_info(node, variant);
                    indexed.upsert_node(info.clone());
                    scanned.upsert_node(info.clone());
                    model.nodes.insert(info.name.clone(), info);
                }
                Op::Remove { node } => {
                    let name = format!("n{node}");
                    indexed.remove_node(&name);
                    scanned.remove_node(&name);
                    model.nodes.remove(&name);
                    // Pods on a removed node stay known (and count again if it returns).
                }
                Op::Forget { pick } => {
                    if model.pods.is_empty() { continue; }
                    let key = model.pods.keys().nth(pick as usize % model.pods.len()).unwrap().clone();
                    indexed.forget_pod(&key);
                    scanned.forget_pod(&key);
                    model.pods.remove(&key);
                }
                Op::Schedule { pod: spec } => {
                    next += 1;
                    let pod = pod_info(&format!("default/p{next}"), &spec);
                    let expected = model.best(&cfg, &pod);
                    let a = indexed.schedule(&pod);
                    let b = scanned.schedule(&pod);
                    prop_assert_eq!(&a, &b, "index and scan disagree");
                    match a {
                        Ok(node) => {
                            prop_assert_eq!(Some(&node), expected.as_ref(), "not the full-scan best");
                            let info = &model.nodes[&node];
                            prop_assert!(static_check(info, &pod).is_ok());
                            let u = model.usage(&node);
                            prop_assert!(fits(&u, pod.cpu_millis, pod.memory));
                            prop_assert!(ports_free(&model.ports(&node), &pod.host_ports));
                            model.pods.insert(pod.key.clone(), (pod, node));
                        }
                        Err(e) => {
                            prop_assert_eq!(expected, None, "a node was available: {}", e.message);
                            prop_assert!(e.message.starts_with(&format!("0/{} nodes are available", model.nodes.len()))
                                || (model.nodes.is_empty() && e.message == "no nodes available to schedule pods"),
                                "{}", e.message);
                        }
                    }
                }
            }
            // Accounting equals the model, and nothing is over-committed.
            for name in model.nodes.keys() {
                let u = model.usage(name);
                prop_assert_eq!(indexed.node_usage(name), Some(u));
                prop_assert_eq!(scanned.node_usage(name), Some(u));
                prop_assert!(u.req_cpu <= u.alloc_cpu && u.req_mem <= u.alloc_mem && u.pods <= u.max_pods,
                    "over-committed {}: {:?}", name, u);
                prop_assert!(model.ports(name).iter().all(|(_, n)| *n == 1), "host port clash on {}", name);
            }
            prop_assert_eq!(indexed.cluster_generation(), scanned.cluster_generation());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    /// Preemption plans evict only lower-priority pods, and after they are gone the pod is
    /// schedulable.
    #[test]
    fn preemption_plans_make_room_with_lower_priority_victims(
        fill in prop::collection::vec((prop::sample::select(vec![250u64, 500, 1000, 2000]), -5i32..5, 0u8..6, prop::option::of(80u16..82)), 1..60),
        want_cpu in prop::sample::select(vec![250u64, 1000, 2000, 4000]),
        want_port in prop::option::of(80u16..82),
        prio in -5i32..10,
    ) {
        let mut s = Scheduler::new(SchedulerConfig::default());
        for i in 0..6u8 {
            s.upsert_node(node_info(i, 0));
        }
        let mut prios = BTreeMap::new();
        for (k, (cpu, p, at, port)) in fill.iter().enumerate() {
            let mut pod = pod(&format!("default/f{k}"), *cpu, 0);
            pod.priority = *p;
            pod.host_ports = port.iter().copied().collect();
            // Bind as the store says, even where it would not fit: preemption must cope.
            s.assume_bound(&pod, &format!("n{at}"));
            prios.insert(pod.key.clone(), *p);
        }
        let mut want = pod("default/want", want_cpu, 0);
        want.priority = prio;
        want.host_ports = want_port.iter().copied().collect();
        if s.clone().schedule(&want).is_ok() {
            return Ok(());
        }
        // Some node has room once every lower-priority pod is gone <=> there is a plan.
        let possible = (0..6u8).any(|i| {
            let info = node_info(i, 0);
            let kept: Vec<_> = fill.iter().filter(|f| f.2 == i && f.1 >= prio).collect();
            let cpu: u64 = kept.iter().map(|f| f.0).sum();
            let ports_clash = want_port.is_some() && kept.iter().any(|f| f.3 == want_port);
            cpu + want_cpu <= info.allocatable_cpu_millis
                && (kept.len() as u32) < info.max_pods
                && !ports_clash
        });
        let plan = s.plan_preemption(&want);
        prop_assert_eq!(plan.is_some(), possible);
        if let Some(plan) = plan {
            prop_assert!(!plan.victims.is_empty());
            for v in &plan.victims {
                prop_assert!(prios[v] < prio, "victim {} has priority {} >= {}", v, prios[v], prio);
                prop_assert_eq!(s.pod_node(v), Some(plan.node.as_str()));
                s.forget_pod(v);
            }
            // Only the planned node gained room, so that is where the pod now lands.
            prop_assert_eq!(s.schedule(&want).ok(), Some(plan.node.clone()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(8), ..ProptestConfig::default() })]

    /// Large partitions (many nodes of one size and zone, in many distinct states): the index's
    /// threshold walk must still find exactly the full-scan node.
    #[test]
    fn index_equals_full_scan_on_large_partitions(
        cfg in config_strategy(),
        pods in prop::collection::vec((
            prop::sample::select(vec![0u64, 50, 100, 300, 700, 1200]),
            prop::sample::select(vec![0u64, 64 << 20, 512 << 20, GI, 2 * GI]),
            prop::option::weighted(0.5, 0u8..4),
            prop::bool::weighted(0.1),
        ), 50..300),
    ) {
        let mut indexed = Scheduler::new(cfg.clone());
        let mut scanned = Scheduler::new(SchedulerConfig { use_index: false, ..cfg.clone() });
        let mut model = Model::default();
        for i in 0..60 {
            let mut n = node(&format!("n{i}"), if i % 2 == 0 { 4000 } else { 8000 }, 16 * GI);
            n.max_pods = 20;
            n.labels.insert(ZONE_LABEL.into(), (if i < 40 { "a" } else { "b" }).into());
            indexed.upsert_node(n.clone());
            scanned.upsert_node(n.clone());
            model.nodes.insert(n.name.clone(), n);
        }
        for (k, (cpu, mem, group, forget)) in pods.into_iter().enumerate() {
            if forget && !model.pods.is_empty() {
                let key = model.pods.keys().nth(k % model.pods.len()).unwrap().clone();
                indexed.forget_pod(&key);
                scanned.forget_pod(&key);
                model.pods.remove(&key);
                continue;
            }
            let mut p = pod(&format!("default/p{k}"), cpu, mem);
            p.spread_group = group.map(|g| format!("g{g}"));
            let expected = model.best(&cfg, &p);
            let a = indexed.schedule(&p).ok();
            let b = scanned.schedule(&p).ok();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &expected);
            if let Some(n) = a {
                model.pods.insert(p.key.clone(), (p, n));
            }
        }
    }
}

//! The scheduler's inputs and outputs: configuration, the node and pod views it places with,
//! and the "unschedulable" answer.

use podd_api::k8s_openapi::api::core::v1::PreferredSchedulingTerm;
use podd_api::quantity::{Cpu, Memory};
use podd_api::resources::{node_is_ready, pod_requests_of};
use podd_api::{Node, NodeSelector, Pod, Quantity, ResourceExt, Taint, Toleration};
use std::collections::BTreeMap;

/// The label Kubernetes puts on every node with the node's name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The default topology label for zone spreading.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The taint Kubernetes puts on nodes that are not Ready (TaintNodesByCondition).
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The taint that stands for `spec.unschedulable` (a pod tolerating it may still land there).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// Kubelet's default pod limit, used when a node reports none.
pub const DEFAULT_MAX_PODS: u32 = 110;
/// The label the Deployment controller puts on a ReplicaSet's pods (with the template's hash).
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Kubernetes' built-in priority classes, which exist without a PriorityClass object.
pub const SYSTEM_PRIORITY_CLASSES: [(&str, i32); 2] = [
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

/// How the resource score ranks nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResourceStrategy {
    /// Prefer the emptiest node (Kubernetes' default `LeastAllocated`): spreads load.
    #[default]
    LeastAllocated,
    /// Prefer the fullest node that still fits (`MostAllocated`): bin packing.
    MostAllocated,
}

/// Weights and knobs. Every score is an integer; see `score.rs` for the exact formula.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub strategy: ResourceStrategy,
    /// Weight of the least/most-allocated score (Kubernetes: NodeResourcesFit, weight 1).
    pub resource_weight: i64,
    /// Weight of the balanced CPU/memory score (Kubernetes: NodeResourcesBalancedAllocation, 1).
    pub balanced_weight: i64,
    /// Penalty weight per replica of the same spread group already on the node.
    pub node_spread_weight: i64,
    /// Penalty weight per replica of the same spread group already in the node's zone.
    pub zone_spread_weight: i64,
    /// Penalty weight per untolerated `PreferNoSchedule` taint.
    pub prefer_no_schedule_weight: i64,
    /// Bonus weight of preferred node affinity, per 100 of summed weight of the matching
    /// `preferredDuringSchedulingIgnoredDuringExecution` terms (Kubernetes: NodeAffinity,
    /// weight 2; its scores are not normalised across nodes here, so that they stay static).
    pub preferred_affinity_weight: i64,
    /// The node label whose values are the spreading domains (zones).
    pub topology_key: String,
    /// Max skew between the fullest and emptiest eligible zone for one spread group.
    pub zone_max_skew: u32,
    /// `true`: the max skew is a filter (Kubernetes' `DoNotSchedule`); `false`: spreading is
    /// only a score (`ScheduleAnyway`, the default, as in Kubernetes' default constraints).
    pub zone_spread_hard: bool,
    /// Seed of the tie-breaking hash: equal-score nodes are ordered by
    /// `hash(seed, pod key) XOR hash(seed, node name)`.
    pub seed: u64,
    /// Use the incremental score index (exact, sub-linear). `false` scans every node; the
    /// placements are identical, only slower. Kept for tests and benchmarks.
    pub use_index: bool,
    /// Score only this percentage of the feasible nodes, as Kubernetes'
    /// `percentageOfNodesToScore` (100 = all, the default; the index is exact and needs no
    /// sampling). Below 100 the scan path is used, starting at a rotating offset.
    pub percentage_of_nodes_to_score: u8,
    /// How many pod-constraint classes keep a live index (least recently used are dropped).
    pub max_indexed_classes: usize,
    /// A pod whose nodeSelector/affinity narrows the candidates (from the label index) to at
    /// most this many nodes scans just those instead of using an index (e.g. DaemonSet pods
    /// pinned by hostname). `None`: max(64, nodes / 16).
    pub candidate_scan_max: Option<usize>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            strategy: ResourceStrategy::LeastAllocated,
            resource_weight: 1,
            balanced_weight: 1,
            node_spread_weight: 2,
            zone_spread_weight: 2,
            prefer_no_schedule_weight: 1,
            preferred_affinity_weight: 2,
            topology_key: ZONE_LABEL.to_string(),
            zone_max_skew: 1,
            zone_spread_hard: false,
            seed: 0x5eed_0f70_dd00,
            use_index: true,
            percentage_of_nodes_to_score: 100,
            max_indexed_classes: 64,
            candidate_scan_max: None,
        }
    }
}

/// What the scheduler knows about a node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeInfo {
    pub name: String,
    pub allocatable_cpu_millis: u64,
    pub allocatable_memory: u64,
    pub max_pods: u32,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub ready: bool,
    pub unschedulable: bool,
}

impl NodeInfo {
    /// Reads a Node object: allocatable (or capacity when allocatable is unset or zero),
    /// labels plus `kubernetes.io/hostname` when missing, taints, Ready and
    /// `spec.unschedulable`. Unparseable quantities count as unset.
    pub fn from_node(node: &Node) -> NodeInfo {
        let status = node.status.as_ref();
        let alloc = status.and_then(|s| s.allocatable.as_ref());
        let cap = status.and_then(|s| s.capacity.as_ref());
        // Allocatable, or capacity when allocatable does not say (or says zero).
        let read = |name: &str, parse: fn(&Quantity) -> Option<u64>| -> u64 {
            let of = |list: Option<&BTreeMap<String, Quantity>>| {
                list.and_then(|l| l.get(name)).and_then(parse).unwrap_or(0)
            };
            match of(alloc) {
                0 => of(cap),
                a => a,
            }
        };
        let cpu = read("cpu", |q| Cpu::try_from(q).ok().map(|c| c.0));
        let memory = read("memory", |q| Memory::try_from(q).ok().map(|m| m.0));
        let pods = read("pods", |q| q.0.trim().parse::<u64>().ok());
        let name = node.name_any();
        let mut labels = node.labels().clone();
        labels
            .entry(HOSTNAME_LABEL.to_string())
            .or_insert_with(|| name.clone());
        let spec = node.spec.as_ref();
        NodeInfo {
            name,
            allocatable_cpu_millis: cpu,
            allocatable_memory: memory,
            max_pods: if pods == 0 {
                DEFAULT_MAX_PODS
            } else {
                u32::try_from(pods).unwrap_or(u32::MAX)
            },
            labels,
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            ready: node_is_ready(node),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        }
    }
}

/// What the scheduler needs of a pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodInfo {
    /// "namespace/name".
    pub key: String,
    pub cpu_millis: u64,
    pub memory: u64,
    /// Host ports; a port clashes with the same number on the node whatever the protocol
    /// (stricter than Kubernetes, which keys by protocol and host IP).
    pub host_ports: Vec<u16>,
    pub node_selector: BTreeMap<String, String>,
    pub required_affinity: Option<NodeSelector>,
    /// Preferred node affinity: each matching term adds its weight to the node's score.
    pub preferred_affinity: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
    /// Pods of one group are spread across nodes and zones (e.g. the owning ReplicaSet's uid).
    pub spread_group: Option<String>,
    pub priority: i32,
}

impl PodInfo {
    /// Reads a Pod: requests as Kubernetes counts them (`resources::pod_requests`), host
    /// ports of all containers, selector, required node affinity, tolerations, priority, and
    /// the spread group (see [`spread_group`]).
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let (cpu, mem) = pod_requests_of(pod);
        let ns = pod.namespace().unwrap_or_else(|| "default".to_string());
        let ns = if ns.is_empty() {
            "default".to_string()
        } else {
            ns
        };
        let spec = pod.spec.as_ref();
        let node_affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref());
        let mut host_ports: Vec<u16> = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| p.host_port)
            .filter_map(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .collect();
        host_ports.sort_unstable();
        host_ports.dedup();
        PodInfo {
            key: format!("{ns}/{}", pod.name_any()),
            cpu_millis: cpu.0,
            memory: mem.0,
            host_ports,
            node_selector: spec
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default(),
            required_affinity: node_affinity.and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .clone()
            }),
            preferred_affinity: node_affinity
                .and_then(|na| {
                    na.preferred_during_scheduling_ignored_during_execution
                        .clone()
                })
                .unwrap_or_default(),
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            spread_group: spread_group(pod, &ns),
            priority: pod_priority(pod),
        }
    }

    /// No selector, affinity or tolerations: every ready, untainted node is a candidate.
    pub(crate) fn unconstrained(&self) -> bool {
        self.node_selector.is_empty()
            && self.required_affinity.is_none()
            && self.preferred_affinity.is_empty()
            && self.tolerations.is_empty()
    }
}

/// The group a pod's replicas spread in: the uid of its controller (the owning ReplicaSet,
/// as Deployments own pods through ReplicaSets), or else, for a pod whose controller
/// reference is gone (orphaned), its namespace and `pod-template-hash` label, which name the
/// same ReplicaSet's pods. `None` for standalone pods.
pub fn spread_group(pod: &Pod, namespace: &str) -> Option<String> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
        .filter(|u| !u.is_empty());
    owner.or_else(|| {
        pod.labels()
            .get(POD_TEMPLATE_HASH_LABEL)
            .filter(|h| !h.is_empty())
            .map(|h| format!("{namespace}/{POD_TEMPLATE_HASH_LABEL}={h}"))
    })
}

/// The pod's priority: `spec.priority` (which admission resolves from `priorityClassName`),
/// else the value of Kubernetes' built-in `system-*` classes, else 0.
pub fn pod_priority(pod: &Pod) -> i32 {
    let spec = pod.spec.as_ref();
    if let Some(p) = spec.and_then(|s| s.priority) {
        return p;
    }
    let class = spec.and_then(|s| s.priority_class_name.as_deref());
    SYSTEM_PRIORITY_CLASSES
        .iter()
        .find(|(name, _)| Some(*name) == class)
        .map_or(0, |(_, v)| *v)
}

/// What to evict so that a pod that fits nowhere can run: see `Scheduler::plan_preemption`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    /// The node the pod will fit on once the victims are gone.
    pub node: String,
    /// Keys ("ns/name") of the lower-priority pods to delete.
    pub victims: Vec<String>,
}

/// A pod no node can take, with Kubernetes' message and the per-reason node counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unschedulable {
    /// e.g. "0/5 nodes are available: 2 node(s) had untolerated taint {gpu: }, 3 Insufficient cpu."
    pub message: String,
    pub nodes_total: usize,
    /// Reason -> how many nodes failed with it (a node may count under several resource reasons).
    pub reasons: BTreeMap<String, usize>,
    /// The cluster generation this answer was computed at: retry once `cluster_generation()`
    /// differs from it, not before.
    pub generation: u64,
}

impl Unschedulable {
    pub(crate) fn new(
        nodes_total: usize,
        reasons: BTreeMap<String, usize>,
        generation: u64,
    ) -> Self {
        let message = if nodes_total == 0 {
            "no nodes available to schedule pods".to_string()
        } else {
            // Kubernetes (FitError.Error): "count reason" strings, sorted, comma-joined.
            let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            parts.sort();
            if parts.is_empty() {
                format!("0/{nodes_total} nodes are available.")
            } else {
                format!("0/{nodes_total} nodes are available: {}.", parts.join(", "))
            }
        };
        Unschedulable {
            message,
            nodes_total,
            reasons,
            generation,
        }
    }
}

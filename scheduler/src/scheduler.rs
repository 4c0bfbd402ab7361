//! The scheduler: an incremental node table, the bound pods, spread-group counts, and the
//! three placement paths (score index, small candidate set, full scan), which all pick the
//! same node.

use crate::filters::{
    REASON_PORTS, REASON_SPREAD, REASON_SPREAD_LABEL, fits, ports_free, resource_reasons,
    static_check,
};
use crate::fxhash::FxHashMap as HashMap;
use crate::index::{Candidate, ClassIndex, Query};
use crate::model::{NodeInfo, PodInfo, Preemption, SchedulerConfig, Unschedulable};
use crate::score::{NodeUsage, penalties, score_node, stable_hash, util};
use podd_api::Toleration;
use podd_api::pod::NodeSelector;
use std::collections::BTreeMap;

/// Nodes with no value for the topology label.
const NO_ZONE: u32 = u32::MAX;

/// The node table, struct-of-arrays: the hot per-node state sits in dense vectors.
#[derive(Debug, Clone, Default)]
struct NodeTable {
    alive: Vec<bool>,
    info: Vec<NodeInfo>,
    hash: Vec<u64>,
    usage: Vec<NodeUsage>,
    zone: Vec<u32>,
    /// Host ports in use: (port, pods using it), sorted by port.
    ports: Vec<Vec<(u16, u32)>>,
    /// Ids of the pods bound to the node.
    pods: Vec<Vec<u32>>,
    free: Vec<u32>,
}

#[derive(Debug, Clone)]
struct PodRec {
    key: String,
    priority: i32,
    node: String,
    slot: Option<u32>,
    cpu: u64,
    mem: u64,
    ports: Vec<u16>,
    group: Option<u32>,
}

#[derive(Debug, Clone, Default)]
struct SpreadGroup {
    name: String,
    per_node: HashMap<u32, u32>,
    per_zone: HashMap<u32, u32>,
    members: u32,
}

/// The constraints that decide a node's static feasibility; one class index per distinct set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Constraints {
    node_selector: BTreeMap<String, String>,
    required_affinity: Option<NodeSelector>,
    tolerations: Vec<Toleration>,
}

#[derive(Debug, Clone)]
struct Class {
    hash: u64,
    constraints: Constraints,
    /// A pod carrying exactly these constraints, for `static_check`.
    probe: PodInfo,
    index: ClassIndex,
    last_used: u64,
}

/// Pod placement engine; see the crate docs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    generation: u64,
    nodes: NodeTable,
    by_name: HashMap<String, u32>,
    live_nodes: usize,
    pods: Vec<Option<PodRec>>,
    pod_free: Vec<u32>,
    pod_ids: HashMap<String, u32>,
    /// Pods bound to nodes the scheduler does not know (yet): node name -> pod ids.
    orphans: HashMap<String, Vec<u32>>,
    groups: Vec<SpreadGroup>,
    group_free: Vec<u32>,
    group_ids: HashMap<String, u32>,
    zone_ids: HashMap<String, u32>,
    /// Label key -> value -> slots.
    labels: HashMap<String, HashMap<String, Vec<u32>>>,
    classes: Vec<Class>,
    clock: u64,
    /// Per-slot stamp marking the nodes that hold replicas of the pod being placed.
    excluded: Vec<u64>,
    excluded_stamp: u64,
    sample_offset: usize,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            cfg: config,
            generation: 0,
            nodes: NodeTable::default(),
            by_name: HashMap::default(),
            live_nodes: 0,
            pods: Vec::new(),
            pod_free: Vec::new(),
            pod_ids: HashMap::default(),
            orphans: HashMap::default(),
            groups: Vec::new(),
            group_free: Vec::new(),
            group_ids: HashMap::default(),
            zone_ids: HashMap::default(),
            labels: HashMap::default(),
            classes: Vec::new(),
            clock: 0,
            excluded: Vec::new(),
            excluded_stamp: 0,
            sample_offset: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// A number that changes whenever nodes or bindings change (and only then): retry an
    /// unschedulable pod once this differs from `Unschedulable::generation`.
    pub fn cluster_generation(&self) -> u64 {
        self.generation
    }

    pub fn node_count(&self) -> usize {
        self.live_nodes
    }

    pub fn pod_count(&self) -> usize {
        self.pod_ids.len()
    }

    /// Allocatable and requested resources of a node.
    pub fn node_usage(&self, name: &str) -> Option<NodeUsage> {
        self.by_name
            .get(name)
            .map(|s| self.nodes.usage[*s as usize])
    }

    /// The node a known pod is bound to.
    pub fn pod_node(&self, pod_key: &str) -> Option<&str> {
        self.pod_ids
            .get(pod_key)
            .and_then(|id| self.pods[*id as usize].as_ref())
            .map(|p| p.node.as_str())
    }

    /// Distinct node states indexed, summed over classes (for benchmarks and docs).
    pub fn indexed_groups(&self) -> usize {
        self.classes.iter().map(|c| c.index.group_count()).sum()
    }

    // ---- nodes ----

    fn zone_id(&mut self, info: &NodeInfo) -> u32 {
        match info.labels.get(&self.cfg.topology_key) {
            None => NO_ZONE,
            Some(v) => {
                let next = self.zone_ids.len() as u32;
                *self.zone_ids.entry(v.clone()).or_insert(next)
            }
        }
    }

    /// Adds or updates a node; nothing is rebuilt, only this node's entries move.
    pub fn upsert_node(&mut self, node: NodeInfo) {
        let zone = self.zone_id(&node);
        if let Some(&slot) = self.by_name.get(&node.name) {
            let i = slot as usize;
            if self.nodes.info[i] == node {
                return;
            }
            self.generation += 1;
            let old = std::mem::replace(&mut self.nodes.info[i], node);
            self.unindex_labels(slot, &old.labels);
            self.index_labels(slot);
            let u = &mut self.nodes.usage[i];
            u.alloc_cpu = self.nodes.info[i].allocatable_cpu_millis;
            u.alloc_mem = self.nodes.info[i].allocatable_memory;
            u.max_pods = self.nodes.info[i].max_pods;
            let old_zone = self.nodes.zone[i];
            if old_zone != zone {
                for id in self.nodes.pods[i].clone() {
                    if let Some(g) = self.pods[id as usize].as_ref().and_then(|p| p.group) {
                        let grp = &mut self.groups[g as usize];
                        dec(&mut grp.per_zone, old_zone);
                        *grp.per_zone.entry(zone).or_insert(0) += 1;
                    }
                }
                self.nodes.zone[i] = zone;
            }
            self.refresh_classes(slot, true);
            return;
        }
        self.generation += 1;
        let usage = NodeUsage {
            alloc_cpu: node.allocatable_cpu_millis,
            alloc_mem: node.allocatable_memory,
            max_pods: node.max_pods,
            ..Default::default()
        };
        let hash = stable_hash(self.cfg.seed, &node.name);
        let name = node.name.clone();
        let t = &mut self.nodes;
        let slot = match t.free.pop() {
            Some(s) => {
                let i = s as usize;
                t.alive[i] = true;
                t.info[i] = node;
                t.hash[i] = hash;
                t.usage[i] = usage;
                t.zone[i] = zone;
                t.ports[i].clear();
                t.pods[i].clear();
                s
            }
            None => {
                t.alive.push(true);
                t.info.push(node);
                t.hash.push(hash);
                t.usage.push(usage);
                t.zone.push(zone);
                t.ports.push(Vec::new());
                t.pods.push(Vec::new());
                (t.alive.len() - 1) as u32
            }
        };
        self.live_nodes += 1;
        self.by_name.insert(name.clone(), slot);
        self.index_labels(slot);
        if let Some(waiting) = self.orphans.remove(&name) {
            for id in waiting {
                self.account(id, slot);
            }
        }
        self.refresh_classes(slot, true);
    }

    /// Removes a node. Pods bound to it stay known and count again if it comes back.
    pub fn remove_node(&mut self, name: &str) {
        let Some(slot) = self.by_name.remove(name) else {
            return;
        };
        self.generation += 1;
        let i = slot as usize;
        for id in std::mem::take(&mut self.nodes.pods[i]) {
            self.unaccount_groups(id, slot);
            if let Some(p) = self.pods[id as usize].as_mut() {
                p.slot = None;
            }
            self.orphans.entry(name.to_string()).or_default().push(id);
        }
        let labels = std::mem::take(&mut self.nodes.info[i].labels);
        self.unindex_labels(slot, &labels);
        self.nodes.alive[i] = false;
        self.nodes.usage[i] = NodeUsage::default();
        self.nodes.ports[i].clear();
        self.nodes.free.push(slot);
        self.live_nodes -= 1;
        self.refresh_classes(slot, true);
    }

    fn index_labels(&mut self, slot: u32) {
        let info = &self.nodes.info[slot as usize];
        for (k, v) in &info.labels {
            self.labels
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(slot);
        }
    }

    fn unindex_labels(&mut self, slot: u32, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            if let Some(vals) = self.labels.get_mut(k) {
                if let Some(slots) = vals.get_mut(v) {
                    slots.retain(|s| *s != slot);
                    if slots.is_empty() {
                        vals.remove(v);
                    }
                }
                if vals.is_empty() {
                    self.labels.remove(k);
                }
            }
        }
    }

    /// Moves the node within every class index (re-running static filters if `statics`).
    fn refresh_classes(&mut self, slot: u32, statics: bool) {
        let i = slot as usize;
        let alive = self.nodes.alive[i];
        for class in &mut self.classes {
            let prefer = if !alive {
                None
            } else if statics {
                static_check(&self.nodes.info[i], &class.probe).ok()
            } else if class.index.is_member(slot) {
                Some(class.index.prefer[i])
            } else {
                continue;
            };
            class.index.set_node(
                slot,
                self.nodes.hash[i],
                &self.nodes.usage[i],
                self.nodes.zone[i],
                prefer,
            );
        }
    }

    // ---- pods ----

    fn group_id(&mut self, name: &str) -> u32 {
        if let Some(g) = self.group_ids.get(name) {
            return *g;
        }
        let g = SpreadGroup {
            name: name.to_string(),
            ..Default::default()
        };
        let id = match self.group_free.pop() {
            Some(id) => {
                self.groups[id as usize] = g;
                id
            }
            None => {
                self.groups.push(g);
                (self.groups.len() - 1) as u32
            }
        };
        self.group_ids.insert(name.to_string(), id);
        id
    }

    /// Records a pod and accounts it on its node (or as waiting for the node).
    fn record(&mut self, pod: &PodInfo, node: &str, known_slot: Option<u32>) {
        let group = pod.spread_group.as_deref().map(|g| self.group_id(g));
        if let Some(g) = group {
            self.groups[g as usize].members += 1;
        }
        let rec = PodRec {
            key: pod.key.clone(),
            priority: pod.priority,
            node: node.to_string(),
            slot: None,
            cpu: pod.cpu_millis,
            mem: pod.memory,
            ports: pod.host_ports.clone(),
            group,
        };
        let id = match self.pod_free.pop() {
            Some(id) => {
                self.pods[id as usize] = Some(rec);
                id
            }
            None => {
                self.pods.push(Some(rec));
                (self.pods.len() - 1) as u32
            }
        };
        self.pod_ids.insert(pod.key.clone(), id);
        match known_slot.or_else(|| self.by_name.get(node).copied()) {
            Some(slot) => {
                self.account(id, slot);
                self.refresh_classes(slot, false);
            }
            None => self.orphans.entry(node.to_string()).or_default().push(id),
        }
    }

    /// Adds the pod's requests, ports and spread counts to the node (classes not refreshed).
    fn account(&mut self, id: u32, slot: u32) {
        let i = slot as usize;
        let zone = self.nodes.zone[i];
        let Some(p) = self.pods[id as usize].as_mut() else {
            return;
        };
        p.slot = Some(slot);
        let u = &mut self.nodes.usage[i];
        u.req_cpu += p.cpu;
        u.req_mem += p.mem;
        u.pods += 1;
        let ports = &mut self.nodes.ports[i];
        for port in &p.ports {
            match ports.binary_search_by_key(port, |(q, _)| *q) {
                Ok(pos) => ports[pos].1 += 1,
                Err(pos) => ports.insert(pos, (*port, 1)),
            }
        }
        self.nodes.pods[i].push(id);
        if let Some(g) = p.group {
            let grp = &mut self.groups[g as usize];
            *grp.per_node.entry(slot).or_insert(0) += 1;
            *grp.per_zone.entry(zone).or_insert(0) += 1;
        }
    }

    fn unaccount_groups(&mut self, id: u32, slot: u32) {
        let zone = self.nodes.zone[slot as usize];
        if let Some(g) = self.pods[id as usize].as_ref().and_then(|p| p.group) {
            let grp = &mut self.groups[g as usize];
            dec(&mut grp.per_node, slot);
            dec(&mut grp.per_zone, zone);
        }
    }

    /// Accounts a pod that is already bound (e.g. read from the store at start-up).
    pub fn assume_bound(&mut self, pod: &PodInfo, node: &str) {
        if let Some(&id) = self.pod_ids.get(&pod.key)
            && let Some(p) = self.pods[id as usize].as_ref()
        {
            let same_group = match (p.group, &pod.spread_group) {
                (None, None) => true,
                (Some(g), Some(name)) => self.groups[g as usize].name == *name,
                _ => false,
            };
            if p.node == node
                && p.cpu == pod.cpu_millis
                && p.mem == pod.memory
                && p.ports == pod.host_ports
                && p.priority == pod.priority
                && same_group
            {
                return;
            }
            self.forget_pod(&pod.key);
        }
        self.generation += 1;
        self.record(pod, node, None);
    }

    /// Forgets a pod (deleted or finished), freeing what it held on its node.
    pub fn forget_pod(&mut self, pod_key: &str) {
        let Some(id) = self.pod_ids.remove(pod_key) else {
            return;
        };
        self.generation += 1;
        let Some(rec) = self.pods[id as usize].take() else {
            return;
        };
        self.pod_free.push(id);
        match rec.slot {
            Some(slot) => {
                let i = slot as usize;
                let zone = self.nodes.zone[i];
                let u = &mut self.nodes.usage[i];
                u.req_cpu = u.req_cpu.saturating_sub(rec.cpu);
                u.req_mem = u.req_mem.saturating_sub(rec.mem);
                u.pods = u.pods.saturating_sub(1);
                let ports = &mut self.nodes.ports[i];
                for port in &rec.ports {
                    if let Ok(pos) = ports.binary_search_by_key(port, |(q, _)| *q) {
                        ports[pos].1 -= 1;
                        if ports[pos].1 == 0 {
                            ports.remove(pos);
                        }
                    }
                }
                self.nodes.pods[i].retain(|p| *p != id);
                if let Some(g) = rec.group {
                    let grp = &mut self.groups[g as usize];
                    dec(&mut grp.per_node, slot);
                    dec(&mut grp.per_zone, zone);
                }
                self.refresh_classes(slot, false);
            }
            None => {
                if let Some(w) = self.orphans.get_mut(&rec.node) {
                    w.retain(|p| *p != id);
                    if w.is_empty() {
                        self.orphans.remove(&rec.node);
                    }
                }
            }
        }
        if let Some(g) = rec.group {
            let grp = &mut self.groups[g as usize];
            grp.members -= 1;
            if grp.members == 0 {
                let name = std::mem::take(&mut grp.name);
                self.group_ids.remove(&name);
                self.group_free.push(g);
            }
        }
    }

    // ---- placement ----

    /// Places one pod and accounts it on the chosen node.
    pub fn schedule(&mut self, pod: &PodInfo) -> Result<String, Unschedulable> {
        if self.pod_ids.contains_key(&pod.key) {
            self.forget_pod(&pod.key);
        }
        match self.place(pod) {
            Some(slot) => {
                let name = self.nodes.info[slot as usize].name.clone();
                self.generation += 1;
                self.record(pod, &name, Some(slot));
                Ok(name)
            }
            None => Err(self.diagnose(pod)),
        }
    }

    /// Places pods in priority order (highest first, stable), each seeing the ones before it:
    /// the same placements as calling `schedule` one at a time in that order. Results are in
    /// the input order.
    pub fn schedule_batch(&mut self, pods: &[PodInfo]) -> Vec<Result<String, Unschedulable>> {
        let mut order: Vec<usize> = (0..pods.len()).collect();
        order.sort_by_key(|i| std::cmp::Reverse(pods[*i].priority));
        let mut out: Vec<Option<Result<String, Unschedulable>>> = vec![None; pods.len()];
        for i in order {
            out[i] = Some(self.schedule(&pods[i]));
        }
        out.into_iter()
            .map(|r| r.expect("every pod placed"))
            .collect()
    }

    /// The best node for the pod, without accounting it.
    fn place(&mut self, pod: &PodInfo) -> Option<u32> {
        let pod_hash = stable_hash(self.cfg.seed, &pod.key);
        let group = pod
            .spread_group
            .as_deref()
            .and_then(|g| self.group_ids.get(g).copied());
        // The index needs a non-negative balance weight (it rewrites w*|x| as max(w*x, -w*x)).
        if !self.cfg.use_index
            || self.cfg.balanced_weight < 0
            || !pod.host_ports.is_empty()
            || self.cfg.percentage_of_nodes_to_score < 100
        {
            let all: Vec<u32> = (0..self.nodes.alive.len() as u32).collect();
            return self.scan(pod, pod_hash, group, &all, true);
        }
        if let Some(cands) = self.small_candidate_set(pod) {
            return self.scan(pod, pod_hash, group, &cands, false);
        }
        self.place_indexed(pod, pod_hash, group)
    }

    /// Nodes that may pass the pod's selector/affinity, from the label index, when that set
    /// is small (e.g. a DaemonSet pod pinned to one host): scanning it beats any index.
    fn small_candidate_set(&self, pod: &PodInfo) -> Option<Vec<u32>> {
        let limit = (self.live_nodes / 16).max(64);
        let posting = |k: &str, v: &str| -> &[u32] {
            self.labels
                .get(k)
                .and_then(|m| m.get(v))
                .map(|s| s.as_slice())
                .unwrap_or(&[])
        };
        let mut best: Option<Vec<u32>> = None;
        for (k, v) in &pod.node_selector {
            let p = posting(k, v);
            if best.as_ref().is_none_or(|b| p.len() < b.len()) {
                best = Some(p.to_vec());
            }
        }
        if let Some(aff) = &pod.required_affinity {
            // Every term needs an `In` expression for the union of terms to be bounded.
            let mut union: Vec<u32> = Vec::new();
            let mut bounded = true;
            for term in &aff.node_selector_terms {
                let smallest = term
                    .match_expressions
                    .iter()
                    .filter(|r| r.operator == "In")
                    .map(|r| {
                        let mut s: Vec<u32> = r
                            .values
                            .iter()
                            .flat_map(|v| posting(&r.key, v).iter().copied())
                            .collect();
                        s.sort_unstable();
                        s.dedup();
                        s
                    })
                    .min_by_key(|s| s.len());
                match smallest {
                    Some(s) => union.extend(s),
                    None => bounded = false,
                }
            }
            if bounded {
                union.sort_unstable();
                union.dedup();
                if best.as_ref().is_none_or(|b| union.len() < b.len()) {
                    best = Some(union);
                }
            }
        }
        best.filter(|b| b.len() <= limit)
    }

    fn zone_replicas(&self, group: Option<u32>, zone: u32) -> u32 {
        group
            .and_then(|g| self.groups[g as usize].per_zone.get(&zone).copied())
            .unwrap_or(0)
    }

    fn node_replicas(&self, group: Option<u32>, slot: u32) -> u32 {
        group
            .and_then(|g| self.groups[g as usize].per_node.get(&slot).copied())
            .unwrap_or(0)
    }

    /// Hard zone spreading: the smallest replica count over the eligible zones.
    fn min_zone_count(&self, group: Option<u32>, zones: impl Iterator<Item = u32>) -> u32 {
        zones
            .filter(|z| *z != NO_ZONE)
            .map(|z| self.zone_replicas(group, z))
            .min()
            .unwrap_or(0)
    }

    fn zone_allowed(&self, group: Option<u32>, zone: u32, min: u32) -> bool {
        if !self.cfg.zone_spread_hard || group.is_none() {
            return true;
        }
        zone != NO_ZONE && self.zone_replicas(group, zone) < min + self.cfg.zone_max_skew
    }

    /// Scores every candidate that passes every filter (the reference path). `sample`
    /// applies `percentage_of_nodes_to_score`.
    fn scan(
        &mut self,
        pod: &PodInfo,
        pod_hash: u64,
        group: Option<u32>,
        slots: &[u32],
        sample: bool,
    ) -> Option<u32> {
        let t = &self.nodes;
        let statics: Vec<(u32, u32)> = slots
            .iter()
            .filter(|s| t.alive[**s as usize])
            .filter_map(|s| {
                static_check(&t.info[*s as usize], pod)
                    .ok()
                    .map(|p| (*s, p))
            })
            .collect();
        let min_zone = self.min_zone_count(group, statics.iter().map(|(s, _)| t.zone[*s as usize]));
        let pct = usize::from(self.cfg.percentage_of_nodes_to_score.clamp(1, 100));
        let (start, want) = if sample && pct < 100 && !statics.is_empty() {
            let want = (self.live_nodes * pct / 100).max(100);
            (self.sample_offset % statics.len(), want)
        } else {
            (0, usize::MAX)
        };
        let mut best: Option<Candidate> = None;
        let mut found = 0usize;
        let mut visited = 0usize;
        for k in 0..statics.len() {
            if found >= want {
                break;
            }
            visited += 1;
            let (slot, prefer) = statics[(start + k) % statics.len()];
            let i = slot as usize;
            let u = &t.usage[i];
            if !fits(u, pod.cpu_millis, pod.memory)
                || !ports_free(&t.ports[i], &pod.host_ports)
                || !self.zone_allowed(group, t.zone[i], min_zone)
            {
                continue;
            }
            found += 1;
            let score = score_node(
                &self.cfg,
                u,
                pod.cpu_millis,
                pod.memory,
                self.node_replicas(group, slot),
                self.zone_replicas(group, t.zone[i]),
                prefer,
            );
            let cand = Candidate {
                score,
                tie: pod_hash ^ t.hash[i],
                slot,
            };
            if cand.better_than(&best) {
                best = Some(cand);
            }
        }
        if want != usize::MAX {
            self.sample_offset = start + visited;
        }
        best.map(|c| c.slot)
    }

    fn class_for(&mut self, pod: &PodInfo) -> usize {
        let hash = constraints_hash(pod);
        self.clock += 1;
        let found = self.classes.iter().position(|c| {
            c.hash == hash
                && c.constraints.node_selector == pod.node_selector
                && c.constraints.required_affinity == pod.required_affinity
                && c.constraints.tolerations == pod.tolerations
        });
        if let Some(i) = found {
            self.classes[i].last_used = self.clock;
            return i;
        }
        if self.classes.len() >= self.cfg.max_indexed_classes.max(1)
            && let Some((lru, _)) = self
                .classes
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.last_used)
        {
            self.classes.swap_remove(lru);
        }
        let probe = PodInfo {
            node_selector: pod.node_selector.clone(),
            required_affinity: pod.required_affinity.clone(),
            tolerations: pod.tolerations.clone(),
            ..Default::default()
        };
        let mut index = ClassIndex::new(&self.cfg);
        let t = &self.nodes;
        for (i, alive) in t.alive.iter().enumerate() {
            if *alive && let Ok(prefer) = static_check(&t.info[i], &probe) {
                index.set_node(i as u32, t.hash[i], &t.usage[i], t.zone[i], Some(prefer));
            }
        }
        self.classes.push(Class {
            hash,
            constraints: Constraints {
                node_selector: probe.node_selector.clone(),
                required_affinity: probe.required_affinity.clone(),
                tolerations: probe.tolerations.clone(),
            },
            probe,
            index,
            last_used: self.clock,
        });
        self.classes.len() - 1
    }

    fn place_indexed(&mut self, pod: &PodInfo, pod_hash: u64, group: Option<u32>) -> Option<u32> {
        let ci = self.class_for(pod);
        self.excluded_stamp += 1;
        let stamp = self.excluded_stamp;
        if self.excluded.len() < self.nodes.alive.len() {
            self.excluded.resize(self.nodes.alive.len(), 0);
        }
        // The class index is moved out for the query so the closures below can borrow `self`.
        let mut index = std::mem::replace(&mut self.classes[ci].index, ClassIndex::new(&self.cfg));
        let class = &index;
        let min_zone = if self.cfg.zone_spread_hard && group.is_some() {
            self.min_zone_count(group, class.zone_members.keys().copied())
        } else {
            0
        };
        // Nodes already holding replicas of the group: scored here, excluded from the index.
        let mut best: Option<Candidate> = None;
        if let Some(g) = group {
            let t = &self.nodes;
            for (&slot, &count) in &self.groups[g as usize].per_node {
                let i = slot as usize;
                self.excluded[i] = stamp;
                if !class.is_member(slot)
                    || !fits(&t.usage[i], pod.cpu_millis, pod.memory)
                    || !self.zone_allowed(group, t.zone[i], min_zone)
                {
                    continue;
                }
                let score = score_node(
                    &self.cfg,
                    &t.usage[i],
                    pod.cpu_millis,
                    pod.memory,
                    count,
                    self.zone_replicas(group, t.zone[i]),
                    class.prefer[i],
                );
                let cand = Candidate {
                    score,
                    tie: pod_hash ^ t.hash[i],
                    slot,
                };
                if cand.better_than(&best) {
                    best = Some(cand);
                }
            }
        }
        let zone_penalty = |z: u32| penalties(&self.cfg, 0, self.zone_replicas(group, z), 0);
        let zone_ok = |z: u32| self.zone_allowed(group, z, min_zone);
        let excluded = |s: u32| self.excluded[s as usize] == stamp;
        let q = Query {
            cpu: pod.cpu_millis,
            mem: pod.memory,
            pod_hash,
            zone_penalty: &zone_penalty,
            zone_ok: &zone_ok,
            excluded: &excluded,
        };
        index.best(&q, &mut best);
        self.classes[ci].index = index;
        best.map(|c| c.slot)
    }

    /// Why no node fits, counted per reason over every node, in Kubernetes' words.
    fn diagnose(&self, pod: &PodInfo) -> Unschedulable {
        let t = &self.nodes;
        let group = pod
            .spread_group
            .as_deref()
            .and_then(|g| self.group_ids.get(g).copied());
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut passed_static = Vec::new();
        for i in 0..t.alive.len() {
            if !t.alive[i] {
                continue;
            }
            match static_check(&t.info[i], pod) {
                Err(r) => *reasons.entry(r.reason()).or_insert(0) += 1,
                Ok(_) => passed_static.push(i),
            }
        }
        let min_zone = self.min_zone_count(group, passed_static.iter().map(|i| t.zone[*i]));
        for i in passed_static {
            if !ports_free(&t.ports[i], &pod.host_ports) {
                *reasons.entry(REASON_PORTS.to_string()).or_insert(0) += 1;
                continue;
            }
            let res = resource_reasons(&t.usage[i], pod.cpu_millis, pod.memory);
            if !res.is_empty() {
                for r in res {
                    *reasons.entry(r.to_string()).or_insert(0) += 1;
                }
                continue;
            }
            if !self.zone_allowed(group, t.zone[i], min_zone) {
                let r = if t.zone[i] == NO_ZONE {
                    REASON_SPREAD_LABEL
                } else {
                    REASON_SPREAD
                };
                *reasons.entry(r.to_string()).or_insert(0) += 1;
            }
        }
        Unschedulable::new(self.live_nodes, reasons, self.generation)
    }

    // ---- preemption ----

    /// Kubernetes-style preemption for a pod that does not fit anywhere: the node where
    /// evicting pods of lower priority makes room, and the fewest such pods. Nothing is
    /// changed: the caller deletes the victims, and the pod is scheduled normally once
    /// `cluster_generation()` moves. Per node, every lower-priority pod is removed, the pod must
    /// then pass every filter, and removed pods are given back (highest priority first) while
    /// it still fits. Among nodes, the lowest highest-victim priority wins, then the smallest
    /// sum of victim priorities, then the fewest victims, then the tie key.
    pub fn plan_preemption(&self, pod: &PodInfo) -> Option<Preemption> {
        let t = &self.nodes;
        let group = pod
            .spread_group
            .as_deref()
            .and_then(|g| self.group_ids.get(g).copied());
        let statics: Vec<usize> = (0..t.alive.len())
            .filter(|i| t.alive[*i] && static_check(&t.info[*i], pod).is_ok())
            .collect();
        let min_zone = self.min_zone_count(group, statics.iter().map(|i| t.zone[*i]));
        let pod_hash = stable_hash(self.cfg.seed, &pod.key);
        // (max victim priority, sum of priorities, victims, tie, slot): smaller is better.
        type Rank = (i64, i64, usize, u64, usize);
        let mut best: Option<(Rank, Vec<u32>)> = None;
        for i in statics {
            if !self.zone_allowed(group, t.zone[i], min_zone) {
                continue;
            }
            let mut lower: Vec<(i32, &str, u32)> = t.pods[i]
                .iter()
                .filter_map(|id| self.pods[*id as usize].as_ref().map(|p| (p, *id)))
                .filter(|(p, _)| p.priority < pod.priority)
                .map(|(p, id)| (p.priority, p.key.as_str(), id))
                .collect();
            if lower.is_empty() {
                continue;
            }
            let mut usage = t.usage[i];
            let mut ports = t.ports[i].clone();
            let take = |usage: &mut NodeUsage, ports: &mut Vec<(u16, u32)>, id: u32, sign: i8| {
                let p = self.pods[id as usize].as_ref().expect("bound pod");
                if sign < 0 {
                    usage.req_cpu = usage.req_cpu.saturating_sub(p.cpu);
                    usage.req_mem = usage.req_mem.saturating_sub(p.mem);
                    usage.pods = usage.pods.saturating_sub(1);
                } else {
                    usage.req_cpu += p.cpu;
                    usage.req_mem += p.mem;
                    usage.pods += 1;
                }
                for port in &p.ports {
                    match ports.binary_search_by_key(port, |(q, _)| *q) {
                        Ok(pos) if sign < 0 => {
                            ports[pos].1 -= 1;
                            if ports[pos].1 == 0 {
                                ports.remove(pos);
                            }
                        }
                        Ok(pos) => ports[pos].1 += 1,
                        Err(pos) if sign > 0 => ports.insert(pos, (*port, 1)),
                        Err(_) => {}
                    }
                }
            };
            for (_, _, id) in &lower {
                take(&mut usage, &mut ports, *id, -1);
            }
            if !fits(&usage, pod.cpu_millis, pod.memory) || !ports_free(&ports, &pod.host_ports) {
                continue;
            }
            // Give back the most important pods first; whatever no longer fits is a victim.
            lower.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            let mut victims = Vec::new();
            let mut max_p = i64::MIN;
            let mut sum_p = 0i64;
            for (prio, _, id) in &lower {
                let (mut u2, mut p2) = (usage, ports.clone());
                take(&mut u2, &mut p2, *id, 1);
                if fits(&u2, pod.cpu_millis, pod.memory) && ports_free(&p2, &pod.host_ports) {
                    usage = u2;
                    ports = p2;
                } else {
                    victims.push(*id);
                    max_p = max_p.max(i64::from(*prio));
                    sum_p += i64::from(*prio);
                }
            }
            let key = (max_p, sum_p, victims.len(), pod_hash ^ t.hash[i], i);
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, victims));
            }
        }
        let ((_, _, _, _, slot), victims) = best?;
        Some(Preemption {
            node: t.info[slot].name.clone(),
            victims: victims
                .iter()
                .filter_map(|id| self.pods[*id as usize].as_ref().map(|p| p.key.clone()))
                .collect(),
        })
    }

    // ---- scale down ----

    /// Which `count` of these bound pods (one spread group) to delete so that the replicas
    /// stay spread evenly: pods that are not bound (or whose node is gone) first, then
    /// repeatedly one from the zone with the most of these pods, and in it from the node with
    /// the most; ties go to the more utilised node, then a seeded hash of the pod key.
    pub fn choose_scale_down(&self, pod_keys: &[String], count: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(count.min(pod_keys.len()));
        // (key, slot, zone)
        let mut bound: Vec<(&String, u32, u32)> = Vec::new();
        let mut unbound: Vec<&String> = Vec::new();
        for key in pod_keys {
            match self
                .pod_ids
                .get(key)
                .and_then(|id| self.pods[*id as usize].as_ref())
                .and_then(|p| p.slot)
            {
                Some(slot) => bound.push((key, slot, self.nodes.zone[slot as usize])),
                None => unbound.push(key),
            }
        }
        unbound.sort_by_key(|k| std::cmp::Reverse(stable_hash(self.cfg.seed, k)));
        for k in unbound {
            if out.len() == count {
                return out;
            }
            out.push(k.clone());
        }
        let mut zone_n: HashMap<u32, u32> = HashMap::default();
        let mut node_n: HashMap<u32, u32> = HashMap::default();
        for (_, slot, zone) in &bound {
            *zone_n.entry(*zone).or_insert(0) += 1;
            *node_n.entry(*slot).or_insert(0) += 1;
        }
        let load = |slot: u32| {
            let u = &self.nodes.usage[slot as usize];
            util(u.req_cpu, u.alloc_cpu) + util(u.req_mem, u.alloc_mem)
        };
        while out.len() < count && !bound.is_empty() {
            let (pos, _) = bound
                .iter()
                .enumerate()
                .max_by_key(|(_, (key, slot, zone))| {
                    (
                        zone_n[zone],
                        node_n[slot],
                        load(*slot),
                        stable_hash(self.cfg.seed, key),
                    )
                })
                .expect("non-empty");
            let (key, slot, zone) = bound.swap_remove(pos);
            *zone_n.get_mut(&zone).expect("counted") -= 1;
            *node_n.get_mut(&slot).expect("counted") -= 1;
            out.push(key.clone());
        }
        out
    }
}

fn dec(m: &mut HashMap<u32, u32>, k: u32) {
    if let Some(v) = m.get_mut(&k) {
        *v -= 1;
        if *v == 0 {
            m.remove(&k);
        }
    }
}

/// A stable hash of the pod's static constraints (selector, affinity, tolerations).
fn constraints_hash(pod: &PodInfo) -> u64 {
    if pod.unconstrained() {
        return 0;
    }
    let mut h = 0x1234_5678u64;
    let mut feed = |s: &str| h = stable_hash(h, s);
    for (k, v) in &pod.node_selector {
        feed(k);
        feed(v);
    }
    feed("|");
    if let Some(a) = &pod.required_affinity {
        for term in &a.node_selector_terms {
            feed("T");
            for r in &term.match_expressions {
                feed(&r.key);
                feed(&r.operator);
                for v in &r.values {
                    feed(v);
                }
            }
        }
    }
    feed("|");
    for t in &pod.tolerations {
        feed(&t.key);
        feed(&t.operator);
        feed(&t.value);
        feed(&t.effect);
    }
    h
}

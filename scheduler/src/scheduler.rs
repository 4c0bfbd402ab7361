//! The scheduler's state: an incremental node table, the bound pods and spread-group counts,
//! with node and pod updates. Placement, preemption and scale-down live in the submodules.

use crate::filters::static_check;
use crate::fxhash::FxHashMap as HashMap;
use crate::index::ClassIndex;
use crate::model::{NodeInfo, PodInfo, SchedulerConfig};
use crate::score::{NodeUsage, stable_hash};
use podd_api::k8s_openapi::api::core::v1::PreferredSchedulingTerm;
use podd_api::{NodeSelector, Toleration};
use std::collections::BTreeMap;

mod placement;
mod preemption;
mod scale_down;

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
#[derive(Debug, Clone, PartialEq)]
struct Constraints {
    node_selector: BTreeMap<String, String>,
    required_affinity: Option<NodeSelector>,
    preferred_affinity: Vec<PreferredSchedulingTerm>,
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
    /// Host port -> the nodes where it is in use.
    port_users: HashMap<u16, Vec<u32>>,
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
            port_users: HashMap::default(),
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

    /// Whether the cluster changed since this answer, so that retrying the pod may succeed.
    pub fn worth_retrying(&self, err: &crate::model::Unschedulable) -> bool {
        err.generation != self.generation
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
        for (port, _) in std::mem::take(&mut self.nodes.ports[i]) {
            unlist(&mut self.port_users, port, slot);
        }
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
                Err(pos) => {
                    ports.insert(pos, (*port, 1));
                    self.port_users.entry(*port).or_default().push(slot);
                }
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
                            unlist(&mut self.port_users, *port, slot);
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
}

fn unlist(m: &mut HashMap<u16, Vec<u32>>, port: u16, slot: u32) {
    if let Some(v) = m.get_mut(&port) {
        v.retain(|s| *s != slot);
        if v.is_empty() {
            m.remove(&port);
        }
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

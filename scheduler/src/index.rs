//! The score index: finds the node a full scan would pick, without scanning every node.
//!
//! One `ClassIndex` exists per pod-constraint class (selector, affinity, tolerations), holding
//! the nodes that pass that class's static filters. Inside, nodes are grouped:
//! - a **partition** is nodes with the same allocatable (cpu, memory), zone and number of
//!   untolerated `PreferNoSchedule` taints: for a given pod, the pod's utilisation shift, the
//!   zone penalty and the taint penalty are one constant per partition;
//! - a **group** is nodes of one partition with the same requested (cpu, memory), pod count and
//!   pod limit: they fit and score identically for every pod.
//!
//! With `s = qc + qm` and `d = qc - qm` the node's own utilisation sum and difference, and
//! `δ = pc - pm` the pod's, the score in a partition is `K - max(a + c, b - c)` where
//! `a = ±wr*s + wb*d`, `b = ±wr*s - wb*d` (pod-independent, kept in two sorted sets) and
//! `c = wb*δ`, `K` pod-dependent constants (see `score.rs`). `max(a + c, b - c)` is monotone in
//! both `a` and `b`, so Fagin's threshold algorithm over the two sorted lists is exact: walk both
//! in order, and stop once `K - max(a_last + c, b_last - c)` is below the best score found,
//! because every group not yet seen has larger `a` and `b`. Within the winning group, the
//! tie-break (smallest `pod_hash XOR node_hash`) is a walk down the group's hash-sorted nodes.

use crate::filters::fits;
use crate::fxhash::FxHashMap as HashMap;
use crate::model::{ResourceStrategy, SchedulerConfig};
use crate::score::{NodeUsage, SCALE, shift, util, weighted_static_penalty};
use std::collections::BTreeSet;

pub(crate) const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PartKey {
    pub ac: u64,
    pub am: u64,
    pub zone: u32,
    pub prefer: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GroupKey {
    rc: u64,
    rm: u64,
    pods: u32,
    max_pods: u32,
}

#[derive(Debug, Clone)]
struct Group {
    part: u32,
    key: GroupKey,
    a: i64,
    b: i64,
    /// (node hash, slot), sorted.
    nodes: Vec<(u64, u32)>,
}

#[derive(Debug, Clone)]
struct Partition {
    key: PartKey,
    by_a: BTreeSet<(i64, u32)>,
    by_b: BTreeSet<(i64, u32)>,
    groups: HashMap<GroupKey, u32>,
}

/// A candidate placement; better = higher score, then smaller tie key, then smaller slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub score: i64,
    pub tie: u64,
    pub slot: u32,
}

impl Candidate {
    pub fn better_than(&self, other: &Option<Candidate>) -> bool {
        match other {
            None => true,
            Some(o) => {
                self.score > o.score
                    || (self.score == o.score && (self.tie, self.slot) < (o.tie, o.slot))
            }
        }
    }
}

/// What the index needs of the pod being placed.
pub(crate) struct Query<'a> {
    pub cpu: u64,
    pub mem: u64,
    pub pod_hash: u64,
    /// Penalty of the pod's zone spread plus nothing else, per zone.
    pub zone_penalty: &'a dyn Fn(u32) -> i64,
    /// Hard zone-skew filter.
    pub zone_ok: &'a dyn Fn(u32) -> bool,
    /// Nodes scored separately (they hold replicas of the pod's spread group).
    pub excluded: &'a dyn Fn(u32) -> bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ClassIndex {
    strategy: ResourceStrategy,
    wr: i64,
    wb: i64,
    wp: i64,
    wa: i64,
    /// Per slot: NONE when the node is not in the class, else its static key (untolerated
    /// PreferNoSchedule count and matching preferred affinity weight, `score::static_key`).
    pub prefer: Vec<u32>,
    node_group: Vec<u32>,
    parts: Vec<Option<Partition>>,
    part_free: Vec<u32>,
    part_by_key: HashMap<PartKey, u32>,
    groups: Vec<Option<Group>>,
    group_free: Vec<u32>,
    /// Member count per zone (the eligible domains for hard spreading).
    pub zone_members: HashMap<u32, u32>,
    visited: Vec<u64>,
    stamp: u64,
    /// Scratch: partitions in bound order.
    order: Vec<(i64, u32, i64, i64)>,
}

impl ClassIndex {
    pub fn new(cfg: &SchedulerConfig) -> ClassIndex {
        ClassIndex {
            strategy: cfg.strategy,
            wr: cfg.resource_weight,
            wb: cfg.balanced_weight,
            wp: cfg.prefer_no_schedule_weight,
            wa: cfg.preferred_affinity_weight,
            prefer: Vec::new(),
            node_group: Vec::new(),
            parts: Vec::new(),
            part_free: Vec::new(),
            part_by_key: HashMap::default(),
            groups: Vec::new(),
            group_free: Vec::new(),
            zone_members: HashMap::default(),
            visited: Vec::new(),
            stamp: 0,
            order: Vec::new(),
        }
    }

    pub fn is_member(&self, slot: u32) -> bool {
        self.prefer.get(slot as usize).is_some_and(|p| *p != NONE)
    }

    fn ab(&self, u: &NodeUsage) -> (i64, i64) {
        let qc = util(u.req_cpu, u.alloc_cpu);
        let qm = util(u.req_mem, u.alloc_mem);
        let s = match self.strategy {
            ResourceStrategy::LeastAllocated => self.wr * (qc + qm),
            ResourceStrategy::MostAllocated => -self.wr * (qc + qm),
        };
        let d = self.wb * (qc - qm);
        (s + d, s - d)
    }

    /// Puts the node (or, with `prefer == None`, takes it out of the class) in the group its
    /// current state belongs to. Cheap when nothing relevant changed.
    pub fn set_node(
        &mut self,
        slot: u32,
        hash: u64,
        u: &NodeUsage,
        zone: u32,
        prefer: Option<u32>,
    ) {
        let i = slot as usize;
        if self.prefer.len() <= i {
            self.prefer.resize(i + 1, NONE);
            self.node_group.resize(i + 1, NONE);
        }
        let Some(prefer) = prefer else {
            self.take_out(slot, hash);
            return;
        };
        let pk = PartKey {
            ac: u.alloc_cpu,
            am: u.alloc_mem,
            zone,
            prefer,
        };
        let gk = GroupKey {
            rc: u.req_cpu,
            rm: u.req_mem,
            pods: u.pods,
            max_pods: u.max_pods,
        };
        let cur = self.node_group[i];
        if cur != NONE {
            let g = self.groups[cur as usize].as_ref().expect("live group");
            let p = self.parts[g.part as usize]
                .as_ref()
                .expect("live partition");
            if g.key == gk && p.key == pk {
                return;
            }
        }
        self.take_out(slot, hash);
        self.prefer[i] = prefer;
        *self.zone_members.entry(zone).or_insert(0) += 1;
        let part = match self.part_by_key.get(&pk) {
            Some(p) => *p,
            None => {
                let p = Partition {
                    key: pk,
                    by_a: BTreeSet::new(),
                    by_b: BTreeSet::new(),
                    groups: HashMap::default(),
                };
                let id = alloc(&mut self.parts, &mut self.part_free, p);
                self.part_by_key.insert(pk, id);
                id
            }
        };
        let existing = self.parts[part as usize]
            .as_ref()
            .and_then(|p| p.groups.get(&gk).copied());
        let gid = match existing {
            Some(g) => g,
            None => {
                let (a, b) = self.ab(u);
                let g = Group {
                    part,
                    key: gk,
                    a,
                    b,
                    nodes: Vec::new(),
                };
                let gid = alloc(&mut self.groups, &mut self.group_free, g);
                let p = self.parts[part as usize].as_mut().expect("live partition");
                p.groups.insert(gk, gid);
                p.by_a.insert((a, gid));
                p.by_b.insert((b, gid));
                gid
            }
        };
        let g = self.groups[gid as usize].as_mut().expect("live group");
        let pos = g.nodes.partition_point(|e| *e < (hash, slot));
        g.nodes.insert(pos, (hash, slot));
        self.node_group[i] = gid;
    }

    fn take_out(&mut self, slot: u32, hash: u64) {
        let i = slot as usize;
        let gid = self.node_group[i];
        if gid == NONE {
            self.prefer[i] = NONE;
            return;
        }
        self.node_group[i] = NONE;
        self.prefer[i] = NONE;
        let g = self.groups[gid as usize].as_mut().expect("live group");
        if let Ok(pos) = g.nodes.binary_search(&(hash, slot)) {
            g.nodes.remove(pos);
        }
        let (part, empty, key, a, b) = (g.part, g.nodes.is_empty(), g.key, g.a, g.b);
        let p = self.parts[part as usize].as_mut().expect("live partition");
        if let Some(z) = self.zone_members.get_mut(&p.key.zone) {
            *z -= 1;
            if *z == 0 {
                self.zone_members.remove(&p.key.zone);
            }
        }
        if empty {
            p.groups.remove(&key);
            p.by_a.remove(&(a, gid));
            p.by_b.remove(&(b, gid));
            self.groups[gid as usize] = None;
            self.group_free.push(gid);
            if p.groups.is_empty() {
                let pk = p.key;
                self.parts[part as usize] = None;
                self.part_free.push(part);
                self.part_by_key.remove(&pk);
            }
        }
    }

    /// The partition's pod-dependent constant `K` and offset `c` (see the module docs).
    fn constants(&self, pk: &PartKey, q: &Query) -> (i64, i64) {
        let pc = shift(q.cpu, pk.ac);
        let pm = shift(q.mem, pk.am);
        let base = match self.strategy {
            ResourceStrategy::LeastAllocated => self.wr * (2 * SCALE - pc - pm),
            ResourceStrategy::MostAllocated => self.wr * (pc + pm),
        };
        let k = base + self.wb * SCALE
            - (q.zone_penalty)(pk.zone)
            - weighted_static_penalty(self.wp, self.wa, pk.prefer);
        (k, self.wb * (pc - pm))
    }

    /// Improves `best` with the best member node for the query; exact (equal to scoring every
    /// member node), given that excluded nodes were scored by the caller.
    pub fn best(&mut self, q: &Query, best: &mut Option<Candidate>) {
        self.stamp += 1;
        let stamp = self.stamp;
        if self.visited.len() < self.groups.len() {
            self.visited.resize(self.groups.len(), 0);
        }
        // Partitions, best upper bound first, so that later ones are pruned early.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        for (id, p) in self.parts.iter().enumerate() {
            let Some(p) = p else { continue };
            if !(q.zone_ok)(p.key.zone) {
                continue;
            }
            let (k, c) = self.constants(&p.key, q);
            let (Some(a0), Some(b0)) = (p.by_a.first(), p.by_b.first()) else {
                continue;
            };
            let bound = k - (a0.0 + c).max(b0.0 - c);
            order.push((bound, id as u32, k, c));
        }
        order.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        let ClassIndex {
            parts,
            groups,
            visited,
            ..
        } = self;
        for &(bound, pid, k, c) in &order {
            if best.is_some_and(|b| bound < b.score) {
                break;
            }
            let p = parts[pid as usize].as_ref().expect("live partition");
            let mut ia = p.by_a.iter();
            let mut ib = p.by_b.iter();
            // Both lists hold every group: when one ends, all were seen.
            while let (Some(&(va, ga)), Some(&(vb, gb))) = (ia.next(), ib.next()) {
                for gid in [ga, gb] {
                    if visited[gid as usize] == stamp {
                        continue;
                    }
                    visited[gid as usize] = stamp;
                    let g = groups[gid as usize].as_ref().expect("live group");
                    let usage = NodeUsage {
                        alloc_cpu: p.key.ac,
                        alloc_mem: p.key.am,
                        max_pods: g.key.max_pods,
                        req_cpu: g.key.rc,
                        req_mem: g.key.rm,
                        pods: g.key.pods,
                    };
                    if !fits(&usage, q.cpu, q.mem) {
                        continue;
                    }
                    let score = k - (g.a + c).max(g.b - c);
                    if best.is_some_and(|b| score < b.score) {
                        continue;
                    }
                    if let Some((tie, slot)) = min_xor(&g.nodes, q.pod_hash, q.excluded) {
                        let cand = Candidate { score, tie, slot };
                        if cand.better_than(best) {
                            *best = Some(cand);
                        }
                    }
                }
                let threshold = k - (va + c).max(vb - c);
                if best.is_some_and(|b| threshold < b.score) {
                    break;
                }
            }
        }
        self.order = order;
    }

    /// Number of groups (distinct node states) in the class; for benchmarks.
    pub fn group_count(&self) -> usize {
        self.groups.iter().filter(|g| g.is_some()).count()
    }
}

fn alloc<T>(slab: &mut Vec<Option<T>>, free: &mut Vec<u32>, v: T) -> u32 {
    match free.pop() {
        Some(id) => {
            slab[id as usize] = Some(v);
            id
        }
        None => {
            slab.push(Some(v));
            (slab.len() - 1) as u32
        }
    }
}

/// The non-excluded entry with the smallest `hash XOR target` (ties: smaller slot), over
/// entries sorted by hash. Walks the implicit binary trie of the sorted hashes, preferring at
/// each bit the half that matches `target`.
pub(crate) fn min_xor(
    nodes: &[(u64, u32)],
    target: u64,
    excluded: &dyn Fn(u32) -> bool,
) -> Option<(u64, u32)> {
    fn walk(
        s: &[(u64, u32)],
        target: u64,
        bit: u32,
        excluded: &dyn Fn(u32) -> bool,
    ) -> Option<(u64, u32)> {
        if s.len() <= 8 || bit == 0 {
            return s
                .iter()
                .filter(|(_, slot)| !excluded(*slot))
                .map(|(h, slot)| (h ^ target, *slot))
                .min();
        }
        let b = bit - 1;
        let split = s.partition_point(|(h, _)| h >> b & 1 == 0);
        let (zero, one) = s.split_at(split);
        let (first, second) = if target >> b & 1 == 0 {
            (zero, one)
        } else {
            (one, zero)
        };
        walk(first, target, b, excluded).or_else(|| walk(second, target, b, excluded))
    }
    walk(nodes, target, 64, excluded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_xor_matches_brute_force() {
        let mut nodes: Vec<(u64, u32)> = (0..300u32)
            .map(|i| (crate::score::stable_hash(3, &format!("n{i}")), i))
            .collect();
        nodes.sort_unstable();
        for t in 0..200u64 {
            let target = crate::score::stable_hash(9, &t.to_string());
            let excl = |s: u32| s % 3 == (t % 3) as u32;
            let brute = nodes
                .iter()
                .filter(|(_, s)| !excl(*s))
                .map(|(h, s)| (h ^ target, *s))
                .min();
            assert_eq!(min_xor(&nodes, target, &excl), brute);
        }
        assert_eq!(min_xor(&nodes, 5, &|_| true), None);
        assert_eq!(min_xor(&[], 5, &|_| false), None);
    }
}

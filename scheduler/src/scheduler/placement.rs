//! Placement: the three paths (small candidate set, score index, full scan), which all pick
//! the node a full scan would, and the diagnosis of pods that fit nowhere.

use super::{Class, Constraints, NO_ZONE, Scheduler};
use crate::filters::{
    REASON_PORTS, REASON_SPREAD, REASON_SPREAD_LABEL, fits, ports_free, resource_reasons,
    static_check,
};
use crate::index::{Candidate, ClassIndex, Query};
use crate::model::{PodInfo, Unschedulable};
use crate::score::{penalties, score_node, stable_hash};
use podd_api::NodeSelectorRequirement;
use std::collections::BTreeMap;

impl Scheduler {
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
        let limit = self
            .cfg
            .candidate_scan_max
            .unwrap_or((self.live_nodes / 16).max(64));
        let posting = |k: &str, v: &str| -> &[u32] {
            self.labels
                .get(k)
                .and_then(|m| m.get(v))
                .map(|s| s.as_slice())
                .unwrap_or(&[])
        };
        // Sizes first: building a candidate list only pays when it is small.
        let selector = pod
            .node_selector
            .iter()
            .map(|(k, v)| posting(k, v))
            .min_by_key(|p| p.len());
        let selector_len = selector.map_or(usize::MAX, <[u32]>::len);
        // Required affinity: the union over terms of each term's smallest `In` posting set;
        // bounded only if every term has an `In` expression.
        let mut affinity: Option<Vec<&NodeSelectorRequirement>> = None;
        let mut affinity_len = usize::MAX;
        if let Some(aff) = &pod.required_affinity {
            let mut picks = Vec::new();
            let mut total = 0usize;
            let bounded = aff.node_selector_terms.iter().all(|term| {
                let smallest = term
                    .match_expressions
                    .iter()
                    .flatten()
                    .filter(|r| r.operator == "In")
                    .map(|r| {
                        let n: usize = r
                            .values
                            .iter()
                            .flatten()
                            .map(|v| posting(&r.key, v).len())
                            .sum();
                        (n, r)
                    })
                    .min_by_key(|(n, _)| *n);
                match smallest {
                    Some((n, r)) => {
                        total += n;
                        picks.push(r);
                        true
                    }
                    None => false,
                }
            });
            if bounded {
                affinity_len = total;
                affinity = Some(picks);
            }
        }
        if selector_len.min(affinity_len) > limit {
            return None;
        }
        if selector_len <= affinity_len {
            return selector.map(<[u32]>::to_vec);
        }
        let mut union: Vec<u32> = affinity?
            .iter()
            .flat_map(|r| {
                r.values
                    .iter()
                    .flatten()
                    .flat_map(|v| posting(&r.key, v).iter().copied())
            })
            .collect();
        union.sort_unstable();
        union.dedup();
        Some(union)
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
    pub(super) fn min_zone_count(
        &self,
        group: Option<u32>,
        zones: impl Iterator<Item = u32>,
    ) -> u32 {
        zones
            .filter(|z| *z != NO_ZONE)
            .map(|z| self.zone_replicas(group, z))
            .min()
            .unwrap_or(0)
    }

    pub(super) fn zone_allowed(&self, group: Option<u32>, zone: u32, min: u32) -> bool {
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
                && c.constraints.preferred_affinity == pod.preferred_affinity
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
            preferred_affinity: pod.preferred_affinity.clone(),
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
                preferred_affinity: probe.preferred_affinity.clone(),
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
        // Nodes where a wanted host port is taken: infeasible, excluded from everything.
        for port in &pod.host_ports {
            for slot in self.port_users.get(port).into_iter().flatten() {
                self.excluded[*slot as usize] = stamp;
            }
        }
        // Nodes already holding replicas of the group: scored here, excluded from the index.
        let mut best: Option<Candidate> = None;
        if let Some(g) = group {
            let t = &self.nodes;
            for (&slot, &count) in &self.groups[g as usize].per_node {
                let i = slot as usize;
                if self.excluded[i] == stamp {
                    continue;
                }
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
            for (tag, reqs) in [("T", &term.match_expressions), ("F", &term.match_fields)] {
                feed(tag);
                for r in reqs.iter().flatten() {
                    feed(&r.key);
                    feed(&r.operator);
                    for v in r.values.iter().flatten() {
                        feed(v);
                    }
                }
            }
        }
    }
    feed("|");
    for p in &pod.preferred_affinity {
        feed(&p.weight.to_string());
        for r in p.preference.match_expressions.iter().flatten() {
            feed(&r.key);
            feed(&r.operator);
            for v in r.values.iter().flatten() {
                feed(v);
            }
        }
        feed(";");
    }
    feed("|");
    for t in &pod.tolerations {
        for field in [&t.key, &t.operator, &t.value, &t.effect] {
            feed(field.as_deref().unwrap_or(""));
        }
    }
    h
}

//! Kubernetes-style preemption planning.

use super::Scheduler;
use crate::filters::{fits, ports_free, static_check};
use crate::model::{PodInfo, Preemption};
use crate::score::{NodeUsage, stable_hash};

impl Scheduler {
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
}

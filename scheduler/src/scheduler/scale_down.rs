//! Choosing which replicas to delete on scale-down, keeping the spread even.

use super::Scheduler;
use crate::fxhash::FxHashMap as HashMap;
use crate::score::{stable_hash, util};

impl Scheduler {
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

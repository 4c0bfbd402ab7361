//! Scores: integers, so that equal nodes tie exactly and the index can reproduce a full scan.
//!
//! Utilisation is fixed point with `SCALE` = 100%. A node's utilisation after placing the pod is
//! `util(requested, allocatable) + shift(pod request, allocatable)`: the node's part and the
//! pod's part are quantised separately, so the score splits into a node-only term and a
//! pod-only term (what lets `index.rs` find the best node without scanning).
//!
//! score = resource_weight  * R            R = 2*SCALE - uc - um (least) | uc + um (most)
//!       + balanced_weight  * (SCALE - |uc - um|)
//!       - node_spread_weight * SCALE * replicas of the pod's group on the node
//!       - zone_spread_weight * SCALE * replicas of the pod's group in the node's zone
//!       - prefer_no_schedule_weight * SCALE * untolerated PreferNoSchedule taints
//!       + preferred_affinity_weight * SCALE * (summed weights of matching preferred
//!         node-affinity terms) / 100
//!
//! The last two depend only on the node and the pod's constraint class: the static filters
//! compute them once per (class, node) as one packed [`static_key`].
//!
//! Ties go to the smallest `hash(seed, pod key) XOR hash(seed, node name)`: a pseudo-random but
//! reproducible order per pod, so equal nodes share the load instead of the first one taking it.

use crate::model::{ResourceStrategy, SchedulerConfig};

/// 100% utilisation in fixed point.
pub const SCALE: i64 = 1 << 16;

/// A node's resources and what is requested on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeUsage {
    pub alloc_cpu: u64,
    pub alloc_mem: u64,
    pub max_pods: u32,
    pub req_cpu: u64,
    pub req_mem: u64,
    pub pods: u32,
}

/// Utilisation of `alloc` by `requested`, in `SCALE` units (a node with nothing allocatable
/// counts as full). Capped at 4x to stay far from overflow on over-committed nodes.
#[inline]
pub fn util(requested: u64, alloc: u64) -> i64 {
    if alloc == 0 {
        return SCALE;
    }
    let r = u128::from(requested.min(alloc.saturating_mul(4)));
    (r * SCALE as u128 / u128::from(alloc)) as i64
}

/// The pod's own share of the node, in `SCALE` units.
#[inline]
pub fn shift(request: u64, alloc: u64) -> i64 {
    if alloc == 0 {
        return 0;
    }
    util(request, alloc)
}

/// The resource and balance part of the score, from the node's and the pod's utilisation parts.
#[inline]
pub fn resource_score(cfg: &SchedulerConfig, qc: i64, qm: i64, pc: i64, pm: i64) -> i64 {
    let uc = qc + pc;
    let um = qm + pm;
    let r = match cfg.strategy {
        ResourceStrategy::LeastAllocated => 2 * SCALE - uc - um,
        ResourceStrategy::MostAllocated => uc + um,
    };
    cfg.resource_weight * r + cfg.balanced_weight * (SCALE - (uc - um).abs())
}

/// Most untolerated PreferNoSchedule taints counted (the low 15 bits of a static key).
pub const MAX_PREFER_TAINTS: u32 = 0x7fff;
/// Most summed weight of matching preferred node-affinity terms counted (the high 16 bits).
pub const MAX_AFFINITY_WEIGHT: u32 = 0xffff;

/// Packs the static part of a node's score for a pod class: untolerated `PreferNoSchedule`
/// taints (low bits) and the summed weights of matching preferred node-affinity terms (high
/// bits). A key with no matching preferred term is just the taint count.
#[inline]
pub fn static_key(prefer_taints: u32, affinity_weight: u32) -> u32 {
    prefer_taints.min(MAX_PREFER_TAINTS) | (affinity_weight.min(MAX_AFFINITY_WEIGHT) << 16)
}

/// The static key's share of the score, as a penalty (negative for a preferred node).
#[inline]
pub fn static_penalty(cfg: &SchedulerConfig, key: u32) -> i64 {
    weighted_static_penalty(
        cfg.prefer_no_schedule_weight,
        cfg.preferred_affinity_weight,
        key,
    )
}

/// [`static_penalty`] with the two weights given (the index keeps them, not the config).
#[inline]
pub(crate) fn weighted_static_penalty(prefer_weight: i64, affinity_weight: i64, key: u32) -> i64 {
    let taints = i64::from(key & 0xffff);
    let affinity = i64::from(key >> 16);
    SCALE * prefer_weight * taints - SCALE * affinity_weight * affinity / 100
}

/// Penalties that do not depend on resources; `prefer` is the node's [`static_key`] (the
/// count of untolerated PreferNoSchedule taints when no preferred affinity matches).
#[inline]
pub fn penalties(
    cfg: &SchedulerConfig,
    node_replicas: u32,
    zone_replicas: u32,
    prefer: u32,
) -> i64 {
    SCALE
        * (cfg.node_spread_weight * i64::from(node_replicas)
            + cfg.zone_spread_weight * i64::from(zone_replicas))
        + static_penalty(cfg, prefer)
}

/// The full score of placing a pod requesting (`pod_cpu`, `pod_mem`) on a node; higher wins.
pub fn score_node(
    cfg: &SchedulerConfig,
    node: &NodeUsage,
    pod_cpu: u64,
    pod_mem: u64,
    node_replicas: u32,
    zone_replicas: u32,
    prefer: u32,
) -> i64 {
    resource_score(
        cfg,
        util(node.req_cpu, node.alloc_cpu),
        util(node.req_mem, node.alloc_mem),
        shift(pod_cpu, node.alloc_cpu),
        shift(pod_mem, node.alloc_mem),
    ) - penalties(cfg, node_replicas, zone_replicas, prefer)
}

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finaliser), seeded; identical on every
/// platform and run, unlike `std`'s `RandomState`.
pub fn stable_hash(seed: u64, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The tie-break key of (pod, node): smaller wins among equal scores.
pub fn tie_key(seed: u64, pod_key: &str, node_name: &str) -> u64 {
    stable_hash(seed, pod_key) ^ stable_hash(seed, node_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(req_cpu: u64, req_mem: u64) -> NodeUsage {
        NodeUsage {
            alloc_cpu: 4000,
            alloc_mem: 4000,
            max_pods: 110,
            req_cpu,
            req_mem,
            pods: 0,
        }
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let cfg = SchedulerConfig::default();
        let empty = score_node(&cfg, &usage(0, 0), 100, 100, 0, 0, 0);
        let half = score_node(&cfg, &usage(2000, 2000), 100, 100, 0, 0, 0);
        assert!(empty > half);
        // Exact values: empty node after a 100/4000 pod is 2.5% used on both resources.
        let u = util(100, 4000);
        assert_eq!(empty, 2 * SCALE - 2 * u + SCALE);
    }

    #[test]
    fn most_allocated_prefers_fuller_nodes() {
        let cfg = SchedulerConfig {
            strategy: ResourceStrategy::MostAllocated,
            ..Default::default()
        };
        let empty = score_node(&cfg, &usage(0, 0), 100, 100, 0, 0, 0);
        let half = score_node(&cfg, &usage(2000, 2000), 100, 100, 0, 0, 0);
        assert!(half > empty);
    }

    #[test]
    fn balanced_prefers_evening_out_cpu_and_memory() {
        let cfg = SchedulerConfig {
            resource_weight: 0,
            ..Default::default()
        };
        // A CPU-heavy pod fits best on a memory-heavy node.
        let mem_heavy = score_node(&cfg, &usage(0, 2000), 2000, 0, 0, 0, 0);
        let cpu_heavy = score_node(&cfg, &usage(2000, 0), 2000, 0, 0, 0, 0);
        assert_eq!(mem_heavy, SCALE);
        assert_eq!(cpu_heavy, 0);
    }

    #[test]
    fn spread_and_taint_penalties() {
        let cfg = SchedulerConfig::default();
        let base = score_node(&cfg, &usage(0, 0), 1, 1, 0, 0, 0);
        assert_eq!(
            score_node(&cfg, &usage(0, 0), 1, 1, 1, 0, 0),
            base - 2 * SCALE
        );
        assert_eq!(
            score_node(&cfg, &usage(0, 0), 1, 1, 0, 3, 0),
            base - 6 * SCALE
        );
        assert_eq!(score_node(&cfg, &usage(0, 0), 1, 1, 0, 0, 1), base - SCALE);
        // Preferred node affinity: weight 50 matched is half a SCALE per unit of weight.
        assert_eq!(
            score_node(&cfg, &usage(0, 0), 1, 1, 0, 0, static_key(1, 50)),
            base - SCALE + cfg.preferred_affinity_weight * SCALE / 2
        );
        assert_eq!(static_key(3, 0), 3);
    }

    #[test]
    fn utilisation_edges() {
        assert_eq!(util(0, 0), SCALE, "nothing allocatable counts as full");
        assert_eq!(shift(5, 0), 0);
        assert_eq!(util(10, 10), SCALE);
        assert_eq!(util(u64::MAX, 10), 4 * SCALE, "over-commit is capped");
    }

    #[test]
    fn hashing_is_stable_and_seeded() {
        assert_eq!(stable_hash(1, "node-1"), stable_hash(1, "node-1"));
        assert_ne!(stable_hash(1, "node-1"), stable_hash(2, "node-1"));
        assert_ne!(stable_hash(1, "node-1"), stable_hash(1, "node-2"));
        // Ties spread: across many pods, every one of 10 equal nodes wins some.
        let mut wins = [0u32; 10];
        for p in 0..1000 {
            let pod = format!("default/p{p}");
            let best = (0..10)
                .min_by_key(|n| tie_key(7, &pod, &format!("n{n}")))
                .unwrap();
            wins[best] += 1;
        }
        assert!(wins.iter().all(|w| *w > 20), "{wins:?}");
    }
}

//! Zone disruption, as Kubernetes' node lifecycle controller judges it: when many nodes stop
//! renewing their leases at once, the control plane (or the network to it) is more likely at
//! fault than the nodes, and failing their pods would only pile replacements onto the
//! survivors (or onto nothing). So pods of an expired node are failed only while its zone, and
//! the cluster as a whole, look healthy.
//!
//! Nodes are grouped by the `topology.kubernetes.io/zone` label (no label: one zone, "").

use std::collections::BTreeMap;

/// The share of not-ready nodes, in percent (with more than [`MIN_UNHEALTHY`] of them), from
/// which a zone is partially disrupted: Kubernetes' `--unhealthy-zone-threshold` default.
pub const UNHEALTHY_ZONE_PERCENT: usize = 55;

/// A zone with this many or fewer not-ready nodes is never judged disrupted: losing a few
/// nodes is what eviction is for.
pub const MIN_UNHEALTHY: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    /// Most of the zone's nodes are not ready (but some are).
    PartialDisruption,
    /// None of the zone's nodes is ready.
    FullDisruption,
}

/// How a zone with `ready` and `not_ready` nodes is doing.
pub fn zone_state(ready: usize, not_ready: usize) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > MIN_UNHEALTHY
        && not_ready * 100 >= UNHEALTHY_ZONE_PERCENT * (ready + not_ready)
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Ready and not-ready node counts per zone.
#[derive(Debug, Clone, Default)]
pub struct ZoneHealth {
    zones: BTreeMap<String, (usize, usize)>,
}

impl ZoneHealth {
    pub fn add(&mut self, zone: &str, ready: bool) {
        let counts = self.zones.entry(zone.to_string()).or_default();
        if ready {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }

    pub fn state(&self, zone: &str) -> ZoneState {
        self.zones
            .get(zone)
            .map_or(ZoneState::Normal, |(r, n)| zone_state(*r, *n))
    }

    /// Whether pods of an expired node in `zone` may be failed now. Not when the zone is
    /// partially disrupted, nor when the whole cluster is (every zone down, or most nodes
    /// across zones not ready). A single zone that is wholly down while others are healthy
    /// did fail (Kubernetes evicts there too), so its pods move.
    pub fn may_evict(&self, zone: &str) -> bool {
        let (ready, not_ready) = self
            .zones
            .values()
            .fold((0, 0), |(r, n), (zr, zn)| (r + zr, n + zn));
        if zone_state(ready, not_ready) != ZoneState::Normal {
            return false;
        }
        self.state(zone) != ZoneState::PartialDisruption
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kubernetes_classification() {
        assert_eq!(zone_state(0, 0), ZoneState::Normal);
        assert_eq!(zone_state(3, 0), ZoneState::Normal);
        assert_eq!(zone_state(0, 1), ZoneState::FullDisruption);
        assert_eq!(zone_state(1, 2), ZoneState::Normal, "two lost nodes: evict");
        assert_eq!(zone_state(2, 3), ZoneState::PartialDisruption);
        assert_eq!(zone_state(45, 55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(46, 54), ZoneState::Normal);
    }

    #[test]
    fn one_lost_node_is_evicted_a_mass_expiry_is_not() {
        let mut h = ZoneHealth::default();
        for i in 0..10 {
            h.add("", i != 0);
        }
        assert!(h.may_evict(""));
        let mut h = ZoneHealth::default();
        for i in 0..5000 {
            h.add("", i % 3 == 0);
        }
        assert!(!h.may_evict(""), "two thirds expired at once");
    }

    #[test]
    fn a_dead_zone_is_evicted_unless_every_zone_is_dead() {
        let mut h = ZoneHealth::default();
        for _ in 0..5 {
            h.add("a", false);
            h.add("b", true);
            h.add("c", true);
        }
        assert_eq!(h.state("a"), ZoneState::FullDisruption);
        assert!(h.may_evict("a"), "zone a died; the others are fine");
        let mut h = ZoneHealth::default();
        for _ in 0..5 {
            h.add("a", false);
            h.add("b", false);
        }
        assert!(!h.may_evict("a") && !h.may_evict("b"));
    }

    #[test]
    fn a_partly_disrupted_zone_holds_while_others_evict() {
        let mut h = ZoneHealth::default();
        for i in 0..10 {
            h.add("a", i < 3);
            h.add("b", i != 0);
            h.add("c", true);
        }
        assert!(!h.may_evict("a"));
        assert!(h.may_evict("b"));
    }

    proptest! {
        #[test]
        fn states_follow_the_definition(ready in 0usize..500, not_ready in 0usize..500) {
            let s = zone_state(ready, not_ready);
            let total = ready + not_ready;
            match s {
                ZoneState::FullDisruption => prop_assert!(ready == 0 && not_ready > 0),
                ZoneState::PartialDisruption => {
                    prop_assert!(ready > 0 && not_ready > MIN_UNHEALTHY);
                    prop_assert!(not_ready * 100 >= UNHEALTHY_ZONE_PERCENT * total);
                }
                ZoneState::Normal => prop_assert!(
                    not_ready <= MIN_UNHEALTHY
                        || (ready > 0 && not_ready * 100 < UNHEALTHY_ZONE_PERCENT * total)
                ),
            }
        }

        #[test]
        fn more_failures_never_allow_more_eviction(ready in 0usize..200, not_ready in 0usize..200, extra in 1usize..200) {
            // Evicting is allowed only in Normal; losing more nodes never returns to Normal
            // from a disrupted state.
            let before = zone_state(ready, not_ready);
            let after = zone_state(ready.saturating_sub(extra), not_ready + extra.min(ready));
            if before != ZoneState::Normal {
                prop_assert_ne!(after, ZoneState::Normal);
            }
        }

        #[test]
        fn a_single_healthy_cluster_always_evicts(total in 1usize..300, lost in 0usize..=2) {
            let mut h = ZoneHealth::default();
            for i in 0..total.max(lost + 1) {
                h.add("", i >= lost);
            }
            prop_assert!(h.may_evict(""));
        }
    }
}

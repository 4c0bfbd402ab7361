//! Node lease renewals, served from memory.
//!
//! Agents renew their node's Lease (`spec.renewTime` of the coordination.k8s.io Lease named
//! after the node in kube-node-lease) every heartbeat. Writing each renewal through the store
//! would cost a durable write and a Lease watch event fanned out to every watcher, at (nodes / heartbeat) per second, for a timestamp no one else reads. So the
//! server that receives a renewal records it here and writes it to the store only every so
//! often:
//! - while this server runs the controllers (the node lifecycle controller reads this table
//!   directly), rarely: the stored time is for people, and a newly elected leader gives every
//!   node a full grace from when it starts anyway;
//! - while it does not (a standby sharing etcd with the leader), often enough that the leader
//!   sees the lease move well within its grace: at most every half grace.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How stale the stored renewTime may get while this server leads.
    pub persist_leading: Duration,
    /// ... and while another server leads; keep it under half the node grace.
    pub persist_standby: Duration,
}

impl LeaseConfig {
    /// Intervals that keep the leader's view correct for a node grace of `grace`.
    pub fn for_grace(grace: Duration) -> LeaseConfig {
        LeaseConfig {
            persist_leading: (grace * 15).max(Duration::from_secs(60)),
            persist_standby: grace / 2,
        }
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig::for_grace(Duration::from_secs(2))
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    renewed: Instant,
    /// When this server last wrote the node's lease to the store.
    persisted: Option<Instant>,
}

/// Whether a renewal at `now` must be written to the store, given when this server last
/// wrote that node's lease.
pub fn must_persist(persisted: Option<Instant>, now: Instant, every: Duration) -> bool {
    persisted.is_none_or(|p| now.saturating_duration_since(p) >= every)
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    config: Mutex<LeaseConfig>,
    leading: AtomicBool,
    entries: Mutex<HashMap<String, Entry>>,
}

impl LeaseTable {
    pub fn new(config: LeaseConfig) -> LeaseTable {
        LeaseTable {
            config: Mutex::new(config),
            ..LeaseTable::default()
        }
    }

    pub fn set_config(&self, config: LeaseConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Whether this server runs the controllers (set by the leader election loop).
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
    }

    fn interval(&self) -> Duration {
        let c = *self.config.lock().unwrap_or_else(|p| p.into_inner());
        if self.leading.load(Ordering::Acquire) {
            c.persist_leading
        } else {
            c.persist_standby
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a renewal of `node` at `now`; true when it must also be written to the store
    /// (the caller then reports [`LeaseTable::persisted`]).
    pub fn renew(&self, node: &str, now: Instant) -> bool {
        let every = self.interval();
        let mut entries = self.lock();
        let e = entries.entry(node.to_string()).or_insert(Entry {
            renewed: now,
            persisted: None,
        });
        e.renewed = e.renewed.max(now);
        must_persist(e.persisted, now, every)
    }

    /// `node`'s lease was written to the store at `now`.
    pub fn persisted(&self, node: &str, now: Instant) {
        let mut entries = self.lock();
        let e = entries.entry(node.to_string()).or_insert(Entry {
            renewed: now,
            persisted: None,
        });
        e.renewed = e.renewed.max(now);
        e.persisted = Some(now);
    }

    /// When this server last took a renewal of `node`.
    pub fn last_renewal(&self, node: &str) -> Option<Instant> {
        self.lock().get(node).map(|e| e.renewed)
    }

    pub fn forget(&self, node: &str) {
        self.lock().remove(node);
    }
}

/// Whether a merge patch of a node Lease only renews it (`{"spec":{"renewTime":"..."}}`).
pub fn is_lease_renewal(patch: &serde_json::Value) -> bool {
    let only = |v: &serde_json::Value, key: &str| {
        v.as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key(key))
    };
    only(patch, "spec")
        && only(&patch["spec"], "renewTime")
        && patch["spec"]["renewTime"].is_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn recognises_pure_renewals_only() {
        assert!(is_lease_renewal(
            &json!({"spec": {"renewTime": "2026-01-01T00:00:00.000000Z"}})
        ));
        assert!(!is_lease_renewal(&json!({"spec": {"renewTime": 5}})));
        assert!(!is_lease_renewal(
            &json!({"spec": {"renewTime": "t", "holderIdentity": "n2"}})
        ));
        assert!(!is_lease_renewal(
            &json!({"spec": {"renewTime": "t"}, "metadata": {"resourceVersion": "3"}})
        ));
        assert!(!is_lease_renewal(
            &json!({"status": {"leaseRenewTime": "t"}})
        ));
    }

    #[test]
    fn first_renewal_is_written_then_absorbed_until_the_interval() {
        let t = LeaseTable::new(LeaseConfig {
            persist_leading: Duration::from_secs(60),
            persist_standby: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        assert!(t.renew("n", t0), "a node this server never wrote");
        t.persisted("n", t0);
        assert!(!t.renew("n", t0 + Duration::from_secs(4)));
        assert_eq!(t.last_renewal("n"), Some(t0 + Duration::from_secs(4)));
        assert!(t.renew("n", t0 + Duration::from_secs(5)));
        t.set_leading(true);
        assert!(!t.renew("n", t0 + Duration::from_secs(30)));
        t.set_leading(false);
        assert!(t.renew("n", t0 + Duration::from_secs(30)), "lost the lead");
        t.forget("n");
        assert_eq!(t.last_renewal("n"), None);
    }

    #[test]
    fn standby_interval_leaves_the_leader_time_to_see_renewals() {
        for grace in [2, 8, 40] {
            let c = LeaseConfig::for_grace(Duration::from_secs(grace));
            assert!(c.persist_standby * 2 <= Duration::from_secs(grace));
            assert!(c.persist_leading >= c.persist_standby);
        }
    }

    proptest! {
        /// A standby that receives a renewal at least every `beat` makes one visible in the
        /// store at least every `every + beat`, whatever the pattern of renewals.
        #[test]
        fn stored_lease_is_never_staler_than_interval_plus_a_beat(
            every_ms in 100u64..5_000,
            gaps in proptest::collection::vec(1u64..1_000, 1..200),
        ) {
            let every = Duration::from_millis(every_ms);
            let beat = Duration::from_millis(1_000);
            let t = LeaseTable::new(LeaseConfig { persist_leading: every * 10, persist_standby: every });
            let t0 = Instant::now();
            let mut now = t0;
            let mut last_write = None::<Instant>;
            for g in gaps {
                now += Duration::from_millis(g);
                if t.renew("n", now) {
                    if let Some(w) = last_write {
                        prop_assert!(now - w <= every + beat);
                    }
                    t.persisted("n", now);
                    last_write = Some(now);
                } else {
                    let w = last_write.expect("the first renewal is written");
                    prop_assert!(now - w < every);
                }
            }
        }
    }
}

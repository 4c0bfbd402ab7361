//! Node lifecycle: agents renew a lease (status.leaseRenewTime) every 500 ms. A node whose
//! lease has not moved for `node_grace` (default 2 s) is marked Ready=False and its pods
//! Failed with reason NodeLost, so their deployments replace them elsewhere. When the lease
//! moves again the node is Ready again, and pods of it that were marked lost are deleted.
//!
//! Expiry is measured on the controller's own clock, from when it last *saw* the lease
//! change, as Kubernetes' node lifecycle controller does: clock skew between nodes does not
//! matter, and a restarted controller gives every node a full grace period. Renewals this
//! server answered from memory (`crate::leases`) count as much as stored ones.
//!
//! When many nodes expire at once (see `disruption`), they are still marked NotReady but their
//! pods are not failed: the control plane or the network is then the likelier culprit.

use super::disruption::ZoneHealth;
use super::{ControllerConfig, bounded};
use crate::registry::{Registry, Subresource};
use podd_api::{Kind, Node, NodeCondition, Pod, PodPhase};
use podd_scheduler::ZONE_LABEL;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const REASON_NODE_LOST: &str = "NodeLost";

/// The Ready condition's status ("True", "False", "Unknown"), or "" without one.
fn ready_status(n: &Node) -> &str {
    n.status
        .conditions
        .iter()
        .find(|c| c.kind == "Ready")
        .map(|c| c.status.as_str())
        .unwrap_or("")
}

fn with_ready(n: &Node, status: &str, reason: &str) -> serde_json::Value {
    let mut conds: Vec<NodeCondition> = n
        .status
        .conditions
        .iter()
        .filter(|c| c.kind != "Ready")
        .cloned()
        .collect();
    conds.push(NodeCondition {
        kind: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        last_transition_time: crate::time::now_rfc3339(),
    });
    serde_json::json!({"status": {"conditions": conds}})
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The string value of the first `"field":"..."` in a JSON document (our own serialisation,
/// so no escapes appear in the timestamps this reads).
fn json_str_field(json: &[u8], field: &str) -> String {
    let pat = format!("\"{field}\":\"");
    let pat = pat.as_bytes();
    let Some(start) = json.windows(pat.len()).position(|w| w == pat) else {
        return String::new();
    };
    let rest = &json[start + pat.len()..];
    let end = rest.iter().position(|b| *b == b'"').unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

struct Observed {
    lease: String,
    at: Instant,
}

/// The grace a node gets `since_start` after this controller started: at least `startup`
/// while the controller is younger than that, `grace` after.
pub fn effective_grace(since_start: Duration, grace: Duration, startup: Duration) -> Duration {
    if since_start < startup {
        grace.max(startup)
    } else {
        grace
    }
}

pub async fn run(
    registry: Arc<Registry>,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen: HashMap<String, Observed> = HashMap::new();
    let mut holding = false;
    let started = Instant::now();
    let mut tick = tokio::time::interval(config.node_monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        // Read leases and readiness straight from the cached JSON: decoding thousands of
        // nodes every tick would cost more than the rest of this loop.
        let (objs, _) = registry
            .cache()
            .snapshot(Kind::Node, &Kind::Node.key_prefix(None));
        let now = Instant::now();
        let grace = effective_grace(
            now.duration_since(started),
            config.node_grace,
            config.node_startup_grace,
        );
        // A set, not a scan of `objs` per entry: that was quadratic, 25 M string compares a
        // tick at 5,000 nodes, enough to keep a core busy on its own.
        let names: HashSet<&str> = objs.iter().map(|o| o.name.as_str()).collect();
        seen.retain(|name, _| names.contains(name.as_str()));
        drop(names);
        let mut health = ZoneHealth::default();
        let mut nodes = Vec::with_capacity(objs.len());
        for o in objs {
            let lease = json_str_field(&o.json, "leaseRenewTime");
            let obs = seen.entry(o.name.clone()).or_insert(Observed {
                lease: lease.clone(),
                at: now,
            });
            if obs.lease != lease {
                obs.lease = lease;
                obs.at = now;
            }
            // A renewal this server took without writing it counts as much as a stored one.
            let last = registry
                .leases()
                .last_renewal(&o.name)
                .map_or(obs.at, |t| t.max(obs.at));
            let expired = now.duration_since(last) > grace;
            let zone = o.labels.get(ZONE_LABEL).cloned().unwrap_or_default();
            health.add(&zone, !expired);
            nodes.push((o, expired, zone));
        }
        let disrupted = nodes.iter().any(|(_, _, z)| !health.may_evict(z));
        if disrupted != holding {
            holding = disrupted;
            if holding {
                tracing::warn!(
                    "most nodes stopped renewing their leases at once: the control plane or the network is more likely at fault than the nodes; their pods are not failed until they recover"
                );
            } else {
                tracing::info!("zone disruption over; pods of lost nodes are failed again");
            }
        }
        for (o, expired, zone) in nodes {
            // Only a node whose lease expired, or one that may be NotReady (some condition is
            // False), needs a closer look.
            if !expired && !contains(&o.json, br#""status":"False""#) {
                continue;
            }
            let Some(n) = o.decode::<Node>() else {
                continue;
            };
            let name = &o.name;
            let status = ready_status(&n);
            let may_evict = health.may_evict(&zone);
            if expired && status != "False" {
                tracing::info!(node = %name, may_evict, "node lease expired; marking it NotReady");
                if let Err(e) = registry
                    .patch(
                        Kind::Node,
                        "",
                        name,
                        with_ready(&n, "False", "NodeLeaseExpired"),
                        Subresource::Status,
                    )
                    .await
                {
                    tracing::warn!(node = %name, error = %e, "could not mark the node NotReady");
                    continue;
                }
                if may_evict {
                    fail_pods(&registry, &config, name).await;
                }
            } else if expired {
                // Pods bound to a NotReady node after it went down are lost too, and so are
                // those held back during a disruption that is over.
                if may_evict {
                    fail_pods(&registry, &config, name).await;
                }
            } else if status == "False" && !seen.get(name).is_none_or(|s| s.lease.is_empty()) {
                tracing::info!(node = %name, "node renewed its lease again; Ready, removing its stale pods");
                if let Err(e) = registry
                    .patch(
                        Kind::Node,
                        "",
                        name,
                        with_ready(&n, "True", "NodeLeaseRenewed"),
                        Subresource::Status,
                    )
                    .await
                {
                    tracing::warn!(node = %name, error = %e, "could not mark the node Ready");
                    continue;
                }
                delete_stale_pods(&registry, &config, name).await;
            }
        }
    }
}

/// Marks every live pod bound to `node` Failed with reason NodeLost.
async fn fail_pods(registry: &Arc<Registry>, config: &ControllerConfig, node: &str) {
    let pods: Vec<Pod> = registry
        .cache()
        .on_node(node)
        .iter()
        .filter_map(|o| o.decode::<Pod>())
        .filter(|p| !matches!(p.status.phase, PodPhase::Failed | PodPhase::Succeeded))
        .collect();
    let message = format!("node {node} stopped renewing its lease");
    let futs: Vec<_> = pods
        .iter()
        .map(|p| {
            let patch = serde_json::json!({"status": {
                "phase": "Failed", "ready": false, "reason": REASON_NODE_LOST, "message": message,
            }});
            registry.patch(
                Kind::Pod,
                &p.metadata.namespace,
                &p.metadata.name,
                patch,
                Subresource::Status,
            )
        })
        .collect();
    for r in bounded(futs, config.write_concurrency).await {
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not mark a pod lost");
        }
    }
}

/// Deletes the pods of `node` that were marked lost while it was away.
async fn delete_stale_pods(registry: &Arc<Registry>, config: &ControllerConfig, node: &str) {
    let pods: Vec<Pod> = registry
        .cache()
        .on_node(node)
        .iter()
        .filter_map(|o| o.decode::<Pod>())
        .filter(|p| p.status.phase == PodPhase::Failed && p.status.reason == REASON_NODE_LOST)
        .collect();
    let futs: Vec<_> = pods
        .iter()
        .map(|p| registry.delete(Kind::Pod, &p.metadata.namespace, &p.metadata.name, None))
        .collect();
    for r in bounded(futs, config.write_concurrency).await {
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not delete a stale pod");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_controller_gives_nodes_the_startup_grace() {
        let s = Duration::from_secs;
        assert_eq!(effective_grace(s(0), s(2), s(10)), s(10));
        assert_eq!(effective_grace(s(9), s(2), s(10)), s(10));
        assert_eq!(effective_grace(s(10), s(2), s(10)), s(2));
        assert_eq!(effective_grace(s(0), s(2), s(0)), s(2), "no startup grace");
        assert_eq!(effective_grace(s(0), s(40), s(10)), s(40), "never shorter");
    }

    #[test]
    fn reads_fields_from_json() {
        let j = br#"{"status":{"conditions":[{"type":"Ready","status":"True"}],"leaseRenewTime":"2026-01-01T00:00:00.5Z"}}"#;
        assert_eq!(
            json_str_field(j, "leaseRenewTime"),
            "2026-01-01T00:00:00.5Z"
        );
        assert_eq!(json_str_field(j, "nope"), "");
        assert!(contains(j, br#""status":"True""#));
    }
}

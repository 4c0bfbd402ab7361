//! Node lifecycle: agents renew their node's Lease (`kube-node-lease/<node>`,
//! `spec.renewTime`) every 500 ms. A node whose lease has not moved for `node_grace`
//! (default 2 s) is marked Ready=Unknown with reason NodeStatusUnknown (a NodeNotReady
//! event), its pods Failed with reason NodeLost, so their controllers replace them elsewhere
//! (but pods that tolerate `node.kubernetes.io/unreachable:NoExecute` for ever, as DaemonSet
//! pods do, stay as they are), and its pods that were being deleted are removed (no agent will confirm they stopped).
//! When the lease moves again the node is Ready again, and pods of it that were marked lost
//! are deleted.
//!
//! Expiry is measured on the controller's own clock, from when it last *saw* the lease
//! change, as Kubernetes' node lifecycle controller does: clock skew between nodes does not
//! matter, and a restarted controller gives every node a full grace period. Renewals this
//! server answered from memory (`crate::leases`) count as much as stored ones.
//!
//! When many nodes expire at once (see `disruption`), they are still marked NotReady but their
//! pods are not failed: the control plane or the network is then the likelier culprit. And a
//! server that falls behind on every renewal at once (an overloaded machine) judges each node
//! against the fleet's freshest quarter, not its own clock alone ([`fleet_lag`]).

use super::disruption::ZoneHealth;
use super::events::{self, Recorder};
use super::{ControllerConfig, bounded, force_delete_pod, pod_is_terminal, pod_is_terminating};
use crate::registry::{Registry, Subresource};
use podd_api::{Kind, Node, NodeCondition, Pod, ResourceExt, Time};
use podd_scheduler::ZONE_LABEL;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const REASON_NODE_LOST: &str = "NodeLost";
/// The taint Kubernetes puts on a node whose status is Unknown.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// The namespace of the nodes' heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node lifecycle controller's name in events.
pub const COMPONENT: &str = "node-controller";

/// The Ready condition's status ("True", "False", "Unknown"), or "" without one.
fn ready_status(n: &Node) -> &str {
    conditions(n)
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
        .unwrap_or("")
}

fn conditions(n: &Node) -> &[NodeCondition] {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

fn with_ready(n: &Node, status: &str, reason: &str, message: &str) -> serde_json::Value {
    let old = conditions(n).iter().find(|c| c.type_ == "Ready");
    let mut conds: Vec<NodeCondition> = conditions(n)
        .iter()
        .filter(|c| c.type_ != "Ready")
        .cloned()
        .collect();
    conds.push(NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: old.and_then(|c| c.last_heartbeat_time.clone()),
        last_transition_time: Some(super::transition_time(
            old.map(|c| (c.status.as_str(), c.last_transition_time.as_ref())),
            status,
        )),
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

/// The fewest nodes from which renewals are judged against the fleet's (below it, a node's
/// lease age alone decides).
pub const FLEET_LAG_MIN_NODES: usize = 4;

/// How far behind this server is with every node's renewals at once: the lease age that a
/// quarter of the nodes stay under. When the server (or the machine it runs on) falls behind,
/// every renewal reaches it late, the freshest ones too, so this grows with the backlog and
/// a node is lost only when its lease is `grace` older than that. A dead node's lease ages
/// alone, while the freshest quarter of the fleet stays young: its detection is unchanged.
/// (Measured in production by Kubernetes' long 40 s grace instead; podd's is 2 s.)
pub fn fleet_lag(ages: &[Duration]) -> Duration {
    if ages.len() < FLEET_LAG_MIN_NODES {
        return Duration::ZERO;
    }
    let mut sorted = ages.to_vec();
    let quarter = (sorted.len() - 1) / 4;
    *sorted.select_nth_unstable(quarter).1
}

pub async fn run(
    registry: Arc<Registry>,
    events: Recorder,
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
        let (lease_objs, _) = registry
            .cache()
            .snapshot(Kind::Lease, &Kind::Lease.key_prefix(Some(LEASE_NAMESPACE)));
        let renewals: HashMap<&str, String> = lease_objs
            .iter()
            .map(|o| (o.name.as_str(), json_str_field(&o.json, "renewTime")))
            .collect();
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
        let mut ages = Vec::with_capacity(objs.len());
        for o in &objs {
            let lease = renewals.get(o.name.as_str()).cloned().unwrap_or_default();
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
            ages.push(now.duration_since(last));
        }
        let lag = fleet_lag(&ages);
        let mut health = ZoneHealth::default();
        let mut nodes = Vec::with_capacity(objs.len());
        for (o, age) in objs.into_iter().zip(ages) {
            let expired = age > grace + lag;
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
            if !expired
                && !contains(&o.json, br#""status":"False""#)
                && !contains(&o.json, br#""status":"Unknown""#)
            {
                continue;
            }
            let Some(n) = o.decode::<Node>() else {
                continue;
            };
            let name = &o.name;
            let status = ready_status(&n);
            let may_evict = health.may_evict(&zone);
            let not_ready = status == "False" || status == "Unknown";
            if expired && !not_ready {
                tracing::info!(node = %name, may_evict, "node lease expired; marking it NotReady");
                if let Err(e) = registry
                    .patch(
                        Kind::Node,
                        "",
                        name,
                        with_ready(
                            &n,
                            "Unknown",
                            "NodeStatusUnknown",
                            "Kubelet stopped posting node status.",
                        ),
                        Subresource::Status,
                    )
                    .await
                {
                    tracing::warn!(node = %name, error = %e, "could not mark the node NotReady");
                    continue;
                }
                events.record(
                    &events::object_ref(&n),
                    events::NORMAL,
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                );
                if may_evict {
                    fail_pods(&registry, &config, name).await;
                }
            } else if expired {
                // Pods bound to a NotReady node after it went down are lost too, and so are
                // those held back during a disruption that is over.
                if may_evict {
                    fail_pods(&registry, &config, name).await;
                }
            } else if not_ready && !seen.get(name).is_none_or(|s| s.lease.is_empty()) {
                tracing::info!(node = %name, "node renewed its lease again; Ready, removing its stale pods");
                if let Err(e) = registry
                    .patch(
                        Kind::Node,
                        "",
                        name,
                        with_ready(
                            &n,
                            "True",
                            "KubeletReady",
                            "kubelet is posting ready status",
                        ),
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

/// The status patch that marks a pod of a lost node: Failed, reason NodeLost, not ready.
fn lost_patch(p: &Pod, message: &str) -> serde_json::Value {
    let now = Time(podd_api::jiff::Timestamp::now());
    let conds: Vec<podd_api::PodCondition> = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            if (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status != "False" {
                c.status = "False".into();
                c.reason = Some(REASON_NODE_LOST.into());
                c.last_transition_time = Some(now.clone());
            }
            c
        })
        .collect();
    serde_json::json!({"status": {
        "phase": "Failed", "reason": REASON_NODE_LOST, "message": message, "conditions": conds,
    }})
}

/// Whether a pod tolerates an unreachable node for ever (`node.kubernetes.io/unreachable`,
/// NoExecute, no `tolerationSeconds`), as DaemonSet pods do: Kubernetes' taint-based eviction
/// leaves such a pod on its node, so this controller does not fail it either.
pub fn tolerates_unreachable(p: &Pod) -> bool {
    let taint = podd_api::Taint {
        key: UNREACHABLE_TAINT.into(),
        effect: "NoExecute".into(),
        ..Default::default()
    };
    p.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.toleration_seconds.is_none() && podd_scheduler::tolerates(t, &taint))
}

/// Marks every live pod bound to `node` Failed with reason NodeLost (but those that
/// [`tolerates_unreachable`]), and removes the ones that were being deleted.
async fn fail_pods(registry: &Arc<Registry>, config: &ControllerConfig, node: &str) {
    let pods: Vec<Pod> = registry
        .cache()
        .on_node(node)
        .iter()
        .filter_map(|o| o.decode::<Pod>())
        .filter(|p| !pod_is_terminal(p) || pod_is_terminating(p))
        .filter(|p| pod_is_terminating(p) || !tolerates_unreachable(p))
        .collect();
    let message = format!("node {node} stopped renewing its lease");
    let futs: Vec<_> = pods
        .iter()
        .map(|p| async {
            let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
            if pod_is_terminating(p) {
                force_delete_pod(registry, &ns, &name).await
            } else {
                registry
                    .patch(
                        Kind::Pod,
                        &ns,
                        &name,
                        lost_patch(p, &message),
                        Subresource::Status,
                    )
                    .await
            }
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
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Failed")
                    && s.reason.as_deref() == Some(REASON_NODE_LOST)
            })
        })
        .collect();
    let futs: Vec<_> = pods
        .iter()
        .map(|p| async {
            force_delete_pod(registry, &p.namespace().unwrap_or_default(), &p.name_any()).await
        })
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
    fn the_fleet_lag_is_the_age_a_quarter_of_the_nodes_stay_under() {
        let ms = Duration::from_millis;
        // Too few nodes to judge by: no lag.
        assert_eq!(fleet_lag(&[ms(3000), ms(3000), ms(3000)]), Duration::ZERO);
        // A healthy fleet with one dead node: the lag stays a heartbeat's fraction, so the
        // dead node (age 2.5 s) is past a 2 s grace.
        let healthy = [
            ms(100),
            ms(300),
            ms(200),
            ms(2500),
            ms(400),
            ms(50),
            ms(450),
            ms(250),
        ];
        assert_eq!(fleet_lag(&healthy), ms(100));
        // A server 1.5 s behind on every renewal: the lag holds healthy nodes back from
        // expiry, while one 2 s older than the rest still expires.
        let behind: Vec<_> = [1600, 1800, 1700, 1900, 1550, 1650, 4000, 1750]
            .into_iter()
            .map(ms)
            .collect();
        let lag = fleet_lag(&behind);
        assert_eq!(lag, ms(1600));
        let grace = ms(2000);
        assert_eq!(behind.iter().filter(|&&age| age > grace + lag).count(), 1);
    }

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
        let j = br#"{"spec":{"holderIdentity":"n1","renewTime":"2026-01-01T00:00:00.500000Z"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;
        assert_eq!(
            json_str_field(j, "renewTime"),
            "2026-01-01T00:00:00.500000Z"
        );
        assert_eq!(json_str_field(j, "nope"), "");
        assert!(contains(j, br#""status":"True""#));
    }
}

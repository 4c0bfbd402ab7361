//! The pod garbage collector. Finished (Succeeded/Failed) pods stay, as in Kubernetes, so
//! their status and logs can be read; their controllers replace them. To keep them from
//! piling up, this keeps at most `terminated_pods_per_owner` (default
//! [`TERMINATED_PER_OWNER`]) finished pods per controlling owner and deletes the oldest
//! beyond that (Kubernetes' podgc keeps a cluster-wide 12,500; per owner bounds a crash loop
//! of one ReplicaSet without letting it evict everyone else's history). Finished pods without
//! an owner are left to whoever created them, and a Job's are kept for the Job (they are
//! what its controller counts; they go with the Job). It also removes pods that are terminating on a
//! node that no longer exists (no agent will ever confirm they stopped).

use super::{ControllerConfig, bounded, pod_is_terminal, pod_is_terminating};
use crate::registry::Registry;
use podd_api::resources::pod_node;
use podd_api::{Node, Pod, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;

/// Finished pods kept per controlling owner.
pub const TERMINATED_PER_OWNER: usize = 10;

/// When a finished pod finished (or was created, without a container end time).
fn finished_at(p: &Pod) -> Option<podd_api::jiff::Timestamp> {
    super::last_container_end(p).or(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The names (namespace, name) of the pods to collect.
pub fn collect(pods: &[Pod], nodes: &HashSet<String>, keep: usize) -> Vec<(String, String)> {
    let mut by_owner: HashMap<String, Vec<&Pod>> = HashMap::new();
    let mut out = Vec::new();
    for p in pods {
        if pod_is_terminating(p) && !pod_node(p).is_empty() && !nodes.contains(pod_node(p)) {
            out.push((p.namespace().unwrap_or_default(), p.name_any()));
            continue;
        }
        if !pod_is_terminal(p) || pod_is_terminating(p) {
            continue;
        }
        // A Job's finished pods are its record of completions and failures: they stay.
        if let Some(o) = p
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind != "Job")
        {
            by_owner.entry(o.uid.clone()).or_default().push(p);
        }
    }
    for (_, mut finished) in by_owner {
        if finished.len() <= keep {
            continue;
        }
        finished.sort_by_key(|p| finished_at(p));
        let extra = finished.len() - keep;
        out.extend(
            finished[..extra]
                .iter()
                .map(|p| (p.namespace().unwrap_or_default(), p.name_any())),
        );
    }
    out
}

pub async fn run(
    registry: Arc<Registry>,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(config.resync);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let nodes: HashSet<String> = registry
            .cached::<Node>(None)
            .iter()
            .map(|n| n.name_any())
            .collect();
        let pods: Vec<Pod> = registry.cached(None);
        let victims = collect(&pods, &nodes, config.terminated_pods_per_owner);
        let futs: Vec<_> = victims
            .iter()
            .map(|(ns, name)| super::force_delete_pod(&registry, ns, name))
            .collect();
        for r in bounded(futs, config.write_concurrency).await {
            if let Err(e) = r
                && e.code() != 404
            {
                tracing::debug!(error = %e, "pod GC could not delete a pod");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, owner: &str, created: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": owner, "controller": true}]},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn keeps_the_newest_finished_pods_per_owner() {
        let nodes: HashSet<String> = ["n1".to_string()].into();
        let mut pods: Vec<Pod> = (0..5)
            .map(|i| {
                pod(
                    &format!("f{i}"),
                    "Failed",
                    "a",
                    &format!("2026-01-01T00:00:0{i}Z"),
                )
            })
            .collect();
        pods.push(pod("run", "Running", "a", "2026-01-01T00:00:00Z"));
        pods.push(pod("other", "Failed", "b", "2026-01-01T00:00:00Z"));
        let got = collect(&pods, &nodes, 3);
        let names: Vec<&str> = got.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, vec!["f0", "f1"]);
        assert!(collect(&pods, &nodes, 10).is_empty(), "nothing at once");
    }

    #[test]
    fn terminating_pods_of_a_gone_node_are_removed() {
        let mut p = pod("t", "Running", "a", "2026-01-01T00:00:00Z");
        p.metadata.deletion_timestamp = Some(podd_api::Time(podd_api::jiff::Timestamp::now()));
        assert_eq!(collect(&[p.clone()], &HashSet::new(), 10).len(), 1);
        assert!(collect(&[p], &["n1".to_string()].into(), 10).is_empty());
    }
}

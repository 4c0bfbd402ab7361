//! The replicaset controller: keeps `spec.replicas` active pods of each ReplicaSet, as
//! Kubernetes' does. A pod is active while it has not finished (Succeeded/Failed) and is not
//! being deleted; a terminating or finished pod is replaced at once (its object stays until
//! its node has stopped it, or until the pod GC removes it). Pods are created from the
//! template with generateName `<rs>-` and a controller ownerReference; surplus pods are
//! deleted unscheduled first, then pending, then not ready, then newest first, and among
//! running ready pods as the scheduler chooses to keep the spread even.

use super::events::{self, Recorder};
use super::{
    ControllerConfig, OwnerIndex, SharedScheduler, WorkQueue, bounded, drain, ns_name,
    pod_is_terminal, pod_is_terminating, rev_of, rev_of_json,
};
use crate::registry::{Registry, Subresource};
use podd_api::resources::{pod_is_ready, pod_node, pod_phase};
use podd_api::selector::label_selector_matches;
use podd_api::{
    Kind, Metadata, ObjectMeta, OwnerReference, Pod, ReplicaSet, ReplicaSetStatus, ResourceExt,
};
use std::sync::Arc;
use tokio::sync::{Semaphore, watch};

/// The replicaset controller's name in events.
pub const COMPONENT: &str = "replicaset-controller";

/// Most pods one reconcile creates or deletes (Kubernetes' `burstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// Whether a pod counts toward its ReplicaSet's replicas.
pub fn is_active(p: &Pod) -> bool {
    !pod_is_terminal(p) && !pod_is_terminating(p)
}

/// What one reconcile decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: u32,
    /// Names of pods to delete.
    pub delete: Vec<String>,
}

/// The pure decision: given the ReplicaSet and its pods, how many to create and which to
/// delete. `choose` picks `n` of the given pods (by name) among running ready ones.
pub fn plan(rs: &ReplicaSet, pods: &[Pod], choose: &dyn Fn(&[&Pod], usize) -> Vec<String>) -> Plan {
    let replicas = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    let active: Vec<&Pod> = pods.iter().filter(|p| is_active(p)).collect();
    let mut plan = Plan::default();
    if active.len() < replicas {
        plan.create = (replicas - active.len()).min(BURST_REPLICAS) as u32;
    } else if active.len() > replicas {
        let n = (active.len() - replicas).min(BURST_REPLICAS);
        plan.delete = pods_to_delete(&active, n, choose);
    }
    plan
}

/// How early a pod goes on scale-down (lower first), as Kubernetes ranks them: unscheduled,
/// then pending, then not ready.
fn deletion_tier(p: &Pod) -> u8 {
    if pod_node(p).is_empty() {
        0
    } else if pod_phase(p) == "Pending" {
        1
    } else if pod_phase(p) == "Unknown" {
        2
    } else if !pod_is_ready(p) {
        3
    } else {
        4
    }
}

fn pods_to_delete(
    active: &[&Pod],
    n: usize,
    choose: &dyn Fn(&[&Pod], usize) -> Vec<String>,
) -> Vec<String> {
    let mut early: Vec<&Pod> = active
        .iter()
        .copied()
        .filter(|p| deletion_tier(p) < 4)
        .collect();
    // Lower tier first; within a tier the newest first.
    early.sort_by(|a, b| {
        deletion_tier(a).cmp(&deletion_tier(b)).then_with(|| {
            b.metadata
                .creation_timestamp
                .cmp(&a.metadata.creation_timestamp)
        })
    });
    let mut out: Vec<String> = early.iter().take(n).map(|p| p.name_any()).collect();
    if out.len() < n {
        let rest: Vec<&Pod> = active
            .iter()
            .copied()
            .filter(|p| deletion_tier(p) == 4)
            .collect();
        out.extend(choose(&rest, n - out.len()));
    }
    out.truncate(n);
    out
}

/// A pod of the ReplicaSet's template.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let t = rs
        .spec
        .as_ref()
        .map(|s| s.template.clone().unwrap_or_default())
        .unwrap_or_default();
    let tm = t.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
            ..ObjectMeta::default()
        },
        spec: t.spec,
        status: None,
    }
}

/// The controller ownerReference to `owner`, blocking its deletion in the foreground.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether a pod has been available for `min_ready_seconds`.
fn is_available(p: &Pod, min_ready_seconds: i32) -> bool {
    if !is_active(p) || !pod_is_ready(p) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    podd_api::resources::pod_condition(p, "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .is_some_and(|t| {
            podd_api::jiff::Timestamp::now().as_second() - t.0.as_second()
                >= i64::from(min_ready_seconds)
        })
}

/// The ReplicaSet's status over its pods.
pub fn status_of(rs: &ReplicaSet, pods: &[Pod]) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let active: Vec<&Pod> = pods.iter().filter(|p| is_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    let old = rs.status.clone().unwrap_or_default();
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(count(&|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.labels().get(k) == Some(v))
        })),
        ready_replicas: Some(count(&pod_is_ready)),
        available_replicas: Some(count(&|p| is_available(p, min_ready))),
        terminating_replicas: Some(
            pods.iter()
                .filter(|p| pod_is_terminating(p) && !pod_is_terminal(p))
                .count() as i32,
        ),
        observed_generation: rs.metadata.generation,
        conditions: old.conditions,
    }
}

/// What the controller reads of a pod. A reconcile reads every pod of its ReplicaSet, so they
/// are decoded without what it never reads (the spec but its node, managedFields, container
/// statuses), which is most of a pod.
#[derive(serde::Deserialize)]
struct PodView {
    metadata: PodViewMeta,
    spec: Option<PodViewSpec>,
    status: Option<PodViewStatus>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodViewMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    creation_timestamp: Option<podd_api::Time>,
    deletion_timestamp: Option<podd_api::Time>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodViewSpec {
    node_name: Option<String>,
}

#[derive(serde::Deserialize)]
struct PodViewStatus {
    phase: Option<String>,
    conditions: Option<Vec<podd_api::PodCondition>>,
}

impl From<PodView> for Pod {
    fn from(v: PodView) -> Pod {
        let m = v.metadata;
        Pod {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                labels: m.labels,
                creation_timestamp: m.creation_timestamp,
                deletion_timestamp: m.deletion_timestamp,
                ..ObjectMeta::default()
            },
            spec: v.spec.map(|s| podd_api::PodSpec {
                node_name: s.node_name,
                ..podd_api::PodSpec::default()
            }),
            status: v.status.map(|s| podd_api::PodStatus {
                phase: s.phase,
                conditions: s.conditions,
                ..podd_api::PodStatus::default()
            }),
        }
    }
}

/// The pods a ReplicaSet controls: owned by it and still matching its selector, with only
/// the fields of [`PodView`].
fn owned_pods(registry: &Registry, rs: &ReplicaSet) -> Vec<Pod> {
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let selector = rs
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    registry
        .cache()
        .owned_by(Kind::Pod, &uid)
        .iter()
        .filter(|o| label_selector_matches(&selector, &o.labels))
        .filter_map(|o| o.decode::<PodView>())
        .map(Pod::from)
        .collect()
}

struct Controller {
    registry: Arc<Registry>,
    sched: SharedScheduler,
    events: Recorder,
    config: ControllerConfig,
    /// One budget of `write_concurrency` writes in flight across the reconciles running at
    /// once (more in the store's queue only raises every write's latency).
    writes: Arc<Semaphore>,
}

impl Controller {
    async fn limited<T>(&self, write: impl std::future::Future<Output = T>) -> T {
        let _permit = self.writes.acquire().await;
        write.await
    }

    /// Reconciles one ReplicaSet; returns the highest revision it wrote.
    async fn reconcile(&self, key: &str) -> i64 {
        let Some(rs) = self
            .registry
            .cache()
            .get(Kind::ReplicaSet, key)
            .and_then(|o| o.decode::<ReplicaSet>())
        else {
            return 0;
        };
        if rs.metadata.deletion_timestamp.is_some() {
            return 0;
        }
        let pods = owned_pods(&self.registry, &rs);
        let sched = self.sched.clone();
        let choose = move |cands: &[&Pod], n: usize| -> Vec<String> {
            let keys: Vec<String> = cands.iter().map(|p| ns_name(&p.metadata)).collect();
            let chosen = sched
                .lock()
                .map(|s| s.choose_scale_down(&keys, n))
                .unwrap_or_default();
            chosen
                .into_iter()
                .filter_map(|k| k.split_once('/').map(|(_, n)| n.to_string()))
                .collect()
        };
        let p = plan(&rs, &pods, &choose);
        let ns = rs.namespace().unwrap_or_default();
        let me = events::object_ref(&rs);
        let mut max_rev = 0;
        if !p.delete.is_empty() {
            let ns = &ns;
            let futs: Vec<_> = p
                .delete
                .iter()
                .map(|name| async move {
                    let r = self
                        .limited(self.registry.delete(Kind::Pod, ns, name, None))
                        .await;
                    (name, r)
                })
                .collect();
            for (name, r) in bounded(futs, self.config.write_concurrency).await {
                match r {
                    Ok(v) => {
                        self.events.record(
                            &me,
                            events::NORMAL,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {name}"),
                        );
                        max_rev = max_rev.max(rev_of_json(&v))
                    }
                    Err(e) => tracing::debug!(error = %e, replicaset = key, "pod delete failed"),
                }
            }
        }
        if p.create > 0 {
            let pod = pod_from_template(&rs);
            let futs: Vec<_> = (0..p.create)
                .map(|_| self.limited(self.registry.create_obj(&pod)))
                .collect();
            for r in bounded(futs, self.config.write_concurrency).await {
                match r {
                    Ok(created) => {
                        self.events.record(
                            &me,
                            events::NORMAL,
                            "SuccessfulCreate",
                            &format!("Created pod: {}", created.name_any()),
                        );
                        max_rev = max_rev.max(rev_of(created.metadata()));
                    }
                    Err(e) => {
                        self.events.record(
                            &me,
                            events::WARNING,
                            "FailedCreate",
                            &format!("Error creating: {e}"),
                        );
                        tracing::warn!(error = %e, replicaset = key, "could not create a pod")
                    }
                }
            }
        }
        let status = status_of(&rs, &pods);
        if Some(&status) != rs.status.as_ref() {
            let mut nrs = rs.clone();
            nrs.status = Some(status);
            match self
                .limited(self.registry.update_obj(&nrs, Subresource::Status))
                .await
            {
                Ok(u) => max_rev = max_rev.max(rev_of(u.metadata())),
                Err(e) => tracing::debug!(error = %e, replicaset = key, "status update failed"),
            }
        }
        max_rev
    }
}

pub async fn run(
    registry: Arc<Registry>,
    sched: SharedScheduler,
    events: Recorder,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let cache = registry.cache().clone();
    let mut rs_rx = cache.subscribe_now(Kind::ReplicaSet);
    let mut pods_rx = cache.subscribe_now(Kind::Pod);
    let mut rev_rx = cache.revision_watch();
    let ctl = Controller {
        registry: registry.clone(),
        sched,
        events,
        config: config.clone(),
        writes: Arc::new(Semaphore::new(config.write_concurrency.max(1))),
    };
    let mut queue = WorkQueue::default();
    let mut owners = OwnerIndex::default();
    let mut resync = tokio::time::interval(config.resync);
    let mut full = true;
    loop {
        if full {
            full = false;
            owners.relist(&cache, Kind::ReplicaSet, &mut queue);
        }
        let mut ok = drain(&mut rs_rx, Kind::ReplicaSet, &registry, |ev| {
            owners.owner_event(ev, &mut queue)
        });
        ok &= drain(&mut pods_rx, Kind::Pod, &registry, |ev| {
            owners.owned_event(ev, &mut queue)
        });
        if !ok {
            full = true;
            continue;
        }
        let ready = queue.take_ready(cache.revision());
        if !ready.is_empty() {
            let futs: Vec<_> = ready
                .iter()
                .map(|k| async { (k.clone(), ctl.reconcile(k).await) })
                .collect();
            for (k, r) in bounded(futs, 16).await {
                if r > 0 {
                    queue.barrier(&k, r);
                    queue.add(k);
                }
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = resync.tick() => full = true,
            r = rs_rx.recv() => match r {
                Ok(ev) => owners.owner_event(&ev, &mut queue),
                Err(_) => { rs_rx = cache.subscribe_now(Kind::ReplicaSet); full = true; }
            },
            r = pods_rx.recv() => match r {
                Ok(ev) => owners.owned_event(&ev, &mut queue),
                Err(_) => { pods_rx = cache.subscribe_now(Kind::Pod); full = true; }
            },
            _ = rev_rx.changed(), if queue.has_waiting() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default", "uid": "u1"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}
                }
            }
        }))
        .unwrap()
    }

    pub(crate) fn pod(name: &str, node: &str, phase: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default",
                "labels": {"app": "web", "pod-template-hash": "abc"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn first(c: &[&Pod], n: usize) -> Vec<String> {
        c.iter().take(n).map(|p| p.name_any()).collect()
    }

    #[test]
    fn scale_up_and_down() {
        assert_eq!(plan(&rs(3), &[], &first).create, 3);
        let pods: Vec<Pod> = (0..5)
            .map(|i| pod(&format!("p{i}"), "n", "Running", true))
            .collect();
        let p = plan(&rs(3), &pods, &first);
        assert_eq!((p.create, p.delete.len()), (0, 2));
    }

    #[test]
    fn terminal_and_terminating_pods_are_replaced_not_deleted() {
        let mut gone = pod("t", "n", "Running", true);
        gone.metadata.deletion_timestamp = Some(podd_api::Time(podd_api::jiff::Timestamp::now()));
        let pods = vec![
            pod("a", "n", "Running", true),
            pod("f", "n", "Failed", false),
            pod("s", "n", "Succeeded", false),
            gone,
        ];
        let p = plan(&rs(3), &pods, &first);
        assert_eq!(p.create, 2);
        assert!(p.delete.is_empty(), "finished pods are left to the pod GC");
        let st = status_of(&rs(3), &pods);
        assert_eq!(st.replicas, 1);
        assert_eq!(st.terminating_replicas, Some(1));
    }

    #[test]
    fn surplus_goes_unscheduled_then_not_ready_first() {
        let pods = vec![
            pod("ready", "n", "Running", true),
            pod("notready", "n", "Running", false),
            pod("pending", "n", "Pending", false),
            pod("unscheduled", "", "Pending", false),
        ];
        let p = plan(&rs(1), &pods, &first);
        assert_eq!(p.delete, vec!["unscheduled", "pending", "notready"]);
    }

    #[test]
    fn pods_carry_the_template_and_a_controller_ref() {
        let p = pod_from_template(&rs(1));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(
            p.labels().get("pod-template-hash").map(String::as_str),
            Some("abc")
        );
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ReplicaSet", "u1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }
}

//! The scheduler loop: keeps podd-scheduler's model in step with the cache (nodes, bound pods),
//! places pending pods in batches and binds them (spec.nodeName, with a resourceVersion
//! precondition). A pod no node can take gets status reason `Unschedulable` with the
//! scheduler's message and a PodScheduled=False condition, and is tried again only when the
//! scheduler's `cluster_generation` has moved (a node or a binding changed), never in a busy
//! loop. Every placement writes a `Scheduled` event and every failed attempt a
//! `FailedScheduling` one, as kube-scheduler does.

use super::events::{self, Recorder};
use super::{
    ControllerConfig, SharedScheduler, bounded, drain, patch_status_strategic, pod_is_terminal,
};
use crate::cache::CacheEvent;
use crate::registry::{Registry, Subresource};
use podd_api::resources::{pod_condition, pod_node};
use podd_api::{Kind, Node, Pod, ResourceExt, WatchEventType};
use podd_scheduler::{NodeInfo, PodInfo, Scheduler};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::watch;

pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";

/// kube-scheduler's name in events.
pub const COMPONENT: &str = "default-scheduler";

fn pod_key(ev: &CacheEvent) -> String {
    format!("{}/{}", ev.object.namespace, ev.object.name)
}

fn is_terminal(p: &Pod) -> bool {
    pod_is_terminal(p)
}

/// Whether the pod already says it is unschedulable for `message`.
fn says_unschedulable(p: &Pod, message: &str) -> bool {
    pod_condition(p, "PodScheduled").is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some(REASON_UNSCHEDULABLE)
            && c.message.as_deref() == Some(message)
    })
}

struct Loop {
    registry: Arc<Registry>,
    sched: SharedScheduler,
    events: Recorder,
    config: ControllerConfig,
    pending: BTreeSet<String>,
    /// pod key -> the cluster generation at which it did not fit.
    unschedulable: HashMap<String, u64>,
    /// pod key -> when this loop first saw it pending, for the scheduling-latency metric.
    first_seen: HashMap<String, Instant>,
}

impl Loop {
    fn lock(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the model from the cache.
    fn rebuild(&mut self) {
        let cache = self.registry.cache();
        let (nodes, _) = cache.snapshot(Kind::Node, &Kind::Node.key_prefix(None));
        let (pods, _) = cache.snapshot(Kind::Pod, &Kind::Pod.key_prefix(None));
        let mut s = Scheduler::new(self.config.scheduler.clone());
        for n in nodes.iter().filter_map(|o| o.decode::<Node>()) {
            s.upsert_node(NodeInfo::from_node(&n));
        }
        self.pending.clear();
        for o in &pods {
            if o.node_name.is_empty() {
                let key = format!("{}/{}", o.namespace, o.name);
                self.first_seen
                    .entry(key.clone())
                    .or_insert_with(Instant::now);
                self.pending.insert(key);
                continue;
            }
            if let Some(p) = o.decode::<Pod>()
                && !is_terminal(&p)
            {
                s.assume_bound(&PodInfo::from_pod(&p), pod_node(&p));
            }
        }
        *self.lock() = s;
        // Pods deleted while the watch lagged left no Deleted event to forget them by.
        let pending = &self.pending;
        self.first_seen.retain(|k, _| pending.contains(k));
    }

    fn on_node(&mut self, ev: &CacheEvent) {
        if ev.kind == WatchEventType::Deleted {
            self.lock().remove_node(&ev.object.name);
        } else if let Some(n) = ev.object.decode::<Node>() {
            self.lock().upsert_node(NodeInfo::from_node(&n));
        }
    }

    fn on_pod(&mut self, ev: &CacheEvent) {
        let key = pod_key(ev);
        if ev.kind == WatchEventType::Deleted {
            self.pending.remove(&key);
            self.unschedulable.remove(&key);
            self.first_seen.remove(&key);
            self.lock().forget_pod(&key);
            return;
        }
        if ev.object.node_name.is_empty() {
            self.first_seen
                .entry(key.clone())
                .or_insert_with(Instant::now);
            self.pending.insert(key);
            return;
        }
        self.pending.remove(&key);
        self.unschedulable.remove(&key);
        self.first_seen.remove(&key);
        let Some(p) = ev.object.decode::<Pod>() else {
            return;
        };
        let mut s = self.lock();
        if is_terminal(&p) {
            s.forget_pod(&key);
        } else if s.pod_node(&key) != Some(pod_node(&p)) {
            s.forget_pod(&key);
            s.assume_bound(&PodInfo::from_pod(&p), pod_node(&p));
        }
    }

    /// Places up to one batch of pending pods; returns how many it tried.
    async fn schedule_round(&mut self) -> usize {
        let generation = self.lock().cluster_generation();
        let cache = self.registry.cache().clone();
        let mut batch: Vec<(Pod, i64)> = Vec::new();
        let mut gone = Vec::new();
        for key in self.pending.iter() {
            if batch.len() >= self.config.scheduler_batch {
                break;
            }
            if self.unschedulable.get(key) == Some(&generation) {
                continue;
            }
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            match cache.get(Kind::Pod, &Kind::Pod.key(ns, name)) {
                Some(o) if o.node_name.is_empty() => match o.decode::<Pod>() {
                    // A pod being deleted is not placed (kube-scheduler skips it too).
                    Some(p) if !is_terminal(&p) && p.metadata.deletion_timestamp.is_none() => {
                        batch.push((p, o.revision))
                    }
                    _ => gone.push(key.clone()),
                },
                _ => gone.push(key.clone()),
            }
        }
        for k in gone {
            self.pending.remove(&k);
            self.first_seen.remove(&k);
        }
        if batch.is_empty() {
            return 0;
        }
        let infos: Vec<PodInfo> = batch.iter().map(|(p, _)| PodInfo::from_pod(p)).collect();
        let results = self.lock().schedule_batch(&infos);
        let mut binds = Vec::new();
        let mut failures = Vec::new();
        for ((pod, rev), (info, res)) in batch.into_iter().zip(infos.into_iter().zip(results)) {
            self.pending.remove(&info.key);
            match res {
                Ok(node) => binds.push((pod, rev, info.key, node)),
                Err(u) => {
                    self.registry
                        .metrics
                        .unschedulable
                        .fetch_add(1, Ordering::Relaxed);
                    self.unschedulable.insert(info.key.clone(), u.generation);
                    self.pending.insert(info.key);
                    self.events.record(
                        &events::object_ref(&pod),
                        events::WARNING,
                        "FailedScheduling",
                        &u.message,
                    );
                    if !says_unschedulable(&pod, &u.message) {
                        failures.push((pod, u.message));
                    }
                }
            }
        }
        let tried = binds.len() + failures.len();
        let registry = self.registry.clone();
        let bind_futs: Vec<_> = binds
            .into_iter()
            .map(|(pod, rev, key, node)| {
                let registry = registry.clone();
                let events = self.events.clone();
                async move {
                    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
                    let patch = serde_json::json!({
                        "metadata": {"resourceVersion": rev.to_string()},
                        "spec": {"nodeName": node},
                    });
                    let r = registry
                        .patch(Kind::Pod, &ns, &name, patch, Subresource::Main)
                        .await;
                    // PodScheduled=True, as kube-apiserver's binding writes it. A pod that was
                    // never refused gets it from its agent's first status report (which lists
                    // every condition), saving a write per pod; one that was marked
                    // Unschedulable gets it now, so it does not read False meanwhile.
                    if r.is_ok() && pod_condition(&pod, "PodScheduled").is_some() {
                        let condition = serde_json::json!({"status": {"conditions": [{
                            "type": "PodScheduled", "status": "True",
                            "lastTransitionTime": podd_api::Time(podd_api::jiff::Timestamp::now()),
                        }]}});
                        if let Err(e) =
                            patch_status_strategic(&registry, Kind::Pod, &ns, &name, condition)
                                .await
                        {
                            tracing::debug!(pod = %key, error = %e, "could not write PodScheduled");
                        }
                    }
                    if r.is_ok() {
                        events.record(
                            &events::object_ref(&pod),
                            events::NORMAL,
                            "Scheduled",
                            &format!("Successfully assigned {ns}/{name} to {node}"),
                        );
                    }
                    (key, r)
                }
            })
            .collect();
        for (key, r) in bounded(bind_futs, self.config.write_concurrency).await {
            match r {
                Ok(_) => {
                    if let Some(t) = self.first_seen.remove(&key) {
                        self.registry.metrics.scheduling.observe(t.elapsed());
                    }
                }
                Err(e) => {
                    tracing::debug!(pod = %key, error = %e, "binding failed; will retry");
                    self.lock().forget_pod(&key);
                    self.pending.insert(key);
                }
            }
        }
        let status_futs: Vec<_> = failures
            .into_iter()
            .map(|(pod, message)| {
                let registry = registry.clone();
                async move {
                    // kube-scheduler writes only the condition; the phase stays Pending.
                    let patch = serde_json::json!({"status": {
                        "phase": "Pending",
                        "conditions": [{"type": "PodScheduled", "status": "False",
                            "reason": REASON_UNSCHEDULABLE, "message": message,
                            "lastTransitionTime": podd_api::Time(podd_api::jiff::Timestamp::now())}],
                    }});
                    patch_status_strategic(
                        &registry,
                        Kind::Pod,
                        &pod.namespace().unwrap_or_default(),
                        &pod.name_any(),
                        patch,
                    )
                    .await
                }
            })
            .collect();
        for r in bounded(status_futs, self.config.write_concurrency).await {
            if let Err(e) = r {
                tracing::debug!(error = %e, "could not record an unschedulable pod");
            }
        }
        tried
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
    let mut pods_rx = cache.subscribe_now(Kind::Pod);
    let mut nodes_rx = cache.subscribe_now(Kind::Node);
    let mut resync = tokio::time::interval(config.resync);
    let mut l = Loop {
        registry: registry.clone(),
        sched,
        events,
        config,
        pending: BTreeSet::new(),
        unschedulable: HashMap::new(),
        first_seen: HashMap::new(),
    };
    l.rebuild();
    loop {
        let mut ok = drain(&mut nodes_rx, Kind::Node, &registry, |ev| l.on_node(ev));
        ok &= drain(&mut pods_rx, Kind::Pod, &registry, |ev| l.on_pod(ev));
        if !ok {
            pods_rx = cache.subscribe_now(Kind::Pod);
            nodes_rx = cache.subscribe_now(Kind::Node);
            l.rebuild();
            continue;
        }
        if l.schedule_round().await > 0 {
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = resync.tick() => {
                // Pods whose status write raced with a change: look at everything again.
                let (pods, _) = cache.snapshot(Kind::Pod, &Kind::Pod.key_prefix(None));
                for o in pods.iter().filter(|o| o.node_name.is_empty()) {
                    l.pending.insert(format!("{}/{}", o.namespace, o.name));
                }
            }
            r = pods_rx.recv() => match r {
                Ok(ev) => l.on_pod(&ev),
                Err(_) => { pods_rx = cache.subscribe_now(Kind::Pod); l.rebuild(); }
            },
            r = nodes_rx.recv() => match r {
                Ok(ev) => l.on_node(&ev),
                Err(_) => { nodes_rx = cache.subscribe_now(Kind::Node); l.rebuild(); }
            },
        }
    }
}

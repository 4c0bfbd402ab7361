//! The controllers: level-triggered, idempotent reconcile loops in the server process.
//!
//! They read the watch cache (the server's one shared informer, with indexes by owner and by
//! node), are woken by its events and by a periodic resync, and write through the registry.
//! After writing, a controller waits until the cache has seen its own writes before it
//! reconciles the same object again (a read-your-writes barrier), so it never acts twice on a
//! stale view (Kubernetes uses "expectations" for this).

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod hpa;
pub mod job;
pub mod namespace;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod scheduling;

use crate::cache::CacheEvent;
use crate::registry::Registry;
use podd_api::{Kind, WatchEventType};
use podd_scheduler::{Scheduler, SchedulerConfig};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Every controller re-examines everything this often, events or not.
    pub resync: Duration,
    /// A node whose lease has not been renewed for this long is NotReady.
    pub node_grace: Duration,
    /// How often the node lifecycle controller checks leases.
    pub node_monitor_period: Duration,
    /// For this long after the node lifecycle controller starts (a server restart, a new
    /// leader), a node's grace is at least this: the agents are reconnecting, and the
    /// controller has no history of its own yet (Kubernetes' node-startup grace is 60 s).
    /// Zero in tests that time node loss from the start.
    pub node_startup_grace: Duration,
    /// Most pods the scheduler loop places in one batch.
    pub scheduler_batch: usize,
    pub scheduler: SchedulerConfig,
    /// How often the autoscaler evaluates.
    pub hpa_period: Duration,
    /// Kubernetes' tolerance: no scaling while |usage/target - 1| <= this.
    pub hpa_tolerance: f64,
    /// Scale-down stabilisation when the HPA does not set one (Kubernetes: 300 s).
    pub hpa_default_downscale_window: Duration,
    /// Concurrent writes one controller issues at once (pod creations, bindings, ...).
    pub write_concurrency: usize,
    /// The store's history is compacted to the revision of one interval ago, every interval
    /// (Kubernetes: 5 min), so it does not grow without bound; watches older than that get
    /// 410 and relist.
    pub compact_every: Duration,
    /// Events older than this are deleted (kube-apiserver's `--event-ttl`).
    pub event_ttl: Duration,
    /// Events the controllers write per second, all together (more are dropped).
    pub event_qps: u32,
    /// Terminal (Succeeded/Failed) pods kept per owner before the pod GC deletes the oldest.
    pub terminated_pods_per_owner: usize,
    /// The job controller's back-off before replacing a failed pod, doubled per failure
    /// (Kubernetes: 10 s).
    pub job_backoff: Duration,
    /// The clock CronJob schedules are read against: the wall clock, or a test's.
    pub cronjob_clock: fn() -> podd_api::jiff::Timestamp,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            resync: Duration::from_secs(10),
            node_grace: Duration::from_secs(2),
            node_monitor_period: Duration::from_millis(200),
            node_startup_grace: Duration::ZERO,
            scheduler_batch: 512,
            scheduler: SchedulerConfig::default(),
            hpa_period: Duration::from_secs(5),
            hpa_tolerance: 0.1,
            hpa_default_downscale_window: Duration::from_secs(300),
            write_concurrency: 64,
            compact_every: Duration::from_secs(300),
            event_ttl: events::EVENT_TTL,
            event_qps: events::DEFAULT_QPS,
            terminated_pods_per_owner: podgc::TERMINATED_PER_OWNER,
            job_backoff: job::DEFAULT_BACKOFF,
            cronjob_clock: podd_api::jiff::Timestamp::now,
        }
    }
}

/// The scheduler model, shared by the scheduler loop (which places pods) and the deployment
/// controller (which asks it which pods to remove on scale-down).
pub type SharedScheduler = Arc<Mutex<Scheduler>>;

pub fn spawn_all(
    registry: Arc<Registry>,
    config: ControllerConfig,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let sched: SharedScheduler = Arc::new(Mutex::new(Scheduler::new(config.scheduler.clone())));
    let events = events::Recorder::new(registry.clone(), "controller-manager", config.event_qps);
    vec![
        tokio::spawn(scheduling::run(
            registry.clone(),
            sched.clone(),
            events.for_component(scheduling::COMPONENT),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(deployment::run(
            registry.clone(),
            events.for_component(deployment::COMPONENT),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(replicaset::run(
            registry.clone(),
            sched,
            events.for_component(replicaset::COMPONENT),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(podgc::run(
            registry.clone(),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(nodelifecycle::run(
            registry.clone(),
            events.for_component(nodelifecycle::COMPONENT),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(endpoints::run(
            registry.clone(),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(job::run(
            registry.clone(),
            events.for_component(job::COMPONENT),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(daemonset::run(
            registry.clone(),
            events.for_component(daemonset::COMPONENT),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(namespace::run(
            registry.clone(),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(cronjob::run(
            registry.clone(),
            events.for_component(cronjob::COMPONENT),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(hpa::run(
            registry.clone(),
            events.for_component(hpa::COMPONENT),
            config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(events::sweep(
            events,
            config.event_ttl,
            (config.event_ttl / 6).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            shutdown.clone(),
        )),
        tokio::spawn(compactor(registry, config.compact_every, shutdown)),
    ]
}

/// Compacts the store every `every` to the revision seen one interval before.
async fn compactor(registry: Arc<Registry>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut previous: Option<i64> = None;
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        if let Some(rev) = previous
            && rev > 0
            && let Err(e) = registry.compact(rev).await
        {
            tracing::warn!(revision = rev, error = %e, "compaction failed");
        }
        previous = registry.store().revision().await.ok();
    }
}

/// The owners a controller keeps (uid -> key), so that an event of an object they own queues
/// its owner: the Deployment of a ReplicaSet, the ReplicaSet or Job of a pod.
#[derive(Default)]
pub struct OwnerIndex(HashMap<String, String>);

impl OwnerIndex {
    /// An owner's event: remember it (and queue it) or, when deleted, forget it.
    pub fn owner_event(&mut self, ev: &CacheEvent, queue: &mut WorkQueue) {
        if ev.kind == WatchEventType::Deleted {
            self.0.remove(&ev.object.uid);
        } else {
            self.0.insert(ev.object.uid.clone(), ev.object.key.clone());
            queue.add(ev.object.key.clone());
        }
    }

    /// An owned object's event: queue each of its owners this index knows.
    pub fn owned_event(&self, ev: &CacheEvent, queue: &mut WorkQueue) {
        for uid in ev.object.owners.iter() {
            if let Some(key) = self.0.get(uid) {
                queue.add(key.clone());
            }
        }
    }

    /// Rebuilds the index from the cache's objects of the owner kind and queues every one.
    pub fn relist(&mut self, cache: &crate::cache::WatchCache, kind: Kind, queue: &mut WorkQueue) {
        let (all, _) = cache.snapshot(kind, &kind.key_prefix(None));
        self.0 = all.iter().map(|o| (o.uid.clone(), o.key.clone())).collect();
        for o in all {
            queue.add(o.key.clone());
        }
    }
}

/// A set of keys to reconcile, with per-key barriers (the revision of the controller's last
/// write for that key).
#[derive(Default)]
pub struct WorkQueue {
    dirty: BTreeSet<String>,
    barriers: HashMap<String, i64>,
}

impl WorkQueue {
    pub fn add(&mut self, key: impl Into<String>) {
        self.dirty.insert(key.into());
    }

    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Takes the keys whose barrier the cache (at `rev`) has passed; the others stay queued.
    pub fn take_ready(&mut self, rev: i64) -> Vec<String> {
        let ready: Vec<String> = self
            .dirty
            .iter()
            .filter(|k| self.barriers.get(*k).is_none_or(|b| *b <= rev))
            .cloned()
            .collect();
        for k in &ready {
            self.dirty.remove(k);
            self.barriers.remove(k);
        }
        ready
    }

    /// Marks that `key` was written at `rev`: it is next reconciled after the cache sees it.
    pub fn barrier(&mut self, key: &str, rev: i64) {
        let b = self.barriers.entry(key.to_string()).or_insert(0);
        *b = (*b).max(rev);
    }

    pub fn has_waiting(&self) -> bool {
        !self.dirty.is_empty()
    }
}

/// Receives one event, or None on resync (timeout), or Err(()) when the receiver lagged or
/// closed (the caller should resync everything).
pub async fn next_event(
    rx: &mut broadcast::Receiver<Arc<CacheEvent>>,
) -> Result<Arc<CacheEvent>, ()> {
    match rx.recv().await {
        Ok(ev) => Ok(ev),
        Err(broadcast::error::RecvError::Lagged(_)) => Err(()),
        Err(broadcast::error::RecvError::Closed) => {
            // The cache relisted and replaced its senders; the caller resubscribes.
            Err(())
        }
    }
}

/// Drains whatever is already queued on a receiver without waiting.
pub fn drain(
    rx: &mut broadcast::Receiver<Arc<CacheEvent>>,
    kind: Kind,
    registry: &Registry,
    mut f: impl FnMut(&CacheEvent),
) -> bool {
    loop {
        match rx.try_recv() {
            Ok(ev) => f(&ev),
            Err(broadcast::error::TryRecvError::Empty) => return true,
            Err(broadcast::error::TryRecvError::Lagged(_)) => return false,
            Err(broadcast::error::TryRecvError::Closed) => {
                *rx = registry.cache().subscribe_now(kind);
                return false;
            }
        }
    }
}

/// The revision an API write returned, from its metadata.resourceVersion.
pub fn rev_of(meta: &podd_api::ObjectMeta) -> i64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `namespace/name` of an object, the key the work queues and the scheduler use.
pub fn ns_name(meta: &podd_api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The latest end time among a pod's terminated containers, if any has one.
pub fn last_container_end(p: &podd_api::Pod) -> Option<podd_api::jiff::Timestamp> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter()
                .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
                .map(|t| t.0)
                .max()
        })
}

/// Whether a pod has finished (Succeeded or Failed): it holds no resources and is not
/// active for its controller.
pub fn pod_is_terminal(p: &podd_api::Pod) -> bool {
    matches!(podd_api::resources::pod_phase(p), "Succeeded" | "Failed")
}

/// Deletes a pod at once (grace period 0), as `kubectl delete --force` does: for pods whose
/// node will never confirm they stopped.
pub async fn force_delete_pod(
    registry: &Registry,
    ns: &str,
    name: &str,
) -> Result<serde_json::Value, crate::ApiError> {
    let options = crate::registry::DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    registry.delete_with(Kind::Pod, ns, name, &options).await
}

/// Patches an object's status with a strategic merge patch, as Kubernetes' controllers do:
/// `conditions` merge by type, so a condition written here does not wipe the ones another
/// writer (the agent, the scheduler) set meanwhile.
pub async fn patch_status_strategic(
    registry: &Registry,
    kind: Kind,
    ns: &str,
    name: &str,
    patch: serde_json::Value,
) -> Result<serde_json::Value, crate::ApiError> {
    registry
        .patch_with(
            kind,
            ns,
            name,
            podd_api::patch::PatchType::Strategic,
            patch,
            crate::registry::Subresource::Status,
            &crate::registry::WriteOptions::default(),
        )
        .await
        .map(|w| w.object)
}

/// Whether a pod is being deleted (it shows Terminating).
pub fn pod_is_terminating(p: &podd_api::Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// A condition's lastTransitionTime: now when the status changed, else the old one.
pub fn transition_time(
    old: Option<(&str, Option<&podd_api::Time>)>,
    status: &str,
) -> podd_api::Time {
    match old {
        Some((s, Some(t))) if s == status => t.clone(),
        _ => podd_api::Time(podd_api::jiff::Timestamp::now()),
    }
}

/// The resourceVersion of an object the registry returned as JSON (0 without one): what a
/// delete answers.
pub fn rev_of_json(v: &serde_json::Value) -> i64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(|x| x.as_str())
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// Deletes the pods `names` of `ns` for the controller of `owner`, at most `concurrency` at a
/// time, with a SuccessfulDelete event on the owner for each; returns the highest
/// resourceVersion written (0 when none was), for the work queue's barrier.
pub async fn delete_owned_pods(
    registry: &Registry,
    recorder: &events::Recorder,
    owner: &podd_api::ObjectReference,
    ns: &str,
    names: &[String],
    concurrency: usize,
) -> i64 {
    let deletes: Vec<_> = names
        .iter()
        .map(|pod| async move { (pod, registry.delete(Kind::Pod, ns, pod, None).await) })
        .collect();
    let mut max_rev = 0;
    for (pod, r) in bounded(deletes, concurrency).await {
        match r {
            Ok(v) => {
                recorder.record(
                    owner,
                    events::NORMAL,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pod}"),
                );
                max_rev = max_rev.max(rev_of_json(&v));
            }
            Err(e) => {
                tracing::debug!(error = %e, owner = ?owner.name, pod = %pod, "pod delete failed")
            }
        }
    }
    max_rev
}

/// Creates `pods` for the controller of `owner`, at most `concurrency` at a time, with a
/// SuccessfulCreate (or FailedCreate) event on the owner for each; returns the highest
/// resourceVersion written (0 when none was).
pub async fn create_owned_pods(
    registry: &Registry,
    recorder: &events::Recorder,
    owner: &podd_api::ObjectReference,
    pods: Vec<podd_api::Pod>,
    concurrency: usize,
) -> i64 {
    use podd_api::ResourceExt;
    let creates: Vec<_> = pods.iter().map(|pod| registry.create_obj(pod)).collect();
    let mut max_rev = 0;
    for r in bounded(creates, concurrency).await {
        match r {
            Ok(created) => {
                recorder.record(
                    owner,
                    events::NORMAL,
                    "SuccessfulCreate",
                    &format!("Created pod: {}", created.name_any()),
                );
                max_rev = max_rev.max(rev_of(&created.metadata));
            }
            Err(e) => {
                recorder.record(
                    owner,
                    events::WARNING,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                );
                tracing::warn!(error = %e, owner = ?owner.name, "could not create a pod");
            }
        }
    }
    max_rev
}

/// Runs `futs` with at most `n` in flight, returning their outputs.
pub async fn bounded<F, T>(futs: Vec<F>, n: usize) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    use futures::StreamExt;
    futures::stream::iter(futs)
        .buffer_unordered(n.max(1))
        .collect()
        .await
}

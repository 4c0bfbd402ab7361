//! The pod loop: runs the pods bound to this node, stops the ones that are gone or being
//! deleted, and reports their status, events and usage. Level-triggered: every tick compares
//! what should run (the watch's view of the API) with what runs (the pod manager's state on
//! disk) and mends the difference, so a restarted agent converges to the same state and
//! adopts running pods as they are.
//!
//! Graceful deletion: a pod with `metadata.deletionTimestamp` is stopped (SIGTERM, SIGKILL
//! after `deletionGracePeriodSeconds`), then deleted for good with grace 0 and a uid
//! precondition; the server removes the object then. A pod that vanished from the API is
//! stopped as well.

use super::config;
use super::events::{NORMAL, Recorder, WARNING};
use super::usage::{self, Sampler};
use futures::StreamExt;
use podd_api::{Pod, PodStatus, ResourceExt};
use podd_client::{Client, ListParams, WatcherEvent, watcher};
use podd_image::{ImageStore, PullPolicy, RegistryOptions, UnpackedImage};
use podd_pod::backoff::Backoff;
use podd_pod::manager::{PodError, PodManager};
use podd_pod::pod_status::{self, pod_status, settle, waiting_status};
use podd_pod::shim::volume_watch::EVICTED;
use podd_pod::shim::{ContainerState, ContainerStatus};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub struct PodLoop {
    pub client: Client,
    pub node: String,
    pub node_ip: Option<Ipv4Addr>,
    pub manager: Arc<PodManager>,
    pub images: ImageStore,
    pub registry: RegistryOptions,
    pub usage_period: Duration,
    pub events: Recorder,
}

/// Why a pod is not running yet, and when to try again.
struct StartFailure {
    reason: &'static str,
    message: String,
    retry_at: Instant,
    backoff: Backoff,
}

enum Done {
    Started(String),
    Failed(String, &'static str, String),
    Stopped(String),
    /// The pod's final delete was sent: Ok, or the time to try again.
    Finalized(String, bool),
}

struct State {
    desired: HashMap<String, Pod>,
    busy: HashSet<String>,
    failures: HashMap<String, StartFailure>,
    /// The last status written for each pod and when (the watch may not have brought it
    /// back yet).
    reported: HashMap<String, (PodStatus, Instant)>,
    /// The containers' runtime states at the last tick, for events.
    runtime: HashMap<String, Vec<ContainerStatus>>,
    /// Pods this agent process started and has not looked at since: their first states get
    /// events (an adopted pod's, after an agent restart, do not: they were reported before).
    fresh: HashSet<String>,
    /// A pod's IP is fixed for its life: looked up once (status file + netlink), not per tick.
    ips: HashMap<String, Ipv4Addr>,
    /// Pods evicted on this node (an emptyDir over its sizeLimit): torn down once their
    /// Failed status is in the API, and never started again while the API still has them.
    evicted: HashSet<String>,
    /// Terminating pods whose containers are stopped: their final delete is sent (or due
    /// again at the time given).
    finalizing: HashMap<String, Option<Instant>>,
    sampler: Sampler,
    last_usage: Instant,
    /// When the running pods' configuration volumes were last refreshed, and whether a
    /// refresh is still under way.
    last_config_refresh: Instant,
    config_refreshing: Arc<std::sync::atomic::AtomicBool>,
}

fn uid_of(p: &Pod) -> String {
    p.uid().unwrap_or_default()
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

impl PodLoop {
    pub async fn run(self) {
        let this = Arc::new(self);
        let api = this.client.api::<Pod>(None);
        let lp = ListParams::fields(&format!("spec.nodeName={}", this.node));
        let mut events = Box::pin(watcher(api, lp));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut st = State {
            desired: HashMap::new(),
            busy: HashSet::new(),
            failures: HashMap::new(),
            reported: HashMap::new(),
            runtime: HashMap::new(),
            fresh: HashSet::new(),
            ips: HashMap::new(),
            evicted: HashSet::new(),
            finalizing: HashMap::new(),
            sampler: Sampler::default(),
            last_usage: Instant::now(),
            last_config_refresh: Instant::now(),
            config_refreshing: Default::default(),
        };
        let mut synced = false;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(WatcherEvent::Restarted(pods))) => {
                        st.desired = pods.into_iter().map(|p| (uid_of(&p), p)).collect();
                        synced = true;
                    }
                    Some(Ok(WatcherEvent::Applied(p))) => {
                        st.desired.insert(uid_of(&p), p);
                    }
                    Some(Ok(WatcherEvent::Deleted(p))) => {
                        st.desired.remove(&uid_of(&p));
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "pod watch (retrying)"),
                    None => return,
                },
                Some(done) = done_rx.recv() => this.finish(&mut st, done),
                _ = tick.tick() => {
                    // Until the first list arrives, "nothing desired" would stop every pod.
                    if synced {
                        this.reconcile(&mut st, &done_tx).await;
                    }
                }
            }
        }
    }

    fn finish(&self, st: &mut State, done: Done) {
        match done {
            Done::Started(uid) => {
                st.busy.remove(&uid);
                st.failures.remove(&uid);
                st.fresh.insert(uid);
            }
            Done::Stopped(uid) => {
                st.busy.remove(&uid);
                st.fresh.remove(&uid);
                st.reported.remove(&uid);
                st.runtime.remove(&uid);
                st.ips.remove(&uid);
            }
            Done::Finalized(uid, ok) => {
                st.busy.remove(&uid);
                if !ok {
                    st.finalizing
                        .insert(uid, Some(Instant::now() + Duration::from_secs(1)));
                }
            }
            Done::Failed(uid, reason, message) => {
                st.busy.remove(&uid);
                let f = st.failures.entry(uid).or_insert_with(|| StartFailure {
                    reason,
                    message: String::new(),
                    retry_at: Instant::now(),
                    backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
                });
                let mut delay = f
                    .backoff
                    .on_exit(Duration::ZERO)
                    .max(Duration::from_secs(1));
                // A missing ConfigMap or Secret is looked for again soon: it may be created
                // any time, and the container should start then.
                if reason == "CreateContainerConfigError" {
                    delay = delay.min(CONFIG_RETRY_MAX);
                }
                f.reason = reason;
                f.message = message;
                f.retry_at = Instant::now() + delay;
            }
        }
    }

    /// Stops pod `uid` in the background (`grace`: the deletion's grace period, if any).
    fn stop(
        &self,
        st: &mut State,
        uid: &str,
        grace: Option<u64>,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        if !st.busy.insert(uid.to_string()) {
            return;
        }
        let (m, uid, done) = (self.manager.clone(), uid.to_string(), done.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = m.stop_pod_with_grace(&uid, grace) {
                tracing::error!(pod = %uid, error = %e, "stopping a pod");
            }
            let _ = done.send(Done::Stopped(uid));
        });
    }

    async fn reconcile(self: &Arc<Self>, st: &mut State, done: &mpsc::UnboundedSender<Done>) {
        self.manager.reap();
        let running: HashSet<String> = self.manager.list().into_iter().collect();
        let gone: Vec<String> = running
            .iter()
            .filter(|u| !st.desired.contains_key(*u))
            .cloned()
            .collect();
        for uid in gone {
            self.stop(st, &uid, None, done);
            self.events.forget(&uid);
        }
        let desired = &st.desired;
        st.finalizing.retain(|uid, _| desired.contains_key(uid));
        st.failures.retain(|uid, _| desired.contains_key(uid));
        st.reported
            .retain(|uid, _| desired.contains_key(uid) || running.contains(uid));
        let now = Instant::now();
        st.evicted.retain(|uid| st.desired.contains_key(uid));
        let mut deleting = Vec::new();
        for (uid, pod) in &st.desired {
            if terminating(pod) {
                deleting.push(uid.clone());
                continue;
            }
            if running.contains(uid) || st.busy.contains(uid) || st.evicted.contains(uid) {
                continue;
            }
            let phase = podd_api::resources::pod_phase(pod);
            if phase == pod_status::SUCCEEDED || phase == pod_status::FAILED {
                continue;
            }
            if st.failures.get(uid).is_some_and(|f| f.retry_at > now) {
                continue;
            }
            st.busy.insert(uid.clone());
            let (this, pod, done) = (self.clone(), pod.clone(), done.clone());
            tokio::spawn(async move {
                let uid = uid_of(&pod);
                let _ = done.send(match this.start(&pod).await {
                    Ok(()) => Done::Started(uid),
                    Err((reason, message)) => {
                        tracing::warn!(pod = %podd_pod::pod_name(&pod), reason, %message, "pod did not start");
                        Done::Failed(uid, reason, message)
                    }
                });
            });
        }
        for uid in deleting {
            self.terminate(st, &uid, running.contains(&uid), done);
        }
        self.report_usage(st, &running).await;
        self.report(st, &running).await;
        self.remove_evicted(st, &running, done);
        self.refresh_config_volumes(st, &running);
    }

    /// Every [`config::REFRESH_INTERVAL`], rewrites the configuration volumes of the running
    /// pods from the API (in the background, one round at a time).
    fn refresh_config_volumes(&self, st: &mut State, running: &HashSet<String>) {
        use std::sync::atomic::Ordering;
        if st.last_config_refresh.elapsed() < config::REFRESH_INTERVAL
            || st.config_refreshing.load(Ordering::Acquire)
        {
            return;
        }
        st.last_config_refresh = Instant::now();
        let pods: Vec<(String, Pod)> = running
            .iter()
            .filter(|uid| !st.busy.contains(*uid))
            .filter_map(|uid| Some((uid.clone(), st.desired.get(uid)?.clone())))
            .filter(|(_, p)| !terminating(p) && config::has_config_volumes(p))
            .collect();
        if pods.is_empty() {
            return;
        }
        st.config_refreshing.store(true, Ordering::Release);
        let flag = st.config_refreshing.clone();
        let (client, manager) = (self.client.clone(), self.manager.clone());
        tokio::spawn(async move {
            config::refresh(client, manager, pods).await;
            flag.store(false, Ordering::Release);
        });
    }

    /// One step of a terminating pod: stop its containers, then delete the object for good.
    fn terminate(
        &self,
        st: &mut State,
        uid: &str,
        running: bool,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        if st.busy.contains(uid) {
            return;
        }
        let Some(pod) = st.desired.get(uid).cloned() else {
            return;
        };
        if running {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .map(|g| g.max(0) as u64)
                .unwrap_or_else(|| podd_pod::manager::grace_period(&pod));
            for c in pod.spec.iter().flat_map(|s| &s.containers) {
                self.events.record(
                    &pod,
                    Some(&c.name),
                    NORMAL,
                    "Killing",
                    &format!("Stopping container {}", c.name),
                );
            }
            tracing::info!(pod = %podd_pod::pod_name(&pod), grace, "stopping a deleted pod");
            self.stop(st, uid, Some(grace), done);
            return;
        }
        match st.finalizing.get(uid) {
            Some(None) => return,
            Some(Some(retry_at)) if *retry_at > Instant::now() => return,
            _ => {}
        }
        st.finalizing.insert(uid.to_string(), None);
        st.busy.insert(uid.to_string());
        let (client, uid, done) = (self.client.clone(), uid.to_string(), done.clone());
        tokio::spawn(async move {
            let ok = match finalize(&client, &pod).await {
                Ok(()) => true,
                Err(e) if e.is_not_found() => true,
                Err(e) => {
                    tracing::warn!(pod = %podd_pod::pod_name(&pod), error = %e, "deleting a stopped pod (will retry)");
                    false
                }
            };
            let _ = done.send(Done::Finalized(uid, ok));
        });
    }

    /// Tears down the pods the shim evicted once the API has their Failed status (as the
    /// kubelet frees an evicted pod's volumes and containers while the object stays, for a
    /// controller to replace). Until then the on-disk status keeps saying why.
    fn remove_evicted(
        &self,
        st: &mut State,
        running: &HashSet<String>,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        for uid in running {
            let reported_evicted = st.reported.get(uid).is_some_and(|(r, _)| {
                r.phase.as_deref() == Some(pod_status::FAILED)
                    && r.reason.as_deref() == Some(EVICTED)
            });
            if !reported_evicted || st.busy.contains(uid) {
                continue;
            }
            st.evicted.insert(uid.clone());
            tracing::info!(pod = %uid, "removing an evicted pod");
            self.stop(st, uid, None, done);
        }
    }

    async fn start(&self, pod: &Pod) -> Result<(), (&'static str, String)> {
        let mut images = BTreeMap::new();
        let spec = pod.spec.clone().unwrap_or_default();
        for c in &spec.containers {
            let image = c.image.clone().unwrap_or_default();
            if images.contains_key(&image) {
                continue;
            }
            let policy =
                PullPolicy::for_container(c).map_err(|e| ("InvalidImageName", e.to_string()))?;
            let pulls = policy != PullPolicy::Never;
            if pulls {
                self.events.record(
                    pod,
                    Some(&c.name),
                    NORMAL,
                    "Pulling",
                    &format!("Pulling image \"{image}\""),
                );
            }
            let started = Instant::now();
            let img: UnpackedImage = match self.images.prepare(&image, policy, &self.registry).await
            {
                Ok(img) => img,
                Err(e) => {
                    let message = format!("Failed to pull image \"{image}\": {e}");
                    self.events
                        .record(pod, Some(&c.name), WARNING, "Failed", &message);
                    return Err(("ErrImagePull", e.to_string()));
                }
            };
            if pulls {
                self.events.record(
                    pod,
                    Some(&c.name),
                    NORMAL,
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
            }
            images.insert(image, img);
        }
        let refs = podd_pod::sources::references(pod);
        let sources = config::fetch(&self.client, &pod.namespace().unwrap_or_default(), &refs)
            .await
            .map_err(|config::FetchError(e)| ("CreateContainerConfigError", e))?;
        let (m, p) = (self.manager.clone(), pod.clone());
        let result = tokio::task::spawn_blocking(move || m.run_pod_with(&p, &images, &sources))
            .await
            .map_err(|e| ("CreateContainerError", e.to_string()))?;
        match result {
            Ok(info) => {
                for (container, keys) in &info.skipped_env {
                    self.events.record(
                        pod,
                        Some(container),
                        WARNING,
                        "InvalidEnvironmentVariableNames",
                        &format!(
                            "Keys [{}] from the EnvFrom of container {container} were skipped since they are considered invalid environment variable names.",
                            keys.join(", ")
                        ),
                    );
                }
                Ok(())
            }
            Err(e) => {
                let (container, reason) = match &e {
                    PodError::Config { container, .. } => (Some(container.as_str()), "Failed"),
                    PodError::Net { .. } => (None, "FailedCreatePodSandBox"),
                    _ => (None, "Failed"),
                };
                self.events
                    .record(pod, container, WARNING, reason, &e.to_string());
                Err((e.reason(), e.to_string()))
            }
        }
    }

    /// Samples the pods' and the node's usage every usage period and reports it.
    async fn report_usage(&self, st: &mut State, running: &HashSet<String>) {
        if st.last_usage.elapsed() < self.usage_period {
            return;
        }
        st.last_usage = Instant::now();
        st.sampler.retain(|uid| running.contains(uid));
        let mut pods = Vec::new();
        for uid in running {
            let Some(pod) = st.desired.get(uid) else {
                continue;
            };
            let mut containers = BTreeMap::new();
            for (name, (cpu, mem)) in self.manager.container_usage(uid) {
                let Some(cpu_usec) = cpu else { continue };
                if let Some(millis) = st.sampler.container(uid, &name, cpu_usec) {
                    containers.insert(name, (millis, mem.unwrap_or(0)));
                }
            }
            if !containers.is_empty() {
                pods.push((pod, containers));
            }
        }
        let node_cpu = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| usage::node_busy_usec(&s))
            .and_then(|busy| st.sampler.node(busy));
        let node_mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| usage::node_memory_bytes(&s));
        let Some(node_cpu) = node_cpu else {
            return; // The first sample: rates come with the next one.
        };
        let report = usage::report(
            &self.node,
            self.usage_period,
            (node_cpu, node_mem.unwrap_or(0)),
            &pods,
        );
        let path = format!("/apis/podd.dev/v1/nodes/{}/usage", self.node);
        let body = match serde_json::to_vec(&report) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "encoding the usage report");
                return;
            }
        };
        match self
            .client
            .raw(hyper::Method::POST, &path, Some(body), "application/json")
            .await
        {
            Ok(r) if r.status.is_success() => {}
            Ok(r) => {
                tracing::debug!(status = %r.status, body = %String::from_utf8_lossy(&r.body), "the usage report was refused")
            }
            Err(e) => tracing::debug!(error = %e, "reporting usage (next period)"),
        }
    }

    /// Events for what changed in a pod's containers since the last tick.
    fn container_events(
        &self,
        pod: &Pod,
        before: Option<&Vec<ContainerStatus>>,
        now: &[ContainerStatus],
    ) {
        for c in now {
            let prev = before.and_then(|b| b.iter().find(|p| p.name == c.name));
            let started_before = prev.and_then(|p| match &p.state {
                ContainerState::Running { started_at } => Some(started_at.as_str()),
                _ => None,
            });
            match &c.state {
                ContainerState::Running { started_at } if started_before != Some(started_at) => {
                    let image = &c.image;
                    self.events.record(
                        pod,
                        Some(&c.name),
                        NORMAL,
                        "Created",
                        &format!("Created container: {} (image \"{image}\")", c.name),
                    );
                    self.events.record(
                        pod,
                        Some(&c.name),
                        NORMAL,
                        "Started",
                        &format!("Started container {}", c.name),
                    );
                }
                ContainerState::Waiting { reason, .. }
                    if reason == "CrashLoopBackOff"
                        && prev.is_none_or(|p| {
                            p.restart_count != c.restart_count || p.state != c.state
                        }) =>
                {
                    self.events.record(
                        pod,
                        Some(&c.name),
                        WARNING,
                        "BackOff",
                        &format!(
                            "Back-off restarting failed container {} in pod {}",
                            c.name,
                            podd_pod::pod_name(pod)
                        ),
                    );
                }
                ContainerState::Running { .. } if prev.is_some_and(|p| p.ready && !c.ready) => {
                    self.events.record(
                        pod,
                        Some(&c.name),
                        WARNING,
                        "Unhealthy",
                        "Readiness probe failed",
                    );
                }
                _ => {}
            }
        }
    }

    /// Writes each pod's status when it really changed: the new status is compared, typed,
    /// with the one the API has (and the one last written); timestamps carry over, so an
    /// unchanged pod is never rewritten.
    async fn report(&self, st: &mut State, running: &HashSet<String>) {
        let host_ip = self.node_ip;
        let now = pod_status::now();
        let mut writes = Vec::new();
        for (uid, pod) in &st.desired {
            let mut status = if running.contains(uid) {
                match self.manager.status(uid) {
                    Some((rt, alive)) => {
                        let ip = match st.ips.get(uid) {
                            Some(ip) => Some(*ip),
                            None => {
                                let ip = self.manager.find(uid).and_then(|i| i.ip);
                                if let Some(ip) = ip {
                                    st.ips.insert(uid.clone(), ip);
                                }
                                ip
                            }
                        };
                        let before = st.runtime.get(uid);
                        if before.is_some() || st.fresh.remove(uid) {
                            self.container_events(pod, before, &rt.containers);
                        }
                        st.runtime.insert(uid.clone(), rt.containers.clone());
                        pod_status(pod, &rt, alive, ip)
                    }
                    None => continue,
                }
            } else if let Some(f) = st.failures.get(uid) {
                waiting_status(pod, f.reason, &f.message)
            } else {
                continue;
            };
            let api_status = pod.status.as_ref();
            settle(&mut status, api_status, host_ip, &now);
            // Written just now and not back through the watch yet: not again. Once the
            // write is older, the API's status is what counts (someone else may change it).
            let just_written = st
                .reported
                .get(uid)
                .is_some_and(|(s, at)| s == &status && at.elapsed() < WATCH_LAG);
            if api_status == Some(&status) || just_written {
                continue;
            }
            writes.push((
                uid.clone(),
                pod.namespace().unwrap_or_default(),
                pod.name_any(),
                status,
            ));
        }
        for (uid, ns, name, status) in writes {
            let api = self.client.api::<Pod>(Some(&ns));
            let patch = status_patch(&status);
            match api.patch_status(&name, &patch).await {
                Ok(_) => {
                    st.reported.insert(uid, (status, Instant::now()));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(pod = %name, error = %e, "reporting pod status (will retry)")
                }
            }
        }
    }
}

/// The longest wait before a pod that lacks a ConfigMap or Secret is tried again.
const CONFIG_RETRY_MAX: Duration = Duration::from_secs(10);

/// How long a written status may take to come back through the watch.
const WATCH_LAG: Duration = Duration::from_secs(2);

/// The merge patch that sets a pod's status: the agent's fields that are unset now are null,
/// so that a merge patch removes them (a cleared reason or message must not linger).
pub fn status_patch(status: &PodStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        for key in [
            "reason",
            "message",
            "podIP",
            "podIPs",
            "hostIP",
            "hostIPs",
            "startTime",
        ] {
            obj.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": v })
}

/// The body of the final delete of a terminating pod whose containers are stopped.
pub fn final_delete_options(uid: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": uid},
    })
}

/// Deletes the pod object for good (grace 0, only this incarnation of it).
async fn finalize(client: &Client, pod: &Pod) -> Result<(), podd_client::Error> {
    let path = podd_client::resource_path(
        podd_api::Kind::Pod,
        pod.namespace().as_deref(),
        Some(&pod.name_any()),
    );
    let body = serde_json::to_vec(&final_delete_options(&uid_of(pod)))
        .map_err(|e| podd_client::Error::Decode(e.to_string()))?;
    client
        .request::<serde_json::Value>(hyper::Method::DELETE, &path, Some(body), "application/json")
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_patch_clears_what_is_unset() {
        let s = PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        };
        let p = status_patch(&s);
        assert_eq!(p["status"]["phase"], "Running");
        assert!(p["status"]["reason"].is_null() && p["status"].get("reason").is_some());
        assert!(p["status"].get("conditions").is_none());
    }

    #[test]
    fn the_final_delete_is_immediate_and_for_this_uid() {
        assert_eq!(
            final_delete_options("u1"),
            serde_json::json!({"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":0,"preconditions":{"uid":"u1"}})
        );
    }
}

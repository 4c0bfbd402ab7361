//! The pod loop: runs the pods bound to this node, stops the ones that are gone, and reports
//! their status and usage. Level-triggered: every tick compares what should run (the watch's
//! view of the API) with what runs (the pod manager's state on disk) and mends the difference,
//! so a restarted agent converges to the same state and adopts running pods as they are.

use futures::StreamExt;
use podd_api::Pod;
use podd_api::pod::{PodPhase, PodStatus, PodUsage};
use podd_client::{Client, ListParams, WatcherEvent, watcher};
use podd_image::{ImageStore, PullPolicy, RegistryOptions, UnpackedImage};
use podd_pod::backoff::Backoff;
use podd_pod::manager::PodManager;
use podd_pod::pod_status::pod_status;
use podd_pod::shim::volume_watch::EVICTED;
use podd_pod::stats::{CpuSample, millicores};
use podd_pod::timefmt::rfc3339;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

pub struct PodLoop {
    pub client: Client,
    pub node: String,
    pub node_ip: Option<Ipv4Addr>,
    pub manager: Arc<PodManager>,
    pub images: ImageStore,
    pub registry: RegistryOptions,
    pub usage_period: Duration,
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
}

struct State {
    desired: HashMap<String, Pod>,
    busy: HashSet<String>,
    failures: HashMap<String, StartFailure>,
    reported: HashMap<String, PodStatus>,
    cpu: HashMap<String, CpuSample>,
    usage: HashMap<String, PodUsage>,
    /// A pod's IP is fixed for its life: looked up once (status file + netlink), not per tick.
    ips: HashMap<String, Ipv4Addr>,
    /// Pods evicted on this node (an emptyDir over its sizeLimit): torn down once their
    /// Failed status is in the API, and never started again while the API still has them.
    evicted: HashSet<String>,
    last_usage: Instant,
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
            cpu: HashMap::new(),
            usage: HashMap::new(),
            ips: HashMap::new(),
            evicted: HashSet::new(),
            last_usage: Instant::now(),
        };
        let mut synced = false;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(WatcherEvent::Restarted(pods))) => {
                        st.desired = pods.into_iter().map(|p| (p.metadata.uid.clone(), p)).collect();
                        synced = true;
                    }
                    Some(Ok(WatcherEvent::Applied(p))) => {
                        st.desired.insert(p.metadata.uid.clone(), p);
                    }
                    Some(Ok(WatcherEvent::Deleted(p))) => {
                        st.desired.remove(&p.metadata.uid);
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
            }
            Done::Stopped(uid) => {
                st.busy.remove(&uid);
                st.reported.remove(&uid);
                st.cpu.remove(&uid);
                st.usage.remove(&uid);
                st.ips.remove(&uid);
            }
            Done::Failed(uid, reason, message) => {
                st.busy.remove(&uid);
                let f = st.failures.entry(uid).or_insert_with(|| StartFailure {
                    reason,
                    message: String::new(),
                    retry_at: Instant::now(),
                    backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
                });
                let delay = f
                    .backoff
                    .on_exit(Duration::ZERO)
                    .max(Duration::from_secs(1));
                f.reason = reason;
                f.message = message;
                f.retry_at = Instant::now() + delay;
            }
        }
    }

    async fn reconcile(self: &Arc<Self>, st: &mut State, done: &mpsc::UnboundedSender<Done>) {
        self.manager.reap();
        let running: HashSet<String> = self.manager.list().into_iter().collect();
        for uid in running.iter().filter(|u| !st.desired.contains_key(*u)) {
            if st.busy.insert(uid.clone()) {
                let (m, uid, done) = (self.manager.clone(), uid.clone(), done.clone());
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = m.stop_pod(&uid) {
                        tracing::error!(pod = %uid, error = %e, "stopping a deleted pod");
                    }
                    let _ = done.send(Done::Stopped(uid));
                });
            }
        }
        let now = Instant::now();
        st.evicted.retain(|uid| st.desired.contains_key(uid));
        for (uid, pod) in &st.desired {
            if running.contains(uid) || st.busy.contains(uid) || st.evicted.contains(uid) {
                continue;
            }
            if pod.status.phase == PodPhase::Succeeded || pod.status.phase == PodPhase::Failed {
                continue;
            }
            if st.failures.get(uid).is_some_and(|f| f.retry_at > now) {
                continue;
            }
            st.busy.insert(uid.clone());
            let (this, pod, done) = (self.clone(), pod.clone(), done.clone());
            tokio::spawn(async move {
                let uid = pod.metadata.uid.clone();
                let _ = done.send(match this.start(&pod).await {
                    Ok(()) => Done::Started(uid),
                    Err((reason, message)) => {
                        tracing::warn!(pod = %format!("{}/{}", pod.metadata.namespace, pod.metadata.name), reason, %message, "pod did not start");
                        Done::Failed(uid, reason, message)
                    }
                });
            });
        }
        self.sample_usage(st, &running);
        self.report(st, &running).await;
        self.remove_evicted(st, &running, done);
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
            let reported_evicted = st
                .reported
                .get(uid)
                .is_some_and(|r| r.phase == PodPhase::Failed && r.reason == EVICTED);
            if !reported_evicted || st.busy.contains(uid) {
                continue;
            }
            st.evicted.insert(uid.clone());
            st.busy.insert(uid.clone());
            tracing::info!(pod = %uid, "removing an evicted pod");
            let (m, uid, done) = (self.manager.clone(), uid.clone(), done.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = m.stop_pod(&uid) {
                    tracing::error!(pod = %uid, error = %e, "removing an evicted pod");
                }
                let _ = done.send(Done::Stopped(uid));
            });
        }
    }

    async fn start(&self, pod: &Pod) -> Result<(), (&'static str, String)> {
        let mut images = BTreeMap::new();
        for c in &pod.spec.containers {
            if images.contains_key(&c.image) {
                continue;
            }
            let policy = match c.image_pull_policy.as_deref() {
                Some("Always") => PullPolicy::Always,
                Some("Never") => PullPolicy::Never,
                _ => PullPolicy::IfNotPresent,
            };
            let img: UnpackedImage = self
                .images
                .prepare(&c.image, policy, &self.registry)
                .await
                .map_err(|e| ("ErrImagePull", e.to_string()))?;
            images.insert(c.image.clone(), img);
        }
        let (m, pod) = (self.manager.clone(), pod.clone());
        tokio::task::spawn_blocking(move || {
            m.run_pod(&pod, &images)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ("CreateContainerError", e.to_string()))?
        .map_err(|e| ("CreateContainerError", e))
    }

    fn sample_usage(&self, st: &mut State, running: &HashSet<String>) {
        if st.last_usage.elapsed() < self.usage_period {
            return;
        }
        st.last_usage = Instant::now();
        for uid in running {
            let (cpu, mem) = self.manager.usage(uid);
            let Some(cpu_us) = cpu else { continue };
            let sample = CpuSample {
                at: Instant::now(),
                usage_usec: cpu_us,
            };
            if let Some(prev) = st.cpu.insert(uid.clone(), sample) {
                st.usage.insert(
                    uid.clone(),
                    PodUsage {
                        cpu_millis: millicores(prev, sample),
                        memory_bytes: mem.unwrap_or(0),
                        timestamp: rfc3339(SystemTime::now()),
                    },
                );
            }
        }
    }

    /// Writes each pod's status when it changed since the last report.
    async fn report(&self, st: &mut State, running: &HashSet<String>) {
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
                        pod_status(&rt, alive, ip)
                    }
                    None => continue,
                }
            } else if let Some(f) = st.failures.get(uid) {
                PodStatus {
                    phase: PodPhase::Pending,
                    reason: f.reason.to_string(),
                    message: f.message.clone(),
                    ..PodStatus::default()
                }
            } else {
                continue;
            };
            status.host_ip = self.node_ip.map(|i| i.to_string()).unwrap_or_default();
            status.start_time = pod
                .status
                .start_time
                .clone()
                .or_else(|| st.reported.get(uid).and_then(|r| r.start_time.clone()))
                .or_else(|| Some(rfc3339(SystemTime::now())));
            status.usage = st.usage.get(uid).cloned();
            let unchanged = st.reported.get(uid).is_some_and(|r| {
                let mut a = r.clone();
                let mut b = status.clone();
                a.usage = None;
                b.usage = None;
                a == b && r.usage == status.usage
            });
            if unchanged {
                continue;
            }
            writes.push((
                uid.clone(),
                pod.metadata.namespace.clone(),
                pod.metadata.name.clone(),
                status,
            ));
        }
        for (uid, ns, name, status) in writes {
            let api = self.client.api::<Pod>(Some(&ns));
            let patch = serde_json::json!({ "status": status });
            match api.patch_status(&name, &patch).await {
                Ok(_) => {
                    st.reported.insert(uid, status);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(pod = %name, error = %e, "reporting pod status (will retry)")
                }
            }
        }
    }
}

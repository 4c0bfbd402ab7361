//! The job controller (batch/v1), as Kubernetes' does: runs a Job's pods until
//! `completions` of them succeed (up to `parallelism` at once), or until more than
//! `backoffLimit` have failed or `activeDeadlineSeconds` has passed. Failed pods are replaced
//! after an exponential back-off (`job_backoff`, 10 s in Kubernetes, doubling per failure since
//! the last success, at most [`MAX_BACKOFF`]). A finished Job first gets `SuccessCriteriaMet`
//! or `FailureTarget`, its remaining pods are deleted, and once none runs it gets `Complete`
//! or `Failed`, as Kubernetes 1.31+ does. Indexed Jobs give each pod its completion index
//! (annotation, label, `JOB_COMPLETION_INDEX`, hostname `<job>-<index>`). A suspended Job
//! runs no pod. `ttlSecondsAfterFinished` deletes a finished Job with its pods.
//!
//! Counting: the counts come from the Job's pods (the pod GC keeps a Job's finished pods) and
//! never go down; Kubernetes' tracking finalizers, which also count pods deleted by hand
//! before they were seen finished, are not used yet.

use super::events::{self, Recorder};
use super::replicaset::controller_ref;
use super::{
    ControllerConfig, OwnerIndex, WorkQueue, bounded, create_owned_pods, delete_owned_pods, drain,
    last_container_end, pod_is_terminating, rev_of,
};
use crate::registry::{DeleteOptions, Propagation, Registry, Subresource};
use podd_api::jiff::Timestamp;
use podd_api::resources::{pod_is_ready, pod_node, pod_phase};
use podd_api::selector::label_selector_matches;
use podd_api::{
    EnvVar, Job, JobCondition, JobStatus, Kind, Metadata, ObjectMeta, Pod, ResourceExt, Time,
    UncountedTerminatedPods,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The job controller's name in events.
pub const COMPONENT: &str = "job-controller";
/// Kubernetes' `DefaultJobPodFailureBackOff`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
/// Kubernetes' `MaxJobPodFailureBackOff`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// The annotation and label with an Indexed Job pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The env var with the index in an Indexed Job's containers.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Most pods one reconcile creates (Kubernetes' `MaxPodCreateDeletePerSync`).
pub const MAX_CREATE_PER_SYNC: usize = 500;
/// Who manages a Job the built-in controller acts on (`spec.managedBy` unset or this).
const MANAGED_BY: &str = "kubernetes.io/job-controller";

/// A condition to write: type, reason, message.
type Cond = (&'static str, &'static str, &'static str);
const SUCCESS_CRITERIA_MET: Cond = (
    "SuccessCriteriaMet",
    "CompletionsReached",
    "Reached expected number of succeeded pods",
);
const COMPLETE: Cond = (
    "Complete",
    "CompletionsReached",
    "Reached expected number of succeeded pods",
);
const BACKOFF_EXCEEDED: &str = "BackoffLimitExceeded";
const BACKOFF_MSG: &str = "Job has reached the specified backoff limit";
const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
const DEADLINE_MSG: &str = "Job was active longer than specified deadline";

/// What one reconcile decided.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// One entry per pod to create: its completion index (Indexed Jobs) or None.
    pub create: Vec<Option<i32>>,
    /// Names of running pods to delete.
    pub delete: Vec<String>,
    pub status: JobStatus,
    /// Events: type, reason, message.
    pub events: Vec<(&'static str, &'static str, String)>,
    /// Look again after this long (a back-off, a deadline, a TTL), events or not.
    pub requeue_after: Option<Duration>,
    /// The Job's TTL after it finished has passed: delete it.
    pub delete_job: bool,
}

/// The spec values the decisions use, with Kubernetes' defaults.
struct Spec {
    completions: Option<i32>,
    parallelism: i32,
    backoff_limit: i32,
    indexed: bool,
    suspend: bool,
    deadline: Option<i64>,
    ttl: Option<i32>,
    replace_terminating: bool,
    on_failure: bool,
}

fn spec_of(job: &Job) -> Spec {
    let s = job.spec.clone().unwrap_or_default();
    Spec {
        completions: s.completions,
        parallelism: s.parallelism.unwrap_or(1).max(0),
        backoff_limit: s.backoff_limit.unwrap_or(6).max(0),
        indexed: s.completion_mode.as_deref() == Some("Indexed"),
        suspend: s.suspend == Some(true),
        deadline: s.active_deadline_seconds,
        ttl: s.ttl_seconds_after_finished,
        replace_terminating: s.pod_replacement_policy.as_deref() != Some("Failed"),
        on_failure: s
            .template
            .spec
            .as_ref()
            .and_then(|p| p.restart_policy.as_deref())
            == Some("OnFailure"),
    }
}

/// A pod's completion index, from its annotation.
pub fn pod_index(p: &Pod) -> Option<i32> {
    p.annotations().get(COMPLETION_INDEX)?.parse().ok()
}

/// When a pod finished: its containers' last end, else its deletion or creation time.
fn finished_at(p: &Pod) -> Option<Timestamp> {
    last_container_end(p)
        .or(p.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn restarts(p: &Pod) -> i64 {
    let st = p.status.as_ref();
    st.into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum()
}

/// Indexes as Kubernetes writes `completedIndexes`: sorted, runs as `first-last` (`1,3-5,7`).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(first) = it.next() {
        let mut last = first;
        while it.peek() == Some(&(last + 1)) {
            last += 1;
            it.next();
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    out.join(",")
}

/// The indexes of a `completedIndexes` string.
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b.min(a.saturating_add(1_000_000)));
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    out
}

fn has_condition(st: &JobStatus, type_: &str) -> bool {
    st.conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Sets a condition, keeping its lastTransitionTime when its status does not change.
fn set_condition(st: &mut JobStatus, (type_, reason, message): Cond, status: &str, now: Timestamp) {
    let conds = st.conditions.get_or_insert_with(Vec::new);
    let time = Some(Time(now));
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = time.clone();
            }
            c.status = status.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
            c.last_probe_time = time;
        }
        None => conds.push(JobCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_probe_time: time.clone(),
            last_transition_time: time,
        }),
    }
}

/// The back-off before the next pod after `failures` failures in a row (Kubernetes:
/// `base * 2^(failures-1)`, capped).
pub fn backoff_delay(base: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(20);
    base.saturating_mul(1 << shift).min(MAX_BACKOFF)
}

fn nonzero(n: usize) -> Option<i32> {
    (n > 0).then_some(n as i32)
}

/// The pure decision: given the Job, its pods and the time, what to create and delete and
/// the status to write.
pub fn plan(job: &Job, pods: &[Pod], now: Timestamp, backoff_base: Duration) -> Plan {
    let spec = spec_of(job);
    let old = job.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let mut plan = Plan::default();

    // Classify the pods.
    let is_succeeded = |p: &Pod| pod_phase(p) == "Succeeded";
    let is_failed = |p: &Pod| {
        pod_phase(p) == "Failed"
            || (spec.replace_terminating && pod_is_terminating(p) && pod_phase(p) != "Succeeded")
    };
    let active: Vec<&Pod> = pods
        .iter()
        .filter(|p| !is_succeeded(p) && !is_failed(p) && !pod_is_terminating(p))
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| pod_is_terminating(p) && !matches!(pod_phase(p), "Succeeded" | "Failed"))
        .count();
    let failed_pods: Vec<&Pod> = pods.iter().filter(|p| is_failed(p)).collect();
    let succeeded_pods: Vec<&Pod> = pods.iter().filter(|p| is_succeeded(p)).collect();
    let mut done_indexes = parse_indexes(old.completed_indexes.as_deref().unwrap_or_default());
    if spec.indexed {
        let n = spec.completions.unwrap_or(0);
        done_indexes.extend(
            succeeded_pods
                .iter()
                .filter_map(|p| pod_index(p))
                .filter(|i| (0..n).contains(i)),
        );
    }
    let succeeded = if spec.indexed {
        done_indexes.len() as i32
    } else {
        (succeeded_pods.len() as i32).max(old.succeeded.unwrap_or(0))
    };
    let failed = (failed_pods.len() as i32).max(old.failed.unwrap_or(0));
    st.succeeded = (succeeded > 0).then_some(succeeded);
    st.failed = (failed > 0).then_some(failed);
    st.ready = Some(active.iter().filter(|p| pod_is_ready(p)).count() as i32);
    st.terminating = Some(terminating as i32);
    st.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
    if spec.indexed {
        st.completed_indexes = Some(format_indexes(&done_indexes));
    }

    let finished = has_condition(&old, "Complete") || has_condition(&old, "Failed");
    let target = has_condition(&old, "SuccessCriteriaMet") || has_condition(&old, "FailureTarget");
    let mut delete_all = finished || target;

    if !finished && !target {
        // Has it just succeeded or failed?
        let all_done = match spec.completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        let restarts_on_failure: i64 = if spec.on_failure {
            active.iter().map(|p| restarts(p)).sum()
        } else {
            0
        };
        let past_deadline = !spec.suspend
            && match (spec.deadline, &old.start_time) {
                (Some(d), Some(start)) => now.as_second() - start.0.as_second() >= d,
                _ => false,
            };
        if all_done {
            set_condition(&mut st, SUCCESS_CRITERIA_MET, "True", now);
            delete_all = true;
        } else if failed > spec.backoff_limit
            || (spec.on_failure
                && spec.backoff_limit > 0
                && restarts_on_failure >= i64::from(spec.backoff_limit))
        {
            set_condition(
                &mut st,
                ("FailureTarget", BACKOFF_EXCEEDED, BACKOFF_MSG),
                "True",
                now,
            );
            plan.events
                .push((events::WARNING, BACKOFF_EXCEEDED, BACKOFF_MSG.into()));
            delete_all = true;
        } else if past_deadline {
            set_condition(
                &mut st,
                ("FailureTarget", DEADLINE_EXCEEDED, DEADLINE_MSG),
                "True",
                now,
            );
            plan.events
                .push((events::WARNING, DEADLINE_EXCEEDED, DEADLINE_MSG.into()));
            delete_all = true;
        }
    }

    if delete_all {
        plan.delete = active.iter().map(|p| p.name_any()).collect();
        st.active = None;
        if !finished && active.is_empty() && terminating == 0 {
            // Every pod has stopped: the terminal condition, as Kubernetes writes it last.
            if has_condition(&st, "SuccessCriteriaMet") {
                set_condition(&mut st, COMPLETE, "True", now);
                st.completion_time = Some(Time(now));
                plan.events
                    .push((events::NORMAL, "Completed", "Job completed".into()));
            } else if let Some(c) = st
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "FailureTarget" && c.status == "True")
                .cloned()
            {
                let reason = if c.reason.as_deref() == Some(DEADLINE_EXCEEDED) {
                    (DEADLINE_EXCEEDED, DEADLINE_MSG)
                } else {
                    (BACKOFF_EXCEEDED, BACKOFF_MSG)
                };
                set_condition(&mut st, ("Failed", reason.0, reason.1), "True", now);
            }
        }
        if has_condition(&st, "Complete") || has_condition(&st, "Failed") {
            ttl(&spec, &st, now, &mut plan);
        }
        plan.status = st;
        return plan;
    }

    // Suspended: no pod runs, and the deadline's clock stops.
    if spec.suspend {
        plan.delete = active.iter().map(|p| p.name_any()).collect();
        st.active = None;
        if !has_condition(&old, "Suspended") {
            set_condition(
                &mut st,
                ("Suspended", "JobSuspended", "Job suspended"),
                "True",
                now,
            );
            plan.events
                .push((events::NORMAL, "Suspended", "Job suspended".into()));
        }
        plan.status = st;
        return plan;
    }
    if has_condition(&old, "Suspended") {
        set_condition(
            &mut st,
            ("Suspended", "JobResumed", "Job resumed"),
            "False",
            now,
        );
        plan.events
            .push((events::NORMAL, "Resumed", "Job resumed".into()));
        // The deadline counts from the resume.
        st.start_time = Some(Time(now));
    }
    if st.start_time.is_none() {
        st.start_time = Some(Time(now));
    }
    if let (Some(d), Some(start)) = (spec.deadline, &st.start_time) {
        let left = (start.0.as_second() + d - now.as_second()).max(0);
        plan.requeue_after = Some(Duration::from_secs(left as u64 + 1));
    }

    // How many pods should run, and which indexes they get.
    let want: i32 = match spec.completions {
        _ if spec.indexed => {
            let n = spec.completions.unwrap_or(0);
            let running: BTreeSet<i32> = active.iter().filter_map(|p| pod_index(p)).collect();
            let pending = (0..n)
                .filter(|i| !done_indexes.contains(i) && !running.contains(i))
                .count() as i32;
            (running.len() as i32 + pending).min(spec.parallelism)
        }
        Some(c) => (c - succeeded).clamp(0, spec.parallelism),
        None if succeeded > 0 => active.len() as i32,
        None => spec.parallelism,
    };
    let n_active = active.len() as i32;
    if n_active > want {
        plan.delete = excess(&active, (n_active - want) as usize);
    } else if n_active < want {
        // Back-off after failures since the last success.
        let last_success = succeeded_pods.iter().filter_map(|p| finished_at(p)).max();
        let recent: Vec<Timestamp> = failed_pods
            .iter()
            .filter_map(|p| finished_at(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        let delay = backoff_delay(backoff_base, recent.len() as u32);
        let ready_at = recent
            .iter()
            .max()
            .map(|t| *t + podd_api::jiff::SignedDuration::try_from(delay).unwrap_or_default());
        match ready_at {
            Some(at) if at > now => {
                let wait = at.duration_since(now).as_millis().max(0) as u64;
                let wait = Duration::from_millis(wait);
                plan.requeue_after = Some(plan.requeue_after.map_or(wait, |r| r.min(wait)));
            }
            _ => {
                let n = ((want - n_active) as usize).min(MAX_CREATE_PER_SYNC);
                plan.create = if spec.indexed {
                    let running: BTreeSet<i32> =
                        active.iter().filter_map(|p| pod_index(p)).collect();
                    (0..spec.completions.unwrap_or(0))
                        .filter(|i| !done_indexes.contains(i) && !running.contains(i))
                        .take(n)
                        .map(Some)
                        .collect()
                } else {
                    vec![None; n]
                };
            }
        }
    }
    st.active = nonzero(active.len() - plan.delete.len() + plan.create.len());
    plan.status = st;
    plan
}

/// A finished Job's TTL: delete it when it has passed, else look again then.
fn ttl(spec: &Spec, st: &JobStatus, now: Timestamp, plan: &mut Plan) {
    let Some(ttl) = spec.ttl else { return };
    let finished = st
        .conditions
        .iter()
        .flatten()
        .filter(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
        .filter_map(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .max()
        .or(st.completion_time.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let left = finished.as_second() + i64::from(ttl) - now.as_second();
    if left <= 0 {
        plan.delete_job = true;
    } else {
        plan.requeue_after = Some(Duration::from_secs(left as u64));
    }
}

/// Surplus pods, unscheduled, then pending, then not ready, then the newest first.
fn excess(active: &[&Pod], n: usize) -> Vec<String> {
    let mut v: Vec<&Pod> = active.to_vec();
    let tier = |p: &Pod| {
        if pod_node(p).is_empty() {
            0
        } else if pod_phase(p) == "Pending" {
            1
        } else if !pod_is_ready(p) {
            2
        } else {
            3
        }
    };
    v.sort_by(|a, b| {
        tier(a).cmp(&tier(b)).then_with(|| {
            b.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&a.metadata.creation_timestamp.as_ref().map(|t| t.0))
        })
    });
    v.into_iter().take(n).map(|p| p.name_any()).collect()
}

/// A pod of the Job's template, for completion `index` of an Indexed Job.
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Pod {
    let t = job.spec.clone().unwrap_or_default().template;
    let tm = t.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut spec = t.spec.unwrap_or_default();
    let name = job.name_any();
    let mut generate_name = format!("{name}-");
    if let Some(i) = index {
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        generate_name = format!("{name}-{i}-");
        if spec.hostname.is_none() {
            spec.hostname = Some(format!("{name}-{i}"));
        }
        let init = spec.init_containers.iter_mut().flatten();
        for c in spec.containers.iter_mut().chain(init) {
            let env = c.env.get_or_insert_with(Vec::new);
            if !env.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
                env.push(EnvVar {
                    name: COMPLETION_INDEX_ENV.into(),
                    value: Some(i.to_string()),
                    value_from: None,
                });
            }
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![controller_ref("batch/v1", "Job", &job.metadata)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The pods a Job controls: owned by it and matching its selector.
fn owned_pods(registry: &Registry, job: &Job) -> Vec<Pod> {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let selector = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    registry
        .cache()
        .owned_by(Kind::Pod, &uid)
        .iter()
        .filter(|o| label_selector_matches(&selector, &o.labels))
        .filter_map(|o| o.decode())
        .collect()
}

struct Controller {
    registry: Arc<Registry>,
    events: Recorder,
    config: ControllerConfig,
}

impl Controller {
    /// Reconciles one Job; returns the highest revision it wrote and when to look again.
    async fn reconcile(&self, key: &str) -> (i64, Option<Duration>) {
        let Some(job) = self
            .registry
            .cache()
            .get(Kind::Job, key)
            .and_then(|o| o.decode::<Job>())
        else {
            return (0, None);
        };
        let managed_by = job.spec.as_ref().and_then(|s| s.managed_by.as_deref());
        if job.metadata.deletion_timestamp.is_some() || managed_by.is_some_and(|m| m != MANAGED_BY)
        {
            return (0, None);
        }
        let pods = owned_pods(&self.registry, &job);
        let p = plan(&job, &pods, Timestamp::now(), self.config.job_backoff);
        let ns = job.namespace().unwrap_or_default();
        let name = job.name_any();
        let me = events::object_ref(&job);
        let mut max_rev = delete_owned_pods(
            &self.registry,
            &self.events,
            &me,
            &ns,
            &p.delete,
            self.config.write_concurrency,
        )
        .await;
        let pods = p
            .create
            .iter()
            .map(|index| pod_from_template(&job, *index))
            .collect();
        max_rev = max_rev.max(
            create_owned_pods(
                &self.registry,
                &self.events,
                &me,
                pods,
                self.config.write_concurrency,
            )
            .await,
        );
        if Some(&p.status) != job.status.as_ref() {
            let mut nj = job.clone();
            nj.status = Some(p.status.clone());
            match self.registry.update_obj(&nj, Subresource::Status).await {
                Ok(u) => {
                    max_rev = max_rev.max(rev_of(u.metadata()));
                    for (type_, reason, message) in &p.events {
                        self.events.record(&me, type_, reason, message);
                    }
                }
                Err(e) => tracing::debug!(error = %e, job = key, "status update failed"),
            }
        }
        if p.delete_job {
            let options = DeleteOptions {
                propagation: Propagation::Background,
                precondition_uid: job.metadata.uid.clone(),
                ..Default::default()
            };
            if let Err(e) = self
                .registry
                .delete_with(Kind::Job, &ns, &name, &options)
                .await
            {
                tracing::debug!(error = %e, job = key, "TTL delete failed");
            }
        }
        (max_rev, p.requeue_after)
    }
}

pub async fn run(
    registry: Arc<Registry>,
    events: Recorder,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let cache = registry.cache().clone();
    let mut jobs_rx = cache.subscribe_now(Kind::Job);
    let mut pods_rx = cache.subscribe_now(Kind::Pod);
    let mut rev_rx = cache.revision_watch();
    let ctl = Controller {
        registry: registry.clone(),
        events,
        config: config.clone(),
    };
    let mut queue = WorkQueue::default();
    let mut owners = OwnerIndex::default();
    // Jobs to look at again at a time (back-offs, deadlines, TTLs).
    let mut timers: BTreeMap<Instant, Vec<String>> = BTreeMap::new();
    let mut resync = tokio::time::interval(config.resync);
    let mut full = true;
    loop {
        if full {
            full = false;
            owners.relist(&cache, Kind::Job, &mut queue);
        }
        let now = Instant::now();
        while let Some(entry) = timers.first_entry() {
            if *entry.key() > now {
                break;
            }
            for k in entry.remove() {
                queue.add(k);
            }
        }
        let mut ok = drain(&mut jobs_rx, Kind::Job, &registry, |ev| {
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
            for (k, (rev, again)) in bounded(futs, 16).await {
                if let Some(after) = again {
                    timers.entry(now + after).or_default().push(k.clone());
                }
                if rev > 0 {
                    queue.barrier(&k, rev);
                    queue.add(k);
                }
            }
            continue;
        }
        let next_timer = timers.keys().next().copied();
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = resync.tick() => full = true,
            _ = tokio::time::sleep_until(next_timer.unwrap_or(now)), if next_timer.is_some() => {}
            r = jobs_rx.recv() => match r {
                Ok(ev) => owners.owner_event(&ev, &mut queue),
                Err(_) => { jobs_rx = cache.subscribe_now(Kind::Job); full = true; }
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
mod tests;

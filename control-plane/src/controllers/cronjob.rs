//! The cronjob controller (batch/v1), as Kubernetes' `cronjob_controllerv2`: at each time
//! its schedule names (in its `timeZone`), a CronJob creates a Job from its template, named
//! `<cronjob>-<scheduled time in minutes since the epoch>` so that one time never makes two
//! Jobs. Only the most recent missed time is run (after a server restart too), and none
//! older than `startingDeadlineSeconds`; more than 100 missed times make a warning Event.
//! `concurrencyPolicy` Forbid skips a time while a Job runs, Replace deletes the running ones
//! first. `suspend` stops new Jobs. Finished Jobs beyond the history limits are deleted, the
//! oldest first. `status.active`, `lastScheduleTime` and `lastSuccessfulTime` follow the
//! Jobs. The controller looks again at the next scheduled time, not before.

use super::events::{self, Recorder};
use super::replicaset::controller_ref;
use super::{ControllerConfig, OwnerIndex, WorkQueue, bounded, drain, rev_of, rev_of_json};
use crate::ApiError;
use crate::registry::{DeleteOptions, Propagation, Registry, Subresource};
use podd_api::cron::{Schedule, time_zone};
use podd_api::jiff::tz::TimeZone;
use podd_api::jiff::{SignedDuration, Timestamp};
use podd_api::{
    CronJob, CronJobStatus, Job, Kind, Metadata, ObjectMeta, ObjectReference, ResourceExt, Time,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The cronjob controller's name in events.
pub const COMPONENT: &str = "cronjob-controller";
/// The annotation with a Job's scheduled time (RFC 3339, in the CronJob's time zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed times beyond which Kubernetes warns (`TooManyMissedTimes`).
pub const MAX_MISSED: i64 = 100;
/// Kubernetes requeues this long after the scheduled time, so the time has surely passed.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// What one reconcile decided.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The status to write, with the Job to create not yet in `active` (its uid comes from
    /// the create) but its time as `lastScheduleTime`.
    pub status: CronJobStatus,
    /// The Job to create, for the scheduled time.
    pub create: Option<Job>,
    /// Jobs to delete, with background propagation: running ones Replace stops, and finished
    /// ones beyond the history limits.
    pub delete: Vec<String>,
    /// Events: type, reason, message.
    pub events: Vec<(&'static str, &'static str, String)>,
    /// Look again after this long: the next scheduled time.
    pub requeue_after: Option<Duration>,
}

/// How many scheduled times passed unrun (`missedSchedulesType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    None,
    Few,
    Many,
}

/// A schedule with its time zone: the instants a CronJob fires at.
struct Times<'a> {
    schedule: &'a Schedule,
    tz: &'a TimeZone,
}

impl Times<'_> {
    fn next(&self, after: Timestamp) -> Option<Timestamp> {
        self.schedule.next_after(after, self.tz)
    }
}

/// The schedule's two first times after `earliest` are not 1 s apart (`0 0 30 2 *` has no
/// time at all): Kubernetes' "invalid schedule".
#[derive(Debug)]
struct NoInterval;

/// `mostRecentScheduleTime`: the earliest time looked from (the last schedule time, or the
/// creation time, or `now - startingDeadlineSeconds` when later), the most recent scheduled
/// time at or before `now` after it, and how many were missed (estimated from the interval
/// between the first two, as Kubernetes does).
fn most_recent(
    cj: &CronJob,
    now: Timestamp,
    times: &Times,
    with_deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), NoInterval> {
    let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let last = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref());
    let mut earliest = last.map(|t| t.0).or(created).unwrap_or(now);
    let deadline = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds);
    if with_deadline && let Some(d) = deadline {
        let from = now.checked_sub(SignedDuration::from_secs(d));
        earliest = earliest.max(from.unwrap_or(Timestamp::MIN));
    }
    let t1 = times.next(earliest).ok_or(NoInterval)?;
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let t2 = times.next(t1).ok_or(NoInterval)?;
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = t2.as_second() - t1.as_second();
    if between < 1 {
        return Err(NoInterval);
    }
    let missed = (now.as_second() - t1.as_second()) / between + 1;
    let potential_earliest = t1 + SignedDuration::from_secs((missed - 2) * between);
    let mut recent = None;
    let mut t = times.next(potential_earliest);
    while let Some(at) = t.filter(|at| *at <= now) {
        recent = Some(at);
        t = times.next(at);
    }
    let missed = if missed > MAX_MISSED {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok((earliest, recent, missed))
}

/// `nextScheduleTimeDuration`: how long until the time after the most recent one.
fn requeue_after(cj: &CronJob, now: Timestamp, times: &Times) -> Option<Duration> {
    let from = match most_recent(cj, now, times, false) {
        Err(NoInterval) => now,
        Ok((_, Some(recent), _)) => recent,
        Ok((earliest, None, Missed::None)) => earliest,
        Ok((_, None, _)) => now,
    };
    let next = times.next(from)?;
    let wait = next.duration_since(now).max(SignedDuration::ZERO);
    Some(Duration::try_from(wait).unwrap_or_default() + NEXT_SCHEDULE_DELTA)
}

/// Whether a Job has finished, and how (`Complete` or `Failed`).
pub fn finished(j: &Job) -> Option<&'static str> {
    let conds = j.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds.into_iter().flatten().find_map(|c| {
        (c.status == "True")
            .then_some(match c.type_.as_str() {
                "Complete" => Some("Complete"),
                "Failed" => Some("Failed"),
                _ => None,
            })
            .flatten()
    })
}

/// The name of the Job for `scheduled` (`getJobName`).
pub fn job_name(cj: &CronJob, scheduled: Timestamp) -> String {
    format!("{}-{}", cj.name_any(), scheduled.as_second().div_euclid(60))
}

/// A time as Go's RFC 3339 prints it in a zone: `Z` for a zero offset, else `+09:00`.
fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let zoned = t.to_zoned(tz.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job a CronJob creates for `scheduled` (`getJobFromTemplate2`): the template's labels,
/// annotations and spec, the scheduled time, and the CronJob as its controller.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let t = cj.spec.clone().unwrap_or_default().job_template;
    let tm = t.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj, scheduled)),
            namespace: cj.namespace(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref("batch/v1", "CronJob", &cj.metadata)]),
            ..ObjectMeta::default()
        },
        spec: t.spec,
        status: None,
    }
}

/// The oldest finished Jobs beyond `limit` (`removeOldestJobs`: by start time, unstarted
/// last, then by name).
fn beyond_limit(mut jobs: Vec<&Job>, limit: Option<i32>) -> Vec<String> {
    let Some(limit) = limit else { return vec![] };
    let extra = jobs.len().saturating_sub(limit.max(0) as usize);
    let start = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
    };
    jobs.sort_by(|a, b| {
        let (sa, sb) = (start(a), start(b));
        sa.is_none()
            .cmp(&sb.is_none())
            .then(sa.cmp(&sb))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    jobs.into_iter().take(extra).map(|j| j.name_any()).collect()
}

/// The pure decision (`syncCronJob` and `cleanupFinishedJobs`): given the time, the CronJob
/// and the Jobs it controls, the status to write, the Job to create, the Jobs to delete and
/// when to look again.
pub fn plan(now: Timestamp, cj: &CronJob, jobs: &[Job]) -> Plan {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut st = cj.status.clone().unwrap_or_default();
    let mut plan = Plan::default();
    let mut active = st.active.take().unwrap_or_default();
    let in_active = |active: &[ObjectReference], j: &Job| {
        active
            .iter()
            .any(|r| r.uid.is_some() && r.uid == j.metadata.uid)
    };

    // The Jobs' state into the status.
    for j in jobs {
        let done = finished(j);
        let listed = in_active(&active, j);
        if !listed && done.is_none() {
            plan.events.push((
                events::WARNING,
                "UnexpectedJob",
                format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    j.name_any()
                ),
            ));
        } else if listed && let Some(how) = done {
            active.retain(|r| r.uid != j.metadata.uid);
            plan.events.push((
                events::NORMAL,
                "SawCompletedJob",
                format!("Saw completed job: {}, condition: {how}", j.name_any()),
            ));
        }
        if done == Some("Complete")
            && let Some(t) = j.status.as_ref().and_then(|s| s.completion_time.as_ref())
            && st.last_successful_time.as_ref().is_none_or(|l| t.0 > l.0)
        {
            st.last_successful_time = Some(t.clone());
        }
    }
    active.retain(|r| {
        let exists = jobs
            .iter()
            .any(|j| r.uid.is_some() && j.metadata.uid == r.uid);
        if !exists {
            let name = r.name.clone().unwrap_or_default();
            plan.events.push((
                events::NORMAL,
                "MissingJob",
                format!("Active job went missing: {name}"),
            ));
        }
        exists
    });

    if cj.metadata.deletion_timestamp.is_none() {
        let by = |how: &str| jobs.iter().filter(|j| finished(j) == Some(how)).collect();
        plan.delete.extend(beyond_limit(
            by("Complete"),
            spec.successful_jobs_history_limit,
        ));
        plan.delete
            .extend(beyond_limit(by("Failed"), spec.failed_jobs_history_limit));
        schedule(now, cj, &mut st, &active, &mut plan);
    }
    for name in &plan.delete {
        active.retain(|r| r.name.as_ref() != Some(name));
        plan.events.push((
            events::NORMAL,
            "SuccessfulDelete",
            format!("Deleted job {name}"),
        ));
    }
    st.active = (!active.is_empty()).then_some(active);
    plan.status = st;
    plan
}

/// The scheduling half of `syncCronJob`: whether a Job is due now, and when to look again.
fn schedule(
    now: Timestamp,
    cj: &CronJob,
    st: &mut CronJobStatus,
    active: &[ObjectReference],
    plan: &mut Plan,
) {
    let spec = cj.spec.clone().unwrap_or_default();
    let tz = match time_zone(spec.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(e) => {
            let zone = spec.time_zone.clone().unwrap_or_default();
            plan.events.push((
                events::WARNING,
                "UnknownTimeZone",
                format!("invalid timeZone: {zone:?}: {e}"),
            ));
            return;
        }
    };
    if spec.suspend == Some(true) {
        return;
    }
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            plan.events.push((
                events::WARNING,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            ));
            return;
        }
    };
    let times = Times {
        schedule: &schedule,
        tz: &tz,
    };
    let scheduled = match most_recent(cj, now, &times, true) {
        Err(NoInterval) => {
            plan.events.push((
                events::WARNING,
                "InvalidSchedule",
                format!(
                    "invalid schedule: {} : time difference between two schedules is less than 1 second",
                    spec.schedule
                ),
            ));
            return;
        }
        Ok((_, recent, missed)) => {
            if recent.is_some() && missed == Missed::Many {
                plan.events.push((
                    events::WARNING,
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
                ));
            }
            recent
        }
    };
    plan.requeue_after = requeue_after(cj, now, &times);
    let Some(scheduled) = scheduled else { return };
    if let Some(d) = spec.starting_deadline_seconds
        && scheduled
            .checked_add(SignedDuration::from_secs(d))
            .is_ok_and(|t| t < now)
    {
        plan.events.push((
            events::WARNING,
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
            ),
        ));
        return;
    }
    let name = job_name(cj, scheduled);
    let done_already = active.iter().any(|r| r.name.as_ref() == Some(&name))
        || st.last_schedule_time.as_ref().map(|t| t.0) == Some(scheduled);
    if done_already {
        return;
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            plan.events.push((
                events::NORMAL,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return;
        }
        Some("Replace") => {
            plan.delete
                .extend(active.iter().filter_map(|r| r.name.clone()));
        }
        _ => {}
    }
    plan.create = Some(job_from_template(cj, scheduled, &tz));
    st.last_schedule_time = Some(Time(scheduled));
    // The next time counts from this one.
    let mut after = cj.clone();
    after.status = Some(st.clone());
    plan.requeue_after = requeue_after(&after, now, &times);
}

/// The Jobs a CronJob controls (its uid as their controller).
fn owned_jobs(registry: &Registry, cj: &CronJob) -> Vec<Job> {
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    registry
        .cache()
        .owned_by(Kind::Job, &uid)
        .iter()
        .filter_map(|o| o.decode::<Job>())
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && r.uid == uid)
        })
        .collect()
}

struct Controller {
    registry: Arc<Registry>,
    events: Recorder,
    config: ControllerConfig,
}

impl Controller {
    /// Reconciles one CronJob; returns the highest revision it wrote and when to look again.
    async fn reconcile(&self, key: &str) -> (i64, Option<Duration>) {
        let Some(cj) = self
            .registry
            .cache()
            .get(Kind::CronJob, key)
            .and_then(|o| o.decode::<CronJob>())
        else {
            return (0, None);
        };
        let jobs = owned_jobs(&self.registry, &cj);
        let mut p = plan((self.config.cronjob_clock)(), &cj, &jobs);
        let ns = cj.namespace().unwrap_or_default();
        let me = events::object_ref(&cj);
        let mut max_rev = 0;
        let deletes: Vec<_> = p
            .delete
            .iter()
            .map(|name| {
                let options = DeleteOptions {
                    propagation: Propagation::Background,
                    ..Default::default()
                };
                let ns = &ns;
                async move {
                    let r = self
                        .registry
                        .delete_with(Kind::Job, ns, name, &options)
                        .await;
                    (name, r)
                }
            })
            .collect();
        for (name, r) in bounded(deletes, self.config.write_concurrency).await {
            match r {
                Ok(v) => {
                    max_rev = max_rev.max(rev_of_json(&v));
                }
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::debug!(error = %e, cronjob = key, job = name, "job delete failed");
                    self.events.record(
                        &me,
                        events::WARNING,
                        "FailedDelete",
                        &format!("Deleted job: {e}"),
                    );
                }
            }
        }
        if let Some(job) = p.create.take() {
            let name = job.name_any();
            let created = match self.registry.create_obj(&job).await {
                Ok(j) => {
                    self.events.record(
                        &me,
                        events::NORMAL,
                        "SuccessfulCreate",
                        &format!("Created job {name}"),
                    );
                    Some(j)
                }
                // Made before a restart or a lost status write: take it back into the status
                // if it is ours.
                Err(ApiError::AlreadyExists { .. }) => self
                    .registry
                    .get_obj::<Job>(&ns, &name)
                    .await
                    .ok()
                    .filter(|j| {
                        j.owner_references().iter().any(|r| {
                            r.controller == Some(true) && r.uid == cj.uid().unwrap_or_default()
                        })
                    }),
                Err(e) => {
                    self.events.record(
                        &me,
                        events::WARNING,
                        "FailedCreate",
                        &format!("Error creating job: {e}"),
                    );
                    tracing::warn!(error = %e, cronjob = key, "could not create a job");
                    // Not scheduled: try again at the next look.
                    p.status.last_schedule_time = cj
                        .status
                        .as_ref()
                        .and_then(|s| s.last_schedule_time.clone());
                    None
                }
            };
            if let Some(j) = created {
                max_rev = max_rev.max(rev_of(j.metadata()));
                let active = p.status.active.get_or_insert_with(Vec::new);
                if !active.iter().any(|r| r.uid == j.metadata.uid) {
                    active.push(events::object_ref(&j));
                }
            }
        }
        if Some(&p.status) != cj.status.as_ref() {
            let mut ncj = cj.clone();
            ncj.status = Some(p.status.clone());
            match self.registry.update_obj(&ncj, Subresource::Status).await {
                Ok(u) => max_rev = max_rev.max(rev_of(u.metadata())),
                Err(e) => tracing::debug!(error = %e, cronjob = key, "status update failed"),
            }
        }
        for (type_, reason, message) in &p.events {
            self.events.record(&me, type_, reason, message);
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
    let mut cronjobs_rx = cache.subscribe_now(Kind::CronJob);
    let mut jobs_rx = cache.subscribe_now(Kind::Job);
    let mut rev_rx = cache.revision_watch();
    let ctl = Controller {
        registry: registry.clone(),
        events,
        config: config.clone(),
    };
    let mut queue = WorkQueue::default();
    let mut owners = OwnerIndex::default();
    // CronJobs to look at again at their next scheduled time; one timer per CronJob (`due`
    // says which, so a new one replaces it).
    let mut timers: BTreeMap<Instant, Vec<String>> = BTreeMap::new();
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut resync = tokio::time::interval(config.resync);
    let mut full = true;
    loop {
        if full {
            full = false;
            owners.relist(&cache, Kind::CronJob, &mut queue);
        }
        let now = Instant::now();
        while let Some(entry) = timers.first_entry() {
            if *entry.key() > now {
                break;
            }
            for k in entry.remove() {
                due.remove(&k);
                queue.add(k);
            }
        }
        let mut ok = drain(&mut cronjobs_rx, Kind::CronJob, &registry, |ev| {
            owners.owner_event(ev, &mut queue)
        });
        ok &= drain(&mut jobs_rx, Kind::Job, &registry, |ev| {
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
                if let Some(old) = due.remove(&k)
                    && let Some(keys) = timers.get_mut(&old)
                {
                    keys.retain(|x| *x != k);
                    if keys.is_empty() {
                        timers.remove(&old);
                    }
                }
                if let Some(after) = again {
                    timers.entry(now + after).or_default().push(k.clone());
                    due.insert(k.clone(), now + after);
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
            r = cronjobs_rx.recv() => match r {
                Ok(ev) => owners.owner_event(&ev, &mut queue),
                Err(_) => { cronjobs_rx = cache.subscribe_now(Kind::CronJob); full = true; }
            },
            r = jobs_rx.recv() => match r {
                Ok(ev) => owners.owned_event(&ev, &mut queue),
                Err(_) => { jobs_rx = cache.subscribe_now(Kind::Job); full = true; }
            },
            _ = rev_rx.changed(), if queue.has_waiting() => {}
        }
    }
}

#[cfg(test)]
mod tests;

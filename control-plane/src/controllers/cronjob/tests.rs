use super::*;
use serde_json::json;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A CronJob created at `created`, defaulted as the registry stores it.
fn cronjob(schedule: &str, created: &str, extra: serde_json::Value) -> CronJob {
    let mut spec = json!({"schedule": schedule, "jobTemplate": {
        "metadata": {"labels": {"team": "a"}},
        "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "c", "image": "busybox"}]}}}}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let mut c: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "hello", "namespace": "default", "uid": "cj-uid",
            "creationTimestamp": created},
        "spec": spec,
    }))
    .unwrap();
    podd_api::defaults::apply(&mut c);
    c
}

/// A Job of the CronJob, started at `start`, finished as `how` (`Complete`, `Failed`) or
/// running (None).
fn job(name: &str, start: &str, how: Option<&str>) -> Job {
    let conditions = how.map(|t| json!([{"type": t, "status": "True"}]));
    let completion = (how == Some("Complete")).then_some(start);
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "hello",
                "uid": "cj-uid", "controller": true}]},
        "status": {"startTime": start, "conditions": conditions, "completionTime": completion},
    }))
    .unwrap()
}

fn active_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(name.into()),
        namespace: Some("default".into()),
        uid: Some(format!("uid-{name}")),
        ..Default::default()
    }
}

/// The CronJob after the plan's writes (the created Job in `active`, as the reconcile adds it).
fn after(mut cj: CronJob, p: &Plan) -> CronJob {
    let mut st = p.status.clone();
    if let Some(j) = &p.create {
        st.active
            .get_or_insert_with(Vec::new)
            .push(active_ref(&j.name_any()));
    }
    cj.status = Some(st);
    cj
}

fn reasons(p: &Plan) -> Vec<&str> {
    p.events.iter().map(|e| e.1).collect()
}

#[test]
fn defaults_and_validation_speak_kubernetes() {
    let c = cronjob("*/5 * * * *", "2026-01-01T00:00:00Z", json!({}));
    let s = c.spec.as_ref().unwrap();
    assert_eq!(s.concurrency_policy.as_deref(), Some("Allow"));
    assert_eq!(s.suspend, Some(false));
    assert_eq!(s.successful_jobs_history_limit, Some(3));
    assert_eq!(s.failed_jobs_history_limit, Some(1));
    let pod = s.job_template.spec.as_ref().unwrap().template.spec.as_ref();
    assert_eq!(pod.unwrap().dns_policy.as_deref(), Some("ClusterFirst"));
    // The Job template keeps what Job defaulting would add for the Jobs.
    assert_eq!(s.job_template.spec.as_ref().unwrap().backoff_limit, None);
    podd_api::validation::validate(&c).unwrap();

    let mut bad = cronjob(
        "61 * * * *",
        "2026-01-01T00:00:00Z",
        json!({"timeZone": "Mars/Olympus", "concurrencyPolicy": "Sometimes",
            "startingDeadlineSeconds": -1, "successfulJobsHistoryLimit": -2}),
    );
    bad.metadata.name = Some("x".repeat(53));
    let js = bad
        .spec
        .as_mut()
        .unwrap()
        .job_template
        .spec
        .as_mut()
        .unwrap();
    js.selector = Some(Default::default());
    js.template.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    let errs = podd_api::validation::validate(&bad).unwrap_err();
    let text = errs.to_string();
    for want in [
        "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61",
        "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus",
        "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
        "spec.startingDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0",
        "spec.successfulJobsHistoryLimit: Invalid value: -2: must be greater than or equal to 0",
        "metadata.name: Invalid value: \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\": must be no more than 52 characters",
        "spec.jobTemplate.spec.selector: Invalid value: \"{}\": `selector` will be auto-generated",
        "spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
    ] {
        assert!(text.contains(want), "{want}\nnot in\n{text}");
    }
    let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"spec.schedule") && fields.contains(&"spec.timeZone"));
    let tz_in_schedule = cronjob("CRON_TZ=UTC * * * * *", "2026-01-01T00:00:00Z", json!({}));
    let text = podd_api::validation::validate(&tz_in_schedule)
        .unwrap_err()
        .to_string();
    assert!(text.contains("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"));
}

#[test]
fn nothing_before_the_first_time_then_the_job_of_that_time() {
    let c = cronjob("*/5 * * * *", "2026-01-01T00:01:30Z", json!({}));
    let p = plan(ts("2026-01-01T00:03:00Z"), &c, &[]);
    assert_eq!(p.create, None);
    assert_eq!(p.requeue_after, Some(Duration::from_millis(120_100)));
    let p = plan(ts("2026-01-01T00:05:00.5Z"), &c, &[]);
    let j = p.create.as_ref().expect("a job at 00:05");
    // 2026-01-01T00:05:00Z is 29,453,765 minutes after the epoch.
    assert_eq!(j.name_any(), "hello-29453765");
    let m = &j.metadata;
    assert_eq!(
        m.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
        "2026-01-01T00:05:00Z"
    );
    assert_eq!(m.labels.as_ref().unwrap()["team"], "a");
    let owner = &m.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("CronJob", "cj-uid", Some(true))
    );
    assert_eq!(
        j.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .restart_policy
            .as_deref(),
        Some("OnFailure")
    );
    assert_eq!(
        p.status.last_schedule_time,
        Some(Time(ts("2026-01-01T00:05:00Z")))
    );
    // Next look: at 00:10, not before.
    assert_eq!(p.requeue_after, Some(Duration::from_millis(299_600)));
    // Done once: the same time makes no second Job.
    let c = after(c, &p);
    let again = plan(
        ts("2026-01-01T00:06:00Z"),
        &c,
        &[job("hello-29453765", "2026-01-01T00:05:01Z", None)],
    );
    assert_eq!(again.create, None);
    assert!(again.events.is_empty(), "{:?}", again.events);
}

#[test]
fn only_the_most_recent_missed_time_runs_and_many_missed_warn() {
    // The server was down from 00:02 to 03:00: one Job, for 03:00.
    let c = cronjob("* * * * *", "2026-01-01T00:00:00Z", json!({}));
    let mut c = c;
    c.status = Some(CronJobStatus {
        last_schedule_time: Some(Time(ts("2026-01-01T00:02:00Z"))),
        ..Default::default()
    });
    let p = plan(ts("2026-01-01T03:00:10Z"), &c, &[]);
    assert_eq!(
        p.create
            .as_ref()
            .unwrap()
            .metadata
            .annotations
            .as_ref()
            .unwrap()[SCHEDULED_TIMESTAMP],
        "2026-01-01T03:00:00Z"
    );
    assert_eq!(reasons(&p), ["TooManyMissedTimes"]);
    // A few missed: no warning.
    let p = plan(ts("2026-01-01T00:30:10Z"), &c, &[]);
    assert!(p.create.is_some());
    assert!(reasons(&p).is_empty());
    // An irregular schedule still finds the right most recent time.
    let c = cronjob("30 6-16/4 * * 1-5", "2026-01-02T00:00:00Z", json!({}));
    let p = plan(ts("2026-01-07T11:00:00Z"), &c, &[]);
    assert_eq!(
        p.status.last_schedule_time,
        Some(Time(ts("2026-01-07T10:30:00Z")))
    );
}

#[test]
fn the_starting_deadline_skips_late_times() {
    let c = cronjob(
        "0 * * * *",
        "2026-01-01T00:00:00Z",
        json!({"startingDeadlineSeconds": 60}),
    );
    let p = plan(ts("2026-01-01T05:00:30Z"), &c, &[]);
    assert!(p.create.is_some(), "within the deadline");
    let p = plan(ts("2026-01-01T05:02:00Z"), &c, &[]);
    assert_eq!(p.create, None);
    assert!(reasons(&p).is_empty(), "{:?}", p.events);
    assert_eq!(
        p.requeue_after,
        Some(Duration::from_millis(58 * 60_000 + 100))
    );
    // The deadline also bounds what counts as missed: no warning after a long outage.
    let p = plan(ts("2026-03-01T05:00:30Z"), &c, &[]);
    assert!(p.create.is_some());
    assert!(reasons(&p).is_empty());
}

#[test]
fn concurrency_policies() {
    let running = job("hello-29453765", "2026-01-01T00:05:00Z", None);
    let mut status = CronJobStatus {
        active: Some(vec![active_ref("hello-29453765")]),
        last_schedule_time: Some(Time(ts("2026-01-01T00:05:00Z"))),
        ..Default::default()
    };
    let now = ts("2026-01-01T00:10:01Z");
    let with = |policy: &str, status: &CronJobStatus| {
        let mut c = cronjob(
            "*/5 * * * *",
            "2026-01-01T00:00:00Z",
            json!({"concurrencyPolicy": policy}),
        );
        c.status = Some(status.clone());
        plan(now, &c, std::slice::from_ref(&running))
    };
    let allow = with("Allow", &status);
    assert_eq!(allow.create.as_ref().unwrap().name_any(), "hello-29453770");
    assert!(allow.delete.is_empty());
    assert_eq!(allow.status.active.as_ref().unwrap().len(), 1);

    let forbid = with("Forbid", &status);
    assert_eq!(forbid.create, None);
    assert_eq!(reasons(&forbid), ["JobAlreadyActive"]);
    assert_eq!(forbid.requeue_after, Some(Duration::from_millis(299_100)));

    let replace = with("Replace", &status);
    assert_eq!(replace.delete, ["hello-29453765"]);
    assert!(replace.create.is_some());
    assert_eq!(replace.status.active, None);
    assert_eq!(reasons(&replace), ["SuccessfulDelete"]);

    // A finished Job leaves `active`, and Forbid runs again.
    let done = job("hello-29453765", "2026-01-01T00:05:00Z", Some("Complete"));
    let mut c = cronjob(
        "*/5 * * * *",
        "2026-01-01T00:00:00Z",
        json!({"concurrencyPolicy": "Forbid"}),
    );
    c.status = Some(status.clone());
    let p = plan(now, &c, std::slice::from_ref(&done));
    assert!(p.create.is_some());
    assert_eq!(p.status.active, None);
    assert_eq!(
        p.status.last_successful_time,
        Some(Time(ts("2026-01-01T00:05:00Z")))
    );
    assert_eq!(reasons(&p), ["SawCompletedJob"]);
    // An active Job that is gone leaves `active` too.
    status.active = Some(vec![active_ref("vanished")]);
    let p = with("Forbid", &status);
    assert!(reasons(&p).contains(&"MissingJob"));
}

#[test]
fn suspend_stops_new_jobs_but_not_the_history() {
    let c = cronjob(
        "* * * * *",
        "2026-01-01T00:00:00Z",
        json!({"suspend": true, "successfulJobsHistoryLimit": 1}),
    );
    let jobs = [
        job("a", "2026-01-01T00:01:00Z", Some("Complete")),
        job("b", "2026-01-01T00:02:00Z", Some("Complete")),
    ];
    let p = plan(ts("2026-01-01T00:05:00Z"), &c, &jobs);
    assert_eq!(p.create, None);
    assert_eq!(
        p.requeue_after, None,
        "a suspended CronJob waits for its update"
    );
    assert_eq!(p.delete, ["a"]);
}

#[test]
fn history_limits_delete_the_oldest_finished_jobs() {
    let c = cronjob(
        "0 0 1 1 *",
        "2026-01-01T00:00:00Z",
        json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 0}),
    );
    let jobs = [
        job("s3", "2026-01-01T00:03:00Z", Some("Complete")),
        job("s1", "2026-01-01T00:01:00Z", Some("Complete")),
        job("s2", "2026-01-01T00:02:00Z", Some("Complete")),
        job("s0", "2026-01-01T00:00:00Z", Some("Complete")),
        job("f1", "2026-01-01T00:01:00Z", Some("Failed")),
        job("running", "2026-01-01T00:00:00Z", None),
    ];
    let p = plan(ts("2026-01-01T00:10:00Z"), &c, &jobs);
    assert_eq!(p.delete, ["s0", "s1", "f1"]);
    assert_eq!(
        p.status.last_successful_time,
        Some(Time(ts("2026-01-01T00:03:00Z")))
    );
    // Unlimited when unset (an object stored before defaulting).
    let mut c = c;
    let s = c.spec.as_mut().unwrap();
    s.successful_jobs_history_limit = None;
    s.failed_jobs_history_limit = None;
    assert!(
        plan(ts("2026-01-01T00:10:00Z"), &c, &jobs)
            .delete
            .is_empty()
    );
}

#[test]
fn time_zones_schedule_in_local_time() {
    // 09:00 in Tokyo is 00:00 UTC.
    let c = cronjob(
        "0 9 * * *",
        "2026-01-01T00:00:00Z",
        json!({"timeZone": "Asia/Tokyo"}),
    );
    let p = plan(ts("2026-01-02T00:00:01Z"), &c, &[]);
    let j = p.create.unwrap();
    assert_eq!(
        j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP],
        "2026-01-02T09:00:00+09:00"
    );
    assert_eq!(
        j.metadata.name.unwrap(),
        format!("hello-{}", ts("2026-01-02T00:00:00Z").as_second() / 60)
    );
    // Across New York's spring-forward, a daily 12:00 stays at noon local time.
    let c = cronjob(
        "0 12 * * *",
        "2026-03-07T18:00:00Z",
        json!({"timeZone": "America/New_York"}),
    );
    let p = plan(ts("2026-03-08T15:00:00Z"), &c, &[]);
    assert_eq!(p.create, None);
    assert_eq!(p.requeue_after, Some(Duration::from_millis(3_600_100)));
    // An unknown zone (the tz database changed under a stored CronJob) stops it with an event.
    let mut c = c;
    c.spec.as_mut().unwrap().time_zone = Some("Gone/Away".into());
    let p = plan(ts("2026-03-09T15:00:00Z"), &c, &[]);
    assert_eq!(p.create, None);
    assert_eq!(reasons(&p), ["UnknownTimeZone"]);
}

#[test]
fn a_schedule_with_no_time_is_invalid() {
    let c = cronjob("0 0 30 2 *", "2026-01-01T00:00:00Z", json!({}));
    let p = plan(ts("2026-05-01T00:00:00Z"), &c, &[]);
    assert_eq!(p.create, None);
    assert_eq!(reasons(&p), ["InvalidSchedule"]);
    assert_eq!(p.requeue_after, None);
}

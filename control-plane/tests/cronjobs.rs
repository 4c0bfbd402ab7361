//! batch/v1 CronJobs through the API with the controllers running, on a clock the test moves
//! forward a minute at a time: a `* * * * *` CronJob creates the Job of each minute (named
//! by the minute, owned by the CronJob), Replace deletes the running Job before the next
//! starts, the history limit deletes the oldest finished Job, suspend stops new Jobs, and an
//! invalid schedule or time zone is a 422 naming the field.

mod common;

use common::{eventually, fast_controllers, start};
use podd_api::jiff::{SignedDuration, Timestamp};
use podd_api::{CronJob, Job, Pod, ResourceExt};
use podd_client::{Api, ListParams};
use podd_control_plane::controllers::ControllerConfig;
use serde_json::json;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// How far the controllers' clock is ahead of the wall clock, in seconds.
static AHEAD: AtomicI64 = AtomicI64::new(0);

fn clock() -> Timestamp {
    Timestamp::now() + SignedDuration::from_secs(AHEAD.load(Ordering::SeqCst))
}

/// Moves the controllers' clock a minute on: the next scheduled time has passed (the
/// resync, every 2 s here, looks again).
fn next_minute() -> i64 {
    AHEAD.fetch_add(60, Ordering::SeqCst);
    clock().as_second().div_euclid(60)
}

fn cronjob(name: &str, spec: serde_json::Value) -> CronJob {
    let mut spec = spec;
    spec["schedule"] = json!("* * * * *");
    spec["jobTemplate"] = json!({"metadata": {"labels": {"from": name}}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn jobs_of(jobs: &Api<Job>, cj: &CronJob) -> Vec<Job> {
    let uid = cj.uid().unwrap();
    let mut v: Vec<Job> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| j.owner_references().iter().any(|r| r.uid == uid))
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect();
    v.sort_by_key(|j| j.name_any());
    v
}

/// Succeeds the Job's pod, as its node's agent would report it.
async fn succeed(pods: &Api<Pod>, job: &str) {
    let lp = ListParams {
        label_selector: Some(format!("batch.kubernetes.io/job-name={job}")),
        ..Default::default()
    };
    let pod = eventually(WAIT, "the job's pod", || async {
        pods.list(&lp).await.unwrap().items.into_iter().next()
    })
    .await;
    let now = Timestamp::now().to_string();
    pods.patch_status(
        &pod.name_any(),
        &json!({"status": {"phase": "Succeeded", "containerStatuses": [{"name": "c",
            "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "finishedAt": now}}}]}}),
    )
    .await
    .unwrap();
}

fn active(cj: &CronJob) -> Vec<String> {
    cj.status
        .as_ref()
        .and_then(|s| s.active.as_ref())
        .map(|a| a.iter().filter_map(|r| r.name.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjobs_run_on_schedule_replace_and_keep_their_history() {
    let t = start(Some(ControllerConfig {
        cronjob_clock: clock,
        ..fast_controllers()
    }))
    .await;
    let cjs = t.client.api::<CronJob>(Some("default"));
    let jobs = t.client.api::<Job>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    let cj = cjs
        .create(&cronjob(
            "every",
            json!({"concurrencyPolicy": "Replace", "successfulJobsHistoryLimit": 1}),
        ))
        .await
        .unwrap();
    let spec = cj.spec.as_ref().unwrap();
    assert_eq!(spec.failed_jobs_history_limit, Some(1));
    assert_eq!(spec.suspend, Some(false));
    // Before its first time, nothing runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(jobs_of(&jobs, &cj).await.is_empty());

    // A minute on: the Job of that minute, owned by the CronJob and in its status.
    let minute = next_minute();
    let first = eventually(WAIT, "the first job", || async {
        jobs_of(&jobs, &cj).await.into_iter().next()
    })
    .await;
    // Named by its minute (the next one, if the wall clock turned one meanwhile).
    let names = [minute, minute + 1].map(|m| format!("every-{m}"));
    assert!(names.contains(&first.name_any()), "{}", first.name_any());
    let owner = &first.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("CronJob", Some(true))
    );
    assert!(first.annotations()["batch.kubernetes.io/cronjob-scheduled-timestamp"].ends_with('Z'));
    assert_eq!(first.labels()["from"], "every");
    // The Job got the Job defaults (the template did not).
    assert_eq!(first.spec.as_ref().unwrap().backoff_limit, Some(6));
    let cj = eventually(WAIT, "the job in status.active", || async {
        let c = cjs.get("every").await.unwrap();
        (active(&c) == [first.name_any()]).then_some(c)
    })
    .await;
    assert!(cj.status.as_ref().unwrap().last_schedule_time.is_some());

    // Replace: the next minute deletes the running Job and starts its own.
    next_minute();
    let second = eventually(WAIT, "the first job replaced", || async {
        let v = jobs_of(&jobs, &cj).await;
        (v.len() == 1 && v[0].name_any() != first.name_any()).then(|| v[0].clone())
    })
    .await;
    eventually(WAIT, "status.active names the new job", || async {
        (active(&cjs.get("every").await.unwrap()) == [second.name_any()]).then_some(())
    })
    .await;

    // Two finished Jobs with a history limit of 1: the older goes.
    succeed(&pods, &second.name_any()).await;
    let cj = eventually(WAIT, "the finished job leaves active", || async {
        let c = cjs.get("every").await.unwrap();
        let st = c.status.clone().unwrap_or_default();
        (st.active.is_none() && st.last_successful_time.is_some()).then_some(c)
    })
    .await;
    next_minute();
    let third = eventually(WAIT, "a third job", || async {
        let v = jobs_of(&jobs, &cj).await;
        v.into_iter().find(|j| j.name_any() > second.name_any())
    })
    .await;
    succeed(&pods, &third.name_any()).await;
    eventually(WAIT, "the oldest finished job deleted", || async {
        let names: Vec<String> = jobs_of(&jobs, &cj)
            .await
            .iter()
            .map(|j| j.name_any())
            .collect();
        (names == [third.name_any()]).then_some(())
    })
    .await;

    // Suspended: the next minute makes no Job.
    cjs.patch("every", &json!({"spec": {"suspend": true}}))
        .await
        .unwrap();
    next_minute();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names: Vec<String> = jobs_of(&jobs, &cj)
        .await
        .iter()
        .map(|j| j.name_any())
        .collect();
    assert_eq!(names, [third.name_any()]);
}

#[tokio::test]
async fn bad_schedules_and_time_zones_are_422_on_their_fields() {
    let t = start(None).await;
    let cjs = t.client.api::<CronJob>(Some("default"));
    let mut bad = cronjob("bad", json!({"timeZone": "Mars/Olympus"}));
    bad.spec.as_mut().unwrap().schedule = "*/1 * * *".into();
    let err = cjs.create(&bad).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    let text = err.to_string();
    assert!(text.contains("spec.schedule"), "{text}");
    assert!(
        text.contains("spec.timeZone: Invalid value: \"Mars/Olympus\""),
        "{text}"
    );
    let mut ok = cronjob("ok", json!({"timeZone": "Europe/Paris"}));
    ok.spec.as_mut().unwrap().schedule = "@daily".into();
    cjs.create(&ok).await.unwrap();
}

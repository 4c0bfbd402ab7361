use super::*;
use podd_api::jiff::SignedDuration;
use serde_json::json;

const BASE: Duration = Duration::from_secs(10);

fn job(spec: serde_json::Value) -> Job {
    let mut j: Job = serde_json::from_value(json!({
        "metadata": {"name": "pi", "namespace": "default", "uid": "u1"},
        "spec": spec,
    }))
    .unwrap();
    podd_api::defaults::apply(&mut j);
    j
}

fn template() -> serde_json::Value {
    json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}})
}

fn pod(name: &str, phase: &str, finished: Option<Timestamp>) -> Pod {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase},
    }))
    .unwrap();
    if let Some(t) = finished {
        p.status.as_mut().unwrap().container_statuses =
            Some(vec![serde_json::from_value(json!({
            "name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "finishedAt": t.to_string()}}
        }))
        .unwrap()]);
    }
    p
}

fn with_status(mut j: Job, plan: &Plan) -> Job {
    j.status = Some(plan.status.clone());
    j
}

fn cond<'a>(st: &'a JobStatus, t: &str) -> Option<&'a JobCondition> {
    st.conditions.iter().flatten().find(|c| c.type_ == t)
}

#[test]
fn defaults_generate_the_selector_and_labels() {
    let j = job(json!({"template": template()}));
    let s = j.spec.as_ref().unwrap();
    assert_eq!(
        (s.completions, s.parallelism, s.backoff_limit),
        (Some(1), Some(1), Some(6))
    );
    assert_eq!(s.manual_selector, Some(false));
    let ml = s.selector.as_ref().unwrap().match_labels.as_ref().unwrap();
    assert_eq!(ml.get("batch.kubernetes.io/controller-uid").unwrap(), "u1");
    let tl = s
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(tl.get("batch.kubernetes.io/job-name").unwrap(), "pi");
    assert_eq!(tl.get("job-name").unwrap(), "pi");
    assert_eq!(tl.get("controller-uid").unwrap(), "u1");
    assert_eq!(j.metadata.labels.as_ref(), Some(tl));
    podd_api::validation::validate(&j).unwrap();
}

#[test]
fn validation_speaks_kubernetes() {
    let mut j = job(
        json!({"template": {"spec": {"containers": [{"name": "c", "image": "b"}]}},
        "parallelism": -1, "completionMode": "Indexed", "completions": null}),
    );
    j.spec.as_mut().unwrap().completions = None;
    let errs = podd_api::validation::validate(&j).unwrap_err().to_string();
    for want in [
        "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
        "spec.completions: Required value: when completion mode is Indexed",
        "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
    ] {
        assert!(errs.contains(want), "{errs}");
    }
}

#[test]
fn runs_up_to_parallelism_then_completes() {
    let now = Timestamp::now();
    let j = job(json!({"completions": 3, "parallelism": 2, "template": template()}));
    let p = plan(&j, &[], now, BASE);
    assert_eq!(p.create, vec![None, None]);
    assert_eq!(p.status.active, Some(2));
    assert!(p.status.start_time.is_some());
    let j = with_status(j, &p);
    let pods = [pod("a", "Succeeded", None), pod("b", "Running", None)];
    let p = plan(&j, &pods, now, BASE);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.status.succeeded, Some(1));
    let j = with_status(j, &p);
    let pods = [
        pod("a", "Succeeded", None),
        pod("b", "Succeeded", None),
        pod("c", "Succeeded", None),
    ];
    let p = plan(&j, &pods, now, BASE);
    assert!(p.create.is_empty());
    let st = &p.status;
    assert_eq!(st.succeeded, Some(3));
    assert_eq!(cond(st, "SuccessCriteriaMet").unwrap().status, "True");
    assert_eq!(cond(st, "Complete").unwrap().status, "True");
    assert!(st.completion_time.is_some());
    // Finished: nothing more happens.
    let j = with_status(j, &p);
    let again = plan(&j, &pods, now, BASE);
    assert_eq!(again.status, p.status);
    assert!(again.create.is_empty());
}

#[test]
fn failures_back_off_exponentially_then_fail_the_job() {
    let now = Timestamp::now();
    let j = job(json!({"backoffLimit": 2, "template": template()}));
    let j = with_status(j.clone(), &plan(&j, &[], now, BASE));
    let just = now - SignedDuration::from_secs(1);
    // One failure a second ago: the replacement waits 10 s.
    let p = plan(&j, &[pod("a", "Failed", Some(just))], now, BASE);
    assert!(p.create.is_empty());
    let wait = p.requeue_after.unwrap();
    assert!(
        wait > Duration::from_secs(8) && wait <= Duration::from_secs(9),
        "{wait:?}"
    );
    // Two failures: 20 s after the last.
    let pods = [
        pod("a", "Failed", Some(now - SignedDuration::from_secs(30))),
        pod("b", "Failed", Some(now - SignedDuration::from_secs(15))),
    ];
    assert!(plan(&j, &pods, now, BASE).create.is_empty());
    let later = now + SignedDuration::from_secs(6);
    assert_eq!(plan(&j, &pods, later, BASE).create, vec![None]);
    assert_eq!(backoff_delay(BASE, 3), Duration::from_secs(40));
    assert_eq!(backoff_delay(BASE, 30), MAX_BACKOFF);
    // Three failures > backoffLimit 2: FailureTarget, then Failed once nothing runs.
    let pods = [
        pod("a", "Failed", Some(just)),
        pod("b", "Failed", Some(just)),
        pod("c", "Failed", Some(just)),
    ];
    let p = plan(&j, &pods, now, BASE);
    let st = &p.status;
    assert_eq!(st.failed, Some(3));
    assert_eq!(
        cond(st, "FailureTarget").unwrap().reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
    let failed = cond(st, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job has reached the specified backoff limit")
    );
    assert!(st.completion_time.is_none());
}

#[test]
fn a_deadline_fails_the_job_and_stops_its_pods() {
    let now = Timestamp::now();
    let mut j = job(json!({"activeDeadlineSeconds": 5, "template": template()}));
    j.status = Some(JobStatus {
        start_time: Some(Time(now - SignedDuration::from_secs(6))),
        ..Default::default()
    });
    let p = plan(&j, &[pod("a", "Running", None)], now, BASE);
    assert_eq!(p.delete, vec!["a"]);
    assert_eq!(
        cond(&p.status, "FailureTarget").unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    assert!(cond(&p.status, "Failed").is_none(), "a pod still runs");
    let j = with_status(j, &p);
    let p = plan(&j, &[], now, BASE);
    assert_eq!(
        cond(&p.status, "Failed").unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
}

#[test]
fn indexed_jobs_give_each_pod_its_index() {
    let now = Timestamp::now();
    let j = job(
        json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed",
        "template": template()}),
    );
    let p = plan(&j, &[], now, BASE);
    assert_eq!(p.create, vec![Some(0), Some(1)]);
    let pod0 = pod_from_template(&j, Some(0));
    assert_eq!(pod0.metadata.generate_name.as_deref(), Some("pi-0-"));
    assert_eq!(
        pod0.annotations().get(COMPLETION_INDEX).map(String::as_str),
        Some("0")
    );
    assert_eq!(
        pod0.labels().get(COMPLETION_INDEX).map(String::as_str),
        Some("0")
    );
    let spec = pod0.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("pi-0"));
    let env = spec.containers[0].env.as_ref().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "JOB_COMPLETION_INDEX" && e.value.as_deref() == Some("0"))
    );
    let j = with_status(j, &p);
    let mut done = pod("a", "Succeeded", None);
    done.metadata.annotations = pod0.metadata.annotations.clone();
    let mut running = pod("b", "Running", None);
    running.metadata.annotations = Some([(COMPLETION_INDEX.to_string(), "1".to_string())].into());
    let p = plan(&j, &[done, running], now, BASE);
    assert_eq!(p.create, vec![Some(2)]);
    assert_eq!(p.status.completed_indexes.as_deref(), Some("0"));
}

#[test]
fn suspended_jobs_run_nothing() {
    let now = Timestamp::now();
    let j = job(json!({"suspend": true, "template": template()}));
    let p = plan(&j, &[pod("a", "Running", None)], now, BASE);
    assert!(p.create.is_empty());
    assert_eq!(p.delete, vec!["a"]);
    assert_eq!(cond(&p.status, "Suspended").unwrap().status, "True");
    assert!(p.status.start_time.is_none());
    let mut j = with_status(j, &p);
    j.spec.as_mut().unwrap().suspend = Some(false);
    let p = plan(&j, &[], now, BASE);
    assert_eq!(p.create.len(), 1);
    assert_eq!(
        cond(&p.status, "Suspended").unwrap().reason.as_deref(),
        Some("JobResumed")
    );
}

#[test]
fn ttl_deletes_a_finished_job() {
    let now = Timestamp::now();
    let j = job(json!({"ttlSecondsAfterFinished": 0, "template": template()}));
    let p = plan(&j, &[pod("a", "Succeeded", None)], now, BASE);
    assert!(p.delete_job);
    let j = job(json!({"ttlSecondsAfterFinished": 60, "template": template()}));
    let p = plan(&j, &[pod("a", "Succeeded", None)], now, BASE);
    assert!(!p.delete_job);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
}

#[test]
fn indexes_format_as_kubernetes() {
    let set: BTreeSet<i32> = [1, 3, 4, 5, 7].into();
    assert_eq!(format_indexes(&set), "1,3-5,7");
    assert_eq!(parse_indexes("1,3-5,7"), set);
    assert_eq!(format_indexes(&BTreeSet::new()), "");
}

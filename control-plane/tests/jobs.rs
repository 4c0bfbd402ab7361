//! batch/v1 Jobs through the API with the controllers running: the server generates the
//! selector, the job controller runs pods until completions succeed, replaces failed ones
//! after its back-off and fails the Job past its backoffLimit, and deleting the Job deletes
//! its pods. Pods finish here by their status being written, as a node's agent writes it.

mod common;

use common::{eventually, fast_controllers, start};
use podd_api::{Job, Pod};
use podd_client::{Api, ListParams};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn job(name: &str, spec: serde_json::Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox"}]}});
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn pods_of(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    let lp = ListParams {
        label_selector: Some(format!("batch.kubernetes.io/job-name={job}")),
        ..Default::default()
    };
    pods.list(&lp).await.unwrap().items
}

fn phase(p: &Pod) -> String {
    podd_api::resources::pod_phase(p).to_string()
}

async fn finish(pods: &Api<Pod>, p: &Pod, phase: &str) {
    let name = p.metadata.name.clone().unwrap();
    let now = podd_api::jiff::Timestamp::now().to_string();
    let code = if phase == "Succeeded" { 0 } else { 1 };
    pods.patch_status(
        &name,
        &json!({"status": {"phase": phase, "containerStatuses": [{"name": "c", "image": "busybox",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "finishedAt": now}}}]}}),
    )
    .await
    .unwrap();
}

fn condition(j: &Job, t: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_its_completions_and_completes() {
    let t = start(Some(fast_controllers())).await;
    let jobs = t.client.api::<Job>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    let created = jobs
        .create(&job("work", json!({"completions": 3, "parallelism": 2})))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(6));
    let sel = spec
        .selector
        .as_ref()
        .unwrap()
        .match_labels
        .clone()
        .unwrap();
    assert_eq!(sel["batch.kubernetes.io/controller-uid"], uid);
    let mut done = 0;
    while done < 3 {
        let running = eventually(WAIT, "running pods", || async {
            let ps: Vec<Pod> = pods_of(&pods, "work")
                .await
                .into_iter()
                .filter(|p| phase(p) != "Succeeded")
                .collect();
            (!ps.is_empty()).then_some(ps)
        })
        .await;
        assert!(running.len() <= 2, "parallelism 2: {}", running.len());
        let owner = &running[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Job", uid.as_str())
        );
        finish(&pods, &running[0], "Succeeded").await;
        done += 1;
    }
    let j = eventually(WAIT, "Complete", || async {
        let j = jobs.get("work").await.unwrap();
        condition(&j, "Complete").map(|_| j)
    })
    .await;
    let st = j.status.as_ref().unwrap();
    assert_eq!(st.succeeded, Some(3));
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert!(condition(&j, "SuccessCriteriaMet").is_some());
    assert_eq!(
        pods_of(&pods, "work").await.len(),
        3,
        "no pod beyond completions"
    );

    // Deleting the Job deletes its pods.
    jobs.delete("work").await.unwrap();
    eventually(WAIT, "the pods gone", || async {
        pods_of(&pods, "work").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pods_are_retried_until_the_backoff_limit() {
    let mut config = fast_controllers();
    config.job_backoff = Duration::from_millis(200);
    let t = start(Some(config)).await;
    let jobs = t.client.api::<Job>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    jobs.create(&job("fails", json!({"backoffLimit": 1})))
        .await
        .unwrap();
    for attempt in 1..=2 {
        let p = eventually(WAIT, "a running pod", || async {
            pods_of(&pods, "fails")
                .await
                .into_iter()
                .find(|p| phase(p) != "Failed")
        })
        .await;
        finish(&pods, &p, "Failed").await;
        // The retry may already exist after the first failure (the back-off is 200 ms and
        // the machine may be slow); after the last one allowed (backoffLimit 1), none comes.
        let n = pods_of(&pods, "fails").await.len();
        let retry = usize::from(attempt < 2);
        assert!(
            n == attempt || n == attempt + retry,
            "{n} pods after {attempt} failures"
        );
    }
    let j = eventually(WAIT, "Failed", || async {
        let j = jobs.get("fails").await.unwrap();
        condition(&j, "Failed").map(|c| (j, c))
    })
    .await;
    assert_eq!(
        j.1,
        (
            "BackoffLimitExceeded".to_string(),
            "Job has reached the specified backoff limit".to_string()
        )
    );
    assert_eq!(j.0.status.as_ref().unwrap().failed, Some(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pods_of(&pods, "fails").await.len(),
        2,
        "no pod after Failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_validated_and_their_selector_is_immutable() {
    let t = start(None).await;
    let jobs = t.client.api::<Job>(Some("default"));
    let mut bad = job("bad", json!({"parallelism": -1}));
    bad.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = None;
    let err = jobs.create(&bad).await.unwrap_err().to_string();
    assert!(err.contains("spec.parallelism: Invalid value: -1"), "{err}");
    assert!(
        err.contains(r#"spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never""#),
        "{err}"
    );
    jobs.create(&job("ok", json!({"suspend": true})))
        .await
        .unwrap();
    let err = jobs
        .patch("ok", &json!({"spec": {"completions": 5}}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.completions: Invalid value: 5: field is immutable"),
        "{err}"
    );
}

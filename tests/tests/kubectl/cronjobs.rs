//! batch/v1 CronJobs with the real kubectl: `kubectl create cronjob` (kubectl's own
//! defaults: OnFailure pods), `get cronjobs` with kube-apiserver's columns, `create job
//! --from=cronjob/NAME`, a Job made on schedule by the controller, suspend through `kubectl
//! patch`, and an invalid schedule refused with the field named.

use crate::harness::{Cluster, header};
use std::time::Duration;

/// The row of `name` in a `kubectl get` table.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in:\n{table}"))
}

#[test]
fn create_get_instantiate_schedule_and_suspend() {
    let c = Cluster::start();
    let out = c.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/1 * * * *",
        "--",
        "echo",
        "tick",
    ]);
    assert!(out.contains("cronjob.batch/tick created"), "{out}");
    let cj = c.json(&["get", "cronjob", "tick"]);
    let spec = &cj["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    assert_eq!(
        spec["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );

    let table = c.ok(&["get", "cronjobs"]);
    assert_eq!(
        header(&table),
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE"
        ],
        "{table}"
    );
    let r: Vec<&str> = row(&table, "tick").split_whitespace().collect();
    assert_eq!(
        r[..10],
        [
            "tick", "*/1", "*", "*", "*", "*", "<none>", "False", "0", "<none>"
        ],
        "{table}"
    );
    // The short name and `kubectl get all`.
    assert!(c.ok(&["get", "cj"]).contains("tick"));
    assert!(c.ok(&["get", "all"]).contains("cronjob.batch/tick"));

    // A Job from the CronJob's template, now, owned by it.
    let out = c.ok(&["create", "job", "by-hand", "--from=cronjob/tick"]);
    assert!(out.contains("job.batch/by-hand created"), "{out}");
    let job = c.json(&["get", "job", "by-hand"]);
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["echo", "tick"])
    );

    // Bad input: the schedule and the time zone named.
    let err = c.fails(&[
        "create",
        "cronjob",
        "bad",
        "--image=busybox",
        "--schedule=61 * * * *",
    ]);
    assert!(err.contains("spec.schedule"), "{err}");
    let zoned = c.file(
        "zoned.yaml",
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: zoned}\nspec:\n  schedule: '@daily'\n  \
         timeZone: Mars/Olympus\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          \
         restartPolicy: Never\n          containers: [{name: c, image: busybox}]\n",
    );
    let err = c.fails(&["apply", "-f", &zoned]);
    assert!(err.contains("spec.timeZone"), "{err}");

    // On schedule: the controller's Job for the next minute, named by it. The next minute
    // may be a whole minute away, so the wait allows for that and for a loaded machine.
    let name = c.until_within("a scheduled job", Duration::from_secs(150), || {
        let jobs = c.json(&["get", "jobs"]);
        jobs["items"].as_array()?.iter().find_map(|j| {
            let n = j["metadata"]["name"].as_str()?;
            let minutes = n.strip_prefix("tick-")?;
            minutes.parse::<u64>().ok().map(|_| n.to_string())
        })
    });
    let job = c.json(&["get", "job", &name]);
    assert!(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .is_string(),
        "{job}"
    );
    c.until("LAST SCHEDULE set", || {
        let table = c.ok(&["get", "cronjob", "tick"]);
        let r: Vec<&str> = row(&table, "tick").split_whitespace().collect();
        (r[9] != "<none>").then_some(())
    });

    // Suspend with kubectl patch: SUSPEND shows it.
    c.ok(&[
        "patch",
        "cronjob",
        "tick",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    let table = c.ok(&["get", "cronjob", "tick"]);
    let r: Vec<&str> = row(&table, "tick").split_whitespace().collect();
    assert_eq!(r[7], "True", "{table}");
}

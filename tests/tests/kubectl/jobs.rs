//! batch/v1 Jobs through the real kubectl on a real one-node podd cluster (network
//! namespaces, real containers; `podd_tests::cluster`): `kubectl create job` runs to
//! `Complete` and `kubectl wait --for=condition=complete` returns, `kubectl logs job/NAME`
//! shows its pod's output, a Job whose pods exit 1 ends `Failed` (BackoffLimitExceeded) after
//! its backoffLimit, and an Indexed Job's pods see their JOB_COMPLETION_INDEX.
//!
//! Needs root and the binaries (`cargo build -p podd -p podd-pod -p podctl`, same profile
//! and target dir as this test); skipped (with a message) when not root.

use podd_tests::cluster::Cluster;

const MANIFESTS: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: fails
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: fails
        image: busybox
        command: ["sh", "-c", "echo failing; exit 1"]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: indexed
spec:
  completions: 2
  parallelism: 2
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: worker
        image: busybox
        command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX"]
"#;

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    let o = c.kubectl(args, b"").expect("run kubectl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = run(c, args);
    assert_eq!(
        code,
        0,
        "kubectl {args:?}: {out}\n{err}\nserver: {}",
        c.log("server.log")
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    out
}

#[test]
// The skip says why on stderr, as the other root-only suites do.
#[allow(clippy::print_stderr)]
fn jobs_complete_fail_log_and_index() {
    if !is_root() {
        eprintln!("skipped: the jobs suite runs real containers and needs root");
        return;
    }
    let c = Cluster::up(1).expect("a one-node cluster");
    ok(
        &c,
        &[
            "create",
            "job",
            "hello",
            "--image=busybox",
            "--",
            "sh",
            "-c",
            "echo hello-from-job",
        ],
    );
    ok(
        &c,
        &[
            "wait",
            "--for=condition=complete",
            "job/hello",
            "--timeout=120s",
        ],
    );
    let logs = ok(&c, &["logs", "job/hello"]);
    assert!(logs.contains("hello-from-job"), "{logs}");
    let table = ok(&c, &["get", "jobs", "hello"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["hello", "Complete", "1/1"], "{table}");

    let manifest = c.state.dir.join("jobs.yaml");
    std::fs::write(&manifest, MANIFESTS).unwrap();
    ok(&c, &["apply", "-f", manifest.to_str().unwrap()]);
    ok(
        &c,
        &[
            "wait",
            "--for=condition=complete",
            "job/indexed",
            "--timeout=120s",
        ],
    );
    let logs = ok(
        &c,
        &[
            "logs",
            "-l",
            "batch.kubernetes.io/job-name=indexed",
            "--prefix",
        ],
    );
    assert!(
        logs.contains("index=0") && logs.contains("index=1"),
        "{logs}"
    );
    // backoffLimit 1: two failed pods, 10 s apart, then Failed.
    ok(
        &c,
        &[
            "wait",
            "--for=condition=failed",
            "job/fails",
            "--timeout=180s",
        ],
    );
    let reason = ok(
        &c,
        &[
            "get",
            "job",
            "fails",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason} {.status.failed}",
        ],
    );
    assert_eq!(reason.trim(), "BackoffLimitExceeded 2");
    ok(&c, &["delete", "job", "hello", "fails", "indexed"]);
}

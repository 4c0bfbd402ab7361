//! Namespaces through the real kubectl on a real one-node podd cluster (network namespaces,
//! real containers; `podd_tests::cluster`): `kubectl get ns` lists the four initial
//! namespaces with kubectl's columns; `kubectl create ns` and a Deployment in it; objects in a
//! namespace that does not exist are refused; `kubectl delete ns` with running pods marks it
//! Terminating (new content refused), stops the pods with their grace period, and the
//! namespace goes once they have: no shim and no cgroup of theirs is left on the node.
//!
//! Needs root and the binaries (`cargo build -p podd -p podd-pod -p podctl`, same profile
//! and target dir as this test); skipped (with a message) when not root.

use podd_tests::cluster::{Cluster, wait_for};
use std::path::Path;
use std::time::Duration;

/// Pods that stop on SIGTERM at once, and get 5 s of grace.
const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: busybox
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
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

/// kubectl's error output for a command that must fail.
fn fails(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = run(c, args);
    assert_ne!(code, 0, "kubectl {args:?} succeeded: {out}");
    err
}

/// The shims of pod `uid` on a node: podd-shim processes whose command line names its
/// state directory.
fn shims_of(run_dir: &Path, uid: &str) -> Vec<i32> {
    let needle = run_dir.join("pods").join(uid).display().to_string();
    podd_tests::cluster::shim_pids(run_dir)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

#[test]
// The skip says why on stderr, as the other root-only suites do.
#[allow(clippy::print_stderr)]
fn namespaces_list_create_refuse_and_delete_with_running_pods() {
    if !is_root() {
        eprintln!("skipped: the namespaces suite runs real containers and needs root");
        return;
    }
    let c = Cluster::up(1).expect("a one-node cluster");

    // The initial namespaces, with kubectl's columns.
    let table = ok(&c, &["get", "ns"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "AGE"], "{table}");
    for name in ["default", "kube-node-lease", "kube-public", "kube-system"] {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([name, "Active"])),
            "{name} Active in:\n{table}"
        );
    }
    let err = fails(&c, &["delete", "ns", "kube-system"]);
    assert!(
        err.contains("namespaces \"kube-system\" is forbidden: this namespace may not be deleted"),
        "{err}"
    );

    // Nothing goes into a namespace that does not exist.
    let err = fails(
        &c,
        &[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "-n",
            "team",
        ],
    );
    assert!(err.contains("namespaces \"team\" not found"), "{err}");

    // A namespace, a Deployment running in it.
    let out = ok(&c, &["create", "ns", "team"]);
    assert_eq!(out.trim(), "namespace/team created");
    let manifest = c.state.dir.join("team.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    ok(
        &c,
        &["apply", "-n", "team", "-f", manifest.to_str().unwrap()],
    );
    ok(
        &c,
        &[
            "wait",
            "-n",
            "team",
            "--for=condition=Ready",
            "pod",
            "-l",
            "app=web",
            "--timeout=120s",
        ],
    );
    let uids = ok(
        &c,
        &[
            "get",
            "pods",
            "-n",
            "team",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ],
    );
    let uids: Vec<&str> = uids.split_whitespace().collect();
    assert_eq!(uids.len(), 2, "{uids:?}");
    let node = &c.state.nodes[0];
    let cgroup = |uid: &str| node.cgroup_root.join("podd/pods").join(uid);
    for uid in &uids {
        assert!(
            !shims_of(&node.run_dir, uid).is_empty(),
            "no shim for {uid}"
        );
        assert!(cgroup(uid).exists(), "no cgroup for {uid}");
    }

    // Deleting it: Terminating at once, new content refused, then gone with its pods.
    ok(&c, &["delete", "ns", "team", "--wait=false"]);
    let phase = ok(&c, &["get", "ns", "team", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Terminating");
    let err = fails(&c, &["run", "late", "--image=busybox", "-n", "team"]);
    assert!(
        err.contains(
            "unable to create new content in namespace team because it is being terminated"
        ),
        "{err}"
    );
    ok(&c, &["wait", "--for=delete", "ns/team", "--timeout=120s"]);
    let (code, _, err) = run(&c, &["get", "ns", "team"]);
    assert_ne!(code, 0);
    assert!(err.contains("namespaces \"team\" not found"), "{err}");
    let (code, out, _) = run(&c, &["get", "pods", "-n", "team", "-o", "name"]);
    assert!(code == 0 && out.trim().is_empty(), "pods left: {out}");
    // The node has stopped them: no shim, no cgroup left.
    wait_for(
        Duration::from_secs(30),
        "the pods' shims and cgroups to go",
        || {
            Ok(uids
                .iter()
                .all(|uid| shims_of(&node.run_dir, uid).is_empty() && !cgroup(uid).exists()))
        },
    )
    .expect("the node cleans up the namespace's pods");

    // The name can be used again, for an empty namespace.
    ok(&c, &["create", "ns", "team"]);
    let out = ok(&c, &["get", "all", "-n", "team", "-o", "name"]);
    assert!(out.trim().is_empty(), "{out}");
    ok(&c, &["delete", "ns", "team"]);
}

//! kubectl verbs not covered elsewhere in the suite, each with what Kubernetes answers:
//! describe of a service, a node and a pod; edit (with EDITOR a script); set env and set
//! resources; wait --for=delete; events --for. (describe deployment, scale, expose, label,
//! annotate, wait --for=condition, set image, diff, events and top are in workloads.rs,
//! apply.rs and basics.rs.)

use crate::harness::{Cluster, Run, web_manifest};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// kubectl with extra environment (EDITOR), like `Cluster::kubectl`.
fn kubectl_env(c: &Cluster, env: &[(&str, &str)], args: &[&str]) -> Run {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
    let home = c.kubeconfig().parent().unwrap();
    let out = Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", c.kubeconfig())
        .env("HOME", home)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .envs(env.iter().copied())
        .output()
        .expect("run kubectl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `out` with every run of spaces made one (kubectl aligns describe's columns to the longest
/// key, which differs by object).
fn squash(out: &str) -> String {
    out.lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each of `wants` (single-spaced) is in `out` with its spaces squashed.
fn assert_has(out: &str, wants: &[&str]) {
    let squashed = squash(out);
    for w in wants {
        assert!(squashed.contains(w), "{w:?} in:\n{out}");
    }
}

#[test]
fn describe_service_node_and_pod() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    c.wait_running("app=web", 2);
    let svc = c.json(&["get", "svc", "web"]);
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let out = c.until("the service's endpoints in describe", || {
        let out = c.ok(&["describe", "service", "web"]);
        out.contains(":8080,").then_some(out)
    });
    assert_has(
        &out,
        &[
            "Name:",
            "Namespace: default",
            "Selector: app=web",
            "Type: ClusterIP",
            "IP Family Policy: SingleStack",
            "IP Families: IPv4",
            &format!("IP: {ip}"),
            "Port: http 80/TCP",
            "TargetPort: http/TCP",
            "Endpoints:",
            "Session Affinity: None",
            "Events:",
        ],
    );

    let out = c.ok(&["describe", "node", "node-1"]);
    assert_has(
        &out,
        &[
            "Name: node-1",
            "Roles:",
            "Conditions:",
            "Ready True",
            "Capacity:",
            "Allocatable:",
            "System Info:",
            "Non-terminated Pods:",
            "Allocated resources:",
            "Events:",
        ],
    );

    let pod = c.json(&["get", "pods", "-l", "app=web"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = c.ok(&["describe", "pod", &pod]);
    assert_has(
        &out,
        &[
            &format!("Name: {pod}"),
            "Namespace: default",
            "Node: node-",
            "Labels: app=web",
            "Status: Running",
            "Controlled By: ReplicaSet/web-",
            "Containers:",
            "httpd:",
            "Port: 8080/TCP",
            "Readiness: http-get http://:http/ delay=0s timeout=1s period=5s",
            "MODE: production",
            "(v1:metadata.name)",
            "Conditions:",
            "Ready True",
            "Volumes:",
            "QoS Class:",
            "Burstable",
            "Events:",
            "Scheduled",
        ],
    );
}

#[test]
fn edit_with_an_editor_script() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );
    // The editor kubectl runs: changes the replicas and the MODE env in the file it is given.
    let script = c.file(
        "editor.sh",
        "#!/bin/sh\nset -e\nsed -i -e 's/^  replicas: 1$/  replicas: 2/' \
         -e 's/value: production/value: edited/' \"$1\"\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = kubectl_env(
        &c,
        &[("KUBE_EDITOR", script.as_str())],
        &["edit", "deployment", "web"],
    );
    assert_eq!(r.code, 0, "kubectl edit: {}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.trim(), "deployment.apps/web edited");
    let d = c.json(&["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 2, "{d:#}");
    crate::harness::assert_container_intact(&d, "edited");
    c.wait_running("app=web", 2);

    // An editor that changes nothing: kubectl says so and sends nothing.
    let rv = c.json(&["get", "deploy", "web"])["metadata"]["resourceVersion"].clone();
    let r = kubectl_env(
        &c,
        &[("KUBE_EDITOR", "true")],
        &["edit", "deployment", "web"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("Edit cancelled, no changes made."),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        c.json(&["get", "deploy", "web"])["metadata"]["resourceVersion"],
        rv
    );

    // An edit the server refuses: kubectl reports the error and keeps a copy of the edit.
    let bad = c.file(
        "bad-editor.sh",
        "#!/bin/sh\nsed -i -e 's/^  replicas: 2$/  replicas: -1/' \"$1\"\n",
    );
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = kubectl_env(
        &c,
        &[("KUBE_EDITOR", bad.as_str())],
        &["edit", "deployment", "web"],
    );
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("deployments.apps \"web\" is invalid")
            && r.stderr
                .contains("A copy of your changes has been stored to"),
        "{}",
        r.stderr
    );
    // The copy starts with the server's reasons, as comments.
    let copy = r
        .stderr
        .split("stored to \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the copy's path");
    let text = std::fs::read_to_string(copy).expect("read the copy");
    let _ = std::fs::remove_file(copy);
    assert!(
        text.starts_with('#') && text.contains("spec.replicas"),
        "{text}"
    );
    assert_eq!(c.json(&["get", "deploy", "web"])["spec"]["replicas"], 2);
}

#[test]
fn set_env_and_resources() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );
    let out = c.ok(&[
        "set",
        "env",
        "deployment/web",
        "LEVEL=debug",
        "MODE=staging",
    ]);
    assert_eq!(out.trim(), "deployment.apps/web env updated");
    let d = c.json(&["get", "deploy", "web"]);
    let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["name"], "MODE");
    assert_eq!(env[0]["value"], "staging", "{env:#}");
    assert_eq!(
        env[1]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(env[2]["name"], "LEVEL");
    assert_eq!(env[2]["value"], "debug");
    let out = c.ok(&["set", "env", "deployment/web", "--list"]);
    assert_has(
        &out,
        &[
            "# Deployment web, container httpd",
            "MODE=staging",
            "LEVEL=debug",
            "# POD_NAME from field path metadata.name",
        ],
    );
    c.ok(&["set", "env", "deployment/web", "LEVEL-"]);
    let d = c.json(&["get", "deploy", "web"]);
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(env.len(), 2, "LEVEL removed: {env:?}");

    let out = c.ok(&[
        "set",
        "resources",
        "deployment",
        "web",
        "--limits=cpu=300m,memory=128Mi",
        "--requests=cpu=100m",
    ]);
    assert_eq!(
        out.trim(),
        "deployment.apps/web resource requirements updated"
    );
    let d = c.json(&["get", "deploy", "web"]);
    let r = &d["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(r["limits"]["cpu"], "300m", "{r:#}");
    assert_eq!(r["limits"]["memory"], "128Mi");
    assert_eq!(r["requests"]["cpu"], "100m");
    assert_eq!(r["requests"]["memory"], "16Mi", "the unnamed request stays");
    // Each change is a new revision the rollout finishes.
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains("\n4 "), "{history}");
    // A request above its limit is refused, as Kubernetes refuses it.
    let err = c.fails(&["set", "resources", "deployment", "web", "--requests=cpu=1"]);
    assert!(
        err.contains("must be less than or equal to cpu limit"),
        "{err}"
    );
}

#[test]
fn wait_for_delete_and_events_for_an_object() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );
    c.wait_running("app=web", 1);
    let out = c.until("the deployment's ScalingReplicaSet event", || {
        let out = c.ok(&["events", "--for", "deployment/web"]);
        out.contains("ScalingReplicaSet").then_some(out)
    });
    assert_eq!(
        crate::harness::header(&out),
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert!(!out.contains("Scheduled"), "only the deployment's: {out}");
    let out = c.ok(&["events", "--types=Warning"]);
    assert!(!out.contains("Normal"), "{out}");

    let pod = c.json(&["get", "pods", "-l", "app=web"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // A finalizer holds the pod while `wait --for=delete` waits; removing it lets it go.
    c.ok(&[
        "patch",
        "pod",
        &pod,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    c.ok(&["delete", "deployment", "web", "--wait=false"]);
    c.until("the pod to be terminating", || {
        let p = c.json(&["get", "pod", &pod]);
        p["metadata"]["deletionTimestamp"].is_string().then_some(())
    });
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
    let waiter = Command::new(kubectl)
        .args([
            "wait",
            "--for=delete",
            &format!("pod/{pod}"),
            "--timeout=60s",
        ])
        .env("KUBECONFIG", c.kubeconfig())
        .env("HOME", c.kubeconfig().parent().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl wait");
    std::thread::sleep(std::time::Duration::from_secs(2));
    c.ok(&[
        "patch",
        "pod",
        &pod,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let out = waiter.wait_with_output().expect("kubectl wait's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("pod/{pod} condition met"));
    let err = c.fails(&["get", "pod", &pod]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    // Waiting for the delete of what is already gone succeeds at once.
    let r = c.kubectl(&["wait", "--for=delete", "deployment/web", "--timeout=5s"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

//! Deployments as kubectl drives them: scale, labels and annotations, set-based selectors,
//! orphan deletes, wait, and rollouts.

use crate::harness::{Cluster, web_manifest};

fn names(c: &Cluster, args: &[&str]) -> Vec<String> {
    let mut a = args.to_vec();
    a.extend(["-o", "name"]);
    let mut v: Vec<String> = c.ok(&a).lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn scale_label_and_annotate() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );
    let out = c.ok(&["scale", "deployment", "web", "--replicas=3"]);
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    c.wait_running("app=web", 3);
    let out = c.ok(&["scale", "deployment/web", "--replicas=1"]);
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    c.wait_running("app=web", 1);

    let out = c.ok(&["label", "deployment", "web", "team=blue"]);
    assert_eq!(out.trim(), "deployment.apps/web labeled");
    assert_eq!(
        c.json(&["get", "deploy", "web"])["metadata"]["labels"]["team"],
        "blue"
    );
    let err = c.fails(&["label", "deployment", "web", "team=green"]);
    assert!(err.contains("--overwrite"), "{err}");
    c.ok(&["label", "deployment", "web", "team=green", "--overwrite"]);
    c.ok(&["label", "deployment", "web", "team-"]);
    let d = c.json(&["get", "deploy", "web"]);
    assert!(d["metadata"]["labels"]["team"].is_null(), "{d:#}");
    assert_eq!(d["metadata"]["labels"]["app"], "web");

    let out = c.ok(&["annotate", "deployment", "web", "owner=ops"]);
    assert_eq!(out.trim(), "deployment.apps/web annotated");
    let d = c.json(&["get", "deploy", "web"]);
    assert_eq!(d["metadata"]["annotations"]["owner"], "ops");
    assert_eq!(d["spec"]["replicas"], 1, "annotate touches nothing else");
}

#[test]
fn set_based_selectors_select() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    c.wait_running("app=web", 2);
    let pods = names(&c, &["get", "pods"]);
    assert_eq!(pods.len(), 2);
    assert_eq!(names(&c, &["get", "pods", "-l", "app in (web)"]), pods);
    assert_eq!(
        names(&c, &["get", "pods", "-l", "app in (web,api),tier"]),
        pods
    );
    assert!(names(&c, &["get", "pods", "-l", "app notin (web)"]).is_empty());
    assert!(names(&c, &["get", "pods", "-l", "!tier"]).is_empty());
    assert_eq!(names(&c, &["get", "pods", "-l", "tier!=backend"]), pods);
    let err = c.fails(&["get", "pods", "-l", "app in (web"]);
    assert!(!err.trim().is_empty());
}

#[test]
fn delete_cascade_orphan_keeps_the_pods() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    c.wait_running("app=web", 2);
    let pods = names(&c, &["get", "pods", "-l", "app=web"]);
    let rs = names(&c, &["get", "rs", "-l", "app=web"]);
    assert_eq!(rs.len(), 1);

    let out = c.ok(&["delete", "deployment", "web", "--cascade=orphan"]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    c.until("the deployment to go", || {
        (c.kubectl(&["get", "deployment", "web"]).code != 0).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        names(&c, &["get", "rs", "-l", "app=web"]),
        rs,
        "the ReplicaSet stays"
    );
    assert_eq!(
        names(&c, &["get", "pods", "-l", "app=web"]),
        pods,
        "its pods stay"
    );
    let r = c.json(&["get", "rs", "-l", "app=web"]);
    assert!(
        r["items"][0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|o| o.is_empty()),
        "the orphan no longer names its owner: {r:#}"
    );

    // Background (the default) takes what the owner owns with it.
    let rs_name = rs[0].trim_start_matches("replicaset.apps/");
    c.ok(&["delete", "rs", rs_name]);
    c.until("the pods to go with their ReplicaSet", || {
        names(&c, &["get", "pods", "-l", "app=web"])
            .is_empty()
            .then_some(())
    });
}

#[test]
fn wait_for_available() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    let out = c.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=60s",
    ]);
    assert!(out.contains("deployment.apps/web condition met"), "{out}");
    let d = c.json(&["get", "deploy", "web"]);
    let conditions = d["status"]["conditions"].as_array().expect("conditions");
    for t in ["Available", "Progressing"] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True"),
            "{t}: {conditions:#?}"
        );
    }
    let out = c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "app=web",
        "--timeout=60s",
    ]);
    assert_eq!(out.matches("condition met").count(), 2, "{out}");
}

#[test]
fn rollout_status_history_undo_and_restart() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");

    c.ok(&["set", "image", "deployment/web", "httpd=busybox-httpd:v2"]);
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rs = c.json(&["get", "rs", "-l", "app=web"]);
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "one ReplicaSet per revision");
    for r in items {
        assert!(
            r["metadata"]["labels"]["pod-template-hash"].is_string(),
            "{r:#}"
        );
        assert!(
            r["metadata"]["annotations"]["deployment.kubernetes.io/revision"].is_string(),
            "{r:#}"
        );
    }

    let history = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains("REVISION"), "{history}");
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    let out = c.ok(&["rollout", "undo", "deployment/web"]);
    assert!(out.contains("deployment.apps/web rolled back"), "{out}");
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let d = c.json(&["get", "deploy", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox-httpd"
    );

    let out = c.ok(&["rollout", "restart", "deployment/web"]);
    assert!(out.contains("deployment.apps/web restarted"), "{out}");
    let d = c.json(&["get", "deploy", "web"]);
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d:#}"
    );
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.wait_running("app=web", 2);
}

#[test]
fn a_watch_sends_only_real_changes() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    c.wait_running("app=web", 2);
    // Let the controllers and nodes settle, then watch a quiet cluster.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = c.kubectl_for(
        std::time::Duration::from_secs(8),
        &[
            "get",
            "pods",
            "-w",
            "--output-watch-events",
            "-o",
            "custom-columns=EVENT:.type,NAME:.object.metadata.name",
        ],
    );
    let events: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        events.iter().all(|l| l.starts_with("ADDED")),
        "nothing changed, so nothing but the initial ADDED events: {out}"
    );
    assert_eq!(events.len(), 2, "{out}");
}

#[test]
fn describe_expose_and_an_hpa() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    c.wait_running("app=web", 2);
    let out = c.ok(&["describe", "deployment", "web"]);
    for want in [
        "Name:",
        "web",
        "Replicas:",
        "2 desired | 2 updated | 2 total | 2 available",
        "RollingUpdate",
        "http",
        "MODE:",
        "Events:",
    ] {
        assert!(out.contains(want), "{want} in:\n{out}");
    }
    let out = c.ok(&["describe", "pods", "-l", "app=web"]);
    assert!(out.contains("Status:") && out.contains("Running"), "{out}");

    // Generators: kubectl builds these objects itself and sends them as protobuf.
    let out = c.ok(&[
        "expose",
        "deployment",
        "web",
        "--name=web-alt",
        "--port=8080",
        "--target-port=http",
    ]);
    assert!(out.contains("service/web-alt exposed"), "{out}");
    let svc = c.json(&["get", "svc", "web-alt"]);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http", "{svc:#}");
    assert_eq!(svc["spec"]["selector"]["app"], "web");

    // An autoscaling/v2 HPA as a manifest (`kubectl autoscale` writes autoscaling/v1, which
    // podd does not serve yet).
    c.apply(
        "hpa.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}\n",
        &[],
    );
    let hpa = c.ok(&["get", "hpa", "web"]);
    assert!(
        hpa.contains("Deployment/web") && hpa.contains("50%"),
        "{hpa}"
    );
}

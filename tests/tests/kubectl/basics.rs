//! Discovery, version, the tables kubectl prints, explain, events and top.

use crate::harness::{Cluster, header, web_manifest};

#[test]
fn version_reports_the_server() {
    let c = Cluster::start();
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["version", "-o", "json"])).unwrap();
    let server = &v["serverVersion"];
    assert_eq!(server["major"], "1", "{v:#}");
    assert!(
        server["minor"].as_str().is_some_and(|m| !m.is_empty()),
        "{v:#}"
    );
    assert!(
        server["gitVersion"]
            .as_str()
            .is_some_and(|g| g.starts_with("v1.")),
        "{v:#}"
    );
}

#[test]
fn api_resources_lists_every_served_kind() {
    let c = Cluster::start();
    let out = c.ok(&["api-resources"]);
    assert_eq!(
        header(&out),
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"],
        "{out}"
    );
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
    };
    assert_eq!(row("pods"), ["pods", "po", "v1", "true", "Pod"]);
    assert_eq!(row("nodes"), ["nodes", "no", "v1", "false", "Node"]);
    assert_eq!(
        row("namespaces"),
        ["namespaces", "ns", "v1", "false", "Namespace"]
    );
    assert_eq!(
        row("configmaps"),
        ["configmaps", "cm", "v1", "true", "ConfigMap"]
    );
    assert_eq!(row("secrets"), ["secrets", "v1", "true", "Secret"]);
    assert_eq!(
        row("deployments"),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(
        row("replicasets"),
        ["replicasets", "rs", "apps/v1", "true", "ReplicaSet"]
    );
    assert_eq!(
        row("endpointslices"),
        [
            "endpointslices",
            "discovery.k8s.io/v1",
            "true",
            "EndpointSlice"
        ]
    );
    assert_eq!(
        row("leases"),
        ["leases", "coordination.k8s.io/v1", "true", "Lease"]
    );
    assert_eq!(
        row("horizontalpodautoscalers"),
        [
            "horizontalpodautoscalers",
            "hpa",
            "autoscaling/v2",
            "true",
            "HorizontalPodAutoscaler"
        ]
    );
    assert_eq!(
        row("cronjobs"),
        ["cronjobs", "cj", "batch/v1", "true", "CronJob"]
    );
    assert_eq!(
        row("daemonsets"),
        ["daemonsets", "ds", "apps/v1", "true", "DaemonSet"]
    );
    // `kubectl auth whoami`'s kind, as kube-apiserver lists it.
    assert_eq!(
        row("selfsubjectreviews"),
        [
            "selfsubjectreviews",
            "authentication.k8s.io/v1",
            "false",
            "SelfSubjectReview"
        ]
    );
    let metrics = c.ok(&["api-resources", "--api-group=metrics.k8s.io"]);
    assert!(
        metrics.contains("PodMetrics") && metrics.contains("NodeMetrics"),
        "{metrics}"
    );
}

#[test]
fn get_prints_kubectls_columns() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    c.wait_running("app=web", 2);

    let pods = c.ok(&["get", "pods"]);
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{pods}"
    );
    let rows: Vec<Vec<&str>> = pods
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{pods}");
    for r in &rows {
        assert!(r[0].starts_with("web-"), "{pods}");
        assert_eq!(r[1], "1/1", "{pods}");
        assert_eq!(r[2], "Running", "{pods}");
        assert_eq!(r[3], "0", "{pods}");
    }
    let wide = c.ok(&["get", "pods", "-o", "wide"]);
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{wide}"
    );
    assert!(wide.contains("node-"), "{wide}");

    let deploy = c.ok(&["get", "deploy"]);
    assert_eq!(
        header(&deploy),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{deploy}"
    );
    let row: Vec<&str> = deploy.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "2/2", "2", "2"], "{deploy}");

    let svc = c.ok(&["get", "svc", "web"]);
    assert_eq!(
        header(&svc),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{svc}"
    );
    let row: Vec<&str> = svc.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "web");
    assert_eq!(row[1], "ClusterIP");
    assert!(row[2].parse::<std::net::Ipv4Addr>().is_ok(), "{svc}");
    assert_eq!(row[3], "<none>");
    assert_eq!(row[4], "80/TCP");

    let nodes = c.ok(&["get", "nodes"]);
    assert_eq!(
        header(&nodes),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{nodes}"
    );
    let ready: Vec<&str> = nodes
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .collect();
    assert_eq!(ready.len(), 2, "{nodes}");

    let rs = c.ok(&["get", "rs", "-l", "app=web"]);
    assert_eq!(
        header(&rs),
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "{rs}"
    );
    let eps = c.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    assert_eq!(
        header(&eps),
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        "{eps}"
    );
    assert!(eps.contains("IPv4") && eps.contains("8080"), "{eps}");
}

#[test]
fn explain_reads_the_openapi_schema() {
    let c = Cluster::start();
    let out = c.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        out.contains("rollingUpdate") && out.contains("type"),
        "{out}"
    );
    let out = c.ok(&["explain", "pods.spec.containers.ports"]);
    assert!(out.contains("containerPort"), "{out}");
}

#[test]
fn events_show_what_the_controllers_did() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );
    c.wait_running("app=web", 1);
    let out = c.until("a ScalingReplicaSet event", || {
        let out = c.ok(&["events"]);
        out.contains("ScalingReplicaSet").then_some(out)
    });
    assert!(
        out.contains("Deployment/web") || out.contains("deployment/web"),
        "{out}"
    );
    let got = c.ok(&["get", "events"]);
    assert!(
        got.contains("Scheduled") && got.contains("SuccessfulCreate"),
        "scheduler and ReplicaSet controller events:\n{got}"
    );
}

#[test]
fn top_reads_metrics_k8s_io() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    c.wait_running("app=web", 2);
    let nodes = c.until("node metrics", || {
        let r = c.kubectl(&["top", "nodes"]);
        (r.code == 0).then_some(r.stdout)
    });
    assert_eq!(
        header(&nodes),
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
        "{nodes}"
    );
    assert!(
        nodes.contains("node-1") && nodes.contains("node-2"),
        "{nodes}"
    );
    let pods = c.until("pod metrics", || {
        let r = c.kubectl(&["top", "pods"]);
        (r.code == 0 && r.stdout.matches("web-").count() == 2).then_some(r.stdout)
    });
    assert_eq!(
        header(&pods),
        ["NAME", "CPU(cores)", "MEMORY(bytes)"],
        "{pods}"
    );
}

//! DaemonSets as kubectl drives them: `apply` puts one Running pod on each node (and on a
//! node that joins later), `get ds` prints kubectl's columns, `rollout status` waits for the
//! rollout, `set image` rolls the new image out to every node, and `delete` takes the pods
//! with it. Kubernetes' documented example (fluentd-elasticsearch) runs unchanged.

use crate::harness::{Cluster, header};
use serde_json::Value;
use std::collections::BTreeMap;

const MANIFEST: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  labels:
    app: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: agent
        image: busybox
        command: ["sleep", "3600"]
"#;

/// The live pods of the DaemonSet: node -> (image, phase), one entry per pod.
fn pods_by_node(c: &Cluster) -> BTreeMap<String, Vec<(String, String)>> {
    let v = c.json(&["get", "pods", "-l", "app=agent"]);
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for p in v["items"].as_array().into_iter().flatten() {
        if !p["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
        let image = p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default();
        let phase = p["status"]["phase"].as_str().unwrap_or_default();
        out.entry(node.to_string())
            .or_default()
            .push((image.to_string(), phase.to_string()));
    }
    out
}

/// Waits until every one of `nodes` runs exactly one Running pod of `image`, and no other
/// node runs one.
fn wait_one_per_node(c: &Cluster, nodes: &[&str], image: &str) {
    c.until(
        &format!("one Running {image} pod on each of {nodes:?}"),
        || {
            let m = pods_by_node(c);
            let want: Vec<&str> = nodes.to_vec();
            let have: Vec<&str> = m.keys().map(String::as_str).collect();
            let all = m
                .values()
                .all(|v| v.len() == 1 && v[0].0 == image && v[0].1 == "Running");
            (have == want && all).then_some(())
        },
    );
}

#[test]
fn daemon_set_covers_every_node_and_rolls_out() {
    let mut c = Cluster::start();
    let out = c.apply("ds.yaml", MANIFEST, &[]);
    assert_eq!(out.trim(), "daemonset.apps/agent created");
    wait_one_per_node(&c, &["node-1", "node-2"], "busybox");
    let out = c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );

    // kubectl's columns, by every name of the resource.
    let table = c.ok(&["get", "ds", "agent"]);
    assert_eq!(
        header(&table),
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..7],
        ["agent", "2", "2", "2", "2", "2", "<none>"],
        "{table}"
    );
    let wide = c.ok(&["get", "daemonsets.apps", "agent", "-o", "wide"]);
    assert_eq!(
        header(&wide)[8..],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
        "{wide}"
    );
    assert!(wide.contains("app=agent"), "{wide}");
    let ds: Value = c.json(&["get", "daemonset", "agent"]);
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    let pod = &c.json(&["get", "pods", "-l", "app=agent"])["items"][0];
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    assert_eq!(pod["metadata"]["labels"]["pod-template-generation"], "1");
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(
        terms[0]["matchFields"][0]["key"], "metadata.name",
        "{pod:#}"
    );
    assert_eq!(
        terms[0]["matchFields"][0]["values"][0], pod["spec"]["nodeName"],
        "pinned to the node it runs on"
    );

    // A node that joins later gets its pod.
    c.add_node("node-3");
    wait_one_per_node(&c, &["node-1", "node-2", "node-3"], "busybox");

    // A new image rolls out to every node.
    let out = c.ok(&["set", "image", "ds/agent", "agent=busybox:2"]);
    assert_eq!(out.trim(), "daemonset.apps/agent image updated");
    let out = c.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    wait_one_per_node(&c, &["node-1", "node-2", "node-3"], "busybox:2");
    let ds: Value = c.json(&["get", "ds", "agent"]);
    assert_eq!(ds["metadata"]["generation"], 2);
    assert_eq!(ds["status"]["observedGeneration"], 2);
    assert_eq!(ds["status"]["updatedNumberScheduled"], 3);
    assert_eq!(ds["status"]["numberAvailable"], 3);

    // Deleting the DaemonSet deletes its pods.
    let out = c.ok(&["delete", "ds", "agent", "--cascade=foreground"]);
    assert_eq!(out.trim(), "daemonset.apps \"agent\" deleted");
    c.until("the DaemonSet's pods gone", || {
        let v = c.json(&["get", "pods", "-l", "app=agent"]);
        v["items"].as_array()?.is_empty().then_some(())
    });
    let err = c.fails(&["get", "ds", "agent"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

/// Kubernetes' documented DaemonSet example (concepts/workloads/controllers/daemonset),
/// unchanged: a pod on every node, in kube-system.
const DOC_EXAMPLE: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: fluentd-elasticsearch
  namespace: kube-system
  labels:
    k8s-app: fluentd-logging
spec:
  selector:
    matchLabels:
      name: fluentd-elasticsearch
  template:
    metadata:
      labels:
        name: fluentd-elasticsearch
    spec:
      tolerations:
      # these tolerations are to have the daemonset runnable on control plane nodes
      # remove them if your control plane nodes should not run pods
      - key: node-role.kubernetes.io/control-plane
        operator: Exists
        effect: NoSchedule
      - key: node-role.kubernetes.io/master
        operator: Exists
        effect: NoSchedule
      containers:
      - name: fluentd-elasticsearch
        image: quay.io/fluentd_elasticsearch/fluentd:v2.5.2
        resources:
          limits:
            memory: 200Mi
          requests:
            cpu: 100m
            memory: 200Mi
        volumeMounts:
        - name: varlog
          mountPath: /var/log
      # it may be desirable to set a high priority class to ensure that a DaemonSet Pod
      # preempts running Pods
      # priorityClassName: important
      terminationGracePeriodSeconds: 30
      volumes:
      - name: varlog
        hostPath:
          path: /var/log
"#;

#[test]
fn kubernetes_documented_daemon_set_runs_unchanged() {
    let c = Cluster::start();
    if c.kubectl(&["get", "namespace", "kube-system"]).code != 0 {
        c.ok(&["create", "namespace", "kube-system"]);
    }
    let out = c.apply("fluentd.yaml", DOC_EXAMPLE, &[]);
    assert_eq!(
        out.trim(),
        "daemonset.apps/fluentd-elasticsearch created",
        "{out}"
    );
    let out = c.ok(&[
        "rollout",
        "status",
        "-n",
        "kube-system",
        "ds/fluentd-elasticsearch",
        "--timeout=60s",
    ]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let v = c.json(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "name=fluentd-elasticsearch",
    ]);
    let mut nodes: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or_default())
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["node-1", "node-2"], "{v:#}");
}

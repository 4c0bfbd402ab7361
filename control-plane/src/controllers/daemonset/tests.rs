use super::*;
use serde_json::json;

fn now() -> Timestamp {
    "2026-01-01T00:10:00Z".parse().unwrap()
}

fn ds(spec_extra: serde_json::Value) -> DaemonSet {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    });
    for (k, v) in spec_extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let mut d: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid", "generation": 1},
        "spec": spec,
    }))
    .unwrap();
    podd_api::defaults::apply(&mut d);
    d
}

fn node(name: &str, extra: serde_json::Value) -> Node {
    let mut n = json!({
        "metadata": {"name": name, "labels": {}},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    });
    if let Some(l) = extra.get("labels") {
        n["metadata"]["labels"] = l.clone();
    }
    if let Some(t) = extra.get("taints") {
        n["spec"]["taints"] = t.clone();
    }
    if let Some(u) = extra.get("unschedulable") {
        n["spec"]["unschedulable"] = u.clone();
    }
    if let Some(r) = extra.get("ready") {
        n["status"]["conditions"][0]["status"] = r.clone();
    }
    serde_json::from_value(n).unwrap()
}

fn nodes(names: &[&str]) -> Vec<Node> {
    names.iter().map(|n| node(n, json!({}))).collect()
}

/// A pod the controller made for `node` from `d`'s current template, Running and Ready
/// since `ready_since`.
fn running(d: &DaemonSet, name: &str, node: &str) -> Pod {
    let mut p = pod_for_node(d, node);
    p.metadata.name = Some(name.into());
    p.metadata.creation_timestamp = Some(podd_api::Time("2026-01-01T00:00:00Z".parse().unwrap()));
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p.status = Some(
        serde_json::from_value(json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
        .unwrap(),
    );
    p
}

fn not_ready(mut p: Pod) -> Pod {
    p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    p
}

/// The DaemonSet with a changed image, as an update leaves it (next template generation).
fn updated(d: &DaemonSet) -> DaemonSet {
    let mut d2 = d.clone();
    d2.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("busybox:2".into());
    d2.metadata.generation = Some(2);
    d2.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(DAEMON_SET_TEMPLATE_GENERATION.into(), "2".into());
    d2
}

#[test]
fn one_pod_per_node_pinned_by_node_affinity() {
    let d = ds(json!({}));
    let p = plan(&d, &nodes(&["n1", "n2"]), &[], now());
    assert_eq!(p.create, ["n1", "n2"]);
    assert!(p.delete.is_empty());
    assert_eq!(p.status.desired_number_scheduled, 2);
    assert_eq!(p.status.current_number_scheduled, 0);
    assert_eq!(p.status.observed_generation, Some(1));

    let pod = pod_for_node(&d, "n2");
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
    let labels = pod.labels();
    assert_eq!(labels["app"], "agent");
    assert_eq!(labels[TEMPLATE_GENERATION_LABEL], "1");
    assert_eq!(labels[REVISION_HASH_LABEL], revision_hash(&d));
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("DaemonSet", "ds-uid", Some(true))
    );
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    assert_eq!(
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]})
    );
    let tolerated: Vec<(String, String)> = pod
        .spec
        .as_ref()
        .unwrap()
        .tolerations
        .iter()
        .flatten()
        .map(|t| (t.key.clone().unwrap(), t.effect.clone().unwrap()))
        .collect();
    assert!(tolerated.contains(&("node.kubernetes.io/not-ready".into(), "NoExecute".into())));
    assert!(tolerated.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into())));
    assert!(tolerated.contains(&(
        "node.kubernetes.io/unschedulable".into(),
        "NoSchedule".into()
    )));
    assert_eq!(target_node(&pod).as_deref(), Some("n2"));
}

#[test]
fn node_added_then_removed() {
    let d = ds(json!({}));
    let pods = vec![running(&d, "a1", "n1"), running(&d, "a2", "n2")];
    let p = plan(&d, &nodes(&["n1", "n2"]), &pods, now());
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.status.desired_number_scheduled, 2);
    assert_eq!(p.status.current_number_scheduled, 2);
    assert_eq!(p.status.number_ready, 2);
    assert_eq!(p.status.number_available, Some(2));
    assert_eq!(p.status.updated_number_scheduled, Some(2));
    assert_eq!(p.status.number_unavailable, None);

    // A third node joins: one more pod.
    let p = plan(&d, &nodes(&["n1", "n2", "n3"]), &pods, now());
    assert_eq!(p.create, ["n3"]);
    assert_eq!(p.status.desired_number_scheduled, 3);
    assert_eq!(p.status.number_unavailable, Some(1));

    // n2 leaves: its pod goes.
    let p = plan(&d, &nodes(&["n1"]), &pods, now());
    assert!(p.create.is_empty());
    assert_eq!(p.delete, ["a2"]);
    assert_eq!(p.status.desired_number_scheduled, 1);
}

#[test]
fn node_selector_and_required_affinity() {
    let d = ds(
        json!({"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
        "nodeSelector": {"disk": "ssd"},
        "containers": [{"name": "c", "image": "busybox"}]}}}),
    );
    let ns = vec![
        node("fast", json!({"labels": {"disk": "ssd"}})),
        node("slow", json!({"labels": {"disk": "hdd"}})),
    ];
    let p = plan(&d, &ns, &[], now());
    assert_eq!(p.create, ["fast"]);
    assert_eq!(p.status.desired_number_scheduled, 1);

    // A pod on a node that stopped matching is misscheduled and deleted.
    let pods = vec![running(&d, "a-fast", "fast"), running(&d, "a-slow", "slow")];
    let p = plan(&d, &ns, &pods, now());
    assert_eq!(p.delete, ["a-slow"]);
    assert_eq!(p.status.number_misscheduled, 1);

    // Required node affinity on labels and on the node's name.
    let d = ds(
        json!({"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["fast"]}]}]}}},
        "containers": [{"name": "c", "image": "busybox"}]}}}),
    );
    let mut ns = ns;
    ns.push(node("other", json!({"labels": {"disk": "nvme"}})));
    let p = plan(&d, &ns, &[], now());
    assert_eq!(p.create, ["fast", "slow"]);
}

#[test]
fn taints_and_tolerations() {
    let d = ds(json!({}));
    let ns = vec![
        node("plain", json!({})),
        node(
            "gpu",
            json!({"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}),
        ),
        node(
            "soft",
            json!({"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}),
        ),
        // The daemon tolerations: cordoned and not-ready-NoExecute nodes still get a pod.
        node("cordoned", json!({"unschedulable": true})),
        node(
            "evicting",
            json!({"taints": [
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}),
        ),
    ];
    let p = plan(&d, &ns, &[], now());
    assert_eq!(p.create, ["cordoned", "evicting", "plain", "soft"]);

    // A matching toleration lets the pod onto the tainted node.
    let tolerant = ds(
        json!({"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "containers": [{"name": "c", "image": "busybox"}]}}}),
    );
    let p = plan(&tolerant, &ns, &[], now());
    assert!(p.create.contains(&"gpu".to_string()));

    // A NoSchedule taint keeps new pods away but lets a running one stay; a NoExecute taint
    // it does not tolerate removes it.
    let pods = vec![running(&d, "a-gpu", "gpu")];
    let p = plan(&d, &ns[1..2], &pods, now());
    assert!(p.delete.is_empty() && p.create.is_empty());
    assert_eq!(p.status.number_misscheduled, 1);
    let evict = vec![node(
        "gpu",
        json!({"taints": [{"key": "gpu", "effect": "NoExecute"}]}),
    )];
    let p = plan(&d, &evict, &pods, now());
    assert_eq!(p.delete, ["a-gpu"]);

    // A node that is not Ready gets no new pod (the scheduler's not-ready NoSchedule taint),
    // but its running pod stays.
    let down = vec![node("down", json!({"ready": "Unknown"}))];
    let p = plan(&d, &down, &[], now());
    assert!(p.create.is_empty());
    let pods = vec![running(&d, "a-down", "down")];
    let p = plan(&d, &down, &pods, now());
    assert!(p.delete.is_empty());
}

#[test]
fn failed_pods_are_replaced_and_extra_pods_removed() {
    let d = ds(json!({}));
    let mut failed = running(&d, "a1", "n1");
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let mut newer = running(&d, "a2-new", "n2");
    newer.metadata.creation_timestamp =
        Some(podd_api::Time("2026-01-01T00:05:00Z".parse().unwrap()));
    let pods = vec![failed, running(&d, "a2", "n2"), newer];
    let p = plan(&d, &nodes(&["n1", "n2"]), &pods, now());
    assert_eq!(p.delete, ["a1", "a2-new"]);
    assert!(
        p.create.is_empty(),
        "a node's pod is replaced once it is gone"
    );
    assert_eq!(p.events[0].1, "FailedDaemonPod");
}

#[test]
fn rolling_update_respects_max_unavailable() {
    let d = ds(json!({}));
    let names = ["n1", "n2", "n3", "n4"];
    let old: Vec<Pod> = names
        .iter()
        .map(|n| running(&d, &format!("old-{n}"), n))
        .collect();
    let d2 = updated(&d);
    assert_ne!(revision_hash(&d), revision_hash(&d2));

    // maxUnavailable 1 (the default): one old pod at a time.
    let p = plan(&d2, &nodes(&names), &old, now());
    assert_eq!(p.delete, ["old-n1"]);
    assert!(p.create.is_empty());
    assert_eq!(p.status.updated_number_scheduled, None);
    assert_eq!(p.status.observed_generation, Some(2));

    // While n1's old pod is terminating, nothing else goes.
    let mut pods = old.clone();
    pods[0].metadata.deletion_timestamp = Some(podd_api::Time(now()));
    let p = plan(&d2, &nodes(&names), &pods, now());
    assert!(p.delete.is_empty() && p.create.is_empty());

    // Once it is gone, n1 gets a new pod; while that is not ready, nothing else goes.
    pods.remove(0);
    let p = plan(&d2, &nodes(&names), &pods, now());
    assert_eq!(p.create, ["n1"]);
    assert!(p.delete.is_empty());
    pods.insert(0, not_ready(running(&d2, "new-n1", "n1")));
    let p = plan(&d2, &nodes(&names), &pods, now());
    assert!(p.delete.is_empty() && p.create.is_empty());
    assert_eq!(p.status.updated_number_scheduled, Some(1));

    // Ready: the next old pod goes.
    pods[0] = running(&d2, "new-n1", "n1");
    let p = plan(&d2, &nodes(&names), &pods, now());
    assert_eq!(p.delete, ["old-n2"]);

    // maxUnavailable 50% of 4 nodes: two at a time; an old pod that is not available is
    // replaced at once, beside the budget (as Kubernetes' rollingUpdate counts it).
    let d3 = updated(&ds(json!({"updateStrategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "50%"}}})));
    let mut old3: Vec<Pod> = names
        .iter()
        .map(|n| running(&d, &format!("old-{n}"), n))
        .collect();
    let p = plan(&d3, &nodes(&names), &old3, now());
    assert_eq!(p.delete, ["old-n1", "old-n2"]);
    old3[3] = not_ready(old3[3].clone());
    let p = plan(&d3, &nodes(&names), &old3, now());
    assert_eq!(p.delete, ["old-n1", "old-n2", "old-n4"]);
}

#[test]
fn rolling_update_with_surge_starts_the_new_pod_first() {
    let base = ds(json!({"updateStrategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}));
    let names = ["n1", "n2"];
    let mut pods: Vec<Pod> = names
        .iter()
        .map(|n| running(&base, &format!("old-{n}"), n))
        .collect();
    let d = updated(&base);
    let p = plan(&d, &nodes(&names), &pods, now());
    assert_eq!(p.create, ["n1"]);
    assert!(p.delete.is_empty());
    // The new pod on n1 is not ready yet: the old one stays and n2 waits.
    pods.push(not_ready(running(&d, "new-n1", "n1")));
    let p = plan(&d, &nodes(&names), &pods, now());
    assert!(p.create.is_empty() && p.delete.is_empty());
    // Available: the old one goes and n2 surges.
    pods[2] = running(&d, "new-n1", "n1");
    let p = plan(&d, &nodes(&names), &pods, now());
    assert_eq!(p.delete, ["old-n1"]);
    assert_eq!(p.create, ["n2"]);
}

#[test]
fn on_delete_replaces_only_deleted_pods() {
    let base = ds(json!({"updateStrategy": {"type": "OnDelete"}}));
    let names = ["n1", "n2"];
    let pods: Vec<Pod> = names
        .iter()
        .map(|n| running(&base, &format!("old-{n}"), n))
        .collect();
    let d = updated(&base);
    let p = plan(&d, &nodes(&names), &pods, now());
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.status.updated_number_scheduled, None);
    assert_eq!(p.status.number_available, Some(2));
    // The user deletes n2's pod: its replacement has the new template.
    let p = plan(&d, &nodes(&names), &pods[..1], now());
    assert_eq!(p.create, ["n2"]);
    let fresh = pod_for_node(&d, "n2");
    assert_eq!(fresh.labels()[TEMPLATE_GENERATION_LABEL], "2");
    let image = &fresh.spec.as_ref().unwrap().containers[0].image;
    assert_eq!(image.as_deref(), Some("busybox:2"));
}

#[test]
fn min_ready_seconds_delays_availability() {
    let d = ds(json!({"minReadySeconds": 30}));
    let mut p1 = running(&d, "a1", "n1");
    p1.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
        Some(podd_api::Time("2026-01-01T00:09:50Z".parse().unwrap()));
    let p = plan(&d, &nodes(&["n1"]), &[p1], now());
    assert_eq!(p.status.number_ready, 1);
    assert_eq!(p.status.number_available, None);
    assert_eq!(p.status.number_unavailable, Some(1));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
}

#[test]
fn defaults_and_validation() {
    let d = ds(json!({}));
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        v["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(v["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        v["metadata"]["annotations"][DAEMON_SET_TEMPLATE_GENERATION],
        "1"
    );
    let on_delete = ds(json!({"updateStrategy": {"type": "OnDelete"}}));
    let v = serde_json::to_value(&on_delete).unwrap();
    assert_eq!(v["spec"]["updateStrategy"], json!({"type": "OnDelete"}));

    let errors = |d: &DaemonSet| {
        podd_api::validation::validate(d)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(errors(&d), "");
    let bad = ds(json!({
        "selector": {"matchLabels": {"app": "other"}},
        "updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}},
        "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}},
    }));
    let e = errors(&bad);
    assert!(
        e.contains("spec.template.metadata.labels: Invalid value"),
        "{e}"
    );
    assert!(
        e.contains("`selector` does not match template `labels`"),
        "{e}"
    );
    assert!(
        e.contains("spec.template.spec.restartPolicy: Unsupported value: \"Never\""),
        "{e}"
    );
    assert!(
        e.contains(
            "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"
        ),
        "{e}"
    );
    let zero = ds(json!({"updateStrategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}}));
    assert!(
        errors(&zero)
            .contains("spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"),
        "{}",
        errors(&zero)
    );
    let kind = ds(json!({"updateStrategy": {"type": "Recreate"}}));
    assert!(
        errors(&kind).contains("spec.updateStrategy: Unsupported value: \"Recreate\""),
        "{}",
        errors(&kind)
    );
    let no_selector = ds(json!({"selector": {}}));
    assert!(
        errors(&no_selector).contains("spec.selector: Invalid value"),
        "{}",
        errors(&no_selector)
    );
}

#[test]
fn daemon_pods_stay_on_an_unreachable_node() {
    use crate::controllers::nodelifecycle::tolerates_unreachable;
    let d = ds(json!({}));
    assert!(tolerates_unreachable(&pod_for_node(&d, "n1")));
    let plain: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    assert!(!tolerates_unreachable(&plain));
    // A toleration with tolerationSeconds only delays eviction.
    let timed: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300}]}}))
    .unwrap();
    assert!(!tolerates_unreachable(&timed));
}

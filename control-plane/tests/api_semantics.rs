//! API semantics over HTTP: autoscaling/v1 HorizontalPodAutoscalers served beside the stored
//! autoscaling/v2 (conversion both ways, lists, watches, discovery), managedFields for
//! non-apply writes (and server-side apply conflicting with them), and the `Warning:`
//! headers for fields podd stores but does not act on.

mod common;

use common::{Answer, request, start};
use hyper::Method;
use serde_json::{Value, json};

const V1: &str = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
const V2: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";
const JSON: (&str, &str) = ("content-type", "application/json");

fn warnings(a: &Answer) -> Vec<String> {
    a.headers
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn managers(obj: &Value) -> Vec<(String, String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                        e["subresource"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn entry<'a>(obj: &'a Value, manager: &str, subresource: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager && e["subresource"].as_str().unwrap_or("") == subresource)
        .unwrap_or_else(|| panic!("no entry of {manager} {subresource:?} in {obj:#}"))
}

#[tokio::test]
async fn hpa_v1_round_trips_through_v2_storage() {
    let t = start(None).await;
    let v1 = json!({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
    });
    let r = request(&t, Method::POST, V1, &[JSON], Some(v1)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["apiVersion"], "autoscaling/v1");
    assert_eq!(r.body["spec"]["targetCPUUtilizationPercentage"], 50);
    assert!(r.body["spec"].get("metrics").is_none());

    // Stored (and read through v2) as a Resource cpu Utilization metric.
    let r = request(&t, Method::GET, &format!("{V2}/web"), &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["apiVersion"], "autoscaling/v2");
    assert_eq!(
        r.body["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}])
    );

    // A v2 writer adds a memory metric and status; v1 shows the CPU parts as fields and keeps
    // the rest in Kubernetes' annotations.
    let mut v2 = r.body.clone();
    v2["spec"]["metrics"].as_array_mut().unwrap().push(json!({"type": "Resource",
        "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}));
    let r = request(&t, Method::PUT, &format!("{V2}/web"), &[JSON], Some(v2)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut st = r.body.clone();
    st["status"] = json!({"currentReplicas": 2, "desiredReplicas": 2, "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}]});
    let r = request(
        &t,
        Method::PUT,
        &format!("{V2}/web/status"),
        &[JSON],
        Some(st),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let r = request(&t, Method::GET, &format!("{V1}/web"), &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.body.clone();
    assert_eq!(got["spec"]["targetCPUUtilizationPercentage"], 50);
    assert_eq!(got["status"]["currentCPUUtilizationPercentage"], 40);
    assert_eq!(got["status"]["currentReplicas"], 2);
    let a = &got["metadata"]["annotations"];
    let metrics: Value = serde_json::from_str(
        a["autoscaling.alpha.kubernetes.io/metrics"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        metrics,
        json!([{"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}}])
    );
    assert!(
        a.get("autoscaling.alpha.kubernetes.io/current-metrics")
            .is_some()
    );

    // A read-modify-write through v1 (kubectl edit of an old client) keeps the v2 metric.
    let mut edit = got.clone();
    edit["spec"]["maxReplicas"] = json!(7);
    let r = request(&t, Method::PUT, &format!("{V1}/web"), &[JSON], Some(edit)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["apiVersion"], "autoscaling/v1");
    let r = request(&t, Method::GET, &format!("{V2}/web"), &[], None).await;
    assert_eq!(r.body["spec"]["maxReplicas"], 7);
    assert_eq!(
        r.body["spec"]["metrics"].as_array().unwrap().len(),
        2,
        "{}",
        r.body
    );
    // The converter's annotations are never stored.
    assert!(
        r.body["metadata"]["annotations"]
            .get("autoscaling.alpha.kubernetes.io/metrics")
            .is_none(),
        "{}",
        r.body
    );

    // A merge patch through v1 applies to the v1 object.
    let r = request(
        &t,
        Method::PATCH,
        &format!("{V1}/web"),
        &[("content-type", "application/merge-patch+json")],
        Some(json!({"spec": {"targetCPUUtilizationPercentage": 65}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["spec"]["targetCPUUtilizationPercentage"], 65);
    let r = request(&t, Method::GET, &format!("{V2}/web"), &[], None).await;
    let metrics = r.body["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 2, "{}", r.body);
    assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 65);

    // Lists and watches speak the version asked.
    let r = request(&t, Method::GET, V1, &[], None).await;
    assert_eq!(r.body["kind"], "HorizontalPodAutoscalerList");
    assert_eq!(r.body["apiVersion"], "autoscaling/v1");
    assert_eq!(r.body["items"][0]["apiVersion"], "autoscaling/v1");
    assert_eq!(
        r.body["items"][0]["spec"]["targetCPUUtilizationPercentage"],
        65
    );
    let r = request(
        &t,
        Method::GET,
        &format!("{V1}?watch=true&resourceVersion=0&timeoutSeconds=1"),
        &[],
        None,
    )
    .await;
    let text = match &r.body {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["apiVersion"], "autoscaling/v1");
    assert_eq!(
        first["object"]["spec"]["targetCPUUtilizationPercentage"],
        65
    );

    // Discovery lists both versions, v2 preferred.
    let r = request(&t, Method::GET, "/apis/autoscaling", &[], None).await;
    assert_eq!(r.body["preferredVersion"]["version"], "v2");
    assert_eq!(r.body["versions"].as_array().unwrap().len(), 2);
    let r = request(&t, Method::GET, "/apis/autoscaling/v1", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["resources"][0]["name"], "horizontalpodautoscalers");

    // Delete through v1.
    let r = request(&t, Method::DELETE, &format!("{V1}/web"), &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `fieldsV1` without the `"."` members (a map owned as a whole besides its fields), so
/// that the paths are compared.
fn without_self_members(v: &Value) -> Value {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| k.as_str() != ".")
            .map(|(k, v)| (k.clone(), without_self_members(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => other.clone(),
    }
}

/// A write through autoscaling/v1 (`kubectl autoscale` posts v1) is recorded as Kubernetes
/// records it: under `autoscaling/v1`, in v1's fields, and read back as stored through either
/// version; a later v2 write takes from it what it changed as v1 sees it.
#[tokio::test]
async fn hpa_v1_writes_record_v1_managed_fields() {
    let t = start(None).await;
    let v1 = json!({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
    });
    let r = request(
        &t,
        Method::POST,
        &format!("{V1}?fieldManager=kubectl-autoscale"),
        &[JSON],
        Some(v1),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let e = entry(&r.body, "kubectl-autoscale", "");
    assert_eq!(e["apiVersion"], "autoscaling/v1", "{e:#}");
    assert_eq!(e["operation"], "Update");
    assert_eq!(
        without_self_members(&e["fieldsV1"]),
        json!({"f:spec": {
            "f:maxReplicas": {}, "f:minReplicas": {},
            "f:scaleTargetRef": {"f:apiVersion": {}, "f:kind": {}, "f:name": {}},
            "f:targetCPUUtilizationPercentage": {}}})
    );
    // Read through either version, the entries are the stored ones.
    let via_v1 = request(&t, Method::GET, &format!("{V1}/web"), &[], None).await;
    let via_v2 = request(&t, Method::GET, &format!("{V2}/web"), &[], None).await;
    assert_eq!(
        via_v1.body["metadata"]["managedFields"],
        via_v2.body["metadata"]["managedFields"]
    );
    assert_eq!(
        via_v2.body["metadata"]["managedFields"][0]["apiVersion"],
        "autoscaling/v1"
    );

    // A merge patch through v1 by the same manager updates its v1 entry.
    let r = request(
        &t,
        Method::PATCH,
        &format!("{V1}/web?fieldManager=kubectl-autoscale"),
        &[("content-type", "application/merge-patch+json")],
        Some(json!({"spec": {"maxReplicas": 5}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(managers(&r.body).len(), 1, "{:#}", r.body);

    // A v2 writer changes the CPU target: the v1 entry loses targetCPUUtilizationPercentage
    // (that metric, in v1) and keeps the rest; the v2 writer's entry is in v2's fields.
    let mut v2 = request(&t, Method::GET, &format!("{V2}/web"), &[], None)
        .await
        .body;
    v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] = json!(70);
    let r = request(
        &t,
        Method::PUT,
        &format!("{V2}/web?fieldManager=tuner"),
        &[JSON],
        Some(v2),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tuner = entry(&r.body, "tuner", "");
    assert_eq!(tuner["apiVersion"], "autoscaling/v2");
    assert!(
        tuner["fieldsV1"]["f:spec"].get("f:metrics").is_some(),
        "{tuner:#}"
    );
    let v1_entry = entry(&r.body, "kubectl-autoscale", "");
    assert_eq!(v1_entry["apiVersion"], "autoscaling/v1");
    assert!(
        v1_entry["fieldsV1"]["f:spec"]
            .get("f:targetCPUUtilizationPercentage")
            .is_none(),
        "{v1_entry:#}"
    );
    assert!(
        v1_entry["fieldsV1"]["f:spec"]
            .get("f:maxReplicas")
            .is_some(),
        "{v1_entry:#}"
    );
}

#[tokio::test]
async fn hpa_v1_without_a_target_gets_the_default_and_bad_annotations_are_refused() {
    let t = start(None).await;
    let r = request(
        &t,
        Method::POST,
        V1,
        &[JSON],
        Some(
            json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "d"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 2}}),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["spec"]["targetCPUUtilizationPercentage"], 80);
    let r = request(
        &t,
        Method::POST,
        V1,
        &[JSON],
        Some(json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "bad", "annotations": {"autoscaling.alpha.kubernetes.io/metrics": "["}},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 2}})),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("autoscaling.alpha.kubernetes.io/metrics"),
        "{}",
        r.body
    );
}

const CM: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}})
}

#[tokio::test]
async fn non_apply_writes_record_update_managers() {
    let t = start(None).await;
    // Create: the manager from the User-Agent, as kube-apiserver derives it.
    let r = request(
        &t,
        Method::POST,
        CM,
        &[
            JSON,
            (
                "user-agent",
                "kubectl-create/v1.32.4 (linux/amd64) kubernetes/abc",
            ),
        ],
        Some(deployment()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        managers(&r.body),
        [("kubectl-create".into(), "Update".into(), String::new())]
    );
    let e = entry(&r.body, "kubectl-create", "");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e["time"].is_string());
    assert!(e["fieldsV1"]["f:spec"]["f:replicas"].is_object(), "{e:#}");

    // A strategic patch by kubectl edit (?fieldManager wins over the User-Agent).
    let r = request(
        &t,
        Method::PATCH,
        &format!("{CM}/web?fieldManager=kubectl-edit"),
        &[
            ("content-type", "application/strategic-merge-patch+json"),
            ("user-agent", "kubectl/v1.32.4"),
        ],
        Some(json!({"spec": {"replicas": 3}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let edit = entry(&r.body, "kubectl-edit", "");
    assert_eq!(edit["operation"], "Update");
    assert_eq!(edit["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    // The field moved away from the creator.
    let create = entry(&r.body, "kubectl-create", "");
    assert!(
        create["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "{create:#}"
    );

    // A JSON patch and a merge patch, by their User-Agents.
    let r = request(
        &t,
        Method::PATCH,
        &format!("{CM}/web"),
        &[
            ("content-type", "application/json-patch+json"),
            ("user-agent", "json-patcher/1.0"),
        ],
        Some(json!([{"op": "add", "path": "/metadata/labels/tier", "value": "front"}])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        entry(&r.body, "json-patcher", "")["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
    );
    let r = request(
        &t,
        Method::PATCH,
        &format!("{CM}/web"),
        &[
            ("content-type", "application/merge-patch+json"),
            ("user-agent", "merger"),
        ],
        Some(json!({"metadata": {"annotations": {"note": "x"}}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(entry(&r.body, "merger", "")["fieldsV1"]["f:metadata"]["f:annotations"].is_object());

    // An update (PUT) by another manager.
    let mut d = r.body.clone();
    d["spec"]["minReadySeconds"] = json!(5);
    let r = request(
        &t,
        Method::PUT,
        &format!("{CM}/web?fieldManager=updater"),
        &[JSON],
        Some(d),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        entry(&r.body, "updater", "")["fieldsV1"],
        json!({"f:spec": {"f:minReadySeconds": {}}})
    );

    // Subresource writes carry their subresource.
    let r = request(
        &t,
        Method::PATCH,
        &format!("{CM}/web/scale"),
        &[
            ("content-type", "application/merge-patch+json"),
            ("user-agent", "scaler"),
        ],
        Some(json!({"spec": {"replicas": 4}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(&t, Method::GET, &format!("{CM}/web"), &[], None).await;
    let scale = entry(&r.body, "scaler", "scale");
    assert_eq!(scale["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let mut st = r.body.clone();
    st["status"] = json!({"replicas": 4, "observedGeneration": 1});
    let r = request(
        &t,
        Method::PUT,
        &format!("{CM}/web/status"),
        &[JSON, ("user-agent", "statuser")],
        Some(st),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let status = entry(&r.body, "statuser", "status");
    assert!(
        status["fieldsV1"]["f:status"]["f:replicas"].is_object(),
        "{status:#}"
    );
    // kubectl's client-side to server-side apply migration: a JSON patch that tests the
    // resourceVersion and replaces managedFields.
    let rv = r.body["metadata"]["resourceVersion"].clone();
    let mut migrated = r.body["metadata"]["managedFields"].clone();
    migrated
        .as_array_mut()
        .unwrap()
        .retain(|e| e["manager"] != "statuser");
    let r = request(
        &t,
        Method::PATCH,
        &format!("{CM}/web"),
        &[("content-type", "application/json-patch+json")],
        Some(
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "replace", "path": "/metadata/managedFields", "value": migrated}]),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        managers(&r.body).iter().all(|(m, _, _)| m != "statuser"),
        "{:#}",
        r.body["metadata"]["managedFields"]
    );
    let r = request(
        &t,
        Method::PATCH,
        &format!("{CM}/web"),
        &[("content-type", "application/json-patch+json")],
        Some(json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}])),
    )
    .await;
    assert_eq!(
        r.status, 422,
        "a stale resourceVersion fails the test: {}",
        r.body
    );
    // Writes that change nothing record nothing new.
    let r = request(&t, Method::GET, &format!("{CM}/web"), &[], None).await;
    let before = r.body["metadata"]["managedFields"].clone();
    let r = request(
        &t,
        Method::PATCH,
        &format!("{CM}/web"),
        &[
            ("content-type", "application/merge-patch+json"),
            ("user-agent", "noop"),
        ],
        Some(json!({"spec": {"minReadySeconds": 5}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["metadata"]["managedFields"], before);
}

#[tokio::test]
async fn apply_conflicts_with_a_field_kubectl_edit_set() {
    let t = start(None).await;
    let r = request(
        &t,
        Method::POST,
        CM,
        &[JSON, ("user-agent", "kubectl-create/v1.32.4")],
        Some(deployment()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = request(
        &t,
        Method::PATCH,
        &format!("{CM}/web?fieldManager=kubectl-edit"),
        &[("content-type", "application/strategic-merge-patch+json")],
        Some(json!({"spec": {"replicas": 2}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut applied = deployment();
    applied["spec"]["replicas"] = json!(5);
    let apply = |force: bool| {
        let applied = applied.clone();
        let t = &t;
        async move {
            request(
                t,
                Method::PATCH,
                &format!(
                    "{CM}/web?fieldManager=deployer{}",
                    if force { "&force=true" } else { "" }
                ),
                &[("content-type", "application/apply-patch+yaml")],
                Some(applied),
            )
            .await
        }
    };
    let r = apply(false).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["reason"], "Conflict");
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.contains(r#"conflict with "kubectl-edit" using apps/v1: .spec.replicas"#),
        "{msg}"
    );
    let cause = &r.body["details"]["causes"][0];
    assert_eq!(cause["reason"], "FieldManagerConflict");
    assert_eq!(cause["field"], ".spec.replicas");

    // Forced, ownership moves to the applier.
    let r = apply(true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["spec"]["replicas"], 5);
    let deployer = entry(&r.body, "deployer", "");
    assert_eq!(deployer["operation"], "Apply");
    assert!(
        managers(&r.body)
            .iter()
            .all(|(m, _, _)| m != "kubectl-edit"),
        "kubectl-edit owned only replicas: {:#}",
        r.body["metadata"]["managedFields"]
    );
}

#[tokio::test]
async fn unacted_fields_answer_with_warnings() {
    let t = start(None).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "h"},
        "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "busybox:1",
            "lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}]}});
    let r = request(
        &t,
        Method::POST,
        "/api/v1/namespaces/default/pods",
        &[JSON],
        Some(pod),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let w = warnings(&r);
    assert!(
        w.contains(
            &r#"299 - "spec.hostNetwork: stored, but not acted on by podd yet""#.to_string()
        ),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("spec.containers[0].lifecycle: stored")),
        "{w:?}"
    );
    // Stored and returned as sent.
    assert_eq!(r.body["spec"]["hostNetwork"], true);
    assert!(r.body["spec"]["containers"][0]["lifecycle"]["preStop"].is_object());

    // A pod without such fields gets none.
    let r = request(
        &t,
        Method::POST,
        "/api/v1/namespaces/default/pods",
        &[JSON],
        Some(json!({"metadata": {"name": "plain"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));

    // Services of a type podd does not implement, and pod templates of workloads.
    let r = request(
        &t,
        Method::POST,
        "/api/v1/namespaces/default/services",
        &[JSON],
        Some(json!({"metadata": {"name": "np"},
            "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w
                .contains(r#"spec.type: \"NodePort\" is stored, but not acted on by podd yet"#)),
        "{:?}",
        warnings(&r)
    );
    let mut d = deployment();
    d["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}]);
    let r = request(&t, Method::POST, CM, &[JSON], Some(d)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w.contains("spec.template.spec.topologySpreadConstraints: stored")),
        "{:?}",
        warnings(&r)
    );
    // Updates that keep such a field warn again, as each write is answered for itself.
    let r = request(
        &t,
        Method::PATCH,
        "/api/v1/namespaces/default/pods/h",
        &[("content-type", "application/merge-patch+json")],
        Some(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        warnings(&r).iter().any(|w| w.contains("spec.hostNetwork")),
        "{:?}",
        warnings(&r)
    );
}

//! Server-side apply and managedFields, driven as kubectl drives them.

use super::{ApplyError, record_update, server_side_apply};
use crate::Kind;
use proptest::prelude::*;
use serde_json::{Value, json};

const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-01-01T00:01:00Z";
const T3: &str = "2026-01-01T00:02:00Z";

/// What `kubectl apply --server-side` sends for a small Deployment.
fn applied(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": image,
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "MODE", "value": "prod"}]
                }]}
            }
        }
    })
}

fn managed(obj: &Value) -> &Vec<Value> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .expect("managedFields")
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    managed(obj)
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

/// The stored object: what the server keeps after defaulting (a default the applier never
/// set, and server-set metadata).
fn stored(mut obj: Value) -> Value {
    obj["metadata"]["uid"] = json!("u-1");
    obj["metadata"]["creationTimestamp"] = json!(T1);
    obj["spec"]["revisionHistoryLimit"] = json!(10);
    obj
}

#[test]
fn first_apply_creates_the_object_and_its_ownership() {
    let got = server_side_apply(
        Kind::Deployment,
        None,
        &applied(2, "nginx:1"),
        "kubectl",
        false,
        T1,
    )
    .unwrap();
    assert_eq!(got["spec"]["replicas"], 2);
    assert_eq!(
        managed(&got),
        &vec![json!({
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {},
                            "f:env": {"k:{\"name\":\"MODE\"}": {".": {}, "f:name": {}, "f:value": {}}},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            }
        })]
    );
}

#[test]
fn reapplying_the_same_configuration_changes_nothing() {
    let first = stored(
        server_side_apply(
            Kind::Deployment,
            None,
            &applied(2, "nginx:1"),
            "kubectl",
            false,
            T1,
        )
        .unwrap(),
    );
    let again = server_side_apply(
        Kind::Deployment,
        Some(&first),
        &applied(2, "nginx:1"),
        "kubectl",
        false,
        T2,
    )
    .unwrap();
    assert_eq!(again, first, "no field lost, time unchanged");
}

#[test]
fn a_field_the_applier_no_longer_applies_is_removed() {
    let live = stored(
        server_side_apply(
            Kind::Deployment,
            None,
            &applied(2, "nginx:1"),
            "kubectl",
            false,
            T1,
        )
        .unwrap(),
    );
    let mut config = applied(2, "nginx:2");
    config["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("env");
    config["metadata"].as_object_mut().unwrap().remove("labels");
    let got =
        server_side_apply(Kind::Deployment, Some(&live), &config, "kubectl", false, T2).unwrap();
    let c = &got["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:2");
    assert!(c.get("env").is_none(), "{c}");
    assert!(got["metadata"].get("labels").is_none());
    // Fields nobody applied (defaults, server metadata) stay.
    assert_eq!(got["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(got["metadata"]["uid"], "u-1");
    assert_eq!(entry(&got, "kubectl", "Apply").unwrap()["time"], T2);
}

#[test]
fn a_field_another_manager_owns_survives_its_removal_from_the_config() {
    let live = stored(
        server_side_apply(
            Kind::Deployment,
            None,
            &applied(2, "nginx:1"),
            "kubectl",
            false,
            T1,
        )
        .unwrap(),
    );
    // Another applier claims the same label with the same value: shared, no conflict.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}}});
    let live = server_side_apply(Kind::Deployment, Some(&live), &other, "helm", false, T2).unwrap();
    let mut config = applied(2, "nginx:1");
    config["metadata"].as_object_mut().unwrap().remove("labels");
    let got =
        server_side_apply(Kind::Deployment, Some(&live), &config, "kubectl", false, T3).unwrap();
    assert_eq!(got["metadata"]["labels"], json!({"app": "web"}));
}

#[test]
fn changing_a_field_another_manager_owns_conflicts_unless_forced() {
    // Created by kubectl's client-side apply (an Update), then applied server-side.
    let created = stored(applied(3, "nginx:1"));
    let live = record_update(
        Kind::Deployment,
        &Value::Null,
        &created,
        "kubectl-client-side-apply",
        T1,
    );
    let err = server_side_apply(
        Kind::Deployment,
        Some(&live),
        &applied(5, "nginx:1"),
        "kubectl",
        false,
        T2,
    )
    .unwrap_err();
    let ApplyError::Conflicts(conflicts) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].field, ".spec.replicas");
    assert_eq!(
        conflicts[0].cause_message(),
        "conflict with \"kubectl-client-side-apply\" using apps/v1"
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    let cause = serde_json::to_value(conflicts[0].cause()).unwrap();
    assert_eq!(
        cause,
        json!({"reason": "FieldManagerConflict",
               "message": "conflict with \"kubectl-client-side-apply\" using apps/v1",
               "field": ".spec.replicas"})
    );

    // The same values do not conflict: both own them.
    let same = server_side_apply(
        Kind::Deployment,
        Some(&live),
        &applied(3, "nginx:1"),
        "kubectl",
        false,
        T2,
    )
    .unwrap();
    assert!(
        entry(&same, "kubectl-client-side-apply", "Update").unwrap()["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_some()
    );

    // Forced, the field moves to the applier.
    let forced = server_side_apply(
        Kind::Deployment,
        Some(&live),
        &applied(5, "nginx:1"),
        "kubectl",
        true,
        T2,
    )
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 5);
    let csa = entry(&forced, "kubectl-client-side-apply", "Update").unwrap();
    assert!(
        csa["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "{csa}"
    );
    assert!(
        csa["fieldsV1"]["f:spec"]
            .get("f:revisionHistoryLimit")
            .is_some()
    );
    let mine = entry(&forced, "kubectl", "Apply").unwrap();
    assert!(mine["fieldsV1"]["f:spec"].get("f:replicas").is_some());
}

#[test]
fn updates_take_the_fields_they_change() {
    let created = record_update(
        Kind::Deployment,
        &Value::Null,
        &stored(applied(2, "nginx:1")),
        "kubectl-create",
        T1,
    );
    let e = entry(&created, "kubectl-create", "Update").unwrap();
    assert_eq!(e["time"], T1);
    assert_eq!(e["apiVersion"], "apps/v1");
    // Maps created by the write are owned with `.`; identity fields are nobody's.
    assert_eq!(
        e["fieldsV1"]["f:metadata"],
        json!({"f:labels": {".": {}, "f:app": {}}})
    );

    // `kubectl set image` (a strategic merge patch) by another manager.
    let mut new = created.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    let got = record_update(Kind::Deployment, &created, &new, "kubectl-set", T2);
    let set = entry(&got, "kubectl-set", "Update").unwrap();
    assert_eq!(
        set["fieldsV1"],
        json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {"f:image": {}}}}}}})
    );
    let create = entry(&got, "kubectl-create", "Update").unwrap();
    let web = &create["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert!(
        web.get("f:image").is_none() && web.get("f:name").is_some(),
        "{web}"
    );
    assert_eq!(create["time"], T1);

    // A write that changes nothing records nothing.
    let same = record_update(Kind::Deployment, &got, &got, "someone", T3);
    assert_eq!(same, got);
}

#[test]
fn bad_configurations_are_refused() {
    let mut c = applied(1, "x");
    c["apiVersion"] = json!("apps/v1beta1");
    assert!(matches!(
        server_side_apply(Kind::Deployment, None, &c, "kubectl", false, T1),
        Err(ApplyError::Invalid(m)) if m.contains("Incorrect version")
    ));
    let mut c = applied(1, "x");
    c["metadata"]["managedFields"] = json!([]);
    assert!(matches!(
        server_side_apply(Kind::Deployment, None, &c, "kubectl", false, T1),
        Err(ApplyError::Invalid(_))
    ));
    let mut c = applied(1, "x");
    c["spec"]["template"]["spec"]["containers"] = json!([{"name": "a"}, {"name": "a"}]);
    assert!(matches!(
        server_side_apply(Kind::Deployment, None, &c, "kubectl", false, T1),
        Err(ApplyError::Invalid(m)) if m.contains("duplicate")
    ));
}

#[test]
fn kubectl_server_side_keeps_the_client_side_annotation_in_step() {
    let mut live = stored(applied(2, "nginx:1"));
    live["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": "{}"});
    let live = record_update(
        Kind::Deployment,
        &Value::Null,
        &live,
        "kubectl-client-side-apply",
        T1,
    );
    let got = server_side_apply(
        Kind::Deployment,
        Some(&live),
        &applied(2, "nginx:2"),
        "kubectl",
        true,
        T2,
    )
    .unwrap();
    let text = got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .unwrap();
    let last: Value = serde_json::from_str(text).unwrap();
    assert_eq!(last, applied(2, "nginx:2"));
}

fn label_config(labels: &std::collections::BTreeMap<String, String>) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels}})
}

proptest! {
    /// After any sequence of applies by one manager, the object's labels are exactly the
    /// last configuration's, and its managedFields own exactly those labels.
    #[test]
    fn one_applier_converges(configs in prop::collection::vec(
        prop::collection::btree_map("[a-e]", "[x-z]", 0..4), 1..5)) {
        let mut live: Option<Value> = None;
        for (i, labels) in configs.iter().enumerate() {
            let now = format!("2026-01-01T00:00:0{i}Z");
            let got = server_side_apply(Kind::Pod, live.as_ref(), &label_config(labels), "m", false, &now).unwrap();
            live = Some(got);
        }
        let live = live.unwrap();
        let last = configs.last().unwrap();
        let labels = live["metadata"].get("labels").cloned().unwrap_or(json!({}));
        prop_assert_eq!(labels, json!(last));
        let owned: Vec<String> = live["metadata"].get("managedFields")
            .and_then(|m| m[0]["fieldsV1"]["f:metadata"]["f:labels"].as_object().cloned())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let want: Vec<String> = last.keys().map(|k| format!("f:{k}")).collect();
        prop_assert_eq!(owned, want);
    }
}

#[test]
fn two_appliers_conflict_on_a_field_they_set_differently() {
    let live = stored(
        server_side_apply(
            Kind::Deployment,
            None,
            &applied(2, "nginx:1"),
            "kubectl",
            false,
            T1,
        )
        .unwrap(),
    );
    let scaler = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 4}});
    let err =
        server_side_apply(Kind::Deployment, Some(&live), &scaler, "scaler", false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
    );
    let got =
        server_side_apply(Kind::Deployment, Some(&live), &scaler, "scaler", true, T2).unwrap();
    assert_eq!(got["spec"]["replicas"], 4);
    assert!(
        entry(&got, "kubectl", "Apply").unwrap()["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    assert_eq!(
        entry(&got, "scaler", "Apply").unwrap()["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
    // kubectl re-applying its replicas now conflicts with the scaler.
    let err = server_side_apply(
        Kind::Deployment,
        Some(&got),
        &applied(2, "nginx:1"),
        "kubectl",
        false,
        T3,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ApplyError::Conflicts(c) if c[0].manager == "scaler"),
        "{err}"
    );
    // Without replicas in its configuration kubectl no longer touches them.
    let mut config = applied(2, "nginx:1");
    config["spec"].as_object_mut().unwrap().remove("replicas");
    let kept =
        server_side_apply(Kind::Deployment, Some(&got), &config, "kubectl", false, T3).unwrap();
    assert_eq!(kept["spec"]["replicas"], 4);
}

#[test]
fn service_ports_are_keyed_by_port_and_protocol() {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 8080}]}});
    let got = server_side_apply(Kind::Service, None, &svc, "kubectl", false, T1).unwrap();
    assert_eq!(
        entry(&got, "kubectl", "Apply").unwrap()["fieldsV1"]["f:spec"],
        json!({"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}, "f:targetPort": {}}},
               "f:selector": {}})
    );
}

#[test]
fn manager_names_from_user_agents() {
    assert_eq!(
        super::manager_from_user_agent("kubectl/v1.34.0 (linux/amd64) kubernetes/abc"),
        "kubectl"
    );
    assert_eq!(super::manager_from_user_agent(""), "");
}

#[test]
fn managed_fields_survive_the_typed_round_trip() {
    let got = server_side_apply(
        Kind::Deployment,
        None,
        &applied(2, "nginx:1"),
        "kubectl",
        false,
        T1,
    )
    .unwrap();
    let typed: crate::Deployment = serde_json::from_value(got.clone()).unwrap();
    let entries = typed.metadata.managed_fields.as_ref().unwrap();
    assert_eq!(entries[0].manager.as_deref(), Some("kubectl"));
    assert_eq!(entries[0].operation.as_deref(), Some("Apply"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        back["metadata"]["managedFields"],
        got["metadata"]["managedFields"]
    );
    let again = server_side_apply(
        Kind::Deployment,
        Some(&back),
        &applied(2, "nginx:1"),
        "kubectl",
        false,
        T2,
    )
    .unwrap();
    assert_eq!(again, back);
}

#[test]
fn status_writes_are_recorded_for_their_subresource() {
    let live = record_update(
        Kind::Deployment,
        &Value::Null,
        &stored(applied(2, "nginx:1")),
        "kubectl-create",
        T1,
    );
    let mut new = live.clone();
    new["status"] = json!({"replicas": 2, "readyReplicas": 1});
    // What the client sends in managedFields is ignored for a subresource.
    new["metadata"]["managedFields"] = json!([]);
    let got = super::record_update_at(
        Kind::Deployment,
        &live,
        &new,
        "podd-controller-manager",
        "status",
        T2,
    );
    let e = entry(&got, "podd-controller-manager", "Update").unwrap();
    assert_eq!(e["subresource"], "status");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:status": {".": {}, "f:readyReplicas": {}, "f:replicas": {}}})
    );
    assert!(entry(&got, "kubectl-create", "Update").is_some());
}

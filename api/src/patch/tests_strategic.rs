//! Strategic merge patches as kubectl sends them, applied to the served kinds.

use super::{PatchError, merge_patch, strategic_merge};
use crate::Kind;
use proptest::prelude::*;
use serde_json::{Value, json};

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                     "finalizers": ["a.example/x"]},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1",
                        "command": ["nginx", "-g", "daemon off;"],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                    }, {
                        "name": "sidecar",
                        "image": "busybox"
                    }],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "a", "operator": "Exists"}]
                }
            }
        }
    })
}

fn containers(v: &Value) -> &Vec<Value> {
    v.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .unwrap()
}

#[test]
fn kubectl_apply_image_change_keeps_the_rest_of_the_container() {
    let live = deployment();
    let patch = json!({"spec":{"template":{"spec":{
        "$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],
        "containers":[{"image":"nginx:2","name":"web"}]}}}});
    let got = strategic_merge(Kind::Deployment, &live, &patch).unwrap();
    let mut want = live.clone();
    want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    assert_eq!(got, want);
}

#[test]
fn set_image_with_one_listed_container_keeps_the_others_in_place() {
    let patch = json!({"spec":{"template":{"spec":{
        "$setElementOrder/containers":[{"name":"web"}],
        "containers":[{"image":"nginx:2","name":"web"}]}}}});
    let got = strategic_merge(Kind::Deployment, &deployment(), &patch).unwrap();
    let names: Vec<&str> = containers(&got)
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "sidecar"]);
    let web = &containers(&got)[0];
    assert_eq!(web["image"], "nginx:2");
    assert_eq!(
        web["env"],
        deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
    );
    assert_eq!(web["volumeMounts"][0]["mountPath"], "/data");
    assert_eq!(web["resources"]["limits"]["memory"], "128Mi");
}

#[test]
fn env_merges_by_name_with_deletions_and_order() {
    let patch = json!({"spec":{"template":{"spec":{
        "$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],
        "containers":[{"name":"web",
            "$setElementOrder/env":[{"name":"C"},{"name":"A"}],
            "env":[{"name":"C","value":"3"},{"name":"A","value":"9"},{"$patch":"delete","name":"B"}]}]}}}});
    let got = strategic_merge(Kind::Deployment, &deployment(), &patch).unwrap();
    assert_eq!(
        containers(&got)[0]["env"],
        json!([{"name":"C","value":"3"},{"name":"A","value":"9"}])
    );
    assert_eq!(containers(&got)[0]["image"], "nginx:1");
}

#[test]
fn ports_merge_by_container_port_and_service_ports_by_port() {
    let patch = json!({"spec":{"template":{"spec":{"containers":[{"name":"web",
        "ports":[{"containerPort":8080,"name":"alt"},{"containerPort":80,"name":"http"}]}]}}}});
    let got = strategic_merge(Kind::Deployment, &deployment(), &patch).unwrap();
    assert_eq!(
        containers(&got)[0]["ports"],
        json!([{"containerPort":8080,"name":"alt"},{"containerPort":80,"name":"http","protocol":"TCP"}])
    );

    let svc = json!({"spec":{"ports":[{"port":80,"targetPort":8080,"protocol":"TCP"}],"selector":{"app":"a"}}});
    let got = strategic_merge(
        Kind::Service,
        &svc,
        &json!({"spec":{"ports":[{"port":80,"name":"http"}]}}),
    )
    .unwrap();
    assert_eq!(
        got["spec"]["ports"],
        json!([{"port":80,"targetPort":8080,"protocol":"TCP","name":"http"}])
    );
}

#[test]
fn lists_without_a_strategy_are_replaced() {
    let patch = json!({"spec":{"template":{"spec":{
        "tolerations":[{"key":"b","operator":"Exists"}],
        "containers":[{"name":"web","command":["sh"]}]}}}});
    let got = strategic_merge(Kind::Deployment, &deployment(), &patch).unwrap();
    assert_eq!(
        got["spec"]["template"]["spec"]["tolerations"],
        json!([{"key":"b","operator":"Exists"}])
    );
    assert_eq!(containers(&got)[0]["command"], json!(["sh"]));
    // A Node's taints are replaced too; its addresses merge by type.
    let node = json!({"spec":{"taints":[{"key":"a","effect":"NoSchedule"}]},
        "status":{"addresses":[{"type":"InternalIP","address":"10.0.0.1"},{"type":"Hostname","address":"n1"}]}});
    let got = strategic_merge(
        Kind::Node,
        &node,
        &json!({
        "spec":{"taints":[]},
        "status":{"addresses":[{"type":"Hostname","address":"n2"}]}}),
    )
    .unwrap();
    assert_eq!(got["spec"]["taints"], json!([]));
    assert_eq!(
        got["status"]["addresses"],
        json!([
        {"type":"InternalIP","address":"10.0.0.1"},{"type":"Hostname","address":"n2"}])
    );
}

#[test]
fn conditions_merge_by_type() {
    let pod = json!({"status":{"conditions":[
        {"type":"Ready","status":"False"},{"type":"PodScheduled","status":"True"}]}});
    let got = strategic_merge(
        Kind::Pod,
        &pod,
        &json!({"status":{"conditions":[
        {"type":"Ready","status":"True"}]}}),
    )
    .unwrap();
    assert_eq!(
        got["status"]["conditions"],
        json!([
        {"type":"Ready","status":"True"},{"type":"PodScheduled","status":"True"}])
    );
}

#[test]
fn finalizers_are_a_merged_set() {
    let got = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"metadata":{"finalizers":["b.example/y","a.example/x"]}}),
    )
    .unwrap();
    assert_eq!(
        got["metadata"]["finalizers"],
        json!(["b.example/y", "a.example/x"])
    );
    let got = strategic_merge(
        Kind::Deployment,
        &got,
        &json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a.example/x"]}}),
    )
    .unwrap();
    assert_eq!(got["metadata"]["finalizers"], json!(["b.example/y"]));
}

#[test]
fn null_deletes_and_patch_directives_on_maps() {
    let got = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"metadata":{"labels":{"app":null,"tier":"x"}}}),
    )
    .unwrap();
    assert_eq!(got["metadata"]["labels"], json!({"tier":"x"}));

    let got = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"spec":{"template":{"metadata":{"labels":{"$patch":"replace","new":"1"}}}}}),
    )
    .unwrap();
    assert_eq!(
        got["spec"]["template"]["metadata"]["labels"],
        json!({"new":"1"})
    );

    let got = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"spec":{"strategy":{"$patch":"delete"}}}),
    )
    .unwrap();
    assert_eq!(got["spec"]["strategy"], json!({}));

    let err = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"spec":{"$patch":"bogus"}}),
    );
    assert!(matches!(err, Err(PatchError::Failed(_))), "{err:?}");
}

#[test]
fn patch_directives_on_list_items() {
    // `$patch: replace` in a list makes the other items the whole list.
    let got = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"spec":{"template":{"spec":{"containers":[{"$patch":"replace"},{"name":"only","image":"x"}]}}}}),
    )
    .unwrap();
    assert_eq!(containers(&got), &vec![json!({"name":"only","image":"x"})]);
    // `$patch: delete` removes the item of that key.
    let got = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"spec":{"template":{"spec":{"containers":[{"$patch":"delete","name":"sidecar"}]}}}}),
    )
    .unwrap();
    assert_eq!(containers(&got).len(), 1);
    assert_eq!(containers(&got)[0]["name"], "web");
    // New items go first, as in Kubernetes.
    let got = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"spec":{"template":{"spec":{"volumes":[{"name":"cache","emptyDir":{}}]}}}}),
    )
    .unwrap();
    assert_eq!(
        got["spec"]["template"]["spec"]["volumes"],
        json!([{"name":"cache","emptyDir":{}},{"name":"data","emptyDir":{}}])
    );
}

#[test]
fn retain_keys_clears_the_other_union_members() {
    // kubectl apply switching the strategy to Recreate.
    let got = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate","rollingUpdate":null}}}),
    )
    .unwrap();
    assert_eq!(got["spec"]["strategy"], json!({"type":"Recreate"}));
    let err = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":{}}}}),
    );
    assert!(err.is_err());
}

#[test]
fn malformed_patches_are_refused() {
    let err = strategic_merge(Kind::Pod, &json!({}), &json!([1]));
    assert!(matches!(err, Err(PatchError::Malformed(_))));
    let err = strategic_merge(
        Kind::Deployment,
        &deployment(),
        &json!({"spec":{"template":{"spec":{"containers":[{"image":"no-name"}]}}}}),
    );
    assert!(matches!(err, Err(PatchError::Failed(m)) if m.contains("merge key: name")));
}

/// A JSON document of maps and scalars (no lists), with null as "delete" in patches.
fn doc(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ];
    leaf.prop_recursive(depth, 16, 4, |inner| {
        prop::collection::btree_map("[a-d]", prop_oneof![inner, Just(Value::Null)], 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

fn container() -> impl Strategy<Value = Value> {
    (
        "[a-c]",
        "[a-z]{1,3}",
        prop::collection::btree_map("[A-C]", "[0-9]", 0..3),
    )
        .prop_map(|(name, image, env)| {
            let env: Vec<Value> = env
                .into_iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect();
            json!({"name": name, "image": image, "env": env})
        })
}

fn unique_by_name(cs: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for c in cs {
        if !out.iter().any(|o| o["name"] == c["name"]) {
            out.push(c);
        }
    }
    out
}

proptest! {
    /// Without lists or directives a strategic merge patch is a JSON merge patch.
    #[test]
    fn without_lists_it_is_a_merge_patch(target in doc(3), patch in doc(3)) {
        prop_assume!(patch.is_object());
        let mut want = target.clone();
        merge_patch(&mut want, &patch);
        // A merge patch keeps nulls nested in values it adds; strategic merge drops them,
        // which decodes to the same object.
        fn strip(v: &mut Value) {
            if let Value::Object(m) = v {
                m.retain(|_, v| !v.is_null());
                m.values_mut().for_each(strip);
            }
        }
        strip(&mut want);
        let mut got = strategic_merge(Kind::Lease, &target, &patch).unwrap();
        strip(&mut got);
        prop_assert_eq!(got, want);
    }

    /// Merging containers by name keeps every live container, gives each patched one the
    /// patch's image, keeps its env vars and adds the patch's, and is idempotent.
    #[test]
    fn containers_merge_by_name(live in prop::collection::vec(container(), 0..4),
                                patch in prop::collection::vec(container(), 0..4)) {
        let live = unique_by_name(live);
        let patch = unique_by_name(patch);
        let pod = json!({"spec": {"containers": live}});
        let p = json!({"spec": {"containers": patch}});
        let once = strategic_merge(Kind::Pod, &pod, &p).unwrap();
        let twice = strategic_merge(Kind::Pod, &once, &p).unwrap();
        prop_assert_eq!(&once, &twice);
        let got = once["spec"]["containers"].as_array().unwrap();
        let names = |l: &[Value]| l.iter().map(|c| c["name"].clone()).collect::<Vec<_>>();
        for n in names(&live).into_iter().chain(names(&patch)) {
            prop_assert_eq!(got.iter().filter(|c| c["name"] == n).count(), 1);
        }
        prop_assert_eq!(got.len(), live.iter().chain(patch.iter())
            .map(|c| c["name"].to_string()).collect::<std::collections::BTreeSet<_>>().len());
        for pc in &patch {
            let c = got.iter().find(|c| c["name"] == pc["name"]).unwrap();
            prop_assert_eq!(&c["image"], &pc["image"]);
            let lc = live.iter().find(|c| c["name"] == pc["name"]);
            for e in lc.into_iter().flat_map(|l| l["env"].as_array().unwrap()) {
                let in_patch = pc["env"].as_array().unwrap().iter().any(|p| p["name"] == e["name"]);
                let kept = c["env"].as_array().unwrap().iter().any(|g| g["name"] == e["name"]);
                prop_assert!(kept || in_patch);
            }
        }
    }
}

#[test]
fn kubectl_retains_only_the_new_volume_source() {
    // kubectl apply after a volume changed from emptyDir to hostPath.
    let patch = json!({"spec":{"template":{"spec":{
        "$setElementOrder/volumes":[{"name":"data"}],
        "volumes":[{"$retainKeys":["hostPath","name"],"hostPath":{"path":"/srv"},"name":"data"}]}}}});
    let got = strategic_merge(Kind::Deployment, &deployment(), &patch).unwrap();
    assert_eq!(
        got["spec"]["template"]["spec"]["volumes"],
        json!([{"name":"data","hostPath":{"path":"/srv"}}])
    );
}

#[test]
fn kubectl_replaces_a_container_in_one_patch() {
    // Deleting one container and adding another, as kubectl's three-way patch says it.
    let patch = json!({"spec":{"template":{"spec":{
        "$setElementOrder/containers":[{"name":"web"},{"name":"logger"}],
        "containers":[{"name":"logger","image":"fluentbit"},{"$patch":"delete","name":"sidecar"}]}}}});
    let got = strategic_merge(Kind::Deployment, &deployment(), &patch).unwrap();
    let names: Vec<&str> = containers(&got)
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "logger"]);
    assert_eq!(
        containers(&got)[0],
        deployment()["spec"]["template"]["spec"]["containers"][0]
    );
}

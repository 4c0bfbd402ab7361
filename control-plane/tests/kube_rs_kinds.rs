//! kube-rs's typed client (`kube::Api<K>` over k8s-openapi's types) against the API server,
//! over TLS with a bearer token as any Kubernetes client talks to it. For every kind in
//! `podd_api::Kind::ALL`: create, get, list (with a label selector), watch (the ADDED,
//! MODIFIED and DELETED events of the object), patch with every patch type kube-rs sends
//! (JSON merge, JSON patch, strategic merge, server-side apply with a field manager and force)
//! and delete; after each patch the patched field comes back from the patch's answer and from
//! a fresh get, and what earlier patches set is still there. Runs on the memory, SQLite and
//! etcd stores.

mod common;

use common::{Backend, TestPlane};
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use podd_api::Kind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;
use std::time::Duration;

const NS: &str = "kube-rs";
const TOKEN: &str = "admin-token-for-tests";
/// The label every object of this test carries, and the list's selector.
const SUITE: (&str, &str) = ("suite", "kube-rs");

/// A kube-rs client for the plane's TLS endpoint with the admin token.
async fn kube_client(t: &TestPlane, dir: &std::path::Path) -> kube::Client {
    let ca = dir.join("ca.crt");
    let token = dir.join("token");
    std::fs::write(&ca, &t.plane.ca_pem).unwrap();
    std::fs::write(&token, TOKEN).unwrap();
    let port = t.plane.tls_addr.expect("the plane serves TLS").port();
    let config = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "podd".into(),
            cluster: Some(Cluster {
                server: Some(format!("https://127.0.0.1:{port}")),
                certificate_authority: Some(ca.display().to_string()),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "admin".into(),
            auth_info: Some(AuthInfo {
                token_file: Some(token.display().to_string()),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: "podd".into(),
            context: Some(Context {
                cluster: "podd".into(),
                user: Some("admin".into()),
                namespace: Some(NS.into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some("podd".into()),
        ..Kubeconfig::default()
    };
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("kube-rs reads the kubeconfig");
    kube::Client::try_from(config).expect("kube-rs client")
}

/// `Api::namespaced` or `Api::all`, by the kind's scope (kube-rs types the two apart).
trait ScopedApi {
    fn api<K>(client: kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = Self, DynamicType = ()>;
}

impl ScopedApi for NamespaceResourceScope {
    fn api<K>(client: kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = Self, DynamicType = ()>,
    {
        Api::namespaced(client, NS)
    }
}

impl ScopedApi for ClusterResourceScope {
    fn api<K>(client: kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = Self, DynamicType = ()>,
    {
        Api::all(client)
    }
}

/// One kind's test object: what is created, and a field each patch type sets to its own value
/// (a JSON pointer, and the values merge, JSON patch, strategic merge and apply set).
struct Case {
    body: Value,
    field: Option<(&'static str, [Value; 4])>,
}

fn case(kind: Kind, name: &str) -> Case {
    let meta = json!({"name": name, "labels": {SUITE.0: SUITE.1, "app": name},
        "annotations": {"seed": "created"}});
    let (rest, field): (Value, Option<(&'static str, [Value; 4])>) = match kind {
        Kind::Pod => (
            json!({"spec": {"activeDeadlineSeconds": 900,
                "containers": [{"name": "c", "image": "busybox:1",
                    "ports": [{"name": "http", "containerPort": 8080}]}]}}),
            // Kubernetes lets an update lower activeDeadlineSeconds, not raise it.
            Some((
                "/spec/activeDeadlineSeconds",
                [json!(800), json!(700), json!(600), json!(500)],
            )),
        ),
        Kind::Service => (
            json!({"spec": {"selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
            Some((
                "/spec/selector/tier",
                [
                    json!("merge"),
                    json!("json"),
                    json!("strategic"),
                    json!("apply"),
                ],
            )),
        ),
        Kind::Endpoints => (
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}),
            None,
        ),
        Kind::Node => (
            json!({"spec": {"unschedulable": false}}),
            Some((
                "/spec/unschedulable",
                [json!(true), json!(false), json!(true), json!(false)],
            )),
        ),
        Kind::Event => (
            json!({"involvedObject": {"kind": "Pod", "namespace": NS, "name": "p"},
                "reason": "Tested", "message": "created", "type": "Normal", "count": 1}),
            Some((
                "/message",
                [
                    json!("merge"),
                    json!("json"),
                    json!("strategic"),
                    json!("apply"),
                ],
            )),
        ),
        Kind::Deployment | Kind::ReplicaSet => (
            json!({"spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}),
            Some((
                "/spec/minReadySeconds",
                [json!(1), json!(2), json!(3), json!(4)],
            )),
        ),
        // No node runs here, so the daemonset controller starts no pod.
        Kind::DaemonSet => (
            json!({"spec": {"selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}),
            Some((
                "/spec/minReadySeconds",
                [json!(1), json!(2), json!(3), json!(4)],
            )),
        ),
        Kind::HorizontalPodAutoscaler => (
            json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                "name": name}, "minReplicas": 1, "maxReplicas": 3}}),
            Some((
                "/spec/maxReplicas",
                [json!(4), json!(5), json!(6), json!(7)],
            )),
        ),
        Kind::EndpointSlice => (
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
            None,
        ),
        // Suspended, so the job controller starts no pod.
        Kind::Job => (
            json!({"spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox:1"}]}}}}),
            Some((
                "/spec/activeDeadlineSeconds",
                [json!(100), json!(200), json!(300), json!(400)],
            )),
        ),
        // Suspended, so the cronjob controller starts no Job.
        Kind::CronJob => (
            json!({"spec": {"schedule": "*/5 * * * *", "suspend": true, "jobTemplate": {"spec": {
                "template": {"spec": {"restartPolicy": "OnFailure",
                    "containers": [{"name": "c", "image": "busybox:1"}]}}}}}}),
            Some((
                "/spec/startingDeadlineSeconds",
                [json!(100), json!(200), json!(300), json!(400)],
            )),
        ),
        // Labels and annotations only: spec.finalizers is written through `finalize`.
        Kind::Namespace => (json!({}), None),
        Kind::ConfigMap => (
            json!({"data": {"seed": "created"}, "binaryData": {"bin": "AAE="}}),
            Some((
                "/data/tier",
                [
                    json!("merge"),
                    json!("json"),
                    json!("strategic"),
                    json!("apply"),
                ],
            )),
        ),
        // Base64 on the wire: "merge", "json", "strategic", "apply".
        Kind::Secret => (
            json!({"type": "Opaque", "data": {"seed": "Y3JlYXRlZA=="}}),
            Some((
                "/data/tier",
                [
                    json!("bWVyZ2U="),
                    json!("anNvbg=="),
                    json!("c3RyYXRlZ2lj"),
                    json!("YXBwbHk="),
                ],
            )),
        ),
        Kind::Lease => (
            json!({"spec": {"holderIdentity": "h0", "leaseDurationSeconds": 10}}),
            Some((
                "/spec/holderIdentity",
                [
                    json!("merge"),
                    json!("json"),
                    json!("strategic"),
                    json!("apply"),
                ],
            )),
        ),
    };
    let mut body = json!({"apiVersion": kind.api_version(), "kind": kind.name(), "metadata": meta});
    for (k, v) in rest.as_object().unwrap() {
        body[k] = v.clone();
    }
    Case { body, field }
}

/// `{"a": {"b": v}}` for the pointer `/a/b`.
fn nested(pointer: &str, v: &Value) -> Value {
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    segments
        .into_iter()
        .rev()
        .fold(v.clone(), |acc, seg| json!({ seg: acc }))
}

/// Merges `b` into `a` (objects only).
fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Whether every field of `want` is in `got` with the same value (arrays element-wise).
fn is_subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| is_subset(v, gv))),
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| is_subset(a, b))
        }
        _ => want == got,
    }
}

/// The four patch types, each setting a label, an annotation and the kind's field.
const PATCHES: [&str; 4] = ["merge", "json", "strategic", "apply"];

async fn exercise<K>(client: kube::Client, kind: Kind)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::Scope: ScopedApi,
{
    let api: Api<K> = <K::Scope as ScopedApi>::api(client);
    let name = format!("kr-{}", kind.name().to_ascii_lowercase());
    let Case { body, field } = case(kind, &name);
    let selector = format!("{}={}", SUITE.0, SUITE.1);

    // The watch starts at the list's resourceVersion, before the object exists.
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: list: {e}"));
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let stream = api
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: watch: {e}"));
    let watch_name = name.clone();
    let watched = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut stream = stream.boxed();
        while let Some(ev) = stream.try_next().await.expect("watch event") {
            let (ty, obj) = match ev {
                WatchEvent::Added(o) => ("ADDED", o),
                WatchEvent::Modified(o) => ("MODIFIED", o),
                WatchEvent::Deleted(o) => ("DELETED", o),
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Error(e) => panic!("watch error event: {e:?}"),
            };
            if obj.meta().name.as_deref() != Some(watch_name.as_str()) {
                continue;
            }
            let v = serde_json::to_value(&obj).unwrap();
            seen.push((ty, v));
            if ty == "DELETED" {
                break;
            }
        }
        seen
    });

    // Create: what was sent comes back (defaults and server-set fields aside).
    let obj: K = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("{kind:?}: the test object decodes: {e}"));
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: create: {e}"));
    let created_v = serde_json::to_value(&created).unwrap();
    assert!(
        is_subset(&body, &created_v),
        "{kind:?}: create answered without what was sent:\nsent {body:#}\ngot {created_v:#}"
    );
    assert!(created.meta().uid.is_some(), "{kind:?}: no uid");
    assert!(created.meta().creation_timestamp.is_some());

    // Get and list.
    let got = api
        .get(&name)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: get: {e}"));
    let got_v = serde_json::to_value(&got).unwrap();
    assert!(is_subset(&body, &got_v), "{kind:?}: get: {got_v:#}");
    let listed = api
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: list: {e}"));
    assert!(
        listed
            .items
            .iter()
            .any(|o| o.meta().name.as_deref() == Some(&name)),
        "{kind:?}: list by label does not hold the object"
    );
    let none = api
        .list(&ListParams::default().labels("suite=nothing"))
        .await
        .unwrap();
    assert!(
        none.items.is_empty(),
        "{kind:?}: a selector nothing matches"
    );

    // Patch with each patch type; each sets a label, an annotation and the field.
    let mut expected = json!({"metadata": {"labels": {}, "annotations": {"seed": "created"}}});
    for (i, how) in PATCHES.into_iter().enumerate() {
        let mut change = json!({"metadata": {"labels": {how: "yes"}, "annotations": {how: "yes"}}});
        if let Some((pointer, values)) = &field {
            merge(&mut change, nested(pointer, &values[i]));
        }
        let answer = match how {
            "merge" => {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&change))
                    .await
            }
            "strategic" => {
                api.patch(&name, &PatchParams::default(), &Patch::Strategic(&change))
                    .await
            }
            "json" => {
                let mut ops = vec![
                    json!({"op": "add", "path": "/metadata/labels/json", "value": "yes"}),
                    json!({"op": "add", "path": "/metadata/annotations/json", "value": "yes"}),
                ];
                if let Some((pointer, values)) = &field {
                    ops.push(json!({"op": "add", "path": pointer, "value": values[i]}));
                }
                let p: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
                api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(p))
                    .await
            }
            "apply" => {
                let mut applied = json!({"apiVersion": kind.api_version(), "kind": kind.name(),
                    "metadata": {"name": name}});
                if kind.namespaced() {
                    applied["metadata"]["namespace"] = json!(NS);
                }
                merge(&mut applied, change.clone());
                api.patch(
                    &name,
                    &PatchParams::apply("kube-rs-test").force(),
                    &Patch::Apply(&applied),
                )
                .await
            }
            _ => unreachable!(),
        };
        let answer = answer.unwrap_or_else(|e| panic!("{kind:?}: {how} patch: {e}"));
        merge(&mut expected, change);
        let fresh = api.get(&name).await.unwrap();
        for (what, obj) in [("answer", &answer), ("get", &fresh)] {
            let v = serde_json::to_value(obj).unwrap();
            assert!(
                is_subset(&expected, &v),
                "{kind:?}: after the {how} patch, the {what} lacks a patched field:\nwant \
                 {expected:#}\ngot {v:#}"
            );
        }
    }

    // Delete: the object goes (no node runs the pod, so it goes at once).
    api.delete(&name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: delete: {e}"));
    if kind == Kind::Namespace {
        // A deleted Namespace waits for its finalizer; no namespace controller runs here, so
        // the test does its last step, through the `finalize` subresource.
        let body = json!({"metadata": {"name": name}, "spec": {"finalizers": []}});
        api.replace_subresource("finalize", &name, &PostParams::default(), &body)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: finalize: {e}"));
    }
    common::eventually(Duration::from_secs(10), "the object to go", || {
        let api = api.clone();
        let name = name.clone();
        async move {
            match api.get_opt(&name).await.unwrap() {
                None => Some(()),
                Some(_) => None,
            }
        }
    })
    .await;

    let seen = tokio::time::timeout(Duration::from_secs(30), watched)
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: the watch did not see the delete"))
        .unwrap();
    let types: Vec<&str> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(types.first(), Some(&"ADDED"), "{kind:?}: {types:?}");
    assert_eq!(types.last(), Some(&"DELETED"), "{kind:?}: {types:?}");
    let modified = types.iter().filter(|t| **t == "MODIFIED").count();
    assert!(
        modified >= PATCHES.len(),
        "{kind:?}: one MODIFIED per patch: {types:?}"
    );
    // The last MODIFIED carries every patch.
    let last_modified = seen
        .iter()
        .rev()
        .find(|(t, _)| *t == "MODIFIED")
        .map(|(_, v)| v)
        .unwrap();
    assert!(
        is_subset(&expected, last_modified),
        "{kind:?}: the watch's last MODIFIED: {last_modified:#}"
    );
}

async fn every_kind(backend: Backend) {
    let t = common::start_with(backend, None).await;
    let dir = tempfile::tempdir().unwrap();
    let client = kube_client(&t, dir.path()).await;
    // The namespaced kinds' objects go into NS, created first as in Kubernetes.
    let ns: podd_api::Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<podd_api::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the test namespace");
    for kind in Kind::ALL {
        podd_api::with_kind_type!(kind, K => exercise::<K>(client.clone(), kind).await);
    }
}

#[tokio::test]
async fn every_kind_through_kube_rs_on_memory() {
    every_kind(Backend::Memory).await;
}

#[tokio::test]
async fn every_kind_through_kube_rs_on_sqlite() {
    every_kind(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_kind_through_kube_rs_on_etcd() {
    every_kind(Backend::Etcd).await;
}

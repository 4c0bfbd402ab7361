//! Namespaces as objects, with Kubernetes' semantics: the four initial namespaces exist from
//! the start and cannot be deleted; objects are refused in a namespace that does not exist
//! (404) or is being deleted (403); deleting a namespace marks it Terminating, and the
//! namespace controller deletes what it holds, waits until it is gone, and finalizes it.

mod common;

use common::{TestPlane, eventually, fast_controllers, request, start};
use hyper::Method;
use podd_api::{Deployment, Namespace, Pod, Service};
use podd_client::Api;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn pod_in(ns: &str, name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})
}

async fn post(t: &TestPlane, path: &str, body: Value) -> common::Answer {
    let h = [("content-type", "application/json")];
    request(t, Method::POST, path, &h, Some(body)).await
}

#[tokio::test]
async fn the_initial_namespaces_exist_and_cannot_be_deleted() {
    let t = start(None).await;
    let namespaces: Api<Namespace> = t.client.api(None);
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let n = namespaces.get(name).await.unwrap();
        assert_eq!(
            n.spec.as_ref().and_then(|s| s.finalizers.clone()),
            Some(vec!["kubernetes".to_string()]),
            "{name}"
        );
        assert_eq!(
            n.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Active")
        );
        assert_eq!(
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/metadata.name"))
                .map(String::as_str),
            Some(name)
        );
        let a = request(
            &t,
            Method::DELETE,
            &format!("/api/v1/namespaces/{name}"),
            &[],
            None,
        )
        .await;
        assert_eq!(a.status, 403, "{name}: {:?}", a.body);
        assert_eq!(
            a.body["message"],
            format!("namespaces {name:?} is forbidden: this namespace may not be deleted")
        );
    }
    // kubectl's columns.
    let a = request(
        &t,
        Method::GET,
        "/api/v1/namespaces",
        &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        None,
    )
    .await;
    let cols: Vec<&str> = a.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Status", "Age"]);
    let rows = a.body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["cells"][1] == "Active"), "{rows:?}");
    // A second server start on the same store finds them and creates nothing twice.
    let again = common::start_on(t.store.clone(), None).await;
    let listed = again
        .client
        .api::<Namespace>(None)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 4);
}

#[tokio::test]
async fn objects_in_a_missing_namespace_are_refused_with_404() {
    let t = start(None).await;
    let a = post(&t, "/api/v1/namespaces/nope/pods", pod_in("nope", "p")).await;
    assert_eq!(a.status, 404, "{:?}", a.body);
    assert_eq!(a.body["reason"], "NotFound");
    assert_eq!(a.body["message"], "namespaces \"nope\" not found");
    // Dry run and server-side apply are refused alike.
    let a = post(
        &t,
        "/api/v1/namespaces/nope/pods?dryRun=All",
        pod_in("nope", "p"),
    )
    .await;
    assert_eq!(a.status, 404);
    let a = request(
        &t,
        Method::PATCH,
        "/apis/apps/v1/namespaces/nope/deployments/web?fieldManager=test",
        &[("content-type", "application/apply-patch+yaml")],
        Some(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "nope"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}})),
    )
    .await;
    assert_eq!(a.status, 404, "{:?}", a.body);
    assert_eq!(a.body["message"], "namespaces \"nope\" not found");
    // Once the namespace exists, the same create works.
    t.client
        .api::<Namespace>(None)
        .create(&namespace("nope"))
        .await
        .unwrap();
    let a = post(&t, "/api/v1/namespaces/nope/pods", pod_in("nope", "p")).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
}

#[tokio::test]
async fn namespace_validation_and_update_rules() {
    let t = start(None).await;
    let namespaces: Api<Namespace> = t.client.api(None);
    // A namespace name is a DNS-1123 label: no dots.
    let e = namespaces.create(&namespace("a.b")).await.unwrap_err();
    assert_eq!(e.code(), Some(422), "{e}");
    let created = namespaces.create(&namespace("rules")).await.unwrap();
    assert_eq!(
        created.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_string()])
    );
    // spec.finalizers is written only through `finalize`: an update leaves it as it was.
    let n = namespaces
        .patch(
            "rules",
            &json!({"spec": {"finalizers": []}, "metadata": {"labels": {"x": "y"}}}),
        )
        .await
        .unwrap();
    assert_eq!(
        n.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_string()])
    );
    assert_eq!(n.metadata.labels.unwrap()["x"], "y");
    let a = request(
        &t,
        Method::PUT,
        "/api/v1/namespaces/rules/finalize",
        &[("content-type", "application/json")],
        Some(json!({"metadata": {"name": "rules"}, "spec": {"finalizers": ["example.com/mine"]}})),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["spec"]["finalizers"], json!(["example.com/mine"]));
    let a = request(
        &t,
        Method::PUT,
        "/api/v1/namespaces/rules/finalize",
        &[("content-type", "application/json")],
        Some(json!({"metadata": {"name": "rules"}, "spec": {"finalizers": ["nodomain"]}})),
    )
    .await;
    assert_eq!(a.status, 422, "{:?}", a.body);
}

#[tokio::test]
async fn a_terminating_namespace_refuses_new_content_with_403() {
    // No controllers: the namespace stays Terminating.
    let t = start(None).await;
    let namespaces: Api<Namespace> = t.client.api(None);
    namespaces.create(&namespace("going")).await.unwrap();
    let a = post(
        &t,
        "/api/v1/namespaces/going/pods",
        pod_in("going", "before"),
    )
    .await;
    assert_eq!(a.status, 201);
    let a = request(&t, Method::DELETE, "/api/v1/namespaces/going", &[], None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let n = namespaces.get("going").await.unwrap();
    assert!(n.metadata.deletion_timestamp.is_some());
    assert_eq!(
        n.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );
    let a = post(
        &t,
        "/api/v1/namespaces/going/pods",
        pod_in("going", "after"),
    )
    .await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    assert_eq!(a.body["reason"], "Forbidden");
    assert_eq!(
        a.body["message"],
        "pods \"after\" is forbidden: unable to create new content in namespace going because \
         it is being terminated"
    );
    // What is there may still be read and deleted.
    let pods: Api<Pod> = t.client.api(Some("going"));
    pods.get("before").await.unwrap();
    pods.delete("before").await.unwrap();
    // The finalizer goes: so does the namespace.
    let a = request(
        &t,
        Method::PUT,
        "/api/v1/namespaces/going/finalize",
        &[("content-type", "application/json")],
        Some(json!({"metadata": {"name": "going"}, "spec": {"finalizers": []}})),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(namespaces.get("going").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn deleting_a_namespace_deletes_everything_in_it_then_the_namespace() {
    let t = start(Some(fast_controllers())).await;
    let namespaces: Api<Namespace> = t.client.api(None);
    namespaces.create(&namespace("team")).await.unwrap();
    let mut d = common::deployment("web", 3);
    d.metadata.namespace = Some("team".into());
    let deployments: Api<Deployment> = t.client.api(Some("team"));
    deployments.create(&d).await.unwrap();
    let services: Api<Service> = t.client.api(Some("team"));
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    .unwrap();
    services.create(&svc).await.unwrap();
    // A pod whose own finalizer keeps it (and so the namespace) until the test removes it.
    let pods: Api<Pod> = t.client.api(Some("team"));
    let mut held = pod_in("team", "held");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    pods.create(&serde_json::from_value(held).unwrap())
        .await
        .unwrap();
    // The same names in default stay.
    let mut other = common::deployment("web", 1);
    other.metadata.namespace = Some("default".into());
    t.client
        .api::<Deployment>(Some("default"))
        .create(&other)
        .await
        .unwrap();
    eventually(WAIT, "the deployment's pods", || {
        let pods = pods.clone();
        async move {
            let n = pods.list(&Default::default()).await.unwrap().items.len();
            (n == 4).then_some(())
        }
    })
    .await;

    namespaces.delete("team").await.unwrap();
    // Terminating while the held pod stays, with conditions saying what is left.
    let n = eventually(WAIT, "only the held pod left", || {
        let namespaces = namespaces.clone();
        async move {
            let n = namespaces.get("team").await.unwrap();
            let conds = n.status.as_ref()?.conditions.clone()?;
            let remaining = conds
                .iter()
                .find(|c| c.type_ == "NamespaceContentRemaining")?;
            (remaining.message.as_deref()
                == Some("Some resources are remaining: pods. has 1 resource instances"))
            .then_some(n)
        }
    })
    .await;
    assert_eq!(
        n.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );
    let conds = n.status.unwrap().conditions.unwrap();
    let held = conds
        .iter()
        .find(|c| c.type_ == "NamespaceFinalizersRemaining")
        .unwrap();
    assert_eq!(held.status, "True");
    assert_eq!(held.reason.as_deref(), Some("SomeFinalizersRemain"));
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        services
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let left = pods.list(&Default::default()).await.unwrap().items;
    assert_eq!(left.len(), 1);
    assert!(left[0].metadata.deletion_timestamp.is_some());

    // The last finalizer goes: the pod, then the namespace.
    pods.patch("held", &json!({"metadata": {"finalizers": null}}))
        .await
        .unwrap();
    eventually(WAIT, "the namespace to go", || {
        let namespaces = namespaces.clone();
        async move {
            match namespaces.get("team").await {
                Err(e) if e.is_not_found() => Some(()),
                _ => None,
            }
        }
    })
    .await;
    for kind in podd_api::Kind::ALL.into_iter().filter(|k| k.namespaced()) {
        let left = t.store.list(&kind.key_prefix(Some("team"))).await.unwrap();
        assert!(left.items.is_empty(), "{kind:?} left in team");
    }
    let kept = t
        .client
        .api::<Deployment>(Some("default"))
        .get("web")
        .await
        .unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none());

    // The name may be used again, for an empty namespace.
    namespaces.create(&namespace("team")).await.unwrap();
    assert!(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

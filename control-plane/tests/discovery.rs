//! The API's self-description over HTTP, as kubectl reads it: /version, discovery (legacy and
//! aggregated), OpenAPI v2 and v3, and metrics.k8s.io fed by usage reports.

mod common;

use common::{request, start};
use hyper::Method;
use serde_json::{Value, json};

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

#[tokio::test]
async fn version_and_legacy_discovery() {
    let t = start(None).await;
    let r = request(&t, Method::GET, "/version", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.body["major"].as_str(), r.body["minor"].as_str()),
        (Some("1"), Some("34"))
    );
    assert_eq!(r.body["gitVersion"], "v1.34.0-podd");

    let r = request(&t, Method::GET, "/api", &[], None).await;
    assert_eq!(r.body["kind"], "APIVersions");
    assert_eq!(r.body["versions"], json!(["v1"]));
    assert_eq!(
        r.body["serverAddressByClientCIDRs"][0]["serverAddress"],
        "localhost"
    );

    let r = request(&t, Method::GET, "/apis", &[], None).await;
    assert_eq!(r.body["kind"], "APIGroupList");
    let groups: Vec<&str> = r.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(
        groups.contains(&"apps") && groups.contains(&"metrics.k8s.io"),
        "{groups:?}"
    );

    let r = request(&t, Method::GET, "/api/v1", &[], None).await;
    assert_eq!(r.body["kind"], "APIResourceList");
    let names: Vec<&str> = r.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for n in [
        "pods",
        "pods/status",
        "pods/log",
        "pods/exec",
        "pods/attach",
        "pods/portforward",
        "services",
        "nodes",
        "events",
        "configmaps",
        "secrets",
        "namespaces",
        "namespaces/status",
        "namespaces/finalize",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let ns = r.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "namespaces")
        .unwrap();
    assert_eq!(
        (&ns["namespaced"], &ns["shortNames"], &ns["kind"]),
        (&json!(false), &json!(["ns"]), &json!("Namespace"))
    );
    let r = request(&t, Method::GET, "/apis/apps/v1/", &[], None).await;
    assert_eq!(r.body["groupVersion"], "apps/v1");
    let apps = r.body["resources"].as_array().unwrap();
    let ds = apps.iter().find(|x| x["name"] == "daemonsets").unwrap();
    assert_eq!(
        (&ds["kind"], &ds["shortNames"], &ds["categories"]),
        (&json!("DaemonSet"), &json!(["ds"]), &json!(["all"]))
    );
    assert!(apps.iter().any(|x| x["name"] == "daemonsets/status"));
    let r = request(&t, Method::GET, "/apis/apps", &[], None).await;
    assert_eq!(r.body["kind"], "APIGroup");
    let r = request(&t, Method::GET, "/apis/metrics.k8s.io/v1beta1", &[], None).await;
    assert_eq!(r.body["resources"][1]["kind"], "PodMetrics");
    let r = request(&t, Method::GET, "/apis/batch/v1", &[], None).await;
    assert_eq!(r.body["resources"][0]["kind"], "Job");
    let resources = r.body["resources"].as_array().unwrap();
    let cronjobs = resources.iter().find(|x| x["name"] == "cronjobs").unwrap();
    assert_eq!(
        (&cronjobs["kind"], &cronjobs["shortNames"]),
        (&json!("CronJob"), &json!(["cj"]))
    );
    assert!(resources.iter().any(|x| x["name"] == "cronjobs/status"));
    let r = request(&t, Method::GET, "/apis/policy/v1", &[], None).await;
    assert_eq!(r.status, 404);
    let r = request(
        &t,
        Method::POST,
        "/apis",
        &[("content-type", "application/json")],
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.body);
}

#[tokio::test]
async fn aggregated_discovery_as_kubectl_asks() {
    let t = start(None).await;
    for (path, want_core) in [("/api", true), ("/apis", false)] {
        let r = request(&t, Method::GET, path, &[("accept", AGGREGATED)], None).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.headers["content-type"],
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        assert_eq!(r.body["kind"], "APIGroupDiscoveryList");
        assert_eq!(r.body["apiVersion"], "apidiscovery.k8s.io/v2");
        let items = r.body["items"].as_array().unwrap();
        assert_eq!(
            items.iter().any(|g| g["metadata"].get("name").is_none()),
            want_core
        );
    }
    let r = request(&t, Method::GET, "/apis", &[("accept", AGGREGATED)], None).await;
    let apps = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "apps")
        .unwrap();
    let deploy = apps["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "deployments")
        .unwrap();
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(deploy["subresources"][0]["subresource"], "scale");
}

/// `kubectl auth whoami`'s group is discovered as kube-apiserver lists it: SelfSubjectReview,
/// cluster-scoped, create only (tokenreviews are not served, so not listed).
#[tokio::test]
async fn authentication_group_lists_selfsubjectreviews() {
    let t = start(None).await;
    let r = request(&t, Method::GET, "/apis", &[], None).await;
    let auth = r.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "authentication.k8s.io")
        .cloned()
        .unwrap_or_else(|| panic!("no authentication.k8s.io in {}", r.body));
    assert_eq!(
        auth,
        json!({"name": "authentication.k8s.io",
            "versions": [{"groupVersion": "authentication.k8s.io/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "authentication.k8s.io/v1", "version": "v1"}})
    );
    let r = request(&t, Method::GET, "/apis/authentication.k8s.io", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["kind"], "APIGroup");
    assert_eq!(r.body["preferredVersion"]["version"], "v1");
    let r = request(&t, Method::GET, "/apis/authentication.k8s.io/v1", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["kind"], "APIResourceList");
    assert_eq!(r.body["groupVersion"], "authentication.k8s.io/v1");
    assert_eq!(
        r.body["resources"],
        json!([{"name": "selfsubjectreviews", "singularName": "selfsubjectreview",
            "namespaced": false, "kind": "SelfSubjectReview", "verbs": ["create"]}])
    );
    let r = request(&t, Method::GET, "/apis", &[("accept", AGGREGATED)], None).await;
    let auth = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "authentication.k8s.io")
        .cloned()
        .unwrap_or_else(|| panic!("no authentication.k8s.io in {}", r.body));
    let v1 = &auth["versions"][0];
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["resources"][0]["resource"], "selfsubjectreviews");
    assert_eq!(v1["resources"][0]["scope"], "Cluster");
    assert_eq!(v1["resources"][0]["verbs"], json!(["create"]));
    assert_eq!(
        v1["resources"][0]["responseKind"],
        json!({"group": "authentication.k8s.io", "version": "v1", "kind": "SelfSubjectReview"})
    );
    // What discovery promises is served: a create answers who the caller is.
    let r = request(
        &t,
        Method::POST,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[("content-type", "application/json")],
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["kind"], "SelfSubjectReview");
    assert!(
        r.body["status"]["userInfo"]["username"].is_string(),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn openapi_v3_documents_for_explain() {
    let t = start(None).await;
    let r = request(&t, Method::GET, "/openapi/v3", &[], None).await;
    assert_eq!(r.status, 200);
    let url = r.body["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let r = request(
        &t,
        Method::GET,
        &url,
        &[("accept", "application/json")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["cache-control"], "public, immutable");
    assert_eq!(r.body["openapi"], "3.0.0");
    let dep = &r.body["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        dep["x-kubernetes-group-version-kind"][0]["kind"],
        "Deployment"
    );
    let r = request(&t, Method::GET, "/openapi/v3/api/v1", &[], None).await;
    assert!(r.body["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"].is_object());
    let r = request(&t, Method::GET, "/openapi/v3/apis/batch/v1", &[], None).await;
    assert!(r.body["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs"]["get"].is_object());
    let r = request(&t, Method::GET, "/openapi/v3/apis/policy/v1", &[], None).await;
    assert_eq!(r.status, 404);
    let r = request(
        &t,
        Method::GET,
        "/openapi/v2",
        &[("accept", "application/json")],
        None,
    )
    .await;
    assert_eq!(r.body["swagger"], "2.0");
    assert!(r.body["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
}

fn report(node: &str) -> Value {
    json!({
        "node": {"metadata": {"name": node}, "timestamp": "2026-01-10T12:00:00Z", "window": "10s",
                 "usage": {"cpu": "250m", "memory": "512Mi"}},
        "pods": [
            {"metadata": {"name": "web", "namespace": "default"}, "timestamp": "2026-01-10T12:00:00Z",
             "window": "10s", "containers": [{"name": "c", "usage": {"cpu": "12m", "memory": "3Mi"}}]},
            {"metadata": {"name": "db", "namespace": "default"}, "timestamp": "2026-01-10T12:00:00Z",
             "window": "10s", "containers": [{"name": "c", "usage": {"cpu": "30m", "memory": "40Mi"}}]}
        ]
    })
}

#[tokio::test]
async fn usage_reports_feed_metrics_for_kubectl_top() {
    let t = start(None).await;
    let ct = [("content-type", "application/json")];
    let r = request(
        &t,
        Method::POST,
        "/apis/podd.dev/v1/nodes/n1/usage",
        &ct,
        Some(report("n1")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(
        &t,
        Method::POST,
        "/apis/podd.dev/v1/nodes/n1/usage",
        &ct,
        Some(json!({"node": 5})),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);

    let r = request(
        &t,
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/nodes",
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["kind"], "NodeMetricsList");
    assert_eq!(r.body["items"][0]["metadata"]["name"], "n1");
    assert_eq!(r.body["items"][0]["usage"]["cpu"], "250m");
    let r = request(
        &t,
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/nodes/n1",
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["kind"], "NodeMetrics");
    // `kubectl get nodes.metrics.k8s.io` asks for a Table.
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let r = request(
        &t,
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/nodes",
        &[("accept", table)],
        None,
    )
    .await;
    assert_eq!(r.body["kind"], "Table");
    assert_eq!(
        r.body["rows"][0]["cells"],
        json!(["n1", "250m", "512Mi", "10s"])
    );

    let r = request(
        &t,
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["kind"], "PodMetricsList");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = request(
        &t,
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/pods",
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = request(
        &t,
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["containers"][0]["usage"]["memory"], "3Mi");
    let r = request(
        &t,
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["reason"], "NotFound");

    // `kubectl top pod -l app=web`: the pods' own labels select.
    t.client
        .api::<podd_api::Pod>(Some("default"))
        .create(&common::pod("web", &[("app", "web")]))
        .await
        .unwrap();
    let path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb";
    let r = common::eventually(
        std::time::Duration::from_secs(5),
        "the pod in the cache",
        || async {
            let r = request(&t, Method::GET, path, &[], None).await;
            (r.body["items"].as_array().map(Vec::len) == Some(1)).then_some(r)
        },
    )
    .await;
    assert_eq!(r.body["items"][0]["metadata"]["name"], "web");
    assert_eq!(r.body["items"][0]["metadata"]["labels"]["app"], "web");
    let r = request(
        &t,
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app+in+(",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
}

//! Server-side Tables over HTTP, as `kubectl get` asks for them: kube-apiserver's columns
//! per kind, the rows' cells, and what each row carries of its object (`includeObject`).

mod common;

use common::{request, start};
use hyper::Method;
use serde_json::{Value, json};

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

fn column_names(t: &Value) -> Vec<String> {
    t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

async fn create(t: &common::TestPlane, path: &str, body: Value) {
    let r = request(
        t,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 201, "{path}: {}", r.body);
}

#[tokio::test]
async fn kubectl_get_tables() {
    let t = start(None).await;
    create(
        &t,
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}),
    )
    .await;
    let r = request(
        &t,
        Method::GET,
        "/api/v1/namespaces/default/pods",
        &[("accept", TABLE)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["kind"], "Table");
    assert_eq!(
        column_names(&r.body),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    let row = &r.body["rows"][0];
    assert_eq!(row["cells"][0], "web");
    assert_eq!(row["cells"][1], "0/1");
    assert_eq!(row["cells"][2], "Pending");
    assert_eq!(row["cells"][3], "0");
    assert!(
        row["cells"][4].as_str().unwrap().ends_with('s'),
        "{}",
        row["cells"][4]
    );
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["namespace"], "default");
    assert!(
        r.body["metadata"]["resourceVersion"].is_string(),
        "{}",
        r.body["metadata"]
    );

    let r = request(
        &t,
        Method::GET,
        "/api/v1/pods?includeObject=Object",
        &[("accept", TABLE)],
        None,
    )
    .await;
    assert_eq!(r.body["rows"][0]["object"]["kind"], "Pod");
    assert_eq!(
        r.body["rows"][0]["object"]["spec"]["containers"][0]["name"],
        "c"
    );
    let r = request(
        &t,
        Method::GET,
        "/api/v1/namespaces/default/pods/web?includeObject=None",
        &[("accept", TABLE)],
        None,
    )
    .await;
    assert_eq!(r.body["rows"].as_array().unwrap().len(), 1);
    assert!(r.body["rows"][0].get("object").is_none());

    create(
        &t,
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    let r = request(
        &t,
        Method::GET,
        "/api/v1/namespaces/default/services",
        &[("accept", TABLE)],
        None,
    )
    .await;
    assert_eq!(
        column_names(&r.body),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    let cells = &r.body["rows"][0]["cells"];
    assert_eq!(cells[1], "ClusterIP");
    assert!(cells[2].as_str().unwrap().contains('.'), "{cells}");
    assert_eq!(cells[3], "<none>");
    assert_eq!(cells[4], "80/TCP");
    assert_eq!(cells[6], "app=web");
    assert_eq!(r.body["columnDefinitions"][6]["priority"], 1);

    create(
        &t,
        "/apis/apps/v1/namespaces/default/deployments",
        serde_json::to_value(common::deployment("web", 2)).unwrap(),
    )
    .await;
    let r = request(
        &t,
        Method::GET,
        "/apis/apps/v1/namespaces/default/deployments",
        &[("accept", TABLE)],
        None,
    )
    .await;
    assert_eq!(
        column_names(&r.body),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let cells = &r.body["rows"][0]["cells"];
    assert_eq!(cells[1], "0/2");
    assert_eq!(cells[5], "c");
    assert_eq!(cells[6], "busybox:1");
    assert_eq!(cells[7], "app=web");

    create(
        &t,
        "/api/v1/nodes",
        serde_json::to_value(common::node("n1")).unwrap(),
    )
    .await;
    let r = request(&t, Method::GET, "/api/v1/nodes", &[("accept", TABLE)], None).await;
    assert_eq!(
        column_names(&r.body)[..5],
        ["Name", "Status", "Roles", "Age", "Version"]
    );
    assert_eq!(r.body["rows"][0]["cells"][1], "Unknown");
    assert_eq!(r.body["rows"][0]["cells"][2], "<none>");
}

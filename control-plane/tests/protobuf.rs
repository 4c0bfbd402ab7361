//! Protobuf responses over the wire, with a raw HTTP client: what kubectl's typed clients
//! ask (`Accept: application/vnd.kubernetes.protobuf, application/json`) gets Kubernetes'
//! protobuf for objects, lists, writes, deletes, Status errors and watch streams; Tables and
//! what has no protobuf form stay JSON; bodies that are not what their Content-Type says get a
//! clear 400 or 415.

mod common;

use bytes::Bytes;
use common::{TestPlane, start};
use http_body_util::{BodyExt, Full};
use hyper::Method;
use podd_api::protobuf;
use serde_json::{Value, json};
use std::time::Duration;

const PB: &str = "application/vnd.kubernetes.protobuf";
const KUBECTL_ACCEPT: &str = "application/vnd.kubernetes.protobuf,application/json";

struct Raw {
    status: u16,
    content_type: String,
    body: Bytes,
}

async fn raw(
    t: &TestPlane,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Raw {
    raw_at(
        &t.plane.socket.clone().unwrap(),
        method,
        path,
        headers,
        body,
    )
    .await
}

/// [`raw`] on a socket path (a TestPlane is not Sync, so a task cannot borrow it).
async fn raw_at(
    socket: &std::path::Path,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Raw {
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Raw {
        status,
        content_type,
        body,
    }
}

fn pb(r: &Raw) -> Value {
    assert_eq!(r.content_type, PB, "status {}: {:?}", r.status, r.body);
    assert!(r.body.starts_with(protobuf::MAGIC));
    protobuf::decode(&r.body).unwrap()
}

fn json_of(r: &Raw) -> Value {
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    serde_json::from_slice(&r.body).unwrap()
}

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"port": 8080, "path": "/"}},
                    "resources": {"requests": {"cpu": "100m"}}}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_lists_writes_and_errors_answer_in_protobuf() {
    let t = start(None).await;
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let accept = [("accept", KUBECTL_ACCEPT), ("content-type", PB)];

    // Create, in protobuf both ways.
    let body = protobuf::encode(&deployment()).unwrap();
    let r = raw(&t, Method::POST, deps, &accept, body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let created = pb(&r);
    assert_eq!(created["kind"], "Deployment");
    assert_eq!(created["apiVersion"], "apps/v1");
    assert_eq!(created["spec"]["replicas"], 0);
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        8080
    );
    assert!(
        created["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );

    // Get: the same object as the JSON answer, field for field.
    let path = format!("{deps}/web");
    let as_pb = pb(&raw(
        &t,
        Method::GET,
        &path,
        &[("accept", KUBECTL_ACCEPT)],
        vec![],
    )
    .await);
    let as_json = json_of(
        &raw(
            &t,
            Method::GET,
            &path,
            &[("accept", "application/json")],
            vec![],
        )
        .await,
    );
    let typed = |v: Value| serde_json::from_value::<podd_api::Deployment>(v).unwrap();
    assert_eq!(typed(as_pb.clone()), typed(as_json.clone()));
    // Protobuf only (no JSON accepted) works too.
    let only = raw(&t, Method::GET, &path, &[("accept", PB)], vec![]).await;
    assert_eq!(pb(&only)["metadata"]["name"], "web");

    // List.
    let list = pb(&raw(&t, Method::GET, deps, &[("accept", KUBECTL_ACCEPT)], vec![]).await);
    assert_eq!(list["kind"], "DeploymentList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["metadata"]["resourceVersion"].as_str().is_some());

    // Update (protobuf body) and patch (JSON patch body), answered in protobuf.
    let mut d = as_json.clone();
    d["spec"]["replicas"] = json!(0);
    d["metadata"]["labels"]["tier"] = json!("front");
    let r = raw(
        &t,
        Method::PUT,
        &path,
        &accept,
        protobuf::encode(&d).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(pb(&r)["metadata"]["labels"]["tier"], "front");
    let r = raw(
        &t,
        Method::PATCH,
        &path,
        &[
            ("accept", KUBECTL_ACCEPT),
            ("content-type", "application/merge-patch+json"),
        ],
        br#"{"metadata":{"annotations":{"a":"b"}}}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(pb(&r)["metadata"]["annotations"]["a"], "b");

    // A Status error, in protobuf.
    let r = raw(
        &t,
        Method::GET,
        &format!("{deps}/nope"),
        &[("accept", KUBECTL_ACCEPT)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 404);
    let st = pb(&r);
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "NotFound");
    assert_eq!(st["code"], 404);

    // What kubectl get asks (a Table) stays JSON; so does what has no protobuf form.
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    assert_eq!(
        json_of(&raw(&t, Method::GET, deps, &[("accept", table)], vec![]).await)["kind"],
        "Table"
    );
    let v = raw(
        &t,
        Method::GET,
        "/version",
        &[("accept", KUBECTL_ACCEPT)],
        vec![],
    )
    .await;
    assert_eq!(json_of(&v)["major"], "1");
    let v = raw(&t, Method::GET, "/version", &[("accept", PB)], vec![]).await;
    assert_eq!(v.status, 406, "{:?}", v.body);
    let v = raw(
        &t,
        Method::GET,
        deps,
        &[("accept", "application/yaml")],
        vec![],
    )
    .await;
    assert_eq!(v.status, 406, "{:?}", v.body);

    // Bodies that are not what their Content-Type says.
    let json_body = serde_json::to_vec(&deployment()).unwrap();
    let r = raw(&t, Method::POST, deps, &accept, json_body.clone()).await;
    assert_eq!(r.status, 400);
    let st = pb(&r);
    assert!(
        st["message"].as_str().unwrap().contains("looks like JSON"),
        "{st}"
    );
    let r = raw(
        &t,
        Method::POST,
        deps,
        &[("content-type", "application/json")],
        protobuf::encode(&deployment()).unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        json_of(&r)["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type")
    );
    let r = raw(
        &t,
        Method::POST,
        deps,
        &[("content-type", "text/plain")],
        json_body,
    )
    .await;
    assert_eq!(r.status, 415);

    // Delete with a protobuf DeleteOptions body (client-go's typed clients send one).
    let opts = protobuf::encode(&json!({"apiVersion": "v1", "kind": "DeleteOptions",
        "propagationPolicy": "Background"}))
    .unwrap();
    let r = raw(&t, Method::DELETE, &path, &accept, opts).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let gone = pb(&r);
    assert!(
        gone["kind"] == "Deployment" || gone["kind"] == "Status",
        "{gone}"
    );
}

/// Splits a protobuf watch stream into (type, object) events.
fn frames(mut b: &[u8]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        out.push(protobuf::decode_watch_event(&b[4..4 + len]).unwrap());
        b = &b[4 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_stream_length_prefixed_protobuf_events() {
    let t = start(None).await;
    let cms = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let mk = |n: &str| {
        protobuf::encode(
            &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": n}, "spec": {"holderIdentity": "v", "leaseDurationSeconds": 15}}),
        )
        .unwrap()
    };
    let ct = [("content-type", PB)];
    let r = raw(&t, Method::POST, cms, &ct, mk("before")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let w = {
        let socket = t.plane.socket.clone().unwrap();
        tokio::spawn(async move {
            raw_at(
                &socket,
                Method::GET,
                &format!("{cms}?watch=true&timeoutSeconds=3&allowWatchBookmarks=false"),
                &[("accept", KUBECTL_ACCEPT)],
                vec![],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        raw(&t, Method::POST, cms, &ct, mk("after")).await.status,
        201
    );
    let r = raw(&t, Method::DELETE, &format!("{cms}/before"), &[], vec![]).await;
    assert_eq!(r.status, 200);
    let r = w.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, protobuf::WATCH_CONTENT_TYPE);
    let evs: Vec<(String, String)> = frames(&r.body)
        .into_iter()
        .map(|(ty, o)| {
            assert_eq!(o["kind"], "Lease");
            assert_eq!(o["spec"]["holderIdentity"], "v");
            assert_eq!(o["spec"]["leaseDurationSeconds"], 15);
            (ty, o["metadata"]["name"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        evs,
        [
            ("ADDED".to_string(), "before".to_string()),
            ("ADDED".into(), "after".into()),
            ("DELETED".into(), "before".into()),
        ]
    );

    // An expired watch's error is a Status in protobuf too (410 before the stream starts).
    let r = raw(
        &t,
        Method::GET,
        &format!("{cms}?watch=true&resourceVersion=abc"),
        &[("accept", KUBECTL_ACCEPT)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(pb(&r)["kind"], "Status");

    // A JSON watch is unchanged.
    let r = raw(
        &t,
        Method::GET,
        &format!("{cms}?watch=true&timeoutSeconds=1"),
        &[("accept", "application/json")],
        vec![],
    )
    .await;
    assert!(r.content_type.starts_with("application/json"));
    let first: Value =
        serde_json::from_slice(r.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["type"], "ADDED");
}

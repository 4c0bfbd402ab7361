//! Class 6, objects: oversized requests and objects against the API server.
//!
//! Before the fix a pod with 100,000 containers was accepted (the server grew by 700 MB and
//! kept it after the delete) and a node token wrote 300,000 labels. Kubernetes' limits now
//! hold: 3 MiB request bodies (413), 1.5 MiB stored objects (413), label keys and values as
//! Kubernetes validates them, 256 KiB of annotations, and podd's cap of 100 containers per pod
//! (422 Invalid with every cause).

use hyper::Method;
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

const ADMIN: &str = "admin-token-for-the-oversized-tests";
const PODS: &str = "/api/v1/namespaces/default/pods";

struct Plane {
    plane: ControlPlane,
    admin: podd_client::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Plane {
    let dir = tempfile::Builder::new()
        .prefix("podd-sec-oversized-")
        .tempdir()
        .unwrap();
    let cfg = ControlPlaneConfig {
        data_dir: None,
        socket: Some(dir.path().join("api.sock")),
        tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        admin_token: Some(ADMIN.into()),
        controllers: None,
        ..ControlPlaneConfig::default()
    };
    let store: Arc<dyn podd_store::Store> = Arc::new(podd_store::MemStore::new());
    let plane = ControlPlane::start(store, cfg)
        .await
        .expect("start a control plane on loopback");
    let admin = plane.admin_tls_client().unwrap();
    Plane {
        plane,
        admin,
        _dir: dir,
    }
}

/// Sends `body` and returns (HTTP status, the Status object answered).
async fn send(c: &podd_client::Client, method: Method, path: &str, body: &Value) -> (u16, Value) {
    let ct = if method == Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let r = c
        .raw(method, path, Some(serde_json::to_vec(body).unwrap()), ct)
        .await
        .expect("the server answers");
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status.as_u16(), v)
}

fn causes(st: &Value) -> Vec<String> {
    st["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| format!("{}: {}", c["field"].as_str().unwrap_or(""), c["message"]))
                .collect()
        })
        .unwrap_or_default()
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_object_limits_are_kubernetes_values() {
    assert_eq!(podd_control_plane::http::MAX_BODY, 3 * 1024 * 1024);
    assert_eq!(
        podd_control_plane::registry::MAX_OBJECT_BYTES,
        3 * 1024 * 1024 / 2
    );
    assert_eq!(podd_api::validation::MAX_ANNOTATIONS_BYTES, 256 * 1024);
    assert_eq!(podd_api::validation::MAX_CONTAINERS, 100);
}

/// A body over 3 MiB is refused with 413, and a declared length over it before any byte of
/// the body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_3_mib_is_refused_with_413() {
    let p = start().await;
    let pod = json!({"metadata": {"name": "fat", "annotations": {"a": "x".repeat(3 << 20)}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    // The server answers 413 at once and reads what is still coming (bounded), so a client
    // still sending sees the answer, not a connection reset.
    let r = p
        .admin
        .raw(
            Method::POST,
            PODS,
            Some(serde_json::to_vec(&pod).unwrap()),
            "application/json",
        )
        .await
        .expect("the client got no answer to its 3 MiB+ body");
    let st: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(
        r.status.as_u16(),
        413,
        "a 3 MiB+ body was not refused at the edge: {st}"
    );
    assert_eq!(st["reason"], "RequestEntityTooLarge", "{st}");

    // Announce 4 GiB and send nothing: the answer must come at once, without waiting.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut u = tokio::net::UnixStream::connect(p.plane.socket.as_ref().unwrap())
        .await
        .unwrap();
    u.write_all(
        format!("POST {PODS} HTTP/1.1\r\nHost: podd\r\nContent-Type: application/json\r\nContent-Length: 4294967296\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), u.read(&mut buf))
        .await
        .expect("a 4 GiB Content-Length was not refused before its body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let (code, _) = send(&p.admin, Method::GET, &format!("{PODS}/fat"), &Value::Null).await;
    assert_eq!(code, 404, "the oversized pod was stored");
    p.plane.shutdown().await;
}

/// 100,000 containers fit in a 3 MiB body; they are refused before the pod is decoded, and
/// the server does not grow by hundreds of MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_100000_containers_is_refused() {
    let p = start().await;
    let containers: Vec<Value> = (0..100_000)
        .map(|i| json!({"name": format!("c{i}"), "image": "x"}))
        .collect();
    let pod = json!({"metadata": {"name": "many"}, "spec": {"containers": containers}});
    let body_len = serde_json::to_vec(&pod).unwrap().len();
    assert!(
        body_len < 3 << 20,
        "the attack must pass the body limit ({body_len})"
    );
    let before = vm_rss_kib();
    let (code, st) = send(&p.admin, Method::POST, PODS, &pod).await;
    let after = vm_rss_kib();
    println!(
        "100,000 containers ({body_len} bytes): {code}, RSS {} -> {} MiB",
        before / 1024,
        after / 1024
    );
    assert_eq!(
        code, 422,
        "a pod with 100,000 containers was accepted: {st}"
    );
    assert_eq!(st["reason"], "Invalid");
    let c = causes(&st);
    assert!(
        c.iter()
            .any(|c| c.starts_with("spec.containers: ") && c.contains("at most 100")),
        "{c:?}"
    );
    // The whole test process, client side included; before the fix the server alone grew
    // by about 700 MB.
    assert!(
        after.saturating_sub(before) < 400 * 1024,
        "RSS grew by {} MiB refusing one pod",
        after.saturating_sub(before) / 1024
    );
    let (code, _) = send(&p.admin, Method::GET, &format!("{PODS}/many"), &Value::Null).await;
    assert_eq!(code, 404, "the pod was stored");

    // A Deployment's template is held to the same cap, and so is an update.
    let ok =
        json!({"metadata": {"name": "few"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let (code, st) = send(&p.admin, Method::POST, PODS, &ok).await;
    assert_eq!(code, 201, "{st}");
    let grow: Vec<Value> = (0..101)
        .map(|i| json!({"name": format!("c{i}"), "image": "x"}))
        .collect();
    let (code, st) = send(
        &p.admin,
        Method::PATCH,
        &format!("{PODS}/few"),
        &json!({"spec": {"containers": grow}}),
    )
    .await;
    assert_eq!(code, 422, "a patch to 101 containers was accepted: {st}");
    p.plane.shutdown().await;
}

/// A 64-character label value, a bad label key and 300 KiB of annotations: one 422 Invalid
/// that names every problem with its field path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_labels_and_annotations_are_invalid_with_every_cause() {
    let p = start().await;
    let pod = json!({
        "metadata": {
            "name": "labelled",
            "labels": {
                "long": "v".repeat(64),
                "Bad Key!": "x",
                format!("{}/name", "p".repeat(254)): "x",
                "ok": "v".repeat(63),
            },
            "annotations": {"blob": "a".repeat(300 << 10)},
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    });
    let (code, st) = send(&p.admin, Method::POST, PODS, &pod).await;
    assert_eq!(code, 422, "{st}");
    assert_eq!(st["reason"], "Invalid");
    let c = causes(&st);
    println!("{c:#?}");
    // Kubernetes' form: `metadata.labels: Invalid value: "<the bad key or value>": why`.
    for (field, names) in [
        ("metadata.labels: ", "v".repeat(64)),
        ("metadata.labels: ", "Bad Key!".to_string()),
        ("metadata.labels: ", format!("{}/name", "p".repeat(254))),
        ("metadata.annotations: ", String::new()),
    ] {
        assert!(
            c.iter()
                .any(|c| c.starts_with(field) && c.contains(names.as_str())),
            "no cause {field:?} naming {names:?}: every problem must be reported at once\n{c:#?}"
        );
    }
    assert_eq!(c.len(), 4, "{c:#?}");
    p.plane.shutdown().await;
}

/// A node token writing 300,000 labels on its Node is refused at the edge (the body is over
/// 3 MiB), and labels added a batch at a time stop at the 1.5 MiB object limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_thousand_labels_are_refused() {
    let p = start().await;
    let node = json!({"metadata": {"name": "n1"}});
    let (code, st) = send(&p.admin, Method::POST, "/api/v1/nodes", &node).await;
    assert_eq!(code, 201, "{st}");
    let token = p.plane.auth.issue_node_token("n1").unwrap();
    let addr = format!("127.0.0.1:{}", p.plane.tls_addr.unwrap().port());
    let as_node = podd_client::Client::tls(&addr, &p.plane.ca_pem, &token).unwrap();
    let labels = |from: usize, n: usize| -> Value {
        let m: serde_json::Map<String, Value> = (from..from + n)
            .map(|i| (format!("l{i:07}"), Value::String(String::new())))
            .collect();
        json!({"metadata": {"labels": m}})
    };
    let r = as_node
        .raw(
            Method::PATCH,
            "/api/v1/nodes/n1",
            Some(serde_json::to_vec(&labels(0, 300_000)).unwrap()),
            "application/merge-patch+json",
        )
        .await;
    // 413 without reading the body; the client may see a reset while still sending it.
    if let Ok(r) = r {
        assert_eq!(
            r.status.as_u16(),
            413,
            "300,000 labels in one write were not refused: {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let (_, n) = send(&p.admin, Method::GET, "/api/v1/nodes/n1", &Value::Null).await;
    assert!(
        n["metadata"]["labels"]
            .as_object()
            .is_none_or(|l| l.is_empty()),
        "the node token's 300,000 labels were stored"
    );

    // The same labels a batch at a time, by whoever may write them: the stored object stops
    // growing at 1.5 MiB.
    let mut refused = None;
    for batch in 0..8 {
        let (code, st) = send(
            &p.admin,
            Method::PATCH,
            "/api/v1/nodes/n1",
            &labels(batch * 40_000, 40_000),
        )
        .await;
        if code != 200 {
            refused = Some((code, st));
            break;
        }
    }
    let (code, st) = refused.expect("300,000 labels were stored 40,000 at a time");
    assert_eq!(code, 413, "{st}");
    assert_eq!(st["reason"], "RequestEntityTooLarge", "{st}");
    let (_, n) = send(&p.admin, Method::GET, "/api/v1/nodes/n1", &Value::Null).await;
    let stored = serde_json::to_vec(&n).unwrap().len();
    assert!(
        stored <= 3 << 19,
        "the stored node is {stored} bytes, over the 1.5 MiB limit"
    );
    p.plane.shutdown().await;
}

//! `cargo xtask bench api`: the API as kubectl and controllers use it, over the server's Unix
//! socket, each figure beside a baseline measured in the same run:
//! - listing 10,000 pods as JSON and as a Table (what `kubectl get pods` asks for): p50/p99
//!   of whole requests, against encoding the same 10,000 typed pods with serde_json in
//!   process (the floor any server pays), and against the goal p99 <= 100 ms;
//! - a watch fan-out: 1,000 pod writes seen by 100 watchers, against the same writes seen by
//!   one watcher;
//! - applying a 100-object manifest (50 Deployments and 50 Services) over HTTP, against the
//!   same 100 creates through the registry in process.
//!
//! Environment: PODD_BENCH_PODS (default 10000), PODD_BENCH_WATCHERS (100),
//! PODD_BENCH_LIST_ROUNDS (30).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use podd_api::{Container, Deployment, ObjectMeta, Pod, PodSpec, Service};
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(i: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("p{i:05}")),
            namespace: Some("default".into()),
            labels: Some([("app".to_string(), format!("a{}", i % 50))].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("node-{}", i % 100)),
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox:1.36".into()),
                command: Some(vec!["sleep".into(), "3600".into()]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// One HTTP/1.1 request over the server's socket; returns the status and the body's length.
async fn request(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    accept: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, usize) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to the API socket");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("accept", accept)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body.len())
}

/// The `q` quantile of `samples`, in milliseconds.
fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
    samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn report(name: &str, samples: &mut [Duration], baseline: &mut [Duration]) {
    let p = quantile_ms;
    let (p50, p99) = (p(samples, 0.5), p(samples, 0.99));
    let (b50, b99) = (p(baseline, 0.5), p(baseline, 0.99));
    println!(
        "{name:<28} p50 {p50:>8.2} ms  p99 {p99:>8.2} ms | baseline p50 {b50:>8.2} ms  p99 {b99:>8.2} ms | ratio p99 {:>6.2} | p99 / goal (100 ms) {:>5.2}",
        p99 / b99.max(1e-6),
        p99 / 100.0
    );
}

async fn list_bench(cp: &ControlPlane, pods: &[Pod]) {
    let socket = cp.socket.clone().expect("the bench server has a socket");
    let rounds = env_usize("PODD_BENCH_LIST_ROUNDS", 30);
    let mut baseline = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "items": pods});
        let bytes = serde_json::to_vec(&list).expect("encode");
        std::hint::black_box(bytes);
        baseline.push(t.elapsed());
    }
    for (name, accept) in [
        ("list pods (JSON)", "application/json"),
        ("list pods (Table)", TABLE_ACCEPT),
    ] {
        let mut samples = Vec::new();
        let mut size = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            let (status, len) =
                request(&socket, "GET", "/api/v1/pods", accept, "", Vec::new()).await;
            samples.push(t.elapsed());
            assert_eq!(status, 200, "{name} answered {status}");
            size = len;
        }
        report(name, &mut samples, &mut baseline.clone());
        println!(
            "{:<28} {} pods, {} KiB per answer",
            "",
            pods.len(),
            size / 1024
        );
    }
}

/// The time from the first write until every watcher has seen all `writes` events.
async fn fan_out(cp: &ControlPlane, watchers: usize, writes: usize, round: usize) -> Duration {
    let socket = cp.socket.clone().expect("socket");
    let rv = cp.registry.store().revision().await.expect("revision");
    let mut handles = Vec::new();
    for _ in 0..watchers {
        let socket = socket.clone();
        let path = format!(
            "/api/v1/namespaces/w{round}/pods?watch=1&resourceVersion={rv}&timeoutSeconds=300"
        );
        handles.push(tokio::spawn(async move {
            let stream = tokio::net::UnixStream::connect(&socket)
                .await
                .expect("connect");
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let req = Request::builder()
                .uri(path)
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let mut body = send.send_request(req).await.expect("watch").into_body();
            let mut lines = 0;
            while lines < writes {
                match body.frame().await {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            lines += d.iter().filter(|b| **b == b'\n').count();
                        }
                    }
                    _ => break,
                }
            }
            (Instant::now(), lines)
        }));
    }
    // Let every watch register before the writes start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    for i in 0..writes {
        let mut p = pod(i);
        p.metadata.namespace = Some(format!("w{round}"));
        cp.registry.create_obj(&p).await.expect("create");
    }
    let mut last = start;
    for h in handles {
        let (at, lines) = h.await.expect("watcher");
        assert!(lines >= writes, "a watcher saw {lines} of {writes} events");
        last = last.max(at);
    }
    last - start
}

fn manifest(i: usize) -> (Deployment, Service) {
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_string(), format!("m{i}"))].into();
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("m{i}"), "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "web", "image": "busybox-httpd:1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}
                }]}
            }
        }
    }))
    .expect("deployment");
    let s: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("m{i}")},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]}
    }))
    .expect("service");
    (d, s)
}

async fn apply_bench(cp: &ControlPlane) {
    let socket = cp.socket.clone().expect("socket");
    let t = Instant::now();
    for i in 0..50 {
        let (mut d, mut s) = manifest(i);
        d.metadata.namespace = Some("base".into());
        s.metadata.namespace = Some("base".into());
        cp.registry.create_obj(&d).await.expect("deployment");
        cp.registry.create_obj(&s).await.expect("service");
    }
    let baseline = t.elapsed();
    let t = Instant::now();
    for i in 0..50 {
        let (d, s) = manifest(i);
        for (path, body) in [
            (
                format!(
                    "/apis/apps/v1/namespaces/http/deployments/m{i}?fieldManager=kubectl&force=true"
                ),
                serde_json::to_vec(&d).expect("json"),
            ),
            (
                format!("/api/v1/namespaces/http/services/m{i}?fieldManager=kubectl&force=true"),
                serde_json::to_vec(&s).expect("json"),
            ),
        ] {
            let (status, _) = request(
                &socket,
                "PATCH",
                &path,
                "application/json",
                "application/apply-patch+yaml",
                body,
            )
            .await;
            assert!(
                status == 200 || status == 201,
                "apply answered {status} on {path}"
            );
        }
    }
    let applied = t.elapsed();
    println!(
        "{:<28} {:>8.1} ms | baseline (registry creates) {:>8.1} ms | ratio {:>6.2}",
        "apply 100 objects (SSA)",
        applied.as_secs_f64() * 1000.0,
        baseline.as_secs_f64() * 1000.0,
        applied.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn podd_store::Store> = Arc::new(podd_store::MemStore::default());
        let config = ControlPlaneConfig {
            socket: Some(dir.path().join("api.sock")),
            tls_addr: None,
            controllers: None,
            ..Default::default()
        };
        let cp = ControlPlane::start(store, config).await.expect("start");
        let n = env_usize("PODD_BENCH_PODS", 10_000);
        let pods: Vec<Pod> = (0..n).map(pod).collect();
        for p in &pods {
            cp.registry.create_obj(p).await.expect("create pod");
        }
        // The watch cache follows the store a moment behind the last create.
        let mut stored: Vec<Pod> = cp.registry.cached(None);
        while stored.len() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stored = cp.registry.cached(None);
        }
        println!("== api: {} pods ==", stored.len());
        list_bench(&cp, &stored).await;
        let watchers = env_usize("PODD_BENCH_WATCHERS", 100);
        let one = fan_out(&cp, 1, 1000, 0).await;
        let many = fan_out(&cp, watchers, 1000, 1).await;
        println!(
            "{:<28} {:>8.1} ms | baseline (1 watcher) {:>8.1} ms | ratio {:>6.2}",
            format!("watch fan-out x{watchers}"),
            many.as_secs_f64() * 1000.0,
            one.as_secs_f64() * 1000.0,
            many.as_secs_f64() / one.as_secs_f64().max(1e-9)
        );
        apply_bench(&cp).await;
        cp.shutdown().await;
    });
}

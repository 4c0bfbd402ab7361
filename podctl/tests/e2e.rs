//! podctl end to end against a running control plane (in-memory store) with three hollow
//! nodes: run, get, expose, scale, apply, autoscale, rollout status, delete, and the errors.

use podd_control_plane::controllers::ControllerConfig;
use podd_control_plane::hollow::{HollowConfig, HollowFleet};
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use podd_store::{MemStore, Store};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Cluster {
    _dir: tempfile::TempDir,
    socket: String,
    plane: Option<ControlPlane>,
    fleet: Option<HollowFleet>,
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("podd.sock");
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let cfg = ControlPlaneConfig {
        data_dir: None,
        socket: Some(socket.clone()),
        tls_addr: None,
        admin_token: Some("t".into()),
        controllers: Some(ControllerConfig {
            resync: Duration::from_secs(2),
            node_grace: Duration::from_secs(2),
            node_monitor_period: Duration::from_millis(100),
            hpa_period: Duration::from_millis(200),
            ..ControllerConfig::default()
        }),
        ..ControlPlaneConfig::default()
    };
    let plane = ControlPlane::start(store, cfg).await.unwrap();
    let names: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    let fleet = HollowFleet::start(
        podd_client::Client::unix(&socket),
        &names,
        HollowConfig::default(),
    )
    .await
    .unwrap();
    Cluster {
        socket: format!("unix://{}", socket.display()),
        _dir: dir,
        plane: Some(plane),
        fleet: Some(fleet),
    }
}

impl Cluster {
    /// Runs podctl; returns (exit code, stdout, stderr).
    async fn podctl(&self, args: &[&str]) -> (i32, String, String) {
        let socket = self.socket.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_podctl"))
                .arg("--server")
                .arg(&socket)
                .args(&args)
                .env("HOME", "/nonexistent")
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.podctl(args).await;
        assert_eq!(code, 0, "podctl {args:?} failed: {err}{out}");
        out
    }

    /// Polls `podctl args` until `f` accepts its output.
    async fn until(&self, args: &[&str], what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.ok(args).await;
            if f(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last output:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shutdown(mut self) {
        if let Some(f) = self.fleet.take() {
            f.shutdown().await;
        }
        if let Some(p) = self.plane.take() {
            p.shutdown().await;
        }
    }
}

fn running_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|c| c.get(2).map(String::as_str) == Some("Running"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_expose_scale_and_delete() {
    let c = cluster().await;
    let out = c
        .ok(&[
            "run",
            "web",
            "--image",
            "busybox-httpd",
            "--replicas",
            "3",
            "--port",
            "8080",
            "--cpu",
            "100m",
            "--memory",
            "32Mi",
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web created");

    let wide = c
        .until(&["get", "pods", "-o", "wide"], "3 running pods", |o| {
            running_rows(o).len() == 3
        })
        .await;
    assert!(wide.starts_with("NAME"), "{wide}");
    let mut nodes: Vec<String> = running_rows(&wide).iter().map(|r| r[6].clone()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        nodes.len(),
        3,
        "replicas spread over the three nodes:\n{wide}"
    );

    let out = c
        .ok(&["expose", "web", "--port", "80", "--target-port", "8080"])
        .await;
    assert!(
        out.contains("web.default.svc.cluster.local") && out.contains("10."),
        "{out}"
    );
    let svc = c.ok(&["get", "services"]).await;
    assert!(svc.contains("80/TCP"), "{svc}");
    c.until(&["get", "endpoints", "web"], "3 endpoints", |o| {
        o.matches(":8080").count() == 3
    })
    .await;

    c.ok(&["scale", "web", "--replicas", "5"]).await;
    c.until(&["get", "deployments"], "5 ready replicas", |o| {
        o.contains("5/5")
    })
    .await;
    let out = c
        .ok(&["rollout", "status", "web", "--timeout-seconds", "20"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");

    let json = c.ok(&["get", "pods", "-l", "app=web", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 5);
    let yaml = c.ok(&["get", "deployment", "web", "-o", "yaml"]).await;
    assert!(yaml.contains("replicas: 5"), "{yaml}");

    let out = c
        .ok(&[
            "autoscale",
            "web",
            "--min",
            "2",
            "--max",
            "6",
            "--cpu-percent",
            "50",
        ])
        .await;
    assert!(out.contains("autoscaled"), "{out}");
    let hpa = c.ok(&["get", "hpa"]).await;
    assert!(
        hpa.contains("Deployment/web") && hpa.contains("/50%"),
        "{hpa}"
    );

    let described = c.ok(&["describe", "deployment", "web"]).await;
    assert!(
        described.contains("Pods:") && described.contains("Running"),
        "{described}"
    );
    let nodes = c.ok(&["get", "nodes"]).await;
    assert_eq!(nodes.matches("Ready").count(), 3, "{nodes}");

    let out = c.ok(&["delete", "deployment", "web"]).await;
    assert_eq!(out.trim(), "deployment/web deleted");
    c.until(
        &["get", "pods", "-l", "app=web", "-o", "json"],
        "the pods to go with it",
        |o| {
            serde_json::from_str::<serde_json::Value>(o).unwrap()["items"]
                .as_array()
                .unwrap()
                .is_empty()
        },
    )
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_manifests_and_errors() {
    let c = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    let manifest = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: api}}\n  template:\n    metadata:\n      labels: {{app: api}}\n    spec:\n      containers:\n      - name: api\n        image: busybox\n        command: [sleep, '1000']\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  selector: {{app: api}}\n  ports:\n  - port: 8080\n"
        )
    };
    std::fs::write(&file, manifest(2)).unwrap();
    let f = file.to_str().unwrap();
    let out = c.ok(&["apply", "-f", f]).await;
    assert_eq!(out, "deployment/api created\nservice/api created\n");
    c.until(&["get", "pods"], "2 pods", |o| running_rows(o).len() == 2)
        .await;
    let out = c.ok(&["apply", "-f", f]).await;
    assert!(
        out.contains("deployment/api unchanged") && out.contains("service/api unchanged"),
        "{out}"
    );
    std::fs::write(&file, manifest(4)).unwrap();
    let out = c.ok(&["apply", "-f", f]).await;
    assert!(out.contains("deployment/api configured"), "{out}");
    c.until(&["get", "pods"], "4 pods", |o| running_rows(o).len() == 4)
        .await;

    // Errors name the object and the fix, and exit non-zero.
    let (code, _, err) = c.podctl(&["scale", "nope", "--replicas", "2"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("\"nope\" not found") && err.contains("podctl get deployments"),
        "{err}"
    );
    let (code, _, err) = c.podctl(&["get", "widgets"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown resource type"), "{err}");
    let (code, _, err) = c.podctl(&["run", "api", "--image", "busybox"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = c.podctl(&["run", "Bad_Name", "--image", "busybox"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("metadata.name"),
        "validation names the field: {err}"
    );
    std::fs::write(
        &file,
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: j}\n",
    )
    .unwrap();
    let (code, _, err) = c.podctl(&["apply", "-f", f]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not supported"), "{err}");
    let (code, _, err) = Cluster {
        socket: "unix:///nonexistent/podd.sock".into(),
        _dir: tempfile::tempdir().unwrap(),
        plane: None,
        fleet: None,
    }
    .podctl(&["get", "pods"])
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/podd.sock"),
        "a connection error names the server: {err}"
    );
    let (code, out, _) = c.podctl(&["completion", "bash"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("podctl"));
    let _ = Path::new(f);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_apply_get_and_delete() {
    let c = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("team.yaml");
    // The namespace first, then what goes into it, in one file.
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: team\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n      - name: api\n        image: busybox\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, _, err) = c
        .podctl(&["run", "web", "--image", "busybox", "-n", "nope"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("namespaces \"nope\" not found"), "{err}");
    let out = c.ok(&["apply", "-f", f]).await;
    assert_eq!(out, "namespace/team created\ndeployment/api created\n");
    let out = c.ok(&["get", "namespaces"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "AGE"], "{out}");
    for name in [
        "default",
        "kube-node-lease",
        "kube-public",
        "kube-system",
        "team",
    ] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().take(2).eq([name, "Active"])),
            "{name} Active in:\n{out}"
        );
    }
    c.until(&["get", "pods", "-n", "team"], "2 pods", |o| {
        running_rows(o).len() == 2
    })
    .await;
    // Deleting it stops its pods on the (hollow) nodes, then it goes.
    c.ok(&["delete", "namespace", "team"]).await;
    c.until(&["get", "namespaces"], "team gone", |o| {
        !o.lines().any(|l| l.starts_with("team "))
    })
    .await;
    let out = c.ok(&["get", "pods", "-n", "team", "-o", "name"]).await;
    assert!(out.trim().is_empty(), "{out}");
    let (code, _, err) = c.podctl(&["delete", "namespace", "default"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("may not be deleted"), "{err}");
    c.shutdown().await;
}

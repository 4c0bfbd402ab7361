//! A control plane on loopback TLS with two hollow nodes, an admin kubeconfig for it, and
//! helpers that run kubectl against it.

use kube::config::{
    AuthInfo, Cluster as ClusterConfig, Context, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use podd_control_plane::controllers::ControllerConfig;
use podd_control_plane::hollow::{HollowConfig, HollowFleet};
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use podd_store::{MemStore, Store};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "kubectl-suite-admin-token";

/// One cluster per test: tests run in parallel and share nothing.
pub struct Cluster {
    rt: tokio::runtime::Runtime,
    plane: Option<ControlPlane>,
    fleet: Option<HollowFleet>,
    /// Hollow nodes that joined later ([`Cluster::add_node`]).
    joined: Vec<HollowFleet>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// What one kubectl run printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn kubectl_path() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into())
}

impl Cluster {
    pub fn start() -> Cluster {
        assert!(
            Path::new(&kubectl_path()).exists(),
            "kubectl not found at {} (set KUBECTL)",
            kubectl_path()
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = tempfile::Builder::new()
            .prefix("podd-kubectl-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("podd.sock");
        let (plane, fleet) = rt.block_on(async {
            let store: Arc<dyn Store> = Arc::new(MemStore::new());
            let cfg = ControlPlaneConfig {
                data_dir: None,
                socket: Some(socket.clone()),
                tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                admin_token: Some(ADMIN_TOKEN.into()),
                controllers: Some(ControllerConfig {
                    resync: Duration::from_secs(2),
                    node_grace: Duration::from_secs(5),
                    node_monitor_period: Duration::from_millis(200),
                    hpa_period: Duration::from_millis(500),
                    ..ControllerConfig::default()
                }),
                ..ControlPlaneConfig::default()
            };
            let plane = ControlPlane::start(store, cfg)
                .await
                .expect("start the control plane");
            let names = ["node-1".to_string(), "node-2".to_string()];
            let fleet = HollowFleet::start(
                podd_client::Client::unix(&socket),
                &names,
                HollowConfig {
                    usage_period: Some(Duration::from_secs(1)),
                    ..HollowConfig::default()
                },
            )
            .await
            .expect("start the hollow nodes");
            (plane, fleet)
        });
        let port = plane.tls_addr.expect("TLS address").port();
        let kubeconfig = write_kubeconfig(dir.path(), port, &plane.ca_pem);
        Cluster {
            rt,
            plane: Some(plane),
            fleet: Some(fleet),
            joined: Vec::new(),
            dir,
            kubeconfig,
        }
    }

    /// A file in the cluster's temp dir.
    pub fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write file");
        p.display().to_string()
    }

    /// A hollow node `name` joins the cluster (as a node added after the start).
    pub fn add_node(&mut self, name: &str) {
        let socket = self.dir.path().join("podd.sock");
        let fleet = self
            .rt
            .block_on(HollowFleet::start(
                podd_client::Client::unix(&socket),
                &[name.to_string()],
                HollowConfig::default(),
            ))
            .expect("start a hollow node");
        self.joined.push(fleet);
    }

    /// Runs kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        let out: Output = Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // kubectl caches discovery under $HOME/.kube; keep it per cluster.
            .env("HOME", self.dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("run kubectl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a kubectl that does not end by itself (`get -w`) for `d`, then stops it; returns
    /// what it printed meanwhile.
    pub fn kubectl_for(&self, d: Duration, args: &[&str]) -> String {
        let mut child = Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run kubectl");
        std::thread::sleep(d);
        let _ = child.kill();
        let out = child.wait_with_output().expect("kubectl output");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.kubectl(args);
        assert_eq!(
            r.code,
            0,
            "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            r.code,
            r.stdout,
            r.stderr
        );
        r.stdout
    }

    /// Runs kubectl and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.kubectl(args);
        assert_ne!(
            r.code,
            0,
            "kubectl {} should have failed:\n{}",
            args.join(" "),
            r.stdout
        );
        r.stderr
    }

    /// `kubectl get ... -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {a:?}: not JSON: {e}\n{out}"))
    }

    /// Polls `f` every 200 ms until it gives Some, or panics naming `what` after 60 s.
    pub fn until<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        self.until_within(what, Duration::from_secs(60), f)
    }

    /// [`Self::until`] with its own time limit, for waits that are long by nature (a cron
    /// schedule's next minute).
    pub fn until_within<T>(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `kubectl get pods -l selector` shows `n` Running pods.
    pub fn wait_running(&self, selector: &str, n: usize) {
        self.until(&format!("{n} running pods with {selector}"), || {
            let v = self.json(&["get", "pods", "-l", selector]);
            let items = v["items"].as_array()?;
            let running = items
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .count();
            (running == n && items.len() == n).then_some(())
        });
    }

    /// Applies `manifest` (a file written to the temp dir) and returns kubectl's output.
    /// The admin kubeconfig of this cluster (for other clients than kubectl).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn apply(&self, name: &str, manifest: &str, extra: &[&str]) -> String {
        let f = self.file(name, manifest);
        let mut args = vec!["apply", "-f", f.as_str()];
        args.extend(extra);
        self.ok(&args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let (fleet, plane) = (self.fleet.take(), self.plane.take());
        let joined = std::mem::take(&mut self.joined);
        self.rt.block_on(async {
            for f in joined {
                f.shutdown().await;
            }
            if let Some(f) = fleet {
                f.shutdown().await;
            }
            if let Some(p) = plane {
                p.shutdown().await;
            }
        });
    }
}

/// An admin kubeconfig for `https://127.0.0.1:PORT`, with the CA and token in files beside
/// it, written with kube-rs's own Kubeconfig type.
fn write_kubeconfig(dir: &Path, port: u16, ca_pem: &str) -> PathBuf {
    let ca = dir.join("ca.crt");
    let token = dir.join("token");
    std::fs::write(&ca, ca_pem).expect("write CA");
    std::fs::write(&token, ADMIN_TOKEN).expect("write token");
    let config = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "podd".into(),
            cluster: Some(ClusterConfig {
                server: Some(format!("https://127.0.0.1:{port}")),
                certificate_authority: Some(ca.display().to_string()),
                ..ClusterConfig::default()
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
                namespace: Some("default".into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some("podd".into()),
        ..Kubeconfig::default()
    };
    let path = dir.join("kubeconfig");
    let text = serde_yaml::to_string(&config).expect("kubeconfig as YAML");
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// The first line of a table, split into its column names.
pub fn header(table: &str) -> Vec<String> {
    let line = table.lines().next().unwrap_or("");
    // Column names may hold one space ("NOMINATED NODE"); columns are 3+ spaces apart.
    line.split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A realistic Deployment and Service: named ports, probes on them, env with valueFrom,
/// resources, volumes and mounts. `{replicas}`, `{mode}` and `{image}` vary.
pub fn web_manifest(replicas: u32, mode: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
        tier: frontend
    spec:
      containers:
      - name: httpd
        image: {image}
        command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
        ports:
        - name: http
          containerPort: 8080
          protocol: TCP
        env:
        - name: MODE
          value: {mode}
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        readinessProbe:
          httpGet:
            path: /
            port: http
          periodSeconds: 5
        livenessProbe:
          tcpSocket:
            port: http
          initialDelaySeconds: 10
        resources:
          requests:
            cpu: 50m
            memory: 16Mi
          limits:
            cpu: 200m
            memory: 64Mi
        volumeMounts:
        - name: www
          mountPath: /www
          readOnly: true
        - name: cache
          mountPath: /cache
      volumes:
      - name: www
        emptyDir: {{}}
      - name: cache
        emptyDir:
          sizeLimit: 32Mi
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    app: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
"#
    )
}

/// Asserts that the Deployment's container still has everything `web_manifest` gave it.
pub fn assert_container_intact(deploy: &Value, mode: &str) {
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "httpd", "{c:#}");
    assert_eq!(
        c["command"],
        serde_json::json!(["httpd", "-f", "-p", "8080", "-h", "/www"]),
        "command kept: {c:#}"
    );
    assert_eq!(c["ports"][0]["name"], "http", "named port kept: {c:#}");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    let env = c["env"].as_array().expect("env kept");
    assert_eq!(env.len(), 2, "{env:?}");
    assert_eq!(env[0]["name"], "MODE");
    assert_eq!(env[0]["value"], mode);
    assert_eq!(
        env[1]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
        "env valueFrom kept: {env:?}"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http", "{c:#}");
    assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(c["livenessProbe"]["tcpSocket"]["port"], "http");
    assert_eq!(c["resources"]["requests"]["cpu"], "50m");
    assert_eq!(c["resources"]["limits"]["memory"], "64Mi");
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts kept");
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert_eq!(mounts[0]["readOnly"], true);
    let volumes = deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes kept");
    assert_eq!(volumes.len(), 2);
    assert_eq!(volumes[1]["emptyDir"]["sizeLimit"], "32Mi");
}

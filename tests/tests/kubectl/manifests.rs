//! The example manifests of tests/manifests/ (Kubernetes' documentation style: Deployments
//! with named ports and probes, Services whose targetPort names a port, multi-document files,
//! an autoscaling/v2 HPA), applied with kubectl and with `podctl apply`, each into its own
//! namespace, and read back: every field of each document must come back as written (the
//! manifest is a JSON subset of what the server returns; defaults and server-set fields are
//! extra). Applying again changes nothing (no new generation, spec, labels or annotations).

use crate::harness::Cluster;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const MANIFESTS: &[&str] = &[
    "nginx-deployment.yaml",
    "guestbook.yaml",
    "php-apache-hpa.yaml",
    "pod-lifecycle.yaml",
];

fn manifest_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(name)
}

/// The documents of a YAML file, as JSON.
fn documents(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(manifest_path(name)).expect("read the manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("a YAML document"))
        .filter(|d| !d.is_null())
        .collect()
}

/// The first path where `want` is not in `got`, if any (arrays element by element).
fn missing(want: &Value, got: &Value, path: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().find_map(|(k, v)| match g.get(k) {
            Some(gv) => missing(v, gv, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k} is missing")),
        }),
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (a, b))| missing(a, b, &format!("{path}[{i}]"))),
        _ if want == got => None,
        _ => Some(format!("{path}: wrote {want}, got {got}")),
    }
}

/// podctl of this build (`$PODD_BIN_DIR` or beside the test binary).
fn podctl() -> PathBuf {
    let bin = podd_tests::cluster::bin_dir().expect("the binary directory");
    let p = bin.join("podctl");
    assert!(
        p.exists(),
        "{} is missing: build it first with `cargo build -p podctl` (same profile and target \
         dir), or set PODD_BIN_DIR",
        p.display()
    );
    p
}

/// Reads every document of `name` back from namespace `ns` and checks it holds what the
/// manifest wrote; returns what a write would change of each object (generation, labels,
/// annotations, spec: not status, which the controllers keep writing).
fn read_back(c: &Cluster, name: &str, ns: &str) -> Vec<Value> {
    let mut versions = Vec::new();
    for doc in documents(name) {
        let kind = doc["kind"].as_str().unwrap().to_ascii_lowercase();
        let obj_name = doc["metadata"]["name"].as_str().unwrap();
        let got = c.json(&["get", &kind, obj_name, "-n", ns]);
        if let Some(diff) = missing(&doc, &got, "") {
            panic!("{name}: {kind}/{obj_name} in {ns}: {diff}\nwrote {doc:#}\ngot {got:#}");
        }
        assert_eq!(got["metadata"]["namespace"], ns);
        versions.push(serde_json::json!([
            got["metadata"]["generation"],
            got["metadata"]["labels"],
            got["metadata"]["annotations"],
            got["spec"],
        ]));
    }
    versions
}

#[test]
fn example_manifests_come_back_as_written_with_kubectl_and_podctl() {
    let c = Cluster::start();
    let podctl = podctl();
    let socket = c.kubeconfig().with_file_name("podd.sock");
    for (i, name) in MANIFESTS.iter().enumerate() {
        let file = manifest_path(name);
        let file = file.to_str().unwrap();
        let docs = documents(name);
        assert!(!docs.is_empty(), "{name} has documents");

        // kubectl apply (client-side, with its last-applied annotation).
        let ns = format!("kubectl-{i}");
        // Each copy goes into a namespace of its own, created first as a user would.
        for n in [
            format!("kubectl-{i}"),
            format!("ssa-{i}"),
            format!("podctl-{i}"),
        ] {
            c.ok(&["create", "namespace", &n]);
        }
        let out = c.ok(&["apply", "-n", &ns, "-f", file]);
        for d in &docs {
            let line = format!(
                "{}/{} created",
                kubectl_resource(d),
                d["metadata"]["name"].as_str().unwrap()
            );
            assert!(out.contains(&line), "{name}: {line} in:\n{out}");
        }
        let before = read_back(&c, name, &ns);
        let out = c.ok(&["apply", "-n", &ns, "-f", file]);
        assert_eq!(
            out.matches("unchanged").count(),
            docs.len(),
            "{name}: applying again changes nothing:\n{out}"
        );
        assert_eq!(
            read_back(&c, name, &ns),
            before,
            "{name}: a second apply wrote"
        );
        // kubectl server-side apply of the same file into a third namespace.
        let ssa_ns = format!("ssa-{i}");
        c.ok(&["apply", "--server-side", "-n", &ssa_ns, "-f", file]);
        read_back(&c, name, &ssa_ns);

        // podctl apply.
        let ns = format!("podctl-{i}");
        let run = |args: &[&str]| {
            let out = Command::new(&podctl)
                .arg("--server")
                .arg(format!("unix://{}", socket.display()))
                .args(["-n", &ns])
                .args(args)
                .env_remove("PODCTL_CONFIG")
                .output()
                .expect("run podctl");
            assert!(
                out.status.success(),
                "podctl {args:?} on {name} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["apply", "-f", file]);
        let before = read_back(&c, name, &ns);
        run(&["apply", "-f", file]);
        assert_eq!(
            read_back(&c, name, &ns),
            before,
            "{name}: podctl applying again wrote"
        );
    }

    // What the documents mean, beyond their fields.
    // The NodePort Service is kept as written (type NodePort); podd allocates no node port
    // yet (docs/API.md: NodePort/LoadBalancer are reachable on the cluster IP only), so
    // spec.ports[].nodePort is not checked here.
    let svc = c.json(&["get", "svc", "frontend", "-n", "kubectl-1"]);
    assert_eq!(svc["spec"]["type"], "NodePort", "{svc:#}");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster", "{svc:#}");
    let svc = c.json(&["get", "svc", "php-apache", "-n", "kubectl-2"]);
    assert_eq!(
        svc["spec"]["ports"][0]["targetPort"], 80,
        "targetPort defaults to the port"
    );
    c.until("3 running nginx pods", || {
        let pods = c.json(&["get", "pods", "-n", "kubectl-0", "-l", "app=nginx"]);
        let running = pods["items"].as_array()?.iter();
        (running
            .filter(|p| p["status"]["phase"] == "Running")
            .count()
            == 3)
            .then_some(())
    });
    let ep = c.until("the redis endpoints", || {
        let ep = c.json(&["get", "endpoints", "redis-leader", "-n", "kubectl-1"]);
        ep["subsets"][0]["ports"][0]["port"]
            .is_number()
            .then_some(ep)
    });
    assert_eq!(
        ep["subsets"][0]["ports"][0]["port"], 6379,
        "the named targetPort resolves to the container's port: {ep:#}"
    );
    let hpa = c.ok(&["get", "hpa", "php-apache", "-n", "kubectl-2"]);
    assert!(
        hpa.contains("Deployment/php-apache") && hpa.contains("/50%"),
        "{hpa}"
    );
}

/// `deployment.apps`, `service`, `horizontalpodautoscaler.autoscaling`, `pod`: how kubectl
/// names a created object.
fn kubectl_resource(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap().to_ascii_lowercase();
    match doc["apiVersion"].as_str().unwrap().split_once('/') {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind,
    }
}

#[test]
fn manifest_reader_reads_every_document() {
    assert_eq!(documents("guestbook.yaml").len(), 4);
    assert_eq!(documents("php-apache-hpa.yaml").len(), 3);
    let want = serde_json::json!({"a": {"b": [1, {"c": 2}]}});
    let got = serde_json::json!({"a": {"b": [1, {"c": 2, "d": 3}], "e": 4}});
    assert_eq!(missing(&want, &got, ""), None);
    let got = serde_json::json!({"a": {"b": [1, {"c": 3}]}});
    assert_eq!(
        missing(&want, &got, "").as_deref(),
        Some(".a.b[1].c: wrote 2, got 3")
    );
}

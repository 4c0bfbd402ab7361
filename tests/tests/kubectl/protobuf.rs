//! Kubernetes' protobuf responses as the real kubectl asks for them. kubectl's typed clients
//! (`create deployment`, `describe`'s reads, `logs`' pod lookup) send
//! `Accept: application/vnd.kubernetes.protobuf,application/json`; its dynamic clients (`get`,
//! `get -w`, `apply`) ask JSON or Tables. With `--v=8` kubectl logs every request's Accept
//! and every response's Content-Type: each request that asked protobuf first must get
//! protobuf, each that asked JSON must get JSON, and what kubectl prints must be right.

use crate::harness::Cluster;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One request kubectl logged: method and URL, its Accept, and the response's Content-Type.
#[derive(Debug, Default, Clone)]
struct Exchange {
    request: String,
    accept: String,
    status: String,
    content_type: String,
}

/// The requests in a `--v=8` log (client-go's round_trippers lines).
fn exchanges(log: &str) -> Vec<Exchange> {
    let mut out: Vec<Exchange> = Vec::new();
    let mut in_response = false;
    for line in log.lines() {
        let Some((_, msg)) = line.split_once("] ") else {
            continue;
        };
        if !line.contains("round_trippers.go") {
            continue;
        }
        let msg_trim = msg.trim();
        if ["GET ", "POST ", "PUT ", "PATCH ", "DELETE "]
            .iter()
            .any(|m| msg_trim.starts_with(m))
            && msg_trim.contains("://")
        {
            out.push(Exchange {
                request: msg_trim.to_string(),
                ..Exchange::default()
            });
            in_response = false;
        } else if let Some(status) = msg_trim.strip_prefix("Response Status:") {
            in_response = true;
            if let Some(e) = out.last_mut() {
                e.status = status.trim().to_string();
            }
        } else if let Some(e) = out.last_mut() {
            if let Some(v) = msg_trim.strip_prefix("Accept:") {
                e.accept = v.trim().to_string();
            } else if let Some(v) = msg_trim.strip_prefix("Content-Type:")
                && in_response
            {
                e.content_type = v.trim().to_string();
            }
        }
    }
    out
}

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Checks every exchange answered in the encoding it preferred; returns those in protobuf.
fn check_negotiated(log: &str) -> Vec<Exchange> {
    let ex = exchanges(log);
    assert!(!ex.is_empty(), "no requests in the log:\n{log}");
    let mut pb = Vec::new();
    for e in &ex {
        if e.status.is_empty() || e.content_type.is_empty() {
            continue; // No body (e.g. a 101 or a stream kubectl stopped).
        }
        let first = e.accept.split(',').next().unwrap_or("").trim();
        if first == PROTOBUF {
            assert_eq!(
                e.content_type, PROTOBUF,
                "{e:?} asked protobuf first and got something else"
            );
            pb.push(e.clone());
        } else if first.starts_with("application/json") {
            assert!(
                e.content_type.starts_with("application/json"),
                "{e:?} asked JSON and got something else"
            );
        }
    }
    pb
}

#[test]
fn kubectl_gets_protobuf_where_it_asks_for_it() {
    let c = Cluster::start();

    // create deployment: a protobuf body, answered in protobuf.
    let r = c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
        "--port=8080",
        "--v=8",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("deployment.apps/web created"),
        "{}",
        r.stdout
    );
    let pb = check_negotiated(&r.stderr);
    assert!(
        pb.iter().any(|e| e.request.starts_with("POST ")
            && e.request.contains("/deployments")
            && e.status.starts_with("201")),
        "the create was not answered in protobuf: {pb:?}"
    );

    // get -o yaml (JSON from the dynamic client) shows what the protobuf create stored.
    c.wait_running("app=web", 2);
    let r = c.kubectl(&["get", "deployment", "web", "-o", "yaml", "--v=8"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    check_negotiated(&r.stderr);
    let d: serde_json::Value = serde_yaml::from_str(&r.stdout).unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    let ctr = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(ctr["image"], "busybox");
    assert_eq!(ctr["ports"][0]["containerPort"], 8080);

    let r = c.kubectl(&["get", "pods", "-o", "yaml", "--v=8"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    check_negotiated(&r.stderr);
    let pods: serde_json::Value = serde_yaml::from_str(&r.stdout).unwrap();
    assert_eq!(pods["items"].as_array().unwrap().len(), 2, "{pods}");

    // describe reads with typed clients: the deployment, its replica sets, events, in
    // protobuf, and prints them.
    let r = c.kubectl(&["describe", "deployment", "web", "--v=8"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pb = check_negotiated(&r.stderr);
    assert!(
        pb.iter()
            .any(|e| e.request.starts_with("GET ") && e.request.contains("/deployments/web")),
        "describe did not read the deployment in protobuf: {:?}",
        exchanges(&r.stderr)
    );
    assert!(
        pb.iter().any(|e| e.request.contains("/replicasets")),
        "describe did not list replica sets in protobuf: {pb:?}"
    );
    assert!(
        r.stdout.contains("Name:") && r.stdout.contains("web"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Replicas:") && r.stdout.contains("2 desired"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("NewReplicaSet:"), "{}", r.stdout);
    let pod = c.json(&["get", "pods", "-l", "app=web"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c.kubectl(&["describe", "pod", &pod, "--v=8"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pb = check_negotiated(&r.stderr);
    assert!(
        pb.iter()
            .any(|e| e.request.contains(&format!("/pods/{pod}"))),
        "describe pod: {:?}",
        exchanges(&r.stderr)
    );
    assert!(
        r.stdout.contains("Status:") && r.stdout.contains("Running"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Controlled By:  ReplicaSet/web-"),
        "{}",
        r.stdout
    );

    // A typed client's error: creating it again is a 409 AlreadyExists Status, in protobuf,
    // which kubectl reads and prints.
    let r = c.kubectl(&["create", "deployment", "web", "--image=busybox", "--v=8"]);
    assert_ne!(r.code, 0);
    let pb = check_negotiated(&r.stderr);
    assert!(
        pb.iter()
            .any(|e| e.request.contains("/deployments") && e.status.starts_with("409")),
        "the 409 was not protobuf: {:?}",
        exchanges(&r.stderr)
    );
    assert!(r.stderr.contains("\"web\" already exists"), "{}", r.stderr);

    // get -w: the watch kubectl asks (JSON or Tables) streams the changes.
    let home = c.kubeconfig().parent().unwrap().to_path_buf();
    let mut child = Command::new(std::env::var("KUBECTL").unwrap_or("/usr/bin/kubectl".into()))
        .args(["get", "deployments", "-w", "--v=8"])
        .env("KUBECONFIG", c.kubeconfig())
        .env("HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    c.ok(&["scale", "deployment", "web", "--replicas=3"]);
    std::thread::sleep(Duration::from_secs(3));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    check_negotiated(&stderr);
    assert!(
        exchanges(&stderr)
            .iter()
            .any(|e| e.request.contains("watch=true")),
        "no watch request:\n{stderr}"
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("web ")).collect();
    assert!(rows.len() >= 2, "the watch printed no change:\n{stdout}");
    assert!(rows.iter().any(|r| r.contains("/3")), "{stdout}");
}

//! The shortcut that records a write over the stored managedFields (`record::record_live`)
//! gives what the full computation gives, write after write, whoever writes what.

use super::apply::{decode_entries, record_entries, record_update_owned};
use crate::Kind;
use proptest::prelude::*;
use serde_json::{Value, json};

/// The full computation, as before the shortcut: both objects without managedFields, every
/// stored entry decoded.
fn full(old: &Value, new: &Value, manager: &str, subresource: &str, now: &str) -> Value {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(Value::Object(m)) = v.get_mut("metadata") {
            m.remove("managedFields");
        }
        v
    };
    let live = decode_entries(old.pointer("/metadata/managedFields")).unwrap_or_default();
    record_entries(
        Kind::Pod,
        &strip(old),
        strip(new),
        live,
        manager,
        subresource,
        now,
    )
}

/// One write of a pod: which fields it sets, by whom, to which subresource.
#[derive(Debug, Clone)]
struct Write {
    manager: usize,
    status: bool,
    labels: Vec<(usize, usize)>,
    image: usize,
    phase: usize,
    conditions: Vec<(usize, bool)>,
    node: Option<usize>,
    ports: Vec<u16>,
}

fn write() -> impl Strategy<Value = Write> {
    (
        0..3usize,
        any::<bool>(),
        prop::collection::vec((0..3usize, 0..2usize), 0..3),
        0..2usize,
        0..3usize,
        prop::collection::vec((0..4usize, any::<bool>()), 0..4),
        prop::option::of(0..2usize),
        prop::collection::vec(prop::sample::select(vec![80u16, 443, 8080]), 0..3),
    )
        .prop_map(
            |(manager, status, labels, image, phase, conditions, node, ports)| Write {
                manager,
                status,
                labels,
                image,
                phase,
                conditions,
                node,
                ports,
            },
        )
}

/// The object a write stores: the live one with the write's fields set.
fn apply(live: &Value, w: &Write) -> Value {
    let mut new = live.clone();
    if w.status {
        let types = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];
        let mut conditions: Vec<Value> = Vec::new();
        for (t, ok) in &w.conditions {
            if conditions.iter().all(|c| c["type"] != types[*t]) {
                conditions
                    .push(json!({"type": types[*t], "status": if *ok { "True" } else { "False" }}));
            }
        }
        let phase = ["Pending", "Running", "Succeeded"][w.phase];
        let mut status = json!({ "phase": phase });
        if !conditions.is_empty() {
            status["conditions"] = Value::Array(conditions);
        }
        new["status"] = status;
    } else {
        let labels: serde_json::Map<String, Value> = w
            .labels
            .iter()
            .map(|(k, v)| (format!("l{k}"), json!(format!("v{v}"))))
            .collect();
        if labels.is_empty() {
            new["metadata"].as_object_mut().unwrap().remove("labels");
        } else {
            new["metadata"]["labels"] = Value::Object(labels);
        }
        let mut ports: Vec<Value> = Vec::new();
        for p in &w.ports {
            if ports.iter().all(|x| x["containerPort"] != *p) {
                ports.push(json!({"containerPort": p, "protocol": "TCP"}));
            }
        }
        let c = &mut new["spec"]["containers"][0];
        let image = ["nginx:1", "nginx:2"][w.image];
        c["image"] = json!(image);
        if ports.is_empty() {
            c.as_object_mut().unwrap().remove("ports");
        } else {
            c["ports"] = Value::Array(ports);
        }
        match w.node {
            Some(n) => new["spec"]["nodeName"] = json!(format!("node-{n}")),
            None => {
                new["spec"].as_object_mut().unwrap().remove("nodeName");
            }
        }
    }
    new
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "uid": "u-1",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                "uid": "rs-1", "controller": true}]},
        "spec": {"containers": [{"name": "web", "image": "nginx:1",
            "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"phase": "Pending"}
    })
}

proptest! {
    #[test]
    fn the_shortcut_records_what_the_full_computation_records(
        writes in prop::collection::vec(write(), 1..12),
    ) {
        let managers = ["replicaset-controller", "podd-agent", "kubectl"];
        let mut live = full(&Value::Null, &pod(), managers[0], "", "2026-01-01T00:00:00Z");
        for (i, w) in writes.iter().enumerate() {
            let now = format!("2026-01-01T00:{:02}:00Z", i + 1);
            let sub = if w.status { "status" } else { "" };
            let new = apply(&live, w);
            let want = full(&live, &new, managers[w.manager], sub, &now);
            let got = record_update_owned(Kind::Pod, &live, new, managers[w.manager], sub, &now);
            prop_assert_eq!(&got, &want);
            live = got;
        }
    }
}

#[test]
fn an_unchanged_item_without_its_key_is_refused_as_a_changed_one_is() {
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"image": "nginx"}]}});
    let mut changed = bad.clone();
    changed["metadata"]["labels"] = json!({"a": "b"});
    assert!(super::typed::compare(Kind::Pod, &bad, &changed).is_err());
    assert!(super::typed::compare(Kind::Pod, &bad, &bad).is_err());
}

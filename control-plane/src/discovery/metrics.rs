//! metrics.k8s.io/v1beta1 as metrics-server serves it: NodeMetrics and PodMetrics (list and
//! get) from the agents' newest usage reports, which is what `kubectl top` reads. Selectors
//! match the labels of the nodes and pods themselves, which the metrics carry, as
//! metrics-server copies them.

use crate::usage::UsageTable;
use podd_api::metrics::{NodeMetrics, PodMetrics};
use podd_api::selector::Selector;
use podd_api::{Status, status_failure};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A metrics.k8s.io request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsPath {
    Nodes,
    Node(String),
    /// Every namespace's when None.
    Pods(Option<String>),
    Pod {
        namespace: String,
        name: String,
    },
}

/// The metrics path of `path`; None for every path outside metrics.k8s.io/v1beta1 (and for
/// unknown paths inside it, which are then 404 like any unknown path).
pub fn parse(path: &str) -> Option<MetricsPath> {
    let rest = path
        .trim_end_matches('/')
        .strip_prefix("/apis/metrics.k8s.io/v1beta1/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        ["nodes"] => Some(MetricsPath::Nodes),
        ["nodes", n] if !n.is_empty() => Some(MetricsPath::Node(n.to_string())),
        ["pods"] => Some(MetricsPath::Pods(None)),
        ["namespaces", ns, "pods"] if !ns.is_empty() => {
            Some(MetricsPath::Pods(Some(ns.to_string())))
        }
        ["namespaces", ns, "pods", n] if !ns.is_empty() && !n.is_empty() => {
            Some(MetricsPath::Pod {
                namespace: ns.to_string(),
                name: n.to_string(),
            })
        }
        _ => None,
    }
}

/// The requirements of a list's `fieldSelector` on metrics: `metadata.name` and
/// `metadata.namespace`, with `=`, `==` or `!=`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldSelector(podd_api::selector::FieldSelector);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, Box<Status>> {
        podd_api::selector::FieldSelector::parse(s, &["metadata.name", "metadata.namespace"])
            .map(FieldSelector)
            .map_err(|e| bad_request(e.to_string()))
    }

    fn matches(&self, namespace: &str, name: &str) -> bool {
        self.0.matches(|field| {
            if field == "metadata.name" {
                name
            } else {
                namespace
            }
        })
    }
}

fn bad_request(msg: String) -> Box<Status> {
    Box::new(status_failure(400, "BadRequest", msg))
}

fn not_found(resource: &str, name: &str) -> Box<Status> {
    // metrics-server's words: `podmetrics.metrics.k8s.io "default/web" not found`.
    Box::new(status_failure(
        404,
        "NotFound",
        format!("{resource}.metrics.k8s.io {name:?} not found"),
    ))
}

/// A list query's selectors.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    pub labels: Option<Selector>,
    pub fields: FieldSelector,
}

/// The labels of the objects the metrics are of (node name, or namespace and pod name).
pub trait Labels {
    fn node(&self, name: &str) -> Option<BTreeMap<String, String>>;
    fn pod(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>>;
}

/// Answers a metrics GET: the list or the object as JSON, or the Status to fail with.
pub fn answer(
    usage: &UsageTable,
    labels: &dyn Labels,
    path: &MetricsPath,
    opts: &ListOptions,
) -> Result<Value, Box<Status>> {
    match path {
        MetricsPath::Nodes => {
            let items: Vec<Value> = usage
                .nodes()
                .into_iter()
                .filter_map(|n| {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let l = labels.node(&name).unwrap_or_default();
                    let keep = opts.labels.as_ref().is_none_or(|s| s.matches(&l))
                        && opts.fields.matches("", &name);
                    keep.then(|| node_json(n, l))
                })
                .collect();
            Ok(list("NodeMetricsList", items))
        }
        MetricsPath::Node(name) => usage
            .nodes()
            .into_iter()
            .find(|n| n.metadata.name.as_deref() == Some(name.as_str()))
            .map(|n| node_json(n, labels.node(name).unwrap_or_default()))
            .ok_or_else(|| not_found("nodemetrics", name)),
        MetricsPath::Pods(ns) => {
            let items: Vec<Value> = usage
                .pods(ns.as_deref())
                .into_iter()
                .filter_map(|p| {
                    let pns = p.metadata.namespace.clone().unwrap_or_default();
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let l = labels.pod(&pns, &name).unwrap_or_default();
                    let keep = opts.labels.as_ref().is_none_or(|s| s.matches(&l))
                        && opts.fields.matches(&pns, &name);
                    keep.then(|| pod_json(p, l))
                })
                .collect();
            Ok(list("PodMetricsList", items))
        }
        MetricsPath::Pod { namespace, name } => usage
            .pod(namespace, name)
            .map(|p| pod_json(p, labels.pod(namespace, name).unwrap_or_default()))
            .ok_or_else(|| not_found("podmetrics", &format!("{namespace}/{name}"))),
    }
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": items,
    })
}

fn with_labels(mut v: Value, labels: BTreeMap<String, String>) -> Value {
    if !labels.is_empty() {
        v["metadata"]["labels"] = json!(labels);
    }
    v
}

fn node_json(mut n: NodeMetrics, labels: BTreeMap<String, String>) -> Value {
    n.kind = "NodeMetrics".into();
    n.api_version = "metrics.k8s.io/v1beta1".into();
    with_labels(serde_json::to_value(n).unwrap_or_default(), labels)
}

fn pod_json(mut p: PodMetrics, labels: BTreeMap<String, String>) -> Value {
    p.kind = "PodMetrics".into();
    p.api_version = "metrics.k8s.io/v1beta1".into();
    with_labels(serde_json::to_value(p).unwrap_or_default(), labels)
}

/// A metrics answer as a meta.k8s.io/v1 Table, as metrics-server prints it for
/// `kubectl get nodes.metrics.k8s.io`: the name, one column per resource (pods sum their
/// containers), and the window.
pub fn to_table(answer: &Value, include: crate::table::IncludeObject) -> Value {
    let items: Vec<&Value> = match answer["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![answer],
    };
    let usage = |item: &Value| -> BTreeMap<String, String> {
        if let Some(u) = item["usage"].as_object() {
            return u
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
        }
        let mut sums: BTreeMap<String, String> = BTreeMap::new();
        let containers: Vec<podd_api::metrics::ContainerMetrics> =
            serde_json::from_value(item["containers"].clone()).unwrap_or_default();
        let pod = PodMetrics {
            containers,
            ..Default::default()
        };
        let has = |r: &str| pod.containers.iter().any(|c| c.usage.contains_key(r));
        if has("cpu") {
            sums.insert("cpu".into(), podd_api::Quantity::from(pod.cpu()).0);
        }
        if has("memory") {
            sums.insert("memory".into(), podd_api::Quantity::from(pod.memory()).0);
        }
        sums
    };
    let names: Vec<String> = items
        .first()
        .map(|i| usage(i).into_keys().collect())
        .unwrap_or_default();
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the resource", "priority": 0}),
    ];
    defs.extend(
        names
            .iter()
            .map(|n| json!({"name": n, "type": "string", "format": "quantity", "description": "", "priority": 0})),
    );
    defs.push(json!({"name": "Window", "type": "string", "format": "duration", "description": "", "priority": 0}));
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let u = usage(item);
            let mut cells = vec![item["metadata"]["name"].clone()];
            cells.extend(
                names
                    .iter()
                    .map(|n| json!(u.get(n).cloned().unwrap_or_default())),
            );
            cells.push(item["window"].clone());
            let mut row = json!({"cells": cells});
            match include {
                crate::table::IncludeObject::None => {}
                crate::table::IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": item["metadata"].clone(),
                    });
                }
                crate::table::IncludeObject::Object => row["object"] = (*item).clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::metrics::{ContainerMetrics, UsageReport};
    use podd_api::{ObjectMeta, Quantity};

    struct FakeLabels;
    impl Labels for FakeLabels {
        fn node(&self, name: &str) -> Option<BTreeMap<String, String>> {
            (name == "n1").then(|| [("zone".to_string(), "a".to_string())].into())
        }
        fn pod(&self, _ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
            Some(
                [(
                    "app".to_string(),
                    name.trim_end_matches(char::is_numeric).to_string(),
                )]
                .into(),
            )
        }
    }

    fn usage() -> UsageTable {
        let pod = |ns: &str, name: &str, cpu: &str| PodMetrics {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            window: "10s".into(),
            containers: vec![ContainerMetrics {
                name: "c".into(),
                usage: [
                    ("cpu".to_string(), Quantity(cpu.into())),
                    ("memory".to_string(), Quantity("5Mi".into())),
                ]
                .into(),
            }],
            ..Default::default()
        };
        let t = UsageTable::default();
        let node = |cpu: &str| NodeMetrics {
            window: "10s".into(),
            usage: [("cpu".to_string(), Quantity(cpu.into()))].into(),
            ..Default::default()
        };
        t.record(
            "n1",
            UsageReport {
                node: node("250m"),
                pods: vec![pod("default", "web1", "10m"), pod("default", "db1", "20m")],
            },
        );
        t.record(
            "n2",
            UsageReport {
                node: node("100m"),
                pods: vec![pod("kube-system", "dns1", "1m")],
            },
        );
        t
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/nodes"),
            Some(MetricsPath::Nodes)
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/nodes/n1/"),
            Some(MetricsPath::Node("n1".into()))
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/pods"),
            Some(MetricsPath::Pods(None))
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"),
            Some(MetricsPath::Pods(Some("default".into())))
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web1"),
            Some(MetricsPath::Pod {
                namespace: "default".into(),
                name: "web1".into()
            })
        );
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1"), None);
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1/services"), None);
        assert_eq!(parse("/api/v1/nodes"), None);
    }

    #[test]
    fn lists_and_gets() {
        let u = usage();
        let opts = ListOptions::default();
        let nodes = answer(&u, &FakeLabels, &MetricsPath::Nodes, &opts).unwrap();
        assert_eq!(nodes["kind"], "NodeMetricsList");
        assert_eq!(nodes["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(nodes["items"][0]["metadata"]["name"], "n1");
        assert_eq!(nodes["items"][0]["metadata"]["labels"]["zone"], "a");
        assert_eq!(nodes["items"][0]["usage"]["cpu"], "250m");
        assert_eq!(nodes["items"][0]["kind"], "NodeMetrics");

        let all = answer(&u, &FakeLabels, &MetricsPath::Pods(None), &opts).unwrap();
        assert_eq!(all["kind"], "PodMetricsList");
        assert_eq!(all["items"].as_array().unwrap().len(), 3);
        let default = answer(
            &u,
            &FakeLabels,
            &MetricsPath::Pods(Some("default".into())),
            &opts,
        )
        .unwrap();
        let names: Vec<&str> = default["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["db1", "web1"]);
        assert_eq!(
            default["items"][1]["containers"][0]["usage"]["memory"],
            "5Mi"
        );

        let one = MetricsPath::Pod {
            namespace: "default".into(),
            name: "web1".into(),
        };
        assert_eq!(
            answer(&u, &FakeLabels, &one, &opts).unwrap()["metadata"]["labels"]["app"],
            "web"
        );
        let missing = MetricsPath::Pod {
            namespace: "default".into(),
            name: "nope".into(),
        };
        let st = answer(&u, &FakeLabels, &missing, &opts).unwrap_err();
        assert_eq!(st.code, Some(404));
        assert_eq!(
            st.message.as_deref(),
            Some("podmetrics.metrics.k8s.io \"default/nope\" not found")
        );
        let st = answer(&u, &FakeLabels, &MetricsPath::Node("n9".into()), &opts).unwrap_err();
        assert_eq!(st.reason.as_deref(), Some("NotFound"));
    }

    #[test]
    fn selectors_filter() {
        let u = usage();
        let opts = ListOptions {
            labels: Some(Selector::parse("app=web").unwrap()),
            ..Default::default()
        };
        let l = answer(&u, &FakeLabels, &MetricsPath::Pods(None), &opts).unwrap();
        assert_eq!(l["items"].as_array().unwrap().len(), 1);
        assert_eq!(l["items"][0]["metadata"]["name"], "web1");

        let opts = ListOptions {
            labels: Some(Selector::parse("zone=a").unwrap()),
            ..Default::default()
        };
        let l = answer(&u, &FakeLabels, &MetricsPath::Nodes, &opts).unwrap();
        assert_eq!(l["items"].as_array().unwrap().len(), 1);

        let opts = ListOptions {
            fields: FieldSelector::parse("metadata.namespace!=default").unwrap(),
            ..Default::default()
        };
        let l = answer(&u, &FakeLabels, &MetricsPath::Pods(None), &opts).unwrap();
        assert_eq!(l["items"][0]["metadata"]["name"], "dns1");
        assert_eq!(l["items"].as_array().unwrap().len(), 1);
        assert_eq!(
            FieldSelector::parse("spec.nodeName=n1").unwrap_err().code,
            Some(400)
        );
    }

    #[test]
    fn tables_as_metrics_server_prints_them() {
        let u = usage();
        let opts = ListOptions::default();
        let nodes = answer(&u, &FakeLabels, &MetricsPath::Nodes, &opts).unwrap();
        let t = to_table(&nodes, crate::table::IncludeObject::Metadata);
        let cols: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(cols, ["Name", "cpu", "Window"]);
        assert_eq!(t["rows"][0]["cells"], json!(["n1", "250m", "10s"]));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let one = MetricsPath::Pod {
            namespace: "default".into(),
            name: "web1".into(),
        };
        let pod = answer(&u, &FakeLabels, &one, &opts).unwrap();
        let t = to_table(&pod, crate::table::IncludeObject::None);
        assert_eq!(t["rows"][0]["cells"], json!(["web1", "10m", "5Mi", "10s"]));
        assert!(t["rows"][0].get("object").is_none());
    }
}

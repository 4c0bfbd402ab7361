//! Filters: whether a pod may run on a node at all. Static filters depend only on the node's
//! labels, taints and conditions (so their answer is cached per pod-constraint class); the
//! resource, pod-count and host-port filters depend on what is bound and are checked per pod.

use crate::model::{NOT_READY_TAINT, NodeInfo, PodInfo, UNSCHEDULABLE_TAINT};
use crate::score::{NodeUsage, static_key};
use podd_api::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use std::collections::BTreeMap;

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
pub const REASON_CPU: &str = "Insufficient cpu";
pub const REASON_MEMORY: &str = "Insufficient memory";
pub const REASON_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// Why a node fails the static filters, in Kubernetes' filter order.
#[derive(Debug, Clone, PartialEq)]
pub enum StaticReject {
    Unschedulable,
    Taint(Taint),
    Affinity,
}

impl StaticReject {
    pub fn reason(&self) -> String {
        match self {
            StaticReject::Unschedulable => REASON_UNSCHEDULABLE.to_string(),
            StaticReject::Taint(t) => {
                let value = t.value.as_deref().unwrap_or("");
                format!("node(s) had untolerated taint {{{}: {value}}}", t.key)
            }
            StaticReject::Affinity => REASON_AFFINITY.to_string(),
        }
    }
}

/// Kubernetes' `Toleration.ToleratesTaint`: an unset effect matches every effect, an unset
/// key (with `Exists`) every key, an unset operator is `Equal`, an unset value is `""`.
/// `tolerationSeconds` does not matter for scheduling (it bounds how long a pod stays on a
/// node after a NoExecute taint appears).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The field Kubernetes allows in a term's `matchFields` (DaemonSet pods pin their node by it).
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// One node-selector requirement against a node's labels (In, NotIn, Exists, DoesNotExist,
/// Gt, Lt as Kubernetes defines them).
pub fn requirement_matches(
    req: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if req.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// One term: every label expression and every field expression (only `metadata.name`, the
/// node's name, as in Kubernetes) must hold. A term with neither matches nothing.
pub fn term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels))
        && fields.iter().all(|r| {
            r.key == NODE_NAME_FIELD
                && requirement_matches(
                    r,
                    &BTreeMap::from([(NODE_NAME_FIELD.to_string(), node_name.to_string())]),
                )
        })
}

/// Required node affinity: any term may match; within a term all expressions must. An empty
/// term list or an empty term matches nothing, as in Kubernetes. Terms using `matchFields`
/// need the node's name: see [`node_affinity_matches`].
pub fn affinity_matches(sel: &NodeSelector, labels: &BTreeMap<String, String>) -> bool {
    let name = labels
        .get(crate::model::HOSTNAME_LABEL)
        .map_or("", String::as_str);
    node_affinity_matches(sel, name, labels)
}

/// Required node affinity against a node's name (for `matchFields`) and labels.
pub fn node_affinity_matches(
    sel: &NodeSelector,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    sel.node_selector_terms
        .iter()
        .any(|term| term_matches(term, node_name, labels))
}

/// `spec.nodeSelector`: every pair must be a node label.
pub fn selector_matches(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The summed weights of the preferred node-affinity terms the node matches (Kubernetes'
/// NodeAffinity score before normalisation). Weights outside 1..=100 are ignored, as the API
/// refuses them.
pub fn preferred_affinity_weight(node: &NodeInfo, pod: &PodInfo) -> u32 {
    pod.preferred_affinity
        .iter()
        .filter(|t| (1..=100).contains(&t.weight))
        .filter(|t| term_matches(&t.preference, &node.name, &node.labels))
        .map(|t| t.weight.unsigned_abs())
        .sum()
}

/// The static filters in Kubernetes' order (NodeUnschedulable, TaintToleration including the
/// not-ready taint, NodeAffinity). On success, returns the node's static score key
/// (`score::static_key`): how many `PreferNoSchedule` taints the pod does not tolerate (a
/// penalty) and the weight of the preferred node-affinity terms it matches (a bonus).
pub fn static_check(node: &NodeInfo, pod: &PodInfo) -> Result<u32, StaticReject> {
    let tol = &pod.tolerations;
    if node.unschedulable {
        let taint = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerated(tol, &taint) {
            return Err(StaticReject::Unschedulable);
        }
    }
    if !node.ready {
        let taint = Taint {
            key: NOT_READY_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerated(tol, &taint) {
            return Err(StaticReject::Taint(taint));
        }
    }
    let mut prefer = 0;
    for taint in &node.taints {
        match taint.effect.as_str() {
            "NoSchedule" | "NoExecute" if !tolerated(tol, taint) => {
                return Err(StaticReject::Taint(taint.clone()));
            }
            "PreferNoSchedule" if !tolerated(tol, taint) => prefer += 1,
            _ => {}
        }
    }
    if !selector_matches(&pod.node_selector, &node.labels) {
        return Err(StaticReject::Affinity);
    }
    if let Some(aff) = &pod.required_affinity
        && !node_affinity_matches(aff, &node.name, &node.labels)
    {
        return Err(StaticReject::Affinity);
    }
    Ok(static_key(prefer, preferred_affinity_weight(node, pod)))
}

/// The resource and pod-count filter (NodeResourcesFit). Returns every failing reason, as
/// Kubernetes counts each insufficient resource.
pub fn resource_reasons(n: &NodeUsage, pod_cpu: u64, pod_mem: u64) -> Vec<&'static str> {
    let NodeUsage {
        alloc_cpu,
        alloc_mem,
        max_pods,
        req_cpu,
        req_mem,
        pods,
    } = *n;
    let mut out = Vec::new();
    if u64::from(pods) + 1 > u64::from(max_pods) {
        out.push(REASON_TOO_MANY_PODS);
    }
    if pod_cpu > 0 && pod_cpu > alloc_cpu.saturating_sub(req_cpu) {
        out.push(REASON_CPU);
    }
    if pod_mem > 0 && pod_mem > alloc_mem.saturating_sub(req_mem) {
        out.push(REASON_MEMORY);
    }
    out
}

/// The hot-path form of [`resource_reasons`]: does it fit at all.
#[inline]
pub fn fits(n: &NodeUsage, pod_cpu: u64, pod_mem: u64) -> bool {
    n.pods < n.max_pods
        && (pod_cpu == 0 || pod_cpu <= n.alloc_cpu.saturating_sub(n.req_cpu))
        && (pod_mem == 0 || pod_mem <= n.alloc_mem.saturating_sub(n.req_mem))
}

/// Host ports (NodePorts): none of the pod's ports may be in use on the node.
pub fn ports_free(used: &[(u16, u32)], wanted: &[u16]) -> bool {
    wanted
        .iter()
        .all(|p| used.binary_search_by_key(p, |(port, _)| *port).is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    fn taint(k: &str, v: &str, e: &str) -> Taint {
        Taint {
            key: k.into(),
            value: Some(v.into()),
            effect: e.into(),
            ..Default::default()
        }
    }
    fn tol(k: &str, op: &str, v: &str, e: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(k),
            operator: opt(op),
            value: opt(v),
            effect: opt(e),
            toleration_seconds: None,
        }
    }
    fn req(k: &str, op: &str, vals: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: Some(vals.iter().map(|s| s.to_string()).collect()),
        }
    }
    fn node() -> NodeInfo {
        NodeInfo {
            name: "n".into(),
            allocatable_cpu_millis: 1000,
            allocatable_memory: 1 << 30,
            max_pods: 10,
            labels: labels(&[("zone", "a"), ("size", "8")]),
            taints: vec![],
            ready: true,
            unschedulable: false,
        }
    }

    #[test]
    fn toleration_rules() {
        let t = taint("gpu", "yes", "NoSchedule");
        assert!(tolerates(&tol("gpu", "Equal", "yes", "NoSchedule"), &t));
        assert!(tolerates(&tol("gpu", "", "yes", ""), &t));
        assert!(!tolerates(&tol("gpu", "Equal", "no", "NoSchedule"), &t));
        assert!(tolerates(&tol("gpu", "Exists", "", ""), &t));
        assert!(
            tolerates(&tol("", "Exists", "", ""), &t),
            "empty key + Exists tolerates all"
        );
        assert!(!tolerates(&tol("gpu", "Exists", "", "NoExecute"), &t));
        assert!(!tolerates(&tol("other", "Exists", "", ""), &t));
        assert!(!tolerates(&tol("gpu", "Bogus", "yes", ""), &t));
    }

    #[test]
    fn taint_filter_noschedule_noexecute_prefer() {
        let mut n = node();
        let mut p = PodInfo::default();
        n.taints = vec![taint("a", "1", "NoExecute")];
        assert_eq!(
            static_check(&n, &p),
            Err(StaticReject::Taint(taint("a", "1", "NoExecute")))
        );
        p.tolerations = vec![tol("a", "Exists", "", "")];
        assert_eq!(static_check(&n, &p), Ok(0));
        n.taints.push(taint("b", "", "PreferNoSchedule"));
        assert_eq!(static_check(&n, &p), Ok(1), "PreferNoSchedule only scores");
        assert_eq!(
            StaticReject::Taint(taint("a", "1", "NoSchedule")).reason(),
            "node(s) had untolerated taint {a: 1}"
        );
    }

    #[test]
    fn not_ready_and_unschedulable_nodes() {
        let mut n = node();
        let mut p = PodInfo::default();
        n.ready = false;
        assert!(
            matches!(static_check(&n, &p), Err(StaticReject::Taint(t)) if t.key == NOT_READY_TAINT)
        );
        p.tolerations = vec![tol(NOT_READY_TAINT, "Exists", "", "NoSchedule")];
        assert!(static_check(&n, &p).is_ok());
        n.ready = true;
        n.unschedulable = true;
        assert_eq!(static_check(&n, &p), Err(StaticReject::Unschedulable));
        p.tolerations
            .push(tol(UNSCHEDULABLE_TAINT, "Exists", "", ""));
        assert!(static_check(&n, &p).is_ok());
    }

    #[test]
    fn node_selector_filter() {
        let n = node();
        let mut p = PodInfo {
            node_selector: labels(&[("zone", "a")]),
            ..Default::default()
        };
        assert!(static_check(&n, &p).is_ok());
        p.node_selector = labels(&[("zone", "a"), ("size", "9")]);
        assert_eq!(static_check(&n, &p), Err(StaticReject::Affinity));
    }

    #[test]
    fn affinity_operators() {
        let l = node().labels;
        assert!(requirement_matches(&req("zone", "In", &["a", "b"]), &l));
        assert!(!requirement_matches(&req("zone", "In", &["b"]), &l));
        assert!(requirement_matches(&req("zone", "NotIn", &["b"]), &l));
        assert!(requirement_matches(&req("missing", "NotIn", &["b"]), &l));
        assert!(requirement_matches(&req("zone", "Exists", &[]), &l));
        assert!(requirement_matches(
            &req("missing", "DoesNotExist", &[]),
            &l
        ));
        assert!(requirement_matches(&req("size", "Gt", &["4"]), &l));
        assert!(!requirement_matches(&req("size", "Lt", &["4"]), &l));
        assert!(!requirement_matches(&req("zone", "Gt", &["4"]), &l));
        assert!(!requirement_matches(&req("zone", "Weird", &[]), &l));
        let term = |rs: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
            match_expressions: Some(rs),
            match_fields: None,
        };
        let sel = NodeSelector {
            node_selector_terms: vec![
                term(vec![req("zone", "In", &["b"])]),
                term(vec![req("zone", "In", &["a"]), req("size", "Exists", &[])]),
            ],
        };
        assert!(affinity_matches(&sel, &l), "terms are ORed");
        let sel2 = NodeSelector {
            node_selector_terms: vec![term(vec![
                req("zone", "In", &["a"]),
                req("x", "Exists", &[]),
            ])],
        };
        assert!(!affinity_matches(&sel2, &l), "expressions are ANDed");
        assert!(
            !affinity_matches(&NodeSelector::default(), &l),
            "no terms match nothing"
        );
        assert!(!affinity_matches(
            &NodeSelector {
                node_selector_terms: vec![term(vec![])]
            },
            &l
        ));
        assert!(!affinity_matches(
            &NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm::default()]
            },
            &l
        ));
        let p = PodInfo {
            required_affinity: Some(sel2),
            ..Default::default()
        };
        assert_eq!(static_check(&node(), &p), Err(StaticReject::Affinity));
    }

    fn u(
        alloc_cpu: u64,
        alloc_mem: u64,
        max_pods: u32,
        req_cpu: u64,
        req_mem: u64,
        pods: u32,
    ) -> NodeUsage {
        NodeUsage {
            alloc_cpu,
            alloc_mem,
            max_pods,
            req_cpu,
            req_mem,
            pods,
        }
    }

    #[test]
    fn resources_and_pod_count() {
        assert!(resource_reasons(&u(1000, 100, 2, 500, 50, 1), 500, 50).is_empty());
        assert_eq!(
            resource_reasons(&u(1000, 100, 2, 500, 50, 1), 501, 50),
            vec![REASON_CPU]
        );
        assert_eq!(
            resource_reasons(&u(1000, 100, 2, 500, 50, 1), 500, 51),
            vec![REASON_MEMORY]
        );
        assert_eq!(
            resource_reasons(&u(1000, 100, 2, 500, 50, 2), 600, 60),
            vec![REASON_TOO_MANY_PODS, REASON_CPU, REASON_MEMORY]
        );
        // A request of zero always fits, even on an over-committed node.
        assert!(resource_reasons(&u(1000, 100, 5, 2000, 200, 1), 0, 0).is_empty());
        assert!(fits(&u(1000, 100, 2, 500, 50, 1), 500, 50));
        assert!(!fits(&u(1000, 100, 2, 500, 50, 2), 1, 1));
        assert!(!fits(&u(1000, 100, 5, 500, 50, 1), 501, 1));
    }

    #[test]
    fn host_ports() {
        let used = vec![(80u16, 1u32), (443, 2)];
        assert!(ports_free(&used, &[8080]));
        assert!(ports_free(&used, &[]));
        assert!(!ports_free(&used, &[8080, 443]));
    }
}

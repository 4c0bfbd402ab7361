//! The fields podd stores but does not act on yet, in one table.
//!
//! Every field a client sends is stored and returned (the types are Kubernetes' own), but some
//! change nothing in podd yet: the node agent runs no lifecycle hooks, the scheduler knows no
//! pod affinity, the load balancer opens no node ports. A write that sets one answers with a
//! `Warning: 299 - "spec.hostNetwork: stored, but not acted on by podd yet"` header (kubectl
//! prints those), so that nobody mistakes storing for doing.
//!
//! The table was drawn up by reading what the node agent (`pod/`, `podd/src/agent`), the
//! runtime, the scheduler (`scheduler/`), the load balancer (`ebpf/podd-lb`), DNS (`dns/`)
//! and the controllers (`control-plane/src/controllers`) read. A field leaves the table when
//! podd starts honouring it. docs/API.md lists the same table for people.

use crate::Kind;
use serde_json::Value;

/// When an entry's field counts as set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Present with a value that says something: not null, `false`, `0`, `""`, `[]` or `{}`.
    Set,
    /// Equal to one of these strings.
    OneOf(&'static [&'static str]),
}

/// One field podd stores but does not act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unacted {
    pub kind: Kind,
    /// The field, dotted, with `[*]` for every item of a list (`spec.containers[*].lifecycle`).
    pub path: &'static str,
    pub when: When,
    /// What podd does instead (for docs/API.md and the tests; not sent).
    pub instead: &'static str,
}

const fn set(kind: Kind, path: &'static str, instead: &'static str) -> Unacted {
    Unacted {
        kind,
        path,
        when: When::Set,
        instead,
    }
}

const fn one_of(
    kind: Kind,
    path: &'static str,
    values: &'static [&'static str],
    instead: &'static str,
) -> Unacted {
    Unacted {
        kind,
        path,
        when: When::OneOf(values),
        instead,
    }
}

use Kind::{Job, Pod, Service};

/// The table. Pod entries also apply to the pod templates of Deployments and ReplicaSets
/// (under `spec.template.`).
pub const UNACTED: &[Unacted] = &[
    // Pod: namespaces and host integration.
    set(
        Pod,
        "spec.hostNetwork",
        "the pod gets its own network namespace",
    ),
    set(Pod, "spec.hostPID", "the pod gets its own PID namespace"),
    set(Pod, "spec.hostIPC", "the pod gets its own IPC namespace"),
    set(
        Pod,
        "spec.shareProcessNamespace",
        "each container has its own PID namespace",
    ),
    set(
        Pod,
        "spec.hostAliases",
        "/etc/hosts has the pod's own entries only",
    ),
    one_of(
        Pod,
        "spec.dnsPolicy",
        &["Default", "None"],
        "resolv.conf points at the cluster DNS (ClusterFirst)",
    ),
    set(Pod, "spec.dnsConfig", "resolv.conf is podd's own"),
    set(
        Pod,
        "spec.subdomain",
        "no DNS record is made for the pod's hostname",
    ),
    set(
        Pod,
        "spec.setHostnameAsFQDN",
        "the hostname is the short name",
    ),
    // Pod: scheduling.
    set(
        Pod,
        "spec.affinity.podAffinity",
        "the scheduler honours node affinity only",
    ),
    set(
        Pod,
        "spec.affinity.podAntiAffinity",
        "the scheduler honours node affinity only",
    ),
    set(
        Pod,
        "spec.topologySpreadConstraints",
        "the scheduler spreads by its own scores",
    ),
    set(Pod, "spec.schedulingGates", "the pod is scheduled at once"),
    set(Pod, "spec.runtimeClassName", "podd has one runtime"),
    // Pod: life cycle.
    set(
        Pod,
        "spec.activeDeadlineSeconds",
        "the pod runs without a deadline",
    ),
    set(
        Pod,
        "spec.readinessGates",
        "readiness is the containers' readiness",
    ),
    set(
        Pod,
        "spec.imagePullSecrets",
        "images come from the node's image store",
    ),
    set(
        Pod,
        "spec.containers[*].lifecycle",
        "no postStart or preStop hook runs",
    ),
    set(
        Pod,
        "spec.containers[*].startupProbe",
        "liveness and readiness probes start at once",
    ),
    set(
        Pod,
        "spec.containers[*].resizePolicy",
        "resources are fixed when the container starts",
    ),
    set(
        Pod,
        "spec.containers[*].volumeDevices",
        "no block devices are attached",
    ),
    // Pod: security contexts (the container's privileged, allowPrivilegeEscalation,
    // capabilities, readOnlyRootFilesystem, runAsUser and runAsGroup are enforced).
    set(
        Pod,
        "spec.securityContext.runAsUser",
        "set runAsUser on each container",
    ),
    set(
        Pod,
        "spec.securityContext.runAsGroup",
        "set runAsGroup on each container",
    ),
    set(
        Pod,
        "spec.securityContext.runAsNonRoot",
        "the user is not checked",
    ),
    set(
        Pod,
        "spec.securityContext.fsGroup",
        "volumes keep their owners",
    ),
    set(
        Pod,
        "spec.securityContext.supplementalGroups",
        "processes get no supplemental groups",
    ),
    set(Pod, "spec.securityContext.sysctls", "no sysctl is set"),
    set(
        Pod,
        "spec.securityContext.seLinuxOptions",
        "no SELinux label is set",
    ),
    set(
        Pod,
        "spec.securityContext.seccompProfile",
        "no seccomp filter is installed",
    ),
    set(
        Pod,
        "spec.securityContext.appArmorProfile",
        "no AppArmor profile is set",
    ),
    set(
        Pod,
        "spec.containers[*].securityContext.runAsNonRoot",
        "the user is not checked",
    ),
    set(
        Pod,
        "spec.containers[*].securityContext.seLinuxOptions",
        "no SELinux label is set",
    ),
    set(
        Pod,
        "spec.containers[*].securityContext.seccompProfile",
        "no seccomp filter is installed",
    ),
    set(
        Pod,
        "spec.containers[*].securityContext.appArmorProfile",
        "no AppArmor profile is set",
    ),
    set(
        Pod,
        "spec.containers[*].securityContext.procMount",
        "/proc is mounted the default way",
    ),
    // Service.
    one_of(
        Service,
        "spec.type",
        &["NodePort", "LoadBalancer"],
        "the Service is reachable on its cluster IP only; no node port is opened",
    ),
    one_of(
        Service,
        "spec.type",
        &["ExternalName"],
        "the cluster DNS has no record for the Service",
    ),
    set(
        Service,
        "spec.externalIPs",
        "traffic to these addresses is not balanced",
    ),
    set(
        Service,
        "spec.loadBalancerIP",
        "no load balancer is provisioned",
    ),
    set(
        Service,
        "spec.loadBalancerSourceRanges",
        "no load balancer is provisioned",
    ),
    set(
        Service,
        "spec.publishNotReadyAddresses",
        "endpoints list ready pods only",
    ),
    // Job (batch/v1).
    set(
        Job,
        "spec.podFailurePolicy",
        "every failed pod counts against backoffLimit",
    ),
    set(
        Job,
        "spec.successPolicy",
        "the Job succeeds when all its completions have succeeded",
    ),
    set(
        Job,
        "spec.backoffLimitPerIndex",
        "failures count against backoffLimit for the whole Job",
    ),
    set(
        Job,
        "spec.maxFailedIndexes",
        "failures count against backoffLimit for the whole Job",
    ),
];

/// The kinds whose pod template the Pod entries also apply to, and where it is.
fn template_prefix(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Deployment | Kind::ReplicaSet | Kind::Job | Kind::DaemonSet => Some("spec.template."),
        Kind::CronJob => Some("spec.jobTemplate.spec.template."),
        _ => None,
    }
}

fn says_something(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(l) => !l.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// The concrete paths under `v` that `path` (dotted, with `[*]`) names and that hold a
/// value, with the value.
fn find<'a>(v: &'a Value, path: &str, at: String, out: &mut Vec<(String, &'a Value)>) {
    let Some((head, rest)) = split_first(path) else {
        out.push((at, v));
        return;
    };
    let (field, each) = match head.strip_suffix("[*]") {
        Some(f) => (f, true),
        None => (head, false),
    };
    let Some(child) = v.get(field) else { return };
    let here = if at.is_empty() {
        field.to_string()
    } else {
        format!("{at}.{field}")
    };
    if each {
        for (i, item) in child.as_array().into_iter().flatten().enumerate() {
            find(item, rest, format!("{here}[{i}]"), out);
        }
    } else {
        find(child, rest, here, out);
    }
}

fn split_first(path: &str) -> Option<(&str, &str)> {
    if path.is_empty() {
        return None;
    }
    Some(path.split_once('.').unwrap_or((path, "")))
}

/// The warnings for a write of `obj` (an object of `kind`, as JSON), one per field set that
/// podd does not act on, in table order: `spec.hostNetwork: stored, but not acted on by podd
/// yet`.
pub fn warnings(kind: Kind, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let prefix = template_prefix(kind);
    for e in UNACTED {
        let path = if e.kind == kind {
            e.path.to_string()
        } else if e.kind == Kind::Pod
            && let Some(p) = prefix
        {
            format!("{p}{}", e.path)
        } else {
            continue;
        };
        let mut found = Vec::new();
        find(obj, &path, String::new(), &mut found);
        for (at, v) in found {
            let w = match e.when {
                When::Set if says_something(v) => {
                    format!("{at}: stored, but not acted on by podd yet")
                }
                When::OneOf(values) if v.as_str().is_some_and(|s| values.contains(&s)) => {
                    format!("{at}: {v} is stored, but not acted on by podd yet")
                }
                _ => continue,
            };
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn host_network_warns_in_kubernetes_form() {
        let pod = json!({"spec": {"hostNetwork": true, "containers": [{"name": "c"}]}});
        assert_eq!(
            warnings(Kind::Pod, &pod),
            ["spec.hostNetwork: stored, but not acted on by podd yet"]
        );
    }

    #[test]
    fn defaults_and_false_do_not_warn() {
        let pod = json!({"spec": {"hostNetwork": false, "dnsPolicy": "ClusterFirst",
            "securityContext": {}, "containers": [{"name": "c", "securityContext":
            {"privileged": true, "runAsUser": 1000}, "readinessProbe": {"exec": {}}}]}});
        assert!(warnings(Kind::Pod, &pod).is_empty());
    }

    #[test]
    fn list_items_are_named_by_index() {
        let pod = json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "lifecycle": {"preStop": {"exec": {"command": ["true"]}}},
             "startupProbe": {"exec": {"command": ["true"]}}},
        ], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]}}}});
        assert_eq!(
            warnings(Kind::Pod, &pod),
            [
                "spec.affinity.podAntiAffinity: stored, but not acted on by podd yet",
                "spec.containers[1].lifecycle: stored, but not acted on by podd yet",
                "spec.containers[1].startupProbe: stored, but not acted on by podd yet",
            ]
        );
    }

    #[test]
    fn templates_of_workloads_warn_too() {
        let d = json!({"spec": {"template": {"spec": {"hostPID": true, "containers": []}}}});
        assert_eq!(
            warnings(Kind::Deployment, &d),
            ["spec.template.spec.hostPID: stored, but not acted on by podd yet"]
        );
        assert!(warnings(Kind::Node, &json!({"spec": {"hostPID": true}})).is_empty());
    }

    #[test]
    fn service_types_by_value() {
        let np = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        assert_eq!(
            warnings(Kind::Service, &np),
            ["spec.type: \"NodePort\" is stored, but not acted on by podd yet"]
        );
        let cip = json!({"spec": {"type": "ClusterIP"}});
        assert!(warnings(Kind::Service, &cip).is_empty());
    }

    #[test]
    fn every_entry_is_found_by_its_own_path() {
        for e in UNACTED {
            let value = match e.when {
                When::Set => json!(true),
                When::OneOf(v) => json!(v[0]),
            };
            // Build the object the path names, one item for each `[*]`.
            let mut obj = value;
            for seg in e.path.rsplit('.') {
                obj = match seg.strip_suffix("[*]") {
                    Some(f) => json!({ f: [obj] }),
                    None => json!({ seg: obj }),
                };
            }
            let w = warnings(e.kind, &obj);
            assert!(
                w.iter().any(|w| w.contains("stored, but not acted on")),
                "{}: {w:?}",
                e.path
            );
            assert!(!e.instead.is_empty());
        }
    }
}

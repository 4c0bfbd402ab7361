//! Validation of objects before they are stored: Kubernetes' DNS-1123 naming rules, label
//! syntax, and the structural rules of each kind. Every problem is reported at once, each with
//! the path of the field it concerns (`spec.template.spec.containers[0].image: required`).

use crate::meta::{ObjectMeta, OwnerReference};
use crate::node::Node;
use crate::pod::{Container, Pod, PodSpec};
use crate::service::{Endpoints, Service};
use crate::workloads::{Deployment, HorizontalPodAutoscaler, IntOrPercent};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// A JSON-ish path: `metadata.name`, `spec.containers[0].ports[1].containerPort`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", parts.join("; "))
    }
}

/// Problems listed in one answer at most: a hostile object with 300,000 bad labels must not
/// make an error of 300,000 lines. Past this, one last entry says that more were left out.
pub const MAX_REPORTED_ERRORS: usize = 1000;

impl ValidationErrors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        match self.0.len() {
            n if n < MAX_REPORTED_ERRORS => self.0.push(FieldError {
                field: field.into(),
                message: message.into(),
            }),
            MAX_REPORTED_ERRORS => self.0.push(FieldError {
                field: "<object>".into(),
                message: format!(
                    "more problems were found; only the first {MAX_REPORTED_ERRORS} are listed"
                ),
            }),
            _ => {}
        }
    }

    fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// The total size of an object's annotations, keys and values: 256 KiB, as Kubernetes
/// (`TotalAnnotationSizeLimitB`).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Containers plus init containers in one pod. Kubernetes sets no number (only its 1.5 MiB
/// object size bounds them); podd caps them at 100, because each is a process, a cgroup and a
/// log on the node, and a pod of 100,000 made the server hold hundreds of MB. The cap is
/// checked on the JSON, before the pod is decoded.
pub const MAX_CONTAINERS: usize = 100;

/// A DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, at
/// most 63 characters. Returns why not, when not.
pub fn check_dns1123_label(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("required".into());
    }
    if s.len() > DNS1123_LABEL_MAX {
        return Some(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters (got {})",
            s.len()
        ));
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !ok_chars || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Some(format!(
            "{s:?} is not a valid DNS-1123 label: use lower-case letters, digits and '-', \
             starting and ending with a letter or digit (e.g. \"my-name\")"
        ));
    }
    None
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn check_dns1123_subdomain(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("required".into());
    }
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Some(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters (got {})",
            s.len()
        ));
    }
    if s.split('.').any(|l| check_dns1123_label(l).is_some()) {
        return Some(format!(
            "{s:?} is not a valid DNS-1123 subdomain: use lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit (e.g. \"example.com\")"
        ));
    }
    None
}

/// A DNS-1035 label (Service names): a DNS-1123 label that starts with a letter.
pub fn check_dns1035_label(s: &str) -> Option<String> {
    if let Some(e) = check_dns1123_label(s) {
        return Some(e);
    }
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return Some(format!(
            "{s:?} is not a valid DNS-1035 label: it must start with a lower-case letter"
        ));
    }
    None
}

/// The name part of a label key, or a label value: at most 63 characters of alphanumerics,
/// '-', '_' and '.', starting and ending alphanumeric.
fn check_qualified_part(s: &str, what: &str) -> Option<String> {
    if s.len() > 63 {
        return Some(format!("{what} {s:?} must be no more than 63 characters"));
    }
    let b = s.as_bytes();
    let ok = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Some(format!(
            "{what} {s:?} is invalid: use letters, digits, '-', '_' and '.', starting and ending \
             with a letter or digit"
        ));
    }
    None
}

/// A label key: `[prefix/]name`, the prefix a DNS-1123 subdomain.
pub fn check_label_key(k: &str) -> Option<String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && let Some(e) = check_dns1123_subdomain(p)
    {
        return Some(format!("label key prefix: {e}"));
    }
    if name.is_empty() {
        return Some(format!("label key {k:?} has an empty name"));
    }
    check_qualified_part(name, "label key")
}

/// A label value: empty, or like a label key's name.
pub fn check_label_value(v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    check_qualified_part(v, "label value")
}

fn check_labels(errs: &mut ValidationErrors, path: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if let Some(e) = check_label_key(k) {
            errs.push(format!("{path}[{k}]"), e);
        }
        if let Some(e) = check_label_value(v) {
            errs.push(format!("{path}[{k}]"), e);
        }
    }
}

/// How an object's name must look.
#[derive(Clone, Copy)]
enum NameRule {
    Subdomain,
    Dns1035,
}

fn check_meta(
    errs: &mut ValidationErrors,
    path: &str,
    meta: &ObjectMeta,
    namespaced: bool,
    rule: NameRule,
) {
    // An empty name is allowed with generateName: the server fills it before validating
    // again, but a bad generateName prefix is caught here.
    if meta.name.is_empty() && !meta.generate_name.is_empty() {
        let probe = format!("{}x", meta.generate_name);
        let bad = match rule {
            NameRule::Subdomain => check_dns1123_subdomain(&probe),
            NameRule::Dns1035 => check_dns1035_label(&probe),
        };
        if let Some(e) = bad {
            errs.push(format!("{path}.generateName"), e);
        }
    } else {
        let bad = match rule {
            NameRule::Subdomain => check_dns1123_subdomain(&meta.name),
            NameRule::Dns1035 => check_dns1035_label(&meta.name),
        };
        if let Some(e) = bad {
            errs.push(format!("{path}.name"), e);
        }
    }
    if namespaced {
        if !meta.namespace.is_empty()
            && let Some(e) = check_dns1123_label(&meta.namespace)
        {
            errs.push(format!("{path}.namespace"), e);
        }
    } else if !meta.namespace.is_empty() {
        errs.push(
            format!("{path}.namespace"),
            "must be empty: this kind is cluster-scoped",
        );
    }
    check_labels(errs, &format!("{path}.labels"), &meta.labels);
    for k in meta.annotations.keys() {
        if let Some(e) = check_label_key(k) {
            errs.push(format!("{path}.annotations[{k}]"), e);
        }
    }
    let annotations_bytes: usize = meta
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotations_bytes > MAX_ANNOTATIONS_BYTES {
        errs.push(
            format!("{path}.annotations"),
            format!(
                "too long: the annotations may hold at most {MAX_ANNOTATIONS_BYTES} bytes in \
                 total, keys and values (these hold {annotations_bytes})"
            ),
        );
    }
    for (i, o) in meta.owner_references.iter().enumerate() {
        check_owner(errs, &format!("{path}.ownerReferences[{i}]"), o);
    }
    if meta
        .owner_references
        .iter()
        .filter(|o| o.controller)
        .count()
        > 1
    {
        errs.push(
            format!("{path}.ownerReferences"),
            "only one reference may have controller=true",
        );
    }
}

fn check_owner(errs: &mut ValidationErrors, path: &str, o: &OwnerReference) {
    if o.kind.is_empty() {
        errs.push(format!("{path}.kind"), "required");
    }
    if o.name.is_empty() {
        errs.push(format!("{path}.name"), "required");
    }
    if o.uid.is_empty() {
        errs.push(format!("{path}.uid"), "required");
    }
}

fn check_container(errs: &mut ValidationErrors, path: &str, c: &Container) {
    if let Some(e) = check_dns1123_label(&c.name) {
        errs.push(format!("{path}.name"), e);
    }
    if c.image.trim().is_empty() {
        errs.push(format!("{path}.image"), "required");
    }
    let mut port_names = BTreeSet::new();
    for (i, p) in c.ports.iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        if p.container_port == 0 {
            errs.push(format!("{pp}.containerPort"), "must be between 1 and 65535");
        }
        if p.host_port == Some(0) {
            errs.push(format!("{pp}.hostPort"), "must be between 1 and 65535");
        }
        if !p.name.is_empty() {
            if let Some(e) = check_port_name(&p.name) {
                errs.push(format!("{pp}.name"), e);
            }
            if !port_names.insert(&p.name) {
                errs.push(
                    format!("{pp}.name"),
                    format!("duplicate port name {:?}", p.name),
                );
            }
        }
    }
    let mut env_names = BTreeSet::new();
    for (i, e) in c.env.iter().enumerate() {
        let ep = format!("{path}.env[{i}].name");
        if e.name.is_empty() {
            errs.push(ep, "required");
        } else if e.name.contains('=') || e.name.contains('\0') {
            errs.push(ep, format!("{:?} must not contain '=' or NUL", e.name));
        } else if !env_names.insert(&e.name) {
            errs.push(ep, format!("duplicate variable {:?}", e.name));
        }
    }
    if let Some(sc) = &c.security_context
        && sc.privileged
        && sc.allow_privilege_escalation == Some(false)
    {
        // As Kubernetes: a privileged container can always escalate.
        errs.push(
            format!("{path}.securityContext"),
            "cannot set allowPrivilegeEscalation to false and privileged to true",
        );
    }
    let r = &c.resources;
    if let (Some(req), Some(lim)) = (r.requests.cpu, r.limits.cpu)
        && req > lim
    {
        errs.push(
            format!("{path}.resources.requests.cpu"),
            format!("must be less than or equal to the cpu limit ({lim})"),
        );
    }
    if let (Some(req), Some(lim)) = (r.requests.memory, r.limits.memory)
        && req > lim
    {
        errs.push(
            format!("{path}.resources.requests.memory"),
            format!("must be less than or equal to the memory limit ({lim})"),
        );
    }
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        if m.name.is_empty() {
            errs.push(format!("{mp}.name"), "required");
        }
        if !m.mount_path.starts_with('/') {
            errs.push(format!("{mp}.mountPath"), "must be an absolute path");
        }
    }
    for (name, probe) in [
        ("readinessProbe", &c.readiness_probe),
        ("livenessProbe", &c.liveness_probe),
    ] {
        if let Some(p) = probe {
            let handlers = usize::from(p.exec.is_some())
                + usize::from(p.tcp_socket.is_some())
                + usize::from(p.http_get.is_some());
            if handlers != 1 {
                errs.push(
                    format!("{path}.{name}"),
                    "must specify exactly one of exec, tcpSocket or httpGet",
                );
            }
            if p.period_seconds == Some(0) {
                errs.push(format!("{path}.{name}.periodSeconds"), "must be at least 1");
            }
        }
    }
}

/// IANA service names: at most 15 characters, lower-case alphanumerics and '-', with a letter.
fn check_port_name(s: &str) -> Option<String> {
    if s.len() > 15 {
        return Some(format!("{s:?} must be no more than 15 characters"));
    }
    if check_dns1123_label(s).is_some() || s.contains("--") {
        return Some(format!(
            "{s:?} is invalid: use lower-case letters, digits and single '-' (e.g. \"http\")"
        ));
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        return Some(format!("{s:?} must contain at least one letter"));
    }
    None
}

fn check_container_count(errs: &mut ValidationErrors, path: &str, containers: usize, init: usize) {
    if containers + init > MAX_CONTAINERS {
        errs.push(
            format!("{path}.containers"),
            format!(
                "too many: a pod may have at most {MAX_CONTAINERS} containers and init \
                 containers together (this one has {containers} and {init}); split it into \
                 several pods"
            ),
        );
    }
}

/// Validates a pod spec under `path` (e.g. `spec` or `spec.template.spec`).
pub fn validate_pod_spec(errs: &mut ValidationErrors, path: &str, spec: &PodSpec) {
    if spec.containers.is_empty() {
        errs.push(
            format!("{path}.containers"),
            "required: at least one container",
        );
    }
    check_container_count(
        errs,
        path,
        spec.containers.len(),
        spec.init_containers.len(),
    );
    let mut names = BTreeSet::new();
    for (list, cs) in [
        ("containers", &spec.containers),
        ("initContainers", &spec.init_containers),
    ] {
        for (i, c) in cs.iter().enumerate() {
            let cp = format!("{path}.{list}[{i}]");
            check_container(errs, &cp, c);
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.push(
                    format!("{cp}.name"),
                    format!("duplicate container name {:?}", c.name),
                );
            }
        }
    }
    let mut vol_names = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        if let Some(e) = check_dns1123_label(&v.name) {
            errs.push(format!("{vp}.name"), e);
        } else if !vol_names.insert(v.name.as_str()) {
            errs.push(
                format!("{vp}.name"),
                format!("duplicate volume name {:?}", v.name),
            );
        }
        match (&v.empty_dir, &v.host_path) {
            (Some(_), None) => {}
            (None, Some(h)) => {
                if !h.path.starts_with('/') {
                    errs.push(format!("{vp}.hostPath.path"), "must be an absolute path");
                }
            }
            _ => errs.push(
                vp.clone(),
                "must specify exactly one of emptyDir or hostPath",
            ),
        }
    }
    for (list, cs) in [
        ("containers", &spec.containers),
        ("initContainers", &spec.init_containers),
    ] {
        for (i, c) in cs.iter().enumerate() {
            for (j, m) in c.volume_mounts.iter().enumerate() {
                if !m.name.is_empty() && !vol_names.contains(m.name.as_str()) {
                    errs.push(
                        format!("{path}.{list}[{i}].volumeMounts[{j}].name"),
                        format!("volume {:?} is not defined in {path}.volumes", m.name),
                    );
                }
            }
        }
    }
    if !spec.node_name.is_empty()
        && let Some(e) = check_dns1123_subdomain(&spec.node_name)
    {
        errs.push(format!("{path}.nodeName"), e);
    }
    check_labels(errs, &format!("{path}.nodeSelector"), &spec.node_selector);
    for (i, t) in spec.tolerations.iter().enumerate() {
        let tp = format!("{path}.tolerations[{i}]");
        match t.operator.as_str() {
            "" | "Equal" => {}
            "Exists" => {
                if !t.value.is_empty() {
                    errs.push(
                        format!("{tp}.value"),
                        "must be empty when operator is Exists",
                    );
                }
            }
            other => errs.push(
                format!("{tp}.operator"),
                format!("{other:?} is not supported: use Equal or Exists"),
            ),
        }
        check_taint_effect(errs, &format!("{tp}.effect"), &t.effect, true);
    }
    if let Some(a) = &spec.affinity
        && let Some(na) = &a.node_affinity
        && let Some(req) = &na.required
    {
        let ap =
            format!("{path}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution");
        for (i, term) in req.node_selector_terms.iter().enumerate() {
            for (j, e) in term.match_expressions.iter().enumerate() {
                let ep = format!("{ap}.nodeSelectorTerms[{i}].matchExpressions[{j}]");
                if let Some(err) = check_label_key(&e.key) {
                    errs.push(format!("{ep}.key"), err);
                }
                match e.operator.as_str() {
                    "In" | "NotIn" => {
                        if e.values.is_empty() {
                            errs.push(format!("{ep}.values"), "required for In and NotIn");
                        }
                    }
                    "Exists" | "DoesNotExist" => {
                        if !e.values.is_empty() {
                            errs.push(
                                format!("{ep}.values"),
                                "must be empty for Exists and DoesNotExist",
                            );
                        }
                    }
                    other => errs.push(
                        format!("{ep}.operator"),
                        format!(
                            "{other:?} is not supported: use In, NotIn, Exists or DoesNotExist"
                        ),
                    ),
                }
            }
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(
            format!("{path}.terminationGracePeriodSeconds"),
            "must be >= 0",
        );
    }
}

fn check_taint_effect(errs: &mut ValidationErrors, path: &str, effect: &str, empty_ok: bool) {
    match effect {
        "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
        "" if empty_ok => {}
        other => errs.push(
            path,
            format!("{other:?} is not supported: use NoSchedule, PreferNoSchedule or NoExecute"),
        ),
    }
}

pub fn validate_pod(pod: &Pod) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    check_meta(
        &mut errs,
        "metadata",
        &pod.metadata,
        true,
        NameRule::Subdomain,
    );
    validate_pod_spec(&mut errs, "spec", &pod.spec);
    errs.into_result()
}

fn check_int_or_percent(errs: &mut ValidationErrors, path: &str, v: &IntOrPercent) {
    if let IntOrPercent::Percent(s) = v
        && v.resolve(100, false).is_none()
    {
        errs.push(
            path,
            format!("{s:?} is neither a count nor a percentage like \"25%\""),
        );
    }
}

pub fn validate_deployment(d: &Deployment) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    check_meta(
        &mut errs,
        "metadata",
        &d.metadata,
        true,
        NameRule::Subdomain,
    );
    let spec = &d.spec;
    if spec.selector.is_empty() {
        errs.push(
            "spec.selector",
            "required: matchLabels must select the template's labels",
        );
    } else {
        check_labels(
            &mut errs,
            "spec.selector.matchLabels",
            &spec.selector.match_labels,
        );
        if !spec.selector.matches(&spec.template.metadata.labels) {
            errs.push(
                "spec.template.metadata.labels",
                "must match spec.selector: add the selector's labels to the template",
            );
        }
    }
    check_labels(
        &mut errs,
        "spec.template.metadata.labels",
        &spec.template.metadata.labels,
    );
    validate_pod_spec(&mut errs, "spec.template.spec", &spec.template.spec);
    if !spec.template.spec.node_name.is_empty() {
        errs.push("spec.template.spec.nodeName", "must be empty in a template");
    }
    match spec.strategy.kind.as_str() {
        "RollingUpdate" | "" => {
            let ru = &spec.strategy.rolling_update;
            check_int_or_percent(
                &mut errs,
                "spec.strategy.rollingUpdate.maxSurge",
                &ru.max_surge,
            );
            check_int_or_percent(
                &mut errs,
                "spec.strategy.rollingUpdate.maxUnavailable",
                &ru.max_unavailable,
            );
            let surge = ru.max_surge.resolve(spec.replicas.max(1), true);
            let unavail = ru.max_unavailable.resolve(spec.replicas.max(1), false);
            if surge == Some(0) && unavail == Some(0) {
                errs.push(
                    "spec.strategy.rollingUpdate",
                    "maxSurge and maxUnavailable may not both be 0",
                );
            }
        }
        "Recreate" => {}
        other => errs.push(
            "spec.strategy.type",
            format!("{other:?} is not supported: use RollingUpdate or Recreate"),
        ),
    }
    errs.into_result()
}

pub fn validate_service(s: &Service) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    check_meta(&mut errs, "metadata", &s.metadata, true, NameRule::Dns1035);
    check_labels(&mut errs, "spec.selector", &s.spec.selector);
    if s.spec.ports.is_empty() {
        errs.push("spec.ports", "required: at least one port");
    }
    let mut seen = BTreeSet::new();
    for (i, p) in s.spec.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        if p.port == 0 {
            errs.push(format!("{pp}.port"), "must be between 1 and 65535");
        }
        if p.target_port == Some(0) {
            errs.push(format!("{pp}.targetPort"), "must be between 1 and 65535");
        }
        if s.spec.ports.len() > 1 && p.name.is_empty() {
            errs.push(
                format!("{pp}.name"),
                "required when the service has several ports",
            );
        }
        if !p.name.is_empty()
            && let Some(e) = check_dns1123_label(&p.name)
        {
            errs.push(format!("{pp}.name"), e);
        }
        if !seen.insert((p.port, p.protocol)) {
            errs.push(pp, format!("duplicate port {}/{:?}", p.port, p.protocol));
        }
    }
    let ip = &s.spec.cluster_ip;
    if !ip.is_empty() && ip != "None" && ip.parse::<Ipv4Addr>().is_err() {
        errs.push("spec.clusterIP", format!("{ip:?} is not an IPv4 address"));
    }
    match s.spec.session_affinity.as_str() {
        "" | "None" | "ClientIP" => {}
        other => errs.push(
            "spec.sessionAffinity",
            format!("{other:?} is not supported: use None or ClientIP"),
        ),
    }
    errs.into_result()
}

pub fn validate_endpoints(e: &Endpoints) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    check_meta(&mut errs, "metadata", &e.metadata, true, NameRule::Dns1035);
    for (i, s) in e.subsets.iter().enumerate() {
        for (list, addrs) in [
            ("addresses", &s.addresses),
            ("notReadyAddresses", &s.not_ready_addresses),
        ] {
            for (j, a) in addrs.iter().enumerate() {
                if a.ip.parse::<Ipv4Addr>().is_err() {
                    errs.push(
                        format!("subsets[{i}].{list}[{j}].ip"),
                        format!("{:?} is not an IPv4 address", a.ip),
                    );
                }
            }
        }
        for (j, p) in s.ports.iter().enumerate() {
            if p.port == 0 {
                errs.push(
                    format!("subsets[{i}].ports[{j}].port"),
                    "must be between 1 and 65535",
                );
            }
        }
    }
    errs.into_result()
}

pub fn validate_node(n: &Node) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    check_meta(
        &mut errs,
        "metadata",
        &n.metadata,
        false,
        NameRule::Subdomain,
    );
    for (i, t) in n.spec.taints.iter().enumerate() {
        if let Some(e) = check_label_key(&t.key) {
            errs.push(format!("spec.taints[{i}].key"), e);
        }
        check_taint_effect(
            &mut errs,
            &format!("spec.taints[{i}].effect"),
            &t.effect,
            false,
        );
    }
    let cidr = &n.spec.pod_cidr;
    if !cidr.is_empty() {
        let ok = cidr.split_once('/').is_some_and(|(a, l)| {
            a.parse::<Ipv4Addr>().is_ok() && l.parse::<u8>().is_ok_and(|l| l <= 32)
        });
        if !ok {
            errs.push(
                "spec.podCIDR",
                format!("{cidr:?} is not a CIDR like 10.244.1.0/24"),
            );
        }
    }
    errs.into_result()
}

pub fn validate_hpa(h: &HorizontalPodAutoscaler) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    check_meta(
        &mut errs,
        "metadata",
        &h.metadata,
        true,
        NameRule::Subdomain,
    );
    let s = &h.spec;
    if s.scale_target_ref.kind != "Deployment" {
        errs.push(
            "spec.scaleTargetRef.kind",
            format!(
                "{:?} is not supported: use Deployment",
                s.scale_target_ref.kind
            ),
        );
    }
    if let Some(e) = check_dns1123_subdomain(&s.scale_target_ref.name) {
        errs.push("spec.scaleTargetRef.name", e);
    }
    if s.min_replicas < 1 {
        errs.push("spec.minReplicas", "must be at least 1");
    }
    if s.max_replicas < s.min_replicas.max(1) {
        errs.push("spec.maxReplicas", "must be at least minReplicas");
    }
    if s.target_cpu_utilization_percentage == 0 {
        errs.push("spec.targetCPUUtilizationPercentage", "must be at least 1");
    }
    errs.into_result()
}

/// The limits that are cheap to check on the JSON and costly to check after decoding it (a
/// pod of 100,000 containers): run on a request's object before it is decoded. Only these
/// are reported when they fail; the object is refused before its other fields are looked at.
pub fn check_limits_before_decode(
    kind: crate::Kind,
    v: &serde_json::Value,
) -> Result<(), ValidationErrors> {
    use crate::Kind;
    let mut errs = ValidationErrors::default();
    let spec_path = match kind {
        Kind::Pod => Some(("spec", "/spec")),
        Kind::Deployment => Some(("spec.template.spec", "/spec/template/spec")),
        _ => None,
    };
    if let Some((path, ptr)) = spec_path {
        let len = |field: &str| {
            v.pointer(&format!("{ptr}/{field}"))
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len)
        };
        check_container_count(&mut errs, path, len("containers"), len("initContainers"));
    }
    errs.into_result()
}

/// Validates any object, given its kind and JSON form. The JSON must already have the shape of
/// the kind (the caller decodes it); this checks the rules.
pub fn validate_value(kind: crate::Kind, v: &serde_json::Value) -> Result<(), ValidationErrors> {
    use crate::Kind;
    fn decode<T: serde::de::DeserializeOwned>(
        v: &serde_json::Value,
    ) -> Result<T, ValidationErrors> {
        serde_json::from_value(v.clone()).map_err(|e| {
            ValidationErrors(vec![FieldError {
                field: "<body>".into(),
                message: e.to_string(),
            }])
        })
    }
    match kind {
        Kind::Pod => validate_pod(&decode(v)?),
        Kind::Deployment => validate_deployment(&decode(v)?),
        Kind::Service => validate_service(&decode(v)?),
        Kind::Endpoints => validate_endpoints(&decode(v)?),
        Kind::Node => validate_node(&decode(v)?),
        Kind::HorizontalPodAutoscaler => validate_hpa(&decode(v)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(e: ValidationErrors) -> Vec<String> {
        e.0.into_iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn dns_names() {
        assert!(check_dns1123_label("web-1").is_none());
        assert!(check_dns1123_label("Web").is_some());
        assert!(check_dns1123_label("-web").is_some());
        assert!(check_dns1123_label("web-").is_some());
        assert!(check_dns1123_label(&"a".repeat(64)).is_some());
        assert!(check_dns1123_subdomain("a.b-c.d").is_none());
        assert!(check_dns1123_subdomain("a..b").is_some());
        assert!(check_dns1035_label("1web").is_some());
        assert!(check_dns1035_label("web1").is_none());
    }

    #[test]
    fn labels() {
        assert!(check_label_key("app").is_none());
        assert!(check_label_key("example.com/app_Name").is_none());
        assert!(check_label_key("Example.com/app").is_some());
        assert!(check_label_key("a/b/c").is_some());
        assert!(check_label_value("").is_none());
        assert!(check_label_value("v1.2_3").is_none());
        assert!(check_label_value("-x").is_some());
        assert!(check_label_value(&"x".repeat(64)).is_some());
    }

    #[test]
    fn deployment_reports_every_problem_with_paths() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "Web_1", "labels": {"-bad": "ok"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "other"}},
                    "spec": {"containers": [
                        {"name": "c", "image": ""},
                        {"name": "c", "image": "busybox", "ports": [{"containerPort": 0}],
                         "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}
                    ]}
                }
            }
        }))
        .unwrap();
        let f = fields(validate_deployment(&d).unwrap_err());
        for want in [
            "metadata.name: ",
            "metadata.labels[-bad]: ",
            "spec.template.metadata.labels: must match spec.selector",
            "spec.template.spec.containers[0].image: required",
            "spec.template.spec.containers[1].name: duplicate container name",
            "spec.template.spec.containers[1].ports[0].containerPort: must be between",
            "spec.template.spec.containers[1].resources.requests.cpu: must be less",
        ] {
            assert!(
                f.iter().any(|e| e.starts_with(want)),
                "missing {want:?} in {f:#?}"
            );
        }
        assert_eq!(f.len(), 7, "{f:#?}");
    }

    #[test]
    fn valid_objects_pass() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "busybox",
                        "ports": [{"containerPort": 80, "name": "http"}]}]}}}
        }))
        .unwrap();
        validate_deployment(&d).unwrap();
        let s: Service = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        validate_service(&s).unwrap();
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "node-1"},
            "spec": {"podCIDR": "10.244.1.0/24"}}))
        .unwrap();
        validate_node(&n).unwrap();
    }

    #[test]
    fn pod_without_containers_and_bad_volume() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"generateName": "web-"},
            "spec": {"containers": [], "volumes": [{"name": "v"}]}
        }))
        .unwrap();
        let f = fields(validate_pod(&p).unwrap_err());
        assert!(
            f.contains(&"spec.containers: required: at least one container".to_string()),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.volumes[0]: must specify")),
            "{f:?}"
        );
        let p2: Pod = serde_json::from_value(json!({"metadata": {"generateName": "Web-"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}))
        .unwrap();
        let f2 = fields(validate_pod(&p2).unwrap_err());
        assert!(f2[0].starts_with("metadata.generateName"), "{f2:?}");
    }

    #[test]
    fn limits_on_labels_annotations_and_containers() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p",
                "labels": {"ok": "x".repeat(63), "long": "x".repeat(64), "Bad Key!": "v",
                    format!("{}/n", "a".repeat(254)): "v", "n".repeat(64): "v"},
                "annotations": {"big": "x".repeat(300 * 1024)}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}
        }))
        .unwrap();
        let f = fields(validate_pod(&p).unwrap_err());
        for want in [
            "metadata.labels[long]: label value",
            "metadata.labels[Bad Key!]: label key",
            "metadata.annotations: too long",
        ] {
            assert!(
                f.iter().any(|e| e.starts_with(want)),
                "missing {want:?} in {f:#?}"
            );
        }
        assert_eq!(f.len(), 5, "{f:#?}");
        let many: Vec<_> = (0..101)
            .map(|i| json!({"name": format!("c{i}"), "image": "x"}))
            .collect();
        let v = json!({"metadata": {"name": "p"}, "spec": {"containers": many}});
        let f = fields(check_limits_before_decode(crate::Kind::Pod, &v).unwrap_err());
        assert!(f[0].starts_with("spec.containers: too many"), "{f:?}");
        let d = json!({"spec": {"template": {"spec": {"containers": [], "initContainers": (0..101).map(|_| json!({})).collect::<Vec<_>>()}}}});
        assert!(check_limits_before_decode(crate::Kind::Deployment, &d).is_err());
        let mut e = ValidationErrors::default();
        for i in 0..5000 {
            e.push(format!("f{i}"), "bad");
        }
        assert_eq!(e.0.len(), MAX_REPORTED_ERRORS + 1);
    }

    #[test]
    fn service_and_hpa_rules() {
        let s: Service = serde_json::from_value(json!({"metadata": {"name": "1svc"},
            "spec": {"ports": [{"port": 80}, {"port": 80}], "clusterIP": "x", "sessionAffinity": "Sticky"}}))
        .unwrap();
        let f = fields(validate_service(&s).unwrap_err());
        assert!(f.iter().any(|e| e.starts_with("metadata.name")));
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.ports[1]: duplicate port"))
        );
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.ports[0].name: required"))
        );
        assert!(f.iter().any(|e| e.starts_with("spec.clusterIP")));
        assert!(f.iter().any(|e| e.starts_with("spec.sessionAffinity")));
        let h: HorizontalPodAutoscaler = serde_json::from_value(json!({"metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 3, "maxReplicas": 2}}))
        .unwrap();
        let f = fields(validate_hpa(&h).unwrap_err());
        assert_eq!(f.len(), 2, "{f:?}");
    }
}

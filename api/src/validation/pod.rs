//! Pods and pod templates (`ValidatePodSpec`): containers, ports, env, resources, volumes,
//! probes with their named ports, security contexts, tolerations, node affinity and the enums
//! of the spec.

use super::meta::{NameRule, check_labels, check_object_meta};
use super::names::{
    dns1123_label_errors, dns1123_subdomain_errors, iana_port_name_errors, qualified_name_errors,
};
use super::quantity::{QUANTITY_FORM_MSG, value as quantity_value};
use super::{FieldError, MAX_CONTAINERS, ValidationErrors};
use crate::{Container, IntOrString, Pod, PodSpec, Probe, ResourceRequirements};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) const NON_NEGATIVE: &str = "must be greater than or equal to 0";
pub(crate) const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
pub(crate) const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const RESTART_POLICIES: &[&str] = &["Always", "Never", "OnFailure"];
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["FallbackToLogsOnError", "File"];
const TAINT_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];
const ENV_NAME_MSG: &str = "a valid environment variable name must consist only of printable ASCII characters other than '='";

/// Where a pod spec sits: in a pod, or in a workload's template (where only `Always` may be
/// the restart policy, as Kubernetes requires of Deployments and ReplicaSets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpecOf {
    Pod,
    Template,
    /// A Job's template: the restart policy must be `OnFailure` or `Never`.
    JobTemplate,
}

pub(crate) fn validate_pod(errs: &mut ValidationErrors, pod: &Pod) {
    check_object_meta(errs, &pod.metadata, true, NameRule::Subdomain);
    match &pod.spec {
        Some(spec) => check_pod_spec(errs, "spec", spec, SpecOf::Pod),
        None => errs.push(FieldError::required("spec.containers", "")),
    }
}

/// Validates a pod spec under `path` (`spec`, or `spec.template.spec`) with the rules of a
/// pod's own spec.
pub fn validate_pod_spec(errs: &mut ValidationErrors, path: &str, spec: &PodSpec) {
    check_pod_spec(errs, path, spec, SpecOf::Pod);
}

fn not_supported(errs: &mut ValidationErrors, path: String, v: Option<&str>, allowed: &[&str]) {
    if let Some(v) = v
        && !allowed.contains(&v)
    {
        errs.push(FieldError::not_supported(path, v, allowed));
    }
}

fn non_negative<T: Into<i64> + Copy + std::fmt::Debug>(
    errs: &mut ValidationErrors,
    path: String,
    v: Option<T>,
) {
    if let Some(n) = v
        && n.into() < 0
    {
        errs.push(FieldError::invalid(path, n, NON_NEGATIVE));
    }
}

pub(crate) fn check_pod_spec(errs: &mut ValidationErrors, path: &str, spec: &PodSpec, of: SpecOf) {
    let init = spec.init_containers.as_deref().unwrap_or(&[]);
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    if spec.containers.len() + init.len() > MAX_CONTAINERS {
        errs.push(FieldError::too_many(
            format!("{path}.containers"),
            format!(
                "a pod may have at most {MAX_CONTAINERS} containers and init containers together"
            ),
        ));
    }
    let volumes = check_volumes(errs, path, spec);
    let mut names = BTreeSet::new();
    for (list, cs, is_init) in [
        ("initContainers", init, true),
        ("containers", &spec.containers[..], false),
    ] {
        for (i, c) in cs.iter().enumerate() {
            let cp = format!("{path}.{list}[{i}]");
            check_container(errs, &cp, c, is_init, &volumes);
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.push(FieldError::duplicate(format!("{cp}.name"), &c.name));
            }
        }
    }
    match of {
        SpecOf::Pod => not_supported(
            errs,
            format!("{path}.restartPolicy"),
            spec.restart_policy.as_deref(),
            RESTART_POLICIES,
        ),
        SpecOf::Template => not_supported(
            errs,
            format!("{path}.restartPolicy"),
            spec.restart_policy.as_deref(),
            &["Always"],
        ),
        SpecOf::JobTemplate => not_supported(
            errs,
            format!("{path}.restartPolicy"),
            spec.restart_policy.as_deref(),
            &["OnFailure", "Never"],
        ),
    }
    not_supported(
        errs,
        format!("{path}.dnsPolicy"),
        spec.dns_policy.as_deref(),
        DNS_POLICIES,
    );
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        for e in dns1123_subdomain_errors(n) {
            errs.push(FieldError::invalid(format!("{path}.nodeName"), n, e));
        }
    }
    for (field, v) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(n) = v.as_deref().filter(|n| !n.is_empty()) {
            for e in dns1123_label_errors(n) {
                errs.push(FieldError::invalid(format!("{path}.{field}"), n, e));
            }
        }
    }
    if let Some(n) = spec
        .service_account_name
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        for e in dns1123_subdomain_errors(n) {
            errs.push(FieldError::invalid(
                format!("{path}.serviceAccountName"),
                n,
                e,
            ));
        }
    }
    check_labels(
        errs,
        &format!("{path}.nodeSelector"),
        spec.node_selector.as_ref(),
    );
    non_negative(
        errs,
        format!("{path}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
    );
    if let Some(d) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&d)
    {
        errs.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            d,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    check_tolerations(errs, path, spec);
    check_node_affinity(errs, path, spec);
}

/// The pod's volumes; returns their names, for the mounts to refer to.
fn check_volumes<'a>(
    errs: &mut ValidationErrors,
    path: &str,
    spec: &'a PodSpec,
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        if v.name.is_empty() {
            errs.push(FieldError::required(format!("{vp}.name"), ""));
        } else {
            for e in dns1123_label_errors(&v.name) {
                errs.push(FieldError::invalid(format!("{vp}.name"), &v.name, e));
            }
            if !names.insert(v.name.as_str()) {
                errs.push(FieldError::duplicate(format!("{vp}.name"), &v.name));
            }
        }
        // Every field of a Volume but `name` is one volume source: count them on the JSON,
        // so that every source k8s-openapi knows counts, present and future.
        let sources = serde_json::to_value(v)
            .ok()
            .and_then(|j| {
                j.as_object()
                    .map(|o| o.keys().filter(|k| *k != "name").count())
            })
            .unwrap_or(0);
        match sources {
            0 => errs.push(FieldError::required(
                vp.clone(),
                "must specify a volume type",
            )),
            1 => {}
            _ => errs.push(FieldError::forbidden(
                vp.clone(),
                "may not specify more than 1 volume type",
            )),
        }
        if let Some(h) = &v.host_path {
            if h.path.is_empty() {
                errs.push(FieldError::required(format!("{vp}.hostPath.path"), ""));
            } else if !h.path.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{vp}.hostPath.path"),
                    &h.path,
                    "must be an absolute path",
                ));
            }
        }
    }
    names
}

fn check_container(
    errs: &mut ValidationErrors,
    path: &str,
    c: &Container,
    is_init: bool,
    volumes: &BTreeSet<&str>,
) {
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        for e in dns1123_label_errors(&c.name) {
            errs.push(FieldError::invalid(format!("{path}.name"), &c.name, e));
        }
    }
    match c.image.as_deref() {
        None | Some("") => errs.push(FieldError::required(format!("{path}.image"), "")),
        Some(i) if i.trim() != i => errs.push(FieldError::invalid(
            format!("{path}.image"),
            i,
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    not_supported(
        errs,
        format!("{path}.imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        PULL_POLICIES,
    );
    not_supported(
        errs,
        format!("{path}.terminationMessagePolicy"),
        c.termination_message_policy.as_deref(),
        TERMINATION_MESSAGE_POLICIES,
    );
    let sidecar = c.restart_policy.as_deref() == Some("Always");
    if let Some(rp) = c.restart_policy.as_deref() {
        if is_init {
            not_supported(errs, format!("{path}.restartPolicy"), Some(rp), &["Always"]);
        } else {
            errs.push(FieldError::forbidden(
                format!("{path}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    check_ports(errs, path, c);
    check_env(errs, path, c);
    check_resources(errs, &format!("{path}.resources"), c.resources.as_ref());
    check_mounts(errs, path, c, volumes);
    for (name, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        let Some(p) = probe else { continue };
        let pp = format!("{path}.{name}");
        if is_init && !sidecar {
            errs.push(FieldError::forbidden(
                pp,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        check_probe(errs, &pp, p, c, name != "readinessProbe");
    }
    if let Some(l) = &c.lifecycle {
        for (name, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            let Some(h) = h else { continue };
            let hp = format!("{path}.lifecycle.{name}");
            let handlers = usize::from(h.exec.is_some())
                + usize::from(h.http_get.is_some())
                + usize::from(h.tcp_socket.is_some())
                + usize::from(h.sleep.is_some());
            check_handler_count(errs, &hp, handlers);
            if let Some(g) = &h.http_get {
                check_port_ref(errs, &format!("{hp}.httpGet.port"), &g.port, None);
            }
            if let Some(t) = &h.tcp_socket {
                check_port_ref(errs, &format!("{hp}.tcpSocket.port"), &t.port, None);
            }
        }
    }
    if let Some(sc) = &c.security_context
        && sc.privileged == Some(true)
        && sc.allow_privilege_escalation == Some(false)
    {
        // Kubernetes' rule: a privileged container can always escalate.
        errs.push(FieldError::invalid(
            format!("{path}.securityContext"),
            "allowPrivilegeEscalation",
            "cannot set allowPrivilegeEscalation to false and privileged to true",
        ));
    }
}

fn check_ports(errs: &mut ValidationErrors, path: &str, c: &Container) {
    let mut names = BTreeSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        if p.container_port == 0 {
            errs.push(FieldError::required(format!("{pp}.containerPort"), ""));
        } else if !(1..=65535).contains(&p.container_port) {
            errs.push(FieldError::invalid(
                format!("{pp}.containerPort"),
                p.container_port,
                PORT_RANGE,
            ));
        }
        if let Some(h) = p.host_port
            && h != 0
            && !(1..=65535).contains(&h)
        {
            errs.push(FieldError::invalid(format!("{pp}.hostPort"), h, PORT_RANGE));
        }
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            let bad = iana_port_name_errors(n);
            // As Kubernetes: names are unique within a container, checked once valid.
            if bad.is_empty() && !names.insert(n) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), n));
            }
            for e in bad {
                errs.push(FieldError::invalid(format!("{pp}.name"), n, e));
            }
        }
        not_supported(
            errs,
            format!("{pp}.protocol"),
            p.protocol.as_deref(),
            PROTOCOLS,
        );
    }
}

fn check_env(errs: &mut ValidationErrors, path: &str, c: &Container) {
    for (i, e) in c.env.iter().flatten().enumerate() {
        let ep = format!("{path}.env[{i}]");
        if e.name.is_empty() {
            errs.push(FieldError::required(format!("{ep}.name"), ""));
        } else if !e
            .name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
        {
            errs.push(FieldError::invalid(
                format!("{ep}.name"),
                &e.name,
                ENV_NAME_MSG,
            ));
        }
        let Some(from) = &e.value_from else { continue };
        let sources = serde_json::to_value(from)
            .ok()
            .and_then(|j| j.as_object().map(serde_json::Map::len))
            .unwrap_or(0);
        match sources {
            0 => errs.push(FieldError::required(
                format!("{ep}.valueFrom"),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            )),
            1 => {}
            _ => errs.push(FieldError::invalid(
                format!("{ep}.valueFrom"),
                "",
                "may not have more than one field specified at a time",
            )),
        }
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.push(FieldError::invalid(
                format!("{ep}.valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        if let Some(f) = &from.field_ref
            && f.field_path.is_empty()
        {
            errs.push(FieldError::required(
                format!("{ep}.valueFrom.fieldRef.fieldPath"),
                "",
            ));
        }
        if let Some(r) = &from.resource_field_ref
            && r.resource.is_empty()
        {
            errs.push(FieldError::required(
                format!("{ep}.valueFrom.resourceFieldRef.resource"),
                "",
            ));
        }
        for (field, key) in [
            (
                "configMapKeyRef",
                from.config_map_key_ref.as_ref().map(|r| &r.key),
            ),
            ("secretKeyRef", from.secret_key_ref.as_ref().map(|r| &r.key)),
        ] {
            if key.is_some_and(String::is_empty) {
                errs.push(FieldError::required(
                    format!("{ep}.valueFrom.{field}.key"),
                    "",
                ));
            }
        }
    }
}

/// Requests and limits: well-formed, not negative, requests at most the limits.
pub(crate) fn check_resources(
    errs: &mut ValidationErrors,
    path: &str,
    r: Option<&ResourceRequirements>,
) {
    let Some(r) = r else { return };
    let mut parsed: [BTreeMap<&str, f64>; 2] = Default::default();
    for (k, (list, map)) in [("limits", &r.limits), ("requests", &r.requests)]
        .into_iter()
        .enumerate()
    {
        for (name, q) in map.iter().flatten() {
            let qp = format!("{path}.{list}[{name}]");
            match quantity_value(q) {
                None => errs.push(FieldError::invalid(qp, &q.0, QUANTITY_FORM_MSG)),
                Some(v) if v < 0.0 => errs.push(FieldError::invalid(qp, &q.0, NON_NEGATIVE)),
                Some(v) => {
                    parsed[k].insert(name.as_str(), v);
                }
            }
            for e in qualified_name_errors(name) {
                errs.push(FieldError::invalid(format!("{path}.{list}"), name, e));
            }
        }
    }
    let [limits, requests] = &parsed;
    for (name, req) in requests {
        if let Some(lim) = limits.get(name)
            && req > lim
        {
            let q = &r
                .requests
                .as_ref()
                .and_then(|m| m.get(*name))
                .map(|q| q.0.clone());
            let l = r
                .limits
                .as_ref()
                .and_then(|m| m.get(*name))
                .map(|q| q.0.as_str());
            errs.push(FieldError::invalid(
                format!("{path}.requests[{name}]"),
                q.as_deref().unwrap_or(""),
                format!(
                    "must be less than or equal to {name} limit of {}",
                    l.unwrap_or("")
                ),
            ));
        }
    }
}

fn check_mounts(errs: &mut ValidationErrors, path: &str, c: &Container, volumes: &BTreeSet<&str>) {
    let mut paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        if m.name.is_empty() {
            errs.push(FieldError::required(format!("{mp}.name"), ""));
        } else if !volumes.contains(m.name.as_str()) {
            errs.push(FieldError::not_found(format!("{mp}.name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{mp}.mountPath"), ""));
        } else {
            if !m.mount_path.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{mp}.mountPath"),
                    &m.mount_path,
                    "must be an absolute path",
                ));
            }
            if !paths.insert(m.mount_path.as_str()) {
                errs.push(FieldError::invalid(
                    format!("{mp}.mountPath"),
                    &m.mount_path,
                    "must be unique",
                ));
            }
        }
    }
}

fn check_handler_count(errs: &mut ValidationErrors, path: &str, handlers: usize) {
    match handlers {
        0 => errs.push(FieldError::required(path, "must specify a handler type")),
        1 => {}
        _ => errs.push(FieldError::forbidden(
            path,
            "may not specify more than 1 handler type",
        )),
    }
}

/// A port a probe or hook names: a number in range, or a valid port name, which, when the
/// container is given, must be one of its ports.
fn check_port_ref(
    errs: &mut ValidationErrors,
    path: &str,
    port: &IntOrString,
    c: Option<&Container>,
) {
    match port {
        IntOrString::Int(n) => {
            if !(1..=65535).contains(n) {
                errs.push(FieldError::invalid(path, n, PORT_RANGE));
            }
        }
        IntOrString::String(name) => {
            let bad = iana_port_name_errors(name);
            let had_bad = !bad.is_empty();
            for e in bad {
                errs.push(FieldError::invalid(path, name, e));
            }
            if !had_bad
                && let Some(c) = c
                && !c
                    .ports
                    .iter()
                    .flatten()
                    .any(|p| p.name.as_deref() == Some(name.as_str()))
            {
                errs.push(FieldError::not_found(path, name));
            }
        }
    }
}

fn check_probe(
    errs: &mut ValidationErrors,
    path: &str,
    p: &Probe,
    c: &Container,
    success_one: bool,
) {
    let handlers = usize::from(p.exec.is_some())
        + usize::from(p.http_get.is_some())
        + usize::from(p.tcp_socket.is_some())
        + usize::from(p.grpc.is_some());
    check_handler_count(errs, path, handlers);
    if let Some(g) = &p.http_get {
        check_port_ref(errs, &format!("{path}.httpGet.port"), &g.port, Some(c));
        not_supported(
            errs,
            format!("{path}.httpGet.scheme"),
            g.scheme.as_deref(),
            &["HTTP", "HTTPS"],
        );
    }
    if let Some(t) = &p.tcp_socket {
        check_port_ref(errs, &format!("{path}.tcpSocket.port"), &t.port, Some(c));
    }
    if let Some(g) = &p.grpc
        && !(1..=65535).contains(&g.port)
    {
        errs.push(FieldError::invalid(
            format!("{path}.grpc.port"),
            g.port,
            PORT_RANGE,
        ));
    }
    for (field, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        non_negative(errs, format!("{path}.{field}"), v);
    }
    non_negative(
        errs,
        format!("{path}.terminationGracePeriodSeconds"),
        p.termination_grace_period_seconds,
    );
    // Liveness and startup probes succeed once: Kubernetes refuses any other threshold.
    if success_one
        && let Some(s) = p.success_threshold
        && s != 1
        && s >= 0
    {
        errs.push(FieldError::invalid(
            format!("{path}.successThreshold"),
            s,
            "must be 1",
        ));
    }
}

fn check_tolerations(errs: &mut ValidationErrors, path: &str, spec: &PodSpec) {
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let tp = format!("{path}.tolerations[{i}]");
        let key = t.key.as_deref().unwrap_or("");
        if !key.is_empty() {
            for e in qualified_name_errors(key) {
                errs.push(FieldError::invalid(format!("{tp}.key"), key, e));
            }
        }
        match t.operator.as_deref().unwrap_or("Equal") {
            "Equal" => {
                if key.is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{tp}.operator"),
                        t.operator.as_deref().unwrap_or(""),
                        "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                    ));
                }
            }
            "Exists" => {
                if let Some(v) = t.value.as_deref().filter(|v| !v.is_empty()) {
                    errs.push(FieldError::invalid(
                        format!("{tp}.operator"),
                        v,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                format!("{tp}.operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        not_supported(
            errs,
            format!("{tp}.effect"),
            t.effect.as_deref().filter(|e| !e.is_empty()),
            TAINT_EFFECTS,
        );
    }
}

fn check_node_affinity(errs: &mut ValidationErrors, path: &str, spec: &PodSpec) {
    let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return;
    };
    let ap = format!("{path}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution");
    if req.node_selector_terms.is_empty() {
        errs.push(FieldError::required(
            format!("{ap}.nodeSelectorTerms"),
            "must have at least one node selector term",
        ));
    }
    for (i, term) in req.node_selector_terms.iter().enumerate() {
        for (j, e) in term.match_expressions.iter().flatten().enumerate() {
            let ep = format!("{ap}.nodeSelectorTerms[{i}].matchExpressions[{j}]");
            for why in qualified_name_errors(&e.key) {
                errs.push(FieldError::invalid(format!("{ep}.key"), &e.key, why));
            }
            let n = e.values.as_ref().map_or(0, Vec::len);
            match e.operator.as_str() {
                "In" | "NotIn" if n == 0 => errs.push(FieldError::required(
                    format!("{ep}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                )),
                "Exists" | "DoesNotExist" if n > 0 => errs.push(FieldError::forbidden(
                    format!("{ep}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )),
                "Gt" | "Lt" if n != 1 => errs.push(FieldError::required(
                    format!("{ep}.values"),
                    "must be specified single value when `operator` is 'Lt' or 'Gt'",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
                other => errs.push(FieldError::not_supported(
                    format!("{ep}.operator"),
                    other,
                    &["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"],
                )),
            }
        }
    }
}

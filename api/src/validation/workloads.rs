//! Deployments, ReplicaSets and HorizontalPodAutoscalers (autoscaling/v2): selectors with
//! their expressions, templates, strategies and metrics.

use super::meta::{NameRule, check_labels, check_object_meta};
use super::names::{dns1123_subdomain_errors, qualified_name_errors};
use super::pod::{NON_NEGATIVE, SpecOf, check_pod_spec};
use super::quantity::value as quantity_value;
use super::{FieldError, ValidationErrors};
use crate::selector::{Selector, label_selector_is_empty, label_selector_matches};
use crate::{
    Deployment, HorizontalPodAutoscaler, IntOrString, LabelSelector, MetricTarget, PodTemplateSpec,
    ReplicaSet,
};

fn non_negative(errs: &mut ValidationErrors, path: &str, v: Option<i32>) {
    if let Some(n) = v
        && n < 0
    {
        errs.push(FieldError::invalid(path, n, NON_NEGATIVE));
    }
}

/// A spec's label selector (`ValidateLabelSelector`): labels, expression operators and values.
/// An empty selector is refused, as for every workload.
pub(crate) fn check_selector(
    errs: &mut ValidationErrors,
    path: &str,
    s: &LabelSelector,
    kind: &str,
) {
    if label_selector_is_empty(s) {
        errs.push(FieldError::invalid(
            path,
            serde_json::to_string(s).unwrap_or_default(),
            format!("empty selector is invalid for {kind}"),
        ));
        return;
    }
    check_labels(
        errs,
        &format!("{path}.matchLabels"),
        s.match_labels.as_ref(),
    );
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let ep = format!("{path}.matchExpressions[{i}]");
        for why in qualified_name_errors(&e.key) {
            errs.push(FieldError::invalid(format!("{ep}.key"), &e.key, why));
        }
        for v in e.values.iter().flatten() {
            for why in super::names::label_value_errors(v) {
                errs.push(FieldError::invalid(format!("{ep}.values"), v, why));
            }
        }
        // The selector module decides what a well-formed expression is; this only words its
        // verdict as Kubernetes does.
        let one = LabelSelector {
            match_expressions: Some(vec![e.clone()]),
            match_labels: None,
        };
        if Selector::from_label_selector(&one).is_ok() {
            continue;
        }
        match e.operator.as_str() {
            "In" | "NotIn" => errs.push(FieldError::required(
                format!("{ep}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" => errs.push(FieldError::forbidden(
                format!("{ep}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            other => errs.push(FieldError::invalid(
                format!("{ep}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
    }
}

/// The selector, and a template whose labels it selects.
fn check_selector_and_template(
    errs: &mut ValidationErrors,
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
    kind: &str,
) {
    check_selector_and_template_of(errs, selector, template, kind, SpecOf::Template);
}

/// [`check_selector_and_template`] for a template whose pod spec sits in `of`.
pub(crate) fn check_selector_and_template_of(
    errs: &mut ValidationErrors,
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
    kind: &str,
    of: SpecOf,
) {
    check_selector(errs, "spec.selector", selector, kind);
    let Some(t) = template else {
        errs.push(FieldError::required("spec.template", ""));
        return;
    };
    let labels = t
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    check_labels(errs, "spec.template.metadata.labels", Some(&labels));
    if !label_selector_is_empty(selector)
        && Selector::from_label_selector(selector).is_ok()
        && !label_selector_matches(selector, &labels)
    {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            &labels,
            "`selector` does not match template `labels`",
        ));
    }
    match &t.spec {
        Some(spec) => check_pod_spec(errs, "spec.template.spec", spec, of),
        None => errs.push(FieldError::required("spec.template.spec.containers", "")),
    }
}

pub(crate) fn validate_deployment(errs: &mut ValidationErrors, d: &Deployment) {
    check_object_meta(errs, &d.metadata, true, NameRule::Subdomain);
    let Some(spec) = &d.spec else {
        errs.push(FieldError::required("spec.selector", ""));
        return;
    };
    non_negative(errs, "spec.replicas", spec.replicas);
    non_negative(errs, "spec.minReadySeconds", spec.min_ready_seconds);
    non_negative(
        errs,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
    );
    non_negative(
        errs,
        "spec.progressDeadlineSeconds",
        spec.progress_deadline_seconds,
    );
    if let Some(p) = spec.progress_deadline_seconds
        && p <= spec.min_ready_seconds.unwrap_or(0)
    {
        errs.push(FieldError::invalid(
            "spec.progressDeadlineSeconds",
            p,
            "must be greater than minReadySeconds",
        ));
    }
    check_selector_and_template(errs, &spec.selector, Some(&spec.template), "deployment");
    let Some(strategy) = &spec.strategy else {
        return;
    };
    match strategy.type_.as_deref() {
        Some("Recreate") => {
            if strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        Some("RollingUpdate") | None => {
            if let Some(ru) = &strategy.rolling_update {
                let p = "spec.strategy.rollingUpdate";
                let surge =
                    check_int_or_percent(errs, &format!("{p}.maxSurge"), ru.max_surge.as_ref());
                let unavail = check_int_or_percent(
                    errs,
                    &format!("{p}.maxUnavailable"),
                    ru.max_unavailable.as_ref(),
                );
                if let Some(IntOrString::String(s)) = &ru.max_unavailable
                    && unavail.is_some_and(|u| u > 100)
                {
                    errs.push(FieldError::invalid(
                        format!("{p}.maxUnavailable"),
                        s,
                        "must not be greater than 100%",
                    ));
                }
                if surge == Some(0) && unavail == Some(0) {
                    errs.push(FieldError::invalid(
                        format!("{p}.maxUnavailable"),
                        0,
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
        }
        Some(other) => errs.push(FieldError::not_supported(
            "spec.strategy.type",
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// An int-or-percent (`1`, `"25%"`): its raw number when well-formed and not negative.
pub(crate) fn check_int_or_percent(
    errs: &mut ValidationErrors,
    path: &str,
    v: Option<&IntOrString>,
) -> Option<i64> {
    match v? {
        IntOrString::Int(n) if *n < 0 => {
            errs.push(FieldError::invalid(path, n, NON_NEGATIVE));
            None
        }
        IntOrString::Int(n) => Some(i64::from(*n)),
        IntOrString::String(s) => {
            let n = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<i64>().ok());
            if n.is_none() {
                errs.push(FieldError::invalid(
                    path,
                    s,
                    "a valid percent string must be a numeric string followed by an ending '%' \
                     (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
            }
            n
        }
    }
}

pub(crate) fn validate_replica_set(errs: &mut ValidationErrors, rs: &ReplicaSet) {
    check_object_meta(errs, &rs.metadata, true, NameRule::Subdomain);
    let Some(spec) = &rs.spec else {
        errs.push(FieldError::required("spec.selector", ""));
        return;
    };
    non_negative(errs, "spec.replicas", spec.replicas);
    non_negative(errs, "spec.minReadySeconds", spec.min_ready_seconds);
    check_selector_and_template(errs, &spec.selector, spec.template.as_ref(), "replicaset");
}

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];
/// The kinds podd serves with a scale subresource, which an HPA can scale.
const SCALABLE_KINDS: &[&str] = &["Deployment", "ReplicaSet"];

pub(crate) fn validate_hpa(errs: &mut ValidationErrors, h: &HorizontalPodAutoscaler) {
    check_object_meta(errs, &h.metadata, true, NameRule::Subdomain);
    let Some(s) = &h.spec else {
        errs.push(FieldError::required("spec.scaleTargetRef", ""));
        return;
    };
    let target = &s.scale_target_ref;
    match target.kind.as_str() {
        "" => errs.push(FieldError::required("spec.scaleTargetRef.kind", "")),
        k if !SCALABLE_KINDS.contains(&k) => errs.push(FieldError::not_supported(
            "spec.scaleTargetRef.kind",
            k,
            SCALABLE_KINDS,
        )),
        _ => {}
    }
    if target.name.is_empty() {
        errs.push(FieldError::required("spec.scaleTargetRef.name", ""));
    } else {
        for e in dns1123_subdomain_errors(&target.name) {
            errs.push(FieldError::invalid(
                "spec.scaleTargetRef.name",
                &target.name,
                e,
            ));
        }
    }
    let min = s.min_replicas.unwrap_or(1);
    if min < 1 {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            min,
            "must be greater than or equal to 1",
        ));
    }
    if s.max_replicas < 1 {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            s.max_replicas,
            "must be greater than 0",
        ));
    } else if s.max_replicas < min {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            s.max_replicas,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    for (i, m) in s.metrics.iter().flatten().enumerate() {
        let mp = format!("spec.metrics[{i}]");
        let set: Vec<&str> = [
            ("ContainerResource", m.container_resource.is_some()),
            ("External", m.external.is_some()),
            ("Object", m.object.is_some()),
            ("Pods", m.pods.is_some()),
            ("Resource", m.resource.is_some()),
        ]
        .into_iter()
        .filter_map(|(t, present)| present.then_some(t))
        .collect();
        if m.type_.is_empty() {
            errs.push(FieldError::required(format!("{mp}.type"), ""));
            continue;
        }
        if !METRIC_TYPES.contains(&m.type_.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{mp}.type"),
                &m.type_,
                METRIC_TYPES,
            ));
            continue;
        }
        let field = lower_first(&m.type_);
        if !set.contains(&m.type_.as_str()) {
            errs.push(FieldError::required(
                format!("{mp}.{field}"),
                "must populate information for the given metric source",
            ));
        }
        if set.iter().any(|t| *t != m.type_) {
            errs.push(FieldError::forbidden(
                format!("{mp}.{field}"),
                "must populate the given metric source only",
            ));
        }
        if let Some(r) = &m.resource
            && m.type_ == "Resource"
        {
            let rp = format!("{mp}.resource");
            if r.name.is_empty() {
                errs.push(FieldError::required(format!("{rp}.name"), ""));
            }
            check_resource_target(errs, &format!("{rp}.target"), &r.target);
        }
        if let Some(r) = &m.container_resource
            && m.type_ == "ContainerResource"
        {
            let rp = format!("{mp}.containerResource");
            if r.name.is_empty() {
                errs.push(FieldError::required(format!("{rp}.name"), ""));
            }
            if r.container.is_empty() {
                errs.push(FieldError::required(format!("{rp}.container"), ""));
            }
            check_resource_target(errs, &format!("{rp}.target"), &r.target);
        }
    }
    if let Some(b) = &s.behavior {
        for (name, rules) in [("scaleUp", &b.scale_up), ("scaleDown", &b.scale_down)] {
            let Some(r) = rules else { continue };
            let rp = format!("spec.behavior.{name}");
            if let Some(w) = r.stabilization_window_seconds {
                if w < 0 {
                    errs.push(FieldError::invalid(
                        format!("{rp}.stabilizationWindowSeconds"),
                        w,
                        NON_NEGATIVE,
                    ));
                } else if w > 3600 {
                    errs.push(FieldError::invalid(
                        format!("{rp}.stabilizationWindowSeconds"),
                        w,
                        "must be less than or equal to 3600",
                    ));
                }
            }
            if let Some(sp) = r.select_policy.as_deref()
                && !["Disabled", "Max", "Min"].contains(&sp)
            {
                errs.push(FieldError::not_supported(
                    format!("{rp}.selectPolicy"),
                    sp,
                    &["Disabled", "Max", "Min"],
                ));
            }
            for (j, p) in r.policies.iter().flatten().enumerate() {
                let pp = format!("{rp}.policies[{j}]");
                if !["Percent", "Pods"].contains(&p.type_.as_str()) {
                    errs.push(FieldError::not_supported(
                        format!("{pp}.type"),
                        &p.type_,
                        &["Percent", "Pods"],
                    ));
                }
                if p.value <= 0 {
                    errs.push(FieldError::invalid(
                        format!("{pp}.value"),
                        p.value,
                        "must be greater than zero",
                    ));
                }
                if !(1..=1800).contains(&p.period_seconds) {
                    errs.push(FieldError::invalid(
                        format!("{pp}.periodSeconds"),
                        p.period_seconds,
                        "must be between 1 and 1800, inclusive",
                    ));
                }
            }
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// A Resource metric's target: Utilization with a positive `averageUtilization`, or
/// AverageValue with a positive `averageValue`.
fn check_resource_target(errs: &mut ValidationErrors, path: &str, t: &MetricTarget) {
    match t.type_.as_str() {
        "" => errs.push(FieldError::required(
            format!("{path}.type"),
            "must specify a metric target type",
        )),
        "Utilization" | "AverageValue" => {}
        other => errs.push(FieldError::not_supported(
            format!("{path}.type"),
            other,
            &["AverageValue", "Utilization"],
        )),
    }
    match (t.average_utilization, &t.average_value) {
        (None, None) => errs.push(FieldError::required(
            format!("{path}.averageUtilization"),
            "must set either a target raw value or a target utilization",
        )),
        (Some(_), Some(_)) => errs.push(FieldError::forbidden(
            format!("{path}.averageValue"),
            "may not set both a target raw value and a target utilization",
        )),
        _ => {}
    }
    if let Some(u) = t.average_utilization
        && u <= 0
    {
        errs.push(FieldError::invalid(
            format!("{path}.averageUtilization"),
            u,
            "must be greater than 0",
        ));
    }
    if let Some(v) = &t.average_value
        && !quantity_value(v).is_some_and(|n| n > 0.0)
    {
        errs.push(FieldError::invalid(
            format!("{path}.averageValue"),
            &v.0,
            "must be positive",
        ));
    }
    if t.type_ == "Utilization" && t.average_utilization.is_none() && t.average_value.is_some() {
        errs.push(FieldError::required(
            format!("{path}.averageUtilization"),
            "must be set when the target type is Utilization",
        ));
    }
    if t.type_ == "AverageValue" && t.average_value.is_none() && t.average_utilization.is_some() {
        errs.push(FieldError::required(
            format!("{path}.averageValue"),
            "must be set when the target type is AverageValue",
        ));
    }
}

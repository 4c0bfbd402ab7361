//! apps/v1 DaemonSets (`ValidateDaemonSet`, `ValidateDaemonSetUpdate`): the selector and a
//! template that always restarts, the update strategy, and the selector kept once created.

use super::jobs::json;
use super::meta::{NameRule, check_object_meta};
use super::pod::NON_NEGATIVE;
use super::workloads::{check_int_or_percent, check_selector_and_template_of};
use super::{FieldError, ValidationErrors, pod::SpecOf};
use crate::{DaemonSet, DaemonSetUpdateStrategy, IntOrString};

const STRATEGIES: &[&str] = &["RollingUpdate", "OnDelete"];

pub(crate) fn validate_daemon_set(errs: &mut ValidationErrors, ds: &DaemonSet) {
    check_object_meta(errs, &ds.metadata, true, NameRule::Subdomain);
    let Some(spec) = &ds.spec else {
        errs.push(FieldError::required("spec.selector", ""));
        return;
    };
    check_selector_and_template_of(
        errs,
        &spec.selector,
        Some(&spec.template),
        "daemonset",
        SpecOf::Template,
    );
    if spec
        .template
        .spec
        .as_ref()
        .is_some_and(|s| s.active_deadline_seconds.is_some())
    {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in DaemonSet is not Supported",
        ));
    }
    for (path, v) in [
        ("spec.minReadySeconds", spec.min_ready_seconds),
        ("spec.revisionHistoryLimit", spec.revision_history_limit),
    ] {
        if let Some(n) = v
            && n < 0
        {
            errs.push(FieldError::invalid(path, n, NON_NEGATIVE));
        }
    }
    if let Some(strategy) = &spec.update_strategy {
        check_update_strategy(errs, strategy);
    }
}

/// `ValidateDaemonSetUpdateStrategy` and `ValidateRollingUpdateDaemonSet`: exactly one of
/// maxUnavailable and maxSurge is non-zero, neither above 100%.
fn check_update_strategy(errs: &mut ValidationErrors, strategy: &DaemonSetUpdateStrategy) {
    let path = "spec.updateStrategy";
    match strategy.type_.as_deref().unwrap_or_default() {
        "OnDelete" => {}
        "RollingUpdate" => {
            let Some(ru) = &strategy.rolling_update else {
                errs.push(FieldError::required(format!("{path}.rollingUpdate"), ""));
                return;
            };
            let p = format!("{path}.rollingUpdate");
            let mut value = |field: &str, v: Option<&IntOrString>| {
                let fp = format!("{p}.{field}");
                let n = check_int_or_percent(errs, &fp, v);
                if let Some(IntOrString::String(s)) = v
                    && n.is_some_and(|n| n > 100)
                {
                    errs.push(FieldError::invalid(fp, s, "must not be greater than 100%"));
                }
                n.unwrap_or(0)
            };
            let unavailable = value("maxUnavailable", ru.max_unavailable.as_ref());
            let surge = value("maxSurge", ru.max_surge.as_ref());
            match (unavailable != 0, surge != 0) {
                (true, true) => errs.push(FieldError::invalid(
                    format!("{p}.maxSurge"),
                    json(&ru.max_surge),
                    "may not be set when maxUnavailable is non-zero",
                )),
                (false, false) => errs.push(FieldError::required(
                    format!("{p}.maxUnavailable"),
                    "cannot be 0 when maxSurge is 0",
                )),
                _ => {}
            }
        }
        other => errs.push(FieldError::not_supported(path, other, STRATEGIES)),
    }
}

/// `ValidateDaemonSetSpecUpdate`: the selector may not change.
pub(crate) fn validate_daemon_set_update(
    errs: &mut ValidationErrors,
    old: &DaemonSet,
    new: &DaemonSet,
) {
    let selector = |d: &DaemonSet| d.spec.as_ref().map(|s| s.selector.clone());
    if selector(old) != selector(new) {
        errs.push(FieldError::invalid(
            "spec.selector",
            json(&selector(new)),
            "field is immutable",
        ));
    }
}

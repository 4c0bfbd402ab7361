//! batch/v1 Jobs (`ValidateJob`, `ValidateJobSpecUpdate`): counts, the generated selector,
//! the completion mode and a template that never restarts `Always`.

use super::meta::{NameRule, check_object_meta};
use super::pod::{NON_NEGATIVE, SpecOf};
use super::workloads::check_selector_and_template_of;
use super::{FieldError, ValidationErrors};
use crate::{Job, JobSpec, PodTemplateSpec};

/// The label and selector key that ties a Job's pods to it (`batch.kubernetes.io/controller-uid`).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label with the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The labels Kubernetes still writes beside those, for older clients.
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
/// Most pods an Indexed Job runs at once (`maxParallelismForIndexedJob`).
pub const MAX_INDEXED_PARALLELISM: i32 = 100_000;

const COMPLETION_MODES: &[&str] = &["Indexed", "NonIndexed"];
const POD_REPLACEMENT_POLICIES: &[&str] = &["Failed", "TerminatingOrFailed"];

fn non_negative(errs: &mut ValidationErrors, path: &str, v: Option<i64>) {
    if let Some(n) = v
        && n < 0
    {
        errs.push(FieldError::invalid(path, n, NON_NEGATIVE));
    }
}

pub(crate) fn validate_job(errs: &mut ValidationErrors, job: &Job) {
    check_object_meta(errs, &job.metadata, true, NameRule::Subdomain);
    let Some(spec) = &job.spec else {
        errs.push(FieldError::required("spec.template", ""));
        return;
    };
    check_job_spec_fields(errs, "spec", spec);
    match &spec.selector {
        Some(sel) => check_selector_and_template_of(
            errs,
            sel,
            Some(&spec.template),
            "job",
            SpecOf::JobTemplate,
        ),
        None => errs.push(FieldError::required("spec.selector", "")),
    }
    check_generated_selector(errs, job, spec);
}

/// The rules of a Job spec's own fields (`validateJobSpec` without the template and
/// selector), under `path` (`spec`, or a CronJob's `spec.jobTemplate.spec`).
pub(crate) fn check_job_spec_fields(errs: &mut ValidationErrors, path: &str, spec: &JobSpec) {
    let p = |f: &str| format!("{path}.{f}");
    non_negative(errs, &p("parallelism"), spec.parallelism.map(i64::from));
    non_negative(errs, &p("completions"), spec.completions.map(i64::from));
    non_negative(errs, &p("backoffLimit"), spec.backoff_limit.map(i64::from));
    non_negative(
        errs,
        &p("activeDeadlineSeconds"),
        spec.active_deadline_seconds,
    );
    non_negative(
        errs,
        &p("ttlSecondsAfterFinished"),
        spec.ttl_seconds_after_finished.map(i64::from),
    );
    let mode = spec.completion_mode.as_deref().unwrap_or("NonIndexed");
    if !COMPLETION_MODES.contains(&mode) {
        errs.push(FieldError::not_supported(
            p("completionMode"),
            mode,
            COMPLETION_MODES,
        ));
    }
    if mode == "Indexed" {
        if spec.completions.is_none() {
            errs.push(FieldError::required(
                p("completions"),
                "when completion mode is Indexed",
            ));
        }
        if let Some(n) = spec.parallelism
            && n > MAX_INDEXED_PARALLELISM
        {
            errs.push(FieldError::invalid(
                p("parallelism"),
                n,
                format!(
                    "must be less than or equal to {MAX_INDEXED_PARALLELISM} when completion \
                     mode is Indexed"
                ),
            ));
        }
    }
    if let Some(r) = spec.pod_replacement_policy.as_deref()
        && !POD_REPLACEMENT_POLICIES.contains(&r)
    {
        errs.push(FieldError::not_supported(
            p("podReplacementPolicy"),
            r,
            POD_REPLACEMENT_POLICIES,
        ));
    }
}

/// Without `manualSelector`, the selector and the template's uid label must be the ones the
/// server generated from the Job's uid (`validateGeneratedSelector`).
fn check_generated_selector(errs: &mut ValidationErrors, job: &Job, spec: &JobSpec) {
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    if spec.manual_selector == Some(true) || uid.is_empty() {
        return;
    }
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let path = format!("spec.template.metadata.labels[{CONTROLLER_UID_LABEL}]");
    match labels.get(CONTROLLER_UID_LABEL) {
        None => errs.push(FieldError::required(path, "generated controller-uid label")),
        Some(v) if v != uid => errs.push(FieldError::invalid(path, v, format!("must be '{uid}'"))),
        Some(_) => {}
    }
    if let Some(sel) = &spec.selector {
        let expected = [(CONTROLLER_UID_LABEL.to_string(), uid.to_string())].into();
        if !crate::selector::label_selector_matches(sel, &expected) {
            errs.push(FieldError::invalid(
                "spec.selector",
                serde_json::to_string(sel).unwrap_or_default(),
                "`selector` not auto-generated",
            ));
        }
    }
}

/// The template without what a suspended Job that never started may change (its node
/// scheduling directives, labels and annotations).
fn without_scheduling(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        m.labels = None;
        m.annotations = None;
    }
    if let Some(s) = t.spec.as_mut() {
        s.node_selector = None;
        s.affinity = None;
        s.tolerations = None;
        s.scheduling_gates = None;
    }
    t
}

/// What an update may not change (`ValidateJobSpecUpdate`): the selector, the completion
/// mode and count, the failure policies, and the template (but a suspended Job that never
/// started may move its pods: node selector, affinity, tolerations, gates, labels).
pub(crate) fn validate_job_update(errs: &mut ValidationErrors, old: &Job, new: &Job) {
    let (Some(o), Some(n)) = (&old.spec, &new.spec) else {
        return;
    };
    let immutable = |errs: &mut ValidationErrors, path: &str, changed: bool, value: Raw| {
        if changed {
            errs.push(FieldError::invalid(path, value, "field is immutable"));
        }
    };
    immutable(
        errs,
        "spec.selector",
        o.selector != n.selector,
        json(&n.selector),
    );
    immutable(
        errs,
        "spec.completionMode",
        o.completion_mode != n.completion_mode,
        json(&n.completion_mode),
    );
    // Indexed Jobs may scale completions together with parallelism (elastic Indexed Jobs).
    let elastic = n.completion_mode.as_deref() == Some("Indexed")
        && n.completions == n.parallelism
        && o.completions == o.parallelism;
    if !elastic {
        immutable(
            errs,
            "spec.completions",
            o.completions != n.completions,
            json(&n.completions),
        );
    }
    immutable(
        errs,
        "spec.podFailurePolicy",
        o.pod_failure_policy != n.pod_failure_policy,
        json(&n.pod_failure_policy),
    );
    immutable(
        errs,
        "spec.backoffLimitPerIndex",
        o.backoff_limit_per_index != n.backoff_limit_per_index,
        json(&n.backoff_limit_per_index),
    );
    let never_started = old.status.as_ref().is_none_or(|s| s.start_time.is_none());
    let may_move = o.suspend == Some(true) && never_started;
    let changed = if may_move {
        without_scheduling(&o.template) != without_scheduling(&n.template)
    } else {
        o.template != n.template
    };
    immutable(errs, "spec.template", changed, json(&n.template));
}

/// A value as "field is immutable" prints it: its JSON, unquoted (`5`, `{"matchLabels":…}`).
pub(super) struct Raw(String);

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> Raw {
    Raw(serde_json::to_string(v).unwrap_or_default())
}

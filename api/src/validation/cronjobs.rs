//! batch/v1 CronJobs (`ValidateCronJobCreate`): a schedule robfig/cron parses, an IANA time
//! zone, the concurrency policy, non-negative limits and a Job template whose selector the
//! controller generates.

use super::jobs::check_job_spec_fields;
use super::meta::{NameRule, check_labels, check_object_meta};
use super::pod::{NON_NEGATIVE, SpecOf, check_pod_spec};
use super::{FieldError, ValidationErrors};
use crate::cron::{Schedule, time_zone};
use crate::{CronJob, JobTemplateSpec};

/// A CronJob's name leaves room for the `-<minutes>` suffix of its Jobs' names
/// (`DNS1035LabelMaxLength - 11`).
pub const MAX_CRONJOB_NAME: usize = 52;
pub const CONCURRENCY_POLICIES: &[&str] = &["Allow", "Forbid", "Replace"];

fn non_negative(errs: &mut ValidationErrors, path: &str, v: Option<i64>) {
    if let Some(n) = v
        && n < 0
    {
        errs.push(FieldError::invalid(path, n, NON_NEGATIVE));
    }
}

pub(crate) fn validate_cron_job(errs: &mut ValidationErrors, cj: &CronJob) {
    check_object_meta(errs, &cj.metadata, true, NameRule::Subdomain);
    if let Some(name) = cj.metadata.name.as_deref()
        && name.len() > MAX_CRONJOB_NAME
    {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            format!("must be no more than {MAX_CRONJOB_NAME} characters"),
        ));
    }
    let spec = cj.spec.clone().unwrap_or_default();
    check_schedule(errs, &spec.schedule, spec.time_zone.is_some());
    if let Some(tz) = &spec.time_zone
        && let Err(e) = time_zone(Some(tz))
    {
        errs.push(FieldError::invalid("spec.timeZone", tz, e));
    }
    non_negative(
        errs,
        "spec.startingDeadlineSeconds",
        spec.starting_deadline_seconds,
    );
    match spec.concurrency_policy.as_deref() {
        None | Some("") => errs.push(FieldError::required("spec.concurrencyPolicy", "")),
        Some(p) if !CONCURRENCY_POLICIES.contains(&p) => errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            p,
            CONCURRENCY_POLICIES,
        )),
        Some(_) => {}
    }
    non_negative(
        errs,
        "spec.successfulJobsHistoryLimit",
        spec.successful_jobs_history_limit.map(i64::from),
    );
    non_negative(
        errs,
        "spec.failedJobsHistoryLimit",
        spec.failed_jobs_history_limit.map(i64::from),
    );
    check_job_template(errs, &spec.job_template);
}

/// `validateScheduleFormat` on create: robfig/cron must parse it, and a time zone goes in
/// `timeZone`, never in the schedule.
fn check_schedule(errs: &mut ValidationErrors, schedule: &str, has_time_zone: bool) {
    let path = "spec.schedule";
    if schedule.is_empty() {
        errs.push(FieldError::required(path, ""));
        return;
    }
    if schedule.contains("TZ") {
        let why = if has_time_zone {
            "cannot use both timeZone field and TZ or CRON_TZ in schedule"
        } else {
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
        };
        errs.push(FieldError::invalid(path, schedule, why));
        return;
    }
    if let Err(e) = Schedule::parse(schedule) {
        errs.push(FieldError::invalid(path, schedule, e));
    }
}

/// `ValidateJobTemplateSpec`: the Job spec's rules, with a selector the controller generates.
fn check_job_template(errs: &mut ValidationErrors, t: &JobTemplateSpec) {
    let path = "spec.jobTemplate.spec";
    if let Some(m) = &t.metadata {
        check_labels(errs, "spec.jobTemplate.metadata.labels", m.labels.as_ref());
    }
    let Some(spec) = &t.spec else {
        errs.push(FieldError::required(
            format!("{path}.template.spec.containers"),
            "",
        ));
        return;
    };
    check_job_spec_fields(errs, path, spec);
    if let Some(sel) = &spec.selector {
        errs.push(FieldError::invalid(
            format!("{path}.selector"),
            serde_json::to_string(sel).unwrap_or_default(),
            "`selector` will be auto-generated",
        ));
    }
    if spec.manual_selector == Some(true) {
        errs.push(FieldError::not_supported(
            format!("{path}.manualSelector"),
            "true",
            &["nil", "false"],
        ));
    }
    let template = &spec.template;
    check_labels(
        errs,
        &format!("{path}.template.metadata.labels"),
        template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
    );
    match &template.spec {
        Some(pod) => check_pod_spec(
            errs,
            &format!("{path}.template.spec"),
            pod,
            SpecOf::JobTemplate,
        ),
        None => errs.push(FieldError::required(
            format!("{path}.template.spec.containers"),
            "",
        )),
    }
}

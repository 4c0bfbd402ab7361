//! Validation of objects before they are stored: Kubernetes' DNS-1123 naming rules, label
//! syntax, and the structural rules of each kind. Every problem is reported at once, each with
//! the path of the field it concerns and Kubernetes' cause type, so that kubectl prints
//! `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.

mod cluster;
mod config;
mod cronjobs;
mod daemonsets;
mod jobs;
mod meta;
mod names;
mod network;
mod pod;
mod quantity;
mod workloads;

pub use cluster::NAMESPACE_FINALIZER;
pub use config::{
    MAX_CONFIG_DATA_BYTES, SECRET_TYPE_BASIC_AUTH, SECRET_TYPE_DOCKER_CONFIG_JSON,
    SECRET_TYPE_DOCKERCFG, SECRET_TYPE_OPAQUE, SECRET_TYPE_SERVICE_ACCOUNT_TOKEN,
    SECRET_TYPE_SSH_AUTH, SECRET_TYPE_TLS, SERVICE_ACCOUNT_NAME_ANNOTATION, config_key_errors,
};
pub use jobs::{
    CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL, LEGACY_JOB_NAME_LABEL,
};
pub use names::{
    check_dns1035_label, check_dns1123_label, check_dns1123_subdomain, check_iana_port_name,
    check_label_key, check_label_value, check_qualified_name,
};
pub use pod::validate_pod_spec;

use crate::Kind;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusCause;
use std::any::Any;
use std::fmt;

/// Kubernetes' cause types (`details.causes[].reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
    TooMany,
    Forbidden,
    TypeInvalid,
    NotFound,
    /// A field the kind does not have (fieldValidation=Strict).
    UnknownField,
}

impl ErrorType {
    /// The `reason` of a cause.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::UnknownField => "FieldValueInvalid",
        }
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// A path as Kubernetes writes it: `metadata.name`, `spec.containers[0].ports[1].containerPort`,
    /// `metadata.labels[app]`.
    pub field: String,
    pub kind: ErrorType,
    /// The whole text after the path, as Kubernetes words it: `Required value`,
    /// `Invalid value: -1: must be greater than or equal to 0`, `Unsupported value: "x":
    /// supported values: "TCP", "UDP"`.
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: &str) -> FieldError {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        FieldError {
            field: field.into(),
            kind: ErrorType::Required,
            message,
        }
    }

    /// `Invalid value: VALUE: DETAIL`, with the value printed as Kubernetes prints it (strings
    /// quoted, numbers bare).
    pub fn invalid(
        field: impl Into<String>,
        value: impl fmt::Debug,
        detail: impl fmt::Display,
    ) -> FieldError {
        FieldError {
            field: field.into(),
            kind: ErrorType::Invalid,
            message: format!("Invalid value: {value:?}: {detail}"),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> FieldError {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            field: field.into(),
            kind: ErrorType::NotSupported,
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl fmt::Debug) -> FieldError {
        FieldError {
            field: field.into(),
            kind: ErrorType::Duplicate,
            message: format!("Duplicate value: {value:?}"),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl fmt::Display) -> FieldError {
        FieldError {
            field: field.into(),
            kind: ErrorType::Forbidden,
            message: format!("Forbidden: {detail}"),
        }
    }

    pub fn too_long(field: impl Into<String>, detail: impl fmt::Display) -> FieldError {
        FieldError {
            field: field.into(),
            kind: ErrorType::TooLong,
            message: format!("Too long: {detail}"),
        }
    }

    pub fn too_many(field: impl Into<String>, detail: impl fmt::Display) -> FieldError {
        FieldError {
            field: field.into(),
            kind: ErrorType::TooMany,
            message: format!("Too many: {detail}"),
        }
    }

    /// A JSON type error: `Invalid value: "string": spec.replicas in body must be of type integer: "string"`.
    pub fn type_invalid(field: impl Into<String>, detail: impl fmt::Display) -> FieldError {
        FieldError {
            field: field.into(),
            kind: ErrorType::TypeInvalid,
            message: format!("Invalid value: {detail}"),
        }
    }

    /// `Not found: VALUE` (a reference to a volume or port that is not there).
    pub fn not_found(field: impl Into<String>, value: impl fmt::Debug) -> FieldError {
        FieldError {
            field: field.into(),
            kind: ErrorType::NotFound,
            message: format!("Not found: {value:?}"),
        }
    }

    pub fn unknown_field(field: impl Into<String>) -> FieldError {
        let field = field.into();
        FieldError {
            message: format!("unknown field {field:?}"),
            field,
            kind: ErrorType::UnknownField,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ErrorType::UnknownField {
            return write!(f, "{}", self.message);
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // kubectl's form: `[a: ..., b: ...]` for several, bare for one.
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        if parts.len() == 1 {
            write!(f, "{}", parts[0])
        } else {
            write!(f, "[{}]", parts.join(", "))
        }
    }
}

/// Problems listed in one answer at most: a hostile object with 300,000 bad labels must not
/// make an error of 300,000 lines. Past this, one last entry says that more were left out.
pub const MAX_REPORTED_ERRORS: usize = 1000;

impl ValidationErrors {
    pub fn push(&mut self, e: FieldError) {
        match self.0.len() {
            n if n < MAX_REPORTED_ERRORS => self.0.push(e),
            MAX_REPORTED_ERRORS => self.0.push(FieldError::too_many(
                "<object>",
                format!(
                    "more problems were found; only the first {MAX_REPORTED_ERRORS} are listed"
                ),
            )),
            _ => {}
        }
    }

    pub fn extend(&mut self, other: ValidationErrors) {
        for e in other.0 {
            self.push(e);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The Status causes, one per problem.
    pub fn causes(&self) -> Vec<StatusCause> {
        self.0
            .iter()
            .map(|e| StatusCause {
                field: Some(e.field.clone()),
                message: Some(e.message.clone()),
                reason: Some(e.kind.reason().to_string()),
            })
            .collect()
    }
}

// ---- per-kind validation (the structural rules of each kind) ----

/// The total size of an object's annotations, keys and values: 256 KiB, as Kubernetes
/// (`TotalAnnotationSizeLimitB`).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Containers plus init containers in one pod. Kubernetes sets no number (only its 1.5 MiB
/// object size bounds them); podd caps them at 100, because each is a process, a cgroup and a
/// log on the node, and a pod of 100,000 made the server hold hundreds of MB. The cap is
/// checked on the JSON, before the pod is decoded.
pub const MAX_CONTAINERS: usize = 100;

/// Validates an object of any served kind, with the rules of `T::API_KIND`; every problem is
/// listed at once.
pub fn validate<T: crate::Object>(obj: &T) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let any: &dyn Any = obj;
    // `Object` is implemented only by the served types, one per Kind, so each downcast
    // succeeds for the kind it is tried on.
    macro_rules! run {
        ($t:ty, $f:path) => {
            if let Some(o) = any.downcast_ref::<$t>() {
                $f(&mut errs, o);
            }
        };
    }
    match T::API_KIND {
        Kind::Pod => run!(crate::Pod, pod::validate_pod),
        Kind::Deployment => run!(crate::Deployment, workloads::validate_deployment),
        Kind::ReplicaSet => run!(crate::ReplicaSet, workloads::validate_replica_set),
        Kind::HorizontalPodAutoscaler => {
            run!(crate::HorizontalPodAutoscaler, workloads::validate_hpa)
        }
        Kind::Service => run!(crate::Service, network::validate_service),
        Kind::Endpoints => run!(crate::Endpoints, network::validate_endpoints),
        Kind::EndpointSlice => run!(crate::EndpointSlice, network::validate_endpoint_slice),
        Kind::Node => run!(crate::Node, cluster::validate_node),
        Kind::Event => run!(crate::Event, cluster::validate_event),
        Kind::Lease => run!(crate::Lease, cluster::validate_lease),
        Kind::Job => run!(crate::Job, jobs::validate_job),
        Kind::CronJob => run!(crate::CronJob, cronjobs::validate_cron_job),
        Kind::DaemonSet => run!(crate::DaemonSet, daemonsets::validate_daemon_set),
        Kind::Namespace => run!(crate::Namespace, cluster::validate_namespace),
        Kind::ConfigMap => run!(crate::ConfigMap, config::validate_config_map),
        Kind::Secret => run!(crate::Secret, config::validate_secret),
    }
    errs.into_result()
}

/// The rules of an update beyond those of the new object alone: what the kind keeps
/// immutable once created (a Job's selector, template, completions). `old` and `new` are the
/// stored and the admitted (defaulted) JSON.
pub fn validate_update(
    kind: Kind,
    old: &serde_json::Value,
    new: &serde_json::Value,
) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    if kind == Kind::Job {
        let typed = |v: &serde_json::Value| serde_json::from_value::<crate::Job>(v.clone()).ok();
        if let (Some(o), Some(n)) = (typed(old), typed(new)) {
            jobs::validate_job_update(&mut errs, &o, &n);
        }
    }
    if kind == Kind::DaemonSet {
        let typed =
            |v: &serde_json::Value| serde_json::from_value::<crate::DaemonSet>(v.clone()).ok();
        if let (Some(o), Some(n)) = (typed(old), typed(new)) {
            daemonsets::validate_daemon_set_update(&mut errs, &o, &n);
        }
    }
    config::validate_update(&mut errs, kind, old, new);
    errs.into_result()
}

/// Validates the JSON form of an object of `kind`: decodes it into the kind's type with
/// [`crate::schema::decode`] (type errors come back with their paths; unknown fields are
/// ignored here) and runs [`validate`].
pub fn validate_value(kind: Kind, v: &serde_json::Value) -> Result<(), ValidationErrors> {
    crate::with_kind_type!(kind, T => {
        let (obj, _) = crate::schema::decode::<T>(v.clone(), crate::schema::FieldValidation::Ignore)?;
        validate(&obj)
    })
}

/// The limits that are cheap to check on the JSON and costly to check after decoding it (a
/// pod of 100,000 containers): run on a request's object before it is decoded.
pub fn check_limits_before_decode(
    kind: Kind,
    v: &serde_json::Value,
) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let ptr = match kind {
        Kind::Pod => Some(("spec", "/spec")),
        Kind::Deployment | Kind::ReplicaSet | Kind::Job | Kind::DaemonSet => {
            Some(("spec.template.spec", "/spec/template/spec"))
        }
        Kind::CronJob => Some((
            "spec.jobTemplate.spec.template.spec",
            "/spec/jobTemplate/spec/template/spec",
        )),
        _ => None,
    };
    if let Some((path, ptr)) = ptr {
        let len = |field: &str| {
            v.pointer(&format!("{ptr}/{field}"))
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len)
        };
        let (containers, init) = (len("containers"), len("initContainers"));
        if containers + init > MAX_CONTAINERS {
            errs.push(FieldError::too_many(
                format!("{path}.containers"),
                format!(
                    "a pod may have at most {MAX_CONTAINERS} containers and init containers together \
                     (this one has {containers} and {init}); split it into several pods"
                ),
            ));
        }
    }
    errs.into_result()
}

#[cfg(test)]
mod tests;

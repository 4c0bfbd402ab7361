//! `metadata` rules common to every kind (apimachinery's `ValidateObjectMeta`): name or
//! generateName, namespace by scope, labels, annotations and their total size, owner
//! references.

use super::names::{
    dns1035_label_errors, dns1123_label_errors, dns1123_subdomain_errors, label_value_errors,
    qualified_name_errors,
};
use super::{FieldError, MAX_ANNOTATIONS_BYTES, ValidationErrors};
use crate::ObjectMeta;
use std::collections::BTreeMap;

/// How an object's name must look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// Most kinds: a DNS-1123 subdomain.
    Subdomain,
    /// Services: a DNS-1035 label.
    Dns1035,
    /// Namespaces: a DNS-1123 label.
    Label,
}

impl NameRule {
    fn errors(self, s: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => dns1123_subdomain_errors(s),
            NameRule::Dns1035 => dns1035_label_errors(s),
            NameRule::Label => dns1123_label_errors(s),
        }
    }
}

/// Labels under `path` (`metadata.labels`, `spec.selector.matchLabels`), as Kubernetes'
/// `ValidateLabels`: the key or value is the invalid value, the map is the path.
pub(crate) fn check_labels(
    errs: &mut ValidationErrors,
    path: &str,
    labels: Option<&BTreeMap<String, String>>,
) {
    for (k, v) in labels.into_iter().flatten() {
        for e in qualified_name_errors(k) {
            errs.push(FieldError::invalid(path, k, e));
        }
        for e in label_value_errors(v) {
            errs.push(FieldError::invalid(path, v, e));
        }
    }
}

/// `metadata` of an object of a kind that is `namespaced` or not, named by `rule`.
pub(crate) fn check_object_meta(
    errs: &mut ValidationErrors,
    meta: &ObjectMeta,
    namespaced: bool,
    rule: NameRule,
) {
    let path = "metadata";
    let name = meta.name.as_deref().unwrap_or("");
    let generate = meta.generate_name.as_deref().unwrap_or("");
    if !generate.is_empty() {
        // Kubernetes checks the prefix with its trailing '-' masked off.
        let prefix = generate.strip_suffix('-').unwrap_or(generate);
        for e in rule.errors(prefix) {
            errs.push(FieldError::invalid(
                format!("{path}.generateName"),
                generate,
                e,
            ));
        }
    }
    if name.is_empty() {
        if generate.is_empty() {
            errs.push(FieldError::required(
                format!("{path}.name"),
                "name or generateName is required",
            ));
        }
    } else {
        for e in rule.errors(name) {
            errs.push(FieldError::invalid(format!("{path}.name"), name, e));
        }
    }
    let ns = meta.namespace.as_deref().unwrap_or("");
    if namespaced {
        for e in dns1123_label_errors(ns)
            .into_iter()
            .filter(|_| !ns.is_empty())
        {
            errs.push(FieldError::invalid(format!("{path}.namespace"), ns, e));
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            format!("{path}.namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(g) = meta.generation
        && g < 0
    {
        errs.push(FieldError::invalid(
            format!("{path}.generation"),
            g,
            "must be greater than or equal to 0",
        ));
    }
    check_labels(errs, &format!("{path}.labels"), meta.labels.as_ref());
    check_annotations(
        errs,
        &format!("{path}.annotations"),
        meta.annotations.as_ref(),
    );
    check_owner_references(errs, path, meta);
}

fn check_annotations(
    errs: &mut ValidationErrors,
    path: &str,
    annotations: Option<&BTreeMap<String, String>>,
) {
    let Some(annotations) = annotations else {
        return;
    };
    let mut total = 0usize;
    for (k, v) in annotations {
        // Kubernetes lower-cases annotation keys before checking them.
        for e in qualified_name_errors(&k.to_ascii_lowercase()) {
            errs.push(FieldError::invalid(path, k, e));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        errs.push(FieldError::too_long(
            path,
            format!("must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
        ));
    }
}

fn check_owner_references(errs: &mut ValidationErrors, path: &str, meta: &ObjectMeta) {
    let refs = meta.owner_references.as_deref().unwrap_or(&[]);
    for (i, o) in refs.iter().enumerate() {
        let p = format!("{path}.ownerReferences[{i}]");
        if o.api_version.is_empty() {
            errs.push(FieldError::invalid(
                format!("{p}.apiVersion"),
                &o.api_version,
                "version must not be empty",
            ));
        }
        if o.kind.is_empty() {
            errs.push(FieldError::invalid(
                format!("{p}.kind"),
                &o.kind,
                "kind must not be empty",
            ));
        }
        if o.name.is_empty() {
            errs.push(FieldError::invalid(
                format!("{p}.name"),
                &o.name,
                "name must not be empty",
            ));
        }
        if o.uid.is_empty() {
            errs.push(FieldError::invalid(
                format!("{p}.uid"),
                &o.uid,
                "uid must not be empty",
            ));
        }
    }
    let controllers: Vec<String> = refs
        .iter()
        .filter(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            format!("{path}.ownerReferences"),
            &controllers,
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in \
                 references for {}",
                controllers.join(" and ")
            ),
        ));
    }
}

//! Nodes, Events, Leases and Namespaces.

use super::meta::{NameRule, check_object_meta};
use super::names::qualified_name_errors;
use super::pod::NON_NEGATIVE;
use super::{FieldError, ValidationErrors};
use crate::{Event, Lease, Namespace, Node};
use std::net::IpAddr;

const TAINT_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];

fn is_cidr(s: &str) -> bool {
    s.split_once('/')
        .is_some_and(|(a, l)| match a.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => l.parse::<u8>().is_ok_and(|l| l <= 32),
            Ok(IpAddr::V6(_)) => l.parse::<u8>().is_ok_and(|l| l <= 128),
            Err(_) => false,
        })
}

pub(crate) fn validate_node(errs: &mut ValidationErrors, n: &Node) {
    check_object_meta(errs, &n.metadata, false, NameRule::Subdomain);
    let Some(spec) = &n.spec else { return };
    for (i, t) in spec.taints.iter().flatten().enumerate() {
        let tp = format!("spec.taints[{i}]");
        if t.key.is_empty() {
            errs.push(FieldError::required(format!("{tp}.key"), ""));
        }
        for e in qualified_name_errors(&t.key)
            .into_iter()
            .filter(|_| !t.key.is_empty())
        {
            errs.push(FieldError::invalid(format!("{tp}.key"), &t.key, e));
        }
        if t.effect.is_empty() {
            errs.push(FieldError::required(format!("{tp}.effect"), ""));
        } else if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{tp}.effect"),
                &t.effect,
                TAINT_EFFECTS,
            ));
        }
    }
    let msg = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
    if let Some(c) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty())
        && !is_cidr(c)
    {
        errs.push(FieldError::invalid("spec.podCIDR", c, msg));
    }
    for (i, c) in spec.pod_cidrs.iter().flatten().enumerate() {
        if !is_cidr(c) {
            errs.push(FieldError::invalid(format!("spec.podCIDRs[{i}]"), c, msg));
        }
    }
}

pub(crate) fn validate_event(errs: &mut ValidationErrors, e: &Event) {
    check_object_meta(errs, &e.metadata, true, NameRule::Subdomain);
    // As Kubernetes: an event about a namespaced object lives in that object's namespace.
    let ns = e.metadata.namespace.as_deref().unwrap_or("");
    if let Some(obj_ns) = e.involved_object.namespace.as_deref()
        && !obj_ns.is_empty()
        && !ns.is_empty()
        && obj_ns != ns
    {
        errs.push(FieldError::invalid(
            "involvedObject.namespace",
            obj_ns,
            "does not match event.namespace",
        ));
    }
    if let Some(t) = e.type_.as_deref()
        && !t.is_empty()
        && !["Normal", "Warning"].contains(&t)
    {
        errs.push(FieldError::not_supported("type", t, &["Normal", "Warning"]));
    }
    if let Some(c) = e.count
        && c < 0
    {
        errs.push(FieldError::invalid("count", c, NON_NEGATIVE));
    }
}

pub(crate) fn validate_lease(errs: &mut ValidationErrors, l: &Lease) {
    check_object_meta(errs, &l.metadata, true, NameRule::Subdomain);
    let Some(spec) = &l.spec else { return };
    if let Some(d) = spec.lease_duration_seconds
        && d <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec.lease_transitions
        && t < 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseTransitions",
            t,
            NON_NEGATIVE,
        ));
    }
}

/// The finalizer of the namespace controller, which empties a namespace before it goes.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// `ValidateNamespace`: the name is a DNS-1123 label; spec finalizers are `kubernetes` or
/// qualified names with a `/` (`validateKubeFinalizerName`); the phase is Active or
/// Terminating.
pub(crate) fn validate_namespace(errs: &mut ValidationErrors, n: &Namespace) {
    check_object_meta(errs, &n.metadata, false, NameRule::Label);
    let finalizers = n.spec.as_ref().and_then(|s| s.finalizers.as_ref());
    for (i, f) in finalizers.into_iter().flatten().enumerate() {
        let path = format!("spec.finalizers[{i}]");
        for e in qualified_name_errors(f) {
            errs.push(FieldError::invalid(&path, f, e));
        }
        if f != NAMESPACE_FINALIZER && !f.contains('/') {
            errs.push(FieldError::invalid(
                &path,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    const PHASES: &[&str] = &["Active", "Terminating"];
    if let Some(p) = n.status.as_ref().and_then(|s| s.phase.as_deref())
        && !PHASES.contains(&p)
    {
        errs.push(FieldError::not_supported("status.phase", p, PHASES));
    }
}

//! What an update may not change (Kubernetes' `Validate*Update`): identity fields of
//! metadata, workload selectors, a Service's cluster IPs, a slice's address type, a node's pod
//! CIDR, and a pod's spec apart from the few fields Kubernetes lets change.

use super::{FieldError, ValidationErrors};
use crate::{Deployment, EndpointSlice, Node, ObjectMeta, Pod, PodSpec, ReplicaSet, Service};
use std::any::Any;

const IMMUTABLE: &str = "field is immutable";
const POD_UPDATE: &str = "pod updates may not change fields other than `spec.containers[*].image`,\
`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to \
existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was \
previously negative)";

/// A value printed as its JSON (`{"matchLabels":{"app":"web"}}`), as the invalid value of a
/// structured field.
struct AsJson(String);

impl std::fmt::Debug for AsJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn immutable<V: PartialEq + serde::Serialize>(
    errs: &mut ValidationErrors,
    path: &str,
    old: V,
    new: V,
) {
    if old != new {
        let shown = AsJson(serde_json::to_string(&new).unwrap_or_default());
        errs.push(FieldError::invalid(path, shown, IMMUTABLE));
    }
}

/// `ValidateObjectMetaUpdate`: name, namespace, uid and creation time stay as they were.
fn meta(errs: &mut ValidationErrors, old: &ObjectMeta, new: &ObjectMeta) {
    immutable(
        errs,
        "metadata.name",
        old.name.as_deref(),
        new.name.as_deref(),
    );
    let ns = |m: &ObjectMeta| m.namespace.clone().filter(|n| !n.is_empty());
    immutable(errs, "metadata.namespace", ns(old), ns(new));
    if old.uid.is_some() && new.uid.is_some() {
        immutable(errs, "metadata.uid", old.uid.as_deref(), new.uid.as_deref());
    }
    if let (Some(o), Some(n)) = (&old.creation_timestamp, &new.creation_timestamp) {
        immutable(errs, "metadata.creationTimestamp", o, n);
    }
}

/// The rules of an update of `old` to `new`, besides [`super::validate`] of `new`.
pub(crate) fn check<T: crate::Object>(errs: &mut ValidationErrors, old: &T, new: &T) {
    meta(errs, old.metadata(), new.metadata());
    let (old, new): (&dyn Any, &dyn Any) = (old, new);
    if let (Some(o), Some(n)) = (old.downcast_ref::<Pod>(), new.downcast_ref::<Pod>()) {
        pod(errs, o, n);
    } else if let (Some(o), Some(n)) = (
        old.downcast_ref::<Deployment>(),
        new.downcast_ref::<Deployment>(),
    ) {
        let sel = |d: &Deployment| d.spec.as_ref().map(|s| s.selector.clone());
        immutable(errs, "spec.selector", sel(o), sel(n));
    } else if let (Some(o), Some(n)) = (
        old.downcast_ref::<ReplicaSet>(),
        new.downcast_ref::<ReplicaSet>(),
    ) {
        let sel = |r: &ReplicaSet| r.spec.as_ref().map(|s| s.selector.clone());
        immutable(errs, "spec.selector", sel(o), sel(n));
    } else if let (Some(o), Some(n)) =
        (old.downcast_ref::<Service>(), new.downcast_ref::<Service>())
    {
        service(errs, o, n);
    } else if let (Some(o), Some(n)) = (
        old.downcast_ref::<EndpointSlice>(),
        new.downcast_ref::<EndpointSlice>(),
    ) {
        immutable(errs, "addressType", &o.address_type, &n.address_type);
    } else if let (Some(o), Some(n)) = (old.downcast_ref::<Node>(), new.downcast_ref::<Node>()) {
        // A pod CIDR, once given, stays.
        let cidr = |n: &Node| {
            n.spec
                .as_ref()
                .and_then(|s| s.pod_cidr.clone())
                .filter(|c| !c.is_empty())
        };
        if let (Some(a), Some(b)) = (cidr(o), cidr(n))
            && a != b
        {
            errs.push(FieldError::forbidden(
                "spec.podCIDR",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
    }
}

fn pod(errs: &mut ValidationErrors, old: &Pod, new: &Pod) {
    let (Some(o), Some(n)) = (&old.spec, &new.spec) else {
        if old.spec.is_some() != new.spec.is_some() {
            errs.push(FieldError::forbidden("spec", POD_UPDATE));
        }
        return;
    };
    // Take what may change from the new spec into a copy of the old one: what differs then
    // is what may not change.
    let mut allowed: PodSpec = o.clone();
    for (a, b) in allowed.containers.iter_mut().zip(&n.containers) {
        a.image.clone_from(&b.image);
    }
    for (a, b) in allowed
        .init_containers
        .iter_mut()
        .flatten()
        .zip(n.init_containers.iter().flatten())
    {
        a.image.clone_from(&b.image);
    }
    allowed.active_deadline_seconds = n.active_deadline_seconds;
    let old_tolerations = o.tolerations.as_deref().unwrap_or(&[]);
    let new_tolerations = n.tolerations.as_deref().unwrap_or(&[]);
    if new_tolerations.starts_with(old_tolerations) {
        allowed.tolerations.clone_from(&n.tolerations);
    }
    if o.termination_grace_period_seconds.is_some_and(|g| g < 0)
        && n.termination_grace_period_seconds == Some(1)
    {
        allowed.termination_grace_period_seconds = Some(1);
    }
    // podd binds a pod by writing its node name once (Kubernetes' binding subresource).
    if o.node_name.as_deref().is_none_or(str::is_empty) {
        allowed.node_name.clone_from(&n.node_name);
    }
    if &allowed != n {
        errs.push(FieldError::forbidden("spec", POD_UPDATE));
    }
}

fn service(errs: &mut ValidationErrors, old: &Service, new: &Service) {
    let (Some(o), Some(n)) = (&old.spec, &new.spec) else {
        return;
    };
    // An ExternalName service has no cluster IP to keep; otherwise one given stays.
    let external = |t: &Option<String>| t.as_deref() == Some("ExternalName");
    if external(&o.type_) || external(&n.type_) {
        return;
    }
    let ip = |s: &crate::ServiceSpec| s.cluster_ip.clone().filter(|c| !c.is_empty());
    if let (Some(a), Some(b)) = (ip(o), ip(n))
        && a != b
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &b,
            "may not change once set",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate_update;
    use crate::{Deployment, Node, Pod, Service};
    use serde_json::json;

    fn update<T: crate::Object>(old: serde_json::Value, new: serde_json::Value) -> Vec<String> {
        let old: T = serde_json::from_value(old).unwrap();
        let new: T = serde_json::from_value(new).unwrap();
        match validate_update(&old, &new) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn pods_change_only_what_kubernetes_allows() {
        let old = json!({"metadata": {"name": "p", "namespace": "a", "uid": "1"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}], "tolerations": [{"key": "k", "operator": "Exists"}]}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("busybox:2");
        new["spec"]["tolerations"] =
            json!([{"key": "k", "operator": "Exists"}, {"operator": "Exists"}]);
        new["spec"]["nodeName"] = json!("node-1");
        new["metadata"]["labels"] = json!({"x": "y"});
        assert_eq!(
            update::<Pod>(old.clone(), new.clone()),
            Vec::<String>::new()
        );
        let mut bad = new.clone();
        bad["spec"]["containers"][0]["args"] = json!(["x"]);
        bad["spec"]["tolerations"] = json!([]);
        bad["metadata"]["name"] = json!("q");
        let f = update::<Pod>(old, bad);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(
            f[0],
            "metadata.name: Invalid value: \"q\": field is immutable"
        );
        assert!(f[1].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"), "{f:#?}");
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}});
        let mut moved = bound.clone();
        moved["spec"]["nodeName"] = json!("n2");
        assert_eq!(update::<Pod>(bound, moved).len(), 1);
    }

    #[test]
    fn selectors_cluster_ips_and_cidrs_stay() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a", "v": "1"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let mut d2 = d.clone();
        d2["spec"]["selector"]["matchLabels"]["v"] = json!("1");
        let f = update::<Deployment>(d.clone(), d2);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(
            f,
            [
                "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"a\",\"v\":\"1\"}}: field is immutable"
            ]
        );
        let mut d3 = d.clone();
        d3["spec"]["replicas"] = json!(5);
        assert_eq!(update::<Deployment>(d, d3), Vec::<String>::new());
        let s = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}});
        let mut s2 = s.clone();
        s2["spec"]["clusterIP"] = json!("10.96.0.11");
        assert_eq!(
            update::<Service>(s, s2),
            ["spec.clusterIPs[0]: Invalid value: \"10.96.0.11\": may not change once set"]
        );
        let n = json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.1.0/24"}});
        let mut n2 = n.clone();
        n2["spec"]["podCIDR"] = json!("10.244.2.0/24");
        assert_eq!(update::<Node>(n, n2).len(), 1);
    }
}

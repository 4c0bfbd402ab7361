//! The downward API: a pod's own fields (`fieldRef`) and its containers' resources
//! (`resourceFieldRef`) as strings, for env variables and downwardAPI volume files, with the
//! kubelet's formats and rounding.

use podd_api::{Cpu, Memory, Pod, Quantity, ResourceExt};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What the node knows that the pod object may not say yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub pod_ip: Option<IpAddr>,
    pub host_ip: Option<IpAddr>,
    /// Node allocatable, which stands for a limit that is unset (as the kubelet does).
    pub allocatable_cpu_millis: u64,
    pub allocatable_memory_bytes: u64,
    pub allocatable_ephemeral_bytes: u64,
}

/// Where a fieldRef is used: env takes the pod's status fields, volumes only metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldUse {
    Env,
    Volume,
}

/// The value of `fieldPath` for `pod`, or why it has none.
pub fn field_value(
    pod: &Pod,
    path: &str,
    facts: &NodeFacts,
    usage: FieldUse,
) -> Result<String, String> {
    let spec = pod.spec.as_ref();
    let ip = |ip: Option<IpAddr>| ip.map(|i| i.to_string()).unwrap_or_default();
    let status_only = |v: String| match usage {
        FieldUse::Env => Ok(v),
        FieldUse::Volume => Err(format!(
            "fieldPath {path:?} is not supported in downwardAPI volumes (only metadata fields are)"
        )),
    };
    match path {
        "metadata.name" => Ok(pod.name_any()),
        "metadata.namespace" => Ok(pod.namespace().unwrap_or_default()),
        "metadata.uid" => Ok(pod.metadata.uid.clone().unwrap_or_default()),
        "metadata.labels" => Ok(format_map(pod.metadata.labels.as_ref())),
        "metadata.annotations" => Ok(format_map(pod.metadata.annotations.as_ref())),
        "spec.nodeName" => status_only(spec.and_then(|s| s.node_name.clone()).unwrap_or_default()),
        "spec.serviceAccountName" => status_only(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
        ),
        "status.podIP" | "status.podIPs" => status_only(ip(facts.pod_ip)),
        "status.hostIP" | "status.hostIPs" => status_only(ip(facts.host_ip)),
        _ => {
            let subscript = |prefix: &str| {
                path.strip_prefix(prefix)?
                    .strip_suffix("']")
                    .map(str::to_string)
            };
            if let Some(key) = subscript("metadata.labels['") {
                return Ok(pod.labels().get(&key).cloned().unwrap_or_default());
            }
            if let Some(key) = subscript("metadata.annotations['") {
                return Ok(pod.annotations().get(&key).cloned().unwrap_or_default());
            }
            Err(format!("unsupported fieldPath {path:?}"))
        }
    }
}

/// A whole label or annotation map as the kubelet writes it: `key="value"` lines, sorted,
/// values quoted as Go's %q does.
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A string in double quotes with Go's escapes for quotes, backslashes and control
/// characters (printable Unicode is kept).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a resourceFieldRef (`limits.cpu`, `requests.memory`, …) of container
/// `container`, divided by `divisor` and rounded up, as the kubelet computes it. Unset limits
/// are the node's allocatable; unset requests are 0.
pub fn resource_value(
    pod: &Pod,
    container: &str,
    resource: &str,
    divisor: Option<&Quantity>,
    facts: &NodeFacts,
) -> Result<String, String> {
    let c = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == container)
        .ok_or_else(|| format!("resourceFieldRef: no container {container:?} in the pod"))?;
    let (list, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    let r = c.resources.as_ref();
    let map = match list {
        "limits" => r.and_then(|r| r.limits.as_ref()),
        "requests" => r.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let set = map.and_then(|m| m.get(name));
    let bad = |q: &Quantity| format!("resource {resource}: invalid quantity {:?}", q.0);
    match name {
        "cpu" => {
            let value = match set {
                Some(q) => Cpu::try_from(q).map_err(|_| bad(q))?.millis(),
                None if list == "limits" => facts.allocatable_cpu_millis,
                None => 0,
            };
            let div = match divisor {
                Some(q) => Cpu::try_from(q).map_err(|_| bad(q))?.millis(),
                None => 1000,
            };
            divide_up(value, div, resource)
        }
        "memory" | "ephemeral-storage" => {
            let allocatable = if name == "memory" {
                facts.allocatable_memory_bytes
            } else {
                facts.allocatable_ephemeral_bytes
            };
            let value = match set {
                Some(q) => Memory::try_from(q).map_err(|_| bad(q))?.bytes(),
                None if list == "limits" => allocatable,
                None => 0,
            };
            let div = match divisor {
                Some(q) => Memory::try_from(q).map_err(|_| bad(q))?.bytes(),
                None => 1,
            };
            divide_up(value, div, resource)
        }
        _ => Err(format!("unsupported resource {resource:?}")),
    }
}

/// `value / divisor`, rounded up, as a decimal string.
fn divide_up(value: u64, divisor: u64, resource: &str) -> Result<String, String> {
    if divisor == 0 {
        return Err(format!("resource {resource}: the divisor must be positive"));
    }
    Ok(value.div_ceil(divisor).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                "labels": {"app": "web", "tier": "a\"b"},
                "annotations": {"note": "x\ny"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa",
                "containers": [{"name": "c",
                    "resources": {"limits": {"cpu": "1500m", "memory": "96Mi"},
                                  "requests": {"cpu": "250m", "memory": "64Mi"}}},
                    {"name": "bare"}]}
        }))
        .unwrap()
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            pod_ip: Some("10.42.0.7".parse().unwrap()),
            host_ip: Some("192.168.1.2".parse().unwrap()),
            allocatable_cpu_millis: 4000,
            allocatable_memory_bytes: 8 << 30,
            allocatable_ephemeral_bytes: 100 << 30,
        }
    }

    #[test]
    fn field_paths() {
        let (p, f) = (pod(), facts());
        let env = |path| field_value(&p, path, &f, FieldUse::Env);
        for (path, want) in [
            ("metadata.name", "p"),
            ("metadata.namespace", "ns"),
            ("metadata.uid", "u-1"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['absent']", ""),
            ("metadata.annotations['note']", "x\ny"),
            ("spec.nodeName", "n1"),
            ("spec.serviceAccountName", "sa"),
            ("status.podIP", "10.42.0.7"),
            ("status.podIPs", "10.42.0.7"),
            ("status.hostIP", "192.168.1.2"),
            ("metadata.labels", "app=\"web\"\ntier=\"a\\\"b\""),
            ("metadata.annotations", "note=\"x\\ny\""),
        ] {
            assert_eq!(env(path).as_deref(), Ok(want), "{path}");
        }
        assert!(env("spec.containers").unwrap_err().contains("unsupported"));
        // Volumes show metadata only, as Kubernetes allows.
        assert!(field_value(&p, "status.podIP", &f, FieldUse::Volume).is_err());
        assert_eq!(
            field_value(&p, "metadata.labels['app']", &f, FieldUse::Volume).as_deref(),
            Ok("web")
        );
    }

    #[test]
    fn resources_with_divisors_and_node_defaults() {
        let (p, f) = (pod(), facts());
        let q = |s: &str| Quantity(s.into());
        let v = |c, r, d: Option<&str>| resource_value(&p, c, r, d.map(q).as_ref(), &f);
        assert_eq!(
            v("c", "limits.cpu", None).as_deref(),
            Ok("2"),
            "1.5 cores round up"
        );
        assert_eq!(v("c", "limits.cpu", Some("1m")).as_deref(), Ok("1500"));
        assert_eq!(v("c", "requests.cpu", Some("1m")).as_deref(), Ok("250"));
        assert_eq!(v("c", "limits.memory", Some("1Mi")).as_deref(), Ok("96"));
        assert_eq!(v("c", "requests.memory", None).as_deref(), Ok("67108864"));
        assert_eq!(v("c", "limits.memory", Some("1G")).as_deref(), Ok("1"));
        // Unset limits are the node's allocatable; unset requests 0.
        assert_eq!(v("bare", "limits.cpu", None).as_deref(), Ok("4"));
        assert_eq!(v("bare", "limits.memory", Some("1Gi")).as_deref(), Ok("8"));
        assert_eq!(
            v("bare", "limits.ephemeral-storage", Some("1Gi")).as_deref(),
            Ok("100")
        );
        assert_eq!(v("bare", "requests.memory", None).as_deref(), Ok("0"));
        assert!(v("c", "limits.gpu", None).is_err());
        assert!(v("nope", "limits.cpu", None).is_err());
        assert!(v("c", "limits.cpu", Some("0")).is_err());
    }

    proptest! {
        /// The value is the smallest integer n with n * divisor >= the quantity.
        #[test]
        fn divisor_rounding_is_a_ceiling(millis in 0u64..10_000_000, div in 1u64..100_000) {
            let mut p = pod();
            let c = &mut p.spec.as_mut().unwrap().containers[0];
            c.resources.as_mut().unwrap().limits.as_mut().unwrap()
                .insert("cpu".into(), Quantity(format!("{millis}m")));
            let got: u64 = resource_value(&p, "c", "limits.cpu",
                Some(&Quantity(format!("{div}m"))), &facts()).unwrap().parse().unwrap();
            prop_assert!(got * div >= millis);
            prop_assert!(got == 0 || (got - 1) * div < millis);
        }

        #[test]
        fn label_subscripts_read_any_key(key in "[a-z0-9./-]{1,30}", value in "\\PC{0,40}") {
            let mut p = pod();
            p.metadata.labels.get_or_insert_with(Default::default).insert(key.clone(), value.clone());
            let got = field_value(&p, &format!("metadata.labels['{key}']"), &facts(), FieldUse::Env);
            prop_assert_eq!(got, Ok(value));
        }
    }
}

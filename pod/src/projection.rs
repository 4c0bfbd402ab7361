//! The files of configMap, secret, downwardAPI and projected volumes: which key goes to
//! which path with which mode, computed from the pod, the fetched objects and the node's
//! facts, as the kubelet computes them. Written by [`crate::atomic_writer`].

use crate::atomic_writer::{FileEntry, Payload};
use crate::downward::{self, FieldUse, NodeFacts};
use crate::sources::{ConfigSources, KeyData, SourceKind};
use podd_api::k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath};
use podd_api::{Pod, Volume};

/// The mode of a volume's files when neither the item nor the volume sets one (0644).
pub const DEFAULT_MODE: u32 = 0o644;

/// Which of the configuration volume kinds a volume is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVolumeKind {
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
}

impl ConfigVolumeKind {
    pub fn of(v: &Volume) -> Option<ConfigVolumeKind> {
        if v.config_map.is_some() {
            Some(ConfigVolumeKind::ConfigMap)
        } else if v.secret.is_some() {
            Some(ConfigVolumeKind::Secret)
        } else if v.downward_api.is_some() {
            Some(ConfigVolumeKind::DownwardApi)
        } else if v.projected.is_some() {
            Some(ConfigVolumeKind::Projected)
        } else {
            None
        }
    }

    /// The directory under the pod's volumes the kind's volumes live in.
    pub fn dir(self) -> &'static str {
        match self {
            ConfigVolumeKind::ConfigMap => "configmap",
            ConfigVolumeKind::Secret => "secret",
            ConfigVolumeKind::DownwardApi => "downward-api",
            ConfigVolumeKind::Projected => "projected",
        }
    }

    /// Secrets (and projected volumes, which may hold secrets and tokens) live on a tmpfs,
    /// never on the node's disk, as the kubelet keeps them.
    pub fn on_tmpfs(self) -> bool {
        matches!(self, ConfigVolumeKind::Secret | ConfigVolumeKind::Projected)
    }
}

/// Why a volume's files cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// A ConfigMap, Secret or key is missing and not optional: retried until it exists
    /// (the message names it).
    Missing(String),
    /// Something this node cannot show (a serviceAccountToken source, a bad field path).
    Unsupported(String),
}

impl PayloadError {
    pub fn message(&self) -> &str {
        match self {
            PayloadError::Missing(m) | PayloadError::Unsupported(m) => m,
        }
    }
}

/// The files of volume `v`, or None when it is not a configuration volume.
pub fn volume_payload(
    pod: &Pod,
    v: &Volume,
    sources: &ConfigSources,
    facts: &NodeFacts,
) -> Option<Result<Payload, PayloadError>> {
    let mode = |m: Option<i32>| m.map_or(DEFAULT_MODE, |m| m as u32 & 0o7777);
    let mut out = Payload::new();
    let result = if let Some(c) = &v.config_map {
        let d = mode(c.default_mode);
        let (name, items) = (&c.name, c.items.as_deref());
        keyed(
            SourceKind::ConfigMap,
            name,
            items,
            c.optional,
            d,
            sources,
            &mut out,
        )
    } else if let Some(s) = &v.secret {
        let d = mode(s.default_mode);
        let name = s.secret_name.clone().unwrap_or_default();
        keyed(
            SourceKind::Secret,
            &name,
            s.items.as_deref(),
            s.optional,
            d,
            sources,
            &mut out,
        )
    } else if let Some(dw) = &v.downward_api {
        let d = mode(dw.default_mode);
        fields(
            pod,
            dw.items.as_deref().unwrap_or_default(),
            d,
            facts,
            &mut out,
        )
    } else if let Some(p) = &v.projected {
        let d = mode(p.default_mode);
        p.sources.iter().flatten().try_for_each(|src| {
            if let Some(c) = &src.config_map {
                keyed(SourceKind::ConfigMap, &c.name, c.items.as_deref(), c.optional, d, sources, &mut out)
            } else if let Some(s) = &src.secret {
                keyed(SourceKind::Secret, &s.name, s.items.as_deref(), s.optional, d, sources, &mut out)
            } else if let Some(dw) = &src.downward_api {
                fields(pod, dw.items.as_deref().unwrap_or_default(), d, facts, &mut out)
            } else {
                let what = if src.service_account_token.is_some() {
                    "serviceAccountToken"
                } else if src.cluster_trust_bundle.is_some() {
                    "clusterTrustBundle"
                } else if src.pod_certificate.is_some() {
                    "podCertificate"
                } else {
                    "an empty source"
                };
                Err(PayloadError::Unsupported(format!(
                    "projected volume {:?}: {what} is not supported by this node yet; use configMap, secret or downwardAPI sources",
                    v.name
                )))
            }
        })
    } else {
        return None;
    };
    Some(result.map(|()| out))
}

/// Keys of a ConfigMap or Secret: every key at its own name, or the `items` given.
fn keyed(
    kind: SourceKind,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    default_mode: u32,
    sources: &ConfigSources,
    out: &mut Payload,
) -> Result<(), PayloadError> {
    let optional = optional == Some(true);
    let empty = KeyData::new();
    let data = match sources.get(kind, name) {
        Some(d) => d,
        None if optional => &empty,
        None => return Err(PayloadError::Missing(ConfigSources::not_found(kind, name))),
    };
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (key, value) in data {
                out.insert(
                    key.clone(),
                    FileEntry {
                        data: value.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(PayloadError::Missing(format!(
                        "{} references non-existent {} key: {} (in {}/{name})",
                        kind.noun(),
                        match kind {
                            SourceKind::ConfigMap => "config",
                            SourceKind::Secret => "secret",
                        },
                        item.key,
                        sources.namespace
                    )));
                };
                out.insert(
                    item.path.clone(),
                    FileEntry {
                        data: value.clone(),
                        mode: item.mode.map_or(default_mode, |m| m as u32 & 0o7777),
                    },
                );
            }
        }
    }
    Ok(())
}

/// The downward API's files.
fn fields(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    facts: &NodeFacts,
    out: &mut Payload,
) -> Result<(), PayloadError> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            downward::field_value(pod, &f.field_path, facts, FieldUse::Volume)
        } else if let Some(r) = &item.resource_field_ref {
            let container = r.container_name.as_deref().unwrap_or_default();
            downward::resource_value(pod, container, &r.resource, r.divisor.as_ref(), facts)
        } else {
            Err("sets neither fieldRef nor resourceFieldRef".into())
        }
        .map_err(|e| PayloadError::Unsupported(format!("downwardAPI item {:?}: {e}", item.path)))?;
        out.insert(
            item.path.clone(),
            FileEntry {
                data: value.into_bytes(),
                mode: item.mode.map_or(default_mode, |m| m as u32 & 0o7777),
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}],
                     "volumes": volumes}
        }))
        .unwrap()
    }

    fn sources() -> ConfigSources {
        let mut s = ConfigSources::new("ns");
        s.config_maps.insert(
            "cfg".into(),
            [
                ("x".to_string(), b"1".to_vec()),
                ("y".to_string(), b"2".to_vec()),
            ]
            .into(),
        );
        s.secrets.insert(
            "sec".into(),
            [("pw".to_string(), b"hunter2".to_vec())].into(),
        );
        s
    }

    fn payload(v: serde_json::Value) -> Result<Payload, PayloadError> {
        let p = pod(serde_json::json!([v]));
        let v = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        volume_payload(&p, v, &sources(), &NodeFacts::default()).unwrap()
    }

    fn summary(p: &Payload) -> Vec<(String, String, u32)> {
        p.iter()
            .map(|(k, f)| {
                (
                    k.clone(),
                    String::from_utf8_lossy(&f.data).into_owned(),
                    f.mode,
                )
            })
            .collect()
    }

    fn s(k: &str, v: &str, m: u32) -> (String, String, u32) {
        (k.into(), v.into(), m)
    }

    #[test]
    fn config_maps_and_secrets_with_items_and_modes() {
        let p = payload(serde_json::json!({"name": "v", "configMap": {"name": "cfg"}})).unwrap();
        assert_eq!(summary(&p), [s("x", "1", 0o644), s("y", "2", 0o644)]);
        let p = payload(serde_json::json!({"name": "v", "configMap": {"name": "cfg", "defaultMode": 0o600,
            "items": [{"key": "y", "path": "sub/why"}, {"key": "x", "path": "ex", "mode": 0o400}]}}))
        .unwrap();
        assert_eq!(summary(&p), [s("ex", "1", 0o400), s("sub/why", "2", 0o600)]);
        let p = payload(serde_json::json!({"name": "v", "secret": {"secretName": "sec"}})).unwrap();
        assert_eq!(summary(&p), [s("pw", "hunter2", 0o644)]);
    }

    #[test]
    fn missing_and_optional() {
        let e =
            payload(serde_json::json!({"name": "v", "configMap": {"name": "gone"}})).unwrap_err();
        assert_eq!(
            e,
            PayloadError::Missing("configmap \"gone\" not found".into())
        );
        let e = payload(
            serde_json::json!({"name": "v", "secret": {"secretName": "sec",
            "items": [{"key": "nope", "path": "p"}]}}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, PayloadError::Missing(m) if m.contains("nope")),
            "{e:?}"
        );
        let p = payload(
            serde_json::json!({"name": "v", "secret": {"secretName": "gone", "optional": true}}),
        )
        .unwrap();
        assert!(p.is_empty());
        let p = payload(
            serde_json::json!({"name": "v", "configMap": {"name": "cfg", "optional": true,
            "items": [{"key": "nope", "path": "p"}, {"key": "x", "path": "q"}]}}),
        )
        .unwrap();
        assert_eq!(summary(&p), [s("q", "1", 0o644)]);
    }

    #[test]
    fn downward_and_projected() {
        let p = payload(serde_json::json!({"name": "v", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}]}}))
        .unwrap();
        assert_eq!(
            summary(&p),
            [
                s("labels", "a=\"1\"\nb=\"2\"", 0o644),
                s("mem", "64", 0o644),
                s("name", "p", 0o644)
            ]
        );
        let p = payload(serde_json::json!({"name": "v", "projected": {"defaultMode": 0o440, "sources": [
            {"configMap": {"name": "cfg", "items": [{"key": "x", "path": "cfg/x"}]}},
            {"secret": {"name": "sec"}},
            {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}))
        .unwrap();
        assert_eq!(
            summary(&p),
            [
                s("cfg/x", "1", 0o440),
                s("ns", "ns", 0o440),
                s("pw", "hunter2", 0o440)
            ]
        );
        let e = payload(serde_json::json!({"name": "v", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}}]}}))
        .unwrap_err();
        assert!(
            matches!(&e, PayloadError::Unsupported(m) if m.contains("serviceAccountToken")),
            "{e:?}"
        );
        let e = payload(serde_json::json!({"name": "v", "downwardAPI": {"items": [
            {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}}))
        .unwrap_err();
        assert!(matches!(e, PayloadError::Unsupported(_)));
    }
}

//! The ConfigMaps and Secrets a pod consumes: which ones it references (so that the agent
//! fetches them from the API server), and their data as the node has them.
//!
//! A missing object or key is not an error of this module: the env and volume resolution
//! ([`crate::env`], [`crate::projection`]) decide, with the reference's `optional`, whether
//! it is skipped or keeps the container waiting (CreateContainerConfigError).

use podd_api::k8s_openapi::api::core::v1::{ConfigMap, Secret};
use podd_api::{Container, Pod, Volume};
use std::collections::{BTreeMap, BTreeSet};

/// The two kinds a pod can take configuration from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceKind {
    ConfigMap,
    Secret,
}

impl SourceKind {
    /// The lower-case name Kubernetes' messages use (`configmap "x" not found`).
    pub fn noun(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => "configmap",
            SourceKind::Secret => "secret",
        }
    }

    /// The kind as written in `couldn't find key k in ConfigMap ns/name`.
    pub fn kind(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        }
    }

    /// The resource in the API path (`/api/v1/namespaces/<ns>/<resource>/<name>`).
    pub fn resource(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => "configmaps",
            SourceKind::Secret => "secrets",
        }
    }
}

/// Key to bytes: a ConfigMap's `data` and `binaryData`, or a Secret's `data` (with any
/// `stringData` a server left unmerged laid over it, as the API server would merge it).
pub type KeyData = BTreeMap<String, Vec<u8>>;

/// The ConfigMaps and Secrets of the pod's namespace that the node has fetched, by name.
/// An object that does not exist is simply absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigSources {
    pub namespace: String,
    pub config_maps: BTreeMap<String, KeyData>,
    pub secrets: BTreeMap<String, KeyData>,
}

impl ConfigSources {
    pub fn new(namespace: &str) -> ConfigSources {
        ConfigSources {
            namespace: namespace.to_string(),
            ..ConfigSources::default()
        }
    }

    pub fn insert_config_map(&mut self, cm: &ConfigMap) {
        let mut data: KeyData = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in cm.binary_data.iter().flatten() {
            data.insert(k.clone(), v.0.clone());
        }
        let name = cm.metadata.name.clone().unwrap_or_default();
        self.config_maps.insert(name, data);
    }

    pub fn insert_secret(&mut self, s: &Secret) {
        let mut data: KeyData = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in s.string_data.iter().flatten() {
            data.insert(k.clone(), v.clone().into_bytes());
        }
        let name = s.metadata.name.clone().unwrap_or_default();
        self.secrets.insert(name, data);
    }

    /// The data of one object, or None when it does not exist.
    pub fn get(&self, kind: SourceKind, name: &str) -> Option<&KeyData> {
        match kind {
            SourceKind::ConfigMap => self.config_maps.get(name),
            SourceKind::Secret => self.secrets.get(name),
        }
    }

    /// `configmap "x" not found`, as the kubelet says it.
    pub fn not_found(kind: SourceKind, name: &str) -> String {
        format!("{} {name:?} not found", kind.noun())
    }

    /// `couldn't find key k in ConfigMap ns/name`, as the kubelet says it.
    pub fn key_not_found(&self, kind: SourceKind, name: &str, key: &str) -> String {
        format!(
            "couldn't find key {key} in {} {}/{name}",
            kind.kind(),
            self.namespace
        )
    }
}

/// The objects a pod references, by kind and name.
pub type References = BTreeSet<(SourceKind, String)>;

/// Every ConfigMap and Secret the pod's containers and volumes reference.
pub fn references(pod: &Pod) -> References {
    let mut out = volume_references(pod);
    let spec = pod.spec.as_ref();
    let containers = spec.map_or(&[][..], |s| &s.containers[..]);
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    for c in containers.iter().chain(init) {
        container_references(c, &mut out);
    }
    out
}

fn container_references(c: &Container, out: &mut References) {
    for e in c.env_from.iter().flatten() {
        if let Some(r) = &e.config_map_ref {
            out.insert((SourceKind::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &e.secret_ref {
            out.insert((SourceKind::Secret, r.name.clone()));
        }
    }
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            out.insert((SourceKind::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &from.secret_key_ref {
            out.insert((SourceKind::Secret, r.name.clone()));
        }
    }
}

/// The ConfigMaps and Secrets the pod's volumes show (what a refresh fetches again).
pub fn volume_references(pod: &Pod) -> References {
    let mut out = References::new();
    let volumes: &[Volume] = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    for v in volumes {
        if let Some(c) = &v.config_map {
            out.insert((SourceKind::ConfigMap, c.name.clone()));
        }
        if let Some(s) = &v.secret {
            out.insert((
                SourceKind::Secret,
                s.secret_name.clone().unwrap_or_default(),
            ));
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                out.insert((SourceKind::ConfigMap, c.name.clone()));
            }
            if let Some(s) = &src.secret {
                out.insert((SourceKind::Secret, s.name.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_is_found_once() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{"name": "c",
                    "env": [
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "a"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "b"}}},
                        {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "envFrom": [{"configMapRef": {"name": "cm2"}}, {"secretRef": {"name": "s1"}}]}],
                "volumes": [
                    {"name": "v1", "configMap": {"name": "cm3"}},
                    {"name": "v2", "secret": {"secretName": "s2"}},
                    {"name": "v3", "projected": {"sources": [
                        {"configMap": {"name": "cm1"}}, {"secret": {"name": "s3"}}]}}]
            }
        }))
        .unwrap();
        let all = references(&pod);
        let refs: Vec<(SourceKind, &str)> = all.iter().map(|(k, n)| (*k, n.as_str())).collect();
        use SourceKind::*;
        assert_eq!(
            refs,
            [
                (ConfigMap, "cm1"),
                (ConfigMap, "cm2"),
                (ConfigMap, "cm3"),
                (Secret, "s1"),
                (Secret, "s2"),
                (Secret, "s3")
            ]
        );
        assert_eq!(volume_references(&pod).len(), 4);
    }

    #[test]
    fn binary_data_and_string_data_are_merged() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cm"}, "data": {"a": "1"}, "binaryData": {"b": "AAE="}}))
        .unwrap();
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"}, "data": {"a": "MQ==", "b": "Mg=="}, "stringData": {"b": "3"}}))
        .unwrap();
        let mut src = ConfigSources::new("ns");
        src.insert_config_map(&cm);
        src.insert_secret(&s);
        let cm = src.get(SourceKind::ConfigMap, "cm").unwrap();
        assert_eq!(
            (cm["a"].as_slice(), cm["b"].as_slice()),
            (&b"1"[..], &[0u8, 1][..])
        );
        let s = src.get(SourceKind::Secret, "s").unwrap();
        assert_eq!(
            (s["a"].as_slice(), s["b"].as_slice()),
            (&b"1"[..], &b"3"[..])
        );
        assert_eq!(
            src.key_not_found(SourceKind::Secret, "s", "k"),
            "couldn't find key k in Secret ns/s"
        );
        assert_eq!(
            ConfigSources::not_found(SourceKind::ConfigMap, "x"),
            "configmap \"x\" not found"
        );
    }
}

//! `podctl apply -f`: Kubernetes YAML or JSON manifests of any kind the server serves (Pod,
//! Deployment, ReplicaSet, Service, Endpoints, EndpointSlice, HorizontalPodAutoscaler, Lease,
//! Event, Node, Job), several per file or in a `List`. Each document is checked against its
//! k8s-openapi type; a field the type does not know (a typo, or a field of another version)
//! is an error that names it, rather than being dropped without a word.

use anyhow::{Context, Result, anyhow, bail};
use podd_api::{Kind, Object};
use serde_json::Value;

/// One object of a manifest: its kind and the document as written (sent as is, so that the
/// server sees exactly the fields the user set).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub kind: Kind,
    pub doc: Value,
}

impl Manifest {
    pub fn name(&self) -> &str {
        self.doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The document decoded into its k8s-openapi type.
    #[cfg(test)]
    pub fn typed<T: Object>(&self) -> Result<T> {
        serde_json::from_value(self.doc.clone())
            .with_context(|| format!("{} {}: invalid", self.kind.name(), self.name()))
    }
}

/// Parses every document of a file; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<Vec<Manifest>> {
    let mut docs = Vec::new();
    if text.trim_start().starts_with(['{', '[']) {
        let v: Value =
            serde_json::from_str(text).with_context(|| format!("{source}: invalid JSON"))?;
        docs.push(v);
    } else {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{source}: document {}: invalid YAML", i + 1))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let what = format!("{source}: document {}", i + 1);
        if doc
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k == "List" || k.ends_with("List"))
        {
            let items = doc
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("{what}: a List needs an items array"))?;
            for (j, item) in items.iter().enumerate() {
                out.push(one(item.clone(), &format!("{what}, item {}", j + 1))?);
            }
        } else {
            out.push(one(doc, &what)?);
        }
    }
    if out.is_empty() {
        bail!("{source}: no objects found; expected Kubernetes objects with apiVersion and kind");
    }
    Ok(out)
}

fn served_kinds() -> String {
    Kind::ALL
        .iter()
        .map(|k| format!("{} {}", k.api_version(), k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn one(doc: Value, what: &str) -> Result<Manifest> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind_name = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let what = format!("{what} ({kind_name} {name})");
    if api_version.is_empty() || kind_name.is_empty() {
        bail!("{what}: apiVersion and kind are required");
    }
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.api_version() == api_version && k.name() == kind_name)
        .ok_or_else(|| {
            anyhow!(
                "{what}: {api_version} {kind_name} is not supported; podd serves {}",
                served_kinds()
            )
        })?;
    podd_api::with_kind_type!(kind, T => check::<T>(&doc, &what))?;
    Ok(Manifest { kind, doc })
}

/// Decodes `doc` as `T`, then checks that every field it set survives a round trip through
/// the type; one that doesn't is a field Kubernetes' schema does not have.
fn check<T: Object>(doc: &Value, what: &str) -> Result<()> {
    let value: T =
        serde_json::from_value(doc.clone()).with_context(|| format!("{what}: invalid"))?;
    let back = serde_json::to_value(&value)?;
    let mut unknown = Vec::new();
    unknown_fields(doc, &back, "", &mut unknown);
    if !unknown.is_empty() {
        bail!(
            "{what}: unknown field(s): {}; check their spelling and the kind's apiVersion (`kubectl explain` lists the fields)",
            unknown.join(", ")
        );
    }
    Ok(())
}

/// Paths set (to a non-null value) in `given` that are absent from `kept`.
fn unknown_fields(given: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, gv) in g {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_fields(gv, kv, &p, out),
                    None if gv.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                unknown_fields(gv, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::{Deployment, IntOrString, Service};

    const DEPLOY_AND_SERVICE: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: busybox-httpd
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet: {path: /, port: http}
        resources:
          requests: {cpu: 100m, memory: 32Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: http
"#;

    #[test]
    fn reads_a_deployment_and_a_service() {
        let m = parse(DEPLOY_AND_SERVICE, "web.yaml").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].kind, Kind::Deployment);
        let d: Deployment = m[0].typed().unwrap();
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let c = &spec.template.spec.unwrap().containers[0];
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        let s: Service = m[1].typed().unwrap();
        assert_eq!(
            s.spec.unwrap().ports.unwrap()[0].target_port,
            Some(IntOrString::String("http".into()))
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let text = DEPLOY_AND_SERVICE.replace(
            "      containers:",
            "      serviceAcountName: builder\n      containers:",
        );
        let e = parse(&text, "web.yaml").unwrap_err().to_string();
        assert!(e.contains("spec.template.spec.serviceAcountName"), "{e}");
        assert!(e.contains("Deployment web"), "{e}");
        // A real field podd does not act on yet is still a field: it is sent, not refused.
        let text = DEPLOY_AND_SERVICE.replace(
            "      containers:",
            "      serviceAccountName: builder\n      containers:",
        );
        assert!(parse(&text, "web.yaml").is_ok());
    }

    #[test]
    fn every_served_kind_and_json_lists() {
        let e = parse(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: j}\n",
            "j.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("storage.k8s.io/v1 StorageClass is not supported"),
            "{e}"
        );
        let json = r#"{"kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}]}"#;
        let m = parse(json, "l.json").unwrap();
        assert_eq!(m[0].name(), "p");
        assert!(parse("", "empty.yaml").is_err());
        let more = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs}\nspec:\n  selector: {matchLabels: {a: b}}\n---\n\
            apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\n---\n\
            apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: l, namespace: kube-node-lease}\nspec: {holderIdentity: n1}\n---\n\
            apiVersion: v1\nkind: Event\nmetadata: {name: e}\ninvolvedObject: {kind: Pod, name: p}\nreason: Started\n---\n\
            apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n";
        let kinds: Vec<Kind> = parse(more, "m.yaml")
            .unwrap()
            .iter()
            .map(|m| m.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                Kind::ReplicaSet,
                Kind::EndpointSlice,
                Kind::Lease,
                Kind::Event,
                Kind::Job
            ]
        );
    }
}

//! `podctl apply -f`: Kubernetes-style YAML or JSON manifests (apps/v1 Deployment, v1 Service,
//! v1 Pod, autoscaling/v2 HorizontalPodAutoscaler), several per file. A field podd does not
//! support is an error that names it, rather than being dropped without a word.

use anyhow::{Context, Result, anyhow, bail};
use podd_api::{Deployment, HorizontalPodAutoscaler, Kind, Pod, Service};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, Clone)]
pub enum Manifest {
    Pod(Pod),
    Deployment(Deployment),
    Service(Service),
    Hpa(HorizontalPodAutoscaler),
}

impl Manifest {
    pub fn kind(&self) -> Kind {
        match self {
            Manifest::Pod(_) => Kind::Pod,
            Manifest::Deployment(_) => Kind::Deployment,
            Manifest::Service(_) => Kind::Service,
            Manifest::Hpa(_) => Kind::HorizontalPodAutoscaler,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Manifest::Pod(o) => &o.metadata.name,
            Manifest::Deployment(o) => &o.metadata.name,
            Manifest::Service(o) => &o.metadata.name,
            Manifest::Hpa(o) => &o.metadata.name,
        }
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
            let v = Value::deserialize_yaml(doc)
                .with_context(|| format!("{source}: document {}: invalid YAML", i + 1))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let what = format!("{source}: document {}", i + 1);
        if doc.get("kind").and_then(Value::as_str) == Some("List") {
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
        bail!(
            "{source}: no objects found; expected a Deployment, Service, Pod or HorizontalPodAutoscaler"
        );
    }
    Ok(out)
}

trait YamlValue {
    fn deserialize_yaml(d: serde_yaml::Deserializer<'_>) -> Result<Value>;
}

impl YamlValue for Value {
    fn deserialize_yaml(d: serde_yaml::Deserializer<'_>) -> Result<Value> {
        use serde::Deserialize;
        Ok(Value::deserialize(d)?)
    }
}

fn one(doc: Value, what: &str) -> Result<Manifest> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let what = format!("{what} ({kind} {name})");
    match (api_version, kind) {
        ("v1", "Pod") => typed(doc, &what).map(Manifest::Pod),
        ("apps/v1", "Deployment") => typed(doc, &what).map(Manifest::Deployment),
        ("v1", "Service") => typed(doc, &what).map(Manifest::Service),
        ("autoscaling/v2" | "autoscaling/v1", "HorizontalPodAutoscaler") => {
            typed(doc, &what).map(Manifest::Hpa)
        }
        ("", _) | (_, "") => bail!("{what}: apiVersion and kind are required"),
        _ => bail!(
            "{what}: {api_version} {kind} is not supported; podd serves v1 Pod, apps/v1 Deployment, v1 Service and autoscaling/v2 HorizontalPodAutoscaler"
        ),
    }
}

/// Deserialises `doc`, then checks that every field it set survives a round trip through the
/// typed object; one that doesn't is a field podd does not know.
fn typed<T: DeserializeOwned + Serialize>(mut doc: Value, what: &str) -> Result<T> {
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("apiVersion");
        obj.remove("kind");
        obj.remove("status");
    }
    let value: T =
        serde_json::from_value(doc.clone()).with_context(|| format!("{what}: invalid"))?;
    let back = serde_json::to_value(&value)?;
    let mut unsupported = Vec::new();
    unknown_fields(&doc, &back, "", &mut unsupported);
    if !unsupported.is_empty() {
        bail!(
            "{what}: unsupported field(s): {}; remove them (podd supports the fields listed in docs/API.md)",
            unsupported.join(", ")
        );
    }
    Ok(value)
}

/// Paths set (to a non-empty value) in `given` that are absent from `kept`.
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
                    None if is_empty(gv) => {}
                    None if !k.is_empty() || !is_empty(gv) => out.push(p),
                    None => {}
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

/// Values that serialise away when left at their defaults.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        - containerPort: 8080
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
    targetPort: 8080
"#;

    #[test]
    fn reads_a_deployment_and_a_service() {
        let m = parse(DEPLOY_AND_SERVICE, "web.yaml").unwrap();
        assert_eq!(m.len(), 2);
        match &m[0] {
            Manifest::Deployment(d) => {
                assert_eq!(d.spec.replicas, 3);
                assert_eq!(
                    d.spec.template.spec.containers[0].ports[0].container_port,
                    8080
                );
            }
            other => panic!("{other:?}"),
        }
        match &m[1] {
            Manifest::Service(s) => assert_eq!(s.spec.ports[0].target(), 8080),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_fields_are_named() {
        let text = DEPLOY_AND_SERVICE.replace(
            "      containers:",
            "      serviceAccountName: builder\n      containers:",
        );
        let e = parse(&text, "web.yaml").unwrap_err().to_string();
        assert!(e.contains("spec.template.spec.serviceAccountName"), "{e}");
        assert!(e.contains("Deployment web"), "{e}");
    }

    #[test]
    fn unsupported_kinds_and_json_lists() {
        let e = parse(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n",
            "j.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("batch/v1 Job is not supported"), "{e}");
        let json = r#"{"kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}]}"#;
        let m = parse(json, "l.json").unwrap();
        assert_eq!(m[0].name(), "p");
        assert!(parse("", "empty.yaml").is_err());
    }
}

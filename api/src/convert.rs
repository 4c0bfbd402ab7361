//! Conversion between a kind's stored version and the older versions also served
//! ([`crate::kind::KindInfo::other_versions`]): autoscaling/v1 HorizontalPodAutoscalers,
//! stored as autoscaling/v2.
//!
//! As in Kubernetes (`pkg/apis/autoscaling/v1/conversion.go`), v1's one
//! `targetCPUUtilizationPercentage` is v2's Resource `cpu` metric with a `Utilization` target,
//! and `currentCPUUtilizationPercentage` the matching current metric. What v1 cannot say
//! travels in annotations, so that a read-modify-write through v1 loses nothing:
//!
//! * `autoscaling.alpha.kubernetes.io/metrics`: the metrics other than the CPU utilization
//!   one, in v1's (v2beta1-shaped) `MetricSpec` form;
//! * `autoscaling.alpha.kubernetes.io/current-metrics`: every current metric, as v1
//!   `MetricStatus`;
//! * `autoscaling.alpha.kubernetes.io/behavior`: `spec.behavior`, with Go's field names
//!   (`ScaleUp`, `StabilizationWindowSeconds`), as Kubernetes writes it;
//! * `autoscaling.alpha.kubernetes.io/conditions`: `status.conditions`.
//!
//! Writes through v1 read them back and drop them; a v1 object without any metric gets the
//! default 80% CPU target.

use crate::Kind;
use serde_json::{Map, Value, json};

/// `autoscaling.MetricSpecsAnnotation`.
pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// `autoscaling.MetricStatusesAnnotation`.
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// `autoscaling.BehaviorSpecsAnnotation`.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// `autoscaling.HorizontalPodAutoscalerConditionsAnnotation`.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";

const ROUND_TRIP: [&str; 4] = [
    METRICS_ANNOTATION,
    CURRENT_METRICS_ANNOTATION,
    BEHAVIOR_ANNOTATION,
    CONDITIONS_ANNOTATION,
];

/// Why an object in a served version could not be converted to the stored one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{kind} is not served in version {version}")]
    UnknownVersion { kind: &'static str, version: String },
    #[error("annotation {annotation} does not decode: {reason}")]
    Annotation {
        annotation: &'static str,
        reason: String,
    },
}

/// Whether `version` is the stored version of `kind` (nothing to convert).
pub fn is_stored(kind: Kind, version: &str) -> bool {
    kind.version() == version
}

/// The stored object `obj` (any JSON of the kind in its stored version) as `version` shows
/// it. Lists and other shapes pass as they are; so do objects of other kinds.
pub fn to_version(kind: Kind, version: &str, obj: &Value) -> Value {
    if is_stored(kind, version) {
        return obj.clone();
    }
    match (kind, version) {
        (Kind::HorizontalPodAutoscaler, "v1") => hpa_v2_to_v1(obj),
        _ => obj.clone(),
    }
}

/// An object sent in `version` (a whole object, or an apply configuration or patch of it) as
/// the stored version reads it.
pub fn from_version(kind: Kind, version: &str, obj: &Value) -> Result<Value, ConvertError> {
    if is_stored(kind, version) {
        return Ok(obj.clone());
    }
    match (kind, version) {
        (Kind::HorizontalPodAutoscaler, "v1") => hpa_v1_to_v2(obj),
        _ => Err(ConvertError::UnknownVersion {
            kind: kind.name(),
            version: version.into(),
        }),
    }
}

fn is_cpu(name: &Value) -> bool {
    name == "cpu"
}

/// Whether a v2 metric is the one v1's `targetCPUUtilizationPercentage` says.
fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && is_cpu(&m["resource"]["name"])
        && m["resource"]["target"]["type"] == "Utilization"
}

fn set(m: &mut Map<String, Value>, key: &str, v: &Value) {
    if !v.is_null() {
        m.insert(key.into(), v.clone());
    }
}

/// A v2 `MetricSpec` in v1's annotation form.
fn metric_spec_to_v1(m: &Value) -> Value {
    let ty = m["type"].as_str().unwrap_or_default();
    let mut out = Map::new();
    out.insert("type".into(), ty.into());
    let mut src = Map::new();
    let target = |src: &mut Map<String, Value>, t: &Value, value_key: &str, avg_key: &str| {
        set(src, value_key, &t["value"]);
        set(src, avg_key, &t["averageValue"]);
    };
    match ty {
        "Object" => {
            let o = &m["object"];
            set(&mut src, "target", &o["describedObject"]);
            set(&mut src, "metricName", &o["metric"]["name"]);
            set(&mut src, "selector", &o["metric"]["selector"]);
            target(&mut src, &o["target"], "targetValue", "averageValue");
            out.insert("object".into(), src.into());
        }
        "Pods" => {
            let p = &m["pods"];
            set(&mut src, "metricName", &p["metric"]["name"]);
            set(&mut src, "selector", &p["metric"]["selector"]);
            set(&mut src, "targetAverageValue", &p["target"]["averageValue"]);
            out.insert("pods".into(), src.into());
        }
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let r = &m[key];
            set(&mut src, "name", &r["name"]);
            set(&mut src, "container", &r["container"]);
            set(
                &mut src,
                "targetAverageUtilization",
                &r["target"]["averageUtilization"],
            );
            set(&mut src, "targetAverageValue", &r["target"]["averageValue"]);
            out.insert(key.into(), src.into());
        }
        "External" => {
            let e = &m["external"];
            set(&mut src, "metricName", &e["metric"]["name"]);
            set(&mut src, "metricSelector", &e["metric"]["selector"]);
            target(&mut src, &e["target"], "targetValue", "targetAverageValue");
            out.insert("external".into(), src.into());
        }
        _ => {}
    }
    out.into()
}

/// A v2 `MetricTarget` from v1's value / average value / utilization (the first set wins, in
/// Kubernetes' order).
fn target_v2(value: &Value, average: &Value, utilization: &Value) -> Value {
    let mut t = Map::new();
    if !utilization.is_null() {
        t.insert("type".into(), "Utilization".into());
        t.insert("averageUtilization".into(), utilization.clone());
    } else if !average.is_null() {
        t.insert("type".into(), "AverageValue".into());
        t.insert("averageValue".into(), average.clone());
    } else {
        t.insert("type".into(), "Value".into());
        set(&mut t, "value", value);
    }
    t.into()
}

fn metric_id(name: &Value, selector: &Value) -> Value {
    let mut id = Map::new();
    set(&mut id, "name", name);
    set(&mut id, "selector", selector);
    id.into()
}

/// A v1 annotation `MetricSpec` as v2 has it.
fn metric_spec_to_v2(m: &Value) -> Value {
    metric_to_v2(m, "target", target_v2)
}

/// A v1 annotation `MetricSpec` or `MetricStatus` as v2 has it: the two differ only in the
/// prefix of their value fields (`targetValue` against `currentValue`, …), which is also the
/// name of the v2 field they become (`target`, `current`), made by `value_v2` from the value,
/// average value and utilization.
fn metric_to_v2(m: &Value, prefix: &str, value_v2: fn(&Value, &Value, &Value) -> Value) -> Value {
    let ty = m["type"].as_str().unwrap_or_default();
    let mut out = Map::new();
    out.insert("type".into(), ty.into());
    let null = Value::Null;
    let field = |src: &Value, name: &str| src[format!("{prefix}{name}").as_str()].clone();
    match ty {
        "Object" => {
            let o = &m["object"];
            let mut src = Map::new();
            set(&mut src, "describedObject", &o["target"]);
            src.insert("metric".into(), metric_id(&o["metricName"], &o["selector"]));
            src.insert(
                prefix.into(),
                value_v2(&field(o, "Value"), &o["averageValue"], &null),
            );
            out.insert("object".into(), src.into());
        }
        "Pods" => {
            let p = &m["pods"];
            let mut src = Map::new();
            src.insert("metric".into(), metric_id(&p["metricName"], &p["selector"]));
            src.insert(
                prefix.into(),
                value_v2(&null, &field(p, "AverageValue"), &null),
            );
            out.insert("pods".into(), src.into());
        }
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let r = &m[key];
            let mut src = Map::new();
            set(&mut src, "name", &r["name"]);
            set(&mut src, "container", &r["container"]);
            src.insert(
                prefix.into(),
                value_v2(
                    &null,
                    &field(r, "AverageValue"),
                    &field(r, "AverageUtilization"),
                ),
            );
            out.insert(key.into(), src.into());
        }
        "External" => {
            let e = &m["external"];
            let mut src = Map::new();
            src.insert(
                "metric".into(),
                metric_id(&e["metricName"], &e["metricSelector"]),
            );
            src.insert(
                prefix.into(),
                value_v2(&field(e, "Value"), &field(e, "AverageValue"), &null),
            );
            out.insert("external".into(), src.into());
        }
        _ => {}
    }
    out.into()
}

/// A v2 `MetricStatus` in v1's annotation form.
fn metric_status_to_v1(m: &Value) -> Value {
    let ty = m["type"].as_str().unwrap_or_default();
    let mut out = Map::new();
    out.insert("type".into(), ty.into());
    let mut src = Map::new();
    match ty {
        "Object" => {
            let o = &m["object"];
            set(&mut src, "target", &o["describedObject"]);
            set(&mut src, "metricName", &o["metric"]["name"]);
            set(&mut src, "selector", &o["metric"]["selector"]);
            set(&mut src, "currentValue", &o["current"]["value"]);
            set(&mut src, "averageValue", &o["current"]["averageValue"]);
            out.insert("object".into(), src.into());
        }
        "Pods" => {
            let p = &m["pods"];
            set(&mut src, "metricName", &p["metric"]["name"]);
            set(&mut src, "selector", &p["metric"]["selector"]);
            set(
                &mut src,
                "currentAverageValue",
                &p["current"]["averageValue"],
            );
            out.insert("pods".into(), src.into());
        }
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let r = &m[key];
            set(&mut src, "name", &r["name"]);
            set(&mut src, "container", &r["container"]);
            set(
                &mut src,
                "currentAverageUtilization",
                &r["current"]["averageUtilization"],
            );
            set(
                &mut src,
                "currentAverageValue",
                &r["current"]["averageValue"],
            );
            out.insert(key.into(), src.into());
        }
        "External" => {
            let e = &m["external"];
            set(&mut src, "metricName", &e["metric"]["name"]);
            set(&mut src, "metricSelector", &e["metric"]["selector"]);
            set(&mut src, "currentValue", &e["current"]["value"]);
            set(
                &mut src,
                "currentAverageValue",
                &e["current"]["averageValue"],
            );
            out.insert("external".into(), src.into());
        }
        _ => {}
    }
    out.into()
}

fn current_v2(value: &Value, average: &Value, utilization: &Value) -> Value {
    let mut c = Map::new();
    set(&mut c, "value", value);
    set(&mut c, "averageValue", average);
    set(&mut c, "averageUtilization", utilization);
    c.into()
}

/// A v1 annotation `MetricStatus` as v2 has it.
fn metric_status_to_v2(m: &Value) -> Value {
    metric_to_v2(m, "current", current_v2)
}

/// JSON keys with the first letter changed by `f` (Go's field names `ScaleUp` from and to
/// JSON's `scaleUp`), recursively.
fn rekey(v: &Value, f: fn(char) -> String) -> Value {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let mut cs = k.chars();
                let key = cs.next().map(|c| f(c) + cs.as_str()).unwrap_or_default();
                (key, rekey(v, f))
            })
            .collect::<Map<_, _>>()
            .into(),
        Value::Array(l) => l.iter().map(|v| rekey(v, f)).collect(),
        other => other.clone(),
    }
}

fn upper(c: char) -> String {
    c.to_uppercase().collect()
}

fn lower(c: char) -> String {
    c.to_lowercase().collect()
}

fn encode_annotation(v: &Value) -> Value {
    Value::String(serde_json::to_string(v).unwrap_or_default())
}

/// An autoscaling/v2 HorizontalPodAutoscaler as autoscaling/v1 shows it.
pub fn hpa_v2_to_v1(v2: &Value) -> Value {
    let Some(obj) = v2
        .as_object()
        .filter(|o| o.get("kind").is_none_or(|k| k == "HorizontalPodAutoscaler"))
    else {
        // A Status, or another kind: nothing to convert.
        return v2.clone();
    };
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "spec" | "status" => {}
            "apiVersion" => {
                out.insert(k.clone(), "autoscaling/v1".into());
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let spec = &v2["spec"];
    let status = &v2["status"];
    let mut annotations: Vec<(&str, Value)> = Vec::new();
    if spec.is_object() {
        let mut s = Map::new();
        set(&mut s, "scaleTargetRef", &spec["scaleTargetRef"]);
        set(&mut s, "minReplicas", &spec["minReplicas"]);
        set(&mut s, "maxReplicas", &spec["maxReplicas"]);
        let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
        if let Some(cpu) = metrics.iter().find(|m| is_cpu_utilization(m)) {
            set(
                &mut s,
                "targetCPUUtilizationPercentage",
                &cpu["resource"]["target"]["averageUtilization"],
            );
        }
        let others: Vec<Value> = metrics
            .iter()
            .filter(|m| !is_cpu_utilization(m))
            .map(metric_spec_to_v1)
            .collect();
        if !others.is_empty() {
            annotations.push((METRICS_ANNOTATION, encode_annotation(&others.into())));
        }
        if !spec["behavior"].is_null() {
            annotations.push((
                BEHAVIOR_ANNOTATION,
                encode_annotation(&rekey(&spec["behavior"], upper)),
            ));
        }
        out.insert("spec".into(), s.into());
    }
    if status.is_object() {
        let mut s = Map::new();
        for k in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            set(&mut s, k, &status[k]);
        }
        let current = status["currentMetrics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for m in &current {
            if m["type"] == "Resource" && is_cpu(&m["resource"]["name"]) {
                set(
                    &mut s,
                    "currentCPUUtilizationPercentage",
                    &m["resource"]["current"]["averageUtilization"],
                );
            }
        }
        if !current.is_empty() {
            let v1: Vec<Value> = current.iter().map(metric_status_to_v1).collect();
            annotations.push((CURRENT_METRICS_ANNOTATION, encode_annotation(&v1.into())));
        }
        if let Some(conds) = status["conditions"].as_array().filter(|c| !c.is_empty()) {
            annotations.push((
                CONDITIONS_ANNOTATION,
                encode_annotation(&conds.clone().into()),
            ));
        }
        // Required (not omitted when zero) in v1.
        for k in ["currentReplicas", "desiredReplicas"] {
            if !s.contains_key(k) {
                s.insert(k.into(), 0.into());
            }
        }
        out.insert("status".into(), s.into());
    }
    // Annotations the stored object carries under these names are the converter's, not the
    // user's: drop them, then write this conversion's.
    let meta = out
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        let mut a = meta
            .get("annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for k in ROUND_TRIP {
            a.remove(k);
        }
        for (k, v) in annotations {
            a.insert(k.into(), v);
        }
        if a.is_empty() {
            meta.remove("annotations");
        } else {
            meta.insert("annotations".into(), a.into());
        }
    }
    out.into()
}

fn decode_annotation(a: &Map<String, Value>, name: &'static str) -> Result<Value, ConvertError> {
    let Some(text) = a.get(name).and_then(Value::as_str) else {
        return Ok(Value::Null);
    };
    serde_json::from_str(text).map_err(|e| ConvertError::Annotation {
        annotation: name,
        reason: e.to_string(),
    })
}

/// An autoscaling/v1 HorizontalPodAutoscaler (or part of one: an apply configuration, a
/// merge patch) as autoscaling/v2 has it.
pub fn hpa_v1_to_v2(v1: &Value) -> Result<Value, ConvertError> {
    let Some(obj) = v1.as_object() else {
        return Ok(v1.clone());
    };
    let annotations = v1
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let other_metrics = decode_annotation(&annotations, METRICS_ANNOTATION)?;
    let current_metrics = decode_annotation(&annotations, CURRENT_METRICS_ANNOTATION)?;
    let behavior = decode_annotation(&annotations, BEHAVIOR_ANNOTATION)?;
    let conditions = decode_annotation(&annotations, CONDITIONS_ANNOTATION)?;

    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "spec" | "status" => {}
            "apiVersion" => {
                out.insert(k.clone(), "autoscaling/v2".into());
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(spec) = v1.get("spec").filter(|s| s.is_object()) {
        let mut s = Map::new();
        set(&mut s, "scaleTargetRef", &spec["scaleTargetRef"]);
        set(&mut s, "minReplicas", &spec["minReplicas"]);
        set(&mut s, "maxReplicas", &spec["maxReplicas"]);
        let mut metrics = Vec::new();
        let cpu = &spec["targetCPUUtilizationPercentage"];
        if !cpu.is_null() {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": cpu}}}));
        }
        if let Some(others) = other_metrics.as_array() {
            metrics.extend(others.iter().map(metric_spec_to_v2));
        }
        // v1's implicit default, made explicit where every metric is known.
        if metrics.is_empty() {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization",
                    "averageUtilization": crate::defaults::HPA_CPU_UTILIZATION}}}));
        }
        s.insert("metrics".into(), metrics.into());
        if !behavior.is_null() {
            s.insert("behavior".into(), rekey(&behavior, lower));
        }
        out.insert("spec".into(), s.into());
    }
    if let Some(status) = v1.get("status").filter(|s| s.is_object()) {
        let mut s = Map::new();
        for k in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            set(&mut s, k, &status[k]);
        }
        if let Some(current) = current_metrics.as_array() {
            // The annotation says more than the one percentage.
            s.insert(
                "currentMetrics".into(),
                current.iter().map(metric_status_to_v2).collect(),
            );
        } else if !status["currentCPUUtilizationPercentage"].is_null() {
            s.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": status["currentCPUUtilizationPercentage"]}}}]),
            );
        }
        if conditions.is_array() {
            s.insert("conditions".into(), conditions);
        }
        out.insert("status".into(), s.into());
    }
    if let Some(Value::Object(meta)) = out.get_mut("metadata")
        && let Some(Value::Object(a)) = meta.get_mut("annotations")
    {
        for k in ROUND_TRIP {
            a.remove(k);
        }
        if a.is_empty() {
            meta.remove("annotations");
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_full() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"},
                        "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "External", "external": {"metric": {"name": "queue",
                        "selector": {"matchLabels": {"q": "jobs"}}},
                        "target": {"type": "Value", "value": "30"}}},
                    {"type": "Object", "object": {
                        "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "s"},
                        "metric": {"name": "hits"},
                        "target": {"type": "Value", "value": "5"}}},
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Min",
                    "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}},
            },
            "status": {
                "observedGeneration": 2, "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": 70, "averageValue": "140m"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"},
                        "current": {"averageValue": "12"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "ReadyForNewScale"}],
            },
        })
    }

    #[test]
    fn cpu_target_and_current_are_v1_fields() {
        let v1 = hpa_v2_to_v1(&v2_full());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["spec"]["minReplicas"], 1);
        assert_eq!(v1["spec"]["maxReplicas"], 5);
        assert_eq!(v1["spec"]["scaleTargetRef"]["name"], "web");
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 70);
        assert_eq!(v1["status"]["desiredReplicas"], 3);
        assert_eq!(v1["metadata"]["annotations"]["team"], "a");
    }

    #[test]
    fn other_metrics_travel_in_annotations_in_v1_form() {
        let v1 = hpa_v2_to_v1(&v2_full());
        let a = &v1["metadata"]["annotations"];
        let metrics: Value = serde_json::from_str(a[METRICS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(
            metrics,
            json!([
                {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}},
                {"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "10"}},
                {"type": "External", "external": {"metricName": "queue",
                    "metricSelector": {"matchLabels": {"q": "jobs"}}, "targetValue": "30"}},
                {"type": "Object", "object": {
                    "target": {"apiVersion": "v1", "kind": "Service", "name": "s"},
                    "metricName": "hits", "targetValue": "5"}},
            ])
        );
        let behavior: Value =
            serde_json::from_str(a[BEHAVIOR_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(
            behavior["ScaleDown"]["Policies"][0],
            json!({"Type": "Percent", "Value": 10, "PeriodSeconds": 60})
        );
        let current: Value =
            serde_json::from_str(a[CURRENT_METRICS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(
            current[0],
            json!({"type": "Resource", "resource": {"name": "cpu",
                "currentAverageUtilization": 70, "currentAverageValue": "140m"}})
        );
        assert!(
            a[CONDITIONS_ANNOTATION]
                .as_str()
                .unwrap()
                .contains("AbleToScale")
        );
    }

    #[test]
    fn v1_round_trip_loses_nothing() {
        let v2 = v2_full();
        let back = hpa_v1_to_v2(&hpa_v2_to_v1(&v2)).unwrap();
        assert_eq!(back, v2);
    }

    #[test]
    fn v1_object_converts_to_a_cpu_metric() {
        let v1 = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
        });
        let v2 = hpa_v1_to_v2(&v1).unwrap();
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        // And back: no annotations for a plain CPU autoscaler.
        let again = hpa_v2_to_v1(&v2);
        assert_eq!(again, v1);
    }

    #[test]
    fn v1_without_target_gets_the_default_cpu_target() {
        let v2 = hpa_v1_to_v2(&json!({"spec": {"maxReplicas": 3}})).unwrap();
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
    }

    #[test]
    fn bad_annotation_is_an_error_naming_it() {
        let v1 = json!({"metadata": {"annotations": {METRICS_ANNOTATION: "{"}},
            "spec": {"maxReplicas": 1}});
        let e = hpa_v1_to_v2(&v1).unwrap_err();
        assert!(e.to_string().contains(METRICS_ANNOTATION), "{e}");
    }

    #[test]
    fn other_kinds_pass_through() {
        let p = json!({"apiVersion": "v1", "kind": "Pod"});
        assert_eq!(to_version(Kind::Pod, "v1", &p), p);
        assert_eq!(from_version(Kind::Pod, "v1", &p).unwrap(), p);
        assert!(from_version(Kind::Pod, "v2", &p).is_err());
    }
}

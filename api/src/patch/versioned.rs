//! managedFields of a kind served in more than one version (autoscaling/v1 and v2
//! HorizontalPodAutoscalers), as Kubernetes records them: every entry's field set is in the
//! shape of its own `apiVersion`. A write through autoscaling/v1 (`kubectl autoscale` posts
//! v1) is recorded under `autoscaling/v1` with v1's paths (`f:targetCPUUtilizationPercentage`),
//! and each entry loses what the write changed as seen in that entry's version (the old and
//! new objects are converted to it and compared there, as structured-merge-diff's updater
//! does). Entries are stored and returned as they are, whatever version reads them.
//!
//! Writes in the stored version to objects whose entries are all in the stored version (all
//! of them but for HorizontalPodAutoscalers touched through v1) take the usual path,
//! [`super::record_update_owned`].

use super::apply::{
    Entry, decode_entries, entry_order, managed_fields, set_managed_fields, unowned,
};
use super::typed::{self, Comparison};
use crate::Kind;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// [`super::record_update_owned`] for a write made through `version` (empty: the stored
/// one): the writer's entry is in that version, and every entry's field set stays in its own.
pub fn record_update_in(
    kind: Kind,
    version: &str,
    old: &Value,
    new: Value,
    manager: &str,
    subresource: &str,
    now: &str,
) -> Value {
    let stored_api = kind.api_version();
    let writer_api = if version.is_empty() {
        stored_api.clone()
    } else {
        kind.api_version_at(version)
    };
    let other_versions_live = managed_fields(old)
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|e| e["apiVersion"] != stored_api.as_str()));
    if writer_api == stored_api && !other_versions_live {
        return super::record_update_owned(kind, old, new, manager, subresource, now);
    }
    record_across_versions(kind, &writer_api, old, new, manager, subresource, now)
}

/// The version part of `api_version` (`autoscaling/v1` → `v1`) when `kind` is served in it.
fn served_version(kind: Kind, api_version: &str) -> Option<&'static str> {
    let v = api_version.rsplit('/').next().unwrap_or(api_version);
    kind.served_versions()
        .find(|s| *s == v && kind.api_version_at(s) == api_version)
}

/// `obj` as `version` shows it, for comparing there. A write to the main resource never
/// changes the status (Kubernetes resets it there), so it is left out of that comparison:
/// otherwise the defaults a conversion fills in (v1's required `currentReplicas`) would be
/// counted as the writer's.
fn in_version(kind: Kind, version: &str, obj: &Value, subresource: &str) -> Value {
    let mut v = crate::convert::to_version(kind, version, obj);
    if subresource.is_empty()
        && let Value::Object(m) = &mut v
    {
        m.remove("status");
    }
    v
}

fn record_across_versions(
    kind: Kind,
    writer_api: &str,
    old: &Value,
    mut new: Value,
    manager: &str,
    subresource: &str,
    now: &str,
) -> Value {
    let sent = match new.get_mut("metadata") {
        Some(Value::Object(meta)) => meta.remove("managedFields"),
        _ => None,
    };
    let live = managed_fields(old);
    let mut entries = match sent {
        // Sent managedFields replace the live ones on a main-resource write (`[{}]` or `[]`
        // clears them); what a client read and sends back unchanged is the live entries.
        Some(Value::Array(l))
            if subresource.is_empty() && (l.is_empty() || (l.len() == 1 && l[0] == json!({}))) =>
        {
            Vec::new()
        }
        Some(s) if subresource.is_empty() && !s.is_null() && live != Some(&s) => {
            match decode_entries(Some(&s)) {
                Ok(e) if !e.is_empty() => e,
                _ => decode_entries(live).unwrap_or_default(),
            }
        }
        _ => decode_entries(live).unwrap_or_default(),
    };
    let empty = Value::Object(Map::new());
    let old = if old.is_object() { old } else { &empty };
    let stored_version = kind.version();
    // One comparison per version an entry (or the writer) is in.
    let mut comparisons: HashMap<&'static str, Result<Comparison, String>> = HashMap::new();
    let mut compare = |version: &'static str| -> Result<Comparison, String> {
        let c = comparisons.entry(version).or_insert_with(|| {
            if version == stored_version {
                typed::compare_without_managed_fields(kind, old, &new)
            } else {
                typed::compare_without_managed_fields(
                    kind,
                    &in_version(kind, version, old, subresource),
                    &in_version(kind, version, &new, subresource),
                )
            }
        });
        match c {
            Ok(c) => Ok(Comparison {
                added: c.added.clone(),
                removed: c.removed.clone(),
                modified: c.modified.clone(),
            }),
            Err(e) => Err(e.clone()),
        }
    };
    let unowned = unowned();
    let writer_version = served_version(kind, writer_api).unwrap_or(stored_version);
    let Ok(mine) = compare(writer_version) else {
        // The objects cannot be compared (an item without its key): keep what was recorded.
        return keep(new, decode_entries(live).unwrap_or_default());
    };
    let taken = mine.modified.union(&mine.added).difference(unowned);
    let mut writer = None;
    for (i, e) in entries.iter_mut().enumerate() {
        let version = served_version(kind, &e.api_version).unwrap_or(stored_version);
        let Ok(cmp) = compare(version) else {
            return keep(new, decode_entries(live).unwrap_or_default());
        };
        // Every manager, the writer too, loses what the write changed or removed.
        let changed = cmp.modified.union(&cmp.added);
        e.set = e.set.difference(&changed).difference(&cmp.removed);
        if e.is(manager, "Update", writer_api, subresource) {
            writer = Some(i);
        }
    }
    if !taken.is_empty() {
        match writer {
            Some(i) => {
                entries[i].set = entries[i].set.union(&taken);
                entries[i].time = Some(now.to_string());
            }
            None => entries.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: writer_api.into(),
                subresource: subresource.into(),
                time: Some(now.to_string()),
                set: taken,
            }),
        }
    }
    for e in &mut entries {
        e.set = e.set.difference(unowned);
    }
    keep(new, entries)
}

/// `obj` with these entries as its managedFields, in Kubernetes' order.
fn keep(mut obj: Value, mut entries: Vec<Entry>) -> Value {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(entry_order);
    set_managed_fields(&mut obj, entries.iter().map(Entry::encode).collect());
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa_v2(target: i64, max: i64) -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": max,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": target}}}]
            },
            "status": {}
        })
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> &'a Value {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == manager)
            .unwrap_or_else(|| panic!("no entry of {manager} in {obj:#}"))
    }

    #[test]
    fn a_v1_create_is_recorded_in_v1s_shape() {
        let got = record_update_in(
            Kind::HorizontalPodAutoscaler,
            "v1",
            &Value::Null,
            hpa_v2(50, 3),
            "kubectl-autoscale",
            "",
            "t1",
        );
        let e = entry(&got, "kubectl-autoscale");
        assert_eq!(e["apiVersion"], "autoscaling/v1");
        let mut fields = e["fieldsV1"].to_string();
        // The paths matter here, not whether maps are owned whole too.
        fields = fields.replace("\".\":{},", "");
        assert_eq!(
            serde_json::from_str::<Value>(&fields).unwrap(),
            json!({"f:spec": {
                "f:maxReplicas": {}, "f:minReplicas": {},
                "f:scaleTargetRef": {"f:apiVersion": {}, "f:kind": {}, "f:name": {}},
                "f:targetCPUUtilizationPercentage": {}}})
        );
    }

    #[test]
    fn each_entry_loses_what_changed_in_its_own_version() {
        let hpa = Kind::HorizontalPodAutoscaler;
        let created = record_update_in(
            hpa,
            "v1",
            &Value::Null,
            hpa_v2(50, 3),
            "old-kubectl",
            "",
            "t1",
        );
        // A v2 writer changes the CPU target (v2's `spec.metrics`): the v1 entry loses its
        // `targetCPUUtilizationPercentage`, which is that metric in v1.
        let mut next = hpa_v2(70, 3);
        next["metadata"] = created["metadata"].clone();
        let updated = record_update_in(hpa, "", &created, next, "tuner", "", "t2");
        let tuner = entry(&updated, "tuner");
        assert_eq!(tuner["apiVersion"], "autoscaling/v2");
        assert!(
            tuner["fieldsV1"]["f:spec"].get("f:metrics").is_some(),
            "{tuner:#}"
        );
        let v1 = entry(&updated, "old-kubectl");
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert!(
            v1["fieldsV1"]["f:spec"]
                .get("f:targetCPUUtilizationPercentage")
                .is_none(),
            "{v1:#}"
        );
        assert!(v1["fieldsV1"]["f:spec"].get("f:maxReplicas").is_some());
        // The same manager writing through v1 again updates its v1 entry in place.
        let mut again = hpa_v2(70, 9);
        again["metadata"] = updated["metadata"].clone();
        let last = record_update_in(hpa, "v1", &updated, again, "old-kubectl", "", "t3");
        let entries = last["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{last:#}");
        let v1 = entry(&last, "old-kubectl");
        assert_eq!(v1["time"], "t3");
        assert!(v1["fieldsV1"]["f:spec"].get("f:maxReplicas").is_some());
    }

    #[test]
    fn stored_version_writes_take_the_usual_path() {
        let hpa = Kind::HorizontalPodAutoscaler;
        let got = record_update_in(hpa, "", &Value::Null, hpa_v2(50, 3), "m", "", "t");
        assert_eq!(
            got,
            super::super::record_update_owned(hpa, &Value::Null, hpa_v2(50, 3), "m", "", "t")
        );
        assert_eq!(entry(&got, "m")["apiVersion"], "autoscaling/v2");
        assert_eq!(served_version(hpa, "autoscaling/v1"), Some("v1"));
        assert_eq!(served_version(hpa, "apps/v1"), None);
    }
}

//! The patch types of Kubernetes' PATCH verb, chosen by Content-Type: JSON merge patch
//! (RFC 7386), JSON patch (RFC 6902), strategic merge patch (Kubernetes' list merge keys and
//! `$patch` directives), and server-side apply (field managers, managedFields, conflicts).

pub mod apply;
mod fieldset;
mod json;
pub mod merge_keys;
mod record;
pub(crate) mod strategic;
mod typed;
mod versioned;

pub use apply::{
    ApplyError, Conflict, manager_from_user_agent, record_update, record_update_at,
    record_update_owned, server_side_apply,
};
pub use versioned::record_update_in;

use crate::Kind;
use serde_json::Value;

/// The patch types, by their Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (also `+json`, `+cbor` is not supported)
    Apply,
}

impl PatchType {
    /// The patch type of a Content-Type header (parameters such as `; charset=utf-8` ignored).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Why a patch could not be applied (answered with 422 or 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the patch is malformed: {0}")]
    Malformed(String),
    #[error("the patch could not be applied: {0}")]
    Failed(String),
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(serde_json::Map::new());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    json::apply(target, patch)
}

/// Kubernetes' strategic merge patch of an object of `kind`.
pub fn strategic_merge(kind: Kind, target: &Value, patch: &Value) -> Result<Value, PatchError> {
    strategic::apply(kind, target, patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = serde_json::json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        merge_patch(
            &mut t,
            &serde_json::json!({"a": {"b": null, "e": 3}, "d": [3]}),
        );
        assert_eq!(t, serde_json::json!({"a": {"c": 2, "e": 3}, "d": [3]}));
    }
}

#[cfg(test)]
mod tests_apply;
#[cfg(test)]
mod tests_json;
#[cfg(test)]
mod tests_record;
#[cfg(test)]
mod tests_strategic;

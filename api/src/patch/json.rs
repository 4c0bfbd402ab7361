//! RFC 6902 JSON patch, applied by the `json-patch` crate: all operations or none.

use super::PatchError;
use serde_json::Value;

/// The most operations one patch may carry (the API server's limit).
pub const MAX_OPERATIONS: usize = 10_000;

pub fn apply(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| PatchError::Malformed("a JSON patch must be a list of operations".into()))?;
    if ops.len() > MAX_OPERATIONS {
        return Err(PatchError::Malformed(format!(
            "the patch has {} operations, more than the {MAX_OPERATIONS} allowed",
            ops.len()
        )));
    }
    let patch: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("invalid JSON patch operation: {e}")))?;
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &patch).map_err(|e| PatchError::Failed(e.to_string()))?;
    Ok(doc)
}

//! Kubernetes' strategic merge patch, as the API server applies it
//! (k8s.io/apimachinery/pkg/util/strategicpatch, with `MergeParallelList` and
//! `IgnoreUnmatchedNulls`): maps merge, `null` deletes a key, lists merge by their
//! `patchMergeKey` where Kubernetes' struct tags say so and are replaced otherwise, and the
//! directives `$patch` (replace, delete), `$retainKeys`, `$setElementOrder/<list>` and
//! `$deleteFromPrimitiveList/<list>` are honoured. The order of merged lists follows the
//! upstream rules (`$setElementOrder` first, then the patch's order, then the live order).

use super::PatchError;
use super::merge_keys::{self, Strategic};
use crate::Kind;
use serde_json::{Map, Value};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

fn failed(msg: impl Into<String>) -> PatchError {
    PatchError::Failed(msg.into())
}

/// The strategy of the list at a path (field names joined by `.`).
pub(crate) type Schema<'a> = &'a dyn Fn(&str) -> Strategic;

/// Applies `patch` to `target` (an object of `kind`).
pub fn apply(kind: Kind, target: &Value, patch: &Value) -> Result<Value, PatchError> {
    apply_with(
        &|path: &str| merge_keys::strategic(kind, path),
        target,
        patch,
    )
}

/// Applies `patch` to `target` with the list strategies of `schema`.
pub(crate) fn apply_with(
    schema: Schema,
    target: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let original = match target {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    merge_map(schema, "", original, patch.clone()).map(Value::Object)
}

fn merge_map(
    schema: Schema,
    path: &str,
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => match remove_directives(Value::Object(patch)) {
                Some(Value::Object(m)) => Ok(m),
                _ => Ok(Map::new()),
            },
            Some("delete") => Ok(Map::new()),
            _ => Err(failed(format!(
                "unknown patch type {directive} in a map at {}",
                display(path)
            ))),
        };
    }
    apply_retain_keys(path, &mut original, &mut patch)?;
    merge_set_element_order(schema, path, &mut original, &mut patch)?;

    for (k, patch_v) in patch {
        let (key, is_delete_list) = match k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some(rest) => match rest.strip_prefix('/') {
                Some(key) if !key.is_empty() => (key.to_string(), true),
                _ => return Err(failed(format!("malformed directive {k}"))),
            },
            None => (k, false),
        };
        if patch_v.is_null() {
            original.remove(&key);
            continue;
        }
        let sub = merge_keys::child(path, &key);
        let same_kind = original.get(&key).is_some_and(|o| {
            (o.is_object() && patch_v.is_object()) || (o.is_array() && patch_v.is_array())
        });
        if !same_kind {
            if !is_delete_list {
                match clean(patch_v) {
                    Some(v) => original.insert(key, v),
                    None => original.remove(&key),
                };
            }
            continue;
        }
        let merged = match (original.remove(&key), patch_v) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                Value::Object(merge_map(schema, &sub, o, p)?)
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                let mut view = Vec::new();
                Value::Array(merge_list_field(
                    schema,
                    &sub,
                    o,
                    p,
                    is_delete_list,
                    &mut view,
                )?)
            }
            _ => unreachable!("checked above"),
        };
        original.insert(key, merged);
    }
    Ok(original)
}

/// Merges a list field by its strategy (delete lists always merge).
fn merge_list_field(
    schema: Schema,
    path: &str,
    original: Vec<Value>,
    patch: Vec<Value>,
    is_delete_list: bool,
    view: &mut [Value],
) -> Result<Vec<Value>, PatchError> {
    match schema(path) {
        Strategic::Replace if !is_delete_list => Ok(match clean(Value::Array(patch)) {
            Some(Value::Array(v)) => v,
            _ => Vec::new(),
        }),
        Strategic::Replace | Strategic::MergeScalars => {
            merge_list(schema, path, original, patch, None, is_delete_list, view)
        }
        Strategic::MergeByKey(k) => {
            merge_list(schema, path, original, patch, Some(k), is_delete_list, view)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElemKind {
    Map,
    Scalar,
}

/// The kind of the elements of lists, which must all be of one JSON type and not lists.
fn element_kind(lists: &[&[Value]], path: &str) -> Result<Option<ElemKind>, PatchError> {
    let mut seen: Option<u8> = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        let t = match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => {
                return Err(failed(format!(
                    "lists of lists are not supported at {}",
                    display(path)
                )));
            }
            Value::Object(_) => 5,
        };
        match seen {
            None => seen = Some(t),
            Some(s) if s != t => {
                return Err(failed(format!(
                    "list element types are not identical at {}",
                    display(path)
                )));
            }
            _ => {}
        }
    }
    Ok(seen.map(|t| {
        if t == 5 {
            ElemKind::Map
        } else {
            ElemKind::Scalar
        }
    }))
}

fn merge_list(
    schema: Schema,
    path: &str,
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: Option<&str>,
    is_delete_list: bool,
    view: &mut [Value],
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let elem = element_kind(&[&original, &patch], path)?.unwrap_or(ElemKind::Scalar);
    let (original, patch, merged) = if elem == ElemKind::Scalar {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.iter().any(|d| same_scalar(v, d)))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !merged.iter().any(|m| same_scalar(m, v)) {
                merged.push(v.clone());
            }
        }
        (original, patch, merged)
    } else {
        let Some(key) = merge_key else {
            return Err(failed(format!(
                "cannot merge lists without merge key for {}",
                display(path)
            )));
        };
        let (original, patch) = apply_list_directives(original, patch, key, path, view)?;
        let merged = merge_items(schema, path, original.clone(), &patch, key, view)?;
        (original, patch, merged)
    };
    let key = if elem == ElemKind::Map {
        merge_key
    } else {
        None
    };
    let (patch_items, server_only) = partition(merged, &patch, key, path)?;
    normalize_element_order(patch_items, server_only, &patch, &original, key, path)
}

/// Handles the items with a `$patch` directive: `delete` removes the live items of that key,
/// `replace` makes the patch's other items the whole list.
fn apply_list_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    path: &str,
    view: &mut [Value],
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let directive = item.get(DIRECTIVE).cloned();
        match directive {
            None => plain.push(item),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let Some(value) = item.get(key) else {
                        return Err(no_merge_key(key, path));
                    };
                    while let Some(i) = original
                        .iter()
                        .position(|o| o.get(key).is_some_and(|v| same_scalar(v, value)))
                    {
                        original.remove(i);
                        alias(view, &original);
                    }
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(failed("merging lists cannot yet be specified in the patch"));
                }
                _ => {
                    return Err(failed(format!(
                        "unknown patch type {d} in a list item at {}",
                        display(path)
                    )));
                }
            },
        }
    }
    if replace {
        Ok((plain, Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// Merges each patch item into the live item of the same key, or appends it.
fn merge_items(
    schema: Schema,
    path: &str,
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    view: &mut [Value],
) -> Result<Vec<Value>, PatchError> {
    for item in patch {
        let Some(value) = item.get(key) else {
            return Err(no_merge_key(key, path));
        };
        let found = find_by_key(&original, key, value, path)?;
        match found {
            Some(i) => {
                let Value::Object(o) = std::mem::take(&mut original[i]) else {
                    unreachable!("find_by_key only finds maps")
                };
                let Value::Object(p) = item.clone() else {
                    unreachable!("element kinds are checked")
                };
                original[i] = Value::Object(merge_map(schema, path, o, p)?);
            }
            None => {
                if let Some(v) = clean(item.clone()) {
                    original.push(v);
                }
            }
        }
        alias(view, &original);
    }
    Ok(original)
}

/// Upstream edits the live list in place (Go slices share their array), and then orders
/// `$setElementOrder` lists by that edited array: `view` replays those edits so that the
/// order comes out as Kubernetes' does (deleting an item shifts the rest left and leaves the
/// last one in place; appending fills the freed places).
fn alias(view: &mut [Value], current: &[Value]) {
    for (v, c) in view.iter_mut().zip(current) {
        *v = c.clone();
    }
}

fn find_by_key(
    list: &[Value],
    key: &str,
    value: &Value,
    path: &str,
) -> Result<Option<usize>, PatchError> {
    for (i, v) in list.iter().enumerate() {
        let Value::Object(m) = v else {
            return Err(failed(format!("an item of {} is not a map", display(path))));
        };
        if m.get(key).is_some_and(|k| same_scalar(k, value)) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn no_merge_key(key: &str, path: &str) -> PatchError {
    failed(format!(
        "an item of {} does not contain declared merge key: {key}",
        display(path)
    ))
}

/// Splits `merged` into the items that `by` names (by merge key, or by value for scalars)
/// and the others.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
    path: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut named = Vec::new();
    let mut others = Vec::new();
    for v in merged {
        let present = match key {
            None => by.iter().any(|b| same_scalar(b, &v)),
            Some(key) => {
                let Some(value) = v.get(key) else {
                    return Err(no_merge_key(key, path));
                };
                find_by_key(by, key, value, path)?.is_some()
            }
        };
        if present {
            named.push(v);
        } else {
            others.push(v);
        }
    }
    Ok((named, others))
}

/// The identity of an item in ordering: its merge key's value, or itself.
fn identity<'a>(v: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(k) => v.get(k),
        None => Some(v),
    }
}

fn position(order: &[Value], v: &Value, key: Option<&str>) -> Option<usize> {
    let id = identity(v, key);
    order.iter().position(|o| match (identity(o, key), id) {
        (Some(a), Some(b)) => same_scalar(a, b),
        (None, None) => true,
        _ => false,
    })
}

/// Sorts patch items by `patch_order` and server-only items by `server_order`, then
/// interleaves them keeping both relative orders (upstream `normalizeElementOrder`).
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    let patch_items = sort_by_order(patch_items, patch_order, key, path)?;
    let server_only = sort_by_order(server_only, server_order, key, path)?;
    Ok(merge_sorted(server_only, patch_items, server_order, key))
}

fn sort_by_order(
    items: Vec<Value>,
    order: &[Value],
    key: Option<&str>,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    if let Some(k) = key
        && items.iter().chain(order.iter()).any(|v| v.get(k).is_none())
    {
        return Err(no_merge_key(k, path));
    }
    let (mut keep, delete): (Vec<Value>, Vec<Value>) = items
        .into_iter()
        .partition(|v| key.is_none() || v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"));
    keep.sort_by_key(|v| position(order, v, key).unwrap_or(usize::MAX));
    keep.extend(delete);
    Ok(keep)
}

/// Inserts each item of `left` into `right` before the first item it precedes in
/// `server_order` (upstream `mergeSortedSlice`).
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (Some(l), Some(r)) => {
                let li = position(server_order, l, key);
                let ri = position(server_order, r, key);
                if matches!((li, ri), (Some(a), Some(b)) if a < b) {
                    out.extend(left.next());
                } else {
                    out.extend(right.next());
                }
            }
        }
    }
    out
}

/// `$retainKeys`: keys of the live map that the list does not name are cleared.
fn apply_retain_keys(
    path: &str,
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(failed(format!(
            "$retainKeys at {} must be a list of field names",
            display(path)
        )));
    };
    let named = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !named(k) {
            return Err(failed(format!(
                "the field {k} at {} is not in its $retainKeys list",
                display(path)
            )));
        }
    }
    original.retain(|k, _| named(k));
    Ok(())
}

/// `$setElementOrder/<list>`: merges the list (if the patch has it) and orders the result
/// as the directive says, server-only items kept in their live places.
fn merge_set_element_order(
    schema: Schema,
    path: &str,
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let order = patch.remove(&directive).unwrap_or(Value::Null);
        let Value::Array(order) = order else {
            return Err(failed(format!("{directive} must be a list")));
        };
        let field = match directive[SET_ELEMENT_ORDER.len()..].strip_prefix('/') {
            Some(f) if !f.is_empty() => f.to_string(),
            _ => return Err(failed(format!("malformed directive {directive}"))),
        };
        let sub = merge_keys::child(path, &field);
        let live = match original.get(&field) {
            None => None,
            Some(Value::Array(l)) => Some(l.clone()),
            Some(_) => return Err(failed(format!("{} is not a list", display(&sub)))),
        };
        let patched = match patch.remove(&field) {
            None => None,
            Some(Value::Array(l)) => Some(l),
            Some(_) => {
                return Err(failed(format!(
                    "the patch's {} is not a list",
                    display(&sub)
                )));
            }
        };
        let strategy = schema(&sub);
        let key = match strategy {
            Strategic::MergeByKey(k) => Some(k),
            _ => None,
        };
        if let Some(p) = &patched {
            validate_order(p, &order, key, &sub)?;
        }
        let elem = element_kind(
            &[
                live.as_deref().unwrap_or(&[]),
                patched.as_deref().unwrap_or(&[]),
            ],
            &sub,
        )?;
        let mut live_order = live.clone().unwrap_or_default();
        let merged = match (live, patched) {
            (Some(l), None) => l,
            (None, Some(p)) => match clean(Value::Array(p)) {
                Some(Value::Array(v)) => v,
                _ => Vec::new(),
            },
            (Some(l), Some(p)) => merge_list_field(schema, &sub, l, p, false, &mut live_order)?,
            (None, None) => continue,
        };
        let key = if elem == Some(ElemKind::Map) {
            key
        } else {
            None
        };
        if elem == Some(ElemKind::Map) && key.is_none() {
            return Err(failed(format!(
                "cannot order the list {} without a merge key",
                display(&sub)
            )));
        }
        let (named, others) = partition(merged, &order, key, &sub)?;
        let both = normalize_element_order(named, others, &order, &live_order, key, &sub)?;
        original.insert(field, Value::Array(both));
    }
    Ok(())
}

/// The items of the patch's list (deletions aside) must appear in `$setElementOrder` in the
/// same relative order.
fn validate_order(
    patch: &[Value],
    order: &[Value],
    key: Option<&str>,
    path: &str,
) -> Result<(), PatchError> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = patch
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    let (mut pi, mut oi) = (0, 0);
    while pi < items.len() && oi < order.len() {
        let equal = match key {
            Some(k) => match (items[pi].get(k), order[oi].get(k)) {
                (Some(a), Some(b)) => same_scalar(a, b),
                _ => return Err(no_merge_key(k, path)),
            },
            None => same_scalar(items[pi], &order[oi]),
        };
        if equal {
            pi += 1;
        }
        oi += 1;
    }
    if pi < items.len() {
        return Err(failed(format!(
            "the order of the patch's {} does not match its $setElementOrder list",
            display(path)
        )));
    }
    Ok(())
}

/// A patch value taken whole: its `null`s dropped (they delete nothing) and its directives
/// removed (a map carrying `$patch` is dropped). None when the value itself is a directive.
fn clean(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE) {
                return None;
            }
            Some(Value::Object(
                m.into_iter()
                    .filter(|(k, v)| !v.is_null() && !k.starts_with('$'))
                    .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(l) => Some(Value::Array(l.into_iter().filter_map(clean).collect())),
        v => Some(v),
    }
}

/// Like [`clean`], but keeps `null`s: what upstream's `removeDirectives` does for `$patch:
/// replace` maps.
fn remove_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE) {
                return None;
            }
            Some(Value::Object(
                m.into_iter()
                    .filter(|(k, _)| !k.starts_with('$'))
                    .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(l) => Some(Value::Array(
            l.into_iter().filter_map(remove_directives).collect(),
        )),
        v => Some(v),
    }
}

/// Scalar equality as Go compares decoded JSON: numbers by value (`80` is `80.0`).
pub(crate) fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

fn display(path: &str) -> String {
    if path.is_empty() {
        "the object".to_string()
    } else {
        format!(".{path}")
    }
}

//! structured-merge-diff's operations on objects, with the list types and atomic objects of
//! [`merge_keys`]: the field set of an object, the merge of an applied configuration into a
//! live object, the removal of a set of fields, and the comparison of two objects.

use super::fieldset::{FieldSet, PathElement, key_element, value_element};
use super::merge_keys::{self, ListType};
use crate::Kind;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Where a walk is: the schema path of the node (list items transparent) and whether the
/// node is a list item.
#[derive(Clone, Copy)]
struct At<'a> {
    path: &'a str,
    item: bool,
}

impl At<'_> {
    /// Whether the object here is owned whole.
    fn atomic_object(&self, kind: Kind) -> bool {
        if self.item {
            merge_keys::atomic_object(kind, &merge_keys::items(self.path))
        } else {
            merge_keys::atomic_object(kind, self.path)
        }
    }

    /// The list type of the list here (list items are never lists).
    fn list_type(&self, kind: Kind) -> ListType {
        if self.item {
            ListType::Atomic
        } else {
            merge_keys::list_type(kind, self.path)
        }
    }
}

const ROOT: At<'static> = At {
    path: "",
    item: false,
};

/// The element that names one item of a map list or set.
pub fn item_element(ty: ListType, item: &Value, path: &str) -> Result<PathElement, String> {
    match ty {
        ListType::Map(keys) => {
            let Value::Object(m) = item else {
                return Err(format!("an item of .{path} is not an object"));
            };
            let defaults: Vec<Value> = keys
                .iter()
                .map(|k| {
                    k.default
                        .map(|d| Value::String(d.into()))
                        .unwrap_or(Value::Null)
                })
                .collect();
            let fields: Vec<(String, &Value)> = keys
                .iter()
                .zip(defaults.iter())
                .filter_map(|(k, d)| match m.get(k.name) {
                    Some(v) if !v.is_null() => Some((k.name.to_string(), v)),
                    _ if !d.is_null() => Some((k.name.to_string(), d)),
                    _ => None,
                })
                .collect();
            if fields.is_empty() {
                let names: Vec<&str> = keys.iter().map(|k| k.name).collect();
                return Err(format!(
                    "an item of .{path} has none of its key fields {names:?}"
                ));
            }
            Ok(key_element(fields))
        }
        ListType::Set => match item {
            Value::Object(_) | Value::Array(_) => {
                Err(format!("an item of the set .{path} is not a scalar"))
            }
            v => Ok(value_element(v)),
        },
        ListType::Atomic => Err(format!("the atomic list .{path} has no item paths")),
    }
}

/// The fields an object sets (`ToFieldSet`): its leaves, the items of its map lists and sets,
/// its atomic lists and objects, and its empty objects and nulls.
pub fn field_set(kind: Kind, v: &Value) -> Result<FieldSet, String> {
    let mut set = FieldSet::new();
    let mut prefix = Vec::new();
    walk_set(kind, ROOT, v, &mut prefix, &mut set)?;
    Ok(set)
}

fn walk_set(
    kind: Kind,
    at: At,
    v: &Value,
    prefix: &mut Vec<PathElement>,
    set: &mut FieldSet,
) -> Result<(), String> {
    match v {
        Value::Object(m) => {
            if at.atomic_object(kind) && !prefix.is_empty() {
                set.insert(prefix);
                return Ok(());
            }
            for (k, child) in m {
                let path = merge_keys::child(at.path, k);
                prefix.push(PathElement::Field(k.clone()));
                walk_set(
                    kind,
                    At {
                        path: &path,
                        item: false,
                    },
                    child,
                    prefix,
                    set,
                )?;
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                    set.insert(prefix);
                }
                prefix.pop();
            }
        }
        Value::Array(items) => match at.list_type(kind) {
            ListType::Atomic => set.insert(prefix),
            ty => {
                let mut seen: HashMap<PathElement, usize> = HashMap::new();
                let elements = items
                    .iter()
                    .map(|i| item_element(ty, i, at.path))
                    .collect::<Result<Vec<_>, _>>()?;
                for pe in &elements {
                    *seen.entry(pe.clone()).or_default() += 1;
                }
                for (item, pe) in items.iter().zip(elements) {
                    prefix.push(pe.clone());
                    if seen[&pe] == 1 {
                        walk_set(
                            kind,
                            At {
                                path: at.path,
                                item: true,
                            },
                            item,
                            prefix,
                            set,
                        )?;
                    }
                    set.insert(prefix);
                    prefix.pop();
                }
            }
        },
        _ => set.insert(prefix),
    }
    Ok(())
}

/// Merges an applied configuration into a live object (`TypedValue.Merge`): objects field by
/// field, map lists and sets item by item (the configuration's order for shared items, live
/// items kept in place), everything else taken from the configuration.
pub fn merge(kind: Kind, live: &Value, config: &Value) -> Result<Value, String> {
    Ok(merge_at(kind, ROOT, Some(live), Some(config))?.unwrap_or(Value::Object(Map::new())))
}

fn merge_at(
    kind: Kind,
    at: At,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
) -> Result<Option<Value>, String> {
    let (l, r) = match (lhs, rhs) {
        (l, None) => return Ok(l.cloned()),
        (None, r) => {
            // Still check the configuration's lists for duplicates and keys.
            if let Some(r) = r {
                check_config(kind, at, r)?;
            }
            return Ok(r.cloned());
        }
        (Some(l), Some(r)) => (l, r),
    };
    match (l, r) {
        (Value::Object(lm), Value::Object(rm))
            if !(at.atomic_object(kind) || lm.is_empty() && rm.is_empty()) =>
        {
            let mut out = lm.clone();
            for (k, rv) in rm {
                let path = merge_keys::child(at.path, k);
                let merged = merge_at(
                    kind,
                    At {
                        path: &path,
                        item: false,
                    },
                    lm.get(k),
                    Some(rv),
                )?;
                match merged {
                    Some(v) => out.insert(k.clone(), v),
                    None => out.remove(k),
                };
            }
            Ok(Some(Value::Object(out)))
        }
        (Value::Array(ll), Value::Array(rl))
            if at.list_type(kind) != ListType::Atomic && !(ll.is_empty() && rl.is_empty()) =>
        {
            merge_items(kind, at, ll, rl).map(|v| Some(Value::Array(v)))
        }
        _ => {
            check_config(kind, at, r)?;
            Ok(Some(r.clone()))
        }
    }
}

/// The configuration's map lists must name their items and not repeat them.
fn check_config(kind: Kind, at: At, v: &Value) -> Result<(), String> {
    match v {
        Value::Object(m) if !at.atomic_object(kind) => {
            for (k, child) in m {
                let path = merge_keys::child(at.path, k);
                check_config(
                    kind,
                    At {
                        path: &path,
                        item: false,
                    },
                    child,
                )?;
            }
        }
        Value::Array(items) => {
            let ty = at.list_type(kind);
            if ty != ListType::Atomic {
                let mut seen = Vec::new();
                for item in items {
                    let pe = item_element(ty, item, at.path)?;
                    if seen.contains(&pe) {
                        return Err(format!("duplicate entries for key {pe} in .{}", at.path));
                    }
                    seen.push(pe);
                    check_config(
                        kind,
                        At {
                            path: at.path,
                            item: true,
                        },
                        item,
                    )?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The merge of two lists' items (structured-merge-diff's `visitListItems`).
fn merge_items(kind: Kind, at: At, lhs: &[Value], rhs: &[Value]) -> Result<Vec<Value>, String> {
    let ty = at.list_type(kind);
    let item_at = At {
        path: at.path,
        item: true,
    };
    let index =
        |list: &[Value], allow_duplicates: bool| -> Result<Vec<(PathElement, usize)>, String> {
            let mut out: Vec<(PathElement, usize)> = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let pe = item_element(ty, item, at.path)?;
                if out.iter().any(|(p, _)| *p == pe) {
                    if allow_duplicates {
                        continue;
                    }
                    return Err(format!("duplicate entries for key {pe} in .{}", at.path));
                }
                out.push((pe, i));
            }
            Ok(out)
        };
    let l_pes = index(lhs, true)?;
    let r_pes = index(rhs, false)?;
    let find = |pes: &[(PathElement, usize)], pe: &PathElement| {
        pes.iter().find(|(p, _)| p == pe).map(|(_, i)| *i)
    };
    let mut shared = r_pes
        .iter()
        .filter(|(pe, _)| find(&l_pes, pe).is_some())
        .map(|(pe, _)| pe.clone())
        .collect::<Vec<_>>()
        .into_iter();
    let mut next_shared = shared.next();
    let mut merged_rhs: Vec<PathElement> = Vec::new();
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let (mut li, mut ri) = (0, 0);
    while li < l_pes.len() || ri < r_pes.len() {
        if li < l_pes.len() && ri < r_pes.len() {
            let pe = &l_pes[li].0;
            if *pe == r_pes[ri].0 {
                merged_rhs.push(pe.clone());
                let v = merge_at(
                    kind,
                    item_at,
                    Some(&lhs[l_pes[li].1]),
                    Some(&rhs[r_pes[ri].1]),
                )?;
                out.extend(v);
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if find(&r_pes, pe).is_some() && next_shared.as_ref().is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < l_pes.len() {
            let pe = &l_pes[li].0;
            if find(&r_pes, pe).is_none() {
                out.push(lhs[l_pes[li].1].clone());
                li += 1;
                continue;
            } else if merged_rhs.contains(pe) {
                li += 1;
            }
        }
        if ri < r_pes.len() {
            let pe = r_pes[ri].0.clone();
            merged_rhs.push(pe.clone());
            let l = find(&l_pes, &pe).map(|i| &lhs[i]);
            let v = merge_at(kind, item_at, l, Some(&rhs[r_pes[ri].1]))?;
            out.extend(v);
            ri += 1;
            if next_shared.as_ref() == Some(&pe) {
                next_shared = shared.next();
            }
        }
    }
    Ok(out)
}

/// The object without the fields of `set` (`RemoveItems`). An object or list left empty by
/// the removal is removed too (Kubernetes leaves a null there, which decodes the same).
pub fn remove(kind: Kind, v: &Value, set: &FieldSet) -> Value {
    remove_at(kind, ROOT, v, set).unwrap_or(Value::Object(Map::new()))
}

fn remove_at(kind: Kind, at: At, v: &Value, set: &FieldSet) -> Option<Value> {
    match v {
        Value::Object(m) if !(m.is_empty() || at.atomic_object(kind) && !at.path.is_empty()) => {
            let mut out = Map::new();
            for (k, child) in m {
                let pe = PathElement::Field(k.clone());
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) => {
                        let path = merge_keys::child(at.path, k);
                        if let Some(c) = remove_at(
                            kind,
                            At {
                                path: &path,
                                item: false,
                            },
                            child,
                            sub,
                        ) {
                            out.insert(k.clone(), c);
                        }
                    }
                    None => {
                        out.insert(k.clone(), child.clone());
                    }
                }
            }
            (!out.is_empty() || at.item).then_some(Value::Object(out))
        }
        Value::Array(items) if !items.is_empty() && at.list_type(kind) != ListType::Atomic => {
            let ty = at.list_type(kind);
            let mut out = Vec::new();
            for item in items {
                let Ok(pe) = item_element(ty, item, at.path) else {
                    out.push(item.clone());
                    continue;
                };
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) => out.extend(remove_at(
                        kind,
                        At {
                            path: at.path,
                            item: true,
                        },
                        item,
                        sub,
                    )),
                    None => out.push(item.clone()),
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        v => Some(v.clone()),
    }
}

/// What changed between two objects (`Compare`).
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub removed: FieldSet,
    pub modified: FieldSet,
}

pub fn compare(kind: Kind, old: &Value, new: &Value) -> Result<Comparison, String> {
    compare_objects(kind, old, new, false)
}

/// [`compare`] of the objects as if neither had `metadata.managedFields` (what a write
/// records is compared without them), without copying them to take the field out.
pub fn compare_without_managed_fields(
    kind: Kind,
    old: &Value,
    new: &Value,
) -> Result<Comparison, String> {
    compare_objects(kind, old, new, true)
}

fn compare_objects(
    kind: Kind,
    old: &Value,
    new: &Value,
    skip_managed_fields: bool,
) -> Result<Comparison, String> {
    let mut c = Comparison::default();
    compare_at(
        kind,
        ROOT,
        Some(old),
        Some(new),
        &mut Vec::new(),
        &mut c,
        skip_managed_fields,
    )?;
    Ok(c)
}

/// Whether the walk is at the root's `metadata` and leaves out `managedFields` there.
fn skips_managed_fields(skip: bool, prefix: &[PathElement]) -> bool {
    skip && matches!(prefix, [PathElement::Field(f)] if f == "metadata")
}

fn compare_at(
    kind: Kind,
    at: At,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    prefix: &mut Vec<PathElement>,
    c: &mut Comparison,
    skip_managed_fields: bool,
) -> Result<(), String> {
    let skip_here = skips_managed_fields(skip_managed_fields, prefix);
    if let (Some(l), Some(r)) = (lhs, rhs)
        && l == r
    {
        // Nothing below changed; only the walk's refusals (an item without its key) remain.
        return check_unchanged(kind, at, l, prefix.is_empty());
    }
    let granular_object = |v: Option<&Value>| match v {
        Some(Value::Object(_)) => prefix.is_empty() || !at.atomic_object(kind),
        _ => false,
    };
    let granular_list = |v: Option<&Value>| match v {
        Some(Value::Array(_)) => at.list_type(kind) != ListType::Atomic,
        _ => false,
    };
    let empty = |v: Option<&Value>| match v {
        None => true,
        Some(Value::Object(m)) if skip_here => m.keys().all(|k| k == "managedFields"),
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(l)) => l.is_empty(),
        _ => false,
    };
    let objects = [lhs, rhs]
        .iter()
        .all(|v| v.is_none() || granular_object(*v));
    let lists = [lhs, rhs].iter().all(|v| v.is_none() || granular_list(*v));
    let leaf = !(objects || lists) || (empty(lhs) && empty(rhs));
    if leaf {
        if prefix.is_empty() {
            return Ok(());
        }
        match (lhs, rhs) {
            (None, Some(_)) => c.added.insert(prefix),
            (Some(_), None) => c.removed.insert(prefix),
            (Some(l), Some(r)) if l != r && !(skip_here && empty(lhs) && empty(rhs)) => {
                c.modified.insert(prefix)
            }
            _ => {}
        }
        return Ok(());
    }
    if objects {
        let empty_map = Map::new();
        let lm = lhs.and_then(Value::as_object).unwrap_or(&empty_map);
        let rm = rhs.and_then(Value::as_object).unwrap_or(&empty_map);
        let mut keys: Vec<&String> = lm.keys().collect();
        keys.extend(rm.keys().filter(|k| !lm.contains_key(*k)));
        if skip_here {
            keys.retain(|k| *k != "managedFields");
        }
        for k in keys {
            let path = merge_keys::child(at.path, k);
            prefix.push(PathElement::Field(k.clone()));
            compare_at(
                kind,
                At {
                    path: &path,
                    item: false,
                },
                lm.get(k),
                rm.get(k),
                prefix,
                c,
                skip_managed_fields,
            )?;
            prefix.pop();
        }
    } else {
        let ty = at.list_type(kind);
        let empty_list = Vec::new();
        let ll = lhs.and_then(Value::as_array).unwrap_or(&empty_list);
        let rl = rhs.and_then(Value::as_array).unwrap_or(&empty_list);
        let mut order: Vec<PathElement> = Vec::new();
        let mut l_items: HashMap<PathElement, &Value> = HashMap::new();
        let mut r_items: HashMap<PathElement, &Value> = HashMap::new();
        for (list, items) in [(ll, &mut l_items), (rl, &mut r_items)] {
            for item in list {
                let pe = item_element(ty, item, at.path)?;
                if !order.contains(&pe) {
                    order.push(pe.clone());
                }
                items.entry(pe).or_insert(item);
            }
        }
        for pe in order {
            prefix.push(pe.clone());
            let item_at = At {
                path: at.path,
                item: true,
            };
            compare_at(
                kind,
                item_at,
                l_items.get(&pe).copied(),
                r_items.get(&pe).copied(),
                prefix,
                c,
                skip_managed_fields,
            )?;
            prefix.pop();
        }
    }
    if !prefix.is_empty() {
        match (lhs, rhs) {
            (None, Some(_)) => c.added.insert(prefix),
            (Some(_), None) => c.removed.insert(prefix),
            _ => {}
        }
    }
    Ok(())
}

/// What [`compare_at`] of a value with itself does: nothing is added, removed or modified, but
/// the items of its map lists and sets must still name themselves, in the same walk order, so
/// that an unchanged subtree refuses what a changed one would.
fn check_unchanged(kind: Kind, at: At, v: &Value, root: bool) -> Result<(), String> {
    match v {
        Value::Object(m) if !m.is_empty() && (root || !at.atomic_object(kind)) => {
            for (k, child) in m {
                let path = merge_keys::child(at.path, k);
                check_unchanged(
                    kind,
                    At {
                        path: &path,
                        item: false,
                    },
                    child,
                    false,
                )?;
            }
            Ok(())
        }
        Value::Array(items) if !items.is_empty() => {
            let ty = at.list_type(kind);
            if ty == ListType::Atomic {
                return Ok(());
            }
            let mut seen: Vec<PathElement> = Vec::with_capacity(items.len());
            let mut first = Vec::with_capacity(items.len());
            for item in items {
                let pe = item_element(ty, item, at.path)?;
                if !seen.contains(&pe) {
                    seen.push(pe);
                    first.push(item);
                }
            }
            let item_at = At {
                path: at.path,
                item: true,
            };
            first
                .into_iter()
                .try_for_each(|item| check_unchanged(kind, item_at, item, false))
        }
        _ => Ok(()),
    }
}

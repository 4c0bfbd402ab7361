//! The common case of recording a write's field ownership: the object keeps its stored
//! managedFields, and the write changes a few fields (an agent's status report, a binding, a
//! controller's status). Only the entries owning a changed or removed field are decoded and
//! rebuilt; the others keep their stored `fieldsV1` as it is, and the writer's own entry only
//! gets its new time when it already owns every field the write changed. The result is the
//! one [`super::apply::record_update_at`]'s full computation gives, because stored entries are
//! in their canonical encoding and own none of the unowned fields (every write that stores
//! managedFields encodes them so).

use super::apply::{Entry, entry_order, managed_fields, set_managed_fields, unowned};
use super::fieldset::{FieldSet, fields_v1_is_empty};
use super::typed;
use crate::Kind;
use serde_json::{Map, Value};

/// A stored managedFields entry, its field set decoded only once the write touches it.
struct LiveEntry<'a> {
    /// The entry, its `set` empty while `stored` is some.
    entry: Entry,
    /// The stored `fieldsV1`, while it is not decoded.
    stored: Option<&'a Value>,
}

impl LiveEntry<'_> {
    fn is_empty(&self) -> bool {
        match self.stored {
            Some(f) => fields_v1_is_empty(f),
            None => self.entry.set.is_empty(),
        }
    }

    fn encode(&self) -> Value {
        match self.stored {
            Some(f) => self.entry.encode_with(f.clone()),
            None => self.entry.encode(),
        }
    }
}

/// The stored entries, their field sets not decoded; None when they are not a list of
/// entries (the full computation then decides).
fn live_entries(managed: Option<&Value>) -> Option<Vec<LiveEntry<'_>>> {
    let list = match managed {
        None | Some(Value::Null) => return Some(Vec::new()),
        Some(Value::Array(l)) => l,
        Some(_) => return None,
    };
    list.iter()
        .map(|v| {
            let entry = Entry::decode_meta(v).ok()?;
            let stored = match v.get("fieldsV1") {
                Some(f @ Value::Object(_)) => Some(f),
                Some(_) => return None,
                None => None,
            };
            Some(LiveEntry { entry, stored })
        })
        .collect()
}

/// Records the write of `new` (without managedFields) over `old` from the live entries, or
/// gives `new` back when this case does not apply (entries that are not a list, objects that
/// cannot be compared) for the full computation to decide.
pub(super) fn record_live(
    kind: Kind,
    old: &Value,
    mut new: Value,
    manager: &str,
    subresource: &str,
    now: &str,
) -> Result<Value, Value> {
    let Some(mut entries) = live_entries(managed_fields(old)) else {
        return Err(new);
    };
    let empty = Value::Object(Map::new());
    let old_obj = if old.is_object() { old } else { &empty };
    let Ok(cmp) = typed::compare_without_managed_fields(kind, old_obj, &new) else {
        return Err(new);
    };
    let api_version = kind.api_version();
    let unowned = unowned();
    let changed = cmp.modified.union(&cmp.added);
    let taken = changed.difference(unowned);
    let mine = (!taken.is_empty())
        .then(|| {
            entries
                .iter()
                .position(|e| e.entry.is(manager, "Update", &api_version, subresource))
        })
        .flatten();
    for (i, e) in entries.iter_mut().enumerate() {
        if let Some(stored) = e.stored {
            let loses_removed = cmp.removed.meets_fields_v1(stored);
            if Some(i) == mine && !loses_removed && taken.within_fields_v1(stored) {
                // It gives up what the write changed and takes it back: only its time moves.
                e.entry.time = Some(now.to_string());
                continue;
            }
            if Some(i) != mine && !loses_removed && !changed.meets_fields_v1(stored) {
                continue;
            }
            let Ok(set) = FieldSet::from_fields_v1(stored) else {
                return Err(new);
            };
            e.entry.set = set;
            e.stored = None;
        }
        let mut set = e.entry.set.difference(&changed).difference(&cmp.removed);
        if Some(i) == mine {
            set = set.union(&taken);
            e.entry.time = Some(now.to_string());
        }
        e.entry.set = set.difference(unowned);
    }
    if mine.is_none() && !taken.is_empty() {
        entries.push(LiveEntry {
            entry: Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version,
                subresource: subresource.into(),
                time: Some(now.to_string()),
                set: taken,
            },
            stored: None,
        });
    }
    entries.retain(|e| !e.is_empty());
    entries.sort_by(|a, b| entry_order(&a.entry, &b.entry));
    set_managed_fields(&mut new, entries.iter().map(LiveEntry::encode).collect());
    Ok(new)
}

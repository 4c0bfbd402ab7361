//! Server-side apply and field ownership (`metadata.managedFields`), as Kubernetes'
//! structured-merge-diff does them.
//!
//! Every write records which manager set which fields. An apply (`PATCH` with
//! `application/apply-patch+yaml`) merges the applied configuration into the live object, makes
//! the manager own exactly the configuration's fields, removes the fields it owned before and
//! no longer applies (unless another manager owns them too), and fails with conflicts when it
//! changes a field another manager owns, unless forced (then ownership moves). Other writes
//! ([`record_update`]) give the fields they change to their manager (operation `Update`).

use super::fieldset::{FieldSet, PathElement, display_path};
use super::typed;
use crate::Kind;
use serde_json::{Map, Value, json};

/// The manager name structured-merge-diff uses for the write being recorded.
const CURRENT_OPERATION: &str = "current-operation";

/// kubectl's client-side apply annotation, kept in step by `kubectl --server-side` applies.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name (`kubectl-client-side-apply`).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the other manager wrote with (`apps/v1`).
    pub api_version: String,
    /// The subresource the other manager wrote (`status`), empty for the main resource.
    pub subresource: String,
    /// The field, as Kubernetes prints it (`.spec.replicas`).
    pub field: String,
}

impl Conflict {
    /// The manager as Kubernetes names it in conflicts: `"kubectl" using apps/v1` for an
    /// updater, `"other"` for an applier.
    pub fn manager_display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == "Update" {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    /// The message of the conflict's `FieldManagerConflict` cause.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_display())
    }

    /// The conflict's cause in a Status: `{"type":"FieldManagerConflict","message":...,"field":...}`.
    pub fn cause(&self) -> crate::StatusCause {
        crate::StatusCause {
            field: Some(self.field.clone()),
            message: Some(self.cause_message()),
            reason: Some("FieldManagerConflict".into()),
        }
    }
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields other managers own would change (answered with 409).
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration cannot be applied (answered with 400).
    #[error("{0}")]
    Invalid(String),
}

/// Kubernetes' message for apply conflicts.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager_display(),
            c.field
        );
    }
    let mut managers: Vec<String> = conflicts.iter().map(Conflict::manager_display).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| c.manager_display() == m) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub(super) manager: String,
    pub(super) operation: String,
    pub(super) api_version: String,
    pub(super) subresource: String,
    pub(super) time: Option<String>,
    pub(super) set: FieldSet,
}

impl Entry {
    /// Whether the entry is the one of this manager, operation and subresource (appliers are
    /// one entry whatever their version, as in Kubernetes).
    pub(super) fn is(
        &self,
        manager: &str,
        operation: &str,
        api_version: &str,
        subresource: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == "Apply" || self.api_version == api_version)
    }

    pub(super) fn encode(&self) -> Value {
        self.encode_with(self.set.to_fields_v1())
    }

    /// The entry's JSON with `fields` as its `fieldsV1`.
    pub(super) fn encode_with(&self, fields: Value) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), fields);
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }

    fn decode(v: &Value) -> Result<Entry, String> {
        let mut e = Entry::decode_meta(v)?;
        if let Some(f) = v.get("fieldsV1") {
            e.set = FieldSet::from_fields_v1(f)?;
        }
        Ok(e)
    }

    /// The entry without its field set (left empty).
    pub(super) fn decode_meta(v: &Value) -> Result<Entry, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if v.get("fieldsType").is_some_and(|t| t != "FieldsV1") {
            return Err("fieldsType must be FieldsV1".into());
        }
        Ok(Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            subresource: s("subresource"),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            set: FieldSet::new(),
        })
    }
}

pub(super) fn managed_fields(obj: &Value) -> Option<&Value> {
    obj.get("metadata")?.get("managedFields")
}

pub(super) fn decode_entries(v: Option<&Value>) -> Result<Vec<Entry>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(l)) => l.iter().map(Entry::decode).collect(),
        Some(_) => Err("metadata.managedFields must be a list".into()),
    }
}

fn strip_managed_fields(obj: &mut Value) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        meta.remove("managedFields");
    }
}

/// The order Kubernetes keeps managedFields in.
pub(super) fn entry_order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    (
        &a.operation,
        &a.time,
        &a.manager,
        &a.api_version,
        &a.subresource,
    )
        .cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
}

/// The object with these encoded entries as its managedFields (none: no managedFields).
pub(super) fn set_managed_fields(obj: &mut Value, entries: Vec<Value>) {
    let Value::Object(root) = obj else { return };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// The object with these entries as its managedFields, sorted as Kubernetes sorts them.
fn encode_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(entry_order);
    set_managed_fields(obj, entries.iter().map(Entry::encode).collect());
}

/// The fields no manager owns: the type, identity and bookkeeping of the object.
pub(super) fn unowned() -> &'static FieldSet {
    static UNOWNED: std::sync::OnceLock<FieldSet> = std::sync::OnceLock::new();
    UNOWNED.get_or_init(unowned_fields)
}

fn unowned_fields() -> FieldSet {
    let mut s = FieldSet::new();
    let f = |n: &str| PathElement::Field(n.into());
    for top in ["apiVersion", "kind", "metadata"] {
        s.insert(&[f(top)]);
    }
    for m in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        s.insert(&[f("metadata"), f(m)]);
    }
    s
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(l) => l.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Server-side apply of `applied` (the configuration, as JSON) by `manager` to `live` (None to
/// create). The result carries the new `metadata.managedFields`, with `now` (RFC 3339) as the
/// manager's time when the object changed. The result still needs decoding, defaulting and
/// validation.
pub fn server_side_apply(
    kind: Kind,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let invalid = ApplyError::Invalid;
    if !applied.is_object() {
        return Err(invalid(
            "the applied configuration must be an object".into(),
        ));
    }
    let api_version = kind.api_version();
    let patch_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if patch_version != api_version {
        return Err(invalid(format!(
            "Incorrect version specified in apply patch. Specified patch version: {patch_version}, expected: {api_version}"
        )));
    }
    let patch_kind = applied.get("kind").and_then(Value::as_str).unwrap_or("");
    if patch_kind != kind.name() {
        return Err(invalid(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {patch_kind}, expected: {}",
            kind.name()
        )));
    }
    if managed_fields(applied).is_some_and(|m| !m.is_null()) {
        return Err(invalid("metadata.managedFields must be nil".into()));
    }
    if manager.is_empty() {
        return Err(invalid("a field manager is required for apply".into()));
    }

    let mut live = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let mut entries = decode_entries(managed_fields(&live))
        .map_err(|e| invalid(format!("failed to decode managed fields: {e}")))?;
    strip_managed_fields(&mut live);

    let merged = typed::merge(kind, &live, applied).map_err(invalid)?;
    // Kept whole until the end, as structured-merge-diff does (identity fields stripped only
    // when encoding), so that pruning never sees `metadata` as unowned.
    let config_set = typed::field_set(kind, applied).map_err(invalid)?;
    let at = entries
        .iter()
        .position(|e| e.is(manager, "Apply", &api_version, ""));
    let last_set = at.map(|i| entries[i].set.clone());
    let mine = match at {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.into(),
                operation: "Apply".into(),
                api_version: api_version.clone(),
                subresource: String::new(),
                time: None,
                set: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    entries[mine].set = config_set;
    entries[mine].api_version = api_version.clone();

    let mut new = prune(kind, &merged, &entries, last_set.as_ref()).map_err(invalid)?;
    drop_nulls(&mut new);
    let mut entries = take_changes(kind, &live, &new, entries, Some(mine), force)?;

    let changed = new != live;
    if let Some(e) = entries
        .iter_mut()
        .find(|e| e.is(manager, "Apply", &api_version, ""))
        .filter(|e| changed || e.time.is_none())
    {
        e.time = Some(now.to_string());
    }
    if manager == "kubectl" {
        sync_last_applied(&mut new, applied);
    }
    for e in &mut entries {
        e.set = e.set.difference(unowned());
    }
    encode_entries(&mut new, entries);
    Ok(new)
}

/// Removes what the applier applied last time and no longer applies, unless another manager
/// owns it (structured-merge-diff's `prune`).
fn prune(
    kind: Kind,
    merged: &Value,
    entries: &[Entry],
    last: Option<&FieldSet>,
) -> Result<Value, String> {
    let Some(last) = last.filter(|l| !l.is_empty()) else {
        return Ok(merged.clone());
    };
    let last = last.with_named_fields();
    let pruned = typed::remove(kind, merged, &last);
    // Add back what any manager (the applier's new configuration included) owns.
    let managed = entries
        .iter()
        .fold(FieldSet::new(), |acc, e| acc.union(&e.set))
        .with_named_fields();
    let merged_set = typed::field_set(kind, merged)?.with_named_fields();
    let pruned_set = typed::field_set(kind, &pruned)?.with_named_fields();
    let pruned = typed::remove(
        kind,
        merged,
        &merged_set.difference(&pruned_set.union(&managed)),
    );
    // Add back what the applier did not own (fields set by no one, or by updaters).
    let pruned_set = typed::field_set(kind, &pruned)?.with_named_fields();
    Ok(typed::remove(
        kind,
        merged,
        &merged_set.difference(&pruned_set).intersection(&last),
    ))
}

/// Moves the fields that changed from `old` to `new` away from the other managers
/// (structured-merge-diff's `update`): fields another manager owns that the write modified
/// or added are conflicts (an error unless `force`), removed fields are owned by no one.
fn take_changes(
    kind: Kind,
    old: &Value,
    new: &Value,
    entries: Vec<Entry>,
    writer: Option<usize>,
    force: bool,
) -> Result<Vec<Entry>, ApplyError> {
    let cmp = typed::compare(kind, old, new).map_err(ApplyError::Invalid)?;
    take_compared_changes(&cmp, entries, writer, force)
}

/// [`take_changes`] with the objects already compared.
fn take_compared_changes(
    cmp: &typed::Comparison,
    mut entries: Vec<Entry>,
    writer: Option<usize>,
    force: bool,
) -> Result<Vec<Entry>, ApplyError> {
    let changed = cmp.modified.union(&cmp.added);
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) == writer {
            continue;
        }
        let taken = e.set.intersection(&changed);
        if !taken.is_empty() {
            for path in taken.paths() {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation.clone(),
                    api_version: e.api_version.clone(),
                    subresource: e.subresource.clone(),
                    field: display_path(&path),
                });
            }
            if force {
                e.set = e.set.difference(&taken);
            }
        }
        e.set = e.set.difference(&cmp.removed);
    }
    if !force && !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    Ok(entries)
}

/// The manager of a write that names none (`?fieldManager=`): the User-Agent up to its first
/// `/` (`kubectl/v1.34.0 (linux/amd64)` is `kubectl`), at most 128 characters, as Kubernetes
/// derives it.
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    prefix.chars().take(128).collect()
}

/// Records a write that is not an apply (create, update, any other patch) by `manager`: the
/// fields it changed move to the manager's `Update` entry. `old` is the live object (Null for
/// a create), `new` the object to store; the result is `new` with its managedFields. As in
/// Kubernetes, managedFields sent in `new` replace the live ones (`[{}]` clears them).
pub fn record_update(kind: Kind, old: &Value, new: &Value, manager: &str, now: &str) -> Value {
    record_update_at(kind, old, new, manager, "", now)
}

/// [`record_update`] for a write to a subresource (`status`, `scale`): the live managedFields
/// are kept whatever `new` carries.
pub fn record_update_at(
    kind: Kind,
    old: &Value,
    new: &Value,
    manager: &str,
    subresource: &str,
    now: &str,
) -> Value {
    record_update_owned(kind, old, new.clone(), manager, subresource, now)
}

/// [`record_update_at`] taking the new object, which it returns with its managedFields.
pub fn record_update_owned(
    kind: Kind,
    old: &Value,
    mut new: Value,
    manager: &str,
    subresource: &str,
    now: &str,
) -> Value {
    let sent = take_managed_fields(&mut new);
    let live = managed_fields(old);
    let entries = if !subresource.is_empty() {
        None
    } else {
        match sent {
            None | Some(Value::Null) => None,
            Some(Value::Array(l)) if l.is_empty() => Some(Vec::new()),
            Some(Value::Array(l)) if l.len() == 1 && l[0] == json!({}) => Some(Vec::new()),
            // What a client read and sends back unchanged decodes to the live entries.
            Some(s) if live == Some(&s) => None,
            Some(s) => match decode_entries(Some(&s)) {
                Ok(e) if !e.is_empty() => Some(e),
                _ => None,
            },
        }
    };
    match entries {
        // The live entries: most writes touch few of them, which stay as stored.
        None => match super::record::record_live(kind, old, new, manager, subresource, now) {
            Ok(result) => result,
            Err(new) => {
                let entries = decode_entries(live).unwrap_or_default();
                record_entries(kind, old, new, entries, manager, subresource, now)
            }
        },
        Some(entries) => record_entries(kind, old, new, entries, manager, subresource, now),
    }
}

/// The object's managedFields, taken out of it.
fn take_managed_fields(obj: &mut Value) -> Option<Value> {
    match obj.get_mut("metadata") {
        Some(Value::Object(meta)) => meta.remove("managedFields"),
        _ => None,
    }
}

/// Records the write of `result` (without managedFields) over `old` with these entries as
/// the ones it starts from, every entry decoded.
pub(super) fn record_entries(
    kind: Kind,
    old: &Value,
    mut result: Value,
    mut entries: Vec<Entry>,
    manager: &str,
    subresource: &str,
    now: &str,
) -> Value {
    let api_version = kind.api_version();
    let live_entries = || decode_entries(managed_fields(old)).unwrap_or_default();
    let empty = Value::Object(Map::new());
    let old = if old.is_object() { old } else { &empty };
    entries.push(Entry {
        manager: CURRENT_OPERATION.into(),
        operation: "Update".into(),
        api_version: api_version.clone(),
        subresource: subresource.into(),
        time: None,
        set: FieldSet::new(),
    });
    let writer = entries.len() - 1;
    // One comparison serves both the other managers' losses and this manager's gains.
    let compared = typed::compare_without_managed_fields(kind, old, &result);
    let taken_entries = compared
        .as_ref()
        .map_err(|e| ApplyError::Invalid(e.clone()))
        .and_then(|cmp| take_compared_changes(cmp, entries, Some(writer), true));
    let (Ok(cmp), Ok(mut entries)) = (compared, taken_entries) else {
        // The objects cannot be compared (an item without its key): keep what was recorded.
        encode_entries(&mut result, live_entries());
        return result;
    };
    let unowned = unowned();
    let taken = cmp.modified.union(&cmp.added).difference(unowned);
    entries.pop();
    if !taken.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.is(manager, "Update", &api_version, subresource))
        {
            Some(e) => {
                e.set = e.set.union(&taken);
                e.time = Some(now.to_string());
            }
            None => entries.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version,
                subresource: subresource.into(),
                time: Some(now.to_string()),
                set: taken,
            }),
        }
    }
    for e in &mut entries {
        e.set = e.set.difference(unowned);
    }
    encode_entries(&mut result, entries);
    result
}

/// `kubectl apply --server-side` keeps an existing client-side apply annotation in step.
fn sync_last_applied(obj: &mut Value, applied: &Value) {
    let has = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .is_some();
    if !has {
        return;
    }
    let mut config = applied.clone();
    let mut no_annotations = false;
    if let Some(Value::Object(a)) = config.pointer_mut("/metadata/annotations") {
        a.remove(LAST_APPLIED);
        no_annotations = a.is_empty();
    }
    if let (true, Some(Value::Object(meta))) = (no_annotations, config.get_mut("metadata")) {
        meta.remove("annotations");
    }
    let text = config.to_string();
    if let Some(Value::Object(a)) = obj.pointer_mut("/metadata/annotations") {
        a.insert(LAST_APPLIED.into(), Value::String(text));
    }
}

//! Sets of field paths, as structured-merge-diff keeps them for server-side apply, and their
//! `FieldsV1` encoding in `metadata.managedFields`: `f:<field>` for a field, `k:{...}` for an
//! item of a map list (by its key fields), `v:<json>` for an item of a set, `i:<n>` for an
//! index, and `.` for "the node itself" when it also has children.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object.
    Field(String),
    /// An item of a map list: its key fields (sorted by name) with their values as JSON.
    Key(Vec<(String, String)>),
    /// An item of a set, as JSON.
    Value(String),
    /// An item by index (not used by the served kinds, kept for decoding).
    Index(usize),
}

impl PathElement {
    /// The `FieldsV1` key of the element.
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(n, v)| format!("{}:{v}", Value::String(n.clone())))
                    .collect();
                format!("k:{{{}}}", parts.join(","))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// The element of a `FieldsV1` key.
    pub fn decode(s: &str) -> Result<PathElement, String> {
        let bad = || format!("invalid managedFields path element {s:?}");
        let (tag, rest) = s.split_once(':').ok_or_else(bad)?;
        match tag {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "v" => {
                let v: Value = serde_json::from_str(rest).map_err(|_| bad())?;
                Ok(PathElement::Value(canonical(&v)))
            }
            "k" => {
                let v: Value = serde_json::from_str(rest).map_err(|_| bad())?;
                let Value::Object(m) = v else {
                    return Err(bad());
                };
                Ok(key_element(m.iter().map(|(k, v)| (k.clone(), v))))
            }
            "i" => rest.parse().map(PathElement::Index).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

/// A map list item's element from its key fields.
pub fn key_element<'a>(fields: impl IntoIterator<Item = (String, &'a Value)>) -> PathElement {
    let mut fields: Vec<(String, String)> =
        fields.into_iter().map(|(n, v)| (n, canonical(v))).collect();
    fields.sort();
    PathElement::Key(fields)
}

/// A set item's element.
pub fn value_element(v: &Value) -> PathElement {
    PathElement::Value(canonical(v))
}

/// The JSON of a scalar, one spelling per value.
fn canonical(v: &Value) -> String {
    v.to_string()
}

impl fmt::Display for PathElement {
    /// As Kubernetes prints paths in conflicts: `.spec.replicas`, `[name="web"]`, `[=x]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(n) => write!(f, ".{n}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(n, v)| format!("{n}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path's display (`.spec.template.spec.containers[name="web"].image`).
pub fn display_path(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of field paths as a tree: `members` are the paths that end at this node's
/// children, `children` the subtrees below them. No child is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    #[cfg(test)]
    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// Whether `pe` is a member (the path to it is in the set).
    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.members.contains(pe)
    }

    /// The paths below `pe`.
    pub fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                children.insert(pe.clone(), d);
            }
        }
        FieldSet { members, children }
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    children.insert(pe.clone(), i);
                }
            }
        }
        FieldSet { members, children }
    }

    /// The set with every field that has children also a member, so that removing what
    /// another set does not hold never removes a field whose descendants it holds
    /// (structured-merge-diff's `EnsureNamedFieldsAreMembers`).
    pub fn with_named_fields(&self) -> FieldSet {
        let mut members = self.members.clone();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if matches!(pe, PathElement::Field(_)) {
                members.insert(pe.clone());
            }
            children.insert(pe.clone(), c.with_named_fields());
        }
        FieldSet { members, children }
    }

    /// Every member path, in order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        // Members and children in one order, as structured-merge-diff iterates them.
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            prefix.push(pe.clone());
            if self.members.contains(pe) {
                out.push(prefix.clone());
            }
            if let Some(c) = self.children.get(pe) {
                c.collect(prefix, out);
            }
            prefix.pop();
        }
    }

    /// The `FieldsV1` JSON of the set.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode(false))
    }

    fn encode(&self, include_self: bool) -> Map<String, Value> {
        let mut m = Map::new();
        if include_self && !self.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for pe in &self.members {
            if !self.children.contains_key(pe) {
                m.insert(pe.encode(), Value::Object(Map::new()));
            }
        }
        for (pe, c) in &self.children {
            m.insert(
                pe.encode(),
                Value::Object(c.encode(self.members.contains(pe))),
            );
        }
        m
    }

    /// Whether any path of this set is a member of the set a `FieldsV1` JSON encodes, read
    /// straight from the JSON. The JSON must be in this encoding's own spelling (as
    /// [`FieldSet::to_fields_v1`] writes it, which is how stored managedFields are), since its
    /// keys are looked up by their encoding.
    pub fn meets_fields_v1(&self, fields: &Value) -> bool {
        let Value::Object(m) = fields else {
            return false;
        };
        self.members
            .iter()
            .any(|pe| m.get(&pe.encode()).is_some_and(is_member_mark))
            || self.children.iter().any(|(pe, c)| {
                m.get(&pe.encode())
                    .is_some_and(|sub| c.meets_fields_v1(sub))
            })
    }

    /// Whether every path of this set is a member of the set a `FieldsV1` JSON (in this
    /// encoding's own spelling) encodes.
    pub fn within_fields_v1(&self, fields: &Value) -> bool {
        let Value::Object(m) = fields else {
            return self.is_empty();
        };
        self.members
            .iter()
            .all(|pe| m.get(&pe.encode()).is_some_and(is_member_mark))
            && self.children.iter().all(|(pe, c)| {
                m.get(&pe.encode())
                    .is_some_and(|sub| c.within_fields_v1(sub))
            })
    }

    /// The set of a `FieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(m) = v else {
            return Err("fieldsV1 must be an object".into());
        };
        let mut set = FieldSet::new();
        for (k, child) in m {
            if k == "." {
                continue;
            }
            let pe = PathElement::decode(k)?;
            let Value::Object(cm) = child else {
                return Err(format!("the fieldsV1 entry {k:?} must be an object"));
            };
            if cm.is_empty() || cm.contains_key(".") {
                set.members.insert(pe.clone());
            }
            let sub = FieldSet::from_fields_v1(child)?;
            if !sub.is_empty() {
                set.children.insert(pe, sub);
            }
        }
        Ok(set)
    }
}

/// Whether a `FieldsV1` node marks its path as a member: a leaf, or `.` among its children.
fn is_member_mark(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.is_empty() || m.contains_key("."))
}

/// Whether a `FieldsV1` JSON encodes a non-empty set (every key but `.` names a path that is
/// a member or has members below it).
pub fn fields_v1_is_empty(fields: &Value) -> bool {
    !fields
        .as_object()
        .is_some_and(|m| m.keys().any(|k| k != "."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> PathElement {
        PathElement::Field(s.into())
    }

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}
                }}}
            },
            "f:finalizers": {"v:\"a/b\"": {}}
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        assert!(set.has(&[f("spec"), f("replicas")]));
        assert!(set.has(&[f("metadata"), f("labels")]));
        let web = key_element([("name".to_string(), &json!("web"))]);
        assert!(set.has(&[
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            web.clone()
        ]));
        assert_eq!(
            display_path(&[f("spec"), f("containers"), web, f("image")]),
            ".spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn algebra() {
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        assert_eq!(a.intersection(&b), b);
        let d = a.difference(&b);
        assert_eq!(d.paths(), vec![vec![f("spec"), f("paused")]]);
        assert_eq!(d.union(&b), a);
        assert!(a.difference(&a).is_empty());
        assert!(a.with_named_fields().has(&[f("spec")]));
    }
}

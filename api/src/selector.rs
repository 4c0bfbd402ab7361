//! Label selectors as Kubernetes defines them: the textual form of `-l` and `labelSelector=`
//! (`app=web`, `tier!=db`, `env in (prod,staging)`, `track notin (canary)`, `gpu`, `!legacy`)
//! and the structured `LabelSelector` of specs (`matchLabels` plus `matchExpressions`), both
//! compiled to one [`Selector`].

use crate::{LabelSelector, LabelSelectorRequirement};
use std::collections::{BTreeMap, BTreeSet};

/// One requirement on a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `k=v`, `k==v`, `k in (v1,v2)`.
    In(String, BTreeSet<String>),
    /// `k!=v`, `k notin (v1,v2)`: also true when the label is absent.
    NotIn(String, BTreeSet<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    DoesNotExist(String),
}

impl Requirement {
    pub fn key(&self) -> &str {
        match self {
            Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// Requirements that must all hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

impl Selector {
    /// Everything.
    pub fn everything() -> Selector {
        Selector(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    /// Parses the textual form, as `kubectl get -l` sends it.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let err = |reason: String| SelectorError {
            input: input.to_string(),
            reason,
        };
        let mut reqs = Vec::new();
        for part in split_top_level(input).map_err(&err)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part).map_err(&err)?);
        }
        Ok(Selector(reqs))
    }

    /// Compiles a spec's selector. A `None` selector selects nothing, as Kubernetes'
    /// `LabelSelectorAsSelector(nil)`; an empty one selects everything.
    pub fn from_label_selector(s: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut reqs: Vec<Requirement> = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::In(k.clone(), BTreeSet::from([v.clone()])))
            .collect();
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            reqs.push(expression(e).map_err(|reason| SelectorError {
                input: format!("matchExpressions[{i}]"),
                reason,
            })?);
        }
        Ok(Selector(reqs))
    }
}

/// A field selector (`fieldSelector=spec.nodeName=n1,status.phase!=Failed`): requirements on
/// fields, each `field=value`, `field==value` or `field!=value`, all of which must hold. Which
/// fields a resource may be selected by is the caller's to say ([`FieldSelector::parse`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    /// `=`/`==` (true) or `!=` (false).
    pub equal: bool,
    pub value: String,
}

impl FieldSelector {
    /// Parses `input`, refusing any field not in `supported` with Kubernetes' words
    /// (`field label not supported: spec.foo`).
    pub fn parse(input: &str, supported: &[&str]) -> Result<FieldSelector, SelectorError> {
        let err = |reason: String| SelectorError {
            input: input.to_string(),
            reason,
        };
        let mut reqs = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(err(format!(
                    "{part:?} is not field=value, field==value or field!=value"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(err(format!(
                    "field label not supported: {field} (supported: {})",
                    supported.join(", ")
                )));
            }
            reqs.push(FieldRequirement {
                field: field.to_string(),
                equal,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the fields (`value_of(field)`) satisfy every requirement.
    pub fn matches<'a>(&self, value_of: impl Fn(&str) -> &'a str) -> bool {
        self.0
            .iter()
            .all(|r| (value_of(&r.field) == r.value) == r.equal)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `labels` match the spec selector `s`; a malformed selector matches nothing (the
/// API refuses such selectors, so only stored garbage can be malformed).
pub fn label_selector_matches(s: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::from_label_selector(s).is_ok_and(|sel| sel.matches(labels))
}

/// Whether a spec selector selects nothing at all or everything: `{}`.
pub fn label_selector_is_empty(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

fn expression(e: &LabelSelectorRequirement) -> Result<Requirement, String> {
    let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
    let key = e.key.clone();
    match e.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => {
            Err(format!("operator {} needs at least one value", e.operator))
        }
        "In" => Ok(Requirement::In(key, values)),
        "NotIn" => Ok(Requirement::NotIn(key, values)),
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            Err(format!("operator {} takes no values", e.operator))
        }
        "Exists" => Ok(Requirement::Exists(key)),
        "DoesNotExist" => Ok(Requirement::DoesNotExist(key)),
        other => Err(format!(
            "operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
        )),
    }
}

/// Splits on the commas that are not inside `( )`.
fn split_top_level(input: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "a ')' has no '('".to_string())?
            }
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("a '(' is not closed".into());
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let key_ok = |k: &str| -> Result<String, String> {
        let k = k.trim();
        if k.is_empty() {
            return Err("a requirement has an empty key".into());
        }
        if let Some(why) = crate::validation::check_label_key(k) {
            return Err(format!("key {k:?}: {why}"));
        }
        Ok(k.to_string())
    };
    let value_ok = |v: &str| -> Result<String, String> {
        let v = v.trim();
        if let Some(why) = crate::validation::check_label_value(v) {
            return Err(format!("value {v:?}: {why}"));
        }
        Ok(v.to_string())
    };
    // Set-based forms first: `k in (a,b)` / `k notin (a,b)`.
    if let Some(open) = part.find('(') {
        let close = part
            .rfind(')')
            .filter(|c| *c == part.len() - 1)
            .ok_or_else(|| format!("{part:?}: a set must end with ')'"))?;
        let head = part[..open].trim();
        let (key, op) = head.rsplit_once(char::is_whitespace).ok_or_else(|| {
            format!("{part:?}: expected `key in (values)` or `key notin (values)`")
        })?;
        let values = part[open + 1..close]
            .split(',')
            .map(value_ok)
            .collect::<Result<BTreeSet<_>, _>>()?;
        let key = key_ok(key)?;
        return match op.trim() {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            other => Err(format!(
                "{part:?}: unknown operator {other:?}; use in or notin"
            )),
        };
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(
            key_ok(k)?,
            BTreeSet::from([value_ok(v)?]),
        ));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::In(key_ok(k)?, BTreeSet::from([value_ok(v)?])));
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key_ok(k)?));
    }
    if part.contains(char::is_whitespace) {
        return Err(format!(
            "{part:?}: expected key, !key, key=value, key!=value or key in (values)"
        ));
    }
    Ok(Requirement::Exists(key_ok(part)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_forms() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(Selector::parse("app=web").unwrap().matches(&l));
        assert!(Selector::parse("app==web,tier").unwrap().matches(&l));
        assert!(!Selector::parse("app!=web").unwrap().matches(&l));
        assert!(Selector::parse("!legacy").unwrap().matches(&l));
        assert!(Selector::parse("").unwrap().matches(&l));
        assert!(Selector::parse("=x").is_err());
    }

    #[test]
    fn set_forms() {
        let l = labels(&[("app", "web"), ("env", "prod")]);
        assert!(Selector::parse("app in (web)").unwrap().matches(&l));
        assert!(Selector::parse("app in (db, web),env").unwrap().matches(&l));
        assert!(
            !Selector::parse("env notin (prod,staging)")
                .unwrap()
                .matches(&l)
        );
        assert!(Selector::parse("track notin (canary)").unwrap().matches(&l));
        assert!(Selector::parse("app in (web").is_err());
        assert!(Selector::parse("app within (web)").is_err());
        assert!(Selector::parse("app web").is_err());
    }

    #[test]
    fn spec_selectors() {
        let s: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert!(label_selector_matches(
            &s,
            &labels(&[("app", "web"), ("env", "prod")])
        ));
        assert!(!label_selector_matches(
            &s,
            &labels(&[("app", "web"), ("env", "dev")])
        ));
        assert!(!label_selector_matches(
            &s,
            &labels(&[("app", "web"), ("env", "prod"), ("legacy", "")])
        ));
        let bad: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "env", "operator": "Near", "values": ["x"]}]
        }))
        .unwrap();
        assert!(Selector::from_label_selector(&bad).is_err());
        assert!(!label_selector_matches(&bad, &labels(&[("env", "x")])));
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse(
            "spec.nodeName=n1, status.phase!=Failed",
            &["spec.nodeName", "status.phase"],
        )
        .unwrap();
        let get = |node: &'static str, phase: &'static str| {
            move |field: &str| {
                if field == "spec.nodeName" {
                    node
                } else {
                    phase
                }
            }
        };
        assert!(f.matches(get("n1", "Running")));
        assert!(!f.matches(get("n1", "Failed")));
        assert!(!f.matches(get("n2", "Running")));
        let e = FieldSelector::parse("spec.foo=x", &["spec.nodeName"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("field label not supported: spec.foo"),
            "{e}"
        );
        assert!(FieldSelector::parse("spec.nodeName", &["spec.nodeName"]).is_err());
    }

    proptest! {
        /// `k in (v)` and `k=v` are the same requirement; `k notin (v)` is its negation
        /// whenever the label is present.
        #[test]
        fn forms_agree(k in "[a-z]{1,8}", v in "[a-z0-9]{1,8}", w in "[a-z0-9]{1,8}") {
            let l = labels(&[(&k, &w)]);
            let eq = Selector::parse(&format!("{k}={v}")).unwrap().matches(&l);
            let set = Selector::parse(&format!("{k} in ({v})")).unwrap().matches(&l);
            let not = Selector::parse(&format!("{k} notin ({v})")).unwrap().matches(&l);
            prop_assert_eq!(eq, set);
            prop_assert_eq!(eq, !not);
        }
    }
}

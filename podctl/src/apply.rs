//! `podctl apply -f`: server-side apply (`PATCH application/apply-patch+yaml`,
//! `fieldManager=podctl`) when the server supports it; otherwise a create, or a strategic
//! merge patch of the manifest, which merges lists by their keys (containers by name, ports
//! by containerPort, ...) and so never wipes what the manifest does not mention.

use crate::manifest::{self, Manifest};
use anyhow::{Context, Result, anyhow};
use hyper::Method;
use podd_client::{Client, Error, PatchType, content_type};
use serde_json::Value;
use std::path::Path;

/// The field manager podctl applies as.
pub const FIELD_MANAGER: &str = "podctl";

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Take over fields other managers own (server-side apply's `force=true`).
    pub force: bool,
    /// `dryRun=All`: the server answers what it would store, and stores nothing.
    pub dry_run: bool,
}

pub async fn apply(client: &Client, ns: &str, file: &Path, opts: Options) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let manifests = manifest::parse(&text, &file.display().to_string())?;
    for m in manifests {
        let verb = apply_one(client, ns, &m, opts)
            .await
            .with_context(|| format!("applying {} {}", m.kind.name(), m.name()))?;
        let suffix = if opts.dry_run {
            " (server dry run)"
        } else {
            ""
        };
        println!(
            "{}/{} {verb}{suffix}",
            m.kind.name().to_lowercase(),
            m.name()
        );
    }
    Ok(())
}

fn query(opts: Options, apply: bool) -> String {
    let mut q = Vec::new();
    if apply {
        q.push(format!("fieldManager={FIELD_MANAGER}"));
        if opts.force {
            q.push("force=true".into());
        }
    }
    if opts.dry_run {
        q.push("dryRun=All".into());
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// Whether a failed apply means the server does not do server-side apply (rather than that
/// the object is wrong).
fn apply_unsupported(e: &Error, existed: bool) -> bool {
    match e.code() {
        Some(405 | 415 | 501) => true,
        // A server without apply cannot create through PATCH; a missing namespace is a
        // missing namespace, apply or not.
        Some(404) => !existed && !e.message().unwrap_or("").starts_with("namespaces "),
        Some(400 | 422) => {
            let m = e.message().unwrap_or("").to_ascii_lowercase();
            m.contains("apply") && (m.contains("not supported") || m.contains("unsupported"))
        }
        _ => false,
    }
}

/// Creates or updates one object; answers what kubectl would print (`created`,
/// `configured`, `unchanged`).
async fn apply_one(client: &Client, ns: &str, m: &Manifest, opts: Options) -> Result<&'static str> {
    let mut doc = m.doc.clone();
    let ns = m.namespace().unwrap_or(ns).to_string();
    if m.kind.namespaced() {
        doc["metadata"]["namespace"] = Value::String(ns.clone());
    }
    let ns_opt = m.kind.namespaced().then_some(ns.as_str());
    let path = podd_client::resource_path(m.kind, ns_opt, Some(m.name()));
    let live: Option<Value> = match client
        .request::<Value>(Method::GET, &path, None, "application/json")
        .await
    {
        Ok(v) => Some(v),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(anyhow!(e)),
    };
    let rv = |v: &Value| v.pointer("/metadata/resourceVersion").cloned();

    // Server-side apply: JSON is YAML, so the manifest goes as is.
    let body = serde_json::to_vec(&doc)?;
    let applied = client
        .request::<Value>(
            Method::PATCH,
            &format!("{path}{}", query(opts, true)),
            Some(body),
            content_type(PatchType::Apply),
        )
        .await;
    match applied {
        Ok(after) => {
            return Ok(match &live {
                None => "created",
                Some(before) if rv(before) == rv(&after) => "unchanged",
                Some(_) => "configured",
            });
        }
        Err(e) if apply_unsupported(&e, live.is_some()) => {
            tracing::debug!(error = %e, "server-side apply unsupported; merging");
        }
        Err(e) => return Err(anyhow!(e)),
    }

    // Client-side: create, or a strategic merge of the manifest into the live object.
    if let Some(o) = doc.as_object_mut() {
        o.remove("status");
    }
    match live {
        None => {
            let coll = podd_client::resource_path(m.kind, ns_opt, None);
            client
                .request::<Value>(
                    Method::POST,
                    &format!("{coll}{}", query(opts, false)),
                    Some(serde_json::to_vec(&doc)?),
                    "application/json",
                )
                .await?;
            Ok("created")
        }
        Some(live) if is_subset(&doc, &live) => Ok("unchanged"),
        Some(_) => {
            client
                .request::<Value>(
                    Method::PATCH,
                    &format!("{path}{}", query(opts, false)),
                    Some(serde_json::to_vec(&doc)?),
                    content_type(PatchType::Strategic),
                )
                .await?;
            Ok("configured")
        }
    }
}

/// Whether every field `given` sets has that value in `live` (lists item by item).
fn is_subset(given: &Value, live: &Value) -> bool {
    match (given, live) {
        (Value::Object(g), Value::Object(l)) => g
            .iter()
            .all(|(k, gv)| gv.is_null() || l.get(k).is_some_and(|lv| is_subset(gv, lv))),
        (Value::Array(g), Value::Array(l)) => {
            g.len() == l.len() && g.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subsets_ignore_server_set_fields() {
        let manifest = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "a", "image": "busybox"}]}}}});
        let live = json!({"metadata": {"uid": "u"}, "spec": {"replicas": 2, "strategy": {},
            "template": {"spec": {"containers": [
                {"name": "a", "image": "busybox", "imagePullPolicy": "Always"}]}}},
            "status": {}});
        assert!(is_subset(&manifest, &live));
        let changed = json!({"spec": {"replicas": 3}});
        assert!(!is_subset(&changed, &live));
    }

    #[test]
    fn queries() {
        assert_eq!(query(Options::default(), true), "?fieldManager=podctl");
        let o = Options {
            force: true,
            dry_run: true,
        };
        assert_eq!(query(o, true), "?fieldManager=podctl&force=true&dryRun=All");
        assert_eq!(query(o, false), "?dryRun=All");
    }
}

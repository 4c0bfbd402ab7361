//! The namespace controller: empties a deleted namespace, then lets it go.
//!
//! A deleted Namespace is Terminating (the registry marks it, and refuses new content in
//! it) and kept by the `kubernetes` entry of its spec.finalizers. This controller deletes
//! every namespaced object in it, of every served kind (pods with their grace period, others
//! with their own finalizers), waits until the cache has none left, and then writes
//! spec.finalizers without `kubernetes` through the `finalize` subresource; with no
//! finalizer left the registry removes the Namespace. Its status conditions say what is left,
//! as Kubernetes' namespace controller writes them.

use super::{ControllerConfig, bounded};
use crate::registry::{Registry, Subresource, namespace_is_terminating};
use podd_api::validation::NAMESPACE_FINALIZER;
use podd_api::{Kind, Namespace, NamespaceCondition, ObjectMeta, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often terminating namespaces are looked at again while they empty.
const RECHECK: Duration = Duration::from_millis(500);

/// One object left in a terminating namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub kind: Kind,
    pub name: String,
    /// Already being deleted (deletionTimestamp set).
    pub terminating: bool,
    /// Its metadata.finalizers.
    pub finalizers: Vec<String>,
}

/// What to do for one terminating namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The objects to delete: those not being deleted yet.
    pub delete: Vec<(Kind, String)>,
    /// The status conditions the namespace should show.
    pub conditions: Vec<NamespaceCondition>,
    /// Nothing is left: remove the `kubernetes` finalizer.
    pub finalize: bool,
}

/// A resource as Kubernetes' messages name it: `pods.`, `deployments.apps`.
fn group_resource(kind: Kind) -> String {
    format!("{}.{}", kind.plural(), kind.group())
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
    }
}

/// The plan for `ns` with `content` left in it and the deletions of the last round that
/// failed (`failures`); None when the namespace is not being deleted or no longer holds the
/// `kubernetes` finalizer.
pub fn plan(ns: &Namespace, content: &[Content], failures: &[String]) -> Option<Plan> {
    if !namespace_is_terminating(ns) {
        return None;
    }
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.as_ref());
    if !finalizers.is_some_and(|f| f.iter().any(|f| f == NAMESPACE_FINALIZER)) {
        return None;
    }
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    for c in content {
        *remaining.entry(group_resource(c.kind)).or_default() += 1;
        for f in &c.finalizers {
            *held.entry(f.clone()).or_default() += 1;
        }
    }
    let listed = |m: &BTreeMap<String, usize>, sep: &str| {
        m.iter()
            .map(|(what, n)| format!("{what}{sep}{n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut conditions = vec![
        condition(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
    ];
    conditions.push(if failures.is_empty() {
        condition(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        )
    } else {
        condition(
            "NamespaceDeletionContentFailure",
            true,
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                failures.len(),
                failures.join(", ")
            ),
        )
    });
    conditions.push(if remaining.is_empty() {
        condition(
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        condition(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!(
                "Some resources are remaining: {}",
                listed(&remaining, " has ")
            ),
        )
    });
    conditions.push(if held.is_empty() {
        condition(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        condition(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                listed(&held, " in ")
            ),
        )
    });
    Some(Plan {
        delete: content
            .iter()
            .filter(|c| !c.terminating)
            .map(|c| (c.kind, c.name.clone()))
            .collect(),
        conditions,
        finalize: content.is_empty(),
    })
}

/// The metadata of any object, decoded without the rest.
#[derive(serde::Deserialize)]
struct MetaOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

/// Everything the cache holds in namespace `ns`, of every namespaced kind.
fn content_of(registry: &Registry, ns: &str) -> Vec<Content> {
    let mut out = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
        let (items, _) = registry.cache().snapshot(kind, &kind.key_prefix(Some(ns)));
        for o in items {
            let meta = o
                .decode::<MetaOnly>()
                .map(|m| m.metadata)
                .unwrap_or_default();
            out.push(Content {
                kind,
                name: o.name.clone(),
                terminating: meta.deletion_timestamp.is_some(),
                finalizers: meta.finalizers.unwrap_or_default(),
            });
        }
    }
    out
}

/// The conditions as they should be written: a condition's lastTransitionTime moves only
/// when its status does.
fn with_times(old: &Namespace, new: Vec<NamespaceCondition>) -> Vec<NamespaceCondition> {
    let old_conds = old.status.as_ref().and_then(|s| s.conditions.as_ref());
    new.into_iter()
        .map(|mut c| {
            let prev = old_conds.into_iter().flatten().find(|o| o.type_ == c.type_);
            c.last_transition_time = Some(super::transition_time(
                prev.map(|p| (p.status.as_str(), p.last_transition_time.as_ref())),
                &c.status,
            ));
            c
        })
        .collect()
}

/// Whether the namespace already shows these conditions (times aside).
fn shows(old: &Namespace, conds: &[NamespaceCondition]) -> bool {
    let old_conds = old
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let phase = old.status.as_ref().and_then(|s| s.phase.as_deref());
    phase == Some("Terminating")
        && conds.iter().all(|c| {
            old_conds.iter().any(|o| {
                o.type_ == c.type_
                    && o.status == c.status
                    && o.reason == c.reason
                    && o.message == c.message
            })
        })
}

/// One round for one terminating namespace; returns the deletions that failed.
async fn reconcile(
    registry: &Arc<Registry>,
    ns: &Namespace,
    failures: &[String],
    concurrency: usize,
) -> Vec<String> {
    let name = ns.name_any();
    let content = content_of(registry, &name);
    let Some(plan) = plan(ns, &content, failures) else {
        return Vec::new();
    };
    if !shows(ns, &plan.conditions) {
        let patch = serde_json::json!({"status": {
            "phase": "Terminating",
            "conditions": with_times(ns, plan.conditions.clone()),
        }});
        if let Err(e) =
            super::patch_status_strategic(registry, Kind::Namespace, "", &name, patch).await
        {
            tracing::debug!(namespace = %name, error = %e, "could not write the namespace's status");
        }
    }
    let deletes: Vec<_> = plan
        .delete
        .iter()
        .map(|(kind, obj)| {
            let (kind, obj, ns) = (*kind, obj.clone(), name.clone());
            async move {
                let r = registry.delete(kind, &ns, &obj, None).await;
                (kind, obj, r)
            }
        })
        .collect();
    let mut failed = Vec::new();
    for (kind, obj, r) in bounded(deletes, concurrency).await {
        match r {
            Ok(_) => {}
            Err(e) if e.code() == 404 => {}
            Err(e) => {
                tracing::debug!(namespace = %name, kind = kind.name(), name = %obj, error = %e, "could not delete namespace content");
                failed.push(format!("{} {obj}: {e}", kind.plural()));
            }
        }
    }
    if plan.finalize {
        let keep: Vec<String> = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != NAMESPACE_FINALIZER)
            .collect();
        let body = serde_json::json!({"metadata": {"name": name}, "spec": {"finalizers": keep}});
        match registry
            .update(Kind::Namespace, "", &name, body, Subresource::Finalize)
            .await
        {
            Ok(_) => tracing::info!(namespace = %name, "namespace emptied and finalized"),
            Err(e) if e.code() == 404 => {}
            Err(e) => {
                tracing::warn!(namespace = %name, error = %e, "could not finalize the namespace")
            }
        }
    }
    failed
}

pub async fn run(
    registry: Arc<Registry>,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut events = registry.cache().subscribe_now(Kind::Namespace);
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        // The cache must have seen every write before "nothing left" is believed.
        if let Ok(rev) = registry.store().revision().await {
            registry.cache().wait_for(rev, Duration::from_secs(2)).await;
        }
        let terminating: Vec<Namespace> = registry
            .cached::<Namespace>(None)
            .into_iter()
            .filter(namespace_is_terminating)
            .collect();
        failures.retain(|n, _| terminating.iter().any(|t| t.name_any() == *n));
        for ns in &terminating {
            let prev = failures.remove(&ns.name_any()).unwrap_or_default();
            let failed = reconcile(&registry, ns, &prev, config.write_concurrency).await;
            if !failed.is_empty() {
                failures.insert(ns.name_any(), failed);
            }
        }
        let wait = if terminating.is_empty() {
            config.resync
        } else {
            RECHECK
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            r = super::next_event(&mut events) => {
                if r.is_err() {
                    events = registry.cache().subscribe_now(Kind::Namespace);
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(deleted: bool, finalizers: &[&str]) -> Namespace {
        let mut v = json!({
            "metadata": {"name": "team"},
            "spec": {"finalizers": finalizers},
            "status": {"phase": if deleted { "Terminating" } else { "Active" }},
        });
        if deleted {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    fn obj(kind: Kind, name: &str, terminating: bool, finalizers: &[&str]) -> Content {
        Content {
            kind,
            name: name.into(),
            terminating,
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn cond<'a>(p: &'a Plan, t: &str) -> &'a NamespaceCondition {
        p.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn active_namespaces_are_left_alone() {
        assert_eq!(plan(&ns(false, &["kubernetes"]), &[], &[]), None);
    }

    #[test]
    fn finalized_namespaces_are_left_alone() {
        assert_eq!(plan(&ns(true, &[]), &[], &[]), None);
        assert_eq!(plan(&ns(true, &["example.com/other"]), &[], &[]), None);
    }

    #[test]
    fn content_is_deleted_once_and_counted() {
        let content = [
            obj(Kind::Pod, "a", true, &[]),
            obj(Kind::Pod, "b", false, &[]),
            obj(Kind::Deployment, "web", false, &["example.com/keep"]),
        ];
        let p = plan(&ns(true, &["kubernetes"]), &content, &[]).unwrap();
        assert_eq!(
            p.delete,
            vec![
                (Kind::Pod, "b".to_string()),
                (Kind::Deployment, "web".to_string())
            ]
        );
        assert!(!p.finalize);
        let remaining = cond(&p, "NamespaceContentRemaining");
        assert_eq!(remaining.status, "True");
        assert_eq!(
            remaining.message.as_deref(),
            Some(
                "Some resources are remaining: deployments.apps has 1 resource instances, \
                 pods. has 2 resource instances"
            )
        );
        let held = cond(&p, "NamespaceFinalizersRemaining");
        assert_eq!(held.status, "True");
        assert_eq!(
            held.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/keep in 1 \
                 resource instances"
            )
        );
        assert_eq!(cond(&p, "NamespaceDeletionContentFailure").status, "False");
    }

    #[test]
    fn an_empty_namespace_is_finalized() {
        let p = plan(&ns(true, &["kubernetes"]), &[], &[]).unwrap();
        assert!(p.finalize);
        assert!(p.delete.is_empty());
        assert_eq!(cond(&p, "NamespaceContentRemaining").status, "False");
        assert_eq!(cond(&p, "NamespaceFinalizersRemaining").status, "False");
    }

    #[test]
    fn failed_deletions_show_in_the_content_failure() {
        let content = [obj(Kind::Service, "s", false, &[])];
        let p = plan(
            &ns(true, &["kubernetes"]),
            &content,
            &["services s: store: timeout".to_string()],
        )
        .unwrap();
        let c = cond(&p, "NamespaceDeletionContentFailure");
        assert_eq!(c.status, "True");
        assert_eq!(c.reason.as_deref(), Some("ContentDeletionFailed"));
    }
}

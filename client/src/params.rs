//! Query parameters of lists, watches, writes, patches and deletes, as Kubernetes names them.

use podd_api::patch::PatchType;

/// What a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// `app=web,tier!=db` or set-based: `app in (web,api),!canary`.
    pub label_selector: Option<String>,
    /// `spec.nodeName=node-1`.
    pub field_selector: Option<String>,
    /// Ends a watch after this many seconds.
    pub timeout_seconds: Option<u64>,
    /// Pages a list: at most this many items, with a `continue` token for the rest.
    pub limit: Option<u32>,
    /// The `continue` token of the previous page.
    pub continue_token: Option<String>,
    /// Asks a watch for BOOKMARK events (progress notifications carrying a resourceVersion).
    pub allow_bookmarks: bool,
}

impl ListParams {
    pub fn labels(s: &str) -> ListParams {
        ListParams {
            label_selector: Some(s.to_string()),
            ..ListParams::default()
        }
    }

    pub fn fields(s: &str) -> ListParams {
        ListParams {
            field_selector: Some(s.to_string()),
            ..ListParams::default()
        }
    }

    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(l) = &self.label_selector {
            q.push(("labelSelector", l.clone()));
        }
        if let Some(f) = &self.field_selector {
            q.push(("fieldSelector", f.clone()));
        }
        if let Some(t) = self.timeout_seconds {
            q.push(("timeoutSeconds", t.to_string()));
        }
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(c) = &self.continue_token {
            q.push(("continue", c.clone()));
        }
        q
    }
}

/// Options of create and update.
#[derive(Debug, Clone, Default)]
pub struct PostParams {
    /// `dryRun=All`: the server answers what it would store, and stores nothing.
    pub dry_run: bool,
    pub field_manager: Option<String>,
}

impl PostParams {
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if self.dry_run {
            q.push(("dryRun", "All".into()));
        }
        if let Some(m) = &self.field_manager {
            q.push(("fieldManager", m.clone()));
        }
        q
    }
}

/// A patch and its type (the type picks the Content-Type the server reads it by).
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub kind: PatchType,
    /// The patch document: an object for merge, strategic and apply; an array of operations
    /// for JSON patch.
    pub body: serde_json::Value,
}

impl Patch {
    /// RFC 7386 JSON merge patch: lists are replaced whole.
    pub fn merge(body: serde_json::Value) -> Patch {
        Patch {
            kind: PatchType::Merge,
            body,
        }
    }

    /// Kubernetes' strategic merge patch: lists with merge keys (containers by name, env by
    /// name, ...) are merged item by item.
    pub fn strategic(body: serde_json::Value) -> Patch {
        Patch {
            kind: PatchType::Strategic,
            body,
        }
    }

    /// RFC 6902 JSON patch: `[{"op":"replace","path":"/spec/replicas","value":3}]`.
    pub fn json(ops: serde_json::Value) -> Patch {
        Patch {
            kind: PatchType::Json,
            body: ops,
        }
    }

    /// Server-side apply of a whole manifest (needs `PatchParams::field_manager`).
    pub fn apply(manifest: serde_json::Value) -> Patch {
        Patch {
            kind: PatchType::Apply,
            body: manifest,
        }
    }

    pub fn content_type(&self) -> &'static str {
        content_type(self.kind)
    }
}

/// The Content-Type of a patch type.
pub fn content_type(kind: PatchType) -> &'static str {
    match kind {
        PatchType::Merge => "application/merge-patch+json",
        PatchType::Json => "application/json-patch+json",
        PatchType::Strategic => "application/strategic-merge-patch+json",
        PatchType::Apply => "application/apply-patch+yaml",
    }
}

/// Options of a patch.
#[derive(Debug, Clone, Default)]
pub struct PatchParams {
    pub dry_run: bool,
    /// Required by server-side apply; names the writer in `managedFields`.
    pub field_manager: Option<String>,
    /// Server-side apply: take over fields other managers own instead of a 409 Conflict.
    pub force: bool,
}

impl PatchParams {
    /// Server-side apply as `manager`.
    pub fn apply(manager: &str) -> PatchParams {
        PatchParams {
            field_manager: Some(manager.to_string()),
            ..PatchParams::default()
        }
    }

    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if self.dry_run {
            q.push(("dryRun", "All".into()));
        }
        if let Some(m) = &self.field_manager {
            q.push(("fieldManager", m.clone()));
        }
        if self.force {
            q.push(("force", "true".into()));
        }
        q
    }
}

/// How a delete treats what the object owns (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Owned objects are deleted in the background (the default for most kinds).
    Background,
    /// The owner is removed only after what it owns.
    Foreground,
    /// Owned objects are kept, their ownerReferences to the deleted owner removed.
    Orphan,
}

impl Propagation {
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Background => "Background",
            Propagation::Foreground => "Foreground",
            Propagation::Orphan => "Orphan",
        }
    }
}

/// Options of a delete, sent as a meta/v1 DeleteOptions body.
#[derive(Debug, Clone, Default)]
pub struct DeleteParams {
    pub propagation: Option<Propagation>,
    /// 0 deletes at once; None leaves the object's own grace period.
    pub grace_period_seconds: Option<i64>,
    /// Deletes only if the object still has this uid.
    pub precondition_uid: Option<String>,
    /// Deletes only if the object is still at this resourceVersion.
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteParams {
    pub fn orphan() -> DeleteParams {
        DeleteParams {
            propagation: Some(Propagation::Orphan),
            ..DeleteParams::default()
        }
    }

    pub fn foreground() -> DeleteParams {
        DeleteParams {
            propagation: Some(Propagation::Foreground),
            ..DeleteParams::default()
        }
    }

    /// The DeleteOptions body.
    pub fn options(
        &self,
    ) -> podd_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions {
        use podd_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
            DeleteOptions, Preconditions,
        };
        let preconditions = (self.precondition_uid.is_some()
            || self.precondition_resource_version.is_some())
        .then(|| Preconditions {
            uid: self.precondition_uid.clone(),
            resource_version: self.precondition_resource_version.clone(),
        });
        DeleteOptions {
            api_version: Some("v1".into()),
            kind: Some("DeleteOptions".into()),
            propagation_policy: self.propagation.map(|p| p.as_str().to_string()),
            grace_period_seconds: self.grace_period_seconds,
            preconditions,
            dry_run: self.dry_run.then(|| vec!["All".to_string()]),
            ..DeleteOptions::default()
        }
    }
}

//! The registry: the API's semantics over the store, independent of HTTP.
//!
//! Objects are stored as their k8s-openapi type's JSON under `Kind::key(ns, name)`; their
//! resourceVersion is the store's mod_revision (never stored inside the value). Every write
//! goes through the kind's type ([`admit`]): decoded (unknown fields reported or refused as
//! `fieldValidation` says), defaulted and validated, so what is stored is what the type holds.
//! Create sets uid and creationTimestamp, fills generateName, allocates Service clusterIPs and
//! node podCIDRs; updates check resourceVersion, keep what is immutable, bump generation when
//! the spec changes, and skip writes that change nothing (so no watch event). Deletes honour
//! preconditions, finalizers, graceful pod deletion and the propagation policy.

use crate::alloc::{AllocError, RangeAllocator};
use crate::cache::{CachedObject, WatchCache, set_resource_version};
use crate::error::ApiError;
use crate::leases::{LeaseTable, is_lease_renewal};
use podd_api::patch::PatchType;
use podd_api::schema::FieldValidation;
use podd_api::selector::Selector;
use podd_api::{FieldError, Kind, Object, ValidationErrors};
use podd_store::{Revision, Store, StoreError};
use rand::Rng;
use serde_json::Value;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use podd_api::patch::merge_patch;

/// The namespace node heartbeat Leases live in.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The namespaces that exist from the start and cannot be deleted.
pub const INITIAL_NAMESPACES: [&str; 4] = [
    "default",
    "kube-system",
    "kube-public",
    NODE_LEASE_NAMESPACE,
];

/// The finalizer a Foreground delete puts on the owner while its dependents go.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
    Scale,
    /// A Namespace's `finalize`: only `spec.finalizers` is written.
    Finalize,
}

/// Field selectors: `metadata.name`, `metadata.namespace`, `spec.nodeName` and
/// `status.phase` (pods), and Kubernetes' event fields (`involvedObject.kind`, `reason`,
/// `type`, ...: `kubectl events --for`), with `=`, `==` and `!=`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(podd_api::selector::FieldSelector);

/// The event fields Kubernetes selects on, and where each is in an Event.
const EVENT_FIELDS: [(&str, &str); 11] = [
    ("involvedObject.kind", "/involvedObject/kind"),
    ("involvedObject.namespace", "/involvedObject/namespace"),
    ("involvedObject.name", "/involvedObject/name"),
    ("involvedObject.uid", "/involvedObject/uid"),
    ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
    (
        "involvedObject.resourceVersion",
        "/involvedObject/resourceVersion",
    ),
    ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
    ("reason", "/reason"),
    ("reportingComponent", "/reportingComponent"),
    ("source", "/source/component"),
    ("type", "/type"),
];

impl FieldSelector {
    pub const FIELDS: [&str; 15] = [
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "status.phase",
        EVENT_FIELDS[0].0,
        EVENT_FIELDS[1].0,
        EVENT_FIELDS[2].0,
        EVENT_FIELDS[3].0,
        EVENT_FIELDS[4].0,
        EVENT_FIELDS[5].0,
        EVENT_FIELDS[6].0,
        EVENT_FIELDS[7].0,
        EVENT_FIELDS[8].0,
        EVENT_FIELDS[9].0,
        EVENT_FIELDS[10].0,
    ];

    pub fn parse(s: &str) -> Result<FieldSelector, ApiError> {
        podd_api::selector::FieldSelector::parse(s, &Self::FIELDS)
            .map(FieldSelector)
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    pub fn matches(&self, o: &CachedObject) -> bool {
        // Event fields are read from the object itself, only when selected on.
        let needs_json = self
            .0
            .0
            .iter()
            .any(|r| EVENT_FIELDS.iter().any(|(f, _)| *f == r.field));
        let json: serde_json::Value = if needs_json {
            serde_json::from_slice(&o.json).unwrap_or_default()
        } else {
            serde_json::Value::Null
        };
        self.0.matches(|f| match f {
            "spec.nodeName" => &o.node_name,
            "metadata.name" => &o.name,
            "status.phase" => &o.phase,
            "metadata.namespace" => &o.namespace,
            _ => EVENT_FIELDS
                .iter()
                .find(|(name, _)| *name == f)
                .and_then(|(_, pointer)| json.pointer(pointer))
                .and_then(serde_json::Value::as_str)
                .unwrap_or(""),
        })
    }
}

/// What a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub labels: Option<Selector>,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, o: &CachedObject) -> bool {
        self.labels.as_ref().is_none_or(|s| s.matches(&o.labels)) && self.fields.matches(o)
    }
}

/// How a list is read: `limit`/`continue` and `resourceVersion`/`resourceVersionMatch`.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub filter: Filter,
    pub limit: Option<usize>,
    /// The `continue` token of the previous page.
    pub continue_token: Option<String>,
    /// `""` (most recent), `"0"` (any), or a revision.
    pub resource_version: String,
    /// `NotOlderThan` or `Exact` (with a resourceVersion).
    pub resource_version_match: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Arc<CachedObject>>,
    pub revision: Revision,
    /// The token for the next page, when there is one.
    pub continue_token: Option<String>,
    /// How many matching objects follow this page.
    pub remaining: Option<usize>,
}

/// What a continue token holds: the list's revision and the last key served.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, last_key: &str) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: last_key.into(),
    };
    hex::encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    hex::decode(s)
        .ok()
        .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
        .ok_or_else(|| ApiError::BadRequest(format!("continue key {s:?} is not valid")))
}

/// How a write is made: `dryRun=All`, `fieldValidation`, and server-side apply's
/// `fieldManager` and `force`.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub field_manager: Option<String>,
    pub force: bool,
    /// The request's User-Agent: the field manager of a write that names none
    /// ([`WriteOptions::manager`]).
    pub user_agent: String,
    /// The version the request speaks when it is not the kind's stored one
    /// (`v1` for autoscaling/v1 HorizontalPodAutoscalers); empty for the stored version.
    /// Bodies are converted in, answers out, and patches apply to the object in this
    /// version, as Kubernetes does ([`podd_api::convert`]).
    pub version: String,
}

/// The manager of writes that name none and come with no User-Agent: the in-process
/// controllers.
pub const INTERNAL_MANAGER: &str = "podd-control-plane";

impl WriteOptions {
    /// Whether the request speaks another version than the stored one.
    fn converts(&self, kind: Kind) -> bool {
        !self.version.is_empty() && !podd_api::convert::is_stored(kind, &self.version)
    }

    /// A body sent in the request's version, as stored.
    fn body_in(&self, kind: Kind, body: Value) -> Result<Value, ApiError> {
        if !self.converts(kind) {
            return Ok(body);
        }
        podd_api::convert::from_version(kind, &self.version, &body)
            .map_err(|e| ApiError::BadRequest(format!("the body does not convert: {e}")))
    }

    /// A write's answer in the request's version.
    fn answer(&self, kind: Kind, w: Result<Written, ApiError>) -> Result<Written, ApiError> {
        if !self.converts(kind) {
            return w;
        }
        w.map(|mut w| {
            w.object = podd_api::convert::to_version(kind, &self.version, &w.object);
            w
        })
    }

    /// The field manager a non-apply write is recorded under: `?fieldManager=`, else the
    /// User-Agent up to its first `/` as kube-apiserver derives it, else
    /// [`INTERNAL_MANAGER`].
    pub fn manager(&self) -> String {
        if let Some(m) = self.field_manager.as_deref().filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        let m = podd_api::patch::manager_from_user_agent(&self.user_agent);
        if m.is_empty() {
            INTERNAL_MANAGER.to_string()
        } else {
            m
        }
    }
}

impl Subresource {
    /// The `subresource` of a managedFields entry (empty for the main resource).
    fn managed_name(self) -> &'static str {
        match self {
            Subresource::Main => "",
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Finalize => "finalize",
        }
    }
}

/// What a write returns: the object (as stored, or as it would be with dry run) and the
/// warnings for the client (`Warning:` headers).
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// A delete's `propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// The owner goes at once and its dependents after it (the default).
    #[default]
    Background,
    /// The dependents go first; the owner waits with a `foregroundDeletion` finalizer.
    Foreground,
    /// The dependents stay, without the owner's reference.
    Orphan,
}

impl Propagation {
    pub fn parse(s: &str) -> Result<Propagation, ApiError> {
        match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::BadRequest(format!(
                "propagationPolicy {other:?} is not supported: use Background, Foreground or Orphan"
            ))),
        }
    }
}

/// A delete's options (metav1 DeleteOptions).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    /// None: the object's own (a pod's terminationGracePeriodSeconds); 0 deletes at once.
    pub grace_period_seconds: Option<i64>,
    pub precondition_rv: Option<Revision>,
    pub precondition_uid: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub service_cidr: String,
    /// Reserved in the service range: only a Service that asks for it by address gets it.
    pub dns_vip: Ipv4Addr,
    pub cluster_cidr: String,
    pub node_cidr_prefix: u8,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            service_cidr: "10.96.0.0/12".into(),
            dns_vip: Ipv4Addr::new(10, 96, 0, 10),
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_prefix: 24,
        }
    }
}

pub struct Registry {
    /// Every mutating call through the registry (HTTP and in-process controllers).
    pub mutating_latency: crate::metrics::Latencies,
    /// Mutating calls as the HTTP server saw them (parsing and encoding included).
    pub http_mutating_latency: crate::metrics::Latencies,
    /// What `/metrics` exports (scheduling latency and the like).
    pub metrics: crate::metrics::ServerMetrics,
    store: Arc<dyn Store>,
    cache: Arc<WatchCache>,
    service_ips: RangeAllocator,
    pod_cidrs: RangeAllocator,
    leases: LeaseTable,
    /// The agents' newest usage reports (metrics.k8s.io, the autoscaler).
    pub usage: crate::usage::UsageTable,
}

fn alloc_err(e: AllocError, kind: Kind, name: &str, field: &str) -> ApiError {
    match e {
        AllocError::Store(s) => ApiError::Store(s),
        other => ApiError::Invalid {
            kind,
            name: name.to_string(),
            errors: ValidationErrors(vec![FieldError::invalid(field, "", other)]),
        },
    }
}

fn invalid(kind: Kind, name: &str, e: FieldError) -> ApiError {
    ApiError::Invalid {
        kind,
        name: name.to_string(),
        errors: ValidationErrors(vec![e]),
    }
}

fn new_uid() -> String {
    let b: u128 = rand::thread_rng().r#gen();
    let b = (b & !(0xf << 76)) | (0x4 << 76); // version 4
    let b = (b & !(0x3 << 62)) | (0x2 << 62); // variant
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Kubernetes' generateName suffix alphabet: no vowels, no look-alikes.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Now, as a metav1 Time on the wire (through the type's own serializer).
fn now_time() -> Value {
    serde_json::to_value(podd_api::Time(podd_api::jiff::Timestamp::now())).unwrap_or_default()
}

/// Now as RFC 3339, for managedFields times.
fn now_rfc3339() -> String {
    now_time().as_str().unwrap_or_default().to_string()
}

/// How [`Registry::write`] records field ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    /// A non-apply write of this subresource: an `Update` entry for the write's manager.
    Update(Subresource),
    /// A server-side apply, which has recorded its managedFields itself.
    Applied,
    /// Bookkeeping (a node lease renewal): managedFields as they are.
    Untracked,
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn meta_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(serde_json::Map::new());
    }
    let obj = v.as_object_mut().expect("made an object above");
    let m = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !m.is_object() {
        *m = Value::Object(serde_json::Map::new());
    }
    m.as_object_mut().expect("made an object above")
}

fn spec_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    let obj = v.as_object_mut().expect("objects only");
    let s = obj
        .entry("spec")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !s.is_object() {
        *s = Value::Object(serde_json::Map::new());
    }
    s.as_object_mut().expect("made an object above")
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(|f| serde_json::from_value(f.clone()).ok())
        .unwrap_or_default()
}

fn is_terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// A Namespace's `spec.finalizers` (the namespace controller's `kubernetes`).
fn spec_finalizers(v: &Value) -> &[Value] {
    v.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether a Namespace is being deleted (its deletionTimestamp, or phase Terminating).
pub fn namespace_is_terminating(n: &podd_api::Namespace) -> bool {
    n.metadata.deletion_timestamp.is_some()
        || n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Whether finalizers hold a deleted object: its metadata.finalizers, and a Namespace's
/// spec.finalizers too.
fn held_by_finalizers(kind: Kind, v: &Value) -> bool {
    !finalizers(v).is_empty() || (kind == Kind::Namespace && !spec_finalizers(v).is_empty())
}

/// The typed round trip of one write: decode into the kind's type (every type error at once,
/// unknown fields as `fieldValidation` says), default, validate, and back to the JSON that is
/// stored (with kind and apiVersion, without resourceVersion). Returns the warnings.
pub fn admit(
    kind: Kind,
    name: &str,
    v: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    fn typed<T: Object>(
        name: &str,
        v: Value,
        fv: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let kind = T::API_KIND;
        let as_invalid = |errors| ApiError::Invalid {
            kind,
            name: name.to_string(),
            errors,
        };
        let (mut t, warnings) = podd_api::schema::decode::<T>(v, fv).map_err(as_invalid)?;
        podd_api::defaults::apply(&mut t);
        podd_api::validation::validate(&t).map_err(as_invalid)?;
        let mut out = serde_json::to_value(&t).map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Some(o) = out.as_object_mut() {
            o.insert("kind".into(), kind.name().into());
            o.insert("apiVersion".into(), kind.api_version().into());
        }
        meta_mut(&mut out).remove("resourceVersion");
        Ok((out, warnings))
    }
    podd_api::with_kind_type!(kind, T => typed::<T>(name, v, fv))
}

/// The largest object stored: 1.5 MiB, etcd's default request limit, which bounds every
/// Kubernetes object (and so label counts and container lists). Larger writes get 413.
pub const MAX_OBJECT_BYTES: usize = 3 << 19;

/// An object's stored form, refused with 413 RequestEntityTooLarge over [`MAX_OBJECT_BYTES`].
fn to_stored_bytes(kind: Kind, name: &str, v: &Value) -> Result<Vec<u8>, ApiError> {
    let bytes = serde_json::to_vec(v).map_err(|e| ApiError::Internal(e.to_string()))?;
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::TooLarge(format!(
            "{} {name:?} is too large to store: {} bytes, and an object may have at most \
             {MAX_OBJECT_BYTES}; move bulky data out of labels, annotations and specs",
            kind.name(),
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Refuses, before decoding, an object over the limits that are costly to decode.
fn check_before_decode(kind: Kind, name: &str, v: &Value) -> Result<(), ApiError> {
    podd_api::validation::check_limits_before_decode(kind, v).map_err(|errors| ApiError::Invalid {
        kind,
        name: name.to_string(),
        errors,
    })
}

fn parse_stored(kind: Kind, key: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::Internal(format!("stored {} at {key} is not JSON: {e}", kind.name()))
    })
}

fn not_found(kind: Kind, name: &str) -> ApiError {
    ApiError::NotFound {
        kind: kind.name(),
        name: name.into(),
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the write loop decided for one round.
enum Outcome {
    Write(Value),
    /// The change leaves a terminating object without finalizers: it goes.
    Remove(Value),
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<WatchCache>,
        config: &RegistryConfig,
    ) -> Result<Registry, AllocError> {
        Ok(Registry {
            mutating_latency: Default::default(),
            http_mutating_latency: Default::default(),
            metrics: Default::default(),
            service_ips: RangeAllocator::service_ips(
                store.clone(),
                &config.service_cidr,
                &[config.dns_vip],
            )?,
            pod_cidrs: RangeAllocator::pod_cidrs(
                store.clone(),
                &config.cluster_cidr,
                config.node_cidr_prefix,
            )?,
            store,
            cache,
            leases: LeaseTable::default(),
            usage: Default::default(),
        })
    }

    /// The node lease renewals this server took (see [`crate::leases`]).
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn cache(&self) -> &Arc<WatchCache> {
        &self.cache
    }

    fn ns_for(kind: Kind, ns: &str) -> String {
        if kind.namespaced() {
            if ns.is_empty() {
                "default".into()
            } else {
                ns.into()
            }
        } else {
            String::new()
        }
    }

    /// Reads one object from the store (authoritative).
    pub async fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        let ns = Self::ns_for(kind, ns);
        let key = kind.key(&ns, name);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| not_found(kind, name))?;
        let mut v = parse_stored(kind, &key, &kv.value)?;
        set_resource_version(kind, &mut v, kv.mod_revision);
        Ok(v)
    }

    /// Lists from the watch cache once it has caught up with the store, so a list reflects
    /// every write acknowledged before it; falls back to the store if the cache lags.
    pub async fn list(
        &self,
        kind: Kind,
        ns: Option<&str>,
        filter: &Filter,
    ) -> Result<(Vec<Arc<CachedObject>>, Revision), ApiError> {
        let prefix = kind.key_prefix(ns.filter(|n| !n.is_empty()));
        let want = self.store.revision().await?;
        if self.cache.wait_for(want, Duration::from_millis(500)).await {
            let (items, rev) = self.cache.snapshot(kind, &prefix);
            return Ok((
                items.into_iter().filter(|o| filter.matches(o)).collect(),
                rev,
            ));
        }
        tracing::debug!(
            kind = kind.name(),
            "watch cache lags the store; listing from the store"
        );
        let list = self.store.list(&prefix).await?;
        let items = list
            .items
            .iter()
            .filter_map(|kv| CachedObject::from_stored(kind, &kv.key, &kv.value, kv.mod_revision))
            .filter(|o| filter.matches(o))
            .map(Arc::new)
            .collect();
        Ok((items, list.revision))
    }

    /// A list with Kubernetes' options: pages of `limit` objects continued by an opaque token
    /// (the list's revision and the last key; 410 Expired once that revision is compacted),
    /// and `resourceVersion` semantics (`""` most recent, `"0"` any, `N` not older than N, or
    /// exactly N with `resourceVersionMatch=Exact`). Every page comes from one snapshot, the
    /// first page's revision, rebuilt by the watch cache from its window of events (as
    /// etcd-backed Kubernetes reads every page at the first one's revision): objects written
    /// between pages neither shift nor repeat items.
    pub async fn list_page(
        &self,
        kind: Kind,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let prefix = kind.key_prefix(ns.filter(|n| !n.is_empty()));
        let (items, revision, start) = if let Some(tok) = &opts.continue_token {
            let t = decode_continue(tok)?;
            // A token from before a restart may be ahead of a cache still loading.
            if !self.cache.wait_for(t.rv, Duration::from_secs(3)).await {
                return Err(ApiError::Timeout(format!(
                    "Too large resource version: {}, current: {}",
                    t.rv,
                    self.cache.revision()
                )));
            }
            let items = self
                .cache
                .snapshot_at(kind, &prefix, t.rv)
                .map_err(|oldest| {
                    ApiError::Expired(format!(
                        "the provided continue parameter is too old to display a consistent \
                         list result (revision {} is older than {oldest}); start a new list \
                         without it",
                        t.rv
                    ))
                })?;
            (items, t.rv, Some(t.start))
        } else {
            let rv = opts.resource_version.as_str();
            let exact = opts.resource_version_match.as_deref() == Some("Exact");
            match opts.resource_version_match.as_deref() {
                None | Some("NotOlderThan") | Some("Exact") => {}
                Some(other) => {
                    return Err(ApiError::BadRequest(format!(
                        "resourceVersionMatch {other:?} is not supported: use NotOlderThan or Exact"
                    )));
                }
            }
            if rv.is_empty() {
                if exact {
                    return Err(ApiError::BadRequest(
                        "resourceVersionMatch=Exact needs a resourceVersion".into(),
                    ));
                }
                let (items, rev) = self.list(kind, ns, &Filter::default()).await?;
                (items, rev, None)
            } else {
                let n: Revision = rv.parse().map_err(|_| {
                    ApiError::BadRequest(format!("resourceVersion {rv:?} is not a number"))
                })?;
                if n > 0 && !self.cache.wait_for(n, Duration::from_secs(3)).await {
                    return Err(ApiError::Timeout(format!(
                        "Too large resource version: {n}, current: {}",
                        self.cache.revision()
                    )));
                }
                if exact && n == 0 {
                    return Err(ApiError::BadRequest(
                        "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\""
                            .into(),
                    ));
                }
                if exact {
                    // That revision exactly, rebuilt from the cache's window while it reaches.
                    let items = self.cache.snapshot_at(kind, &prefix, n).map_err(|oldest| {
                        ApiError::Expired(format!("too old resource version: {n} ({oldest})"))
                    })?;
                    (items, n, None)
                } else {
                    let (items, rev) = self.cache.snapshot(kind, &prefix);
                    (items, rev, None)
                }
            }
        };
        let mut matching = items
            .into_iter()
            .filter(|o| start.as_ref().is_none_or(|s| o.key.as_str() > s.as_str()))
            .filter(|o| opts.filter.matches(o));
        let mut page: Vec<Arc<CachedObject>> = match opts.limit.filter(|l| *l > 0) {
            Some(l) => matching.by_ref().take(l).collect(),
            None => matching.by_ref().collect(),
        };
        let rest = matching.count();
        let continue_token = (rest > 0)
            .then(|| page.last().map(|o| encode_continue(revision, &o.key)))
            .flatten();
        page.shrink_to_fit();
        Ok(ListPage {
            items: page,
            revision,
            continue_token,
            remaining: (rest > 0).then_some(rest),
        })
    }

    // ---- create ----

    async fn create_untimed(
        &self,
        kind: Kind,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
        record: bool,
    ) -> Result<Written, ApiError> {
        let ns = Self::ns_for(kind, ns);
        let mut v = body;
        if !v.is_object() {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        }
        check_before_decode(kind, str_at(&v, "/metadata/name"), &v)?;
        let body_ns = str_at(&v, "/metadata/namespace").to_string();
        if kind.namespaced() && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::BadRequest(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace \
                 sent on the request ({ns})"
            )));
        }
        let generated = str_at(&v, "/metadata/name").is_empty()
            && !str_at(&v, "/metadata/generateName").is_empty();
        if str_at(&v, "/metadata/name").is_empty() && !generated {
            return Err(invalid(
                kind,
                "",
                FieldError::required("metadata.name", "name or generateName is required"),
            ));
        }
        {
            let m = meta_mut(&mut v);
            if kind.namespaced() {
                m.insert("namespace".into(), ns.clone().into());
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), new_uid().into());
            m.insert("creationTimestamp".into(), now_time());
            m.insert("generation".into(), 1.into());
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            if generated {
                let g = m
                    .get("generateName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                m.insert("name".into(), format!("{g}{}", random_suffix()).into());
            }
        }
        if kind.has_status() && kind != Kind::Node {
            v.as_object_mut()
                .expect("checked above")
                .insert("status".into(), serde_json::json!({}));
        }
        let name = str_at(&v, "/metadata/name").to_string();
        if kind.namespaced() {
            self.check_namespace_open(kind, &ns, &name).await?;
        }
        if kind == Kind::Namespace {
            // The namespace controller's finalizer, always (the strategy's PrepareForCreate).
            let spec = spec_mut(&mut v);
            let mut f: Vec<Value> = spec
                .get("finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ours = Value::from(podd_api::validation::NAMESPACE_FINALIZER);
            if !f.contains(&ours) {
                f.push(ours);
            }
            spec.insert("finalizers".into(), Value::Array(f));
            v["status"] = serde_json::json!({"phase": "Active"});
        }
        let unacted = podd_api::unacted::warnings(kind, &v);
        // Decode, default and validate before allocating anything.
        let (v, mut warnings) = admit(kind, &name, v, opts.field_validation)?;
        warnings.extend(unacted);
        // The creator owns every field it set, defaults included (an apply has recorded
        // its own).
        let mut v = if record {
            podd_api::patch::record_update_in(
                kind,
                &opts.version,
                &Value::Null,
                v,
                &opts.manager(),
                "",
                &now_rfc3339(),
            )
        } else {
            v
        };
        if opts.dry_run {
            return Ok(Written {
                object: v,
                warnings,
            });
        }
        let allocated = self.admit_create(kind, &name, &mut v).await?;
        let result = self.store_create(kind, &ns, v, generated).await;
        if result.is_err()
            && let Some((alloc, value)) = allocated
        {
            let _ = alloc.release(&value).await;
        }
        result.map(|object| Written { object, warnings })
    }

    async fn store_create(
        &self,
        kind: Kind,
        ns: &str,
        mut v: Value,
        generated: bool,
    ) -> Result<Value, ApiError> {
        for attempt in 0..8 {
            if generated && attempt > 0 {
                let g = str_at(&v, "/metadata/generateName").to_string();
                meta_mut(&mut v).insert("name".into(), format!("{g}{}", random_suffix()).into());
            }
            let name = str_at(&v, "/metadata/name").to_string();
            let key = kind.key(ns, &name);
            match self
                .store
                .create(&key, to_stored_bytes(kind, &name, &v)?)
                .await
            {
                Ok(rev) => {
                    set_resource_version(kind, &mut v, rev);
                    return Ok(v);
                }
                Err(StoreError::AlreadyExists { .. }) if generated => continue,
                Err(StoreError::AlreadyExists { .. }) => {
                    return Err(ApiError::AlreadyExists {
                        kind: kind.name(),
                        name,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::Internal(
            "could not find a free generated name after 8 tries".into(),
        ))
    }

    /// Allocations at create: Service clusterIP(s), Node podCIDR(s). Returns what to release
    /// if the create then fails.
    async fn admit_create(
        &self,
        kind: Kind,
        name: &str,
        v: &mut Value,
    ) -> Result<Option<(&RangeAllocator, String)>, ApiError> {
        let (alloc, field, list_field) = match kind {
            Kind::Service => (&self.service_ips, "clusterIP", "clusterIPs"),
            Kind::Node => (&self.pod_cidrs, "podCIDR", "podCIDRs"),
            _ => return Ok(None),
        };
        let asked = str_at(v, &format!("/spec/{field}")).to_string();
        let asked = if asked.is_empty() {
            v.pointer(&format!("/spec/{list_field}/0"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        } else {
            asked
        };
        if kind == Kind::Service && asked == "None" {
            let spec = spec_mut(v);
            spec.insert(field.into(), "None".into());
            spec.insert(list_field.into(), serde_json::json!(["None"]));
            return Ok(None);
        }
        let want = (!asked.is_empty()).then_some(asked.as_str());
        let got = alloc
            .allocate(want)
            .await
            .map_err(|e| alloc_err(e, kind, name, &format!("spec.{field}")))?;
        let spec = spec_mut(v);
        spec.insert(field.into(), got.clone().into());
        spec.insert(list_field.into(), serde_json::json!([got.clone()]));
        Ok(Some((alloc, got)))
    }

    // ---- update and patch ----

    /// Replaces an object (or its status, or its scale). A metadata.resourceVersion in the
    /// body is a precondition (409 Conflict when it is not the stored one).
    async fn update_untimed(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        body: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let rv = str_at(&body, "/metadata/resourceVersion").to_string();
        let precondition = if rv.is_empty() {
            None
        } else {
            Some(rv.parse::<Revision>().map_err(|_| {
                ApiError::BadRequest(format!("metadata.resourceVersion {rv:?} is not a number"))
            })?)
        };
        let body_name = str_at(&body, "/metadata/name");
        if sub != Subresource::Scale && !body_name.is_empty() && body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        self.write(
            kind,
            ns,
            name,
            precondition,
            opts,
            Track::Update(sub),
            |cur| Ok(Self::merge_update(kind, cur, &body, sub)),
        )
        .await
    }

    /// Applies a patch of type `ty`.
    #[allow(clippy::too_many_arguments)]
    async fn patch_untimed(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        ty: PatchType,
        patch: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if kind == Kind::Lease
            && ns == NODE_LEASE_NAMESPACE
            && matches!(ty, PatchType::Merge | PatchType::Strategic)
            && sub == Subresource::Main
            && !opts.dry_run
            && is_lease_renewal(&patch)
        {
            return self.renew_lease(name, patch).await;
        }
        if ty == PatchType::Apply {
            return self.apply_untimed(kind, ns, name, patch, sub, opts).await;
        }
        let precondition = if ty == PatchType::Json {
            None
        } else {
            str_at(&patch, "/metadata/resourceVersion")
                .parse::<Revision>()
                .ok()
        };
        self.write(
            kind,
            ns,
            name,
            precondition,
            opts,
            Track::Update(sub),
            |cur| {
                // A patch applies to the object in the request's version.
                let patched = if opts.converts(kind) {
                    let seen = podd_api::convert::to_version(kind, &opts.version, cur);
                    opts.body_in(kind, Self::apply_patch(kind, name, ty, &seen, &patch)?)?
                } else {
                    Self::apply_patch(kind, name, ty, cur, &patch)?
                };
                Ok(Self::merge_update(kind, cur, &patched, sub))
            },
        )
        .await
    }

    /// Server-side apply by `opts.field_manager` (required): creates the object when it does
    /// not exist; 409 with one cause per field when the apply would change fields another
    /// manager owns, unless `opts.force`.
    async fn apply_untimed(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        applied: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let manager = opts
            .field_manager
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "PATCH with application/apply-patch+yaml requires the fieldManager query \
                     parameter"
                        .into(),
                )
            })?;
        let applied_name = str_at(&applied, "/metadata/name");
        if !applied_name.is_empty() && applied_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({applied_name}) does not match the name on the URL ({name})"
            )));
        }
        let now = now_time().as_str().unwrap_or_default().to_string();
        let apply = |live: Option<&Value>| {
            podd_api::patch::server_side_apply(kind, live, &applied, &manager, opts.force, &now)
                .map_err(|e| match e {
                    podd_api::patch::ApplyError::Conflicts(cs) => ApiError::ApplyConflict {
                        message: podd_api::patch::ApplyError::Conflicts(cs.clone()).to_string(),
                        causes: cs.iter().map(|c| c.cause()).collect(),
                    },
                    podd_api::patch::ApplyError::Invalid(m) => ApiError::BadRequest(m),
                })
        };
        match self.get(kind, ns, name).await {
            Err(ApiError::NotFound { .. }) if sub == Subresource::Main => {
                let mut body = apply(None)?;
                meta_mut(&mut body).insert("name".into(), name.into());
                return self.create_untimed(kind, ns, body, opts, false).await;
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        self.write(kind, ns, name, None, opts, Track::Applied, |cur| {
            let merged = apply(Some(cur))?;
            Ok(Self::merge_update(kind, cur, &merged, sub))
        })
        .await
    }

    /// `cur` with `patch` of type `ty` applied.
    fn apply_patch(
        kind: Kind,
        name: &str,
        ty: PatchType,
        cur: &Value,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        use podd_api::patch::PatchError;
        let failed = |e: PatchError| match e {
            PatchError::Malformed(m) => {
                ApiError::BadRequest(format!("the patch is malformed: {m}"))
            }
            PatchError::Failed(m) => invalid(kind, name, FieldError::invalid("<patch>", "", m)),
        };
        match ty {
            PatchType::Merge => {
                if !patch.is_object() {
                    return Err(ApiError::BadRequest(
                        "a merge patch must be a JSON object".into(),
                    ));
                }
                let mut out = cur.clone();
                merge_patch(&mut out, patch);
                Ok(out)
            }
            PatchType::Json => podd_api::patch::json_patch(cur, patch).map_err(failed),
            PatchType::Strategic => {
                podd_api::patch::strategic_merge(kind, cur, patch).map_err(failed)
            }
            PatchType::Apply => Err(ApiError::UnsupportedMediaType(
                "server-side apply is not supported yet".into(),
            )),
        }
    }

    /// A node's lease renewal (a merge patch of only `spec.renewTime` of its Lease in
    /// kube-node-lease): recorded in memory, and written to the store only when the lease
    /// table says the stored time is due (see [`crate::leases`]).
    async fn renew_lease(&self, name: &str, patch: Value) -> Result<Written, ApiError> {
        let now = std::time::Instant::now();
        let key = Kind::Lease.key(NODE_LEASE_NAMESPACE, name);
        if !self.leases.renew(name, now)
            && let Some(mut v) = self
                .cache
                .get(Kind::Lease, &key)
                .and_then(|o| o.decode::<Value>())
        {
            merge_patch(&mut v, &patch);
            return Ok(Written {
                object: v,
                warnings: Vec::new(),
            });
        }
        let w = self
            .write(
                Kind::Lease,
                NODE_LEASE_NAMESPACE,
                name,
                None,
                &WriteOptions::default(),
                Track::Untracked,
                |cur| {
                    let mut patched = cur.clone();
                    merge_patch(&mut patched, &patch);
                    Ok(patched)
                },
            )
            .await?;
        self.leases.persisted(name, now);
        Ok(w)
    }

    /// What an update of `sub` with `body` makes of `cur`.
    fn merge_update(kind: Kind, cur: &Value, body: &Value, sub: Subresource) -> Value {
        match sub {
            Subresource::Status => {
                let mut out = cur.clone();
                if let Some(o) = out.as_object_mut() {
                    o.insert(
                        "status".into(),
                        body.get("status").cloned().unwrap_or(Value::Null),
                    );
                }
                out
            }
            Subresource::Scale => {
                let mut out = cur.clone();
                if let Some(r) = body.pointer("/spec/replicas").cloned() {
                    spec_mut(&mut out).insert("replicas".into(), r);
                }
                out
            }
            Subresource::Finalize => {
                let mut out = cur.clone();
                let f = body.pointer("/spec/finalizers").cloned();
                spec_mut(&mut out).insert("finalizers".into(), f.unwrap_or(Value::Null));
                out
            }
            Subresource::Main => {
                let mut out = body.clone();
                if !out.is_object() {
                    out = Value::Object(serde_json::Map::new());
                }
                if kind == Kind::Namespace {
                    // spec.finalizers is written through `finalize` only.
                    let f = cur.pointer("/spec/finalizers").cloned();
                    spec_mut(&mut out).insert("finalizers".into(), f.unwrap_or(Value::Null));
                }
                if kind.has_status()
                    && let Some(o) = out.as_object_mut()
                {
                    match cur.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
                out
            }
        }
    }

    /// The read-modify-write loop behind update and patch: keeps what is immutable, goes
    /// through the type, bumps the generation, skips writes that change nothing, and writes
    /// with compare-and-swap. A terminating object whose last finalizer goes is removed.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        precondition: Option<Revision>,
        opts: &WriteOptions,
        track: Track,
        f: impl Fn(&Value) -> Result<Value, ApiError> + Send + Sync,
    ) -> Result<Written, ApiError> {
        let ns = Self::ns_for(kind, ns);
        let key = kind.key(&ns, name);
        for _ in 0..16 {
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| not_found(kind, name))?;
            if let Some(p) = precondition
                && p != kv.mod_revision
            {
                return Err(ApiError::Conflict {
                    kind: kind.name(),
                    name: name.into(),
                    expected: p.to_string(),
                    actual: kv.mod_revision.to_string(),
                });
            }
            let cur = parse_stored(kind, &key, &kv.value)?;
            // The change sees the object as clients do, with its resourceVersion (a JSON
            // patch may `test` it, as kubectl's managedFields migration does); what is
            // stored never has it.
            let mut seen = cur.clone();
            set_resource_version(kind, &mut seen, kv.mod_revision);
            let new = f(&seen)?;
            if !new.is_object() {
                return Err(ApiError::BadRequest(
                    "the body must be a JSON object".into(),
                ));
            }
            check_before_decode(kind, name, &new)?;
            let mut new = new;
            self.keep_immutable(kind, &cur, &mut new)?;
            let unacted = match track {
                Track::Update(Subresource::Main) | Track::Applied => {
                    podd_api::unacted::warnings(kind, &new)
                }
                _ => Vec::new(),
            };
            let (new, mut warnings) = admit(kind, name, new, opts.field_validation)?;
            podd_api::validation::validate_update(kind, &cur, &new).map_err(|errors| {
                ApiError::Invalid {
                    kind,
                    name: name.to_string(),
                    errors,
                }
            })?;
            warnings.extend(unacted);
            let mut new = match track {
                Track::Update(sub) => podd_api::patch::record_update_in(
                    kind,
                    &opts.version,
                    &cur,
                    new,
                    &opts.manager(),
                    sub.managed_name(),
                    &now_rfc3339(),
                ),
                Track::Applied | Track::Untracked => new,
            };
            if new.get("spec") != cur.get("spec") {
                let g = cur
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(&mut new).insert("generation".into(), (g + 1).into());
            }
            if kind == Kind::DaemonSet {
                podd_api::defaults::daemon_set_template_generation(&cur, &mut new);
            }
            if new == cur {
                let mut object = cur;
                set_resource_version(kind, &mut object, kv.mod_revision);
                return Ok(Written { object, warnings });
            }
            let outcome = if is_terminating(&new) && !held_by_finalizers(kind, &new) {
                Outcome::Remove(new)
            } else {
                Outcome::Write(new)
            };
            if opts.dry_run {
                let (Outcome::Write(mut object) | Outcome::Remove(mut object)) = outcome;
                set_resource_version(kind, &mut object, kv.mod_revision);
                return Ok(Written { object, warnings });
            }
            let result = match outcome {
                Outcome::Write(mut new) => self
                    .store
                    .update(
                        &key,
                        to_stored_bytes(kind, name, &new)?,
                        Some(kv.mod_revision),
                    )
                    .await
                    .map(|rev| {
                        set_resource_version(kind, &mut new, rev);
                        new
                    }),
                Outcome::Remove(new) => {
                    match self
                        .remove(
                            kind,
                            &ns,
                            name,
                            kv.mod_revision,
                            new,
                            Propagation::Background,
                        )
                        .await
                    {
                        Ok(v) => {
                            return Ok(Written {
                                object: v,
                                warnings,
                            });
                        }
                        Err(ApiError::Store(e)) => Err(e),
                        Err(e) => return Err(e),
                    }
                }
            };
            match result {
                Ok(object) => return Ok(Written { object, warnings }),
                Err(StoreError::Conflict { actual, .. }) if precondition.is_some() => {
                    return Err(ApiError::Conflict {
                        kind: kind.name(),
                        name: name.into(),
                        expected: kv.mod_revision.to_string(),
                        actual: actual.to_string(),
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(not_found(kind, name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::Conflict {
            kind: kind.name(),
            name: name.into(),
            expected: "any".into(),
            actual: "changing too often".into(),
        })
    }

    /// Keeps the server's metadata, the deletion marks, and the allocated addresses (which
    /// may be left out, but not changed).
    fn keep_immutable(&self, kind: Kind, cur: &Value, new: &mut Value) -> Result<(), ApiError> {
        let cur_meta = cur.get("metadata").cloned().unwrap_or_default();
        let m = meta_mut(new);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "generateName",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match cur_meta.get(field) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
        let name = str_at(cur, "/metadata/name").to_string();
        let immutable = |field: &str, list_field: &str, new: &mut Value| -> Result<(), ApiError> {
            let old = str_at(cur, &format!("/spec/{field}")).to_string();
            let old_list = cur
                .pointer(&format!("/spec/{list_field}"))
                .cloned()
                .unwrap_or(Value::Null);
            let now = str_at(new, &format!("/spec/{field}")).to_string();
            if now.is_empty() && !old.is_empty() {
                spec_mut(new).insert(field.into(), old.clone().into());
            } else if now != old {
                return Err(invalid(
                    kind,
                    &name,
                    FieldError::invalid(
                        format!("spec.{field}"),
                        now,
                        format!("field is immutable (it is {old})"),
                    ),
                ));
            }
            match new.pointer(&format!("/spec/{list_field}")) {
                None | Some(Value::Null) => {
                    if !old_list.is_null() {
                        spec_mut(new).insert(list_field.into(), old_list);
                    }
                }
                Some(l) if *l != old_list && !old_list.is_null() => {
                    return Err(invalid(
                        kind,
                        &name,
                        FieldError::invalid(
                            format!("spec.{list_field}"),
                            l,
                            "field is immutable".to_string(),
                        ),
                    ));
                }
                Some(_) => {}
            }
            Ok(())
        };
        match kind {
            Kind::Service => immutable("clusterIP", "clusterIPs", new),
            Kind::Node => immutable("podCIDR", "podCIDRs", new),
            _ => Ok(()),
        }
    }

    // ---- delete ----

    /// Whether a Pod must wait for its node to stop it: bound to a node that exists and is
    /// Ready. Otherwise nothing runs it (or nothing will report back) and it goes at once.
    fn pod_needs_node(&self, pod: &Value) -> bool {
        let node = str_at(pod, "/spec/nodeName");
        if node.is_empty() {
            return false;
        }
        self.cache
            .get(Kind::Node, &Kind::Node.key("", node))
            .and_then(|o| o.decode::<podd_api::Node>())
            .is_some_and(|n| podd_api::resources::node_is_ready(&n))
    }

    /// Deletes an object as DeleteOptions say: preconditions; finalizers and graceful pod
    /// deletion leave it terminating (deletionTimestamp set) and return it; otherwise it is
    /// removed and its dependents follow the propagation policy.
    pub fn delete_with<'a>(
        &'a self,
        kind: Kind,
        ns: &'a str,
        name: &'a str,
        opts: &'a DeleteOptions,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(self.timed(self.delete_untimed(kind, ns, name, opts)))
    }

    async fn delete_untimed(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let ns = Self::ns_for(kind, ns);
        let key = kind.key(&ns, name);
        for _ in 0..16 {
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| not_found(kind, name))?;
            if let Some(p) = opts.precondition_rv
                && p != kv.mod_revision
            {
                return Err(ApiError::Conflict {
                    kind: kind.name(),
                    name: name.into(),
                    expected: p.to_string(),
                    actual: kv.mod_revision.to_string(),
                });
            }
            let mut cur = parse_stored(kind, &key, &kv.value)?;
            let uid = str_at(&cur, "/metadata/uid").to_string();
            if let Some(want) = &opts.precondition_uid
                && *want != uid
            {
                return Err(ApiError::ConflictMsg(format!(
                    "Operation cannot be fulfilled on {} {name:?}: Precondition failed: UID in \
                     precondition: {want}, UID in object meta: {uid}",
                    kind.plural()
                )));
            }
            let force = opts.grace_period_seconds == Some(0);
            let graceful = kind == Kind::Pod && !force && self.pod_needs_node(&cur);
            if kind == Kind::Namespace && INITIAL_NAMESPACES.contains(&name) {
                return Err(ApiError::Forbidden(format!(
                    "namespaces {name:?} is forbidden: this namespace may not be deleted"
                )));
            }
            let has_finalizers = held_by_finalizers(kind, &cur);
            let foreground =
                opts.propagation == Propagation::Foreground && !self.dependents(&uid).is_empty();
            if opts.dry_run {
                set_resource_version(kind, &mut cur, kv.mod_revision);
                return Ok(cur);
            }
            if opts.propagation == Propagation::Orphan {
                self.orphan_dependents(&uid).await;
            }
            if is_terminating(&cur) && (has_finalizers || graceful) {
                // Already going; a second delete changes nothing until the node (or the
                // finalizers' owners) are done.
                set_resource_version(kind, &mut cur, kv.mod_revision);
                return Ok(cur);
            }
            if has_finalizers || graceful || foreground {
                let mut marked = cur.clone();
                let m = meta_mut(&mut marked);
                m.insert("deletionTimestamp".into(), now_time());
                let grace = if kind == Kind::Pod {
                    opts.grace_period_seconds
                        .or_else(|| {
                            cur.pointer("/spec/terminationGracePeriodSeconds")
                                .and_then(Value::as_i64)
                        })
                        .unwrap_or(30)
                } else {
                    0
                };
                m.insert("deletionGracePeriodSeconds".into(), grace.into());
                if kind == Kind::Namespace {
                    // Terminating from the moment it is deleted, as kube-apiserver marks it.
                    marked["status"]["phase"] = "Terminating".into();
                }
                let m = meta_mut(&mut marked);
                if foreground {
                    let mut f = finalizers(&cur);
                    f.push(FOREGROUND_FINALIZER.into());
                    m.insert("finalizers".into(), serde_json::json!(f));
                }
                match self
                    .store
                    .update(
                        &key,
                        to_stored_bytes(kind, name, &marked)?,
                        Some(kv.mod_revision),
                    )
                    .await
                {
                    Ok(rev) => {
                        set_resource_version(kind, &mut marked, rev);
                        if foreground {
                            return self.finish_foreground(kind, &ns, name, &uid).await;
                        }
                        return Ok(marked);
                    }
                    Err(StoreError::Conflict { .. }) if opts.precondition_rv.is_none() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            return self
                .remove(kind, &ns, name, kv.mod_revision, cur, opts.propagation)
                .await;
        }
        Err(ApiError::Conflict {
            kind: kind.name(),
            name: name.into(),
            expected: "any".into(),
            actual: "changing too often".into(),
        })
    }

    /// A Foreground delete after the owner was marked: deletes the dependents, then drops the
    /// `foregroundDeletion` finalizer (which removes the owner when it was the last).
    async fn finish_foreground(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> Result<Value, ApiError> {
        self.delete_dependents(uid, Propagation::Foreground).await;
        let w = self
            .write(
                kind,
                ns,
                name,
                None,
                &WriteOptions::default(),
                Track::Update(Subresource::Main),
                |cur| {
                    let mut out = cur.clone();
                    let f: Vec<String> = finalizers(cur)
                        .into_iter()
                        .filter(|f| f != FOREGROUND_FINALIZER)
                        .collect();
                    meta_mut(&mut out).insert("finalizers".into(), serde_json::json!(f));
                    Ok(out)
                },
            )
            .await?;
        Ok(w.object)
    }

    /// Removes an object from the store (at `expected`), releases what it held, and deals
    /// with its dependents.
    async fn remove(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        expected: Revision,
        mut v: Value,
        propagation: Propagation,
    ) -> Result<Value, ApiError> {
        let key = kind.key(ns, name);
        let rev = match self.store.delete(&key, Some(expected)).await {
            Ok(r) => r,
            Err(StoreError::NotFound { .. }) => return Err(not_found(kind, name)),
            Err(e) => return Err(e.into()),
        };
        set_resource_version(kind, &mut v, rev);
        match kind {
            Kind::Service => {
                let ip = str_at(&v, "/spec/clusterIP");
                if !ip.is_empty()
                    && ip != "None"
                    && let Err(e) = self.service_ips.release(ip).await
                {
                    tracing::warn!(error = %e, service = name, "could not release the service IP; the next repair frees it");
                }
            }
            Kind::Node => {
                self.leases.forget(name);
                self.usage.forget(name);
                let cidr = str_at(&v, "/spec/podCIDR");
                if !cidr.is_empty()
                    && let Err(e) = self.pod_cidrs.release(cidr).await
                {
                    tracing::warn!(error = %e, node = name, "could not release the pod CIDR; the next repair frees it");
                }
            }
            _ => {}
        }
        let uid = str_at(&v, "/metadata/uid").to_string();
        if !uid.is_empty() {
            match propagation {
                Propagation::Orphan => self.orphan_dependents(&uid).await,
                _ => self.delete_dependents(&uid, Propagation::Background).await,
            }
        }
        Ok(v)
    }

    /// The objects whose ownerReferences name `owner_uid`, as (kind, namespace, name).
    fn dependents(&self, owner_uid: &str) -> Vec<(Kind, String, String)> {
        Kind::ALL
            .into_iter()
            .flat_map(|k| {
                self.cache
                    .owned_by(k, owner_uid)
                    .into_iter()
                    .map(move |o| (k, o.namespace.clone(), o.name.clone()))
            })
            .collect()
    }

    async fn caught_up(&self) {
        if let Ok(want) = self.store.revision().await {
            self.cache.wait_for(want, Duration::from_secs(2)).await;
        }
    }

    /// Cascading: deletes (with their own grace and finalizers) every object owned by
    /// `owner_uid`; theirs follow in turn.
    async fn delete_dependents(&self, owner_uid: &str, propagation: Propagation) {
        self.caught_up().await;
        let opts = DeleteOptions {
            propagation,
            ..Default::default()
        };
        for (kind, ns, name) in self.dependents(owner_uid) {
            match self.delete_with(kind, &ns, &name, &opts).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, kind = kind.name(), %ns, %name, "cascading delete failed");
                }
            }
        }
    }

    /// Orphaning: removes the references to `owner_uid` from its dependents.
    fn orphan_dependents<'a>(&'a self, owner_uid: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.orphan_dependents_inner(owner_uid))
    }

    async fn orphan_dependents_inner(&self, owner_uid: &str) {
        self.caught_up().await;
        for (kind, ns, name) in self.dependents(owner_uid) {
            let r = self
                .write(
                    kind,
                    &ns,
                    &name,
                    None,
                    &WriteOptions::default(),
                    Track::Update(Subresource::Main),
                    |cur| {
                        let mut out = cur.clone();
                        if let Some(refs) = out
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| {
                                r.get("uid").and_then(Value::as_str) != Some(owner_uid)
                            });
                            if refs.is_empty() {
                                meta_mut(&mut out).remove("ownerReferences");
                            }
                        }
                        Ok(out)
                    },
                )
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, kind = kind.name(), %ns, %name, "orphaning a dependent failed");
            }
        }
    }

    /// Compacts the store's history at `rev`; watches from before it get Expired.
    pub async fn compact(&self, rev: Revision) -> Result<(), ApiError> {
        self.store.compact(rev).await?;
        self.cache.compact(rev);
        Ok(())
    }

    /// Rebuilds the allocators from the objects that hold addresses (run at start-up).
    pub async fn repair_allocators(&self) -> Result<(), ApiError> {
        let (svcs, _) = self.list(Kind::Service, None, &Filter::default()).await?;
        let ips: Vec<String> = svcs
            .iter()
            .filter_map(|o| o.decode::<podd_api::Service>())
            .filter_map(|s| s.spec.and_then(|s| s.cluster_ip))
            .filter(|ip| !ip.is_empty() && ip != "None")
            .collect();
        self.service_ips
            .repair(&ips)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let (nodes, _) = self.list(Kind::Node, None, &Filter::default()).await?;
        let cidrs: Vec<String> = nodes
            .iter()
            .filter_map(|o| o.decode::<podd_api::Node>())
            .filter_map(|n| n.spec.and_then(|s| s.pod_cidr))
            .filter(|c| !c.is_empty())
            .collect();
        self.pod_cidrs
            .repair(&cidrs)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    pub fn service_ips(&self) -> &RangeAllocator {
        &self.service_ips
    }

    pub fn pod_cidrs(&self) -> &RangeAllocator {
        &self.pod_cidrs
    }

    /// Runs a mutating call and records its latency (the figure `bench control-plane` reports).
    async fn timed<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        let t = std::time::Instant::now();
        let r = call.await;
        self.mutating_latency.record(t.elapsed());
        r
    }

    // ---- namespaces ----

    /// Refuses to create an object of `kind` named `name` in a namespace that does not exist
    /// (404, the namespace named) or is being deleted (403), as Kubernetes' NamespaceLifecycle
    /// admission does. The cache answers first; the store when the cache has not seen it yet
    /// (a namespace created an instant before).
    async fn check_namespace_open(&self, kind: Kind, ns: &str, name: &str) -> Result<(), ApiError> {
        let key = Kind::Namespace.key("", ns);
        let terminating = match self.cache.get(Kind::Namespace, &key) {
            Some(o) => o
                .decode::<podd_api::Namespace>()
                .is_some_and(|n| namespace_is_terminating(&n)),
            None => match self.store.get(&key).await? {
                Some(kv) => is_terminating(&parse_stored(Kind::Namespace, &key, &kv.value)?),
                None => return Err(not_found(Kind::Namespace, ns)),
            },
        };
        if terminating {
            return Err(ApiError::Forbidden(format!(
                "{} {name:?} is forbidden: unable to create new content in namespace {ns} \
                 because it is being terminated",
                kind.plural()
            )));
        }
        Ok(())
    }

    /// Creates the [`INITIAL_NAMESPACES`] that do not exist yet, and a Namespace for every
    /// namespace that objects stored before namespaces were served are in (run at start-up,
    /// by every server: an existing one is left as it is).
    pub async fn ensure_namespaces(&self) -> Result<(), ApiError> {
        let mut names: std::collections::BTreeSet<String> =
            INITIAL_NAMESPACES.iter().map(|n| n.to_string()).collect();
        for kind in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
            let (items, _) = self.cache.snapshot(kind, &kind.key_prefix(None));
            names.extend(items.iter().map(|o| o.namespace.clone()));
        }
        for name in names {
            if self
                .cache
                .get(Kind::Namespace, &Kind::Namespace.key("", &name))
                .is_some()
            {
                continue;
            }
            let body = serde_json::json!({"metadata": {"name": name}});
            match self.create(Kind::Namespace, "", body).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    // ---- the verbs ----

    /// Creates an object in `ns` (ignored for cluster-scoped kinds).
    pub async fn create(&self, kind: Kind, ns: &str, body: Value) -> Result<Value, ApiError> {
        self.create_with(kind, ns, body, &WriteOptions::default())
            .await
            .map(|w| w.object)
    }

    /// Creates with options (dry run, field validation).
    pub async fn create_with(
        &self,
        kind: Kind,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let body = opts.body_in(kind, body)?;
        let w = self
            .timed(self.create_untimed(kind, ns, body, opts, true))
            .await;
        opts.answer(kind, w)
    }

    /// Replaces an object (or its status, or its scale); a metadata.resourceVersion in the
    /// body is a precondition (409 Conflict when it is not the stored one).
    pub async fn update(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        body: Value,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
        self.update_with(kind, ns, name, body, sub, &WriteOptions::default())
            .await
            .map(|w| w.object)
    }

    pub async fn update_with(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        body: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let body = opts.body_in(kind, body)?;
        let w = self
            .timed(self.update_untimed(kind, ns, name, body, sub, opts))
            .await;
        opts.answer(kind, w)
    }

    /// Applies a JSON merge patch.
    pub async fn patch(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        patch: Value,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
        self.patch_with(
            kind,
            ns,
            name,
            PatchType::Merge,
            patch,
            sub,
            &WriteOptions::default(),
        )
        .await
        .map(|w| w.object)
    }

    /// Applies a patch of any type.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch_with(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        ty: PatchType,
        patch: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let patch = if ty == PatchType::Apply {
            opts.body_in(kind, patch)?
        } else {
            patch
        };
        let w = self
            .timed(self.patch_untimed(kind, ns, name, ty, patch, sub, opts))
            .await;
        opts.answer(kind, w)
    }

    /// Deletes an object (Background propagation, the object's own grace period); see
    /// [`Registry::delete_with`].
    pub async fn delete(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        precondition: Option<Revision>,
    ) -> Result<Value, ApiError> {
        let opts = DeleteOptions {
            precondition_rv: precondition,
            ..Default::default()
        };
        self.delete_with(kind, ns, name, &opts).await
    }

    // ---- typed helpers for the in-process controllers ----

    pub async fn get_obj<T: Object>(&self, ns: &str, name: &str) -> Result<T, ApiError> {
        let v = self.get(T::API_KIND, ns, name).await?;
        serde_json::from_value(v).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The objects of a kind as the cache has them now (no waiting): what a controller reads.
    pub fn cached<T: Object>(&self, ns: Option<&str>) -> Vec<T> {
        let (items, _) = self
            .cache
            .snapshot(T::API_KIND, &T::API_KIND.key_prefix(ns));
        items.iter().filter_map(|o| o.decode()).collect()
    }

    pub async fn create_obj<T: Object>(&self, obj: &T) -> Result<T, ApiError> {
        let v = serde_json::to_value(obj).map_err(|e| ApiError::Internal(e.to_string()))?;
        let ns = obj.metadata().namespace.clone().unwrap_or_default();
        let out = self.create(T::API_KIND, &ns, v).await?;
        serde_json::from_value(out).map_err(|e| ApiError::Internal(e.to_string()))
    }

    pub async fn update_obj<T: Object>(&self, obj: &T, sub: Subresource) -> Result<T, ApiError> {
        let m = obj.metadata();
        let v = serde_json::to_value(obj).map_err(|e| ApiError::Internal(e.to_string()))?;
        let ns = m.namespace.clone().unwrap_or_default();
        let name = m.name.clone().unwrap_or_default();
        let out = self.update(T::API_KIND, &ns, &name, v, sub).await?;
        serde_json::from_value(out).map_err(|e| ApiError::Internal(e.to_string()))
    }

    pub async fn patch_obj<T: Object>(
        &self,
        ns: &str,
        name: &str,
        patch: Value,
        sub: Subresource,
    ) -> Result<T, ApiError> {
        let out = self.patch(T::API_KIND, ns, name, patch, sub).await?;
        serde_json::from_value(out).map_err(|e| ApiError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_and_suffixes() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
        assert_eq!(random_suffix().len(), 5);
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("spec.nodeName=n1").unwrap();
        let o = CachedObject::from_stored(
            Kind::Pod,
            "/registry/pods/default/p",
            br#"{"metadata":{"name":"p","namespace":"default"},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}}"#,
            3,
        )
        .unwrap();
        assert!(f.matches(&o));
        assert!(
            !FieldSelector::parse("spec.nodeName!=n1")
                .unwrap()
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("status.phase=Running,metadata.name!=q")
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("spec.restartPolicy=Never").is_err());
        // kubectl events --for deployment/web.
        let ev = CachedObject::from_stored(
            Kind::Event,
            "/registry/events/default/e",
            br#"{"metadata":{"name":"e","namespace":"default"},"reason":"ScalingReplicaSet","type":"Normal",
                "involvedObject":{"kind":"Deployment","apiVersion":"apps/v1","name":"web"},
                "source":{"component":"deployment-controller"}}"#,
            4,
        )
        .unwrap();
        let sel = |s: &str| FieldSelector::parse(s).unwrap().matches(&ev);
        assert!(sel(
            "involvedObject.kind=Deployment,involvedObject.apiVersion=apps/v1,involvedObject.name=web"
        ));
        assert!(!sel("involvedObject.name=other"));
        assert!(sel(
            "type!=Warning,reason=ScalingReplicaSet,source=deployment-controller"
        ));
        assert!(sel("involvedObject.uid="), "a missing field is empty");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = decode_continue(&encode_continue(42, "/registry/pods/a/b")).unwrap();
        assert_eq!((t.rv, t.start.as_str()), (42, "/registry/pods/a/b"));
        assert!(decode_continue("zz").is_err());
    }
}

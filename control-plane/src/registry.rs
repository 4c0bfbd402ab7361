//! The registry: the API's semantics over the store, independent of HTTP.
//!
//! Objects are stored as JSON under `/registry/<plural>/<ns>/<name>`; their resourceVersion is
//! the store's mod_revision (never stored inside the value). Create sets uid and
//! creationTimestamp, fills generateName, allocates Service VIPs and node pod CIDRs; updates
//! check resourceVersion, keep what is immutable, bump generation when the spec changes, and
//! skip writes that change nothing; deletes cascade along ownerReferences.

use crate::alloc::{AllocError, RangeAllocator};
use crate::cache::{CachedObject, WatchCache, set_resource_version};
use crate::error::ApiError;
use crate::leases::{LeaseTable, is_lease_renewal};
use podd_api::meta::Selector;
use podd_api::validation::validate_value;
use podd_api::{Kind, Object};
use podd_store::{Revision, Store, StoreError};
use rand::Rng;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
    Scale,
}

/// Field selectors: `spec.nodeName=N`, `metadata.name=N`, `metadata.namespace=N` (and `!=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, ApiError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid field selector {part:?}: use field=value"
                )));
            };
            match field.trim() {
                "spec.nodeName" | "metadata.name" | "metadata.namespace" => {}
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "field selector on {other:?} is not supported: use spec.nodeName, metadata.name or metadata.namespace"
                    )));
                }
            }
            out.push((field.trim().to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn matches(&self, o: &CachedObject) -> bool {
        self.0.iter().all(|(f, eq, v)| {
            let actual = match f.as_str() {
                "spec.nodeName" => &o.node_name,
                "metadata.name" => &o.name,
                _ => &o.namespace,
            };
            (actual == v) == *eq
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
}

/// Kinds whose `status` is written only through the status subresource.
fn has_status(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Pod | Kind::Deployment | Kind::Node | Kind::HorizontalPodAutoscaler
    )
}

fn alloc_err(e: AllocError, kind: Kind, name: &str, field: &str) -> ApiError {
    match e {
        AllocError::Store(s) => ApiError::Store(s),
        other => ApiError::Invalid {
            kind,
            name: name.to_string(),
            errors: podd_api::ValidationErrors(vec![podd_api::FieldError {
                field: field.into(),
                message: other.to_string(),
            }]),
        },
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(serde_json::Map::new());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
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

/// Decodes into the kind's type and back, so every stored object has the kind's shape.
fn normalize(kind: Kind, v: Value) -> Result<Value, ApiError> {
    fn rt<T: Object>(v: Value) -> Result<Value, ApiError> {
        let t: T = serde_json::from_value(v).map_err(|e| {
            ApiError::BadRequest(format!("the body is not a valid {}: {e}", T::KIND.name()))
        })?;
        serde_json::to_value(&t).map_err(|e| ApiError::Internal(e.to_string()))
    }
    let mut out = match kind {
        Kind::Pod => rt::<podd_api::Pod>(v)?,
        Kind::Deployment => rt::<podd_api::Deployment>(v)?,
        Kind::Service => rt::<podd_api::Service>(v)?,
        Kind::Endpoints => rt::<podd_api::Endpoints>(v)?,
        Kind::Node => rt::<podd_api::Node>(v)?,
        Kind::HorizontalPodAutoscaler => rt::<podd_api::HorizontalPodAutoscaler>(v)?,
    };
    if let Some(o) = out.as_object_mut() {
        o.insert("kind".into(), kind.name().into());
        o.insert("apiVersion".into(), kind.api_version().into());
    }
    meta_mut(&mut out).remove("resourceVersion");
    Ok(out)
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
            .ok_or_else(|| ApiError::NotFound {
                kind: kind.name(),
                name: name.into(),
            })?;
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

    /// Creates an object in `ns` (ignored for cluster-scoped kinds).
    async fn create_untimed(&self, kind: Kind, ns: &str, body: Value) -> Result<Value, ApiError> {
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
                "the namespace of the object ({body_ns}) does not match the namespace of the request ({ns})"
            )));
        }
        {
            let m = meta_mut(&mut v);
            if kind.namespaced() {
                m.insert("namespace".into(), ns.clone().into());
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), new_uid().into());
            m.insert(
                "creationTimestamp".into(),
                crate::time::now_rfc3339().into(),
            );
            m.insert("generation".into(), 1.into());
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
        }
        if has_status(kind) && kind != Kind::Node {
            v.as_object_mut()
                .expect("checked above")
                .insert("status".into(), serde_json::json!({}));
        }
        let generated = str_at(&v, "/metadata/name").is_empty()
            && !str_at(&v, "/metadata/generateName").is_empty();
        // Validate before allocating anything.
        let mut probe = normalize(kind, v.clone())?;
        if generated {
            let g = str_at(&probe, "/metadata/generateName").to_string();
            meta_mut(&mut probe).insert("name".into(), format!("{g}{}", random_suffix()).into());
        }
        let name_for_errors = str_at(&probe, "/metadata/name").to_string();
        validate_value(kind, &probe).map_err(|errors| ApiError::Invalid {
            kind,
            name: name_for_errors.clone(),
            errors,
        })?;
        let allocated = self.admit_create(kind, &name_for_errors, &mut v).await?;
        let result = self.store_create(kind, &ns, v, generated).await;
        if result.is_err()
            && let Some((alloc, value)) = allocated
        {
            let _ = alloc.release(&value).await;
        }
        result
    }

    async fn store_create(
        &self,
        kind: Kind,
        ns: &str,
        v: Value,
        generated: bool,
    ) -> Result<Value, ApiError> {
        for _ in 0..8 {
            let mut v = normalize(kind, v.clone())?;
            if generated {
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

    /// Allocations at create: Service clusterIP, Node podCIDR. Returns what to release if the
    /// create then fails.
    async fn admit_create(
        &self,
        kind: Kind,
        name: &str,
        v: &mut Value,
    ) -> Result<Option<(&RangeAllocator, String)>, ApiError> {
        match kind {
            Kind::Service => {
                let ip = str_at(v, "/spec/clusterIP").to_string();
                if ip == "None" {
                    return Ok(None);
                }
                let want = (!ip.is_empty()).then_some(ip.as_str());
                let got = self
                    .service_ips
                    .allocate(want)
                    .await
                    .map_err(|e| alloc_err(e, kind, name, "spec.clusterIP"))?;
                if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("clusterIP".into(), got.clone().into());
                }
                Ok(Some((&self.service_ips, got)))
            }
            Kind::Node => {
                let cidr = str_at(v, "/spec/podCIDR").to_string();
                let want = (!cidr.is_empty()).then_some(cidr.as_str());
                let got = self
                    .pod_cidrs
                    .allocate(want)
                    .await
                    .map_err(|e| alloc_err(e, kind, name, "spec.podCIDR"))?;
                let obj = v.as_object_mut().expect("checked by the caller");
                let spec = obj.entry("spec").or_insert_with(|| serde_json::json!({}));
                if let Some(spec) = spec.as_object_mut() {
                    spec.insert("podCIDR".into(), got.clone().into());
                }
                Ok(Some((&self.pod_cidrs, got)))
            }
            _ => Ok(None),
        }
    }

    /// Replaces an object (or its status, or its scale). With `precondition`, the write fails
    /// with Conflict unless the stored resourceVersion is that.
    async fn update_untimed(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        body: Value,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
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
                "the name of the object ({body_name}) does not match the name in the URL ({name})"
            )));
        }
        self.write(kind, ns, name, precondition, |cur| {
            Ok(Self::merge_update(kind, cur, &body, sub))
        })
        .await
    }

    /// Applies a JSON merge patch.
    async fn patch_untimed(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        patch: Value,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
        if kind == Kind::Node && sub == Subresource::Status && is_lease_renewal(&patch) {
            return self.renew_lease(name, patch).await;
        }
        let rv = str_at(&patch, "/metadata/resourceVersion").to_string();
        let precondition = rv.parse::<Revision>().ok();
        self.write(kind, ns, name, precondition, |cur| {
            let mut patched = cur.clone();
            merge_patch(&mut patched, &patch);
            Ok(Self::merge_update(kind, cur, &patched, sub))
        })
        .await
    }

    /// A node's lease renewal: recorded in memory, and written to the store only when the
    /// lease table says the stored time is due (see [`crate::leases`]).
    async fn renew_lease(&self, name: &str, patch: Value) -> Result<Value, ApiError> {
        let now = std::time::Instant::now();
        if !self.leases.renew(name, now)
            && let Some(mut v) = self
                .cache
                .get(Kind::Node, &Kind::Node.key("", name))
                .and_then(|o| o.decode::<Value>())
        {
            merge_patch(&mut v, &patch);
            return Ok(v);
        }
        let v = self
            .write(Kind::Node, "", name, None, |cur| {
                let mut patched = cur.clone();
                merge_patch(&mut patched, &patch);
                Ok(Self::merge_update(
                    Kind::Node,
                    cur,
                    &patched,
                    Subresource::Status,
                ))
            })
            .await?;
        self.leases.persisted(name, now);
        Ok(v)
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
                if let Some(r) = body.pointer("/spec/replicas").cloned()
                    && let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut)
                {
                    spec.insert("replicas".into(), r);
                }
                out
            }
            Subresource::Main => {
                let mut out = body.clone();
                if !out.is_object() {
                    out = Value::Object(serde_json::Map::new());
                }
                if has_status(kind)
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

    /// The read-modify-write loop behind update and patch: keeps what is immutable, bumps the
    /// generation, validates, and writes with compare-and-swap.
    async fn write(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        precondition: Option<Revision>,
        f: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let ns = Self::ns_for(kind, ns);
        let key = kind.key(&ns, name);
        for _ in 0..16 {
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| ApiError::NotFound {
                    kind: kind.name(),
                    name: name.into(),
                })?;
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
            let cur = normalize(kind, parse_stored(kind, &key, &kv.value)?)?;
            let mut new = f(&cur)?;
            if !new.is_object() {
                return Err(ApiError::BadRequest(
                    "the body must be a JSON object".into(),
                ));
            }
            check_before_decode(kind, name, &new)?;
            self.keep_immutable(kind, &cur, &mut new)?;
            let mut new = normalize(kind, new)?;
            if new.get("spec") != cur.get("spec") {
                let g = cur
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(&mut new).insert("generation".into(), (g + 1).into());
            }
            validate_value(kind, &new).map_err(|errors| ApiError::Invalid {
                kind,
                name: name.into(),
                errors,
            })?;
            if new == cur {
                let mut out = cur;
                set_resource_version(kind, &mut out, kv.mod_revision);
                return Ok(out);
            }
            match self
                .store
                .update(
                    &key,
                    to_stored_bytes(kind, name, &new)?,
                    Some(kv.mod_revision),
                )
                .await
            {
                Ok(rev) => {
                    set_resource_version(kind, &mut new, rev);
                    return Ok(new);
                }
                Err(StoreError::Conflict { actual, .. }) if precondition.is_some() => {
                    return Err(ApiError::Conflict {
                        kind: kind.name(),
                        name: name.into(),
                        expected: kv.mod_revision.to_string(),
                        actual: actual.to_string(),
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => {
                    return Err(ApiError::NotFound {
                        kind: kind.name(),
                        name: name.into(),
                    });
                }
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
        ] {
            match cur_meta.get(field) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
        let immutable = |ptr: &str, field: &str, new: &mut Value| -> Result<(), ApiError> {
            let old = str_at(cur, ptr).to_string();
            let now = str_at(new, ptr).to_string();
            if now.is_empty() && !old.is_empty() {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert(field.into(), old.into());
                }
            } else if now != old {
                return Err(ApiError::Invalid {
                    kind,
                    name: str_at(cur, "/metadata/name").into(),
                    errors: podd_api::ValidationErrors(vec![podd_api::FieldError {
                        field: format!("spec.{field}"),
                        message: format!("field is immutable (it is {old})"),
                    }]),
                });
            }
            Ok(())
        };
        match kind {
            Kind::Service => immutable("/spec/clusterIP", "clusterIP", new),
            Kind::Node => immutable("/spec/podCIDR", "podCIDR", new),
            _ => Ok(()),
        }
    }

    /// Deletes an object and, after it, everything that names it in ownerReferences.
    async fn delete_untimed(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        precondition: Option<Revision>,
    ) -> Result<Value, ApiError> {
        let ns = Self::ns_for(kind, ns);
        let key = kind.key(&ns, name);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::NotFound {
                kind: kind.name(),
                name: name.into(),
            })?;
        let expected = precondition.unwrap_or(kv.mod_revision);
        let rev = match self.store.delete(&key, Some(expected)).await {
            Ok(r) => r,
            Err(StoreError::Conflict { actual, .. }) => {
                return Err(ApiError::Conflict {
                    kind: kind.name(),
                    name: name.into(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::NotFound {
                    kind: kind.name(),
                    name: name.into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let mut v = parse_stored(kind, &key, &kv.value)?;
        set_resource_version(kind, &mut v, rev);
        match kind {
            Kind::Service => {
                let ip = str_at(&v, "/spec/clusterIP");
                if !ip.is_empty()
                    && let Err(e) = self.service_ips.release(ip).await
                {
                    tracing::warn!(error = %e, service = name, "could not release the service IP; the next repair frees it");
                }
            }
            Kind::Node => {
                self.leases.forget(name);
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
            self.delete_dependents(&ns, &uid).await;
        }
        Ok(v)
    }

    /// Background-style cascading: deletes every object owned by `owner_uid`, recursively.
    async fn delete_dependents(&self, ns: &str, owner_uid: &str) {
        if let Ok(want) = self.store.revision().await {
            self.cache.wait_for(want, Duration::from_secs(2)).await;
        }
        let mut stack = vec![owner_uid.to_string()];
        while let Some(uid) = stack.pop() {
            for kind in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
                let (items, _) = self.cache.snapshot(kind, &kind.key_prefix(Some(ns)));
                for o in items.iter().filter(|o| o.owners.contains(&uid)) {
                    match self.store.delete(&o.key, None).await {
                        Ok(_) | Err(StoreError::NotFound { .. }) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, key = %o.key, "cascading delete failed");
                            continue;
                        }
                    }
                    if let Some(child_uid) = o
                        .decode::<Value>()
                        .map(|v| str_at(&v, "/metadata/uid").to_string())
                    {
                        stack.push(child_uid);
                    }
                }
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
            .map(|s| s.spec.cluster_ip)
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
            .map(|n| n.spec.pod_cidr)
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

    /// Creates an object in `ns` (ignored for cluster-scoped kinds).
    pub async fn create(&self, kind: Kind, ns: &str, body: Value) -> Result<Value, ApiError> {
        self.timed(self.create_untimed(kind, ns, body)).await
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
        self.timed(self.update_untimed(kind, ns, name, body, sub))
            .await
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
        self.timed(self.patch_untimed(kind, ns, name, patch, sub))
            .await
    }

    /// Deletes an object and, after it, everything that names it in ownerReferences.
    pub async fn delete(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        precondition: Option<Revision>,
    ) -> Result<Value, ApiError> {
        self.timed(self.delete_untimed(kind, ns, name, precondition))
            .await
    }

    // ---- typed helpers for the in-process controllers ----

    pub async fn get_obj<T: Object>(&self, ns: &str, name: &str) -> Result<T, ApiError> {
        let v = self.get(T::KIND, ns, name).await?;
        serde_json::from_value(v).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The objects of a kind as the cache has them now (no waiting): what a controller reads.
    pub fn cached<T: Object>(&self, ns: Option<&str>) -> Vec<T> {
        let (items, _) = self.cache.snapshot(T::KIND, &T::KIND.key_prefix(ns));
        items.iter().filter_map(|o| o.decode()).collect()
    }

    pub async fn create_obj<T: Object>(&self, obj: &T) -> Result<T, ApiError> {
        let v = serde_json::to_value(obj).map_err(|e| ApiError::Internal(e.to_string()))?;
        let out = self.create(T::KIND, &obj.metadata().namespace, v).await?;
        serde_json::from_value(out).map_err(|e| ApiError::Internal(e.to_string()))
    }

    pub async fn update_obj<T: Object>(&self, obj: &T, sub: Subresource) -> Result<T, ApiError> {
        let m = obj.metadata();
        let v = serde_json::to_value(obj).map_err(|e| ApiError::Internal(e.to_string()))?;
        let out = self.update(T::KIND, &m.namespace, &m.name, v, sub).await?;
        serde_json::from_value(out).map_err(|e| ApiError::Internal(e.to_string()))
    }

    pub async fn patch_obj<T: Object>(
        &self,
        ns: &str,
        name: &str,
        patch: Value,
        sub: Subresource,
    ) -> Result<T, ApiError> {
        let out = self.patch(T::KIND, ns, name, patch, sub).await?;
        serde_json::from_value(out).map_err(|e| ApiError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = serde_json::json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        merge_patch(
            &mut t,
            &serde_json::json!({"a": {"b": null, "e": 3}, "d": [3]}),
        );
        assert_eq!(t, serde_json::json!({"a": {"c": 2, "e": 3}, "d": [3]}));
    }

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
            br#"{"metadata":{"name":"p","namespace":"default"},"spec":{"nodeName":"n1"}}"#,
            3,
        )
        .unwrap();
        assert!(f.matches(&o));
        assert!(
            !FieldSelector::parse("spec.nodeName!=n1")
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("status.phase=Running").is_err());
    }
}

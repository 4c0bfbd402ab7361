//! The watch cache: one store watch on `/registry/` for the whole server, fanned out in
//! process.
//!
//! It keeps, per kind, the current objects (to serve lists and to start watches from "now")
//! and a window of recent events (to start watches from an older resourceVersion). Every watcher
//! shares the same parsed event: the object's JSON is produced once per write, whatever the
//! number of watchers. A watch from a revision older than the window gets `Expired` and
//! relists, as with kube-apiserver's watch cache.

use bytes::Bytes;
use podd_api::{Kind, WatchEventType as EventType};
use podd_store::{EventKind, KeyValue, Revision, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// One stored object, parsed once: its JSON (with metadata.resourceVersion set) and the
/// fields watches and lists filter on.
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Pods only: spec.nodeName.
    pub node_name: String,
    /// Pods only: status.phase.
    pub phase: String,
    /// The uids in metadata.ownerReferences, for cascading deletes.
    pub owners: Vec<String>,
    pub revision: Revision,
    pub json: Bytes,
}

impl CachedObject {
    /// Builds the cached form of a stored value at revision `rev`.
    pub fn from_stored(kind: Kind, key: &str, value: &[u8], rev: Revision) -> Option<CachedObject> {
        let mut v: serde_json::Value = serde_json::from_slice(value).ok()?;
        set_resource_version(kind, &mut v, rev);
        let meta = v.get("metadata");
        let s = |field: &str| {
            meta.and_then(|m| m.get(field))
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        let node_name = v
            .pointer("/spec/nodeName")
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string();
        let phase = if kind == Kind::Pod {
            v.pointer("/status/phase")
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        } else {
            String::new()
        };
        let owners = meta
            .and_then(|m| m.get("ownerReferences"))
            .and_then(|o| o.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.get("uid").and_then(|u| u.as_str()).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Some(CachedObject {
            key: key.to_string(),
            owners,
            namespace: s("namespace"),
            name: s("name"),
            uid: s("uid"),
            labels,
            node_name,
            phase,
            revision: rev,
            json: Bytes::from(serde_json::to_vec(&v).ok()?),
        })
    }

    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.json).ok()
    }
}

/// Puts kind, apiVersion and resourceVersion into an object as the API returns it.
pub fn set_resource_version(kind: Kind, v: &mut serde_json::Value, rev: Revision) {
    if let Some(obj) = v.as_object_mut() {
        obj.insert("kind".into(), kind.name().into());
        obj.insert("apiVersion".into(), kind.api_version().into());
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert("resourceVersion".into(), rev.to_string().into());
        }
    }
}

/// What one event of the window costs, by its objects' JSON.
fn event_bytes(ev: &CacheEvent) -> usize {
    ev.object.json.len() + ev.prev.as_ref().map_or(0, |p| p.json.len())
}

#[derive(Debug)]
pub struct CacheEvent {
    pub revision: Revision,
    pub kind: EventType,
    pub object: Arc<CachedObject>,
    /// The object before this event, if it existed (for selector transitions).
    pub prev: Option<Arc<CachedObject>>,
}

/// What a watch starts with: events to replay and a receiver for the ones after.
pub struct Subscription {
    pub backlog: Vec<Arc<CacheEvent>>,
    pub rx: broadcast::Receiver<Arc<CacheEvent>>,
}

struct KindState {
    objects: BTreeMap<String, Arc<CachedObject>>,
    /// owner uid -> keys of the objects it owns.
    by_owner: HashMap<String, BTreeSet<String>>,
    /// node name -> keys of the pods bound to it.
    by_node: HashMap<String, BTreeSet<String>>,
    events: VecDeque<Arc<CacheEvent>>,
    /// The JSON bytes `events` hold (each event's object and previous object).
    events_bytes: usize,
    /// `events` hold every event with revision in (oldest, revision].
    oldest: Revision,
    tx: broadcast::Sender<Arc<CacheEvent>>,
}

impl KindState {
    fn unindex(&mut self, o: &CachedObject) {
        for u in &o.owners {
            if let Some(set) = self.by_owner.get_mut(u) {
                set.remove(&o.key);
                if set.is_empty() {
                    self.by_owner.remove(u);
                }
            }
        }
        if !o.node_name.is_empty()
            && let Some(set) = self.by_node.get_mut(&o.node_name)
        {
            set.remove(&o.key);
            if set.is_empty() {
                self.by_node.remove(&o.node_name);
            }
        }
    }

    fn index(&mut self, o: &CachedObject) {
        for u in &o.owners {
            self.by_owner
                .entry(u.clone())
                .or_default()
                .insert(o.key.clone());
        }
        if !o.node_name.is_empty() {
            self.by_node
                .entry(o.node_name.clone())
                .or_default()
                .insert(o.key.clone());
        }
    }

    /// Inserts or replaces; returns the previous object.
    fn put(&mut self, o: Arc<CachedObject>) -> Option<Arc<CachedObject>> {
        let prev = self.objects.insert(o.key.clone(), o.clone());
        if let Some(p) = &prev {
            self.unindex(p);
        }
        self.index(&o);
        prev
    }

    fn take(&mut self, key: &str) -> Option<Arc<CachedObject>> {
        let prev = self.objects.remove(key);
        if let Some(p) = &prev {
            self.unindex(p);
        }
        prev
    }

    fn lookup(&self, keys: Option<&BTreeSet<String>>) -> Vec<Arc<CachedObject>> {
        keys.map(|ks| {
            ks.iter()
                .filter_map(|k| self.objects.get(k).cloned())
                .collect()
        })
        .unwrap_or_default()
    }

    fn new(at: Revision, fanout: usize) -> KindState {
        KindState {
            objects: BTreeMap::new(),
            by_owner: HashMap::new(),
            by_node: HashMap::new(),
            events: VecDeque::new(),
            events_bytes: 0,
            oldest: at,
            tx: broadcast::channel(fanout).0,
        }
    }
}

struct Inner {
    revision: Revision,
    kinds: HashMap<Kind, KindState>,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Events kept per kind for watches that start in the past.
    pub window: usize,
    /// The most JSON bytes those events may hold per kind. Without it, a deleted object stayed
    /// in memory as long as its events were in the window (a 100,000-container pod kept the
    /// server 700 MB larger after its delete). A watch from further back is served from the
    /// store, or gets Expired and relists. Default 64 MiB.
    pub window_bytes: usize,
    /// Events buffered per watcher before a slow watcher is cut off (it then relists).
    pub fanout_buffer: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            window: 50_000,
            window_bytes: 64 << 20,
            fanout_buffer: 65_536,
        }
    }
}

pub struct WatchCache {
    inner: Mutex<Inner>,
    rev_tx: watch::Sender<Revision>,
    config: CacheConfig,
}

pub const REGISTRY_PREFIX: &str = "/registry/";

fn kind_of_key(key: &str) -> Option<Kind> {
    Kind::from_key(key)
}

impl WatchCache {
    pub fn new(config: CacheConfig) -> Arc<WatchCache> {
        let kinds = Kind::ALL
            .into_iter()
            .map(|k| (k, KindState::new(0, config.fanout_buffer)))
            .collect();
        Arc::new(WatchCache {
            inner: Mutex::new(Inner { revision: 0, kinds }),
            rev_tx: watch::channel(0).0,
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn revision(&self) -> Revision {
        self.lock().revision
    }

    /// Loads everything under /registry/ and follows the store from there, until `shutdown`.
    /// Restarts from a fresh list whenever the store watch fails.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.clone().follow(&store, &mut shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache lost the store watch; relisting");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    async fn follow(
        self: Arc<Self>,
        store: &Arc<dyn Store>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        use futures::StreamExt;
        let list = store.list(REGISTRY_PREFIX).await?;
        self.reset(&list.items, list.revision);
        let mut stream = store.watch(REGISTRY_PREFIX, list.revision).await?;
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(ev)) => self.apply(ev.kind, ev.kv),
                    Some(Err(e)) => return Err(e),
                    None => return Err(StoreError::Backend { op: "watch", message: "the store closed the watch".into() }),
                },
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// Replaces the state with a fresh list. Existing watchers are cut off (their senders are
    /// replaced), so they relist.
    fn reset(&self, items: &[KeyValue], rev: Revision) {
        let mut inner = self.lock();
        for k in Kind::ALL {
            inner
                .kinds
                .insert(k, KindState::new(rev, self.config.fanout_buffer));
        }
        for kv in items {
            if let Some(kind) = kind_of_key(&kv.key)
                && let Some(obj) =
                    CachedObject::from_stored(kind, &kv.key, &kv.value, kv.mod_revision)
                && let Some(st) = inner.kinds.get_mut(&kind)
            {
                st.put(Arc::new(obj));
            }
        }
        inner.revision = rev;
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    fn apply(&self, kind: EventKind, kv: KeyValue) {
        let rev = kv.mod_revision;
        let mut inner = self.lock();
        if rev <= inner.revision {
            return;
        }
        inner.revision = rev;
        if let Some(k) = kind_of_key(&kv.key)
            && let Some(obj) = CachedObject::from_stored(k, &kv.key, &kv.value, rev)
        {
            let window = self.config.window;
            let st = inner.kinds.get_mut(&k).expect("every kind has a state");
            let obj = Arc::new(obj);
            let (ty, prev) = match kind {
                EventKind::Deleted => (EventType::Deleted, st.take(&kv.key)),
                EventKind::Created | EventKind::Modified => {
                    let prev = st.put(obj.clone());
                    let ty = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    (ty, prev)
                }
            };
            let ev = Arc::new(CacheEvent {
                revision: rev,
                kind: ty,
                object: obj,
                prev,
            });
            st.events_bytes += event_bytes(&ev);
            st.events.push_back(ev.clone());
            while st.events.len() > window
                || (st.events_bytes > self.config.window_bytes && st.events.len() > 1)
            {
                if let Some(old) = st.events.pop_front() {
                    st.events_bytes -= event_bytes(&old);
                    st.oldest = old.revision;
                }
            }
            // No receivers is fine.
            let _ = st.tx.send(ev);
        }
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    /// Forgets events at and below `rev` (after a store compaction).
    pub fn compact(&self, rev: Revision) {
        let mut inner = self.lock();
        for st in inner.kinds.values_mut() {
            while st.events.front().is_some_and(|e| e.revision <= rev) {
                if let Some(old) = st.events.pop_front() {
                    st.events_bytes -= event_bytes(&old);
                }
            }
            st.oldest = st.oldest.max(rev);
        }
    }

    /// Waits until the cache has seen revision `rev`; false on timeout.
    pub async fn wait_for(&self, rev: Revision, timeout: Duration) -> bool {
        let mut rx = self.rev_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The current objects of a kind under `prefix`, and the revision they are at.
    pub fn snapshot(&self, kind: Kind, prefix: &str) -> (Vec<Arc<CachedObject>>, Revision) {
        let inner = self.lock();
        let st = &inner.kinds[&kind];
        let items = st
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.revision)
    }

    /// The objects of `kind` under `prefix` as they were at revision `rev`: the current ones
    /// with the window's later events undone, newest first (an add removed, a change or a
    /// delete put back to the object before it). Err(oldest) when the window no longer
    /// reaches back to `rev` (it holds every event after `oldest`). A `rev` the cache has not
    /// reached yet gives the current objects.
    pub fn snapshot_at(
        &self,
        kind: Kind,
        prefix: &str,
        rev: Revision,
    ) -> Result<Vec<Arc<CachedObject>>, Revision> {
        let inner = self.lock();
        let st = &inner.kinds[&kind];
        if rev < st.oldest {
            return Err(st.oldest);
        }
        let mut objects: BTreeMap<&str, Arc<CachedObject>> = st
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        for ev in st.events.iter().rev().take_while(|e| e.revision > rev) {
            let key = ev.object.key.as_str();
            if !key.starts_with(prefix) {
                continue;
            }
            match &ev.prev {
                Some(p) => {
                    objects.insert(key, p.clone());
                }
                None => {
                    objects.remove(key);
                }
            }
        }
        Ok(objects.into_values().collect())
    }

    /// The objects of `kind` that name `owner_uid` in their ownerReferences.
    pub fn owned_by(&self, kind: Kind, owner_uid: &str) -> Vec<Arc<CachedObject>> {
        let inner = self.lock();
        let st = &inner.kinds[&kind];
        st.lookup(st.by_owner.get(owner_uid))
    }

    /// The pods bound to `node`.
    pub fn on_node(&self, node: &str) -> Vec<Arc<CachedObject>> {
        let inner = self.lock();
        let st = &inner.kinds[&Kind::Pod];
        st.lookup(st.by_node.get(node))
    }

    /// A receiver for the events of `kind` from now on.
    pub fn subscribe_now(&self, kind: Kind) -> broadcast::Receiver<Arc<CacheEvent>> {
        self.lock().kinds[&kind].tx.subscribe()
    }

    /// A receiver of the cache's revision, which moves with every write it sees.
    pub fn revision_watch(&self) -> watch::Receiver<Revision> {
        self.rev_tx.subscribe()
    }

    /// One object from the cache.
    pub fn get(&self, kind: Kind, key: &str) -> Option<Arc<CachedObject>> {
        self.lock().kinds[&kind].objects.get(key).cloned()
    }

    /// A snapshot plus a receiver for everything after it, atomically.
    pub fn snapshot_and_subscribe(
        &self,
        kind: Kind,
        prefix: &str,
    ) -> (
        Vec<Arc<CachedObject>>,
        Revision,
        broadcast::Receiver<Arc<CacheEvent>>,
    ) {
        let inner = self.lock();
        let st = &inner.kinds[&kind];
        let items = st
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.revision, st.tx.subscribe())
    }

    /// The oldest revision a watch or a continued list of `kind` may start from.
    pub fn oldest(&self, kind: Kind) -> Revision {
        self.lock().kinds[&kind].oldest
    }

    /// The events after `after` and a receiver for the rest; Err(oldest) when `after` is
    /// older than the window.
    pub fn subscribe(&self, kind: Kind, after: Revision) -> Result<Subscription, Revision> {
        let inner = self.lock();
        let st = &inner.kinds[&kind];
        if after < st.oldest {
            return Err(st.oldest);
        }
        let start = st.events.partition_point(|e| e.revision <= after);
        Ok(Subscription {
            backlog: st.events.range(start..).cloned().collect(),
            rx: st.tx.subscribe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, v: serde_json::Value, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: serde_json::to_vec(&v).unwrap(),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    #[test]
    fn events_replay_from_a_revision_and_expire_outside_the_window() {
        let c = WatchCache::new(CacheConfig {
            window: 3,
            window_bytes: usize::MAX,
            fanout_buffer: 16,
        });
        c.reset(&[], 0);
        for i in 1..=5 {
            let key = format!("/registry/pods/default/p{i}");
            let v = serde_json::json!({"metadata": {"name": format!("p{i}"), "namespace": "default"}, "spec": {"nodeName": "n1"}});
            c.apply(EventKind::Created, kv(&key, v, i));
        }
        assert_eq!(c.revision(), 5);
        let s = c.subscribe(Kind::Pod, 3).unwrap();
        let revs: Vec<_> = s.backlog.iter().map(|e| e.revision).collect();
        assert_eq!(revs, vec![4, 5]);
        assert_eq!(s.backlog[0].object.node_name, "n1");
        assert!(c.subscribe(Kind::Pod, 1).is_err());
        let (items, rev) = c.snapshot(Kind::Pod, "/registry/pods/default/");
        assert_eq!((items.len(), rev), (5, 5));
        let v: serde_json::Value = serde_json::from_slice(&items[0].json).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "1");
        assert_eq!(v["kind"], "Pod");
        c.compact(4);
        assert!(c.subscribe(Kind::Pod, 3).is_err());
        assert!(c.subscribe(Kind::Pod, 4).is_ok());
    }

    /// The keys and resourceVersions of a snapshot.
    fn state(items: &[Arc<CachedObject>]) -> Vec<(String, Revision)> {
        items.iter().map(|o| (o.name.clone(), o.revision)).collect()
    }

    #[test]
    fn a_past_revision_is_rebuilt_from_the_window() {
        let c = WatchCache::new(CacheConfig {
            window: 100,
            window_bytes: usize::MAX,
            fanout_buffer: 16,
        });
        c.reset(&[], 0);
        let pod = |n: &str, g: u32| serde_json::json!({"metadata": {"name": n, "namespace": "default", "generation": g}});
        let key = |n: &str| format!("/registry/pods/default/{n}");
        // Every revision's expected state, recorded as the writes go.
        let mut expected: Vec<Vec<(String, Revision)>> = vec![vec![]];
        let mut now: BTreeMap<String, Revision> = BTreeMap::new();
        let mut rev = 0;
        let writes: &[(&str, &str)] = &[
            ("create", "a"),
            ("create", "b"),
            ("update", "a"),
            ("create", "c"),
            ("delete", "b"),
            ("update", "c"),
            ("create", "b"),
            ("delete", "a"),
        ];
        for (op, n) in writes {
            rev += 1;
            let kind = match *op {
                "create" => EventKind::Created,
                "update" => EventKind::Modified,
                _ => EventKind::Deleted,
            };
            c.apply(kind.clone(), kv(&key(n), pod(n, rev as u32), rev));
            if kind == EventKind::Deleted {
                now.remove(*n);
            } else {
                now.insert(n.to_string(), rev);
            }
            expected.push(now.iter().map(|(k, v)| (k.clone(), *v)).collect());
        }
        // A deleted object comes back as it was before its delete (resourceVersion included).
        for (r, want) in expected.iter().enumerate() {
            let got = c
                .snapshot_at(Kind::Pod, "/registry/pods/", r as Revision)
                .unwrap();
            assert_eq!(&state(&got), want, "at revision {r}");
        }
        c.compact(3);
        assert_eq!(
            c.snapshot_at(Kind::Pod, "/registry/pods/", 2).unwrap_err(),
            3
        );
        assert_eq!(
            state(&c.snapshot_at(Kind::Pod, "/registry/pods/", 3).unwrap()),
            expected[3]
        );
    }

    #[test]
    fn a_deleted_large_object_leaves_the_window_by_bytes() {
        let c = WatchCache::new(CacheConfig {
            window: 1000,
            window_bytes: 64 << 10,
            fanout_buffer: 16,
        });
        c.reset(&[], 0);
        let key = "/registry/pods/default/big";
        let big = serde_json::json!({"metadata": {"name": "big", "namespace": "default"},
            "spec": {"filler": "x".repeat(40 << 10)}});
        c.apply(EventKind::Created, kv(key, big.clone(), 1));
        c.apply(EventKind::Deleted, kv(key, big, 2));
        for i in 3..=20 {
            let key = format!("/registry/pods/default/p{i}");
            let v =
                serde_json::json!({"metadata": {"name": format!("p{i}"), "namespace": "default"}});
            c.apply(EventKind::Created, kv(&key, v, i));
        }
        let inner = c.lock();
        let st = &inner.kinds[&Kind::Pod];
        assert!(
            st.events_bytes <= 64 << 10,
            "{} bytes kept",
            st.events_bytes
        );
        assert!(
            st.events.iter().all(|e| e.object.name != "big"),
            "the deleted object is still held by the window"
        );
        assert_eq!(st.events.len(), 18, "small events stay");
    }
}

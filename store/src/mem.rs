//! The in-memory backend: a `BTreeMap` of keys plus the hub's event history.
//!
//! For tests, simulations and single-process use. Everything is lost when the process exits.
//! History is kept until `compact` is called, as etcd does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::hub::EventHub;
use crate::{
    EventKind, KeyValue, ListResult, Revision, Store, StoreError, WatchEvent, WatchStream,
};

pub struct MemStore {
    state: Mutex<MemState>,
    hub: Arc<EventHub>,
}

struct MemState {
    kv: BTreeMap<String, KeyValue>,
    revision: Revision,
}

impl Drop for MemStore {
    fn drop(&mut self) {
        self.hub.close();
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    pub fn new() -> Self {
        MemStore {
            state: Mutex::new(MemState {
                kv: BTreeMap::new(),
                revision: 0,
            }),
            hub: Arc::new(EventHub::new(0, 0, None)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // Every mutation below is complete before anything can panic, so the data stays valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks `expected` against the stored key: the shared precondition of update and delete.
pub(crate) fn check_expected(
    key: &str,
    current: Option<&KeyValue>,
    expected: Option<Revision>,
) -> Result<(), StoreError> {
    let Some(cur) = current else {
        return Err(StoreError::NotFound {
            key: key.to_string(),
        });
    };
    match expected {
        Some(exp) if exp != cur.mod_revision => Err(StoreError::Conflict {
            key: key.to_string(),
            expected: exp,
            actual: cur.mod_revision,
        }),
        _ => Ok(()),
    }
}

pub(crate) fn check_compact(
    revision: Revision,
    current: Revision,
    what: &'static str,
) -> Result<(), StoreError> {
    if revision > current {
        return Err(StoreError::Backend {
            op: what,
            message: format!(
                "cannot compact at revision {revision}: it is in the future (current revision is {current})"
            ),
        });
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().kv.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let st = self.lock();
        let items = st
            .kv
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok(ListResult {
            items,
            revision: st.revision,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let mut st = self.lock();
        if st.kv.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let rev = st.revision + 1;
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: rev,
            mod_revision: rev,
        };
        st.kv.insert(key.to_string(), kv.clone());
        st.revision = rev;
        // Published under the state lock, so the hub sees revisions in order.
        self.hub.publish(WatchEvent {
            kind: EventKind::Created,
            kv,
        });
        Ok(rev)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let mut st = self.lock();
        check_expected(key, st.kv.get(key), expected)?;
        let rev = st.revision + 1;
        st.revision = rev;
        let Some(entry) = st.kv.get_mut(key) else {
            unreachable!("checked above");
        };
        entry.value = value;
        entry.mod_revision = rev;
        let kv = entry.clone();
        self.hub.publish(WatchEvent {
            kind: EventKind::Modified,
            kv,
        });
        Ok(rev)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let mut st = self.lock();
        check_expected(key, st.kv.get(key), expected)?;
        let rev = st.revision + 1;
        st.revision = rev;
        let Some(mut kv) = st.kv.remove(key) else {
            unreachable!("checked above");
        };
        kv.mod_revision = rev;
        self.hub.publish(WatchEvent {
            kind: EventKind::Deleted,
            kv,
        });
        Ok(rev)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.hub.check_watchable(after)?;
        Ok(self.hub.watch(None, prefix.to_string(), after))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let st = self.lock();
        check_compact(revision, st.revision, "compact")?;
        self.hub.compact(revision);
        Ok(())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }
}

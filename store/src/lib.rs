//! The cluster state store: a revisioned key-value space with watch, as etcd models it.
//!
//! Keys are `/registry/<plural>/<namespace>/<name>` (cluster-scoped: `/registry/nodes/<name>`).
//! Every write gets the next global revision; a key remembers the revision that created it
//! and the one that last modified it. A watch replays every event after a given revision, in
//! revision order, then follows new ones; asking for a compacted revision is an error, so the
//! caller relists.

use futures::stream::BoxStream;

#[cfg(feature = "testing")]
pub mod conformance;
mod hub;
mod mem;

pub use mem::MemStore;

/// A global, strictly increasing write counter. The first write is revision 1.
pub type Revision = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created (its create_revision is the event's revision).
    Created,
    Modified,
    /// `kv` holds the value before the delete; `kv.mod_revision` is the delete's revision.
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} not found")]
    NotFound { key: String },
    /// Optimistic concurrency failed: the caller read an older version.
    #[error(
        "conflict on {key}: expected revision {expected}, the stored one is {actual}; read it again and retry"
    )]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error(
        "revision {requested} has been compacted (oldest kept is {compacted}); relist and watch from the list's revision"
    )]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("store backend failed during {op}: {message}")]
    Backend { op: &'static str, message: String },
}

/// What a list returns: the items and the revision the list was read at, to watch from.
#[derive(Debug, Clone, Default)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    pub revision: Revision,
}

pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key that starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError>;

    /// Creates `key`; fails with AlreadyExists if present. Returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError>;

    /// Replaces `key`. With `expected = Some(r)`, fails with Conflict unless its mod_revision is r.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key`, with the same optional precondition. Returns the delete's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError>;

    /// Every event on keys under `prefix` with revision > `after`, in order, then new ones.
    /// Fails with Compacted when `after` is older than the compaction point.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// Forgets history at and below `revision` (watchers from there get Compacted).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The revision of the latest write.
    async fn revision(&self) -> Result<Revision, StoreError>;
}

//! The cluster state store: a revisioned key-value space with watch, as etcd models it.
//!
//! Keys are `/registry/<plural>/<namespace>/<name>` (cluster-scoped: `/registry/nodes/<name>`).
//! Every write gets the next global revision; a key remembers the revision that created it
//! and the one that last modified it. A watch replays every event after a given revision, in
//! revision order, then follows new ones; asking for a compacted revision is an error, so the
//! caller relists.

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

use futures::stream::BoxStream;

mod compactor;
#[cfg(feature = "testing")]
pub mod conformance;
mod election;
mod etcd;
mod hub;
mod mem;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use compactor::{compact_keeping, spawn_compactor};
pub use election::{AlwaysLeader, EtcdElector, EtcdElectorOptions, LeaderElector, Leadership};
pub use etcd::EtcdStore;
pub use mem::MemStore;
pub use sqlite::{SqliteOptions, SqliteStore, SqliteSync};

/// A global, strictly increasing write counter, one per successful write. The first write is
/// revision 1 on the embedded stores; on etcd revisions are etcd's own (its first write is 2).
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

    /// Forgets history at and below `revision`: watching from `after < revision` gets Compacted,
    /// from `revision` on still works. Compacting an older revision again is a no-op; a revision
    /// in the future is an error.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The revision of the latest write.
    async fn revision(&self) -> Result<Revision, StoreError>;
}

/// Where the store lives, parsed from the daemon's `--store` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory:`: in-process, lost on exit (tests, demos).
    Memory,
    /// `sqlite:///var/lib/podd/podd.db`: the embedded default. `?sync=normal` acknowledges
    /// writes before the fsync (see [`SqliteSync`]).
    Sqlite(std::path::PathBuf, SqliteSync),
    /// `etcd://127.0.0.1:2379[,host:port...]`: shared by several servers, with leader election.
    Etcd(Vec<String>),
}

/// The default store of a node: `sqlite:///var/lib/podd/podd.db`.
pub const DEFAULT_STORE_URL: &str = "sqlite:///var/lib/podd/podd.db";

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Backend {
            op: "open",
            message: format!(
                "bad store URL {url:?}: {why}; use memory:, sqlite:///path/to/podd.db or etcd://host:port[,host:port...]"
            ),
        };
        if url == "memory:" || url == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (path, sync) = match rest.split_once('?') {
                None => (rest, SqliteSync::Full),
                Some((path, "sync=full")) => (path, SqliteSync::Full),
                Some((path, "sync=normal")) => (path, SqliteSync::Normal),
                Some((_, q)) => {
                    return Err(bad(&format!("unknown option {q:?} (sync=full|normal)")));
                }
            };
            if path.is_empty() {
                return Err(bad("no database path"));
            }
            return Ok(StoreUrl::Sqlite(path.into(), sync));
        }
        if let Some(rest) = url.strip_prefix("etcd://") {
            let endpoints: Vec<String> = rest
                .trim_end_matches('/')
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| format!("http://{e}"))
                .collect();
            if endpoints.is_empty() {
                return Err(bad("no etcd endpoint"));
            }
            if let Some(e) = endpoints.iter().find(|e| {
                e.rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            }) {
                return Err(bad(&format!("{} has no port", &e["http://".len()..])));
            }
            return Ok(StoreUrl::Etcd(endpoints));
        }
        Err(bad("unknown scheme"))
    }
}

/// Opens the store at `url` (see [`StoreUrl`]).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(open_with_elector(url, "podd").await?.0)
}

/// Opens the store at `url` and the leader elector that goes with it: etcd elects among the
/// servers sharing it (`identity` names this one); the embedded stores always lead.
pub async fn open_with_elector(
    url: &str,
    identity: &str,
) -> Result<(std::sync::Arc<dyn Store>, std::sync::Arc<dyn LeaderElector>), StoreError> {
    use std::sync::Arc;
    match url.parse::<StoreUrl>()? {
        StoreUrl::Memory => Ok((Arc::new(MemStore::new()), Arc::new(AlwaysLeader))),
        StoreUrl::Sqlite(path, sync) => {
            let options = SqliteOptions {
                sync,
                ..SqliteOptions::default()
            };
            let store = tokio::task::spawn_blocking(move || SqliteStore::open_with(path, options))
                .await
                .map_err(|e| StoreError::Backend {
                    op: "open",
                    message: format!("opening the sqlite store: {e}"),
                })??;
            Ok((Arc::new(store), Arc::new(AlwaysLeader)))
        }
        StoreUrl::Etcd(endpoints) => {
            let store = EtcdStore::connect(&endpoints).await?;
            let elector =
                EtcdElector::new(store.client().clone(), EtcdElectorOptions::new(identity));
            Ok((Arc::new(store), Arc::new(elector)))
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::{SqliteSync, StoreUrl};

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("memory:".parse::<StoreUrl>().unwrap(), StoreUrl::Memory);
        assert_eq!(
            "sqlite:///var/lib/podd/podd.db"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Sqlite("/var/lib/podd/podd.db".into(), SqliteSync::Full)
        );
        assert_eq!(
            "sqlite:///d/podd.db?sync=normal"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Sqlite("/d/podd.db".into(), SqliteSync::Normal)
        );
        assert_eq!(
            "sqlite:rel/podd.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite("rel/podd.db".into(), SqliteSync::Full)
        );
        assert_eq!(
            "etcd://127.0.0.1:2379,127.0.0.2:2379"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "http://127.0.0.2:2379".into()
            ])
        );
    }

    #[test]
    fn rejects_bad_urls_with_the_fix() {
        for bad in [
            "",
            "postgres://x",
            "sqlite://",
            "sqlite:///x?fast",
            "etcd://",
            "etcd://host",
        ] {
            let err = bad.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(err.contains("use memory:"), "{bad}: {err}");
        }
    }
}

//! The conformance suite against the SQLite backend, plus its restart durability.

use std::sync::Arc;

use podd_store::{SqliteOptions, SqliteStore, Store};
use tempfile::TempDir;

async fn sqlite() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("podd.db")).unwrap();
    (Arc::new(store), dir)
}

podd_store::store_conformance_tests!(sqlite());

/// A tiny watch cache, so that watchers read the durable log instead of memory.
mod tiny_cache {
    use super::*;

    async fn sqlite_tiny_cache() -> (Arc<dyn Store>, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            cache_events: 3,
            max_batch: 7,
            sync: podd_store::SqliteSync::Normal,
        };
        let store = SqliteStore::open_with(dir.path().join("podd.db"), options).unwrap();
        (Arc::new(store), dir)
    }

    podd_store::store_conformance_tests!(sqlite_tiny_cache());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_and_revisions_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/podd.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let written = podd_store::conformance::write_keys(&*store, "/t/", 200).await;
    store.create("/t/dur/gone", vec![]).await.unwrap();
    store.delete("/t/dur/gone", None).await.unwrap();
    drop(store);

    let reopened: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    podd_store::conformance::check_after_restart(reopened, "/t/", &written, "/t/dur/gone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("podd.db");
    let first = SqliteStore::open(&path).unwrap();
    let err = SqliteStore::open(&path)
        .err()
        .expect("second open must fail");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    SqliteStore::open(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_deletes_old_log_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("podd.db");
    let store = SqliteStore::open(&path).unwrap();
    for i in 0..100 {
        store
            .create(&format!("/t/k{i}"), vec![0; 10])
            .await
            .unwrap();
    }
    let count = |p: &std::path::Path| -> i64 {
        let conn = rusqlite::Connection::open(p).unwrap();
        conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&path), 100);
    store.compact(60).await.unwrap();
    assert_eq!(count(&path), 40);
    drop(store);
    // The compaction point survives a restart.
    let store = SqliteStore::open(&path).unwrap();
    assert!(matches!(
        store.watch("/t/", 59).await,
        Err(podd_store::StoreError::Compacted { compacted: 60, .. })
    ));
    assert!(store.watch("/t/", 60).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_store_dropped() {
    let (store, _dir) = sqlite().await;
    podd_store::conformance::watch_ends_when_store_dropped(store, "/t/").await;
}

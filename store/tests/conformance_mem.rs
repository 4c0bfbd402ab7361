//! The conformance suite against the in-memory backend.

use std::sync::Arc;

use podd_store::{MemStore, Store};

async fn mem() -> (Arc<dyn Store>, ()) {
    (Arc::new(MemStore::new()), ())
}

podd_store::store_conformance_tests!(mem());

#[tokio::test]
async fn watch_ends_when_store_dropped() {
    let (store, ()) = mem().await;
    podd_store::conformance::watch_ends_when_store_dropped(store, "/t/").await;
}

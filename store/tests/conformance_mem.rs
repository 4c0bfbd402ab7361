//! The conformance suite against the in-memory backend.

use std::sync::Arc;

use podd_store::{MemStore, Store};

async fn mem() -> (Arc<dyn Store>, ()) {
    (Arc::new(MemStore::new()), ())
}

podd_store::store_conformance_tests!(mem());

//! Periodic compaction: history is kept until someone compacts it (as with etcd, where
//! kube-apiserver compacts every five minutes). The server runs one compactor (on etcd, the
//! leader; compacting twice is harmless anyway).

use std::sync::Arc;
use std::time::Duration;

use crate::{Revision, Store, StoreError};

/// Compacts everything older than the latest `keep` revisions. Returns the compaction point,
/// or None when there was not yet enough history.
pub async fn compact_keeping(
    store: &dyn Store,
    keep: Revision,
) -> Result<Option<Revision>, StoreError> {
    let current = store.revision().await?;
    let point = current - keep.max(0);
    if point < 1 {
        return Ok(None);
    }
    store.compact(point).await?;
    Ok(Some(point))
}

/// Every `every`, compacts all but the latest `keep` revisions, until the task is aborted.
pub fn spawn_compactor(
    store: Arc<dyn Store>,
    keep: Revision,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match compact_keeping(&*store, keep).await {
                Ok(Some(point)) => tracing::debug!(point, "compacted store history"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "store compaction failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStore;

    #[tokio::test]
    async fn keeps_the_latest_revisions() {
        let store = MemStore::new();
        assert_eq!(compact_keeping(&store, 10).await.unwrap(), None);
        for i in 0..25 {
            store.create(&format!("/k{i}"), vec![]).await.unwrap();
        }
        assert_eq!(compact_keeping(&store, 10).await.unwrap(), Some(15));
        assert!(store.watch("/", 14).await.is_err());
        assert!(store.watch("/", 15).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_background_compactor_runs() {
        let store = Arc::new(MemStore::new());
        for i in 0..25 {
            store.create(&format!("/k{i}"), vec![]).await.unwrap();
        }
        let task = spawn_compactor(store.clone(), 5, Duration::from_secs(60));
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(store.watch("/", 19).await.is_err());
        task.abort();
    }
}

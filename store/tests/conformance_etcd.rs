//! The conformance suite against a real etcd started on loopback, plus durability across
//! etcd restarts and crashes.

use std::sync::Arc;
use std::time::Duration;

use podd_store::testing::EtcdServer;
use podd_store::{Store, StoreError};

async fn etcd() -> (Arc<dyn Store>, EtcdServer) {
    let server = EtcdServer::start().await.expect("start etcd");
    let store = server.store().await.unwrap();
    (Arc::new(store), server)
}

podd_store::store_conformance_tests!(etcd());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_write_maps_to_etcd_revision() {
    let (store, _server) = etcd().await;
    // etcd starts at revision 1; our revisions are etcd's, one to one.
    assert_eq!(store.revision().await.unwrap(), 1);
    assert_eq!(store.create("/t/a", vec![]).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_and_watches_resume() {
    let (store, mut server) = etcd().await;
    let written = podd_store::conformance::write_keys(&*store, "/t/", 100).await;
    store.create("/t/dur/gone", vec![]).await.unwrap();
    store.delete("/t/dur/gone", None).await.unwrap();
    let before = store.revision().await.unwrap();
    let mut live = store.watch("/t/live/", before).await.unwrap();

    server.restart().await.unwrap();

    // The same client reconnects by itself.
    podd_store::conformance::check_after_restart(
        Arc::clone(&store),
        "/t/",
        &written,
        "/t/dur/gone",
    )
    .await;
    // The watch opened before the restart resumes and sees writes made after it.
    let r = store.create("/t/live/x", b"1".to_vec()).await.unwrap();
    let ev = podd_store::conformance::take_events(&mut live, 1)
        .await
        .remove(0);
    assert_eq!((ev.kv.key.as_str(), ev.revision()), ("/t/live/x", r));

    // A fresh client sees the same.
    let fresh: Arc<dyn Store> = Arc::new(server.store().await.unwrap());
    assert_eq!(
        fresh.get("/t/live/x").await.unwrap().unwrap().mod_revision,
        r
    );
}

/// Writers run while etcd is SIGKILLed at random moments; after it restarts, every
/// acknowledged write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_etcd_loses_no_acknowledged_write() {
    use rand::Rng;
    let (store, mut server) = etcd().await;
    let mut total = 0;
    for round in 0..4 {
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut writers = Vec::new();
        for w in 0..4 {
            let store = Arc::clone(&store);
            let acked = Arc::clone(&acked);
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{round}/{w}/{i}");
                    match store.create(&key, key.clone().into_bytes()).await {
                        Ok(rev) => acked.lock().unwrap().push((key, rev)),
                        // In flight when etcd died: unknown outcome, not acknowledged.
                        Err(StoreError::Backend { .. }) => return,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        let wait = rand::thread_rng().gen_range(50..400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill();
        for w in writers {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("writers stop once etcd is gone")
                .unwrap();
        }
        server.restart().await.unwrap();
        let acked = acked.lock().unwrap().clone();
        for (key, rev) in &acked {
            let kv = store
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key}@{rev} lost"));
            assert_eq!(kv.mod_revision, *rev);
        }
        total += acked.len();
    }
    assert!(total > 20, "only {total} writes acknowledged");
}

/// Two servers sharing one etcd: what one writes, the other reads and watches, and their
/// optimistic concurrency checks see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_state() {
    let server = EtcdServer::start().await.unwrap();
    let a: Arc<dyn Store> = Arc::new(server.store().await.unwrap());
    let b: Arc<dyn Store> = Arc::new(server.store().await.unwrap());
    let from = b.revision().await.unwrap();
    let mut watch_b = b.watch("/registry/pods/", from).await.unwrap();
    let r = a
        .create("/registry/pods/default/web", b"v1".to_vec())
        .await
        .unwrap();
    let ev = podd_store::conformance::take_events(&mut watch_b, 1)
        .await
        .remove(0);
    assert_eq!(
        (ev.kv.key.as_str(), ev.revision()),
        ("/registry/pods/default/web", r)
    );
    let r2 = b
        .update("/registry/pods/default/web", b"v2".to_vec(), Some(r))
        .await
        .unwrap();
    let err = a
        .update("/registry/pods/default/web", b"stale".to_vec(), Some(r))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { actual, .. } if actual == r2));
}

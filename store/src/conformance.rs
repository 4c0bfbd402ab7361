//! The conformance suite every backend passes: async functions that panic on a violation.
//!
//! Each function takes a store and a key prefix of its own, so that the suite can also run
//! against a shared store. Revisions are checked relative to the store's revision when the
//! function starts (etcd's first write is revision 2, the embedded stores' is 1). The functions
//! assume nobody else writes to the store while they run, because they check that revisions
//! are consecutive. Run them with `store_conformance_tests!`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{EventKind, KeyValue, Revision, Store, StoreError, WatchEvent, WatchStream};

const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Takes `n` events from `stream`, failing after a generous timeout.
pub async fn take_events(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(ev))) => out.push(ev),
            Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", out.len()),
            Ok(None) => panic!("watch ended after {} of {n} events", out.len()),
            Err(_) => panic!("timed out waiting for event {} of {n}", out.len() + 1),
        }
    }
    out
}

/// Asserts that nothing arrives on `stream` within `wait`.
pub async fn assert_quiet(stream: &mut WatchStream, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, stream.next()).await {
        panic!("expected no event, got {item:?}");
    }
}

fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// Create, get, update, delete; revisions are consecutive and the key's revisions are right.
pub async fn crud(store: Arc<dyn Store>, prefix: &str) {
    let base = store.revision().await.unwrap();
    let k = key(prefix, "a");
    assert_eq!(store.get(&k).await.unwrap(), None);

    let r1 = store.create(&k, b"one".to_vec()).await.unwrap();
    assert_eq!(r1, base + 1, "the first write gets the next revision");
    assert_eq!(store.revision().await.unwrap(), r1);
    let kv = store
        .get(&k)
        .await
        .unwrap()
        .expect("created key is readable");
    assert_eq!(
        kv,
        KeyValue {
            key: k.clone(),
            value: b"one".to_vec(),
            create_revision: r1,
            mod_revision: r1
        }
    );

    let r2 = store.update(&k, b"two".to_vec(), None).await.unwrap();
    assert_eq!(r2, r1 + 1);
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!(kv.value, b"two");
    assert_eq!(kv.create_revision, r1, "update keeps create_revision");
    assert_eq!(kv.mod_revision, r2);

    let r3 = store.update(&k, b"three".to_vec(), Some(r2)).await.unwrap();
    assert_eq!(r3, r2 + 1);

    let r4 = store.delete(&k, None).await.unwrap();
    assert_eq!(r4, r3 + 1);
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(store.revision().await.unwrap(), r4);

    // A re-created key starts a new life.
    let r5 = store.create(&k, b"again".to_vec()).await.unwrap();
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r5, r5));

    // Empty values and binary values round-trip.
    let bin = key(prefix, "bin");
    store.create(&bin, vec![]).await.unwrap();
    assert_eq!(
        store.get(&bin).await.unwrap().unwrap().value,
        Vec::<u8>::new()
    );
    let bytes: Vec<u8> = (0..=255u8).collect();
    store.update(&bin, bytes.clone(), None).await.unwrap();
    assert_eq!(store.get(&bin).await.unwrap().unwrap().value, bytes);
}

/// AlreadyExists and NotFound, and failed writes do not consume a revision.
pub async fn exists_and_not_found(store: Arc<dyn Store>, prefix: &str) {
    let k = key(prefix, "x");
    let r = store.create(&k, b"1".to_vec()).await.unwrap();
    let err = store.create(&k, b"2".to_vec()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { key } if *key == k),
        "got {err:?}"
    );
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"1");

    let missing = key(prefix, "missing");
    let err = store
        .update(&missing, b"v".to_vec(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { key } if *key == missing),
        "got {err:?}"
    );
    let err = store
        .update(&missing, b"v".to_vec(), Some(r))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "got {err:?}");
    let err = store.delete(&missing, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "got {err:?}");
    let err = store.delete(&missing, Some(r)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "got {err:?}");
    assert_eq!(
        store.revision().await.unwrap(),
        r,
        "failed writes must not consume revisions"
    );
    assert_eq!(store.get(&missing).await.unwrap(), None);
}

/// Optimistic concurrency: a stale expected revision gives Conflict, and concurrent
/// read-modify-write loops lose no update.
pub async fn conflicts(store: Arc<dyn Store>, prefix: &str) {
    let k = key(prefix, "c");
    let r1 = store.create(&k, b"0".to_vec()).await.unwrap();
    let r2 = store.update(&k, b"1".to_vec(), Some(r1)).await.unwrap();
    let err = store
        .update(&k, b"stale".to_vec(), Some(r1))
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            key,
            expected,
            actual,
        } => {
            assert_eq!((key.as_str(), expected, actual), (k.as_str(), r1, r2));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let err = store.delete(&k, Some(r1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "got {err:?}");
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"1");
    assert_eq!(store.revision().await.unwrap(), r2);

    // Concurrent counters: each task increments with compare-and-swap until it wins.
    let counter = key(prefix, "counter");
    store.create(&counter, b"0".to_vec()).await.unwrap();
    let tasks = 4;
    let per_task = 25;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = Arc::clone(&store);
        let counter = counter.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..per_task {
                loop {
                    let kv = store.get(&counter).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    match store
                        .update(
                            &counter,
                            (n + 1).to_string().into_bytes(),
                            Some(kv.mod_revision),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let kv = store.get(&counter).await.unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(&kv.value).unwrap(),
        (tasks * per_task).to_string(),
        "no increment may be lost"
    );

    // The right expected revision deletes.
    let kv = store.get(&k).await.unwrap().unwrap();
    store.delete(&k, Some(kv.mod_revision)).await.unwrap();
}

/// List returns keys under the prefix in key order, with the store's revision at the read.
pub async fn list(store: Arc<dyn Store>, prefix: &str) {
    let empty = store.list(&key(prefix, "pods/")).await.unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.revision, store.revision().await.unwrap());

    for name in [
        "pods/ns1/b",
        "pods/ns1/a",
        "pods/ns2/a",
        "pods/ns10/z",
        "podsx/ns1/a",
    ] {
        store
            .create(&key(prefix, name), name.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let last = store
        .update(&key(prefix, "pods/ns1/a"), b"new".to_vec(), None)
        .await
        .unwrap();

    let all = store.list(&key(prefix, "pods/")).await.unwrap();
    let names: Vec<_> = all
        .items
        .iter()
        .map(|kv| kv.key.strip_prefix(prefix).unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["pods/ns1/a", "pods/ns1/b", "pods/ns10/z", "pods/ns2/a"]
    );
    assert_eq!(
        all.revision, last,
        "list revision is the store's latest revision"
    );
    assert_eq!(all.items[0].value, b"new");
    assert_eq!(all.items[0].mod_revision, last);

    let ns1 = store.list(&key(prefix, "pods/ns1/")).await.unwrap();
    assert_eq!(ns1.items.len(), 2);

    // A write outside the prefix still moves the list revision: it is the store's revision.
    let other = store.create(&key(prefix, "other"), vec![]).await.unwrap();
    let again = store.list(&key(prefix, "pods/")).await.unwrap();
    assert_eq!(again.revision, other);

    // Non-ASCII keys sort and match by their UTF-8 bytes.
    store.create(&key(prefix, "u/é"), vec![]).await.unwrap();
    store.create(&key(prefix, "u/z"), vec![]).await.unwrap();
    store
        .create(&key(prefix, "u/\u{10FFFF}"), vec![])
        .await
        .unwrap();
    let u = store.list(&key(prefix, "u/")).await.unwrap();
    let names: Vec<_> = u.items.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        names,
        [
            key(prefix, "u/z"),
            key(prefix, "u/é"),
            key(prefix, "u/\u{10FFFF}")
        ]
    );
    let u2 = store.list(&key(prefix, "u/\u{10FFFF}")).await.unwrap();
    assert_eq!(u2.items.len(), 1);
}

/// Watch replays history after a revision in order, with the right kinds and values, then
/// follows live writes; other prefixes are filtered out.
pub async fn watch_from_revision(store: Arc<dyn Store>, prefix: &str) {
    let a = key(prefix, "w/a");
    let b = key(prefix, "w/b");
    let r1 = store.create(&a, b"a1".to_vec()).await.unwrap();
    let r2 = store.create(&b, b"b1".to_vec()).await.unwrap();
    let r3 = store.update(&a, b"a2".to_vec(), None).await.unwrap();
    store
        .create(&key(prefix, "elsewhere"), vec![])
        .await
        .unwrap();
    let r5 = store.delete(&a, None).await.unwrap();

    // From before everything: all four events under w/.
    let mut w = store.watch(&key(prefix, "w/"), r1 - 1).await.unwrap();
    let evs = take_events(&mut w, 4).await;
    let got: Vec<_> = evs
        .iter()
        .map(|e| {
            (
                e.kind.clone(),
                e.kv.key.clone(),
                e.kv.value.clone(),
                e.revision(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (EventKind::Created, a.clone(), b"a1".to_vec(), r1),
            (EventKind::Created, b.clone(), b"b1".to_vec(), r2),
            (EventKind::Modified, a.clone(), b"a2".to_vec(), r3),
            (EventKind::Deleted, a.clone(), b"a2".to_vec(), r5),
        ]
    );
    assert_eq!(evs[2].kv.create_revision, r1);
    assert_eq!(
        evs[3].kv.create_revision, r1,
        "a delete carries the deleted key"
    );
    assert_eq!(
        evs[3].kv.mod_revision, r5,
        "a delete's mod_revision is the delete's"
    );

    // From the middle: only what came after.
    let mut mid = store.watch(&key(prefix, "w/"), r2).await.unwrap();
    let evs = take_events(&mut mid, 2).await;
    assert_eq!(
        evs.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        [r3, r5]
    );

    // Then live writes, on both watchers; other prefixes stay quiet.
    store
        .create(&key(prefix, "elsewhere2"), vec![])
        .await
        .unwrap();
    let r7 = store.update(&b, b"b2".to_vec(), Some(r2)).await.unwrap();
    for s in [&mut w, &mut mid] {
        let ev = take_events(s, 1).await.remove(0);
        assert_eq!(
            (
                ev.kind.clone(),
                ev.kv.key.clone(),
                ev.kv.value.clone(),
                ev.revision()
            ),
            (EventKind::Modified, b.clone(), b"b2".to_vec(), r7)
        );
    }
    assert_quiet(&mut w, Duration::from_millis(200)).await;

    // A watch from the current revision sees only the future.
    let now = store.revision().await.unwrap();
    let mut fresh = store.watch(&key(prefix, "w/"), now).await.unwrap();
    assert_quiet(&mut fresh, Duration::from_millis(100)).await;
    let r8 = store.delete(&b, None).await.unwrap();
    let ev = take_events(&mut fresh, 1).await.remove(0);
    assert_eq!((ev.kind.clone(), ev.revision()), (EventKind::Deleted, r8));
    assert_eq!(ev.kv.value, b"b2");
}

/// A watch started before concurrent writers, and watches started while they run, see every
/// write exactly once, in revision order, with no gaps.
pub async fn watch_concurrent_writers(store: Arc<dyn Store>, prefix: &str) {
    let writers = 4;
    let per_writer = 150;
    let total = writers * per_writer;
    let base = store.revision().await.unwrap();
    let early = store.watch(prefix, base).await.unwrap();

    let mut handles = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            // Each writer creates, updates and deletes its own keys and also fights over a
            // shared key (conflicts are fine: only acknowledged writes count).
            let mut acked = Vec::new();
            let mut i = 0;
            while acked.len() < per_writer {
                let k = format!("{prefix}cw/{w}/{}", i % 7);
                let r = match i % 3 {
                    0 => store.create(&k, format!("{w}-{i}").into_bytes()).await,
                    1 => {
                        store
                            .update(&k, format!("{w}-{i}").into_bytes(), None)
                            .await
                    }
                    _ => store.delete(&k, None).await,
                };
                match r {
                    Ok(rev) => acked.push(rev),
                    Err(StoreError::AlreadyExists { .. } | StoreError::NotFound { .. }) => {}
                    Err(e) => panic!("write failed: {e}"),
                }
                i += 1;
            }
            acked
        }));
    }

    // Start more watchers while the writers run, each from the current revision.
    let mut late = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let from = store.revision().await.unwrap();
        late.push((from, store.watch(prefix, from).await.unwrap()));
    }

    let mut acked = Vec::new();
    for h in handles {
        acked.extend(h.await.unwrap());
    }
    acked.sort_unstable();
    let end = base + i64::try_from(total).unwrap();
    assert_eq!(acked, ((base + 1)..=end).collect::<Vec<_>>());

    let mut early = early;
    let evs = take_events(&mut early, total).await;
    let revs: Vec<Revision> = evs.iter().map(|e| e.revision()).collect();
    assert_eq!(revs, acked, "the early watcher sees every write, in order");
    check_event_stream_consistent(&evs);
    assert_quiet(&mut early, Duration::from_millis(100)).await;

    for (from, mut s) in late {
        let n = usize::try_from(end - from).unwrap();
        let evs = take_events(&mut s, n).await;
        let revs: Vec<Revision> = evs.iter().map(|e| e.revision()).collect();
        assert_eq!(revs, ((from + 1)..=end).collect::<Vec<_>>());
    }
}

/// Replays the events into a map and checks kinds agree with the key's life.
fn check_event_stream_consistent(evs: &[WatchEvent]) {
    let mut live = std::collections::HashMap::<String, KeyValue>::new();
    for ev in evs {
        match ev.kind {
            EventKind::Created => {
                assert!(!live.contains_key(&ev.kv.key), "created twice: {ev:?}");
                assert_eq!(ev.kv.create_revision, ev.kv.mod_revision);
                live.insert(ev.kv.key.clone(), ev.kv.clone());
            }
            EventKind::Modified => {
                let prev = live.get(&ev.kv.key).expect("modified a live key");
                assert_eq!(prev.create_revision, ev.kv.create_revision);
                live.insert(ev.kv.key.clone(), ev.kv.clone());
            }
            EventKind::Deleted => {
                let prev = live.remove(&ev.kv.key).expect("deleted a live key");
                assert_eq!(prev.value, ev.kv.value, "a delete carries the last value");
            }
        }
    }
}

/// A watcher that nobody polls while thousands of writes happen still gets all of them.
pub async fn watch_slow_consumer(store: Arc<dyn Store>, prefix: &str) {
    let base = store.revision().await.unwrap();
    let mut w = store.watch(prefix, base).await.unwrap();
    let n = 3000;
    for i in 0..n {
        store
            .create(&key(prefix, &format!("slow/{i:05}")), vec![1; 64])
            .await
            .unwrap();
    }
    let evs = take_events(&mut w, n).await;
    for (i, ev) in evs.iter().enumerate() {
        assert_eq!(ev.revision(), base + 1 + i64::try_from(i).unwrap());
    }
}

/// Compaction: watching from before it fails with Compacted; from it works; state survives.
pub async fn compaction(store: Arc<dyn Store>, prefix: &str) {
    let a = key(prefix, "cmp/a");
    let r1 = store.create(&a, b"1".to_vec()).await.unwrap();
    let r2 = store.update(&a, b"2".to_vec(), None).await.unwrap();
    let b = key(prefix, "cmp/b");
    let r3 = store.create(&b, b"b".to_vec()).await.unwrap();
    let r4 = store.delete(&b, None).await.unwrap();
    let r5 = store.update(&a, b"3".to_vec(), None).await.unwrap();

    // A watcher that already has the history keeps working after compaction.
    let mut before = store.watch(&key(prefix, "cmp/"), r1 - 1).await.unwrap();

    store.compact(r3).await.unwrap();
    store.compact(r3).await.unwrap(); // compacting again is harmless
    store.compact(r2).await.unwrap(); // and so is an older revision

    for after in [r1 - 1, r1, r2] {
        match store.watch(&key(prefix, "cmp/"), after).await {
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => {
                assert_eq!(requested, after);
                assert!(compacted >= r3, "compacted {compacted} < {r3}");
            }
            Err(e) => {
                panic!("watch from {after} after compaction at {r3}: expected Compacted, got {e}")
            }
            Ok(mut s) => {
                // Some backends report compaction on the stream instead of at the call.
                match tokio::time::timeout(EVENT_TIMEOUT, s.next()).await {
                    Ok(Some(Err(StoreError::Compacted { .. }))) => {}
                    other => panic!("watch from {after}: expected Compacted, got {other:?}"),
                }
            }
        }
    }

    // From the compaction revision itself, the later events are all there.
    let mut w = store.watch(&key(prefix, "cmp/"), r3).await.unwrap();
    let evs = take_events(&mut w, 2).await;
    assert_eq!(
        evs.iter()
            .map(|e| (e.kind.clone(), e.revision()))
            .collect::<Vec<_>>(),
        [(EventKind::Deleted, r4), (EventKind::Modified, r5)]
    );

    // The current state is intact.
    let kv = store.get(&a).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"3"[..], r1, r5)
    );
    assert_eq!(store.get(&b).await.unwrap(), None);
    let l = store.list(&key(prefix, "cmp/")).await.unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.revision, r5);

    // Compacting the future is refused.
    assert!(store.compact(r5 + 1000).await.is_err());

    // The earlier watcher either delivered its events or reports Compacted: never a gap.
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), before.next()).await {
            Ok(Some(Ok(ev))) => seen.push(ev.revision()),
            Ok(Some(Err(StoreError::Compacted { .. }))) | Ok(None) | Err(_) => break,
            Ok(Some(Err(e))) => panic!("unexpected watch error {e}"),
        }
    }
    let all = [r1, r2, r3, r4, r5];
    assert_eq!(
        seen,
        all[..seen.len()],
        "events delivered before compaction stay in order"
    );

    // Writes continue after compaction with the next revision.
    let r6 = store.create(&key(prefix, "cmp/c"), vec![]).await.unwrap();
    assert_eq!(r6, r5 + 1);
}

/// Watchers running while writers write and a compactor compacts concurrently: each watcher
/// gets a gap-free, ordered run of revisions from its start, ended only by `Compacted`.
pub async fn watch_during_compaction(store: Arc<dyn Store>, prefix: &str) {
    let writes = 600;
    let base = store.revision().await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let writer = {
        let store = Arc::clone(&store);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            for i in 0..writes {
                store
                    .create(&format!("{prefix}wc/{i:05}"), vec![7; 32])
                    .await
                    .unwrap();
            }
        })
    };
    let compactor = {
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = store.revision().await.unwrap();
                if now - 40 > base {
                    store.compact(now - 40).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let end = base + i64::from(writes);
    let mut watchers = Vec::new();
    for n in 0..4 {
        let store = Arc::clone(&store);
        let prefix = prefix.to_string();
        watchers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5 * n)).await;
            let from = store.revision().await.unwrap();
            let mut s = match store.watch(&prefix, from).await {
                Ok(s) => s,
                Err(StoreError::Compacted { .. }) => return (from, 0, true),
                Err(e) => panic!("{e}"),
            };
            let mut expect = from + 1;
            // Slow consumer: sleeps now and then, so compaction can overtake it.
            loop {
                if expect > end {
                    return (from, expect - from - 1, false);
                }
                match tokio::time::timeout(EVENT_TIMEOUT, s.next()).await {
                    Ok(Some(Ok(ev))) => {
                        assert_eq!(
                            ev.revision(),
                            expect,
                            "gap or reorder in a watch from {from}"
                        );
                        expect += 1;
                        if expect % 50 == 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    Ok(Some(Err(StoreError::Compacted { .. }))) => {
                        return (from, expect - from - 1, true);
                    }
                    other => panic!("watch from {from}: unexpected {other:?}"),
                }
            }
        }));
    }
    writer.await.unwrap();
    for w in watchers {
        let (_from, _delivered, _compacted) = w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    compactor.await.unwrap();
}

/// Random operations on a few keys give exactly the results, lists and watch events of the
/// in-memory reference (revisions relative to the start).
pub async fn matches_reference(store: Arc<dyn Store>, prefix: &str) {
    use rand::{Rng, SeedableRng};
    let reference = crate::MemStore::new();
    let base = store.revision().await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let keys: Vec<String> = (0..6).map(|i| key(prefix, &format!("ref/{i}"))).collect();

    fn outcome(r: Result<Revision, StoreError>, base: Revision) -> String {
        match r {
            Ok(rev) => format!("ok {}", rev - base),
            Err(StoreError::Conflict { actual, .. }) => format!("conflict {}", actual - base),
            Err(StoreError::AlreadyExists { key }) => format!("exists {key}"),
            Err(StoreError::NotFound { key }) => format!("notfound {key}"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    for step in 0..400 {
        let k = &keys[rng.gen_range(0..keys.len())];
        let value = format!("v{step}").into_bytes();
        // Expected revisions: sometimes right, sometimes stale, sometimes absent.
        let current = reference.get(k).await.unwrap().map(|kv| kv.mod_revision);
        let expected = match rng.gen_range(0..3) {
            0 => None,
            1 => current,
            _ => Some(rng.gen_range(1..=(step + 1))),
        };
        let (got, want) = match rng.gen_range(0..3) {
            0 => (
                store.create(k, value.clone()).await,
                reference.create(k, value).await,
            ),
            1 => (
                store
                    .update(k, value.clone(), expected.map(|e| e + base))
                    .await,
                reference.update(k, value, expected).await,
            ),
            _ => (
                store.delete(k, expected.map(|e| e + base)).await,
                reference.delete(k, expected).await,
            ),
        };
        assert_eq!(outcome(got, base), outcome(want, 0), "step {step} on {k}");
    }
    let rel = |kvs: Vec<KeyValue>, b: Revision| -> Vec<(String, Vec<u8>, Revision, Revision)> {
        kvs.into_iter()
            .map(|kv| {
                (
                    kv.key,
                    kv.value,
                    kv.create_revision - b,
                    kv.mod_revision - b,
                )
            })
            .collect()
    };
    let got = store.list(&key(prefix, "ref/")).await.unwrap();
    let want = reference.list(&key(prefix, "ref/")).await.unwrap();
    assert_eq!(got.revision - base, want.revision);
    assert_eq!(rel(got.items, base), rel(want.items, 0));

    let n = usize::try_from(want.revision).unwrap();
    let mut gs = store.watch(&key(prefix, "ref/"), base).await.unwrap();
    let mut ws = reference.watch(&key(prefix, "ref/"), 0).await.unwrap();
    let got = take_events(&mut gs, n).await;
    let want = take_events(&mut ws, n).await;
    for (g, w) in got.into_iter().zip(want) {
        assert_eq!(g.kind, w.kind);
        assert_eq!(
            rel(vec![g.kv], base),
            rel(vec![w.kv], 0),
            "watch events differ from the reference"
        );
    }
}

/// Dropping the store ends its watches after the events already written (no watch hangs
/// forever on a store that is gone).
pub async fn watch_ends_when_store_dropped(store: Arc<dyn Store>, prefix: &str) {
    let base = store.revision().await.unwrap();
    let mut w = store.watch(prefix, base).await.unwrap();
    store.create(&key(prefix, "last"), vec![]).await.unwrap();
    drop(store);
    let ev = take_events(&mut w, 1).await.remove(0);
    assert_eq!(ev.revision(), base + 1);
    match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
        Ok(None) | Ok(Some(Err(_))) => {}
        Ok(Some(Ok(ev))) => panic!("unexpected event {ev:?}"),
        Err(_) => panic!("the watch did not end after its store was dropped"),
    }
}

/// Writes `n` keys, returning them with the revision of each write.
pub async fn write_keys(store: &dyn Store, prefix: &str, n: usize) -> Vec<(String, Revision)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let k = key(prefix, &format!("dur/{i:04}"));
        let r = store
            .create(&k, format!("v{i}").into_bytes())
            .await
            .unwrap();
        out.push((k, r));
    }
    out
}

/// After a restart (`reopened` is a new handle on the same data): every key is there with the
/// same revisions, revisions continue, and history since before the restart is watchable.
pub async fn check_after_restart(
    reopened: Arc<dyn Store>,
    prefix: &str,
    written: &[(String, Revision)],
    deleted: &str,
) {
    for (i, (k, r)) in written.iter().enumerate() {
        let kv = reopened
            .get(k)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{k} (written at revision {r}) lost across restart"));
        assert_eq!(kv.value, format!("v{i}").into_bytes());
        assert_eq!((kv.create_revision, kv.mod_revision), (*r, *r));
    }
    assert_eq!(reopened.get(deleted).await.unwrap(), None);
    let last = reopened.revision().await.unwrap();
    assert!(last >= written.last().map_or(0, |w| w.1));
    let next = reopened
        .create(&key(prefix, "dur/after-restart"), vec![])
        .await
        .unwrap();
    assert_eq!(next, last + 1, "revisions continue after a restart");

    // The history from before the restart can still be watched.
    let first = written.first().map_or(0, |w| w.1);
    let mut w = reopened
        .watch(&key(prefix, "dur/"), first - 1)
        .await
        .unwrap();
    let evs = take_events(&mut w, written.len()).await;
    for (ev, (k, r)) in evs.iter().zip(written) {
        assert_eq!((&ev.kv.key, ev.revision()), (k, *r));
    }
}

/// Generates one `#[tokio::test]` per conformance function. `$make` is an async expression
/// giving `(Arc<dyn Store>, guard)`; the guard lives until the test ends.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@one $make, crud);
        $crate::store_conformance_tests!(@one $make, exists_and_not_found);
        $crate::store_conformance_tests!(@one $make, conflicts);
        $crate::store_conformance_tests!(@one $make, list);
        $crate::store_conformance_tests!(@one $make, watch_from_revision);
        $crate::store_conformance_tests!(@one $make, watch_concurrent_writers);
        $crate::store_conformance_tests!(@one $make, watch_slow_consumer);
        $crate::store_conformance_tests!(@one $make, compaction);
        $crate::store_conformance_tests!(@one $make, watch_during_compaction);
        $crate::store_conformance_tests!(@one $make, matches_reference);
    };
    (@one $make:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _guard) = $make.await;
            $crate::conformance::$name(store, "/t/").await;
        }
    };
}

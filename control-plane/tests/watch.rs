//! Watch correctness under concurrent writers: every event arrives once, in revision order,
//! and the final state replayed from events equals a fresh list; watches started in the
//! middle see exactly the events after their revision; the watcher helper relists by itself.

mod common;

use common::{pod, start};
use futures::StreamExt;
use podd_api::{Pod, ResourceExt, WatchEventType as EventType};
use podd_client::{ListParams, WatcherEvent};
use std::collections::BTreeMap;
use std::time::Duration;

const WRITERS: usize = 6;
const WRITES_EACH: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_lose_or_reorder_events() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let start_rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut full = pods.watch(&ListParams::default(), &start_rv).await.unwrap();
    // A second, filtered watch over TLS (another transport, the same fan-out).
    let admin = t.plane.admin_tls_client().unwrap();
    let mut even = admin
        .api::<Pod>(Some("default"))
        .watch(&ListParams::labels("parity=even"), &start_rv)
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let pods = pods.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            let parity = if w % 2 == 0 { "even" } else { "odd" };
            for i in 0..WRITES_EACH {
                let name = format!("w{w}-p{}", i % 5);
                // Create, relabel, or delete, depending on the step.
                let r = match i % 3 {
                    0 => pods.create(&pod(&name, &[("parity", parity)])).await,
                    1 => {
                        pods.patch(
                            &name,
                            &serde_json::json!({"metadata": {"labels": {"step": i.to_string()}}}),
                        )
                        .await
                    }
                    _ => pods.delete(&name).await.map(|d| d.object().unwrap()),
                };
                if let Ok(p) = r {
                    revs.push(p.resource_version().unwrap().parse::<i64>().unwrap());
                }
            }
            revs
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort_unstable();
    let last = *acked.last().unwrap();

    // Replay the full watch until it reaches the last acknowledged revision.
    let mut state: BTreeMap<String, Pod> = BTreeMap::new();
    let mut seen_revs = Vec::new();
    while seen_revs.last().is_none_or(|r| *r < last) {
        let ev = tokio::time::timeout(Duration::from_secs(10), full.next())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        let rv: i64 = ev.object.resource_version().unwrap().parse().unwrap();
        if let Some(prev) = seen_revs.last() {
            assert!(rv > *prev, "events out of order: {rv} after {prev}");
        }
        seen_revs.push(rv);
        match ev.kind {
            EventType::Deleted => {
                state.remove(&ev.object.name_any());
            }
            _ => {
                state.insert(ev.object.name_any(), ev.object);
            }
        }
    }
    // Every acknowledged write appears exactly once.
    assert_eq!(
        seen_revs, acked,
        "the watch must carry every acknowledged write once"
    );
    let list = pods.list(&ListParams::default()).await.unwrap();
    let listed: BTreeMap<String, String> = list
        .items
        .iter()
        .map(|p| (p.name_any(), p.resource_version().unwrap()))
        .collect();
    let replayed: BTreeMap<String, String> = state
        .iter()
        .map(|(k, p)| (k.clone(), p.resource_version().unwrap()))
        .collect();
    assert_eq!(listed, replayed);

    // The filtered watch saw only even pods, in order.
    let mut prev = 0;
    loop {
        let ev = match tokio::time::timeout(Duration::from_millis(500), even.next()).await {
            Ok(Some(ev)) => ev.unwrap(),
            _ => break,
        };
        assert_eq!(
            ev.object.labels().get("parity").map(String::as_str),
            Some("even")
        );
        let rv: i64 = ev.object.resource_version().unwrap().parse().unwrap();
        assert!(rv > prev);
        prev = rv;
    }
    assert!(prev > 0, "the filtered watch saw events");

    // A watch from the middle sees exactly the events after that revision.
    let mid = acked[acked.len() / 2];
    let mut w = pods
        .watch(&ListParams::default(), &mid.to_string())
        .await
        .unwrap();
    let want: Vec<i64> = acked.iter().copied().filter(|r| *r > mid).collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(
            ev.object
                .resource_version()
                .unwrap()
                .parse::<i64>()
                .unwrap(),
        );
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn watcher_relists_after_expiry() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    pods.create(&pod("a", &[])).await.unwrap();
    let mut w = Box::pin(podd_client::watcher(pods.clone(), ListParams::default()));
    match w.next().await.unwrap().unwrap() {
        WatcherEvent::Restarted(items) => assert_eq!(items.len(), 1),
        other => panic!("expected a list first, got {other:?}"),
    }
    pods.create(&pod("b", &[])).await.unwrap();
    match w.next().await.unwrap().unwrap() {
        WatcherEvent::Applied(p) => assert_eq!(p.name_any(), "b"),
        other => panic!("{other:?}"),
    }
    // The watcher is lazy: after a list it watches only when polled. Writes and a
    // compaction past its position in between make that watch 410 Expired, and the watcher
    // relists by itself (a Restarted with the new state), without surfacing an error.
    let mut w = Box::pin(podd_client::watcher(pods.clone(), ListParams::default()));
    assert!(matches!(
        w.next().await.unwrap().unwrap(),
        WatcherEvent::Restarted(_)
    ));
    pods.create(&pod("c", &[])).await.unwrap();
    let d = pods.create(&pod("d", &[])).await.unwrap();
    t.plane
        .registry
        .compact(d.resource_version().unwrap().parse().unwrap())
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match next {
        WatcherEvent::Restarted(items) => {
            let names: Vec<_> = items.iter().map(|p| p.name_any()).collect();
            assert_eq!(names, vec!["a", "b", "c", "d"]);
        }
        other => panic!("expected a relist after 410, got {other:?}"),
    }
    pods.create(&pod("e", &[])).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatcherEvent::Applied(p) => assert_eq!(p.name_any(), "e"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_leader_compacts_old_history() {
    let cc = podd_control_plane::controllers::ControllerConfig {
        compact_every: Duration::from_millis(200),
        ..common::fast_controllers()
    };
    let t = start(Some(cc)).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let first = pods.create(&pod("old", &[])).await.unwrap();
    pods.create(&pod("newer", &[])).await.unwrap();
    common::eventually(
        Duration::from_secs(5),
        "a 410 for the first revision",
        || async {
            match pods
                .watch(&ListParams::default(), &first.resource_version().unwrap())
                .await
            {
                Err(e) if e.is_expired() => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn bookmarks_carry_the_revision_and_unchanged_writes_send_nothing() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let a = pods.create(&pod("a", &[("k", "v")])).await.unwrap();
    let lp = ListParams {
        allow_bookmarks: true,
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let mut w = pods
        .watch(&lp, &a.resource_version().unwrap())
        .await
        .unwrap();
    // The same labels again: no write, so no event.
    pods.patch(
        "a",
        &serde_json::json!({"metadata": {"labels": {"k": "v"}}}),
    )
    .await
    .unwrap();
    let b = pods.create(&pod("b", &[])).await.unwrap();
    let mut events = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("the watch ends at its timeout")
    {
        let ev = ev.unwrap();
        events.push((ev.kind, ev.object.name_any(), ev.object.resource_version()));
    }
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!((events[0].0, events[0].1.as_str()), (EventType::Added, "b"));
    assert_eq!(events[1].0, EventType::Bookmark, "{events:?}");
    let bookmark_rv: i64 = events[1].2.as_ref().unwrap().parse().unwrap();
    assert!(bookmark_rv >= b.resource_version().unwrap().parse::<i64>().unwrap());
    // Resuming from the bookmark misses nothing and repeats nothing.
    let mut w = pods
        .watch(&ListParams::default(), &bookmark_rv.to_string())
        .await
        .unwrap();
    pods.delete("a").await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.kind, ev.object.name_any().as_str()),
        (EventType::Deleted, "a")
    );
}

#[tokio::test]
async fn a_compacted_watch_version_is_410_gone_with_an_expired_status() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let a = pods.create(&pod("a", &[])).await.unwrap();
    pods.create(&pod("b", &[])).await.unwrap();
    let now = t.store.revision().await.unwrap();
    t.plane.registry.compact(now).await.unwrap();
    let r = common::request(
        &t,
        hyper::Method::GET,
        &format!(
            "/api/v1/namespaces/default/pods?watch=true&resourceVersion={}",
            a.resource_version().unwrap()
        ),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 410, "{}", r.body);
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["reason"], "Expired");
}

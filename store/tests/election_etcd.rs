//! Leader election against a real etcd: exactly one of several servers leads, and when the
//! leader's lease is revoked or expires, another takes over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use podd_store::testing::EtcdServer;
use podd_store::{AlwaysLeader, EtcdElector, EtcdElectorOptions, LeaderElector, Leadership};
use tokio::task::JoinHandle;

fn elector(server_store: &podd_store::EtcdStore, name: &str) -> Arc<EtcdElector> {
    let mut options = EtcdElectorOptions::new(name);
    // 3 s rather than etcd's minimum of 2 s: margin for renewals on a loaded test machine.
    options.ttl = Duration::from_secs(3);
    Arc::new(EtcdElector::new(server_store.client().clone(), options))
}

fn campaign(e: &Arc<EtcdElector>) -> JoinHandle<Leadership> {
    let e = Arc::clone(e);
    tokio::spawn(async move { e.campaign().await.unwrap() })
}

async fn won_within(h: &mut JoinHandle<Leadership>, wait: Duration) -> Option<Leadership> {
    match tokio::time::timeout(wait, h).await {
        Ok(l) => Some(l.unwrap()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_leads_and_a_revoked_leader_is_replaced() {
    let server = EtcdServer::start().await.unwrap();
    let store = server.store().await.unwrap();
    let electors: Vec<_> = ["a", "b", "c"].iter().map(|n| elector(&store, n)).collect();

    let mut pending: Vec<_> = electors.iter().map(campaign).collect();
    // Exactly one wins.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let finished: Vec<usize> = (0..3).filter(|&i| pending[i].is_finished()).collect();
    assert_eq!(finished.len(), 1, "exactly one leader, got {finished:?}");
    let first = finished[0];
    let mut leader = won_within(&mut pending[first], Duration::from_secs(1))
        .await
        .unwrap();
    assert!(leader.is_leader());
    let name = electors[first].leader().await.unwrap().unwrap();
    assert_eq!(name, ["a", "b", "c"][first]);

    // Revoke the leader's lease, as etcd does when it expires or an operator revokes it.
    let started = Instant::now();
    store
        .client()
        .clone()
        .lease_revoke(leader.lease_id().unwrap())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), leader.lost())
        .await
        .expect("the old leader notices it lost");
    assert!(!leader.is_leader());

    // Exactly one of the others takes over, promptly.
    let mut next = None;
    let deadline = Instant::now() + Duration::from_secs(3);
    while next.is_none() && Instant::now() < deadline {
        for i in (0..3).filter(|&i| i != first) {
            if pending[i].is_finished() {
                next = Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = next.expect("another server takes over");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still_waiting = (0..3)
        .filter(|&i| i != first && i != second)
        .all(|i| !pending[i].is_finished());
    assert!(still_waiting, "only one takes over");
    let took_over = started.elapsed();
    let leadership = won_within(&mut pending[second], Duration::from_secs(1))
        .await
        .unwrap();
    assert!(leadership.is_leader());
    assert!(
        took_over < Duration::from_secs(3),
        "takeover took {took_over:?}"
    );

    // A resignation hands over at once to the last one.
    let third = (0..3).find(|&i| i != first && i != second).unwrap();
    leadership.resign().await;
    let l3 = won_within(&mut pending[third], Duration::from_secs(2))
        .await
        .expect("the last candidate leads after the resignation");
    assert_eq!(
        electors[third].leader().await.unwrap().as_deref(),
        Some(["a", "b", "c"][third])
    );
    l3.resign().await;
    assert_eq!(electors[0].leader().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_hands_leadership_over() {
    let server = EtcdServer::start().await.unwrap();
    let store = server.store().await.unwrap();
    let a = elector(&store, "a");
    let b = elector(&store, "b");
    let leader = a.campaign().await.unwrap();
    // Renewals keep it leading well past the TTL.
    let mut hb = campaign(&b);
    assert!(won_within(&mut hb, Duration::from_secs(4)).await.is_none());
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("a"));

    // A frozen leader stops renewing; b leads once the lease expires (TTL 3 s), not before.
    let frozen_at = Instant::now();
    leader.abandon().await;
    let lb = won_within(&mut hb, Duration::from_secs(8))
        .await
        .expect("b takes over after the lease expires");
    let after = frozen_at.elapsed();
    assert!(
        after >= Duration::from_secs(2),
        "took over after only {after:?}"
    );
    assert!(lb.is_leader());
    assert_eq!(b.leader().await.unwrap().as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_steps_down_before_its_lease_expires() {
    let mut server = EtcdServer::start().await.unwrap();
    let store = server.store().await.unwrap();
    let a = elector(&store, "a");
    let mut leader = a.campaign().await.unwrap();
    let cut = Instant::now();
    server.kill();
    tokio::time::timeout(Duration::from_secs(5), leader.lost())
        .await
        .expect("steps down without etcd");
    // It gave up within the TTL (3 s), so nobody else could have led at the same time.
    assert!(
        cut.elapsed() < Duration::from_secs(3),
        "{:?}",
        cut.elapsed()
    );
}

#[tokio::test]
async fn embedded_stores_always_lead() {
    let e = AlwaysLeader;
    let mut l = e.campaign().await.unwrap();
    assert!(l.is_leader());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), l.lost())
            .await
            .is_err()
    );
}

//! List resourceVersion semantics, as etcd-backed Kubernetes serves them: `limit`/`continue`
//! pages all come from the first page's revision (objects created, changed or deleted
//! between pages neither shift, repeat nor appear), `resourceVersionMatch=Exact` serves a past
//! revision while the watch cache's window reaches it and 410 Expired after, and
//! `resourceVersion=0` and NotOlderThan serve the cache. On memory, SQLite and a real etcd.

mod common;

use common::{Backend, TestPlane, request, start_with};
use hyper::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const CM: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

/// name → resourceVersion of a list's items.
fn items(list: &Value) -> BTreeMap<String, String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

async fn get(t: &TestPlane, path: &str) -> common::Answer {
    request(t, Method::GET, path, &[], None).await
}

async fn create(t: &TestPlane, name: &str) {
    let a = request(
        t,
        Method::POST,
        CM,
        &[("content-type", "application/json")],
        Some(json!({"metadata": {"name": name}, "spec": {"holderIdentity": "0"}})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
}

async fn update(t: &TestPlane, name: &str, v: u64) {
    let a = request(
        t,
        Method::PATCH,
        &format!("{CM}/{name}"),
        &[("content-type", "application/merge-patch+json")],
        Some(json!({"spec": {"holderIdentity": v.to_string()}})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

async fn delete(t: &TestPlane, name: &str) {
    let a = request(t, Method::DELETE, &format!("{CM}/{name}"), &[], None).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Rounds of: a reference list, then pages of `limit` with random writes (creates between
/// and around the pages' keys, updates, deletes) between every two pages. The union of the
/// pages must be the reference list exactly, resourceVersions included, and every page must
/// report the first page's revision.
async fn pages_come_from_one_snapshot(backend: Backend) {
    let t = start_with(backend, None).await;
    let mut live: Vec<String> = Vec::new();
    for i in 0..30 {
        let n = format!("cm-{:03}", i * 10);
        create(&t, &n).await;
        live.push(n);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next = 1000u64;
    for round in 0..6 {
        let limit = 1 + rng.below(7);
        let reference = get(&t, CM).await.body;
        let want = items(&reference);
        let mut got: BTreeMap<String, String> = BTreeMap::new();
        let mut path = format!("{CM}?limit={limit}");
        let mut first_rv: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = get(&t, &path).await;
            assert_eq!(page.status, 200, "{}", page.body);
            let rv = page.body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string();
            match &first_rv {
                None => {
                    assert_eq!(
                        rv, reference["metadata"]["resourceVersion"],
                        "round {round}"
                    );
                    first_rv = Some(rv);
                }
                Some(first) => assert_eq!(&rv, first, "round {round}: a page moved revision"),
            }
            for (k, v) in items(&page.body) {
                assert!(
                    got.insert(k.clone(), v).is_none(),
                    "round {round}: {k} came twice"
                );
            }
            pages += 1;
            let Some(cont) = page.body["metadata"]["continue"].as_str().map(String::from) else {
                break;
            };
            // Writes between pages: a create that sorts anywhere, an update and a delete.
            for _ in 0..1 + rng.below(4) {
                match rng.below(3) {
                    0 => {
                        let n = format!("cm-{:03}-{next}", rng.below(300));
                        next += 1;
                        create(&t, &n).await;
                        live.push(n);
                    }
                    1 if !live.is_empty() => {
                        let i = rng.below(live.len() as u64) as usize;
                        next += 1;
                        update(&t, &live[i].clone(), next).await;
                    }
                    _ if live.len() > 5 => {
                        let i = rng.below(live.len() as u64) as usize;
                        let n = live.remove(i);
                        delete(&t, &n).await;
                    }
                    _ => {}
                }
            }
            path = format!("{CM}?limit={limit}&continue={cont}");
        }
        assert!(pages > 1 || want.len() as u64 <= limit);
        assert_eq!(
            got, want,
            "round {round}: the pages are not the list at their revision"
        );

        // That revision, exactly, after the writes: the same list.
        let rv = first_rv.unwrap();
        let exact = get(
            &t,
            &format!("{CM}?resourceVersion={rv}&resourceVersionMatch=Exact"),
        )
        .await;
        assert_eq!(exact.status, 200, "{}", exact.body);
        assert_eq!(exact.body["metadata"]["resourceVersion"], rv);
        assert_eq!(items(&exact.body), want, "round {round}: Exact at {rv}");
    }

    // NotOlderThan and 0 serve the newest the cache has.
    let now = get(&t, CM).await.body;
    let rv = now["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for q in [
        format!("resourceVersion={rv}&resourceVersionMatch=NotOlderThan"),
        format!("resourceVersion={rv}"),
        "resourceVersion=0".to_string(),
    ] {
        let a = get(&t, &format!("{CM}?{q}")).await;
        assert_eq!(a.status, 200, "{q}: {}", a.body);
        assert_eq!(items(&a.body), items(&now), "{q}");
    }
    let a = get(
        &t,
        &format!("{CM}?resourceVersion=0&resourceVersionMatch=Exact"),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);

    // Once the history is compacted, the past is gone: 410 Expired, for Exact and continue.
    let first = get(&t, &format!("{CM}?limit=2")).await.body;
    let old_rv: i64 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let cont = first["metadata"]["continue"].as_str().unwrap().to_string();
    update(&t, &live[0].clone(), 1).await;
    update(&t, &live[1].clone(), 2).await;
    let newest: i64 = get(&t, CM).await.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    t.plane.registry.compact(newest).await.unwrap();
    let a = get(
        &t,
        &format!("{CM}?resourceVersion={old_rv}&resourceVersionMatch=Exact"),
    )
    .await;
    assert_eq!(a.status, 410, "{}", a.body);
    assert_eq!(a.body["reason"], "Expired");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("too old resource version: {old_rv}")),
        "{}",
        a.body
    );
    let a = get(&t, &format!("{CM}?limit=2&continue={cont}")).await;
    assert_eq!(a.status, 410, "{}", a.body);
    assert_eq!(a.body["reason"], "Expired");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("continue parameter is too old"),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    pages_come_from_one_snapshot(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    pages_come_from_one_snapshot(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd() {
    pages_come_from_one_snapshot(Backend::Etcd).await;
}

//! The HTTP API over the Unix socket: CRUD, validation, optimistic concurrency, merge patch,
//! subresources, generateName, cascading delete, allocators and watch basics.

mod common;

use common::{deployment, pod, start};
use futures::StreamExt;
use hyper::Method;
use podd_api::{Deployment, EventType, Kind, Node, Pod, Service};
use podd_client::ListParams;

#[tokio::test]
async fn create_get_list_update_patch_delete() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let created = pods.create(&pod("web-1", &[("app", "web")])).await.unwrap();
    assert!(!created.metadata.uid.is_empty());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, 1);
    let rv1: i64 = created.metadata.resource_version.parse().unwrap();
    assert!(rv1 > 0);
    pods.create(&pod("db-1", &[("app", "db")])).await.unwrap();

    let err = pods.create(&pod("web-1", &[])).await.unwrap_err();
    assert_eq!(err.code(), Some(409), "{err}");
    assert_eq!(err.reason(), Some("AlreadyExists"));

    let got = pods.get("web-1").await.unwrap();
    assert_eq!(
        got.metadata.resource_version,
        created.metadata.resource_version
    );
    let err = pods.get("nope").await.unwrap_err();
    assert!(err.is_not_found());

    let list = pods.list(&ListParams::labels("app=web")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.kind, "PodList");
    assert!(list.revision() >= rv1);
    let all = t
        .client
        .api::<Pod>(None)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);

    // Update with the current resourceVersion works and bumps generation on spec change.
    let mut upd = got.clone();
    upd.spec.containers[0].image = "busybox:2".into();
    let upd = pods.update(&upd).await.unwrap();
    assert_eq!(upd.metadata.generation, 2);
    assert_eq!(upd.metadata.uid, created.metadata.uid);
    // A stale resourceVersion is a 409 Conflict.
    let mut stale = got.clone();
    stale.metadata.labels.insert("x".into(), "y".into());
    let err = pods.update(&stale).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(err.reason(), Some("Conflict"));

    // Metadata-only change keeps the generation.
    let patched = pods
        .patch(
            "web-1",
            &serde_json::json!({"metadata": {"labels": {"tier": "front"}}}),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.labels.get("tier").map(String::as_str),
        Some("front")
    );
    assert_eq!(
        patched.metadata.labels.get("app").map(String::as_str),
        Some("web")
    );
    assert_eq!(patched.metadata.generation, 2);

    // A write that changes nothing does not move the resourceVersion.
    let same = pods.update(&patched).await.unwrap();
    assert_eq!(
        same.metadata.resource_version,
        patched.metadata.resource_version
    );

    // The main resource ignores status; the status subresource ignores spec.
    let mut s = patched.clone();
    s.status.phase = podd_api::PodPhase::Running;
    s.spec.containers[0].image = "ignored".into();
    let s = pods.update_status(&s).await.unwrap();
    assert_eq!(s.status.phase, podd_api::PodPhase::Running);
    assert_eq!(s.spec.containers[0].image, "busybox:2");
    let mut m = s.clone();
    m.status.phase = podd_api::PodPhase::Failed;
    let m = pods.update(&m).await.unwrap();
    assert_eq!(m.status.phase, podd_api::PodPhase::Running);

    let deleted = pods.delete("web-1").await.unwrap();
    assert_eq!(deleted.metadata.name, "web-1");
    assert!(pods.get("web-1").await.unwrap_err().is_not_found());
    assert!(pods.delete("web-1").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn validation_reports_every_problem_with_field_paths() {
    let t = start(None).await;
    let mut d = deployment("Bad_Name", 2);
    d.spec.template.spec.containers[0].image = String::new();
    d.spec.template.metadata.labels.clear();
    let body = serde_json::to_vec(&d).unwrap();
    let r = t
        .client
        .raw(
            Method::POST,
            "/apis/apps/v1/namespaces/default/deployments",
            Some(body),
            "application/json",
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 422);
    let st: podd_api::Status = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(st.reason, "Invalid");
    let causes: Vec<String> = st
        .details
        .unwrap()
        .causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    assert!(
        causes.iter().any(|c| c.starts_with("metadata.name")),
        "{causes:?}"
    );
    assert!(
        causes.contains(&"spec.template.spec.containers[0].image: required".to_string()),
        "{causes:?}"
    );
    assert!(
        causes
            .iter()
            .any(|c| c.starts_with("spec.template.metadata.labels")),
        "{causes:?}"
    );
    // Malformed JSON and unknown paths.
    let r = t
        .client
        .raw(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(b"{".to_vec()),
            "application/json",
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    let r = t
        .client
        .raw(Method::GET, "/api/v1/widgets", None, "")
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 404);
    let st: podd_api::Status = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(st.kind, "Status");
}

#[tokio::test]
async fn generate_name_scale_and_cascading_delete() {
    let t = start(None).await;
    let deps = t.client.api::<Deployment>(Some("default"));
    let d = deps.create(&deployment("web", 2)).await.unwrap();
    let scale = deps.scale("web", 5).await.unwrap();
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    let d2 = deps.get("web").await.unwrap();
    assert_eq!(d2.spec.replicas, 5);
    assert_eq!(d2.metadata.generation, d.metadata.generation + 1);

    let pods = t.client.api::<Pod>(Some("default"));
    let mut owned = pod("", &[("app", "web")]);
    owned.metadata.generate_name = "web-".into();
    owned
        .metadata
        .owner_references
        .push(podd_api::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: d.metadata.uid.clone(),
            controller: true,
        });
    let a = pods.create(&owned).await.unwrap();
    let b = pods.create(&owned).await.unwrap();
    assert!(
        a.metadata.name.starts_with("web-") && a.metadata.name.len() == 9,
        "{}",
        a.metadata.name
    );
    assert_ne!(a.metadata.name, b.metadata.name);
    pods.create(&pod("bystander", &[("app", "web")]))
        .await
        .unwrap();

    deps.delete("web").await.unwrap();
    let left = pods.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = left
        .items
        .iter()
        .map(|p| p.metadata.name.as_str())
        .collect();
    assert_eq!(names, vec!["bystander"]);
}

#[tokio::test]
async fn service_vips_and_node_cidrs_are_allocated_and_persisted() {
    let t = start(None).await;
    let svcs = t.client.api::<Service>(Some("default"));
    let mk = |name: &str, ip: &str| -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], "clusterIP": ip}
        }))
        .unwrap()
    };
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..20 {
        let s = svcs.create(&mk(&format!("s{i}"), "")).await.unwrap();
        assert!(
            s.spec.cluster_ip.starts_with("10.9"),
            "{}",
            s.spec.cluster_ip
        );
        assert_ne!(s.spec.cluster_ip, "10.96.0.10", "the DNS VIP is reserved");
        assert_ne!(s.spec.cluster_ip, "10.96.0.0");
        assert!(ips.insert(s.spec.cluster_ip.clone()));
    }
    // The DNS service asks for its VIP by address.
    let dns = svcs.create(&mk("kube-dns", "10.96.0.10")).await.unwrap();
    assert_eq!(dns.spec.cluster_ip, "10.96.0.10");
    let err = svcs.create(&mk("dup", "10.96.0.10")).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    let err = svcs.create(&mk("out", "192.168.1.1")).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    // clusterIP is immutable.
    let mut s0 = svcs.get("s0").await.unwrap();
    s0.spec.cluster_ip = "10.96.5.5".into();
    assert_eq!(svcs.update(&s0).await.unwrap_err().code(), Some(422));
    assert_eq!(
        t.plane
            .registry
            .service_ips()
            .allocated_count()
            .await
            .unwrap(),
        21
    );
    svcs.delete("s0").await.unwrap();
    assert_eq!(
        t.plane
            .registry
            .service_ips()
            .allocated_count()
            .await
            .unwrap(),
        20
    );

    let nodes = t.client.api::<Node>(None);
    let mut cidrs = Vec::new();
    for i in 0..3 {
        let mut n = Node::default();
        n.metadata.name = format!("node-{i}");
        cidrs.push(nodes.create(&n).await.unwrap().spec.pod_cidr);
    }
    assert_eq!(
        cidrs,
        vec!["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    );

    // A second server on the same store sees the same allocations (they live in the store).
    let store = t.store.clone();
    drop(t);
    let t2 = common::start_on(store, None).await;
    let s = t2
        .client
        .api::<Service>(Some("default"))
        .create(&mk("after-restart", ""))
        .await
        .unwrap();
    assert!(!ips.iter().skip(1).any(|ip| *ip == s.spec.cluster_ip));
    let mut n = Node::default();
    n.metadata.name = "node-3".into();
    let n = t2.client.api::<Node>(None).create(&n).await.unwrap();
    assert_eq!(n.spec.pod_cidr, "10.244.4.0/24");
}

#[tokio::test]
async fn watch_from_a_revision_and_expired_after_compaction() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let a = pods.create(&pod("a", &[("app", "x")])).await.unwrap();
    let start_rv = a.metadata.resource_version.clone();
    let mut w = pods.watch(&ListParams::default(), &start_rv).await.unwrap();
    pods.create(&pod("b", &[("app", "x")])).await.unwrap();
    pods.patch(
        "a",
        &serde_json::json!({"metadata": {"labels": {"v": "2"}}}),
    )
    .await
    .unwrap();
    pods.delete("b").await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(5), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push((ev.kind, ev.object.metadata.name.clone()));
    }
    assert_eq!(
        seen,
        vec![
            (EventType::Added, "b".to_string()),
            (EventType::Modified, "a".to_string()),
            (EventType::Deleted, "b".to_string())
        ]
    );
    // Label-selected watch from 0: current objects as ADDED first.
    let mut w0 = pods.watch(&ListParams::labels("v=2"), "0").await.unwrap();
    let ev = w0.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind, ev.object.metadata.name.as_str()),
        (EventType::Added, "a")
    );

    // Compact past the start: watching from there is 410 Expired.
    let now = t.store.revision().await.unwrap();
    t.plane.registry.compact(now).await.unwrap();
    let err = match pods.watch(&ListParams::default(), &start_rv).await {
        Ok(_) => panic!("a compacted resourceVersion must not be watchable"),
        Err(e) => e,
    };
    assert!(err.is_expired(), "{err}");
    assert_eq!(err.reason(), Some("Expired"));
    assert!(err.to_string().contains("too old"), "{err}");
}

#[tokio::test]
async fn cluster_scoped_and_bad_requests() {
    let t = start(None).await;
    let r = t
        .client
        .raw(Method::GET, "/api/v1/namespaces/default/nodes", None, "")
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 404);
    let r = t
        .client
        .raw(Method::GET, "/api/v1/pods?labelSelector=%3Dx", None, "")
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    let r = t
        .client
        .raw(
            Method::GET,
            "/api/v1/pods?fieldSelector=status.phase%3DRunning",
            None,
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    let mut p = pod("x", &[]);
    p.metadata.namespace = "other".into();
    let body = serde_json::to_vec(&p).unwrap();
    let r = t
        .client
        .raw(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(body),
            "application/json",
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    let _ = Kind::Pod;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backed_server_keeps_everything_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("podd.db").display());
    let store = podd_store::open(&url).await.unwrap();
    let t = common::start_on(store, None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let p = pods.create(&pod("durable", &[("app", "d")])).await.unwrap();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "d"}, "spec": {"selector": {"app": "d"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let ip = t
        .client
        .api::<Service>(Some("default"))
        .create(&svc)
        .await
        .unwrap()
        .spec
        .cluster_ip;
    let common::TestPlane {
        plane,
        store,
        client,
        ..
    } = t;
    plane.shutdown().await;
    drop((store, client));
    // The old server's connection tasks let go of the store (and its file lock)
    // asynchronously.
    let mut tries = 0;
    let store = loop {
        match podd_store::open(&url).await {
            Ok(s) => break s,
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let t = common::start_on(store, None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let got = pods.get("durable").await.unwrap();
    assert_eq!(got.metadata.uid, p.metadata.uid);
    assert_eq!(got.metadata.resource_version, p.metadata.resource_version);
    let s = t
        .client
        .api::<Service>(Some("default"))
        .get("d")
        .await
        .unwrap();
    assert_eq!(s.spec.cluster_ip, ip);
    assert_eq!(
        t.plane
            .registry
            .service_ips()
            .allocated_count()
            .await
            .unwrap(),
        1
    );
    // Watch resumes from the old revision on the reopened store.
    let mut w = pods
        .watch(&ListParams::default(), &p.metadata.resource_version)
        .await
        .unwrap();
    pods.delete("durable").await.unwrap();
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind, ev.object.metadata.name.as_str()),
        (EventType::Deleted, "durable")
    );
}

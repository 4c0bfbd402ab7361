//! The HTTP API over the Unix socket: CRUD, validation, optimistic concurrency, merge patch,
//! subresources, generateName, cascading delete, allocators and watch basics.

mod common;

use common::{deployment, pod, start};
use futures::StreamExt;
use hyper::Method;
use podd_api::{Deployment, Kind, Node, Pod, ResourceExt, Service, WatchEventType as EventType};
use podd_client::ListParams;

#[tokio::test]
async fn create_get_list_update_patch_delete() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let created = pods.create(&pod("web-1", &[("app", "web")])).await.unwrap();
    assert!(created.uid().is_some_and(|u| !u.is_empty()));
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let rv1: i64 = created.resource_version().unwrap().parse().unwrap();
    assert!(rv1 > 0);
    pods.create(&pod("db-1", &[("app", "db")])).await.unwrap();

    let err = pods.create(&pod("web-1", &[])).await.unwrap_err();
    assert_eq!(err.code(), Some(409), "{err}");
    assert_eq!(err.reason(), Some("AlreadyExists"));

    let got = pods.get("web-1").await.unwrap();
    assert_eq!(got.resource_version(), created.resource_version());
    let err = pods.get("nope").await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.message(), Some("pods \"nope\" not found"));

    let list = pods.list(&ListParams::labels("app=web")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let all = t
        .client
        .api::<Pod>(None)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    assert!(
        all.metadata
            .resource_version
            .unwrap()
            .parse::<i64>()
            .unwrap()
            >= rv1,
        "the list's revision"
    );

    // Update with the current resourceVersion works and bumps generation on spec change.
    let mut upd = got.clone();
    upd.spec.as_mut().unwrap().containers[0].image = Some("busybox:2".into());
    let upd = pods.update(&upd).await.unwrap();
    assert_eq!(upd.metadata.generation, Some(2));
    assert_eq!(upd.uid(), created.uid());
    // A stale resourceVersion is a 409 Conflict.
    let mut stale = got.clone();
    stale.labels_mut().insert("x".into(), "y".into());
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
        patched.labels().get("tier").map(String::as_str),
        Some("front")
    );
    assert_eq!(patched.labels().get("app").map(String::as_str), Some("web"));
    assert_eq!(patched.metadata.generation, Some(2));

    // A write that changes nothing does not move the resourceVersion.
    let same = pods.update(&patched).await.unwrap();
    assert_eq!(same.resource_version(), patched.resource_version());

    // The main resource ignores status; the status subresource ignores spec.
    let mut s = patched.clone();
    s.status.get_or_insert_with(Default::default).phase = Some("Running".into());
    s.spec.as_mut().unwrap().containers[0].image = Some("ignored".into());
    let s = pods.update_status(&s).await.unwrap();
    assert_eq!(podd_api::resources::pod_phase(&s), "Running");
    assert_eq!(
        s.spec.as_ref().unwrap().containers[0].image.as_deref(),
        Some("busybox:2")
    );
    let mut m = s.clone();
    m.status.as_mut().unwrap().phase = Some("Failed".into());
    let m = pods.update(&m).await.unwrap();
    assert_eq!(podd_api::resources::pod_phase(&m), "Running");

    // Not bound to a node: the delete is immediate.
    let deleted = pods.delete("web-1").await.unwrap().object().unwrap();
    assert_eq!(deleted.name_any(), "web-1");
    assert!(pods.get("web-1").await.unwrap_err().is_not_found());
    assert!(pods.delete("web-1").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn validation_reports_every_problem_with_field_paths() {
    let t = start(None).await;
    let mut d = deployment("Bad_Name", 2);
    let spec = d.spec.as_mut().unwrap();
    spec.template.spec.as_mut().unwrap().containers[0].image = None;
    spec.template.metadata.as_mut().unwrap().labels = None;
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
    assert_eq!(st.reason.as_deref(), Some("Invalid"));
    let causes: Vec<String> = st
        .details
        .unwrap()
        .causes
        .unwrap_or_default()
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c.field.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        causes.iter().any(|c| c.starts_with("metadata.name")),
        "{causes:?}"
    );
    assert!(
        causes
            .iter()
            .any(|c| c.starts_with("spec.template.spec.containers[0].image: Required value")),
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
    let st: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["apiVersion"], "v1");
}

#[tokio::test]
async fn generate_name_scale_and_cascading_delete() {
    let t = start(None).await;
    let deps = t.client.api::<Deployment>(Some("default"));
    let d = deps.create(&deployment("web", 2)).await.unwrap();
    let scale = deps.scale("web", 5).await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    let d2 = deps.get("web").await.unwrap();
    assert_eq!(d2.spec.unwrap().replicas, Some(5));
    assert_eq!(
        d2.metadata.generation,
        Some(d.metadata.generation.unwrap() + 1)
    );

    let pods = t.client.api::<Pod>(Some("default"));
    let owned = owned_pod("web-", &d);
    let a = pods.create(&owned).await.unwrap();
    let b = pods.create(&owned).await.unwrap();
    assert!(
        a.name_any().starts_with("web-") && a.name_any().len() == 9,
        "{}",
        a.name_any()
    );
    assert_ne!(a.name_any(), b.name_any());
    pods.create(&pod("bystander", &[("app", "web")]))
        .await
        .unwrap();

    deps.delete("web").await.unwrap();
    let left = pods.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = left.items.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, vec!["bystander"]);
}

/// A pod owned by `owner`, named by generateName.
fn owned_pod(generate_name: &str, owner: &Deployment) -> Pod {
    let mut p = pod("", &[("app", "web")]);
    p.metadata.name = None;
    p.metadata.generate_name = Some(generate_name.into());
    p.metadata.owner_references = Some(vec![podd_api::OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap(),
        controller: Some(true),
        ..Default::default()
    }]);
    p
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
        let ip = cluster_ip(&s);
        assert!(ip.starts_with("10.9"), "{ip}");
        assert_ne!(ip, "10.96.0.10", "the DNS VIP is reserved");
        assert_ne!(ip, "10.96.0.0");
        assert_eq!(s.spec.as_ref().unwrap().cluster_ips, Some(vec![ip.clone()]));
        assert!(ips.insert(ip));
    }
    // The DNS service asks for its VIP by address.
    let dns = svcs.create(&mk("kube-dns", "10.96.0.10")).await.unwrap();
    assert_eq!(cluster_ip(&dns), "10.96.0.10");
    let err = svcs.create(&mk("dup", "10.96.0.10")).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    let err = svcs.create(&mk("out", "192.168.1.1")).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    // clusterIP is immutable.
    let mut s0 = svcs.get("s0").await.unwrap();
    s0.spec.as_mut().unwrap().cluster_ip = Some("10.96.5.5".into());
    assert_eq!(svcs.update(&s0).await.unwrap_err().code(), Some(422));
    let mut s0 = svcs.get("s0").await.unwrap();
    s0.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.5.5".into()]);
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
        let n = nodes
            .create(&common::node(&format!("node-{i}")))
            .await
            .unwrap();
        let spec = n.spec.unwrap();
        assert_eq!(spec.pod_cidrs, Some(vec![spec.pod_cidr.clone().unwrap()]));
        cidrs.push(spec.pod_cidr.unwrap());
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
    assert!(!ips.iter().skip(1).any(|ip| *ip == cluster_ip(&s)));
    let n = t2
        .client
        .api::<Node>(None)
        .create(&common::node("node-3"))
        .await
        .unwrap();
    assert_eq!(n.spec.unwrap().pod_cidr.as_deref(), Some("10.244.4.0/24"));
}

fn cluster_ip(s: &Service) -> String {
    s.spec
        .as_ref()
        .unwrap()
        .cluster_ip
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn watch_from_a_revision_and_expired_after_compaction() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let a = pods.create(&pod("a", &[("app", "x")])).await.unwrap();
    let start_rv = a.resource_version().unwrap();
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
        seen.push((ev.kind, ev.object.name_any()));
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
        (ev.kind, ev.object.name_any().as_str()),
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
            "/api/v1/pods?fieldSelector=spec.restartPolicy%3DNever",
            None,
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    let mut p = pod("x", &[]);
    p.metadata.namespace = Some("other".into());
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
        .unwrap();
    let ip = cluster_ip(&ip);
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
    assert_eq!(got.uid(), p.uid());
    assert_eq!(got.resource_version(), p.resource_version());
    let s = t
        .client
        .api::<Service>(Some("default"))
        .get("d")
        .await
        .unwrap();
    assert_eq!(cluster_ip(&s), ip);
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
        .watch(&ListParams::default(), &p.resource_version().unwrap())
        .await
        .unwrap();
    pods.delete("durable").await.unwrap();
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind, ev.object.name_any().as_str()),
        (EventType::Deleted, "durable")
    );
}

// ---- Kubernetes' verbs and options ----

use common::{request, request_bytes};

const MERGE: &str = "application/merge-patch+json";
const JSONPATCH: &str = "application/json-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";

fn container_pod(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{
            "name": "c", "image": "busybox:1", "command": ["sleep", "1000"],
            "env": [{"name": "A", "value": "1"}],
            "ports": [{"containerPort": 8080, "name": "http"}]
        }, {"name": "side", "image": "busybox:1"}]}
    })
}

#[tokio::test]
async fn every_patch_type_by_content_type() {
    let t = start(None).await;
    let path = "/api/v1/namespaces/default/pods";
    let r = request(
        &t,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        Some(container_pod("p")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let obj = format!("{path}/p");
    // Merge patch: a list is replaced whole.
    let r = request(
        &t,
        Method::PATCH,
        &obj,
        &[("content-type", MERGE)],
        Some(serde_json::json!({"metadata": {"labels": {"tier": "front"}}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["metadata"]["labels"],
        serde_json::json!({"app": "web", "tier": "front"})
    );
    // Strategic merge patch: containers merge by name; the unpatched fields stay.
    let r = request(
        &t,
        Method::PATCH,
        &obj,
        &[("content-type", STRATEGIC)],
        Some(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = &r.body["spec"]["containers"];
    assert_eq!(c.as_array().unwrap().len(), 2, "{c}");
    assert_eq!(c[0]["image"], "busybox:2");
    assert_eq!(c[0]["command"], serde_json::json!(["sleep", "1000"]));
    assert_eq!(
        c[0]["env"],
        serde_json::json!([{"name": "A", "value": "1"}])
    );
    assert_eq!(c[0]["ports"][0]["containerPort"], 8080);
    assert_eq!(c[1]["name"], "side");
    // JSON patch (RFC 6902).
    let r = request(&t, Method::PATCH, &obj, &[("content-type", JSONPATCH)],
        Some(serde_json::json!([{"op": "replace", "path": "/spec/containers/1/image", "value": "busybox:3"},
            {"op": "add", "path": "/metadata/labels/j", "value": "p"}]))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["spec"]["containers"][1]["image"], "busybox:3");
    assert_eq!(r.body["metadata"]["labels"]["j"], "p");
    assert_eq!(r.body["spec"]["containers"][0]["image"], "busybox:2");
    // A failing JSON patch test op changes nothing.
    let r = request(
        &t,
        Method::PATCH,
        &obj,
        &[("content-type", JSONPATCH)],
        Some(
            serde_json::json!([{"op": "test", "path": "/metadata/labels/j", "value": "q"},
            {"op": "remove", "path": "/metadata/labels"}]),
        ),
    )
    .await;
    assert!(
        r.status == 422 || r.status == 400,
        "{} {}",
        r.status,
        r.body
    );
    // Other media types: 415 UnsupportedMediaType.
    for ct in ["text/plain", "application/vnd.kubernetes.protobuf"] {
        let r = request(
            &t,
            Method::PATCH,
            &obj,
            &[("content-type", ct)],
            Some(serde_json::json!({})),
        )
        .await;
        assert_eq!(r.status, 415, "{ct}: {}", r.body);
        assert_eq!(r.body["kind"], "Status");
        assert_eq!(r.body["reason"], "UnsupportedMediaType");
    }
    let got = t.client.api::<Pod>(Some("default")).get("p").await.unwrap();
    assert_eq!(got.labels().get("j").map(String::as_str), Some("p"));
}

#[tokio::test]
async fn protobuf_bodies_are_read_mislabelled_ones_refused_and_tables_served() {
    let t = start(None).await;
    // What `kubectl create deployment web --image=busybox-httpd --port=8080 --replicas=0`
    // sends (captured from kubectl 1.32).
    let pb = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/src/protobuf/testdata/create_deployment_web.pb"
    ))
    .unwrap();
    let r = request_bytes(
        &t,
        Method::POST,
        "/apis/apps/v1/namespaces/default/deployments",
        &[("content-type", "application/vnd.kubernetes.protobuf")],
        pb,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["spec"]["replicas"], 0, "{}", r.body);
    assert_eq!(
        r.body["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    // JSON sent as protobuf: a 400 that says what the body looks like.
    let path = "/api/v1/namespaces/default/pods";
    let r = request(
        &t,
        Method::POST,
        path,
        &[("content-type", "application/vnd.kubernetes.protobuf")],
        Some(container_pod("p")),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("looks like JSON"),
        "{}",
        r.body
    );
    // Protobuf is answered in protobuf (tests/protobuf.rs decodes it); a client that prefers
    // JSON gets JSON.
    for accept in [
        "application/vnd.kubernetes.protobuf",
        "application/vnd.kubernetes.protobuf, application/json",
    ] {
        let r = request(&t, Method::GET, path, &[("accept", accept)], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.headers["content-type"],
            "application/vnd.kubernetes.protobuf"
        );
    }
    let r = request(
        &t,
        Method::GET,
        path,
        &[(
            "accept",
            "application/json, application/vnd.kubernetes.protobuf",
        )],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["kind"], "PodList");
    request(
        &t,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        Some(container_pod("p")),
    )
    .await;
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let r = request(&t, Method::GET, path, &[("accept", table)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["kind"], "Table");
    let r = request(
        &t,
        Method::GET,
        &format!("{path}/p"),
        &[("accept", table)],
        None,
    )
    .await;
    assert_eq!(r.body["kind"], "Table");
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let t = start(None).await;
    let path = "/api/v1/namespaces/default/pods";
    let ct = [("content-type", "application/json")];
    let rev0 = t.store.revision().await.unwrap();
    let r = request(
        &t,
        Method::POST,
        &format!("{path}?dryRun=All"),
        &ct,
        Some(container_pod("p")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["metadata"]["name"], "p");
    assert!(r.body["metadata"]["uid"].is_string());
    assert_eq!(
        t.store.revision().await.unwrap(),
        rev0,
        "a dry-run create wrote"
    );
    let pods = t.client.api::<Pod>(Some("default"));
    assert!(pods.get("p").await.unwrap_err().is_not_found());
    // A Service dry run allocates no address.
    let svc = serde_json::json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
    let r = request(
        &t,
        Method::POST,
        "/api/v1/namespaces/default/services?dryRun=All",
        &ct,
        Some(svc),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        t.plane
            .registry
            .service_ips()
            .allocated_count()
            .await
            .unwrap(),
        0
    );

    let created = pods.create(&pod("p", &[("app", "a")])).await.unwrap();
    let rev1 = t.store.revision().await.unwrap();
    let mut changed = serde_json::to_value(&created).unwrap();
    changed["metadata"]["labels"]["app"] = "b".into();
    let r = request(
        &t,
        Method::PUT,
        &format!("{path}/p?dryRun=All"),
        &ct,
        Some(changed),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["metadata"]["labels"]["app"], "b");
    let r = request(
        &t,
        Method::PATCH,
        &format!("{path}/p?dryRun=All"),
        &[("content-type", MERGE)],
        Some(serde_json::json!({"metadata": {"labels": {"app": "c"}}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["metadata"]["labels"]["app"], "c");
    let r = request(
        &t,
        Method::DELETE,
        &format!("{path}/p?dryRun=All"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(t.store.revision().await.unwrap(), rev1, "a dry run wrote");
    let got = pods.get("p").await.unwrap();
    assert_eq!(got, created);
    // Bad values are refused.
    let r = request(
        &t,
        Method::DELETE,
        &format!("{path}/p?dryRun=Some"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn orphan_and_foreground_deletes() {
    let t = start(None).await;
    let deps = t.client.api::<Deployment>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    let d = deps.create(&deployment("web", 1)).await.unwrap();
    let a = pods.create(&owned_pod("web-", &d)).await.unwrap();
    let b = pods.create(&owned_pod("web-", &d)).await.unwrap();
    let dp = podd_client::DeleteParams {
        propagation: Some(podd_client::Propagation::Orphan),
        ..Default::default()
    };
    deps.delete_with("web", &dp).await.unwrap();
    assert!(deps.get("web").await.unwrap_err().is_not_found());
    for p in [&a, &b] {
        let got = pods.get(&p.name_any()).await.unwrap();
        assert!(
            got.owner_references().is_empty(),
            "{:?}",
            got.owner_references()
        );
        assert_eq!(got.uid(), p.uid());
    }
    // Foreground: the dependents go, then the owner.
    let d = deps.create(&deployment("fg", 1)).await.unwrap();
    let c = pods.create(&owned_pod("fg-", &d)).await.unwrap();
    let dp = podd_client::DeleteParams {
        propagation: Some(podd_client::Propagation::Foreground),
        ..Default::default()
    };
    deps.delete_with("fg", &dp).await.unwrap();
    assert!(pods.get(&c.name_any()).await.unwrap_err().is_not_found());
    assert!(deps.get("fg").await.unwrap_err().is_not_found());
    // Preconditions: a wrong uid is a 409 and deletes nothing.
    let dp = podd_client::DeleteParams {
        precondition_uid: Some("not-the-uid".into()),
        ..Default::default()
    };
    let e = pods.delete_with(&a.name_any(), &dp).await.unwrap_err();
    assert_eq!(e.code(), Some(409), "{e}");
    assert!(pods.get(&a.name_any()).await.is_ok());
}

#[tokio::test]
async fn finalizers_hold_an_object_until_they_are_gone() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let mut p = pod("held", &[]);
    p.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    pods.create(&p).await.unwrap();
    let d = pods.delete("held").await.unwrap().object().unwrap();
    assert!(d.metadata.deletion_timestamp.is_some());
    let got = pods.get("held").await.unwrap();
    assert!(got.metadata.deletion_timestamp.is_some());
    pods.patch(
        "held",
        &serde_json::json!({"metadata": {"finalizers": null}}),
    )
    .await
    .unwrap();
    assert!(pods.get("held").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn graceful_pod_delete_waits_for_the_agent() {
    let t = start(None).await;
    let nodes = t.client.api::<Node>(None);
    nodes.create(&common::ready_node("n1")).await.unwrap();
    // Ready is status: written through the status subresource, as the agent does.
    nodes
        .patch_status(
            "n1",
            &serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .await
        .unwrap();
    let pods = t.client.api::<Pod>(Some("default"));
    let mut p = pod("bound", &[]);
    let spec = p.spec.as_mut().unwrap();
    spec.node_name = Some("n1".into());
    spec.termination_grace_period_seconds = Some(7);
    pods.create(&p).await.unwrap();
    // Wait for the cache to see the Ready node.
    common::eventually(
        std::time::Duration::from_secs(5),
        "the node in the cache",
        || async {
            t.plane
                .registry
                .cached::<Node>(None)
                .iter()
                .any(podd_api::resources::node_is_ready)
                .then_some(())
        },
    )
    .await;
    let d = pods.delete("bound").await.unwrap().object().unwrap();
    assert!(d.metadata.deletion_timestamp.is_some());
    assert_eq!(d.metadata.deletion_grace_period_seconds, Some(7));
    let got = pods.get("bound").await.unwrap();
    assert!(
        got.metadata.deletion_timestamp.is_some(),
        "Terminating until the agent is done"
    );
    // A second delete changes nothing.
    pods.delete("bound").await.unwrap();
    assert!(pods.get("bound").await.is_ok());
    // The agent, once the containers stopped, deletes it with gracePeriodSeconds=0.
    let token = t.plane.auth.issue_node_token("n1").unwrap();
    let agent = podd_client::Client::tls(
        &format!("127.0.0.1:{}", t.plane.tls_addr.unwrap().port()),
        &t.plane.ca_pem,
        &token,
    )
    .unwrap();
    let dp = podd_client::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    agent
        .api::<Pod>(Some("default"))
        .delete_with("bound", &dp)
        .await
        .unwrap();
    assert!(pods.get("bound").await.unwrap_err().is_not_found());
    // An unbound pod, or one on a node that is not Ready, goes at once.
    let mut q = pod("lost", &[]);
    q.spec.as_mut().unwrap().node_name = Some("gone".into());
    pods.create(&q).await.unwrap();
    pods.delete("lost").await.unwrap();
    assert!(pods.get("lost").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn set_based_selectors_and_field_selectors() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    for (name, app, tier) in [
        ("a", "web", "front"),
        ("b", "web", "back"),
        ("c", "db", "back"),
        ("d", "cache", ""),
    ] {
        let mut labels = vec![("app", app)];
        if !tier.is_empty() {
            labels.push(("tier", tier));
        }
        pods.create(&pod(name, &labels)).await.unwrap();
    }
    pods.patch_status("a", &serde_json::json!({"status": {"phase": "Running"}}))
        .await
        .unwrap();
    let names = |sel: &'static str, fields: bool| {
        let pods = pods.clone();
        async move {
            let lp = if fields {
                ListParams::fields(sel)
            } else {
                ListParams::labels(sel)
            };
            let mut n: Vec<String> = pods
                .list(&lp)
                .await
                .unwrap()
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            n.sort();
            n.join(",")
        }
    };
    assert_eq!(names("app in (web)", false).await, "a,b");
    assert_eq!(names("app in (web, db),tier!=front", false).await, "b,c");
    assert_eq!(names("app notin (web)", false).await, "c,d");
    assert_eq!(names("tier", false).await, "a,b,c");
    assert_eq!(names("!tier", false).await, "d");
    assert_eq!(names("status.phase=Running", true).await, "a");
    assert_eq!(
        names("status.phase!=Running,metadata.name!=b", true).await,
        "c,d"
    );
    assert_eq!(
        names("metadata.namespace=default,metadata.name=c", true).await,
        "c"
    );
}

#[tokio::test]
async fn pagination_with_continue_and_expiry() {
    let t = start(None).await;
    let pods = t.client.api::<Pod>(Some("default"));
    for i in 0..7 {
        pods.create(&pod(
            &format!("p{i}"),
            &[("app", if i % 2 == 0 { "even" } else { "odd" })],
        ))
        .await
        .unwrap();
    }
    let mut lp = ListParams {
        limit: Some(3),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = pods.list(&lp).await.unwrap();
        pages += 1;
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        assert_eq!(
            page.metadata.resource_version,
            *first_rv.as_ref().unwrap(),
            "one revision for every page"
        );
        seen.extend(page.items.iter().map(|p| p.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => {
                assert!(page.metadata.remaining_item_count.unwrap() > 0);
                lp.continue_token = Some(c);
            }
            None => break,
        }
        // Writes between pages do not disturb the pages.
        if pages == 1 {
            pods.create(&pod("zz-late", &[])).await.unwrap();
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(&seen[..7], ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    // With a selector, the limit counts matching objects.
    let lp = ListParams {
        limit: Some(2),
        label_selector: Some("app=even".into()),
        ..Default::default()
    };
    let page = pods.list(&lp).await.unwrap();
    assert_eq!(
        page.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["p0", "p2"]
    );
    let token = page.metadata.continue_.unwrap();
    // After a compaction past its revision, the token is 410 Expired.
    pods.create(&pod("after", &[])).await.unwrap();
    let now = t.store.revision().await.unwrap();
    t.plane.registry.compact(now).await.unwrap();
    let lp = ListParams {
        limit: Some(2),
        continue_token: Some(token),
        ..Default::default()
    };
    let e = pods.list(&lp).await.unwrap_err();
    assert_eq!(e.code(), Some(410), "{e}");
    assert!(e.is_expired());
    // resourceVersion semantics.
    let r = request(
        &t,
        Method::GET,
        "/api/v1/namespaces/default/pods?resourceVersion=0",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = request(
        &t,
        Method::GET,
        "/api/v1/namespaces/default/pods?resourceVersion=1&resourceVersionMatch=Exact",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 410, "{}", r.body);
    let r = request(
        &t,
        Method::GET,
        "/api/v1/namespaces/default/pods?resourceVersion=1&resourceVersionMatch=NotOlderThan",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn unknown_fields_warn_or_fail_as_field_validation_says() {
    let t = start(None).await;
    let path = "/api/v1/namespaces/default/pods";
    let ct = [("content-type", "application/json")];
    let mut body = container_pod("w");
    body["spec"]["foo"] = "bar".into();
    let r = request(
        &t,
        Method::POST,
        &format!("{path}?fieldValidation=Strict"),
        &ct,
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = request(
        &t,
        Method::POST,
        &format!("{path}?fieldValidation=Warn"),
        &ct,
        Some(body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let warnings: Vec<_> = r
        .headers
        .get_all("warning")
        .iter()
        .map(|h| h.to_str().unwrap().to_string())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("299 - ") && w.contains("spec.foo")),
        "{warnings:?}"
    );
    let r = request(
        &t,
        Method::POST,
        &format!("{path}?fieldValidation=Bogus"),
        &ct,
        Some(container_pod("x")),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn a_deployment_comes_back_field_for_field() {
    let t = start(None).await;
    let sent = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "rt", "namespace": "default", "labels": {"app": "rt"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "rt"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]},
            "template": {
                "metadata": {"labels": {"app": "rt", "tier": "web"}},
                "spec": {
                    "hostNetwork": true,
                    "containers": [{
                        "name": "c", "image": "busybox:1",
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "startupProbe": {"httpGet": {"path": "/", "port": "http"}, "failureThreshold": 30},
                        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "sleep 1"]}}}
                    }]
                }
            }
        }
    });
    let r = request(
        &t,
        Method::POST,
        "/apis/apps/v1/namespaces/default/deployments",
        &[("content-type", "application/json")],
        Some(sent.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let got = t
        .client
        .api::<Deployment>(Some("default"))
        .get("rt")
        .await
        .unwrap();
    let got = serde_json::to_value(&got).unwrap();
    // Every field sent is there, with the value sent (defaults may add more).
    fn contains(sent: &serde_json::Value, got: &serde_json::Value, path: &str) {
        match (sent, got) {
            (serde_json::Value::Object(s), serde_json::Value::Object(g)) => {
                for (k, v) in s {
                    let g = g.get(k).unwrap_or_else(|| panic!("{path}.{k} was dropped"));
                    contains(v, g, &format!("{path}.{k}"));
                }
            }
            (serde_json::Value::Array(s), serde_json::Value::Array(g)) => {
                assert_eq!(s.len(), g.len(), "{path}");
                for (i, (s, g)) in s.iter().zip(g).enumerate() {
                    contains(s, g, &format!("{path}[{i}]"));
                }
            }
            (s, g) => assert_eq!(s, g, "{path}"),
        }
    }
    contains(&sent, &got, "");
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_reports_conflicts() {
    let t = start(None).await;
    let path = "/apis/apps/v1/namespaces/default/deployments/ssa";
    let ct = [("content-type", "application/apply-patch+yaml")];
    let mut cfg = serde_json::to_value(deployment("ssa", 2)).unwrap();
    cfg["apiVersion"] = "apps/v1".into();
    cfg["kind"] = "Deployment".into();
    let r = request(
        &t,
        Method::PATCH,
        &format!("{path}?fieldManager=alice"),
        &ct,
        Some(cfg.clone()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["spec"]["replicas"], 2);
    assert!(r.body["metadata"]["managedFields"].is_array(), "{}", r.body);
    // Another manager changing alice's field: 409 with a cause, unless forced.
    cfg["spec"]["replicas"] = 3.into();
    let r = request(
        &t,
        Method::PATCH,
        &format!("{path}?fieldManager=bob"),
        &ct,
        Some(cfg.clone()),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["reason"], "Conflict");
    assert!(
        r.body["details"]["causes"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{}",
        r.body
    );
    let r = request(
        &t,
        Method::PATCH,
        &format!("{path}?fieldManager=bob&force=true"),
        &ct,
        Some(cfg),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["spec"]["replicas"], 3);
    // No field manager: 400.
    let r = request(&t, Method::PATCH, path, &ct, Some(serde_json::json!({}))).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn node_lease_renewals_are_taken_in_memory_between_writes() {
    let t = start(None).await;
    let leases = t.client.api::<podd_api::Lease>(Some("kube-node-lease"));
    let lease: podd_api::Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}
    }))
    .unwrap();
    leases.create(&lease).await.unwrap();
    let renew = |at: &'static str| serde_json::json!({"spec": {"renewTime": at}});
    let first = leases
        .patch("n1", &renew("2026-01-01T00:00:00.000000Z"))
        .await
        .unwrap();
    assert!(
        first.spec.unwrap().renew_time.is_some(),
        "the first renewal is stored"
    );
    let rev = t.store.revision().await.unwrap();
    common::eventually(
        std::time::Duration::from_secs(5),
        "the lease in the cache",
        || async { (t.plane.registry.cache().revision() >= rev).then_some(()) },
    )
    .await;
    let second = leases
        .patch("n1", &renew("2026-01-01T00:00:01.000000Z"))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(second.spec.unwrap().renew_time).unwrap(),
        "2026-01-01T00:00:01.000000Z"
    );
    assert_eq!(
        t.store.revision().await.unwrap(),
        rev,
        "an early renewal is not written"
    );
    assert!(t.plane.registry.leases().last_renewal("n1").is_some());
}

//! core/v1 ConfigMaps and Secrets through the API: create, get, list, watch, the four patch
//! types and delete; Secrets' write-only stringData; validation with field paths; the
//! `immutable` rules; Secrets encrypted at rest (the SQLite files hold no plaintext); and what a
//! node's token may read of them.

mod common;

use base64::Engine;
use common::{TestPlane, start, start_on};
use futures::StreamExt;
use podd_api::{ConfigMap, Pod, Secret, WatchEventType};
use podd_client::{Api, Client, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn config_map(name: &str, body: Value) -> ConfigMap {
    let mut v = json!({"metadata": {"name": name}});
    v.as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    serde_json::from_value(v).unwrap()
}

fn secret(name: &str, body: Value) -> Secret {
    let mut v = json!({"metadata": {"name": name}});
    v.as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    serde_json::from_value(v).unwrap()
}

/// A Secret's data as strings.
fn data_of(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
        .collect()
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The fields of an error's causes, sorted.
fn cause_fields(e: &podd_client::Error) -> Vec<String> {
    let mut f: Vec<String> = e.causes().iter().map(|c| c.0.to_string()).collect();
    f.sort();
    f
}

/// The raw JSON a GET answers (what a client sees on the wire).
async fn raw_get(t: &TestPlane, path: &str) -> Value {
    let a = common::request(t, hyper::Method::GET, path, &[], None).await;
    assert_eq!(a.status, 200, "{path}: {}", a.body);
    a.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_maps_round_trip_and_patch() {
    let t = start(None).await;
    let cms: Api<ConfigMap> = t.client.api(Some("default"));
    let mut watch = cms.watch(&ListParams::default(), "0").await.unwrap();
    let created = cms
        .create(&config_map(
            "app",
            json!({"data": {"mode": "fast", "app.properties": "a=1\nb=2\n"},
                "binaryData": {"blob": "AAEC/w=="}}),
        ))
        .await
        .unwrap();
    assert_eq!(
        created.data.clone().unwrap(),
        strings(&[("app.properties", "a=1\nb=2\n"), ("mode", "fast")])
    );
    assert_eq!(
        created.binary_data.as_ref().unwrap()["blob"].0,
        [0, 1, 2, 255]
    );
    let wire = raw_get(&t, "/api/v1/namespaces/default/configmaps/app").await;
    assert_eq!(wire["binaryData"]["blob"], "AAEC/w==", "base64 on the wire");
    assert_eq!(wire["kind"], "ConfigMap");
    let got = cms.get("app").await.unwrap();
    assert_eq!(got.data, created.data);
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let added = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(added.kind, WatchEventType::Added);
    assert_eq!(added.object.data, created.data);

    // kubectl's columns, from the server's Table.
    let table = common::request(
        &t,
        hyper::Method::GET,
        "/api/v1/namespaces/default/configmaps",
        &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        None,
    )
    .await
    .body;
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "Data", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "app");
    assert_eq!(table["rows"][0]["cells"][1], 3, "data and binaryData keys");

    // The four patch types.
    cms.patch("app", &json!({"data": {"merge": "1"}}))
        .await
        .unwrap();
    cms.patch_with(
        "app",
        &Patch::strategic(json!({"data": {"strategic": "2", "mode": null}})),
        &PatchParams::default(),
    )
    .await
    .unwrap();
    cms.patch_with(
        "app",
        &Patch::json(json!([{"op": "add", "path": "/data/json", "value": "3"}])),
        &PatchParams::default(),
    )
    .await
    .unwrap();
    let applied = cms
        .patch_with(
            "app",
            &Patch::apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app"}, "data": {"apply": "4"}})),
            &PatchParams::apply("config-test"),
        )
        .await
        .unwrap();
    let data = applied.data.unwrap();
    for (k, v) in [
        ("merge", "1"),
        ("strategic", "2"),
        ("json", "3"),
        ("apply", "4"),
    ] {
        assert_eq!(data.get(k).map(String::as_str), Some(v), "{k}: {data:?}");
    }
    assert!(!data.contains_key("mode"), "strategic null removed it");
    let mut modified = 0;
    while modified < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a MODIFIED per patch")
            .unwrap()
            .unwrap();
        if ev.kind == WatchEventType::Modified {
            modified += 1;
        }
    }

    cms.delete("app").await.unwrap();
    assert!(cms.get("app").await.unwrap_err().is_not_found());
    let deleted = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(deleted.kind, WatchEventType::Deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_take_string_data_and_never_return_it() {
    let t = start(None).await;
    let secrets: Api<Secret> = t.client.api(Some("default"));
    let mut watch = secrets.watch(&ListParams::default(), "0").await.unwrap();
    let created = secrets
        .create(&secret(
            "db",
            json!({"data": {"user": "YWRtaW4=", "pass": "b2xk"}, "stringData": {"pass": "new"}}),
        ))
        .await
        .unwrap();
    assert_eq!(
        data_of(&created),
        strings(&[("pass", "new"), ("user", "admin")]),
        "stringData wins over data"
    );
    assert_eq!(created.type_.as_deref(), Some("Opaque"), "the default type");
    assert!(created.string_data.is_none());
    let wire = raw_get(&t, "/api/v1/namespaces/default/secrets/db").await;
    assert_eq!(wire["data"]["pass"], "bmV3");
    assert!(wire.get("stringData").is_none(), "{wire}");
    let table = common::request(
        &t,
        hyper::Method::GET,
        "/api/v1/namespaces/default/secrets",
        &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        None,
    )
    .await
    .body;
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "Type", "Data", "Age"]);
    assert_eq!(table["rows"][0]["cells"][1], "Opaque");
    assert_eq!(table["rows"][0]["cells"][2], 2);
    let ev = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.kind, WatchEventType::Added);
    assert_eq!(data_of(&ev.object), data_of(&created));
    assert!(ev.object.string_data.is_none());

    // stringData through every patch type; never kept.
    secrets
        .patch("db", &json!({"stringData": {"merge": "1"}}))
        .await
        .unwrap();
    secrets
        .patch_with(
            "db",
            &Patch::strategic(json!({"stringData": {"strategic": "2"}})),
            &PatchParams::default(),
        )
        .await
        .unwrap();
    secrets
        .patch_with(
            "db",
            &Patch::json(json!([{"op": "add", "path": "/data/json", "value": "Mw=="}])),
            &PatchParams::default(),
        )
        .await
        .unwrap();
    let applied = secrets
        .patch_with(
            "db",
            &Patch::apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db"}, "stringData": {"apply": "4"}})),
            &PatchParams::apply("config-test"),
        )
        .await
        .unwrap();
    let data = data_of(&applied);
    for (k, v) in [
        ("merge", "1"),
        ("strategic", "2"),
        ("json", "3"),
        ("apply", "4"),
    ] {
        assert_eq!(data.get(k).map(String::as_str), Some(v), "{k}: {data:?}");
    }
    assert!(applied.string_data.is_none());
    // An update (PUT) with stringData.
    let mut cur = secrets.get("db").await.unwrap();
    cur.string_data = Some(strings(&[("put", "5")]));
    let updated = secrets.update(&cur).await.unwrap();
    assert_eq!(data_of(&updated)["put"], "5");
    let listed = secrets.list(&ListParams::default()).await.unwrap();
    assert!(listed.items.iter().all(|s| s.string_data.is_none()));
    // Only the names of the keys set through it are kept, in managedFields, as Kubernetes does.
    let raw = raw_get(&t, "/api/v1/namespaces/default/secrets").await;
    let item = &raw["items"][0];
    assert!(item.get("stringData").is_none(), "{raw}");

    secrets.delete("db").await.unwrap();
    assert!(secrets.get("db").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_get_every_problem_with_its_path() {
    let t = start(None).await;
    let cms: Api<ConfigMap> = t.client.api(Some("default"));
    let e = cms
        .create(&config_map(
            "bad",
            json!({"data": {"a/b": "x", "..": "y", "dup": "z", "ok.key": "1"},
                "binaryData": {"dup": "eA==", "has space": "eA=="}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(422), "{e}");
    assert_eq!(e.reason(), Some("Invalid"));
    assert_eq!(
        cause_fields(&e),
        [
            "binaryData[has space]",
            "data[..]",
            "data[a/b]",
            "data[dup]"
        ]
    );
    let long_key = "k".repeat(254);
    let e = cms
        .create(&config_map(
            "long",
            json!({"data": {long_key.clone(): "x"}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(cause_fields(&e), [format!("data[{long_key}]")]);

    // 1 MiB of values is the limit.
    let half = "x".repeat(512 * 1024);
    cms.create(&config_map(
        "at-limit",
        json!({"data": {"a": half, "b": half}}),
    ))
    .await
    .unwrap();
    let e = cms
        .create(&config_map(
            "over",
            json!({"data": {"a": half, "b": format!("{half}x")}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(422), "{e}");
    assert_eq!(cause_fields(&e), ["data"]);
    assert!(e.causes()[0].2.contains("1048576"), "{e}");

    let secrets: Api<Secret> = t.client.api(Some("default"));
    let e = secrets
        .create(&secret(
            "big",
            json!({"stringData": {"a": half, "b": format!("{half}x")}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(cause_fields(&e), ["data"]);
    let e = secrets
        .create(&secret(
            "tls",
            json!({"type": "kubernetes.io/tls", "stringData": {"bad/key": "x"}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        cause_fields(&e),
        ["data[bad/key]", "data[tls.crt]", "data[tls.key]"]
    );
    let e = secrets
        .create(&secret(
            "reg",
            json!({"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{"}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(cause_fields(&e), ["data[.dockerconfigjson]"]);
    assert!(
        !e.to_string().contains("\"{\""),
        "the contents are not echoed: {e}"
    );
    secrets
        .create(&secret(
            "reg",
            json!({"type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": "{\"auths\": {}}"}}),
        ))
        .await
        .unwrap();
    let e = secrets
        .create(&secret("auth", json!({"type": "kubernetes.io/basic-auth"})))
        .await
        .unwrap_err();
    assert_eq!(cause_fields(&e), ["data[password]", "data[username]"]);
    let e = secrets
        .create(&secret(
            "sa",
            json!({"type": "kubernetes.io/service-account-token"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        cause_fields(&e),
        ["metadata.annotations[kubernetes.io/service-account.name]"]
    );

    // The type never changes.
    let e = secrets
        .patch("reg", &json!({"type": "Opaque"}))
        .await
        .unwrap_err();
    assert_eq!(cause_fields(&e), ["type"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_objects_keep_their_data() {
    let t = start(None).await;
    let cms: Api<ConfigMap> = t.client.api(Some("default"));
    cms.create(&config_map(
        "frozen",
        json!({"immutable": true, "data": {"a": "1"}}),
    ))
    .await
    .unwrap();
    let e = cms
        .patch(
            "frozen",
            &json!({"immutable": false, "data": {"a": "2"}, "binaryData": {"b": "eA=="}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(422), "{e}");
    assert_eq!(cause_fields(&e), ["binaryData", "data", "immutable"]);
    let e = cms
        .patch("frozen", &json!({"immutable": null}))
        .await
        .unwrap_err();
    assert_eq!(cause_fields(&e), ["immutable"]);
    // Metadata still changes, and the object can be deleted.
    let labelled = cms
        .patch("frozen", &json!({"metadata": {"labels": {"x": "y"}}}))
        .await
        .unwrap();
    assert_eq!(labelled.metadata.labels.unwrap()["x"], "y");
    cms.delete("frozen").await.unwrap();

    let secrets: Api<Secret> = t.client.api(Some("default"));
    secrets
        .create(&secret(
            "frozen",
            json!({"immutable": true, "stringData": {"a": "1"}}),
        ))
        .await
        .unwrap();
    let e = secrets
        .patch("frozen", &json!({"stringData": {"a": "2"}}))
        .await
        .unwrap_err();
    assert_eq!(cause_fields(&e), ["data"]);
    let e = secrets
        .patch(
            "frozen",
            &json!({"immutable": false, "type": "example.com/other"}),
        )
        .await
        .unwrap_err();
    assert_eq!(cause_fields(&e), ["immutable", "type"]);
    // Writing the same value again is no change.
    secrets
        .patch("frozen", &json!({"stringData": {"a": "1"}}))
        .await
        .unwrap();
    // A mutable one becomes immutable.
    cms.create(&config_map("later", json!({"data": {"a": "1"}})))
        .await
        .unwrap();
    cms.patch("later", &json!({"immutable": true}))
        .await
        .unwrap();
    let e = cms
        .patch("later", &json!({"data": {"a": "2"}}))
        .await
        .unwrap_err();
    assert_eq!(cause_fields(&e), ["data"]);
}

/// Every file of the SQLite database (the database, its WAL and shared memory) as one buffer.
fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        names.push(e.file_name().to_string_lossy().to_string());
        all.extend(std::fs::read(e.path()).unwrap());
    }
    assert!(names.iter().any(|n| n == "podd.db"), "{names:?}");
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_in_the_sqlite_files() {
    let dir = tempfile::Builder::new()
        .prefix("podd-cm-secrets-")
        .tempdir()
        .unwrap();
    let url = format!("sqlite://{}", dir.path().join("podd.db").display());
    let store = podd_store::open(&url).await.unwrap();
    let t = start_on(store, None).await;
    // 33 bytes: its base64 has no padding, and neither form can hide in another encoding.
    let plain = "podd-cm-secrets-8c1f-VERY-SECRET!";
    let b64 = base64::engine::general_purpose::STANDARD.encode(plain);
    let cm_value = "podd-cm-configmap-value-visible";
    let secrets: Api<Secret> = t.client.api(Some("default"));
    secrets
        .create(&secret("vault", json!({"stringData": {"token": plain}})))
        .await
        .unwrap();
    secrets
        .patch(
            "vault",
            &json!({"metadata": {"labels": {"touched": "yes"}}}),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = t.client.api(Some("default"));
    cms.create(&config_map("plain", json!({"data": {"v": cm_value}})))
        .await
        .unwrap();
    // GET answers the plaintext.
    assert_eq!(
        data_of(&secrets.get("vault").await.unwrap())["token"],
        plain
    );
    let wire = raw_get(&t, "/api/v1/namespaces/default/secrets/vault").await;
    assert_eq!(wire["data"]["token"], b64.as_str());

    // The store holds it sealed, with the key named.
    let raw = t
        .store
        .get("/registry/secrets/default/vault")
        .await
        .unwrap()
        .unwrap();
    assert!(
        raw.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"),
        "{:?}",
        String::from_utf8_lossy(&raw.value[..40.min(raw.value.len())])
    );
    // Neither form appears in any of the database's files; the ConfigMap's value (not
    // encrypted) does, which shows the search looks at the written data.
    let files = database_bytes(dir.path());
    assert!(
        contains(&files, cm_value.as_bytes()),
        "the search sees data"
    );
    assert!(
        !contains(&files, plain.as_bytes()),
        "plaintext in the database"
    );
    assert!(
        !contains(&files, b64.as_bytes()),
        "base64 of it in the database"
    );

    // A restart on the same database reads it back (once the first server let go of it).
    t.plane.shutdown().await;
    drop(t.store);
    let store = common::eventually(Duration::from_secs(10), "the database lock", || {
        let url = url.clone();
        async move { podd_store::open(&url).await.ok() }
    })
    .await;
    let t = start_on(store, None).await;
    let secrets: Api<Secret> = t.client.api(Some("default"));
    assert_eq!(
        data_of(&secrets.get("vault").await.unwrap())["token"],
        plain
    );
    t.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gets_only_what_its_pods_refer_to() {
    let t = start(None).await;
    let cms: Api<ConfigMap> = t.client.api(Some("default"));
    let secrets: Api<Secret> = t.client.api(Some("default"));
    for name in ["used", "unused"] {
        cms.create(&config_map(name, json!({"data": {"k": "v"}})))
            .await
            .unwrap();
        secrets
            .create(&secret(name, json!({"stringData": {"k": "v"}})))
            .await
            .unwrap();
    }
    t.client
        .api::<podd_api::Node>(None)
        .create(&common::node("n1"))
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox:1",
            "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "used", "key": "k"}}}],
            "envFrom": [{"secretRef": {"name": "used"}}]}]}
    }))
    .unwrap();
    t.client
        .api::<Pod>(Some("default"))
        .create(&pod)
        .await
        .unwrap();
    let token = t.plane.auth.issue_node_token("n1").unwrap();
    let addr = format!("127.0.0.1:{}", t.plane.tls_addr.unwrap().port());
    let agent = Client::tls(&addr, &t.plane.ca_pem, &token).unwrap();
    let other_token = t.plane.auth.issue_node_token("n2").unwrap();
    let other = Client::tls(&addr, &t.plane.ca_pem, &other_token).unwrap();
    let agent_cms: Api<ConfigMap> = agent.api(Some("default"));
    let agent_secrets: Api<Secret> = agent.api(Some("default"));
    common::eventually(Duration::from_secs(5), "the pod in the cache", || {
        let s: Api<Secret> = agent.api(Some("default"));
        async move { s.get("used").await.ok() }
    })
    .await;
    assert_eq!(agent_cms.get("used").await.unwrap().data.unwrap()["k"], "v");
    assert_eq!(data_of(&agent_secrets.get("used").await.unwrap())["k"], "v");
    for e in [
        agent_cms.get("unused").await.unwrap_err(),
        agent_secrets.get("unused").await.unwrap_err(),
        agent_secrets
            .list(&ListParams::default())
            .await
            .unwrap_err(),
        agent_cms.list(&ListParams::default()).await.unwrap_err(),
        other
            .api::<Secret>(Some("default"))
            .get("used")
            .await
            .unwrap_err(),
        agent
            .api::<Secret>(Some("kube-system"))
            .get("used")
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Some(403), "{e}");
    }
    let e = agent_secrets
        .patch("used", &json!({"stringData": {"k": "w"}}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(403), "a node writes no Secret: {e}");
    // Other kinds stay readable, as before.
    agent
        .api::<Pod>(Some("default"))
        .list(&ListParams::default())
        .await
        .unwrap();
}

//! The daemon's store URLs open working stores of each kind.

use podd_store::testing::EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_url_form_opens_a_working_store() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start().await.unwrap();
    let urls = [
        "memory:".to_string(),
        format!("sqlite://{}", dir.path().join("sub/podd.db").display()),
        etcd.url(),
    ];
    for url in &urls {
        let (store, elector) = podd_store::open_with_elector(url, "me").await.unwrap();
        let rev = store
            .create("/registry/nodes/n1", b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(
            store
                .get("/registry/nodes/n1")
                .await
                .unwrap()
                .unwrap()
                .mod_revision,
            rev
        );
        let leadership = elector.campaign().await.unwrap();
        assert!(leadership.is_leader(), "{url}");
        let leader = elector.leader().await.unwrap();
        assert!(leader.is_some(), "{url}");
        leadership.resign().await;
    }
    assert!(dir.path().join("sub/podd.db").exists());
}

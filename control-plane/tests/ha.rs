//! Two API servers sharing one etcd: both serve the API, only the elected leader runs the
//! controllers, and the other takes over when the leader goes away. Runs against a real etcd
//! that the test starts on loopback (Debian's etcd-server).

use podd_api::{Deployment, Pod};
use podd_client::ListParams;
use podd_control_plane::controllers::ControllerConfig;
use podd_control_plane::hollow::{HollowConfig, HollowFleet};
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use std::time::{Duration, Instant};

fn deployment(name: &str, replicas: u32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}
    }))
    .unwrap()
}

async fn wait_running(client: &podd_client::Client, app: &str, n: usize) {
    let pods = client.api::<Pod>(Some("default"));
    let start = Instant::now();
    loop {
        let items = pods
            .list(&ListParams::labels(&format!("app={app}")))
            .await
            .unwrap()
            .items;
        let running = items
            .iter()
            .filter(|p| {
                podd_api::resources::pod_phase(p) == "Running"
                    && podd_api::resources::pod_is_ready(p)
            })
            .count();
        if running == n && items.len() == n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{app}: {running}/{n} running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_runs_controllers_and_a_standby_takes_over() {
    let etcd = podd_store::testing::EtcdServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut planes = Vec::new();
    for id in ["a", "b"] {
        let (store, elector) = podd_store::open_with_elector(&etcd.url(), id)
            .await
            .unwrap();
        let cfg = ControlPlaneConfig {
            socket: Some(dir.path().join(format!("{id}.sock"))),
            tls_addr: None,
            admin_token: Some("t".into()),
            controllers: Some(ControllerConfig {
                node_grace: Duration::from_secs(5),
                ..ControllerConfig::default()
            }),
            elector: Some(elector.clone()),
            ..ControlPlaneConfig::default()
        };
        let plane = ControlPlane::start(store, cfg).await.unwrap();
        planes.push((plane, elector));
        // Let the first one win the election.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (b, b_elector) = planes.pop().unwrap();
    let (a, _) = planes.pop().unwrap();
    assert_eq!(b_elector.leader().await.unwrap().as_deref(), Some("a"));
    let a_client = a.local_client().unwrap();
    let b_client = b.local_client().unwrap();
    let fleet = HollowFleet::start(
        b_client.clone(),
        &["n1".to_string(), "n2".to_string()],
        HollowConfig::default(),
    )
    .await
    .unwrap();
    // Written through b, reconciled by a's controllers.
    b_client
        .api::<Deployment>(Some("default"))
        .create(&deployment("one", 3))
        .await
        .unwrap();
    wait_running(&a_client, "one", 3).await;
    // a goes away (resigning): b is elected and runs the controllers.
    a.shutdown().await;
    b_client
        .api::<Deployment>(Some("default"))
        .create(&deployment("two", 2))
        .await
        .unwrap();
    wait_running(&b_client, "two", 2).await;
    assert_eq!(b_elector.leader().await.unwrap().as_deref(), Some("b"));
    fleet.shutdown().await;
    b.shutdown().await;
}

//! apps/v1 DaemonSets through the API with the controllers running: one pod per node (the
//! scheduler binds each to the node its affinity names), a node that joins later gets one and
//! a node that leaves loses its own, the status counts what `kubectl rollout status` reads, an
//! image change rolls out node by node within maxUnavailable, and deleting the DaemonSet
//! deletes its pods. This test plays the nodes' agents: it marks pods Running and Ready, and
//! removes pods being deleted.

mod common;

use common::{eventually, fast_controllers, ready_node, start};
use podd_api::resources::{pod_is_ready, pod_node};
use podd_api::{DaemonSet, Node, Pod, ResourceExt};
use podd_client::{Api, DeleteParams, ListParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn daemon_set(name: &str) -> DaemonSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}},
        }
    }))
    .unwrap()
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    let lp = ListParams {
        label_selector: Some(format!("app={app}")),
        ..Default::default()
    };
    pods.list(&lp).await.unwrap().items
}

/// What the agents would do: bound pods start and become Ready, pods being deleted stop.
async fn act_as_agents(pods: &Api<Pod>, app: &str) {
    for p in pods_of(pods, app).await {
        let name = p.name_any();
        if p.metadata.deletion_timestamp.is_some() {
            let now = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            let _ = pods.delete_with(&name, &now).await;
        } else if !pod_node(&p).is_empty() && !pod_is_ready(&p) {
            let _ = pods
                .patch_status(
                    &name,
                    &json!({"status": {"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True"}]}}),
                )
                .await;
        }
    }
}

/// The live pods by node, with their image.
async fn by_node(pods: &Api<Pod>, app: &str) -> BTreeMap<String, Vec<(String, bool)>> {
    let mut out: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for p in pods_of(pods, app).await {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let image = p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default();
        out.entry(pod_node(&p).to_string())
            .or_default()
            .push((image, pod_is_ready(&p)));
    }
    out
}

/// Whether the DaemonSet is rolled out as `kubectl rollout status` decides it.
fn rolled_out(ds: &DaemonSet) -> bool {
    let st = ds.status.clone().unwrap_or_default();
    ds.metadata.generation <= st.observed_generation
        && st.updated_number_scheduled.unwrap_or(0) >= st.desired_number_scheduled
        && st.number_available.unwrap_or(0) >= st.desired_number_scheduled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_set_runs_one_pod_per_node_and_rolls_out_an_update() {
    let mut config = fast_controllers();
    // Nodes without agents stay Ready: no lease expiry here.
    config.node_grace = Duration::from_secs(3600);
    let t = start(Some(config)).await;
    let nodes = t.client.api::<Node>(None);
    let sets = t.client.api::<DaemonSet>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    for n in ["n1", "n2"] {
        nodes.create(&ready_node(n)).await.unwrap();
    }
    let created = sets.create(&daemon_set("agent")).await.unwrap();
    assert_eq!(
        created.annotations()["deprecated.daemonset.template.generation"],
        "1"
    );
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(
        spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );

    // One pod per node, each bound to the node its affinity names, owned by the DaemonSet.
    let two = eventually(WAIT, "a pod bound on each node", || async {
        act_as_agents(&pods, "agent").await;
        let m = by_node(&pods, "agent").await;
        (m.keys().cloned().collect::<Vec<_>>() == ["n1", "n2"] && m.values().all(|v| v.len() == 1))
            .then_some(m)
    })
    .await;
    assert_eq!(two.len(), 2);
    for p in pods_of(&pods, "agent").await {
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("DaemonSet", "agent", Some(true))
        );
        assert_eq!(p.labels()["pod-template-generation"], "1");
        assert!(p.labels().contains_key("controller-revision-hash"));
    }
    let ds = eventually(WAIT, "the status counts both nodes", || async {
        act_as_agents(&pods, "agent").await;
        let ds = sets.get("agent").await.unwrap();
        rolled_out(&ds).then_some(ds)
    })
    .await;
    let st = ds.status.unwrap();
    assert_eq!(
        (
            st.desired_number_scheduled,
            st.current_number_scheduled,
            st.number_ready,
            st.number_misscheduled
        ),
        (2, 2, 2, 0)
    );
    assert_eq!(st.observed_generation, Some(1));

    // A node that joins gets a pod; a node that leaves loses its own.
    nodes.create(&ready_node("n3")).await.unwrap();
    eventually(WAIT, "a pod on the new node", || async {
        act_as_agents(&pods, "agent").await;
        let m = by_node(&pods, "agent").await;
        (m.len() == 3).then_some(())
    })
    .await;
    nodes.delete("n3").await.unwrap();
    eventually(WAIT, "the pod of the gone node deleted", || async {
        act_as_agents(&pods, "agent").await;
        let m = by_node(&pods, "agent").await;
        (m.keys().cloned().collect::<Vec<_>>() == ["n1", "n2"]).then_some(())
    })
    .await;
    eventually(WAIT, "desired back to 2", || async {
        let ds = sets.get("agent").await.unwrap();
        (ds.status?.desired_number_scheduled == 2).then_some(())
    })
    .await;

    // An image change rolls out node by node (maxUnavailable 1): never both nodes without a
    // ready pod at once.
    let updated = sets
        .patch(
            "agent",
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "busybox:2"}]}}}}),
        )
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(
        updated.annotations()["deprecated.daemonset.template.generation"],
        "2"
    );
    let mut seen_images = BTreeSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        act_as_agents(&pods, "agent").await;
        let m = by_node(&pods, "agent").await;
        let ready_nodes = m.values().filter(|v| v.iter().any(|(_, r)| *r)).count();
        assert!(ready_nodes >= 1, "both nodes lost their pod at once: {m:?}");
        for v in m.values() {
            seen_images.extend(v.iter().map(|(i, _)| i.clone()));
        }
        if m.len() == 2 && m.values().flatten().all(|(i, r)| i == "busybox:2" && *r) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new image on both nodes: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_images.contains("busybox:1") && seen_images.contains("busybox:2"));
    let ds = eventually(WAIT, "rolled out", || async {
        act_as_agents(&pods, "agent").await;
        let ds = sets.get("agent").await.unwrap();
        rolled_out(&ds).then_some(ds)
    })
    .await;
    assert_eq!(ds.status.as_ref().unwrap().observed_generation, Some(2));
    assert_eq!(
        ds.status.as_ref().unwrap().updated_number_scheduled,
        Some(2)
    );
    for p in pods_of(&pods, "agent").await {
        assert_eq!(p.labels()["pod-template-generation"], "2");
    }

    // Deleting the DaemonSet deletes its pods.
    sets.delete("agent").await.unwrap();
    eventually(WAIT, "the pods gone", || async {
        act_as_agents(&pods, "agent").await;
        pods_of(&pods, "agent").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sets_are_validated_and_their_selector_is_immutable() {
    let t = start(None).await;
    let sets = t.client.api::<DaemonSet>(Some("default"));
    let mut bad = daemon_set("bad");
    let spec = bad.spec.as_mut().unwrap();
    spec.selector.match_labels = Some([("app".to_string(), "other".to_string())].into());
    spec.template.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    spec.update_strategy = Some(
        serde_json::from_value(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}))
        .unwrap(),
    );
    let err = sets.create(&bad).await.unwrap_err().to_string();
    for want in [
        "spec.template.metadata.labels: Invalid value",
        "`selector` does not match template `labels`",
        r#"spec.template.spec.restartPolicy: Unsupported value: "OnFailure": supported values: "Always""#,
        "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    sets.create(&daemon_set("ok")).await.unwrap();
    let err = sets
        .patch(
            "ok",
            &json!({"spec": {"selector": {"matchLabels": {"app": "ok", "x": "y"}},
                "template": {"metadata": {"labels": {"app": "ok", "x": "y"}}}}}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.selector: Invalid value") && err.contains("field is immutable"),
        "{err}"
    );
    // A change outside the template keeps the template generation.
    let same = sets
        .patch("ok", &json!({"spec": {"minReadySeconds": 5}}))
        .await
        .unwrap();
    assert_eq!(same.metadata.generation, Some(2));
    assert_eq!(
        same.annotations()["deprecated.daemonset.template.generation"],
        "1"
    );
}

/// A node that stops renewing its lease: its Deployment pod is failed (NodeLost) and replaced
/// elsewhere, but its daemon pod stays, as it tolerates `node.kubernetes.io/unreachable`;
/// the lost node no longer counts as desired, and counts again when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_pods_stay_on_a_lost_node() {
    use podd_control_plane::hollow::{HollowConfig, HollowFleet};
    let t = start(Some(fast_controllers())).await;
    let names: Vec<String> = (0..3).map(|i| format!("hollow-{i}")).collect();
    let fleet = HollowFleet::start(t.client.clone(), &names, HollowConfig::default())
        .await
        .unwrap();
    let sets = t.client.api::<DaemonSet>(Some("default"));
    let deps = t.client.api::<podd_api::Deployment>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    sets.create(&daemon_set("agent")).await.unwrap();
    deps.create(&common::deployment("web", 3)).await.unwrap();
    let running_on = |app: &'static str, node: &'static str| {
        let pods = pods.clone();
        async move {
            pods_of(&pods, app)
                .await
                .into_iter()
                .filter(|p| pod_node(p) == node)
                .map(|p| podd_api::resources::pod_phase(&p).to_string())
                .collect::<Vec<_>>()
        }
    };
    eventually(WAIT, "the DaemonSet rolled out on 3 nodes", || async {
        let ds = sets.get("agent").await.unwrap();
        (rolled_out(&ds) && ds.status?.desired_number_scheduled == 3).then_some(())
    })
    .await;
    eventually(WAIT, "a web pod on hollow-0", || async {
        running_on("web", "hollow-0")
            .await
            .contains(&"Running".to_string())
            .then_some(())
    })
    .await;

    fleet.stop_node("hollow-0");
    eventually(WAIT, "the web pod of the lost node failed", || async {
        running_on("web", "hollow-0")
            .await
            .contains(&"Failed".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(running_on("agent", "hollow-0").await, ["Running"]);
    let ds = eventually(WAIT, "the lost node no longer desired", || async {
        let ds = sets.get("agent").await.unwrap();
        (ds.status.as_ref()?.desired_number_scheduled == 2).then_some(ds)
    })
    .await;
    assert_eq!(ds.status.unwrap().number_misscheduled, 1);
    assert_eq!(running_on("agent", "hollow-0").await, ["Running"]);

    fleet.start_node("hollow-0");
    eventually(WAIT, "the node back in the DaemonSet", || async {
        let ds = sets.get("agent").await.unwrap();
        (ds.status.as_ref()?.desired_number_scheduled == 3 && rolled_out(&ds)).then_some(())
    })
    .await;
    assert_eq!(running_on("agent", "hollow-0").await, ["Running"]);
    fleet.shutdown().await;
}

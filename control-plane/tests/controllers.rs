//! Controllers driven end to end with hollow nodes: spreading, scaling, node loss, rolling
//! updates, the Deployment -> ReplicaSet -> Pod chain and its revisions, endpoints and
//! EndpointSlices, unschedulable pods, events and the autoscaler, each on the in-memory store
//! and on SQLite; the scenarios that matter most with a store's latency (spreading, scaling,
//! node loss, rolling updates) also on a real etcd started on loopback.

mod common;

use common::{Backend, deployment, eventually, fast_controllers, pod, start_with};
use podd_api::metrics::{ContainerMetrics, PodMetrics, UsageReport};
use podd_api::resources::{
    node_is_ready, pod_condition, pod_ip, pod_is_ready, pod_node, pod_phase,
};
use podd_api::{
    Deployment, EndpointSlice, Endpoints, Event, HorizontalPodAutoscaler, Kind, Lease, Node, Pod,
    ReplicaSet, ResourceExt, Service,
};
use podd_client::{Api, ListParams};
use podd_control_plane::hollow::{HollowConfig, HollowFleet};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("hollow-{i}")).collect()
}

fn running(p: &Pod) -> bool {
    pod_phase(p) == "Running"
        && pod_is_ready(p)
        && !pod_node(p).is_empty()
        && p.metadata.deletion_timestamp.is_none()
}

fn hash_of(p: &Pod) -> String {
    p.labels()
        .get("pod-template-hash")
        .cloned()
        .unwrap_or_default()
}

fn image_of(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn available(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

async fn wait_running(api: &Api<Pod>, app: &str, n: usize, timeout: Duration) -> Vec<Pod> {
    eventually(timeout, &format!("{n} running pods of {app}"), || async {
        let all = api
            .list(&ListParams::labels(&format!("app={app}")))
            .await
            .unwrap()
            .items;
        let run: Vec<Pod> = all.iter().filter(|p| running(p)).cloned().collect();
        let live = all
            .iter()
            .filter(|p| pod_phase(p) != "Failed" && pod_phase(p) != "Succeeded");
        (run.len() == n && live.count() == n).then_some(run)
    })
    .await
}

async fn deployment_spreads_scales_and_replaces_a_lost_node(backend: Backend) {
    let t = start_with(backend, Some(fast_controllers())).await;
    let fleet = HollowFleet::start(t.client.clone(), &names(3), HollowConfig::default())
        .await
        .unwrap();
    let deps = t.client.api::<Deployment>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    deps.create(&deployment("web", 3)).await.unwrap();
    let run = wait_running(&pods, "web", 3, Duration::from_secs(10)).await;
    let nodes: BTreeSet<_> = run.iter().map(|p| pod_node(p).to_string()).collect();
    assert_eq!(nodes.len(), 3, "3 replicas spread over 3 nodes: {nodes:?}");
    for p in &run {
        assert!(pod_ip(p).starts_with("10.244."), "{}", pod_ip(p));
        assert!(!hash_of(p).is_empty(), "pods carry the template hash");
    }
    let d = eventually(Duration::from_secs(5), "deployment status", || async {
        let d = deps.get("web").await.unwrap();
        (available(&d) == 3).then_some(d)
    })
    .await;
    assert_eq!(
        d.status.as_ref().unwrap().observed_generation,
        d.metadata.generation
    );

    deps.scale("web", 10).await.unwrap();
    let run = wait_running(&pods, "web", 10, Duration::from_secs(10)).await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &run {
        *per_node.entry(pod_node(p).to_string()).or_default() += 1;
    }
    let (lo, hi) = (
        per_node.values().min().unwrap(),
        per_node.values().max().unwrap(),
    );
    assert!(hi - lo <= 1, "10 pods spread evenly: {per_node:?}");

    deps.scale("web", 0).await.unwrap();
    eventually(Duration::from_secs(10), "no pods left", || async {
        pods.list(&ListParams::labels("app=web"))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;

    deps.scale("web", 6).await.unwrap();
    wait_running(&pods, "web", 6, Duration::from_secs(10)).await;
    // A node dies: its pods are replaced on the others within 5 s.
    let victim = "hollow-0";
    fleet.stop_node(victim);
    let stopped = Instant::now();
    let run = eventually(
        Duration::from_secs(10),
        "pods replaced off the dead node",
        || async {
            let all = pods
                .list(&ListParams::labels("app=web"))
                .await
                .unwrap()
                .items;
            let ok: Vec<Pod> = all
                .iter()
                .filter(|p| running(p) && pod_node(p) != victim)
                .cloned()
                .collect();
            (ok.len() == 6).then_some(ok)
        },
    )
    .await;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "replacement took {took:?} (grace 2 s)"
    );
    assert!(run.iter().all(|p| pod_node(p) != victim));
    let n = t.client.api::<Node>(None).get(victim).await.unwrap();
    assert!(!node_is_ready(&n), "the dead node is NotReady");
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .unwrap();
    assert_eq!(ready.status, "Unknown");
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));

    // It comes back: Ready again, and nothing of it is left stale.
    fleet.start_node(victim);
    eventually(Duration::from_secs(5), "node ready again", || async {
        node_is_ready(&t.client.api::<Node>(None).get(victim).await.unwrap()).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "no stale pods on the returned node",
        || async {
            let all = pods
                .list(&ListParams::fields(&format!("spec.nodeName={victim}")))
                .await
                .unwrap()
                .items;
            all.iter().all(|p| pod_phase(p) != "Failed").then_some(())
        },
    )
    .await;
    // Deleting the deployment removes its pods.
    deps.delete("web").await.unwrap();
    eventually(
        Duration::from_secs(5),
        "pods removed with the deployment",
        || async {
            pods.list(&ListParams::labels("app=web"))
                .await
                .unwrap()
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;
    fleet.shutdown().await;
}

async fn rolling_update_never_drops_below_replicas_minus_max_unavailable(backend: Backend) {
    let t = start_with(backend, Some(fast_controllers())).await;
    let fleet = HollowFleet::start(t.client.clone(), &names(3), HollowConfig::default())
        .await
        .unwrap();
    let deps = t.client.api::<Deployment>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    let mut d = deployment("roll", 6);
    d.spec.as_mut().unwrap().strategy = Some(podd_api::DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(podd_api::RollingUpdateDeployment {
            max_surge: Some(podd_api::IntOrString::Int(1)),
            max_unavailable: Some(podd_api::IntOrString::Int(1)),
        }),
    });
    deps.create(&d).await.unwrap();
    let before = wait_running(&pods, "roll", 6, Duration::from_secs(10)).await;
    let old_hash = hash_of(&before[0]);

    // Sample availability continuously while the template changes.
    let sampler_pods = pods.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut min = usize::MAX;
        let mut max_total = 0;
        let mut samples = 0;
        loop {
            let all = sampler_pods
                .list(&ListParams::labels("app=roll"))
                .await
                .unwrap()
                .items;
            // As Kubernetes counts the surge: pods that are not finished nor terminating.
            let live: Vec<&Pod> = all
                .iter()
                .filter(|p| pod_phase(p) != "Failed" && p.metadata.deletion_timestamp.is_none())
                .collect();
            min = min.min(all.iter().filter(|p| running(p)).count());
            max_total = max_total.max(live.len());
            samples += 1;
            if *stop_rx.borrow() {
                return (min, max_total, samples);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = stop_rx.changed() => {}
            }
        }
    });
    // Read-modify-write, retried on 409 (the controller writes the status meanwhile).
    loop {
        let mut cur = deps.get("roll").await.unwrap();
        cur.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("busybox:2".into());
        match deps.update(&cur).await {
            Ok(_) => break,
            Err(e) if e.is_conflict() => continue,
            Err(e) => panic!("{e}"),
        }
    }
    let after = eventually(Duration::from_secs(20), "the rollout to finish", || async {
        let all = pods
            .list(&ListParams::labels("app=roll"))
            .await
            .unwrap()
            .items;
        let done = all.len() == 6 && all.iter().all(|p| running(p) && image_of(p) == "busybox:2");
        done.then_some(all)
    })
    .await;
    stop_tx.send(true).unwrap();
    let (min, max_total, samples) = sampler.await.unwrap();
    assert!(samples >= 2, "sampled {samples} times");
    assert!(
        min >= 5,
        "availability fell to {min} (< replicas 6 - maxUnavailable 1)"
    );
    assert!(
        max_total <= 7,
        "total pods reached {max_total} (> replicas 6 + maxSurge 1)"
    );
    assert!(after.iter().all(|p| hash_of(p) != old_hash));
    let d = deps.get("roll").await.unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    fleet.shutdown().await;
}

async fn endpoints_follow_readiness(backend: Backend) {
    let t = start_with(backend, Some(fast_controllers())).await;
    let svcs = t.client.api::<Service>(Some("default"));
    let eps = t.client.api::<Endpoints>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    svcs.create(&svc).await.unwrap();
    let ready = |r: bool| {
        serde_json::json!({"status": {"conditions": [
            {"type": "Ready", "status": if r { "True" } else { "False" }}]}})
    };
    for (i, app) in [(1, "web"), (2, "web"), (3, "db")] {
        let mut p = pod(&format!("p{i}"), &[("app", app)]);
        p.spec.as_mut().unwrap().node_name = Some("somewhere".into());
        pods.create(&p).await.unwrap();
        pods.patch_status(
            &format!("p{i}"),
            &serde_json::json!({"status": {"phase": "Running", "podIP": format!("10.244.1.{i}"),
                "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .await
        .unwrap();
    }
    let ready_ips = |ep: &Endpoints| -> (Vec<String>, Vec<String>) {
        let s = ep.subsets.as_ref().and_then(|s| s.first());
        (
            s.and_then(|s| s.addresses.as_ref())
                .map(|a| a.iter().map(|a| a.ip.clone()).collect())
                .unwrap_or_default(),
            s.and_then(|s| s.not_ready_addresses.as_ref())
                .map(|a| a.iter().map(|a| a.ip.clone()).collect())
                .unwrap_or_default(),
        )
    };
    let want = |r: Vec<&str>, nr: Vec<&str>| {
        (
            r.into_iter().map(String::from).collect::<Vec<_>>(),
            nr.into_iter().map(String::from).collect::<Vec<_>>(),
        )
    };
    let ep = eventually(
        Duration::from_secs(5),
        "endpoints with both web pods",
        || async {
            let ep = eps.get_opt("web").await.unwrap()?;
            (ready_ips(&ep) == want(vec!["10.244.1.1", "10.244.1.2"], vec![])).then_some(ep)
        },
    )
    .await;
    let subset = &ep.subsets.as_ref().unwrap()[0];
    let port = &subset.ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 8080);
    assert_eq!(port.name.as_deref(), Some("http"));
    let target = subset.addresses.as_ref().unwrap()[0]
        .target_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (target.kind.as_deref(), target.name.as_deref()),
        (Some("Pod"), Some("p1"))
    );
    // p1 becomes unready.
    pods.patch_status("p1", &ready(false)).await.unwrap();
    eventually(Duration::from_secs(5), "p1 not ready", || async {
        let ep = eps.get("web").await.unwrap();
        (ready_ips(&ep) == want(vec!["10.244.1.2"], vec!["10.244.1.1"])).then_some(())
    })
    .await;
    // p2 goes away; p1 ready again.
    pods.delete("p2").await.unwrap();
    pods.patch_status("p1", &ready(true)).await.unwrap();
    eventually(Duration::from_secs(5), "only p1", || async {
        let ep = eps.get("web").await.unwrap();
        (ready_ips(&ep) == want(vec!["10.244.1.1"], vec![])).then_some(())
    })
    .await;
    // A relabelled pod joins.
    pods.patch(
        "p3",
        &serde_json::json!({"metadata": {"labels": {"app": "web"}}}),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(5), "p3 joined", || async {
        let ep = eps.get("web").await.unwrap();
        (ready_ips(&ep) == want(vec!["10.244.1.1", "10.244.1.3"], vec![])).then_some(())
    })
    .await;
    // Deleting the service deletes its endpoints.
    svcs.delete("web").await.unwrap();
    eventually(Duration::from_secs(5), "endpoints removed", || async {
        eps.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
}

async fn unschedulable_pods_wait_for_a_fitting_node(backend: Backend) {
    let t = start_with(backend, Some(fast_controllers())).await;
    let pods = t.client.api::<Pod>(Some("default"));
    let mut p = pod("big", &[("app", "big")]);
    p.spec.as_mut().unwrap().containers[0].resources = Some(podd_api::ResourceRequirements {
        requests: Some([("cpu".to_string(), podd_api::Quantity("3".into()))].into()),
        ..Default::default()
    });
    pods.create(&p).await.unwrap();
    let p = eventually(
        Duration::from_secs(5),
        "an Unschedulable reason",
        || async {
            let p = pods.get("big").await.unwrap();
            pod_condition(&p, "PodScheduled")
                .is_some_and(|c| c.reason.as_deref() == Some("Unschedulable"))
                .then_some(p)
        },
    )
    .await;
    let cond = pod_condition(&p, "PodScheduled").unwrap();
    assert!(!cond.message.as_deref().unwrap_or_default().is_empty());
    assert_eq!(cond.status, "False");
    assert_eq!(pod_phase(&p), "Pending");
    let rv = p.metadata.resource_version.clone();
    // It is not retried while nothing changes (no busy loop rewriting it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods.get("big").await.unwrap().metadata.resource_version, rv);
    // A small node does not fit it; a big one does.
    let small = HollowConfig {
        cpu: podd_api::Cpu(1000),
        ..HollowConfig::default()
    };
    let f1 = HollowFleet::start(t.client.clone(), &["small".to_string()], small)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pod_node(&pods.get("big").await.unwrap()).is_empty());
    let f2 = HollowFleet::start(
        t.client.clone(),
        &["large".to_string()],
        HollowConfig::default(),
    )
    .await
    .unwrap();
    let p = eventually(
        Duration::from_secs(5),
        "the pod running on the large node",
        || async {
            let p = pods.get("big").await.unwrap();
            running(&p).then_some(p)
        },
    )
    .await;
    assert_eq!(pod_node(&p), "large");
    assert_eq!(pod_condition(&p, "PodScheduled").unwrap().status, "True");
    // The scheduler said so in events, as kube-scheduler does.
    let events = t.client.api::<Event>(Some("default"));
    eventually(
        Duration::from_secs(5),
        "Scheduled and FailedScheduling events",
        || async {
            let evs = events.list(&ListParams::default()).await.unwrap().items;
            let about = |reason: &str| {
                evs.iter().find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some("big")
                })
            };
            let failed = about("FailedScheduling")?;
            let scheduled = about("Scheduled")?;
            assert_eq!(failed.type_.as_deref(), Some("Warning"));
            assert_eq!(scheduled.type_.as_deref(), Some("Normal"));
            assert_eq!(
                scheduled
                    .source
                    .as_ref()
                    .and_then(|s| s.component.as_deref()),
                Some("default-scheduler")
            );
            assert_eq!(
                scheduled.message.as_deref(),
                Some("Successfully assigned default/big to large")
            );
            Some(())
        },
    )
    .await;
    f1.shutdown().await;
    f2.shutdown().await;
}

async fn autoscaler_follows_cpu_use(backend: Backend) {
    let t = start_with(backend, Some(fast_controllers())).await;
    let fleet = HollowFleet::start(t.client.clone(), &names(2), HollowConfig::default())
        .await
        .unwrap();
    let deps = t.client.api::<Deployment>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    deps.create(&deployment("busy", 2)).await.unwrap();
    wait_running(&pods, "busy", 2, Duration::from_secs(10)).await;
    // autoscaling/v2, as `kubectl autoscale` and manifests write it.
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "busy"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 1}}}
    }))
    .unwrap();
    t.client
        .api::<HorizontalPodAutoscaler>(Some("default"))
        .create(&hpa)
        .await
        .unwrap();
    // The agents' usage reports land in the server's usage table (metrics.k8s.io's source),
    // which the autoscaler reads.
    let set_usage = |millis: u64| {
        let pods = pods.clone();
        let usage = &t.plane.registry.usage;
        async move {
            let mut per_node: BTreeMap<String, Vec<PodMetrics>> = BTreeMap::new();
            for p in pods
                .list(&ListParams::labels("app=busy"))
                .await
                .unwrap()
                .items
            {
                per_node
                    .entry(pod_node(&p).to_string())
                    .or_default()
                    .push(PodMetrics {
                        metadata: podd_api::ObjectMeta {
                            name: Some(p.name_any()),
                            namespace: Some("default".into()),
                            ..Default::default()
                        },
                        containers: vec![ContainerMetrics {
                            name: "c".into(),
                            usage: [("cpu".to_string(), podd_api::Quantity(format!("{millis}m")))]
                                .into(),
                        }],
                        ..Default::default()
                    });
            }
            for n in names(2) {
                let pods = per_node.remove(&n).unwrap_or_default();
                usage.record(
                    &n,
                    UsageReport {
                        pods,
                        ..Default::default()
                    },
                );
            }
        }
    };
    // 100m requested, 200m used: 200% of a 50% target: ceil(2 * 4) = 8, capped at 5.
    set_usage(200).await;
    eventually(Duration::from_secs(10), "scale up to 5", || async {
        (replicas(&deps.get("busy").await.unwrap()) == 5).then_some(())
    })
    .await;
    // 52% is within the 10% tolerance of 50%: no change.
    wait_running(&pods, "busy", 5, Duration::from_secs(10)).await;
    set_usage(52).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(replicas(&deps.get("busy").await.unwrap()), 5);
    let h = t
        .client
        .api::<HorizontalPodAutoscaler>(Some("default"))
        .get("busy")
        .await
        .unwrap();
    let st = h.status.as_ref().unwrap();
    let metric = st.current_metrics.as_ref().unwrap()[0]
        .resource
        .as_ref()
        .unwrap();
    assert_eq!(metric.name, "cpu");
    assert_eq!(metric.current.average_utilization, Some(52));
    assert_eq!(st.current_replicas, Some(5));
    let conds = st.conditions.as_ref().unwrap();
    for c in ["AbleToScale", "ScalingActive"] {
        assert_eq!(
            conds
                .iter()
                .find(|x| x.type_ == c)
                .map(|x| x.status.as_str()),
            Some("True"),
            "{c}: {conds:?}"
        );
    }
    // Idle: after the 1 s window, down to the minimum.
    set_usage(1).await;
    eventually(Duration::from_secs(10), "scale down to 1", || async {
        (replicas(&deps.get("busy").await.unwrap()) == 1).then_some(())
    })
    .await;
    // The controller scales the target first and writes its own status after, as
    // Kubernetes' does: wait for the status to catch up.
    let hpas = t.client.api::<HorizontalPodAutoscaler>(Some("default"));
    let st = eventually(Duration::from_secs(10), "HPA status desires 1", || async {
        let h = hpas.get("busy").await.ok()?;
        h.status.filter(|st| st.desired_replicas == 1)
    })
    .await;
    assert!(st.last_scale_time.is_some());
    let events = t.client.api::<Event>(Some("default"));
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        evs.iter().any(|e| e.reason.as_deref() == Some("SuccessfulRescale")
            && e.message.as_deref() == Some("New size: 5; reason: cpu resource utilization (percentage of request) above target")),
        "{evs:?}"
    );
    fleet.shutdown().await;
}

/// Deployments own ReplicaSets, ReplicaSets own pods; the ReplicaSet carries the template's
/// hash in its name, labels and selector, and the revision annotations.
async fn deployments_own_replica_sets_that_own_pods(backend: Backend) {
    let t = start_with(backend, Some(fast_controllers())).await;
    let fleet = HollowFleet::start(t.client.clone(), &names(2), HollowConfig::default())
        .await
        .unwrap();
    let deps = t.client.api::<Deployment>(Some("default"));
    let rss = t.client.api::<ReplicaSet>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    let d = deps.create(&deployment("web", 3)).await.unwrap();
    let run = wait_running(&pods, "web", 3, Duration::from_secs(10)).await;
    let list = rss
        .list(&ListParams::labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(list.len(), 1, "{list:?}");
    let rs = &list[0];
    let hash = rs.labels()["pod-template-hash"].clone();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    let spec = rs.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector
            .match_labels
            .as_ref()
            .unwrap()
            .get("pod-template-hash"),
        Some(&hash)
    );
    assert_eq!(spec.replicas, Some(3));
    let owner = &rs.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Deployment", "web", Some(true))
    );
    assert_eq!(Some(&owner.uid), d.metadata.uid.as_ref());
    let a = rs.annotations();
    assert_eq!(
        a.get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        a.get("deployment.kubernetes.io/desired-replicas")
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        a.get("deployment.kubernetes.io/max-replicas")
            .map(String::as_str),
        Some("4")
    );
    for p in &run {
        assert_eq!(hash_of(p), hash);
        assert!(
            p.name_any().starts_with(&format!("web-{hash}-")),
            "{}",
            p.name_any()
        );
        let o = &p.owner_references()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str()),
            ("ReplicaSet", rs.name_any().as_str())
        );
        assert_eq!(
            (o.controller, o.block_owner_deletion),
            (Some(true), Some(true))
        );
    }
    let d = eventually(Duration::from_secs(5), "deployment conditions", || async {
        let d = deps.get("web").await.unwrap();
        let st = d.status.clone()?;
        let conds = st.conditions.clone()?;
        let reason = |t: &str| {
            conds
                .iter()
                .find(|c| c.type_ == t)
                .and_then(|c| c.reason.clone())
        };
        (reason("Available").as_deref() == Some("MinimumReplicasAvailable")
            && reason("Progressing").as_deref() == Some("NewReplicaSetAvailable"))
        .then_some(d)
    })
    .await;
    let st = d.status.as_ref().unwrap();
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3))
    );
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    // Events as Kubernetes' controllers write them.
    let events = t.client.api::<Event>(Some("default"));
    let evs = eventually(Duration::from_secs(5), "controller events", || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        let has = |reason: &str, kind: &str| {
            evs.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.kind.as_deref() == Some(kind)
            })
        };
        (has("ScalingReplicaSet", "Deployment")
            && has("SuccessfulCreate", "ReplicaSet")
            && has("Scheduled", "Pod"))
        .then_some(evs)
    })
    .await;
    let scaled = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .unwrap();
    assert_eq!(
        scaled.message.as_deref(),
        Some(format!("Scaled up replica set web-{hash} from 0 to 3").as_str())
    );
    assert_eq!(scaled.type_.as_deref(), Some("Normal"));
    assert_eq!(scaled.count, Some(1));
    assert!(scaled.first_timestamp.is_some() && scaled.last_timestamp.is_some());
    assert_eq!(
        scaled.reporting_component.as_deref(),
        Some("deployment-controller")
    );
    assert_eq!(scaled.involved_object.uid, d.metadata.uid);
    let created: Vec<&Event> = evs
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
        .collect();
    assert_eq!(created.len(), 3, "one per pod: the messages differ");
    assert!(
        created[0]
            .message
            .as_deref()
            .unwrap()
            .starts_with("Created pod: web-")
    );
    // The same event again is aggregated: its count goes up.
    for n in [4, 3, 4, 3] {
        deps.scale("web", n).await.unwrap();
        wait_running(&pods, "web", n as usize, Duration::from_secs(10)).await;
    }
    eventually(Duration::from_secs(5), "an aggregated event", || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        let up: Vec<&Event> = evs
            .iter()
            .filter(|e| {
                e.message.as_deref()
                    == Some(format!("Scaled up replica set web-{hash} from 3 to 4").as_str())
            })
            .collect();
        (up.len() == 1 && up[0].count == Some(2)).then_some(())
    })
    .await;
    fleet.shutdown().await;
}

/// `kubectl rollout history`, `undo` and `restart`: revisions follow the templates, an old
/// template brought back takes the next revision, and `restartedAt` rolls the pods.
async fn rollout_revisions_undo_and_restart(backend: Backend) {
    let t = start_with(backend, Some(fast_controllers())).await;
    let fleet = HollowFleet::start(t.client.clone(), &names(2), HollowConfig::default())
        .await
        .unwrap();
    let deps = t.client.api::<Deployment>(Some("default"));
    let rss = t.client.api::<ReplicaSet>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    deps.create(&deployment("app", 2)).await.unwrap();
    let first = wait_running(&pods, "app", 2, Duration::from_secs(10)).await;
    let hash1 = hash_of(&first[0]);
    let revision = |r: &ReplicaSet| {
        r.annotations()
            .get("deployment.kubernetes.io/revision")
            .cloned()
    };
    let rollout_to = |image: &'static str| {
        let deps = deps.clone();
        let pods = pods.clone();
        async move {
            deps.patch(
                "app",
                &serde_json::json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "c", "image": image, "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                     "ports": [{"containerPort": 8080}]}]}}}}),
            )
            .await
            .unwrap();
            eventually(Duration::from_secs(15), "the rollout", || async {
                let all = pods
                    .list(&ListParams::labels("app=app"))
                    .await
                    .unwrap()
                    .items;
                let live: Vec<&Pod> = all
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                (live.len() == 2 && live.iter().all(|p| running(p) && image_of(p) == image))
                    .then(|| hash_of(live[0]))
            })
            .await
        }
    };
    let hash2 = rollout_to("busybox:2").await;
    assert_ne!(hash1, hash2);
    let by_hash = |list: &[ReplicaSet], h: &str| {
        list.iter()
            .find(|r| r.labels()["pod-template-hash"] == h)
            .cloned()
            .unwrap()
    };
    let list = rss
        .list(&ListParams::labels("app=app"))
        .await
        .unwrap()
        .items;
    assert_eq!(list.len(), 2, "the old ReplicaSet is kept for history");
    assert_eq!(revision(&by_hash(&list, &hash1)).as_deref(), Some("1"));
    assert_eq!(revision(&by_hash(&list, &hash2)).as_deref(), Some("2"));
    assert_eq!(by_hash(&list, &hash1).spec.unwrap().replicas, Some(0));
    // Undo, as kubectl does it: the old ReplicaSet's template (without its hash) goes back.
    let back = rollout_to("busybox:1").await;
    assert_eq!(back, hash1, "the old ReplicaSet is reused");
    let list = eventually(Duration::from_secs(5), "revision 3", || async {
        let list = rss
            .list(&ListParams::labels("app=app"))
            .await
            .unwrap()
            .items;
        (revision(&by_hash(&list, &hash1)).as_deref() == Some("3")).then_some(list)
    })
    .await;
    assert_eq!(list.len(), 2);
    let d = deps.get("app").await.unwrap();
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
    // Restart: kubectl stamps the template; the pods roll to a new ReplicaSet.
    deps.patch(
        "app",
        &serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-12-07T12:00:00Z"}}}}}),
    )
    .await
    .unwrap();
    let restarted = eventually(Duration::from_secs(15), "the restart", || async {
        let all = pods
            .list(&ListParams::labels("app=app"))
            .await
            .unwrap()
            .items;
        let live: Vec<&Pod> = all
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        (live.len() == 2 && live.iter().all(|p| running(p) && hash_of(p) != hash1))
            .then(|| hash_of(live[0]))
    })
    .await;
    let list = rss
        .list(&ListParams::labels("app=app"))
        .await
        .unwrap()
        .items;
    assert_eq!(revision(&by_hash(&list, &restarted)).as_deref(), Some("4"));
    fleet.shutdown().await;
}

/// A pod that finished (here: failed) is replaced at once, as Kubernetes' ReplicaSet
/// controller does, but its object is not deleted at once: its status stays readable.
async fn finished_pods_are_replaced_not_deleted(backend: Backend) {
    let t = start_with(backend, Some(fast_controllers())).await;
    let fleet = HollowFleet::start(t.client.clone(), &names(2), HollowConfig::default())
        .await
        .unwrap();
    let deps = t.client.api::<Deployment>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    deps.create(&deployment("job", 2)).await.unwrap();
    let run = wait_running(&pods, "job", 2, Duration::from_secs(10)).await;
    let victim = run[0].name_any();
    pods.patch_status(
        &victim,
        &serde_json::json!({"status": {"phase": "Failed", "reason": "Error", "conditions": [
            {"type": "Ready", "status": "False"}]}}),
    )
    .await
    .unwrap();
    wait_running(&pods, "job", 2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = pods.get(&victim).await.unwrap();
    assert_eq!(pod_phase(&p), "Failed", "the finished pod is still there");
    assert!(p.metadata.deletion_timestamp.is_none());
    let all = pods
        .list(&ListParams::labels("app=job"))
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 3, "two running and the failed one");
    fleet.shutdown().await;
}

/// The endpoints controller keeps one EndpointSlice per Service beside its Endpoints, with
/// named target ports resolved in each pod.
async fn endpoint_slices_follow_the_pods(backend: Backend) {
    let t = start_with(backend, Some(fast_controllers())).await;
    let fleet = HollowFleet::start(t.client.clone(), &names(2), HollowConfig::default())
        .await
        .unwrap();
    let deps = t.client.api::<Deployment>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    let svcs = t.client.api::<Service>(Some("default"));
    let slices = t.client.api::<EndpointSlice>(Some("default"));
    let mut d = deployment("web", 2);
    d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .ports = Some(vec![podd_api::ContainerPort {
        name: Some("http".into()),
        container_port: 8080,
        ..Default::default()
    }]);
    deps.create(&d).await.unwrap();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    svcs.create(&svc).await.unwrap();
    let run = wait_running(&pods, "web", 2, Duration::from_secs(10)).await;
    let mut want: Vec<String> = run.iter().map(|p| pod_ip(p).to_string()).collect();
    want.sort();
    let slice = eventually(Duration::from_secs(5), "a slice with both pods", || async {
        let list = slices
            .list(&ListParams::labels("kubernetes.io/service-name=web"))
            .await
            .unwrap()
            .items;
        let s = list.into_iter().next()?;
        let mut ips: Vec<String> = s
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.clone())
            .collect();
        ips.sort();
        (ips == want).then_some(s)
    })
    .await;
    assert!(slice.name_any().starts_with("web-"));
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(
        slice
            .labels()
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("web"), Some(8080), Some("TCP"))
    );
    for e in &slice.endpoints {
        let c = e.conditions.as_ref().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(e.target_ref.as_ref().unwrap().kind.as_deref(), Some("Pod"));
        assert!(e.node_name.as_deref().unwrap().starts_with("hollow-"));
    }
    let owner = &slice.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Service", "web")
    );
    // Scaling updates the same slice in place.
    deps.scale("web", 3).await.unwrap();
    wait_running(&pods, "web", 3, Duration::from_secs(10)).await;
    eventually(
        Duration::from_secs(5),
        "three endpoints in the same slice",
        || async {
            let list = slices
                .list(&ListParams::labels("kubernetes.io/service-name=web"))
                .await
                .unwrap()
                .items;
            (list.len() == 1
                && list[0].name_any() == slice.name_any()
                && list[0].endpoints.len() == 3)
                .then_some(())
        },
    )
    .await;
    let ep = t
        .client
        .api::<Endpoints>(Some("default"))
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        ep.subsets.as_ref().unwrap()[0].ports.as_ref().unwrap()[0].port,
        8080
    );
    fleet.shutdown().await;
}

/// Lease renewals are answered from the server's memory: the stored Leases stop changing, and
/// yet the lifecycle controller, which reads the renewals, keeps the nodes Ready past the
/// grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewals_from_memory_keep_nodes_ready() {
    let t = start_with(Backend::Memory, Some(fast_controllers())).await;
    let fleet = HollowFleet::start(t.client.clone(), &names(2), HollowConfig::default())
        .await
        .unwrap();
    let nodes = t.client.api::<Node>(None);
    let leases = t.client.api::<Lease>(Some("kube-node-lease"));
    // Every node's first renewal through this server is written; later ones are not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<String> = names(2)
        .iter()
        .map(|n| Kind::Lease.key("kube-node-lease", n))
        .collect();
    let mut revs = Vec::new();
    for k in &before {
        revs.push(t.store.get(k).await.unwrap().unwrap().mod_revision);
    }
    // Twice the grace (2 s) of renewals every 500 ms.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (k, rev) in before.iter().zip(&revs) {
        assert_eq!(
            t.store.get(k).await.unwrap().unwrap().mod_revision,
            *rev,
            "{k} was rewritten by a renewal"
        );
    }
    for n in names(2) {
        assert!(node_is_ready(&nodes.get(&n).await.unwrap()), "{n} is Ready");
        let l = leases.get(&n).await.unwrap();
        let spec = l.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(n.as_str()));
        assert_eq!(spec.lease_duration_seconds, Some(40));
    }
    // The reply to a renewal carries the renewed time.
    let renewed = leases
        .patch(
            "hollow-0",
            &serde_json::json!({"spec": {"renewTime": "2030-01-01T00:00:00.000000Z"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        renewed
            .spec
            .unwrap()
            .renew_time
            .map(|t| t.0.to_string())
            .as_deref(),
        Some("2030-01-01T00:00:00Z")
    );
    fleet.shutdown().await;
}

/// Hollow nodes report their pods' usage as agents do (the usage endpoint), and the server
/// serves it from its usage table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_report_usage() {
    let t = start_with(Backend::Memory, Some(fast_controllers())).await;
    let config = HollowConfig {
        usage_period: Some(Duration::from_millis(100)),
        ..HollowConfig::default()
    };
    let fleet = HollowFleet::start(t.client.clone(), &names(1), config)
        .await
        .unwrap();
    let deps = t.client.api::<Deployment>(Some("default"));
    let pods = t.client.api::<Pod>(Some("default"));
    deps.create(&deployment("use", 1)).await.unwrap();
    let run = wait_running(&pods, "use", 1, Duration::from_secs(10)).await;
    let name = run[0].name_any();
    fleet.set_pod_cpu("default", &name, 250);
    let usage = &t.plane.registry.usage;
    eventually(
        Duration::from_secs(5),
        "the pod's usage in the table",
        || async { (usage.pod("default", &name)?.cpu() == podd_api::Cpu(250)).then_some(()) },
    )
    .await;
    assert_eq!(usage.nodes()[0].metadata.name.as_deref(), Some("hollow-0"));
    fleet.shutdown().await;
}

/// Events expire after the TTL (kube-apiserver's `--event-ttl`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_the_ttl() {
    let config = podd_control_plane::controllers::ControllerConfig {
        event_ttl: Duration::from_secs(1),
        ..fast_controllers()
    };
    let t = start_with(Backend::Memory, Some(config)).await;
    let deps = t.client.api::<Deployment>(Some("default"));
    deps.create(&deployment("brief", 1)).await.unwrap();
    let events = t.client.api::<Event>(Some("default"));
    eventually(Duration::from_secs(5), "an event", || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
            .then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the event swept", || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        (!evs
            .iter()
            .any(|e| e.reason.as_deref() == Some("ScalingReplicaSet")))
        .then_some(())
    })
    .await;
}

/// One test per store for a scenario: `scenario::memory`, `scenario::sqlite`, ...
macro_rules! on_stores {
    ($scenario:ident: $($backend:ident => $variant:ident),+) => {
        mod $scenario {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $backend() {
                    super::$scenario(super::Backend::$variant).await;
                }
            )+
        }
    };
}

on_stores!(deployment_spreads_scales_and_replaces_a_lost_node:
    memory => Memory, sqlite => Sqlite, etcd => Etcd);
on_stores!(rolling_update_never_drops_below_replicas_minus_max_unavailable:
    memory => Memory, sqlite => Sqlite, etcd => Etcd);
on_stores!(endpoints_follow_readiness: memory => Memory, sqlite => Sqlite);
on_stores!(unschedulable_pods_wait_for_a_fitting_node: memory => Memory, sqlite => Sqlite);
on_stores!(autoscaler_follows_cpu_use: memory => Memory, sqlite => Sqlite);
on_stores!(deployments_own_replica_sets_that_own_pods: memory => Memory, sqlite => Sqlite);
on_stores!(rollout_revisions_undo_and_restart: memory => Memory, sqlite => Sqlite);
on_stores!(finished_pods_are_replaced_not_deleted: memory => Memory);
on_stores!(endpoint_slices_follow_the_pods: memory => Memory, sqlite => Sqlite);

//! Controllers driven end to end with hollow nodes: spreading, scaling, node loss, rolling
//! updates, endpoints, unschedulable pods and the autoscaler, each on the in-memory store and
//! on SQLite; the scenarios that matter most with a store's latency (spreading, scaling, node
//! loss, rolling updates) also on a real etcd started on loopback.

mod common;

use common::{Backend, deployment, eventually, fast_controllers, pod, start_with};
use podd_api::{Deployment, Endpoints, HorizontalPodAutoscaler, Node, Pod, PodPhase, Service};
use podd_client::{Api, ListParams};
use podd_control_plane::hollow::{HollowConfig, HollowFleet};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("hollow-{i}")).collect()
}

fn running(p: &Pod) -> bool {
    p.status.phase == PodPhase::Running && p.status.ready && !p.spec.node_name.is_empty()
}

async fn wait_running(api: &Api<Pod>, app: &str, n: usize, timeout: Duration) -> Vec<Pod> {
    eventually(timeout, &format!("{n} running pods of {app}"), || async {
        let all = api
            .list(&ListParams::labels(&format!("app={app}")))
            .await
            .unwrap()
            .items;
        let run: Vec<Pod> = all.iter().filter(|p| running(p)).cloned().collect();
        (run.len() == n && all.len() == n).then_some(run)
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
    let nodes: BTreeSet<_> = run.iter().map(|p| p.spec.node_name.clone()).collect();
    assert_eq!(nodes.len(), 3, "3 replicas spread over 3 nodes: {nodes:?}");
    for p in &run {
        assert!(
            p.status.pod_ip.starts_with("10.244."),
            "{}",
            p.status.pod_ip
        );
        assert_eq!(
            p.metadata.labels.get("pod-template-hash").map(String::len),
            Some(10)
        );
    }
    let d = eventually(Duration::from_secs(5), "deployment status", || async {
        let d = deps.get("web").await.unwrap();
        (d.status.available_replicas == 3).then_some(d)
    })
    .await;
    assert_eq!(d.status.observed_generation, d.metadata.generation);

    deps.scale("web", 10).await.unwrap();
    let run = wait_running(&pods, "web", 10, Duration::from_secs(10)).await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &run {
        *per_node.entry(p.spec.node_name.clone()).or_default() += 1;
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
                .filter(|p| running(p) && p.spec.node_name != victim)
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
    assert!(run.iter().all(|p| p.spec.node_name != victim));
    let n = t.client.api::<Node>(None).get(victim).await.unwrap();
    assert!(!n.is_ready(), "the dead node is NotReady");

    // It comes back: Ready again, and nothing of it is left stale.
    fleet.start_node(victim);
    eventually(Duration::from_secs(5), "node ready again", || async {
        t.client
            .api::<Node>(None)
            .get(victim)
            .await
            .unwrap()
            .is_ready()
            .then_some(())
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
            all.iter()
                .all(|p| p.status.phase != PodPhase::Failed)
                .then_some(())
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
    d.spec.strategy.rolling_update.max_surge = podd_api::workloads::IntOrPercent::Int(1);
    d.spec.strategy.rolling_update.max_unavailable = podd_api::workloads::IntOrPercent::Int(1);
    deps.create(&d).await.unwrap();
    let before = wait_running(&pods, "roll", 6, Duration::from_secs(10)).await;
    let old_hash = before[0].metadata.labels["pod-template-hash"].clone();

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
            let live: Vec<&Pod> = all
                .iter()
                .filter(|p| p.status.phase != PodPhase::Failed)
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
        cur.spec.template.spec.containers[0].image = "busybox:2".into();
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
        let done = all.len() == 6
            && all
                .iter()
                .all(|p| running(p) && p.spec.containers[0].image == "busybox:2");
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
    assert!(
        after
            .iter()
            .all(|p| p.metadata.labels["pod-template-hash"] != old_hash)
    );
    let d = deps.get("roll").await.unwrap();
    assert_eq!(d.metadata.generation, 2);
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
    for (i, app) in [(1, "web"), (2, "web"), (3, "db")] {
        let mut p = pod(&format!("p{i}"), &[("app", app)]);
        p.spec.node_name = "somewhere".into();
        pods.create(&p).await.unwrap();
        pods.patch_status(
            &format!("p{i}"),
            &serde_json::json!({"status": {"phase": "Running", "ready": true, "podIP": format!("10.244.1.{i}")}}),
        )
        .await
        .unwrap();
    }
    let ready_ips = |ep: &Endpoints| -> (Vec<String>, Vec<String>) {
        let s = ep.subsets.first();
        (
            s.map(|s| s.addresses.iter().map(|a| a.ip.clone()).collect())
                .unwrap_or_default(),
            s.map(|s| s.not_ready_addresses.iter().map(|a| a.ip.clone()).collect())
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
    assert_eq!(ep.subsets[0].ports[0].port, 8080);
    assert_eq!(ep.subsets[0].ports[0].name, "http");
    // p1 becomes unready.
    pods.patch_status("p1", &serde_json::json!({"status": {"ready": false}}))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "p1 not ready", || async {
        let ep = eps.get("web").await.unwrap();
        (ready_ips(&ep) == want(vec!["10.244.1.2"], vec!["10.244.1.1"])).then_some(())
    })
    .await;
    // p2 goes away; p1 ready again.
    pods.delete("p2").await.unwrap();
    pods.patch_status("p1", &serde_json::json!({"status": {"ready": true}}))
        .await
        .unwrap();
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
    p.spec.containers[0].resources.requests.cpu = Some(podd_api::Cpu(3000));
    pods.create(&p).await.unwrap();
    let p = eventually(
        Duration::from_secs(5),
        "an Unschedulable reason",
        || async {
            let p = pods.get("big").await.unwrap();
            (p.status.reason == "Unschedulable").then_some(p)
        },
    )
    .await;
    assert!(!p.status.message.is_empty());
    let cond = p
        .status
        .conditions
        .iter()
        .find(|c| c.kind == "PodScheduled")
        .unwrap();
    assert_eq!(cond.status, "False");
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
    assert!(pods.get("big").await.unwrap().spec.node_name.is_empty());
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
    assert_eq!(p.spec.node_name, "large");
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
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "busy"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "busy"},
            "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50,
            "scaleDownStabilizationSeconds": 1}
    }))
    .unwrap();
    t.client
        .api::<HorizontalPodAutoscaler>(Some("default"))
        .create(&hpa)
        .await
        .unwrap();
    let set_usage = |millis: u64| {
        let pods = pods.clone();
        async move {
            for p in pods
                .list(&ListParams::labels("app=busy"))
                .await
                .unwrap()
                .items
            {
                let _ = pods
                    .patch_status(
                        &p.metadata.name,
                        &serde_json::json!({"status": {"usage": {"cpuMillis": millis}}}),
                    )
                    .await;
            }
        }
    };
    // 100m requested, 200m used: 200% of a 50% target: ceil(2 * 4) = 8, capped at 5.
    set_usage(200).await;
    eventually(Duration::from_secs(10), "scale up to 5", || async {
        (deps.get("busy").await.unwrap().spec.replicas == 5).then_some(())
    })
    .await;
    // 52% is within the 10% tolerance of 50%: no change.
    wait_running(&pods, "busy", 5, Duration::from_secs(10)).await;
    set_usage(52).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(deps.get("busy").await.unwrap().spec.replicas, 5);
    // Idle: after the 1 s window, down to the minimum.
    set_usage(1).await;
    eventually(Duration::from_secs(10), "scale down to 1", || async {
        (deps.get("busy").await.unwrap().spec.replicas == 1).then_some(())
    })
    .await;
    let h = t
        .client
        .api::<HorizontalPodAutoscaler>(Some("default"))
        .get("busy")
        .await
        .unwrap();
    assert!(h.status.last_scale_time.is_some());
    fleet.shutdown().await;
}

/// Lease renewals are answered from the server's memory: the stored Nodes stop changing, and
/// yet the lifecycle controller, which reads the renewals, keeps them Ready past the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewals_from_memory_keep_nodes_ready() {
    let t = start_with(Backend::Memory, Some(fast_controllers())).await;
    let fleet = HollowFleet::start(t.client.clone(), &names(2), HollowConfig::default())
        .await
        .unwrap();
    let nodes = t.client.api::<Node>(None);
    // Every node's first renewal through this server is written; later ones are not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<String> = names(2)
        .iter()
        .map(|n| format!("/registry/nodes/{n}"))
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
        assert!(nodes.get(&n).await.unwrap().is_ready(), "{n} is Ready");
    }
    // The reply to a renewal carries the renewed time.
    let renewed = nodes
        .patch_status(
            "hollow-0",
            &serde_json::json!({"status": {"leaseRenewTime": "2030-01-01T00:00:00Z"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        renewed.status.lease_renew_time.as_deref(),
        Some("2030-01-01T00:00:00Z")
    );
    fleet.shutdown().await;
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

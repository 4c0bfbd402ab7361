//! Behaviour of the scheduler as the control plane uses it.

mod common;

use common::*;
use podd_api::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};
use podd_scheduler::{
    NOT_READY_TAINT, NodeInfo, PodInfo, ResourceStrategy, Scheduler, SchedulerConfig,
};
use std::collections::BTreeMap;

fn count_by<'a>(
    s: &Scheduler,
    keys: impl Iterator<Item = &'a String>,
    f: impl Fn(&str) -> String,
) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(f(s.pod_node(k).unwrap())).or_insert(0) += 1;
    }
    m
}

fn zone_of(node: &str) -> String {
    node.split('-').next().unwrap().to_string()
}

fn three_zones(s: &mut Scheduler, per_zone: usize) {
    for z in ["a", "b", "c"] {
        for i in 0..per_zone {
            s.upsert_node(zoned(&format!("{z}-{i}"), z, 8000, 32 * GI));
        }
    }
}

#[test]
fn thirty_replicas_over_three_zones_land_ten_ten_ten_and_even_within_zones() {
    for hard in [false, true] {
        for use_index in [true, false] {
            let mut s = Scheduler::new(SchedulerConfig {
                zone_spread_hard: hard,
                use_index,
                ..Default::default()
            });
            three_zones(&mut s, 5);
            // Unrelated load that makes nodes unequal must not break the spread.
            s.assume_bound(&pod("default/big", 3000, 4 * GI), "a-0");
            let keys: Vec<String> = (0..30)
                .map(|i| s.schedule(&replica("web", i, 100, 128 << 20)).unwrap())
                .map(|_| String::new())
                .collect();
            drop(keys);
            let keys: Vec<String> = (0..30).map(|i| format!("default/web-{i}")).collect();
            let zones = count_by(&s, keys.iter(), zone_of);
            assert_eq!(
                zones.values().copied().collect::<Vec<_>>(),
                vec![10, 10, 10],
                "hard={hard}"
            );
            let nodes = count_by(&s, keys.iter(), |n| n.to_string());
            assert!(
                nodes.values().all(|c| *c == 2),
                "nodes within a zone are balanced: {nodes:?}"
            );
        }
    }
}

#[test]
fn scale_down_keeps_spread_even() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    three_zones(&mut s, 3);
    let keys: Vec<String> = (0..30)
        .map(|i| {
            let p = replica("web", i, 100, 1 << 20);
            s.schedule(&p).unwrap();
            p.key
        })
        .collect();
    let victims = s.choose_scale_down(&keys, 9);
    assert_eq!(victims.len(), 9);
    for v in &victims {
        s.forget_pod(v);
    }
    let left: Vec<String> = keys
        .iter()
        .filter(|k| !victims.contains(k))
        .cloned()
        .collect();
    let zones = count_by(&s, left.iter(), zone_of);
    assert_eq!(zones.values().copied().collect::<Vec<_>>(), vec![7, 7, 7]);
    let nodes = count_by(&s, left.iter(), |n| n.to_string());
    let (min, max) = (nodes.values().min().unwrap(), nodes.values().max().unwrap());
    assert!(max - min <= 1, "{nodes:?}");

    // An uneven start (6/3/3, all of zone a on one node) is evened out by the choice.
    let mut s = Scheduler::new(SchedulerConfig::default());
    three_zones(&mut s, 2);
    let mut keys = Vec::new();
    for (i, node) in [
        "a-0", "a-0", "a-0", "a-0", "a-1", "a-1", "b-0", "b-1", "b-1", "c-0", "c-0", "c-1",
    ]
    .iter()
    .enumerate()
    {
        let p = replica("api", i, 10, 1 << 20);
        s.assume_bound(&p, node);
        keys.push(p.key);
    }
    let victims = s.choose_scale_down(&keys, 3);
    let nodes: Vec<&str> = victims.iter().map(|v| s.pod_node(v).unwrap()).collect();
    assert_eq!(
        nodes.iter().filter(|n| n.starts_with("a-")).count(),
        3,
        "zone a 6 -> 3: {nodes:?}"
    );
    assert!(
        nodes.iter().filter(|n| **n == "a-0").count() >= 2,
        "a-0 held 4 of 6: {nodes:?}"
    );
    // Unknown or unbound pods go first.
    let mut with_unknown = keys.clone();
    with_unknown.push("default/not-bound".into());
    assert_eq!(
        s.choose_scale_down(&with_unknown, 1),
        vec!["default/not-bound".to_string()]
    );
    assert!(s.choose_scale_down(&keys, 100).len() == keys.len());
}

#[test]
fn unschedulable_message_in_kubernetes_form() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for i in 0..3 {
        s.upsert_node(node(&format!("small-{i}"), 500, 8 * GI));
    }
    for i in 0..2 {
        let mut n = node(&format!("gpu-{i}"), 8000, 8 * GI);
        n.taints = vec![taint("dedicated", "gpu", "NoSchedule")];
        s.upsert_node(n);
    }
    let gen_before = s.cluster_generation();
    let err = s.schedule(&pod("default/big", 1000, GI)).unwrap_err();
    assert_eq!(
        err.message,
        "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu."
    );
    assert_eq!(err.nodes_total, 5);
    assert_eq!(err.generation, gen_before);
    assert_eq!(
        s.cluster_generation(),
        gen_before,
        "a failed attempt changes nothing"
    );

    // Memory, pod count, ports, unschedulable, affinity and not-ready reasons.
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_node(node("m", 8000, GI));
    let mut full = node("full", 8000, 8 * GI);
    full.max_pods = 1;
    s.upsert_node(full);
    s.assume_bound(&pod("default/x", 0, 0), "full");
    let mut cordoned = node("cordoned", 8000, 8 * GI);
    cordoned.unschedulable = true;
    s.upsert_node(cordoned);
    let mut down = node("down", 8000, 8 * GI);
    down.ready = false;
    s.upsert_node(down);
    let mut ports = node("ports", 8000, 8 * GI);
    ports.labels.insert("disk".into(), "ssd".into());
    s.upsert_node(ports);
    s.assume_bound(
        &PodInfo {
            host_ports: vec![8080],
            ..pod("default/web", 0, 0)
        },
        "ports",
    );
    let p = PodInfo {
        host_ports: vec![8080],
        ..pod("default/p", 100, 2 * GI)
    };
    let err = s.schedule(&p).unwrap_err();
    assert_eq!(
        err.message,
        format!(
            "0/5 nodes are available: 1 Insufficient memory, 1 Too many pods, 1 node(s) didn't have free ports for the requested pod ports, 1 node(s) had untolerated taint {{{NOT_READY_TAINT}: }}, 1 node(s) were unschedulable."
        )
    );
    let mut p2 = pod("default/q", 1, 1);
    p2.node_selector.insert("disk".into(), "hdd".into());
    let err = s.schedule(&p2).unwrap_err();
    assert!(
        err.message
            .contains("3 node(s) didn't match Pod's node affinity/selector"),
        "{}",
        err.message
    );
    assert_eq!(
        Scheduler::new(SchedulerConfig::default())
            .schedule(&p2)
            .unwrap_err()
            .message,
        "no nodes available to schedule pods"
    );
}

#[test]
fn cluster_generation_changes_only_when_the_cluster_changes() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let g0 = s.cluster_generation();
    s.upsert_node(node("n1", 1000, GI));
    let g1 = s.cluster_generation();
    assert_ne!(g0, g1);
    s.upsert_node(node("n1", 1000, GI));
    assert_eq!(
        s.cluster_generation(),
        g1,
        "an identical update is no change"
    );
    s.remove_node("nope");
    s.forget_pod("default/nope");
    assert_eq!(s.cluster_generation(), g1);
    let err = s.schedule(&pod("default/huge", 5000, GI)).unwrap_err();
    assert_eq!(err.generation, g1);
    assert_eq!(
        s.cluster_generation(),
        g1,
        "retrying now would be a busy loop"
    );
    assert!(!s.worth_retrying(&err));
    s.schedule(&pod("default/ok", 100, 1)).unwrap();
    let g2 = s.cluster_generation();
    assert_ne!(g2, g1, "a binding is a change");
    s.assume_bound(&pod("default/ok", 100, 1), "n1");
    assert_eq!(
        s.cluster_generation(),
        g2,
        "re-assuming the same binding is no change"
    );
    s.forget_pod("default/ok");
    let g3 = s.cluster_generation();
    assert_ne!(g3, g2);
    s.upsert_node(node("n1", 8000, GI));
    let g4 = s.cluster_generation();
    assert_ne!(g4, g3);
    assert!(s.worth_retrying(&err));
    assert!(
        s.schedule(&pod("default/huge", 5000, GI)).is_ok(),
        "the retry now fits"
    );
    s.remove_node("n1");
    assert_ne!(s.cluster_generation(), g4);
}

#[test]
fn batch_places_like_one_at_a_time() {
    let mut a = Scheduler::new(SchedulerConfig::default());
    three_zones(&mut a, 10);
    let mut b = a.clone();
    let pods: Vec<PodInfo> = (0..1000)
        .map(|i| {
            let mut p = replica(
                &format!("app{}", i % 7),
                i,
                50 + (i as u64 % 5) * 40,
                (64 + (i as u64 % 3) * 64) << 20,
            );
            p.priority = (i % 3) as i32;
            p
        })
        .collect();
    let batch = a.schedule_batch(&pods);
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(pods[*i].priority));
    let mut single = vec![None; pods.len()];
    for i in order {
        single[i] = Some(b.schedule(&pods[i]));
    }
    let single: Vec<_> = single.into_iter().map(Option::unwrap).collect();
    assert_eq!(batch, single);
    assert!(batch.iter().all(|r| r.is_ok()));
}

#[test]
fn equal_nodes_share_ties_without_hot_spotting() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for i in 0..10 {
        s.upsert_node(node(&format!("n{i}"), 4000, 16 * GI));
    }
    // Zero-request pods never change a node's score: only the tie-break decides.
    let mut counts = BTreeMap::new();
    for i in 0..500 {
        let n = s.schedule(&pod(&format!("default/p{i}"), 0, 0)).unwrap();
        *counts.entry(n).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 10, "every node got some: {counts:?}");
    assert!(counts.values().all(|c| *c < 200), "{counts:?}");
    // Different seeds give different, still reproducible, orders.
    let place = |seed| {
        let mut s = Scheduler::new(SchedulerConfig {
            seed,
            ..Default::default()
        });
        for i in 0..10 {
            s.upsert_node(node(&format!("n{i}"), 4000, 16 * GI));
        }
        s.schedule(&pod("default/x", 0, 0)).unwrap()
    };
    assert_eq!(place(1), place(1));
    assert!((2..20).any(|seed| place(seed) != place(1)));
}

#[test]
fn least_allocated_spreads_and_most_allocated_packs() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for i in 0..4 {
        s.upsert_node(node(&format!("n{i}"), 4000, 16 * GI));
    }
    for i in 0..8 {
        s.schedule(&pod(&format!("default/p{i}"), 500, GI)).unwrap();
    }
    for i in 0..4 {
        assert_eq!(s.node_usage(&format!("n{i}")).unwrap().pods, 2);
    }
    let mut s = Scheduler::new(SchedulerConfig {
        strategy: ResourceStrategy::MostAllocated,
        ..Default::default()
    });
    for i in 0..4 {
        s.upsert_node(node(&format!("n{i}"), 4000, 16 * GI));
    }
    let mut first = None;
    for i in 0..8 {
        let n = s
            .schedule(&pod(&format!("default/p{i}"), 500, 2 * GI))
            .unwrap();
        assert_eq!(
            *first.get_or_insert(n.clone()),
            n,
            "packs one node until it is full"
        );
    }
    let ninth = s.schedule(&pod("default/p8", 500, 2 * GI)).unwrap();
    assert_ne!(Some(ninth), first);
}

#[test]
fn balanced_allocation_pairs_cpu_heavy_with_memory_heavy() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_node(node("cpu-used", 4000, 16 * GI));
    s.upsert_node(node("mem-used", 4000, 16 * GI));
    s.assume_bound(&pod("default/c", 2000, 0), "cpu-used");
    s.assume_bound(&pod("default/m", 0, 8 * GI), "mem-used");
    assert_eq!(
        s.schedule(&pod("default/cpu-heavy", 2000, 0)).unwrap(),
        "mem-used"
    );
    assert_eq!(
        s.schedule(&pod("default/mem-heavy", 0, 8 * GI)).unwrap(),
        "cpu-used"
    );
}

#[test]
fn selectors_affinity_and_tolerations_place_correctly() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for i in 0..20 {
        let mut n = zoned(
            &format!("n{i}"),
            if i < 10 { "a" } else { "b" },
            4000,
            8 * GI,
        );
        if i % 5 == 0 {
            n.taints = vec![taint("dedicated", "db", "NoSchedule")];
            n.labels.insert("role".into(), "db".into());
        }
        s.upsert_node(n);
    }
    for i in 0..50 {
        let n = s
            .schedule(&pod(&format!("default/free{i}"), 10, 1))
            .unwrap();
        let idx: usize = n[1..].parse().unwrap();
        assert!(!idx.is_multiple_of(5), "untolerated taint respected");
    }
    let mut db = pod("default/db", 10, 1);
    db.tolerations = vec![toleration("dedicated", "db")];
    db.node_selector.insert("role".into(), "db".into());
    for i in 0..8 {
        db.key = format!("default/db{i}");
        let n = s.schedule(&db).unwrap();
        assert!(n == "n0" || n == "n5" || n == "n10" || n == "n15", "{n}");
    }
    let mut aff = pod("default/aff", 10, 1);
    aff.required_affinity = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: podd_scheduler::ZONE_LABEL.into(),
                operator: "In".into(),
                values: Some(vec!["b".into()]),
            }]),
            match_fields: None,
        }],
    });
    for i in 0..30 {
        aff.key = format!("default/aff{i}");
        let n = s.schedule(&aff).unwrap();
        let idx: usize = n[1..].parse().unwrap();
        assert!(idx >= 10 && !idx.is_multiple_of(5), "{n}");
    }
}

#[test]
fn daemonset_like_pods_land_on_their_node_even_when_not_ready() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for i in 0..300 {
        let mut n = node(&format!("node-{i}"), 2000, 4 * GI);
        n.ready = i % 10 != 0;
        s.upsert_node(n);
    }
    for i in 0..300 {
        let mut p = pod(&format!("kube-system/ds-{i}"), 50, 64 << 20);
        p.node_selector
            .insert("kubernetes.io/hostname".into(), format!("node-{i}"));
        p.tolerations = vec![podd_api::Toleration {
            key: Some(NOT_READY_TAINT.into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }];
        assert_eq!(s.schedule(&p).unwrap(), format!("node-{i}"));
    }
}

#[test]
fn pods_bound_before_their_node_is_known_count_when_it_arrives() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.assume_bound(&pod("default/early", 1500, GI), "late");
    s.upsert_node(node("late", 2000, 4 * GI));
    assert_eq!(s.node_usage("late").unwrap().req_cpu, 1500);
    assert!(s.schedule(&pod("default/p", 1000, 1)).is_err());
    s.remove_node("late");
    s.upsert_node(node("late", 2000, 4 * GI));
    assert_eq!(
        s.node_usage("late").unwrap().req_cpu,
        1500,
        "still counted after a re-add"
    );
    s.forget_pod("default/early");
    assert_eq!(s.node_usage("late").unwrap().req_cpu, 0);
    assert!(s.schedule(&pod("default/p", 1000, 1)).is_ok());
}

#[test]
fn node_and_pod_conversions() {
    let node: podd_api::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "w1", "labels": {"topology.kubernetes.io/zone": "z1"}},
        "spec": {"unschedulable": true, "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "50"},
            "allocatable": {"cpu": "3500m", "memory": "7Gi", "pods": "0"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .unwrap();
    let info = NodeInfo::from_node(&node);
    assert_eq!(info.allocatable_cpu_millis, 3500);
    assert_eq!(info.allocatable_memory, 7 * GI);
    assert_eq!(info.max_pods, 50, "falls back to capacity");
    assert!(info.ready && info.unschedulable);
    assert_eq!(info.labels["kubernetes.io/hostname"], "w1");
    assert_eq!(info.taints.len(), 1);

    let pod: podd_api::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-1", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid", "controller": true}]},
        "spec": {
            "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                 "ports": [{"containerPort": 80, "hostPort": 8080}]},
                {"name": "b", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
            ],
            "initContainers": [{"name": "init", "image": "i", "resources": {"requests": {"cpu": "2"}}}],
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "z", "operator": "In", "values": ["1"]}]}]}}},
            "priority": 7
        }
    }))
    .unwrap();
    let p = PodInfo::from_pod(&pod);
    assert_eq!(p.key, "shop/web-1");
    assert_eq!(
        p.cpu_millis, 2000,
        "the init container is larger than the sum"
    );
    assert_eq!(p.memory, (64 << 20) + GI);
    assert_eq!(p.host_ports, vec![8080]);
    assert_eq!(p.spread_group.as_deref(), Some("rs-uid"));
    assert_eq!(p.node_selector["disk"], "ssd");
    assert!(p.required_affinity.is_some());
    assert_eq!(p.tolerations.len(), 1);
    assert_eq!(p.priority, 7);
}

#[test]
fn kubernetes_pod_fields_priority_classes_and_spread_fallback() {
    // A pod without a controller reference (orphaned from its ReplicaSet) still spreads with
    // its siblings: the namespace and pod-template-hash name the group.
    let pod: podd_api::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-abc", "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "5d9f7"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Thing", "name": "x", "uid": "not-controller"}]},
        "spec": {
            "containers": [{"name": "a", "image": "i"}],
            "priorityClassName": "system-node-critical",
            "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}]
        }
    }))
    .unwrap();
    let p = PodInfo::from_pod(&pod);
    assert_eq!(
        p.spread_group.as_deref(),
        Some("shop/pod-template-hash=5d9f7")
    );
    assert_eq!(p.priority, 2_000_001_000, "built-in priority class");
    assert_eq!(p.cpu_millis, 0);
    // spec.priority, as admission resolved it, wins over the class name.
    let mut with_priority = pod.clone();
    with_priority.spec.as_mut().unwrap().priority = Some(5);
    assert_eq!(PodInfo::from_pod(&with_priority).priority, 5);
    // A standalone pod spreads with nothing; an unknown class is priority 0.
    let bare: podd_api::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "solo"},
        "spec": {"containers": [{"name": "a", "image": "i"}], "priorityClassName": "custom"}
    }))
    .unwrap();
    let b = PodInfo::from_pod(&bare);
    assert_eq!(b.key, "default/solo");
    assert_eq!(b.spread_group, None);
    assert_eq!(b.priority, 0);

    // A NoExecute taint tolerated for a while is tolerated for scheduling.
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut n = node("n1", 1000, GI);
    n.taints = vec![taint("node.kubernetes.io/unreachable", "", "NoExecute")];
    s.upsert_node(n);
    assert_eq!(s.schedule(&p).unwrap(), "n1");
    assert!(s.schedule(&b).is_err());
}

#[test]
fn preferred_node_affinity_attracts_without_requiring() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for i in 0..6 {
        let mut n = node(&format!("n{i}"), 4000, 8 * GI);
        if i >= 4 {
            n.labels.insert("disk".into(), "ssd".into());
        }
        s.upsert_node(n);
    }
    let pod: podd_api::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "containers": [{"name": "a", "image": "i", "resources": {"requests": {"cpu": "100m"}}}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 80, "preference": {"matchExpressions": [
                    {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}
        }
    }))
    .unwrap();
    let p = PodInfo::from_pod(&pod);
    assert_eq!(p.preferred_affinity.len(), 1);
    for i in 0..4 {
        let mut q = p.clone();
        q.key = format!("default/p{i}");
        let n = s.schedule(&q).unwrap();
        assert!(n == "n4" || n == "n5", "{n}: preferred nodes first");
    }
    // Only a preference: with the ssd nodes full, the pod goes elsewhere.
    let mut big = p.clone();
    big.cpu_millis = 3900;
    big.key = "default/big".into();
    let n = s.schedule(&big).unwrap();
    assert!(n != "n4" && n != "n5", "{n}");
    // The scan path agrees with the index.
    let mut scan = Scheduler::new(SchedulerConfig {
        use_index: false,
        ..SchedulerConfig::default()
    });
    for i in 0..6 {
        let mut n = node(&format!("n{i}"), 4000, 8 * GI);
        if i >= 4 {
            n.labels.insert("disk".into(), "ssd".into());
        }
        scan.upsert_node(n);
    }
    let mut q = p.clone();
    q.key = "default/p0".into();
    assert!(matches!(scan.schedule(&q).unwrap().as_str(), "n4" | "n5"));
}

#[test]
fn node_affinity_match_fields_pin_a_node_by_name() {
    // DaemonSet pods pin their node with matchFields metadata.name, as in Kubernetes.
    let mut s = Scheduler::new(SchedulerConfig::default());
    for i in 0..5 {
        s.upsert_node(node(&format!("n{i}"), 1000, GI));
    }
    let pod: podd_api::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ds-1", "namespace": "kube-system"},
        "spec": {
            "containers": [{"name": "a", "image": "i"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["n3"]}]}]}}}
        }
    }))
    .unwrap();
    let p = PodInfo::from_pod(&pod);
    assert_eq!(s.schedule(&p).unwrap(), "n3");
    let mut other = p.clone();
    other.key = "kube-system/ds-2".into();
    other
        .required_affinity
        .as_mut()
        .unwrap()
        .node_selector_terms[0]
        .match_fields
        .as_mut()
        .unwrap()[0]
        .key = "metadata.uid".into();
    assert!(s.schedule(&other).is_err(), "only metadata.name is a field");
}

#[test]
fn node_changes_move_nodes_between_classes_and_zones() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_node(zoned("n1", "a", 4000, 8 * GI));
    s.upsert_node(zoned("n2", "b", 4000, 8 * GI));
    assert!(s.schedule(&replica("g", 0, 100, 1)).is_ok());
    // Taint both: nothing fits; untaint one: it does.
    for n in ["n1", "n2"] {
        let mut info = zoned(n, "a", 4000, 8 * GI);
        info.taints = vec![taint("x", "", "NoExecute")];
        s.upsert_node(info);
    }
    assert!(s.schedule(&replica("g", 1, 100, 1)).is_err());
    s.upsert_node(zoned("n2", "c", 4000, 8 * GI));
    assert_eq!(s.schedule(&replica("g", 2, 100, 1)).unwrap(), "n2");
    s.remove_node("n2");
    assert!(s.schedule(&replica("g", 3, 100, 1)).is_err());
}

#[test]
fn preemption_evicts_the_fewest_lowest_priority_pods() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_node(node("n1", 4000, 16 * GI));
    s.upsert_node(node("n2", 4000, 16 * GI));
    let bind = |s: &mut Scheduler, key: &str, cpu, prio, node: &str| {
        let mut p = pod(key, cpu, GI);
        p.priority = prio;
        s.assume_bound(&p, node);
    };
    // n1: two priority-10 pods; n2: one priority-5 pod and one priority-1 pod.
    bind(&mut s, "default/a", 2000, 10, "n1");
    bind(&mut s, "default/b", 2000, 10, "n1");
    bind(&mut s, "default/c", 3000, 5, "n2");
    bind(&mut s, "default/d", 1000, 1, "n2");
    let mut urgent = pod("default/urgent", 1000, GI);
    urgent.priority = 100;
    assert!(s.clone().schedule(&urgent).is_err());
    let before = s.cluster_generation();
    let plan = s.plan_preemption(&urgent).unwrap();
    assert_eq!(s.cluster_generation(), before, "planning changes nothing");
    // Evicting d (priority 1) alone makes room on n2: the lowest victim priority wins, and c
    // is given back.
    assert_eq!(plan.node, "n2");
    assert_eq!(plan.victims, vec!["default/d".to_string()]);
    for v in &plan.victims {
        s.forget_pod(v);
    }
    assert_eq!(s.schedule(&urgent).unwrap(), "n2");

    // A pod of equal or lower priority preempts nothing.
    let mut peer = pod("default/peer", 1000, GI);
    peer.priority = 1;
    assert!(s.plan_preemption(&peer).is_none());
    // Needing more than one victim: all of n2's lower pods go only if needed.
    let mut huge = pod("default/huge", 4000, GI);
    huge.priority = 50;
    let plan = s.plan_preemption(&huge).unwrap();
    assert_eq!(
        plan.node, "n1",
        "priority-10 victims beat evicting the priority-100 pod"
    );
    assert_eq!(plan.victims.len(), 2);
}

#[test]
fn class_eviction_and_sampling_keep_placements_valid() {
    // Only two class indexes for five constraint sets: evicted classes are rebuilt and the
    // answers stay those of a full scan.
    let cfg = SchedulerConfig {
        max_indexed_classes: 2,
        ..Default::default()
    };
    let mut indexed = Scheduler::new(cfg.clone());
    let mut scanned = Scheduler::new(SchedulerConfig {
        use_index: false,
        ..cfg
    });
    for i in 0..200 {
        let mut n = zoned(&format!("n{i}"), ["a", "b"][i % 2], 4000, 16 * GI);
        n.taints = vec![taint(&format!("t{}", i % 5), "", "NoSchedule")];
        indexed.upsert_node(n.clone());
        scanned.upsert_node(n);
    }
    for k in 0..500 {
        let mut p = replica(&format!("g{}", k % 3), k, 100, 256 << 20);
        p.tolerations = vec![toleration(&format!("t{}", k % 5), "")];
        assert_eq!(indexed.schedule(&p), scanned.schedule(&p));
    }

    // Sampling 10% (Kubernetes' percentageOfNodesToScore): valid, deterministic placements.
    let run = || {
        let mut s = Scheduler::new(SchedulerConfig {
            percentage_of_nodes_to_score: 10,
            ..Default::default()
        });
        for i in 0..1000 {
            s.upsert_node(node(&format!("n{i}"), 2000, 8 * GI));
        }
        let placed: Vec<String> = (0..1200)
            .map(|k| s.schedule(&pod(&format!("default/p{k}"), 500, GI)).unwrap())
            .collect();
        for i in 0..1000 {
            let u = s.node_usage(&format!("n{i}")).unwrap();
            assert!(u.req_cpu <= u.alloc_cpu);
        }
        placed
    };
    let a = run();
    assert_eq!(a, run());
    let distinct: std::collections::BTreeSet<&String> = a.iter().collect();
    assert!(
        distinct.len() > 500,
        "sampling rotates over the cluster: {}",
        distinct.len()
    );
}

#[test]
fn scheduler_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Scheduler>();
}

#![allow(dead_code)]

use podd_api::Taint;
use podd_api::Toleration;
use podd_scheduler::{NodeInfo, PodInfo, ZONE_LABEL};
use std::collections::BTreeMap;

pub const GI: u64 = 1 << 30;

pub fn node(name: &str, cpu: u64, mem: u64) -> NodeInfo {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), name.to_string());
    NodeInfo {
        name: name.into(),
        allocatable_cpu_millis: cpu,
        allocatable_memory: mem,
        max_pods: 110,
        labels,
        taints: vec![],
        ready: true,
        unschedulable: false,
    }
}

pub fn zoned(name: &str, zone: &str, cpu: u64, mem: u64) -> NodeInfo {
    let mut n = node(name, cpu, mem);
    n.labels.insert(ZONE_LABEL.into(), zone.into());
    n
}

pub fn pod(key: &str, cpu: u64, mem: u64) -> PodInfo {
    PodInfo {
        key: key.into(),
        cpu_millis: cpu,
        memory: mem,
        ..Default::default()
    }
}

pub fn replica(group: &str, i: usize, cpu: u64, mem: u64) -> PodInfo {
    PodInfo {
        spread_group: Some(group.into()),
        ..pod(&format!("default/{group}-{i}"), cpu, mem)
    }
}

pub fn taint(k: &str, v: &str, effect: &str) -> Taint {
    Taint {
        key: k.into(),
        value: Some(v.into()),
        effect: effect.into(),
        time_added: None,
    }
}

pub fn toleration(k: &str, v: &str) -> Toleration {
    Toleration {
        key: Some(k.into()),
        operator: Some("Equal".into()),
        value: Some(v.into()),
        effect: None,
        toleration_seconds: None,
    }
}

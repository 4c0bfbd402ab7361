//! The rows `podctl get` prints for each kind, as kubectl prints them.

use crate::age::age;
use crate::table::Table;
use podd_api::pod::{ContainerState, PodPhase};
use podd_api::{Deployment, Endpoints, HorizontalPodAutoscaler, Node, Pod, Service};
use std::time::SystemTime;

/// kubectl's STATUS column: a waiting/terminated reason wins over the phase.
pub fn pod_status(p: &Pod) -> String {
    if p.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    for cs in &p.status.container_statuses {
        match &cs.state {
            ContainerState::Terminated { reason, .. }
                if !reason.is_empty() && p.status.phase != PodPhase::Succeeded =>
            {
                return reason.clone();
            }
            ContainerState::Waiting { reason, .. } if !reason.is_empty() => {
                return reason.clone();
            }
            _ => {}
        }
    }
    if !p.status.reason.is_empty() {
        return p.status.reason.clone();
    }
    format!("{:?}", p.status.phase)
}

pub fn pods(items: &[Pod], wide: bool, now: SystemTime) -> Table {
    let mut headers = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if wide {
        headers.extend(["IP", "NODE"]);
    }
    let mut t = Table::new(headers);
    for p in items {
        let total = p.spec.containers.len();
        let ready = p
            .status
            .container_statuses
            .iter()
            .filter(|c| c.ready)
            .count();
        let restarts: u32 = p
            .status
            .container_statuses
            .iter()
            .map(|c| c.restart_count)
            .sum();
        let mut row = vec![
            p.metadata.name.clone(),
            format!("{ready}/{total}"),
            pod_status(p),
            restarts.to_string(),
            age(p.metadata.creation_timestamp.as_deref(), now),
        ];
        if wide {
            row.push(or_none(&p.status.pod_ip));
            row.push(or_none(&p.spec.node_name));
        }
        t.push(row);
    }
    t
}

pub fn deployments(items: &[Deployment], wide: bool, now: SystemTime) -> Table {
    let mut headers = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
    if wide {
        headers.extend(["IMAGES", "SELECTOR"]);
    }
    let mut t = Table::new(headers);
    for d in items {
        let mut row = vec![
            d.metadata.name.clone(),
            format!("{}/{}", d.status.ready_replicas, d.spec.replicas),
            d.status.updated_replicas.to_string(),
            d.status.available_replicas.to_string(),
            age(d.metadata.creation_timestamp.as_deref(), now),
        ];
        if wide {
            let images: Vec<&str> = d
                .spec
                .template
                .spec
                .containers
                .iter()
                .map(|c| c.image.as_str())
                .collect();
            row.push(images.join(","));
            row.push(join_labels(d.spec.selector.match_labels.iter()));
        }
        t.push(row);
    }
    t
}

pub fn services(items: &[Service], wide: bool, now: SystemTime) -> Table {
    let mut headers = vec!["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE"];
    if wide {
        headers.push("SELECTOR");
    }
    let mut t = Table::new(headers);
    for s in items {
        let ports: Vec<String> = s
            .spec
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.port, protocol(p.protocol)))
            .collect();
        let mut row = vec![
            s.metadata.name.clone(),
            "ClusterIP".into(),
            or_none(&s.spec.cluster_ip),
            ports.join(","),
            age(s.metadata.creation_timestamp.as_deref(), now),
        ];
        if wide {
            row.push(join_labels(s.spec.selector.iter()));
        }
        t.push(row);
    }
    t
}

pub fn endpoints(items: &[Endpoints], now: SystemTime) -> Table {
    let mut t = Table::new(vec!["NAME", "ENDPOINTS", "AGE"]);
    for e in items {
        let mut eps = Vec::new();
        for s in &e.subsets {
            for a in &s.addresses {
                for p in &s.ports {
                    eps.push(format!("{}:{}", a.ip, p.port));
                }
            }
        }
        let shown = if eps.len() > 3 {
            format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
        } else if eps.is_empty() {
            "<none>".into()
        } else {
            eps.join(",")
        };
        t.push(vec![
            e.metadata.name.clone(),
            shown,
            age(e.metadata.creation_timestamp.as_deref(), now),
        ]);
    }
    t
}

pub fn nodes(items: &[Node], wide: bool, now: SystemTime) -> Table {
    let mut headers = vec!["NAME", "STATUS", "CPU", "MEMORY", "AGE"];
    if wide {
        headers.extend(["INTERNAL-IP", "POD-CIDR"]);
    }
    let mut t = Table::new(headers);
    for n in items {
        let mut status = if n.is_ready() { "Ready" } else { "NotReady" }.to_string();
        if n.spec.unschedulable {
            status.push_str(",SchedulingDisabled");
        }
        let mut row = vec![
            n.metadata.name.clone(),
            status,
            n.status.allocatable.cpu.to_string(),
            n.status.allocatable.memory.to_string(),
            age(n.metadata.creation_timestamp.as_deref(), now),
        ];
        if wide {
            let ip = n
                .status
                .addresses
                .iter()
                .find(|a| a.kind == "InternalIP")
                .map(|a| a.address.clone())
                .unwrap_or_else(|| "<none>".into());
            row.push(ip);
            row.push(or_none(&n.spec.pod_cidr));
        }
        t.push(row);
    }
    t
}

pub fn hpas(items: &[HorizontalPodAutoscaler], now: SystemTime) -> Table {
    let mut t = Table::new(vec![
        "NAME",
        "REFERENCE",
        "TARGETS",
        "MINPODS",
        "MAXPODS",
        "REPLICAS",
        "AGE",
    ]);
    for h in items {
        let current = h
            .status
            .current_cpu_utilization_percentage
            .map(|c| format!("{c}%"))
            .unwrap_or_else(|| "<unknown>".into());
        t.push(vec![
            h.metadata.name.clone(),
            format!(
                "{}/{}",
                h.spec.scale_target_ref.kind, h.spec.scale_target_ref.name
            ),
            format!("{current}/{}%", h.spec.target_cpu_utilization_percentage),
            h.spec.min_replicas.to_string(),
            h.spec.max_replicas.to_string(),
            h.status.current_replicas.to_string(),
            age(h.metadata.creation_timestamp.as_deref(), now),
        ]);
    }
    t
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

fn protocol(p: podd_api::pod::Protocol) -> &'static str {
    match p {
        podd_api::pod::Protocol::Tcp => "TCP",
        podd_api::pod::Protocol::Udp => "UDP",
    }
}

fn join_labels<'a>(it: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let v: Vec<String> = it.map(|(k, v)| format!("{k}={v}")).collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_rows_show_readiness_restarts_and_reasons() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": "10.244.2.5", "containerStatuses": [
                {"name": "c", "ready": false, "restartCount": 3,
                 "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ]}
        }))
        .unwrap();
        let now = crate::age::parse_rfc3339("2026-01-01T00:05:00Z").unwrap();
        let out = pods(&[pod], true, now).render();
        let row = out.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "web-1",
                "0/1",
                "OOMKilled",
                "3",
                "5m0s",
                "10.244.2.5",
                "node-2"
            ]
        );
    }
}

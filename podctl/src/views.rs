//! The rows `podctl get` prints for each kind, with kubectl's columns.

use crate::age::{age, human, since};
use crate::table::Table;
use podd_api::jiff::Timestamp;
use podd_api::resources::{node_is_ready, pod_node, pod_phase};
use podd_api::{
    Deployment, EndpointSlice, Endpoints, Event, HorizontalPodAutoscaler, Job, LabelSelector,
    Lease, Node, Object, Pod, ReplicaSet, Service,
};
use std::collections::BTreeMap;

/// kubectl's STATUS column of a pod (its `printPod`): a container's waiting or terminated
/// reason wins over the pod's reason, which wins over the phase; Terminating while deleted.
pub fn pod_status(p: &Pod) -> String {
    let status = p.status.clone().unwrap_or_default();
    let mut reason = status
        .reason
        .clone()
        .unwrap_or_else(|| pod_phase(p).to_string());
    let mut has_running = false;
    for cs in status.container_statuses.iter().flatten().rev() {
        let state = cs.state.clone().unwrap_or_default();
        if let Some(w) = state.waiting.as_ref().and_then(|w| w.reason.clone()) {
            reason = w;
        } else if let Some(t) = &state.terminated {
            reason = match (&t.reason, t.signal) {
                (Some(r), _) => r.clone(),
                (None, Some(s)) if s != 0 => format!("Signal:{s}"),
                (None, _) => format!("ExitCode:{}", t.exit_code),
            };
        } else if cs.ready && state.running.is_some() {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        reason = if podd_api::resources::pod_is_ready(p) {
            "Running".into()
        } else {
            "NotReady".into()
        };
    }
    if p.metadata.deletion_timestamp.is_some() {
        return if status.reason.as_deref() == Some("NodeLost") {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

/// kubectl's RESTARTS: the sum, and how long ago the last restart was (`3 (5m ago)`).
fn restarts(p: &Pod, now: Timestamp) -> String {
    let statuses = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    let mut total = 0;
    let mut last: Option<Timestamp> = None;
    for cs in statuses.into_iter().flatten() {
        total += cs.restart_count;
        let finished = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
            .map(|t| t.0);
        last = last.max(finished);
    }
    match last {
        Some(t) if total > 0 => format!("{total} ({} ago)", human(since(t, now))),
        _ => total.to_string(),
    }
}

pub fn pods(items: &[Pod], wide: bool, now: Timestamp) -> Table {
    let mut headers = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if wide {
        headers.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
    }
    let mut t = Table::new(headers);
    for p in items {
        let total = p.spec.as_ref().map_or(0, |s| s.containers.len());
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| cs.iter().filter(|c| c.ready).count());
        let mut row = vec![
            name(p),
            format!("{ready}/{total}"),
            pod_status(p),
            restarts(p, now),
            age(p.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.as_deref());
            row.push(or_none(ip));
            row.push(or_none(Some(pod_node(p))));
            row.push(or_none(
                p.status
                    .as_ref()
                    .and_then(|s| s.nominated_node_name.as_deref()),
            ));
            row.push("<none>".into());
        }
        t.push(row);
    }
    t
}

pub fn deployments(items: &[Deployment], wide: bool, now: Timestamp) -> Table {
    let mut headers = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
    if wide {
        headers.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
    }
    let mut t = Table::new(headers);
    for d in items {
        let spec = d.spec.clone().unwrap_or_default();
        let status = d.status.clone().unwrap_or_default();
        let mut row = vec![
            name(d),
            format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                spec.replicas.unwrap_or(1)
            ),
            status.updated_replicas.unwrap_or(0).to_string(),
            status.available_replicas.unwrap_or(0).to_string(),
            age(d.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            let (names, images) = containers(spec.template.spec.as_ref());
            row.extend([names, images, selector_text(&spec.selector)]);
        }
        t.push(row);
    }
    t
}

pub fn replicasets(items: &[ReplicaSet], wide: bool, now: Timestamp) -> Table {
    let mut headers = vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"];
    if wide {
        headers.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
    }
    let mut t = Table::new(headers);
    for r in items {
        let spec = r.spec.clone().unwrap_or_default();
        let status = r.status.clone().unwrap_or_default();
        let mut row = vec![
            name(r),
            spec.replicas.unwrap_or(1).to_string(),
            status.replicas.to_string(),
            status.ready_replicas.unwrap_or(0).to_string(),
            age(r.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            let (names, images) = containers(spec.template.as_ref().and_then(|t| t.spec.as_ref()));
            row.extend([names, images, selector_text(&spec.selector)]);
        }
        t.push(row);
    }
    t
}

pub fn daemonsets(items: &[podd_api::DaemonSet], wide: bool, now: Timestamp) -> Table {
    let mut headers = vec![
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "NODE SELECTOR",
        "AGE",
    ];
    if wide {
        headers.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
    }
    let mut t = Table::new(headers);
    for d in items {
        let spec = d.spec.clone().unwrap_or_default();
        let st = d.status.clone().unwrap_or_default();
        let pod_spec = spec.template.spec.as_ref();
        let node_selector: Vec<String> = pod_spec
            .and_then(|p| p.node_selector.as_ref())
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut row = vec![
            name(d),
            st.desired_number_scheduled.to_string(),
            st.current_number_scheduled.to_string(),
            st.number_ready.to_string(),
            st.updated_number_scheduled.unwrap_or(0).to_string(),
            st.number_available.unwrap_or(0).to_string(),
            if node_selector.is_empty() {
                "<none>".into()
            } else {
                node_selector.join(",")
            },
            age(d.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            let (names, images) = containers(pod_spec);
            row.extend([names, images, selector_text(&spec.selector)]);
        }
        t.push(row);
    }
    t
}

pub fn services(items: &[Service], wide: bool, now: Timestamp) -> Table {
    let mut headers = vec![
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ];
    if wide {
        headers.push("SELECTOR");
    }
    let mut t = Table::new(headers);
    for s in items {
        let spec = s.spec.clone().unwrap_or_default();
        let ports: Vec<String> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                match p.node_port {
                    Some(n) => format!("{}:{n}/{proto}", p.port),
                    None => format!("{}/{proto}", p.port),
                }
            })
            .collect();
        let mut row = vec![
            name(s),
            spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
            or_none(spec.cluster_ip.as_deref()),
            external_ips(s),
            if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(",")
            },
            age(s.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            row.push(join_labels(spec.selector.as_ref()));
        }
        t.push(row);
    }
    t
}

/// kubectl's EXTERNAL-IP: the spec's externalIPs and the load balancer's ingress, or
/// `<pending>` for a LoadBalancer without one.
fn external_ips(s: &Service) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let mut ips: Vec<String> = spec.external_ips.unwrap_or_default();
    let ingress = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for i in ingress.into_iter().flatten() {
        if let Some(ip) = i.ip.clone().or_else(|| i.hostname.clone()) {
            ips.push(ip);
        }
    }
    if !ips.is_empty() {
        ips.join(",")
    } else if spec.type_.as_deref() == Some("LoadBalancer") {
        "<pending>".into()
    } else {
        "<none>".into()
    }
}

pub fn endpoints(items: &[Endpoints], now: Timestamp) -> Table {
    let mut t = Table::new(vec!["NAME", "ENDPOINTS", "AGE"]);
    for e in items {
        let mut eps = Vec::new();
        for s in e.subsets.iter().flatten() {
            for a in s.addresses.iter().flatten() {
                for p in s.ports.iter().flatten() {
                    eps.push(format!("{}:{}", a.ip, p.port));
                }
            }
        }
        t.push(vec![
            name(e),
            shorten(eps),
            age(e.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    t
}

pub fn endpointslices(items: &[EndpointSlice], now: Timestamp) -> Table {
    let mut t = Table::new(vec!["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]);
    for s in items {
        let ports: Vec<String> = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.map(|n| n.to_string()))
            .collect();
        let addrs: Vec<String> = s
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        t.push(vec![
            name(s),
            s.address_type.clone(),
            if ports.is_empty() {
                "<unset>".into()
            } else {
                ports.join(",")
            },
            shorten(addrs),
            age(s.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    t
}

pub fn nodes(items: &[Node], wide: bool, now: Timestamp) -> Table {
    let mut headers = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
    if wide {
        headers.extend([
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME",
        ]);
    }
    let mut t = Table::new(headers);
    for n in items {
        let mut status = if node_is_ready(n) {
            "Ready"
        } else {
            "NotReady"
        }
        .to_string();
        if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            status.push_str(",SchedulingDisabled");
        }
        let roles: Vec<&str> = n
            .metadata
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .collect();
        let info = n
            .status
            .as_ref()
            .and_then(|s| s.node_info.clone())
            .unwrap_or_default();
        let mut row = vec![
            name(n),
            status,
            if roles.is_empty() {
                "<none>".into()
            } else {
                roles.join(",")
            },
            age(n.metadata.creation_timestamp.as_ref(), now),
            info.kubelet_version.clone(),
        ];
        if wide {
            let address = |kind: &str| {
                n.status
                    .as_ref()
                    .and_then(|s| s.addresses.as_ref())
                    .and_then(|a| a.iter().find(|a| a.type_ == kind))
                    .map(|a| a.address.clone())
                    .unwrap_or_else(|| "<none>".into())
            };
            row.extend([
                address("InternalIP"),
                address("ExternalIP"),
                info.os_image,
                info.kernel_version,
                info.container_runtime_version,
            ]);
        }
        t.push(row);
    }
    t
}

pub fn hpas(items: &[HorizontalPodAutoscaler], now: Timestamp) -> Table {
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
        let spec = h.spec.clone().unwrap_or_default();
        let status = h.status.clone().unwrap_or_default();
        t.push(vec![
            name(h),
            format!(
                "{}/{}",
                spec.scale_target_ref.kind, spec.scale_target_ref.name
            ),
            hpa_targets(h),
            spec.min_replicas.unwrap_or(1).to_string(),
            spec.max_replicas.to_string(),
            status.current_replicas.unwrap_or(0).to_string(),
            age(h.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    t
}

/// kubectl's TARGETS of an autoscaling/v2 HPA: `cpu: 30%/50%` per Resource metric, the
/// current value `<unknown>` until the controller has measured it.
fn hpa_targets(h: &HorizontalPodAutoscaler) -> String {
    let specs = h
        .spec
        .as_ref()
        .and_then(|s| s.metrics.clone())
        .unwrap_or_default();
    let current = h
        .status
        .as_ref()
        .and_then(|s| s.current_metrics.clone())
        .unwrap_or_default();
    let out: Vec<String> = specs
        .iter()
        .filter_map(|m| m.resource.as_ref())
        .map(|r| {
            let now = current
                .iter()
                .filter_map(|c| c.resource.as_ref())
                .find(|c| c.name == r.name)
                .and_then(|c| c.current.average_utilization)
                .map(|u| format!("{u}%"))
                .unwrap_or_else(|| "<unknown>".into());
            let want = r
                .target
                .average_utilization
                .map(|u| format!("{u}%"))
                .or_else(|| r.target.average_value.as_ref().map(|q| q.0.clone()))
                .unwrap_or_else(|| "<unset>".into());
            format!("{}: {now}/{want}", r.name)
        })
        .collect();
    if out.is_empty() {
        "<none>".into()
    } else {
        out.join(", ")
    }
}

pub fn events(items: &[Event], now: Timestamp) -> Table {
    let mut t = Table::new(vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    let mut sorted: Vec<&Event> = items.iter().collect();
    sorted.sort_by_key(|e| event_time(e));
    for e in sorted {
        let obj = &e.involved_object;
        t.push(vec![
            event_time(e)
                .map(|t| human(since(t, now)))
                .unwrap_or_else(|| "<unknown>".into()),
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            format!(
                "{}/{}",
                obj.kind.as_deref().unwrap_or("").to_lowercase(),
                obj.name.as_deref().unwrap_or("")
            ),
            e.message.clone().unwrap_or_default(),
        ]);
    }
    t
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// kubectl's configmap columns: DATA counts data and binaryData keys.
pub fn configmaps(items: &[podd_api::ConfigMap], now: Timestamp) -> Table {
    let mut t = Table::new(vec!["NAME", "DATA", "AGE"]);
    for c in items {
        let keys =
            c.data.as_ref().map_or(0, |d| d.len()) + c.binary_data.as_ref().map_or(0, |d| d.len());
        t.push(vec![
            name(c),
            keys.to_string(),
            age(c.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    t
}

/// kubectl's secret columns: NAME TYPE DATA AGE.
pub fn secrets(items: &[podd_api::Secret], now: Timestamp) -> Table {
    let mut t = Table::new(vec!["NAME", "TYPE", "DATA", "AGE"]);
    for x in items {
        t.push(vec![
            name(x),
            x.type_.clone().unwrap_or_default(),
            x.data.as_ref().map_or(0, |d| d.len()).to_string(),
            age(x.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    t
}

pub fn leases(items: &[Lease], now: Timestamp) -> Table {
    let mut t = Table::new(vec!["NAME", "HOLDER", "AGE"]);
    for l in items {
        t.push(vec![
            name(l),
            l.spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            age(l.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    t
}

/// kubectl's namespace columns: STATUS is the phase (Active, Terminating).
pub fn namespaces(items: &[podd_api::Namespace], now: Timestamp) -> Table {
    let mut t = Table::new(vec!["NAME", "STATUS", "AGE"]);
    for n in items {
        t.push(vec![
            name(n),
            n.status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
            age(n.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    t
}

/// kubectl's job columns: STATUS from the conditions, COMPLETIONS succeeded/completions.
/// kubectl's cronjob columns: NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE.
pub fn cronjobs(items: &[podd_api::CronJob], now: Timestamp) -> Table {
    let mut t = Table::new(vec![
        "NAME",
        "SCHEDULE",
        "TIMEZONE",
        "SUSPEND",
        "ACTIVE",
        "LAST SCHEDULE",
        "AGE",
    ]);
    for c in items {
        let spec = c.spec.clone().unwrap_or_default();
        let st = c.status.clone().unwrap_or_default();
        let suspend = match spec.suspend {
            None => "<unset>",
            Some(true) => "True",
            Some(false) => "False",
        };
        let last = st
            .last_schedule_time
            .map_or("<none>".to_string(), |l| human(since(l.0, now)));
        t.push(vec![
            name(c),
            spec.schedule,
            spec.time_zone.unwrap_or_else(|| "<none>".into()),
            suspend.to_string(),
            st.active.map_or(0, |a| a.len()).to_string(),
            last,
            age(c.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    t
}

pub fn jobs(items: &[Job], now: Timestamp) -> Table {
    let mut t = Table::new(vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]);
    for j in items {
        let spec = j.spec.clone().unwrap_or_default();
        let st = j.status.clone().unwrap_or_default();
        let has = |ty: &str| {
            st.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == ty && c.status == "True")
        };
        let status = ["Complete", "Failed", "Suspended"]
            .into_iter()
            .find(|c| has(c))
            .unwrap_or("Running");
        let duration = match (&st.start_time, &st.completion_time) {
            (Some(s), Some(e)) => human(since(s.0, e.0)),
            (Some(s), None) => human(since(s.0, now)),
            (None, _) => String::new(),
        };
        t.push(vec![
            name(j),
            status.to_string(),
            format!(
                "{}/{}",
                st.succeeded.unwrap_or(0),
                spec.completions.unwrap_or(1)
            ),
            duration,
            age(j.metadata.creation_timestamp.as_ref(), now),
        ]);
    }
    t
}

fn name<T: Object>(o: &T) -> String {
    o.metadata().name.clone().unwrap_or_default()
}

fn containers(spec: Option<&podd_api::PodSpec>) -> (String, String) {
    let cs = spec.map_or(&[][..], |s| &s.containers[..]);
    let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c.image.as_deref()).collect();
    (names.join(","), images.join(","))
}

/// A label selector as kubectl writes it, `<none>` when empty.
fn selector_text(s: &LabelSelector) -> String {
    let q = selector_query(s);
    if q.is_empty() { "<none>".into() } else { q }
}

/// A label selector in the `labelSelector` query syntax: `app=web,tier in (a,b)`.
pub fn selector_query(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => format!("{} {op} ({values})", e.key),
        });
    }
    parts.join(",")
}

/// kubectl shows three endpoints and counts the rest.
fn shorten(eps: Vec<String>) -> String {
    if eps.len() > 3 {
        format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
    } else if eps.is_empty() {
        "<none>".into()
    } else {
        eps.join(",")
    }
}

fn or_none(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "<none>".into(),
    }
}

fn join_labels(m: Option<&BTreeMap<String, String>>) -> String {
    let v: Vec<String> = m
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-01T00:05:00Z".parse().unwrap()
    }

    #[test]
    fn pod_rows_show_readiness_restarts_and_reasons() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": "10.244.2.5", "containerStatuses": [
                {"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 3,
                 "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                 "lastState": {"terminated": {"exitCode": 137, "finishedAt": "2026-01-01T00:04:00Z"}}}
            ]}
        }))
        .unwrap();
        let out = pods(&[pod], true, now()).render();
        assert!(out.starts_with("NAME"), "{out}");
        let row = out.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "web-1",
                "0/1",
                "OOMKilled",
                "3",
                "(60s",
                "ago)",
                "5m0s",
                "10.244.2.5",
                "node-2",
                "<none>",
                "<none>"
            ]
        );
    }

    #[test]
    fn terminating_and_exit_codes() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 2}}}]}
        }))
        .unwrap();
        assert_eq!(pod_status(&pod), "ExitCode:2");
        let mut gone = pod.clone();
        gone.metadata.deletion_timestamp = Some(podd_api::Time(now()));
        assert_eq!(pod_status(&gone), "Terminating");
    }

    #[test]
    fn services_and_hpas_as_kubectl_prints_them() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}
        }))
        .unwrap();
        let out = services(&[svc], true, now()).render();
        let cells: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "web",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30080/TCP",
                "<unknown>",
                "app=web"
            ]
        );
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                     "minReplicas": 2, "maxReplicas": 6,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}}]}
        }))
        .unwrap();
        let out = hpas(&[hpa], now()).render();
        assert!(
            out.contains("Deployment/web") && out.contains("cpu: <unknown>/50%"),
            "{out}"
        );
    }
}

//! The cells of one row, per kind, as kube-apiserver's print functions compute them.

use super::{age, since};
use podd_api::jiff::Timestamp;
use podd_api::k8s_openapi::api::autoscaling::v2::{MetricTarget, MetricValueStatus};
use podd_api::{
    Deployment, EndpointSlice, Endpoints, Event, HorizontalPodAutoscaler, Job, Kind, LabelSelector,
    Lease, MetricSpec, MetricStatus, Node, Pod, ReplicaSet, Service,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub(super) struct Row {
    pub cells: Vec<Value>,
    pub conditions: Vec<Value>,
}

fn cells(cells: Vec<Value>) -> Row {
    Row {
        cells,
        conditions: Vec::new(),
    }
}

/// The row of one object; an object that does not decode as `kind` gets just its name.
pub(super) fn row(kind: Kind, item: &Value, now: Timestamp) -> Row {
    let json = serde_json::to_vec(item).unwrap_or_default();
    row_of_json(kind, &json, now).unwrap_or_else(|| {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        cells(vec![name.into()])
    })
}

/// The row of one stored object given as its JSON, decoded once straight into its type (a
/// list's rows: no intermediate `Value`); None when it does not decode as `kind`.
pub(super) fn row_of_json(kind: Kind, json: &[u8], now: Timestamp) -> Option<Row> {
    fn typed<T: DeserializeOwned>(json: &[u8]) -> Option<T> {
        serde_json::from_slice(json).ok()
    }
    match kind {
        Kind::Pod => typed(json).map(|p| pod(&p, now)),
        Kind::Deployment => typed(json).map(|d| deployment(&d, now)),
        Kind::ReplicaSet => typed(json).map(|r| replica_set(&r, now)),
        Kind::Service => typed(json).map(|v| service(&v, now)),
        Kind::Endpoints => typed(json).map(|e| endpoints(&e, now)),
        Kind::EndpointSlice => typed(json).map(|e| endpoint_slice(&e, now)),
        Kind::Node => typed(json).map(|n| node(&n, now)),
        Kind::Event => typed(json).map(|e| event(&e, now)),
        Kind::HorizontalPodAutoscaler => typed(json).map(|h| hpa(&h, now)),
        Kind::Lease => typed(json).map(|l| lease(&l, now)),
        Kind::Job => typed(json).map(|j| job(&j, now)),
        Kind::CronJob => typed(json).map(|c| cron_job(&c, now)),
        Kind::DaemonSet => typed(json).map(|d| daemon_set(&d, now)),
        Kind::Namespace => typed(json).map(|n| namespace(&n, now)),
        Kind::ConfigMap => typed(json).map(|c| config_map(&c, now)),
        Kind::Secret => typed(json).map(|x| secret(&x, now)),
    }
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn or_none(v: Option<&str>) -> String {
    v.filter(|v| !v.is_empty()).unwrap_or("<none>").to_string()
}

fn name(m: &podd_api::ObjectMeta) -> Value {
    s(m.name.clone().unwrap_or_default())
}

// ---- pods ----

/// kubectl's pod STATUS, READY and RESTARTS (printPod).
fn pod(p: &Pod, now: Timestamp) -> Row {
    let spec = p.spec.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    let phase = podd_api::resources::pod_phase(p).to_string();
    let mut reason = status
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| phase.clone());
    let conditions = status.conditions.clone().unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".into();
    }
    let row_conditions = match phase.as_str() {
        "Succeeded" => vec![
            json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}),
        ],
        "Failed" => vec![
            json!({"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}),
        ],
        _ => Vec::new(),
    };

    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    };
    let total = spec.containers.len() + init_specs.iter().filter(|c| restartable(&c.name)).count();
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut restartable_restarts: i64 = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_restart: Option<Timestamp> = None;
    let finished = |c: &podd_api::ContainerStatus| {
        c.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
            .map(|t| t.0)
    };

    let mut initializing = false;
    let init_statuses = status.init_container_statuses.clone().unwrap_or_default();
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += i64::from(c.restart_count);
        if let Some(f) = finished(c) {
            last_restart = last_restart.max(Some(f));
        }
        let is_restartable = restartable(&c.name);
        if is_restartable {
            restartable_restarts += i64::from(c.restart_count);
            if let Some(f) = finished(c) {
                last_restartable_restart = last_restartable_restart.max(Some(f));
            }
        }
        let state = c.state.clone().unwrap_or_default();
        match (&state.terminated, &state.waiting) {
            (Some(t), _) if t.exit_code == 0 => continue,
            _ if is_restartable && c.started == Some(true) => {
                if c.ready {
                    ready += 1;
                }
                continue;
            }
            (Some(t), _) => {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => format!("Init:{r}"),
                    None => match t.signal.filter(|s| *s != 0) {
                        Some(sig) => format!("Init:Signal:{sig}"),
                        None => format!("Init:ExitCode:{}", t.exit_code),
                    },
                };
            }
            (None, Some(w))
                if w.reason
                    .as_deref()
                    .is_some_and(|r| !r.is_empty() && r != "PodInitializing") =>
            {
                reason = format!("Init:{}", w.reason.as_deref().unwrap_or_default());
            }
            _ => reason = format!("Init:{i}/{}", init_specs.len()),
        }
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in status.container_statuses.iter().flatten().rev() {
            restarts += i64::from(c.restart_count);
            if let Some(f) = finished(c) {
                last_restart = last_restart.max(Some(f));
            }
            let state = c.state.clone().unwrap_or_default();
            let waiting = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty());
            if let Some(w) = waiting {
                reason = w;
            } else if let Some(t) = &state.terminated {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None => match t.signal.filter(|s| *s != 0) {
                        Some(sig) => format!("Signal:{sig}"),
                        None => format!("ExitCode:{}", t.exit_code),
                    },
                };
            } else if c.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // A pod with a container still running is not Completed.
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }

    let deleting = p.metadata.deletion_timestamp.is_some();
    if deleting && status.reason.as_deref() == Some("NodeLost") {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(&at), now)),
        _ => restarts.to_string(),
    };
    let ip = status
        .pod_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .map(|ip| ip.ip.as_str());
    let gates = spec.readiness_gates.clone().unwrap_or_default();
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_ = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| c.type_ == g.condition_type)
                    .is_some_and(|c| c.status == "True")
            })
            .count();
        format!("{true_}/{}", gates.len())
    };
    Row {
        cells: vec![
            name(&p.metadata),
            s(format!("{ready}/{total}")),
            s(reason),
            s(restarts_cell),
            s(age(&p.metadata, now)),
            s(or_none(ip)),
            s(or_none(spec.node_name.as_deref())),
            s(or_none(status.nominated_node_name.as_deref())),
            s(gates_cell),
        ],
        conditions: row_conditions,
    }
}

// ---- workloads ----

/// Container names and images, comma-separated (layoutContainerCells).
fn containers_and_images(spec: Option<&podd_api::PodSpec>) -> (String, String) {
    let cs = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = cs
        .iter()
        .map(|c| c.image.as_deref().unwrap_or_default())
        .collect();
    (names.join(","), images.join(","))
}

/// `LabelSelectorAsSelector(s).String()`: requirements sorted by key; `""` selects
/// everything; a None selector selects nothing, also printed `""`.
pub(super) fn selector_string(s: Option<&LabelSelector>) -> String {
    let Some(s) = s else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={v}")))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let mut values: Vec<&str> = e.values.iter().flatten().map(String::as_str).collect();
        values.sort_unstable();
        let k = &e.key;
        let text = match e.operator.as_str() {
            "In" => format!("{k} in ({})", values.join(",")),
            "NotIn" => format!("{k} notin ({})", values.join(",")),
            "Exists" => k.clone(),
            "DoesNotExist" => format!("!{k}"),
            other => format!("{k} {other} ({})", values.join(",")),
        };
        reqs.push((k.clone(), text));
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.FormatLabelSelector`: as [`selector_string`], `<none>` when empty.
fn format_label_selector(s: Option<&LabelSelector>) -> String {
    let v = selector_string(s);
    if v.is_empty() { "<none>".into() } else { v }
}

/// `labels.FormatLabels`: `k=v` sorted by key, `<none>` when empty.
fn format_labels(m: Option<&BTreeMap<String, String>>) -> String {
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

fn deployment(d: &Deployment, now: Timestamp) -> Row {
    let spec = d.spec.clone().unwrap_or_default();
    let st = d.status.clone().unwrap_or_default();
    // The registry stores Deployments defaulted; an absent replicas is Kubernetes' default 1.
    let desired = spec.replicas.unwrap_or(1);
    let (names, images) = containers_and_images(spec.template.spec.as_ref());
    cells(vec![
        name(&d.metadata),
        s(format!("{}/{desired}", st.ready_replicas.unwrap_or(0))),
        json!(i64::from(st.updated_replicas.unwrap_or(0))),
        json!(i64::from(st.available_replicas.unwrap_or(0))),
        s(age(&d.metadata, now)),
        s(names),
        s(images),
        s(selector_string(Some(&spec.selector))),
    ])
}

fn replica_set(r: &ReplicaSet, now: Timestamp) -> Row {
    let spec = r.spec.clone().unwrap_or_default();
    let st = r.status.clone().unwrap_or_default();
    let (names, images) =
        containers_and_images(spec.template.as_ref().and_then(|t| t.spec.as_ref()));
    cells(vec![
        name(&r.metadata),
        json!(i64::from(spec.replicas.unwrap_or(1))),
        json!(i64::from(st.replicas)),
        json!(i64::from(st.ready_replicas.unwrap_or(0))),
        s(age(&r.metadata, now)),
        s(names),
        s(images),
        s(format_label_selector(Some(&spec.selector))),
    ])
}

/// kubectl's printDaemonSet: the status counts, the template's node selector.
fn daemon_set(d: &podd_api::DaemonSet, now: Timestamp) -> Row {
    let spec = d.spec.clone().unwrap_or_default();
    let st = d.status.clone().unwrap_or_default();
    let pod_spec = spec.template.spec.as_ref();
    let (names, images) = containers_and_images(pod_spec);
    cells(vec![
        name(&d.metadata),
        json!(i64::from(st.desired_number_scheduled)),
        json!(i64::from(st.current_number_scheduled)),
        json!(i64::from(st.number_ready)),
        json!(i64::from(st.updated_number_scheduled.unwrap_or(0))),
        json!(i64::from(st.number_available.unwrap_or(0))),
        s(format_labels(
            pod_spec.and_then(|p| p.node_selector.as_ref()),
        )),
        s(age(&d.metadata, now)),
        s(names),
        s(images),
        s(format_label_selector(Some(&spec.selector))),
    ])
}

/// kubectl's printJob: STATUS from the conditions, COMPLETIONS `succeeded/completions`,
/// DURATION from startTime to completionTime (or now).
/// printCronJob: SUSPEND is `<unset>` when the field is, LAST SCHEDULE `<none>` before the
/// first run.
fn cron_job(c: &podd_api::CronJob, now: Timestamp) -> Row {
    let spec = c.spec.clone().unwrap_or_default();
    let st = c.status.clone().unwrap_or_default();
    let suspend = match spec.suspend {
        None => "<unset>",
        Some(true) => "True",
        Some(false) => "False",
    };
    let last = match &st.last_schedule_time {
        Some(t) => since(Some(&t.0), now),
        None => "<none>".into(),
    };
    let job = spec.job_template.spec.unwrap_or_default();
    let (names, images) = containers_and_images(job.template.spec.as_ref());
    cells(vec![
        name(&c.metadata),
        s(spec.schedule),
        s(or_none(spec.time_zone.as_deref())),
        s(suspend),
        json!(st.active.map_or(0, |a| a.len() as i64)),
        s(last),
        s(age(&c.metadata, now)),
        s(names),
        s(images),
        s(selector_string(job.selector.as_ref())),
    ])
}

fn job(j: &Job, now: Timestamp) -> Row {
    let spec = j.spec.clone().unwrap_or_default();
    let st = j.status.clone().unwrap_or_default();
    let succeeded = st.succeeded.unwrap_or(0);
    let completions = match spec.completions {
        Some(c) => format!("{succeeded}/{c}"),
        None => match spec.parallelism.unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (&st.start_time, &st.completion_time) {
        (None, _) => String::new(),
        (Some(start), None) => super::human_duration(now.duration_since(start.0).as_secs()),
        (Some(start), Some(end)) => super::human_duration(end.0.duration_since(start.0).as_secs()),
    };
    let has = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if j.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (names, images) = containers_and_images(spec.template.spec.as_ref());
    cells(vec![
        name(&j.metadata),
        s(status),
        s(completions),
        s(duration),
        s(age(&j.metadata, now)),
        s(names),
        s(images),
        s(format_label_selector(spec.selector.as_ref())),
    ])
}

// ---- services and endpoints ----

fn service(svc: &Service, now: Timestamp) -> Row {
    let spec = svc.spec.clone().unwrap_or_default();
    let type_ = spec.type_.clone().unwrap_or_default();
    let cluster_ip = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first().cloned())
        .or_else(|| spec.cluster_ip.clone())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "<none>".into());
    let external_ips = spec.external_ips.clone().unwrap_or_default();
    let external = match type_.as_str() {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut lb: Vec<String> = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i.ip.clone()
                        .filter(|v| !v.is_empty())
                        .or_else(|| i.hostname.clone())
                })
                .collect();
            lb.sort();
            lb.dedup();
            lb.extend(external_ips);
            if lb.is_empty() {
                "<pending>".into()
            } else {
                lb.join(",")
            }
        }
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or_default();
            match p.node_port.filter(|n| *n > 0) {
                Some(np) => format!("{}:{np}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    cells(vec![
        name(&svc.metadata),
        s(type_),
        s(cluster_ip),
        s(external),
        s(if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(",")
        }),
        s(age(&svc.metadata, now)),
        s(format_labels(spec.selector.as_ref())),
    ])
}

/// At most 3 entries, then `+ N more...` (listWithMoreString).
fn list_with_more(list: Vec<String>, count: usize, empty: &str) -> String {
    const MAX: usize = 3;
    let more = count > MAX;
    let shown: Vec<String> = list.into_iter().take(MAX).collect();
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else if joined.is_empty() {
        empty.to_string()
    } else {
        joined
    }
}

fn endpoints(e: &Endpoints, now: Timestamp) -> Row {
    let subsets = e.subsets.clone().unwrap_or_default();
    let mut list = Vec::new();
    let mut count = 0;
    for ss in &subsets {
        let addrs = ss.addresses.clone().unwrap_or_default();
        let ports = ss.ports.clone().unwrap_or_default();
        if ports.is_empty() {
            // Headless services without ports.
            count += addrs.len();
            list.extend(addrs.iter().map(|a| a.ip.clone()));
            continue;
        }
        for p in &ports {
            count += addrs.len();
            list.extend(addrs.iter().map(|a| join_host_port(&a.ip, p.port)));
        }
    }
    let cell = if subsets.is_empty() {
        "<none>".to_string()
    } else {
        list_with_more(list, count, "")
    };
    cells(vec![name(&e.metadata), s(cell), s(age(&e.metadata, now))])
}

fn join_host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn endpoint_slice(e: &EndpointSlice, now: Timestamp) -> Row {
    let ports: Vec<String> = e
        .ports
        .iter()
        .flatten()
        .map(|p| match (p.port, &p.name) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => "*".into(),
        })
        .collect();
    let nports = ports.len();
    let addrs: Vec<String> = e
        .endpoints
        .iter()
        .flat_map(|ep| ep.addresses.clone())
        .collect();
    let naddrs = addrs.len();
    cells(vec![
        name(&e.metadata),
        s(e.address_type.clone()),
        s(list_with_more(ports, nports, "<unset>")),
        s(list_with_more(addrs, naddrs, "<unset>")),
        s(age(&e.metadata, now)),
    ])
}

// ---- nodes ----

fn node(n: &Node, now: Timestamp) -> Row {
    let st = n.status.clone().unwrap_or_default();
    let mut status: Vec<String> = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            if c.status == "True" {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            }
        })
        .into_iter()
        .collect();
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = n
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => Some(role.to_string()),
            Some(_) => None,
            None => (k == "kubernetes.io/role" && !v.is_empty()).then(|| v.clone()),
        })
        .collect();
    roles.sort();
    roles.dedup();
    let info = st.node_info.clone().unwrap_or_default();
    let address = |t: &str| {
        st.addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == t)
            .map_or("<none>".to_string(), |a| a.address.clone())
    };
    let unknown = |v: String| {
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v
        }
    };
    cells(vec![
        name(&n.metadata),
        s(status.join(",")),
        s(if roles.is_empty() {
            "<none>".into()
        } else {
            roles.join(",")
        }),
        s(age(&n.metadata, now)),
        s(info.kubelet_version),
        s(address("InternalIP")),
        s(address("ExternalIP")),
        s(unknown(info.os_image)),
        s(unknown(info.kernel_version)),
        s(unknown(info.container_runtime_version)),
    ])
}

// ---- events ----

fn event(e: &Event, now: Timestamp) -> Row {
    let first = match &e.first_timestamp {
        Some(t) => since(Some(&t.0), now),
        None => since(e.event_time.as_ref().map(|t| &t.0), now),
    };
    let mut last = match &e.last_timestamp {
        Some(t) => since(Some(&t.0), now),
        None => first.clone(),
    };
    let mut count = i64::from(e.count.unwrap_or(0));
    if let Some(series) = &e.series {
        last = since(series.last_observed_time.as_ref().map(|t| &t.0), now);
        count = i64::from(series.count.unwrap_or(0));
    } else if count == 0 {
        // Singleton events of the events.k8s.io API carry no count.
        count = 1;
    }
    let obj = &e.involved_object;
    let kind = obj.kind.clone().unwrap_or_default().to_lowercase();
    let target = match obj.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => format!("{kind}/{n}"),
        None => kind,
    };
    let source = e.source.clone().unwrap_or_default();
    let first_non_empty = |a: Option<String>, b: Option<String>| {
        a.filter(|v| !v.is_empty()).or(b).unwrap_or_default()
    };
    let component = first_non_empty(source.component, e.reporting_component.clone());
    let instance = first_non_empty(source.host, e.reporting_instance.clone());
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    cells(vec![
        s(last),
        s(e.type_.clone().unwrap_or_default()),
        s(e.reason.clone().unwrap_or_default()),
        s(target),
        s(obj.field_path.clone().unwrap_or_default()),
        s(source),
        s(e.message.clone().unwrap_or_default().trim()),
        s(first),
        json!(count),
        name(&e.metadata),
    ])
}

// ---- autoscalers and leases ----

fn quantity(q: Option<&podd_api::Quantity>) -> Option<String> {
    q.map(|q| q.0.clone())
}

fn utilization_or_value(
    resource: &str,
    target: &MetricTarget,
    current: Option<&MetricValueStatus>,
) -> String {
    match &target.average_value {
        Some(avg) => format!(
            "{resource}: {}/{}",
            quantity(current.and_then(|c| c.average_value.as_ref())).unwrap_or("<unknown>".into()),
            avg.0
        ),
        None => {
            let current = current
                .and_then(|c| c.average_utilization)
                .map_or("<unknown>".to_string(), |u| format!("{u}%"));
            let target = target
                .average_utilization
                .map_or("<auto>".to_string(), |u| format!("{u}%"));
            format!("{resource}: {current}/{target}")
        }
    }
}

fn value_target(target: &MetricTarget, current: Option<&MetricValueStatus>) -> String {
    match &target.average_value {
        Some(avg) => format!(
            "{}/{} (avg)",
            quantity(current.and_then(|c| c.average_value.as_ref())).unwrap_or("<unknown>".into()),
            avg.0
        ),
        None => format!(
            "{}/{}",
            quantity(current.and_then(|c| c.value.as_ref())).unwrap_or("<unknown>".into()),
            quantity(target.value.as_ref()).unwrap_or_default()
        ),
    }
}

/// formatHPAMetrics: at most 2 metrics, then `+ N more...`.
fn hpa_metrics(specs: &[MetricSpec], statuses: &[MetricStatus]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let st = statuses.get(i);
            match spec.type_.as_str() {
                "Resource" => match &spec.resource {
                    Some(r) => utilization_or_value(
                        &r.name,
                        &r.target,
                        st.and_then(|s| s.resource.as_ref()).map(|s| &s.current),
                    ),
                    None => "<unknown type>".into(),
                },
                "ContainerResource" => match &spec.container_resource {
                    Some(r) => utilization_or_value(
                        &r.name,
                        &r.target,
                        st.and_then(|s| s.container_resource.as_ref())
                            .map(|s| &s.current),
                    ),
                    None => "<unknown type>".into(),
                },
                "Pods" => match &spec.pods {
                    Some(p) => format!(
                        "{}/{}",
                        quantity(
                            st.and_then(|s| s.pods.as_ref())
                                .and_then(|s| s.current.average_value.as_ref())
                        )
                        .unwrap_or("<unknown>".into()),
                        quantity(p.target.average_value.as_ref()).unwrap_or_default()
                    ),
                    None => "<unknown type>".into(),
                },
                "External" => match &spec.external {
                    Some(x) => value_target(
                        &x.target,
                        st.and_then(|s| s.external.as_ref()).map(|s| &s.current),
                    ),
                    None => "<unknown type>".into(),
                },
                "Object" => match &spec.object {
                    Some(o) => value_target(
                        &o.target,
                        st.and_then(|s| s.object.as_ref()).map(|s| &s.current),
                    ),
                    None => "<unknown type>".into(),
                },
                _ => "<unknown type>".into(),
            }
        })
        .collect();
    const MAX: usize = 2;
    let count = list.len();
    let shown = list.into_iter().take(MAX).collect::<Vec<_>>().join(", ");
    if count > MAX {
        format!("{shown} + {} more...", count - MAX)
    } else {
        shown
    }
}

fn hpa(h: &HorizontalPodAutoscaler, now: Timestamp) -> Row {
    let spec = h.spec.clone().unwrap_or_default();
    let st = h.status.clone().unwrap_or_default();
    let reference = format!(
        "{}/{}",
        spec.scale_target_ref.kind, spec.scale_target_ref.name
    );
    let metrics = hpa_metrics(
        spec.metrics.as_deref().unwrap_or_default(),
        st.current_metrics.as_deref().unwrap_or_default(),
    );
    cells(vec![
        name(&h.metadata),
        s(reference),
        s(metrics),
        s(spec
            .min_replicas
            .map_or("<unset>".to_string(), |m| m.to_string())),
        json!(i64::from(spec.max_replicas)),
        json!(i64::from(st.current_replicas.unwrap_or(0))),
        s(age(&h.metadata, now)),
    ])
}

fn lease(l: &Lease, now: Timestamp) -> Row {
    let holder = l
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    cells(vec![name(&l.metadata), s(holder), s(age(&l.metadata, now))])
}

/// kubectl's printNamespace: NAME STATUS (the phase) AGE.
fn namespace(n: &podd_api::Namespace, now: Timestamp) -> Row {
    let phase = n.status.as_ref().and_then(|s| s.phase.clone());
    cells(vec![
        name(&n.metadata),
        s(phase.unwrap_or_default()),
        s(age(&n.metadata, now)),
    ])
}

/// kubectl's printConfigMap: DATA counts the keys of data and binaryData.
fn config_map(c: &podd_api::ConfigMap, now: Timestamp) -> Row {
    let keys =
        c.data.as_ref().map_or(0, |d| d.len()) + c.binary_data.as_ref().map_or(0, |d| d.len());
    cells(vec![
        name(&c.metadata),
        json!(keys),
        s(age(&c.metadata, now)),
    ])
}

/// kubectl's printSecret: NAME TYPE DATA (the number of keys) AGE.
fn secret(x: &podd_api::Secret, now: Timestamp) -> Row {
    cells(vec![
        name(&x.metadata),
        s(x.type_.clone().unwrap_or_default()),
        json!(x.data.as_ref().map_or(0, |d| d.len())),
        s(age(&x.metadata, now)),
    ])
}

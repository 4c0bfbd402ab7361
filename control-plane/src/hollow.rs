//! Hollow nodes, as kubemark has them: they register a Node with a capacity, renew its Lease
//! (`kube-node-lease/<node>`), watch the pods bound to them and report them Running and ready
//! with an IP from the node's pod CIDR, without creating anything; a pod being deleted is
//! confirmed gone at once (deleted with grace period 0, as a kubelet does once its containers
//! stopped). Many of them share one client (one connection pool)
//! and one pod watch, so thousands fit in one process. A node can be stopped (it stops
//! heartbeating and reporting, as if it died) and started again.

use crate::controllers::nodelifecycle::LEASE_NAMESPACE;
use futures::StreamExt;
use hyper::Method;
use podd_api::k8s_openapi::api::core::v1::NodeSystemInfo;
use podd_api::metrics::{ContainerMetrics, NodeMetrics, PodMetrics, UsageReport};
use podd_api::resources::{pod_node, pod_phase};
use podd_api::{
    Cpu, Lease, LeaseSpec, Memory, MicroTime, Node, NodeAddress, NodeCondition, NodeStatus,
    ObjectMeta, Pod, Quantity, ResourceExt, Time,
};
use podd_client::{Client, DeleteParams, ListParams, Patch, PatchParams, WatcherEvent};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct HollowConfig {
    pub cpu: Cpu,
    pub memory: Memory,
    pub max_pods: u32,
    /// How often every node renews its lease.
    pub heartbeat: Duration,
    pub labels: BTreeMap<String, String>,
    /// Status writes in flight at once, for the whole fleet.
    pub concurrency: usize,
    /// How often every node posts its usage report (`POST /apis/podd.dev/v1/nodes/<node>/usage`,
    /// what metrics.k8s.io and the autoscaler read), with the CPU set by
    /// [`HollowFleet::set_pod_cpu`] (0 otherwise). None: no reports.
    pub usage_period: Option<Duration>,
}

impl Default for HollowConfig {
    fn default() -> Self {
        HollowConfig {
            cpu: Cpu(4000),
            memory: Memory(8 << 30),
            max_pods: 110,
            heartbeat: Duration::from_millis(500),
            labels: BTreeMap::new(),
            concurrency: 64,
            usage_period: None,
        }
    }
}

struct NodeState {
    running: bool,
    /// The first address of the node's pod CIDR.
    cidr_base: u32,
    /// pod uid -> last octet offset
    ips: HashMap<String, u32>,
    next: u32,
    /// The fake node address (its InternalIP).
    host_ip: String,
    /// Which phase of the heartbeat interval the node renews in.
    phase: usize,
    /// pod uid -> (namespace, name) of the pods it reported running.
    pods: HashMap<String, (String, String)>,
}

impl NodeState {
    fn ip_for(&mut self, uid: &str) -> String {
        if let Some(o) = self.ips.get(uid) {
            return Ipv4Addr::from(self.cidr_base + o).to_string();
        }
        // .1 is the bridge; hand out .2 ..= .254, skipping ones in use.
        let used: std::collections::HashSet<u32> = self.ips.values().copied().collect();
        let mut o = self.next;
        for _ in 0..253 {
            if !(2..=254).contains(&o) {
                o = 2;
            }
            if !used.contains(&o) {
                break;
            }
            o += 1;
        }
        self.next = o + 1;
        self.ips.insert(uid.to_string(), o);
        Ipv4Addr::from(self.cidr_base + o).to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    #[error("could not register hollow node {node}: {source}")]
    Register {
        node: String,
        source: podd_client::Error,
    },
}

/// A set of hollow nodes sharing one client.
pub struct HollowFleet {
    client: Client,
    nodes: Arc<Mutex<HashMap<String, NodeState>>>,
    /// (namespace, pod name) -> CPU in millicores the pod is reported to use.
    cpu: Arc<Mutex<HashMap<(String, String), u64>>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn parse_cidr_base(cidr: &str) -> u32 {
    cidr.split('/')
        .next()
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .unwrap_or(0)
}

impl HollowFleet {
    /// Registers `names` and starts heartbeating and reporting their pods.
    pub async fn start(
        client: Client,
        names: &[String],
        config: HollowConfig,
    ) -> Result<HollowFleet, HollowError> {
        let nodes: Arc<Mutex<HashMap<String, NodeState>>> = Arc::new(Mutex::new(HashMap::new()));
        let api = client.api::<Node>(None);
        let futs = names.iter().enumerate().map(|(i, name)| {
            let api = api.clone();
            let client = client.clone();
            let config = config.clone();
            async move {
                let node = hollow_node(name, i, &config);
                let lease = hollow_lease(name);
                match client.api::<Lease>(Some(LEASE_NAMESPACE)).create(&lease).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(409) => {}
                    Err(source) => {
                        return Err(HollowError::Register {
                            node: name.clone(),
                            source,
                        });
                    }
                }
                let got = match api.create(&node).await {
                    Ok(n) => n,
                    Err(e) if e.code() == Some(409) => {
                        let patch = serde_json::json!({"status": serde_json::to_value(&node.status).unwrap_or_default()});
                        api.patch_status(name, &patch).await.map_err(|source| {
                            HollowError::Register {
                                node: name.clone(),
                                source,
                            }
                        })?
                    }
                    Err(source) => {
                        return Err(HollowError::Register {
                            node: name.clone(),
                            source,
                        });
                    }
                };
                // The status of a new object is the server's; set ours now.
                let patch = serde_json::json!({"status": serde_json::to_value(&node.status).unwrap_or_default()});
                let got = api.patch_status(name, &patch).await.unwrap_or(got);
                Ok::<_, HollowError>((name.clone(), got, i))
            }
        });
        let registered: Vec<_> = futures::stream::iter(futs)
            .buffer_unordered(config.concurrency.max(1))
            .collect()
            .await;
        {
            let mut map = nodes.lock().unwrap_or_else(|p| p.into_inner());
            for r in registered {
                let (name, node, i) = r?;
                map.insert(
                    name,
                    NodeState {
                        running: true,
                        cidr_base: parse_cidr_base(
                            node.spec
                                .as_ref()
                                .and_then(|s| s.pod_cidr.as_deref())
                                .unwrap_or_default(),
                        ),
                        ips: HashMap::new(),
                        next: 2,
                        host_ip: fake_host_ip(i),
                        phase: heartbeat_phase(i),
                        pods: HashMap::new(),
                    },
                );
            }
        }
        let (shutdown, sd_rx) = watch::channel(false);
        let cpu: Arc<Mutex<HashMap<(String, String), u64>>> = Arc::default();
        let mut tasks = vec![
            tokio::spawn(heartbeat_loop(
                client.clone(),
                nodes.clone(),
                config.clone(),
                sd_rx.clone(),
            )),
            tokio::spawn(pod_loop(
                client.clone(),
                nodes.clone(),
                config.clone(),
                sd_rx.clone(),
            )),
        ];
        if let Some(period) = config.usage_period {
            tasks.push(tokio::spawn(usage_loop(
                client.clone(),
                nodes.clone(),
                cpu.clone(),
                period,
                sd_rx,
            )));
        }
        Ok(HollowFleet {
            client,
            nodes,
            cpu,
            shutdown,
            tasks,
        })
    }

    /// Sets the CPU (millicores) a pod is reported to use from now on.
    pub fn set_pod_cpu(&self, namespace: &str, pod: &str, millis: u64) {
        self.cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((namespace.to_string(), pod.to_string()), millis);
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Simulates the node dying: no more heartbeats or pod reports.
    pub fn stop_node(&self, name: &str) {
        if let Some(n) = self.lock().get_mut(name) {
            n.running = false;
        }
    }

    /// The node comes back.
    pub fn start_node(&self, name: &str) {
        if let Some(n) = self.lock().get_mut(name) {
            n.running = true;
        }
    }

    pub fn node_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeState>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every node's loops (the Node objects stay, as after a power cut).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for HollowFleet {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A made-up node address in 192.0.2.0/24-style documentation space (never routed).
fn fake_host_ip(i: usize) -> String {
    let i = i as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i + 1).to_string()
}

fn now_time() -> Time {
    Time(podd_api::jiff::Timestamp::now())
}

fn hollow_lease(name: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(podd_api::jiff::Timestamp::now())),
            ..Default::default()
        }),
    }
}

fn hollow_node(name: &str, i: usize, config: &HollowConfig) -> Node {
    let res = std::collections::BTreeMap::from([
        ("cpu".to_string(), Quantity::from(config.cpu)),
        ("memory".to_string(), Quantity::from(config.memory)),
        ("pods".to_string(), Quantity(config.max_pods.to_string())),
    ]);
    let mut labels = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.insert("podd.io/hollow".into(), "true".into());
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now_time()),
        last_transition_time: Some(now_time()),
    };
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(res.clone()),
            allocatable: Some(res),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: fake_host_ip(i),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
            ]),
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "hollow node is posting ready status",
                ),
            ]),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH.into(),
                operating_system: "linux".into(),
                kubelet_version: "v1.34.0-podd".into(),
                kube_proxy_version: String::new(),
                container_runtime_version: "podd://0.1.0".into(),
                os_image: "hollow".into(),
                kernel_version: "hollow".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// How many phases a heartbeat interval is cut into: every node renews in its own phase, so
/// the fleet's renewals arrive evenly rather than in one burst per interval.
const HEARTBEAT_PHASES: usize = 50;

/// The phase of the node registered `index`-th.
fn heartbeat_phase(index: usize) -> usize {
    index % HEARTBEAT_PHASES
}

/// Renews every running node's lease once per `config.heartbeat`, each in its own phase of
/// the interval and independently of the others, as separate kubelets would: a slow renewal
/// delays no other node's, and a node whose previous renewal is still in flight skips a beat
/// rather than queueing another behind it.
async fn heartbeat_loop(
    client: Client,
    nodes: Arc<Mutex<HashMap<String, NodeState>>>,
    config: HollowConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let api = client.api::<Lease>(Some(LEASE_NAMESPACE));
    let sem = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let per_phase = (config.heartbeat / HEARTBEAT_PHASES as u32).max(Duration::from_millis(1));
    let give_up = (config.heartbeat * 2).max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(per_phase);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut phase = 0;
    // Owned here, so the renewals still in flight end with the loop.
    let mut renewals = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        while renewals.try_join_next().is_some() {}
        let due: Vec<String> = {
            let map = nodes.lock().unwrap_or_else(|p| p.into_inner());
            let mut busy = in_flight.lock().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .filter(|(n, s)| s.running && s.phase == phase && busy.insert((*n).clone()))
                .map(|(n, _)| n.clone())
                .collect()
        };
        phase = (phase + 1) % HEARTBEAT_PHASES;
        for name in due {
            let (api, sem, in_flight) = (api.clone(), sem.clone(), in_flight.clone());
            renewals.spawn(async move {
                if let Ok(_permit) = sem.acquire().await {
                    let patch = serde_json::json!({"spec": {
                        "renewTime": MicroTime(podd_api::jiff::Timestamp::now()),
                    }});
                    match tokio::time::timeout(give_up, api.patch(&name, &patch)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(node = %name, error = %e, "hollow heartbeat failed")
                        }
                        Err(_) => tracing::debug!(node = %name, "hollow heartbeat timed out"),
                    }
                }
                in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
            });
        }
    }
}

async fn pod_loop(
    client: Client,
    nodes: Arc<Mutex<HashMap<String, NodeState>>>,
    config: HollowConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let sem = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let api = client.api::<Pod>(None);
    let mut stream = Box::pin(podd_client::watcher(api, ListParams::default()));
    loop {
        let ev = tokio::select! {
            _ = shutdown.changed() => return,
            ev = stream.next() => ev,
        };
        let pods = match ev {
            Some(Ok(WatcherEvent::Restarted(pods))) => pods,
            Some(Ok(WatcherEvent::Applied(p))) => vec![p],
            Some(Ok(WatcherEvent::Deleted(p))) => {
                if let Some(n) = nodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(pod_node(&p))
                {
                    let uid = p.uid().unwrap_or_default();
                    n.ips.remove(&uid);
                    n.pods.remove(&uid);
                }
                continue;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "hollow pod watch error");
                continue;
            }
            None => return,
        };
        for p in pods {
            let terminating = p.metadata.deletion_timestamp.is_some();
            if pod_node(&p).is_empty() || (pod_phase(&p) != "Pending" && !terminating) {
                continue;
            }
            let (ip, host_ip) = {
                let mut map = nodes.lock().unwrap_or_else(|e| e.into_inner());
                let Some(n) = map.get_mut(pod_node(&p)) else {
                    continue;
                };
                if !n.running {
                    continue;
                }
                let uid = p.uid().unwrap_or_default();
                if terminating {
                    n.pods.remove(&uid);
                } else {
                    n.pods.insert(
                        uid.clone(),
                        (p.namespace().unwrap_or_default(), p.name_any()),
                    );
                }
                (n.ip_for(&uid), n.host_ip.clone())
            };
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            let client = client.clone();
            if terminating {
                // Nothing runs: the pod's containers are stopped the moment it is asked.
                tokio::spawn(async move {
                    let _permit = permit;
                    let api = client.api::<Pod>(p.namespace().as_deref());
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        precondition_uid: p.uid(),
                        ..Default::default()
                    };
                    if let Err(e) = api.delete_with(&p.name_any(), &dp).await
                        && !e.is_not_found()
                    {
                        tracing::debug!(pod = %p.name_any(), error = %e, "hollow could not confirm a deletion");
                    }
                });
                continue;
            }
            tokio::spawn(async move {
                let _permit = permit;
                let now = now_time();
                let uid = p.uid().unwrap_or_default();
                let statuses: Vec<serde_json::Value> = p
                    .spec
                    .iter()
                    .flat_map(|s| s.containers.iter())
                    .enumerate()
                    .map(|(i, c)| {
                        let image = c.image.clone().unwrap_or_default();
                        serde_json::json!({"name": c.name, "ready": true, "started": true,
                            "restartCount": 0, "image": image,
                            "imageID": format!("podd-local://{image}@sha256:{:064x}", 0),
                            "containerID": format!("podd://hollow-{uid}-{i}"),
                            "state": {"running": {"startedAt": now}}})
                    })
                    .collect();
                let condition = |t: &str| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now});
                let patch = serde_json::json!({"status": {
                    "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                    "startTime": now, "containerStatuses": statuses,
                    "conditions": [condition("PodScheduled"), condition("Initialized"),
                        condition("ContainersReady"), condition("Ready")],
                }});
                let api = client.api::<Pod>(p.namespace().as_deref());
                // An agent retries until its report lands (or the pod is gone).
                let mut backoff = Duration::from_millis(50);
                for _ in 0..10 {
                    match api
                        .patch_subresource(
                            &p.name_any(),
                            "status",
                            &Patch::strategic(patch.clone()),
                            &PatchParams::default(),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if e.is_not_found() => break,
                        Err(e) => {
                            tracing::debug!(pod = %p.name_any(), error = %e, "hollow status report failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            });
        }
    }
}

/// The usage report of one node: its pods with the CPU set for them.
fn usage_report(
    node: &str,
    pods: &HashMap<String, (String, String)>,
    cpu: &HashMap<(String, String), u64>,
) -> UsageReport {
    let now = Some(now_time());
    let metrics: Vec<PodMetrics> = pods
        .iter()
        .map(|(uid, (ns, name))| PodMetrics {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: Some(uid.clone()),
                ..Default::default()
            },
            timestamp: now.clone(),
            window: "10s".into(),
            containers: vec![ContainerMetrics {
                name: "c".into(),
                usage: [
                    (
                        "cpu".to_string(),
                        Quantity::from(Cpu(cpu
                            .get(&(ns.clone(), name.clone()))
                            .copied()
                            .unwrap_or(0))),
                    ),
                    ("memory".to_string(), Quantity::from(Memory(0))),
                ]
                .into(),
            }],
            ..Default::default()
        })
        .collect();
    let total: u64 = pods.values().filter_map(|k| cpu.get(k)).sum();
    UsageReport {
        node: NodeMetrics {
            metadata: ObjectMeta {
                name: Some(node.to_string()),
                ..Default::default()
            },
            timestamp: now,
            window: "10s".into(),
            usage: [
                ("cpu".to_string(), Quantity::from(Cpu(total))),
                ("memory".to_string(), Quantity::from(Memory(0))),
            ]
            .into(),
            ..Default::default()
        },
        pods: metrics,
    }
}

/// Posts every running node's usage report once per `period`.
async fn usage_loop(
    client: Client,
    nodes: Arc<Mutex<HashMap<String, NodeState>>>,
    cpu: Arc<Mutex<HashMap<(String, String), u64>>>,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let reports: Vec<(String, UsageReport)> = {
            let map = nodes.lock().unwrap_or_else(|p| p.into_inner());
            let cpu = cpu.lock().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .filter(|(_, s)| s.running)
                .map(|(n, s)| (n.clone(), usage_report(n, &s.pods, &cpu)))
                .collect()
        };
        for (node, report) in reports {
            let body = serde_json::to_vec(&report).unwrap_or_default();
            let path = format!("/apis/podd.dev/v1/nodes/{node}/usage");
            match client
                .raw(Method::POST, &path, Some(body), "application/json")
                .await
            {
                Ok(r) if r.status.is_success() => {}
                Ok(r) => {
                    tracing::debug!(node = %node, status = %r.status, "hollow usage report refused")
                }
                Err(e) => tracing::debug!(node = %node, error = %e, "hollow usage report failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_phases_spread_a_fleet_evenly() {
        let mut per_phase = vec![0usize; HEARTBEAT_PHASES];
        for i in 0..5_000 {
            per_phase[heartbeat_phase(i)] += 1;
        }
        assert!(per_phase.iter().all(|n| *n == 5_000 / HEARTBEAT_PHASES));
    }
}

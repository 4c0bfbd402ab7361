//! Hollow nodes, as kubemark has them: they register a Node with a capacity, renew its lease,
//! watch the pods bound to them and report them Running and ready with an IP from the node's
//! pod CIDR, without creating anything. Many of them share one client (one connection pool)
//! and one pod watch, so thousands fit in one process. A node can be stopped (it stops
//! heartbeating and reporting, as if it died) and started again.

use futures::StreamExt;
use podd_api::node::{NodeAddress, NodeResources};
use podd_api::{Cpu, Memory, Node, NodeCondition, ObjectMeta, Pod, PodPhase};
use podd_client::{Client, ListParams, WatcherEvent};
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
            let config = config.clone();
            async move {
                let node = hollow_node(name, i, &config);
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
                        cidr_base: parse_cidr_base(&node.spec.pod_cidr),
                        ips: HashMap::new(),
                        next: 2,
                        host_ip: fake_host_ip(i),
                        phase: heartbeat_phase(i),
                    },
                );
            }
        }
        let (shutdown, sd_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(heartbeat_loop(
                client.clone(),
                nodes.clone(),
                config.clone(),
                sd_rx.clone(),
            )),
            tokio::spawn(pod_loop(client.clone(), nodes.clone(), config, sd_rx)),
        ];
        Ok(HollowFleet {
            client,
            nodes,
            shutdown,
            tasks,
        })
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

fn hollow_node(name: &str, i: usize, config: &HollowConfig) -> Node {
    let res = NodeResources {
        cpu: config.cpu,
        memory: config.memory,
        pods: config.max_pods,
    };
    let mut labels = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.insert("podd.io/hollow".into(), "true".into());
    Node {
        metadata: ObjectMeta {
            name: name.into(),
            labels,
            ..ObjectMeta::default()
        },
        spec: Default::default(),
        status: podd_api::NodeStatus {
            capacity: res.clone(),
            allocatable: res,
            addresses: vec![NodeAddress {
                kind: "InternalIP".into(),
                address: fake_host_ip(i),
            }],
            conditions: vec![NodeCondition {
                kind: "Ready".into(),
                status: "True".into(),
                reason: "HollowNodeReady".into(),
                last_transition_time: crate::time::now_rfc3339(),
            }],
            lease_renew_time: Some(crate::time::now_rfc3339()),
            usage: None,
        },
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
    let api = client.api::<Node>(None);
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
                    let patch = serde_json::json!({"status": {"leaseRenewTime": crate::time::now_rfc3339()}});
                    match tokio::time::timeout(give_up, api.patch_status(&name, &patch)).await {
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
                    .get_mut(&p.spec.node_name)
                {
                    n.ips.remove(&p.metadata.uid);
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
            if p.spec.node_name.is_empty()
                || p.status.phase != PodPhase::Pending
                || p.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let (ip, host_ip) = {
                let mut map = nodes.lock().unwrap_or_else(|e| e.into_inner());
                let Some(n) = map.get_mut(&p.spec.node_name) else {
                    continue;
                };
                if !n.running {
                    continue;
                }
                (n.ip_for(&p.metadata.uid), n.host_ip.clone())
            };
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            let client = client.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let now = crate::time::now_rfc3339();
                let statuses: Vec<serde_json::Value> = p
                    .spec
                    .containers
                    .iter()
                    .map(|c| {
                        serde_json::json!({"name": c.name, "ready": true, "restartCount": 0,
                            "image": c.image, "state": {"running": {"startedAt": now}}})
                    })
                    .collect();
                let patch = serde_json::json!({"status": {
                    "phase": "Running", "ready": true, "podIP": ip, "hostIP": host_ip,
                    "startTime": now, "containerStatuses": statuses,
                    "conditions": [{"type": "Ready", "status": "True"}],
                }});
                let api = client.api::<Pod>(Some(&p.metadata.namespace));
                // An agent retries until its report lands (or the pod is gone).
                let mut backoff = Duration::from_millis(50);
                for _ in 0..10 {
                    match api.patch_status(&p.metadata.name, &patch).await {
                        Ok(_) => break,
                        Err(e) if e.is_not_found() => break,
                        Err(e) => {
                            tracing::debug!(pod = %p.metadata.name, error = %e, "hollow status report failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            });
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

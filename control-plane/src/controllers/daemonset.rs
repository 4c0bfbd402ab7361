//! The daemonset controller (apps/v1), as Kubernetes' does: one pod of a DaemonSet on every
//! node it should run on, including nodes that join later, and none elsewhere.
//!
//! A node is eligible when the DaemonSet's pod would pass the scheduler's static filters
//! there (`spec.nodeName`, `nodeSelector`, required node affinity, taints against the
//! tolerations, `spec.unschedulable`, readiness), with the tolerations Kubernetes adds to every
//! daemon pod: `not-ready` and `unreachable` (NoExecute, so its pods stay on a node that stops
//! answering), `disk-pressure`, `memory-pressure`, `pid-pressure` and `unschedulable`
//! (NoSchedule), and `network-unavailable` for host-network pods. A pod whose node gets a
//! NoExecute taint it does not tolerate, or stops matching its selector, is deleted.
//!
//! Pods are created pinned to their node by required node affinity on the node's name
//! (`matchFields: metadata.name In [node]`, as Kubernetes does since 1.12), and the scheduler
//! binds them there. They carry a controller ownerReference and the labels
//! `controller-revision-hash` (a hash of the template) and `pod-template-generation` (the
//! DaemonSet's template generation, kept in the `deprecated.daemonset.template.generation`
//! annotation as kube-apiserver does). A pod with either of the current values is up to date.
//!
//! Updates: `RollingUpdate` replaces old pods node by node, at most `maxUnavailable` nodes
//! without an available pod at once (or, with `maxSurge`, starts the new pod beside the old one
//! and removes the old one once the new is available); `OnDelete` replaces a pod only once it
//! was deleted. No ControllerRevisions are written (so no `kubectl rollout history/undo`).

use super::deployment::template_hash;
use super::events::{self, Recorder};
use super::replicaset::controller_ref;
use super::{
    ControllerConfig, OwnerIndex, WorkQueue, bounded, create_owned_pods, delete_owned_pods, drain,
    pod_is_terminating, rev_of,
};
use crate::registry::{Registry, Subresource};
use podd_api::defaults::DAEMON_SET_TEMPLATE_GENERATION;
use podd_api::jiff::Timestamp;
use podd_api::resources::{int_or_percent, pod_condition, pod_is_ready, pod_node, pod_phase};
use podd_api::selector::label_selector_matches;
use podd_api::{
    Affinity, DaemonSet, DaemonSetStatus, Kind, Metadata, Node, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectMeta, Pod, PodSpec, ResourceExt, Toleration,
};
use podd_scheduler::{NODE_NAME_FIELD, NodeInfo, PodInfo, tolerates};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The daemonset controller's name in events.
pub const COMPONENT: &str = "daemonset-controller";
/// The label with the hash of the template a pod was made from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The label with the template generation a pod was made from.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// The tolerations Kubernetes gives every daemon pod (`AddOrUpdateDaemonPodTolerations`):
/// key and effect, operator `Exists`.
const DAEMON_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
/// Added too when the pod uses the host's network.
const HOST_NETWORK_TOLERATION: (&str, &str) =
    ("node.kubernetes.io/network-unavailable", "NoSchedule");

/// What one reconcile decided.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a pod on (a node may appear once).
    pub create: Vec<String>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    pub status: DaemonSetStatus,
    /// Events: type, reason, message.
    pub events: Vec<(&'static str, &'static str, String)>,
    /// Look again after this long (a pod becoming available after minReadySeconds).
    pub requeue_after: Option<Duration>,
}

/// Whether the DaemonSet should run a pod on a node, and whether a pod already there may stay
/// (Kubernetes' `NodeShouldRunDaemonPod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligibility {
    pub should_run: bool,
    pub should_continue_running: bool,
}

/// The template's pod spec with the daemon tolerations added (those it already has are kept).
pub fn daemon_pod_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let extra = host_network.then_some(HOST_NETWORK_TOLERATION);
    for (key, effect) in DAEMON_TOLERATIONS.iter().copied().chain(extra) {
        let has = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.operator.as_deref() == Some("Exists")
        });
        if !has {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            });
        }
    }
    spec
}

/// Whether a daemon pod with `spec` (from [`daemon_pod_spec`]) should run on `node`: the
/// scheduler's static filters decide, so that the controller never makes a pod the scheduler
/// would not place; a pod already there stays unless a NoExecute taint it does not tolerate
/// appeared or the node stopped matching its selector and affinity.
pub fn eligibility(spec: &PodSpec, node: &Node) -> Eligibility {
    let name = node.name_any();
    let no = Eligibility {
        should_run: false,
        should_continue_running: false,
    };
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return no;
    }
    let info = NodeInfo::from_node(node);
    let probe = Pod {
        spec: Some(spec.clone()),
        ..Default::default()
    };
    let pod = PodInfo::from_pod(&probe);
    let fits_affinity = podd_scheduler::selector_matches(&pod.node_selector, &info.labels)
        && pod
            .required_affinity
            .as_ref()
            .is_none_or(|a| podd_scheduler::node_affinity_matches(a, &info.name, &info.labels));
    if !fits_affinity {
        return no;
    }
    let should_run = podd_scheduler::reference::static_check(&info, &pod).is_ok();
    let should_continue_running = info
        .taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .all(|t| pod.tolerations.iter().any(|tol| tolerates(tol, t)));
    Eligibility {
        should_run,
        should_continue_running,
    }
}

/// The node a daemon pod is for: its `spec.nodeName`, or the node its required affinity
/// pins it to (`util.GetTargetNodeName`).
pub fn target_node(p: &Pod) -> Option<String> {
    let bound = pod_node(p);
    if !bound.is_empty() {
        return Some(bound.to_string());
    }
    let terms = &p
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == NODE_NAME_FIELD && r.operator == "In")
        .and_then(|r| match r.values.as_deref() {
            Some([v]) => Some(v.clone()),
            _ => None,
        })
}

/// The DaemonSet's template generation (its annotation; 1 when missing).
pub fn template_generation(ds: &DaemonSet) -> String {
    ds.annotations()
        .get(DAEMON_SET_TEMPLATE_GENERATION)
        .cloned()
        .unwrap_or_else(|| "1".into())
}

/// The hash of the DaemonSet's current template, for the `controller-revision-hash` label.
pub fn revision_hash(ds: &DaemonSet) -> String {
    let spec = ds.spec.clone().unwrap_or_default();
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    template_hash(&spec.template, collisions)
}

/// Kubernetes' `IsPodUpdated`: made from the current template, by hash or by generation.
fn is_updated(p: &Pod, hash: &str, generation: &str) -> bool {
    let labels = p.labels();
    labels.get(REVISION_HASH_LABEL).map(String::as_str) == Some(hash)
        || labels.get(TEMPLATE_GENERATION_LABEL).map(String::as_str) == Some(generation)
}

/// When a ready pod becomes available (`minReadySeconds` after it became ready); None when
/// it is not ready.
fn available_at(p: &Pod, min_ready_seconds: i32) -> Option<Timestamp> {
    if !pod_is_ready(p) {
        return None;
    }
    if min_ready_seconds <= 0 {
        return Some(Timestamp::UNIX_EPOCH);
    }
    let since = pod_condition(p, "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    Some(since + podd_api::jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)))
}

/// Scheduled pods first, then the oldest, then by name (`podByCreationTimestampAndPhase`).
fn oldest_first(pods: &mut [&Pod]) {
    pods.sort_by(|a, b| {
        pod_node(a)
            .is_empty()
            .cmp(&pod_node(b).is_empty())
            .then_with(|| {
                a.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            })
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// The new and the old pod on one node (`findUpdatedPodsOnNode`); None when there are more
/// than one of either (the manage pass cleans that up first).
fn new_and_old<'a>(
    pods: &[&'a Pod],
    hash: &str,
    generation: &str,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().copied().filter(|p| !pod_is_terminating(p)) {
        let slot = if is_updated(p, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.replace(p).is_some() {
            return None;
        }
    }
    Some((new, old))
}

/// The pure decision: given the DaemonSet, the nodes and the DaemonSet's pods, which nodes
/// get a pod, which pods go, and the status to write.
pub fn plan(ds: &DaemonSet, nodes: &[Node], pods: &[Pod], now: Timestamp) -> Plan {
    let spec = ds.spec.clone().unwrap_or_default();
    let pod_spec = daemon_pod_spec(ds);
    let hash = revision_hash(ds);
    let generation = template_generation(ds);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let available = |p: &Pod| available_at(p, min_ready).is_some_and(|t| t <= now);
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let ru = strategy.rolling_update.unwrap_or_default();
    let mut plan = Plan::default();
    let mut delete: BTreeSet<String> = BTreeSet::new();
    let mut create: Vec<String> = Vec::new();

    // The pods by the node they are for; finished pods already being deleted are gone.
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        if pod_is_terminating(p) && matches!(pod_phase(p), "Succeeded" | "Failed") {
            continue;
        }
        if let Some(node) = target_node(p) {
            by_node.entry(node).or_default().push(p);
        }
    }
    let mut nodes: Vec<&Node> = nodes.iter().collect();
    nodes.sort_by_key(|n| n.name_any());
    let eligible: BTreeMap<String, Eligibility> = nodes
        .iter()
        .map(|n| (n.name_any(), eligibility(&pod_spec, n)))
        .collect();
    let desired = eligible.values().filter(|e| e.should_run).count() as u32;
    let surge_allowed = if rolling {
        ru.max_surge
            .as_ref()
            .and_then(|v| int_or_percent(v, desired, true))
            .unwrap_or(0)
    } else {
        0
    };
    let mut max_unavailable = if rolling {
        ru.max_unavailable
            .as_ref()
            .and_then(|v| int_or_percent(v, desired, true))
            .unwrap_or(0)
    } else {
        0
    };
    if rolling && max_unavailable == 0 && surge_allowed == 0 {
        max_unavailable = 1;
    }

    // Manage: a pod where one should run, none where none may stay, one per node.
    for (node, e) in &eligible {
        let here: &[&Pod] = by_node.get(node).map_or(&[], Vec::as_slice);
        if e.should_run && here.is_empty() {
            create.push(node.clone());
        } else if e.should_continue_running {
            let mut running: Vec<&Pod> = Vec::new();
            for p in here.iter().copied().filter(|p| !pod_is_terminating(p)) {
                match pod_phase(p) {
                    "Failed" => {
                        plan.events.push((
                            events::WARNING,
                            "FailedDaemonPod",
                            format!(
                                "Found failed daemon pod {}/{} on node {node}, will try to kill it",
                                p.namespace().unwrap_or_default(),
                                p.name_any()
                            ),
                        ));
                        delete.insert(p.name_any());
                    }
                    "Succeeded" => {
                        delete.insert(p.name_any());
                    }
                    _ => running.push(p),
                }
            }
            oldest_first(&mut running);
            if surge_allowed > 0 {
                // At most one old and one new pod; the old goes once the new is available.
                let (mut oldest_new, mut oldest_old) = (None, None);
                for p in running {
                    let slot = if p.labels().get(REVISION_HASH_LABEL) == Some(&hash) {
                        &mut oldest_new
                    } else {
                        &mut oldest_old
                    };
                    if slot.is_none() {
                        *slot = Some(p);
                    } else {
                        delete.insert(p.name_any());
                    }
                }
                if let (Some(new), Some(old)) = (oldest_new, oldest_old)
                    && (!pod_is_ready(old) || available(new))
                {
                    delete.insert(old.name_any());
                }
            } else {
                delete.extend(running.iter().skip(1).map(|p| p.name_any()));
            }
        } else {
            delete.extend(
                here.iter()
                    .filter(|p| !pod_is_terminating(p))
                    .map(|p| p.name_any()),
            );
        }
    }
    // Pods for nodes that are gone.
    for (node, here) in &by_node {
        if !eligible.contains_key(node) {
            delete.extend(
                here.iter()
                    .filter(|p| !pod_is_terminating(p))
                    .map(|p| p.name_any()),
            );
        }
    }

    // Rolling update over the nodes that should run a pod or have one.
    if rolling {
        let mut update_nodes: BTreeMap<&str, &[&Pod]> = by_node
            .iter()
            .map(|(n, ps)| (n.as_str(), ps.as_slice()))
            .collect();
        for (node, e) in &eligible {
            if e.should_run {
                update_nodes.entry(node.as_str()).or_insert(&[]);
            }
        }
        if surge_allowed == 0 {
            rolling_without_surge(
                &update_nodes,
                &hash,
                &generation,
                max_unavailable as usize,
                &available,
                &mut delete,
            );
        } else {
            let surge_nodes = rolling_with_surge(
                &update_nodes,
                &eligible,
                &hash,
                &generation,
                surge_allowed as usize,
                &available,
                &mut delete,
            );
            for n in surge_nodes {
                if !create.contains(&n) {
                    create.push(n);
                }
            }
        }
    }

    // Status, from the pods as they are now (Kubernetes' updateDaemonSetStatus).
    let mut st = DaemonSetStatus {
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        observed_generation: ds.metadata.generation,
        ..Default::default()
    };
    let (mut ready, mut avail, mut updated) = (0, 0, 0);
    for (node, e) in &eligible {
        let mut here: Vec<&Pod> = by_node.get(node).cloned().unwrap_or_default();
        if !e.should_run {
            if !here.is_empty() {
                st.number_misscheduled += 1;
            }
            continue;
        }
        st.desired_number_scheduled += 1;
        if here.is_empty() {
            continue;
        }
        st.current_number_scheduled += 1;
        oldest_first(&mut here);
        let p = here[0];
        if pod_is_ready(p) {
            ready += 1;
            match available_at(p, min_ready) {
                Some(t) if t <= now => avail += 1,
                Some(t) => {
                    let wait =
                        Duration::from_millis(t.duration_since(now).as_millis().max(0) as u64);
                    plan.requeue_after = Some(plan.requeue_after.map_or(wait, |r| r.min(wait)));
                }
                None => {}
            }
        }
        if is_updated(p, &hash, &generation) {
            updated += 1;
        }
    }
    st.number_ready = ready;
    st.number_available = nonzero(avail);
    st.updated_number_scheduled = nonzero(updated);
    st.number_unavailable = nonzero(st.desired_number_scheduled - avail);
    plan.status = st;
    plan.create = create;
    plan.delete = delete.into_iter().collect();
    plan
}

/// Go's `omitempty` on the optional counts.
fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// `rollingUpdate` with `maxSurge` 0: old pods are deleted (and replaced by the manage pass
/// once gone) while at most `max_unavailable` nodes lack an available pod; an old pod that is
/// not available goes at once.
fn rolling_without_surge(
    nodes: &BTreeMap<&str, &[&Pod]>,
    hash: &str,
    generation: &str,
    max_unavailable: usize,
    available: &dyn Fn(&Pod) -> bool,
    delete: &mut BTreeSet<String>,
) {
    let mut unavailable = 0;
    let mut replace_now = Vec::new();
    let mut candidates = Vec::new();
    for pods in nodes.values() {
        match new_and_old(pods, hash, generation) {
            None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
            Some((Some(new), None)) => {
                if !available(new) {
                    unavailable += 1;
                }
            }
            Some((None, Some(old))) => {
                if !available(old) {
                    replace_now.push(old.name_any());
                } else if unavailable < max_unavailable {
                    candidates.push(old.name_any());
                }
            }
        }
    }
    let room = max_unavailable
        .saturating_sub(unavailable)
        .min(candidates.len());
    delete.extend(replace_now);
    delete.extend(candidates.into_iter().take(room));
}

/// `rollingUpdate` with `maxSurge`: a new pod starts beside the old one on up to `max_surge`
/// nodes at once (at once where the old one is not available); the old one goes when the new
/// one is available. Returns the nodes to start a new pod on.
fn rolling_with_surge(
    nodes: &BTreeMap<&str, &[&Pod]>,
    eligible: &BTreeMap<String, Eligibility>,
    hash: &str,
    generation: &str,
    max_surge: usize,
    available: &dyn Fn(&Pod) -> bool,
    delete: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut surging = 0;
    let mut start_now = Vec::new();
    let mut candidates = Vec::new();
    for (node, pods) in nodes {
        match new_and_old(pods, hash, generation) {
            None => surging += 1,
            Some((_, None)) => {}
            Some((None, Some(old))) => {
                if !available(old) {
                    if eligible.get(*node).is_some_and(|e| e.should_run) {
                        start_now.push(node.to_string());
                    } else {
                        delete.insert(old.name_any());
                    }
                } else if surging < max_surge {
                    candidates.push(node.to_string());
                }
            }
            Some((Some(new), Some(old))) => {
                if available(new) {
                    delete.insert(old.name_any());
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = max_surge.saturating_sub(surging).min(candidates.len());
    start_now.extend(candidates.into_iter().take(room));
    start_now
}

/// A pod of the DaemonSet for `node`: the template with the daemon tolerations, pinned to the
/// node by required node affinity on its name (replacing the template's required terms, which
/// the node already satisfies, as Kubernetes' `ReplaceDaemonSetPodNodeNameNodeAffinity` does).
pub fn pod_for_node(ds: &DaemonSet, node: &str) -> Pod {
    let t = ds.spec.clone().unwrap_or_default().template;
    let tm = t.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), revision_hash(ds));
    labels.insert(TEMPLATE_GENERATION_LABEL.into(), template_generation(ds));
    let mut spec = daemon_pod_spec(ds);
    let pin = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NODE_NAME_FIELD.into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(pin);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref("apps/v1", "DaemonSet", &ds.metadata)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The pods a DaemonSet controls: owned by it and matching its selector.
fn owned_pods(registry: &Registry, ds: &DaemonSet) -> Vec<Pod> {
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let selector = ds
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    registry
        .cache()
        .owned_by(Kind::Pod, &uid)
        .iter()
        .filter(|o| label_selector_matches(&selector, &o.labels))
        .filter_map(|o| o.decode())
        .collect()
}

struct Controller {
    registry: Arc<Registry>,
    events: Recorder,
    config: ControllerConfig,
}

impl Controller {
    /// Reconciles one DaemonSet against `nodes`; returns the highest revision it wrote and
    /// when to look again.
    async fn reconcile(&self, key: &str, nodes: &[Node]) -> (i64, Option<Duration>) {
        let Some(ds) = self
            .registry
            .cache()
            .get(Kind::DaemonSet, key)
            .and_then(|o| o.decode::<DaemonSet>())
        else {
            return (0, None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return (0, None);
        }
        let pods = owned_pods(&self.registry, &ds);
        let p = plan(&ds, nodes, &pods, Timestamp::now());
        let ns = ds.namespace().unwrap_or_default();
        let me = events::object_ref(&ds);
        let mut max_rev = delete_owned_pods(
            &self.registry,
            &self.events,
            &me,
            &ns,
            &p.delete,
            self.config.write_concurrency,
        )
        .await;
        let pods = p
            .create
            .iter()
            .map(|node| pod_for_node(&ds, node))
            .collect();
        max_rev = max_rev.max(
            create_owned_pods(
                &self.registry,
                &self.events,
                &me,
                pods,
                self.config.write_concurrency,
            )
            .await,
        );
        for (type_, reason, message) in &p.events {
            self.events.record(&me, type_, reason, message);
        }
        if Some(&p.status) != ds.status.as_ref() {
            let mut nd = ds.clone();
            nd.status = Some(p.status.clone());
            match self.registry.update_obj(&nd, Subresource::Status).await {
                Ok(u) => max_rev = max_rev.max(rev_of(u.metadata())),
                Err(e) => tracing::debug!(error = %e, daemonset = key, "status update failed"),
            }
        }
        (max_rev, p.requeue_after)
    }
}

fn decoded_nodes(registry: &Registry) -> Vec<Node> {
    let (all, _) = registry
        .cache()
        .snapshot(Kind::Node, &Kind::Node.key_prefix(None));
    all.iter().filter_map(|o| o.decode()).collect()
}

pub async fn run(
    registry: Arc<Registry>,
    events: Recorder,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let cache = registry.cache().clone();
    let mut sets_rx = cache.subscribe_now(Kind::DaemonSet);
    let mut pods_rx = cache.subscribe_now(Kind::Pod);
    let mut nodes_rx = cache.subscribe_now(Kind::Node);
    let mut rev_rx = cache.revision_watch();
    let ctl = Controller {
        registry: registry.clone(),
        events,
        config: config.clone(),
    };
    let mut queue = WorkQueue::default();
    let mut owners = OwnerIndex::default();
    // DaemonSets to look at again at a time (pods becoming available).
    let mut timers: BTreeMap<tokio::time::Instant, Vec<String>> = BTreeMap::new();
    let mut resync = tokio::time::interval(config.resync);
    let mut full = true;
    loop {
        if full {
            full = false;
            owners.relist(&cache, Kind::DaemonSet, &mut queue);
        }
        let now = tokio::time::Instant::now();
        while let Some(entry) = timers.first_entry() {
            if *entry.key() > now {
                break;
            }
            for k in entry.remove() {
                queue.add(k);
            }
        }
        let mut ok = drain(&mut sets_rx, Kind::DaemonSet, &registry, |ev| {
            owners.owner_event(ev, &mut queue)
        });
        ok &= drain(&mut pods_rx, Kind::Pod, &registry, |ev| {
            owners.owned_event(ev, &mut queue)
        });
        // A node that comes, goes or changes may change where every DaemonSet runs.
        let mut node_changed = false;
        ok &= drain(&mut nodes_rx, Kind::Node, &registry, |_| {
            node_changed = true
        });
        if !ok || node_changed {
            full = true;
            continue;
        }
        let ready = queue.take_ready(cache.revision());
        if !ready.is_empty() {
            let nodes = decoded_nodes(&registry);
            let futs: Vec<_> = ready
                .iter()
                .map(|k| {
                    let nodes = &nodes;
                    let ctl = &ctl;
                    async move { (k.clone(), ctl.reconcile(k, nodes).await) }
                })
                .collect();
            for (k, (rev, again)) in bounded(futs, 16).await {
                if let Some(after) = again {
                    timers.entry(now + after).or_default().push(k.clone());
                }
                if rev > 0 {
                    queue.barrier(&k, rev);
                    queue.add(k);
                }
            }
            continue;
        }
        let next_timer = timers.keys().next().copied();
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = resync.tick() => full = true,
            _ = tokio::time::sleep_until(next_timer.unwrap_or(now)), if next_timer.is_some() => {}
            r = sets_rx.recv() => match r {
                Ok(ev) => owners.owner_event(&ev, &mut queue),
                Err(_) => { sets_rx = cache.subscribe_now(Kind::DaemonSet); full = true; }
            },
            r = pods_rx.recv() => match r {
                Ok(ev) => owners.owned_event(&ev, &mut queue),
                Err(_) => { pods_rx = cache.subscribe_now(Kind::Pod); full = true; }
            },
            r = nodes_rx.recv() => match r {
                Ok(_) => full = true,
                Err(_) => { nodes_rx = cache.subscribe_now(Kind::Node); full = true; }
            },
            _ = rev_rx.changed(), if queue.has_waiting() => {}
        }
    }
}

#[cfg(test)]
mod tests;

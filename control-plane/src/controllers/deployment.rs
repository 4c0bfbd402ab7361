//! The deployment controller, as Kubernetes': a Deployment owns ReplicaSets, one per template
//! it has had (named `<deploy>-<pod-template-hash>`), and the replicaset controller owns the
//! pods. A rollout scales the new ReplicaSet up and the old ones down within
//! maxSurge/maxUnavailable (or, for Recreate, the old ones to zero first); the
//! `deployment.kubernetes.io/revision` annotation numbers the templates, so `kubectl rollout
//! history` lists them and `rollout undo` (which copies an old template back) makes that
//! ReplicaSet the new one with the next revision. `revisionHistoryLimit` old ReplicaSets are
//! kept, scaled to zero. Status carries the replica counts and the Available and Progressing
//! conditions.

use super::events::{self, Recorder};
use super::replicaset::controller_ref;
use super::{ControllerConfig, OwnerIndex, WorkQueue, drain, rev_of, rev_of_json, transition_time};
use crate::registry::{Registry, Subresource};
use podd_api::resources::int_or_percent;
use podd_api::{
    Deployment, DeploymentCondition, DeploymentStatus, IntOrString, Kind, LabelSelector, Metadata,
    ObjectMeta, PodTemplateSpec, ReplicaSet, ReplicaSetSpec, ResourceExt, Time,
};
use std::sync::Arc;
use tokio::sync::watch;

pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";

/// The deployment controller's name in events.
pub const COMPONENT: &str = "deployment-controller";

/// Kubernetes' alphabet for generated names (no vowels, no confusable characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template, as Kubernetes computes it: FNV-32a over the
/// template (here its JSON) and the collision count, its decimal digits mapped onto the safe
/// alphabet.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(t).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// A template without its `pod-template-hash` label, to compare a ReplicaSet's template with
/// the Deployment's.
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(TEMPLATE_HASH_LABEL);
        if l.is_empty() {
            m.labels = None;
        }
    }
    t
}

fn rs_template(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default()
}

pub fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_num(rs: &ReplicaSet, f: impl Fn(&podd_api::ReplicaSetStatus) -> Option<i32>) -> i32 {
    rs.status.as_ref().and_then(f).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    status_num(rs, |s| s.available_replicas)
}

/// Pods of the ReplicaSet that still exist, active or terminating.
fn pods_left(rs: &ReplicaSet) -> i32 {
    status_num(rs, |s| Some(s.replicas)) + status_num(rs, |s| s.terminating_replicas)
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// maxSurge and maxUnavailable resolved against `replicas` (Kubernetes: surge rounds up,
/// unavailable down; both zero means one unavailable).
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    if is_recreate(d) {
        return (0, 0);
    }
    let n = replicas(d).max(0) as u32;
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let quarter = IntOrString::String("25%".into());
    let surge = int_or_percent(ru.max_surge.as_ref().unwrap_or(&quarter), n, true).unwrap_or(1);
    let mut unavailable =
        int_or_percent(ru.max_unavailable.as_ref().unwrap_or(&quarter), n, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge as i32, (unavailable as i32).min(n as i32))
}

/// The replica counts the rollout wants now: the new ReplicaSet's and each old one's (by
/// name). Pure: Kubernetes' rolloutRolling / rolloutRecreate over the ReplicaSets' spec and
/// status.
pub fn scale_plan(
    d: &Deployment,
    new: &ReplicaSet,
    old: &[ReplicaSet],
) -> (i32, Vec<(String, i32)>) {
    let want = replicas(d);
    let mut old_scales: Vec<(String, i32)> = old
        .iter()
        .map(|r| (r.name_any(), spec_replicas(r)))
        .collect();
    let new_now = spec_replicas(new);
    if is_recreate(d) {
        for s in old_scales.iter_mut() {
            s.1 = 0;
        }
        // The new pods start only once every old one is gone.
        let old_left: i32 = old.iter().map(pods_left).sum();
        let new_scale = if old_left == 0 { want } else { new_now };
        return (new_scale, old_scales);
    }
    let (surge, unavailable) = surge_and_unavailable(d);
    // Scale the new ReplicaSet up within the surge.
    let total: i32 = new_now + old.iter().map(spec_replicas).sum::<i32>();
    let new_scale = if new_now > want {
        want
    } else if new_now < want && total < want + surge {
        new_now + (want + surge - total).min(want - new_now)
    } else {
        new_now
    };
    // Scale the old ones down while availability stays at replicas - maxUnavailable.
    let min_available = want - unavailable;
    let all: i32 = new_scale + old.iter().map(spec_replicas).sum::<i32>();
    let new_unavailable = (new_scale - available(new)).max(0);
    let mut budget = all - min_available - new_unavailable;
    let mut order: Vec<usize> = (0..old.len()).collect();
    order.sort_by_key(|i| {
        (
            old[*i].metadata.creation_timestamp.clone(),
            revision_of(&old[*i]),
        )
    });
    // Unavailable old replicas cost no availability: remove them first.
    for &i in &order {
        if budget <= 0 {
            break;
        }
        let unhealthy = (old_scales[i].1 - available(&old[i])).max(0).min(budget);
        old_scales[i].1 -= unhealthy;
        budget -= unhealthy;
    }
    let avail: i32 = available(new) + old.iter().map(available).sum::<i32>();
    let mut down = (avail - min_available).max(0).min(budget.max(0));
    for &i in &order {
        if down <= 0 {
            break;
        }
        let n = old_scales[i].1.min(down);
        old_scales[i].1 -= n;
        down -= n;
    }
    (new_scale, old_scales)
}

/// The ReplicaSet a Deployment's template needs, named `<deploy>-<hash>`.
fn new_replica_set(d: &Deployment, hash: &str, revision: i64, scale: i32) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let tm = template.metadata.get_or_insert_with(Default::default);
    tm.labels
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    let (surge, _) = surge_and_unavailable(d);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: tm.labels.clone(),
            annotations: Some(
                [
                    (REVISION_ANNOTATION.to_string(), revision.to_string()),
                    (
                        DESIRED_REPLICAS_ANNOTATION.to_string(),
                        replicas(d).to_string(),
                    ),
                    (
                        MAX_REPLICAS_ANNOTATION.to_string(),
                        (replicas(d) + surge).to_string(),
                    ),
                ]
                .into(),
            ),
            owner_references: Some(vec![controller_ref("apps/v1", "Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(scale),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

fn condition(
    old: &[DeploymentCondition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let prev = old.iter().find(|c| c.type_ == type_);
    let same = prev.is_some_and(|c| {
        c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(&message)
    });
    let now = Time(podd_api::jiff::Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: if same {
            prev.and_then(|c| c.last_update_time.clone())
        } else {
            Some(now)
        },
        last_transition_time: Some(transition_time(
            prev.map(|c| (c.status.as_str(), c.last_transition_time.as_ref())),
            status,
        )),
    }
}

/// The Deployment's status over its ReplicaSets (`new` is None while paused before a new
/// template got its ReplicaSet).
pub fn status_of(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    created: bool,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let old_conds = old.conditions.clone().unwrap_or_default();
    let want = replicas(d);
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|r| f(r)).sum::<i32>();
    let total_spec = sum(&spec_replicas);
    let actual = sum(&|r| status_num(r, |s| Some(s.replicas)));
    let ready = sum(&|r| status_num(r, |s| s.ready_replicas));
    let avail = sum(&available);
    let updated = new.map_or(0, |r| status_num(r, |s| Some(s.replicas)));
    let (_, unavailable) = surge_and_unavailable(d);
    let mut conds = Vec::new();
    conds.push(if avail >= want - unavailable {
        condition(
            &old_conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            &old_conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    });
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let rs_name = new.map(|r| r.name_any()).unwrap_or_default();
    let complete = new.is_some()
        && updated == want
        && actual == want
        && avail == want
        && new.is_some_and(|r| spec_replicas(r) == want);
    let progressing = if paused {
        condition(
            &old_conds,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
        )
    } else if created {
        condition(
            &old_conds,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set {rs_name:?}"),
        )
    } else if complete {
        condition(
            &old_conds,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet {rs_name:?} has successfully progressed."),
        )
    } else {
        let c = condition(
            &old_conds,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet {rs_name:?} is progressing."),
        );
        // No progress (no status change) for progressDeadlineSeconds: the rollout is stuck.
        let deadline = d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600);
        let counts_moved =
            old.updated_replicas != Some(updated) || old.available_replicas != Some(avail);
        let last = c
            .last_update_time
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(i64::MAX);
        if !counts_moved
            && podd_api::jiff::Timestamp::now().as_second() - last > i64::from(deadline)
        {
            condition(
                &old_conds,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet {rs_name:?} has timed out progressing."),
            )
        } else if counts_moved {
            DeploymentCondition {
                last_update_time: Some(Time(podd_api::jiff::Timestamp::now())),
                ..c
            }
        } else {
            c
        }
    };
    conds.push(progressing);
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(avail),
        unavailable_replicas: Some((total_spec - avail).max(0)),
        conditions: Some(conds),
        collision_count: old.collision_count,
        ..old
    }
}

struct Controller {
    registry: Arc<Registry>,
    events: Recorder,
}

impl Controller {
    /// Sets a ReplicaSet's replicas (and the Deployment's annotations on it), with an event.
    async fn scale(&self, d: &Deployment, rs: &ReplicaSet, to: i32, max_rev: &mut i64) -> bool {
        let from = spec_replicas(rs);
        let (surge, _) = surge_and_unavailable(d);
        let desired = replicas(d).to_string();
        let max = (replicas(d) + surge).to_string();
        let a = rs.annotations();
        if from == to
            && a.get(DESIRED_REPLICAS_ANNOTATION) == Some(&desired)
            && a.get(MAX_REPLICAS_ANNOTATION) == Some(&max)
        {
            return false;
        }
        let patch = serde_json::json!({
            "metadata": {"annotations": {DESIRED_REPLICAS_ANNOTATION: desired, MAX_REPLICAS_ANNOTATION: max}},
            "spec": {"replicas": to},
        });
        let ns = rs.namespace().unwrap_or_default();
        match self
            .registry
            .patch_obj::<ReplicaSet>(&ns, &rs.name_any(), patch, Subresource::Main)
            .await
        {
            Ok(u) => {
                *max_rev = (*max_rev).max(rev_of(u.metadata()));
                if from != to {
                    let dir = if to > from { "up" } else { "down" };
                    self.events.record(
                        &events::object_ref(d),
                        events::NORMAL,
                        "ScalingReplicaSet",
                        &format!(
                            "Scaled {dir} replica set {} from {from} to {to}",
                            rs.name_any()
                        ),
                    );
                }
                true
            }
            Err(e) => {
                tracing::debug!(replicaset = %rs.name_any(), error = %e, "could not scale");
                false
            }
        }
    }

    /// Reconciles one Deployment; returns the highest revision it wrote.
    async fn reconcile(&self, key: &str) -> i64 {
        let cache = self.registry.cache();
        let Some(d) = cache
            .get(Kind::Deployment, key)
            .and_then(|o| o.decode::<Deployment>())
        else {
            return 0;
        };
        if d.metadata.deletion_timestamp.is_some() {
            return 0;
        }
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let mut all: Vec<ReplicaSet> = cache
            .owned_by(Kind::ReplicaSet, &uid)
            .iter()
            .filter_map(|o| o.decode())
            .collect();
        all.sort_by_key(revision_of);
        let spec = d.spec.clone().unwrap_or_default();
        let template = spec.template.clone();
        let ns = d.namespace().unwrap_or_default();
        let mut max_rev = 0;
        let new_idx = all
            .iter()
            .position(|r| without_hash(&rs_template(r)) == template);
        let max_old_revision = all
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_idx)
            .map(|(_, r)| revision_of(r))
            .max()
            .unwrap_or(0);
        let paused = spec.paused.unwrap_or(false);
        let mut created = false;
        let new: Option<ReplicaSet> = match new_idx {
            Some(i) => {
                let mut rs = all.remove(i);
                // An old template that became the new one again (rollout undo) takes the next
                // revision.
                if revision_of(&rs) <= max_old_revision {
                    let next = (max_old_revision + 1).to_string();
                    let patch = serde_json::json!({"metadata": {"annotations": {REVISION_ANNOTATION: next}}});
                    match self
                        .registry
                        .patch_obj::<ReplicaSet>(&ns, &rs.name_any(), patch, Subresource::Main)
                        .await
                    {
                        Ok(u) => {
                            max_rev = max_rev.max(rev_of(u.metadata()));
                            rs = u;
                        }
                        Err(e) => {
                            tracing::debug!(deployment = key, error = %e, "could not bump the revision");
                            return max_rev;
                        }
                    }
                }
                Some(rs)
            }
            None if paused => None,
            None => {
                let hash =
                    template_hash(&template, d.status.as_ref().and_then(|s| s.collision_count));
                let mut rs = new_replica_set(&d, &hash, max_old_revision + 1, 0);
                if !is_recreate(&d) {
                    let (scale, _) = scale_plan(&d, &rs, &all);
                    if let Some(s) = rs.spec.as_mut() {
                        s.replicas = Some(scale);
                    }
                }
                match self.registry.create_obj(&rs).await {
                    Ok(c) => {
                        max_rev = max_rev.max(rev_of(c.metadata()));
                        created = true;
                        let to = spec_replicas(&c);
                        if to > 0 {
                            self.events.record(
                                &events::object_ref(&d),
                                events::NORMAL,
                                "ScalingReplicaSet",
                                &format!("Scaled up replica set {} from 0 to {to}", c.name_any()),
                            );
                        }
                        Some(c)
                    }
                    Err(e) if e.code() == 409 => {
                        // A ReplicaSet of that name that is not this template's: hash again
                        // with a higher collision count (as Kubernetes does).
                        let count = d
                            .status
                            .as_ref()
                            .and_then(|s| s.collision_count)
                            .unwrap_or(0)
                            + 1;
                        let patch = serde_json::json!({"status": {"collisionCount": count}});
                        if let Ok(u) = self
                            .registry
                            .patch_obj::<Deployment>(&ns, &d.name_any(), patch, Subresource::Status)
                            .await
                        {
                            max_rev = max_rev.max(rev_of(u.metadata()));
                        }
                        return max_rev;
                    }
                    Err(e) => {
                        tracing::warn!(deployment = key, error = %e, "could not create a replica set");
                        return max_rev;
                    }
                }
            }
        };
        if let Some(new) = &new {
            // The Deployment shows its current revision.
            let rev = new
                .annotations()
                .get(REVISION_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            if d.annotations().get(REVISION_ANNOTATION) != Some(&rev) {
                let patch =
                    serde_json::json!({"metadata": {"annotations": {REVISION_ANNOTATION: rev}}});
                match self
                    .registry
                    .patch_obj::<Deployment>(&ns, &d.name_any(), patch, Subresource::Main)
                    .await
                {
                    Ok(u) => max_rev = max_rev.max(rev_of(u.metadata())),
                    Err(e) => {
                        tracing::debug!(deployment = key, error = %e, "could not annotate the revision")
                    }
                }
            }
        }
        let old = all;
        match (&new, paused) {
            (Some(new), false) => {
                let (new_scale, old_scales) = scale_plan(&d, new, &old);
                // Scale down before up, so the surge bound holds at every step.
                for (rs, (_, to)) in old.iter().zip(&old_scales) {
                    self.scale(&d, rs, *to, &mut max_rev).await;
                }
                self.scale(&d, new, new_scale, &mut max_rev).await;
            }
            (new, true) => {
                // Paused: no rollout, but a plain scale still applies to the one active set.
                let active: Vec<&ReplicaSet> = new
                    .iter()
                    .chain(old.iter())
                    .filter(|r| spec_replicas(r) > 0)
                    .collect();
                let target = match (active.as_slice(), new) {
                    ([one], _) => Some(*one),
                    ([], Some(n)) => Some(n),
                    _ => None,
                };
                if let Some(t) = target {
                    self.scale(&d, t, replicas(&d), &mut max_rev).await;
                }
            }
            (None, false) => {}
        }
        self.cleanup(&d, &old, &mut max_rev).await;
        let refs: Vec<&ReplicaSet> = new.iter().chain(old.iter()).collect();
        let status = status_of(&d, new.as_ref(), &refs, created);
        if Some(&status) != d.status.as_ref() {
            let mut nd = d.clone();
            nd.status = Some(status);
            match self.registry.update_obj(&nd, Subresource::Status).await {
                Ok(u) => max_rev = max_rev.max(rev_of(u.metadata())),
                Err(e) => tracing::debug!(error = %e, deployment = key, "status update failed"),
            }
        }
        max_rev
    }

    /// Deletes the oldest ReplicaSets beyond revisionHistoryLimit that are scaled to zero and
    /// have no pods left.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet], max_rev: &mut i64) {
        let limit = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let idle: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| {
                spec_replicas(r) == 0
                    && pods_left(r) == 0
                    && r.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if idle.len() <= limit {
            return;
        }
        // `old` is sorted by revision: the first ones are the oldest.
        for rs in &idle[..idle.len() - limit] {
            let ns = rs.namespace().unwrap_or_default();
            match self
                .registry
                .delete(Kind::ReplicaSet, &ns, &rs.name_any(), None)
                .await
            {
                Ok(v) => *max_rev = (*max_rev).max(rev_of_json(&v)),
                Err(e) => {
                    tracing::debug!(replicaset = %rs.name_any(), error = %e, "could not delete an old replica set")
                }
            }
        }
    }
}

pub async fn run(
    registry: Arc<Registry>,
    events: Recorder,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let cache = registry.cache().clone();
    let mut deps_rx = cache.subscribe_now(Kind::Deployment);
    let mut rs_rx = cache.subscribe_now(Kind::ReplicaSet);
    let mut rev_rx = cache.revision_watch();
    let ctl = Controller {
        registry: registry.clone(),
        events,
    };
    let mut queue = WorkQueue::default();
    let mut owners = OwnerIndex::default();
    let mut resync = tokio::time::interval(config.resync);
    let mut full = true;
    loop {
        if full {
            full = false;
            owners.relist(&cache, Kind::Deployment, &mut queue);
        }
        let mut ok = drain(&mut deps_rx, Kind::Deployment, &registry, |ev| {
            owners.owner_event(ev, &mut queue)
        });
        ok &= drain(&mut rs_rx, Kind::ReplicaSet, &registry, |ev| {
            owners.owned_event(ev, &mut queue)
        });
        if !ok {
            full = true;
            continue;
        }
        let ready = queue.take_ready(cache.revision());
        if !ready.is_empty() {
            let futs: Vec<_> = ready
                .iter()
                .map(|k| async { (k.clone(), ctl.reconcile(k).await) })
                .collect();
            for (k, r) in super::bounded(futs, 16).await {
                if r > 0 {
                    queue.barrier(&k, r);
                    queue.add(k);
                }
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = resync.tick() => full = true,
            r = deps_rx.recv() => match r {
                Ok(ev) => owners.owner_event(&ev, &mut queue),
                Err(_) => { deps_rx = cache.subscribe_now(Kind::Deployment); full = true; }
            },
            r = rs_rx.recv() => match r {
                Ok(ev) => owners.owned_event(&ev, &mut queue),
                Err(_) => { rs_rx = cache.subscribe_now(Kind::ReplicaSet); full = true; }
            },
            _ = rev_rx.changed(), if queue.has_waiting() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(replicas: i32, surge: i32, unavail: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d1"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
            }
        }))
        .unwrap()
    }

    fn rs(name: &str, rev: i64, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": {REVISION_ANNOTATION: rev.to_string()}},
            "spec": {"replicas": replicas, "selector": {}},
            "status": {"replicas": replicas, "availableReplicas": available}
        }))
        .unwrap()
    }

    #[test]
    fn a_new_deployment_scales_its_replica_set_up() {
        let d = dep(3, 1, 0);
        let (n, _) = scale_plan(&d, &rs("new", 1, 0, 0), &[]);
        assert_eq!(n, 3);
    }

    #[test]
    fn rolling_update_keeps_surge_and_availability() {
        // 4 replicas, surge 1, unavailable 1: at most 5 pods, at least 3 available.
        let d = dep(4, 1, 1);
        let (n, old) = scale_plan(&d, &rs("new", 2, 0, 0), &[rs("old", 1, 4, 4)]);
        assert_eq!(n, 1, "surge of one");
        assert_eq!(old[0].1, 3, "one unavailable allowed");
        // The new pods are not ready yet: no more old ones may go, nor new ones be added.
        let (n, old) = scale_plan(&d, &rs("new", 2, 2, 0), &[rs("old", 1, 3, 3)]);
        assert_eq!((n, old[0].1), (2, 3));
        // They became available: the rollout moves on.
        let (n, old) = scale_plan(&d, &rs("new", 2, 2, 2), &[rs("old", 1, 3, 3)]);
        assert!(n + old[0].1 <= 5);
        assert!(old[0].1 < 3);
        // Done.
        let (n, old) = scale_plan(&d, &rs("new", 2, 4, 4), &[rs("old", 1, 0, 0)]);
        assert_eq!((n, old[0].1), (4, 0));
    }

    #[test]
    fn recreate_waits_for_the_old_pods() {
        let mut d = dep(3, 1, 0);
        d.spec.as_mut().unwrap().strategy = Some(podd_api::DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        let (n, old) = scale_plan(&d, &rs("new", 2, 0, 0), &[rs("old", 1, 3, 3)]);
        assert_eq!((n, old[0].1), (0, 0));
        let (n, _) = scale_plan(&d, &rs("new", 2, 0, 0), &[rs("old", 1, 0, 0)]);
        assert_eq!(n, 3);
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let d = dep(1, 1, 0);
        let t = d.spec.unwrap().template;
        let a = template_hash(&t, None);
        assert_eq!(a, template_hash(&t, None));
        assert_ne!(a, template_hash(&t, Some(1)));
        let mut t2 = t.clone();
        t2.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("x".into(), "y".into());
        assert_ne!(a, template_hash(&t2, None));
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{a}");
    }

    #[test]
    fn the_new_replica_set_carries_hash_and_revision() {
        let d = dep(3, 1, 0);
        let rs = new_replica_set(&d, "abc", 4, 0);
        assert_eq!(rs.name_any(), "web-abc");
        assert_eq!(
            rs.labels().get(TEMPLATE_HASH_LABEL).map(String::as_str),
            Some("abc")
        );
        let sel = &rs.spec.as_ref().unwrap().selector;
        assert_eq!(
            sel.match_labels
                .as_ref()
                .unwrap()
                .get(TEMPLATE_HASH_LABEL)
                .map(String::as_str),
            Some("abc")
        );
        assert_eq!(revision_of(&rs), 4);
        assert_eq!(
            rs.annotations()
                .get(MAX_REPLICAS_ANNOTATION)
                .map(String::as_str),
            Some("4")
        );
        assert_eq!(without_hash(&rs_template(&rs)), d.spec.unwrap().template);
    }

    #[test]
    fn status_conditions() {
        let d = dep(2, 1, 0);
        let new = rs("web-abc", 1, 2, 2);
        let s = status_of(&d, Some(&new), &[&new], false);
        let conds = s.conditions.unwrap();
        assert_eq!(conds[0].reason.as_deref(), Some("MinimumReplicasAvailable"));
        assert_eq!(conds[1].reason.as_deref(), Some("NewReplicaSetAvailable"));
        let new = rs("web-abc", 1, 2, 0);
        let s = status_of(&d, Some(&new), &[&new], false);
        let conds = s.conditions.unwrap();
        assert_eq!(conds[0].status, "False");
        assert_eq!(conds[1].reason.as_deref(), Some("ReplicaSetUpdated"));
        assert_eq!(s.unavailable_replicas, Some(2));
    }
}

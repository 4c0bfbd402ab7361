//! The deployment controller: keeps `replicas` pods of the current template, replaces failed
//! ones, scales down keeping the spread even (the scheduler chooses), and rolls templates
//! over with maxSurge/maxUnavailable. Pods carry the template's hash in the
//! `pod-template-hash` label, so the controller tells old pods from new ones after a restart.

use super::{ControllerConfig, SharedScheduler, WorkQueue, bounded, drain, rev_of};
use crate::registry::{Registry, Subresource};
use podd_api::workloads::{DeploymentStatus, PodTemplateSpec};
use podd_api::{Deployment, Kind, Object, ObjectMeta, OwnerReference, Pod, PodPhase};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Semaphore, watch};

pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// A short, stable hash of a pod template.
pub fn template_hash(t: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(t).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..5])
}

fn is_terminal(p: &Pod) -> bool {
    matches!(p.status.phase, PodPhase::Failed | PodPhase::Succeeded)
}

fn is_available(p: &Pod) -> bool {
    p.status.phase == PodPhase::Running && p.status.ready
}

/// What one reconcile decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: u32,
    /// Names of pods to delete.
    pub delete: Vec<String>,
}

/// The pure decision: given the deployment and its pods, what to create and delete.
/// `choose` picks `n` of the given pods (by name) to remove for scale-down.
pub fn plan(
    d: &Deployment,
    pods: &[Pod],
    hash: &str,
    choose: &dyn Fn(&[&Pod], usize) -> Vec<String>,
) -> Plan {
    let replicas = d.spec.replicas;
    let mut plan = Plan::default();
    let (terminal, active): (Vec<&Pod>, Vec<&Pod>) = pods.iter().partition(|p| is_terminal(p));
    // Failed pods (e.g. NodeLost) are removed; replacements are created below.
    plan.delete
        .extend(terminal.iter().map(|p| p.metadata.name.clone()));
    let (new, old): (Vec<&Pod>, Vec<&Pod>) = active.iter().partition(|p| {
        p.metadata
            .labels
            .get(TEMPLATE_HASH_LABEL)
            .map(String::as_str)
            == Some(hash)
    });
    let recreate = d.spec.strategy.kind == "Recreate";
    if old.is_empty() {
        let n = new.len() as u32;
        if n < replicas {
            plan.create = replicas - n;
        } else if n > replicas {
            plan.delete
                .extend(scale_down(&new, (n - replicas) as usize, choose));
        }
        return plan;
    }
    if recreate {
        plan.delete
            .extend(old.iter().map(|p| p.metadata.name.clone()));
        return plan;
    }
    let ru = &d.spec.strategy.rolling_update;
    let surge = ru.max_surge.resolve(replicas, true).unwrap_or(1);
    let mut unavailable = ru.max_unavailable.resolve(replicas, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let total = (new.len() + old.len()) as u32;
    let max_total = replicas + surge;
    // Scale the new pods up within the surge budget.
    if (new.len() as u32) < replicas && total < max_total {
        plan.create = (max_total - total).min(replicas - new.len() as u32);
    }
    if new.len() as u32 > replicas {
        plan.delete
            .extend(scale_down(&new, new.len() - replicas as usize, choose));
    }
    // Scale the old ones down while availability stays at replicas - maxUnavailable.
    let min_available = replicas.saturating_sub(unavailable);
    let available = new
        .iter()
        .chain(old.iter())
        .filter(|p| is_available(p))
        .count() as u32;
    let mut budget = available.saturating_sub(min_available);
    // Unavailable old pods cost no availability: remove them first.
    for p in old.iter().filter(|p| !is_available(p)) {
        plan.delete.push(p.metadata.name.clone());
    }
    let old_available: Vec<&Pod> = old.iter().copied().filter(|p| is_available(p)).collect();
    let mut picked = Vec::new();
    for p in &old_available {
        if budget == 0 {
            break;
        }
        picked.push(p.metadata.name.clone());
        budget -= 1;
    }
    plan.delete.extend(picked);
    plan
}

/// Scale-down order: pods not yet placed, then not ready, then as the scheduler chooses.
fn scale_down(
    pods: &[&Pod],
    n: usize,
    choose: &dyn Fn(&[&Pod], usize) -> Vec<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = Vec::new();
    for p in pods {
        if p.spec.node_name.is_empty() || !p.status.ready {
            if out.len() < n {
                out.push(p.metadata.name.clone());
            }
        } else {
            rest.push(*p);
        }
    }
    if out.len() < n {
        out.extend(choose(&rest, n - out.len()));
    }
    out.truncate(n);
    out
}

fn pod_from_template(d: &Deployment, hash: &str) -> Pod {
    let t = &d.spec.template;
    let mut labels = t.metadata.labels.clone();
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    Pod {
        metadata: ObjectMeta {
            generate_name: format!("{}-{hash}-", d.metadata.name),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: t.metadata.annotations.clone(),
            owner_references: vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: d.metadata.name.clone(),
                uid: d.metadata.uid.clone(),
                controller: true,
            }],
            ..ObjectMeta::default()
        },
        spec: t.spec.clone(),
        status: Default::default(),
    }
}

fn status_of(d: &Deployment, pods: &[Pod], hash: &str) -> DeploymentStatus {
    let active: Vec<&Pod> = pods.iter().filter(|p| !is_terminal(p)).collect();
    let updated = active
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .get(TEMPLATE_HASH_LABEL)
                .map(String::as_str)
                == Some(hash)
        })
        .count() as u32;
    let ready = active.iter().filter(|p| p.status.ready).count() as u32;
    let available = active.iter().filter(|p| is_available(p)).count() as u32;
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: active.len() as u32,
        updated_replicas: updated,
        ready_replicas: ready,
        available_replicas: available,
        unavailable_replicas: d.spec.replicas.saturating_sub(available),
    }
}

struct Controller {
    registry: Arc<Registry>,
    sched: SharedScheduler,
    config: ControllerConfig,
    /// One budget of `write_concurrency` writes in flight for every reconcile running at once:
    /// per reconcile, 16 deployments at a time would put 16 times as many writes in the
    /// store's queue, which raises every write's latency (queue length over throughput) and
    /// not the throughput.
    writes: Arc<Semaphore>,
}

impl Controller {
    /// Runs one write within the controller's write budget.
    async fn limited<T>(&self, write: impl std::future::Future<Output = T>) -> T {
        let _permit = self.writes.acquire().await;
        write.await
    }
}

impl Controller {
    /// Reconciles one deployment; returns the highest revision it wrote.
    async fn reconcile(&self, key: &str) -> i64 {
        let cache = self.registry.cache();
        let Some(d) = cache
            .get(Kind::Deployment, key)
            .and_then(|o| o.decode::<Deployment>())
        else {
            return 0;
        };
        let pods: Vec<Pod> = cache
            .owned_by(Kind::Pod, &d.metadata.uid)
            .iter()
            .filter_map(|o| o.decode())
            .collect();
        let hash = template_hash(&d.spec.template);
        let sched = self.sched.clone();
        let choose = move |cands: &[&Pod], n: usize| -> Vec<String> {
            let keys: Vec<String> = cands
                .iter()
                .map(|p| format!("{}/{}", p.metadata.namespace, p.metadata.name))
                .collect();
            let chosen = sched
                .lock()
                .map(|s| s.choose_scale_down(&keys, n))
                .unwrap_or_default();
            chosen
                .into_iter()
                .filter_map(|k| k.split_once('/').map(|(_, n)| n.to_string()))
                .collect()
        };
        let p = plan(&d, &pods, &hash, &choose);
        let mut max_rev = 0;
        let ns = d.metadata.namespace.clone();
        if !p.delete.is_empty() {
            let futs: Vec<_> = p
                .delete
                .iter()
                .map(|name| self.limited(self.registry.delete(Kind::Pod, &ns, name, None)))
                .collect();
            for r in bounded(futs, self.config.write_concurrency).await {
                match r {
                    Ok(v) => {
                        max_rev = max_rev.max(
                            v.pointer("/metadata/resourceVersion")
                                .and_then(|x| x.as_str())
                                .and_then(|x| x.parse().ok())
                                .unwrap_or(0),
                        )
                    }
                    Err(e) => tracing::debug!(error = %e, deployment = key, "pod delete failed"),
                }
            }
        }
        if p.create > 0 {
            let pod = pod_from_template(&d, &hash);
            let futs: Vec<_> = (0..p.create)
                .map(|_| self.limited(self.registry.create_obj(&pod)))
                .collect();
            for r in bounded(futs, self.config.write_concurrency).await {
                match r {
                    Ok(created) => max_rev = max_rev.max(rev_of(created.metadata())),
                    Err(e) => {
                        tracing::warn!(error = %e, deployment = key, "could not create a pod")
                    }
                }
            }
        }
        let status = status_of(&d, &pods, &hash);
        if status != d.status {
            let mut nd = d.clone();
            nd.status = status;
            match self
                .limited(self.registry.update_obj(&nd, Subresource::Status))
                .await
            {
                Ok(u) => max_rev = max_rev.max(rev_of(u.metadata())),
                Err(e) => tracing::debug!(error = %e, deployment = key, "status update failed"),
            }
        }
        max_rev
    }
}

pub async fn run(
    registry: Arc<Registry>,
    sched: SharedScheduler,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let cache = registry.cache().clone();
    let mut deps_rx = cache.subscribe_now(Kind::Deployment);
    let mut pods_rx = cache.subscribe_now(Kind::Pod);
    let mut rev_rx = cache.revision_watch();
    let ctl = Controller {
        registry: registry.clone(),
        sched,
        config: config.clone(),
        writes: Arc::new(Semaphore::new(config.write_concurrency.max(1))),
    };
    let mut queue = WorkQueue::default();
    // owner uid -> deployment key
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut resync = tokio::time::interval(config.resync);
    let mut full = true;
    loop {
        if full {
            full = false;
            let (deps, _) = cache.snapshot(Kind::Deployment, &Kind::Deployment.key_prefix(None));
            owners = deps
                .iter()
                .map(|o| (o.uid.clone(), o.key.clone()))
                .collect();
            for o in deps {
                queue.add(o.key.clone());
            }
        }
        let mut ok = drain(&mut deps_rx, Kind::Deployment, &registry, |ev| {
            if ev.kind == podd_api::EventType::Deleted {
                owners.remove(&ev.object.uid);
            } else {
                owners.insert(ev.object.uid.clone(), ev.object.key.clone());
                queue.add(ev.object.key.clone());
            }
        });
        ok &= drain(&mut pods_rx, Kind::Pod, &registry, |ev| {
            for u in ev.object.owners.iter() {
                if let Some(k) = owners.get(u) {
                    queue.add(k.clone());
                }
            }
        });
        if !ok {
            full = true;
            continue;
        }
        let rev = cache.revision();
        let ready = queue.take_ready(rev);
        if !ready.is_empty() {
            let futs: Vec<_> = ready
                .iter()
                .map(|k| async { (k.clone(), ctl.reconcile(k).await) })
                .collect();
            for (k, r) in bounded(futs, 16).await {
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
                Ok(ev) => {
                    owners.insert(ev.object.uid.clone(), ev.object.key.clone());
                    if ev.kind == podd_api::EventType::Deleted {
                        owners.remove(&ev.object.uid);
                    } else {
                        queue.add(ev.object.key.clone());
                    }
                }
                Err(_) => { deps_rx = cache.subscribe_now(Kind::Deployment); full = true; }
            },
            r = pods_rx.recv() => match r {
                Ok(ev) => for u in ev.object.owners.iter() {
                    if let Some(k) = owners.get(u) { queue.add(k.clone()); }
                },
                Err(_) => { pods_rx = cache.subscribe_now(Kind::Pod); full = true; }
            },
            _ = rev_rx.changed(), if queue.has_waiting() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::workloads::{IntOrPercent, RollingUpdate};

    fn dep(replicas: u32, surge: u32, unavail: u32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = "web".into();
        d.spec.replicas = replicas;
        d.spec.strategy.rolling_update = RollingUpdate {
            max_surge: IntOrPercent::Int(surge),
            max_unavailable: IntOrPercent::Int(unavail),
        };
        d
    }

    fn pod(name: &str, hash: &str, ready: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata
            .labels
            .insert(TEMPLATE_HASH_LABEL.into(), hash.into());
        p.spec.node_name = "n".into();
        if ready {
            p.status.phase = PodPhase::Running;
            p.status.ready = true;
        }
        p
    }

    fn first(c: &[&Pod], n: usize) -> Vec<String> {
        c.iter().take(n).map(|p| p.metadata.name.clone()).collect()
    }

    #[test]
    fn scale_up_and_down() {
        let d = dep(3, 1, 0);
        assert_eq!(plan(&d, &[], "h", &first).create, 3);
        let pods: Vec<Pod> = (0..5).map(|i| pod(&format!("p{i}"), "h", true)).collect();
        let p = plan(&d, &pods, "h", &first);
        assert_eq!((p.create, p.delete.len()), (0, 2));
        let mut failed = pod("f", "h", false);
        failed.status.phase = PodPhase::Failed;
        let p = plan(
            &d,
            &[pod("a", "h", true), pod("b", "h", true), failed],
            "h",
            &first,
        );
        assert_eq!(p.create, 1);
        assert_eq!(p.delete, vec!["f".to_string()]);
    }

    #[test]
    fn rolling_update_keeps_availability() {
        // 4 replicas, surge 1, unavailable 1: at least 3 available at every step.
        let d = dep(4, 1, 1);
        let old: Vec<Pod> = (0..4).map(|i| pod(&format!("o{i}"), "old", true)).collect();
        let p = plan(&d, &old, "new", &first);
        assert_eq!(p.create, 1);
        assert_eq!(p.delete.len(), 1, "{p:?}");
        // New pods not ready yet: no more old ones may go.
        let mut pods: Vec<Pod> = old[1..].to_vec();
        pods.push(pod("n0", "new", false));
        pods.push(pod("n1", "new", false));
        let p = plan(&d, &pods, "new", &first);
        assert_eq!(p.delete.len(), 0, "{p:?}");
        assert_eq!(p.create, 0);
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let mut t = PodTemplateSpec::default();
        let a = template_hash(&t);
        assert_eq!(a, template_hash(&t));
        t.metadata.labels.insert("x".into(), "y".into());
        assert_ne!(a, template_hash(&t));
        assert_eq!(a.len(), 10);
    }
}

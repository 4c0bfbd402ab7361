//! The endpoints controller: for each Service with a selector, an Endpoints object of the same
//! name listing the ready pod IPs (and, apart, the not-ready ones) with the service's target
//! ports. It is owned by the Service, so deleting the Service removes it.

use super::{ControllerConfig, WorkQueue, drain, rev_of};
use crate::registry::Registry;
use podd_api::service::EndpointSubset;
use podd_api::{
    EndpointAddress, EndpointPort, Endpoints, EventType, Kind, Object, ObjectMeta, OwnerReference,
    Pod, PodPhase, Service,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// The Endpoints a Service should have, given the pods of its namespace.
pub fn desired_endpoints(svc: &Service, pods: &[Pod]) -> Endpoints {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for p in pods {
        if p.status.pod_ip.is_empty()
            || matches!(p.status.phase, PodPhase::Failed | PodPhase::Succeeded)
            || p.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if svc.spec.selector.is_empty()
            || !svc
                .spec
                .selector
                .iter()
                .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        {
            continue;
        }
        let addr = EndpointAddress {
            ip: p.status.pod_ip.clone(),
            node_name: p.spec.node_name.clone(),
            target_ref: format!("Pod/{}", p.metadata.name),
        };
        if p.status.phase == PodPhase::Running && p.status.ready {
            ready.push(addr);
        } else {
            not_ready.push(addr);
        }
    }
    let key = |a: &EndpointAddress| (a.ip.clone(), a.target_ref.clone());
    ready.sort_by_key(key);
    not_ready.sort_by_key(key);
    let ports = svc
        .spec
        .ports
        .iter()
        .map(|p| EndpointPort {
            name: p.name.clone(),
            port: p.target(),
            protocol: p.protocol,
        })
        .collect();
    let subsets = if ready.is_empty() && not_ready.is_empty() {
        Vec::new()
    } else {
        vec![EndpointSubset {
            addresses: ready,
            not_ready_addresses: not_ready,
            ports,
        }]
    };
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: svc.metadata.labels.clone(),
            owner_references: vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: svc.metadata.name.clone(),
                uid: svc.metadata.uid.clone(),
                controller: true,
            }],
            ..ObjectMeta::default()
        },
        subsets,
    }
}

async fn reconcile(registry: &Registry, key: &str) -> i64 {
    let cache = registry.cache();
    let Some(svc) = cache
        .get(Kind::Service, key)
        .and_then(|o| o.decode::<Service>())
    else {
        return 0;
    };
    if svc.spec.selector.is_empty() {
        // Endpoints of selector-less services are written by hand.
        return 0;
    }
    let ns = svc.metadata.namespace.clone();
    let (objs, _) = cache.snapshot(Kind::Pod, &Kind::Pod.key_prefix(Some(&ns)));
    let pods: Vec<Pod> = objs
        .iter()
        .filter(|o| {
            svc.spec
                .selector
                .iter()
                .all(|(k, v)| o.labels.get(k) == Some(v))
        })
        .filter_map(|o| o.decode())
        .collect();
    let want = desired_endpoints(&svc, &pods);
    let ep_key = Kind::Endpoints.key(&ns, &svc.metadata.name);
    let current = cache
        .get(Kind::Endpoints, &ep_key)
        .and_then(|o| o.decode::<Endpoints>());
    let result = match current {
        None => registry.create_obj(&want).await,
        Some(cur) => {
            if cur.subsets == want.subsets
                && cur.metadata.owner_references == want.metadata.owner_references
                && cur.metadata.labels == want.metadata.labels
            {
                return 0;
            }
            let mut upd = want;
            upd.metadata.resource_version = cur.metadata.resource_version.clone();
            registry
                .update_obj(&upd, crate::registry::Subresource::Main)
                .await
        }
    };
    match result {
        Ok(ep) => rev_of(ep.metadata()),
        Err(e) => {
            tracing::debug!(service = key, error = %e, "endpoints write failed; will retry");
            0
        }
    }
}

pub async fn run(
    registry: Arc<Registry>,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let cache = registry.cache().clone();
    let mut svc_rx = cache.subscribe_now(Kind::Service);
    let mut pods_rx = cache.subscribe_now(Kind::Pod);
    let mut rev_rx = cache.revision_watch();
    let mut resync = tokio::time::interval(config.resync);
    let mut queue = WorkQueue::default();
    // namespace -> service key -> selector
    let mut selectors: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>> =
        BTreeMap::new();
    let mut full = true;
    loop {
        if full {
            full = false;
            selectors.clear();
            let (svcs, _) = cache.snapshot(Kind::Service, &Kind::Service.key_prefix(None));
            for o in svcs {
                if let Some(s) = o.decode::<Service>() {
                    selectors
                        .entry(o.namespace.clone())
                        .or_default()
                        .insert(o.key.clone(), s.spec.selector);
                }
                queue.add(o.key.clone());
            }
        }
        let on_svc =
            |ev: &crate::cache::CacheEvent,
             selectors: &mut BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
             queue: &mut WorkQueue| {
                let ns = selectors.entry(ev.object.namespace.clone()).or_default();
                if ev.kind == EventType::Deleted {
                    ns.remove(&ev.object.key);
                } else if let Some(s) = ev.object.decode::<Service>() {
                    ns.insert(ev.object.key.clone(), s.spec.selector);
                    queue.add(ev.object.key.clone());
                }
            };
        let on_pod = |ev: &crate::cache::CacheEvent,
                      selectors: &BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
                      queue: &mut WorkQueue| {
            if let Some(svcs) = selectors.get(&ev.object.namespace) {
                for (k, sel) in svcs {
                    let hit = |l: &BTreeMap<String, String>| {
                        !sel.is_empty() && sel.iter().all(|(a, b)| l.get(a) == Some(b))
                    };
                    if hit(&ev.object.labels) || ev.prev.as_ref().is_some_and(|p| hit(&p.labels)) {
                        queue.add(k.clone());
                    }
                }
            }
        };
        let mut ok = drain(&mut svc_rx, Kind::Service, &registry, |ev| {
            on_svc(ev, &mut selectors, &mut queue)
        });
        ok &= drain(&mut pods_rx, Kind::Pod, &registry, |ev| {
            on_pod(ev, &selectors, &mut queue)
        });
        if !ok {
            full = true;
            continue;
        }
        let ready = queue.take_ready(cache.revision());
        if !ready.is_empty() {
            for k in ready {
                let r = reconcile(&registry, &k).await;
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
            r = svc_rx.recv() => match r {
                Ok(ev) => on_svc(&ev, &mut selectors, &mut queue),
                Err(_) => { svc_rx = cache.subscribe_now(Kind::Service); full = true; }
            },
            r = pods_rx.recv() => match r {
                Ok(ev) => on_pod(&ev, &selectors, &mut queue),
                Err(_) => { pods_rx = cache.subscribe_now(Kind::Pod); full = true; }
            },
            _ = rev_rx.changed(), if queue.has_waiting() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::ServicePort;

    #[test]
    fn ready_and_not_ready_addresses() {
        let mut svc = Service::default();
        svc.metadata.name = "web".into();
        svc.spec.selector.insert("app".into(), "web".into());
        svc.spec.ports.push(ServicePort {
            port: 80,
            target_port: Some(8080),
            ..Default::default()
        });
        let mk = |name: &str, ip: &str, ready: bool, app: &str| {
            let mut p = Pod::default();
            p.metadata.name = name.into();
            p.metadata.labels.insert("app".into(), app.into());
            p.status.pod_ip = ip.into();
            p.status.phase = PodPhase::Running;
            p.status.ready = ready;
            p
        };
        let pods = vec![
            mk("b", "10.244.1.3", true, "web"),
            mk("a", "10.244.1.2", true, "web"),
            mk("c", "10.244.1.4", false, "web"),
            mk("d", "10.244.1.5", true, "db"),
            mk("e", "", true, "web"),
        ];
        let ep = desired_endpoints(&svc, &pods);
        let s = &ep.subsets[0];
        let ips: Vec<_> = s.addresses.iter().map(|a| a.ip.as_str()).collect();
        assert_eq!(ips, vec!["10.244.1.2", "10.244.1.3"]);
        assert_eq!(s.not_ready_addresses.len(), 1);
        assert_eq!(s.ports[0].port, 8080);
        assert!(desired_endpoints(&svc, &[]).subsets.is_empty());
    }
}

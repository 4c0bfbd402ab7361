//! The endpoints controller: for each Service with a selector, an Endpoints object of the same
//! name listing the ready pods' addresses (and, apart, the not-ready ones), with each
//! address's node and pod reference, and the Service's ports resolved per pod (a named
//! `targetPort` is looked up in that pod's containers; pods that resolve it differently get
//! their own subset). Beside it, one EndpointSlice (discovery.k8s.io/v1) per Service, named
//! `<svc>-<random>` and found again by its `kubernetes.io/service-name` label, updated in
//! place; it also lists terminating pods, with `terminating: true`. Both are owned by the
//! Service, so deleting the Service removes them.

use super::replicaset::controller_ref;
use super::{ControllerConfig, WorkQueue, drain, pod_is_terminal, pod_is_terminating, rev_of};
use crate::registry::Registry;
use podd_api::resources::{pod_ip, pod_is_ready, pod_node, pod_phase, service_target_port};
use podd_api::{
    Endpoint, EndpointAddress, EndpointConditions, EndpointPort, EndpointSlice, EndpointSubset,
    Endpoints, Kind, Metadata, ObjectMeta, ObjectReference, Pod, ResourceExt, Service,
    WatchEventType,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

type Labels = BTreeMap<String, String>;

fn selector_of(svc: &Service) -> Labels {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default()
}

fn selects(sel: &Labels, labels: &Labels) -> bool {
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// One port of the Service resolved for one pod: (name, port, protocol).
type ResolvedPort = (Option<String>, i32, String);

fn resolved_ports(svc: &Service, pod: &Pod) -> Vec<ResolvedPort> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|sp| {
            let port = service_target_port(sp, pod)?;
            Some((
                sp.name.clone(),
                i32::from(port),
                sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
            ))
        })
        .collect()
}

fn pod_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: p.namespace(),
        name: Some(p.name_any()),
        uid: p.metadata.uid.clone(),
        ..Default::default()
    }
}

/// A pod the Service routes to (ready or not): selected, with an IP, not finished.
fn serves(sel: &Labels, p: &Pod) -> bool {
    selects(sel, p.labels()) && !pod_ip(p).is_empty() && !pod_is_terminal(p)
}

fn ready(p: &Pod) -> bool {
    pod_phase(p) == "Running" && pod_is_ready(p)
}

fn meta_for(svc: &Service, labels: Option<Labels>) -> ObjectMeta {
    ObjectMeta {
        name: Some(svc.name_any()),
        namespace: svc.namespace(),
        labels,
        owner_references: Some(vec![controller_ref("v1", "Service", &svc.metadata)]),
        ..ObjectMeta::default()
    }
}

/// The Endpoints a Service should have, given the pods of its namespace.
pub fn desired_endpoints(svc: &Service, pods: &[Pod]) -> Endpoints {
    let sel = selector_of(svc);
    // Pods grouped by how the Service's ports resolve in them.
    let mut groups: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for p in pods {
        if !serves(&sel, p) || pod_is_terminating(p) {
            continue;
        }
        let addr = EndpointAddress {
            ip: pod_ip(p).to_string(),
            node_name: Some(pod_node(p).to_string()).filter(|n| !n.is_empty()),
            target_ref: Some(pod_ref(p)),
            hostname: None,
        };
        let g = groups.entry(resolved_ports(svc, p)).or_default();
        if ready(p) {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
    }
    let key = |a: &EndpointAddress| {
        (
            a.ip.clone(),
            a.target_ref.as_ref().and_then(|r| r.name.clone()),
        )
    };
    let subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by_key(key);
            not_ready.sort_by_key(key);
            EndpointSubset {
                addresses: Some(ready).filter(|v| !v.is_empty()),
                not_ready_addresses: Some(not_ready).filter(|v| !v.is_empty()),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name,
                            port,
                            protocol: Some(protocol),
                            app_protocol: None,
                        })
                        .collect(),
                )
                .filter(|v: &Vec<EndpointPort>| !v.is_empty()),
            }
        })
        .collect();
    Endpoints {
        metadata: meta_for(svc, svc.metadata.labels.clone()),
        subsets: Some(subsets).filter(|v| !v.is_empty()),
    }
}

/// The EndpointSlice a Service should have (its name is filled in by the caller: the existing
/// slice's, or generated). Ports are those most pods resolve; a pod whose named port resolves
/// differently is listed in Endpoints only.
pub fn desired_slice(svc: &Service, pods: &[Pod]) -> EndpointSlice {
    let sel = selector_of(svc);
    let live: Vec<&Pod> = pods.iter().filter(|p| serves(&sel, p)).collect();
    let mut counts: BTreeMap<Vec<ResolvedPort>, usize> = BTreeMap::new();
    for p in &live {
        *counts.entry(resolved_ports(svc, p)).or_default() += 1;
    }
    let ports = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(p, _)| p.clone())
        .unwrap_or_default();
    let mut endpoints: Vec<Endpoint> = live
        .iter()
        .filter(|p| resolved_ports(svc, p) == ports)
        .map(|p| {
            let terminating = pod_is_terminating(p);
            Endpoint {
                addresses: vec![pod_ip(p).to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready(p) && !terminating),
                    serving: Some(ready(p)),
                    terminating: Some(terminating),
                }),
                node_name: Some(pod_node(p).to_string()).filter(|n| !n.is_empty()),
                target_ref: Some(pod_ref(p)),
                ..Default::default()
            }
        })
        .collect();
    endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut metadata = meta_for(svc, Some(labels));
    metadata.name = None;
    metadata.generate_name = Some(format!("{}-", svc.name_any()));
    EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(
            ports
                .into_iter()
                .map(|(name, port, protocol)| {
                    podd_api::k8s_openapi::api::discovery::v1::EndpointPort {
                        name: Some(name.unwrap_or_default()),
                        port: Some(port),
                        protocol: Some(protocol),
                        app_protocol: None,
                    }
                })
                .collect(),
        ),
    }
}

/// The slice the controller keeps for a Service, if it has one.
fn current_slice(registry: &Registry, svc: &Service) -> Option<EndpointSlice> {
    let (objs, _) = registry.cache().snapshot(
        Kind::EndpointSlice,
        &Kind::EndpointSlice.key_prefix(svc.namespace().as_deref()),
    );
    objs.iter()
        .filter(|o| {
            o.labels.get(SERVICE_NAME_LABEL) == Some(&svc.name_any())
                && o.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        })
        .filter_map(|o| o.decode())
        .next()
}

async fn reconcile_slice(
    registry: &Registry,
    svc: &Service,
    pods: &[Pod],
) -> Result<i64, crate::ApiError> {
    let mut want = desired_slice(svc, pods);
    let out = match current_slice(registry, svc) {
        None => registry.create_obj(&want).await?,
        Some(cur) => {
            if cur.endpoints == want.endpoints
                && cur.ports == want.ports
                && cur.metadata.labels == want.metadata.labels
                && cur.metadata.owner_references == want.metadata.owner_references
            {
                return Ok(0);
            }
            want.metadata.name = cur.metadata.name.clone();
            want.metadata.generate_name = cur.metadata.generate_name.clone();
            want.metadata.resource_version = cur.metadata.resource_version.clone();
            registry
                .update_obj(&want, crate::registry::Subresource::Main)
                .await?
        }
    };
    Ok(rev_of(out.metadata()))
}

async fn reconcile(registry: &Registry, key: &str) -> i64 {
    let cache = registry.cache();
    let Some(svc) = cache
        .get(Kind::Service, key)
        .and_then(|o| o.decode::<Service>())
    else {
        return 0;
    };
    let sel = selector_of(&svc);
    if sel.is_empty() {
        // Endpoints of selector-less services are written by hand.
        return 0;
    }
    let ns = svc.namespace().unwrap_or_default();
    let (objs, _) = cache.snapshot(Kind::Pod, &Kind::Pod.key_prefix(Some(&ns)));
    let pods: Vec<Pod> = objs
        .iter()
        .filter(|o| selects(&sel, &o.labels))
        .filter_map(|o| o.decode())
        .collect();
    let slice_rev = match reconcile_slice(registry, &svc, &pods).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(service = key, error = %e, "endpointslice write failed; will retry");
            0
        }
    };
    let want = desired_endpoints(&svc, &pods);
    let ep_key = Kind::Endpoints.key(&ns, &svc.name_any());
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
                return slice_rev;
            }
            let mut upd = want;
            upd.metadata.resource_version = cur.metadata.resource_version.clone();
            registry
                .update_obj(&upd, crate::registry::Subresource::Main)
                .await
        }
    };
    match result {
        Ok(ep) => rev_of(ep.metadata()).max(slice_rev),
        Err(e) => {
            tracing::debug!(service = key, error = %e, "endpoints write failed; will retry");
            slice_rev
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
                        .insert(o.key.clone(), selector_of(&s));
                }
                queue.add(o.key.clone());
            }
        }
        let on_svc =
            |ev: &crate::cache::CacheEvent,
             selectors: &mut BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
             queue: &mut WorkQueue| {
                let ns = selectors.entry(ev.object.namespace.clone()).or_default();
                if ev.kind == WatchEventType::Deleted {
                    ns.remove(&ev.object.key);
                } else if let Some(s) = ev.object.decode::<Service>() {
                    ns.insert(ev.object.key.clone(), selector_of(&s));
                    queue.add(ev.object.key.clone());
                }
            };
        let on_pod = |ev: &crate::cache::CacheEvent,
                      selectors: &BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
                      queue: &mut WorkQueue| {
            if let Some(svcs) = selectors.get(&ev.object.namespace) {
                for (k, sel) in svcs {
                    let hit = |l: &Labels| selects(sel, l);
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

    fn svc() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    fn mk(name: &str, ip: &str, ready: bool, app: &str, port: i32) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
                "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn ready_and_not_ready_addresses() {
        let pods = vec![
            mk("b", "10.244.1.3", true, "web", 8080),
            mk("a", "10.244.1.2", true, "web", 8080),
            mk("c", "10.244.1.4", false, "web", 8080),
            mk("d", "10.244.1.5", true, "db", 8080),
            mk("e", "", true, "web", 8080),
        ];
        let ep = desired_endpoints(&svc(), &pods);
        let subsets = ep.subsets.unwrap();
        let s = &subsets[0];
        let ips: Vec<_> = s
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ips, vec!["10.244.1.2", "10.244.1.3"]);
        assert_eq!(s.not_ready_addresses.as_ref().unwrap().len(), 1);
        let ports = s.ports.as_ref().unwrap();
        assert_eq!(
            (ports[0].port, ports[0].name.as_deref()),
            (8080, Some("http"))
        );
        let r = s.addresses.as_ref().unwrap()[0]
            .target_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("Pod"), Some("a"), Some("u-a"))
        );
        assert_eq!(
            s.addresses.as_ref().unwrap()[0].node_name.as_deref(),
            Some("n1")
        );
        assert!(desired_endpoints(&svc(), &[]).subsets.is_none());
    }

    #[test]
    fn a_named_port_resolves_per_pod() {
        let pods = vec![
            mk("a", "10.244.1.2", true, "web", 8080),
            mk("b", "10.244.1.3", true, "web", 9090),
        ];
        let subsets = desired_endpoints(&svc(), &pods).subsets.unwrap();
        let mut ports: Vec<i32> = subsets
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port)
            .collect();
        ports.sort();
        assert_eq!(ports, vec![8080, 9090]);
    }

    #[test]
    fn the_slice_lists_endpoints_with_conditions() {
        let mut gone = mk("t", "10.244.1.9", true, "web", 8080);
        gone.metadata.deletion_timestamp = Some(podd_api::Time(podd_api::jiff::Timestamp::now()));
        let pods = vec![
            mk("a", "10.244.1.2", true, "web", 8080),
            mk("c", "10.244.1.4", false, "web", 8080),
            gone,
        ];
        let s = desired_slice(&svc(), &pods);
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        let ports = s.ports.as_ref().unwrap();
        assert_eq!(
            (ports[0].port, ports[0].name.as_deref()),
            (Some(8080), Some("http"))
        );
        let conds: Vec<(bool, bool, bool)> = s
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.as_ref().unwrap();
                (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
            })
            .collect();
        assert_eq!(
            conds,
            vec![
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
        assert_eq!(
            s.endpoints[0].target_ref.as_ref().unwrap().name.as_deref(),
            Some("a")
        );
        assert_eq!(s.endpoints[0].node_name.as_deref(), Some("n1"));
    }
}

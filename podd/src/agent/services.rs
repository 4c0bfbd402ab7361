//! Services on this node: the eBPF load balancer's maps and the DNS records follow the
//! Services and Endpoints in the API. Each change re-syncs the full desired set; the loader
//! writes only the difference.

use futures::StreamExt;
use podd_api::{Endpoints, ResourceExt, Service};
use podd_client::{Client, ListParams, WatcherEvent, watcher};
use podd_dns::DnsServer;
use podd_lb::LoadBalancer;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Key = (String, String);

fn key<T: ResourceExt>(obj: &T) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

pub async fn run(
    client: Client,
    lb: Option<Arc<Mutex<LoadBalancer>>>,
    dns: Option<Arc<DnsServer>>,
) {
    let mut services: BTreeMap<Key, Service> = BTreeMap::new();
    let mut endpoints: BTreeMap<Key, Endpoints> = BTreeMap::new();
    let mut svc_events = Box::pin(watcher(client.api::<Service>(None), ListParams::default()));
    let mut ep_events = Box::pin(watcher(
        client.api::<Endpoints>(None),
        ListParams::default(),
    ));
    let (mut have_svc, mut have_ep) = (false, false);
    loop {
        let changed = tokio::select! {
            ev = svc_events.next() => match ev {
                Some(Ok(WatcherEvent::Restarted(all))) => {
                    services = all.into_iter().map(|s| (key(&s), s)).collect();
                    have_svc = true;
                    true
                }
                Some(Ok(WatcherEvent::Applied(s))) => {
                    services.insert(key(&s), s);
                    true
                }
                Some(Ok(WatcherEvent::Deleted(s))) => {
                    services.remove(&key(&s));
                    true
                }
                Some(Err(e)) => { tracing::debug!(error = %e, "service watch (retrying)"); false }
                None => return,
            },
            ev = ep_events.next() => match ev {
                Some(Ok(WatcherEvent::Restarted(all))) => {
                    endpoints = all.into_iter().map(|e| (key(&e), e)).collect();
                    have_ep = true;
                    true
                }
                Some(Ok(WatcherEvent::Applied(e))) => {
                    endpoints.insert(key(&e), e);
                    true
                }
                Some(Ok(WatcherEvent::Deleted(e))) => {
                    endpoints.remove(&key(&e));
                    true
                }
                Some(Err(e)) => { tracing::debug!(error = %e, "endpoints watch (retrying)"); false }
                None => return,
            },
        };
        // Until both lists are in, a partial view would withdraw live services.
        if !changed || !have_svc || !have_ep {
            continue;
        }
        // Let a burst of events (a scale-up) settle into one sync.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let svcs: Vec<Service> = services.values().cloned().collect();
        let eps: Vec<Endpoints> = endpoints.values().cloned().collect();
        if let Some(dns) = &dns {
            dns.set_services(&podd_dns::service_records(&svcs, &eps));
        }
        if let Some(lb) = &lb {
            let lb = lb.clone();
            let result = tokio::task::spawn_blocking(move || {
                let (entries, skipped) = podd_lb::from_api(&svcs, &eps);
                for s in skipped {
                    tracing::debug!(service = %s.service, reason = %s.reason, "service not load-balanced");
                }
                let mut lb = lb.lock().unwrap_or_else(|e| e.into_inner());
                lb.sync(&entries)
            })
            .await;
            match result {
                Ok(Ok(report)) => tracing::debug!(writes = report.total(), "load balancer synced"),
                Ok(Err(e)) => tracing::error!(error = %e, "syncing the service load balancer"),
                Err(e) => tracing::error!(error = %e, "the load balancer sync task failed"),
            }
        }
    }
}

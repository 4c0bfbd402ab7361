//! Routes to the other nodes' pod CIDRs through their node IPs, kept equal to the Node list.

use futures::StreamExt;
use podd_api::{Node, ResourceExt};
use podd_client::{Client, ListParams, WatcherEvent, watcher};
use podd_net::{Ipv4Cidr, NodeNetwork, PeerRoute};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The route to `node`'s pods, if it has a pod CIDR and an InternalIP.
fn peer_route(node: &Node) -> Option<PeerRoute> {
    let cidr: Ipv4Cidr = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
    let via: Ipv4Addr = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()?;
    Some(PeerRoute { cidr, via })
}

pub async fn run(client: Client, me: String, net: Arc<NodeNetwork>) {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut events = Box::pin(watcher(client.api::<Node>(None), ListParams::default()));
    let mut last: Vec<PeerRoute> = Vec::new();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(WatcherEvent::Restarted(all)) => {
                nodes = all.into_iter().map(|n| (n.name_any(), n)).collect();
            }
            Ok(WatcherEvent::Applied(n)) => {
                nodes.insert(n.name_any(), n);
            }
            Ok(WatcherEvent::Deleted(n)) => {
                nodes.remove(&n.name_any());
            }
            Err(e) => {
                tracing::debug!(error = %e, "node watch (retrying)");
                continue;
            }
        }
        let desired: Vec<PeerRoute> = nodes
            .values()
            .filter(|n| n.name_any() != me)
            .filter_map(peer_route)
            .collect();
        if desired == last {
            continue;
        }
        let net = net.clone();
        let want = desired.clone();
        match tokio::task::spawn_blocking(move || net.sync_routes(&want)).await {
            Ok(Ok(report)) => {
                tracing::info!(
                    routes = desired.len(),
                    ?report,
                    "routes to other nodes synced"
                );
                last = desired;
            }
            Ok(Err(e)) => tracing::error!(error = %e, "syncing routes to other nodes"),
            Err(e) => tracing::error!(error = %e, "the route sync task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pod_cidr: &str, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"podCIDR": pod_cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_peer_route_takes_the_pod_cidr_through_the_one_cidr_parser() {
        assert_eq!(
            peer_route(&node("10.244.7.0/24", "192.168.1.7")),
            Some(PeerRoute {
                cidr: "10.244.7.0/24".parse().unwrap(),
                via: Ipv4Addr::new(192, 168, 1, 7),
            })
        );
        // Ipv4Cidr's parser refuses host bits, a missing length and a length over 32.
        for bad in ["10.244.7.1/24", "10.244.7.0", "10.244.7.0/33", ""] {
            assert_eq!(peer_route(&node(bad, "192.168.1.7")), None, "{bad}");
        }
    }
}

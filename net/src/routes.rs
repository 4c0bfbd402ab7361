//! Routes to other nodes' pod CIDRs: what to add and remove, as pure logic.
//!
//! podd marks the routes it creates with its own `rtm_protocol` number, so a
//! sync only ever deletes routes carrying that number, and never overwrites a
//! route someone else made for the same prefix.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;
use crate::netlink::Route;

/// The default `rtm_protocol` number on podd's routes (shown by `ip route`
/// as `proto 173`). Unassigned in iproute2's rt_protos list.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 173;

/// "Pods of this CIDR live behind this node IP."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerRoute {
    pub cidr: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// Why a desired route was not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict {
    pub route: PeerRoute,
    pub reason: String,
}

/// What one `sync_routes` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSyncReport {
    pub added: Vec<PeerRoute>,
    pub removed: Vec<PeerRoute>,
    pub unchanged: usize,
    /// Routes left out on purpose: a foreign route for the prefix, the node's
    /// own CIDR, a prefix listed twice.
    pub conflicts: Vec<RouteConflict>,
    /// Routes the kernel refused (e.g. the node IP is unreachable); the next
    /// sync tries them again.
    pub failed: Vec<RouteConflict>,
}

/// The changes that bring `current` (the main table) to `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoutePlan {
    pub add: Vec<PeerRoute>,
    pub remove: Vec<Route>,
    pub unchanged: usize,
    pub conflicts: Vec<RouteConflict>,
}

pub(crate) fn plan_routes(
    desired: &[PeerRoute],
    current: &[Route],
    protocol: u8,
    own_cidr: Ipv4Cidr,
) -> RoutePlan {
    let mut plan = RoutePlan::default();
    // One gateway per prefix: the first listing wins, later ones are conflicts.
    let mut wanted: BTreeMap<Ipv4Cidr, Ipv4Addr> = BTreeMap::new();
    for route in desired {
        if route.cidr == own_cidr {
            plan.conflicts.push(RouteConflict {
                route: *route,
                reason: format!("{} is this node's own pod CIDR", route.cidr),
            });
            continue;
        }
        match wanted.get(&route.cidr) {
            Some(via) if *via != route.via => plan.conflicts.push(RouteConflict {
                route: *route,
                reason: format!("{} is already routed via {via} in this list", route.cidr),
            }),
            Some(_) => {}
            None => {
                wanted.insert(route.cidr, route.via);
            }
        }
    }

    let mine = |r: &Route| r.protocol == protocol;
    for route in current.iter().filter(|r| mine(r)) {
        let keep = Ipv4Cidr::new(route.destination, route.prefix_len)
            .ok()
            .and_then(|cidr| wanted.get(&cidr))
            .is_some_and(|via| route.gateway == Some(*via));
        if !keep {
            plan.remove.push(route.clone());
        }
    }

    for (cidr, via) in wanted {
        let route = PeerRoute { cidr, via };
        let same_prefix =
            |r: &&Route| r.destination == cidr.network() && r.prefix_len == cidr.prefix_len();
        if current
            .iter()
            .filter(same_prefix)
            .any(|r| mine(r) && r.gateway == Some(via))
        {
            plan.unchanged += 1;
        } else if let Some(foreign) = current.iter().filter(same_prefix).find(|r| !mine(r)) {
            plan.conflicts.push(RouteConflict {
                route,
                reason: format!(
                    "a route to {cidr} with protocol {} exists that podd did not create; remove it to let podd route this CIDR",
                    foreign.protocol
                ),
            });
        } else {
            plan.add.push(route);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u8 = DEFAULT_ROUTE_PROTOCOL;

    fn peer(cidr: &str, via: [u8; 4]) -> PeerRoute {
        PeerRoute {
            cidr: cidr.parse().unwrap(),
            via: Ipv4Addr::from(via),
        }
    }

    fn route(cidr: &str, via: [u8; 4], protocol: u8) -> Route {
        let c: Ipv4Cidr = cidr.parse().unwrap();
        Route {
            destination: c.network(),
            prefix_len: c.prefix_len(),
            gateway: Some(Ipv4Addr::from(via)),
            output_interface: None,
            protocol,
        }
    }

    fn own() -> Ipv4Cidr {
        "10.244.1.0/24".parse().unwrap()
    }

    #[test]
    fn adds_missing_removes_stale_keeps_matching() {
        let desired = [
            peer("10.244.2.0/24", [172, 31, 0, 2]),
            peer("10.244.3.0/24", [172, 31, 0, 3]),
        ];
        let current = [
            route("10.244.2.0/24", [172, 31, 0, 2], P),
            route("10.244.4.0/24", [172, 31, 0, 4], P),
        ];
        let plan = plan_routes(&desired, &current, P, own());
        assert_eq!(plan.add, vec![peer("10.244.3.0/24", [172, 31, 0, 3])]);
        assert_eq!(plan.remove, vec![current[1].clone()]);
        assert_eq!(plan.unchanged, 1);
        assert!(plan.conflicts.is_empty());
    }

    #[test]
    fn a_moved_gateway_is_removed_and_re_added() {
        let desired = [peer("10.244.2.0/24", [172, 31, 0, 9])];
        let current = [route("10.244.2.0/24", [172, 31, 0, 2], P)];
        let plan = plan_routes(&desired, &current, P, own());
        assert_eq!(plan.remove, vec![current[0].clone()]);
        assert_eq!(plan.add, desired.to_vec());
    }

    #[test]
    fn never_touches_routes_it_did_not_make() {
        let desired = [peer("10.244.2.0/24", [172, 31, 0, 2])];
        let current = [
            route("10.244.2.0/24", [192, 168, 0, 1], 3), // an admin's static route
            route("10.9.0.0/16", [192, 168, 0, 1], 4),
        ];
        let plan = plan_routes(&desired, &current, P, own());
        assert!(plan.add.is_empty());
        assert!(plan.remove.is_empty());
        assert_eq!(plan.conflicts.len(), 1);
        assert!(plan.conflicts[0].reason.contains("did not create"));
    }

    #[test]
    fn rejects_own_cidr_and_duplicates() {
        let desired = [
            peer("10.244.1.0/24", [172, 31, 0, 1]),
            peer("10.244.2.0/24", [172, 31, 0, 2]),
            peer("10.244.2.0/24", [172, 31, 0, 3]),
        ];
        let plan = plan_routes(&desired, &[], P, own());
        assert_eq!(plan.add, vec![peer("10.244.2.0/24", [172, 31, 0, 2])]);
        assert_eq!(plan.conflicts.len(), 2);
    }

    #[test]
    fn empty_desired_removes_all_of_ours() {
        let current = [
            route("10.244.2.0/24", [172, 31, 0, 2], P),
            route("10.244.3.0/24", [172, 31, 0, 3], 3),
        ];
        let plan = plan_routes(&[], &current, P, own());
        assert_eq!(plan.remove, vec![current[0].clone()]);
    }
}

//! A node's pod network: the bridge, one veth pair per pod, the IPAM, and
//! routes to other nodes' pod CIDRs.
//!
//! ```text
//!  node netns                                   pod netns
//!  podd0 (10.244.N.1/24) ── pdvXXXXXXXXXXXX ══ eth0 (10.244.N.x/24, default via .1), lo
//!  10.244.M.0/24 via <node M's IP>  (proto 173, one per other node)
//! ```

use std::collections::HashSet;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tracing::{debug, info, warn};

use crate::cidr::Ipv4Cidr;
use crate::error::{NetError, Result};
use crate::ipam::{DEFAULT_IPAM_DIR, Ipam};
use crate::netlink::{Netlink, Route};
use crate::netns::{NsKind, run_in_namespace};
use crate::routes::{
    DEFAULT_ROUTE_PROTOCOL, PeerRoute, RouteConflict, RouteSyncReport, plan_routes,
};

/// The default node bridge name.
pub const DEFAULT_BRIDGE: &str = "podd0";
/// The pod's interface name inside its namespace.
pub const POD_INTERFACE: &str = "eth0";
/// Host-side veth names start with this; the rest is a hash of the pod uid.
pub const HOST_VETH_PREFIX: &str = "pdv";

/// How a node's pod network is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetConfig {
    /// The bridge name (at most 15 bytes).
    pub bridge: String,
    /// This node's pod CIDR; the bridge holds its first address.
    pub pod_cidr: Ipv4Cidr,
    /// The network namespace the node's bridge lives in; `None` for the
    /// calling process's own (what the agent uses on a real node). Tests and
    /// simulated nodes pass a namespace file.
    pub node_netns: Option<PathBuf>,
    /// Base directory of the IPAM (a subdirectory per CIDR).
    pub ipam_dir: PathBuf,
    /// The `rtm_protocol` number that marks podd's routes.
    pub route_protocol: u8,
    /// MTU for the pod veth pairs; `None` keeps the kernel default (1500).
    pub mtu: Option<u32>,
    /// Prefixes that must never leave the node by its default route: the
    /// cluster's pod and service CIDRs. Each gets an `unreachable` route, so a
    /// packet to a pod CIDR with no node route yet, or to a VIP the load
    /// balancer did not translate, is refused here rather than sent out to
    /// the node's uplink. The more specific pod routes still win.
    pub unreachable_cidrs: Vec<Ipv4Cidr>,
}

/// The cluster pod CIDR of DESIGN.md.
pub const DEFAULT_CLUSTER_POD_CIDR: &str = "10.244.0.0/16";
/// The service CIDR of DESIGN.md.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

impl NodeNetConfig {
    /// The defaults of DESIGN.md for a node with this pod CIDR.
    pub fn new(pod_cidr: Ipv4Cidr) -> Self {
        NodeNetConfig {
            bridge: DEFAULT_BRIDGE.to_string(),
            pod_cidr,
            node_netns: None,
            ipam_dir: PathBuf::from(DEFAULT_IPAM_DIR),
            route_protocol: DEFAULT_ROUTE_PROTOCOL,
            mtu: None,
            unreachable_cidrs: [DEFAULT_CLUSTER_POD_CIDR, DEFAULT_SERVICE_CIDR]
                .iter()
                .map(|c| c.parse().expect("the default CIDRs are valid"))
                .collect(),
        }
    }
}

/// The pod CIDR of node number `n` in the default layout: `10.244.n.0/24`.
pub fn default_node_pod_cidr(n: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(Ipv4Addr::new(10, 244, n, 0), 24).expect("a /24 with zero host bits is valid")
}

/// The host-side veth name of a pod: `pdv` and 12 hex digits of a hash of the
/// uid. Interface names hold at most 15 bytes and uids are longer, so a hash;
/// 48 bits make a collision among a node's pods vanishingly unlikely, and
/// the name is derived again after a restart without any stored state.
pub fn host_veth_name(pod_uid: &str) -> String {
    // FNV-1a, 64 bit: stable across versions and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in pod_uid.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{HOST_VETH_PREFIX}{:012x}", hash >> 16)
}

/// The MAC address podd gives an interface holding `ip`: `0a:58:` and the
/// four bytes of the IP (locally administered, unicast). Fixed MACs keep
/// neighbours' ARP caches right: the bridge's MAC never changes as ports come
/// and go, and a pod IP handed out again comes with the same MAC.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x0a, 0x58, a, b, c, d]
}

fn validate_interface_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidName {
            what: "interface name",
            name: name.to_string(),
            reason: "an interface name is 1 to 15 bytes without '/', ':' or spaces".into(),
        })
    }
}

/// A pod's network as set up by [`NodeNetwork::attach_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub pod_uid: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The veth end in the node namespace, attached to the bridge.
    pub host_veth: String,
    /// The interface inside the pod (`eth0`).
    pub interface: String,
}

/// What [`NodeNetwork::reconcile`] cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetReconcileReport {
    pub freed_leases: Vec<(Ipv4Addr, String)>,
    pub deleted_veths: Vec<String>,
}

/// The pod network of one node. Owns the bridge (kept across agent
/// restarts; removed by [`NodeNetwork::destroy`]), the pod veths it created,
/// the leases, and the routes marked with its protocol number.
pub struct NodeNetwork {
    config: NodeNetConfig,
    gateway: Ipv4Addr,
    bridge_index: u32,
    netlink: Mutex<Netlink>,
    ipam: Mutex<Ipam>,
}

impl std::fmt::Debug for NodeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeNetwork")
            .field("config", &self.config)
            .field("bridge_index", &self.bridge_index)
            .finish_non_exhaustive()
    }
}

impl NodeNetwork {
    /// Makes sure the bridge exists with the gateway address and is up, that
    /// forwarding is on, and opens the IPAM. Idempotent: a restarted agent
    /// calls it again and finds everything in place.
    pub fn setup(config: NodeNetConfig) -> Result<Self> {
        validate_interface_name(&config.bridge)?;
        let gateway = config.pod_cidr.gateway()?;
        let mut netlink = match &config.node_netns {
            Some(path) => Netlink::open_in(path)?,
            None => Netlink::open()?,
        };
        let bridge = match netlink.link_by_name(&config.bridge)? {
            Some(link) if link.kind.as_deref() == Some("bridge") => link,
            Some(_) => {
                return Err(NetError::Conflict {
                    what: format!("interface {}", config.bridge),
                    expected: "a bridge".into(),
                });
            }
            None => {
                netlink.add_bridge(&config.bridge, Some(mac_for_ip(gateway)))?;
                info!(bridge = %config.bridge, "created the node bridge");
                netlink
                    .link_by_name(&config.bridge)?
                    .ok_or_else(|| NetError::Conflict {
                        what: format!("bridge {}", config.bridge),
                        expected: "present right after creating it".into(),
                    })?
            }
        };
        netlink.add_address(bridge.index, gateway, config.pod_cidr.prefix_len())?;
        if !bridge.up {
            netlink.set_link_up(bridge.index, true)?;
        }
        for cidr in &config.unreachable_cidrs {
            let added = netlink.add_unreachable_route(
                cidr.network(),
                cidr.prefix_len(),
                config.route_protocol,
            )?;
            if !added {
                debug!(%cidr, "a route for this prefix exists already; no unreachable route added");
            }
        }
        enable_forwarding(config.node_netns.as_deref())?;
        let ipam = Ipam::open(&config.ipam_dir, config.pod_cidr)?;
        Ok(NodeNetwork {
            gateway,
            bridge_index: bridge.index,
            netlink: Mutex::new(netlink),
            ipam: Mutex::new(ipam),
            config,
        })
    }

    pub fn config(&self) -> &NodeNetConfig {
        &self.config
    }

    /// The bridge's address, the pods' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    pub fn bridge_index(&self) -> u32 {
        self.bridge_index
    }

    fn netlink(&self) -> MutexGuard<'_, Netlink> {
        // Poisoning is harmless here: replies left over by a panicking
        // holder carry an old sequence number and are skipped.
        self.netlink.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ipam(&self) -> MutexGuard<'_, Ipam> {
        self.ipam.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects the pod whose network namespace is held at `pod_netns`:
    /// leases an IP, creates the veth pair (host end on the bridge, the peer
    /// as `eth0` in the pod), sets the address, brings up `eth0` and `lo`, and
    /// adds the default route. On failure everything it made is removed.
    pub fn attach_pod(&self, pod_uid: &str, pod_netns: &Path) -> Result<PodNetwork> {
        let ip = self.ipam().allocate(pod_uid)?;
        let pod = PodNetwork {
            pod_uid: pod_uid.to_string(),
            ip,
            prefix_len: self.config.pod_cidr.prefix_len(),
            gateway: self.gateway,
            host_veth: host_veth_name(pod_uid),
            interface: POD_INTERFACE.to_string(),
        };
        match self.connect(&pod, pod_netns) {
            Ok(()) => {
                debug!(pod = pod_uid, %ip, veth = %pod.host_veth, "attached pod network");
                Ok(pod)
            }
            Err(e) => {
                if let Err(cleanup) = self.detach_pod(pod_uid) {
                    warn!(pod = pod_uid, error = %cleanup, "cleanup after a failed attach");
                }
                Err(e)
            }
        }
    }

    fn connect(&self, pod: &PodNetwork, pod_netns: &Path) -> Result<()> {
        let netns_file = File::open(pod_netns)
            .map_err(|e| NetError::io("open pod network namespace", pod_netns, e))?;
        {
            let mut netlink = self.netlink();
            if let Some(stale) = netlink.link_by_name(&pod.host_veth)? {
                // Left by an attach that died half-way: start clean.
                netlink.delete_link(stale.index)?;
            }
            netlink.add_veth_pair(
                &pod.host_veth,
                self.bridge_index,
                &pod.interface,
                netns_file.as_fd(),
                Some(mac_for_ip(pod.ip)),
                self.config.mtu,
            )?;
        }
        let mut inside = Netlink::open_in(pod_netns)?;
        let loopback = inside
            .link_by_name("lo")?
            .ok_or_else(|| NetError::Conflict {
                what: format!("network namespace {}", pod_netns.display()),
                expected: "a namespace with a loopback device".into(),
            })?;
        inside.set_link_up(loopback.index, true)?;
        let eth0 = inside
            .link_by_name(&pod.interface)?
            .ok_or_else(|| NetError::Conflict {
                what: format!("network namespace {}", pod_netns.display()),
                expected: format!("holding {} right after creating it", pod.interface),
            })?;
        inside.add_address(eth0.index, pod.ip, pod.prefix_len)?;
        inside.set_link_up(eth0.index, true)?;
        inside.add_route(
            &Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Some(pod.gateway),
                output_interface: Some(eth0.index),
                protocol: self.config.route_protocol,
            },
            true,
        )?;
        Ok(())
    }

    /// Disconnects a pod: deletes its veth pair (both ends) and frees its
    /// lease. Idempotent, so it also cleans up after a half-done attach.
    pub fn detach_pod(&self, pod_uid: &str) -> Result<()> {
        let name = host_veth_name(pod_uid);
        {
            let mut netlink = self.netlink();
            if let Some(link) = netlink.link_by_name(&name)? {
                netlink.delete_link(link.index)?;
            }
        }
        let freed = self.ipam().release(pod_uid)?;
        debug!(pod = pod_uid, ?freed, "detached pod network");
        Ok(())
    }

    /// The network of a pod attached earlier (perhaps by a previous agent
    /// process), or `None` if it has no lease or no veth.
    pub fn pod_network(&self, pod_uid: &str) -> Result<Option<PodNetwork>> {
        let Some(ip) = self.ipam().lease_of(pod_uid) else {
            return Ok(None);
        };
        let host_veth = host_veth_name(pod_uid);
        if self.netlink().link_by_name(&host_veth)?.is_none() {
            return Ok(None);
        }
        Ok(Some(PodNetwork {
            pod_uid: pod_uid.to_string(),
            ip,
            prefix_len: self.config.pod_cidr.prefix_len(),
            gateway: self.gateway,
            host_veth,
            interface: POD_INTERFACE.to_string(),
        }))
    }

    /// Every lease of this node's CIDR, IP to pod uid, as on disk now.
    pub fn leases(&self) -> Result<std::collections::BTreeMap<Ipv4Addr, String>> {
        let mut ipam = self.ipam();
        ipam.refresh()?;
        Ok(ipam.leases().clone())
    }

    /// Frees the leases and deletes the host veths of pods that are not in
    /// `live_pod_uids`, for example pods deleted while the agent was down.
    pub fn reconcile(&self, live_pod_uids: &HashSet<String>) -> Result<NetReconcileReport> {
        let live_names: HashSet<String> = live_pod_uids.iter().map(|u| host_veth_name(u)).collect();
        let mut report = NetReconcileReport::default();
        {
            let mut netlink = self.netlink();
            for link in netlink.links()? {
                let ours = link.controller == Some(self.bridge_index)
                    && link.kind.as_deref() == Some("veth")
                    && link.name.starts_with(HOST_VETH_PREFIX);
                if ours && !live_names.contains(&link.name) && netlink.delete_link(link.index)? {
                    report.deleted_veths.push(link.name);
                }
            }
        }
        report.freed_leases = self.ipam().reconcile(live_pod_uids)?;
        Ok(report)
    }

    /// Makes podd's routes in the node namespace exactly `desired`: adds the
    /// missing ones, removes podd's stale ones, and leaves every route that
    /// podd did not create alone (a clash with one is reported, not fixed).
    pub fn sync_routes(&self, desired: &[PeerRoute]) -> Result<RouteSyncReport> {
        let mut netlink = self.netlink();
        let current = netlink.routes()?;
        let plan = plan_routes(
            desired,
            &current,
            self.config.route_protocol,
            self.config.pod_cidr,
        );
        let mut report = RouteSyncReport {
            unchanged: plan.unchanged,
            conflicts: plan.conflicts,
            ..RouteSyncReport::default()
        };
        for route in &plan.remove {
            if netlink.delete_route(route)?
                && let (Ok(cidr), Some(via)) = (
                    Ipv4Cidr::new(route.destination, route.prefix_len),
                    route.gateway,
                )
            {
                report.removed.push(PeerRoute { cidr, via });
            }
        }
        for peer in &plan.add {
            let route = Route {
                destination: peer.cidr.network(),
                prefix_len: peer.cidr.prefix_len(),
                gateway: Some(peer.via),
                output_interface: None,
                protocol: self.config.route_protocol,
            };
            // One unreachable node must not keep the others' routes out: the
            // failure is reported and the next sync tries again.
            match netlink.add_route(&route, false) {
                Ok(()) => report.added.push(*peer),
                Err(e) => report.failed.push(RouteConflict {
                    route: *peer,
                    reason: e.to_string(),
                }),
            }
        }
        for conflict in report.conflicts.iter().chain(&report.failed) {
            warn!(cidr = %conflict.route.cidr, via = %conflict.route.via, reason = %conflict.reason, "pod route not installed");
        }
        Ok(report)
    }

    /// Removes the node's pod network: podd's routes (node routes and
    /// unreachable guards) and the bridge. Pod
    /// veths and leases belong to pods and go with [`NodeNetwork::detach_pod`].
    pub fn destroy(self) -> Result<()> {
        self.sync_routes(&[])?;
        let mut netlink = self.netlink();
        for cidr in &self.config.unreachable_cidrs {
            netlink.delete_unreachable_route(
                cidr.network(),
                cidr.prefix_len(),
                self.config.route_protocol,
            )?;
        }
        netlink.delete_link(self.bridge_index)?;
        info!(bridge = %self.config.bridge, "removed the node bridge");
        Ok(())
    }
}

/// Turns on IPv4 forwarding in the node namespace, so pod traffic is routed
/// between the bridge and the node's uplink. `/proc/sys/net` shows the
/// namespace of the thread reading it, so for another namespace it is written
/// from a thread inside it.
fn enable_forwarding(node_netns: Option<&Path>) -> Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let write = || -> Result<()> {
        let current = fs::read_to_string(PATH).map_err(|e| NetError::io("read", PATH, e))?;
        if current.trim() != "1" {
            fs::write(PATH, "1\n").map_err(|e| NetError::io("write", PATH, e))?;
            info!("enabled IPv4 forwarding");
        }
        Ok(())
    };
    match node_netns {
        Some(path) => run_in_namespace(path, NsKind::Net, write)?,
        None => write(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_are_stable() {
        let a = host_veth_name("0b8f3c5e-1d2a-4c3b-9e8f-7a6b5c4d3e2f");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with(HOST_VETH_PREFIX));
        assert_eq!(a, host_veth_name("0b8f3c5e-1d2a-4c3b-9e8f-7a6b5c4d3e2f"));
        assert_ne!(a, host_veth_name("0b8f3c5e-1d2a-4c3b-9e8f-7a6b5c4d3e2e"));
        validate_interface_name(&a).unwrap();
    }

    #[test]
    fn node_network_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NodeNetwork>();
    }

    #[test]
    fn macs_derive_from_ips() {
        assert_eq!(
            mac_for_ip(Ipv4Addr::new(10, 244, 1, 7)),
            [0x0a, 0x58, 10, 244, 1, 7]
        );
        // Locally administered, unicast.
        assert_eq!(mac_for_ip(Ipv4Addr::new(1, 2, 3, 4))[0] & 0b11, 0b10);
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(validate_interface_name("podd0").is_ok());
        assert!(validate_interface_name("a-very-long-bridge").is_err());
        assert!(validate_interface_name("a/b").is_err());
        assert!(validate_interface_name("").is_err());
    }

    #[test]
    fn default_cidrs_follow_the_design() {
        assert_eq!(default_node_pod_cidr(3).to_string(), "10.244.3.0/24");
        let config = NodeNetConfig::new(default_node_pod_cidr(3));
        assert_eq!(config.bridge, "podd0");
        assert_eq!(config.ipam_dir, PathBuf::from("/var/lib/podd/ipam"));
    }
}

//! Pod networking for podd, all through netlink and syscalls:
//!
//! - [`netns`]: namespaces held by bind mounts (the pod sandbox's network,
//!   IPC and UTS namespaces), and running code inside one;
//! - [`node`]: the node bridge, a veth pair per pod, routes to other nodes;
//! - [`ipam`]: pod IPs from the node's CIDR, leased through files on disk;
//! - [`netlink`]: the small synchronous rtnetlink client underneath.
//!
//! See docs/NETWORK.md for the design and how the agent drives it.

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod cidr;
pub mod error;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod node;
pub mod routes;

pub use cidr::Ipv4Cidr;
pub use error::{NetError, Result};
pub use ipam::Ipam;
pub use netns::{NamedNamespace, NsKind, SandboxNamespaces, run_in_namespace};
pub use node::{NodeNetConfig, NodeNetwork, PodNetwork, host_veth_name};
pub use routes::{PeerRoute, RouteSyncReport};

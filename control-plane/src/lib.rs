//! podd's control plane: the API server (Unix socket and TLS with bearer tokens), the watch
//! cache that fans one store watch out to every watcher, the registry (the API's semantics over
//! the store), the persisted allocators, the controllers, and hollow nodes for scale tests.

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod agent_proxy;
pub mod alloc;
pub mod auth;
pub mod cache;
pub mod conn_limits;
pub mod controllers;
pub mod discovery;
pub mod encryption;
pub mod error;
pub mod hollow;
pub mod http;
pub mod leases;
pub mod metrics;
pub mod negotiate;
pub mod node_reads;
pub mod registry;
pub mod server;
pub mod streaming;
pub mod table;
pub mod tls;
pub mod usage;

pub use error::ApiError;
pub use server::{ControlPlane, ControlPlaneConfig};

//! podd's scheduler: a pure, deterministic placement engine (no I/O).
//!
//! It keeps an incremental model of the cluster (nodes, what is bound where, replica counts
//! per spread group) and places pods with Kubernetes' filters (NodeUnschedulable,
//! TaintToleration, NodeAffinity/nodeSelector, NodePorts, NodeResourcesFit, and optionally a
//! hard zone max-skew) and integer scores (least- or most-allocated, balanced allocation,
//! node and zone spreading, PreferNoSchedule taints). A score index (`index.rs`) finds the
//! node a full scan would pick without scanning every node. See docs/SCHEDULER.md.

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod filters;
mod fxhash;
mod index;
mod model;
mod scheduler;
mod score;

pub use filters::{
    NODE_NAME_FIELD, REASON_AFFINITY, REASON_CPU, REASON_MEMORY, REASON_PORTS, REASON_SPREAD,
    REASON_TOO_MANY_PODS, REASON_UNSCHEDULABLE, affinity_matches, node_affinity_matches,
    requirement_matches, selector_matches, term_matches, tolerates,
};
pub use model::{
    DEFAULT_MAX_PODS, HOSTNAME_LABEL, NOT_READY_TAINT, NodeInfo, POD_TEMPLATE_HASH_LABEL, PodInfo,
    Preemption, ResourceStrategy, SYSTEM_PRIORITY_CLASSES, SchedulerConfig, UNSCHEDULABLE_TAINT,
    Unschedulable, ZONE_LABEL, pod_priority, spread_group,
};
pub use scheduler::Scheduler;
pub use score::{NodeUsage, SCALE, score_node, stable_hash, tie_key, util};

/// The filters as pure functions, for reference implementations (the benchmark's baseline).
pub mod reference {
    pub use crate::filters::{fits, ports_free, resource_reasons, static_check};
}

//! podd's service load balancer, userspace side: loads the socket-level eBPF programs of
//! `podd-ebpf`, attaches them to cgroup v2 directories, and keeps the service maps equal to the
//! desired set of Services and their ready Endpoints with minimal, ordered writes.
//!
//! ```no_run
//! use podd_lb::{LbConfig, LoadBalancer};
//! let mut lb = LoadBalancer::start(LbConfig::new("/sys/fs/cgroup/podd/pods"))?;
//! let (entries, _skipped) = podd_lb::from_api(&[], &[]);
//! lb.sync(&entries)?;
//! # Ok::<(), podd_lb::LbError>(())
//! ```
//! See docs/SERVICES.md for the design.

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod loader;
pub mod maglev;
mod plan;
mod spec;

pub use loader::{
    DEFAULT_PIN_DIR, LbConfig, LoadBalancer, PROGRAMS, ProgramStats, SyncReport,
    enable_program_stats,
};
pub use plan::PlanError;
pub use podd_lb_common::ServiceStats;
pub use spec::{
    ALGORITHM_ANNOTATION, Frontend, Protocol, Selection, ServiceEntry, Skipped, from_api,
};

use std::path::PathBuf;

/// The kernel object, built by `cargo xtask build-ebpf` and embedded by build.rs.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/podd-lb.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error(
        "{path} is not on a BPF file system; mount one (`mount -t bpf bpf /sys/fs/bpf`) or configure a pin directory on one"
    )]
    NotBpffs { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {program} to cgroup {cgroup}: {reason}")]
    Attach {
        program: &'static str,
        cgroup: PathBuf,
        reason: String,
    },
    #[error("pinning link at {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error("map {map}: {op}: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("the eBPF object has no {0}; rebuild it with `cargo xtask build-ebpf`")]
    Missing(&'static str),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

//! See the crate description.
pub mod cluster;
pub mod workloads;

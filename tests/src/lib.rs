//! See the crate description.
// Every [dependencies] entry is used (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
pub mod cluster;
pub mod workloads;

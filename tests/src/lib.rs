//! See the crate description.
pub mod cluster;

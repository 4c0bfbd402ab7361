//! `cargo xtask cluster up --nodes N` / `cargo xtask cluster down`: a multi-node podd cluster
//! on this machine, one network namespace and cgroup subtree per node, joined by a bridge in a
//! cluster namespace (see tests/src/cluster.rs and docs/CLUSTER.md). Its state and logs live
//! in /run/podd-cluster, so `down` finds everything `up` made.
//!
//! The cluster code is the e2e tests' harness; the xtask builds the binaries and runs it
//! through the `cluster` example of podd-tests, so the xtask itself stays light.

use anyhow::{Result, bail};
use std::path::PathBuf;

use crate::process::{cargo, run, workspace_root};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn cluster_example(args: &[&str]) -> Result<()> {
    run(cargo()
        .args([
            "run",
            "-q",
            "-p",
            "podd-tests",
            "--example",
            "cluster",
            "--",
        ])
        .args(args)
        .env("PODD_BIN_DIR", target_dir().join("debug")))
}

/// Builds podd, podd-shim and podctl, then starts a server and `nodes` agents.
pub fn up(nodes: usize) -> Result<()> {
    if nodes == 0 {
        bail!("a cluster needs at least one node (--nodes N)");
    }
    run(cargo().args(["build", "-p", "podd", "-p", "podd-pod", "-p", "podctl"]))?;
    cluster_example(&["up", &nodes.to_string()])
}

/// Stops the cluster and removes everything it made, checking nothing is left.
pub fn down() -> Result<()> {
    cluster_example(&["down"])
}

//! `cluster up N` / `cluster down`: the multi-node cluster on this machine, kept in
//! /run/podd-cluster (what `cargo xtask cluster up|down` runs).
#![allow(clippy::print_stdout)]

use anyhow::{Result, bail};
use podd_tests::cluster::{Cluster, XTASK_CLUSTER_DIR};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(XTASK_CLUSTER_DIR);
    match args.first().map(String::as_str) {
        Some("up") => {
            let n = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
            let c = Cluster::up_at(n, "podd-cl", dir)?;
            println!("cluster up: {} nodes Ready: {:?}", n, c.ready_nodes()?);
            println!("state and logs in {}", dir.display());
            println!("use it with: podctl --server {} get nodes", c.server_url());
            c.detach();
        }
        Some("down") => {
            Cluster::attach(dir)?.down()?;
            println!("cluster down: nothing left");
        }
        _ => bail!("usage: cluster up [NODES] | cluster down"),
    }
    Ok(())
}

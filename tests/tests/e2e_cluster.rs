//! End to end on a 3-node netns cluster on this host: the scenario in `scenario/`.
//!
//! Needs root and the binaries: `cargo build -p podd -p podd-pod -p podctl` first (same
//! profile and target dir), then `cargo test -p podd-tests --test e2e_cluster -- --nocapture`.

mod scenario;

#[test]
fn three_node_cluster_end_to_end() -> anyhow::Result<()> {
    scenario::three_node_cluster_end_to_end()
}

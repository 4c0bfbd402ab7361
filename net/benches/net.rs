//! Pod network setup and teardown latency: podd-net (netlink, in-process)
//! beside the same steps done with iproute2 commands, as CNI-by-shell would.
//!
//! Run as root: `cargo bench -p podd-net --bench net`. Everything happens in
//! network namespaces the benchmark creates (prefix `poddbench-PID-`) and
//! removes, with no traffic at all.
#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use podd_net::netns::release_namespace_root;
use podd_net::node::default_node_pod_cidr;
use podd_net::{Ipam, NamedNamespace, NodeNetConfig, NodeNetwork, NsKind, SandboxNamespaces};

const PODS: usize = 100;

struct Guard {
    prefix: String,
    state: PathBuf,
    baseline_names: Vec<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for name in &self.baseline_names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
        let _ = release_namespace_root(&self.state);
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{}node", self.prefix)])
            .output();
        // /run/netns itself is left as `ip netns` leaves it (a shared
        // self-bind mount): other tests may be using it at the same time.
    }
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("iproute2");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats {
        median: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
    }
}

fn row(what: &str, podd: &Stats, baseline: Option<&Stats>) {
    let base = baseline
        .map(|b| {
            format!(
                "{:>10.3?} {:>10.3?}   {:>5.1}x",
                b.median,
                b.p99,
                b.median.as_secs_f64() / podd.median.as_secs_f64()
            )
        })
        .unwrap_or_default();
    println!(
        "{what:<34} {:>10.3?} {:>10.3?}   {base}",
        podd.median, podd.p99
    );
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("net bench: needs root (it creates network namespaces); skipped");
        return;
    }
    let pid = std::process::id();
    let prefix = format!("poddbench-{pid}-");
    let mut guard = Guard {
        prefix: prefix.clone(),
        state: PathBuf::from(format!("/run/{prefix}state")),
        baseline_names: Vec::new(),
    };

    // The node namespace is an `ip netns` name, so `ip -n` reaches it too.
    let node_name = format!("{prefix}node");
    ip(&["netns", "add", &node_name]);
    ip(&["-n", &node_name, "link", "set", "lo", "up"]);
    let node_path = Path::new("/run/netns").join(&node_name);
    let mut config = NodeNetConfig::new(default_node_pod_cidr(1));
    config.node_netns = Some(node_path.clone());
    config.ipam_dir = guard.state.join("ipam");
    let network = NodeNetwork::setup(config).expect("node network");

    // podd: network namespace + attach; then detach + remove.
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut held = Vec::new();
    let mut create_netns = Vec::new();
    let mut attach = Vec::new();
    for i in 0..PODS {
        let start = Instant::now();
        let ns = NamedNamespace::create(&guard.state, &format!("pod{i}"), NsKind::Net).unwrap();
        let created = Instant::now();
        network.attach_pod(&format!("uid-{i}"), ns.path()).unwrap();
        up.push(start.elapsed());
        create_netns.push(created - start);
        attach.push(created.elapsed());
        held.push(ns);
    }
    for (i, ns) in held.drain(..).enumerate() {
        let start = Instant::now();
        network.detach_pod(&format!("uid-{i}")).unwrap();
        ns.remove().unwrap();
        down.push(start.elapsed());
    }

    // Destroyed network namespaces are cleaned up by the kernel afterwards,
    // holding the rtnl lock; let that finish so phases don't slow each other.
    let settle = || std::thread::sleep(Duration::from_secs(3));
    settle();

    // podd with the full sandbox (net + ipc + uts, hostname set).
    let mut sandbox_up = Vec::new();
    let mut sandboxes = Vec::new();
    for i in 0..PODS {
        let start = Instant::now();
        let sandbox =
            SandboxNamespaces::create(&guard.state, &format!("sb{i}"), Some("bench")).unwrap();
        network
            .attach_pod(&format!("sb-uid-{i}"), sandbox.net_path())
            .unwrap();
        sandbox_up.push(start.elapsed());
        sandboxes.push(sandbox);
    }
    for (i, sandbox) in sandboxes.drain(..).enumerate() {
        network.detach_pod(&format!("sb-uid-{i}")).unwrap();
        sandbox.remove().unwrap();
    }

    settle();

    // Baseline: the same steps with iproute2, one command per step.
    let gateway = network.gateway().to_string();
    let mut base_up = Vec::new();
    let mut base_down = Vec::new();
    for i in 0..PODS {
        let name = format!("{prefix}b{i}");
        guard.baseline_names.push(name.clone());
        let veth = format!("pdb{pid:06}{i:03}");
        let veth = &veth[veth.len().saturating_sub(15)..];
        let address = format!("10.244.1.{}/24", 2 + (i % 250));
        let start = Instant::now();
        ip(&["netns", "add", &name]);
        ip(&[
            "-n", &node_name, "link", "add", veth, "master", "podd0", "up", "type", "veth", "peer",
            "name", "eth0", "netns", &name,
        ]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "addr", "add", &address, "dev", "eth0"]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "route", "add", "default", "via", &gateway]);
        base_up.push(start.elapsed());
        let start = Instant::now();
        ip(&["-n", &node_name, "link", "del", veth]);
        ip(&["netns", "del", &name]);
        base_down.push(start.elapsed());
        guard.baseline_names.pop();
    }

    // IPAM alone: allocate + release, each a file created and removed.
    let mut ipam = Ipam::open(&guard.state.join("ipam-bench"), default_node_pod_cidr(2)).unwrap();
    let mut ipam_ops = Vec::new();
    for i in 0..PODS * 5 {
        let owner = format!("o{i}");
        let start = Instant::now();
        ipam.allocate(&owner).unwrap();
        ipam.release(&owner).unwrap();
        ipam_ops.push(start.elapsed());
    }
    ipam.reconcile(&HashSet::new()).unwrap();

    println!("podd-net bench: {PODS} pods, median and p99 per pod");
    println!(
        "{:<34} {:>10} {:>10}   {:>10} {:>10}   {:>6}",
        "", "podd p50", "podd p99", "ip p50", "ip p99", "ip/podd"
    );
    row(
        "pod network up (netns+veth+addr)",
        &stats(up),
        Some(&stats(base_up)),
    );
    row("pod network down", &stats(down), Some(&stats(base_down)));
    row("  of which: netns create", &stats(create_netns), None);
    row("  of which: attach_pod", &stats(attach), None);
    row("full sandbox up (net+ipc+uts)", &stats(sandbox_up), None);
    row("IPAM allocate+release", &stats(ipam_ops), None);

    drop(network);
}

//! `podd reset`: removes everything podd made on this node: pods and their shims, sandboxes,
//! mounts, veths, leases, the bridge and routes, the load balancer's programs and pins, the
//! cgroups, and the state directories. Safe to run twice.

use anyhow::{Context, Result};
use podd_net::{Ipv4Cidr, NodeNetConfig, NodeNetwork};
use podd_pod::manager::{PodConfig, PodManager, remove_cgroup_tree};
use std::path::Path;
use std::sync::Arc;

pub fn reset(data_dir: &Path, run_dir: &Path, cgroup_root: &Path, pin_dir: &Path) -> Result<()> {
    let cgroup_root = cgroup_root.to_path_buf();
    let ipam = data_dir.join("ipam");
    let cidrs: Vec<Ipv4Cidr> = std::fs::read_dir(&ipam)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| {
                    let (net, len) = n.rsplit_once('-')?;
                    Ipv4Cidr::new(net.parse().ok()?, len.parse().ok()?).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    for cidr in cidrs {
        let mut cfg = NodeNetConfig::new(cidr);
        cfg.ipam_dir = ipam.clone();
        let net = Arc::new(NodeNetwork::setup(cfg).context("opening the node network")?);
        let mut pod_cfg = PodConfig::new(
            run_dir,
            data_dir,
            &cgroup_root,
            &crate::paths::shim_binary(),
        );
        pod_cfg.backoff_initial = std::time::Duration::from_millis(100);
        let manager = PodManager::new(pod_cfg, net.clone());
        for uid in manager.list() {
            println!("removing pod {uid}");
            // No grace period: the shim and the containers are killed, then everything the
            // pod had is removed.
            if let Some((status, true)) = manager.status(&uid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(status.shim_pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            manager
                .teardown(&uid)
                .with_context(|| format!("removing pod {uid}"))?;
        }
        drop(manager);
        if let Ok(net) = Arc::try_unwrap(net) {
            net.destroy()
                .context("removing the node bridge and routes")?;
            println!("removed the node bridge and routes");
        }
    }
    // A bridge left without its IPAM directory (an earlier, interrupted reset).
    let mut nl = podd_net::netlink::Netlink::open().context("opening netlink")?;
    if let Some(link) = nl.link_by_name(podd_net::node::DEFAULT_BRIDGE)? {
        nl.delete_link(link.index)?;
        println!("removed the bridge {}", podd_net::node::DEFAULT_BRIDGE);
    }
    let pods_cgroup = cgroup_root.join("podd/pods");
    if pods_cgroup.exists() {
        let mut cfg = podd_lb::LbConfig::new(&pods_cgroup);
        cfg.pin_dir = pin_dir.to_path_buf();
        cfg.cgroups.push(cgroup_root.clone());
        match podd_lb::LoadBalancer::start(cfg).and_then(|lb| lb.shutdown()) {
            Ok(()) => println!("removed the service load balancer"),
            Err(e) => eprintln!("warning: removing the service load balancer: {e}"),
        }
    }
    remove_cgroup_tree(&cgroup_root.join("podd"))
        .with_context(|| format!("removing {}", cgroup_root.join("podd").display()))?;
    if run_dir.exists() {
        podd_net::netns::release_namespace_root(run_dir)
            .with_context(|| format!("unmounting namespaces under {}", run_dir.display()))?;
        std::fs::remove_dir_all(run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    for sub in ["pods", "ipam", "images"] {
        let d = data_dir.join(sub);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    println!("podd reset: done");
    Ok(())
}

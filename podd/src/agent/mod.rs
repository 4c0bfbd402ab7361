//! The node agent: registers the node, renews its lease, runs the pods bound to it, programs
//! the service load balancer and DNS, and routes to the other nodes' pods.

mod attach;
mod config;
mod events;
mod http;
mod node;
mod pods;
mod routes;
mod services;
mod stream;
mod usage;

pub use http::socket_path;

use anyhow::{Context, Result};
use podd_client::Client;
use podd_image::{ImageStore, RegistryOptions};
use podd_net::{Ipv4Cidr, NodeNetConfig, NodeNetwork};
use podd_pod::manager::{PodConfig, PodManager};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub node_ip: Option<Ipv4Addr>,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub shim_binary: PathBuf,
    pub reserve_cpu_millis: u64,
    pub reserve_memory: u64,
    pub max_pods: u32,
    pub lease_interval: Duration,
    /// Registries spoken to over plain HTTP (host:port).
    pub insecure_registries: Vec<String>,
    /// Attach the service load balancer to the host's cgroup root too, so node processes
    /// reach services.
    pub lb_on_host: bool,
    /// Directory on a bpffs for the load balancer's pins.
    pub bpf_pin_dir: PathBuf,
    /// Caps on what the image store unpacks (`--image-max-*` flags).
    pub image_limits: podd_image::StoreLimits,
    pub cluster_domain: String,
    /// Serve the agent endpoint on `<node_ip>:10250` too, over TLS with the certificate the
    /// server issues at join (a joined node). Without it (the all-in-one node, whose server
    /// reaches it over the Unix socket) the endpoint is served on the Unix socket only.
    pub serve_tcp: bool,
}

impl AgentConfig {
    pub fn pods_cgroup(&self) -> PathBuf {
        self.cgroup_root.join("podd/pods")
    }
}

/// Runs the agent until the process is told to stop; pods keep running when it does.
pub async fn run(client: Client, cfg: AgentConfig) -> Result<()> {
    let (cpu, memory) = crate::paths::machine_capacity();
    let node = node::register(
        &client,
        &node::Registration {
            name: cfg.node_name.clone(),
            ip: cfg.node_ip,
            capacity_cpu: cpu,
            capacity_memory: memory,
            reserve_cpu: cfg.reserve_cpu_millis,
            reserve_memory: cfg.reserve_memory,
            max_pods: cfg.max_pods,
            labels: Default::default(),
        },
    )
    .await?;
    let pod_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .unwrap_or_default();
    tracing::info!(node = %cfg.node_name, %pod_cidr, "node registered");
    tokio::spawn(node::renew_lease(
        client.clone(),
        cfg.node_name.clone(),
        cfg.lease_interval,
    ));

    let cidr: Ipv4Cidr = pod_cidr
        .parse()
        .with_context(|| format!("the pod CIDR the server gave node {}", cfg.node_name))?;
    let mut net_cfg = NodeNetConfig::new(cidr);
    net_cfg.ipam_dir = cfg.data_dir.join("ipam");
    let net = Arc::new(
        tokio::task::spawn_blocking(move || NodeNetwork::setup(net_cfg))
            .await?
            .context("setting up the node's pod network")?,
    );
    let gateway = net.gateway();

    let upstream = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|t| podd_dns::upstream_from_resolv_conf(&t, Some(gateway)));
    let mut dns_cfg = podd_dns::DnsConfig::new(SocketAddr::from((gateway, 53)));
    dns_cfg.domain = cfg.cluster_domain.clone();
    dns_cfg.upstream = upstream;
    let dns = match podd_dns::DnsServer::start(dns_cfg).await {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            tracing::error!(error = %e, "cluster DNS is not served on this node");
            None
        }
    };

    let mut pod_cfg = PodConfig::new(
        &cfg.run_dir,
        &cfg.data_dir,
        &cfg.cgroup_root,
        &cfg.shim_binary,
    );
    pod_cfg.cluster_domain = cfg.cluster_domain.clone();
    pod_cfg.node_ip = cfg.node_ip;
    pod_cfg.dns_server = dns.as_ref().map(|_| gateway);
    pod_cfg.node_resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let manager = Arc::new(PodManager::new(pod_cfg, net.clone()));

    std::fs::create_dir_all(cfg.pods_cgroup())
        .with_context(|| format!("creating the pods' cgroup {}", cfg.pods_cgroup().display()))?;
    if let Err(e) = ensure_bpffs(&cfg.bpf_pin_dir) {
        tracing::warn!(error = %e, "could not mount a BPF file system for the load balancer's pins");
    }
    let mut lb_cfg = podd_lb::LbConfig::new(cfg.pods_cgroup());
    lb_cfg.pin_dir = cfg.bpf_pin_dir.clone();
    if cfg.lb_on_host {
        lb_cfg.cgroups.push(cfg.cgroup_root.clone());
    }
    let lb = match tokio::task::spawn_blocking(move || podd_lb::LoadBalancer::start(lb_cfg)).await?
    {
        Ok(lb) => Some(Arc::new(Mutex::new(lb))),
        Err(e) => {
            tracing::error!(error = %e, "the service load balancer is not running on this node");
            None
        }
    };

    // The server finds this endpoint itself (the Unix socket of its own machine's agent, or
    // the registered InternalIP): nothing about it is published on the Node.
    let tls = if cfg.serve_tcp {
        match node::agent_tls(&client, &cfg.node_name).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "the agent endpoint is not served on TCP: logs and exec of this node's pods fail"
                );
                None
            }
        }
    } else {
        None
    };
    if let Err(e) = (http::AgentHttp {
        manager: manager.clone(),
        tls,
        lb: lb.clone(),
    })
    .start(&cfg.run_dir, cfg.node_ip)
    {
        tracing::error!(error = %e, "the agent endpoint (logs, exec, metrics) is not served");
    }

    let images = ImageStore::open_with(cfg.data_dir.join("images"), cfg.image_limits)
        .context("opening the image store")?;
    let registry = RegistryOptions {
        plain_http: cfg.insecure_registries.clone(),
        ..RegistryOptions::default()
    };
    tokio::spawn(services::run(client.clone(), lb, dns));
    tokio::spawn(routes::run(
        client.clone(),
        cfg.node_name.clone(),
        net.clone(),
    ));
    pods::PodLoop {
        events: events::Recorder::new(client.clone(), &cfg.node_name),
        client,
        node: cfg.node_name.clone(),
        node_ip: cfg.node_ip,
        manager,
        images,
        registry,
        usage_period: Duration::from_secs(2),
    }
    .run()
    .await;
    Ok(())
}

/// Mounts bpffs on /sys/fs/bpf when the pin directory is under it and nothing is mounted
/// there yet (Debian does not mount it by default; systemd hosts do).
fn ensure_bpffs(pin_dir: &std::path::Path) -> Result<()> {
    let root = std::path::Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(root) {
        return Ok(());
    }
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/sys/fs/bpf"));
    if !mounted {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            Some("mode=0700"),
        )
        .context("mounting bpffs on /sys/fs/bpf")?;
        tracing::info!("mounted bpffs on /sys/fs/bpf");
    }
    Ok(())
}

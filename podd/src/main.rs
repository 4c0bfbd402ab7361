//! podd: the node daemon. `podd` runs the server and an agent on one node with the embedded
//! SQLite store; `podd server` and `podd agent` run them apart; `podd reset` removes what podd
//! made on a node.

// A daemon binary: `podd reset` and `podd image` report to the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// Every [dependencies] entry is used (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod agent;
mod kubeconfig;
mod paths;
mod reset;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use podd_control_plane::{ControlPlane, ControlPlaneConfig};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "podd",
    version,
    about = "A small, fast Kubernetes for Linux nodes"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    agent: AgentArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Connection and watch limits of the API server and the agent endpoint; each defaults to
/// podd_control_plane::conn_limits::ConnLimits::default() (documented there).
#[derive(Args, Debug, Clone)]
struct LimitArgs {
    /// Seconds a request's headers may take from their first byte [default: 10].
    #[arg(long = "header-timeout-seconds", global = true)]
    header_timeout: Option<f64>,
    /// Seconds an idle keep-alive connection stays open [default: 90].
    #[arg(long = "idle-timeout-seconds", global = true)]
    idle_timeout: Option<f64>,
    /// Seconds a TLS handshake may take [default: 10].
    #[arg(long = "tls-handshake-timeout-seconds", global = true)]
    tls_handshake_timeout: Option<f64>,
    /// Connections open at once from one address [default: 256].
    #[arg(long = "max-connections-per-ip", global = true)]
    max_connections_per_ip: Option<usize>,
    /// Connections open at once per listener [default: 4096].
    #[arg(long = "max-connections", global = true)]
    max_connections: Option<usize>,
    /// Watches open at once by one identity [default: 100].
    #[arg(long = "max-watches-per-identity", global = true)]
    max_watches_per_identity: Option<usize>,
    /// Watches open at once on the server [default: 2048].
    #[arg(long = "max-watches", global = true)]
    max_watches: Option<usize>,
}

impl LimitArgs {
    fn limits(&self) -> podd_control_plane::conn_limits::ConnLimits {
        let d = podd_control_plane::conn_limits::ConnLimits::default();
        let secs = |v: Option<f64>, d: Duration| v.map_or(d, Duration::from_secs_f64);
        podd_control_plane::conn_limits::ConnLimits {
            header_read_timeout: secs(self.header_timeout, d.header_read_timeout),
            idle_timeout: secs(self.idle_timeout, d.idle_timeout),
            tls_handshake_timeout: secs(self.tls_handshake_timeout, d.tls_handshake_timeout),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(d.max_connections_per_ip),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_watches_per_identity: self
                .max_watches_per_identity
                .unwrap_or(d.max_watches_per_identity),
            max_watches: self.max_watches.unwrap_or(d.max_watches),
            ..d
        }
    }
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// The API server, store and controllers.
    Server {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The node agent, joined to a server.
    Agent {
        /// https://HOST:6443 of the server.
        #[arg(long)]
        server: String,
        #[arg(long, env = "PODD_TOKEN")]
        token: String,
        /// The cluster CA (PEM) [default: DATA_DIR/pki/ca.crt].
        #[arg(long)]
        ca: Option<PathBuf>,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Manage the node's images.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
        #[arg(long, default_value = paths::DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Manage the agent tokens that let other nodes join this server.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
        /// The server's data directory (its tokens are under tokens/).
        #[arg(long, default_value = paths::DATA_DIR, global = true)]
        data_dir: PathBuf,
    },
    /// Print the admin kubeconfig of this node's server (the one the server writes to
    /// /etc/podd/kubeconfig at start), for kubectl and the Kubernetes client libraries.
    Kubeconfig {
        /// The server's data directory (its CA and admin token).
        #[arg(long, default_value = paths::DATA_DIR)]
        data_dir: PathBuf,
        /// The server URL to put in it [default: https://NODE-IP:6443].
        #[arg(long)]
        server: Option<String>,
        /// Authenticate with a new admin client certificate (CN=system:admin,
        /// O=system:masters, one year, from the server's client CA) instead of the admin token.
        #[arg(long)]
        client_cert: bool,
        /// Write it to this file (mode 0600) instead of printing it.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Remove every pod, namespace, mount, link, cgroup and file podd made on this node.
    Reset {
        #[arg(long, default_value = paths::DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long, default_value = paths::RUN_DIR)]
        run_dir: PathBuf,
        /// The cgroup v2 directory pods went under [default: the cgroup2 mount].
        #[arg(long)]
        cgroup_root: Option<PathBuf>,
        #[arg(long, default_value = "/sys/fs/bpf/podd")]
        bpf_pin_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Copy an image from an OCI layout directory into the node's store under NAME, for
    /// nodes without a registry.
    Import {
        layout: PathBuf,
        /// The image in the layout (its org.opencontainers.image.ref.name), e.g. busybox:latest.
        reference: String,
        /// The name pods use, e.g. busybox.
        name: String,
    },
    /// Build `busybox` and `busybox-httpd` (serving /www on port 8080) from the host's
    /// busybox-static and import them, so a node without a registry can run the quickstart.
    SeedBusybox,
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Issue the agent token of NODE (or print the one it has) and the command that joins it.
    /// A running server accepts it at once.
    Create { node: String },
    /// Revoke NODE's agent token; a running server refuses it at once.
    Delete { node: String },
}

#[derive(Args, Debug, Clone)]
struct ServerArgs {
    /// sqlite:///var/lib/podd/podd.db, etcd://HOST:PORT[,HOST:PORT], or memory:
    #[arg(long = "store", default_value = "sqlite:///var/lib/podd/podd.db")]
    store: String,
    #[arg(long = "data-dir", default_value = paths::DATA_DIR)]
    data_dir: PathBuf,
    #[arg(long = "socket", default_value = "/run/podd/podd.sock")]
    socket: PathBuf,
    #[arg(long = "listen", default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Seconds without a lease renewal before a node is NotReady.
    #[arg(long = "node-grace-seconds", default_value_t = 2.0)]
    node_grace: f64,
    /// After the server starts (or takes over as leader), the grace is at least this many
    /// seconds while the agents reconnect.
    #[arg(long = "node-startup-grace-seconds", default_value_t = 10.0)]
    node_startup_grace: f64,
    /// Where the server writes the admin kubeconfig at start (0600, root's); "" for nowhere.
    #[arg(long = "write-kubeconfig", default_value = kubeconfig::DEFAULT_PATH)]
    write_kubeconfig: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct AgentArgs {
    #[arg(long = "node-name")]
    node_name: Option<String>,
    #[arg(long = "node-ip")]
    node_ip: Option<Ipv4Addr>,
    #[arg(long = "agent-data-dir", default_value = paths::DATA_DIR)]
    agent_data_dir: PathBuf,
    #[arg(long = "run-dir", default_value = paths::RUN_DIR)]
    run_dir: PathBuf,
    /// The cgroup v2 directory pods go under [default: the cgroup2 mount].
    #[arg(long = "cgroup-root")]
    cgroup_root: Option<PathBuf>,
    #[arg(long = "reserve-cpu", default_value = "100m")]
    reserve_cpu: String,
    #[arg(long = "reserve-memory", default_value = "256Mi")]
    reserve_memory: String,
    #[arg(long = "max-pods", default_value_t = 110)]
    max_pods: u32,
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    #[arg(long = "bpf-pin-dir", default_value = "/sys/fs/bpf/podd")]
    bpf_pin_dir: PathBuf,
    /// Most bytes one image layer may unpack to (stops decompression bombs).
    #[arg(long = "image-max-layer-bytes", default_value_t = podd_image::StoreLimits::DEFAULT_MAX_LAYER_BYTES)]
    image_max_layer_bytes: u64,
    /// Most bytes the new layers of one image may unpack to, together.
    #[arg(long = "image-max-image-bytes", default_value_t = podd_image::StoreLimits::DEFAULT_MAX_IMAGE_BYTES)]
    image_max_image_bytes: u64,
    /// Most tar entries in one image layer.
    #[arg(long = "image-max-layer-entries", default_value_t = podd_image::StoreLimits::DEFAULT_MAX_LAYER_ENTRIES)]
    image_max_layer_entries: u64,
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PODD_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    podd_control_plane::conn_limits::set_process_limits(cli.limits.limits());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = run(cli, &rt);
    // Blocking tasks (a followed log, a DNS read) must not hold up a stop: everything that
    // matters is on disk, and the pods keep running without us.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

fn run(cli: Cli, rt: &tokio::runtime::Runtime) -> Result<()> {
    match cli.mode {
        None => rt.block_on(all_in_one(cli.server, cli.agent)),
        Some(Mode::Server { server }) => rt.block_on(async {
            let plane = start_server(&server).await?;
            wait_for_stop().await;
            plane.shutdown().await;
            Ok(())
        }),
        Some(Mode::Agent {
            server,
            token,
            ca,
            agent,
        }) => rt.block_on(async {
            let ca = ca.unwrap_or_else(|| agent.agent_data_dir.join("pki/ca.crt"));
            let mut agent_cfg = agent_config(&agent)?;
            // A joined node serves logs and exec on 10250 over mutual TLS; its token never
            // leaves the connection to the server.
            agent_cfg.serve_tcp = true;
            let cfg = podd_client::ClientConfig {
                server,
                ca: Some(ca),
                token: Some(token),
                token_file: None,
            };
            let client = cfg.client().context("connecting to the server")?;
            run_agent_until_stopped(client, agent_cfg).await
        }),
        Some(Mode::Reset {
            data_dir,
            run_dir,
            cgroup_root,
            bpf_pin_dir,
        }) => reset::reset(
            &data_dir,
            &run_dir,
            // With no cgroup2 mount there is no podd cgroup to remove either.
            &cgroup_root.unwrap_or_else(|| {
                podd_runtime::cgroups::detect_root().unwrap_or_else(|_| "/sys/fs/cgroup".into())
            }),
            &bpf_pin_dir,
        ),
        Some(Mode::Token { cmd, data_dir }) => token(cmd, &data_dir),
        Some(Mode::Kubeconfig {
            data_dir,
            server,
            client_cert,
            output,
        }) => {
            let server = server.unwrap_or_else(|| {
                kubeconfig::server_url(SocketAddr::from(([0, 0, 0, 0], 6443)), paths::node_ip())
            });
            let k = if client_cert {
                kubeconfig::admin_client_cert(&data_dir, &server)?
            } else {
                kubeconfig::admin(&data_dir, &server)?
            };
            match output {
                Some(path) => kubeconfig::write(&path, &k),
                None => {
                    print!("{}", kubeconfig::to_yaml(&k)?);
                    Ok(())
                }
            }
        }
        Some(Mode::Image {
            cmd:
                ImageCmd::Import {
                    layout,
                    reference,
                    name,
                },
            data_dir,
        }) => {
            let store = podd_image::ImageStore::open(data_dir.join("images"))?;
            let img = store
                .import_layout(&layout, &reference, &name)
                .with_context(|| format!("importing {reference} from {}", layout.display()))?;
            println!("imported {name} ({})", img.manifest_digest);
            Ok(())
        }
        Some(Mode::Image {
            cmd: ImageCmd::SeedBusybox,
            data_dir,
        }) => {
            let store = podd_image::ImageStore::open(data_dir.join("images"))?;
            let tmp = data_dir.join("images/tmp/seed");
            let _ = std::fs::remove_dir_all(&tmp);
            podd_image::busybox::write_busybox_layout(&tmp, podd_image::Compression::Gzip)
                .context(
                    "building the busybox images from /bin/busybox (install busybox-static)",
                )?;
            for name in ["busybox", "busybox-httpd"] {
                let img = store.import_layout(&tmp, &format!("{name}:latest"), name)?;
                println!("imported {name} ({})", img.manifest_digest);
            }
            std::fs::remove_dir_all(&tmp).ok();
            Ok(())
        }
    }
}

fn token(cmd: TokenCmd, data_dir: &std::path::Path) -> Result<()> {
    let auth = podd_control_plane::auth::Authenticator::load_or_init(data_dir)
        .with_context(|| format!("reading the tokens under {}", data_dir.display()))?;
    match cmd {
        TokenCmd::Create { node } => {
            if let Some(e) = podd_api::validation::check_dns1123_subdomain(&node) {
                anyhow::bail!("node name {node:?}: {e}");
            }
            let t = auth
                .issue_node_token(&node)
                .with_context(|| format!("writing the token of node {node}"))?;
            let server = paths::node_ip()
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "SERVER-IP".into());
            let ca = data_dir.join("pki/ca.crt");
            println!("{t}");
            eprintln!(
                "node {node} may join with (copy {ca} to it first):\n  \
                 podd agent --server https://{server}:6443 --token {t} --ca {ca} --node-name {node}",
                ca = ca.display()
            );
        }
        TokenCmd::Delete { node } => {
            if auth
                .revoke_node_token(&node)
                .with_context(|| format!("removing the token of node {node}"))?
            {
                println!("token of node {node} revoked");
            } else {
                anyhow::bail!(
                    "node {node} has no token under {}; nothing to revoke",
                    data_dir.join("tokens/nodes").display()
                );
            }
        }
    }
    Ok(())
}

async fn start_server(a: &ServerArgs) -> Result<ControlPlane> {
    start_server_with(a, None).await
}

async fn start_server_with(
    a: &ServerArgs,
    local_agent: Option<podd_control_plane::agent_proxy::LocalAgent>,
) -> Result<ControlPlane> {
    if let Some(path) = a.store.strip_prefix("sqlite://")
        && let Some(dir) = std::path::Path::new(path).parent()
    {
        // New directories 0700; the store tightens the one holding the database.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let (store, elector) = podd_store::open_with_elector(&a.store, &paths::hostname())
        .await
        .with_context(|| format!("opening the store {}", a.store))?;
    let controllers = podd_control_plane::controllers::ControllerConfig {
        node_grace: Duration::from_secs_f64(a.node_grace),
        node_startup_grace: Duration::from_secs_f64(a.node_startup_grace),
        ..Default::default()
    };
    let cfg = ControlPlaneConfig {
        data_dir: Some(a.data_dir.clone()),
        socket: Some(a.socket.clone()),
        tls_addr: Some(a.listen),
        tls_sans: paths::node_ip()
            .map(|i| vec![i.to_string()])
            .unwrap_or_default(),
        controllers: Some(controllers),
        elector: Some(elector),
        local_agent,
        limits: podd_control_plane::conn_limits::process_limits().clone(),
        ..ControlPlaneConfig::default()
    };
    let plane = ControlPlane::start(store, cfg)
        .await
        .context("starting the control plane")?;
    tracing::info!(store = %a.store, socket = %a.socket.display(), listen = %a.listen, "podd server is up");
    if !a.write_kubeconfig.as_os_str().is_empty() {
        let server = kubeconfig::server_url(a.listen, paths::node_ip());
        match kubeconfig::admin(&a.data_dir, &server)
            .and_then(|k| kubeconfig::write_recorded(&a.data_dir, &a.write_kubeconfig, &k))
        {
            Ok(()) => {
                tracing::info!(path = %a.write_kubeconfig.display(), %server, "wrote the admin kubeconfig")
            }
            Err(e) => tracing::warn!(
                path = %a.write_kubeconfig.display(),
                error = format!("{e:#}"),
                "could not write the admin kubeconfig; `podd kubeconfig` prints it"
            ),
        }
    }
    Ok(plane)
}

async fn all_in_one(server: ServerArgs, agent: AgentArgs) -> Result<()> {
    let cfg = agent_config(&agent)?;
    // This machine's agent is reached over its Unix socket, by configuration.
    let local = podd_control_plane::agent_proxy::LocalAgent {
        node: cfg.node_name.clone(),
        socket: agent::socket_path(&cfg.run_dir),
    };
    let plane = start_server_with(&server, Some(local)).await?;
    let client = plane
        .local_client()
        .context("the server has no local socket")?;
    let result = run_agent_until_stopped(client, cfg).await;
    plane.shutdown().await;
    result
}

fn agent_config(a: &AgentArgs) -> Result<agent::AgentConfig> {
    let cpu: podd_api::Cpu = a.reserve_cpu.parse()?;
    let mem: podd_api::Memory = a.reserve_memory.parse()?;
    Ok(agent::AgentConfig {
        node_name: a.node_name.clone().unwrap_or_else(paths::hostname),
        node_ip: a.node_ip.or_else(paths::node_ip),
        data_dir: a.agent_data_dir.clone(),
        run_dir: a.run_dir.clone(),
        cgroup_root: match &a.cgroup_root {
            Some(root) => root.clone(),
            None => podd_runtime::cgroups::detect_root()?,
        },
        shim_binary: paths::shim_binary(),
        reserve_cpu_millis: cpu.millis(),
        reserve_memory: mem.bytes(),
        max_pods: a.max_pods,
        lease_interval: Duration::from_millis(500),
        insecure_registries: a.insecure_registry.clone(),
        lb_on_host: true,
        bpf_pin_dir: a.bpf_pin_dir.clone(),
        image_limits: podd_image::StoreLimits {
            max_layer_bytes: a.image_max_layer_bytes,
            max_image_bytes: a.image_max_image_bytes,
            max_layer_entries: a.image_max_layer_entries,
            ..podd_image::StoreLimits::default()
        },
        cluster_domain: "cluster.local".into(),
        serve_tcp: false,
    })
}

/// Runs the agent until SIGTERM or SIGINT; the pods keep running after it stops.
async fn run_agent_until_stopped(
    client: podd_client::Client,
    cfg: agent::AgentConfig,
) -> Result<()> {
    tokio::select! {
        r = agent::run(client, cfg) => r,
        _ = wait_for_stop() => {
            tracing::info!("stopping; pods keep running");
            Ok(())
        }
    }
}

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

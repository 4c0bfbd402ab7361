//! Starting and stopping a whole control plane: watch cache, registry, listeners, controllers.

use crate::auth::Authenticator;
use crate::cache::{CacheConfig, WatchCache};
use crate::controllers::{self, ControllerConfig};
use crate::error::ApiError;
use crate::http::{self, ApiServer};
use crate::registry::{Registry, RegistryConfig};
use crate::tls::{TlsError, TlsMaterial};
use podd_store::{LeaderElector, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone)]
pub struct ControlPlaneConfig {
    /// `<data>/pki` and `<data>/tokens` live here; None keeps TLS material and tokens in
    /// memory (tests).
    pub data_dir: Option<PathBuf>,
    /// The root-only Unix socket; None for no socket.
    pub socket: Option<PathBuf>,
    /// The TLS listener (`0.0.0.0:6443`); port 0 picks a free one; None for no TLS.
    pub tls_addr: Option<SocketAddr>,
    /// Extra subject alternative names for the server certificate (node IPs, host names).
    pub tls_sans: Vec<String>,
    /// The admin token when there is no data dir.
    pub admin_token: Option<String>,
    pub registry: RegistryConfig,
    pub cache: CacheConfig,
    /// Connection, timeout and watch limits of the listeners.
    pub limits: crate::conn_limits::ConnLimits,
    /// None: run no controllers (a standby API server, or a test that drives things itself).
    pub controllers: Option<ControllerConfig>,
    /// Who may run the controllers when several servers share one store (etcd). None: this
    /// server always leads (the embedded stores have one server).
    pub elector: Option<Arc<dyn LeaderElector>>,
    /// The agent on this machine, reached over its Unix socket for pods/log and pods/exec;
    /// every other node's agent is reached over TLS at its registered address.
    pub local_agent: Option<crate::agent_proxy::LocalAgent>,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            data_dir: None,
            socket: Some(PathBuf::from("/run/podd/podd.sock")),
            tls_addr: Some(SocketAddr::from(([0, 0, 0, 0], 6443))),
            tls_sans: Vec::new(),
            admin_token: None,
            registry: RegistryConfig::default(),
            cache: CacheConfig::default(),
            limits: Default::default(),
            controllers: Some(ControllerConfig::default()),
            elector: None,
            local_agent: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not set up the allocators: {0}")]
    Alloc(#[from] crate::alloc::AllocError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("could not {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the watch cache did not load the store within 30 s")]
    CacheTimeout,
    #[error(transparent)]
    Encryption(#[from] crate::encryption::EncryptionError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// A running control plane. Dropping it without `shutdown` aborts its tasks.
pub struct ControlPlane {
    pub registry: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    /// The cluster CA (PEM), for TLS clients.
    pub ca_pem: String,
    pub tls_addr: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    pub async fn start(
        store: Arc<dyn Store>,
        config: ControlPlaneConfig,
    ) -> Result<ControlPlane, StartError> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        // Secrets are sealed below this point and plaintext above (crate::encryption).
        let keys = match &config.data_dir {
            Some(d) => Arc::new(crate::encryption::KeySet::load_or_create(d)?),
            None => crate::encryption::KeySet::in_memory(),
        };
        let store = crate::encryption::EncryptedStore::new(store, keys);
        store.reseal_stale().await.map_err(ApiError::from)?;
        let store: Arc<dyn Store> = Arc::new(store);
        let cache = WatchCache::new(config.cache.clone());
        tasks.push(tokio::spawn(
            cache.clone().run(store.clone(), shutdown_rx.clone()),
        ));
        let rev = store.revision().await.map_err(ApiError::from)?;
        if !cache.wait_for(rev, Duration::from_secs(30)).await {
            return Err(StartError::CacheTimeout);
        }
        let registry = Arc::new(Registry::new(store, cache, &config.registry)?);
        registry.repair_allocators().await?;
        registry.ensure_namespaces().await?;
        let mut auth = match (&config.data_dir, &config.admin_token) {
            (Some(d), _) => Authenticator::load_or_init(d).map_err(|source| StartError::Io {
                what: format!("load the tokens under {}", d.display()),
                source,
            })?,
            (None, Some(t)) => Authenticator::in_memory(t.clone()),
            (None, None) => Authenticator::in_memory(hex::encode(rand::random::<[u8; 32]>())),
        };
        let mut sans = config.tls_sans.clone();
        if let Some(a) = config.tls_addr
            && !a.ip().is_unspecified()
        {
            sans.push(a.ip().to_string());
        }
        let tls = match &config.data_dir {
            Some(d) => TlsMaterial::load_or_generate(d, &sans)?,
            None => TlsMaterial::generate(&sans)?,
        };
        // Client certificates from the client CA authenticate too (crate::auth).
        auth.trust_client_certificates(tls.client_cert_auth()?);
        let auth = Arc::new(auth);
        let api = Arc::new(ApiServer {
            registry: registry.clone(),
            auth: auth.clone(),
            agents: Arc::new(crate::agent_proxy::AgentLink::new(
                &tls,
                config.local_agent.clone(),
            )),
            watches: http::watch_gate(&config.limits),
            limits: config.limits.clone(),
        });
        if let Some(path) = &config.socket {
            let l = http::bind_unix(path).map_err(|source| StartError::Io {
                what: format!("listen on {}", path.display()),
                source,
            })?;
            tasks.push(tokio::spawn(http::serve_unix(
                api.clone(),
                l,
                path.clone(),
                shutdown_rx.clone(),
            )));
        }
        let mut tls_addr = None;
        if let Some(addr) = config.tls_addr {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Io {
                    what: format!("listen on {addr}"),
                    source,
                })?;
            tls_addr = Some(l.local_addr().map_err(|source| StartError::Io {
                what: "read the listening address".into(),
                source,
            })?);
            tasks.push(tokio::spawn(http::serve_tls(
                api.clone(),
                l,
                tls.server_config()?,
                shutdown_rx.clone(),
            )));
        }
        if let Some(cc) = config.controllers.clone() {
            registry
                .leases()
                .set_config(crate::leases::LeaseConfig::for_grace(cc.node_grace));
            let elector = config
                .elector
                .clone()
                .unwrap_or_else(|| Arc::new(podd_store::AlwaysLeader));
            tasks.push(tokio::spawn(lead(
                registry.clone(),
                cc,
                elector,
                shutdown_rx.clone(),
            )));
        }
        Ok(ControlPlane {
            registry,
            auth,
            ca_pem: tls.ca_cert_pem,
            tls_addr,
            socket: config.socket.clone(),
            shutdown,
            tasks,
        })
    }

    /// A client over the Unix socket (requires `socket`).
    pub fn local_client(&self) -> Option<podd_client::Client> {
        self.socket.as_ref().map(podd_client::Client::unix)
    }

    /// An admin client over TLS (requires `tls_addr`).
    pub fn admin_tls_client(&self) -> Option<podd_client::Client> {
        let a = self.tls_addr?;
        let addr = format!("127.0.0.1:{}", a.port());
        podd_client::Client::tls(&addr, &self.ca_pem, self.auth.admin_token()).ok()
    }

    /// Stops every task and waits for them (the socket file is removed).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Campaigns for leadership and runs the controllers while leading; stops them the moment
/// leadership is lost (before anything else happens), and campaigns again.
async fn lead(
    registry: Arc<Registry>,
    config: ControllerConfig,
    elector: Arc<dyn LeaderElector>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let mut leadership = tokio::select! {
            r = elector.campaign() => match r {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            },
            _ = shutdown.changed() => return,
        };
        tracing::info!("leading: starting the controllers");
        registry.leases().set_leading(true);
        if let Err(e) = registry.repair_allocators().await {
            tracing::warn!(error = %e, "could not repair the allocators");
        }
        let (stop, stop_rx) = watch::channel(false);
        let tasks = controllers::spawn_all(registry.clone(), config.clone(), stop_rx);
        let stepping_down = tokio::select! {
            _ = leadership.lost() => false,
            _ = shutdown.changed() => true,
        };
        let _ = stop.send(true);
        // From now on another server's controllers must see this one's lease renewals.
        registry.leases().set_leading(false);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if stepping_down {
            leadership.resign().await;
            return;
        }
        tracing::warn!("lost the leadership; the controllers are stopped");
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(p) = &self.socket
            && !self.tasks.is_empty()
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

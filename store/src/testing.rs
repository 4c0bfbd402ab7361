//! Test helpers: a real etcd (Debian's `etcd-server`, `/usr/bin/etcd`) on loopback.
//!
//! Each [`EtcdServer`] has its own data directory and free ports; it is killed and its data
//! removed when dropped, so a failed test leaves nothing behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{EtcdStore, Store, StoreError};

/// Where the etcd binary is; `PODD_ETCD` overrides it.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("PODD_ETCD").map_or_else(|| PathBuf::from("/usr/bin/etcd"), PathBuf::from)
}

pub struct EtcdServer {
    child: Option<Child>,
    data: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts etcd on two free loopback ports and waits until it answers.
    pub async fn start() -> Result<Self, StoreError> {
        let data = tempfile::Builder::new()
            .prefix("podd-store-etcd-")
            .tempdir()
            .map_err(|e| io_err("creating the etcd data dir", &e))?;
        let mut server = EtcdServer {
            child: None,
            data,
            client_port: 0,
            peer_port: 0,
        };
        // A port found free can be taken before etcd binds it; try a few times.
        let mut last_err = None;
        for _ in 0..5 {
            server.client_port = free_port().map_err(|e| io_err("finding a free port", &e))?;
            server.peer_port = free_port().map_err(|e| io_err("finding a free port", &e))?;
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.kill();
                    let _ = std::fs::remove_dir_all(server.data.path().join("etcd"));
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| StoreError::Backend {
            op: "start etcd",
            message: "no attempt made".into(),
        }))
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The URL for [`crate::open`].
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub async fn store(&self) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect(&[self.endpoint()]).await
    }

    /// SIGKILLs etcd, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills etcd (if running) and starts it again on the same data and ports.
    pub async fn restart(&mut self) -> Result<(), StoreError> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                // The old process' ports may take a moment to be free again.
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {
                    self.kill();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StoreError> {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd_binary())
            .arg("--name=podd-test")
            .arg(format!(
                "--data-dir={}",
                self.data.path().join("etcd").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=podd-test={peer}"))
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io_err(&format!("starting {}", etcd_binary().display()), &e))?;
        self.child = Some(child);

        let store = self.store().await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(StoreError::Backend {
                    op: "start etcd",
                    message: format!("etcd exited with {status} (port taken?)"),
                });
            }
            match tokio::time::timeout(Duration::from_secs(2), store.revision()).await {
                Ok(Ok(_)) => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(StoreError::Backend {
                        op: "start etcd",
                        message: format!("etcd on {client} did not answer within 20 s"),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn io_err(what: &str, e: &std::io::Error) -> StoreError {
    StoreError::Backend {
        op: "start etcd",
        message: format!("{what}: {e}"),
    }
}

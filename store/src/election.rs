//! Leader election: only one podd server runs the controllers at a time.
//!
//! With etcd, the leader is whoever owns the election key, which is written with a lease in a
//! transaction that requires the key to be absent. The leader renews the lease; when it stops
//! (crash, freeze, network cut) the lease expires, etcd deletes the key, and a waiting
//! candidate wins. A leader steps down by itself as soon as it can no longer be sure of its
//! lease: when a renewal is overdue by a third of the TTL, before etcd could expire the lease
//! and let anyone else win, so two leaders never overlap.
//!
//! The embedded stores (memory, SQLite) have one server by construction (SQLite locks its file),
//! so their elector always leads.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::StoreError;
use crate::etcd::etcd_err;

#[async_trait::async_trait]
pub trait LeaderElector: Send + Sync + 'static {
    /// Waits until this server is the leader.
    async fn campaign(&self) -> Result<Leadership, StoreError>;

    /// Who leads now, if anyone (the leader's identity).
    async fn leader(&self) -> Result<Option<String>, StoreError>;
}

/// Held by the leader. Controllers run while `is_leader()` and stop when `lost()` returns.
pub struct Leadership {
    lost: watch::Receiver<bool>,
    /// Keeps `lost` open for leaderships that cannot be lost.
    _forever: Option<watch::Sender<bool>>,
    stop: Option<oneshot::Sender<Stop>>,
    task: Option<tokio::task::JoinHandle<()>>,
    lease: Option<i64>,
}

enum Stop {
    Resign,
    Abandon,
}

impl Leadership {
    fn forever() -> Self {
        let (tx, rx) = watch::channel(false);
        Leadership {
            lost: rx,
            _forever: Some(tx),
            stop: None,
            task: None,
            lease: None,
        }
    }

    pub fn is_leader(&self) -> bool {
        !*self.lost.borrow()
    }

    /// Returns once leadership is lost (never, for an always-leader).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// The etcd lease backing this leadership, if any.
    pub fn lease_id(&self) -> Option<i64> {
        self.lease
    }

    /// Steps down now: deletes the election key and revokes the lease, so another server
    /// takes over at once.
    pub async fn resign(mut self) {
        self.finish(Stop::Resign).await;
    }

    /// Stops renewing the lease without resigning, as a frozen or partitioned server would:
    /// this server stops leading at once, the others take over when the lease expires.
    pub async fn abandon(mut self) {
        self.finish(Stop::Abandon).await;
    }

    async fn finish(&mut self, how: Stop) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Dropping resigns (the task cleans up on its own).
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Resign);
        }
    }
}

/// The elector of the embedded stores: there is one server, and it always leads.
pub struct AlwaysLeader;

#[async_trait::async_trait]
impl LeaderElector for AlwaysLeader {
    async fn campaign(&self) -> Result<Leadership, StoreError> {
        Ok(Leadership::forever())
    }

    async fn leader(&self) -> Result<Option<String>, StoreError> {
        Ok(Some("local".into()))
    }
}

#[derive(Debug, Clone)]
pub struct EtcdElectorOptions {
    /// The election key.
    pub key: String,
    /// This server's name, stored as the key's value.
    pub identity: String,
    /// The lease TTL; etcd rounds it up to whole seconds (at least 2 s with default settings).
    pub ttl: Duration,
}

impl EtcdElectorOptions {
    pub fn new(identity: impl Into<String>) -> Self {
        EtcdElectorOptions {
            key: "/podd/leader".into(),
            identity: identity.into(),
            ttl: Duration::from_secs(5),
        }
    }
}

pub struct EtcdElector {
    client: Client,
    options: EtcdElectorOptions,
}

impl EtcdElector {
    pub fn new(client: Client, options: EtcdElectorOptions) -> Self {
        EtcdElector { client, options }
    }

    /// One attempt: takes the key if it is free. Returns the lease and the key's revision on
    /// success, or the revision to watch from for the holder's departure.
    async fn try_acquire(&self) -> Result<Result<(i64, i64, i64), i64>, StoreError> {
        let mut client = self.client.clone();
        let ttl = i64::try_from(self.options.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let grant = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| etcd_err("campaign", &e))?;
        let lease = grant.id();
        let key = self.options.key.as_str();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                self.options.identity.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = match client.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                let _ = client.lease_revoke(lease).await;
                return Err(etcd_err("campaign", &e));
            }
        };
        let rev = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        if resp.succeeded() {
            return Ok(Ok((lease, grant.ttl(), rev)));
        }
        let _ = client.lease_revoke(lease).await;
        // Somebody holds it. If it vanished between our compare and now, the watch from the
        // txn's revision + 1 shows nothing, so check the holder's presence in the answer.
        let present = resp
            .op_responses()
            .into_iter()
            .any(|r| matches!(r, TxnOpResponse::Get(g) if !g.kvs().is_empty()));
        Ok(Err(if present { rev + 1 } else { 0 }))
    }

    /// Waits until the election key is deleted at or after `from`.
    async fn wait_for_vacancy(&self, from: i64) -> Result<(), StoreError> {
        let opts = WatchOptions::new().with_start_revision(from);
        let mut ws = self
            .client
            .watch_client()
            .watch(self.options.key.as_str(), Some(opts))
            .await
            .map_err(|e| etcd_err("campaign", &e))?;
        loop {
            match ws.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled()
                        || resp
                            .events()
                            .iter()
                            .any(|e| e.event_type() == EventType::Delete)
                    {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(etcd_err("campaign", &e)),
            }
        }
    }
}

#[async_trait::async_trait]
impl LeaderElector for EtcdElector {
    async fn campaign(&self) -> Result<Leadership, StoreError> {
        loop {
            let attempt = match self.try_acquire().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "election attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            match attempt {
                Ok((lease, ttl, rev)) => {
                    tracing::info!(identity = %self.options.identity, lease, "became leader");
                    return Ok(self.hold(lease, ttl, rev).await);
                }
                Err(0) => {}
                Err(from) => {
                    if let Err(e) = self.wait_for_vacancy(from).await {
                        tracing::debug!(error = %e, "watching the leader failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }

    async fn leader(&self) -> Result<Option<String>, StoreError> {
        let resp = self
            .client
            .clone()
            .get(self.options.key.as_str(), None)
            .await
            .map_err(|e| etcd_err("leader", &e))?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}

impl EtcdElector {
    async fn hold(&self, lease: i64, ttl: i64, rev: i64) -> Leadership {
        let (lost_tx, lost_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = oneshot::channel();
        let holder = Holder {
            client: self.client.clone(),
            key: self.options.key.clone(),
            lease,
            ttl: Duration::from_secs(u64::try_from(ttl.max(1)).unwrap_or(1)),
            key_rev: rev,
        };
        let task = tokio::spawn(holder.run(stop_rx, lost_tx));
        Leadership {
            lost: lost_rx,
            _forever: None,
            stop: Some(stop_tx),
            task: Some(task),
            lease: Some(lease),
        }
    }
}

struct Holder {
    client: Client,
    key: String,
    lease: i64,
    ttl: Duration,
    key_rev: i64,
}

impl Holder {
    async fn run(self, mut stop: oneshot::Receiver<Stop>, lost: watch::Sender<bool>) {
        let how = self.renew_until_lost(&mut stop).await;
        // Not leading any more, whatever happens next.
        lost.send_replace(true);
        if !matches!(how, Some(Stop::Abandon)) {
            self.step_down().await;
        }
    }

    /// Renews the lease every third of the TTL and watches the key. Returns why it stopped:
    /// `Some(stop)` when asked, `None` when leadership was lost.
    async fn renew_until_lost(&self, stop: &mut oneshot::Receiver<Stop>) -> Option<Stop> {
        let period = self.ttl / 3;
        let mut valid_until = Instant::now() + self.ttl;
        let mut keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut watch: Option<etcd_client::WatchStream> = None;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent_at = Instant::now();
        let mut watch_from = self.key_rev + 1;
        loop {
            tokio::select! {
                how = &mut *stop => return how.ok().or(Some(Stop::Resign)),
                _ = tick.tick() => {
                    // Step down if the lease might expire before the next renewal lands.
                    if Instant::now() + period >= valid_until {
                        tracing::warn!(lease = self.lease, "leader lease renewal overdue; stepping down");
                        return None;
                    }
                    if keeper.is_none() {
                        keeper = self.client.clone().lease_keep_alive(self.lease).await.ok();
                    }
                    if let Some((k, _)) = keeper.as_mut() {
                        sent_at = Instant::now();
                        if k.keep_alive().await.is_err() {
                            keeper = None;
                        }
                    }
                    if watch.is_none() {
                        let opts = WatchOptions::new().with_start_revision(watch_from);
                        watch = self.client.watch_client().watch(self.key.as_str(), Some(opts)).await.ok();
                    }
                }
                resp = async { keeper.as_mut().expect("guarded").1.message().await }, if keeper.is_some() => {
                    match resp {
                        Ok(Some(r)) if r.ttl() > 0 => {
                            valid_until = sent_at + Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(0));
                        }
                        Ok(Some(_)) => {
                            tracing::warn!(lease = self.lease, "leader lease expired or revoked");
                            return None;
                        }
                        Ok(None) | Err(_) => keeper = None,
                    }
                }
                resp = async { watch.as_mut().expect("guarded").message().await }, if watch.is_some() => {
                    match resp {
                        Ok(Some(r)) => {
                            let gone = r.events().iter().any(|e| {
                                e.event_type() == EventType::Delete
                                    || e.kv().is_some_and(|kv| kv.lease() != self.lease)
                            });
                            if gone {
                                tracing::warn!(key = %self.key, "leader key deleted or taken over");
                                return None;
                            }
                            if let Some(last) = r.events().last().and_then(|e| e.kv()) {
                                watch_from = last.mod_revision() + 1;
                            }
                            if r.canceled() {
                                // Compacted history: check the key directly, then watch on.
                                watch = None;
                                match self.still_ours().await {
                                    Some(rev) => watch_from = rev + 1,
                                    None => return None,
                                }
                            }
                        }
                        Ok(None) | Err(_) => watch = None,
                    }
                }
            }
        }
    }

    /// The current revision if the election key still carries our lease.
    async fn still_ours(&self) -> Option<i64> {
        let resp = self
            .client
            .clone()
            .get(self.key.as_str(), None)
            .await
            .ok()?;
        let ours = resp
            .kvs()
            .first()
            .is_some_and(|kv| kv.lease() == self.lease);
        ours.then(|| {
            resp.header()
                .map_or(0, etcd_client::ResponseHeader::revision)
        })
    }

    async fn step_down(&self) {
        let mut client = self.client.clone();
        // Delete the key only if it is still ours, then drop the lease.
        let txn = Txn::new()
            .when([Compare::lease(
                self.key.as_str(),
                CompareOp::Equal,
                self.lease,
            )])
            .and_then([TxnOp::delete(self.key.as_str(), None)]);
        let _ = client.txn(txn).await;
        let _ = client.lease_revoke(self.lease).await;
    }
}

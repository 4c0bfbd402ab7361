//! The HA backend: etcd v3, so that several podd servers share one cluster state.
//!
//! Revisions are etcd's own, one to one (so the first write to a fresh etcd is revision 2:
//! etcd starts at 1). Every write is a single-op transaction guarded by a comparison: create
//! requires `create_revision == 0`, update and delete require the key to exist and, with an
//! expected revision, `mod_revision == expected`; the `else` branch reads the key so a failure
//! says whether it was missing or changed. A watch is an etcd watch with `prev_kv`, started at
//! `after` (so that etcd itself reports compaction exactly when `after` is older than the
//! compaction point) with the event at `after` itself dropped. Watches reconnect by themselves
//! from the last delivered revision when the connection to etcd breaks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KvClient,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use crate::{
    EventKind, KeyValue, ListResult, Revision, Store, StoreError, WatchEvent, WatchStream,
};

/// Keys per page when listing: lists of any size stay under gRPC's message limit.
const LIST_PAGE: i64 = 1000;
const MAX_MESSAGE: usize = 64 << 20;
/// How long a watch keeps trying to reconnect to etcd before it reports an error.
const WATCH_RECONNECT_FOR: Duration = Duration::from_secs(30);

pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

pub(crate) fn etcd_err(op: &'static str, e: &etcd_client::Error) -> StoreError {
    StoreError::Backend {
        op,
        message: format!("etcd: {e}"),
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision has been compacted")
}

fn is_future(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision is a future revision")
}

/// The etcd range end that covers every key starting with `prefix` (`\0` means "to the end").
pub(crate) fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key to start a range at: etcd wants a non-empty key, and `\0` is the smallest.
fn range_start(prefix: &str) -> Vec<u8> {
    if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, etcd_client::ResponseHeader::revision)
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port` or `host:port`). The connection is
    /// made lazily and re-made after failures, so this succeeds even if etcd is still starting.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Backend {
                op: "connect",
                message: format!("etcd at {}: {e}", endpoints.join(",")),
            })?;
        Ok(EtcdStore { client, endpoints })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The underlying client (for leader election and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }

    async fn list_once(&self, prefix: &str) -> Result<ListResult, etcd_client::Error> {
        let end = range_end(prefix.as_bytes());
        let mut kv = self.kv();
        let mut items = Vec::new();
        let mut revision = 0;
        let mut start = range_start(prefix);
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                // Later pages read the same snapshot as the first.
                opts = opts.with_revision(revision);
            }
            let resp = kv.get(start.clone(), Some(opts)).await?;
            if revision == 0 {
                revision = header_revision(resp.header());
            }
            items.extend(resp.kvs().iter().map(to_kv));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(ListResult { items, revision })
    }

    /// The current compaction point as etcd reports it to a watch from revision 1.
    async fn compaction_point(&self, prefix: &str) -> Option<Revision> {
        let opts = WatchOptions::new()
            .with_range(range_end(prefix.as_bytes()))
            .with_start_revision(1);
        let mut ws = self
            .client
            .watch_client()
            .watch(range_start(prefix), Some(opts))
            .await
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(Some(resp))) = tokio::time::timeout_at(deadline.into(), ws.message()).await
        {
            if resp.compact_revision() > 0 {
                return Some(resp.compact_revision());
            }
            if !resp.events().is_empty() {
                return None;
            }
        }
        None
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .kv()
            .get(key, None)
            .await
            .map_err(|e| etcd_err("get", &e))?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let mut attempts = 0;
        loop {
            match self.list_once(prefix).await {
                Ok(l) => return Ok(l),
                // Compacted between two pages: read a fresh snapshot.
                Err(e) if is_compacted(&e) && attempts < 3 => attempts += 1,
                Err(e) => return Err(etcd_err("list", &e)),
            }
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self
            .kv()
            .txn(txn)
            .await
            .map_err(|e| etcd_err("create", &e))?;
        if resp.succeeded() {
            Ok(header_revision(resp.header()))
        } else {
            Err(StoreError::AlreadyExists {
                key: key.to_string(),
            })
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        guarded_write(self, "update", key, expected, TxnOp::put(key, value, None)).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        guarded_write(self, "delete", key, expected, TxnOp::delete(key, None)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        if after > 0 {
            // etcd reports a compacted start only on the stream; check up front as the trait
            // promises, with a one-key read at `after`.
            let opts = GetOptions::new()
                .with_range(range_end(prefix.as_bytes()))
                .with_revision(after)
                .with_limit(1)
                .with_keys_only();
            match self.kv().get(range_start(prefix), Some(opts)).await {
                Ok(_) => {}
                Err(e) if is_future(&e) => {}
                Err(e) if is_compacted(&e) => {
                    let compacted = self.compaction_point(prefix).await.unwrap_or(after + 1);
                    return Err(StoreError::Compacted {
                        requested: after,
                        compacted,
                    });
                }
                Err(e) => return Err(etcd_err("watch", &e)),
            }
        }
        let mut w = EtcdWatch {
            client: self.client.clone(),
            prefix: prefix.to_string(),
            floor: after,
            stream: None,
            buf: VecDeque::new(),
            done: false,
        };
        w.open().await?;
        Ok(Box::pin(futures::stream::unfold(w, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self
            .kv()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_compacted(&e) => Ok(()),
            Err(e) => Err(etcd_err("compact", &e)),
        }
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        let resp = self
            .kv()
            .get(vec![0], Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| etcd_err("revision", &e))?;
        Ok(header_revision(resp.header()))
    }
}

/// Update or delete `key` if it exists and, with `expected`, if it is at that revision.
async fn guarded_write(
    store: &EtcdStore,
    op: &'static str,
    key: &str,
    expected: Option<Revision>,
    write: TxnOp,
) -> Result<Revision, StoreError> {
    let mut compares = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
    if let Some(r) = expected {
        compares.push(Compare::mod_revision(key, CompareOp::Equal, r));
    }
    let txn = Txn::new()
        .when(compares)
        .and_then([write])
        .or_else([TxnOp::get(key, None)]);
    let resp = store.kv().txn(txn).await.map_err(|e| etcd_err(op, &e))?;
    if resp.succeeded() {
        return Ok(header_revision(resp.header()));
    }
    let current = resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(etcd_client::KeyValue::mod_revision),
        _ => None,
    });
    match (current, expected) {
        (Some(actual), Some(expected)) => Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            actual,
        }),
        _ => Err(StoreError::NotFound {
            key: key.to_string(),
        }),
    }
}

struct EtcdWatch {
    client: Client,
    prefix: String,
    /// Every event at or below this revision has been handed out (or was not asked for).
    floor: Revision,
    stream: Option<etcd_client::WatchStream>,
    buf: VecDeque<WatchEvent>,
    done: bool,
}

fn to_event(ev: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = ev.kv()?;
    Some(match ev.event_type() {
        EventType::Put => WatchEvent {
            kind: if kv.version() == 1 {
                EventKind::Created
            } else {
                EventKind::Modified
            },
            kv: to_kv(kv),
        },
        EventType::Delete => {
            let prev = ev.prev_kv();
            WatchEvent {
                kind: EventKind::Deleted,
                kv: KeyValue {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: prev.map(|p| p.value().to_vec()).unwrap_or_default(),
                    create_revision: prev.map_or(0, etcd_client::KeyValue::create_revision),
                    mod_revision: kv.mod_revision(),
                },
            }
        }
    })
}

impl EtcdWatch {
    async fn open(&mut self) -> Result<(), StoreError> {
        // Start at the floor itself (its events are dropped below), so that etcd reports
        // compaction exactly when the floor is older than the compaction point.
        let opts = WatchOptions::new()
            .with_range(range_end(self.prefix.as_bytes()))
            .with_start_revision(self.floor.max(1))
            .with_prev_key();
        let ws = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(range_start(&self.prefix), Some(opts))
            .await
            .map_err(|e| etcd_err("watch", &e))?;
        self.stream = Some(ws);
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<(), StoreError> {
        let deadline = Instant::now() + WATCH_RECONNECT_FOR;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.open().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!(prefix = %self.prefix, error = %e, "etcd watch reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        let mut broken_since: Option<Instant> = None;
        loop {
            if let Some(ev) = self.buf.pop_front() {
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                if let Err(e) = self.reconnect().await {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(resp)) => {
                    broken_since = None;
                    if resp.canceled() {
                        self.done = true;
                        if resp.compact_revision() > 0 {
                            return Some(Err(StoreError::Compacted {
                                requested: self.floor,
                                compacted: resp.compact_revision(),
                            }));
                        }
                        return Some(Err(StoreError::Backend {
                            op: "watch",
                            message: format!("etcd canceled the watch: {}", resp.cancel_reason()),
                        }));
                    }
                    let mut top = self.floor;
                    for ev in resp.events() {
                        if let Some(ev) = to_event(ev).filter(|e| e.revision() > self.floor) {
                            top = top.max(ev.revision());
                            self.buf.push_back(ev);
                        }
                    }
                    // A revision's events arrive in one response, so the floor can move to it.
                    self.floor = top;
                }
                Ok(None) | Err(_) => {
                    // The connection broke (etcd restarted, or a network error): resume from
                    // the floor on a new stream.
                    let since = *broken_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > WATCH_RECONNECT_FOR {
                        self.done = true;
                        return Some(Err(StoreError::Backend {
                            op: "watch",
                            message: format!(
                                "lost the etcd watch on {} and could not resume it",
                                self.prefix
                            ),
                        }));
                    }
                    self.stream = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::range_end;

    #[test]
    fn range_end_covers_the_prefix() {
        assert_eq!(range_end(b"/a/"), b"/a0");
        assert_eq!(range_end(b""), vec![0]);
        assert_eq!(range_end(&[b'a', 0xff]), b"b");
        assert_eq!(range_end(&[0xff, 0xff]), vec![0]);
    }
}

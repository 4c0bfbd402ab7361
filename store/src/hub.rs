//! The in-process event hub shared by the embedded backends (memory and SQLite).
//!
//! Every write of those backends produces exactly one event, so the events of the hub's cache
//! have contiguous revisions: the event for revision `r` sits at index `r - first`. A watcher
//! keeps the last revision it has looked at and pulls the next events from the cache; when it is
//! further behind than the cache reaches, it reads the backend's own log (the SQLite `log`
//! table). Nothing is pushed into per-watcher buffers, so a slow watcher can never lag and lose
//! events: it simply reads from where it is.
//!
//! Wake-ups use a `tokio::sync::watch` channel carrying the latest revision. A watcher marks the
//! channel seen *before* it reads, so a publish racing with the read always leaves the channel
//! marked changed, and the watcher never sleeps past an event.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::future::BoxFuture;

use crate::{Revision, StoreError, WatchEvent, WatchStream};

/// How many events a watcher takes from the cache or the log in one step, and how many
/// revisions it scans under the hub lock at most.
const BATCH: usize = 1024;
const SCAN_LIMIT: usize = 8192;
/// The most key and value bytes a bounded cache (SQLite's) holds, whatever its event count:
/// 8192 events of 1.5 MiB objects would otherwise pin 12 GiB. Older events are read from the
/// backend log.
const CACHE_BYTES: usize = 64 << 20;

fn event_bytes(e: &WatchEvent) -> usize {
    e.kv.key.len() + e.kv.value.len()
}

pub(crate) struct EventHub {
    /// Watchers scan under the read lock in parallel; only publish and compact write.
    state: RwLock<HubState>,
    notify: tokio::sync::watch::Sender<Revision>,
    /// Set when the store is dropped: watchers deliver what is left and end.
    closed: std::sync::atomic::AtomicBool,
}

struct HubState {
    /// Events with revisions `first..=latest`, contiguous.
    events: VecDeque<Arc<WatchEvent>>,
    /// The key and value bytes `events` hold.
    bytes: usize,
    first: Revision,
    latest: Revision,
    compacted: Revision,
    /// `None` keeps everything until compaction (the memory backend, whose cache is its history).
    capacity: Option<usize>,
}

pub(crate) enum HubRead {
    /// Matching events after the asked revision; the watcher has now seen up to `scanned_through`.
    Events {
        events: Vec<WatchEvent>,
        scanned_through: Revision,
        caught_up: bool,
    },
    /// The asked revision is older than the cache; read the backend log.
    Older,
    Compacted(Revision),
}

/// One page of a backend's own event log.
pub(crate) struct LogPage {
    pub events: Vec<WatchEvent>,
    /// The watcher has seen every matching event up to here.
    pub scanned_through: Revision,
}

/// A backend's durable event log, for watchers further behind than the hub's cache.
pub(crate) trait LogSource: Send + Sync + 'static {
    fn read_log(
        &self,
        prefix: String,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<LogPage, StoreError>>;
}

impl EventHub {
    /// A hub whose next event will be `latest + 1`, with history compacted at `compacted`.
    pub(crate) fn new(latest: Revision, compacted: Revision, capacity: Option<usize>) -> Self {
        let (notify, _) = tokio::sync::watch::channel(latest);
        EventHub {
            state: RwLock::new(HubState {
                events: VecDeque::new(),
                bytes: 0,
                first: latest + 1,
                latest,
                compacted,
                capacity,
            }),
            notify,
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ends every watch once it has delivered the events published so far.
    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.notify.send_modify(|_| {});
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    // A panic while holding the lock leaves consistent data (every mutation is a push/pop).
    fn write(&self) -> RwLockWriteGuard<'_, HubState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, HubState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the event of the next revision. Callers publish in revision order.
    pub(crate) fn publish(&self, event: WatchEvent) {
        let rev = event.revision();
        let mut st = self.write();
        debug_assert_eq!(rev, st.latest + 1, "hub events must be contiguous");
        if rev != st.latest + 1 {
            // Should never happen; recover by starting the cache afresh so that watchers behind
            // read the backend log instead of seeing a gap.
            st.events.clear();
            st.bytes = 0;
            st.first = rev;
        }
        st.bytes += event_bytes(&event);
        st.events.push_back(Arc::new(event));
        st.latest = rev;
        if let Some(cap) = st.capacity {
            while st.events.len() > cap || (st.bytes > CACHE_BYTES && st.events.len() > 1) {
                if let Some(old) = st.events.pop_front() {
                    st.bytes -= event_bytes(&old);
                }
                st.first += 1;
            }
        }
        drop(st);
        self.notify.send_replace(rev);
    }

    pub(crate) fn compact(&self, revision: Revision) {
        let mut st = self.write();
        if revision <= st.compacted {
            return;
        }
        st.compacted = revision;
        while st.events.front().is_some_and(|e| e.revision() <= revision) {
            if let Some(old) = st.events.pop_front() {
                st.bytes -= event_bytes(&old);
            }
        }
        st.first = st.first.max(revision + 1);
    }

    pub(crate) fn compacted(&self) -> Revision {
        self.read_lock().compacted
    }

    pub(crate) fn read(&self, prefix: &str, after: Revision, max: usize) -> HubRead {
        let st = self.read_lock();
        if after < st.compacted {
            return HubRead::Compacted(st.compacted);
        }
        if after + 1 < st.first {
            return HubRead::Older;
        }
        let start = usize::try_from(after + 1 - st.first).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        let mut scanned_through = after.max(st.first - 1);
        for ev in st.events.iter().skip(start).take(SCAN_LIMIT) {
            scanned_through = ev.revision();
            if ev.kv.key.starts_with(prefix) {
                events.push(WatchEvent::clone(ev));
                if events.len() >= max {
                    break;
                }
            }
        }
        HubRead::Events {
            events,
            caught_up: scanned_through >= st.latest,
            scanned_through,
        }
    }

    /// Fails with Compacted if a watch from `after` can no longer be served.
    pub(crate) fn check_watchable(&self, after: Revision) -> Result<(), StoreError> {
        let compacted = self.compacted();
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        Ok(())
    }

    /// A stream of the events under `prefix` after `after`, then the new ones, in order.
    pub(crate) fn watch(
        self: &Arc<Self>,
        log: Option<Arc<dyn LogSource>>,
        prefix: String,
        after: Revision,
    ) -> WatchStream {
        let state = Watcher {
            rx: self.notify.subscribe(),
            hub: Arc::clone(self),
            log,
            prefix,
            last: after,
            buf: VecDeque::new(),
            done: false,
        };
        Box::pin(futures::stream::unfold(state, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        }))
    }
}

struct Watcher {
    hub: Arc<EventHub>,
    log: Option<Arc<dyn LogSource>>,
    rx: tokio::sync::watch::Receiver<Revision>,
    prefix: String,
    last: Revision,
    buf: VecDeque<WatchEvent>,
    done: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(ev) = self.buf.pop_front() {
                return Some(Ok(ev));
            }
            // Mark seen before reading: a publish after this point wakes `changed()`.
            self.rx.borrow_and_update();
            match self.hub.read(&self.prefix, self.last, BATCH) {
                HubRead::Events {
                    events,
                    scanned_through,
                    caught_up,
                } => {
                    self.last = scanned_through;
                    self.buf.extend(events);
                    if self.buf.is_empty() {
                        if caught_up {
                            if self.hub.is_closed() || self.rx.changed().await.is_err() {
                                self.done = true;
                            }
                        } else {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                HubRead::Compacted(compacted) => {
                    self.done = true;
                    return Some(Err(StoreError::Compacted {
                        requested: self.last,
                        compacted,
                    }));
                }
                HubRead::Older => {
                    let Some(log) = &self.log else {
                        // Without a log the cache is the whole history; this means compaction.
                        self.done = true;
                        return Some(Err(StoreError::Compacted {
                            requested: self.last,
                            compacted: self.hub.compacted(),
                        }));
                    };
                    match log.read_log(self.prefix.clone(), self.last, BATCH).await {
                        Ok(page) => {
                            self.last = self.last.max(page.scanned_through);
                            self.buf.extend(page.events);
                        }
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, KeyValue};

    #[test]
    fn a_bounded_cache_holds_at_most_its_byte_budget() {
        let hub = EventHub::new(0, 0, Some(8192));
        for rev in 1..=6 {
            hub.publish(WatchEvent {
                kind: EventKind::Modified,
                kv: KeyValue {
                    key: "/registry/nodes/n1".into(),
                    value: vec![b'x'; 20 << 20],
                    create_revision: 1,
                    mod_revision: rev,
                },
            });
        }
        let st = hub.read_lock();
        assert!(st.bytes <= CACHE_BYTES, "{} bytes cached", st.bytes);
        assert_eq!(st.events.len(), 3);
        assert_eq!(st.first, 4, "older events are left to the backend log");
        assert!(matches!(hub_read_older(&hub), HubRead::Older));
    }

    fn hub_read_older(hub: &EventHub) -> HubRead {
        hub.read("/", 1, 10)
    }
}

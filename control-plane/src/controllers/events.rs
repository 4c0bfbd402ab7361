//! core/v1 Events, written as Kubernetes' controllers write them (client-go's event
//! recorder): `involvedObject`, `reason`, `message`, `type` Normal or Warning,
//! `source.component` and `reportingComponent`, `firstTimestamp`/`lastTimestamp`/`count`.
//!
//! A repeat of the same event (same object, type, reason, message and component) within the
//! TTL bumps `count` and `lastTimestamp` of the first one instead of writing a new object, as
//! client-go's EventCorrelator does. Writes are asynchronous and bounded, so events never
//! slow the controllers down nor take the store's throughput from them: at most
//! [`MAX_IN_FLIGHT`] at once and `qps` a second (burst twice that) for all controllers
//! together; beyond that events are dropped, as client-go's recorder drops them when its
//! queue or its client's rate limit is full. [`sweep`] deletes events older than the TTL
//! (kube-apiserver's `--event-ttl`, 1 h).

use crate::registry::{Registry, Subresource};
use podd_api::jiff::Timestamp;
use podd_api::k8s_openapi::api::core::v1::EventSource;
use podd_api::{Event, Object, ObjectMeta, ObjectReference, ResourceExt, Time};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Event writes in flight at once, for all controllers together.
pub const MAX_IN_FLIGHT: usize = 16;

/// Events written per second, for all controllers together (the burst is twice this).
pub const DEFAULT_QPS: u32 = 100;

/// How long events are kept (Kubernetes' `--event-ttl` default).
pub const EVENT_TTL: Duration = Duration::from_secs(3600);

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// The reference an event's `involvedObject` (or a pod's owner) gives to `obj`.
pub fn object_ref<T: Object>(obj: &T) -> ObjectReference {
    ObjectReference {
        api_version: Some(T::API_KIND.api_version()),
        kind: Some(T::API_KIND.name().to_string()),
        name: Some(obj.name_any()),
        namespace: obj.namespace(),
        uid: obj.metadata().uid.clone(),
        resource_version: obj.metadata().resource_version.clone(),
        ..Default::default()
    }
}

/// What makes two events the same one (client-go's aggregate key, less the host).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    namespace: String,
    kind: String,
    name: String,
    uid: String,
    type_: String,
    reason: String,
    message: String,
    component: String,
}

struct Seen {
    /// The stored event's name.
    name: String,
    count: i32,
    first: Timestamp,
}

/// A token bucket: `qps` tokens a second, up to `2 * qps`.
struct Bucket {
    qps: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let burst = 2.0 * self.qps;
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.qps).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Inner {
    registry: Arc<Registry>,
    seen: Mutex<HashMap<EventKey, Seen>>,
    writes: Arc<Semaphore>,
    rate: Mutex<Bucket>,
}

/// Writes events for one component (`default-scheduler`, `deployment-controller`, ...).
/// Clones share the aggregation state and the write budget.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
    component: &'static str,
}

impl Recorder {
    /// A recorder writing at most `qps` events a second.
    pub fn new(registry: Arc<Registry>, component: &'static str, qps: u32) -> Recorder {
        let qps = f64::from(qps.max(1));
        Recorder {
            inner: Arc::new(Inner {
                registry,
                seen: Mutex::new(HashMap::new()),
                writes: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                rate: Mutex::new(Bucket {
                    qps,
                    tokens: 2.0 * qps,
                    at: std::time::Instant::now(),
                }),
            }),
            component,
        }
    }

    /// The same recorder, writing as another component.
    pub fn for_component(&self, component: &'static str) -> Recorder {
        Recorder {
            inner: self.inner.clone(),
            component,
        }
    }

    /// Records an event about `involved` (see [`object_ref`]); `type_` is [`NORMAL`] or
    /// [`WARNING`]. Returns at once; the write happens in the background.
    pub fn record(&self, involved: &ObjectReference, type_: &str, reason: &str, message: &str) {
        let Ok(permit) = self.inner.writes.clone().try_acquire_owned() else {
            tracing::debug!(
                reason,
                message,
                "event dropped: too many event writes in flight"
            );
            return;
        };
        if !self
            .inner
            .rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            tracing::debug!(reason, message, "event dropped: over the event rate");
            return;
        }
        let namespace = involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let key = EventKey {
            namespace,
            kind: involved.kind.clone().unwrap_or_default(),
            name: involved.name.clone().unwrap_or_default(),
            uid: involved.uid.clone().unwrap_or_default(),
            type_: type_.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            component: self.component.to_string(),
        };
        let now = Timestamp::now();
        let (name, count, first) = {
            let mut seen = self.inner.seen.lock().unwrap_or_else(|p| p.into_inner());
            let s = seen.entry(key.clone()).or_insert_with(|| Seen {
                name: format!("{}.{:x}", key.name, now.as_nanosecond()),
                count: 0,
                first: now,
            });
            s.count += 1;
            (s.name.clone(), s.count, s.first)
        };
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(key.namespace.clone()),
                ..Default::default()
            },
            involved_object: involved.clone(),
            reason: Some(key.reason.clone()),
            message: Some(key.message.clone()),
            type_: Some(key.type_.clone()),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: None,
            }),
            reporting_component: Some(self.component.to_string()),
            reporting_instance: Some(self.component.to_string()),
            first_timestamp: Some(Time(first)),
            last_timestamp: Some(Time(now)),
            count: Some(count),
            ..Default::default()
        };
        let registry = self.inner.registry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = write(&registry, &event).await {
                tracing::debug!(event = ?event.metadata.name, error = %e, "could not write an event");
            }
        });
    }

    /// Forgets aggregation state older than `ttl` (its events are swept too).
    fn forget_older_than(&self, ttl: Duration) {
        let cutoff = Timestamp::now().as_second() - ttl.as_secs() as i64;
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, s| s.first.as_second() >= cutoff);
    }
}

/// Creates the event, or bumps the stored one's count and lastTimestamp.
async fn write(registry: &Registry, event: &Event) -> Result<(), crate::ApiError> {
    let ns = event.metadata.namespace.as_deref().unwrap_or("default");
    let name = event.metadata.name.as_deref().unwrap_or_default();
    let bump = serde_json::json!({
        "count": event.count,
        "lastTimestamp": event.last_timestamp,
    });
    if event.count.unwrap_or(1) > 1 {
        match registry
            .patch_obj::<Event>(ns, name, bump.clone(), Subresource::Main)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == 404 => {} // swept, or the first write is not in yet
            Err(e) => return Err(e),
        }
    }
    match registry.create_obj(event).await {
        Ok(_) => Ok(()),
        // A repeat raced ahead of the first write: the first one landed meanwhile.
        Err(e) if e.code() == 409 => registry
            .patch_obj::<Event>(ns, name, bump, Subresource::Main)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// When an event last happened.
fn last_seen(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Deletes the events that last happened more than `ttl` ago, every `every`.
pub async fn sweep(
    recorder: Recorder,
    ttl: Duration,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let registry = &recorder.inner.registry;
        let cutoff = Timestamp::now().as_second() - ttl.as_secs() as i64;
        for e in registry.cached::<Event>(None) {
            if last_seen(&e).is_some_and(|t| t.as_second() < cutoff) {
                let (ns, name) = (e.namespace().unwrap_or_default(), e.name_any());
                if let Err(err) = registry
                    .delete(podd_api::Kind::Event, &ns, &name, None)
                    .await
                    && err.code() != 404
                {
                    tracing::debug!(event = %name, error = %err, "could not delete an expired event");
                }
            }
        }
        recorder.forget_older_than(ttl);
    }
}

//! The agent's core/v1 Events, as the kubelet writes them (`kubectl describe pod` and
//! `kubectl get events` show them): Pulling, Pulled, Created, Started, Killing, BackOff,
//! Unhealthy, Failed, FailedCreatePodSandBox. A repeat of the same event (same object, reason
//! and message) raises the stored event's `count` and `lastTimestamp` instead of adding one.
//! Writes are fire-and-forget tasks: an event that cannot be written is logged, never retried.

use podd_api::k8s_openapi::api::core::v1::EventSource;
use podd_api::{Event, ObjectMeta, ObjectReference, Pod, ResourceExt};
use podd_client::Client;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Events remembered for aggregation; beyond this the memory is dropped (a later repeat then
/// starts a new event, which is harmless).
const MAX_REMEMBERED: usize = 4096;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// (pod uid, fieldPath, reason, message) -> (event name, count).
type Seen = HashMap<(String, String, String, String), (String, i32)>;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    host: String,
    seen: Arc<Mutex<Seen>>,
}

/// The Event for `pod` (and its container `container`, if any), first seen now.
pub fn event(
    host: &str,
    pod: &Pod,
    container: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) -> Event {
    let now = podd_pod::pod_status::now();
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let nanos = podd_api::jiff::Timestamp::now().as_nanosecond();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", pod.name_any(), nanos)),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(ns),
            name: Some(pod.name_any()),
            uid: pod.uid(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(host.into()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(host.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    }
}

impl Recorder {
    pub fn new(client: Client, host: &str) -> Recorder {
        Recorder {
            client,
            host: host.to_string(),
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Records an event about `pod` (and its container `container`), in the background.
    pub fn record(
        &self,
        pod: &Pod,
        container: Option<&str>,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let ev = event(&self.host, pod, container, type_, reason, message);
        let key = (
            pod.uid().unwrap_or_default(),
            ev.involved_object.field_path.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= MAX_REMEMBERED && !seen.contains_key(&key) {
                seen.clear();
            }
            match seen.get_mut(&key) {
                Some((name, count)) => {
                    *count += 1;
                    Some((name.clone(), *count))
                }
                None => {
                    let name = ev.metadata.name.clone().unwrap_or_default();
                    seen.insert(key.clone(), (name, 1));
                    None
                }
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            let ns = ev.metadata.namespace.clone();
            let api = this.client.api::<Event>(ns.as_deref());
            if let Some((name, count)) = repeat {
                let patch = serde_json::json!({
                    "count": count,
                    "lastTimestamp": podd_pod::pod_status::now(),
                });
                match api.patch(&name, &patch).await {
                    Ok(_) => return,
                    // Expired or deleted: record it anew under this name.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        tracing::debug!(event = %name, error = %e, "updating an event");
                        return;
                    }
                }
                let mut ev = ev;
                ev.metadata.name = Some(name);
                ev.count = Some(count);
                if let Err(e) = api.create(&ev).await {
                    tracing::debug!(error = %e, "writing an event");
                }
                return;
            }
            if let Err(e) = api.create(&ev).await {
                tracing::debug!(reason = ?ev.reason, error = %e, "writing an event");
                this.seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            }
        });
    }

    /// Forgets what was recorded about a pod that is gone.
    pub fn forget(&self, uid: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| k.0 != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_look_like_the_kubelets() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        let ev = event("n1", &pod, Some("c"), NORMAL, "Pulled", "pulled busybox");
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["source"]["component"], "kubelet");
        assert_eq!(v["source"]["host"], "n1");
        assert_eq!(v["involvedObject"]["kind"], "Pod");
        assert_eq!(v["involvedObject"]["uid"], "u1");
        assert_eq!(v["involvedObject"]["fieldPath"], "spec.containers{c}");
        assert_eq!(v["metadata"]["namespace"], "prod");
        assert!(v["metadata"]["name"].as_str().unwrap().starts_with("web."));
        assert_eq!(v["count"], 1);
        assert_eq!(v["type"], "Normal");
    }
}

//! ConfigMaps and Secrets for the pods of this node: fetched from the API server with the
//! node's credentials when a pod starts, and again every [`REFRESH_INTERVAL`] for the pods
//! whose volumes show them, so that an update reaches the files within a minute (the
//! kubelet's bound). Env is never refreshed: a container keeps the env it started with.

use podd_api::k8s_openapi::api::core::v1::{ConfigMap, Secret};
use podd_api::{Pod, ResourceExt};
use podd_client::Client;
use podd_pod::manager::PodManager;
use podd_pod::projection::ConfigVolumeKind;
use podd_pod::sources::{ConfigSources, References, SourceKind};
use std::sync::Arc;
use std::time::Duration;

/// How often mounted configuration volumes are brought up to date.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// A fetch that failed for another reason than the object not existing.
#[derive(Debug)]
pub struct FetchError(pub String);

/// The path of one ConfigMap or Secret, as Kubernetes serves it.
pub fn object_path(kind: SourceKind, namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/{}/{name}", kind.resource())
}

/// Fetches the objects in `refs` from namespace `namespace`. An object that does not exist
/// is left out (the pod's references decide whether that is an error); any other failure
/// (the server unreachable, access refused) is an error naming the object.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    refs: &References,
) -> Result<ConfigSources, FetchError> {
    let mut sources = ConfigSources::new(namespace);
    for (kind, name) in refs {
        // A name that is not an object name is never in the API: as missing, not as a path.
        if podd_api::validation::check_dns1123_subdomain(name).is_some() {
            continue;
        }
        let path = object_path(*kind, namespace, name);
        let value = match client
            .request::<serde_json::Value>(hyper::Method::GET, &path, None, "")
            .await
        {
            Ok(v) => v,
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                return Err(FetchError(format!(
                    "reading {} {namespace}/{name}: {e}",
                    kind.noun()
                )));
            }
        };
        let bad = |e: serde_json::Error| {
            FetchError(format!("decoding {} {namespace}/{name}: {e}", kind.noun()))
        };
        match kind {
            SourceKind::ConfigMap => {
                sources.insert_config_map(&serde_json::from_value::<ConfigMap>(value).map_err(bad)?)
            }
            SourceKind::Secret => {
                sources.insert_secret(&serde_json::from_value::<Secret>(value).map_err(bad)?)
            }
        }
    }
    Ok(sources)
}

/// Whether the pod has volumes whose files the node keeps up to date.
pub fn has_config_volumes(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| ConfigVolumeKind::of(v).is_some())
}

/// Brings the configuration volumes of `pods` (running here, as the API has them now) up to
/// date. Failures are logged and retried at the next refresh.
pub async fn refresh(client: Client, manager: Arc<PodManager>, pods: Vec<(String, Pod)>) {
    for (uid, pod) in pods {
        let ns = pod.namespace().unwrap_or_default();
        let refs = podd_pod::sources::volume_references(&pod);
        let sources = match fetch(&client, &ns, &refs).await {
            Ok(s) => s,
            Err(FetchError(e)) => {
                tracing::debug!(pod = %podd_pod::pod_name(&pod), error = %e, "refreshing volumes (next round)");
                continue;
            }
        };
        let m = manager.clone();
        let name = podd_pod::pod_name(&pod);
        match tokio::task::spawn_blocking(move || m.refresh_volumes(&uid, &pod, &sources)).await {
            Ok(Ok(updated)) if !updated.is_empty() => {
                tracing::info!(pod = %name, volumes = ?updated, "volumes updated")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(pod = %name, error = %e, "refreshing volumes"),
            Err(e) => tracing::warn!(pod = %name, error = %e, "refreshing volumes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_paths() {
        assert_eq!(
            object_path(SourceKind::ConfigMap, "ns", "cfg"),
            "/api/v1/namespaces/ns/configmaps/cfg"
        );
        assert_eq!(
            object_path(SourceKind::Secret, "default", "db"),
            "/api/v1/namespaces/default/secrets/db"
        );
    }
}

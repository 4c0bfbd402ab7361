//! What a node identity may read. Everything but ConfigMaps and Secrets, as before; those
//! only one at a time (GET by name, never list or watch), and only when a pod bound to the node
//! refers to them, as Kubernetes' node authorizer allows a kubelet: in a volume (`configMap`,
//! `secret`, `projected` sources), in a container's `env[].valueFrom` or `envFrom`, or in
//! `imagePullSecrets`. So a node's token reads no more configuration and credentials than its
//! own pods need.

use crate::auth::Identity;
use crate::cache::WatchCache;
use crate::error::ApiError;
use podd_api::{Kind, Pod};

/// Authorises a read (GET, list, watch) of `kind` in `ns`, of one object when `name` is given.
pub fn authorize_read(
    id: &Identity,
    kind: Kind,
    ns: &str,
    name: Option<&str>,
    cache: &WatchCache,
) -> Result<(), ApiError> {
    let Identity::Node(node) = id else {
        return Ok(());
    };
    if !matches!(kind, Kind::ConfigMap | Kind::Secret) {
        return Ok(());
    }
    let ns = if ns.is_empty() { "default" } else { ns };
    let Some(name) = name else {
        return Err(ApiError::Forbidden(format!(
            "node {node:?} may not list or watch {}: an agent token may get only the ones its \
             pods refer to, one at a time",
            kind.plural()
        )));
    };
    let referenced = cache
        .on_node(node)
        .iter()
        .filter(|p| p.namespace == ns)
        .filter_map(|p| p.decode::<Pod>())
        .any(|p| refers_to(&p, kind, name));
    if referenced {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "node {node:?} may not get {} {ns}/{name}: no pod bound to it refers to it",
            kind.plural()
        )))
    }
}

/// Whether `pod` refers to the ConfigMap or Secret `name` of its namespace.
pub fn refers_to(pod: &Pod, kind: Kind, name: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let is = |n: &str| n == name;
    let secret = kind == Kind::Secret;
    let volumes = spec.volumes.iter().flatten().any(|v| {
        let direct = if secret {
            v.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref().is_some_and(is))
        } else {
            v.config_map.as_ref().is_some_and(|c| is(&c.name))
        };
        let projected = v
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .any(|s| {
                if secret {
                    s.secret.as_ref().is_some_and(|x| is(&x.name))
                } else {
                    s.config_map.as_ref().is_some_and(|x| is(&x.name))
                }
            });
        direct || projected
    });
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            let env = c.env.iter().flatten().any(|e| {
                let from = e.value_from.as_ref();
                if secret {
                    from.and_then(|f| f.secret_key_ref.as_ref())
                        .is_some_and(|r| is(&r.name))
                } else {
                    from.and_then(|f| f.config_map_key_ref.as_ref())
                        .is_some_and(|r| is(&r.name))
                }
            });
            let env_from = c.env_from.iter().flatten().any(|e| {
                if secret {
                    e.secret_ref.as_ref().is_some_and(|r| is(&r.name))
                } else {
                    e.config_map_ref.as_ref().is_some_and(|r| is(&r.name))
                }
            });
            env || env_from
        });
    let ephemeral = spec.ephemeral_containers.iter().flatten().any(|c| {
        c.env.iter().flatten().any(|e| {
            let from = e.value_from.as_ref();
            if secret {
                from.and_then(|f| f.secret_key_ref.as_ref())
                    .is_some_and(|r| is(&r.name))
            } else {
                from.and_then(|f| f.config_map_key_ref.as_ref())
                    .is_some_and(|r| is(&r.name))
            }
        })
    });
    let pull = secret
        && spec
            .image_pull_secrets
            .iter()
            .flatten()
            .any(|r| is(&r.name));
    volumes || containers || ephemeral || pull
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn every_kind_of_reference_counts() {
        let c = |extra: serde_json::Value| {
            let mut container = json!({"name": "c", "image": "i"});
            container
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            pod(json!({"containers": [container]}))
        };
        let env = c(json!({"env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
        ]}));
        assert!(refers_to(&env, Kind::ConfigMap, "cm-env"));
        assert!(refers_to(&env, Kind::Secret, "s-env"));
        assert!(!refers_to(&env, Kind::Secret, "cm-env"));
        assert!(!refers_to(&env, Kind::ConfigMap, "other"));
        let env_from = c(json!({"envFrom": [
            {"configMapRef": {"name": "cm-from"}}, {"secretRef": {"name": "s-from"}}
        ]}));
        assert!(refers_to(&env_from, Kind::ConfigMap, "cm-from"));
        assert!(refers_to(&env_from, Kind::Secret, "s-from"));
        let volumes = pod(json!({
            "containers": [{"name": "c", "image": "i"}],
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-vol"}},
                {"name": "b", "secret": {"secretName": "s-vol"}},
                {"name": "c", "projected": {"sources": [
                    {"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}
                ]}},
            ]
        }));
        for (kind, name) in [
            (Kind::ConfigMap, "cm-vol"),
            (Kind::Secret, "s-vol"),
            (Kind::ConfigMap, "cm-proj"),
            (Kind::Secret, "s-proj"),
            (Kind::Secret, "pull"),
        ] {
            assert!(refers_to(&volumes, kind, name), "{kind:?} {name}");
        }
        assert!(!refers_to(&volumes, Kind::ConfigMap, "pull"));
    }
}

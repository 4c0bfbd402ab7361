//! The kinds podd serves and their place in the API: group, version, resource names, scope.
//! Discovery, routing, storage keys and kubectl's short names all read this one table.

use serde::{Deserialize, Serialize};

/// A kind the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Pod,
    Service,
    Endpoints,
    Node,
    Event,
    Deployment,
    ReplicaSet,
    HorizontalPodAutoscaler,
    EndpointSlice,
    Lease,
    Job,
    CronJob,
    Namespace,
    DaemonSet,
    ConfigMap,
    Secret,
}

/// What the API says of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The `kind` field (`Pod`).
    pub kind: &'static str,
    /// The resource name in paths (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Served with a `/status` subresource (status is written only there).
    pub has_status: bool,
    /// Served with a `/scale` subresource.
    pub has_scale: bool,
    /// kubectl's categories (`all` makes `kubectl get all` list the kind).
    pub categories: &'static [&'static str],
    /// Older versions also served, converted to and from `version` (the stored and
    /// preferred one) by [`crate::convert`].
    pub other_versions: &'static [&'static str],
}

const fn info(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
) -> KindInfo {
    KindInfo {
        group,
        version,
        kind,
        plural,
        singular,
        short_names,
        namespaced,
        has_status: false,
        has_scale: false,
        categories: &[],
        other_versions: &[],
    }
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Pod,
        Kind::Service,
        Kind::Endpoints,
        Kind::Node,
        Kind::Event,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::HorizontalPodAutoscaler,
        Kind::EndpointSlice,
        Kind::Lease,
        Kind::Job,
        Kind::CronJob,
        Kind::Namespace,
        Kind::DaemonSet,
        Kind::ConfigMap,
        Kind::Secret,
    ];

    pub const fn info(self) -> KindInfo {
        match self {
            Kind::Pod => KindInfo {
                has_status: true,
                categories: &["all"],
                ..info("", "v1", "Pod", "pods", "pod", &["po"], true)
            },
            Kind::Service => KindInfo {
                has_status: true,
                categories: &["all"],
                ..info("", "v1", "Service", "services", "service", &["svc"], true)
            },
            Kind::Endpoints => info(
                "",
                "v1",
                "Endpoints",
                "endpoints",
                "endpoints",
                &["ep"],
                true,
            ),
            Kind::Node => KindInfo {
                has_status: true,
                ..info("", "v1", "Node", "nodes", "node", &["no"], false)
            },
            Kind::Event => info("", "v1", "Event", "events", "event", &["ev"], true),
            Kind::Deployment => KindInfo {
                has_status: true,
                has_scale: true,
                categories: &["all"],
                ..info(
                    "apps",
                    "v1",
                    "Deployment",
                    "deployments",
                    "deployment",
                    &["deploy"],
                    true,
                )
            },
            Kind::ReplicaSet => KindInfo {
                has_status: true,
                has_scale: true,
                categories: &["all"],
                ..info(
                    "apps",
                    "v1",
                    "ReplicaSet",
                    "replicasets",
                    "replicaset",
                    &["rs"],
                    true,
                )
            },
            Kind::HorizontalPodAutoscaler => KindInfo {
                has_status: true,
                categories: &["all"],
                // kubectl autoscale (1.32) writes autoscaling/v1.
                other_versions: &["v1"],
                ..info(
                    "autoscaling",
                    "v2",
                    "HorizontalPodAutoscaler",
                    "horizontalpodautoscalers",
                    "horizontalpodautoscaler",
                    &["hpa"],
                    true,
                )
            },
            Kind::EndpointSlice => info(
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
                "endpointslices",
                "endpointslice",
                &[],
                true,
            ),
            Kind::Lease => info(
                "coordination.k8s.io",
                "v1",
                "Lease",
                "leases",
                "lease",
                &[],
                true,
            ),
            Kind::Job => KindInfo {
                has_status: true,
                categories: &["all"],
                ..info("batch", "v1", "Job", "jobs", "job", &[], true)
            },
            Kind::CronJob => KindInfo {
                has_status: true,
                categories: &["all"],
                ..info(
                    "batch",
                    "v1",
                    "CronJob",
                    "cronjobs",
                    "cronjob",
                    &["cj"],
                    true,
                )
            },
            Kind::DaemonSet => KindInfo {
                has_status: true,
                categories: &["all"],
                ..info(
                    "apps",
                    "v1",
                    "DaemonSet",
                    "daemonsets",
                    "daemonset",
                    &["ds"],
                    true,
                )
            },
            Kind::Namespace => KindInfo {
                has_status: true,
                ..info(
                    "",
                    "v1",
                    "Namespace",
                    "namespaces",
                    "namespace",
                    &["ns"],
                    false,
                )
            },
            Kind::ConfigMap => info(
                "",
                "v1",
                "ConfigMap",
                "configmaps",
                "configmap",
                &["cm"],
                true,
            ),
            Kind::Secret => info("", "v1", "Secret", "secrets", "secret", &[], true),
        }
    }

    /// The `kind` field of one object (`Pod`, `Deployment`, ...).
    pub const fn name(self) -> &'static str {
        self.info().kind
    }

    /// The plural, lower-case resource name used in API paths (`pods`, `deployments`, ...).
    pub const fn plural(self) -> &'static str {
        self.info().plural
    }

    pub const fn namespaced(self) -> bool {
        self.info().namespaced
    }

    pub const fn group(self) -> &'static str {
        self.info().group
    }

    pub const fn version(self) -> &'static str {
        self.info().version
    }

    pub const fn has_status(self) -> bool {
        self.info().has_status
    }

    /// `v1`, `apps/v1`, ...
    pub fn api_version(self) -> String {
        let i = self.info();
        if i.group.is_empty() {
            i.version.to_string()
        } else {
            format!("{}/{}", i.group, i.version)
        }
    }

    /// Every version the kind is served in: the stored, preferred one first.
    pub fn served_versions(self) -> impl Iterator<Item = &'static str> {
        let i = self.info();
        std::iter::once(i.version).chain(i.other_versions.iter().copied())
    }

    /// `apiVersion` of the kind in `version` (`autoscaling/v1`).
    pub fn api_version_at(self, version: &str) -> String {
        let i = self.info();
        if i.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", i.group)
        }
    }

    /// The URL prefix of the kind's group in `version` (`/apis/autoscaling/v1`).
    pub fn group_prefix_at(self, version: &str) -> String {
        let i = self.info();
        if i.group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{}/{version}", i.group)
        }
    }

    /// The kind and served version of the resource `plural` under the URL prefix `prefix`
    /// (`/apis/autoscaling/v1`, `horizontalpodautoscalers`).
    pub fn from_path(prefix: &str, plural: &str) -> Option<(Kind, &'static str)> {
        Kind::ALL.into_iter().find_map(|k| {
            if k.plural() != plural {
                return None;
            }
            k.served_versions()
                .find(|v| k.group_prefix_at(v) == prefix)
                .map(|v| (k, v))
        })
    }

    /// `PodList`, ...
    pub fn list_kind(self) -> String {
        format!("{}List", self.name())
    }

    /// The URL prefix of the kind's API group version (`/api/v1`, `/apis/apps/v1`, ...).
    pub fn group_prefix(self) -> String {
        let i = self.info();
        if i.group.is_empty() {
            format!("/api/{}", i.version)
        } else {
            format!("/apis/{}/{}", i.group, i.version)
        }
    }

    /// The kind a resource name in a URL of `group` names.
    pub fn from_resource(group: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.plural() == plural)
    }

    /// The kind a user's word names: plural, singular, kind or short name, any case
    /// (`pods`, `pod`, `po`, `Pod`, `deploy`), optionally with `.group`.
    pub fn from_plural(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase();
        let (word, group) = match s.split_once('.') {
            Some((w, g)) => (w.to_string(), Some(g.to_string())),
            None => (s, None),
        };
        Kind::ALL.into_iter().find(|k| {
            let i = k.info();
            group.as_deref().is_none_or(|g| g == i.group)
                && (i.plural == word
                    || i.singular == word
                    || i.kind.eq_ignore_ascii_case(&word)
                    || i.short_names.contains(&word.as_str()))
        })
    }

    /// The store key prefix of the kind in `namespace` (all namespaces when None).
    pub fn key_prefix(self, namespace: Option<&str>) -> String {
        match (self.namespaced(), namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/", self.storage_segment(), ns),
            _ => format!("/registry/{}/", self.storage_segment()),
        }
    }

    /// The store key of one object.
    pub fn key(self, namespace: &str, name: &str) -> String {
        if self.namespaced() {
            format!(
                "/registry/{}/{}/{}",
                self.storage_segment(),
                namespace,
                name
            )
        } else {
            format!("/registry/{}/{}", self.storage_segment(), name)
        }
    }

    /// The key segment: the plural, qualified by group outside the core and apps groups so
    /// that two groups' resources of one name never share keys.
    fn storage_segment(self) -> String {
        match self.group() {
            "" | "apps" | "autoscaling" => self.plural().to_string(),
            g => format!("{g}/{}", self.plural()),
        }
    }

    /// The kind a store key belongs to.
    pub fn from_key(key: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| key.starts_with(&k.key_prefix(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        assert_eq!(Kind::from_plural("po"), Some(Kind::Pod));
        assert_eq!(Kind::from_plural("Deployment"), Some(Kind::Deployment));
        assert_eq!(
            Kind::from_plural("deployments.apps"),
            Some(Kind::Deployment)
        );
        assert_eq!(Kind::from_plural("deployments.batch"), None);
        assert_eq!(
            Kind::from_plural("hpa"),
            Some(Kind::HorizontalPodAutoscaler)
        );
        assert_eq!(
            Kind::from_resource("apps", "replicasets"),
            Some(Kind::ReplicaSet)
        );
        assert_eq!(Kind::Deployment.group_prefix(), "/apis/apps/v1");
        assert_eq!(Kind::Pod.api_version(), "v1");
    }

    #[test]
    fn hpa_is_served_in_v2_and_v1() {
        let h = Kind::HorizontalPodAutoscaler;
        assert_eq!(h.served_versions().collect::<Vec<_>>(), ["v2", "v1"]);
        assert_eq!(h.api_version_at("v1"), "autoscaling/v1");
        assert_eq!(
            Kind::from_path("/apis/autoscaling/v1", "horizontalpodautoscalers"),
            Some((h, "v1"))
        );
        assert_eq!(
            Kind::from_path("/apis/autoscaling/v2", "horizontalpodautoscalers"),
            Some((h, "v2"))
        );
        assert_eq!(
            Kind::from_path("/apis/autoscaling/v2beta2", "horizontalpodautoscalers"),
            None
        );
        assert_eq!(Kind::from_path("/api/v1", "pods"), Some((Kind::Pod, "v1")));
        assert_eq!(Kind::from_path("/apis/apps/v1", "pods"), None);
    }

    #[test]
    fn keys_do_not_collide() {
        for a in Kind::ALL {
            assert_eq!(Kind::from_key(&a.key("ns", "x")), Some(a), "{a:?}");
            for b in Kind::ALL.into_iter().filter(|b| *b != a) {
                assert!(
                    !a.key("ns", "x").starts_with(&b.key_prefix(None)),
                    "{a:?} {b:?}"
                );
            }
        }
    }
}

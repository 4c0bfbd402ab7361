//! How Kubernetes merges the lists and objects of the served kinds: the one table that both the
//! strategic merge patch and server-side apply read.
//!
//! The entries come from the struct tags and markers of k8s.io/api (1.34): `patchStrategy` and
//! `patchMergeKey` for the strategic merge patch, `+listType`/`+listMapKey` and
//! `+structType=atomic`/`+mapType=atomic` for server-side apply. A list that is not in the table
//! is replaced by a strategic merge patch and atomic for server-side apply (as in Kubernetes);
//! an object that is not in the table is merged field by field.

use crate::Kind;
use std::collections::HashMap;
use std::sync::OnceLock;

/// What a strategic merge patch does with a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategic {
    /// No `patchStrategy`: the patch's list replaces the live one.
    Replace,
    /// `patchStrategy:"merge"` on a list of scalars: the union (and `$deleteFromPrimitiveList`).
    MergeScalars,
    /// `patchStrategy:"merge"` with `patchMergeKey`: items are merged by this key.
    MergeByKey(&'static str),
}

/// A key field of a server-side apply map list, with the default the schema gives it
/// (`protocol` defaults to `TCP`, so `k:{"containerPort":80,"protocol":"TCP"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyField {
    pub name: &'static str,
    pub default: Option<&'static str>,
}

/// The server-side apply list type (`x-kubernetes-list-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole; owned as one field.
    Atomic,
    /// A set of scalars; items are `v:<value>`.
    Set,
    /// Items identified by key fields; items are `k:{...}`.
    Map(&'static [KeyField]),
}

/// What the table says of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    List {
        strategic: Strategic,
        apply: ListType,
    },
    /// An object (struct or map) that server-side apply owns and replaces whole.
    AtomicObject,
}

/// Where a rule's path starts.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// An ObjectMeta (`metadata`, and a pod template's `metadata`).
    Meta,
    /// A PodSpec (`spec` of a Pod, `spec.template.spec` of a Deployment or ReplicaSet).
    PodSpec,
    /// A container of a PodSpec (`containers`, `initContainers`, `ephemeralContainers`).
    Container,
    /// The object root of these kinds.
    Root(&'static [Kind]),
}

const fn key(name: &'static str) -> KeyField {
    KeyField {
        name,
        default: None,
    }
}

const TCP: KeyField = KeyField {
    name: "protocol",
    default: Some("TCP"),
};

const fn by_key(strategic_key: &'static str, keys: &'static [KeyField]) -> Shape {
    Shape::List {
        strategic: Strategic::MergeByKey(strategic_key),
        apply: ListType::Map(keys),
    }
}

const MERGED_SET: Shape = Shape::List {
    strategic: Strategic::MergeScalars,
    apply: ListType::Set,
};

const BY_NAME: Shape = by_key("name", &[key("name")]);
const BY_TYPE: Shape = by_key("type", &[key("type")]);

const ATOMIC: Shape = Shape::AtomicObject;

const WORKLOADS: &[Kind] = &[
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::Job,
    Kind::DaemonSet,
];

/// Paths are field names joined by `.`; list items are transparent (`containers.env` is the
/// `env` of every container).
const RULES: &[(Scope, &str, Shape)] = &[
    // ObjectMeta
    (Scope::Meta, "finalizers", MERGED_SET),
    (Scope::Meta, "ownerReferences", by_key("uid", &[key("uid")])),
    (Scope::Meta, "ownerReferences.*", ATOMIC),
    // PodSpec
    (Scope::PodSpec, "volumes", BY_NAME), // also retainKeys (only kubectl's diff uses it)
    (Scope::PodSpec, "containers", BY_NAME),
    (Scope::PodSpec, "initContainers", BY_NAME),
    (Scope::PodSpec, "ephemeralContainers", BY_NAME),
    (Scope::PodSpec, "imagePullSecrets", BY_NAME),
    (Scope::PodSpec, "imagePullSecrets.*", ATOMIC),
    (Scope::PodSpec, "hostAliases", by_key("ip", &[key("ip")])),
    (
        Scope::PodSpec,
        "topologySpreadConstraints",
        by_key(
            "topologyKey",
            &[key("topologyKey"), key("whenUnsatisfiable")],
        ),
    ),
    (
        Scope::PodSpec,
        "topologySpreadConstraints.labelSelector",
        ATOMIC,
    ),
    (Scope::PodSpec, "schedulingGates", BY_NAME),
    (Scope::PodSpec, "resourceClaims", BY_NAME),
    (Scope::PodSpec, "nodeSelector", ATOMIC),
    (
        Scope::PodSpec,
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        ATOMIC,
    ),
    // Container
    (
        Scope::Container,
        "ports",
        by_key("containerPort", &[key("containerPort"), TCP]),
    ),
    (Scope::Container, "env", BY_NAME),
    (Scope::Container, "env.valueFrom.configMapKeyRef", ATOMIC),
    (Scope::Container, "env.valueFrom.secretKeyRef", ATOMIC),
    (Scope::Container, "env.valueFrom.fieldRef", ATOMIC),
    (Scope::Container, "env.valueFrom.resourceFieldRef", ATOMIC),
    (Scope::Container, "env.valueFrom.fileKeyRef", ATOMIC),
    (Scope::Container, "envFrom", ATOMIC),
    (
        Scope::Container,
        "volumeMounts",
        by_key("mountPath", &[key("mountPath")]),
    ),
    (
        Scope::Container,
        "volumeDevices",
        by_key("devicePath", &[key("devicePath")]),
    ),
    (
        Scope::Container,
        "resources.claims",
        Shape::List {
            strategic: Strategic::Replace,
            apply: ListType::Map(&[key("name")]),
        },
    ),
    // Pod status
    (Scope::Root(&[Kind::Pod]), "status.conditions", BY_TYPE),
    (
        Scope::Root(&[Kind::Pod]),
        "status.podIPs",
        by_key("ip", &[key("ip")]),
    ),
    (
        Scope::Root(&[Kind::Pod]),
        "status.hostIPs",
        Shape::List {
            strategic: Strategic::MergeByKey("ip"),
            apply: ListType::Atomic,
        },
    ),
    (
        Scope::Root(&[Kind::Pod]),
        "status.resourceClaimStatuses",
        BY_NAME,
    ),
    // Service
    (
        Scope::Root(&[Kind::Service]),
        "spec.ports",
        by_key("port", &[key("port"), TCP]),
    ),
    (Scope::Root(&[Kind::Service]), "spec.selector", ATOMIC),
    (Scope::Root(&[Kind::Service]), "status.conditions", BY_TYPE),
    // Node
    (Scope::Root(&[Kind::Node]), "spec.podCIDRs", MERGED_SET),
    (Scope::Root(&[Kind::Node]), "status.conditions", BY_TYPE),
    (Scope::Root(&[Kind::Node]), "status.addresses", BY_TYPE),
    (
        Scope::Root(&[Kind::Namespace]),
        "status.conditions",
        BY_TYPE,
    ),
    // Deployment, ReplicaSet, Job, DaemonSet
    (Scope::Root(WORKLOADS), "spec.selector", ATOMIC),
    (Scope::Root(WORKLOADS), "status.conditions", BY_TYPE),
    // HorizontalPodAutoscaler
    (
        Scope::Root(&[Kind::HorizontalPodAutoscaler]),
        "status.conditions",
        BY_TYPE,
    ),
    // Event
    (Scope::Root(&[Kind::Event]), "involvedObject", ATOMIC),
    (Scope::Root(&[Kind::Event]), "related", ATOMIC),
    // EndpointSlice: endpoints and ports are atomic lists (the default).
];

/// Where the scopes sit in each kind.
fn anchors(kind: Kind, scope: Scope) -> Vec<String> {
    let pod_specs: &[&str] = match kind {
        Kind::Pod => &["spec"],
        Kind::Deployment | Kind::ReplicaSet | Kind::Job | Kind::DaemonSet => {
            &["spec.template.spec"]
        }
        Kind::CronJob => &["spec.jobTemplate.spec.template.spec"],
        _ => &[],
    };
    match scope {
        Scope::Root(kinds) => {
            if kinds.contains(&kind) {
                vec![String::new()]
            } else {
                vec![]
            }
        }
        Scope::Meta => {
            let mut v = vec!["metadata".to_string()];
            if matches!(
                kind,
                Kind::Deployment | Kind::ReplicaSet | Kind::Job | Kind::DaemonSet
            ) {
                v.push("spec.template.metadata".to_string());
            }
            if kind == Kind::CronJob {
                v.push("spec.jobTemplate.metadata".to_string());
                v.push("spec.jobTemplate.spec.template.metadata".to_string());
            }
            v
        }
        Scope::PodSpec => pod_specs.iter().map(|s| s.to_string()).collect(),
        Scope::Container => pod_specs
            .iter()
            .flat_map(|s| {
                ["containers", "initContainers", "ephemeralContainers"].map(|c| format!("{s}.{c}"))
            })
            .collect(),
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// The table, expanded to full paths per kind (by kind first, so that a lookup by path needs
/// no allocation: the walks of managedFields look up every node of every write).
fn table() -> &'static HashMap<Kind, HashMap<String, Shape>> {
    static TABLE: OnceLock<HashMap<Kind, HashMap<String, Shape>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: HashMap<Kind, HashMap<String, Shape>> = HashMap::new();
        for kind in Kind::ALL {
            for (scope, path, shape) in RULES {
                for anchor in anchors(kind, *scope) {
                    t.entry(kind)
                        .or_default()
                        .insert(join(&anchor, path), *shape);
                }
            }
        }
        t
    })
}

/// What the table says of the field at `path` (field names joined by `.`, list items
/// transparent, `*` standing for the items of a list) of an object of `kind`.
pub fn shape(kind: Kind, path: &str) -> Option<Shape> {
    table().get(&kind)?.get(path).copied()
}

/// The path of a child field.
pub fn child(path: &str, field: &str) -> String {
    join(path, field)
}

/// The path of a list's items (only used to find atomic items).
pub fn items(path: &str) -> String {
    join(path, "*")
}

/// The strategic merge patch strategy of the list at `path`.
pub fn strategic(kind: Kind, path: &str) -> Strategic {
    match shape(kind, path) {
        Some(Shape::List { strategic, .. }) => strategic,
        _ => Strategic::Replace,
    }
}

/// The server-side apply list type of the list at `path`.
pub fn list_type(kind: Kind, path: &str) -> ListType {
    match shape(kind, path) {
        Some(Shape::List { apply, .. }) => apply,
        _ => ListType::Atomic,
    }
}

/// Whether server-side apply owns the object at `path` whole.
pub fn atomic_object(kind: Kind, path: &str) -> bool {
    matches!(shape(kind, path), Some(Shape::AtomicObject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_merge_by_name_in_pods_and_templates() {
        for (kind, path) in [
            (Kind::Pod, "spec.containers"),
            (Kind::Deployment, "spec.template.spec.containers"),
            (Kind::ReplicaSet, "spec.template.spec.initContainers"),
        ] {
            assert_eq!(
                strategic(kind, path),
                Strategic::MergeByKey("name"),
                "{path}"
            );
        }
        assert_eq!(
            strategic(Kind::Service, "spec.containers"),
            Strategic::Replace
        );
        assert_eq!(
            strategic(Kind::Deployment, "spec.template.spec.containers.env"),
            Strategic::MergeByKey("name")
        );
        assert_eq!(
            strategic(Kind::Pod, "spec.containers.ports"),
            Strategic::MergeByKey("containerPort")
        );
        assert_eq!(
            strategic(Kind::Pod, "spec.containers.volumeMounts"),
            Strategic::MergeByKey("mountPath")
        );
        assert_eq!(
            strategic(Kind::Service, "spec.ports"),
            Strategic::MergeByKey("port")
        );
        assert_eq!(strategic(Kind::Pod, "spec.tolerations"), Strategic::Replace);
        assert_eq!(strategic(Kind::Node, "spec.taints"), Strategic::Replace);
        assert_eq!(
            strategic(Kind::Node, "status.addresses"),
            Strategic::MergeByKey("type")
        );
        assert_eq!(
            strategic(Kind::Lease, "metadata.finalizers"),
            Strategic::MergeScalars
        );
        assert_eq!(
            strategic(Kind::Deployment, "spec.template.metadata.ownerReferences"),
            Strategic::MergeByKey("uid")
        );
    }

    #[test]
    fn apply_list_types() {
        const PORT_KEYS: &[KeyField] = &[key("containerPort"), TCP];
        assert_eq!(
            list_type(Kind::Pod, "spec.containers.ports"),
            ListType::Map(PORT_KEYS)
        );
        assert_eq!(list_type(Kind::Pod, "status.hostIPs"), ListType::Atomic);
        assert_eq!(list_type(Kind::Pod, "metadata.finalizers"), ListType::Set);
        assert!(atomic_object(Kind::Deployment, "spec.selector"));
        assert!(atomic_object(Kind::Pod, "metadata.ownerReferences.*"));
        assert!(!atomic_object(Kind::Pod, "spec.selector"));
    }
}

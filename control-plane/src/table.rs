//! Server-side Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): the
//! columns kubectl prints for each kind, as kube-apiserver's printers
//! (`pkg/printers/internalversion`) define them. As kube-apiserver, the rows always carry the
//! wide (priority 1) cells, kubectl shows them with `-o wide`; ages are sent as the short
//! durations kubectl prints (`5m`, `3d4h`), computed when the table is made.

mod cells;

use podd_api::jiff::Timestamp;
use podd_api::{Kind, ObjectMeta};
use serde_json::{Value, json};

/// One column of a Table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `boolean`.
    pub type_: &'static str,
    /// `name` for the object's name column, else empty.
    pub format: &'static str,
    /// 0: always shown; 1: shown by `-o wide`.
    pub priority: u8,
    pub description: &'static str,
}

const fn col(
    name: &'static str,
    type_: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        priority,
        description,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
};
const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
);
const CONTAINERS: Column = col(
    "Containers",
    "string",
    1,
    "Names of each container in the template.",
);
const IMAGES: Column = col(
    "Images",
    "string",
    1,
    "Images referenced by each container in the template.",
);

/// The columns of `kind`'s Table, in kube-apiserver's order.
pub fn columns(kind: Kind) -> Vec<Column> {
    match kind {
        Kind::Pod => vec![
            NAME,
            col(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            col(
                "IP",
                "string",
                1,
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            col(
                "Node",
                "string",
                1,
                "NodeName indicates in which node this pod is scheduled.",
            ),
            col(
                "Nominated Node",
                "string",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
            ),
            col(
                "Readiness Gates",
                "string",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        Kind::Deployment => vec![
            NAME,
            col("Ready", "string", 0, "Number of the pod with ready state"),
            col(
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            col(
                "Selector",
                "string",
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ],
        Kind::ReplicaSet => vec![
            NAME,
            col(
                "Desired",
                "integer",
                0,
                "Replicas is the number of desired replicas.",
            ),
            col(
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            col(
                "Ready",
                "integer",
                0,
                "The number of ready replicas for this replica set.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            col(
                "Selector",
                "string",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        Kind::Service => vec![
            NAME,
            col(
                "Type",
                "string",
                0,
                "type determines how the Service is exposed.",
            ),
            col(
                "Cluster-IP",
                "string",
                0,
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            col(
                "External-IP",
                "string",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            col(
                "Port(s)",
                "string",
                0,
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            col(
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        Kind::Endpoints => vec![
            NAME,
            col(
                "Endpoints",
                "string",
                0,
                "The set of all endpoints is the union of all subsets.",
            ),
            AGE,
        ],
        Kind::EndpointSlice => vec![
            NAME,
            col(
                "AddressType",
                "string",
                0,
                "addressType specifies the type of address carried by this EndpointSlice.",
            ),
            col(
                "Ports",
                "string",
                0,
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            col(
                "Endpoints",
                "string",
                0,
                "endpoints is a list of unique endpoints in this slice.",
            ),
            AGE,
        ],
        Kind::Node => vec![
            NAME,
            col("Status", "string", 0, "The status of the node"),
            col("Roles", "string", 0, "The roles of the node"),
            AGE,
            col(
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            col(
                "Internal-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            col(
                "External-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            col(
                "OS-Image",
                "string",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            col(
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            col(
                "Container-Runtime",
                "string",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        Kind::Event => vec![
            col(
                "Last Seen",
                "string",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            col(
                "Type",
                "string",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            col(
                "Reason",
                "string",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col(
                "Object",
                "string",
                0,
                "The object that this event is about.",
            ),
            col(
                "Subobject",
                "string",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            ),
            col("Source", "string", 1, "The component reporting this event."),
            col(
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
            col(
                "First Seen",
                "string",
                1,
                "The time at which the event was first recorded.",
            ),
            col(
                "Count",
                "string",
                1,
                "The number of times this event has occurred.",
            ),
            Column {
                priority: 1,
                ..NAME
            },
        ],
        Kind::HorizontalPodAutoscaler => vec![
            NAME,
            col(
                "Reference",
                "string",
                0,
                "scaleTargetRef points to the target resource to scale.",
            ),
            col(
                "Targets",
                "string",
                0,
                "metrics contains the specifications for which to use to calculate the desired replica count.",
            ),
            col(
                "MinPods",
                "string",
                0,
                "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
            ),
            col(
                "MaxPods",
                "string",
                0,
                "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
            ),
            col(
                "Replicas",
                "string",
                0,
                "currentReplicas is current number of replicas of pods managed by this autoscaler.",
            ),
            AGE,
        ],
        Kind::DaemonSet => vec![
            NAME,
            col(
                "Desired",
                "integer",
                0,
                "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
            ),
            col(
                "Current",
                "integer",
                0,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
            ),
            col(
                "Ready",
                "integer",
                0,
                "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
            ),
            col(
                "Up-to-date",
                "integer",
                0,
                "The total number of nodes that are running updated daemon pod",
            ),
            col(
                "Available",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            col(
                "Node Selector",
                "string",
                0,
                "An object that describes the pod that will be created. The DaemonSet will create exactly one copy of this pod on every node that matches the template's node selector (or on every node if no node selector is specified). The only allowed template.spec.restartPolicy value is \"Always\". More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#pod-template",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            col(
                "Selector",
                "string",
                1,
                "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            ),
        ],
        Kind::Job => vec![
            NAME,
            col("Status", "string", 0, "Status of the job."),
            col(
                "Completions",
                "string",
                0,
                "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.",
            ),
            col(
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            col(
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            ),
        ],
        Kind::CronJob => vec![
            NAME,
            col(
                "Schedule",
                "string",
                0,
                "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
            ),
            col(
                "Timezone",
                "string",
                0,
                "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones",
            ),
            col(
                "Suspend",
                "boolean",
                0,
                "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.",
            ),
            col(
                "Active",
                "integer",
                0,
                "A list of pointers to currently running jobs.",
            ),
            col(
                "Last Schedule",
                "string",
                0,
                "Information when was the last time the job was successfully scheduled.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            col(
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            ),
        ],
        Kind::Lease => vec![
            NAME,
            col(
                "Holder",
                "string",
                0,
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            AGE,
        ],
        Kind::Namespace => vec![
            NAME,
            col("Status", "string", 0, "The status of the namespace"),
            AGE,
        ],
        Kind::ConfigMap => vec![
            NAME,
            col(
                "Data",
                "string",
                0,
                "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
            ),
            AGE,
        ],
        Kind::Secret => vec![
            NAME,
            col(
                "Type",
                "string",
                0,
                "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
            ),
            col(
                "Data",
                "string",
                0,
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
            ),
            AGE,
        ],
    }
}

/// What each row carries of its object (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    /// kube-apiserver's default: a PartialObjectMetadata, enough for kubectl's NAMESPACE and
    /// LABELS columns.
    Metadata,
    Object,
}

impl IncludeObject {
    /// The request's `includeObject`; empty is the default, Metadata.
    pub fn parse(s: &str) -> Option<IncludeObject> {
        match s {
            "None" => Some(IncludeObject::None),
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// A meta.k8s.io/v1 Table of `items` (objects of `kind`, as JSON). `include_object` is the
/// request's `includeObject` (`None`, `Metadata` (kubectl's default) or `Object`; an unknown
/// value is taken as the default: the HTTP layer refuses it first with
/// [`IncludeObject::parse`]).
pub fn to_table(kind: Kind, items: &[Value], include_object: &str) -> Value {
    to_table_at(kind, items, include_object, Timestamp::now())
}

/// [`to_table`] with ages counted up to `now`.
pub fn to_table_at(kind: Kind, items: &[Value], include_object: &str, now: Timestamp) -> Value {
    let include = IncludeObject::parse(include_object).unwrap_or(IncludeObject::Metadata);
    let defs: Vec<Value> = columns(kind)
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let width = defs.len();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut row = cells::row(kind, item, now);
            // A stored object that no longer decodes still gets its name and a full row.
            row.cells.resize(width, Value::String(String::new()));
            let mut v = json!({"cells": row.cells});
            if !row.conditions.is_empty() {
                v["conditions"] = row.conditions.into();
            }
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => v["object"] = partial_metadata(item),
                IncludeObject::Object => v["object"] = item.clone(),
            }
            v
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// [`to_table`] of stored objects given as their JSON, as a list answers, with the list's
/// `metadata`, encoded: each object is decoded once, straight into its type; each row is
/// written as bytes (its PartialObjectMetadata copies the stored metadata's JSON); and big
/// lists are split over the machine's cores (10,000 pods are a few hundred milliseconds of
/// decoding on one).
pub fn table_of_json(
    kind: Kind,
    items: &[&[u8]],
    include_object: &str,
    metadata: &Value,
) -> Vec<u8> {
    table_of_json_at(kind, items, include_object, metadata, Timestamp::now())
}

/// A row as it goes on the wire.
#[derive(serde::Serialize)]
struct RowOut<'a> {
    cells: &'a [Value],
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    conditions: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<PartialMetadataOut<'a>>,
}

#[derive(serde::Serialize)]
struct PartialMetadataOut<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: &'a serde_json::value::RawValue,
}

/// The stored object's metadata, as its JSON.
#[derive(serde::Deserialize)]
struct RawMetadata<'a> {
    #[serde(borrow)]
    metadata: Option<&'a serde_json::value::RawValue>,
}

/// [`table_of_json`] with ages counted up to `now`.
pub fn table_of_json_at(
    kind: Kind,
    items: &[&[u8]],
    include_object: &str,
    metadata: &Value,
    now: Timestamp,
) -> Vec<u8> {
    let include = IncludeObject::parse(include_object).unwrap_or(IncludeObject::Metadata);
    let width = columns(kind).len();
    // The generic path, for whole objects and for objects that do not decode as their kind.
    let generic_row = |json: &[u8]| -> Vec<u8> {
        let v: Value = serde_json::from_slice(json).unwrap_or_else(|_| json!({}));
        let t = to_table_at(kind, std::slice::from_ref(&v), include_object, now);
        serde_json::to_vec(&t["rows"][0]).unwrap_or_default()
    };
    let row_of = |json: &[u8]| -> Vec<u8> {
        if include == IncludeObject::Object {
            return generic_row(json);
        }
        let Some(row) = cells::row_of_json(kind, json, now) else {
            return generic_row(json);
        };
        let mut cells = row.cells;
        cells.resize(width, Value::String(String::new()));
        let raw: Option<RawMetadata<'_>> = serde_json::from_slice(json).ok();
        let empty = serde_json::value::RawValue::from_string("{}".into()).ok();
        let meta = raw.and_then(|r| r.metadata).or(empty.as_deref());
        let object = match (include, meta) {
            (IncludeObject::Metadata, Some(metadata)) => Some(PartialMetadataOut {
                kind: "PartialObjectMetadata",
                api_version: "meta.k8s.io/v1",
                metadata,
            }),
            _ => None,
        };
        serde_json::to_vec(&RowOut {
            cells: &cells,
            conditions: &row.conditions,
            object,
        })
        .unwrap_or_default()
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().min(8))
        .unwrap_or(1);
    let rows: Vec<Vec<u8>> = if threads > 1 && items.len() >= 1024 {
        let chunk = items.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = items
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(|j| row_of(j)).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    } else {
        items.iter().map(|j| row_of(j)).collect()
    };
    // The frame (kind, columns, metadata) from the generic path, with the rows spliced in.
    let mut frame = to_table_at(kind, &[], include_object, now);
    frame["metadata"] = metadata.clone();
    if let Some(o) = frame.as_object_mut() {
        o.remove("rows");
    }
    let mut out = serde_json::to_vec(&frame).unwrap_or_default();
    out.pop(); // the frame's closing brace
    let size: usize = rows.iter().map(|r| r.len() + 1).sum();
    out.reserve(size + 16);
    out.extend_from_slice(if out.ends_with(b"{") {
        b"\"rows\":["
    } else {
        b",\"rows\":["
    });
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.extend_from_slice(b"]}");
    out
}

/// The PartialObjectMetadata of an object (meta.k8s.io/v1).
fn partial_metadata(item: &Value) -> Value {
    let meta = item.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// Go's `duration.HumanDuration`: the short, two-significant-unit age kubectl prints.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of a moment as kube-apiserver prints it (`<unknown>` when unset).
fn since(t: Option<&Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(*t).as_secs()),
        None => "<unknown>".into(),
    }
}

fn age(meta: &ObjectMeta, now: Timestamp) -> String {
    since(meta.creation_timestamp.as_ref().map(|t| &t.0), now)
}

#[cfg(test)]
mod tests;

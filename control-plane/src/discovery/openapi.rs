//! `/openapi/v2` (Swagger 2.0) and `/openapi/v3` (an index of one OpenAPI 3.0 document per
//! group version, `/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`, ...), generated once from
//! the k8s-openapi types' schemas (schemars), under Kubernetes' definition names
//! (`io.k8s.api.core.v1.Pod`), each kind's schema and operations carrying
//! `x-kubernetes-group-version-kind`. That is what `kubectl explain` reads, and what kubectl's
//! field validation checks (a `fieldValidation` parameter on each PATCH) before it leaves
//! validation to the server.
//!
//! PATCH operations list JSON patch, merge patch and apply patch, not strategic merge patch,
//! although the server takes it: the schemas carry no `x-kubernetes-patch-merge-key`, and a
//! kubectl that saw strategic merge listed would compute `kubectl apply`'s patches from these
//! schemas, treating every list as atomic. Without it kubectl computes them from its built-in
//! types, with Kubernetes' merge keys, and still sends a strategic merge patch.

use podd_api::Kind;
use podd_api::k8s_openapi::schemars::generate::SchemaSettings;
use podd_api::k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use super::groups::GIT_VERSION;

const V3_PREFIX: &str = "#/components/schemas/";
const V2_PREFIX: &str = "#/definitions/";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// The served documents, built on first use.
struct Documents {
    v2: Vec<u8>,
    v3_index: Vec<u8>,
    /// `api/v1`, `apis/apps/v1`, ... -> (hash, document).
    v3: BTreeMap<String, (String, Vec<u8>)>,
}

static DOCUMENTS: LazyLock<Documents> = LazyLock::new(build);

/// `/openapi/v2`.
pub fn v2() -> &'static [u8] {
    &DOCUMENTS.v2
}

/// `/openapi/v3`.
pub fn v3_index() -> &'static [u8] {
    &DOCUMENTS.v3_index
}

/// `/openapi/v3/<gv_path>` (`api/v1`, `apis/apps/v1`): the document and its hash.
pub fn v3(gv_path: &str) -> Option<(&'static str, &'static [u8])> {
    DOCUMENTS
        .v3
        .get(gv_path.trim_matches('/'))
        .map(|(h, d)| (h.as_str(), d.as_slice()))
}

fn hash(bytes: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(bytes))
}

/// The group versions of the served kinds, as `(group, version)`, core first.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in Kind::ALL {
        for v in k.served_versions() {
            let gv = (k.group(), v);
            if !out.contains(&gv) {
                out.push(gv);
            }
        }
    }
    out
}

/// The kinds served in `group`/`version`.
fn kinds_at(group: &str, version: &str) -> Vec<Kind> {
    Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group && k.served_versions().any(|v| v == version))
        .collect()
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn build() -> Documents {
    let defs = definitions();
    let mut v3 = BTreeMap::new();
    let mut index = Map::new();
    let mut all_paths = Map::new();
    for (group, version) in group_versions() {
        let kinds = kinds_at(group, version);
        let paths = paths(&kinds, version, Dialect::V3);
        let mut roots: Vec<String> = kinds
            .iter()
            .flat_map(|k| {
                [
                    schema_name_at(*k, version),
                    list_schema_name_at(*k, version),
                ]
            })
            .collect();
        roots.extend([STATUS, DELETE_OPTIONS, PATCH].map(String::from));
        if kinds.iter().any(|k| k.info().has_scale) {
            roots.push(SCALE.into());
        }
        let schemas = reachable(&defs, roots);
        let doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": GIT_VERSION},
            "paths": paths,
            "components": {"schemas": schemas},
        });
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let h = hash(&bytes);
        let key = gv_path(group, version);
        index.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={h}")}),
        );
        v3.insert(key, (h, bytes));
        all_paths.extend(self::paths(&kinds, version, Dialect::V2));
    }
    let v2_defs: Map<String, Value> = defs
        .into_iter()
        .map(|(k, mut v)| {
            rewrite_refs(&mut v);
            (k, v)
        })
        .collect();
    let v2 = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": all_paths,
        "definitions": v2_defs,
    });
    Documents {
        v2: serde_json::to_vec(&v2).unwrap_or_default(),
        v3_index: serde_json::to_vec(&json!({"paths": index})).unwrap_or_default(),
        v3,
    }
}

fn schema_name(kind: Kind) -> String {
    podd_api::with_kind_type!(kind, T => <T as JsonSchema>::schema_name().into_owned())
}

/// The older versions' types (see `Kind::served_versions`).
type HpaV1 = podd_api::k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;

/// The schema of `kind` in `version`, which may be an older one it is also served in.
fn schema_name_at(kind: Kind, version: &str) -> String {
    match (kind, version) {
        (Kind::HorizontalPodAutoscaler, "v1") => <HpaV1 as JsonSchema>::schema_name().into_owned(),
        _ => schema_name(kind),
    }
}

fn list_schema_name_at(kind: Kind, version: &str) -> String {
    format!("{}List", schema_name_at(kind, version))
}

/// Every (kind, version) served in a version other than the stored one.
fn other_versions() -> impl Iterator<Item = (Kind, &'static str)> {
    Kind::ALL
        .into_iter()
        .flat_map(|k| k.info().other_versions.iter().map(move |v| (k, *v)))
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

/// Every definition the served kinds need, OpenAPI 3 style (`#/components/schemas/...`
/// references), with the kinds' and their lists' `x-kubernetes-group-version-kind`.
fn definitions() -> Map<String, Value> {
    let mut generator: SchemaGenerator = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    for k in Kind::ALL {
        podd_api::with_kind_type!(k, T => {
            generator.subschema_for::<T>();
        });
    }
    generator.subschema_for::<HpaV1>();
    generator.subschema_for::<podd_api::Status>();
    generator
        .subschema_for::<podd_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
    generator.subschema_for::<podd_api::k8s_openapi::api::autoscaling::v1::Scale>();
    generator.subschema_for::<podd_api::ListMeta>();
    let mut defs = generator.take_definitions(true);
    defs.insert(
        PATCH.into(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    let mut mark = |name: &str, gvk: Value| {
        if let Some(Value::Object(s)) = defs.get_mut(name) {
            s.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
    };
    for k in Kind::ALL {
        mark(&schema_name(k), gvk(k.group(), k.version(), k.name()));
    }
    for (k, v) in other_versions() {
        mark(&schema_name_at(k, v), gvk(k.group(), v, k.name()));
    }
    mark(STATUS, gvk("", "v1", "Status"));
    mark(SCALE, gvk("autoscaling", "v1", "Scale"));
    let listed = Kind::ALL
        .into_iter()
        .map(|k| (k, k.version()))
        .chain(other_versions());
    for (k, version) in listed {
        let schema_name = |k: Kind| schema_name_at(k, version);
        let list_schema_name = |k: Kind| list_schema_name_at(k, version);
        defs.insert(
            list_schema_name(k),
            json!({
                "description": format!("{} is a list of {} objects.", k.list_kind(), k.name()),
                "type": "object",
                "properties": {
                    "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
                    "items": {
                        "description": format!("List of {}.", k.plural()),
                        "type": "array",
                        "items": {"$ref": format!("{V3_PREFIX}{}", schema_name(k))},
                    },
                    "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
                    "metadata": {
                        "description": "Standard list metadata.",
                        "allOf": [{"$ref": format!("{V3_PREFIX}{LIST_META}")}],
                    },
                },
                "required": ["items"],
                "x-kubernetes-group-version-kind": [gvk(k.group(), version, &k.list_kind())],
            }),
        );
    }
    defs
}

/// The definitions reachable by references from `roots`.
fn reachable(defs: &Map<String, Value>, roots: Vec<String>) -> Map<String, Value> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => {
                            if let Some(name) = r.strip_prefix(V3_PREFIX) {
                                out.push(name.to_string());
                            }
                        }
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = roots;
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(s) = defs.get(&name) {
            refs(s, &mut todo);
        }
    }
    seen.into_iter()
        .filter_map(|n| Some((n.clone(), defs.get(&n)?.clone())))
        .collect()
}

/// `#/components/schemas/X` -> `#/definitions/X`, everywhere in `v`.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if let (true, Value::String(r)) = (k == "$ref", &mut *v) {
                    if let Some(name) = r.strip_prefix(V3_PREFIX) {
                        *r = format!("{V2_PREFIX}{name}");
                    }
                } else {
                    rewrite_refs(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    V2,
    V3,
}

impl Dialect {
    fn schema_ref(self, name: &str) -> Value {
        match self {
            Dialect::V2 => json!({"$ref": format!("{V2_PREFIX}{name}")}),
            Dialect::V3 => json!({"$ref": format!("{V3_PREFIX}{name}")}),
        }
    }

    fn param(self, name: &str, in_: &str, type_: &str, description: &str) -> Value {
        let mut p = json!({"name": name, "in": in_, "description": description});
        if in_ == "path" {
            p["required"] = true.into();
        }
        match self {
            Dialect::V2 => p["type"] = type_.into(),
            Dialect::V3 => p["schema"] = json!({"type": type_, "uniqueItems": true}),
        }
        p
    }

    /// `200` (and `201` for creations) answering `name`.
    fn responses(self, name: &str, created: bool) -> Value {
        let ok = match self {
            Dialect::V2 => json!({"description": "OK", "schema": self.schema_ref(name)}),
            Dialect::V3 => json!({
                "description": "OK",
                "content": {"application/json": {"schema": self.schema_ref(name)}},
            }),
        };
        let mut r = json!({"200": ok.clone(), "401": {"description": "Unauthorized"}});
        if created {
            r["201"] = ok;
        }
        r
    }
}

/// The operation name prefix of a group version: `CoreV1`, `AppsV1`, `DiscoveryV1`.
fn op_prefix(group: &str, version: &str) -> String {
    let cap = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    let g = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("{}{}", cap(g), cap(version))
}

/// One operation.
struct Op<'a> {
    action: &'a str,
    id: String,
    gvk: Value,
    params: Vec<Value>,
    body: Option<(Vec<&'a str>, String)>,
    response: String,
    created: bool,
}

fn operation(d: Dialect, op: Op<'_>) -> Value {
    let mut v = json!({
        "operationId": op.id,
        "description": format!("{} the object", op.action),
        "parameters": op.params,
        "responses": d.responses(&op.response, op.created),
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": op.gvk,
    });
    if let Some((types, schema)) = op.body {
        match d {
            Dialect::V2 => {
                let mut params = v["parameters"].as_array().cloned().unwrap_or_default();
                params.push(json!({"name": "body", "in": "body", "required": true, "schema": d.schema_ref(&schema)}));
                v["parameters"] = params.into();
                v["consumes"] = types.into();
                v["produces"] = json!(["application/json"]);
            }
            Dialect::V3 => {
                let content: Map<String, Value> = types
                    .into_iter()
                    .map(|t| (t.to_string(), json!({"schema": d.schema_ref(&schema)})))
                    .collect();
                v["requestBody"] = json!({"content": content, "required": true});
            }
        }
    }
    v
}

/// The paths of `kinds` (one group version): the collection, the object, and the
/// subresources that take JSON.
fn paths(kinds: &[Kind], version: &str, d: Dialect) -> Map<String, Value> {
    let mut out = Map::new();
    let write_params = || {
        vec![
            d.param("dryRun", "query", "string", "When present, indicates that modifications should not be persisted. Valid value: All."),
            d.param("fieldManager", "query", "string", "fieldManager is a name associated with the actor or entity that is making these changes."),
            d.param("fieldValidation", "query", "string", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values: Ignore, Warn (the default) and Strict."),
        ]
    };
    let list_params = || {
        [
            ("labelSelector", "string", "A selector to restrict the list of returned objects by their labels."),
            ("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields."),
            ("limit", "integer", "limit is a maximum number of responses to return for a list call."),
            ("continue", "string", "The continue option should be set when retrieving more results from the server."),
            ("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
            ("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
            ("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
            ("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
            ("timeoutSeconds", "integer", "Timeout for the list/watch call."),
        ]
        .into_iter()
        .map(|(n, t, desc)| d.param(n, "query", t, desc))
        .collect::<Vec<_>>()
    };
    let patch_types = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    for &k in kinds {
        let i = k.info();
        let prefix = k.group_prefix_at(version);
        let schema_name = |k: Kind| schema_name_at(k, version);
        let list_schema_name = |k: Kind| list_schema_name_at(k, version);
        let ns_word = if i.namespaced { "Namespaced" } else { "" };
        let base = if i.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", i.plural)
        } else {
            format!("{prefix}/{}", i.plural)
        };
        let opp = op_prefix(i.group, version);
        let kind_gvk = gvk(i.group, version, i.kind);
        let schema = schema_name(k);
        let ns_param = || {
            i.namespaced.then(|| {
                d.param(
                    "namespace",
                    "path",
                    "string",
                    "object name and auth scope, such as for teams and projects",
                )
            })
        };
        let name_param = || d.param("name", "path", "string", &format!("name of the {}", i.kind));

        // The collection.
        let mut coll = Map::new();
        coll.insert(
            "get".into(),
            operation(
                d,
                Op {
                    action: "list",
                    id: format!("list{opp}{ns_word}{}", i.kind),
                    gvk: kind_gvk.clone(),
                    params: list_params(),
                    body: None,
                    response: list_schema_name(k),
                    created: false,
                },
            ),
        );
        coll.insert(
            "post".into(),
            operation(
                d,
                Op {
                    action: "post",
                    id: format!("create{opp}{ns_word}{}", i.kind),
                    gvk: kind_gvk.clone(),
                    params: write_params(),
                    body: Some((vec!["application/json"], schema.clone())),
                    response: schema.clone(),
                    created: true,
                },
            ),
        );
        coll.insert(
            "parameters".into(),
            ns_param().into_iter().collect::<Vec<_>>().into(),
        );
        out.insert(base.clone(), coll.into());

        if i.namespaced {
            let mut all = Map::new();
            all.insert(
                "get".into(),
                operation(
                    d,
                    Op {
                        action: "list",
                        id: format!("list{opp}{}ForAllNamespaces", i.kind),
                        gvk: kind_gvk.clone(),
                        params: list_params(),
                        body: None,
                        response: list_schema_name(k),
                        created: false,
                    },
                ),
            );
            out.insert(format!("{prefix}/{}", i.plural), all.into());
        }

        // The object and its subresources.
        let mut subs: Vec<(&str, &str, Value, String)> =
            vec![("", "", kind_gvk.clone(), schema.clone())];
        if i.has_status {
            subs.push(("/status", "Status", kind_gvk.clone(), schema.clone()));
        }
        if i.has_scale {
            subs.push((
                "/scale",
                "Scale",
                gvk("autoscaling", "v1", "Scale"),
                SCALE.to_string(),
            ));
        }
        for (suffix, id_suffix, op_gvk, body_schema) in subs {
            let mut item = Map::new();
            let id = |verb: &str| format!("{verb}{opp}{ns_word}{}{id_suffix}", i.kind);
            item.insert(
                "get".into(),
                operation(
                    d,
                    Op {
                        action: "get",
                        id: id("read"),
                        gvk: op_gvk.clone(),
                        params: Vec::new(),
                        body: None,
                        response: body_schema.clone(),
                        created: false,
                    },
                ),
            );
            item.insert(
                "put".into(),
                operation(
                    d,
                    Op {
                        action: "put",
                        id: id("replace"),
                        gvk: op_gvk.clone(),
                        params: write_params(),
                        body: Some((vec!["application/json"], body_schema.clone())),
                        response: body_schema.clone(),
                        created: true,
                    },
                ),
            );
            let mut patch_params = write_params();
            patch_params.push(d.param(
                "force",
                "query",
                "boolean",
                "Force is going to \"force\" Apply requests.",
            ));
            item.insert(
                "patch".into(),
                operation(
                    d,
                    Op {
                        action: "patch",
                        id: id("patch"),
                        gvk: op_gvk.clone(),
                        params: patch_params,
                        body: Some((patch_types.clone(), PATCH.to_string())),
                        response: body_schema.clone(),
                        created: true,
                    },
                ),
            );
            if suffix.is_empty() {
                let mut del_params = vec![d.param(
                    "dryRun",
                    "query",
                    "string",
                    "When present, indicates that modifications should not be persisted.",
                )];
                del_params.push(d.param(
                    "gracePeriodSeconds",
                    "query",
                    "integer",
                    "The duration in seconds before the object should be deleted.",
                ));
                del_params.push(d.param(
                    "propagationPolicy",
                    "query",
                    "string",
                    "Whether and how garbage collection will be performed.",
                ));
                item.insert(
                    "delete".into(),
                    operation(
                        d,
                        Op {
                            action: "delete",
                            id: id("delete"),
                            gvk: op_gvk.clone(),
                            params: del_params,
                            body: Some((vec!["application/json"], DELETE_OPTIONS.to_string())),
                            response: STATUS.to_string(),
                            created: false,
                        },
                    ),
                );
            }
            let params: Vec<Value> = std::iter::once(name_param()).chain(ns_param()).collect();
            item.insert("parameters".into(), params.into());
            out.insert(format!("{base}/{{name}}{suffix}"), item.into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(path: &str) -> Value {
        serde_json::from_slice(v3(path).unwrap().1).unwrap()
    }

    fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
        &doc["components"]["schemas"][r.strip_prefix(V3_PREFIX).unwrap()]
    }

    #[test]
    fn index_points_at_every_group_version() {
        let index: Value = serde_json::from_slice(v3_index()).unwrap();
        let paths = index["paths"].as_object().unwrap();
        for key in [
            "api/v1",
            "apis/apps/v1",
            "apis/autoscaling/v2",
            "apis/discovery.k8s.io/v1",
            "apis/coordination.k8s.io/v1",
            "apis/batch/v1",
        ] {
            let url = paths[key]["serverRelativeURL"].as_str().unwrap();
            let (h, _) = v3(key).unwrap();
            assert_eq!(url, format!("/openapi/v3/{key}?hash={h}"));
        }
        assert!(v3("apis/policy/v1").is_none());
    }

    #[test]
    fn explain_finds_pod_spec_containers() {
        // kubectl explain pods.spec.containers: the path's GVK, the schema with that GVK,
        // then spec (through allOf/$ref) and containers.
        let d = doc("api/v1");
        let list = &d["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
        let gvk = &list["x-kubernetes-group-version-kind"];
        assert_eq!(*gvk, json!({"group": "", "kind": "Pod", "version": "v1"}));
        let pod = d["components"]["schemas"]
            .as_object()
            .unwrap()
            .values()
            .find(|s| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|a| a.contains(gvk))
            })
            .unwrap();
        let spec = &pod["properties"]["spec"];
        let spec_ref = spec["$ref"]
            .as_str()
            .or(spec["allOf"][0]["$ref"].as_str())
            .unwrap();
        let containers = &resolve(&d, spec_ref)["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        let c = resolve(&d, containers["items"]["$ref"].as_str().unwrap());
        assert!(
            c["properties"]["image"]["description"]
                .as_str()
                .unwrap()
                .contains("image")
        );
        assert!(
            d["components"]["schemas"]
                .get("io.k8s.api.apps.v1.Deployment")
                .is_none()
        );
    }

    #[test]
    fn explain_finds_deployment_strategy() {
        let d = doc("apis/apps/v1");
        let get = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["get"];
        assert_eq!(get["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        let dep = &d["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            dep["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        let spec = &dep["properties"]["spec"];
        let spec_ref = spec["$ref"]
            .as_str()
            .or(spec["allOf"][0]["$ref"].as_str())
            .unwrap();
        let strategy = &resolve(&d, spec_ref)["properties"]["strategy"];
        assert!(strategy.is_object());
        let scale =
            &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["put"];
        assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
        assert!(d["components"]["schemas"].get(SCALE).is_some());
        // Every reference resolves within the document.
        fn check(v: &Value, d: &Value) {
            match v {
                Value::Object(m) => m.iter().for_each(|(k, v)| {
                    if k == "$ref" {
                        let r = v.as_str().unwrap();
                        assert!(resolve(d, r).is_object(), "{r}");
                    } else {
                        check(v, d)
                    }
                }),
                Value::Array(a) => a.iter().for_each(|v| check(v, d)),
                _ => {}
            }
        }
        check(&d, &d);
    }

    #[test]
    fn patch_operations_take_field_validation_without_strategic_merge() {
        let d = doc("api/v1");
        let mut patches = 0;
        for (_, item) in d["paths"].as_object().unwrap() {
            if let Some(p) = item.get("patch") {
                patches += 1;
                assert!(
                    p["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|q| q["name"] == "fieldValidation" && q["in"] == "query")
                );
                let content = p["requestBody"]["content"].as_object().unwrap();
                assert!(content.contains_key("application/merge-patch+json"));
                assert!(!content.contains_key("application/strategic-merge-patch+json"));
            }
        }
        assert!(patches >= 5);
        assert!(d["paths"].get("/api/v1/nodes/{name}/status").is_some());
        assert!(
            d["paths"]
                .get("/api/v1/namespaces/{namespace}/nodes")
                .is_none()
        );
        assert!(d["paths"].get("/api/v1/pods").is_some());
    }

    #[test]
    fn hpa_v1_has_its_own_document_and_schema() {
        let index: Value = serde_json::from_slice(v3_index()).unwrap();
        assert!(index["paths"].get("apis/autoscaling/v1").is_some());
        assert!(index["paths"].get("apis/autoscaling/v2").is_some());
        let (_, doc) = v3("apis/autoscaling/v1").unwrap();
        let doc: Value = serde_json::from_slice(doc).unwrap();
        let post = &doc["paths"]["/apis/autoscaling/v1/namespaces/{namespace}/horizontalpodautoscalers"]
            ["post"];
        assert_eq!(
            post["x-kubernetes-group-version-kind"],
            json!({"group": "autoscaling", "kind": "HorizontalPodAutoscaler", "version": "v1"})
        );
        let hpa =
            &doc["components"]["schemas"]["io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler"];
        assert_eq!(
            hpa["x-kubernetes-group-version-kind"],
            json!([{"group": "autoscaling", "kind": "HorizontalPodAutoscaler", "version": "v1"}])
        );
        let spec = resolve(
            &doc,
            hpa["properties"]["spec"]["allOf"][0]["$ref"]
                .as_str()
                .or(hpa["properties"]["spec"]["$ref"].as_str())
                .unwrap(),
        );
        assert!(
            spec["properties"]
                .get("targetCPUUtilizationPercentage")
                .is_some()
        );
        let v2: Value = serde_json::from_slice(v2()).unwrap();
        assert!(
            v2["paths"]
                .get("/apis/autoscaling/v1/namespaces/{namespace}/horizontalpodautoscalers/{name}")
                .is_some()
        );
        assert!(
            v2["definitions"]
                .get("io.k8s.api.autoscaling.v1.HorizontalPodAutoscalerList")
                .is_some()
        );
    }

    #[test]
    fn v2_uses_definitions() {
        let v: Value = serde_json::from_slice(v2()).unwrap();
        assert_eq!(v["swagger"], "2.0");
        let spec = &v["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"];
        let r = spec["$ref"]
            .as_str()
            .or(spec["allOf"][0]["$ref"].as_str())
            .unwrap();
        assert_eq!(r, "#/definitions/io.k8s.api.core.v1.PodSpec");
        assert!(!String::from_utf8_lossy(v2()).contains("#/components/schemas"));
        let post = &v["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"];
        assert_eq!(
            post["parameters"].as_array().unwrap().last().unwrap()["in"],
            "body"
        );
    }
}

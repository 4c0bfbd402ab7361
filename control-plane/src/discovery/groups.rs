//! The discovery documents, generated from [`Kind::ALL`]: `/version`, `/api` (APIVersions),
//! `/apis` (APIGroupList), `/apis/GROUP` (APIGroup), `/api/v1` and `/apis/GROUP/VERSION`
//! (APIResourceList), and aggregated discovery (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList,
//! which kubectl asks for first), plus the groups served beside them: `metrics.k8s.io/v1beta1`
//! and `authentication.k8s.io/v1` (SelfSubjectReview, `kubectl auth whoami`).

use podd_api::Kind;
use serde_json::{Value, json};

/// The Kubernetes version podd's API is (the k8s-openapi feature it is built with).
pub const GIT_VERSION: &str = "v1.34.0-podd";

/// The metrics API group podd serves itself, as metrics-server does.
pub const METRICS_GROUP: &str = "metrics.k8s.io";
pub const METRICS_VERSION: &str = "v1beta1";

/// The authentication group, for SelfSubjectReview (answered in [`crate::auth`]); its
/// `tokenreviews` are not served, so not listed.
pub const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";
pub const AUTHENTICATION_VERSION: &str = "v1";

/// Verbs of every served resource. No `deletecollection`: the registry deletes one object at
/// a time (kubectl's `delete --all` lists and deletes each).
const RESOURCE_VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const SUBRESOURCE_VERBS: [&str; 3] = ["get", "patch", "update"];

/// The pod subresources the server proxies to the node agents, as kube-apiserver lists them
/// (name, kind, verbs). Only those served are listed: kubectl acts on what discovery says
/// (`kubectl drain` evicts through `pods/eviction` when it is listed, and deletes otherwise),
/// so `eviction` joins this list when the server serves it.
const POD_PROXY_SUBRESOURCES: &[(&str, &str, &[&str])] = &[
    ("attach", "PodAttachOptions", &["create", "get"]),
    ("exec", "PodExecOptions", &["create", "get"]),
    ("log", "Pod", &["get"]),
    ("portforward", "PodPortForwardOptions", &["create", "get"]),
];

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "emulationMajor": "1",
        "emulationMinor": "34",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": platform(),
    })
}

/// `os/arch` with Go's architecture names, as kube-apiserver reports its platform.
fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// One resource (or subresource) as discovery describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// `pods`, `pods/status`.
    pub name: String,
    pub singular: &'static str,
    pub namespaced: bool,
    /// The kind the resource answers with, which for some subresources is another group's.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
}

/// The API groups served besides the core group, in preference order, each with its one
/// version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in Kind::ALL {
        let i = k.info();
        if !i.group.is_empty() && !out.iter().any(|(g, _)| *g == i.group) {
            out.push((i.group, i.version));
        }
    }
    out.push((AUTHENTICATION_GROUP, AUTHENTICATION_VERSION));
    out.push((METRICS_GROUP, METRICS_VERSION));
    out
}

/// Every version served for `group`, the preferred (stored) one first: autoscaling has v2
/// and v1.
pub fn served_versions(group: &str) -> Vec<&'static str> {
    if group == METRICS_GROUP {
        return vec![METRICS_VERSION];
    }
    if group == AUTHENTICATION_GROUP {
        return vec![AUTHENTICATION_VERSION];
    }
    let mut out: Vec<&'static str> = Vec::new();
    for k in Kind::ALL.into_iter().filter(|k| k.group() == group) {
        for v in k.served_versions() {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    // The preferred version first, whatever order the kinds come in.
    if let Some(p) = group_version(group)
        && let Some(i) = out.iter().position(|v| *v == p)
    {
        out.swap(0, i);
    }
    out
}

/// The preferred version served for `group` (`""` is the core group).
pub fn group_version(group: &str) -> Option<&'static str> {
    if group.is_empty() {
        return Some("v1");
    }
    groups()
        .into_iter()
        .find(|(g, _)| *g == group)
        .map(|(_, v)| v)
}

fn gv_string(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The resources of `group`/`version`, main resources first, each followed by its
/// subresources; None when podd does not serve that group version.
pub fn resources(group: &str, version: &str) -> Option<Vec<Resource>> {
    if group == METRICS_GROUP {
        return (version == METRICS_VERSION).then(metrics_resources);
    }
    if group == AUTHENTICATION_GROUP {
        return (version == AUTHENTICATION_VERSION).then(authentication_resources);
    }
    if !served_versions(group).contains(&version) {
        return None;
    }
    let mut out = Vec::new();
    for k in Kind::ALL.into_iter().filter(|k| k.group() == group) {
        let Some(version) = k.served_versions().find(|v| *v == version) else {
            continue;
        };
        let i = k.info();
        let sub = |name: &str, group, version, kind, verbs| Resource {
            name: format!("{}/{name}", i.plural),
            singular: "",
            namespaced: i.namespaced,
            group,
            version,
            kind,
            verbs,
            short_names: &[],
            categories: &[],
        };
        out.push(Resource {
            name: i.plural.to_string(),
            singular: i.singular,
            namespaced: i.namespaced,
            group: i.group,
            version,
            kind: i.kind,
            verbs: &RESOURCE_VERBS,
            short_names: i.short_names,
            categories: i.categories,
        });
        if k == Kind::Pod {
            for &(name, kind, verbs) in POD_PROXY_SUBRESOURCES {
                out.push(sub(name, "", "v1", kind, verbs));
            }
        }
        if k == Kind::Namespace {
            // The namespace controller's last step: spec.finalizers written alone.
            out.push(sub("finalize", "", "v1", "Namespace", &["update"]));
        }
        if i.has_scale {
            out.push(sub(
                "scale",
                "autoscaling",
                "v1",
                "Scale",
                &SUBRESOURCE_VERBS,
            ));
        }
        if i.has_status {
            out.push(sub("status", i.group, version, i.kind, &SUBRESOURCE_VERBS));
        }
    }
    Some(out)
}

fn metrics_resources() -> Vec<Resource> {
    let r = |name: &str, singular, namespaced, kind| Resource {
        name: name.to_string(),
        singular,
        namespaced,
        group: METRICS_GROUP,
        version: METRICS_VERSION,
        kind,
        verbs: &["get", "list"],
        short_names: &[],
        categories: &[],
    };
    vec![
        r("nodes", "nodemetrics", false, "NodeMetrics"),
        r("pods", "podmetrics", true, "PodMetrics"),
    ]
}

/// `authentication.k8s.io/v1` as kube-apiserver lists SelfSubjectReview: cluster-scoped,
/// create only.
fn authentication_resources() -> Vec<Resource> {
    vec![Resource {
        name: "selfsubjectreviews".to_string(),
        singular: "selfsubjectreview",
        namespaced: false,
        group: AUTHENTICATION_GROUP,
        version: AUTHENTICATION_VERSION,
        kind: "SelfSubjectReview",
        verbs: &["create"],
        short_names: &[],
        categories: &[],
    }]
}

/// `/api`: the core group's versions. `server_address` is the address the client reached
/// (its `Host`).
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    })
}

/// A group with every version it serves, `version` preferred.
fn group_entry(group: &str, version: &str) -> Value {
    let gv = |v: &str| json!({"groupVersion": gv_string(group, v), "version": v});
    let versions: Vec<Value> = served_versions(group).into_iter().map(gv).collect();
    json!({"name": group, "versions": versions, "preferredVersion": gv(version)})
}

/// `/apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| group_entry(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP`.
pub fn api_group(group: &str) -> Option<Value> {
    let version = group_version(group).filter(|_| !group.is_empty())?;
    let mut v = group_entry(group, version);
    v["kind"] = "APIGroup".into();
    v["apiVersion"] = "v1".into();
    Some(v)
}

/// `/api/v1`, `/apis/GROUP/VERSION`.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = resources(group, version)?
        .into_iter()
        .map(|r| {
            let mut v = json!({
                "name": r.name,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": r.verbs,
            });
            // A subresource answering with another group's kind says which (`deployments/scale`).
            if r.group != group || r.version != version {
                v["group"] = r.group.into();
                v["version"] = r.version.into();
            }
            if !r.short_names.is_empty() {
                v["shortNames"] = r.short_names.into();
            }
            if !r.categories.is_empty() {
                v["categories"] = r.categories.into();
            }
            v
        })
        .collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv_string(group, version),
        "resources": resources,
    }))
}

/// The aggregated discovery version a request's `Accept` asks for (`v2` or `v2beta1`), if
/// it asks for one in JSON: `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`.
/// The first acceptable entry wins, as the client lists them by preference.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |k: &str| {
            params
                .iter()
                .find(|(pk, _)| pk.trim() == k)
                .map(|(_, v)| v.trim())
        };
        if media != "application/json"
            || param("g") != Some("apidiscovery.k8s.io")
            || param("as") != Some("APIGroupDiscoveryList")
        {
            continue;
        }
        match param("v") {
            Some("v2") => return Some("v2"),
            Some("v2beta1") => return Some("v2beta1"),
            _ => {}
        }
    }
    None
}

/// The Content-Type of an aggregated discovery answer in `version`.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// Aggregated discovery: for `/api` (`legacy`) the core group alone, for `/apis` every other
/// group, in `version` (`v2` or `v2beta1`, one shape).
pub fn aggregated(legacy: bool, version: &str) -> Value {
    let groups: Vec<(&str, &str)> = if legacy { vec![("", "v1")] } else { groups() };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(group, preferred)| {
            // Every served version, the preferred first (clients take the first).
            let mut served = served_versions(group);
            if served.is_empty() {
                served.push(preferred);
            }
            let versions: Vec<Value> = served
                .into_iter()
                .map(|version| {
                    let resources = resources(group, version).unwrap_or_default();
                    let mains: Vec<Value> = resources
                        .iter()
                        .filter(|r| !r.name.contains('/'))
                        .map(|r| aggregated_resource(r, &resources))
                        .collect();
                    json!({"version": version, "resources": mains, "freshness": "Current"})
                })
                .collect();
            let mut meta = json!({"creationTimestamp": null});
            if !group.is_empty() {
                meta["name"] = group.into();
            }
            json!({"metadata": meta, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

fn aggregated_resource(r: &Resource, all: &[Resource]) -> Value {
    let prefix = format!("{}/", r.name);
    let subresources: Vec<Value> = all
        .iter()
        .filter_map(|s| Some((s.name.strip_prefix(&prefix)?, s)))
        .map(|(sub, s)| {
            json!({
                "subresource": sub,
                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                "verbs": s.verbs,
            })
        })
        .collect();
    let mut v = json!({
        "resource": r.name,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = r.short_names.into();
    }
    if !r.categories.is_empty() {
        v["categories"] = r.categories.into();
    }
    if !subresources.is_empty() {
        v["subresources"] = subresources.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_aggregated_version() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(kubectl), Some("v2"));
        assert_eq!(
            aggregated_version(
                "application/json; g=apidiscovery.k8s.io; v=v2beta1; as=APIGroupDiscoveryList"
            ),
            Some("v2beta1")
        );
        assert_eq!(aggregated_version("application/json"), None);
        assert_eq!(aggregated_version("*/*"), None);
        assert_eq!(
            aggregated_version(
                "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            ),
            None
        );
    }

    #[test]
    fn core_resources_list_pods_and_their_subresources() {
        let l = api_resource_list("", "v1").unwrap();
        assert_eq!(l["groupVersion"], "v1");
        let rs = l["resources"].as_array().unwrap();
        let find = |n: &str| {
            rs.iter()
                .find(|r| r["name"] == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        let pods = find("pods");
        assert_eq!(pods["singularName"], "pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(pods["verbs"].as_array().unwrap().contains(&json!("watch")));
        assert_eq!(
            find("pods/status")["verbs"],
            json!(["get", "patch", "update"])
        );
        assert_eq!(find("pods/log")["verbs"], json!(["get"]));
        assert_eq!(find("pods/exec")["kind"], "PodExecOptions");
        assert!(rs.iter().all(|r| r["name"] != "pods/eviction"));
        assert_eq!(find("nodes")["namespaced"], false);
        assert!(rs.iter().all(|r| r["name"] != "endpoints/status"));
        assert!(api_resource_list("", "v2").is_none());
    }

    #[test]
    fn group_resources_have_scale_in_autoscaling_v1() {
        let l = api_resource_list("apps", "v1").unwrap();
        let rs = l["resources"].as_array().unwrap();
        let scale = rs
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(
            (scale["group"].as_str(), scale["kind"].as_str()),
            (Some("autoscaling"), Some("Scale"))
        );
        assert!(rs.iter().any(|r| r["name"] == "replicasets/scale"));
        assert!(api_resource_list("apps", "v1beta1").is_none());
        assert!(api_resource_list("policy", "v1").is_none());
        let batch = api_resource_list("batch", "v1").unwrap();
        assert!(
            batch["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "jobs/status")
        );
        let m = api_resource_list("metrics.k8s.io", "v1beta1").unwrap();
        assert_eq!(m["resources"][0]["kind"], "NodeMetrics");
        assert_eq!(m["resources"][1]["verbs"], json!(["get", "list"]));
    }

    #[test]
    fn group_list_has_every_group_once_with_metrics() {
        let l = api_group_list();
        let names: Vec<&str> = l["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "apps",
                "autoscaling",
                "discovery.k8s.io",
                "coordination.k8s.io",
                "batch",
                "authentication.k8s.io",
                "metrics.k8s.io"
            ]
        );
        assert_eq!(
            l["groups"][1]["preferredVersion"]["groupVersion"],
            "autoscaling/v2"
        );
        assert_eq!(api_group("apps").unwrap()["kind"], "APIGroup");
        assert!(api_group("").is_none());
    }

    #[test]
    fn authentication_lists_selfsubjectreviews_create_only() {
        let g = api_group("authentication.k8s.io").unwrap();
        assert_eq!(
            g["preferredVersion"]["groupVersion"],
            "authentication.k8s.io/v1"
        );
        assert_eq!(g["versions"].as_array().unwrap().len(), 1);
        let l = api_resource_list("authentication.k8s.io", "v1").unwrap();
        assert_eq!(
            l["resources"],
            json!([{"name": "selfsubjectreviews", "singularName": "selfsubjectreview",
                "namespaced": false, "kind": "SelfSubjectReview", "verbs": ["create"]}])
        );
        assert!(api_resource_list("authentication.k8s.io", "v1beta1").is_none());
        let apis = aggregated(false, "v2");
        let auth = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "authentication.k8s.io")
            .unwrap();
        assert_eq!(
            auth["versions"][0]["resources"],
            json!([{"resource": "selfsubjectreviews", "scope": "Cluster",
                "singularResource": "selfsubjectreview", "verbs": ["create"],
                "responseKind": {"group": "authentication.k8s.io", "version": "v1",
                    "kind": "SelfSubjectReview"}}])
        );
    }

    #[test]
    fn aggregated_lists_groups_with_subresources() {
        let core = aggregated(true, "v2");
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert!(core["items"][0]["metadata"].get("name").is_none());
        let v1 = &core["items"][0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        let pods = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["singularResource"], "pod");
        assert_eq!(
            pods["responseKind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        let subs: Vec<&str> = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        assert_eq!(subs, ["attach", "exec", "log", "portforward", "status"]);

        let apis = aggregated(false, "v2beta1");
        assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        let metrics = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "metrics.k8s.io")
            .unwrap();
        assert_eq!(
            metrics["versions"][0]["resources"][1]["scope"],
            "Namespaced"
        );
        let nodes = aggregated(true, "v2")["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "nodes")
            .cloned()
            .unwrap();
        assert_eq!(nodes["scope"], "Cluster");
    }

    #[test]
    fn autoscaling_serves_v2_preferred_and_v1() {
        assert_eq!(served_versions("autoscaling"), ["v2", "v1"]);
        let g = api_group("autoscaling").unwrap();
        assert_eq!(g["preferredVersion"]["version"], "v2");
        assert_eq!(
            g["versions"],
            json!([{"groupVersion": "autoscaling/v2", "version": "v2"},
                   {"groupVersion": "autoscaling/v1", "version": "v1"}])
        );
        let v1 = api_resource_list("autoscaling", "v1").unwrap();
        assert_eq!(v1["groupVersion"], "autoscaling/v1");
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status"
            ]
        );
        assert_eq!(v1["resources"][0]["shortNames"], json!(["hpa"]));
        // The v1 list names no other version for its own resources.
        assert!(v1["resources"][0].get("version").is_none());
        let agg = aggregated(false, "v2");
        let auto = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "autoscaling")
            .unwrap();
        let versions: Vec<&str> = auto["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["v2", "v1"]);
        assert_eq!(
            auto["versions"][1]["resources"][0]["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "HorizontalPodAutoscaler"})
        );
        // Apps keeps its one version.
        assert_eq!(served_versions("apps"), ["v1"]);
        assert!(resources("apps", "v2").is_none());
    }

    #[test]
    fn version_is_kubernetes_shaped() {
        let v = version();
        assert_eq!(
            (v["major"].as_str(), v["minor"].as_str()),
            (Some("1"), Some("34"))
        );
        assert_eq!(v["gitVersion"], GIT_VERSION);
        assert!(v["platform"].as_str().unwrap().starts_with("linux/"));
    }
}

use super::*;
use crate::{Deployment, Pod, Service};
use serde_json::json;

fn messages(e: &ValidationErrors) -> Vec<String> {
    e.0.iter().map(ToString::to_string).collect()
}

#[test]
fn every_type_error_is_listed_with_its_path() {
    let v = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": 3}},
        "spec": {
            "replicas": "string",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": "busybox", "ports": [{"containerPort": 80.5}]}]}}
        }
    });
    let e = decode::<Deployment>(v, FieldValidation::Strict).unwrap_err();
    assert_eq!(
        messages(&e),
        [
            "metadata.labels.app: Invalid value: \"integer\": metadata.labels.app in body must be of type string: \"integer\"",
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: \"number\": spec.template.spec.containers[0].ports[0].containerPort in body must be of type integer: \"number\"",
        ]
    );
    assert_eq!(e.causes()[1].field.as_deref(), Some("spec.replicas"));
    assert_eq!(
        e.causes()[1].reason.as_deref(),
        Some("FieldValueTypeInvalid")
    );
}

#[test]
fn more_type_errors() {
    let v = json!({"metadata": {"name": "s", "creationTimestamp": "yesterday"},
        "spec": {"ports": [{"port": 3000000000u64, "targetPort": true}], "selector": [], "publishNotReadyAddresses": "no"}});
    let e = decode::<Service>(v, FieldValidation::Strict).unwrap_err();
    let m = messages(&e);
    assert_eq!(m.len(), 5, "{m:#?}");
    assert!(
        m[0].starts_with("metadata.creationTimestamp: Invalid value: \"yesterday\""),
        "{m:#?}"
    );
    assert!(m.contains(&"spec.ports[0].port: Invalid value: 3000000000: spec.ports[0].port in body should be less than or equal to 2147483647".to_string()), "{m:#?}");
    assert!(m.contains(&"spec.ports[0].targetPort: Invalid value: \"boolean\": spec.ports[0].targetPort in body must be of type integer,string: \"boolean\"".to_string()), "{m:#?}");
    assert!(
        m.iter()
            .any(|e| e.starts_with("spec.selector: Invalid value: \"array\"")),
        "{m:#?}"
    );
    assert!(
        m.iter()
            .any(|e| e.starts_with("spec.publishNotReadyAddresses: Invalid value: \"string\"")),
        "{m:#?}"
    );
    let e = decode::<Pod>(json!([1]), FieldValidation::Strict).unwrap_err();
    assert!(
        messages(&e)[0].starts_with("<body>: Invalid value: \"array\""),
        "{e}"
    );
    // null is "unset" anywhere, as kubectl sends `creationTimestamp: null`.
    let (p, _) = decode::<Pod>(
        json!({"metadata": {"name": "p", "creationTimestamp": null}, "spec": {"containers": [{"name": "c", "image": null}]}}),
        FieldValidation::Strict,
    )
    .unwrap();
    assert_eq!(p.spec.unwrap().containers[0].image, None);
}

#[test]
fn numbers_become_quantities() {
    let v = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"limits": {"cpu": 2, "memory": 1073741824u64}, "requests": {"cpu": 0.5}}}]},
        "status": {}});
    let (p, warnings) = decode::<Pod>(v, FieldValidation::Strict).unwrap();
    assert!(warnings.is_empty());
    let r = p.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "2");
    assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "1073741824");
    assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "0.5");
    let e = decode::<Pod>(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": true}}}]}}),
        FieldValidation::Strict,
    )
    .unwrap_err();
    assert_eq!(
        messages(&e),
        [
            "spec.containers[0].resources.limits.cpu: Invalid value: \"boolean\": spec.containers[0].resources.limits.cpu in body must be of type string: \"boolean\""
        ]
    );
}

#[test]
fn unknown_fields_by_field_validation() {
    let v = json!({"metadata": {"name": "web"}, "spec": {"foo": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "web", "image": "busybox", "imagePullPolcy": "Always"}]}}}});
    let e = decode::<Deployment>(v.clone(), FieldValidation::Strict).unwrap_err();
    assert_eq!(
        messages(&e),
        [
            "unknown field \"spec.foo\"",
            "unknown field \"spec.template.spec.containers[0].imagePullPolcy\"",
        ]
    );
    assert_eq!(e.0[0].field, "spec.foo");
    let (d, warnings) = decode::<Deployment>(v.clone(), FieldValidation::Warn).unwrap();
    assert_eq!(
        warnings,
        [
            "unknown field \"spec.foo\"",
            "unknown field \"spec.template.spec.containers[0].imagePullPolcy\"",
        ]
    );
    assert_eq!(d.metadata.name.as_deref(), Some("web"));
    let (_, warnings) = decode::<Deployment>(v, FieldValidation::Ignore).unwrap();
    assert!(warnings.is_empty());
    // Type errors fail even under Ignore.
    let bad = json!({"metadata": {"name": 1}});
    assert!(decode::<Deployment>(bad, FieldValidation::Ignore).is_err());
}

fn realistic_container() -> serde_json::Value {
    json!({
            "name": "web",
            "image": "registry.example.com:5000/shop/web:2.1",
            "imagePullPolicy": "IfNotPresent",
            "args": ["--port=8080"],
            "workingDir": "/srv",
            "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9090}
            ],
            "env": [
                {"name": "MODE", "value": "prod"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"containerName": "web", "resource": "limits.cpu", "divisor": "1m"}}},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": false}}},
                {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}}
            ],
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi", "podd.dev/pids": "256"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 5, "failureThreshold": 2},
            "livenessProbe": {"tcpSocket": {"port": "http"}, "initialDelaySeconds": 10, "timeoutSeconds": 2},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/started"]}, "failureThreshold": 30, "periodSeconds": 2},
            "lifecycle": {
                "postStart": {"exec": {"command": ["sh", "-c", "echo started"]}},
                "preStop": {"httpGet": {"path": "/drain", "port": 8080}}
            },
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
            "volumeMounts": [{"name": "data", "mountPath": "/srv/data"}, {"name": "cfg", "mountPath": "/etc/web", "readOnly": true}],
            "terminationMessagePolicy": "FallbackToLogsOnError"
    })
}

/// A manifest as Helm or a user writes it, with the fields podd once dropped: named ports,
/// probes of every kind, env valueFrom, lifecycle hooks, set-based selectors, host network.
fn realistic_deployment() -> serde_json::Value {
    let container = realistic_container();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "shop",
            "labels": {"app.kubernetes.io/name": "web", "tier": "front"},
            "annotations": {"deployment.kubernetes.io/revision": "3", "note": "{\"a\": 1}"},
            "finalizers": ["example.com/protect"]
        },
        "spec": {
            "replicas": 3,
            "minReadySeconds": 5,
            "revisionHistoryLimit": 4,
            "progressDeadlineSeconds": 300,
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                    {"key": "legacy", "operator": "DoesNotExist"}
                ]
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "web", "tier": "front"},
                    "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {
                    "hostNetwork": false,
                    "serviceAccountName": "web",
                    "terminationGracePeriodSeconds": 45,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule", "tolerationSeconds": 60}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}},
                    "initContainers": [{"name": "migrate", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}],
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "level", "path": "level"}]}}
                    ]
                }
            }
        }
    })
}

#[test]
fn realistic_manifest_round_trips() {
    let v = realistic_deployment();
    let (d, warnings) = decode::<Deployment>(v.clone(), FieldValidation::Strict).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        v,
        "a field was dropped or changed"
    );
    crate::validation::validate(&d).unwrap();
}

#[test]
fn unknown_fields_are_bounded() {
    let mut spec = serde_json::Map::new();
    for i in 0..3000 {
        spec.insert(format!("f{i}"), json!(1));
    }
    let v = json!({"metadata": {"name": "p"}, "spec": spec});
    let (_, warnings) = decode::<Pod>(v.clone(), FieldValidation::Warn).unwrap();
    assert_eq!(warnings.len(), MAX_REPORTED_ERRORS + 1);
    assert_eq!(warnings.last().unwrap(), "2000 more unknown fields");
    let e = decode::<Pod>(v, FieldValidation::Strict).unwrap_err();
    assert_eq!(e.0.len(), MAX_REPORTED_ERRORS + 1);
}

mod round_trip {
    use super::*;
    use proptest::prelude::*;

    fn arb_pod_json() -> impl Strategy<Value = serde_json::Value> {
        (
            "[a-z][a-z0-9-]{0,10}",
            prop::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..4),
            prop::collection::vec(("[a-z][a-z0-9]{0,6}", 1i32..65536, any::<bool>()), 1..4),
            prop::option::of(0i64..600),
            prop::option::of(1u32..64),
        )
            .prop_map(|(name, labels, containers, grace, cpu)| {
                let containers: Vec<serde_json::Value> = containers
                    .into_iter()
                    .enumerate()
                    .map(|(i, (n, port, named))| {
                        let mut p = json!({"containerPort": port});
                        if named {
                            p["name"] = json!(format!("p{i}"));
                        }
                        let mut c = json!({"name": format!("{n}{i}"), "image": "busybox", "ports": [p]});
                        if let Some(cpu) = cpu {
                            c["resources"] = json!({"limits": {"cpu": format!("{cpu}")}});
                        }
                        c
                    })
                    .collect();
                let mut v = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": labels}, "spec": {"containers": containers}});
                if let Some(g) = grace {
                    v["spec"]["terminationGracePeriodSeconds"] = json!(g);
                }
                v
            })
    }

    proptest! {
        /// Whatever well-typed pod is sent comes back field for field, with no warning.
        #[test]
        fn well_typed_pods_round_trip(v in arb_pod_json()) {
            let (pod, warnings) = decode::<Pod>(v.clone(), FieldValidation::Strict).unwrap();
            prop_assert!(warnings.is_empty());
            prop_assert_eq!(serde_json::to_value(&pod).unwrap(), v);
        }
    }
}

/// Found by the api_json fuzz target: a renewTime finer than a microsecond decoded to a Lease
/// whose stored form (microseconds, as Kubernetes keeps MicroTime) read back as another Lease.
#[test]
fn times_are_cut_to_their_stored_precision() {
    let v = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "n1", "namespace": "kube-node-lease", "creationTimestamp": "2026-12-07T14:00:00.5Z"},
        "spec": {"holderIdentity": "n1", "renewTime": "2026-12-07T14:00:00.1223456Z"}});
    let (lease, _) = decode::<crate::Lease>(v, FieldValidation::Strict).unwrap();
    let stored = serde_json::to_value(&lease).unwrap();
    assert_eq!(stored["spec"]["renewTime"], "2026-12-07T14:00:00.122345Z");
    assert_eq!(
        stored["metadata"]["creationTimestamp"],
        "2026-12-07T14:00:00Z"
    );
    let (again, _) = decode::<crate::Lease>(stored, FieldValidation::Strict).unwrap();
    assert_eq!(again, lease);
}

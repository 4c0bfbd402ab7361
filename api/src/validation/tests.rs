use super::*;
use crate::{
    Deployment, EndpointSlice, Endpoints, Event, HorizontalPodAutoscaler, Lease, Node, Pod,
    ReplicaSet, Service,
};
use proptest::prelude::*;
use serde_json::json;

fn errors<T: crate::Object>(v: serde_json::Value) -> Vec<String> {
    let obj: T = serde_json::from_value(v).expect("test object decodes");
    match validate(&obj) {
        Ok(()) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[track_caller]
fn assert_has(errs: &[String], want: &str) {
    assert!(
        errs.iter().any(|e| e.starts_with(want)),
        "missing {want:?} in {errs:#?}"
    );
}

fn web_deployment() -> serde_json::Value {
    json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox",
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/"}}}]}}}
    })
}

#[test]
fn valid_objects_pass() {
    assert_eq!(errors::<Deployment>(web_deployment()), Vec::<String>::new());
    let s = json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}});
    assert_eq!(errors::<Service>(s), Vec::<String>::new());
    let n = json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/24",
        "taints": [{"key": "k", "effect": "NoSchedule"}]}});
    assert_eq!(errors::<Node>(n), Vec::<String>::new());
    let l = json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}});
    assert_eq!(errors::<Lease>(l), Vec::<String>::new());
}

#[test]
fn deployment_reports_every_problem_with_kubernetes_wording() {
    let f = errors::<Deployment>(json!({
        "metadata": {"name": "Web_1", "labels": {"-bad": "ok"}},
        "spec": {
            "replicas": -1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
            "template": {
                "metadata": {"labels": {"app": "other"}},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": ""},
                    {"name": "c", "image": "busybox", "imagePullPolicy": "Sometimes",
                     "ports": [{"containerPort": 0}, {"containerPort": 80, "name": "HTTP"}],
                     "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}
                ]}
            }
        }
    }));
    for want in [
        "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain",
        "metadata.labels: Invalid value: \"-bad\": name part must consist",
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "spec.template.metadata.labels: Invalid value: {\"app\": \"other\"}: `selector` does not match template `labels`",
        "spec.template.spec.containers[0].image: Required value",
        "spec.template.spec.containers[1].name: Duplicate value: \"c\"",
        "spec.template.spec.containers[1].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
        "spec.template.spec.containers[1].ports[0].containerPort: Required value",
        "spec.template.spec.containers[1].ports[1].name: Invalid value: \"HTTP\": must contain only alpha-numeric characters",
        "spec.template.spec.containers[1].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
    ] {
        assert_has(&f, want);
    }
    // "HTTP" breaks two rules of port names, each its own cause (as Kubernetes).
    assert_eq!(f.len(), 13, "{f:#?}");
}

#[test]
fn deployment_strategy_and_counts() {
    let mut d = web_deployment();
    d["spec"]["selector"] = json!({"matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "env", "operator": "Near", "values": ["x"]},
                             {"key": "tier", "operator": "In"},
                             {"key": "-t", "operator": "Exists", "values": ["x"]}]});
    let f = errors::<Deployment>(d);
    assert_eq!(
        f,
        [
            "spec.selector.matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator",
            "spec.selector.matchExpressions[1].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            "spec.selector.matchExpressions[2].key: Invalid value: \"-t\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            "spec.selector.matchExpressions[2].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ]
    );
    let mut d = web_deployment();
    d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
    d["spec"]["revisionHistoryLimit"] = json!(-2);
    d["spec"]["progressDeadlineSeconds"] = json!(5);
    d["spec"]["minReadySeconds"] = json!(10);
    let f = errors::<Deployment>(d);
    assert_has(
        &f,
        "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
    );
    assert_has(
        &f,
        "spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0",
    );
    assert_has(
        &f,
        "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds",
    );
    let mut d = web_deployment();
    d["spec"]["strategy"] = json!({"type": "BlueGreen"});
    assert_has(
        &errors::<Deployment>(d),
        "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\"",
    );
    let mut d = web_deployment();
    d["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": "x%", "maxUnavailable": "150%"}});
    let f = errors::<Deployment>(d);
    assert_has(
        &f,
        "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"x%\": a valid percent string",
    );
    assert_has(
        &f,
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
    );
    let mut d = web_deployment();
    d["spec"]["selector"] = json!({});
    assert_has(&errors::<Deployment>(d), "spec.selector: Invalid value: ");
    // A set-based selector that selects the template passes.
    let mut d = web_deployment();
    d["spec"]["selector"] =
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]});
    assert_eq!(errors::<Deployment>(d), Vec::<String>::new());
}

#[test]
fn pod_containers_ports_env_probes_volumes() {
    let f = errors::<Pod>(json!({
        "metadata": {"generateName": "web-"},
        "spec": {
            "restartPolicy": "Sometimes", "dnsPolicy": "Cluster", "volumes": [{"name": "v"}, {"name": "d", "emptyDir": {}, "hostPath": {"path": "/x"}}],
            "containers": [{
                "name": "c", "image": "busybox",
                "ports": [{"containerPort": 70000, "name": "http", "protocol": "ICMP"},
                          {"containerPort": 81, "name": "http"}],
                "env": [{"name": ""}, {"name": "A=B"},
                        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}, "secretKeyRef": {"name": "s", "key": "k"}}},
                        {"name": "Y", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "Z", "valueFrom": {}}],
                "volumeMounts": [{"name": "nope", "mountPath": "/data"}],
                "readinessProbe": {"httpGet": {"port": "metrics"}, "tcpSocket": {"port": 1}},
                "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": -1, "successThreshold": 2},
                "startupProbe": {},
                "securityContext": {"privileged": true, "allowPrivilegeEscalation": false}
            }]
        }
    }));
    for want in [
        "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\"",
        "spec.dnsPolicy: Unsupported value: \"Cluster\"",
        "spec.volumes[0]: Required value: must specify a volume type",
        "spec.volumes[1]: Forbidden: may not specify more than 1 volume type",
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
        "spec.containers[0].env[0].name: Required value",
        "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name",
        "spec.containers[0].env[2].valueFrom: Invalid value: \"\": may not have more than one field specified at a time",
        "spec.containers[0].env[3].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
        "spec.containers[0].env[4].valueFrom: Required value: must specify one of",
        "spec.containers[0].volumeMounts[0].name: Not found: \"nope\"",
        "spec.containers[0].readinessProbe: Forbidden: may not specify more than 1 handler type",
        "spec.containers[0].readinessProbe.httpGet.port: Not found: \"metrics\"",
        "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
        "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        "spec.containers[0].startupProbe: Required value: must specify a handler type",
        "spec.containers[0].securityContext: Invalid value: \"allowPrivilegeEscalation\": cannot set allowPrivilegeEscalation to false and privileged to true",
    ] {
        assert_has(&f, want);
    }
    assert_eq!(f.len(), 19, "{f:#?}");
    // A pod without containers, a bad generateName, a name-less one.
    let f =
        errors::<Pod>(json!({"metadata": {"generateName": "Web-"}, "spec": {"containers": []}}));
    assert_has(&f, "metadata.generateName: Invalid value: \"Web-\"");
    assert_has(&f, "spec.containers: Required value");
    let f = errors::<Pod>(
        json!({"metadata": {}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    );
    assert_eq!(
        f,
        ["metadata.name: Required value: name or generateName is required"]
    );
}

#[test]
fn pod_scheduling_fields() {
    let f = errors::<Pod>(json!({
        "metadata": {"name": "p"},
        "spec": {
            "nodeName": "Node_1",
            "nodeSelector": {"disk type": "ssd"},
            "terminationGracePeriodSeconds": -5,
            "tolerations": [{"operator": "Equal", "value": "x"}, {"key": "k", "operator": "Exists", "value": "v"},
                            {"key": "k", "operator": "Maybe"}, {"key": "k", "effect": "Sometimes"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In"}, {"key": "zone", "operator": "Near", "values": ["a"]}]}]}}},
            "initContainers": [{"name": "i", "image": "x", "readinessProbe": {"exec": {"command": ["true"]}}}],
            "containers": [{"name": "c", "image": "x", "restartPolicy": "Always",
                "resources": {"limits": {"memory": "lots"}, "requests": {"cpu": "-1"}}}]
        }
    }));
    for want in [
        "spec.nodeName: Invalid value: \"Node_1\"",
        "spec.nodeSelector: Invalid value: \"disk type\"",
        "spec.terminationGracePeriodSeconds: Invalid value: -5",
        "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty",
        "spec.tolerations[1].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
        "spec.tolerations[2].operator: Unsupported value: \"Maybe\"",
        "spec.tolerations[3].effect: Unsupported value: \"Sometimes\"",
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Required value",
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[1].operator: Unsupported value: \"Near\"",
        "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
        "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
        "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression",
        "spec.containers[0].resources.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
    ] {
        assert_has(&f, want);
    }
    assert_eq!(f.len(), 13, "{f:#?}");
}

#[test]
fn metadata_limits() {
    let f = errors::<Pod>(json!({
        "metadata": {"name": "p", "namespace": "Bad_NS",
            "labels": {"ok": "x".repeat(63), "long": "x".repeat(64), "Bad Key!": "v",
                format!("{}/n", "a".repeat(254)): "v", "n".repeat(64): "v"},
            "annotations": {"big": "x".repeat(300 * 1024)},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "x"}]}
    }));
    for want in [
        "metadata.namespace: Invalid value: \"Bad_NS\"",
        "metadata.labels: Invalid value: \"xxxx",
        "metadata.labels: Invalid value: \"Bad Key!\"",
        "metadata.labels: Invalid value: \"aaaa",
        "metadata.labels: Invalid value: \"nnnn",
        "metadata.annotations: Too long: must have at most 262144 bytes",
        "metadata.ownerReferences[1].uid: Invalid value: \"\": uid must not be empty",
        "metadata.ownerReferences: Invalid value: [\"ReplicaSet/a\", \"ReplicaSet/b\"]: Only one reference can have Controller set to true",
    ] {
        assert_has(&f, want);
    }
    assert_eq!(f.len(), 8, "{f:#?}");
    // A cluster-scoped kind refuses a namespace.
    let f = errors::<Node>(json!({"metadata": {"name": "n", "namespace": "default"}}));
    assert_eq!(
        f,
        ["metadata.namespace: Forbidden: not allowed on this type"]
    );
}

#[test]
fn too_many_containers_and_errors() {
    let many: Vec<_> = (0..101)
        .map(|i| json!({"name": format!("c{i}"), "image": "x"}))
        .collect();
    let v = json!({"metadata": {"name": "p"}, "spec": {"containers": many}});
    let e = check_limits_before_decode(Kind::Pod, &v).unwrap_err();
    assert!(
        e.to_string().starts_with("spec.containers: Too many"),
        "{e}"
    );
    let d = json!({"spec": {"template": {"spec": {"containers": [], "initContainers": (0..101).map(|_| json!({})).collect::<Vec<_>>()}}}});
    assert!(check_limits_before_decode(Kind::Deployment, &d).is_err());
    let mut e = ValidationErrors::default();
    for i in 0..5000 {
        e.push(FieldError::required(format!("f{i}"), ""));
    }
    assert_eq!(e.0.len(), MAX_REPORTED_ERRORS + 1);
}

#[test]
fn service_rules() {
    let f = errors::<Service>(json!({"metadata": {"name": "1svc"},
        "spec": {"type": "Internal", "ports": [
            {"port": 80, "targetPort": "Web_Port"}, {"port": 80, "name": "b", "protocol": "SCTPX"},
            {"port": 0, "name": "c", "targetPort": 70000, "nodePort": 30000}],
            "clusterIP": "x", "sessionAffinity": "Sticky", "ipFamilyPolicy": "Single",
            "internalTrafficPolicy": "Node", "selector": {"app": "-web"}}}));
    for want in [
        "metadata.name: Invalid value: \"1svc\": a DNS-1035 label",
        "spec.type: Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
        "spec.ports[0].name: Required value",
        "spec.ports[0].targetPort: Invalid value: \"Web_Port\"",
        "spec.ports[1].protocol: Unsupported value: \"SCTPX\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        "spec.ports[2].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        "spec.ports[2].targetPort: Invalid value: 70000",
        "spec.clusterIP: Invalid value: \"x\": must be a valid IP address",
        "spec.sessionAffinity: Unsupported value: \"Sticky\"",
        "spec.ipFamilyPolicy: Unsupported value: \"Single\"",
        "spec.internalTrafficPolicy: Unsupported value: \"Node\"",
        "spec.selector: Invalid value: \"-web\"",
    ] {
        assert_has(&f, want);
    }
    // The two ports 80 differ by protocol (TCP vs SCTPX), so no duplicate; the bad targetPort
    // name gives three reasons.
    let dup = errors::<Service>(json!({"metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "a"}]}}));
    assert_eq!(
        dup,
        [
            "spec.ports[1].name: Duplicate value: \"a\"",
            "spec.ports[1]: Duplicate value: \"80/TCP\""
        ]
    );
    assert_eq!(
        errors::<Service>(json!({"metadata": {"name": "s"}, "spec": {}})),
        ["spec.ports: Required value"]
    );
    let headless = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "None"}});
    assert_eq!(errors::<Service>(headless), Vec::<String>::new());
}

#[test]
fn hpa_rules() {
    let f = errors::<HorizontalPodAutoscaler>(json!({"metadata": {"name": "h"},
        "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": ""}, "minReplicas": 0, "maxReplicas": 0,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Value"}}},
                {"type": "Resource"},
                {"type": "Memory"},
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}},
                 "pods": {"metric": {"name": "x"}, "target": {"type": "AverageValue"}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 4000, "selectPolicy": "Any",
                "policies": [{"type": "Percent", "value": 0, "periodSeconds": 0}]}}}}));
    for want in [
        "spec.scaleTargetRef.kind: Unsupported value: \"StatefulSet\"",
        "spec.scaleTargetRef.name: Required value",
        "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
        "spec.maxReplicas: Invalid value: 0: must be greater than 0",
        "spec.metrics[0].resource.target.type: Unsupported value: \"Value\": supported values: \"AverageValue\", \"Utilization\"",
        "spec.metrics[0].resource.target.averageUtilization: Required value: must set either a target raw value or a target utilization",
        "spec.metrics[1].resource: Required value: must populate information for the given metric source",
        "spec.metrics[2].type: Unsupported value: \"Memory\"",
        "spec.metrics[3].resource: Forbidden: must populate the given metric source only",
        "spec.metrics[3].resource.target.averageUtilization: Invalid value: 0: must be greater than 0",
        "spec.behavior.scaleDown.stabilizationWindowSeconds: Invalid value: 4000",
        "spec.behavior.scaleDown.selectPolicy: Unsupported value: \"Any\"",
        "spec.behavior.scaleDown.policies[0].value: Invalid value: 0",
        "spec.behavior.scaleDown.policies[0].periodSeconds: Invalid value: 0",
    ] {
        assert_has(&f, want);
    }
    assert_eq!(f.len(), 14, "{f:#?}");
    let f = errors::<HorizontalPodAutoscaler>(json!({"metadata": {"name": "h"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 3, "maxReplicas": 2}}));
    assert_eq!(
        f,
        ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]
    );
    let ok = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
        "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 50}}}]}});
    assert_eq!(errors::<HorizontalPodAutoscaler>(ok), Vec::<String>::new());
}

#[test]
fn replica_set_endpoints_slices_nodes_events_leases() {
    let f = errors::<ReplicaSet>(json!({"metadata": {"name": "rs"},
        "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "a"}}}}));
    assert_eq!(
        f,
        [
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template: Required value"
        ]
    );
    let f = errors::<Endpoints>(json!({"metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.244.0.300"}], "ports": [{"port": 0, "protocol": "tcp"}]}]}));
    assert_eq!(f.len(), 3, "{f:#?}");
    assert_has(
        &f,
        "subsets[0].addresses[0].ip: Invalid value: \"10.244.0.300\"",
    );
    let f = errors::<EndpointSlice>(
        json!({"metadata": {"name": "web-abcde"}, "addressType": "IPv5",
        "endpoints": [{"addresses": []}], "ports": [{"port": 70000}]}),
    );
    assert_has(&f, "addressType: Unsupported value: \"IPv5\"");
    assert_has(&f, "endpoints[0].addresses: Required value");
    assert_has(&f, "ports[0].port: Invalid value: 70000");
    let f = errors::<EndpointSlice>(json!({"metadata": {"name": "s"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["fe80::1"]}]}));
    assert_eq!(
        f,
        ["endpoints[0].addresses[0]: Invalid value: \"fe80::1\": must be a valid IPv4 address"]
    );
    let f = errors::<Node>(
        json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.1.0/33",
        "taints": [{"key": "", "effect": "Never"}]}}),
    );
    assert_eq!(f.len(), 3, "{f:#?}");
    let f = errors::<Event>(json!({"metadata": {"name": "e", "namespace": "a"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "b"}, "type": "Info"}));
    assert_eq!(f.len(), 2, "{f:#?}");
    let f =
        errors::<Lease>(json!({"metadata": {"name": "n"}, "spec": {"leaseDurationSeconds": 0}}));
    assert_eq!(
        f,
        ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
    );
}

#[test]
fn validate_value_decodes_and_validates() {
    assert!(validate_value(Kind::Deployment, &web_deployment()).is_ok());
    let e = validate_value(
        Kind::Pod,
        &json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "spec.containers: Required value");
    let e = validate_value(Kind::Pod, &json!({"metadata": {"name": "p"}, "spec": 3})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "spec: Invalid value: \"integer\": spec in body must be of type object: \"integer\""
    );
}

fn arb_valid_pod() -> impl Strategy<Value = Pod> {
    let name = "[a-z][a-z0-9-]{0,20}[a-z0-9]";
    let containers = prop::collection::btree_set("[a-z][a-z0-9]{0,8}", 1..4);
    (name, containers, prop::collection::vec(1i32..65536, 0..3), any::<bool>(), 0u32..4000)
        .prop_map(|(name, cnames, ports, probe, cpu)| {
            let containers: Vec<serde_json::Value> = cnames
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let ports: Vec<serde_json::Value> = ports
                        .iter()
                        .enumerate()
                        .map(|(j, p)| json!({"containerPort": p, "name": format!("p{i}x{j}"), "protocol": "TCP"}))
                        .collect();
                    let mut c = json!({"name": c, "image": format!("busybox:{i}"), "ports": ports,
                        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "resources": {"requests": {"cpu": format!("{cpu}m")}, "limits": {"cpu": format!("{}m", cpu + 1)}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]});
                    if probe && !ports.is_empty() {
                        c["readinessProbe"] = json!({"httpGet": {"port": format!("p{i}x0")}, "periodSeconds": 1});
                    }
                    c
                })
                .collect();
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "x"}},
                "spec": {"containers": containers, "volumes": [{"name": "data", "emptyDir": {}}],
                    "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}
            }))
            .expect("generated pod decodes")
        })
}

proptest! {
    /// Any pod built within the rules passes, also after defaulting.
    #[test]
    fn random_valid_pods_pass(mut pod in arb_valid_pod()) {
        prop_assert_eq!(validate(&pod), Ok(()));
        crate::defaults::apply(&mut pod);
        prop_assert_eq!(validate(&pod), Ok(()));
    }
}

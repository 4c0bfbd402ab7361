use super::*;
use serde_json::json;

fn now() -> Timestamp {
    "2026-01-10T12:00:00Z".parse().unwrap()
}

fn table(kind: Kind, item: Value) -> Value {
    to_table_at(kind, &[item], "", now())
}

fn header(t: &Value) -> Vec<(String, u64)> {
    t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["priority"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn cells(t: &Value) -> Vec<Value> {
    t["rows"][0]["cells"].as_array().unwrap().clone()
}

fn running_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2026-01-10T11:55:00Z",
                     "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "busybox"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "image": "nginx", "imageID": "x", "ready": true, "restartCount": 0,
                 "state": {"running": {"startedAt": "2026-01-10T11:55:05Z"}}},
                {"name": "side", "image": "busybox", "imageID": "y", "ready": true, "restartCount": 2,
                 "state": {"running": {"startedAt": "2026-01-10T11:59:00Z"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-10T11:59:55Z"}}}
            ]
        }
    })
}

#[test]
fn human_durations_match_kubectl() {
    assert_eq!(human_duration(-5), "<invalid>");
    assert_eq!(human_duration(-1), "0s");
    assert_eq!(human_duration(5), "5s");
    assert_eq!(human_duration(119), "119s");
    assert_eq!(human_duration(120), "2m");
    assert_eq!(human_duration(5 * 60 + 7), "5m7s");
    assert_eq!(human_duration(45 * 60), "45m");
    assert_eq!(human_duration(5 * 3600 + 20 * 60), "5h20m");
    assert_eq!(human_duration(20 * 3600), "20h");
    assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
    assert_eq!(human_duration(30 * 86400), "30d");
    assert_eq!(human_duration(3 * 365 * 86400 + 10 * 86400), "3y10d");
    assert_eq!(human_duration(9 * 365 * 86400), "9y");
}

#[test]
fn pod_columns_and_running_row() {
    let t = table(Kind::Pod, running_pod());
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        header(&t),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1)
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    assert_eq!(t["columnDefinitions"][0]["format"], "name");
    assert_eq!(
        cells(&t),
        [
            json!("web-1"),
            json!("2/2"),
            json!("Running"),
            json!("2 (5s ago)"),
            json!("5m"),
            json!("10.0.0.5"),
            json!("n1"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    // Metadata by default: a PartialObjectMetadata with the namespace and labels.
    let obj = &t["rows"][0]["object"];
    assert_eq!(obj["kind"], "PartialObjectMetadata");
    assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(obj["metadata"]["namespace"], "default");
    assert_eq!(obj["metadata"]["labels"]["app"], "web");
    assert!(obj.get("spec").is_none());
}

#[test]
fn include_object_none_and_object() {
    let t = to_table_at(Kind::Pod, &[running_pod()], "None", now());
    assert!(t["rows"][0].get("object").is_none());
    let t = to_table_at(Kind::Pod, &[running_pod()], "Object", now());
    assert_eq!(t["rows"][0]["object"], running_pod());
    assert_eq!(IncludeObject::parse("Bogus"), None);
}

#[test]
fn pod_status_reasons() {
    let mut crash = running_pod();
    crash["status"]["containerStatuses"][1]["ready"] = json!(false);
    crash["status"]["containerStatuses"][1]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}});
    let c = cells(&table(Kind::Pod, crash));
    assert_eq!(
        (c[1].as_str(), c[2].as_str()),
        (Some("1/2"), Some("CrashLoopBackOff"))
    );

    let mut pulling = running_pod();
    pulling["status"]["phase"] = json!("Pending");
    pulling["status"]["containerStatuses"][0]["state"] =
        json!({"waiting": {"reason": "ErrImagePull"}});
    pulling["status"]["containerStatuses"][0]["ready"] = json!(false);
    assert_eq!(cells(&table(Kind::Pod, pulling))[2], "ErrImagePull");

    let mut done = running_pod();
    done["status"]["phase"] = json!("Succeeded");
    for i in 0..2 {
        done["status"]["containerStatuses"][i]["ready"] = json!(false);
        done["status"]["containerStatuses"][i]["state"] =
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    }
    let t = table(Kind::Pod, done);
    assert_eq!(cells(&t)[2], "Completed");
    assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");

    let mut oom = running_pod();
    oom["status"]["containerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}});
    oom["status"]["containerStatuses"][0]["ready"] = json!(false);
    assert_eq!(cells(&table(Kind::Pod, oom))[2], "OOMKilled");

    let mut code = running_pod();
    code["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 3}});
    assert_eq!(cells(&table(Kind::Pod, code))[2], "ExitCode:3");

    // One container done, another still running: Running, not Completed.
    let mut half = running_pod();
    half["status"]["containerStatuses"][1]["state"] =
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    half["status"]["containerStatuses"][1]["ready"] = json!(false);
    assert_eq!(cells(&table(Kind::Pod, half))[2], "Running");

    let mut deleting = running_pod();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-10T11:59:59Z");
    assert_eq!(cells(&table(Kind::Pod, deleting.clone()))[2], "Terminating");
    deleting["status"]["reason"] = json!("NodeLost");
    assert_eq!(cells(&table(Kind::Pod, deleting))[2], "Unknown");

    let pending = json!({
        "metadata": {"name": "p", "creationTimestamp": "2026-01-10T11:59:58Z"},
        "spec": {"containers": [{"name": "a", "image": "x"}]},
        "status": {"phase": "Pending"}
    });
    let c = cells(&table(Kind::Pod, pending));
    assert_eq!(
        c[1..5],
        [json!("0/1"), json!("Pending"), json!("0"), json!("2s")]
    );
    assert_eq!(c[5..7], [json!("<none>"), json!("<none>")]);
}

#[test]
fn pod_init_containers() {
    let pod = json!({
        "metadata": {"name": "p", "creationTimestamp": "2026-01-10T11:00:00Z"},
        "spec": {"initContainers": [{"name": "i1", "image": "x"}, {"name": "i2", "image": "x"}],
                 "containers": [{"name": "a", "image": "x"}]},
        "status": {"phase": "Pending",
            "initContainerStatuses": [
                {"name": "i1", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "i2", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
                 "state": {"running": {}}}],
            "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "PodInitializing"}}}]}
    });
    let c = cells(&table(Kind::Pod, pod.clone()));
    assert_eq!(
        (c[2].as_str(), c[3].as_str()),
        (Some("Init:1/2"), Some("1"))
    );
    let mut failed = pod;
    failed["status"]["initContainerStatuses"][1]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff"}});
    assert_eq!(cells(&table(Kind::Pod, failed))[2], "Init:CrashLoopBackOff");
}

#[test]
fn deployment_and_replica_set_rows() {
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2026-01-07T08:00:00Z"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "tier": "fe"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}}},
        "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}
    });
    let t = table(Kind::Deployment, d);
    assert_eq!(
        header(&t)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(header(&t)[5].1, 1);
    assert_eq!(
        cells(&t),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("3d4h"),
            json!("app,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web,tier=fe")
        ]
    );

    let rs = json!({
        "metadata": {"name": "web-5d9f", "creationTimestamp": "2026-01-10T10:00:00Z"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                 "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]},
                 "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
        "status": {"replicas": 3, "readyReplicas": 1}
    });
    let t = table(Kind::ReplicaSet, rs);
    assert_eq!(t["columnDefinitions"][1]["type"], "integer");
    assert_eq!(
        cells(&t),
        [
            json!("web-5d9f"),
            json!(3),
            json!(3),
            json!(1),
            json!("120m"),
            json!("app"),
            json!("nginx"),
            json!("app=web,env in (dev,prod)")
        ]
    );
}

#[test]
fn service_rows() {
    let svc = json!({
        "metadata": {"name": "web", "creationTimestamp": "2026-01-10T11:59:00Z"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "selector": {"app": "web"},
                 "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}, {"port": 53, "protocol": "UDP"}]}
    });
    let t = table(Kind::Service, svc);
    assert_eq!(
        header(&t),
        [
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1)
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    assert_eq!(
        cells(&t),
        [
            json!("web"),
            json!("ClusterIP"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80/TCP,53/UDP"),
            json!("60s"),
            json!("app=web")
        ]
    );
    let np = json!({
        "metadata": {"name": "np"},
        "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.11"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}
    });
    let c = cells(&table(Kind::Service, np));
    assert_eq!(c[4], "80:30080/TCP");
    assert_eq!(c[5], "<unknown>");
    assert_eq!(c[6], "<none>");
    let headless = json!({"metadata": {"name": "h"}, "spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}});
    assert_eq!(
        cells(&table(Kind::Service, headless))[2..5],
        [json!("None"), json!("<none>"), json!("<none>")]
    );
    let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"]}});
    assert_eq!(cells(&table(Kind::Service, lb))[3], "<pending>");
}

#[test]
fn endpoints_and_slices() {
    let ep = json!({
        "metadata": {"name": "web", "creationTimestamp": "2026-01-10T11:00:00Z"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}],
                     "ports": [{"port": 8080, "protocol": "TCP"}]}]
    });
    let t = table(Kind::Endpoints, ep);
    assert_eq!(header(&t).len(), 3);
    assert_eq!(
        cells(&t)[1],
        "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 1 more..."
    );
    let empty = json!({"metadata": {"name": "none"}});
    assert_eq!(cells(&table(Kind::Endpoints, empty))[1], "<none>");

    let slice = json!({
        "metadata": {"name": "web-abcde", "creationTimestamp": "2026-01-10T11:58:00Z"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                      {"addresses": ["10.0.0.2"]}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    });
    let t = table(Kind::EndpointSlice, slice);
    assert_eq!(
        header(&t)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    );
    assert_eq!(
        cells(&t),
        [
            json!("web-abcde"),
            json!("IPv4"),
            json!("8080"),
            json!("10.0.0.1,10.0.0.2"),
            json!("2m")
        ]
    );
    let bare = json!({"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": []});
    assert_eq!(
        cells(&table(Kind::EndpointSlice, bare))[2..4],
        [json!("<unset>"), json!("<unset>")]
    );
}

#[test]
fn node_rows() {
    let n = json!({
        "metadata": {"name": "n1", "creationTimestamp": "2025-12-31T12:00:00Z",
                     "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker"}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "n1"}],
            "nodeInfo": {"kubeletVersion": "v1.34.0-podd", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0", "containerRuntimeVersion": "podd://0.1.0",
                         "architecture": "amd64", "operatingSystem": "linux", "machineID": "", "systemUUID": "",
                         "bootID": "", "kubeProxyVersion": ""}
        }
    });
    let t = table(Kind::Node, n);
    assert_eq!(
        header(&t),
        [
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1)
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    assert_eq!(
        cells(&t),
        [
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,worker"),
            json!("10d"),
            json!("v1.34.0-podd"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0"),
            json!("podd://0.1.0")
        ]
    );
    let down = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    assert_eq!(
        cells(&table(Kind::Node, down))[1..3],
        [json!("NotReady"), json!("<none>")]
    );
    let fresh = json!({"metadata": {"name": "n3"}});
    assert_eq!(cells(&table(Kind::Node, fresh))[1], "Unknown");
}

#[test]
fn event_rows() {
    let e = json!({
        "metadata": {"name": "web-1.17a", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "fieldPath": "spec.containers{app}"},
        "reason": "Pulled", "message": "Successfully pulled image \"nginx\"\n", "type": "Normal",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": "2026-01-10T11:50:00Z", "lastTimestamp": "2026-01-10T11:58:00Z", "count": 4
    });
    let t = table(Kind::Event, e);
    assert_eq!(
        header(&t),
        [
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1)
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    assert_eq!(
        cells(&t),
        [
            json!("2m"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web-1"),
            json!("spec.containers{app}"),
            json!("kubelet, n1"),
            json!("Successfully pulled image \"nginx\""),
            json!("10m"),
            json!(4),
            json!("web-1.17a")
        ]
    );
    let new_style = json!({
        "metadata": {"name": "e2"}, "involvedObject": {"kind": "Node", "name": "n1"},
        "eventTime": "2026-01-10T11:59:30.000000Z", "reportingComponent": "podd-scheduler", "type": "Warning",
        "reason": "X", "message": "m"
    });
    let c = cells(&table(Kind::Event, new_style));
    assert_eq!(
        (c[0].as_str(), c[5].as_str(), c[8].as_i64()),
        (Some("30s"), Some("podd-scheduler"), Some(1))
    );
}

#[test]
fn hpa_rows() {
    let h = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "creationTimestamp": "2026-01-10T11:00:00Z"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 10,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
        "status": {"currentReplicas": 2, "desiredReplicas": 2,
                   "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 35, "averageValue": "35m"}}}]}
    });
    let t = table(Kind::HorizontalPodAutoscaler, h.clone());
    assert_eq!(
        header(&t)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        [
            "Name",
            "Reference",
            "Targets",
            "MinPods",
            "MaxPods",
            "Replicas",
            "Age"
        ]
    );
    assert_eq!(
        cells(&t),
        [
            json!("web"),
            json!("Deployment/web"),
            json!("cpu: 35%/50%"),
            json!("1"),
            json!(10),
            json!(2),
            json!("60m")
        ]
    );
    let mut unknown = h;
    unknown["status"] = json!({"desiredReplicas": 0});
    unknown["spec"]
        .as_object_mut()
        .unwrap()
        .remove("minReplicas");
    let c = cells(&table(Kind::HorizontalPodAutoscaler, unknown));
    assert_eq!(
        c[2..6],
        [
            json!("cpu: <unknown>/50%"),
            json!("<unset>"),
            json!(10),
            json!(0)
        ]
    );
}

#[test]
fn lease_rows_and_undecodable_objects() {
    let l = json!({
        "metadata": {"name": "n1", "namespace": "kube-node-lease", "creationTimestamp": "2026-01-10T11:00:00Z"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": "2026-01-10T11:59:59.000000Z"}
    });
    let t = table(Kind::Lease, l);
    assert_eq!(cells(&t), [json!("n1"), json!("n1"), json!("60m")]);
    // A pod whose spec is not a pod's still gets a full-width row with its name.
    let bad = json!({"metadata": {"name": "odd"}, "spec": {"containers": "nope"}});
    let c = cells(&table(Kind::Pod, bad));
    assert_eq!(c.len(), 9);
    assert_eq!(c[0], "odd");
}

/// A list's rows, decoded straight from stored JSON (split over threads when big), are the
/// rows the generic path makes from the same objects, in the same order, for every
/// includeObject, undecodable objects included.
#[test]
fn rows_from_stored_json_match_the_generic_path() {
    let bad = json!({"metadata": {"name": "odd"}, "spec": {"containers": "nope"}});
    let mut items: Vec<Value> = (0..1500)
        .map(|i| {
            let mut p = running_pod();
            p["metadata"]["name"] = json!(format!("web-{i}"));
            p["metadata"]["resourceVersion"] = json!(i.to_string());
            p
        })
        .collect();
    items.insert(700, bad);
    let json: Vec<Vec<u8>> = items
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect();
    let slices: Vec<&[u8]> = json.iter().map(|j| &j[..]).collect();
    let meta = json!({"resourceVersion": "42", "continue": "c"});
    let fast = |items: &[&[u8]], include: &str| -> Value {
        serde_json::from_slice(&table_of_json_at(Kind::Pod, items, include, &meta, now())).unwrap()
    };
    for include in ["", "None", "Metadata", "Object"] {
        let mut generic = to_table_at(Kind::Pod, &items, include, now());
        generic["metadata"] = meta.clone();
        assert_eq!(fast(&slices, include), generic, "includeObject={include:?}");
    }
    let small = fast(&slices[..3], "");
    assert_eq!(small["rows"].as_array().unwrap().len(), 3);
    assert_eq!(small["rows"][2]["cells"][0], "web-2");
    assert_eq!(fast(&[], "")["rows"], json!([]));
}

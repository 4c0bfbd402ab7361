//! Property: any valid object the API server accepts comes back equal to what was sent, apart
//! from Kubernetes' defaults (podd_api::defaults, which the registry applies as
//! kube-apiserver does) and what the server sets (uid, resourceVersion, creationTimestamp,
//! generation, managedFields, status, a Service's cluster IPs). Proptest generates Pods,
//! Deployments, Services and Leases (podd serves no ConfigMap; a Lease is its map-like kind)
//! with many optional fields: env valueFrom, named ports, probes, affinity, tolerations,
//! lifecycle hooks, securityContext, labels and annotations. Each case is created through the
//! API (JSON over the Unix socket), read back with get and from a list, and compared.

mod common;

use podd_api::{Deployment, Lease, Object, Pod, Service};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

const NS: &str = "props";
const CASES: u32 = 64;

// ---- generators (JSON that Kubernetes' validation accepts) ----

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,6}"
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = (
        proptest::option::of(prop_oneof![Just("example.com"), Just("app.kubernetes.io")]),
        dns_label(),
    )
        .prop_map(|(p, k)| p.map_or(k.clone(), |p| format!("{p}/{k}")));
    proptest::collection::btree_map(key, "([a-z0-9]([a-z0-9.-]{0,8}[a-z0-9])?)?", 0..4)
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(dns_label(), "[ -~]{0,24}", 0..4)
}

fn env_var(name: String) -> impl Strategy<Value = Value> {
    prop_oneof![
        "[ -~]{0,12}".prop_map(|v| json!({"value": v})),
        prop_oneof![
            Just("metadata.name"),
            Just("metadata.namespace"),
            Just("status.podIP"),
            Just("spec.nodeName"),
        ]
        .prop_map(|p| json!({"valueFrom": {"fieldRef": {"fieldPath": p}}})),
        prop_oneof![Just("limits.cpu"), Just("requests.memory")].prop_map(
            |r| json!({"valueFrom": {"resourceFieldRef": {"resource": r, "divisor": "1"}}})
        ),
        (
            dns_label(),
            dns_label(),
            proptest::option::of(any::<bool>()),
            any::<bool>()
        )
            .prop_map(|(n, k, optional, secret)| {
                let mut r = json!({"name": n, "key": k});
                if let Some(o) = optional {
                    r["optional"] = json!(o);
                }
                let which = if secret {
                    "secretKeyRef"
                } else {
                    "configMapKeyRef"
                };
                json!({"valueFrom": {which: r}})
            }),
    ]
    .prop_map(move |mut v| {
        v["name"] = json!(name);
        v
    })
}

/// A probe against one of the container's ports (by number or by name).
fn probe(ports: Vec<(String, i32)>) -> impl Strategy<Value = Value> {
    let port = if ports.is_empty() {
        Just(json!(8080)).boxed()
    } else {
        (0..ports.len(), any::<bool>())
            .prop_map(move |(i, by_name)| {
                if by_name {
                    json!(ports[i].0)
                } else {
                    json!(ports[i].1)
                }
            })
            .boxed()
    };
    let handler = prop_oneof![
        (
            port.clone(),
            "/[a-z]{0,8}",
            proptest::option::of(Just("HTTP"))
        )
            .prop_map(|(port, path, scheme)| {
                let mut g = json!({"port": port, "path": path});
                if let Some(s) = scheme {
                    g["scheme"] = json!(s);
                }
                json!({"httpGet": g})
            }),
        port.prop_map(|port| json!({"tcpSocket": {"port": port}})),
        proptest::collection::vec("[a-z]{1,6}", 1..3).prop_map(|c| json!({"exec": {"command": c}})),
    ];
    (
        handler,
        proptest::option::of(0..60i32),
        proptest::option::of(1..60i32),
        proptest::option::of(1..30i32),
        proptest::option::of(1..10i32),
    )
        .prop_map(|(mut p, delay, period, timeout, failure)| {
            for (k, v) in [
                ("initialDelaySeconds", delay),
                ("periodSeconds", period),
                ("timeoutSeconds", timeout),
                ("failureThreshold", failure),
            ] {
                if let Some(v) = v {
                    p[k] = json!(v);
                }
            }
            p
        })
}

fn security_context() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(1..65535i64),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(proptest::sample::subsequence(
            vec!["NET_ADMIN", "NET_BIND_SERVICE", "SYS_TIME"],
            0..3,
        )),
    )
        .prop_map(|(user, ro, escalation, caps)| {
            let mut s = json!({});
            if let Some(u) = user {
                s["runAsUser"] = json!(u);
                s["runAsNonRoot"] = json!(true);
            }
            if let Some(r) = ro {
                s["readOnlyRootFilesystem"] = json!(r);
            }
            if let Some(e) = escalation {
                s["allowPrivilegeEscalation"] = json!(e);
            }
            if let Some(c) = caps {
                s["capabilities"] = json!({"add": c, "drop": ["ALL"]});
            }
            s
        })
}

fn resources() -> impl Strategy<Value = Value> {
    // Requests never above limits: each resource picks a request and a limit at or above it.
    let cpu = ["10m", "100m", "250m", "1", "2"];
    let mem = ["16Mi", "64Mi", "128Mi", "1Gi"];
    (
        proptest::option::of((0..cpu.len(), 0..cpu.len())),
        proptest::option::of((0..mem.len(), 0..mem.len())),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(c, m, req, lim)| {
            let mut requests = Map::new();
            let mut limits = Map::new();
            if let Some((a, b)) = c {
                let (lo, hi) = (a.min(b), a.max(b));
                if req {
                    requests.insert("cpu".into(), json!(cpu[lo]));
                }
                if lim {
                    limits.insert("cpu".into(), json!(cpu[hi]));
                }
            }
            if let Some((a, b)) = m {
                let (lo, hi) = (a.min(b), a.max(b));
                if req {
                    requests.insert("memory".into(), json!(mem[lo]));
                }
                if lim {
                    limits.insert("memory".into(), json!(mem[hi]));
                }
            }
            let mut r = json!({});
            if !requests.is_empty() {
                r["requests"] = Value::Object(requests);
            }
            if !limits.is_empty() {
                r["limits"] = Value::Object(limits);
            }
            r
        })
}

fn lifecycle() -> impl Strategy<Value = Value> {
    let handler = prop_oneof![
        proptest::collection::vec("[a-z]{1,6}", 1..3).prop_map(|c| json!({"exec": {"command": c}})),
        (1..65535i32, "/[a-z]{0,6}")
            .prop_map(|(p, path)| json!({"httpGet": {"port": p, "path": path}})),
    ];
    (
        proptest::option::of(handler.clone()),
        proptest::option::of(handler),
    )
        .prop_map(|(post, pre)| {
            let mut l = json!({});
            if let Some(h) = post {
                l["postStart"] = h;
            }
            if let Some(h) = pre {
                l["preStop"] = h;
            }
            l
        })
}

/// Container `i`: its ports' numbers start at 1000 * (i + 1) so that no two containers of a
/// pod share one.
fn container(i: usize) -> impl Strategy<Value = Value> {
    let ports = (0..3usize, any::<bool>()).prop_map(move |(n, udp)| {
        (0..n)
            .map(|j| {
                (
                    format!("p{i}{j}"),
                    1000 * (i as i32 + 1) + j as i32,
                    if udp && j == 0 { "UDP" } else { "TCP" },
                )
            })
            .collect::<Vec<_>>()
    });
    ports.prop_flat_map(move |ports| {
        let named: Vec<(String, i32)> = ports
            .iter()
            .filter(|p| p.2 == "TCP")
            .map(|p| (p.0.clone(), p.1))
            .collect();
        let port_json: Vec<Value> = ports
            .iter()
            .map(|(n, p, proto)| json!({"name": n, "containerPort": p, "protocol": proto}))
            .collect();
        let env = (0..4usize).prop_flat_map(|n| {
            (0..n)
                .map(|j| env_var(format!("VAR_{j}")))
                .collect::<Vec<_>>()
        });
        (
            prop_oneof![
                Just("busybox:1"),
                Just("nginx"),
                Just("registry.local:5000/team/app:v2"),
                Just("busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            ],
            proptest::option::of(proptest::collection::vec("[a-z/-]{1,8}", 1..3)),
            proptest::option::of(proptest::collection::vec("[ -~]{0,8}", 0..3)),
            env,
            proptest::option::of(probe(named.clone())),
            proptest::option::of(probe(named)),
            resources(),
            proptest::option::of(lifecycle()),
            proptest::option::of(security_context()),
            proptest::option::of(prop_oneof![Just("Always"), Just("IfNotPresent"), Just("Never")]),
        )
            .prop_map(
                move |(image, command, args, env, live, ready, res, life, sc, pull)| {
                    let mut c = json!({"name": format!("c{i}"), "image": image, "resources": res});
                    if !port_json.is_empty() {
                        c["ports"] = json!(port_json);
                    }
                    for (k, v) in [
                        ("command", command.map(|v| json!(v))),
                        ("args", args.map(|v| json!(v))),
                        ("livenessProbe", live),
                        ("readinessProbe", ready),
                        ("lifecycle", life),
                        ("securityContext", sc),
                        ("imagePullPolicy", pull.map(|p| json!(p))),
                    ] {
                        if let Some(v) = v {
                            c[k] = v;
                        }
                    }
                    if !env.is_empty() {
                        c["env"] = json!(env);
                    }
                    c
                },
            )
    })
}

fn toleration() -> impl Strategy<Value = Value> {
    (
        dns_label(),
        any::<bool>(),
        "[a-z0-9]{0,6}",
        prop_oneof![
            Just(None),
            Just(Some("NoSchedule")),
            Just(Some("PreferNoSchedule")),
            Just(Some("NoExecute"))
        ],
        proptest::option::of(0..3600i64),
    )
        .prop_map(|(key, exists, value, effect, seconds)| {
            let mut t = json!({"key": key});
            if exists {
                t["operator"] = json!("Exists");
            } else {
                t["operator"] = json!("Equal");
                t["value"] = json!(value);
            }
            if let Some(e) = effect {
                t["effect"] = json!(e);
                if e == "NoExecute"
                    && let Some(s) = seconds
                {
                    t["tolerationSeconds"] = json!(s);
                }
            }
            t
        })
}

fn affinity() -> impl Strategy<Value = Value> {
    let expr = (
        dns_label(),
        prop_oneof![
            Just("In"),
            Just("NotIn"),
            Just("Exists"),
            Just("DoesNotExist")
        ],
        proptest::collection::vec("[a-z0-9]{1,6}", 1..3),
    )
        .prop_map(|(key, op, values)| {
            let mut e = json!({"key": key, "operator": op});
            if op == "In" || op == "NotIn" {
                e["values"] = json!(values);
            }
            e
        });
    (
        proptest::option::of(proptest::collection::vec(expr, 1..3)),
        proptest::option::of((1..100i32, labels(), any::<bool>())),
    )
        .prop_map(|(required, anti)| {
            let mut a = json!({});
            if let Some(exprs) = required {
                a["nodeAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": exprs}]}});
            }
            if let Some((weight, sel, zone)) = anti {
                let topology = if zone {
                    "topology.kubernetes.io/zone"
                } else {
                    "kubernetes.io/hostname"
                };
                a["podAntiAffinity"] = json!({"preferredDuringSchedulingIgnoredDuringExecution":
                    [{"weight": weight, "podAffinityTerm": {
                        "labelSelector": {"matchLabels": sel}, "topologyKey": topology}}]});
            }
            a
        })
}

/// A pod spec; `template` when it is a workload's template, whose restartPolicy can only be
/// Always.
fn pod_spec(template: bool) -> impl Strategy<Value = Value> {
    let restart = if template {
        proptest::option::of(Just("Always")).boxed()
    } else {
        proptest::option::of(prop_oneof![
            Just("Always"),
            Just("OnFailure"),
            Just("Never")
        ])
        .boxed()
    };
    (
        (1..4usize).prop_flat_map(|n| (0..n).map(container).collect::<Vec<_>>()),
        restart,
        proptest::option::of(proptest::collection::btree_map(
            dns_label(),
            "[a-z0-9]{1,6}",
            1..3,
        )),
        proptest::option::of(proptest::collection::vec(toleration(), 1..3)),
        proptest::option::of(affinity()),
        proptest::option::of(0..120i64),
        proptest::option::of(prop_oneof![Just("ClusterFirst"), Just("Default"), Just("None")]),
        proptest::option::of(dns_label()),
    )
        .prop_map(
            |(containers, restart, selector, tolerations, affinity, grace, dns, hostname)| {
                let mut s = json!({"containers": containers});
                if let Some(dns) = dns {
                    s["dnsPolicy"] = json!(dns);
                    if dns == "None" {
                        s["dnsConfig"] = json!({"nameservers": ["10.0.0.10"],
                            "searches": ["svc.cluster.local"], "options": [{"name": "ndots", "value": "2"}]});
                    }
                }
                for (k, v) in [
                    ("restartPolicy", restart.map(|v| json!(v))),
                    ("nodeSelector", selector.map(|v| json!(v))),
                    ("tolerations", tolerations.map(|v| json!(v))),
                    ("affinity", affinity),
                    ("terminationGracePeriodSeconds", grace.map(|v| json!(v))),
                    ("hostname", hostname.map(|v| json!(v))),
                ] {
                    if let Some(v) = v {
                        s[k] = v;
                    }
                }
                s
            },
        )
}

fn meta(labels: BTreeMap<String, String>, annotations: BTreeMap<String, String>) -> Value {
    let mut m = json!({});
    if !labels.is_empty() {
        m["labels"] = json!(labels);
    }
    if !annotations.is_empty() {
        m["annotations"] = json!(annotations);
    }
    m
}

fn pod() -> impl Strategy<Value = Value> {
    (labels(), annotations(), pod_spec(false))
        .prop_map(|(l, a, spec)| json!({"metadata": meta(l, a), "spec": spec}))
}

fn deployment() -> impl Strategy<Value = Value> {
    let strategy = prop_oneof![
        Just(json!({"type": "Recreate"})),
        (
            proptest::option::of(prop_oneof![
                (0..5i32).prop_map(|n| json!(n)),
                Just(json!("50%"))
            ]),
            proptest::option::of(prop_oneof![
                (1..5i32).prop_map(|n| json!(n)),
                Just(json!("25%"))
            ]),
        )
            .prop_map(|(surge, unavailable)| {
                let mut ru = json!({});
                if let Some(s) = surge {
                    ru["maxSurge"] = s;
                }
                if let Some(u) = unavailable {
                    ru["maxUnavailable"] = u;
                }
                json!({"type": "RollingUpdate", "rollingUpdate": ru})
            }),
    ];
    (
        labels(),
        annotations(),
        pod_spec(true),
        proptest::option::of(0..5i32),
        proptest::option::of(strategy),
        proptest::option::of(0..60i32),
        proptest::option::of(0..20i32),
        proptest::option::of(any::<bool>()),
        labels(),
    )
        .prop_map(
            |(l, a, spec, replicas, strategy, min_ready, history, paused, tpl_labels)| {
                let mut pod_labels = json!(tpl_labels);
                pod_labels["app"] = json!("web");
                let mut s = json!({"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": pod_labels}, "spec": spec}});
                for (k, v) in [
                    ("replicas", replicas.map(|v| json!(v))),
                    ("strategy", strategy),
                    ("minReadySeconds", min_ready.map(|v| json!(v))),
                    ("revisionHistoryLimit", history.map(|v| json!(v))),
                    ("paused", paused.map(|v| json!(v))),
                ] {
                    if let Some(v) = v {
                        s[k] = v;
                    }
                }
                json!({"metadata": meta(l, a), "spec": s})
            },
        )
}

fn service() -> impl Strategy<Value = Value> {
    let port = (
        prop_oneof![
            (1..65535i32).prop_map(|p| json!(p)),
            dns_label().prop_map(|n| json!(n))
        ],
        proptest::option::of(prop_oneof![Just("TCP"), Just("UDP")]),
    );
    (
        labels(),
        annotations(),
        proptest::collection::vec(port, 1..4),
        proptest::option::of(proptest::collection::btree_map(
            dns_label(),
            "[a-z0-9]{1,6}",
            1..3,
        )),
        proptest::option::of(prop_oneof![Just("None"), Just("ClientIP")]),
        proptest::option::of(1..86400i32),
        proptest::option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(
            |(l, a, ports, selector, affinity, timeout, not_ready, headless)| {
                let ports: Vec<Value> = ports
                    .into_iter()
                    .enumerate()
                    .map(|(i, (target, proto))| {
                        let mut p = json!({"name": format!("port-{i}"), "port": 80 + i as i32,
                            "targetPort": target});
                        if let Some(proto) = proto {
                            p["protocol"] = json!(proto);
                        }
                        p
                    })
                    .collect();
                let mut s = json!({"ports": ports});
                if headless {
                    s["clusterIP"] = json!("None");
                }
                if let Some(sel) = selector {
                    s["selector"] = json!(sel);
                }
                if let Some(aff) = affinity {
                    s["sessionAffinity"] = json!(aff);
                    if aff == "ClientIP"
                        && let Some(t) = timeout
                    {
                        s["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": t}});
                    }
                }
                if let Some(n) = not_ready {
                    s["publishNotReadyAddresses"] = json!(n);
                }
                json!({"metadata": meta(l, a), "spec": s})
            },
        )
}

fn lease() -> impl Strategy<Value = Value> {
    (
        labels(),
        annotations(),
        proptest::option::of("[a-z0-9-]{1,20}"),
        proptest::option::of(1..3600i32),
        proptest::option::of(0..100i32),
    )
        .prop_map(|(l, a, holder, duration, transitions)| {
            let mut s = json!({});
            for (k, v) in [
                ("holderIdentity", holder.map(|v| json!(v))),
                ("leaseDurationSeconds", duration.map(|v| json!(v))),
                ("leaseTransitions", transitions.map(|v| json!(v))),
            ] {
                if let Some(v) = v {
                    s[k] = v;
                }
            }
            json!({"metadata": meta(l, a), "spec": s})
        })
}

// ---- the property ----

/// What the server sets, removed from an answer: metadata's server fields, status, and the
/// Service IPs it allocated when the object did not ask for them.
fn strip_server_set(got: &mut Value, sent: &Value) {
    let m = got["metadata"].as_object_mut().unwrap();
    for f in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
        "namespace",
    ] {
        m.remove(f);
    }
    got.as_object_mut().unwrap().remove("status");
    if sent.pointer("/spec/clusterIP").is_none()
        && let Some(spec) = got.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if sent.pointer("/spec/clusterIP") == Some(&json!("None"))
        && let Some(spec) = got.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("clusterIPs");
    }
}

/// The first path where two JSON values differ, for the failure message.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.keys().chain(y.keys()).find_map(|k| {
            let (va, vb) = (x.get(k), y.get(k));
            match (va, vb) {
                (Some(va), Some(vb)) => first_difference(va, vb, &format!("{path}/{k}")),
                _ => Some(format!("{path}/{k}: {va:?} vs {vb:?}")),
            }
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| first_difference(va, vb, &format!("{path}/{i}"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

/// Creates `body` as a `K`, reads it back by get and by list, and compares both with the
/// defaulted object.
async fn round_trip<K: Object>(
    t: &common::TestPlane,
    mut body: Value,
) -> Result<(), TestCaseError> {
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}-{n}", K::API_KIND.name().to_ascii_lowercase());
    body["metadata"]["name"] = json!(name);
    body["apiVersion"] = json!(K::API_KIND.api_version());
    body["kind"] = json!(K::API_KIND.name());
    let sent: K = serde_json::from_value(body.clone())
        .map_err(|e| TestCaseError::fail(format!("generated object does not decode: {e}")))?;
    let mut want = sent.clone();
    podd_api::defaults::apply(&mut want);
    let mut want = serde_json::to_value(&want).unwrap();
    want["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    let api = t.client.api::<K>(Some(NS));
    let created = api
        .create(&sent)
        .await
        .map_err(|e| TestCaseError::fail(format!("a valid {name} was refused: {e}\n{body:#}")))?;
    let got = api.get(&name).await.unwrap();
    let listed = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|o| o.metadata().name.as_deref() == Some(name.as_str()))
        .expect("the list holds the object");
    for (what, obj) in [("create", created), ("get", got), ("list", listed)] {
        let mut v = serde_json::to_value(&obj).unwrap();
        strip_server_set(&mut v, &body);
        if v != want {
            return Err(TestCaseError::fail(format!(
                "{what} of {name} differs at {}\nsent {body:#}\nwant {want:#}\ngot {v:#}",
                first_difference(&want, &v, "").unwrap_or_default()
            )));
        }
    }
    Ok(())
}

fn run<K: Object>(strategy: impl Strategy<Value = Value>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(common::start(None));
    // The objects go into NS, created first as in Kubernetes.
    let ns: podd_api::Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    rt.block_on(t.client.api::<podd_api::Namespace>(None).create(&ns))
        .expect("create the test namespace");
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |body| rt.block_on(round_trip::<K>(&t, body)));
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(async move { drop(t) });
}

#[test]
fn pods_come_back_as_sent() {
    run::<Pod>(pod());
}

#[test]
fn deployments_come_back_as_sent() {
    run::<Deployment>(deployment());
}

#[test]
fn services_come_back_as_sent() {
    run::<Service>(service());
}

#[test]
fn leases_come_back_as_sent() {
    run::<Lease>(lease());
}

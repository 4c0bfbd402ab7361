//! The bodies in testdata/ are what kubectl 1.32 sent (captured from the real client).

use super::*;
use serde_json::json;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/src/protobuf/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    decode(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn create_deployment_reads_as_its_json() {
    // kubectl create deployment web --image=busybox-httpd --port=8080 --replicas=0
    let d = fixture("create_deployment_web.pb");
    assert_eq!(d["apiVersion"], "apps/v1");
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["metadata"]["name"], "web");
    assert_eq!(d["metadata"]["labels"], json!({"app": "web"}));
    assert!(d["metadata"].get("namespace").is_none(), "{d}");
    assert!(d["metadata"].get("creationTimestamp").is_none(), "{d}");
    // A pointer's zero is a value: replicas 0 must not become the default 1.
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(d["spec"]["selector"]["matchLabels"], json!({"app": "web"}));
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "busybox-httpd");
    assert_eq!(c["image"], "busybox-httpd");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    // It decodes into the typed Deployment.
    let typed: crate::Deployment = serde_json::from_value(d).unwrap();
    assert_eq!(typed.spec.unwrap().replicas, Some(0));
}

#[test]
fn several_containers_keep_their_order() {
    let d = fixture("create_deployment_multi.pb");
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let images: Vec<&str> = cs.iter().map(|c| c["image"].as_str().unwrap()).collect();
    assert_eq!(images, ["busybox", "nginx:1.2"]);
}

#[test]
fn services_carry_int_or_string_ports() {
    // kubectl create service clusterip web --tcp=80:8080
    let s = fixture("create_service_clusterip.pb");
    assert_eq!(s["kind"], "Service");
    let p = &s["spec"]["ports"][0];
    assert_eq!(p["port"], 80);
    assert_eq!(p["targetPort"], 8080);
    assert_eq!(p["protocol"], "TCP");
    let typed: crate::Service = serde_json::from_value(s).unwrap();
    assert_eq!(typed.spec.unwrap().type_.as_deref(), Some("ClusterIP"));
}

#[test]
fn jobs_decode_too() {
    let j = fixture("create_job.pb");
    assert_eq!(j["apiVersion"], "batch/v1");
    let c = &j["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["sh", "-c", "echo hi"]));
}

#[test]
fn bad_bodies_are_refused_clearly() {
    assert_eq!(decode(b"{\"kind\":\"Pod\"}"), Err(ProtobufError::NoMagic));
    let mut body = std::fs::read(format!(
        "{}/src/protobuf/testdata/create_deployment_web.pb",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    body.truncate(body.len() - 20);
    assert!(matches!(
        decode(&body),
        Err(ProtobufError::Truncated(_) | ProtobufError::Malformed { .. })
    ));
}

#[test]
fn every_message_type_named_in_the_table_exists() {
    for m in messages::MESSAGES {
        for f in m.fields {
            if let Kind::Msg(n) | Kind::MapMsg(n) = f.kind {
                let known = message(n).is_ok()
                    || matches!(
                        n.rsplit('.').next(),
                        Some(
                            "Time"
                                | "MicroTime"
                                | "Quantity"
                                | "IntOrString"
                                | "RawExtension"
                                | "FieldsV1"
                                | "Duration"
                        )
                    );
                assert!(known, "{}.{} names {n}", m.name, f.json);
            }
        }
    }
    assert!(messages::MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
}

#[test]
fn base64_round_trips() {
    for s in [&b""[..], b"a", b"ab", b"abc", b"\x00\xff\x10k8s"] {
        assert_eq!(base64_decode(&base64_encode(s)).unwrap(), s);
    }
    assert_eq!(base64_encode(b"abc"), "YWJj");
}

#[test]
fn times_follow_kubernetes() {
    // Time{seconds: 1700000000} → "2023-11-14T22:13:20Z"
    let buf = [0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06];
    assert_eq!(
        special(&buf, "apimachinery.pkg.apis.meta.v1.Time", 0).unwrap(),
        Some(json!("2023-11-14T22:13:20Z"))
    );
    assert_eq!(
        special(&[], "apimachinery.pkg.apis.meta.v1.Time", 0).unwrap(),
        Some(Value::Null)
    );
    assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
}

// ---- the encoder ----

const FIXTURES: &[&str] = &[
    "create_deployment_web.pb",
    "create_deployment_multi.pb",
    "create_job.pb",
    "create_service_clusterip.pb",
];

#[test]
fn kubectl_bodies_round_trip_through_the_encoder() {
    for name in FIXTURES {
        let v = fixture(name);
        let bytes = encode(&v).unwrap();
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(decode(&bytes).unwrap(), v, "{name}");
        // Re-encoding the decoded form is stable, byte for byte.
        assert_eq!(encode(&decode(&bytes).unwrap()).unwrap(), bytes, "{name}");
    }
}

#[test]
fn typed_objects_round_trip() {
    // What the API server serves: a typed object serialised by k8s-openapi.
    let pod: crate::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": "u-1", "resourceVersion": "42",
            "creationTimestamp": "2024-01-02T03:04:05Z", "labels": {"app": "web"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "time": "2024-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]},
        "spec": {"containers": [{"name": "c", "image": "busybox", "args": ["-a", "-b"],
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
            "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 5}}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox", "targetContainerName": "c"}],
            "terminationGracePeriodSeconds": 30, "enableServiceLinks": false,
            "securityContext": {"runAsUser": -1}},
        "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
            "startTime": "2024-01-02T03:04:06Z",
            "conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2024-01-02T03:04:07Z"}]}
    }))
    .unwrap();
    let v = serde_json::to_value(&pod).unwrap();
    let back = decode(&encode(&v).unwrap()).unwrap();
    assert_eq!(back, v);
    let typed: crate::Pod = serde_json::from_value(back).unwrap();
    assert_eq!(typed, pod);
}

#[test]
fn lists_and_status_round_trip() {
    let list = json!({"apiVersion": "apps/v1", "kind": "DeploymentList",
        "metadata": {"resourceVersion": "7", "continue": "abc", "remainingItemCount": 3},
        "items": [{"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "a"}},
                "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}]});
    let back = decode(&encode(&list).unwrap()).unwrap();
    // List items carry no apiVersion/kind in protobuf (the envelope names the list's).
    let mut want = list.clone();
    let item = want["items"][0].as_object_mut().unwrap();
    item.remove("apiVersion");
    item.remove("kind");
    assert_eq!(back, want);

    // Status is meta.k8s.io's, sent under the request's group version.
    let status = json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": "Failure", "message": "pods \"x\" not found", "reason": "NotFound",
        "details": {"name": "x", "kind": "pods"}, "code": 404});
    assert_eq!(decode(&encode(&status).unwrap()).unwrap(), status);
}

#[test]
fn unknown_fields_are_refused_unless_lossy() {
    let v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"a": "b"}, "notAField": 1});
    assert!(
        matches!(encode(&v), Err(ProtobufError::Encode { .. })),
        "{:?}",
        encode(&v)
    );
    let back = decode(&encode_lossy(&v).unwrap()).unwrap();
    assert_eq!(back["data"], json!({"a": "b"}));
    assert!(back.get("notAField").is_none());
    // A kind without a message (a Table, a custom resource) is refused.
    let t = json!({"apiVersion": "meta.k8s.io/v1", "kind": "Table", "rows": []});
    assert!(matches!(encode(&t), Err(ProtobufError::UnknownType { .. })));
    assert!(!encodable("meta.k8s.io/v1", "Table"));
    assert!(encodable("v1", "Pod") && encodable("apps/v1", "Deployment"));
    assert!(encodable("v1", "Status"));
}

#[test]
fn watch_frames_are_length_prefixed_watch_events() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
        "resourceVersion": "5"}});
    let frame = encode_watch_frame("ADDED", &pod).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let (ty, obj) = decode_watch_event(&frame[4..]).unwrap();
    assert_eq!(ty, "ADDED");
    assert_eq!(obj, pod);
}

#[test]
fn go_durations_parse() {
    for (s, n) in [
        ("0s", 0),
        ("1h2m3s", 3_723_000_000_000),
        ("500ms", 500_000_000),
        ("1.5s", 1_500_000_000),
        ("-1m", -60_000_000_000),
        ("10us", 10_000),
    ] {
        assert_eq!(encode::parse_go_duration(s), Some(n), "{s}");
    }
    assert_eq!(encode::parse_go_duration("1x"), None);
}

/// A small deterministic generator (proptest supplies the seed): canonical JSON of a message,
/// as the decoder produces it, drawn from the table.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn string(&mut self) -> String {
        const CHARS: &[char] = &['a', 'z', '0', '-', '.', '/', ' ', 'é', '✓', '"', '\\'];
        let len = 1 + self.below(8);
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize])
            .collect()
    }

    fn special(&mut self, short: &str) -> Value {
        match short {
            "Time" => {
                let ts =
                    k8s_openapi::jiff::Timestamp::from_second(1 + self.below(4_000_000_000) as i64)
                        .unwrap();
                json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            }
            "MicroTime" => {
                let ts = k8s_openapi::jiff::Timestamp::new(
                    1 + self.below(4_000_000_000) as i64,
                    (self.below(1_000_000) * 1000) as i32,
                )
                .unwrap();
                json!(ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            }
            "Quantity" => json!(["100m", "1Gi", "0", "1.5", "2e3"][self.below(5) as usize]),
            "IntOrString" => {
                if self.below(2) == 0 {
                    json!(self.next() as i32)
                } else {
                    json!(self.string())
                }
            }
            "RawExtension" | "FieldsV1" => json!({"f:x": {".": {}}, "n": self.below(100)}),
            "Duration" => {
                let n = if self.below(2) == 0 {
                    self.below(100_000) as i64 * 1_000_000_000
                } else {
                    (1 + self.below(999)) as i64 * 1_000_000
                };
                json!(go_duration(n))
            }
            other => panic!("no generator for {other}"),
        }
    }

    fn message(&mut self, msg: &'static Message, depth: usize) -> Value {
        if is_special(msg.name) {
            return self.special(msg.name.rsplit('.').next().unwrap());
        }
        let mut out = Map::new();
        for f in msg.fields {
            if self.below(3) == 0 {
                continue;
            }
            let value = match f.kind {
                Kind::MapString | Kind::MapBytes | Kind::MapMsg(_) => {
                    let n = self.below(3);
                    if n == 0 {
                        continue;
                    }
                    let mut m = Map::new();
                    for _ in 0..n {
                        let v = match f.kind {
                            Kind::MapString => json!(self.string()),
                            Kind::MapBytes => json!(base64_encode(self.string().as_bytes())),
                            Kind::MapMsg(n) if depth < 4 => {
                                self.message(message_or_special(n), depth + 1)
                            }
                            _ => continue,
                        };
                        m.insert(self.string(), v);
                    }
                    if m.is_empty() {
                        continue;
                    }
                    Value::Object(m)
                }
                _ if f.repeated => {
                    let n = 1 + self.below(3);
                    let items: Vec<Value> = (0..n).filter_map(|_| self.single(f, depth)).collect();
                    if items.is_empty() {
                        continue;
                    }
                    Value::Array(items)
                }
                _ => match self.single(f, depth) {
                    Some(v) => v,
                    None => continue,
                },
            };
            if inline(msg.name, f) {
                if let Value::Object(inner) = value {
                    out.extend(inner);
                }
                continue;
            }
            out.insert(f.json.to_string(), value);
        }
        Value::Object(out)
    }

    fn single(&mut self, f: &Field, depth: usize) -> Option<Value> {
        Some(match f.kind {
            Kind::String => json!(self.string()),
            Kind::Bool => json!(self.below(2) == 0),
            Kind::Int32 => json!(self.next() as i32),
            Kind::Int64 => json!(self.next() as i64),
            Kind::Double => json!((self.next() as i32) as f64 / 8.0),
            Kind::Bytes => json!(base64_encode(self.string().as_bytes())),
            Kind::Msg(n) if depth < 4 => self.message(message_or_special(n), depth + 1),
            _ => return None,
        })
    }
}

/// The table's message, or a stand-in naming a special message the table leaves out.
fn message_or_special(name: &'static str) -> &'static Message {
    message(name).unwrap_or_else(|_| Box::leak(Box::new(Message { name, fields: &[] })))
}

/// apiVersion of a top-level message (`api.apps.v1.Deployment` → `apps/v1`).
fn api_version_of(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let version = parts[parts.len() - 2];
    let group = match parts[1] {
        "core" => return version.to_string(),
        "pkg" => return version.to_string(),
        "apps" | "batch" | "autoscaling" | "policy" => parts[1].to_string(),
        "rbac" => "rbac.authorization.k8s.io".to_string(),
        g => format!("{g}.k8s.io"),
    };
    format!("{group}/{version}")
}

/// Every kind: messages with object or list metadata, and meta.k8s.io's Status.
fn top_level() -> Vec<&'static Message> {
    messages::MESSAGES
        .iter()
        .filter(|m| {
            m.name.ends_with(".Status") && m.name.starts_with("apimachinery")
                || m.fields.iter().any(|f| {
                    f.json == "metadata"
                        && matches!(
                            f.kind,
                            Kind::Msg(
                                "apimachinery.pkg.apis.meta.v1.ObjectMeta"
                                    | "apimachinery.pkg.apis.meta.v1.ListMeta"
                            )
                        )
                })
        })
        .filter(|m| m.name.starts_with("api.") || m.name.ends_with(".Status"))
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn every_kind_round_trips(seed in 1u64..) {
        let kinds = top_level();
        assert!(kinds.len() > 90, "only {} kinds", kinds.len());
        let mut g = Gen(seed);
        for msg in kinds {
            let mut v = g.message(msg, 0);
            let o = v.as_object_mut().unwrap();
            let kind = msg.name.rsplit('.').next().unwrap();
            o.insert("apiVersion".into(), json!(api_version_of(msg.name)));
            o.insert("kind".into(), json!(kind));
            let bytes = encode(&v).unwrap_or_else(|e| panic!("{}: {e}\n{v}", msg.name));
            let back = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", msg.name));
            proptest::prop_assert_eq!(&back, &v, "{}", msg.name);
        }
    }
}

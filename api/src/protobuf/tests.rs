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

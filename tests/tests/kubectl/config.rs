//! ConfigMaps and Secrets with the real kubectl: `kubectl create configmap|secret generic
//! --from-literal`, the columns of `kubectl get cm|secret`, values read back through
//! `-o jsonpath`, an invalid key refused with its path, and `immutable`.

use crate::harness::{Cluster, header};
use base64::Engine;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn configmaps_from_literals() {
    let c = Cluster::start();
    c.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
        "--from-literal=greeting=hello world",
    ]);
    let out = c.ok(&["get", "cm"]);
    assert_eq!(header(&out), ["NAME", "DATA", "AGE"], "{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("settings "))
        .unwrap_or_else(|| panic!("no settings row:\n{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..2], ["settings", "2"], "{out}");
    let v = c.ok(&[
        "get",
        "configmap",
        "settings",
        "-o",
        "jsonpath={.data.greeting}",
    ]);
    assert_eq!(v, "hello world");

    let bad = c.file(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {\"a/b\": x}\n",
    );
    let err = c.fails(&["apply", "-f", &bad]);
    assert!(
        err.contains("data[a/b]") && err.contains("a valid config key"),
        "{err}"
    );

    c.ok(&["patch", "cm", "settings", "-p", r#"{"immutable": true}"#]);
    let err = c.fails(&[
        "patch",
        "cm",
        "settings",
        "-p",
        r#"{"data": {"mode": "slow"}}"#,
    ]);
    assert!(
        err.contains("field is immutable when `immutable` is set"),
        "{err}"
    );
    c.ok(&["delete", "cm", "settings"]);
}

#[test]
fn generic_secrets_from_literals() {
    let c = Cluster::start();
    c.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=user=admin",
        "--from-literal=password=s3cr3t!",
    ]);
    let out = c.ok(&["get", "secret"]);
    assert_eq!(header(&out), ["NAME", "TYPE", "DATA", "AGE"], "{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("db "))
        .unwrap_or_else(|| panic!("no db row:\n{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["db", "Opaque", "2"], "{out}");
    let v = c.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(v, b64("s3cr3t!"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .unwrap();
    assert_eq!(decoded, b"s3cr3t!");

    // stringData through apply: merged into data, never shown.
    let manifest = c.file(
        "tls.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: cert}\ntype: kubernetes.io/tls\n\
         stringData: {tls.crt: CERT, tls.key: KEY}\n",
    );
    c.ok(&["apply", "-f", &manifest]);
    let v = c.json(&["get", "secret", "cert"]);
    assert_eq!(v["data"]["tls.crt"], b64("CERT"), "{v:#}");
    assert!(v.get("stringData").is_none(), "{v:#}");
    let out = c.ok(&["get", "secrets", "cert"]);
    assert!(out.contains("kubernetes.io/tls"), "{out}");

    // A TLS Secret without its key is refused, naming the field.
    let missing = c.file(
        "missing.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: half}\ntype: kubernetes.io/tls\n\
         stringData: {tls.crt: CERT}\n",
    );
    let err = c.fails(&["apply", "-f", &missing]);
    assert!(err.contains("data[tls.key]: Required value"), "{err}");
    c.ok(&["delete", "secret", "db", "cert"]);
}

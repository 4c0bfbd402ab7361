//! Writes that must lose nothing: apply of a changed manifest, set image, every patch type,
//! server-side apply with conflicts, and dry runs and diff that change nothing.

use crate::harness::{Cluster, assert_container_intact, web_manifest};
use serde_json::Value;

fn deploy(c: &Cluster) -> Value {
    c.json(&["get", "deployment", "web"])
}

#[test]
fn apply_of_a_changed_manifest_keeps_every_field() {
    let c = Cluster::start();
    let out = c.apply(
        "web.yaml",
        &web_manifest(2, "production", "busybox-httpd"),
        &[],
    );
    assert!(
        out.contains("deployment.apps/web created") && out.contains("service/web created"),
        "{out}"
    );
    assert_container_intact(&deploy(&c), "production");
    let svc = c.json(&["get", "service", "web"]);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http", "{svc:#}");
    assert_eq!(svc["spec"]["ports"][0]["name"], "http");

    let out = c.apply(
        "web.yaml",
        &web_manifest(3, "staging", "busybox-httpd"),
        &[],
    );
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    let d = deploy(&c);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_container_intact(&d, "staging");
    c.wait_running("app=web", 3);

    let out = c.apply(
        "web.yaml",
        &web_manifest(3, "staging", "busybox-httpd"),
        &[],
    );
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
}

#[test]
fn set_image_keeps_command_env_ports_and_probes() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );
    let out = c.ok(&["set", "image", "deployment/web", "httpd=busybox-httpd:v2"]);
    assert!(out.contains("deployment.apps/web image updated"), "{out}");
    let d = deploy(&c);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox-httpd:v2"
    );
    assert_container_intact(&d, "production");
}

#[test]
fn every_patch_type_means_what_kubernetes_means() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );

    c.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":2},{"op":"add","path":"/metadata/labels/patched","value":"json"}]"#,
    ]);
    let d = deploy(&c);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["labels"]["patched"], "json");

    c.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"merge"}}}"#,
    ]);
    let d = deploy(&c);
    assert_eq!(d["metadata"]["labels"]["patched"], "merge");
    assert_eq!(
        d["metadata"]["labels"]["app"], "web",
        "merge keeps other keys"
    );
    assert_container_intact(&d, "production");

    // Strategic (kubectl's default type): containers merge by name, env by name.
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"httpd","env":[{"name":"MODE","value":"patched"}]}]}}}}"#,
    ]);
    let d = deploy(&c);
    assert_container_intact(&d, "patched");

    c.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"httpd","env":[{"name":"MODE","$patch":"delete"}]}]}}}}"#,
    ]);
    let d = deploy(&c);
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(env.len(), 1, "$patch: delete removed MODE only: {env:?}");
    assert_eq!(env[0]["name"], "POD_NAME");

    // A JSON merge patch replaces lists whole: that is its meaning.
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"httpd","image":"busybox-httpd"}]}}}}"#,
    ]);
    let d = deploy(&c);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(container["env"].is_null(), "{container:#}");

    let err = c.fails(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":7}]"#,
    ]);
    assert!(!err.trim().is_empty(), "a failed JSON patch test says why");
}

#[test]
fn server_side_apply_tracks_managers_and_conflicts() {
    let c = Cluster::start();
    let f = c.file("web.yaml", &web_manifest(1, "production", "busybox-httpd"));
    let out = c.ok(&["apply", "--server-side", "-f", &f]);
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let d = deploy(&c);
    assert_container_intact(&d, "production");
    let d = c.json(&["get", "deployment", "web", "--show-managed-fields"]);
    let managers = d["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields");
    assert!(
        managers
            .iter()
            .any(|m| m["manager"] == "kubectl" && m["operation"] == "Apply"),
        "{managers:#?}"
    );

    // Another manager changing a field kubectl owns conflicts, unless forced.
    let g = c.file(
        "other.yaml",
        &web_manifest(4, "production", "busybox-httpd"),
    );
    let err = c.fails(&["apply", "--server-side", "--field-manager=other", "-f", &g]);
    assert!(
        err.to_lowercase().contains("conflict") && err.contains(".spec.replicas"),
        "{err}"
    );
    assert_eq!(deploy(&c)["spec"]["replicas"], 1);
    c.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &g,
    ]);
    assert_eq!(deploy(&c)["spec"]["replicas"], 4);
}

#[test]
fn dry_run_and_diff_change_nothing() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );
    // The controllers write the rollout's status until it is complete; only then is the
    // resourceVersion one that nothing but a real write may change.
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let before = deploy(&c);
    let rv = before["metadata"]["resourceVersion"].clone();

    let out = c.apply(
        "web2.yaml",
        &web_manifest(5, "staging", "busybox-httpd:v2"),
        &["--dry-run=server"],
    );
    assert!(out.contains("configured (server dry run)"), "{out}");
    let f = c.file("web3.yaml", &web_manifest(5, "staging", "busybox-httpd:v2"));
    let r = c.kubectl(&["diff", "-f", &f]);
    assert_eq!(r.code, 1, "diff exits 1 on differences: {}", r.stderr);
    assert!(
        r.stdout.contains("replicas: 5") && r.stdout.contains("busybox-httpd:v2"),
        "{}",
        r.stdout
    );
    c.ok(&[
        "scale",
        "deployment",
        "web",
        "--replicas=9",
        "--dry-run=server",
    ]);
    c.ok(&["delete", "deployment", "web", "--dry-run=server"]);
    let other = c.file(
        "other.yaml",
        &web_manifest(1, "production", "busybox-httpd").replace("name: web", "name: other"),
    );
    let out = c.ok(&["create", "-f", &other, "--dry-run=server"]);
    assert!(
        out.contains("deployment.apps/other created (server dry run)"),
        "{out}"
    );

    let after = deploy(&c);
    assert_eq!(
        after["metadata"]["resourceVersion"], rv,
        "nothing was written"
    );
    assert_eq!(after["spec"]["replicas"], 1);
    assert_container_intact(&after, "production");
    let r = c.kubectl(&["get", "deployment", "other"]);
    assert_ne!(r.code, 0, "a dry-run create stores nothing");
    assert!(
        r.stderr.contains("NotFound") || r.stderr.contains("not found"),
        "{}",
        r.stderr
    );
}

#[test]
fn create_deployment_uses_kubectls_generator() {
    let c = Cluster::start();
    // kubectl 1.32's generators (create deployment, create job, ...) send their body as
    // protobuf (application/vnd.kubernetes.protobuf), whatever the server offers.
    let r = c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox-httpd",
        "--dry-run=server",
    ]);
    assert_eq!(
        r.code, 0,
        "a server dry run of the generator:\n{}",
        r.stderr
    );
    assert_ne!(
        c.kubectl(&["get", "deployment", "web"]).code,
        0,
        "a dry-run create stores nothing"
    );
    let r = c.kubectl(&["create", "deployment", "web", "--image=busybox-httpd"]);
    assert_eq!(
        r.code, 0,
        "create deployment must succeed (or at least say clearly why not):\n{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("deployment.apps/web created"),
        "{}",
        r.stdout
    );
    let d = deploy(&c);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox-httpd"
    );
    c.wait_running("app=web", 1);
}

//! `kubectl autoscale` (which writes autoscaling/v1) and `kubectl get hpa`, field managers as
//! `--show-managed-fields` prints them and server-side apply conflicting with a patch, and the
//! warnings kubectl prints for fields podd stores but does not act on.

use crate::harness::{Cluster, header, web_manifest};

#[test]
fn autoscale_writes_v1_and_get_hpa_shows_kubes_columns() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );
    let r = c.kubectl(&[
        "autoscale",
        "deployment",
        "web",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
        "-v=6",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("horizontalpodautoscaler.autoscaling/web autoscaled"),
        "{}",
        r.stdout
    );
    // kubectl 1.32 creates the autoscaler through autoscaling/v1.
    assert!(
        r.stderr.contains("POST https://127.0.0.1:",)
            && r.stderr
                .contains("/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"),
        "{}",
        r.stderr
    );

    let out = c.ok(&["get", "hpa"]);
    assert_eq!(
        header(&out),
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ],
        "{out}"
    );
    // kubectl 1.32 prints `cpu: <current>/50%` under TARGETS.
    let row = out.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells[0], "web", "{out}");
    assert_eq!(cells[1], "Deployment/web", "{out}");
    assert!(
        cells[2].starts_with("cpu: ") && cells[2].ends_with("/50%"),
        "{out}"
    );
    assert_eq!(&cells[3..5], ["1", "3"], "{out}");

    // Read through either version.
    let v2 = c.json(&["get", "hpa", "web"]);
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50,
        "{v2:#}"
    );
    let v1 = c.json(&["get", "horizontalpodautoscalers.v1.autoscaling", "web"]);
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50, "{v1:#}");
    assert_eq!(v1["spec"]["maxReplicas"], 3);

    // An edit through v1 keeps the autoscaler whole.
    c.ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":70}}"#,
    ]);
    let out = c.ok(&["get", "hpa", "web"]);
    assert!(out.contains("/70%"), "{out}");
}

#[test]
fn managed_fields_show_and_apply_conflicts_with_a_patch() {
    let c = Cluster::start();
    c.apply(
        "web.yaml",
        &web_manifest(1, "production", "busybox-httpd"),
        &[],
    );
    // Hidden unless asked for, as kubectl does.
    let plain = c.ok(&["get", "deployment", "web", "-o", "yaml"]);
    assert!(!plain.contains("managedFields"), "{plain}");
    let shown = c.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(shown.contains("managedFields:"), "{shown}");
    assert!(
        shown.contains("manager: kubectl-client-side-apply"),
        "{shown}"
    );
    assert!(shown.contains("operation: Update"), "{shown}");

    c.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"replicas":2}}"#,
    ]);
    let d = c.json(&["get", "deployment", "web", "--show-managed-fields"]);
    let patcher = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl-patch")
        .unwrap_or_else(|| panic!("no kubectl-patch entry: {d:#}"));
    assert_eq!(patcher["operation"], "Update");
    assert!(patcher["fieldsV1"]["f:spec"]["f:replicas"].is_object());

    let scaled = c.kubectl(&["scale", "deployment", "web", "--replicas=3"]);
    assert_eq!(scaled.code, 0, "{}", scaled.stderr);
    let d = c.json(&["get", "deployment", "web", "--show-managed-fields"]);
    assert!(
        d["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["subresource"] == "scale"),
        "kubectl scale writes the scale subresource: {:#}",
        d["metadata"]["managedFields"]
    );

    // Another manager applying replicas conflicts with the one that last set them.
    let manifest = web_manifest(5, "production", "busybox-httpd");
    let f = c.file("web5.yaml", &manifest);
    let err = c.fails(&[
        "apply",
        "--server-side",
        "--field-manager=deployer",
        "-f",
        &f,
    ]);
    assert!(!err.contains("rejected managed fields migration"), "{err}");
    // kubectl scale (manager "kubectl", from its User-Agent) set replicas last. (A manager
    // other than `kubectl` also conflicts with kubectl-client-side-apply where the applied
    // value differs from the stored one, as in Kubernetes.)
    assert!(err.contains("Apply failed with"), "{err}");
    assert!(
        err.contains(
            "conflicts with \"kubectl\" with subresource \"scale\" using apps/v1:\n- .spec.replicas"
        ) || err.contains(
            "conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        ),
        "{err}"
    );
    // Forced, it takes them.
    c.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=deployer",
        "-f",
        &f,
    ]);
    let d = c.json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 5);
}

#[test]
fn apply_of_a_host_network_pod_prints_the_warning() {
    let c = Cluster::start();
    let f = c.file(
        "hostnet.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hostnet
spec:
  hostNetwork: true
  containers:
  - name: c
    image: busybox-httpd
    command: ["httpd", "-f", "-p", "8080"]
"#,
    );
    let r = c.kubectl(&["apply", "-f", &f]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("pod/hostnet created"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("Warning: spec.hostNetwork: stored, but not acted on by podd yet"),
        "{}",
        r.stderr
    );
    // Stored as sent.
    let p = c.json(&["get", "pod", "hostnet"]);
    assert_eq!(p["spec"]["hostNetwork"], true);
}

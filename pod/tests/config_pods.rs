//! A pod that takes its configuration from ConfigMaps, Secrets and the downward API, run
//! through the pod manager on this host (root, in a node network namespace the test made):
//! its env and files as the container sees them, `$(VAR)` in its command, a missing Secret
//! refused with CreateContainerConfigError before anything is created, a volume refresh
//! reaching the running container, and nothing left after the pod.

mod common;

use common::{Node, all_running, exec, pod_with, wait_for};
use podd_pod::manager::PodError;
use podd_pod::sources::ConfigSources;
use std::path::Path;
use std::time::Duration;

const SHIM: &str = env!("CARGO_BIN_EXE_podd-shim");

fn sources(greeting: &str) -> ConfigSources {
    let mut s = ConfigSources::new("default");
    s.config_maps.insert(
        "app".into(),
        [
            ("greeting".to_string(), greeting.as_bytes().to_vec()),
            ("mode".to_string(), b"fast".to_vec()),
            ("bad=key".to_string(), b"skipped".to_vec()),
        ]
        .into(),
    );
    s.secrets.insert(
        "db".into(),
        [("password".to_string(), b"hunter2".to_vec())].into(),
    );
    s
}

#[test]
fn a_pod_reads_config_maps_secrets_and_the_downward_api() {
    let node = Node::new("cfg", 77, Path::new(SHIM));
    let images = node.images();
    let m = node.manager();
    let mut p = pod_with(
        "configured",
        "uid-cfgpod",
        serde_json::json!([{"name": "app", "image": "busybox",
            "command": ["sh", "-c", "echo started as $(POD_NAME) with $(MODE); exec sleep 1000"],
            "resources": {"requests": {"memory": "64Mi"}},
            "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "APP_"}],
            "env": [
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "mode"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}}},
                {"name": "MEM_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                {"name": "URL", "value": "http://$(POD_IP)/$(POD_NAME)"}],
            "volumeMounts": [
                {"name": "settings", "mountPath": "/etc/app"},
                {"name": "creds", "mountPath": "/creds"},
                {"name": "info", "mountPath": "/info"}]}]),
        serde_json::json!({"volumes": [
            {"name": "settings", "configMap": {"name": "app"}},
            {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o440}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}),
    );
    p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());

    // Without the Secret: the kubelet's CreateContainerConfigError, naming it; nothing made.
    let mut no_secret = sources("hello");
    no_secret.secrets.clear();
    let e = m.run_pod_with(&p, &images, &no_secret).unwrap_err();
    assert_eq!(e.reason(), "CreateContainerConfigError", "{e}");
    assert!(matches!(&e, PodError::Config { .. }), "{e}");
    assert!(e.to_string().contains("secret \"db\" not found"), "{e}");
    assert!(m.list().is_empty());

    let info = m.run_pod_with(&p, &images, &sources("hello")).unwrap();
    assert_eq!(
        info.skipped_env,
        [("app".to_string(), vec!["APP_bad=key".to_string()])]
    );
    wait_for(
        &m,
        "uid-cfgpod",
        "running",
        Duration::from_secs(20),
        all_running,
    );
    let ip = info.ip.unwrap().to_string();
    let (code, env) = exec(&m, "uid-cfgpod", "app", &["env"]);
    assert_eq!(code, 0, "{env}");
    for want in [
        "APP_greeting=hello".to_string(),
        "APP_mode=fast".into(),
        "MODE=fast".into(),
        "PASSWORD=hunter2".into(),
        "POD_NAME=configured".into(),
        format!("POD_IP={ip}"),
        "MEM_MI=64".into(),
        // No limit: the node's allocatable memory.
        format!("MEM_LIMIT={}", m.config().node_memory_bytes),
        format!("URL=http://{ip}/configured"),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} in:\n{env}");
    }
    let (_, files) = exec(
        &m,
        "uid-cfgpod",
        "app",
        &[
            "sh",
            "-c",
            "cat /etc/app/greeting; echo; cat /creds/password; echo; cat /info/labels; echo; stat -c %a /creds/..data/password; touch /etc/app/x 2>&1 || echo read-only",
        ],
    );
    assert_eq!(
        files.lines().collect::<Vec<_>>()[..4],
        ["hello", "hunter2", "app=\"web\"", "440"],
        "{files}"
    );
    assert!(files.contains("read-only"), "{files}");
    let log = std::fs::read_to_string(m.log_path("uid-cfgpod", "app")).unwrap_or_default();
    assert!(log.contains("started as configured with fast"), "{log}");

    // An update reaches the running container's files; its env stays as it was.
    let updated = m
        .refresh_volumes("uid-cfgpod", &p, &sources("bonjour"))
        .unwrap();
    assert_eq!(updated, ["settings"]);
    let (_, greeting) = exec(&m, "uid-cfgpod", "app", &["cat", "/etc/app/greeting"]);
    assert_eq!(greeting, "bonjour");
    let (_, env) = exec(&m, "uid-cfgpod", "app", &["env"]);
    assert!(env.lines().any(|l| l == "APP_greeting=hello"), "{env}");

    let secret_dir = m.data_dir("uid-cfgpod").join("volumes/secret/creds");
    m.stop_pod("uid-cfgpod").unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(secret_dir.to_str().unwrap()),
        "the secret tmpfs is unmounted"
    );
    assert!(m.list().is_empty());
    let left = node.leftovers();
    assert!(left.is_empty(), "the pod left: {left:#?}");
}

//! Configuration volumes on the real filesystem (root): a secret volume is a tmpfs mount
//! (never the node's disk) laid out as the kubelet's AtomicWriter lays it out, an update
//! swaps `..data`, a configMap volume is a plain directory, and everything goes with the pod
//! (also when found again after an agent restart, as `podd reset` and teardown find it).

use podd_api::Pod;
use podd_pod::downward::NodeFacts;
use podd_pod::sources::ConfigSources;
use podd_pod::volumes::{PodVolumes, VolumeError};
use std::fs;
use std::path::Path;

fn pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cfg", "namespace": "default", "uid": "cfg-test", "labels": {"app": "x"}},
        "spec": {
            "volumes": [
                {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}},
                {"name": "settings", "configMap": {"name": "app", "items": [{"key": "mode", "path": "conf/mode"}]}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "all", "projected": {"sources": [{"secret": {"name": "db"}}, {"configMap": {"name": "app"}}]}}
            ],
            "containers": [{"name": "c", "image": "busybox", "volumeMounts": [
                {"name": "creds", "mountPath": "/creds"}, {"name": "settings", "mountPath": "/etc/app"}]}]
        }
    }))
    .unwrap()
}

fn sources(mode: &str) -> ConfigSources {
    let mut s = ConfigSources::new("default");
    s.secrets.insert(
        "db".into(),
        [("password".to_string(), b"hunter2".to_vec())].into(),
    );
    s.config_maps.insert(
        "app".into(),
        [("mode".to_string(), mode.as_bytes().to_vec())].into(),
    );
    s
}

/// The file system type mounted exactly at `path`, if anything is.
fn mount_type(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (fields[4] == p).then(|| fields[sep + 1].to_string())
    })
}

#[test]
fn secrets_live_on_a_tmpfs_and_go_with_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    let p = pod();
    let mut vols =
        PodVolumes::create_with(&p, dir.path(), &sources("fast"), &NodeFacts::default()).unwrap();
    let creds = vols.volumes["creds"].host_path.clone();
    let all = vols.volumes["all"].host_path.clone();
    let settings = vols.volumes["settings"].host_path.clone();
    assert_eq!(
        mount_type(&creds).as_deref(),
        Some("tmpfs"),
        "a secret volume is a tmpfs"
    );
    assert_eq!(
        mount_type(&all).as_deref(),
        Some("tmpfs"),
        "so is a projected one"
    );
    assert_eq!(
        mount_type(&settings),
        None,
        "a configMap volume is a directory"
    );
    assert!(vols.volumes.values().filter(|v| v.read_only).count() == 4);

    // The kubelet's layout.
    assert_eq!(
        fs::read_to_string(creds.join("password")).unwrap(),
        "hunter2"
    );
    assert_eq!(
        fs::read_link(creds.join("password")).unwrap(),
        Path::new("..data/password")
    );
    assert!(
        fs::read_link(creds.join("..data"))
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("..20")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(creds.join("password"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o400);
    assert_eq!(
        fs::read_to_string(settings.join("conf/mode")).unwrap(),
        "fast"
    );
    let info = vols.volumes["info"].host_path.clone();
    assert_eq!(
        fs::read_to_string(info.join("labels")).unwrap(),
        "app=\"x\""
    );
    assert_eq!(fs::read_to_string(all.join("mode")).unwrap(), "fast");

    // An update swaps ..data; an unchanged volume is not rewritten.
    let before = fs::read_link(settings.join("..data")).unwrap();
    let creds_before = fs::read_link(creds.join("..data")).unwrap();
    let updated = vols
        .refresh(&p, &sources("slow"), &NodeFacts::default())
        .unwrap();
    assert_eq!(updated, ["settings", "all"]);
    assert_ne!(fs::read_link(settings.join("..data")).unwrap(), before);
    assert_eq!(fs::read_link(creds.join("..data")).unwrap(), creds_before);
    assert_eq!(
        fs::read_to_string(settings.join("conf/mode")).unwrap(),
        "slow"
    );
    // A source that has gone keeps the last files.
    let gone = ConfigSources::new("default");
    assert!(
        vols.refresh(&p, &gone, &NodeFacts::default())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        fs::read_to_string(creds.join("password")).unwrap(),
        "hunter2"
    );

    // Found again from the pod alone (an agent restart, `podd reset`), and removed.
    PodVolumes::adopt(&p, dir.path()).remove().unwrap();
    assert_eq!(mount_type(&creds), None);
    assert_eq!(mount_type(&all), None);
    assert!(!dir.path().join("volumes").exists());
    vols.remove().unwrap();
}

#[test]
fn a_missing_source_is_named_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = PodVolumes::create_with(
        &pod(),
        dir.path(),
        &ConfigSources::new("default"),
        &NodeFacts::default(),
    )
    .unwrap_err();
    assert!(matches!(e, VolumeError::Config { .. }), "{e}");
    assert!(e.to_string().contains("secret \"db\" not found"), "{e}");
    assert!(!dir.path().join("volumes").exists());
}

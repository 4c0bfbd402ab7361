//! Pod volumes on the real filesystem (root): emptyDir directories and tmpfs, hostPath checks,
//! and removal that leaves nothing behind.

use podd_api::Pod;
use podd_pod::volumes::{PodVolumes, VolumeError};
use std::path::Path;

fn pod(volumes: serde_json::Value, mounts: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vol", "namespace": "default", "uid": "vol-test"},
        "spec": {"volumes": volumes, "containers": [{"name": "c", "image": "busybox", "volumeMounts": mounts}]}
    }))
    .unwrap()
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[test]
fn empty_dirs_and_a_sized_tmpfs_are_made_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let p = pod(
        serde_json::json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}},
            {"name": "host", "hostPath": {"path": host.path().to_str().unwrap(), "type": "Directory"}}
        ]),
        serde_json::json!([{"name": "scratch", "mountPath": "/s"}]),
    );
    let mut vols = PodVolumes::create(&p, dir.path()).unwrap();
    let scratch = vols.volumes["scratch"].host_path.clone();
    let mem = vols.volumes["mem"].host_path.clone();
    assert!(scratch.is_dir());
    assert!(mounted(&mem), "the Memory emptyDir is a tmpfs");
    let st = nix::sys::statvfs::statvfs(&mem).unwrap();
    assert_eq!(
        st.blocks() * st.fragment_size(),
        4 << 20,
        "size limit applies"
    );
    assert_eq!(vols.volumes["host"].host_path, host.path());

    vols.remove().unwrap();
    assert!(!mounted(&mem));
    assert!(!dir.path().join("volumes").exists());
    assert!(
        host.path().exists(),
        "hostPath volumes are the node's, never removed"
    );
    vols.remove().unwrap();
}

#[test]
fn bad_volumes_get_clear_errors_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = pod(
        serde_json::json!([
            {"name": "scratch", "emptyDir": {"medium": "Memory"}},
            {"name": "host", "hostPath": {"path": "/nonexistent/podd-test", "type": "Directory"}}
        ]),
        serde_json::json!([]),
    );
    let e = PodVolumes::create(&missing, dir.path()).unwrap_err();
    assert!(matches!(e, VolumeError::HostPath { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("default/vol") && msg.contains("/nonexistent/podd-test"),
        "{msg}"
    );
    assert!(!dir.path().join("volumes").exists());

    let unknown = pod(
        serde_json::json!([]),
        serde_json::json!([{"name": "nope", "mountPath": "/x"}]),
    );
    let msg = PodVolumes::create(&unknown, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("\"nope\"") && msg.contains("spec.volumes"),
        "{msg}"
    );

    let none = pod(serde_json::json!([{"name": "v"}]), serde_json::json!([]));
    assert!(matches!(
        PodVolumes::create(&none, dir.path()).unwrap_err(),
        VolumeError::NoSource { .. }
    ));
}

#[test]
fn directory_or_create_makes_the_host_path() {
    let dir = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let target = host.path().join("made/by/podd");
    let p = pod(
        serde_json::json!([{"name": "h", "hostPath": {"path": target.to_str().unwrap(), "type": "DirectoryOrCreate"}}]),
        serde_json::json!([]),
    );
    let mut vols = PodVolumes::create(&p, dir.path()).unwrap();
    assert!(target.is_dir());
    vols.remove().unwrap();
}

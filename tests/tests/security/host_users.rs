//! Class 4: an ordinary host user reaches what containers and images hold.
//!
//! The attack: an unprivileged user of the node (`nobody`, uid and gid 65534) goes for
//! (a) a setuid-root binary shipped in an image layer, in the node's image store;
//! (b) a setuid-root binary a container planted in its upper directory
//!     (`cp /bin/busybox /planted; chmod u+s /planted`);
//! (c) a device node a container planted there (the host's loop-control, mode 0666),
//! through the upper directory and through the rootfs mount point. Every try must fail with
//! EACCES, because the directories holding them are 0700 and root's. The node's base directory
//! is made 0755 (as /var/lib is), so only podd's own modes defend. A node set up by an older
//! podd (pod directories at 0755) is tightened when the pod manager starts.

use crate::devices::pod_node::{PodNode, exec_sh, sleeper, wait_running};
use podd_image::Compression;
use podd_image::testing::{LayerTar, ProcessConfig, busybox_layer, write_busybox_layout};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// `nobody` runs `path`; Ok(output) means the binary ran.
fn run_as_nobody(path: &Path) -> std::io::Result<std::process::Output> {
    Command::new(path)
        .arg("true")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
}

/// `nobody` opens `path` read-write; returns what the shell said.
fn open_as_nobody(path: &Path) -> (bool, String) {
    let out = Command::new("/bin/sh")
        .args(["-c", "exec 3<>\"$1\" && echo opened", "sh"])
        .arg(path)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).contains("opened"),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn assert_private(dir: &Path) {
    let meta = std::fs::symlink_metadata(dir).unwrap();
    assert!(meta.is_dir(), "{}", dir.display());
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid()),
        (0o700, 0),
        "{} must be root's and 0700: it holds what containers wrote",
        dir.display()
    );
}

#[test]
fn an_unprivileged_host_user_cannot_reach_setuid_files_or_device_nodes_of_pods() {
    let node = PodNode::new("husr", 219);
    chmod(node.tmp.path(), 0o755);

    // An image whose top layer ships a setuid-root busybox at /bin/suid.
    let layout = node.path("layout");
    let mut w = write_busybox_layout(&layout, Compression::Gzip).unwrap();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut top = LayerTar::new();
    top.dir("./", 0o755).dir("bin", 0o755);
    top.file("bin/suid", 0o4755, &busybox);
    w.add_image(
        "suid:latest",
        &[
            (&busybox_layer().unwrap(), Compression::Gzip),
            (&top.finish(), Compression::Gzip),
        ],
        &ProcessConfig::cmd(&["sh"]),
    )
    .unwrap();
    let image = node.import(&layout, "suid");
    let layer_suid = image.layer_dirs.last().unwrap().join("bin/suid");
    let images = BTreeMap::from([("suid".to_string(), image)]);

    let m = node.manager();
    let uid = "sec-husr-1";
    m.run_pod(&sleeper("host-users", uid, "suid", None), &images)
        .unwrap();
    wait_running(&m, uid);
    let (code, out) = exec_sh(
        &m,
        uid,
        "cp /bin/busybox /planted && chmod 4755 /planted && \
         mknod /planted-loopctl c 10 237 && chmod 666 /planted-loopctl && echo planted",
    );
    assert!(
        code == 0 && out.contains("planted"),
        "planting failed: {out}"
    );

    let container = node.path(&format!("data/pods/{uid}/containers/c"));
    let upper = container.join("upper");
    let planted = upper.join("planted");
    let planted_dev = upper.join("planted-loopctl");
    // As root: the files are what the attacker wants.
    for f in [&layer_suid, &planted] {
        let meta = std::fs::metadata(f).unwrap();
        assert!(
            meta.uid() == 0 && meta.mode() & 0o4000 != 0,
            "{} is not setuid root: {:o}",
            f.display(),
            meta.mode()
        );
    }
    let dev = std::fs::metadata(&planted_dev).unwrap();
    assert!(dev.file_type().is_char_device() && dev.mode() & 0o666 == 0o666);

    // The attack.
    for (what, path) in [
        (
            "a setuid-root binary from an image layer",
            layer_suid.clone(),
        ),
        ("a setuid-root binary a container planted", planted.clone()),
        (
            "a setuid-root binary a container planted (through the rootfs mount)",
            container.join("rootfs/planted"),
        ),
    ] {
        match run_as_nobody(&path) {
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::PermissionDenied,
                "{what} at {}: {e}",
                path.display()
            ),
            Ok(out) => panic!(
                "a host user ran {what} at {} ({}): it would run as root",
                path.display(),
                out.status
            ),
        }
    }
    for path in [
        planted_dev.clone(),
        container.join("rootfs/planted-loopctl"),
    ] {
        let (opened, err) = open_as_nobody(&path);
        assert!(
            !opened,
            "a host user opened the device node a container planted at {}: the host's loop-control",
            path.display()
        );
        assert!(err.contains("Permission denied"), "{err}");
    }

    // The modes that defend.
    for d in [
        node.path("data/pods"),
        node.path(&format!("data/pods/{uid}")),
        node.path("run/pods"),
        node.path(&format!("run/pods/{uid}")),
    ] {
        assert_private(&d);
    }
    let store = node.path("images");
    let closed = layer_suid
        .ancestors()
        .take_while(|d| d.starts_with(&store))
        .any(|d| d.is_dir() && mode(d) & 0o001 == 0 && std::fs::metadata(d).unwrap().uid() == 0);
    assert!(
        closed,
        "no directory from the image store {} down to {} is closed to other users",
        store.display(),
        layer_suid.display()
    );

    // A node from an older podd (0755 pod directories) is tightened when podd starts.
    for d in ["data/pods", "run/pods"] {
        chmod(&node.path(d), 0o755);
        chmod(&node.path(&format!("{d}/{uid}")), 0o755);
    }
    drop(m);
    let m = node.manager();
    for d in ["data/pods", "run/pods"] {
        assert_private(&node.path(d));
        assert_private(&node.path(&format!("{d}/{uid}")));
    }
    m.stop_pod(uid).unwrap();
}

//! Class 5, runtime side: image content acting on host paths.
//!
//! The attacker ships the image: `/dev` or a mount destination is a symlink to a host
//! directory (absolute, or climbing with `../`), or a mount destination is swapped for such a
//! symlink while the runtime sets up (a volume shared with a running container, the
//! CVE-2021-30465 race). The runtime creates mount points, device nodes and the /dev links; none
//! of that may land in the host directory. The container may be refused, or run with everything
//! inside its root.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use oci_spec::runtime::{Mount, MountBuilder};

use super::fd_escape::Lab;

/// A host directory the image points at; it must stay empty.
fn host_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("podd-sec-{tag}-target-"))
        .tempdir()
        .unwrap()
}

fn assert_untouched(dir: &Path, what: &str) {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        entries.is_empty(),
        "{what}: the runtime created {entries:?} in the host directory {}",
        dir.display()
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(dir.to_str().unwrap()),
        "{what}: something is mounted on the host directory {}",
        dir.display()
    );
}

/// `../` enough times to climb out of any rootfs, then `dir` (relative symlink form).
fn climbing(dir: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(24),
        dir.display().to_string().trim_start_matches('/')
    )
}

/// The same path inside the rootfs, so an in-root resolution of the link exists and the
/// container can run.
fn mirror_inside(lab: &Lab, dir: &Path) {
    std::fs::create_dir_all(lab.rootfs.join(dir.strip_prefix("/").unwrap())).unwrap();
}

#[test]
fn an_image_whose_dev_links_to_a_host_directory_does_not_write_there() {
    for (i, (absolute, mirrored)) in [(true, false), (true, true), (false, true)]
        .into_iter()
        .enumerate()
    {
        let lab = Lab::new(&format!("devlink{i}"));
        let target = host_dir("devlink");
        std::fs::remove_dir_all(lab.rootfs.join("dev")).unwrap();
        let link = if absolute {
            target.path().display().to_string()
        } else {
            climbing(target.path())
        };
        std::os::unix::fs::symlink(&link, lab.rootfs.join("dev")).unwrap();
        if mirrored {
            mirror_inside(&lab, target.path());
        }
        let id = format!("dev{i}");
        let spec = lab.spec(
            &id,
            &[
                "/bin/sh",
                "-c",
                &format!("test -c /dev/null && ls -a /dev > /out-{id}"),
            ],
            "/",
        );
        let r = lab.run(&id, &spec);
        println!(
            "/dev -> {link} (in-root copy: {mirrored}): {r:?} {:?}",
            lab.output(&id)
        );
        assert_untouched(target.path(), &format!("/dev -> {link}"));
        if mirrored {
            assert_eq!(
                r,
                Ok(0),
                "with the link's target inside the root, the container runs"
            );
            assert!(
                lab.output(&id).contains("null"),
                "its /dev is set up inside the root"
            );
        }
    }
}

fn tmpfs_at(dest: &str) -> Mount {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ("tmpfs")
        .source(PathBuf::from("tmpfs"))
        .options(vec!["nosuid".to_string(), "nodev".to_string()])
        .build()
        .unwrap()
}

fn bind_at(src: &Path, dest: &str) -> Mount {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ("bind")
        .source(src.to_path_buf())
        .options(vec!["rbind".to_string(), "ro".to_string()])
        .build()
        .unwrap()
}

#[test]
fn symlinked_mount_destinations_stay_inside_the_root() {
    let lab = Lab::new("mntlink");
    let target = host_dir("mntlink");
    let volume = lab.dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(lab.dir.path().join("file-src"), "x").unwrap();
    std::os::unix::fs::symlink(target.path(), lab.rootfs.join("abs")).unwrap();
    std::os::unix::fs::symlink(climbing(target.path()), lab.rootfs.join("rel")).unwrap();
    mirror_inside(&lab, target.path());
    let mut spec = lab.spec("mnt", &["/bin/sh", "-c", "mount > /out-mnt"], "/");
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.extend([
        tmpfs_at("/abs/tmpfs"),
        bind_at(&volume, "/abs/volume"),
        bind_at(&lab.dir.path().join("file-src"), "/abs/file"),
        tmpfs_at("/rel/tmpfs2"),
        bind_at(&volume, "/rel/volume2"),
    ]);
    spec.set_mounts(Some(mounts));
    let r = lab.run("mnt", &spec);
    println!("{r:?} {}", lab.output("mnt"));
    assert_untouched(target.path(), "mounts through /abs and /rel");
    assert_eq!(r, Ok(0), "the mounts land inside the root");
}

#[test]
fn a_mount_destination_swapped_for_a_symlink_during_setup_stays_inside_the_root() {
    let lab = Lab::new("mntrace");
    let target = host_dir("mntrace");
    let stop = Arc::new(AtomicBool::new(false));
    // The attacker (another container sharing the volume) flips /shared between a directory
    // and a symlink to the host directory as fast as it can.
    let swapper = {
        let stop = stop.clone();
        let shared = lab.rootfs.join("shared");
        let tmp_link = lab.rootfs.join("shared-link");
        let host = target.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = std::os::unix::fs::symlink(&host, &tmp_link);
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::create_dir(&shared);
                let _ = std::fs::remove_dir_all(&shared);
                let _ = std::fs::remove_file(&shared);
                let _ = std::os::unix::fs::symlink(&host, &tmp_link);
                let _ = std::fs::rename(&tmp_link, &shared);
                let _ = std::fs::remove_file(&shared);
            }
        })
    };
    for i in 0..20 {
        let id = format!("race{i}");
        let mut spec = lab.spec(&id, &["/bin/true"], "/");
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(tmpfs_at("/shared/a/b"));
        spec.set_mounts(Some(mounts));
        let _ = lab.run(&id, &spec);
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert_untouched(target.path(), "a mount point raced with a symlink swap");
}

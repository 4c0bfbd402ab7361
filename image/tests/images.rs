//! Images from OCI layouts and oci-archives, unpacked into the store and mounted as overlay
//! rootfs (root, host). Every test checks that nothing leaks: no mounts, no temp dirs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use podd_image::testing::{self, LayerTar, LayoutWriter, ProcessConfig};
use podd_image::{
    Compression, ImageDefaults, ImageError, ImageStore, OverlayRootfs, PullPolicy, RegistryOptions,
};

/// A test's scratch space: a layout dir, a store, a containers dir; removed on drop.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix(&format!("podd-image-test-{name}-"))
                .tempdir()
                .unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn store(&self) -> ImageStore {
        ImageStore::open(self.path("store")).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Unmount anything a failed test left, so the temp dir can go.
        for m in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = dir.to_str().unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `sh -c script` inside the rootfs with chroot, returning stdout.
fn run_in(rootfs: &Path, script: &str) -> String {
    let out = Command::new("/usr/sbin/chroot")
        .arg(rootfs)
        .args(["/bin/sh", "-c", script])
        .env_clear()
        .env("PATH", "/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_busybox_from_layout(compression: Compression) {
    let s = Scratch::new(&format!("{compression:?}").to_lowercase());
    testing::write_busybox_layout(&s.path("layout"), compression).unwrap();
    let store = s.store();
    let image = store
        .resolve_layout(&s.path("layout"), "busybox:latest")
        .unwrap();
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.layers[0].compression, compression);
    let unpacked = store.unpack(&image).unwrap();
    let defaults = ImageDefaults::from_config(&unpacked.config);
    assert_eq!(defaults.cmd, vec!["sh".to_string()]);

    fs::create_dir(s.path("containers")).unwrap();
    let rootfs = OverlayRootfs::mount(&unpacked, &s.path("containers/c1")).unwrap();
    let root = rootfs.path().to_path_buf();
    assert_eq!(
        mounts_under(s.dir.path()),
        vec![root.to_str().unwrap().to_string()]
    );
    let bb = fs::metadata(root.join("bin/busybox")).unwrap();
    assert!(bb.permissions().mode() & 0o111 != 0);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    assert!(
        fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0")
    );
    assert_eq!(run_in(&root, "echo hi from $(id -u)"), "hi from 0\n");
    // Writes go to the container's upper dir, never into the shared layer.
    run_in(&root, "echo data > /tmp/written && rm /etc/group");
    assert!(s.path("containers/c1/upper/tmp/written").exists());
    assert!(!unpacked.layer_dirs[0].join("tmp/written").exists());
    assert!(unpacked.layer_dirs[0].join("etc/group").exists());

    rootfs.teardown().unwrap();
    assert!(
        mounts_under(s.dir.path()).is_empty(),
        "the overlay is unmounted"
    );
    assert!(
        !s.path("containers/c1").exists(),
        "the container dir is removed"
    );
    assert!(
        entries(&s.path("store/tmp")).is_empty(),
        "no temp files left"
    );
}

#[test]
fn runs_busybox_from_a_gzip_layout() {
    run_busybox_from_layout(Compression::Gzip);
}

#[test]
fn runs_busybox_from_a_zstd_layout() {
    run_busybox_from_layout(Compression::Zstd);
}

#[test]
fn runs_busybox_from_an_uncompressed_layout() {
    run_busybox_from_layout(Compression::None);
}

#[test]
fn runs_from_an_oci_archive() {
    let s = Scratch::new("archive");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    testing::write_oci_archive(&s.path("layout"), &s.path("busybox.tar")).unwrap();
    let store = s.store();
    let image = store
        .import_archive(&s.path("busybox.tar"), "busybox-httpd:latest")
        .unwrap();
    assert_eq!(image.blobs.root(), store.root());
    assert_eq!(image.layers.len(), 2);
    let unpacked = store.unpack(&image).unwrap();
    let defaults = ImageDefaults::from_config(&unpacked.config);
    assert_eq!(defaults.cmd, ["httpd", "-f", "-p", "8080", "-h", "/www"]);
    fs::create_dir(s.path("containers")).unwrap();
    let rootfs = OverlayRootfs::mount(&unpacked, &s.path("containers/httpd")).unwrap();
    assert_eq!(
        fs::read_to_string(rootfs.path().join("www/index.html")).unwrap(),
        testing::HTTPD_INDEX
    );
    assert!(rootfs.path().join("bin/httpd").symlink_metadata().is_ok());
    rootfs.teardown().unwrap();
    assert!(mounts_under(s.dir.path()).is_empty());
    assert!(
        entries(&s.path("store/tmp")).is_empty(),
        "the staging dir is removed"
    );
}

#[tokio::test]
async fn prepare_takes_oci_and_oci_archive_sources() {
    let s = Scratch::new("prepare");
    testing::write_busybox_layout(&s.path("layout"), Compression::Zstd).unwrap();
    testing::write_oci_archive(&s.path("layout"), &s.path("bb.tar")).unwrap();
    let store = s.store();
    let opts = RegistryOptions::default();
    let a = store
        .prepare(
            &format!("oci:{}:busybox", s.path("layout").display()),
            PullPolicy::IfNotPresent,
            &opts,
        )
        .await
        .unwrap();
    let b = store
        .prepare(
            &format!("oci-archive:{}:busybox:latest", s.path("bb.tar").display()),
            PullPolicy::IfNotPresent,
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(a.layer_dirs, b.layer_dirs);
}

#[test]
fn whiteouts_delete_files_and_opaque_dirs_hide_lower_content() {
    let s = Scratch::new("whiteout");
    let mut w = LayoutWriter::create(&s.path("layout")).unwrap();
    testing::add_whiteout_image(&mut w, Compression::Gzip).unwrap();
    let store = s.store();
    let image = store.resolve_layout(&s.path("layout"), "whiteout").unwrap();
    let unpacked = store.unpack(&image).unwrap();
    fs::create_dir(s.path("containers")).unwrap();
    let rootfs = OverlayRootfs::mount(&unpacked, &s.path("containers/wh")).unwrap();
    let r = rootfs.path();
    assert!(!r.join("data/a").exists(), "whited-out file is gone");
    assert_eq!(fs::read(r.join("data/b")).unwrap(), b"b");
    assert!(
        !r.join("etc/group").exists(),
        "file of the base layer is gone"
    );
    assert!(r.join("etc/passwd").exists());
    assert_eq!(
        entries(&r.join("opq")),
        vec!["new".to_string()],
        "opaque dir hides old content"
    );
    assert_eq!(run_in(r, "ls /data"), "b\n");
    rootfs.teardown().unwrap();
    assert!(mounts_under(s.dir.path()).is_empty());
}

#[test]
fn a_layer_shared_by_two_images_is_unpacked_once() {
    let s = Scratch::new("shared");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let bb = store
        .unpack(&store.resolve_layout(&s.path("layout"), "busybox").unwrap())
        .unwrap();
    let marker = bb.layer_dirs[0].join("bin/busybox");
    let before = fs::metadata(&marker).unwrap();
    let httpd = store
        .unpack(
            &store
                .resolve_layout(&s.path("layout"), "busybox-httpd")
                .unwrap(),
        )
        .unwrap();
    assert_eq!(httpd.layer_dirs[0], bb.layer_dirs[0]);
    let after = fs::metadata(&marker).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&before),
        std::os::unix::fs::MetadataExt::ino(&after),
        "the base layer was not unpacked again"
    );
    assert_eq!(
        entries(&s.path("store/layers")).len(),
        2,
        "base + www layers"
    );
}

#[test]
fn concurrent_unpacks_of_the_same_layer_do_not_race() {
    let s = Scratch::new("concurrent");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let image = store.resolve_layout(&s.path("layout"), "busybox").unwrap();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = ImageStore::open(store.root()).unwrap();
                let image = image.clone();
                scope.spawn(move || store.unpack(&image).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r.layer_dirs, results[0].layer_dirs);
    }
    assert_eq!(entries(&s.path("store/layers")).len(), 1);
    assert!(entries(&s.path("store/tmp")).is_empty());
}

fn corrupt(path: &Path) {
    let mut data = fs::read(path).unwrap();
    let i = data.len() / 2;
    data[i] ^= 0xff;
    fs::write(path, data).unwrap();
}

#[test]
fn a_corrupted_layer_is_refused_and_leaves_nothing() {
    let s = Scratch::new("corrupt-layer");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let image = store.resolve_layout(&s.path("layout"), "busybox").unwrap();
    let layer = &image.layers[0];
    corrupt(&image.blobs.blob_path(&layer.digest));
    let err = store.unpack(&image).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ImageError::DigestMismatch { .. } | ImageError::Layer { .. }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("busybox") && msg.contains(&layer.digest.to_string()),
        "{msg}"
    );
    assert!(
        entries(&s.path("store/layers")).is_empty(),
        "no half-unpacked layer"
    );
    assert!(
        entries(&s.path("store/tmp")).is_empty(),
        "the temp dir is removed"
    );
}

#[test]
fn a_corrupted_uncompressed_layer_names_expected_and_actual_digests() {
    let s = Scratch::new("corrupt-tar");
    testing::write_busybox_layout(&s.path("layout"), Compression::None).unwrap();
    let store = s.store();
    let image = store.resolve_layout(&s.path("layout"), "busybox").unwrap();
    let layer = &image.layers[0];
    let path = image.blobs.blob_path(&layer.digest);
    // Flip a byte inside busybox's contents: the tar stays valid, only the digest reveals it.
    let mut data = fs::read(&path).unwrap();
    let i = data.len() - 100_000;
    data[i] ^= 0xff;
    fs::write(&path, &data).unwrap();
    let err = store.unpack(&image).unwrap_err();
    let ImageError::DigestMismatch {
        image: name,
        blob,
        expected,
        actual,
    } = &err
    else {
        panic!("expected a digest mismatch, got {err}");
    };
    assert!(name.contains("busybox"));
    assert_eq!(blob, &layer.digest.to_string());
    assert_eq!(expected, &layer.digest.to_string());
    assert_eq!(actual, &podd_image::Digest::of(&data).to_string());
    assert!(err.to_string().contains("re-fetch or rebuild"), "{err}");
    assert!(entries(&s.path("store/layers")).is_empty());
    assert!(entries(&s.path("store/tmp")).is_empty());
}

#[test]
fn a_corrupted_config_or_manifest_is_refused() {
    let s = Scratch::new("corrupt-config");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let image = store.resolve_layout(&s.path("layout"), "busybox").unwrap();
    let config = image.manifest.config().digest().to_string();
    corrupt(&image.blobs.blob_path(&config.parse().unwrap()));
    let err = store
        .resolve_layout(&s.path("layout"), "busybox")
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { blob, .. } if *blob == config),
        "{err}"
    );
    corrupt(&image.blobs.blob_path(&image.manifest_digest));
    let err = store
        .resolve_layout(&s.path("layout"), "busybox")
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { blob, .. } if *blob == image.manifest_digest.to_string()),
        "{err}"
    );
}

#[test]
fn a_truncated_blob_is_a_size_mismatch() {
    let s = Scratch::new("truncated");
    testing::write_busybox_layout(&s.path("layout"), Compression::Zstd).unwrap();
    let store = s.store();
    let image = store.resolve_layout(&s.path("layout"), "busybox").unwrap();
    let path = image.blobs.blob_path(&image.layers[0].digest);
    let data = fs::read(&path).unwrap();
    fs::write(&path, &data[..data.len() / 3]).unwrap();
    let err = store.unpack(&image).unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");
    assert!(entries(&s.path("store/layers")).is_empty());
    assert!(entries(&s.path("store/tmp")).is_empty());
}

#[test]
fn a_corrupted_oci_archive_is_refused_and_leaves_nothing() {
    let s = Scratch::new("corrupt-archive");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let image = store.resolve_layout(&s.path("layout"), "busybox").unwrap();
    corrupt(&image.blobs.blob_path(&image.layers[0].digest));
    testing::write_oci_archive(&s.path("layout"), &s.path("bad.tar")).unwrap();
    let err = store
        .import_archive(&s.path("bad.tar"), "busybox")
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("oci-archive:"), "{err}");
    assert!(entries(&s.path("store/tmp")).is_empty());
    assert!(entries(&s.path("store/blobs/sha256")).is_empty());
}

#[test]
fn unknown_images_and_tags_are_named_with_what_exists() {
    let s = Scratch::new("unknown");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let err = store
        .resolve_layout(&s.path("layout"), "busybox:v9")
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::NotFound { .. }));
    assert!(
        msg.contains("busybox:v9")
            && msg.contains("busybox-httpd:latest")
            && msg.contains("check the image name"),
        "{msg}"
    );
    let err = store
        .resolve_layout(&s.path("nowhere"), "busybox")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is this an OCI image layout directory"),
        "{err}"
    );
    let err = store.resolve_local("127.0.0.1:1/none:latest").unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    let err = "oci:".parse::<podd_image::ImageSource>().unwrap_err();
    assert!(err.to_string().contains("oci:PATH"), "{err}");
}

#[test]
fn an_unsupported_layer_media_type_is_a_clear_error() {
    let s = Scratch::new("mediatype");
    let mut w = LayoutWriter::create(&s.path("layout")).unwrap();
    let base = testing::busybox_layer().unwrap();
    w.add_image(
        "bz:latest",
        &[(&base, Compression::Gzip)],
        &ProcessConfig::cmd(&["sh"]),
    )
    .unwrap();
    // Rewrite the manifest with a bzip2 layer type and point the index at it.
    let layout = podd_image::Layout::open(s.path("layout")).unwrap();
    let image = layout
        .resolve("bz", &podd_image::LayoutRef::parse("bz").unwrap())
        .unwrap();
    let old = fs::read_to_string(layout.blob_path(&image.manifest_digest)).unwrap();
    let new = old.replace("tar+gzip", "tar+bzip2");
    let (d, size) = w.add_blob(new.as_bytes()).unwrap();
    let index = fs::read_to_string(layout.index_path()).unwrap();
    let index = index
        .replace(&image.manifest_digest.to_string(), &d.to_string())
        .replace(
            &format!("\"size\": {}", old.len()),
            &format!("\"size\": {size}"),
        );
    fs::write(layout.index_path(), index).unwrap();
    let err = ImageStore::open(s.path("store"))
        .unwrap()
        .resolve_layout(&s.path("layout"), "bz")
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ImageError::UnsupportedMediaType { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("tar+bzip2") && msg.contains("bz") && msg.contains("convert the image"),
        "{msg}"
    );
}

#[test]
fn a_hostile_layer_fails_cleanly() {
    let s = Scratch::new("hostile");
    let mut w = LayoutWriter::create(&s.path("layout")).unwrap();
    let mut t = LayerTar::new();
    t.file("ok", 0o644, b"fine")
        .raw_file(b"../../escaped", b"pwned");
    let evil = t.finish();
    w.add_image(
        "evil",
        &[(&evil, Compression::Gzip)],
        &ProcessConfig::cmd(&["sh"]),
    )
    .unwrap();
    let store = s.store();
    let image = store.resolve_layout(&s.path("layout"), "evil").unwrap();
    let err = store.unpack(&image).unwrap_err();
    assert!(err.to_string().contains("path traversal"), "{err}");
    assert!(!s.dir.path().join("escaped").exists() && !s.path("store/escaped").exists());
    assert!(entries(&s.path("store/layers")).is_empty());
    assert!(entries(&s.path("store/tmp")).is_empty());
}

#[test]
fn dropping_the_rootfs_unmounts_and_removes_it() {
    let s = Scratch::new("drop");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let unpacked = store
        .unpack(&store.resolve_layout(&s.path("layout"), "busybox").unwrap())
        .unwrap();
    fs::create_dir(s.path("containers")).unwrap();
    {
        let _a = OverlayRootfs::mount(&unpacked, &s.path("containers/a")).unwrap();
        let _b = OverlayRootfs::mount(&unpacked, &s.path("containers/b")).unwrap();
        assert_eq!(mounts_under(s.dir.path()).len(), 2);
    }
    assert!(mounts_under(s.dir.path()).is_empty());
    assert!(entries(&s.path("containers")).is_empty());
}

#[test]
fn a_failed_mount_leaves_nothing() {
    let s = Scratch::new("failmount");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let mut unpacked = store
        .unpack(&store.resolve_layout(&s.path("layout"), "busybox").unwrap())
        .unwrap();
    unpacked.layer_dirs.push(s.path("no-such-layer"));
    fs::create_dir(s.path("containers")).unwrap();
    let err = OverlayRootfs::mount(&unpacked, &s.path("containers/x")).unwrap_err();
    assert!(matches!(err, ImageError::Mount { .. }), "{err}");
    assert!(entries(&s.path("containers")).is_empty());
    assert!(mounts_under(s.dir.path()).is_empty());
}

#[test]
fn gc_removes_unused_layers_and_stale_temp_entries() {
    let s = Scratch::new("gc");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let bb = store
        .unpack(&store.resolve_layout(&s.path("layout"), "busybox").unwrap())
        .unwrap();
    let httpd = store
        .unpack(
            &store
                .resolve_layout(&s.path("layout"), "busybox-httpd")
                .unwrap(),
        )
        .unwrap();
    fs::create_dir(s.path("store/tmp/crashed-unpack")).unwrap();
    let stats = store.gc(&[&bb], std::time::Duration::ZERO).unwrap();
    assert_eq!(stats.layers_removed, 1, "the www layer only httpd used");
    assert_eq!(stats.tmp_removed, 1);
    assert!(bb.layer_dirs[0].join("bin/busybox").exists());
    assert!(!httpd.layer_dirs[1].exists());
    assert!(entries(&s.path("store/tmp")).is_empty());
    // It comes back on the next unpack.
    let again = store
        .unpack(
            &store
                .resolve_layout(&s.path("layout"), "busybox-httpd")
                .unwrap(),
        )
        .unwrap();
    assert!(again.layer_dirs[1].join("www/index.html").exists());
    let stats = store.gc(&[], std::time::Duration::ZERO).unwrap();
    assert_eq!(stats.layers_removed, 2);
    assert!(entries(&s.path("store/layers")).is_empty());
}

#[test]
fn too_many_layers_for_one_mount_is_a_clear_error() {
    let s = Scratch::new("manylayers");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let mut unpacked = store
        .unpack(&store.resolve_layout(&s.path("layout"), "busybox").unwrap())
        .unwrap();
    let layer = unpacked.layer_dirs[0].clone();
    unpacked.layer_dirs = vec![layer; 200];
    fs::create_dir(s.path("containers")).unwrap();
    let err = OverlayRootfs::mount(&unpacked, &s.path("containers/x")).unwrap_err();
    assert!(
        err.to_string().contains("200 layers")
            && err.to_string().contains("shorter image store path"),
        "{err}"
    );
    assert!(entries(&s.path("containers")).is_empty());
}

#[test]
fn images_resolve_by_tag_name_and_digest() {
    let s = Scratch::new("refs");
    testing::write_busybox_layout(&s.path("layout"), Compression::Gzip).unwrap();
    let store = s.store();
    let by_tag = store
        .resolve_layout(&s.path("layout"), "busybox:latest")
        .unwrap();
    let by_name = store.resolve_layout(&s.path("layout"), "busybox").unwrap();
    let d = by_tag.manifest_digest.to_string();
    let by_digest = store
        .resolve_layout(&s.path("layout"), &format!("busybox@{d}"))
        .unwrap();
    let bare_digest = store.resolve_layout(&s.path("layout"), &d).unwrap();
    for r in [&by_name, &by_digest, &bare_digest] {
        assert_eq!(r.manifest_digest, by_tag.manifest_digest);
    }
    let httpd = store
        .resolve_layout(&s.path("layout"), "busybox-httpd")
        .unwrap();
    assert_ne!(httpd.manifest_digest, by_tag.manifest_digest);
    let err = store
        .resolve_layout(
            &s.path("layout"),
            &format!("busybox@sha256:{}", "0".repeat(64)),
        )
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    // Two images and no reference: which one is ambiguous.
    let err = store.resolve_layout(&s.path("layout"), "").unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
}

//! The image path on the VM's Debian 6.1 kernel, with the store and containers on tmpfs (the
//! guest's /tmp): overlay with `volatile`, trusted xattrs and whiteout devices on tmpfs, and a
//! registry pull. Run by `cargo xtask vm-test`.

use std::fs;

use podd_image::testing::{self, LayoutWriter, TestRegistry};
use podd_image::{Compression, ImageStore, OverlayRootfs, PullPolicy};

fn mounted_under(dir: &std::path::Path) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m.starts_with(dir.to_str().unwrap()))
}

#[test]
#[ignore = "vm: checks overlayfs on the 6.1 guest kernel over tmpfs; run by cargo xtask vm-test"]
fn whiteout_image_runs_on_tmpfs_under_the_guest_kernel() {
    let dir = tempfile::Builder::new()
        .prefix("podd-image-vm-")
        .tempdir()
        .unwrap();
    let mut w = LayoutWriter::create(&dir.path().join("layout")).unwrap();
    testing::add_whiteout_image(&mut w, Compression::Zstd).unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let image = store
        .unpack(&store.resolve_layout(w.root(), "whiteout").unwrap())
        .unwrap();
    fs::create_dir(dir.path().join("containers")).unwrap();
    let rootfs = OverlayRootfs::mount(&image, &dir.path().join("containers/c")).unwrap();
    assert!(rootfs.path().join("bin/busybox").is_file());
    assert!(!rootfs.path().join("data/a").exists());
    assert!(!rootfs.path().join("opq/old").exists());
    assert!(rootfs.path().join("opq/new").exists());
    rootfs.teardown().unwrap();
    assert!(!mounted_under(dir.path()));
}

#[tokio::test]
#[ignore = "vm: checks a registry pull inside the guest; run by cargo xtask vm-test"]
async fn registry_pull_works_in_the_guest() {
    let registry = TestRegistry::start_http().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("podd-image-vm-")
        .tempdir()
        .unwrap();
    testing::write_busybox_layout(&dir.path().join("layout"), Compression::Gzip).unwrap();
    let target = format!("{}/vm/busybox:latest", registry.host());
    testing::push_layout(
        &dir.path().join("layout"),
        "busybox",
        &target,
        &registry.options(),
    )
    .await
    .unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let image = store
        .prepare(&target, PullPolicy::Always, &registry.options())
        .await
        .unwrap();
    assert!(image.layer_dirs[0].join("bin/busybox").is_file());
}

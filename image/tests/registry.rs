//! Pulls from Debian's docker-registry on loopback, over HTTP and HTTPS (self-signed, trusted
//! through RegistryOptions): push a busybox image, pull it into a store, unpack, run-check.

use std::fs;
use std::path::{Path, PathBuf};

use podd_image::testing::{self, PushFormat, TestRegistry};
use podd_image::{Compression, ImageError, ImageStore, OverlayRootfs, PullPolicy, RegistryOptions};

fn layout(dir: &Path) -> PathBuf {
    let l = dir.join("layout");
    testing::write_busybox_layout(&l, Compression::Gzip).unwrap();
    l
}

async fn push_pull_run(registry: &TestRegistry) {
    let dir = tempfile::Builder::new()
        .prefix("podd-image-test-registry-")
        .tempdir()
        .unwrap();
    let layout = layout(dir.path());
    let target = format!("{}/podd/busybox-httpd:v1", registry.host());
    testing::push_layout(
        &layout,
        "busybox-httpd:latest",
        &target,
        &registry.options(),
    )
    .await
    .unwrap();

    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let image = podd_image::registry::pull(&store, &target, &registry.options())
        .await
        .unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.blobs.root(), store.root());
    // The pulled image is now known locally by its reference.
    let local = store.resolve_local(&target).unwrap();
    assert_eq!(local.manifest_digest, image.manifest_digest);

    let unpacked = store
        .prepare(&target, PullPolicy::IfNotPresent, &registry.options())
        .await
        .unwrap();
    fs::create_dir(dir.path().join("containers")).unwrap();
    let rootfs = OverlayRootfs::mount(&unpacked, &dir.path().join("containers/c")).unwrap();
    let out = std::process::Command::new("/usr/sbin/chroot")
        .arg(rootfs.path())
        .args(["/bin/busybox", "cat", "/www/index.html"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), testing::HTTPD_INDEX);
    rootfs.teardown().unwrap();
    assert!(
        fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn pulls_over_http() {
    let registry = TestRegistry::start_http().unwrap();
    push_pull_run(&registry).await;
}

#[tokio::test]
async fn pulls_over_https_with_a_trusted_self_signed_cert() {
    let registry = TestRegistry::start_https().unwrap();
    push_pull_run(&registry).await;
}

#[tokio::test]
async fn an_untrusted_cert_is_refused() {
    let registry = TestRegistry::start_https().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("podd-image-test-registry-")
        .tempdir()
        .unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let image = format!("{}/podd/busybox:latest", registry.host());
    let err = podd_image::registry::pull(&store, &image, &RegistryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err}");
    assert!(
        err.to_string().contains("certificate is not trusted"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_tags_and_never_policy_are_clear_errors() {
    let registry = TestRegistry::start_http().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("podd-image-test-registry-")
        .tempdir()
        .unwrap();
    let layout = layout(dir.path());
    let pushed = format!("{}/podd/busybox:latest", registry.host());
    testing::push_layout(&layout, "busybox", &pushed, &registry.options())
        .await
        .unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let missing = format!("{}/podd/busybox:nope", registry.host());
    let err = store
        .prepare(&missing, PullPolicy::IfNotPresent, &registry.options())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains(&missing)
            && msg.contains("podd/busybox:latest")
            && msg.contains("check the image name and tag"),
        "{msg}"
    );
    let err = store
        .prepare(&pushed, PullPolicy::Never, &registry.options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("imagePullPolicy Never"), "{err}");
    assert!(
        fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(
        fs::read_dir(store.root().join("layers"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn a_registry_serving_a_corrupted_blob_is_refused() {
    let registry = TestRegistry::start_http().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("podd-image-test-registry-")
        .tempdir()
        .unwrap();
    let layout = layout(dir.path());
    let image = format!("{}/podd/busybox:latest", registry.host());
    testing::push_layout(&layout, "busybox", &image, &registry.options())
        .await
        .unwrap();
    // Corrupt the layer as the registry stores it.
    let resolved = podd_image::Layout::open(&layout)
        .unwrap()
        .resolve("busybox", &podd_image::LayoutRef::parse("busybox").unwrap())
        .unwrap();
    let hex = resolved.layers[0].digest.hex().to_string();
    let data_path = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let mut data = fs::read(&data_path).unwrap();
    let i = data.len() / 2;
    data[i] ^= 0xff;
    fs::write(&data_path, data).unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let err = podd_image::registry::pull(&store, &image, &registry.options())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&hex), "{msg}");
    assert!(
        !store
            .layout()
            .blob_path(&resolved.layers[0].digest)
            .exists(),
        "no corrupted blob stored"
    );
    assert!(
        fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn pulls_docker_v2_manifests_and_chooses_the_platform_from_an_index() {
    let registry = TestRegistry::start_http().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("podd-image-test-registry-")
        .tempdir()
        .unwrap();
    let layout = layout(dir.path());
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let opts = registry.options();

    let docker = format!("{}/podd/docker:v2", registry.host());
    let pushed = testing::push_layout_as(&layout, "busybox", &docker, &opts, PushFormat::DockerV2)
        .await
        .unwrap();
    let image = podd_image::registry::pull(&store, &docker, &opts)
        .await
        .unwrap();
    assert_eq!(image.manifest_digest, pushed);
    assert_eq!(
        image.layers[0].media_type,
        podd_image::media::DOCKER_LAYER_GZIP
    );
    let unpacked = store.unpack(&image).unwrap();
    assert!(unpacked.layer_dirs[0].join("bin/busybox").is_file());

    let multi = format!("{}/podd/multi:latest", registry.host());
    testing::push_layout_as(&layout, "busybox", &multi, &opts, PushFormat::Index)
        .await
        .unwrap();
    let image = podd_image::registry::pull(&store, &multi, &opts)
        .await
        .unwrap();
    let oci = podd_image::Layout::open(&layout)
        .unwrap()
        .resolve("busybox", &podd_image::LayoutRef::parse("busybox").unwrap())
        .unwrap();
    assert_eq!(
        image.manifest_digest, oci.manifest_digest,
        "the linux/amd64 entry was chosen"
    );
    assert_eq!(
        store.unpack(&image).unwrap().layer_dirs,
        unpacked.layer_dirs,
        "same layer, unpacked once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_share_blobs_and_layers() {
    let registry = TestRegistry::start_http().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("podd-image-test-registry-")
        .tempdir()
        .unwrap();
    let layout = layout(dir.path());
    let image = format!("{}/podd/httpd:latest", registry.host());
    testing::push_layout(&layout, "busybox-httpd", &image, &registry.options())
        .await
        .unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let (store, image, opts) = (store.clone(), image.clone(), registry.options());
            tokio::spawn(async move { store.prepare(&image, PullPolicy::Always, &opts).await })
        })
        .collect();
    let mut dirs = Vec::new();
    for p in pulls {
        dirs.push(p.await.unwrap().unwrap().layer_dirs);
    }
    assert!(dirs.iter().all(|d| *d == dirs[0]));
    assert_eq!(
        fs::read_dir(store.root().join("layers")).unwrap().count(),
        2
    );
    // manifest + config + 2 layers
    assert_eq!(
        fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        4
    );
    assert!(
        fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    let index = store.layout().read_index().unwrap();
    assert_eq!(
        index.manifests().len(),
        1,
        "one tag entry, not one per pull"
    );
}

#[test]
fn the_registry_process_is_gone_after_drop() {
    let registry = TestRegistry::start_http().unwrap();
    let pid = registry.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(registry);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

/// A node-local image (`podd image import`, `podd image seed-busybox`) runs under
/// imagePullPolicy Always, which kubectl's generators give untagged images, when no registry
/// serves its name: the registry does not have it, or cannot be reached. A registry that has
/// the name wins, and an image that is neither served nor local is still an error.
#[tokio::test]
async fn always_uses_a_node_local_image_that_no_registry_serves() {
    let registry = TestRegistry::start_http().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("podd-image-test-registry-")
        .tempdir()
        .unwrap();
    let layout = layout(dir.path());
    let store = ImageStore::open(dir.path().join("store")).unwrap();

    // Not served by the registry, imported on the node.
    let local = format!("{}/podd/local-only", registry.host());
    store
        .import_layout(&layout, "busybox-httpd:latest", &local)
        .unwrap();
    let img = store
        .prepare(&local, PullPolicy::Always, &registry.options())
        .await
        .unwrap();
    assert!(
        img.image_id.starts_with("podd-local://"),
        "{}",
        img.image_id
    );

    // No registry listens at all (a closed loopback port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let offline = format!("{addr}/podd/busybox-httpd");
    store
        .import_layout(&layout, "busybox-httpd:latest", &offline)
        .unwrap();
    let opts = RegistryOptions {
        plain_http: vec![addr.to_string()],
        ..Default::default()
    };
    let img = store
        .prepare(&offline, PullPolicy::Always, &opts)
        .await
        .unwrap();
    assert!(img.image_id.starts_with("podd-local://"));

    // Neither served nor local: the registry's answer.
    let nowhere = format!("{}/podd/nowhere", registry.host());
    let err = store
        .prepare(&nowhere, PullPolicy::Always, &registry.options())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");

    // Served: Always pulls it, and the image ID is the registry's digest reference.
    let served = format!("{}/podd/busybox:latest", registry.host());
    testing::push_layout(&layout, "busybox", &served, &registry.options())
        .await
        .unwrap();
    let img = store
        .prepare(&served, PullPolicy::Always, &registry.options())
        .await
        .unwrap();
    assert_eq!(
        img.image_id,
        format!("{}/podd/busybox@{}", registry.host(), img.manifest_digest)
    );
}

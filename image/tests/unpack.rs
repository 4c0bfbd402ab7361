//! Layer unpacking on the real filesystem (root): ownership, modes, links, whiteouts, and
//! refusal of hostile paths.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use podd_image::testing::LayerTar;
use podd_image::unpack::{get_xattr, is_whiteout, unpack_tar};

#[test]
fn preserves_modes_owners_and_links() {
    let dest = tempfile::tempdir().unwrap();
    let mut t = LayerTar::new();
    t.dir("d", 0o750)
        .file_owned("d/f", 0o4755, 1000, 2000, b"hello")
        .hardlink("d/hard", "d/f")
        .symlink("d/rel", "f")
        .symlink("d/abs", "/etc/shadow")
        .file("top", 0o600, b"x");
    let tar = t.finish();
    let stats = unpack_tar(&tar[..], dest.path()).unwrap();
    assert_eq!(stats.entries, 6);
    let d = dest.path();
    let f = fs::metadata(d.join("d/f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (1000, 2000));
    assert_eq!(
        f.permissions().mode() & 0o7777,
        0o4755,
        "setuid kept after chown"
    );
    assert_eq!(
        fs::metadata(d.join("d")).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert_eq!(fs::metadata(d.join("d/hard")).unwrap().ino(), f.ino());
    assert_eq!(fs::read_link(d.join("d/rel")).unwrap().to_str(), Some("f"));
    // An absolute symlink is kept as a symlink (resolved later inside the container), never followed.
    assert_eq!(
        fs::read_link(d.join("d/abs")).unwrap().to_str(),
        Some("/etc/shadow")
    );
    assert_eq!(
        fs::metadata(d.join("top")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::metadata(d).unwrap().permissions().mode() & 0o777, 0o755);
}

#[test]
fn converts_whiteouts_to_overlay_form() {
    let dest = tempfile::tempdir().unwrap();
    let mut t = LayerTar::new();
    t.whiteout("etc/gone")
        .opaque("var/cache")
        .file("var/cache/new", 0o644, b"n");
    let tar = t.finish();
    let stats = unpack_tar(&tar[..], dest.path()).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (1, 1));
    assert!(is_whiteout(&dest.path().join("etc/gone")));
    assert!(!dest.path().join("etc/.wh.gone").exists());
    assert_eq!(
        get_xattr(&dest.path().join("var/cache"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(!dest.path().join("var/cache/.wh..wh..opq").exists());
    assert_eq!(fs::read(dest.path().join("var/cache/new")).unwrap(), b"n");
}

#[test]
fn refuses_parent_dir_traversal() {
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let mut t = LayerTar::new();
    t.raw_file(b"../evil", b"pwned");
    let tar = t.finish();
    let err = unpack_tar(&tar[..], &dest).unwrap_err();
    assert!(err.0.contains("path traversal"), "{}", err.0);
    assert!(!outer.path().join("evil").exists());
}

#[test]
fn never_writes_through_a_symlink() {
    let outer = tempfile::tempdir().unwrap();
    let victim = outer.path().join("victim");
    fs::create_dir(&victim).unwrap();
    let dest = outer.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let mut t = LayerTar::new();
    t.symlink("escape", victim.to_str().unwrap())
        .file("escape/pwned", 0o644, b"x");
    let tar = t.finish();
    let err = unpack_tar(&tar[..], &dest).unwrap_err();
    assert!(err.0.contains("symlink"), "{}", err.0);
    assert!(!victim.join("pwned").exists());

    // A later regular file replaces a symlink instead of writing through it.
    let dest2 = outer.path().join("layer2");
    fs::create_dir(&dest2).unwrap();
    let target = outer.path().join("target-file");
    fs::write(&target, b"original").unwrap();
    let mut t = LayerTar::new();
    t.symlink("f", target.to_str().unwrap())
        .file("f", 0o644, b"new");
    let tar = t.finish();
    unpack_tar(&tar[..], &dest2).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"original");
    assert_eq!(fs::read(dest2.join("f")).unwrap(), b"new");
}

#[test]
fn absolute_entry_paths_stay_inside() {
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let mut t = LayerTar::new();
    t.raw_file(b"/abs-file", b"inside");
    let tar = t.finish();
    unpack_tar(&tar[..], &dest).unwrap();
    assert_eq!(fs::read(dest.join("abs-file")).unwrap(), b"inside");
}

#[test]
fn applies_pax_xattrs_but_never_trusted_ones() {
    let dest = tempfile::tempdir().unwrap();
    let mut t = LayerTar::new();
    t.file_with_xattrs(
        "f",
        0o644,
        b"x",
        &[("user.podd", b"yes"), ("trusted.overlay.redirect", b"/etc")],
    );
    let tar = t.finish();
    unpack_tar(&tar[..], dest.path()).unwrap();
    let f = dest.path().join("f");
    assert_eq!(get_xattr(&f, "user.podd").unwrap(), Some(b"yes".to_vec()));
    assert_eq!(get_xattr(&f, "trusted.overlay.redirect").unwrap(), None);
}

#[test]
fn limits_stop_big_layers_many_entries_and_long_paths() {
    use podd_image::unpack::{LimitKind, UnpackError, UnpackLimits, unpack_tar_limited};
    let limits = UnpackLimits {
        max_bytes: 64 * 1024,
        max_entries: 10,
        max_path_len: 64,
    };
    let run = |tar: &[u8]| {
        let dest = tempfile::tempdir().unwrap();
        unpack_tar_limited(tar, dest.path(), &limits)
    };
    let mut t = LayerTar::new();
    t.file("big", 0o644, &vec![0u8; 128 * 1024]);
    assert!(matches!(
        run(&t.finish()),
        Err(UnpackError::Limit {
            kind: LimitKind::Bytes,
            limit: 65536
        })
    ));
    let mut t = LayerTar::new();
    for i in 0..11 {
        t.file(&format!("f{i}"), 0o644, b"");
    }
    assert!(matches!(
        run(&t.finish()),
        Err(UnpackError::Limit {
            kind: LimitKind::Entries,
            ..
        })
    ));
    let mut t = LayerTar::new();
    t.file(&"d/".repeat(40), 0o644, b"");
    assert!(matches!(
        run(&t.finish()),
        Err(UnpackError::Limit {
            kind: LimitKind::PathLen,
            ..
        })
    ));
    // Under every limit, the stats count the stream's bytes.
    let mut t = LayerTar::new();
    t.file("small", 0o644, &[1u8; 1000]);
    let stats = run(&t.finish()).unwrap();
    assert_eq!((stats.entries, stats.bytes % 512), (1, 0));
}

#[test]
fn out_of_range_header_fields_are_errors() {
    use podd_image::testing::tar::EntryType;
    for tweak in [
        (|h: &mut podd_image::testing::tar::Header| h.set_mtime(u64::MAX))
            as fn(&mut podd_image::testing::tar::Header),
        |h| h.set_uid(u64::from(u32::MAX)),
        |h| h.set_gid(1 << 33),
        |h| h.set_size(1 << 40),
    ] {
        let mut t = LayerTar::new();
        t.raw_entry(EntryType::Regular, b"f", None, tweak, b"");
        let dest = tempfile::tempdir().unwrap();
        assert!(unpack_tar(&t.finish()[..], dest.path()).is_err());
    }
}

#[test]
fn a_bomb_after_the_end_of_the_archive_is_not_inflated_past_the_limit() {
    use podd_image::testing::{LayerBlob, LayoutWriter, ProcessConfig};
    use podd_image::{Compression, Digest, ImageError, ImageStore, StoreLimits};
    use std::io::Write;
    // Zero blocks end a tar at once; what follows is hashed for the diff_id. 64 MiB of zeros
    // after an empty archive, as gzip, against an 8 MiB layer limit.
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&chunk).unwrap();
    }
    let blob = gz.finish().unwrap();
    let mut w = LayoutWriter::create(&dir.path().join("layout")).unwrap();
    let (digest, size) = w.add_blob(&blob).unwrap();
    // The diff_id claims the tail is there, so only the limit can stop the hashing.
    let diff_id = Digest::of(&vec![0u8; 64 << 20]);
    w.add_image_blobs(
        "tail:latest",
        &[LayerBlob {
            digest,
            size,
            diff_id,
            compression: Compression::Gzip,
        }],
        &ProcessConfig::cmd(&["sh"]),
    )
    .unwrap();
    let store = ImageStore::open_with(
        dir.path().join("store"),
        StoreLimits {
            max_layer_bytes: 8 << 20,
            ..StoreLimits::default()
        },
    )
    .unwrap();
    let image = store
        .resolve_layout(&dir.path().join("layout"), "tail:latest")
        .unwrap();
    let err = store.unpack(&image).unwrap_err();
    assert!(matches!(err, ImageError::LimitExceeded { .. }), "{err:?}");
    assert_eq!(
        fs::read_dir(dir.path().join("store/layers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(dir.path().join("store/tmp")).unwrap().count(),
        0
    );
}

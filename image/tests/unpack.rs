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

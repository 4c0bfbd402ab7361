//! Classes 4, 5 and 6 for images: a hostile image acts on host paths, exhausts memory or disk,
//! or hands a host user a setuid-root binary.
//!
//! Each test builds the hostile image the way an attacker would (raw tar headers, symlinks to
//! host paths, a gzip bomb, an oversized layer) and feeds it to the real unpacker and store
//! (`podd_image`), then checks that nothing outside the layer changed and that the failure is
//! a clear error. Host "victims" are files and directories in the test's own temp dir, with
//! known content, mode, owner and mtime.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use podd_image::testing::tar::EntryType;
use podd_image::testing::{LayerTar, LayoutWriter, ProcessConfig, write_zeros_layer};
use podd_image::unpack::{get_xattr, unpack_tar};
use podd_image::{Compression, ImageError, ImageStore, OverlayRootfs, StoreLimits};

/// A host directory the attack aims at, with one file of known content, mode and mtime.
struct Victim {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    file: PathBuf,
}

const VICTIM_MTIME: i64 = 1_000_000_000;

impl Victim {
    fn new() -> Victim {
        let tmp = tempfile::Builder::new()
            .prefix("podd-sec-hostile-victim-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("hostdir");
        fs::create_dir(&dir).unwrap();
        let file = dir.join("hostfile");
        fs::write(&file, b"host content").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        set_mtime(&file, VICTIM_MTIME);
        set_mtime(&dir, VICTIM_MTIME);
        Victim {
            _tmp: tmp,
            dir,
            file,
        }
    }

    /// Asserts that nothing of the host side changed: what would have leaked is named.
    fn assert_untouched(&self, attack: &str) {
        let m = fs::symlink_metadata(&self.file).unwrap();
        assert_eq!(
            fs::read(&self.file).unwrap(),
            b"host content",
            "{attack}: the layer rewrote a host file"
        );
        assert_eq!(
            m.mode() & 0o7777,
            0o640,
            "{attack}: the layer changed a host file's mode"
        );
        assert_eq!(
            (m.uid(), m.gid()),
            (0, 0),
            "{attack}: the layer changed a host file's owner"
        );
        assert_eq!(
            m.mtime(),
            VICTIM_MTIME,
            "{attack}: the layer changed a host file's mtime"
        );
        assert_eq!(m.nlink(), 1, "{attack}: the layer hard-linked a host file");
        let d = fs::metadata(&self.dir).unwrap();
        assert_eq!(
            d.mtime(),
            VICTIM_MTIME,
            "{attack}: the layer changed a host directory's mtime (or wrote into it)"
        );
        let names: Vec<_> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("hostfile")],
            "{attack}: the layer created or deleted entries in a host directory"
        );
        assert_eq!(
            get_xattr(&self.dir, "trusted.overlay.opaque").unwrap(),
            None,
            "{attack}: the layer marked a host directory opaque"
        );
    }
}

fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        None,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Unpacks `tar` into a fresh layer dir, returning the outcome and the dir.
fn unpack(tar: &[u8]) -> (Result<(), String>, tempfile::TempDir) {
    let dest = tempfile::Builder::new()
        .prefix("podd-sec-hostile-layer-")
        .tempdir()
        .unwrap();
    let r = std::panic::catch_unwind(|| unpack_tar(tar, dest.path()))
        .expect("the unpacker panicked on a hostile layer (it must return an error)");
    (r.map(|_| ()).map_err(|e| e.0), dest)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_file_entry_through_a_symlink_never_lands_in_a_host_dir() {
    let v = Victim::new();
    let mut t = LayerTar::new();
    t.symlink("escape", s(&v.dir))
        .file("escape/pwned", 0o644, b"owned")
        .file("escape/hostfile", 0o777, b"overwritten");
    let (r, _layer) = unpack(&t.finish());
    let err = r.expect_err("a write through a symlink to a host dir must be refused");
    assert!(err.contains("symlink"), "{err}");
    v.assert_untouched("file entry through a symlink");

    // The same through a relative link climbing out of the layer.
    let mut t = LayerTar::new();
    t.symlink("up", "../../../../../../../../../..").file(
        &format!("up{}/pwned", s(&v.dir)),
        0o644,
        b"owned",
    );
    let (r, _layer) = unpack(&t.finish());
    assert!(
        r.is_err(),
        "a write through a climbing symlink must be refused"
    );
    v.assert_untouched("file entry through a relative symlink");
}

#[test]
fn entries_after_a_symlink_never_change_the_host_file_it_names() {
    let v = Victim::new();
    let host = s(&v.file).to_string();
    let hostile = |t: &mut LayerTar| {
        t.raw_entry(
            EntryType::Regular,
            b"f",
            None,
            |h| {
                h.set_mode(0o4777);
                h.set_uid(1234);
                h.set_gid(1234);
                h.set_mtime(12345);
            },
            b"new",
        );
    };
    // A symlink, then a regular file of the same name with another mode, owner and mtime.
    let mut t = LayerTar::new();
    t.symlink("f", &host);
    hostile(&mut t);
    let (r, layer) = unpack(&t.finish());
    r.unwrap();
    v.assert_untouched("a file entry replacing a symlink");
    let f = fs::symlink_metadata(layer.path().join("f")).unwrap();
    assert!(
        f.is_file(),
        "the later entry replaces the symlink inside the layer"
    );
    assert_eq!(
        (f.mode() & 0o7777, f.uid(), f.mtime()),
        (0o4777, 1234, 12345)
    );

    // A symlink, then a directory, a FIFO, a device node and a symlink of the same name, each
    // with its own mode, owner and mtime.
    for kind in [
        EntryType::Directory,
        EntryType::Fifo,
        EntryType::Char,
        EntryType::Symlink,
    ] {
        let mut t = LayerTar::new();
        t.symlink("f", &host).raw_entry(
            kind,
            b"f",
            (kind == EntryType::Symlink).then_some(host.as_bytes()),
            |h| {
                h.set_mode(0o777);
                h.set_uid(1234);
                h.set_mtime(12345);
            },
            b"",
        );
        let (r, _layer) = unpack(&t.finish());
        r.unwrap();
        v.assert_untouched(&format!("a {kind:?} entry replacing a symlink"));
    }

    // A hard link to the symlink links the symlink itself, and no metadata goes through it.
    let mut t = LayerTar::new();
    t.symlink("f", &host).hardlink("g", "f");
    let (r, layer) = unpack(&t.finish());
    r.unwrap();
    v.assert_untouched("a hard link to a symlink");
    assert!(
        fs::symlink_metadata(layer.path().join("g"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // The reported case: a directory entry, then a symlink of the same name pointing at a host
    // directory. The old unpacker set directory mtimes at the end by path, following the link.
    let mut t = LayerTar::new();
    t.raw_entry(
        EntryType::Directory,
        b"d",
        None,
        |h| h.set_mtime(12345),
        b"",
    )
    .symlink("d", s(&v.dir));
    let (r, _layer) = unpack(&t.finish());
    r.unwrap();
    v.assert_untouched("a symlink left where a directory was (mtime set at the end)");
}

#[test]
fn traversal_entries_stay_inside_the_layer_or_are_refused() {
    let v = Victim::new();
    let deep = "../".repeat(20);
    // `..` in a file path, a hard-link target and a whiteout is refused.
    for (kind, path, link) in [
        (EntryType::Regular, format!("{deep}pwned"), None),
        (
            EntryType::Regular,
            format!("a/{deep}{}/pwned", s(&v.dir)),
            None,
        ),
        (
            EntryType::Link,
            "h".into(),
            Some(format!("{deep}{}", s(&v.file))),
        ),
        (
            EntryType::Regular,
            format!("{deep}{}/.wh.hostfile", s(&v.dir)),
            None,
        ),
        (EntryType::Regular, format!("{deep}.wh..wh..opq"), None),
    ] {
        let mut t = LayerTar::new();
        t.raw_entry(
            kind,
            path.as_bytes(),
            link.as_ref().map(|l| l.as_bytes()),
            |_| {},
            b"",
        );
        let (r, _layer) = unpack(&t.finish());
        let err = r.expect_err(&format!("{path} -> {link:?} must be refused"));
        assert!(err.contains("path traversal"), "{err}");
        v.assert_untouched(&format!("traversal entry {path}"));
    }

    // Absolute paths (entries, hard-link targets, whiteouts, opaque markers) are taken
    // relative to the layer root: they land inside it, or fail, never on the host.
    let abs_file = format!("{}/pwned", s(&v.dir));
    let wh = format!("{}/.wh.hostfile", s(&v.dir));
    let opq = format!("{}/.wh..wh..opq", s(&v.dir));
    let mut t = LayerTar::new();
    t.raw_entry(
        EntryType::Regular,
        abs_file.as_bytes(),
        None,
        |_| {},
        b"inside",
    )
    .raw_entry(
        EntryType::Link,
        b"h",
        Some(abs_file.as_bytes()),
        |_| {},
        b"",
    )
    .raw_entry(EntryType::Regular, wh.as_bytes(), None, |_| {}, b"")
    .raw_entry(EntryType::Regular, opq.as_bytes(), None, |_| {}, b"");
    let (r, layer) = unpack(&t.finish());
    r.unwrap();
    v.assert_untouched("absolute entry paths");
    let inside = layer.path().join(abs_file.trim_start_matches('/'));
    assert_eq!(fs::read(&inside).unwrap(), b"inside");
    assert_eq!(fs::metadata(&inside).unwrap().nlink(), 2);

    // A hard link to an absolute host path names a file of the layer, which does not exist.
    let mut t = LayerTar::new();
    t.hardlink("h", s(&v.file));
    let (r, _layer) = unpack(&t.finish());
    assert!(r.is_err(), "a hard link to a host file must fail");
    v.assert_untouched("hard link to an absolute host path");

    // Whiteouts and opaque markers below a symlink to a host dir never act on the host dir.
    let mut t = LayerTar::new();
    t.symlink("s", s(&v.dir)).whiteout("s/hostfile");
    let (r, _layer) = unpack(&t.finish());
    assert!(r.is_err(), "a whiteout through a symlink must be refused");
    let mut t = LayerTar::new();
    t.symlink("s", s(&v.dir)).opaque("s");
    let (r, _layer) = unpack(&t.finish());
    assert!(
        r.is_err(),
        "an opaque marker through a symlink must be refused"
    );
    // A hard link whose target goes through a symlink to a host file.
    let mut t = LayerTar::new();
    t.symlink("s", s(&v.dir)).hardlink("h", "s/hostfile");
    let (r, _layer) = unpack(&t.finish());
    assert!(r.is_err(), "a hard link through a symlink must be refused");
    v.assert_untouched("whiteouts, opaque markers and hard links through a symlink");
}

/// Sets one field of a hostile tar header.
type Tweak = Box<dyn Fn(&mut podd_image::testing::tar::Header)>;

#[test]
fn extreme_header_values_are_errors_not_panics() {
    let cases: Vec<(&str, Tweak)> = vec![
        ("mtime u64::MAX", Box::new(|h| h.set_mtime(u64::MAX))),
        ("mtime 2^63", Box::new(|h| h.set_mtime(1 << 63))),
        ("uid u64::MAX", Box::new(|h| h.set_uid(u64::MAX))),
        ("uid 2^32-1", Box::new(|h| h.set_uid(u64::from(u32::MAX)))),
        ("gid 2^40", Box::new(|h| h.set_gid(1 << 40))),
        ("size 2^60 with no data", Box::new(|h| h.set_size(1 << 60))),
    ];
    for (what, tweak) in cases {
        let mut t = LayerTar::new();
        t.raw_entry(EntryType::Regular, b"f", None, tweak, b"");
        let (r, _layer) = unpack(&t.finish());
        let err = r.expect_err(&format!("{what} must be refused"));
        println!("{what}: {err}");
    }
    // Values that are odd but harmless are accepted (masked), still without a panic.
    for (what, tweak) in [
        (
            "mode u32::MAX",
            Box::new(|h: &mut podd_image::testing::tar::Header| h.set_mode(u32::MAX)) as Tweak,
        ),
        ("mtime 0", Box::new(|h| h.set_mtime(0))),
    ] {
        let mut t = LayerTar::new();
        t.raw_entry(EntryType::Regular, b"f", None, tweak, b"");
        let (r, _layer) = unpack(&t.finish());
        r.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // A GNU long name and a pax path far over PATH_MAX, and a long link target.
    let long = "a/".repeat(40_000);
    let mut t = LayerTar::new();
    t.file(&long, 0o644, b"x");
    let (r, _layer) = unpack(&t.finish());
    assert!(r.unwrap_err().contains("path length"));
    let mut t = LayerTar::new();
    t.symlink("l", &"b".repeat(100_000));
    let (r, _layer) = unpack(&t.finish());
    assert!(r.unwrap_err().contains("path length"));
    // Garbage after a valid header, and a truncated stream.
    let mut tar = LayerTar::new();
    tar.file("f", 0o644, &[7u8; 4096]);
    let mut bytes = tar.finish();
    bytes.truncate(1024);
    let (r, _layer) = unpack(&bytes);
    assert!(r.is_err(), "a truncated layer must be an error");
    let (_, _layer) = unpack(&[0xffu8; 2048]);
}

/// A store with small limits and a layout to import from, under one test temp dir.
struct StoreFixture {
    tmp: tempfile::TempDir,
}

impl StoreFixture {
    fn new() -> StoreFixture {
        StoreFixture {
            tmp: tempfile::Builder::new()
                .prefix("podd-sec-hostile-store-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn store(&self, limits: StoreLimits) -> ImageStore {
        ImageStore::open_with(self.path("store"), limits).unwrap()
    }

    fn layout(&self) -> LayoutWriter {
        LayoutWriter::create(&self.path("layout")).unwrap()
    }

    /// Everything left in the store's layers/ and tmp/.
    fn leftovers(&self) -> Vec<PathBuf> {
        ["store/layers", "store/tmp"]
            .iter()
            .flat_map(|d| fs::read_dir(self.path(d)).unwrap())
            .map(|e| e.unwrap().path())
            .collect()
    }
}

const MIB: u64 = 1 << 20;

#[test]
fn a_gzip_bomb_stops_at_the_layer_limit_and_leaves_nothing() {
    let f = StoreFixture::new();
    let mut layout = f.layout();
    // 256 MiB of zeros, about 256 KiB of gzip, made with flate2 now.
    let bomb =
        write_zeros_layer(&f.path("bomb.gz"), "zeros", 256 * MIB, Compression::Gzip).unwrap();
    assert!(
        bomb.size < 2 * MIB,
        "the bomb is small: {} bytes",
        bomb.size
    );
    let blob = layout.add_blob_file(&f.path("bomb.gz")).unwrap();
    assert_eq!(blob.0, bomb.digest);
    layout
        .add_image_blobs(
            "bomb:latest",
            std::slice::from_ref(&bomb),
            &ProcessConfig::cmd(&["sh"]),
        )
        .unwrap();
    let limits = StoreLimits {
        max_layer_bytes: 16 * MIB,
        ..StoreLimits::default()
    };
    let store = f.store(limits);
    let image = store
        .resolve_layout(&f.path("layout"), "bomb:latest")
        .unwrap();
    let started = Instant::now();
    let err = store
        .unpack(&image)
        .expect_err("a layer unpacking past the limit must fail");
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, ImageError::LimitExceeded { .. }), "{err:?}");
    assert!(
        msg.contains(&bomb.digest.to_string()),
        "names the layer: {msg}"
    );
    assert!(
        msg.contains(&(16 * MIB).to_string()),
        "names the limit: {msg}"
    );
    assert!(
        msg.contains("max_layer_bytes"),
        "says how to raise it: {msg}"
    );
    assert!(
        f.leftovers().is_empty(),
        "a half-unpacked layer was left: {:?}",
        f.leftovers()
    );
    // It stops at the limit instead of inflating the rest to check the digest.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the bomb was inflated: {:?}",
        started.elapsed()
    );

    // The per-image limit: two layers of 6 MiB each under an 8 MiB image limit.
    let a = write_zeros_layer(&f.path("a"), "a", 6 * MIB, Compression::Gzip).unwrap();
    let b = write_zeros_layer(&f.path("b"), "b", 6 * MIB + 1, Compression::Gzip).unwrap();
    layout.add_blob_file(&f.path("a")).unwrap();
    layout.add_blob_file(&f.path("b")).unwrap();
    layout
        .add_image_blobs("two:latest", &[a, b.clone()], &ProcessConfig::cmd(&["sh"]))
        .unwrap();
    let store = f.store(StoreLimits {
        max_image_bytes: 8 * MIB,
        ..StoreLimits::default()
    });
    let image = store
        .resolve_layout(&f.path("layout"), "two:latest")
        .unwrap();
    let msg = store.unpack(&image).unwrap_err().to_string();
    println!("{msg}");
    assert!(
        msg.contains("per-image") && msg.contains("max_image_bytes"),
        "{msg}"
    );
    assert!(msg.contains(&b.digest.to_string()), "{msg}");
    // Only the complete first layer is in the store; nothing half-made.
    assert_eq!(f.leftovers().len(), 1, "{:?}", f.leftovers());

    // The entry limit.
    let mut t = LayerTar::new();
    for i in 0..50 {
        t.file(&format!("f{i}"), 0o644, b"");
    }
    layout
        .add_image(
            "many:latest",
            &[(&t.finish()[..], Compression::Gzip)],
            &ProcessConfig::cmd(&["sh"]),
        )
        .unwrap();
    let store = f.store(StoreLimits {
        max_layer_entries: 20,
        ..StoreLimits::default()
    });
    let image = store
        .resolve_layout(&f.path("layout"), "many:latest")
        .unwrap();
    let msg = store.unpack(&image).unwrap_err().to_string();
    assert!(
        msg.contains("entries") && msg.contains("max_layer_entries"),
        "{msg}"
    );
    assert_eq!(f.leftovers().len(), 1, "{:?}", f.leftovers());
}

#[test]
fn a_symlinked_etc_passwd_never_reads_the_host_file() {
    let v = Victim::new();
    fs::write(&v.file, "hostonly:x:4242:4242::/root:/bin/sh\n").unwrap();
    let f = StoreFixture::new();
    let mut layout = f.layout();
    let mut t = LayerTar::new();
    t.dir("etc", 0o755)
        .symlink("etc/passwd", s(&v.file))
        .symlink("etc/group", &format!("../../../../../../..{}", s(&v.file)))
        .file("bin/true", 0o755, b"");
    layout
        .add_image(
            "passwd:latest",
            &[(&t.finish()[..], Compression::Gzip)],
            &ProcessConfig {
                user: "hostonly".into(),
                ..ProcessConfig::cmd(&["/bin/true"])
            },
        )
        .unwrap();
    let store = f.store(StoreLimits::default());
    let image = store
        .unpack(
            &store
                .resolve_layout(&f.path("layout"), "passwd:latest")
                .unwrap(),
        )
        .unwrap();
    let rootfs = OverlayRootfs::mount(&image, &f.path("ctr")).unwrap();
    let r = podd_image::resolve_user(&image.name, "hostonly", rootfs.path());
    match r {
        Ok(u) => panic!("the image's /etc/passwd symlink read the host's file: resolved {u:?}"),
        Err(e) => assert!(e.to_string().contains("no such user"), "{e}"),
    }
    // The group file, through a relative link climbing out, is not the host's either.
    let e = podd_image::resolve_user(&image.name, "0:hostonly", rootfs.path()).unwrap_err();
    assert!(e.to_string().contains("no group"), "{e}");
    rootfs.teardown().unwrap();
}

#[test]
fn store_directories_are_private_and_a_host_user_cannot_run_a_layer_setuid_binary() {
    let f = StoreFixture::new();
    // The test's own dir is open to all, so only the store's modes stand in the way.
    fs::set_permissions(f.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // An existing store made with loose modes is tightened on open.
    for d in [
        "store/blobs/sha256",
        "store/layers",
        "store/locks",
        "store/tmp",
    ] {
        fs::create_dir_all(f.path(d)).unwrap();
    }
    for d in [
        "store",
        "store/blobs",
        "store/blobs/sha256",
        "store/layers",
        "store/locks",
        "store/tmp",
    ] {
        fs::set_permissions(f.path(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut layout = f.layout();
    let busybox = fs::read(podd_image::testing::BUSYBOX).unwrap();
    let mut t = LayerTar::new();
    t.file_owned("bin/suid", 0o4755, 0, 0, &busybox);
    layout
        .add_image(
            "suid:latest",
            &[(&t.finish()[..], Compression::None)],
            &ProcessConfig::cmd(&["/bin/suid"]),
        )
        .unwrap();
    let store = f.store(StoreLimits::default());
    let image = store
        .unpack(
            &store
                .resolve_layout(&f.path("layout"), "suid:latest")
                .unwrap(),
        )
        .unwrap();
    let suid = image.layer_dirs[0].join("bin/suid");
    assert_eq!(fs::metadata(&suid).unwrap().mode() & 0o7777, 0o4755);
    let rootfs = OverlayRootfs::mount(&image, &f.path("ctr")).unwrap();
    // The attack: an unprivileged host user runs the setuid-root binary from the layer and
    // from the container's rootfs.
    for path in [suid.clone(), rootfs.path().join("bin/suid")] {
        let out = std::process::Command::new(&path)
            .arg0("busybox")
            .args(["id", "-u"])
            .uid(65534)
            .gid(65534)
            .output();
        match out {
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(libc::EACCES),
                "{}: {e}",
                path.display()
            ),
            Ok(o) => panic!(
                "host user 65534 executed the layer's setuid-root binary {} ({}; `id -u` said {:?}): any setuid program in an image would give host users root",
                path.display(),
                o.status,
                String::from_utf8_lossy(&o.stdout).trim()
            ),
        }
    }
    let ctr_mode = fs::metadata(f.path("ctr")).unwrap().mode() & 0o7777;
    assert_eq!(
        ctr_mode, 0o700,
        "the container dir (upper, rootfs) is {ctr_mode:o}"
    );
    rootfs.teardown().unwrap();
    for d in [
        "store",
        "store/blobs",
        "store/blobs/sha256",
        "store/layers",
        "store/locks",
        "store/tmp",
    ] {
        let mode = fs::metadata(f.path(d)).unwrap().mode() & 0o7777;
        assert_eq!(
            mode, 0o700,
            "{d} is {mode:o}: host users could reach image content"
        );
    }
}

/// The env var that turns [`import_rss_child`] into the measured child process.
const RSS_CHILD: &str = "PODD_SEC_HOSTILE_RSS_CHILD";

fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Run only as the child of [`importing_a_large_layer_streams_it`] (a process of its own, so
/// its peak RSS is the import's alone): imports and unpacks the layout named by `RSS_CHILD`.
#[test]
fn import_rss_child() {
    let Ok(dirs) = std::env::var(RSS_CHILD) else {
        return;
    };
    let (layout, store) = dirs.split_once(':').unwrap();
    let before = vm_hwm_kib();
    let store = ImageStore::open(store).unwrap();
    let image = store
        .import_layout(Path::new(layout), "big:latest", "big:imported")
        .unwrap();
    let unpacked = store.unpack(&image).unwrap();
    let size = fs::metadata(unpacked.layer_dirs[0].join("zeros"))
        .unwrap()
        .len();
    println!(
        "RSS_CHILD before={before} after={} size={size}",
        vm_hwm_kib()
    );
}

#[test]
fn importing_a_large_layer_streams_it() {
    let f = StoreFixture::new();
    let mut layout = f.layout();
    let size = 256 * MIB;
    let layer = write_zeros_layer(&f.path("big.tar"), "zeros", size, Compression::None).unwrap();
    layout.add_blob_file(&f.path("big.tar")).unwrap();
    layout
        .add_image_blobs("big:latest", &[layer], &ProcessConfig::cmd(&["sh"]))
        .unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "hostile_images::import_rss_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            RSS_CHILD,
            format!("{}:{}", s(&f.path("layout")), s(&f.path("store"))),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RSS_CHILD ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no report from the child: {stdout}"));
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("size"), size, "the layer was unpacked whole");
    let growth_mib = (field("after") - field("before")) / 1024;
    println!(
        "importing and unpacking a {} MiB layer raised the peak RSS by {growth_mib} MiB",
        size / MIB
    );
    assert!(
        growth_mib < 64,
        "importing a {} MiB layer raised the peak RSS by {growth_mib} MiB: the blob was read into memory",
        size / MIB
    );
}

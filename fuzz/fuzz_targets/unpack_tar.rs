//! The layer unpacker (`image/src/unpack.rs`): every byte of a layer tar comes from whoever
//! built the image.
//!
//! Each input is unpacked into `ROOT/layer` of a fresh temporary `ROOT` (removed afterwards)
//! that also holds `ROOT/outside/victim`, and a fixed host directory [`HOST`] holds another
//! victim, which absolute symlinks in the corpus aim at. Beyond "no panic": whether the unpack
//! succeeds or fails, nothing outside `ROOT/layer` is created, removed or changed (contents,
//! mode, owner, mtime of the victims and their directories), nothing in the layer is a hard
//! link to a victim, and the layer never holds more file data than the unpack limit.
//!
//! The fuzzer runs as root on a real machine, so inputs that could reach real host files if
//! the unpacker had a bug are skipped, not unpacked: link targets must stay in the layer or aim
//! at `../outside` or [`HOST`], and entry paths may climb with `..` only as far as `ROOT`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podd_image::unpack::UnpackLimits;
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};
use std::sync::Once;
use std::time::{Duration, UNIX_EPOCH};

/// A host directory outside any layer, at a path the corpus can name.
const HOST: &str = "/tmp/podd-fuzz-host";
const VICTIM: &[u8] = b"host data\n";

/// Small caps, so that a sparse or lying entry is refused quickly: the store's own are larger.
const LIMITS: UnpackLimits = UnpackLimits {
    max_bytes: 64 << 20,
    max_entries: 10_000,
    max_path_len: UnpackLimits::DEFAULT_MAX_PATH_LEN,
};

/// The public API under test, in one place: its signature may change.
fn unpack(data: &[u8], dest: &Path) -> bool {
    podd_image::unpack::unpack_tar_limited(data, dest, &LIMITS).is_ok()
}

fuzz_target!(|data: &[u8]| {
    if !safe_to_unpack(data) {
        return;
    }
    static HOST_SETUP: Once = Once::new();
    HOST_SETUP.call_once(|| make_victim_dir(Path::new(HOST)));
    let host_before = snapshot(Path::new(HOST));

    // On disk, not tmpfs: a sparse or huge entry must not eat the machine's memory.
    let root = tempfile::Builder::new()
        .prefix("podd-fuzz-unpack.")
        .tempdir_in("/var/tmp")
        .expect("a temporary directory");
    let layer = root.path().join("layer");
    fs::create_dir(&layer).expect("create the layer directory");
    let outside = root.path().join("outside");
    make_victim_dir(&outside);
    let outside_before = snapshot(&outside);

    let _ok = unpack(data, &layer);

    let names: BTreeSet<String> = entry_names(root.path()).into_iter().collect();
    assert_eq!(
        names,
        BTreeSet::from(["layer".to_string(), "outside".to_string()]),
        "the unpacker created or removed something beside the layer"
    );
    assert_eq!(
        snapshot(&outside),
        outside_before,
        "the unpacker changed ../outside"
    );
    assert_eq!(
        snapshot(Path::new(HOST)),
        host_before,
        "the unpacker changed {HOST}"
    );
    let victims = [outside_before.victim_ino, host_before.victim_ino];
    let mut seen = HashSet::new();
    let written = walk_layer(&layer, &victims, &mut seen);
    assert!(
        written <= LIMITS.max_bytes,
        "the layer holds {written} bytes of file data, over the limit of {}",
        LIMITS.max_bytes
    );
});

/// A directory holding one victim file, with fixed, recognisable metadata.
fn make_victim_dir(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("create a victim directory");
    let victim = dir.join("victim");
    fs::write(&victim, VICTIM).expect("write a victim file");
    let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let f = fs::File::options()
        .write(true)
        .open(&victim)
        .expect("open the victim");
    f.set_modified(old).expect("set the victim's mtime");
    fs::File::open(dir)
        .and_then(|d| d.set_modified(old))
        .expect("set the victim directory's mtime");
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    names: Vec<String>,
    dir: (u32, u32, i64),
    victim: (u32, u32, i64, Vec<u8>),
    victim_ino: u64,
}

/// The names in a directory, sorted.
fn entry_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn snapshot(dir: &Path) -> Snapshot {
    let names = entry_names(dir);
    let d = fs::symlink_metadata(dir).expect("stat a victim directory");
    let victim = dir.join("victim");
    let v = fs::symlink_metadata(&victim).expect("the victim is still there");
    Snapshot {
        names,
        dir: (d.mode(), d.uid(), d.mtime()),
        victim: (
            v.mode(),
            v.uid(),
            v.mtime(),
            // Never open a FIFO left in the victim's place: the read would block.
            if v.is_file() {
                fs::read(&victim).unwrap_or_default()
            } else {
                Vec::new()
            },
        ),
        victim_ino: v.ino(),
    }
}

/// Walks the layer without following links: no file in it may be a victim's inode. Returns
/// the bytes of file data in it (each inode once).
fn walk_layer(dir: &Path, victims: &[u64], seen: &mut HashSet<u64>) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut bytes = 0;
    for entry in entries.flatten() {
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        assert!(
            !victims.contains(&meta.ino()),
            "{} is a hard link to a file outside the layer",
            entry.path().display()
        );
        if meta.is_dir() {
            bytes += walk_layer(&entry.path(), victims, seen);
        } else if meta.is_file() && seen.insert(meta.ino()) {
            bytes += meta.len();
        }
    }
    bytes
}

/// Whether even a broken unpacker could only touch `ROOT` and [`HOST`] with this input.
fn safe_to_unpack(data: &[u8]) -> bool {
    let mut archive = tar::Archive::new(data);
    let Ok(entries) = archive.entries() else {
        return true;
    };
    let mut climbs = false;
    let mut escaping_links = false;
    for entry in entries {
        // The unpacker stops at the same bad entry.
        let Ok(entry) = entry else { break };
        let Ok(path) = entry.path() else { break };
        if path.is_absolute() && !under_host(&path) {
            return false;
        }
        if has_parent_dir(&path) {
            if !stays_in_root(&path) {
                return false;
            }
            climbs = true;
        }
        if let Ok(Some(target)) = entry.link_name() {
            if target.is_absolute() {
                if !under_host(&target) || has_parent_dir(&target) {
                    return false;
                }
                escaping_links = true;
            } else if let Ok(rest) = target.strip_prefix("../outside") {
                if has_parent_dir(rest) {
                    return false;
                }
                escaping_links = true;
            } else if has_parent_dir(&target) {
                return false;
            }
        }
    }
    // `link/../..` climbs from wherever the link points.
    !(climbs && escaping_links)
}

fn under_host(path: &Path) -> bool {
    path.starts_with(HOST) && !has_parent_dir(path)
}

fn has_parent_dir(path: &Path) -> bool {
    path.components().any(|c| c == Component::ParentDir)
}

/// Whether `path`, joined lexically to `ROOT/layer`, stays inside `ROOT`.
fn stays_in_root(path: &Path) -> bool {
    let mut depth = 1i64;
    for c in path.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

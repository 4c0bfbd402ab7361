//! Writes the files of a configMap, secret, downwardAPI or projected volume as the kubelet's
//! AtomicWriter does, so that a container never sees half an update:
//!
//! ```text
//! <root>/..2026_12_08_03_40_00.123456789/   the payload, written whole first
//! <root>/..data -> ..2026_12_08_03_40_00.123456789
//! <root>/<key>  -> ..data/<key>             one link per top-level name
//! ```
//!
//! An update writes a new timestamped directory, points a temporary link at it and renames
//! that over `..data` (rename(2) is atomic), then adds the new names' links, removes those of
//! names that are gone, and removes the old directory.
//!
//! Every name is resolved inside the root from directory fds with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` ([`crate::tree`]): no payload path, planted link or symlinked root
//! leads out of the volume.

use crate::tree::{self, is_dir, is_file, lstat_at, names, open_beneath, open_dir};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The link to the current payload directory.
pub const DATA_LINK: &str = "..data";
const DATA_TMP_LINK: &str = "..data_tmp";

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub data: Vec<u8>,
    /// Permission bits (`defaultMode` or the item's `mode`).
    pub mode: u32,
}

/// Relative path (`key`, or an item's `path`, which may have directories) to file.
pub type Payload = BTreeMap<String, FileEntry>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("volume file path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error(
        "volume directory {0} is not a directory of its own (a symlink or a file?); refusing to write through it"
    )]
    Root(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(Errno) -> WriteError {
    let path = path.to_path_buf();
    move |e| WriteError::Io {
        op,
        path,
        source: e.into(),
    }
}

/// Why `path` may not name a file of a volume, as the kubelet checks it: relative, no `..`
/// component, not starting with `..` (the writer's own names), no empty component.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("must not be empty");
    }
    if path.starts_with('/') {
        return Err("must be relative");
    }
    if path.starts_with("..") {
        return Err("must not start with '..'");
    }
    if path.len() > 4096 {
        return Err("is too long");
    }
    for part in path.split('/') {
        match part {
            "" => return Err("must not have empty components"),
            "." | ".." => return Err("must not have '.' or '..' components"),
            _ if part.contains('\0') => return Err("must not contain NUL"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks every path, and that no path is a directory of another (`a` and `a/b`).
fn check_payload(payload: &Payload) -> Result<(), WriteError> {
    let bad = |path: &str, reason| WriteError::BadPath {
        path: path.to_string(),
        reason,
    };
    for path in payload.keys() {
        check_path(path).map_err(|r| bad(path, r))?;
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() && payload.contains_key(&prefix) {
                return Err(bad(&prefix, "is both a file and a directory of the volume"));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
        }
    }
    Ok(())
}

/// Makes the files under `root` (an existing directory) what `payload` says. Returns
/// whether anything changed: an unchanged payload writes nothing.
pub fn write(root: &Path, payload: &Payload) -> Result<bool, WriteError> {
    check_payload(payload)?;
    let root_fd = match open_dir(root) {
        Ok(fd) => fd,
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(WriteError::Root(root.to_path_buf())),
        Err(e) => return Err(io_err("open", root)(e)),
    };
    let old = current_dir_name(&root_fd);
    if let Some(old) = &old
        && read_payload(&root_fd, old).as_ref() == Some(payload)
    {
        return Ok(false);
    }
    let new = make_timestamped_dir(&root_fd, root)?;
    let new_path = root.join(&new);
    let dir = open_beneath(root_fd.as_raw_fd(), &new, OFlag::O_DIRECTORY)
        .map_err(io_err("open", &new_path))?;
    for (path, file) in payload {
        write_file(&dir, path, file).map_err(io_err("write", &new_path.join(path)))?;
    }
    drop(dir);

    // The swap: a new link, renamed over the old one.
    let raw = Some(root_fd.as_raw_fd());
    match nix::unistd::unlinkat(raw, DATA_TMP_LINK, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io_err("remove", &root.join(DATA_TMP_LINK))(e)),
    }
    nix::unistd::symlinkat(new.as_os_str(), raw, DATA_TMP_LINK)
        .map_err(io_err("link", &root.join(DATA_TMP_LINK)))?;
    nix::fcntl::renameat(raw, DATA_TMP_LINK, raw, DATA_LINK)
        .map_err(io_err("rename over", &root.join(DATA_LINK)))?;

    // The names the containers see.
    let top: BTreeSet<&str> = payload
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p))
        .collect();
    for name in &top {
        let target = format!("{DATA_LINK}/{name}");
        match nix::fcntl::readlinkat(raw, *name) {
            Ok(t) if t == OsStr::new(&target) => continue,
            Ok(_) => {
                nix::unistd::unlinkat(raw, *name, UnlinkatFlags::NoRemoveDir)
                    .map_err(io_err("remove", &root.join(name)))?;
            }
            Err(Errno::ENOENT) => {}
            // Something that is not a link where a key's link belongs: not ours to replace.
            Err(e) => return Err(io_err("read the link", &root.join(name))(e)),
        }
        nix::unistd::symlinkat(target.as_str(), raw, *name)
            .map_err(io_err("link", &root.join(name)))?;
    }
    for name in names(&root_fd).map_err(io_err("read", root))? {
        let Some(s) = name.to_str() else { continue };
        if s.starts_with("..") || top.contains(s) {
            continue;
        }
        let is_our_link = nix::fcntl::readlinkat(raw, name.as_os_str())
            .is_ok_and(|t| t.to_string_lossy().starts_with(&format!("{DATA_LINK}/")));
        if is_our_link {
            nix::unistd::unlinkat(raw, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(io_err("remove", &root.join(&name)))?;
        }
    }
    if let Some(old) = old {
        for e in tree::remove_tree(&root.join(old)) {
            tracing::warn!(error = %e, "removing a volume's previous payload");
        }
    }
    Ok(true)
}

/// The timestamped directory `..data` points to, if it is one of ours.
fn current_dir_name(root: &OwnedFd) -> Option<OsString> {
    let target = nix::fcntl::readlinkat(Some(root.as_raw_fd()), DATA_LINK).ok()?;
    let s = target.to_str()?;
    (s.starts_with("..") && s != ".." && !s.contains('/')).then_some(target)
}

/// Creates `..<UTC time>.<nanoseconds>` (as the kubelet names it), a new name each call.
fn make_timestamped_dir(root: &OwnedFd, path: &Path) -> Result<OsString, WriteError> {
    let now = podd_api::jiff::Timestamp::now();
    let stamp = now.strftime("%Y_%m_%d_%H_%M_%S").to_string();
    let nanos = now.subsec_nanosecond();
    for n in 0..1000u32 {
        let name = OsString::from(format!("..{stamp}.{nanos:09}{n}"));
        match nix::sys::stat::mkdirat(
            Some(root.as_raw_fd()),
            name.as_os_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) => {
                // The umask may have narrowed it.
                let dir = open_beneath(root.as_raw_fd(), &name, OFlag::O_DIRECTORY)
                    .map_err(io_err("open", &path.join(&name)))?;
                nix::sys::stat::fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(0o755))
                    .map_err(io_err("chmod", &path.join(&name)))?;
                return Ok(name);
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(io_err("create", &path.join(&name))(e)),
        }
    }
    Err(io_err("create a payload directory in", path)(Errno::EEXIST))
}

/// Writes one file at `path` (checked) under `dir`, making its directories.
fn write_file(dir: &OwnedFd, path: &str, file: &FileEntry) -> Result<(), Errno> {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().ok_or(Errno::EINVAL)?;
    let mut cur = open_beneath(dir.as_raw_fd(), &OsString::from("."), OFlag::O_DIRECTORY)?;
    for part in parts {
        match nix::sys::stat::mkdirat(Some(cur.as_raw_fd()), part, Mode::from_bits_truncate(0o755))
        {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let next = open_beneath(cur.as_raw_fd(), &OsString::from(part), OFlag::O_DIRECTORY)?;
        nix::sys::stat::fchmod(next.as_raw_fd(), Mode::from_bits_truncate(0o755))?;
        cur = next;
    }
    let fd = nix::fcntl::openat(
        Some(cur.as_raw_fd()),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    // SAFETY: `openat` just returned this fd, and nothing else owns it.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(&file.data)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))?;
    nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(file.mode & 0o7777))?;
    Ok(())
}

/// The payload under the directory `name` of `root`, or None if it cannot be read whole
/// (anything but directories and regular files in it counts as unreadable).
pub fn read_payload(root: &OwnedFd, name: &OsStr) -> Option<Payload> {
    let dir = open_beneath(root.as_raw_fd(), &name.to_os_string(), OFlag::O_DIRECTORY).ok()?;
    let mut out = Payload::new();
    read_dir_into(&dir, "", &mut out, 0)?;
    Some(out)
}

fn read_dir_into(dir: &OwnedFd, prefix: &str, out: &mut Payload, depth: usize) -> Option<()> {
    if depth > tree::MAX_DEPTH {
        return None;
    }
    for name in names(dir).ok()? {
        let path = format!("{prefix}{}", name.to_str()?);
        let st = lstat_at(dir, &name).ok()?;
        if is_dir(&st) {
            let child = open_beneath(dir.as_raw_fd(), &name, OFlag::O_DIRECTORY).ok()?;
            read_dir_into(&child, &format!("{path}/"), out, depth + 1)?;
        } else if is_file(&st) {
            let fd = open_beneath(dir.as_raw_fd(), &name, OFlag::O_RDONLY).ok()?;
            let mut data = Vec::new();
            std::fs::File::from(fd).read_to_end(&mut data).ok()?;
            let mode = st.st_mode & !(SFlag::S_IFMT.bits());
            out.insert(path, FileEntry { data, mode });
        } else {
            return None;
        }
    }
    Some(())
}

/// The payload a volume shows now (through `..data`), for tests and checks.
pub fn current_payload(root: &Path) -> Option<Payload> {
    let fd = open_dir(root).ok()?;
    let name = current_dir_name(&fd)?;
    read_payload(&fd, &name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    fn file(s: &str, mode: u32) -> FileEntry {
        FileEntry {
            data: s.as_bytes().to_vec(),
            mode,
        }
    }

    fn payload(items: &[(&str, &str)]) -> Payload {
        items
            .iter()
            .map(|(p, d)| (p.to_string(), file(d, 0o644)))
            .collect()
    }

    fn entries(root: &Path) -> BTreeSet<String> {
        fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_kubelet_layout_and_an_update_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let first = payload(&[("a", "1"), ("b", "2"), ("dir/c", "3")]);
        assert!(write(root, &first).unwrap());
        let data1 = fs::read_link(root.join(DATA_LINK)).unwrap();
        assert!(data1.to_str().unwrap().starts_with("..20"), "{data1:?}");
        assert_eq!(
            fs::read_link(root.join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(
            fs::read_link(root.join("dir")).unwrap(),
            Path::new("..data/dir")
        );
        assert_eq!(fs::read_to_string(root.join("dir/c")).unwrap(), "3");
        assert_eq!(current_payload(root).as_ref(), Some(&first));
        // The same payload again changes nothing.
        assert!(!write(root, &first).unwrap());
        assert_eq!(fs::read_link(root.join(DATA_LINK)).unwrap(), data1);

        // An update: new content, "b" removed, "d" added, old directory gone.
        let second = payload(&[("a", "10"), ("d", "4"), ("dir/c", "3")]);
        assert!(write(root, &second).unwrap());
        let data2 = fs::read_link(root.join(DATA_LINK)).unwrap();
        assert_ne!(data1, data2);
        assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "10");
        assert!(
            fs::symlink_metadata(root.join("b")).is_err(),
            "a removed key vanishes"
        );
        let want: BTreeSet<String> = [DATA_LINK, "a", "d", "dir", data2.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(entries(root), want);
    }

    #[test]
    fn modes_are_per_file() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p: Payload = [
            ("s".to_string(), file("x", 0o400)),
            ("t".to_string(), file("y", 0o755)),
        ]
        .into();
        write(tmp.path(), &p).unwrap();
        let mode = |n: &str| {
            fs::metadata(tmp.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!((mode("s"), mode("t")), (0o400, 0o755));
        // A mode change alone is an update.
        let q: Payload = [
            ("s".to_string(), file("x", 0o440)),
            ("t".to_string(), file("y", 0o755)),
        ]
        .into();
        assert!(write(tmp.path(), &q).unwrap());
        assert_eq!(mode("s"), 0o440);
    }

    #[test]
    fn escaping_paths_and_symlinked_roots_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("vol");
        fs::create_dir(&root).unwrap();
        for bad in [
            "../x",
            "/etc/x",
            "a/../../x",
            "..data",
            "..x",
            "a//b",
            "",
            "./a",
        ] {
            let e = write(&root, &payload(&[(bad, "x")])).unwrap_err();
            assert!(matches!(e, WriteError::BadPath { .. }), "{bad}: {e}");
        }
        let e = write(&root, &payload(&[("a", "1"), ("a/b", "2")])).unwrap_err();
        assert!(matches!(e, WriteError::BadPath { .. }), "{e}");
        // The root itself a link to elsewhere.
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("link")).unwrap();
        let e = write(&tmp.path().join("link"), &payload(&[("a", "1")])).unwrap_err();
        assert!(matches!(e, WriteError::Root(_)), "{e}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        // A planted link where a key's directory goes is not followed out.
        write(&root, &payload(&[("a", "1")])).unwrap();
        let cur = fs::read_link(root.join(DATA_LINK)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(&cur).join("sub")).unwrap();
        // (The writer makes a new directory, so the planted link is simply dropped.)
        write(&root, &payload(&[("sub/f", "x")])).unwrap();
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(fs::read_to_string(root.join("sub/f")).unwrap(), "x");
        // A planted non-link where a key's link belongs is not replaced.
        fs::create_dir(root.join("k")).unwrap();
        assert!(write(&root, &payload(&[("k", "x")])).is_err());
    }

    proptest! {
        /// Any sequence of payloads: after each write the volume shows exactly that payload,
        /// its top-level links and nothing else, and nothing is written outside the root.
        #[test]
        fn every_update_shows_exactly_the_payload(
            payloads in proptest::collection::vec(
                proptest::collection::btree_map("[a-c]{1,2}(/[a-c]{1,2})?", "[a-z]{0,4}", 0..5), 1..5)
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("vol");
            fs::create_dir(&root).unwrap();
            for p in payloads {
                let p: Payload = p.into_iter().map(|(k, v)| (k, file(&v, 0o644))).collect();
                match write(&root, &p) {
                    Err(WriteError::BadPath { .. }) => continue, // "a" and "a/b" together
                    r => { r.unwrap(); }
                }
                prop_assert_eq!(current_payload(&root), Some(p.clone()));
                for (path, f) in &p {
                    prop_assert_eq!(fs::read(root.join(path)).unwrap(), f.data.clone());
                }
                let top: BTreeSet<String> = p.keys().map(|k| k.split('/').next().unwrap().to_string()).collect();
                let visible: BTreeSet<String> = entries(&root).into_iter().filter(|n| !n.starts_with("..")).collect();
                prop_assert_eq!(visible, top);
                let hidden = entries(&root).into_iter().filter(|n| n.starts_with("..")).count();
                prop_assert_eq!(hidden, 2, "..data and one payload directory");
            }
            prop_assert_eq!(entries(tmp.path()).len(), 1);
        }

        #[test]
        fn checked_paths_stay_inside(path in "[a-z./]{1,12}") {
            if check_path(&path).is_ok() {
                let joined = Path::new("/root").join(&path);
                prop_assert!(joined.starts_with("/root"));
                prop_assert!(!joined.components().any(|c| matches!(c, std::path::Component::ParentDir)));
            }
        }
    }
}

//! Walking directory trees that containers wrote into, safely: measuring an emptyDir's disk
//! usage and removing a pod's (or the node's) directories.
//!
//! Containers control everything below their volumes and rootfs upper directories, so every
//! walk here works from directory fds, never follows a symlink, and never crosses a mount
//! point: each child directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_XDEV)`, which the kernel refuses (`EXDEV`) when the name is a mount point,
//! bind mounts of the same filesystem included. A symlink to a host directory, or a host
//! directory mounted into the tree, is therefore never measured or removed through.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::UnlinkatFlags;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How deep a walk descends with open directory fds (one per level). Deeper subtrees are
/// moved up to the top directory before they are removed, and make a measurement incomplete.
pub const MAX_DEPTH: usize = 128;

/// One failure of a walk, naming the path and the operation.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct TreeError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn tree_err(op: &'static str, path: &Path, e: impl Into<io::Error>) -> TreeError {
    TreeError {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// What a directory tree holds on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes (`st_blocks * 512`), each hard-linked inode once, mounts skipped.
    pub bytes: u64,
    /// Inodes seen.
    pub entries: u64,
    /// False when the walk stopped early (more than the entry budget, or deeper than
    /// [`MAX_DEPTH`]): `bytes` is then a lower bound.
    pub complete: bool,
}

/// Opens `path` itself as a directory, refusing a symlink.
pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `open` just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the entry `name` of `dir` without following a symlink or crossing a mount point
/// (`EXDEV` when `name` is a mount point, `ELOOP` when it is a symlink).
pub(crate) fn open_beneath(dir: RawFd, name: &OsString, flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = openat2(dir, name.as_os_str(), how)?;
    // SAFETY: `openat2` just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The names in a directory, read in full before the caller changes it.
pub(crate) fn names(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    // `Dir` takes ownership of (and closes) its fd, so it gets a duplicate.
    // The duplicate shares the file offset: start from the first entry on every read.
    let dup = nix::unistd::dup(dir.as_raw_fd())?;
    nix::unistd::lseek(dup, 0, nix::unistd::Whence::SeekSet)?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut out = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(std::ffi::OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(out)
}

pub(crate) fn lstat_at(dir: &OwnedFd, name: &OsString) -> Result<FileStat, Errno> {
    fstatat(
        Some(dir.as_raw_fd()),
        name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

pub(crate) fn is_file(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// The disk usage of the tree at `dir`, as `du -x` counts it: allocated blocks of every
/// inode (hard links once), without following symlinks or entering mount points. At most
/// `max_entries` inodes are looked at, so the cost of one measurement is bounded.
pub fn disk_usage(dir: &Path, max_entries: u64) -> Result<Usage, TreeError> {
    let root = open_dir(dir).map_err(|e| tree_err("open", dir, e))?;
    let st = nix::sys::stat::fstat(root.as_raw_fd()).map_err(|e| tree_err("stat", dir, e))?;
    let mut walk = UsageWalk {
        usage: Usage {
            bytes: st.st_blocks as u64 * 512,
            entries: 1,
            complete: true,
        },
        max_entries,
        linked: HashSet::new(),
    };
    walk.dir(&root, dir, 1)?;
    Ok(walk.usage)
}

struct UsageWalk {
    usage: Usage,
    max_entries: u64,
    /// (device, inode) of every multiply-linked inode counted so far.
    linked: HashSet<(u64, u64)>,
}

impl UsageWalk {
    fn dir(&mut self, fd: &OwnedFd, path: &Path, depth: usize) -> Result<(), TreeError> {
        let names = match names(fd) {
            Ok(n) => n,
            // Removed while we looked: the container may delete as we measure.
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(tree_err("read the directory", path, e)),
        };
        for name in names {
            if self.usage.entries >= self.max_entries {
                self.usage.complete = false;
                return Ok(());
            }
            let st = match lstat_at(fd, &name) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(tree_err("stat", &path.join(&name), e)),
            };
            let dir = is_dir(&st);
            if !dir && st.st_nlink > 1 && !self.linked.insert((st.st_dev, st.st_ino)) {
                continue;
            }
            if dir {
                let child = match open_beneath(fd.as_raw_fd(), &name, OFlag::O_DIRECTORY) {
                    Ok(c) => c,
                    // A mount point (EXDEV), or replaced by a symlink or removed meanwhile.
                    Err(Errno::EXDEV | Errno::ELOOP | Errno::ENOENT | Errno::ENOTDIR) => {
                        continue;
                    }
                    Err(e) => return Err(tree_err("open", &path.join(&name), e)),
                };
                self.count(&st);
                if depth >= MAX_DEPTH {
                    self.usage.complete = false;
                    continue;
                }
                self.dir(&child, &path.join(&name), depth + 1)?;
            } else {
                self.count(&st);
            }
        }
        Ok(())
    }

    fn count(&mut self, st: &FileStat) {
        self.usage.entries += 1;
        self.usage.bytes = self.usage.bytes.saturating_add(st.st_blocks as u64 * 512);
    }
}

// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (linux/fs.h): the inode flags `chattr` changes.
nix::ioctl_read!(fs_ioc_getflags, b'f', 1, libc_long);
nix::ioctl_write_ptr!(fs_ioc_setflags, b'f', 2, libc_long);
#[allow(non_camel_case_types)]
type libc_long = std::os::raw::c_long;
const FS_IMMUTABLE_FL: libc_long = 0x10;
const FS_APPEND_FL: libc_long = 0x20;

/// Clears the immutable and append-only flags of an open file or directory (a container
/// with CAP_LINUX_IMMUTABLE may have set them); true when something was cleared.
fn clear_immutable(fd: &OwnedFd) -> bool {
    let mut flags: libc_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int-sized value into `flags`, which is a long.
    if unsafe { fs_ioc_getflags(fd.as_raw_fd(), &mut flags) }.is_err() {
        return false;
    }
    if flags & (FS_IMMUTABLE_FL | FS_APPEND_FL) == 0 {
        return false;
    }
    let cleared = flags & !(FS_IMMUTABLE_FL | FS_APPEND_FL);
    // SAFETY: FS_IOC_SETFLAGS reads one int-sized value from `cleared`, which lives on.
    unsafe { fs_ioc_setflags(fd.as_raw_fd(), &cleared) }.is_ok()
}

/// Removes `path` and everything below it, without following a symlink out of it or
/// descending into a mount point under it. It goes on past every failure (a busy mount
/// point, an immutable file it cannot clear) and returns all of them; an empty list means
/// `path` is gone. A missing `path` is not a failure; a symlink at `path` is removed itself.
pub fn remove_tree(path: &Path) -> Vec<TreeError> {
    let mut errors = Vec::new();
    let root = match open_dir(path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return errors,
        // A symlink or a file where a directory was expected: remove the name only.
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            if let Err(e) = std::fs::remove_file(path)
                && e.kind() != io::ErrorKind::NotFound
            {
                errors.push(tree_err("remove", path, e));
            }
            return errors;
        }
        Err(e) => {
            errors.push(tree_err("open", path, e));
            return errors;
        }
    };
    remove_contents(&root, path, &mut errors);
    if let Err(e) = std::fs::remove_dir(path) {
        let retried = e.raw_os_error() == Some(Errno::EPERM as i32)
            && clear_immutable(&root)
            && std::fs::remove_dir(path).is_ok();
        if !retried && e.kind() != io::ErrorKind::NotFound {
            errors.push(tree_err("remove", path, e));
        }
    }
    errors
}

/// Empties the directory `root` (whose path, for messages, is `path`). Subtrees deeper
/// than [`MAX_DEPTH`] are moved up into `root` and emptied in another pass, so any depth is
/// removed with a bounded number of open fds.
pub fn remove_contents(root: &OwnedFd, path: &Path, errors: &mut Vec<TreeError>) {
    let mut moved = 0u64;
    loop {
        let mut walk = RemoveWalk {
            root: root.as_raw_fd(),
            moved,
            errors,
        };
        walk.dir(root, path, 1);
        if walk.moved == moved {
            return;
        }
        moved = walk.moved;
    }
}

struct RemoveWalk<'a> {
    root: RawFd,
    moved: u64,
    errors: &'a mut Vec<TreeError>,
}

impl RemoveWalk<'_> {
    fn dir(&mut self, fd: &OwnedFd, path: &Path, depth: usize) {
        let names = match names(fd) {
            Ok(n) => n,
            Err(e) => {
                self.errors.push(tree_err("read the directory", path, e));
                return;
            }
        };
        for name in names {
            let child_path = path.join(&name);
            let st = match lstat_at(fd, &name) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    self.errors.push(tree_err("stat", &child_path, e));
                    continue;
                }
            };
            if is_dir(&st) {
                let child = match open_beneath(fd.as_raw_fd(), &name, OFlag::O_DIRECTORY) {
                    Ok(c) => c,
                    Err(Errno::ENOENT) => continue,
                    Err(Errno::EXDEV) => {
                        self.errors.push(tree_err(
                            "remove (a mount is still on it; not descending into it)",
                            &child_path,
                            Errno::EBUSY,
                        ));
                        continue;
                    }
                    Err(e) => {
                        self.errors.push(tree_err("open", &child_path, e));
                        continue;
                    }
                };
                if depth >= MAX_DEPTH {
                    // Moved up and removed in the next pass: no fd per level beyond this.
                    let to = OsString::from(format!(".podd-deep-{}", self.moved));
                    match nix::fcntl::renameat(
                        Some(fd.as_raw_fd()),
                        name.as_os_str(),
                        Some(self.root),
                        to.as_os_str(),
                    ) {
                        Ok(()) => self.moved += 1,
                        Err(e) => self.errors.push(tree_err("move up", &child_path, e)),
                    }
                    continue;
                }
                self.dir(&child, &child_path, depth + 1);
                self.unlink(
                    fd,
                    &name,
                    &child_path,
                    UnlinkatFlags::RemoveDir,
                    Some(&child),
                );
            } else {
                let file = is_file(&st)
                    .then(|| {
                        open_beneath(fd.as_raw_fd(), &name, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
                            .ok()
                    })
                    .flatten();
                self.unlink(
                    fd,
                    &name,
                    &child_path,
                    UnlinkatFlags::NoRemoveDir,
                    file.as_ref(),
                );
            }
        }
    }

    /// Unlinks `name` in `dir`; on EPERM clears the immutable and append-only flags of the
    /// entry and of the directory and tries once more.
    fn unlink(
        &mut self,
        dir: &OwnedFd,
        name: &OsString,
        path: &Path,
        flags: UnlinkatFlags,
        entry: Option<&OwnedFd>,
    ) {
        let once = || nix::unistd::unlinkat(Some(dir.as_raw_fd()), name.as_os_str(), flags);
        let result = match once() {
            Err(Errno::EPERM) => {
                let cleared = entry.is_some_and(clear_immutable) | clear_immutable(dir);
                if cleared { once() } else { Err(Errno::EPERM) }
            }
            r => r,
        };
        match result {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => self.errors.push(tree_err("remove", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn usage_counts_blocks_once_per_inode_and_never_follows_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("big"), vec![1u8; 1 << 20]).unwrap();
        let vol = tmp.path().join("vol");
        fs::create_dir_all(vol.join("a/b")).unwrap();
        fs::write(vol.join("a/b/f"), vec![1u8; 256 << 10]).unwrap();
        fs::hard_link(vol.join("a/b/f"), vol.join("a/f2")).unwrap();
        std::os::unix::fs::symlink(&outside, vol.join("link")).unwrap();
        // A sparse file allocates nothing for its hole.
        let sparse = fs::File::create(vol.join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        let u = disk_usage(&vol, 1000).unwrap();
        assert!(u.complete);
        assert!(u.bytes >= 256 << 10, "{u:?}");
        assert!(
            u.bytes < (256 << 10) + (64 << 10),
            "the hard link, symlink target or hole was counted: {u:?}"
        );
        assert_eq!(u.entries, 6, "the volume, a, a/b, f, link, sparse: {u:?}");
        let small = disk_usage(&vol, 3).unwrap();
        assert!(!small.complete);
    }

    #[test]
    fn remove_tree_never_follows_a_symlink_out() {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        fs::create_dir(&canary).unwrap();
        fs::write(canary.join("keep"), "host file").unwrap();
        let pod = tmp.path().join("pod");
        fs::create_dir_all(pod.join("x/y")).unwrap();
        std::os::unix::fs::symlink(&canary, pod.join("x/y/escape")).unwrap();
        std::os::unix::fs::symlink(canary.join("keep"), pod.join("keep-link")).unwrap();
        fs::write(pod.join("x/\n weird \u{1b}name"), "").unwrap();
        let errors = remove_tree(&pod);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!pod.exists());
        assert_eq!(
            fs::read_to_string(canary.join("keep")).unwrap(),
            "host file"
        );
        // A symlink given as the top is removed, its target kept.
        std::os::unix::fs::symlink(&canary, tmp.path().join("top")).unwrap();
        assert!(remove_tree(&tmp.path().join("top")).is_empty());
        assert!(canary.join("keep").exists());
        assert!(remove_tree(&tmp.path().join("missing")).is_empty());
    }

    #[test]
    fn remove_tree_removes_any_depth() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("deep");
        let mut p = top.clone();
        for _ in 0..(MAX_DEPTH * 2 + 7) {
            p.push("d");
        }
        // Deeper than PATH_MAX allows in one path: build it level by level.
        fs::create_dir_all(&top).unwrap();
        let mut fd = open_dir(&top).unwrap();
        for _ in 0..(MAX_DEPTH * 2 + 7) {
            nix::sys::stat::mkdirat(Some(fd.as_raw_fd()), "d", Mode::from_bits_truncate(0o755))
                .unwrap();
            fd = open_beneath(fd.as_raw_fd(), &OsString::from("d"), OFlag::O_DIRECTORY).unwrap();
        }
        let errors = remove_tree(&top);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!top.exists());
    }

    /// Sets the immutable flag, as `chattr +i` does.
    fn make_immutable(path: &Path) {
        let f = fs::File::open(path).unwrap();
        let fd = OwnedFd::from(f);
        let mut flags: libc_long = 0;
        // SAFETY: as in clear_immutable.
        unsafe { fs_ioc_getflags(fd.as_raw_fd(), &mut flags) }.unwrap();
        let set = flags | FS_IMMUTABLE_FL;
        // SAFETY: as in clear_immutable.
        unsafe { fs_ioc_setflags(fd.as_raw_fd(), &set) }.unwrap();
    }

    #[test]
    fn mounts_are_neither_measured_nor_removed_through() {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        fs::create_dir(&canary).unwrap();
        fs::write(canary.join("keep"), vec![1u8; 512 << 10]).unwrap();
        let pod = tmp.path().join("pod");
        fs::create_dir_all(pod.join("mnt")).unwrap();
        nix::mount::mount(
            Some(&canary),
            &pod.join("mnt"),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let u = disk_usage(&pod, 100).unwrap();
        let errors = remove_tree(&pod);
        let _ = nix::mount::umount2(&pod.join("mnt"), nix::mount::MntFlags::MNT_DETACH);
        assert!(u.bytes < 512 << 10, "the bind mount was measured: {u:?}");
        assert!(canary.join("keep").exists(), "removed through a bind mount");
        assert_eq!(
            errors.len(),
            2,
            "the mount point, then its parent: {errors:?}"
        );
        assert!(
            errors[0].to_string().contains("a mount is still on it"),
            "{errors:?}"
        );
        assert!(remove_tree(&pod).is_empty());
    }

    #[test]
    fn immutable_files_and_dirs_are_cleared_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = tmp.path().join("pod");
        fs::create_dir_all(pod.join("d")).unwrap();
        fs::write(pod.join("d/f"), "x").unwrap();
        make_immutable(&pod.join("d/f"));
        make_immutable(&pod.join("d"));
        assert!(fs::remove_file(pod.join("d/f")).is_err());
        let errors = remove_tree(&pod);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!pod.exists());
    }
}

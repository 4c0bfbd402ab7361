//! Unpacking one layer tar into a directory, in the form overlayfs stacks: OCI whiteouts become
//! overlay whiteouts (a 0:0 character device) and opaque markers (`trusted.overlay.opaque=y`).
//!
//! Safety: a layer is hostile input, and nothing in it may act on a host path.
//! - Every operation works relative to a directory fd of the layer root. Parent directories are
//!   opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, so the
//!   kernel refuses any path that leaves the root or passes through a symlink (a parent that is a
//!   symlink is an error, whatever it points at).
//! - The final component is acted on with `*at` calls that never follow it: files are created
//!   `O_CREAT|O_EXCL|O_NOFOLLOW`, and their owner, mode, xattrs and times are set through that fd;
//!   symlinks and device nodes are changed with `AT_SYMLINK_NOFOLLOW` or through an `O_PATH |
//!   O_NOFOLLOW` fd. An existing final component is removed (never followed) before it is written.
//! - Entry paths with `..` are refused; absolute paths are taken relative to the layer root.
//!   Hard links must name an earlier entry of the same layer (resolved the same way).
//! - Every header field is checked: an mtime, uid or gid out of range is an error, not a panic.
//! - [`UnpackLimits`] caps the bytes, entries and path length of one layer (gzip bombs).
//!
//! Symlink *targets* are kept as they are: they are resolved later inside the container's
//! rootfs, never here. Device nodes other than whiteouts are kept (some base images ship
//! `/dev/null`), and are harmless: the store is a root-only 0700 directory and container roots
//! are mounted `nodev`.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Resolution of a parent directory inside the layer: never above the root, never through any
/// symlink or magic link.
const IN_LAYER: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// What went wrong with one entry of a layer; the store wraps it with the image and layer names.
#[derive(Debug)]
pub struct LayerError(pub String);

impl LayerError {
    fn at(path: &Path, what: &str, e: impl std::fmt::Display) -> LayerError {
        LayerError(format!("{what} {}: {e}", path.display()))
    }
}

/// Caps on what one layer may unpack to. The defaults are generous for real images and stop
/// decompression bombs; [`crate::store::StoreLimits`] sets them per store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes of the uncompressed tar stream, and (separately) of file data written.
    pub max_bytes: u64,
    /// Tar entries.
    pub max_entries: u64,
    /// Bytes of one entry path or link target.
    pub max_path_len: u64,
}

impl UnpackLimits {
    pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;
    pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
    /// Linux's PATH_MAX.
    pub const DEFAULT_MAX_PATH_LEN: u64 = 4096;
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_path_len: Self::DEFAULT_MAX_PATH_LEN,
        }
    }
}

/// Which [`UnpackLimits`] field a layer went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Bytes,
    Entries,
    PathLen,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Bytes => "unpacked size",
            LimitKind::Entries => "entry count",
            LimitKind::PathLen => "path length",
        })
    }
}

/// Why an unpack failed: a bad entry, or a limit (the store names the limit and how to raise it).
#[derive(Debug)]
pub enum UnpackError {
    Entry(LayerError),
    Limit { kind: LimitKind, limit: u64 },
}

impl From<LayerError> for UnpackError {
    fn from(e: LayerError) -> Self {
        UnpackError::Entry(e)
    }
}

impl std::fmt::Display for UnpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnpackError::Entry(e) => f.write_str(&e.0),
            UnpackError::Limit { kind, limit } => {
                write!(f, "the layer's {kind} is over the limit of {limit}")
            }
        }
    }
}

/// Counts from one unpack, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Bytes of the uncompressed tar stream read.
    pub bytes: u64,
}

/// Unpacks the tar stream `reader` into the existing, empty directory `dest`, with the default
/// [`UnpackLimits`].
pub fn unpack_tar<R: Read>(reader: R, dest: &Path) -> Result<UnpackStats, LayerError> {
    unpack_tar_limited(reader, dest, &UnpackLimits::default()).map_err(|e| match e {
        UnpackError::Entry(e) => e,
        limit => LayerError(limit.to_string()),
    })
}

/// Unpacks the tar stream `reader` into the existing, empty directory `dest`, stopping at the
/// first limit of `limits` exceeded. On error, `dest` holds a partial layer: the caller removes it.
pub fn unpack_tar_limited<R: Read>(
    reader: R,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let counted = Rc::new(Cell::new(0u64));
    let over = Rc::new(Cell::new(false));
    let reader = CappedReader {
        inner: reader,
        counted: counted.clone(),
        over: over.clone(),
        max: limits.max_bytes,
    };
    let byte_limit = UnpackError::Limit {
        kind: LimitKind::Bytes,
        limit: limits.max_bytes,
    };
    let root = open_root(dest)?;
    let mut unpacker = Unpacker {
        root,
        limits: *limits,
        stats: UnpackStats::default(),
        dir_times: Vec::new(),
        written: 0,
    };
    let result = unpacker.run(reader);
    if over.get() {
        return Err(byte_limit);
    }
    result?;
    unpacker.stats.bytes = counted.get();
    Ok(unpacker.stats)
}

/// Counts the bytes of the tar stream and fails past `max` (a decompression bomb).
struct CappedReader<R> {
    inner: R,
    counted: Rc<Cell<u64>>,
    over: Rc<Cell<bool>>,
    max: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.counted.get().saturating_add(n as u64);
        self.counted.set(total);
        if total > self.max {
            self.over.set(true);
            return Err(io::Error::other(
                "the layer is over its unpacked size limit",
            ));
        }
        Ok(n)
    }
}

fn open_root(dest: &Path) -> Result<OwnedFd, LayerError> {
    rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::at(dest, "opening the layer directory", e))
}

struct Unpacker {
    root: OwnedFd,
    limits: UnpackLimits,
    stats: UnpackStats,
    /// Directories whose mtime is set at the end (writing into a directory bumps its mtime).
    dir_times: Vec<(PathBuf, i64)>,
    /// File data written so far (sparse entries can write more than the stream holds).
    written: u64,
}

impl Unpacker {
    fn run<R: Read>(&mut self, reader: R) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(reader);
        let mut saw_root = false;
        let entries = archive
            .entries()
            .map_err(|e| LayerError(format!("reading the tar stream: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| LayerError(format!("reading a tar entry: {e}")))?;
            self.stats.entries += 1;
            if self.stats.entries > self.limits.max_entries {
                return Err(UnpackError::Limit {
                    kind: LimitKind::Entries,
                    limit: self.limits.max_entries,
                });
            }
            let raw_path = entry
                .path()
                .map_err(|e| LayerError(format!("a tar entry has an unreadable path: {e}")))?
                .into_owned();
            self.check_path_len(&raw_path)?;
            let rel = clean_path(&raw_path)?;
            if rel.as_os_str().is_empty() {
                // The layer's own root ("./"): only its metadata matters.
                if entry.header().entry_type().is_dir() {
                    let meta = Meta::of(&entry, &raw_path)?;
                    meta.apply_to_fd(self.root.as_fd(), &raw_path)?;
                    self.dir_times.push((PathBuf::new(), meta.mtime));
                    saw_root = true;
                }
                continue;
            }
            self.entry(&mut entry, &raw_path, &rel)?;
        }
        if !saw_root {
            rustix::fs::fchmod(&self.root, Mode::from_raw_mode(0o755))
                .map_err(|e| LayerError(format!("setting the mode of the layer root: {e}")))?;
        }
        // Directory times last, deepest first, each re-opened inside the root.
        for (dir, mtime) in self.dir_times.iter().rev() {
            if let Ok(fd) = self.open_dir(dir, false) {
                let _ = rustix::fs::futimens(&fd, &times(*mtime));
            }
        }
        Ok(())
    }

    fn check_path_len(&self, p: &Path) -> Result<(), UnpackError> {
        if p.as_os_str().len() as u64 > self.limits.max_path_len {
            return Err(UnpackError::Limit {
                kind: LimitKind::PathLen,
                limit: self.limits.max_path_len,
            });
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw_path: &Path,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let name = rel.file_name().unwrap_or_default();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let name_str = name.to_string_lossy();
        if name_str == OPAQUE_MARKER {
            let dir = self.open_dir(parent_rel, true)?;
            rustix::fs::fsetxattr(&dir, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
                .map_err(|e| LayerError::at(parent_rel, "marking opaque", e))?;
            self.stats.opaque_dirs += 1;
            return Ok(());
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(
                    LayerError(format!("bad whiteout entry {}", raw_path.display())).into(),
                );
            }
            let dir = self.open_dir(parent_rel, true)?;
            let target = parent_rel.join(hidden);
            remove_existing(dir.as_fd(), OsStr::new(hidden), false, &target)?;
            rustix::fs::mknodat(
                &dir,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| LayerError::at(&target, "creating the whiteout", e))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        let dir = self.open_dir(parent_rel, true)?;
        let meta = Meta::of(entry, raw_path)?;
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        match kind {
            T::Directory => {
                remove_existing(dir.as_fd(), name, true, rel)?;
                match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(LayerError::at(rel, "creating", e).into()),
                }
                let fd = open_beneath(dir.as_fd(), name, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| LayerError::at(rel, "opening", e))?;
                meta.apply_to_fd(fd.as_fd(), rel)?;
                apply_xattrs(fd.as_fd(), entry, rel)?;
                self.dir_times.push((rel.to_path_buf(), meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_existing(dir.as_fd(), name, false, rel)?;
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| LayerError::at(rel, "creating", e))?;
                let mut file = File::from(fd);
                let budget = self.limits.max_bytes.saturating_sub(self.written);
                let n = copy_capped(entry, &mut file, budget)
                    .map_err(|e| LayerError::at(rel, "writing", e))?;
                self.written += n;
                if self.written > self.limits.max_bytes {
                    return Err(UnpackError::Limit {
                        kind: LimitKind::Bytes,
                        limit: self.limits.max_bytes,
                    });
                }
                let declared = entry.size();
                if kind != T::GNUSparse && n != declared {
                    return Err(LayerError(format!(
                        "entry {} declares {declared} bytes but the layer holds {n} (truncated or malformed)",
                        raw_path.display()
                    ))
                    .into());
                }
                meta.apply_to_fd(file.as_fd(), rel)?;
                apply_xattrs(file.as_fd(), entry, rel)?;
                rustix::fs::futimens(&file, &times(meta.mtime))
                    .map_err(|e| LayerError::at(rel, "setting times of", e))?;
            }
            T::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| LayerError(format!("symlink {}: {e}", raw_path.display())))?
                    .ok_or_else(|| {
                        LayerError(format!("symlink {} has no target", raw_path.display()))
                    })?;
                self.check_path_len(&link)?;
                remove_existing(dir.as_fd(), name, false, rel)?;
                rustix::fs::symlinkat(link.as_os_str(), &dir, name)
                    .map_err(|e| LayerError::at(rel, "creating the symlink", e))?;
                rustix::fs::chownat(
                    &dir,
                    name,
                    Some(rustix::fs::Uid::from_raw(meta.uid)),
                    Some(rustix::fs::Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| LayerError::at(rel, "chown", e))?;
                let _ = rustix::fs::utimensat(
                    &dir,
                    name,
                    &times(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
            }
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| LayerError(format!("hard link {}: {e}", raw_path.display())))?
                    .ok_or_else(|| {
                        LayerError(format!("hard link {} has no target", raw_path.display()))
                    })?;
                self.check_path_len(&link)?;
                let source_rel = clean_path(&link)?;
                let hint = |e: &dyn std::fmt::Display| {
                    LayerError(format!(
                        "hard link {} -> {}: {e} (a hard link must point at an earlier entry of the same layer)",
                        rel.display(),
                        source_rel.display()
                    ))
                };
                let source_name = source_rel
                    .file_name()
                    .ok_or_else(|| hint(&"no file name"))?;
                let source_dir = self
                    .open_dir(source_rel.parent().unwrap_or(Path::new("")), false)
                    .map_err(|e| hint(&e.0))?;
                remove_existing(dir.as_fd(), name, false, rel)?;
                // Flags 0: a source that is a symlink is linked itself, never followed.
                rustix::fs::linkat(&source_dir, source_name, &dir, name, AtFlags::empty())
                    .map_err(|e| hint(&e))?;
            }
            T::Char | T::Block | T::Fifo => {
                remove_existing(dir.as_fd(), name, false, rel)?;
                let header = entry.header();
                let (file_type, dev) = match kind {
                    T::Char | T::Block => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == T::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                    _ => (FileType::Fifo, 0),
                };
                rustix::fs::mknodat(&dir, name, file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| LayerError::at(rel, "creating the device node", e))?;
                // An O_PATH fd of the node itself: chown/chmod through it never follow a link.
                let fd = open_beneath(dir.as_fd(), name, OFlags::PATH)
                    .map_err(|e| LayerError::at(rel, "opening", e))?;
                meta.apply_to_fd(fd.as_fd(), rel)?;
            }
            // Metadata-only records (pax globals, GNU long-name helpers the tar crate already
            // applied) carry no file.
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => {
                return Err(LayerError(format!(
                    "entry {} has the unsupported tar type {other:?}",
                    raw_path.display()
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Opens the directory `rel` of the layer (creating missing ones, with mode 0755, when
    /// `create` is set: tars may omit parent entries). Refuses a path through any symlink.
    fn open_dir(&self, rel: &Path, create: bool) -> Result<OwnedFd, LayerError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        if rel.as_os_str().is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|e| LayerError(format!("duplicating the layer root fd: {e}")));
        }
        match open_beneath(self.root.as_fd(), rel.as_os_str(), flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(e) => return Err(dir_error(self.root.as_fd(), rel, e)),
        }
        // Walk one component at a time, creating what is missing.
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| LayerError(format!("duplicating the layer root fd: {e}")))?;
        let mut done = PathBuf::new();
        for c in rel.components() {
            done.push(c);
            let name = c.as_os_str();
            let next = match open_beneath(cur.as_fd(), name, flags) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(LayerError::at(&done, "creating", e)),
                    }
                    let fd = open_beneath(cur.as_fd(), name, flags)
                        .map_err(|e| dir_error(self.root.as_fd(), rel, e))?;
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                        .map_err(|e| LayerError::at(&done, "setting the mode of", e))?;
                    fd
                }
                Err(e) => return Err(dir_error(self.root.as_fd(), rel, e)),
            };
            cur = next;
        }
        Ok(cur)
    }
}

/// `openat2` of `path` below `dir`, never leaving it and never following a symlink.
fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &(impl AsRef<OsStr> + ?Sized),
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let path = path.as_ref();
    loop {
        match rustix::fs::openat2(
            dir,
            path,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            IN_LAYER,
        ) {
            // The kernel asks for a retry when a rename raced with the lookup.
            Err(Errno::AGAIN) => continue,
            other => return other,
        }
    }
}

fn dir_error(root: BorrowedFd<'_>, rel: &Path, e: Errno) -> LayerError {
    if !matches!(e, Errno::LOOP | Errno::XDEV | Errno::NOTDIR) {
        return LayerError::at(rel, "opening the directory", e);
    }
    // Name the first component that is not a real directory (for the message only: each
    // prefix stat'ed here has only real directories before it).
    let mut prefix = PathBuf::new();
    for c in rel.components() {
        prefix.push(c);
        match rustix::fs::statat(root, &prefix, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                return LayerError(format!(
                    "entry below {} would be written through a symlink; refusing (it could escape the layer)",
                    prefix.display()
                ));
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            _ => break,
        }
    }
    LayerError(format!(
        "{} is not a directory but has entries below it",
        prefix.display()
    ))
}

/// Owner, mode and mtime of an entry, checked: out-of-range values are errors, never panics.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
}

impl Meta {
    fn of<R: Read>(entry: &tar::Entry<'_, R>, path: &Path) -> Result<Meta, LayerError> {
        let h = entry.header();
        // u32::MAX is chown's "leave unchanged", never a real id.
        let id = |v: io::Result<u64>, what: &str| {
            v.map_err(|e| LayerError::at(path, &format!("reading the {what} of"), e))
                .and_then(|v| {
                    u32::try_from(v)
                        .ok()
                        .filter(|v| *v != u32::MAX)
                        .ok_or_else(|| {
                            LayerError::at(
                                path,
                                &format!("the {what} of"),
                                format!("{v} is out of range"),
                            )
                        })
                })
        };
        let mtime = h
            .mtime()
            .map_err(|e| LayerError::at(path, "reading the mtime of", e))?;
        let mtime = i64::try_from(mtime).map_err(|_| {
            LayerError::at(path, "the mtime of", format!("{mtime} is out of range"))
        })?;
        Ok(Meta {
            uid: id(h.uid(), "uid")?,
            gid: id(h.gid(), "gid")?,
            mode: h
                .mode()
                .map_err(|e| LayerError::at(path, "reading the mode of", e))?
                & 0o7777,
            mtime,
        })
    }

    /// chown then chmod (chown clears setuid/setgid bits) through `fd`, which is the inode
    /// itself (a real fd or an `O_PATH` one), so no symlink can redirect either call.
    fn apply_to_fd(&self, fd: BorrowedFd<'_>, path: &Path) -> Result<(), LayerError> {
        rustix::fs::chownat(
            fd,
            "",
            Some(rustix::fs::Uid::from_raw(self.uid)),
            Some(rustix::fs::Gid::from_raw(self.gid)),
            AtFlags::EMPTY_PATH,
        )
        .map_err(|e| LayerError::at(path, "chown", e))?;
        let mode = Mode::from_raw_mode(self.mode);
        match rustix::fs::fchmod(fd, mode) {
            Ok(()) => Ok(()),
            // An O_PATH fd (device nodes, FIFOs) cannot fchmod; its /proc/self/fd magic link
            // names exactly that inode.
            Err(Errno::BADF) => rustix::fs::chmod(
                format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
                mode,
            )
            .map_err(|e| LayerError::at(path, "chmod", e)),
            Err(e) => Err(LayerError::at(path, "chmod", e)),
        }
    }
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Copies at most `budget` bytes (plus one, to detect going over) from `from` into `to`.
fn copy_capped(from: &mut impl Read, to: &mut impl Write, budget: u64) -> io::Result<u64> {
    io::copy(&mut from.take(budget.saturating_add(1)), to)
}

/// Removes whatever is at `name` in `dir` (never following a symlink); keeps a directory if
/// `keep_dir`.
fn remove_existing(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    keep_dir: bool,
    rel: &Path,
) -> Result<(), LayerError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            if !keep_dir {
                // pathrs removes the tree inside `dir` without ever following a link out.
                pathrs::RootRef::from_fd(dir)
                    .remove_all(name)
                    .map_err(|e| LayerError::at(rel, "replacing", e))?;
            }
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty())
            .map_err(|e| LayerError::at(rel, "replacing", e))?,
        Err(Errno::NOENT) => {}
        Err(e) => return Err(LayerError::at(rel, "checking", e)),
    }
    Ok(())
}

/// Applies `SCHILY.xattr.*` pax records (file capabilities, for example) through `fd`.
fn apply_xattrs<R: Read>(
    fd: BorrowedFd<'_>,
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
) -> Result<(), LayerError> {
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| LayerError::at(path, "reading pax records of", e))?
    else {
        return Ok(());
    };
    for ext in exts {
        let ext = ext.map_err(|e| LayerError::at(path, "reading pax records of", e))?;
        if let Ok(key) = ext.key()
            && let Some(name) = key.strip_prefix("SCHILY.xattr.")
        {
            // trusted.* (overlay's own metadata among them) is never taken from an image: a
            // layer could otherwise forge overlay redirects or opaque markers.
            if name.starts_with("trusted.") {
                tracing::warn!(path = %path.display(), xattr = name, "ignoring a trusted.* xattr from a layer");
                continue;
            }
            rustix::fs::fsetxattr(fd, name, ext.value_bytes(), rustix::fs::XattrFlags::empty())
                .map_err(|e| LayerError::at(path, &format!("setting xattr {name} on"), e))?;
        }
    }
    Ok(())
}

/// The entry path relative to the layer root: leading `/` and `.` dropped; `..` refused.
pub fn clean_path(path: &Path) -> Result<PathBuf, LayerError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(LayerError(format!(
                    "entry {} contains \"..\" (path traversal); refusing to unpack it",
                    path.display()
                )));
            }
            Component::Prefix(_) => {
                return Err(LayerError(format!(
                    "entry {} has a bad path",
                    path.display()
                )));
            }
        }
    }
    if out.as_os_str().as_bytes().contains(&0) {
        return Err(LayerError(format!(
            "entry {} has a NUL byte in its path",
            path.display()
        )));
    }
    Ok(out)
}

/// Reads one xattr of `path` (not following symlinks); None if it is absent.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// True if `path` is an overlay whiteout (a 0:0 character device).
pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

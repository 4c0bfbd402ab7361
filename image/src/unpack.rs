//! Unpacking one layer tar into a directory, in the form overlayfs stacks: OCI whiteouts become
//! overlay whiteouts (a 0:0 character device) and opaque markers (`trusted.overlay.opaque=y`).
//!
//! Safety: entry paths with `..` are refused, and no write ever goes through a symlink (a parent
//! that is a symlink is an error; an existing final component is removed before writing), so an
//! entry can never land outside the layer directory. Symlink *targets* are kept as they are: they
//! are resolved later inside the container's rootfs, never here.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use nix::sys::stat::{Mode, SFlag};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What went wrong with one entry of a layer; the store wraps it with the image and layer names.
#[derive(Debug)]
pub struct LayerError(pub String);

impl LayerError {
    fn at(path: &Path, what: &str, e: impl std::fmt::Display) -> LayerError {
        LayerError(format!("{what} {}: {e}", path.display()))
    }
}

/// Counts from one unpack, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
}

/// Unpacks the tar stream `reader` into the existing, empty directory `dest`.
pub fn unpack_tar<R: Read>(reader: R, dest: &Path) -> Result<UnpackStats, LayerError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let mut saw_root = false;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
        .map_err(|e| LayerError::at(dest, "setting the mode of", e))?;
    let entries = archive
        .entries()
        .map_err(|e| LayerError(format!("reading the tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| LayerError(format!("reading a tar entry: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| LayerError(format!("a tar entry has an unreadable path: {e}")))?
            .into_owned();
        let rel = clean_path(&raw_path)?;
        stats.entries += 1;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            // The layer's own root ("./"): only its metadata matters.
            if kind.is_dir() {
                apply_owner_mode(dest, &entry, false)?;
                saw_root = true;
            }
            continue;
        }
        let name = rel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        if name == OPAQUE_MARKER {
            ensure_dirs(dest, parent_rel, true)?;
            let dir = dest.join(parent_rel);
            set_xattr(&dir, OPAQUE_XATTR, b"y")
                .map_err(|e| LayerError::at(&dir, "marking opaque", e))?;
            stats.opaque_dirs += 1;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(LayerError(format!(
                    "bad whiteout entry {}",
                    raw_path.display()
                )));
            }
            ensure_dirs(dest, parent_rel, true)?;
            let target = dest.join(parent_rel).join(hidden);
            remove_existing(&target, false)?;
            nix::sys::stat::mknod(
                &target,
                SFlag::S_IFCHR,
                Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|e| LayerError::at(&target, "creating the whiteout", e))?;
            stats.whiteouts += 1;
            continue;
        }
        ensure_dirs(dest, parent_rel, true)?;
        let target = dest.join(&rel);
        let mtime = entry.header().mtime().unwrap_or(0);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                remove_existing(&target, true)?;
                if !target.is_dir() {
                    fs::create_dir(&target).map_err(|e| LayerError::at(&target, "creating", e))?;
                }
                apply_owner_mode(&target, &entry, false)?;
                apply_xattrs(&target, &mut entry)?;
                dir_times.push((target, mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_existing(&target, false)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(|e| LayerError::at(&target, "creating", e))?;
                io::copy(&mut entry, &mut file)
                    .map_err(|e| LayerError::at(&target, "writing", e))?;
                apply_owner_mode(&target, &entry, false)?;
                apply_xattrs(&target, &mut entry)?;
                set_file_mtime(&file, mtime)
                    .map_err(|e| LayerError::at(&target, "setting times of", e))?;
            }
            T::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| LayerError(format!("symlink {}: {e}", raw_path.display())))?
                    .ok_or_else(|| {
                        LayerError(format!("symlink {} has no target", raw_path.display()))
                    })?;
                remove_existing(&target, false)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| LayerError::at(&target, "creating the symlink", e))?;
                apply_owner_mode(&target, &entry, true)?;
                set_link_mtime(&target, mtime);
            }
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| LayerError(format!("hard link {}: {e}", raw_path.display())))?
                    .ok_or_else(|| {
                        LayerError(format!("hard link {} has no target", raw_path.display()))
                    })?;
                let source_rel = clean_path(&link)?;
                ensure_dirs(dest, source_rel.parent().unwrap_or(Path::new("")), false)?;
                let source = dest.join(&source_rel);
                remove_existing(&target, false)?;
                fs::hard_link(&source, &target).map_err(|e| {
                    LayerError(format!(
                        "hard link {} -> {}: {e} (a hard link must point at an earlier entry of the same layer)",
                        rel.display(),
                        source_rel.display()
                    ))
                })?;
            }
            T::Char | T::Block | T::Fifo => {
                remove_existing(&target, false)?;
                let header = entry.header();
                let (flag, dev) = match kind {
                    T::Char | T::Block => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let flag = if kind == T::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (flag, nix::sys::stat::makedev(major.into(), minor.into()))
                    }
                    _ => (SFlag::S_IFIFO, 0),
                };
                nix::sys::stat::mknod(&target, flag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| LayerError::at(&target, "creating the device node", e))?;
                apply_owner_mode(&target, &entry, false)?;
            }
            // Metadata-only records (pax globals, GNU long-name helpers the tar crate already
            // applied) carry no file.
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => {
                return Err(LayerError(format!(
                    "entry {} has the unsupported tar type {other:?}",
                    raw_path.display()
                )));
            }
        }
    }
    if !saw_root {
        fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
            .map_err(|e| LayerError::at(dest, "setting the mode of", e))?;
    }
    // Directory times last: writing into a directory bumps its mtime.
    for (dir, mtime) in dir_times.iter().rev() {
        if let Ok(f) = File::open(dir) {
            let _ = set_file_mtime(&f, *mtime);
        }
    }
    Ok(stats)
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
    Ok(out)
}

/// Makes sure every directory of `rel` under `root` exists and is a real directory, never a
/// symlink, creating missing ones (tars may omit parent entries) when `create` is set.
fn ensure_dirs(root: &Path, rel: &Path, create: bool) -> Result<(), LayerError> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(LayerError(format!(
                    "entry below {} would be written through a symlink; refusing (it could escape the layer)",
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                )));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(LayerError(format!(
                    "{} is not a directory but has entries below it",
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&cur).map_err(|e| LayerError::at(&cur, "creating", e))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                    .map_err(|e| LayerError::at(&cur, "setting the mode of", e))?;
            }
            Err(e) => return Err(LayerError::at(&cur, "checking", e)),
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (never following a symlink); keeps a directory if `keep_dir`.
fn remove_existing(path: &Path, keep_dir: bool) -> Result<(), LayerError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if !keep_dir {
                fs::remove_dir_all(path).map_err(|e| LayerError::at(path, "replacing", e))?;
            }
        }
        Ok(_) => fs::remove_file(path).map_err(|e| LayerError::at(path, "replacing", e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LayerError::at(path, "checking", e)),
    }
    Ok(())
}

fn apply_owner_mode<R: Read>(
    path: &Path,
    entry: &tar::Entry<'_, R>,
    is_link: bool,
) -> Result<(), LayerError> {
    let header = entry.header();
    let uid = header
        .uid()
        .map_err(|e| LayerError::at(path, "reading the uid of", e))?;
    let gid = header
        .gid()
        .map_err(|e| LayerError::at(path, "reading the gid of", e))?;
    let (uid, gid) = (
        u32::try_from(uid).map_err(|e| LayerError::at(path, "uid of", e))?,
        u32::try_from(gid).map_err(|e| LayerError::at(path, "gid of", e))?,
    );
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| LayerError::at(path, "chown", e))?;
    if !is_link {
        // After chown, which clears setuid/setgid bits.
        let mode = header
            .mode()
            .map_err(|e| LayerError::at(path, "reading the mode of", e))?
            & 0o7777;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| LayerError::at(path, "chmod", e))?;
    }
    Ok(())
}

/// Applies `SCHILY.xattr.*` pax records (file capabilities, for example).
fn apply_xattrs<R: Read>(path: &Path, entry: &mut tar::Entry<'_, R>) -> Result<(), LayerError> {
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
            set_xattr(path, name, ext.value_bytes())
                .map_err(|e| LayerError::at(path, &format!("setting xattr {name} on"), e))?;
        }
    }
    Ok(())
}

pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated and live across the call; value is a valid slice
    // whose length is passed alongside it.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads one xattr of `path` (not following symlinks); None if it is absent.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: the strings are NUL-terminated; buf is writable for buf.len() bytes.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

fn set_file_mtime(file: &File, mtime: u64) -> io::Result<()> {
    let t = UNIX_EPOCH + Duration::from_secs(mtime);
    file.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
}

fn set_link_mtime(path: &Path, mtime: u64) {
    let ts = nix::sys::time::TimeSpec::new(i64::try_from(mtime).unwrap_or(0), 0);
    let _ = nix::sys::stat::utimensat(
        None,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// True if `path` is an overlay whiteout (a 0:0 character device).
pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fs::symlink_metadata(path)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

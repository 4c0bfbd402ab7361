//! The container's root filesystem: propagation, the spec's mounts, /dev, pivot_root, masked
//! and read-only paths. Runs in the container's init process, inside its mount namespace.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{chdir, fchdir, pivot_root};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::error::{Error, Result, io_err, sys_err};

/// Mount flags and the data string from OCI mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount (or the bind remount).
    pub flags: MsFlags,
    /// Flags cleared by options such as "rw" or "suid".
    pub cleared: MsFlags,
    /// Propagation flags applied after mounting.
    pub propagation: Vec<MsFlags>,
    /// Options passed to the filesystem.
    pub data: Vec<String>,
}

/// Parse OCI mount options (pure; unit-tested).
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        cleared: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
    };
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation
                    .push(propagation_flag(opt).expect("listed above"));
                continue;
            }
            // Options of newer mount APIs that the classic mount(2) cannot express are ignored.
            "idmap" | "ridmap" | "tmpcopyup" => continue,
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags.insert(set);
        o.flags.remove(clear);
        o.cleared.insert(clear);
    }
    o
}

/// The flag for a propagation name such as "rslave".
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Join `path` under `root`, resolving symlinks as if `root` were `/`, so that no link in the
/// rootfs can point a mount outside of it.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.components().next() {
            None
            | Some(Component::RootDir)
            | Some(Component::CurDir)
            | Some(Component::Prefix(_)) => continue,
            Some(Component::ParentDir) => {
                resolved.pop();
                continue;
            }
            Some(Component::Normal(_)) => {}
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(Error::InvalidSpec(format!(
                        "too many symlinks resolving {}",
                        path.display()
                    )));
                }
                let target = fs::read_link(&full).map_err(io_err("readlink", full.clone()))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    pending.push(PathBuf::from(c.as_os_str()));
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn do_mount(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, dst, fstype, flags, data).map_err(sys_err(format!(
        "mount {} on {} (type {}, flags {flags:?}, data {:?})",
        src.map(|s| s.display().to_string()).unwrap_or_default(),
        dst.display(),
        fstype.unwrap_or("none"),
        data.unwrap_or("")
    )))
}

/// The flags of the mount holding `path` (needed when remounting a bind mount read-only).
fn current_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (a, b) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(a) {
            out.insert(b);
        }
    }
    out
}

/// Prepare the mount namespace: make `/` slave (or the spec's propagation) so nothing leaks back
/// to the host, and bind the rootfs onto itself so it is a mount point for pivot_root.
pub fn prepare(rootfs: &Path, propagation: Option<&str>) -> Result<()> {
    let flags = match propagation.and_then(propagation_flag) {
        // A shared root would make pivot_root fail; it is applied after pivot instead.
        Some(f) if !f.contains(MsFlags::MS_SHARED) => f,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    do_mount(None, Path::new("/"), None, flags, None)?;
    do_mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

fn mkdir_all(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_err("create mount point", dir))
}

fn ensure_target(dst: &Path, is_file: bool) -> Result<()> {
    if dst.exists() {
        return Ok(());
    }
    if is_file {
        if let Some(parent) = dst.parent() {
            mkdir_all(parent)?;
        }
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dst)
            .map_err(io_err("create mount point", dst))?;
    } else {
        mkdir_all(dst)?;
    }
    Ok(())
}

/// Mount one entry of `spec.mounts` under `rootfs`.
pub fn mount_one(rootfs: &Path, m: &Mount) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    let dst = resolve_in_root(rootfs, m.destination())?;
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if opts.flags.contains(MsFlags::MS_BIND) || typ == "bind" {
        let src = m.source().as_ref().ok_or_else(|| {
            Error::InvalidSpec(format!(
                "bind mount on {} has no source",
                m.destination().display()
            ))
        })?;
        let meta = fs::metadata(src).map_err(io_err("bind mount source", src))?;
        ensure_target(&dst, !meta.is_dir())?;
        let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        do_mount(Some(src), &dst, None, bind, None)?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            let flags = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | extra
                | (current_flags(&dst) - opts.cleared);
            do_mount(None, &dst, None, flags, None)?;
        }
    } else {
        ensure_target(&dst, false)?;
        let fstype = match typ {
            "" => {
                return Err(Error::InvalidSpec(format!(
                    "mount on {} has no type",
                    m.destination().display()
                )));
            }
            "cgroup" => "cgroup2",
            t => t,
        };
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(fstype));
        let r = do_mount(Some(&src), &dst, Some(fstype), opts.flags, data);
        match r {
            // mqueue and sysfs need namespaces they may not own (a joined netns in a userns):
            // fall back to a bind of the host's, as runc does for sysfs.
            Err(Error::Sys {
                source: nix::Error::EPERM,
                ..
            }) if fstype == "sysfs" || fstype == "mqueue" => {
                let host = if fstype == "sysfs" {
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                do_mount(
                    Some(Path::new(host)),
                    &dst,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                let flags =
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | opts.flags | current_flags(&dst);
                do_mount(None, &dst, None, flags, None)?;
            }
            r => r?,
        }
    }
    for p in &opts.propagation {
        do_mount(None, &dst, None, *p, None)?;
    }
    Ok(())
}

/// The devices every container gets in a fresh /dev.
pub fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
}

fn make_device(
    rootfs: &Path,
    path: &Path,
    typ: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    bind: bool,
) -> Result<()> {
    let dst = resolve_in_root(rootfs, path)?;
    if dst.exists() {
        return Ok(());
    }
    if bind {
        // In a user namespace mknod is refused: bind the host's node instead.
        ensure_target(&dst, true)?;
        return do_mount(Some(path), &dst, None, MsFlags::MS_BIND, None);
    }
    if let Some(parent) = dst.parent() {
        mkdir_all(parent)?;
    }
    mknod(
        &dst,
        typ,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    )
    .map_err(sys_err(format!("mknod {}", dst.display())))
}

/// Create the spec's devices, and when /dev is a fresh mount the default ones and links.
pub fn create_devices(
    rootfs: &Path,
    spec_devices: &[LinuxDevice],
    fresh_dev: bool,
    in_userns: bool,
) -> Result<()> {
    for d in spec_devices {
        let typ = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => continue,
        };
        make_device(
            rootfs,
            d.path(),
            typ,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            in_userns,
        )?;
        if let (Some(uid), Some(gid)) = (d.uid(), d.gid()) {
            let dst = resolve_in_root(rootfs, d.path())?;
            let _ = nix::unistd::chown(&dst, Some(uid.into()), Some(gid.into()));
        }
    }
    if !fresh_dev {
        return Ok(());
    }
    for (name, major, minor) in default_devices() {
        make_device(
            rootfs,
            &Path::new("/dev").join(name),
            SFlag::S_IFCHR,
            major,
            minor,
            0o666,
            in_userns,
        )?;
    }
    let dev = rootfs.join("dev");
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("/proc/kcore", "core"),
    ];
    if dev.join("pts/ptmx").exists() {
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        let link = dev.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(target, &link).map_err(io_err("symlink", link.clone()))?;
        }
    }
    Ok(())
}

/// Switch the root to `rootfs` with pivot_root(".", "."), then detach the old root.
pub fn pivot(rootfs: &Path) -> Result<()> {
    let new_root = open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys_err(format!("open {}", rootfs.display())))?;
    let old_root = open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys_err("open /"))?;
    fchdir(new_root).map_err(sys_err("fchdir to the rootfs"))?;
    pivot_root(".", ".").map_err(sys_err(format!("pivot_root to {}", rootfs.display())))?;
    fchdir(old_root).map_err(sys_err("fchdir to the old root"))?;
    // The old root must not propagate the unmount back to the host.
    do_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys_err("detach the old root"))?;
    chdir("/").map_err(sys_err("chdir /"))?;
    let _ = nix::unistd::close(new_root);
    let _ = nix::unistd::close(old_root);
    Ok(())
}

/// Without a mount namespace there is nothing to pivot: chroot instead.
pub fn chroot(rootfs: &Path) -> Result<()> {
    nix::unistd::chroot(rootfs).map_err(sys_err(format!("chroot {}", rootfs.display())))?;
    chdir("/").map_err(sys_err("chdir /"))
}

/// Hide each path: /dev/null over files, an empty read-only tmpfs over directories.
pub fn mask_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let r = if meta.is_dir() {
            do_mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )
        } else {
            do_mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )
        };
        r?;
    }
    Ok(())
}

/// Make each path read-only with a recursive bind remount.
pub fn readonly_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        do_mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_REC
            | current_flags(path);
        do_mount(None, path, None, flags, None)?;
    }
    Ok(())
}

/// Remount `/` read-only.
pub fn readonly_root() -> Result<()> {
    let flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | current_flags(Path::new("/"));
    do_mount(None, Path::new("/"), None, flags, None)
}

/// Whether the spec mounts a fresh filesystem on /dev (then default devices are created).
pub fn has_fresh_dev(spec: &Spec) -> bool {
    spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev") && m.typ().as_deref().is_some_and(|t| t != "bind")
    })
}

/// Whether `name` is a mount destination in the spec.
pub fn mounts_at(spec: &Spec, dest: &str) -> bool {
    spec.mounts()
        .iter()
        .flatten()
        .any(|m| m.destination().as_os_str() == OsStr::new(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&[
            "nosuid".into(),
            "ro".into(),
            "rbind".into(),
            "mode=755".into(),
            "rslave".into(),
        ]);
        assert!(o.flags.contains(
            MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        ));
        assert_eq!(o.data, vec!["mode=755".to_string()]);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        let rw = parse_options(&["ro".into(), "rw".into()]);
        assert!(!rw.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/x")).unwrap(),
            root.join("real/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/escape/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
    }
}

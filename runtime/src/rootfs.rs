//! The container's root filesystem: propagation, the spec's mounts, /dev, pivot_root, masked
//! and read-only paths. Runs in the container's init process, inside its mount namespace.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev};
use nix::unistd::{chdir, fchdir, pivot_root};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use pathrs::error::ErrorKind;
use pathrs::{Handle, InodeType, Root};

use crate::error::{Error, Result, io_err, root_err, sys_err};

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

/// The container's root filesystem, opened once. Every container-side path (mount destinations,
/// /dev entries, masked and read-only paths) is resolved inside it by pathrs, with
/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: a symlink in the image is clamped to the
/// root and `/proc/.../fd` magic links are refused. The runtime then acts on the resolved fd (a
/// mount onto `/proc/self/fd/N`, mknodat/symlinkat relative to the parent), so swapping a path
/// component for a symlink after the check (a volume shared with a running container, the
/// CVE-2021-30465 race) cannot move the operation out of the root.
pub struct InRoot {
    root: Root,
}

fn errno_is(e: &pathrs::error::Error, errno: i32) -> bool {
    e.kind() == ErrorKind::OsError(Some(errno))
}

impl InRoot {
    /// Open `rootfs` (a host path) as the root.
    pub fn open(rootfs: &Path) -> Result<InRoot> {
        Ok(InRoot {
            root: Root::open(rootfs).map_err(root_err("open the rootfs", rootfs))?,
        })
    }

    /// `path` resolved inside the root (symlinks followed, but never out of it); `None` when a
    /// component is missing.
    pub fn resolve(&self, path: &Path) -> Result<Option<Handle>> {
        match self.root.resolve(path) {
            Ok(h) => Ok(Some(h)),
            Err(e) if errno_is(&e, libc::ENOENT) => Ok(None),
            Err(e) => Err(root_err("resolve", path)(e)),
        }
    }

    /// Whether `path` exists, without following a symlink in its last component.
    pub fn exists_nofollow(&self, path: &Path) -> Result<bool> {
        match self.root.resolve_nofollow(path) {
            Ok(_) => Ok(true),
            Err(e) if errno_is(&e, libc::ENOENT) => Ok(false),
            Err(e) => Err(root_err("resolve", path)(e)),
        }
    }

    /// Create `path` and its missing parents as directories (mode 0755 under the umask).
    pub fn mkdir_all(&self, path: &Path) -> Result<Handle> {
        self.root
            .mkdir_all(path, &fs::Permissions::from_mode(0o755))
            .map_err(root_err("create directory", path))
    }

    /// Create one inode; an existing one is left alone.
    pub fn create(&self, path: &Path, inode: &InodeType) -> Result<()> {
        match self.root.create(path, inode) {
            Ok(()) => Ok(()),
            Err(e) if errno_is(&e, libc::EEXIST) => Ok(()),
            Err(e) => Err(root_err("create", path)(e)),
        }
    }

    /// `path` as a mount point: created when missing (an empty file when `is_file`, else a
    /// directory), then resolved.
    pub fn target(&self, path: &Path, is_file: bool) -> Result<Handle> {
        if let Some(h) = self.resolve(path)? {
            return Ok(h);
        }
        if !is_file {
            return self.mkdir_all(path);
        }
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent)?;
        }
        self.create(path, &InodeType::File(fs::Permissions::from_mode(0o644)))?;
        self.existing(path)
    }

    /// `path`, which must exist (e.g. a mount point just mounted on: the handle is the new top
    /// mount, as a remount needs).
    pub fn existing(&self, path: &Path) -> Result<Handle> {
        self.root.resolve(path).map_err(root_err("resolve", path))
    }
}

/// The path through which mount(2) and friends reach a resolved handle: the host's
/// `/proc/self/fd/N` (init uses these before pivot_root, with the host's /proc at /proc).
fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Mount onto a resolved handle; errors name the container-side path.
fn mount_at(
    src: Option<&Path>,
    target: &Handle,
    shown: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, &fd_path(target), fstype, flags, data).map_err(sys_err(format!(
        "mount {} on {} in the container (type {}, flags {flags:?}, data {:?})",
        src.map(|s| s.display().to_string()).unwrap_or_default(),
        shown.display(),
        fstype.unwrap_or("none"),
        data.unwrap_or("")
    )))
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

/// Prepare the mount namespace: make `/` recursively slave so nothing leaks back to the host,
/// and bind the rootfs onto itself so it is a mount point for pivot_root. The spec's
/// `rootfsPropagation` is applied to the new `/` after pivot_root: applied here, `unbindable`
/// would make the bind of the rootfs fail with EINVAL and `shared` would make pivot_root fail.
pub fn prepare(rootfs: &Path) -> Result<()> {
    do_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    do_mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

/// Mount one entry of `spec.mounts` inside the root.
pub fn mount_one(root: &InRoot, m: &Mount) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = m.destination();
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if opts.flags.contains(MsFlags::MS_BIND) || typ == "bind" {
        let src = m.source().as_ref().ok_or_else(|| {
            Error::InvalidSpec(format!("bind mount on {} has no source", dest.display()))
        })?;
        let meta = fs::metadata(src).map_err(io_err("bind mount source", src))?;
        let target = root.target(dest, !meta.is_dir())?;
        let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount_at(Some(src), &target, dest, None, bind, None)?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            let top = root.existing(dest)?;
            let flags = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | extra
                | (current_flags(&fd_path(&top)) - opts.cleared);
            mount_at(None, &top, dest, None, flags, None)?;
        }
    } else {
        let target = root.target(dest, false)?;
        let fstype = match typ {
            "" => {
                return Err(Error::InvalidSpec(format!(
                    "mount on {} has no type",
                    dest.display()
                )));
            }
            "cgroup" => "cgroup2",
            t => t,
        };
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(fstype));
        let r = mount_at(Some(&src), &target, dest, Some(fstype), opts.flags, data);
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
                mount_at(
                    Some(Path::new(host)),
                    &target,
                    dest,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                let top = root.existing(dest)?;
                let flags = MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | opts.flags
                    | current_flags(&fd_path(&top));
                mount_at(None, &top, dest, None, flags, None)?;
            }
            r => r?,
        }
    }
    for p in &opts.propagation {
        let top = root.existing(dest)?;
        mount_at(None, &top, dest, None, *p, None)?;
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
    root: &InRoot,
    path: &Path,
    typ: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    bind: bool,
) -> Result<()> {
    if root.exists_nofollow(path)? {
        return Ok(());
    }
    if bind {
        // In a user namespace mknod is refused: bind the host's node instead.
        let target = root.target(path, true)?;
        return mount_at(Some(path), &target, path, None, MsFlags::MS_BIND, None);
    }
    if let Some(parent) = path.parent() {
        root.mkdir_all(parent)?;
    }
    let perm = fs::Permissions::from_mode(mode & 0o7777);
    let dev = makedev(major, minor);
    let inode = if typ == SFlag::S_IFBLK {
        InodeType::BlockDevice(perm, dev)
    } else if typ == SFlag::S_IFIFO {
        InodeType::Fifo(perm)
    } else {
        InodeType::CharacterDevice(perm, dev)
    };
    root.create(path, &inode)
}

/// Create the spec's devices, and when /dev is a fresh mount the default ones and links; all
/// inside the root, so an image whose /dev is a symlink to a host directory gets them in the
/// directory the link names *inside* the rootfs.
pub fn create_devices(
    root: &InRoot,
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
            root,
            d.path(),
            typ,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            in_userns,
        )?;
        if let (Some(uid), Some(gid)) = (d.uid(), d.gid())
            && let Ok(h) = root.existing(d.path())
        {
            // SAFETY: fchownat on a live O_PATH fd with an empty, NUL-terminated path.
            unsafe {
                libc::fchownat(
                    h.as_fd().as_raw_fd(),
                    c"".as_ptr(),
                    uid,
                    gid,
                    libc::AT_EMPTY_PATH,
                )
            };
        }
    }
    if !fresh_dev {
        return Ok(());
    }
    for (name, major, minor) in default_devices() {
        make_device(
            root,
            &Path::new("/dev").join(name),
            SFlag::S_IFCHR,
            major,
            minor,
            0o666,
            in_userns,
        )?;
    }
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("/proc/kcore", "core"),
    ];
    if root.resolve(Path::new("/dev/pts/ptmx"))?.is_some() {
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        let link = Path::new("/dev").join(name);
        if !root.exists_nofollow(&link)? {
            root.create(&link, &InodeType::Symlink(PathBuf::from(target)))?;
        }
    }
    Ok(())
}

/// Write the spec's sysctls through the container's /proc/sys, resolved inside the root.
pub fn write_sysctls(
    root: &InRoot,
    sysctl: &std::collections::HashMap<String, String>,
) -> Result<()> {
    for (k, v) in sysctl {
        let path = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        let h = root.existing(&path)?;
        let mut f = h
            .reopen(pathrs::flags::OpenFlags::O_WRONLY | pathrs::flags::OpenFlags::O_CLOEXEC)
            .map_err(root_err("open sysctl", path.clone()))?;
        std::io::Write::write_all(&mut f, v.as_bytes()).map_err(io_err("write sysctl", path))?;
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

/// Hide each path (resolved inside the root): the host's /dev/null over files, an empty read-only
/// tmpfs over directories. Runs before pivot_root.
pub fn mask_paths(root: &InRoot, paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        let Some(h) = root.resolve(path)? else {
            continue;
        };
        let is_dir = nix::sys::stat::fstat(h.as_fd().as_raw_fd())
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
            .map_err(sys_err(format!("stat masked path {p}")))?;
        if is_dir {
            mount_at(
                Some(Path::new("tmpfs")),
                &h,
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?;
        } else {
            mount_at(
                Some(Path::new("/dev/null")),
                &h,
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    Ok(())
}

/// Make each path (resolved inside the root) read-only with a recursive bind remount. Runs
/// before pivot_root.
pub fn readonly_paths(root: &InRoot, paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        let Some(h) = root.resolve(path)? else {
            continue;
        };
        let here = fd_path(&h);
        mount_at(
            Some(&here),
            &h,
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let top = root.existing(path)?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_REC
            | current_flags(&fd_path(&top));
        mount_at(None, &top, path, None, flags, None)?;
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

    /// Where a handle really is, on the host.
    fn real(h: &Handle) -> PathBuf {
        fs::read_link(fd_path(h)).unwrap()
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("real/x")).unwrap();
        fs::create_dir_all(root.join("etc/passwd")).unwrap();
        fs::create_dir_all(root.join("x")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("escape")).unwrap();
        let r = InRoot::open(&root).unwrap();
        let at = |p: &str| real(&r.resolve(Path::new(p)).unwrap().expect(p));
        assert_eq!(at("/abs/x"), root.join("real/x"));
        assert_eq!(at("/escape/passwd"), root.join("etc/passwd"));
        assert_eq!(at("/../../x"), root.join("x"));
    }

    #[test]
    fn created_entries_stay_inside_the_root() {
        // An image whose /dev links to a host directory: creating through it lands in the
        // rootfs, and the host directory stays empty.
        let host = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(host.path(), root.join("dev")).unwrap();
        let r = InRoot::open(&root).unwrap();
        // Dangling inside the root: refused, nothing created anywhere.
        assert!(r.mkdir_all(Path::new("/dev/pts")).is_err());
        assert!(r.target(Path::new("/dev/null"), true).is_err());
        let inside = root.join(host.path().strip_prefix("/").unwrap());
        assert!(!inside.exists());
        // Present inside the root: the entries land there.
        fs::create_dir_all(&inside).unwrap();
        r.mkdir_all(Path::new("/dev/pts")).unwrap();
        r.create(
            Path::new("/dev/fd"),
            &InodeType::Symlink(PathBuf::from("/proc/self/fd")),
        )
        .unwrap();
        let t = r.target(Path::new("/dev/shm/file"), true).unwrap();
        assert_eq!(real(&t), inside.join("shm/file"));
        assert!(inside.join("pts").is_dir());
        assert!(fs::symlink_metadata(inside.join("fd")).is_ok());
        assert_eq!(
            fs::read_dir(host.path()).unwrap().count(),
            0,
            "the host directory was written to"
        );
    }

    #[test]
    fn magic_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        // The rootfs's /proc is the host's procfs, as a proc mount is before pivot_root.
        std::os::unix::fs::symlink("/proc", root.join("proc")).unwrap();
        let outside = fs::File::open("/").unwrap();
        let r = InRoot::open(&root).unwrap();
        let p = format!("/proc/self/fd/{}", outside.as_raw_fd());
        // A symlink to /proc resolves to <root>/proc, which does not exist here: either way the
        // host's fd is never reached.
        assert!(
            r.resolve(Path::new(&p))
                .map(|h| h.is_none())
                .unwrap_or(true)
        );
    }
}

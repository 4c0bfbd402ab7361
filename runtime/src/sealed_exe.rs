//! Run from a binary a container cannot write (the CVE-2019-5736 class).
//!
//! A process that sets up a container (its init before execve, an `exec`'s joining process) is
//! a fork of the runtime's binary. If the container's program is `#!/proc/self/exe`, the kernel
//! runs that binary inside the container, and a container process can then open it through
//! `/proc/<pid>/exe` and overwrite the host's podd-shim or podd-oci. So the binaries re-execute
//! themselves, first thing, from a copy nobody can write:
//!
//! - a **read-only clone** (cheap, the default): `open_tree(OPEN_TREE_CLONE)` of the binary gives
//!   a detached mount of just that file, `mount_setattr` makes it read-only, and we `execveat` it.
//!   `/proc/<pid>/exe` then lives on that read-only mount: every write, truncate or reopen for
//!   writing through it fails with EROFS, and only CAP_SYS_ADMIN in the host's user namespace
//!   could change the mount. No copy, no memory (runc moved to the same idea for the cost of
//!   its memfd copies). Needs Linux 5.12 and CAP_SYS_ADMIN, which the runtime has.
//! - else runc's `cloned_binary`: a **memfd copy** sealed against every change (`F_SEAL_SEAL |
//!   F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE`), so `/proc/<pid>/exe` is
//!   `/memfd:<name> (deleted)`. It costs a copy of the binary per process (tens of ms and its
//!   size in memory).
//!
//! Whether we already run that way is read from `/proc/self/exe` itself (its seals, or its
//! mount's read-only flag), not from an environment variable a caller could set.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;

/// The seals a copy must carry.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Why the binary could not be sealed.
#[derive(Debug, thiserror::Error)]
#[error("running from a sealed copy of the binary: {what}: {source}")]
pub struct SealError {
    what: &'static str,
    source: std::io::Error,
}

fn err(what: &'static str) -> impl FnOnce(std::io::Error) -> SealError {
    move |source| SealError { what, source }
}

/// Whether the file's seals include all of [`SEALS`] (false for a file that is no memfd).
fn is_sealed(f: &File) -> bool {
    // SAFETY: F_GET_SEALS on a live fd only reads its seals.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Whether the file is on a read-only mount.
fn on_readonly_mount(f: &File) -> bool {
    nix::sys::statvfs::fstatvfs(f)
        .is_ok_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Whether this process runs from a binary that cannot be written: a sealed memfd copy, or a
/// file on a read-only mount.
pub fn running_sealed() -> bool {
    File::open("/proc/self/exe").is_ok_and(|f| is_sealed(&f) || on_readonly_mount(&f))
}

/// A detached, read-only mount of `/proc/self/exe` (an O_PATH-like fd on the binary in it).
pub fn readonly_clone() -> Result<std::os::fd::OwnedFd, SealError> {
    // SAFETY: open_tree reads a NUL-terminated path and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(err("open_tree(OPEN_TREE_CLONE) of /proc/self/exe")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open_tree returned a fresh fd that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (a valid mount_attr of the size passed) and changes
    // only the detached mount behind our fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(err("make the clone of /proc/self/exe read-only")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// Copy `/proc/self/exe` into a new sealed memfd named `name`.
pub fn sealed_copy(name: &str) -> Result<File, SealError> {
    let mut exe = File::open("/proc/self/exe").map_err(err("open /proc/self/exe"))?;
    let cname = CString::new(name).map_err(|_| SealError {
        what: "memfd name",
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new fd or -1.
    let fd =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(err("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a fresh fd that nothing else owns.
    let mut memfd = unsafe { File::from_raw_fd(fd) };
    std::io::copy(&mut exe, &mut memfd).map_err(err("copy /proc/self/exe into the memfd"))?;
    // SAFETY: F_ADD_SEALS on our own memfd with integer flags.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(err("seal the memfd")(std::io::Error::last_os_error()));
    }
    Ok(memfd)
}

/// Make sure this process runs from a sealed memfd copy of its binary: return at once if it
/// does, else copy, seal and re-execute with the same argv and environment (this function then
/// does not return). Call it first thing in `main`, before threads or open files exist.
pub fn ensure(name: &str) -> Result<(), SealError> {
    if running_sealed() {
        return Ok(());
    }
    let exe: std::os::fd::OwnedFd = match readonly_clone() {
        Ok(fd) => fd,
        Err(_) => sealed_copy(name)?.into(),
    };
    let cstr = |s: OsString| CString::new(s.as_bytes()).ok();
    let argv: Vec<CString> = std::env::args_os().filter_map(cstr).collect();
    let envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstr(kv)
        })
        .collect();
    let e = nix::unistd::execveat(
        Some(exe.as_raw_fd()),
        c"",
        &argv,
        &envp,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .unwrap_err();
    Err(err("execute the read-only copy of the binary")(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_readonly_clone_cannot_be_written() {
        let clone = readonly_clone().unwrap();
        let path = format!("/proc/self/fd/{}", clone.as_raw_fd());
        let f = File::open(&path).unwrap();
        assert!(on_readonly_mount(&f));
        // Opening for writing fails (ETXTBSY while it runs, EROFS after); a metadata change
        // shows the mount itself refuses.
        assert!(std::fs::OpenOptions::new().write(true).open(&path).is_err());
        let e = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .expect_err("chmod through the read-only clone");
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    }

    #[test]
    fn the_copy_is_sealed_and_cannot_be_written() {
        let mut copy = sealed_copy("podd-sealed-test").unwrap();
        assert!(is_sealed(&copy));
        assert!(!running_sealed(), "the test binary runs from its file");
        let mut head = [0u8; 4];
        copy.seek(std::io::SeekFrom::Start(0)).unwrap();
        copy.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"\x7fELF");
        assert!(copy.write_all(b"x").is_err(), "a sealed memfd took a write");
        let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        assert!(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(b"x"))
                .is_err(),
            "the sealed memfd could be reopened and written"
        );
        assert!(
            std::fs::read_link(&path)
                .unwrap()
                .to_string_lossy()
                .starts_with("/memfd:podd-sealed-test")
        );
    }
}

//! File descriptor hygiene for the setup processes (the CVE-2024-21626 class).
//!
//! A directory fd opened on the host (a cgroup directory, the host's `/proc`, anything the caller
//! left open) is a way out of the container: while it is open, `chdir("/proc/self/fd/N/..")` or an
//! `execve` through `/proc/self/fd/N` resolves on the host. Closing at execve (CLOEXEC) is too
//! late: the cwd and the program are resolved before. So the setup processes close every fd they
//! do not need before they resolve any container-controlled path, and again just before execve.
//!
//! # Audit: the fds that cross into init and exec
//! - 0, 1, 2: the caller's stdio (a shim gives /dev/null, pipes or log files; `podd-oci` passes
//!   its own). They stay: they are the container's stdio.
//! - 3..3+preserve_fds: fds the caller passes on purpose (`--preserve-fds`). They stay; passing a
//!   host directory there is the caller's decision, as with runc.
//! - the setup socket (one end of a socketpair): kept until execve (CLOEXEC) to report errors. A
//!   socket cannot be walked as a path.
//! - the console socket (a connected Unix socket): kept until the pty master is sent, then closed
//!   at execve.
//! - init's `exec.fifo` handle: an O_PATH fd on a fifo, opened on the host before pivot_root. A
//!   non-directory cannot be walked (`/proc/self/fd/N/..` is ENOTDIR); it is closed right after
//!   `start` releases init.
//! - init's write end of `exec.fifo` (reopened through its procfs handle when `start` opens the
//!   fifo): kept until execve (CLOEXEC, so no startContainer hook inherits it) because its
//!   closing tells `start` that the program runs. Like the handle, a fifo cannot be walked as
//!   a path, and reopening it gives only the same fifo.
//! - the cgroup directory (clone3 `CLONE_INTO_CGROUP`) and the cgroup namespace file of `exec`:
//!   host fds, closed in both processes right after clone3 / setns.
//! - namespace files of `namespaces::join_all`: closed when joined.
//! - pathrs' cached procfs handle (a detached procfs of the container's pid namespace) and the
//!   rootfs handle: closed by the last sweep before execve.
//! - init's procfs handle for reopening `exec.fifo` (made by pathrs before pivot_root or chroot:
//!   a fresh detached procfs of the container's pid namespace where the kernel allows it): kept
//!   through the sweep after pivot_root, closed once the fifo is reopened, before the
//!   startContainer hooks and execve. Path lookups made while it is open (the cwd) refuse magic
//!   links, and `execve` runs only after it is closed.
//! - everything else the caller had open (a shim's log file, sockets, the pod manager's files,
//!   a parent's leaked directory fds): closed by the first sweep, before any namespace is joined.
//!   Where create needs no stage 1 (nothing to join), init is cloned by the caller and makes
//!   that sweep first thing, before anything runs in its fresh namespaces.
//!
//! After the cwd is set, [`check_cwd_in_root`] makes sure it is reachable from the container's
//! root, as runc does, so a cwd that got out any other way is refused too.

use std::os::fd::RawFd;

use crate::error::{Error, Result};

/// Close every fd except those in `keep`. Used in the forked setup processes (single-threaded).
pub fn close_all_except(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|fd| **fd >= 0)
        .map(|fd| *fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 0u32;
    for k in keep.iter().copied().chain(std::iter::once(u32::MAX)) {
        if k > first {
            close_range(first, k - 1);
        }
        first = k.saturating_add(1);
    }
}

/// close_range(2), or a loop over `/proc/self/fd` on kernels before 5.9.
fn close_range(first: u32, last: u32) {
    // SAFETY: close_range takes integers only; the fds it closes are not used afterwards (the
    // callers keep what they still use).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc == 0 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| (first..=last).contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closing an fd number we do not use afterwards (the read_dir fd is gone).
        unsafe { libc::close(fd as RawFd) };
    }
}

/// Mark every fd from `first` close-on-exec.
pub fn cloexec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes fd flags; no memory is passed.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
}

/// The process's cwd as the kernel reports it: a path outside the current root comes back as
/// "(unreachable)/..." (the raw syscall; glibc turns that into ENOENT).
fn raw_getcwd() -> std::result::Result<Vec<u8>, nix::Error> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the kernel writes at most `buf.len()` bytes into the live buffer.
    let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    buf.truncate((rc as usize).saturating_sub(1)); // the length counts the NUL
    Ok(buf)
}

/// Refuse a cwd that is not under the container's root: `cwd` is what the spec asked for.
pub fn check_cwd_in_root(cwd: &std::path::Path) -> Result<()> {
    match raw_getcwd() {
        Ok(p) if p.first() == Some(&b'/') => Ok(()),
        Ok(p) => Err(Error::InvalidSpec(format!(
            "process.cwd {} leads outside the container's root (the kernel reports {:?}); \
             refusing to run the process there",
            cwd.display(),
            String::from_utf8_lossy(&p)
        ))),
        Err(e) => Err(Error::InvalidSpec(format!(
            "process.cwd {} cannot be verified to be inside the container's root: getcwd: {e}",
            cwd.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD on any number only reads its flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }

    #[test]
    fn closes_everything_but_what_is_kept() {
        // In a child, so the test harness's fds are untouched.
        let a = std::fs::File::open("/").unwrap();
        let b = std::fs::File::open("/").unwrap();
        let c = std::fs::File::open("/").unwrap();
        let (a, b, c) = (a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd());
        // SAFETY: the child only makes system calls and exits with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                close_all_except(&[0, 1, 2, b]);
                let ok = !is_open(a) && is_open(b) && !is_open(c) && is_open(2);
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn cwd_outside_the_root_is_refused() {
        assert!(check_cwd_in_root(std::path::Path::new("/")).is_ok());
        // In a child: chroot into a directory, then fchdir to the old root through a kept fd,
        // which is what a leaked host fd gives a container.
        let dir = tempfile::tempdir().unwrap();
        let host = std::fs::File::open("/").unwrap();
        // SAFETY: the child only makes system calls and exits with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let escaped = nix::unistd::chroot(dir.path()).is_ok()
                    && nix::unistd::fchdir(host.as_raw_fd()).is_ok();
                let refused = check_cwd_in_root(std::path::Path::new("/proc/self/fd/3"))
                    .is_err_and(|e| e.to_string().contains("outside the container's root"));
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(if escaped && refused { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}

//! The container lifecycle: create (setup processes, waiting on `exec.fifo`), start, kill,
//! delete, exec, pause/resume, and the state kept under the state root.
//!
//! Process model of `create`:
//! ```text
//! runtime (caller) --fork--> stage 1: join the cgroup, setns into the spec's namespace paths,
//!    |                        clone(CLONE_PARENT | new namespaces) --> init, then exit
//!    |<-- setup channel (pid, hooks, ready/error) ----------------------- init: uid/gid maps, mounts,
//!                                                                         pivot_root, process setup,
//!                                                                         then blocks opening exec.fifo
//! ```
//! `CLONE_PARENT` makes init a child of the caller, so a long-lived caller (a pod shim, or
//! `podd-oci run`) can `waitpid` it for the exit code. `start` opens the fifo for reading, which
//! releases init to exec the user process.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{OFlag, open, openat};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use seccompiler::BpfProgram;

use crate::cgroups::{self, Cgroup, Stats};
use crate::error::{Error, Result, io_err, sys_err};
use crate::namespaces::{self, Plan};
use crate::process::{self, CapSets};
use crate::rootfs;
use crate::seccomp;
use crate::state::{self, OciState, State, Status};
use crate::sync::{Msg, recv_msg, send_msg};
use crate::{devices, fds, hooks, spec};

/// Where and how to create a container.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// State root; each container gets `<root>/<id>/` (default `/run/podd-oci`).
    pub root: PathBuf,
    /// cgroup v2 directory the spec's `cgroupsPath` is relative to; `None` finds the cgroup2
    /// mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host).
    pub cgroup_root: Option<PathBuf>,
    /// Unix socket that receives the pty master when `process.terminal` is true.
    pub console_socket: Option<PathBuf>,
    /// Write init's pid here.
    pub pid_file: Option<PathBuf>,
    /// Extra fds (3..3+N) passed to the container process.
    pub preserve_fds: u32,
}

impl CreateOptions {
    /// Defaults with a chosen state root.
    pub fn new(root: impl Into<PathBuf>) -> CreateOptions {
        CreateOptions {
            root: root.into(),
            cgroup_root: None,
            console_socket: None,
            pid_file: None,
            preserve_fds: 0,
        }
    }
}

/// Options of [`Container::exec`].
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Unix socket that receives the pty master when `process.terminal` is true.
    pub console_socket: Option<PathBuf>,
    /// Extra fds (3..3+N) passed to the process.
    pub preserve_fds: u32,
}

/// A container known to the state root.
#[derive(Debug, Clone)]
pub struct Container {
    root: PathBuf,
    state: State,
}

/// Everything a setup process needs, computed before fork so errors surface early and the
/// forked child does little but system calls.
struct ProcessPlan {
    process: Process,
    args: Vec<CString>,
    env: Vec<CString>,
    caps: CapSets,
    nnp: bool,
    seccomp: Vec<BpfProgram>,
    console: Option<OwnedFd>,
    preserve_fds: u32,
    /// The root is a chroot in the runtime's mount namespace (a spec without a mount
    /// namespace): there is no procfs of the container's for pathrs, see [`enter_cwd`].
    chrooted: bool,
}

impl ProcessPlan {
    fn new(
        process: &Process,
        seccomp_spec: Option<&oci_spec::runtime::LinuxSeccomp>,
        console: Option<OwnedFd>,
        preserve_fds: u32,
    ) -> Result<ProcessPlan> {
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(Error::InvalidSpec("process.args is empty".into()));
        }
        if process
            .apparmor_profile()
            .as_ref()
            .is_some_and(|p| !p.is_empty())
        {
            tracing::warn!(
                "process.apparmorProfile is set but podd-oci does not apply AppArmor profiles; ignored"
            );
        }
        if process
            .selinux_label()
            .as_ref()
            .is_some_and(|p| !p.is_empty())
        {
            tracing::warn!(
                "process.selinuxLabel is set but podd-oci does not apply SELinux labels; ignored"
            );
        }
        Ok(ProcessPlan {
            args: process::cstrings(&args)?,
            env: process::cstrings(process.env().as_deref().unwrap_or_default())?,
            caps: CapSets::from_spec(process.capabilities().as_ref())?,
            nnp: process.no_new_privileges().unwrap_or(false),
            seccomp: match seccomp_spec {
                Some(s) => seccomp::compile(s)?,
                None => Vec::new(),
            },
            process: process.clone(),
            console,
            preserve_fds,
            chrooted: false,
        })
    }

    fn terminal(&self) -> bool {
        self.process.terminal().unwrap_or(false)
    }

    /// Console, rlimits, cwd, user, capabilities, no_new_privs: everything but the final
    /// seccomp (when no_new_privs) and execve. Returns the program to exec.
    fn prepare(&self) -> Result<CString> {
        if let (true, Some(console)) = (self.terminal(), &self.console) {
            setup_console(console, &self.process)?;
        }
        if let Some(adj) = self.process.oom_score_adj() {
            fs::write("/proc/self/oom_score_adj", adj.to_string())
                .map_err(io_err("write", "/proc/self/oom_score_adj"))?;
        }
        process::set_rlimits(&self.process)?;
        enter_cwd(self.process.cwd(), self.chrooted)?;
        let env: Vec<String> = self.process.env().clone().unwrap_or_default();
        let arg0 = self
            .process
            .args()
            .as_ref()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        let program = process::find_program(&arg0, &env)?;
        if !self.nnp {
            // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we have
            // it (install sets no_new_privs only if CAP_SYS_ADMIN is missing already).
            seccomp::install(&self.seccomp, false)?;
        }
        process::drop_bounding(&self.caps)?;
        process::switch_user(&self.process, &self.caps)?;
        umask(Mode::from_bits_truncate(
            self.process.user().umask().unwrap_or(0o022),
        ));
        if self.nnp {
            process::set_no_new_privs()?;
        }
        CString::new(program.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidSpec("program path has a NUL byte".into()))
    }

    /// The fds a setup process keeps (see the audit in [`fds`]): stdio, the preserved fds, the
    /// console socket and `extra` (the setup socket, init's fifo handle).
    fn keep(&self, extra: &[RawFd]) -> Vec<RawFd> {
        let mut keep: Vec<RawFd> = (0..3 + self.preserve_fds as RawFd).collect();
        keep.extend(self.console.as_ref().map(|c| c.as_raw_fd()));
        keep.extend_from_slice(extra);
        keep
    }

    /// Close every fd but stdio, the preserved ones and `extra` (the setup socket; init's write
    /// end of exec.fifo, which tells `start` of the execve by closing).
    fn close_for_exec(&self, extra: &[RawFd]) {
        let mut keep: Vec<RawFd> = (0..3 + self.preserve_fds as RawFd).collect();
        keep.extend_from_slice(extra);
        fds::close_all_except(&keep);
    }

    /// Last steps: close every fd but stdio, the preserved ones and `extra` (whatever setup
    /// opened, e.g. a procfs handle, must not be open while execve resolves the program path),
    /// the seccomp filter (when no_new_privs), execve. `extra` fds are CLOEXEC: the execve
    /// closes them.
    fn exec(&self, program: &CString, extra: &[RawFd]) -> Result<std::convert::Infallible> {
        self.close_for_exec(extra);
        fds::cloexec_from(3 + self.preserve_fds);
        if self.nnp {
            seccomp::install(&self.seccomp, true)?;
        }
        let e = nix::unistd::execve(program, &self.args, &self.env).unwrap_err();
        Err(sys_err(format!("execve {program:?}"))(e))
    }
}

/// chdir to `process.cwd`, resolved inside the current root (the container's, after pivot_root
/// or setns) by pathrs: symlinks stay in the root and magic links such as `/proc/self/fd/N` are
/// refused. A missing directory is created. Then the cwd is verified to be under the root.
///
/// In a chroot (no mount namespace) pathrs has no procfs to check its work with (the spec's
/// mounts, /proc among them, are not made there), so the cwd is entered with a plain chdir:
/// the kernel resolves it, symlinks included, inside the chroot, and no fd to anything outside
/// is open at this point (the first fd sweep ran); the final check below still applies.
fn enter_cwd(cwd: &Path, chrooted: bool) -> Result<()> {
    if chrooted {
        if !cwd.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(cwd)
                .map_err(io_err("create process.cwd", cwd))?;
        }
        nix::unistd::chdir(cwd)
            .map_err(sys_err(format!("chdir to process.cwd {}", cwd.display())))?;
        return fds::check_cwd_in_root(cwd);
    }
    let refused = |e: pathrs::error::Error| {
        Error::InvalidSpec(format!(
            "process.cwd {} cannot be entered inside the container's root (a magic link such \
             as /proc/self/fd/N, or a path that does not resolve to a directory in it): {}",
            cwd.display(),
            crate::error::chain(&e)
        ))
    };
    let root = pathrs::Root::open("/").map_err(refused)?;
    let dir = match root.resolve(cwd) {
        Ok(h) => h,
        Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) => root
            .mkdir_all(cwd, &fs::Permissions::from_mode(0o755))
            .map_err(refused)?,
        Err(e) => return Err(refused(e)),
    };
    nix::unistd::fchdir(std::os::fd::AsFd::as_fd(&dir).as_raw_fd())
        .map_err(sys_err(format!("chdir to process.cwd {}", cwd.display())))?;
    drop(dir);
    drop(root);
    fds::check_cwd_in_root(cwd)
}

/// Open a pty in the container's devpts, send the master to the console socket and make the
/// slave our controlling terminal and stdio.
fn setup_console(socket: &OwnedFd, process: &Process) -> Result<()> {
    use nix::pty::{posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(sys_err("open /dev/ptmx"))?;
    unlockpt(&master).map_err(sys_err("unlockpt"))?;
    let name = ptsname_r(&master).map_err(sys_err("ptsname"))?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(sys_err(format!("open {name}")))?;
    // SAFETY: `open` just returned this fd and nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some(size) = process.console_size() {
        let ws = libc::winsize {
            ws_row: size.height() as u16,
            ws_col: size.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a valid winsize struct.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let fds = [master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(sys_err("send the pty master to the console socket"))?;
    drop(master);
    let _ = nix::unistd::fchown(slave.as_raw_fd(), Some(process.user().uid().into()), None);
    // SAFETY: TIOCSCTTY with argument 0 on a terminal fd we own.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(sys_err("make the pty the controlling terminal")(
            nix::Error::last(),
        ));
    }
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(sys_err("dup2 the pty slave"))?;
    }
    Ok(())
}

/// The plan for the container's init process.
struct InitPlan {
    spec: Spec,
    rootfs: PathBuf,
    ns: Plan,
    cgroup: Option<Cgroup>,
    fifo: PathBuf,
    proc: ProcessPlan,
    /// config.json has no `process`: init sets the container up, reports ready and then only
    /// waits to be killed (`start` refuses such a container).
    no_process: bool,
    needs_runtime_hooks: bool,
    state: OciState,
}

/// `struct clone_args` of clone3(2), up to the `cgroup` field.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Create the next process, like fork but with namespace flags and `CLONE_PARENT`, directly in
/// `cgroup` (clone3 `CLONE_INTO_CGROUP`: no cgroup.procs write, which costs a synchronize_rcu).
/// Returns twice like fork. Used only in single-threaded setup processes, so glibc's fork
/// handlers are not needed.
fn clone_process(flags: CloneFlags, cgroup: Option<RawFd>) -> Result<i32> {
    let base = flags.bits() as u64 | libc::CLONE_PARENT as u64;
    if let Some(fd) = cgroup {
        let err = match clone3_into_cgroup(flags, fd, true) {
            Ok(pid) => return Ok(pid),
            Err(e) => e,
        };
        if err != nix::Error::ENOSYS && err != nix::Error::E2BIG {
            return Err(sys_err(format!(
                "clone3 into the container's cgroup with namespaces {flags:?}"
            ))(err));
        }
        // Kernels before 5.7: join the cgroup the slow way, then clone.
        let procs = openat(
            Some(fd),
            "cgroup.procs",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys_err("open cgroup.procs"))?;
        // SAFETY: openat returned a fresh fd that nothing else owns.
        let mut procs = unsafe { fs::File::from_raw_fd(procs) };
        procs
            .write_all(b"0")
            .map_err(io_err("join cgroup", "cgroup.procs"))?;
    }
    let raw = base | libc::SIGCHLD as u64;
    // SAFETY: clone with a null stack behaves like fork: the child gets a copy of our memory
    // and continues here. The caller is single-threaded.
    let rc = unsafe { libc::syscall(libc::SYS_clone, raw, 0usize, 0usize, 0usize, 0usize) };
    if rc < 0 {
        return Err(sys_err(format!("clone with namespaces {flags:?}"))(
            nix::Error::last(),
        ));
    }
    Ok(rc as i32)
}

/// clone3 with `flags` straight into the cgroup `cgroup_fd`; with `sibling`, as a child of our
/// parent (CLONE_PARENT), else as our own child. Returns twice like fork. ENOSYS or E2BIG
/// means a kernel before 5.7.
fn clone3_into_cgroup(flags: CloneFlags, cgroup_fd: RawFd, sibling: bool) -> nix::Result<i32> {
    let args = CloneArgs {
        flags: flags.bits() as u64
            | CLONE_INTO_CGROUP
            | if sibling {
                libc::CLONE_PARENT as u64
            } else {
                0
            },
        cgroup: cgroup_fd as u64,
        // With CLONE_PARENT, clone3 wants exit_signal 0; the child inherits ours (SIGCHLD).
        exit_signal: if sibling { 0 } else { libc::SIGCHLD as u64 },
        ..Default::default()
    };
    // SAFETY: clone3 reads `args` (a valid clone_args of the size passed); with no stack the
    // child gets a copy of our memory and continues here, like fork.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc >= 0 {
        Ok(rc as i32)
    } else {
        Err(nix::Error::last())
    }
}

/// Whether this process has a single thread (field 20 of /proc/self/stat): a raw clone of it
/// may then allocate, as no other thread can hold a lock of the allocator.
fn single_threaded() -> bool {
    fs::read_to_string("/proc/self/stat").is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(17).map(|n| n == "1"))
            .unwrap_or(false)
    })
}

/// Init straight from the caller, without stage 1, when stage 1 has nothing to do: no
/// namespace to join, no time namespace, a single-threaded caller (a raw clone skips glibc's
/// fork handlers) and a kernel with clone3 into a cgroup. Init is then our child, as with
/// CLONE_PARENT, and its first act is the fd sweep stage 1 would have made: nothing else runs
/// in its fresh namespaces before. Saves a fork, an exit and a wait. Returns the pid in the
/// caller, `None` where stage 1 is needed; never returns in init.
fn clone_init_directly(plan: &InitPlan, sock: &OwnedFd) -> Result<Option<i32>> {
    let time = namespaces::flag(LinuxNamespaceType::Time);
    let Some(cgroup) = plan.cgroup.as_ref() else {
        return Ok(None);
    };
    if !plan.ns.join.is_empty() || plan.ns.new.contains(time) || !single_threaded() {
        return Ok(None);
    }
    let mut new = plan.ns.new;
    // As in stage 1: init unshares its cgroup namespace once it is in its cgroup.
    new.remove(CloneFlags::CLONE_NEWCGROUP);
    let fd = open_cgroup(cgroup)?;
    let r = clone3_into_cgroup(new, fd, false);
    if r == Ok(0) {
        // The host's cgroup directory and the caller's end of the setup socket go with
        // everything else the caller had open.
        fds::close_all_except(&plan.proc.keep(&[sock.as_raw_fd()]));
        init(plan, sock);
    }
    let _ = nix::unistd::close(fd);
    match r {
        Ok(pid) => Ok(Some(pid)),
        Err(nix::Error::ENOSYS | nix::Error::E2BIG) => Ok(None),
        Err(e) => Err(sys_err(format!(
            "clone3 into the container's cgroup with namespaces {new:?}"
        ))(e)),
    }
}

/// Open a cgroup directory for clone3's CLONE_INTO_CGROUP.
fn open_cgroup(cg: &Cgroup) -> Result<RawFd> {
    let dir = cg.path();
    open(
        &dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys_err(format!("open cgroup {}", dir.display())))
}

/// Leave a forked setup process without running the parent's destructors or atexit handlers.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process immediately; nothing is used afterwards.
    unsafe { libc::_exit(code) }
}

fn fail_child(sock: &OwnedFd, e: Error) -> ! {
    let _ = send_msg(sock, &Msg::Error(e.to_string()));
    exit_now(1)
}

/// Stage 1: join the cgroup and the given namespaces, clone init into the new ones.
fn stage1(plan: &InitPlan, sock: &OwnedFd) -> ! {
    // Nothing of the caller's crosses into the container but what the audit in `fds` lists.
    fds::close_all_except(&plan.proc.keep(&[sock.as_raw_fd()]));
    let mut cgroup_fd = None;
    let mut run = || -> Result<i32> {
        // Opened before joining namespaces: a joined mount namespace would hide the path.
        cgroup_fd = plan.cgroup.as_ref().map(open_cgroup).transpose()?;
        namespaces::join_all(&plan.ns.join)?;
        let mut new = plan.ns.new;
        let time = namespaces::flag(LinuxNamespaceType::Time);
        if new.contains(time) {
            // clone(2) cannot take CLONE_NEWTIME; unshare gives it to our children.
            nix::sched::unshare(time).map_err(sys_err("unshare the time namespace"))?;
            new.remove(time);
        }
        // A cgroup namespace made by clone3 would be rooted at our cgroup, not the container's:
        // init unshares it once it is in its cgroup.
        new.remove(CloneFlags::CLONE_NEWCGROUP);
        clone_process(new, cgroup_fd)
    };
    let r = run();
    // The host's cgroup directory must not reach the container: closed in both processes as
    // soon as clone3 has used it.
    if let Some(fd) = cgroup_fd {
        let _ = nix::unistd::close(fd);
    }
    match r {
        Ok(0) => init(plan, sock),
        Ok(pid) => {
            let _ = send_msg(sock, &Msg::Pid(pid));
            exit_now(0)
        }
        Err(e) => fail_child(sock, e),
    }
}

fn init(plan: &InitPlan, sock: &OwnedFd) -> ! {
    match init_inner(plan, sock) {
        Ok(never) => match never {},
        Err(e) => fail_child(sock, e),
    }
}

fn wait_for(sock: &OwnedFd, want: fn(&Msg) -> bool) -> Result<Msg> {
    match recv_msg(sock)? {
        Some(m) if want(&m) => Ok(m),
        other => Err(Error::Init(format!("unexpected setup message {other:?}"))),
    }
}

fn init_inner(plan: &InitPlan, sock: &OwnedFd) -> Result<std::convert::Infallible> {
    // The caller may block signals (`podd-oci run` does, to forward them): start clean.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    let spec = &plan.spec;
    let linux = spec.linux().as_ref();
    if plan.ns.new.contains(CloneFlags::CLONE_NEWUSER) {
        wait_for(sock, |m| *m == Msg::Go)?;
        let root = nix::unistd::Uid::from_raw(0);
        let rootg = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(rootg, rootg, rootg)
            .map_err(sys_err("become root in the user namespace (gid)"))?;
        nix::unistd::setresuid(root, root, root)
            .map_err(sys_err("become root in the user namespace (uid)"))?;
    }
    if plan.ns.new.contains(CloneFlags::CLONE_NEWCGROUP) {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(sys_err("unshare the cgroup namespace"))?;
    }
    let in_userns = plan.ns.has(LinuxNamespaceType::User);
    nix::unistd::setsid().map_err(sys_err("setsid"))?;
    umask(Mode::empty());
    // Without a mount namespace the container shares the runtime's mount table: nothing is
    // mounted (see `no_mountns_checks`), and init chroots into the rootfs instead of pivoting.
    let has_mountns = plan.ns.has(LinuxNamespaceType::Mount);
    if has_mountns {
        rootfs::prepare(&plan.rootfs)?;
    }
    // Opened after the rootfs is bind-mounted onto itself, so lookups see that mount.
    let root = rootfs::InRoot::open(&plan.rootfs)?;
    if has_mountns {
        for m in spec.mounts().iter().flatten() {
            rootfs::mount_one(&root, m)?;
        }
        let devices = linux.and_then(|l| l.devices().clone()).unwrap_or_default();
        rootfs::create_devices(&root, &devices, rootfs::has_fresh_dev(spec), in_userns)?;
    }

    let mut state = plan.state.clone();
    let hooks = spec.hooks().as_ref();
    if plan.needs_runtime_hooks {
        send_msg(sock, &Msg::HooksRequest)?;
        if let Msg::HooksDone(pid) = wait_for(sock, |m| matches!(m, Msg::HooksDone(_)))? {
            state.pid = pid;
        }
    }
    hooks::run_all(
        "createContainer",
        hooks.and_then(|h| h.create_container().as_ref()),
        &state,
    )?;

    // Keep a way to the fifo across pivot_root: an O_PATH fd (a non-directory: it cannot be
    // walked out of), reopened for writing through a procfs of our own once released.
    let fifo = open(&plan.fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys_err(format!("open {}", plan.fifo.display())))?;
    // SAFETY: open returned a fresh fd that nothing else owns.
    let fifo = unsafe { OwnedFd::from_raw_fd(fifo) };

    // sysctls, then read-only and masked paths (in that order: /proc/sys becomes read-only),
    // all resolved inside the root before pivot_root, with the host's /proc at hand for
    // mounting onto resolved fds.
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        rootfs::write_sysctls(&root, sysctl)?;
    }
    rootfs::readonly_paths(
        &root,
        linux
            .and_then(|l| l.readonly_paths().as_deref())
            .unwrap_or_default(),
    )?;
    rootfs::mask_paths(
        &root,
        linux
            .and_then(|l| l.masked_paths().as_deref())
            .unwrap_or_default(),
    )?;
    drop(root);

    // The procfs handle that reopens the fifo: made before pivot_root or chroot (pathrs checks
    // its fresh procfs against the /proc it can see, which a chroot does not have) and before
    // the process setup loads the seccomp filter (a profile may refuse fsopen or open_tree).
    // It is a detached procfs of the container's pid namespace, not a host directory.
    let procfs = pathrs::procfs::ProcfsHandle::new().map_err(|e| {
        Error::Init(format!(
            "open a procfs handle to reopen exec.fifo: {}",
            crate::error::chain(&e)
        ))
    })?;
    let proc_root = std::os::fd::AsFd::as_fd(&procfs).as_raw_fd();
    if !has_mountns {
        rootfs::chroot(&plan.rootfs)?;
    } else {
        rootfs::pivot(&plan.rootfs)?;
    }
    if has_mountns && let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        let flags = rootfs::propagation_flag(p).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "linux.rootfsPropagation {p:?} is not a propagation"
            ))
        })?;
        nix::mount::mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .map_err(sys_err("set rootfs propagation"))?;
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(sys_err(format!("sethostname {h}")))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        // SAFETY: the pointer and length describe a live byte slice.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(sys_err(format!("setdomainname {d}"))(nix::Error::last()));
        }
    }
    if has_mountns
        && spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false)
    {
        rootfs::readonly_root()?;
    }
    // From here on paths are the container's: whatever setup opened on the host is closed
    // before the first lookup (the cwd, the console's /dev/ptmx, the program).
    fds::close_all_except(
        &plan
            .proc
            .keep(&[sock.as_raw_fd(), fifo.as_raw_fd(), proc_root]),
    );
    if plan.no_process {
        // Nothing to run: the container exists (state `created`) until it is killed.
        drop(procfs);
        drop(fifo);
        send_msg(sock, &Msg::Ready)?;
        plan.proc.close_for_exec(&[sock.as_raw_fd()]);
        let _ = nix::unistd::close(sock.as_raw_fd());
        loop {
            nix::unistd::pause();
        }
    }
    let program = plan.proc.prepare()?;
    send_msg(sock, &Msg::Ready)?;

    // Block until `start` opens the fifo for reading.
    // A plain openat of `self/fd/N` in that procfs (pathrs' own reopen would now run under the
    // seccomp filter, and an older profile refuses openat2 with EPERM, which pathrs does not
    // fall back from). The procfs is the fresh instance pathrs made, so the magic link is the
    // kernel's; the result is still checked to be the same inode as the O_PATH handle.
    let fifo_fd = format!("self/fd/{}", fifo.as_raw_fd());
    let w = loop {
        match openat(
            Some(proc_root),
            fifo_fd.as_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => break fd,
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(sys_err("open exec.fifo for writing")(e)),
        }
    };
    // SAFETY: openat returned a fresh fd that nothing else owns.
    let mut w = unsafe { fs::File::from_raw_fd(w) };
    let same = |a: &nix::sys::stat::FileStat, b: &nix::sys::stat::FileStat| {
        a.st_dev == b.st_dev && a.st_ino == b.st_ino
    };
    let opened = nix::sys::stat::fstat(w.as_raw_fd()).map_err(sys_err("fstat exec.fifo"))?;
    let handle = nix::sys::stat::fstat(fifo.as_raw_fd()).map_err(sys_err("fstat exec.fifo"))?;
    if !same(&opened, &handle) {
        return Err(Error::Init(
            "reopening exec.fifo through procfs gave another file".into(),
        ));
    }
    let _ = w.write_all(b"0");
    drop(procfs);
    drop(fifo);
    // The write end stays open (CLOEXEC) until execve: `start` waits for its end of file to
    // learn that the program runs (or that init died), with no polling. pathrs keeps its
    // procfs handle cached: gone too before the hooks run in the container.
    let keep = [sock.as_raw_fd(), w.as_raw_fd()];
    plan.proc.close_for_exec(&keep);
    hooks::run_all(
        "startContainer",
        hooks.and_then(|h| h.start_container().as_ref()),
        &state,
    )?;
    plan.proc.exec(&program, &keep)
}

/// A spec without a mount namespace runs in the runtime's mount namespace (the spec: a
/// namespace type that is not listed is inherited). podd-oci then changes nothing in that mount
/// table, which is the host's and would keep any mount after the container is gone: the
/// process is chrooted into `root.path`; `mounts`, `linux.devices` and `rootfsPropagation` are
/// skipped with a warning. What would weaken the container's isolation if skipped
/// (`maskedPaths`, `readonlyPaths`, a read-only root) and what must be written through the
/// container's own /proc (`sysctl`) is refused.
fn no_mountns_checks(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let refuse = |what: &str| {
        Err(Error::InvalidSpec(format!(
            "{what} needs a mount namespace (add {{\"type\": \"mount\"}} to linux.namespaces): \
             without one podd-oci does not change the runtime's mount table"
        )))
    };
    if linux
        .and_then(|l| l.masked_paths().as_ref())
        .is_some_and(|p| !p.is_empty())
    {
        return refuse("linux.maskedPaths");
    }
    if linux
        .and_then(|l| l.readonly_paths().as_ref())
        .is_some_and(|p| !p.is_empty())
    {
        return refuse("linux.readonlyPaths");
    }
    if linux
        .and_then(|l| l.sysctl().as_ref())
        .is_some_and(|p| !p.is_empty())
    {
        return refuse("linux.sysctl");
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        return refuse("root.readonly");
    }
    let mounts = spec.mounts().as_ref().map_or(0, |m| m.len());
    if mounts > 0 {
        tracing::warn!(
            mounts,
            "no mount namespace: the spec's mounts are not made (they would land in the \
             runtime's mount namespace and outlive the container)"
        );
    }
    if linux
        .and_then(|l| l.devices().as_ref())
        .is_some_and(|d| !d.is_empty())
    {
        tracing::warn!("no mount namespace: linux.devices are not created");
    }
    if linux
        .and_then(|l| l.rootfs_propagation().as_ref())
        .is_some()
    {
        tracing::warn!("no mount namespace: linux.rootfsPropagation is not applied");
    }
    Ok(())
}

/// Warn about the `linux.resources` podd-oci accepts but does not apply.
fn warn_unapplied_resources(resources: Option<&oci_spec::runtime::LinuxResources>) {
    if let Some(net) = resources.and_then(|r| r.network().as_ref())
        && (net.class_id().is_some() || net.priorities().as_ref().is_some_and(|p| !p.is_empty()))
    {
        tracing::warn!(
            class_id = ?net.class_id(),
            priorities = net.priorities().as_ref().map_or(0, |p| p.len()),
            "linux.resources.network is not applied: net_cls and net_prio are cgroup v1 \
             controllers that cgroup v2 has no equivalent files for; use the network \
             namespace's own traffic control instead"
        );
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Removes what a failed create made.
struct CreateGuard {
    dir: PathBuf,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
    armed: bool,
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup
            && let Err(e) = cg.destroy()
        {
            tracing::warn!(error = %e, "removing the cgroup of a failed create");
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let fmt = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    let uid = fmt(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = fmt(linux.and_then(|l| l.gid_mappings().as_ref()));
    let dir = PathBuf::from(format!("/proc/{pid}"));
    fs::write(dir.join("uid_map"), uid).map_err(io_err("write", dir.join("uid_map")))?;
    fs::write(dir.join("gid_map"), gid).map_err(io_err("write", dir.join("gid_map")))?;
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(io_err("get", "current directory"))?;
    Ok(cwd.join(p))
}

impl Container {
    /// Create a container from a bundle directory (reads `bundle/config.json`).
    pub fn create_from_bundle(id: &str, bundle: &Path, opts: &CreateOptions) -> Result<Container> {
        let spec = spec::load_bundle(bundle)?;
        Self::create(id, bundle, &spec, opts)
    }

    /// Create a container from an in-code spec. `bundle` resolves a relative `root.path` and is
    /// reported in the state. Returns once init waits for [`Container::start`].
    pub fn create(id: &str, bundle: &Path, spec: &Spec, opts: &CreateOptions) -> Result<Container> {
        state::validate_id(id)?;
        let bundle = absolute(bundle)?;
        let rootfs = spec::validate(spec, &bundle)?;
        let linux = spec.linux().as_ref();
        let ns = Plan::from_spec(
            linux
                .and_then(|l| l.namespaces().as_deref())
                .unwrap_or_default(),
        );
        if !ns.has(LinuxNamespaceType::Mount) {
            no_mountns_checks(spec)?;
        }
        warn_unapplied_resources(linux.and_then(|l| l.resources().as_ref()));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&opts.root)
            .map_err(io_err("create state root", &opts.root))?;
        let dir = State::dir(&opts.root, id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(id.to_string()));
            }
            Err(e) => return Err(io_err("create state directory", dir)(e)),
        }
        let mut guard = CreateGuard {
            dir: dir.clone(),
            cgroup: None,
            pid: None,
            armed: true,
        };

        let cg_rel = linux
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_else(|| PathBuf::from(format!("podd-oci/{id}")));
        let cg_root = match &opts.cgroup_root {
            Some(r) => r.clone(),
            None => cgroups::detect_root()?,
        };
        let mut cgroup = Cgroup::new(cg_root, cg_rel)?;
        cgroup.create(linux.and_then(|l| l.resources().as_ref()))?;
        guard.cgroup = Some(cgroup.clone());
        if let Some(rules) = linux
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_ref())
            .filter(|r| !r.is_empty())
        {
            let spec_devices = linux.and_then(|l| l.devices().clone()).unwrap_or_default();
            let fd = open_cgroup(&cgroup)?;
            let r = devices::attach(fd, &devices::rules(rules, &spec_devices));
            let _ = nix::unistd::close(fd);
            r?;
        }

        let fifo = dir.join("exec.fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
            .map_err(sys_err(format!("mkfifo {}", fifo.display())))?;
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o622))
            .map_err(io_err("chmod", fifo.clone()))?;

        // `process` is optional at create (the spec: REQUIRED when start is called).
        let no_process = spec.process().is_none();
        let placeholder = Process::default();
        let process = spec.process().as_ref().unwrap_or(&placeholder);
        let console = if !no_process && process.terminal().unwrap_or(false) {
            let path = opts.console_socket.as_ref().ok_or_else(|| {
                Error::InvalidSpec(
                    "process.terminal is true but no console socket was given (--console-socket)"
                        .into(),
                )
            })?;
            Some(OwnedFd::from(
                UnixStream::connect(path).map_err(io_err("connect to console socket", path))?,
            ))
        } else {
            None
        };
        let seccomp_spec = linux.and_then(|l| l.seccomp().as_ref());
        let hooks = spec.hooks().as_ref();
        let nonempty = |h: Option<&Vec<oci_spec::runtime::Hook>>| h.is_some_and(|v| !v.is_empty());
        let needs_runtime_hooks = hooks.is_some_and(|h| {
            nonempty(h.prestart().as_ref())
                || nonempty(h.create_runtime().as_ref())
                || nonempty(h.create_container().as_ref())
                || nonempty(h.start_container().as_ref())
        });
        let annotations: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
        // The state the create-time hooks (prestart, createRuntime, createContainer) and
        // startContainer get: `created`. The spec's lifecycle has `creating` for step 2 only
        // (building the environment) and `created` after it; these hooks are steps 3 to 5 and 7,
        // before the user's program runs. See docs/RUNTIME.md.
        let oci_state = OciState {
            oci_version: crate::OCI_VERSION.into(),
            id: id.into(),
            status: Status::Created,
            pid: 0,
            bundle: bundle.clone(),
            annotations: annotations.clone(),
        };
        let chrooted = !ns.has(LinuxNamespaceType::Mount);
        let plan = InitPlan {
            spec: spec.clone(),
            rootfs,
            ns,
            cgroup: Some(cgroup.clone()),
            fifo: fifo.clone(),
            proc: if no_process {
                ProcessPlan {
                    process: process.clone(),
                    args: Vec::new(),
                    env: Vec::new(),
                    caps: CapSets::default(),
                    nnp: false,
                    seccomp: Vec::new(),
                    console,
                    preserve_fds: opts.preserve_fds,
                    chrooted,
                }
            } else {
                ProcessPlan {
                    chrooted,
                    ..ProcessPlan::new(process, seccomp_spec, console, opts.preserve_fds)?
                }
            },
            no_process,
            needs_runtime_hooks,
            state: oci_state.clone(),
        };

        let (parent_sock, child_sock) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(sys_err("socketpair"))?;
        let direct_pid = clone_init_directly(&plan, &child_sock)?;
        let stage1_pid = match direct_pid {
            Some(_) => None,
            // SAFETY: the child only makes system calls, allocates (glibc's fork handlers keep
            // malloc usable) and exits with _exit; it takes no other locks and never returns.
            None => match unsafe { fork() }.map_err(sys_err("fork"))? {
                ForkResult::Child => {
                    drop(parent_sock);
                    stage1(&plan, &child_sock)
                }
                ForkResult::Parent { child } => Some(child),
            },
        };
        drop(child_sock);
        drop(plan.proc.console);

        // Stage 1 (the pid) and init (hooks, ready) share the channel: their messages may
        // arrive in either order.
        let mut init_pid = None;
        let mut ready = false;
        let mut hooks_pending = false;
        let run_hooks = |pid: i32| {
            let st = OciState {
                pid,
                ..oci_state.clone()
            };
            hooks::run_all("prestart", hooks.and_then(|h| h.prestart().as_ref()), &st)
                .and_then(|_| {
                    hooks::run_all(
                        "createRuntime",
                        hooks.and_then(|h| h.create_runtime().as_ref()),
                        &st,
                    )
                })
                .and_then(|_| send_msg(&parent_sock, &Msg::HooksDone(pid)))
        };
        // Without stage 1 the pid is known at once: handled as if stage 1 had sent it.
        let mut direct_pid = direct_pid;
        let result = loop {
            if ready && init_pid.is_some() {
                break Ok(());
            }
            let msg = match direct_pid.take() {
                Some(pid) => Ok(Some(Msg::Pid(pid))),
                None => recv_msg(&parent_sock),
            };
            match msg {
                Ok(Some(Msg::Pid(pid))) => {
                    init_pid = Some(pid);
                    guard.pid = Some(pid);
                    if let Some(stage1) = stage1_pid {
                        let _ = waitpid(stage1, None);
                    }
                    if plan.ns.new.contains(CloneFlags::CLONE_NEWUSER)
                        && let Err(e) =
                            write_id_maps(pid, spec).and_then(|_| send_msg(&parent_sock, &Msg::Go))
                    {
                        break Err(e);
                    }
                    if hooks_pending && let Err(e) = run_hooks(pid) {
                        break Err(e);
                    }
                }
                Ok(Some(Msg::HooksRequest)) => match init_pid {
                    Some(pid) => {
                        if let Err(e) = run_hooks(pid) {
                            break Err(e);
                        }
                    }
                    None => hooks_pending = true,
                },
                Ok(Some(Msg::Ready)) => ready = true,
                Ok(Some(Msg::Error(e))) => break Err(Error::Init(e)),
                Ok(Some(m)) => break Err(Error::Init(format!("unexpected setup message {m:?}"))),
                Ok(None) => {
                    break Err(Error::Init(
                        "the setup process exited without reporting why".into(),
                    ));
                }
                Err(e) => break Err(e),
            }
        };
        if init_pid.is_none()
            && let Some(stage1) = stage1_pid
        {
            let _ = waitpid(stage1, None);
        }
        result?;
        let pid = init_pid.ok_or_else(|| Error::Init("no init pid".into()))?;
        let state = State {
            id: id.into(),
            bundle,
            pid,
            pid_start_time: state::pid_start_time(pid)
                .ok_or_else(|| Error::Init("init exited during create".into()))?,
            created: now_secs(),
            annotations,
            cgroup: Some(cgroup),
            hooks: spec.hooks().clone(),
            seccomp: seccomp_spec.cloned(),
            user_ns: plan.ns.has(LinuxNamespaceType::User),
            started: false,
            no_process,
        };
        state.save(&opts.root)?;
        if let Some(pf) = &opts.pid_file {
            let pf = absolute(pf)?;
            fs::write(&pf, pid.to_string()).map_err(io_err("write pid file", pf))?;
        }
        guard.armed = false;
        Ok(Container {
            root: opts.root.clone(),
            state,
        })
    }

    /// Load a container from the state root.
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        Ok(Container {
            root: root.to_path_buf(),
            state: State::load(root, id)?,
        })
    }

    /// Ids of the containers under a state root.
    pub fn list(root: &Path) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let entries = match fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => return Err(io_err("read state root", root)(e)),
        };
        for e in entries.flatten() {
            if e.path().join("state.json").exists() {
                ids.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Host pid of the container's init (also after it exited).
    pub fn pid(&self) -> i32 {
        self.state.pid
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.state.cgroup.as_ref()
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.state.status(&self.root)
    }

    /// The OCI state document.
    pub fn oci_state(&self) -> OciState {
        self.state.oci(&self.root)
    }

    fn refuse(&self, status: Status, op: &'static str, hint: &'static str) -> Error {
        Error::BadStatus {
            id: self.state.id.clone(),
            status,
            op,
            hint,
        }
    }

    /// Release init to exec the user process, then run the poststart hooks. Returns once the
    /// user's program runs; with poststart hooks, once it has also settled (see
    /// [`Container::start_settled`]).
    pub fn start(&mut self) -> Result<()> {
        self.start_with(false)
    }

    /// [`Container::start`], returning only once the process has exec'd and then first blocked
    /// or exited (at most 250 ms): for `podd-oci start`, whose caller acts as soon as the
    /// command returns (engines and the OCI suite signal at once, and a shell that has just
    /// exec'd has not set its traps yet). The shim, which owns the process, does not wait.
    pub fn start_settled(&mut self) -> Result<()> {
        self.start_with(true)
    }

    fn start_with(&mut self, settle: bool) -> Result<()> {
        let status = self.status();
        if status != Status::Created {
            let hint = match status {
                Status::Running | Status::Paused => " (it was already started)",
                Status::Stopped => " (it has exited; delete it and create it again)",
                _ => "",
            };
            return Err(self.refuse(status, "start", hint));
        }
        if self.state.no_process {
            return Err(Error::InvalidSpec(format!(
                "container {:?} has no process in its config.json: there is nothing to start",
                self.state.id
            )));
        }
        let fifo = State::dir(&self.root, &self.state.id).join("exec.fifo");
        let fd = open(
            &fifo,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys_err(format!("open {}", fifo.display())))?;
        // SAFETY: open returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Init's byte says it is released. The timeout only bounds how long a dead init goes
        // unnoticed (a fifo opened before any writer reports no hang-up).
        loop {
            if wait_readable(&fd, Some(Duration::from_millis(100)))? {
                let mut b = [0u8; 1];
                match nix::unistd::read(fd.as_raw_fd(), &mut b) {
                    Ok(1) => break,
                    // End of file: init had the fifo open and closed it without a byte for us,
                    // so a concurrent `start` released it (or it died, below).
                    Ok(_) if self.state.alive() => {
                        return Err(self.refuse(
                            Status::Running,
                            "start",
                            " (it was already started)",
                        ));
                    }
                    Ok(_) | Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {}
                    Err(e) => return Err(sys_err(format!("read {}", fifo.display()))(e)),
                }
            }
            if !self.state.alive() {
                return Err(Error::Init(format!(
                    "container {:?} exited before it could start",
                    self.state.id
                )));
            }
        }
        // Without the fifo the status is `running` (see `State::status`), so the state file is
        // not written again; only if the fifo cannot be removed does `started` have to say so.
        self.state.started = true;
        match fs::remove_file(&fifo) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => self.state.save(&self.root)?,
        }
        // The spec: poststart hooks run "after the user-specified process is executed". Init
        // still has the startContainer hooks and its last steps to go once released; it holds
        // its write end of the fifo (CLOEXEC) until execve, so the end of file is the exec (or
        // init's death): an event, no polling.
        let mut end = [0u8; 1];
        while wait_readable(&fd, None)? {
            if nix::unistd::read(fd.as_raw_fd(), &mut end).unwrap_or(0) == 0 {
                break;
            }
        }
        drop(fd);
        let hooks = self.state.hooks.clone();
        // poststart hooks (and `podd-oci start`'s caller) meet a process past its first
        // steps; the shim's `start` returns as soon as the user's program runs.
        if settle
            || hooks
                .as_ref()
                .and_then(|h| h.poststart().as_ref())
                .is_some_and(|p| !p.is_empty())
        {
            self.wait_settled(Duration::from_millis(250));
        }
        // The process may already have exited; the hooks still get the pid it ran as.
        let st = OciState {
            status: Status::Running,
            pid: self.state.pid,
            ..self.oci_state()
        };
        hooks::run_all_warn(
            "poststart",
            hooks.as_ref().and_then(|h| h.poststart().as_ref()),
            &st,
        );
        Ok(())
    }

    /// After the exec: wait, at most `limit`, until the process first blocks (sleeping,
    /// stopped) or exits. A freshly exec'd program is still starting up (a shell has not set
    /// its traps, a server has not opened its socket); the poststart hooks and whoever reacts
    /// to `start` returning (a signal sent right away) then meet a process that got going.
    /// Only a program that computes for `limit` without ever blocking makes `start` wait
    /// that long.
    fn wait_settled(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            match state::proc_stat(self.state.pid) {
                Some((_, start)) if start != self.state.pid_start_time => return,
                Some(('R' | 'D' | 'W', _)) => std::thread::sleep(Duration::from_micros(200)),
                _ => return,
            }
        }
    }

    /// Send `signal` to init, or with `all` to every process in the container's cgroup.
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        let status = self.status();
        if status == Status::Stopped {
            return Err(self.refuse(status, "kill", " (it is not running)"));
        }
        if all && let Some(cg) = &self.state.cgroup {
            if signal == Signal::SIGKILL {
                return cg.kill_all();
            }
            for pid in cg.pids()? {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            return Ok(());
        }
        kill(Pid::from_raw(self.state.pid), signal)
            .map_err(sys_err(format!("kill {} with {signal}", self.state.pid)))
    }

    /// Wait for init to exit and return its exit code (128+signal when killed). Works when the
    /// caller created the container (init is its child).
    pub fn wait(&self) -> Result<i32> {
        loop {
            match waitpid(Pid::from_raw(self.state.pid), None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    return Err(sys_err(format!(
                        "wait for container init {}",
                        self.state.pid
                    ))(e));
                }
            }
        }
    }

    /// Freeze every process (cgroup.freeze).
    pub fn pause(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Running {
            return Err(self.refuse(status, "pause", ""));
        }
        self.state
            .cgroup
            .as_ref()
            .ok_or_else(|| Error::InvalidSpec("container has no cgroup".into()))?
            .set_frozen(true)
    }

    /// Thaw a paused container.
    pub fn resume(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Paused {
            return Err(self.refuse(status, "resume", ""));
        }
        self.state
            .cgroup
            .as_ref()
            .ok_or_else(|| Error::InvalidSpec("container has no cgroup".into()))?
            .set_frozen(false)
    }

    /// cgroup stats.
    pub fn stats(&self) -> Result<Stats> {
        self.state
            .cgroup
            .as_ref()
            .ok_or_else(|| Error::InvalidSpec("container has no cgroup".into()))?
            .stats()
    }

    /// Remove a stopped container (any container with `force`, which kills its processes):
    /// cgroup and state; then run the poststop hooks.
    pub fn delete(self, force: bool) -> Result<()> {
        let status = self.status();
        // The spec: deleting a container that is not stopped (created included) MUST fail and
        // have no effect; --force kills it first.
        if matches!(status, Status::Created | Status::Running | Status::Paused) && !force {
            return Err(self.refuse(status, "delete", "; stop it first or use delete --force"));
        }
        match &self.state.cgroup {
            Some(cg) => cg.destroy()?,
            None => {
                if self.state.alive() {
                    let _ = kill(Pid::from_raw(self.state.pid), Signal::SIGKILL);
                }
            }
        }
        self.reap_init();
        let dir = State::dir(&self.root, &self.state.id);
        let mut oci = self.state.oci(&self.root);
        oci.status = Status::Stopped;
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            // A concurrent delete of the same container got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("remove state directory", dir)(e)),
        }
        hooks::run_all_warn(
            "poststop",
            self.state
                .hooks
                .as_ref()
                .and_then(|h| h.poststop().as_ref()),
            &oci,
        );
        Ok(())
    }

    /// Reap init if it is our child (library use, `run`); ECHILD otherwise. The cgroup empties
    /// a moment before the exiting task becomes a zombie, so this waits for the exit on a
    /// pidfd (an event, at most 100 ms). Only the same process (start time, checked again once
    /// the pidfd pins it), so a reused pid is never reaped by mistake.
    fn reap_init(&self) {
        let pid = self.state.pid;
        let same =
            || state::proc_stat(pid).map(|(_, start)| start) == Some(self.state.pid_start_time);
        if !same() {
            return;
        }
        let pidfd = pidfd_open(pid);
        if !same() {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(100);
        loop {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                _ => return,
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match &pidfd {
                // Readable once the process has exited.
                Some(fd) => {
                    let _ = wait_readable(fd, Some(left));
                }
                // Kernels before 5.3: no pidfd, poll the old way.
                None => std::thread::sleep(Duration::from_micros(500)),
            }
        }
    }

    /// Start `process` inside the running container: it joins the container's namespaces and
    /// cgroup and gets the container's seccomp filter. Returns its host pid; the caller is its
    /// parent and reaps it (`waitpid`). Stdio is the caller's (or a pty with a console socket).
    pub fn exec(&self, process: &Process, opts: &ExecOptions) -> Result<i32> {
        let status = self.status();
        if status != Status::Running && status != Status::Created {
            return Err(self.refuse(status, "exec", " (it is not running)"));
        }
        // The cgroup namespace is joined last, by the process already in the container's
        // cgroup: where cgroup2 is mounted with nsdelegate, moving into a cgroup outside one's
        // own cgroup namespace is refused (clone3 CLONE_INTO_CGROUP fails with ENOENT).
        let (cgroupns, join): (Vec<_>, Vec<_>) = namespaces::of_process(self.state.pid)?
            .into_iter()
            .partition(|(t, _)| *t == LinuxNamespaceType::Cgroup);
        let cgroupns = cgroupns.into_iter().next().map(|(_, path)| path);
        let console = if process.terminal().unwrap_or(false) {
            let path = opts.console_socket.as_ref().ok_or_else(|| {
                Error::InvalidSpec(
                    "process.terminal is true but no console socket was given".into(),
                )
            })?;
            Some(OwnedFd::from(
                UnixStream::connect(path).map_err(io_err("connect to console socket", path))?,
            ))
        } else {
            None
        };
        // A container without a mount namespace of its own runs chrooted in ours: the process
        // gets the same root, through init's /proc/PID/root (opened now, entered after setns).
        let chrooted = !join.iter().any(|(t, _)| *t == LinuxNamespaceType::Mount);
        let root_dir = if chrooted {
            let p = PathBuf::from(format!("/proc/{}/root", self.state.pid));
            Some(fs::File::open(&p).map_err(io_err("open the container's root", p))?)
        } else {
            None
        };
        let plan = ProcessPlan {
            chrooted,
            ..ProcessPlan::new(
                process,
                self.state.seccomp.as_ref(),
                console,
                opts.preserve_fds,
            )?
        };
        let cgroup = self.state.cgroup.clone();
        let (parent_sock, child_sock) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(sys_err("socketpair"))?;
        // SAFETY: as in create: the child makes system calls and allocates, then _exits or execs.
        let stage1_pid = match unsafe { fork() }.map_err(sys_err("fork"))? {
            ForkResult::Child => {
                drop(parent_sock);
                // Nothing of the caller's crosses into the container but what `fds` lists
                // (the container's root, for a chrooted one, is entered and closed below).
                let root_fd = root_dir.as_ref().map(|f| f.as_raw_fd());
                let mut keep = plan.keep(&[child_sock.as_raw_fd()]);
                keep.extend(root_fd);
                fds::close_all_except(&keep);
                let mut cgroup_fd = None;
                let mut run = || -> Result<(i32, Option<std::fs::File>)> {
                    cgroup_fd = cgroup.as_ref().map(open_cgroup).transpose()?;
                    // Opened before the mount namespace changes what paths mean.
                    let cgroupns_fd = cgroupns
                        .as_ref()
                        .map(|p| std::fs::File::open(p).map_err(io_err("open cgroup namespace", p)))
                        .transpose()?;
                    namespaces::join_all(&join)?;
                    if let Some(fd) = root_fd {
                        nix::unistd::fchdir(fd).map_err(sys_err("enter the container's root"))?;
                        nix::unistd::chroot(".")
                            .map_err(sys_err("chroot into the container's root"))?;
                        let _ = nix::unistd::close(fd);
                    }
                    Ok((clone_process(CloneFlags::empty(), cgroup_fd)?, cgroupns_fd))
                };
                let r = run();
                // The host's cgroup directory is closed in both processes once clone3 used it.
                if let Some(fd) = cgroup_fd {
                    let _ = nix::unistd::close(fd);
                }
                match r {
                    Ok((0, cgroupns_fd)) => {
                        if let Some(fd) = cgroupns_fd {
                            nix::sched::setns(&fd, CloneFlags::CLONE_NEWCGROUP)
                                .map_err(sys_err("join the container's cgroup namespace"))
                                .unwrap_or_else(|e| fail_child(&child_sock, e));
                            drop(fd);
                        }
                        let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
                        nix::unistd::setsid()
                            .map_err(sys_err("setsid"))
                            .unwrap_or_else(|e| fail_child(&child_sock, e));
                        match plan
                            .prepare()
                            .and_then(|p| plan.exec(&p, &[child_sock.as_raw_fd()]))
                        {
                            Ok(never) => match never {},
                            Err(e) => fail_child(&child_sock, e),
                        }
                    }
                    Ok((pid, _)) => {
                        let _ = send_msg(&child_sock, &Msg::Pid(pid));
                        exit_now(0)
                    }
                    Err(e) => fail_child(&child_sock, e),
                }
            }
            ForkResult::Parent { child } => child,
        };
        drop(child_sock);
        drop(plan.console);
        let mut pid = None;
        // The socket closes on a successful execve (CLOEXEC); an error message arrives otherwise.
        let r = loop {
            match recv_msg(&parent_sock) {
                Ok(Some(Msg::Pid(p))) => pid = Some(p),
                Ok(Some(Msg::Error(e))) => break Err(Error::Init(e)),
                Ok(Some(m)) => break Err(Error::Init(format!("unexpected exec message {m:?}"))),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let _ = waitpid(stage1_pid, None);
        match (r, pid) {
            (Ok(()), Some(p)) => Ok(p),
            (Ok(()), None) => Err(Error::Init(
                "exec setup exited without reporting a pid".into(),
            )),
            (Err(e), Some(p)) => {
                let _ = waitpid(Pid::from_raw(p), None);
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }
}

/// Borrow an OwnedFd as BorrowedFd (helper for nix's poll API).
trait AsFdRef {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// A pidfd for `pid` (Linux 5.3), or None where the kernel has none.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Wait until `fd` is readable or hung up (`None`: no limit). Returns false on timeout.
fn wait_readable(fd: &OwnedFd, timeout: Option<Duration>) -> Result<bool> {
    let timeout = match timeout {
        // Rounded up to whole milliseconds, so a short wait does not become a busy loop.
        Some(t) => nix::poll::PollTimeout::try_from(t.as_micros().div_ceil(1000))
            .unwrap_or(nix::poll::PollTimeout::MAX),
        None => nix::poll::PollTimeout::NONE,
    };
    loop {
        let mut pfd = [nix::poll::PollFd::new(
            fd.as_fd_ref(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut pfd, timeout) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(sys_err("poll")(e)),
        }
    }
}

/// Raw fd helper for tests and callers that pass fds to exec.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// Wait up to `timeout` for `pid` to disappear (used when killing a container we do not parent).
pub fn wait_gone(pid: i32, start_time: u64, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while state::pid_start_time(pid) == Some(start_time) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

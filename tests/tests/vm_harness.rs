//! VM tests that prove the VM harness is real: they need the guest's own cgroup v2 with its
//! controllers (this host has none) and its eBPF cgroup hooks. Run by `cargo xtask vm-test`.
//!
//! Children are forked and wait on a pipe until the parent has moved them into the test
//! cgroup; between fork and exit they only make raw syscalls (no allocation), which is what is
//! safe after fork in a threaded program.
// The tests print what they measured; `--show-output` shows it in the VM log.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PREFIX: &str = "podd-vm-harness-";

fn require_vm() {
    assert_eq!(
        std::env::var("PODD_IN_VM").as_deref(),
        Ok("1"),
        "this test needs the VM's cgroup v2 controllers: run it with `cargo xtask vm-test`"
    );
}

/// A child cgroup of the guest's root, removed (with anything left in it) on drop.
struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let path = Path::new(CGROUP_ROOT).join(format!("{PREFIX}{name}"));
        if path.exists() {
            remove_cgroup(&path);
        }
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        TestCgroup { path }
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.path.join(file);
        std::fs::write(&path, value)
            .unwrap_or_else(|e| panic!("writing {value:?} to {}: {e}", path.display()));
    }

    fn read(&self, file: &str) -> String {
        let path = self.path.join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// A flat-keyed file such as memory.events: `oom_kill 1`.
    fn keyed(&self, file: &str) -> BTreeMap<String, u64> {
        self.read(file)
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(' ')?;
                Some((key.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// Forks a child that runs `body` inside this cgroup and exits with its result.
    fn fork_into(&self, body: fn() -> i32) -> Child {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array we own.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just returned by pipe2 and are owned by nothing else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only makes raw syscalls (read, the body's, _exit) and never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let mut byte = 0u8;
            // SAFETY: a raw read into a local byte, then the body and _exit: async-signal-safe.
            unsafe {
                libc::read(read_end.as_raw_fd(), (&raw mut byte).cast(), 1);
                libc::_exit(body());
            }
        }
        drop(read_end);
        let child = Child { pid };
        self.write("cgroup.procs", &pid.to_string());
        // SAFETY: writing one byte from a local to the pipe's write end, which we own.
        let written = unsafe { libc::write(write_end.as_raw_fd(), (&raw const pid).cast(), 1) };
        assert_eq!(
            written,
            1,
            "releasing the child: {}",
            std::io::Error::last_os_error()
        );
        child
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.path);
    }
}

/// Kills what is left in a cgroup and removes it.
fn remove_cgroup(path: &Path) {
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::remove_dir(path).is_ok() || !path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("could not remove cgroup {}", path.display());
}

/// A forked child; reaped (killed first if need be) on drop.
struct Child {
    pid: libc::pid_t,
}

#[derive(Debug, PartialEq, Eq)]
enum Exit {
    Code(i32),
    Signal(i32),
}

impl Child {
    fn wait(mut self) -> Exit {
        let exit = wait_pid(self.pid);
        self.pid = 0;
        exit
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: kill and reap our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            wait_pid(self.pid);
        }
    }
}

fn wait_pid(pid: libc::pid_t) -> Exit {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a local status.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EINTR),
            "waitpid {pid}: {err}"
        );
    }
    if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    }
}

fn errno() -> i32 {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Child body: map 256 MiB and write to every page. Exit 0 means it survived.
fn touch_256_mib() -> i32 {
    const SIZE: usize = 256 << 20;
    // SAFETY: a fresh private anonymous mapping, written only within its bounds.
    unsafe {
        let memory = libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if memory == libc::MAP_FAILED {
            return 2;
        }
        let bytes = memory.cast::<u8>();
        for offset in (0..SIZE).step_by(4096) {
            std::ptr::write_volatile(bytes.add(offset), 1);
        }
    }
    0
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn guest_is_debian_6_1_with_cgroup2_controllers_and_bpffs() {
    require_vm();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(release.starts_with("6.1."), "guest kernel is {release}");
    let controllers =
        std::fs::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.subtree_control")).unwrap();
    for wanted in ["cpu", "memory", "pids", "io"] {
        assert!(
            controllers.split_whitespace().any(|c| c == wanted),
            "{wanted} missing from {controllers}"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("bpf /sys/fs/bpf bpf ")),
        "{mounts}"
    );
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("cgroup2 /sys/fs/cgroup cgroup2 ")),
        "{mounts}"
    );
    // The host root is read-only; /tmp is a writable tmpfs.
    let err = std::fs::write("/podd-vm-harness-probe", "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    std::fs::write("/tmp/podd-vm-harness-probe", "x").unwrap();
    std::fs::remove_file("/tmp/podd-vm-harness-probe").unwrap();
    println!(
        "guest kernel {}, cgroup2 controllers: {}",
        release.trim(),
        controllers.trim()
    );
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn memory_max_oom_kills_a_process_touching_256_mib() {
    require_vm();
    let cgroup = TestCgroup::new("oom");
    cgroup.write("memory.max", "32M");
    if cgroup.path.join("memory.swap.max").exists() {
        cgroup.write("memory.swap.max", "0");
    }
    assert_eq!(cgroup.read("memory.max").trim(), (32u64 << 20).to_string());
    let exit = cgroup.fork_into(touch_256_mib).wait();
    let events = cgroup.keyed("memory.events");
    println!(
        "memory.max=32M, child touching 256 MiB ended with {exit:?}; memory.events: {events:?}"
    );
    assert_eq!(
        exit,
        Exit::Signal(libc::SIGKILL),
        "the child should have been OOM-killed"
    );
    assert!(
        events.get("oom_kill").copied().unwrap_or(0) >= 1,
        "memory.events shows no oom_kill: {events:?}"
    );
}

/// Child body: fork until the kernel refuses. Exit code: how many forks succeeded before
/// EAGAIN (grandchildren are killed and reaped first), or 200 for another error, 100 if never refused.
fn fork_until_refused() -> i32 {
    let mut children = [0 as libc::pid_t; 32];
    let mut count = 0;
    let mut result = 100;
    while count < children.len() {
        // SAFETY: the grandchild only pauses until it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            }
        }
        if pid < 0 {
            result = if errno() == libc::EAGAIN {
                count as i32
            } else {
                200
            };
            break;
        }
        children[count] = pid;
        count += 1;
    }
    for &pid in &children[..count] {
        // SAFETY: kill and reap our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    result
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers; run by cargo xtask vm-test"]
fn pids_max_stops_forks_with_eagain() {
    require_vm();
    let cgroup = TestCgroup::new("pids");
    cgroup.write("pids.max", "4");
    let exit = cgroup.fork_into(fork_until_refused).wait();
    let events = cgroup.keyed("pids.events");
    println!("pids.max=4: the child forked {exit:?} times before EAGAIN; pids.events: {events:?}");
    // The child itself is one of the four.
    assert_eq!(
        exit,
        Exit::Code(3),
        "expected 3 forks then EAGAIN (200: another errno, 100: never refused)"
    );
    assert!(
        events.get("max").copied().unwrap_or(0) >= 1,
        "pids.events shows no refusal: {events:?}"
    );
}

// The raw bpf(2) interface, just enough for one cgroup program.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a live, initialised bpf_attr prefix of the size we pass.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `r0 = 0; exit`: a connect4 hook that refuses every IPv4 connect with EPERM.
fn load_refuse_connect4() -> OwnedFd {
    let insns: [u64; 2] = [
        0xb7, // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 0
        0x95, // BPF_JMP | BPF_EXIT
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"podd_vm_probe");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_INET4_CONNECT,
        ..ProgLoadAttr::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr).unwrap_or_else(|e| {
        panic!(
            "BPF_PROG_LOAD: {e}; verifier log: {}",
            String::from_utf8_lossy(&log).trim_end_matches('\0')
        )
    });
    // SAFETY: the kernel returned a new program fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn attached_programs(cgroup_fd: &std::fs::File) -> u32 {
    let mut attr = ProgQueryAttr {
        target_fd: cgroup_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_INET4_CONNECT,
        ..ProgQueryAttr::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).expect("BPF_PROG_QUERY");
    attr.prog_cnt
}

/// Child body: UDP connect to 127.0.0.1:9. 0: connected, 1: EPERM, 2: another error.
fn udp_connect_loopback() -> i32 {
    // SAFETY: raw socket calls on a local address struct; the fd dies with the process.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return 2;
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 9u16.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        match rc {
            0 => 0,
            _ if errno() == libc::EPERM => 1,
            _ => 2,
        }
    }
}

#[test]
#[ignore = "vm: needs cgroup v2 with eBPF cgroup hooks; run by cargo xtask vm-test"]
fn ebpf_cgroup_connect4_program_loads_attaches_and_detaches() {
    require_vm();
    let cgroup = TestCgroup::new("bpf");
    let cgroup_dir = std::fs::File::open(&cgroup.path).expect("opening the cgroup folder");
    assert_eq!(
        cgroup.fork_into(udp_connect_loopback).wait(),
        Exit::Code(0),
        "connect before attach"
    );

    let prog = load_refuse_connect4();
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: cgroup_dir.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_INET4_CONNECT,
        flags: 0,
    };
    let link = bpf(BPF_LINK_CREATE, &mut attr).expect("BPF_LINK_CREATE to the test cgroup");
    // SAFETY: the kernel returned a new link fd that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(link as i32) };
    assert_eq!(attached_programs(&cgroup_dir), 1);
    let refused = cgroup.fork_into(udp_connect_loopback).wait();
    assert_eq!(
        refused,
        Exit::Code(1),
        "connect from the cgroup should be refused with EPERM"
    );

    // Closing the last link fd detaches the program.
    drop(link);
    drop(prog);
    assert_eq!(attached_programs(&cgroup_dir), 0);
    assert_eq!(
        cgroup.fork_into(udp_connect_loopback).wait(),
        Exit::Code(0),
        "connect after detach"
    );
    println!(
        "cgroup/connect4 program: attached via bpf link (1 program), connect refused with EPERM, detached (0 programs)"
    );
}

/// Paths for the pivot_root child, made before fork so the child does not allocate.
struct PivotPaths {
    new_root: std::ffi::CString,
    put_old: std::ffi::CString,
}

static PIVOT_PATHS: std::sync::OnceLock<PivotPaths> = std::sync::OnceLock::new();

/// Child body: a private mount namespace, a tmpfs, pivot_root into it. 0: pivoted, else the
/// step that failed (11-15).
fn pivot_into_tmpfs() -> i32 {
    let Some(paths) = PIVOT_PATHS.get() else {
        return 9;
    };
    // SAFETY: raw syscalls on NUL-terminated paths that outlive the child.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return 11;
        }
        let none = c"none".as_ptr();
        if libc::mount(
            none,
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return 12;
        }
        if libc::mount(
            c"tmpfs".as_ptr(),
            paths.new_root.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return 13;
        }
        if libc::mkdir(paths.put_old.as_ptr(), 0o700) != 0 {
            return 14;
        }
        if libc::syscall(
            libc::SYS_pivot_root,
            paths.new_root.as_ptr(),
            paths.put_old.as_ptr(),
        ) != 0
        {
            return 15;
        }
    }
    0
}

#[test]
#[ignore = "vm: proves the guest root is a real mount, not the initramfs; run by cargo xtask vm-test"]
fn pivot_root_works_in_a_new_mount_namespace() {
    require_vm();
    // Container runtimes pivot_root; that fails when / is the initramfs, which is why the
    // harness switch_roots into the host root.
    let dir = Path::new("/tmp/podd-vm-harness-pivot");
    std::fs::create_dir_all(dir).unwrap();
    let paths = PIVOT_PATHS.get_or_init(|| PivotPaths {
        new_root: std::ffi::CString::new(dir.to_str().unwrap()).unwrap(),
        put_old: std::ffi::CString::new(dir.join("old").to_str().unwrap()).unwrap(),
    });
    assert_eq!(paths.new_root.as_bytes(), dir.to_str().unwrap().as_bytes());
    // SAFETY: the child only makes raw syscalls and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: exits the forked child without unwinding.
        unsafe { libc::_exit(pivot_into_tmpfs()) };
    }
    let exit = wait_pid(pid);
    std::fs::remove_dir(dir).unwrap();
    println!("pivot_root into a tmpfs in a new mount namespace: {exit:?}");
    assert_eq!(
        exit,
        Exit::Code(0),
        "pivot_root failed (11 unshare, 12 make-private, 13 mount, 14 mkdir, 15 pivot_root)"
    );
}

#[test]
#[ignore = "vm: proves the harness can fail; run by cargo xtask vm-test"]
fn fails_on_purpose_when_asked() {
    require_vm();
    if std::env::var("PODD_VM_FAIL_ON_PURPOSE").as_deref() == Ok("1") {
        panic!(
            "failing on purpose: PODD_VM_FAIL_ON_PURPOSE=1 (cargo xtask vm-test --fail-on-purpose)"
        );
    }
}

#[test]
#[ignore = "vm: proves a guest kernel panic fails the run; run by cargo xtask vm-test"]
fn panics_the_guest_kernel_when_asked() {
    require_vm();
    if std::env::var("PODD_VM_PANIC_ON_PURPOSE").as_deref() == Ok("1") {
        // sysrq 'c' crashes the kernel: "Kernel panic - not syncing: sysrq triggered crash".
        std::fs::write("/proc/sysrq-trigger", "c").expect("writing /proc/sysrq-trigger");
        unreachable!("the guest kernel should have panicked");
    }
}

#[test]
#[ignore = "vm: checks the other tests left nothing behind; run by cargo xtask vm-test"]
fn zz_no_test_cgroups_leak() {
    require_vm();
    // Runs last (tests run in name order with one thread): every cgroup above was removed.
    let leftovers: Vec<String> = std::fs::read_dir(CGROUP_ROOT)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(PREFIX))
        .collect();
    assert!(leftovers.is_empty(), "leaked cgroups: {leftovers:?}");
}

//! Class 1: container escape through a leaked host fd (the CVE-2024-21626 class), and the
//! sealed runtime binary (the CVE-2019-5736 class).
//!
//! The attacker writes the pod spec or the image: `process.cwd` (a pod's `workingDir`, an
//! image's `WorkingDir`, an exec's cwd) set to `/proc/self/fd/N` for a host directory fd the
//! runtime left open, then `../../..` to the host's root. Here the caller leaks one on purpose
//! (a directory holding a canary file, opened without O_CLOEXEC, as a careless shim might), and
//! the runtime's own fds (the cgroup directory of stage 1, the host's /proc) are fair game too.
//! Every N from 3 to 63 is tried; the runtime must refuse, or the process must see only its root.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};
use podd_runtime::{Container, CreateOptions, ExecOptions};

/// A busybox rootfs, a state root, a cgroup parent and a canary directory outside the rootfs
/// whose fd is left open (inheritable) in this process. Drop removes all of it.
pub(crate) struct Lab {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    state_root: PathBuf,
    cgroup_root: PathBuf,
    cgroup_parent: String,
    pub canary_dir: tempfile::TempDir,
    pub secret: String,
    /// The leaked fd's number (its OwnedFd closes it on drop).
    pub leaked: i32,
    _leaked: OwnedFd,
}

/// A root filesystem with the host's static busybox and its applet links.
pub(crate) fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("needs Debian's busybox-static at /bin/busybox");
    for applet in podd_image::testing::busybox_applets().unwrap() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    for d in ["etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
}

impl Lab {
    pub fn new(name: &str) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix(&format!("podd-sec-{name}-"))
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let canary_dir = tempfile::Builder::new()
            .prefix(&format!("podd-sec-{name}-host-"))
            .tempdir()
            .unwrap();
        let secret = format!("podd-host-secret-{name}-{}", std::process::id());
        std::fs::write(canary_dir.path().join("canary"), &secret).unwrap();
        let path = CString::new(canary_dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: open with a NUL-terminated path; deliberately without O_CLOEXEC (the leak).
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        assert!(fd >= 0, "open the canary directory");
        Lab {
            state_root: PathBuf::from(format!("/run/podd-sec-{name}-{}", std::process::id())),
            cgroup_root: podd_runtime::cgroups::detect_root().unwrap(),
            cgroup_parent: format!("podd-sec-{name}-{}", std::process::id()),
            rootfs,
            dir,
            canary_dir,
            secret,
            leaked: fd,
            // SAFETY: open returned this fd and nothing else owns it.
            _leaked: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }

    /// A runc-like default spec running `args` in `cwd`.
    pub fn spec(&self, id: &str, args: &[&str], cwd: &str) -> Spec {
        let mut spec = Spec::default();
        let mut root = spec.root().clone().unwrap();
        root.set_path(self.rootfs.clone());
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
        let mut p = spec.process().clone().unwrap();
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        p.set_terminal(Some(false));
        p.set_cwd(PathBuf::from(cwd));
        spec.set_process(Some(p));
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{}/{id}", self.cgroup_parent))));
        spec.set_linux(Some(linux));
        spec
    }

    pub fn opts(&self) -> CreateOptions {
        let mut o = CreateOptions::new(&self.state_root);
        o.cgroup_root = Some(self.cgroup_root.clone());
        o
    }

    /// Create, start and wait for a container; `Err` when the runtime refused it.
    pub fn run(&self, id: &str, spec: &Spec) -> Result<i32, String> {
        let mut c = Container::create(id, self.dir.path(), spec, &self.opts())
            .map_err(|e| e.to_string())?;
        let r = c
            .start()
            .map_err(|e| e.to_string())
            .and_then(|_| c.wait().map_err(|e| e.to_string()));
        let _ = c.delete(true);
        r
    }

    /// The shell snippet an attacker runs in the escaped cwd: the canary by its relative name and
    /// by climbing to the host's root. Output goes to `/out-<tag>` in the container's root.
    pub fn steal(&self, tag: &str) -> String {
        let abs = self.canary_dir.path().join("canary");
        let climb = "../".repeat(24);
        format!(
            "{{ pwd; cat canary; cat {climb}{}; }} > /out-{tag} 2>&1",
            abs.display().to_string().trim_start_matches('/')
        )
    }

    /// What the container wrote for `tag` (empty when it never ran).
    pub fn output(&self, tag: &str) -> String {
        std::fs::read_to_string(self.rootfs.join(format!("out-{tag}"))).unwrap_or_default()
    }

    fn cgroup_dir(&self) -> PathBuf {
        self.cgroup_root.join(&self.cgroup_parent)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(ids) = Container::list(&self.state_root) {
            for id in ids {
                if let Ok(c) = Container::load(&self.state_root, &id) {
                    let _ = c.delete(true);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.state_root);
        if let Ok(d) = std::fs::read_dir(self.cgroup_dir()) {
            for e in d.flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(self.cgroup_dir());
    }
}

/// The cwds an attacker tries: every fd number, and magic-link variants on the leaked one.
fn hostile_cwds(leaked: i32) -> Vec<String> {
    let mut cwds: Vec<String> = (3..64).map(|n| format!("/proc/self/fd/{n}")).collect();
    cwds.extend([
        format!("/proc/self/fd/{leaked}/"),
        format!("/proc/self/fd/{leaked}/../../.."),
        format!("/proc/thread-self/fd/{leaked}"),
        format!("/proc/1/fd/{leaked}"),
        "/proc/self/cwd/..".to_string(),
        "/proc/self/root/../..".to_string(),
        "/proc/1/cwd".to_string(),
    ]);
    cwds
}

/// Assert that an attempt neither leaked the secret nor ran outside the container's root.
fn assert_contained(lab: &Lab, what: &str, cwd: &str, result: &Result<i32, String>, out: &str) {
    assert!(
        !out.contains(&lab.secret),
        "{what} with cwd {cwd} read the host's canary {} (the escape works): {out}",
        lab.canary_dir.path().display()
    );
    if result.is_ok() && !out.is_empty() {
        let pwd = out.lines().next().unwrap_or_default();
        assert!(
            pwd.starts_with('/') && !pwd.contains("unreachable"),
            "{what} with cwd {cwd} ran outside the container's root (pwd {pwd:?})"
        );
    }
}

#[test]
fn process_cwd_through_a_leaked_fd_cannot_reach_the_host() {
    let lab = Lab::new("fdcwd");
    let mut refused = 0;
    for (i, cwd) in hostile_cwds(lab.leaked).iter().enumerate() {
        let tag = format!("init{i}");
        let spec = lab.spec(&tag, &["/bin/sh", "-c", &lab.steal(&tag)], cwd);
        let r = lab.run(&tag, &spec);
        let out = lab.output(&tag);
        println!("cwd {cwd}: {r:?} {out:?}");
        assert_contained(&lab, "a container", cwd, &r, &out);
        if let Err(e) = &r {
            assert!(
                e.contains("process.cwd"),
                "refused, but not for its cwd {cwd}: {e}"
            );
            refused += 1;
        }
    }
    assert!(refused > 0, "no hostile cwd was refused");
}

#[test]
fn exec_cwd_through_a_leaked_fd_cannot_reach_the_host() {
    let lab = Lab::new("fdexec");
    let spec = lab.spec("victim", &["/bin/sleep", "1000"], "/");
    let mut c = Container::create("victim", lab.dir.path(), &spec, &lab.opts()).unwrap();
    c.start().unwrap();
    for (i, cwd) in hostile_cwds(lab.leaked).iter().enumerate() {
        let tag = format!("exec{i}");
        let mut p: Process = spec.process().clone().unwrap();
        p.set_args(Some(vec!["/bin/sh".into(), "-c".into(), lab.steal(&tag)]));
        p.set_cwd(PathBuf::from(cwd));
        let r = c
            .exec(&p, &ExecOptions::default())
            .map_err(|e| e.to_string())
            .map(|pid| match waitpid(Pid::from_raw(pid), None) {
                Ok(WaitStatus::Exited(_, code)) => code,
                other => panic!("exec'd process {pid}: {other:?}"),
            });
        let out = lab.output(&tag);
        println!("exec cwd {cwd}: {r:?} {out:?}");
        assert_contained(&lab, "an exec", cwd, &r, &out);
        if let Err(e) = &r {
            assert!(
                e.contains("process.cwd"),
                "exec refused, but not for its cwd {cwd}: {e}"
            );
        }
    }
    c.delete(true).unwrap();
}

/// The fd numbers `pid` holds, read from the host.
fn fds_of(pid: i32) -> Vec<i32> {
    // After its execve: setup's own fds are gone by then.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "{pid} never became sleep");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

#[test]
fn processes_in_the_container_hold_only_stdio() {
    let lab = Lab::new("fdlist");
    // `sleep` opens nothing: whatever it holds, the runtime handed it.
    let spec = lab.spec("lister", &["/bin/sleep", "1000"], "/");
    let mut c = Container::create("lister", lab.dir.path(), &spec, &lab.opts()).unwrap();
    c.start().unwrap();
    let init_fds = fds_of(c.pid());
    let pid = c
        .exec(spec.process().as_ref().unwrap(), &ExecOptions::default())
        .unwrap();
    let exec_fds = fds_of(pid);
    c.delete(true).unwrap();
    let _ = waitpid(Pid::from_raw(pid), None);
    for (who, fds) in [("init", init_fds), ("exec", exec_fds)] {
        assert_eq!(
            fds,
            [0, 1, 2],
            "the container's {who} process holds fds beyond stdio (fd {} was leaked by the \
             caller)",
            lab.leaked
        );
    }
}

/// The directory holding the workspace's binaries (podd-oci, podd-shim) of this build.
fn bin_dir() -> PathBuf {
    let dir = podd_tests::cluster::bin_dir().unwrap();
    for b in ["podd-oci", "podd-shim"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: build it first with `cargo build -p podd-runtime -p podd-pod`",
            dir.join(b).display()
        );
    }
    dir
}

/// `/proc/<pid>/exe` of a runtime process must be a copy nobody can write: a sealed memfd, or
/// the binary on a read-only (detached) mount. A write through it must fail and the host's
/// file must stay as it was.
fn assert_sealed_exe(pid: u32, what: &str, host_file: &Path) {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let target = std::fs::read_link(&exe).unwrap();
    let memfd = target.to_string_lossy().starts_with("/memfd:");
    let readonly = nix::sys::statvfs::statvfs(&exe)
        .is_ok_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    assert!(
        memfd || readonly,
        "{what}'s /proc/{pid}/exe is {} on a writable mount: the host's binary, which a \
         container could overwrite through it",
        target.display()
    );
    let before = std::fs::read(host_file).unwrap();
    let wrote = std::fs::OpenOptions::new()
        .write(true)
        .open(&exe)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\x7fELF-overwritten"));
    assert!(
        wrote.is_err(),
        "{what}'s binary took a write through /proc/{pid}/exe"
    );
    if readonly {
        use std::os::unix::fs::PermissionsExt;
        let chmod = std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o777));
        assert_eq!(
            chmod.map_err(|e| e.raw_os_error()),
            Err(Some(libc::EROFS)),
            "{what}'s binary is not on a read-only mount"
        );
    }
    assert_eq!(
        before,
        std::fs::read(host_file).unwrap(),
        "{what}'s host binary changed"
    );
}

#[test]
fn the_runtime_runs_from_a_sealed_copy() {
    let bin = bin_dir();
    let lab = Lab::new("sealed");
    let spec = lab.spec("sealed", &["/bin/sleep", "1000"], "/");
    let bundle = lab.dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    spec.save(bundle.join("config.json")).unwrap();
    let mut run = std::process::Command::new(bin.join("podd-oci"))
        .arg("--root")
        .arg(&lab.state_root)
        .arg("--cgroup-root")
        .arg(&lab.cgroup_root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg("sealed")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Container::load(&lab.state_root, "sealed").is_err() {
        assert!(
            Instant::now() < deadline,
            "podd-oci run never created the container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_sealed_exe(run.id(), "podd-oci run", &bin.join("podd-oci"));
    let _ = Container::load(&lab.state_root, "sealed")
        .map(|c| c.kill(nix::sys::signal::Signal::SIGKILL, true));
    let _ = run.wait();

    // podd-shim seals itself first thing; it then blocks opening its log, a fifo here.
    let pod_dir = lab.dir.path().join("pod");
    std::fs::create_dir_all(&pod_dir).unwrap();
    nix::unistd::mkfifo(
        &pod_dir.join("shim.log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut shim = std::process::Command::new(bin.join("podd-shim"))
        .arg(&pod_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exe = std::fs::read_link(format!("/proc/{}/exe", shim.id())).unwrap_or_default();
        let sealed = exe.to_string_lossy().starts_with("/memfd:")
            || nix::sys::statvfs::statvfs(&PathBuf::from(format!("/proc/{}/exe", shim.id())))
                .is_ok_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        if sealed {
            break;
        }
        if Instant::now() > deadline || shim.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_sealed_exe(shim.id(), "podd-shim", &bin.join("podd-shim"));
    let _ = shim.kill();
    let _ = shim.wait();
}

#[test]
fn an_image_working_dir_through_a_leaked_fd_cannot_reach_the_host() {
    use super::devices::pod_node::PodNode;
    use podd_image::Compression;
    use podd_image::testing::{LayoutWriter, ProcessConfig, busybox_layer};

    let lab = Lab::new("fdimage");
    let node = PodNode::new("fdimg", 233);
    let m = node.manager();
    // The image alone carries the attack: its config's WorkingDir, the pod spec has none. The
    // shim inherits this process's leaked fd; the others are the shim's and the runtime's own.
    let layout = node.path("evil-layout");
    let mut w = LayoutWriter::create(&layout).unwrap();
    let base = busybox_layer().unwrap();
    let mut cwds: Vec<String> = (3..12).map(|n| format!("/proc/self/fd/{n}")).collect();
    cwds.push(format!("/proc/self/fd/{}/../../..", lab.leaked));
    if lab.leaked >= 12 {
        cwds.push(format!("/proc/self/fd/{}", lab.leaked));
    }
    let mut uids = Vec::new();
    for (i, cwd) in cwds.iter().enumerate() {
        let name = format!("evil{i}");
        let mut process =
            ProcessConfig::cmd(&["sh", "-c", &format!("{}; sleep 3600", lab.steal("x"))]);
        process.working_dir = cwd.clone();
        w.add_image(
            &format!("{name}:latest"),
            &[(&base, Compression::Gzip)],
            &process,
        )
        .unwrap();
        let images =
            std::collections::BTreeMap::from([(name.clone(), node.import(&layout, &name))]);
        let uid = format!("sec-fdimg-{i}");
        let pod: podd_api::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("fdimg-{i}"), "namespace": "default", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": name}], "terminationGracePeriodSeconds": 1}
        }))
        .unwrap();
        m.run_pod(&pod, &images).unwrap();
        uids.push((uid, cwd.clone()));
    }
    // Give every pod time to start (or be refused, and retried) a few times.
    std::thread::sleep(Duration::from_secs(4));
    for (uid, cwd) in &uids {
        let status = format!("{:?}", m.status(uid));
        println!("image WorkingDir {cwd}: {status}");
        assert!(
            !status.contains(&lab.secret),
            "a pod whose image sets WorkingDir {cwd} read the host's canary: {status}"
        );
        assert!(
            status.contains("Running") || status.contains("process.cwd"),
            "the pod with image WorkingDir {cwd} failed for another reason: {status}"
        );
        if status.contains("Running") {
            let (_, out) = super::devices::pod_node::exec_sh(&m, uid, "cat /out-x; pwd");
            assert!(
                !out.contains(&lab.secret),
                "a pod whose image sets WorkingDir {cwd} read the host's canary: {out}"
            );
        }
    }
    // Nothing the pods wrote (logs, state) holds the secret.
    let mut todo = vec![node.tmp.path().to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() && e.metadata().is_ok_and(|md| md.len() < 1 << 20) {
                let text = std::fs::read(e.path()).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&text).contains(&lab.secret),
                    "the host's canary leaked into {}",
                    e.path().display()
                );
            }
        }
    }
    for (uid, _) in &uids {
        let _ = m.stop_pod(uid);
    }
}

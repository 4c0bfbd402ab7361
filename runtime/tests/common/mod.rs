//! Test helpers: a busybox bundle, a per-test state root and cgroup parent, all removed on Drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oci_spec::runtime::Spec;

/// The podd-oci binary under test.
pub fn podd_oci() -> &'static str {
    env!("CARGO_BIN_EXE_podd-oci")
}

/// A root filesystem with Debian's static busybox and its applet links.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("needs Debian's busybox-static at /bin/busybox");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    for d in ["etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
}

/// A test environment: temp bundle dir, its own state root, and its own cgroup parent
/// `podd-rt-test-<name>-<pid>` under the cgroup2 root. Drop force-deletes every container and
/// removes all of it.
pub struct Env {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub cgroup_root: PathBuf,
    pub cgroup_parent: String,
    pub rootfs: PathBuf,
}

impl Env {
    pub fn new(name: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!("podd-rt-test-{name}-"))
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let root = PathBuf::from(format!("/run/podd-rt-test-{name}-{}", std::process::id()));
        let cgroup_root = podd_runtime::cgroups::detect_root().unwrap();
        let cgroup_parent = format!("podd-rt-test-{name}-{}", std::process::id());
        Env {
            name: name.into(),
            dir,
            root,
            cgroup_root,
            cgroup_parent,
            rootfs,
        }
    }

    /// A runc-like default spec running `args`, with a cgroup under this env's parent.
    pub fn spec(&self, id: &str, args: &[&str]) -> Spec {
        let mut spec = Spec::default();
        let mut root = spec.root().clone().unwrap();
        root.set_path(self.rootfs.clone());
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
        let mut p = spec.process().clone().unwrap();
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        p.set_terminal(Some(false));
        spec.set_process(Some(p));
        spec.set_hostname(Some(format!("{id}-host")));
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{}/{id}", self.cgroup_parent))));
        spec.set_linux(Some(linux));
        spec
    }

    /// Write `spec` as `<dir>/<id>/config.json` and return the bundle path.
    pub fn bundle(&self, id: &str, spec: &Spec) -> PathBuf {
        let b = self.dir.path().join(format!("bundle-{id}"));
        std::fs::create_dir_all(&b).unwrap();
        spec.save(b.join("config.json")).unwrap();
        b
    }

    /// Run podd-oci with this env's --root and --cgroup-root.
    pub fn oci(&self, args: &[&str]) -> Output {
        Command::new(podd_oci())
            .arg("--root")
            .arg(&self.root)
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .args(args)
            .output()
            .unwrap()
    }

    /// Run podd-oci for a command that leaves a container process behind (create, run -d):
    /// the container inherits stdio, so stdout goes to /dev/null and stderr to a file (a pipe
    /// would stay open as long as the container lives). Returns (success, stderr).
    pub fn oci_bg(&self, args: &[&str]) -> (bool, String) {
        let err_path = self
            .dir
            .path()
            .join(format!("stderr-{}", args.last().unwrap_or(&"x")));
        let err = std::fs::File::create(&err_path).unwrap();
        let status = Command::new(podd_oci())
            .arg("--root")
            .arg(&self.root)
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .status()
            .unwrap();
        (
            status.success(),
            std::fs::read_to_string(&err_path).unwrap_or_default(),
        )
    }

    /// `podd-oci run` of `spec` in the foreground; returns (exit code, stdout, stderr).
    pub fn run(&self, id: &str, spec: &Spec) -> (i32, String, String) {
        let b = self.bundle(id, spec);
        let out = self.oci(&["run", "--bundle", b.to_str().unwrap(), id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    pub fn opts(&self) -> podd_runtime::CreateOptions {
        let mut o = podd_runtime::CreateOptions::new(&self.root);
        o.cgroup_root = Some(self.cgroup_root.clone());
        o
    }

    pub fn cgroup_dir(&self) -> PathBuf {
        self.cgroup_root.join(&self.cgroup_parent)
    }

    /// Nothing of this env's containers is left: no state dirs, no cgroups.
    pub fn assert_clean(&self) {
        let states: Vec<_> = std::fs::read_dir(&self.root)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(states.is_empty(), "leftover state: {states:?}");
        let cgs: Vec<_> = std::fs::read_dir(self.cgroup_dir())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(cgs.is_empty(), "leftover cgroups: {cgs:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(ids) = podd_runtime::Container::list(&self.root) {
            for id in ids {
                if let Ok(c) = podd_runtime::Container::load(&self.root, &id) {
                    let _ = c.delete(true);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        if let Ok(d) = std::fs::read_dir(self.cgroup_dir()) {
            for e in d.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(self.cgroup_dir());
    }
}

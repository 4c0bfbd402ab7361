//! VM tests: podd-oci as the runtime of existing engines, on pure cgroup v2 with every
//! controller (the guest of `cargo xtask vm-test`, which sees the host's root, so Debian's
//! `podman`, `conmon`, `containerd` and `ctr` installed there are used). Each engine runs,
//! execs into, stops and removes a container from a locally imported busybox image, with a
//! memory limit and a non-root user, and with the rlimits and pids limit the engine sends by
//! default. All state lives under /run and /var/lib, which are tmpfs in the guest.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const VM: &str =
    "vm: needs the guest's cgroup v2 controllers and full capabilities; run by cargo xtask vm-test";

fn podd_oci() -> &'static str {
    env!("CARGO_BIN_EXE_podd-oci")
}

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(out.status.success(), "{}", show(what, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A busybox root filesystem as a tar, for `podman import`.
fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    common::busybox_rootfs(&rootfs);
    let tar = dir.join("busybox.tar");
    ok(
        "tar the rootfs",
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    tar
}

fn need(program: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success()),
        "{program} is not installed on the host (Debian: podman, containerd)"
    );
}

struct Podman {
    base: PathBuf,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.base.join("storage"))
            .arg("--runroot")
            .arg(self.base.join("run"))
            .arg("--tmpdir")
            .arg(self.base.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file", "--runtime", podd_oci()]);
        c
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "--force", "--all"]).output();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
#[ignore = "vm: needs the guest's cgroup v2 controllers and full capabilities; run by cargo xtask vm-test"]
fn podman_runs_execs_stops_and_removes_with_podd_oci() {
    let _ = VM;
    need("podman");
    need("conmon");
    let podman = Podman {
        base: PathBuf::from("/var/lib/podd-vm-podman"),
    };
    std::fs::create_dir_all(podman.base.join("tmp")).unwrap();
    let tar = busybox_tar(&podman.base);
    ok(
        "podman import",
        podman
            .cmd()
            .args(["import"])
            .arg(&tar)
            .arg("localhost/podd-busybox:latest"),
    );
    // podman's defaults go along: pids limit 2048, RLIMIT_NOFILE 1048576, its seccomp profile.
    ok(
        "podman run",
        podman.cmd().args([
            "run",
            "-d",
            "--name",
            "pc",
            "--network",
            "none",
            "--memory",
            "64m",
            "--user",
            "1000:1000",
            "localhost/podd-busybox:latest",
            "sleep",
            "300",
        ]),
    );
    let id = ok(
        "podman exec id",
        podman.cmd().args(["exec", "pc", "id", "-u"]),
    );
    assert_eq!(id.trim(), "1000", "the process runs as the non-root user");
    let mem = ok(
        "podman exec cat memory.max",
        podman
            .cmd()
            .args(["exec", "pc", "cat", "/sys/fs/cgroup/memory.max"]),
    );
    assert_eq!(
        mem.trim(),
        "67108864",
        "the memory limit is in the container's cgroup"
    );
    let pids = ok(
        "podman exec cat pids.max",
        podman
            .cmd()
            .args(["exec", "pc", "cat", "/sys/fs/cgroup/pids.max"]),
    );
    assert_eq!(pids.trim(), "2048", "podman's default pids limit");
    let state = ok(
        "podman inspect",
        podman
            .cmd()
            .args(["inspect", "--format", "{{.State.Status}}", "pc"]),
    );
    assert_eq!(state.trim(), "running");
    ok("podman stop", podman.cmd().args(["stop", "-t", "2", "pc"]));
    let state = ok(
        "podman inspect",
        podman
            .cmd()
            .args(["inspect", "--format", "{{.State.Status}}", "pc"]),
    );
    assert_eq!(state.trim(), "exited");
    ok("podman rm", podman.cmd().args(["rm", "pc"]));
    let left = ok("podman ps", podman.cmd().args(["ps", "-a", "-q"]));
    assert!(left.trim().is_empty(), "nothing left: {left}");
}

struct Containerd {
    base: PathBuf,
    sock: PathBuf,
    daemon: std::process::Child,
}

impl Containerd {
    fn start() -> Containerd {
        let base = PathBuf::from("/var/lib/podd-vm-containerd");
        let run = PathBuf::from("/run/podd-vm-containerd");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let config = base.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n",
                base.join("root").display(),
                run.join("state").display(),
                run.join("containerd.sock").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(base.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let sock = run.join("containerd.sock");
        let c = Containerd { base, sock, daemon };
        let deadline = Instant::now() + Duration::from_secs(120);
        while c
            .ctr()
            .arg("version")
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer: {}",
                std::fs::read_to_string(c.base.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        c
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.sock)
            .args(["--namespace", "podd"]);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self
            .ctr()
            .args(["task", "kill", "-s", "SIGKILL", "cc"])
            .output();
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.ctr().args(["task", "rm", "-f", "cc"]).output();
        let _ = self.ctr().args(["container", "rm", "cc"]).output();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
#[ignore = "vm: needs the guest's cgroup v2 controllers and full capabilities; run by cargo xtask vm-test"]
fn containerd_runc_shim_runs_execs_stops_and_removes_with_podd_oci() {
    need("containerd");
    need("ctr");
    need("podman");
    // The image: podman imports the busybox tar and saves it as an OCI archive for ctr.
    let podman = Podman {
        base: PathBuf::from("/var/lib/podd-vm-podman-img"),
    };
    std::fs::create_dir_all(podman.base.join("tmp")).unwrap();
    let tar = busybox_tar(&podman.base);
    ok(
        "podman import",
        podman
            .cmd()
            .arg("import")
            .arg(&tar)
            .arg("localhost/podd-busybox:latest"),
    );
    let archive = podman.base.join("image.oci.tar");
    ok(
        "podman save",
        podman
            .cmd()
            .args(["save", "--format", "oci-archive", "-o"])
            .arg(&archive)
            .arg("localhost/podd-busybox:latest"),
    );
    let cd = Containerd::start();
    ok(
        "ctr images import",
        cd.ctr().args(["images", "import"]).arg(&archive),
    );
    let images = ok("ctr images ls", cd.ctr().args(["images", "ls", "-q"]));
    let image = images
        .lines()
        .find(|l| l.contains("podd-busybox"))
        .unwrap_or_else(|| panic!("imported image not listed: {images}"))
        .to_string();
    ok(
        "ctr run",
        cd.ctr()
            .args(["run", "-d", "--runc-binary", podd_oci()])
            .args(["--memory-limit", "67108864", &image, "cc", "sleep", "300"]),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = ok("ctr task ls", cd.ctr().args(["task", "ls"]));
        if tasks
            .lines()
            .any(|l| l.starts_with("cc ") && l.contains("RUNNING"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "task never ran: {tasks}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let id = ok(
        "ctr task exec",
        cd.ctr().args([
            "task",
            "exec",
            "--exec-id",
            "e1",
            "--user",
            "1000",
            "cc",
            "id",
            "-u",
        ]),
    );
    assert_eq!(
        id.trim(),
        "1000",
        "the exec'd process runs as the non-root user"
    );
    let mem = cd
        .ctr()
        .args([
            "task",
            "exec",
            "--exec-id",
            "e2",
            "cc",
            "cat",
            "/sys/fs/cgroup/memory.max",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // ctr's container may have no cgroup namespace (and no cgroup2 mount of its own): then
    // its cgroup's memory.max is read from the host.
    let limit = if mem.trim() == "67108864" {
        mem.trim().to_string()
    } else {
        let pids = ok("ctr task ps", cd.ctr().args(["task", "ps", "cc"]));
        let pid = pids
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no pid in {pids}"))
            .to_string();
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let rel = cg.trim().trim_start_matches("0::");
        std::fs::read_to_string(format!("/sys/fs/cgroup{rel}/memory.max"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        limit, "67108864",
        "the memory limit is in the container's cgroup"
    );
    ok(
        "ctr task kill",
        // sleep is PID 1 of its namespace and has no SIGTERM handler: KILL stops it.
        cd.ctr().args(["task", "kill", "-s", "SIGKILL", "cc"]),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = ok("ctr task ls", cd.ctr().args(["task", "ls"]));
        if tasks
            .lines()
            .any(|l| l.starts_with("cc ") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "task never stopped: {tasks}");
        std::thread::sleep(Duration::from_millis(200));
    }
    ok("ctr task rm", cd.ctr().args(["task", "rm", "cc"]));
    ok("ctr container rm", cd.ctr().args(["container", "rm", "cc"]));
    let left = ok(
        "ctr containers ls",
        cd.ctr().args(["containers", "ls", "-q"]),
    );
    assert!(left.trim().is_empty(), "nothing left: {left}");
    drop(cd);
    drop(podman);
}

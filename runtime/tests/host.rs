//! Host tests (run as root): namespaces, mounts, masked paths, capabilities, no_new_privs,
//! seccomp, a shared network namespace, the lifecycle and its error cases. Each test has its
//! own state root and cgroup parent, removed by the `Env` guard.

mod common;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Env;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
};
use podd_runtime::{Container, Status};

fn wait_status(env: &Env, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = env.oci(&["state", id]);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(&format!("\"status\": \"{want}\"")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never became {want}: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn runs_in_new_namespaces_with_hostname_and_exit_code() {
    let env = Env::new("ns");
    let mut spec = env.spec(
        "ns1",
        &[
            "sh",
            "-c",
            "echo pid=$$; hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/mnt; \
             cat /proc/sys/net/ipv4/ip_forward; ulimit -n; umask; pwd; echo $PODD_TEST; exit 7",
        ],
    );
    let mut p = spec.process().clone().unwrap();
    p.set_cwd(PathBuf::from("/tmp/work"));
    p.set_env(Some(vec!["PATH=/bin".into(), "PODD_TEST=env-ok".into()]));
    p.set_rlimits(Some(
        serde_json::from_value(
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]),
        )
        .unwrap(),
    ));
    let mut user = p.user().clone();
    user.set_umask(Some(0o027));
    p.set_user(user);
    spec.set_process(Some(p));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_sysctl(Some(
        [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
    ));
    spec.set_linux(Some(linux));
    let (code, out, err) = env.run("ns1", &spec);
    assert_eq!(code, 7, "exit code passes through; stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "pid=1",
        "the process is PID 1 of a new pid namespace"
    );
    assert_eq!(lines[1], "ns1-host");
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_ne!(
        lines[2],
        host_net.to_str().unwrap(),
        "own network namespace"
    );
    assert_ne!(lines[3], host_mnt.to_str().unwrap(), "own mount namespace");
    assert_eq!(lines[4], "1", "sysctl applied in the container's netns");
    assert_eq!(lines[5], "256", "RLIMIT_NOFILE soft limit");
    assert_eq!(lines[6], "0027", "umask");
    assert_eq!(lines[7], "/tmp/work", "cwd (created when missing)");
    assert_eq!(lines[8], "env-ok", "environment");
    env.assert_clean();
}

#[test]
fn mounts_devices_masked_and_readonly_paths() {
    let env = Env::new("mounts");
    let script = r#"
        test -c /dev/null && echo devnull-ok
        test -c /dev/urandom && echo urandom-ok
        test -L /dev/ptmx && test -d /dev/pts && echo pts-ok
        grep -q ' /dev/shm tmpfs' /proc/mounts && echo shm-ok
        grep -q ' /dev/mqueue mqueue' /proc/mounts && echo mqueue-ok
        grep -q ' /sys sysfs ro' /proc/mounts && echo sys-ro
        test "$(wc -c < /proc/timer_list)" = 0 && grep -q " /proc/keys " /proc/mounts && echo files-masked
        test -z "$(ls /proc/acpi)" && echo acpi-masked
        echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || echo procsys-ro
        touch /sys/x 2>/dev/null || echo sys-write-refused
        touch /rootfs-writable && echo root-rw
    "#;
    let spec = env.spec("m1", &["/bin/sh", "-c", script]);
    let (code, out, err) = env.run("m1", &spec);
    assert_eq!(code, 0, "stderr: {err}");
    for want in [
        "devnull-ok",
        "urandom-ok",
        "pts-ok",
        "shm-ok",
        "mqueue-ok",
        "sys-ro",
        "files-masked",
        "acpi-masked",
        "procsys-ro",
        "sys-write-refused",
        "root-rw",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want} in:\n{out}\nstderr: {err}"
        );
    }
    // Nothing propagated back to the host: no mounts under the rootfs remain.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(env.rootfs.to_str().unwrap()),
        "rootfs mounts leaked to the host"
    );
    env.assert_clean();
}

#[test]
fn readonly_root() {
    let env = Env::new("roroot");
    let mut spec = env.spec(
        "r1",
        &[
            "/bin/sh",
            "-c",
            "touch /x 2>/dev/null && echo wrote || echo refused",
        ],
    );
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(true));
    spec.set_root(Some(root));
    let (code, out, err) = env.run("r1", &spec);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "refused");
}

fn cap_mask(out: &str, field: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing in {out}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn capabilities_all_five_sets_and_user() {
    let env = Env::new("caps");
    let mut spec = env.spec(
        "c1",
        &[
            "/bin/sh",
            "-c",
            "id -u; id -g; id -G; grep ^Cap /proc/self/status",
        ],
    );
    let mut p = spec.process().clone().unwrap();
    let mut user = p.user().clone();
    user.set_uid(1000);
    user.set_gid(1000);
    user.set_additional_gids(Some(vec![1000, 2000]));
    p.set_user(user);
    let net_bind: std::collections::HashSet<Capability> = [Capability::NetBindService].into();
    let bounding: std::collections::HashSet<Capability> =
        [Capability::NetBindService, Capability::Chown].into();
    p.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(bounding)
            .effective(net_bind.clone())
            .permitted(net_bind.clone())
            .inheritable(net_bind.clone())
            .ambient(net_bind)
            .build()
            .unwrap(),
    ));
    spec.set_process(Some(p));
    let (code, out, err) = env.run("c1", &spec);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1000");
    assert!(
        lines[2].split_whitespace().any(|g| g == "2000"),
        "additional gids: {}",
        lines[2]
    );
    let nbs = 1u64 << 10; // CAP_NET_BIND_SERVICE
    let chown = 1u64; // CAP_CHOWN
    assert_eq!(cap_mask(&out, "CapBnd:"), nbs | chown);
    assert_eq!(
        cap_mask(&out, "CapEff:"),
        nbs,
        "ambient caps survive the exec as a non-root user"
    );
    assert_eq!(cap_mask(&out, "CapPrm:"), nbs);
    assert_eq!(cap_mask(&out, "CapInh:"), nbs);
    assert_eq!(cap_mask(&out, "CapAmb:"), nbs);
    env.assert_clean();
}

#[test]
fn no_new_privs_is_set_when_asked() {
    let env = Env::new("nnp");
    for (id, nnp, want) in [("n1", true, "1"), ("n0", false, "0")] {
        let mut spec = env.spec(id, &["/bin/sh", "-c", "grep NoNewPrivs /proc/self/status"]);
        let mut p = spec.process().clone().unwrap();
        p.set_no_new_privileges(Some(nnp));
        spec.set_process(Some(p));
        let (code, out, err) = env.run(id, &spec);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.split_whitespace().nth(1), Some(want), "{out}");
    }
    env.assert_clean();
}

#[test]
fn seccomp_blocks_a_syscall() {
    let env = Env::new("seccomp");
    let mut spec = env.spec(
        "s1",
        &[
            "/bin/sh",
            "-c",
            "mkdir /tmp/blocked; echo mkdir=$?; touch /tmp/file && echo touch-ok",
        ],
    );
    let seccomp = serde_json::from_str(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
    let (code, out, err) = env.run("s1", &spec);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mkdir=1"), "mkdir must fail: {out}");
    assert!(out.contains("touch-ok"), "other syscalls still work: {out}");
    assert!(!env.rootfs.join("tmp/blocked").exists());
    // An allow-list profile: default ENOSYS, everything allowed but mkdir/mkdirat, and uname
    // only with a NULL argument (so busybox's `uname`, which passes a buffer, gets ENOSYS and
    // prints nothing).
    let names: Vec<&str> = podd_runtime::seccomp::syscall_names()
        .into_iter()
        .filter(|n| !["mkdir", "mkdirat", "uname"].contains(n))
        .collect();
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "syscalls": [
            {"names": names, "action": "SCMP_ACT_ALLOW"},
            {"names": ["uname"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    let mut spec = env.spec("s2", &["/bin/sh", "-c", "mkdir /tmp/blocked2; echo mkdir=$?; echo uname=[$(uname)]; touch /tmp/f2 && echo touch-ok"]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_seccomp(Some(serde_json::from_value(profile).unwrap()));
    spec.set_linux(Some(linux));
    let (code, out, err) = env.run("s2", &spec);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mkdir=1") && out.contains("uname=[]") && out.contains("touch-ok"),
        "{out}"
    );
    env.assert_clean();
}

/// A network namespace made by the test, removed on drop.
struct NetNs(String);

impl NetNs {
    fn new(name: &str) -> NetNs {
        let name = format!("podd-rt-test-{name}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        let ns = NetNs(name);
        assert!(
            Command::new("ip")
                .args(["-n", &ns.0, "link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success()
        );
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn join_netns(spec: &mut oci_spec::runtime::Spec, path: PathBuf) {
    let mut linux = spec.linux().clone().unwrap();
    let mut nss: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|n| n.typ() != LinuxNamespaceType::Network)
        .collect();
    nss.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(path)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(nss));
    spec.set_linux(Some(linux));
}

#[test]
fn two_containers_share_a_network_namespace_over_localhost() {
    let env = Env::new("netns");
    let netns = NetNs::new("shared");
    let mut server = env.spec(
        "srv",
        &["/bin/sh", "-c", "sleep 30 | nc -l -p 7777 > /tmp/received"],
    );
    join_netns(&mut server, netns.path());
    let mut client = env.spec(
        "cli",
        &["/bin/sh", "-c", "for i in $(seq 100); do echo hello-over-lo | nc 127.0.0.1 7777 && exit 0; sleep 0.05; done; exit 1"],
    );
    join_netns(&mut client, netns.path());
    let sb = env.bundle("srv", &server);
    let (ok, err) = env.oci_bg(&["run", "--detach", "--bundle", sb.to_str().unwrap(), "srv"]);
    assert!(ok, "{err}");
    let (code, _, err) = env.run("cli", &client);
    assert_eq!(
        code, 0,
        "client could not reach the server on 127.0.0.1: {err}"
    );
    // The server's stdin is a pipe that stays open (a closed stdin would make nc hang up
    // before reading); wait for the message, then remove the server.
    let received = env.rootfs.join("tmp/received");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&received)
        .unwrap_or_default()
        .trim()
        != "hello-over-lo"
    {
        assert!(
            Instant::now() < deadline,
            "server never received the message"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = env.oci(&["delete", "--force", "srv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_clean();
}

#[test]
fn lifecycle_and_its_errors() {
    let env = Env::new("life");
    let spec = env.spec("l1", &["/bin/sleep", "30"]);
    let b = env.bundle("l1", &spec);
    let pidfile = env.dir.path().join("l1.pid");
    let (ok, err) = env.oci_bg(&[
        "create",
        "--bundle",
        b.to_str().unwrap(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        "l1",
    ]);
    assert!(ok, "{err}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&env.oci(&["state", "l1"]).stdout).unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["id"], "l1");
    assert_eq!(state["ociVersion"], podd_runtime::OCI_VERSION);
    assert_eq!(state["bundle"], b.to_str().unwrap());
    let cgroup = env.cgroup_dir().join("l1");
    assert!(
        std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .unwrap()
            .contains(&pid.to_string()),
        "init is in its cgroup"
    );

    // create of the same id again
    let (ok, err) = env.oci_bg(&["create", "--bundle", b.to_str().unwrap(), "l1"]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    assert!(env.oci(&["start", "l1"]).status.success());
    wait_status(&env, "l1", "running");
    let out = env.oci(&["start", "l1"]);
    assert!(!out.status.success(), "starting twice must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is running") && err.contains("already started"),
        "{err}"
    );

    let out = env.oci(&["delete", "l1"]);
    assert!(
        !out.status.success(),
        "deleting a running container without --force must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--force"), "{err}");
    wait_status(&env, "l1", "running");

    let ps: Vec<i32> =
        serde_json::from_slice(&env.oci(&["ps", "--format", "json", "l1"]).stdout).unwrap();
    assert_eq!(ps, vec![pid], "ps lists the container's processes");
    // pause/resume through cgroup.freeze works on the host's unified tree too
    assert!(env.oci(&["pause", "l1"]).status.success());
    wait_status(&env, "l1", "paused");
    assert!(env.oci(&["resume", "l1"]).status.success());
    wait_status(&env, "l1", "running");

    assert!(env.oci(&["kill", "l1", "KILL"]).status.success());
    wait_status(&env, "l1", "stopped");
    let out = env.oci(&["kill", "l1", "TERM"]);
    assert!(!out.status.success(), "kill of a stopped container fails");
    assert!(env.oci(&["delete", "l1"]).status.success());
    let out = env.oci(&["state", "l1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    env.assert_clean();
}

#[test]
fn delete_force_of_running_and_delete_of_created() {
    let env = Env::new("force");
    let spec = env.spec("f1", &["/bin/sleep", "30"]);
    let b = env.bundle("f1", &spec);
    assert!(
        env.oci_bg(&["run", "-d", "--bundle", b.to_str().unwrap(), "f1"])
            .0
    );
    wait_status(&env, "f1", "running");
    let out = env.oci(&["delete", "--force", "f1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        env.oci_bg(&["create", "--bundle", b.to_str().unwrap(), "f2"])
            .0
    );
    // The spec: deleting a container that is not stopped, a created one included, MUST fail
    // and have no effect; --force removes it.
    let out = env.oci(&["delete", "f2"]);
    assert!(
        !out.status.success(),
        "a created container is not deleted without --force"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is created: cannot delete"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_status(&env, "f2", "created");
    assert!(
        env.oci(&["delete", "--force", "f2"]).status.success(),
        "a created container is deleted with --force"
    );
    env.assert_clean();
}

#[test]
fn bad_config_json_fails_clearly_and_leaves_nothing() {
    let env = Env::new("badcfg");
    let b = env.dir.path().join("bad");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join("config.json"),
        "{ \"ociVersion\": \"1.0.2\", \"process\": ",
    )
    .unwrap();
    let out = env.oci(&["create", "--bundle", b.to_str().unwrap(), "b1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid bundle config") && err.contains("config.json"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn missing_rootfs_fails_clearly_and_leaves_nothing() {
    let env = Env::new("norootfs");
    let mut spec = env.spec("m1", &["/bin/true"]);
    let mut root = spec.root().clone().unwrap();
    root.set_path(PathBuf::from("/nonexistent/podd-rt-rootfs"));
    spec.set_root(Some(root));
    let b = env.bundle("m1", &spec);
    let out = env.oci(&["create", "--bundle", b.to_str().unwrap(), "m1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("root.path") && err.contains("/nonexistent/podd-rt-rootfs"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn missing_program_fails_at_create_and_leaves_nothing() {
    let env = Env::new("noprog");
    let spec = env.spec("p1", &["no-such-program"]);
    let b = env.bundle("p1", &spec);
    let out = env.oci(&["create", "--bundle", b.to_str().unwrap(), "p1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-program") && err.contains("PATH"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn limits_without_controllers_fail_clearly() {
    let env = Env::new("nocontroller");
    let controllers = std::fs::read_to_string(env.cgroup_root.join("cgroup.controllers")).unwrap();
    if controllers.split_whitespace().any(|c| c == "memory") {
        return; // a host with the memory controller: the VM tests cover limits
    }
    let mut spec = env.spec("l1", &["/bin/true"]);
    let mut linux = spec.linux().clone().unwrap();
    let res = serde_json::from_str(r#"{"memory":{"limit":67108864}}"#).unwrap();
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));
    let b = env.bundle("l1", &spec);
    let out = env.oci(&["create", "--bundle", b.to_str().unwrap(), "l1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"memory\" is not available") && err.contains("memory.max"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn hooks_run_with_the_state() {
    let env = Env::new("hooks");
    let out_dir = env.dir.path().join("hooks-out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut spec = env.spec("h1", &["/bin/true"]);
    let hook = |name: &str| serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json", out_dir.display())]});
    // createContainer runs in the container's mount namespace before pivot_root, so the host
    // path of out_dir is still visible.
    let hooks = serde_json::json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        // startContainer runs in the container after pivot_root: its path and output are the
        // container's.
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /tmp/startContainer.json"]}],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    spec.set_hooks(Some(serde_json::from_value(hooks).unwrap()));
    let (code, _, err) = env.run("h1", &spec);
    assert_eq!(code, 0, "{err}");
    for name in [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ] {
        let text = std::fs::read_to_string(out_dir.join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "h1", "{name}");
        if name != "poststop" {
            assert!(v["pid"].as_i64().unwrap() > 0, "{name} sees the pid");
        }
    }
    let started = std::fs::read_to_string(env.rootfs.join("tmp/startContainer.json")).unwrap();
    assert!(
        started.contains("\"h1\""),
        "startContainer got the state: {started}"
    );
    // A failing createRuntime hook fails create and leaves nothing.
    let mut spec = env.spec("h2", &["/bin/true"]);
    spec.set_hooks(Some(
        serde_json::from_value(serde_json::json!({"createRuntime": [{"path": "/bin/false"}]}))
            .unwrap(),
    ));
    let (code, _, err) = env.run("h2", &spec);
    assert_ne!(code, 0);
    assert!(
        err.contains("createRuntime hook /bin/false failed"),
        "{err}"
    );
    env.assert_clean();
}

fn recv_fd(stream: &std::os::unix::net::UnixStream) -> OwnedFd {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this fd for us.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received on the console socket");
}

#[test]
fn terminal_sends_a_pty_to_the_console_socket() {
    let env = Env::new("tty");
    let sock_path = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let mut spec = env.spec(
        "t1",
        &[
            "/bin/sh",
            "-c",
            "test -t 0 && test -t 1 && echo is-a-tty; tty",
        ],
    );
    let mut p = spec.process().clone().unwrap();
    p.set_terminal(Some(true));
    spec.set_process(Some(p));
    let b = env.bundle("t1", &spec);
    let (ok, err) = env.oci_bg(&[
        "create",
        "--bundle",
        b.to_str().unwrap(),
        "--console-socket",
        sock_path.to_str().unwrap(),
        "t1",
    ]);
    assert!(ok, "{err}");
    let (stream, _) = listener.accept().unwrap();
    let master = recv_fd(&stream);
    assert!(env.oci(&["start", "t1"]).status.success());
    let mut f = std::fs::File::from(master);
    let mut text = String::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.contains("/dev/pts/") && text.contains('\n') && text.lines().count() >= 2 {
            break;
        }
    }
    assert!(text.contains("is-a-tty"), "{text}");
    assert!(
        text.contains("/dev/pts/0"),
        "the container's own devpts: {text}"
    );
    wait_status(&env, "t1", "stopped");
    assert!(env.oci(&["delete", "t1"]).status.success());
    env.assert_clean();
}

#[test]
fn exec_joins_the_running_container() {
    let env = Env::new("exec");
    let spec = env.spec("e1", &["/bin/sleep", "30"]);
    let mut c = Container::create("e1", env.dir.path(), &spec, &env.opts()).unwrap();
    c.start().unwrap();
    assert_eq!(c.status(), Status::Running);
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "hostname > /tmp/exec-out; cat /proc/self/cgroup >> /tmp/exec-out; echo $$ >> /tmp/exec-out; sleep 0.2".into(),
    ]));
    let pid = c.exec(&p, &podd_runtime::ExecOptions::default()).unwrap();
    let procs = std::fs::read_to_string(env.cgroup_dir().join("e1/cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "exec'd process is in the container's cgroup: {procs}"
    );
    let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        st,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
    );
    let out = std::fs::read_to_string(env.rootfs.join("tmp/exec-out")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "e1-host", "in the container's uts namespace");
    let inner_pid: i32 = lines.last().unwrap().parse().unwrap();
    assert!(
        inner_pid > 1 && inner_pid < 100,
        "a pid of the container's pid namespace: {inner_pid}"
    );
    c.kill(nix::sys::signal::Signal::SIGKILL, false).unwrap();
    assert_eq!(c.wait().unwrap(), 128 + 9);
    c.delete(false).unwrap();
    env.assert_clean();
}

#[test]
fn user_namespace_with_id_maps() {
    let env = Env::new("userns");
    let mut spec = env.spec(
        "u1",
        &[
            "/bin/sh",
            "-c",
            "id -u; cat /proc/self/uid_map; cat /proc/self/gid_map",
        ],
    );
    let mut linux = spec.linux().clone().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    nss.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(nss));
    let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    linux.set_uid_mappings(Some(serde_json::from_value(map.clone()).unwrap()));
    linux.set_gid_mappings(Some(serde_json::from_value(map).unwrap()));
    spec.set_linux(Some(linux));
    let (code, out, err) = env.run("u1", &spec);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], vec!["0"], "root inside");
    assert_eq!(lines[1], vec!["0", "100000", "65536"]);
    assert_eq!(lines[2], vec!["0", "100000", "65536"]);
    env.assert_clean();
}

#[test]
fn run_forwards_signals_and_exec_cli_works() {
    let env = Env::new("signals");
    let spec = env.spec(
        "sig1",
        &[
            "/bin/sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let b = env.bundle("sig1", &spec);
    let mut child = Command::new(common::podd_oci())
        .arg("--root")
        .arg(&env.root)
        .arg("--cgroup-root")
        .arg(&env.cgroup_root)
        .args(["run", "--bundle", b.to_str().unwrap(), "sig1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_status(&env, "sig1", "running");
    // exec through the CLI while it runs: same hostname (uts namespace) as the container.
    let out = env.oci(&["exec", "sig1", "/bin/hostname"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sig1-host");
    let out = env.oci(&["exec", "sig1", "/bin/sh", "-c", "exit 5"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "exec passes the exit code through"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("got-term"), "{text}");
    assert_eq!(status.code(), Some(3));
    env.assert_clean();
}

#[test]
fn exec_with_a_terminal_uses_the_console_socket() {
    let env = Env::new("exectty");
    let spec = env.spec("et1", &["/bin/sleep", "30"]);
    let mut c = Container::create("et1", env.dir.path(), &spec, &env.opts()).unwrap();
    c.start().unwrap();
    let sock_path = env.dir.path().join("exec-console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let mut p = spec.process().clone().unwrap();
    p.set_terminal(Some(true));
    p.set_args(Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "test -t 1 && echo exec-tty; tty".into(),
    ]));
    let opts = podd_runtime::ExecOptions {
        console_socket: Some(sock_path.clone()),
        preserve_fds: 0,
    };
    let accept = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        recv_fd(&stream)
    });
    let pid = c.exec(&p, &opts).unwrap();
    let master = accept.join().unwrap();
    let mut f = std::fs::File::from(master);
    let mut text = String::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.contains("/dev/pts/") && text.ends_with('\n') {
            break;
        }
    }
    let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        st,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
    );
    assert!(
        text.contains("exec-tty") && text.contains("/dev/pts/"),
        "{text}"
    );
    c.kill(nix::sys::signal::Signal::SIGKILL, true).unwrap();
    c.wait().unwrap();
    c.delete(false).unwrap();
    env.assert_clean();
}

#[test]
fn device_rules_are_enforced_with_bpf() {
    let env = Env::new("devices");
    // /dev/mem (c 1:1) is not in the allowed set: even with CAP_MKNOD, the node cannot be opened.
    let mut spec = env.spec(
        "d1",
        &["/bin/sh", "-c", "mknod /tmp/mem c 1 1 && echo mknod-ok; head -c1 /tmp/mem >/dev/null 2>&1 || echo mem-denied; echo x > /dev/null && echo null-ok"],
    );
    let mut p = spec.process().clone().unwrap();
    let mut caps = p.capabilities().clone().unwrap();
    for set in ["bounding", "effective", "permitted"] {
        let mut c = match set {
            "bounding" => caps.bounding().clone(),
            "effective" => caps.effective().clone(),
            _ => caps.permitted().clone(),
        }
        .unwrap_or_default();
        c.insert(Capability::Mknod);
        match set {
            "bounding" => caps.set_bounding(Some(c)),
            "effective" => caps.set_effective(Some(c)),
            _ => caps.set_permitted(Some(c)),
        };
    }
    p.set_capabilities(Some(caps));
    spec.set_process(Some(p));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(
        serde_json::from_value(serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]}))
            .unwrap(),
    ));
    spec.set_linux(Some(linux));
    let (code, out, err) = env.run("d1", &spec);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mknod-ok"),
        "mknod is allowed (c *:* m): {out}"
    );
    assert!(
        out.contains("mem-denied"),
        "opening c 1:1 is refused: {out}"
    );
    assert!(
        out.contains("null-ok"),
        "default devices stay usable: {out}"
    );
    env.assert_clean();
}

#[test]
fn time_namespace_and_a_missing_namespace_path() {
    let env = Env::new("timens");
    let mut spec = env.spec("tn", &["/bin/sh", "-c", "readlink /proc/self/ns/time"]);
    let mut linux = spec.linux().clone().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    nss.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Time)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(nss));
    spec.set_linux(Some(linux));
    let (code, out, err) = env.run("tn", &spec);
    assert_eq!(code, 0, "{err}");
    let host = std::fs::read_link("/proc/self/ns/time").unwrap();
    assert_ne!(out.trim(), host.to_str().unwrap(), "own time namespace");

    // Joining a namespace path that does not exist fails clearly and leaves nothing.
    let mut spec = env.spec("nons", &["/bin/true"]);
    join_netns(
        &mut spec,
        PathBuf::from("/run/netns/podd-rt-test-no-such-netns"),
    );
    let b = env.bundle("nons", &spec);
    let (ok, err) = env.oci_bg(&["create", "--bundle", b.to_str().unwrap(), "nons"]);
    assert!(!ok);
    assert!(
        err.contains("open namespace /run/netns/podd-rt-test-no-such-netns"),
        "{err}"
    );
    env.assert_clean();
}

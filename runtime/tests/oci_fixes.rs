//! Host tests (root) for what the OCI runtime-tools validation suite found (issue 16): the
//! engines' default seccomp profile (fork, threads, clone3), no_new_privs left alone, a spec
//! without a mount namespace, `rootfsPropagation: unbindable`, poststart/poststop hooks that
//! fail, the status the create-time hooks see, and the warning for `linux.resources.network`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Env;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use podd_runtime::Container;

/// The default seccomp profile podman and buildah ship (Debian's golang-github-containers-common).
const ENGINE_PROFILE: &str = "/usr/share/containers/seccomp.json";

/// Resolve an engine profile (moby/containers-common format, with `includes`/`excludes` by
/// capability and architecture) into the OCI `linux.seccomp` an engine puts in config.json
/// for a process with `caps`, on x86_64.
fn resolve_engine_profile(profile: &serde_json::Value, caps: &[&str]) -> serde_json::Value {
    let arch_ok = |arches: Option<&serde_json::Value>| {
        arches
            .and_then(|a| a.as_array())
            .is_none_or(|a| a.is_empty() || a.iter().any(|x| x == "amd64" || x == "x86_64"))
    };
    let has_caps = |list: Option<&serde_json::Value>| {
        list.and_then(|l| l.as_array())
            .is_none_or(|l| l.iter().all(|c| caps.contains(&c.as_str().unwrap_or(""))))
    };
    let mut rules = Vec::new();
    for r in profile["syscalls"].as_array().unwrap() {
        let inc = &r["includes"];
        let exc = &r["excludes"];
        if !has_caps(inc.get("caps")) || !arch_ok(inc.get("arches")) {
            continue;
        }
        let excluded_cap = exc
            .get("caps")
            .and_then(|l| l.as_array())
            .is_some_and(|l| l.iter().any(|c| caps.contains(&c.as_str().unwrap_or(""))));
        let excluded_arch = exc
            .get("arches")
            .and_then(|l| l.as_array())
            .is_some_and(|a| a.iter().any(|x| x == "amd64" || x == "x86_64"));
        if excluded_cap || excluded_arch {
            continue;
        }
        let mut rule = serde_json::json!({"names": r["names"], "action": r["action"]});
        if let Some(args) = r
            .get("args")
            .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
        {
            rule["args"] = args.clone();
        }
        if let Some(e) = r.get("errnoRet") {
            rule["errnoRet"] = e.clone();
        }
        rules.push(rule);
    }
    let mut out = serde_json::json!({"defaultAction": profile["defaultAction"], "syscalls": rules});
    if let Some(e) = profile.get("defaultErrnoRet") {
        out["defaultErrnoRet"] = e.clone();
    }
    out
}

/// Read-only binds of the host's libraries, so the test binary itself can run in the busybox
/// rootfs as a helper (it is a dynamically linked glibc program, as engines' workloads are).
fn bind_host_libs(spec: &mut Spec, exe: &Path) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for dir in ["/lib", "/lib64", "/usr"] {
        if Path::new(dir).exists() {
            mounts.push(
                serde_json::from_value(serde_json::json!({
                    "destination": dir, "type": "bind", "source": dir,
                    "options": ["rbind", "ro"]
                }))
                .unwrap(),
            );
        }
    }
    mounts.push(
        serde_json::from_value(serde_json::json!({
            "destination": "/helper", "type": "bind", "source": exe,
            "options": ["bind", "ro"]
        }))
        .unwrap(),
    );
    spec.set_mounts(Some(mounts));
}

/// Inside the container (run as `/helper --exact helper_in_container`): fork, a thread, a raw
/// clone3, a call the profile does not list, chroot (refused by the profile here) and the
/// no_new_privs flag, one `key=value` line each.
#[test]
fn helper_in_container() {
    if std::env::var_os("PODD_RT_HELPER").is_none() {
        return; // only meaningful inside the container
    }
    let errno = |rc: i64| {
        if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    };
    let mut out = String::new();
    // fork through glibc (clone with SIGCHLD).
    // SAFETY: the child calls only _exit; the parent reaps it.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: _exit in the forked child.
        unsafe { libc::_exit(0) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    out += &format!(
        "fork={}\n",
        if pid > 0 && st == 0 { "ok" } else { "failed" }
    );
    // A thread: glibc's pthread_create uses clone3 (and falls back to clone only on ENOSYS).
    let t = std::thread::Builder::new()
        .spawn(|| 7)
        .map(|h| h.join().unwrap_or(0));
    out += &format!(
        "thread={}\n",
        if matches!(t, Ok(7)) { "ok" } else { "failed" }
    );
    // A raw clone3 of a plain child.
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
    }
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without a stack behaves like fork; the child only calls _exit.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc == 0 {
        // SAFETY: _exit in the cloned child.
        unsafe { libc::_exit(0) };
    }
    if rc > 0 {
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(rc as i32, &mut st, 0) };
    }
    out += &format!(
        "clone3={}\n",
        if rc > 0 {
            "ok".to_string()
        } else {
            format!("errno {}", errno(rc))
        }
    );
    // add_key is not in the profile: its default errno (ENOSYS in containers-common's).
    // SAFETY: add_key with null arguments only fails; nothing is read or written.
    let rc = unsafe { libc::syscall(libc::SYS_add_key, 0usize, 0usize, 0usize, 0usize, 0usize) };
    out += &format!("add_key=errno {}\n", errno(rc));
    // chroot: the process has CAP_SYS_CHROOT, the profile was resolved without it.
    let dot = c".";
    // SAFETY: chroot with a valid NUL-terminated path.
    let rc = unsafe { libc::chroot(dot.as_ptr()) } as i64;
    out += &format!("chroot=errno {}\n", errno(rc));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let nnp = status
        .lines()
        .find(|l| l.starts_with("NoNewPrivs:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    out += &format!("nnp={nnp}\n");
    std::fs::write("/tmp/helper.out", out).unwrap();
}

#[test]
fn engine_default_seccomp_profile_allows_fork_threads_and_clone3() {
    let text = std::fs::read_to_string(ENGINE_PROFILE).unwrap_or_else(|e| {
        panic!(
            "{ENGINE_PROFILE}: {e}: the engines' default seccomp profile comes with Debian's \
             golang-github-containers-common (a podman dependency; listed in .ci/apt-packages)"
        )
    });
    let profile: serde_json::Value = serde_json::from_str(&text).unwrap();
    let env = Env::new("engprof");
    let exe = std::env::current_exe().unwrap();
    let mut spec = env.spec(
        "ep",
        &["/helper", "--exact", "helper_in_container", "--nocapture"],
    );
    let mut p = spec.process().clone().unwrap();
    p.set_env(Some(vec![
        "PATH=/bin:/usr/bin".into(),
        "PODD_RT_HELPER=1".into(),
    ]));
    p.set_no_new_privileges(Some(false));
    // The engine's default capability set (podman's), resolved into the profile; the process
    // also gets CAP_SYS_CHROOT, which the profile was resolved without, so a chroot EPERM can
    // only come from the filter.
    let engine_caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
    ];
    let mut caps: Vec<String> = engine_caps.iter().map(|s| s.to_string()).collect();
    caps.push("CAP_SYS_CHROOT".into());
    let set = serde_json::json!(caps);
    p.set_capabilities(Some(
        serde_json::from_value(serde_json::json!({
            "bounding": set, "effective": set, "permitted": set
        }))
        .unwrap(),
    ));
    spec.set_process(Some(p));
    bind_host_libs(&mut spec, &exe);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_seccomp(Some(
        serde_json::from_value(resolve_engine_profile(&profile, &engine_caps)).unwrap(),
    ));
    spec.set_linux(Some(linux));
    let (code, _out, err) = env.run("ep", &spec);
    assert_eq!(code, 0, "{err}");
    let report = std::fs::read_to_string(env.rootfs.join("tmp/helper.out"))
        .unwrap_or_else(|e| panic!("the helper wrote no report ({e}); stderr: {err}"));
    for want in [
        "fork=ok",
        "thread=ok",
        "clone3=ok",
        &format!(
            "add_key=errno {}",
            profile["defaultErrnoRet"].as_i64().unwrap_or(1)
        ),
        "chroot=errno 1",
        "nnp=0",
    ] {
        assert!(report.lines().any(|l| l == want), "{want} in:\n{report}");
    }
    env.assert_clean();
}

fn ns_link(pid: i32, ns: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap()
}

fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn a_spec_without_a_mount_namespace_runs_chrooted_and_mounts_nothing() {
    let env = Env::new("nomntns");
    let mut spec = env.spec("nm", &["/bin/sh", "-c", "echo in-root > /marker; sleep 30"]);
    let mut linux = spec.linux().clone().unwrap();
    let nss: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|n| n.typ() != LinuxNamespaceType::Mount)
        .collect();
    linux.set_namespaces(Some(nss));
    // What a mount namespace is needed for goes; the spec's mounts stay (skipped, warned).
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    spec.set_linux(Some(linux));
    let before = mount_count();
    let mut c = Container::create("nm", env.dir.path(), &spec, &env.opts()).unwrap();
    assert_eq!(
        ns_link(c.pid(), "mnt"),
        ns_link(std::process::id() as i32, "mnt"),
        "the runtime's mount namespace is inherited"
    );
    assert_ne!(
        ns_link(c.pid(), "pid"),
        ns_link(std::process::id() as i32, "pid")
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/root", c.pid())).unwrap(),
        env.rootfs,
        "init is chrooted into the rootfs"
    );
    assert_eq!(
        mount_count(),
        before,
        "nothing was mounted in the shared namespace"
    );
    c.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.rootfs.join("marker").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(env.rootfs.join("marker")).unwrap(),
        "in-root\n"
    );
    // exec lands in the same root.
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo exec > /exec-marker".into(),
    ]));
    let pid = c.exec(&p, &Default::default()).unwrap();
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert!(
        env.rootfs.join("exec-marker").exists(),
        "exec ran in the container's root"
    );
    assert_eq!(mount_count(), before);
    c.kill(nix::sys::signal::Signal::SIGKILL, false).unwrap();
    let _ = c.wait();
    c.delete(false).unwrap();

    // Masked paths would be skipped without a mount namespace: refused instead.
    let mut spec = env.spec("nm2", &["/bin/true"]);
    let mut linux = spec.linux().clone().unwrap();
    let nss: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|n| n.typ() != LinuxNamespaceType::Mount)
        .collect();
    linux.set_namespaces(Some(nss));
    spec.set_linux(Some(linux));
    let err = Container::create("nm2", env.dir.path(), &spec, &env.opts())
        .expect_err("maskedPaths without a mount namespace is refused");
    assert!(
        err.to_string()
            .contains("linux.maskedPaths needs a mount namespace"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn rootfs_propagation_unbindable_and_the_others() {
    let env = Env::new("prop");
    // (propagation, a field the root's mountinfo line must have, one it must not have)
    for (id, prop, has, lacks) in [
        ("pu", "unbindable", Some("unbindable"), "shared:"),
        ("pr", "private", None, "shared:"),
        ("ps", "shared", Some("shared:"), "unbindable"),
        // master:N only shows where the host's root is shared; never shared: here.
        ("pl", "slave", None, "shared:"),
    ] {
        let mut spec = env.spec(
            id,
            &["/bin/sh", "-c", "awk '$5 == \"/\"' /proc/self/mountinfo"],
        );
        let mut linux = spec.linux().clone().unwrap();
        linux.set_rootfs_propagation(Some(prop.into()));
        spec.set_linux(Some(linux));
        let (code, out, err) = env.run(id, &spec);
        assert_eq!(code, 0, "{prop}: {err}");
        let fields: Vec<&str> = out
            .split(" - ")
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert!(
            fields.len() >= 6,
            "{prop}: the root's mountinfo line: {out:?}"
        );
        let optional = &fields[6..];
        if let Some(tag) = has {
            assert!(optional.iter().any(|f| f.starts_with(tag)), "{prop}: {out}");
        }
        assert!(
            !optional.iter().any(|f| f.starts_with(lacks)),
            "{prop}: {out}"
        );
    }
    env.assert_clean();
}

fn hook(cmd: String) -> serde_json::Value {
    serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", cmd]})
}

#[test]
fn failing_poststart_and_poststop_hooks_warn_and_the_rest_run() {
    let env = Env::new("hookfail");
    let out = env.dir.path().join("hook-out");
    std::fs::create_dir_all(&out).unwrap();
    let mut spec = env.spec("hf", &["/bin/true"]);
    let hooks = serde_json::json!({
        "poststart": [{"path": "/bin/false"}, hook(format!("echo second > {}/poststart", out.display()))],
        "poststop": [{"path": "/bin/false"}, hook(format!("echo second > {}/poststop", out.display()))],
    });
    spec.set_hooks(Some(serde_json::from_value(hooks).unwrap()));
    let (code, _, err) = env.run("hf", &spec);
    assert_eq!(
        code, 0,
        "a failing poststart/poststop hook does not fail the container: {err}"
    );
    for kind in ["poststart", "poststop"] {
        assert_eq!(
            std::fs::read_to_string(out.join(kind)).unwrap_or_default(),
            "second\n",
            "the {kind} hook after the failing one ran"
        );
        assert!(
            err.contains(kind) && err.contains("WARN"),
            "the {kind} failure is a warning: {err}"
        );
    }
    env.assert_clean();
}

#[test]
fn create_time_hooks_see_status_created() {
    let env = Env::new("hookstatus");
    let out = env.dir.path().join("hook-out");
    std::fs::create_dir_all(&out).unwrap();
    let mut spec = env.spec("hs", &["/bin/true"]);
    let save = |name: &str| hook(format!("cat > {}/{name}.json", out.display()));
    let hooks = serde_json::json!({
        "prestart": [save("prestart")],
        "createRuntime": [save("createRuntime")],
        "createContainer": [save("createContainer")],
        "poststart": [save("poststart")],
        "poststop": [save("poststop")],
    });
    spec.set_hooks(Some(serde_json::from_value(hooks).unwrap()));
    let (code, _, err) = env.run("hs", &spec);
    assert_eq!(code, 0, "{err}");
    for (name, want) in [
        ("prestart", "created"),
        ("createRuntime", "created"),
        ("createContainer", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(v["status"], want, "{name}: {v}");
    }
    env.assert_clean();
}

#[test]
fn network_resources_are_accepted_with_a_warning() {
    let env = Env::new("netres");
    let mut spec = env.spec("nr", &["/bin/true"]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(
        serde_json::from_value(serde_json::json!({
            "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]}
        }))
        .unwrap(),
    ));
    spec.set_linux(Some(linux));
    let (code, _, err) = env.run("nr", &spec);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("linux.resources.network is not applied"),
        "a warning names what is not applied: {err}"
    );
    env.assert_clean();
}

#[test]
fn a_config_without_process_creates_but_does_not_start() {
    let env = Env::new("noproc");
    let mut spec = env.spec("np", &["/bin/true"]);
    spec.set_process(None);
    let b = env.bundle("np", &spec);
    let (ok, err) = env.oci_bg(&["create", "--bundle", b.to_str().unwrap(), "np"]);
    assert!(ok, "process is optional at create: {err}");
    let out = env.oci(&["start", "np"]);
    assert!(!out.status.success(), "start without a process is an error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = String::from_utf8_lossy(&env.oci(&["state", "np"]).stdout).into_owned();
    assert!(
        state.contains("\"created\""),
        "start had no effect: {state}"
    );
    assert!(env.oci(&["delete", "--force", "np"]).status.success());

    // An ociVersion that is not SemVer 1.x is refused at create.
    let mut spec = env.spec("nv", &["/bin/true"]);
    spec.set_version("invalid".into());
    let b = env.bundle("nv", &spec);
    let (ok, err) = env.oci_bg(&["create", "--bundle", b.to_str().unwrap(), "nv"]);
    assert!(!ok && err.contains("ociVersion \"invalid\""), "{err}");
    env.assert_clean();
}

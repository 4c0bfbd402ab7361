//! VM test: the OCI runtime-tools validation suite against podd-oci on a pure cgroup v2 system
//! (the guest of `cargo xtask vm-test`). The suite is the one `cargo xtask oci-conformance`
//! builds into its cache (`$PODD_OCI_CONFORMANCE_CACHE`, default
//! /var/cache/podd-oci-conformance), which the guest sees read-only through the host's root.
//!
//! Every validation binary runs with a timeout; the counting rule is the xtask's (at least one
//! `ok`, no `not ok`). The binaries allowed to fail are the xtask's list (xtask/src/
//! oci_conformance.rs, `EXPECTED_FAILURES`, kept in step by hand): the cgroup-v1-only ones, whose
//! properties `vm_cgroups.rs` proves on v2 instead, and the ones whose expectation contradicts
//! the spec. `PODD_OCI_CONFORMANCE_ONLY=a,b` runs a subset.
#![allow(clippy::print_stdout)] // the per-binary table is the test's report

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Allowed to fail (see the xtask's `EXPECTED_FAILURES` for the reasons).
const EXPECTED: &[&str] = &[
    "delete_only_create_resources",
    "delete_resources",
    "linux_cgroups_blkio",
    "linux_cgroups_cpus",
    "linux_cgroups_devices",
    "linux_cgroups_hugetlb",
    "linux_cgroups_memory",
    "linux_cgroups_network",
    "linux_cgroups_pids",
    "linux_cgroups_relative_blkio",
    "linux_cgroups_relative_cpus",
    "linux_cgroups_relative_devices",
    "linux_cgroups_relative_hugetlb",
    "linux_cgroups_relative_memory",
    "linux_cgroups_relative_network",
    "linux_cgroups_relative_pids",
    "hooks",
    "prestart",
    "pidfile",
    "start",
    "process_rlimits",
    "misc_props",
];

/// Print no test point by design: they must exit 0 without a YAML diagnostic.
const NO_TEST_POINT: &[&str] = &[
    "poststart",
    "poststart_fail",
    "poststop",
    "poststop_fail",
    "prestart_fail",
    "process_capabilities_fail",
    "process_rlimits_fail",
];

/// One line of progress on the guest's console (the serial line the host reads live), since
/// libtest holds the test's stdout until it ends.
fn progress(line: &str) {
    use std::io::Write;
    if std::env::var_os("PODD_IN_VM").is_some()
        && let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console")
    {
        let _ = writeln!(c, "vm_oci_conformance: {line}");
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("PODD_OCI_CONFORMANCE_CACHE").map_or_else(
        || PathBuf::from("/var/cache/podd-oci-conformance"),
        PathBuf::from,
    )
}

/// Run one binary; (output, exit code or None when killed at the timeout).
fn run_one(suite: &Path, bin: &Path, runtime: &Path, tmp: &Path) -> (String, Option<i32>) {
    std::fs::create_dir_all(tmp).unwrap();
    let log = tmp.with_extension("log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(bin)
        .current_dir(suite)
        .env("RUNTIME", runtime)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = std::fs::remove_file(&log);
    (text, code)
}

#[test]
#[ignore = "vm: pure cgroup v2; run by cargo xtask vm-test (after cargo xtask oci-conformance built the suite)"]
fn runtime_tools_validation_suite_on_cgroup_v2() {
    let suite = cache_dir().join("runtime-tools");
    assert!(
        suite.join("runtimetest").is_file(),
        "the suite is not built in {}: run `cargo xtask oci-conformance` on the host first",
        suite.display()
    );
    let work = PathBuf::from("/tmp/podd-oci-conformance-vm");
    let state_root = PathBuf::from("/run/podd-oci-conformance-vm");
    std::fs::create_dir_all(&work).unwrap();
    let wrapper = work.join("podd-oci-under-test");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' --root '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_podd-oci"),
            state_root.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let only: Vec<String> = std::env::var("PODD_OCI_CONFORMANCE_ONLY")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut names: Vec<String> = std::fs::read_dir(suite.join("validation"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            suite
                .join("validation")
                .join(n)
                .join(format!("{n}.t"))
                .is_file()
        })
        .filter(|n| only.is_empty() || only.contains(n))
        .collect();
    names.sort();
    let mut clean = 0;
    let mut unexpected = Vec::new();
    for name in &names {
        let bin = suite
            .join("validation")
            .join(name)
            .join(format!("{name}.t"));
        let tmp = work.join(name);
        let start = Instant::now();
        let (text, code) = run_one(&suite, &bin, &wrapper, &tmp);
        // Leftovers of a failed binary: force-delete, then drop its bundles.
        for e in std::fs::read_dir(&state_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new(env!("CARGO_BIN_EXE_podd-oci"))
                .arg("--root")
                .arg(&state_root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .output();
        }
        let _ = std::fs::remove_dir_all(&tmp);
        let ok = text
            .lines()
            .filter(|l| l.starts_with("ok ") && !l.to_ascii_lowercase().contains("# skip"))
            .count();
        let not_ok: Vec<&str> = text.lines().filter(|l| l.starts_with("not ok")).collect();
        let diagnostic = text.lines().any(|l| l.trim_end() == "  ---");
        let is_clean = code.is_some() && ok > 0 && not_ok.is_empty();
        let verdict = if is_clean {
            clean += 1;
            "clean".to_string()
        } else if NO_TEST_POINT.contains(&name.as_str()) {
            if code == Some(0) && not_ok.is_empty() && !diagnostic {
                "no test point by design; exited 0 without a diagnostic".to_string()
            } else {
                unexpected.push(name.clone());
                "FAIL (no-test-point binary reported a problem)".to_string()
            }
        } else if EXPECTED.contains(&name.as_str()) {
            "FAIL (expected)".to_string()
        } else {
            unexpected.push(name.clone());
            "FAIL".to_string()
        };
        let line = format!(
            "{name:<32} {ok:>5} ok {:>4} not ok  exit {:<5} {:>6.1}s  {verdict}",
            not_ok.len(),
            code.map_or("-".to_string(), |c| c.to_string()),
            start.elapsed().as_secs_f64()
        );
        progress(&line);
        println!("{line}");
        if verdict.starts_with("FAIL") {
            for l in not_ok.iter().take(8) {
                println!("    {l}");
            }
            if not_ok.is_empty() {
                for l in text.lines().take(6) {
                    println!("    | {l}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "clean: {clean} of {}; unexpected failures: {}",
        names.len(),
        unexpected.len()
    );
    assert!(
        unexpected.is_empty(),
        "validation binaries failed that are not on the expected list: {unexpected:?}"
    );
}

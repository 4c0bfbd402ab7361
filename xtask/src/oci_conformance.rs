//! `cargo xtask oci-conformance`: the opencontainers/runtime-tools validation suite (commit
//! 260e151) against podd-oci.
//!
//! The suite is built once (Debian's `golang-go`, the tarball's vendored modules, no network)
//! into a cache, by default `/var/cache/podd-oci-conformance` (`$PODD_OCI_CONFORMANCE_CACHE`).
//! Then every `validation/NAME/NAME.t` runs, one at a time, against a release build of podd-oci
//! with a state root of its own, under a per-binary timeout. Each prints TAP; the table counts
//! its `ok` and `not ok` lines. A binary is clean when it printed at least one `ok` and no
//! `not ok` and exited in time: a binary that prints no test point (it crashed inside the
//! container, or it only reports errors) counts as a failure.
//!
//! The command fails when a binary fails that is not on [`EXPECTED_FAILURES`] (the suite's
//! cgroup checks read cgroup v1 files only, and a few binaries print no test point by design;
//! docs/RUNTIME.md lists them with their failing TAP lines).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{cargo, have_program, output, run, workspace_root};

/// The suite's commit, as named in the tarball.
const SUITE_COMMIT: &str = "260e151";

/// The issue's measurement before the fixes (issue 16): binaries that ran test points and
/// failed none, out of 58.
const ISSUE_BASELINE: (usize, usize, usize) = (13, 34, 27); // podd-oci, crun, runc

/// Binaries clean against podd-oci at b43a03b (before the issue-16 fixes), measured on this
/// project's host with the same counting rule; the `before` column of the table.
const CLEAN_BEFORE: &[&str] = &[
    "create",
    "linux_ns_nopath",
    "linux_ns_path",
    "linux_ns_path_type",
    "linux_seccomp",
    "state",
];

/// Why a binary is allowed to fail (docs/RUNTIME.md lists each with its failing TAP lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Its checks read cgroup v1 files only (on pure v2 the suite's FindCgroup fails with
    /// "cgroupv2 is not supported yet"); podd-oci makes v2 cgroups only.
    CgroupV1Only,
    /// It prints no test point even when all is well (it writes a YAML diagnostic or exits
    /// non-zero only on a problem): judged by its exit status and the absence of a diagnostic.
    NoTestPoint,
    /// Its expectation contradicts the runtime spec or another binary of the suite, or cannot
    /// hold for the suite as built; the text says how.
    Suite(&'static str),
}

/// Binaries that cannot be clean against podd-oci, with the reason. Their failure does not
/// fail the command (a no-test-point binary still must exit 0 without a diagnostic).
pub const EXPECTED_FAILURES: &[(&str, Why)] = &[
    // Makes /sys/fs/cgroup/pids/cgrouptest itself: clean on a hybrid host, not on pure v2.
    ("delete_only_create_resources", Why::CgroupV1Only),
    ("delete_resources", Why::CgroupV1Only),
    ("linux_cgroups_blkio", Why::CgroupV1Only),
    ("linux_cgroups_cpus", Why::CgroupV1Only),
    ("linux_cgroups_devices", Why::CgroupV1Only),
    ("linux_cgroups_hugetlb", Why::CgroupV1Only),
    ("linux_cgroups_memory", Why::CgroupV1Only),
    ("linux_cgroups_network", Why::CgroupV1Only),
    ("linux_cgroups_pids", Why::CgroupV1Only),
    ("linux_cgroups_relative_blkio", Why::CgroupV1Only),
    ("linux_cgroups_relative_cpus", Why::CgroupV1Only),
    ("linux_cgroups_relative_devices", Why::CgroupV1Only),
    ("linux_cgroups_relative_hugetlb", Why::CgroupV1Only),
    ("linux_cgroups_relative_memory", Why::CgroupV1Only),
    ("linux_cgroups_relative_network", Why::CgroupV1Only),
    ("linux_cgroups_relative_pids", Why::CgroupV1Only),
    ("poststart", Why::NoTestPoint),
    ("poststart_fail", Why::NoTestPoint),
    ("poststop", Why::NoTestPoint),
    ("poststop_fail", Why::NoTestPoint),
    ("prestart_fail", Why::NoTestPoint),
    ("process_capabilities_fail", Why::NoTestPoint),
    ("process_rlimits_fail", Why::NoTestPoint),
    (
        "hooks",
        Why::Suite(
            "expects the lines \"post-start1\" etc. that its hooks never write (they write \
             \"post-start1 called\"), and reads the file before delete runs the poststop hooks",
        ),
    ),
    (
        "prestart",
        Why::Suite(
            "expects prestart hooks at start (spec 1.0.0-rc); spec 1.0.2 and later call them \
             during create, which podd-oci, runc and crun do",
        ),
    ),
    (
        "pidfile",
        Why::Suite(
            "kills a container whose process (`true`) has already exited and wants success; \
             the spec and the suite's own `kill` binary want an error for a stopped container",
        ),
    ),
    (
        "start",
        Why::Suite(
            "its last case wants `start` to succeed for a config without `process`; the spec \
             says start MUST generate an error then (create succeeds, as it should)",
        ),
    ),
    (
        "process_rlimits",
        Why::Suite(
            "runtimetest, built with Go >= 1.19, raises its own soft RLIMIT_NOFILE to the hard \
             limit at start-up, so it reads 4000 where the spec set 3000",
        ),
    ),
    (
        "misc_props",
        Why::Suite(
            "its first case runs /runtimetest from a bundle it never copied it into; \
             podd-oci, like runc, reports a missing program at create",
        ),
    ),
];

pub struct Options {
    /// Where the suite is unpacked and built.
    pub cache_dir: PathBuf,
    /// The suite's source tarball.
    pub tarball: PathBuf,
    /// The runtime to test (default: a release build of podd-oci).
    pub runtime: Option<PathBuf>,
    /// Kill one validation binary after this long.
    pub timeout: Duration,
    /// Only these binaries (default: all).
    pub only: Vec<String>,
}

/// `$PODD_OCI_CONFORMANCE_CACHE`, or /var/cache/podd-oci-conformance.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("PODD_OCI_CONFORMANCE_CACHE").map_or_else(
        || PathBuf::from("/var/cache/podd-oci-conformance"),
        PathBuf::from,
    )
}

/// The tarball next to the checkout: `../shared/conformance/runtime-tools-260e151.tar.gz`.
/// `$PODD_CONFORMANCE_DIR/runtime-tools-COMMIT.tar.gz`, or the one in `../shared/conformance/`
/// beside the workspace (where the project's machines keep the conformance suites).
pub fn default_tarball() -> PathBuf {
    let dir = std::env::var_os("PODD_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("..").join("shared/conformance"));
    dir.join(format!("runtime-tools-{SUITE_COMMIT}.tar.gz"))
}

/// One binary's result.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TapCounts {
    pub ok: usize,
    pub not_ok: usize,
    pub skipped: usize,
    /// The `not ok` lines, for the report.
    pub failures: Vec<String>,
    /// A YAML diagnostic block (`  ---`) appeared.
    pub diagnostic: bool,
}

/// How one binary ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Exit code (None: killed by a signal, or by our timeout).
    pub code: Option<i32>,
    pub timed_out: bool,
}

/// Count the TAP test points of a binary's output. `ok N # SKIP` counts as skipped, not ok.
pub fn parse_tap(text: &str) -> TapCounts {
    let mut c = TapCounts::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("not ok") {
            if rest.is_empty() || rest.starts_with(' ') {
                c.not_ok += 1;
                c.failures.push(line.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("ok") {
            if rest.is_empty() || rest.starts_with(' ') {
                if rest.to_ascii_lowercase().contains("# skip") {
                    c.skipped += 1;
                } else {
                    c.ok += 1;
                }
            }
        } else if line.trim_end() == "  ---" {
            c.diagnostic = true;
        }
    }
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Failed,
    NoTestPoint,
    TimedOut,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Failed => "FAIL",
            Verdict::NoTestPoint => "FAIL (no test point)",
            Verdict::TimedOut => "FAIL (timed out)",
        }
    }
}

/// The counting rule: at least one `ok`, no `not ok`, in time.
pub fn verdict(c: &TapCounts, timed_out: bool) -> Verdict {
    if timed_out {
        Verdict::TimedOut
    } else if c.not_ok > 0 {
        Verdict::Failed
    } else if c.ok == 0 {
        Verdict::NoTestPoint
    } else {
        Verdict::Clean
    }
}

/// A no-test-point binary did its job: it exited 0 in time, printed no `not ok` and no
/// diagnostic.
pub fn quiet_success(c: &TapCounts, ending: Ending) -> bool {
    !ending.timed_out && ending.code == Some(0) && c.not_ok == 0 && !c.diagnostic
}

fn suite_dir(cache: &Path) -> PathBuf {
    cache.join("runtime-tools")
}

fn stamp(cache: &Path) -> PathBuf {
    cache.join(format!(".built-{SUITE_COMMIT}"))
}

/// Unpack and build the suite unless the cache already holds this commit's build.
pub fn build_suite(cache: &Path, tarball: &Path) -> Result<PathBuf> {
    let dir = suite_dir(cache);
    if stamp(cache).is_file() && dir.join("runtimetest").is_file() {
        println!(
            "oci-conformance: suite {SUITE_COMMIT} already built in {}",
            dir.display()
        );
        return Ok(dir);
    }
    if !have_program("go") {
        bail!("the Go compiler is missing: apt-get install golang-go (listed in .ci/apt-packages)");
    }
    if !have_program("make") {
        bail!("make is missing: apt-get install make");
    }
    if !tarball.is_file() {
        bail!("the suite's source {} does not exist", tarball.display());
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the partial build {}", dir.display()))?;
    }
    run(Command::new("tar")
        .arg("xzf")
        .arg(tarball)
        .arg("-C")
        .arg(cache))?;
    if !dir.is_dir() {
        bail!(
            "{} did not unpack into {}",
            tarball.display(),
            dir.display()
        );
    }
    run(Command::new("make")
        .args(["runtimetest", "validation-executables"])
        .current_dir(&dir)
        .env("GOFLAGS", "-mod=vendor")
        .env("GOPROXY", "off")
        .env("GOPATH", cache.join("gopath"))
        .env("GOCACHE", cache.join("gocache")))
    .context("building the runtime-tools validation suite")?;
    std::fs::write(stamp(cache), SUITE_COMMIT)
        .with_context(|| format!("writing {}", stamp(cache).display()))?;
    Ok(dir)
}

/// `validation/NAME/NAME.t` of a built suite, sorted by name.
pub fn validation_binaries(suite: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let dir = suite.join("validation");
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let bin = e.path().join(format!("{name}.t"));
        if bin.is_file() {
            out.push((name, bin));
        }
    }
    out.sort();
    Ok(out)
}

/// Build podd-oci in release mode and return its path.
fn build_podd_oci() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "podd-runtime",
        "--bin",
        "podd-oci",
    ]))?;
    let text = output(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let meta: serde_json::Value = serde_json::from_str(&text).context("parsing cargo metadata")?;
    let target = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(Path::new(target).join("release/podd-oci"))
}

/// A wrapper the suite calls as `$RUNTIME`: podd-oci with a state root of the run's own, so
/// leftovers are found and removed after each binary.
fn write_wrapper(cache: &Path, runtime: &Path, state_root: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = cache.join("podd-oci-under-test");
    let script = format!(
        "#!/bin/sh\nexec '{}' --root '{}' \"$@\"\n",
        runtime.display(),
        state_root.display()
    );
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Run one binary with a timeout; returns its combined output and how it ended.
fn run_one(
    suite: &Path,
    bin: &Path,
    runtime: &Path,
    tmp: &Path,
    timeout: Duration,
) -> Result<(String, Ending)> {
    std::fs::create_dir_all(tmp)?;
    let log = tmp.with_extension("log");
    let file = std::fs::File::create(&log)?;
    let mut child = Command::new(bin)
        .current_dir(suite)
        .env("RUNTIME", runtime)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + timeout;
    let ending = loop {
        if let Some(status) = child.try_wait()? {
            break Ending {
                code: status.code(),
                timed_out: false,
            };
        }
        if Instant::now() > deadline {
            // The binary and whatever it started (the runtime, hooks) are one process group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break Ending {
                code: None,
                timed_out: true,
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    std::fs::File::open(&log)?.read_to_string(&mut text)?;
    Ok((text, ending))
}

/// The capabilities missing from this process's bounding set (a sandbox may drop some; a
/// container cannot be given them then). Names as in capabilities(7).
fn missing_bounding_caps() -> Vec<String> {
    const NAMES: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(bnd) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return Vec::new();
    };
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(NAMES.len() - 1);
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| *i <= last && bnd & (1u64 << i) == 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Force-delete whatever the binary left in the state root and remove its temporary dir.
fn clean_up(runtime: &Path, state_root: &Path, tmp: &Path) {
    if let Ok(entries) = std::fs::read_dir(state_root) {
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let _ = Command::new(runtime)
                .arg("--root")
                .arg(state_root)
                .args(["delete", "--force", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    // Bundles may still hold a mount of a crashed container's; those are the container's own
    // (its mount namespace), so plain removal works once it is gone.
    let _ = std::fs::remove_dir_all(tmp);
}

pub struct Row {
    pub name: String,
    pub counts: TapCounts,
    pub ending: Ending,
    pub verdict: Verdict,
    pub secs: f64,
}

/// Why `name` may fail on this host, if it may.
fn expected(name: &str, missing_caps: &[String]) -> Option<String> {
    if let Some((_, why)) = EXPECTED_FAILURES.iter().find(|(n, _)| *n == name) {
        return Some(match why {
            Why::CgroupV1Only => "expected: cgroup v1 only".into(),
            Why::NoTestPoint => "no test point by design".into(),
            Why::Suite(_) => "expected: the suite's own expectation (docs/RUNTIME.md)".into(),
        });
    }
    if name == "process_capabilities" && !missing_caps.is_empty() {
        return Some(format!(
            "expected on this host: its bounding set lacks {}",
            missing_caps.join(", ")
        ));
    }
    None
}

/// Print the table; returns (clean, unexpected failures).
pub fn print_table(rows: &[Row], missing_caps: &[String]) -> (usize, Vec<String>) {
    println!(
        "\n{:<32} {:>5} {:>7} {:>5} {:>4}  {:<22} {:<6} {:>6}  note",
        "binary", "ok", "not ok", "skip", "exit", "result", "before", "secs"
    );
    let mut clean = 0;
    let mut quiet_ok = 0;
    let mut allowed = 0;
    let mut unexpected = Vec::new();
    for r in rows {
        let before = if CLEAN_BEFORE.contains(&r.name.as_str()) {
            "clean"
        } else {
            "-"
        };
        let no_points = EXPECTED_FAILURES
            .iter()
            .any(|(n, w)| *n == r.name && *w == Why::NoTestPoint);
        let note = if r.verdict == Verdict::Clean {
            clean += 1;
            String::new()
        } else if no_points {
            if quiet_success(&r.counts, r.ending) {
                quiet_ok += 1;
                "no test point by design; exited 0 without a diagnostic".into()
            } else {
                unexpected.push(r.name.clone());
                "no test point by design, and it reported a problem".into()
            }
        } else if let Some(why) = expected(&r.name, missing_caps) {
            allowed += 1;
            why
        } else {
            unexpected.push(r.name.clone());
            String::new()
        };
        let exit = match (r.ending.timed_out, r.ending.code) {
            (true, _) => "-".to_string(),
            (false, Some(c)) => c.to_string(),
            (false, None) => "sig".to_string(),
        };
        println!(
            "{:<32} {:>5} {:>7} {:>5} {:>4}  {:<22} {:<6} {:>6.1}  {note}",
            r.name,
            r.counts.ok,
            r.counts.not_ok,
            r.counts.skipped,
            exit,
            r.verdict.label(),
            before,
            r.secs
        );
    }
    let (issue_podd, crun, runc) = ISSUE_BASELINE;
    println!(
        "\nclean (at least one ok, no not ok): {clean} of {} binaries; before the fixes: {} \
         measured here, {issue_podd} in issue 16 (crun {crun}, runc {runc} there)",
        rows.len(),
        CLEAN_BEFORE.len()
    );
    println!(
        "not clean: {} = {quiet_ok} no-test-point binaries that exited 0 without a diagnostic \
         + {allowed} expected failures (cgroup v1 only, the suite's own expectations, this \
         host) + {} unexpected{}",
        rows.len() - clean,
        unexpected.len(),
        if unexpected.is_empty() {
            String::new()
        } else {
            format!(": {}", unexpected.join(", "))
        }
    );
    (clean, unexpected)
}

/// The command with its defaults (for `cargo xtask test`): true when no binary failed that is
/// not on [`EXPECTED_FAILURES`].
pub fn run_default() -> Result<bool> {
    run_suite(&Options {
        cache_dir: default_cache_dir(),
        tarball: default_tarball(),
        runtime: None,
        timeout: Duration::from_secs(120),
        only: Vec::new(),
    })
}

pub fn run_suite(opts: &Options) -> Result<bool> {
    if !nix_is_root() {
        bail!("the suite creates containers: run as root");
    }
    let suite = build_suite(&opts.cache_dir, &opts.tarball)?;
    let runtime = match &opts.runtime {
        Some(r) => r.clone(),
        None => build_podd_oci()?,
    };
    let runtime = std::fs::canonicalize(&runtime)
        .with_context(|| format!("the runtime {} does not exist", runtime.display()))?;
    let state_root = PathBuf::from("/run/podd-oci-conformance");
    let wrapper = write_wrapper(&opts.cache_dir, &runtime, &state_root)?;
    let mut binaries = validation_binaries(&suite)?;
    if !opts.only.is_empty() {
        binaries.retain(|(n, _)| opts.only.contains(n));
        if binaries.is_empty() {
            bail!("no validation binary is named {}", opts.only.join(", "));
        }
    }
    let logs = opts.cache_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    println!(
        "oci-conformance: {} binaries against {} (timeout {}s each), logs in {}",
        binaries.len(),
        runtime.display(),
        opts.timeout.as_secs(),
        logs.display()
    );
    let mut rows = Vec::new();
    let mut failing_lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, bin) in &binaries {
        let tmp = opts.cache_dir.join("run-tmp").join(name);
        let start = Instant::now();
        let (text, ending) = run_one(&suite, bin, &wrapper, &tmp, opts.timeout)?;
        let secs = start.elapsed().as_secs_f64();
        std::fs::write(logs.join(format!("{name}.tap")), &text)?;
        let _ = std::fs::remove_file(tmp.with_extension("log"));
        clean_up(&runtime, &state_root, &tmp);
        let counts = parse_tap(&text);
        let v = verdict(&counts, ending.timed_out);
        println!(
            "  {name}: {} ok, {} not ok{}",
            counts.ok,
            counts.not_ok,
            if ending.timed_out { ", timed out" } else { "" }
        );
        if !counts.failures.is_empty() {
            failing_lines.insert(name.clone(), counts.failures.clone());
        }
        rows.push(Row {
            name: name.clone(),
            counts,
            ending,
            verdict: v,
            secs,
        });
    }
    let _ = std::fs::remove_dir(opts.cache_dir.join("run-tmp"));
    let _ = std::fs::remove_dir(&state_root);
    let (_, unexpected) = print_table(&rows, &missing_bounding_caps());
    for name in &unexpected {
        if let Some(lines) = failing_lines.get(name) {
            println!("\n{name}:");
            for l in lines {
                println!("  {l}");
            }
        }
        println!(
            "  (full output: {})",
            logs.join(format!("{name}.tap")).display()
        );
    }
    Ok(unexpected.is_empty())
}

fn nix_is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_counts_and_the_counting_rule() {
        let text = "TAP version 13\nok 1 - a\nnot ok 2 - b\n  ---\n  {}\n  ...\nok 3 # SKIP no\nok 4 - c\n1..4\n";
        let c = parse_tap(text);
        assert_eq!((c.ok, c.not_ok, c.skipped), (2, 1, 1));
        assert!(c.diagnostic);
        assert_eq!(c.failures, ["not ok 2 - b"]);
        assert_eq!(verdict(&c, false), Verdict::Failed);
        let none = parse_tap("TAP version 13\nfailed to start the container\n1..0\n");
        assert_eq!(
            verdict(&none, false),
            Verdict::NoTestPoint,
            "no test point is a failure"
        );
        let clean = parse_tap("TAP version 13\nok 1 - a\n1..1\n");
        assert_eq!(verdict(&clean, false), Verdict::Clean);
        assert_eq!(verdict(&clean, true), Verdict::TimedOut);
        // "okay" or "not okay" text is no test point.
        assert_eq!(parse_tap("okay\nnot okay\n"), TapCounts::default());
        let done = Ending {
            code: Some(0),
            timed_out: false,
        };
        assert!(quiet_success(&none, done));
        assert!(!quiet_success(
            &none,
            Ending {
                code: Some(1),
                ..done
            }
        ));
        assert!(
            !quiet_success(&c, done),
            "a diagnostic is a reported problem"
        );
    }

    #[test]
    fn expected_failures_are_real_binaries_and_unique() {
        let mut names: Vec<_> = EXPECTED_FAILURES.iter().map(|(n, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EXPECTED_FAILURES.len());
    }
}

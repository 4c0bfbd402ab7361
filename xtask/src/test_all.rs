//! `cargo xtask test`: the whole suite, in order: build-ebpf, fmt, clippy, the daemon's
//! binaries, the host tests (`cargo test --workspace`, as root), the fuzz targets (30 s each,
//! `cargo xtask fuzz`), the VM suite, the check that the VM suite can fail, and the README's
//! quickstart run as written from a fresh clone.
//! Every step runs even when an earlier one failed; the summary ends with `N passed, N failed`,
//! counting each test and each check step.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::process::{cargo, describe, run_status};
use crate::{build_ebpf, libtest_failures, vm};

/// The harness test that fails when PODD_VM_FAIL_ON_PURPOSE=1 (tests/tests/vm_harness.rs).
pub const FAIL_ON_PURPOSE_TEST: &str = "fails_on_purpose_when_asked";
/// The harness test that panics the guest kernel when PODD_VM_PANIC_ON_PURPOSE=1.
pub const PANIC_ON_PURPOSE_TEST: &str = "panics_the_guest_kernel_when_asked";

/// How many lines of failure reasons the summary prints at most.
const WHY_LINES: usize = 60;

struct Step {
    name: &'static str,
    passed: usize,
    failed: usize,
    secs: f64,
    note: String,
}

pub fn run() -> Result<bool> {
    let mut steps = Vec::new();
    let mut step = |name: &'static str,
                    body: &mut dyn FnMut() -> Result<(usize, usize, String)>| {
        println!("\n=== {name} ===");
        let start = Instant::now();
        let (passed, failed, note) = match body() {
            Ok(counts) => counts,
            Err(err) => {
                println!("{name}: error: {err:#}");
                (0, 1, format!("{err:#}"))
            }
        };
        steps.push(Step {
            name,
            passed,
            failed,
            secs: start.elapsed().as_secs_f64(),
            note,
        });
    };

    step("build-ebpf", &mut || {
        build_ebpf::build_ebpf().map(|()| (1, 0, String::new()))
    });
    step("fmt", &mut || {
        check(cargo().args(["fmt", "--all", "--check"]))
    });
    step("clippy", &mut || {
        check(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            // Lint every crate, not only those before the first failure.
            "--keep-going",
            "--",
            "-D",
            "warnings",
        ]))
    });
    // The end-to-end tests run the real daemon: `cargo test` builds a package's binaries only
    // for that package's own integration tests, so build podd, podd-shim and podctl first.
    step("binaries", &mut || {
        check(cargo().args(["build", "-p", "podd", "-p", "podd-pod", "-p", "podctl"]))
    });
    step("host tests", &mut host_tests);
    step("fuzz", &mut crate::fuzz::test_step);
    // Builds the OCI validation suite into its cache, which the VM suite's run reads.
    step("oci conformance", &mut || {
        crate::oci_conformance::run_default().map(|clean| {
            if clean {
                (1, 0, String::new())
            } else {
                (0, 1, "a binary outside the documented list failed".into())
            }
        })
    });
    step("vm tests", &mut || {
        let report = vm::vm_test(&vm::VmOptions::workspace())?;
        let (passed, failed) = report.counts();
        Ok((passed, failed, libtest_failures::note(&report.failures())))
    });
    step("deliberate failure", &mut deliberate_failure);
    step("readme quickstart", &mut || {
        crate::quickstart::run().map(|()| (1, 0, String::new()))
    });

    println!("\n=== summary ===");
    let mut passed = 0;
    let mut failed = 0;
    for s in &steps {
        passed += s.passed;
        failed += s.failed;
        let state = if s.failed == 0 { "ok" } else { "FAILED" };
        let note = if s.note.is_empty() {
            String::new()
        } else {
            format!("  ({})", first_line(&s.note))
        };
        println!(
            "  {state:<7} {:<19} {:>4} passed, {:>3} failed  {:>6.1} s{note}",
            s.name, s.passed, s.failed, s.secs
        );
    }
    // Why, after the table: CI logs are often read only by their tail.
    let why: Vec<&str> = steps
        .iter()
        .filter(|s| s.failed > 0)
        .flat_map(|s| s.note.lines().skip(1))
        .take(WHY_LINES)
        .collect();
    if !why.is_empty() {
        println!("\nwhy:");
        for line in why {
            println!("  {line}");
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// A check step: one pass or one failure.
fn check(cmd: &mut Command) -> Result<(usize, usize, String)> {
    Ok(if run_status(cmd)? {
        (1, 0, String::new())
    } else {
        (0, 1, String::new())
    })
}

/// `cargo test --workspace`, counting libtest's `test result:` lines.
fn host_tests() -> Result<(usize, usize, String)> {
    let mut cmd = cargo();
    // --no-fail-fast: every test binary runs, so the summary counts every failure.
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .stdout(Stdio::piped());
    let (success, output) = tee(&mut cmd)?;
    let (passed, mut failed) = libtest_totals(&output);
    let mut note = libtest_failures::note(&libtest_failures::failed_with_reasons(&output));
    if !success && failed == 0 {
        failed = 1;
        note = "cargo test failed before reporting a failed test (a build error?)".into();
    }
    Ok((passed, failed, note))
}

/// `cargo xtask vm-test --fail-on-purpose`, with the guest kernel also made to panic, must
/// exit non-zero and report exactly those two failures: the failed test by name, and the panic.
fn deliberate_failure() -> Result<(usize, usize, String)> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "vm-test",
        "-p",
        "podd-tests",
        "--test",
        "vm_harness",
        "--fail-on-purpose",
        "--",
    ])
    .args([FAIL_ON_PURPOSE_TEST, PANIC_ON_PURPOSE_TEST])
    .env("PODD_VM_PANIC_ON_PURPOSE", "1")
    .stdout(Stdio::piped());
    let (success, output) = tee(&mut cmd)?;
    let verdict = judge_deliberate_failure(success, &output);
    if verdict.is_empty() {
        println!(
            "deliberate failure: vm-test exited non-zero, reported {FAIL_ON_PURPOSE_TEST} as FAILED \
             and the guest's kernel panic, as it should"
        );
        Ok((1, 0, String::new()))
    } else {
        Ok((0, 1, verdict))
    }
}

/// What is wrong with a deliberately failing vm-test run; empty when it failed as it should.
fn judge_deliberate_failure(success: bool, output: &str) -> String {
    let summary = output
        .rsplit_once("VM test results:")
        .map_or("", |(_, s)| s);
    let named = summary.lines().any(|line| {
        line.trim_start().starts_with("FAILED")
            && line.contains("podd-tests/vm_harness")
            && line.contains(FAIL_ON_PURPOSE_TEST)
    });
    let panicked = summary
        .lines()
        .any(|line| line.contains("FAILED") && line.contains("Kernel panic"));
    let counted = summary
        .lines()
        .any(|line| line.trim() == "vm-test: 0 passed, 2 failed");
    if success {
        "vm-test exited 0 although a test failed and the guest panicked".into()
    } else if !named {
        format!("vm-test did not report {FAIL_ON_PURPOSE_TEST} as FAILED")
    } else if !panicked {
        "vm-test did not report the guest's kernel panic".into()
    } else if !counted {
        "vm-test failed, but not with exactly the two deliberate failures".into()
    } else {
        String::new()
    }
}

/// Runs a command whose stdout is piped, echoing and keeping it.
fn tee(cmd: &mut Command) -> Result<(bool, String)> {
    println!("$ {}", describe(cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", describe(cmd)))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut kept = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        kept.push_str(&line);
        kept.push('\n');
    }
    Ok((child.wait()?.success(), kept))
}

/// Sums `test result: ok. 3 passed; 1 failed; ...` lines.
fn libtest_totals(output: &str) -> (usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    for line in output.lines().filter(|l| l.starts_with("test result:")) {
        for part in line.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<usize>() else {
                continue;
            };
            match kind {
                "passed" => passed += count,
                "failed" => failed += count,
                _ => {}
            }
        }
    }
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_the_deliberate_failure_run() {
        let good = "vm| noise\nVM test results:\n  FAILED  podd-tests/vm_harness  fails_on_purpose_when_asked\n  \
                    FAILED  podd-tests/vm_harness  panics_the_guest_kernel_when_asked: did not finish\n  \
                    FAILED  guest kernel: [ 9.1] Kernel panic - not syncing: sysrq triggered crash\n\
                    vm-test: 0 passed, 2 failed\n";
        assert_eq!(judge_deliberate_failure(false, good), "");
        assert!(judge_deliberate_failure(true, good).contains("exited 0"));
        let no_panic = good.replace("Kernel panic", "something");
        assert!(judge_deliberate_failure(false, &no_panic).contains("panic"));
        let other = good.replace("fails_on_purpose_when_asked", "another_test");
        assert!(judge_deliberate_failure(false, &other).contains("as FAILED"));
    }

    #[test]
    fn sums_libtest_results() {
        let out = "running 3 tests\n\
                   test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                   test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n";
        assert_eq!(libtest_totals(out), (8, 2));
    }
}

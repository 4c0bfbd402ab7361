//! Reading the guest's serial console: markers from the stage scripts, libtest's per-test lines,
//! and kernel panics. QEMU exits 0 however the guest ends, so this is the only verdict.

use std::fmt;

use crate::libtest_failures::FailureReasons;

pub const MARK_WARN: &str = "PODD-VM-WARN";
pub const MARK_EXIT: &str = "PODD-VM-EXIT";
pub const MARK_READY: &str = "PODD-VM-READY";
pub const MARK_BIN_START: &str = "PODD-VM-BIN-START";
pub const MARK_BIN_END: &str = "PODD-VM-BIN-END";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Ignored,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Passed => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Ignored => "ignored",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    pub outcome: Outcome,
}

/// One test binary's run in the guest.
#[derive(Debug, Clone, Default)]
pub struct BinaryRun {
    pub label: String,
    pub exit_code: Option<i32>,
    pub tests: Vec<TestResult>,
    /// Why tests failed, for the summary (the tail of a long log).
    pub reasons: FailureReasons,
    pending: Option<String>,
}

/// Everything the guest reported.
#[derive(Debug, Default)]
pub struct VmReport {
    /// Labels of the binaries the guest was asked to run.
    pub expected: Vec<String>,
    /// Labels of `vm_*` targets that did not compile, so never ran.
    pub not_built: Vec<String>,
    pub binaries: Vec<BinaryRun>,
    pub ready: Option<String>,
    pub exit_marker: Option<i32>,
    pub panic: Option<String>,
    pub timed_out: bool,
    pub warnings: Vec<String>,
    pub boot_secs: Option<f64>,
    pub total_secs: f64,
}

impl VmReport {
    pub fn new(expected: Vec<String>) -> Self {
        VmReport {
            expected,
            ..VmReport::default()
        }
    }

    /// Feeds one line of console output.
    pub fn feed(&mut self, raw: &str) {
        let line = raw.trim_end_matches(['\r', '\n']);
        if line.contains("Kernel panic - not syncing")
            || (line.contains("Oops: ") && line.contains("[#"))
        {
            self.panic.get_or_insert_with(|| line.trim().to_string());
        }
        if let Some(rest) = marker(line, MARK_READY) {
            self.ready = Some(rest.to_string());
        } else if let Some(rest) = marker(line, MARK_WARN) {
            self.warnings.push(rest.to_string());
        } else if let Some(rest) = marker(line, MARK_EXIT) {
            self.exit_marker = Some(rest.trim().parse().unwrap_or(-1));
        } else if let Some(label) = marker(line, MARK_BIN_START) {
            self.binaries.push(BinaryRun {
                label: label.trim().to_string(),
                ..BinaryRun::default()
            });
        } else if let Some(rest) = marker(line, MARK_BIN_END) {
            let code = rest
                .rsplit(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(-1);
            if let Some(run) = self.binaries.last_mut() {
                run.exit_code = Some(code);
                if let Some(name) = run.pending.take() {
                    // The binary died while this test ran (crash, abort, in-guest timeout).
                    let outcome = if code == 0 {
                        Outcome::Passed
                    } else {
                        Outcome::Failed
                    };
                    run.tests.push(TestResult { name, outcome });
                }
            }
        } else if let Some(run) = self
            .binaries
            .last_mut()
            .filter(|run| run.exit_code.is_none())
        {
            run.feed_libtest(line);
        }
    }

    /// Tests that passed, and failures: failed tests, binaries that failed without a failed
    /// test, binaries that never ran, and a panic, a timeout or a missing exit marker.
    pub fn counts(&self) -> (usize, usize) {
        let mut passed = 0;
        let mut failed = 0;
        for run in &self.binaries {
            passed += run
                .tests
                .iter()
                .filter(|t| t.outcome == Outcome::Passed)
                .count();
            let failed_tests = run
                .tests
                .iter()
                .filter(|t| t.outcome == Outcome::Failed)
                .count();
            failed += failed_tests;
            if failed_tests == 0 && run.exit_code != Some(0) {
                failed += 1;
            }
        }
        failed += self.missing_binaries().len() + self.not_built.len();
        if self.panic.is_some() || self.timed_out || self.exit_marker.is_none() {
            failed += 1;
        }
        (passed, failed)
    }

    pub fn missing_binaries(&self) -> Vec<&str> {
        self.expected
            .iter()
            .filter(|label| !self.binaries.iter().any(|run| &run.label == *label))
            .map(String::as_str)
            .collect()
    }

    pub fn success(&self) -> bool {
        self.counts().1 == 0 && self.exit_marker == Some(0)
    }

    /// The failed tests (`LABEL NAME`), each with the lines saying why.
    pub fn failures(&self) -> Vec<(String, Vec<String>)> {
        self.binaries
            .iter()
            .flat_map(|run| {
                run.tests
                    .iter()
                    .filter(|t| t.outcome == Outcome::Failed)
                    .map(move |t| {
                        (
                            format!("{} {}", run.label, t.name),
                            run.reasons.of(&t.name).to_vec(),
                        )
                    })
            })
            .collect()
    }

    /// The per-test table and the closing `vm-test: N passed, N failed` line.
    pub fn summary(&self) -> String {
        let mut text = String::from("\nVM test results:\n");
        let width = self
            .binaries
            .iter()
            .map(|run| run.label.len())
            .max()
            .unwrap_or(0);
        for run in &self.binaries {
            for test in &run.tests {
                let outcome = test.outcome.to_string();
                text.push_str(&format!(
                    "  {outcome:<7} {:<width$}  {}\n",
                    run.label, test.name
                ));
            }
            for test in run.tests.iter().filter(|t| t.outcome == Outcome::Failed) {
                for line in run.reasons.of(&test.name) {
                    text.push_str(&format!("            | {line}\n"));
                }
            }
            match run.exit_code {
                Some(0) => {}
                Some(code) if run.tests.iter().all(|t| t.outcome != Outcome::Failed) => {
                    let why = if code == 137 {
                        " (killed: the per-binary timeout?)"
                    } else {
                        ""
                    };
                    text.push_str(&format!("  FAILED  {}  exited {code}{why}\n", run.label));
                }
                Some(_) => {}
                None => {
                    let test = run.pending.as_deref().unwrap_or("(between tests)");
                    text.push_str(&format!(
                        "  FAILED  {:<width$}  {test}: did not finish\n",
                        run.label
                    ));
                }
            }
        }
        for label in &self.not_built {
            text.push_str(&format!("  FAILED  {label}  did not compile\n"));
        }
        for label in self.missing_binaries() {
            text.push_str(&format!("  FAILED  {label}  never ran\n"));
        }
        if self.binaries.is_empty() && self.expected.is_empty() {
            text.push_str("  (no vm_* test targets)\n");
        }
        if let Some(panic) = &self.panic {
            text.push_str(&format!("  FAILED  guest kernel: {panic}\n"));
        }
        if self.timed_out {
            text.push_str("  FAILED  the VM timed out and was killed\n");
        } else if self.exit_marker.is_none() {
            text.push_str("  FAILED  the guest stopped without reporting its exit code\n");
        }
        for warning in &self.warnings {
            text.push_str(&format!("  warning: {warning}\n"));
        }
        let (passed, failed) = self.counts();
        let boot = self
            .boot_secs
            .map(|s| format!("boot {s:.1} s, "))
            .unwrap_or_default();
        text.push_str(&format!("({boot}total {:.1} s)\n", self.total_secs));
        text.push_str(&format!("vm-test: {passed} passed, {failed} failed\n"));
        text
    }
}

fn marker<'a>(line: &'a str, mark: &str) -> Option<&'a str> {
    let at = line.find(mark)?;
    Some(line[at + mark.len()..].trim_start())
}

impl BinaryRun {
    /// libtest's pretty format: `test NAME ... ok|FAILED|ignored`; the result may come on a
    /// later line when the test (or the kernel) printed in between.
    fn feed_libtest(&mut self, line: &str) {
        self.reasons.feed(line);
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, result)) = rest.split_once(" ... ")
        {
            if let Some(name) = self.pending.take() {
                self.tests.push(TestResult {
                    name,
                    outcome: Outcome::Failed,
                });
            }
            match parse_outcome(result) {
                Some(outcome) => self.tests.push(TestResult {
                    name: name.to_string(),
                    outcome,
                }),
                None => self.pending = Some(name.to_string()),
            }
        } else if self.pending.is_some()
            && let Some(outcome) = parse_outcome(line.trim())
        {
            let name = self.pending.take().unwrap_or_default();
            self.tests.push(TestResult { name, outcome });
        }
    }
}

fn parse_outcome(text: &str) -> Option<Outcome> {
    let word = text.split_whitespace().next()?;
    match word {
        "ok" => Some(Outcome::Passed),
        "FAILED" => Some(Outcome::Failed),
        "ignored" | "ignored," => Some(Outcome::Ignored),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(report: &mut VmReport, text: &str) {
        for line in text.lines() {
            report.feed(line);
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let mut report = VmReport::new(vec!["p/vm_a".into()]);
        feed_all(
            &mut report,
            "PODD-VM-READY 6.1.0-56-amd64\r\n\
             PODD-VM-BIN-START p/vm_a\r\n\
             running 2 tests\r\n\
             test one ... ok\r\n\
             test two ... [   9.1] Memory cgroup out of memory: Killed process 77\r\n\
             ok\r\n\
             test result: ok. 2 passed; 0 failed; 0 ignored\r\n\
             PODD-VM-BIN-END p/vm_a 0\r\n\
             PODD-VM-EXIT 0\r\n",
        );
        assert_eq!(report.counts(), (2, 0));
        assert!(report.success());
        let names: Vec<_> = report.binaries[0]
            .tests
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["one", "two"]);
        assert!(report.summary().ends_with("vm-test: 2 passed, 0 failed\n"));
    }

    #[test]
    fn a_failed_test_fails_the_run_and_is_named() {
        let mut report = VmReport::new(vec!["p/vm_a".into()]);
        feed_all(
            &mut report,
            "PODD-VM-BIN-START p/vm_a\n\
             test good ... ok\n\
             test bad ... FAILED\n\
             PODD-VM-BIN-END p/vm_a 101\n\
             PODD-VM-EXIT 1\n",
        );
        assert_eq!(report.counts(), (1, 1));
        assert!(!report.success());
        assert!(report.summary().contains("FAILED  p/vm_a  bad"));
    }

    #[test]
    fn the_summary_says_why_a_test_failed() {
        let mut report = VmReport::new(vec!["p/vm_a".into()]);
        feed_all(
            &mut report,
            "PODD-VM-BIN-START p/vm_a\n\
             test bad ... FAILED\n\
             failures:\n\
             ---- bad stdout ----\n\
             Error: the burn pod ready: timed out after 120 s\n\
             failures:\n\
             PODD-VM-BIN-END p/vm_a 101\n\
             PODD-VM-EXIT 1\n",
        );
        let summary = report.summary();
        assert!(
            summary.contains("  FAILED  p/vm_a  bad\n            | Error: the burn pod ready"),
            "{summary}"
        );
    }

    #[test]
    fn a_crash_mid_test_blames_that_test() {
        let mut report = VmReport::new(vec!["p/vm_a".into(), "p/vm_b".into()]);
        feed_all(
            &mut report,
            "PODD-VM-BIN-START p/vm_a\n\
             test hangs ... \n\
             PODD-VM-BIN-END p/vm_a 137\n\
             PODD-VM-EXIT 1\n",
        );
        assert_eq!(
            report.binaries[0].tests,
            [TestResult {
                name: "hangs".into(),
                outcome: Outcome::Failed
            }]
        );
        // vm_b never ran: a second failure.
        assert_eq!(report.counts(), (0, 2));
        assert!(report.summary().contains("p/vm_b  never ran"));
    }

    #[test]
    fn panic_and_missing_exit_marker_fail() {
        let mut report = VmReport::new(vec![]);
        report.feed("[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs");
        assert!(!report.success());
        assert!(
            report
                .summary()
                .contains("guest kernel: [    1.0] Kernel panic")
        );

        let mut report = VmReport::new(vec![]);
        report.feed("PODD-VM-READY x");
        assert!(!report.success());
        report.timed_out = true;
        assert!(report.summary().contains("timed out"));
    }

    #[test]
    fn a_target_that_did_not_compile_fails_the_run() {
        let mut report = VmReport::new(vec!["p/vm_a".into()]);
        report.not_built = vec!["q/vm_broken".into()];
        feed_all(
            &mut report,
            "PODD-VM-BIN-START p/vm_a\ntest t ... ok\nPODD-VM-BIN-END p/vm_a 0\nPODD-VM-EXIT 0\n",
        );
        assert_eq!(report.counts(), (1, 1));
        assert!(!report.success());
        assert!(
            report
                .summary()
                .contains("FAILED  q/vm_broken  did not compile")
        );
    }

    #[test]
    fn binary_failing_without_a_test_line_counts_once() {
        let mut report = VmReport::new(vec!["p/vm_a".into()]);
        feed_all(
            &mut report,
            "PODD-VM-BIN-START p/vm_a\nerror: something\nPODD-VM-BIN-END p/vm_a 2\nPODD-VM-EXIT 1\n",
        );
        assert_eq!(report.counts(), (0, 1));
        assert!(report.summary().contains("FAILED  p/vm_a  exited 2"));
    }
}

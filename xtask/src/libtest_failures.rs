//! Why libtest tests failed: the first lines of each test's error or panic, read from the
//! `---- NAME stdout ----` sections libtest prints at the end of a binary's run. The summaries
//! print them, because a long CI log is often read only by its tail.

/// How many lines of a failure's error are kept, and how long each may be.
const REASON_LINES: usize = 8;
const REASON_WIDTH: usize = 240;

#[derive(Debug, Clone, Default)]
pub struct FailureReasons {
    /// Per test (in the order seen): its kept error lines.
    reasons: Vec<(String, Vec<String>)>,
    /// The test whose captured output is being read, and whether its error began.
    section: Option<(String, bool)>,
}

impl FailureReasons {
    /// Feeds one line of a test binary's output.
    pub fn feed(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            self.section = Some((name.to_string(), false));
            return;
        }
        if line == "failures:" || line == "successes:" || line.starts_with("test result:") {
            self.section = None;
        }
        let Some((name, started)) = &mut self.section else {
            return;
        };
        *started |= line.starts_with("Error: ") || line.contains("panicked at");
        // A backtrace says where, not why: the lines before it are kept.
        if line.starts_with("stack backtrace:") || line.starts_with("Stack backtrace:") {
            *started = false;
        }
        if !*started {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return;
        }
        let kept = match self.reasons.iter().position(|(test, _)| test == name) {
            Some(at) => &mut self.reasons[at].1,
            None => {
                self.reasons.push((name.clone(), Vec::new()));
                &mut self.reasons.last_mut().expect("just pushed").1
            }
        };
        if kept.len() < REASON_LINES {
            kept.push(line.chars().take(REASON_WIDTH).collect());
        }
    }

    /// The kept error lines of a test (empty when its output had none).
    pub fn of(&self, test: &str) -> &[String] {
        self.reasons
            .iter()
            .find(|(name, _)| name == test)
            .map_or(&[], |(_, lines)| lines.as_slice())
    }
}

/// The failed tests of libtest output (`test NAME ... FAILED`), each with its reason lines.
pub fn failed_with_reasons(output: &str) -> Vec<(String, Vec<String>)> {
    let mut reasons = FailureReasons::default();
    let mut failed = Vec::new();
    for line in output.lines() {
        reasons.feed(line);
        if let Some((name, result)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
            && result.starts_with("FAILED")
        {
            failed.push(name.to_string());
        }
    }
    failed
        .into_iter()
        .map(|name| {
            let lines = reasons.of(&name).to_vec();
            (name, lines)
        })
        .collect()
}

/// A step's note on its failed tests: a first line naming them, then each with its reason.
pub fn note(failures: &[(String, Vec<String>)]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = failures.iter().map(|(name, _)| name.as_str()).collect();
    let mut text = format!("failed: {}", names.join(", "));
    for (name, lines) in failures {
        text.push_str(&format!("\n{name}"));
        for line in lines {
            text.push_str(&format!("\n    | {line}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "running 2 tests\n\
        test bad ... FAILED\n\
        test good ... ok\n\
        \n\
        successes:\n\
        ---- good stdout ----\n\
        Error: not me\n\
        \n\
        failures:\n\
        \n\
        ---- bad stdout ----\n\
        some progress line\n\
        Error: the burn pod ready: timed out after 120 s\n\
        \n\
        Caused by:\n\
        \x20   no such file\n\
        \n\
        failures:\n\
        \x20   bad\n\
        test result: FAILED. 1 passed; 1 failed\n";

    #[test]
    fn keeps_the_error_of_each_failed_test() {
        assert_eq!(
            failed_with_reasons(OUTPUT),
            [(
                "bad".to_string(),
                vec![
                    "Error: the burn pod ready: timed out after 120 s".to_string(),
                    "Caused by:".to_string(),
                    "    no such file".to_string()
                ]
            )]
        );
    }

    #[test]
    fn a_note_names_the_failures_then_says_why() {
        let note = note(&failed_with_reasons(OUTPUT));
        assert_eq!(
            note,
            "failed: bad\nbad\n    | Error: the burn pod ready: timed out after 120 s\n    \
             | Caused by:\n    |     no such file"
        );
        assert_eq!(super::note(&[]), "");
    }

    #[test]
    fn a_backtrace_is_left_out() {
        let text = "---- t stdout ----\nthread 't' panicked at a.rs:1:2:\nleft: 2\n\
                    stack backtrace:\n   0: rust_begin_unwind\n";
        let mut reasons = FailureReasons::default();
        text.lines().for_each(|l| reasons.feed(l));
        assert_eq!(
            reasons.of("t"),
            ["thread 't' panicked at a.rs:1:2:", "left: 2"]
        );
    }

    #[test]
    fn a_panic_is_kept_with_its_message_and_long_errors_are_cut() {
        let long = "x".repeat(1000);
        let text = format!(
            "---- t stdout ----\nthread 't' panicked at a.rs:1:2:\nassertion failed\n{}\n",
            format!("{long}\n").repeat(20)
        );
        let mut reasons = FailureReasons::default();
        text.lines().for_each(|l| reasons.feed(l));
        let kept = reasons.of("t");
        assert_eq!(kept[0], "thread 't' panicked at a.rs:1:2:");
        assert_eq!(kept[1], "assertion failed");
        assert_eq!(kept.len(), REASON_LINES);
        assert!(kept.iter().all(|l| l.chars().count() <= REASON_WIDTH));
    }
}

//! The CRI log files (`pod/src/logs.rs`): a container writes any bytes it likes to its stdout
//! and stderr, the shim's `LogWriter` records them, and `podctl logs` reads them back through
//! `LogReader` (which must also survive files it did not write, e.g. cut short by a full disk).
//!
//! Input: the first byte picks the mode. Mode "written": the rest is a sequence of
//! `[header][bytes]` chunks (header: stream bit and length), written through a `LogWriter` with
//! no rotation and through one that rotates tiny files. Checks: reading never fails; the
//! unrotated log gives back exactly what each stream wrote (lossily decoded, F records ending
//! lines and P records continuing them); the rotated log is a suffix of it; `tail` is a suffix;
//! `follow` emits what `read` returns. Mode "raw": the rest is split into a live file and a
//! rotated one, as they might be found on disk; reading and following must not fail or panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podd_pod::logs::{LogLine, LogReader, LogWriter, Rotation, Stream};
use std::path::Path;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // tmpfs where there is one: the logs are small, and a disk makes the target 5x slower.
    let base = Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    if mode & 1 == 0 {
        written(dir.path(), mode, rest);
    } else {
        raw(dir.path(), rest);
    }
});

fn written(dir: &Path, mode: u8, mut data: &[u8]) {
    let whole = dir.join("whole/0.log");
    let rotated = dir.join("rotated/0.log");
    let mut unbounded = LogWriter::open(
        &whole,
        Rotation {
            max_bytes: u64::MAX,
            max_files: 1,
        },
    )
    .expect("open the log");
    let mut small = LogWriter::open(
        &rotated,
        Rotation {
            max_bytes: 64 + u64::from(mode >> 1) * 4,
            max_files: 1 + usize::from(mode >> 6),
        },
    )
    .expect("open the log");
    let mut sent: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    while let Some((&header, rest)) = data.split_first() {
        let stream = if header & 0x80 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        let len = usize::from(header & 0x7f).min(rest.len());
        let (chunk, rest) = rest.split_at(len);
        unbounded.write(stream, chunk).expect("write the log");
        small.write(stream, chunk).expect("write the rotated log");
        sent[stream as usize].extend_from_slice(chunk);
        data = rest;
    }
    unbounded.flush().expect("flush the log");
    small.flush().expect("flush the rotated log");

    let all = read_ok(&whole, None);
    for stream in [Stream::Stdout, Stream::Stderr] {
        let mut expected = sent[stream as usize].clone();
        if !expected.is_empty() && !expected.ends_with(b"\n") {
            expected.push(b'\n'); // flush ends the unfinished line
        }
        let got: String = all
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| format!("{}{}", l.text, if l.full { "\n" } else { "" }))
            .collect();
        // P records split long lines at a byte count, maybe inside a character, which then
        // decodes as two replacement characters; compare exactly where that cannot happen.
        if all.iter().all(|l| l.full) || expected.is_ascii() {
            assert_eq!(
                got,
                String::from_utf8_lossy(&expected),
                "{stream:?} read back differs from what was written"
            );
        }
    }
    let kept = read_ok(&rotated, None);
    assert!(
        is_suffix(&kept, &all),
        "the rotated log is not the newest part of the log: {} of {} records",
        kept.len(),
        all.len()
    );
    for n in [0, 1, 3] {
        let tail = read_ok(&whole, Some(n));
        assert_eq!(tail.len(), all.len().min(n), "tail {n}");
        assert!(is_suffix(&tail, &all), "tail {n} is not the end of the log");
    }
    assert_eq!(follow_ok(&rotated, None), kept, "follow and read disagree");
}

fn raw(dir: &Path, data: &[u8]) {
    let live = dir.join("0.log");
    let (older, newer) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    if !older.is_empty() {
        std::fs::write(dir.join("0.log.1"), older).expect("write a rotated file");
    }
    std::fs::write(&live, newer).expect("write the live file");
    let all = read_ok(&live, None);
    for line in &all {
        assert!(!line.text.contains('\n'), "a record spans lines: {line:?}");
    }
    assert_eq!(follow_ok(&live, None), all, "follow and read disagree");
    let tail = read_ok(&live, Some(2));
    assert!(is_suffix(&tail, &all), "tail is not the end of the log");
}

fn read_ok(path: &Path, tail: Option<usize>) -> Vec<LogLine> {
    LogReader::new(path)
        .read(tail)
        .unwrap_or_else(|e| panic!("reading a log the container wrote failed: {e}"))
}

/// What `follow` emits before it is told to stop.
fn follow_ok(path: &Path, tail: Option<usize>) -> Vec<LogLine> {
    let mut out = Vec::new();
    LogReader::new(path)
        .follow(
            tail,
            Duration::from_millis(1),
            |line| {
                out.push(line.clone());
                true
            },
            || true,
        )
        .unwrap_or_else(|e| panic!("following a log failed: {e}"));
    out
}

/// Whether `part` is the end of `all`, ignoring timestamps (the writers ran at different times).
fn is_suffix(part: &[LogLine], all: &[LogLine]) -> bool {
    part.len() <= all.len()
        && part
            .iter()
            .zip(&all[all.len() - part.len()..])
            .all(|(a, b)| a.stream == b.stream && a.full == b.full && a.text == b.text)
}

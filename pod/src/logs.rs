//! Container logs in the CRI format (`<RFC 3339 time> <stream> <F|P> <text>`), one file per
//! container with size-based rotation, read back in order and followed across rotations.
//!
//! The shim owns the writer; `podctl logs` reads through the agent with [`LogReader`].

use crate::timefmt::rfc3339_nanos;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file {path}: {op} failed: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Rotation limits: Kubernetes' defaults are 10 MiB and 5 files.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    pub max_bytes: u64,
    /// How many files to keep, the live one included.
    pub max_files: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 10 << 20,
            max_files: 5,
        }
    }
}

/// Path of the `n`-th rotated file (`0.log.1` is the newest rotated one).
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The log of a container's previous run (`kubectl logs --previous`), next to its live log
/// `path`: the records of the run before the current one, up to one rotation's size.
pub fn previous_path(path: &Path) -> PathBuf {
    path.with_file_name("previous.log")
}

/// The records of the current run, which become [`previous_path`] when the next one starts.
fn run_path(path: &Path) -> PathBuf {
    path.with_file_name("run.log")
}

/// Writes one container's stdout and stderr lines to `path`, rotating by size.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    /// This run's copy of the records (bounded by `rotation.max_bytes`) and its size.
    run: Option<(File, u64)>,
    /// Bytes of an unfinished line per stream, held until its newline arrives.
    pending: [Vec<u8>; 2],
}

/// A line longer than this is written as partial (`P`) records, as the CRI does.
const MAX_LINE: usize = 16 * 1024;

impl LogWriter {
    pub fn open(path: &Path, rotation: Rotation) -> Result<LogWriter, LogError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path, "open"))?;
        let size = file.metadata().map_err(io_err(path, "stat"))?.len();
        let run = OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_path(path))
            .ok()
            .map(|f| {
                let n = f.metadata().map(|m| m.len()).unwrap_or(0);
                (f, n)
            });
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            run,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// A new run of the container starts: the last run's records become the previous log.
    pub fn new_run(&mut self) -> Result<(), LogError> {
        self.flush()?;
        let run = run_path(&self.path);
        let previous = previous_path(&self.path);
        // A run that wrote nothing (e.g. one that failed to start) keeps the older log.
        if fs::metadata(&run).is_ok_and(|m| m.len() > 0) {
            fs::rename(&run, &previous).map_err(io_err(&run, "rename to previous.log"))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&run)
            .map_err(io_err(&run, "open"))?;
        self.run = Some((f, 0));
        Ok(())
    }

    /// Takes a chunk of output as it was read from the container's pipe.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> Result<(), LogError> {
        let idx = stream as usize;
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.pending[idx]);
            line.extend_from_slice(&data[..nl]);
            self.record(stream, &line, true)?;
            data = &data[nl + 1..];
        }
        self.pending[idx].extend_from_slice(data);
        while self.pending[idx].len() >= MAX_LINE {
            let rest = self.pending[idx].split_off(MAX_LINE);
            let chunk = std::mem::replace(&mut self.pending[idx], rest);
            self.record(stream, &chunk, false)?;
        }
        Ok(())
    }

    /// Writes out unfinished lines, e.g. when the container exits.
    pub fn flush(&mut self) -> Result<(), LogError> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.pending[stream as usize]);
            if !line.is_empty() {
                self.record(stream, &line, true)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, stream: Stream, text: &[u8], full: bool) -> Result<(), LogError> {
        let mut rec = format!(
            "{} {} {} ",
            rfc3339_nanos(SystemTime::now()),
            stream.as_str(),
            if full { 'F' } else { 'P' }
        )
        .into_bytes();
        rec.extend_from_slice(text);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(&rec)
            .map_err(io_err(&self.path, "write"))?;
        self.size += rec.len() as u64;
        if let Some((f, n)) = &mut self.run
            && *n + rec.len() as u64 <= self.rotation.max_bytes
            && f.write_all(&rec).is_ok()
        {
            *n += rec.len() as u64;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        let keep = self.rotation.max_files.max(1);
        // Shift 0.log.(k) -> 0.log.(k+1), dropping the oldest.
        let _ = fs::remove_file(rotated(&self.path, keep - 1));
        for n in (1..keep.saturating_sub(1)).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                fs::rename(&from, rotated(&self.path, n + 1)).map_err(io_err(&from, "rotate"))?;
            }
        }
        if keep > 1 {
            fs::rename(&self.path, rotated(&self.path, 1)).map_err(io_err(&self.path, "rotate"))?;
        } else {
            fs::remove_file(&self.path).map_err(io_err(&self.path, "rotate"))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path, "reopen"))?;
        self.size = 0;
        Ok(())
    }
}

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: Stream,
    /// False for a `P` record: the line continues in the next record.
    pub full: bool,
    pub text: String,
}

impl LogLine {
    pub fn parse(line: &str) -> Option<LogLine> {
        let mut parts = line.splitn(4, ' ');
        let timestamp = parts.next()?.to_string();
        let stream = match parts.next()? {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            _ => return None,
        };
        let full = match parts.next()? {
            "F" => true,
            "P" => false,
            _ => return None,
        };
        let text = parts.next().unwrap_or("").to_string();
        Some(LogLine {
            timestamp,
            stream,
            full,
            text,
        })
    }
}

/// Parses one record as read from a file, its newline included or not. A container may write
/// any bytes, so text that is not UTF-8 is decoded lossily: failing the whole read instead
/// would let a container hide its log from `podctl logs`.
fn parse_record(line: &[u8]) -> Option<LogLine> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    LogLine::parse(&String::from_utf8_lossy(line))
}

/// The live file and the offset a read ended at.
type LivePosition = (File, u64);

/// Reads a container's log: rotated files oldest first, then the live one.
pub struct LogReader {
    path: PathBuf,
}

impl LogReader {
    pub fn new(path: &Path) -> LogReader {
        LogReader {
            path: path.to_path_buf(),
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut rotated_files: Vec<(usize, PathBuf)> = (1..1000)
            .map(|n| (n, rotated(&self.path, n)))
            .take_while(|(_, p)| p.exists())
            .collect();
        rotated_files.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        let mut files: Vec<PathBuf> = rotated_files.into_iter().map(|(_, p)| p).collect();
        files.push(self.path.clone());
        files
    }

    /// Every record, or the last `tail` of them.
    pub fn read(&self, tail: Option<usize>) -> Result<Vec<LogLine>, LogError> {
        Ok(self.read_with_position(tail)?.0)
    }

    /// Reads every file; also returns the live file's handle and the offset read up to, so a
    /// follower continues exactly where the read ended.
    fn read_with_position(
        &self,
        tail: Option<usize>,
    ) -> Result<(Vec<LogLine>, Option<LivePosition>), LogError> {
        // Open the live file first: anything written after this lands in it.
        let live = match File::open(&self.path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&self.path, "open")(e)),
        };
        let mut out = Vec::new();
        let files = self.files();
        for f in &files[..files.len() - 1] {
            let file = match File::open(f) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(f, "open")(e)),
            };
            let mut reader = BufReader::new(file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(io_err(f, "read"))?;
                if n == 0 {
                    break;
                }
                out.extend(parse_record(&line));
            }
        }
        let mut live_pos = None;
        if let Some(file) = live {
            let mut pos = 0u64;
            let mut reader = BufReader::new(&file);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader
                    .read_until(b'\n', &mut buf)
                    .map_err(io_err(&self.path, "read"))?;
                if n == 0 || !buf.ends_with(b"\n") {
                    break;
                }
                pos += n as u64;
                out.extend(parse_record(&buf));
            }
            live_pos = Some((file, pos));
        }
        if let Some(n) = tail {
            let skip = out.len().saturating_sub(n);
            out.drain(..skip);
        }
        Ok((out, live_pos))
    }

    /// Emits the existing records, then follows new ones across rotations until `emit`
    /// returns false or `stop` says so. Polls; the agent runs it on a blocking thread.
    pub fn follow(
        &self,
        tail: Option<usize>,
        poll: Duration,
        mut emit: impl FnMut(&LogLine) -> bool,
        stop: impl Fn() -> bool,
    ) -> Result<(), LogError> {
        let (existing, live) = self.read_with_position(tail)?;
        for line in existing {
            if !emit(&line) {
                return Ok(());
            }
        }
        let (mut file, mut pos) = match live {
            Some(live) => live,
            None => loop {
                if stop() {
                    return Ok(());
                }
                if let Ok(f) = File::open(&self.path) {
                    break (f, 0);
                }
                std::thread::sleep(poll);
            },
        };
        let mut ino = inode(&file);
        let mut partial = Vec::new();
        while !stop() {
            let mut reader = BufReader::new(&file);
            reader
                .seek(SeekFrom::Start(pos))
                .map_err(io_err(&self.path, "seek"))?;
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader
                    .read_until(b'\n', &mut buf)
                    .map_err(io_err(&self.path, "read"))?;
                if n == 0 {
                    break;
                }
                pos += n as u64;
                partial.extend_from_slice(&buf);
                if !buf.ends_with(b"\n") {
                    continue;
                }
                if let Some(line) = parse_record(&partial)
                    && !emit(&line)
                {
                    return Ok(());
                }
                partial.clear();
            }
            // Rotated: the live path is a new file; continue from its start.
            if let Ok(next) = File::open(&self.path)
                && inode(&next) != ino
            {
                file = next;
                ino = inode(&file);
                pos = 0;
                continue;
            }
            std::thread::sleep(poll);
        }
        Ok(())
    }
}

fn inode(f: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    f.metadata().map(|m| m.ino()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn lines_split_across_writes_and_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut w = LogWriter::open(&path, Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\nworld").unwrap();
        w.flush().unwrap();
        let lines = LogReader::new(&path).read(None).unwrap();
        let texts: Vec<(&str, Stream)> =
            lines.iter().map(|l| (l.text.as_str(), l.stream)).collect();
        assert_eq!(
            texts,
            [
                ("oops", Stream::Stderr),
                ("hello", Stream::Stdout),
                ("world", Stream::Stdout)
            ]
        );
        assert!(lines[0].timestamp.ends_with('Z'));
    }

    #[test]
    fn a_new_run_keeps_the_last_one_as_previous() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut w = LogWriter::open(&path, Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"run 1\n").unwrap();
        w.new_run().unwrap();
        w.write(Stream::Stdout, b"run 2\n").unwrap();
        // A run that wrote nothing does not replace the previous log.
        w.new_run().unwrap();
        let texts = |p: &Path| -> Vec<String> {
            LogReader::new(p)
                .read(None)
                .unwrap()
                .into_iter()
                .map(|l| l.text)
                .collect()
        };
        assert_eq!(texts(&previous_path(&path)), ["run 2"]);
        w.write(Stream::Stdout, b"run 4\n").unwrap();
        w.new_run().unwrap();
        assert_eq!(texts(&previous_path(&path)), ["run 4"]);
        // The live log keeps every run.
        assert_eq!(texts(&path), ["run 1", "run 2", "run 4"]);
    }

    #[test]
    fn rotation_keeps_the_newest_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let rot = Rotation {
            max_bytes: 200,
            max_files: 3,
        };
        let mut w = LogWriter::open(&path, rot).unwrap();
        for i in 0..100 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists(), "only 3 files are kept");
        let lines = LogReader::new(&path).read(None).unwrap();
        let nums: Vec<u32> = lines
            .iter()
            .map(|l| l.text.trim_start_matches("line ").parse().unwrap())
            .collect();
        assert_eq!(*nums.last().unwrap(), 99);
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert!(nums.len() < 100, "old lines were rotated away");
        let tail = LogReader::new(&path).read(Some(2)).unwrap();
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[1].text, "line 99");
    }

    #[test]
    fn long_lines_become_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, Rotation::default()).unwrap();
        let long = vec![b'x'; MAX_LINE + 10];
        w.write(Stream::Stdout, &long).unwrap();
        w.write(Stream::Stdout, b"\n").unwrap();
        let lines = LogReader::new(&path).read(None).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(!lines[0].full && lines[1].full);
        assert_eq!(lines[0].text.len() + lines[1].text.len(), MAX_LINE + 10);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/cri_log.rs; input in
    /// fuzz/artifacts-regressions/cri_log/): one line of bytes that are not UTF-8 made every
    /// read of the log fail, so a container could hide everything it had logged.
    #[test]
    fn bytes_that_are_not_utf8_do_not_hide_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let rot = Rotation {
            max_bytes: 120,
            max_files: 3,
        };
        let mut w = LogWriter::open(&path, rot).unwrap();
        w.write(Stream::Stdout, b"before\n").unwrap();
        w.write(Stream::Stdout, b"\xff\xfe binary \xc3\x28\n")
            .unwrap();
        w.write(Stream::Stderr, b"carriage return\r\n").unwrap();
        w.write(Stream::Stdout, b"after\n").unwrap();
        w.write(Stream::Stdout, b"\xe2\x82 live\n").unwrap();
        assert!(
            rotated(&path, 1).exists(),
            "the first lines are in a rotated file"
        );
        let expected = [
            "before",
            "\u{fffd}\u{fffd} binary \u{fffd}(",
            "carriage return\r",
            "after",
            "\u{fffd} live",
        ];
        let lines = LogReader::new(&path)
            .read(None)
            .expect("a log with bytes that are not UTF-8 reads");
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, expected);
        let mut followed = Vec::new();
        LogReader::new(&path)
            .follow(
                None,
                Duration::from_millis(1),
                |l| {
                    followed.push(l.text.clone());
                    true
                },
                || true,
            )
            .expect("following it works too");
        assert_eq!(followed, expected);
    }

    #[test]
    fn follow_sees_new_lines_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let rot = Rotation {
            max_bytes: 120,
            max_files: 2,
        };
        let mut w = LogWriter::open(&path, rot).unwrap();
        w.write(Stream::Stdout, b"before\n").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader_path = path.clone();
        let stop2 = stop.clone();
        let follower = std::thread::spawn(move || {
            let mut seen = Vec::new();
            LogReader::new(&reader_path)
                .follow(
                    None,
                    Duration::from_millis(5),
                    |l| {
                        seen.push(l.text.clone());
                        l.text != "line 9"
                    },
                    || stop2.load(Ordering::Relaxed),
                )
                .unwrap();
            seen
        });
        std::thread::sleep(Duration::from_millis(50));
        for i in 0..10 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let seen = follower.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(seen[0], "before");
        assert_eq!(seen.last().unwrap(), "line 9");
        let expected: Vec<String> = std::iter::once("before".to_string())
            .chain((0..10).map(|i| format!("line {i}")))
            .collect();
        assert_eq!(seen, expected);
    }
}

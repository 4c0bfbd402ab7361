//! `cargo xtask fuzz [--seconds N] [TARGET...]`: builds the cargo-fuzz targets in `fuzz/` and
//! runs each for a bounded time on a copy of its committed corpus (`fuzz/corpus/<target>/` and
//! the past crashes in `fuzz/artifacts-regressions/<target>/`, so the checkout stays clean). Any crash, timeout or out-of-memory fails the run, and the
//! reproducer's path and the command that replays it are printed.
//!
//! The fuzz crate is its own workspace, built with `cargo fuzz build` on the pinned stable
//! toolchain with `RUSTC_BOOTSTRAP=1` (cargo-fuzz passes `-Z` flags; nightly is not guaranteed
//! on a fresh machine, as for build-ebpf), with AddressSanitizer, the default.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::process::{cargo, describe, output, run, workspace_root};

/// The cargo-fuzz release installed when it is missing.
const CARGO_FUZZ: &str = "cargo-fuzz@0.13.2";
/// Seconds each target runs by default: five targets stay well under five minutes.
pub const DEFAULT_SECONDS: u64 = 30;
/// One input running longer than this is a finding (a hang), not just a slow machine.
const INPUT_TIMEOUT_SECS: u64 = 25;
/// The host directory the unpack_tar target watches (see fuzz/fuzz_targets/unpack_tar.rs).
const UNPACK_HOST_DIR: &str = "/tmp/podd-fuzz-host";

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    pub seconds: u64,
    /// Only these targets (default: every target in fuzz/fuzz_targets).
    pub targets: Vec<String>,
}

/// One target's run.
pub struct Outcome {
    pub target: String,
    /// The reproducers libFuzzer wrote, when it failed.
    pub failure: Option<String>,
}

pub fn run_cli(args: &FuzzArgs) -> Result<bool> {
    let outcomes = fuzz(args.seconds, &args.targets)?;
    Ok(outcomes.iter().all(|o| o.failure.is_none()))
}

/// The step of `cargo xtask test`: one check, failed when any target fails.
pub fn test_step() -> Result<(usize, usize, String)> {
    let outcomes = fuzz(DEFAULT_SECONDS, &[])?;
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .map(|o| o.target.as_str())
        .collect();
    Ok(if failed.is_empty() {
        (1, 0, String::new())
    } else {
        (0, 1, format!("fuzz targets failed: {}", failed.join(", ")))
    })
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// The fuzz build's own target dir, beside the workspace's (CI keeps that one warm).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("fuzz")
}

/// Every target: the files in fuzz/fuzz_targets, sorted.
pub fn all_targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".rs"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn fuzz(seconds: u64, wanted: &[String]) -> Result<Vec<Outcome>> {
    let all = all_targets()?;
    if let Some(unknown) = wanted.iter().find(|t| !all.contains(t)) {
        bail!(
            "no fuzz target {unknown:?}; the targets are: {}",
            all.join(", ")
        );
    }
    let targets = if wanted.is_empty() {
        all
    } else {
        wanted.to_vec()
    };
    ensure_cargo_fuzz()?;
    let target_dir = target_dir();
    // Every target at once (cargo fuzz builds one or all): they share all their dependencies.
    let mut build = cargo_fuzz();
    build.args(["build", "--target-dir"]).arg(&target_dir);
    run(&mut build).context("building the fuzz targets")?;
    let bin_dir = target_dir.join(host_triple()?).join("release");

    let mut outcomes = Vec::new();
    for target in &targets {
        let outcome = run_target(&bin_dir.join(target), target, seconds, &target_dir)?;
        outcomes.push(outcome);
    }
    println!("\nfuzz summary ({seconds} s per target):");
    for o in &outcomes {
        match &o.failure {
            None => println!("  ok      {}", o.target),
            Some(what) => println!("  FAILED  {}: {what}", o.target),
        }
    }
    Ok(outcomes)
}

/// `cargo fuzz` in fuzz/, on the pinned toolchain with `-Z` flags allowed.
fn cargo_fuzz() -> Command {
    let mut cmd = cargo();
    cmd.current_dir(fuzz_dir())
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz");
    cmd
}

fn ensure_cargo_fuzz() -> Result<()> {
    let mut version = cargo_fuzz();
    version.arg("--version").stderr(Stdio::null());
    if output(&mut version).is_ok() {
        return Ok(());
    }
    println!("fuzz: cargo-fuzz is missing; installing {CARGO_FUZZ}");
    let mut install = cargo();
    install.args(["install", CARGO_FUZZ, "--locked"]);
    run(&mut install).context("installing cargo-fuzz")
}

/// The triple cargo-fuzz builds for (it always passes `--target`).
fn host_triple() -> Result<String> {
    let mut rustc = Command::new("rustc");
    rustc.current_dir(fuzz_dir()).arg("-vV");
    let info = output(&mut rustc)?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV names no host triple")
}

fn run_target(bin: &Path, target: &str, seconds: u64, target_dir: &Path) -> Result<Outcome> {
    println!("\n=== fuzz {target} ({seconds} s) ===");
    let work = std::env::temp_dir().join(format!("podd-fuzz-{target}.{}", std::process::id()));
    let _cleanup = RemoveOnDrop(vec![work.clone(), PathBuf::from(UNPACK_HOST_DIR)]);
    let corpus = work.join("corpus");
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    // The seeds, and every input that once crashed, so that each run replays those first.
    let seeds = fuzz_dir().join("corpus").join(target);
    let regressions = fuzz_dir().join("artifacts-regressions").join(target);
    let copied = copy_files(&seeds, &corpus)? + copy_files(&regressions, &corpus)?;
    let artifacts = target_dir.join("artifacts").join(target);
    fs::create_dir_all(&artifacts).with_context(|| format!("creating {}", artifacts.display()))?;
    let before = list_files(&artifacts);
    let log_path = work.join("libfuzzer.log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

    let mut cmd = Command::new(bin);
    cmd.arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .stdout(log.try_clone()?)
        .stderr(log);
    println!("$ {}  ({copied} seeds)", describe(&cmd));
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let stats = final_stats(&text);
    println!(
        "fuzz {target}: {} in {:.0} s: {} runs, {} exec/s, corpus {} -> {} inputs",
        if status.success() { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64(),
        stats.runs,
        stats.exec_per_sec,
        copied,
        list_files(&corpus).len(),
    );
    if status.success() {
        return Ok(Outcome {
            target: target.into(),
            failure: None,
        });
    }
    // What libFuzzer said last: the panic message and the stack.
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(80)..] {
        println!("  | {line}");
    }
    let found: Vec<PathBuf> = list_files(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let failure = if found.is_empty() {
        format!("libFuzzer exited with {status} and wrote no reproducer")
    } else {
        for repro in &found {
            println!(
                "fuzz {target}: reproducer {} (replay: {} {})",
                repro.display(),
                bin.display(),
                repro.display()
            );
        }
        format!(
            "reproducer {}",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Ok(Outcome {
        target: target.into(),
        failure: Some(failure),
    })
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    runs: String,
    exec_per_sec: String,
}

/// libFuzzer's `-print_final_stats=1` lines: `stat::number_of_executed_units: 1234`.
fn final_stats(log: &str) -> Stats {
    let stat = |name: &str| {
        log.lines()
            .rev()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim_start_matches(':').trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    Stats {
        runs: stat("stat::number_of_executed_units"),
        exec_per_sec: stat("stat::average_exec_per_sec"),
    }
}

fn copy_files(from: &Path, to: &Path) -> Result<usize> {
    let mut n = 0;
    for file in list_files(from) {
        let name = file.file_name().context("a corpus file has a name")?;
        fs::copy(&file, to.join(name))
            .with_context(|| format!("copying {} to {}", file.display(), to.display()))?;
        n += 1;
    }
    Ok(n)
}

/// The regular files directly in `dir` (none when it does not exist).
fn list_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// Removes the run's scratch directories, however the run ends.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#1024\tpulse  cov: 10\nDone 5000 runs in 30 second(s)\n\
                   stat::number_of_executed_units: 5000\nstat::average_exec_per_sec:     166\n\
                   stat::new_units_added:          12\n";
        assert_eq!(
            final_stats(log),
            Stats {
                runs: "5000".into(),
                exec_per_sec: "166".into()
            }
        );
        assert_eq!(final_stats("").runs, "?");
    }

    #[test]
    fn every_target_has_a_seed_corpus() {
        let targets = all_targets().unwrap();
        assert!(targets.len() >= 5, "{targets:?}");
        for t in targets {
            let seeds = list_files(&fuzz_dir().join("corpus").join(&t));
            assert!(!seeds.is_empty(), "fuzz/corpus/{t} has no seeds");
        }
    }
}

//! `cargo xtask bench NAME`: runs the `harness = false` bench target NAME of the crate that
//! owns it, in release mode (`cargo bench -p CRATE --bench NAME`).

use anyhow::{Context, Result, bail};

use crate::process::{self, cargo, output};

/// The benchmarks the project plans, and the crate and file that own each.
const PLANNED: &[(&str, &str, &str)] = &[
    (
        "scheduler",
        "podd-scheduler",
        "scheduler/benches/scheduler.rs",
    ),
    ("runtime", "podd-runtime", "runtime/benches/runtime.rs"),
    ("lb", "podd-lb", "ebpf/podd-lb/benches/lb.rs"),
    ("pods", "podd-pod", "pod/benches/pods.rs"),
    (
        "control-plane",
        "podd-control-plane",
        "control-plane/benches/control_plane.rs",
    ),
    ("e2e", "podd-tests", "tests/benches/e2e.rs"),
];

/// Benchmarks that load the eBPF object, which build-ebpf must have built first.
const NEEDS_EBPF: &[&str] = &["lb", "e2e"];

struct BenchTarget {
    package: String,
    target: String,
}

/// Bench targets in the workspace, from `cargo metadata`.
fn bench_targets() -> Result<Vec<BenchTarget>> {
    let text = output(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let metadata: serde_json::Value =
        serde_json::from_str(&text).context("parsing cargo metadata")?;
    let mut found = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_bench = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bench"));
            if is_bench {
                found.push(BenchTarget {
                    package: package["name"].as_str().unwrap_or_default().to_string(),
                    target: target["name"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
    }
    Ok(found)
}

/// The bench target a NAME refers to: `control-plane` is the target `control_plane`.
fn find<'a>(targets: &'a [BenchTarget], name: &str) -> Option<&'a BenchTarget> {
    let wanted = name.replace('-', "_");
    targets
        .iter()
        .find(|t| t.target == name || t.target.replace('-', "_") == wanted)
}

pub fn run_bench(name: &str, args: &[String]) -> Result<()> {
    let targets = bench_targets()?;
    let Some(target) = find(&targets, name) else {
        return Err(
            match PLANNED.iter().find(|(planned, _, _)| *planned == name) {
                Some((_, package, file)) => anyhow::anyhow!(
                    "benchmark `{name}` does not exist yet: it will be the harness = false bench target in {package} ({file})"
                ),
                None => anyhow::anyhow!("no benchmark named `{name}`; {}", list(&targets)),
            },
        );
    };
    if NEEDS_EBPF.contains(&name) {
        crate::build_ebpf::build_ebpf()?;
    }
    let mut cmd = cargo();
    cmd.args(["bench", "-p", &target.package, "--bench", &target.target]);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    process::run(&mut cmd)
}

fn list(targets: &[BenchTarget]) -> String {
    let mut text = String::from("benchmarks:");
    for (name, package, file) in PLANNED {
        let state = if find(targets, name).is_some() {
            ""
        } else {
            " (not written yet)"
        };
        text.push_str(&format!("\n  {name:<14} {package} {file}{state}"));
    }
    for target in targets {
        if !PLANNED
            .iter()
            .any(|(name, _, _)| find(std::slice::from_ref(target), name).is_some())
        {
            text.push_str(&format!("\n  {:<14} {}", target.target, target.package));
        }
    }
    text
}

pub fn run(name: Option<&str>, args: &[String]) -> Result<()> {
    match name {
        Some(name) => run_bench(name, args),
        None => {
            let targets = bench_targets()?;
            println!("{}", list(&targets));
            bail!("name a benchmark: cargo xtask bench NAME")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_targets_with_dashes_or_underscores() {
        let targets = vec![BenchTarget {
            package: "podd-control-plane".into(),
            target: "control_plane".into(),
        }];
        assert_eq!(
            find(&targets, "control-plane").map(|t| t.package.as_str()),
            Some("podd-control-plane")
        );
        assert!(find(&targets, "lb").is_none());
        assert!(
            list(&targets)
                .contains("lb             podd-lb ebpf/podd-lb/benches/lb.rs (not written yet)")
        );
    }
}

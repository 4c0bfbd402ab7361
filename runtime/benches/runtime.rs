//! Benchmark: a full container cycle (`run` /bin/true to completion, which includes delete)
//! with podd-oci, Debian's crun and runc on the same busybox bundle, alternating the runtimes
//! each iteration. Prints the median and p90 of each and the ratios.
//!
//! crun refuses a hybrid cgroup host ("cgroups in hybrid mode not supported"). On such a host
//! the benchmark re-executes itself in a private mount namespace (`unshare -m --propagation
//! private`) and mounts the cgroup2 hierarchy over /sys/fs/cgroup there, so all three runtimes
//! see the same pure cgroup v2 tree (the host's mounts are untouched). On a pure v2 host (the VM)
//! it runs directly. Iterations: PODD_RT_BENCH_N (default 200).

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INNER: &str = "PODD_RT_BENCH_INNER";

fn is_cgroup2(path: &str) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == 0x6367_7270)
}

fn have(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Runtime {
    name: &'static str,
    bin: String,
    root: PathBuf,
    samples: Vec<Duration>,
}

impl Runtime {
    fn cycle(&mut self, bundle: &Path, id: &str) {
        let start = Instant::now();
        let out = Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{} run failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        self.samples.push(took);
    }

    fn stats(&mut self) -> (f64, f64) {
        self.samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let n = self.samples.len();
        (
            ms(self.samples[n / 2]),
            ms(self.samples[(n * 9 / 10).min(n - 1)]),
        )
    }
}

fn main() {
    // cargo bench passes --bench; ignore arguments.
    let on_v2_host = is_cgroup2("/sys/fs/cgroup");
    if !on_v2_host && std::env::var_os(INNER).is_none() {
        let exe = std::env::current_exe().unwrap();
        let status = Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(exe)
            .env(INNER, "1")
            .status()
            .expect("run unshare (util-linux)");
        std::process::exit(status.code().unwrap_or(1));
    }
    let mode = if on_v2_host {
        "pure cgroup v2 host: runtimes run directly"
    } else {
        // Inside our private mount namespace: put the cgroup2 hierarchy on /sys/fs/cgroup.
        nix::mount::mount(
            Some("cgroup2"),
            "/sys/fs/cgroup",
            Some("cgroup2"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .expect("mount cgroup2 on /sys/fs/cgroup in the private mount namespace");
        "hybrid host: inside `unshare -m --propagation private` with cgroup2 mounted over /sys/fs/cgroup there"
    };
    let n: usize = std::env::var("PODD_RT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);

    let dir = tempfile::Builder::new()
        .prefix("podd-rt-bench-")
        .tempdir()
        .unwrap();
    let rootfs = dir.path().join("rootfs");
    common::busybox_rootfs(&rootfs);
    let cg_parent = format!("podd-rt-bench-{}", std::process::id());
    let _cg_guard = CgroupParent(cg_parent.clone());
    let mut spec = oci_spec::runtime::Spec::default();
    let mut root = spec.root().clone().unwrap();
    root.set_path(rootfs);
    spec.set_root(Some(root));
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(vec!["/bin/true".into()]));
    p.set_terminal(Some(false));
    spec.set_process(Some(p));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(PathBuf::from(format!("/{cg_parent}/c"))));
    // No device rules: crun cannot load its device BPF program here (it raises RLIMIT_MEMLOCK,
    // which needs CAP_SYS_RESOURCE, missing on this VM), so neither runtime attaches one.
    spec.set_linux(Some(linux));
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    spec.save(bundle.join("config.json")).unwrap();

    let mut runtimes = vec![Runtime {
        name: "podd-oci",
        bin: env!("CARGO_BIN_EXE_podd-oci").into(),
        root: dir.path().join("state-podd"),
        samples: vec![],
    }];
    for (name, bin) in [("crun", "crun"), ("runc", "runc")] {
        if have(bin) {
            runtimes.push(Runtime {
                name,
                bin: bin.into(),
                root: dir.path().join(format!("state-{name}")),
                samples: vec![],
            });
        } else {
            println!("{name} not installed (apt-get install {name}); skipped");
        }
    }
    println!(
        "runtime benchmark: run /bin/true to completion + delete, busybox bundle, {n} iterations each, alternating"
    );
    println!("mode: {mode}");
    for i in 0..(n + 5) {
        for r in runtimes.iter_mut() {
            r.cycle(&bundle, &format!("b{i}"));
        }
        if i == 4 {
            // warm-up done
            for r in runtimes.iter_mut() {
                r.samples.clear();
            }
        }
    }
    let results: Vec<(&str, f64, f64)> = runtimes
        .iter_mut()
        .map(|r| {
            let (med, p90) = r.stats();
            (r.name, med, p90)
        })
        .collect();
    let podd = results[0].1;
    println!(
        "{:<10} {:>12} {:>12} {:>16}",
        "runtime", "median ms", "p90 ms", "median / podd-oci"
    );
    for (name, med, p90) in &results {
        println!("{name:<10} {med:>12.2} {p90:>12.2} {:>16.2}", med / podd);
    }
    if let Some((_, crun, _)) = results.iter().find(|r| r.0 == "crun") {
        println!(
            "podd-oci / crun = {:.2} (below 1.00 means podd-oci is faster)",
            podd / crun
        );
    }
    // Every runtime removed its state and cgroups; remove the shared parent cgroup.
    for r in &runtimes {
        let left: Vec<_> = std::fs::read_dir(&r.root)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} left state behind: {left:?}", r.name);
    }
}

/// Removes the benchmark's cgroup parent (and any child a failed run left) on every exit path.
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let cg = Path::new(base).join(&self.0);
            if let Ok(d) = std::fs::read_dir(&cg) {
                for e in d.flatten().filter(|e| e.path().is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&cg);
        }
    }
}

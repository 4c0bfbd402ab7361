//! `cargo xtask vm-test`: every `vm_*` integration test target of the workspace, run with
//! `--ignored --test-threads=1` inside one QEMU boot of Debian 12's kernel, where cgroup v2 has
//! all its controllers. See docs/TESTING.md.

mod assets;
mod cpio;
mod initramfs;
mod kmod;
mod qemu;
pub mod report;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{cargo, describe, have_program};
use initramfs::{GuestPlan, TestBinary};
pub use report::VmReport;

pub struct VmOptions {
    /// Packages whose `vm_*` targets run; empty means the whole workspace.
    pub packages: Vec<String>,
    /// Only these `vm_*` targets; empty means all of them.
    pub targets: Vec<String>,
    pub fail_on_purpose: bool,
    pub timeout: Duration,
    pub binary_timeout_secs: u64,
    pub cache_dir: PathBuf,
    pub memory: String,
    pub cpus: u32,
    pub verbose_kernel: bool,
    pub filter: Vec<String>,
    /// Run build-ebpf first (the workspace embeds the eBPF object).
    pub build_ebpf: bool,
}

impl VmOptions {
    /// The whole workspace with the defaults of the command line, after build-ebpf ran.
    pub fn workspace() -> Self {
        VmOptions {
            packages: Vec::new(),
            targets: Vec::new(),
            fail_on_purpose: false,
            timeout: Duration::from_secs(2400),
            binary_timeout_secs: 900,
            cache_dir: default_cache_dir(),
            memory: "4G".into(),
            cpus: 2,
            verbose_kernel: false,
            filter: Vec::new(),
            build_ebpf: false,
        }
    }
}

/// `$PODD_VM_CACHE`, or /var/cache/podd-vm.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("PODD_VM_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/podd-vm"), PathBuf::from)
}

/// Builds the `vm_*` test binaries, boots the VM once, runs them all and prints each result.
pub fn vm_test(opts: &VmOptions) -> Result<VmReport> {
    if !have_program("qemu-system-x86_64") {
        bail!("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    }
    if opts.build_ebpf {
        crate::build_ebpf::build_ebpf()
            .context("build-ebpf (the workspace embeds the eBPF object)")?;
    }
    let (binaries, not_built) = build_test_binaries(&opts.packages, &opts.targets)?;
    let labels: Vec<String> = binaries.iter().map(|b| b.label.clone()).collect();
    if binaries.is_empty() {
        println!("vm-test: no vm_* test targets in {}", scope(&opts.packages));
        let mut report = VmReport::new(labels);
        report.exit_marker = Some(0);
        print!("{}", report.summary());
        return Ok(report);
    }
    println!(
        "vm-test: {} test binaries: {}",
        binaries.len(),
        labels.join(", ")
    );

    let kernel = assets::kernel(&opts.cache_dir)?;
    let busybox = assets::busybox(&opts.cache_dir)?;
    let mut wanted: Vec<String> = kmod::GUEST_MODULES.iter().map(|m| m.to_string()).collect();
    if let Ok(extra) = std::env::var("PODD_VM_EXTRA_MODULES") {
        wanted.extend(extra.split_whitespace().map(str::to_string));
    }
    let modules = kmod::resolve(&kernel.modules_dir, &wanted)
        .with_context(|| format!("choosing the guest's modules from {}", kernel.package))?;

    let plan = GuestPlan {
        binaries: &binaries,
        env: guest_env(opts),
        filter: &opts.filter,
        binary_timeout_secs: opts.binary_timeout_secs,
        writable_dirs: writable_dirs(&binaries),
        keep_dirs: keep_dirs(&binaries),
    };
    let stage2 = initramfs::stage2_script(&plan);
    let initramfs_path =
        std::env::temp_dir().join(format!("podd-vm-initramfs-{}.cpio.gz", std::process::id()));
    let _remove = RemoveFile(initramfs_path.clone());
    initramfs::write(&initramfs_path, &busybox, &modules, &stage2)?;
    println!(
        "vm-test: kernel {} ({} modules), initramfs {} KiB",
        kernel.release,
        modules.len(),
        std::fs::metadata(&initramfs_path)?.len() / 1024
    );

    // PODD_VM_BZIMAGE=1 boots the compressed kernel the slow way (to compare, or if PVH breaks).
    let boot_kernel = match std::env::var("PODD_VM_BZIMAGE").as_deref() {
        Ok("1") => kernel.vmlinuz.clone(),
        _ => assets::pvh_kernel(&kernel).unwrap_or_else(|| kernel.vmlinuz.clone()),
    };
    let mut report = VmReport::new(labels);
    report.not_built = not_built;
    qemu::boot(
        &qemu::Boot {
            kernel: &boot_kernel,
            initramfs: &initramfs_path,
            memory: &opts.memory,
            cpus: opts.cpus,
            verbose_kernel: opts.verbose_kernel,
            timeout: opts.timeout,
        },
        &mut report,
    )?;
    print!("{}", report.summary());
    Ok(report)
}

fn scope(packages: &[String]) -> String {
    if packages.is_empty() {
        "the workspace".into()
    } else {
        packages.join(", ")
    }
}

/// The environment of the test binaries in the guest.
fn guest_env(opts: &VmOptions) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| {
            (key.starts_with("PODD_") && key != "PODD_IN_VM" && key != "PODD_VM_FAIL_ON_PURPOSE")
                || matches!(
                    key.as_str(),
                    "RUST_LOG" | "RUST_BACKTRACE" | "RUST_LIB_BACKTRACE"
                )
        })
        .filter(|(key, _)| key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .collect();
    env.push(("PODD_IN_VM".into(), "1".into()));
    if opts.fail_on_purpose {
        env.push(("PODD_VM_FAIL_ON_PURPOSE".into(), "1".into()));
    }
    if !env.iter().any(|(key, _)| key == "RUST_BACKTRACE") {
        env.push(("RUST_BACKTRACE".into(), "1".into()));
    }
    env.sort();
    env
}

/// cargo's `target/tmp` (CARGO_TARGET_TMPDIR) gets a tmpfs, so tests may write there.
/// The workspace and the target dirs of the test binaries: the guest must see them even when
/// they lie under /tmp, /var/tmp or /var/lib, which it covers with tmpfs mounts (CI may clone
/// into /tmp).
fn keep_dirs(binaries: &[TestBinary]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec![crate::process::workspace_root()];
    dirs.extend(
        binaries
            .iter()
            .filter_map(|b| b.executable.ancestors().nth(3).map(PathBuf::from)),
    );
    dirs.retain(|d| {
        ["/tmp", "/var/tmp", "/var/lib"]
            .iter()
            .any(|t| d.starts_with(t))
    });
    dirs.sort();
    dirs.dedup();
    // A target dir inside the kept workspace comes back with it.
    let all = dirs.clone();
    dirs.retain(|d| !all.iter().any(|o| o != d && d.starts_with(o)));
    dirs
}

fn writable_dirs(binaries: &[TestBinary]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = binaries
        .iter()
        .filter_map(|b| {
            b.executable
                .ancestors()
                .nth(3)
                .map(|target| target.join("tmp"))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The `vm_*` integration test targets of these packages (all when empty), from cargo
/// metadata: (package, target) pairs.
fn vm_targets(packages: &[String]) -> Result<Vec<(String, String)>> {
    let text =
        crate::process::output(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let metadata: serde_json::Value =
        serde_json::from_str(&text).context("parsing cargo metadata")?;
    let all = metadata["packages"].as_array().cloned().unwrap_or_default();
    for wanted in packages {
        if !all.iter().any(|p| p["name"] == wanted.as_str()) {
            bail!("there is no package `{wanted}` in the workspace");
        }
    }
    let mut targets = Vec::new();
    for package in &all {
        let name = package["name"].as_str().unwrap_or_default();
        if !packages.is_empty() && !packages.iter().any(|p| p == name) {
            continue;
        }
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_test = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            let target_name = target["name"].as_str().unwrap_or_default();
            if is_test && target_name.starts_with("vm_") {
                targets.push((name.to_string(), target_name.to_string()));
            }
        }
    }
    Ok(targets)
}

/// `cargo test --no-run --no-fail-fast` for the `vm_*` targets: the executables it reports, and
/// the targets that did not compile (the others still run; the run then fails).
fn build_test_binaries(
    packages: &[String],
    only: &[String],
) -> Result<(Vec<TestBinary>, Vec<String>)> {
    let mut targets = vm_targets(packages)?;
    if !only.is_empty() {
        targets.retain(|(_, target)| only.contains(target));
    }
    if targets.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
        "--no-fail-fast", // with --no-run: keep building the other targets
    ]);
    if packages.is_empty() {
        cmd.arg("--workspace");
    } else {
        for package in packages {
            cmd.args(["-p", package]);
        }
    }
    let mut names: Vec<&str> = targets.iter().map(|(_, target)| target.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        cmd.args(["--test", name]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    println!("$ {}", describe(&cmd));
    let mut child = cmd.spawn().context("starting cargo")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut binaries = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(binary) = vm_test_binary(&message) {
            binaries.push(binary);
        }
    }
    let status = child.wait()?;
    binaries.sort_by(|a, b| a.label.cmp(&b.label));
    binaries.dedup_by(|a, b| a.label == b.label);
    let mut not_built: Vec<String> = targets
        .iter()
        .map(|(package, target)| format!("{package}/{target}"))
        .filter(|label| !binaries.iter().any(|b| &b.label == label))
        .collect();
    not_built.sort();
    if !status.success() {
        let what = if not_built.is_empty() {
            "some dependency".to_string()
        } else {
            not_built.join(", ")
        };
        if binaries.is_empty() {
            bail!(
                "building the VM test binaries failed ({what}); cargo's errors are above. \
                 A crate's VM tests may not compile yet: `cargo xtask vm-test -p PACKAGE` runs others"
            );
        }
        println!(
            "vm-test: these VM test targets did not compile (errors above): {what}; running the others"
        );
    }
    Ok((binaries, not_built))
}

/// A `compiler-artifact` message for a `vm_*` integration test target, as a TestBinary.
fn vm_test_binary(message: &serde_json::Value) -> Option<TestBinary> {
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let target = &message["target"];
    let is_test = target["kind"].as_array()?.iter().any(|k| k == "test");
    let name = target["name"].as_str()?;
    if !is_test || !name.starts_with("vm_") {
        return None;
    }
    let executable = PathBuf::from(message["executable"].as_str()?);
    let manifest = Path::new(message["manifest_path"].as_str()?);
    let package_dir = manifest.parent()?.to_path_buf();
    let package = package_name(message["package_id"].as_str()?, &package_dir);
    Some(TestBinary {
        label: format!("{package}/{name}"),
        executable,
        package_dir,
    })
}

/// The package name in a package id: `path+file:///w/tests#podd-tests@0.1.0` names it after
/// `#`, `path+file:///w/api#0.1.0` leaves it to the folder name.
fn package_name(id: &str, package_dir: &Path) -> String {
    match id.rsplit_once('#') {
        Some((_, rest)) if rest.contains('@') => rest.split('@').next().unwrap_or(rest).to_string(),
        _ => package_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

struct RemoveFile(PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_vm_test_artifacts_only() {
        let artifact = |kind: &str, name: &str| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "package_id": "path+file:///w/tests#podd-tests@0.1.0",
                "manifest_path": "/w/tests/Cargo.toml",
                "target": {"kind": [kind], "name": name},
                "executable": format!("/t/debug/deps/{name}-0123"),
            })
        };
        let binary = vm_test_binary(&artifact("test", "vm_harness")).unwrap();
        assert_eq!(binary.label, "podd-tests/vm_harness");
        assert_eq!(binary.package_dir, Path::new("/w/tests"));
        assert!(vm_test_binary(&artifact("test", "host_things")).is_none());
        assert!(vm_test_binary(&artifact("lib", "vm_lib")).is_none());
        assert_eq!(writable_dirs(&[binary]), [PathBuf::from("/t/tmp")]);
    }

    #[test]
    fn package_names_from_ids() {
        assert_eq!(
            package_name("path+file:///w/api#0.1.0", Path::new("/w/api")),
            "api"
        );
        assert_eq!(
            package_name(
                "path+file:///w/tests#podd-tests@0.1.0",
                Path::new("/w/tests")
            ),
            "podd-tests"
        );
    }
}

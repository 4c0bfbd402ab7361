//! The guest's initramfs: busybox, the kernel modules, and two small shell scripts.
//!
//! Stage 1 (`/init`, in the initramfs) loads the modules, mounts the host's root filesystem
//! read-only over virtio-9p and a tmpfs on its /run, and `switch_root`s into it, so the host
//! root becomes the guest's real root mount (pivot_root, which container runtimes use, refuses
//! to work from the initramfs itself). Stage 2 (`/run/podd-vm/stage2.sh`) mounts what the tests
//! need, runs each test binary and powers off.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;

use super::cpio::CpioWriter;
use super::kmod::Module;
use super::report::{MARK_BIN_END, MARK_BIN_START, MARK_EXIT, MARK_READY, MARK_WARN};

/// One `vm_*` test binary to run in the guest.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// `package/target`, e.g. `podd-tests/vm_harness`.
    pub label: String,
    pub executable: PathBuf,
    /// The package folder: the working directory, as `cargo test` would use.
    pub package_dir: PathBuf,
}

/// What stage 2 does.
pub struct GuestPlan<'a> {
    pub binaries: &'a [TestBinary],
    pub env: Vec<(String, String)>,
    pub filter: &'a [String],
    pub binary_timeout_secs: u64,
    /// Extra tmpfs mounts over host folders (e.g. cargo's target/tmp), if they exist.
    pub writable_dirs: Vec<PathBuf>,
    /// Host folders the tests need (the workspace, the target dir) that may lie under a
    /// folder the guest covers with a tmpfs (/tmp, /var/tmp, /var/lib): they are bound back.
    pub keep_dirs: Vec<PathBuf>,
}

/// Quotes a word for the shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

const STAGE1: &str = r#"#!/bin/busybox sh
# podd VM test suite, stage 1 (initramfs): modules, the host root over 9p, switch_root.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
  echo "@WARN@ $*"
  echo "@EXIT@ 125"
  poweroff -f
  sleep 1000000
}
while read -r module; do
  insmod "/modules/$module.ko" || echo "@WARN@ insmod $module failed"
done < /modules/load-order
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /host \
  || fail "cannot mount the host root over virtio-9p"
mount -t tmpfs -o mode=0755 tmpfs /host/run || fail "cannot mount a tmpfs on /run"
mkdir -p /host/run/podd-vm
cp /bin/busybox /stage2.sh /host/run/podd-vm/ || fail "cannot copy busybox into /run"
mount --move /dev /host/dev && mount --move /proc /host/proc && mount --move /sys /host/sys \
  || fail "cannot move /dev /proc /sys into the host root"
exec switch_root /host /run/podd-vm/busybox sh /run/podd-vm/stage2.sh
"#;

const STAGE2_HEAD: &str = r#"#!/run/podd-vm/busybox sh
# podd VM test suite, stage 2: runs in the host's root filesystem (read-only, over 9p).
BB=/run/podd-vm/busybox
m() { $BB mount "$@" || echo "@WARN@ mount $* failed"; }
$BB mkdir -p /dev/pts /dev/shm
m -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
m -t tmpfs -o mode=1777 tmpfs /dev/shm
m -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
for controller in $($BB cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$controller" > /sys/fs/cgroup/cgroup.subtree_control || echo "@WARN@ cannot enable the $controller controller"
done
m -t bpf -o mode=0700 bpf /sys/fs/bpf
m -t tracefs tracefs /sys/kernel/tracing
@STASH@
m -t tmpfs -o mode=1777 tmpfs /tmp
m -t tmpfs -o mode=1777 tmpfs /var/tmp
m -t tmpfs -o mode=0755 tmpfs /var/lib
$BB ip link set lo up || echo "@WARN@ cannot bring lo up"
$BB hostname podd-vm
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp
"#;

/// The stage-2 script for this plan.
pub fn stage2_script(plan: &GuestPlan<'_>) -> String {
    // Bind the kept folders aside before the tmpfs mounts hide them, and back afterwards.
    let mut stash = String::new();
    let mut restore = String::new();
    for (i, dir) in plan.keep_dirs.iter().enumerate() {
        let d = quote(&dir.to_string_lossy());
        stash.push_str(&format!(
            "$BB mkdir -p /run/podd-vm/keep{i} && [ -d {d} ] && m --bind {d} /run/podd-vm/keep{i}\n"
        ));
        restore.push_str(&format!(
            "if [ ! -d {d} ] || [ -z \"$($BB ls -A {d} 2>/dev/null)\" ]; then $BB mkdir -p {d} 2>/dev/null; m --bind /run/podd-vm/keep{i} {d}; fi\n"
        ));
    }
    let mut script = STAGE2_HEAD.replace("@STASH@\n", &stash);
    script.push_str(&restore);
    for dir in &plan.writable_dirs {
        let dir = quote(&dir.to_string_lossy());
        script.push_str(&format!(
            "[ -d {dir} ] && m -t tmpfs -o mode=1777 tmpfs {dir}\n"
        ));
    }
    for (key, value) in &plan.env {
        script.push_str(&format!("export {key}={}\n", quote(value)));
    }
    script.push_str(
        "echo \"@READY@ $($BB uname -r) $($BB nproc) cpus, cgroup controllers: $($BB cat /sys/fs/cgroup/cgroup.subtree_control)\"\n",
    );
    script.push_str("failed=0\n");
    let filter: String = plan
        .filter
        .iter()
        .map(|f| format!(" {}", quote(f)))
        .collect();
    for binary in plan.binaries {
        let label = &binary.label;
        script.push_str(&format!(
            "echo \"@BIN_START@ {label}\"\n\
             cd {dir} || echo \"@WARN@ cannot cd to {dir}\"\n\
             CARGO_MANIFEST_DIR={dir} $BB timeout -s KILL {timeout} {exe} --ignored --test-threads=1 --color never --show-output{filter}\n\
             rc=$?\n\
             echo \"@BIN_END@ {label} $rc\"\n\
             [ \"$rc\" = 0 ] || failed=$((failed + 1))\n",
            dir = quote(&binary.package_dir.to_string_lossy()),
            timeout = plan.binary_timeout_secs,
            exe = quote(&binary.executable.to_string_lossy()),
        ));
    }
    script
        .push_str("cd /\necho \"@EXIT@ $failed\"\n$BB sync\n$BB poweroff -f\n$BB sleep 1000000\n");
    substitute_markers(&script)
}

fn substitute_markers(script: &str) -> String {
    script
        .replace("@WARN@", MARK_WARN)
        .replace("@EXIT@", MARK_EXIT)
        .replace("@READY@", MARK_READY)
        .replace("@BIN_START@", MARK_BIN_START)
        .replace("@BIN_END@", MARK_BIN_END)
}

/// Writes the gzip-compressed newc initramfs to `path`.
pub fn write(path: &Path, busybox: &Path, modules: &[Module], stage2: &str) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut cpio = CpioWriter::new(GzEncoder::new(
        std::io::BufWriter::new(file),
        Compression::fast(),
    ));
    for dir in ["bin", "dev", "proc", "sys", "host", "modules"] {
        cpio.dir(dir, 0o755)?;
    }
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    cpio.char_device("dev/null", 0o666, 1, 3)?;
    let busybox_bytes =
        std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    cpio.file("bin/busybox", 0o755, &busybox_bytes)?;
    cpio.symlink("bin/sh", "busybox")?;
    cpio.file("init", 0o755, substitute_markers(STAGE1).as_bytes())?;
    cpio.file("stage2.sh", 0o755, stage2.as_bytes())?;
    let mut order = String::new();
    for module in modules {
        let data = std::fs::read(&module.path)
            .with_context(|| format!("reading {}", module.path.display()))?;
        cpio.file(&format!("modules/{}.ko", module.name), 0o644, &data)?;
        order.push_str(&module.name);
        order.push('\n');
    }
    cpio.file("modules/load-order", 0o644, order.as_bytes())?;
    let gz = cpio.finish()?;
    let mut out = gz.finish()?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage2_runs_each_binary_with_ignored_and_reports_markers() {
        let binaries = vec![TestBinary {
            label: "podd-tests/vm_harness".into(),
            executable: "/t/debug/deps/vm_harness-abc".into(),
            package_dir: "/w/tests".into(),
        }];
        let plan = GuestPlan {
            binaries: &binaries,
            env: vec![
                ("PODD_IN_VM".into(), "1".into()),
                ("X".into(), "it's".into()),
            ],
            filter: &["oom".to_string()],
            binary_timeout_secs: 60,
            writable_dirs: vec!["/t/tmp".into()],
            keep_dirs: vec!["/tmp/ci/clone".into()],
        };
        let script = stage2_script(&plan);
        assert!(script.contains("export PODD_IN_VM='1'"));
        assert!(script.contains("export X='it'\\''s'"));
        assert!(script.contains(
            "$BB timeout -s KILL 60 '/t/debug/deps/vm_harness-abc' --ignored --test-threads=1 --color never --show-output 'oom'"
        ));
        assert!(script.contains(&format!(
            "echo \"{MARK_BIN_END} podd-tests/vm_harness $rc\""
        )));
        assert!(script.contains(&format!("echo \"{MARK_EXIT} $failed\"")));
        assert!(!script.contains("@EXIT@"));
        assert!(script.trim_end().ends_with("$BB sleep 1000000"));
        // A clone under /tmp is bound aside before the tmpfs hides it, and back after.
        let stash = script
            .find("m --bind '/tmp/ci/clone' /run/podd-vm/keep0")
            .unwrap();
        let tmpfs = script.find("tmpfs /tmp\n").unwrap();
        let restore = script
            .find("m --bind /run/podd-vm/keep0 '/tmp/ci/clone'")
            .unwrap();
        assert!(stash < tmpfs && tmpfs < restore);
    }
}

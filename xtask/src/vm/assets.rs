//! The cached downloads the VM needs: Debian 12's generic kernel and busybox-static.
//!
//! Each package is fetched with `apt-get download` once, unpacked with `dpkg-deb -x` into
//! `<cache>/<package>_<version>/`, and marked complete; later runs reuse it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process::{describe, output};

/// The guest kernel: its image and its modules folder.
pub struct Kernel {
    pub package: String,
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules_dir: PathBuf,
    /// The package's unpacked folder (the cache entry).
    pub dir: PathBuf,
}

const COMPLETE: &str = ".podd-complete";

/// Debian's generic kernel (`linux-image-amd64`'s dependency, 6.1 on Debian 12).
pub fn kernel(cache: &Path) -> Result<Kernel> {
    let package = match kernel_package_name() {
        Ok(package) => package,
        Err(err) => {
            let cached = newest_cached(cache, "linux-image-")?;
            let Some(dir) = cached else {
                return Err(err.context(
                    "finding Debian's generic kernel package (run `apt-get update` first)",
                ));
            };
            println!(
                "vm-test: apt-cache failed ({err:#}); using the cached {}",
                dir.display()
            );
            return kernel_in(&dir, "cached");
        }
    };
    if !package.starts_with("linux-image-6.1.") {
        println!(
            "vm-test: note: linux-image-amd64 depends on {package}, not Debian 12's 6.1 kernel"
        );
    }
    let dir = fetch_package(cache, &package)?;
    kernel_in(&dir, &package)
}

/// The statically linked busybox from Debian's busybox-static.
pub fn busybox(cache: &Path) -> Result<PathBuf> {
    let dir = match fetch_package(cache, "busybox-static") {
        Ok(dir) => dir,
        Err(err) => match newest_cached(cache, "busybox-static_")? {
            Some(dir) => dir,
            None => return Err(err),
        },
    };
    let busybox = dir.join("bin/busybox");
    if !busybox.is_file() {
        bail!("{} has no bin/busybox", dir.display());
    }
    Ok(busybox)
}

fn kernel_package_name() -> Result<String> {
    let text = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|dep| dep.starts_with("linux-image-"))
        .map(str::to_string)
        .context("`apt-cache depends linux-image-amd64` names no linux-image-* package (run `apt-get update`)")
}

fn kernel_in(dir: &Path, package: &str) -> Result<Kernel> {
    let modules_root = dir.join("lib/modules");
    let release = std::fs::read_dir(&modules_root)
        .with_context(|| format!("{package} has no lib/modules in {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .max()
        .with_context(|| format!("{} is empty", modules_root.display()))?;
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} is missing", vmlinuz.display());
    }
    Ok(Kernel {
        package: package.to_string(),
        modules_dir: modules_root.join(&release),
        release,
        vmlinuz,
        dir: dir.to_path_buf(),
    })
}

/// The kernel as an uncompressed ELF that QEMU boots through its PVH entry point, which skips
/// the real-mode setup and the xz decompression that take 10-30 s under TCG. Made once and
/// cached next to the package; `None` when the kernel lacks PVH support or cannot be unpacked
/// (then the bzImage boots, slower).
pub fn pvh_kernel(kernel: &Kernel) -> Option<PathBuf> {
    let path = kernel.dir.join(format!("vmlinux-{}.pvh", kernel.release));
    if path.is_file() {
        return Some(path);
    }
    let config = std::fs::read_to_string(
        kernel
            .dir
            .join("boot")
            .join(format!("config-{}", kernel.release)),
    )
    .ok()?;
    if !config.lines().any(|line| line == "CONFIG_PVH=y") {
        return None;
    }
    match extract_vmlinux(&kernel.vmlinuz, &path) {
        Ok(()) => Some(path),
        Err(err) => {
            println!("vm-test: note: booting the compressed kernel ({err:#})");
            None
        }
    }
}

/// Unpacks the ELF kernel from a bzImage's payload (boot protocol 2.08+: payload_offset and
/// payload_length in the setup header).
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let image = std::fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("{} is not a bzImage", bzimage.display());
    }
    let word = |at: usize| -> Result<usize> {
        let bytes = image
            .get(at..at + 4)
            .context("bzImage header is truncated")?;
        Ok(u32::from_le_bytes(bytes.try_into()?) as usize)
    };
    let setup_sectors = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sectors + 1) * 512 + word(0x248)?;
    let payload = image
        .get(start..start + word(0x24c)?)
        .context("bzImage payload is out of bounds")?;
    let elf = if payload.starts_with(b"\xfd7zXZ\0") {
        xz_decompress(payload)?
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        let mut elf = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(payload), &mut elf)?;
        elf
    } else {
        bail!("the kernel payload is neither xz nor gzip");
    };
    if !elf.starts_with(b"\x7fELF") {
        bail!("the unpacked kernel is not an ELF file");
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &elf).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

/// `xz -dc --single-stream` (the payload ends with the size word kbuild appends).
fn xz_decompress(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running xz (apt-get install xz-utils)")?;
    let mut stdin = child.stdin.take().context("xz stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("xz writer thread panicked"))??;
    if !out.status.success() {
        bail!("xz failed to unpack the kernel ({})", out.status);
    }
    Ok(out.stdout)
}

/// The candidate version apt would download, e.g. `1:1.35.0-4+deb12u1+b1`.
fn candidate_version(package: &str) -> Result<String> {
    let text = output(Command::new("apt-cache").args(["show", "--no-all-versions", package]))?;
    text.lines()
        .find_map(|line| line.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("apt knows no version of {package} (run `apt-get update`)"))
}

/// Downloads and unpacks `package` into the cache unless it is there already.
fn fetch_package(cache: &Path, package: &str) -> Result<PathBuf> {
    let version = candidate_version(package)?;
    let key = format!("{package}_{}", version.replace(':', "%3a"));
    let dir = cache.join(&key);
    if dir.join(COMPLETE).is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache)
        .with_context(|| format!("creating the VM cache {}", cache.display()))?;
    let work = cache.join(format!(".download-{key}-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(work.clone());
    std::fs::create_dir_all(&work)?;
    // apt drops privileges to _apt for downloads; let it write here.
    set_mode(&work, 0o777)?;
    println!(
        "vm-test: downloading {package} {version} into {} (once)",
        cache.display()
    );
    let mut download = Command::new("apt-get");
    download
        .args(["download", "-q", &format!("{package}={version}")])
        .current_dir(&work);
    output(&mut download)
        .with_context(|| format!("`{}` in {}", describe(&download), work.display()))?;
    let deb = std::fs::read_dir(&work)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
    let unpacked = work.join("root");
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    std::fs::write(unpacked.join(COMPLETE), format!("{package} {version}\n"))?;
    match std::fs::rename(&unpacked, &dir) {
        Ok(()) => {}
        // Another run finished the same download first.
        Err(_) if dir.join(COMPLETE).is_file() => {}
        Err(err) => {
            return Err(err)
                .with_context(|| format!("moving the unpacked {package} to {}", dir.display()));
        }
    }
    Ok(dir)
}

fn newest_cached(cache: &Path, prefix: &str) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return Ok(None);
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .filter(|p| p.join(COMPLETE).is_file())
        .collect();
    found.sort();
    Ok(found.pop())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

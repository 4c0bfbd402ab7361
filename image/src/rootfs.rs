//! A container's root filesystem: an overlayfs over the image's unpacked layers, with the
//! container's own upper and work directories.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{ImageError, Result};
use crate::store::UnpackedImage;

/// Owns one mounted overlay rootfs and its directory:
/// `<dir>/upper`, `<dir>/work` (overlay's) and `<dir>/rootfs` (the mount point).
/// [`OverlayRootfs::teardown`] unmounts and removes it all; `Drop` does the same as a fallback.
#[derive(Debug)]
pub struct OverlayRootfs {
    dir: PathBuf,
    rootfs: PathBuf,
    mounted: bool,
    torn_down: bool,
}

impl OverlayRootfs {
    /// Mounts the overlay for `image` under `dir`, which must not exist yet (its parent must).
    pub fn mount(image: &UnpackedImage, dir: &Path) -> Result<OverlayRootfs> {
        if image.layer_dirs.is_empty() {
            return Err(ImageError::Invalid {
                image: image.name.clone(),
                what: "image".into(),
                reason: "it has no layers, so there is no root filesystem".into(),
            });
        }
        // 0700 from creation on: the upper dir below holds whatever the container writes
        // (setuid binaries, device nodes), which no host user may reach.
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
            .create(dir)
            .map_err(|e| ImageError::io("creating the container rootfs directory", dir, e))?;
        // From here on, dropping `owner` removes what was made, so a failed mount leaks nothing.
        let mut owner = OverlayRootfs {
            dir: dir.to_path_buf(),
            rootfs: dir.join("rootfs"),
            mounted: false,
            torn_down: false,
        };
        let upper = dir.join("upper");
        let work = dir.join("work");
        for d in [&upper, &work, &owner.rootfs] {
            fs::create_dir(d).map_err(|e| ImageError::io("creating", d, e))?;
        }
        let mut lower = String::new();
        for layer in image.layer_dirs.iter().rev() {
            let s = layer.to_str().filter(|s| !s.contains([':', ',']));
            let Some(s) = s else {
                return Err(ImageError::io(
                    "using layer",
                    layer,
                    io::Error::other(
                        "the path has ':' or ',' or is not UTF-8; overlayfs cannot take it",
                    ),
                ));
            };
            if !lower.is_empty() {
                lower.push(':');
            }
            lower.push_str(s);
        }
        // volatile: no syncs to the upper fs. The upper dir is scratch that teardown deletes
        // and is never remounted after a crash, so durability buys nothing and costs ~35 ms of
        // journal commit at unmount.
        let data = format!(
            "lowerdir={lower},upperdir={},workdir={},volatile",
            upper.display(),
            work.display()
        );
        // The kernel takes at most one page of mount options.
        if data.len() >= 4096 {
            return Err(ImageError::Invalid {
                image: image.name.clone(),
                what: "overlay rootfs".into(),
                reason: format!(
                    "{} layers need {} bytes of overlay options, over the kernel's 4095; use a shorter image store path or an image with fewer layers",
                    image.layer_dirs.len(),
                    data.len()
                ),
            });
        }
        nix::mount::mount(
            Some("overlay"),
            &owner.rootfs,
            Some("overlay"),
            // nodev: a device node in an image layer or planted by the container never opens
            // (the container's own /dev is a separate tmpfs).
            MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|source| ImageError::Mount {
            target: owner.rootfs.clone(),
            source,
        })?;
        owner.mounted = true;
        tracing::debug!(image = %image.name, rootfs = %owner.rootfs.display(), "mounted overlay rootfs");
        Ok(owner)
    }

    /// The merged root filesystem (the mount point).
    pub fn path(&self) -> &Path {
        &self.rootfs
    }

    /// The container's directory holding upper, work and rootfs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes ownership of a rootfs mounted earlier, for example by an agent that has since
    /// restarted: `dir` is what [`OverlayRootfs::mount`] was given.
    pub fn adopt(dir: &Path) -> OverlayRootfs {
        let rootfs = dir.join("rootfs");
        let mounted = is_mount_point(&rootfs);
        OverlayRootfs {
            dir: dir.to_path_buf(),
            rootfs,
            mounted,
            torn_down: false,
        }
    }

    /// Unmounts the overlay and removes the container's directory.
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        if self.mounted {
            match nix::mount::umount2(&self.rootfs, MntFlags::empty()) {
                Ok(()) | Err(nix::Error::EINVAL) => {}
                // Still in use (a process holds it): detach now, the kernel frees it when unused.
                Err(nix::Error::EBUSY) => nix::mount::umount2(&self.rootfs, MntFlags::MNT_DETACH)
                    .map_err(|source| ImageError::Mount {
                    target: self.rootfs.clone(),
                    source,
                })?,
                Err(source) => {
                    return Err(ImageError::Mount {
                        target: self.rootfs.clone(),
                        source,
                    });
                }
            }
            self.mounted = false;
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ImageError::io(
                    "removing the container rootfs directory",
                    &self.dir,
                    e,
                ));
            }
        }
        self.torn_down = true;
        Ok(())
    }
}

impl Drop for OverlayRootfs {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "tearing down the overlay rootfs");
        }
    }
}

/// Whether `path` is a mount point, by /proc/self/mountinfo (paths with spaces are escaped
/// there, and overlay mount points never have them).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(p) = path.to_str() else {
        return false;
    };
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

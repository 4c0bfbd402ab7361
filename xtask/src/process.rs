//! Running other programs: the cargo that started us, apt, dpkg, qemu.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The workspace root (the folder holding the root Cargo.toml), found at run time, never from
/// a path compiled in: two clones sharing one target directory share one xtask binary, and each
/// must work on its own tree. `cargo xtask` (`cargo run -p xtask`, from any folder of the
/// workspace) sets `CARGO_MANIFEST_DIR` to this clone's `xtask/`; run directly, the binary takes
/// the nearest ancestor of the current directory that holds `xtask/Cargo.toml`.
pub fn workspace_root() -> PathBuf {
    let from_cargo = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.file_name().is_some_and(|n| n == "xtask"))
        .and_then(|dir| dir.parent().and_then(root_above));
    from_cargo
        .or_else(|| std::env::current_dir().ok().and_then(|d| root_above(&d)))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The nearest of `dir` and its ancestors that is this workspace's root.
fn root_above(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join("Cargo.toml").is_file() && d.join("xtask/Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

/// A `cargo` command using the same cargo that runs the xtask, in the workspace root.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Shows a command the way a shell would, for the log.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    if text.ends_with("/cargo") {
        text = "cargo".into();
    }
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '*', '\'', '"']) {
            text.push_str(&format!(" '{arg}'"));
        } else {
            text.push(' ');
            text.push_str(&arg);
        }
    }
    text
}

/// Runs a command with inherited stdio; Ok(true) when it exited 0.
pub fn run_status(cmd: &mut Command) -> Result<bool> {
    println!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    Ok(status.success())
}

/// Runs a command with inherited stdio and fails when it does not exit 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    if !run_status(cmd)? {
        bail!("`{}` failed", describe(cmd));
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout; fails with its stderr when it does not exit 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a program is on PATH.
pub fn have_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_is_found_at_run_time_from_any_folder_in_it() {
        // `cargo test` sets CARGO_MANIFEST_DIR to xtask/ at run time, as `cargo xtask` does.
        let root = workspace_root();
        assert!(
            root.join("xtask/Cargo.toml").is_file(),
            "{}",
            root.display()
        );
        assert!(root.join("ebpf/podd-ebpf/Cargo.toml").is_file());
        // From a nested crate with its own [workspace] (and any folder below it).
        assert_eq!(
            root_above(&root.join("ebpf/podd-ebpf/src")),
            Some(root.clone())
        );
        assert_eq!(root_above(&root.join("xtask/src")), Some(root.clone()));
        assert_eq!(root_above(Path::new("/")), None);
    }
}

//! Debian prerequisites, from the one list in `.ci/apt-packages`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process::{output, run, workspace_root};

/// Packages from `.ci/apt-packages`; with `tag`, only lines carrying that tag.
pub fn apt_packages(tag: Option<&str>) -> Result<Vec<String>> {
    let path = workspace_root().join(".ci/apt-packages");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_list(&text, tag))
}

fn parse_list(text: &str, tag: Option<&str>) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let package = words.next()?;
            let mut tags = words;
            match tag {
                Some(tag) if !tags.any(|t| t == tag) => None,
                _ => Some(package.to_string()),
            }
        })
        .collect()
}

/// The packages of `wanted` that dpkg does not have installed.
pub fn missing(wanted: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|package| {
            let status =
                output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", package]));
            !status.is_ok_and(|s| s.starts_with("ii"))
        })
        .cloned()
        .collect()
}

/// Installs what is missing (idempotent: nothing happens when all are there).
pub fn ensure(wanted: &[String]) -> Result<()> {
    let missing = missing(wanted);
    if missing.is_empty() {
        println!(
            "prerequisites: all {} apt packages are installed",
            wanted.len()
        );
        return Ok(());
    }
    println!("prerequisites: installing {}", missing.join(" "));
    let is_root = output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0");
    if !is_root {
        bail!(
            "installing apt packages needs root: sudo apt-get install {}",
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_with_tags_and_comments() {
        let text = "# header\nrunc node # why\n\nqemu-system-x86   # vm\ncrun x node\n";
        assert_eq!(parse_list(text, None), ["runc", "qemu-system-x86", "crun"]);
        assert_eq!(parse_list(text, Some("node")), ["runc", "crun"]);
    }

    #[test]
    fn the_real_list_is_readable() {
        let all = apt_packages(None).unwrap();
        assert!(all.iter().any(|p| p == "qemu-system-x86"));
        let node = apt_packages(Some("node")).unwrap();
        assert!(node.iter().any(|p| p == "iproute2"));
        assert!(node.len() < all.len());
    }
}

//! `cargo xtask quickstart`: runs the README as written, from a fresh clone: the setup
//! command of "The two commands" (`cargo xtask up`), then every line of the Quickstart block,
//! then `podd reset`; and checks that nothing podd made is left on the machine.
//!
//! The commands are read from the clone's README, not copied here, so the README cannot drift
//! from what is tested. They run in a network namespace this task makes (only `lo`, no route
//! out: pod IPs and VIPs cannot leave the machine) and a private mount namespace (podd's
//! netns bind mounts and its bpffs are the namespace's). podd is forced into the background-
//! process branch of `up` (PODD_UP_SYSTEMD=0), since a systemd unit would start it outside the
//! namespaces. It refuses to run on a machine where podd is already set up.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process::{describe, output, workspace_root};

/// What `cargo xtask up` creates on the machine, all removed at the end.
const STATE_DIRS: &[&str] = &["/var/lib/podd", "/run/podd"];
const LOG_FILE: &str = "/var/log/podd.log";
const BIN_DIR: &str = "/usr/local/bin";
const BINARIES: &[&str] = &["podd", "podd-shim", "podctl"];

/// The body of the first fenced block (```sh) after the heading `heading`.
pub fn fenced_block_after(readme: &str, heading: &str) -> Option<String> {
    let mut lines = readme.lines().skip_while(|l| l.trim() != heading);
    lines.next()?;
    let mut lines = lines.skip_while(|l| !l.trim_start().starts_with("```"));
    lines.next()?;
    let body: Vec<&str> = lines
        .take_while(|l| !l.trim_start().starts_with("```"))
        .collect();
    Some(body.join("\n"))
}

/// The README's setup command: the `cargo xtask up` line of "The two commands".
pub fn setup_command(readme: &str) -> Result<String> {
    let block = fenced_block_after(readme, "## The two commands")
        .context("the README has no code block under `## The two commands`")?;
    block
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .find(|l| l.starts_with("cargo xtask up"))
        .map(str::to_string)
        .context("`## The two commands` has no `cargo xtask up` line")
}

fn podd_is_set_up(cgroup_root: &Path) -> Option<String> {
    STATE_DIRS
        .iter()
        .map(PathBuf::from)
        .chain([cgroup_root.join("podd")])
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
}

/// The cgroup2 mount: /sys/fs/cgroup/unified on a hybrid host.
fn cgroup2_root() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

pub fn run() -> Result<()> {
    let cgroup_root = cgroup2_root();
    if let Some(found) = podd_is_set_up(&cgroup_root) {
        bail!(
            "quickstart: podd is already set up on this machine ({found} exists); the quickstart \
             test needs a fresh machine (run `podd reset` and remove {} first)",
            STATE_DIRS.join(", ")
        );
    }
    let preinstalled: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|b| Path::new(BIN_DIR).join(b).exists())
        .collect();
    let dir = std::env::temp_dir().join(format!("podd-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let clone = dir.join("podd");
    crate::process::run(
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(workspace_root())
            .arg(&clone),
    )?;
    let readme = std::fs::read_to_string(clone.join("README.md"))?;
    let setup = setup_command(&readme)?;
    let quickstart = fenced_block_after(&readme, "## Quickstart")
        .context("the README has no code block under `## Quickstart`")?;
    println!("quickstart: setup `{setup}`, then:\n{quickstart}");
    let script = format!(
        "set -euxo pipefail\n\
         ip link set lo up\n\
         # Whatever happens, podd stops and `podd reset` removes what it made.\n\
         cleanup() {{ set +e; kill \"$(cat /run/podd/podd.pid)\"; \
         while kill -0 \"$(cat /run/podd/podd.pid)\" 2>/dev/null; do sleep 0.1; done; \
         podd reset; }}\n\
         trap cleanup EXIT\n\
         {setup}\n\
         {quickstart}\n"
    );
    // The outer workspace's target dir: the clone's build reuses what is built already.
    let target = crate::up::target_dir()?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--mount", "--propagation", "private", "--fork"])
        .args(["bash", "-c", &script])
        .current_dir(&clone)
        .env("PODD_UP_SYSTEMD", "0")
        .env("CARGO_TARGET_DIR", &target)
        .env("PATH", path_with(BIN_DIR));
    println!("$ {}", describe(&cmd));
    let status = cmd.status().context("running the quickstart")?;
    // The shims `podd reset` killed may take a moment to be gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut left = leaks(&cgroup_root);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        left = leaks(&cgroup_root);
    }
    remove_setup(&preinstalled);
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        bail!("the README's quickstart failed ({status}); its commands are echoed above");
    }
    if !left.is_empty() {
        bail!("after `podd reset`, podd left: {}", left.join("; "));
    }
    println!("quickstart: the README's commands all worked, and `podd reset` left nothing");
    Ok(())
}

/// PATH with `dir` first, so the freshly installed podctl is the one the README's lines run.
fn path_with(dir: &str) -> String {
    let rest = std::env::var("PATH").unwrap_or_default();
    format!("{dir}:{rest}")
}

/// What of podd is still on the machine after `podd reset`: its cgroup, its programs on the
/// cgroup2 root, its processes.
fn leaks(cgroup_root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if cgroup_root.join("podd").exists() {
        out.push(format!("cgroup {}", cgroup_root.join("podd").display()));
    }
    if let Ok(attached) = output(
        Command::new("bpftool")
            .arg("cgroup")
            .arg("show")
            .arg(cgroup_root),
    ) && attached.contains("podd_")
    {
        out.push(format!("programs on {}: {attached}", cgroup_root.display()));
    }
    for pid in processes_named(&["podd", "podd-shim"]) {
        out.push(format!("process {pid}"));
    }
    out
}

/// Live (not zombie) processes whose command name is one of `names`.
fn processes_named(names: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| names.contains(&c.trim()))
        })
        .filter(|pid| {
            // A zombie waits only for its parent (or init) to reap it.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| state != "Z" && state != "X")
            })
        })
        .collect()
}

/// Removes what `cargo xtask up` put on the machine (state, log, the binaries it installed).
fn remove_setup(preinstalled: &[&str]) {
    for d in STATE_DIRS {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_file(LOG_FILE);
    for b in BINARIES.iter().filter(|b| !preinstalled.contains(b)) {
        let _ = std::fs::remove_file(Path::new(BIN_DIR).join(b));
    }
    // The ~/.kube/config link `up` made (only that link; a user's own kubeconfig stays).
    if let Some(home) = std::env::var_os("HOME") {
        crate::up::remove_kubeconfig_link(Path::new(&home), Path::new(crate::up::ADMIN_KUBECONFIG));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "# x\n\n## The two commands\n\n```sh\ncargo xtask up     # set up\n\
        cargo xtask test   # test\n```\n\n## Quickstart\n\nAfter that:\n\n```sh\n\
        podctl get nodes\npodctl run web --image busybox-httpd\n```\n\nMore.\n";

    #[test]
    fn reads_the_commands_from_the_readme() {
        assert_eq!(setup_command(README).unwrap(), "cargo xtask up");
        assert_eq!(
            fenced_block_after(README, "## Quickstart").unwrap(),
            "podctl get nodes\npodctl run web --image busybox-httpd"
        );
        assert!(fenced_block_after(README, "## Nope").is_none());
        assert!(setup_command("# x\n").is_err());
    }

    #[test]
    fn the_real_readme_has_both() {
        let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
        assert!(
            setup_command(&readme)
                .unwrap()
                .starts_with("cargo xtask up")
        );
        let quick = fenced_block_after(&readme, "## Quickstart").unwrap();
        for needed in [
            "podctl run",
            "podctl expose",
            "podctl scale",
            "kubectl",
            "wget",
        ] {
            assert!(quick.contains(needed), "the quickstart lacks {needed}");
        }
    }
}

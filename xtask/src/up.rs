//! `cargo xtask up`: set up this Debian 12 node and start podd (server and agent, with the
//! embedded SQLite store) in one process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{self, cargo, output};
use crate::{build_ebpf, prereqs};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Skip installing apt prerequisites.
    #[arg(long)]
    skip_apt: bool,
    /// Where the binaries are installed.
    #[arg(long, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// Build and install, but don't start podd.
    #[arg(long)]
    no_start: bool,
}

/// Installed binaries: the daemon, its per-pod shim (from podd-pod) and the client.
const BINARIES: &[&str] = &["podd", "podd-shim", "podctl"];
const SOCKET: &str = "/run/podd/podd.sock";
const PID_FILE: &str = "/run/podd/podd.pid";
const LOG_FILE: &str = "/var/log/podd.log";

pub fn run(args: &UpArgs) -> Result<()> {
    if !args.skip_apt {
        prereqs::ensure(&prereqs::apt_packages(Some("node"))?)?;
    }
    // podd embeds the eBPF object; if this fails, cargo's build error below says so too.
    if let Err(err) = build_ebpf::build_ebpf() {
        println!("up: warning: build-ebpf failed: {err:#}");
    }
    process::run(cargo().args([
        "build",
        "--release",
        "-p",
        "podd",
        "-p",
        "podd-pod",
        "-p",
        "podctl",
    ]))?;
    let release = target_dir()?.join("release");
    std::fs::create_dir_all(&args.bin_dir)?;
    for name in BINARIES {
        let from = release.join(name);
        let to = args.bin_dir.join(name);
        if !from.is_file() {
            println!("up: note: the build made no {name}; not installed");
            continue;
        }
        install(&from, &to)?;
        println!("up: installed {}", to.display());
    }
    let podd = args.bin_dir.join("podd");
    match implemented_version(&podd) {
        Some(version) => println!("up: {version}"),
        None => {
            println!(
                "up: podd is built and installed, but the daemon is not implemented yet \
                 (`podd --version` reports no version), so it was not started."
            );
            return Ok(());
        }
    }
    // The quickstart's images, built from the host's busybox-static: no registry needed.
    process::run(Command::new(&podd).args(["image", "seed-busybox"]))?;
    if args.no_start {
        return Ok(());
    }
    start(&podd)
}

/// The cargo target folder (CARGO_TARGET_DIR or the workspace's target/).
pub fn target_dir() -> Result<PathBuf> {
    let text = output(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let metadata: serde_json::Value = serde_json::from_str(&text)?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// Copies via a temporary name and renames, so a running binary is replaced, not overwritten.
fn install(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))
}

/// `podd --version` when it names a version and does not say it is unimplemented.
fn implemented_version(podd: &Path) -> Option<String> {
    let out = Command::new(podd)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let lower = text.to_lowercase();
    let accepted =
        out.status.success() && lower.contains("podd") && !lower.contains("not implemented");
    accepted.then_some(text)
}

fn running_pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(PID_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn start(podd: &Path) -> Result<()> {
    if let Some(pid) = running_pid() {
        println!("up: podd is already running (pid {pid}); `podctl get nodes` talks to it");
        kubectl_setup();
        return Ok(());
    }
    // PODD_UP_SYSTEMD=0 keeps podd a child of this command's namespaces (the quickstart test).
    let systemd = std::env::var("PODD_UP_SYSTEMD").as_deref() != Ok("0");
    if systemd && Path::new("/run/systemd/system").is_dir() {
        let unit = systemd_unit(podd);
        std::fs::write("/etc/systemd/system/podd.service", unit)?;
        process::run(Command::new("systemctl").arg("daemon-reload"))?;
        process::run(Command::new("systemctl").args(["enable", "--now", "podd"]))?;
    } else {
        std::fs::create_dir_all("/run/podd")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOG_FILE)?;
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(podd)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting {}", podd.display()))?
        };
        std::fs::write(PID_FILE, format!("{}\n", child.id()))?;
        println!(
            "up: started podd (pid {}), logging to {LOG_FILE}",
            child.id()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if Path::new(SOCKET).exists() {
            println!("up: podd is serving on {SOCKET}; try `podctl get nodes`");
            kubectl_setup();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("podd started but {SOCKET} did not appear within 15 s; see {LOG_FILE}")
}

/// The admin kubeconfig podd writes at start (root-only).
pub const ADMIN_KUBECONFIG: &str = "/etc/podd/kubeconfig";

/// Makes plain `kubectl` reach podd for this user (root) and says what it did: waits for
/// podd's admin kubeconfig, then links `~/.kube/config` to it when the user has no kubeconfig.
fn kubectl_setup() {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !Path::new(ADMIN_KUBECONFIG).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        println!("up: HOME is not set; for kubectl, export KUBECONFIG={ADMIN_KUBECONFIG}");
        return;
    };
    let env = std::env::var("KUBECONFIG").ok();
    match link_kubeconfig(
        Path::new(&home),
        env.as_deref(),
        Path::new(ADMIN_KUBECONFIG),
    ) {
        Ok(done) => println!("up: {done}"),
        Err(err) => println!(
            "up: warning: could not set up kubectl ({err:#}); export \
             KUBECONFIG={ADMIN_KUBECONFIG}"
        ),
    }
}

/// What a user's kubectl configuration is, as far as linking podd's kubeconfig goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigState {
    /// `$KUBECONFIG` is set: kubectl reads that, not `~/.kube/config`.
    EnvSet(String),
    /// `~/.kube/config` is already a link to the admin kubeconfig.
    Linked,
    /// `~/.kube/config` exists (a file, or a link elsewhere): the user's own; never replaced.
    Own,
    /// The admin kubeconfig cannot be read by this user (podd has not written it, or not root).
    NoAdminConfig,
    /// Nothing there: link it.
    Missing,
}

/// What to do about `link` (`~/.kube/config`), given `$KUBECONFIG` and whether the admin
/// kubeconfig `target` is readable: the pure part of [`link_kubeconfig`].
pub fn kubeconfig_state(
    env: Option<&str>,
    link: &Path,
    target: &Path,
    target_readable: bool,
) -> KubeconfigState {
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        return KubeconfigState::EnvSet(e.to_string());
    }
    match std::fs::read_link(link) {
        Ok(to) if to == target => return KubeconfigState::Linked,
        Ok(_) => return KubeconfigState::Own,
        Err(_) if std::fs::symlink_metadata(link).is_ok() => return KubeconfigState::Own,
        Err(_) => {}
    }
    if target_readable {
        KubeconfigState::Missing
    } else {
        KubeconfigState::NoAdminConfig
    }
}

/// Links `home/.kube/config` to `target` when the user has no kubeconfig (never replaces one),
/// and returns a sentence saying what was done.
pub fn link_kubeconfig(home: &Path, env: Option<&str>, target: &Path) -> Result<String> {
    let dir = home.join(".kube");
    let link = dir.join("config");
    let readable = std::fs::File::open(target).is_ok();
    Ok(match kubeconfig_state(env, &link, target, readable) {
        KubeconfigState::EnvSet(e) => format!(
            "KUBECONFIG is set ({e}), so kubectl reads that; for podd, export \
             KUBECONFIG={}",
            target.display()
        ),
        KubeconfigState::Linked => format!(
            "{} already links to {}; `kubectl get nodes` works",
            link.display(),
            target.display()
        ),
        KubeconfigState::Own => format!(
            "kept your {} (not replaced); for podd, export KUBECONFIG={}",
            link.display(),
            target.display()
        ),
        KubeconfigState::NoAdminConfig => format!(
            "{} is not readable here (podd writes it at start, root-only); kubectl was not \
             set up",
            target.display()
        ),
        KubeconfigState::Missing => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            std::os::unix::fs::symlink(target, &link)
                .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
            format!(
                "linked {} to {} (you had no kubeconfig); `kubectl get nodes` works",
                link.display(),
                target.display()
            )
        }
    })
}

/// Removes `home/.kube/config` if it is the link [`link_kubeconfig`] made (and `~/.kube` if
/// that leaves it empty); anything else is left alone. For the quickstart test's clean-up.
pub fn remove_kubeconfig_link(home: &Path, target: &Path) {
    let dir = home.join(".kube");
    let link = dir.join("config");
    if std::fs::read_link(&link).is_ok_and(|to| to == target) {
        let _ = std::fs::remove_file(&link);
        // Only when empty: kubectl's cache or the user's files stay.
        let _ = std::fs::remove_dir(&dir);
    }
}

/// The unit the podd crate ships, with ExecStart at the installed binary.
fn systemd_unit(podd: &Path) -> String {
    include_str!("../../podd/podd.service").replace(
        "ExecStart=/usr/local/bin/podd",
        &format!("ExecStart={}", podd.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_unit_runs_the_installed_podd_and_spares_the_pods() {
        let unit = systemd_unit(Path::new("/opt/bin/podd"));
        assert!(unit.contains("\nExecStart=/opt/bin/podd\n"), "{unit}");
        assert!(unit.contains("\nKillMode=process\n"), "{unit}");
    }

    fn fake_podd(dir: &Path, script: &str) -> PathBuf {
        let path = dir.join("podd");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn kubectl_is_linked_to_podd_only_when_the_user_has_no_kubeconfig() {
        let home = tempfile_dir("kubeconfig");
        let target = home.join("admin-kubeconfig");
        std::fs::write(&target, "apiVersion: v1\nkind: Config\n").unwrap();
        let link = home.join(".kube/config");

        // $KUBECONFIG wins: nothing is touched.
        let said = link_kubeconfig(&home, Some("/elsewhere"), &target).unwrap();
        assert!(said.contains("KUBECONFIG is set"), "{said}");
        assert!(!home.join(".kube").exists());

        // podd's kubeconfig not there yet (or not readable): nothing is linked.
        let missing = home.join("absent");
        let said = link_kubeconfig(&home, None, &missing).unwrap();
        assert!(said.contains("not readable"), "{said}");
        assert!(!home.join(".kube").exists());

        // No kubeconfig: ~/.kube (0700) and the link are made.
        let said = link_kubeconfig(&home, Some(""), &target).unwrap();
        assert!(said.starts_with("linked"), "{said}");
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        let mode = std::fs::metadata(home.join(".kube"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // Again: already linked, nothing changes.
        let said = link_kubeconfig(&home, None, &target).unwrap();
        assert!(said.contains("already links"), "{said}");
        assert_eq!(
            kubeconfig_state(None, &link, &target, true),
            KubeconfigState::Linked
        );
        remove_kubeconfig_link(&home, &target);
        assert!(!home.join(".kube").exists(), "the link and empty dir go");

        // The user's own file (or a link elsewhere, even dangling) is never replaced.
        std::fs::create_dir_all(home.join(".kube")).unwrap();
        std::fs::write(&link, "mine").unwrap();
        let said = link_kubeconfig(&home, None, &target).unwrap();
        assert!(said.starts_with("kept"), "{said}");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "mine");
        remove_kubeconfig_link(&home, &target);
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "mine");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(home.join("gone"), &link).unwrap();
        assert_eq!(
            kubeconfig_state(None, &link, &target, true),
            KubeconfigState::Own
        );
        std::fs::remove_dir_all(&home).unwrap();
    }

    fn tempfile_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-up-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn only_a_podd_that_names_its_version_is_started() {
        let dir = std::env::temp_dir().join(format!("xtask-up-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Today's stub: exits 0 and prints nothing.
        assert_eq!(implemented_version(&fake_podd(&dir, "exit 0")), None);
        assert_eq!(
            implemented_version(&fake_podd(&dir, "echo 'podd: not implemented yet'")),
            None
        );
        assert_eq!(
            implemented_version(&fake_podd(&dir, "echo 'podd 0.1.0'; exit 2")),
            None
        );
        assert_eq!(
            implemented_version(&fake_podd(&dir, "echo 'podd 0.1.0'")).as_deref(),
            Some("podd 0.1.0")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

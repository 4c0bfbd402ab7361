//! `podd reset`: removes everything podd made on this node: pods and their shims, sandboxes,
//! mounts, veths, leases, the bridge and routes, the load balancer's programs and pins, the
//! cgroups, and the state directories. Safe to run twice.
//!
//! It never stops half-way: each step goes on past what it cannot remove, every failure is
//! collected, and all of them are reported together at the end (with a non-zero exit). The
//! order makes hostile pods harmless:
//! 1. every process goes first (SIGKILL: shims and execs by their command line naming a pod
//!    state directory, containers by `cgroup.kill` of podd's cgroups), so nothing holds or
//!    remakes what follows; a pid from a stale `status.json` is never trusted, since it may
//!    be an unrelated process by now;
//! 2. every mount under the pods' directories is unmounted (lazily when busy) *before*
//!    anything is removed, so no removal reaches through a bind mount into host files;
//! 3. each pod is torn down by the pod manager (network, namespaces, cgroups), with the
//!    node network and load balancer after;
//! 4. what is left is swept: mounts under the run and data directories, cgroups (retried
//!    after killing again), pins, and the directories, removed with [`podd_pod::tree`],
//!    which never follows a symlink out of them nor crosses a mount point, and clears
//!    immutable flags a container may have set.

use anyhow::{Result, bail};
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use podd_net::{Ipv4Cidr, NodeNetConfig, NodeNetwork, SandboxNamespaces};
use podd_pod::manager::{PodConfig, PodManager, remove_cgroup_tree};
use podd_pod::tree::remove_tree;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What reset could not remove, reported together at the end.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, what: impl Display, error: impl Display) {
        let line = format!("{what}: {error}");
        eprintln!("podd reset: {line}");
        self.0.push(line);
    }

    fn check<T, E: Display>(&mut self, what: impl Display, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(what, e);
                None
            }
        }
    }
}

pub fn reset(data_dir: &Path, run_dir: &Path, cgroup_root: &Path, pin_dir: &Path) -> Result<()> {
    let mut f = Failures::default();
    let podd_cgroup = cgroup_root.join("podd");
    let pods_dirs = [data_dir.join("pods"), run_dir.join("pods")];

    kill_everything(run_dir, &podd_cgroup, &mut f);
    for d in &pods_dirs {
        unmount_under(d, &mut f);
    }
    remove_pods(data_dir, run_dir, cgroup_root, &mut f);
    // A bridge left without its IPAM directory (an earlier, interrupted reset).
    remove_default_bridge(&mut f);
    remove_load_balancer(cgroup_root, pin_dir, &mut f);

    if run_dir.exists() {
        f.check(
            format!("unmounting namespaces under {}", run_dir.display()),
            podd_net::netns::release_namespace_root(run_dir),
        );
    }
    unmount_under(run_dir, &mut f);
    for sub in ["pods", "ipam", "images"] {
        unmount_under(&data_dir.join(sub), &mut f);
    }
    remove_cgroups(run_dir, &podd_cgroup, &mut f);
    for dir in [pin_dir.to_path_buf(), run_dir.to_path_buf()]
        .into_iter()
        .chain(["pods", "ipam", "images"].map(|s| data_dir.join(s)))
    {
        for e in remove_tree(&dir) {
            f.add("removing", e);
        }
    }
    // The admin kubeconfig this data directory's server wrote (it writes it again at its
    // next start); one another server wrote is not this node's to remove.
    match crate::kubeconfig::remove_recorded(data_dir) {
        Ok(Some(path)) => println!("removed {}", path.display()),
        Ok(None) => {}
        Err(e) => f.add("removing the server's kubeconfig", format!("{e:#}")),
    }
    let left = podd_processes(run_dir, &podd_cgroup);
    if !left.is_empty() {
        f.add("processes still running", format!("{left:?}"));
    }
    if f.0.is_empty() {
        println!("podd reset: done");
        return Ok(());
    }
    bail!(
        "podd reset removed everything else, but not {} thing(s):\n  - {}",
        f.0.len(),
        f.0.join("\n  - ")
    )
}

/// Tears each pod down through the pod manager of each node network found in the IPAM
/// directory, then removes the node network. A pod whose teardown stops early is noted
/// only: the sweeps after it remove what is left, and report what they cannot.
fn remove_pods(data_dir: &Path, run_dir: &Path, cgroup_root: &Path, f: &mut Failures) {
    let ipam = data_dir.join("ipam");
    let cidrs: Vec<Ipv4Cidr> = std::fs::read_dir(&ipam)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| {
                    let (net, len) = n.rsplit_once('-')?;
                    Ipv4Cidr::new(net.parse().ok()?, len.parse().ok()?).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    for cidr in cidrs {
        let mut cfg = NodeNetConfig::new(cidr);
        cfg.ipam_dir = ipam.clone();
        let Some(net) = f.check(
            format!("opening the node network {cidr}"),
            NodeNetwork::setup(cfg),
        ) else {
            continue;
        };
        let net = Arc::new(net);
        let pod_cfg = PodConfig::new(run_dir, data_dir, cgroup_root, &crate::paths::shim_binary());
        let manager = PodManager::new(pod_cfg, net.clone());
        for uid in manager.list() {
            println!("removing pod {uid}");
            if let Err(e) = manager.teardown(&uid) {
                println!("  pod {uid}: {e} (removing the rest of it below)");
                // What teardown did not reach: the network and namespaces of the pod.
                f.check(
                    format!("pod {uid}: removing its network"),
                    net.detach_pod(&uid),
                );
                f.check(
                    format!("pod {uid}: removing its namespaces"),
                    SandboxNamespaces::remove_by_name(run_dir, &uid),
                );
            }
        }
        drop(manager);
        // Veths and leases of pods whose state was already gone (an interrupted reset).
        f.check(
            format!("removing stray pod veths and leases of {cidr}"),
            net.reconcile(&std::collections::HashSet::new()),
        );
        match Arc::try_unwrap(net) {
            Ok(net) => {
                if f.check("removing the node bridge and routes", net.destroy())
                    .is_some()
                {
                    println!("removed the node bridge and routes");
                }
            }
            Err(_) => f.add(
                "removing the node bridge",
                "the node network is still in use",
            ),
        }
    }
}

fn remove_default_bridge(f: &mut Failures) {
    let Some(mut nl) = f.check("opening netlink", podd_net::netlink::Netlink::open()) else {
        return;
    };
    let bridge = podd_net::node::DEFAULT_BRIDGE;
    if let Some(Some(link)) = f.check(format!("finding {bridge}"), nl.link_by_name(bridge))
        && f.check(format!("removing {bridge}"), nl.delete_link(link.index))
            .is_some()
    {
        println!("removed the bridge {bridge}");
    }
}

/// Detaches the load balancer's programs (their links are pinned) and removes its pins;
/// the pin directory itself is swept after.
fn remove_load_balancer(cgroup_root: &Path, pin_dir: &Path, f: &mut Failures) {
    let pods_cgroup = cgroup_root.join("podd/pods");
    if !pods_cgroup.exists() || !pin_dir.exists() {
        return;
    }
    let mut cfg = podd_lb::LbConfig::new(&pods_cgroup);
    cfg.pin_dir = pin_dir.to_path_buf();
    cfg.cgroups.push(cgroup_root.to_path_buf());
    if f.check(
        "removing the service load balancer",
        podd_lb::LoadBalancer::start(cfg).and_then(|lb| lb.shutdown()),
    )
    .is_some()
    {
        println!("removed the service load balancer");
    }
}

/// SIGKILL to every process podd left: shims and `podd-shim exec`s, found by a pod state
/// directory on their command line, and everything in podd's cgroups. Waits (a little)
/// for them to be gone, so that their mounts and cgroups can go.
fn kill_everything(run_dir: &Path, podd_cgroup: &Path, f: &mut Failures) {
    let pids = podd_processes(run_dir, podd_cgroup);
    if pids.is_empty() {
        return;
    }
    println!("killing {} podd process(es)", pids.len());
    kill_cgroup_tree(podd_cgroup, f);
    for &pid in &pids {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(e) => f.add(format!("killing process {pid}"), e),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes of podd's pods: podd binaries whose command line names a path under
/// `<run>/pods` (the shims and `podd-shim exec`), and every process in podd's cgroups.
/// Never this process.
fn podd_processes(run_dir: &Path, podd_cgroup: &Path) -> Vec<i32> {
    let mut out = procs_in_cgroup_tree(podd_cgroup);
    let pods = run_dir.join("pods");
    let canonical = std::fs::canonicalize(&pods).unwrap_or_else(|_| pods.clone());
    let me = std::process::id() as i32;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        use std::os::unix::ffi::OsStrExt;
        let as_path = |arg: &[u8]| Path::new(std::ffi::OsStr::from_bytes(arg)).to_path_buf();
        let mut args = cmdline.split(|&b| b == 0);
        // podd's own binaries only (podd-shim, however it was re-executed): a shell or
        // tool that merely names a pod path is not podd's to kill.
        let podd_binary = args.next().map(as_path).is_some_and(|argv0| {
            argv0
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"podd"))
        });
        let names_a_pod = podd_binary
            && args.any(|arg| {
                let p = as_path(arg);
                p.starts_with(&pods) || p.starts_with(&canonical)
            });
        if names_a_pod && pid != me && alive(pid) {
            out.push(pid);
        }
    }
    out.retain(|&p| p != me);
    out.sort_unstable();
    out.dedup();
    out
}

fn alive(pid: i32) -> bool {
    // A zombie is gone for our purposes (its parent reaps it).
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Every pid in a cgroup subtree.
fn procs_in_cgroup_tree(dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(procs_in_cgroup_tree(&e.path()));
        }
    }
    out
}

/// Kills every process in a cgroup subtree: `cgroup.kill` where the subtree does not hold
/// this process (and the kernel has it, 5.14+), else SIGKILL pid by pid.
fn kill_cgroup_tree(dir: &Path, f: &mut Failures) {
    if !dir.is_dir() {
        return;
    }
    let me = std::process::id() as i32;
    if !procs_in_cgroup_tree(dir).contains(&me)
        && std::fs::write(dir.join("cgroup.kill"), "1").is_ok()
    {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            kill_cgroup_tree(&e.path(), f);
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if pid == me {
            continue;
        }
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(e) => f.add(format!("killing process {pid} in {}", dir.display()), e),
        }
    }
}

/// Removes podd's cgroups, killing what is in them again and retrying while they are busy
/// (a killed process leaves its cgroup a little after the signal).
fn remove_cgroups(run_dir: &Path, podd_cgroup: &Path, f: &mut Failures) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut quiet = Failures::default();
    loop {
        match remove_cgroup_tree(podd_cgroup) {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                for line in quiet.0 {
                    f.0.push(line);
                }
                let left = procs_in_cgroup_tree(podd_cgroup);
                f.add(
                    format!("removing {}", podd_cgroup.display()),
                    format!("{e}; processes still in it: {left:?}"),
                );
                return;
            }
            Err(_) => {
                quiet = Failures::default();
                kill_cgroup_tree(podd_cgroup, &mut quiet);
                for pid in podd_processes(run_dir, podd_cgroup) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Unmounts every mount at or under `dir`, deepest first, lazily (MNT_DETACH) when one is
/// busy; mounts stacked on one point are peeled one by one.
fn unmount_under(dir: &Path, f: &mut Failures) {
    for _round in 0..16 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        let mut progress = false;
        for m in &mounts {
            match umount2(m, MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => progress = true,
                Err(nix::Error::EBUSY) => {
                    match umount2(m, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                        Ok(()) => progress = true,
                        Err(e) => f.add(format!("unmounting {} (lazily)", m.display()), e),
                    }
                }
                // Gone already (a parent's lazy unmount took it along).
                Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
                Err(e) => f.add(format!("unmounting {}", m.display()), e),
            }
        }
        if !progress {
            let left: Vec<String> = mounts_under(dir)
                .iter()
                .map(|m| m.display().to_string())
                .collect();
            if !left.is_empty() {
                f.add("mounts left", left.join(", "));
            }
            return;
        }
    }
}

/// Mount points at or under `dir` in this process's mount table, deepest (and latest)
/// first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.reverse();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mountinfo(r"/var/lib/podd/a\040b\012c\134d"),
            std::ffi::OsString::from("/var/lib/podd/a b\nc\\d")
        );
        assert_eq!(
            unescape_mountinfo(r"/x\04"),
            std::ffi::OsString::from(r"/x\04")
        );
    }
}

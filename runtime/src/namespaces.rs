//! Namespace flags and joining namespaces by path.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Error, Result, io_err, sys_err};

/// The clone flag of a namespace type.
pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The /proc/PID/ns file name of a namespace type.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Join order: user first (it grants the rights to join the rest), mount last (paths of the
/// others may live in the current mount namespace).
fn order(t: LinuxNamespaceType) -> u8 {
    match t {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Mount => 9,
        _ => 5,
    }
}

/// Namespaces to create (flags) and to join (type, path), from the spec.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Flags of the namespaces to create.
    pub new: CloneFlags,
    /// Namespaces to join, in join order.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl Plan {
    /// From the spec's `linux.namespaces`.
    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Plan {
        let mut plan = Plan {
            new: CloneFlags::empty(),
            join: Vec::new(),
        };
        for ns in namespaces {
            match ns.path() {
                Some(p) => plan.join.push((ns.typ(), p.clone())),
                None => plan.new |= flag(ns.typ()),
            }
        }
        plan.join.sort_by_key(|(t, _)| order(*t));
        plan
    }

    /// Whether the container gets or joins a namespace of this type.
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.new.contains(flag(t)) || self.join.iter().any(|(j, _)| *j == t)
    }
}

/// Open every namespace file first, then join them in order.
pub fn join_all(join: &[(LinuxNamespaceType, PathBuf)]) -> Result<()> {
    let mut fds: Vec<(LinuxNamespaceType, OwnedFd, &Path)> = Vec::with_capacity(join.len());
    for (t, path) in join {
        let f = std::fs::File::open(path).map_err(io_err("open namespace", path))?;
        fds.push((*t, f.into(), path));
    }
    for (t, fd, path) in fds {
        setns(&fd, flag(t)).map_err(sys_err(format!(
            "join {} namespace {}",
            proc_name(t),
            path.display()
        )))?;
    }
    Ok(())
}

/// The namespaces of `pid` that differ from the caller's, in join order (for exec).
pub fn of_process(pid: i32) -> Result<Vec<(LinuxNamespaceType, PathBuf)>> {
    let mut out = Vec::new();
    for t in [
        LinuxNamespaceType::User,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Time,
        LinuxNamespaceType::Mount,
    ] {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{}", proc_name(t)));
        let ours = PathBuf::from(format!("/proc/self/ns/{}", proc_name(t)));
        let Ok(their_meta) = std::fs::metadata(&theirs) else {
            if t == LinuxNamespaceType::Time {
                continue;
            }
            return Err(Error::Init(format!(
                "cannot read {}: is the container running?",
                theirs.display()
            )));
        };
        let same = std::fs::metadata(&ours)
            .is_ok_and(|m| m.ino() == their_meta.ino() && m.dev() == their_meta.dev());
        if !same {
            out.push((t, theirs));
        }
    }
    Ok(out)
}

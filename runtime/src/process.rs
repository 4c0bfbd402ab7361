//! The container process's identity and limits: rlimits, user and groups, the five capability
//! sets, no_new_privs, and finding the program to exec.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability as Cap, CapsHashSet};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use oci_spec::runtime::{Capabilities, LinuxCapabilities, PosixRlimitType, Process};

use crate::error::{Error, Result, sys_err};

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Apply the process's rlimits.
pub fn set_rlimits(process: &Process) -> Result<()> {
    for r in process.rlimits().iter().flatten() {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads a valid, initialised rlimit struct.
        let rc = unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) };
        if rc != 0 {
            return Err(Error::Sys {
                what: format!("setrlimit {:?}", r.typ()),
                source: nix::Error::last(),
            });
        }
    }
    Ok(())
}

/// Convert an OCI capability set to `caps`' set.
pub fn to_caps(set: Option<&Capabilities>) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for c in set.into_iter().flatten() {
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let cap: Cap = name
            .parse()
            .map_err(|_| Error::InvalidSpec(format!("unknown capability {name}")))?;
        out.insert(cap);
    }
    Ok(out)
}

/// Resolved capability sets.
#[derive(Debug, Clone, Default)]
pub struct CapSets {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    permitted: CapsHashSet,
    inheritable: CapsHashSet,
    ambient: CapsHashSet,
}

impl CapSets {
    /// From the spec (a missing `capabilities` keeps none).
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> Result<CapSets> {
        let Some(c) = c else {
            return Ok(CapSets::default());
        };
        Ok(CapSets {
            bounding: to_caps(c.bounding().as_ref())?,
            effective: to_caps(c.effective().as_ref())?,
            permitted: to_caps(c.permitted().as_ref())?,
            inheritable: to_caps(c.inheritable().as_ref())?,
            ambient: to_caps(c.ambient().as_ref())?,
        })
    }
}

fn cap_err(what: &str) -> impl FnOnce(caps::errors::CapsError) -> Error + '_ {
    move |e| Error::Init(format!("capabilities: {what}: {e}"))
}

/// Drop everything outside the bounding set (done while still privileged).
pub fn drop_bounding(sets: &CapSets) -> Result<()> {
    for cap in caps::runtime::thread_all_supported() {
        if !sets.bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(cap_err("drop from bounding"))?;
        }
    }
    Ok(())
}

/// Switch to the process user, keeping capabilities across the uid change, then set the
/// effective, permitted, inheritable and ambient sets.
pub fn switch_user(process: &Process, sets: &CapSets) -> Result<()> {
    let user = process.user();
    caps::securebits::set_keepcaps(true).map_err(cap_err("keep caps"))?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    // setgroups is denied in a user namespace whose setgroups file says "deny".
    if let Err(e) = setgroups(&groups)
        && !(groups.is_empty() && e == nix::Error::EPERM)
    {
        return Err(sys_err(format!("setgroups {groups:?}"))(e));
    }
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(sys_err(format!("setgid {}", user.gid())))?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).map_err(sys_err(format!("setuid {}", user.uid())))?;
    // The permitted set bounds the rest, so set it while the effective set can still change it.
    let mut widest = sets.permitted.clone();
    widest.extend(sets.effective.iter().copied());
    caps::set(None, CapSet::Effective, &widest).map_err(cap_err("set effective"))?;
    caps::set(None, CapSet::Permitted, &sets.permitted).map_err(cap_err("set permitted"))?;
    caps::set(None, CapSet::Inheritable, &sets.inheritable).map_err(cap_err("set inheritable"))?;
    caps::set(None, CapSet::Effective, &sets.effective).map_err(cap_err("set effective"))?;
    caps::clear(None, CapSet::Ambient).map_err(cap_err("clear ambient"))?;
    for cap in &sets.ambient {
        // Ambient needs the cap in permitted and inheritable; others are skipped as runc does.
        if sets.permitted.contains(cap) && sets.inheritable.contains(cap) {
            caps::raise(None, CapSet::Ambient, *cap).map_err(cap_err("raise ambient"))?;
        }
    }
    caps::securebits::set_keepcaps(false).map_err(cap_err("reset keep caps"))?;
    Ok(())
}

/// Set no_new_privs.
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::Sys {
            what: "prctl(PR_SET_NO_NEW_PRIVS)".into(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// The PATH in the process environment, or the default one.
fn path_var(env: &[String]) -> &str {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Find `args[0]` as execvp would, relative to the current root and cwd.
pub fn find_program(arg0: &str, env: &[String]) -> Result<PathBuf> {
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(Error::InvalidSpec(format!(
                "process.args[0] {arg0:?} is not an executable file in the container"
            )))
        };
    }
    for dir in path_var(env).split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(arg0);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(Error::InvalidSpec(format!(
        "process.args[0] {arg0:?} was not found in the container's PATH ({})",
        path_var(env)
    )))
}

/// C strings for execve.
pub fn cstrings(items: &[String]) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::InvalidSpec(format!("{s:?} contains a NUL byte")))
        })
        .collect()
}

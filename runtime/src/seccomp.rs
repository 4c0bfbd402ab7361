//! The spec's seccomp filter, compiled with seccompiler.
//!
//! seccompiler filters have one match action each, so the spec is compiled into a stack of
//! filters: one that applies `defaultAction` to every syscall no rule names (allowing the named
//! ones), and one per other action that applies it to its rules. The kernel runs every filter
//! and takes the most restrictive result, which gives the spec's meaning.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

/// Look a syscall up by name for this architecture.
pub fn syscall_number(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        let table = crate::syscall_table_x86_64::SYSCALLS;
        table
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| table[i].1)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        None
    }
}

/// Every syscall name known for this architecture.
pub fn syscall_names() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        crate::syscall_table_x86_64::SYSCALLS
            .iter()
            .map(|(n, _)| *n)
            .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

fn target_arch() -> Result<TargetArch> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(Error::Seccomp(
            "seccomp filters are supported on x86_64 only".into(),
        ))
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY (a seccomp listener) is not supported".into(),
            ));
        }
    })
}

/// The seccompiler comparison and the value it compares against for one spec argument.
///
/// Every operator compares the argument with `value`, except `SCMP_CMP_MASKED_EQ`, which
/// libseccomp (and so the spec) defines as `(arg & value) == valueTwo`: `value` is the mask and
/// `valueTwo` (default 0) what the masked argument must equal. seccompiler's `MaskedEq(mask)`
/// compares `(arg & mask)` with the condition's value, so the two swap places here.
pub fn comparison(
    o: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> (SeccompCmpOp, u64) {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, value),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, value),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, value),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, value),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, value),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, value),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            (SeccompCmpOp::MaskedEq(value), value_two.unwrap_or(0))
        }
    }
}

/// Syscall number -> rules; `None` means "whatever the arguments".
type RuleSet = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add(set: &mut RuleSet, nr: i64, rule: Option<SeccompRule>) {
    let entry = set.entry(nr).or_insert_with(|| Some(Vec::new()));
    match (entry.as_mut(), rule) {
        (Some(rules), Some(r)) => rules.push(r),
        (_, None) => *entry = None,
        (None, Some(_)) => {}
    }
}

fn build(
    set: RuleSet,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram> {
    let rules = set
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, matched, arch)
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| Error::Seccomp(e.to_string()))
}

/// Compile the spec's filter into the BPF programs to install (in order).
pub fn compile(spec: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let arch = target_arch()?;
    let default = action(spec.default_action(), spec.default_errno_ret())?;
    let mut named: RuleSet = BTreeMap::new();
    let mut by_action: Vec<(SeccompAction, RuleSet)> = Vec::new();
    for sc in spec.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
        let rule = match sc.args().as_ref().filter(|a| !a.is_empty()) {
            None => None,
            Some(args) => {
                let conds = args
                    .iter()
                    .map(|a| {
                        let index = u8::try_from(a.index())
                            .map_err(|_| Error::Seccomp(format!("arg index {}", a.index())))?;
                        let (cmp, value) = comparison(a.op(), a.value(), a.value_two());
                        SeccompCondition::new(index, SeccompCmpArgLen::Qword, cmp, value)
                            .map_err(|e| Error::Seccomp(e.to_string()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(SeccompRule::new(conds).map_err(|e| Error::Seccomp(e.to_string()))?)
            }
        };
        for name in sc.names() {
            // Names unknown on this architecture are skipped, as libseccomp does.
            let Some(nr) = syscall_number(name) else {
                tracing::debug!(syscall = %name, "seccomp: unknown syscall name skipped");
                continue;
            };
            if act != default {
                add(&mut named, nr, rule.clone());
            }
            if act != SeccompAction::Allow && act != default {
                match by_action.iter_mut().find(|(a, _)| *a == act) {
                    Some((_, set)) => add(set, nr, rule.clone()),
                    None => {
                        let mut set = BTreeMap::new();
                        add(&mut set, nr, rule.clone());
                        by_action.push((act.clone(), set));
                    }
                }
            }
        }
    }
    let mut programs = Vec::new();
    if default != SeccompAction::Allow {
        programs.push(build(named, default, SeccompAction::Allow, arch)?);
    }
    for (act, set) in by_action {
        programs.push(build(set, SeccompAction::Allow, act, arch)?);
    }
    Ok(programs)
}

/// Whether no_new_privs must be set before loading a filter: when the spec asks for it, or
/// when the process lacks CAP_SYS_ADMIN (without it the kernel refuses a filter unless
/// no_new_privs is set). A process that keeps CAP_SYS_ADMIN and a spec with
/// `noNewPrivileges: false` get the filter without no_new_privs, as runc and crun do.
pub fn needs_no_new_privs(spec_asks: bool, has_sys_admin: bool) -> bool {
    spec_asks || !has_sys_admin
}

/// Load one program on the calling thread with seccomp(2) `SECCOMP_SET_MODE_FILTER`. Unlike
/// `seccompiler::apply_filter` this never sets no_new_privs: the caller decides
/// ([`needs_no_new_privs`]).
fn load(program: &BpfProgram) -> Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| {
        Error::Seccomp(format!(
            "the filter has {} instructions, more than a BPF program may hold",
            program.len()
        ))
    })?;
    // seccompiler's sock_filter has the kernel's layout (code, jt, jf, k); the kernel copies the
    // instructions during the call.
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `prog` points at `len` valid instructions that live across the call; the kernel
    // only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::Seccomp(format!(
            "loading the filter with seccomp(SECCOMP_SET_MODE_FILTER): {e}"
        )));
    }
    Ok(())
}

/// Install compiled programs on the calling thread. no_new_privs is set first when the spec
/// asks for it (`no_new_privs`) or when the thread lacks CAP_SYS_ADMIN, and only then.
pub fn install(programs: &[BpfProgram], no_new_privs: bool) -> Result<()> {
    if programs.is_empty() {
        return Ok(());
    }
    let has_sys_admin = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false);
    if needs_no_new_privs(no_new_privs, has_sys_admin) {
        crate::process::set_no_new_privs()?;
    }
    for p in programs {
        load(p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("mkdir"), Some(83));
        assert_eq!(syscall_number("no_such_call"), None);
    }

    #[test]
    fn masked_eq_masks_with_value_and_compares_with_value_two() {
        // The default profile's clone rule: no namespace flag may be set.
        let (op, value) = comparison(LinuxSeccompOperator::ScmpCmpMaskedEq, 2114060288, None);
        assert_eq!(op, SeccompCmpOp::MaskedEq(2114060288), "value is the mask");
        assert_eq!(value, 0, "valueTwo defaults to 0");
        let (op, value) = comparison(LinuxSeccompOperator::ScmpCmpMaskedEq, 0xff, Some(0x10));
        assert_eq!((op, value), (SeccompCmpOp::MaskedEq(0xff), 0x10));
        // Every other operator compares with value; valueTwo plays no part.
        for (o, want) in [
            (LinuxSeccompOperator::ScmpCmpEq, SeccompCmpOp::Eq),
            (LinuxSeccompOperator::ScmpCmpNe, SeccompCmpOp::Ne),
            (LinuxSeccompOperator::ScmpCmpLt, SeccompCmpOp::Lt),
            (LinuxSeccompOperator::ScmpCmpLe, SeccompCmpOp::Le),
            (LinuxSeccompOperator::ScmpCmpGe, SeccompCmpOp::Ge),
            (LinuxSeccompOperator::ScmpCmpGt, SeccompCmpOp::Gt),
        ] {
            assert_eq!(comparison(o, 7, Some(9)), (want, 7));
        }
    }

    /// Run a compiled filter in a forked child and report what `clone(flags)` (via the raw
    /// syscall, the child exits right away) returns there: 0 for allowed, else the errno.
    fn clone_result_under(profile: &str, flags: u64) -> i32 {
        let programs = compile(&serde_json::from_str(profile).unwrap()).unwrap();
        // SAFETY: the child makes system calls only and leaves with _exit.
        match unsafe { libc::fork() } {
            0 => {
                let code = if install(&programs, true).is_err() {
                    100
                } else {
                    // SAFETY: a raw clone without a stack behaves like fork; the new child exits
                    // at once with _exit, and this one reaps it.
                    let rc = unsafe {
                        libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0, 0, 0, 0)
                    };
                    if rc == 0 {
                        // SAFETY: _exit ends the grandchild without touching shared state.
                        unsafe { libc::_exit(0) };
                    }
                    if rc > 0 {
                        let mut st = 0;
                        // SAFETY: waiting for our own child with a valid status pointer.
                        unsafe { libc::waitpid(rc as i32, &mut st, 0) };
                        0
                    } else {
                        std::io::Error::last_os_error().raw_os_error().unwrap_or(99)
                    }
                };
                // SAFETY: _exit ends the forked child without running the harness's handlers.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut st = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                libc::WEXITSTATUS(st)
            }
        }
    }

    #[test]
    fn the_default_profiles_clone_rule_allows_fork_and_refuses_namespaces() {
        // An allow-list like the default profile: default ERRNO, clone allowed by the masked rule.
        let names: Vec<&str> = syscall_names()
            .into_iter()
            .filter(|n| *n != "clone")
            .collect();
        let profile = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": names, "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288u64, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        })
        .to_string();
        assert_eq!(
            clone_result_under(&profile, 0),
            0,
            "a plain fork passes the masked rule"
        );
        assert_eq!(
            clone_result_under(&profile, libc::CLONE_NEWUTS as u64),
            libc::EPERM,
            "a namespace flag fails it"
        );
    }

    #[test]
    fn no_new_privs_only_when_asked_or_without_cap_sys_admin() {
        assert!(!needs_no_new_privs(false, true), "runc/crun: not forced");
        assert!(needs_no_new_privs(true, true));
        assert!(needs_no_new_privs(true, false));
        assert!(needs_no_new_privs(false, false), "the kernel needs it then");
    }

    #[test]
    fn install_leaves_no_new_privs_alone_with_cap_sys_admin() {
        // As root with CAP_SYS_ADMIN: the filter loads and no_new_privs stays 0.
        let programs = compile(
            &serde_json::from_str(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
            )
            .unwrap(),
        )
        .unwrap();
        // SAFETY: as above, the child makes system calls only and leaves with _exit.
        match unsafe { libc::fork() } {
            0 => {
                let code = match install(&programs, false) {
                    Err(_) => 100,
                    // SAFETY: PR_GET_NO_NEW_PRIVS takes integer arguments only.
                    Ok(()) => unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) },
                };
                // SAFETY: _exit ends the forked child without running the harness's handlers.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut st = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                let has_admin = caps::has_cap(
                    None,
                    caps::CapSet::Effective,
                    caps::Capability::CAP_SYS_ADMIN,
                )
                .unwrap_or(false);
                let want = if has_admin { 0 } else { 1 };
                assert_eq!(libc::WEXITSTATUS(st), want, "no_new_privs after install");
            }
        }
    }

    #[test]
    fn compiles_a_deny_list_and_an_allow_list() {
        let deny: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat","bogus"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        )
        .unwrap();
        assert_eq!(compile(&deny).unwrap().len(), 1);
        let allow: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap();
        assert_eq!(compile(&allow).unwrap().len(), 1);
    }
}

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

fn op(o: LinuxSeccompOperator, value_two: Option<u64>) -> SeccompCmpOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => SeccompCmpOp::Ne,
        LinuxSeccompOperator::ScmpCmpLt => SeccompCmpOp::Lt,
        LinuxSeccompOperator::ScmpCmpLe => SeccompCmpOp::Le,
        LinuxSeccompOperator::ScmpCmpEq => SeccompCmpOp::Eq,
        LinuxSeccompOperator::ScmpCmpGe => SeccompCmpOp::Ge,
        LinuxSeccompOperator::ScmpCmpGt => SeccompCmpOp::Gt,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            SeccompCmpOp::MaskedEq(value_two.unwrap_or(u64::MAX))
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
                        SeccompCondition::new(
                            index,
                            SeccompCmpArgLen::Qword,
                            op(a.op(), a.value_two()),
                            a.value(),
                        )
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

/// Install compiled programs on the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
pub fn install(programs: &[BpfProgram]) -> Result<()> {
    for p in programs {
        seccompiler::apply_filter(p)
            .map_err(|e| Error::Seccomp(format!("loading the filter: {e}")))?;
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

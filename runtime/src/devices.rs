//! Device access control for cgroup v2: `linux.resources.devices` compiled into a
//! BPF_PROG_TYPE_CGROUP_DEVICE program attached to the container's cgroup.
//!
//! cgroup v2 has no devices.allow/deny files; the kernel asks an attached BPF program instead.
//! The rules keep cgroup v1's meaning: applied in order, the last matching rule wins, and
//! access is allowed when no rule matches. As runc and crun do, the devices every container
//! needs (null, zero, full, random, urandom, tty, console, ptmx, pts, and mknod of any node) and
//! the spec's `linux.devices` are allowed after the spec's rules. The program stays attached
//! until the cgroup is removed, so nothing else needs cleaning up.

use std::os::fd::RawFd;

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// One device rule: `None` fields are wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// 'c' (2) or 'b' (1) in the kernel's BPF_DEVCG_DEV_* numbering; None for all.
    pub dev_type: Option<u32>,
    /// Major number.
    pub major: Option<u32>,
    /// Minor number.
    pub minor: Option<u32>,
    /// Access bits: mknod 1, read 2, write 4.
    pub access: u32,
}

const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
const ACC_ALL: u32 = 7;

fn access_bits(s: Option<&str>) -> u32 {
    let Some(s) = s else { return ACC_ALL };
    s.chars().fold(0, |a, c| {
        a | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

fn dev_type(t: Option<LinuxDeviceType>) -> Option<u32> {
    match t {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
        Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
        _ => None,
    }
}

/// The character devices every container may use, as (major, minor; None for all minors):
/// the OCI default list that runc and containerd allow (null, zero, full, random, urandom,
/// tty, console, ptmx, and the pts of its own devpts). The runtime always allows them; the pod
/// layer writes them into each spec too, so the spec says what the container may use.
pub const DEFAULT_DEVICES: [(i64, Option<i64>); 9] = [
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
];

fn num(n: Option<i64>) -> Option<u32> {
    n.filter(|n| *n >= 0).map(|n| n as u32)
}

/// The rules for a spec: its own, then the defaults every container needs.
pub fn rules(spec_rules: &[LinuxDeviceCgroup], spec_devices: &[LinuxDevice]) -> Vec<Rule> {
    let mut out: Vec<Rule> = spec_rules
        .iter()
        .map(|r| Rule {
            allow: r.allow(),
            dev_type: dev_type(r.typ()),
            major: num(r.major()),
            minor: num(r.minor()),
            access: access_bits(r.access().as_deref()),
        })
        .collect();
    let allow = |t: u32, major: Option<u32>, minor: Option<u32>, access: u32| Rule {
        allow: true,
        dev_type: Some(t),
        major,
        minor,
        access,
    };
    out.push(allow(DEV_CHAR, None, None, 1));
    out.push(allow(DEV_BLOCK, None, None, 1));
    for (major, minor) in DEFAULT_DEVICES {
        out.push(allow(DEV_CHAR, num(Some(major)), num(minor), ACC_ALL));
    }
    for d in spec_devices {
        if let Some(t) = dev_type(Some(d.typ())) {
            out.push(allow(
                t,
                num(Some(d.major())),
                num(Some(d.minor())),
                ACC_ALL,
            ));
        }
    }
    out
}

/// eBPF instruction.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8, // dst in the low nibble, src in the high one
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_MEM_W: u8 = 0x61; // r_dst = *(u32 *)(r_src + off)
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JNE_K: u8 = 0x55;
const EXIT: u8 = 0x95;

/// Compile rules into the program: the last matching rule decides; no match allows.
fn compile(rules: &[Rule]) -> Vec<Insn> {
    // ctx: struct bpf_cgroup_dev_ctx { u32 access_type /* access << 16 | type */; u32 major; u32 minor; }
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff), // r2 = type
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16), // r3 = access
        insn(LDX_MEM_W, 4, 1, 4, 0),    // r4 = major
        insn(LDX_MEM_W, 5, 1, 8, 0),    // r5 = minor
    ];
    for r in rules.iter().rev() {
        // Each test jumps to the next block when it does not match.
        let mut block: Vec<(u8, u8, u8, i32, bool)> = Vec::new(); // (code, dst, src, imm, is_jump)
        if let Some(t) = r.dev_type {
            block.push((JNE_K, 2, 0, t as i32, true));
        }
        if r.access & ACC_ALL != ACC_ALL {
            block.push((ALU32_MOV_X, 1, 3, 0, false));
            block.push((ALU32_AND_K, 1, 0, (!r.access & ACC_ALL) as i32, false));
            block.push((JNE_K, 1, 0, 0, true));
        }
        if let Some(m) = r.major {
            block.push((JNE_K, 4, 0, m as i32, true));
        }
        if let Some(m) = r.minor {
            block.push((JNE_K, 5, 0, m as i32, true));
        }
        block.push((ALU64_MOV_K, 0, 0, i32::from(r.allow), false));
        block.push((EXIT, 0, 0, 0, false));
        let len = block.len();
        let unconditional = !block.iter().any(|b| b.4);
        for (i, (code, dst, src, imm, jump)) in block.into_iter().enumerate() {
            let off = if jump { (len - i - 1) as i16 } else { 0 };
            p.push(insn(code, dst, src, off, imm));
        }
        if unconditional {
            // Everything after it is unreachable, which the verifier refuses.
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 1, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn load(prog: &[Insn]) -> Result<RawFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 0];
    for attempt in 0..2 {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            expected_attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        attr.prog_name[..7].copy_from_slice(b"podd_dv");
        if attempt == 1 {
            log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
        }
        // SAFETY: bpf(BPF_PROG_LOAD) reads `attr` and the instruction and license buffers it
        // points to, all alive for the call; it writes at most log_size bytes into `log`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const ProgLoadAttr,
                std::mem::size_of::<ProgLoadAttr>(),
            )
        };
        if fd >= 0 {
            return Ok(fd as RawFd);
        }
        if attempt == 1 {
            let err = nix::Error::last();
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0');
            return Err(Error::Init(format!(
                "loading the device cgroup BPF program: {err}: {}",
                text.trim()
            )));
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// Load the program for `rules` and attach it to the cgroup directory `cgroup_fd`.
pub fn attach(cgroup_fd: RawFd, rules: &[Rule]) -> Result<()> {
    let prog = compile(rules);
    let prog_fd = load(&prog)?;
    let attr = ProgAttachAttr {
        target_fd: cgroup_fd as u32,
        attach_bpf_fd: prog_fd as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: bpf(BPF_PROG_ATTACH) only reads `attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    let err = nix::Error::last();
    let _ = nix::unistd::close(prog_fd);
    if rc != 0 {
        return Err(Error::Init(format!(
            "attaching the device cgroup BPF program: {err}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_the_next_block() {
        let rules = vec![
            Rule {
                allow: false,
                dev_type: None,
                major: None,
                minor: None,
                access: ACC_ALL,
            },
            Rule {
                allow: true,
                dev_type: Some(DEV_CHAR),
                major: Some(1),
                minor: Some(3),
                access: 6,
            },
        ];
        let p = compile(&rules);
        // 6 loads, block 1: type, 3 access insns, major, minor, mov, exit = 8; block 2 (deny
        // all, unconditional): mov, exit; no default after it.
        assert_eq!(p.len(), 6 + 8 + 2);
        // The first jump of block 1 skips the rest of its 8 instructions.
        assert_eq!(p[6].off, 7);
        assert_eq!(p[13].code, EXIT);
    }

    #[test]
    fn access_strings() {
        assert_eq!(access_bits(Some("rwm")), 7);
        assert_eq!(access_bits(Some("r")), 2);
        assert_eq!(access_bits(None), 7);
    }
}

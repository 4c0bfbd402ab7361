//! Where a node keeps things (DESIGN.md) and what the machine offers.

use std::net::Ipv4Addr;
use std::path::PathBuf;

pub const DATA_DIR: &str = "/var/lib/podd";
pub const RUN_DIR: &str = "/run/podd";

/// The `podd-shim` binary installed beside the running podd.
pub fn shim_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("podd-shim")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/podd-shim"))
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".into())
        .to_lowercase()
}

/// Online CPUs in millicores and memory in bytes.
pub fn machine_capacity() -> (u64, u64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    (cpus * 1000, mem)
}

/// The first non-loopback IPv4 address of this network namespace, by asking the kernel
/// which source address it would use (no packet is sent by a UDP connect).
pub fn node_ip() -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // 192.0.2.1 is TEST-NET-1: never routed, never contacted (connect on UDP sends nothing).
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

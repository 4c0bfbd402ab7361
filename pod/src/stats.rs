//! Usage from cgroup v2 files: CPU in millicores from two cpu.stat samples, and the memory
//! working set (memory.current less inactive file pages), which is what `top` and the
//! autoscaler use, as the kubelet computes it.

use std::time::Instant;

/// `usage_usec` from the text of cpu.stat.
pub fn cpu_usage_usec(cpu_stat: &str) -> Option<u64> {
    stat_field(cpu_stat, "usage_usec")
}

/// A `key value` line's value from a flat-keyed cgroup file (cpu.stat, memory.stat, memory.events).
pub fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Working set = memory.current - inactive_file (never below zero).
pub fn working_set(memory_current: u64, memory_stat: &str) -> u64 {
    memory_current.saturating_sub(stat_field(memory_stat, "inactive_file").unwrap_or(0))
}

/// One CPU sample of a cgroup.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub at: Instant,
    pub usage_usec: u64,
}

/// Average CPU use between two samples, in millicores (1000 = one core busy).
pub fn millicores(earlier: CpuSample, later: CpuSample) -> u64 {
    let wall_us = later.at.saturating_duration_since(earlier.at).as_micros() as u64;
    if wall_us == 0 {
        return 0;
    }
    let used = later.usage_usec.saturating_sub(earlier.usage_usec);
    used.saturating_mul(1000) / wall_us
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_cgroup_files() {
        let cpu = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_throttled 3\n";
        assert_eq!(cpu_usage_usec(cpu), Some(2_500_000));
        assert_eq!(stat_field(cpu, "nr_throttled"), Some(3));
        assert_eq!(stat_field(cpu, "missing"), None);
        let mem = "anon 100\nfile 900\ninactive_file 400\nactive_file 500\n";
        assert_eq!(working_set(1000, mem), 600);
        assert_eq!(working_set(100, mem), 0);
    }

    #[test]
    fn millicores_over_an_interval() {
        let t0 = Instant::now();
        let a = CpuSample {
            at: t0,
            usage_usec: 1_000_000,
        };
        let b = CpuSample {
            at: t0 + Duration::from_secs(2),
            usage_usec: 2_000_000,
        };
        assert_eq!(millicores(a, b), 500);
        assert_eq!(millicores(a, a), 0);
    }
}

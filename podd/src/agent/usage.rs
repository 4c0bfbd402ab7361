//! Usage reports (metrics.k8s.io's source): the agent samples its pods' cgroups and the node's
//! /proc, and posts one [`UsageReport`] per period to
//! `POST /apis/podd.dev/v1/nodes/<node>/usage`. Nothing of it is written into objects.

use podd_api::metrics::{ContainerMetrics, NodeMetrics, PodMetrics, UsageReport};
use podd_api::{Cpu, Memory, ObjectMeta, Pod, Quantity, ResourceExt};
use podd_pod::stats::{CpuSample, millicores};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// USER_HZ, the unit of /proc/stat (100 on every Linux architecture podd runs on).
const USER_HZ: u64 = 100;

/// CPU time spent busy, in microseconds, from the `cpu` line of /proc/stat.
pub fn node_busy_usec(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is counted in user already).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some(total.saturating_sub(idle) * (1_000_000 / USER_HZ))
}

/// Memory in use, MemTotal - MemAvailable, in bytes, from /proc/meminfo.
pub fn node_memory_bytes(meminfo: &str) -> Option<u64> {
    let field = |key: &str| {
        meminfo.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim();
            v.parse::<u64>().ok()
        })
    };
    Some(
        field("MemTotal:")?
            .saturating_sub(field("MemAvailable:")?)
            .saturating_mul(1024),
    )
}

fn usage(cpu_millis: u64, memory: u64) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity::from(Cpu(cpu_millis))),
        ("memory".to_string(), Quantity::from(Memory(memory))),
    ])
}

/// CPU samples between two reports, and the newest rates.
#[derive(Default)]
pub struct Sampler {
    node_cpu: Option<CpuSample>,
    /// (pod uid, container) -> last sample.
    containers: HashMap<(String, String), CpuSample>,
}

impl Sampler {
    /// One container's CPU rate since its previous sample (None on the first).
    pub fn container(&mut self, uid: &str, name: &str, usage_usec: u64) -> Option<u64> {
        let sample = CpuSample {
            at: Instant::now(),
            usage_usec,
        };
        self.containers
            .insert((uid.to_string(), name.to_string()), sample)
            .map(|prev| millicores(prev, sample))
    }

    /// The node's CPU rate since its previous sample.
    pub fn node(&mut self, busy_usec: u64) -> Option<u64> {
        let sample = CpuSample {
            at: Instant::now(),
            usage_usec: busy_usec,
        };
        self.node_cpu.replace(sample).map(|p| millicores(p, sample))
    }

    /// Forgets the samples of pods not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.containers.retain(|(uid, _), _| keep(uid));
    }
}

/// Container name -> (millicores, working set bytes).
pub type ContainerUsage = BTreeMap<String, (u64, u64)>;

/// Builds the report of `node` from per-pod container usage.
pub fn report(
    node: &str,
    window: Duration,
    node_usage: (u64, u64),
    pods: &[(&Pod, ContainerUsage)],
) -> UsageReport {
    let now = podd_pod::pod_status::now();
    let window = format!("{}s", window.as_secs().max(1));
    UsageReport {
        node: NodeMetrics {
            metadata: ObjectMeta {
                name: Some(node.to_string()),
                ..ObjectMeta::default()
            },
            timestamp: Some(now.clone()),
            window: window.clone(),
            usage: usage(node_usage.0, node_usage.1),
            ..NodeMetrics::default()
        },
        pods: pods
            .iter()
            .map(|(pod, containers)| PodMetrics {
                metadata: ObjectMeta {
                    name: Some(pod.name_any()),
                    namespace: pod.namespace(),
                    uid: pod.uid(),
                    labels: pod.metadata.labels.clone(),
                    ..ObjectMeta::default()
                },
                timestamp: Some(now.clone()),
                window: window.clone(),
                containers: containers
                    .iter()
                    .map(|(name, (cpu, mem))| ContainerMetrics {
                        name: name.clone(),
                        usage: usage(*cpu, *mem),
                    })
                    .collect(),
                ..PodMetrics::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 100 0 50 800 50 0 0 0 0 0\n";
        assert_eq!(node_busy_usec(stat), Some(150 * 10_000));
        let meminfo =
            "MemTotal:       2048 kB\nMemFree:         100 kB\nMemAvailable:    1024 kB\n";
        assert_eq!(node_memory_bytes(meminfo), Some(1024 * 1024));
    }

    #[test]
    fn builds_a_report() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"}
        }))
        .unwrap();
        let containers = BTreeMap::from([("c".to_string(), (250, 64 << 20))]);
        let r = report(
            "n1",
            Duration::from_secs(2),
            (1000, 1 << 30),
            &[(&pod, containers)],
        );
        assert_eq!(r.node.metadata.name.as_deref(), Some("n1"));
        assert_eq!(r.pods[0].cpu(), Cpu(250));
        assert_eq!(r.pods[0].memory(), Memory(64 << 20));
        assert_eq!(r.pods[0].metadata.uid.as_deref(), Some("u1"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["node"]["window"], "2s");
        assert!(v["pods"][0]["containers"][0]["usage"]["cpu"].is_string());
    }
}

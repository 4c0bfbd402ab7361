//! The newest usage each agent reported ([`podd_api::metrics::UsageReport`]), kept in memory
//! as metrics-server keeps its scrapes: what `metrics.k8s.io/v1beta1` serves and the
//! autoscaler reads. A node's report replaces its previous one whole, so pods that stopped
//! drop out; a report older than [`STALE_AFTER`] is not served.

use podd_api::metrics::{NodeMetrics, PodMetrics, UsageReport};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Reports older than this are not served (metrics-server's default is 3 scrape periods).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct UsageTable {
    by_node: RwLock<HashMap<String, (Instant, UsageReport)>>,
}

impl UsageTable {
    /// Records `node`'s report, replacing its previous one.
    pub fn record(&self, node: &str, mut report: UsageReport) {
        report.node.metadata.name = Some(node.to_string());
        self.by_node
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), (Instant::now(), report));
    }

    /// Forgets a node (deleted).
    pub fn forget(&self, node: &str) {
        self.by_node
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node);
    }

    fn fresh<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &UsageReport>) -> R) -> R {
        let g = self.by_node.read().unwrap_or_else(|p| p.into_inner());
        let mut it = g
            .values()
            .filter(|(at, _)| at.elapsed() < STALE_AFTER)
            .map(|(_, r)| r);
        f(&mut it)
    }

    /// Every node's metrics, by name.
    pub fn nodes(&self) -> Vec<NodeMetrics> {
        let mut v: Vec<NodeMetrics> = self.fresh(|it| it.map(|r| r.node.clone()).collect());
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        v
    }

    /// The pods' metrics in `namespace` (all when None), by namespace and name.
    pub fn pods(&self, namespace: Option<&str>) -> Vec<PodMetrics> {
        let mut v: Vec<PodMetrics> = self.fresh(|it| {
            it.flat_map(|r| r.pods.iter())
                .filter(|p| namespace.is_none_or(|ns| p.metadata.namespace.as_deref() == Some(ns)))
                .cloned()
                .collect()
        });
        v.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        v
    }

    /// One pod's metrics.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodMetrics> {
        self.fresh(|it| {
            it.flat_map(|r| r.pods.iter())
                .find(|p| {
                    p.metadata.namespace.as_deref() == Some(namespace)
                        && p.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::metrics::ContainerMetrics;
    use podd_api::{ObjectMeta, Quantity};

    fn pod(ns: &str, name: &str, cpu: &str) -> PodMetrics {
        PodMetrics {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            containers: vec![ContainerMetrics {
                name: "c".into(),
                usage: [("cpu".to_string(), Quantity(cpu.into()))].into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_report_replaces_the_last() {
        let t = UsageTable::default();
        t.record(
            "n1",
            UsageReport {
                pods: vec![pod("a", "p1", "10m"), pod("b", "p2", "5m")],
                ..Default::default()
            },
        );
        assert_eq!(t.pods(None).len(), 2);
        assert_eq!(t.pods(Some("a")).len(), 1);
        assert_eq!(t.pod("a", "p1").unwrap().cpu(), podd_api::Cpu(10));
        t.record(
            "n1",
            UsageReport {
                pods: vec![pod("a", "p1", "20m")],
                ..Default::default()
            },
        );
        assert!(t.pod("b", "p2").is_none());
        assert_eq!(t.nodes()[0].metadata.name.as_deref(), Some("n1"));
        t.forget("n1");
        assert!(t.nodes().is_empty());
    }
}

//! metrics.k8s.io/v1beta1: the usage `kubectl top` and the autoscaler read. Agents report
//! their node's and pods' usage to the server in one [`UsageReport`]
//! (`POST /apis/podd.dev/v1/nodes/{node}/usage`); the server keeps the newest report in
//! memory, as metrics-server does, and serves NodeMetrics and PodMetrics from it.

use crate::{ObjectMeta, Quantity, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `usage`: `cpu` (e.g. `"12m"`) and `memory` (e.g. `"3Mi"`).
pub type Usage = BTreeMap<String, Quantity>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetrics {
    #[serde(default = "node_metrics_kind")]
    pub kind: String,
    #[serde(default = "metrics_api_version")]
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub timestamp: Option<Time>,
    /// A duration, `"10s"`.
    pub window: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerMetrics {
    pub name: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    #[serde(default = "pod_metrics_kind")]
    pub kind: String,
    #[serde(default = "metrics_api_version")]
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub timestamp: Option<Time>,
    pub window: String,
    pub containers: Vec<ContainerMetrics>,
}

fn node_metrics_kind() -> String {
    "NodeMetrics".into()
}

fn pod_metrics_kind() -> String {
    "PodMetrics".into()
}

fn metrics_api_version() -> String {
    "metrics.k8s.io/v1beta1".into()
}

/// One agent's report: its node, and every pod it runs (metadata carries namespace, name and
/// uid).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub node: NodeMetrics,
    pub pods: Vec<PodMetrics>,
}

impl PodMetrics {
    /// The pod's CPU, summed over its containers.
    pub fn cpu(&self) -> crate::Cpu {
        crate::Cpu(
            self.containers
                .iter()
                .filter_map(|c| c.usage.get("cpu"))
                .filter_map(|q| crate::Cpu::try_from(q).ok())
                .map(|c| c.0)
                .sum(),
        )
    }

    /// The pod's memory, summed over its containers.
    pub fn memory(&self) -> crate::Memory {
        crate::Memory(
            self.containers
                .iter()
                .filter_map(|c| c.usage.get("memory"))
                .filter_map(|q| crate::Memory::try_from(q).ok())
                .map(|m| m.0)
                .sum(),
        )
    }
}

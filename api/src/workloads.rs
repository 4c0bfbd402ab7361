//! Deployments and HorizontalPodAutoscalers.

use crate::meta::{LabelSelector, ObjectMeta};
use crate::pod::PodSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodTemplateSpec {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Deployment {
    pub metadata: ObjectMeta,
    pub spec: DeploymentSpec,
    pub status: DeploymentStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeploymentSpec {
    pub replicas: u32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    pub strategy: DeploymentStrategy,
    /// Seconds a new pod must be ready before it counts as available.
    pub min_ready_seconds: u32,
}

impl Default for DeploymentSpec {
    fn default() -> Self {
        DeploymentSpec {
            replicas: 1,
            selector: LabelSelector::default(),
            template: PodTemplateSpec::default(),
            strategy: DeploymentStrategy::default(),
            min_ready_seconds: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeploymentStrategy {
    /// "RollingUpdate" (default) or "Recreate".
    #[serde(rename = "type")]
    pub kind: String,
    pub rolling_update: RollingUpdate,
}

impl Default for DeploymentStrategy {
    fn default() -> Self {
        DeploymentStrategy {
            kind: "RollingUpdate".into(),
            rolling_update: RollingUpdate::default(),
        }
    }
}

/// maxSurge and maxUnavailable, each an absolute count or a percentage ("25%").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RollingUpdate {
    pub max_surge: IntOrPercent,
    pub max_unavailable: IntOrPercent,
}

impl Default for RollingUpdate {
    fn default() -> Self {
        RollingUpdate {
            max_surge: IntOrPercent::Percent("25%".into()),
            max_unavailable: IntOrPercent::Percent("25%".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrPercent {
    Int(u32),
    Percent(String),
}

impl IntOrPercent {
    /// Resolves against `total`, rounding up for surge and down for unavailable as Kubernetes does.
    pub fn resolve(&self, total: u32, round_up: bool) -> Option<u32> {
        match self {
            IntOrPercent::Int(n) => Some(*n),
            IntOrPercent::Percent(s) => {
                let p: u64 = s.strip_suffix('%')?.trim().parse().ok()?;
                let scaled = u64::from(total) * p;
                let v = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                u32::try_from(v).ok()
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeploymentStatus {
    pub observed_generation: i64,
    pub replicas: u32,
    pub updated_replicas: u32,
    pub ready_replicas: u32,
    pub available_replicas: u32,
    pub unavailable_replicas: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HorizontalPodAutoscaler {
    pub metadata: ObjectMeta,
    pub spec: HpaSpec,
    pub status: HpaStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HpaSpec {
    pub scale_target_ref: ScaleTargetRef,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Target average CPU use, as a percentage of the pods' CPU requests. Kubernetes'
    /// autoscaling/v1 spelling `targetCPUUtilizationPercentage` is accepted too.
    #[serde(alias = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: u32,
    /// Scale-down stabilisation window in seconds (Kubernetes' default is 300).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_down_stabilization_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScaleTargetRef {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HpaStatus {
    pub current_replicas: u32,
    pub desired_replicas: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_cpu_utilization_percentage: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailable_rounding() {
        let p = IntOrPercent::Percent("25%".into());
        assert_eq!(p.resolve(10, true), Some(3));
        assert_eq!(p.resolve(10, false), Some(2));
        assert_eq!(IntOrPercent::Int(1).resolve(10, false), Some(1));
        assert_eq!(IntOrPercent::Percent("x".into()).resolve(10, false), None);
    }
}

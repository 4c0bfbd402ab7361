//! The horizontal pod autoscaler: desired = ceil(current * utilisation / target), with
//! Kubernetes' 10% tolerance, clamped to [min, max]; scaling up at once, scaling down to the
//! highest recommendation of the stabilisation window (Kubernetes' default behaviour).
//! autoscaling/v2: the target is `spec.metrics[]` of type Resource, cpu, Utilization
//! (`averageUtilization`); the scale-down window is
//! `spec.behavior.scaleDown.stabilizationWindowSeconds` (default 300 s). Utilisation is the
//! pods' CPU use as their agents reported it (`registry.usage`, what metrics.k8s.io serves)
//! over their CPU requests. Status carries currentReplicas, desiredReplicas, currentMetrics,
//! lastScaleTime and the AbleToScale and ScalingActive conditions; a rescale writes a
//! SuccessfulRescale event.

use super::events::{self, Recorder};
use super::{ControllerConfig, ns_name, transition_time};
use crate::registry::{Registry, Subresource};
use podd_api::k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscalerCondition, MetricValueStatus, ResourceMetricStatus,
};
use podd_api::resources::{pod_phase, pod_requests_of};
use podd_api::selector::label_selector_matches;
use podd_api::{
    Cpu, Deployment, HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus, Kind, MetricStatus,
    Pod, Quantity, ResourceExt, Time,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Kubernetes' formula with its tolerance band.
pub fn desired_replicas(current: u32, utilization: f64, target: f64, tolerance: f64) -> u32 {
    if current == 0 || target <= 0.0 {
        return current;
    }
    let ratio = utilization / target;
    if (ratio - 1.0).abs() <= tolerance {
        return current;
    }
    (f64::from(current) * ratio).ceil().max(0.0) as u32
}

/// Scale-down stabilisation: the highest recommendation within `window` (including this
/// one); scale-ups pass straight through.
pub fn stabilize(
    history: &mut VecDeque<(Instant, u32)>,
    now: Instant,
    window: Duration,
    recommendation: u32,
) -> u32 {
    history.push_back((now, recommendation));
    while history
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > window)
    {
        history.pop_front();
    }
    history
        .iter()
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(recommendation)
}

/// Average utilisation (percent of requests) of the running pods that report usage, or None.
/// `usage` gives a pod's CPU in millicores (the agents' reports in `registry.usage`).
pub fn utilization(pods: &[Pod], usage: &dyn Fn(&Pod) -> Option<u64>) -> Option<f64> {
    let (mut used, mut requested) = (0u64, 0u64);
    for p in pods {
        if pod_phase(p) != "Running" || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (cpu, _) = pod_requests_of(p);
        let Some(u) = usage(p) else { continue };
        if cpu.0 == 0 {
            continue;
        }
        used += u;
        requested += cpu.0;
    }
    (requested > 0).then(|| used as f64 * 100.0 / requested as f64)
}

/// The CPU utilisation target of an autoscaling/v2 HPA (`type: Resource`, `name: cpu`,
/// `target.type: Utilization`), or Kubernetes' default of 80% when it has no metrics.
pub fn cpu_target(h: &HorizontalPodAutoscaler) -> Option<i32> {
    let metrics = h.spec.as_ref().and_then(|s| s.metrics.as_ref());
    match metrics {
        None => Some(80),
        Some(ms) if ms.is_empty() => Some(80),
        Some(ms) => ms
            .iter()
            .filter(|m| m.type_ == "Resource")
            .filter_map(|m| m.resource.as_ref())
            .find(|r| r.name == "cpu" && r.target.type_ == "Utilization")
            .and_then(|r| r.target.average_utilization),
    }
}

/// COMPONENT is the name the autoscaler writes events as.
pub const COMPONENT: &str = "horizontal-pod-autoscaler";

pub async fn run(
    registry: Arc<Registry>,
    events: Recorder,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(config.hpa_period);
    let mut histories: HashMap<String, VecDeque<(Instant, u32)>> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let hpas: Vec<HorizontalPodAutoscaler> = registry.cached(None);
        histories.retain(|k, _| hpas.iter().any(|h| ns_name(&h.metadata) == *k));
        for h in hpas {
            let key = ns_name(&h.metadata);
            let history = histories.entry(key.clone()).or_default();
            if let Err(e) = evaluate(&registry, &events, &config, &h, history).await {
                tracing::debug!(hpa = %key, error = %e, "autoscaler evaluation failed");
            }
        }
    }
}

fn hpa_condition(
    old: &[HorizontalPodAutoscalerCondition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> HorizontalPodAutoscalerCondition {
    let prev = old.iter().find(|c| c.type_ == type_);
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(transition_time(
            prev.map(|c| (c.status.as_str(), c.last_transition_time.as_ref())),
            status,
        )),
    }
}

async fn evaluate(
    registry: &Registry,
    events: &Recorder,
    config: &ControllerConfig,
    h: &HorizontalPodAutoscaler,
    history: &mut VecDeque<(Instant, u32)>,
) -> Result<(), crate::ApiError> {
    let ns = h.namespace().unwrap_or_default();
    let Some(spec) = h.spec.as_ref() else {
        return Ok(());
    };
    let old_status = h.status.clone().unwrap_or_default();
    let old_conds = old_status.conditions.clone().unwrap_or_default();
    let target_ref = &spec.scale_target_ref;
    let cache = registry.cache();
    let Some(d) = (target_ref.kind == "Deployment")
        .then(|| {
            cache.get(
                Kind::Deployment,
                &Kind::Deployment.key(&ns, &target_ref.name),
            )
        })
        .flatten()
        .and_then(|o| o.decode::<Deployment>())
    else {
        let conds = vec![hpa_condition(
            &old_conds,
            "AbleToScale",
            "False",
            "FailedGetScale",
            &format!(
                "the HPA controller was unable to get the target's current scale: {} {:?} not found",
                target_ref.kind, target_ref.name
            ),
        )];
        if old_status.conditions.as_ref() != Some(&conds) {
            let mut nh = h.clone();
            nh.status = Some(HorizontalPodAutoscalerStatus {
                conditions: Some(conds),
                ..old_status
            });
            registry.update_obj(&nh, Subresource::Status).await?;
        }
        return Ok(());
    };
    // The target's pods: those its selector matches (through its ReplicaSets).
    let selector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let (objs, _) = cache.snapshot(Kind::Pod, &Kind::Pod.key_prefix(Some(&ns)));
    let pods: Vec<Pod> = objs
        .iter()
        .filter(|o| label_selector_matches(&selector, &o.labels))
        .filter_map(|o| o.decode())
        .collect();
    let current = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
    let usage = |p: &Pod| registry.usage.pod(&ns, &p.name_any()).map(|m| m.cpu().0);
    let util = utilization(&pods, &usage);
    let target = cpu_target(h);
    let min = spec.min_replicas.unwrap_or(1).max(1) as u32;
    let max = (spec.max_replicas.max(0) as u32).max(min);
    let raw = match (util, target) {
        (Some(u), Some(t)) => desired_replicas(current, u, f64::from(t), config.hpa_tolerance),
        _ => current,
    }
    .clamp(min, max);
    let window = spec
        .behavior
        .as_ref()
        .and_then(|b| b.scale_down.as_ref())
        .and_then(|r| r.stabilization_window_seconds)
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(config.hpa_default_downscale_window);
    let desired = stabilize(history, Instant::now(), window, raw).clamp(min, max);
    let mut conds = vec![hpa_condition(
        &old_conds,
        "AbleToScale",
        "True",
        if desired != current {
            "SucceededRescale"
        } else {
            "ReadyForNewScale"
        },
        if desired != current {
            "the HPA controller was able to update the target scale"
        } else {
            "recommended size matches current size"
        },
    )];
    conds.push(match (util, target) {
        (Some(_), Some(_)) => hpa_condition(&old_conds, "ScalingActive", "True", "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"),
        (_, None) => hpa_condition(&old_conds, "ScalingActive", "False", "InvalidMetricSourceType",
            "the HPA was unable to compute the replica count: only Resource cpu Utilization metrics are supported"),
        (None, _) => hpa_condition(&old_conds, "ScalingActive", "False", "FailedGetResourceMetric",
            "the HPA was unable to compute the replica count: failed to get cpu utilization: no usage reported for the pods, or no CPU requests"),
    });
    let current_metrics = match (util, target) {
        (Some(u), Some(_)) => Some(vec![MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: "cpu".into(),
                current: MetricValueStatus {
                    average_utilization: Some(u.round() as i32),
                    average_value: Some(Quantity::from(Cpu(pods
                        .iter()
                        .filter_map(usage)
                        .sum::<u64>()
                        / pods.len().max(1) as u64))),
                    value: None,
                },
            }),
            ..Default::default()
        }]),
        _ => None,
    };
    let mut status = HorizontalPodAutoscalerStatus {
        current_replicas: Some(current as i32),
        desired_replicas: desired as i32,
        current_metrics,
        last_scale_time: old_status.last_scale_time.clone(),
        observed_generation: h.metadata.generation,
        conditions: None,
    };
    if desired != current {
        tracing::info!(hpa = %h.name_any(), current, desired, "autoscaling");
        registry
            .patch(
                Kind::Deployment,
                &ns,
                &d.name_any(),
                serde_json::json!({"spec": {"replicas": desired}}),
                Subresource::Scale,
            )
            .await?;
        status.last_scale_time = Some(Time(podd_api::jiff::Timestamp::now()));
        let reason = if desired > current {
            "cpu resource utilization (percentage of request) above target"
        } else {
            "All metrics below target"
        };
        events.record(
            &events::object_ref(h),
            events::NORMAL,
            "SuccessfulRescale",
            &format!("New size: {desired}; reason: {reason}"),
        );
    }
    status.conditions = Some(conds);
    if Some(&status) != h.status.as_ref() {
        let mut nh = h.clone();
        nh.status = Some(status);
        registry.update_obj(&nh, Subresource::Status).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_and_tolerance() {
        assert_eq!(desired_replicas(3, 100.0, 50.0, 0.1), 6);
        assert_eq!(desired_replicas(3, 54.0, 50.0, 0.1), 3, "within 10%");
        assert_eq!(desired_replicas(4, 20.0, 50.0, 0.1), 2);
        assert_eq!(desired_replicas(3, 51.0 * 1.2, 51.0, 0.1), 4, "ceil(3.6)");
        assert_eq!(desired_replicas(0, 100.0, 50.0, 0.1), 0);
    }

    #[test]
    fn scale_down_waits_for_the_window() {
        let mut h = VecDeque::new();
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        assert_eq!(stabilize(&mut h, t0, w, 6), 6);
        assert_eq!(stabilize(&mut h, t0 + Duration::from_secs(5), w, 2), 6);
        assert_eq!(stabilize(&mut h, t0 + Duration::from_secs(11), w, 2), 2);
        assert_eq!(stabilize(&mut h, t0 + Duration::from_secs(12), w, 8), 8);
    }

    #[test]
    fn utilization_from_usage_and_requests() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "200m"}}}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        assert_eq!(
            utilization(std::slice::from_ref(&p), &|_| Some(300)),
            Some(150.0)
        );
        assert_eq!(utilization(&[p], &|_| None), None);
    }

    #[test]
    fn the_v2_cpu_target() {
        let h: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "maxReplicas": 5,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}]}
        }))
        .unwrap();
        assert_eq!(cpu_target(&h), Some(50));
        let mut none = h.clone();
        none.spec.as_mut().unwrap().metrics = None;
        assert_eq!(cpu_target(&none), Some(80), "Kubernetes' default");
    }
}

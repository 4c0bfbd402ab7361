//! The horizontal pod autoscaler: desired = ceil(current * utilisation / target), with
//! Kubernetes' 10% tolerance, clamped to [min, max]; scaling up at once, scaling down to the
//! highest recommendation of the stabilisation window (Kubernetes' default behaviour).
//! Utilisation is the pods' reported CPU use (status.usage) over their CPU requests.

use super::ControllerConfig;
use crate::registry::{Registry, Subresource};
use podd_api::workloads::HpaStatus;
use podd_api::{Deployment, HorizontalPodAutoscaler, Kind, Pod, PodPhase};
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
pub fn utilization(pods: &[Pod]) -> Option<f64> {
    let (mut used, mut requested) = (0u64, 0u64);
    for p in pods {
        if p.status.phase != PodPhase::Running {
            continue;
        }
        let (Some(u), (cpu, _)) = (&p.status.usage, p.spec.total_requests()) else {
            continue;
        };
        if cpu.0 == 0 {
            continue;
        }
        used += u.cpu_millis;
        requested += cpu.0;
    }
    (requested > 0).then(|| used as f64 * 100.0 / requested as f64)
}

pub async fn run(
    registry: Arc<Registry>,
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
        histories.retain(|k, _| {
            hpas.iter()
                .any(|h| format!("{}/{}", h.metadata.namespace, h.metadata.name) == *k)
        });
        for h in hpas {
            let key = format!("{}/{}", h.metadata.namespace, h.metadata.name);
            let history = histories.entry(key.clone()).or_default();
            if let Err(e) = evaluate(&registry, &config, &h, history).await {
                tracing::debug!(hpa = %key, error = %e, "autoscaler evaluation failed");
            }
        }
    }
}

async fn evaluate(
    registry: &Registry,
    config: &ControllerConfig,
    h: &HorizontalPodAutoscaler,
    history: &mut VecDeque<(Instant, u32)>,
) -> Result<(), crate::ApiError> {
    let ns = &h.metadata.namespace;
    let cache = registry.cache();
    let Some(d) = cache
        .get(
            Kind::Deployment,
            &Kind::Deployment.key(ns, &h.spec.scale_target_ref.name),
        )
        .and_then(|o| o.decode::<Deployment>())
    else {
        return Ok(());
    };
    let pods: Vec<Pod> = cache
        .owned_by(Kind::Pod, &d.metadata.uid)
        .iter()
        .filter_map(|o| o.decode())
        .collect();
    let current = d.spec.replicas;
    let util = utilization(&pods);
    let min = h.spec.min_replicas.max(1);
    let max = h.spec.max_replicas.max(min);
    let raw = match util {
        Some(u) => desired_replicas(
            current,
            u,
            f64::from(h.spec.target_cpu_utilization_percentage),
            config.hpa_tolerance,
        ),
        None => current,
    }
    .clamp(min, max);
    let window = h
        .spec
        .scale_down_stabilization_seconds
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(config.hpa_default_downscale_window);
    let desired = stabilize(history, Instant::now(), window, raw).clamp(min, max);
    let mut status = HpaStatus {
        current_replicas: current,
        desired_replicas: desired,
        current_cpu_utilization_percentage: util.map(|u| u.round() as u32),
        last_scale_time: h.status.last_scale_time.clone(),
    };
    if desired != current {
        tracing::info!(hpa = %h.metadata.name, current, desired, "autoscaling");
        registry
            .patch(
                Kind::Deployment,
                ns,
                &d.metadata.name,
                serde_json::json!({"spec": {"replicas": desired}}),
                Subresource::Scale,
            )
            .await?;
        status.last_scale_time = Some(crate::time::now_rfc3339());
    }
    if status != h.status {
        let mut nh = h.clone();
        nh.status = status;
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
        let mut p = Pod::default();
        p.status.phase = PodPhase::Running;
        p.spec.containers.push(Default::default());
        p.spec.containers[0].resources.requests.cpu = Some(podd_api::Cpu(200));
        p.status.usage = Some(podd_api::pod::PodUsage {
            cpu_millis: 300,
            ..Default::default()
        });
        assert_eq!(utilization(&[p.clone()]), Some(150.0));
        p.status.usage = None;
        assert_eq!(utilization(&[p]), None);
    }
}

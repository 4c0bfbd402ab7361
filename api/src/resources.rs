//! What podd reads out of Kubernetes' objects, decided once: effective requests and limits,
//! probe timings with Kubernetes' defaults, readiness, named ports, int-or-percent values.

use crate::quantity::{Cpu, Memory};
use crate::{
    Container, ContainerPort, IntOrString, Node, Pod, PodSpec, Probe, ResourceRequirements,
    ServicePort,
};

/// The resource name of podd's per-container pids limit (`resources.limits["podd.dev/pids"]`,
/// the cgroup's pids.max). A domain-qualified name, as Kubernetes requires of extended
/// resources; the short `pids` of older manifests is read too.
pub const PIDS_RESOURCE: &str = "podd.dev/pids";

fn quantity_of<T: for<'a> TryFrom<&'a crate::Quantity>>(
    list: &Option<std::collections::BTreeMap<String, crate::Quantity>>,
    name: &str,
) -> Option<T> {
    list.as_ref()?.get(name).and_then(|q| T::try_from(q).ok())
}

/// A container's CPU and memory requests, `None` where unset.
pub fn requests(r: &Option<ResourceRequirements>) -> (Option<Cpu>, Option<Memory>) {
    let Some(r) = r else { return (None, None) };
    (
        quantity_of(&r.requests, "cpu"),
        quantity_of(&r.requests, "memory"),
    )
}

/// A container's CPU and memory limits, `None` where unset.
pub fn limits(r: &Option<ResourceRequirements>) -> (Option<Cpu>, Option<Memory>) {
    let Some(r) = r else { return (None, None) };
    (
        quantity_of(&r.limits, "cpu"),
        quantity_of(&r.limits, "memory"),
    )
}

/// A container's pids limit.
pub fn pids_limit(r: &Option<ResourceRequirements>) -> Option<u64> {
    let limits = r.as_ref()?.limits.as_ref()?;
    let q = limits.get(PIDS_RESOURCE).or_else(|| limits.get("pids"))?;
    q.0.trim().parse().ok()
}

/// What the scheduler counts for one container: the request, or the limit when only a limit
/// is set (Kubernetes defaults requests to limits).
pub fn effective_requests(c: &Container) -> (Cpu, Memory) {
    let (rc, rm) = requests(&c.resources);
    let (lc, lm) = limits(&c.resources);
    (rc.or(lc).unwrap_or_default(), rm.or(lm).unwrap_or_default())
}

/// The pod's effective request as Kubernetes counts it: the sum over app containers (and
/// sidecar init containers), or the largest plain init container if that is larger.
pub fn pod_requests(spec: &PodSpec) -> (Cpu, Memory) {
    let (mut cpu, mut mem) = (0u64, 0u64);
    for c in &spec.containers {
        let (c_cpu, c_mem) = effective_requests(c);
        cpu += c_cpu.0;
        mem += c_mem.0;
    }
    for c in spec.init_containers.iter().flatten() {
        let (c_cpu, c_mem) = effective_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            cpu += c_cpu.0;
            mem += c_mem.0;
        } else {
            cpu = cpu.max(c_cpu.0);
            mem = mem.max(c_mem.0);
        }
    }
    (Cpu(cpu), Memory(mem))
}

/// A pod's requests, zero for a pod without a spec.
pub fn pod_requests_of(pod: &Pod) -> (Cpu, Memory) {
    pod.spec.as_ref().map(pod_requests).unwrap_or_default()
}

/// A probe's timings with Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTimings {
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub timeout_seconds: u32,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

pub fn probe_timings(p: &Probe) -> ProbeTimings {
    let pos = |v: Option<i32>, d: u32| {
        v.and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(d)
    };
    ProbeTimings {
        initial_delay_seconds: p
            .initial_delay_seconds
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        period_seconds: pos(p.period_seconds, 10),
        timeout_seconds: pos(p.timeout_seconds, 1),
        failure_threshold: pos(p.failure_threshold, 3),
        success_threshold: pos(p.success_threshold, 1),
    }
}

/// Whether the node's Ready condition is True.
pub fn node_is_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod's Ready condition is True.
pub fn pod_is_ready(p: &Pod) -> bool {
    pod_condition(p, "Ready").is_some_and(|c| c.status == "True")
}

/// One of the pod's conditions.
pub fn pod_condition<'a>(p: &'a Pod, type_: &str) -> Option<&'a crate::PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The pod's phase (`Pending` when unset).
pub fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The node a pod is bound to, `""` when unscheduled.
pub fn pod_node(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// The pod's IP, `""` when it has none yet.
pub fn pod_ip(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap_or("")
}

/// Resolves an int-or-percent (`3`, `"25%"`) against `total`, rounding up for surge and down
/// for unavailable as Kubernetes does. None when it is neither.
pub fn int_or_percent(v: &IntOrString, total: u32, round_up: bool) -> Option<u32> {
    match v {
        IntOrString::Int(n) => u32::try_from(*n).ok(),
        IntOrString::String(s) => {
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

/// The container port a port reference (`8080` or the name `http`) means in `containers`; a
/// number is itself, a name is looked up among the containers' ports (with `protocol`).
pub fn resolve_port(port: &IntOrString, containers: &[Container], protocol: &str) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p > 0),
        IntOrString::String(name) => containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p: &&ContainerPort| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// A Service port's target in the pod: `targetPort` (a number, or a name resolved against
/// the pod's containers), or `port` when unset.
pub fn service_target_port(sp: &ServicePort, pod: &Pod) -> Option<u16> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => u16::try_from(sp.port).ok(),
        Some(t) => resolve_port(
            t,
            pod.spec.as_ref().map_or(&[][..], |s| &s.containers[..]),
            protocol,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_follow_kubernetes() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "containers": [{
                    "name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}},
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
                }],
                "initContainers": [{"name": "i", "image": "busybox", "resources": {"requests": {"cpu": "2"}}}]
            }
        }))
        .unwrap();
        assert_eq!(pod_requests_of(&pod), (Cpu(2000), Memory(64 << 20)));
        let spec = pod.spec.as_ref().unwrap();
        let probe = spec.containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!(probe_timings(probe).period_seconds, 1);
        assert_eq!(probe_timings(probe).failure_threshold, 3);
        let port = &probe.http_get.as_ref().unwrap().port;
        assert_eq!(resolve_port(port, &spec.containers, "TCP"), Some(8080));
        assert_eq!(resolve_port(port, &spec.containers, "UDP"), None);
        assert_eq!(
            resolve_port(&IntOrString::String("nope".into()), &spec.containers, "TCP"),
            None
        );
    }

    #[test]
    fn percentages_round_as_kubernetes() {
        let p = IntOrString::String("25%".into());
        assert_eq!(int_or_percent(&p, 10, true), Some(3));
        assert_eq!(int_or_percent(&p, 10, false), Some(2));
        assert_eq!(int_or_percent(&IntOrString::Int(1), 10, false), Some(1));
        assert_eq!(
            int_or_percent(&IntOrString::String("x".into()), 10, false),
            None
        );
    }
}

//! From what a pod's shim reports to the Pod status the API shows: phase, readiness, reason.

use crate::shim::PodRuntimeStatus;
use podd_api::pod::{ContainerState, PodPhase, PodStatus};
use std::net::Ipv4Addr;

/// The API status of a pod; `shim_alive` says whether its supervisor still runs.
pub fn pod_status(rt: &PodRuntimeStatus, shim_alive: bool, ip: Option<Ipv4Addr>) -> PodStatus {
    let terminated: Vec<i32> = rt
        .containers
        .iter()
        .filter_map(|c| match c.state {
            ContainerState::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        })
        .collect();
    let all_terminated = !rt.containers.is_empty() && terminated.len() == rt.containers.len();
    let any_running = rt
        .containers
        .iter()
        .any(|c| matches!(c.state, ContainerState::Running { .. }));
    if let Some(e) = &rt.evicted {
        // Evicted: Failed for good, whatever the containers' last exit (the kubelet's way).
        return PodStatus {
            phase: PodPhase::Failed,
            pod_ip: ip.map(|i| i.to_string()).unwrap_or_default(),
            ready: false,
            reason: e.reason.clone(),
            message: e.message.clone(),
            container_statuses: rt.containers.clone(),
            ..PodStatus::default()
        };
    }
    let (phase, reason) = if all_terminated && (rt.stopped || !shim_alive) {
        if terminated.iter().all(|&c| c == 0) {
            (PodPhase::Succeeded, String::new())
        } else {
            (PodPhase::Failed, String::new())
        }
    } else if !shim_alive && !rt.stopped {
        (PodPhase::Failed, "ShimLost".to_string())
    } else if any_running || rt.containers.iter().any(|c| c.restart_count > 0) {
        (PodPhase::Running, String::new())
    } else {
        (PodPhase::Pending, String::new())
    };
    PodStatus {
        phase,
        pod_ip: ip.map(|i| i.to_string()).unwrap_or_default(),
        ready: phase == PodPhase::Running && rt.all_ready(),
        reason,
        container_statuses: rt.containers.clone(),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::pod::ContainerStatus;

    fn rt(states: Vec<(ContainerState, bool)>, stopped: bool) -> PodRuntimeStatus {
        PodRuntimeStatus {
            shim_pid: 1,
            pids: vec![0; states.len()],
            containers: states
                .into_iter()
                .map(|(state, ready)| ContainerStatus {
                    state,
                    ready,
                    ..ContainerStatus::default()
                })
                .collect(),
            stopped,
            evicted: None,
        }
    }

    fn running() -> ContainerState {
        ContainerState::Running {
            started_at: "t".into(),
        }
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState::Terminated {
            exit_code: code,
            signal: None,
            reason: String::new(),
            finished_at: String::new(),
        }
    }

    #[test]
    fn phases() {
        let ip = Some(Ipv4Addr::new(10, 244, 0, 2));
        let s = pod_status(
            &rt(vec![(running(), true), (running(), true)], false),
            true,
            ip,
        );
        assert_eq!(
            (s.phase, s.ready, s.pod_ip.as_str()),
            (PodPhase::Running, true, "10.244.0.2")
        );
        let s = pod_status(
            &rt(vec![(running(), true), (running(), false)], false),
            true,
            ip,
        );
        assert!(!s.ready, "every container must be ready");
        let s = pod_status(
            &rt(vec![(ContainerState::default(), false)], false),
            true,
            ip,
        );
        assert_eq!(s.phase, PodPhase::Pending);
        let s = pod_status(&rt(vec![(exited(0), false)], true), false, ip);
        assert_eq!(s.phase, PodPhase::Succeeded);
        let s = pod_status(
            &rt(vec![(exited(0), false), (exited(2), false)], true),
            false,
            ip,
        );
        assert_eq!(s.phase, PodPhase::Failed);
        let s = pod_status(&rt(vec![(running(), true)], false), false, ip);
        assert_eq!(
            (s.phase, s.reason.as_str(), s.ready),
            (PodPhase::Failed, "ShimLost", false)
        );
        let mut evicted = rt(vec![(running(), true)], false);
        evicted.evicted = Some(crate::shim::Eviction {
            reason: "Evicted".into(),
            message: "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\".".into(),
        });
        let s = pod_status(&evicted, true, ip);
        assert_eq!(
            (s.phase, s.reason.as_str(), s.ready),
            (PodPhase::Failed, "Evicted", false)
        );
        assert!(s.message.contains("scratch"));
    }
}

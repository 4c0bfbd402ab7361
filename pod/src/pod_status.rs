//! From what a pod's shim reports to the Pod status the API shows, in Kubernetes' shape:
//! phase, conditions (Initialized, ContainersReady, Ready), pod and host IPs, container
//! statuses with image and container IDs.
//!
//! [`pod_status`] is a pure function of the runtime state; [`settle`] then carries over what
//! must stay stable between two reports (condition transition times, the start time, the
//! scheduler's PodScheduled condition), so an unchanged pod yields an equal status and the
//! agent writes nothing.

use crate::shim::{ContainerState, ContainerStatus, PodRuntimeStatus};
use podd_api::k8s_openapi::api::core::v1::HostIP;
use podd_api::{
    ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, Pod, PodCondition,
    PodIP, PodStatus, Time, jiff,
};
use std::net::Ipv4Addr;

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// The conditions the agent owns; others (PodScheduled) are the scheduler's and are kept.
const AGENT_CONDITIONS: [&str; 3] = ["Initialized", "ContainersReady", "Ready"];

/// Now, to the second: the precision the API keeps of a `Time`, so that a status compares
/// equal to itself after a round trip through the server.
pub fn now() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default())
}

/// The runtime container id podd gives a pod's container (`<pod uid>-<name>`).
pub fn container_id(uid: &str, name: &str) -> String {
    format!("{uid}-{name}")
}

/// The API status of `pod`; `shim_alive` says whether its supervisor still runs.
pub fn pod_status(
    pod: &Pod,
    rt: &PodRuntimeStatus,
    shim_alive: bool,
    ip: Option<Ipv4Addr>,
) -> PodStatus {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
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
    let (phase, reason, message) = if let Some(e) = &rt.evicted {
        // Evicted: Failed for good, whatever the containers' last exit (the kubelet's way).
        (FAILED, Some(e.reason.clone()), Some(e.message.clone()))
    } else if all_terminated && (rt.stopped || !shim_alive) {
        if terminated.iter().all(|&c| c == 0) {
            (SUCCEEDED, None, None)
        } else {
            (FAILED, None, None)
        }
    } else if !shim_alive && !rt.stopped {
        (FAILED, Some("ShimLost".to_string()), None)
    } else if any_running || rt.containers.iter().any(|c| c.restart_count > 0) {
        (RUNNING, None, None)
    } else {
        (PENDING, None, None)
    };
    let ready = phase == RUNNING && rt.evicted.is_none() && rt.all_ready();
    let ip = ip.map(|i| i.to_string());
    PodStatus {
        phase: Some(phase.to_string()),
        reason,
        message,
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        conditions: Some(conditions(true, ready, ready)),
        container_statuses: Some(
            rt.containers
                .iter()
                .map(|c| container_status(uid, c))
                .collect(),
        ),
        ..PodStatus::default()
    }
}

/// The status of a pod whose sandbox could not be made or whose containers could not be
/// created (an image pull, a bad config): Pending, each container waiting with `reason`.
pub fn waiting_status(pod: &Pod, reason: &str, message: &str) -> PodStatus {
    let containers = pod.spec.as_ref().map_or(&[][..], |s| &s.containers[..]);
    PodStatus {
        phase: Some(PENDING.to_string()),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        conditions: Some(conditions(true, false, false)),
        container_statuses: Some(
            containers
                .iter()
                .map(|c| podd_api::ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    ready: false,
                    started: Some(false),
                    restart_count: 0,
                    state: Some(podd_api::ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.to_string()),
                            message: Some(message.to_string()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ..PodStatus::default()
    }
}

fn conditions(initialized: bool, containers_ready: bool, ready: bool) -> Vec<PodCondition> {
    let cond = |type_: &str, ok: bool| PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: (!ok && type_ != "Initialized").then(|| "ContainersNotReady".to_string()),
        ..PodCondition::default()
    };
    vec![
        cond("Initialized", initialized),
        cond("ContainersReady", containers_ready),
        cond("Ready", ready),
    ]
}

fn time(s: &str) -> Option<Time> {
    s.parse::<jiff::Timestamp>().ok().map(Time)
}

fn state(s: &ContainerState, container_id: &str) -> podd_api::ContainerState {
    match s {
        ContainerState::Waiting { reason, message } => podd_api::ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: (!reason.is_empty())
                    .then(|| reason.clone())
                    .or(Some("ContainerCreating".into())),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..Default::default()
        },
        ContainerState::Running { started_at } => podd_api::ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(started_at),
            }),
            ..Default::default()
        },
        ContainerState::Terminated {
            exit_code,
            signal,
            reason,
            finished_at,
        } => podd_api::ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                signal: *signal,
                reason: (!reason.is_empty()).then(|| reason.clone()),
                finished_at: time(finished_at),
                container_id: Some(container_id.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// One container's API status: `imageID` never null (a node-local reference when the plan
/// of an older shim has none), `containerID` `podd://<id>`.
fn container_status(uid: &str, c: &ContainerStatus) -> podd_api::ContainerStatus {
    let id = format!("podd://{}", container_id(uid, &c.name));
    let running = matches!(c.state, ContainerState::Running { .. });
    podd_api::ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: if c.image_id.is_empty() {
            format!("podd-local://{}", c.image)
        } else {
            c.image_id.clone()
        },
        container_id: Some(id.clone()),
        ready: c.ready,
        started: Some(running),
        restart_count: i32::try_from(c.restart_count).unwrap_or(i32::MAX),
        state: Some(state(&c.state, &id)),
        last_state: c.last_state.as_ref().map(|s| state(s, &id)),
        ..Default::default()
    }
}

/// Completes `new` (from [`pod_status`] or [`waiting_status`]) against the status the pod has
/// (`old`, the API's): conditions keep their `lastTransitionTime` while their status stays,
/// the scheduler's conditions are kept, the start time is kept once set; `host_ip` is the
/// node's address. Times that must be set are `now`.
pub fn settle(new: &mut PodStatus, old: Option<&PodStatus>, host_ip: Option<Ipv4Addr>, now: &Time) {
    let old_conditions = old
        .and_then(|o| o.conditions.as_deref())
        .unwrap_or_default();
    let mut conditions: Vec<PodCondition> = old_conditions
        .iter()
        .filter(|c| !AGENT_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    for mut c in new.conditions.take().unwrap_or_default() {
        let before = old_conditions.iter().find(|o| o.type_ == c.type_);
        c.last_transition_time = match before {
            Some(b) if b.status == c.status && b.last_transition_time.is_some() => {
                b.last_transition_time.clone()
            }
            _ => Some(now.clone()),
        };
        conditions.push(c);
    }
    new.conditions = Some(conditions);
    new.start_time = old
        .and_then(|o| o.start_time.clone())
        .or_else(|| Some(now.clone()));
    if let Some(ip) = host_ip {
        new.host_ip = Some(ip.to_string());
        new.host_ips = Some(vec![HostIP { ip: ip.to_string() }]);
    }
    // Fields the agent does not decide stay as they are.
    if let Some(old) = old {
        new.qos_class = old.qos_class.clone();
        new.nominated_node_name = old.nominated_node_name.clone();
        new.observed_generation = old.observed_generation;
        new.resize = old.resize.clone();
        new.resource_claim_statuses = old.resource_claim_statuses.clone();
        new.extended_resource_claim_status = old.extended_resource_claim_status.clone();
        new.init_container_statuses = old.init_container_statuses.clone();
        new.ephemeral_container_statuses = old.ephemeral_container_statuses.clone();
        if new.pod_ip.is_none() {
            new.pod_ip = old.pod_ip.clone();
            new.pod_ips = old.pod_ips.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::ContainerStatus;

    fn rt(states: Vec<(ContainerState, bool)>, stopped: bool) -> PodRuntimeStatus {
        PodRuntimeStatus {
            shim_pid: 1,
            pids: vec![0; states.len()],
            containers: states
                .into_iter()
                .enumerate()
                .map(|(i, (state, ready))| ContainerStatus {
                    name: format!("c{i}"),
                    image: "busybox".into(),
                    state,
                    ready,
                    ..ContainerStatus::default()
                })
                .collect(),
            stopped,
            evicted: None,
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c0", "image": "busybox"}]}
        }))
        .unwrap()
    }

    fn running() -> ContainerState {
        ContainerState::Running {
            started_at: "2026-12-07T10:00:00Z".into(),
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

    fn phase(s: &PodStatus) -> &str {
        s.phase.as_deref().unwrap()
    }

    fn ready(s: &PodStatus) -> bool {
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }

    #[test]
    fn phases() {
        let pod = pod();
        let ip = Some(Ipv4Addr::new(10, 244, 0, 2));
        let s = pod_status(
            &pod,
            &rt(vec![(running(), true), (running(), true)], false),
            true,
            ip,
        );
        assert_eq!(
            (phase(&s), ready(&s), s.pod_ip.as_deref()),
            (RUNNING, true, Some("10.244.0.2"))
        );
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.244.0.2");
        let s = pod_status(
            &pod,
            &rt(vec![(running(), true), (running(), false)], false),
            true,
            ip,
        );
        assert!(!ready(&s), "every container must be ready");
        let s = pod_status(
            &pod,
            &rt(vec![(ContainerState::default(), false)], false),
            true,
            ip,
        );
        assert_eq!(phase(&s), PENDING);
        let s = pod_status(&pod, &rt(vec![(exited(0), false)], true), false, ip);
        assert_eq!(phase(&s), SUCCEEDED);
        let s = pod_status(
            &pod,
            &rt(vec![(exited(0), false), (exited(2), false)], true),
            false,
            ip,
        );
        assert_eq!(phase(&s), FAILED);
        let s = pod_status(&pod, &rt(vec![(running(), true)], false), false, ip);
        assert_eq!(
            (phase(&s), s.reason.as_deref(), ready(&s)),
            (FAILED, Some("ShimLost"), false)
        );
        let mut evicted = rt(vec![(running(), true)], false);
        evicted.evicted = Some(crate::shim::Eviction {
            reason: "Evicted".into(),
            message: "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\".".into(),
        });
        let s = pod_status(&pod, &evicted, true, ip);
        assert_eq!(
            (phase(&s), s.reason.as_deref(), ready(&s)),
            (FAILED, Some("Evicted"), false)
        );
        assert!(s.message.as_deref().unwrap().contains("scratch"));
    }

    #[test]
    fn container_statuses_have_ids_and_kubernetes_states() {
        let pod = pod();
        let mut r = rt(vec![(running(), true)], false);
        r.containers[0].image_id = "docker.io/library/busybox@sha256:abc".into();
        r.containers[0].last_state = Some(exited(1));
        r.containers[0].restart_count = 1;
        let s = pod_status(&pod, &r, true, None);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.image_id, "docker.io/library/busybox@sha256:abc");
        assert_eq!(cs.container_id.as_deref(), Some("podd://u1-c0"));
        assert_eq!(cs.started, Some(true));
        assert_eq!(cs.restart_count, 1);
        let started = cs.state.as_ref().unwrap().running.as_ref().unwrap();
        assert_eq!(
            started.started_at.as_ref().unwrap().0.to_string(),
            "2026-12-07T10:00:00Z"
        );
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 1);
        let v = serde_json::to_value(cs).unwrap();
        assert!(v["imageID"].is_string(), "{v}");

        let r = rt(vec![(ContainerState::default(), false)], false);
        let s = pod_status(&pod, &r, true, None);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.image_id, "podd-local://busybox", "never null");
        let waiting = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
    }

    #[test]
    fn settling_keeps_times_stable_until_a_condition_changes() {
        let pod = pod();
        let host = Some(Ipv4Addr::new(192, 168, 1, 5));
        let t0 = Time(jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(jiff::Timestamp::from_second(2_000).unwrap());
        let scheduled = PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(t0.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let r = rt(vec![(running(), false)], false);
        let mut first = pod_status(&pod, &r, true, None);
        settle(&mut first, Some(&scheduled), host, &t0);
        let types: Vec<&str> = first
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        );
        assert_eq!(first.host_ips.as_ref().unwrap()[0].ip, "192.168.1.5");
        assert_eq!(first.start_time, Some(t0.clone()));

        // Nothing changed: the same status, whatever the time.
        let mut again = pod_status(&pod, &r, true, None);
        settle(&mut again, Some(&first), host, &t1);
        assert_eq!(again, first);

        // Ready flips: only the changed conditions get the new time.
        let r = rt(vec![(running(), true)], false);
        let mut ready_now = pod_status(&pod, &r, true, None);
        settle(&mut ready_now, Some(&first), host, &t1);
        let time_of = |s: &PodStatus, t: &str| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_eq!(time_of(&ready_now, "Ready"), Some(t1.clone()));
        assert_eq!(time_of(&ready_now, "Initialized"), Some(t0.clone()));
        assert_eq!(ready_now.start_time, Some(t0));
    }

    #[test]
    fn waiting_status_names_each_container() {
        let s = waiting_status(&pod(), "ErrImagePull", "no such image");
        assert_eq!(phase(&s), PENDING);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        let w = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("ErrImagePull"));
        assert_eq!(cs.image, "busybox");
    }
}

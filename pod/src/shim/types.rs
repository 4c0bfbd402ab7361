//! What the agent and a pod's shim exchange through the pod's state directory: the resolved
//! probes and restart policy of the plan, and the containers' runtime states of `status.json`.
//!
//! These are podd's own node-local shapes, not the API's: a shim outlives an agent upgrade, so
//! their JSON form stays the one older shims write (the form podd's API types had), and the
//! agent turns them into Kubernetes' `ContainerStatus` (see [`crate::pod_status`]).

use serde::{Deserialize, Serialize};

/// A pod's restartPolicy, as the shim applies it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// The pod's `spec.restartPolicy` (Always when unset, as Kubernetes defaults it).
    pub fn of(spec: Option<&podd_api::PodSpec>) -> RestartPolicy {
        match spec.and_then(|s| s.restart_policy.as_deref()) {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }
}

/// A probe with its port resolved to a number and its timings defaulted
/// ([`podd_api::resources::probe_timings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Probe {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    pub initial_delay_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
}

impl Probe {
    pub fn period(&self) -> u32 {
        self.period_seconds.unwrap_or(10)
    }
    pub fn timeout(&self) -> u32 {
        self.timeout_seconds.unwrap_or(1)
    }
    pub fn failures(&self) -> u32 {
        self.failure_threshold.unwrap_or(3)
    }
    pub fn successes(&self) -> u32 {
        self.success_threshold.unwrap_or(1)
    }

    /// The probe `p` of a container of the pod whose containers are `containers`: a named
    /// port is looked up among their ports. Errs with what is wrong (an unknown port name, a
    /// probe with no action) for the container's CreateContainerConfigError.
    pub fn resolve(
        p: &podd_api::Probe,
        containers: &[podd_api::Container],
    ) -> Result<Probe, String> {
        let t = podd_api::resources::probe_timings(p);
        let port = |port: &podd_api::IntOrString| {
            podd_api::resources::resolve_port(port, containers, "TCP").ok_or_else(|| match port {
                podd_api::IntOrString::String(name) => {
                    format!(
                        "probe port {name:?} is not the name of a TCP port of the pod's containers"
                    )
                }
                podd_api::IntOrString::Int(n) => format!("probe port {n} is not a valid port"),
            })
        };
        let mut out = Probe {
            initial_delay_seconds: t.initial_delay_seconds,
            period_seconds: Some(t.period_seconds),
            timeout_seconds: Some(t.timeout_seconds),
            failure_threshold: Some(t.failure_threshold),
            success_threshold: Some(t.success_threshold),
            ..Probe::default()
        };
        if let Some(e) = &p.exec {
            out.exec = Some(ExecAction {
                command: e.command.clone().unwrap_or_default(),
            });
        } else if let Some(s) = &p.tcp_socket {
            out.tcp_socket = Some(TcpSocketAction {
                port: port(&s.port)?,
            });
        } else if let Some(h) = &p.http_get {
            out.http_get = Some(HttpGetAction {
                path: h.path.clone().unwrap_or_default(),
                port: port(&h.port)?,
            });
        } else {
            return Err("the probe has no exec, tcpSocket or httpGet action".into());
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecAction {
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSocketAction {
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpGetAction {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub port: u16,
}

/// One container's state as the shim keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatus {
    pub name: String,
    pub ready: bool,
    pub restart_count: u32,
    #[serde(deserialize_with = "state_or_bare_waiting")]
    pub state: ContainerState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// The image's identity (`docker.io/library/busybox@sha256:…`, `podd-local://…`), from
    /// the plan; empty in status files of older shims.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
pub enum ContainerState {
    /// Not running: not started yet, or between restarts. `reason` says why, as Kubernetes
    /// names it (CrashLoopBackOff, CreateContainerError), and `message` what failed.
    #[serde(rename = "waiting")]
    Waiting {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
    },
    #[serde(rename = "running")]
    Running { started_at: String },
    #[serde(rename = "terminated")]
    Terminated {
        exit_code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// "Completed", "Error", "OOMKilled".
        reason: String,
        #[serde(default)]
        finished_at: String,
    },
}

impl Default for ContainerState {
    fn default() -> Self {
        ContainerState::waiting("", "")
    }
}

impl ContainerState {
    pub fn waiting(reason: &str, message: &str) -> ContainerState {
        ContainerState::Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A container state, also in the bare `"waiting"` form that status files written before
/// waiting states had a reason use (a shim outlives an upgrade of the agent).
fn state_or_bare_waiting<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<ContainerState, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Compat {
        Bare(String),
        State(ContainerState),
    }
    match Compat::deserialize(d)? {
        Compat::Bare(s) if s == "waiting" => Ok(ContainerState::default()),
        Compat::Bare(s) => Err(serde::de::Error::custom(format!(
            "unknown container state {s:?}: expected waiting, running or terminated"
        ))),
        Compat::State(s) => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_states_carry_their_reason_and_read_the_bare_form() {
        let cs = ContainerStatus {
            name: "c".into(),
            state: ContainerState::waiting("CrashLoopBackOff", "back-off 10s"),
            ..ContainerStatus::default()
        };
        let v = serde_json::to_value(&cs).unwrap();
        assert_eq!(v["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(serde_json::from_value::<ContainerStatus>(v).unwrap(), cs);
        let bare: ContainerStatus =
            serde_json::from_str(r#"{"name":"c","state":"waiting"}"#).unwrap();
        assert_eq!(bare.state, ContainerState::default());
        let err = serde_json::from_str::<ContainerStatus>(r#"{"state":"dozing"}"#).unwrap_err();
        assert!(err.to_string().contains("dozing"), "{err}");
    }

    #[test]
    fn container_state_wire_form() {
        let s = ContainerState::Terminated {
            exit_code: 137,
            signal: Some(9),
            reason: "OOMKilled".into(),
            finished_at: String::new(),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["terminated"]["exitCode"], 137);
        assert_eq!(serde_json::from_value::<ContainerState>(v).unwrap(), s);
    }

    #[test]
    fn probes_resolve_named_ports_and_default_their_timings() {
        let containers: Vec<podd_api::Container> = serde_json::from_value(serde_json::json!([
            {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
        ]))
        .unwrap();
        let p: podd_api::Probe = serde_json::from_value(serde_json::json!(
            {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2}
        ))
        .unwrap();
        let r = Probe::resolve(&p, &containers).unwrap();
        assert_eq!(
            r.http_get,
            Some(HttpGetAction {
                path: "/healthz".into(),
                port: 8080
            })
        );
        assert_eq!((r.period(), r.failures(), r.timeout()), (2, 3, 1));
        let bad: podd_api::Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": "grpc"}})).unwrap();
        let e = Probe::resolve(&bad, &containers).unwrap_err();
        assert!(e.contains("\"grpc\""), "{e}");
        assert_eq!(
            RestartPolicy::of(Some(&podd_api::PodSpec {
                restart_policy: Some("OnFailure".into()),
                ..Default::default()
            })),
            RestartPolicy::OnFailure
        );
        assert_eq!(RestartPolicy::of(None), RestartPolicy::Always);
    }
}

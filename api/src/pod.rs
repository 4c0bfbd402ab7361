//! Pods: containers sharing one network, IPC and UTS namespace on one node.

use crate::meta::ObjectMeta;
use crate::quantity::{Cpu, Memory};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    pub restart_policy: RestartPolicy,
    /// Set by the scheduler when the pod is bound.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Higher wins; used for preemption.
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    pub resources: ResourceRequirements,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub container_port: u16,
    /// A port opened on the node's address; the scheduler keeps these from clashing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    pub protocol: Protocol,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceList {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// podd extension: the container cgroup's pids.max.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceRequirements {
    pub requests: ResourceList,
    pub limits: ResourceList,
}

impl ResourceRequirements {
    /// What the scheduler counts: the request, or the limit when only a limit is set
    /// (Kubernetes defaults requests to limits).
    pub fn effective_requests(&self) -> (Cpu, Memory) {
        (
            self.requests.cpu.or(self.limits.cpu).unwrap_or_default(),
            self.requests
                .memory
                .or(self.limits.memory)
                .unwrap_or_default(),
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolume>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmptyDirVolume {
    /// "Memory" for a tmpfs; empty for a directory on the node's disk.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub medium: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Memory>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostPathVolume {
    pub path: String,
    /// "", "Directory", "DirectoryOrCreate", "File".
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecurityContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u32>,
    pub privileged: bool,
    pub read_only_root_filesystem: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Capabilities {
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Toleration {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// "Equal" (default) or "Exists".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub operator: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Empty matches every effect.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub effect: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Affinity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeAffinity {
    /// requiredDuringSchedulingIgnoredDuringExecution: any term may match (OR);
    /// within a term every expression must (AND).
    #[serde(rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    pub required: Option<NodeSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSelector {
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSelectorRequirement {
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist.
    pub operator: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    pub phase: PodPhase,
    #[serde(rename = "podIP", skip_serializing_if = "String::is_empty")]
    pub pod_ip: String,
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    /// All containers ready (and the pod running).
    pub ready: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// PodScheduled, Ready, ... as Kubernetes reports them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
    /// Recent usage, reported by the agent, for `top` and the autoscaler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<PodUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodCondition {
    /// "PodScheduled", "Ready", ...
    #[serde(rename = "type")]
    pub kind: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodUsage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
}

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

impl PodSpec {
    /// The pod's effective request as Kubernetes counts it: the sum over app containers,
    /// or the largest init container if that is larger, per resource.
    pub fn total_requests(&self) -> (Cpu, Memory) {
        let (mut cpu, mut mem) = (0u64, 0u64);
        for c in &self.containers {
            let (c_cpu, c_mem) = c.resources.effective_requests();
            cpu += c_cpu.0;
            mem += c_mem.0;
        }
        for c in &self.init_containers {
            let (c_cpu, c_mem) = c.resources.effective_requests();
            cpu = cpu.max(c_cpu.0);
            mem = mem.max(c_mem.0);
        }
        (Cpu(cpu), Memory(mem))
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
    fn reads_a_kubernetes_pod_manifest() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": 1}},
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
                }],
                "initContainers": [{"name": "i", "image": "busybox", "resources": {"requests": {"cpu": "2"}}}],
                "restartPolicy": "OnFailure"
            }
        }))
        .unwrap();
        assert_eq!(pod.spec.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(pod.spec.total_requests(), (Cpu(2000), Memory(64 << 20)));
        assert_eq!(
            pod.spec.containers[0]
                .readiness_probe
                .as_ref()
                .unwrap()
                .period(),
            1
        );
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
}

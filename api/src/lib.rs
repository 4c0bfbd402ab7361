//! podd's object model: the shapes of Kubernetes' core objects, reduced to what podd supports.
//!
//! Every object is `metadata` + `spec` + `status`, serialised in camelCase as Kubernetes does,
//! so that apps/v1 and v1 manifests for the supported fields read as they are.

pub mod meta;
pub mod node;
pub mod object;
pub mod pod;
pub mod quantity;
pub mod service;
pub mod validation;
pub mod workloads;

pub use meta::{LabelSelector, ObjectMeta, OwnerReference};
pub use node::{Node, NodeCondition, NodeSpec, NodeStatus, Taint};
pub use object::{
    EventType, List, ListMeta, Object, Status, StatusCause, StatusDetails, WatchEvent,
};
pub use pod::{
    Container, ContainerPort, ContainerState, ContainerStatus, EnvVar, Pod, PodCondition, PodPhase,
    PodSpec, PodStatus, Probe, ResourceRequirements, Toleration, Volume, VolumeMount,
};
pub use quantity::{Cpu, Memory, QuantityError};
pub use service::{EndpointAddress, EndpointPort, Endpoints, Service, ServicePort, ServiceSpec};
pub use validation::{FieldError, ValidationErrors};
pub use workloads::{Deployment, DeploymentSpec, HorizontalPodAutoscaler, PodTemplateSpec};

/// The object kinds the API serves, with their wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Pod,
    Deployment,
    Service,
    Endpoints,
    Node,
    HorizontalPodAutoscaler,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Pod,
        Kind::Deployment,
        Kind::Service,
        Kind::Endpoints,
        Kind::Node,
        Kind::HorizontalPodAutoscaler,
    ];

    /// The plural, lower-case resource name used in API paths (`pods`, `deployments`, ...).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Deployment => "deployments",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::Node => "nodes",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
        }
    }

    /// Nodes are cluster-scoped; everything else lives in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Node)
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment => "apps/v1",
            Kind::HorizontalPodAutoscaler => "autoscaling/v2",
            _ => "v1",
        }
    }

    pub fn from_plural(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            k.plural() == s
                || k.plural().trim_end_matches('s') == s
                || matches!(
                    (k, s),
                    (Kind::Pod, "po")
                        | (Kind::Deployment, "deploy")
                        | (Kind::Service, "svc")
                        | (Kind::Endpoints, "ep")
                        | (Kind::Node, "no")
                        | (Kind::HorizontalPodAutoscaler, "hpa")
                )
        })
    }
}

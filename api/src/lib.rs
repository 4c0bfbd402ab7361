//! podd's object model is Kubernetes' own: the wire and storage types are `k8s-openapi`'s
//! (generated from Kubernetes' OpenAPI, API version 1.34), so every field a client sends is
//! kept. This crate adds what podd decides on top of them: the kinds it serves ([`Kind`]),
//! validation with field paths ([`validation`]), defaulting ([`defaults`]), label and field
//! selectors ([`selector`]), and CPU and memory arithmetic over quantities ([`quantity`]).

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod convert;
pub mod cron;
pub mod defaults;
pub mod kind;
pub mod metrics;
pub mod object;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod unacted;
pub mod validation;

pub use k8s_openapi;
pub use kube_core::ResourceExt;

pub use kind::Kind;
pub use object::{Object, WatchEventType, status_failure};
pub use quantity::{Cpu, Memory, QuantityError};
pub use validation::{FieldError, ValidationErrors};

// The types podd's crates use most, under their Kubernetes names.
pub use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetCondition, DaemonSetSpec, DaemonSetStatus, DaemonSetUpdateStrategy,
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, DeploymentStrategy,
    ReplicaSet, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
pub use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricTarget, ResourceMetricSource,
};
pub use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, CronJobStatus, Job, JobCondition, JobSpec, JobStatus, JobTemplateSpec,
    UncountedTerminatedPods,
};
pub use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
pub use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, ContainerState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, EmptyDirVolumeSource,
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, EnvVar, Event, ExecAction,
    HTTPGetAction, HostPathVolumeSource, Node, NodeAddress, NodeAffinity, NodeCondition,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, NodeStatus, ObjectReference,
    Pod, PodCondition, PodIP, PodSpec, PodStatus, PodTemplateSpec, Probe, ResourceRequirements,
    SecurityContext, Service, ServicePort, ServiceSpec, ServiceStatus, TCPSocketAction, Taint,
    Toleration, Volume, VolumeMount,
};
pub use k8s_openapi::api::core::v1::{ConfigMap, Secret};
pub use k8s_openapi::api::core::v1::{
    Namespace, NamespaceCondition, NamespaceSpec, NamespaceStatus,
};
pub use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
pub use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, LabelSelectorRequirement, ListMeta, MicroTime, ObjectMeta,
    OwnerReference, Status, StatusCause, StatusDetails, Time,
};
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
pub use k8s_openapi::jiff;
pub use k8s_openapi::{List, Metadata, Resource};

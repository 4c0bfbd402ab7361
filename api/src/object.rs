//! What every stored kind has in common, and the API's wire envelopes: lists, watch events and
//! the Status object used for errors.

use crate::meta::ObjectMeta;
use crate::{Deployment, Endpoints, HorizontalPodAutoscaler, Kind, Node, Pod, Service};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A kind the API serves: typed access to its metadata and its place in the API.
pub trait Object: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: Kind;
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! object {
    ($t:ty, $k:expr) => {
        impl Object for $t {
            const KIND: Kind = $k;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
object!(Pod, Kind::Pod);
object!(Deployment, Kind::Deployment);
object!(Service, Kind::Service);
object!(Endpoints, Kind::Endpoints);
object!(Node, Kind::Node);
object!(HorizontalPodAutoscaler, Kind::HorizontalPodAutoscaler);

impl Kind {
    /// The `kind` field of one object (`Pod`, `Deployment`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Node => "Node",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
        }
    }

    /// The URL prefix of the kind's API group (`/api/v1`, `/apis/apps/v1`, ...).
    pub fn group_prefix(self) -> &'static str {
        match self {
            Kind::Deployment => "/apis/apps/v1",
            Kind::HorizontalPodAutoscaler => "/apis/autoscaling/v2",
            _ => "/api/v1",
        }
    }

    /// The store key prefix of the kind in `namespace` (all namespaces when None).
    pub fn key_prefix(self, namespace: Option<&str>) -> String {
        match (self.namespaced(), namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/", self.plural(), ns),
            _ => format!("/registry/{}/", self.plural()),
        }
    }

    /// The store key of one object.
    pub fn key(self, namespace: &str, name: &str) -> String {
        if self.namespaced() {
            format!("/registry/{}/{}/{}", self.plural(), namespace, name)
        } else {
            format!("/registry/{}/{}", self.plural(), name)
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListMeta {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
}

/// `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"N"},"items":[...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

impl<T> List<T> {
    /// The revision the list was read at, to watch from.
    pub fn revision(&self) -> i64 {
        self.metadata.resource_version.parse().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// An error in the stream; `object` is a Status.
    Error,
}

/// One line of a watch stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchEvent<T> {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub object: T,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StatusCause {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StatusDetails {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// Kubernetes' error object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    pub kind: String,
    pub api_version: String,
    pub status: String,
    pub message: String,
    /// NotFound, AlreadyExists, Conflict, Invalid, Expired, Unauthorized, Forbidden, BadRequest.
    pub reason: String,
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

impl Status {
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Status {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code,
            details: None,
        }
    }

    pub fn invalid(kind: Kind, name: &str, errs: &crate::validation::ValidationErrors) -> Status {
        let mut s = Status::failure(
            422,
            "Invalid",
            format!("{} {name:?} is invalid: {errs}", kind.name()),
        );
        s.details = Some(StatusDetails {
            name: name.into(),
            kind: kind.plural().into(),
            causes: errs
                .0
                .iter()
                .map(|e| StatusCause {
                    field: e.field.clone(),
                    message: e.message.clone(),
                })
                .collect(),
        });
        s
    }
}

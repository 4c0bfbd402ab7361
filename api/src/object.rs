//! What every served kind has in common, a way to run generic code on the type of a runtime
//! [`Kind`] ([`with_kind_type!`]), and the Status object errors are answered with.

use crate::Kind;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status, StatusDetails};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A kind the API serves, as its k8s-openapi type.
pub trait Object:
    k8s_openapi::Resource
    + k8s_openapi::ListableResource
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Default
    + PartialEq
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const API_KIND: Kind;
}

macro_rules! object {
    ($t:ty, $k:expr) => {
        impl Object for $t {
            const API_KIND: Kind = $k;
        }
    };
}
object!(crate::Pod, Kind::Pod);
object!(crate::Service, Kind::Service);
object!(crate::Endpoints, Kind::Endpoints);
object!(crate::Node, Kind::Node);
object!(crate::Event, Kind::Event);
object!(crate::Deployment, Kind::Deployment);
object!(crate::ReplicaSet, Kind::ReplicaSet);
object!(
    crate::HorizontalPodAutoscaler,
    Kind::HorizontalPodAutoscaler
);
object!(crate::EndpointSlice, Kind::EndpointSlice);
object!(crate::Lease, Kind::Lease);
object!(crate::Job, Kind::Job);
object!(crate::CronJob, Kind::CronJob);
object!(crate::DaemonSet, Kind::DaemonSet);
object!(crate::Namespace, Kind::Namespace);
object!(crate::ConfigMap, Kind::ConfigMap);
object!(crate::Secret, Kind::Secret);

/// Runs `$body` with `$t` bound to the k8s-openapi type of the runtime kind `$kind`:
/// `with_kind_type!(kind, T => serde_json::from_slice::<T>(bytes).map(|_| ()))`.
#[macro_export]
macro_rules! with_kind_type {
    ($kind:expr, $t:ident => $body:expr) => {
        match $kind {
            $crate::Kind::Pod => {
                type $t = $crate::Pod;
                $body
            }
            $crate::Kind::Service => {
                type $t = $crate::Service;
                $body
            }
            $crate::Kind::Endpoints => {
                type $t = $crate::Endpoints;
                $body
            }
            $crate::Kind::Node => {
                type $t = $crate::Node;
                $body
            }
            $crate::Kind::Event => {
                type $t = $crate::Event;
                $body
            }
            $crate::Kind::Deployment => {
                type $t = $crate::Deployment;
                $body
            }
            $crate::Kind::ReplicaSet => {
                type $t = $crate::ReplicaSet;
                $body
            }
            $crate::Kind::HorizontalPodAutoscaler => {
                type $t = $crate::HorizontalPodAutoscaler;
                $body
            }
            $crate::Kind::EndpointSlice => {
                type $t = $crate::EndpointSlice;
                $body
            }
            $crate::Kind::Lease => {
                type $t = $crate::Lease;
                $body
            }
            $crate::Kind::Job => {
                type $t = $crate::Job;
                $body
            }
            $crate::Kind::CronJob => {
                type $t = $crate::CronJob;
                $body
            }
            $crate::Kind::DaemonSet => {
                type $t = $crate::DaemonSet;
                $body
            }
            $crate::Kind::Namespace => {
                type $t = $crate::Namespace;
                $body
            }
            $crate::Kind::ConfigMap => {
                type $t = $crate::ConfigMap;
                $body
            }
            $crate::Kind::Secret => {
                type $t = $crate::Secret;
                $body
            }
        }
    };
}

/// The `type` of a watch event on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    /// An error in the stream; the object is a Status.
    Error,
}

impl WatchEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
            WatchEventType::Bookmark => "BOOKMARK",
            WatchEventType::Error => "ERROR",
        }
    }
}

/// A Kubernetes failure Status: `code` (HTTP), `reason` (NotFound, AlreadyExists, Conflict,
/// Invalid, Expired, Gone, Unauthorized, Forbidden, BadRequest, ...) and a message.
pub fn status_failure(code: u16, reason: &str, message: impl Into<String>) -> Status {
    Status {
        status: Some("Failure".into()),
        message: Some(message.into()),
        reason: Some(reason.into()),
        code: Some(i32::from(code)),
        details: None,
        metadata: Default::default(),
    }
}

/// The 422 Invalid Status for `errs` on the object `name` of `kind`, one cause per problem.
pub fn status_invalid(kind: Kind, name: &str, errs: &crate::ValidationErrors) -> Status {
    let mut s = status_failure(
        422,
        "Invalid",
        format!("{} {name:?} is invalid: {errs}", kind.name()),
    );
    s.details = Some(StatusDetails {
        name: Some(name.into()),
        group: Some(kind.group().into()).filter(|g: &String| !g.is_empty()),
        kind: Some(kind.name().into()),
        causes: Some(errs.causes()),
        ..Default::default()
    });
    s
}

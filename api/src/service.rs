//! Services (a virtual IP and a DNS name) and Endpoints (their ready backends).

use crate::meta::ObjectMeta;
use crate::pod::Protocol;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Service {
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// Allocated by the server from the service CIDR when empty.
    #[serde(rename = "clusterIP", skip_serializing_if = "String::is_empty")]
    pub cluster_ip: String,
    /// "None" (default) or "ClientIP".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session_affinity: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub port: u16,
    /// Defaults to `port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    pub protocol: Protocol,
}

impl ServicePort {
    pub fn target(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

/// The ready backends of one Service, written by the endpoints controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoints {
    pub metadata: ObjectMeta,
    pub subsets: Vec<EndpointSubset>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSubset {
    pub addresses: Vec<EndpointAddress>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointAddress {
    pub ip: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// "Pod/NAME".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target_ref: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointPort {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

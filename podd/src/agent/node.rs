//! Registering this node (a Node in Kubernetes' shape) and its heartbeats: a
//! `coordination.k8s.io/v1` Lease in `kube-node-lease`, renewed with a merge patch of
//! `spec.renewTime`, as the kubelet does.

use anyhow::{Context, Result, anyhow};
use podd_api::k8s_openapi::api::core::v1::NodeSystemInfo;
use podd_api::{
    Cpu, Lease, LeaseSpec, Memory, MicroTime, Node, NodeAddress, NodeCondition, NodeStatus,
    ObjectMeta, Quantity, jiff,
};
use podd_client::Client;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The namespace of the nodes' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `spec.leaseDurationSeconds` of a node's Lease, the kubelet's default.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// What the node reports as its kubelet version (`kubectl get nodes` shows it).
pub const KUBELET_VERSION: &str = "v1.34.0-podd";
pub const CONTAINER_RUNTIME_VERSION: &str = "podd://0.1.0";

pub struct Registration {
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    pub capacity_cpu: u64,
    pub capacity_memory: u64,
    pub reserve_cpu: u64,
    pub reserve_memory: u64,
    pub max_pods: u32,
    pub labels: BTreeMap<String, String>,
}

fn resources(cpu: u64, memory: u64, pods: u32) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity::from(Cpu(cpu))),
        ("memory".to_string(), Quantity::from(Memory(memory))),
        ("pods".to_string(), Quantity(pods.to_string())),
    ])
}

/// Kubernetes' name of this machine's architecture (GOARCH).
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `status.nodeInfo`: versions and identities of this machine.
pub fn node_info() -> NodeSystemInfo {
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    NodeSystemInfo {
        architecture: architecture().into(),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: CONTAINER_RUNTIME_VERSION.into(),
        kernel_version: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        kube_proxy_version: String::new(),
        kubelet_version: KUBELET_VERSION.into(),
        machine_id: read_trimmed("/etc/machine-id"),
        operating_system: "linux".into(),
        os_image,
        system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
        ..NodeSystemInfo::default()
    }
}

/// The node's status as the agent reports it at registration.
pub fn node_status(r: &Registration, now: &podd_api::Time) -> NodeStatus {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    NodeStatus {
        capacity: Some(resources(r.capacity_cpu, r.capacity_memory, r.max_pods)),
        allocatable: Some(resources(
            r.capacity_cpu.saturating_sub(r.reserve_cpu),
            r.capacity_memory.saturating_sub(r.reserve_memory),
            r.max_pods,
        )),
        addresses: Some(
            r.ip.map(|ip| NodeAddress {
                type_: "InternalIP".into(),
                address: ip.to_string(),
            })
            .into_iter()
            .chain([NodeAddress {
                type_: "Hostname".into(),
                address: r.name.clone(),
            }])
            .collect(),
        ),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "podd agent is posting ready status",
            ),
        ]),
        node_info: Some(node_info()),
        ..NodeStatus::default()
    }
}

/// Creates the Node (the server gives it a pod CIDR) or refreshes its status if it exists,
/// then the node's Lease; returns the node as stored, with `spec.podCIDR` set.
pub async fn register(client: &Client, r: &Registration) -> Result<Node> {
    let api = client.api::<Node>(None);
    let mut labels = r.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), r.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), architecture().into());
    let status = node_status(r, &podd_pod::pod_status::now());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(r.name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        status: Some(status.clone()),
        ..Node::default()
    };
    let stored = match api.create(&node).await {
        Ok(n) => n,
        Err(e) if e.code() == Some(409) => {
            let patch = serde_json::json!({ "status": status });
            api.patch_status(&r.name, &patch)
                .await
                .with_context(|| format!("refreshing the status of node {}", r.name))?
        }
        Err(e) => return Err(anyhow!(e)).with_context(|| format!("registering node {}", r.name)),
    };
    let has_cidr = stored
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty());
    if !has_cidr {
        anyhow::bail!(
            "node {} has no spec.podCIDR; the server allocates one at registration (is its pod CIDR range full?)",
            r.name
        );
    }
    create_lease(client, &r.name).await?;
    Ok(stored)
}

/// The node's Lease, as the kubelet makes it.
pub fn lease(node: &str, now: MicroTime) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    }
}

/// Creates `kube-node-lease/<node>`; one that exists already is fine (it is renewed next).
async fn create_lease(client: &Client, node: &str) -> Result<()> {
    let api = client.api::<Lease>(Some(LEASE_NAMESPACE));
    match api
        .create(&lease(node, MicroTime(jiff::Timestamp::now())))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => Err(anyhow!(e)).with_context(|| format!("creating the Lease of node {node}")),
    }
}

/// The merge patch that renews a Lease.
pub fn renew_patch(now: jiff::Timestamp) -> serde_json::Value {
    serde_json::json!({"spec": {"renewTime": MicroTime(now)}})
}

/// This node's agent endpoint TLS config: the serving certificate the server issues for this
/// node's registered address (asked over the server's TLS port with the node's token), and the
/// cluster CA, whose client certificate (the server's) every TCP client must present. The key
/// stays in memory; a restarted agent asks again.
pub async fn agent_tls(
    client: &Client,
    name: &str,
) -> Result<std::sync::Arc<rustls::ServerConfig>> {
    let path = format!(
        "{}/certificate",
        podd_client::resource_path(podd_api::Kind::Node, None, Some(name))
    );
    let cert: podd_control_plane::agent_proxy::AgentCertificate = client
        .request(hyper::Method::POST, &path, None, "application/json")
        .await
        .with_context(|| format!("asking the server for the agent certificate of node {name}"))?;
    let pair = podd_control_plane::tls::CertAndKey {
        cert_pem: cert.certificate,
        key_pem: cert.key,
    };
    podd_control_plane::tls::agent_server_config(&pair, &cert.ca)
        .context("building the agent endpoint's TLS config")
}

/// Renews the node's Lease every `every` until the process ends; a failed renewal is retried
/// at the next tick (the server marks the node NotReady only after its grace period). A Lease
/// that is gone (deleted by an admin) is created again.
pub async fn renew_lease(client: Client, name: String, every: Duration) {
    let api = client.api::<Lease>(Some(LEASE_NAMESPACE));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let result = match api.patch(&name, &renew_patch(jiff::Timestamp::now())).await {
            Err(e) if e.is_not_found() => create_lease(&client, &name).await,
            other => other.map(|_| ()).map_err(anyhow::Error::from),
        };
        match result {
            Ok(()) if failing => {
                tracing::info!(node = %name, "lease renewal works again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(node = %name, error = format!("{e:#}"), "renewing the node lease failed; pods keep running");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_status_has_kubernetes_shape() {
        let r = Registration {
            name: "n1".into(),
            ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
            capacity_cpu: 4000,
            capacity_memory: 8 << 30,
            reserve_cpu: 100,
            reserve_memory: 256 << 20,
            max_pods: 110,
            labels: BTreeMap::new(),
        };
        let now = podd_pod::pod_status::now();
        let v = serde_json::to_value(node_status(&r, &now)).unwrap();
        assert_eq!(v["allocatable"]["pods"], "110", "a quantity string");
        assert!(v["capacity"]["cpu"].is_string() && v["allocatable"]["memory"].is_string());
        assert_eq!(v["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert_eq!(v["nodeInfo"]["containerRuntimeVersion"], "podd://0.1.0");
        assert_eq!(v["nodeInfo"]["operatingSystem"], "linux");
        assert_eq!(v["addresses"][0]["type"], "InternalIP");
        let conditions = v["conditions"].as_array().unwrap();
        let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True");
        assert!(ready["lastHeartbeatTime"].is_string());
        for p in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            let c = conditions.iter().find(|c| c["type"] == p).unwrap();
            assert_eq!(c["status"], "False", "{p}");
        }
    }

    #[test]
    fn lease_and_renewal_patch() {
        let t: jiff::Timestamp = "2026-12-07T10:00:00.123456Z".parse().unwrap();
        let v = serde_json::to_value(lease("n1", MicroTime(t))).unwrap();
        assert_eq!(v["metadata"]["namespace"], LEASE_NAMESPACE);
        assert_eq!(v["spec"]["holderIdentity"], "n1");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(
            renew_patch(t),
            serde_json::json!({"spec": {"renewTime": "2026-12-07T10:00:00.123456Z"}})
        );
    }
}

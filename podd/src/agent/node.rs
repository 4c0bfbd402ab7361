//! Registering this node and renewing its lease.

use anyhow::{Context, Result, anyhow};
use podd_api::meta::ObjectMeta;
use podd_api::node::{NodeAddress, NodeCondition, NodeResources, NodeStatus};
use podd_api::{Cpu, Memory, Node};
use podd_client::Client;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

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

/// Creates the Node (the server gives it a pod CIDR) or refreshes its status if it exists;
/// returns the node as stored, with `spec.podCIDR` set.
pub async fn register(client: &Client, r: &Registration) -> Result<Node> {
    let api = client.api::<Node>(None);
    let mut labels = r.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), r.name.clone());
    let status = NodeStatus {
        capacity: NodeResources {
            cpu: Cpu(r.capacity_cpu),
            memory: Memory(r.capacity_memory),
            pods: r.max_pods,
        },
        allocatable: NodeResources {
            cpu: Cpu(r.capacity_cpu.saturating_sub(r.reserve_cpu)),
            memory: Memory(r.capacity_memory.saturating_sub(r.reserve_memory)),
            pods: r.max_pods,
        },
        addresses: r
            .ip
            .map(|ip| NodeAddress {
                kind: "InternalIP".into(),
                address: ip.to_string(),
            })
            .into_iter()
            .chain([NodeAddress {
                kind: "Hostname".into(),
                address: r.name.clone(),
            }])
            .collect(),
        conditions: vec![NodeCondition {
            kind: "Ready".into(),
            status: "True".into(),
            reason: "AgentReady".into(),
            last_transition_time: podd_pod::timefmt::rfc3339(std::time::SystemTime::now()),
        }],
        lease_renew_time: Some(podd_pod::timefmt::rfc3339_nanos(
            std::time::SystemTime::now(),
        )),
        usage: None,
    };
    let node = Node {
        metadata: ObjectMeta {
            name: r.name.clone(),
            labels,
            ..ObjectMeta::default()
        },
        status: status.clone(),
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
    if stored.spec.pod_cidr.is_empty() {
        anyhow::bail!(
            "node {} has no spec.podCIDR; the server allocates one at registration (is its pod CIDR range full?)",
            r.name
        );
    }
    Ok(stored)
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

/// Renews the node's lease every `every` until the process ends; a failed renewal is retried
/// at the next tick (the server marks the node NotReady only after its grace period).
pub async fn renew_lease(client: Client, name: String, every: Duration) {
    let api = client.api::<Node>(None);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let now = podd_pod::timefmt::rfc3339_nanos(std::time::SystemTime::now());
        let patch = serde_json::json!({"status": {"leaseRenewTime": now}});
        match api.patch_status(&name, &patch).await {
            Ok(_) if failing => {
                tracing::info!(node = %name, "lease renewal works again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(node = %name, error = %e, "renewing the node lease failed; pods keep running");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

//! `pods/{name}/log` and `pods/{name}/exec` are served by the agent of the pod's node: the
//! API server forwards the request and streams the answer back, so `podctl logs -f` and
//! `podctl exec` work across nodes.
//!
//! Where the agent is, is the server's decision, never the node's word: the agent of this
//! machine (by server configuration) over its Unix socket, and any other node's at the
//! InternalIP it registered with (which its token cannot change afterwards), port 10250, over
//! TLS: the server checks that the agent's certificate is the cluster CA's certificate for that
//! node, and presents its own client certificate. No token is ever sent to an agent.
//!
//! Agents get their serving certificate here too, at join (`POST
//! /api/v1/nodes/{name}/certificate` with the node's token, over the server's TLS port).

use crate::auth::Identity;
use crate::error::ApiError;
use crate::http::Body;
use crate::registry::Registry;
use crate::tls::{CertAndKey, TlsMaterial};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use podd_api::Kind;
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The agent endpoint's TCP port on every node.
pub const AGENT_PORT: u16 = 10250;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent on the server's own machine, reached over its root-only Unix socket (the
/// all-in-one `podd`). Server configuration, not anything a node writes.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    pub node: String,
    pub socket: PathBuf,
}

/// How the API server reaches and trusts the agents.
pub struct AgentLink {
    pki: TlsMaterial,
    /// The TLS client config towards agents; the reason when there is none (no CA key).
    client: Result<Arc<rustls::ClientConfig>, String>,
    local: Option<LocalAgent>,
    port: u16,
}

/// What `POST nodes/{name}/certificate` answers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AgentCertificate {
    pub certificate: String,
    pub key: String,
    pub ca: String,
}

impl AgentLink {
    pub fn new(pki: &TlsMaterial, local: Option<LocalAgent>) -> AgentLink {
        let client = pki
            .issue_server_client_cert()
            .and_then(|c| crate::tls::agent_client_config(&pki.ca_cert_pem, &c))
            .map_err(|e| e.to_string());
        if let Err(e) = &client {
            tracing::warn!(error = %e, "logs and exec of pods on other nodes will fail");
        }
        AgentLink {
            pki: pki.clone(),
            client,
            local,
            port: AGENT_PORT,
        }
    }

    /// Issues `node`'s agent serving certificate, for the InternalIP it registered with.
    /// Only the node itself (or an admin) may ask, and only once its Node exists.
    pub async fn issue_certificate(
        &self,
        registry: &Registry,
        identity: &Identity,
        node: &str,
    ) -> Result<AgentCertificate, ApiError> {
        if let Identity::Node(n) = identity
            && n != node
        {
            return Err(ApiError::Forbidden(format!(
                "node {n:?} may not get the agent certificate of node {node:?}"
            )));
        }
        let obj = registry.get(Kind::Node, "", node).await?;
        let ip = registered_ip(&obj);
        let CertAndKey { cert_pem, key_pem } =
            self.pki.issue_agent_cert(node, ip).map_err(|e| {
                ApiError::Unavailable(format!("issuing the certificate of node {node}: {e}"))
            })?;
        tracing::info!(%node, ?ip, "issued the agent certificate");
        Ok(AgentCertificate {
            certificate: cert_pem,
            key: key_pem,
            ca: self.pki.ca_cert_pem.clone(),
        })
    }
}

/// The address a Node registered with (its InternalIP).
pub fn registered_ip(node: &serde_json::Value) -> Option<IpAddr> {
    crate::auth::internal_ip(node.pointer("/status/addresses"))?
        .parse()
        .ok()
}

/// Serves `POST nodes/{name}/certificate`.
pub async fn certificate(
    registry: &Registry,
    link: &AgentLink,
    identity: &Identity,
    node: &str,
) -> Result<Response<Body>, ApiError> {
    let cert = link.issue_certificate(registry, identity, node).await?;
    let body = serde_json::to_vec(&cert)
        .map_err(|e| ApiError::Internal(format!("encoding the certificate: {e}")))?;
    Ok(Response::builder()
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body))))
        .unwrap_or_default())
}

/// Forwards `pods/{name}/{sub}` to the agent of the pod's node; `body` is the request's body
/// (exec's stdin).
#[allow(clippy::too_many_arguments)]
pub async fn proxy(
    registry: &Registry,
    link: &AgentLink,
    ns: &str,
    pod_name: &str,
    sub: &str,
    method: &Method,
    query: &str,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let resp = request(
        registry, link, ns, pod_name, sub, method, query, body, false,
    )
    .await?;
    let (parts, body) = resp.into_parts();
    // Chunks are passed on as they come, so `logs -f` follows the agent's stream; an error
    // from the agent ends the stream.
    let frames = body
        .into_data_stream()
        .take_while(|r| futures::future::ready(r.is_ok()))
        .map(|r| Ok::<_, Infallible>(Frame::data(r.unwrap_or_default())));
    Ok(Response::from_parts(
        parts,
        BodyExt::boxed(StreamBody::new(frames)),
    ))
}

/// Opens a streaming connection to the agent of the pod's node for `pods/{name}/{sub}`
/// (`exec`, `attach`, `portforward`): `POST /pods/{uid}/{sub}?{query}` with `Upgrade:
/// podd-stream`, over the same trusted link as [`proxy`]. After the agent's 101 the
/// connection is a byte stream both ways ([`crate::streaming::frames`] for exec and attach,
/// the forwarded TCP connection's bytes for portforward).
pub async fn upgrade(
    registry: &Registry,
    link: &AgentLink,
    ns: &str,
    pod_name: &str,
    sub: &str,
    query: &str,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, ApiError> {
    let resp = request(
        registry,
        link,
        ns,
        pod_name,
        sub,
        &Method::POST,
        query,
        Bytes::new(),
        true,
    )
    .await?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(match status {
            hyper::StatusCode::BAD_REQUEST => ApiError::BadRequest(message),
            _ => ApiError::Unavailable(format!(
                "the agent refused pods/{sub} for {ns}/{pod_name} ({status}): {message}"
            )),
        });
    }
    let upgraded = hyper::upgrade::on(resp).await.map_err(|e| {
        ApiError::Unavailable(format!(
            "switching the agent connection for pods/{sub} of {ns}/{pod_name}: {e}"
        ))
    })?;
    Ok(TokioIo::new(upgraded))
}

/// Sends one request to the agent of the pod's node.
#[allow(clippy::too_many_arguments)]
async fn request(
    registry: &Registry,
    link: &AgentLink,
    ns: &str,
    pod_name: &str,
    sub: &str,
    method: &Method,
    query: &str,
    body: Bytes,
    upgrade: bool,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let pod = registry.get(Kind::Pod, ns, pod_name).await?;
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let node = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "pod {ns}/{pod_name} is not scheduled to a node yet; wait until it runs"
        )));
    }
    let path = if query.is_empty() {
        format!("/pods/{uid}/{sub}")
    } else {
        format!("/pods/{uid}/{sub}?{query}")
    };
    let mut req = Request::builder()
        .method(method.clone())
        .uri(&path)
        .header(hyper::header::HOST, "agent");
    if upgrade {
        req = req.header(hyper::header::CONNECTION, "Upgrade").header(
            hyper::header::UPGRADE,
            crate::streaming::frames::UPGRADE_PROTOCOL,
        );
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| ApiError::Internal(format!("building the agent request: {e}")))?;
    let resp = match &link.local {
        Some(local) if local.node == node => {
            let unavailable =
                unavailable(&node, local.socket.display().to_string(), sub, ns, pod_name);
            let stream = tokio::net::UnixStream::connect(&local.socket)
                .await
                .map_err(|e| unavailable("connect", &e))?;
            send(TokioIo::new(stream), req)
                .await
                .map_err(|e| unavailable("request", &e))?
        }
        _ => {
            let node_obj = registry.get(Kind::Node, "", &node).await?;
            let ip = registered_ip(&node_obj).ok_or_else(|| {
                ApiError::Unavailable(format!(
                    "node {node} registered no InternalIP, so its agent cannot be reached"
                ))
            })?;
            let addr = std::net::SocketAddr::new(ip, link.port);
            let unavailable = unavailable(&node, addr.to_string(), sub, ns, pod_name);
            let tls = link
                .client
                .as_ref()
                .map_err(|e| unavailable("TLS", e))?
                .clone();
            let name = crate::tls::agent_tls_name(&node).map_err(|e| unavailable("TLS", &e))?;
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|e| unavailable("connect", &e))?
                .map_err(|e| unavailable("connect", &e))?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
            )
            .await
            .map_err(|e| unavailable("TLS handshake", &e))?
            .map_err(|e| unavailable("TLS handshake (is it this node's agent, with a certificate from the cluster CA?)", &e))?;
            send(TokioIo::new(stream), req)
                .await
                .map_err(|e| unavailable("request", &e))?
        }
    };
    Ok(resp)
}

fn unavailable<'a>(
    node: &'a str,
    at: String,
    sub: &'a str,
    ns: &'a str,
    pod: &'a str,
) -> impl Fn(&str, &dyn std::fmt::Display) -> ApiError + 'a {
    move |what, e| {
        ApiError::Unavailable(format!(
            "the agent of node {node} at {at} did not answer pods/{sub} for {ns}/{pod}: {what}: {e}"
        ))
    }
}

async fn send<I>(
    io: I,
    req: Request<Full<Bytes>>,
) -> Result<Response<hyper::body::Incoming>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // With upgrades: a streaming request's connection becomes the stream after the 101.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "agent connection closed");
        }
    });
    sender.send_request(req).await
}

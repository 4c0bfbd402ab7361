//! `pods/{name}/log` and `pods/{name}/exec` are served by the agent of the pod's node: the
//! API server finds the node's endpoint (the Node annotation `podd.io/agent-endpoint`, a
//! Unix socket for an agent on this machine or `http://IP:10250`) and forwards the request,
//! streaming the answer back, so `podctl logs -f` and `podctl exec` work across nodes.

use crate::auth::Authenticator;
use crate::error::ApiError;
use crate::http::Body;
use crate::registry::Registry;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use podd_api::Kind;
use std::convert::Infallible;

/// The Node annotation that names the agent's endpoint.
pub const ENDPOINT_ANNOTATION: &str = "podd.io/agent-endpoint";

pub async fn proxy(
    registry: &Registry,
    auth: &Authenticator,
    ns: &str,
    pod_name: &str,
    sub: &str,
    method: &Method,
    query: &str,
) -> Result<Response<Body>, ApiError> {
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
    let node_obj = registry.get(Kind::Node, "", &node).await?;
    let endpoint = node_obj["metadata"]["annotations"][ENDPOINT_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if endpoint.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "node {node} has not published its agent endpoint ({ENDPOINT_ANNOTATION}); is its agent running?"
        )));
    }
    let path = if query.is_empty() {
        format!("/pods/{uid}/{sub}")
    } else {
        format!("/pods/{uid}/{sub}?{query}")
    };
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        ApiError::Unavailable(format!(
            "the agent of node {node} at {endpoint} did not answer pods/{sub} for {ns}/{pod_name}: {what}: {e}"
        ))
    };
    let mut req = Request::builder()
        .method(method.clone())
        .uri(&path)
        .header(hyper::header::HOST, "agent");
    let resp = if let Some(sock) = endpoint.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(sock)
            .await
            .map_err(|e| unavailable("connect", &e))?;
        send(
            TokioIo::new(stream),
            req.body(Empty::<Bytes>::new())
                .map_err(|e| unavailable("request", &e))?,
        )
        .await
        .map_err(|e| unavailable("request", &e))?
    } else if let Some(addr) = endpoint.strip_prefix("http://") {
        let token = auth
            .issue_node_token(&node)
            .map_err(|e| unavailable("the node's token", &e))?;
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        let stream = tokio::net::TcpStream::connect(addr.trim_end_matches('/'))
            .await
            .map_err(|e| unavailable("connect", &e))?;
        let _ = stream.set_nodelay(true);
        send(
            TokioIo::new(stream),
            req.body(Empty::<Bytes>::new())
                .map_err(|e| unavailable("request", &e))?,
        )
        .await
        .map_err(|e| unavailable("request", &e))?
    } else {
        return Err(ApiError::Unavailable(format!(
            "node {node} publishes an agent endpoint podd cannot use: {endpoint:?}"
        )));
    };
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

async fn send<I>(
    io: I,
    req: Request<Empty<Bytes>>,
) -> Result<Response<hyper::body::Incoming>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "agent connection closed");
        }
    });
    sender.send_request(req).await
}

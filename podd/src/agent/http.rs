//! The agent's own HTTP endpoint: container logs, exec, and Prometheus metrics, for the API
//! server's proxy of `pods/{name}/log|exec` and for Prometheus.
//!
//! Served on a root-only Unix socket `<run_dir>/agent.sock` (trusted, like the API socket) and,
//! on a joined node, on TCP `<node_ip>:10250` with TLS only: the agent presents the serving
//! certificate the server issued at join and requires a client certificate from the cluster CA
//! with clientAuth use, which only the API server has. Nothing else (plain HTTP, TLS without
//! that certificate, a bearer token) is accepted on TCP.
//!
//! - `GET /pods/{uid}/log?container=C&follow=true&tailLines=N`: the container's log as text,
//!   streamed while following.
//! - `POST /pods/{uid}/exec?container=C&command=A&command=B`: runs the command in the container
//!   and answers `{"stdout":"...","stderr":"...","exitCode":N}`.
//! - `GET /metrics`: Prometheus text.
//! - `GET /healthz`: `ok`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use podd_control_plane::streaming::frames;
use podd_pod::logs::LogReader;
use podd_pod::manager::PodManager;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use podd_control_plane::conn_limits::{
    ConnGate, ConnPermit, process_limits as limits, serve_http1,
};

pub use podd_control_plane::agent_proxy::AGENT_PORT;

type Body = BoxBody<Bytes, Infallible>;

pub struct AgentHttp {
    pub manager: Arc<PodManager>,
    /// The TLS config of the TCP listener (this node's certificate, client certificates
    /// required); None disables the TCP listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub lb: Option<Arc<Mutex<podd_lb::LoadBalancer>>>,
}

/// The agent socket's path under the run dir.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("agent.sock")
}

impl AgentHttp {
    /// Binds the Unix socket (and TCP with TLS when there is a TLS config and a node IP), then
    /// serves in background tasks. Returns where it listens, for the log.
    pub fn start(
        self,
        run_dir: &Path,
        node_ip: Option<std::net::Ipv4Addr>,
    ) -> std::io::Result<String> {
        let this = Arc::new(self);
        let path = socket_path(run_dir);
        std::fs::create_dir_all(run_dir)?;
        let _ = std::fs::remove_file(&path);
        let unix = tokio::net::UnixListener::bind(&path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let mut endpoint = format!("unix://{}", path.display());
        let t = this.clone();
        // Connection caps and timeouts: podd_control_plane::conn_limits.
        let unix_gate = ConnGate::for_connections("connections to the agent socket", limits());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = unix.accept().await else {
                    // Out of fds and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Over the cap, the stream is dropped (closed) at once.
                let Ok(permit) = unix_gate.admit(None) else {
                    continue;
                };
                serve_conn(t.clone(), TokioIo::new(stream), permit);
            }
        });
        if let (Some(tls), Some(ip)) = (&this.tls, node_ip) {
            let addr = SocketAddr::from((ip, AGENT_PORT));
            let std_l = std::net::TcpListener::bind(addr)?;
            std_l.set_nonblocking(true)?;
            let tcp = tokio::net::TcpListener::from_std(std_l)?;
            endpoint = format!("{endpoint} and https://{addr} (client certificate required)");
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            let t = this.clone();
            let gate = ConnGate::for_connections("connections to the agent port", limits());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, peer)) = tcp.accept().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    // Over the caps, the stream is dropped (closed) at once, before any read.
                    let Ok(permit) = gate.admit(Some(peer.ip())) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    serve_tls_conn(t.clone(), stream, acceptor.clone(), permit);
                }
            });
        }
        tracing::info!(%endpoint, "agent endpoint serving logs, exec and metrics");
        Ok(endpoint)
    }
}

/// A TCP connection: served only after a TLS handshake in which the client proved a
/// cluster-CA client certificate (rustls refuses the handshake otherwise).
fn serve_tls_conn(
    this: Arc<AgentHttp>,
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    permit: ConnPermit,
) {
    tokio::spawn(async move {
        let peer = stream.peer_addr().ok();
        let handshake_timeout = limits().tls_handshake_timeout;
        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve_conn(this, TokioIo::new(tls), permit),
            Ok(Err(e)) => {
                tracing::debug!(?peer, error = %e, "agent endpoint: TLS handshake refused")
            }
            Err(_) => tracing::debug!(?peer, "agent endpoint: TLS handshake timed out"),
        }
    });
}

fn serve_conn<I>(this: Arc<AgentHttp>, io: I, permit: ConnPermit)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        // Idle and header timeouts; the permit holds the connection's slot until it ends.
        serve_http1(io, limits(), svc).await.log("agent");
        drop(permit);
    });
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": message, "code": status.as_u16()})
        .to_string(),
    )
}

/// The query's values of `key`, percent-decoded.
fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the API server asks to switch this connection to a stream.
fn is_stream_upgrade(headers: &hyper::HeaderMap) -> bool {
    let has = |name, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    has(hyper::header::CONNECTION, "upgrade")
        && has(hyper::header::UPGRADE, frames::UPGRADE_PROTOCOL)
}

/// `pods/log`'s options, as kubectl sends them.
#[derive(Debug, Clone, Default, PartialEq)]
struct LogOptions {
    follow: bool,
    tail: Option<usize>,
    /// Records at or after this time (normalized, see [`comparable_time`]).
    since: Option<String>,
    previous: bool,
    timestamps: bool,
    limit_bytes: Option<usize>,
}

impl LogOptions {
    fn parse(query: &str) -> Result<LogOptions, String> {
        let one = |k: &str| query_values(query, k).into_iter().next();
        let flag = |k: &str| one(k).is_some_and(|v| v == "true" || v == "1");
        let num = |k: &str| -> Result<Option<u64>, String> {
            one(k)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| format!("{k}={v:?} is not a number"))
                })
                .transpose()
                .map(|v| v.map(|n| n.max(0) as u64))
        };
        let since = match (num("sinceSeconds")?, one("sinceTime")) {
            (Some(_), Some(_)) => {
                return Err("at most one of sinceTime or sinceSeconds may be given".into());
            }
            (Some(secs), None) => {
                let t = std::time::SystemTime::now()
                    .checked_sub(Duration::from_secs(secs))
                    .unwrap_or(std::time::UNIX_EPOCH);
                Some(comparable_time(&podd_pod::timefmt::rfc3339_nanos(t)))
            }
            (None, Some(t)) => Some(comparable_time(&t)),
            (None, None) => None,
        };
        Ok(LogOptions {
            follow: flag("follow"),
            // A negative tailLines (kubectl's default -1) means all.
            tail: one("tailLines")
                .and_then(|t| t.parse::<i64>().ok())
                .filter(|t| *t >= 0)
                .map(|t| t as usize),
            since,
            previous: flag("previous"),
            timestamps: flag("timestamps"),
            limit_bytes: num("limitBytes")?.map(|n| n as usize),
        })
    }

    fn keeps(&self, l: &podd_pod::logs::LogLine) -> bool {
        self.since
            .as_ref()
            .is_none_or(|s| comparable_time(&l.timestamp) >= *s)
    }

    fn render(&self, l: &podd_pod::logs::LogLine, out: &mut String) {
        if self.timestamps {
            out.push_str(&l.timestamp);
            out.push(' ');
        }
        out.push_str(&l.text);
        if l.full {
            out.push('\n');
        }
    }
}

/// An RFC 3339 UTC time as a string that sorts by time: `YYYY-MM-DDTHH:MM:SS.fffffffff`
/// (the fraction padded to nanoseconds).
fn comparable_time(t: &str) -> String {
    let t = t.trim().trim_end_matches('Z').trim_end_matches("+00:00");
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    let frac: String = frac.chars().filter(char::is_ascii_digit).take(9).collect();
    format!("{secs}.{frac:0<9}")
}

/// The most stdin an exec takes (the server bounds it the same way).
const MAX_EXEC_STDIN: usize = 64 << 20;

/// An exec request's body: the command's stdin.
async fn read_stdin(req: Request<Incoming>) -> Result<Bytes, Box<Response<Body>>> {
    let body = http_body_util::Limited::new(req.into_body(), MAX_EXEC_STDIN);
    match body.collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "reading the exec's stdin (at most {} MiB): {e}",
                MAX_EXEC_STDIN >> 20
            ),
        ))),
    }
}

impl AgentHttp {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = req.method().clone();
        match (&method, parts.as_slice()) {
            (&Method::GET, ["healthz"]) => full(StatusCode::OK, "text/plain", "ok\n"),
            (&Method::GET, ["metrics"]) => {
                full(StatusCode::OK, "text/plain; version=0.0.4", self.metrics())
            }
            (&Method::GET, ["pods", uid, "log"]) => self.log(uid, &query),
            (&Method::POST, ["pods", uid, sub @ ("exec" | "attach" | "portforward")])
                if is_stream_upgrade(req.headers()) =>
            {
                let (uid, sub) = (uid.to_string(), sub.to_string());
                self.stream(req, &uid, &sub, &query)
            }
            (&Method::POST, ["pods", uid, "exec"]) => {
                let uid = uid.to_string();
                let stdin = match read_stdin(req).await {
                    Ok(b) => b,
                    Err(r) => return *r,
                };
                self.exec(&uid, &query, stdin).await
            }
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("no route for {} {path}", req.method()),
            ),
        }
    }

    /// The container named in the query, or the pod's first container.
    fn container(&self, uid: &str, query: &str) -> Result<String, Box<Response<Body>>> {
        let Some(pod) = self.manager.pod(uid) else {
            return Err(Box::new(error(
                StatusCode::NOT_FOUND,
                &format!("pod {uid} does not run on this node"),
            )));
        };
        let wanted = query_values(query, "container").into_iter().next();
        let containers = pod.spec.as_ref().map_or(&[][..], |s| &s.containers[..]);
        match wanted {
            Some(c) if containers.iter().any(|x| x.name == c) => Ok(c),
            Some(c) => Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "pod {} has no container {c:?}; its containers: {}",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    containers
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))),
            None => containers.first().map(|c| c.name.clone()).ok_or_else(|| {
                Box::new(error(StatusCode::BAD_REQUEST, "the pod has no containers"))
            }),
        }
    }

    fn log(&self, uid: &str, query: &str) -> Response<Body> {
        let container = match self.container(uid, query) {
            Ok(c) => c,
            Err(r) => return *r,
        };
        let opts = match LogOptions::parse(query) {
            Ok(o) => o,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let tail = opts.tail;
        let follow = opts.follow;
        let path = if opts.previous {
            // The log of the container's previous run (the shim keeps it when it restarts).
            let p = podd_pod::logs::previous_path(&self.manager.log_path(uid, &container));
            if !p.exists() {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("previous terminated container {container:?} in pod {uid} not found"),
                );
            }
            p
        } else {
            self.manager.log_path(uid, &container)
        };
        let reader = LogReader::new(&path);
        if !follow || opts.previous {
            return match reader.read(None) {
                Ok(lines) => {
                    let mut kept: Vec<_> = lines.iter().filter(|l| opts.keeps(l)).collect();
                    if let Some(n) = tail {
                        kept.drain(..kept.len().saturating_sub(n));
                    }
                    let mut text = String::new();
                    for l in kept {
                        opts.render(l, &mut text);
                    }
                    if let Some(limit) = opts.limit_bytes
                        && text.len() > limit
                    {
                        let mut cut = limit;
                        while !text.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        text.truncate(cut);
                    }
                    full(StatusCode::OK, "text/plain", text)
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            };
        }
        // Following: a blocking reader thread feeds a channel that the response streams; it
        // stops when the client goes away (the channel closes) or the pod is removed.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        let closed = Arc::new(AtomicBool::new(false));
        let (m, uid) = (self.manager.clone(), uid.to_string());
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || {
            let closed2 = closed.clone();
            let _ = reader.follow(
                tail,
                Duration::from_millis(100),
                |l| {
                    if !opts.keeps(l) {
                        return true;
                    }
                    let mut text = String::new();
                    opts.render(l, &mut text);
                    let ok = tx.blocking_send(Ok(Frame::data(Bytes::from(text)))).is_ok();
                    if !ok {
                        closed2.store(true, Ordering::Relaxed);
                    }
                    ok
                },
                || closed.load(Ordering::Relaxed) || tx.is_closed() || m.pod(&uid).is_none(),
            );
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        if let Ok(v) = "text/plain".parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    }

    /// Runs a command in a container to completion, with `stdin` (the request's body) as its
    /// input; answers its exit code and output (as text, and as base64 for binary output such
    /// as `kubectl cp`'s tar stream).
    async fn exec(&self, uid: &str, query: &str, stdin: Bytes) -> Response<Body> {
        use base64::Engine as _;
        let container = match self.container(uid, query) {
            Ok(c) => c,
            Err(r) => return *r,
        };
        let argv = query_values(query, "command");
        if argv.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "exec needs the command: ?command=ARG0&command=ARG1...",
            );
        }
        let mut cmd = self.manager.exec_command(uid, &container, &argv);
        cmd.stdin(if stdin.is_empty() {
            std::process::Stdio::null()
        } else {
            std::process::Stdio::piped()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let out = tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn()?;
            if let Some(mut input) = child.stdin.take() {
                // Written from its own thread, so a command that writes before it reads all
                // its input cannot deadlock against us.
                std::thread::spawn(move || {
                    use std::io::Write;
                    let _ = input.write_all(&stdin);
                });
            }
            child.wait_with_output()
        })
        .await;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        match out {
            Ok(Ok(o)) => full(
                StatusCode::OK,
                "application/json",
                serde_json::json!({
                    "stdout": String::from_utf8_lossy(&o.stdout),
                    "stderr": String::from_utf8_lossy(&o.stderr),
                    "stdoutBase64": b64(&o.stdout),
                    "stderrBase64": b64(&o.stderr),
                    "exitCode": o.status.code().unwrap_or(-1),
                })
                .to_string(),
            ),
            Ok(Err(e)) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("running podd-shim exec: {e}"),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    /// A streaming request (`Upgrade: podd-stream`): checks it, answers 101 and serves the
    /// upgraded connection in a task (see [`super::stream`]).
    fn stream(
        self: Arc<Self>,
        req: Request<Incoming>,
        uid: &str,
        sub: &str,
        query: &str,
    ) -> Response<Body> {
        let flag = |k: &str| {
            query_values(query, k)
                .first()
                .is_some_and(|v| v == "true" || v == "1")
        };
        enum Job {
            Exec(super::stream::ExecRequest),
            Attach(super::attach::AttachRequest),
            Forward(PathBuf, u16),
        }
        let job = match sub {
            "portforward" => {
                if self.manager.pod(uid).is_none() {
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("pod {uid} does not run on this node"),
                    );
                }
                let Some(port) = query_values(query, "port")
                    .first()
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p > 0)
                else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "portforward needs ?port=N (1-65535)",
                    );
                };
                let Some(netns) = self.manager.pod_netns(uid) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("pod {uid} has no network namespace here (is it running?)"),
                    );
                };
                Job::Forward(netns, port)
            }
            _ => {
                let container = match self.container(uid, query) {
                    Ok(c) => c,
                    Err(r) => return *r,
                };
                if sub == "attach" {
                    Job::Attach(super::attach::AttachRequest {
                        uid: uid.to_string(),
                        container,
                        stdin: flag("stdin"),
                    })
                } else {
                    let argv = query_values(query, "command");
                    if argv.is_empty() {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "exec needs the command: ?command=ARG0&command=ARG1...",
                        );
                    }
                    Job::Exec(super::stream::ExecRequest {
                        uid: uid.to_string(),
                        container,
                        argv,
                        stdin: flag("stdin"),
                        tty: flag("tty"),
                    })
                }
            }
        };
        // Port forwarding connects before answering, so a closed port is an HTTP error.
        let manager = self.manager.clone();
        let sub_name = sub.to_string();
        tokio::spawn(async move {
            let conn = match hyper::upgrade::on(req).await {
                Ok(u) => TokioIo::new(u),
                Err(e) => {
                    tracing::debug!(error = %e, sub = %sub_name, "agent stream upgrade failed");
                    return;
                }
            };
            match job {
                Job::Exec(r) => super::stream::exec(conn, manager, r).await,
                Job::Attach(r) => super::attach::attach(conn, manager, r).await,
                Job::Forward(netns, port) => {
                    match super::stream::connect_in_pod(&netns, port).await {
                        Ok(tcp) => super::stream::portforward(conn, tcp).await,
                        Err(e) => {
                            // The API server reports it on kubectl's error stream when the
                            // byte stream ends at once.
                            tracing::info!(error = %e, "port forward");
                        }
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        r.headers_mut().insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static(frames::UPGRADE_PROTOCOL),
        );
        r
    }

    /// Prometheus text: pods on the node, container restarts, and the service load balancer's
    /// counters.
    fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let uids = self.manager.list();
        let _ = writeln!(
            out,
            "# HELP podd_pods Pods on this node.\n# TYPE podd_pods gauge"
        );
        let _ = writeln!(out, "podd_pods {}", uids.len());
        let _ = writeln!(
            out,
            "# HELP podd_container_restarts_total Container restarts.\n# TYPE podd_container_restarts_total counter"
        );
        for uid in &uids {
            let (Some(pod), Some((status, _))) = (self.manager.pod(uid), self.manager.status(uid))
            else {
                continue;
            };
            for c in &status.containers {
                let _ = writeln!(
                    out,
                    "podd_container_restarts_total{{namespace=\"{}\",pod=\"{}\",container=\"{}\"}} {}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    c.name,
                    c.restart_count
                );
            }
        }
        if let Some(lb) = &self.lb
            && let Ok(lb) = lb.lock()
            && let Ok(stats) = lb.stats()
        {
            let _ = writeln!(
                out,
                "# HELP podd_lb_connections_total Connections the service load balancer sent to a backend.\n# TYPE podd_lb_connections_total counter"
            );
            for (fe, st) in &stats {
                let _ = writeln!(
                    out,
                    "podd_lb_connections_total{{vip=\"{}\",port=\"{}\",protocol=\"{}\"}} {}",
                    fe.vip,
                    fe.port,
                    format!("{:?}", fe.protocol).to_lowercase(),
                    st.connections
                );
            }
            let _ = writeln!(
                out,
                "# HELP podd_lb_no_backend_total Connections refused for want of a ready backend.\n# TYPE podd_lb_no_backend_total counter"
            );
            for (fe, st) in &stats {
                let _ = writeln!(
                    out,
                    "podd_lb_no_backend_total{{vip=\"{}\",port=\"{}\",protocol=\"{}\"}} {}",
                    fe.vip,
                    fe.port,
                    format!("{:?}", fe.protocol).to_lowercase(),
                    st.no_backend
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_options_as_kubectl_sends_them() {
        let o = LogOptions::parse(
            "container=c&follow=true&tailLines=5&timestamps=true&previous=true&limitBytes=10",
        )
        .unwrap();
        assert!(o.follow && o.timestamps && o.previous);
        assert_eq!((o.tail, o.limit_bytes, o.since), (Some(5), Some(10), None));
        // kubectl's "all lines" is -1.
        assert_eq!(LogOptions::parse("tailLines=-1").unwrap().tail, None);
        let o = LogOptions::parse("sinceTime=2026-01-02T03%3A04%3A05Z").unwrap();
        let line = |ts: &str| podd_pod::logs::LogLine {
            timestamp: ts.into(),
            stream: podd_pod::logs::Stream::Stdout,
            full: true,
            text: "x".into(),
        };
        assert!(o.keeps(&line("2026-01-02T03:04:05.000000001Z")));
        assert!(o.keeps(&line("2026-01-02T03:04:05Z")));
        assert!(!o.keeps(&line("2026-01-02T03:04:04.999999999Z")));
        let recent = LogOptions::parse("sinceSeconds=60").unwrap();
        assert!(!recent.keeps(&line("2020-01-01T00:00:00Z")));
        assert!(LogOptions::parse("sinceSeconds=1&sinceTime=2026-01-01T00:00:00Z").is_err());
        assert!(LogOptions::parse("limitBytes=x").is_err());
        let mut out = String::new();
        LogOptions::parse("timestamps=true")
            .unwrap()
            .render(&line("2026-01-02T03:04:05.5Z"), &mut out);
        assert_eq!(out, "2026-01-02T03:04:05.5Z x\n");
    }

    #[test]
    fn query_values_decode() {
        let q = "container=web&command=sh&command=-c&command=echo%20hi%3Dx&follow=true";
        assert_eq!(query_values(q, "command"), ["sh", "-c", "echo hi=x"]);
        assert_eq!(query_values(q, "container"), ["web"]);
        assert!(query_values(q, "tailLines").is_empty());
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}

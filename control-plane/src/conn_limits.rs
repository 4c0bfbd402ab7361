//! Bounds on what clients may hold open on the API server (TLS :6443 and the Unix socket) and
//! on the agent endpoint (:10250): connections, their timeouts, and watches.
//!
//! Without them, idle and half-sent connections were never closed, and 20,000 of them
//! exhausted the server's file descriptors. Each listener now:
//! - admits a connection only under a total cap and a per-source-IP cap (a [`Gate`]); an excess
//!   connection is closed at once, before a TLS handshake or any read, and logged at a
//!   rate-limited level;
//! - closes a TLS connection whose handshake is not done within `tls_handshake_timeout`;
//! - closes a connection whose request headers are not complete within `header_read_timeout`
//!   of their first byte (slowloris), and a keep-alive connection with no request in flight
//!   after `idle_timeout` without a new request starting ([`serve_http1`]);
//! - bounds reading a request body by `body_read_timeout` (the API server's [`crate::http`]).
//!
//! A request in flight (a long watch, a followed log, an exec) is never cut by the idle or
//! header timers. Watches are capped per identity and in total; an excess watch gets 429
//! TooManyRequests with a Retry-After.

use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The limits of one server. The defaults are documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// A request's headers must be complete this long after their first byte arrives.
    /// Default 10 s (Go servers' usual `ReadHeaderTimeout`).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no new request started is closed after
    /// this long. Default 90 s (Go's `IdleConnTimeout`; clients retry on a fresh connection).
    pub idle_timeout: Duration,
    /// A TLS handshake must finish within this. Default 10 s (Go's `TLSHandshakeTimeout`).
    pub tls_handshake_timeout: Duration,
    /// Reading a request body (at most 3 MiB) must finish within this. Default 60 s
    /// (kube-apiserver's request timeout).
    pub body_read_timeout: Duration,
    /// Connections open at once from one source address. Default 256 (an agent holds about
    /// ten; a NATed admin network a few dozen).
    pub max_connections_per_ip: usize,
    /// Connections open at once on one listener. Default 4096, and never more than a third
    /// of the process's soft limit on open files (podd.service sets `LimitNOFILE=1048576`),
    /// so the cap, not EMFILE, decides.
    pub max_connections: usize,
    /// Watches open at once by one identity (a node, the admin). Default 100 (an agent holds
    /// about five). Local root over the Unix socket counts only towards the total.
    pub max_watches_per_identity: usize,
    /// Watches open at once on the server. Default 2048.
    pub max_watches: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            tls_handshake_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections_per_ip: 256,
            max_connections: 4096,
            max_watches_per_identity: 100,
            max_watches: 2048,
        }
    }
}

static PROCESS_LIMITS: OnceLock<ConnLimits> = OnceLock::new();

/// The limits of listeners that have no configuration of their own (the agent endpoint):
/// what [`set_process_limits`] set, else the defaults.
pub fn process_limits() -> &'static ConnLimits {
    PROCESS_LIMITS.get_or_init(ConnLimits::default)
}

/// Sets [`process_limits`] once, at start-up (podd's flags). Later calls are ignored.
pub fn set_process_limits(limits: ConnLimits) {
    let _ = PROCESS_LIMITS.set(limits);
}

/// A warning at most every 10 s, counting what it did not print.
pub struct RateLimitedLog {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    pub const fn new() -> Self {
        RateLimitedLog {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    pub fn warn(&self, what: &str, detail: &str) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(suppressed_since_last = suppressed, "{what}: {detail}");
    }
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        Self::new()
    }
}

struct GateState<K> {
    total: usize,
    by_key: HashMap<K, usize>,
}

/// Counts what is held open, in total and per key (a source IP, an identity), and refuses
/// beyond the caps. A [`Permit`] gives its slot back when dropped.
pub struct Gate<K: Hash + Eq + Clone> {
    what: &'static str,
    max_total: usize,
    max_per_key: usize,
    state: Mutex<GateState<K>>,
    log: RateLimitedLog,
}

/// Why a [`Gate`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{what}: {max} are open already, the most allowed")]
    Total { what: &'static str, max: usize },
    #[error("{what}: {max} are open already from {key}, the most allowed for one")]
    PerKey {
        what: &'static str,
        key: String,
        max: usize,
    },
}

impl<K: Hash + Eq + Clone + std::fmt::Display> Gate<K> {
    pub fn new(what: &'static str, max_total: usize, max_per_key: usize) -> Arc<Self> {
        Arc::new(Gate {
            what,
            max_total,
            max_per_key,
            state: Mutex::new(GateState {
                total: 0,
                by_key: HashMap::new(),
            }),
            log: RateLimitedLog::new(),
        })
    }

    /// Takes a slot for `key` (None counts only towards the total). A refusal is logged,
    /// rate-limited.
    pub fn admit(self: &Arc<Self>, key: Option<K>) -> Result<Permit<K>, Refused> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let refused = if st.total >= self.max_total {
            Some(Refused::Total {
                what: self.what,
                max: self.max_total,
            })
        } else if let Some(k) = &key
            && st.by_key.get(k).copied().unwrap_or(0) >= self.max_per_key
        {
            Some(Refused::PerKey {
                what: self.what,
                key: k.to_string(),
                max: self.max_per_key,
            })
        } else {
            None
        };
        if let Some(r) = refused {
            drop(st);
            self.log.warn("refused", &r.to_string());
            return Err(r);
        }
        st.total += 1;
        if let Some(k) = &key {
            *st.by_key.entry(k.clone()).or_default() += 1;
        }
        Ok(Permit {
            gate: self.clone(),
            key,
        })
    }

    /// How many are open (in total, and for `key`).
    pub fn open(&self, key: Option<&K>) -> (usize, usize) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (
            st.total,
            key.and_then(|k| st.by_key.get(k).copied()).unwrap_or(0),
        )
    }
}

/// One admitted connection or watch; dropping it frees the slot.
pub struct Permit<K: Hash + Eq + Clone> {
    gate: Arc<Gate<K>>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut st = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        st.total = st.total.saturating_sub(1);
        if let Some(k) = &self.key
            && let Some(n) = st.by_key.get_mut(k)
        {
            *n -= 1;
            if *n == 0 {
                st.by_key.remove(k);
            }
        }
    }
}

/// The connection gate of one listener, keyed by source address.
pub type ConnGate = Gate<IpAddr>;
/// One admitted connection.
pub type ConnPermit = Permit<IpAddr>;

impl ConnGate {
    pub fn for_connections(what: &'static str, limits: &ConnLimits) -> Arc<ConnGate> {
        let mut max = limits.max_connections;
        if let Some(soft) = soft_nofile_limit()
            && max > soft / 3
        {
            tracing::info!(
                listener = what,
                configured = max,
                soft_nofile = soft,
                "capping connections at a third of the open file limit"
            );
            max = (soft / 3).max(1);
        }
        Gate::new(what, max, limits.max_connections_per_ip)
    }
}

/// The soft RLIMIT_NOFILE, from /proc/self/limits (None when unlimited or unreadable).
fn soft_nofile_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Completes a TLS handshake within `limits.tls_handshake_timeout`.
pub async fn tls_accept<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: IO,
    limits: &ConnLimits,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the TLS handshake did not finish within {:?}",
                limits.tls_handshake_timeout
            ),
        )),
    }
}

/// Where a connection stands, for its idle and header timers.
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    /// Requests whose response is not yet fully sent.
    in_flight: usize,
    /// When the connection last had nothing in flight (its start, or the end of a response).
    idle_since: Instant,
    /// The first byte read since then: a request has started and its headers must follow.
    first_byte: Option<Instant>,
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bytes_read(&self) {
        let mut st = self.lock();
        if st.in_flight == 0 && st.first_byte.is_none() {
            st.first_byte = Some(Instant::now());
            drop(st);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut st = self.lock();
        st.in_flight += 1;
        st.first_byte = None;
        InFlight(self.clone())
    }

    /// When the connection must be closed, if nothing happens before: None while a request
    /// is in flight.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        let st = self.lock();
        if st.in_flight > 0 {
            return None;
        }
        Some(match st.first_byte {
            Some(t) => t + limits.header_read_timeout,
            None => st.idle_since + limits.idle_timeout,
        })
    }
}

/// A request in flight on a connection, until its response body is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        if st.in_flight == 0 {
            st.idle_since = Instant::now();
            st.first_byte = None;
        }
        drop(st);
        self.0.changed.notify_one();
    }
}

/// Resolves when the connection has been idle, or slow with its headers, for too long.
async fn expired(activity: Arc<Activity>, limits: ConnLimits) -> &'static str {
    loop {
        let notified = activity.changed.notified();
        match activity.deadline(&limits) {
            None => notified.await,
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(d.into()) => {
                        if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                            return if activity.lock().first_byte.is_some() {
                                "the request headers were not complete in time"
                            } else {
                                "the connection was idle too long"
                            };
                        }
                    }
                    _ = notified => {}
                }
            }
        }
    }
}

/// An IO that tells [`Activity`] when bytes arrive.
struct ActivityIo<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for ActivityIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // Read through a small buffer of our own to see how much came (the cursor does not
        // tell without unsafe code); the copy is cheap next to the syscall.
        let mut scratch = [0u8; 8192];
        let n = buf.remaining().min(scratch.len());
        let mut rb = hyper::rt::ReadBuf::new(&mut scratch[..n]);
        match Pin::new(&mut this.inner).poll_read(cx, rb.unfilled()) {
            Poll::Ready(Ok(())) => {
                let got = rb.filled();
                if !got.is_empty() {
                    this.activity.bytes_read();
                }
                buf.put_slice(got);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for ActivityIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

/// A response body that keeps its request in flight until it is sent (or dropped).
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves HTTP/1.1 on `io` with `service`, closing the connection when it is idle longer than
/// `idle_timeout` or a request's headers take longer than `header_read_timeout`. Returns how
/// the connection ended.
pub async fn serve_http1<I, S, B>(io: I, limits: &ConnLimits, service: S) -> ConnEnd
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity {
        state: Mutex::new(ActivityState {
            in_flight: 0,
            idle_since: Instant::now(),
            first_byte: None,
        }),
        changed: Notify::new(),
    });
    let io = ActivityIo {
        inner: io,
        activity: activity.clone(),
    };
    let tracker = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let in_flight = tracker.request_started();
        let fut = service.call(req);
        async move {
            let resp = fut.await?;
            Ok::<_, S::Error>(resp.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // hyper's own header timer starts as soon as it waits for a request (idle included);
        // ours start at the first byte. Hers is only a backstop.
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout)
        .serve_connection(io, svc)
        // `kubectl exec` upgrades to a WebSocket; the upgraded stream leaves these limits.
        .with_upgrades();
    tokio::select! {
        r = conn => match r {
            Ok(()) => ConnEnd::Closed,
            Err(e) => ConnEnd::Error(e),
        },
        why = expired(activity, limits.clone()) => ConnEnd::TimedOut(why),
    }
}

/// How [`serve_http1`] ended.
#[derive(Debug)]
pub enum ConnEnd {
    Closed,
    Error(hyper::Error),
    /// Closed by the server: idle, or headers too slow.
    TimedOut(&'static str),
}

impl ConnEnd {
    /// Logs the end at debug level (a timeout is routine, not an incident).
    pub fn log(&self, listener: &str) {
        match self {
            ConnEnd::Closed => {}
            ConnEnd::Error(e) => tracing::debug!(listener, error = %e, "connection ended"),
            ConnEnd::TimedOut(why) => tracing::debug!(listener, "closed a connection: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_caps_total_and_per_key_and_frees_on_drop() {
        let g: Arc<Gate<String>> = Gate::new("watches", 3, 2);
        let a1 = g.admit(Some("a".into())).unwrap();
        let _a2 = g.admit(Some("a".into())).unwrap();
        assert!(matches!(
            g.admit(Some("a".into())),
            Err(Refused::PerKey { .. })
        ));
        let _b = g.admit(Some("b".into())).unwrap();
        assert!(matches!(g.admit(None), Err(Refused::Total { .. })));
        drop(a1);
        assert_eq!(g.open(Some(&"a".to_string())), (2, 1));
        let _a3 = g.admit(Some("a".into())).unwrap();
    }

    #[test]
    fn defaults_are_documented_values() {
        let d = ConnLimits::default();
        assert_eq!(d.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.idle_timeout, Duration::from_secs(90));
        assert_eq!(d.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(d.max_connections_per_ip, 256);
        assert_eq!(d.max_connections, 4096);
        assert_eq!(d.max_watches_per_identity, 100);
        assert_eq!(d.max_watches, 2048);
    }
}

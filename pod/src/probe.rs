//! Readiness and liveness probes: the threshold state machine, and the TCP and HTTP checks.
//!
//! The checks run on a thread that has already entered the pod's network namespace, so they
//! reach the container on its own address; exec probes run through the runtime.

use crate::shim::Probe;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// Tracks one probe of one container across its runs.
#[derive(Debug, Clone)]
pub struct ProbeState {
    probe: Probe,
    started: Instant,
    last_run: Option<Instant>,
    successes: u32,
    failures: u32,
    /// The verdict: for readiness, "ready"; for liveness, "alive". Readiness starts false
    /// and liveness true, as in Kubernetes.
    passing: bool,
}

impl ProbeState {
    pub fn readiness(probe: Probe, started: Instant) -> ProbeState {
        ProbeState::new(probe, started, false)
    }

    pub fn liveness(probe: Probe, started: Instant) -> ProbeState {
        ProbeState::new(probe, started, true)
    }

    fn new(probe: Probe, started: Instant, passing: bool) -> ProbeState {
        ProbeState {
            probe,
            started,
            last_run: None,
            successes: 0,
            failures: 0,
            passing,
        }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Whether a check is due at `now`: after the initial delay, once per period.
    pub fn due(&self, now: Instant) -> bool {
        let delay = Duration::from_secs(u64::from(self.probe.initial_delay_seconds));
        if now < self.started + delay {
            return false;
        }
        match self.last_run {
            None => true,
            Some(t) => now >= t + Duration::from_secs(u64::from(self.probe.period().max(1))),
        }
    }

    /// Records a check's outcome; returns true when the verdict changed.
    pub fn record(&mut self, now: Instant, outcome: Outcome) -> bool {
        self.last_run = Some(now);
        let before = self.passing;
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.probe.successes() {
                    self.passing = true;
                }
            }
            Outcome::Failure => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= self.probe.failures() {
                    self.passing = false;
                }
            }
        }
        before != self.passing
    }
}

/// A TCP probe: the port accepts a connection within the timeout.
pub fn check_tcp(ip: IpAddr, port: u16, timeout: Duration) -> Outcome {
    match TcpStream::connect_timeout(&SocketAddr::new(ip, port), timeout) {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    }
}

/// An HTTP probe: `GET path` answers with a status from 200 to 399 within the timeout.
pub fn check_http(ip: IpAddr, port: u16, path: &str, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, port), timeout)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left))?;
        s.set_write_timeout(Some(left))?;
        let path = if path.is_empty() { "/" } else { path };
        // One write: a request split over several segments can race the server's reply.
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: podd-probe\r\nConnection: close\r\n\r\n"
        );
        s.write_all(request.as_bytes())?;
        let mut head = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let r = s.read(&mut head[n..])?;
            if r == 0 {
                break;
            }
            n += r;
        }
        Ok(http_status_ok(&head[..n]))
    };
    match attempt() {
        Ok(true) => Outcome::Success,
        _ => Outcome::Failure,
    }
}

/// Parses "HTTP/1.x NNN" and accepts 2xx and 3xx.
fn http_status_ok(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => (200..400).contains(&code),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn probe(period: u32, failures: u32, successes: u32, delay: u32) -> Probe {
        Probe {
            initial_delay_seconds: delay,
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            success_threshold: Some(successes),
            ..Probe::default()
        }
    }

    #[test]
    fn readiness_needs_successes_and_drops_after_failures() {
        let t0 = Instant::now();
        let mut s = ProbeState::readiness(probe(1, 2, 2, 0), t0);
        assert!(!s.passing());
        assert!(!s.record(t0, Outcome::Success));
        assert!(
            s.record(t0, Outcome::Success),
            "second success flips to ready"
        );
        assert!(!s.record(t0, Outcome::Failure), "one failure is tolerated");
        assert!(s.record(t0, Outcome::Failure));
        assert!(!s.passing());
    }

    #[test]
    fn liveness_starts_alive() {
        let t0 = Instant::now();
        let mut s = ProbeState::liveness(probe(1, 1, 1, 0), t0);
        assert!(s.passing());
        assert!(s.record(t0, Outcome::Failure));
        assert!(!s.passing());
    }

    #[test]
    fn schedule_respects_delay_and_period() {
        let t0 = Instant::now();
        let mut s = ProbeState::readiness(probe(5, 3, 1, 2), t0);
        assert!(!s.due(t0 + Duration::from_secs(1)));
        assert!(s.due(t0 + Duration::from_secs(2)));
        s.record(t0 + Duration::from_secs(2), Outcome::Success);
        assert!(!s.due(t0 + Duration::from_secs(6)));
        assert!(s.due(t0 + Duration::from_secs(7)));
    }

    #[test]
    fn status_lines() {
        assert!(http_status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(http_status_ok(b"HTTP/1.0 302 Found"));
        assert!(!http_status_ok(b"HTTP/1.1 500 Oops"));
        assert!(!http_status_ok(b"garbage"));
    }

    #[test]
    fn tcp_and_http_checks_on_loopback() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for conn in l.incoming().take(3) {
                let mut c = conn.unwrap();
                // Read the whole request head, then answer by path, so the outcome depends on
                // neither connection order nor how the request was segmented.
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let healthy = req.starts_with(b"GET /healthz ");
                let status = if healthy { "200 OK" } else { "503 Unavailable" };
                let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t = Duration::from_secs(2);
        assert_eq!(check_tcp(ip, port, t), Outcome::Success);
        assert_eq!(check_http(ip, port, "/healthz", t), Outcome::Success);
        assert_eq!(check_http(ip, port, "/", t), Outcome::Failure);
        server.join().unwrap();
        // Nothing listens on port 1 of loopback.
        assert_eq!(check_tcp(ip, 1, t), Outcome::Failure);
    }
}

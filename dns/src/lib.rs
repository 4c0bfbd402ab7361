//! podd-dns: the node's cluster DNS server.
//!
//! Answers `NAME.NAMESPACE.svc.DOMAIN` (default domain `cluster.local`) with the service's
//! virtual IP (its `spec.clusterIP`), or, for a headless Service (`clusterIP: None`), with the
//! ready addresses of its Endpoints (and `HOSTNAME.NAME.NAMESPACE.svc.DOMAIN` for addresses
//! that carry a `hostname`), authoritatively: a name inside the cluster domain that is not a service gets
//! NXDOMAIN. Every other name is forwarded verbatim to the node's upstream resolver, or answered
//! NXDOMAIN when there is none. Short names (`web`, `web.default`) work through the search
//! domains of the pods' resolv.conf ([`pod_resolv_conf`]): the pod's resolver expands them.
//!
//! The agent keeps the record set current with [`DnsServer::set_services`], which swaps the
//! whole set atomically. Wire format by hickory-proto; UDP and TCP.

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
use podd_api::{Endpoints, ResourceExt, Service};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// How long an upstream resolver gets to answer a forwarded query.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding DNS {proto} socket on {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where to listen (UDP and TCP), e.g. the bridge gateway `10.244.N.1:53`.
    pub listen: SocketAddr,
    /// The cluster domain, without a trailing dot.
    pub domain: String,
    /// The node's upstream resolver; `None` answers NXDOMAIN for names outside the cluster.
    pub upstream: Option<SocketAddr>,
    /// TTL of service records, in seconds.
    pub ttl: u32,
}

impl DnsConfig {
    pub fn new(listen: SocketAddr) -> DnsConfig {
        DnsConfig {
            listen,
            domain: "cluster.local".into(),
            upstream: None,
            ttl: 5,
        }
    }
}

/// One A record of a Service: `name.namespace.svc.DOMAIN` -> `ip`. A headless Service has
/// one record per ready endpoint address, under the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
}

/// Records for every Service with an IPv4 cluster IP. Headless Services need their
/// Endpoints: see [`service_records`].
pub fn records_from_api(services: &[Service]) -> Vec<ServiceRecord> {
    service_records(services, &[])
}

/// Records for every Service: its IPv4 cluster IP, or, when headless (`clusterIP: None`),
/// the ready addresses (`subsets[].addresses`, never `notReadyAddresses`) of the Endpoints
/// of the same name, plus a `HOSTNAME.SERVICE` record for each address with a hostname.
/// Services without an IP yet (not allocated, or ExternalName) get none.
pub fn service_records(services: &[Service], endpoints: &[Endpoints]) -> Vec<ServiceRecord> {
    let by_key: HashMap<(String, String), &Endpoints> = endpoints
        .iter()
        .map(|e| ((namespace_of(e), e.name_any()), e))
        .collect();
    let mut out = Vec::new();
    for s in services {
        let (namespace, name) = (namespace_of(s), s.name_any());
        let cluster_ip = s
            .spec
            .as_ref()
            .and_then(|sp| sp.cluster_ip.as_deref())
            .unwrap_or("");
        if cluster_ip != HEADLESS {
            if let Ok(ip) = cluster_ip.parse() {
                out.push(ServiceRecord {
                    name,
                    namespace,
                    ip,
                });
            }
            continue;
        }
        let Some(ep) = by_key.get(&(namespace.clone(), name.clone())) else {
            continue;
        };
        let ready = ep
            .subsets
            .iter()
            .flatten()
            .flat_map(|ss| ss.addresses.iter().flatten());
        let mut ips: Vec<(Ipv4Addr, Option<&str>)> = ready
            .filter_map(|a| Some((a.ip.parse().ok()?, a.hostname.as_deref())))
            .collect();
        ips.sort_unstable();
        ips.dedup();
        for (ip, hostname) in ips {
            if let Some(h) = hostname.filter(|h| !h.is_empty()) {
                out.push(ServiceRecord {
                    name: format!("{h}.{name}"),
                    namespace: namespace.clone(),
                    ip,
                });
            }
            out.push(ServiceRecord {
                name: name.clone(),
                namespace: namespace.clone(),
                ip,
            });
        }
    }
    out
}

/// `spec.clusterIP` of a headless Service.
const HEADLESS: &str = "None";

fn namespace_of<K: ResourceExt>(o: &K) -> String {
    o.namespace()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

/// The resolv.conf a pod in `namespace` gets, as Kubernetes writes it: the node's DNS address,
/// the search domains that turn `web` and `web.other-ns` into service names, and `ndots:5`.
pub fn pod_resolv_conf(namespace: &str, nameserver: Ipv4Addr, domain: &str) -> String {
    format!(
        "nameserver {nameserver}\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
    )
}

/// The first `nameserver` of a resolv.conf text that is not `skip` (our own address, so we
/// never forward to ourselves).
pub fn upstream_from_resolv_conf(text: &str, skip: Option<Ipv4Addr>) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .find(|a| Some(*a) != skip.map(std::net::IpAddr::V4))
        .map(|a| SocketAddr::new(a, 53))
}

/// Lower-cased full name -> its addresses (one for a ClusterIP Service, the ready endpoints
/// for a headless one).
pub type Table = HashMap<String, Vec<Ipv4Addr>>;

/// What to do with one query.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: forward the query to the upstream resolver.
    Forward,
}

fn reply(req: &Message, code: ResponseCode, authoritative: bool, answers: Vec<Record>) -> Vec<u8> {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.response_code = code;
    m.metadata.authoritative = authoritative;
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.queries = req.queries.clone();
    m.answers = answers;
    m.to_vec().unwrap_or_default()
}

/// Answers a query from the record table, or says to forward it. Pure; unit-tested.
pub fn answer(table: &Table, domain: &str, have_upstream: bool, query: &[u8]) -> Outcome {
    let Ok(req) = Message::from_vec(query) else {
        // Unparseable: FORMERR needs the id, which is the first two bytes.
        if query.len() >= 2 {
            let id = u16::from_be_bytes([query[0], query[1]]);
            let m = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return Outcome::Reply(m.to_vec().unwrap_or_default());
        }
        return Outcome::Reply(Vec::new());
    };
    if req.metadata.message_type != MessageType::Query
        || req.metadata.op_code != OpCode::Query
        || req.queries.len() != 1
    {
        return Outcome::Reply(reply(&req, ResponseCode::NotImp, false, vec![]));
    }
    let q = &req.queries[0];
    let name = q.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let suffix = format!(".{domain}");
    let in_cluster = name == domain || name.ends_with(&suffix);
    if !in_cluster {
        if have_upstream {
            return Outcome::Forward;
        }
        return Outcome::Reply(reply(&req, ResponseCode::NXDomain, false, vec![]));
    }
    match table.get(name) {
        Some(ips) => {
            let answers = match q.query_type() {
                RecordType::A | RecordType::ANY => ips
                    .iter()
                    .map(|ip| Record::from_rdata(q.name().clone(), 0, RData::A(A(*ip))))
                    .collect(),
                // The name exists, but has only an A record: NODATA.
                _ => vec![],
            };
            Outcome::Reply(reply(&req, ResponseCode::NoError, true, answers))
        }
        None => Outcome::Reply(reply(&req, ResponseCode::NXDomain, true, vec![])),
    }
}

fn set_ttl(bytes: Vec<u8>, ttl: u32) -> Vec<u8> {
    let Ok(mut m) = Message::from_vec(&bytes) else {
        return bytes;
    };
    if m.answers.is_empty() {
        return bytes;
    }
    for r in &mut m.answers {
        r.ttl = ttl;
    }
    m.to_vec().unwrap_or(bytes)
}

struct Shared {
    table: RwLock<Arc<Table>>,
    config: DnsConfig,
}

impl Shared {
    fn outcome(&self, query: &[u8]) -> Outcome {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
        match answer(
            &table,
            &self.config.domain,
            self.config.upstream.is_some(),
            query,
        ) {
            Outcome::Reply(b) => Outcome::Reply(set_ttl(b, self.config.ttl)),
            f => f,
        }
    }

    fn servfail(query: &[u8]) -> Vec<u8> {
        let id = query
            .get(..2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        Message::error_msg(id, OpCode::Query, ResponseCode::ServFail)
            .to_vec()
            .unwrap_or_default()
    }

    async fn forward_udp(&self, query: &[u8]) -> Vec<u8> {
        let Some(up) = self.config.upstream else {
            return Self::servfail(query);
        };
        let attempt = async {
            let bind: SocketAddr = if up.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let s = UdpSocket::bind(bind).await?;
            s.connect(up).await?;
            s.send(query).await?;
            let mut buf = vec![0u8; 65535];
            let n = s.recv(&mut buf).await?;
            buf.truncate(n);
            Ok::<_, std::io::Error>(buf)
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(upstream = %up, error = %e, "DNS forward failed");
                Self::servfail(query)
            }
            Err(_) => {
                tracing::warn!(upstream = %up, "DNS forward timed out");
                Self::servfail(query)
            }
        }
    }

    async fn forward_tcp(&self, query: &[u8]) -> Vec<u8> {
        let Some(up) = self.config.upstream else {
            return Self::servfail(query);
        };
        let attempt = async {
            let mut s = TcpStream::connect(up).await?;
            s.write_all(&(query.len() as u16).to_be_bytes()).await?;
            s.write_all(query).await?;
            read_framed(&mut s).await
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            Ok(Ok(b)) => b,
            _ => Self::servfail(query),
        }
    }
}

async fn read_framed(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// A running DNS server (UDP and TCP on the same address). Dropping it stops it.
pub struct DnsServer {
    shared: Arc<Shared>,
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(config: DnsConfig) -> Result<DnsServer, DnsError> {
        let udp = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "UDP",
                addr: config.listen,
                source,
            })?;
        let local = udp.local_addr().map_err(|source| DnsError::Bind {
            proto: "UDP",
            addr: config.listen,
            source,
        })?;
        let tcp = TcpListener::bind(local)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "TCP",
                addr: local,
                source,
            })?;
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(Table::new())),
            config,
        });
        let udp = Arc::new(udp);
        let u = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    let query = buf[..n].to_vec();
                    match shared.outcome(&query) {
                        Outcome::Reply(b) => {
                            let _ = udp.send_to(&b, from).await;
                        }
                        Outcome::Forward => {
                            let (shared, udp) = (shared.clone(), udp.clone());
                            tokio::spawn(async move {
                                let b = shared.forward_udp(&query).await;
                                let _ = udp.send_to(&b, from).await;
                            });
                        }
                    }
                }
            })
        };
        let t = {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = tcp.accept().await else {
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        while let Ok(query) = read_framed(&mut s).await {
                            let b = match shared.outcome(&query) {
                                Outcome::Reply(b) => b,
                                Outcome::Forward => shared.forward_tcp(&query).await,
                            };
                            if s.write_all(&(b.len() as u16).to_be_bytes()).await.is_err()
                                || s.write_all(&b).await.is_err()
                            {
                                break;
                            }
                        }
                    });
                }
            })
        };
        tracing::info!(listen = %local, domain = %shared.config.domain, upstream = ?shared.config.upstream, "cluster DNS serving");
        Ok(DnsServer {
            shared,
            local,
            tasks: vec![u, t],
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Replaces the whole record set (the agent calls this with every Service it knows).
    pub fn set_services(&self, records: &[ServiceRecord]) {
        let domain = &self.shared.config.domain;
        let mut table = Table::new();
        for r in records {
            let name = format!("{}.{}.svc.{domain}", r.name, r.namespace).to_ascii_lowercase();
            let ips = table.entry(name).or_default();
            if !ips.contains(&r.ip) {
                ips.push(r.ip);
            }
        }
        *self.shared.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 77;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn table() -> Table {
        [(
            "web.default.svc.cluster.local".to_string(),
            vec![Ipv4Addr::new(10, 96, 0, 20)],
        )]
        .into_iter()
        .collect()
    }

    fn parse(o: Outcome) -> Message {
        match o {
            Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
            Outcome::Forward => panic!("forwarded"),
        }
    }

    #[test]
    fn service_name_gets_its_vip_case_insensitively() {
        let m = parse(answer(
            &table(),
            "cluster.local",
            false,
            &query("Web.Default.svc.cluster.local.", RecordType::A),
        ));
        assert_eq!(m.metadata.id, 77);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 96, 0, 20))));
    }

    #[test]
    fn unknown_cluster_name_is_nxdomain_and_aaaa_is_nodata() {
        let m = parse(answer(
            &table(),
            "cluster.local",
            true,
            &query("db.default.svc.cluster.local.", RecordType::A),
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = parse(answer(
            &table(),
            "cluster.local",
            true,
            &query("web.default.svc.cluster.local.", RecordType::AAAA),
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn outside_names_forward_or_nxdomain() {
        assert_eq!(
            answer(
                &table(),
                "cluster.local",
                true,
                &query("example.org.", RecordType::A)
            ),
            Outcome::Forward
        );
        let m = parse(answer(
            &table(),
            "cluster.local",
            false,
            &query("example.org.", RecordType::A),
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn garbage_gets_formerr() {
        let m = parse(answer(&table(), "cluster.local", false, &[0, 9, 1, 2, 3]));
        assert_eq!(m.metadata.id, 9);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn resolv_conf_helpers() {
        let rc = pod_resolv_conf("shop", Ipv4Addr::new(10, 244, 1, 1), "cluster.local");
        assert!(rc.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"));
        let up = upstream_from_resolv_conf(
            "# x\nnameserver 10.244.1.1\nnameserver 192.0.2.53\n",
            Some(Ipv4Addr::new(10, 244, 1, 1)),
        );
        assert_eq!(up, Some("192.0.2.53:53".parse().unwrap()));
    }

    fn service(ns: &str, name: &str, cluster_ip: Option<&str>) -> Service {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 80}]}
        });
        if let Some(ip) = cluster_ip {
            v["spec"]["clusterIP"] = ip.into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn cluster_ip_and_headless_services_become_records() {
        let svcs = [
            service("default", "web", Some("10.96.0.20")),
            service("shop", "db", Some("None")),
            service("shop", "pending", None),
            service("shop", "lonely", Some("None")),
        ];
        let eps: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "subsets": [{
                "addresses": [{"ip": "10.244.1.7", "hostname": "db-0"}, {"ip": "10.244.2.9"}],
                "notReadyAddresses": [{"ip": "10.244.3.3"}],
                "ports": [{"port": 5432}]
            }]
        }))
        .unwrap();
        let rec = |name: &str, namespace: &str, ip: [u8; 4]| ServiceRecord {
            name: name.into(),
            namespace: namespace.into(),
            ip: Ipv4Addr::from(ip),
        };
        assert_eq!(
            service_records(&svcs, &[eps]),
            vec![
                rec("web", "default", [10, 96, 0, 20]),
                rec("db-0.db", "shop", [10, 244, 1, 7]),
                rec("db", "shop", [10, 244, 1, 7]),
                rec("db", "shop", [10, 244, 2, 9]),
            ],
            "not-ready addresses and services without an IP get no record"
        );
        assert_eq!(
            records_from_api(&svcs),
            vec![rec("web", "default", [10, 96, 0, 20])]
        );
    }

    #[test]
    fn headless_names_answer_every_ready_address() {
        let mut t = table();
        t.insert(
            "db.shop.svc.cluster.local".into(),
            vec![Ipv4Addr::new(10, 244, 1, 7), Ipv4Addr::new(10, 244, 2, 9)],
        );
        let m = parse(answer(
            &t,
            "cluster.local",
            false,
            &query("db.shop.svc.cluster.local.", RecordType::A),
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let ips: Vec<&RData> = m.answers.iter().map(|r| &r.data).collect();
        assert_eq!(
            ips,
            [
                &RData::A(A(Ipv4Addr::new(10, 244, 1, 7))),
                &RData::A(A(Ipv4Addr::new(10, 244, 2, 9)))
            ]
        );
    }
}

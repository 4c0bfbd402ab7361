//! The loader's input: the desired set of service ports and their ready backends, and the
//! conversion from Kubernetes' `Service` + `Endpoints` (as podd-api re-exports them).

use podd_api::{EndpointPort, Endpoints, IntOrString, ResourceExt, Service, ServicePort};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Annotation selecting the backend choice: `random` (default) or `maglev`.
pub const ALGORITHM_ANNOTATION: &str = "podd.io/lb-algorithm";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => podd_lb_common::PROTO_TCP,
            Protocol::Udp => podd_lb_common::PROTO_UDP,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            podd_lb_common::PROTO_TCP => Some(Protocol::Tcp),
            podd_lb_common::PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl Protocol {
    /// A port's `protocol` as the API writes it (`TCP` when unset, as Kubernetes defaults
    /// it); `None` for protocols the load balancer does not carry (SCTP).
    pub fn from_api(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// How a backend is chosen for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Selection {
    /// Uniformly at random (`bpf_get_prandom_u32`).
    #[default]
    Random,
    /// ClientIP session affinity: a client network namespace keeps its backend while that
    /// backend stays ready.
    ClientIp,
    /// Maglev consistent hashing of the client network namespace: no per-client state, and a
    /// backend change moves only about 1/N of the clients.
    Maglev,
}

/// The address of one service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

/// One service port and its ready backends: what the maps must hold for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub frontend: Frontend,
    pub selection: Selection,
    /// Ready backends. Order does not matter; duplicates are ignored.
    pub backends: Vec<SocketAddrV4>,
}

/// Why a Service (or one of its ports) was left out of the load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// "namespace/name".
    pub service: String,
    pub reason: String,
}

/// Converts Services and their Endpoints into loader input. A headless service
/// (`clusterIP: None`), or one whose clusterIP is not yet allocated, has no VIP and is skipped
/// (reported in the second list), as is a port of a protocol the balancer does not carry.
/// Endpoints are matched by namespace and name, and only their ready `addresses` are backends
/// (never `notReadyAddresses`). An endpoint port is matched to a service port by name and
/// protocol (a service with one port takes the subset's only port); the endpoints controller
/// has resolved named target ports there. Without a match, a numeric `targetPort` (or `port`
/// when unset) is used; a named one cannot be resolved here, so that subset is skipped.
pub fn from_api(
    services: &[Service],
    endpoints: &[Endpoints],
) -> (Vec<ServiceEntry>, Vec<Skipped>) {
    let by_name: BTreeMap<(String, String), &Endpoints> = endpoints
        .iter()
        .map(|e| ((namespace_of(e), e.name_any()), e))
        .collect();
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for svc in services {
        let (ns, name) = (namespace_of(svc), svc.name_any());
        let id = format!("{ns}/{name}");
        let spec = svc.spec.as_ref();
        let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        if ip.is_empty() || ip.eq_ignore_ascii_case("none") {
            skipped.push(Skipped {
                service: id,
                reason: "no cluster IP (headless or not allocated yet)".into(),
            });
            continue;
        }
        let vip: Ipv4Addr = match ip.parse() {
            Ok(v) => v,
            Err(_) => {
                skipped.push(Skipped {
                    service: id,
                    reason: format!("clusterIP {ip:?} is not an IPv4 address"),
                });
                continue;
            }
        };
        let selection = if spec.and_then(|s| s.session_affinity.as_deref()) == Some("ClientIP") {
            Selection::ClientIp
        } else if svc
            .annotations()
            .get(ALGORITHM_ANNOTATION)
            .is_some_and(|a| a == "maglev")
        {
            Selection::Maglev
        } else {
            Selection::Random
        };
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let subsets = by_name
            .get(&(ns, name))
            .and_then(|e| e.subsets.as_deref())
            .unwrap_or_default();
        for sp in ports {
            let Some(protocol) = Protocol::from_api(sp.protocol.as_deref()) else {
                skipped.push(Skipped {
                    service: id.clone(),
                    reason: format!(
                        "port {}: protocol {:?} is not load-balanced",
                        sp.port,
                        sp.protocol.as_deref().unwrap_or_default()
                    ),
                });
                continue;
            };
            let Some(port) = u16::try_from(sp.port).ok().filter(|p| *p != 0) else {
                skipped.push(Skipped {
                    service: id.clone(),
                    reason: format!("port {} is not a valid port number", sp.port),
                });
                continue;
            };
            let mut backends = BTreeSet::new();
            for subset in subsets {
                let subset_ports = subset.ports.as_deref().unwrap_or_default();
                let target = subset_ports
                    .iter()
                    .find(|p| same_port(p, sp))
                    .or_else(|| {
                        (ports.len() == 1 && subset_ports.len() == 1).then(|| &subset_ports[0])
                    })
                    .and_then(|p| u16::try_from(p.port).ok())
                    .or_else(|| numeric_target(sp));
                let Some(target) = target else {
                    skipped.push(Skipped {
                        service: id.clone(),
                        reason: format!(
                            "port {port}: named targetPort with no matching endpoint port"
                        ),
                    });
                    continue;
                };
                for addr in subset.addresses.iter().flatten() {
                    match addr.ip.parse::<Ipv4Addr>() {
                        Ok(ip) => {
                            backends.insert(SocketAddrV4::new(ip, target));
                        }
                        Err(_) => skipped.push(Skipped {
                            service: id.clone(),
                            reason: format!("endpoint address {:?} is not IPv4", addr.ip),
                        }),
                    }
                }
            }
            entries.push(ServiceEntry {
                frontend: Frontend {
                    vip,
                    port,
                    protocol,
                },
                selection,
                backends: backends.into_iter().collect(),
            });
        }
    }
    (entries, skipped)
}

/// Whether an Endpoints port is the one for a Service port: same name (unset is `""`) and
/// protocol (unset is TCP).
fn same_port(ep: &EndpointPort, sp: &ServicePort) -> bool {
    ep.name.as_deref().unwrap_or("") == sp.name.as_deref().unwrap_or("")
        && ep.protocol.as_deref().unwrap_or("TCP") == sp.protocol.as_deref().unwrap_or("TCP")
}

/// A Service port's numeric target: `targetPort` when a number, `port` when unset; `None` for
/// a named target port (only the pods know it).
fn numeric_target(sp: &ServicePort) -> Option<u16> {
    match &sp.target_port {
        None => u16::try_from(sp.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|p| *p != 0),
        Some(IntOrString::String(s)) => s.parse::<u16>().ok().filter(|p| *p != 0),
    }
}

fn namespace_of<K: ResourceExt>(o: &K) -> String {
    o.namespace()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::{EndpointAddress, EndpointSubset, ObjectMeta, ServiceSpec};

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        }
    }

    fn svc(name: &str, ip: &str, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: meta(name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sport(name: &str, port: i32, target: Option<IntOrString>, protocol: &str) -> ServicePort {
        ServicePort {
            name: (!name.is_empty()).then(|| name.into()),
            port,
            target_port: target,
            protocol: Some(protocol.into()),
            ..Default::default()
        }
    }

    fn eport(name: &str, port: i32, protocol: &str) -> EndpointPort {
        EndpointPort {
            name: Some(name.into()),
            port,
            protocol: Some(protocol.into()),
            ..Default::default()
        }
    }

    fn eps(name: &str, ips: &[&str], ports: Vec<EndpointPort>) -> Endpoints {
        Endpoints {
            metadata: meta(name),
            subsets: Some(vec![EndpointSubset {
                addresses: Some(
                    ips.iter()
                        .map(|ip| EndpointAddress {
                            ip: (*ip).into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.244.0.99".into(),
                    ..Default::default()
                }]),
                ports: Some(ports),
            }]),
        }
    }

    #[test]
    fn converts_ports_by_name_and_skips_headless() {
        let web = svc(
            "web",
            "10.96.0.20",
            vec![
                sport("http", 80, Some(IntOrString::String("http".into())), "TCP"),
                sport("dns", 53, None, "UDP"),
            ],
        );
        let headless = svc("db", "None", vec![]);
        let e = eps(
            "web",
            &["10.244.0.5", "10.244.1.5"],
            vec![eport("http", 8080, "TCP"), eport("dns", 5353, "UDP")],
        );
        let (entries, skipped) = from_api(&[web, headless], &[e]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].service, "default/db");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].frontend.port, 80);
        assert_eq!(entries[0].frontend.protocol, Protocol::Tcp);
        assert_eq!(
            entries[0].backends,
            vec![
                "10.244.0.5:8080".parse().unwrap(),
                "10.244.1.5:8080".parse().unwrap()
            ]
        );
        assert_eq!(entries[1].frontend.protocol, Protocol::Udp);
        assert_eq!(entries[1].backends[0].port(), 5353);
    }

    #[test]
    fn service_without_endpoints_has_no_backends_and_affinity_is_read() {
        let mut s = svc(
            "lonely",
            "10.96.0.21",
            vec![ServicePort {
                port: 443,
                ..Default::default()
            }],
        );
        s.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        let (entries, skipped) = from_api(&[s], &[]);
        assert!(skipped.is_empty());
        assert_eq!(entries[0].selection, Selection::ClientIp);
        assert!(entries[0].backends.is_empty());
    }

    #[test]
    fn maglev_annotation_and_target_port_fallback() {
        let mut s = svc(
            "m",
            "10.96.0.22",
            vec![sport("a", 80, Some(IntOrString::Int(9000)), "TCP")],
        );
        s.annotations_mut()
            .insert(ALGORITHM_ANNOTATION.into(), "maglev".into());
        let e = eps("m", &["10.244.0.7"], vec![]);
        let (entries, _) = from_api(&[s], &[e]);
        assert_eq!(entries[0].selection, Selection::Maglev);
        assert_eq!(
            entries[0].backends,
            vec!["10.244.0.7:9000".parse().unwrap()]
        );
    }

    #[test]
    fn protocol_defaults_to_tcp_and_sctp_and_named_targets_are_skipped() {
        // No protocol: TCP, on both sides. A named targetPort with no endpoint port to
        // resolve it: that subset is skipped, with a reason.
        let s = svc(
            "p",
            "10.96.0.23",
            vec![
                ServicePort {
                    name: Some("web".into()),
                    port: 80,
                    ..Default::default()
                },
                sport("s", 90, None, "SCTP"),
                sport(
                    "named",
                    81,
                    Some(IntOrString::String("metrics".into())),
                    "TCP",
                ),
            ],
        );
        let mut e = eps("p", &["10.244.0.8"], vec![]);
        e.subsets.as_mut().unwrap()[0].ports = Some(vec![EndpointPort {
            name: Some("web".into()),
            port: 8080,
            ..Default::default()
        }]);
        let (entries, skipped) = from_api(&[s], &[e]);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].frontend.protocol, Protocol::Tcp);
        assert_eq!(
            entries[0].backends,
            vec!["10.244.0.8:8080".parse().unwrap()]
        );
        assert_eq!(entries[1].frontend.port, 81);
        assert!(entries[1].backends.is_empty());
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].reason.contains("SCTP"), "{skipped:?}");
        assert!(
            skipped[1].reason.contains("named targetPort"),
            "{skipped:?}"
        );
    }
}

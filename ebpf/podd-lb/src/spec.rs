//! The loader's input: the desired set of service ports and their ready backends, and the
//! conversion from podd-api `Service` + `Endpoints`.

use podd_api::pod::Protocol as ApiProtocol;
use podd_api::{Endpoints, Service};
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

impl From<ApiProtocol> for Protocol {
    fn from(p: ApiProtocol) -> Self {
        match p {
            ApiProtocol::Tcp => Protocol::Tcp,
            ApiProtocol::Udp => Protocol::Udp,
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
/// (reported in the second list). Endpoints are matched by namespace and name; an endpoint port
/// is matched to a service port by name (a service with one unnamed port takes the subset's
/// only port), falling back to the service's `targetPort`.
pub fn from_api(
    services: &[Service],
    endpoints: &[Endpoints],
) -> (Vec<ServiceEntry>, Vec<Skipped>) {
    let by_name: BTreeMap<(&str, &str), &Endpoints> = endpoints
        .iter()
        .map(|e| ((e.metadata.namespace.as_str(), e.metadata.name.as_str()), e))
        .collect();
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for svc in services {
        let id = format!("{}/{}", svc.metadata.namespace, svc.metadata.name);
        let ip = svc.spec.cluster_ip.as_str();
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
        let selection = if svc.spec.session_affinity == "ClientIP" {
            Selection::ClientIp
        } else if svc
            .metadata
            .annotations
            .get(ALGORITHM_ANNOTATION)
            .is_some_and(|a| a == "maglev")
        {
            Selection::Maglev
        } else {
            Selection::Random
        };
        let eps = by_name.get(&(svc.metadata.namespace.as_str(), svc.metadata.name.as_str()));
        for sp in &svc.spec.ports {
            let mut backends = BTreeSet::new();
            for subset in eps.map(|e| e.subsets.as_slice()).unwrap_or_default() {
                let port = subset
                    .ports
                    .iter()
                    .find(|p| p.name == sp.name && p.protocol == sp.protocol)
                    .or_else(|| {
                        (svc.spec.ports.len() == 1 && subset.ports.len() == 1)
                            .then(|| &subset.ports[0])
                    })
                    .map(|p| p.port)
                    .unwrap_or_else(|| sp.target());
                for addr in &subset.addresses {
                    match addr.ip.parse::<Ipv4Addr>() {
                        Ok(ip) => {
                            backends.insert(SocketAddrV4::new(ip, port));
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
                    port: sp.port,
                    protocol: sp.protocol.into(),
                },
                selection,
                backends: backends.into_iter().collect(),
            });
        }
    }
    (entries, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::service::{EndpointAddress, EndpointPort, EndpointSubset, ServicePort};

    fn svc(name: &str, ip: &str, ports: Vec<ServicePort>) -> Service {
        let mut s = Service::default();
        s.metadata.name = name.into();
        s.metadata.namespace = "default".into();
        s.spec.cluster_ip = ip.into();
        s.spec.ports = ports;
        s
    }

    fn eps(name: &str, ips: &[&str], ports: Vec<EndpointPort>) -> Endpoints {
        let mut e = Endpoints::default();
        e.metadata.name = name.into();
        e.metadata.namespace = "default".into();
        e.subsets = vec![EndpointSubset {
            addresses: ips
                .iter()
                .map(|ip| EndpointAddress {
                    ip: (*ip).into(),
                    ..Default::default()
                })
                .collect(),
            not_ready_addresses: vec![EndpointAddress {
                ip: "10.244.0.99".into(),
                ..Default::default()
            }],
            ports,
        }];
        e
    }

    #[test]
    fn converts_ports_by_name_and_skips_headless() {
        let web = svc(
            "web",
            "10.96.0.20",
            vec![
                ServicePort {
                    name: "http".into(),
                    port: 80,
                    target_port: Some(8080),
                    protocol: ApiProtocol::Tcp,
                },
                ServicePort {
                    name: "dns".into(),
                    port: 53,
                    target_port: None,
                    protocol: ApiProtocol::Udp,
                },
            ],
        );
        let headless = svc("db", "None", vec![]);
        let e = eps(
            "web",
            &["10.244.0.5", "10.244.1.5"],
            vec![
                EndpointPort {
                    name: "http".into(),
                    port: 8080,
                    protocol: ApiProtocol::Tcp,
                },
                EndpointPort {
                    name: "dns".into(),
                    port: 5353,
                    protocol: ApiProtocol::Udp,
                },
            ],
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
        s.spec.session_affinity = "ClientIP".into();
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
            vec![ServicePort {
                name: "a".into(),
                port: 80,
                target_port: Some(9000),
                protocol: ApiProtocol::Tcp,
            }],
        );
        s.metadata
            .annotations
            .insert(ALGORITHM_ANNOTATION.into(), "maglev".into());
        let e = eps("m", &["10.244.0.7"], vec![]);
        let (entries, _) = from_api(&[s], &[e]);
        assert_eq!(entries[0].selection, Selection::Maglev);
        assert_eq!(
            entries[0].backends,
            vec!["10.244.0.7:9000".parse().unwrap()]
        );
    }
}

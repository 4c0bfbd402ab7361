//! The pod's /etc/hosts, /etc/hostname and /etc/resolv.conf, shared by its containers.

use std::net::Ipv4Addr;

/// What a pod's name-resolution files say.
#[derive(Debug, Clone)]
pub struct EtcConfig {
    pub hostname: String,
    pub pod_ip: Option<Ipv4Addr>,
    pub namespace: String,
    pub cluster_domain: String,
    /// The cluster DNS server; None falls back to the node's resolv.conf content.
    pub dns_server: Option<Ipv4Addr>,
}

pub fn hosts(cfg: &EtcConfig) -> String {
    let mut s = String::from(
        "# Written by podd.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(ip) = cfg.pod_ip {
        s.push_str(&format!("{ip}\t{}\n", cfg.hostname));
    }
    s
}

pub fn hostname(cfg: &EtcConfig) -> String {
    format!("{}\n", cfg.hostname)
}

/// Search domains as the kubelet writes them: `NS.svc.DOMAIN svc.DOMAIN DOMAIN`, ndots 5.
pub fn resolv_conf(cfg: &EtcConfig, node_resolv_conf: &str) -> String {
    match cfg.dns_server {
        Some(server) => format!(
            "# Written by podd.\nnameserver {server}\nsearch {ns}.svc.{d} svc.{d} {d}\noptions ndots:5\n",
            ns = cfg.namespace,
            d = cfg.cluster_domain
        ),
        None => node_resolv_conf.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kubelet_style_files() {
        let cfg = EtcConfig {
            hostname: "web-1".into(),
            pod_ip: Some(Ipv4Addr::new(10, 244, 1, 7)),
            namespace: "shop".into(),
            cluster_domain: "cluster.local".into(),
            dns_server: Some(Ipv4Addr::new(10, 96, 0, 10)),
        };
        assert!(hosts(&cfg).contains("10.244.1.7\tweb-1\n"));
        assert_eq!(hostname(&cfg), "web-1\n");
        let r = resolv_conf(&cfg, "nameserver 1.1.1.1\n");
        assert!(r.contains("nameserver 10.96.0.10\n"));
        assert!(r.contains("search shop.svc.cluster.local svc.cluster.local cluster.local\n"));
        let fallback = resolv_conf(
            &EtcConfig {
                dns_server: None,
                ..cfg
            },
            "nameserver 192.0.2.1\n",
        );
        assert_eq!(fallback, "nameserver 192.0.2.1\n");
    }
}

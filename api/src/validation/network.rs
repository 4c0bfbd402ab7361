//! Services, Endpoints and EndpointSlices: ports, target ports by number or IANA name,
//! protocols, addresses and the enums of a Service spec.

use super::meta::{NameRule, check_labels, check_object_meta};
use super::names::{dns1123_label_errors, iana_port_name_errors};
use super::pod::{PORT_RANGE, PROTOCOLS};
use super::{FieldError, ValidationErrors};
use crate::{EndpointSlice, Endpoints, IntOrString, Service};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn port_in_range(errs: &mut ValidationErrors, path: String, port: i32) {
    if !(1..=65535).contains(&port) {
        errs.push(FieldError::invalid(path, port, PORT_RANGE));
    }
}

fn one_of(errs: &mut ValidationErrors, path: &str, v: Option<&str>, allowed: &[&str]) {
    if let Some(v) = v
        && !allowed.contains(&v)
    {
        errs.push(FieldError::not_supported(path, v, allowed));
    }
}

pub(crate) fn validate_service(errs: &mut ValidationErrors, svc: &Service) {
    check_object_meta(errs, &svc.metadata, true, NameRule::Dns1035);
    let Some(spec) = &svc.spec else {
        errs.push(FieldError::required("spec.ports", ""));
        return;
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    one_of(errs, "spec.type", spec.type_.as_deref(), SERVICE_TYPES);
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let headless = cluster_ip == "None";
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() && !headless && type_ != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        match p.name.as_deref().unwrap_or("") {
            "" if ports.len() > 1 => errs.push(FieldError::required(format!("{pp}.name"), "")),
            "" => {}
            n => {
                for e in dns1123_label_errors(n) {
                    errs.push(FieldError::invalid(format!("{pp}.name"), n, e));
                }
                if !names.insert(n) {
                    errs.push(FieldError::duplicate(format!("{pp}.name"), n));
                }
            }
        }
        port_in_range(errs, format!("{pp}.port"), p.port);
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        one_of(
            errs,
            &format!("{pp}.protocol"),
            p.protocol.as_deref(),
            PROTOCOLS,
        );
        match &p.target_port {
            Some(IntOrString::Int(n)) => port_in_range(errs, format!("{pp}.targetPort"), *n),
            Some(IntOrString::String(n)) => {
                for e in iana_port_name_errors(n) {
                    errs.push(FieldError::invalid(format!("{pp}.targetPort"), n, e));
                }
            }
            None => {}
        }
        if let Some(np) = p.node_port
            && np != 0
        {
            if type_ == "ClusterIP" || type_ == "ExternalName" {
                errs.push(FieldError::forbidden(
                    format!("{pp}.nodePort"),
                    format!("may not be used when `type` is '{type_}'"),
                ));
            } else {
                port_in_range(errs, format!("{pp}.nodePort"), np);
            }
        }
        if !seen.insert((p.port, protocol)) {
            errs.push(FieldError::duplicate(pp, format!("{}/{protocol}", p.port)));
        }
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        errs.push(FieldError::invalid("spec.clusterIP", cluster_ip, IP_MSG));
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        if ip != "None" && ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                ip,
                IP_MSG,
            ));
        }
    }
    if type_ == "ExternalName" && spec.external_name.as_deref().unwrap_or("").is_empty() {
        errs.push(FieldError::required("spec.externalName", ""));
    }
    check_labels(errs, "spec.selector", spec.selector.as_ref());
    one_of(
        errs,
        "spec.sessionAffinity",
        spec.session_affinity.as_deref(),
        &["ClientIP", "None"],
    );
    one_of(
        errs,
        "spec.ipFamilyPolicy",
        spec.ip_family_policy.as_deref(),
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
    );
    for (i, f) in spec.ip_families.iter().flatten().enumerate() {
        one_of(
            errs,
            &format!("spec.ipFamilies[{i}]"),
            Some(f),
            &["IPv4", "IPv6"],
        );
    }
    one_of(
        errs,
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
        &["Cluster", "Local"],
    );
    if let Some(p) = spec.external_traffic_policy.as_deref() {
        if type_ == "ClusterIP" || type_ == "ExternalName" {
            errs.push(FieldError::forbidden(
                "spec.externalTrafficPolicy",
                "may only be set for externally-accessible services",
            ));
        } else {
            one_of(
                errs,
                "spec.externalTrafficPolicy",
                Some(p),
                &["Cluster", "Local"],
            );
        }
    }
}

pub(crate) fn validate_endpoints(errs: &mut ValidationErrors, e: &Endpoints) {
    check_object_meta(errs, &e.metadata, true, NameRule::Subdomain);
    for (i, s) in e.subsets.iter().flatten().enumerate() {
        let sp = format!("subsets[{i}]");
        for (list, addrs) in [
            ("addresses", &s.addresses),
            ("notReadyAddresses", &s.not_ready_addresses),
        ] {
            for (j, a) in addrs.iter().flatten().enumerate() {
                if a.ip.parse::<IpAddr>().is_err() {
                    errs.push(FieldError::invalid(
                        format!("{sp}.{list}[{j}].ip"),
                        &a.ip,
                        IP_MSG,
                    ));
                }
            }
        }
        for (j, p) in s.ports.iter().flatten().enumerate() {
            let pp = format!("{sp}.ports[{j}]");
            port_in_range(errs, format!("{pp}.port"), p.port);
            one_of(
                errs,
                &format!("{pp}.protocol"),
                p.protocol.as_deref(),
                PROTOCOLS,
            );
            if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                for e in dns1123_label_errors(n) {
                    errs.push(FieldError::invalid(format!("{pp}.name"), n, e));
                }
            }
        }
    }
}

pub(crate) fn validate_endpoint_slice(errs: &mut ValidationErrors, s: &EndpointSlice) {
    check_object_meta(errs, &s.metadata, true, NameRule::Subdomain);
    let types = ["FQDN", "IPv4", "IPv6"];
    if s.address_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !types.contains(&s.address_type.as_str()) {
        errs.push(FieldError::not_supported(
            "addressType",
            &s.address_type,
            &types,
        ));
    }
    for (i, ep) in s.endpoints.iter().enumerate() {
        let p = format!("endpoints[{i}].addresses");
        if ep.addresses.is_empty() {
            errs.push(FieldError::required(
                p.clone(),
                "must contain at least 1 address",
            ));
        } else if ep.addresses.len() > 100 {
            errs.push(FieldError::too_many(
                p.clone(),
                "must have at most 100 items",
            ));
        }
        for (j, a) in ep.addresses.iter().enumerate() {
            let ok = match s.address_type.as_str() {
                "IPv4" => a.parse::<Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<Ipv6Addr>().is_ok(),
                _ => true,
            };
            if !ok {
                errs.push(FieldError::invalid(
                    format!("{p}[{j}]"),
                    a,
                    format!("must be a valid {} address", s.address_type),
                ));
            }
        }
    }
    for (i, port) in s.ports.iter().flatten().enumerate() {
        let pp = format!("ports[{i}]");
        if let Some(n) = port.port {
            port_in_range(errs, format!("{pp}.port"), n);
        }
        one_of(
            errs,
            &format!("{pp}.protocol"),
            port.protocol.as_deref(),
            PROTOCOLS,
        );
        if let Some(n) = port.name.as_deref().filter(|n| !n.is_empty()) {
            for e in dns1123_label_errors(n) {
                errs.push(FieldError::invalid(format!("{pp}.name"), n, e));
            }
        }
    }
}

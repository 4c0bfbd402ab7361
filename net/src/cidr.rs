//! IPv4 prefixes: parsing, and the addresses a pod network uses inside one.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::NetError;

/// An IPv4 prefix such as `10.244.1.0/24`, always stored in its canonical
/// form (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// A prefix from an address and a length; host bits must be zero, so a
    /// typo like `10.244.1.7/24` is caught rather than silently widened.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, NetError> {
        if prefix_len > 32 {
            return Err(NetError::InvalidCidr {
                cidr: format!("{network}/{prefix_len}"),
                reason: "the prefix length must be between 0 and 32".into(),
            });
        }
        let cidr = Ipv4Cidr {
            network,
            prefix_len,
        };
        if u32::from(network) & !cidr.mask() != 0 {
            return Err(NetError::InvalidCidr {
                cidr: format!("{network}/{prefix_len}"),
                reason: format!(
                    "host bits are set; did you mean {}/{prefix_len}?",
                    Ipv4Addr::from(u32::from(network) & cidr.mask())
                ),
            });
        }
        Ok(cidr)
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask as a host-order integer.
    pub fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// The last address of the prefix.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// Number of addresses in the prefix, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// The bridge gateway: the first host address (`.1` of a /24).
    pub fn gateway(&self) -> Result<Ipv4Addr, NetError> {
        self.require_pod_sized()?;
        Ok(Ipv4Addr::from(u32::from(self.network) + 1))
    }

    /// The addresses pods may get: every host address except the gateway,
    /// in ascending order (so network, gateway and broadcast are skipped).
    pub fn pod_range(&self) -> Result<std::ops::RangeInclusive<u32>, NetError> {
        self.require_pod_sized()?;
        let first = u32::from(self.network) + 2;
        let last = u32::from(self.broadcast()) - 1;
        Ok(first..=last)
    }

    /// A string usable as one path component: `10.244.1.0-24`.
    pub fn to_path_component(&self) -> String {
        format!("{}-{}", self.network, self.prefix_len)
    }

    fn require_pod_sized(&self) -> Result<(), NetError> {
        // A /30 is the smallest prefix with a gateway and one pod address.
        if self.prefix_len > 30 {
            return Err(NetError::InvalidCidr {
                cidr: self.to_string(),
                reason:
                    "a pod CIDR needs room for a gateway and at least one pod: use /30 or wider"
                        .into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let invalid = |reason: &str| NetError::InvalidCidr {
            cidr: s.to_string(),
            reason: reason.to_string(),
        };
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected ADDRESS/LENGTH, e.g. 10.244.1.0/24"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid("the address is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| invalid("the prefix length is not a number between 0 and 32"))?;
        Ipv4Cidr::new(network, prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints() {
        let c: Ipv4Cidr = "10.244.3.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.3.0/24");
        assert_eq!(c.gateway().unwrap(), Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 244, 3, 255));
        let r = c.pod_range().unwrap();
        assert_eq!(Ipv4Addr::from(*r.start()), Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(Ipv4Addr::from(*r.end()), Ipv4Addr::new(10, 244, 3, 254));
        assert_eq!(c.to_path_component(), "10.244.3.0-24");
    }

    #[test]
    fn rejects_bad_input_with_a_hint() {
        let err = "10.244.3.7/24".parse::<Ipv4Cidr>().unwrap_err();
        assert!(err.to_string().contains("10.244.3.0/24"), "{err}");
        assert!("10.244.3.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.244.3.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("nope/24".parse::<Ipv4Cidr>().is_err());
        let tiny: Ipv4Cidr = "10.0.0.0/31".parse().unwrap();
        assert!(tiny.pod_range().is_err());
        assert!(tiny.gateway().is_err());
    }

    proptest! {
        #[test]
        fn pod_range_excludes_network_gateway_broadcast(raw in any::<u32>(), len in 0u8..=30) {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            let c = Ipv4Cidr::new(Ipv4Addr::from(raw & mask), len).unwrap();
            let r = c.pod_range().unwrap();
            prop_assert!(*r.start() > u32::from(c.gateway().unwrap()));
            prop_assert!(*r.end() < u32::from(c.broadcast()));
            prop_assert!(c.contains(Ipv4Addr::from(*r.start())));
            prop_assert!(c.contains(Ipv4Addr::from(*r.end())));
            prop_assert_eq!(c.to_string().parse::<Ipv4Cidr>().unwrap(), c);
        }
    }
}

//! Persisted allocators: Service virtual IPs from the service CIDR, and node pod CIDRs
//! (10.244.N.0/24) from the cluster CIDR.
//!
//! The allocated set lives in the store (`/registry/ranges/<name>`) and every change is a
//! compare-and-swap on it, so several API servers sharing one store never hand out the same
//! address, and a restart forgets nothing. `repair` rebuilds the set from the objects that
//! really hold addresses, which frees anything a crash between "allocate" and "create" leaked.

use podd_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error(
        "{what} range {range} is full: every one of its {size} entries is in use; widen the range or delete unused objects"
    )]
    Full {
        what: &'static str,
        range: String,
        size: u32,
    },
    #[error("{what} {value} is outside the range {range}")]
    OutOfRange {
        what: &'static str,
        value: String,
        range: String,
    },
    #[error("{what} {value} is already allocated")]
    InUse { what: &'static str, value: String },
    #[error("invalid CIDR {0:?}: use the form 10.96.0.0/12")]
    BadCidr(String),
    #[error("the allocator state in the store is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, AllocError> {
        let bad = || AllocError::BadCidr(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = l.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        u64::from(ip.wrapping_sub(self.base)) < self.size() && ip >= self.base
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    range: String,
    /// Offsets (in units of one entry) from the start of the range.
    allocated: BTreeSet<u32>,
    /// Where the next search starts, so freed entries are not reused at once.
    next: u32,
}

/// Hands out entries of a range: single addresses (service VIPs) or aligned blocks (pod CIDRs).
pub struct RangeAllocator {
    what: &'static str,
    key: String,
    range: Cidr,
    /// log2 of the entry size: 0 for addresses, 8 for /24 blocks.
    entry_bits: u8,
    reserved: BTreeSet<u32>,
    store: Arc<dyn Store>,
    lock: tokio::sync::Mutex<()>,
}

impl RangeAllocator {
    /// Service VIPs: the network and broadcast addresses are never handed out, nor the
    /// `reserved` ones (the DNS VIP) unless asked for by address.
    pub fn service_ips(
        store: Arc<dyn Store>,
        cidr: &str,
        reserved: &[Ipv4Addr],
    ) -> Result<RangeAllocator, AllocError> {
        let range = Cidr::parse(cidr)?;
        let mut res: BTreeSet<u32> = reserved
            .iter()
            .filter(|ip| range.contains(**ip))
            .map(|ip| u32::from(*ip) - range.base)
            .collect();
        res.insert(0);
        res.insert((range.size() - 1) as u32);
        Ok(RangeAllocator {
            what: "service IP",
            key: "/registry/ranges/serviceips".into(),
            range,
            entry_bits: 0,
            reserved: res,
            store,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Node pod CIDRs of size /`node_prefix` from `cluster_cidr`. Block 0 (10.244.0.0/24) is
    /// kept back, so that node N gets 10.244.N.0/24 with N from 1.
    pub fn pod_cidrs(
        store: Arc<dyn Store>,
        cluster_cidr: &str,
        node_prefix: u8,
    ) -> Result<RangeAllocator, AllocError> {
        let range = Cidr::parse(cluster_cidr)?;
        if node_prefix < range.prefix || node_prefix > 30 {
            return Err(AllocError::BadCidr(format!(
                "{cluster_cidr} with node blocks of /{node_prefix}"
            )));
        }
        Ok(RangeAllocator {
            what: "pod CIDR",
            key: "/registry/ranges/podcidrs".into(),
            range,
            entry_bits: 32 - node_prefix,
            reserved: BTreeSet::from([0]),
            store,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    fn entries(&self) -> u32 {
        (self.range.size() >> self.entry_bits).min(u64::from(u32::MAX)) as u32
    }

    fn format(&self, idx: u32) -> String {
        let ip = Ipv4Addr::from(self.range.base + (idx << self.entry_bits));
        if self.entry_bits == 0 {
            ip.to_string()
        } else {
            format!("{ip}/{}", 32 - self.entry_bits)
        }
    }

    fn index_of(&self, value: &str) -> Result<u32, AllocError> {
        let out = || AllocError::OutOfRange {
            what: self.what,
            value: value.to_string(),
            range: self.range.to_string(),
        };
        let ip_part = value.split('/').next().unwrap_or_default();
        let ip: Ipv4Addr = ip_part.parse().map_err(|_| out())?;
        if !self.range.contains(ip) {
            return Err(out());
        }
        let off = u32::from(ip) - self.range.base;
        if off & ((1u32 << self.entry_bits) - 1) != 0 {
            return Err(out());
        }
        Ok(off >> self.entry_bits)
    }

    async fn load(&self) -> Result<(Persisted, Option<i64>), AllocError> {
        match self.store.get(&self.key).await? {
            Some(kv) => {
                let p: Persisted = serde_json::from_slice(&kv.value)
                    .map_err(|e| AllocError::Corrupt(format!("{}: {e}", self.key)))?;
                Ok((p, Some(kv.mod_revision)))
            }
            None => Ok((
                Persisted {
                    range: self.range.to_string(),
                    ..Persisted::default()
                },
                None,
            )),
        }
    }

    async fn save(&self, p: &Persisted, rev: Option<i64>) -> Result<bool, AllocError> {
        let bytes = serde_json::to_vec(p).map_err(|e| AllocError::Corrupt(e.to_string()))?;
        let res = match rev {
            Some(r) => self
                .store
                .update(&self.key, bytes, Some(r))
                .await
                .map(|_| ()),
            None => self.store.create(&self.key, bytes).await.map(|_| ()),
        };
        match res {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Allocates `wanted` if given (failing if taken), else the next free entry.
    pub async fn allocate(&self, wanted: Option<&str>) -> Result<String, AllocError> {
        let _g = self.lock.lock().await;
        let want = wanted.map(|w| self.index_of(w)).transpose()?;
        loop {
            let (mut p, rev) = self.load().await?;
            let idx = match want {
                Some(i) => {
                    if p.allocated.contains(&i) {
                        return Err(AllocError::InUse {
                            what: self.what,
                            value: self.format(i),
                        });
                    }
                    i
                }
                None => {
                    let n = self.entries();
                    let start = p.next % n.max(1);
                    let free = (0..n)
                        .map(|o| (start + o) % n)
                        .find(|i| !p.allocated.contains(i) && !self.reserved.contains(i));
                    match free {
                        Some(i) => i,
                        None => {
                            return Err(AllocError::Full {
                                what: self.what,
                                range: self.range.to_string(),
                                size: n,
                            });
                        }
                    }
                }
            };
            p.allocated.insert(idx);
            if want.is_none() {
                p.next = idx.wrapping_add(1);
            }
            if self.save(&p, rev).await? {
                return Ok(self.format(idx));
            }
        }
    }

    /// Frees `value`; freeing something not allocated is fine.
    pub async fn release(&self, value: &str) -> Result<(), AllocError> {
        let Ok(idx) = self.index_of(value) else {
            return Ok(());
        };
        let _g = self.lock.lock().await;
        loop {
            let (mut p, rev) = self.load().await?;
            if !p.allocated.remove(&idx) {
                return Ok(());
            }
            if self.save(&p, rev).await? {
                return Ok(());
            }
        }
    }

    /// Makes the allocated set exactly `in_use` (the values that objects really hold).
    pub async fn repair(&self, in_use: &[String]) -> Result<(), AllocError> {
        let _g = self.lock.lock().await;
        let set: BTreeSet<u32> = in_use
            .iter()
            .filter_map(|v| self.index_of(v).ok())
            .collect();
        loop {
            let (mut p, rev) = self.load().await?;
            if p.allocated == set && rev.is_some() {
                return Ok(());
            }
            p.allocated = set.clone();
            if self.save(&p, rev).await? {
                return Ok(());
            }
        }
    }

    /// How many entries are allocated now.
    pub async fn allocated_count(&self) -> Result<usize, AllocError> {
        Ok(self.load().await?.0.allocated.len())
    }
}

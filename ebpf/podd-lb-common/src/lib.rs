//! Map layouts shared by the kernel programs (`podd-ebpf`) and the loader (`podd-lb`).
//!
//! Every type is `#[repr(C)]` with explicit padding fields, so that both sides agree byte for
//! byte and no uninitialised padding ever reaches a hash map key. Addresses and ports are kept
//! exactly as the kernel hands them to `cgroup/connect4` (`user_ip4`, `user_port`): in network
//! byte order. Use [`ip_to_map`] / [`port_to_map`] to convert from host order.
#![no_std]

/// IPPROTO_TCP.
pub const PROTO_TCP: u8 = 6;
/// IPPROTO_UDP.
pub const PROTO_UDP: u8 = 17;

/// Service flag: ClientIP session affinity (same client network namespace, same backend).
pub const FLAG_AFFINITY_CLIENT_IP: u32 = 1;
/// Service flag: Maglev consistent choice through the `MAGLEV` lookup table.
pub const FLAG_MAGLEV: u32 = 2;

/// Entries in one service's Maglev lookup table (a prime, as Maglev requires).
pub const MAGLEV_TABLE_SIZE: u32 = 1021;

/// Map names, as pinned under the loader's pin directory.
pub const MAP_SERVICES: &str = "PODD_SERVICES";
pub const MAP_BACKENDS: &str = "PODD_BACKENDS";
pub const MAP_MAGLEV: &str = "PODD_MAGLEV";
pub const MAP_REVNAT: &str = "PODD_REVNAT";
pub const MAP_AFFINITY: &str = "PODD_AFFINITY";
pub const MAP_STATS: &str = "PODD_STATS";

/// Capacities. The hash maps are created with `BPF_F_NO_PREALLOC`, so a large capacity costs
/// nothing until used, and a replaced element is freed only after an RCU grace period (a
/// program reading it never sees a torn or recycled value).
pub const MAX_SERVICES: u32 = 65_536;
pub const MAX_BACKENDS: u32 = 1 << 20;
pub const MAX_MAGLEV_ENTRIES: u32 = 1 << 20;
pub const MAX_REVNAT: u32 = 1 << 18;
pub const MAX_AFFINITY: u32 = 1 << 16;

/// `SERVICES` key: one service port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceKey {
    /// Virtual IP, network byte order.
    pub vip: u32,
    /// Service port, network byte order.
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    pub pad: u8,
}

/// `SERVICES` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    /// Index into `STATS`, and the first half of the `BACKENDS` / `MAGLEV` keys.
    pub id: u32,
    /// Number of published backend slots `0..count`; 0 means "no ready backend".
    pub count: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub pad: u32,
}

/// `BACKENDS` key: slot `slot` of service `service_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BackendKey {
    pub service_id: u32,
    pub slot: u32,
}

/// A backend address (`BACKENDS` and `MAGLEV` values).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Backend {
    /// Network byte order.
    pub ip: u32,
    /// Network byte order.
    pub port: u16,
    pub pad: u16,
}

/// `MAGLEV` key: entry `index` (`< MAGLEV_TABLE_SIZE`) of service `service_id`'s table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MaglevKey {
    pub service_id: u32,
    pub index: u32,
}

/// `REVNAT` key: a socket and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RevNatKey {
    pub cookie: u64,
    pub ip: u32,
    pub port: u16,
    pub pad: u16,
}

/// `REVNAT` value: the service address the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RevNatValue {
    pub vip: u32,
    pub port: u16,
    pub pad: u16,
}

/// `AFFINITY` key: a client network namespace and a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AffinityKey {
    pub netns_cookie: u64,
    pub service_id: u32,
    pub pad: u32,
}

/// `AFFINITY` value: the slot chosen last time and what it held, so a moved or removed backend
/// is noticed (the slot no longer holds it) and a new one chosen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AffinityValue {
    pub slot: u32,
    pub backend: Backend,
}

/// `STATS` value (per CPU, indexed by service id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceStats {
    /// Connections (and unconnected UDP sends) directed to a backend.
    pub connections: u64,
    /// Attempts refused because the service had no ready backend.
    pub no_backend: u64,
}

const _: () = {
    assert!(core::mem::size_of::<ServiceKey>() == 8);
    assert!(core::mem::size_of::<ServiceValue>() == 16);
    assert!(core::mem::size_of::<BackendKey>() == 8);
    assert!(core::mem::size_of::<Backend>() == 8);
    assert!(core::mem::size_of::<MaglevKey>() == 8);
    assert!(core::mem::size_of::<RevNatKey>() == 16);
    assert!(core::mem::size_of::<RevNatValue>() == 8);
    assert!(core::mem::size_of::<AffinityKey>() == 16);
    assert!(core::mem::size_of::<AffinityValue>() == 12);
    assert!(core::mem::size_of::<ServiceStats>() == 16);
};

/// An IPv4 address (host order, e.g. from `u32::from(Ipv4Addr)`) as stored in the maps.
pub const fn ip_to_map(host_order: u32) -> u32 {
    host_order.to_be()
}

/// A map address back to host order.
pub const fn ip_from_map(map: u32) -> u32 {
    u32::from_be(map)
}

/// A port (host order) as stored in the maps.
pub const fn port_to_map(host_order: u16) -> u16 {
    host_order.to_be()
}

/// A map port back to host order.
pub const fn port_from_map(map: u16) -> u16 {
    u16::from_be(map)
}

/// The hash the kernel side uses to pick a Maglev table entry for a client network namespace.
/// Shared so that tests can predict the choice.
pub const fn maglev_client_hash(netns_cookie: u64) -> u32 {
    // splitmix64 finaliser: cheap and well mixed.
    let mut z = netns_cookie.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z ^ (z >> 32)) as u32
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: all these types are `#[repr(C)]`, `Copy`, made only of integers, with every
    // padding byte an explicit field, so any bit pattern is valid and there are no holes.
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServiceValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for MaglevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RevNatKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RevNatValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for AffinityKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for AffinityValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServiceStats {}
}

//! podd's socket-level service load balancer: cgroup sock_addr programs.
//!
//! - `connect4` rewrites the destination of a TCP or connected-UDP `connect()` from a service
//!   (VIP, port, protocol) to one ready backend, once per connection, before any packet exists;
//! - `sendmsg4` does the same per datagram for unconnected UDP;
//! - `recvmsg4` and `getpeername4` translate a backend address back to the service address,
//!   keyed by socket cookie, so the application only ever sees the VIP.
//!
//! Map layouts are in `podd-lb-common`; the loader (`podd-lb`) fills them.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::SockAddrContext,
};
use podd_lb_common::{
    AffinityKey, AffinityValue, Backend, BackendKey, FLAG_AFFINITY_CLIENT_IP, FLAG_MAGLEV,
    MAGLEV_TABLE_SIZE, MAX_AFFINITY, MAX_BACKENDS, MAX_MAGLEV_ENTRIES, MAX_REVNAT, MAX_SERVICES,
    MaglevKey, RevNatKey, RevNatValue, ServiceKey, ServiceStats, ServiceValue, maglev_client_hash,
};

/// BPF_F_NO_PREALLOC: elements are RCU-freed, so a replaced value is never recycled under a
/// reader (see podd-lb-common).
const NO_PREALLOC: u32 = 1;

#[map(name = "PODD_SERVICES")]
static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICES, NO_PREALLOC);

#[map(name = "PODD_BACKENDS")]
static BACKENDS: HashMap<BackendKey, Backend> = HashMap::pinned(MAX_BACKENDS, NO_PREALLOC);

#[map(name = "PODD_MAGLEV")]
static MAGLEV: HashMap<MaglevKey, Backend> = HashMap::pinned(MAX_MAGLEV_ENTRIES, NO_PREALLOC);

#[map(name = "PODD_REVNAT")]
static REVNAT: LruHashMap<RevNatKey, RevNatValue> = LruHashMap::pinned(MAX_REVNAT, 0);

#[map(name = "PODD_AFFINITY")]
static AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::pinned(MAX_AFFINITY, 0);

#[map(name = "PODD_STATS")]
static STATS: PerCpuArray<ServiceStats> = PerCpuArray::pinned(MAX_SERVICES, 0);

/// 127.0.0.1 in network byte order (as it sits in `user_ip4`).
const LOOPBACK_NBO: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Connect,
    SendMsg,
}

#[cgroup_sock_addr(connect4)]
pub fn podd_connect4(ctx: SockAddrContext) -> i32 {
    forward(&ctx, Hook::Connect)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn podd_sendmsg4(ctx: SockAddrContext) -> i32 {
    forward(&ctx, Hook::SendMsg)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn podd_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    1
}

#[cgroup_sock_addr(getpeername4)]
pub fn podd_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    1
}

/// Service address → backend. Returns 1 (allow) except for an unconnected UDP send to a
/// service without ready backends, which is refused (the kernel reports EPERM).
#[inline(always)]
fn forward(ctx: &SockAddrContext, hook: Hook) -> i32 {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: `sa` is the context pointer the kernel passed to this program; these field reads
    // are context accesses the verifier checks and rewrites.
    let (vip, port_nbo, proto) = unsafe { ((*sa).user_ip4, (*sa).user_port, (*sa).protocol) };
    let key = ServiceKey {
        vip,
        port: port_nbo as u16,
        proto: proto as u8,
        pad: 0,
    };
    let Some(svc) = SERVICES.get_ptr(key) else {
        return 1;
    };
    // SAFETY: a non-null pointer into a map value, valid for this program run (RCU).
    let svc: ServiceValue = unsafe { core::ptr::read_volatile(svc) };

    let backend = if svc.count == 0 {
        None
    } else if svc.flags & FLAG_MAGLEV != 0 {
        maglev_pick(ctx, &svc)
    } else if svc.flags & FLAG_AFFINITY_CLIENT_IP != 0 {
        affinity_pick(ctx, &svc)
    } else {
        random_pick(&svc)
    };

    let Some(backend) = backend else {
        count(svc.id, false);
        return match hook {
            // No listener can ever bind port 0, so the client's own loopback answers the SYN
            // with a reset: connect() fails at once with ECONNREFUSED, as for a closed port
            // (connected UDP: the first send draws an ICMP port unreachable, ECONNREFUSED).
            Hook::Connect => {
                // SAFETY: context field writes allowed for connect4, checked by the verifier.
                unsafe {
                    (*sa).user_ip4 = LOOPBACK_NBO;
                    (*sa).user_port = 0;
                }
                1
            }
            // The kernel rejects port 0 for sendmsg (EINVAL); refusing is clearer (EPERM).
            Hook::SendMsg => 0,
        };
    };

    // SAFETY: context field writes allowed for connect4/sendmsg4, checked by the verifier.
    unsafe {
        (*sa).user_ip4 = backend.ip;
        (*sa).user_port = backend.port as u32;
    }
    // SAFETY: the helper takes this program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let rev_key = RevNatKey {
        cookie,
        ip: backend.ip,
        port: backend.port,
        pad: 0,
    };
    let rev = RevNatValue {
        vip,
        port: port_nbo as u16,
        pad: 0,
    };
    // A full LRU map evicts the oldest entry; an insert can't fail for lack of space.
    let _ = REVNAT.insert(rev_key, rev, 0);
    count(svc.id, true);
    1
}

#[inline(always)]
fn backend_at(id: u32, slot: u32) -> Option<Backend> {
    let p = BACKENDS.get_ptr(BackendKey {
        service_id: id,
        slot,
    })?;
    // SAFETY: a non-null pointer into a map value, valid for this program run (RCU).
    Some(unsafe { core::ptr::read_volatile(p) })
}

#[inline(always)]
fn random_pick(svc: &ServiceValue) -> Option<Backend> {
    // SAFETY: helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    let slot = r % svc.count;
    // A reader that saw an old, larger count may find its slot just deleted by a shrink:
    // slot 0 is always present while count > 0.
    backend_at(svc.id, slot).or_else(|| backend_at(svc.id, 0))
}

#[inline(always)]
fn affinity_pick(ctx: &SockAddrContext, svc: &ServiceValue) -> Option<Backend> {
    // SAFETY: the helper takes this program's context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    let key = AffinityKey {
        netns_cookie,
        service_id: svc.id,
        pad: 0,
    };
    if let Some(p) = AFFINITY.get_ptr(key) {
        // SAFETY: a non-null pointer into a map value, valid for this program run.
        let prev: AffinityValue = unsafe { core::ptr::read_volatile(p) };
        // Still published, and the slot still holds the same backend: keep it.
        if prev.slot < svc.count
            && let Some(b) = backend_at(svc.id, prev.slot)
            && b == prev.backend
        {
            return Some(b);
        }
    }
    // SAFETY: helper without arguments.
    let slot = unsafe { bpf_get_prandom_u32() } % svc.count;
    let (slot, b) = match backend_at(svc.id, slot) {
        Some(b) => (slot, b),
        None => (0, backend_at(svc.id, 0)?),
    };
    let _ = AFFINITY.insert(key, AffinityValue { slot, backend: b }, 0);
    Some(b)
}

#[inline(always)]
fn maglev_pick(ctx: &SockAddrContext, svc: &ServiceValue) -> Option<Backend> {
    // SAFETY: the helper takes this program's context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    let index = maglev_client_hash(netns_cookie) % MAGLEV_TABLE_SIZE;
    let p = MAGLEV.get_ptr(MaglevKey {
        service_id: svc.id,
        index,
    })?;
    // SAFETY: a non-null pointer into a map value, valid for this program run (RCU).
    Some(unsafe { core::ptr::read_volatile(p) })
}

#[inline(always)]
fn count(id: u32, connected: bool) {
    if let Some(s) = STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU value of this CPU; programs don't migrate while running.
        unsafe {
            if connected {
                (*s).connections += 1;
            } else {
                (*s).no_backend += 1;
            }
        }
    }
}

/// Backend address → service address, for recvmsg4 (datagram source) and getpeername4.
#[inline(always)]
fn reverse(ctx: &SockAddrContext) {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: the helper takes this program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: context field reads, checked by the verifier.
    let (ip, port) = unsafe { ((*sa).user_ip4, (*sa).user_port) };
    let key = RevNatKey {
        cookie,
        ip,
        port: port as u16,
        pad: 0,
    };
    if let Some(p) = REVNAT.get_ptr(key) {
        // SAFETY: a non-null pointer into a map value, valid for this program run.
        let v: RevNatValue = unsafe { core::ptr::read_volatile(p) };
        // SAFETY: context field writes allowed for recvmsg4/getpeername4.
        unsafe {
            (*sa).user_ip4 = v.vip;
            (*sa).user_port = v.port as u32;
        }
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

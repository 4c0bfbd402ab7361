//! A small synchronous rtnetlink client over `netlink-sys` and
//! `netlink-packet-route`.
//!
//! Why synchronous: every operation podd does is one request and its ACK (or a
//! short dump), done from the agent's pod-setup path; a blocking socket keeps
//! that path free of an async runtime and makes "a socket in another network
//! namespace" trivial. A netlink socket acts on the namespace it was *created*
//! in, so [`Netlink::open_in`] creates it on a helper thread that joined the
//! target namespace, and the socket can then be used from any thread.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{NetError, Result};
use crate::netns::{NsKind, run_in_namespace};
use tracing::warn;

/// What podd needs to know about a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    /// The index of the bridge (or other controller) this link is attached to.
    pub controller: Option<u32>,
    /// The link kind, e.g. "bridge" or "veth"; `None` for physical devices and lo.
    pub kind: Option<String>,
}

/// An IPv4 route in the main table, as podd sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub output_interface: Option<u32>,
    /// The `rtm_protocol` number: who created the route (2 = kernel, 3 = boot/`ip route`, ...).
    pub protocol: u8,
}

/// The kernel flagged a dump as torn by a concurrent change (NLM_F_DUMP_INTR).
#[derive(Debug)]
struct DumpInterrupted;

impl std::fmt::Display for DumpInterrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the netlink dump was interrupted by a concurrent change; retry")
    }
}

impl std::error::Error for DumpInterrupted {}

/// A blocking rtnetlink socket bound to one network namespace.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)
            .map_err(|e| NetError::netlink("socket", "NETLINK_ROUTE", e))?;
        socket
            .bind_auto()
            .map_err(|e| NetError::netlink("bind", "NETLINK_ROUTE", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| NetError::netlink("connect", "the kernel", e))?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// A socket in the network namespace held at `netns` (an nsfs file such as
    /// `/run/podd/netns/POD`).
    pub fn open_in(netns: &Path) -> Result<Self> {
        run_in_namespace(netns, NsKind::Net, Netlink::open)?
    }

    /// Sends one request and collects the replies until the ACK (or, for a
    /// dump, until NLMSG_DONE).
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if is_dump { 0 } else { NLM_F_ACK };
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buffer = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buffer);
        loop {
            match self.socket.send(&buffer, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => {
                    other?;
                    break;
                }
            }
        }

        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let datagram = match self.socket.recv_from_full() {
                Ok((datagram, _)) => datagram,
                // A signal handler ran; the reply is still coming.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut offset = 0;
            while offset < datagram.len() {
                let reply =
                    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..]) {
                        Ok(reply) => reply,
                        Err(e) => {
                            // One object this crate version cannot parse (say, a
                            // link kind from a newer kernel) must not fail a whole
                            // dump: skip it by the length in its header. ACKs,
                            // errors and DONE are always parseable.
                            let length = datagram
                                .get(offset..offset + 4)
                                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
                                .unwrap_or(0);
                            if length < 16 {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    e.to_string(),
                                ));
                            }
                            warn!(error = %e, "skipping a netlink message that cannot be parsed");
                            offset += (length + 3) & !3;
                            continue;
                        }
                    };
                let length = reply.header.length as usize;
                if length == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink reply with zero length",
                    ));
                }
                offset += (length + 3) & !3;
                if reply.header.sequence_number != sequence {
                    continue; // a late reply to an earlier request that failed midway
                }
                // The table changed during the dump: the result may be torn.
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(replies),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) if interrupted => {
                        return Err(io::Error::other(DumpInterrupted));
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
            }
        }
    }

    /// A dump, retried while the kernel reports it was interrupted by a
    /// concurrent change (NLM_F_DUMP_INTR), so callers never plan on a torn view.
    fn dump(&mut self, message: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut attempts = 0;
        loop {
            match self.request(message.clone(), NLM_F_DUMP) {
                Err(e)
                    if attempts < 10
                        && e.get_ref()
                            .is_some_and(|inner| inner.is::<DumpInterrupted>()) =>
                {
                    attempts += 1
                }
                result => return result,
            }
        }
    }

    /// One link by name, or `None` if there is no such link.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(message), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(link_from_reply)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetError::netlink("get link", name, e)),
        }
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|e| NetError::netlink("dump links", "all links", e))?;
        Ok(replies.into_iter().filter_map(link_from_reply).collect())
    }

    /// Creates a bridge (down, no address). With `mac`, the bridge keeps that
    /// address for good; without, the kernel gives it the lowest MAC of its
    /// ports, which changes as ports come and go.
    pub fn add_bridge(&mut self, name: &str, mac: Option<[u8; 6]>) -> Result<()> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        if let Some(mac) = mac {
            message
                .attributes
                .push(LinkAttribute::Address(mac.to_vec()));
        }
        message
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|e| NetError::netlink("create bridge", name, e))?;
        Ok(())
    }

    /// Creates a veth pair whose first end, `name`, stays here (attached to
    /// `controller` and up) and whose peer is created directly inside the
    /// namespace `peer_netns` under the name `peer_name`. Creating the peer
    /// in place is the atomic form of "create, move, rename": no moment where
    /// a half-configured interface sits in the node namespace.
    pub fn add_veth_pair(
        &mut self,
        name: &str,
        controller: u32,
        peer_name: &str,
        peer_netns: BorrowedFd<'_>,
        peer_mac: Option<[u8; 6]>,
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut peer = LinkMessage::default();
        if let Some(mac) = peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        peer.attributes
            .push(LinkAttribute::IfName(peer_name.to_string()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut message = LinkMessage::default();
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        message
            .attributes
            .push(LinkAttribute::Controller(controller));
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|e| NetError::netlink("create veth pair", format!("{name} <-> {peer_name}"), e))?;
        Ok(())
    }

    /// Sets a link up or down.
    pub fn set_link_up(&mut self, index: u32, up: bool) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map_err(|e| NetError::netlink("set link up", format!("ifindex {index}"), e))?;
        Ok(())
    }

    /// Deletes a link; for a veth both ends go. Returns false if it was already gone.
    pub fn delete_link(&mut self, index: u32) -> Result<bool> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(message), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(NetError::netlink(
                "delete link",
                format!("ifindex {index}"),
                e,
            )),
        }
    }

    /// Adds `address/prefix_len` to a link; an address already there is kept as is.
    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix_len;
        message.header.index = index;
        message.header.scope = AddressScope::Universe;
        message
            .attributes
            .push(AddressAttribute::Local(address.into()));
        message
            .attributes
            .push(AddressAttribute::Address(address.into()));
        if prefix_len < 31 {
            let host_bits = u32::MAX >> prefix_len;
            let broadcast = Ipv4Addr::from(u32::from(address) | host_bits);
            message
                .attributes
                .push(AddressAttribute::Broadcast(broadcast));
        }
        match self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(NetError::netlink(
                "add address",
                format!("{address}/{prefix_len} on ifindex {index}"),
                e,
            )),
        }
    }

    /// The IPv4 addresses (with prefix length) of one link.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(request))
            .map_err(|e| NetError::netlink("dump addresses", format!("ifindex {index}"), e))?;
        let mut out = Vec::new();
        for reply in replies {
            if let RouteNetlinkMessage::NewAddress(message) = reply {
                if message.header.index != index {
                    continue;
                }
                for attribute in &message.attributes {
                    if let AddressAttribute::Local(std::net::IpAddr::V4(ip)) = attribute {
                        out.push((*ip, message.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds (or, with `replace`, adds or replaces) an IPv4 route in the main table.
    pub fn add_route(&mut self, route: &Route, replace: bool) -> Result<()> {
        let message = route_message(route);
        let flags = NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        self.request(RouteNetlinkMessage::NewRoute(message), flags)
            .map_err(|e| NetError::netlink("add route", describe_route(route), e))?;
        Ok(())
    }

    /// Deletes an IPv4 route from the main table. Returns false if it was already gone.
    pub fn delete_route(&mut self, route: &Route) -> Result<bool> {
        let mut message = route_message(route);
        // Like `ip route del`: match the route whatever its scope; the
        // protocol number still has to match, so only podd's routes go.
        message.header.scope = RouteScope::NoWhere;
        match self.request(RouteNetlinkMessage::DelRoute(message), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(NetError::netlink("delete route", describe_route(route), e)),
        }
    }

    /// Adds an `unreachable` route for a prefix: packets to it are refused
    /// here (ICMP host unreachable) instead of following a default route out.
    /// Returns false, changing nothing, if some route for the prefix exists.
    pub fn add_unreachable_route(
        &mut self,
        destination: Ipv4Addr,
        prefix_len: u8,
        protocol: u8,
    ) -> Result<bool> {
        let message = unreachable_route_message(destination, prefix_len, protocol);
        match self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(NetError::netlink(
                "add unreachable route",
                format!("{destination}/{prefix_len} proto {protocol}"),
                e,
            )),
        }
    }

    /// Deletes an `unreachable` route with this protocol number; false if none.
    pub fn delete_unreachable_route(
        &mut self,
        destination: Ipv4Addr,
        prefix_len: u8,
        protocol: u8,
    ) -> Result<bool> {
        let mut message = unreachable_route_message(destination, prefix_len, protocol);
        message.header.scope = RouteScope::NoWhere;
        match self.request(RouteNetlinkMessage::DelRoute(message), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(NetError::netlink(
                "delete unreachable route",
                format!("{destination}/{prefix_len} proto {protocol}"),
                e,
            )),
        }
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetRoute(request))
            .map_err(|e| NetError::netlink("dump routes", "the main table", e))?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(message) = reply else {
                continue;
            };
            let mut table = u32::from(message.header.table);
            let mut route = Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: message.header.destination_prefix_length,
                gateway: None,
                output_interface: None,
                protocol: u8::from(message.header.protocol),
            };
            for attribute in &message.attributes {
                match attribute {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.destination = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                    RouteAttribute::Oif(index) => route.output_interface = Some(*index),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table == u32::from(RouteHeader::RT_TABLE_MAIN)
                && message.header.kind == RouteType::Unicast
            {
                out.push(route);
            }
        }
        Ok(out)
    }
}

fn link_from_reply(reply: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(message) = reply else {
        return None;
    };
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        up: message.header.flags.contains(LinkFlags::Up),
        controller: None,
        kind: None,
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Controller(index) => link.controller = Some(index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

fn route_message(route: &Route) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.destination_prefix_length = route.prefix_len;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::from(route.protocol);
    message.header.kind = RouteType::Unicast;
    // A route through a gateway is universe-scoped; one straight out of an
    // interface reaches only the link.
    message.header.scope = if route.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if route.prefix_len > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                route.destination,
            )));
    }
    if let Some(gateway) = route.gateway {
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    }
    if let Some(index) = route.output_interface {
        message.attributes.push(RouteAttribute::Oif(index));
    }
    message
}

fn unreachable_route_message(destination: Ipv4Addr, prefix_len: u8, protocol: u8) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.destination_prefix_length = prefix_len;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::from(protocol);
    message.header.kind = RouteType::Unreachable;
    message.header.scope = RouteScope::Universe;
    if prefix_len > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(destination)));
    }
    message
}

fn describe_route(route: &Route) -> String {
    let mut text = format!("{}/{}", route.destination, route.prefix_len);
    if let Some(gateway) = route.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    if let Some(index) = route.output_interface {
        text.push_str(&format!(" dev ifindex {index}"));
    }
    text.push_str(&format!(" proto {}", route.protocol));
    text
}

//! Kernel routing for the software data plane, over rtnetlink.
//!
//! Routes to the peers' selectors point into the TUN device from a routing
//! table of ironsa's own ([`ROUTE_TABLE`]), consulted through one policy
//! rule per address family for packets that do not carry [`OUTER_MARK`].
//! ironsa marks every socket it sends IKE and ESP with, so its own outer
//! traffic never enters that table: a selector that covers the peer's
//! address (transport mode, or a `0.0.0.0/0` tunnel) cannot loop the
//! gateway's packets back into its TUN device.
//!
//! Netlink requests block, so they run on a routing thread of their own
//! ([`TunRoutes`]); the shards only queue requests to it. The TUN device's
//! link settings and counters are read and written synchronously with an
//! [`Rtnl`] handle where blocking is harmless (start-up, metrics).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use control::ike_sa::ChildSaInstall;
use control::wire::ikev2::TrafficSelector;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleHeader, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};
use tracing::{debug, info, warn};

/// Firewall mark on every socket ironsa sends IKE and ESP with.
pub const OUTER_MARK: u32 = 0x4500;
/// The bits of the mark the routing rule looks at.
pub const OUTER_MARK_MASK: u32 = 0xffff;
/// ironsa's routing table (routes into the TUN device).
pub const ROUTE_TABLE: u32 = 4500;
/// Priority of the rules that send unmarked packets to [`ROUTE_TABLE`]
/// (before the main table's 32766, so the tunnels win over a default route).
pub const RULE_PRIORITY: u32 = 4500;

/// A netlink request the kernel refused, or a netlink socket failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The netlink socket could not be opened, written or read.
    #[error("netlink socket: {0}")]
    Socket(#[from] io::Error),
    /// The kernel answered the request with an error.
    #[error("{what}: {source}")]
    Refused {
        /// The request, as an operator reads it.
        what: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// The kernel's answer could not be decoded.
    #[error("undecodable netlink answer to {what}: {reason}")]
    Decode {
        /// The request.
        what: String,
        /// Why the answer did not decode.
        reason: String,
    },
    /// No network interface of that name.
    #[error("no network interface named {0}")]
    NoSuchLink(String),
}

/// Counters of a network interface that show packets the kernel dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkDrops {
    /// Packets the device dropped on receive (for a TUN device: packets we
    /// wrote that the kernel did not take).
    pub rx_dropped: u64,
    /// Packets the device dropped on transmit (for a TUN device: packets the
    /// kernel routed to us while the device's queue was full).
    pub tx_dropped: u64,
}

/// A synchronous rtnetlink handle: one request at a time, each acknowledged.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// Opens a NETLINK_ROUTE socket.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends `msg` and returns the answers up to the acknowledgement.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut answers = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut off = 0;
            while off < data.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..]).map_err(|e| {
                    NetlinkError::Decode {
                        what: what(),
                        reason: e.to_string(),
                    }
                })?;
                let len = m.header.length as usize;
                let ours = m.header.sequence_number == self.seq;
                match m.payload {
                    NetlinkPayload::Error(e) if ours => {
                        return match e.code {
                            None => Ok(answers),
                            Some(_) => Err(NetlinkError::Refused {
                                what: what(),
                                source: e.to_io(),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) if ours => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) if ours => answers.push(inner),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// The index of interface `name`.
    pub fn link_index(name: &str) -> Result<u32, NetlinkError> {
        nix::net::if_::if_nametoindex(name).map_err(|_| NetlinkError::NoSuchLink(name.to_string()))
    }

    /// Sets the interface up with the given MTU and transmit queue length.
    pub fn link_up(&mut self, index: u32, mtu: u32, tx_queue_len: u32) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes = vec![LinkAttribute::Mtu(mtu), LinkAttribute::TxQueueLen(tx_queue_len)];
        self.request(RouteNetlinkMessage::SetLink(m), 0, || {
            format!("setting link {index} up (mtu {mtu}, txqueuelen {tx_queue_len})")
        })
        .map(drop)
    }

    /// The drop counters of interface `index`.
    pub fn link_drops(&mut self, index: u32) -> Result<LinkDrops, NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        let answers = self.request(RouteNetlinkMessage::GetLink(m), 0, || format!("reading link {index}"))?;
        for a in answers {
            if let RouteNetlinkMessage::NewLink(l) = a {
                for attr in l.attributes {
                    if let LinkAttribute::Stats64(s) = attr {
                        return Ok(LinkDrops {
                            rx_dropped: s.rx_dropped,
                            tx_dropped: s.tx_dropped,
                        });
                    }
                }
            }
        }
        Err(NetlinkError::Decode {
            what: format!("reading link {index}"),
            reason: "no 64-bit statistics in the answer".into(),
        })
    }

    fn route_message(route: &Route, oif: u32) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header = RouteHeader {
            address_family: family(route.dst),
            destination_prefix_length: route.prefix_len,
            table: RouteHeader::RT_TABLE_UNSPEC,
            protocol: RouteProtocol::Static,
            scope: RouteScope::Link,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        m.attributes = vec![
            RouteAttribute::Table(ROUTE_TABLE),
            RouteAttribute::Destination(RouteAddress::from(route.dst)),
            RouteAttribute::Oif(oif),
        ];
        if let Some(src) = route.src {
            m.attributes.push(RouteAttribute::PrefSource(RouteAddress::from(src)));
        }
        m
    }

    /// Adds (or replaces) `route` through interface `oif` in [`ROUTE_TABLE`].
    pub fn add_route(&mut self, route: &Route, oif: u32) -> Result<(), NetlinkError> {
        let m = Self::route_message(route, oif);
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE, || {
            format!("adding route {route} to table {ROUTE_TABLE}")
        })
        .map(drop)
    }

    /// Adds (`add`) or deletes host address `addr` on interface `oif`.
    pub fn address(&mut self, addr: &IpAddr, oif: u32, add: bool) -> Result<(), NetlinkError> {
        use netlink_packet_route::address::{AddressAttribute, AddressHeader, AddressMessage, AddressScope};
        let mut m = AddressMessage::default();
        m.header = AddressHeader {
            family: if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            },
            prefix_len: if addr.is_ipv4() { 32 } else { 128 },
            scope: AddressScope::Universe,
            index: oif,
            ..AddressHeader::default()
        };
        m.attributes = vec![AddressAttribute::Local(*addr), AddressAttribute::Address(*addr)];
        if add {
            self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_REPLACE, || {
                format!("adding address {addr}")
            })
        } else {
            self.request(RouteNetlinkMessage::DelAddress(m), 0, || {
                format!("deleting address {addr}")
            })
        }
        .map(drop)
    }

    /// Deletes `route` through interface `oif` from [`ROUTE_TABLE`].
    pub fn delete_route(&mut self, route: &Route, oif: u32) -> Result<(), NetlinkError> {
        let m = Self::route_message(route, oif);
        self.request(RouteNetlinkMessage::DelRoute(m), 0, || {
            format!("deleting route {route} from table {ROUTE_TABLE}")
        })
        .map(drop)
    }

    fn rule_message(af: AddressFamily) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header = RuleHeader {
            family: af,
            action: RuleAction::ToTable,
            flags: RuleFlags::Invert,
            ..RuleHeader::default()
        };
        m.attributes = vec![
            RuleAttribute::Priority(RULE_PRIORITY),
            RuleAttribute::FwMark(OUTER_MARK),
            RuleAttribute::FwMask(OUTER_MARK_MASK),
            RuleAttribute::Table(ROUTE_TABLE),
        ];
        m
    }

    /// Adds the rules `not fwmark OUTER_MARK/OUTER_MARK_MASK lookup
    /// ROUTE_TABLE` (IPv4 and IPv6), replacing ones a previous run left. A
    /// kernel without IPv6 only gets the IPv4 rule (logged).
    pub fn add_rules(&mut self) -> Result<(), NetlinkError> {
        self.delete_rules();
        for af in [AddressFamily::Inet, AddressFamily::Inet6] {
            let added = self.request(
                RouteNetlinkMessage::NewRule(Self::rule_message(af)),
                NLM_F_CREATE,
                || {
                    format!(
                        "adding rule 'not fwmark {OUTER_MARK:#x}/{OUTER_MARK_MASK:#x} lookup {ROUTE_TABLE}' ({af:?})"
                    )
                },
            );
            match added {
                Err(e) if af == AddressFamily::Inet6 => warn!("IPv6 tunnel routes will not be used: {e}"),
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Deletes the rules of [`Rtnl::add_rules`] (all copies; absent ones are fine).
    pub fn delete_rules(&mut self) {
        for af in [AddressFamily::Inet, AddressFamily::Inet6] {
            while self
                .request(RouteNetlinkMessage::DelRule(Self::rule_message(af)), 0, String::new)
                .is_ok()
            {}
        }
    }
}

fn family(a: IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// A route into the TUN device: a peer's selector as a prefix, with the
/// source address the kernel should pick for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Network address.
    pub dst: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Preferred source (our outer address in transport mode).
    pub src: Option<IpAddr>,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.dst, self.prefix_len)?;
        if let Some(s) = self.src {
            write!(f, " src {s}")?;
        }
        Ok(())
    }
}

impl Route {
    /// True if every address `other` routes, this route routes too (and
    /// `other` asks for no preferred source of its own).
    pub fn covers(&self, other: &Route) -> bool {
        fn bits(a: IpAddr) -> (u128, u8) {
            match a {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        }
        let ((net, width), (addr, other_width)) = (bits(self.dst), bits(other.dst));
        if width != other_width || other.prefix_len < self.prefix_len || other.src.is_some() {
            return false;
        }
        let host_bits = u32::from(width - self.prefix_len.min(width)) + (128 - u32::from(width));
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        let shift = 128 - u32::from(width);
        (net << shift) & mask == (addr << shift) & mask
    }

    /// The prefixes that route exactly the addresses `first..=last` (a pool's range).
    pub fn for_range(first: IpAddr, last: IpAddr) -> Vec<Route> {
        let (lo, hi, bits) = match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return Vec::new(),
        };
        fastpath::spd::range_to_prefixes(lo, hi, bits)
            .into_iter()
            .map(|(net, prefix_len)| Route {
                dst: if bits == 32 {
                    IpAddr::V4(std::net::Ipv4Addr::from(net as u32))
                } else {
                    IpAddr::V6(std::net::Ipv6Addr::from(net))
                },
                prefix_len,
                src: None,
            })
            .collect()
    }

    /// The routes a CHILD_SA needs: one per remote selector that is a plain
    /// prefix for all protocols and ports (others would capture unrelated
    /// traffic to those addresses). In transport mode the kernel must send
    /// from our outer address, which the selectors name; through a tunnel
    /// from the virtual IP the peer assigned us, if any.
    pub fn for_child(c: &ChildSaInstall) -> Vec<Route> {
        let transport = c.mode == control::config::IpsecMode::Transport;
        let mut routes = Self::for_selectors(&c.remote_ts, transport.then(|| c.local.ip()));
        if !transport {
            for r in &mut routes {
                r.src = c.local_vips.iter().copied().find(|v| v.is_ipv4() == r.dst.is_ipv4());
            }
        }
        routes
    }

    /// [`Route::for_child`] of selectors `remote_ts`, with `src` as the
    /// preferred source of the routes of its family.
    pub fn for_selectors(remote_ts: &[TrafficSelector], src: Option<IpAddr>) -> Vec<Route> {
        remote_ts
            .iter()
            .filter(|ts| ts.ip_protocol == 0 && ts.start_port == 0 && ts.end_port == 0xffff)
            .filter_map(control::ts::prefix)
            .map(|(dst, prefix_len)| Route {
                dst,
                prefix_len,
                src: src.filter(|s| s.is_ipv4() == dst.is_ipv4()),
            })
            .collect()
    }
}

enum Request {
    Add(Route),
    Delete(Route),
    AddAddress(IpAddr),
    DeleteAddress(IpAddr),
}

/// Items (routes, addresses) held by children: an item stays while a
/// CHILD_SA needs it (a rekey's new child takes it over before the old one
/// goes).
struct Held<T> {
    by_child: HashMap<u32, Vec<T>>,
    count: HashMap<T, usize>,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Self {
            by_child: HashMap::new(),
            count: HashMap::new(),
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash> Held<T> {
    /// Child `spi_in` holds `items`; returns those nobody held before.
    fn hold(&mut self, spi_in: u32, items: Vec<T>) -> Vec<T> {
        if items.is_empty() {
            return Vec::new();
        }
        let mut first = Vec::new();
        for i in &items {
            let n = self.count.entry(*i).or_insert(0);
            *n += 1;
            if *n == 1 {
                first.push(*i);
            }
        }
        self.by_child.entry(spi_in).or_default().extend(items);
        first
    }

    /// Child `spi_in` is gone; returns the items nobody holds any more.
    fn release(&mut self, spi_in: u32) -> Vec<T> {
        let mut last = Vec::new();
        for i in self.by_child.remove(&spi_in).unwrap_or_default() {
            if let Some(n) = self.count.get_mut(&i) {
                *n -= 1;
                if *n == 0 {
                    self.count.remove(&i);
                    last.push(i);
                }
            }
        }
        last
    }
}

#[derive(Default)]
struct Holders {
    routes: Held<Route>,
    /// Virtual IPs on the TUN device.
    addresses: Held<IpAddr>,
    /// Routes held for as long as ironsa runs (the virtual-IP pools):
    /// children's routes inside them are not added, so a hundred thousand
    /// road warriors are one route, and the fastpath's SPD picks the tunnel.
    standing: Vec<Route>,
}

/// The routes of the CHILD_SAs into the TUN device, added and deleted by a
/// routing thread.
pub struct TunRoutes {
    holders: Mutex<Holders>,
    requests: Mutex<Option<Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl TunRoutes {
    /// Installs the policy rules and starts the routing thread for TUN
    /// device `tun` (interface index `oif`).
    pub fn start(tun: &str, oif: u32) -> Result<Arc<Self>, NetlinkError> {
        let mut rtnl = Rtnl::open()?;
        rtnl.add_rules()?;
        info!(
            tun,
            table = ROUTE_TABLE,
            priority = RULE_PRIORITY,
            mark = format_args!("{OUTER_MARK:#x}"),
            "tunnel routes go to their own table; ironsa's own IKE and ESP bypass it by firewall mark"
        );
        let (tx, rx) = channel();
        let tun_name = tun.to_string();
        let thread = std::thread::Builder::new()
            .name("ironsa-routes".into())
            .spawn(move || route_loop(rtnl, rx, &tun_name, oif))?;
        Ok(Arc::new(Self {
            holders: Mutex::default(),
            requests: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    fn send(&self, r: Request) {
        if let Ok(guard) = self.requests.lock()
            && let Some(tx) = guard.as_ref()
        {
            let _ = tx.send(r);
        }
    }

    /// Adds `routes` for as long as ironsa runs (one per pool prefix).
    pub fn hold_standing(&self, routes: Vec<Route>) {
        for r in &routes {
            info!(route = %r, table = ROUTE_TABLE, "virtual-IP pool routed into the tunnel device");
            self.send(Request::Add(*r));
        }
        if let Ok(mut h) = self.holders.lock() {
            h.standing.extend(routes);
        }
    }

    /// Child `spi_in` needs `routes` (added when nobody held them yet);
    /// those a standing route covers are not needed.
    pub fn hold(&self, spi_in: u32, mut routes: Vec<Route>) {
        let add = match self.holders.lock() {
            Ok(mut h) => {
                routes.retain(|r| !h.standing.iter().any(|s| s.covers(r)));
                h.routes.hold(spi_in, routes)
            }
            Err(_) => return,
        };
        for r in add {
            self.send(Request::Add(r));
        }
    }

    /// Child `spi_in` sends from `addrs`, virtual IPs the peer assigned us:
    /// they go on the TUN device (as host addresses) while a child holds them.
    pub fn hold_addresses(&self, spi_in: u32, addrs: &[IpAddr]) {
        let add = match self.holders.lock() {
            Ok(mut h) => h.addresses.hold(spi_in, addrs.to_vec()),
            Err(_) => return,
        };
        for a in add {
            self.send(Request::AddAddress(a));
        }
    }

    /// Child `spi_in` is gone: its routes and addresses nobody else holds are deleted.
    pub fn release(&self, spi_in: u32) {
        let (routes, addresses) = match self.holders.lock() {
            Ok(mut h) => (h.routes.release(spi_in), h.addresses.release(spi_in)),
            Err(_) => return,
        };
        // Routes first: some may prefer an address about to go.
        for r in routes {
            self.send(Request::Delete(r));
        }
        for a in addresses {
            self.send(Request::DeleteAddress(a));
        }
    }

    /// Stops the routing thread and removes the policy rules (the routes go
    /// with the TUN device).
    pub fn stop(&self) {
        if let Ok(mut tx) = self.requests.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for TunRoutes {
    fn drop(&mut self) {
        self.stop();
    }
}

fn route_loop(mut rtnl: Rtnl, rx: Receiver<Request>, tun: &str, oif: u32) {
    for r in rx {
        match r {
            Request::Add(route) => match rtnl.add_route(&route, oif) {
                Ok(()) => debug!(%route, tun, "route added"),
                Err(e) => {
                    warn!(%route, tun, "tunnel route not installed, traffic to it will not enter the tunnel: {e}")
                }
            },
            Request::Delete(route) => match rtnl.delete_route(&route, oif) {
                Ok(()) => debug!(%route, tun, "route deleted"),
                Err(e) => debug!(%route, tun, "route not deleted: {e}"),
            },
            Request::AddAddress(addr) => match rtnl.address(&addr, oif, true) {
                Ok(()) => info!(%addr, tun, "virtual IP installed on the tunnel device"),
                Err(e) => warn!(%addr, tun, "virtual IP not installed, local programs cannot send from it: {e}"),
            },
            Request::DeleteAddress(addr) => match rtnl.address(&addr, oif, false) {
                Ok(()) => info!(%addr, tun, "virtual IP removed from the tunnel device"),
                Err(e) => debug!(%addr, tun, "virtual IP not removed: {e}"),
            },
        }
    }
    rtnl.delete_rules();
    debug!("routing thread stopped, rules removed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ranges_become_prefixes_that_cover_their_clients() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        let pool = Route::for_range(ip("10.9.0.10"), ip("10.9.0.20"));
        assert_eq!(
            pool.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            ["10.9.0.10/31", "10.9.0.12/30", "10.9.0.16/30", "10.9.0.20/32"]
        );
        let host = |a: &str| Route {
            dst: ip(a),
            prefix_len: if ip(a).is_ipv4() { 32 } else { 128 },
            src: None,
        };
        let covered = |a: &str| pool.iter().any(|p| p.covers(&host(a)));
        assert!(["10.9.0.10", "10.9.0.15", "10.9.0.20"].iter().all(|a| covered(a)));
        assert!(
            !["10.9.0.9", "10.9.0.21", "10.8.0.12", "::a09:c"]
                .iter()
                .any(|a| covered(a))
        );
        let v6 = Route::for_range(ip("2001:db8::"), ip("2001:db8::ffff:ffff:ffff:ffff"));
        assert_eq!(v6.iter().map(|r| r.to_string()).collect::<Vec<_>>(), ["2001:db8::/64"]);
        assert!(v6[0].covers(&host("2001:db8::1:2")));
        assert!(!v6[0].covers(&host("2001:db9::1")));
        let everything = Route {
            dst: ip("0.0.0.0"),
            prefix_len: 0,
            src: None,
        };
        assert!(everything.covers(&pool[0]) && !pool[0].covers(&everything));
    }

    #[test]
    fn routes_cover_plain_prefixes_and_transport_mode_sends_from_our_address() {
        let ts = |s: &str| control::ts::parse_selector(s).unwrap_or_else(|e| panic!("{e}"));
        let with_port = TrafficSelector {
            ip_protocol: 17,
            ..ts("10.3.0.0/24")
        };
        let range = TrafficSelector {
            end_addr: "10.4.0.9".parse().unwrap_or_else(|e| panic!("{e}")),
            ..ts("10.4.0.0/24")
        };
        let remote = [
            ts("10.2.0.0/24"),
            with_port,
            range,
            ts("10.99.0.2/32"),
            ts("2001:db8::/64"),
        ];
        let tunnel = Route::for_selectors(&remote, None);
        assert_eq!(
            tunnel.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            ["10.2.0.0/24", "10.99.0.2/32", "2001:db8::/64"]
        );
        let ours: IpAddr = "10.99.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let transport = Route::for_selectors(&remote, Some(ours));
        assert_eq!(
            transport.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            [
                "10.2.0.0/24 src 10.99.0.1",
                "10.99.0.2/32 src 10.99.0.1",
                "2001:db8::/64"
            ]
        );
    }
}

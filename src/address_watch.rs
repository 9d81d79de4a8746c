//! The host's addresses, watched for MOBIKE (RFC 4555) client SAs.
//!
//! A thread of its own listens to rtnetlink address and route events
//! (reads block, so never in a shard's loop). After each burst of events
//! it reads the addresses and tells every shard; each shard then asks the
//! routing table which source reaches each MOBIKE peer and moves the IKE
//! SAs whose source changed (UPDATE_SA_ADDRESSES), or announces the new
//! address set to their peers.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::RouteAttribute;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};
use nix::ifaddrs::getifaddrs;
use nix::libc;
use nix::net::if_::InterfaceFlags;
use tracing::{debug, info, warn};

use crate::shard::{ShardHandle, ShardMsg};

/// How long a read waits before the thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Events closer together than this are one change (deleting an address
/// and adding another, a route replaced): the shards hear the end state.
const SETTLE: Duration = Duration::from_millis(30);
/// The longest a stream of events delays the report.
const SETTLE_MAX: Duration = Duration::from_millis(250);

/// The watcher thread; stopped and joined by [`AddressWatch::stop`] or on drop.
pub struct AddressWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AddressWatch {
    /// Subscribes to address and route changes and starts the thread that
    /// reports them to `shards`.
    pub fn start(shards: Arc<Vec<ShardHandle>>) -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&NetlinkAddr::new(0, 0))?;
        for group in [
            libc::RTNLGRP_IPV4_IFADDR,
            libc::RTNLGRP_IPV6_IFADDR,
            libc::RTNLGRP_IPV4_ROUTE,
            libc::RTNLGRP_IPV6_ROUTE,
        ] {
            socket.add_membership(group)?;
        }
        socket2::SockRef::from(&socket).set_read_timeout(Some(POLL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ironsa-addresses".into())
            .spawn(move || watch(&socket, &shards, &flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AddressWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: waits for events, lets them settle, reports the addresses.
fn watch(socket: &Socket, shards: &[ShardHandle], stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut known = match addresses() {
        Ok(a) => a,
        Err(e) => {
            warn!("cannot read the host's addresses: {e}; MOBIKE clients will not follow address changes");
            return;
        }
    };
    debug!(addresses = ?known, "watching the host's addresses for MOBIKE");
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) if !relevant(&buf[..n.min(buf.len())]) => continue,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // An overrun (ENOBUFS) loses events, not the state: read it again.
                debug!("address events: {e}");
            }
        }
        settle(socket, &mut buf);
        let now = match addresses() {
            Ok(a) => a,
            Err(e) => {
                warn!("cannot read the host's addresses after a change: {e}");
                continue;
            }
        };
        let changed = now != known;
        if changed {
            info!(old = ?known, new = ?now, "the host's addresses changed");
        } else {
            debug!("routes changed");
        }
        known = now;
        let list: Arc<[IpAddr]> = known.iter().copied().collect();
        for s in shards {
            s.send(ShardMsg::LocalAddresses {
                addresses: list.clone(),
                set_changed: changed,
            });
        }
    }
}

/// Whether the netlink messages in `data` can change the source towards a
/// peer: any address change, and route changes outside ironsa's own
/// table of routes into its TUN device (installed with every child).
fn relevant(data: &[u8]) -> bool {
    let mut off = 0;
    while off < data.len() {
        let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..]) else {
            return true;
        };
        let len = m.header.length as usize;
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r)) => {
                let table = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(r.header.table));
                if table != crate::routing::ROUTE_TABLE {
                    return true;
                }
            }
            _ => return true,
        }
        if len == 0 {
            break;
        }
        off += len;
    }
    false
}

/// Reads events until none arrives for [`SETTLE`] (at most [`SETTLE_MAX`]).
fn settle(socket: &Socket, buf: &mut [u8]) {
    let sock = socket2::SockRef::from(socket);
    let until = Instant::now() + SETTLE_MAX;
    let _ = sock.set_read_timeout(Some(SETTLE));
    while Instant::now() < until && socket.recv(&mut &mut buf[..], 0).is_ok() {}
    let _ = sock.set_read_timeout(Some(POLL));
}

/// The addresses a peer could reach us at: on interfaces that are up,
/// neither loopback nor point-to-point (our own TUN device holds virtual
/// IPs, not outer addresses), without IPv6 link-local addresses.
fn addresses() -> nix::Result<BTreeSet<IpAddr>> {
    Ok(getifaddrs()?
        .filter(|i| {
            i.flags.contains(InterfaceFlags::IFF_UP)
                && !i
                    .flags
                    .intersects(InterfaceFlags::IFF_LOOPBACK | InterfaceFlags::IFF_POINTOPOINT)
        })
        .filter_map(|i| {
            let a = i.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(outer_candidate)
        .collect())
}

/// Whether `ip` can be an outer address of an IKE SA.
fn outer_candidate(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && !v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_into_our_tun_device_are_not_address_changes() {
        use netlink_packet_core::NetlinkHeader;
        use netlink_packet_route::route::RouteMessage;
        let encode = |table: u32| {
            let mut r = RouteMessage::default();
            r.attributes.push(RouteAttribute::Table(table));
            let mut m = NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::from(RouteNetlinkMessage::NewRoute(r)),
            );
            m.finalize();
            let mut buf = vec![0u8; m.buffer_len()];
            m.serialize(&mut buf);
            buf
        };
        assert!(!relevant(&encode(crate::routing::ROUTE_TABLE)));
        assert!(relevant(&encode(254)), "a main-table route can change our source");
        let both = [encode(crate::routing::ROUTE_TABLE), encode(254)].concat();
        assert!(relevant(&both));
    }

    #[test]
    fn only_routable_addresses_are_candidates() {
        for good in ["10.99.0.2", "192.0.2.1", "2001:db8::1", "fd00::1"] {
            assert!(outer_candidate(&good.parse().unwrap()), "{good}");
        }
        for bad in ["127.0.0.1", "0.0.0.0", "169.254.1.1", "::1", "::", "fe80::1"] {
            assert!(!outer_candidate(&bad.parse().unwrap()), "{bad}");
        }
    }
}

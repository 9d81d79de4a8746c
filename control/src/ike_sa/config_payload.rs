//! The configuration payload in IKE_AUTH (RFC 7296 §2.19, §3.15): virtual
//! IPs from address pools for road warriors, and the client side that asks
//! for one.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracing::{debug, info, warn};

use super::{IkeSa, notify};
use crate::config::display_identity;
use crate::pool::PoolError;
use crate::ts;
use crate::wire::ikev2::{CfgType, ConfigAttribute, Identification, NotifyType, Payload, TrafficSelector};

/// Configuration attribute types (RFC 7296 §3.15.1).
pub mod attr {
    pub const INTERNAL_IP4_ADDRESS: u16 = 1;
    pub const INTERNAL_IP4_NETMASK: u16 = 2;
    pub const INTERNAL_IP4_DNS: u16 = 3;
    pub const INTERNAL_IP4_NBNS: u16 = 4;
    pub const INTERNAL_IP6_ADDRESS: u16 = 8;
    pub const INTERNAL_IP6_DNS: u16 = 10;
    pub const INTERNAL_IP4_SUBNET: u16 = 13;
    pub const INTERNAL_IP6_SUBNET: u16 = 15;
}

/// The prefix length sent with an INTERNAL_IP6_ADDRESS: the address alone.
const IP6_HOST_PREFIX: u8 = 128;

/// What the configuration payload settled for one IKE SA (boxed in the SA:
/// most site-to-site SAs have none).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VirtualIps {
    /// Addresses we leased to the peer (responder), released with the SA.
    pub remote: Vec<IpAddr>,
    /// Addresses the peer assigned to us (initiator).
    pub local: Vec<IpAddr>,
    /// DNS servers the peer sent us (initiator).
    pub dns: Vec<IpAddr>,
}

/// What an AAA server assigned a peer (responder, EAP relayed to RADIUS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AaaAssignment {
    /// RADIUS Framed-IP-Address: this address, before any pool.
    pub address: Option<IpAddr>,
    /// RADIUS Framed-Pool: lease from this gateway pool instead of the
    /// connection's pools.
    pub pool: Option<String>,
}

fn ip4(v: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from)
}

fn ip6(v: &[u8]) -> Option<Ipv6Addr> {
    <[u8; 16]>::try_from(v).ok().map(Ipv6Addr::from)
}

/// The address families a CFG_REQUEST asks addresses for, checking that
/// each address attribute has one of the lengths RFC 7296 §3.15.1 allows.
pub(crate) fn requested_families(attributes: &[ConfigAttribute]) -> Result<(bool, bool), String> {
    let (mut v4, mut v6) = (false, false);
    for a in attributes {
        match a.ty {
            attr::INTERNAL_IP4_ADDRESS => {
                if !matches!(a.value.len(), 0 | 4) {
                    return Err(format!(
                        "INTERNAL_IP4_ADDRESS of {} bytes (0 or 4 allowed)",
                        a.value.len()
                    ));
                }
                v4 = true;
            }
            attr::INTERNAL_IP6_ADDRESS => {
                if !matches!(a.value.len(), 0 | 17) {
                    return Err(format!(
                        "INTERNAL_IP6_ADDRESS of {} bytes (0 or 17 allowed)",
                        a.value.len()
                    ));
                }
                v6 = true;
            }
            _ => {}
        }
    }
    Ok((v4, v6))
}

/// Whether a request has any IPv4 / any IPv6 attribute.
fn asked_families(attributes: &[ConfigAttribute]) -> (bool, bool) {
    use attr::*;
    let v4 = [
        INTERNAL_IP4_ADDRESS,
        INTERNAL_IP4_NETMASK,
        INTERNAL_IP4_DNS,
        INTERNAL_IP4_NBNS,
        INTERNAL_IP4_SUBNET,
    ];
    let v6 = [INTERNAL_IP6_ADDRESS, INTERNAL_IP6_DNS, INTERNAL_IP6_SUBNET];
    (
        attributes.iter().any(|a| v4.contains(&a.ty)),
        attributes.iter().any(|a| v6.contains(&a.ty)),
    )
}

/// Responder: answers the peer's CFG_REQUEST, if any (the SA is
/// established: its leases live in its state), with a CFG_REPLY
/// carrying addresses leased from the connection's pools (one per family
/// asked for, however many attributes ask) and the connection's DNS, NBNS
/// and subnets. `aaa` is what an AAA server assigned: an address (RADIUS
/// Framed-IP-Address) wins over the pools, a pool name (Framed-Pool)
/// replaces the connection's pools.
///
/// `Ok(None)`: nothing to answer (no pools and no request); `Err`: the
/// error notify that refuses the request. Leases are recorded in the SA at
/// once, so a refusal after a partial lease and the SA's end both release
/// them.
pub(crate) fn respond(
    sa: &mut IkeSa,
    inner: &[Payload],
    peer: &Identification,
    aaa: AaaAssignment,
) -> Result<Option<Payload>, Payload> {
    let answer = lease_and_reply(sa, inner, peer, aaa);
    if answer.is_err() {
        // No CHILD_SA will use an address leased before the refusal.
        release(sa);
    }
    answer
}

fn lease_and_reply(
    sa: &mut IkeSa,
    inner: &[Payload],
    peer: &Identification,
    aaa: AaaAssignment,
) -> Result<Option<Payload>, Payload> {
    let cfg = sa.config.clone();
    let aaa_address = aaa.address;
    let request = inner.iter().find_map(|p| match p {
        Payload::Cp { cfg_type, attributes } if *cfg_type == CfgType::REQUEST => Some(attributes),
        _ => None,
    });
    let vip = &cfg.virtual_ips;
    // A pool the AAA server named replaces the connection's.
    let aaa_pools: Vec<String> = aaa.pool.iter().cloned().collect();
    let pools: &[String] = if aaa.pool.is_some() { &aaa_pools } else { &vip.pools };
    let Some(attributes) = request else {
        if let Some(Payload::Cp { cfg_type, .. }) = inner.iter().find(|p| matches!(p, Payload::Cp { .. })) {
            debug!(connection = %cfg.name, peer = %sa.remote, "ignoring a configuration payload of type {cfg_type}");
        }
        if pools.is_empty() {
            return Ok(None);
        }
        warn!(
            connection = %cfg.name,
            peer = %sa.remote,
            id = %display_identity(peer),
            "peer sent no CFG_REQUEST but the connection assigns virtual IPs from pools: refused"
        );
        return Err(notify(NotifyType::FAILED_CP_REQUIRED, Vec::new()));
    };
    let (want_v4, want_v6) = requested_families(attributes).map_err(|why| {
        warn!(connection = %cfg.name, peer = %sa.remote, "malformed CFG_REQUEST: {why}: refused with INVALID_SYNTAX");
        notify(NotifyType::INVALID_SYNTAX, Vec::new())
    })?;
    if pools.is_empty() && aaa_address.is_none() {
        if want_v4 || want_v6 {
            info!(connection = %cfg.name, peer = %sa.remote, "peer asked for a virtual IP but the connection has no pools");
        }
        return Ok(None);
    }
    let identity = display_identity(peer);
    let mut reply = Vec::new();
    for (wanted, v4) in [(want_v4, true), (want_v6, false)] {
        if !wanted {
            continue;
        }
        match sa.ctx.addresses.assign(pools, &identity, v4, aaa_address) {
            Ok(Some(lease)) => {
                info!(
                    connection = %cfg.name,
                    peer = %sa.remote,
                    id = %identity,
                    address = %lease.addr,
                    reconnect = lease.reused,
                    "virtual IP assigned"
                );
                match sa.virtual_ips_mut() {
                    Some(v) => v.remote.push(lease.addr),
                    None => {
                        // Not established: nothing could release it later.
                        let _ = sa.ctx.addresses.release(lease.addr);
                        return Err(notify(NotifyType::INTERNAL_ADDRESS_FAILURE, Vec::new()));
                    }
                }
                reply.push(address_attribute(lease.addr));
            }
            Ok(None) => {
                debug!(connection = %cfg.name, "no pool of the connection has {} addresses", if v4 { "IPv4" } else { "IPv6" })
            }
            Err(e) => {
                match &e {
                    PoolError::Exhausted { pool, size } => warn!(
                        connection = %cfg.name,
                        peer = %sa.remote,
                        id = %identity,
                        pool = %pool,
                        "address pool '{pool}' is exhausted ({size} addresses, all leased): client refused with INTERNAL_ADDRESS_FAILURE"
                    ),
                    other => warn!(connection = %cfg.name, peer = %sa.remote, id = %identity, "no virtual IP: {other}"),
                }
                return Err(notify(NotifyType::INTERNAL_ADDRESS_FAILURE, Vec::new()));
            }
        }
    }
    if (want_v4 || want_v6) && sa.virtual_ips().is_none_or(|v| v.remote.is_empty()) {
        if let Some(pool) = &aaa.pool {
            warn!(connection = %cfg.name, peer = %sa.remote, id = %identity, pool = %pool, "the AAA server's Framed-Pool '{pool}' names no pool of the gateway with an address of the family the peer asked for: refused with INTERNAL_ADDRESS_FAILURE");
            return Err(notify(NotifyType::INTERNAL_ADDRESS_FAILURE, Vec::new()));
        }
        warn!(connection = %cfg.name, peer = %sa.remote, id = %identity, "no pool of the connection has an address of the family the peer asked for: refused with INTERNAL_ADDRESS_FAILURE");
        return Err(notify(NotifyType::INTERNAL_ADDRESS_FAILURE, Vec::new()));
    }
    reply.extend(server_attributes(vip, attributes));
    Ok(Some(Payload::Cp {
        cfg_type: CfgType::REPLY,
        attributes: reply,
    }))
}

/// The connection's DNS and NBNS servers and subnets of the families the
/// peer's request `attributes` asked anything about: an IPv4-only client
/// has no use for IPv6 resolvers.
pub(crate) fn server_attributes(
    vip: &crate::config::VirtualIpConfig,
    attributes: &[ConfigAttribute],
) -> Vec<ConfigAttribute> {
    let (asks_v4, asks_v6) = asked_families(attributes);
    let wanted = |a: &IpAddr| if a.is_ipv4() { asks_v4 } else { asks_v6 };
    let mut out = Vec::new();
    for d in vip.dns.iter().filter(|d| wanted(d)) {
        out.push(match d {
            IpAddr::V4(a) => attribute(attr::INTERNAL_IP4_DNS, a.octets().to_vec()),
            IpAddr::V6(a) => attribute(attr::INTERNAL_IP6_DNS, a.octets().to_vec()),
        });
    }
    if asks_v4 {
        for n in &vip.nbns {
            out.push(attribute(attr::INTERNAL_IP4_NBNS, n.octets().to_vec()));
        }
    }
    for &(net, len) in vip.subnets.iter().filter(|(net, _)| wanted(net)) {
        out.push(subnet_attribute(net, len));
    }
    out
}

fn attribute(ty: u16, value: Vec<u8>) -> ConfigAttribute {
    ConfigAttribute { ty, value }
}

pub(crate) fn address_attribute(addr: IpAddr) -> ConfigAttribute {
    match addr {
        IpAddr::V4(a) => attribute(attr::INTERNAL_IP4_ADDRESS, a.octets().to_vec()),
        IpAddr::V6(a) => {
            let mut v = a.octets().to_vec();
            v.push(IP6_HOST_PREFIX);
            attribute(attr::INTERNAL_IP6_ADDRESS, v)
        }
    }
}

fn subnet_attribute(net: IpAddr, len: u8) -> ConfigAttribute {
    match net {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            let mut v = a.octets().to_vec();
            v.extend_from_slice(&mask.to_be_bytes());
            attribute(attr::INTERNAL_IP4_SUBNET, v)
        }
        IpAddr::V6(a) => {
            let mut v = a.octets().to_vec();
            v.push(len);
            attribute(attr::INTERNAL_IP6_SUBNET, v)
        }
    }
}

/// Releases the addresses the SA leased to its peer (the SA is closing).
pub(crate) fn release(sa: &mut IkeSa) {
    let leased = match &mut sa.state {
        super::State::Established(Some(v)) => std::mem::take(&mut v.remote),
        _ => return,
    };
    for addr in leased {
        match sa.ctx.addresses.release(addr) {
            Ok(()) => debug!(connection = %sa.config.name, address = %addr, "virtual IP released"),
            Err(e) => warn!(connection = %sa.config.name, "cannot release virtual IP: {e}"),
        }
    }
}

/// Initiator: the CFG_REQUEST for the connection's `vips`, if it has any.
pub(crate) fn request(sa: &IkeSa) -> Option<Payload> {
    let want = &sa.config.virtual_ips.request;
    if want.is_empty() {
        return None;
    }
    let mut attributes = Vec::new();
    let (mut v4, mut v6) = (false, false);
    for a in want {
        match a {
            IpAddr::V4(x) => {
                v4 = true;
                let value = if x.is_unspecified() {
                    Vec::new()
                } else {
                    x.octets().to_vec()
                };
                attributes.push(attribute(attr::INTERNAL_IP4_ADDRESS, value));
            }
            IpAddr::V6(x) => {
                v6 = true;
                let value = if x.is_unspecified() {
                    Vec::new()
                } else {
                    let mut v = x.octets().to_vec();
                    v.push(IP6_HOST_PREFIX);
                    v
                };
                attributes.push(attribute(attr::INTERNAL_IP6_ADDRESS, value));
            }
        }
    }
    if v4 {
        attributes.push(attribute(attr::INTERNAL_IP4_DNS, Vec::new()));
    }
    if v6 {
        attributes.push(attribute(attr::INTERNAL_IP6_DNS, Vec::new()));
    }
    Some(Payload::Cp {
        cfg_type: CfgType::REQUEST,
        attributes,
    })
}

/// Initiator: takes the addresses and DNS servers of the peer's CFG_REPLY
/// (into an established SA).
/// Attributes of a wrong length are skipped with a warning; a reply without
/// an address when we asked for one is the caller's failure to report.
pub(crate) fn parse_reply(sa: &IkeSa, inner: &[Payload]) -> Option<VirtualIps> {
    let Some(attributes) = inner.iter().find_map(|p| match p {
        Payload::Cp { cfg_type, attributes } if *cfg_type == CfgType::REPLY => Some(attributes),
        _ => None,
    }) else {
        return None;
    };
    let name = sa.config.name.clone();
    let mut got = VirtualIps::default();
    for a in attributes {
        let parsed = match a.ty {
            attr::INTERNAL_IP4_ADDRESS => ip4(&a.value).map(|x| got.local.push(IpAddr::V4(x))),
            attr::INTERNAL_IP6_ADDRESS if a.value.len() == 17 => {
                ip6(&a.value[..16]).map(|x| got.local.push(IpAddr::V6(x)))
            }
            attr::INTERNAL_IP4_DNS => ip4(&a.value).map(|x| got.dns.push(IpAddr::V4(x))),
            attr::INTERNAL_IP6_DNS => ip6(&a.value).map(|x| got.dns.push(IpAddr::V6(x))),
            attr::INTERNAL_IP6_ADDRESS => None,
            _ => Some(()),
        };
        if parsed.is_none() {
            warn!(connection = %name, "ignoring configuration attribute {} of {} bytes in CFG_REPLY", a.ty, a.value.len());
        }
    }
    got.local.truncate(sa.config.virtual_ips.request.len().max(1));
    got.dns.truncate(MAX_DNS_SERVERS);
    if !got.local.is_empty() {
        info!(
            connection = %name,
            peer = %sa.remote,
            addresses = %join(&got.local),
            dns = %join(&got.dns),
            "virtual IP received"
        );
    }
    Some(got)
}

/// Initiator: keeps the virtual IPs and DNS servers of a parsed CFG_REPLY
/// on the established SA.
pub(crate) fn install_reply(sa: &mut IkeSa, got: VirtualIps) {
    if let Some(v) = sa.virtual_ips_mut() {
        v.local = got.local;
        v.dns = got.dns;
    }
}

/// Initiator: [`parse_reply`] and [`install_reply`] in one.
#[cfg(test)]
pub(crate) fn handle_reply(sa: &mut IkeSa, inner: &[Payload]) {
    if let Some(got) = parse_reply(sa, inner) {
        install_reply(sa, got);
    }
}

/// Initiator: an IKE SA that asked for virtual IPs is of no use without
/// one (its selectors name them); why, if it got none.
pub(crate) fn check_reply(sa: &IkeSa, got: Option<&VirtualIps>, inner: &[Payload]) -> Result<(), String> {
    if sa.config.virtual_ips.request.is_empty() || got.is_some_and(|v| !v.local.is_empty()) {
        return Ok(());
    }
    Err(match super::error_notify(inner) {
        Some(n) => format!("peer assigned no virtual IP: it answered {}", n.ty),
        None => "peer assigned no virtual IP".into(),
    })
}

/// The most DNS servers kept from a CFG_REPLY (resolvers use three).
const MAX_DNS_SERVERS: usize = 8;

fn join(a: &[IpAddr]) -> String {
    a.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(",")
}

fn hosts(addrs: &[IpAddr]) -> Vec<TrafficSelector> {
    addrs
        .iter()
        .map(|&a| ts::subnet(a, if a.is_ipv4() { 32 } else { 128 }))
        .collect()
}

/// Our selectors of `configured` (a template's `local_ts`): `dynamic`
/// (empty) is our virtual IPs, or everything of the families we are asking
/// addresses for while we wait for them, or our address.
pub(crate) fn local_ts<'a>(sa: &IkeSa, configured: &'a [TrafficSelector]) -> Cow<'a, [TrafficSelector]> {
    if !configured.is_empty() {
        return Cow::Borrowed(configured);
    }
    if let Some(v) = sa.virtual_ips().filter(|v| !v.local.is_empty()) {
        return Cow::Owned(hosts(&v.local));
    }
    let request = &sa.config.virtual_ips.request;
    if !request.is_empty() {
        let mut out = Vec::new();
        if request.iter().any(IpAddr::is_ipv4) {
            out.push(ts::subnet(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        }
        if request.iter().any(IpAddr::is_ipv6) {
            out.push(ts::subnet(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
        }
        return Cow::Owned(out);
    }
    Cow::Owned(hosts(&[sa.local.ip()]))
}

/// The peer's selectors of `configured` (a template's `remote_ts`):
/// `dynamic` (empty) is the virtual IPs we leased it, else its address.
pub(crate) fn remote_ts<'a>(sa: &IkeSa, configured: &'a [TrafficSelector]) -> Cow<'a, [TrafficSelector]> {
    if !configured.is_empty() {
        return Cow::Borrowed(configured);
    }
    match sa.virtual_ips().filter(|v| !v.remote.is_empty()) {
        Some(v) => Cow::Owned(hosts(&v.remote)),
        None => Cow::Owned(hosts(&[sa.remote.ip()])),
    }
}

/// Our virtual IPs that `local_ts` (a child's narrowed selectors) covers.
pub(crate) fn vips_within(sa: &IkeSa, local_ts: &[TrafficSelector]) -> Vec<IpAddr> {
    sa.virtual_ips()
        .map(|v| {
            v.local
                .iter()
                .copied()
                .filter(|&a| hosts(&[a]).iter().any(|h| local_ts.iter().any(|t| ts::contains(t, h))))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::config::{ConnectionConfig, IdentityMatch, parse_identity};
    use crate::ike_sa::{Context, Role, State};
    use crate::pool::{AddrRange, Pool, Pools, SharedPools};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// A responder SA of a connection with pool `rw` (`range`) and a DNS server per family.
    fn gateway_sa(range: &str) -> (IkeSa, Arc<SharedPools>) {
        gateway_sa_with(vec![
            Pool::new("rw", &[AddrRange::parse(range).expect("range")]).expect("pool"),
        ])
    }

    fn gateway_sa_with(pools: Vec<Pool>) -> (IkeSa, Arc<SharedPools>) {
        let mut c = ConnectionConfig::new("rw", parse_identity("gw@test"), IdentityMatch::Any, b"psk");
        c.virtual_ips.pools = pools.iter().map(|p| p.name().to_string()).collect();
        c.virtual_ips.dns = vec![ip("10.1.0.53"), ip("2001:db8::53")];
        c.virtual_ips.nbns = vec!["10.1.0.54".parse().expect("nbns")];
        c.virtual_ips.subnets = vec![(ip("10.1.0.0"), 16), (ip("2001:db8::"), 64)];
        let pools = Arc::new(SharedPools::new(Pools::new(pools).expect("pools")));
        let crypto = Arc::new(crate::crypto::provider::test_support::CountingRandom::default());
        let mut ctx = Context::new(Vec::new(), crypto);
        ctx.addresses = pools.clone();
        let sa = IkeSa::blank(
            Role::Responder,
            Instant::now(),
            Arc::new(c),
            Arc::new(ctx),
            "192.0.2.1:4500".parse().expect("addr"),
            "198.51.100.7:4500".parse().expect("addr"),
            1,
            2,
            State::Established(None),
        );
        (sa, pools)
    }

    fn request(attributes: Vec<ConfigAttribute>) -> Vec<Payload> {
        vec![Payload::Cp {
            cfg_type: CfgType::REQUEST,
            attributes,
        }]
    }

    fn leased(pools: &SharedPools) -> u64 {
        pools.with(|p| p.get("rw").expect("pool").stats().leased)
    }

    fn refusal(r: Result<Option<Payload>, Payload>) -> NotifyType {
        match r {
            Err(Payload::Notify(n)) => n.ty,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn peer() -> Identification {
        parse_identity("alice@test")
    }

    #[test]
    fn reply_carries_the_address_and_the_families_asked_about() {
        let (mut sa, pools) = gateway_sa("10.9.0.10-10.9.0.20");
        let ask = request(vec![
            attribute(attr::INTERNAL_IP4_ADDRESS, Vec::new()),
            attribute(attr::INTERNAL_IP4_DNS, Vec::new()),
        ]);
        let Ok(Some(Payload::Cp { cfg_type, attributes })) = respond(&mut sa, &ask, &peer(), AaaAssignment::default())
        else {
            panic!("no reply");
        };
        assert_eq!(cfg_type, CfgType::REPLY);
        let types: Vec<u16> = attributes.iter().map(|a| a.ty).collect();
        assert_eq!(
            types,
            [
                attr::INTERNAL_IP4_ADDRESS,
                attr::INTERNAL_IP4_DNS,
                attr::INTERNAL_IP4_NBNS,
                attr::INTERNAL_IP4_SUBNET
            ]
        );
        assert_eq!(attributes[0].value, [10, 9, 0, 10]);
        assert_eq!(attributes[3].value, [10, 1, 0, 0, 255, 255, 0, 0]);
        assert_eq!(leased(&pools), 1);
        release(&mut sa);
        assert_eq!(leased(&pools), 0, "released with the SA");
    }

    #[test]
    fn malformed_address_attributes_are_refused_without_a_lease() {
        for (ty, len) in [
            (attr::INTERNAL_IP4_ADDRESS, 3),
            (attr::INTERNAL_IP4_ADDRESS, 5),
            (attr::INTERNAL_IP6_ADDRESS, 16),
            (attr::INTERNAL_IP6_ADDRESS, 1),
        ] {
            let (mut sa, pools) = gateway_sa("10.9.0.10-10.9.0.20");
            let ask = request(vec![
                attribute(attr::INTERNAL_IP4_ADDRESS, Vec::new()),
                attribute(ty, vec![0; len]),
            ]);
            assert_eq!(
                refusal(respond(&mut sa, &ask, &peer(), AaaAssignment::default())),
                NotifyType::INVALID_SYNTAX,
                "type {ty} of {len} bytes"
            );
            assert_eq!(leased(&pools), 0);
        }
    }

    #[test]
    fn an_oversized_request_gets_one_address_per_family() {
        let (mut sa, pools) = gateway_sa("10.9.0.10-10.9.0.20");
        let mut many = vec![attribute(attr::INTERNAL_IP4_ADDRESS, Vec::new()); 10_000];
        many.extend(vec![attribute(attr::INTERNAL_IP4_DNS, Vec::new()); 10_000]);
        many.extend(vec![attribute(0x7fff, vec![0xab; 64]); 100]);
        let Ok(Some(Payload::Cp { attributes, .. })) =
            respond(&mut sa, &request(many), &peer(), AaaAssignment::default())
        else {
            panic!("no reply");
        };
        assert_eq!(attributes.len(), 4, "address, DNS, NBNS, subnet once each");
        assert_eq!(leased(&pools), 1);
        assert_eq!(sa.virtual_ips().expect("lease").remote, [ip("10.9.0.10")]);
    }

    #[test]
    fn other_cfg_types_and_missing_requests() {
        let (mut sa, _) = gateway_sa("10.9.0.10-10.9.0.20");
        let set = vec![Payload::Cp {
            cfg_type: CfgType::SET,
            attributes: vec![attribute(attr::INTERNAL_IP4_ADDRESS, vec![10, 9, 0, 15])],
        }];
        assert_eq!(
            refusal(respond(&mut sa, &set, &peer(), AaaAssignment::default())),
            NotifyType::FAILED_CP_REQUIRED
        );
        assert_eq!(
            refusal(respond(&mut sa, &[], &peer(), AaaAssignment::default())),
            NotifyType::FAILED_CP_REQUIRED
        );
        // A request for DNS only needs no address.
        let dns_only = request(vec![attribute(attr::INTERNAL_IP6_DNS, Vec::new())]);
        let Ok(Some(Payload::Cp { attributes, .. })) = respond(&mut sa, &dns_only, &peer(), AaaAssignment::default())
        else {
            panic!("no reply");
        };
        let types: Vec<u16> = attributes.iter().map(|a| a.ty).collect();
        assert_eq!(types, [attr::INTERNAL_IP6_DNS, attr::INTERNAL_IP6_SUBNET]);
        assert_eq!(attributes[1].value.len(), 17);
    }

    #[test]
    fn a_refusal_after_a_partial_lease_releases_it() {
        let range = |r: &str| [AddrRange::parse(r).expect("range")];
        let v4 = Pool::new("rw", &range("10.9.0.10-10.9.0.20")).expect("pool");
        let mut v6 = Pool::new("rw6", &range("2001:db8::10/128")).expect("pool");
        v6.allocate("bob@test").expect("the only IPv6 address");
        let (mut sa, pools) = gateway_sa_with(vec![v4, v6]);
        let ask = request(vec![
            attribute(attr::INTERNAL_IP4_ADDRESS, Vec::new()),
            attribute(attr::INTERNAL_IP6_ADDRESS, Vec::new()),
        ]);
        assert_eq!(
            refusal(respond(&mut sa, &ask, &peer(), AaaAssignment::default())),
            NotifyType::INTERNAL_ADDRESS_FAILURE,
            "IPv6 pool exhausted"
        );
        assert_eq!(leased(&pools), 0, "the IPv4 lease is given back");
        assert!(sa.virtual_ips().is_none_or(|v| v.remote.is_empty()));
    }

    #[test]
    fn an_aaa_address_wins_over_the_pool() {
        let (mut sa, pools) = gateway_sa("10.9.0.10-10.9.0.20");
        let ask = request(vec![attribute(attr::INTERNAL_IP4_ADDRESS, Vec::new())]);
        let Ok(Some(Payload::Cp { attributes, .. })) = respond(
            &mut sa,
            &ask,
            &peer(),
            AaaAssignment {
                address: Some(ip("10.9.0.17")),
                pool: None,
            },
        ) else {
            panic!("no reply");
        };
        assert_eq!(attributes[0].value, [10, 9, 0, 17]);
        assert_eq!(
            pools.with(|p| p.get("rw").and_then(|r| r.holder(ip("10.9.0.17")).map(str::to_string))),
            Some("alice@test".into())
        );
    }

    #[test]
    fn an_aaa_pool_replaces_the_connections_pools() {
        let range = |r: &str| [AddrRange::parse(r).expect("range")];
        let gold = Pool::new("gold", &range("10.7.0.1-10.7.0.1")).expect("pool");
        let rw = Pool::new("rw", &range("10.9.0.10-10.9.0.20")).expect("pool");
        let (mut sa, pools) = gateway_sa_with(vec![rw, gold]);
        let mut c = (*sa.config).clone();
        c.virtual_ips.pools = vec!["rw".into()];
        sa.config = Arc::new(c);
        let ask = request(vec![attribute(attr::INTERNAL_IP4_ADDRESS, Vec::new())]);
        let framed = |pool: &str| AaaAssignment {
            address: None,
            pool: Some(pool.into()),
        };
        let Ok(Some(Payload::Cp { attributes, .. })) = respond(&mut sa, &ask, &peer(), framed("gold")) else {
            panic!("no reply");
        };
        assert_eq!(attributes[0].value, [10, 7, 0, 1], "leased from the Framed-Pool");
        assert_eq!(pools.with(|p| p.get("gold").map(|g| g.stats().leased)), Some(1));
        assert_eq!(pools.with(|p| p.get("rw").map(|g| g.stats().leased)), Some(0));
        // A pool the gateway does not have refuses the client, without a lease.
        let (mut sa, pools) = gateway_sa("10.9.0.10-10.9.0.20");
        assert_eq!(
            refusal(respond(&mut sa, &ask, &peer(), framed("platinum"))),
            NotifyType::INTERNAL_ADDRESS_FAILURE
        );
        assert_eq!(leased(&pools), 0);
    }

    #[test]
    fn client_takes_well_formed_attributes_and_bounds_the_rest() {
        let (mut sa, _) = gateway_sa("10.9.0.10-10.9.0.20");
        let mut c = (*sa.config).clone();
        c.virtual_ips.request = vec![ip("0.0.0.0")];
        sa.config = Arc::new(c);
        let mut attributes = vec![
            attribute(attr::INTERNAL_IP4_ADDRESS, vec![10, 8, 0, 1]),
            attribute(attr::INTERNAL_IP4_ADDRESS, vec![10, 8, 0, 2]),
            attribute(attr::INTERNAL_IP4_ADDRESS, vec![10, 8, 0]),
            attribute(attr::INTERNAL_IP6_ADDRESS, vec![0; 16]),
            attribute(attr::INTERNAL_IP4_DNS, vec![1, 2, 3]),
        ];
        attributes.extend((0..100u8).map(|i| attribute(attr::INTERNAL_IP4_DNS, vec![10, 2, 0, i])));
        let reply = vec![Payload::Cp {
            cfg_type: CfgType::REPLY,
            attributes,
        }];
        handle_reply(&mut sa, &reply);
        let v = sa.virtual_ips().expect("reply taken");
        assert_eq!(v.local, [ip("10.8.0.1")], "as many addresses as asked for");
        assert_eq!(v.dns.len(), MAX_DNS_SERVERS);
        assert_eq!(v.dns[0], ip("10.2.0.0"));
        assert!(check_reply(&sa, sa.virtual_ips(), &reply).is_ok());
        assert_eq!(
            local_ts(&sa, &[]).into_owned(),
            [ts::subnet(ip("10.8.0.1"), 32)],
            "dynamic local selectors are the virtual IP"
        );
    }
}

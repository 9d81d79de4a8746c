//! MOBIKE (RFC 4555): an IKE SA and its CHILD_SAs move to new addresses
//! without a new handshake. The initiator (the mobile client) announces its
//! new address with UPDATE_SA_ADDRESSES from it; the responder redoes NAT
//! detection, answers there, and checks with a COOKIE2 round trip that the
//! peer really is at a new IP address before its CHILD_SAs move.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use tracing::{info, warn};

use super::informational::Pending;
use super::{Event, IkeSa, RequestKind, Task, find_notify, notify};
use crate::drops::DropReason;
use crate::nat::nat_detection_hash;
use crate::wire::ikev2::types::NotifyType;
use crate::wire::ikev2::{ExchangeType, Payload};

/// Most ADDITIONAL_IP4/6_ADDRESS notifies one message may carry: a mobile
/// client has a handful of interfaces; more is refused, not stored.
pub(crate) const MAX_ADDITIONAL_ADDRESSES: usize = 16;

/// The notifies this module handles in INFORMATIONAL exchanges.
pub(crate) const NOTIFIES: [NotifyType; 8] = [
    NotifyType::UPDATE_SA_ADDRESSES,
    NotifyType::COOKIE2,
    NotifyType::NO_NATS_ALLOWED,
    NotifyType::ADDITIONAL_IP4_ADDRESS,
    NotifyType::ADDITIONAL_IP6_ADDRESS,
    NotifyType::NO_ADDITIONAL_ADDRESSES,
    NotifyType::NAT_DETECTION_SOURCE_IP,
    NotifyType::NAT_DETECTION_DESTINATION_IP,
];

/// COOKIE2 length we send (RFC 4555 §3.7 allows 8 to 64 octets).
const COOKIE2_LEN: usize = 16;

/// The NAT_DETECTION_* notifies for a message from `local` to `remote`.
fn nat_detection(sa: &IkeSa, local: SocketAddr, remote: SocketAddr) -> [Payload; 2] {
    [
        notify(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            nat_detection_hash(sa.spi_i, sa.spi_r, local).to_vec(),
        ),
        notify(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_detection_hash(sa.spi_i, sa.spi_r, remote).to_vec(),
        ),
    ]
}

/// NAT detection over `payloads` of a message from `remote` to `local`:
/// (NAT in front of us, NAT in front of the peer), or `None` without
/// NAT_DETECTION notifies.
fn detect_nat(sa: &IkeSa, payloads: &[Payload], local: SocketAddr, remote: SocketAddr) -> Option<(bool, bool)> {
    let hashes = |ty| {
        payloads
            .iter()
            .filter_map(move |p| match p {
                Payload::Notify(n) if n.ty == ty => Some(n.data.as_slice()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let (src, dst) = (
        hashes(NotifyType::NAT_DETECTION_SOURCE_IP),
        hashes(NotifyType::NAT_DETECTION_DESTINATION_IP),
    );
    if src.is_empty() || dst.is_empty() {
        return None;
    }
    let expect_src = nat_detection_hash(sa.spi_i, sa.spi_r, remote);
    let expect_dst = nat_detection_hash(sa.spi_i, sa.spi_r, local);
    let nat_remote = !src.iter().any(|h| *h == expect_src);
    let nat_local = !dst.iter().any(|h| *h == expect_dst) || sa.config.force_udp_encap;
    Some((nat_local, nat_remote))
}

/// Reports a refused MOBIKE request to the endpoint (counted, logged rate-limited).
fn refuse(sa: &mut IkeSa, source: SocketAddr, detail: String) {
    sa.push_event(Event::Refused {
        source,
        reason: DropReason::MobikeRefused,
        detail,
    });
}

/// True when `payloads` carry more additional addresses than we take.
pub(crate) fn too_many_addresses(payloads: &[Payload]) -> Option<usize> {
    let n = payloads
        .iter()
        .filter(|p| {
            matches!(p, Payload::Notify(n)
                if n.ty == NotifyType::ADDITIONAL_IP4_ADDRESS || n.ty == NotifyType::ADDITIONAL_IP6_ADDRESS)
        })
        .count();
    (n > MAX_ADDITIONAL_ADDRESSES).then_some(n)
}

/// Responder: the MOBIKE notifies of an INFORMATIONAL request that came
/// from `remote` to `local`; returns what the response carries.
pub(crate) fn handle_request(
    sa: &mut IkeSa,
    local: SocketAddr,
    remote: SocketAddr,
    payloads: &[Payload],
) -> Vec<Payload> {
    let mut response = Vec::new();
    if let Some(c) = find_notify(payloads, NotifyType::COOKIE2) {
        // A return routability check of the peer: echo its cookie (§3.8).
        if (8..=64).contains(&c.data.len()) {
            response.push(notify(NotifyType::COOKIE2, c.data.clone()));
        }
    }
    let update = find_notify(payloads, NotifyType::UPDATE_SA_ADDRESSES).is_some();
    if let Some(n) = too_many_addresses(payloads) {
        refuse(
            sa,
            remote,
            format!("{n} additional addresses, more than {MAX_ADDITIONAL_ADDRESSES}"),
        );
        if update {
            response.push(notify(NotifyType::UNACCEPTABLE_ADDRESSES, Vec::new()));
        }
        return response;
    }
    if !update {
        return response;
    }
    if !sa.nat.mobike() {
        refuse(sa, remote, "UPDATE_SA_ADDRESSES without MOBIKE negotiated".into());
        return response;
    }
    // A driver reading a wildcard socket may not know the destination.
    let local = if local.ip().is_unspecified() {
        SocketAddr::new(sa.local.ip(), local.port())
    } else {
        local
    };
    let (nat_local, nat_remote) = detect_nat(sa, payloads, local, remote).unwrap_or((sa.nat.local(), sa.nat.remote()));
    if (nat_local || nat_remote) && find_notify(payloads, NotifyType::NO_NATS_ALLOWED).is_some() {
        refuse(sa, remote, "NAT on the new path, and the peer allows none".into());
        response.push(notify(NotifyType::UNEXPECTED_NAT_DETECTED, Vec::new()));
        return response;
    }
    let new_ip = remote.ip() != sa.remote.ip();
    info!(
        connection = %sa.config.name,
        old = %sa.remote,
        new = %remote,
        nat_local,
        nat_remote,
        "peer moved its IKE SA (MOBIKE UPDATE_SA_ADDRESSES)"
    );
    sa.nat.set_local(nat_local);
    sa.nat.set_remote(nat_remote);
    sa.local = local;
    sa.remote = remote;
    response.extend(nat_detection(sa, local, remote));
    if new_ip {
        // Its CHILD_SAs follow once the peer proves it is there.
        sa.outbox().tasks.push_back(Task::ReturnRoutability);
    } else {
        sa.move_children();
    }
    response
}

/// A fresh COOKIE2, or `None` (logged) when the random source fails.
fn new_cookie2(sa: &IkeSa, what: &str) -> Option<Vec<u8>> {
    let mut cookie = vec![0u8; COOKIE2_LEN];
    match sa.ctx.crypto.fill_random(&mut cookie) {
        Ok(()) => Some(cookie),
        Err(e) => {
            warn!(peer = %sa.remote, "no COOKIE2 for {what}: {e}");
            None
        }
    }
}

/// Our other addresses as ADDITIONAL_IP4/6_ADDRESS notifies, or
/// NO_ADDITIONAL_ADDRESSES when there are none (RFC 4555 §3.6).
fn address_list(sa: &mut IkeSa) -> Vec<Payload> {
    let others = sa
        .outbox
        .as_mut()
        .and_then(|b| b.additional_addresses.take())
        .unwrap_or_default();
    if others.is_empty() {
        return vec![notify(NotifyType::NO_ADDITIONAL_ADDRESSES, Vec::new())];
    }
    others
        .iter()
        .map(|a| match a {
            IpAddr::V4(v4) => notify(NotifyType::ADDITIONAL_IP4_ADDRESS, v4.octets().to_vec()),
            IpAddr::V6(v6) => notify(NotifyType::ADDITIONAL_IP6_ADDRESS, v6.octets().to_vec()),
        })
        .collect()
}

/// Initiator: sends UPDATE_SA_ADDRESSES from our new address, with NAT
/// detection for the new path, a COOKIE2 the peer must echo and our
/// address list.
pub(crate) fn start_update(sa: &mut IkeSa, now: Instant) {
    let Some(cookie) = new_cookie2(sa, "UPDATE_SA_ADDRESSES (the address update waits for the next change)") else {
        return;
    };
    let mut payloads = vec![notify(NotifyType::UPDATE_SA_ADDRESSES, Vec::new())];
    payloads.extend(nat_detection(sa, sa.local, sa.remote));
    payloads.push(notify(NotifyType::COOKIE2, cookie.clone()));
    payloads.extend(address_list(sa));
    sa.send_request(
        now,
        ExchangeType::INFORMATIONAL,
        payloads,
        RequestKind::Informational(Pending::UpdateSaAddresses {
            cookie: cookie.into_boxed_slice(),
        }),
    );
}

/// Initiator: tells the peer our other addresses changed (RFC 4555 §3.6).
pub(crate) fn start_announce(sa: &mut IkeSa, now: Instant) {
    let payloads = address_list(sa);
    sa.send_request(
        now,
        ExchangeType::INFORMATIONAL,
        payloads,
        RequestKind::Informational(Pending::AnnounceAddresses),
    );
}

/// Initiator: the answer to our UPDATE_SA_ADDRESSES; once it echoes our
/// COOKIE2, NAT detection is redone from it and our CHILD_SAs move to the
/// new addresses.
pub(crate) fn handle_update_response(sa: &mut IkeSa, inner: &[Payload], cookie: &[u8]) {
    if find_notify(inner, NotifyType::UNEXPECTED_NAT_DETECTED).is_some()
        || find_notify(inner, NotifyType::UNACCEPTABLE_ADDRESSES).is_some()
    {
        warn!(peer = %sa.remote, "peer refused our address update");
        return;
    }
    if !cookie_echoed(cookie, inner) {
        let peer = sa.remote;
        refuse(
            sa,
            peer,
            "answer to our UPDATE_SA_ADDRESSES does not echo our COOKIE2: CHILD_SAs stay".into(),
        );
        return;
    }
    if let Some((nat_local, nat_remote)) = detect_nat(sa, inner, sa.local, sa.remote) {
        sa.nat.set_local(nat_local);
        sa.nat.set_remote(nat_remote);
    }
    info!(connection = %sa.config.name, local = %sa.local, peer = %sa.remote, "address update acknowledged (MOBIKE)");
    sa.move_children();
}

/// Responder: an INFORMATIONAL request with a fresh COOKIE2 to the peer's new address.
pub(crate) fn start_return_routability(sa: &mut IkeSa, now: Instant) {
    let Some(cookie) = new_cookie2(sa, "the return routability check (CHILD_SAs stay)") else {
        return;
    };
    sa.send_request(
        now,
        ExchangeType::INFORMATIONAL,
        vec![notify(NotifyType::COOKIE2, cookie.clone())],
        RequestKind::Informational(Pending::ReturnRoutability {
            cookie: cookie.into_boxed_slice(),
            remote: sa.remote,
        }),
    );
}

/// True when `inner` echoes `cookie` (compared in constant time).
pub(crate) fn cookie_echoed(cookie: &[u8], inner: &[Payload]) -> bool {
    find_notify(inner, NotifyType::COOKIE2).is_some_and(|c| verify_slices_are_equal(&c.data, cookie).is_ok())
}

/// Responder: the answer to our return routability check.
pub(crate) fn handle_return_routability(sa: &mut IkeSa, inner: &[Payload], cookie: &[u8], checked: SocketAddr) {
    if !cookie_echoed(cookie, inner) {
        refuse(
            sa,
            checked,
            "return routability check: the answer does not echo our COOKIE2".into(),
        );
        return;
    }
    if sa.remote != checked {
        // The peer moved again meanwhile: that move has its own check.
        return;
    }
    info!(connection = %sa.config.name, peer = %sa.remote, "return routability verified: CHILD_SAs move (MOBIKE)");
    sa.move_children();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ikev2::Notify;

    fn cookie2(data: &[u8]) -> Payload {
        notify(NotifyType::COOKIE2, data.to_vec())
    }

    #[test]
    fn cookie2_must_be_echoed_exactly() {
        let ours = [7u8; 16];
        assert!(cookie_echoed(&ours, &[cookie2(&ours)]));
        assert!(!cookie_echoed(&ours, &[cookie2(&[7u8; 15])]));
        let mut other = ours;
        other[15] ^= 1;
        assert!(!cookie_echoed(&ours, &[cookie2(&other)]));
        assert!(!cookie_echoed(&ours, &[]));
    }

    #[test]
    fn address_lists_are_bounded() {
        let addr = |i: u8| {
            Payload::Notify(Notify {
                protocol: crate::wire::ikev2::ProtocolId::NONE,
                spi: Vec::new(),
                ty: NotifyType::ADDITIONAL_IP4_ADDRESS,
                data: vec![192, 0, 2, i],
            })
        };
        let few: Vec<Payload> = (0..MAX_ADDITIONAL_ADDRESSES as u8).map(addr).collect();
        assert_eq!(too_many_addresses(&few), None);
        // 64 KiB of addresses: 8 bytes of notify header and 4 of address each.
        let flood: Vec<Payload> = (0..65536 / 12).map(|i| addr(i as u8)).collect();
        assert_eq!(too_many_addresses(&flood), Some(65536 / 12));
    }
}

//! The IKE_SA_INIT exchange (RFC 7296 §1.2): both roles, with COOKIE and
//! INVALID_KE_PAYLOAD retries on the initiator side and NAT detection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::handshake::{install_keys, note_auth_hints, random_nonce};
use super::{
    AuthContext, CachedResponse, Context, DownReason, IkeSa, Outstanding, RequestKind, Role, State, find_notify, notify,
};
use crate::Error;
use crate::config::ConnectionConfig;
use crate::crypto::{CryptoError, KeGroup, KeyExchange, keys::derive_ike_sa_keys};
use crate::nat::nat_detection_hash;
use crate::proposal::{self, IkeProposal};
use crate::wire::ikev2::{self, ExchangeType, FLAG_RESPONSE, Header, Message, NotifyType, Payload};

pub use super::handshake::NONCE_LEN;
const MAX_COOKIE_ROUNDS: u8 = 3;
const MAX_KE_ROUNDS: u8 = 2;

/// Initiator state between sending IKE_SA_INIT and receiving its response.
pub(crate) struct InitSent {
    ke: KeyExchange,
    ni: Vec<u8>,
    cookie: Option<Vec<u8>>,
    cookie_rounds: u8,
    ke_rounds: u8,
    /// The gateway that redirected us here (RFC 5685), and how many did.
    redirected_from: Option<std::net::IpAddr>,
    redirects: u8,
    request: Vec<u8>,
}

/// Redirects (RFC 5685) an initiator follows for one IKE SA before it gives
/// up: gateways that send each other's clients back and forth end there.
const MAX_REDIRECTS: u8 = 3;

/// We cannot answer (the random source failed): no response, the initiator retries.
fn local_failure(remote: SocketAddr, e: CryptoError) -> InitRejected {
    error!(peer = %remote, "cannot answer IKE_SA_INIT: {e}");
    InitRejected {
        error: Error::Crypto(e),
        response: None,
    }
}

fn nonce_ok(n: &[u8]) -> bool {
    (16..=256).contains(&n.len())
}

impl IkeSa {
    /// Starts an IKE SA as initiator: sends IKE_SA_INIT for `config` to `remote`.
    /// `spi_i` is our SPI (the driver picks it, e.g. with the shard encoded in it).
    pub fn initiate(
        now: Instant,
        config: Arc<ConnectionConfig>,
        ctx: Arc<Context>,
        local: SocketAddr,
        remote: SocketAddr,
        spi_i: u64,
    ) -> Result<IkeSa, Error> {
        let group = config
            .ike_proposals
            .first()
            .and_then(|p| p.ke.first().copied())
            .ok_or_else(|| {
                Error::Config(format!(
                    "connection '{}' has no IKE proposal with a key exchange",
                    config.name
                ))
            })?;
        let ke = KeyExchange::generate(&*ctx.crypto, group)?;
        let ni = random_nonce(&*ctx.crypto)?;
        let state = State::InitSent(Box::new(InitSent {
            ke,
            ni,
            cookie: None,
            cookie_rounds: 0,
            ke_rounds: 0,
            redirected_from: None,
            redirects: 0,
            request: Vec::new(),
        }));
        let mut sa = IkeSa::blank(Role::Initiator, now, config, ctx, local, remote, spi_i, 0, state);
        sa.send_init(now);
        info!(connection = %sa.config.name, peer = %remote, "initiating IKE SA");
        Ok(sa)
    }

    fn send_init(&mut self, now: Instant) {
        let State::InitSent(st) = &mut self.state else { return };
        let mut payloads = Vec::new();
        if let Some(c) = &st.cookie {
            payloads.push(notify(NotifyType::COOKIE, c.clone()));
        }
        let proposals = self
            .config
            .ike_proposals
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_wire((i + 1) as u8, &[]))
            .collect();
        payloads.push(Payload::Sa(proposals));
        payloads.push(Payload::Ke {
            group: st.ke.group().number(),
            data: st.ke.public_value().to_vec(),
        });
        payloads.push(Payload::Nonce(st.ni.clone()));
        payloads.push(notify(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            nat_detection_hash(self.spi_i, 0, source_for_nat_detection(&self.config, self.local)).to_vec(),
        ));
        payloads.push(notify(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_detection_hash(self.spi_i, 0, self.remote).to_vec(),
        ));
        if self.config.fragmentation {
            payloads.push(notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, Vec::new()));
        }
        payloads.push(signature_hash_notify());
        if offers_additional_ke(&self.config) {
            payloads.push(notify(NotifyType::INTERMEDIATE_EXCHANGE_SUPPORTED, Vec::new()));
        }
        if self.config.ppk.is_some() {
            payloads.push(notify(NotifyType::USE_PPK, Vec::new()));
        }
        // RFC 5685: a redirected initiator names the gateway that sent it
        // (which also says it supports redirects).
        match st.redirected_from {
            Some(from) => {
                let mut data = redirect_notify(from, &[]);
                if let Payload::Notify(n) = &mut data {
                    n.ty = NotifyType::REDIRECTED_FROM;
                }
                payloads.push(data);
            }
            None => payloads.push(notify(NotifyType::REDIRECT_SUPPORTED, Vec::new())),
        }
        if self.config.children.is_empty() {
            // RFC 6023: we intend to create the IKE SA without a CHILD_SA.
            payloads.push(notify(NotifyType::CHILDLESS_IKEV2_SUPPORTED, Vec::new()));
        }
        let header = Header {
            spi_i: self.spi_i,
            spi_r: 0,
            next_payload: ikev2::PayloadType::NONE,
            major_version: 2,
            minor_version: 0,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: ikev2::FLAG_INITIATOR,
            message_id: 0,
            length: 0,
        };
        let request = ikev2::encode_message(&header, &payloads);
        st.request = request.clone();
        self.next_request_id = 1;
        self.push_transmit(request.clone());
        self.outbox().outstanding = Some(Box::new(Outstanding {
            message_id: 0,
            datagrams: vec![request],
            kind: RequestKind::Init,
            tries: 0,
            deadline: now + self.config.retransmit_timeout,
            dropped_answer: None,
        }));
    }
}

/// Initiator: processes the IKE_SA_INIT response.
pub(crate) fn handle_response(
    sa: &mut IkeSa,
    now: Instant,
    _local: SocketAddr,
    _remote: SocketAddr,
    datagram: &[u8],
    msg: Message,
) {
    let payloads = &msg.payloads;
    // COOKIE: retry with it (RFC 7296 §2.6).
    if let Some(c) = find_notify(payloads, NotifyType::COOKIE) {
        if let State::InitSent(st) = &mut sa.state {
            let why = if c.data.is_empty() || c.data.len() > 64 {
                Some(format!(
                    "the responder's COOKIE holds {} bytes, not 1 to 64 (RFC 7296 §2.6)",
                    c.data.len()
                ))
            } else if st.cookie_rounds >= MAX_COOKIE_ROUNDS {
                Some(format!(
                    "the responder demanded a COOKIE again after {} requests that carried one",
                    st.cookie_rounds
                ))
            } else {
                None
            };
            if let Some(why) = why {
                warn!(connection = %sa.config.name, peer = %sa.remote, "giving up on IKE_SA_INIT: {why}");
                sa.close(DownReason::Failed(why));
                return;
            }
            st.cookie_rounds += 1;
            st.cookie = Some(c.data.clone());
            debug!(peer = %sa.remote, "responder demands a cookie, retrying IKE_SA_INIT with it");
        }
        sa.take_outstanding();
        sa.send_init(now);
        return;
    }
    if let Some(n) = find_notify(payloads, NotifyType::REDIRECT) {
        let State::InitSent(st) = &mut sa.state else { return };
        let why = match parse_redirect(&n.data) {
            None => Some("a REDIRECT without a gateway address".to_string()),
            Some((_, nonce)) if aws_lc_rs::constant_time::verify_slices_are_equal(nonce, &st.ni).is_err() => {
                // Not an answer to our request (RFC 5685 §3): ignored.
                debug!(peer = %sa.remote, "REDIRECT with another nonce than ours ignored");
                return;
            }
            Some(_) if st.redirects >= MAX_REDIRECTS => Some(format!("redirected {} times", st.redirects)),
            Some((gw, _)) if gw == sa.remote.ip() => Some("a REDIRECT to the same gateway".to_string()),
            Some(_) => None,
        };
        if let Some(why) = why {
            warn!(connection = %sa.config.name, peer = %sa.remote, "giving up on IKE_SA_INIT: {why}");
            sa.close(DownReason::Failed(why));
            return;
        }
        if let Some((gw, _)) = parse_redirect(&n.data) {
            let from = sa.remote;
            st.redirects += 1;
            st.redirected_from = Some(from.ip());
            st.cookie = None;
            st.cookie_rounds = 0;
            sa.remote = SocketAddr::new(gw, from.port());
            info!(connection = %sa.config.name, from = %from, to = %sa.remote, "IKE_SA_INIT redirected to another gateway (RFC 5685)");
        }
        sa.take_outstanding();
        sa.send_init(now);
        return;
    }
    if let Some(n) = find_notify(payloads, NotifyType::INVALID_KE_PAYLOAD) {
        let wanted = (n.data.len() == 2).then(|| u16::from_be_bytes([n.data[0], n.data[1]]));
        let acceptable = wanted
            .and_then(KeGroup::from_number)
            .filter(|g| sa.config.ike_proposals.iter().any(|p| p.ke.contains(g)));
        let State::InitSent(st) = &mut sa.state else { return };
        match acceptable {
            Some(g) if st.ke_rounds < MAX_KE_ROUNDS && g != st.ke.group() => {
                info!(peer = %sa.remote, group = g.name(), "responder asks for another key exchange group, retrying");
                match KeyExchange::generate(&*sa.ctx.crypto, g) {
                    Ok(ke) => st.ke = ke,
                    Err(e) => {
                        sa.close(DownReason::Failed(e.to_string()));
                        return;
                    }
                }
                st.ke_rounds += 1;
                sa.take_outstanding();
                sa.send_init(now);
            }
            _ => {
                let wanted = wanted.map_or("no group".to_string(), |g| {
                    KeGroup::from_number(g).map_or(format!("group {g}"), |k| k.name().to_string())
                });
                warn!(
                    connection = %sa.config.name,
                    peer = %sa.remote,
                    "IKE_SA_INIT rejected: INVALID_KE_PAYLOAD asks for {wanted}; we offered {}",
                    proposal::offered(&sa.config.ike_proposals)
                );
                sa.close(DownReason::PeerError(NotifyType::INVALID_KE_PAYLOAD));
            }
        }
        return;
    }
    if let Some(n) = super::error_notify(payloads) {
        let why = super::create_child::peer_refused(n.ty, &sa.config.ike_proposals);
        warn!(connection = %sa.config.name, peer = %sa.remote, "IKE_SA_INIT rejected: {why}");
        sa.close(DownReason::PeerError(n.ty));
        return;
    }
    match process_response(sa, datagram, &msg) {
        Ok(()) => {
            sa.take_outstanding();
            if sa.nat.local() || sa.nat.remote() {
                debug!(
                    local_nat = sa.nat.local(),
                    remote_nat = sa.nat.remote(),
                    "NAT detected, moving to NAT-T port"
                );
                sa.float_to_nat_t();
            }
            super::intermediate::next(sa, now);
        }
        Err(e) => {
            warn!(connection = %sa.config.name, peer = %sa.remote, "IKE_SA_INIT response unacceptable: {e}");
            sa.close(DownReason::Failed(e.to_string()));
        }
    }
}

fn process_response(sa: &mut IkeSa, datagram: &[u8], msg: &Message) -> Result<(), Error> {
    let mut sa_payload = None;
    let mut ke_payload = None;
    let mut nonce = None;
    for p in &msg.payloads {
        match p {
            Payload::Sa(props) => sa_payload = Some(props),
            Payload::Ke { group, data } => ke_payload = Some((*group, data)),
            Payload::Nonce(n) => nonce = Some(n),
            Payload::Unknown { critical: true, ty, .. } => return Err(Error::UnsupportedCriticalPayload(ty.0)),
            _ => {}
        }
    }
    let props = sa_payload.ok_or_else(|| Error::InvalidSyntax("IKE_SA_INIT response without SA".into()))?;
    let (group, ker) = ke_payload.ok_or_else(|| Error::InvalidSyntax("IKE_SA_INIT response without KE".into()))?;
    let nr = nonce.ok_or_else(|| Error::InvalidSyntax("IKE_SA_INIT response without nonce".into()))?;
    if !nonce_ok(nr) {
        return Err(Error::InvalidSyntax(format!("responder nonce of {} bytes", nr.len())));
    }
    if props.len() != 1 {
        return Err(Error::InvalidSyntax(format!(
            "responder chose {} proposals",
            props.len()
        )));
    }
    if msg.header.spi_r == 0 {
        return Err(Error::InvalidSyntax("responder SPI is zero".into()));
    }
    let selected = proposal::accept_ike_response(&sa.config.ike_proposals, &props[0])
        .map_err(|m| Error::NoProposalChosen(m.to_string()))?;
    require_intermediate(&selected, &msg.payloads)?;
    note_without_additional_ke(&sa.config, &selected, sa.remote);
    let State::InitSent(st) = std::mem::replace(&mut sa.state, State::Closed) else {
        return Err(Error::InvalidSyntax("not waiting for IKE_SA_INIT".into()));
    };
    if group != st.ke.group().number() || selected.suite.ke != st.ke.group() {
        sa.state = State::InitSent(st);
        return Err(Error::InvalidKePayload {
            offered: group,
            wanted: selected.suite.ke.number(),
        });
    }
    sa.spi_r = msg.header.spi_r;
    let InitSent { ke, ni, request, .. } = *st;
    let shared = ke.finish(ker)?;
    let keys = derive_ike_sa_keys(&selected.suite, &shared, &ni, nr, sa.spi_i, sa.spi_r);
    // NAT detection: the responder hashed what it saw as source/destination.
    let src_ok = nat_hashes(&msg.payloads, NotifyType::NAT_DETECTION_SOURCE_IP);
    let dst_ok = nat_hashes(&msg.payloads, NotifyType::NAT_DETECTION_DESTINATION_IP);
    if !src_ok.is_empty() && !dst_ok.is_empty() {
        let expect_src = nat_detection_hash(sa.spi_i, sa.spi_r, sa.remote);
        let expect_dst = nat_detection_hash(sa.spi_i, sa.spi_r, sa.local);
        sa.nat.set_remote(!src_ok.iter().any(|h| **h == expect_src));
        sa.nat.set_local(!dst_ok.iter().any(|h| **h == expect_dst));
    }
    // Forced encapsulation: we act as if we were behind a NAT.
    sa.nat.set_local(sa.nat.local() || sa.config.force_udp_encap);
    sa.peer_fragmentation = find_notify(&msg.payloads, NotifyType::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
    note_auth_hints(sa, &msg.payloads);
    install_keys(sa, selected.suite, keys)?;
    sa.state = State::Authenticating(Box::new(AuthContext {
        our_init: request,
        peer_init: datagram.to_vec(),
        ni,
        nr: nr.clone(),
        additional_ke: selected.additional_ke,
        int_auth: Default::default(),
        peer_use_ppk: find_notify(&msg.payloads, NotifyType::USE_PPK).is_some(),
        eap: None,
        first_round: None,
        eap_client: None,
    }));
    Ok(())
}

/// Our SIGNATURE_HASH_ALGORITHMS notify (RFC 7427).
fn signature_hash_notify() -> Payload {
    let data = crate::pki::supported_hash_algorithms()
        .iter()
        .flat_map(|h| h.to_be_bytes())
        .collect();
    notify(NotifyType::SIGNATURE_HASH_ALGORITHMS, data)
}

fn nat_hashes(payloads: &[Payload], ty: NotifyType) -> Vec<&Vec<u8>> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Notify(n) if n.ty == ty => Some(&n.data),
            _ => None,
        })
        .collect()
}

/// A stateless answer to an IKE_SA_INIT request (error notify or COOKIE demand).
pub fn stateless_response(request: &Header, payload: Payload) -> Vec<u8> {
    let header = Header {
        spi_i: request.spi_i,
        spi_r: 0,
        next_payload: ikev2::PayloadType::NONE,
        major_version: 2,
        minor_version: 0,
        exchange: ExchangeType::IKE_SA_INIT,
        flags: FLAG_RESPONSE,
        message_id: 0,
        length: 0,
    };
    ikev2::encode_message(&header, &[payload])
}

/// RFC 5685 gateway identity types.
const GW_IPV4: u8 = 1;
const GW_IPV6: u8 = 2;

/// A REDIRECT notify (RFC 5685 §10) sending the initiator to `gateway`;
/// `nonce` is the initiator's Ni when it answers an IKE_SA_INIT request
/// (which binds the answer to that request), empty otherwise.
pub fn redirect_notify(gateway: std::net::IpAddr, nonce: &[u8]) -> Payload {
    let mut data = Vec::with_capacity(18 + nonce.len());
    match gateway {
        std::net::IpAddr::V4(a) => {
            data.extend_from_slice(&[GW_IPV4, 4]);
            data.extend_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            data.extend_from_slice(&[GW_IPV6, 16]);
            data.extend_from_slice(&a.octets());
        }
    }
    data.extend_from_slice(nonce);
    notify(NotifyType::REDIRECT, data)
}

/// The gateway address and nonce data of a REDIRECT notify's data (`None`:
/// malformed, or an identity that is not an address, such as an FQDN).
pub fn parse_redirect(data: &[u8]) -> Option<(std::net::IpAddr, &[u8])> {
    let (&ty, rest) = data.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    let (id, nonce) = (rest.get(..len)?, &rest[len..]);
    let ip = match (ty, len) {
        (GW_IPV4, 4) => std::net::IpAddr::from(<[u8; 4]>::try_from(id).ok()?),
        (GW_IPV6, 16) => std::net::IpAddr::from(<[u8; 16]>::try_from(id).ok()?),
        _ => return None,
    };
    Some((ip, nonce))
}

/// Why a responder did not create an IKE SA for an IKE_SA_INIT request.
#[derive(Debug)]
pub struct InitRejected {
    /// The error (for logs and counters).
    pub error: Error,
    /// A stateless response to send, if any.
    pub response: Option<Vec<u8>>,
}

fn reject(msg: &Message, error: Error) -> InitRejected {
    let response = match &error {
        Error::InvalidKePayload { wanted, .. } => Some(stateless_response(
            &msg.header,
            notify(NotifyType::INVALID_KE_PAYLOAD, wanted.to_be_bytes().to_vec()),
        )),
        e => e
            .notify()
            .map(|n| stateless_response(&msg.header, notify(n, Vec::new()))),
    };
    InitRejected { error, response }
}

impl IkeSa {
    /// Responder: answers an IKE_SA_INIT request and creates the half-open SA,
    /// or rejects it (with a stateless response where the RFC wants one).
    /// Cookie admission happens before this, in the endpoint.
    pub fn respond_init(
        now: Instant,
        ctx: &Arc<Context>,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        msg: &Message,
        spi_r: u64,
    ) -> Result<IkeSa, InitRejected> {
        let h = &msg.header;
        if h.spi_r != 0 || h.message_id != 0 || h.is_response() || !h.is_initiator() {
            return Err(InitRejected {
                error: Error::InvalidSyntax("not an initial IKE_SA_INIT request".into()),
                response: None,
            });
        }
        let mut offered = None;
        let mut ke = None;
        let mut nonce = None;
        for p in &msg.payloads {
            match p {
                Payload::Sa(props) => offered = Some(props),
                Payload::Ke { group, data } => ke = Some((*group, data)),
                Payload::Nonce(n) => nonce = Some(n),
                Payload::Unknown { critical: true, ty, .. } => {
                    return Err(reject(msg, Error::UnsupportedCriticalPayload(ty.0)));
                }
                _ => {}
            }
        }
        let (Some(offered), Some((ke_group, kei)), Some(ni)) = (offered, ke, nonce) else {
            return Err(reject(
                msg,
                Error::InvalidSyntax("IKE_SA_INIT request lacks SA, KE or nonce".into()),
            ));
        };
        if !nonce_ok(ni) {
            return Err(reject(
                msg,
                Error::InvalidSyntax(format!("initiator nonce of {} bytes", ni.len())),
            ));
        }
        // Pick the connection and proposal; prefer the group the initiator already sent.
        let mut first_mismatch = None;
        let mut chosen = None;
        for cfg in ctx
            .connections
            .iter()
            .filter(|c| c.matches_addresses(local.ip(), remote.ip()))
        {
            match proposal::select_ike(&cfg.ike_proposals, offered) {
                Ok(sel) if sel.suite.ke.number() == ke_group => {
                    chosen = Some((cfg.clone(), sel));
                    break;
                }
                Ok(sel) => {
                    // The initiator guessed another group; accept it when it is acceptable
                    // too, rather than costing a round trip with INVALID_KE_PAYLOAD.
                    let restricted = KeGroup::from_number(ke_group).map(|g| {
                        cfg.ike_proposals
                            .iter()
                            .filter(|p| p.ke.contains(&g))
                            .map(|p| IkeProposal {
                                ke: vec![g],
                                ..p.clone()
                            })
                            .collect::<Vec<_>>()
                    });
                    let sel = restricted
                        .and_then(|r| proposal::select_ike(&r, offered).ok())
                        .unwrap_or(sel);
                    chosen = Some((cfg.clone(), sel));
                    break;
                }
                Err(m) => {
                    if first_mismatch.is_none() {
                        first_mismatch = Some(format!("connection '{}': {m}", cfg.name));
                    }
                }
            }
        }
        let Some((config, selected)) = chosen else {
            // The endpoint logs the refusal (rate-limited: it costs an attacker nothing).
            let why = first_mismatch
                .unwrap_or_else(|| format!("no connection accepts peer {} at {}", remote.ip(), local.ip()));
            return Err(reject(msg, Error::NoProposalChosen(why)));
        };
        require_intermediate(&selected, &msg.payloads).map_err(|e| reject(msg, e))?;
        note_without_additional_ke(&config, &selected, remote);
        if selected.suite.ke.number() != ke_group {
            debug!(peer = %remote, sent = ke_group, wanted = selected.suite.ke.number(), "asking initiator for another KE group");
            return Err(reject(
                msg,
                Error::InvalidKePayload {
                    offered: ke_group,
                    wanted: selected.suite.ke.number(),
                },
            ));
        }
        let (ker, shared) = KeyExchange::respond(&*ctx.crypto, selected.suite.ke, kei).map_err(|e| match e {
            // The endpoint logs the refusal (rate-limited).
            CryptoError::InvalidPublicValue(_) => reject(msg, Error::InvalidSyntax(format!("bad KE value: {e}"))),
            // Our failure, not the peer's: answer nothing, the initiator retries.
            e => local_failure(remote, e),
        })?;
        let nr = random_nonce(&*ctx.crypto).map_err(|e| local_failure(remote, e))?;
        let keys = derive_ike_sa_keys(&selected.suite, &shared, ni, &nr, h.spi_i, spi_r);
        let mut sa = IkeSa::blank(
            Role::Responder,
            now,
            config,
            ctx.clone(),
            local,
            remote,
            h.spi_i,
            spi_r,
            State::Closed,
        );
        let src = nat_hashes(&msg.payloads, NotifyType::NAT_DETECTION_SOURCE_IP);
        let dst = nat_hashes(&msg.payloads, NotifyType::NAT_DETECTION_DESTINATION_IP);
        if !src.is_empty() && !dst.is_empty() {
            let expect_src = nat_detection_hash(h.spi_i, 0, remote);
            let expect_dst = nat_detection_hash(h.spi_i, 0, local);
            sa.nat.set_remote(!src.iter().any(|x| **x == expect_src));
            sa.nat.set_local(!dst.iter().any(|x| **x == expect_dst));
        }
        sa.nat.set_local(sa.nat.local() || sa.config.force_udp_encap);
        sa.peer_fragmentation = find_notify(&msg.payloads, NotifyType::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        let mut payloads = vec![
            Payload::Sa(vec![selected.proposal.clone()]),
            Payload::Ke {
                group: selected.suite.ke.number(),
                data: ker,
            },
            Payload::Nonce(nr.clone()),
            notify(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                nat_detection_hash(h.spi_i, spi_r, source_for_nat_detection(&sa.config, local)).to_vec(),
            ),
            notify(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                nat_detection_hash(h.spi_i, spi_r, remote).to_vec(),
            ),
        ];
        if sa.config.fragmentation && sa.peer_fragmentation {
            payloads.push(notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, Vec::new()));
        }
        note_auth_hints(&mut sa, &msg.payloads);
        if find_notify(&msg.payloads, NotifyType::INTERMEDIATE_EXCHANGE_SUPPORTED).is_some() {
            payloads.push(notify(NotifyType::INTERMEDIATE_EXCHANGE_SUPPORTED, Vec::new()));
        }
        if find_notify(&msg.payloads, NotifyType::CHILDLESS_IKEV2_SUPPORTED).is_some() {
            payloads.push(notify(NotifyType::CHILDLESS_IKEV2_SUPPORTED, Vec::new()));
        }
        // The connection is known only from IKE_AUTH's IDi: offer PPK if any
        // connection has one.
        let peer_use_ppk = find_notify(&msg.payloads, NotifyType::USE_PPK).is_some()
            && ctx.connections.iter().any(|c| c.ppk.is_some());
        if peer_use_ppk {
            payloads.push(notify(NotifyType::USE_PPK, Vec::new()));
        }
        // RFC 4739 (the responder announces it here, the initiator in its
        // first IKE_AUTH), offered only where a connection asks for two rounds.
        if sa.ctx.connections.iter().any(|c| c.remote_auth2.is_some()) {
            payloads.push(notify(NotifyType::MULTIPLE_AUTH_SUPPORTED, Vec::new()));
        }
        if !sa.peer_sig_hashes().is_empty() {
            payloads.push(signature_hash_notify());
        }
        if let crate::config::AuthConfig::PubKey(trust) = &sa.config.remote_auth {
            payloads.push(Payload::CertReq {
                encoding: ikev2::CertEncoding::X509_SIGNATURE,
                data: crate::pki::certreq_hashes(trust),
            });
        }
        let header = sa.header(ExchangeType::IKE_SA_INIT, 0, true);
        let response = ikev2::encode_message(&header, &payloads);
        install_keys(&mut sa, selected.suite, keys).map_err(|e| InitRejected {
            error: e,
            response: None,
        })?;
        sa.state = State::Authenticating(Box::new(AuthContext {
            our_init: response.clone(),
            peer_init: datagram.to_vec(),
            ni: ni.clone(),
            nr,
            additional_ke: selected.additional_ke,
            int_auth: Default::default(),
            peer_use_ppk,
            eap: None,
            first_round: None,
            eap_client: None,
        }));
        sa.expected_request_id = 1;
        sa.cached_response = Some(CachedResponse::new(0, None, vec![response.clone()]));
        sa.push_transmit(response);
        debug!(peer = %remote, connection = %sa.config.name, "IKE_SA_INIT answered");
        Ok(sa)
    }
}

/// The source address we hash into NAT_DETECTION_SOURCE_IP: our real one, or
/// with [`crate::config::ConnectionConfig::force_udp_encap`] one the peer cannot
/// match (0.0.0.0:0), so it detects a NAT and both sides use UDP encapsulation.
fn source_for_nat_detection(
    config: &crate::config::ConnectionConfig,
    local: std::net::SocketAddr,
) -> std::net::SocketAddr {
    if config.force_udp_encap {
        std::net::SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        local
    }
}

/// Says so when a connection that lists optional additional key exchanges
/// (`keN_none`) ends up with none: the peer offered no post-quantum exchange
/// and the policy allowed that.
fn note_without_additional_ke(config: &ConnectionConfig, selected: &proposal::SelectedIke, peer: SocketAddr) {
    let listed = config
        .ike_proposals
        .iter()
        .any(|p| p.additional_ke.iter().any(|m| !m.is_empty()));
    if listed && selected.additional_ke.is_empty() {
        info!(
            connection = %config.name,
            %peer,
            ke = selected.suite.ke.name(),
            "IKE SA without additional key exchanges: the peer offered none and our proposals allow that (keN_none)"
        );
    }
}

/// True when a proposal of `config` lists an additional key exchange: we
/// then announce IKE_INTERMEDIATE (RFC 9242 §3.1).
fn offers_additional_ke(config: &ConnectionConfig) -> bool {
    config
        .ike_proposals
        .iter()
        .any(|p| p.additional_ke.iter().any(|m| m.iter().any(|g| g.is_some())))
}

/// RFC 9370 additional key exchanges run in IKE_INTERMEDIATE: a suite that
/// negotiated them needs the peer's INTERMEDIATE_EXCHANGE_SUPPORTED.
fn require_intermediate(selected: &proposal::SelectedIke, peer_payloads: &[Payload]) -> Result<(), Error> {
    if selected.additional_ke.is_empty()
        || find_notify(peer_payloads, NotifyType::INTERMEDIATE_EXCHANGE_SUPPORTED).is_some()
    {
        return Ok(());
    }
    let names = proposal::key_exchange_names(None, &selected.additional_ke);
    Err(Error::NoProposalChosen(format!(
        "negotiated additional key exchanges {} but the peer did not send INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9242)",
        names.join("-")
    )))
}

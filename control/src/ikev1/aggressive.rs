//! Aggressive Mode with pre-shared keys (RFC 2409 §5.4): three messages
//! instead of six, identities in the clear.
//!
//! ```text
//! Initiator                          Responder
//! HDR, SA, KE, Ni, IDii          -->
//!                 <--  HDR, SA, KE, Nr, IDir, HASH_R
//! HDR, HASH_I                    -->
//! ```
//! HASH_R travels unencrypted and is a function of the PSK and public
//! values: whoever sees it can test PSK guesses offline. It is therefore
//! off unless [`Ikev1Policy::aggressive_psk`] turns it on, which logs that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use tracing::warn;

use super::auth::method;
use super::{
    DPD_VENDOR_ID, Ikev1Error, Ikev1Sa, MainModeState, NONCE_LEN, find, invalid, payload_body, proposal, psk_of,
    random_bytes,
};
use crate::config::ConnectionConfig;
use crate::crypto::KeyExchange;
use crate::ike_sa::{Context, Role};
use crate::wire::ikev2;
use crate::wire::isakmp::{
    self, ExchangeType, Header, IdType, Identification, Payload, ProtocolId, SIT_IDENTITY_ONLY, SecurityAssociation,
};

/// What a responder accepts beyond Main Mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ikev1Policy {
    aggressive: bool,
}

impl Ikev1Policy {
    /// Main Mode only (the default).
    pub fn main_mode_only() -> Self {
        Ikev1Policy { aggressive: false }
    }

    /// Also answer Aggressive Mode with pre-shared keys; logs a warning,
    /// since every answer exposes the PSK to offline guessing.
    pub fn aggressive_psk() -> Self {
        warn!(
            "IKEv1 Aggressive Mode with pre-shared keys is enabled: its HASH travels unencrypted and lets anyone \
             who sees it crack the pre-shared key offline; prefer Main Mode or IKEv2"
        );
        Ikev1Policy { aggressive: true }
    }

    /// True when Aggressive Mode is answered for every IKEv1 connection
    /// (else only for those that say `aggressive = true`).
    pub fn allows_aggressive(&self) -> bool {
        self.aggressive
    }
}

fn to_ikev2_id(id: &Identification<'_>) -> ikev2::Identification {
    ikev2::Identification {
        id_type: ikev2::IdType(id.id_type.0),
        data: id.data.to_vec(),
    }
}

fn our_id(conn: &ConnectionConfig) -> Identification<'_> {
    Identification {
        id_type: IdType(conn.local_id.id_type.0),
        protocol: 0,
        port: 0,
        data: &conn.local_id.data,
    }
}

impl Ikev1Sa {
    /// Starts Aggressive Mode towards `remote` for `conn` (PSK only). Logs
    /// a warning: the responder's answer exposes the PSK to offline guessing.
    pub fn initiate_aggressive(
        ctx: &Context,
        conn: Arc<ConnectionConfig>,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Result<Self, Ikev1Error> {
        if psk_of(&conn).is_none() {
            return Err(Ikev1Error::NoConnection(format!(
                "connection {} does not authenticate with a pre-shared key",
                conn.name
            )));
        }
        warn!(
            connection = %conn.name,
            "IKEv1 Aggressive Mode with a pre-shared key: the responder's HASH travels unencrypted and lets \
             anyone who sees it crack the key offline"
        );
        let mut sa = Ikev1Sa::new(ctx, conn, Role::Initiator, local, remote);
        sa.aggressive = true;
        sa.cookie_i = ctx.new_ike_spi()?;
        let lifetime = (sa.conn.ike_lifetime.rekey + sa.conn.ike_lifetime.over).as_secs();
        // The KE payload goes out with the proposal: one group for all transforms.
        let Some(group) = sa.conn.ike_proposals.iter().flat_map(|p| p.ke.iter().copied()).next() else {
            return Err(Ikev1Error::NoProposalChosen(format!(
                "connection {} has no DH group",
                sa.conn.name
            )));
        };
        let transforms: Vec<_> = proposal::phase1_transforms(&sa.conn.ike_proposals, lifetime, method::PSK)
            .into_iter()
            .filter(|t| {
                t.attributes
                    .iter()
                    .any(|a| a.ty == 4 && a.as_u32() == Some(u32::from(group.number())))
            })
            .collect();
        if transforms.is_empty() {
            return Err(Ikev1Error::NoProposalChosen(format!(
                "connection {} has no IKE proposal usable with IKEv1",
                sa.conn.name
            )));
        }
        let ke = KeyExchange::generate(&*ctx.crypto, group)?;
        let nonce = random_bytes(ctx, NONCE_LEN)?;
        let sa_payload = Payload::Sa(SecurityAssociation {
            situation: SIT_IDENTITY_ONLY,
            proposals: vec![isakmp::Proposal {
                number: 1,
                protocol: ProtocolId::ISAKMP,
                spi: &[],
                transforms,
            }],
        });
        let conn = sa.conn.clone();
        let id = Payload::Id(our_id(&conn));
        let ke_i = ke.public_value().to_vec();
        let hs = sa.handshake_mut();
        hs.sa_i_body = payload_body(&sa_payload)?;
        hs.ke_i = ke_i.clone();
        hs.nonce_i = nonce.clone();
        hs.ke = Some(ke);
        let payloads = [
            sa_payload,
            Payload::Ke(&ke_i),
            Payload::Nonce(&nonce),
            id,
            Payload::VendorId(&DPD_VENDOR_ID),
            Payload::VendorId(&super::nat::RFC3947_VENDOR_ID),
        ];
        let mut out = Vec::new();
        isakmp::encode_message(&sa.header(ExchangeType::AGGRESSIVE, 0), &payloads, &mut out)?;
        sa.phase1.sent(&out, now, &sa.conn, true);
        sa.push_transmit(out);
        sa.set_state(MainModeState::SaSent);
        Ok(sa)
    }

    /// Answers Aggressive Mode message 1 (the policy allowing it).
    pub(super) fn respond_aggressive(
        ctx: &Context,
        policy: &Ikev1Policy,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<Self, Ikev1Error> {
        let msg = isakmp::decode_message(datagram)?;
        let h = msg.header;
        let sa_in = find!(msg.payloads, Sa).ok_or_else(|| invalid("Aggressive Mode message 1 without SA"))?;
        let ke_i = find!(msg.payloads, Ke).ok_or_else(|| invalid("Aggressive Mode message 1 without KE"))?;
        let nonce_i = find!(msg.payloads, Nonce).ok_or_else(|| invalid("Aggressive Mode message 1 without nonce"))?;
        let id_i = find!(msg.payloads, Id).ok_or_else(|| invalid("Aggressive Mode message 1 without ID"))?;
        let [offer] = sa_in.proposals.as_slice() else {
            return Err(invalid("Aggressive Mode SA payload with more than one proposal"));
        };
        let peer = to_ikev2_id(id_i);
        let mut refusals = Vec::new();
        let mut chosen = None;
        for conn in ctx.connections.iter() {
            if !conn.ike_versions.allows_v1()
                || !(conn.aggressive || policy.allows_aggressive())
                || !conn.matches_addresses(local.ip(), remote.ip())
                || psk_of(conn).is_none()
                || !conn.remote_id.matches(&peer)
            {
                continue;
            }
            match proposal::select_phase1(&conn.ike_proposals, offer, method::PSK) {
                Ok((at, suite)) if suite.group.public_len() == ke_i.len() => {
                    chosen = Some((conn.clone(), at, suite));
                    break;
                }
                Ok(_) => refusals.push(format!("{}: KE data does not fit the chosen group", conn.name)),
                Err(m) => refusals.push(format!("{}: {m}", conn.name)),
            }
        }
        let Some((conn, at, suite)) = chosen else {
            return Err(if refusals.is_empty() {
                Ikev1Error::NoConnection(format!("no PSK connection for {peer:?} at {local} <- {remote}"))
            } else {
                Ikev1Error::NoProposalChosen(refusals.join("; "))
            });
        };
        let mut sa = Ikev1Sa::new(ctx, conn, Role::Responder, local, remote);
        sa.aggressive = true;
        sa.cookie_i = h.cookie_i;
        sa.cookie_r = ctx.new_ike_spi()?;
        sa.suite = Some(suite);
        let ke = KeyExchange::generate(&*ctx.crypto, suite.group)?;
        let ke_r = ke.public_value().to_vec();
        let shared = ke.finish(ke_i)?;
        let nonce_r = random_bytes(ctx, NONCE_LEN)?;
        let hs = sa.handshake_mut();
        hs.sa_i_body = payload_body(&Payload::Sa(sa_in.clone()))?;
        hs.ke_i = ke_i.to_vec();
        hs.ke_r = ke_r.clone();
        hs.nonce_i = nonce_i.to_vec();
        hs.nonce_r = nonce_r.clone();
        hs.peer_id_body = payload_body(&Payload::Id(*id_i))?;
        hs.peer_id = Some(peer);
        sa.derive_keys(&shared)?;
        sa.phase1.received(datagram);
        let conn = sa.conn.clone();
        let id = Payload::Id(our_id(&conn));
        let hash_r = sa.phase1_hash(false, &payload_body(&id)?)?;
        let reply = Payload::Sa(SecurityAssociation {
            situation: SIT_IDENTITY_ONLY,
            proposals: vec![isakmp::Proposal {
                transforms: vec![offer.transforms[at].clone()],
                ..offer.clone()
            }],
        });
        sa.nat_t = super::nat::announces_nat_t(&msg.payloads);
        let nat_d = sa.our_nat_d()?;
        let mut payloads = vec![
            reply,
            Payload::Ke(&ke_r),
            Payload::Nonce(&nonce_r),
            id,
            Payload::Hash(&hash_r),
            Payload::VendorId(&DPD_VENDOR_ID),
        ];
        if sa.nat_t {
            payloads.push(Payload::VendorId(&super::nat::RFC3947_VENDOR_ID));
        }
        payloads.extend(nat_d.iter().flatten().map(|d| Payload::NatD(d)));
        let mut out = Vec::new();
        isakmp::encode_message(&sa.header(ExchangeType::AGGRESSIVE, 0), &payloads, &mut out)?;
        sa.phase1.sent(&out, now, &sa.conn, false);
        sa.push_transmit(out);
        sa.set_state(MainModeState::SaRcvd);
        sa.half_open_until = Some(now + ctx.half_open_timeout);
        Ok(sa)
    }

    /// Initiator: Aggressive Mode message 2, answered with HASH_I.
    pub(super) fn aggressive_initiator_got_reply(
        &mut self,
        now: Instant,
        h: &Header,
        datagram: &[u8],
    ) -> Result<(), Ikev1Error> {
        let msg = isakmp::decode_message(datagram)?;
        if h.cookie_r == 0 {
            return Err(invalid("Aggressive Mode message 2 without responder cookie"));
        }
        let sa = find!(msg.payloads, Sa).ok_or_else(|| invalid("Aggressive Mode message 2 without SA"))?;
        let ke_r = find!(msg.payloads, Ke).ok_or_else(|| invalid("Aggressive Mode message 2 without KE"))?;
        let nonce_r = find!(msg.payloads, Nonce).ok_or_else(|| invalid("Aggressive Mode message 2 without nonce"))?;
        let id_r = find!(msg.payloads, Id).ok_or_else(|| invalid("Aggressive Mode message 2 without ID"))?;
        let hash_r = find!(msg.payloads, Hash).ok_or_else(|| invalid("Aggressive Mode message 2 without HASH"))?;
        let [chosen] = sa.proposals.as_slice() else {
            return Err(Ikev1Error::NoProposalChosen(
                "responder returned several proposals".into(),
            ));
        };
        let suite = proposal::accept_phase1(&self.conn.ike_proposals, chosen, method::PSK)
            .map_err(|m| Ikev1Error::NoProposalChosen(m.to_string()))?;
        let ke = self
            .handshake
            .as_mut()
            .and_then(|hs| hs.ke.take())
            .ok_or_else(|| invalid("no key exchange in progress"))?;
        if ke.group() != suite.group || ke_r.len() != suite.group.public_len() {
            return Err(Ikev1Error::NoProposalChosen(format!(
                "responder chose group {} for our {} KE",
                suite.group.name(),
                ke.group().name()
            )));
        }
        let shared = ke.finish(ke_r)?;
        self.cookie_r = h.cookie_r;
        self.suite = Some(suite);
        self.nat_t = super::nat::announces_nat_t(&msg.payloads);
        let hs = self.handshake_mut();
        hs.ke_r = ke_r.to_vec();
        hs.nonce_r = nonce_r.to_vec();
        self.derive_keys(&shared)?;
        let expected = self.phase1_hash(false, &payload_body(&Payload::Id(*id_r))?)?;
        if verify_slices_are_equal(&expected, hash_r).is_err() {
            return Err(Ikev1Error::AuthenticationFailed(
                "HASH_R does not verify: the pre-shared keys differ".into(),
            ));
        }
        let peer = to_ikev2_id(id_r);
        if !self.conn.remote_id.matches(&peer) {
            return Err(Ikev1Error::AuthenticationFailed(format!(
                "peer identity {peer:?} is not the one connection {} expects",
                self.conn.name
            )));
        }
        self.phase1.received(datagram);
        self.set_state(MainModeState::KeRcvd);
        let conn = self.conn.clone();
        let hash_i = self.phase1_hash(true, &payload_body(&Payload::Id(our_id(&conn)))?)?;
        // RFC 3947 §4: with a NAT, message 3 already goes between the NAT-T
        // ports, and its NAT-D payloads describe them.
        self.check_nat_d_payloads(&msg.payloads)?;
        self.float_to_nat_port();
        let nat_d = self.our_nat_d()?;
        let mut payloads = vec![Payload::Hash(&hash_i)];
        payloads.extend(nat_d.iter().flatten().map(|d| Payload::NatD(d)));
        let mut out = Vec::new();
        isakmp::encode_message(&self.header(ExchangeType::AGGRESSIVE, 0), &payloads, &mut out)?;
        self.phase1.sent(&out, now, &self.conn, false);
        self.push_transmit(out);
        self.established(now, peer, false);
        self.start_first_child(now);
        Ok(())
    }

    /// Responder: Aggressive Mode message 3 (HASH_I, in the clear or encrypted).
    pub(super) fn aggressive_responder_got_hash(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Ikev1Error> {
        let (header, _) = isakmp::split_message(datagram)?;
        let mut plain = std::mem::take(&mut self.plain);
        let result = (|| {
            let payloads = if header.is_encrypted() {
                let (Some(cipher), Some(ivs)) = (&self.cipher, &mut self.ivs) else {
                    return Err(invalid("no keys"));
                };
                let h = cipher.open(ivs, datagram, &mut plain)?;
                isakmp::decode_payloads(h.next_payload, &plain, true)?
            } else {
                isakmp::decode_message(datagram)?.payloads
            };
            let hash_i = find!(payloads, Hash).ok_or_else(|| invalid("Aggressive Mode message 3 without HASH"))?;
            let id_body = self
                .handshake
                .as_ref()
                .map(|h| h.peer_id_body.clone())
                .unwrap_or_default();
            let expected = self.phase1_hash(true, &id_body)?;
            if verify_slices_are_equal(&expected, hash_i).is_err() {
                return Err(Ikev1Error::AuthenticationFailed(
                    "HASH_I does not verify: the pre-shared keys differ".into(),
                ));
            }
            self.check_nat_d_payloads(&payloads)
        })();
        self.plain = plain;
        result?;
        self.phase1.received(datagram);
        let peer = self
            .handshake
            .as_mut()
            .and_then(|h| h.peer_id.take())
            .ok_or_else(|| invalid("no peer identity"))?;
        self.established(now, peer, false);
        Ok(())
    }
}

//! Quick Mode (RFC 2409 §5.5): three encrypted messages under the ISAKMP
//! SA that create one pair of ESP SAs, with PFS when a group is configured.
//!
//! ```text
//! Initiator                         Responder
//! HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr]  -->
//!           <--  HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr]
//! HDR*, HASH(3)                                -->
//! ```
//! HASH(1) = prf(SKEYID_a, M-ID | rest of message 1), HASH(2) =
//! prf(SKEYID_a, M-ID | Ni_b | rest of message 2), HASH(3) =
//! prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b).

use std::fmt;
use std::time::Instant;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::proposal::{self, Phase2Suite};
use super::ts::{id_of_selector, selector_of_id};
use super::{Flight, Ikev1Error, Ikev1Sa, NONCE_LEN, find, invalid, random_bytes};
use crate::config::ChildConfig;
use crate::crypto::{KeGroup, KeyExchange, SharedSecret};
use crate::ike_sa::{ChildSaInstall, DirectionKeys, Event, Role};
use crate::wire::ikev2::TrafficSelector;
use crate::wire::isakmp::{
    self, ExchangeType, Header, Identification, NotifyType, Payload, ProtocolId, SIT_IDENTITY_ONLY,
};

/// Quick Mode states, named as operators read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuickModeState {
    /// Nothing sent.
    Idle,
    /// Initiator: message 1 sent.
    InitSent,
    /// Responder: message 1 received and message 2 sent.
    RespSent,
    /// Initiator: message 2 received (message 3 follows at once).
    RespRcvd,
    /// The ESP SAs are installed.
    Done,
}

impl fmt::Display for QuickModeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuickModeState::Idle => "QM_IDLE",
            QuickModeState::InitSent => "QM_INIT_SENT",
            QuickModeState::RespSent => "QM_RESP_SENT",
            QuickModeState::RespRcvd => "QM_RESP_RCVD",
            QuickModeState::Done => "QM_DONE",
        })
    }
}

/// One Quick Mode exchange and the ESP SA pair it creates.
pub(super) struct QuickMode {
    pub(super) message_id: u32,
    role: Role,
    pub(super) state: QuickModeState,
    template: usize,
    pub(super) spi_in: u32,
    pub(super) spi_out: u32,
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    ke: Option<KeyExchange>,
    pfs: Option<KeGroup>,
    pfs_shared: Option<SharedSecret>,
    suite: Option<Phase2Suite>,
    local_ts: TrafficSelector,
    remote_ts: TrafficSelector,
    pub(super) flight: Flight,
    installed_at: Option<Instant>,
    /// When this ESP SA pair is rekeyed (a new Quick Mode for the same
    /// selectors), unless a newer one replaced it first.
    rekey_at: Option<Instant>,
    /// When this ESP SA pair is deleted (its hard lifetime).
    expire_at: Option<Instant>,
    /// The inbound SPI of the ESP SA pair this Quick Mode replaces.
    rekey_of: Option<u32>,
    /// A newer ESP SA pair took over these selectors: this one is not
    /// rekeyed again and waits for its DELETE or its hard lifetime.
    replaced: bool,
}

/// One Quick Mode and its ESP SA pair, for listings.
#[derive(Clone, Debug)]
pub struct EspSaInfo {
    /// The child template's name.
    pub name: String,
    /// Quick Mode state.
    pub state: QuickModeState,
    /// Our inbound SPI.
    pub spi_in: u32,
    /// Our outbound SPI (0 until known).
    pub spi_out: u32,
    /// The negotiated suite, once chosen.
    pub suite: Option<Phase2Suite>,
    /// Our selector.
    pub local_ts: TrafficSelector,
    /// The peer's selector.
    pub remote_ts: TrafficSelector,
    /// When the ESP SAs were installed.
    pub installed_at: Option<Instant>,
}

impl QuickMode {
    /// The earliest of its retransmission, rekey and expiry deadlines.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [
            self.flight.deadline,
            self.rekey_at.filter(|_| !self.replaced),
            self.expire_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

fn id_payload_data(ts: &TrafficSelector) -> Result<(isakmp::IdType, u8, u16, Vec<u8>), Ikev1Error> {
    id_of_selector(ts).map_err(Ikev1Error::TsUnacceptable)
}

impl Ikev1Sa {
    /// Starts a Quick Mode for the connection's child `template`.
    pub fn start_quick_mode(&mut self, now: Instant, template: usize) -> Result<u32, Ikev1Error> {
        self.start_quick_mode_for(now, template, None)
    }

    /// Starts a Quick Mode for child `template`; for a rekey, with the
    /// selectors and inbound SPI of the ESP SA pair it replaces.
    fn start_quick_mode_for(
        &mut self,
        now: Instant,
        template: usize,
        rekey: Option<(u32, TrafficSelector, TrafficSelector)>,
    ) -> Result<u32, Ikev1Error> {
        if self.state != super::MainModeState::Done {
            return Err(invalid("Quick Mode before the ISAKMP SA is established"));
        }
        let child: ChildConfig = self
            .conn
            .children
            .get(template)
            .cloned()
            .ok_or_else(|| invalid(format!("connection {} has no child {template}", self.conn.name)))?;
        let (rekey_of, local_ts, remote_ts) = match rekey {
            Some((spi, l, r)) => (Some(spi), l, r),
            None => match (child.local_ts.first(), child.remote_ts.first()) {
                (Some(l), Some(r)) => (None, l.clone(), r.clone()),
                _ => {
                    return Err(Ikev1Error::TsUnacceptable(format!(
                        "child {} has no selectors",
                        child.name
                    )));
                }
            },
        };
        let message_id = self.new_message_id()?;
        let spi_in = self.ctx.child_spis.allocate(&*self.ctx.crypto)?;
        let pfs = proposal::pfs_group(&child.esp_proposals);
        let lifetime = (child.lifetime.rekey + child.lifetime.over).as_secs();
        let transforms =
            proposal::phase2_transforms(&child.esp_proposals, pfs, child.mode, self.behind_nat(), lifetime);
        if transforms.is_empty() {
            self.ctx.child_spis.release(spi_in);
            return Err(Ikev1Error::NoProposalChosen(format!(
                "child {} has no ESP proposal usable with IKEv1",
                child.name
            )));
        }
        let nonce_i = random_bytes(&self.ctx, NONCE_LEN)?;
        let ke = pfs.map(|g| KeyExchange::generate(&*self.ctx.crypto, g)).transpose()?;
        let spi_bytes = spi_in.to_be_bytes();
        let (ci, cr) = (id_payload_data(&local_ts)?, id_payload_data(&remote_ts)?);
        let mut tail = vec![
            Payload::Sa(isakmp::SecurityAssociation {
                situation: SIT_IDENTITY_ONLY,
                proposals: vec![isakmp::Proposal {
                    number: 1,
                    protocol: ProtocolId::ESP,
                    spi: &spi_bytes,
                    transforms,
                }],
            }),
            Payload::Nonce(&nonce_i),
        ];
        if let Some(ke) = &ke {
            tail.push(Payload::Ke(ke.public_value()));
        }
        tail.push(client_id(&ci));
        tail.push(client_id(&cr));
        let out = self.seal_with_hash(message_id, &[&message_id.to_be_bytes()], &tail)?;
        let mut flight = Flight::default();
        flight.sent(&out, now, &self.conn, true);
        self.push_transmit(out);
        let rekeying = rekey_of
            .map(|s| format!(" (rekeying ESP SA {s:08x})"))
            .unwrap_or_default();
        info!(
            connection = %self.conn.name,
            "IKEv1 Quick Mode {message_id:08x} for child {}{rekeying}: QM_IDLE -> QM_INIT_SENT",
            child.name
        );
        self.quick.push(QuickMode {
            message_id,
            role: Role::Initiator,
            state: QuickModeState::InitSent,
            template,
            spi_in,
            spi_out: 0,
            nonce_i,
            nonce_r: Vec::new(),
            ke,
            pfs,
            pfs_shared: None,
            suite: None,
            local_ts,
            remote_ts,
            flight,
            installed_at: None,
            rekey_at: None,
            expire_at: None,
            rekey_of,
            replaced: false,
        });
        Ok(message_id)
    }

    /// The Quick Modes and their ESP SAs, for listings.
    pub fn esp_sas(&self) -> Vec<EspSaInfo> {
        self.quick
            .iter()
            .map(|q| EspSaInfo {
                name: self
                    .conn
                    .children
                    .get(q.template)
                    .map_or_else(String::new, |c| c.name.clone()),
                state: q.state,
                spi_in: q.spi_in,
                spi_out: q.spi_out,
                suite: q.suite,
                local_ts: q.local_ts.clone(),
                remote_ts: q.remote_ts.clone(),
                installed_at: q.installed_at,
            })
            .collect()
    }

    /// Encodes `tail`, prepends HASH = prf(SKEYID_a, prefix | tail) and seals.
    fn seal_with_hash(
        &mut self,
        message_id: u32,
        prefix: &[&[u8]],
        tail: &[Payload<'_>],
    ) -> Result<Vec<u8>, Ikev1Error> {
        let mut tail_bytes = Vec::new();
        isakmp::encode_payloads(tail, &mut tail_bytes)?;
        let keys = self.keys.as_ref().ok_or_else(|| invalid("no keys"))?;
        let mut parts: Vec<&[u8]> = prefix.to_vec();
        parts.push(&tail_bytes);
        let hash = keys.auth_hash(&parts);
        let mut all = vec![Payload::Hash(&hash)];
        all.extend_from_slice(tail);
        self.seal(ExchangeType::QUICK, message_id, &all)
    }

    pub(super) fn quick_mode(&mut self, now: Instant, h: &Header, datagram: &[u8]) -> Result<(), Ikev1Error> {
        let at = self.quick.iter().position(|q| q.message_id == h.message_id);
        if let Some(i) = at {
            if self.quick[i].flight.is_repeat(datagram) {
                debug!(connection = %self.conn.name, "IKEv1 repeated Quick Mode message {:08x}: answering again", h.message_id);
                if let Some(again) = self.quick[i].flight.answer_to_repeat() {
                    self.push_transmit(again);
                }
                return Ok(());
            }
        }
        let mut plain = std::mem::take(&mut self.plain);
        let result = self.quick_mode_open(now, at, h, datagram, &mut plain);
        self.plain = plain;
        if let Err(e) = &result
            && let Some(i) = self.quick.iter().position(|q| q.message_id == h.message_id)
            && matches!(
                e,
                Ikev1Error::NoProposalChosen(_) | Ikev1Error::AuthenticationFailed(_) | Ikev1Error::TsUnacceptable(_)
            )
        {
            let q = self.quick.remove(i);
            self.quick_failed(now, &q, e.to_string());
        }
        result
    }

    pub(super) fn quick_failed(&mut self, now: Instant, q: &QuickMode, reason: String) {
        if let Some(ivs) = &mut self.ivs {
            ivs.forget(q.message_id);
        }
        self.ctx.child_spis.release(q.spi_in);
        let name = self
            .conn
            .children
            .get(q.template)
            .map_or_else(String::new, |c| c.name.clone());
        warn!(connection = %self.conn.name, "IKEv1 Quick Mode {:08x} for child {name} failed: {reason}", q.message_id);
        if let Some(old) = q.rekey_of
            && q.role == Role::Initiator
            && let Some(o) = self.quick.iter_mut().find(|o| o.spi_in == old && !o.replaced)
        {
            let wait = crate::ike_sa::rekey_retry_wait(&q.nonce_i);
            info!(connection = %self.conn.name, "IKEv1 rekey of ESP SA {old:08x} retried in {wait:?}");
            o.rekey_at = Some(now + wait);
        }
        self.events.push_back(Event::ChildSaFailed { name, reason });
    }

    fn quick_mode_open(
        &mut self,
        now: Instant,
        at: Option<usize>,
        h: &Header,
        datagram: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<(), Ikev1Error> {
        let (Some(cipher), Some(ivs)) = (&self.cipher, &mut self.ivs) else {
            return Err(invalid("no keys"));
        };
        let mut trial = ivs.clone();
        let h_in = cipher.open(&mut trial, datagram, plain)?;
        let plain: &[u8] = plain;
        let payloads = isakmp::decode_payloads(h_in.next_payload, plain, true)?;
        let spans = isakmp::payload_spans(h_in.next_payload, plain)?;
        let (Some(Payload::Hash(hash)), Some(first), Some(last)) = (payloads.first(), spans.first(), spans.last())
        else {
            return Err(invalid("Quick Mode message without leading HASH"));
        };
        let tail = &plain[first.end..last.end];
        let mid = h.message_id.to_be_bytes();
        let keys = self.keys.as_ref().ok_or_else(|| invalid("no keys"))?;
        let state = at.map(|i| (self.quick[i].role, self.quick[i].state));
        let expected = match state {
            None => keys.auth_hash(&[&mid, tail]),
            Some((Role::Initiator, QuickModeState::InitSent)) => {
                let q = &self.quick[at.unwrap_or_default()];
                keys.auth_hash(&[&mid, &q.nonce_i, tail])
            }
            Some((Role::Responder, QuickModeState::RespSent)) => {
                let q = &self.quick[at.unwrap_or_default()];
                if spans.len() != 1 {
                    return Err(invalid("Quick Mode message 3 carries more than HASH(3)"));
                }
                keys.auth_hash(&[&[0], &mid, &q.nonce_i, &q.nonce_r])
            }
            Some((_, s)) => {
                return Err(Ikev1Error::UnexpectedMessage {
                    exchange: ExchangeType::QUICK,
                    state: s.to_string(),
                });
            }
        };
        if verify_slices_are_equal(&expected, hash).is_err() {
            return Err(Ikev1Error::AuthenticationFailed(format!(
                "Quick Mode {:08x} HASH does not verify",
                h.message_id
            )));
        }
        *ivs = trial;
        match (state, at) {
            (None, _) => self.quick_respond(now, h.message_id, datagram, &payloads[1..]),
            (Some((Role::Initiator, _)), Some(i)) => self.quick_initiator_got_reply(now, i, datagram, &payloads[1..]),
            (_, Some(i)) => {
                self.quick[i].flight.received(datagram);
                self.quick_install(now, i);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Answers a Quick Mode message 1; a refusal is told to the peer in an
    /// informational notify on its ESP SPI, so its Quick Mode fails at once.
    fn quick_respond(
        &mut self,
        now: Instant,
        message_id: u32,
        datagram: &[u8],
        payloads: &[Payload<'_>],
    ) -> Result<(), Ikev1Error> {
        let result = self.quick_respond_inner(now, message_id, datagram, payloads);
        let ty = match &result {
            Err(Ikev1Error::NoProposalChosen(_)) => NotifyType::NO_PROPOSAL_CHOSEN,
            Err(Ikev1Error::TsUnacceptable(_)) => NotifyType::INVALID_ID_INFORMATION,
            _ => return result,
        };
        let peer_spi = find!(payloads, Sa)
            .and_then(|sa| sa.proposals.iter().find(|p| p.protocol == ProtocolId::ESP))
            .map(|p| p.spi)
            .unwrap_or_default();
        let notify = Payload::Notify(isakmp::Notification {
            doi: isakmp::DOI_IPSEC,
            protocol: ProtocolId::ESP.0,
            ty,
            spi: peer_spi,
            data: &[],
        });
        if let Err(e) = self.send_informational(&[notify]) {
            warn!(connection = %self.conn.name, "IKEv1 could not tell the peer {ty}: {e}");
        }
        result
    }

    fn quick_respond_inner(
        &mut self,
        now: Instant,
        message_id: u32,
        datagram: &[u8],
        payloads: &[Payload<'_>],
    ) -> Result<(), Ikev1Error> {
        let sa = find!(payloads, Sa).ok_or_else(|| invalid("Quick Mode message 1 without SA"))?;
        let nonce_i = find!(payloads, Nonce).ok_or_else(|| invalid("Quick Mode message 1 without nonce"))?;
        let peer_ke = find!(payloads, Ke);
        let ids: Vec<&Identification<'_>> = payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Id(id) => Some(id),
                _ => None,
            })
            .collect();
        // The peer's selectors: its IDci is our remote, its IDcr our local;
        // without IDs the SA is between the two IKE addresses.
        let (remote_ts, local_ts) = match ids.as_slice() {
            [] => (host(self.remote.ip()), host(self.local.ip())),
            [ci, cr] => (
                selector_of_id(ci).map_err(Ikev1Error::TsUnacceptable)?,
                selector_of_id(cr).map_err(Ikev1Error::TsUnacceptable)?,
            ),
            _ => return Err(invalid("Quick Mode message 1 with one client ID")),
        };
        let contained = |ours: &[TrafficSelector], t: &TrafficSelector| ours.iter().any(|o| crate::ts::contains(o, t));
        // `dynamic` (empty) is our address, and the peer's virtual IPs
        // from Mode Config, else its address.
        let ours_dynamic = [host(self.local.ip())];
        let theirs_dynamic: Vec<TrafficSelector> = if self.virtual_ips.is_empty() {
            vec![host(self.remote.ip())]
        } else {
            self.virtual_ips.iter().map(|a| host(*a)).collect()
        };
        let or_dynamic = |configured: &'_ [TrafficSelector], dynamic: &'_ [TrafficSelector]| {
            if configured.is_empty() {
                dynamic.to_vec()
            } else {
                configured.to_vec()
            }
        };
        let template = self
            .conn
            .children
            .iter()
            .position(|c| {
                contained(&or_dynamic(&c.local_ts, &ours_dynamic), &local_ts)
                    && contained(&or_dynamic(&c.remote_ts, &theirs_dynamic), &remote_ts)
            })
            .ok_or_else(|| {
                Ikev1Error::TsUnacceptable(format!(
                    "no child of {} covers {} === {}",
                    self.conn.name,
                    crate::ts::display(&local_ts),
                    crate::ts::display(&remote_ts)
                ))
            })?;
        let child = self.conn.children[template].clone();
        let choice = match peer_ke {
            None => proposal::select_phase2(&child.esp_proposals, &sa.proposals, None),
            Some(ke) => {
                let groups = child.esp_proposals.iter().flat_map(|p| p.ke.iter().copied());
                let mut last = None;
                let mut found = None;
                for g in groups.filter(|g| g.public_len() == ke.len()) {
                    match proposal::select_phase2(&child.esp_proposals, &sa.proposals, Some(g)) {
                        Ok(c) => {
                            found = Some(c);
                            break;
                        }
                        Err(m) => last = Some(m),
                    }
                }
                match (found, last) {
                    (Some(c), _) => Ok(c),
                    (None, Some(m)) => Err(m),
                    (None, None) => {
                        return Err(Ikev1Error::NoProposalChosen(format!(
                            "KE of {} bytes matches no PFS group of child {}",
                            ke.len(),
                            child.name
                        )));
                    }
                }
            }
        }
        .map_err(|m| Ikev1Error::NoProposalChosen(m.to_string()))?;
        let (our_ke, pfs_shared) = match (choice.suite.pfs, peer_ke) {
            (Some(g), Some(peer)) => {
                let ke = KeyExchange::generate(&*self.ctx.crypto, g)?;
                let public = ke.public_value().to_vec();
                (Some(public), Some(ke.finish(peer)?))
            }
            _ => (None, None),
        };
        let spi_in = self.ctx.child_spis.allocate(&*self.ctx.crypto)?;
        let nonce_r = random_bytes(&self.ctx, NONCE_LEN)?;
        let spi_bytes = spi_in.to_be_bytes();
        let offered = &sa.proposals[choice.proposal];
        let mut tail = vec![
            Payload::Sa(isakmp::SecurityAssociation {
                situation: SIT_IDENTITY_ONLY,
                proposals: vec![isakmp::Proposal {
                    number: offered.number,
                    protocol: ProtocolId::ESP,
                    spi: &spi_bytes,
                    transforms: vec![offered.transforms[choice.transform].clone()],
                }],
            }),
            Payload::Nonce(&nonce_r),
        ];
        if let Some(k) = &our_ke {
            tail.push(Payload::Ke(k));
        }
        for id in &ids {
            tail.push(Payload::Id(**id));
        }
        let out = match self.seal_with_hash(message_id, &[&message_id.to_be_bytes(), nonce_i], &tail) {
            Ok(out) => out,
            Err(e) => {
                self.ctx.child_spis.release(spi_in);
                return Err(e);
            }
        };
        let mut flight = Flight::default();
        flight.received(datagram);
        flight.sent(&out, now, &self.conn, true);
        self.push_transmit(out);
        // As strongSwan does, a Quick Mode for the selectors of an ESP SA
        // pair we hold is the peer rekeying it.
        let rekey_of = self
            .quick
            .iter()
            .find(|q| {
                q.state == QuickModeState::Done
                    && !q.replaced
                    && q.template == template
                    && q.local_ts == local_ts
                    && q.remote_ts == remote_ts
            })
            .map(|q| q.spi_in);
        let rekeying = rekey_of
            .map(|s| format!(" (rekeying ESP SA {s:08x})"))
            .unwrap_or_default();
        info!(
            connection = %self.conn.name,
            "IKEv1 Quick Mode {message_id:08x} for child {}{rekeying}: QM_IDLE -> QM_RESP_SENT",
            child.name
        );
        self.quick.push(QuickMode {
            message_id,
            role: Role::Responder,
            state: QuickModeState::RespSent,
            template,
            spi_in,
            spi_out: choice.peer_spi,
            nonce_i: nonce_i.to_vec(),
            nonce_r,
            ke: None,
            pfs: choice.suite.pfs,
            pfs_shared,
            suite: Some(choice.suite),
            local_ts,
            remote_ts,
            flight,
            installed_at: None,
            rekey_at: None,
            expire_at: None,
            rekey_of,
            replaced: false,
        });
        Ok(())
    }

    fn quick_initiator_got_reply(
        &mut self,
        now: Instant,
        i: usize,
        datagram: &[u8],
        payloads: &[Payload<'_>],
    ) -> Result<(), Ikev1Error> {
        let sa = find!(payloads, Sa).ok_or_else(|| invalid("Quick Mode message 2 without SA"))?;
        let nonce_r = find!(payloads, Nonce).ok_or_else(|| invalid("Quick Mode message 2 without nonce"))?;
        let template = self.quick[i].template;
        let pfs = self.quick[i].pfs;
        let esp = &self.conn.children[template].esp_proposals;
        let mut choice = proposal::accept_phase2(esp, &sa.proposals, pfs)
            .map_err(|m| Ikev1Error::NoProposalChosen(m.to_string()))?;
        // RFC 2407 §4.6.3.1: a responder that keeps the SA for less time
        // says so; the shorter lifetime is ours too.
        let our_spi = self.quick[i].spi_in.to_be_bytes();
        for n in payloads.iter().filter_map(|p| match p {
            Payload::Notify(n) if n.ty == NotifyType::RESPONDER_LIFETIME => Some(n),
            _ => None,
        }) {
            let about_ours = n.spi.is_empty() || n.spi == our_spi || n.spi == sa.proposals[choice.proposal].spi;
            match proposal::responder_lifetime_seconds(n.data).filter(|_| about_ours) {
                Some(s) => {
                    info!(connection = %self.conn.name, "IKEv1 Quick Mode {:08x}: peer's RESPONDER-LIFETIME is {s} s", self.quick[i].message_id);
                    choice.suite.lifetime = Some(choice.suite.lifetime.map_or(s, |l| l.min(s)));
                }
                None => {
                    debug!(connection = %self.conn.name, "IKEv1 RESPONDER-LIFETIME notify without a lifetime in seconds ignored")
                }
            }
        }
        let pfs_shared = match (pfs, find!(payloads, Ke)) {
            (Some(_), Some(peer)) => {
                let ke = self.quick[i]
                    .ke
                    .take()
                    .ok_or_else(|| invalid("no PFS key exchange in progress"))?;
                Some(ke.finish(peer)?)
            }
            (None, None) => None,
            (Some(_), None) => return Err(Ikev1Error::NoProposalChosen("responder answered PFS without KE".into())),
            (None, Some(_)) => return Err(invalid("KE payload without PFS")),
        };
        let message_id = self.quick[i].message_id;
        let nonce_i = self.quick[i].nonce_i.clone();
        let out = self.seal_with_hash(message_id, &[&[0], &message_id.to_be_bytes(), &nonce_i, nonce_r], &[])?;
        let q = &mut self.quick[i];
        q.state = QuickModeState::RespRcvd;
        q.nonce_r = nonce_r.to_vec();
        q.spi_out = choice.peer_spi;
        q.suite = Some(choice.suite);
        q.pfs_shared = pfs_shared;
        q.flight.received(datagram);
        q.flight.sent(&out, now, &self.conn, false);
        self.push_transmit(out);
        self.quick_install(now, i);
        Ok(())
    }

    /// Derives KEYMAT for both directions and emits ChildSaInstalled.
    fn quick_install(&mut self, now: Instant, i: usize) {
        let udp_encap = self.behind_nat();
        let Some(keys) = &self.keys else { return };
        let q = &mut self.quick[i];
        let Some(suite) = q.suite else { return };
        let encr_len = suite.encr.keymat_len();
        let len = encr_len + suite.integ.map_or(0, |a| a.key_len());
        let shared = q.pfs_shared.as_ref().map(|s| s.as_slice());
        let direction = |spi: u32| {
            let km = keys.keymat(shared, ProtocolId::ESP.0, spi, &q.nonce_i, &q.nonce_r, len);
            DirectionKeys {
                encr: Zeroizing::new(km[..encr_len].to_vec()),
                integ: Zeroizing::new(km[encr_len..].to_vec()),
            }
        };
        let inbound = direction(q.spi_in);
        let outbound = direction(q.spi_out);
        q.state = QuickModeState::Done;
        q.installed_at = Some(now);
        let configured = self.conn.children.get(q.template).map(|c| c.lifetime);
        if let Some(configured) = configured {
            let lifetime = proposal::effective_lifetime(&configured, suite.lifetime);
            (q.rekey_at, q.expire_at) = crate::ike_sa::schedule(now, &lifetime, u64::from(q.spi_in));
        }
        q.pfs_shared = None;
        q.flight.deadline = None;
        let message_id = q.message_id;
        let name = self
            .conn
            .children
            .get(q.template)
            .map_or_else(String::new, |c| c.name.clone());
        info!(
            connection = %self.conn.name,
            "IKEv1 Quick Mode {message_id:08x}: QM_DONE, ESP SAs {:08x}/{:08x} for child {name} ({}{}{})",
            q.spi_in,
            q.spi_out,
            suite.encr.name(),
            suite.integ.map(|i| format!("-{}", i.name())).unwrap_or_default(),
            suite.pfs.map(|g| format!("-{}", g.name())).unwrap_or_default()
        );
        let install = ChildSaInstall {
            ike_spis: (self.cookie_i, self.cookie_r),
            connection: self.conn.name.clone(),
            name,
            spi_in: q.spi_in,
            spi_out: q.spi_out,
            encr: suite.encr,
            integ: suite.integ,
            pfs: suite.pfs,
            additional_ke: Vec::new(),
            esn: false,
            mode: suite.mode,
            local_ts: vec![q.local_ts.clone()],
            remote_ts: vec![q.remote_ts.clone()],
            local: self.local,
            remote: self.remote,
            udp_encap,
            inbound,
            outbound,
            rekey_of: q.rekey_of,
            local_vips: Vec::new(),
        };
        let (rekey_of, role) = (q.rekey_of, q.role);
        if let Some(ivs) = &mut self.ivs {
            ivs.forget(message_id);
        }
        self.events.push_back(Event::ChildSaInstalled(Box::new(install)));
        if let Some(old) = rekey_of {
            self.retire_rekeyed(old, role);
            self.resolve_rekey_collision(old);
        }
    }

    /// Both sides rekeyed the same ESP SA pair at once: of the two new
    /// pairs, the one whose Quick Mode had the lower initiator nonce is
    /// redundant (both sides know both nonces, so they agree). Its
    /// initiator deletes it; the other side stops rekeying it.
    fn resolve_rekey_collision(&mut self, old: u32) {
        let twins: Vec<usize> = (0..self.quick.len())
            .filter(|&i| {
                let q = &self.quick[i];
                q.rekey_of == Some(old) && q.state == QuickModeState::Done && !q.replaced
            })
            .collect();
        if twins.len() < 2 {
            return;
        }
        let Some(&loser) = twins
            .iter()
            .min_by(|&&x, &&y| self.quick[x].nonce_i.cmp(&self.quick[y].nonce_i))
        else {
            return;
        };
        if self.quick[loser].role == Role::Initiator {
            let q = self.quick.remove(loser);
            info!(connection = %self.conn.name, "IKEv1 ESP SA {:08x}/{:08x} is redundant after a rekey collision: deleted", q.spi_in, q.spi_out);
            self.delete_esp(&q);
        } else {
            let q = &mut self.quick[loser];
            q.replaced = true;
            q.rekey_at = None;
        }
    }

    /// The ESP SA pair with inbound SPI `old` was replaced by a rekey. The
    /// side that started the rekey deletes it (telling the peer, who by now
    /// sends on the new pair); the other side keeps it until that DELETE or
    /// its hard lifetime, and no longer rekeys it.
    fn retire_rekeyed(&mut self, old: u32, rekey_role: Role) {
        let Some(i) = self
            .quick
            .iter()
            .position(|q| q.spi_in == old && q.state == QuickModeState::Done)
        else {
            return;
        };
        if rekey_role == Role::Responder {
            let q = &mut self.quick[i];
            q.replaced = true;
            q.rekey_at = None;
            return;
        }
        let q = self.quick.remove(i);
        info!(connection = %self.conn.name, "IKEv1 ESP SA {:08x}/{:08x} retired after its rekey", q.spi_in, q.spi_out);
        self.delete_esp(&q);
    }

    /// Tells the peer that an ESP SA pair is gone and emits its deletion.
    fn delete_esp(&mut self, q: &QuickMode) {
        let spi = q.spi_in.to_be_bytes();
        let d = isakmp::Delete {
            doi: isakmp::DOI_IPSEC,
            protocol: ProtocolId::ESP,
            spis: vec![&spi],
        };
        if let Err(e) = self.send_informational(&[Payload::Delete(d)]) {
            warn!(connection = %self.conn.name, "IKEv1 DELETE of ESP SA {:08x} not sent: {e}", q.spi_in);
        }
        self.events.push_back(Event::ChildSaDeleted {
            spi_in: q.spi_in,
            spi_out: q.spi_out,
        });
    }

    /// Rekeys and deletes the ESP SA pairs whose lifetimes are up.
    fn quick_mode_lifetimes(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.quick.len() {
            let q = &self.quick[i];
            if q.state != QuickModeState::Done {
                i += 1;
                continue;
            }
            if q.expire_at.is_some_and(|t| t <= now) {
                let q = self.quick.remove(i);
                info!(connection = %self.conn.name, "IKEv1 ESP SA {:08x}/{:08x} reached its hard lifetime: deleted", q.spi_in, q.spi_out);
                self.delete_esp(&q);
                continue;
            }
            if q.rekey_at.is_some_and(|t| t <= now) && !q.replaced {
                let (template, spi_in) = (q.template, q.spi_in);
                let selectors = (q.local_ts.clone(), q.remote_ts.clone());
                self.quick[i].rekey_at = None;
                if let Err(e) = self.start_quick_mode_for(now, template, Some((spi_in, selectors.0, selectors.1))) {
                    let wait = crate::ike_sa::rekey_retry_wait(&spi_in.to_be_bytes());
                    warn!(connection = %self.conn.name, "IKEv1 rekey of ESP SA {spi_in:08x} not started ({e}): retrying in {wait:?}");
                    self.quick[i].rekey_at = Some(now + wait);
                }
            }
            i += 1;
        }
    }

    pub(super) fn quick_mode_timeouts(&mut self, now: Instant) {
        self.quick_mode_lifetimes(now);
        let mut i = 0;
        while i < self.quick.len() {
            match self.quick[i].flight.expire(now, &self.conn) {
                Some(true) => {
                    let again = self.quick[i].flight.last_out.clone();
                    self.push_transmit(again);
                }
                Some(false) => {
                    let q = self.quick.remove(i);
                    self.quick_failed(now, &q, format!("peer did not answer in {}", q.state));
                    continue;
                }
                None => {}
            }
            i += 1;
        }
    }
}

fn client_id<'a>(d: &'a (isakmp::IdType, u8, u16, Vec<u8>)) -> Payload<'a> {
    Payload::Id(Identification {
        id_type: d.0,
        protocol: d.1,
        port: d.2,
        data: &d.3,
    })
}

fn host(a: std::net::IpAddr) -> TrafficSelector {
    crate::ts::subnet(a, if a.is_ipv4() { 32 } else { 128 })
}

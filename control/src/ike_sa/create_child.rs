//! CHILD_SA negotiation (in IKE_AUTH and CREATE_CHILD_SA), CHILD_SA rekey
//! with optional PFS, IKE SA rekey, and the rekey-collision rules of §2.8.1.

use std::borrow::Cow;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::child::{ChildSa, ChildSaInstall, ChildState, DirectionKeys};
use super::followup_ke::Followup;
use super::handshake::random_nonce;
use super::{Event, IkeSa, RequestKind, Role, State, Task, find_notify, notify, rekey_retry_at, schedule};
use crate::config::IpsecMode;
use crate::crypto::keys::{ChildSaKeys, derive_child_sa_keys_multi, derive_rekeyed_ike_sa_keys_multi};
use crate::crypto::{CryptoError, IkeSuite, KeGroup, KeyExchange};
use crate::proposal::{self, EspProposal};
use crate::ts;
use crate::wire::ikev2::{ExchangeType, Notify, NotifyType, Payload, ProtocolId, TrafficSelector};

/// A CHILD_SA request of ours, kept until the response arrives.
pub(crate) struct ChildRequest {
    /// Template index in the connection.
    pub template: usize,
    /// Our new inbound SPI.
    pub spi_in: u32,
    /// The payloads proposing it (SA, TSi, TSr, notifies).
    pub payloads: Vec<Payload>,
    /// Inbound SPI of the child this replaces, if a rekey.
    pub rekey_of: Option<u32>,
    /// Our PFS key exchange, if any.
    pub ke: Option<KeyExchange>,
    /// Our nonce (CREATE_CHILD_SA only).
    pub ni: Vec<u8>,
    /// Selectors proposed.
    pub tsi: Vec<TrafficSelector>,
    /// Selectors proposed.
    pub tsr: Vec<TrafficSelector>,
}

/// An outstanding CREATE_CHILD_SA request.
pub(crate) enum Pending {
    /// New or rekeyed CHILD_SA.
    Child(ChildRequest),
    /// IKE SA rekey: our new SPI, KE and nonce.
    Ike { new_spi: u64, ke: KeyExchange, ni: Vec<u8> },
}

fn esp_without_ke(p: &[EspProposal]) -> Cow<'_, [EspProposal]> {
    if p.iter().all(|e| e.ke.is_empty()) {
        return Cow::Borrowed(p);
    }
    Cow::Owned(p.iter().map(EspProposal::without_pfs).collect())
}

/// A negotiated CHILD_SA, installed once its key exchanges are done.
pub(crate) struct ChildPlan {
    /// Template index in the connection.
    pub template: usize,
    /// Our inbound SPI.
    pub spi_in: u32,
    /// The suite; its `peer_spi` is our outbound SPI.
    pub sel: proposal::SelectedEsp,
    pub mode: IpsecMode,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// True if we initiated the exchange that made it.
    pub we_initiated: bool,
    /// Inbound SPI of the child it replaces, if a rekey.
    pub rekey_of: Option<u32>,
}

/// Builds the payloads proposing a child from template `template` (IKE_AUTH
/// when `ni_ke` is None: no nonce, no KE, no PFS).
pub(crate) fn build_child_request(
    sa: &IkeSa,
    template: usize,
    rekey_of: Option<&ChildSa>,
    create_child: Option<(Vec<u8>, Option<KeyExchange>)>,
) -> Result<ChildRequest, CryptoError> {
    let t = &sa.config.children[template];
    let spi_in = sa.ctx.child_spis.allocate(&*sa.ctx.crypto)?;
    let in_auth = create_child.is_none();
    let ours = if in_auth {
        esp_without_ke(&t.esp_proposals)
    } else {
        Cow::Borrowed(&t.esp_proposals[..])
    };
    let proposals = ours
        .iter()
        .enumerate()
        .map(|(i, p)| p.to_wire((i + 1) as u8, spi_in))
        .collect();
    let (tsi, tsr) = match rekey_of {
        Some(c) => (c.local_ts.to_vec(), c.remote_ts.to_vec()),
        None => (
            super::config_payload::local_ts(sa, &t.local_ts).into_owned(),
            super::config_payload::remote_ts(sa, &t.remote_ts).into_owned(),
        ),
    };
    let mut payloads = Vec::new();
    if let Some(old) = rekey_of {
        payloads.push(Payload::Notify(Notify {
            protocol: ProtocolId::ESP,
            spi: old.spi_in.to_be_bytes().to_vec(),
            ty: NotifyType::REKEY_SA,
            data: Vec::new(),
        }));
    }
    if t.mode == IpsecMode::Transport {
        payloads.push(notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()));
    }
    payloads.push(Payload::Sa(proposals));
    let (ni, ke) = match create_child {
        Some((ni, ke)) => {
            payloads.push(Payload::Nonce(ni.clone()));
            if let Some(k) = &ke {
                payloads.push(Payload::Ke {
                    group: k.group().number(),
                    data: k.public_value().to_vec(),
                });
            }
            (ni, ke)
        }
        None => (Vec::new(), None),
    };
    payloads.push(Payload::TsI(tsi.clone()));
    payloads.push(Payload::TsR(tsr.clone()));
    Ok(ChildRequest {
        template,
        spi_in,
        payloads,
        rekey_of: rekey_of.map(|c| c.spi_in),
        ke,
        ni,
        tsi,
        tsr,
    })
}

/// Creates the child record and emits ChildSaInstalled; `shared` holds the
/// secrets of its key exchanges in order (none without PFS).
pub(crate) fn install_child(sa: &mut IkeSa, now: Instant, plan: ChildPlan, ni: &[u8], nr: &[u8], shared: &[&[u8]]) {
    let ChildPlan {
        template,
        spi_in,
        sel,
        mode,
        local_ts,
        remote_ts,
        we_initiated,
        rekey_of,
    } = plan;
    let spi_out = sel.peer_spi;
    let Some(keys) = sa.keys.as_ref() else { return };
    // Moved, not copied: every key lives in one zeroizing buffer.
    let ChildSaKeys {
        encr_i,
        integ_i,
        encr_r,
        integ_r,
    } = derive_child_sa_keys_multi(keys.suite.prf, &keys.sk_d, shared, ni, nr, sel.encr, sel.integ);
    let (out_e, out_a, in_e, in_a) = if we_initiated {
        (encr_i, integ_i, encr_r, integ_r)
    } else {
        (encr_r, integ_r, encr_i, integ_i)
    };
    let t = &sa.config.children[template];
    let (rekey_at, expire_at) = schedule(now, &t.lifetime, u64::from(spi_in));
    let name = t.name.clone();
    let child = ChildSa {
        template,
        spi_in,
        spi_out,
        encr: sel.encr,
        integ: sel.integ,
        pfs: sel.ke,
        additional_ke: proposal::additional_ke_slots(&sel.additional_ke),
        esn: sel.esn,
        mode,
        local_ts: local_ts.as_slice().into(),
        remote_ts: remote_ts.as_slice().into(),
        state: ChildState::Installed,
        installed_at: now,
        rekey_at,
        expire_at,
    };
    let udp_encap = sa.udp_encapsulation();
    let (mut local, mut remote) = (sa.local, sa.remote);
    if !udp_encap {
        local.set_port(0);
        remote.set_port(0);
    }
    info!(
        connection = %sa.config.name,
        child = %name,
        spi_in = format_args!("{spi_in:08x}"),
        spi_out = format_args!("{spi_out:08x}"),
        encr = %sel.encr.name(),
        key_exchanges = %child_key_exchanges(&sel),
        local_ts = %local_ts.iter().map(ts::display).collect::<Vec<_>>().join(","),
        remote_ts = %remote_ts.iter().map(ts::display).collect::<Vec<_>>().join(","),
        "CHILD_SA installed"
    );
    let local_vips = super::config_payload::vips_within(sa, &local_ts);
    sa.push_event(Event::ChildSaInstalled(Box::new(ChildSaInstall {
        ike_spis: (sa.spi_i, sa.spi_r),
        connection: sa.config.name.clone(),
        name,
        spi_in,
        spi_out,
        encr: sel.encr,
        integ: sel.integ,
        pfs: sel.ke,
        additional_ke: sel.additional_ke.clone(),
        esn: sel.esn,
        mode,
        local_ts,
        remote_ts,
        local,
        remote,
        udp_encap,
        inbound: DirectionKeys {
            encr: in_e,
            integ: in_a,
        },
        outbound: DirectionKeys {
            encr: out_e,
            integ: out_a,
        },
        rekey_of,
        local_vips,
    })));
    // Most IKE SAs hold one child: no spare capacity.
    sa.children.reserve_exact(1);
    sa.children.push(child);
}

/// The key exchanges that keyed a child, for log lines: `x25519,ke1_mlkem768`
/// (`none` without PFS).
fn child_key_exchanges(sel: &proposal::SelectedEsp) -> String {
    if sel.ke.is_none() {
        return "none".into();
    }
    proposal::key_exchange_names(sel.ke, &sel.additional_ke).join(",")
}

/// Exchange initiator: processes the child part of an IKE_AUTH or CREATE_CHILD_SA response.
pub(crate) fn finish_child_initiator(
    sa: &mut IkeSa,
    now: Instant,
    inner: &[Payload],
    req: ChildRequest,
    ni: &[u8],
    nr: &[u8],
    shared: Option<&[u8]>,
) -> bool {
    match negotiated_child(sa, inner, req, shared.is_some()) {
        Some(plan) => {
            install_child(sa, now, plan, ni, nr, shared.as_slice());
            true
        }
        None => false,
    }
}

/// Exchange initiator: checks the child part of a response against our
/// request (`pfs`: the PFS key exchange completed); a failure is logged
/// and reported.
fn negotiated_child(sa: &mut IkeSa, inner: &[Payload], req: ChildRequest, pfs: bool) -> Option<ChildPlan> {
    let t = sa.config.children[req.template].clone();
    let fail = |sa: &mut IkeSa, why: String| {
        warn!(connection = %sa.config.name, child = %t.name, "CHILD_SA not established: {why}");
        sa.ctx.child_spis.release(req.spi_in);
        sa.push_event(Event::ChildSaFailed {
            name: t.name.clone(),
            reason: why,
        });
        None
    };
    let ours = if req.ni.is_empty() {
        esp_without_ke(&t.esp_proposals)
    } else {
        Cow::Borrowed(&t.esp_proposals[..])
    };
    if let Some(n) = super::error_notify(inner) {
        return fail(sa, peer_refused(n.ty, &ours));
    }
    let chosen = inner.iter().find_map(|p| match p {
        Payload::Sa(props) => Some(props),
        _ => None,
    });
    let tsi = inner.iter().find_map(|p| match p {
        Payload::TsI(t) => Some(t.clone()),
        _ => None,
    });
    let tsr = inner.iter().find_map(|p| match p {
        Payload::TsR(t) => Some(t.clone()),
        _ => None,
    });
    let (Some(chosen), Some(tsi), Some(tsr)) = (chosen, tsi, tsr) else {
        return fail(sa, "response lacks SA, TSi or TSr".into());
    };
    if chosen.len() != 1 {
        return fail(sa, format!("peer chose {} proposals", chosen.len()));
    }
    let sel = match proposal::accept_esp_response(&ours, &chosen[0]) {
        Ok(s) => s,
        Err(m) => return fail(sa, format!("peer chose a proposal we did not offer: {m}")),
    };
    if sel.ke.is_some() != pfs {
        return fail(sa, "PFS key exchange missing or unexpected".into());
    }
    if !ts::all_within(&tsi, &req.tsi) || !ts::all_within(&tsr, &req.tsr) {
        return fail(
            sa,
            "peer narrowed the traffic selectors outside what we proposed".into(),
        );
    }
    let transport = find_notify(inner, NotifyType::USE_TRANSPORT_MODE).is_some();
    let mode = if transport && t.mode == IpsecMode::Transport {
        IpsecMode::Transport
    } else {
        IpsecMode::Tunnel
    };
    if mode != t.mode {
        return fail(sa, "peer refused transport mode".into());
    }
    Some(ChildPlan {
        template: req.template,
        spi_in: req.spi_in,
        sel,
        mode,
        local_ts: tsi,
        remote_ts: tsr,
        we_initiated: true,
        rekey_of: req.rekey_of,
    })
}

/// What a responder's CREATE_CHILD_SA answer adds beyond the child's payloads.
#[derive(Default)]
pub(crate) struct CreateChildAnswer {
    /// Our KE payload (PFS).
    pub ke: Option<Payload>,
    /// The child, when additional key exchanges must run before it exists.
    pub followup: Option<Box<Followup>>,
}

/// Exchange responder: negotiates a child from the request payloads.
/// Returns the payloads to answer with (SA, [KEr], TSi, TSr, ...) or an error notify.
pub(crate) fn respond_child(
    sa: &mut IkeSa,
    now: Instant,
    inner: &[Payload],
    ni: &[u8],
    nr: &[u8],
    create_child: Option<&mut CreateChildAnswer>,
    rekey: Option<(usize, u32)>,
) -> Result<Vec<Payload>, Payload> {
    let offered = inner.iter().find_map(|p| match p {
        Payload::Sa(props) => Some(props),
        _ => None,
    });
    let tsi = inner.iter().find_map(|p| match p {
        Payload::TsI(t) => Some(t),
        _ => None,
    });
    let tsr = inner.iter().find_map(|p| match p {
        Payload::TsR(t) => Some(t),
        _ => None,
    });
    let (Some(offered), Some(tsi), Some(tsr)) = (offered, tsi, tsr) else {
        warn!(peer = %sa.remote, "child request lacks SA, TSi or TSr");
        return Err(notify(NotifyType::INVALID_SYNTAX, Vec::new()));
    };
    let in_auth = create_child.is_none();
    let transport = find_notify(inner, NotifyType::USE_TRANSPORT_MODE).is_some();
    let templates = match rekey {
        Some((t, _)) => t..t + 1,
        None => 0..sa.config.children.len(),
    };
    let mut ts_ok = None;
    let mut mismatch = None;
    for idx in templates {
        let t = &sa.config.children[idx];
        let n_tsi = ts::narrow(tsi, &super::config_payload::remote_ts(sa, &t.remote_ts));
        let n_tsr = ts::narrow(tsr, &super::config_payload::local_ts(sa, &t.local_ts));
        if n_tsi.is_empty() || n_tsr.is_empty() {
            continue;
        }
        ts_ok.get_or_insert(idx);
        let ours = if in_auth {
            esp_without_ke(&t.esp_proposals)
        } else {
            Cow::Borrowed(&t.esp_proposals[..])
        };
        match proposal::select_esp(&ours, offered) {
            Ok(sel) => {
                let mode = if transport && t.mode == IpsecMode::Transport {
                    IpsecMode::Transport
                } else {
                    IpsecMode::Tunnel
                };
                if mode != t.mode {
                    mismatch = Some(format!(
                        "child '{}' requires transport mode, peer asked for tunnel",
                        t.name
                    ));
                    continue;
                }
                return finish_child_responder(
                    sa,
                    now,
                    idx,
                    sel,
                    mode,
                    n_tsr,
                    n_tsi,
                    inner,
                    ni,
                    nr,
                    create_child,
                    rekey,
                );
            }
            Err(m) => {
                mismatch.get_or_insert(format!("child '{}': {m}", t.name));
            }
        }
    }
    match (ts_ok, mismatch) {
        (None, _) => {
            warn!(
                connection = %sa.config.name,
                peer_tsi = %tsi.iter().map(ts::display).collect::<Vec<_>>().join(","),
                peer_tsr = %tsr.iter().map(ts::display).collect::<Vec<_>>().join(","),
                "traffic selectors unacceptable for every child of the connection"
            );
            Err(notify(NotifyType::TS_UNACCEPTABLE, Vec::new()))
        }
        (Some(_), m) => {
            warn!(connection = %sa.config.name, "no ESP proposal chosen: {}", m.unwrap_or_default());
            Err(notify(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new()))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn finish_child_responder(
    sa: &mut IkeSa,
    now: Instant,
    template: usize,
    mut sel: proposal::SelectedEsp,
    mode: IpsecMode,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    inner: &[Payload],
    ni: &[u8],
    nr: &[u8],
    create_child: Option<&mut CreateChildAnswer>,
    rekey: Option<(usize, u32)>,
) -> Result<Vec<Payload>, Payload> {
    let mut shared = None;
    let mut ke_payload = None;
    if let Some(g) = sel.ke {
        let kei = inner.iter().find_map(|p| match p {
            Payload::Ke { group, data } => Some((*group, data)),
            _ => None,
        });
        match kei {
            Some((group, data)) if group == g.number() => match KeyExchange::respond(&*sa.ctx.crypto, g, data) {
                Ok((ker, s)) => {
                    shared = Some(s);
                    ke_payload = Some(Payload::Ke { group, data: ker });
                }
                Err(e @ CryptoError::InvalidPublicValue(_)) => {
                    warn!(peer = %sa.remote, "bad PFS public value: {e}");
                    return Err(notify(NotifyType::INVALID_SYNTAX, Vec::new()));
                }
                Err(e) => return Err(local_failure(sa, &e)),
            },
            _ => {
                return Err(notify(
                    NotifyType::INVALID_KE_PAYLOAD,
                    g.number().to_be_bytes().to_vec(),
                ));
            }
        }
    }
    let spi_in = match sa.ctx.child_spis.allocate(&*sa.ctx.crypto) {
        Ok(spi) => spi,
        Err(e) => return Err(local_failure(sa, &e)),
    };
    sel.proposal.spi = spi_in.to_be_bytes().to_vec();
    let mut out = vec![Payload::Sa(vec![sel.proposal.clone()])];
    out.push(Payload::TsI(remote_ts.clone()));
    out.push(Payload::TsR(local_ts.clone()));
    if mode == IpsecMode::Transport {
        out.push(notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()));
    }
    let plan = ChildPlan {
        template,
        spi_in,
        sel,
        mode,
        local_ts,
        remote_ts,
        we_initiated: false,
        rekey_of: rekey.map(|(_, old)| old),
    };
    let answer = match create_child {
        Some(slot) => {
            slot.ke = ke_payload;
            Some(slot)
        }
        None => None,
    };
    match (answer, shared) {
        (Some(slot), Some(shared)) if !plan.sel.additional_ke.is_empty() => {
            slot.followup = Some(Followup::child(plan, ni.to_vec(), nr.to_vec(), shared));
        }
        (_, shared) => install_child(sa, now, plan, ni, nr, shared.as_deref().map(Vec::as_slice).as_slice()),
    }
    Ok(out)
}

fn pfs_group(sa: &IkeSa, template: usize) -> Option<KeGroup> {
    sa.config.children[template]
        .esp_proposals
        .first()
        .and_then(|p| p.ke.first().copied())
}

/// Our CREATE_CHILD_SA request for a child from `template` (replacing child
/// `rekey_of`, an index into the children): nonce, SPI and PFS key exchange
/// all fresh.
fn child_request(sa: &IkeSa, template: usize, rekey_of: Option<usize>) -> Result<ChildRequest, CryptoError> {
    let random = &*sa.ctx.crypto;
    let ke = pfs_group(sa, template)
        .map(|g| KeyExchange::generate(random, g))
        .transpose()?;
    let ni = random_nonce(random)?;
    build_child_request(sa, template, rekey_of.map(|i| &sa.children[i]), Some((ni, ke)))
}

/// A CHILD_SA request we could not even build: nothing is sent.
fn child_start_failed(sa: &mut IkeSa, template: usize, e: &CryptoError) {
    let name = sa.config.children[template].name.clone();
    error!(connection = %sa.config.name, child = %name, "cannot start CREATE_CHILD_SA: {e}");
    sa.push_event(Event::ChildSaFailed {
        name,
        reason: e.to_string(),
    });
}

/// Our own failure (the random source) while answering a CREATE_CHILD_SA:
/// the peer may retry later (RFC 7296 §2.25 TEMPORARY_FAILURE).
fn local_failure(sa: &IkeSa, e: &CryptoError) -> Payload {
    error!(connection = %sa.config.name, peer = %sa.remote, "cannot answer CREATE_CHILD_SA: {e}");
    notify(NotifyType::TEMPORARY_FAILURE, Vec::new())
}

/// Starts a CREATE_CHILD_SA for a new child from template `idx`.
pub(crate) fn start_new_child(sa: &mut IkeSa, now: Instant, idx: usize) {
    if idx >= sa.config.children.len() {
        return;
    }
    let req = match child_request(sa, idx, None) {
        Ok(req) => req,
        Err(e) => return child_start_failed(sa, idx, &e),
    };
    let payloads = req.payloads.clone();
    sa.send_request(
        now,
        ExchangeType::CREATE_CHILD_SA,
        payloads,
        RequestKind::CreateChild(Pending::Child(req)),
    );
}

/// Starts rekeying the child whose inbound SPI is `spi_in`.
pub(crate) fn start_rekey_child(sa: &mut IkeSa, now: Instant, spi_in: u32) {
    let Some(pos) = sa
        .children
        .iter()
        .position(|c| c.spi_in == spi_in && c.state == ChildState::Installed)
    else {
        return;
    };
    let template = sa.children[pos].template;
    let req = match child_request(sa, template, Some(pos)) {
        Ok(req) => req,
        Err(e) => return child_start_failed(sa, template, &e),
    };
    sa.children[pos].state = ChildState::Rekeying;
    debug!(spi_in = format_args!("{spi_in:08x}"), "rekeying CHILD_SA");
    let payloads = req.payloads.clone();
    sa.send_request(
        now,
        ExchangeType::CREATE_CHILD_SA,
        payloads,
        RequestKind::CreateChild(Pending::Child(req)),
    );
}

/// Starts rekeying the IKE SA itself.
pub(crate) fn start_rekey_ike(sa: &mut IkeSa, now: Instant) {
    let Some(keys) = sa.keys.as_ref() else { return };
    let group = keys.suite.ke;
    let fresh = KeyExchange::generate(&*sa.ctx.crypto, group).and_then(|ke| {
        let new_spi = sa.ctx.new_ike_spi()?;
        Ok((ke, new_spi, random_nonce(&*sa.ctx.crypto)?))
    });
    let (ke, new_spi, ni) = match fresh {
        Ok(f) => f,
        Err(e) => {
            // Nothing is sent: the IKE SA lives on until its hard lifetime
            // unless a later rekey (or the peer's) succeeds.
            error!(connection = %sa.config.name, "cannot start the IKE SA rekey: {e}");
            return;
        }
    };
    // Offer our proposals, the current suite's group first so the peer need not ask for another.
    let proposals = sa
        .config
        .ike_proposals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut p = p.clone();
            if let Some(pos) = p.ke.iter().position(|g| *g == group) {
                p.ke.swap(0, pos);
            }
            p.to_wire((i + 1) as u8, &new_spi.to_be_bytes())
        })
        .collect();
    let payloads = vec![
        Payload::Sa(proposals),
        Payload::Nonce(ni.clone()),
        Payload::Ke {
            group: group.number(),
            data: ke.public_value().to_vec(),
        },
    ];
    debug!("rekeying IKE SA");
    sa.send_request(
        now,
        ExchangeType::CREATE_CHILD_SA,
        payloads,
        RequestKind::CreateChild(Pending::Ike { new_spi, ke, ni }),
    );
}

/// Processes the response to our CREATE_CHILD_SA request.
pub(crate) fn handle_response(sa: &mut IkeSa, now: Instant, inner: Vec<Payload>, pending: Pending) {
    let nr = inner.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n.clone()),
        _ => None,
    });
    let ker = inner.iter().find_map(|p| match p {
        Payload::Ke { group, data } => Some((*group, data.clone())),
        _ => None,
    });
    match pending {
        Pending::Child(mut req) => {
            let rekey_of = req.rekey_of;
            let our_ni = req.ni.clone();
            let error = super::error_notify(&inner).map(|n| n.ty);
            let shared = match (req.ke.take(), ker) {
                (Some(k), Some((group, data))) if group == k.group().number() && error.is_none() => {
                    match k.finish(&data) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            warn!("bad PFS public value from peer: {e}");
                            None
                        }
                    }
                }
                _ => None,
            };
            let ok = match &nr {
                Some(nr) if error.is_none() => match negotiated_child(sa, &inner, req, shared.is_some()) {
                    Some(plan) => match shared {
                        Some(shared) if !plan.sel.additional_ke.is_empty() => {
                            let followup = Followup::child(plan, our_ni, nr.clone(), shared);
                            return start_child_followup(sa, now, followup, &inner);
                        }
                        shared => {
                            let shared = shared.as_deref().map(Vec::as_slice);
                            install_child(sa, now, plan, &our_ni, nr, shared.as_slice());
                            true
                        }
                    },
                    None => false,
                },
                _ => {
                    let name = sa.config.children[req.template].name.clone();
                    sa.ctx.child_spis.release(req.spi_in);
                    let ours = &sa.config.children[req.template].esp_proposals;
                    let why = error.map_or("response without nonce".to_string(), |e| peer_refused(e, ours));
                    warn!(connection = %sa.config.name, child = %name, "CREATE_CHILD_SA failed: {why}");
                    sa.push_event(Event::ChildSaFailed { name, reason: why });
                    false
                }
            };
            if let Some(old) = rekey_of {
                let collision = sa.scratch.as_mut().and_then(|b| {
                    let i = b.collisions.iter().position(|c| c.old_spi_in == old)?;
                    Some(b.collisions.remove(i))
                });
                if ok {
                    let our_new = sa.children.last().map(|c| c.spi_in);
                    if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old) {
                        c.state = ChildState::Rekeyed;
                    }
                    match (collision, our_new, nr) {
                        (Some(col), Some(our_new), Some(nr)) => {
                            // §2.8.1: the SA created with the lowest of the four
                            // nonces is redundant; its creator deletes it, the
                            // creator of the survivor deletes the old SA.
                            let ours_min = std::cmp::min(our_ni.clone(), nr);
                            let peers_min = std::cmp::min(col.nonces.0.clone(), col.nonces.1.clone());
                            if ours_min < peers_min {
                                info!(
                                    connection = %sa.config.name,
                                    old_spi_in = format_args!("{old:08x}"),
                                    ours = format_args!("{our_new:08x}"),
                                    peers = format_args!("{:08x}", col.peer_new_spi_in),
                                    "CHILD_SA rekey collision lost: deleting our redundant new CHILD_SA, the peer's replaces the old one"
                                );
                                sa.outbox().tasks.push_front(Task::DeleteChild(our_new));
                            } else {
                                info!(
                                    connection = %sa.config.name,
                                    old_spi_in = format_args!("{old:08x}"),
                                    ours = format_args!("{our_new:08x}"),
                                    peers = format_args!("{:08x}", col.peer_new_spi_in),
                                    "CHILD_SA rekey collision won: our new CHILD_SA replaces the old one, which we delete; the peer deletes its redundant one"
                                );
                                sa.outbox().tasks.push_front(Task::DeleteChild(old));
                                super::followup_ke::drop_peer_child_rekey(sa, old);
                            }
                        }
                        _ => sa.outbox().tasks.push_front(Task::DeleteChild(old)),
                    }
                } else if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old) {
                    if c.state == ChildState::Rekeying {
                        // The peer rekeyed it (collision) or refused: retry later if still ours.
                        c.state = if collision.is_some() {
                            ChildState::Rekeyed
                        } else {
                            ChildState::Installed
                        };
                        if collision.is_none() {
                            c.rekey_at = Some(rekey_retry_at(now, &our_ni, c.expire_at));
                        }
                    }
                }
            }
        }
        Pending::Ike { new_spi, ke, ni } => {
            let chosen = inner.iter().find_map(|p| match p {
                Payload::Sa(props) => props.first().cloned(),
                _ => None,
            });
            let result = (|| {
                if let Some(n) = super::error_notify(&inner) {
                    return Err(peer_refused(n.ty, &sa.config.ike_proposals));
                }
                let chosen = chosen.ok_or("no SA")?;
                let nr = nr.ok_or("no nonce")?;
                let (group, data) = ker.ok_or("no KE")?;
                let sel =
                    proposal::accept_ike_response(&sa.config.ike_proposals, &chosen).map_err(|m| m.to_string())?;
                if group != ke.group().number() || sel.suite.ke != ke.group() {
                    return Err("KE group differs from the one proposed".to_string());
                }
                let peer_spi = <[u8; 8]>::try_from(chosen.spi.as_slice()).map_err(|_| "peer SPI is not 8 bytes")?;
                let shared = ke.finish(&data).map_err(|e| e.to_string())?;
                Ok((sel, u64::from_be_bytes(peer_spi), nr, shared))
            })();
            match result {
                Ok((sel, peer_spi, nr, shared)) => {
                    let rekey = Followup::ike(new_spi, peer_spi, sel, ni, nr, shared);
                    if !rekey.remaining.is_empty() {
                        return super::followup_ke::start(sa, now, rekey, &inner);
                    }
                    super::followup_ke::complete(sa, now, Role::Initiator, *rekey);
                }
                Err(why) => sa.ike_rekey_failed(now, &ni, &why),
            }
        }
    }
}

/// Initiator: our CHILD_SA exchange chose additional key exchanges. A rekey
/// that crossed the peer's is settled now, on the CREATE_CHILD_SA nonces
/// (RFC 9370 §2.2.4, RFC 7296 §2.8.1): the loser abandons its unfinished
/// rekey, the winner runs its IKE_FOLLOWUP_KE exchanges.
fn start_child_followup(sa: &mut IkeSa, now: Instant, followup: Box<Followup>, inner: &[Payload]) {
    let Some(old) = followup.rekeys_child() else {
        return super::followup_ke::start(sa, now, followup, inner);
    };
    let collision = sa.scratch.as_mut().and_then(|b| {
        let i = b.collisions.iter().position(|c| c.old_spi_in == old)?;
        Some(b.collisions.remove(i))
    });
    if let Some(col) = collision {
        let ours_min = std::cmp::min(&followup.ni, &followup.nr);
        let peers_min = std::cmp::min(&col.nonces.0, &col.nonces.1);
        if ours_min < peers_min {
            info!(
                connection = %sa.config.name,
                old_spi_in = format_args!("{old:08x}"),
                peers = format_args!("{:08x}", col.peer_new_spi_in),
                "CHILD_SA rekey collision lost: abandoning our unfinished multi-KE rekey, the peer's new CHILD_SA replaces the old one"
            );
            if let super::followup_ke::Target::Child(plan) = &followup.target {
                sa.ctx.child_spis.release(plan.spi_in);
            }
            if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old) {
                c.state = ChildState::Rekeyed;
            }
            return;
        }
        info!(
            connection = %sa.config.name,
            old_spi_in = format_args!("{old:08x}"),
            peers = format_args!("{:08x}", col.peer_new_spi_in),
            "CHILD_SA rekey collision won: continuing with the additional key exchanges; the peer abandons or deletes its new CHILD_SA"
        );
        super::followup_ke::drop_peer_child_rekey(sa, old);
    }
    super::followup_ke::start(sa, now, followup, inner);
}

/// The IKE SA a rekey makes, once all its key exchanges are done.
pub(crate) struct Successor<'a> {
    pub spi_i: u64,
    pub spi_r: u64,
    pub suite: IkeSuite,
    pub ni: &'a [u8],
    pub nr: &'a [u8],
    /// SK(0), SK(1), ... in exchange order.
    pub secrets: &'a [&'a [u8]],
    /// The additional key exchanges run (ADDKE number, method).
    pub done: &'a [(u8, KeGroup)],
}

/// Builds the IKE SA that replaces `sa` after a rekey whose key exchanges
/// are all done and moves the children to it.
pub(crate) fn make_successor(sa: &mut IkeSa, now: Instant, role: Role, rekey: &Successor<'_>) {
    let Successor {
        spi_i,
        spi_r,
        suite,
        ni,
        nr,
        secrets,
        done,
    } = *rekey;
    super::followup_ke::warn_if_downgraded(sa, done);
    let Some(old) = sa.keys.as_ref() else { return };
    let keys = derive_rekeyed_ike_sa_keys_multi(&suite, old.suite.prf, &old.sk_d, secrets, ni, nr, spi_i, spi_r);
    let mut new = IkeSa::blank(
        role,
        now,
        sa.config.clone(),
        sa.ctx.clone(),
        sa.local,
        sa.remote,
        spi_i,
        spi_r,
        // The leases go with the SA that carries on, so only its end releases them.
        State::Established(match &mut sa.state {
            State::Established(v) => v.take(),
            _ => None,
        }),
    );
    new.nat = sa.nat;
    new.peer_fragmentation = sa.peer_fragmentation;
    new.peer_id = sa.peer_id.clone();
    if let Err(e) = super::handshake::install_keys(&mut new, suite, keys) {
        warn!("cannot install rekeyed IKE SA keys: {e}");
        return;
    }
    if let Some(k) = new.keys.as_mut() {
        k.additional_ke = proposal::additional_ke_slots(done);
    }
    let (rekey, expire) = schedule(now, &sa.config.ike_lifetime, new.local_spi());
    new.rekey_at = rekey;
    new.expire_at = expire;
    new.children = std::mem::take(&mut sa.children);
    let new_local_spi = new.local_spi();
    info!(
        connection = %sa.config.name,
        old_spi_i = format_args!("{:016x}", sa.spi_i),
        new_spi_i = format_args!("{spi_i:016x}"),
        new_spi_r = format_args!("{spi_r:016x}"),
        "IKE SA rekeyed"
    );
    sa.push_event(Event::IkeSaRekeyed {
        old: (sa.spi_i, sa.spi_r),
        new: (spi_i, spi_r),
        new_local_spi,
    });
    sa.rekey_at = None;
    sa.expire_at = None;
    sa.replaced = true;
    sa.scratch().successor = Some(Box::new(new));
}

/// Processes a CREATE_CHILD_SA request from the peer.
pub(crate) fn handle_request(sa: &mut IkeSa, now: Instant, mid: u32, inner: Vec<Payload>) {
    let ni = inner.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n.clone()),
        _ => None,
    });
    let Some(ni) = ni.filter(|n| (16..=256).contains(&n.len())) else {
        sa.send_response(
            ExchangeType::CREATE_CHILD_SA,
            mid,
            vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())],
        );
        return;
    };
    let ike_rekey = inner
        .iter()
        .any(|p| matches!(p, Payload::Sa(props) if props.first().is_some_and(|p| p.protocol == ProtocolId::IKE)));
    if ike_rekey {
        respond_rekey_ike(sa, now, mid, &inner, &ni);
        return;
    }
    if sa.has_successor() {
        sa.send_response(
            ExchangeType::CREATE_CHILD_SA,
            mid,
            vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())],
        );
        return;
    }
    let mut rekey = None;
    if let Some(n) = find_notify(&inner, NotifyType::REKEY_SA) {
        let spi = <[u8; 4]>::try_from(n.spi.as_slice()).map(u32::from_be_bytes).ok();
        match spi.and_then(|s| sa.children.iter().position(|c| c.spi_out == s)) {
            Some(pos) => {
                let c = &sa.children[pos];
                let our_followup_running = sa.outstanding().is_some_and(
                    |o| matches!(&o.kind, RequestKind::FollowupKe(p) if p.rekeys_child() == Some(c.spi_in)),
                );
                if our_followup_running {
                    // RFC 9370 §2.2.4: once our IKE_FOLLOWUP_KE is out, the
                    // collision is no longer settled on the nonces.
                    debug!(
                        spi_in = format_args!("{:08x}", c.spi_in),
                        "peer rekeys a CHILD_SA whose multi-KE rekey we are running: TEMPORARY_FAILURE"
                    );
                    sa.send_response(
                        ExchangeType::CREATE_CHILD_SA,
                        mid,
                        vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())],
                    );
                    return;
                }
                if c.state == ChildState::Deleting {
                    sa.send_response(
                        ExchangeType::CREATE_CHILD_SA,
                        mid,
                        vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())],
                    );
                    return;
                }
                rekey = Some((c.template, c.spi_in));
            }
            None => {
                let mut n = notify(NotifyType::CHILD_SA_NOT_FOUND, Vec::new());
                if let (Payload::Notify(nn), Some(s)) = (&mut n, spi) {
                    nn.protocol = ProtocolId::ESP;
                    nn.spi = s.to_be_bytes().to_vec();
                }
                sa.send_response(ExchangeType::CREATE_CHILD_SA, mid, vec![n]);
                return;
            }
        }
    }
    let nr = match random_nonce(&*sa.ctx.crypto) {
        Ok(n) => n,
        Err(e) => {
            let answer = local_failure(sa, &e);
            sa.send_response(ExchangeType::CREATE_CHILD_SA, mid, vec![answer]);
            return;
        }
    };
    let mut answer = CreateChildAnswer::default();
    match respond_child(sa, now, &inner, &ni, &nr, Some(&mut answer), rekey) {
        Ok(child_payloads) => {
            let mut out = Vec::with_capacity(child_payloads.len() + 2);
            let mut child_payloads = child_payloads.into_iter();
            if let Some(first) = child_payloads.next() {
                out.push(first);
            }
            out.push(Payload::Nonce(nr.clone()));
            if let Some(ke) = answer.ke {
                out.push(ke);
            }
            out.extend(child_payloads);
            if let Some((_, old)) = rekey {
                let new_spi = match &answer.followup {
                    Some(f) => match &f.target {
                        super::followup_ke::Target::Child(plan) => Some(plan.spi_in),
                        super::followup_ke::Target::Ike { .. } => None,
                    },
                    None => sa.children.last().map(|c| c.spi_in),
                };
                if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old) {
                    if c.state == ChildState::Rekeying {
                        // Simultaneous rekey (§2.8.1): resolved when our response arrives.
                        if let Some(new_spi) = new_spi {
                            sa.scratch().collisions.push(Collision {
                                old_spi_in: old,
                                peer_new_spi_in: new_spi,
                                nonces: (ni.clone(), nr.clone()),
                            });
                        }
                    } else if answer.followup.is_none() {
                        c.state = ChildState::Rekeyed;
                    }
                }
            }
            match answer.followup {
                Some(followup) => super::followup_ke::respond_rekey(sa, now, mid, followup, out),
                None => sa.send_response(ExchangeType::CREATE_CHILD_SA, mid, out),
            }
        }
        Err(n) => sa.send_response(ExchangeType::CREATE_CHILD_SA, mid, vec![n]),
    }
}

/// A CHILD_SA rekey of the peer that crossed ours.
#[derive(Debug, Clone)]
pub(crate) struct Collision {
    /// Our inbound SPI of the child both sides rekeyed.
    pub old_spi_in: u32,
    /// Our inbound SPI of the child the peer's exchange created.
    pub peer_new_spi_in: u32,
    /// (Ni, Nr) of the peer's exchange.
    pub nonces: (Vec<u8>, Vec<u8>),
}

fn respond_rekey_ike(sa: &mut IkeSa, now: Instant, mid: u32, inner: &[Payload], ni: &[u8]) {
    let offered = inner.iter().find_map(|p| match p {
        Payload::Sa(props) => Some(props),
        _ => None,
    });
    let kei = inner.iter().find_map(|p| match p {
        Payload::Ke { group, data } => Some((*group, data)),
        _ => None,
    });
    let busy = sa.outstanding().is_some_and(|o| {
        matches!(
            o.kind,
            RequestKind::CreateChild(Pending::Ike { .. }) | RequestKind::FollowupKe(_)
        )
    }) || sa.has_successor()
        || sa.children.iter().any(|c| c.state == ChildState::Rekeying);
    // RFC 7296 §2.25.2: while we delete the IKE SA, a new one would outlive
    // our DELETE, and the peer, which answers that DELETE by closing this
    // SA, would never learn of it.
    let refused = if sa.is_deleting() {
        Some("deleting the IKE SA")
    } else {
        busy.then_some("rekeying")
    };
    if let Some(why) = refused {
        debug!("IKE rekey request while we are {why}: TEMPORARY_FAILURE");
        sa.send_response(
            ExchangeType::CREATE_CHILD_SA,
            mid,
            vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())],
        );
        return;
    }
    let (Some(offered), Some((group, kei))) = (offered, kei) else {
        sa.send_response(
            ExchangeType::CREATE_CHILD_SA,
            mid,
            vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())],
        );
        return;
    };
    let sel = match proposal::select_ike(&sa.config.ike_proposals, offered) {
        Ok(s) => s,
        Err(m) => {
            warn!(connection = %sa.config.name, "IKE rekey: no proposal chosen: {m}");
            sa.send_response(
                ExchangeType::CREATE_CHILD_SA,
                mid,
                vec![notify(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new())],
            );
            return;
        }
    };
    if sel.suite.ke.number() != group {
        sa.send_response(
            ExchangeType::CREATE_CHILD_SA,
            mid,
            vec![notify(
                NotifyType::INVALID_KE_PAYLOAD,
                sel.suite.ke.number().to_be_bytes().to_vec(),
            )],
        );
        return;
    }
    let Ok(peer_spi) = <[u8; 8]>::try_from(sel.proposal.spi.as_slice()).map(u64::from_be_bytes) else {
        sa.send_response(
            ExchangeType::CREATE_CHILD_SA,
            mid,
            vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())],
        );
        return;
    };
    let random = &*sa.ctx.crypto;
    let fresh = KeyExchange::respond(random, sel.suite.ke, kei).and_then(|(ker, shared)| {
        let our_spi = sa.ctx.new_ike_spi()?;
        Ok((ker, shared, our_spi, random_nonce(random)?))
    });
    let (ker, shared, our_spi, nr) = match fresh {
        Ok(x) => x,
        Err(e @ CryptoError::InvalidPublicValue(_)) => {
            warn!("bad KE value in IKE rekey: {e}");
            sa.send_response(
                ExchangeType::CREATE_CHILD_SA,
                mid,
                vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())],
            );
            return;
        }
        Err(e) => {
            let answer = local_failure(sa, &e);
            sa.send_response(ExchangeType::CREATE_CHILD_SA, mid, vec![answer]);
            return;
        }
    };
    let mut echo = sel.proposal.clone();
    echo.spi = our_spi.to_be_bytes().to_vec();
    let payloads = vec![
        Payload::Sa(vec![echo]),
        Payload::Nonce(nr.clone()),
        Payload::Ke { group, data: ker },
    ];
    let rekey = Followup::ike(peer_spi, our_spi, sel, ni.to_vec(), nr, shared);
    if !rekey.remaining.is_empty() {
        return super::followup_ke::respond_rekey(sa, now, mid, rekey, payloads);
    }
    super::followup_ke::complete(sa, now, Role::Responder, *rekey);
    sa.send_response(ExchangeType::CREATE_CHILD_SA, mid, payloads);
}

/// What a peer's error notify in answer to our proposals tells an operator:
/// with NO_PROPOSAL_CHOSEN, what we offered.
pub(crate) fn peer_refused<P: std::fmt::Display>(notify: NotifyType, ours: &[P]) -> String {
    if notify == NotifyType::NO_PROPOSAL_CHOSEN {
        format!("peer answered {notify}; we offered {}", proposal::offered(ours))
    } else {
        format!("peer answered {notify}")
    }
}

//! RFC 9370 additional key exchanges of an IKE SA rekey: the IKE_FOLLOWUP_KE
//! exchanges that follow the CREATE_CHILD_SA (§2.2.4), linked by the
//! ADDITIONAL_KEY_EXCHANGE notify, one per additional key exchange in ADDKE
//! order. The new IKE SA exists only once all of them are done, keyed from
//! every shared secret.

use std::time::Instant;

use tracing::{debug, error, warn};

use super::handshake::random_nonce;
use super::{IkeSa, RequestKind, Role, Task, find_notify, notify};
use crate::crypto::{CryptoError, IkeSuite, KeGroup, KeyExchange, SharedSecret};
use crate::proposal::SelectedIke;
use crate::wire::ikev2::{ExchangeType, NotifyType, Payload};

/// An IKE SA rekey whose CREATE_CHILD_SA is done and whose additional key
/// exchanges are still running.
pub(crate) struct RekeyFollowup {
    /// SPIs of the new IKE SA.
    pub spi_i: u64,
    pub spi_r: u64,
    pub suite: IkeSuite,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    /// SK(0), SK(1), ... in exchange order.
    pub secrets: Vec<SharedSecret>,
    /// Additional key exchanges (ADDKE number, method) still to run, next first.
    pub remaining: Vec<(u8, KeGroup)>,
    /// Those already run.
    pub done: Vec<(u8, KeGroup)>,
    /// Link data for the next IKE_FOLLOWUP_KE request.
    pub link: Vec<u8>,
}

impl RekeyFollowup {
    /// A rekey whose CREATE_CHILD_SA (`sel`, nonces, SK(0)) is done.
    pub fn new(spi_i: u64, spi_r: u64, sel: SelectedIke, ni: Vec<u8>, nr: Vec<u8>, shared: SharedSecret) -> Box<Self> {
        Box::new(RekeyFollowup {
            spi_i,
            spi_r,
            suite: sel.suite,
            ni,
            nr,
            secrets: vec![shared],
            remaining: sel.additional_ke,
            done: Vec::new(),
            link: Vec::new(),
        })
    }
}

/// Our IKE_FOLLOWUP_KE request: the rekey and our key exchange in it.
pub(crate) struct Pending {
    rekey: Box<RekeyFollowup>,
    ke: KeyExchange,
}

fn link_notify(link: &[u8]) -> Payload {
    notify(NotifyType::ADDITIONAL_KEY_EXCHANGE, link.to_vec())
}

/// Initiator: the CREATE_CHILD_SA response chose additional key exchanges;
/// `inner` is that response (its ADDITIONAL_KEY_EXCHANGE notify carries the
/// link). Starts the first IKE_FOLLOWUP_KE, or fails the rekey.
pub(crate) fn start(sa: &mut IkeSa, now: Instant, mut rekey: Box<RekeyFollowup>, inner: &[Payload]) {
    match find_notify(inner, NotifyType::ADDITIONAL_KEY_EXCHANGE) {
        Some(n) if !n.data.is_empty() => {
            rekey.link = n.data.clone();
            send_next(sa, now, rekey);
        }
        _ => rekey_failed(
            sa,
            now,
            &rekey,
            "responder chose additional key exchanges without an ADDITIONAL_KEY_EXCHANGE notify",
        ),
    }
}

fn send_next(sa: &mut IkeSa, now: Instant, rekey: Box<RekeyFollowup>) {
    let Some(&(_, group)) = rekey.remaining.first() else {
        return;
    };
    let ke = match KeyExchange::generate(&*sa.ctx.crypto, group) {
        Ok(ke) => ke,
        Err(e) => return rekey_failed(sa, now, &rekey, &format!("cannot start IKE_FOLLOWUP_KE: {e}")),
    };
    let payloads = vec![
        link_notify(&rekey.link),
        Payload::Ke {
            group: group.number(),
            data: ke.public_value().to_vec(),
        },
    ];
    sa.send_request(
        now,
        ExchangeType::IKE_FOLLOWUP_KE,
        payloads,
        RequestKind::FollowupKe(Pending { rekey, ke }),
    );
}

fn rekey_failed(sa: &mut IkeSa, now: Instant, rekey: &RekeyFollowup, why: &str) {
    sa.ike_rekey_failed(now, &rekey.ni, why);
}

/// Initiator: the response to our IKE_FOLLOWUP_KE.
pub(crate) fn handle_response(sa: &mut IkeSa, now: Instant, inner: Vec<Payload>, pending: Pending) {
    let Pending { mut rekey, ke } = pending;
    if let Some(n) = super::error_notify(&inner) {
        return rekey_failed(sa, now, &rekey, &format!("peer answered IKE_FOLLOWUP_KE with {}", n.ty));
    }
    let ker = inner.iter().find_map(|p| match p {
        Payload::Ke { group, data } => Some((*group, data)),
        _ => None,
    });
    let shared = match ker {
        Some((g, data)) if g == ke.group().number() => ke.finish(data).map_err(|e| e.to_string()),
        Some(_) => Err("KE group differs from the one sent".into()),
        None => Err("response without KE".into()),
    };
    let shared = match shared {
        Ok(s) => s,
        Err(why) => return rekey_failed(sa, now, &rekey, &format!("IKE_FOLLOWUP_KE: {why}")),
    };
    let step = rekey.remaining.remove(0);
    rekey.done.push(step);
    rekey.secrets.push(shared);
    debug!(addke = step.0, method = step.1.name(), "IKE_FOLLOWUP_KE done");
    if rekey.remaining.is_empty() {
        super::create_child::make_successor(sa, now, Role::Initiator, &rekey);
        let tasks = &mut sa.outbox().tasks;
        tasks.clear();
        tasks.push_front(Task::DeleteIke);
        return;
    }
    if let Some(n) = find_notify(&inner, NotifyType::ADDITIONAL_KEY_EXCHANGE) {
        rekey.link = n.data.clone();
    }
    send_next(sa, now, rekey);
}

/// Responder: our CREATE_CHILD_SA response `payloads` for a rekey that chose
/// additional key exchanges; adds the link and keeps the rekey until the
/// IKE_FOLLOWUP_KE exchanges complete it.
pub(crate) fn respond_rekey(sa: &mut IkeSa, mid: u32, mut rekey: Box<RekeyFollowup>, mut payloads: Vec<Payload>) {
    match random_nonce(&*sa.ctx.crypto) {
        Ok(link) => rekey.link = link,
        Err(e) => return answer_local_failure(sa, mid, ExchangeType::CREATE_CHILD_SA, &e),
    }
    payloads.push(link_notify(&rekey.link));
    sa.scratch().rekey_followup = Some(rekey);
    sa.send_response(ExchangeType::CREATE_CHILD_SA, mid, payloads);
}

fn answer_local_failure(sa: &mut IkeSa, mid: u32, exchange: ExchangeType, e: &CryptoError) {
    error!(connection = %sa.config.name, peer = %sa.remote, "cannot answer {exchange}: {e}");
    sa.send_response(exchange, mid, vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())]);
}

/// Responder: an IKE_FOLLOWUP_KE request.
pub(crate) fn handle_request(sa: &mut IkeSa, now: Instant, mid: u32, inner: Vec<Payload>) {
    let link = find_notify(&inner, NotifyType::ADDITIONAL_KEY_EXCHANGE).map(|n| n.data.clone());
    let state = sa.scratch.as_mut().and_then(|b| b.rekey_followup.take());
    let Some(mut rekey) = state.filter(|r| link.as_deref() == Some(r.link.as_slice())) else {
        warn!(connection = %sa.config.name, peer = %sa.remote, "IKE_FOLLOWUP_KE for no rekey of ours: STATE_NOT_FOUND");
        sa.send_response(
            ExchangeType::IKE_FOLLOWUP_KE,
            mid,
            vec![notify(NotifyType::STATE_NOT_FOUND, Vec::new())],
        );
        return;
    };
    let Some(&(number, group)) = rekey.remaining.first() else {
        return;
    };
    let kei = inner.iter().find_map(|p| match p {
        Payload::Ke { group, data } => Some((*group, data)),
        _ => None,
    });
    let (ker, shared) = match kei {
        Some((g, data)) if g == group.number() => match KeyExchange::respond(&*sa.ctx.crypto, group, data) {
            Ok(x) => x,
            Err(e @ CryptoError::InvalidPublicValue(_)) => {
                warn!(connection = %sa.config.name, "bad KE value in IKE_FOLLOWUP_KE: {e}; IKE SA rekey abandoned");
                sa.send_response(
                    ExchangeType::IKE_FOLLOWUP_KE,
                    mid,
                    vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())],
                );
                return;
            }
            Err(e) => return answer_local_failure(sa, mid, ExchangeType::IKE_FOLLOWUP_KE, &e),
        },
        _ => {
            warn!(
                connection = %sa.config.name,
                "IKE_FOLLOWUP_KE without a KE payload of ke{number}_{}; IKE SA rekey abandoned",
                group.name()
            );
            sa.send_response(
                ExchangeType::IKE_FOLLOWUP_KE,
                mid,
                vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())],
            );
            return;
        }
    };
    let step = rekey.remaining.remove(0);
    rekey.done.push(step);
    rekey.secrets.push(shared);
    let mut out = vec![Payload::Ke {
        group: group.number(),
        data: ker,
    }];
    if rekey.remaining.is_empty() {
        super::create_child::make_successor(sa, now, Role::Responder, &rekey);
    } else {
        match random_nonce(&*sa.ctx.crypto) {
            Ok(link) => rekey.link = link,
            Err(e) => return answer_local_failure(sa, mid, ExchangeType::IKE_FOLLOWUP_KE, &e),
        }
        out.push(link_notify(&rekey.link));
        sa.scratch().rekey_followup = Some(rekey);
    }
    sa.send_response(ExchangeType::IKE_FOLLOWUP_KE, mid, out);
}

/// Warns when a rekey makes a classical successor of an IKE SA that ran
/// additional key exchanges (the configuration allows NONE for all of them).
pub(crate) fn warn_if_downgraded(sa: &IkeSa, new: &[(u8, KeGroup)]) {
    let ran = sa.additional_key_exchanges();
    if !ran.is_empty() && new.is_empty() {
        let names: Vec<String> = ran.iter().map(|(n, g)| format!("ke{n}_{}", g.name())).collect();
        warn!(
            connection = %sa.config.name,
            peer = %sa.remote,
            "IKE SA rekeyed without its additional key exchanges ({}): they are optional in the \
             configuration and the peer chose NONE",
            names.join(", ")
        );
    }
}

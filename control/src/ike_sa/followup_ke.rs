//! RFC 9370 additional key exchanges of a CREATE_CHILD_SA (an IKE SA rekey,
//! or a new or rekeyed CHILD_SA): the IKE_FOLLOWUP_KE exchanges that follow
//! it (§2.2.4), linked by the ADDITIONAL_KEY_EXCHANGE notify, one per
//! additional key exchange in ADDKE order. The new SA exists only once all
//! of them are done, keyed from every shared secret.

use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::child::ChildState;
use super::create_child::ChildPlan;
use super::handshake::random_nonce;
use super::{Event, IkeSa, RequestKind, Role, Task, find_notify, notify, rekey_retry_at};
use crate::crypto::{CryptoError, IkeSuite, KeGroup, KeyExchange, SharedSecret};
use crate::proposal::SelectedIke;
use crate::wire::ikev2::{ExchangeType, NotifyType, Payload};

/// What the CREATE_CHILD_SA whose additional key exchanges are running makes.
pub(crate) enum Target {
    /// The IKE SA that replaces this one: its SPIs and suite.
    Ike { spi_i: u64, spi_r: u64, suite: IkeSuite },
    /// A CHILD_SA, negotiated and not yet installed.
    Child(Box<ChildPlan>),
}

/// A CREATE_CHILD_SA that is done and whose additional key exchanges are
/// still running.
pub(crate) struct Followup {
    pub target: Target,
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
    /// Responder: when a peer that stopped sending IKE_FOLLOWUP_KE requests
    /// is given up on, so that a half-done exchange does not pin memory.
    pub expires_at: Option<Instant>,
}

impl Followup {
    /// An IKE SA rekey whose CREATE_CHILD_SA (`sel`, nonces, SK(0)) is done.
    pub fn ike(spi_i: u64, spi_r: u64, sel: SelectedIke, ni: Vec<u8>, nr: Vec<u8>, shared: SharedSecret) -> Box<Self> {
        let target = Target::Ike {
            spi_i,
            spi_r,
            suite: sel.suite,
        };
        Self::new(target, sel.additional_ke, ni, nr, shared)
    }

    /// A CHILD_SA whose CREATE_CHILD_SA (`plan`, nonces, SK(0)) is done.
    pub fn child(plan: ChildPlan, ni: Vec<u8>, nr: Vec<u8>, shared: SharedSecret) -> Box<Self> {
        let remaining = plan.sel.additional_ke.clone();
        Self::new(Target::Child(Box::new(plan)), remaining, ni, nr, shared)
    }

    fn new(target: Target, remaining: Vec<(u8, KeGroup)>, ni: Vec<u8>, nr: Vec<u8>, shared: SharedSecret) -> Box<Self> {
        Box::new(Followup {
            target,
            ni,
            nr,
            secrets: vec![shared],
            remaining,
            done: Vec::new(),
            link: Vec::new(),
            expires_at: None,
        })
    }

    /// Inbound SPI of the child this rekeys, if it rekeys one.
    pub fn rekeys_child(&self) -> Option<u32> {
        match &self.target {
            Target::Child(plan) => plan.rekey_of,
            Target::Ike { .. } => None,
        }
    }

    /// Heap bytes it holds.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.ni.capacity()
            + self.nr.capacity()
            + self.link.capacity()
            + self.secrets.iter().map(|s| s.capacity()).sum::<usize>()
            + match &self.target {
                Target::Child(_) => std::mem::size_of::<ChildPlan>(),
                Target::Ike { .. } => 0,
            }
    }

    /// What it makes, for log lines.
    fn what(&self) -> &'static str {
        match &self.target {
            Target::Ike { .. } => "IKE SA rekey",
            Target::Child(plan) if plan.rekey_of.is_some() => "CHILD_SA rekey",
            Target::Child(_) => "CHILD_SA creation",
        }
    }
}

/// Our IKE_FOLLOWUP_KE request: the exchange it continues and our key
/// exchange in it.
pub(crate) struct Pending {
    rekey: Box<Followup>,
    ke: KeyExchange,
}

impl Pending {
    /// Inbound SPI of the child our exchange rekeys, if it rekeys one.
    pub fn rekeys_child(&self) -> Option<u32> {
        self.rekey.rekeys_child()
    }
}

fn link_notify(link: &[u8]) -> Payload {
    notify(NotifyType::ADDITIONAL_KEY_EXCHANGE, link.to_vec())
}

/// Initiator: the CREATE_CHILD_SA response chose additional key exchanges;
/// `inner` is that response (its ADDITIONAL_KEY_EXCHANGE notify carries the
/// link). Starts the first IKE_FOLLOWUP_KE, or fails the exchange.
pub(crate) fn start(sa: &mut IkeSa, now: Instant, mut rekey: Box<Followup>, inner: &[Payload]) {
    match find_notify(inner, NotifyType::ADDITIONAL_KEY_EXCHANGE) {
        Some(n) if !n.data.is_empty() => {
            rekey.link = n.data.clone();
            send_next(sa, now, rekey);
        }
        _ => rekey_failed(
            sa,
            now,
            *rekey,
            "responder chose additional key exchanges without an ADDITIONAL_KEY_EXCHANGE notify",
        ),
    }
}

fn send_next(sa: &mut IkeSa, now: Instant, rekey: Box<Followup>) {
    let Some(&(_, group)) = rekey.remaining.first() else {
        return;
    };
    let ke = match KeyExchange::generate(&*sa.ctx.crypto, group) {
        Ok(ke) => ke,
        Err(e) => return rekey_failed(sa, now, *rekey, &format!("cannot start IKE_FOLLOWUP_KE: {e}")),
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

/// Initiator: the exchange failed; an IKE SA or CHILD_SA rekey is retried later.
fn rekey_failed(sa: &mut IkeSa, now: Instant, rekey: Followup, why: &str) {
    match rekey.target {
        Target::Ike { .. } => sa.ike_rekey_failed(now, &rekey.ni, why),
        Target::Child(plan) => {
            let name = sa.config.children[plan.template].name.clone();
            warn!(connection = %sa.config.name, child = %name, "CHILD_SA not established: {why}");
            sa.ctx.child_spis.release(plan.spi_in);
            if let Some(c) = plan
                .rekey_of
                .and_then(|old| sa.children.iter_mut().find(|c| c.spi_in == old))
            {
                if c.state == ChildState::Rekeying {
                    c.state = ChildState::Installed;
                    c.rekey_at = Some(rekey_retry_at(now, &rekey.ni, c.expire_at));
                }
            }
            sa.push_event(Event::ChildSaFailed {
                name,
                reason: why.to_string(),
            });
        }
    }
}

/// All key exchanges are done: the new SA is made from every shared secret.
pub(crate) fn complete(sa: &mut IkeSa, now: Instant, role: Role, rekey: Followup) {
    let Followup {
        target,
        ni,
        nr,
        secrets,
        done,
        ..
    } = rekey;
    let shared: Vec<&[u8]> = secrets.iter().map(|s| s.as_slice()).collect();
    match target {
        Target::Ike { spi_i, spi_r, suite } => {
            let new = super::create_child::Successor {
                spi_i,
                spi_r,
                suite,
                ni: &ni,
                nr: &nr,
                secrets: &shared,
                done: &done,
            };
            super::create_child::make_successor(sa, now, role, &new);
            if role == Role::Initiator {
                let tasks = &mut sa.outbox().tasks;
                tasks.clear();
                tasks.push_front(Task::DeleteIke);
            }
        }
        Target::Child(plan) => {
            let old = plan.rekey_of;
            super::create_child::install_child(sa, now, *plan, &ni, &nr, &shared);
            let Some(old) = old else { return };
            if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old) {
                // As responder a rekey of ours that crossed this one is
                // settled when its response arrives.
                if role == Role::Initiator || c.state == ChildState::Installed {
                    c.state = ChildState::Rekeyed;
                }
            }
            if role == Role::Initiator {
                sa.outbox().tasks.push_front(Task::DeleteChild(old));
            }
        }
    }
}

/// Initiator: the response to our IKE_FOLLOWUP_KE.
pub(crate) fn handle_response(sa: &mut IkeSa, now: Instant, inner: Vec<Payload>, pending: Pending) {
    let Pending { mut rekey, ke } = pending;
    if let Some(n) = super::error_notify(&inner) {
        let why = format!("peer answered IKE_FOLLOWUP_KE with {}", n.ty);
        return rekey_failed(sa, now, *rekey, &why);
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
        Err(why) => return rekey_failed(sa, now, *rekey, &format!("IKE_FOLLOWUP_KE: {why}")),
    };
    let step = rekey.remaining.remove(0);
    rekey.done.push(step);
    rekey.secrets.push(shared);
    debug!(addke = step.0, method = step.1.name(), "IKE_FOLLOWUP_KE done");
    if rekey.remaining.is_empty() {
        return complete(sa, now, Role::Initiator, *rekey);
    }
    if let Some(n) = find_notify(&inner, NotifyType::ADDITIONAL_KEY_EXCHANGE) {
        rekey.link = n.data.clone();
    }
    send_next(sa, now, rekey);
}

/// Responder: our CREATE_CHILD_SA response `payloads` for an exchange that
/// chose additional key exchanges; adds the link and keeps the exchange
/// until the IKE_FOLLOWUP_KE exchanges complete it or the peer is given up on.
pub(crate) fn respond_rekey(
    sa: &mut IkeSa,
    now: Instant,
    mid: u32,
    mut rekey: Box<Followup>,
    mut payloads: Vec<Payload>,
) {
    match random_nonce(&*sa.ctx.crypto) {
        Ok(link) => rekey.link = link,
        Err(e) => {
            release(sa, &rekey);
            return answer_local_failure(sa, mid, ExchangeType::CREATE_CHILD_SA, &e);
        }
    }
    payloads.push(link_notify(&rekey.link));
    keep(sa, now, rekey);
    sa.send_response(ExchangeType::CREATE_CHILD_SA, mid, payloads);
}

/// Responder: keeps an exchange until the peer's next IKE_FOLLOWUP_KE, for
/// at most the half-open timeout. A former one (the peer abandoned it, for
/// instance after losing a rekey collision) is dropped.
fn keep(sa: &mut IkeSa, now: Instant, mut rekey: Box<Followup>) {
    rekey.expires_at = Some(now + sa.ctx.half_open_timeout);
    if let Some(old) = sa.scratch().followup.replace(rekey) {
        debug!(connection = %sa.config.name, "{} superseded before its IKE_FOLLOWUP_KE exchanges were done", old.what());
        release(sa, &old);
    }
}

/// Frees what a responder's abandoned exchange holds (the CHILD_SA's SPI).
fn release(sa: &IkeSa, rekey: &Followup) {
    if let Target::Child(plan) = &rekey.target {
        sa.ctx.child_spis.release(plan.spi_in);
    }
}

/// Responder: drops the peer's CHILD_SA rekey of `old_spi_in` that waits for
/// IKE_FOLLOWUP_KE requests which will not come (the peer lost a collision).
pub(crate) fn drop_peer_child_rekey(sa: &mut IkeSa, old_spi_in: u32) {
    let Some(busy) = sa.scratch.as_mut() else { return };
    if busy.followup.as_ref().and_then(|f| f.rekeys_child()) != Some(old_spi_in) {
        return;
    }
    if let Some(f) = busy.followup.take() {
        debug!(connection = %sa.config.name, "the peer abandons its multi-KE CHILD_SA rekey after losing the collision");
        release(sa, &f);
    }
}

/// Responder: when the peer's unfinished exchange is given up on.
pub(crate) fn expiry(sa: &IkeSa) -> Option<Instant> {
    sa.scratch.as_ref()?.followup.as_ref()?.expires_at
}

/// Responder: gives up on the peer's unfinished exchange once it expired.
pub(crate) fn expire(sa: &mut IkeSa, now: Instant) {
    let Some(busy) = sa.scratch.as_mut() else { return };
    if busy
        .followup
        .as_ref()
        .is_none_or(|f| f.expires_at.is_none_or(|e| now < e))
    {
        return;
    }
    let Some(f) = busy.followup.take() else { return };
    info!(
        connection = %sa.config.name,
        peer = %sa.remote,
        done = f.done.len(),
        remaining = f.remaining.len(),
        "peer did not continue its {} with IKE_FOLLOWUP_KE within {} s: abandoned",
        f.what(),
        sa.ctx.half_open_timeout.as_secs()
    );
    release(sa, &f);
}

fn answer_local_failure(sa: &mut IkeSa, mid: u32, exchange: ExchangeType, e: &CryptoError) {
    error!(connection = %sa.config.name, peer = %sa.remote, "cannot answer {exchange}: {e}");
    sa.send_response(exchange, mid, vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())]);
}

/// Responder: an IKE_FOLLOWUP_KE request.
pub(crate) fn handle_request(sa: &mut IkeSa, now: Instant, mid: u32, inner: Vec<Payload>) {
    let link = find_notify(&inner, NotifyType::ADDITIONAL_KEY_EXCHANGE).map(|n| n.data.clone());
    let linked = sa
        .scratch
        .as_ref()
        .and_then(|b| b.followup.as_ref())
        .is_some_and(|r| link.as_deref() == Some(r.link.as_slice()));
    let state = if linked {
        sa.scratch.as_mut().and_then(|b| b.followup.take())
    } else {
        None
    };
    let Some(mut rekey) = state else {
        warn!(connection = %sa.config.name, peer = %sa.remote, "IKE_FOLLOWUP_KE for no exchange of ours: STATE_NOT_FOUND");
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
                warn!(connection = %sa.config.name, "bad KE value in IKE_FOLLOWUP_KE: {e}; {} abandoned", rekey.what());
                release(sa, &rekey);
                sa.send_response(
                    ExchangeType::IKE_FOLLOWUP_KE,
                    mid,
                    vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())],
                );
                return;
            }
            Err(e) => {
                release(sa, &rekey);
                return answer_local_failure(sa, mid, ExchangeType::IKE_FOLLOWUP_KE, &e);
            }
        },
        _ => {
            warn!(
                connection = %sa.config.name,
                "IKE_FOLLOWUP_KE without a KE payload of ke{number}_{}; {} abandoned",
                group.name(),
                rekey.what()
            );
            release(sa, &rekey);
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
        complete(sa, now, Role::Responder, *rekey);
    } else {
        match random_nonce(&*sa.ctx.crypto) {
            Ok(link) => rekey.link = link,
            Err(e) => {
                release(sa, &rekey);
                return answer_local_failure(sa, mid, ExchangeType::IKE_FOLLOWUP_KE, &e);
            }
        }
        out.push(link_notify(&rekey.link));
        keep(sa, now, rekey);
    }
    sa.send_response(ExchangeType::IKE_FOLLOWUP_KE, mid, out);
}

/// Warns when a rekey makes a classical successor of an IKE SA that ran
/// additional key exchanges (the configuration allows NONE for all of them).
pub(crate) fn warn_if_downgraded(sa: &IkeSa, new: &[(u8, KeGroup)]) {
    let ran = sa.additional_key_exchanges();
    if !ran.is_empty() && new.is_empty() {
        let names = crate::proposal::key_exchange_names(None, &ran);
        warn!(
            connection = %sa.config.name,
            peer = %sa.remote,
            "IKE SA rekeyed without its additional key exchanges ({}): they are optional in the \
             configuration and the peer chose NONE",
            names.join(", ")
        );
    }
}

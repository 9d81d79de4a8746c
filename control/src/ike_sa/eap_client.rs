//! EAP inside IKE_AUTH, initiator side (RFC 7296 §2.16).
//!
//! Our first IKE_AUTH request carries IDi without AUTH. The responder
//! answers with IDr, its certificate or PSK AUTH (checked as usual) and the
//! first EAP Request; each further request carries our EAP Response, until
//! EAP Success. The last exchange carries both AUTH payloads computed with
//! the MSK (SK_pi/SK_pr for a method without one), the responder's
//! configuration reply and the first CHILD_SA.
//!
//! The EAP methods are those of [`crate::eap::Peer`]. An EAP packet that
//! does not fit the conversation ends the attempt: it arrived in an
//! authenticated response, so the responder itself is off the protocol.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};
use zeroize::Zeroizing;

use super::auth::{
    PendingChild, certs_of, complete_initiator, octets_for, release_pending, verify_peer, verify_shared_key,
};
use super::eap::rng;
use super::{DownReason, IkeSa, RequestKind, State};
use crate::config::display_identity;
use crate::crypto::auth::PresharedKey;
use crate::eap::{Msk, Peer, PeerConfig, PeerStep};
use crate::wire::ikev2::{AuthMethod, ExchangeType, Identification, Payload};

/// Most IKE_AUTH exchanges an EAP conversation may take: MSCHAPv2 needs
/// four, EAP-TLS with a certificate chain a dozen; a responder that goes on
/// for longer is not converging.
const MAX_EAP_EXCHANGES: u32 = 64;

/// Where the conversation is.
enum Step {
    /// Our first request (IDi without AUTH) is out.
    Started,
    /// The responder's first AUTH verified; EAP is running.
    Eap { idr: Identification },
    /// EAP succeeded and our AUTH over the MSK is out.
    FinalAuth { idr: Identification, msk: Option<Msk> },
}

/// The state of an EAP client's IKE_AUTH, carried by its outstanding request.
pub(crate) struct Pending {
    child: PendingChild,
    peer: Peer,
    /// Message ID of the first IKE_AUTH request: the IntAuth of both AUTH
    /// payloads is that of this message (RFC 9242).
    first_mid: u32,
    exchanges: u32,
    step: Step,
}

impl Pending {
    pub(crate) fn new(child: PendingChild, config: Arc<PeerConfig>, first_mid: u32) -> Self {
        Pending {
            child,
            peer: Peer::new((*config).clone()),
            first_mid,
            exchanges: 1,
            step: Step::Started,
        }
    }
}

fn fail(sa: &mut IkeSa, pending: &Pending, reason: DownReason, why: &str) {
    warn!(connection = %sa.config.name, peer = %sa.remote, "IKE_AUTH with EAP failed: {why}");
    release_pending(sa, &pending.child);
    sa.close(reason);
}

/// Initiator: processes an IKE_AUTH response of an EAP client.
pub(crate) fn handle_response(sa: &mut IkeSa, now: Instant, inner: Vec<Payload>, mut pending: Box<Pending>) {
    let State::Authenticating(ctx) = std::mem::replace(&mut sa.state, State::Closed) else {
        return;
    };
    let Some((prf, sk_pi, sk_pr)) = sa.keys.as_ref().map(|k| {
        (
            k.suite.prf,
            Zeroizing::new(k.sk_pi().to_vec()),
            Zeroizing::new(k.sk_pr().to_vec()),
        )
    }) else {
        return;
    };
    let int_auth = ctx.int_auth.octets(pending.first_mid);
    let eap = inner.iter().find_map(|p| match p {
        Payload::Eap(e) => Some(e.as_slice()),
        _ => None,
    });
    if let Some(n) = super::error_notify(&inner) {
        // A refusal may come with EAP Failure (after an MSCHAPv2 Failure
        // whose text says why).
        let detail = eap
            .and_then(|e| match pending.peer.handle(e, &mut rng(sa)) {
                Ok(PeerStep::Failure { detail }) => detail,
                _ => None,
            })
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let why = format!("peer answered {}{detail}", n.ty);
        return fail(sa, &pending, DownReason::PeerError(n.ty), &why);
    }
    let auth = inner.iter().find_map(|p| match p {
        Payload::Auth { method, data } => Some((*method, data.as_slice())),
        _ => None,
    });
    let cfg = sa.config.clone();
    match std::mem::replace(&mut pending.step, Step::Started) {
        Step::Started => {
            let idr = inner.iter().find_map(|p| match p {
                Payload::IdR(id) => Some(id.clone()),
                _ => None,
            });
            let (Some(idr), Some((method, data))) = (idr, auth) else {
                let why = "the first IKE_AUTH response has no IDr or AUTH";
                return fail(sa, &pending, DownReason::Failed(why.into()), why);
            };
            if !cfg.remote_id.matches(&idr) {
                let why = format!("responder identity {} not acceptable", display_identity(&idr));
                return fail(sa, &pending, DownReason::Failed(why.clone()), &why);
            }
            let octets = octets_for(&ctx.peer_init, &ctx.ni, prf, &sk_pr, &idr).with_int_auth(int_auth.clone());
            if let Err(why) = verify_peer(sa, &cfg, &idr, method, data, &octets, &certs_of(&inner)) {
                let why = format!("responder authentication failed: {why}");
                return fail(sa, &pending, DownReason::Failed(why.clone()), &why);
            }
            pending.step = Step::Eap { idr };
        }
        Step::Eap { idr } => pending.step = Step::Eap { idr },
        Step::FinalAuth { idr, msk } => {
            let Some((method, data)) = auth else {
                let why = "the last IKE_AUTH response has no AUTH";
                return fail(sa, &pending, DownReason::Failed(why.into()), why);
            };
            let key: &[u8] = msk.as_deref().map_or(&sk_pr[..], |m| &m[..]);
            let octets = octets_for(&ctx.peer_init, &ctx.ni, prf, &sk_pr, &idr).with_int_auth(int_auth.clone());
            if let Err(why) = verify_shared_key(prf, key, method, data, &octets) {
                let why = format!("responder authentication after EAP failed: {why}");
                return fail(sa, &pending, DownReason::Failed(why.clone()), &why);
            }
            let Pending { child, .. } = *pending;
            return complete_initiator(sa, now, &ctx, &inner, child, idr);
        }
    }
    let Some(eap) = eap else {
        let why = "IKE_AUTH response without an EAP payload during EAP";
        return fail(sa, &pending, DownReason::Failed(why.into()), why);
    };
    let step = pending.peer.handle(eap, &mut rng(sa));
    let request = match step {
        Err(e) => {
            let why = format!("EAP: {e}");
            return fail(sa, &pending, DownReason::Failed(why.clone()), &why);
        }
        Ok(PeerStep::Failure { detail }) => {
            let why = match detail {
                Some(d) => format!("EAP authentication failed: {d}"),
                None => "EAP authentication failed".to_string(),
            };
            return fail(sa, &pending, DownReason::Failed(why.clone()), &why);
        }
        Ok(PeerStep::Send(response)) => vec![Payload::Eap(response)],
        Ok(PeerStep::Success { msk }) => {
            info!(connection = %cfg.name, peer = %sa.remote, "EAP authentication succeeded");
            let key: &[u8] = msk.as_deref().map_or(&sk_pi[..], |m| &m[..]);
            let octets = octets_for(&ctx.our_init, &ctx.nr, prf, &sk_pi, &cfg.local_id).with_int_auth(int_auth);
            let auth = Payload::Auth {
                method: AuthMethod::SHARED_KEY_MIC,
                data: PresharedKey::new(key).auth(prf, &octets),
            };
            let Step::Eap { idr } = std::mem::replace(&mut pending.step, Step::Started) else {
                return;
            };
            pending.step = Step::FinalAuth { idr, msk };
            vec![auth]
        }
    };
    pending.exchanges += 1;
    if pending.exchanges > MAX_EAP_EXCHANGES {
        let why = format!("EAP did not finish within {MAX_EAP_EXCHANGES} IKE_AUTH exchanges");
        return fail(sa, &pending, DownReason::Failed(why.clone()), &why);
    }
    sa.state = State::Authenticating(ctx);
    sa.send_request(now, ExchangeType::IKE_AUTH, request, RequestKind::EapClient(pending));
}

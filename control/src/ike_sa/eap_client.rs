//! EAP inside IKE_AUTH as the client (initiator), RFC 7296 §2.16.
//!
//! Our first IKE_AUTH request carries IDi but no AUTH (and our CFG_REQUEST
//! and child proposal). The gateway answers with IDr, its certificate or
//! PSK AUTH, which we verify before anything else, and its first EAP
//! Request; EAP Requests and our Responses then ride in further IKE_AUTH
//! exchanges until EAP-Success. Our AUTH over the MSK (or SK_pi for a
//! method without one) goes in the next request; the last response carries
//! the gateway's AUTH over the same key, the configuration reply and the
//! first CHILD_SA.
//!
//! An EAP packet that does not fit the conversation (malformed, in the
//! wrong state, an MSCHAPv2 authenticator response that does not verify)
//! is counted in [`super::eap::EapStats::dropped`]: the gateway's IKE
//! response is already consumed, so the attempt cannot wait for a better
//! one, and we abort it with AUTHENTICATION_FAILED.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{info, warn};

use super::auth::{
    PendingChild, certs_of, complete_initiator, octets_for, release_pending, responder_proof, verify_peer,
    verify_shared_key,
};
use super::eap::{printable, rng};
use super::informational::Pending as InformationalPending;
use super::{AuthContext, DownReason, IkeSa, RequestKind, State, error_notify, notify};
use crate::config::{EapClientAuth, display_identity};
use crate::eap::tls::{EAP_TLS, EapTlsError, EapTlsPeer, PeerStep as TlsStep};
use crate::eap::{Code, Msk, Payload as EapPayload, Peer, PeerConfig, PeerStep};
use crate::wire::ikev2::{AuthMethod, ExchangeType, Identification, NotifyType, Payload};

/// The method state machine of our side.
enum Conversation {
    /// EAP-MSCHAPv2 or EAP-MD5, EAP-Identity and Naks included.
    Password(Peer),
    /// EAP-TLS; EAP-Identity, Notifications and Naks are answered here.
    Tls(Box<EapTlsPeer>),
}

/// What our side of EAP does next.
enum Step {
    Send(Vec<u8>),
    /// EAP-Success after the method authenticated the gateway; the MSK
    /// (none for EAP-MD5).
    Success(Option<Msk>),
    /// The gateway refused, with the MSCHAPv2 failure text if any.
    Failure(Option<String>),
}

impl Conversation {
    /// Our answer to the gateway's EAP packet, or why it does not fit.
    fn step(&mut self, identity: &[u8], eap: &[u8], rng: &mut dyn crate::eap::EapRng) -> Result<Step, String> {
        let tls = match self {
            Conversation::Password(peer) => {
                return match peer.handle(eap, rng).map_err(|e| e.to_string())? {
                    PeerStep::Send(r) => Ok(Step::Send(r)),
                    PeerStep::Success { msk } => Ok(Step::Success(msk)),
                    PeerStep::Failure { detail } => Ok(Step::Failure(detail)),
                };
            }
            Conversation::Tls(tls) => tls,
        };
        let packet = crate::eap::decode(eap).map_err(|e| e.to_string())?;
        let respond = |payload| {
            crate::eap::encode(&crate::eap::Packet {
                code: Code::Response,
                identifier: packet.identifier,
                payload: Some(payload),
            })
            .map(Step::Send)
            .map_err(|e| e.to_string())
        };
        match (packet.code, &packet.payload) {
            (Code::Request, Some(EapPayload::Identity(_))) => respond(EapPayload::Identity(identity)),
            (Code::Request, Some(EapPayload::Notification(_))) => respond(EapPayload::Notification(b"")),
            (Code::Request, Some(EapPayload::Other { eap_type: EAP_TLS, .. })) | (Code::Success, _) => {
                match tls.handle(eap).map_err(|e| e.to_string())? {
                    TlsStep::Response(r) => Ok(Step::Send(r)),
                    TlsStep::Success(msk) => Ok(Step::Success(Some(msk))),
                }
            }
            (Code::Failure, _) => Ok(Step::Failure(None)),
            (Code::Request, Some(_)) => respond(EapPayload::Nak(&[EAP_TLS])),
            (code, _) => Err(format!("EAP {code:?} is not expected from the gateway")),
        }
    }
}

/// Our side of one EAP conversation inside IKE_AUTH.
pub(crate) struct EapClientSession {
    /// Message ID of our first IKE_AUTH request (its IntAuth, RFC 9242).
    first_mid: u32,
    conversation: Conversation,
    method: &'static str,
    identity: Vec<u8>,
    /// The gateway's identity, once its first AUTH verified.
    idr: Option<Identification>,
    /// EAP succeeded and our AUTH went out with this key (None: the method
    /// has no MSK, SK_pi and SK_pr are used): the last response is next.
    passed: Option<Option<Msk>>,
}

impl EapClientSession {
    /// A conversation for `auth`, started by our IKE_AUTH request `first_mid`.
    pub(crate) fn new(auth: &EapClientAuth, first_mid: u32) -> Result<Box<Self>, EapTlsError> {
        let conversation = match &auth.tls {
            Some(setup) => Conversation::Tls(Box::new(setup.session()?)),
            None => Conversation::Password(Peer::new(PeerConfig {
                identity: auth.identity.clone(),
                password: auth.password.clone(),
                methods: auth.methods.clone(),
            })),
        };
        Ok(Box::new(EapClientSession {
            first_mid,
            conversation,
            method: auth.name(),
            identity: auth.identity.clone(),
            idr: None,
            passed: None,
        }))
    }
}

/// Ends the attempt: the IKE SA closes with `why`, logged with our EAP
/// identity and method.
fn fail(sa: &mut IkeSa, session: &EapClientSession, pending: &PendingChild, why: String) {
    warn!(
        connection = %sa.config.name,
        peer = %sa.remote,
        user = %printable(&session.identity),
        method = session.method,
        "EAP authentication as client failed: {why}"
    );
    release_pending(sa, pending);
    sa.close(DownReason::Failed(format!("EAP authentication failed: {why}")));
}

/// The gateway's response did not carry what the conversation needs: its
/// error notify when there is one, else `missing`.
fn refusal(inner: &[Payload], missing: &str) -> String {
    match error_notify(inner) {
        Some(n) => format!("the gateway answered {}", n.ty),
        None => missing.to_string(),
    }
}

/// Initiator: an IKE_AUTH response while our EAP conversation runs.
pub(crate) fn handle_response(
    sa: &mut IkeSa,
    now: Instant,
    mut ctx: Box<AuthContext>,
    inner: Vec<Payload>,
    pending: PendingChild,
) {
    let Some(mut session) = ctx.eap_client.take() else {
        return;
    };
    let Some(keys) = sa.keys.as_ref() else {
        return fail(sa, &session, &pending, "no keys".into());
    };
    let prf = keys.suite.prf;
    let int_auth = ctx.int_auth.octets(session.first_mid);
    let cfg = sa.config.clone();
    if let Some(msk) = session.passed.take() {
        // The last response: the gateway's AUTH over the EAP key.
        let Some(idr) = session.idr.take() else {
            return fail(sa, &session, &pending, "the gateway's identity is unknown".into());
        };
        let octets = octets_for(&ctx.peer_init, &ctx.ni, prf, keys.sk_pr(), &idr).with_int_auth(int_auth);
        let key: &[u8] = msk.as_deref().map_or(keys.sk_pr(), |m| &m[..]);
        let verified = match responder_proof(&inner).1 {
            None => Err(refusal(&inner, "the last IKE_AUTH response has no AUTH")),
            Some((method, data)) => verify_shared_key(prf, key, method, &data, &octets),
        };
        if let Err(why) = verified {
            return fail(
                sa,
                &session,
                &pending,
                format!("gateway authentication after EAP: {why}"),
            );
        }
        return complete_initiator(sa, now, &ctx, idr, &inner, pending);
    }
    if session.idr.is_none() {
        // The first response: the gateway proves itself before EAP.
        let (Some(idr), Some((method, auth))) = responder_proof(&inner) else {
            let why = refusal(&inner, "the gateway sent no IDr or AUTH before EAP");
            return fail(sa, &session, &pending, why);
        };
        if !cfg.remote_id.matches(&idr) {
            let why = format!(
                "gateway identity {} is not acceptable ({})",
                display_identity(&idr),
                cfg.remote_id
            );
            return fail(sa, &session, &pending, why);
        }
        let octets = octets_for(&ctx.peer_init, &ctx.ni, prf, keys.sk_pr(), &idr).with_int_auth(int_auth.clone());
        if let Err(why) = verify_peer(sa, &cfg, &idr, method, &auth, &octets, &certs_of(&inner)) {
            return fail(
                sa,
                &session,
                &pending,
                format!("responder authentication failed: {why}"),
            );
        }
        info!(
            connection = %cfg.name,
            peer = %sa.remote,
            id = %display_identity(&idr),
            method = session.method,
            "gateway authenticated, EAP follows"
        );
        session.idr = Some(idr);
    }
    let eap = inner.iter().find_map(|p| match p {
        Payload::Eap(e) => Some(e.as_slice()),
        _ => None,
    });
    let Some(eap) = eap else {
        let why = refusal(&inner, "IKE_AUTH response without EAP during EAP");
        return fail(sa, &session, &pending, why);
    };
    let step = session.conversation.step(&session.identity, eap, &mut rng(sa));
    match step {
        Ok(Step::Send(response)) => {
            ctx.eap_client = Some(session);
            sa.state = State::Authenticating(ctx);
            sa.send_request(
                now,
                ExchangeType::IKE_AUTH,
                vec![Payload::Eap(response)],
                RequestKind::Auth(pending),
            );
        }
        Ok(Step::Success(msk)) => {
            let octets = octets_for(&ctx.our_init, &ctx.nr, prf, keys.sk_pi(), &cfg.local_id).with_int_auth(int_auth);
            let key: &[u8] = msk.as_deref().map_or(keys.sk_pi(), |m| &m[..]);
            let auth = Payload::Auth {
                method: AuthMethod::SHARED_KEY_MIC,
                data: crate::crypto::auth::PresharedKey::new(key).auth(prf, &octets),
            };
            info!(
                connection = %cfg.name,
                peer = %sa.remote,
                user = %printable(&session.identity),
                method = session.method,
                "EAP authentication as client succeeded"
            );
            session.passed = Some(msk);
            ctx.eap_client = Some(session);
            sa.state = State::Authenticating(ctx);
            sa.send_request(now, ExchangeType::IKE_AUTH, vec![auth], RequestKind::Auth(pending));
        }
        Ok(Step::Failure(detail)) => {
            let why = match detail {
                Some(d) => format!("the gateway refused us ({})", printable(d.as_bytes())),
                None => "the gateway refused us (EAP-Failure)".to_string(),
            };
            match error_notify(&inner).map(|n| n.ty) {
                // The refusal as the gateway notified it, as for any IKE_AUTH.
                Some(ty) => {
                    warn!(
                        connection = %sa.config.name,
                        peer = %sa.remote,
                        user = %printable(&session.identity),
                        method = session.method,
                        "EAP authentication as client failed: {why}, the gateway answered {ty}"
                    );
                    release_pending(sa, &pending);
                    sa.close(DownReason::PeerError(ty));
                }
                None => fail(sa, &session, &pending, why),
            }
        }
        Err(e) => {
            sa.ctx.eap_stats.dropped.fetch_add(1, Ordering::Relaxed);
            // Tell the gateway, as a client that gives up on EAP does.
            sa.send_request(
                now,
                ExchangeType::INFORMATIONAL,
                vec![notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())],
                RequestKind::Informational(InformationalPending::Dpd),
            );
            fail(sa, &session, &pending, format!("dropped the gateway's EAP packet: {e}"));
        }
    }
}

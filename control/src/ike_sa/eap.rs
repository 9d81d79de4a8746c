//! EAP inside IKE_AUTH, responder side (RFC 7296 §2.16, RFC 5998).
//!
//! The first IKE_AUTH request carries IDi but no AUTH: we answer with IDr,
//! our certificate (or PSK) AUTH and the first EAP Request (with RFC 5998
//! EAP-only authentication, when both sides allow it, without our AUTH).
//! EAP Requests and Responses then ride in IKE_AUTH exchanges until EAP
//! Success; the last exchange carries both AUTH payloads, computed with the
//! MSK (or SK_pi/SK_pr for a method without one), and the first CHILD_SA.
//!
//! The EAP server runs either here, against the context's local users
//! ([`EapBackend::Local`]), or in the driver ([`EapBackend::Relay`]): the
//! SA emits [`Event::EapRelay`] and returns; the driver's back end (RADIUS,
//! on its own thread) answers later through [`IkeSa::eap_backend_reply`].
//! Retransmissions of the request being worked on are dropped meanwhile.
//! EAP packets that do not fit the conversation are dropped and counted in
//! [`EapStats`], as RFC 3748 §4 wants: the session is not disturbed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::auth::{establish_responder, octets_for, our_auth, refuse, verify_shared_key};
use super::{AuthContext, DownReason, Event, IkeSa, State, find_notify};
use crate::config::{AuthConfig, ConnectionConfig, EapAuth, EapBackend, EapIdentity, display_identity};
use crate::eap::tls::{EapTlsError, EapTlsServer, ServerStep};
use crate::eap::{
    Authenticator, AuthenticatorConfig, AuthenticatorStep, Code, MAX_IDENTITY_LEN, Msk, Payload as EapPayload,
    RngFailure,
};
use crate::wire::ikev2::{ExchangeType, Identification, NotifyType, Payload};

/// EAP methods as metrics count them.
pub const METHOD_NAMES: [&str; 4] = ["eap-mschapv2", "eap-md5", "eap-radius", "eap-tls"];

/// EAP outcomes by method (indexes of [`METHOD_NAMES`]) and EAP packets
/// dropped; shared by the SAs of a context and read by the driver's metrics.
#[derive(Debug, Default)]
pub struct EapStats {
    /// Peers that passed EAP, by method.
    pub successes: [AtomicU64; METHOD_NAMES.len()],
    /// Peers refused by EAP, by method.
    pub failures: [AtomicU64; METHOD_NAMES.len()],
    /// EAP packets dropped: malformed, unexpected in the conversation's
    /// state, or arriving while the back end has not answered.
    pub dropped: AtomicU64,
}

impl EapStats {
    fn count(counters: &[AtomicU64], method: &str) {
        if let Some(i) = METHOD_NAMES.iter().position(|m| *m == method) {
            counters[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A peer's EAP packet for the driver's back end.
#[derive(Debug)]
pub struct EapRelay {
    /// The IKE SA (initiator SPI, responder SPI).
    pub spis: (u64, u64),
    /// The connection.
    pub connection: String,
    /// The EAP identity (RADIUS User-Name).
    pub identity: Vec<u8>,
    /// The EAP Response to relay (RADIUS EAP-Message).
    pub eap: Vec<u8>,
    /// What the back end asked to see again with the next packet (RADIUS State).
    pub state: Vec<u8>,
    /// The peer's address (RADIUS Calling-Station-Id).
    pub peer: std::net::SocketAddr,
}

/// A peer that passed EAP, with what the back end said about its session.
#[derive(Debug, Clone)]
pub struct EapAuthenticated {
    /// The IKE SA (initiator SPI, responder SPI).
    pub spis: (u64, u64),
    /// The EAP identity.
    pub identity: Vec<u8>,
    /// The method (one of [`METHOD_NAMES`]).
    pub method: &'static str,
    /// RADIUS Class attributes, echoed in accounting.
    pub class: Vec<Vec<u8>>,
    /// RADIUS Session-Timeout: the IKE SA ends then.
    pub session_timeout: Option<Duration>,
    /// RADIUS Acct-Interim-Interval: how often accounting reports usage.
    pub interim_interval: Option<Duration>,
}

/// The back end's answer to an [`EapRelay`].
#[non_exhaustive]
pub enum EapBackendReply {
    /// Send this EAP Request to the peer; hand `state` back with the next Response.
    Challenge {
        /// The EAP Request.
        eap: Vec<u8>,
        /// The RADIUS State.
        state: Vec<u8>,
    },
    /// The peer is authenticated.
    Accept {
        /// The EAP Success to send (one is made when the back end sent none).
        eap: Option<Vec<u8>>,
        /// The MSK (RADIUS MS-MPPE-Recv-Key || MS-MPPE-Send-Key).
        msk: Option<Msk>,
        /// RADIUS Session-Timeout.
        session_timeout: Option<Duration>,
        /// RADIUS Class attributes.
        class: Vec<Vec<u8>>,
        /// RADIUS Framed-IP-Address: the peer's virtual IP, before the pools.
        framed_ip: Option<std::net::IpAddr>,
        /// RADIUS Framed-Pool: the pool to lease the peer's virtual IP
        /// from instead of the connection's.
        framed_pool: Option<String>,
        /// RADIUS Acct-Interim-Interval.
        interim_interval: Option<Duration>,
    },
    /// The peer is refused (or the back end could not be reached).
    Reject {
        /// The EAP Failure to send (one is made when the back end sent none).
        eap: Option<Vec<u8>>,
        /// Why, for the log line.
        reason: String,
    },
}

impl std::fmt::Debug for EapBackendReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EapBackendReply::Challenge { eap, .. } => write!(f, "Challenge({} bytes)", eap.len()),
            EapBackendReply::Accept { msk, .. } => write!(f, "Accept(msk: {})", msk.is_some()),
            EapBackendReply::Reject { reason, .. } => write!(f, "Reject({reason})"),
        }
    }
}

/// Where the EAP server of a session runs.
enum Server {
    Local(Box<Authenticator>),
    /// Relayed: the identifier of the Request the peer must answer, the
    /// identity (empty until the EAP-Identity Response) and the back end's state.
    Relay {
        identifier: u8,
        identity: Vec<u8>,
        state: Vec<u8>,
        /// Set when the back end's last Request was an MSCHAPv2 Failure:
        /// a client that aborts then was refused by the back end.
        refused: bool,
    },
    /// EAP-TLS here: `identity` is empty until the EAP-Identity Response
    /// to the Request numbered `identifier` arrived; then the TLS
    /// conversation runs.
    Tls {
        tls: Box<EapTlsServer>,
        identifier: u8,
        identity: Vec<u8>,
    },
}

/// EAP succeeded; the final AUTH exchange is next.
struct Passed {
    msk: Option<Msk>,
    session_timeout: Option<Duration>,
}

/// One EAP conversation inside IKE_AUTH.
pub(crate) struct EapSession {
    /// Message ID of the first IKE_AUTH request (its IntAuth, RFC 9242).
    first_mid: u32,
    /// IDi of the request that started EAP: the initiator's AUTH covers it.
    idi: Identification,
    /// The identity of the IKE SA's peer: `idi`, or that of the first
    /// round of RFC 4739.
    peer_id: Identification,
    /// The first request's payloads: its child proposal is answered last.
    first_request: Vec<Payload>,
    /// RFC 5998: no AUTH of ours until EAP produced an MSK.
    eap_only: bool,
    method: &'static str,
    server: Server,
    /// The request the back end is working on, and what our answer to it
    /// starts with (IDr, CERT, AUTH when it is the first).
    waiting: Option<(u32, Vec<Payload>)>,
    passed: Option<Passed>,
}

pub(super) fn rng(sa: &IkeSa) -> impl FnMut(&mut [u8]) -> Result<(), RngFailure> + '_ {
    move |buf: &mut [u8]| sa.ctx.crypto.fill_random(buf).map_err(|_| RngFailure)
}

fn eap_auth(cfg: &ConnectionConfig) -> Option<&Arc<EapAuth>> {
    match &cfg.remote_auth {
        AuthConfig::Eap(e) => Some(e),
        _ => None,
    }
}

/// A peer-chosen identity as a log field: control characters escaped, so
/// that a user name cannot forge log lines.
pub(super) fn printable(identity: &[u8]) -> String {
    String::from_utf8_lossy(identity).escape_debug().to_string()
}

/// The one log line and the counter of a refused user.
fn log_failure(sa: &IkeSa, method: &'static str, identity: &[u8], reason: &dyn std::fmt::Display) {
    EapStats::count(&sa.ctx.eap_stats.failures, method);
    warn!(
        connection = %sa.config.name,
        peer = %sa.remote,
        user = %printable(identity),
        method,
        "EAP authentication failed: {reason}"
    );
}

fn dropped(sa: &IkeSa, why: &dyn std::fmt::Display) {
    sa.ctx.eap_stats.dropped.fetch_add(1, Ordering::Relaxed);
    debug!(peer = %sa.remote, "dropping EAP packet: {why}");
}

/// The first round of an RFC 4739 exchange (certificate or PSK) passed; EAP
/// is the second.
pub(crate) struct FirstRound {
    /// Message ID of the first IKE_AUTH request.
    pub mid: u32,
    /// The identity the first round authenticated (the IKE SA's peer).
    pub idi: Identification,
    /// The first request's payloads: its child proposal is answered last.
    pub request: Vec<Payload>,
}

/// Responder: the IKE_AUTH request that starts EAP (IDi without AUTH) for
/// connection `cfg`: the first one, or the second round's after
/// `first_round` (RFC 4739; our IDr and AUTH went with the first round).
pub(crate) fn start(
    sa: &mut IkeSa,
    mut ctx: Box<AuthContext>,
    cfg: Arc<ConnectionConfig>,
    mid: u32,
    idi: Identification,
    inner: Vec<Payload>,
    first_round: Option<Box<FirstRound>>,
) {
    let eap = match &first_round {
        None => eap_auth(&cfg).cloned(),
        Some(_) => cfg.remote_auth2.clone(),
    };
    let (Some(eap), Some(prf)) = (eap, sa.keys.as_ref().map(|k| k.suite.prf)) else {
        return refuse(sa, mid, None, "EAP without an EAP configuration or keys".into());
    };
    let method = eap.name();
    let eap_only =
        first_round.is_none() && eap.eap_only && find_notify(&inner, NotifyType::EAP_ONLY_AUTHENTICATION).is_some();
    let mut prefix = Vec::new();
    if first_round.is_none() {
        super::handshake::note_auth_hints(sa, &inner);
        prefix.push(Payload::IdR(cfg.local_id.clone()));
    }
    if first_round.is_none() && !eap_only {
        let Some(keys) = sa.keys.as_ref() else {
            return refuse(sa, mid, None, "no keys".into());
        };
        let octets = octets_for(&ctx.our_init, &ctx.ni, prf, keys.sk_pr(), &cfg.local_id)
            .with_int_auth(ctx.int_auth.octets(mid));
        match our_auth(sa, &cfg, &octets) {
            Ok((certs, auth)) => {
                prefix.extend(certs);
                prefix.push(auth);
            }
            Err(e) => {
                warn!(connection = %cfg.name, "{e}");
                return refuse(sa, mid, None, e);
            }
        }
    }
    let ike_identity = (eap.eap_id == EapIdentity::Ike).then_some(idi.data.as_slice());
    if ike_identity.is_some_and(|id| id.is_empty() || id.len() > MAX_IDENTITY_LEN) {
        let why = format!("IKE identity of {} bytes cannot be an EAP identity", idi.data.len());
        log_failure(sa, method, b"", &why);
        return refuse(sa, mid, None, why);
    }
    let mut first_id = [0u8; 1];
    if rng(sa)(&mut first_id).is_err() {
        return refuse(sa, mid, None, "random number generator failed".into());
    }
    let (server, first) = match &eap.backend {
        EapBackend::Local(methods) => {
            let Some(users) = sa.ctx.eap_users.clone() else {
                let why = "no local EAP users are configured".to_string();
                log_failure(sa, method, ike_identity.unwrap_or_default(), &why);
                return refuse(sa, mid, None, why);
            };
            let config = AuthenticatorConfig {
                methods: methods.clone(),
                server_name: b"ironsa".to_vec(),
            };
            let started = Authenticator::start(config, ike_identity, &*users, &mut rng(sa));
            match started {
                Ok((a, request)) => (Server::Local(Box::new(a)), Some(request)),
                Err(e) => {
                    log_failure(sa, method, ike_identity.unwrap_or_default(), &e);
                    return refuse(sa, mid, None, format!("EAP: {e}"));
                }
            }
        }
        EapBackend::Tls(setup) => {
            let mut tls = match setup.session() {
                Ok(t) => Box::new(t),
                Err(e) => {
                    log_failure(sa, method, ike_identity.unwrap_or_default(), &e);
                    return refuse(sa, mid, None, format!("EAP-TLS: {e}"));
                }
            };
            let first = match ike_identity {
                // The IKE identity stands in for EAP-Identity: TLS starts at once.
                Some(_) => tls.start(first_id[0]),
                None => Ok(identity_request(first_id[0])),
            };
            match first {
                Ok(request) => (
                    Server::Tls {
                        tls,
                        identifier: first_id[0],
                        identity: ike_identity.map(<[u8]>::to_vec).unwrap_or_default(),
                    },
                    Some(request),
                ),
                Err(e) => {
                    log_failure(sa, method, ike_identity.unwrap_or_default(), &e);
                    return refuse(sa, mid, None, format!("EAP-TLS: {e}"));
                }
            }
        }
        EapBackend::Relay => match ike_identity {
            // Ask for the identity here; the back end sees its Response.
            None => (
                Server::Relay {
                    identifier: first_id[0],
                    identity: Vec::new(),
                    state: Vec::new(),
                    refused: false,
                },
                Some(identity_request(first_id[0])),
            ),
            // The IKE identity stands in for an EAP-Identity Response.
            Some(id) => (
                Server::Relay {
                    identifier: first_id[0],
                    identity: id.to_vec(),
                    state: Vec::new(),
                    refused: false,
                },
                None,
            ),
        },
    };
    info!(
        connection = %cfg.name,
        peer = %sa.remote,
        id = %display_identity(&idi),
        method,
        eap_only,
        "starting EAP authentication"
    );
    sa.config = cfg.clone();
    let (first_mid, peer_id, first_request) = match first_round {
        None => (mid, idi.clone(), inner),
        Some(r) => (r.mid, r.idi, r.request),
    };
    let mut session = Box::new(EapSession {
        first_mid,
        idi,
        peer_id,
        first_request,
        eap_only,
        method,
        server,
        waiting: None,
        passed: None,
    });
    match first {
        Some(request) => {
            prefix.push(Payload::Eap(request));
            ctx.eap = Some(session);
            sa.state = State::Authenticating(ctx);
            sa.send_response(ExchangeType::IKE_AUTH, mid, prefix);
        }
        None => {
            let Server::Relay {
                identifier, identity, ..
            } = &session.server
            else {
                return;
            };
            let mut response = vec![Code::Response as u8, *identifier, 0, 0, crate::eap::EapType::IDENTITY];
            response.extend_from_slice(identity);
            let len = (response.len() as u16).to_be_bytes();
            response[2..4].copy_from_slice(&len);
            let relay = EapRelay {
                spis: (sa.spi_i, sa.spi_r),
                connection: cfg.name.clone(),
                identity: identity.clone(),
                eap: response,
                state: Vec::new(),
                peer: sa.remote,
            };
            session.waiting = Some((mid, prefix));
            ctx.eap = Some(session);
            sa.state = State::Authenticating(ctx);
            sa.push_event(Event::EapRelay(Box::new(relay)));
        }
    }
}

/// An EAP-Identity Request numbered `identifier`.
fn identity_request(identifier: u8) -> Vec<u8> {
    vec![Code::Request as u8, identifier, 0, 5, crate::eap::EapType::IDENTITY]
}

/// The Identity of an EAP-Identity Response, when `eap` is one with an
/// identity of acceptable length.
fn identity_of(eap: &[u8]) -> Result<Vec<u8>, String> {
    match crate::eap::decode(eap) {
        Ok(crate::eap::Packet {
            payload: Some(EapPayload::Identity(id)),
            ..
        }) if !id.is_empty() && id.len() <= MAX_IDENTITY_LEN => Ok(id.to_vec()),
        Ok(_) => Err("expected an EAP-Identity Response with an identity".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Responder: a further IKE_AUTH request of an EAP conversation.
pub(crate) fn handle_request(sa: &mut IkeSa, now: Instant, mid: u32, inner: Vec<Payload>) {
    let State::Authenticating(mut ctx) = std::mem::replace(&mut sa.state, State::Closed) else {
        return;
    };
    let Some(mut session) = ctx.eap.take() else {
        sa.state = State::Authenticating(ctx);
        return;
    };
    if session.waiting.is_some() {
        dropped(sa, &"the back end has not answered the previous EAP packet yet");
        ctx.eap = Some(session);
        sa.state = State::Authenticating(ctx);
        return;
    }
    if let Some(passed) = session.passed.take() {
        return finish(sa, now, mid, ctx, session, passed, &inner);
    }
    let eap = inner.iter().find_map(|p| match p {
        Payload::Eap(e) => Some(e.as_slice()),
        _ => None,
    });
    let Some(eap) = eap else {
        dropped(sa, &"IKE_AUTH request without an EAP payload during EAP");
        ctx.eap = Some(session);
        sa.state = State::Authenticating(ctx);
        return;
    };
    let method = session.method;
    match &mut session.server {
        Server::Local(authenticator) => {
            let Some(users) = sa.ctx.eap_users.clone() else {
                let why = "no local EAP users are configured".to_string();
                log_failure(sa, method, authenticator.identity(), &why);
                return refuse(sa, mid, None, why);
            };
            let step = authenticator.handle(eap, &*users, &mut rng(sa));
            match step {
                Err(e) => {
                    dropped(sa, &e);
                    ctx.eap = Some(session);
                    sa.state = State::Authenticating(ctx);
                }
                Ok(AuthenticatorStep::Send(request)) => {
                    ctx.eap = Some(session);
                    sa.state = State::Authenticating(ctx);
                    sa.send_response(ExchangeType::IKE_AUTH, mid, vec![Payload::Eap(request)]);
                }
                Ok(AuthenticatorStep::Success { packet, identity, msk }) => {
                    // A Nak may have moved to EAP-MD5.
                    let method = match msk {
                        None => "eap-md5",
                        Some(_) => method,
                    };
                    session.method = method;
                    let outcome = Outcome {
                        identity,
                        msk,
                        session_timeout: None,
                        class: Vec::new(),
                        interim_interval: None,
                    };
                    passed(sa, mid, ctx, session, Vec::new(), packet, outcome);
                }
                Ok(AuthenticatorStep::Failure {
                    packet,
                    identity,
                    reason,
                }) => {
                    log_failure(sa, method, &identity, &reason);
                    refuse(sa, mid, Some(packet), format!("EAP authentication failed: {reason}"));
                }
            }
        }
        Server::Tls {
            tls,
            identifier,
            identity,
        } => {
            if identity.is_empty() {
                // The Response to our EAP-Identity Request starts TLS.
                let id = check_response(eap, *identifier).and_then(|()| identity_of(eap));
                let request = match id {
                    Ok(id) => {
                        *identity = id;
                        tls.start(identifier.wrapping_add(1))
                    }
                    Err(why) => {
                        dropped(sa, &why);
                        ctx.eap = Some(session);
                        sa.state = State::Authenticating(ctx);
                        return;
                    }
                };
                return match request {
                    Ok(request) => {
                        ctx.eap = Some(session);
                        sa.state = State::Authenticating(ctx);
                        sa.send_response(ExchangeType::IKE_AUTH, mid, vec![Payload::Eap(request)]);
                    }
                    Err(e) => {
                        let identity = identity.clone();
                        log_failure(sa, method, &identity, &e);
                        refuse(sa, mid, Some(failure_packet(eap)), format!("EAP-TLS: {e}"));
                    }
                };
            }
            if eap.len() > 4 && eap[0] == Code::Response as u8 && eap[4] == crate::eap::EapType::NAK {
                let identity = identity.clone();
                let why = "the client refused EAP-TLS (Nak)";
                log_failure(sa, method, &identity, &why);
                return refuse(
                    sa,
                    mid,
                    Some(failure_packet(eap)),
                    format!("EAP authentication failed: {why}"),
                );
            }
            match tls.handle(eap) {
                Ok(ServerStep::Request(request)) => {
                    ctx.eap = Some(session);
                    sa.state = State::Authenticating(ctx);
                    sa.send_response(ExchangeType::IKE_AUTH, mid, vec![Payload::Eap(request)]);
                }
                Ok(ServerStep::Success {
                    packet,
                    msk,
                    peer_certificates,
                }) => {
                    let identity = identity.clone();
                    if let Err(why) = certificate_names(&peer_certificates, &session.idi) {
                        log_failure(sa, method, &identity, &why);
                        let failure = vec![Code::Failure as u8, packet.get(1).copied().unwrap_or(0), 0, 4];
                        return refuse(sa, mid, Some(failure), format!("EAP authentication failed: {why}"));
                    }
                    let outcome = Outcome {
                        identity,
                        msk: Some(msk),
                        session_timeout: None,
                        interim_interval: None,
                        class: Vec::new(),
                    };
                    passed(sa, mid, ctx, session, Vec::new(), packet, outcome);
                }
                // Not part of this conversation: dropped, the session goes on.
                Err(e @ (EapTlsError::Malformed(_) | EapTlsError::Unexpected(_))) => {
                    dropped(sa, &e);
                    ctx.eap = Some(session);
                    sa.state = State::Authenticating(ctx);
                }
                // The handshake failed (an untrusted certificate, a TLS
                // alert, a message over the size bound): refused.
                Err(e) => {
                    let identity = identity.clone();
                    log_failure(sa, method, &identity, &e);
                    refuse(
                        sa,
                        mid,
                        Some(failure_packet(eap)),
                        format!("EAP authentication failed: {e}"),
                    );
                }
            }
        }
        Server::Relay {
            identifier,
            identity,
            state,
            ..
        } => {
            if let Err(why) = check_response(eap, *identifier) {
                dropped(sa, &why);
                ctx.eap = Some(session);
                sa.state = State::Authenticating(ctx);
                return;
            }
            if identity.is_empty() {
                // The Response to our EAP-Identity Request.
                match identity_of(eap) {
                    Ok(id) => *identity = id,
                    Err(why) => {
                        dropped(sa, &why);
                        ctx.eap = Some(session);
                        sa.state = State::Authenticating(ctx);
                        return;
                    }
                }
            }
            let relay = EapRelay {
                spis: (sa.spi_i, sa.spi_r),
                connection: sa.config.name.clone(),
                identity: identity.clone(),
                eap: eap.to_vec(),
                state: state.clone(),
                peer: sa.remote,
            };
            session.waiting = Some((mid, Vec::new()));
            ctx.eap = Some(session);
            sa.state = State::Authenticating(ctx);
            sa.push_event(Event::EapRelay(Box::new(relay)));
        }
    }
}

/// Responder: an INFORMATIONAL request during EAP. Clients abort EAP this
/// way (strongSwan answers an MSCHAPv2 Failure Request with
/// AUTHENTICATION_FAILED rather than acknowledging it); a DELETE ends the
/// attempt too. Anything else is answered and the conversation goes on.
pub(crate) fn handle_informational(sa: &mut IkeSa, mid: u32, inner: Vec<Payload>) {
    let aborted = find_notify(&inner, NotifyType::AUTHENTICATION_FAILED).is_some();
    let deleted = inner.iter().any(|p| matches!(p, Payload::Delete(_)));
    sa.send_response(ExchangeType::INFORMATIONAL, mid, Vec::new());
    if !aborted && !deleted {
        return;
    }
    let State::Authenticating(ctx) = &sa.state else { return };
    let Some(session) = ctx.eap.as_ref() else { return };
    let method = session.method;
    let (identity, reason) = match &session.server {
        Server::Local(a) => (
            a.identity().to_vec(),
            match a.pending_failure() {
                Some(r) => r.to_string(),
                None => "the client gave up".to_string(),
            },
        ),
        Server::Tls { identity, .. } => (identity.clone(), "the client gave up".to_string()),
        Server::Relay { identity, refused, .. } => (
            identity.clone(),
            if *refused {
                "the RADIUS server refused the password".to_string()
            } else {
                "the client gave up".to_string()
            },
        ),
    };
    let reason = if aborted {
        format!("{reason} (the client sent AUTHENTICATION_FAILED)")
    } else {
        format!("{reason} (the client deleted the IKE SA)")
    };
    log_failure(sa, method, &identity, &reason);
    sa.close(DownReason::Failed(format!("EAP authentication failed: {reason}")));
}

/// An EAP-Failure answering the Response `eap`.
fn failure_packet(eap: &[u8]) -> Vec<u8> {
    vec![Code::Failure as u8, eap.get(1).copied().unwrap_or(0), 0, 4]
}

/// EAP-TLS verified the chain; the end-entity certificate must also name
/// the IKE identity the SA will be known by, as a certificate AUTH would.
fn certificate_names(chain: &[Vec<u8>], idi: &Identification) -> Result<(), String> {
    let ee = chain.first().ok_or("the client sent no certificate")?;
    let ee = crate::pki::Certificate::from_der(ee).map_err(|e| format!("client certificate: {e}"))?;
    if ee.matches_identity(idi) {
        Ok(())
    } else {
        Err(format!(
            "identity {} is not in the client certificate of '{}'",
            display_identity(idi),
            ee.subject()
        ))
    }
}

/// A relayed packet must be a whole EAP Response to the outstanding Request.
fn check_response(eap: &[u8], identifier: u8) -> Result<(), String> {
    if eap.len() < 5 {
        return Err(format!("EAP packet of {} bytes is too short", eap.len()));
    }
    let len = usize::from(u16::from_be_bytes([eap[2], eap[3]]));
    if len != eap.len() {
        return Err(format!("EAP Length {len} but {} bytes", eap.len()));
    }
    if eap[0] != Code::Response as u8 {
        return Err(format!("EAP code {} where a Response is expected", eap[0]));
    }
    if eap[1] != identifier {
        return Err(format!(
            "EAP Response identifier {} does not match the Request's {identifier}",
            eap[1]
        ));
    }
    Ok(())
}

/// What a successful EAP conversation yields.
struct Outcome {
    identity: Vec<u8>,
    msk: Option<Msk>,
    session_timeout: Option<Duration>,
    class: Vec<Vec<u8>>,
    interim_interval: Option<Duration>,
}

/// EAP succeeded: sends the EAP Success (after `prefix`: IDr and our AUTH
/// when this answers the first request) and waits for the final AUTH.
fn passed(
    sa: &mut IkeSa,
    mid: u32,
    mut ctx: Box<AuthContext>,
    mut session: Box<EapSession>,
    mut prefix: Vec<Payload>,
    packet: Vec<u8>,
    outcome: Outcome,
) {
    let Outcome {
        identity,
        msk,
        session_timeout,
        class,
        interim_interval,
    } = outcome;
    let method = session.method;
    if session.eap_only && msk.is_none() {
        let why = "EAP-only authentication needs a method with an MSK".to_string();
        log_failure(sa, method, &identity, &why);
        let failure = vec![Code::Failure as u8, packet.get(1).copied().unwrap_or(0), 0, 4];
        return refuse(sa, mid, Some(failure), why);
    }
    EapStats::count(&sa.ctx.eap_stats.successes, method);
    info!(
        connection = %sa.config.name,
        peer = %sa.remote,
        user = %printable(&identity),
        method,
        "EAP authentication succeeded"
    );
    sa.push_event(Event::EapAuthenticated(Box::new(EapAuthenticated {
        spis: (sa.spi_i, sa.spi_r),
        identity,
        method,
        class,
        session_timeout,
        interim_interval,
    })));
    session.passed = Some(Passed { msk, session_timeout });
    ctx.eap = Some(session);
    sa.state = State::Authenticating(ctx);
    prefix.push(Payload::Eap(packet));
    sa.send_response(ExchangeType::IKE_AUTH, mid, prefix);
}

/// The last IKE_AUTH exchange: both AUTH payloads over the MSK, then the
/// first CHILD_SA of the first request.
fn finish(
    sa: &mut IkeSa,
    now: Instant,
    mid: u32,
    ctx: Box<AuthContext>,
    session: Box<EapSession>,
    passed: Passed,
    inner: &[Payload],
) {
    let Some(keys) = sa.keys.as_ref() else {
        return refuse(sa, mid, None, "no keys".into());
    };
    let prf = keys.suite.prf;
    let auth = inner.iter().find_map(|p| match p {
        Payload::Auth { method, data } => Some((*method, data.as_slice())),
        _ => None,
    });
    let int_auth = ctx.int_auth.octets(session.first_mid);
    let theirs = octets_for(&ctx.peer_init, &ctx.nr, prf, keys.sk_pi(), &session.idi).with_int_auth(int_auth.clone());
    let key_i: &[u8] = passed.msk.as_deref().map_or(keys.sk_pi(), |m| &m[..]);
    let verified = match auth {
        None => Err("final IKE_AUTH request without AUTH".to_string()),
        Some((method, data)) => verify_shared_key(prf, key_i, method, data, &theirs),
    };
    if let Err(why) = verified {
        warn!(
            connection = %sa.config.name,
            peer = %sa.remote,
            id = %display_identity(&session.idi),
            "initiator authentication after EAP failed: {why}"
        );
        return refuse(sa, mid, None, format!("initiator authentication failed: {why}"));
    }
    let ours = octets_for(&ctx.our_init, &ctx.ni, prf, keys.sk_pr(), &sa.config.local_id).with_int_auth(int_auth);
    let key_r: &[u8] = passed.msk.as_deref().map_or(keys.sk_pr(), |m| &m[..]);
    let our_auth = Payload::Auth {
        method: crate::wire::ikev2::AuthMethod::SHARED_KEY_MIC,
        data: crate::crypto::auth::PresharedKey::new(key_r).auth(prf, &ours),
    };
    let initial_contact = find_notify(&session.first_request, NotifyType::INITIAL_CONTACT).is_some();
    let mut response = vec![our_auth];
    response.extend(establish_responder(
        sa,
        now,
        &ctx,
        session.peer_id.clone(),
        initial_contact,
        &session.first_request,
    ));
    if let Some(t) = passed.session_timeout {
        sa.limit_session(now, t);
    }
    sa.send_response(ExchangeType::IKE_AUTH, mid, response);
}

impl IkeSa {
    /// Hands the back end's answer to the EAP packet this SA relayed
    /// ([`Event::EapRelay`]). Returns false when the SA no longer waits
    /// for one (it timed out or was closed meanwhile).
    pub fn eap_backend_reply(&mut self, _now: Instant, reply: EapBackendReply) -> bool {
        // Only relayed sessions wait; checked first, so that what follows
        // cannot leave the SA half taken apart.
        let waiting = matches!(&self.state, State::Authenticating(c)
            if c.eap.as_ref().is_some_and(|s| s.waiting.is_some() && matches!(s.server, Server::Relay { .. })));
        if !waiting {
            return false;
        }
        let State::Authenticating(mut ctx) = std::mem::replace(&mut self.state, State::Closed) else {
            return false;
        };
        let Some(mut session) = ctx.eap.take() else {
            return false;
        };
        let Some((mid, mut response)) = session.waiting.take() else {
            return false;
        };
        let method = session.method;
        let Server::Relay {
            identifier, identity, ..
        } = &mut session.server
        else {
            return false;
        };
        let identity = identity.clone();
        let last = *identifier;
        match reply {
            EapBackendReply::Challenge { eap, state } => {
                if eap.len() < 4 || eap[0] != Code::Request as u8 {
                    let why = "the back end sent an EAP packet that is not a Request";
                    log_failure(self, method, &identity, &why);
                    let failure = vec![Code::Failure as u8, last, 0, 4];
                    refuse(self, mid, Some(failure), why.to_string());
                    return true;
                }
                if let Server::Relay {
                    identifier,
                    state: s,
                    refused,
                    ..
                } = &mut session.server
                {
                    *identifier = eap[1];
                    *s = state;
                    // EAP-MSCHAPv2 (26) Failure (4): the password was wrong.
                    *refused = eap.len() > 5 && eap[4] == crate::eap::EapType::MSCHAPV2 && eap[5] == 4;
                }
                response.push(Payload::Eap(eap));
                ctx.eap = Some(session);
                self.state = State::Authenticating(ctx);
                self.send_response(ExchangeType::IKE_AUTH, mid, response);
            }
            EapBackendReply::Accept {
                eap,
                msk,
                session_timeout,
                class,
                framed_ip,
                framed_pool,
                interim_interval,
            } => {
                if let Some(addr) = framed_ip {
                    self.set_aaa_address(addr);
                }
                if let Some(pool) = framed_pool {
                    self.set_aaa_pool(pool);
                }
                let packet = eap
                    .filter(|e| e.first() == Some(&(Code::Success as u8)))
                    .unwrap_or_else(|| vec![Code::Success as u8, last, 0, 4]);
                let outcome = Outcome {
                    identity,
                    msk,
                    session_timeout,
                    class,
                    interim_interval,
                };
                passed(self, mid, ctx, session, response, packet, outcome);
            }
            EapBackendReply::Reject { eap, reason } => {
                log_failure(self, method, &identity, &reason);
                let packet = eap
                    .filter(|e| e.first() == Some(&(Code::Failure as u8)))
                    .unwrap_or_else(|| vec![Code::Failure as u8, last, 0, 4]);
                refuse(self, mid, Some(packet), format!("EAP authentication failed: {reason}"));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn user_names_cannot_forge_log_lines() {
        assert_eq!(printable(b"alice"), "alice");
        assert_eq!(printable(b"al\nice INFO x"), "al\\nice INFO x");
        assert_eq!(printable(b"\x1b[31m\xff"), "\\u{1b}[31m\u{fffd}");
    }
}

//! The IKE_AUTH exchange (RFC 7296 §1.2, §2.15): authentication of both
//! peers and the first CHILD_SA.

use std::time::Instant;

use tracing::{error, info, warn};

use super::create_child::{self, ChildRequest};
use super::ppk;
use super::{AuthContext, DownReason, Event, IkeSa, RequestKind, State, Task, find_notify, notify, schedule};
use crate::config::{AuthConfig, ConnectionConfig, display_identity};
use crate::crypto::auth::SignedOctets;
use crate::pki::{certreq_hashes, sign_auth, trusted_peer_certificate, verify_auth};
use crate::wire::ikev2::{AuthMethod, CertEncoding, ExchangeType, Identification, NotifyType, Payload};

/// The first child proposed in our IKE_AUTH request, and what our request
/// did with a PPK.
pub(crate) struct PendingChild {
    pub request: Option<ChildRequest>,
    /// We sent PPK_IDENTITY.
    pub ppk_sent: bool,
    /// The keys without the PPK, kept when the PPK is optional.
    pub plain: Option<Box<ppk::PlainKeys>>,
}

/// The octets an AUTH covers: `real_message`, `nonce`, prf(`sk_p`, body of the ID payload `id`).
pub(crate) fn octets_for<'a>(
    real_message: &'a [u8],
    nonce: &'a [u8],
    prf: crate::crypto::PrfAlg,
    sk_p: &[u8],
    id: &Identification,
) -> SignedOctets<'a> {
    SignedOctets::new(real_message, nonce, prf, sk_p, id.id_type.0, &id.data)
}

/// Our CERT payloads and AUTH payload over `octets`.
pub(crate) fn our_auth(
    sa: &IkeSa,
    cfg: &ConnectionConfig,
    octets: &SignedOctets<'_>,
) -> Result<(Vec<Payload>, Payload), String> {
    let prf = sa.keys.as_ref().ok_or("no keys")?.suite.prf;
    match &cfg.local_auth {
        AuthConfig::Psk(k) => Ok((
            Vec::new(),
            Payload::Auth {
                method: AuthMethod::SHARED_KEY_MIC,
                data: k.auth(prf, octets),
            },
        )),
        AuthConfig::Cert(c) => {
            let (method, data) = sign_auth(&c.key, &*sa.ctx.crypto, &octets.to_vec(), sa.peer_sig_hashes())
                .map_err(|e| format!("cannot sign AUTH: {e}"))?;
            let certs = c
                .chain
                .iter()
                .map(|cert| Payload::Cert {
                    encoding: CertEncoding::X509_SIGNATURE,
                    data: cert.der().to_vec(),
                })
                .collect();
            Ok((certs, Payload::Auth { method, data }))
        }
        AuthConfig::PubKey(_) => Err(format!(
            "connection '{}': local auth cannot be 'pubkey' without a certificate",
            cfg.name
        )),
        AuthConfig::Eap(_) => Err(format!(
            "connection '{}': local auth cannot be a gateway's EAP method",
            cfg.name
        )),
        AuthConfig::EapClient(_) => Err(format!(
            "connection '{}': with EAP our AUTH is computed over the EAP key, after EAP",
            cfg.name
        )),
    }
}

/// Answers the IKE_AUTH request `mid` with AUTHENTICATION_FAILED (after
/// an EAP Failure when there is one to send) and closes the SA.
pub(crate) fn refuse(sa: &mut IkeSa, mid: u32, eap: Option<Vec<u8>>, why: String) {
    let mut response = Vec::new();
    if let Some(e) = eap {
        response.push(Payload::Eap(e));
    }
    response.push(notify(NotifyType::AUTHENTICATION_FAILED, Vec::new()));
    sa.send_response(ExchangeType::IKE_AUTH, mid, response);
    sa.close(DownReason::Failed(why));
}

/// Checks a shared-key AUTH computed with `key` (an EAP MSK, or SK_pi when
/// the EAP method has none).
pub(crate) fn verify_shared_key(
    prf: crate::crypto::PrfAlg,
    key: &[u8],
    method: AuthMethod,
    data: &[u8],
    octets: &SignedOctets<'_>,
) -> Result<(), String> {
    if method != AuthMethod::SHARED_KEY_MIC {
        return Err(format!(
            "peer used {method} after EAP, where a shared-key AUTH is expected"
        ));
    }
    if crate::crypto::auth::PresharedKey::new(key).verify(prf, octets, data) {
        Ok(())
    } else {
        Err("AUTH over the EAP key does not verify".into())
    }
}

/// Checks the peer's AUTH payload (and certificate chain) against what `cfg` requires.
pub(crate) fn verify_peer(
    sa: &IkeSa,
    cfg: &ConnectionConfig,
    id: &Identification,
    method: AuthMethod,
    data: &[u8],
    octets: &SignedOctets<'_>,
    certs: &[&Vec<u8>],
) -> Result<(), String> {
    let prf = sa.keys.as_ref().ok_or("no keys")?.suite.prf;
    match &cfg.remote_auth {
        AuthConfig::Psk(k) => {
            if method != AuthMethod::SHARED_KEY_MIC {
                return Err(format!(
                    "peer used {method} but the connection expects a pre-shared key"
                ));
            }
            if k.verify(prf, octets, data) {
                Ok(())
            } else {
                Err("AUTH does not verify (wrong pre-shared key?)".into())
            }
        }
        AuthConfig::PubKey(trust) => {
            if method == AuthMethod::SHARED_KEY_MIC {
                return Err("peer used a pre-shared key but the connection expects a certificate".into());
            }
            let certs: Vec<&[u8]> = certs.iter().map(|c| c.as_slice()).collect();
            let ee = trusted_peer_certificate(trust, id, &certs, sa.ctx.crypto.unix_time())?;
            verify_auth(&ee, method, data, &octets.to_vec()).map_err(|e| format!("signature does not verify: {e}"))
        }
        AuthConfig::Cert(_) | AuthConfig::EapClient(_) => {
            Err(format!("connection '{}': remote auth must be psk or pubkey", cfg.name))
        }
        AuthConfig::Eap(_) => Err("peer sent AUTH where the connection expects EAP".into()),
    }
}

pub(crate) fn certs_of(payloads: &[Payload]) -> Vec<&Vec<u8>> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Cert { encoding, data } if *encoding == CertEncoding::X509_SIGNATURE => Some(data),
            _ => None,
        })
        .collect()
}

/// Initiator: sends IKE_AUTH right after IKE_SA_INIT completed.
pub(crate) fn start(sa: &mut IkeSa, now: Instant) {
    let State::Authenticating(ctx) = &sa.state else { return };
    let cfg = sa.config.clone();
    let eap_client = match &cfg.local_auth {
        AuthConfig::EapClient(e) => Some(e.clone()),
        _ => None,
    };
    let ppk = match ppk::initiator_choice(&cfg, ctx.peer_use_ppk) {
        Ok(p) => p,
        Err(e) => {
            warn!(connection = %cfg.name, peer = %sa.remote, "{e}");
            sa.close(DownReason::Failed(e));
            return;
        }
    };
    if eap_client.is_some() && ppk.is_some() {
        let why = "a PPK with EAP authentication is not supported".to_string();
        warn!(connection = %cfg.name, peer = %sa.remote, "{why}");
        sa.close(DownReason::Failed(why));
        return;
    }
    let mut no_ppk_auth = None;
    let mut plain = None;
    if let Some(p) = ppk {
        if !p.required {
            // NO_PPK_AUTH: our AUTH as it is without the PPK.
            match initiator_auth(sa, &cfg) {
                Ok((_, Payload::Auth { data, .. })) => no_ppk_auth = Some(data),
                Ok(_) => {}
                Err(e) => {
                    warn!(connection = %cfg.name, "{e}");
                    sa.close(DownReason::Failed(e));
                    return;
                }
            }
        }
        plain = ppk::mix(sa, p).filter(|_| !p.required);
    }
    // The request that carries IDi starts EAP (its message ID is the IntAuth's).
    let eap_session = match eap_client
        .as_ref()
        .map(|e| super::eap_client::EapClientSession::new(e, sa.next_request_id))
    {
        None => None,
        Some(Ok(session)) => Some(session),
        Some(Err(err)) => {
            let why = format!("cannot start EAP: {err}");
            warn!(connection = %cfg.name, peer = %sa.remote, "{why}");
            sa.close(DownReason::Failed(why));
            return;
        }
    };
    // With EAP there is no AUTH of ours until EAP produced its key.
    let (certs, auth) = match &eap_client {
        Some(_) => (Vec::new(), None),
        None => match initiator_auth(sa, &cfg) {
            Ok((certs, auth)) => (certs, Some(auth)),
            Err(e) => {
                warn!(connection = %cfg.name, "{e}");
                sa.close(DownReason::Failed(e));
                return;
            }
        },
    };
    let mut payloads = vec![Payload::IdI(cfg.local_id.clone())];
    payloads.extend(certs);
    if let AuthConfig::PubKey(trust) = &cfg.remote_auth {
        payloads.push(Payload::CertReq {
            encoding: CertEncoding::X509_SIGNATURE,
            data: certreq_hashes(trust),
        });
    }
    if cfg.initial_contact {
        payloads.push(notify(NotifyType::INITIAL_CONTACT, Vec::new()));
    }
    if cfg.mobike {
        payloads.push(notify(NotifyType::MOBIKE_SUPPORTED, Vec::new()));
    }
    if let crate::config::IdentityMatch::Exact(idr) = &cfg.remote_id {
        payloads.push(Payload::IdR(idr.clone()));
    }
    payloads.extend(auth);
    payloads.extend(super::config_payload::request(sa));
    if let Some(p) = ppk {
        payloads.push(ppk::identity_notify(p));
    }
    if let Some(data) = no_ppk_auth {
        payloads.push(notify(NotifyType::NO_PPK_AUTH, data));
    }
    let request = match first_child(sa).map(|template| create_child::build_child_request(sa, template, None, None)) {
        None => None,
        Some(Ok(req)) => {
            payloads.extend(req.payloads.iter().cloned());
            Some(req)
        }
        Some(Err(e)) => {
            error!(connection = %sa.config.name, "cannot propose the first CHILD_SA: {e}");
            sa.close(DownReason::Failed(format!("cannot propose the first CHILD_SA: {e}")));
            return;
        }
    };
    sa.send_request(
        now,
        ExchangeType::IKE_AUTH,
        payloads,
        RequestKind::Auth(PendingChild {
            request,
            ppk_sent: ppk.is_some(),
            plain,
        }),
    );
    if let (Some(session), State::Authenticating(ctx)) = (eap_session, &mut sa.state) {
        ctx.eap_client = Some(session);
    }
}

/// Initiator: our CERT payloads and AUTH payload with the current SK_pi.
fn initiator_auth(sa: &IkeSa, cfg: &ConnectionConfig) -> Result<(Vec<Payload>, Payload), String> {
    let State::Authenticating(ctx) = &sa.state else {
        return Err("not authenticating".into());
    };
    let keys = sa.keys.as_ref().ok_or("no keys")?;
    let octets = octets_for(&ctx.our_init, &ctx.nr, keys.suite.prf, keys.sk_pi(), &cfg.local_id)
        .with_int_auth(ctx.int_auth.octets(sa.next_request_id));
    our_auth(sa, cfg, &octets)
}

/// Initiator: the child template that rides in IKE_AUTH. Children queued
/// before (an operator asked for these) go first; otherwise the first
/// template does, and the connection's other templates are queued to follow
/// with CREATE_CHILD_SA once the IKE SA is up.
fn first_child(sa: &mut IkeSa) -> Option<usize> {
    let n = sa.config.children.len();
    let tasks = &mut sa.outbox().tasks;
    if let Some(pos) = tasks.iter().position(|t| matches!(t, Task::CreateChild(_))) {
        return match tasks.remove(pos) {
            Some(Task::CreateChild(t)) if t < n => Some(t),
            _ => None,
        };
    }
    tasks.extend((1..n).map(Task::CreateChild));
    (n > 0).then_some(0)
}

/// Initiator: processes the IKE_AUTH response.
pub(crate) fn handle_response(sa: &mut IkeSa, now: Instant, inner: Vec<Payload>, mut pending: PendingChild) {
    let State::Authenticating(ctx) = std::mem::replace(&mut sa.state, State::Closed) else {
        return;
    };
    if ctx.eap_client.is_some() {
        return super::eap_client::handle_response(sa, now, ctx, inner, pending);
    }
    let peer_used_ppk = find_notify(&inner, NotifyType::PPK_IDENTITY).is_some();
    if let (true, true, Some(p)) = (pending.ppk_sent, peer_used_ppk, &sa.config.ppk) {
        info!(connection = %sa.config.name, peer = %sa.remote, ppk_id = %String::from_utf8_lossy(&p.id), "IKE SA keyed with the PPK");
    }
    if pending.ppk_sent && !peer_used_ppk {
        match pending.plain.take() {
            Some(plain) => {
                info!(connection = %sa.config.name, peer = %sa.remote, "the peer does not have our optional PPK: IKE SA keyed without it");
                ppk::restore(sa, *plain);
            }
            None if super::error_notify(&inner).is_none() => {
                let why = "the peer did not use the required PPK";
                warn!(connection = %sa.config.name, peer = %sa.remote, "IKE_AUTH failed: {why}");
                release_pending(sa, &pending);
                sa.close(DownReason::Failed(why.into()));
                return;
            }
            None => {}
        }
    }
    let (Some(idr), Some((method, auth))) = responder_proof(&inner) else {
        let why = super::error_notify(&inner).map(|n| n.ty);
        match why {
            Some(n) => warn!(connection = %sa.config.name, peer = %sa.remote, "IKE_AUTH failed: peer answered {n}"),
            None => {
                warn!(connection = %sa.config.name, peer = %sa.remote, "IKE_AUTH failed: responder sent no IDr or AUTH")
            }
        }
        release_pending(sa, &pending);
        sa.close(why.map_or(
            DownReason::Failed("IKE_AUTH response without AUTH".into()),
            DownReason::PeerError,
        ));
        return;
    };
    let cfg = sa.config.clone();
    if !cfg.remote_id.matches(&idr) {
        warn!(connection = %cfg.name, presented = %display_identity(&idr), expected = %cfg.remote_id, "responder identity not acceptable");
        release_pending(sa, &pending);
        sa.close(DownReason::Failed(format!(
            "responder identity {} not acceptable",
            display_identity(&idr)
        )));
        return;
    }
    let Some(keys) = sa.keys.as_ref() else { return };
    // IKE_AUTH was our latest request.
    let octets = octets_for(&ctx.peer_init, &ctx.ni, keys.suite.prf, keys.sk_pr(), &idr)
        .with_int_auth(ctx.int_auth.octets(sa.next_request_id.wrapping_sub(1)));
    if let Err(why) = verify_peer(sa, &cfg, &idr, method, &auth, &octets, &certs_of(&inner)) {
        warn!(connection = %cfg.name, peer = %sa.remote, id = %display_identity(&idr), method = %method, "responder authentication failed: {why}");
        release_pending(sa, &pending);
        sa.close(DownReason::Failed(format!("responder authentication failed: {why}")));
        return;
    }
    complete_initiator(sa, now, &ctx, idr, &inner, pending);
}

/// Initiator: the responder is authenticated by the last IKE_AUTH
/// response `inner`; establishes the IKE SA, takes the configuration reply
/// and the first CHILD_SA.
pub(crate) fn complete_initiator(
    sa: &mut IkeSa,
    now: Instant,
    ctx: &AuthContext,
    idr: Identification,
    inner: &[Payload],
    pending: PendingChild,
) {
    let cfg = sa.config.clone();
    sa.nat
        .set_mobike(cfg.mobike && find_notify(inner, NotifyType::MOBIKE_SUPPORTED).is_some());
    let reply = super::config_payload::parse_reply(sa, inner);
    if let Err(why) = super::config_payload::check_reply(sa, reply.as_ref(), inner) {
        // Without the address our policy needs the SA never comes up here;
        // the gateway has it, so it gets one DELETE, and the failure names
        // the gateway's notify.
        warn!(connection = %cfg.name, peer = %sa.remote, "{why}: deleting the IKE SA");
        release_pending(sa, &pending);
        let reason = match super::error_notify(inner) {
            Some(n) => DownReason::PeerError(n.ty),
            None => DownReason::Failed(why),
        };
        super::informational::start_delete_ike(sa, now);
        sa.close(reason);
        return;
    }
    establish(sa, now, idr, false);
    if let Some(got) = reply {
        super::config_payload::install_reply(sa, got);
    }
    if let Some(req) = pending.request {
        create_child::finish_child_initiator(sa, now, inner, req, &ctx.ni, &ctx.nr, None);
    }
}

/// The responder's IDr and AUTH (method, data) in an IKE_AUTH response.
pub(crate) fn responder_proof(inner: &[Payload]) -> (Option<Identification>, Option<(AuthMethod, Vec<u8>)>) {
    let idr = inner.iter().find_map(|p| match p {
        Payload::IdR(id) => Some(id.clone()),
        _ => None,
    });
    let auth = inner.iter().find_map(|p| match p {
        Payload::Auth { method, data } => Some((*method, data.clone())),
        _ => None,
    });
    (idr, auth)
}

pub(crate) fn release_pending(sa: &IkeSa, pending: &PendingChild) {
    if let Some(r) = &pending.request {
        sa.ctx.child_spis.release(r.spi_in);
    }
}

pub(crate) fn establish(sa: &mut IkeSa, now: Instant, peer_id: Identification, initial_contact: bool) {
    sa.state = State::Established(None);
    // SK_pi/SK_pr and the peer's signature hints are only for the AUTH
    // payloads, which are done (both AUTHs are computed before this).
    if let Some(k) = sa.keys.as_mut() {
        k.auth = None;
    }
    if let Some(b) = sa.scratch.as_mut() {
        b.peer_sig_hashes = Vec::new();
        b.peer_certreq = Vec::new();
    }
    sa.last_inbound = now;
    let (rekey, expire) = schedule(now, &sa.config.ike_lifetime, sa.local_spi());
    sa.rekey_at = rekey;
    sa.expire_at = expire;
    info!(
        connection = %sa.config.name,
        peer = %sa.remote,
        id = %display_identity(&peer_id),
        spi_i = format_args!("{:016x}", sa.spi_i),
        spi_r = format_args!("{:016x}", sa.spi_r),
        "IKE SA established"
    );
    sa.peer_id = Some(peer_id.clone());
    if let Some(keys) = &sa.keys {
        sa.push_event(Event::IkeSaUp {
            spis: (sa.spi_i, sa.spi_r),
            peer_id,
            suite: keys.suite,
            connection: sa.config.name.clone(),
            initial_contact,
        });
    }
}

/// Picks the connection for the initiator's identities, preferring the one chosen at IKE_SA_INIT.
/// `eap`: the initiator sent no AUTH, so only connections that authenticate
/// peers with EAP fit (and with AUTH only those that do not).
fn select_connection(
    sa: &IkeSa,
    idi: &Identification,
    idr: Option<&Identification>,
    eap: bool,
) -> Option<std::sync::Arc<ConnectionConfig>> {
    let fits = |c: &ConnectionConfig| {
        matches!(c.remote_auth, AuthConfig::Eap(_)) == eap
            && c.remote_id.matches(idi)
            && idr.is_none_or(|r| *r == c.local_id)
            && c.matches_addresses(sa.local.ip(), sa.remote.ip())
            && sa.keys.as_ref().is_some_and(|k| {
                let s = k.suite;
                c.ike_proposals.iter().any(|p| {
                    p.encr.contains(&s.encr)
                        && p.prf.contains(&s.prf)
                        && p.ke.contains(&s.ke)
                        && s.integ.is_none_or(|i| p.integ.contains(&i))
                })
            })
    };
    if fits(&sa.config) {
        return Some(sa.config.clone());
    }
    sa.ctx.connections.iter().find(|c| fits(c)).cloned()
}

/// Responder: processes the IKE_AUTH request and answers it.
pub(crate) fn handle_request(sa: &mut IkeSa, now: Instant, mid: u32, inner: Vec<Payload>) {
    if matches!(&sa.state, State::Authenticating(c) if c.eap.is_some()) {
        return super::eap::handle_request(sa, now, mid, inner);
    }
    let State::Authenticating(mut ctx) = std::mem::replace(&mut sa.state, State::Closed) else {
        return;
    };
    if let Some(first) = ctx.first_round.take() {
        return second_round(sa, ctx, first, mid, inner);
    }
    let mut idi = None;
    let mut idr = None;
    let mut auth = None;
    for p in &inner {
        match p {
            Payload::IdI(id) => idi = Some(id),
            Payload::IdR(id) => idr = Some(id),
            Payload::Auth { method, data } => auth = Some((*method, data)),
            _ => {}
        }
    }
    let Some(idi) = idi else {
        warn!(peer = %sa.remote, "IKE_AUTH request without IDi");
        refuse(sa, mid, None, "IKE_AUTH without IDi".into());
        return;
    };
    let Some((method, auth)) = auth else {
        // No AUTH: the initiator wants to authenticate with EAP.
        let Some(cfg) = select_connection(sa, idi, idr, true) else {
            warn!(peer = %sa.remote, id = %display_identity(idi), "IKE_AUTH without AUTH (EAP) but no EAP connection matches the initiator's identity");
            refuse(
                sa,
                mid,
                None,
                format!("no EAP connection for identity {}", display_identity(idi)),
            );
            return;
        };
        let idi = idi.clone();
        return super::eap::start(sa, ctx, cfg, mid, idi, inner, None);
    };
    let Some(cfg) = select_connection(sa, idi, idr, false) else {
        warn!(peer = %sa.remote, id = %display_identity(idi), "no connection matches the initiator's identity");
        refuse(
            sa,
            mid,
            None,
            format!("no connection for identity {}", display_identity(idi)),
        );
        return;
    };
    sa.config = cfg.clone();
    let (auth, used_ppk) = match ppk::responder_choice(&cfg, ctx.peer_use_ppk, &inner) {
        Ok(ppk::ResponderChoice::None) => (auth.as_slice(), None),
        Ok(ppk::ResponderChoice::Use(p)) => {
            ppk::mix(sa, p);
            (auth.as_slice(), Some(p))
        }
        Ok(ppk::ResponderChoice::NoPpkAuth(data)) => {
            info!(connection = %cfg.name, peer = %sa.remote, "the initiator's optional PPK is not ours: authenticating it with NO_PPK_AUTH, keys without a PPK");
            (data, None)
        }
        Err(why) => {
            warn!(connection = %cfg.name, peer = %sa.remote, id = %display_identity(idi), "initiator refused: {why}");
            sa.send_response(
                ExchangeType::IKE_AUTH,
                mid,
                vec![notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())],
            );
            sa.close(DownReason::Failed(why));
            return;
        }
    };
    let Some(keys) = sa.keys.as_ref() else { return };
    let prf = keys.suite.prf;
    let octets = octets_for(&ctx.peer_init, &ctx.nr, prf, keys.sk_pi(), idi).with_int_auth(ctx.int_auth.octets(mid));
    if let Err(why) = verify_peer(sa, &cfg, idi, method, auth, &octets, &certs_of(&inner)) {
        warn!(
            connection = %cfg.name,
            peer = %sa.remote,
            id = %display_identity(idi),
            method = %method,
            "initiator authentication failed: {why}"
        );
        refuse(sa, mid, None, format!("initiator authentication failed: {why}"));
        return;
    }
    let our_octets =
        octets_for(&ctx.our_init, &ctx.ni, prf, keys.sk_pr(), &cfg.local_id).with_int_auth(ctx.int_auth.octets(mid));
    super::handshake::note_auth_hints(sa, &inner);
    let (certs, our_auth) = match our_auth(sa, &cfg, &our_octets) {
        Ok(x) => x,
        Err(e) => {
            warn!(connection = %cfg.name, "{e}");
            refuse(sa, mid, None, e);
            return;
        }
    };
    let initial_contact = find_notify(&inner, NotifyType::INITIAL_CONTACT).is_some();
    let mut response = vec![Payload::IdR(cfg.local_id.clone())];
    response.extend(certs);
    response.push(our_auth);
    if let Some(p) = used_ppk {
        info!(connection = %cfg.name, peer = %sa.remote, ppk_id = %String::from_utf8_lossy(&p.id), "IKE SA keyed with the PPK");
        response.push(ppk::identity_notify(p));
    }
    if cfg.remote_auth2.is_some() {
        // RFC 4739: EAP follows in further IKE_AUTH exchanges.
        if find_notify(&inner, NotifyType::ANOTHER_AUTH_FOLLOWS).is_none() {
            warn!(
                connection = %cfg.name,
                peer = %sa.remote,
                id = %display_identity(idi),
                "initiator authentication failed: the connection requires a second (EAP) round, but the initiator announced none"
            );
            refuse(sa, mid, None, "no second authentication round".into());
            return;
        }
        let idi = idi.clone();
        let mut ctx = ctx;
        ctx.first_round = Some(Box::new(super::eap::FirstRound {
            mid,
            idi,
            request: inner,
        }));
        sa.state = State::Authenticating(ctx);
        sa.send_response(ExchangeType::IKE_AUTH, mid, response);
        return;
    }
    response.extend(establish_responder(sa, now, &ctx, idi.clone(), initial_contact, &inner));
    sa.send_response(ExchangeType::IKE_AUTH, mid, response);
}

/// Responder: the IKE_AUTH request of the second round (RFC 4739), which
/// must start EAP (IDi without AUTH).
fn second_round(
    sa: &mut IkeSa,
    ctx: Box<AuthContext>,
    first: Box<super::eap::FirstRound>,
    mid: u32,
    inner: Vec<Payload>,
) {
    let idi = inner.iter().find_map(|p| match p {
        Payload::IdI(id) => Some(id.clone()),
        _ => None,
    });
    let has_auth = inner.iter().any(|p| matches!(p, Payload::Auth { .. }));
    match idi {
        Some(idi) if !has_auth => {
            let cfg = sa.config.clone();
            super::eap::start(sa, ctx, cfg, mid, idi, inner, Some(first));
        }
        _ => {
            warn!(
                connection = %sa.config.name,
                peer = %sa.remote,
                id = %display_identity(&first.idi),
                "initiator authentication failed: the second round must be EAP (IDi without AUTH)"
            );
            refuse(sa, mid, None, "second authentication round is not EAP".into());
        }
    }
}

/// Responder: the initiator is authenticated; establishes the IKE SA and
/// answers the child proposal of the (first) IKE_AUTH request `request`.
/// Returns the child payloads of the response.
pub(crate) fn establish_responder(
    sa: &mut IkeSa,
    now: Instant,
    ctx: &AuthContext,
    idi: Identification,
    initial_contact: bool,
    request: &[Payload],
) -> Vec<Payload> {
    let mut response = Vec::new();
    if sa.config.mobike && find_notify(request, NotifyType::MOBIKE_SUPPORTED).is_some() {
        sa.nat.set_mobike(true);
        response.push(notify(NotifyType::MOBIKE_SUPPORTED, Vec::new()));
    }
    establish(sa, now, idi.clone(), initial_contact);
    let cp_reply = answer_config_request(sa, request, &idi);
    let refused = cp_reply.is_err();
    match cp_reply {
        Ok(reply) => response.extend(reply),
        Err(notify) => response.push(notify),
    }
    let has_child = request.iter().any(|p| matches!(p, Payload::Sa(_)));
    if has_child && !refused {
        let AuthContext { ni, nr, .. } = ctx;
        match create_child::respond_child(sa, now, request, ni, nr, None, None) {
            Ok(payloads) => response.extend(payloads),
            Err(n) => response.push(n),
        }
    }
    response
}

/// Responder: the CFG_REPLY for the initiator's configuration request
/// (`None` when there is nothing to answer), or the error notify that
/// refuses it: the IKE SA is authenticated all the same, but no CHILD_SA is
/// created (RFC 7296 §3.10.1), since the peer has no address to use it with.
fn answer_config_request(sa: &mut IkeSa, inner: &[Payload], idi: &Identification) -> Result<Option<Payload>, Payload> {
    let aaa = sa
        .scratch
        .as_mut()
        .map(|s| super::config_payload::AaaAssignment {
            address: s.aaa_address.take(),
            pool: s.aaa_pool.take(),
        })
        .unwrap_or_default();
    super::config_payload::respond(sa, inner, idi, aaa)
}

//! IKEv1 (RFC 2409) for legacy peers, sans-IO like [`crate::ike_sa`]: an
//! [`Ikev1Sa`] is one ISAKMP SA with its Quick Mode exchanges. It is fed
//! datagrams ([`Ikev1Sa::handle`]) and time ([`Ikev1Sa::handle_timeout`]) and
//! produces datagrams ([`Ikev1Sa::poll_transmit`]), its next deadline
//! ([`Ikev1Sa::poll_timeout`]) and the same [`Event`]s as IKEv2, so a
//! CHILD_SA negotiated by Quick Mode is installed through the same
//! `ChildSaInstalled` path. Randomness and key exchanges come from the
//! context's crypto provider.
//!
//! Phase 1 is Main Mode with pre-shared keys; Phase 2 is Quick Mode with or
//! without PFS, either side initiating. IKEv1 has no message IDs in Phase 1
//! and no request/response flag: each exchange keeps the last datagram it
//! received and sent, answers a repeated datagram with its last one, and
//! the side waiting for an answer retransmits on a timer.

mod aggressive;
pub mod auth;
pub mod endpoint;
pub mod keys;
mod nat;
pub mod proposal;
mod quick_mode;
pub mod ts;
mod xauth;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use tracing::{debug, info, warn};

use crate::config::{AuthConfig, ConnectionConfig};
use crate::crypto::{CryptoError, IkeSuite, KeyExchange, random_u32};
use crate::ike_sa::{Context, DownReason, Event, Role, Transmit};
use crate::wire::ikev2;
use crate::wire::isakmp::{
    self, ExchangeType, HEADER_LEN, Header, IdType, Identification, IsakmpCipher, IsakmpError, IvChain, NotifyType,
    Payload, PayloadType, ProtocolId, SIT_IDENTITY_ONLY, SecurityAssociation, VERSION,
};
pub use aggressive::Ikev1Policy;
pub use auth::Phase1Auth;
pub use endpoint::Ikev1Endpoint;
use keys::Phase1Keys;
pub use nat::{PeerAddresses, RFC3947_VENDOR_ID};
use proposal::Phase1Suite;
use quick_mode::QuickMode;
pub use quick_mode::{EspSaInfo, QuickModeState};
pub use xauth::XauthState;

/// Vendor ID announcing DPD support (RFC 3706 §4).
pub const DPD_VENDOR_ID: [u8; 16] = [
    0xaf, 0xca, 0xd7, 0x13, 0x68, 0xa1, 0xf1, 0xc9, 0x6b, 0x86, 0x96, 0xfc, 0x77, 0x57, 0x01, 0x00,
];

/// Length of the nonces we send.
const NONCE_LEN: usize = 32;

/// Why an IKEv1 datagram was refused or an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ikev1Error {
    /// The datagram did not decode.
    #[error("malformed ISAKMP message: {0}")]
    Wire(#[from] IsakmpError),
    /// A cryptographic operation failed (including the random source).
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// No transform of the peer's was acceptable.
    #[error("no proposal chosen: {0}")]
    NoProposalChosen(String),
    /// A HASH did not verify or the identity is not the expected one.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The traffic selectors (client IDs) are not acceptable.
    #[error("traffic selectors unacceptable: {0}")]
    TsUnacceptable(String),
    /// A payload required by the exchange is missing or wrong.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The message does not fit the state the exchange is in.
    #[error("unexpected {exchange} message in state {state}")]
    UnexpectedMessage {
        /// The exchange type.
        exchange: ExchangeType,
        /// Our state.
        state: String,
    },
    /// No connection accepts this peer with IKEv1.
    #[error("no IKEv1 connection for this peer: {0}")]
    NoConnection(String),
}

/// Main Mode states, named as operators read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MainModeState {
    /// Nothing sent or received.
    Idle,
    /// Initiator: our SA proposal is sent.
    SaSent,
    /// Responder: the peer's SA proposal is received and answered.
    SaRcvd,
    /// Initiator: our KE and nonce are sent. Responder: our KE answer is sent.
    KeSent,
    /// Initiator: the responder's KE and nonce are received.
    KeRcvd,
    /// Initiator: our identity and HASH_I are sent.
    AuthSent,
    /// Authenticated: the ISAKMP SA is established.
    Done,
}

impl fmt::Display for MainModeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MainModeState::Idle => "MM_IDLE",
            MainModeState::SaSent => "MM_SA_SENT",
            MainModeState::SaRcvd => "MM_SA_RCVD",
            MainModeState::KeSent => "MM_KE_SENT",
            MainModeState::KeRcvd => "MM_KE_RCVD",
            MainModeState::AuthSent => "MM_AUTH_SENT",
            MainModeState::Done => "MM_DONE",
        })
    }
}

/// The last datagrams of one exchange and its retransmission timer.
#[derive(Default)]
struct Flight {
    last_in: Vec<u8>,
    last_out: Vec<u8>,
    deadline: Option<Instant>,
    tries: u32,
    /// `last_out` answered `last_in`: a repeat of `last_in` means our answer
    /// was lost and gets it again. Never set for a message sent before the
    /// last one received, so two ends never answer each other's repeats
    /// forever.
    replied: bool,
}

impl Flight {
    /// Records a datagram we send; `await_answer` arms the retransmission timer.
    fn sent(&mut self, data: &[u8], now: Instant, conn: &ConnectionConfig, await_answer: bool) {
        self.last_out.clear();
        self.last_out.extend_from_slice(data);
        self.tries = 0;
        self.deadline = await_answer.then(|| now + conn.retransmit_timeout);
        self.replied = !self.last_in.is_empty();
    }

    fn is_repeat(&self, datagram: &[u8]) -> bool {
        !self.last_in.is_empty() && self.last_in == datagram
    }

    /// The datagram to send again for a repeat of `last_in`, if any.
    fn answer_to_repeat(&self) -> Option<Vec<u8>> {
        self.replied.then(|| self.last_out.clone())
    }

    fn received(&mut self, datagram: &[u8]) {
        self.last_in.clear();
        self.last_in.extend_from_slice(datagram);
        self.deadline = None;
        self.replied = false;
    }

    /// At the deadline: `Some(true)` to retransmit, `Some(false)` to give up.
    fn expire(&mut self, now: Instant, conn: &ConnectionConfig) -> Option<bool> {
        let due = self.deadline.filter(|d| *d <= now)?;
        if self.tries >= conn.retransmit_tries {
            self.deadline = None;
            return Some(false);
        }
        self.tries += 1;
        let backoff = conn.retransmit_base.powi(self.tries as i32).min(64.0);
        self.deadline = Some(due.max(now) + conn.retransmit_timeout.mul_f64(backoff));
        Some(true)
    }
}

/// Handshake material of Phase 1, dropped once authenticated.
#[derive(Default)]
struct Handshake {
    sa_i_body: Vec<u8>,
    ke: Option<KeyExchange>,
    ke_i: Vec<u8>,
    ke_r: Vec<u8>,
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    /// Aggressive Mode responder: the initiator's ID body and identity,
    /// authenticated by message 3.
    peer_id_body: Vec<u8>,
    peer_id: Option<ikev2::Identification>,
}

/// One ISAKMP SA and its Quick Modes.
pub struct Ikev1Sa {
    ctx: Context,
    conn: Arc<ConnectionConfig>,
    role: Role,
    /// How both ends authenticate (the connection's method).
    auth: Phase1Auth,
    state: MainModeState,
    local: SocketAddr,
    remote: SocketAddr,
    cookie_i: u64,
    cookie_r: u64,
    suite: Option<Phase1Suite>,
    handshake: Option<Box<Handshake>>,
    keys: Option<Phase1Keys>,
    cipher: Option<IsakmpCipher>,
    ivs: Option<IvChain>,
    peer_id: Option<ikev2::Identification>,
    phase1: Flight,
    quick: Vec<QuickMode>,
    /// Message IDs of informational exchanges already processed (repeats are ignored).
    seen_informational: VecDeque<u32>,
    dpd_sequence: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    plain: Vec<u8>,
    down: bool,
    /// Responder: when an unauthenticated SA is dropped (the context's
    /// half-open timeout), so a vanished initiator leaves nothing behind.
    half_open_until: Option<Instant>,
    /// Phase 1 is Aggressive Mode (states read AM_*).
    aggressive: bool,
    /// When a new Phase 1 replaces this one (IKEv1 has no ISAKMP SA rekey:
    /// a fresh Main Mode takes over the ESP SAs).
    reauth_at: Option<Instant>,
    /// When this ISAKMP SA is deleted (its hard lifetime).
    expire_at: Option<Instant>,
    /// Set at `reauth_at` for the driver, which starts the new Phase 1.
    reauth_due: Option<Instant>,
    /// This Phase 1 replaces an older one: no INITIAL_CONTACT (it would
    /// make the peer drop the ESP SAs being carried over) and no first
    /// Quick Mode (the older SA's ESP SAs are adopted instead).
    is_reauth: bool,
    /// A newer ISAKMP SA with the same peer took over the ESP SAs: this
    /// one is not reauthenticated again and waits for its DELETE or expiry.
    superseded: bool,
    /// Both ends announced RFC 3947 NAT traversal.
    nat_t: bool,
    /// A NAT changes our address (the peer's NAT-D of us does not match).
    nat_here: bool,
    /// A NAT changes the peer's address.
    nat_there: bool,
    /// IKE moved to the NAT-T ports: datagrams carry the non-ESP marker.
    floated: bool,
    /// Gateway of a connection with XAUTH: the exchange with the client
    /// and its Mode Config answers.
    xauth: Option<Box<xauth::XauthServer>>,
    /// Virtual IPs leased to the peer by Mode Config, released with the SA.
    virtual_ips: Vec<std::net::IpAddr>,
    /// The `IkeSaUp` of a gateway SA with XAUTH, held until XAUTH succeeds.
    up_after_xauth: Option<Event>,
}

impl fmt::Debug for Ikev1Sa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ikev1Sa")
            .field("connection", &self.conn.name)
            .field("role", &self.role)
            .field("state", &self.state)
            .field(
                "cookies",
                &format_args!("{:016x}/{:016x}", self.cookie_i, self.cookie_r),
            )
            .finish_non_exhaustive()
    }
}

fn psk_of(conn: &ConnectionConfig) -> Option<&[u8]> {
    match &conn.local_auth {
        AuthConfig::Psk(k) => Some(k.secret()),
        _ => None,
    }
}

/// The body (without generic header) of one encoded payload.
fn payload_body(p: &Payload<'_>) -> Result<Vec<u8>, IsakmpError> {
    let mut out = Vec::new();
    isakmp::encode_payloads(std::slice::from_ref(p), &mut out)?;
    out.drain(..isakmp::GENERIC_HEADER_LEN);
    Ok(out)
}

fn random_bytes(ctx: &Context, n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut v = vec![0u8; n];
    ctx.crypto.fill_random(&mut v)?;
    Ok(v)
}

fn invalid(detail: impl Into<String>) -> Ikev1Error {
    Ikev1Error::InvalidMessage(detail.into())
}

/// The first payload of a kind in a chain.
macro_rules! find {
    ($payloads:expr, $variant:ident) => {
        $payloads.iter().find_map(|p| match p {
            Payload::$variant(x) => Some(x),
            _ => None,
        })
    };
}
pub(crate) use find;

impl Ikev1Sa {
    fn new(ctx: &Context, conn: Arc<ConnectionConfig>, role: Role, local: SocketAddr, remote: SocketAddr) -> Self {
        // Connections are checked with `Phase1Auth::of` before an SA is made.
        let auth = Phase1Auth::of(&conn).unwrap_or(Phase1Auth::Psk);
        Ikev1Sa {
            ctx: ctx.clone(),
            conn,
            role,
            auth,
            state: MainModeState::Idle,
            local,
            remote,
            cookie_i: 0,
            cookie_r: 0,
            suite: None,
            handshake: Some(Box::default()),
            keys: None,
            cipher: None,
            ivs: None,
            peer_id: None,
            phase1: Flight::default(),
            quick: Vec::new(),
            seen_informational: VecDeque::new(),
            dpd_sequence: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            plain: Vec::new(),
            down: false,
            half_open_until: None,
            aggressive: false,
            reauth_at: None,
            expire_at: None,
            reauth_due: None,
            is_reauth: false,
            superseded: false,
            nat_t: false,
            nat_here: false,
            nat_there: false,
            floated: false,
            xauth: None,
            virtual_ips: Vec::new(),
            up_after_xauth: None,
        }
    }

    /// Starts the Phase 1 that replaces `old` before its lifetime ends:
    /// the same connection, addresses and mode, without INITIAL_CONTACT.
    /// Once it is up, the driver moves `old`'s ESP SAs to it
    /// ([`Ikev1Sa::adopt_from`]).
    pub fn initiate_reauth(ctx: &Context, old: &Ikev1Sa, now: Instant) -> Result<Self, Ikev1Error> {
        let (conn, local, remote) = (old.conn.clone(), old.local, old.remote);
        // Both send INITIAL_CONTACT (Main Mode) and the first Quick Mode
        // only after the peer's answer, when `is_reauth` is set.
        let mut sa = if old.aggressive {
            Self::initiate_aggressive(ctx, conn, local, remote, now)?
        } else {
            Self::initiate(ctx, conn, local, remote, now)?
        };
        sa.is_reauth = true;
        Ok(sa)
    }

    /// When this SA's reauthentication became due, once; the driver then
    /// starts it with [`Ikev1Sa::initiate_reauth`].
    pub fn take_reauth_due(&mut self) -> Option<Instant> {
        self.reauth_due.take()
    }

    /// True when this SA was started to replace an older one.
    pub fn is_reauth(&self) -> bool {
        self.is_reauth
    }

    /// Whether `other`, an established ISAKMP SA, is an older SA of the same
    /// peer this (just established) one replaces: same connection, same
    /// authenticated identity, same peer address.
    pub fn replaces(&self, other: &Ikev1Sa) -> bool {
        !other.down
            && other.state == MainModeState::Done
            && self.cookies() != other.cookies()
            && self.conn.name == other.conn.name
            && self.peer_id.is_some()
            && self.peer_id == other.peer_id
            && self.xauth_user() == other.xauth_user()
            && self.remote.ip() == other.remote.ip()
    }

    /// Moves the established ESP SAs of `old` (an older ISAKMP SA of the
    /// same peer) to this one, as strongSwan does on an IKEv1
    /// reauthentication. When we started this SA, `old` is deleted (its
    /// ESP SAs stay); else the peer deletes it, and until then it neither
    /// reauthenticates nor carries ESP SAs.
    pub fn adopt_from(&mut self, old: &mut Ikev1Sa) {
        let children = old.take_established_children();
        if !children.is_empty() {
            info!(
                connection = %self.conn.name,
                "IKEv1 ISAKMP SA {:016x}/{:016x} takes over {} ESP SA pair(s) from {:016x}/{:016x}",
                self.cookie_i,
                self.cookie_r,
                children.len(),
                old.cookie_i,
                old.cookie_r
            );
        }
        self.quick.extend(children);
        old.superseded = true;
        old.reauth_at = None;
        if self.role == Role::Initiator {
            old.delete_isakmp_only();
        }
    }

    /// The established ESP SA pairs, taken out of this SA.
    fn take_established_children(&mut self) -> Vec<QuickMode> {
        let (done, pending) = std::mem::take(&mut self.quick)
            .into_iter()
            .partition(|q| q.state == QuickModeState::Done);
        self.quick = pending;
        done
    }

    /// Tells the peer that this ISAKMP SA is gone (not its ESP SAs, which
    /// another ISAKMP SA carries now) and goes down.
    fn delete_isakmp_only(&mut self) {
        if self.down {
            return;
        }
        if let Err(e) = self.send_isakmp_delete() {
            warn!(connection = %self.conn.name, "IKEv1 DELETE of ISAKMP SA {:016x}/{:016x} not sent: {e}", self.cookie_i, self.cookie_r);
        }
        info!(connection = %self.conn.name, "IKEv1 ISAKMP SA {:016x}/{:016x} retired after its reauthentication", self.cookie_i, self.cookie_r);
        self.go_down(DownReason::Deleted);
    }

    /// Starts Main Mode towards `remote` for `conn` (pre-shared keys or
    /// certificates): sends the SA proposal. A Quick Mode for the
    /// connection's first child follows when Main Mode completes.
    pub fn initiate(
        ctx: &Context,
        conn: Arc<ConnectionConfig>,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Result<Self, Ikev1Error> {
        if conn.xauth && conn.xauth_client.is_none() {
            return Err(Ikev1Error::NoConnection(format!(
                "connection {} makes the peer pass XAUTH: it answers road warriors and does not initiate",
                conn.name
            )));
        }
        let auth = Phase1Auth::of(&conn).map_err(Ikev1Error::NoConnection)?;
        let mut sa = Ikev1Sa::new(ctx, conn, Role::Initiator, local, remote);
        sa.cookie_i = ctx.new_ike_spi()?;
        let lifetime = (sa.conn.ike_lifetime.rekey + sa.conn.ike_lifetime.over).as_secs();
        let method = auth.number_for(&sa.conn).map_err(Ikev1Error::NoConnection)?;
        let transforms = proposal::phase1_transforms(&sa.conn.ike_proposals, lifetime, method);
        if transforms.is_empty() {
            return Err(Ikev1Error::NoProposalChosen(format!(
                "connection {} has no IKE proposal usable with IKEv1 (AES-CBC, SHA-2, a DH group)",
                sa.conn.name
            )));
        }
        let sa_payload = Payload::Sa(SecurityAssociation {
            situation: SIT_IDENTITY_ONLY,
            proposals: vec![isakmp::Proposal {
                number: 1,
                protocol: ProtocolId::ISAKMP,
                spi: &[],
                transforms,
            }],
        });
        sa.handshake_mut().sa_i_body = payload_body(&sa_payload)?;
        sa.send_clear(
            now,
            &[
                sa_payload,
                Payload::VendorId(&DPD_VENDOR_ID),
                Payload::VendorId(&nat::RFC3947_VENDOR_ID),
            ],
            true,
        )?;
        sa.set_state(MainModeState::SaSent);
        Ok(sa)
    }

    /// Answers the first Phase 1 message of a new peer: Main Mode, or
    /// Aggressive Mode when `policy` allows it.
    pub fn respond(
        ctx: &Context,
        policy: &Ikev1Policy,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<Self, Ikev1Error> {
        let (h, _) = isakmp::split_message(datagram)?;
        if h.exchange == ExchangeType::AGGRESSIVE && h.cookie_r == 0 && h.message_id == 0 {
            let some_connection_allows = ctx
                .connections
                .iter()
                .any(|c| c.aggressive && c.ike_versions.allows_v1());
            if !policy.allows_aggressive() && !some_connection_allows {
                return Err(Ikev1Error::NoConnection(
                    "Aggressive Mode is disabled (its HASH exposes the pre-shared key to offline cracking)".into(),
                ));
            }
            return Self::respond_aggressive(ctx, policy, local, remote, datagram, now);
        }
        Self::respond_main(ctx, local, remote, datagram, now)
    }

    fn respond_main(
        ctx: &Context,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<Self, Ikev1Error> {
        let msg = isakmp::decode_message(datagram)?;
        let h = msg.header;
        if h.exchange != ExchangeType::IDENTITY_PROTECTION || h.cookie_r != 0 || h.message_id != 0 {
            return Err(invalid(format!("{h} does not start Main Mode")));
        }
        let sa_in = find!(msg.payloads, Sa).ok_or_else(|| invalid("Main Mode message 1 without SA payload"))?;
        let [offer] = sa_in.proposals.as_slice() else {
            return Err(invalid("Main Mode SA payload with more than one proposal"));
        };
        let mut refusals = Vec::new();
        let mut chosen = None;
        for conn in ctx.connections.iter() {
            if !conn.ike_versions.allows_v1() || !conn.matches_addresses(local.ip(), remote.ip()) {
                continue;
            }
            let Ok(method) = Phase1Auth::of(conn).and_then(|a| a.number_for(conn)) else {
                continue;
            };
            match proposal::select_phase1(&conn.ike_proposals, offer, method) {
                Ok((at, suite)) => {
                    chosen = Some((conn.clone(), at, suite));
                    break;
                }
                Err(m) => refusals.push(format!("{}: {m}", conn.name)),
            }
        }
        let Some((conn, at, suite)) = chosen else {
            return Err(if refusals.is_empty() {
                Ikev1Error::NoConnection(format!("no IKEv1 connection matches {local} <- {remote}"))
            } else {
                Ikev1Error::NoProposalChosen(refusals.join("; "))
            });
        };
        let mut sa = Ikev1Sa::new(ctx, conn, Role::Responder, local, remote);
        sa.cookie_i = h.cookie_i;
        sa.cookie_r = ctx.new_ike_spi()?;
        sa.suite = Some(suite);
        let sa_body = payload_body(&Payload::Sa(sa_in.clone()))?;
        sa.handshake_mut().sa_i_body = sa_body;
        sa.phase1.received(datagram);
        let reply = Payload::Sa(SecurityAssociation {
            situation: SIT_IDENTITY_ONLY,
            proposals: vec![isakmp::Proposal {
                transforms: vec![offer.transforms[at].clone()],
                ..offer.clone()
            }],
        });
        sa.nat_t = nat::announces_nat_t(&msg.payloads);
        let mut payloads = vec![reply, Payload::VendorId(&DPD_VENDOR_ID)];
        if sa.nat_t {
            payloads.push(Payload::VendorId(&nat::RFC3947_VENDOR_ID));
        }
        sa.send_clear(now, &payloads, false)?;
        sa.set_state(MainModeState::SaRcvd);
        sa.half_open_until = Some(now + ctx.half_open_timeout);
        Ok(sa)
    }

    /// The Main Mode state.
    pub fn state(&self) -> MainModeState {
        self.state
    }

    /// The Phase 1 state as operators read it: MM_* for Main Mode, AM_IDLE,
    /// AM_INIT_SENT, AM_RESP_SENT (responder), AM_RESP_RCVD, AM_DONE for
    /// Aggressive Mode.
    pub fn state_name(&self) -> String {
        if !self.aggressive {
            return self.state.to_string();
        }
        match (self.role, self.state) {
            (_, MainModeState::Idle) => "AM_IDLE",
            (Role::Initiator, MainModeState::SaSent) => "AM_INIT_SENT",
            (_, MainModeState::Done) => "AM_DONE",
            (Role::Initiator, _) => "AM_RESP_RCVD",
            (Role::Responder, _) => "AM_RESP_SENT",
        }
        .to_string()
    }

    /// Our address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The peer's authenticated identity.
    pub fn peer_id(&self) -> Option<&ikev2::Identification> {
        self.peer_id.as_ref()
    }

    /// The negotiated Phase 1 suite.
    pub fn suite(&self) -> Option<Phase1Suite> {
        self.suite
    }

    /// True when Phase 1 is Aggressive Mode.
    pub fn is_aggressive(&self) -> bool {
        self.aggressive
    }

    /// Initiator and responder cookies.
    pub fn cookies(&self) -> (u64, u64) {
        (self.cookie_i, self.cookie_r)
    }

    /// Our role in Main Mode.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The connection this SA belongs to.
    pub fn connection(&self) -> &Arc<ConnectionConfig> {
        &self.conn
    }

    /// The states of the Quick Modes in progress or done, by message ID.
    pub fn quick_modes(&self) -> Vec<(u32, QuickModeState)> {
        self.quick.iter().map(|q| (q.message_id, q.state)).collect()
    }

    /// True once the SA is gone (deleted, failed or timed out).
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest retransmission deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.down {
            return None;
        }
        [
            self.phase1.deadline,
            self.half_open_until,
            self.reauth_at,
            self.expire_at,
            self.xauth.as_ref().and_then(|x| x.flight.deadline),
            self.xauth
                .as_ref()
                .and_then(|x| x.config.as_ref())
                .and_then(|(_, f)| f.deadline),
        ]
        .into_iter()
        .chain(self.quick.iter().map(QuickMode::next_deadline))
        .flatten()
        .min()
    }

    fn handshake_mut(&mut self) -> &mut Handshake {
        self.handshake.get_or_insert_with(Box::default)
    }

    fn set_state(&mut self, state: MainModeState) {
        let from = self.state_name();
        self.state = state;
        debug!(
            connection = %self.conn.name,
            cookies = %format_args!("{:016x}/{:016x}", self.cookie_i, self.cookie_r),
            "IKEv1 Phase 1 {from} -> {}",
            self.state_name()
        );
    }

    fn header(&self, exchange: ExchangeType, message_id: u32) -> Header {
        Header {
            cookie_i: self.cookie_i,
            cookie_r: self.cookie_r,
            next_payload: PayloadType::NONE,
            version: VERSION,
            exchange,
            flags: 0,
            message_id,
            length: 0,
        }
    }

    fn push_transmit(&mut self, data: Vec<u8>) {
        self.transmits.push_back(Transmit {
            local: self.local,
            remote: self.remote,
            non_esp_marker: self.floated,
            data,
        });
    }

    fn send_clear(&mut self, now: Instant, payloads: &[Payload<'_>], await_answer: bool) -> Result<(), Ikev1Error> {
        let mut out = Vec::new();
        isakmp::encode_message(&self.header(ExchangeType::IDENTITY_PROTECTION, 0), payloads, &mut out)?;
        self.phase1.sent(&out, now, &self.conn, await_answer);
        self.push_transmit(out);
        Ok(())
    }

    /// Encrypts `payloads` for exchange `message_id` with the ISAKMP SA's key.
    fn seal(
        &mut self,
        exchange: ExchangeType,
        message_id: u32,
        payloads: &[Payload<'_>],
    ) -> Result<Vec<u8>, Ikev1Error> {
        let header = self.header(exchange, message_id);
        let (Some(cipher), Some(ivs)) = (&self.cipher, &mut self.ivs) else {
            return Err(invalid("no ISAKMP SA keys yet"));
        };
        let mut out = Vec::new();
        cipher.seal(ivs, &header, payloads, &mut out)?;
        Ok(out)
    }

    fn fail(&mut self, reason: String) {
        if self.down {
            return;
        }
        warn!(
            connection = %self.conn.name,
            peer = %self.remote,
            "IKEv1 SA {:016x}/{:016x} failed in {}: {reason}",
            self.cookie_i,
            self.cookie_r,
            self.state
        );
        self.go_down(DownReason::Failed(reason));
    }

    fn go_down(&mut self, reason: DownReason) {
        self.release_virtual_ips();
        for q in &self.quick {
            if q.state == QuickModeState::Done {
                self.events.push_back(Event::ChildSaDeleted {
                    spi_in: q.spi_in,
                    spi_out: q.spi_out,
                });
            }
        }
        self.quick.clear();
        self.events.push_back(Event::IkeSaDown {
            spis: (self.cookie_i, self.cookie_r),
            reason,
        });
        self.down = true;
    }

    /// Processes a received datagram (without non-ESP marker). Errors
    /// describe why it was dropped; a failed handshake also ends the SA
    /// with an `IkeSaDown` event.
    pub fn handle(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Ikev1Error> {
        if self.down {
            return Err(invalid("the ISAKMP SA is down"));
        }
        let (h, _) = isakmp::split_message(datagram)?;
        let phase1_exchange = if self.aggressive {
            ExchangeType::AGGRESSIVE
        } else {
            ExchangeType::IDENTITY_PROTECTION
        };
        if h.exchange == phase1_exchange && self.phase1.is_repeat(datagram) {
            debug!(connection = %self.conn.name, "IKEv1 repeated Main Mode message in {}", self.state);
            if let Some(again) = self.phase1.answer_to_repeat() {
                self.push_transmit(again);
            }
            return Ok(());
        }
        let cookie_r_ok = h.cookie_r == self.cookie_r || self.state == MainModeState::SaSent;
        if h.cookie_i != self.cookie_i || !cookie_r_ok {
            return Err(invalid(format!("{h} carries cookies of another SA")));
        }
        match h.exchange {
            ExchangeType::AGGRESSIVE if self.aggressive && h.message_id == 0 && self.state != MainModeState::Done => {
                let r = match (self.role, self.state) {
                    (Role::Initiator, MainModeState::SaSent) => self.aggressive_initiator_got_reply(now, &h, datagram),
                    (Role::Responder, MainModeState::SaRcvd) => self.aggressive_responder_got_hash(now, datagram),
                    _ => Err(Ikev1Error::UnexpectedMessage {
                        exchange: h.exchange,
                        state: self.state_name(),
                    }),
                };
                if let Err(e) = &r
                    && matches!(e, Ikev1Error::AuthenticationFailed(_) | Ikev1Error::NoProposalChosen(_))
                {
                    self.fail(e.to_string());
                }
                r
            }
            ExchangeType::IDENTITY_PROTECTION if !self.aggressive && h.message_id == 0 => {
                let encrypted_stage = matches!(
                    (self.role, self.state),
                    (Role::Responder, MainModeState::KeSent) | (Role::Initiator, MainModeState::AuthSent)
                );
                let r = match self.main_mode(now, &h, datagram) {
                    // Without integrity protection a wrong key shows as garbage.
                    Err(Ikev1Error::Wire(e)) if encrypted_stage && h.is_encrypted() => {
                        Err(Ikev1Error::AuthenticationFailed(format!(
                            "Main Mode identity message does not decrypt ({e}): {}",
                            if self.auth.is_signature() {
                                "the peer derived other keys"
                            } else {
                                "the pre-shared keys differ"
                            }
                        )))
                    }
                    r => r,
                };
                if let Err(e) = &r
                    && self.state != MainModeState::Done
                    && matches!(e, Ikev1Error::AuthenticationFailed(_) | Ikev1Error::NoProposalChosen(_))
                {
                    self.fail(e.to_string());
                }
                r
            }
            ExchangeType::QUICK if self.state == MainModeState::Done && h.message_id != 0 => {
                if let Some(x) = self.xauth.as_ref().filter(|x| x.state != XauthState::Done) {
                    return Err(Ikev1Error::UnexpectedMessage {
                        exchange: h.exchange,
                        state: x.state.to_string(),
                    });
                }
                self.quick_mode(now, &h, datagram)
            }
            ExchangeType::TRANSACTION if self.state == MainModeState::Done && h.message_id != 0 => {
                self.transaction(now, &h, datagram)
            }
            ExchangeType::INFORMATIONAL if self.keys.is_some() && h.message_id != 0 => {
                self.informational(now, &h, datagram)
            }
            _ => Err(Ikev1Error::UnexpectedMessage {
                exchange: h.exchange,
                state: self.state.to_string(),
            }),
        }
    }

    fn main_mode(&mut self, now: Instant, h: &Header, datagram: &[u8]) -> Result<(), Ikev1Error> {
        let unexpected = || Ikev1Error::UnexpectedMessage {
            exchange: h.exchange,
            state: self.state.to_string(),
        };
        match (self.role, self.state) {
            (Role::Initiator, MainModeState::SaSent) => self.initiator_got_sa(now, h, datagram),
            (Role::Responder, MainModeState::SaRcvd) => self.responder_got_ke(now, datagram),
            (Role::Initiator, MainModeState::KeSent) => self.initiator_got_ke(now, datagram),
            (Role::Responder, MainModeState::KeSent) => self.responder_got_auth(now, datagram),
            (Role::Initiator, MainModeState::AuthSent) => self.initiator_got_auth(now, datagram),
            _ => Err(unexpected()),
        }
    }

    fn initiator_got_sa(&mut self, now: Instant, h: &Header, datagram: &[u8]) -> Result<(), Ikev1Error> {
        let msg = isakmp::decode_message(datagram)?;
        if h.cookie_r == 0 {
            return Err(invalid("Main Mode message 2 without responder cookie"));
        }
        let sa = find!(msg.payloads, Sa).ok_or_else(|| invalid("Main Mode message 2 without SA payload"))?;
        let [chosen] = sa.proposals.as_slice() else {
            return Err(Ikev1Error::NoProposalChosen(
                "responder returned several proposals".into(),
            ));
        };
        let method = self.auth.number_for(&self.conn).map_err(Ikev1Error::NoConnection)?;
        let suite = proposal::accept_phase1(&self.conn.ike_proposals, chosen, method)
            .map_err(|m| Ikev1Error::NoProposalChosen(m.to_string()))?;
        let ke = KeyExchange::generate(&*self.ctx.crypto, suite.group)?;
        let nonce = random_bytes(&self.ctx, NONCE_LEN)?;
        self.cookie_r = h.cookie_r;
        self.suite = Some(suite);
        self.nat_t = nat::announces_nat_t(&msg.payloads);
        self.phase1.received(datagram);
        self.set_state(MainModeState::SaRcvd);
        let hs = self.handshake_mut();
        hs.ke_i = ke.public_value().to_vec();
        hs.nonce_i = nonce;
        let (ke_i, nonce_i) = (hs.ke_i.clone(), hs.nonce_i.clone());
        hs.ke = Some(ke);
        let nat_d = self.our_nat_d()?;
        let authorities = self.certreq_authorities();
        let mut payloads = vec![Payload::Ke(&ke_i), Payload::Nonce(&nonce_i)];
        payloads.extend(nat_d.iter().flatten().map(|d| Payload::NatD(d)));
        payloads.extend(authorities.iter().map(|a| Payload::CertReq {
            cert_type: auth::CERT_X509_SIGNATURE,
            authority: a,
        }));
        self.send_clear(now, &payloads, true)?;
        self.set_state(MainModeState::KeSent);
        Ok(())
    }

    /// Reads the peer's KE and nonce of messages 3/4.
    fn peer_ke_nonce(&self, datagram: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Ikev1Error> {
        let msg = isakmp::decode_message(datagram)?;
        let ke = find!(msg.payloads, Ke).ok_or_else(|| invalid("Main Mode KE payload missing"))?;
        let nonce = find!(msg.payloads, Nonce).ok_or_else(|| invalid("Main Mode nonce missing"))?;
        let group = self.suite.map(|s| s.group).ok_or_else(|| invalid("no suite"))?;
        if ke.len() != group.public_len() {
            return Err(invalid(format!(
                "KE data of {} bytes for {} (expected {})",
                ke.len(),
                group.name(),
                group.public_len()
            )));
        }
        Ok((ke.to_vec(), nonce.to_vec()))
    }

    /// Derives the ISAKMP SA keys once both KE values and nonces are known.
    fn derive_keys(&mut self, shared: &[u8]) -> Result<(), Ikev1Error> {
        let suite = self.suite.ok_or_else(|| invalid("no suite"))?;
        let hs = self.handshake.as_deref().ok_or_else(|| invalid("no handshake"))?;
        let cookies = (self.cookie_i, self.cookie_r);
        let keys = match self.auth {
            Phase1Auth::Psk => {
                let psk = psk_of(&self.conn).ok_or_else(|| invalid("no pre-shared key"))?;
                Phase1Keys::derive_psk(
                    suite.hash,
                    psk,
                    &hs.nonce_i,
                    &hs.nonce_r,
                    shared,
                    cookies,
                    suite.encr.key_len(),
                )
            }
            Phase1Auth::Signature(_) => Phase1Keys::derive_signature(
                suite.hash,
                &hs.nonce_i,
                &hs.nonce_r,
                shared,
                cookies,
                suite.encr.key_len(),
            ),
        };
        self.cipher = Some(IsakmpCipher::aes_cbc(&keys.encryption_key)?);
        self.ivs = Some(IvChain::new(suite.hash, &hs.ke_i, &hs.ke_r));
        self.keys = Some(keys);
        Ok(())
    }

    fn responder_got_ke(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Ikev1Error> {
        let (ke_i, nonce_i) = self.peer_ke_nonce(datagram)?;
        let group = self.suite.map(|s| s.group).ok_or_else(|| invalid("no suite"))?;
        let ke = KeyExchange::generate(&*self.ctx.crypto, group)?;
        let ke_r = ke.public_value().to_vec();
        let shared = ke.finish(&ke_i)?;
        let nonce_r = random_bytes(&self.ctx, NONCE_LEN)?;
        self.phase1.received(datagram);
        self.set_state(MainModeState::KeRcvd);
        let hs = self.handshake_mut();
        hs.ke_i = ke_i;
        hs.ke_r = ke_r.clone();
        hs.nonce_i = nonce_i;
        hs.nonce_r = nonce_r.clone();
        self.derive_keys(&shared)?;
        self.check_nat_d(datagram)?;
        let nat_d = self.our_nat_d()?;
        let authorities = self.certreq_authorities();
        let mut payloads = vec![Payload::Ke(&ke_r), Payload::Nonce(&nonce_r)];
        payloads.extend(nat_d.iter().flatten().map(|d| Payload::NatD(d)));
        payloads.extend(authorities.iter().map(|a| Payload::CertReq {
            cert_type: auth::CERT_X509_SIGNATURE,
            authority: a,
        }));
        self.send_clear(now, &payloads, false)?;
        self.set_state(MainModeState::KeSent);
        Ok(())
    }

    fn our_id(conn: &ConnectionConfig) -> Identification<'_> {
        Identification {
            id_type: IdType(conn.local_id.id_type.0),
            protocol: 0,
            port: 0,
            data: &conn.local_id.data,
        }
    }

    fn initiator_got_ke(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Ikev1Error> {
        let (ke_r, nonce_r) = self.peer_ke_nonce(datagram)?;
        let ke = self
            .handshake
            .as_mut()
            .and_then(|h| h.ke.take())
            .ok_or_else(|| invalid("no key exchange in progress"))?;
        let shared = ke.finish(&ke_r)?;
        self.phase1.received(datagram);
        self.set_state(MainModeState::KeRcvd);
        let hs = self.handshake_mut();
        hs.ke_r = ke_r;
        hs.nonce_r = nonce_r;
        self.derive_keys(&shared)?;
        self.check_nat_d(datagram)?;
        self.float_to_nat_port();
        let conn = self.conn.clone();
        let id_payload = Payload::Id(Self::our_id(&conn));
        let id_body = payload_body(&id_payload)?;
        let proof = self.our_proof(true, &id_body)?;
        let spi = self.cookie_spi();
        let mut payloads = vec![id_payload];
        proof.push_payloads(&mut payloads);
        let contact;
        if self.conn.initial_contact && !self.is_reauth {
            contact = isakmp::Notification {
                doi: isakmp::DOI_IPSEC,
                protocol: ProtocolId::ISAKMP.0,
                ty: NotifyType::INITIAL_CONTACT,
                spi: &spi,
                data: &[],
            };
            payloads.push(Payload::Notify(contact));
        }
        let out = self.seal(ExchangeType::IDENTITY_PROTECTION, 0, &payloads)?;
        self.phase1.sent(&out, now, &self.conn, true);
        self.push_transmit(out);
        self.set_state(MainModeState::AuthSent);
        Ok(())
    }

    fn cookie_spi(&self) -> [u8; 16] {
        let mut spi = [0u8; 16];
        spi[..8].copy_from_slice(&self.cookie_i.to_be_bytes());
        spi[8..].copy_from_slice(&self.cookie_r.to_be_bytes());
        spi
    }

    /// The CERTREQ authorities of messages 3 and 4: our trusted CAs when
    /// we authenticate with certificates, none with a pre-shared key.
    fn certreq_authorities(&self) -> Vec<Vec<u8>> {
        match auth::credentials(&self.conn) {
            Some((_, trust)) if self.auth.is_signature() => auth::certreq_authorities(trust),
            _ => Vec::new(),
        }
    }

    /// What proves our identity in message 5 (`initiator`) or 6: HASH_I/R
    /// with a pre-shared key, else our certificates and the signature of
    /// the hash.
    fn our_proof(&self, initiator: bool, id_body: &[u8]) -> Result<Proof, Ikev1Error> {
        let hash = self.phase1_hash(initiator, id_body)?;
        match (self.auth, auth::credentials(&self.conn)) {
            (Phase1Auth::Psk, _) => Ok(Proof::Hash(hash)),
            (Phase1Auth::Signature(_), Some((ours, _))) => {
                let sig = ours
                    .key
                    .sign_prehashed(&*self.ctx.crypto, &hash)
                    .map_err(|e| Ikev1Error::AuthenticationFailed(format!("cannot sign HASH: {e}")))?;
                Ok(Proof::Signature {
                    certs: ours.chain.iter().map(|c| c.der().to_vec()).collect(),
                    sig,
                })
            }
            (Phase1Auth::Signature(_), None) => Err(invalid("no certificate to sign with")),
        }
    }

    fn phase1_hash(&self, initiator: bool, id_body: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, Ikev1Error> {
        let (Some(keys), Some(hs)) = (&self.keys, &self.handshake) else {
            return Err(invalid("no keys"));
        };
        Ok(keys.phase1_hash(
            initiator,
            &hs.ke_i,
            &hs.ke_r,
            (self.cookie_i, self.cookie_r),
            &hs.sa_i_body,
            id_body,
        ))
    }

    /// Opens an encrypted message and checks the peer's ID and HASH of
    /// Main Mode message 5 or 6; returns the peer's identity.
    fn open_auth(
        &mut self,
        datagram: &[u8],
        from_initiator: bool,
    ) -> Result<(ikev2::Identification, bool), Ikev1Error> {
        let mut plain = std::mem::take(&mut self.plain);
        let result = (|| {
            let (Some(cipher), Some(ivs)) = (&self.cipher, &mut self.ivs) else {
                return Err(invalid("no ISAKMP SA keys yet"));
            };
            let mut trial = ivs.clone();
            let h_in = cipher.open(&mut trial, datagram, &mut plain)?;
            let payloads = isakmp::decode_payloads(h_in.next_payload, &plain, true)?;
            let id = find!(payloads, Id).ok_or_else(|| invalid("Main Mode ID payload missing"))?;
            let id_body = payload_body(&Payload::Id(*id))?;
            let expected = self.phase1_hash(from_initiator, &id_body)?;
            let peer = ikev2::Identification {
                id_type: ikev2::IdType(id.id_type.0),
                data: id.data.to_vec(),
            };
            match self.auth {
                Phase1Auth::Psk => {
                    let hash = find!(payloads, Hash).ok_or_else(|| invalid("Main Mode HASH payload missing"))?;
                    if verify_slices_are_equal(&expected, hash).is_err() {
                        return Err(Ikev1Error::AuthenticationFailed(
                            "HASH does not verify: the pre-shared keys differ".into(),
                        ));
                    }
                }
                Phase1Auth::Signature(kind) => {
                    let sig = find!(payloads, Sig).ok_or_else(|| invalid("Main Mode SIG payload missing"))?;
                    let certs: Vec<&[u8]> = payloads
                        .iter()
                        .filter_map(|p| match p {
                            Payload::Cert { encoding, data } if *encoding == auth::CERT_X509_SIGNATURE => Some(*data),
                            _ => None,
                        })
                        .collect();
                    let (_, trust) = auth::credentials(&self.conn).ok_or_else(|| invalid("no trusted CAs"))?;
                    auth::verify_peer_signature(&*self.ctx.crypto, trust, kind, &peer, &certs, &expected, sig)
                        .map_err(Ikev1Error::AuthenticationFailed)?;
                }
            }
            if !self.conn.remote_id.matches(&peer) {
                return Err(Ikev1Error::AuthenticationFailed(format!(
                    "peer identity {:?} is not the one connection {} expects",
                    peer, self.conn.name
                )));
            }
            let contact = payloads
                .iter()
                .any(|p| matches!(p, Payload::Notify(n) if n.ty == NotifyType::INITIAL_CONTACT));
            if let Some(ivs) = &mut self.ivs {
                *ivs = trial;
            }
            Ok((peer, contact))
        })();
        self.plain = plain;
        result
    }

    fn responder_got_auth(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Ikev1Error> {
        let (peer, contact) = self.open_auth(datagram, true)?;
        self.phase1.received(datagram);
        let conn = self.conn.clone();
        let id_payload = Payload::Id(Self::our_id(&conn));
        let id_body = payload_body(&id_payload)?;
        let proof = self.our_proof(false, &id_body)?;
        let mut payloads = vec![id_payload];
        proof.push_payloads(&mut payloads);
        let out = self.seal(ExchangeType::IDENTITY_PROTECTION, 0, &payloads)?;
        self.phase1.sent(&out, now, &self.conn, false);
        self.push_transmit(out);
        self.established(now, peer, contact);
        if self.conn.xauth {
            self.start_xauth(now);
        } else if self.conn.mode_config_push {
            self.start_mode_config_push(now);
        }
        Ok(())
    }

    fn initiator_got_auth(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Ikev1Error> {
        let (peer, contact) = self.open_auth(datagram, false)?;
        self.phase1.received(datagram);
        self.established(now, peer, contact);
        // An XAUTH client's first Quick Mode waits for the gateway's verdict.
        if self.conn.xauth_client.is_none() {
            self.start_first_child(now);
        }
        Ok(())
    }

    /// Initiator, once Phase 1 is up: the Quick Mode of the first child
    /// (a reauthentication adopts the older SA's ESP SAs instead).
    pub(super) fn start_first_child(&mut self, now: Instant) {
        if !self.is_reauth
            && !self.conn.children.is_empty()
            && let Err(e) = self.start_quick_mode(now, 0)
        {
            let name = self.conn.children[0].name.clone();
            warn!(connection = %self.conn.name, "IKEv1 Quick Mode for child {name} not started: {e}");
            self.events.push_back(Event::ChildSaFailed {
                name,
                reason: e.to_string(),
            });
        }
    }

    fn established(&mut self, now: Instant, peer: ikev2::Identification, initial_contact: bool) {
        self.set_state(MainModeState::Done);
        self.half_open_until = None;
        // The nonces and KE values are no longer needed (the IVs carry on).
        self.handshake = None;
        let suite = self.suite.unwrap_or(Phase1Suite {
            encr: crate::crypto::EncrAlg::AesCbc { key_bits: 256 },
            hash: isakmp::HashAlg::Sha256,
            prf: crate::crypto::PrfAlg::HmacSha256,
            group: crate::crypto::KeGroup::Modp2048,
            lifetime: None,
        });
        info!(
            connection = %self.conn.name,
            peer = %self.remote,
            "IKEv1 ISAKMP SA {:016x}/{:016x} established ({:?}) with {:?}: {}-{}-{}",
            self.cookie_i,
            self.cookie_r,
            self.role,
            peer,
            suite.encr.name(),
            suite.hash.name(),
            suite.group.name()
        );
        self.peer_id = Some(peer.clone());
        let lifetime = proposal::effective_lifetime(&self.conn.ike_lifetime, suite.lifetime);
        (self.reauth_at, self.expire_at) = crate::ike_sa::schedule(now, &lifetime, self.cookie_i ^ self.cookie_r);
        // Only a side that can reach the peer starts a new Phase 1.
        if self.role == Role::Responder && self.conn.remote_addrs.is_none() {
            self.reauth_at = None;
        }
        let up = Event::IkeSaUp {
            spis: (self.cookie_i, self.cookie_r),
            peer_id: peer,
            suite: IkeSuite {
                encr: suite.encr,
                integ: None,
                prf: suite.prf,
                ke: suite.group,
            },
            connection: self.conn.name.clone(),
            initial_contact,
        };
        // A group PSK proves little: the peer is up (its INITIAL_CONTACT
        // and reauthentication honoured) once it passed XAUTH.
        if self.conn.xauth && self.role == Role::Responder {
            self.up_after_xauth = Some(up);
        } else {
            self.events.push_back(up);
        }
    }

    /// Retransmits what is due and gives up on exchanges out of tries.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.down {
            return;
        }
        if self.half_open_until.is_some_and(|t| t <= now) {
            info!(
                connection = %self.conn.name,
                peer = %self.remote,
                "IKEv1 half-open SA {:016x}/{:016x} dropped in {}: the initiator did not complete Main Mode",
                self.cookie_i,
                self.cookie_r,
                self.state
            );
            self.go_down(DownReason::Timeout);
            return;
        }
        if self.expire_at.is_some_and(|t| t <= now) {
            info!(
                connection = %self.conn.name,
                peer = %self.remote,
                "IKEv1 ISAKMP SA {:016x}/{:016x} reached its hard lifetime: deleted",
                self.cookie_i,
                self.cookie_r
            );
            if let Err(e) = self.delete() {
                warn!(connection = %self.conn.name, "IKEv1 DELETE at the hard lifetime not sent: {e}");
                self.go_down(DownReason::Timeout);
            }
            return;
        }
        if self.reauth_at.is_some_and(|t| t <= now) {
            self.reauth_at = None;
            if !self.superseded {
                info!(
                    connection = %self.conn.name,
                    peer = %self.remote,
                    "IKEv1 ISAKMP SA {:016x}/{:016x} reached its soft lifetime: reauthenticating",
                    self.cookie_i,
                    self.cookie_r
                );
                self.reauth_due = Some(now);
            }
        }
        match self.phase1.expire(now, &self.conn) {
            Some(true) => {
                debug!(connection = %self.conn.name, "IKEv1 retransmitting in {}", self.state);
                let again = self.phase1.last_out.clone();
                self.push_transmit(again);
            }
            Some(false) => {
                warn!(
                    connection = %self.conn.name,
                    peer = %self.remote,
                    "IKEv1 peer did not answer in {} after {} retransmissions",
                    self.state,
                    self.conn.retransmit_tries
                );
                self.go_down(DownReason::Timeout);
                return;
            }
            None => {}
        }
        self.xauth_timeouts(now);
        if self.down {
            return;
        }
        self.quick_mode_timeouts(now);
    }

    /// A fresh message ID for an exchange we start: random, non-zero,
    /// unused on this SA.
    fn new_message_id(&self) -> Result<u32, CryptoError> {
        loop {
            let id = random_u32(&*self.ctx.crypto)?;
            if id != 0 && !self.quick.iter().any(|q| q.message_id == id) && !self.seen_informational.contains(&id) {
                return Ok(id);
            }
        }
    }

    /// Encrypts `HDR*, HASH, payloads` of an informational or transaction
    /// exchange: HASH = prf(SKEYID_a, M-ID | payloads).
    fn seal_hashed(
        &mut self,
        exchange: ExchangeType,
        mid: u32,
        payloads: &[Payload<'_>],
    ) -> Result<Vec<u8>, Ikev1Error> {
        let mut tail = Vec::new();
        isakmp::encode_payloads(payloads, &mut tail)?;
        let keys = self.keys.as_ref().ok_or_else(|| invalid("no keys"))?;
        let hash = keys.auth_hash(&[&mid.to_be_bytes(), &tail]);
        let mut all = vec![Payload::Hash(&hash)];
        all.extend_from_slice(payloads);
        self.seal(exchange, mid, &all)
    }

    /// Builds `HDR*, HASH(1), payloads` of an informational exchange.
    fn send_informational(&mut self, payloads: &[Payload<'_>]) -> Result<(), Ikev1Error> {
        let mid = self.new_message_id()?;
        let out = self.seal_hashed(ExchangeType::INFORMATIONAL, mid, payloads)?;
        if let Some(ivs) = &mut self.ivs {
            ivs.forget(mid);
        }
        self.push_transmit(out);
        Ok(())
    }

    /// Deletes the ISAKMP SA and its ESP SAs: tells the peer and emits the
    /// events.
    pub fn delete(&mut self) -> Result<(), Ikev1Error> {
        if self.down {
            return Ok(());
        }
        if self.state == MainModeState::Done {
            let spis: Vec<[u8; 4]> = self
                .quick
                .iter()
                .filter(|q| q.state == QuickModeState::Done)
                .map(|q| q.spi_in.to_be_bytes())
                .collect();
            if !spis.is_empty() {
                let d = isakmp::Delete {
                    doi: isakmp::DOI_IPSEC,
                    protocol: ProtocolId::ESP,
                    spis: spis.iter().map(|s| &s[..]).collect(),
                };
                self.send_informational(&[Payload::Delete(d)])?;
            }
            self.send_isakmp_delete()?;
        }
        info!(connection = %self.conn.name, "IKEv1 SA {:016x}/{:016x} deleted by us", self.cookie_i, self.cookie_r);
        self.go_down(DownReason::Deleted);
        Ok(())
    }

    /// Tells the peer that this ISAKMP SA is deleted.
    fn send_isakmp_delete(&mut self) -> Result<(), Ikev1Error> {
        let spi = self.cookie_spi();
        let d = isakmp::Delete {
            doi: isakmp::DOI_IPSEC,
            protocol: ProtocolId::ISAKMP,
            spis: vec![&spi],
        };
        self.send_informational(&[Payload::Delete(d)])
    }

    /// Sends an R-U-THERE (RFC 3706); the answer is logged at debug level.
    pub fn send_dpd(&mut self) -> Result<(), Ikev1Error> {
        if self.state != MainModeState::Done {
            return Err(invalid("DPD before the ISAKMP SA is established"));
        }
        self.dpd_sequence = self.dpd_sequence.wrapping_add(1);
        let seq = self.dpd_sequence.to_be_bytes();
        let spi = self.cookie_spi();
        self.send_informational(&[Payload::Notify(isakmp::Notification {
            doi: isakmp::DOI_IPSEC,
            protocol: ProtocolId::ISAKMP.0,
            ty: NotifyType::DPD_R_U_THERE,
            spi: &spi,
            data: &seq,
        })])
    }

    fn informational(&mut self, now: Instant, h: &Header, datagram: &[u8]) -> Result<(), Ikev1Error> {
        if self.seen_informational.contains(&h.message_id) {
            return Ok(());
        }
        let mut plain = std::mem::take(&mut self.plain);
        let result = self.informational_open(h, datagram, &mut plain);
        self.plain = plain;
        let actions = result?;
        if self.seen_informational.len() == 32 {
            self.seen_informational.pop_front();
        }
        self.seen_informational.push_back(h.message_id);
        for a in actions {
            match a {
                Informational::DeleteIsakmp => {
                    info!(connection = %self.conn.name, "IKEv1 SA {:016x}/{:016x} deleted by the peer", self.cookie_i, self.cookie_r);
                    self.go_down(DownReason::Deleted);
                }
                Informational::DeleteEsp(spi) => {
                    if let Some(i) = self
                        .quick
                        .iter()
                        .position(|q| q.spi_out == spi && q.state == QuickModeState::Done)
                    {
                        let q = self.quick.remove(i);
                        info!(connection = %self.conn.name, "IKEv1 ESP SA {:08x}/{:08x} deleted by the peer", q.spi_in, q.spi_out);
                        self.events.push_back(Event::ChildSaDeleted {
                            spi_in: q.spi_in,
                            spi_out: q.spi_out,
                        });
                    }
                }
                Informational::RuThere(seq) => {
                    let spi = self.cookie_spi();
                    self.send_informational(&[Payload::Notify(isakmp::Notification {
                        doi: isakmp::DOI_IPSEC,
                        protocol: ProtocolId::ISAKMP.0,
                        ty: NotifyType::DPD_R_U_THERE_ACK,
                        spi: &spi,
                        data: &seq,
                    })])?;
                }
                Informational::RuThereAck(seq) => {
                    debug!(connection = %self.conn.name, "IKEv1 DPD answered (sequence {})", u32::from_be_bytes(seq));
                }
                Informational::QuickModeRefused(spi, ty) => {
                    let pending =
                        |q: &QuickMode| q.state != QuickModeState::Done && (q.spi_in == spi || q.spi_out == spi);
                    match self.quick.iter().position(pending) {
                        Some(i) => {
                            let q = self.quick.remove(i);
                            self.quick_failed(now, &q, format!("peer refused it with {ty}"));
                        }
                        None => {
                            warn!(connection = %self.conn.name, peer = %self.remote, "IKEv1 peer reports {ty} for ESP SPI {spi:08x}")
                        }
                    }
                }
                Informational::PeerError(ty) => {
                    warn!(connection = %self.conn.name, peer = %self.remote, "IKEv1 peer reports {ty}");
                }
            }
        }
        Ok(())
    }

    fn informational_open(
        &mut self,
        h: &Header,
        datagram: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Vec<Informational>, Ikev1Error> {
        let (Some(cipher), Some(ivs), Some(keys)) = (&self.cipher, &mut self.ivs, &self.keys) else {
            return Err(invalid("no keys"));
        };
        let h_in = cipher.open(ivs, datagram, plain)?;
        ivs.forget(h.message_id);
        let payloads = hashed_payloads(keys, h.message_id, h_in.next_payload, plain, "informational")?;
        let cookies = self.cookie_spi();
        let mut actions = Vec::new();
        for p in &payloads {
            match p {
                Payload::Delete(d) if d.protocol == ProtocolId::ISAKMP && d.spis.iter().any(|s| *s == cookies) => {
                    actions.push(Informational::DeleteIsakmp);
                }
                Payload::Delete(d) if d.protocol == ProtocolId::ESP => {
                    for s in &d.spis {
                        if let Ok(b) = <[u8; 4]>::try_from(*s) {
                            actions.push(Informational::DeleteEsp(u32::from_be_bytes(b)));
                        }
                    }
                }
                Payload::Notify(n) if n.ty == NotifyType::DPD_R_U_THERE || n.ty == NotifyType::DPD_R_U_THERE_ACK => {
                    let seq: [u8; 4] = n
                        .data
                        .try_into()
                        .map_err(|_| invalid("DPD notify without a 4-byte sequence"))?;
                    if n.spi != cookies {
                        return Err(invalid("DPD notify for other cookies"));
                    }
                    actions.push(if n.ty == NotifyType::DPD_R_U_THERE {
                        Informational::RuThere(seq)
                    } else {
                        Informational::RuThereAck(seq)
                    });
                }
                Payload::Notify(n) if n.ty.0 < 16384 => {
                    let spi = <[u8; 4]>::try_from(n.spi).ok().map(u32::from_be_bytes);
                    match spi.filter(|_| n.protocol == ProtocolId::ESP.0) {
                        Some(spi) => actions.push(Informational::QuickModeRefused(spi, n.ty)),
                        None => actions.push(Informational::PeerError(n.ty)),
                    }
                }
                _ => {}
            }
        }
        Ok(actions)
    }
}

/// Our part of Main Mode message 5 or 6 after the ID payload.
enum Proof {
    /// HASH_I or HASH_R (pre-shared key).
    Hash(zeroize::Zeroizing<Vec<u8>>),
    /// Our certificate chain (end entity first) and SIG_I or SIG_R.
    Signature { certs: Vec<Vec<u8>>, sig: Vec<u8> },
}

impl Proof {
    fn push_payloads<'a>(&'a self, out: &mut Vec<Payload<'a>>) {
        match self {
            Proof::Hash(h) => out.push(Payload::Hash(h)),
            Proof::Signature { certs, sig } => {
                out.extend(certs.iter().map(|c| Payload::Cert {
                    encoding: auth::CERT_X509_SIGNATURE,
                    data: c,
                }));
                out.push(Payload::Sig(sig));
            }
        }
    }
}

/// The payloads after the leading HASH of a decrypted informational or
/// transaction message, once HASH = prf(SKEYID_a, M-ID | the rest) verifies.
fn hashed_payloads<'a>(
    keys: &Phase1Keys,
    mid: u32,
    next: PayloadType,
    plain: &'a [u8],
    what: &str,
) -> Result<Vec<Payload<'a>>, Ikev1Error> {
    let mut payloads = isakmp::decode_payloads(next, plain, true)?;
    let spans = isakmp::payload_spans(next, plain)?;
    let (Some(Payload::Hash(hash)), Some(first), Some(last)) = (payloads.first(), spans.first(), spans.last()) else {
        return Err(invalid(format!("{what} message without leading HASH")));
    };
    let expected = keys.auth_hash(&[&mid.to_be_bytes(), &plain[first.end..last.end]]);
    if verify_slices_are_equal(&expected, hash).is_err() {
        return Err(Ikev1Error::AuthenticationFailed(format!("{what} HASH does not verify")));
    }
    payloads.remove(0);
    Ok(payloads)
}

/// What an informational message asks of us.
enum Informational {
    DeleteIsakmp,
    DeleteEsp(u32),
    RuThere([u8; 4]),
    RuThereAck([u8; 4]),
    PeerError(NotifyType),
    /// An error notify about the ESP SPI of a Quick Mode.
    QuickModeRefused(u32, NotifyType),
}

/// Whether a datagram (without marker) is an IKEv1 message that starts a
/// new Phase 1 (Main or Aggressive Mode): the only one a responder creates
/// an SA for.
pub fn starts_phase1(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[17] >> 4 == 1
        && (datagram[18] == ExchangeType::IDENTITY_PROTECTION.0 || datagram[18] == ExchangeType::AGGRESSIVE.0)
        && datagram[8..16] == [0; 8]
}

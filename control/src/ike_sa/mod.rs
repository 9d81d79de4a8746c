//! One IKE SA's state machine (RFC 7296), sans-IO.
//!
//! An [`IkeSa`] is fed datagrams with [`IkeSa::handle`] and the passing of
//! time with [`IkeSa::handle_timeout`]; it produces datagrams
//! ([`IkeSa::poll_transmit`]), its next deadline ([`IkeSa::poll_timeout`]) and
//! events ([`IkeSa::poll_event`]). Exchanges live in their own modules:
//! [`sa_init`], [`auth`], [`create_child`], [`informational`].

pub mod auth;
pub mod child;
pub mod config_payload;
pub mod create_child;
pub mod eap;
mod eap_client;
mod followup_ke;
mod handshake;
pub mod informational;
pub mod intermediate;
mod mobike;
mod ppk;
pub mod resume;
pub mod sa_init;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, trace, warn};
use zeroize::Zeroizing;

use crate::Error;
use crate::config::{ConnectionConfig, Lifetime};
use crate::crypto::{CryptoError, CryptoProvider, IkeSuite, SkCipher};
use crate::wire::ikev2::{
    self, ExchangeType, FLAG_INITIATOR, FLAG_RESPONSE, FragmentReassembler, Header, Identification, Notify, NotifyType,
    Payload, ProtocolId, sk,
};

pub use child::{ChildSa, ChildSaInstall, ChildState, DirectionKeys, Selectors};

/// Which end of the IKE SA we are: the original initiator or the responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We sent the first IKE_SA_INIT.
    Initiator,
    /// We answered it.
    Responder,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Our address (selects the socket).
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// True when sent on a NAT-T socket: the driver prepends the 4-byte non-ESP marker.
    pub non_esp_marker: bool,
    /// The IKE message, or the single byte of a NAT keepalive.
    pub data: Vec<u8>,
}

impl Transmit {
    /// True for a NAT keepalive (RFC 3948 §2.3): one 0xFF byte, sent on the
    /// NAT-T port without the non-ESP marker (no IKE message is that short).
    pub fn is_nat_keepalive(&self) -> bool {
        self.data == [crate::wire::ingress::NAT_KEEPALIVE]
    }
}

/// Why an IKE SA went down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// We or the peer deleted it.
    Deleted,
    /// Replaced by a rekeyed IKE SA.
    Rekeyed,
    /// The peer did not answer.
    Timeout,
    /// The negotiation failed (message explains why).
    Failed(String),
    /// The peer sent an error notify.
    PeerError(NotifyType),
    /// Hard lifetime expired.
    Expired,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::Deleted => f.write_str("deleted"),
            DownReason::Rekeyed => f.write_str("replaced by its rekeyed IKE SA"),
            DownReason::Timeout => f.write_str("the peer did not answer"),
            DownReason::Failed(why) => f.write_str(why),
            DownReason::PeerError(n) => write!(f, "peer answered {n}"),
            DownReason::Expired => f.write_str("hard lifetime expired"),
        }
    }
}

/// What the state machine tells its driver.
#[derive(Debug)]
pub enum Event {
    /// The IKE SA is authenticated and usable.
    IkeSaUp {
        /// (initiator SPI, responder SPI).
        spis: (u64, u64),
        /// The peer's authenticated identity.
        peer_id: Identification,
        /// Negotiated algorithms.
        suite: IkeSuite,
        /// Connection name.
        connection: String,
        /// The peer sent INITIAL_CONTACT: older SAs with this identity are stale.
        initial_contact: bool,
    },
    /// The IKE SA is gone; its children are gone too (ChildSaDeleted events precede this).
    IkeSaDown {
        /// (initiator SPI, responder SPI).
        spis: (u64, u64),
        /// Why.
        reason: DownReason,
    },
    /// A rekey produced a new IKE SA; take it with [`IkeSa::take_successor`].
    IkeSaRekeyed {
        /// SPIs of the old SA.
        old: (u64, u64),
        /// SPIs of the new SA.
        new: (u64, u64),
        /// Our SPI in the new SA.
        new_local_spi: u64,
    },
    /// A CHILD_SA is ready: install it in the fastpath.
    ChildSaInstalled(Box<ChildSaInstall>),
    /// A CHILD_SA is gone: remove it from the fastpath.
    ChildSaDeleted {
        /// Our inbound SPI.
        spi_in: u32,
        /// Our outbound SPI.
        spi_out: u32,
    },
    /// The peer's address or port changed (NAT rebinding seen on
    /// authenticated IKE or ESP): move these CHILD_SAs' ESP to the new outer
    /// addresses in place.
    ChildSasMoved {
        /// Inbound SPIs of the CHILD_SAs to move.
        spis_in: Vec<u32>,
        /// Our outer address (with UDP encapsulation, our NAT-T socket).
        local: SocketAddr,
        /// The peer's outer address.
        remote: SocketAddr,
        /// True when ESP is UDP-encapsulated between them.
        udp_encap: bool,
    },
    /// A message or request was refused: the endpoint counts it by reason
    /// and logs it rate-limited.
    Refused {
        /// Where it came from.
        source: SocketAddr,
        /// Why.
        reason: crate::drops::DropReason,
        /// What it was, for the log.
        detail: String,
    },
    /// A peer's EAP packet for the driver's back end (RADIUS): answer with
    /// [`IkeSa::eap_backend_reply`]; the IKE SA waits without blocking.
    EapRelay(Box<eap::EapRelay>),
    /// A peer passed EAP (before its final AUTH is checked): what the back
    /// end said about the session, for accounting.
    EapAuthenticated(Box<eap::EapAuthenticated>),
    /// A CHILD_SA could not be negotiated (the IKE SA stays up).
    ChildSaFailed {
        /// Child template name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Hands out inbound CHILD_SA SPIs that are unique on this gateway.
pub trait SpiAllocator: Send + Sync {
    /// A fresh SPI drawn from `random`, never 0..=255 (reserved, RFC 4303 §2.1).
    fn allocate(&self, random: &dyn CryptoProvider) -> Result<u32, CryptoError>;
    /// Returns an SPI that is no longer used.
    fn release(&self, spi: u32);
}

/// Random SPIs (fine for tests and small deployments; the daemon uses a set-backed allocator).
#[derive(Debug, Default)]
pub struct RandomSpis;

impl SpiAllocator for RandomSpis {
    fn allocate(&self, random: &dyn CryptoProvider) -> Result<u32, CryptoError> {
        loop {
            let v = crate::crypto::random_u32(random)?;
            if v > 255 {
                return Ok(v);
            }
        }
    }
    fn release(&self, _spi: u32) {}
}

/// Receives the keys of every IKE SA as they are derived (after IKE_SA_INIT,
/// and for each rekeyed IKE SA), so that a driver can write a key log for
/// Wireshark when an operator asks for one; the core itself never writes
/// keys anywhere. Called on the thread that drives the SA: keep it short.
pub trait IkeKeyLog: Send + Sync {
    /// Keys of the IKE SA with SPIs `spis` (initiator's, responder's).
    fn ike_sa_keys(&self, spis: (u64, u64), suite: &crate::crypto::IkeSuite, keys: &crate::crypto::IkeSaKeys);
}

/// Shared, read-only context of IKE SAs: the connections, allocators and
/// the crypto provider.
#[derive(Clone)]
pub struct Context {
    /// All configured connections (responders pick among them).
    pub connections: Arc<Vec<Arc<ConnectionConfig>>>,
    /// Inbound CHILD_SA SPI allocator.
    pub child_spis: Arc<dyn SpiAllocator>,
    /// Our NAT-T port (4500 in production).
    pub local_nat_port: u16,
    /// Peers' NAT-T port (4500 in production; tests use others).
    pub remote_nat_port: u16,
    /// Time after which a half-open responder SA is dropped.
    pub half_open_timeout: Duration,
    /// Randomness, key exchanges, legacy RSA signing and wall-clock time.
    pub crypto: Arc<dyn CryptoProvider>,
    /// Fixed high bits of every IKE SPI we pick (the shard id of a sharded driver).
    pub spi_prefix: u64,
    /// How many high bits `spi_prefix` occupies.
    pub spi_prefix_bits: u32,
    /// Where the keys of new IKE SAs are reported (a debugging key log); none by default.
    pub key_log: Option<Arc<dyn IkeKeyLog>>,
    /// Virtual IPs for peers that ask for one (the gateway's address pools).
    pub addresses: Arc<dyn crate::pool::AddressAllocator>,
    /// The local EAP users (`remote_auth = "eap-mschapv2"` or `"eap-md5"`);
    /// none: such connections refuse every client.
    pub eap_users: Option<Arc<dyn crate::eap::UserStore + Send + Sync>>,
    /// EAP outcomes and dropped EAP packets, shared with the driver's metrics.
    pub eap_stats: Arc<eap::EapStats>,
}

impl Context {
    /// A fresh random IKE SPI carrying the prefix.
    pub fn new_ike_spi(&self) -> Result<u64, CryptoError> {
        loop {
            let r = crate::crypto::random_u64(&*self.crypto)?;
            let mask = if self.spi_prefix_bits == 0 {
                u64::MAX
            } else {
                u64::MAX >> self.spi_prefix_bits
            };
            let spi = self.spi_prefix | (r & mask);
            if spi != 0 {
                return Ok(spi);
            }
        }
    }
}

impl Context {
    /// A context for these connections with default ports and timeouts.
    pub fn new(connections: Vec<Arc<ConnectionConfig>>, crypto: Arc<dyn CryptoProvider>) -> Self {
        Self {
            connections: Arc::new(connections),
            child_spis: Arc::new(RandomSpis),
            local_nat_port: 4500,
            remote_nat_port: 4500,
            half_open_timeout: Duration::from_secs(30),
            spi_prefix: 0,
            spi_prefix_bits: 0,
            crypto,
            key_log: None,
            addresses: Arc::new(crate::pool::SharedPools::default()),
            eap_users: None,
            eap_stats: Arc::default(),
        }
    }
}

/// Negotiated keys of an established (or authenticating) IKE SA.
pub(crate) struct SaKeys {
    pub suite: IkeSuite,
    pub sk_d: Zeroizing<Box<[u8]>>,
    /// SK_pi and SK_pr until IKE_AUTH is done (boxed: established SAs drop them).
    pub auth: Option<Box<AuthKeys>>,
    pub outbound: SkCipher,
    pub inbound: SkCipher,
    /// The RFC 9370 additional key exchanges these keys include: index N-1
    /// for ADDKE N (a byte each: the IKE SA keeps its allocator size class).
    pub additional_ke: crate::proposal::AdditionalKeSlots,
}

/// SK_pi and SK_pr: they only serve the AUTH payloads of IKE_AUTH.
pub(crate) struct AuthKeys {
    pub sk_pi: Zeroizing<Vec<u8>>,
    pub sk_pr: Zeroizing<Vec<u8>>,
}

impl SaKeys {
    /// SK_pi (empty once IKE_AUTH is done).
    pub fn sk_pi(&self) -> &[u8] {
        self.auth.as_ref().map_or(&[], |a| &a.sk_pi)
    }

    /// SK_pr (empty once IKE_AUTH is done).
    pub fn sk_pr(&self) -> &[u8] {
        self.auth.as_ref().map_or(&[], |a| &a.sk_pr)
    }
}

/// Data kept between IKE_SA_INIT and IKE_AUTH.
pub(crate) struct AuthContext {
    /// Our IKE_SA_INIT message (what our AUTH signs).
    pub our_init: Vec<u8>,
    /// The peer's IKE_SA_INIT message (what the peer's AUTH signs).
    pub peer_init: Vec<u8>,
    /// Initiator nonce.
    pub ni: Vec<u8>,
    /// Responder nonce.
    pub nr: Vec<u8>,
    /// RFC 9370 additional key exchanges still to run in IKE_INTERMEDIATE, in order.
    pub additional_ke: Vec<(u8, crate::crypto::KeGroup)>,
    /// What the IKE_INTERMEDIATE messages so far contribute to the AUTH payloads.
    pub int_auth: intermediate::IntAuth,
    /// Both sides sent USE_PPK in IKE_SA_INIT (RFC 8784).
    pub peer_use_ppk: bool,
    /// Responder: the EAP conversation of IKE_AUTH, once it started.
    pub eap: Option<Box<eap::EapSession>>,
    /// Responder: the first of two authentication rounds passed (RFC 4739).
    pub first_round: Option<Box<eap::FirstRound>>,
    /// Initiator: our EAP conversation as the client, once IKE_AUTH went out without AUTH.
    pub eap_client: Option<Box<eap_client::EapClientSession>>,
}

/// Where the IKE SA is in its life.
pub(crate) enum State {
    /// Initiator: IKE_SA_INIT sent, waiting for the response.
    InitSent(Box<sa_init::InitSent>),
    /// Initiator: IKE_AUTH sent; responder: waiting for IKE_AUTH.
    Authenticating(Box<AuthContext>),
    /// Authenticated, with the virtual IPs of the configuration payload
    /// (boxed and kept here, where the enum's tag leaves room for them:
    /// most SAs have none, and the `IkeSa` keeps its allocator size class).
    Established(Option<Box<config_payload::VirtualIps>>),
    /// Gone; the driver may drop the object.
    Closed,
}

/// What an outstanding request of ours is for.
pub(crate) enum RequestKind {
    /// IKE_SA_INIT (initiator).
    Init,
    /// IKE_INTERMEDIATE (initiator) with an additional key exchange.
    Intermediate(intermediate::Pending),
    /// IKE_AUTH (initiator) with the first child's proposal.
    Auth(auth::PendingChild),
    /// CREATE_CHILD_SA.
    CreateChild(create_child::Pending),
    /// INFORMATIONAL.
    Informational(informational::Pending),
    /// IKE_FOLLOWUP_KE of an IKE SA rekey (RFC 9370).
    FollowupKe(followup_ke::Pending),
}

/// An outstanding request and its retransmission state.
pub(crate) struct Outstanding {
    pub message_id: u32,
    pub datagrams: Vec<Vec<u8>>,
    pub kind: RequestKind,
    pub tries: u32,
    pub deadline: Instant,
    /// Why the latest answer to it was dropped: giving up, we say so
    /// rather than that the peer did not answer.
    pub dropped_answer: Option<String>,
}

/// Work queued until the request window is free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Negotiate a new CHILD_SA from the template at this index.
    CreateChild(usize),
    /// Rekey the child with this inbound SPI.
    RekeyChild(u32),
    /// Rekey the IKE SA.
    RekeyIke,
    /// Delete the child with this inbound SPI.
    DeleteChild(u32),
    /// Delete the IKE SA.
    DeleteIke,
    /// Liveness check.
    Dpd,
    /// MOBIKE: tell the peer our address changed (UPDATE_SA_ADDRESSES).
    UpdateSaAddresses,
    /// MOBIKE: tell the peer our other addresses changed
    /// (ADDITIONAL_*_ADDRESS or NO_ADDITIONAL_ADDRESSES).
    AnnounceAddresses,
    /// MOBIKE: check that the peer answers at its new address (COOKIE2)
    /// before its CHILD_SAs move there.
    ReturnRoutability,
}

/// Whether IKE moved to the NAT-T ports, where NATs were detected and
/// whether MOBIKE was negotiated, in one byte (the IKE SA keeps its
/// allocator size class).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Nat(u8);

impl Nat {
    const NAT_T: u8 = 1;
    const LOCAL: u8 = 2;
    const REMOTE: u8 = 4;
    const MOBIKE: u8 = 8;

    fn get(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }

    /// IKE moved to the NAT-T ports.
    pub(crate) fn t(self) -> bool {
        self.get(Self::NAT_T)
    }

    /// A NAT is in front of us.
    pub(crate) fn local(self) -> bool {
        self.get(Self::LOCAL)
    }

    /// A NAT is in front of the peer.
    pub(crate) fn remote(self) -> bool {
        self.get(Self::REMOTE)
    }

    /// Both sides sent MOBIKE_SUPPORTED (RFC 4555).
    pub(crate) fn mobike(self) -> bool {
        self.get(Self::MOBIKE)
    }

    pub(crate) fn set_mobike(&mut self, on: bool) {
        self.set(Self::MOBIKE, on);
    }

    pub(crate) fn set_t(&mut self, on: bool) {
        self.set(Self::NAT_T, on);
    }

    pub(crate) fn set_local(&mut self, on: bool) {
        self.set(Self::LOCAL, on);
    }

    pub(crate) fn set_remote(&mut self, on: bool) {
        self.set(Self::REMOTE, on);
    }
}

/// One IKE SA.
pub struct IkeSa {
    pub(crate) role: Role,
    pub(crate) spi_i: u64,
    pub(crate) spi_r: u64,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    /// NAT-T ports in use and where NATs were detected.
    pub(crate) nat: Nat,
    pub(crate) config: Arc<ConnectionConfig>,
    /// Shared with the endpoint's other SAs (a pointer, not a copy per SA).
    pub(crate) ctx: Arc<Context>,
    pub(crate) state: State,
    pub(crate) keys: Option<SaKeys>,
    pub(crate) next_request_id: u32,
    /// What goes out next; `None` while nothing is queued or in flight.
    pub(crate) outbox: Option<Box<Outbox>>,
    pub(crate) expected_request_id: u32,
    /// Our last response, for retransmitted requests (boxed: dropped
    /// [`RESPONSE_CACHE_TTL`] after the peer's last message).
    pub(crate) cached_response: Option<Box<CachedResponse>>,
    pub(crate) children: Vec<ChildSa>,
    /// What exchanges in progress keep between messages; `None` while the SA is idle.
    pub(crate) scratch: Option<Box<HandshakeScratch>>,
    pub(crate) peer_fragmentation: bool,
    pub(crate) peer_id: Option<Identification>,
    pub(crate) created_at: Instant,
    pub(crate) last_inbound: Instant,
    /// NAT keepalive periods over since `last_inbound`: the next keepalive
    /// is due at the end of the following one (a count, not an `Instant`,
    /// keeps the SA in its allocator size class).
    pub(crate) keepalive_periods: u16,
    pub(crate) rekey_at: Option<Instant>,
    pub(crate) expire_at: Option<Instant>,
    /// Set once IkeSaDown was reported.
    pub(crate) down_reported: bool,
    /// Set once a rekey replaced this SA: its DELETE only retires it.
    pub(crate) replaced: bool,
    /// Resumed from another node's checkpoint, which may predate the
    /// peer's last requests: the first authentic request ahead of the
    /// window sets it.
    pub(crate) resync_request_id: bool,
    /// The deadline its driver armed a timer for ([`crate::endpoint::Endpoint`]
    /// ticks; [`NO_TIMER`] when none): kept here rather than in a map by SPI.
    pub(crate) timer: u64,
}

/// How far ahead of a resumed SA's stored window the peer's first request
/// may be (requests the dead node answered after its last checkpoint).
const RESYNC_WINDOW: u32 = 1 << 16;

/// [`IkeSa::timer`] when no timer is armed.
pub(crate) const NO_TIMER: u64 = u64::MAX;

/// Our last response and what it answers.
pub(crate) struct CachedResponse {
    /// Message ID of the request it answers.
    pub message_id: u32,
    /// Digest of the request (its first datagram) it answers: only an
    /// identical retransmission is answered from the cache, so nobody who
    /// merely knows the SPIs can make us reflect it (None for IKE_SA_INIT,
    /// matched by message ID).
    pub request_digest: Option<[u8; 16]>,
    /// The response (its first fragment when fragmented), as sent (a
    /// `Vec`: shrinking it to a boxed slice would cost a reallocation).
    pub first: Vec<u8>,
    /// Further fragments, if any.
    pub more: Box<[Box<[u8]>]>,
}

impl CachedResponse {
    /// Caches `datagrams` (at least one) as the response to `message_id`.
    pub fn new(message_id: u32, request_digest: Option<[u8; 16]>, datagrams: Vec<Vec<u8>>) -> Box<Self> {
        let mut all = datagrams.into_iter();
        let first = all.next().unwrap_or_default();
        Box::new(Self {
            message_id,
            request_digest,
            first,
            more: all.map(Vec::into_boxed_slice).collect(),
        })
    }

    /// The datagrams, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.first.as_slice()).chain(self.more.iter().map(|d| &**d))
    }

    /// Heap bytes it holds.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.first.capacity()
            + self.more.iter().map(|d| d.len()).sum::<usize>()
            + std::mem::size_of_val(&*self.more)
    }
}

/// What the SA sends or reports next: our request in flight (kept for
/// retransmission), work queued until the request window is free, and the
/// datagrams and events the driver polls. Boxed and dropped once empty, so
/// that tens of thousands of established, idle SAs do not each carry it.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Our request in flight, with its retransmission state.
    pub outstanding: Option<Box<Outstanding>>,
    pub tasks: VecDeque<Task>,
    pub transmits: VecDeque<Transmit>,
    pub events: VecDeque<Event>,
    /// MOBIKE: our addresses other than the SA's, for the next
    /// UPDATE_SA_ADDRESSES or address announcement (taken when it is sent).
    pub additional_addresses: Option<Box<[IpAddr]>>,
}

impl Outbox {
    /// True when nothing is queued or in flight.
    fn is_idle(&self) -> bool {
        self.outstanding.is_none() && self.tasks.is_empty() && self.transmits.is_empty() && self.events.is_empty()
    }
}

/// What exchanges in progress keep between messages (fragments, the peer's
/// IKE_SA_INIT hints for IKE_AUTH, rekey collisions and successors): boxed
/// and dropped once the SA is idle, for the same reason as [`Outbox`].
#[derive(Default)]
pub(crate) struct HandshakeScratch {
    /// Created when the first SKF fragment arrives.
    pub reassembler: Option<Box<FragmentReassembler>>,
    /// Hash algorithms from the peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427), until IKE_AUTH.
    pub peer_sig_hashes: Vec<u16>,
    /// CERTREQ data the peer sent (SHA-1 hashes of trusted CA keys), until IKE_AUTH.
    pub peer_certreq: Vec<u8>,
    /// Digest of the request being answered (becomes the cached response's).
    pub current_request_digest: Option<[u8; 16]>,
    /// The new IKE SA of a rekey, until the driver takes it.
    pub successor: Option<Box<IkeSa>>,
    pub collisions: Vec<create_child::Collision>,
    /// Responder: an IKE SA rekey or a CHILD_SA waiting for its
    /// IKE_FOLLOWUP_KE exchanges.
    pub followup: Option<Box<followup_ke::Followup>>,
    /// Responder: the peer's address from the AAA server, until IKE_AUTH.
    pub aaa_address: Option<std::net::IpAddr>,
    /// Responder: the pool the AAA server named (RADIUS Framed-Pool),
    /// until IKE_AUTH.
    pub aaa_pool: Option<String>,
}

impl HandshakeScratch {
    /// True when nothing in it is in use.
    fn is_idle(&self) -> bool {
        self.reassembler.is_none()
            && self.peer_sig_hashes.is_empty()
            && self.peer_certreq.is_empty()
            && self.current_request_digest.is_none()
            && self.successor.is_none()
            && self.collisions.is_empty()
            && self.followup.is_none()
            && self.aaa_address.is_none()
            && self.aaa_pool.is_none()
    }
}

/// Bytes one IKE SA holds, by item (its own accounting: `size_of` plus the
/// capacity of its buffers; allocator overhead and crypto-library internals
/// behind the SK ciphers are not included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// The `IkeSa` struct itself.
    pub inline: usize,
    /// SK_d, SK_pi, SK_pr and the SK cipher key material.
    pub keys: usize,
    /// The cached last response (answers retransmitted requests).
    pub cached_response: usize,
    /// The outstanding request of ours (kept for retransmission).
    pub outstanding: usize,
    /// CHILD_SAs: structs, names and selectors.
    pub children: usize,
    /// Peer identity, CERTREQ data, signature hashes, handshake context.
    pub peer: usize,
    /// Capacity of the task, transmit and event queues.
    pub queues: usize,
}

impl MemoryUsage {
    /// Sum of all items.
    pub fn total(&self) -> usize {
        self.items().iter().map(|(_, bytes)| bytes).sum()
    }

    /// The items by name (the field names), for reports.
    pub fn items(&self) -> [(&'static str, usize); 7] {
        [
            ("inline", self.inline),
            ("keys", self.keys),
            ("cached_response", self.cached_response),
            ("outstanding", self.outstanding),
            ("children", self.children),
            ("peer", self.peer),
            ("queues", self.queues),
        ]
    }
}

impl std::ops::AddAssign<&MemoryUsage> for MemoryUsage {
    fn add_assign(&mut self, m: &MemoryUsage) {
        self.inline += m.inline;
        self.keys += m.keys;
        self.cached_response += m.cached_response;
        self.outstanding += m.outstanding;
        self.children += m.children;
        self.peer += m.peer;
        self.queues += m.queues;
    }
}

/// How long an established SA keeps its last response after the peer last
/// spoke: RFC 7296 §2.1 wants it for retransmitted requests, and initiators
/// give up retransmitting well before this (strongSwan after ≈ 165 s). Idle
/// tunnels then do not each hold a copy of their IKE_AUTH response.
pub const RESPONSE_CACHE_TTL: Duration = Duration::from_secs(300);

/// Rekey and expiry deadlines of a lifetime starting at `now`. The rekey
/// comes up to the lifetime's jitter early, by an amount taken from
/// `spread`: a random value the SA drew anyway (its SPI), so that SAs set up
/// together do not rekey together, and scheduling draws nothing that could fail.
pub(crate) fn schedule(now: Instant, lifetime: &Lifetime, spread: u64) -> (Option<Instant>, Option<Instant>) {
    if lifetime.rekey.is_zero() {
        return (None, None);
    }
    let jitter_ms = lifetime.jitter.as_millis() as u64;
    let cut = if jitter_ms > 0 { spread % jitter_ms } else { 0 };
    let rekey = lifetime.rekey.saturating_sub(Duration::from_millis(cut));
    (Some(now + rekey), Some(now + lifetime.rekey + lifetime.over))
}

/// How long to wait before retrying a rekey that failed: 2..32 s, taken from
/// the nonce of the failed attempt (fresh and random each time), so two
/// peers whose rekeys crossed do not cross again.
pub(crate) fn rekey_retry_wait(our_nonce: &[u8]) -> Duration {
    let r = our_nonce.iter().take(4).fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    Duration::from_millis(2_000 + u64::from(r % 30_000))
}

/// When to retry a rekey that failed at `now`: after [`rekey_retry_wait`],
/// unless that comes too close to `expire_at`, the hard lifetime of what is
/// rekeyed; then at a point of the first half of the time left, also taken
/// from the nonce. A retry after the hard lifetime would be too late: the
/// SA would end instead of being replaced.
pub(crate) fn rekey_retry_at(now: Instant, our_nonce: &[u8], expire_at: Option<Instant>) -> Instant {
    let wait = rekey_retry_wait(our_nonce);
    match expire_at.and_then(|e| e.checked_duration_since(now)) {
        Some(left) if wait >= left / 2 => {
            let r = our_nonce
                .iter()
                .skip(4)
                .take(4)
                .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
            now + left.mul_f64(f64::from(r % 1000) / 2000.0)
        }
        _ => now + wait,
    }
}

impl IkeSa {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn blank(
        role: Role,
        now: Instant,
        config: Arc<ConnectionConfig>,
        ctx: Arc<Context>,
        local: SocketAddr,
        remote: SocketAddr,
        spi_i: u64,
        spi_r: u64,
        state: State,
    ) -> Self {
        Self {
            role,
            spi_i,
            spi_r,
            local,
            remote,
            nat: Nat::default(),
            config,
            ctx,
            state,
            keys: None,
            next_request_id: 0,
            outbox: None,
            expected_request_id: 0,
            cached_response: None,
            children: Vec::new(),
            scratch: None,
            peer_fragmentation: false,
            peer_id: None,
            created_at: now,
            last_inbound: now,
            keepalive_periods: 0,
            rekey_at: None,
            expire_at: None,
            down_reported: false,
            replaced: false,
            resync_request_id: false,
            timer: NO_TIMER,
        }
    }

    /// Logs why our IKE SA rekey failed and schedules its retry ([`rekey_retry_at`]).
    pub(crate) fn ike_rekey_failed(&mut self, now: Instant, our_nonce: &[u8], why: &str) {
        let retry = rekey_retry_at(now, our_nonce, self.expire_at);
        let retry_ms = retry.saturating_duration_since(now).as_millis() as u64;
        warn!(connection = %self.config.name, retry_ms, "IKE SA rekey failed: {why}");
        self.rekey_at = Some(retry);
    }

    /// The outbox, created on first use.
    pub(crate) fn outbox(&mut self) -> &mut Outbox {
        self.outbox.get_or_insert_with(Box::default)
    }

    /// The handshake scratch, created on first use.
    pub(crate) fn scratch(&mut self) -> &mut HandshakeScratch {
        self.scratch.get_or_insert_with(Box::default)
    }

    /// Our request in flight, if any.
    pub(crate) fn outstanding(&self) -> Option<&Outstanding> {
        self.outbox.as_ref()?.outstanding.as_deref()
    }

    /// Ends our request in flight: it was answered or is abandoned.
    pub(crate) fn take_outstanding(&mut self) -> Option<Box<Outstanding>> {
        self.outbox.as_mut()?.outstanding.take()
    }

    /// The peer's SIGNATURE_HASH_ALGORITHMS (empty when it sent none or IKE_AUTH is over).
    pub(crate) fn peer_sig_hashes(&self) -> &[u16] {
        self.scratch.as_ref().map_or(&[], |b| &b.peer_sig_hashes)
    }

    /// True while a rekey's new IKE SA waits to be taken by the driver.
    pub(crate) fn has_successor(&self) -> bool {
        self.scratch.as_ref().is_some_and(|b| b.successor.is_some())
    }

    /// What this SA holds in memory, by item.
    pub fn memory(&self) -> MemoryUsage {
        let datagrams = |d: &[Vec<u8>]| d.iter().map(Vec::capacity).sum::<usize>() + std::mem::size_of_val(d);
        let keys = self.keys.as_ref().map_or(0, |k| {
            k.sk_d.len()
                + k.auth.as_ref().map_or(0, |a| {
                    std::mem::size_of::<AuthKeys>() + a.sk_pi.capacity() + a.sk_pr.capacity()
                })
                + k.outbound.heap_bytes()
                + k.inbound.heap_bytes()
        });
        let cached_response = self.cached_response.as_ref().map_or(0, |c| c.heap_bytes());
        let outstanding = self.outstanding().map_or(0, |o| datagrams(&o.datagrams));
        let children = self.children.capacity() * std::mem::size_of::<ChildSa>()
            + self
                .children
                .iter()
                .map(|c| c.local_ts.heap_bytes() + c.remote_ts.heap_bytes())
                .sum::<usize>();
        let auth = match &self.state {
            State::Authenticating(a) => {
                a.our_init.capacity() + a.peer_init.capacity() + a.ni.capacity() + a.nr.capacity()
            }
            _ => 0,
        };
        let hints = self
            .scratch
            .as_ref()
            .map_or(0, |b| b.peer_certreq.capacity() + b.peer_sig_hashes.capacity() * 2);
        let peer = self.peer_id.as_ref().map_or(0, |p| p.data.capacity()) + hints + auth;
        let queues = self.outbox.as_ref().map_or(0, |b| {
            std::mem::size_of::<Outbox>()
                + b.tasks.capacity() * std::mem::size_of::<Task>()
                + b.transmits.capacity() * std::mem::size_of::<Transmit>()
                + b.events.capacity() * std::mem::size_of::<Event>()
        }) + self.scratch.as_ref().map_or(0, |b| {
            std::mem::size_of::<HandshakeScratch>()
                + b.collisions.capacity() * std::mem::size_of::<create_child::Collision>()
                + b.followup.as_ref().map_or(0, |f| f.heap_bytes())
        });
        MemoryUsage {
            inline: std::mem::size_of::<Self>(),
            keys,
            cached_response,
            outstanding,
            children,
            peer,
            queues,
        }
    }

    /// Our role in this IKE SA.
    pub fn role(&self) -> Role {
        self.role
    }

    /// (initiator SPI, responder SPI).
    pub fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }

    /// (message ID of our next request, message ID of the peer's next request).
    pub fn message_ids(&self) -> (u32, u32) {
        (self.next_request_id, self.expected_request_id)
    }

    /// Our SPI: the one the peer puts in our half of the header.
    pub fn local_spi(&self) -> u64 {
        match self.role {
            Role::Initiator => self.spi_i,
            Role::Responder => self.spi_r,
        }
    }

    /// Our current address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peer's current address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The connection this SA belongs to.
    pub fn config(&self) -> &Arc<ConnectionConfig> {
        &self.config
    }

    /// Moves the SA to a newer version of its connection whose changes apply
    /// to a running SA (DPD, timers, lifetimes of future rekeys). The caller
    /// decides that: identities, authentication, proposals and selectors must
    /// be those the SA was made with.
    pub fn update_config(&mut self, config: Arc<ConnectionConfig>) {
        self.config = config;
    }

    /// The authenticated peer identity, once established.
    pub fn peer_id(&self) -> Option<&Identification> {
        self.peer_id.as_ref()
    }

    /// The virtual IPs and DNS servers of the configuration payload, if any.
    pub fn virtual_ips(&self) -> Option<&config_payload::VirtualIps> {
        match &self.state {
            State::Established(v) => v.as_deref(),
            _ => None,
        }
    }

    /// The virtual IPs of an established SA (`None` before).
    pub(crate) fn virtual_ips_mut(&mut self) -> Option<&mut config_payload::VirtualIps> {
        match &mut self.state {
            State::Established(v) => Some(v.get_or_insert_with(Box::default)),
            _ => None,
        }
    }

    /// Sets the address an AAA server assigned the peer (RADIUS
    /// Framed-IP-Address): the configuration payload hands it out instead
    /// of a pool address. Call before the IKE_AUTH that finishes
    /// authentication is answered.
    pub fn set_aaa_address(&mut self, addr: IpAddr) {
        self.scratch().aaa_address = Some(addr);
    }

    /// Ends the SA `remaining` after `now` at the latest, without rekeying
    /// it before (RADIUS Session-Timeout, from the Access-Accept or a
    /// CoA-Request): a limit only shortens the SA's life.
    pub fn limit_session(&mut self, now: Instant, remaining: Duration) {
        let end = now + remaining;
        self.rekey_at = None;
        self.expire_at = Some(self.expire_at.map_or(end, |e| e.min(end)));
    }

    /// The pool an AAA server named for this peer (RADIUS Framed-Pool):
    /// its virtual IP is leased from that pool instead of the connection's.
    /// Call before the IKE_AUTH that finishes authentication is answered.
    pub fn set_aaa_pool(&mut self, pool: String) {
        self.scratch().aaa_pool = Some(pool);
    }

    /// The negotiated suite, once keys exist.
    pub fn suite(&self) -> Option<IkeSuite> {
        self.keys.as_ref().map(|k| k.suite)
    }

    /// The RFC 9370 additional key exchanges (ADDKE number, method) that went
    /// into this SA's keys, after the one of IKE_SA_INIT.
    pub fn additional_key_exchanges(&self) -> Vec<(u8, crate::crypto::KeGroup)> {
        self.keys
            .as_ref()
            .map(|k| crate::proposal::additional_ke_list(&k.additional_ke))
            .unwrap_or_default()
    }

    /// Every key exchange that went into this SA's keys, as proposals name
    /// them (`["x25519", "ke1_mlkem768"]`); empty before IKE_SA_INIT completes.
    pub fn key_exchanges(&self) -> Vec<String> {
        crate::proposal::key_exchange_names(self.suite().map(|s| s.ke), &self.additional_key_exchanges())
    }

    /// True when a key exchange of this SA resists quantum computers.
    pub fn is_post_quantum(&self) -> bool {
        self.suite().is_some_and(|s| s.ke.is_post_quantum())
            || self
                .keys
                .as_ref()
                .is_some_and(|k| k.additional_ke.iter().flatten().any(|g| g.is_post_quantum()))
    }

    /// True once IKE_AUTH completed.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// True when the SA is finished and can be dropped.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True once a DELETE of the whole IKE SA is queued or sent and the peer
    /// has not answered it yet.
    pub fn is_deleting(&self) -> bool {
        let sent = self
            .outstanding()
            .is_some_and(|o| matches!(o.kind, RequestKind::Informational(informational::Pending::DeleteIke)));
        sent || self.outbox.as_ref().is_some_and(|b| b.tasks.contains(&Task::DeleteIke))
    }

    /// True once a rekey replaced this IKE SA (its DELETE may still be under way).
    pub fn is_rekeyed(&self) -> bool {
        self.replaced
    }

    /// True while the IKE_SA_INIT/IKE_AUTH handshake is still running.
    pub fn is_half_open(&self) -> bool {
        matches!(self.state, State::InitSent(_) | State::Authenticating(_))
    }

    /// The CHILD_SAs.
    pub fn children(&self) -> &[ChildSa] {
        &self.children
    }

    /// The name of a child of this SA (its template's name).
    pub fn child_name(&self, child: &ChildSa) -> &str {
        self.config.children.get(child.template).map_or("", |t| t.name.as_str())
    }

    /// True if IKE and ESP use UDP encapsulation (NAT detected).
    pub fn udp_encapsulation(&self) -> bool {
        self.nat.local() || self.nat.remote()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.as_mut()?.transmits.pop_front()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.outbox.as_mut()?.events.pop_front()
    }

    /// The new IKE SA created by a rekey, to be registered by the driver.
    pub fn take_successor(&mut self) -> Option<IkeSa> {
        self.scratch.as_mut()?.successor.take().map(|b| *b)
    }

    /// Frees what exchanges in progress used once the SA is idle: tens of
    /// thousands of idle SAs would otherwise each keep the queues of their
    /// busiest moment.
    pub fn release_idle_buffers(&mut self) {
        if self.outbox.as_ref().is_some_and(|b| b.is_idle()) {
            self.outbox = None;
        }
        if self.scratch.as_ref().is_some_and(|b| b.is_idle()) {
            self.scratch = None;
        }
    }

    /// Queues work (rekey, delete, DPD, new child); it starts when the request window is free.
    pub fn queue(&mut self, now: Instant, task: Task) {
        let tasks = &mut self.outbox().tasks;
        if !tasks.contains(&task) {
            tasks.push_back(task);
        }
        self.start_next_task(now);
    }

    /// The earliest instant at which [`IkeSa::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |c: Instant| c.min(x)));
            }
        };
        if matches!(self.state, State::Closed) {
            return None;
        }
        consider(self.outstanding().map(|o| o.deadline));
        match self.state {
            State::Established(_) => {
                consider(self.rekey_at);
                consider(self.expire_at);
                consider(followup_ke::expiry(self));
                if self.cached_response.is_some() {
                    consider(Some(self.last_inbound + RESPONSE_CACHE_TTL));
                }
                if let Some(d) = self.config.dpd_delay {
                    if self.outstanding().is_none() {
                        consider(Some(self.last_inbound + d));
                    }
                }
                if let Some(d) = self.keepalive_interval() {
                    consider(self.keepalive_due(d));
                }
                for c in &self.children {
                    if c.state == ChildState::Installed {
                        consider(c.rekey_at);
                    }
                    consider(c.expire_at);
                }
            }
            State::Authenticating(_) if self.role == Role::Responder => {
                consider(Some(self.created_at + self.ctx.half_open_timeout));
            }
            _ => {}
        }
        t
    }

    /// Handles the passing of time: retransmissions, rekeys, DPD, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Closed) {
            return;
        }
        if let Some(o) = self.outbox.as_mut().and_then(|b| b.outstanding.as_mut()) {
            if now >= o.deadline {
                if o.tries >= self.config.retransmit_tries {
                    let (tries, message_id) = (o.tries, o.message_id);
                    match o.dropped_answer.take() {
                        Some(why) => {
                            warn!(
                                connection = %self.config.name,
                                peer = %self.remote,
                                message_id,
                                "giving up on the IKE SA after {tries} retransmissions: the peer answered, but its answer was dropped: {why}"
                            );
                            self.close(DownReason::Failed(format!("the peer's answer was dropped: {why}")));
                        }
                        None => {
                            warn!(
                                connection = %self.config.name,
                                peer = %self.remote,
                                message_id,
                                "peer did not answer after {tries} retransmissions, giving up on the IKE SA"
                            );
                            self.close(DownReason::Timeout);
                        }
                    }
                    return;
                }
                o.tries += 1;
                let backoff = self.config.retransmit_base.powi(o.tries as i32);
                o.deadline = now + self.config.retransmit_timeout.mul_f64(backoff);
                debug!(message_id = o.message_id, try_ = o.tries, "retransmitting request");
                let datagrams = o.datagrams.clone();
                for d in datagrams {
                    self.push_transmit(d);
                }
            }
        }
        match self.state {
            State::Authenticating(_) if self.role == Role::Responder => {
                if now >= self.created_at + self.ctx.half_open_timeout {
                    info!(peer = %self.remote, "half-open IKE SA timed out waiting for IKE_AUTH");
                    self.close(DownReason::Timeout);
                }
                return;
            }
            State::Established(_) => {}
            _ => return,
        }
        if self.cached_response.is_some() && now >= self.last_inbound + RESPONSE_CACHE_TTL {
            self.cached_response = None;
        }
        followup_ke::expire(self, now);
        if self.expire_at.is_some_and(|e| now >= e) {
            info!(connection = %self.config.name, "IKE SA hard lifetime expired");
            // One DELETE, not retransmitted: the keys end here, but the peer
            // should not keep the SA and its CHILD_SAs until DPD notices. With
            // a request still unanswered the window is full and it would be
            // ignored, so nothing is sent then.
            if self.outstanding().is_none() {
                informational::start_delete_ike(self, now);
            }
            self.close(DownReason::Expired);
            return;
        }
        if self.rekey_at.is_some_and(|r| now >= r) {
            self.rekey_at = None;
            self.queue(now, Task::RekeyIke);
        }
        let mut expired = Vec::new();
        let mut rekey = Vec::new();
        for c in &mut self.children {
            if c.expire_at.is_some_and(|e| now >= e) {
                // Its DELETE is queued once; a deadline left in the past would
                // fire again at once for as long as another exchange is outstanding.
                c.expire_at = None;
                expired.push(c.spi_in);
            } else if c.state == ChildState::Installed && c.rekey_at.is_some_and(|r| now >= r) {
                c.rekey_at = None;
                rekey.push(c.spi_in);
            }
        }
        for spi in expired {
            self.queue(now, Task::DeleteChild(spi));
        }
        for spi in rekey {
            self.queue(now, Task::RekeyChild(spi));
        }
        if let Some(d) = self.config.dpd_delay {
            if self.outstanding().is_none() && now >= self.last_inbound + d {
                self.queue(now, Task::Dpd);
            }
        }
        if let Some(d) = self.keepalive_interval() {
            if self.keepalive_due(d).is_some_and(|due| now >= due) {
                let elapsed = now.saturating_duration_since(self.last_inbound).as_nanos() / d.as_nanos().max(1);
                self.keepalive_periods = u16::try_from(elapsed).unwrap_or(u16::MAX);
                if self.keepalive_periods == u16::MAX {
                    warn!(peer = %self.remote, "no IKE message from the peer for {} keepalive intervals: NAT keepalives stop", u16::MAX);
                }
                trace!(peer = %self.remote, "NAT keepalive");
                self.push_transmit(vec![crate::wire::ingress::NAT_KEEPALIVE]);
            }
        }
        self.start_next_task(now);
    }

    /// When the next NAT keepalive is due with interval `d` (none once the
    /// count is exhausted).
    fn keepalive_due(&self, d: Duration) -> Option<Instant> {
        d.checked_mul(u32::from(self.keepalive_periods.checked_add(1)?))
            .and_then(|t| self.last_inbound.checked_add(t))
    }

    /// The NAT keepalive interval while we are behind a NAT on the NAT-T
    /// port of an established SA (RFC 3948 §2.3); `None` otherwise.
    fn keepalive_interval(&self) -> Option<Duration> {
        let behind_nat = matches!(self.state, State::Established(_)) && self.nat.local() && self.nat.t();
        behind_nat.then_some(self.config.nat_keepalive).flatten()
    }

    /// Notes that an answer to our outstanding request `message_id` was
    /// dropped (undecodable, or failing its integrity check), so that the
    /// request, when it is given up, names the cause.
    pub fn note_dropped_answer(&mut self, message_id: u32, why: &dyn std::fmt::Display) {
        if let Some(o) = self
            .outbox
            .as_mut()
            .and_then(|b| b.outstanding.as_mut())
            .filter(|o| o.message_id == message_id)
        {
            debug!(peer = %self.remote, message_id, "dropping the answer to our request: {why}");
            o.dropped_answer = Some(why.to_string());
        }
    }

    /// Handles one received datagram (without the non-ESP marker).
    pub fn handle(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) {
        let msg = match ikev2::decode_message(datagram) {
            Ok(m) => m,
            Err(e) => {
                debug!(peer = %remote, "dropping undecodable IKE message: {e}");
                if let Some(h) = crate::wire::ingress::peek_header(datagram).filter(|h| h.is_response()) {
                    self.note_dropped_answer(h.message_id, &e);
                }
                return;
            }
        };
        self.handle_message(now, local, remote, datagram, msg);
    }

    /// Handles a message already decoded by the endpoint.
    pub fn handle_message(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        msg: ikev2::Message,
    ) {
        if matches!(self.state, State::Closed) {
            return;
        }
        let from_initiator = msg.header.is_initiator();
        if from_initiator != (self.role == Role::Responder) {
            debug!(peer = %remote, "dropping message with wrong Initiator flag");
            return;
        }
        if msg.header.is_response() {
            self.handle_response(now, local, remote, datagram, msg);
        } else {
            self.handle_request(now, local, remote, datagram, msg);
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        msg: ikev2::Message,
    ) {
        let Some(out) = self.outstanding() else {
            debug!("dropping response with no outstanding request");
            return;
        };
        if out.message_id != msg.header.message_id {
            debug!(
                got = msg.header.message_id,
                want = out.message_id,
                "dropping response with unexpected message ID"
            );
            return;
        }
        if msg.header.exchange == ExchangeType::IKE_SA_INIT {
            if matches!(self.state, State::InitSent(_)) {
                sa_init::handle_response(self, now, local, remote, datagram, msg);
            }
            return;
        }
        let Some(inner) = self.open(remote, datagram, &msg) else {
            return;
        };
        self.after_authentic_inbound(now, local, remote);
        let Some(out) = self.take_outstanding() else { return };
        match out.kind {
            RequestKind::Init => {}
            RequestKind::Intermediate(pending) => intermediate::handle_response(self, now, &msg.header, inner, pending),
            RequestKind::Auth(pending) => auth::handle_response(self, now, inner, pending),
            RequestKind::CreateChild(pending) => create_child::handle_response(self, now, inner, pending),
            RequestKind::Informational(pending) => informational::handle_response(self, now, inner, pending),
            RequestKind::FollowupKe(pending) => followup_ke::handle_response(self, now, inner, pending),
        }
        self.start_next_task(now);
    }

    fn handle_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        msg: ikev2::Message,
    ) {
        let mid = msg.header.message_id;
        let first_fragment = msg
            .payloads
            .iter()
            .all(|p| !matches!(p, Payload::Skf { number, .. } if *number != 1));
        if let Some(cached) = &self.cached_response {
            if cached.message_id == mid {
                // Retransmitted request: answer from the cache. For fragmented
                // requests only fragment 1 triggers it (RFC 7383 §2.6.1).
                let same = first_fragment && (mid == 0 || cached.request_digest == Some(request_digest(datagram)));
                if same {
                    debug!(message_id = mid, "retransmitted request, resending cached response");
                    let datagrams: Vec<Vec<u8>> = cached.datagrams().map(<[u8]>::to_vec).collect();
                    let first = self.queued_transmits();
                    for d in datagrams {
                        self.push_transmit(d);
                    }
                    self.answer_at(first, local, remote);
                }
                return;
            }
        }
        let resyncing = self.resync_request_id && mid.wrapping_sub(self.expected_request_id) < RESYNC_WINDOW;
        if mid != self.expected_request_id && !resyncing {
            debug!(
                got = mid,
                want = self.expected_request_id,
                "dropping request outside the window"
            );
            return;
        }
        if msg.header.exchange == ExchangeType::IKE_SA_INIT {
            return;
        }
        if !matches!(self.state, State::Established(_) | State::Authenticating(_)) {
            return;
        }
        if first_fragment {
            self.scratch().current_request_digest = Some(request_digest(datagram));
        }
        let Some(inner) = self.open(remote, datagram, &msg) else {
            return;
        };
        if self.resync_request_id {
            if mid != self.expected_request_id {
                info!(
                    from = self.expected_request_id,
                    to = mid,
                    "resumed IKE SA: the peer's message IDs moved on since the checkpoint; following it"
                );
            }
            self.resync_request_id = false;
            self.expected_request_id = mid;
        }
        self.after_authentic_inbound(now, local, remote);
        if let Some(Payload::Unknown { ty, .. }) = inner
            .iter()
            .find(|p| matches!(p, Payload::Unknown { critical: true, .. }))
        {
            warn!(payload = ty.0, "peer sent an unsupported critical payload");
            let n = notify(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![ty.0]);
            self.send_response(msg.header.exchange, mid, vec![n]);
            return;
        }
        let first = self.queued_transmits();
        self.dispatch_request(now, local, remote, &msg, mid, inner);
        self.answer_at(first, local, remote);
        self.start_next_task(now);
    }

    /// Datagrams queued for the driver so far.
    fn queued_transmits(&self) -> usize {
        self.outbox.as_ref().map_or(0, |b| b.transmits.len())
    }

    /// Sends the datagrams queued from index `first` on (the answer to a
    /// request) to where the request came from, as RFC 7296 §2.11 wants:
    /// a MOBIKE peer probes a new path before it moves the SA there.
    fn answer_at(&mut self, first: usize, local: SocketAddr, remote: SocketAddr) {
        let local = if local.ip().is_unspecified() {
            SocketAddr::new(self.local.ip(), local.port())
        } else {
            local
        };
        if let Some(b) = self.outbox.as_mut() {
            for t in b.transmits.iter_mut().skip(first) {
                t.local = local;
                t.remote = remote;
            }
        }
    }

    /// Hands an authenticated request to its exchange.
    fn dispatch_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        msg: &ikev2::Message,
        mid: u32,
        inner: Vec<Payload>,
    ) {
        match (msg.header.exchange, &self.state) {
            (ExchangeType::IKE_AUTH, State::Authenticating(ctx))
                if self.role == Role::Responder && !ctx.additional_ke.is_empty() =>
            {
                warn!(peer = %self.remote, "IKE_AUTH before the additional key exchanges: refused");
                self.send_response(
                    ExchangeType::IKE_AUTH,
                    mid,
                    vec![notify(NotifyType::INVALID_SYNTAX, vec![])],
                );
                self.close(DownReason::Failed(
                    "IKE_AUTH before the additional key exchanges".into(),
                ));
            }
            (ExchangeType::IKE_AUTH, State::Authenticating(_)) if self.role == Role::Responder => {
                auth::handle_request(self, now, mid, inner)
            }
            (ExchangeType::INFORMATIONAL, State::Authenticating(c))
                if self.role == Role::Responder && c.eap.is_some() =>
            {
                eap::handle_informational(self, mid, inner)
            }
            (ExchangeType::IKE_INTERMEDIATE, State::Authenticating(_)) if self.role == Role::Responder => {
                intermediate::handle_request(self, &msg.header, mid, inner)
            }
            (ExchangeType::CREATE_CHILD_SA, State::Established(_)) => {
                create_child::handle_request(self, now, mid, inner)
            }
            (ExchangeType::INFORMATIONAL, State::Established(_)) => {
                informational::handle_request(self, now, mid, inner, local, remote)
            }
            (ExchangeType::IKE_FOLLOWUP_KE, State::Established(_)) => {
                followup_ke::handle_request(self, now, mid, inner)
            }
            (ex, _) => {
                debug!(exchange = %ex, "request not valid in this state");
                self.send_response(ex, mid, vec![notify(NotifyType::INVALID_SYNTAX, vec![])]);
            }
        }
    }

    /// Decrypts the SK payload, or adds an SKF fragment; None until a whole message is there.
    fn open(&mut self, source: SocketAddr, datagram: &[u8], msg: &ikev2::Message) -> Option<Vec<Payload>> {
        let keys = self.keys.as_ref()?;
        let result = match msg.payloads.last() {
            Some(Payload::Sk { .. }) => sk::open_decoded(datagram, msg, &keys.inbound).map(Some),
            Some(Payload::Skf { .. }) => self
                .scratch
                .get_or_insert_with(Box::default)
                .reassembler
                .get_or_insert_with(|| Box::new(FragmentReassembler::new()))
                .push(datagram, &keys.inbound),
            _ => {
                debug!("dropping message without encrypted payload");
                return None;
            }
        };
        match result {
            Ok(Some(inner)) => {
                if let Some(b) = self.scratch.as_mut() {
                    b.reassembler = None;
                }
                Some(inner)
            }
            Ok(None) => None,
            Err(e) => {
                debug!(peer = %self.remote, "dropping message: {e}");
                if msg.header.is_response() {
                    self.note_dropped_answer(msg.header.message_id, &e);
                }
                self.push_event(Event::Refused {
                    source,
                    reason: crate::drops::DropReason::Unauthenticated,
                    detail: format!("{} {}: {e}", msg.header.exchange, msg.header.message_id),
                });
                None
            }
        }
    }

    /// Bookkeeping after a message passed its integrity check.
    fn after_authentic_inbound(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr) {
        self.last_inbound = now;
        self.keepalive_periods = 0;
        // A driver reading a wildcard socket without packet info knows only the
        // port: keep the address the SA already has.
        let local = if local.ip().is_unspecified() {
            SocketAddr::new(self.local.ip(), local.port())
        } else {
            local
        };
        if !self.nat.t() && local.port() == self.ctx.local_nat_port && local.port() != self.local.port() {
            // The initiator moved to the NAT-T port (RFC 7296 §2.23): answer there.
            self.nat.set_t(true);
            self.local = local;
            self.remote = remote;
        } else if remote != self.remote && (self.nat.local() || self.nat.remote()) && self.may_follow(remote) {
            info!(old = %self.remote, new = %remote, "peer address changed behind NAT, following it (IKE)");
            self.remote = remote;
            self.local = local;
            self.move_children();
        }
    }

    /// An authenticated ESP packet of one of our CHILD_SAs came from
    /// `source`, not from the peer's address: with a NAT between us, the
    /// peer's mapping changed (RFC 7296 §2.23), so IKE and ESP follow it.
    /// Without a NAT an address change is MOBIKE's business, not this.
    /// Returns whether the SA moved.
    pub fn follow_peer(&mut self, source: SocketAddr) -> bool {
        if !matches!(self.state, State::Established(_)) || source == self.remote {
            return false;
        }
        if !(self.nat.local() || self.nat.remote()) || !self.may_follow(source) {
            debug!(peer = %self.remote, %source, "ESP from another address: not followed (no NAT, or a new IP address under MOBIKE)");
            return false;
        }
        info!(old = %self.remote, new = %source, "peer address changed behind NAT, following it (ESP)");
        self.remote = source;
        self.move_children();
        true
    }

    /// Whether a NAT rebinding to `remote` is followed without being told:
    /// always without MOBIKE; with it, a new port only, since a new IP
    /// address comes with UPDATE_SA_ADDRESSES and a return routability
    /// check (RFC 4555 §3.5).
    fn may_follow(&self, remote: SocketAddr) -> bool {
        !self.nat.mobike() || remote.ip() == self.remote.ip()
    }

    /// MOBIKE client role: our address is now `local` (an interface or
    /// route change the driver saw). With MOBIKE negotiated the SA moves
    /// there and tells the peer (UPDATE_SA_ADDRESSES); false otherwise.
    pub fn update_local_address(&mut self, now: Instant, local: SocketAddr) -> bool {
        if !matches!(self.state, State::Established(_)) || !self.nat.mobike() {
            return false;
        }
        if local == self.local {
            return true;
        }
        info!(old = %self.local, new = %local, peer = %self.remote, "our address changed: updating the peer (MOBIKE)");
        self.local = local;
        // A request in flight was sent from the old address, where its
        // answer may no longer arrive: send it again from the new one now
        // rather than after a retransmission timeout (RFC 4555 §3.5), so
        // the update queued behind it is not held up.
        let resend = self.outbox.as_mut().and_then(|b| b.outstanding.as_mut()).map(|o| {
            o.deadline = now + self.config.retransmit_timeout;
            o.datagrams.clone()
        });
        for d in resend.into_iter().flatten() {
            self.push_transmit(d);
        }
        self.queue(now, Task::UpdateSaAddresses);
        true
    }

    /// MOBIKE client role: the host's addresses changed. `local` is the
    /// address the SA should now use and `additional` the others the peer
    /// may reach us at (RFC 4555 §3.6). A new `local` moves the SA
    /// (UPDATE_SA_ADDRESSES, which carries the list); the same one only
    /// announces the list. False without MOBIKE, or when we are not the
    /// initiator, which alone decides on addresses (§3.1).
    pub fn local_addresses_changed(&mut self, now: Instant, local: SocketAddr, additional: &[IpAddr]) -> bool {
        if !matches!(self.state, State::Established(_)) || !self.nat.mobike() || self.role != Role::Initiator {
            return false;
        }
        let others: Box<[IpAddr]> = additional
            .iter()
            .copied()
            .filter(|a| *a != local.ip())
            .take(mobike::MAX_ADDITIONAL_ADDRESSES)
            .collect();
        self.outbox().additional_addresses = Some(others);
        if local == self.local {
            self.queue(now, Task::AnnounceAddresses);
        } else {
            self.update_local_address(now, local);
        }
        true
    }

    /// Whether MOBIKE was negotiated on this SA.
    pub fn mobike(&self) -> bool {
        self.nat.mobike()
    }

    /// Tells the driver to move the installed CHILD_SAs to the SA's current addresses.
    pub(crate) fn move_children(&mut self) {
        let spis_in: Vec<u32> = self.children.iter().map(|c| c.spi_in).collect();
        if spis_in.is_empty() {
            return;
        }
        let udp_encap = self.udp_encapsulation();
        let (mut local, mut remote) = (self.local, self.remote);
        if !udp_encap {
            local.set_port(0);
            remote.set_port(0);
        }
        self.push_event(Event::ChildSasMoved {
            spis_in,
            local,
            remote,
            udp_encap,
        });
    }

    /// Whether a NAT was detected in front of us and in front of the peer.
    pub fn nat_detected(&self) -> (bool, bool) {
        (self.nat.local(), self.nat.remote())
    }

    /// Starts the next queued task if no request is outstanding.
    pub(crate) fn start_next_task(&mut self, now: Instant) {
        while self.outstanding().is_none() && matches!(self.state, State::Established(_)) {
            let Some(task) = self.outbox.as_mut().and_then(|b| b.tasks.pop_front()) else {
                return;
            };
            match task {
                Task::CreateChild(idx) => create_child::start_new_child(self, now, idx),
                Task::RekeyChild(spi) => create_child::start_rekey_child(self, now, spi),
                Task::RekeyIke => create_child::start_rekey_ike(self, now),
                Task::DeleteChild(spi) => informational::start_delete_child(self, now, spi),
                Task::DeleteIke => informational::start_delete_ike(self, now),
                Task::Dpd => informational::start_dpd(self, now),
                Task::UpdateSaAddresses => mobike::start_update(self, now),
                Task::AnnounceAddresses => mobike::start_announce(self, now),
                Task::ReturnRoutability => mobike::start_return_routability(self, now),
            }
        }
    }

    pub(crate) fn header(&self, exchange: ExchangeType, message_id: u32, response: bool) -> Header {
        let mut flags = 0;
        if self.role == Role::Initiator {
            flags |= FLAG_INITIATOR;
        }
        if response {
            flags |= FLAG_RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: ikev2::PayloadType::NONE,
            major_version: 2,
            minor_version: 0,
            exchange,
            flags,
            message_id,
            length: 0,
        }
    }

    /// Encrypts `inner` into one SK datagram or, when the peer supports it and
    /// the message is large, into SKF fragments.
    fn protect(&self, header: &Header, inner: &[Payload]) -> Result<Vec<Vec<u8>>, Error> {
        let keys = self
            .keys
            .as_ref()
            .ok_or_else(|| Error::InvalidSyntax("no keys".into()))?;
        let whole = sk::seal_message(header, inner, &keys.outbound)?;
        let limit = self
            .config
            .fragment_size
            .saturating_sub(if self.remote.is_ipv4() { 28 } else { 48 });
        if self.peer_fragmentation && self.config.fragmentation && whole.len() > limit {
            Ok(sk::seal_fragments(header, inner, &keys.outbound, limit)?)
        } else {
            Ok(vec![whole])
        }
    }

    /// Sends a new encrypted request and makes it the outstanding one.
    pub(crate) fn send_request(
        &mut self,
        now: Instant,
        exchange: ExchangeType,
        inner: Vec<Payload>,
        kind: RequestKind,
    ) {
        let mid = self.next_request_id;
        let header = self.header(exchange, mid, false);
        let datagrams = match self.protect(&header, &inner) {
            Ok(d) => d,
            Err(e) => {
                warn!("cannot encode request: {e}");
                return;
            }
        };
        self.next_request_id = self.next_request_id.wrapping_add(1);
        for d in &datagrams {
            self.push_transmit(d.clone());
        }
        self.outbox().outstanding = Some(Box::new(Outstanding {
            message_id: mid,
            datagrams,
            kind,
            tries: 0,
            deadline: now + self.config.retransmit_timeout,
            dropped_answer: None,
        }));
    }

    /// Sends (and caches) an encrypted response to request `mid`.
    pub(crate) fn send_response(&mut self, exchange: ExchangeType, mid: u32, inner: Vec<Payload>) {
        let header = self.header(exchange, mid, true);
        let datagrams = match self.protect(&header, &inner) {
            Ok(d) => d,
            Err(e) => {
                warn!("cannot encode response: {e}");
                return;
            }
        };
        for d in &datagrams {
            self.push_transmit(d.clone());
        }
        let digest = self.scratch.as_mut().and_then(|b| b.current_request_digest.take());
        self.cached_response = Some(CachedResponse::new(mid, digest, datagrams));
        self.expected_request_id = mid.wrapping_add(1);
    }

    pub(crate) fn push_transmit(&mut self, data: Vec<u8>) {
        let t = Transmit {
            local: self.local,
            remote: self.remote,
            non_esp_marker: self.nat.t(),
            data,
        };
        self.outbox().transmits.push_back(t);
    }

    /// Queues an event for the driver.
    pub(crate) fn push_event(&mut self, e: Event) {
        self.outbox().events.push_back(e);
    }

    /// Moves IKE to the NAT-T ports (RFC 7296 §2.23).
    pub(crate) fn float_to_nat_t(&mut self) {
        if !self.nat.t() {
            self.nat.set_t(true);
            self.local.set_port(self.ctx.local_nat_port);
            self.remote
                .set_port(self.config.remote_nat_port.unwrap_or(self.ctx.remote_nat_port));
        }
    }

    /// Ends the SA at once, without telling the peer: reports deleted children, then the IKE SA itself.
    pub fn close(&mut self, reason: DownReason) {
        config_payload::release(self);
        for c in std::mem::take(&mut self.children) {
            self.ctx.child_spis.release(c.spi_in);
            self.push_event(Event::ChildSaDeleted {
                spi_in: c.spi_in,
                spi_out: c.spi_out,
            });
        }
        if let Some(b) = self.outbox.as_mut() {
            b.outstanding = None;
            b.tasks.clear();
        }
        if !self.down_reported {
            self.down_reported = true;
            self.push_event(Event::IkeSaDown {
                spis: (self.spi_i, self.spi_r),
                reason,
            });
        }
        self.state = State::Closed;
    }

    /// Initiates a graceful delete of the whole IKE SA (DELETE to the peer).
    pub fn delete(&mut self, now: Instant) {
        if matches!(self.state, State::Established(_)) {
            if let Some(b) = self.outbox.as_mut() {
                b.tasks.clear();
            }
            self.queue(now, Task::DeleteIke);
        } else {
            self.close(DownReason::Deleted);
        }
    }
}

/// A short digest identifying a request datagram (for retransmission detection).
fn request_digest(datagram: &[u8]) -> [u8; 16] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, datagram);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

/// A Notify payload without SPI (for drivers and the endpoint).
pub fn notify_payload(ty: NotifyType, data: Vec<u8>) -> Payload {
    notify(ty, data)
}

/// A Notify payload without SPI.
pub(crate) fn notify(ty: NotifyType, data: Vec<u8>) -> Payload {
    Payload::Notify(Notify {
        protocol: ProtocolId::NONE,
        spi: Vec::new(),
        ty,
        data,
    })
}

/// Finds a notify of a type among payloads.
pub(crate) fn find_notify(payloads: &[Payload], ty: NotifyType) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.ty == ty => Some(n),
        _ => None,
    })
}

/// The first error notify among payloads, if any.
pub(crate) fn error_notify(payloads: &[Payload]) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.ty.is_error() => Some(n),
        _ => None,
    })
}

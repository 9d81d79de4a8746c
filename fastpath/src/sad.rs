//! SA database: inbound SAs by SPI, outbound SAs by [`SaId`].
//!
//! Both tables are lock-free for readers ([`crate::epoch_table`]): the
//! control plane installs, rekeys and deletes SAs (serialised by a writer
//! lock) while workers look them up without locking or writing shared memory;
//! a worker pins once per burst and borrows the SAs for the burst
//! ([`Sad::inbound_pinned`]), other callers get an `Arc` ([`Sad::inbound`]). Old and new inbound SAs of a
//! rekey coexist under their own SPIs until the control plane deletes the old
//! one. Lifetime and sequence-exhaustion events go to the control plane over
//! the channel returned by [`Sad::new`].

use crate::epoch_table::{EpochTable, Guard};
use crate::esp::aead::{CipherKeys, EspCipher, KeyError};
use crate::esp::encap::esp_len_for;
use crate::esp::replay::{DEFAULT_WINDOW, MAX_WINDOW, ReplayWindow};
use crate::esp::{EspError, Mode};
use crate::spd::TrafficSelector;
use crate::stats::Counters;
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Identifier of an installed SA, unique within one [`Sad`].
///
/// Outbound ids are a counter; inbound ids have the top bit set and carry
/// their SPI in the low 32 bits (so the SAD needs no id → SPI index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaId(pub u64);

/// Top bit of inbound SA ids.
const INBOUND_ID_BIT: u64 = 1 << 63;

impl SaId {
    /// An inbound id: the top bit, 31 bits of the install counter, the SPI.
    fn inbound(counter: u64, spi: u32) -> Self {
        Self(INBOUND_ID_BIT | ((counter & 0x7fff_ffff) << 32) | u64::from(spi))
    }

    /// The SPI of an inbound id (`None` for an outbound id).
    pub fn inbound_spi(self) -> Option<u32> {
        (self.0 & INBOUND_ID_BIT != 0).then_some(self.0 as u32)
    }
}

/// Direction of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We receive and decrypt with it (SPI chosen by us).
    Inbound,
    /// We encrypt and send with it (SPI chosen by the peer).
    Outbound,
}

/// UDP encapsulation ports (RFC 3948), normally 4500 on both sides after NAT detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpEncap {
    /// Our UDP port.
    pub local_port: u16,
    /// The peer's UDP port (as seen after NAT).
    pub remote_port: u16,
}

/// Where an SA's packets travel: the outer addresses and, with NAT-T, the
/// UDP ports. A peer's move (MOBIKE, NAT rebinding) changes it in place, so
/// sequence numbers, replay window and counters carry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OuterPath {
    /// Our outer address.
    pub local: IpAddr,
    /// The peer's outer address.
    pub remote: IpAddr,
    /// `Some` when ESP travels in UDP (NAT-T).
    pub udp_encap: Option<UdpEncap>,
}

/// Flag bits of [`PathCell`]'s last word.
const PATH_V6: u64 = 1 << 32;
const PATH_UDP: u64 = 1 << 33;

/// An [`OuterPath`] that workers read without locks while the control plane
/// moves it: a sequence lock over atomic words (odd sequence: a write is
/// under way; a reader that saw the sequence change reads again).
#[derive(Debug)]
struct PathCell {
    seq: AtomicU64,
    /// Local address, remote address (16 bytes each, IPv4 mapped), then
    /// ports and flags.
    words: [AtomicU64; 5],
}

impl PathCell {
    fn new(path: &OuterPath) -> Self {
        let cell = Self {
            seq: AtomicU64::new(0),
            words: Default::default(),
        };
        for (w, v) in cell.words.iter().zip(Self::encode(path)) {
            w.store(v, Ordering::Relaxed);
        }
        cell
    }

    fn addr_words(a: IpAddr) -> (u64, u64) {
        let v = match a {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let b = u128::from(v);
        ((b >> 64) as u64, b as u64)
    }

    fn encode(p: &OuterPath) -> [u64; 5] {
        let (l0, l1) = Self::addr_words(p.local);
        let (r0, r1) = Self::addr_words(p.remote);
        let mut meta = if p.local.is_ipv6() { PATH_V6 } else { 0 };
        if let Some(u) = p.udp_encap {
            meta |= PATH_UDP | u64::from(u.local_port) << 16 | u64::from(u.remote_port);
        }
        [l0, l1, r0, r1, meta]
    }

    fn decode(w: [u64; 5]) -> OuterPath {
        let v6 = w[4] & PATH_V6 != 0;
        let addr = |hi: u64, lo: u64| {
            let a = Ipv6Addr::from(u128::from(hi) << 64 | u128::from(lo));
            match (v6, a.to_ipv4_mapped()) {
                (false, Some(v4)) => IpAddr::V4(v4),
                (false, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                (true, _) => IpAddr::V6(a),
            }
        };
        OuterPath {
            local: addr(w[0], w[1]),
            remote: addr(w[2], w[3]),
            udp_encap: (w[4] & PATH_UDP != 0).then(|| UdpEncap {
                local_port: (w[4] >> 16) as u16,
                remote_port: w[4] as u16,
            }),
        }
    }

    #[inline]
    fn load(&self) -> OuterPath {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let w = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return Self::decode(w);
            }
        }
    }

    /// Writers are serialised by the caller (the SAD's writer).
    fn store(&self, path: &OuterPath) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (w, v) in self.words.iter().zip(Self::encode(path)) {
            w.store(v, Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

/// Soft and hard lifetimes in bytes and packets; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// Bytes after which [`SaEvent::SoftExpired`] is raised (rekey time).
    pub soft_bytes: u64,
    /// Bytes after which the SA stops and [`SaEvent::HardExpired`] is raised.
    pub hard_bytes: u64,
    /// Packets after which [`SaEvent::SoftExpired`] is raised.
    pub soft_packets: u64,
    /// Packets after which the SA stops and [`SaEvent::HardExpired`] is raised.
    pub hard_packets: u64,
}

/// Everything the data plane needs to run one direction of a Child SA.
///
/// The daemon fills it from the IKE `ChildSaInstalled` event: one `SaParams`
/// for the inbound SA (our SPI, the keys the peer encrypts with) and one for
/// the outbound SA (the peer's SPI, our sending keys).
#[derive(Debug, Clone)]
pub struct SaParams {
    /// SPI in the ESP header (inbound: ours; outbound: the peer's).
    pub spi: u32,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Tunnel or transport mode.
    pub mode: Mode,
    /// Algorithms and keys for this direction.
    pub keys: CipherKeys,
    /// Our outer address.
    pub local: IpAddr,
    /// The peer's outer address.
    pub remote: IpAddr,
    /// `Some` when ESP travels in UDP (NAT-T).
    pub udp_encap: Option<UdpEncap>,
    /// Extended (64-bit) sequence numbers negotiated.
    pub esn: bool,
    /// Replay window in packets (inbound; default 1024, up to 65536, rounded
    /// up to a power of two).
    pub replay_window: u32,
    /// Byte and packet lifetimes (time lifetimes are the control plane's job).
    pub lifetime: Lifetime,
    /// Path MTU towards the peer; outbound packets that would exceed it are dropped.
    pub path_mtu: u16,
    /// Our side's traffic selectors (inbound: allowed inner destinations; empty = any).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's traffic selectors (inbound: allowed inner sources; empty = any).
    pub remote_ts: Vec<TrafficSelector>,
}

impl SaParams {
    /// The outer path these parameters describe.
    pub fn path(&self) -> OuterPath {
        OuterPath {
            local: self.local,
            remote: self.remote,
            udp_encap: self.udp_encap,
        }
    }

    /// Parameters with defaults: tunnel mode, no NAT-T, no ESN, window
    /// [`DEFAULT_WINDOW`], no lifetimes, path MTU 1500, no selector checks.
    pub fn new(spi: u32, direction: Direction, keys: CipherKeys, local: IpAddr, remote: IpAddr) -> Self {
        Self {
            spi,
            direction,
            mode: Mode::Tunnel,
            keys,
            local,
            remote,
            udp_encap: None,
            esn: false,
            replay_window: DEFAULT_WINDOW,
            lifetime: Lifetime::default(),
            path_mtu: 1500,
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
        }
    }
}

/// Events for the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaEvent {
    /// A soft lifetime was reached: time to rekey.
    SoftExpired {
        /// The SA.
        sa: SaId,
    },
    /// A hard lifetime was reached: the SA no longer passes traffic.
    HardExpired {
        /// The SA.
        sa: SaId,
    },
    /// The outbound sequence number space is exhausted: rekey now.
    SeqExhausted {
        /// The SA.
        sa: SaId,
    },
    /// An authenticated UDP-encapsulated packet of this inbound SA came from
    /// another address or port than the SA's peer: the peer's NAT mapping
    /// changed (the control plane decides whether to follow).
    PeerMoved {
        /// The inbound SA.
        sa: SaId,
        /// The packet's outer source.
        source: std::net::SocketAddr,
    },
}

/// SAD errors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SadError {
    /// Keys or algorithms are invalid.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An inbound SA with this SPI exists.
    #[error("inbound SPI {0:#010x} is already installed")]
    SpiInUse(u32),
    /// SPI 0 (and 1..=255) are reserved (RFC 4303 §2.1).
    #[error("SPI {0:#x} is reserved")]
    ReservedSpi(u32),
    /// `install_inbound` got outbound parameters or vice versa.
    #[error("parameters are for the other direction")]
    WrongDirection,
    /// Local and remote addresses are of different families.
    #[error("local and remote addresses are of different families")]
    FamilyMismatch,
    /// Path MTU too small to carry any packet.
    #[error("path MTU {0} is too small")]
    PathMtu(u16),
    /// No SA with this id.
    #[error("no SA {0:?}")]
    NotFound(SaId),
}

/// Lifetime accounting shared by both directions.
#[derive(Debug)]
struct LifetimeState {
    limits: Lifetime,
    soft_fired: AtomicBool,
    hard_fired: AtomicBool,
}

impl LifetimeState {
    /// The state for `limits`, or `None` when there are no limits.
    fn boxed(limits: Lifetime) -> Option<Box<Self>> {
        (limits != Lifetime::default()).then(|| Box::new(Self::new(limits)))
    }

    fn new(limits: Lifetime) -> Self {
        Self {
            limits,
            soft_fired: AtomicBool::new(false),
            hard_fired: AtomicBool::new(false),
        }
    }

    /// Checks limits after `packets`/`bytes` were counted; fires events once.
    fn after_count(&self, id: SaId, packets: u64, bytes: u64, events: &Sender<SaEvent>) {
        let l = &self.limits;
        let over = |limit: u64, v: u64| limit != 0 && v >= limit;
        if over(l.hard_packets, packets) || over(l.hard_bytes, bytes) {
            if !self.hard_fired.swap(true, Ordering::Relaxed) {
                let _ = events.send(SaEvent::HardExpired { sa: id });
            }
        } else if (over(l.soft_packets, packets) || over(l.soft_bytes, bytes))
            && !self.soft_fired.swap(true, Ordering::Relaxed)
        {
            let _ = events.send(SaEvent::SoftExpired { sa: id });
        }
    }

    /// Packets and bytes that may still pass before the hard limit.
    fn budget(&self, counters: &Counters) -> (u64, u64) {
        let (p, b) = counters.totals();
        let left = |limit: u64, v: u64| {
            if limit == 0 { u64::MAX } else { limit.saturating_sub(v) }
        };
        (left(self.limits.hard_packets, p), left(self.limits.hard_bytes, b))
    }

    fn is_hard_expired(&self) -> bool {
        self.hard_fired.load(Ordering::Relaxed)
    }
}

/// The lifetime accounting of one SA, either direction: `None` when no byte
/// or packet lifetime is set (the usual case: 32 B less per SA).
#[derive(Debug)]
struct SaLifetime(Option<Box<LifetimeState>>);

impl SaLifetime {
    fn new(limits: Lifetime) -> Self {
        Self(LifetimeState::boxed(limits))
    }

    fn is_hard_expired(&self) -> bool {
        self.0.as_ref().is_some_and(|l| l.is_hard_expired())
    }

    /// Counts packets on `counters` and raises the lifetime events of SA `id`.
    fn account(&self, id: SaId, counters: &Counters, packets: u64, bytes: u64, events: &Sender<SaEvent>) {
        let (p, b) = counters.add(packets, bytes);
        if let Some(l) = &self.0 {
            l.after_count(id, p, b, events);
        }
    }

    fn hard_budget(&self, counters: &Counters) -> (u64, u64) {
        self.0.as_ref().map_or((u64::MAX, u64::MAX), |l| l.budget(counters))
    }
}

/// Selectors of an inbound SA: a single one (the usual case) inline in the
/// SA entry, which has room for it in its allocator size class (no
/// allocation, no pointer to follow on the packet path); more on the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaSelectors {
    /// Exactly one selector.
    One(TrafficSelector),
    /// Any other number (empty = any).
    Many(Box<[TrafficSelector]>),
}

impl std::ops::Deref for SaSelectors {
    type Target = [TrafficSelector];

    #[inline]
    fn deref(&self) -> &[TrafficSelector] {
        match self {
            Self::One(t) => std::slice::from_ref(t),
            Self::Many(ts) => ts,
        }
    }
}

impl From<&[TrafficSelector]> for SaSelectors {
    fn from(ts: &[TrafficSelector]) -> Self {
        match ts {
            [one] => Self::One(*one),
            more => Self::Many(more.into()),
        }
    }
}

/// An installed inbound SA.
#[derive(Debug)]
pub struct InboundSa {
    /// Its id.
    pub id: SaId,
    /// Our SPI.
    pub spi: u32,
    /// Keyed cipher.
    pub cipher: EspCipher,
    /// Tunnel or transport.
    pub mode: Mode,
    /// ESN negotiated.
    pub esn: bool,
    /// Outer addresses and NAT-T ports; moved in place by [`Sad::move_path`].
    path: PathCell,
    /// The last peer address reported by [`InboundSa::note_source`], so a
    /// rebinding is reported once, not per packet.
    /// A hash of it (0: none), to keep the entry small.
    reported_source: AtomicU64,
    /// Allowed inner destinations (empty = any).
    pub local_ts: SaSelectors,
    /// Allowed inner sources (empty = any).
    pub remote_ts: SaSelectors,
    /// Replay window; locked by the one worker that owns the SA's traffic.
    pub replay: Mutex<ReplayWindow>,
    /// Counters of this SA.
    pub counters: Counters,
    life: SaLifetime,
    /// Where the replay bitmap lives (a prefetch hint, never dereferenced).
    replay_bits: (usize, usize),
}

/// Most of a replay bitmap that [`InboundSa::prefetch_side_state`] loads (8,192-packet window).
const REPLAY_PREFETCH_MAX: usize = 1024;

impl InboundSa {
    /// Current outer addresses and NAT-T ports.
    #[inline]
    pub fn path(&self) -> OuterPath {
        self.path.load()
    }

    /// Our current outer address (packets for another are not this SA's).
    #[inline]
    pub fn local(&self) -> IpAddr {
        self.path.load().local
    }

    /// Called with the outer source of an authenticated, UDP-encapsulated
    /// packet: when it differs from the SA's peer address and was not
    /// reported already, returns it so the control plane can follow the
    /// peer's NAT rebinding (RFC 7296 §2.23).
    pub fn note_source(&self, source: std::net::SocketAddr) -> Option<std::net::SocketAddr> {
        let path = self.path.load();
        let current = std::net::SocketAddr::new(path.remote, path.udp_encap?.remote_port);
        if source == current {
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&source, &mut h);
        let tag = h.finish().max(1);
        (self.reported_source.swap(tag, Ordering::Relaxed) != tag).then_some(source)
    }

    /// Starts loading the state this SA keeps outside its entry (replay
    /// bitmap, traffic selectors); call once the entry itself is cached.
    #[inline]
    pub fn prefetch_side_state(&self) {
        let (addr, len) = self.replay_bits;
        crate::prefetch::prefetch_bytes(addr as *const u8, len.min(REPLAY_PREFETCH_MAX));
        // A single selector is inline, in the entry itself.
        if let SaSelectors::Many(ts) = &self.local_ts {
            if !ts.is_empty() {
                crate::prefetch::prefetch_line(ts.as_ptr() as *const u8);
            }
        }
        if let SaSelectors::Many(ts) = &self.remote_ts {
            if !ts.is_empty() {
                crate::prefetch::prefetch_line(ts.as_ptr() as *const u8);
            }
        }
    }

    /// True if an inner packet from `src` to `dst` is allowed by the selectors.
    pub fn allows(&self, flow: &crate::ip::FlowKey) -> bool {
        let src_ok = self.remote_ts.is_empty()
            || self
                .remote_ts
                .iter()
                .any(|t| t.matches(flow.src, flow.proto, flow.src_port));
        let dst_ok = self.local_ts.is_empty()
            || self
                .local_ts
                .iter()
                .any(|t| t.matches(flow.dst, flow.proto, flow.dst_port));
        src_ok && dst_ok
    }

    /// True once the hard lifetime is reached.
    pub fn is_expired(&self) -> bool {
        self.life.is_hard_expired()
    }

    /// Counts accepted packets and raises lifetime events.
    pub fn account(&self, packets: u64, bytes: u64, events: &Sender<SaEvent>) {
        self.life.account(self.id, &self.counters, packets, bytes, events);
    }

    /// Packets and bytes that may still pass before the hard lifetime.
    pub fn hard_budget(&self) -> (u64, u64) {
        self.life.hard_budget(&self.counters)
    }
}

/// An installed outbound SA.
#[derive(Debug)]
pub struct OutboundSa {
    /// Its id.
    pub id: SaId,
    /// The peer's SPI.
    pub spi: u32,
    /// Keyed cipher.
    pub cipher: EspCipher,
    /// Tunnel or transport.
    pub mode: Mode,
    /// ESN negotiated.
    pub esn: bool,
    /// Outer addresses and NAT-T ports; moved in place by [`Sad::move_path`].
    path: PathCell,
    /// Path MTU towards the peer (the ESP size limit follows the outer headers).
    path_mtu: u16,
    /// Largest ESP packet that fits the path MTU (changes with the outer headers).
    max_esp_len: AtomicUsize,
    /// The worker that owns this SA's sequence numbers.
    pub worker: usize,
    /// Next sequence number to use (starts at 1).
    next_seq: AtomicU64,
    /// Counters of this SA.
    pub counters: Counters,
    life: SaLifetime,
}

impl OutboundSa {
    /// Current outer addresses and NAT-T ports.
    #[inline]
    pub fn path(&self) -> OuterPath {
        self.path.load()
    }

    /// Largest ESP packet that fits the path MTU with the current outer headers.
    #[inline]
    pub fn max_esp_len(&self) -> usize {
        self.max_esp_len.load(Ordering::Relaxed)
    }

    /// Allocates the next sequence number, or reports exhaustion.
    #[inline]
    pub fn next_seq(&self, events: &Sender<SaEvent>) -> Result<u64, EspError> {
        self.reserve_seqs(1, events).map(|(s, _)| s)
    }

    /// The next sequence number this SA will use (a checkpoint another
    /// node can continue past).
    pub fn peek_next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }

    /// Sets the next sequence number (tests and state import).
    pub fn set_next_seq(&self, seq: u64) {
        self.next_seq.store(seq, Ordering::Relaxed);
    }

    /// True once the hard lifetime is reached.
    pub fn is_expired(&self) -> bool {
        self.life.is_hard_expired()
    }

    /// Counts sent packets and raises lifetime events.
    pub fn account(&self, packets: u64, bytes: u64, events: &Sender<SaEvent>) {
        self.life.account(self.id, &self.counters, packets, bytes, events);
    }

    /// Packets and bytes that may still pass before the hard lifetime.
    pub fn hard_budget(&self) -> (u64, u64) {
        self.life.hard_budget(&self.counters)
    }

    /// Reserves up to `n` consecutive sequence numbers; returns the first and
    /// how many were granted (fewer than `n` when the space runs out, which
    /// also raises [`SaEvent::SeqExhausted`] once).
    #[inline]
    pub fn reserve_seqs(&self, n: u64, events: &Sender<SaEvent>) -> Result<(u64, u64), EspError> {
        // With ESN the last number is kept as a sentinel (2^64 - 1 is never reached anyway).
        let limit = if self.esn { u64::MAX - 1 } else { u64::from(u32::MAX) };
        if n == 0 {
            return Ok((0, 0));
        }
        // Single writer per SA (its worker); fetch_add keeps numbers unique even if not.
        let start = self.next_seq.fetch_add(n, Ordering::Relaxed);
        if start == 0 || start > limit {
            return Err(EspError::SeqExhausted);
        }
        let last = start.saturating_add(n - 1);
        if last >= limit {
            // This reservation reached the end of the space: report it once.
            let _ = events.send(SaEvent::SeqExhausted { sa: self.id });
            self.next_seq.store(limit + 1, Ordering::Relaxed);
            return Ok((start, limit - start + 1));
        }
        Ok((start, n))
    }
}

/// Hasher for SPIs and SA ids: keys are chosen by us, so a fast multiplicative
/// hash is enough (lookups with attacker-chosen SPIs cannot grow the table).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        let x = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

/// The SA database.
#[derive(Debug)]
pub struct Sad {
    /// Inbound SAs by SPI: read without locks (see [`crate::epoch_table`]).
    inbound: EpochTable<InboundSa>,
    /// Outbound SAs by id: read without locks.
    outbound: EpochTable<OutboundSa>,
    next_id: AtomicU64,
    /// Bumped after every removal, so workers can drop cached SA references.
    generation: AtomicU64,
    workers: usize,
    events: Sender<SaEvent>,
    /// Serialises [`Sad::move_path`] (the path cells take one writer at a time).
    movers: Mutex<()>,
}

impl Sad {
    /// An empty SAD for `workers` workers (outbound SAs are pinned round-robin),
    /// and the receiver of its [`SaEvent`]s.
    pub fn new(workers: usize) -> (Self, Receiver<SaEvent>) {
        let (tx, rx) = channel();
        let sad = Self {
            inbound: EpochTable::new(),
            outbound: EpochTable::new(),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            workers: workers.max(1),
            events: tx,
            movers: Mutex::new(()),
        };
        (sad, rx)
    }

    /// The event sender workers use.
    pub fn events(&self) -> &Sender<SaEvent> {
        &self.events
    }

    fn check_common(p: &SaParams) -> Result<EspCipher, SadError> {
        if p.spi < 256 {
            return Err(SadError::ReservedSpi(p.spi));
        }
        if p.local.is_ipv4() != p.remote.is_ipv4() {
            return Err(SadError::FamilyMismatch);
        }
        Ok(EspCipher::new(&p.keys)?)
    }

    /// Largest ESP packet of `cipher` that fits `path_mtu` behind `path`'s outer headers.
    fn max_esp_len(cipher: &EspCipher, path_mtu: u16, path: &OuterPath) -> Result<usize, SadError> {
        let outer = if path.local.is_ipv4() { 20 } else { 40 } + if path.udp_encap.is_some() { 8 } else { 0 };
        let max_esp_len = usize::from(path_mtu).saturating_sub(outer);
        if max_esp_len < esp_len_for(cipher, 20) {
            return Err(SadError::PathMtu(path_mtu));
        }
        Ok(max_esp_len)
    }

    /// Moves SA `id` (either direction) to new outer addresses, ports and
    /// encapsulation in place: no new SA, so sequence numbers, the replay
    /// window, counters and lifetimes carry on, and packets already in a
    /// worker's hands leave in order. Workers see the new path from their
    /// next lookup.
    pub fn move_path(&self, id: SaId, path: &OuterPath) -> Result<(), SadError> {
        if path.local.is_ipv4() != path.remote.is_ipv4() {
            return Err(SadError::FamilyMismatch);
        }
        let _writer = self.movers.lock().unwrap_or_else(|e| e.into_inner());
        let guard = &crate::epoch_table::pin();
        if let Some(sa) = self.outbound.get(id.0, |s| s.id == id, guard) {
            let max = Self::max_esp_len(&sa.cipher, sa.path_mtu, path)?;
            sa.path.store(path);
            sa.max_esp_len.store(max, Ordering::Relaxed);
            return Ok(());
        }
        let spi = id.inbound_spi().ok_or(SadError::NotFound(id))?;
        let sa = self
            .inbound
            .get(u64::from(spi), |s| s.id == id, guard)
            .ok_or(SadError::NotFound(id))?;
        sa.path.store(path);
        sa.reported_source.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Installs an inbound SA; its SPI must be free.
    pub fn install_inbound(&self, p: &SaParams) -> Result<SaId, SadError> {
        if p.direction != Direction::Inbound {
            return Err(SadError::WrongDirection);
        }
        let cipher = Self::check_common(p)?;
        let id = SaId::inbound(self.next_id.fetch_add(1, Ordering::Relaxed), p.spi);
        let window = ReplayWindow::new(p.replay_window.min(MAX_WINDOW), p.esn);
        let (bits, bits_len) = window.bitmap_span();
        let sa = Arc::new(InboundSa {
            id,
            spi: p.spi,
            cipher,
            mode: p.mode,
            esn: p.esn,
            path: PathCell::new(&p.path()),
            reported_source: AtomicU64::new(0),
            local_ts: SaSelectors::from(&p.local_ts[..]),
            remote_ts: SaSelectors::from(&p.remote_ts[..]),
            replay: Mutex::new(window),
            counters: Counters::default(),
            life: SaLifetime::new(p.lifetime),
            replay_bits: (bits as usize, bits_len),
        });
        let spi = p.spi;
        if self.inbound.insert(u64::from(spi), sa, |s| s.spi == spi).is_err() {
            return Err(SadError::SpiInUse(spi));
        }
        Ok(id)
    }

    /// Installs an outbound SA.
    pub fn install_outbound(&self, p: &SaParams) -> Result<SaId, SadError> {
        if p.direction != Direction::Outbound {
            return Err(SadError::WrongDirection);
        }
        let cipher = Self::check_common(p)?;
        let max_esp_len = Self::max_esp_len(&cipher, p.path_mtu, &p.path())?;
        let id = SaId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let sa = Arc::new(OutboundSa {
            id,
            spi: p.spi,
            cipher,
            mode: p.mode,
            esn: p.esn,
            path: PathCell::new(&p.path()),
            path_mtu: p.path_mtu,
            max_esp_len: AtomicUsize::new(max_esp_len),
            worker: (id.0 as usize) % self.workers,
            next_seq: AtomicU64::new(1),
            counters: Counters::default(),
            life: SaLifetime::new(p.lifetime),
        });
        // Ids are unique: the insert cannot find one in place.
        if self.outbound.insert(id.0, sa, |s| s.id == id).is_err() {
            return Err(SadError::NotFound(id));
        }
        Ok(id)
    }

    /// Outbound rekey: installs `new`, repoints the policies of `old` to it in
    /// `spd`, then removes `old` (packets already holding `old` finish with it).
    pub fn replace_outbound(&self, old: SaId, new: &SaParams, spd: &crate::spd::Spd) -> Result<SaId, SadError> {
        if self.outbound(old).is_none() {
            return Err(SadError::NotFound(old));
        }
        let id = self.install_outbound(new)?;
        spd.replace_sa(old, id);
        self.remove(old)?;
        Ok(id)
    }

    /// Looks up the inbound SA of `spi`; with `dst`, it must be the SA's local address.
    #[inline]
    pub fn inbound(&self, spi: u32, dst: Option<IpAddr>) -> Option<Arc<InboundSa>> {
        let guard = &crate::epoch_table::pin();
        let sa = self.inbound.get_arc(u64::from(spi), |s| s.spi == spi, guard)?;
        match dst {
            Some(d) if d != sa.local() => None,
            _ => Some(sa),
        }
    }

    /// [`Sad::inbound`] without a reference count: the SA stays valid while
    /// `guard` (from [`crate::epoch_table::pin`]) is held.
    #[inline]
    pub fn inbound_pinned<'g>(&self, spi: u32, dst: Option<IpAddr>, guard: &'g Guard) -> Option<&'g InboundSa> {
        let sa = self.inbound.get(u64::from(spi), |s| s.spi == spi, guard)?;
        match dst {
            Some(d) if d != sa.local() => None,
            _ => Some(sa),
        }
    }

    /// Starts loading the table slot of inbound `spi` (first step of a
    /// burst's lookups: the slot address depends on the SPI only).
    #[inline]
    pub fn prefetch_inbound_slot(&self, spi: u32, guard: &Guard) {
        self.inbound.prefetch_slot(u64::from(spi), guard);
    }

    /// Starts loading the inbound SA of `spi` (entry, key schedule) into the
    /// cache without taking a reference; the lookup that follows finds it there.
    #[inline]
    pub fn prefetch_inbound(&self, spi: u32) {
        self.inbound.prefetch_value(u64::from(spi), &crate::epoch_table::pin());
    }

    /// Starts loading the table slot of outbound SA `id`.
    #[inline]
    pub fn prefetch_outbound_slot(&self, id: SaId, guard: &Guard) {
        self.outbound.prefetch_slot(id.0, guard);
    }

    /// Starts loading outbound SA `id` (entry, key schedule) into the cache
    /// without taking a reference.
    #[inline]
    pub fn prefetch_outbound(&self, id: SaId) {
        self.outbound.prefetch_value(id.0, &crate::epoch_table::pin());
    }

    /// Looks up an outbound SA.
    #[inline]
    pub fn outbound(&self, id: SaId) -> Option<Arc<OutboundSa>> {
        let guard = &crate::epoch_table::pin();
        self.outbound.get_arc(id.0, |s| s.id == id, guard)
    }

    /// [`Sad::outbound`] without a reference count, valid while `guard` is held.
    #[inline]
    pub fn outbound_pinned<'g>(&self, id: SaId, guard: &'g Guard) -> Option<&'g OutboundSa> {
        self.outbound.get(id.0, |s| s.id == id, guard)
    }

    /// Looks up an inbound SA by id.
    pub fn inbound_by_id(&self, id: SaId) -> Option<Arc<InboundSa>> {
        let spi = id.inbound_spi()?;
        let guard = &crate::epoch_table::pin();
        self.inbound.get_arc(u64::from(spi), |s| s.id == id, guard)
    }

    /// Removes an SA of either direction; packets in flight finish with it
    /// (its memory is reclaimed once no worker can still be reading it).
    pub fn remove(&self, id: SaId) -> Result<(), SadError> {
        if self.outbound.remove(id.0, |s| s.id == id).is_some() {
            self.generation.fetch_add(1, Ordering::Release);
            crate::epoch_table::reclaim();
            return Ok(());
        }
        let spi = id.inbound_spi().ok_or(SadError::NotFound(id))?;
        self.inbound
            .remove(u64::from(spi), |s| s.id == id)
            .ok_or(SadError::NotFound(id))?;
        self.generation.fetch_add(1, Ordering::Release);
        crate::epoch_table::reclaim();
        Ok(())
    }

    /// Reports `source`, the outer source of an authenticated
    /// UDP-encapsulated packet of `sa`, when the SA's peer is elsewhere and
    /// this source was not reported yet ([`SaEvent::PeerMoved`]).
    #[inline]
    pub fn note_source(&self, sa: &InboundSa, source: std::net::SocketAddr) {
        if let Some(source) = sa.note_source(source) {
            let _ = self.events.send(SaEvent::PeerMoved { sa: sa.id, source });
        }
    }

    /// Changes every time an SA is removed: a worker that caches SA
    /// references drops them when it sees a new value.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of inbound and outbound SAs.
    pub fn len(&self) -> (usize, usize) {
        (self.inbound.len(), self.outbound.len())
    }

    /// True when no SA is installed.
    pub fn is_empty(&self) -> bool {
        self.inbound.len() == 0 && self.outbound.len() == 0
    }
}

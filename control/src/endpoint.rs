//! The endpoint: demultiplexes datagrams to IKE SAs by SPI and decides
//! admission of new IKE_SA_INIT requests (accept / demand a COOKIE / drop),
//! as quinn's `Endpoint` does for connections.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use crate::Error;
use crate::config::ConnectionConfig;
use crate::cookie::CookieJar;
use crate::drops::{DropCounts, DropLog, DropReason};
use crate::ike_sa::resume::{ResumableIkeSa, ResumeError};
use crate::ike_sa::{Context, Event, IkeSa, Task, Transmit, sa_init};
use crate::wire::ikev2::{self, ExchangeType, Header, NotifyType, Payload};
use crate::wire::ingress::{IkeVersion, peek_header};

/// Anti-DoS and capacity settings of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Half-open SAs above which COOKIEs are demanded (0 = always).
    pub cookie_threshold: usize,
    /// Keep demanding cookies this long after the count fell below the threshold.
    pub cookie_calm_down: Duration,
    /// Half-open SAs allowed per source address before its requests are dropped.
    pub per_source_half_open: usize,
    /// Hard cap on half-open SAs (memory bound under any flood).
    pub max_half_open: usize,
    /// Cookie secret rotation interval.
    pub cookie_rotation: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            cookie_threshold: 1_000,
            cookie_calm_down: Duration::from_secs(10),
            per_source_half_open: 64,
            max_half_open: 100_000,
            cookie_rotation: Duration::from_secs(120),
        }
    }
}

/// Counters of an endpoint (monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// IKE_SA_INIT requests received that created no state yet.
    pub init_requests: u64,
    /// COOKIE notifies sent.
    pub cookies_sent: u64,
    /// Requests that carried a valid cookie.
    pub cookies_valid: u64,
    /// Requests dropped for an invalid cookie.
    pub cookies_invalid: u64,
    /// Requests dropped by the per-source limit.
    pub dropped_per_source: u64,
    /// Requests dropped by the global half-open cap.
    pub dropped_capacity: u64,
    /// Requests rejected (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD, ...).
    pub init_rejected: u64,
    /// IKE SAs established.
    pub established: u64,
    /// Of those, IKE SAs whose key exchange is post-quantum (ML-KEM): the
    /// rest were keyed by a classical exchange alone.
    pub established_post_quantum: u64,
    /// Datagrams that could not be decoded or matched no SA.
    pub dropped_invalid: u64,
    /// IKE_SA_INIT requests answered with a REDIRECT to another gateway (RFC 5685).
    pub redirected: u64,
    /// Dropped datagrams and refused requests by reason.
    pub drops: DropCounts,
}

/// Hashes our own IKE SPIs with one multiply instead of SipHash: we pick them
/// at random, so a peer cannot choose keys that collide.
#[derive(Default, Clone, Copy)]
struct SpiHasher(u64);

impl Hasher for SpiHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Odd constant (2^64 / golden ratio): the top bits, which hashbrown
        // uses as tags, depend on every bit of the SPI.
        self.0 = (self.0.rotate_left(29) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by our IKE SPI.
type SpiMap<V> = HashMap<u64, V, BuildHasherDefault<SpiHasher>>;

/// A set of IKE SAs behind one group of sockets (one shard of the daemon).
pub struct Endpoint {
    ctx: Arc<Context>,
    admission: AdmissionConfig,
    /// Boxed: a map slot of a boxed SA is 16 bytes, so the map's spare slots cost little.
    sas: SpiMap<Box<IkeSa>>,
    init_index: HashMap<(u64, SocketAddr), u64>,
    half_open: SpiMap<(u64, SocketAddr)>,
    per_source: HashMap<IpAddr, usize>,
    cookies: CookieJar,
    cookie_mode_until: Option<Instant>,
    /// (deadline tick, SPI), stale entries included (skipped when popped):
    /// 16 bytes an entry where (`Instant`, SPI) takes 24.
    timers: BinaryHeap<Reverse<(u64, u64)>>,
    /// Time zero of the ticks.
    epoch: Instant,
    /// The latest time the driver passed in: when refusals an SA reports are logged.
    clock: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<(u64, Event)>,
    spi_prefix: u64,
    spi_prefix_bits: u32,
    stats: EndpointStats,
    drop_log: DropLog,
    /// Where to send new initiators that support redirects instead (`None`
    /// from the policy: take them here).
    redirect: Option<RedirectPolicy>,
}

/// Asked for each new IKE_SA_INIT request whose initiator supports RFC 5685
/// redirects: the gateway it should go to instead, or `None` to take it here.
pub type RedirectPolicy = Arc<dyn Fn() -> Option<IpAddr> + Send + Sync>;

impl Endpoint {
    /// A new endpoint. Our SPIs carry `shard` in their top `shard_bits` bits so a
    /// sharded driver can route every later message to its owner.
    pub fn new(now: Instant, mut ctx: Context, admission: AdmissionConfig, shard: u64, shard_bits: u32) -> Self {
        ctx.spi_prefix = if shard_bits == 0 { 0 } else { shard << (64 - shard_bits) };
        ctx.spi_prefix_bits = shard_bits;
        let cookies = CookieJar::new(admission.cookie_rotation, admission.cookie_rotation / 2);
        Self {
            ctx: Arc::new(ctx),
            admission,
            sas: SpiMap::default(),
            init_index: HashMap::new(),
            half_open: SpiMap::default(),
            per_source: HashMap::new(),
            cookies,
            cookie_mode_until: None,
            timers: BinaryHeap::new(),
            epoch: now,
            clock: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            spi_prefix: if shard_bits == 0 { 0 } else { shard << (64 - shard_bits) },
            spi_prefix_bits: shard_bits,
            stats: EndpointStats::default(),
            redirect: None,
            drop_log: DropLog::default(),
        }
    }

    /// Sizes the per-SA tables for `sas` IKE SAs, so that bringing them up
    /// does not rehash (and copy) the tables while handshakes wait.
    pub fn reserve(&mut self, sas: usize) {
        self.sas.reserve(sas.saturating_sub(self.sas.len()));
        self.timers.reserve(sas.saturating_sub(self.timers.len()));
    }

    /// The shared context (connections, allocators).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Replaces the connection list (reload); existing SAs keep their config.
    pub fn set_connections(&mut self, connections: Vec<Arc<ConnectionConfig>>) {
        // SAs keep the context they were made with; new ones get the new list.
        Arc::make_mut(&mut self.ctx).connections = Arc::new(connections);
    }

    /// Counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Number of half-open (not yet authenticated) responder SAs.
    pub fn half_open(&self) -> usize {
        self.half_open.len()
    }

    /// Number of IKE SAs.
    pub fn len(&self) -> usize {
        self.sas.len()
    }

    /// True if there are no IKE SAs.
    pub fn is_empty(&self) -> bool {
        self.sas.is_empty()
    }

    /// The IKE SA whose local SPI is `spi`.
    pub fn sa(&self, spi: u64) -> Option<&IkeSa> {
        self.sas.get(&spi).map(|b| &**b)
    }

    /// All IKE SAs.
    pub fn sas(&self) -> impl Iterator<Item = &IkeSa> {
        self.sas.values().map(|b| &**b)
    }

    /// `t` as nanoseconds since the endpoint was made (timer keys; 584 years fit).
    fn tick(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A fresh local SPI carrying this endpoint's shard prefix.
    pub fn new_spi(&self) -> Result<u64, crate::crypto::CryptoError> {
        loop {
            let spi = self.ctx.new_ike_spi()?;
            if !self.sas.contains_key(&spi) {
                return Ok(spi);
            }
        }
    }

    /// True if our SPI `spi` belongs to this endpoint's shard.
    pub fn owns_spi(&self, spi: u64) -> bool {
        self.spi_prefix_bits == 0
            || (spi >> (64 - self.spi_prefix_bits)) == (self.spi_prefix >> (64 - self.spi_prefix_bits))
    }

    /// Starts an IKE SA with `config` towards `remote`; returns its local SPI.
    pub fn initiate(
        &mut self,
        now: Instant,
        config: Arc<ConnectionConfig>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<u64, Error> {
        let spi = self.new_spi()?;
        let sa = IkeSa::initiate(now, config, self.ctx.clone(), local, remote, spi)?;
        self.sas.insert(spi, Box::new(sa));
        self.after(spi);
        Ok(spi)
    }

    /// Starts an IKE SA with `config` towards `remote` that brings up only
    /// child template `template` (in IKE_AUTH); returns its local SPI.
    pub fn initiate_child(
        &mut self,
        now: Instant,
        config: Arc<ConnectionConfig>,
        local: SocketAddr,
        remote: SocketAddr,
        template: usize,
    ) -> Result<u64, Error> {
        if template >= config.children.len() {
            return Err(Error::Config(format!(
                "connection '{}' has no child template {template}",
                config.name
            )));
        }
        let spi = self.new_spi()?;
        let mut sa = IkeSa::initiate(now, config, self.ctx.clone(), local, remote, spi)?;
        sa.queue(now, Task::CreateChild(template));
        self.sas.insert(spi, Box::new(sa));
        self.after(spi);
        Ok(spi)
    }

    /// Takes over an IKE SA another node established, from its resumable
    /// state ([`IkeSa::resume`] with this endpoint's connection of that
    /// name); returns its local SPI. Its events (IKE SA up, children
    /// installed) are reported like those of a negotiation.
    pub fn adopt(&mut self, now: Instant, state: &ResumableIkeSa) -> Result<u64, ResumeError> {
        let config = self
            .ctx
            .connections
            .iter()
            .find(|c| c.name == state.connection)
            .cloned()
            .ok_or_else(|| ResumeError::NoConnection(state.connection.clone()))?;
        let sa = IkeSa::resume(now, state, config, self.ctx.clone())?;
        let spi = sa.local_spi();
        if self.sas.contains_key(&spi) {
            return Err(ResumeError::Invalid("local SPI already in use"));
        }
        self.sas.insert(spi, Box::new(sa));
        self.after(spi);
        Ok(spi)
    }

    /// Redirects new initiators that support it (RFC 5685) where `policy`
    /// says, at IKE_SA_INIT: a load balancer's choice made by the driver.
    pub fn set_redirect_policy(&mut self, policy: Option<RedirectPolicy>) {
        self.redirect = policy;
    }

    /// Answers an IKE_SA_INIT request with a lone TEMPORARY_FAILURE notify,
    /// statelessly: its driver cannot take new IKE SAs for now (a cluster
    /// node cut off from its store), and the initiator should retry later
    /// or elsewhere.
    pub fn refuse_temporarily(&mut self, local: SocketAddr, remote: SocketAddr, request: &Header) {
        let payload = crate::ike_sa::notify_payload(NotifyType::TEMPORARY_FAILURE, Vec::new());
        self.transmits.push_back(Transmit {
            local,
            remote,
            non_esp_marker: false,
            data: sa_init::stateless_response(request, payload),
        });
    }

    /// Removes an IKE SA without a word to its peer (another node serves
    /// it now); the driver removes its children from the data plane.
    pub fn release(&mut self, spi: u64) -> Option<Box<IkeSa>> {
        let sa = self.sas.remove(&spi)?;
        if let Some((spi_i, remote)) = self.half_open.remove(&spi) {
            self.init_index.remove(&(spi_i, remote));
        }
        Some(sa)
    }

    /// Queues a task (rekey, delete, DPD, new child) on an IKE SA.
    pub fn queue(&mut self, now: Instant, spi: u64, task: Task) -> bool {
        self.clock = now;
        let Some(sa) = self.sas.get_mut(&spi) else { return false };
        sa.queue(now, task);
        self.after(spi);
        true
    }

    /// Gives an IKE SA a newer version of its connection (see
    /// [`IkeSa::update_config`]) and re-arms its timers accordingly.
    pub fn update_config(&mut self, spi: u64, config: Arc<ConnectionConfig>) -> bool {
        let Some(sa) = self.sas.get_mut(&spi) else { return false };
        sa.update_config(config);
        self.after(spi);
        true
    }

    /// Ends IKE SA `spi` `remaining` after `now` at the latest (see
    /// [`IkeSa::limit_session`]); false if there is no such SA.
    pub fn limit_session(&mut self, now: Instant, spi: u64, remaining: Duration) -> bool {
        self.clock = now;
        let Some(sa) = self.sas.get_mut(&spi) else { return false };
        sa.limit_session(now, remaining);
        self.after(spi);
        true
    }

    /// Hands IKE SA `spi` an authenticated ESP packet's new peer address
    /// (see [`IkeSa::follow_peer`]); returns whether the SA moved.
    pub fn follow_peer(&mut self, spi: u64, source: SocketAddr) -> bool {
        let Some(sa) = self.sas.get_mut(&spi) else { return false };
        let moved = sa.follow_peer(source);
        self.after(spi);
        moved
    }

    /// MOBIKE client role: IKE SA `spi` now uses our address `local` (see
    /// [`IkeSa::update_local_address`]); false without MOBIKE.
    pub fn update_local_address(&mut self, now: Instant, local: SocketAddr, spi: u64) -> bool {
        self.clock = now;
        let Some(sa) = self.sas.get_mut(&spi) else { return false };
        let moved = sa.update_local_address(now, local);
        self.after(spi);
        moved
    }

    /// MOBIKE client role: the host's addresses changed; IKE SA `spi`
    /// now uses `local` and may announce `additional` (see
    /// [`IkeSa::local_addresses_changed`]).
    pub fn local_addresses_changed(
        &mut self,
        now: Instant,
        spi: u64,
        local: SocketAddr,
        additional: &[std::net::IpAddr],
    ) -> bool {
        self.clock = now;
        let Some(sa) = self.sas.get_mut(&spi) else { return false };
        let taken = sa.local_addresses_changed(now, local, additional);
        self.after(spi);
        taken
    }

    /// Hands an EAP back end's answer to the IKE SA that relayed the packet
    /// (see [`IkeSa::eap_backend_reply`]); false when the SA is gone or no
    /// longer waits.
    pub fn eap_backend_reply(&mut self, now: Instant, spi: u64, reply: crate::ike_sa::eap::EapBackendReply) -> bool {
        let Some(sa) = self.sas.get_mut(&spi) else { return false };
        let taken = sa.eap_backend_reply(now, reply);
        self.after(spi);
        taken
    }

    /// Deletes an IKE SA gracefully (DELETE to the peer).
    pub fn delete(&mut self, now: Instant, spi: u64) -> bool {
        self.clock = now;
        let Some(sa) = self.sas.get_mut(&spi) else { return false };
        sa.delete(now);
        self.after(spi);
        true
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event, with the local SPI of the IKE SA it comes from.
    pub fn poll_event(&mut self) -> Option<(u64, Event)> {
        self.events.pop_front()
    }

    /// The earliest deadline of any SA, or of the next summary of drops.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let sa = self
            .timers
            .peek()
            .map(|Reverse((t, _))| self.epoch + Duration::from_nanos(*t));
        match (sa, self.drop_log.next_flush()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = now;
        self.drop_log.flush(now);
        let now_tick = self.tick(now);
        while let Some(Reverse((t, spi))) = self.timers.peek().copied() {
            if t > now_tick {
                break;
            }
            self.timers.pop();
            // Each SA's armed deadline lives in the SA (no map of its own).
            if self.sas.get(&spi).map(|sa| sa.timer) != Some(t) {
                continue;
            }
            if let Some(sa) = self.sas.get_mut(&spi) {
                sa.timer = crate::ike_sa::NO_TIMER;
            }
            let due = self
                .sas
                .get(&spi)
                .and_then(|sa| sa.poll_timeout())
                .is_some_and(|d| d <= now);
            if due {
                if let Some(sa) = self.sas.get_mut(&spi) {
                    sa.handle_timeout(now);
                }
            }
            // Due or not (the deadline moved later since), re-arm with the SA's next deadline.
            self.after(spi);
        }
    }

    fn cookies_required(&mut self, now: Instant) -> bool {
        if self.half_open.len() >= self.admission.cookie_threshold {
            self.cookie_mode_until = Some(now + self.admission.cookie_calm_down);
            return true;
        }
        self.cookie_mode_until.is_some_and(|u| now < u)
    }

    /// Handles one received datagram (without the non-ESP marker).
    pub fn handle(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) {
        match peek_header(datagram) {
            Some(header) => self.handle_peeked(now, local, remote, header, datagram),
            None => {
                self.stats.dropped_invalid += 1;
                self.refuse(
                    now,
                    remote,
                    DropReason::Undecodable,
                    &format_args!("{} bytes, shorter than an IKE header", datagram.len()),
                );
            }
        }
    }

    /// Handles one received IKE message whose header the driver already read
    /// with [`crate::wire::ingress::classify`] (to route it by SPI).
    pub fn handle_peeked(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        header: Header,
        datagram: &[u8],
    ) {
        self.clock = now;
        match header.version() {
            IkeVersion::V2 => {}
            IkeVersion::V1 => {
                self.stats.dropped_invalid += 1;
                self.refuse(now, remote, DropReason::UnsupportedVersion, &"IKEv1 is not supported");
                return;
            }
            IkeVersion::Other(major) => {
                self.stats.dropped_invalid += 1;
                self.tell_requester(&header, &format_args!("it is of IKE major version {major}"));
                let answered = self.answer_invalid_major_version(local, remote, &header, datagram.len());
                let what = if header.is_response() {
                    "a response, not answered"
                } else if answered {
                    "answered INVALID_MAJOR_VERSION"
                } else {
                    "too short to be answered"
                };
                self.refuse(
                    now,
                    remote,
                    DropReason::UnsupportedVersion,
                    &format_args!("{} with IKE major version {major}: {what}", header.exchange),
                );
                return;
            }
        }
        let msg = match ikev2::decode_message(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.stats.dropped_invalid += 1;
                self.tell_requester(&header, &e);
                self.refuse(
                    now,
                    remote,
                    DropReason::Undecodable,
                    &format_args!("{}: {e}", header.exchange),
                );
                return;
            }
        };
        let h = msg.header;
        if h.exchange == ExchangeType::IKE_SA_INIT && h.spi_r == 0 && !h.is_response() && h.is_initiator() {
            if let Some(&spi) = self.init_index.get(&(h.spi_i, remote)) {
                if let Some(sa) = self.sas.get_mut(&spi) {
                    sa.handle_message(now, local, remote, datagram, msg);
                }
                self.after(spi);
                return;
            }
            self.handle_new_init(now, local, remote, datagram, msg);
            return;
        }
        let our_spi = h.recipient_spi();
        match self.sas.get_mut(&our_spi) {
            Some(sa) => {
                sa.handle_message(now, local, remote, datagram, msg);
                self.after(our_spi);
            }
            None => {
                self.stats.dropped_invalid += 1;
                self.refuse(
                    now,
                    remote,
                    DropReason::UnknownSa,
                    &format_args!("{} {} for SPI {our_spi:016x}", h.exchange, message_kind(&h)),
                );
            }
        }
    }

    /// If a dropped message answers a request of one of our SAs, tells the
    /// SA why, so that giving up it names the cause.
    fn tell_requester(&mut self, header: &Header, why: &dyn std::fmt::Display) {
        if header.is_response() {
            if let Some(sa) = self.sas.get_mut(&header.recipient_spi()) {
                sa.note_dropped_answer(header.message_id, why);
            }
        }
    }

    /// Counts a dropped datagram or refused request, logging it rate-limited.
    fn refuse(&mut self, now: Instant, remote: SocketAddr, reason: DropReason, detail: &dyn std::fmt::Display) {
        self.stats.drops.add(reason);
        self.drop_log.record(now, remote.ip(), reason, detail);
    }

    /// Answers a request of a higher major version with INVALID_MAJOR_VERSION
    /// (RFC 7296 §1.5, §2.5): unprotected, in a response with the request's
    /// SPIs, message ID and exchange type, and our version (2.0). Responses
    /// are never answered. Nor are requests shorter than the answer, so that
    /// the answer amplifies nothing.
    fn answer_invalid_major_version(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        request: &Header,
        request_len: usize,
    ) -> bool {
        if request.is_response() {
            return false;
        }
        let header = Header {
            major_version: 2,
            minor_version: 0,
            // Our role is the opposite of the sender's.
            flags: ikev2::FLAG_RESPONSE
                | if request.is_initiator() {
                    0
                } else {
                    ikev2::FLAG_INITIATOR
                },
            ..*request
        };
        let answer = ikev2::encode_message(
            &header,
            &[crate::ike_sa::notify_payload(
                NotifyType::INVALID_MAJOR_VERSION,
                Vec::new(),
            )],
        );
        if answer.len() > request_len {
            return false;
        }
        self.transmits.push_back(Transmit {
            local,
            remote,
            non_esp_marker: false,
            data: answer,
        });
        true
    }

    /// Answers a new initiator that supports redirects with a REDIRECT to
    /// the gateway the policy names (statelessly, bound to its nonce);
    /// true if it did. An initiator redirected here already is taken, so
    /// that two gateways never send one back and forth.
    fn redirect_init(&mut self, local: SocketAddr, remote: SocketAddr, msg: &ikev2::Message) -> bool {
        let Some(policy) = &self.redirect else { return false };
        let has = |ty| crate::ike_sa::find_notify(&msg.payloads, ty).is_some();
        if !has(NotifyType::REDIRECT_SUPPORTED) || has(NotifyType::REDIRECTED_FROM) {
            return false;
        }
        let Some(nonce) = msg.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n),
            _ => None,
        }) else {
            return false;
        };
        let Some(gateway) = policy() else { return false };
        self.stats.redirected += 1;
        debug!(peer = %remote, to = %gateway, "new IKE SA redirected to another gateway (RFC 5685)");
        self.transmits.push_back(Transmit {
            local,
            remote,
            non_esp_marker: false,
            data: sa_init::stateless_response(&msg.header, sa_init::redirect_notify(gateway, nonce)),
        });
        true
    }

    fn handle_new_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        msg: ikev2::Message,
    ) {
        self.stats.init_requests += 1;
        let h = msg.header;
        if self.half_open.len() >= self.admission.max_half_open {
            self.stats.dropped_capacity += 1;
            let limit = self.admission.max_half_open;
            self.refuse(
                now,
                remote,
                DropReason::HalfOpenCap,
                &format_args!("{limit} half-open IKE SAs"),
            );
            return;
        }
        let from_source = self.per_source.get(&remote.ip()).copied().unwrap_or(0);
        if from_source >= self.admission.per_source_half_open {
            self.stats.dropped_per_source += 1;
            self.refuse(
                now,
                remote,
                DropReason::PerSourceLimit,
                &format_args!("{from_source} half-open IKE SAs from this address"),
            );
            return;
        }
        if self.cookies_required(now) {
            let nonce = msg.payloads.iter().find_map(|p| match p {
                Payload::Nonce(n) => Some(n.clone()),
                _ => None,
            });
            let Some(ni) = nonce else {
                self.stats.dropped_invalid += 1;
                self.refuse(
                    now,
                    remote,
                    DropReason::InitRefused,
                    &"IKE_SA_INIT request without a nonce",
                );
                return;
            };
            let cookie = match msg.payloads.first() {
                Some(Payload::Notify(n)) if n.ty == NotifyType::COOKIE => Some(n.data.clone()),
                _ => None,
            };
            let random = &*self.ctx.crypto;
            let valid = match &cookie {
                Some(c) => self.cookies.verify(now, random, c, &ni, remote.ip(), h.spi_i),
                None => Ok(false),
            };
            match valid {
                Ok(true) => {
                    self.stats.cookies_valid += 1;
                }
                Ok(false) => {
                    if cookie.is_some() {
                        self.stats.cookies_invalid += 1;
                    }
                    let c = match self.cookies.make(now, random, &ni, remote.ip(), h.spi_i) {
                        Ok(c) => c,
                        Err(e) => {
                            self.stats.dropped_invalid += 1;
                            error!(peer = %remote, "cannot make a COOKIE, dropping IKE_SA_INIT: {e}");
                            return;
                        }
                    };
                    let response =
                        sa_init::stateless_response(&h, crate::ike_sa::notify_payload(NotifyType::COOKIE, c));
                    self.stats.cookies_sent += 1;
                    self.transmits.push_back(Transmit {
                        local,
                        remote,
                        non_esp_marker: false,
                        data: response,
                    });
                    return;
                }
                Err(e) => {
                    self.stats.dropped_invalid += 1;
                    error!(peer = %remote, "cannot check the COOKIE, dropping IKE_SA_INIT: {e}");
                    return;
                }
            }
        }
        if self.redirect_init(local, remote, &msg) {
            return;
        }
        let spi = match self.new_spi() {
            Ok(spi) => spi,
            Err(e) => {
                self.stats.init_rejected += 1;
                error!(peer = %remote, "cannot pick an IKE SPI, dropping IKE_SA_INIT: {e}");
                return;
            }
        };
        match IkeSa::respond_init(now, &self.ctx, local, remote, datagram, &msg, spi) {
            Ok(sa) => {
                self.init_index.insert((h.spi_i, remote), spi);
                self.half_open.insert(spi, (h.spi_i, remote));
                *self.per_source.entry(remote.ip()).or_default() += 1;
                self.sas.insert(spi, Box::new(sa));
                self.after(spi);
            }
            Err(rej) => {
                self.stats.init_rejected += 1;
                match &rej.error {
                    // Part of the negotiation: the initiator retries with that group.
                    Error::InvalidKePayload { .. } => debug!(peer = %remote, "IKE_SA_INIT: {}", rej.error),
                    // Our own failure (randomness, keys): logged at error where it happened.
                    Error::Crypto(_) => {}
                    Error::NoProposalChosen(why) => self.refuse(now, remote, DropReason::NoProposalChosen, why),
                    other => self.refuse(now, remote, DropReason::InitRefused, other),
                }
                if let Some(r) = rej.response {
                    self.transmits.push_back(Transmit {
                        local,
                        remote,
                        non_esp_marker: false,
                        data: r,
                    });
                }
            }
        }
    }

    /// Collects an SA's output and keeps the indexes and timers right.
    fn after(&mut self, spi: u64) {
        let Some(sa) = self.sas.get_mut(&spi) else { return };
        while let Some(t) = sa.poll_transmit() {
            self.transmits.push_back(t);
        }
        let mut successor = None;
        let mut refused = Vec::new();
        while let Some(e) = sa.poll_event() {
            if let Event::Refused { source, reason, detail } = e {
                refused.push((source, reason, detail));
                continue;
            }
            match &e {
                Event::IkeSaUp { .. } => {
                    self.stats.established += 1;
                    if sa.is_post_quantum() {
                        self.stats.established_post_quantum += 1;
                    }
                }
                Event::IkeSaRekeyed { .. } => successor = sa.take_successor(),
                _ => {}
            }
            self.events.push_back((spi, e));
        }
        sa.release_idle_buffers();
        for (source, reason, detail) in refused {
            self.stats.drops.add(reason);
            self.drop_log.record(self.clock, source.ip(), reason, &detail);
        }
        let Some(sa) = self.sas.get_mut(&spi) else { return };
        let half_open = sa.is_half_open();
        let closed = sa.is_closed();
        let deadline = sa.poll_timeout();
        let armed = sa.timer;
        if !half_open {
            if let Some((spi_i, remote)) = self.half_open.remove(&spi) {
                self.init_index.remove(&(spi_i, remote));
                if let Some(n) = self.per_source.get_mut(&remote.ip()) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_source.remove(&remote.ip());
                    }
                }
            }
        }
        if closed {
            self.sas.remove(&spi);
        } else {
            match deadline.map(|d| self.tick(d)) {
                // An entry at or before `d` is in the heap: when it fires it
                // finds the SA not yet due and re-arms it, so a deadline that
                // moves later (half-open → established, DPD) adds no entry.
                Some(d) if armed <= d => {}
                Some(d) => {
                    if let Some(sa) = self.sas.get_mut(&spi) {
                        sa.timer = d;
                    }
                    self.timers.push(Reverse((d, spi)));
                }
                None => {
                    if let Some(sa) = self.sas.get_mut(&spi) {
                        sa.timer = crate::ike_sa::NO_TIMER;
                    }
                }
            }
        }
        if let Some(mut new) = successor {
            let new_spi = new.local_spi();
            match self.sas.entry(new_spi) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    warn!("rekeyed IKE SA SPI collides with an existing one; dropping the new SA");
                    new.close(crate::ike_sa::DownReason::Failed("SPI collision".into()));
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Box::new(new));
                    self.after(new_spi);
                }
            }
        }
    }
}

/// "request" or "response", for log lines.
fn message_kind(h: &Header) -> &'static str {
    if h.is_response() { "response" } else { "request" }
}

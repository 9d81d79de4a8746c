//! The initiator engine: worker threads, each with its own UDP sockets, one
//! sans-IO [`Endpoint`] owning every IKE SA started from those sockets, and a
//! mio poll loop that paces new negotiations, moves datagrams and runs timers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use control::config::{AuthConfig, ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
use control::eap::Method;
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::{Context, DownReason, Event, Task, Transmit};
use control::ts::parse_selector;
use control::wire::ikev2::{ExchangeType, FLAG_RESPONSE, HEADER_LEN};
use hdrhistogram::Histogram;
use ironsa_crypto::AwsLcProvider;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use thiserror::Error;

use super::cpu::CpuTime;
use super::net::bind_udp;
use super::options::{ConfigError, GenConfig, Mode};
use super::report::{FloodReport, HoldReport, TeardownReport, TimelineBucket};
use super::wire::{FloodPacket, InitResponse, NON_ESP_MARKER, RandomPool, classify_init_response, strip_marker};

/// Width of one timeline bucket.
pub const BUCKET: Duration = Duration::from_millis(100);
/// Largest datagram we read.
const MAX_DATAGRAM: usize = 65_536;
/// Most new negotiations or flood packets started per loop iteration.
const BATCH: u64 = 64;

/// Why a run could not start or failed as a whole.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Socket or poll failure.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A worker thread panicked.
    #[error("worker thread {0} panicked")]
    WorkerPanicked(usize),
    /// `--gateway-metrics` was given but could not be read.
    #[error(transparent)]
    GatewayMetrics(#[from] super::gateway::GatewayMetricsError),
}

/// Counters every worker updates while it runs (for the progress display).
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Negotiations started.
    pub attempted: AtomicU64,
    /// IKE SAs established.
    pub established: AtomicU64,
    /// Negotiations failed.
    pub failed: AtomicU64,
    /// First CHILD_SAs installed.
    pub children: AtomicU64,
    /// Flood packets sent.
    pub flood_sent: AtomicU64,
    /// IKE SAs deleted in the teardown.
    pub deleted: AtomicU64,
    /// Set to end the run early: negotiations in flight count as UNFINISHED,
    /// the hold ends and no teardown starts.
    pub stop: AtomicBool,
}

/// The sockets one worker owns.
#[derive(Clone, Debug, Default)]
pub(crate) struct SocketPlan {
    pub legit: Vec<SocketAddr>,
    pub flood: Vec<SocketAddr>,
}

/// Everything one worker measured.
#[derive(Debug)]
pub(crate) struct WorkerResult {
    pub attempted: u64,
    pub established: u64,
    pub failures: BTreeMap<String, u64>,
    pub children: u64,
    pub child_failures: BTreeMap<String, u64>,
    pub ike_latency: Histogram<u64>,
    pub child_latency: Histogram<u64>,
    pub cookies: u64,
    pub retransmissions: u64,
    pub send_errors: u64,
    pub max_in_flight: usize,
    pub first_initiate: Option<Instant>,
    pub last_up: Option<Instant>,
    pub hold: Option<HoldReport>,
    pub teardown: Option<TeardownReport>,
    pub flood: Option<FloodReport>,
    pub esp: Option<super::esp::EspReport>,
    pub timeline: Vec<TimelineBucket>,
    pub cpu: CpuTime,
    /// Latency of each EAP round trip (IKE_AUTH exchanges before the final AUTH).
    pub eap_latency: Histogram<u64>,
    /// Tunnels up with a virtual IP, and up without one although one was asked for.
    pub vip_assigned: u64,
    pub vip_refused_up: u64,
    /// The virtual IPs assigned (to count the distinct ones over all workers).
    pub vips: HashSet<IpAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TunnelState {
    Negotiating,
    Up,
    Deleting,
}

struct Tunnel {
    started: Instant,
    state: TunnelState,
    /// Inbound SPI of the current CHILD_SA.
    child: Option<u32>,
    /// The first CHILD_SA was installed or failed.
    child_resolved: bool,
    /// EAP clients: the latest IKE_AUTH exchange.
    auth: Option<AuthExchange>,
}

/// One IKE_AUTH exchange of an EAP client: when a later IKE_AUTH request
/// follows it, it was an EAP round trip (the final AUTH exchange is the
/// only one that none follows).
#[derive(Clone, Copy)]
struct AuthExchange {
    message_id: u32,
    sent: Instant,
    /// Microseconds until the first datagram of the answer.
    rtt_us: Option<u64>,
}

struct Sock {
    socket: UdpSocket,
    local: SocketAddr,
}

/// Paces events at `rate` per second from `start`.
struct Pacer {
    rate: f64,
    start: Instant,
    done: u64,
}

impl Pacer {
    fn new(rate: f64, start: Instant) -> Self {
        Self { rate, start, done: 0 }
    }
    /// How many may go now.
    fn due(&self, now: Instant) -> u64 {
        let allowed = (now.saturating_duration_since(self.start).as_secs_f64() * self.rate) as u64 + 1;
        allowed.saturating_sub(self.done).min(BATCH)
    }
    /// When the next one may go.
    fn next_at(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.done as f64 / self.rate)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits are valid"))
}

/// A short, stable name for a down reason (the report groups failures by it).
pub fn reason_name(r: &DownReason) -> String {
    match r {
        DownReason::Deleted => "DELETED".into(),
        DownReason::Rekeyed => "REKEYED".into(),
        DownReason::Timeout => "TIMEOUT".into(),
        DownReason::Failed(msg) => {
            let mut m = msg.clone();
            m.truncate(100);
            m
        }
        DownReason::PeerError(n) => n.to_string(),
        DownReason::Expired => "EXPIRED".into(),
    }
}

/// (initiator SPI, exchange type, flags, message ID) of an IKE datagram.
fn ike_header(data: &[u8]) -> Option<(u64, u8, u8, u32)> {
    if data.len() < HEADER_LEN {
        return None;
    }
    let spi_i = u64::from_be_bytes(data[..8].try_into().ok()?);
    let mid = u32::from_be_bytes(data[20..24].try_into().ok()?);
    Some((spi_i, data[18], data[19], mid))
}

/// The first datagram answering an EAP client's latest IKE_AUTH request.
fn note_auth_answer(tunnels: &mut HashMap<u64, Tunnel>, now: Instant, data: &[u8]) {
    let Some((spi_i, exchange, flags, mid)) = ike_header(data) else {
        return;
    };
    if exchange != ExchangeType::IKE_AUTH.0 || flags & FLAG_RESPONSE == 0 {
        return;
    }
    let Some(a) = tunnels.get_mut(&spi_i).and_then(|t| t.auth.as_mut()) else {
        return;
    };
    if a.message_id == mid && a.rtt_us.is_none() {
        a.rtt_us = Some(now.saturating_duration_since(a.sent).as_micros() as u64);
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Builds the connection of tunnel `n`; shares one `Arc` when nothing is per-tunnel.
pub(crate) struct TunnelConfigs {
    base: Arc<ConnectionConfig>,
    per_tunnel: bool,
    cfg: Arc<GenConfig>,
}

impl TunnelConfigs {
    pub(crate) fn new(cfg: Arc<GenConfig>) -> Result<Self, ConfigError> {
        let per_tunnel = cfg.local_id.is_per_tunnel()
            || cfg.eap.as_ref().is_some_and(|e| e.user.is_per_tunnel())
            || cfg.remote_id.as_ref().is_some_and(|t| t.is_per_tunnel())
            || cfg.local_ts.iter().chain(&cfg.remote_ts).any(|t| t.is_per_tunnel());
        let base = Arc::new(Self::build(&cfg, 0).map_err(ConfigError::Invalid)?);
        Ok(Self { base, per_tunnel, cfg })
    }

    fn build(cfg: &GenConfig, n: u64) -> Result<ConnectionConfig, String> {
        let remote_id = match &cfg.remote_id {
            Some(t) => IdentityMatch::Exact(parse_identity(&t.render(n))),
            None => IdentityMatch::Any,
        };
        let mut c = ConnectionConfig::new("ikegen", parse_identity(&cfg.local_id.render(n)), remote_id, &cfg.psk);
        c.ike_proposals = cfg.ike.clone();
        c.remote_addrs = Some(vec![cfg.remote.ip()]);
        c.dpd_delay = cfg.dpd;
        c.initial_contact = cfg.initial_contact;
        c.remote_nat_port = Some(cfg.remote_nat_port);
        c.retransmit_timeout = cfg.retransmit_timeout;
        c.retransmit_tries = cfg.retransmit_tries;
        if let Some(eap) = &cfg.eap {
            c.local_auth = AuthConfig::EapClient(Arc::new(control::config::EapClientAuth {
                identity: eap.user.render(n).into_bytes(),
                password: eap.password.clone(),
                methods: vec![Method::MsChapV2],
                tls: None,
            }));
        }
        if cfg.vip {
            let any = match cfg.remote.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            c.virtual_ips.request = vec![any];
        }
        // The generator decides when to rekey; no automatic rekeys during a run.
        c.ike_lifetime = Lifetime {
            rekey: Duration::ZERO,
            jitter: Duration::ZERO,
            over: Duration::ZERO,
        };
        if let Some(esp) = &cfg.esp {
            let sel = |list: &[super::template::Template]| {
                list.iter()
                    .map(|t| {
                        let s = t.render(n);
                        parse_selector(&s).map_err(|e| format!("bad traffic selector '{s}': {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            c.children.push(ChildConfig {
                name: "ikegen".into(),
                esp_proposals: esp.clone(),
                local_ts: sel(&cfg.local_ts)?,
                remote_ts: sel(&cfg.remote_ts)?,
                mode: IpsecMode::Tunnel,
                lifetime: Lifetime {
                    rekey: Duration::ZERO,
                    jitter: Duration::ZERO,
                    over: Duration::ZERO,
                },
            });
        }
        Ok(c)
    }

    pub(crate) fn get(&self, n: u64) -> Result<Arc<ConnectionConfig>, String> {
        if self.per_tunnel {
            Self::build(&self.cfg, n).map(Arc::new)
        } else {
            Ok(self.base.clone())
        }
    }
}

/// Phases of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Establish,
    Hold,
    Teardown,
    Done,
}

pub(crate) struct Worker {
    id: usize,
    cfg: Arc<GenConfig>,
    live: Arc<LiveCounters>,
    run_start: Instant,
    poll: Poll,
    legit: Vec<Sock>,
    by_addr: HashMap<SocketAddr, usize>,
    flood: Vec<Sock>,
    endpoint: Endpoint,
    configs: TunnelConfigs,
    tunnels: HashMap<u64, Tunnel>,
    up_spis: Vec<u64>,
    last_request: HashMap<u64, u64>,
    /// IKE SAs (our SPI) and CHILD_SAs (our inbound SPI) whose rekey we
    /// started, to tell our rekeys from the responder's.
    own_ike_rekeys: HashSet<u64>,
    own_child_rekeys: HashSet<u32>,
    // establish
    quota: u64,
    initiated: u64,
    in_flight: usize,
    concurrency: usize,
    next_socket: usize,
    // results
    res: WorkerResult,
    flood_rng: RandomPool,
    flood_packet: Option<FloodPacket>,
    buf: Vec<u8>,
    out: Vec<u8>,
    esp: Option<super::esp::EspLoad>,
}

impl Worker {
    pub(crate) fn new(
        id: usize,
        cfg: Arc<GenConfig>,
        plan: SocketPlan,
        live: Arc<LiveCounters>,
        run_start: Instant,
    ) -> Result<Self, EngineError> {
        let poll = Poll::new()?;
        let mut legit = Vec::new();
        let mut by_addr = HashMap::new();
        for addr in plan.legit {
            let mut socket = bind_udp(addr, cfg.socket_buffer)?;
            let local = socket.local_addr()?;
            poll.registry()
                .register(&mut socket, Token(legit.len()), Interest::READABLE)?;
            by_addr.insert(local, legit.len());
            legit.push(Sock { socket, local });
        }
        let mut flood = Vec::new();
        for addr in plan.flood {
            let mut socket = bind_udp(addr, cfg.socket_buffer)?;
            let local = socket.local_addr()?;
            poll.registry()
                .register(&mut socket, Token(usize::MAX / 2 + flood.len()), Interest::READABLE)?;
            flood.push(Sock { socket, local });
        }
        let threads = cfg.threads as u64;
        let quota = if cfg.mode == Mode::Flood {
            0
        } else {
            cfg.tunnels / threads + u64::from((id as u64) < cfg.tunnels % threads)
        };
        let concurrency = cfg.concurrency.div_ceil(cfg.threads).max(1);
        let configs = TunnelConfigs::new(cfg.clone())?;
        let mut ctx = Context::new(vec![configs.base.clone()], AwsLcProvider::new().shared());
        ctx.remote_nat_port = cfg.remote_nat_port;
        let endpoint = Endpoint::new(Instant::now(), ctx, AdmissionConfig::default(), 0, 0);
        let flood_packet = if cfg.mode == Mode::Establish {
            None
        } else {
            Some(FloodPacket::new(&cfg.ike)?)
        };
        Ok(Self {
            id,
            cfg,
            live,
            run_start,
            poll,
            legit,
            by_addr,
            flood,
            endpoint,
            configs,
            tunnels: HashMap::new(),
            up_spis: Vec::new(),
            last_request: HashMap::new(),
            own_ike_rekeys: HashSet::new(),
            own_child_rekeys: HashSet::new(),
            quota,
            initiated: 0,
            in_flight: 0,
            concurrency,
            next_socket: 0,
            res: WorkerResult {
                attempted: 0,
                established: 0,
                failures: BTreeMap::new(),
                children: 0,
                child_failures: BTreeMap::new(),
                ike_latency: histogram(),
                child_latency: histogram(),
                cookies: 0,
                retransmissions: 0,
                send_errors: 0,
                max_in_flight: 0,
                first_initiate: None,
                last_up: None,
                hold: None,
                teardown: None,
                flood: None,
                esp: None,
                timeline: Vec::new(),
                cpu: CpuTime::default(),
                eap_latency: histogram(),
                vip_assigned: 0,
                vip_refused_up: 0,
                vips: HashSet::new(),
            },
            flood_rng: RandomPool::new(),
            flood_packet,
            buf: vec![0; MAX_DATAGRAM],
            out: Vec::with_capacity(2048),
            esp: None,
        }
        .with_esp())
    }

    fn with_esp(mut self) -> Self {
        if self.cfg.esp_size > 0 {
            self.esp = Some(super::esp::EspLoad::new(self.cfg.esp_size));
        }
        self
    }

    fn bucket(&mut self, now: Instant) -> &mut TimelineBucket {
        let i = (now.saturating_duration_since(self.run_start).as_nanos() / BUCKET.as_nanos()) as usize;
        while self.res.timeline.len() <= i {
            let t = self.res.timeline.len() as f64 * BUCKET.as_secs_f64();
            self.res.timeline.push(TimelineBucket {
                t,
                ..TimelineBucket::default()
            });
        }
        &mut self.res.timeline[i]
    }

    /// Runs all phases and returns the measurements.
    pub(crate) fn run(mut self) -> Result<WorkerResult, EngineError> {
        let cpu_start = CpuTime::thread();
        let start = Instant::now();
        let mut events = Events::with_capacity(1024);
        let mut phase = Phase::Establish;
        let mut pacer = self.cfg.rate.map(|r| Pacer::new(r / self.cfg.threads as f64, start));
        let flood_on = self.cfg.mode != Mode::Establish && !self.flood.is_empty();
        let mut flood_pacer = flood_on.then(|| Pacer::new(self.cfg.flood_rate / self.cfg.threads as f64, start));
        let mut flood_end = start + self.cfg.duration;
        let mut flood_report = flood_on.then(FloodReport::default);
        let mut flood_stopped: Option<Instant> = None;
        let mut establish_deadline = start + self.cfg.timeout;
        let mut hold_end = start;
        let mut hold = HoldReport {
            dpd_delay_secs: self.cfg.dpd.map_or(0.0, |d| d.as_secs_f64()),
            ..HoldReport::default()
        };
        let mut hold_start = start;
        let mut rekey_ike = Pacer::new(self.cfg.rekey_ike_rate / self.cfg.threads as f64, start);
        let mut rekey_child = Pacer::new(self.cfg.rekey_child_rate / self.cfg.threads as f64, start);
        let mut esp_pacer = self
            .cfg
            .esp_rate
            .map(|r| Pacer::new(r / self.cfg.threads as f64, start));
        let mut teardown = TeardownReport::default();
        let mut teardown_start = start;
        let mut teardown_deadline = start;
        let mut stopped = false;

        loop {
            let now = Instant::now();
            if !stopped && self.live.stop.load(Ordering::Relaxed) {
                stopped = true;
                establish_deadline = now;
                hold_end = now;
                teardown_deadline = now;
                flood_end = flood_end.min(now);
            }
            // Flood.
            if let (Some(fp), Some(fr)) = (flood_pacer.as_mut(), flood_report.as_mut()) {
                if now < flood_end {
                    let n = fp.due(now);
                    for _ in 0..n {
                        self.send_flood_packet(fr);
                    }
                    fp.done += n;
                    if n > 0 {
                        self.bucket(now).flood_sent += n;
                        self.live.flood_sent.fetch_add(n, Ordering::Relaxed);
                    }
                } else if flood_stopped.is_none() {
                    flood_stopped = Some(now);
                    fr.secs = now.saturating_duration_since(start).as_secs_f64();
                }
            }
            // Phase work.
            match phase {
                Phase::Establish => {
                    let mut n = if stopped {
                        0
                    } else {
                        (self.quota - self.initiated).min(BATCH)
                    };
                    n = n.min(self.concurrency.saturating_sub(self.in_flight) as u64);
                    if let Some(p) = &pacer {
                        n = n.min(p.due(now));
                    }
                    for _ in 0..n {
                        // A fresh timestamp per negotiation keeps latencies exact within a batch.
                        self.initiate(Instant::now());
                    }
                    if let Some(p) = pacer.as_mut() {
                        p.done += n;
                    }
                    let finished = self.initiated == self.quota && self.in_flight == 0;
                    if !finished && now >= establish_deadline {
                        self.abandon_negotiations();
                    }
                    if finished || now >= establish_deadline {
                        if self.cfg.hold > Duration::ZERO || self.cfg.teardown {
                            hold_start = now;
                            hold_end = if stopped { now } else { now + self.cfg.hold };
                            rekey_ike = Pacer::new(rekey_ike.rate, now);
                            rekey_child = Pacer::new(rekey_child.rate, now);
                            esp_pacer = esp_pacer.map(|p| Pacer::new(p.rate, now));
                            phase = Phase::Hold;
                        } else {
                            phase = Phase::Done;
                        }
                    }
                }
                Phase::Hold => {
                    if let Some(e) = self.esp.as_mut() {
                        // Time-sliced so IKE (DPD, rekeys) stays responsive.
                        let t0 = Instant::now();
                        match esp_pacer.as_mut() {
                            Some(p) => {
                                let due = p.due(now);
                                let mut left = due as usize;
                                while left > 0 {
                                    match e.send_burst(left) {
                                        0 => break,
                                        k => left = left.saturating_sub(k),
                                    }
                                }
                                p.done += due;
                            }
                            None => while e.send_burst(usize::MAX) > 0 && t0.elapsed() < Duration::from_millis(2) {},
                        }
                        e.report.secs += t0.elapsed().as_secs_f64();
                    }
                    if rekey_ike.rate > 0.0 {
                        let n = rekey_ike.due(now);
                        for _ in 0..n {
                            if let Some(spi) = self.pick_up_tunnel() {
                                self.endpoint.queue(now, spi, Task::RekeyIke);
                                self.own_ike_rekeys.insert(spi);
                                hold.rekeys_ike_started += 1;
                            }
                        }
                        rekey_ike.done += n;
                    }
                    if rekey_child.rate > 0.0 {
                        let n = rekey_child.due(now);
                        for _ in 0..n {
                            if let Some(spi) = self.pick_up_tunnel() {
                                if let Some(child) = self.tunnels.get(&spi).and_then(|t| t.child) {
                                    self.endpoint.queue(now, spi, Task::RekeyChild(child));
                                    self.own_child_rekeys.insert(child);
                                    hold.rekeys_child_started += 1;
                                }
                            }
                        }
                        rekey_child.done += n;
                    }
                    if now >= hold_end {
                        hold.secs = now.saturating_duration_since(hold_start).as_secs_f64();
                        if self.cfg.teardown && !stopped {
                            teardown_start = now;
                            teardown_deadline = now + self.cfg.timeout;
                            let spis: Vec<u64> = self
                                .tunnels
                                .iter()
                                .filter(|(_, t)| t.state == TunnelState::Up)
                                .map(|(s, _)| *s)
                                .collect();
                            for spi in spis {
                                if let Some(t) = self.tunnels.get_mut(&spi) {
                                    t.state = TunnelState::Deleting;
                                }
                                teardown.requested += 1;
                                self.endpoint.delete(now, spi);
                            }
                            phase = Phase::Teardown;
                        } else {
                            phase = Phase::Done;
                        }
                    }
                }
                Phase::Teardown => {
                    let left = self.tunnels.values().any(|t| t.state == TunnelState::Deleting);
                    if !left || now >= teardown_deadline {
                        teardown.secs = now.saturating_duration_since(teardown_start).as_secs_f64();
                        let unfinished = self
                            .tunnels
                            .values()
                            .filter(|t| t.state == TunnelState::Deleting)
                            .count();
                        if unfinished > 0 {
                            *teardown.failed.entry("UNFINISHED".into()).or_default() += unfinished as u64;
                        }
                        phase = Phase::Done;
                    }
                }
                Phase::Done => {}
            }
            self.flush(now, &mut hold, &mut teardown);
            let flood_running = flood_on && now < flood_end;
            if phase == Phase::Done && !flood_running {
                // Let late flood answers arrive before counting the unanswered ones.
                let grace = flood_stopped.map(|s| s + Duration::from_millis(300));
                if grace.is_none_or(|g| now >= g) {
                    break;
                }
            }
            // Sleep until something is due.
            let mut wake: Option<Instant> = self.endpoint.poll_timeout();
            let mut consider = |t: Instant| wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
            match phase {
                Phase::Establish => {
                    let can_start = self.initiated < self.quota && self.in_flight < self.concurrency;
                    if can_start {
                        consider(pacer.as_ref().map_or(now, |p| p.next_at()));
                    }
                    consider(establish_deadline);
                }
                Phase::Hold => {
                    consider(hold_end);
                    if self.esp.is_some() {
                        consider(esp_pacer.as_ref().map_or(now, |p| p.next_at()));
                    }
                    if rekey_ike.rate > 0.0 {
                        consider(rekey_ike.next_at());
                    }
                    if rekey_child.rate > 0.0 {
                        consider(rekey_child.next_at());
                    }
                }
                Phase::Teardown => consider(teardown_deadline),
                Phase::Done => consider(now + Duration::from_millis(50)),
            }
            if flood_running {
                if let Some(fp) = &flood_pacer {
                    consider(fp.next_at().min(flood_end));
                }
            }
            let timeout = wake
                .map(|w| w.saturating_duration_since(now))
                .map(|d| d.min(Duration::from_millis(100)));
            let timeout = Some(timeout.unwrap_or(Duration::from_millis(100)));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                let tok = ev.token().0;
                if tok >= usize::MAX / 2 {
                    if let Some(fr) = flood_report.as_mut() {
                        self.drain_flood_socket(tok - usize::MAX / 2, fr);
                    }
                } else {
                    self.drain_socket(now, tok);
                }
            }
            if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                self.endpoint.handle_timeout(now);
            }
        }
        let end = Instant::now();
        let hold_secs = hold.secs;
        if self.cfg.hold > Duration::ZERO || self.cfg.teardown {
            self.res.hold = Some(hold);
        }
        if self.cfg.teardown {
            self.res.teardown = Some(teardown);
        }
        if let Some(mut e) = self.esp.take() {
            if self.cfg.esp_rate.is_some() {
                // Paced: the rate is over the whole hold, not the time spent sending.
                e.report.secs = hold_secs;
            }
            self.res.esp = Some(e.report);
        }
        if let Some(mut fr) = flood_report {
            if fr.secs == 0.0 {
                fr.secs = end.saturating_duration_since(start).as_secs_f64();
            }
            let answered = fr.cookies + fr.accepted + fr.rejected.values().sum::<u64>();
            fr.unanswered = fr.sent.saturating_sub(answered);
            self.res.flood = Some(fr);
        }
        self.res.cpu = CpuTime::thread().since(&cpu_start);
        tracing::debug!(worker = self.id, "worker finished");
        Ok(self.res)
    }

    fn initiate(&mut self, now: Instant) {
        let n = self.initiated * self.cfg.threads as u64 + self.id as u64;
        self.initiated += 1;
        self.res.attempted += 1;
        self.live.attempted.fetch_add(1, Ordering::Relaxed);
        self.res.first_initiate.get_or_insert(now);
        let sock = self.next_socket % self.legit.len().max(1);
        self.next_socket = self.next_socket.wrapping_add(1);
        let Some(local) = self.legit.get(sock).map(|s| s.local) else {
            self.fail(now, "no socket".into());
            return;
        };
        let config = match self.configs.get(n) {
            Ok(c) => c,
            Err(e) => {
                self.fail(now, e);
                return;
            }
        };
        match self.endpoint.initiate(now, config, local, self.cfg.remote) {
            Ok(spi) => {
                self.in_flight += 1;
                self.res.max_in_flight = self.res.max_in_flight.max(self.in_flight);
                self.tunnels.insert(
                    spi,
                    Tunnel {
                        started: now,
                        state: TunnelState::Negotiating,
                        child: None,
                        child_resolved: false,
                        auth: None,
                    },
                );
            }
            Err(e) => self.fail(now, e.to_string()),
        }
    }

    fn fail(&mut self, now: Instant, reason: String) {
        *self.res.failures.entry(reason).or_default() += 1;
        self.live.failed.fetch_add(1, Ordering::Relaxed);
        self.bucket(now).failed += 1;
    }

    /// Establish phase over time: negotiations still running count as UNFINISHED.
    fn abandon_negotiations(&mut self) {
        let now = Instant::now();
        let open: Vec<u64> = self
            .tunnels
            .iter()
            .filter(|(_, t)| t.state == TunnelState::Negotiating)
            .map(|(s, _)| *s)
            .collect();
        for spi in open {
            self.tunnels.remove(&spi);
            self.in_flight = self.in_flight.saturating_sub(1);
            self.endpoint.delete(now, spi);
            self.fail(now, "UNFINISHED".into());
        }
    }

    /// A random established tunnel (for rekeys), dropping stale entries.
    fn pick_up_tunnel(&mut self) -> Option<u64> {
        let mut r = [0u8; 8];
        while !self.up_spis.is_empty() {
            if self.flood_rng.fill(&mut r).is_err() {
                return None;
            }
            let i = (u64::from_le_bytes(r) % self.up_spis.len() as u64) as usize;
            let spi = self.up_spis[i];
            if self.tunnels.get(&spi).is_some_and(|t| t.state == TunnelState::Up) {
                return Some(spi);
            }
            self.up_spis.swap_remove(i);
        }
        None
    }

    fn drain_socket(&mut self, now: Instant, idx: usize) {
        loop {
            let Some(sock) = self.legit.get(idx) else { return };
            match sock.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    let local = sock.local;
                    let d = strip_marker(&self.buf[..len]);
                    if classify_init_response(d) == Some(InitResponse::Cookie) {
                        self.res.cookies += 1;
                    }
                    if self.cfg.eap.is_some() {
                        note_auth_answer(&mut self.tunnels, now, d);
                    }
                    self.endpoint.handle(now, local, from, d);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn drain_flood_socket(&mut self, idx: usize, fr: &mut FloodReport) {
        loop {
            let Some(sock) = self.flood.get(idx) else { return };
            match sock.socket.recv_from(&mut self.buf) {
                Ok((len, _)) => match classify_init_response(strip_marker(&self.buf[..len])) {
                    Some(InitResponse::Cookie) => fr.cookies += 1,
                    Some(InitResponse::Accepted) => fr.accepted += 1,
                    Some(InitResponse::InvalidKe) => *fr.rejected.entry("INVALID_KE_PAYLOAD".into()).or_default() += 1,
                    Some(InitResponse::Rejected(n)) => *fr.rejected.entry(n.to_string()).or_default() += 1,
                    None => {}
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn send_flood_packet(&mut self, fr: &mut FloodReport) {
        if self.flood.is_empty() {
            return;
        }
        let idx = (fr.sent as usize) % self.flood.len();
        let local = self.flood[idx].local;
        let remote = self.cfg.remote;
        let marker = self.cfg.marker.applies(local.port(), remote.port());
        let Some(fp) = &self.flood_packet else { return };
        if fp
            .write(&mut self.flood_rng, local, remote, marker, &mut self.out)
            .is_err()
        {
            fr.send_errors += 1;
            return;
        }
        fr.sent += 1;
        if self.flood[idx].socket.send_to(&self.out, remote).is_err() {
            fr.send_errors += 1;
        }
    }

    fn send(&mut self, t: &Transmit) {
        let idx = match self.by_addr.get(&t.local) {
            Some(i) => *i,
            None => match self.legit.iter().position(|s| s.local.ip() == t.local.ip()) {
                Some(i) => i,
                None => {
                    self.res.send_errors += 1;
                    return;
                }
            },
        };
        // Retransmission: the same request bytes as the last request of this SA.
        if t.data.len() >= HEADER_LEN && t.data[19] & FLAG_RESPONSE == 0 {
            let spi_i = u64::from_be_bytes(t.data[..8].try_into().unwrap_or([0; 8]));
            let h = fnv1a(&t.data);
            if self.last_request.insert(spi_i, h) == Some(h) {
                self.res.retransmissions += 1;
            }
        }
        if self.cfg.eap.is_some() {
            self.note_auth_request(&t.data);
        }
        let sock = &self.legit[idx];
        let result = if self.cfg.marker.applies(sock.local.port(), t.remote.port()) {
            self.out.clear();
            self.out.extend_from_slice(&NON_ESP_MARKER);
            self.out.extend_from_slice(&t.data);
            sock.socket.send_to(&self.out, t.remote)
        } else {
            sock.socket.send_to(&t.data, t.remote)
        };
        if result.is_err() {
            self.res.send_errors += 1;
        }
    }

    /// An IKE_AUTH request of a negotiating EAP client: a new one means the
    /// previous IKE_AUTH exchange was an EAP round trip.
    fn note_auth_request(&mut self, data: &[u8]) {
        let Some((spi_i, exchange, flags, mid)) = ike_header(data) else {
            return;
        };
        if exchange != ExchangeType::IKE_AUTH.0 || flags & FLAG_RESPONSE != 0 {
            return;
        }
        let Some(t) = self.tunnels.get_mut(&spi_i) else { return };
        if t.state != TunnelState::Negotiating || t.auth.is_some_and(|a| a.message_id == mid) {
            return;
        }
        if let Some(us) = t.auth.and_then(|a| a.rtt_us) {
            let _ = self.res.eap_latency.record(us.max(1));
        }
        t.auth = Some(AuthExchange {
            message_id: mid,
            sent: Instant::now(),
            rtt_us: None,
        });
    }

    /// Sends queued datagrams and handles the endpoint's events.
    fn flush(&mut self, now: Instant, hold: &mut HoldReport, teardown: &mut TeardownReport) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.endpoint.poll_transmit() {
                progressed = true;
                self.send(&t);
            }
            while let Some((spi, ev)) = self.endpoint.poll_event() {
                progressed = true;
                self.on_event(now, spi, ev, hold, teardown);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_event(&mut self, now: Instant, spi: u64, ev: Event, hold: &mut HoldReport, teardown: &mut TeardownReport) {
        match ev {
            Event::IkeSaUp { .. } => {
                let Some(t) = self.tunnels.get_mut(&spi) else { return };
                if t.state != TunnelState::Negotiating {
                    return;
                }
                t.state = TunnelState::Up;
                if self.cfg.vip {
                    let vips = self
                        .endpoint
                        .sa(spi)
                        .and_then(|sa| sa.virtual_ips())
                        .map(|v| v.local.clone());
                    match vips {
                        Some(v) if !v.is_empty() => {
                            self.res.vip_assigned += 1;
                            self.res.vips.extend(v);
                        }
                        _ => self.res.vip_refused_up += 1,
                    }
                }
                let Some(t) = self.tunnels.get_mut(&spi) else { return };
                let lat = now.saturating_duration_since(t.started);
                self.in_flight = self.in_flight.saturating_sub(1);
                self.up_spis.push(spi);
                self.res.established += 1;
                self.res.last_up = Some(now);
                let us = (lat.as_micros() as u64).max(1);
                let _ = self.res.ike_latency.record(us);
                self.live.established.fetch_add(1, Ordering::Relaxed);
                let b = self.bucket(now);
                b.established += 1;
                // Running mean and max in ms.
                let ms = us as f64 / 1000.0;
                b.mean_latency_ms += (ms - b.mean_latency_ms) / b.established as f64;
                b.max_latency_ms = b.max_latency_ms.max(ms);
            }
            Event::ChildSaInstalled(c) => {
                let by_peer = c.rekey_of.is_some_and(|old| !self.own_child_rekeys.remove(&old));
                // A flow moves to the new SA of our own rekey at once, to that
                // of the responder's once it deletes the old child.
                if let Some(e) = self.esp.as_mut() {
                    if by_peer {
                        e.add_peer_rekey(&c, None);
                    } else {
                        e.add_child(&c, None);
                    }
                }
                let Some(t) = self.tunnels.get_mut(&spi) else { return };
                t.child = Some(c.spi_in);
                if c.rekey_of.is_some() {
                    if by_peer {
                        hold.rekeys_child_by_peer += 1;
                    } else {
                        hold.rekeys_child_done += 1;
                    }
                    return;
                }
                if !t.child_resolved {
                    t.child_resolved = true;
                    let us = (now.saturating_duration_since(t.started).as_micros() as u64).max(1);
                    let _ = self.res.child_latency.record(us);
                    self.res.children += 1;
                    self.live.children.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::ChildSaFailed { reason, .. } => {
                let Some(t) = self.tunnels.get_mut(&spi) else { return };
                if !t.child_resolved {
                    t.child_resolved = true;
                    let mut r = reason;
                    r.truncate(100);
                    *self.res.child_failures.entry(r).or_default() += 1;
                }
            }
            // The endpoint counts refusals; they never reach its driver.
            Event::Refused { .. } => {}
            Event::ChildSasMoved {
                spis_in,
                remote,
                udp_encap,
                ..
            } => {
                if let Some(e) = self.esp.as_mut() {
                    e.move_children(&spis_in, remote, udp_encap);
                }
            }
            Event::ChildSaDeleted { spi_in, .. } => {
                self.own_child_rekeys.remove(&spi_in);
                if let Some(e) = self.esp.as_mut() {
                    e.remove_child(spi_in);
                }
            }
            Event::IkeSaRekeyed { new_local_spi, .. } => {
                if self.own_ike_rekeys.remove(&spi) {
                    hold.rekeys_ike_done += 1;
                } else {
                    hold.rekeys_ike_by_peer += 1;
                }
                if let Some(t) = self.tunnels.remove(&spi) {
                    let deleting = t.state == TunnelState::Deleting;
                    self.tunnels.insert(new_local_spi, t);
                    if deleting {
                        // The teardown asked to delete the old SA while its rekey ran: delete the new one.
                        self.endpoint.delete(now, new_local_spi);
                    } else {
                        self.up_spis.push(new_local_spi);
                    }
                }
                self.last_request.remove(&spi);
            }
            Event::IkeSaDown { spis, reason } => {
                self.last_request.remove(&spis.0);
                self.own_ike_rekeys.remove(&spi);
                let Some(t) = self.tunnels.remove(&spi) else { return };
                match t.state {
                    TunnelState::Negotiating => {
                        self.in_flight = self.in_flight.saturating_sub(1);
                        self.fail(now, reason_name(&reason));
                    }
                    TunnelState::Deleting if reason == DownReason::Deleted => {
                        teardown.deleted += 1;
                        self.live.deleted.fetch_add(1, Ordering::Relaxed);
                    }
                    TunnelState::Deleting => *teardown.failed.entry(reason_name(&reason)).or_default() += 1,
                    TunnelState::Up => *hold.lost.entry(reason_name(&reason)).or_default() += 1,
                }
            }
            // ikegen initiates; only a responder authenticates peers with EAP.
            Event::EapRelay(_) | Event::EapAuthenticated(_) => {}
        }
    }
}

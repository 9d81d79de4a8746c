//! A small in-process ironsa responder (one or more threads, each a mio loop
//! around its own `Endpoint` on a shared SO_REUSEPORT port) for self-tests and
//! for measuring the generator without a separate gateway.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::config::{
    AuthConfig, ChildConfig, ConnectionConfig, EapAuth, EapBackend, EapIdentity, IdentityMatch, IpsecMode, Lifetime,
    parse_identity,
};
use control::eap::{Credential, Method};
use control::endpoint::{AdmissionConfig, Endpoint, EndpointStats};
use control::ike_sa::{Context, Event};
use control::pool::{AddrRange, Pool, Pools, SharedPools};
use control::proposal::{EspProposal, IkeProposal};
use control::ts::parse_selector;
use ironsa_crypto::AwsLcProvider;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::cpu::CpuTime;
use super::options::{GenConfig, MarkerPolicy};
use super::wire::{NON_ESP_MARKER, strip_marker};

/// Identity the self-test responder uses when the generator accepts any.
pub const DEFAULT_RESPONDER_ID: &str = "responder@ikegen.test";

/// Live counters of a running responder.
#[derive(Debug, Default)]
pub struct ResponderCounters {
    /// IKE SAs established.
    pub established: AtomicU64,
    /// CHILD_SAs installed (first children and rekeys).
    pub children: AtomicU64,
    /// IKE SAs (established or not) that went down.
    pub down: AtomicU64,
}

/// What a responder measured, returned by [`Responder::stop`].
#[derive(Debug, Default)]
pub struct ResponderResult {
    /// Endpoint counters summed over threads.
    pub stats: EndpointStats,
    /// CPU time of the responder threads.
    pub cpu: CpuTime,
    /// Threads it ran.
    pub threads: usize,
    /// CHILD_SAs installed (first children and rekeys).
    pub children: u64,
}

/// A running in-process responder.
pub struct Responder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<ResponderCounters>,
    threads: Vec<JoinHandle<io::Result<(EndpointStats, CpuTime)>>>,
}

/// The responder connection that accepts what `cfg` initiates: same proposals
/// and PSK, any initiator identity, any traffic selectors.
pub fn connection_for(cfg: &GenConfig) -> ConnectionConfig {
    let local_id = match &cfg.remote_id {
        Some(t) if !t.is_per_tunnel() => t.render(0),
        _ => DEFAULT_RESPONDER_ID.to_string(),
    };
    let mut c = responder_connection(&local_id, cfg.ike.clone(), cfg.esp.clone(), &cfg.psk);
    if cfg.eap.is_some() {
        c.remote_auth = AuthConfig::Eap(Arc::new(EapAuth {
            backend: EapBackend::Local(vec![Method::MsChapV2]),
            eap_id: EapIdentity::Ask,
            eap_only: false,
        }));
    }
    if cfg.vip {
        c.virtual_ips.pools = vec![SELF_TEST_POOL.into()];
    }
    c
}

/// The self-test responder's pool: room for a million clients.
const SELF_TEST_POOL: &str = "ikegen";

fn self_test_pools(ipv4: bool) -> io::Result<Pools> {
    let range = if ipv4 { "100.64.0.0/12" } else { "fd00:1ce::/108" };
    let parsed = AddrRange::parse(range).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Pool::new(SELF_TEST_POOL, &[parsed])
        .and_then(|p| Pools::new(vec![p]))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// The self-test responder's EAP users: any name, the generator's password.
struct AnyUser(zeroize::Zeroizing<String>);

impl control::eap::UserStore for AnyUser {
    fn credential(&self, _identity: &[u8]) -> Option<Credential> {
        Some(Credential::Password(self.0.clone()))
    }
}

/// A responder connection with identity `local_id` accepting any initiator
/// identity and any traffic selectors; `esp` None refuses CHILD_SAs.
pub fn responder_connection(
    local_id: &str,
    ike: Vec<IkeProposal>,
    esp: Option<Vec<EspProposal>>,
    psk: &[u8],
) -> ConnectionConfig {
    let mut c = ConnectionConfig::new("ikegen-responder", parse_identity(local_id), IdentityMatch::Any, psk);
    c.ike_proposals = ike;
    c.ike_lifetime = Lifetime {
        rekey: Duration::ZERO,
        jitter: Duration::ZERO,
        over: Duration::ZERO,
    };
    if let Some(esp) = esp {
        let any4 = parse_selector("0.0.0.0/0").ok();
        let any6 = parse_selector("::/0").ok();
        let any: Vec<_> = any4.into_iter().chain(any6).collect();
        c.children.push(ChildConfig {
            name: "ikegen-responder".into(),
            esp_proposals: esp,
            local_ts: any.clone(),
            remote_ts: any,
            mode: IpsecMode::Tunnel,
            lifetime: Lifetime {
                rekey: Duration::ZERO,
                jitter: Duration::ZERO,
                over: Duration::ZERO,
            },
        });
    }
    c
}

/// Admission settings for a load test: cookies only under real floods, no per-source limit.
pub fn load_test_admission() -> AdmissionConfig {
    AdmissionConfig {
        cookie_threshold: 50_000,
        per_source_half_open: 1 << 20,
        max_half_open: 1 << 20,
        ..AdmissionConfig::default()
    }
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind responder to {addr}: {e}")))?;
    let std: std::net::UdpSocket = s.into();
    Ok(mio::net::UdpSocket::from_std(std))
}

fn add_stats(a: &mut EndpointStats, b: &EndpointStats) {
    a.init_requests += b.init_requests;
    a.cookies_sent += b.cookies_sent;
    a.cookies_valid += b.cookies_valid;
    a.cookies_invalid += b.cookies_invalid;
    a.dropped_per_source += b.dropped_per_source;
    a.dropped_capacity += b.dropped_capacity;
    a.init_rejected += b.init_rejected;
    a.established += b.established;
    a.dropped_invalid += b.dropped_invalid;
}

impl Responder {
    /// Starts `threads` responder threads on `bind` (a specific address; port 0 picks a free port).
    pub fn start(
        bind: SocketAddr,
        connections: Vec<Arc<ConnectionConfig>>,
        admission: AdmissionConfig,
        threads: usize,
        marker: MarkerPolicy,
    ) -> io::Result<Self> {
        Self::start_with(bind, connections, admission, threads, marker, |_| {})
    }

    /// [`Responder::start`] with `setup` applied to each thread's context
    /// (EAP users, address pools).
    pub fn start_with(
        bind: SocketAddr,
        connections: Vec<Arc<ConnectionConfig>>,
        admission: AdmissionConfig,
        threads: usize,
        marker: MarkerPolicy,
        setup: impl Fn(&mut Context),
    ) -> io::Result<Self> {
        if bind.ip().is_unspecified() {
            // NAT detection hashes need the real local address.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bind the responder to a specific address, not 0.0.0.0/::",
            ));
        }
        let first = bind_reuseport(bind)?;
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..threads.max(1) {
            sockets.push(bind_reuseport(addr)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(ResponderCounters::default());
        let mut handles = Vec::new();
        let crypto = AwsLcProvider::new().shared();
        for (i, socket) in sockets.into_iter().enumerate() {
            let mut ctx = Context::new(connections.clone(), crypto.clone());
            setup(&mut ctx);
            let endpoint = Endpoint::new(Instant::now(), ctx, admission.clone(), 0, 0);
            let stop = stop.clone();
            let counters = counters.clone();
            let h = std::thread::Builder::new()
                .name(format!("ike-responder-{i}"))
                .spawn(move || serve(socket, addr, endpoint, stop, counters, marker))?;
            handles.push(h);
        }
        Ok(Self {
            addr,
            stop,
            counters,
            threads: handles,
        })
    }

    /// A responder for what `cfg` initiates, on `bind`.
    pub fn for_generator(cfg: &GenConfig, bind: SocketAddr, threads: usize) -> io::Result<Self> {
        let users = cfg
            .eap
            .as_ref()
            .map(|e| Arc::new(AnyUser(e.password.clone())) as Arc<dyn control::eap::UserStore + Send + Sync>);
        let pools = match cfg.vip {
            true => Some(Arc::new(SharedPools::new(self_test_pools(cfg.remote.is_ipv4())?))),
            false => None,
        };
        Self::start_with(
            bind,
            vec![Arc::new(connection_for(cfg))],
            load_test_admission(),
            threads,
            cfg.marker,
            |ctx| {
                ctx.eap_users = users.clone();
                if let Some(p) = &pools {
                    ctx.addresses = p.clone();
                }
            },
        )
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Live counters.
    pub fn counters(&self) -> &ResponderCounters {
        &self.counters
    }

    /// Stops all threads and returns their measurements.
    pub fn stop(self) -> io::Result<ResponderResult> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = ResponderResult {
            threads: self.threads.len(),
            ..ResponderResult::default()
        };
        for h in self.threads {
            let (stats, cpu) = h.join().map_err(|_| io::Error::other("responder thread panicked"))??;
            add_stats(&mut out.stats, &stats);
            out.cpu = out.cpu.plus(&cpu);
        }
        out.children = self.counters.children.load(Ordering::Relaxed);
        Ok(out)
    }
}

fn serve(
    mut socket: mio::net::UdpSocket,
    local: SocketAddr,
    mut endpoint: Endpoint,
    stop: Arc<AtomicBool>,
    counters: Arc<ResponderCounters>,
    marker: MarkerPolicy,
) -> io::Result<(EndpointStats, CpuTime)> {
    let cpu_start = CpuTime::thread();
    let mut poll = Poll::new()?;
    poll.registry().register(&mut socket, Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(2048);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let timeout = endpoint
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let mut now = Instant::now();
        let mut handled = 0u32;
        loop {
            match socket.recv_from(&mut buf) {
                Ok((len, from)) => {
                    endpoint.handle(now, local, from, strip_marker(&buf[..len]));
                    handled += 1;
                    if handled % 32 == 0 {
                        flush(&socket, &mut endpoint, &counters, marker, &mut out);
                        now = Instant::now();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors surface as ECONNREFUSED on some kernels; keep serving.
                Err(_) => break,
            }
        }
        if endpoint.poll_timeout().is_some_and(|t| t <= now) {
            endpoint.handle_timeout(now);
        }
        flush(&socket, &mut endpoint, &counters, marker, &mut out);
    }
    Ok((endpoint.stats().clone(), CpuTime::thread().since(&cpu_start)))
}

fn flush(
    socket: &mio::net::UdpSocket,
    endpoint: &mut Endpoint,
    counters: &ResponderCounters,
    marker: MarkerPolicy,
    out: &mut Vec<u8>,
) {
    while let Some(t) = endpoint.poll_transmit() {
        let _ = if marker.applies(t.remote.port(), t.local.port()) {
            out.clear();
            out.extend_from_slice(&NON_ESP_MARKER);
            out.extend_from_slice(&t.data);
            socket.send_to(out, t.remote)
        } else {
            socket.send_to(&t.data, t.remote)
        };
    }
    while let Some((_, e)) = endpoint.poll_event() {
        match e {
            Event::IkeSaUp { .. } => {
                counters.established.fetch_add(1, Ordering::Relaxed);
            }
            Event::ChildSaInstalled(_) => {
                counters.children.fetch_add(1, Ordering::Relaxed);
            }
            Event::IkeSaDown { .. } => {
                counters.down.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

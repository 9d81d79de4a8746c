//! `ike-bench`: full IKEv2 responder handshakes per second per core, compared
//! with the crypto ceiling measured in the same run.
//!
//! Suite: x25519 + PSK, IKE aes256gcm16/prfsha256, one CHILD_SA (aes256gcm16).
//!
//! Method. A real initiator [`Endpoint`] and a real responder [`Endpoint`]
//! run in memory on one thread, in batches: the initiator produces a batch of
//! IKE_SA_INIT requests (untimed), the responder handles them all (timed), the
//! initiator turns the responses into IKE_AUTH requests (untimed), the
//! responder handles those (timed) and the initiator checks the responses
//! (untimed; every handshake must complete on both sides or the run fails).
//! The responder holds a steady population of established SAs (about
//! [`LIVE_SAS`]): after warm-up, each batch replaces the oldest one, deleted
//! with INFORMATIONAL exchanges outside the timed regions, so its tables are
//! large but not growing, as in a long-running gateway.
//! Only the responder's `handle` calls and the draining of its transmits and
//! events are inside the timed regions, so none of the initiator's work is
//! counted. Time is this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so
//! time spent descheduled on a busy machine is not counted either; wall time
//! is printed as a cross-check.
//!
//! The crypto ceiling is the same responder's bare cryptography done directly
//! with aws-lc-rs, timed the same way and interleaved batch by batch with the
//! handshakes so that machine noise hits both alike: X25519 keygen + agree,
//! SKEYSEED, prf+ for the seven IKE keys, the initiator's AUTH (verify) and
//! ours (compute), each as RFC 7296 §2.15 defines it, and the child KEYMAT.
//! SK-payload AES-GCM and the RNG are measured and shown separately.
//!
//! `--suite eap-mschapv2`: the initiator logs in with EAP-MSCHAPv2 against
//! the responder's local users (EAP-Identity round first, as strongSwan
//! and Windows clients do), in five IKE_AUTH exchanges; the responder proves
//! itself with the PSK. Its ceiling adds the gateway's MSCHAPv2 work (NT
//! hash, NT-Response check, authenticator response, MSK: MD4, SHA-1, DES)
//! and the AUTH payloads over the MSK, done with the same
//! `control::eap::mschapv2` functions the authenticator calls.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac::{self, HMAC_SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use clap::Parser;
use control::config::{ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
use control::eap::mschapv2;
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::{Context, Event, Transmit};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use ironsa_crypto::AwsLcProvider;
use rustix::time::{ClockId, clock_gettime};

#[path = "../ike_bench_ikev1.rs"]
mod ikev1;

/// The IKE proposal benchmarked.
const IKE_PROPOSAL: &str = "aes256gcm16-prfsha256-x25519";
/// The ESP proposal of the CHILD_SA.
const ESP_PROPOSAL: &str = "aes256gcm16";
/// The pre-shared key of both sides.
const PSK: &[u8] = b"ike-bench pre-shared key, 32+ bytes long";
/// Established SAs kept alive: a steady-state population, so the responder's
/// tables are large but no longer growing (the oldest batch is deleted, untimed).
const LIVE_SAS: usize = 8192;
/// The ratio the project aims for.
const TARGET_RATIO: f64 = 0.7;
/// The ratio the project aims for with EAP-MSCHAPv2: five IKE_AUTH
/// exchanges carry one handshake's crypto.
const TARGET_RATIO_EAP: f64 = 0.5;

impl Suite {
    fn target_ratio(self) -> f64 {
        match self {
            Suite::Psk => TARGET_RATIO,
            Suite::EapMschapv2 => TARGET_RATIO_EAP,
        }
    }

    fn describe(self) -> String {
        match self {
            Suite::Psk => format!("{IKE_PROPOSAL} psk, child {ESP_PROPOSAL}"),
            Suite::EapMschapv2 => format!(
                "{IKE_PROPOSAL}, initiator by eap-mschapv2 (local users, EAP-Identity round), responder by psk, child {ESP_PROPOSAL}"
            ),
        }
    }
}

/// The system allocator (or mimalloc with the `mimalloc` feature), counting
/// allocations while [`COUNTING`] is set (only in one extra, untimed batch:
/// the timed batches pay one relaxed load per allocation).
struct CountingAlloc;

#[cfg(feature = "mimalloc")]
const BACKING: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(not(feature = "mimalloc"))]
const BACKING: std::alloc::System = std::alloc::System;
/// Name of the allocator behind [`CountingAlloc`].
const ALLOCATOR_NAME: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system (glibc malloc)"
};

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static REALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

fn count(counter: &AtomicU64, bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        counter.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters have no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCATIONS, layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { BACKING.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCATIONS, layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { BACKING.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { BACKING.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&REALLOCATIONS, new_size);
        // SAFETY: same contract as our caller's.
        unsafe { BACKING.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Full IKEv2 responder handshakes per second per core, compared with the
/// crypto ceiling measured in the same run.
#[derive(Parser, Debug)]
#[command(name = "ike-bench", version)]
struct Options {
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Install a tracing fmt subscriber at INFO writing to a sink, to measure logging's cost.
    #[arg(long)]
    log: bool,
    /// Seconds of timed work, in (0, 600].
    #[arg(long, default_value_t = 12.0, value_parser = ironsa_bench::cli::seconds(600.0))]
    seconds: f64,
    /// Handshakes per batch; kept below the default cookie threshold (1000
    /// half-open SAs): the benchmark measures full handshakes, not COOKIE round trips.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=900))]
    batch: u16,
    /// Benchmark IKEv1 instead: Main Mode (PSK, x25519) and one Quick Mode per handshake.
    #[arg(long)]
    ikev1: bool,
    /// How the initiator authenticates.
    #[arg(long, value_enum, default_value_t = Suite::Psk)]
    suite: Suite,
}

/// What is benchmarked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    /// Both sides by PSK.
    #[value(name = "x25519-psk")]
    Psk,
    /// The initiator by EAP-MSCHAPv2 (local users), the responder by PSK.
    #[value(name = "eap-mschapv2")]
    EapMschapv2,
}

/// The EAP suite's user and password.
const EAP_USER: &str = "bench-user";
const EAP_PASSWORD: &str = "ike-bench EAP user's password";

/// The responder's one user.
struct BenchUser;

impl control::eap::UserStore for BenchUser {
    fn credential(&self, identity: &[u8]) -> Option<control::eap::Credential> {
        (identity == EAP_USER.as_bytes())
            .then(|| control::eap::Credential::Password(zeroize::Zeroizing::new(EAP_PASSWORD.into())))
    }
}

/// This thread's CPU time.
fn thread_cpu_time() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Accumulated wall and thread-CPU time of a measured activity.
#[derive(Clone, Copy, Default)]
struct Spent {
    wall: Duration,
    cpu: Duration,
}

/// A running measurement; [`Stopwatch::stop`] adds it to a [`Spent`].
struct Stopwatch {
    wall: Instant,
    cpu: Duration,
}

impl Stopwatch {
    fn start() -> Self {
        Stopwatch {
            wall: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    fn stop(self, into: &mut Spent) {
        into.cpu += thread_cpu_time().saturating_sub(self.cpu);
        into.wall += self.wall.elapsed();
    }
}

fn micros(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn child(local: &str, remote: &str) -> Result<ChildConfig, String> {
    Ok(ChildConfig {
        name: "bench-child".into(),
        esp_proposals: parse_esp_proposals(ESP_PROPOSAL).map_err(|e| e.to_string())?,
        local_ts: vec![parse_selector(local)?],
        remote_ts: vec![parse_selector(remote)?],
        mode: IpsecMode::Tunnel,
        lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
    })
}

/// (initiator connection, responder connection).
fn connections() -> Result<(Arc<ConnectionConfig>, Arc<ConnectionConfig>), String> {
    connections_for(IKE_PROPOSAL, control::config::IkeVersions::V2)
}

/// (initiator connection, responder connection) with `proposal`, speaking `versions`.
fn connections_for(
    proposal: &str,
    versions: control::config::IkeVersions,
) -> Result<(Arc<ConnectionConfig>, Arc<ConnectionConfig>), String> {
    let ike = parse_ike_proposals(proposal).map_err(|e| e.to_string())?;
    let mut i = ConnectionConfig::new(
        "bench-initiator",
        parse_identity("client@bench.example"),
        IdentityMatch::Exact(parse_identity("gw.bench.example")),
        PSK,
    );
    i.ike_proposals = ike.clone();
    i.ike_versions = versions;
    i.children.push(child("10.1.0.0/24", "10.2.0.0/16")?);
    // A road-warrior responder: any identity that proves the PSK.
    let mut r = ConnectionConfig::new(
        "bench-responder",
        parse_identity("gw.bench.example"),
        IdentityMatch::Any,
        PSK,
    );
    r.ike_proposals = ike;
    r.ike_versions = versions;
    r.children.push(child("10.2.0.0/16", "0.0.0.0/0")?);
    Ok((Arc::new(i), Arc::new(r)))
}

/// Message sizes seen in a handshake (the crypto ceiling MACs the same lengths).
#[derive(Clone, Copy, Default)]
struct Sizes {
    init_request: usize,
    init_response: usize,
    auth_request: usize,
    auth_response: usize,
}

/// Both endpoints and the bookkeeping of the handshake runs.
struct HandshakeBench {
    initiator_conn: Arc<ConnectionConfig>,
    initiator: Endpoint,
    responder: Endpoint,
    responder_addr: SocketAddr,
    next_peer: u32,
    /// Initiator SPIs of the established SAs, oldest batch first.
    live: std::collections::VecDeque<Vec<u64>>,
    live_count: usize,
    sizes: Sizes,
    /// Count the responder's allocations in [`HandshakeBench::responder_step`].
    count_allocations: bool,
    /// IKE_AUTH exchanges per handshake in the last batch.
    auth_exchanges: usize,
}

fn new_endpoints(i: &Arc<ConnectionConfig>, r: &Arc<ConnectionConfig>) -> (Endpoint, Endpoint) {
    let now = Instant::now();
    let mut responder_ctx = Context::new(vec![r.clone()], AwsLcProvider::new().shared());
    responder_ctx.eap_users = Some(Arc::new(BenchUser));
    let initiator = Endpoint::new(
        now,
        Context::new(vec![i.clone()], AwsLcProvider::new().shared()),
        AdmissionConfig::default(),
        0,
        0,
    );
    // Production admission defaults: a batch stays below the cookie threshold.
    let responder = Endpoint::new(now, responder_ctx, AdmissionConfig::default(), 0, 0);
    (initiator, responder)
}

/// A distinct initiator address per handshake (10.64.0.0/10), so per-source
/// limits see a realistic spread of peers.
fn peer_addr(n: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a40_0000 | (n & 0x003f_ffff))), 500)
}

/// Counts a responder event as a driver would consume it.
fn tally(e: Event, up: &mut usize, installed: &mut usize) {
    match e {
        Event::IkeSaUp { .. } => *up += 1,
        Event::ChildSaInstalled(c) => {
            *installed += 1;
            black_box(&c);
        }
        other => {
            black_box(&other);
        }
    }
}

/// Time of the responder, split by exchange.
#[derive(Clone, Copy, Default)]
struct ResponderSpent {
    init: Spent,
    auth: Spent,
}

/// (initiator connection, responder connection) of `suite`.
fn suite_connections(suite: Suite) -> Result<(Arc<ConnectionConfig>, Arc<ConnectionConfig>), String> {
    let (i, r) = connections()?;
    match suite {
        Suite::Psk => Ok((i, r)),
        Suite::EapMschapv2 => {
            let mut i = (*i).clone();
            i.local_auth = control::config::AuthConfig::EapClient(Arc::new(control::eap::PeerConfig {
                identity: EAP_USER.as_bytes().to_vec(),
                password: zeroize::Zeroizing::new(EAP_PASSWORD.into()),
                methods: vec![control::eap::Method::MsChapV2],
            }));
            let mut r = (*r).clone();
            r.remote_auth = control::config::AuthConfig::Eap(Arc::new(control::config::EapAuth {
                backend: control::config::EapBackend::Local(vec![control::eap::Method::MsChapV2]),
                eap_id: control::config::EapIdentity::Ask,
                eap_only: false,
            }));
            Ok((Arc::new(i), Arc::new(r)))
        }
    }
}

/// Most IKE_AUTH exchanges of one handshake (EAP-MSCHAPv2 takes five).
const MAX_AUTH_EXCHANGES: usize = 8;

impl HandshakeBench {
    fn new(suite: Suite) -> Result<Self, String> {
        let (initiator_conn, responder_conn) = suite_connections(suite)?;
        let (initiator, responder) = new_endpoints(&initiator_conn, &responder_conn);
        Ok(HandshakeBench {
            initiator_conn,
            initiator,
            responder,
            responder_addr: "192.0.2.1:500".parse().map_err(|e| format!("{e}"))?,
            next_peer: 1,
            live: std::collections::VecDeque::new(),
            live_count: 0,
            sizes: Sizes::default(),
            count_allocations: false,
            auth_exchanges: 0,
        })
    }

    /// Delivers datagrams to the initiator and collects what it sends (untimed).
    fn initiator_step(&mut self, now: Instant, input: &[Transmit]) -> (Vec<Transmit>, Vec<u64>) {
        for t in input {
            self.initiator.handle(now, t.remote, t.local, &t.data);
        }
        let mut out = Vec::with_capacity(input.len());
        while let Some(t) = self.initiator.poll_transmit() {
            out.push(t);
        }
        let mut up = Vec::new();
        while let Some((spi, e)) = self.initiator.poll_event() {
            if matches!(e, Event::IkeSaUp { .. }) {
                up.push(spi);
            }
        }
        (out, up)
    }

    /// Delivers datagrams to the responder, draining its output after each
    /// one as a driver would. Returns (transmits, IKE SAs up, children installed).
    fn responder_step(&mut self, now: Instant, input: &[Transmit], spent: &mut Spent) -> (Vec<Transmit>, usize, usize) {
        let mut out = Vec::with_capacity(input.len());
        let (mut up, mut installed) = (0, 0);
        COUNTING.store(self.count_allocations, Ordering::Relaxed);
        let sw = Stopwatch::start();
        for t in input {
            self.responder.handle(now, t.remote, t.local, &t.data);
            while let Some(x) = self.responder.poll_transmit() {
                out.push(x);
            }
            while let Some((_, e)) = self.responder.poll_event() {
                tally(e, &mut up, &mut installed);
            }
        }
        sw.stop(spent);
        COUNTING.store(false, Ordering::Relaxed);
        (out, up, installed)
    }

    /// Deletes the oldest batch of SAs with INFORMATIONAL DELETE exchanges
    /// (untimed), keeping the population steady.
    fn delete_oldest_batch(&mut self) -> Result<(), String> {
        let Some(spis) = self.live.pop_front() else {
            return Ok(());
        };
        let now = Instant::now();
        for spi in &spis {
            self.initiator.delete(now, *spi);
        }
        let (requests, _) = self.initiator_step(now, &[]);
        for t in &requests {
            self.responder.handle(now, t.remote, t.local, &t.data);
        }
        let mut responses = Vec::with_capacity(requests.len());
        while let Some(t) = self.responder.poll_transmit() {
            responses.push(t);
        }
        while self.responder.poll_event().is_some() {}
        self.initiator_step(now, &responses);
        self.live_count -= spis.len();
        let expected = self.live_count;
        if self.responder.len() != expected || self.initiator.len() != expected {
            return Err(format!(
                "deleting {} SAs left {} responder and {} initiator SAs, expected {expected}",
                spis.len(),
                self.responder.len(),
                self.initiator.len()
            ));
        }
        Ok(())
    }

    /// One batch of complete handshakes; adds the responder's time to `spent`.
    fn round(&mut self, batch: usize, spent: &mut ResponderSpent) -> Result<(), String> {
        if self.live_count + batch > LIVE_SAS {
            self.delete_oldest_batch()?;
        }
        let now = Instant::now();
        for _ in 0..batch {
            let local = peer_addr(self.next_peer);
            self.next_peer = self.next_peer.wrapping_add(1);
            self.initiator
                .initiate(now, self.initiator_conn.clone(), local, self.responder_addr)
                .map_err(|e| format!("initiate: {e}"))?;
        }
        let (init_requests, _) = self.initiator_step(now, &[]);
        let (init_responses, _, _) = self.responder_step(now, &init_requests, &mut spent.init);
        let (auth_requests, _) = self.initiator_step(now, &init_responses);
        let (mut up, mut installed, mut initiator_up) = (0, 0, Vec::new());
        let (mut requests, mut exchanges) = (auth_requests.clone(), 0);
        let mut auth_responses = Vec::new();
        // IKE_AUTH exchanges until the initiator has nothing more to ask.
        while !requests.is_empty() && exchanges < MAX_AUTH_EXCHANGES {
            let (responses, u, i) = self.responder_step(now, &requests, &mut spent.auth);
            up += u;
            installed += i;
            exchanges += 1;
            let (next, u) = self.initiator_step(now, &responses);
            initiator_up.extend(u);
            auth_responses = responses;
            requests = next;
        }
        self.auth_exchanges = exchanges;
        let initiator_up_count = initiator_up.len();
        self.live_count += initiator_up_count;
        self.live.push_back(initiator_up);
        let stats = self.responder.stats();
        if init_requests.len() != batch
            || init_responses.len() != batch
            || auth_requests.len() != batch
            || up != batch
            || installed != batch
            || initiator_up_count != batch
        {
            return Err(format!(
                "handshakes did not all complete: {batch} started, {} IKE_SA_INIT requests, {} responses, \
                 {} IKE_AUTH requests, responder up {up}, children {installed}, initiator up {initiator_up_count}; \
                 responder stats {stats:?}",
                init_requests.len(),
                init_responses.len(),
                auth_requests.len()
            ));
        }
        self.sizes = Sizes {
            init_request: init_requests[0].data.len(),
            init_response: init_responses[0].data.len(),
            auth_request: auth_requests[0].data.len(),
            auth_response: auth_responses[0].data.len(),
        };
        Ok(())
    }
}

/// Time of each part of the bare crypto of a responder handshake.
#[derive(Clone, Copy, Default)]
struct CryptoSpent {
    x25519: Spent,
    ike_keys: Spent,
    auth_verify: Spent,
    auth_compute: Spent,
    child_keymat: Spent,
    /// EAP suite: the gateway's MSCHAPv2 computations.
    mschapv2: Spent,
    /// EAP suite: our second AUTH, over the MSK.
    auth_msk: Spent,
    sk_aead: Spent,
    rng: Spent,
}

impl CryptoSpent {
    /// The ceiling's parts: everything but the SK AEAD and the RNG.
    fn ceiling(&self) -> Spent {
        let parts = [
            self.x25519,
            self.ike_keys,
            self.auth_verify,
            self.auth_compute,
            self.child_keymat,
            self.mschapv2,
            self.auth_msk,
        ];
        parts.iter().fold(Spent::default(), |a, p| Spent {
            wall: a.wall + p.wall,
            cpu: a.cpu + p.cpu,
        })
    }

    fn other(&self) -> Spent {
        Spent {
            wall: self.sk_aead.wall + self.rng.wall,
            cpu: self.sk_aead.cpu + self.rng.cpu,
        }
    }
}

/// Inputs of the crypto-only runs: what a responder receives, with the real sizes.
struct CryptoInputs {
    peer_publics: Vec<Vec<u8>>,
    ni: [u8; 32],
    nr: [u8; 32],
    spi_i: u64,
    spi_r: u64,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    id_i: Vec<u8>,
    id_r: Vec<u8>,
    received_auth: [u8; 32],
    auth_request: Vec<u8>,
    auth_response: Vec<u8>,
    eap: MsChapInputs,
}

fn random_bytes(rng: &SystemRandom, n: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v).map_err(|_| "RNG failure".to_string())?;
    Ok(v)
}

fn id_body(id: &str) -> Vec<u8> {
    let id = parse_identity(id);
    let mut v = vec![id.id_type.0, 0, 0, 0];
    v.extend_from_slice(&id.data);
    v
}

impl CryptoInputs {
    fn new(batch: usize, sizes: Sizes) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let mut peer_publics = Vec::with_capacity(batch);
        for _ in 0..batch {
            let k = PrivateKey::generate(&X25519).map_err(|e| format!("x25519: {e}"))?;
            let p = k.compute_public_key().map_err(|e| format!("x25519: {e}"))?;
            peer_publics.push(p.as_ref().to_vec());
        }
        let mut ni = [0u8; 32];
        let mut nr = [0u8; 32];
        let mut received_auth = [0u8; 32];
        for b in [&mut ni[..], &mut nr[..], &mut received_auth[..]] {
            rng.fill(b).map_err(|_| "RNG failure".to_string())?;
        }
        // The SK payload's ciphertext: message minus header (28), SK header (4),
        // IV (8) and ICV (16).
        let sk_body = |len: usize| len.saturating_sub(28 + 4 + 8 + 16);
        Ok(CryptoInputs {
            peer_publics,
            ni,
            nr,
            spi_i: 0x0123_4567_89ab_cdef,
            spi_r: 0xfedc_ba98_7654_3210,
            init_request: random_bytes(&rng, sizes.init_request)?,
            init_response: random_bytes(&rng, sizes.init_response)?,
            id_i: id_body("client@bench.example"),
            id_r: id_body("gw.bench.example"),
            received_auth,
            auth_request: random_bytes(&rng, sk_body(sizes.auth_request))?,
            auth_response: random_bytes(&rng, sk_body(sizes.auth_response))?,
            eap: MsChapInputs::new()?,
        })
    }
}

/// prf(key, data...) = HMAC-SHA-256 with a fresh key schedule.
fn prf(key: &[u8], data: &[&[u8]]) -> hmac::Tag {
    let key = hmac::Key::new(HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for d in data {
        ctx.update(d);
    }
    ctx.sign()
}

/// prf+(key, seed) for `len` bytes (RFC 7296 §2.13), one key schedule.
fn prf_plus(key: &[u8], seed: &[&[u8]], len: usize) -> Vec<u8> {
    let key = hmac::Key::new(HMAC_SHA256, key);
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 1u8;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        if out.len() >= 32 {
            ctx.update(&out[out.len() - 32..]);
        }
        for s in seed {
            ctx.update(s);
        }
        ctx.update(&[counter]);
        out.extend_from_slice(ctx.sign().as_ref());
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// The shared-key AUTH of RFC 7296 §2.15 over `message | nonce | prf(SK_p, ID')`.
fn psk_auth(sk_p: &[u8], id_body: &[u8], message: &[u8], nonce: &[u8]) -> hmac::Tag {
    shared_key_auth(PSK, sk_p, id_body, message, nonce)
}

/// [`psk_auth`] with `key` as the shared secret (an EAP MSK).
fn shared_key_auth(key: &[u8], sk_p: &[u8], id_body: &[u8], message: &[u8], nonce: &[u8]) -> hmac::Tag {
    let maced_id = prf(sk_p, &[id_body]);
    let padded = prf(key, &[b"Key Pad for IKEv2"]);
    prf(padded.as_ref(), &[message, nonce, maced_id.as_ref()])
}

/// IKE SA keymat for aes256gcm16 + prfsha256: SK_d, SK_ei, SK_er, SK_pi, SK_pr.
const IKE_KEYMAT_LEN: usize = 3 * 32 + 2 * 36;
/// CHILD_SA keymat for aes256gcm16: two 36-byte keys.
const CHILD_KEYMAT_LEN: usize = 2 * 36;

/// Runs the bare crypto of `n` responder handshakes of `suite`, stage by stage.
fn crypto_round(inp: &CryptoInputs, n: usize, suite: Suite, spent: &mut CryptoSpent) -> Result<(), String> {
    let fail = |what: &str| format!("crypto ceiling: {what} failed");
    let sw = Stopwatch::start();
    let mut shared = Vec::with_capacity(n);
    for peer in inp.peer_publics.iter().take(n) {
        let key = PrivateKey::generate(&X25519).map_err(|_| fail("x25519 keygen"))?;
        let public = key.compute_public_key().map_err(|_| fail("x25519 public key"))?;
        black_box(public.as_ref());
        let s = agreement::agree(&key, UnparsedPublicKey::new(&X25519, peer), "agree", |s| {
            let mut out = [0u8; 32];
            out.copy_from_slice(s);
            Ok(out)
        })
        .map_err(|_| fail("x25519 agree"))?;
        shared.push(s);
    }
    sw.stop(&mut spent.x25519);

    let sw = Stopwatch::start();
    let mut keymats = Vec::with_capacity(n);
    let nonces: Vec<u8> = inp.ni.iter().chain(inp.nr.iter()).copied().collect();
    for s in &shared {
        let skeyseed = prf(&nonces, &[s]);
        let keymat = prf_plus(
            skeyseed.as_ref(),
            &[&inp.ni, &inp.nr, &inp.spi_i.to_be_bytes(), &inp.spi_r.to_be_bytes()],
            IKE_KEYMAT_LEN,
        );
        keymats.push(keymat);
    }
    sw.stop(&mut spent.ike_keys);
    // keymat layout: SK_d 0..32, SK_ei 32..68, SK_er 68..104, SK_pi 104..136, SK_pr 136..168.

    // With EAP the initiator's AUTH is over the MSK, which MSCHAPv2 yields first.
    let mut msks = Vec::new();
    if suite == Suite::EapMschapv2 {
        let sw = Stopwatch::start();
        for _ in 0..n {
            msks.push(mschapv2_server(&inp.eap)?);
        }
        sw.stop(&mut spent.mschapv2);
    }
    let sw = Stopwatch::start();
    for (i, k) in keymats.iter().enumerate() {
        let expected = match msks.get(i) {
            Some(msk) => shared_key_auth(&msk[..], &k[104..136], &inp.id_i, &inp.init_request, &inp.nr),
            None => psk_auth(&k[104..136], &inp.id_i, &inp.init_request, &inp.nr),
        };
        black_box(verify_slices_are_equal(expected.as_ref(), &inp.received_auth).is_ok());
    }
    sw.stop(&mut spent.auth_verify);
    if !msks.is_empty() {
        let sw = Stopwatch::start();
        for (k, msk) in keymats.iter().zip(&msks) {
            black_box(shared_key_auth(
                &msk[..],
                &k[136..168],
                &inp.id_r,
                &inp.init_response,
                &inp.ni,
            ));
        }
        sw.stop(&mut spent.auth_msk);
    }

    let sw = Stopwatch::start();
    for k in &keymats {
        black_box(psk_auth(&k[136..168], &inp.id_r, &inp.init_response, &inp.ni));
    }
    sw.stop(&mut spent.auth_compute);

    let sw = Stopwatch::start();
    for k in &keymats {
        black_box(prf_plus(&k[..32], &[&inp.ni, &inp.nr], CHILD_KEYMAT_LEN));
    }
    sw.stop(&mut spent.child_keymat);

    // Not in the ceiling: the two SK ciphers (key schedules), opening the
    // IKE_AUTH request and sealing the response. The requests are sealed
    // beforehand, untimed, with each handshake's SK_ei.
    let aad = [0u8; 32];
    let mut requests = Vec::with_capacity(n);
    for k in &keymats {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k[32..64]).map_err(|_| fail("aes key"))?);
        let mut request = inp.auth_request.clone();
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key([1; 12]), Aad::from(aad), &mut request)
            .map_err(|_| fail("aes seal"))?;
        request.extend_from_slice(tag.as_ref());
        requests.push(request);
    }
    let sw = Stopwatch::start();
    for (k, request) in keymats.iter().zip(requests.iter_mut()) {
        let inbound = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k[32..64]).map_err(|_| fail("aes key"))?);
        let outbound = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k[68..100]).map_err(|_| fail("aes key"))?);
        let plain = inbound
            .open_in_place(Nonce::assume_unique_for_key([1; 12]), Aad::from(aad), request)
            .map_err(|_| fail("aes open"))?;
        black_box(plain);
        let mut response = inp.auth_response.clone();
        let tag = outbound
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key([2; 12]), Aad::from(aad), &mut response)
            .map_err(|_| fail("aes seal"))?;
        black_box((response.as_slice(), tag.as_ref()));
    }
    sw.stop(&mut spent.sk_aead);

    let sw = Stopwatch::start();
    let rng = SystemRandom::new();
    for _ in 0..n {
        let mut nonce = [0u8; 32];
        let mut spi = [0u8; 8];
        let mut child_spi = [0u8; 4];
        rng.fill(&mut nonce).map_err(|_| fail("rng"))?;
        rng.fill(&mut spi).map_err(|_| fail("rng"))?;
        rng.fill(&mut child_spi).map_err(|_| fail("rng"))?;
        black_box((nonce, spi, child_spi));
    }
    sw.stop(&mut spent.rng);
    Ok(())
}

/// What the gateway's EAP-MSCHAPv2 authenticator is handed: the client's
/// peer challenge and NT-Response to its challenge.
struct MsChapInputs {
    challenge: [u8; 16],
    peer_challenge: [u8; 16],
    nt_response: [u8; 24],
}

impl MsChapInputs {
    fn new() -> Result<Self, String> {
        let rng = SystemRandom::new();
        let (mut challenge, mut peer_challenge) = ([0u8; 16], [0u8; 16]);
        rng.fill(&mut challenge).map_err(|_| "RNG failure".to_string())?;
        rng.fill(&mut peer_challenge).map_err(|_| "RNG failure".to_string())?;
        let hash = mschapv2::nt_password_hash(EAP_PASSWORD);
        let nt_response = mschapv2::generate_nt_response(&challenge, &peer_challenge, EAP_USER.as_bytes(), &hash);
        Ok(MsChapInputs {
            challenge,
            peer_challenge,
            nt_response,
        })
    }
}

/// The gateway's MSCHAPv2 work for one user, as its authenticator does it:
/// the stored password's NT hash, the expected NT-Response, the
/// authenticator response and the MSK.
fn mschapv2_server(m: &MsChapInputs) -> Result<control::eap::Msk, String> {
    let hash = mschapv2::nt_password_hash(EAP_PASSWORD);
    let expected = mschapv2::generate_nt_response(&m.challenge, &m.peer_challenge, EAP_USER.as_bytes(), &hash);
    if verify_slices_are_equal(&expected, &m.nt_response).is_err() {
        return Err("crypto ceiling: MSCHAPv2 NT-Response does not verify".into());
    }
    black_box(mschapv2::authenticator_response(
        &hash,
        &m.nt_response,
        &m.peer_challenge,
        &m.challenge,
        EAP_USER.as_bytes(),
    ));
    Ok(mschapv2::msk(&hash, &m.nt_response))
}

/// Everything measured in one run.
struct Results {
    handshakes: usize,
    rounds: usize,
    batch: usize,
    responder: ResponderSpent,
    crypto: CryptoSpent,
    crypto_handshakes: usize,
    sizes: Sizes,
    elapsed: Duration,
    /// Responder heap allocations per handshake (allocations, reallocations, bytes).
    allocations: (f64, f64, f64),
    log: bool,
    suite: Suite,
    auth_exchanges: usize,
}

fn run(o: &Options) -> Result<Results, String> {
    let batch = usize::from(o.batch);
    let started = Instant::now();
    let mut hb = HandshakeBench::new(o.suite)?;
    // Warm-up (untimed): fills the steady-state population of established SAs.
    let mut discard = ResponderSpent::default();
    while hb.live_count + batch <= LIVE_SAS {
        hb.round(batch, &mut discard)?;
    }
    let inputs = CryptoInputs::new(batch, hb.sizes)?;
    crypto_round(&inputs, batch, o.suite, &mut CryptoSpent::default())?;

    let mut r = Results {
        handshakes: 0,
        rounds: 0,
        batch,
        responder: ResponderSpent::default(),
        crypto: CryptoSpent::default(),
        crypto_handshakes: 0,
        sizes: hb.sizes,
        elapsed: Duration::ZERO,
        allocations: (0.0, 0.0, 0.0),
        log: o.log,
        suite: o.suite,
        auth_exchanges: 0,
    };
    let budget = Duration::from_secs_f64(o.seconds);
    while r.rounds < 3 || started.elapsed() < budget {
        hb.round(batch, &mut r.responder)?;
        r.handshakes += batch;
        crypto_round(&inputs, batch, o.suite, &mut r.crypto)?;
        r.crypto_handshakes += batch;
        r.rounds += 1;
    }
    // One more batch, untimed, counting the responder's allocations.
    hb.count_allocations = true;
    hb.round(batch, &mut ResponderSpent::default())?;
    let per = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / batch as f64;
    r.allocations = (per(&ALLOCATIONS), per(&REALLOCATIONS), per(&ALLOCATED_BYTES));
    r.auth_exchanges = hb.auth_exchanges;
    r.elapsed = started.elapsed();
    Ok(r)
}

/// The figures derived from [`Results`].
struct Figures {
    responder_us: f64,
    responder_wall_us: f64,
    init_us: f64,
    auth_us: f64,
    crypto_us: f64,
    crypto_wall_us: f64,
    other_us: f64,
    handshakes_per_sec: f64,
    ceiling_per_sec: f64,
    ratio: f64,
    ratio_all_crypto: f64,
    wall_ratio: f64,
}

fn figures(r: &Results) -> Figures {
    let n = r.handshakes;
    let c = r.crypto_handshakes;
    let responder_cpu = r.responder.init.cpu + r.responder.auth.cpu;
    let responder_wall = r.responder.init.wall + r.responder.auth.wall;
    let responder_us = micros(responder_cpu, n);
    let responder_wall_us = micros(responder_wall, n);
    let crypto_us = micros(r.crypto.ceiling().cpu, c);
    let crypto_wall_us = micros(r.crypto.ceiling().wall, c);
    let other_us = micros(r.crypto.other().cpu, c);
    let handshakes_per_sec = 1e6 / responder_us;
    let ceiling_per_sec = 1e6 / crypto_us;
    Figures {
        responder_us,
        responder_wall_us,
        init_us: micros(r.responder.init.cpu, n),
        auth_us: micros(r.responder.auth.cpu, n),
        crypto_us,
        crypto_wall_us,
        other_us,
        handshakes_per_sec,
        ceiling_per_sec,
        ratio: handshakes_per_sec / ceiling_per_sec,
        ratio_all_crypto: (crypto_us + other_us) / responder_us,
        wall_ratio: crypto_wall_us / responder_wall_us,
    }
}

const METHOD: &str = "responder and initiator Endpoints in memory on one thread, in batches, with a steady \
population of 8192 established SAs (oldest batch deleted, untimed); only the responder's handle() calls and the draining of its transmits/events are timed (the initiator's work happens between the timed \
regions); time = thread CPU time (CLOCK_THREAD_CPUTIME_ID); crypto ceiling = the same handshake's X25519 keygen+agree, \
SKEYSEED, prf+ (IKE keys), AUTH verify + AUTH compute (PSK, RFC 7296 2.15) and child KEYMAT done directly with \
aws-lc-rs, interleaved batch by batch with the handshakes";

fn print_text(r: &Results, f: &Figures) {
    let per = |s: Spent| micros(s.cpu, r.crypto_handshakes);
    println!("ike-bench: IKEv2 responder, {}, single thread", r.suite.describe());
    println!("method: {METHOD}.");
    println!();
    println!(
        "handshakes                {:>10}  ({} batches of {})",
        r.handshakes, r.rounds, r.batch
    );
    println!(
        "responder CPU/handshake  {:>10.2} us  (IKE_SA_INIT {:.2} us, IKE_AUTH {:.2} us in {} exchanges)",
        f.responder_us, f.init_us, f.auth_us, r.auth_exchanges
    );
    println!("handshakes/s per core    {:>10.0}", f.handshakes_per_sec);
    println!(
        "crypto/handshake         {:>10.2} us  (x25519 keygen+agree {:.2}, SKEYSEED+prf+ {:.2}, AUTH verify {:.2}, \
         AUTH compute {:.2}, child KEYMAT {:.2})",
        f.crypto_us,
        per(r.crypto.x25519),
        per(r.crypto.ike_keys),
        per(r.crypto.auth_verify),
        per(r.crypto.auth_compute),
        per(r.crypto.child_keymat)
    );
    if r.suite == Suite::EapMschapv2 {
        println!(
            "                             EAP: MSCHAPv2 server {:.2} us, AUTH over the MSK {:.2} us (in the ceiling)",
            per(r.crypto.mschapv2),
            per(r.crypto.auth_msk)
        );
    }
    println!("crypto ceiling per core  {:>10.0} /s", f.ceiling_per_sec);
    let target = r.suite.target_ratio();
    let verdict = if f.ratio >= target { "meets" } else { "BELOW" };
    println!(
        "ratio                    {:>10.3}     ({verdict} the {target} target)",
        f.ratio
    );
    println!();
    println!(
        "not in the ceiling: {:.2} us = SK AES-256-GCM (2 key schedules, open + seal of IKE_AUTH) {:.2} us \
         + RNG {:.2} us; ratio counting them too: {:.3}",
        f.other_us,
        per(r.crypto.sk_aead),
        per(r.crypto.rng),
        f.ratio_all_crypto
    );
    println!(
        "wall-clock cross-check: responder {:.2} us, crypto {:.2} us per handshake, ratio {:.3} \
         (differs from CPU time only by time spent descheduled)",
        f.responder_wall_us, f.crypto_wall_us, f.wall_ratio
    );
    println!(
        "responder heap use per handshake: {:.1} allocations + {:.1} reallocations, {:.0} bytes requested; \
         allocator: {ALLOCATOR_NAME}",
        r.allocations.0, r.allocations.1, r.allocations.2
    );
    println!(
        "logging: {}",
        if r.log {
            "tracing fmt subscriber at INFO, writing to a sink (--log)"
        } else {
            "no tracing subscriber (try --log)"
        }
    );
    println!(
        "message sizes: IKE_SA_INIT {}/{} B, IKE_AUTH {}/{} B (request/response); run took {:.1} s",
        r.sizes.init_request,
        r.sizes.init_response,
        r.sizes.auth_request,
        r.sizes.auth_response,
        r.elapsed.as_secs_f64()
    );
}

fn print_json(r: &Results, f: &Figures) {
    let per = |s: Spent| micros(s.cpu, r.crypto_handshakes);
    let v = serde_json::json!({
        "suite": r.suite.describe(),
        "handshakes_per_sec": f.handshakes_per_sec,
        "ceiling_per_sec": f.ceiling_per_sec,
        "ratio": f.ratio,
        "target_ratio": r.suite.target_ratio(),
        "ike_auth_exchanges": r.auth_exchanges,
        "handshakes": r.handshakes,
        "batch": r.batch,
        "responder_us_per_handshake": f.responder_us,
        "responder_init_us": f.init_us,
        "responder_auth_us": f.auth_us,
        "crypto_us_per_handshake": f.crypto_us,
        "crypto_breakdown_us": {
            "x25519_keygen_agree": per(r.crypto.x25519),
            "skeyseed_prf_plus": per(r.crypto.ike_keys),
            "auth_verify": per(r.crypto.auth_verify),
            "auth_compute": per(r.crypto.auth_compute),
            "child_keymat": per(r.crypto.child_keymat),
            "eap_mschapv2_server": per(r.crypto.mschapv2),
            "auth_over_msk": per(r.crypto.auth_msk),
        },
        "other_crypto_us": { "sk_aes_gcm": per(r.crypto.sk_aead), "rng": per(r.crypto.rng) },
        "ratio_including_other_crypto": f.ratio_all_crypto,
        "wall_responder_us_per_handshake": f.responder_wall_us,
        "wall_crypto_us_per_handshake": f.crypto_wall_us,
        "wall_ratio": f.wall_ratio,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "responder_allocations_per_handshake": r.allocations.0,
        "responder_reallocations_per_handshake": r.allocations.1,
        "responder_allocated_bytes_per_handshake": r.allocations.2,
        "allocator": ALLOCATOR_NAME,
        "logging": if r.log { "info-to-sink" } else { "none" },
        "method": METHOD,
    });
    println!("{v}");
}

fn main() -> ExitCode {
    let o = Options::parse();
    if o.log {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .init();
    }
    if o.ikev1 {
        return match ikev1::run(o.seconds, usize::from(o.batch)) {
            Ok(r) => {
                ikev1::report(&r, o.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ike-bench --ikev1: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&o) {
        Ok(r) => {
            let f = figures(&r);
            if o.json {
                print_json(&r, &f);
            } else {
                print_text(&r, &f);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ike-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `ike-bench`: full IKEv2 responder handshakes per second per core, compared
//! with the crypto ceiling measured in the same run.
//!
//! Suites (`--suite`), each with one CHILD_SA (aes256gcm16) and IKE
//! aes256gcm16/prfsha256: `x25519` (the default: X25519 in IKE_SA_INIT, both
//! sides by PSK), `x25519-mlkem768` (X25519 in IKE_SA_INIT, then ML-KEM-768
//! as ADDKE1 in an IKE_INTERMEDIATE exchange, RFC 9242 / RFC 9370; PSK),
//! `mlkem768-only` (ML-KEM-768 as the one key exchange of IKE_SA_INIT; PSK)
//! and `eap-mschapv2` (X25519; the initiator logs in with EAP-MSCHAPv2
//! against the responder's local users, EAP-Identity round first, as
//! strongSwan and Windows clients do, in five IKE_AUTH exchanges; the
//! responder proves itself with the PSK). `--ikev1` takes only the default.
//!
//! Method. A real initiator [`Endpoint`] and a real responder [`Endpoint`]
//! run in memory on one thread, in batches: the initiator produces a batch of
//! IKE_SA_INIT requests (untimed), the responder handles them all (timed), the
//! initiator turns the responses into its next requests (IKE_INTERMEDIATE,
//! then IKE_AUTH; untimed), the responder handles those (timed) and the
//! initiator checks the last responses (untimed; every handshake must
//! complete on both sides or the run fails).
//! The responder holds a steady population of established SAs (about
//! [`LIVE_SAS`], or `--live-sas`): after warm-up, each batch replaces the oldest one, deleted
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
//! handshakes so that machine noise hits both alike: the suite's key
//! exchanges (X25519 keygen + agree, ML-KEM-768 encapsulation to the
//! initiator's key), SKEYSEED and prf+ for the seven IKE keys after each key
//! exchange (RFC 7296 §2.14, RFC 9370 §2.2.2), the IntAuth PRFs over the
//! IKE_INTERMEDIATE messages (RFC 9242 §3.3.2), the initiator's AUTH (verify)
//! and ours (compute), each as RFC 7296 §2.15 defines it, and the child
//! KEYMAT. With `eap-mschapv2` it adds the gateway's MSCHAPv2 work (NT hash,
//! NT-Response check, authenticator response, MSK: MD4, SHA-1, DES) and the
//! AUTH payloads over the MSK, done with the same `control::eap::mschapv2`
//! functions the authenticator calls. SK-payload AES-GCM and the RNG are
//! measured and shown separately.

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
use aws_lc_rs::kem::{DecapsulationKey, EncapsulationKey, ML_KEM_768};
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

/// The key exchanges and authentication of the handshakes benchmarked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    /// X25519 in IKE_SA_INIT, both sides by PSK.
    #[value(name = "x25519", alias = "x25519-psk")]
    X25519,
    /// X25519 in IKE_SA_INIT, then ML-KEM-768 (ADDKE1) in IKE_INTERMEDIATE.
    #[value(name = "x25519-mlkem768")]
    X25519Mlkem768,
    /// ML-KEM-768 as the only key exchange, in IKE_SA_INIT.
    #[value(name = "mlkem768-only")]
    Mlkem768Only,
    /// X25519; the initiator by EAP-MSCHAPv2 (local users), the responder by PSK.
    #[value(name = "eap-mschapv2")]
    EapMschapv2,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::X25519 => "x25519",
            Suite::X25519Mlkem768 => "x25519-mlkem768",
            Suite::Mlkem768Only => "mlkem768-only",
            Suite::EapMschapv2 => "eap-mschapv2",
        }
    }

    /// The IKE proposal of both sides, in strongSwan 6 syntax.
    fn ike_proposal(self) -> &'static str {
        match self {
            Suite::X25519 | Suite::EapMschapv2 => "aes256gcm16-prfsha256-x25519",
            Suite::X25519Mlkem768 => "aes256gcm16-prfsha256-x25519-ke1_mlkem768",
            Suite::Mlkem768Only => "aes256gcm16-prfsha256-mlkem768",
        }
    }

    /// X25519 is one of the key exchanges.
    fn x25519(self) -> bool {
        matches!(self, Suite::X25519 | Suite::X25519Mlkem768 | Suite::EapMschapv2)
    }

    /// ML-KEM-768 is one of the key exchanges.
    fn mlkem768(self) -> bool {
        matches!(self, Suite::X25519Mlkem768 | Suite::Mlkem768Only)
    }

    /// ML-KEM-768 comes as an additional key exchange, in IKE_INTERMEDIATE.
    fn intermediate(self) -> bool {
        self == Suite::X25519Mlkem768
    }

    /// The initiator logs in with EAP-MSCHAPv2.
    fn eap(self) -> bool {
        self == Suite::EapMschapv2
    }

    /// How the initiator authenticates (the responder always by PSK).
    fn initiator_auth(self) -> &'static str {
        if self.eap() { "eap-mschapv2" } else { "psk" }
    }

    fn target_ratio(self) -> f64 {
        if self.eap() { TARGET_RATIO_EAP } else { TARGET_RATIO }
    }
}

/// The ESP proposal of the CHILD_SA.
const ESP_PROPOSAL: &str = "aes256gcm16";
/// The pre-shared key of both sides.
const PSK: &[u8] = b"ike-bench pre-shared key, 32+ bytes long";
/// Established SAs kept alive by default: a steady-state population, so the
/// responder's tables are large but no longer growing (the oldest batch is
/// deleted, untimed).
const LIVE_SAS: u32 = 8192;
/// The ratio the project aims for.
const TARGET_RATIO: f64 = 0.7;
/// The ratio the project aims for with EAP-MSCHAPv2: five IKE_AUTH
/// exchanges carry one handshake's crypto.
const TARGET_RATIO_EAP: f64 = 0.5;

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
    /// Established SAs the responder keeps (the oldest batch is deleted, untimed, to stay at this population).
    #[arg(long, default_value_t = LIVE_SAS, value_parser = clap::value_parser!(u32).range(0..=200_000))]
    live_sas: u32,
    /// Key exchanges and authentication of the IKEv2 handshakes.
    #[arg(long, value_enum, default_value_t = Suite::X25519, conflicts_with = "ikev1")]
    suite: Suite,
    /// Benchmark IKEv1 instead: Main Mode (PSK, x25519) and one Quick Mode per handshake.
    #[arg(long)]
    ikev1: bool,
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
    /// Zero when the suite has no IKE_INTERMEDIATE exchange.
    intermediate_request: usize,
    intermediate_response: usize,
    auth_request: usize,
    auth_response: usize,
}

/// Both endpoints and the bookkeeping of the handshake runs.
struct HandshakeBench {
    suite: Suite,
    /// The steady population of established SAs.
    live_sas: usize,
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
    intermediate: Spent,
    auth: Spent,
}

impl ResponderSpent {
    fn total(&self) -> Spent {
        Spent {
            wall: self.init.wall + self.intermediate.wall + self.auth.wall,
            cpu: self.init.cpu + self.intermediate.cpu + self.auth.cpu,
        }
    }
}

/// (initiator connection, responder connection) of `suite`.
fn suite_connections(suite: Suite) -> Result<(Arc<ConnectionConfig>, Arc<ConnectionConfig>), String> {
    let (i, r) = connections_for(suite.ike_proposal(), control::config::IkeVersions::V2)?;
    if !suite.eap() {
        return Ok((i, r));
    }
    let mut i = (*i).clone();
    i.local_auth = control::config::AuthConfig::EapClient(Arc::new(control::config::EapClientAuth {
        identity: EAP_USER.as_bytes().to_vec(),
        password: zeroize::Zeroizing::new(EAP_PASSWORD.into()),
        methods: vec![control::eap::Method::MsChapV2],
        tls: None,
    }));
    let mut r = (*r).clone();
    r.remote_auth = control::config::AuthConfig::Eap(Arc::new(control::config::EapAuth {
        backend: control::config::EapBackend::Local(vec![control::eap::Method::MsChapV2]),
        eap_id: control::config::EapIdentity::Ask,
        eap_only: false,
    }));
    Ok((Arc::new(i), Arc::new(r)))
}

/// Most IKE_AUTH exchanges of one handshake (EAP-MSCHAPv2 takes five).
const MAX_AUTH_EXCHANGES: usize = 8;

impl HandshakeBench {
    fn new(suite: Suite, live_sas: usize) -> Result<Self, String> {
        let (initiator_conn, responder_conn) = suite_connections(suite)?;
        let (initiator, responder) = new_endpoints(&initiator_conn, &responder_conn);
        Ok(HandshakeBench {
            suite,
            live_sas,
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
        if self.live_count + batch > self.live_sas {
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
        // IKE_SA_INIT, IKE_INTERMEDIATE when the suite has one, then IKE_AUTH
        // exchanges until the initiator has nothing more to ask.
        let before_auth = if self.suite.intermediate() { 2 } else { 1 };
        let (mut requests, _) = self.initiator_step(now, &[]);
        let mut sizes = Vec::with_capacity(before_auth + 1);
        let mut seen = Vec::with_capacity(before_auth + 1);
        let (mut up, mut installed, mut initiator_up) = (0, 0, Vec::new());
        let mut exchange = 0;
        while !requests.is_empty() && exchange < before_auth + MAX_AUTH_EXCHANGES {
            let timed = match exchange {
                0 => &mut spent.init,
                e if e < before_auth => &mut spent.intermediate,
                _ => &mut spent.auth,
            };
            let (responses, responder_up, responder_installed) = self.responder_step(now, &requests, timed);
            sizes.push((
                requests.first().map_or(0, |t| t.data.len()),
                responses.first().map_or(0, |t| t.data.len()),
            ));
            seen.push((requests.len(), responses.len()));
            up += responder_up;
            installed += responder_installed;
            let (next, initiator_done) = self.initiator_step(now, &responses);
            requests = next;
            initiator_up.extend(initiator_done);
            exchange += 1;
        }
        let auth_exchanges = exchange.saturating_sub(before_auth);
        let initiator_up_count = initiator_up.len();
        self.live_count += initiator_up_count;
        self.live.push_back(initiator_up);
        if auth_exchanges == 0
            || !requests.is_empty()
            || seen.iter().any(|&(req, resp)| req != batch || resp != batch)
            || up != batch
            || installed != batch
            || initiator_up_count != batch
        {
            let stats = self.responder.stats();
            return Err(format!(
                "handshakes did not all complete: {batch} started, (requests, responses) per exchange {seen:?}, \
                 {} requests still pending after {auth_exchanges} IKE_AUTH exchanges, responder up {up}, \
                 children {installed}, initiator up {initiator_up_count}; responder stats {stats:?}",
                requests.len()
            ));
        }
        self.auth_exchanges = auth_exchanges;
        // The first IKE_AUTH request and the last response: the ones that
        // carry the AUTH payloads the ceiling MACs and seals.
        let init = sizes[0];
        let intermediate = if before_auth == 2 { sizes[1] } else { (0, 0) };
        self.sizes = Sizes {
            init_request: init.0,
            init_response: init.1,
            intermediate_request: intermediate.0,
            intermediate_response: intermediate.1,
            auth_request: sizes[before_auth].0,
            auth_response: sizes[sizes.len() - 1].1,
        };
        Ok(())
    }
}

/// Time of each part of the bare crypto of a responder handshake.
#[derive(Clone, Copy, Default)]
struct CryptoSpent {
    x25519: Spent,
    mlkem768: Spent,
    ike_keys: Spent,
    int_auth: Spent,
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

fn sum(parts: &[Spent]) -> Spent {
    parts.iter().fold(Spent::default(), |a, p| Spent {
        wall: a.wall + p.wall,
        cpu: a.cpu + p.cpu,
    })
}

impl CryptoSpent {
    /// The ceiling's parts: everything but the SK AEAD and the RNG.
    fn ceiling(&self) -> Spent {
        sum(&[
            self.x25519,
            self.mlkem768,
            self.ike_keys,
            self.int_auth,
            self.auth_verify,
            self.auth_compute,
            self.child_keymat,
            self.mschapv2,
            self.auth_msk,
        ])
    }

    fn other(&self) -> Spent {
        sum(&[self.sk_aead, self.rng])
    }
}

/// Inputs of the crypto-only runs: what a responder receives, with the real sizes.
struct CryptoInputs {
    suite: Suite,
    /// The initiators' X25519 public values (none without X25519).
    peer_publics: Vec<Vec<u8>>,
    /// The initiators' ML-KEM-768 encapsulation keys (none without ML-KEM).
    peer_encapsulation_keys: Vec<Vec<u8>>,
    ni: [u8; 32],
    nr: [u8; 32],
    spi_i: u64,
    spi_r: u64,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    /// IntAuth_A | IntAuth_P of the IKE_INTERMEDIATE request and response
    /// (empty without IKE_INTERMEDIATE).
    intermediate_request: Vec<u8>,
    intermediate_response: Vec<u8>,
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

/// The SK payload's ciphertext: message minus header (28), SK header (4),
/// IV (8) and ICV (16).
fn sk_body(len: usize) -> usize {
    len.saturating_sub(28 + 4 + 8 + 16)
}

/// What IntAuth covers of an IKE_INTERMEDIATE message: all of it but the IV and ICV.
fn int_auth_part(len: usize) -> usize {
    len.saturating_sub(8 + 16)
}

impl CryptoInputs {
    fn new(suite: Suite, batch: usize, sizes: Sizes) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let mut peer_publics = Vec::with_capacity(batch);
        let mut peer_encapsulation_keys = Vec::with_capacity(batch);
        for _ in 0..batch {
            if suite.x25519() {
                let k = PrivateKey::generate(&X25519).map_err(|e| format!("x25519: {e}"))?;
                let p = k.compute_public_key().map_err(|e| format!("x25519: {e}"))?;
                peer_publics.push(p.as_ref().to_vec());
            }
            if suite.mlkem768() {
                let dk = DecapsulationKey::generate(&ML_KEM_768).map_err(|e| format!("ML-KEM-768: {e}"))?;
                let ek = dk.encapsulation_key().map_err(|e| format!("ML-KEM-768: {e}"))?;
                let bytes = ek.key_bytes().map_err(|e| format!("ML-KEM-768: {e}"))?;
                peer_encapsulation_keys.push(bytes.as_ref().to_vec());
            }
        }
        let mut ni = [0u8; 32];
        let mut nr = [0u8; 32];
        let mut received_auth = [0u8; 32];
        for b in [&mut ni[..], &mut nr[..], &mut received_auth[..]] {
            rng.fill(b).map_err(|_| "RNG failure".to_string())?;
        }
        Ok(CryptoInputs {
            suite,
            peer_publics,
            peer_encapsulation_keys,
            ni,
            nr,
            spi_i: 0x0123_4567_89ab_cdef,
            spi_r: 0xfedc_ba98_7654_3210,
            init_request: random_bytes(&rng, sizes.init_request)?,
            init_response: random_bytes(&rng, sizes.init_response)?,
            intermediate_request: random_bytes(&rng, int_auth_part(sizes.intermediate_request))?,
            intermediate_response: random_bytes(&rng, int_auth_part(sizes.intermediate_response))?,
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

/// The shared-key AUTH of RFC 7296 §2.15 over `message | nonce | prf(SK_p, ID')`,
/// followed by IntAuth when there were IKE_INTERMEDIATE exchanges (RFC 9242 §3.3.2).
fn psk_auth(sk_p: &[u8], id_body: &[u8], message: &[u8], nonce: &[u8], int_auth: &[u8]) -> hmac::Tag {
    shared_key_auth(PSK, sk_p, id_body, message, nonce, int_auth)
}

/// [`psk_auth`] with `key` as the shared secret (an EAP MSK).
fn shared_key_auth(
    key: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
    message: &[u8],
    nonce: &[u8],
    int_auth: &[u8],
) -> hmac::Tag {
    let maced_id = prf(sk_p, &[id_body]);
    let padded = prf(key, &[b"Key Pad for IKEv2"]);
    prf(padded.as_ref(), &[message, nonce, maced_id.as_ref(), int_auth])
}

/// IKE SA keymat for aes256gcm16 + prfsha256: SK_d, SK_ei, SK_er, SK_pi, SK_pr.
const IKE_KEYMAT_LEN: usize = 3 * 32 + 2 * 36;
/// CHILD_SA keymat for aes256gcm16: two 36-byte keys.
const CHILD_KEYMAT_LEN: usize = 2 * 36;
/// Where each key lies in the IKE keymat.
const SK_D: std::ops::Range<usize> = 0..32;
const SK_EI: std::ops::Range<usize> = 32..64;
const SK_ER: std::ops::Range<usize> = 68..100;
const SK_PI: std::ops::Range<usize> = 104..136;
const SK_PR: std::ops::Range<usize> = 136..168;
/// Message ID of IKE_AUTH after one IKE_INTERMEDIATE exchange.
const IKE_AUTH_MID_AFTER_INTERMEDIATE: u32 = 2;

/// Opens a request sealed with `inbound` and seals a response with
/// `outbound`, each with its own key schedule, as the responder does per
/// SK-protected exchange.
fn sk_exchange(inbound: &[u8], outbound: &[u8], request: &mut [u8], response: &[u8]) -> Result<(), String> {
    let fail = |what: &str| format!("crypto ceiling: {what} failed");
    let aad = [0u8; 32];
    let inbound = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, inbound).map_err(|_| fail("aes key"))?);
    let outbound = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, outbound).map_err(|_| fail("aes key"))?);
    let plain = inbound
        .open_in_place(Nonce::assume_unique_for_key([1; 12]), Aad::from(aad), request)
        .map_err(|_| fail("aes open"))?;
    black_box(plain);
    let mut response = response.to_vec();
    let tag = outbound
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key([2; 12]), Aad::from(aad), &mut response)
        .map_err(|_| fail("aes seal"))?;
    black_box((response.as_slice(), tag.as_ref()));
    Ok(())
}

/// `plain` sealed with `key` as the initiator would (untimed input of [`sk_exchange`]).
fn sealed(key: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
    let fail = |what: &str| format!("crypto ceiling: {what} failed");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| fail("aes key"))?);
    let mut out = plain.to_vec();
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key([1; 12]), Aad::from([0u8; 32]), &mut out)
        .map_err(|_| fail("aes seal"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Runs the bare crypto of `n` responder handshakes, stage by stage.
fn crypto_round(inp: &CryptoInputs, n: usize, spent: &mut CryptoSpent) -> Result<(), String> {
    let fail = |what: &str| format!("crypto ceiling: {what} failed");
    let suite = inp.suite;
    let sw = Stopwatch::start();
    let mut dh_shared = Vec::with_capacity(n);
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
        dh_shared.push(s);
    }
    sw.stop(&mut spent.x25519);

    let sw = Stopwatch::start();
    let mut kem_shared = Vec::with_capacity(n);
    for ek in inp.peer_encapsulation_keys.iter().take(n) {
        let ek = EncapsulationKey::new(&ML_KEM_768, ek).map_err(|_| fail("ML-KEM-768 encapsulation key"))?;
        let (ciphertext, s) = ek.encapsulate().map_err(|_| fail("ML-KEM-768 encapsulation"))?;
        black_box(ciphertext.as_ref());
        let mut out = [0u8; 32];
        out.copy_from_slice(s.as_ref());
        kem_shared.push(out);
    }
    sw.stop(&mut spent.mlkem768);

    // The key exchange of IKE_SA_INIT, then the additional one if any.
    let (first, additional): (&[[u8; 32]], &[[u8; 32]]) = match suite {
        Suite::X25519 | Suite::EapMschapv2 => (&dh_shared, &[]),
        Suite::X25519Mlkem768 => (&dh_shared, &kem_shared),
        Suite::Mlkem768Only => (&kem_shared, &[]),
    };
    let sw = Stopwatch::start();
    let nonces: Vec<u8> = inp.ni.iter().chain(inp.nr.iter()).copied().collect();
    let spis = (inp.spi_i.to_be_bytes(), inp.spi_r.to_be_bytes());
    let ike_keys_seed: [&[u8]; 4] = [&inp.ni, &inp.nr, &spis.0, &spis.1];
    let mut keymats = Vec::with_capacity(n);
    let mut intermediate_keymats = Vec::with_capacity(n);
    for (i, s) in first.iter().enumerate() {
        let skeyseed = prf(&nonces, &[s]);
        let keymat = prf_plus(skeyseed.as_ref(), &ike_keys_seed, IKE_KEYMAT_LEN);
        match additional.get(i) {
            Some(s) => {
                // RFC 9370 §2.2.2: SKEYSEED(1) = prf(SK_d(0), SK(1) | Ni | Nr).
                let skeyseed = prf(&keymat[SK_D], &[s, &inp.ni, &inp.nr]);
                keymats.push(prf_plus(skeyseed.as_ref(), &ike_keys_seed, IKE_KEYMAT_LEN));
                intermediate_keymats.push(keymat);
            }
            None => keymats.push(keymat),
        }
    }
    sw.stop(&mut spent.ike_keys);

    // IntAuth_i and IntAuth_r of the IKE_INTERMEDIATE exchange, under the
    // keys that protected it.
    let sw = Stopwatch::start();
    let mut int_auths = Vec::with_capacity(intermediate_keymats.len());
    for k in &intermediate_keymats {
        let int_auth_i = prf(&k[SK_PI], &[&inp.intermediate_request]);
        let int_auth_r = prf(&k[SK_PR], &[&inp.intermediate_response]);
        int_auths.push(
            [
                int_auth_i.as_ref(),
                int_auth_r.as_ref(),
                &IKE_AUTH_MID_AFTER_INTERMEDIATE.to_be_bytes(),
            ]
            .concat(),
        );
    }
    sw.stop(&mut spent.int_auth);
    let int_auth = |i: usize| int_auths.get(i).map_or(&[][..], Vec::as_slice);

    // With EAP the initiator's AUTH is over the MSK, which MSCHAPv2 yields first.
    let mut msks = Vec::new();
    if suite.eap() {
        let sw = Stopwatch::start();
        for _ in 0..keymats.len() {
            msks.push(mschapv2_server(&inp.eap)?);
        }
        sw.stop(&mut spent.mschapv2);
    }
    let sw = Stopwatch::start();
    for (i, k) in keymats.iter().enumerate() {
        let expected = match msks.get(i) {
            Some(msk) => shared_key_auth(&msk[..], &k[SK_PI], &inp.id_i, &inp.init_request, &inp.nr, int_auth(i)),
            None => psk_auth(&k[SK_PI], &inp.id_i, &inp.init_request, &inp.nr, int_auth(i)),
        };
        black_box(verify_slices_are_equal(expected.as_ref(), &inp.received_auth).is_ok());
    }
    sw.stop(&mut spent.auth_verify);
    if !msks.is_empty() {
        let sw = Stopwatch::start();
        for (i, (k, msk)) in keymats.iter().zip(&msks).enumerate() {
            black_box(shared_key_auth(
                &msk[..],
                &k[SK_PR],
                &inp.id_r,
                &inp.init_response,
                &inp.ni,
                int_auth(i),
            ));
        }
        sw.stop(&mut spent.auth_msk);
    }

    let sw = Stopwatch::start();
    for (i, k) in keymats.iter().enumerate() {
        black_box(psk_auth(&k[SK_PR], &inp.id_r, &inp.init_response, &inp.ni, int_auth(i)));
    }
    sw.stop(&mut spent.auth_compute);

    let sw = Stopwatch::start();
    for k in &keymats {
        black_box(prf_plus(&k[SK_D], &[&inp.ni, &inp.nr], CHILD_KEYMAT_LEN));
    }
    sw.stop(&mut spent.child_keymat);

    // Not in the ceiling: the SK ciphers of each protected exchange (two key
    // schedules, opening the request and sealing the response). The requests
    // are sealed beforehand, untimed, with each handshake's SK_ei.
    let mut requests = Vec::with_capacity(n);
    for (i, k) in keymats.iter().enumerate() {
        let intermediate = match intermediate_keymats.get(i) {
            Some(k0) => Some(sealed(&k0[SK_EI], &inp.intermediate_request)?),
            None => None,
        };
        requests.push((intermediate, sealed(&k[SK_EI], &inp.auth_request)?));
    }
    let sw = Stopwatch::start();
    for (i, (k, (intermediate, auth))) in keymats.iter().zip(requests.iter_mut()).enumerate() {
        if let (Some(k0), Some(request)) = (intermediate_keymats.get(i), intermediate.as_mut()) {
            sk_exchange(&k0[SK_EI], &k0[SK_ER], request, &inp.intermediate_response)?;
        }
        sk_exchange(&k[SK_EI], &k[SK_ER], auth, &inp.auth_response)?;
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
    suite: Suite,
    /// IKE_AUTH exchanges per handshake.
    auth_exchanges: usize,
    live_sas: usize,
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
}

fn run(o: &Options) -> Result<Results, String> {
    let batch = usize::from(o.batch);
    let started = Instant::now();
    let mut hb = HandshakeBench::new(o.suite, o.live_sas as usize)?;
    // Warm-up (untimed): fills the steady-state population of established SAs.
    let mut discard = ResponderSpent::default();
    while hb.live_count + batch <= hb.live_sas {
        hb.round(batch, &mut discard)?;
    }
    let inputs = CryptoInputs::new(o.suite, batch, hb.sizes)?;
    crypto_round(&inputs, batch, &mut CryptoSpent::default())?;

    let mut r = Results {
        suite: o.suite,
        auth_exchanges: hb.auth_exchanges,
        live_sas: hb.live_sas,
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
    };
    let budget = Duration::from_secs_f64(o.seconds);
    while r.rounds < 3 || started.elapsed() < budget {
        hb.round(batch, &mut r.responder)?;
        r.handshakes += batch;
        crypto_round(&inputs, batch, &mut r.crypto)?;
        r.crypto_handshakes += batch;
        r.rounds += 1;
    }
    // One more batch, untimed, counting the responder's allocations.
    hb.count_allocations = true;
    hb.round(batch, &mut ResponderSpent::default())?;
    let per = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / batch as f64;
    r.allocations = (per(&ALLOCATIONS), per(&REALLOCATIONS), per(&ALLOCATED_BYTES));
    r.elapsed = started.elapsed();
    Ok(r)
}

/// The figures derived from [`Results`].
struct Figures {
    responder_us: f64,
    responder_wall_us: f64,
    init_us: f64,
    intermediate_us: f64,
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
    let responder_us = micros(r.responder.total().cpu, n);
    let responder_wall_us = micros(r.responder.total().wall, n);
    let crypto_us = micros(r.crypto.ceiling().cpu, c);
    let crypto_wall_us = micros(r.crypto.ceiling().wall, c);
    let other_us = micros(r.crypto.other().cpu, c);
    let handshakes_per_sec = 1e6 / responder_us;
    let ceiling_per_sec = 1e6 / crypto_us;
    Figures {
        responder_us,
        responder_wall_us,
        init_us: micros(r.responder.init.cpu, n),
        intermediate_us: micros(r.responder.intermediate.cpu, n),
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

fn method(live_sas: usize) -> String {
    format!(
        "responder and initiator Endpoints in memory on one thread, in batches, with a steady \
population of {live_sas} established SAs (oldest batch deleted, untimed); only the responder's handle() calls and the draining of its transmits/events are timed (the initiator's work happens between the timed \
regions); time = thread CPU time (CLOCK_THREAD_CPUTIME_ID); crypto ceiling = the same handshake's key exchanges \
(X25519 keygen+agree, ML-KEM-768 encapsulation), SKEYSEED and prf+ (IKE keys) after each key exchange, the IntAuth \
PRFs of IKE_INTERMEDIATE (RFC 9242), AUTH verify + AUTH compute (PSK, RFC 7296 2.15), with eap-mschapv2 the \
gateway's MSCHAPv2 work (control::eap::mschapv2) and the AUTH payloads over the MSK, and child KEYMAT done directly \
with aws-lc-rs, interleaved batch by batch with the handshakes"
    )
}

/// The ceiling's parts present in the suite: (JSON key, label, time).
fn ceiling_parts(r: &Results) -> Vec<(&'static str, &'static str, Spent)> {
    let c = &r.crypto;
    let mut parts = Vec::new();
    if r.suite.x25519() {
        parts.push(("x25519_keygen_agree", "x25519 keygen+agree", c.x25519));
    }
    if r.suite.mlkem768() {
        parts.push(("mlkem768_encapsulate", "ML-KEM-768 encapsulation", c.mlkem768));
    }
    parts.push(("skeyseed_prf_plus", "SKEYSEED+prf+", c.ike_keys));
    if r.suite.intermediate() {
        parts.push(("int_auth", "IntAuth", c.int_auth));
    }
    parts.extend([
        ("auth_verify", "AUTH verify", c.auth_verify),
        ("auth_compute", "AUTH compute", c.auth_compute),
        ("child_keymat", "child KEYMAT", c.child_keymat),
    ]);
    if r.suite.eap() {
        parts.extend([
            ("eap_mschapv2_server", "MSCHAPv2 server", c.mschapv2),
            ("auth_over_msk", "AUTH over the MSK", c.auth_msk),
        ]);
    }
    parts
}

fn print_text(r: &Results, f: &Figures) {
    let per = |s: Spent| micros(s.cpu, r.crypto_handshakes);
    println!(
        "ike-bench: IKEv2 responder, suite {} ({}, {}), one CHILD_SA ({ESP_PROPOSAL}), single thread",
        r.suite.name(),
        r.suite.ike_proposal(),
        if r.suite.eap() {
            "initiator by EAP-MSCHAPv2 (local users, EAP-Identity round), responder by PSK"
        } else {
            "PSK"
        }
    );
    println!("method: {}.", method(r.live_sas));
    println!();
    println!(
        "handshakes                {:>10}  ({} batches of {})",
        r.handshakes, r.rounds, r.batch
    );
    let intermediate = if r.suite.intermediate() {
        format!(", IKE_INTERMEDIATE {:.2} us", f.intermediate_us)
    } else {
        String::new()
    };
    println!(
        "responder CPU/handshake  {:>10.2} us  (IKE_SA_INIT {:.2} us{intermediate}, IKE_AUTH {:.2} us in {} exchanges)",
        f.responder_us, f.init_us, f.auth_us, r.auth_exchanges
    );
    println!("handshakes/s per core    {:>10.0}", f.handshakes_per_sec);
    let breakdown: Vec<String> = ceiling_parts(r)
        .into_iter()
        .map(|(_, label, s)| format!("{label} {:.2}", per(s)))
        .collect();
    println!(
        "crypto/handshake         {:>10.2} us  ({})",
        f.crypto_us,
        breakdown.join(", ")
    );
    println!("crypto ceiling per core  {:>10.0} /s", f.ceiling_per_sec);
    let target = r.suite.target_ratio();
    let verdict = if f.ratio >= target { "meets" } else { "BELOW" };
    println!(
        "ratio                    {:>10.3}     ({verdict} the {target} target)",
        f.ratio
    );
    println!();
    println!(
        "not in the ceiling: {:.2} us = SK AES-256-GCM (2 key schedules, open + seal, per protected exchange) {:.2} us \
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
    let s = &r.sizes;
    let intermediate = if r.suite.intermediate() {
        format!(
            ", IKE_INTERMEDIATE {}/{} B",
            s.intermediate_request, s.intermediate_response
        )
    } else {
        String::new()
    };
    println!(
        "message sizes: IKE_SA_INIT {}/{} B{intermediate}, IKE_AUTH {}/{} B (request/response); run took {:.1} s",
        s.init_request,
        s.init_response,
        s.auth_request,
        s.auth_response,
        r.elapsed.as_secs_f64()
    );
}

fn print_json(r: &Results, f: &Figures) {
    let per = |s: Spent| micros(s.cpu, r.crypto_handshakes);
    let breakdown: serde_json::Map<String, serde_json::Value> = ceiling_parts(r)
        .into_iter()
        .map(|(key, _, s)| (key.to_string(), serde_json::json!(per(s))))
        .collect();
    let s = &r.sizes;
    let v = serde_json::json!({
        "suite": r.suite.name(),
        "ike_proposal": r.suite.ike_proposal(),
        "esp_proposal": ESP_PROPOSAL,
        "auth": r.suite.initiator_auth(),
        "responder_auth": "psk",
        "handshakes_per_sec": f.handshakes_per_sec,
        "ceiling_per_sec": f.ceiling_per_sec,
        "ratio": f.ratio,
        "target_ratio": r.suite.target_ratio(),
        "ike_auth_exchanges": r.auth_exchanges,
        "handshakes": r.handshakes,
        "batch": r.batch,
        "responder_us_per_handshake": f.responder_us,
        "responder_init_us": f.init_us,
        "responder_intermediate_us": f.intermediate_us,
        "responder_auth_us": f.auth_us,
        "crypto_us_per_handshake": f.crypto_us,
        "crypto_breakdown_us": breakdown,
        "other_crypto_us": { "sk_aes_gcm": per(r.crypto.sk_aead), "rng": per(r.crypto.rng) },
        "ratio_including_other_crypto": f.ratio_all_crypto,
        "wall_responder_us_per_handshake": f.responder_wall_us,
        "wall_crypto_us_per_handshake": f.crypto_wall_us,
        "wall_ratio": f.wall_ratio,
        "message_sizes": {
            "ike_sa_init": [s.init_request, s.init_response],
            "ike_intermediate": [s.intermediate_request, s.intermediate_response],
            "ike_auth": [s.auth_request, s.auth_response],
        },
        "elapsed_s": r.elapsed.as_secs_f64(),
        "responder_allocations_per_handshake": r.allocations.0,
        "responder_reallocations_per_handshake": r.allocations.1,
        "responder_allocated_bytes_per_handshake": r.allocations.2,
        "allocator": ALLOCATOR_NAME,
        "logging": if r.log { "info-to-sink" } else { "none" },
        "live_sas": r.live_sas,
        "method": method(r.live_sas),
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
        return match ikev1::run(o.seconds, usize::from(o.batch), o.live_sas as usize) {
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
            eprintln!("ike-bench --suite {}: {e}", o.suite.name());
            ExitCode::FAILURE
        }
    }
}

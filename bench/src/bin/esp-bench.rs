//! esp-bench: ESP encapsulation and decapsulation per core, compared in the
//! same run with the bare aws-lc-rs AES-GCM seal/open of the same sizes.
//!
//! Usage: `esp-bench [--json] [--secs S] [--reps R] [--no-scale] [--scale-sas N]
//! [--traffic one-active,active-1000,random,uniform-x4,zipf-x4] [--cores N] [--no-core-scaling]
//! [--sizes 64,512,1420,imix]` (`esp-bench --help` describes each).
//!
//! Each case runs bursts of 32 packets through a `fastpath::worker::Worker`
//! (SPD lookup, SAD lookup, sequence number, ESP, counters). Refilling the
//! buffers between bursts (the job of the receive path) is not timed; the
//! worker call is. Rates are of inner packet bytes. `ratio` is the worker's
//! packet rate over the bare AEAD's packet rate at the same size.
//!
//! The many-SA cases (100,000 tunnels by default) run under five traffic
//! models (see [`Traffic`]): all packets on one of the installed tunnels (the
//! cost of the table sizes alone), a random tunnel per packet among 1,000
//! active ones, a random tunnel per packet among all (worst case), trains of
//! back-to-back packets per flow with flows drawn uniformly, and the same with
//! Zipf(1.0)-distributed flow popularity (realistic for a concentrator).
//!
//! The machine is shared and its speed drifts by tens of percent over
//! seconds, so all the cases of one size (bare seal and open, single-SA
//! encap and decap, every traffic model) run interleaved in turns of 10 ms
//! until each has `--secs` of timed work: every ratio compares rates taken
//! under the same conditions. That is repeated (`--reps`, default 5); ratios
//! are computed within a repetition and the median is reported; bursts during
//! which the thread was preempted (over 8 times the median burst time) are
//! left out.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use clap::{Parser, ValueEnum};
use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::ip;
use fastpath::sad::{Direction, SaId, SaParams, Sad};
use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const BURST: usize = 32;
/// Simple IMIX: 7 × 64 B, 4 × 576 B, 1 × 1420 B.
const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1420, 64, 576, 64, 576, 64];

#[derive(Clone, Copy, Debug)]
enum Size {
    Fixed(usize),
    Imix,
}

impl Size {
    fn of(self, i: usize) -> usize {
        match self {
            Size::Fixed(s) => s,
            Size::Imix => IMIX[i % IMIX.len()],
        }
    }
    fn label(self) -> String {
        match self {
            Size::Fixed(s) => s.to_string(),
            Size::Imix => "imix".into(),
        }
    }
    /// The numeric `size` of the JSON output (IMIX: its mean packet size).
    fn bytes(self) -> usize {
        match self {
            Size::Fixed(s) => s,
            Size::Imix => IMIX.iter().sum::<usize>() / IMIX.len(),
        }
    }

    /// A size named on the command line: 64, 512, 1420 or imix.
    fn parse(name: &str) -> Result<Size, String> {
        SIZES
            .into_iter()
            .find(|s| s.label() == name)
            .ok_or_else(|| format!("'{name}' is not one of 64, 512, 1420, imix"))
    }
}

/// The packet sizes measured by default, in report order.
const SIZES: [Size; 4] = [Size::Fixed(64), Size::Fixed(512), Size::Fixed(1420), Size::Imix];

/// A figure rounded to 4 decimals for the JSON output.
fn r4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

#[derive(Clone, Copy, Default)]
struct Rate {
    pps: f64,
    bps: f64,
}

impl Rate {
    fn mpps(self) -> f64 {
        self.pps / 1e6
    }
    fn gbps(self) -> f64 {
        self.bps * 8.0 / 1e9
    }
}

/// Runs `burst` until `d` of timed work has accumulated (caches, branch
/// predictors and the flow cache warm up; nothing is measured).
fn warm_up(d: Duration, burst: &mut impl FnMut(&mut Duration) -> (u64, u64)) {
    let mut warm = Duration::ZERO;
    while warm < d {
        burst(&mut warm);
    }
}

/// Runs `burst` while `go_on(timed work so far)` holds and returns the rate
/// over the timed work, preempted bursts left out (see [`rate_of`]).
fn measure(mut go_on: impl FnMut(Duration) -> bool, mut burst: impl FnMut(&mut Duration) -> (u64, u64)) -> Rate {
    let mut samples: Vec<(Duration, u64, u64)> = Vec::with_capacity(1 << 16);
    let mut t = Duration::ZERO;
    while go_on(t) {
        let mut d = Duration::ZERO;
        let (pp, bb) = burst(&mut d);
        t += d;
        samples.push((d, pp, bb));
    }
    rate_of(samples)
}

/// The rate of timed bursts `(duration, packets, bytes)`.
///
/// The machine is shared: a burst during which this thread was preempted takes
/// a scheduler time slice (milliseconds) instead of microseconds. Bursts
/// longer than [`OUTLIER_FACTOR`] times the median burst are left out of the
/// rate (cache interference from other tenants stays in).
fn rate_of(samples: Vec<(Duration, u64, u64)>) -> Rate {
    if samples.is_empty() {
        return Rate::default();
    }
    let mut durs: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    durs.sort_unstable();
    let limit = durs[durs.len() / 2] * OUTLIER_FACTOR;
    let (mut t, mut p, mut b) = (Duration::ZERO, 0u64, 0u64);
    for (d, pp, bb) in samples.into_iter().filter(|s| s.0 <= limit) {
        t += d;
        p += pp;
        b += bb;
    }
    let secs = t.as_secs_f64().max(1e-9);
    Rate {
        pps: p as f64 / secs,
        bps: b as f64 / secs,
    }
}

/// Timed work each case of an [`interleave`]d group does per turn.
const SLICE: Duration = Duration::from_millis(10);
/// Untimed bursts at the start of each turn: the case's working set is back
/// in the caches before timing resumes.
const SLICE_WARM_BURSTS: usize = 8;

/// One burst of a case: adds its timed part to the duration it is given and
/// returns (packets, bytes) processed.
type Burst<'a> = Box<dyn FnMut(&mut Duration) -> (u64, u64) + 'a>;

/// One case of an interleaved group: its [`Burst`] and the samples of its
/// timed bursts.
struct Case<'a> {
    burst: Burst<'a>,
    samples: Vec<(Duration, u64, u64)>,
    timed: Duration,
}

impl<'a> Case<'a> {
    fn new(burst: impl FnMut(&mut Duration) -> (u64, u64) + 'a) -> Self {
        Self {
            burst: Box::new(burst),
            samples: Vec::with_capacity(1 << 16),
            timed: Duration::ZERO,
        }
    }
}

/// Runs every case for `target` of timed work, in turns of [`SLICE`] each
/// (round robin), and returns their rates in order.
///
/// The host's speed drifts by tens of percent over seconds (frequency, other
/// tenants' use of the shared caches and memory): cases measured in
/// consecutive windows of their own see different machines, while turns of
/// milliseconds spread every phase over all the cases of the group, so
/// ratios between them (worker vs bare AEAD, 100 k SAs vs one) hold still.
fn interleave(cases: &mut [Case<'_>], target: Duration) -> Vec<Rate> {
    for c in cases.iter_mut() {
        warm_up(target / 10, &mut c.burst);
    }
    loop {
        let mut left = false;
        for c in cases.iter_mut().filter(|c| c.timed < target) {
            left = true;
            let mut untimed = Duration::ZERO;
            for _ in 0..SLICE_WARM_BURSTS {
                (c.burst)(&mut untimed);
            }
            let end = (c.timed + SLICE).min(target);
            while c.timed < end {
                let mut d = Duration::ZERO;
                let (p, b) = (c.burst)(&mut d);
                c.timed += d;
                c.samples.push((d, p, b));
            }
        }
        if !left {
            break;
        }
    }
    cases
        .iter_mut()
        .map(|c| rate_of(std::mem::take(&mut c.samples)))
        .collect()
}

/// Alternating windows of one and of N workers per core-scaling repetition.
const SCALING_TURNS: usize = 6;

/// Bursts slower than this many times the median burst count as preempted.
const OUTLIER_FACTOR: u32 = 8;

/// An IPv4/UDP packet of `size` bytes from 10.1.0.1 to `dst`.
fn inner_packet(size: usize, dst: Ipv4Addr) -> Vec<u8> {
    let size = size.max(28);
    let mut b = PacketBuf::new(128, 4096);
    b.set_data(&vec![0x5a; size - 20]).unwrap_or_default();
    let d = b.data_mut();
    d[0..2].copy_from_slice(&1000u16.to_be_bytes());
    d[2..4].copy_from_slice(&2000u16.to_be_bytes());
    d[4..6].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    d[6..8].fill(0);
    let _ = ip::prepend_ip_header(&mut b, IpAddr::from([10, 1, 0, 1]), IpAddr::V4(dst), 17);
    b.data().to_vec()
}

fn keys(seed: u32) -> CipherKeys {
    let mut k = vec![0x11u8; 20];
    k[..4].copy_from_slice(&seed.to_be_bytes());
    CipherKeys {
        enc: EncAlg::AesGcm16_128,
        integ: IntegAlg::None,
        enc_key: Zeroizing::new(k),
        integ_key: Zeroizing::new(Vec::new()),
    }
}

/// Sender and receiver data planes with `n` tunnels; tunnel i protects
/// 10.2.0.0/16 + i (a /32 each) with SPI 0x10000 + i.
struct Setup {
    a: Worker,
    b: Worker,
    dsts: Vec<Ipv4Addr>,
}

fn setup(n: u32) -> Setup {
    let t = Tables::new(n, 1);
    Setup {
        a: Worker::new(0, t.sad_a, t.spd).without_pinning(),
        b: Worker::new(0, t.sad_b, Arc::new(Spd::new())).without_pinning(),
        dsts: t.dsts,
    }
}

/// The sender's SAD and SPD and the receiver's SAD for `n` tunnels (see
/// [`Setup`]), shared by `workers` workers.
struct Tables {
    sad_a: Arc<Sad>,
    sad_b: Arc<Sad>,
    spd: Arc<Spd>,
    dsts: Vec<Ipv4Addr>,
    /// The worker that owns each tunnel's outbound SA (its sequence numbers).
    owner: Vec<usize>,
}

impl Tables {
    fn new(n: u32, workers: usize) -> Self {
        let local: IpAddr = IpAddr::from([192, 0, 2, 1]);
        let remote = IpAddr::from([192, 0, 2, 2]);
        let (sad_a, _ea) = Sad::new(workers);
        let (sad_b, _eb) = Sad::new(workers);
        let spd = Spd::new();
        let mut dsts = Vec::with_capacity(n as usize);
        let mut owner = Vec::with_capacity(n as usize);
        let any = TrafficSelector::prefix(IpAddr::from([0, 0, 0, 0]), 0).expect("selector");
        for i in 0..n {
            let mut p = SaParams::new(0x10000 + i, Direction::Outbound, keys(i), local, remote);
            p.path_mtu = 9000;
            let id: SaId = sad_a.install_outbound(&p).expect("outbound SA");
            owner.push(sad_a.outbound(id).map_or(0, |sa| sa.worker));
            p.direction = Direction::Inbound;
            p.local = remote;
            p.remote = local;
            sad_b.install_inbound(&p).expect("inbound SA");
            let dst = Ipv4Addr::from(0x0a02_0000 + i);
            dsts.push(dst);
            spd.insert(&Policy {
                local: any,
                remote: TrafficSelector::prefix(IpAddr::V4(dst), 32).expect("selector"),
                action: PolicyAction::Protect(id),
                priority: 1,
            })
            .expect("policy");
        }
        // Keep event receivers alive for the SADs' lifetime: leak them (bench process).
        std::mem::forget(_ea);
        std::mem::forget(_eb);
        Self {
            sad_a: Arc::new(sad_a),
            sad_b: Arc::new(sad_b),
            spd: Arc::new(spd),
            dsts,
            owner,
        }
    }
}

/// Which tunnel each successive packet belongs to.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Traffic {
    /// One tunnel of the many installed carries all packets: isolates the
    /// cost of the table sizes from the cost of touching many SAs.
    #[value(name = "one-active", help = "All packets on one of the installed tunnels")]
    OneActive,
    /// A uniformly random tunnel per packet among [`ACTIVE`] tunnels spread
    /// over the installed ones (the rest installed but idle).
    #[value(
        name = "active-1000",
        help = "A uniformly random tunnel per packet among 1000 active ones"
    )]
    ActiveSubset,
    /// A uniformly random tunnel for every packet: nothing is reused between
    /// packets (worst case for caches).
    #[value(
        name = "random",
        help = "A uniformly random tunnel per packet (worst case for caches)"
    )]
    Random,
    /// Trains of `TRAIN` back-to-back packets per flow, flows drawn uniformly.
    #[value(
        name = "uniform-x4",
        help = "Trains of 4 back-to-back packets per flow, flows drawn uniformly"
    )]
    UniformTrains,
    /// Trains of `TRAIN` back-to-back packets per flow, flows drawn from a
    /// Zipf(1.0) popularity law over the tunnels (ranks shuffled over memory).
    #[value(
        name = "zipf-x4",
        help = "Trains of 4 back-to-back packets per flow, Zipf(1.0) flow popularity"
    )]
    ZipfTrains,
}

/// Packets a flow sends back to back in the train models (a TCP window's worth
/// of segments arriving together on the tunnel device).
const TRAIN: usize = 4;
/// Active tunnels of [`Traffic::ActiveSubset`].
const ACTIVE: usize = 1000;
/// Length of a tunnel sequence: long enough that a 100,000-tunnel run does not
/// cycle through a small subset of the SAs.
const SEQUENCE_LEN: usize = 1 << 20;

impl Traffic {
    const ALL: [Traffic; 5] = [
        Traffic::OneActive,
        Traffic::ActiveSubset,
        Traffic::Random,
        Traffic::UniformTrains,
        Traffic::ZipfTrains,
    ];

    fn name(self) -> &'static str {
        match self {
            Traffic::OneActive => "one-active",
            Traffic::ActiveSubset => "active-1000",
            Traffic::Random => "random",
            Traffic::UniformTrains => "uniform-x4",
            Traffic::ZipfTrains => "zipf-x4",
        }
    }

    fn describe(self) -> String {
        match self {
            Traffic::OneActive => "all packets on one of the installed tunnels".into(),
            Traffic::ActiveSubset => {
                format!("a uniformly random tunnel per packet among {ACTIVE} active tunnels")
            }
            Traffic::Random => "uniformly random tunnel per packet (worst case)".into(),
            Traffic::UniformTrains => {
                format!("flows drawn uniformly, {TRAIN} back-to-back packets per flow")
            }
            Traffic::ZipfTrains => {
                format!("flows drawn Zipf(s=1.0) over the tunnels, {TRAIN} back-to-back packets per flow (realistic)")
            }
        }
    }
}

/// xorshift64* pseudo-random numbers (reproducible runs).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The tunnel index of each packet under `traffic`, over `n` tunnels.
fn tunnel_sequence(traffic: Traffic, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed | 1);
    let mut seq = Vec::with_capacity(SEQUENCE_LEN);
    match traffic {
        Traffic::OneActive => seq.resize(SEQUENCE_LEN, (n / 2) as u32),
        Traffic::ActiveSubset => {
            let active: Vec<u32> = (0..ACTIVE.min(n)).map(|_| rng.below(n) as u32).collect();
            while seq.len() < SEQUENCE_LEN {
                seq.push(active[rng.below(active.len())]);
            }
        }
        Traffic::Random => {
            while seq.len() < SEQUENCE_LEN {
                seq.push(rng.below(n) as u32);
            }
        }
        Traffic::UniformTrains => {
            while seq.len() < SEQUENCE_LEN {
                let t = rng.below(n) as u32;
                seq.extend(std::iter::repeat_n(t, TRAIN));
            }
        }
        Traffic::ZipfTrains => {
            // Cumulative Zipf(1) weights of ranks 1..=n.
            let mut cdf = Vec::with_capacity(n);
            let mut acc = 0.0;
            for r in 1..=n {
                acc += 1.0 / r as f64;
                cdf.push(acc);
            }
            // Popular tunnels are spread over the tables, not the first installed.
            let mut rank_to_tunnel: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                rank_to_tunnel.swap(i, rng.below(i + 1));
            }
            while seq.len() < SEQUENCE_LEN {
                let u = rng.unit() * acc;
                let rank = cdf.partition_point(|c| *c < u).min(n - 1);
                seq.extend(std::iter::repeat_n(rank_to_tunnel[rank], TRAIN));
            }
        }
    }
    seq.truncate(SEQUENCE_LEN);
    seq
}

/// Packet source of one case: a template per size, readdressed per packet.
struct PacketSource {
    templates: Vec<(usize, Vec<u8>)>,
    seq: Vec<u32>,
    size: Size,
    cursor: usize,
}

impl PacketSource {
    fn new(size: Size, seq: Vec<u32>) -> Self {
        let mut templates: Vec<(usize, Vec<u8>)> = Vec::new();
        for i in 0..IMIX.len() {
            let s = size.of(i);
            if !templates.iter().any(|(t, _)| *t == s) {
                templates.push((s, inner_packet(s, Ipv4Addr::new(10, 2, 0, 0))));
            }
        }
        Self {
            templates,
            seq,
            size,
            cursor: 0,
        }
    }

    /// Fills `bufs` with the next packets (untimed); returns their bytes.
    fn fill(&mut self, bufs: &mut [PacketBuf], dsts: &[Ipv4Addr]) -> u64 {
        let mut bytes = 0u64;
        for b in bufs.iter_mut() {
            let size = self.size.of(self.cursor);
            let tunnel = self.seq[self.cursor % self.seq.len()] as usize;
            self.cursor += 1;
            let t = match self.templates.iter().find(|(s, _)| *s == size) {
                Some((_, t)) => t,
                None => &self.templates[0].1,
            };
            let _ = b.set_data(t);
            let d = b.data_mut();
            d[16..20].copy_from_slice(&dsts[tunnel % dsts.len()].octets());
            d[10..12].fill(0);
            let c = ip::checksum(&d[..20]);
            d[10..12].copy_from_slice(&c.to_be_bytes());
            bytes += t.len() as u64;
        }
        bytes
    }
}

/// Buffers, verdicts and metadata of one burst.
struct BurstBufs {
    bufs: Vec<PacketBuf>,
    verdicts: Vec<Verdict>,
    meta: Vec<PacketMeta>,
}

impl BurstBufs {
    fn new() -> Self {
        Self {
            bufs: (0..BURST).map(|_| PacketBuf::new(128, 2048)).collect(),
            verdicts: vec![Verdict::Keepalive; BURST],
            meta: vec![
                PacketMeta {
                    src: IpAddr::from([192, 0, 2, 1]),
                    dst: None,
                    src_port: 0,
                };
                BURST
            ],
        }
    }

    /// One timed encapsulation burst through `a`.
    fn encap(&mut self, a: &mut Worker, src: &mut PacketSource, dsts: &[Ipv4Addr], timed: &mut Duration) -> (u64, u64) {
        let bytes = src.fill(&mut self.bufs, dsts);
        let start = Instant::now();
        a.outbound_burst(&mut self.bufs, &mut self.verdicts);
        *timed += start.elapsed();
        let ok = self
            .verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::ToPeer { .. }))
            .count();
        assert_eq!(ok, BURST, "encap dropped packets: {:?}", self.verdicts[0]);
        (BURST as u64, bytes)
    }

    /// One timed decapsulation burst through `b` of packets encapsulated
    /// (untimed) by `a`.
    fn decap(
        &mut self,
        (a, b): (&mut Worker, &mut Worker),
        src: &mut PacketSource,
        dsts: &[Ipv4Addr],
        timed: &mut Duration,
    ) -> (u64, u64) {
        let bytes = src.fill(&mut self.bufs, dsts);
        a.outbound_burst(&mut self.bufs, &mut self.verdicts);
        let start = Instant::now();
        b.inbound_burst(InboundKind::RawEsp, &mut self.bufs, &self.meta, &mut self.verdicts);
        *timed += start.elapsed();
        let ok = self.verdicts.iter().filter(|v| **v == Verdict::ToTunnel).count();
        assert_eq!(ok, BURST, "decap dropped packets: {:?}", self.verdicts[0]);
        (BURST as u64, bytes)
    }
}

/// Encapsulation bursts of `s`'s sender on packets from `src`.
fn encap_case<'a>(s: &'a RefCell<Setup>, src: &'a RefCell<PacketSource>) -> Case<'a> {
    let mut io = BurstBufs::new();
    Case::new(move |timed| {
        let s = &mut *s.borrow_mut();
        io.encap(&mut s.a, &mut src.borrow_mut(), &s.dsts, timed)
    })
}

/// Decapsulation bursts of `s`'s receiver on packets from `src`.
fn decap_case<'a>(s: &'a RefCell<Setup>, src: &'a RefCell<PacketSource>) -> Case<'a> {
    let mut io = BurstBufs::new();
    Case::new(move |timed| {
        let s = &mut *s.borrow_mut();
        io.decap((&mut s.a, &mut s.b), &mut src.borrow_mut(), &s.dsts, timed)
    })
}

/// Core scaling: `k` workers on `k` threads (thread w pinned to CPU w when
/// the process may use it) run at the same time for `secs`, each on its own
/// tunnel, sharing one SAD and one SPD as the daemon's workers do; each
/// outbound SA is owned by one worker (pinning enforced).
///
/// Returns the sum of the workers' rates over their timed work (as in the
/// one-core cases: shows contention between workers, not whether they had a
/// CPU each) and the wall-clock rate: all packets of all workers over the
/// window (buffer refills included, the same per packet whatever `k`, so the
/// ratio of two wall rates is the honest scaling figure).
fn bench_cores(k: usize, size: Size, decap: bool, secs: Duration) -> (Rate, Rate) {
    let t = Tables::new(k as u32, k);
    let stop = AtomicBool::new(false);
    let start = Barrier::new(k + 1);
    let (results, window): (Vec<(Rate, u64, u64)>, Duration) = std::thread::scope(|s| {
        let threads: Vec<_> = (0..k)
            .map(|w| {
                let (t, stop, start) = (&t, &stop, &start);
                s.spawn(move || {
                    pin_to_cpu(w);
                    let tunnel = t.owner.iter().position(|o| *o == w).expect("a tunnel per worker");
                    let mut a = Worker::new(w, t.sad_a.clone(), t.spd.clone());
                    let mut b = Worker::new(w, t.sad_b.clone(), Arc::new(Spd::new()));
                    let mut src = PacketSource::new(size, vec![tunnel as u32]);
                    let mut io = BurstBufs::new();
                    // Packets and bytes of every burst, timed or not.
                    let counted = std::cell::Cell::new((0u64, 0u64));
                    let mut burst = |timed: &mut Duration| {
                        let (p, b) = if decap {
                            io.decap((&mut a, &mut b), &mut src, &t.dsts, timed)
                        } else {
                            io.encap(&mut a, &mut src, &t.dsts, timed)
                        };
                        let (cp, cb) = counted.get();
                        counted.set((cp + p, cb + b));
                        (p, b)
                    };
                    warm_up(secs / 10, &mut burst);
                    let warm = counted.get();
                    start.wait();
                    let work = measure(|_| !stop.load(Ordering::Relaxed), &mut burst);
                    let (p, b) = counted.get();
                    (work, p - warm.0, b - warm.1)
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        std::thread::sleep(secs);
        stop.store(true, Ordering::Relaxed);
        let window = t0.elapsed();
        let results = threads
            .into_iter()
            .map(|h| h.join().expect("core-scaling worker thread"))
            .collect();
        (results, window)
    });
    let w = window.as_secs_f64().max(1e-9);
    let work = Rate {
        pps: results.iter().map(|r| r.0.pps).sum(),
        bps: results.iter().map(|r| r.0.bps).sum(),
    };
    let wall = Rate {
        pps: results.iter().map(|r| r.1 as f64).sum::<f64>() / w,
        bps: results.iter().map(|r| r.2 as f64).sum::<f64>() / w,
    };
    (work, wall)
}

/// Pins the calling thread to CPU `cpu` if this process may run there
/// (otherwise the scheduler places it).
fn pin_to_cpu(cpu: usize) -> bool {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
        return false;
    };
    // The cpu-th CPU this process may use.
    let Some(target) = (0..CpuSet::count())
        .filter(|c| allowed.is_set(*c).unwrap_or(false))
        .nth(cpu)
    else {
        return false;
    };
    let mut set = CpuSet::new();
    set.set(target).is_ok() && sched_setaffinity(Pid::from_raw(0), &set).is_ok()
}

/// Bare aws-lc-rs AES-128-GCM seal (or open) bursts with an 8-byte AAD, in place.
fn bare_case(size: Size, open: bool) -> Case<'static> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[0x11; 16]).expect("key"));
    let mut bufs: Vec<Vec<u8>> = (0..BURST).map(|i| vec![0x5a; size.of(i) + 16]).collect();
    // For open: seal each buffer once under a fixed nonce, then open it repeatedly
    // (open is in place, so re-seal untimed between bursts).
    let nonce = || Nonce::assume_unique_for_key([7u8; 12]);
    let aad = [0u8; 8];
    let mut seq = 0u64;
    Case::new(move |timed| {
        let mut bytes = 0u64;
        if open {
            for b in bufs.iter_mut() {
                let n = b.len() - 16;
                let (pt, tag) = b.split_at_mut(n);
                if let Ok(t) = key.seal_in_place_separate_tag(nonce(), Aad::from(aad), pt) {
                    tag.copy_from_slice(t.as_ref());
                }
            }
            let start = Instant::now();
            for b in bufs.iter_mut() {
                bytes += (b.len() - 16) as u64;
                let ok = key.open_in_place(nonce(), Aad::from(aad), b).is_ok();
                assert!(ok);
            }
            *timed += start.elapsed();
        } else {
            let start = Instant::now();
            for b in bufs.iter_mut() {
                seq += 1;
                let mut n = [0u8; 12];
                n[4..].copy_from_slice(&seq.to_be_bytes());
                let len = b.len() - 16;
                bytes += len as u64;
                let tag = key
                    .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::from(aad), &mut b[..len])
                    .expect("seal");
                b[len..].copy_from_slice(tag.as_ref());
            }
            *timed += start.elapsed();
        }
        (BURST as u64, bytes)
    })
}

/// Median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Repetitions of one case; ratios are taken within a repetition (same
/// machine conditions), then the median over repetitions is reported.
#[derive(Default, Clone)]
struct Reps {
    rates: Vec<Rate>,
    ratios: Vec<f64>,
}

impl Reps {
    fn push(&mut self, r: Rate, base: Rate) {
        self.rates.push(r);
        self.ratios.push(if base.pps > 0.0 { r.pps / base.pps } else { 0.0 });
    }
    fn mpps(&self) -> f64 {
        median(self.rates.iter().map(|r| r.mpps()).collect())
    }
    fn gbps(&self) -> f64 {
        median(self.rates.iter().map(|r| r.gbps()).collect())
    }
    fn ratio(&self) -> f64 {
        median(self.ratios.clone())
    }
    fn spread(&self) -> (f64, f64) {
        let r = &self.ratios;
        (
            r.iter().copied().fold(f64::INFINITY, f64::min),
            r.iter().copied().fold(0.0, f64::max),
        )
    }
    fn json(&self, size: Size) -> Value {
        json!({
            "size": size.bytes(),
            "label": size.label(),
            "mpps": r4(self.mpps()),
            "gbps": r4(self.gbps()),
            "ratio": r4(self.ratio()),
        })
    }
}

/// Single-SA results of one size: worker vs bare AEAD.
#[derive(Default, Clone)]
struct Row {
    encap: Reps,
    decap: Reps,
    seal: Reps,
    open: Reps,
}

/// Many-SA results of one size and traffic model, ratios vs the single SA.
#[derive(Default, Clone)]
struct ScaleRow {
    encap: Reps,
    decap: Reps,
}

/// Core-scaling results of one size: one worker, and N workers on N threads
/// (ratio = aggregate over one worker, in the same repetition).
#[derive(Default, Clone)]
struct CoreRow {
    encap_one: Reps,
    encap: Reps,
    encap_wall: Reps,
    decap_one: Reps,
    decap: Reps,
    decap_wall: Reps,
}

impl CoreRow {
    fn json(&self, size: Size) -> Value {
        json!({
            "size": size.bytes(),
            "label": size.label(),
            "encap_one_mpps": r4(self.encap_one.mpps()),
            "encap_mpps": r4(self.encap.mpps()),
            "encap_scaling": r4(self.encap_wall.ratio()),
            "encap_scaling_work": r4(self.encap.ratio()),
            "decap_one_mpps": r4(self.decap_one.mpps()),
            "decap_mpps": r4(self.decap.mpps()),
            "decap_scaling": r4(self.decap_wall.ratio()),
            "decap_scaling_work": r4(self.decap.ratio()),
        })
    }
}

/// ESP encapsulation and decapsulation per core, compared in the same run
/// with the bare aws-lc-rs AES-GCM seal and open of the same sizes.
#[derive(Parser, Debug)]
#[command(name = "esp-bench", version)]
struct Cli {
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Seconds of timed work per case and repetition.
    #[arg(long, default_value_t = 0.3, value_parser = ironsa_bench::cli::seconds(3600.0))]
    secs: f64,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
    /// Skip the many-SA cases.
    #[arg(long)]
    no_scale: bool,
    /// Tunnels installed for the many-SA cases.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    scale_sas: u32,
    /// Traffic models of the many-SA cases (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    traffic: Option<Vec<Traffic>>,
    /// Workers of the core-scaling cases (fewer than 2: none).
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// Skip the core-scaling cases.
    #[arg(long)]
    no_core_scaling: bool,
    /// Packet sizes: 64, 512, 1420, imix (default: all).
    #[arg(long, value_delimiter = ',', value_parser = Size::parse)]
    sizes: Option<Vec<Size>>,
}

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    let no_scale = cli.no_scale;
    let cores = if cli.no_core_scaling { 0 } else { cli.cores };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > cpus && !json {
        eprintln!("--cores {cores}: only {cpus} CPUs available to this process; threads will share CPUs");
    }
    let secs = Duration::from_secs_f64(cli.secs);
    let reps = cli.reps as usize;
    let scale_sas = cli.scale_sas;
    // Subsets keep the report's order whatever the order on the command line.
    let models: Vec<Traffic> = Traffic::ALL
        .into_iter()
        .filter(|t| cli.traffic.as_ref().is_none_or(|v| v.contains(t)))
        .collect();
    let sizes: Vec<Size> = SIZES
        .into_iter()
        .filter(|s| {
            cli.sizes
                .as_ref()
                .is_none_or(|v| v.iter().any(|c| c.label() == s.label()))
        })
        .collect();

    let single = RefCell::new(setup(1));
    let mut many = None;
    if !no_scale {
        let t = Instant::now();
        many = Some(RefCell::new(setup(scale_sas)));
        if !json {
            eprintln!("installed {scale_sas} SA pairs and policies in {:.2?}", t.elapsed());
        }
    }
    let mut rows = vec![Row::default(); sizes.len()];
    let mut scale_rows = vec![vec![ScaleRow::default(); sizes.len()]; models.len()];
    let mut core_rows = vec![CoreRow::default(); if cores >= 2 { sizes.len() } else { 0 }];
    // Packet sources live across repetitions so each repetition sees new packets.
    let single_src: Vec<RefCell<PacketSource>> = sizes
        .iter()
        .map(|s| RefCell::new(PacketSource::new(*s, vec![0])))
        .collect();
    let scale_src: Vec<Vec<RefCell<PacketSource>>> = models
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            sizes
                .iter()
                .enumerate()
                .map(|(si, s)| {
                    let seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((mi * 16 + si) as u64).wrapping_mul(0x1000_0001);
                    RefCell::new(PacketSource::new(*s, tunnel_sequence(*m, scale_sas as usize, seed)))
                })
                .collect()
        })
        .collect();
    for rep in 0..reps {
        if !json {
            eprintln!("repetition {}/{reps}", rep + 1);
        }
        for (si, size) in sizes.iter().enumerate() {
            // All cases of a size interleaved in turns of milliseconds, so
            // each ratio compares rates measured under the same conditions:
            // bare seal, bare open, encap, decap, then encap and decap of
            // each traffic model over the many SAs.
            let mut cases = vec![
                bare_case(*size, false),
                bare_case(*size, true),
                encap_case(&single, &single_src[si]),
                decap_case(&single, &single_src[si]),
            ];
            if let Some(many) = many.as_ref() {
                for srcs in &scale_src {
                    cases.push(encap_case(many, &srcs[si]));
                    cases.push(decap_case(many, &srcs[si]));
                }
            }
            let rates = interleave(&mut cases, secs);
            drop(cases);
            let (seal, open, enc, dec) = (rates[0], rates[1], rates[2], rates[3]);
            let row = &mut rows[si];
            row.seal.push(seal, seal);
            row.open.push(open, open);
            row.encap.push(enc, seal);
            row.decap.push(dec, open);
            for (mi, pair) in rates[4..].chunks(2).enumerate() {
                scale_rows[mi][si].encap.push(pair[0], enc);
                scale_rows[mi][si].decap.push(pair[1], dec);
            }
            if let Some(row) = core_rows.get_mut(si) {
                for decap in [false, true] {
                    // One worker and N workers alternate in short windows, so
                    // both see the same host conditions.
                    let window = secs / SCALING_TURNS as u32;
                    let mut sums = [Rate::default(); 4];
                    for _ in 0..SCALING_TURNS {
                        let (one, one_wall) = bench_cores(1, *size, decap, window);
                        let (all, all_wall) = bench_cores(cores, *size, decap, window);
                        for (sum, r) in sums.iter_mut().zip([one, one_wall, all, all_wall]) {
                            sum.pps += r.pps / SCALING_TURNS as f64;
                            sum.bps += r.bps / SCALING_TURNS as f64;
                        }
                    }
                    let [one, one_wall, all, all_wall] = sums;
                    let (o, a, w) = if decap {
                        (&mut row.decap_one, &mut row.decap, &mut row.decap_wall)
                    } else {
                        (&mut row.encap_one, &mut row.encap, &mut row.encap_wall)
                    };
                    o.push(one, one);
                    a.push(all, one);
                    w.push(all_wall, one_wall);
                }
            }
        }
    }

    if json {
        let list = |f: &dyn Fn(&Row, Size) -> Value| -> Vec<Value> {
            rows.iter().zip(sizes.iter().copied()).map(|(r, s)| f(r, s)).collect()
        };
        let scale_list = |mi: usize, dec: bool| -> Vec<Value> {
            scale_rows[mi]
                .iter()
                .zip(sizes.iter().copied())
                .map(|(r, s)| if dec { r.decap.json(s) } else { r.encap.json(s) })
                .collect()
        };
        // Legacy keys: the worst case (random tunnel per packet).
        let worst = models.iter().position(|m| *m == Traffic::Random);
        let (scale_enc, scale_dec) = match (worst, many.is_some()) {
            (Some(w), true) => (scale_list(w, false), scale_list(w, true)),
            _ => (Vec::new(), Vec::new()),
        };
        let per_model: Vec<Value> = if many.is_some() {
            models
                .iter()
                .enumerate()
                .map(|(mi, m)| {
                    json!({
                        "traffic": m.name(),
                        "description": m.describe(),
                        "encap": scale_list(mi, false),
                        "decap": scale_list(mi, true),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let core_scaling: Vec<Value> = core_rows
            .iter()
            .zip(sizes.iter().copied())
            .map(|(r, s)| r.json(s))
            .collect();
        let report = json!({
            "cipher": "aes128gcm16",
            "burst": BURST,
            "reps": reps,
            "results": list(&|r, s| r.encap.json(s)),
            "core_scaling": { "cores": cores, "results": core_scaling },
            "decap_results": list(&|r, s| r.decap.json(s)),
            "bare_seal": list(&|r, s| r.seal.json(s)),
            "bare_open": list(&|r, s| r.open.json(s)),
            "scale_sas": if no_scale { 0 } else { scale_sas },
            "scale_encap": scale_enc,
            "scale_decap": scale_dec,
            "scale_traffic": per_model,
            "notes": "medians over reps; results = encap, ratio vs bare aws-lc-rs AES-128-GCM seal in the same repetition; decap ratio vs bare open; scale ratios vs single-SA in the same repetition; scale_encap/scale_decap = random tunnel per packet; core_scaling = aggregate rate of N workers on N threads (one tunnel each, shared SAD/SPD) over one worker's rate in the same repetition",
        });
        println!("{report}");
        return;
    }
    println!(
        "ESP AES-128-GCM-16 tunnel mode, IPv4, burst {BURST}, one core, {secs:?} per case, median of {reps} repetitions"
    );
    println!(
        "{:>6} | {:>21} | {:>21} | {:>21} | {:>21} | {:>6} | {:>6}",
        "size",
        "encap Mpps  Gbit/s",
        "decap Mpps  Gbit/s",
        "bare seal Mpps Gbit/s",
        "bare open Mpps Gbit/s",
        "enc/s",
        "dec/o"
    );
    for (r, s) in rows.iter().zip(sizes.iter().copied()) {
        println!(
            "{:>6} | {:>9.3} {:>11.2} | {:>9.3} {:>11.2} | {:>9.3} {:>11.2} | {:>9.3} {:>11.2} | {:>6.3} | {:>6.3}",
            s.label(),
            r.encap.mpps(),
            r.encap.gbps(),
            r.decap.mpps(),
            r.decap.gbps(),
            r.seal.mpps(),
            r.seal.gbps(),
            r.open.mpps(),
            r.open.gbps(),
            r.encap.ratio(),
            r.decap.ratio()
        );
    }
    if many.is_some() {
        for (mi, m) in models.iter().enumerate() {
            println!(
                "\nwith {scale_sas} SAs and policies, {}: ratio vs single SA (median, [min-max])",
                m.describe()
            );
            for (r, s) in scale_rows[mi].iter().zip(sizes.iter().copied()) {
                let (elo, ehi) = r.encap.spread();
                let (dlo, dhi) = r.decap.spread();
                println!(
                    "{:>6} | encap {:>7.3} Mpps {:>6.2} Gbit/s {:.3} [{elo:.2}-{ehi:.2}] | decap {:>7.3} Mpps {:>6.2} Gbit/s {:.3} [{dlo:.2}-{dhi:.2}]",
                    s.label(),
                    r.encap.mpps(),
                    r.encap.gbps(),
                    r.encap.ratio(),
                    r.decap.mpps(),
                    r.decap.gbps(),
                    r.decap.ratio(),
                );
            }
        }
    }
    if !core_rows.is_empty() {
        println!(
            "\ncore scaling: {cores} workers on {cores} threads, one tunnel each, shared SAD and SPD (ideal {cores}.00): \
             Mpps over timed work, 1 -> {cores} workers; scaling = wall-clock aggregate over one worker's, median [min-max]; \
             work = same over timed work only (contention between workers)"
        );
        for (r, s) in core_rows.iter().zip(sizes.iter().copied()) {
            let (elo, ehi) = r.encap_wall.spread();
            let (dlo, dhi) = r.decap_wall.spread();
            println!(
                "{:>6} | encap {:>7.3} -> {:>7.3} Mpps, scaling {:.2} [{elo:.2}-{ehi:.2}] work {:.2} | decap {:>7.3} -> {:>7.3} Mpps, scaling {:.2} [{dlo:.2}-{dhi:.2}] work {:.2}",
                s.label(),
                r.encap_one.mpps(),
                r.encap.mpps(),
                r.encap_wall.ratio(),
                r.encap.ratio(),
                r.decap_one.mpps(),
                r.decap.mpps(),
                r.decap_wall.ratio(),
                r.decap.ratio(),
            );
        }
    }
}

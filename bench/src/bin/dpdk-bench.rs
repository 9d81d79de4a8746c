//! dpdk-bench: the DPDK backend's ESP encapsulation + decapsulation rate per
//! core on a `net_ring` port, compared in the same run with DPDK's own
//! `dpdk-test-crypto-perf` AES-GCM rate on `crypto_aesni_gcm` for the same
//! sizes.
//!
//! Usage: `dpdk-bench [--json] [--secs S] [--reps R] [--burst B] [--inflight N]
//! [--sizes 64,1420] [--modes cpu,cpu-ipsec-mb,lookaside] [--no-reference]`
//! (`dpdk-bench --help` describes each).
//!
//! The machine may be shared: both sides are measured `R` times (crypto-perf
//! runs, backend windows of `S` seconds) and the best of each is compared.
//!
//! The backend runs one poll loop (one core, CPU crypto, AES-128-GCM) on a
//! `net_ring` loopback port set up so that packets circulate: a cleartext
//! packet is encapsulated and sent; the ESP packet comes back on the ring
//! and is decapsulated (its SA's local address is the ESP destination); the
//! inner packet is sent, comes back as cleartext and is encapsulated again.
//! Every round trip is one encapsulation and one decapsulation including rx
//! and tx bursts, classification, SPD and SAD lookups, replay window and
//! counters. The rate reported is round trips per second (Mpps).
//!
//! The reference is `dpdk-test-crypto-perf` (throughput test, burst 32,
//! AES-128-GCM, 8-byte AAD) run for encrypt and for decrypt on
//! `crypto_aesni_gcm` with `--no-huge`: its encrypt+decrypt pair rate is
//! `1 / (1/enc + 1/dec)`. `ratio` = backend round-trip rate / crypto-perf pair
//! rate at the same size (1.0 = the backend costs no more than the bare
//! crypto of DPDK's fastest software PMD).

use clap::{Parser, ValueEnum};
use fastpath::dpdk::backend::{DpdkBackend, PollLoop, Started};
use fastpath::dpdk::profile::HwProfile;
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::ip;
use fastpath::sad::{Direction, SaParams, Sad};
use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use ffi::{Eal, Mbuf};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SIZES: [usize; 2] = [64, 1420];

/// Crypto modes of the backend the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchMode {
    /// aws-lc-rs on the poll loop's core (profile `crypto.mode = "cpu"`).
    #[value(name = "cpu")]
    Cpu,
    /// intel-ipsec-mb's direct AES-GCM API on the poll loop's core, no
    /// crypto device (`"cpu-ipsec-mb"`).
    #[value(name = "cpu-ipsec-mb")]
    CpuIpsecMb,
    /// `crypto_aesni_gcm` through enqueue/dequeue (`"lookaside"`).
    #[value(name = "lookaside")]
    Lookaside,
}

impl BenchMode {
    /// The profile's `crypto.mode` value.
    fn name(self) -> &'static str {
        match self {
            BenchMode::Cpu => "cpu",
            BenchMode::CpuIpsecMb => "cpu-ipsec-mb",
            BenchMode::Lookaside => "lookaside",
        }
    }

    /// CPU crypto (the targets are for CPU crypto), as opposed to a crypto device.
    fn is_cpu_crypto(self) -> bool {
        self != BenchMode::Lookaside
    }

    fn label(self) -> &'static str {
        match self {
            BenchMode::Cpu => "cpu (aws-lc)",
            BenchMode::CpuIpsecMb => "cpu-ipsec-mb",
            BenchMode::Lookaside => "lookaside aesni_gcm",
        }
    }
}

/// The DPDK backend's ESP encapsulation + decapsulation rate per core on a
/// `net_ring` port, compared in the same run with `dpdk-test-crypto-perf`'s
/// AES-GCM rate on `crypto_aesni_gcm` for the same sizes.
#[derive(Parser, Debug)]
#[command(name = "dpdk-bench", version)]
struct Options {
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Seconds per backend window.
    #[arg(long, default_value_t = 0.3, value_parser = ironsa_bench::cli::seconds(3600.0))]
    secs: f64,
    /// Windows of the backend and runs of crypto-perf (the best of each is compared).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u16).range(1..=100))]
    reps: u16,
    /// Packets per rx/tx burst.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=64))]
    burst: u16,
    /// Packets circulating on the ring.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..=2048))]
    inflight: u16,
    /// Packet sizes measured: 64, 1420.
    #[arg(long, value_delimiter = ',', default_value = "64,1420", value_parser = size)]
    sizes: Vec<usize>,
    /// Crypto modes measured.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cpu,cpu-ipsec-mb,lookaside"
    )]
    modes: Vec<BenchMode>,
    /// Skip dpdk-test-crypto-perf (profiling the backend alone; no ratios).
    #[arg(long)]
    no_reference: bool,
}

/// One of the packet sizes the circuit supports.
fn size(v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|s| SIZES.contains(s))
        .ok_or_else(|| format!("'{v}' is not one of 64, 1420"))
}

/// Mops per buffer size from `dpdk-test-crypto-perf` throughput output.
fn parse_crypto_perf(out: &str) -> HashMap<usize, f64> {
    let mut rates = HashMap::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // lcore, buf size, burst, enqueued, dequeued, failed enq, failed deq, MOps, Gbps, cycles/buf
        if cols.len() == 10 && cols.iter().all(|c| c.parse::<f64>().is_ok()) {
            if let (Ok(size), Ok(mops)) = (cols[1].parse::<usize>(), cols[7].parse::<f64>()) {
                rates.insert(size, mops);
            }
        }
    }
    rates
}

/// Runs crypto-perf for `op` (encrypt/decrypt); Mops per size.
fn crypto_perf(op: &str) -> Result<HashMap<usize, f64>, String> {
    let sizes = SIZES.map(|s| s.to_string()).join(",");
    let out = Command::new("dpdk-test-crypto-perf")
        .args([
            "-l",
            "0,1",
            "--no-huge",
            "-m",
            "512",
            "--no-shconf",
            "--no-pci",
            "--vdev",
            "crypto_aesni_gcm0",
            "--log-level=error",
            "--",
            "--devtype",
            "crypto_aesni_gcm",
            "--optype",
            "aead",
            "--aead-algo",
            "aes-gcm",
            "--aead-op",
            op,
            "--aead-key-sz",
            "16",
            "--aead-iv-sz",
            "12",
            "--aead-aad-sz",
            "8",
            "--digest-sz",
            "16",
            "--buffer-sz",
            &sizes,
            "--burst-sz",
            "32",
            "--total-ops",
            "2000000",
            "--ptest",
            "throughput",
            "--silent",
        ])
        .output()
        .map_err(|e| format!("running dpdk-test-crypto-perf (package dpdk-dev): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rates = parse_crypto_perf(&text);
    if !out.status.success() || rates.len() != SIZES.len() {
        return Err(format!(
            "dpdk-test-crypto-perf {op} failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(rates)
}

fn ipa(s: &str) -> IpAddr {
    s.parse().expect("bench address")
}

fn keys() -> CipherKeys {
    CipherKeys {
        enc: EncAlg::AesGcm16_128,
        integ: IntegAlg::None,
        enc_key: Zeroizing::new((1..=20).collect()),
        integ_key: Zeroizing::new(Vec::new()),
    }
}

/// A UDP packet of `len` bytes, 10.1.0.5 -> 10.2.0.1.
fn inner_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    let total = (len as u16).to_be_bytes();
    p[..20].copy_from_slice(&[
        0x45, 0, total[0], total[1], 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 0, 5, 10, 2, 0, 1,
    ]);
    let c = ip::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let ulen = ((len - 20) as u16).to_be_bytes();
    p[20..28].copy_from_slice(&[0x30, 0x39, 0, 9, ulen[0], ulen[1], 0, 0]);
    p
}

/// One backend with packets circulating through its poll loop.
struct Circuit {
    backend: DpdkBackend,
    lp: PollLoop,
    size: usize,
    mode: BenchMode,
    windows: Vec<f64>,
    cpu_windows: Vec<f64>,
}

impl Circuit {
    /// Starts a backend in `mode` on `port` (with crypto device `device` in
    /// lookaside mode) and sets `inflight` packets of `size`
    /// bytes circulating.
    fn start(eal: Eal, port: &str, device: &str, mode: BenchMode, size: usize, o: &Options) -> Result<Circuit, String> {
        let burst = usize::from(o.burst);
        let crypto = match mode {
            BenchMode::Lookaside => format!("mode = \"lookaside\"\ndevice = \"{device}\""),
            m => format!("mode = \"{}\"", m.name()),
        };
        let profile = HwProfile::from_toml(&format!(
            r#"
            name = "bench-{port}"
            backend = "dpdk"
            eal_args = ["-l", "0"]
            [[ports]]
            name = "{port}"
            role = "both"
            addresses = ["192.0.2.1"]
            [offloads]
            rss = false
            [crypto]
            {crypto}
            [sizing]
            mbufs = 8191
            mbuf_cache = 256
            descriptors = 1024
            burst = {burst}
            "#
        ))
        .map_err(|e| e.to_string())?;
        let (sad, _events) = Sad::new(1);
        let (sad, spd) = (Arc::new(sad), Arc::new(Spd::new()));
        let Started { backend, mut loops, .. } =
            DpdkBackend::start(eal, &profile, sad.clone(), spd.clone()).map_err(|e| e.to_string())?;
        let mut lp: PollLoop = loops.pop().ok_or("no loop")?;
        let (local, peer) = (ipa("192.0.2.1"), ipa("198.51.100.7"));
        let (out, off_out) = backend
            .install_sa(&SaParams::new(0x5001, Direction::Outbound, keys(), local, peer))
            .map_err(|e| e.to_string())?;
        // The ESP comes back on the loopback addressed to the peer: decapsulate it there.
        let (_, off_in) = backend
            .install_sa(&SaParams::new(0x5001, Direction::Inbound, keys(), peer, local))
            .map_err(|e| e.to_string())?;
        if mode != BenchMode::Cpu && !(off_out && off_in) {
            return Err(format!("{} did not take the SAs", mode.label()));
        }
        spd.insert(&Policy {
            local: TrafficSelector::prefix(ipa("10.1.0.0"), 16).map_err(|e| e.to_string())?,
            remote: TrafficSelector::prefix(ipa("10.2.0.0"), 16).map_err(|e| e.to_string())?,
            action: PolicyAction::Protect(out),
            priority: 100,
        })
        .map_err(|e| e.to_string())?;
        let port_id = ffi::EthPort::by_name(&eal, port).map_err(|e| e.to_string())?.id();
        let mac = backend.port_mac(port).ok_or("no mac")?;
        let mut frame = mac.to_vec();
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        frame.extend_from_slice(&inner_packet(size));
        let mut v: Vec<Mbuf> = Vec::with_capacity(usize::from(o.inflight));
        for _ in 0..o.inflight {
            let mut m = backend.pool().alloc().map_err(|e| e.to_string())?;
            m.extend_from_slice(&frame).map_err(|e| e.to_string())?;
            v.push(m);
        }
        while !v.is_empty() {
            let mut chunk: Vec<Mbuf> = v.drain(..v.len().min(32)).collect();
            lp.transmit(port_id, &mut chunk);
            lp.poll_once();
        }
        let mut c = Circuit {
            backend,
            lp,
            size,
            mode,
            windows: Vec::new(),
            cpu_windows: Vec::new(),
        };
        // Warm up.
        c.run_for(Duration::from_millis(200));
        Ok(c)
    }

    /// Round trips so far and drops so far.
    fn snapshot(&self) -> (u64, u64) {
        let c = self.backend.counters();
        let l = &c.loops[0];
        (
            l.outbound.packets.min(l.inbound.packets),
            l.outbound.total_drops() + l.inbound.total_drops() + l.io.tx_dropped,
        )
    }

    fn run_for(&mut self, d: Duration) -> f64 {
        let t = Instant::now();
        loop {
            for _ in 0..256 {
                self.lp.poll_once();
            }
            if t.elapsed() >= d {
                return t.elapsed().as_secs_f64();
            }
        }
    }

    /// Measures one window; records its rate in Mpps over wall time and
    /// over the thread's CPU time (time the core was really ours).
    fn window(&mut self, secs: f64) {
        let (rt0, _) = self.snapshot();
        let cpu0 = thread_cpu_secs();
        let el = self.run_for(Duration::from_secs_f64(secs));
        let cpu = thread_cpu_secs() - cpu0;
        let (rt1, _) = self.snapshot();
        self.windows.push((rt1 - rt0) as f64 / el / 1e6);
        self.cpu_windows.push((rt1 - rt0) as f64 / cpu.max(1e-9) / 1e6);
    }

    fn best(&self) -> f64 {
        self.windows.iter().copied().fold(0.0, f64::max)
    }

    fn best_cpu(&self) -> f64 {
        self.cpu_windows.iter().copied().fold(0.0, f64::max)
    }
}

/// The host's CPU as /proc/cpuinfo names it (model, family/model numbers)
/// and the vector extensions intel-ipsec-mb's AES-GCM picks its code by:
/// ratios move with them, so every report says which CPU it was measured on.
fn host_cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let flags = field("flags");
    let has: Vec<&str> = ["avx2", "avx512f", "vaes", "vpclmulqdq"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    format!(
        "{} (family {} model {}; {})",
        field("model name"),
        field("cpu family"),
        field("model"),
        has.join(" ")
    )
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn main() {
    let o = Options::parse();
    // lcore 1 = the core crypto-perf's worker runs on (`-l 0,1`): both sides
    // are measured on the same core.
    let mut eal_args: Vec<String> = [
        "-l",
        "1",
        "--no-huge",
        "-m",
        "1024",
        "--no-shconf",
        "--no-pci",
        "--log-level=lib.eal:error",
        "--log-level=crypto:error",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    // One net_ring port per circuit and one crypto device per lookaside
    // circuit (each is started once per process).
    let plan: Vec<(usize, BenchMode)> = o
        .sizes
        .iter()
        .flat_map(|&size| o.modes.iter().map(move |&m| (size, m)))
        .collect();
    for (i, (_, mode)) in plan.iter().enumerate() {
        eal_args.push(format!("--vdev=net_ring{i}"));
        if *mode == BenchMode::Lookaside {
            eal_args.push(format!("--vdev=crypto_aesni_gcm{i}"));
        }
    }
    let args: Vec<&str> = eal_args.iter().map(String::as_str).collect();
    let eal = match Eal::init(&args) {
        Ok(eal) => eal,
        Err(e) => {
            eprintln!("dpdk-bench: EAL: {e}");
            std::process::exit(1);
        }
    };
    let mut circuits = Vec::new();
    for (i, (size, mode)) in plan.iter().copied().enumerate() {
        let (port, dev) = (format!("net_ring{i}"), format!("crypto_aesni_gcm{i}"));
        match Circuit::start(eal, &port, &dev, mode, size, &o) {
            Ok(c) => circuits.push(c),
            Err(e) => {
                eprintln!("dpdk-bench: {} backend on {port} at {size} B: {e}", mode.name());
                std::process::exit(1);
            }
        }
    }
    // Interleaved: crypto-perf (this process idle meanwhile), then a window
    // of every circuit; the best of each side is compared.
    let mut enc: HashMap<usize, f64> = HashMap::new();
    let mut dec: HashMap<usize, f64> = HashMap::new();
    for _ in 0..o.reps {
        if !o.no_reference {
            for (op, best) in [("encrypt", &mut enc), ("decrypt", &mut dec)] {
                match crypto_perf(op) {
                    Ok(r) => {
                        for (size, mops) in r {
                            let b = best.entry(size).or_insert(0.0);
                            *b = b.max(mops);
                        }
                    }
                    Err(e) => {
                        eprintln!("dpdk-bench: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
        for c in &mut circuits {
            c.window(o.secs);
        }
    }
    let mut rows = Vec::new();
    for c in &circuits {
        let (e, d) = (
            enc.get(&c.size).copied().unwrap_or(f64::NAN),
            dec.get(&c.size).copied().unwrap_or(f64::NAN),
        );
        let pair = 1.0 / (1.0 / e + 1.0 / d);
        let (_, drops) = c.snapshot();
        rows.push(Row {
            size: c.size,
            mode: c.mode,
            wall_mpps: c.best(),
            cpu_mpps: c.best_cpu(),
            enc: e,
            dec: d,
            pair,
            drops,
        });
    }
    if o.json {
        print_json(&o, &rows);
    } else {
        print_table(&o, &rows, &circuits);
    }
}

/// The fastest CPU-crypto row of `size` (the headline figure).
fn best_cpu_row(rows: &[Row], size: usize) -> Option<&Row> {
    rows.iter()
        .filter(|r| r.size == size && r.mode.is_cpu_crypto())
        .max_by(|a, b| a.wall_mpps.total_cmp(&b.wall_mpps))
}

/// A JSON number rounded to 4 decimals (`null` when not measured).
fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1e4).round() / 1e4)
    } else {
        Value::Null
    }
}

fn print_json(o: &Options, rows: &[Row]) {
    let mut items = Vec::new();
    for &size in &o.sizes {
        let Some(best) = best_cpu_row(rows, size) else {
            continue;
        };
        let modes: serde_json::Map<String, Value> = rows
            .iter()
            .filter(|r| r.size == size)
            .map(|r| {
                (
                    r.mode.name().to_string(),
                    json!({
                        "mpps": num(r.wall_mpps),
                        "cpu_time_mpps": num(r.cpu_mpps),
                        "ratio": num(r.ratio()),
                        "ratio_cpu_time": num(r.ratio_cpu_time()),
                        "drops": r.drops,
                    }),
                )
            })
            .collect();
        let la = rows
            .iter()
            .find(|l| l.size == size && l.mode == BenchMode::Lookaside)
            .map(|l| (l.wall_mpps, l.ratio()))
            .unwrap_or((f64::NAN, f64::NAN));
        items.push(json!({
            "size": size,
            "mode": best.mode.name(),
            "backend_mpps": num(best.wall_mpps),
            "backend_cpu_time_mpps": num(best.cpu_mpps),
            "crypto_perf_encrypt_mops": num(best.enc),
            "crypto_perf_decrypt_mops": num(best.dec),
            "crypto_perf_pair_mops": num(best.pair),
            "ratio": num(best.ratio()),
            "ratio_cpu_time": num(best.ratio_cpu_time()),
            "drops": best.drops,
            "lookaside_aesni_mpps": num(la.0),
            "lookaside_aesni_ratio": num(la.1),
            "modes": modes,
        }));
    }
    let report = json!({
        "bench": "dpdk-bench",
        "host": host_cpu(),
        "mode": "best cpu crypto per size",
        "port": "net_ring",
        "cipher": "aes-128-gcm",
        "reference": "dpdk-test-crypto-perf crypto_aesni_gcm",
        "reps": o.reps,
        "inflight": o.inflight,
        "burst": o.burst,
        "results": items,
    });
    println!("{report}");
}

fn print_table(o: &Options, rows: &[Row], circuits: &[Circuit]) {
    println!(
        "DPDK backend, one core, AES-128-GCM, net_ring loopback: encap+decap round trips, best of {} windows of {} s",
        o.reps, o.secs
    );
    println!("  host: {}", host_cpu());
    println!("  Mpps = round trips per wall-clock second; cpu = per second of the thread's CPU time");
    println!("  ratio = Mpps / pair (same method on both sides); ratio cpu = cpu / pair (optimistic)");
    println!(
        "reference: dpdk-test-crypto-perf on crypto_aesni_gcm, burst 32, best of {} runs; pair = 1/(1/enc + 1/dec)",
        o.reps
    );
    println!(
        "{:>6} {:>20} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>9} {:>6}",
        "size", "backend crypto", "Mpps", "cpu", "enc Mops", "dec Mops", "pair", "ratio", "ratio cpu", "drops"
    );
    for r in rows {
        println!(
            "{:>6} {:>20} {:>8.3} {:>8.3} {:>9.3} {:>9.3} {:>9.3} {:>6.2} {:>9.2} {:>6}",
            r.size,
            r.mode.label(),
            r.wall_mpps,
            r.cpu_mpps,
            r.enc,
            r.dec,
            r.pair,
            r.ratio(),
            r.ratio_cpu_time(),
            r.drops
        );
    }
    for c in circuits {
        let w: Vec<String> = c.windows.iter().map(|r| format!("{r:.3}")).collect();
        let cw: Vec<String> = c.cpu_windows.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "windows {} B {}: wall {} | cpu {}",
            c.size,
            c.mode.name(),
            w.join(" "),
            cw.join(" ")
        );
    }
}

/// One result line.
struct Row {
    size: usize,
    mode: BenchMode,
    wall_mpps: f64,
    cpu_mpps: f64,
    enc: f64,
    dec: f64,
    pair: f64,
    drops: u64,
}

impl Row {
    /// Backend round trips per wall-clock second over crypto-perf's pair
    /// rate: both best of the same number of interleaved runs on the same core.
    fn ratio(&self) -> f64 {
        self.wall_mpps / self.pair
    }

    /// Backend round trips per CPU second over crypto-perf's pair rate
    /// (optimistic on a shared machine: crypto-perf's rate is wall-clock).
    fn ratio_cpu_time(&self) -> f64 {
        self.cpu_mpps / self.pair
    }
}

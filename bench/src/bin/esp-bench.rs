//! esp-bench: ESP encapsulation and decapsulation per core, compared in the
//! same run with the bare aws-lc-rs AES-GCM seal/open of the same sizes.
//!
//! Usage: `esp-bench [--json] [--secs S] [--no-scale] [--scale-sas N]`
//!
//! Each case runs bursts of 32 packets through a `fastpath::worker::Worker`
//! (SPD lookup, SAD lookup, sequence number, ESP, counters). Refilling the
//! buffers between bursts (the job of the receive path) is not timed; the
//! worker call is. Rates are of inner packet bytes. `ratio` is the worker's
//! packet rate over the bare AEAD's packet rate at the same size.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::ip;
use fastpath::sad::{Direction, SaId, SaParams, Sad};
use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const BURST: usize = 32;
/// Simple IMIX: 7 × 64 B, 4 × 576 B, 1 × 1420 B.
const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1420, 64, 576, 64, 576, 64];

#[derive(Clone, Copy)]
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
    /// JSON fields: numeric `size` (IMIX: its mean packet size) and a `label`.
    fn json(self) -> String {
        match self {
            Size::Fixed(s) => format!("{s},\"label\":\"{s}\""),
            Size::Imix => format!(
                "{},\"label\":\"imix\"",
                IMIX.iter().sum::<usize>() / IMIX.len()
            ),
        }
    }
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

/// Runs `burst` until `target` of timed work has accumulated (after a short
/// warm-up). `burst` adds its timed part to the duration and returns
/// (packets, bytes) processed.
fn run(target: Duration, mut burst: impl FnMut(&mut Duration) -> (u64, u64)) -> Rate {
    let mut warm = Duration::ZERO;
    while warm < target / 10 {
        burst(&mut warm);
    }
    let (mut t, mut p, mut b) = (Duration::ZERO, 0u64, 0u64);
    while t < target {
        let (pp, bb) = burst(&mut t);
        p += pp;
        b += bb;
    }
    Rate {
        pps: p as f64 / t.as_secs_f64(),
        bps: b as f64 / t.as_secs_f64(),
    }
}

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
    let local: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([192, 0, 2, 1]));
    let remote = IpAddr::from([192, 0, 2, 2]);
    let (sad_a, _ea) = Sad::new(1);
    let (sad_b, _eb) = Sad::new(1);
    let spd = Spd::new();
    let mut dsts = Vec::with_capacity(n as usize);
    let any = TrafficSelector::prefix(IpAddr::from([0, 0, 0, 0]), 0).expect("selector");
    for i in 0..n {
        let mut p = SaParams::new(0x10000 + i, Direction::Outbound, keys(i), local, remote);
        p.path_mtu = 9000;
        let id: SaId = sad_a.install_outbound(&p).expect("outbound SA");
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
    let spd = Arc::new(spd);
    Setup {
        a: Worker::new(0, Arc::new(sad_a), spd).without_pinning(),
        b: Worker::new(0, Arc::new(sad_b), Arc::new(Spd::new())).without_pinning(),
        dsts,
    }
}

struct Templates {
    /// Per tunnel (cycled), per IMIX slot, the inner packet.
    pkts: Vec<Vec<u8>>,
}

fn templates(size: Size, dsts: &[Ipv4Addr], count: usize) -> Templates {
    let mut pkts = Vec::with_capacity(count);
    let mut x = 0x9e37_79b9u32;
    for i in 0..count {
        // Pseudo-random tunnel choice so the multi-SA run misses caches.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let dst = dsts[(x as usize) % dsts.len()];
        pkts.push(inner_packet(size.of(i), dst));
    }
    Templates { pkts }
}

fn bench_encap(s: &mut Setup, size: Size, secs: Duration) -> Rate {
    let t = templates(size, &s.dsts, 4096);
    let mut bufs: Vec<PacketBuf> = (0..BURST).map(|_| PacketBuf::new(128, 2048)).collect();
    let mut verdicts = vec![Verdict::Keepalive; BURST];
    let mut cursor = 0usize;
    let a = &mut s.a;
    run(secs, |timed| {
        let mut bytes = 0u64;
        for b in bufs.iter_mut() {
            let p = &t.pkts[cursor % t.pkts.len()];
            cursor += 1;
            bytes += p.len() as u64;
            let _ = b.set_data(p);
        }
        let start = Instant::now();
        a.outbound_burst(&mut bufs, &mut verdicts);
        *timed += start.elapsed();
        let ok = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::ToPeer { .. }))
            .count();
        assert_eq!(ok, BURST, "encap dropped packets: {:?}", verdicts[0]);
        (BURST as u64, bytes)
    })
}

fn bench_decap(s: &mut Setup, size: Size, secs: Duration) -> Rate {
    let t = templates(size, &s.dsts, 4096);
    let mut bufs: Vec<PacketBuf> = (0..BURST).map(|_| PacketBuf::new(128, 2048)).collect();
    let mut verdicts = vec![Verdict::Keepalive; BURST];
    let meta = vec![
        PacketMeta {
            src: IpAddr::from([192, 0, 2, 1]),
            dst: None,
            src_port: 0,
        };
        BURST
    ];
    let mut cursor = 0usize;
    let (a, b) = (&mut s.a, &mut s.b);
    run(secs, |timed| {
        let mut bytes = 0u64;
        for buf in bufs.iter_mut() {
            let p = &t.pkts[cursor % t.pkts.len()];
            cursor += 1;
            bytes += p.len() as u64;
            let _ = buf.set_data(p);
        }
        a.outbound_burst(&mut bufs, &mut verdicts);
        let start = Instant::now();
        b.inbound_burst(InboundKind::RawEsp, &mut bufs, &meta, &mut verdicts);
        *timed += start.elapsed();
        let ok = verdicts.iter().filter(|v| **v == Verdict::ToTunnel).count();
        assert_eq!(ok, BURST, "decap dropped packets: {:?}", verdicts[0]);
        (BURST as u64, bytes)
    })
}

/// Bare aws-lc-rs AES-128-GCM seal (or open) with an 8-byte AAD, in place.
fn bench_bare(size: Size, open: bool, secs: Duration) -> Rate {
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[0x11; 16]).expect("key"));
    let mut bufs: Vec<Vec<u8>> = (0..BURST).map(|i| vec![0x5a; size.of(i) + 16]).collect();
    // For open: seal each buffer once under a fixed nonce, then open it repeatedly
    // (open is in place, so re-seal untimed between bursts).
    let nonce = || Nonce::assume_unique_for_key([7u8; 12]);
    let aad = [0u8; 8];
    let mut seq = 0u64;
    run(secs, |timed| {
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
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from(aad),
                        &mut b[..len],
                    )
                    .expect("seal");
                b[len..].copy_from_slice(tag.as_ref());
            }
            *timed += start.elapsed();
        }
        (BURST as u64, bytes)
    })
}

struct Row {
    size: Size,
    encap: Rate,
    decap: Rate,
    seal: Rate,
    open: Rate,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let no_scale = args.iter().any(|a| a == "--no-scale");
    let arg_val = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let secs = Duration::from_secs_f64(arg_val("--secs").unwrap_or(0.5));
    let scale_sas = arg_val("--scale-sas").unwrap_or(100_000.0) as u32;
    let sizes = [
        Size::Fixed(64),
        Size::Fixed(512),
        Size::Fixed(1420),
        Size::Imix,
    ];

    let mut single = setup(1);
    let mut rows = Vec::new();
    for size in sizes {
        rows.push(Row {
            size,
            encap: bench_encap(&mut single, size, secs),
            decap: bench_decap(&mut single, size, secs),
            seal: bench_bare(size, false, secs),
            open: bench_bare(size, true, secs),
        });
    }
    let mut scale_rows = Vec::new();
    if !no_scale {
        let t = Instant::now();
        let mut many = setup(scale_sas);
        let setup_time = t.elapsed();
        if !json {
            eprintln!("installed {scale_sas} SA pairs and policies in {setup_time:.2?}");
        }
        for size in sizes {
            scale_rows.push((
                size,
                bench_encap(&mut many, size, secs),
                bench_decap(&mut many, size, secs),
            ));
        }
    }

    if json {
        let ratio = |a: Rate, b: Rate| if b.pps > 0.0 { a.pps / b.pps } else { 0.0 };
        let entry = |size: Size, r: Rate, base: Rate| {
            format!(
                "{{\"size\":{},\"mpps\":{:.4},\"gbps\":{:.4},\"ratio\":{:.4}}}",
                size.json(),
                r.mpps(),
                r.gbps(),
                ratio(r, base)
            )
        };
        let list = |f: &dyn Fn(&Row) -> String| rows.iter().map(f).collect::<Vec<_>>().join(",");
        let results = list(&|r| entry(r.size, r.encap, r.seal));
        let decap = list(&|r| entry(r.size, r.decap, r.open));
        let seal = list(&|r| entry(r.size, r.seal, r.seal));
        let open = list(&|r| entry(r.size, r.open, r.open));
        let scale_enc = scale_rows
            .iter()
            .zip(&rows)
            .map(|((s, e, _), r)| entry(*s, *e, r.encap))
            .collect::<Vec<_>>()
            .join(",");
        let scale_dec = scale_rows
            .iter()
            .zip(&rows)
            .map(|((s, _, d), r)| entry(*s, *d, r.decap))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{{\"cipher\":\"aes128gcm16\",\"burst\":{BURST},\"results\":[{results}],\
             \"decap_results\":[{decap}],\"bare_seal\":[{seal}],\"bare_open\":[{open}],\
             \"scale_sas\":{},\"scale_encap\":[{scale_enc}],\"scale_decap\":[{scale_dec}],\
             \"notes\":\"results = encap, ratio vs bare aws-lc-rs AES-128-GCM seal; decap ratio vs bare open; scale ratios vs single-SA\"}}",
            if no_scale { 0 } else { scale_sas }
        );
        return;
    }
    println!("ESP AES-128-GCM-16 tunnel mode, IPv4, burst {BURST}, one core, {secs:?} per case");
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
    for r in &rows {
        println!(
            "{:>6} | {:>9.3} {:>11.2} | {:>9.3} {:>11.2} | {:>9.3} {:>11.2} | {:>9.3} {:>11.2} | {:>6.3} | {:>6.3}",
            r.size.label(),
            r.encap.mpps(),
            r.encap.gbps(),
            r.decap.mpps(),
            r.decap.gbps(),
            r.seal.mpps(),
            r.seal.gbps(),
            r.open.mpps(),
            r.open.gbps(),
            r.encap.pps / r.seal.pps,
            r.decap.pps / r.open.pps
        );
    }
    if !scale_rows.is_empty() {
        println!(
            "\nwith {scale_sas} SAs and policies, random tunnel per packet (ratio vs single SA):"
        );
        for ((s, e, d), r) in scale_rows.iter().zip(&rows) {
            println!(
                "{:>6} | encap {:>7.3} Mpps {:>6.2} Gbit/s ({:.3}) | decap {:>7.3} Mpps {:>6.2} Gbit/s ({:.3})",
                s.label(),
                e.mpps(),
                e.gbps(),
                e.pps / r.encap.pps,
                d.mpps(),
                d.gbps(),
                d.pps / r.decap.pps
            );
        }
    }
}

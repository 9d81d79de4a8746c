//! Heap bytes per tunnel in the fastpath: one inbound SA, one outbound SA and
//! one /32 policy, as the daemon installs them for a road-warrior CHILD_SA.
//! Measured with a counting global allocator (live bytes requested; the
//! allocator's own per-block overhead, ~8–16 B per allocation, is not
//! included). Run with `--nocapture` to see the breakdown.

use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::sad::{Direction, SaParams, Sad};
use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use zeroize::Zeroizing;

/// System allocator that tracks live bytes and allocation count.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
static SERIAL: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn snapshot() -> (isize, isize) {
    (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed))
}

fn keys(i: u32) -> CipherKeys {
    let enc = EncAlg::AesGcm16_128;
    CipherKeys {
        enc,
        integ: IntegAlg::None,
        enc_key: Zeroizing::new((0..enc.key_material_len()).map(|k| (k as u32 ^ i) as u8).collect()),
        integ_key: Zeroizing::new(Vec::new()),
    }
}

#[test]
fn bytes_per_sa_pair_and_policy() {
    // One test in this binary: the counters see no other test's allocations.
    assert_eq!(SERIAL.fetch_add(1, Ordering::Relaxed), 0);
    let n = 100_000u32;
    let local: IpAddr = "192.0.2.1".parse().unwrap();
    let (sad, _ev) = Sad::new(2);
    let spd = Spd::new();
    let any = TrafficSelector::prefix("0.0.0.0".parse().unwrap(), 0).unwrap();
    // Parameters built up front so that only the tables' memory is counted.
    let params: Vec<(SaParams, SaParams, TrafficSelector)> = (0..n)
        .map(|i| {
            let peer = IpAddr::V4(Ipv4Addr::from(0xc633_0000 + i));
            let inner = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let mut inb = SaParams::new(0x1000 + i, Direction::Inbound, keys(i), local, peer);
            let ts = TrafficSelector::prefix(inner, 32).unwrap();
            inb.remote_ts = vec![ts];
            let out = SaParams::new(0x8000_0000 + i, Direction::Outbound, keys(!i), local, peer);
            (inb, out, ts)
        })
        .collect();
    let (b0, k0) = snapshot();
    let mut ids = Vec::with_capacity(n as usize);
    for (inb, _, _) in &params {
        ids.push(sad.install_inbound(inb).unwrap());
    }
    let (b1, k1) = snapshot();
    let mut outs = Vec::with_capacity(n as usize);
    for (_, out, _) in &params {
        outs.push(sad.install_outbound(out).unwrap());
    }
    let (b2, k2) = snapshot();
    for ((_, _, ts), out) in params.iter().zip(&outs) {
        spd.insert(&Policy {
            local: any,
            remote: *ts,
            action: PolicyAction::Protect(*out),
            priority: 10,
        })
        .unwrap();
    }
    let (b3, k3) = snapshot();
    // The id vectors themselves are the test's, not the tables'.
    let own = 2 * n as isize * std::mem::size_of::<fastpath::sad::SaId>() as isize;
    let per = |b: isize| b as f64 / f64::from(n);
    let inbound = per(b1 - b0 - own / 2);
    let outbound = per(b2 - b1 - own / 2);
    let policy = per(b3 - b2);
    let total = inbound + outbound + policy;
    println!(
        "per tunnel ({n} installed): inbound SA {inbound:.0} B in {:.1} blocks, outbound SA {outbound:.0} B in {:.1} blocks, \
         policy {policy:.0} B in {:.1} blocks; total {total:.0} B (+ allocator overhead per block)",
        (k1 - k0 - 1) as f64 / f64::from(n),
        (k2 - k1 - 1) as f64 / f64::from(n),
        (k3 - k2) as f64 / f64::from(n),
    );
    println!(
        "sizes: InboundSa {} B, OutboundSa {} B",
        std::mem::size_of::<fastpath::sad::InboundSa>(),
        std::mem::size_of::<fastpath::sad::OutboundSa>()
    );
    // Everything is still there and reachable.
    assert_eq!(sad.len(), (n as usize, n as usize));
    assert_eq!(spd.len(), n as usize);
    // Regression bound, with headroom over the value in docs/benchmarks/gateway-memory.md.
    assert!(total < 2600.0, "fastpath memory per tunnel grew to {total:.0} B");
    // mimalloc size classes: an `Arc<InboundSa>` (16-byte header) is served
    // from the 896-byte class and an `Arc<OutboundSa>` from the 768-byte one;
    // the inbound SA's inline selectors use the room left in its class.
    assert!(std::mem::size_of::<fastpath::sad::InboundSa>() + 16 <= 896);
    assert!(std::mem::size_of::<fastpath::sad::OutboundSa>() + 16 <= 768);
}

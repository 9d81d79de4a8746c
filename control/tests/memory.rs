//! Heap held by established responder IKE SAs (each with one CHILD_SA), measured
//! with a counting allocator: many initiators negotiate with one responder
//! endpoint in memory, then the initiators are dropped and what the responder
//! still holds is divided by the number of SAs. Prints a breakdown of the big
//! items and guards against regressions (the gateway's goal is 4 KiB per
//! tunnel with the fastpath SA pair included). Also counts the allocations
//! the responder makes per handshake (each one costs allocator time on the
//! gateway's hot path).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use control::config::{ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
use control::crypto::{EncrAlg, SkCipher};
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::{ChildSa, Context, Event, IkeSa, RESPONSE_CACHE_TTL, Transmit};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use ironsa_crypto::AwsLcProvider;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Allocations (and reallocations) made by this thread.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count_alloc() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

/// Allocations this thread has made so far.
fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        count_alloc();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        count_alloc();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const PSK: &[u8] = b"a-long-random-test-secret-for-memory";

fn conn(name: &str, local: &str, remote: IdentityMatch, lts: &str, rts: &str) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, parse_identity(local), remote, PSK);
    c.ike_proposals = parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap();
    c.dpd_delay = None;
    c.children.push(ChildConfig {
        name: "net".into(),
        esp_proposals: parse_esp_proposals("aes256gcm16").unwrap(),
        local_ts: vec![parse_selector(lts).unwrap()],
        remote_ts: vec![parse_selector(rts).unwrap()],
        mode: IpsecMode::Tunnel,
        lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
    });
    c
}

/// Runs `n` handshakes at `now` against one responder endpoint (its tables
/// sized for `n`); returns it with its SAs up, the heap in use before it, and
/// the allocations the responder made (its `handle` and draining its output).
fn responder_with(n: usize, now: Instant) -> (Endpoint, isize, u64) {
    let gw = Arc::new(conn(
        "gw",
        "gw@mem.test",
        IdentityMatch::parse("*@mem.test"),
        "10.0.0.0/8",
        "0.0.0.0/0",
    ));
    let admission = AdmissionConfig {
        cookie_threshold: usize::MAX,
        per_source_half_open: usize::MAX,
        ..AdmissionConfig::default()
    };
    let before = live();
    let mut responder = Endpoint::new(
        now,
        Context::new(vec![gw], AwsLcProvider::new().shared()),
        admission,
        1,
        6,
    );
    responder.reserve(n);
    let mut responder_allocs = 0;
    let gw_addr: SocketAddr = "192.0.2.1:500".parse().unwrap();
    let mut initiators = Vec::new();
    let mut up = 0;
    // Batches keep the initiators' transient state small.
    for batch in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut ini = Endpoint::new(
            now,
            Context::new(vec![], AwsLcProvider::new().shared()),
            AdmissionConfig::default(),
            0,
            0,
        );
        for &i in batch {
            let c = Arc::new(conn(
                "c",
                &format!("user{i}@mem.test"),
                IdentityMatch::Exact(parse_identity("gw@mem.test")),
                &format!("10.128.{}.{}/32", i / 256 % 256, i % 256),
                "10.0.0.0/8",
            ));
            let local: SocketAddr = format!("198.51.100.{}:{}", 1 + i % 200, 1024 + i / 200)
                .parse()
                .unwrap();
            ini.initiate(now, c, local, gw_addr).unwrap();
        }
        let mut wire: VecDeque<(bool, Transmit)> = VecDeque::new();
        loop {
            while let Some(t) = ini.poll_transmit() {
                wire.push_back((true, t));
            }
            let a = allocs();
            while let Some(t) = responder.poll_transmit() {
                wire.push_back((false, t));
            }
            while let Some((_, e)) = responder.poll_event() {
                if matches!(e, Event::IkeSaUp { .. }) {
                    up += 1;
                }
            }
            responder_allocs += allocs() - a;
            while ini.poll_event().is_some() {}
            let Some((to_responder, t)) = wire.pop_front() else {
                break;
            };
            if to_responder {
                let a = allocs();
                responder.handle(now, t.remote, t.local, &t.data);
                responder_allocs += allocs() - a;
            } else {
                ini.handle(now, t.remote, t.local, &t.data);
            }
        }
        initiators.push(ini);
    }
    assert_eq!(up, n, "every SA established");
    drop(initiators);
    (responder, before, responder_allocs)
}

/// Allocations per responder handshake allowed (119 measured; 148 before the
/// codec's buffers were sized up front, SK payloads were opened from the
/// decoded message and AUTH stopped copying the signed octets; 158 before NAT
/// hashes and identity globs stopped allocating: decoding and encoding the two
/// exchanges, proposals, keys, the SA and CHILD_SA records).
const MAX_ALLOCS_PER_HANDSHAKE: f64 = 135.0;

#[test]
fn responder_ike_sa_with_child_heap_is_small() {
    let n = 4000;
    let now = Instant::now();
    let (mut responder, before, responder_allocs) = responder_with(n, now);
    assert_eq!(responder.len(), n);
    assert_eq!(responder.half_open(), 0);
    assert!(responder.sas().all(|s| s.children().len() == 1));
    let per_sa = (live() - before) as f64 / n as f64;
    let allocs_per_handshake = responder_allocs as f64 / n as f64;
    eprintln!(
        "responder: {allocs_per_handshake:.1} allocations per handshake (IKE_SA_INIT + IKE_AUTH with a CHILD_SA)"
    );
    assert!(
        allocs_per_handshake < MAX_ALLOCS_PER_HANDSHAKE,
        "allocations per responder handshake regressed: {allocs_per_handshake:.1}"
    );

    let b = live();
    let cipher = SkCipher::new(
        EncrAlg::AesGcm16 { key_bits: 256 },
        None,
        &[7u8; 36],
        &[],
        &AwsLcProvider::new().shared(),
    )
    .unwrap();
    let cipher_heap = live() - b;
    drop(cipher);
    let report = responder.sas().next().map(IkeSa::memory).unwrap();
    eprintln!(
        "responder: {per_sa:.0} bytes per established IKE SA + CHILD_SA (control plane, measured)\n  \
         size_of IkeSa {} B, ChildSa {} B; SK cipher heap {} B per direction\n  \
         one SA's own accounting: {report:?}",
        std::mem::size_of::<IkeSa>(),
        std::mem::size_of::<ChildSa>(),
        cipher_heap,
    );
    // Regression bound, with headroom over the value in docs/benchmarks/gateway-memory.md.
    assert!(
        per_sa < 1300.0,
        "control-plane memory per IKE SA + CHILD_SA regressed: {per_sa:.0} bytes"
    );
    // The daemon's allocator (mimalloc) serves a boxed IkeSa from its
    // 448-byte size class; one byte more and every SA takes 512.
    assert!(
        std::mem::size_of::<IkeSa>() <= 448,
        "IkeSa grew to {} B: it no longer fits the allocator's 448-byte class",
        std::mem::size_of::<IkeSa>()
    );
    // Idle for the response cache lifetime: the IKE_AUTH responses are dropped.
    responder.handle_timeout(now + RESPONSE_CACHE_TTL + Duration::from_secs(1));
    assert_eq!(responder.len(), n, "idle SAs stay up");
    while responder.poll_transmit().is_some() {}
    while responder.poll_event().is_some() {}
    assert!(responder.sas().all(|s| s.memory().cached_response == 0));
    let idle = (live() - before) as f64 / n as f64;
    eprintln!("after {} s idle: {idle:.0} bytes per SA", RESPONSE_CACHE_TTL.as_secs());
    assert!(
        idle < per_sa - 150.0,
        "the cached responses were freed: {idle:.0} vs {per_sa:.0}"
    );
    drop(responder);
}

//! pool-bench: the virtual-IP pool (`control::pool::Pool`) at 1,000,000
//! addresses, against the targets of 1 µs per allocate + release and 64
//! bytes per lease, with a `HashMap<String, u32>` insert + remove of the same
//! identities measured in the same run as the reference.
//!
//! Memory is the heap in use (bytes requested, counted by the global
//! allocator) after leasing every address, minus before, per lease: the
//! identity, the hash-table slot and the per-address state. Time is a
//! steady-state churn on the full pool: release a random lease, then
//! allocate for either the same identity (a reconnect) or a new one (which
//! takes the longest-free address and forgets its previous owner).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use clap::Parser;
use control::pool::{AddrRange, Pool};
use serde::Serialize;

/// Allocate + release, in nanoseconds, that the project aims for.
const TARGET_NS_PER_OP: f64 = 1000.0;
/// Heap bytes per lease that the project aims for.
const TARGET_BYTES_PER_LEASE: f64 = 64.0;

#[cfg(feature = "mimalloc")]
const BACKING: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(not(feature = "mimalloc"))]
const BACKING: std::alloc::System = std::alloc::System;

/// Bytes currently allocated (requested sizes).
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

/// The backing allocator, keeping [`LIVE_BYTES`].
struct LiveBytes;

// SAFETY: every call is forwarded unchanged to the backing allocator; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { BACKING.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { BACKING.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { BACKING.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { BACKING.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LiveBytes = LiveBytes;

/// Measures the virtual-IP pool allocator against its targets.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Addresses in the pool (all leased before the churn starts).
    #[arg(long, default_value_t = 1_000_000)]
    addresses: u32,
    /// Release + allocate pairs timed.
    #[arg(long, default_value_t = 2_000_000)]
    ops: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    addresses: u32,
    ops: u64,
    ns_per_op: f64,
    bytes_per_lease: f64,
    target_ns_per_op: f64,
    target_bytes_per_lease: f64,
    /// Measured over target: at most 1.0 meets the target.
    ns_ratio_to_target: f64,
    bytes_ratio_to_target: f64,
    reference_hashmap_ns_per_op: f64,
    reference_hashmap_bytes_per_entry: f64,
    /// Pool time over the reference's.
    ns_ratio_to_reference: f64,
    reconnects_reused: u64,
    meets_targets: bool,
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn identity(n: u64) -> String {
    format!("user{n}@example.com")
}

fn live() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let n = u64::from(args.addresses);
    if n == 0 {
        return Err("--addresses must be at least 1".into());
    }
    let first = Ipv4Addr::new(10, 0, 0, 0);
    let last = Ipv4Addr::from(u32::from(first) + args.addresses - 1);
    let range = AddrRange {
        first: IpAddr::V4(first),
        last: IpAddr::V4(last),
    };

    // Identities exist before the measurement: the caller owns them.
    let names: Vec<String> = (0..n).map(identity).collect();
    let spare: Vec<String> = (n..2 * n).map(identity).collect();

    // The benchmark's own bookkeeping is allocated outside the measurement.
    let mut addrs: Vec<IpAddr> = Vec::with_capacity(names.len());
    let mut holders: Vec<&str> = Vec::with_capacity(names.len());
    let before = live();
    let mut pool = Pool::new("bench", &[range])?;
    for name in &names {
        addrs.push(pool.allocate(name)?.addr);
        holders.push(name);
    }
    let bytes_per_lease = (live() - before) as f64 / n as f64;

    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut reused = 0u64;
    let start = Instant::now();
    for op in 0..args.ops {
        let slot = (xorshift(&mut x) % n) as usize;
        pool.release(addrs[slot])?;
        let who = if op % 2 == 0 {
            holders[slot]
        } else {
            &spare[(xorshift(&mut x) % n) as usize]
        };
        // A spare identity may already hold an address: then it is a second
        // lease on it, which the next release of that slot undoes.
        let lease = pool.allocate(who)?;
        reused += u64::from(lease.reused);
        if lease.addr != addrs[slot] && pool.holder(addrs[slot]).is_none() {
            // `who` already held another address; give the slot back to it.
            pool.release(lease.addr)?;
            let again = pool.allocate(holders[slot])?;
            addrs[slot] = again.addr;
        } else {
            addrs[slot] = lease.addr;
            holders[slot] = who;
        }
    }
    let ns_per_op = start.elapsed().as_nanos() as f64 / args.ops as f64;
    drop(pool);

    // Reference: the same identities through a HashMap<String, u32>.
    let before = live();
    let mut map: HashMap<String, u32> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        map.insert(name.clone(), i as u32);
    }
    let map_bytes = (live() - before) as f64 / n as f64;
    let mut keys: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let start = Instant::now();
    for op in 0..args.ops {
        let slot = (xorshift(&mut x) % n) as usize;
        let v = map.remove(keys[slot]).unwrap_or(0);
        let who = if op % 2 == 0 {
            keys[slot]
        } else {
            &spare[(xorshift(&mut x) % n) as usize]
        };
        if map.insert(who.to_string(), v).is_none() {
            keys[slot] = who;
        }
    }
    let ref_ns = start.elapsed().as_nanos() as f64 / args.ops as f64;
    std::hint::black_box(&map);

    let report = Report {
        addresses: args.addresses,
        ops: args.ops,
        ns_per_op,
        bytes_per_lease,
        target_ns_per_op: TARGET_NS_PER_OP,
        target_bytes_per_lease: TARGET_BYTES_PER_LEASE,
        ns_ratio_to_target: ns_per_op / TARGET_NS_PER_OP,
        bytes_ratio_to_target: bytes_per_lease / TARGET_BYTES_PER_LEASE,
        reference_hashmap_ns_per_op: ref_ns,
        reference_hashmap_bytes_per_entry: map_bytes,
        ns_ratio_to_reference: ns_per_op / ref_ns,
        reconnects_reused: reused,
        meets_targets: ns_per_op <= TARGET_NS_PER_OP && bytes_per_lease <= TARGET_BYTES_PER_LEASE,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "pool-bench: {} addresses, {} release+allocate pairs",
            report.addresses, report.ops
        );
        println!(
            "  pool:      {:8.1} ns/op  {:6.1} B/lease   ({:.2}x and {:.2}x of the 1000 ns / 64 B targets)",
            ns_per_op, bytes_per_lease, report.ns_ratio_to_target, report.bytes_ratio_to_target
        );
        println!(
            "  HashMap<String,u32> insert+remove: {:8.1} ns/op  {:6.1} B/entry",
            ref_ns, map_bytes
        );
        println!(
            "  pool / HashMap time: {:.2}; reconnects that got their address back: {}",
            report.ns_ratio_to_reference, reused
        );
        println!("  targets {}", if report.meets_targets { "met" } else { "NOT met" });
    }
    Ok(())
}

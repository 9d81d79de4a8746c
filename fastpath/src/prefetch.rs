//! Cache prefetch hints for the burst loops.
//!
//! The workers resolve all SAs of a burst first, hint their state into the
//! cache here, and only then process the packets, so the memory latency of
//! many cold SAs overlaps instead of adding up. A prefetch never faults and
//! never changes results, whatever the address.

/// Cache line size assumed for stepping through objects.
pub const CACHE_LINE: usize = 64;

/// Hints that the `len` bytes at `p` will be read soon (all cache levels).
#[inline(always)]
pub fn prefetch_bytes(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        prefetch_line(p.wrapping_add(off));
        off += CACHE_LINE;
    }
}

/// Hints that `*v` (all of it) will be read soon.
#[inline(always)]
pub fn prefetch_value<T>(v: &T) {
    prefetch_bytes(v as *const T as *const u8, std::mem::size_of::<T>());
}

/// Hints the value behind an `Arc` and its reference counts (which the next
/// `Arc::clone` writes) will be used soon.
#[inline(always)]
pub fn prefetch_arc<T>(a: &std::sync::Arc<T>) {
    let p = std::sync::Arc::as_ptr(a) as *const u8;
    // The strong count sits just before the value (in `ArcInner`).
    prefetch_line(p.wrapping_sub(2 * std::mem::size_of::<usize>()));
    prefetch_bytes(p, std::mem::size_of::<T>());
}

/// Hints the cache line holding `p`.
#[inline(always)]
pub fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is an SSE instruction (baseline on x86_64); it is a
    // hint that never faults and never dereferences architecturally, so any
    // address, valid or not, is fine.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_any_address_is_harmless() {
        let v = [1u64; 100];
        prefetch_value(&v);
        prefetch_bytes(std::ptr::null(), 4096);
        prefetch_line(usize::MAX as *const u8);
        prefetch_arc(&std::sync::Arc::new([0u8; 300]));
        assert_eq!(v.iter().sum::<u64>(), 100);
    }
}

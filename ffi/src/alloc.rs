//! Tuning of the mimalloc allocator the ironsa daemon runs on.

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3, the versions
/// libmimalloc-sys 0.1 bundles): the delay before freed memory is returned
/// to the OS.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the allocator instead of returning it to the OS.
///
/// A concentrator allocates and frees per-handshake and per-SA memory all the
/// time; with mimalloc's default 10 ms purge delay the kernel keeps zeroing
/// pages that come straight back, a large share of the responder's CPU.
/// The process' RSS then stays at its peak, which for a gateway is the size
/// it needs anyway.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an integer option; any value is valid
    // (-1 = never purge) and it may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// `mi_option_arena_max_object_size` in mimalloc.h (v3, the version
/// libmimalloc-sys 0.1.49 bundles), in KiB.
const MI_OPTION_ARENA_MAX_OBJECT_SIZE: libmimalloc_sys::mi_option_t = 45;

/// Blocks above this size (KiB) are mapped from the kernel, not the heap.
const BIG_BLOCK_KIB: std::os::raw::c_long = 1024;

/// Maps blocks above 1 MiB straight from the kernel instead of carving them
/// from mimalloc's heap, so that they are unmapped when freed.
///
/// With [`keep_freed_memory`] the heap never returns memory, and the blocks
/// above 1 MiB are the big hash tables (SAD and SPD slot arrays, indexes of
/// the CHILD_SAs): each time one doubles, its old copy stayed resident in the
/// heap, unused.
/// Such blocks are few and allocated rarely, so mapping them costs nothing
/// measurable. The packet path's big arrays ask for huge pages themselves
/// (fastpath's `HugeArray`).
pub fn big_blocks_from_the_os() {
    // SAFETY: mi_option_set only stores an integer option; it is read when
    // an allocation is placed, so it applies from the next allocation on.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_MAX_OBJECT_SIZE, BIG_BLOCK_KIB) }
}

/// Block size [`prefault_this_thread`] allocates in: above mimalloc's
/// large-object limit (512 KiB), so each block is its own run of arena slices
/// that goes back to the arena, whole, when freed, and below the limit of
/// [`big_blocks_from_the_os`], so that it comes from the heap.
const PREFAULT_BLOCK: usize = 768 << 10;

/// Makes mimalloc hold `bytes` (rounded up to 1 MiB) of memory whose pages the
/// kernel has already faulted in and zeroed, near where this thread allocates;
/// returns the bytes touched.
///
/// Memory fresh from the kernel is zeroed on first touch: a gateway bringing
/// up tens of thousands of SAs spends a good share of its handshake CPU in
/// the kernel's page clearing. This allocates
/// and writes that much memory once, at start, and frees it: with
/// [`keep_freed_memory`] mimalloc keeps the pages and reuses them for the
/// thread's later allocations, so the cost is paid at start-up, once. The
/// process' RSS grows by `bytes` at once instead of as SAs come up.
pub fn prefault_this_thread(bytes: usize) -> usize {
    let blocks = bytes.div_ceil(PREFAULT_BLOCK);
    let mut held = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        // A non-zero fill: a zeroed allocation of fresh memory would not be written.
        held.push(std::hint::black_box(vec![0xa5u8; PREFAULT_BLOCK]));
    }
    // All blocks live at once, so they are distinct memory; then they are freed together.
    drop(std::hint::black_box(held));
    blocks * PREFAULT_BLOCK
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_option_reads_back() {
        super::keep_freed_memory();
        // SAFETY: mi_option_get only reads an integer option.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(v, -1);
    }

    #[test]
    fn the_big_block_option_reads_back() {
        super::big_blocks_from_the_os();
        // SAFETY: mi_option_get only reads an integer option.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_ARENA_MAX_OBJECT_SIZE) };
        assert_eq!(v, super::BIG_BLOCK_KIB);
    }

    #[test]
    fn prefaulting_rounds_up_to_whole_blocks() {
        assert_eq!(super::prefault_this_thread(0), 0);
        assert_eq!(super::prefault_this_thread(1), super::PREFAULT_BLOCK);
        assert_eq!(
            super::prefault_this_thread(super::PREFAULT_BLOCK + 1),
            2 * super::PREFAULT_BLOCK
        );
    }
}

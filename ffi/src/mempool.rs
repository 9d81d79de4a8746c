//! Packet-buffer pools (`rte_pktmbuf_pool_create`).

use std::ptr::NonNull;
use std::sync::Arc;

use crate::eal::Eal;
use crate::error::{Error, Result, c_string};
use crate::mbuf::Mbuf;
use crate::sys;

/// A pool of packet buffers.
///
/// Dropping the pool frees it only when every buffer has come back; if some
/// [`Mbuf`]s are still alive (or held by a device queue) the pool is
/// deliberately leaked so those buffers never point to freed memory.
/// Clones share the same pool; a port configured with the pool keeps a clone
/// for the rest of the process.
#[derive(Debug, Clone)]
pub struct Mempool {
    pool: Arc<RawPool>,
}

/// Default data room of an mbuf (2048 bytes + headroom).
pub const DEFAULT_DATA_ROOM: u16 = (2048 + sys::RTE_PKTMBUF_HEADROOM) as u16;

impl Mempool {
    /// Create a packet-mbuf pool of `count` buffers, each with `data_room`
    /// bytes (headroom included; see [`DEFAULT_DATA_ROOM`]), a per-lcore cache
    /// of `cache` buffers, on NUMA `socket` (`-1` for any).
    pub fn new(_eal: &Eal, name: &str, count: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool> {
        if count == 0 {
            return Err(Error::InvalidArgument("mempool of 0 buffers".into()));
        }
        if u32::from(data_room) < sys::RTE_PKTMBUF_HEADROOM {
            return Err(Error::InvalidArgument(format!(
                "data room {data_room} is smaller than the headroom {}",
                sys::RTE_PKTMBUF_HEADROOM
            )));
        }
        let cname = c_string("mempool name", name)?;
        // SAFETY: EAL is initialised (&Eal); cname is a valid NUL-terminated
        // string; DPDK copies the name.
        let ptr = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, socket) };
        Ok(Mempool {
            pool: Arc::new(RawPool::from_created("rte_pktmbuf_pool_create", ptr)?),
        })
    }

    /// Allocate one mbuf (reset, empty data).
    pub fn alloc(&self) -> Result<Mbuf> {
        // SAFETY: self.pool is a live pktmbuf pool.
        let m = unsafe { sys::ironsa_pktmbuf_alloc(self.pool.as_ptr()) };
        NonNull::new(m)
            // SAFETY: m was just allocated and is owned by nobody else.
            .map(|m| unsafe { Mbuf::from_raw(m) })
            .ok_or_else(|| Error::from_code("rte_pktmbuf_alloc", libc_enomem()))
    }

    /// Allocate `count` mbufs at once (all or nothing), appending them to `out`.
    pub fn alloc_bulk(&self, count: usize, out: &mut Vec<Mbuf>) -> Result<()> {
        let n = u32::try_from(count).map_err(|_| Error::InvalidArgument(format!("bulk of {count} mbufs")))?;
        let mut raw: Vec<*mut sys::rte_mbuf> = vec![std::ptr::null_mut(); count];
        // SAFETY: raw has room for `count` pointers; self.pool is a live pool.
        let ret = unsafe { sys::ironsa_pktmbuf_alloc_bulk(self.pool.as_ptr(), raw.as_mut_ptr(), n) };
        if ret != 0 {
            return Err(Error::from_ret("rte_pktmbuf_alloc_bulk", ret));
        }
        out.reserve(count);
        for m in raw {
            // SAFETY: on success every entry is a freshly allocated mbuf that we own.
            out.push(unsafe { Mbuf::from_raw(NonNull::new_unchecked(m)) });
        }
        Ok(())
    }

    /// Buffers currently free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: self.pool is a live pool.
        unsafe { sys::rte_mempool_avail_count(self.pool.as_ptr()) }
    }

    /// Buffers currently allocated from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: self.pool is a live pool.
        unsafe { sys::rte_mempool_in_use_count(self.pool.as_ptr()) }
    }

    /// Total number of buffers in the pool.
    pub fn size(&self) -> u32 {
        // SAFETY: self.pool is a live pool.
        unsafe { sys::ironsa_mempool_size(self.pool.as_ptr()) }
    }

    /// Raw pointer for other wrappers (queue setup).
    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.pool.as_ptr()
    }
}

/// A DPDK mempool pointer that frees the pool on drop only when every
/// element is back, and leaks it otherwise (elements still point into it).
#[derive(Debug)]
pub(crate) struct RawPool(NonNull<sys::rte_mempool>);

// SAFETY: DPDK mempools (default flags) are MP/MC-safe.
unsafe impl Send for RawPool {}
// SAFETY: DPDK mempools (default flags) are MP/MC-safe.
unsafe impl Sync for RawPool {}

impl RawPool {
    /// Wrap a pool returned by a DPDK `*_pool_create`, or report `call`'s error.
    pub(crate) fn from_created(call: &'static str, ptr: *mut sys::rte_mempool) -> Result<RawPool> {
        NonNull::new(ptr).map(RawPool).ok_or_else(|| Error::from_errno(call))
    }

    /// The pool pointer.
    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.0.as_ptr()
    }

    /// Elements currently allocated.
    pub(crate) fn in_use(&self) -> u32 {
        // SAFETY: self.0 is a live pool.
        unsafe { sys::rte_mempool_in_use_count(self.0.as_ptr()) }
    }
}

impl Drop for RawPool {
    fn drop(&mut self) {
        if self.in_use() == 0 {
            // SAFETY: no element is outstanding, so nothing points into the
            // pool any more; the pointer is not used after this.
            unsafe { sys::rte_mempool_free(self.0.as_ptr()) };
        }
        // Otherwise leak: live elements (possibly held in device queues)
        // still reference this pool's memory.
    }
}

/// ENOMEM, the code `rte_pktmbuf_alloc` failures mean (it does not set rte_errno).
pub(crate) fn libc_enomem() -> i32 {
    12
}

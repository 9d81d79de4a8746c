//! Lock-free rings of mbufs (`rte_ring`), for handing packets between lcores.

use std::os::raw::c_void;
use std::ptr::NonNull;

use crate::eal::Eal;
use crate::error::{Error, Result, c_string};
use crate::ethdev::MAX_BURST;
use crate::mbuf::Mbuf;
use crate::sys;

/// A multi-producer multi-consumer ring carrying owned [`Mbuf`]s.
/// Dropping the ring frees the mbufs still in it.
#[derive(Debug)]
pub struct Ring {
    ptr: NonNull<sys::rte_ring>,
}

// SAFETY: the ring is created MP/MC (no SP/SC flags), so enqueue/dequeue are
// safe from any number of threads; it only carries owned mbufs, which are Send.
unsafe impl Send for Ring {}
// SAFETY: see Send; every `&self` operation is an MP/MC ring operation.
unsafe impl Sync for Ring {}

impl Ring {
    /// Create a ring named `name` holding up to `capacity` mbufs on NUMA
    /// `socket` (`-1` for any). `capacity` need not be a power of two.
    pub fn new(_eal: &Eal, name: &str, capacity: u32, socket: i32) -> Result<Ring> {
        if capacity == 0 {
            return Err(Error::InvalidArgument("ring of capacity 0".into()));
        }
        let cname = c_string("ring name", name)?;
        // SAFETY: EAL initialised; cname NUL-terminated; RING_F_EXACT_SZ with
        // default MP/MC behaviour.
        let ptr = unsafe { sys::rte_ring_create(cname.as_ptr(), capacity, socket, sys::RING_F_EXACT_SZ) };
        NonNull::new(ptr)
            .map(|ptr| Ring { ptr })
            .ok_or_else(|| Error::from_errno("rte_ring_create"))
    }

    /// Enqueue mbufs from the front of `pkts` (up to [`MAX_BURST`] per call);
    /// enqueued ones are removed from `pkts`. Returns how many were enqueued
    /// (fewer when the ring is full).
    pub fn enqueue_burst(&self, pkts: &mut Vec<Mbuf>) -> usize {
        let n = pkts.len().min(MAX_BURST);
        let mut raw = [std::ptr::null_mut::<c_void>(); MAX_BURST];
        for (slot, m) in raw.iter_mut().zip(pkts.iter()) {
            *slot = m.as_ptr().cast();
        }
        // SAFETY: raw holds n valid mbuf pointers; the ring is MP-safe.
        let done = unsafe { sys::ironsa_ring_enqueue_burst(self.ptr.as_ptr(), raw.as_ptr(), n as u32) };
        let done = (done as usize).min(n);
        // The ring now owns the first `done` mbufs.
        for m in pkts.drain(..done) {
            let _ = m.into_raw();
        }
        done
    }

    /// Dequeue up to `max` mbufs (capped at [`MAX_BURST`]), appending them to
    /// `out`; returns how many.
    pub fn dequeue_burst(&self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let n = max.min(MAX_BURST);
        let mut raw = [std::ptr::null_mut::<c_void>(); MAX_BURST];
        // SAFETY: raw has room for n pointers; the ring is MC-safe.
        let got = unsafe { sys::ironsa_ring_dequeue_burst(self.ptr.as_ptr(), raw.as_mut_ptr(), n as u32) };
        let got = (got as usize).min(n);
        out.reserve(got);
        for &p in &raw[..got] {
            if let Some(m) = NonNull::new(p.cast::<sys::rte_mbuf>()) {
                // SAFETY: only owned mbufs are ever enqueued; dequeuing hands
                // that ownership back.
                out.push(unsafe { Mbuf::from_raw(m) });
            }
        }
        got
    }

    /// Number of mbufs in the ring.
    pub fn len(&self) -> usize {
        // SAFETY: self.ptr is a live ring.
        unsafe { sys::ironsa_ring_count(self.ptr.as_ptr()) as usize }
    }

    /// True when the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maximum number of mbufs the ring holds.
    pub fn capacity(&self) -> usize {
        // SAFETY: self.ptr is a live ring.
        unsafe { sys::ironsa_ring_capacity(self.ptr.as_ptr()) as usize }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let mut rest = Vec::new();
        while self.dequeue_burst(&mut rest, MAX_BURST) > 0 {
            rest.clear();
        }
        // SAFETY: the ring is empty and no other handle exists (we own it).
        unsafe { sys::rte_ring_free(self.ptr.as_ptr()) }
    }
}

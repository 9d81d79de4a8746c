//! Owned packet buffers (`struct rte_mbuf`).

use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::sys;

/// One packet buffer, owned: dropping it returns it to its pool.
///
/// Only single-segment data is exposed by [`Mbuf::data`]; `pkt_len` covers
/// all segments.
///
/// `repr(transparent)`: a slice of `Mbuf`s is an array of `rte_mbuf`
/// pointers, so bursts go to and from the drivers without copies.
#[repr(transparent)]
pub struct Mbuf {
    ptr: NonNull<sys::rte_mbuf>,
}

// SAFETY: an Mbuf is uniquely owned; freeing to its (MP/MC-safe) pool works
// from any thread, so ownership may move between threads.
unsafe impl Send for Mbuf {}
// SAFETY: `&Mbuf` only allows reads of the buffer.
unsafe impl Sync for Mbuf {}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("pkt_len", &self.pkt_len())
            .field("data_len", &self.data_len())
            .field("headroom", &self.headroom())
            .field("port", &self.port())
            .finish()
    }
}

impl Mbuf {
    /// Take ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be a valid, allocated mbuf not owned by anything else (not
    /// in a device queue, not another `Mbuf`).
    pub unsafe fn from_raw(ptr: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf { ptr }
    }

    /// Give up ownership, returning the raw pointer (the caller must free it
    /// or hand it to DPDK).
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// The raw pointer, still owned by `self`.
    pub fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.ptr.as_ptr()
    }

    /// Data of the first segment.
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod points at data_len initialised bytes inside the mbuf's
        // buffer, which lives as long as self; &self forbids mutation.
        unsafe {
            std::slice::from_raw_parts(
                sys::ironsa_pktmbuf_mtod(self.ptr.as_ptr()),
                usize::from(self.data_len()),
            )
        }
    }

    /// Mutable data of the first segment.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and &mut self gives exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                sys::ironsa_pktmbuf_mtod(self.ptr.as_ptr()),
                usize::from(self.data_len()),
            )
        }
    }

    /// Length of the first segment's data.
    pub fn data_len(&self) -> u16 {
        // SAFETY: self.ptr is a valid mbuf.
        unsafe { sys::ironsa_pktmbuf_data_len(self.ptr.as_ptr()) }
    }

    /// Total packet length over all segments.
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: self.ptr is a valid mbuf.
        unsafe { sys::ironsa_pktmbuf_pkt_len(self.ptr.as_ptr()) }
    }

    /// Number of segments.
    pub fn nb_segs(&self) -> u16 {
        // SAFETY: self.ptr is a valid mbuf.
        unsafe { sys::ironsa_pktmbuf_nb_segs(self.ptr.as_ptr()) }
    }

    /// Free bytes before the data.
    pub fn headroom(&self) -> u16 {
        // SAFETY: self.ptr is a valid mbuf.
        unsafe { sys::ironsa_pktmbuf_headroom(self.ptr.as_ptr()) }
    }

    /// Free bytes after the data of the last segment.
    pub fn tailroom(&self) -> u16 {
        // SAFETY: self.ptr is a valid mbuf.
        unsafe { sys::ironsa_pktmbuf_tailroom(self.ptr.as_ptr()) }
    }

    /// Grow the data by `len` bytes at the front; returns the new bytes
    /// (contents unspecified). Fails if the headroom is too small.
    pub fn prepend(&mut self, len: u16) -> Result<&mut [u8]> {
        // SAFETY: self.ptr is a valid mbuf we own exclusively.
        let p = unsafe { sys::ironsa_pktmbuf_prepend(self.ptr.as_ptr(), len) };
        if p.is_null() {
            return Err(Error::InvalidArgument(format!(
                "prepend {len} bytes: headroom is {}",
                self.headroom()
            )));
        }
        // SAFETY: p points at `len` bytes now part of the data, exclusively ours.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, usize::from(len)) })
    }

    /// Grow the data by `len` bytes at the end; returns the new bytes
    /// (contents unspecified). Fails if the tailroom is too small.
    pub fn append(&mut self, len: u16) -> Result<&mut [u8]> {
        // SAFETY: self.ptr is a valid mbuf we own exclusively.
        let p = unsafe { sys::ironsa_pktmbuf_append(self.ptr.as_ptr(), len) };
        if p.is_null() {
            return Err(Error::InvalidArgument(format!(
                "append {len} bytes: tailroom is {}",
                self.tailroom()
            )));
        }
        // SAFETY: p points at `len` bytes now part of the data, exclusively ours.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, usize::from(len)) })
    }

    /// Append a copy of `bytes` to the data.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<()> {
        let len =
            u16::try_from(bytes.len()).map_err(|_| Error::InvalidArgument(format!("append {} bytes", bytes.len())))?;
        self.append(len)?.copy_from_slice(bytes);
        Ok(())
    }

    /// Remove `len` bytes from the front of the data.
    pub fn adj(&mut self, len: u16) -> Result<()> {
        // SAFETY: self.ptr is a valid mbuf we own exclusively.
        let p = unsafe { sys::ironsa_pktmbuf_adj(self.ptr.as_ptr(), len) };
        if p.is_null() {
            return Err(Error::InvalidArgument(format!(
                "adj {len} bytes: data is {} bytes",
                self.data_len()
            )));
        }
        Ok(())
    }

    /// Remove `len` bytes from the end of the data.
    pub fn trim(&mut self, len: u16) -> Result<()> {
        // SAFETY: self.ptr is a valid mbuf we own exclusively.
        let ret = unsafe { sys::ironsa_pktmbuf_trim(self.ptr.as_ptr(), len) };
        if ret != 0 {
            return Err(Error::InvalidArgument(format!(
                "trim {len} bytes: data is {} bytes",
                self.data_len()
            )));
        }
        Ok(())
    }

    /// Offload flags (`RTE_MBUF_F_*`).
    pub fn ol_flags(&self) -> u64 {
        // SAFETY: self.ptr is a valid mbuf.
        unsafe { sys::ironsa_pktmbuf_ol_flags(self.ptr.as_ptr()) }
    }

    /// Set the offload flags (`RTE_MBUF_F_TX_*` requests for transmit).
    pub fn set_ol_flags(&mut self, flags: u64) {
        // SAFETY: self.ptr is a valid mbuf we own exclusively.
        unsafe { sys::ironsa_pktmbuf_set_ol_flags(self.ptr.as_ptr(), flags) }
    }

    /// Input port of a received packet.
    pub fn port(&self) -> u16 {
        // SAFETY: self.ptr is a valid mbuf.
        unsafe { sys::ironsa_pktmbuf_port(self.ptr.as_ptr()) }
    }

    /// RSS hash computed by the NIC, if the `RX_RSS_HASH` flag is set.
    pub fn rss_hash(&self) -> Option<u32> {
        // SAFETY: self.ptr is a valid mbuf; the constant is an immutable global.
        let flag = unsafe { sys::ironsa_mbuf_f_rx_rss_hash };
        // SAFETY: self.ptr is a valid mbuf.
        (self.ol_flags() & flag != 0).then(|| unsafe { sys::ironsa_pktmbuf_rss_hash(self.ptr.as_ptr()) })
    }
}

/// The first segment's header fields, read and updated in place as DPDK's
/// own `static inline` helpers do, for code that edits a packet many times
/// (ESP) and cannot afford a call per access. Every update keeps the data
/// inside the buffer (`data_off + data_len <= buf_len`); chained mbufs need
/// the checked calls above, which know about the other segments.
impl Mbuf {
    /// The header, read-only.
    #[inline(always)]
    pub fn header(&self) -> &sys::rte_mbuf {
        // SAFETY: an Mbuf owns a valid, allocated rte_mbuf for its lifetime;
        // the shared reference lives no longer than `&self`.
        unsafe { self.ptr.as_ref() }
    }

    /// The header, mutable (private: callers must keep the data in the buffer).
    #[inline(always)]
    fn header_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: as in `header`; `&mut self` is exclusive ownership of the mbuf.
        unsafe { self.ptr.as_mut() }
    }

    /// Address of the first segment's data (for cache hints: reading
    /// through it needs [`Mbuf::first_data`]).
    #[inline(always)]
    pub fn first_data_ptr(&self) -> *const u8 {
        data_start(self.header())
    }

    /// The first segment's data (as [`Mbuf::data`], from the header fields).
    #[inline(always)]
    pub fn first_data(&self) -> &[u8] {
        let h = self.header();
        // SAFETY: [data_off, data_off + data_len) is initialised packet data
        // inside the buffer, which lives as long as self; &self forbids writes.
        unsafe { std::slice::from_raw_parts(data_start(h), usize::from(h.data_len)) }
    }

    /// The first segment's data, mutable.
    #[inline(always)]
    pub fn first_data_mut(&mut self) -> &mut [u8] {
        let h = self.header_mut();
        // SAFETY: as in `first_data`; &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(data_start(h), usize::from(h.data_len)) }
    }

    /// Narrows a one-segment mbuf's data to its bytes `off..end` in one
    /// update of the header; `false` (nothing changed) unless the mbuf has
    /// one segment and `off <= end <= data_len`.
    #[inline(always)]
    pub fn narrow_single(&mut self, off: usize, end: usize) -> bool {
        let h = self.header_mut();
        if off > end || end > usize::from(h.data_len) || h.nb_segs != 1 {
            return false;
        }
        // off <= end <= data_len <= u16::MAX: every field stays in range.
        h.data_off += off as u16;
        h.data_len = (end - off) as u16;
        h.pkt_len = (end - off) as u32;
        true
    }

    /// Grows the data by `n` bytes at the front (into the headroom) and
    /// returns them (contents unspecified); `Err(headroom)` when it is
    /// smaller than `n`.
    #[inline(always)]
    pub fn grow_front(&mut self, n: usize) -> std::result::Result<&mut [u8], usize> {
        let h = self.header_mut();
        let have = usize::from(h.data_off);
        if n > have {
            return Err(have);
        }
        // n <= data_off <= u16::MAX, and data_len + n <= buf_len <= u16::MAX.
        h.data_off -= n as u16;
        h.data_len += n as u16;
        h.pkt_len += n as u32;
        // SAFETY: the n bytes now at the front are inside the buffer and ours.
        Ok(unsafe { std::slice::from_raw_parts_mut(data_start(h), n) })
    }

    /// Grows the first segment's data by `n` bytes at its end (into its
    /// tailroom) and returns them; `Err(tailroom)` when it is smaller than
    /// `n`. Meant for one-segment mbufs: in a chain the bytes would land
    /// before the next segment's (use [`Mbuf::append`]).
    #[inline(always)]
    pub fn grow_back_first(&mut self, n: usize) -> std::result::Result<&mut [u8], usize> {
        let h = self.header_mut();
        let have = usize::from(h.buf_len).saturating_sub(usize::from(h.data_off) + usize::from(h.data_len));
        if n > have {
            return Err(have);
        }
        let old = usize::from(h.data_len);
        // data_off + data_len + n <= buf_len <= u16::MAX.
        h.data_len += n as u16;
        h.pkt_len += n as u32;
        // SAFETY: [old, old + n) after the data start lies within buf_len
        // (checked against the tailroom) and is exclusively ours.
        Ok(unsafe { std::slice::from_raw_parts_mut(data_start(h).add(old), n) })
    }

    /// Drops `n` bytes from the front of the first segment's data; `false`
    /// (nothing changed) when it is shorter.
    #[inline(always)]
    pub fn shrink_front(&mut self, n: usize) -> bool {
        let h = self.header_mut();
        if n > usize::from(h.data_len) {
            return false;
        }
        // n <= data_len, so every field stays in range.
        h.data_off += n as u16;
        h.data_len -= n as u16;
        h.pkt_len -= n as u32;
        true
    }

    /// Drops `n` bytes from the end of the first segment's data; `false`
    /// (nothing changed) when it is shorter. Meant for one-segment mbufs
    /// (use [`Mbuf::trim`] on a chain).
    #[inline(always)]
    pub fn shrink_back_first(&mut self, n: usize) -> bool {
        let h = self.header_mut();
        if n > usize::from(h.data_len) {
            return false;
        }
        h.data_len -= n as u16;
        h.pkt_len -= n as u32;
        true
    }
}

/// Start of an mbuf's data: `buf_addr + data_off` (DPDK's `rte_pktmbuf_mtod`).
#[inline(always)]
fn data_start(h: &sys::rte_mbuf) -> *mut u8 {
    // data_off <= buf_len: the result stays inside the buffer.
    h.buf_addr.cast::<u8>().wrapping_add(usize::from(h.data_off))
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (and its chained segments); it is not used after.
        unsafe { sys::ironsa_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

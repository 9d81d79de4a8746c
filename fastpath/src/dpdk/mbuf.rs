//! [`PacketBuffer`] on DPDK mbufs: the ESP code edits mbuf data in place,
//! using the mbuf's headroom for headers and its tailroom for trailers.
//!
//! The packet is the first segment's data (the receive path drops chained
//! mbufs before ESP). The accessors read and update the `rte_mbuf` fields
//! directly (as DPDK's own `static inline` helpers do) instead of calling
//! the C shim per access: ESP touches the buffer a dozen times per packet.
//! Chained mbufs, which never reach ESP, go through the shim's checked calls.

use crate::buf::{BufError, PacketBuffer};
use ffi::Mbuf;
use ffi::sys::rte_mbuf;

/// The mbuf's header.
#[inline(always)]
fn hdr(m: &Mbuf) -> &rte_mbuf {
    // SAFETY: an Mbuf owns a valid, allocated rte_mbuf for its lifetime; the
    // shared reference lives no longer than `&m`.
    unsafe { &*m.as_ptr() }
}

/// The mbuf's header, mutable.
#[inline(always)]
fn hdr_mut(m: &mut Mbuf) -> &mut rte_mbuf {
    // SAFETY: as in `hdr`; `&mut Mbuf` is exclusive ownership of the mbuf.
    unsafe { &mut *m.as_ptr() }
}

/// Number of segments (read from the header).
#[inline(always)]
pub(crate) fn segments(m: &Mbuf) -> u16 {
    hdr(m).nb_segs
}

/// Input port (read from the header).
#[inline(always)]
pub(crate) fn input_port(m: &Mbuf) -> u16 {
    hdr(m).port
}

/// Narrows a single-segment mbuf's data to its bytes `off..end` (headers in
/// front and Ethernet padding behind dropped) in one update of the header
/// fields; `false` (nothing changed) unless `off <= end <= len`.
#[inline(always)]
pub(crate) fn narrow(m: &mut Mbuf, off: usize, end: usize) -> bool {
    let h = hdr_mut(m);
    if off > end || end > usize::from(h.data_len) || h.nb_segs != 1 {
        return false;
    }
    // off <= end <= data_len <= u16::MAX: every field stays in range.
    h.data_off += off as u16;
    h.data_len = (end - off) as u16;
    h.pkt_len = (end - off) as u32;
    true
}

/// Hints the mbuf's header (its first cache line: buffer address, data
/// offset and length, segments) into the cache.
#[inline(always)]
pub(crate) fn prefetch_header(m: &Mbuf) {
    crate::prefetch::prefetch_line(m.as_ptr() as *const u8);
}

/// Hints the first 64 bytes of the mbuf's data (the frame's headers up to
/// the ESP IV) into the cache: one line, or two when the frame does not
/// start on a line. Reads the mbuf header, so [`prefetch_header`] it first.
#[inline(always)]
pub(crate) fn prefetch_data(m: &Mbuf) {
    let p = data_ptr(hdr(m));
    crate::prefetch::prefetch_line(p);
    crate::prefetch::prefetch_line(p.wrapping_add(63));
}

/// Start of the data and its length.
#[inline(always)]
fn data_ptr(h: &rte_mbuf) -> *mut u8 {
    // SAFETY: data_off <= buf_len, so the result stays inside the buffer.
    unsafe { h.buf_addr.cast::<u8>().add(usize::from(h.data_off)) }
}

impl PacketBuffer for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let h = hdr(self);
        // SAFETY: [data_off, data_off + data_len) is initialised packet data
        // inside the buffer, which lives as long as self; &self forbids writes.
        unsafe { std::slice::from_raw_parts(data_ptr(h), usize::from(h.data_len)) }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let h = hdr_mut(self);
        // SAFETY: as in `data`; &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(data_ptr(h), usize::from(h.data_len)) }
    }

    #[inline]
    fn headroom(&self) -> usize {
        usize::from(hdr(self).data_off)
    }

    #[inline]
    fn tailroom(&self) -> usize {
        if segments(self) != 1 {
            return usize::from(Mbuf::tailroom(self));
        }
        let h = hdr(self);
        usize::from(h.buf_len).saturating_sub(usize::from(h.data_off) + usize::from(h.data_len))
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        let have = PacketBuffer::headroom(self);
        if n > have {
            return Err(BufError::NoHeadroom { need: n, have });
        }
        let h = hdr_mut(self);
        // n <= data_off <= u16::MAX, and data_len + n <= buf_len <= u16::MAX.
        h.data_off -= n as u16;
        h.data_len += n as u16;
        h.pkt_len += n as u32;
        // SAFETY: the n bytes now at the front are inside the buffer and ours.
        Ok(unsafe { std::slice::from_raw_parts_mut(data_ptr(h), n) })
    }

    #[inline]
    fn append(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        if segments(self) != 1 {
            let have = PacketBuffer::tailroom(self);
            if n > have {
                return Err(BufError::NoTailroom { need: n, have });
            }
            // The last segment grows: leave it to DPDK's checked helper.
            return Mbuf::append(self, n as u16).map_err(|_| BufError::NoTailroom { need: n, have });
        }
        // One segment: the tailroom from the header fields (as in `tailroom`),
        // without testing the segment count again.
        let h = hdr_mut(self);
        let have = usize::from(h.buf_len).saturating_sub(usize::from(h.data_off) + usize::from(h.data_len));
        if n > have {
            return Err(BufError::NoTailroom { need: n, have });
        }
        let old = usize::from(h.data_len);
        h.data_len += n as u16;
        h.pkt_len += n as u32;
        // SAFETY: [old, old + n) after the data start lies within buf_len
        // (checked against the tailroom) and is exclusively ours.
        Ok(unsafe { std::slice::from_raw_parts_mut(data_ptr(h).add(old), n) })
    }

    #[inline]
    fn trim_front(&mut self, n: usize) -> Result<(), BufError> {
        let have = PacketBuffer::len(self);
        if n > have {
            return Err(BufError::TooShort { need: n, have });
        }
        let h = hdr_mut(self);
        // n <= data_len, so every field stays in range.
        h.data_off += n as u16;
        h.data_len -= n as u16;
        h.pkt_len -= n as u32;
        Ok(())
    }

    #[inline]
    fn trim_back(&mut self, n: usize) -> Result<(), BufError> {
        let have = PacketBuffer::len(self);
        if n > have {
            return Err(BufError::TooShort { need: n, have });
        }
        if segments(self) != 1 {
            return self.trim(n as u16).map_err(|_| BufError::TooShort { need: n, have });
        }
        let h = hdr_mut(self);
        h.data_len -= n as u16;
        h.pkt_len -= n as u32;
        Ok(())
    }

    #[inline]
    fn len(&self) -> usize {
        usize::from(hdr(self).data_len)
    }

    /// One update of the header for a one-segment mbuf.
    #[inline]
    fn keep_range(&mut self, front: usize, keep: usize) -> Result<(), BufError> {
        let have = PacketBuffer::len(self);
        if segments(self) == 1
            && let Some(back) = have.checked_sub(front).and_then(|rest| rest.checked_sub(keep))
        {
            let h = hdr_mut(self);
            // front + keep + back == data_len: every field stays in range.
            h.data_off += front as u16;
            h.data_len = keep as u16;
            h.pkt_len -= (front + back) as u32;
            return Ok(());
        }
        crate::buf::keep_range_by_trims(self, front, keep)
    }
}

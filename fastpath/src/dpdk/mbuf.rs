//! [`PacketBuffer`] on DPDK mbufs: the ESP code edits mbuf data in place,
//! using the mbuf's headroom for headers and its tailroom for trailers.
//!
//! The packet is the first segment's data (the receive path drops chained
//! mbufs before ESP). The accessors read and update the `rte_mbuf` fields
//! in place through `ffi::Mbuf`'s header methods (as DPDK's own `static
//! inline` helpers do) instead of calling the C shim per access: ESP touches
//! the buffer a dozen times per packet.
//! Chained mbufs, which never reach ESP, go through the shim's checked calls.

use crate::buf::{BufError, PacketBuffer};
use ffi::Mbuf;

/// Number of segments (read from the header).
#[inline(always)]
pub(crate) fn segments(m: &Mbuf) -> u16 {
    m.header().nb_segs
}

/// Input port (read from the header).
#[inline(always)]
pub(crate) fn input_port(m: &Mbuf) -> u16 {
    m.header().port
}

/// Narrows a single-segment mbuf's data to its bytes `off..end` (headers in
/// front and Ethernet padding behind dropped) in one update of the header
/// fields; `false` (nothing changed) unless `off <= end <= len`.
#[inline(always)]
pub(crate) fn narrow(m: &mut Mbuf, off: usize, end: usize) -> bool {
    m.narrow_single(off, end)
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
    let p = m.first_data_ptr();
    crate::prefetch::prefetch_line(p);
    crate::prefetch::prefetch_line(p.wrapping_add(63));
}

impl PacketBuffer for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        self.first_data()
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self.first_data_mut()
    }

    #[inline]
    fn headroom(&self) -> usize {
        usize::from(self.header().data_off)
    }

    #[inline]
    fn tailroom(&self) -> usize {
        if segments(self) != 1 {
            return usize::from(Mbuf::tailroom(self));
        }
        let h = self.header();
        usize::from(h.buf_len).saturating_sub(usize::from(h.data_off) + usize::from(h.data_len))
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        self.grow_front(n)
            .map_err(|have| BufError::NoHeadroom { need: n, have })
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
        // One segment: the tailroom from the header fields, without testing
        // the segment count again.
        self.grow_back_first(n)
            .map_err(|have| BufError::NoTailroom { need: n, have })
    }

    #[inline]
    fn trim_front(&mut self, n: usize) -> Result<(), BufError> {
        if self.shrink_front(n) {
            Ok(())
        } else {
            Err(BufError::TooShort {
                need: n,
                have: PacketBuffer::len(self),
            })
        }
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
        self.shrink_back_first(n);
        Ok(())
    }

    #[inline]
    fn len(&self) -> usize {
        usize::from(self.header().data_len)
    }

    /// One update of the header for a one-segment mbuf.
    #[inline]
    fn keep_range(&mut self, front: usize, keep: usize) -> Result<(), BufError> {
        if let Some(end) = front.checked_add(keep)
            && self.narrow_single(front, end)
        {
            return Ok(());
        }
        crate::buf::keep_range_by_trims(self, front, keep)
    }
}

//! [`PacketBuffer`] on DPDK mbufs: the ESP code edits mbuf data in place,
//! using the mbuf's headroom for headers and its tailroom for trailers.
//!
//! Only single-segment mbufs are processed (the receive path drops chained
//! ones before they reach ESP): [`ffi::Mbuf::data`] covers the first segment.

use crate::buf::{BufError, PacketBuffer};
use ffi::Mbuf;

/// Converts a byte count to the `u16` mbuf offsets use, or reports `err`.
fn to_u16(n: usize, err: BufError) -> Result<u16, BufError> {
    u16::try_from(n).map_err(|_| err)
}

impl PacketBuffer for Mbuf {
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }

    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }

    fn headroom(&self) -> usize {
        usize::from(Mbuf::headroom(self))
    }

    fn tailroom(&self) -> usize {
        usize::from(Mbuf::tailroom(self))
    }

    fn prepend(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        let have = PacketBuffer::headroom(self);
        if n > have {
            return Err(BufError::NoHeadroom { need: n, have });
        }
        let len = to_u16(n, BufError::NoHeadroom { need: n, have })?;
        Mbuf::prepend(self, len).map_err(|_| BufError::NoHeadroom { need: n, have })
    }

    fn append(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        let have = PacketBuffer::tailroom(self);
        if n > have {
            return Err(BufError::NoTailroom { need: n, have });
        }
        let len = to_u16(n, BufError::NoTailroom { need: n, have })?;
        Mbuf::append(self, len).map_err(|_| BufError::NoTailroom { need: n, have })
    }

    fn trim_front(&mut self, n: usize) -> Result<(), BufError> {
        let have = PacketBuffer::len(self);
        if n > have {
            return Err(BufError::TooShort { need: n, have });
        }
        let len = to_u16(n, BufError::TooShort { need: n, have })?;
        self.adj(len).map_err(|_| BufError::TooShort { need: n, have })
    }

    fn trim_back(&mut self, n: usize) -> Result<(), BufError> {
        let have = PacketBuffer::len(self);
        if n > have {
            return Err(BufError::TooShort { need: n, have });
        }
        let len = to_u16(n, BufError::TooShort { need: n, have })?;
        self.trim(len).map_err(|_| BufError::TooShort { need: n, have })
    }

    fn len(&self) -> usize {
        usize::from(self.data_len())
    }
}

//! Packet buffers: the in-place view the ESP code works on.
//!
//! A packet occupies `[head, tail)` inside a fixed storage area; the space in
//! front of it (headroom) and behind it (tailroom) lets headers and trailers be
//! added without copying the payload. [`PacketBuf`] is the plain heap-backed
//! implementation; a DPDK mbuf implements the same trait.

use thiserror::Error;

/// Default headroom of a [`PacketBuf`]: room for outer IPv6 + UDP + ESP + IV.
pub const DEFAULT_HEADROOM: usize = 128;
/// Default total capacity of a [`PacketBuf`] (headroom included).
pub const DEFAULT_CAPACITY: usize = 2048;

/// A buffer operation would leave its storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BufError {
    /// Not enough headroom for a prepend.
    #[error("not enough headroom: need {need}, have {have}")]
    NoHeadroom {
        /// Bytes requested.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Not enough tailroom for an append.
    #[error("not enough tailroom: need {need}, have {have}")]
    NoTailroom {
        /// Bytes requested.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Trim of more bytes than the packet holds.
    #[error("cannot trim {need} bytes from a {have}-byte packet")]
    TooShort {
        /// Bytes requested.
        need: usize,
        /// Bytes in the packet.
        have: usize,
    },
}

/// A packet in caller-owned storage with headroom and tailroom, edited in place.
pub trait PacketBuffer {
    /// The packet bytes.
    fn data(&self) -> &[u8];
    /// The packet bytes, mutable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Bytes available in front of the packet.
    fn headroom(&self) -> usize;
    /// Bytes available behind the packet.
    fn tailroom(&self) -> usize;
    /// Grows the packet by `n` bytes at the front and returns them.
    fn prepend(&mut self, n: usize) -> Result<&mut [u8], BufError>;
    /// Grows the packet by `n` bytes at the back and returns them.
    fn append(&mut self, n: usize) -> Result<&mut [u8], BufError>;
    /// Removes `n` bytes from the front.
    fn trim_front(&mut self, n: usize) -> Result<(), BufError>;
    /// Removes `n` bytes from the back.
    fn trim_back(&mut self, n: usize) -> Result<(), BufError>;

    /// Keeps the `keep` bytes that start `front` bytes in and removes the
    /// rest: `trim_back` of what follows them, then `trim_front(front)`,
    /// with the same results ([`keep_range_by_trims`]); a buffer may do it
    /// in one update.
    #[inline]
    fn keep_range(&mut self, front: usize, keep: usize) -> Result<(), BufError>
    where
        Self: Sized,
    {
        keep_range_by_trims(self, front, keep)
    }

    /// Packet length in bytes.
    #[inline]
    fn len(&self) -> usize {
        self.data().len()
    }
    /// True when the packet holds no bytes.
    #[inline]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`PacketBuffer::keep_range`] as two trims (back, then front).
#[inline]
pub fn keep_range_by_trims<B: PacketBuffer>(buf: &mut B, front: usize, keep: usize) -> Result<(), BufError> {
    let have = buf.len();
    let Some(back) = have.checked_sub(front).and_then(|rest| rest.checked_sub(keep)) else {
        return Err(BufError::TooShort {
            need: front.saturating_add(keep),
            have,
        });
    };
    buf.trim_back(back)?;
    buf.trim_front(front)
}

/// A heap-allocated packet buffer with fixed headroom and capacity.
///
/// Allocate once and reuse: [`PacketBuf::reset`] rewinds it for the next packet.
#[derive(Clone)]
pub struct PacketBuf {
    storage: Box<[u8]>,
    head: usize,
    tail: usize,
    base_headroom: usize,
}

impl PacketBuf {
    /// A buffer of `capacity` bytes whose packets start after `headroom` bytes.
    ///
    /// `headroom` is clamped to `capacity`.
    pub fn new(headroom: usize, capacity: usize) -> Self {
        let headroom = headroom.min(capacity);
        Self {
            storage: vec![0u8; capacity].into_boxed_slice(),
            head: headroom,
            tail: headroom,
            base_headroom: headroom,
        }
    }

    /// A buffer with [`DEFAULT_HEADROOM`] and [`DEFAULT_CAPACITY`].
    pub fn with_defaults() -> Self {
        Self::new(DEFAULT_HEADROOM, DEFAULT_CAPACITY)
    }

    /// A default-sized buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BufError> {
        let mut buf = Self::new(
            DEFAULT_HEADROOM,
            DEFAULT_CAPACITY.max(DEFAULT_HEADROOM + bytes.len() + 256),
        );
        buf.set_data(bytes)?;
        Ok(buf)
    }

    /// Empties the packet and restores the configured headroom.
    #[inline]
    pub fn reset(&mut self) {
        self.head = self.base_headroom;
        self.tail = self.base_headroom;
    }

    /// Replaces the packet by a copy of `bytes` placed after the configured headroom.
    #[inline]
    pub fn set_data(&mut self, bytes: &[u8]) -> Result<(), BufError> {
        self.reset();
        self.append(bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    /// Sets the packet length after the caller wrote `len` bytes at the
    /// configured headroom through [`PacketBuf::receive_area`].
    #[inline]
    pub fn set_received_len(&mut self, len: usize) -> Result<(), BufError> {
        self.reset();
        self.append(len).map(|_| ())
    }

    /// The storage from the configured headroom to the end, for receiving into.
    #[inline]
    pub fn receive_area(&mut self) -> &mut [u8] {
        &mut self.storage[self.base_headroom..]
    }
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .field("tailroom", &self.tailroom())
            .finish()
    }
}

impl PacketBuffer for PacketBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.storage[self.head..self.tail]
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.head..self.tail]
    }

    #[inline]
    fn headroom(&self) -> usize {
        self.head
    }

    #[inline]
    fn tailroom(&self) -> usize {
        self.storage.len() - self.tail
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        if n > self.head {
            return Err(BufError::NoHeadroom {
                need: n,
                have: self.head,
            });
        }
        self.head -= n;
        Ok(&mut self.storage[self.head..self.head + n])
    }

    #[inline]
    fn append(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        let have = self.tailroom();
        if n > have {
            return Err(BufError::NoTailroom { need: n, have });
        }
        let start = self.tail;
        self.tail += n;
        Ok(&mut self.storage[start..self.tail])
    }

    #[inline]
    fn trim_front(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.len() {
            return Err(BufError::TooShort {
                need: n,
                have: self.len(),
            });
        }
        self.head += n;
        Ok(())
    }

    #[inline]
    fn trim_back(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.len() {
            return Err(BufError::TooShort {
                need: n,
                have: self.len(),
            });
        }
        self.tail -= n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_append_trim_in_place() {
        let mut b = PacketBuf::new(16, 64);
        b.set_data(b"payload").unwrap();
        assert_eq!(b.headroom(), 16);
        assert_eq!(b.tailroom(), 64 - 16 - 7);
        b.prepend(3).unwrap().copy_from_slice(b"hdr");
        b.append(4).unwrap().copy_from_slice(b"tail");
        assert_eq!(b.data(), b"hdrpayloadtail");
        b.trim_front(3).unwrap();
        b.trim_back(4).unwrap();
        assert_eq!(b.data(), b"payload");
    }

    #[test]
    fn keep_range_is_the_two_trims() {
        for front in 0..6 {
            for keep in 0..7 {
                let mut a = PacketBuf::from_slice(b"abcde").unwrap();
                let mut b = a.clone();
                let r = a.keep_range(front, keep);
                let want = if front + keep <= 5 {
                    b.trim_back(5 - front - keep).and_then(|()| b.trim_front(front))
                } else {
                    Err(BufError::TooShort {
                        need: front + keep,
                        have: 5,
                    })
                };
                assert_eq!(r, want, "{front} {keep}");
                assert_eq!(a.data(), b.data());
                assert_eq!(a.headroom(), b.headroom());
            }
        }
    }

    #[test]
    fn limits_are_errors_not_panics() {
        let mut b = PacketBuf::new(4, 16);
        b.set_data(b"abcd").unwrap();
        assert_eq!(b.prepend(5).unwrap_err(), BufError::NoHeadroom { need: 5, have: 4 });
        assert_eq!(b.append(9).unwrap_err(), BufError::NoTailroom { need: 9, have: 8 });
        assert!(b.trim_front(5).is_err());
        assert!(b.trim_back(5).is_err());
        assert!(b.set_data(&[0u8; 13]).is_err());
        assert_eq!(PacketBuf::new(100, 10).headroom(), 10);
    }
}

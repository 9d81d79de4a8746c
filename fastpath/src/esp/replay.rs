//! Anti-replay window (RFC 4303 §3.4.3) with extended sequence numbers
//! (RFC 4303 Appendix A2): a bitmap of the last `size` sequence numbers.
//!
//! Use: [`ReplayWindow::check`] before decryption (cheap drop of replays and
//! inference of the high 32 bits), [`ReplayWindow::accept`] only after the ICV
//! verified, so forged packets never move the window.

use super::EspError;

/// Default window size in packets.
pub const DEFAULT_WINDOW: u32 = 1024;
/// Largest supported window size in packets.
pub const MAX_WINDOW: u32 = 65536;

/// Sliding replay window for one inbound SA.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest accepted full (64-bit) sequence number; 0 before the first packet.
    top: u64,
    /// Window size in bits minus one; the size is a power of two, so a
    /// sequence number's slot is a mask away (no division per packet).
    mask: u64,
    esn: bool,
    /// Bit `seq & mask` tells whether `seq` (within the window) was seen.
    bits: Box<[u64]>,
}

impl ReplayWindow {
    /// A window of `size` packets (rounded up to a power of two, clamped to
    /// 64..=[`MAX_WINDOW`]), with or without extended sequence numbers.
    pub fn new(size: u32, esn: bool) -> Self {
        let size = size.clamp(64, MAX_WINDOW).next_power_of_two();
        Self {
            top: 0,
            mask: u64::from(size) - 1,
            esn,
            bits: vec![0u64; size as usize / 64].into_boxed_slice(),
        }
    }

    /// Address and length of the bitmap (fixed for the window's life), for
    /// cache prefetch hints only.
    pub fn bitmap_span(&self) -> (*const u8, usize) {
        (self.bits.as_ptr() as *const u8, self.bits.len() * 8)
    }

    /// Window size in packets.
    pub fn size(&self) -> u32 {
        (self.mask + 1) as u32
    }

    /// Highest accepted full sequence number.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Continues a window whose earlier state is lost (an SA taken over
    /// from another process): every sequence number up to `top` counts as
    /// seen, so packets from before that point are refused as replays and
    /// the peer's next ones (above `top`) are taken. With extended sequence
    /// numbers `top` also places the window in the right 2^32 subspace.
    pub fn resume_at(&mut self, top: u64) {
        self.top = top;
        self.bits.fill(u64::MAX);
    }

    /// Infers the full sequence number of a received `seq_lo` and checks it
    /// is neither left of the window nor already seen. Does not change state.
    #[inline]
    pub fn check(&self, seq_lo: u32) -> Result<u64, EspError> {
        let seq = self.infer(seq_lo).ok_or(EspError::Replay)?;
        if seq == 0 {
            return Err(EspError::Replay);
        }
        if seq > self.top {
            return Ok(seq);
        }
        if self.top - seq > self.mask {
            return Err(EspError::Replay);
        }
        if self.is_set(seq) {
            return Err(EspError::Replay);
        }
        Ok(seq)
    }

    /// Records an authenticated packet's full sequence number `seq` (from
    /// [`ReplayWindow::check`]), advancing the window if it is the new top.
    #[inline]
    pub fn accept(&mut self, seq: u64) -> Result<(), EspError> {
        // The usual case, the next in order: no slot skipped, the window
        // moves by one (what `accept_other` does for it, inline).
        if seq != 0 && seq.wrapping_sub(self.top) == 1 {
            self.top = seq;
            self.set(seq);
            return Ok(());
        }
        self.accept_other(seq)
    }

    /// [`ReplayWindow::accept`] for every other sequence number.
    #[inline(never)]
    fn accept_other(&mut self, seq: u64) -> Result<(), EspError> {
        if seq == 0 {
            return Err(EspError::Replay);
        }
        if seq > self.top {
            let diff = seq - self.top;
            if diff > self.mask {
                self.bits.fill(0);
            } else if diff > 1 {
                // Clear slots of the sequence numbers skipped over (the
                // next in order, the usual case, skips none; its own slot
                // is set below whatever it held).
                let mut s = self.top + 1;
                while s < seq {
                    let idx = (s & self.mask) as usize;
                    if idx % 64 == 0 && seq - s >= 64 {
                        self.bits[idx / 64] = 0;
                        s += 64;
                    } else {
                        self.clear(s);
                        s += 1;
                    }
                }
            }
            self.top = seq;
        } else if self.top - seq > self.mask || self.is_set(seq) {
            return Err(EspError::Replay);
        }
        self.set(seq);
        Ok(())
    }

    /// Full sequence number of `seq_lo` (Appendix A2.2), `None` if it would
    /// lie before sequence number 0.
    #[inline]
    fn infer(&self, seq_lo: u32) -> Option<u64> {
        if !self.esn {
            return Some(u64::from(seq_lo));
        }
        let tl = self.top as u32;
        let th = (self.top >> 32) as u32;
        let w = self.size();
        let bottom = tl.wrapping_sub(w - 1);
        let sh = if tl >= w - 1 {
            // Window lies within one 2^32 subspace.
            if seq_lo >= bottom { th } else { th.checked_add(1)? }
        } else if seq_lo >= bottom {
            // Window spans two subspaces; seq_lo is in the lower one.
            th.checked_sub(1)?
        } else {
            th
        };
        Some((u64::from(sh) << 32) | u64::from(seq_lo))
    }

    #[inline]
    fn is_set(&self, seq: u64) -> bool {
        let idx = (seq & self.mask) as usize;
        self.bits[idx / 64] & (1 << (idx % 64)) != 0
    }

    #[inline]
    fn set(&mut self, seq: u64) {
        let idx = (seq & self.mask) as usize;
        self.bits[idx / 64] |= 1 << (idx % 64);
    }

    #[inline]
    fn clear(&mut self, seq: u64) {
        let idx = (seq & self.mask) as usize;
        self.bits[idx / 64] &= !(1 << (idx % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(w: &mut ReplayWindow, lo: u32) -> Result<u64, EspError> {
        let s = w.check(lo)?;
        w.accept(s)?;
        Ok(s)
    }

    #[test]
    fn sizes_round_and_clamp() {
        assert_eq!(ReplayWindow::new(0, false).size(), 64);
        assert_eq!(ReplayWindow::new(100, false).size(), 128);
        assert_eq!(ReplayWindow::new(3000, false).size(), 4096);
        assert_eq!(ReplayWindow::new(8192, false).size(), 8192);
        assert_eq!(ReplayWindow::new(u32::MAX, false).size(), MAX_WINDOW);
    }

    #[test]
    fn a_resumed_window_refuses_what_came_before_and_takes_what_follows() {
        let mut w = ReplayWindow::new(1024, false);
        w.resume_at(5000);
        assert_eq!(recv(&mut w, 5000), Err(EspError::Replay));
        assert_eq!(recv(&mut w, 4990), Err(EspError::Replay));
        assert_eq!(recv(&mut w, 1), Err(EspError::Replay));
        assert_eq!(recv(&mut w, 5003), Ok(5003));
        // Skipped over, not seen: still taken once.
        assert_eq!(recv(&mut w, 5001), Ok(5001));
        assert_eq!(recv(&mut w, 5001), Err(EspError::Replay));
        // With ESN the top places a low 32-bit number in its subspace.
        let mut e = ReplayWindow::new(1024, true);
        e.resume_at((3u64 << 32) | 10);
        assert_eq!(recv(&mut e, 11), Ok((3u64 << 32) | 11));
        assert_eq!(recv(&mut e, 9), Err(EspError::Replay));
    }

    #[test]
    fn in_order_duplicates_and_zero() {
        let mut w = ReplayWindow::new(1024, false);
        assert_eq!(w.check(0), Err(EspError::Replay));
        for s in 1..=3000 {
            assert_eq!(recv(&mut w, s), Ok(u64::from(s)));
        }
        assert_eq!(recv(&mut w, 3000), Err(EspError::Replay));
        assert_eq!(recv(&mut w, 2500), Err(EspError::Replay));
    }

    #[test]
    fn reorder_at_window_edges() {
        for size in [64u32, 1024, 8192] {
            let mut w = ReplayWindow::new(size, false);
            let top = 100_000u32;
            recv(&mut w, top).unwrap();
            // Oldest in-window slot is top - size + 1; one further is too old.
            assert_eq!(w.check(top - size), Err(EspError::Replay));
            assert!(recv(&mut w, top - size + 1).is_ok());
            assert_eq!(recv(&mut w, top - size + 1), Err(EspError::Replay));
            assert!(recv(&mut w, top - 1).is_ok());
            // Advance by exactly size: everything old is gone, slots reused cleanly.
            recv(&mut w, top + size).unwrap();
            assert_eq!(w.check(top), Err(EspError::Replay));
            assert!(recv(&mut w, top + 1).is_ok());
            assert!(recv(&mut w, top + size - 1).is_ok());
            // Slots of skipped numbers were cleared, so they are accepted once.
            for s in top + 2..top + size - 1 {
                assert!(recv(&mut w, s).is_ok(), "size {size} seq {s}");
            }
            for s in top + 1..=top + size {
                assert_eq!(w.check(s), Err(EspError::Replay));
            }
        }
    }

    #[test]
    fn check_does_not_move_window() {
        let mut w = ReplayWindow::new(64, false);
        recv(&mut w, 10).unwrap();
        assert_eq!(w.check(5000), Ok(5000));
        assert_eq!(w.top(), 10);
        assert!(recv(&mut w, 9).is_ok());
    }

    #[test]
    fn esn_wraps_across_2_pow_32() {
        let mut w = ReplayWindow::new(128, true);
        let base = u64::from(u32::MAX) - 50;
        recv(&mut w, 1000).unwrap();
        for s in base..base + 100 {
            assert_eq!(recv(&mut w, s as u32), Ok(s));
        }
        assert_eq!(w.top(), base + 99);
        assert!(w.top() > u64::from(u32::MAX));
        // A late packet from below the wrap is inferred in the old subspace.
        let mut w2 = ReplayWindow::new(128, true);
        recv(&mut w2, 1000).unwrap();
        recv(&mut w2, u32::MAX - 10).unwrap();
        recv(&mut w2, 5).unwrap();
        assert_eq!(w2.top(), (1u64 << 32) | 5);
        assert_eq!(recv(&mut w2, u32::MAX - 3), Ok(u64::from(u32::MAX - 3)));
        assert_eq!(recv(&mut w2, u32::MAX - 10), Err(EspError::Replay));
        // Far ahead within the same subspace stays in the subspace.
        assert_eq!(w2.check(1000), Ok((1u64 << 32) | 1000));
        // Sequence numbers before 0 do not exist.
        let w3 = ReplayWindow::new(128, true);
        assert_eq!(w3.check(u32::MAX), Err(EspError::Replay));
        assert_eq!(w3.check(7), Ok(7));
    }

    #[test]
    fn esn_second_wrap() {
        let mut w = ReplayWindow::new(64, true);
        recv(&mut w, 1).unwrap();
        // Right after the start, u32::MAX would lie before sequence 0.
        assert_eq!(w.check(u32::MAX), Err(EspError::Replay));
        recv(&mut w, 1000).unwrap();
        recv(&mut w, u32::MAX).unwrap();
        recv(&mut w, 10).unwrap();
        assert_eq!(w.top(), (1u64 << 32) + 10);
        // Just after a wrap, the end of the old subspace is the past (already seen).
        assert_eq!(w.check(u32::MAX), Err(EspError::Replay));
        recv(&mut w, 1000).unwrap();
        recv(&mut w, u32::MAX).unwrap();
        assert_eq!(w.top(), (2u64 << 32) - 1);
        recv(&mut w, 0).unwrap();
        assert_eq!(w.top(), 2u64 << 32);
    }
}

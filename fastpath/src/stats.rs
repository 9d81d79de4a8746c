//! Packet, byte and drop counters, per worker and per SA.
//!
//! Counters are relaxed atomics so the control plane can read them while
//! workers count; each counter has one writer in normal operation, so the
//! increments stay uncontended.

use crate::esp::EspError;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// No inbound SA with this SPI (and destination).
    NoSa = 0,
    /// No outbound policy matches the packet.
    NoPolicy,
    /// The matching policy says discard.
    PolicyDiscard,
    /// A decrypted inner packet is outside the SA's traffic selectors.
    PolicyMismatch,
    /// Replayed or too old sequence number.
    Replay,
    /// ICV / AEAD tag verification failed.
    IcvFailure,
    /// Invalid ESP padding.
    BadPadding,
    /// Truncated or inconsistent packet.
    Malformed,
    /// Too large for the path MTU or the buffer.
    Oversize,
    /// The SA's hard lifetime was reached.
    Expired,
    /// Outbound sequence numbers used up.
    SeqExhausted,
    /// Dummy (next header 59) packet.
    Dummy,
    /// Our own random generator or cipher failed.
    CryptoFailure,
}

impl DropReason {
    /// Number of drop reasons.
    pub const COUNT: usize = 13;
    /// Every reason, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::NoSa,
        DropReason::NoPolicy,
        DropReason::PolicyDiscard,
        DropReason::PolicyMismatch,
        DropReason::Replay,
        DropReason::IcvFailure,
        DropReason::BadPadding,
        DropReason::Malformed,
        DropReason::Oversize,
        DropReason::Expired,
        DropReason::SeqExhausted,
        DropReason::Dummy,
        DropReason::CryptoFailure,
    ];

    /// Stable snake_case name for metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoSa => "no_sa",
            DropReason::NoPolicy => "no_policy",
            DropReason::PolicyDiscard => "policy_discard",
            DropReason::PolicyMismatch => "policy_mismatch",
            DropReason::Replay => "replay",
            DropReason::IcvFailure => "icv_failure",
            DropReason::BadPadding => "bad_padding",
            DropReason::Malformed => "malformed",
            DropReason::Oversize => "oversize",
            DropReason::Expired => "expired",
            DropReason::SeqExhausted => "seq_exhausted",
            DropReason::Dummy => "dummy",
            DropReason::CryptoFailure => "crypto_failure",
        }
    }
}

impl From<EspError> for DropReason {
    fn from(e: EspError) -> Self {
        match e {
            EspError::Malformed(_) => DropReason::Malformed,
            EspError::Replay => DropReason::Replay,
            EspError::IcvFailure => DropReason::IcvFailure,
            EspError::BadPadding => DropReason::BadPadding,
            EspError::Oversize(_) => DropReason::Oversize,
            EspError::SeqExhausted => DropReason::SeqExhausted,
            EspError::Expired => DropReason::Expired,
            EspError::Dummy => DropReason::Dummy,
            EspError::PolicyMismatch => DropReason::PolicyMismatch,
            EspError::CryptoFailure(_) => DropReason::CryptoFailure,
        }
    }
}

/// Drop counters by reason.
type DropCounters = [AtomicU64; DropReason::COUNT];

/// Packets, bytes and drops by reason.
///
/// The drop counters (96 B) are allocated on the first drop: most SAs never
/// drop a packet, and with 100,000 tunnels they would take 19 MB.
#[derive(Default)]
pub struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Null until the first drop; then owned (freed in `Drop`).
    drops: AtomicPtr<DropCounters>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").field("snapshot", &self.snapshot()).finish()
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        let p = *self.drops.get_mut();
        if !p.is_null() {
            // SAFETY: a non-null pointer came from `Box::into_raw` in
            // `drop_counters` and is owned by these counters alone.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Packets processed successfully.
    pub packets: u64,
    /// Bytes of those packets (inner packet bytes).
    pub bytes: u64,
    /// Drops indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
}

impl CountersSnapshot {
    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

impl Counters {
    /// Counts one successful packet of `bytes` bytes.
    #[inline]
    pub fn count(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts `packets` successful packets totalling `bytes`; returns the new totals.
    #[inline]
    pub fn add(&self, packets: u64, bytes: u64) -> (u64, u64) {
        let p = self.packets.fetch_add(packets, Ordering::Relaxed) + packets;
        let b = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        (p, b)
    }

    /// Counts one drop.
    #[inline]
    pub fn drop_one(&self, r: DropReason) {
        self.drop_counters()[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The drop counters, allocated on first use.
    fn drop_counters(&self) -> &DropCounters {
        let mut p = self.drops.load(Ordering::Acquire);
        if p.is_null() {
            let fresh = Box::into_raw(Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
            p = match self
                .drops
                .compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => fresh,
                Err(current) => {
                    // SAFETY: `fresh` was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    current
                }
            };
        }
        // SAFETY: non-null, from `Box::into_raw`, freed only in `Drop` (`&mut self`).
        unsafe { &*p }
    }

    /// Packets and bytes (cheaper than a full snapshot).
    #[inline]
    pub fn totals(&self) -> (u64, u64) {
        (self.packets.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        let mut drops = [0u64; DropReason::COUNT];
        let p = self.drops.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: see `drop_counters`.
            for (d, c) in drops.iter_mut().zip(unsafe { &*p }) {
                *d = c.load(Ordering::Relaxed);
            }
        }
        CountersSnapshot {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_counters() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let c = Counters::default();
        c.drop_one(DropReason::Replay);
        c.count(100);
        let s = c.snapshot();
        assert_eq!(s.dropped(DropReason::Replay), 1);
        assert_eq!((s.packets, s.bytes, s.total_drops()), (1, 100, 1));
    }

    #[test]
    fn a_local_crypto_failure_is_not_counted_as_a_malformed_packet() {
        let r = DropReason::from(EspError::CryptoFailure("random generator failed"));
        assert_eq!((r, r.name()), (DropReason::CryptoFailure, "crypto_failure"));
        let c = Counters::default();
        c.drop_one(r);
        let s = c.snapshot();
        assert_eq!(
            (s.dropped(DropReason::CryptoFailure), s.dropped(DropReason::Malformed)),
            (1, 0)
        );
    }
}

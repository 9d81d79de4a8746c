//! Random sources: the operating system's (through aws-lc) and a seeded
//! ChaCha20 stream for reproducible runs.

use std::cell::RefCell;
use std::sync::Mutex;

use aws_lc_rs::rand::SecureRandom;
use control::crypto::CryptoError;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use zeroize::Zeroize;

/// Where an [`AwsLcProvider`](crate::AwsLcProvider) gets its random bytes.
pub trait RandomSource: Send + Sync {
    /// Fills `buf`, or reports that it could not.
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError>;
}

/// The operating system's generator through aws-lc (`RAND_bytes`).
///
/// Small requests (SPIs, nonces, IV starts, private scalars) are served from
/// a per-thread pool refilled 256 bytes at a time: each `RAND_bytes` call
/// costs about 0.35 us (CTR-DRBG + RDRAND prediction resistance), a
/// responder handshake needs eight of them. Served bytes are wiped from the
/// pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRandom;

const POOL_LEN: usize = 256;
/// Requests above this size bypass the pool.
const POOLED_MAX: usize = 64;

struct Pool {
    bytes: [u8; POOL_LEN],
    used: usize,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; POOL_LEN], used: POOL_LEN }) };
}

fn system_fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| CryptoError::Rng)
}

impl RandomSource for SystemRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        if buf.len() > POOLED_MAX {
            return system_fill(buf);
        }
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            if POOL_LEN - p.used < buf.len() {
                system_fill(&mut p.bytes)?;
                p.used = 0;
            }
            let start = p.used;
            let end = start + buf.len();
            buf.copy_from_slice(&p.bytes[start..end]);
            p.bytes[start..end].zeroize();
            p.used = end;
            Ok(())
        })
    }
}

/// A ChaCha20 stream from a 64-bit seed: the same seed gives the same bytes
/// in the same order. Predictable by construction: tests and benchmarks only.
pub struct SeededRandom(Mutex<ChaCha20Rng>);

impl SeededRandom {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRandom(Mutex::new(ChaCha20Rng::seed_from_u64(seed)))
    }
}

impl RandomSource for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        // A poisoned lock means a test thread panicked mid-draw: report, do not guess.
        let mut rng = self.0.lock().map_err(|_| CryptoError::Rng)?;
        rng.fill_bytes(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_bytes_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        SystemRandom.fill(&mut a).unwrap();
        SystemRandom.fill(&mut b).unwrap();
        assert_ne!(a, b);
        let mut big = [0u8; 200];
        SystemRandom.fill(&mut big).unwrap();
        assert_ne!(big[..100], big[100..]);
    }

    #[test]
    fn seeded_streams_repeat_per_seed() {
        let draw = |seed| {
            let r = SeededRandom::new(seed);
            let mut out = [0u8; 48];
            r.fill(&mut out[..16]).unwrap();
            r.fill(&mut out[16..]).unwrap();
            out
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }
}

//! Cryptographically secure randomness (aws-lc-rs SystemRandom).
//!
//! Small requests (SPIs, nonces, IV starts, jitter) are served from a
//! per-thread pool refilled 256 bytes at a time: each aws-lc `RAND_bytes`
//! call costs about 0.35 us (CTR-DRBG + RDRAND prediction resistance), a
//! responder handshake needs eight of them. Served bytes are wiped from the
//! pool.

use std::cell::RefCell;

use super::CryptoError;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroize;

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

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    if buf.len() > POOLED_MAX {
        return SystemRandom::new().fill(buf).map_err(|_| CryptoError::Rng);
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if POOL_LEN - p.used < buf.len() {
            SystemRandom::new().fill(&mut p.bytes).map_err(|_| CryptoError::Rng)?;
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

/// A random u64.
pub fn u64() -> Result<u64, CryptoError> {
    let mut b = [0u8; 8];
    fill(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// A random u32.
pub fn u32() -> Result<u32, CryptoError> {
    let mut b = [0u8; 4];
    fill(&mut b)?;
    Ok(u32::from_ne_bytes(b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_values_differ() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        super::fill(&mut a).unwrap();
        super::fill(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(super::u64().unwrap(), super::u64().unwrap());
    }
}

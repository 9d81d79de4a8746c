//! Cryptographically secure randomness (aws-lc-rs SystemRandom).

use super::CryptoError;

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), CryptoError> { todo!("crypto helper") }
/// A random u64.
pub fn u64() -> Result<u64, CryptoError> { todo!("crypto helper") }
/// A random u32.
pub fn u32() -> Result<u32, CryptoError> { todo!("crypto helper") }

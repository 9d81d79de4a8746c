//! PRF and prf+ (RFC 7296 §2.13).

use super::PrfAlg;
use zeroize::Zeroizing;

impl PrfAlg {
    /// prf(key, data[0] | data[1] | ...).
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Zeroizing<Vec<u8>> { todo!("crypto helper") }
    /// prf+(key, seed[0] | seed[1] | ...) truncated to `len` bytes.
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Zeroizing<Vec<u8>> { todo!("crypto helper") }
}

//! PRF and prf+ (RFC 7296 §2.13) over HMAC-SHA2 (RFC 4868).

use super::PrfAlg;
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

impl PrfAlg {
    /// The aws-lc-rs HMAC algorithm behind this PRF.
    pub fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            PrfAlg::HmacSha256 => hmac::HMAC_SHA256,
            PrfAlg::HmacSha384 => hmac::HMAC_SHA384,
            PrfAlg::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// An HMAC key schedule for `key`, to reuse with [`PrfAlg::prf_with_key`].
    pub fn key(self, key: &[u8]) -> hmac::Key {
        hmac::Key::new(self.hmac_algorithm(), key)
    }

    /// prf(key, data[0] | data[1] | ...) with a prepared key schedule.
    pub fn prf_with_key(key: &hmac::Key, data: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let mut ctx = hmac::Context::with_key(key);
        for d in data {
            ctx.update(d);
        }
        Zeroizing::new(ctx.sign().as_ref().to_vec())
    }

    /// prf(key, data[0] | data[1] | ...).
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        Self::prf_with_key(&self.key(key), data)
    }

    /// prf+(key, seed[0] | seed[1] | ...) truncated to `len` bytes:
    /// T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
    ///
    /// # Panics
    /// If `len` exceeds 255 PRF outputs (the counter is one octet); IKE never
    /// asks for more than a few hundred bytes.
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Zeroizing<Vec<u8>> {
        let block = self.output_len();
        assert!(len <= 255 * block, "prf+ output of {len} bytes exceeds 255 blocks");
        let key = self.key(key);
        let mut out = Zeroizing::new(Vec::with_capacity(len.div_ceil(block) * block));
        let mut counter: u8 = 1;
        while out.len() < len {
            let mut ctx = hmac::Context::with_key(&key);
            if out.len() >= block {
                ctx.update(&out[out.len() - block..]);
            }
            for s in seed {
                ctx.update(s);
            }
            ctx.update(&[counter]);
            out.extend_from_slice(ctx.sign().as_ref());
            counter = counter.wrapping_add(1);
        }
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prf_plus_prefix_property_and_lengths() {
        let long = PrfAlg::HmacSha256.prf_plus(b"key", &[b"seed"], 100);
        let short = PrfAlg::HmacSha256.prf_plus(b"key", &[b"se", b"ed"], 33);
        assert_eq!(long.len(), 100);
        assert_eq!(&long[..33], &short[..]);
        let t1 = PrfAlg::HmacSha256.prf(b"key", &[b"seed", &[1]]);
        assert_eq!(&long[..32], &t1[..]);
        assert!(PrfAlg::HmacSha512.prf_plus(b"k", &[], 0).is_empty());
    }
}

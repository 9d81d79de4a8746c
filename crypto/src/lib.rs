//! The crypto provider of ironsa's IKE core: aws-lc (through aws-lc-rs and
//! `ffi`) for the key exchanges and legacy RSA signatures, over a
//! [`RandomSource`] that supplies every random byte, and a clock.
//!
//! The daemon and the benchmarks use [`AwsLcProvider::new`] (the operating
//! system's generator through aws-lc, the system clock); tests use
//! [`AwsLcProvider::seeded`], with which a whole negotiation is reproducible
//! bit for bit, or their own [`RandomSource`] (one that fails, for example).
//! `control` defines the traits and depends on none of this.

#![forbid(unsafe_code)]

mod ke;
mod random;
pub mod sealed;

use std::sync::Arc;

use control::crypto::{ActiveKeyExchange, CryptoError, CryptoProvider, KeGroup, KeyExchange, SharedSecret};

pub use random::{RandomSource, SeededRandom, SystemRandom};

/// Where [`AwsLcProvider::unix_time`] comes from.
#[derive(Clone, Copy, Debug)]
enum Clock {
    System,
    Fixed(u64),
}

/// aws-lc key exchanges and legacy signing over a [`RandomSource`].
pub struct AwsLcProvider {
    random: Box<dyn RandomSource>,
    clock: Clock,
}

impl std::fmt::Debug for AwsLcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsLcProvider")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Default for AwsLcProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl AwsLcProvider {
    /// The production provider: the system generator, the system clock.
    pub fn new() -> Self {
        Self::with_random(SystemRandom)
    }

    /// A reproducible provider: every random byte from a ChaCha20 stream of
    /// `seed`. For tests and benchmarks only; never for real peers.
    pub fn seeded(seed: u64) -> Self {
        Self::with_random(SeededRandom::new(seed))
    }

    /// A provider drawing from `random`, on the system clock.
    pub fn with_random(random: impl RandomSource + 'static) -> Self {
        AwsLcProvider {
            random: Box::new(random),
            clock: Clock::System,
        }
    }

    /// The same provider with the wall clock stopped at `secs` after the Unix epoch.
    pub fn at_unix_time(mut self, secs: u64) -> Self {
        self.clock = Clock::Fixed(secs);
        self
    }

    /// This provider, ready for `control::ike_sa::Context`.
    pub fn shared(self) -> Arc<dyn CryptoProvider> {
        Arc::new(self)
    }

    /// A key exchange from a fixed private value, for known-answer tests:
    /// the private scalar (X25519, ECP, big-endian), the MODP exponent
    /// (big-endian), or the ML-KEM decapsulation key (FIPS 203 encoding).
    pub fn key_exchange_from_private(group: KeGroup, private: &[u8]) -> Result<KeyExchange, CryptoError> {
        Ok(KeyExchange::from_active(group, ke::from_private(group, private)?))
    }
}

impl CryptoProvider for AwsLcProvider {
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        self.random.fill(buf)
    }

    fn start_key_exchange(&self, group: KeGroup) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        ke::generate(&*self.random, group)
    }

    fn respond_key_exchange(&self, group: KeGroup, peer_value: &[u8]) -> Result<(Vec<u8>, SharedSecret), CryptoError> {
        ke::respond(&*self.random, group, peer_value)
    }

    fn sign_rsa_pkcs1_sha1(&self, key_der: &[u8], msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        ffi::rsa_legacy::sign_pkcs1_sha1(key_der, msg).map_err(|e| CryptoError::Signature(e.to_string()))
    }

    fn sign_rsa_pkcs1_raw(&self, key_der: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        ffi::rsa_legacy::sign_pkcs1_raw(key_der, data).map_err(|e| CryptoError::Signature(e.to_string()))
    }

    fn verify_rsa_pkcs1_raw(&self, public_key: &[u8], data: &[u8], signature: &[u8]) -> Result<bool, CryptoError> {
        ffi::rsa_legacy::verify_pkcs1_raw(public_key, data, signature)
            .map_err(|e| CryptoError::Signature(e.to_string()))
    }

    fn unix_time(&self) -> u64 {
        match self.clock {
            Clock::Fixed(secs) => secs,
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

    /// PKCS#1 v1.5 is deterministic: signing DigestInfo(SHA-256(m)) raw must
    /// give aws-lc-rs's RSA_PKCS1_SHA256 signature of m, and it verifies.
    #[test]
    fn raw_pkcs1_signature_matches_the_hashed_one_and_verifies() {
        let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = key.as_der().unwrap();
        let msg = b"HASH_I of an IKEv1 Main Mode";
        let mut expected = vec![0u8; key.public_modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            msg,
            &mut expected,
        )
        .unwrap();
        const SHA256_DIGEST_INFO: [u8; 19] = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ];
        let mut info = SHA256_DIGEST_INFO.to_vec();
        info.extend_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg).as_ref());
        let p = AwsLcProvider::new();
        let sig = p.sign_rsa_pkcs1_raw(der.as_ref(), &info).unwrap();
        assert_eq!(sig, expected);
        let public = key.public_key().as_ref().to_vec();
        assert!(p.verify_rsa_pkcs1_raw(&public, &info, &sig).unwrap());
        let mut other = info.clone();
        other[30] ^= 1;
        assert!(!p.verify_rsa_pkcs1_raw(&public, &other, &sig).unwrap());
        assert!(!p.verify_rsa_pkcs1_raw(&public, &info, &sig[1..]).unwrap());
        assert!(p.sign_rsa_pkcs1_raw(der.as_ref(), &[0u8; 250]).is_err());
    }
}

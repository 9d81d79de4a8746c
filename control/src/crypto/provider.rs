//! The cryptography `control` does not do itself, handed in by its driver
//! as rustls takes a `CryptoProvider`: randomness, the key-exchange
//! primitives, legacy RSA signing and the wall clock.
//!
//! The daemon passes the aws-lc implementation (crate `ironsa-crypto`);
//! tests pass the same one over a seeded random source, so a run is
//! reproducible bit for bit. The protocol rules around these primitives
//! (RFC 6989 checks, nonce sizes, SPI ranges) stay in `control`.

use super::{CryptoError, KeGroup, SharedSecret};

/// The source of randomness, key exchanges, legacy signatures and time of
/// an endpoint and its IKE SAs.
pub trait CryptoProvider: Send + Sync {
    /// Fills `buf` with cryptographically secure random bytes. A failure is
    /// reported, never papered over: callers abandon what they were doing.
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), CryptoError>;

    /// Starts a key exchange in `group`: a fresh ephemeral private value (or
    /// ML-KEM decapsulation key) and the public value IKE sends for it.
    fn start_key_exchange(&self, group: KeGroup) -> Result<Box<dyn ActiveKeyExchange>, CryptoError>;

    /// The responder's half in one step, given the initiator's KE data (the
    /// length already checked): our KE data (public value, or ML-KEM
    /// ciphertext) and the shared secret. Rejects peer values outside the
    /// group (points off the curve, MODP values outside 2..p-2).
    fn respond_key_exchange(&self, group: KeGroup, peer_value: &[u8]) -> Result<(Vec<u8>, SharedSecret), CryptoError>;

    /// RSASSA-PKCS1-v1_5 with SHA-1 over `msg` with the PKCS#8 (or PKCS#1)
    /// DER key `key_der`: IKEv2 auth method 1 (RSA_SIG), for peers without
    /// RFC 7427.
    fn sign_rsa_pkcs1_sha1(&self, key_der: &[u8], msg: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// RSASSA-PKCS1-v1_5 over `data` as it is, without hash or DigestInfo,
    /// with the PKCS#8 (or PKCS#1) DER key `key_der`: the RSA signature of
    /// IKEv1 Main Mode (RFC 2409 §5.1 signs HASH_I/HASH_R themselves).
    fn sign_rsa_pkcs1_raw(&self, key_der: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Checks a signature made as by [`CryptoProvider::sign_rsa_pkcs1_raw`]
    /// with the PKCS#1 `RSAPublicKey` DER `public_key`: `Ok(true)` when it
    /// verifies, `Ok(false)` when not, an error for an unusable key.
    fn verify_rsa_pkcs1_raw(&self, public_key: &[u8], data: &[u8], signature: &[u8]) -> Result<bool, CryptoError>;

    /// Wall-clock time in seconds since the Unix epoch (certificate validity).
    fn unix_time(&self) -> u64;
}

/// Our half of a key exchange between sending our KE data and receiving the
/// peer's.
pub trait ActiveKeyExchange: Send + Sync {
    /// The KE data to send (IKE encoding: raw u for X25519, x || y for ECP,
    /// g^x for MODP, the encapsulation key for ML-KEM).
    fn public_value(&self) -> &[u8];

    /// Completes the exchange with the peer's KE data (length already
    /// checked), consuming our private value.
    fn finish(self: Box<Self>, peer_value: &[u8]) -> Result<SharedSecret, CryptoError>;
}

/// A random u32 from `provider`.
pub fn random_u32(provider: &dyn CryptoProvider) -> Result<u32, CryptoError> {
    let mut b = [0u8; 4];
    provider.fill_random(&mut b)?;
    Ok(u32::from_ne_bytes(b))
}

/// A random u64 from `provider`.
pub fn random_u64(provider: &dyn CryptoProvider) -> Result<u64, CryptoError> {
    let mut b = [0u8; 8];
    provider.fill_random(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// A provider for `control`'s own unit tests: a counter-driven byte stream,
/// no key exchanges (the crate with the real primitives depends on this one).
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    pub(crate) struct CountingRandom {
        next: AtomicU64,
        pub(crate) fail: std::sync::atomic::AtomicBool,
    }

    impl CryptoProvider for CountingRandom {
        fn fill_random(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(CryptoError::Rng);
            }
            for chunk in buf.chunks_mut(8) {
                let v = self
                    .next
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
            }
            Ok(())
        }
        fn start_key_exchange(&self, group: KeGroup) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
            Err(CryptoError::Unsupported(group.name().into()))
        }
        fn respond_key_exchange(&self, group: KeGroup, _: &[u8]) -> Result<(Vec<u8>, SharedSecret), CryptoError> {
            Err(CryptoError::Unsupported(group.name().into()))
        }
        fn sign_rsa_pkcs1_sha1(&self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, CryptoError> {
            Err(CryptoError::Unsupported("RSA PKCS#1 SHA-1".into()))
        }
        fn sign_rsa_pkcs1_raw(&self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, CryptoError> {
            Err(CryptoError::Unsupported("RSA PKCS#1 without DigestInfo".into()))
        }
        fn verify_rsa_pkcs1_raw(&self, _: &[u8], _: &[u8], _: &[u8]) -> Result<bool, CryptoError> {
            Err(CryptoError::Unsupported("RSA PKCS#1 without DigestInfo".into()))
        }
        fn unix_time(&self) -> u64 {
            0
        }
    }
}

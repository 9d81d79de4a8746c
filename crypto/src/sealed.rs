//! Records sealed with a long-lived symmetric key: the cluster's SA state at
//! rest in its store. AES-256-GCM with a fresh random 96-bit nonce per
//! record (the nonce travels in front of the ciphertext), and the record's
//! name as associated data, so a record moved to another name fails to open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use control::crypto::{CryptoError, CryptoProvider};

/// Length of a sealing key, in bytes.
pub const SEALING_KEY_LEN: usize = 32;
/// Bytes a sealed record adds to its plaintext (nonce and tag).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;

/// An AES-256-GCM key that seals and opens named records.
pub struct SealingKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// A key from its 32 bytes (aws-lc keeps its own copy; the caller
    /// zeroizes `bytes`).
    pub fn new(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != SEALING_KEY_LEN {
            return Err(CryptoError::KeyRejected(format!(
                "a sealing key has {SEALING_KEY_LEN} bytes, not {}",
                bytes.len()
            )));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|e| CryptoError::KeyRejected(e.to_string()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// `plaintext` sealed under `name`: nonce, ciphertext, tag. The nonce
    /// comes from `random`; its failure is an error.
    pub fn seal(&self, random: &dyn CryptoProvider, name: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        random.fill_random(&mut nonce)?;
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Integrity)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The plaintext of a record sealed under `name`, or
    /// [`CryptoError::Integrity`] if it was altered, truncated, sealed with
    /// another key or under another name.
    pub fn open(&self, name: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::Integrity);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Integrity)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name), &mut buf)
            .map_err(|_| CryptoError::Integrity)?;
        let n = plain.len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AwsLcProvider;

    #[test]
    fn sealed_records_open_only_with_their_key_and_name() {
        let rng = AwsLcProvider::seeded(7);
        let key = SealingKey::new(&[3u8; 32]).unwrap();
        let sealed = key.seal(&rng, b"sa/1", b"state").unwrap();
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(key.open(b"sa/1", &sealed).unwrap(), b"state");
        assert!(matches!(key.open(b"sa/2", &sealed), Err(CryptoError::Integrity)));
        let other = SealingKey::new(&[4u8; 32]).unwrap();
        assert!(matches!(other.open(b"sa/1", &sealed), Err(CryptoError::Integrity)));
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(matches!(key.open(b"sa/1", &flipped), Err(CryptoError::Integrity)));
        assert!(matches!(key.open(b"sa/1", &sealed[..10]), Err(CryptoError::Integrity)));
        assert!(SealingKey::new(&[0u8; 16]).is_err());
    }

    #[test]
    fn a_failing_generator_fails_the_seal() {
        struct Broken;
        impl crate::RandomSource for Broken {
            fn fill(&self, _: &mut [u8]) -> Result<(), CryptoError> {
                Err(CryptoError::Rng)
            }
        }
        let key = SealingKey::new(&[3u8; 32]).unwrap();
        let rng = AwsLcProvider::with_random(Broken);
        assert!(matches!(key.seal(&rng, b"n", b"x"), Err(CryptoError::Rng)));
    }
}

//! Key exchanges: X25519, ECP-256/384, MODP-2048/3072/4096,
//! ML-KEM-512/768/1024.
//! The primitives come from the [`CryptoProvider`]; the RFC 6989 / FIPS 203
//! checks on peer values and on the results are made here, whatever the
//! provider.

use super::provider::{ActiveKeyExchange, CryptoProvider};
use super::{CryptoError, KeGroup};
use zeroize::Zeroizing;

/// A shared secret (g^ir or the KEM shared secret), zeroized on drop.
pub type SharedSecret = Zeroizing<Vec<u8>>;

/// Our half of a key exchange, started by the initiator.
pub struct KeyExchange {
    group: KeGroup,
    active: Box<dyn ActiveKeyExchange>,
}

impl std::fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyExchange")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn check_len(what: &str, got: usize, expected: usize) -> Result<(), CryptoError> {
    if got == expected {
        Ok(())
    } else {
        Err(CryptoError::InvalidPublicValue(format!(
            "{what}: {got} bytes, expected {expected}"
        )))
    }
}

/// FIPS 203 §7.2 input checks on an ML-KEM encapsulation key of rank `k`:
/// the type check (length 384 k + 32) and the modulus check (every 12-bit
/// coefficient of the encoded vector t is below q = 3329).
fn ml_kem_encapsulation_key_check(group: KeGroup, k: usize, ek: &[u8]) -> Result<(), CryptoError> {
    let what = || format!("{} encapsulation key", group.name());
    if ek.len() != group.public_len() {
        check_len(&what(), ek.len(), group.public_len())?;
    }
    let encoded_t = ek.get(..384 * k).unwrap_or_default();
    let mut bad = false;
    for c in encoded_t.chunks_exact(3) {
        let a = u16::from(c[0]) | (u16::from(c[1] & 0x0f) << 8);
        let b = u16::from(c[1] >> 4) | (u16::from(c[2]) << 4);
        bad |= a >= 3329 || b >= 3329;
    }
    if bad {
        return Err(CryptoError::InvalidPublicValue(format!(
            "{} fails the modulus check",
            what()
        )));
    }
    Ok(())
}

/// RFC 7748 §6.1 / RFC 8031 §2.3: an all-zero X25519 output means a
/// small-order peer point.
fn check_shared(group: KeGroup, shared: SharedSecret) -> Result<SharedSecret, CryptoError> {
    if group == KeGroup::Curve25519 && shared.iter().fold(0u8, |acc, b| acc | b) == 0 {
        return Err(CryptoError::InvalidPublicValue(
            "X25519 shared secret is all zero".into(),
        ));
    }
    Ok(shared)
}

impl KeyExchange {
    /// Generates an ephemeral key pair (or, for ML-KEM, a decapsulation key)
    /// with `provider`.
    pub fn generate(provider: &dyn CryptoProvider, group: KeGroup) -> Result<Self, CryptoError> {
        Ok(Self::from_active(group, provider.start_key_exchange(group)?))
    }

    /// Wraps a provider's key exchange in progress (providers' own tests
    /// build them from fixed private values).
    pub fn from_active(group: KeGroup, active: Box<dyn ActiveKeyExchange>) -> Self {
        KeyExchange { group, active }
    }

    /// The group.
    pub fn group(&self) -> KeGroup {
        self.group
    }

    /// The public value to put in our KE payload.
    pub fn public_value(&self) -> &[u8] {
        self.active.public_value()
    }

    /// Length of the KE data the responder answers with: the public value
    /// length, or the ML-KEM ciphertext length.
    pub fn response_len(group: KeGroup) -> usize {
        group.response_len()
    }

    /// Completes the exchange with the responder's KE data (initiator side;
    /// for ML-KEM, FIPS 203 §7.3's ciphertext type check, then decapsulation).
    pub fn finish(self, peer_value: &[u8]) -> Result<SharedSecret, CryptoError> {
        let what = if self.group.ml_kem_rank().is_some() {
            format!("{} ciphertext", self.group.name())
        } else {
            self.group.name().to_string()
        };
        check_len(&what, peer_value.len(), self.group.response_len())?;
        check_shared(self.group, self.active.finish(peer_value)?)
    }

    /// Responder side in one step: checks the initiator's value, returns our
    /// KE data (public value, or ML-KEM ciphertext) and the shared secret.
    pub fn respond(
        provider: &dyn CryptoProvider,
        group: KeGroup,
        peer_value: &[u8],
    ) -> Result<(Vec<u8>, SharedSecret), CryptoError> {
        if let Some(k) = group.ml_kem_rank() {
            ml_kem_encapsulation_key_check(group, k, peer_value)?;
        } else {
            check_len(group.name(), peer_value.len(), group.public_len())?;
        }
        let (ours, shared) = provider.respond_key_exchange(group, peer_value)?;
        Ok((ours, check_shared(group, shared)?))
    }
}

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
    if !coefficients_below_q(encoded_t) {
        return Err(CryptoError::InvalidPublicValue(format!(
            "{} fails the modulus check",
            what()
        )));
    }
    Ok(())
}

/// Four 12-bit coefficients spread into 16-bit lanes, plus 4096 - q in
/// each lane, carry into bit 12 of a lane exactly when that coefficient is
/// at least q = 3329; lanes never overflow into each other (0xfff + 0x2ff).
const LANE_BIAS: u64 = 0x02ff_02ff_02ff_02ff;
const LANE_CARRY: u64 = 0x1000_1000_1000_1000;

/// True when every coefficient of `encoded` (FIPS 203 ByteEncode12: two
/// little-endian 12-bit values per three bytes) is below q. Six bytes (four
/// coefficients) at a time with word arithmetic, no data-dependent branch:
/// the encapsulation key is checked on every ML-KEM handshake.
fn coefficients_below_q(encoded: &[u8]) -> bool {
    let mut chunks = encoded.chunks_exact(6);
    let mut carries = 0u64;
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word[..6].copy_from_slice(c);
        let w = u64::from_le_bytes(word);
        let lanes = (w & 0xfff)
            | ((w << 4) & 0x0fff_0000)
            | ((w << 8) & 0x0fff_0000_0000)
            | ((w << 12) & 0x0fff_0000_0000_0000);
        carries |= lanes.wrapping_add(LANE_BIAS) & LANE_CARRY;
    }
    for c in chunks.remainder().chunks_exact(3) {
        let a = u16::from(c[0]) | (u16::from(c[1] & 0x0f) << 8);
        let b = u16::from(c[1] >> 4) | (u16::from(c[2]) << 4);
        carries |= u64::from(a >= 3329 || b >= 3329);
    }
    carries == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain FIPS 203 reading: decode each pair, compare with q.
    fn reference_below_q(encoded: &[u8]) -> bool {
        encoded.chunks_exact(3).all(|c| {
            let a = u16::from(c[0]) | (u16::from(c[1] & 0x0f) << 8);
            let b = u16::from(c[1] >> 4) | (u16::from(c[2]) << 4);
            a < 3329 && b < 3329
        })
    }

    /// ByteEncode12 of `coefficients` (an even count).
    fn encode12(coefficients: &[u16]) -> Vec<u8> {
        coefficients
            .chunks_exact(2)
            .flat_map(|p| {
                [
                    p[0] as u8,
                    ((p[0] >> 8) as u8 & 0x0f) | ((p[1] as u8) << 4),
                    (p[1] >> 4) as u8,
                ]
            })
            .collect()
    }

    #[test]
    fn modulus_check_finds_one_bad_coefficient_at_every_position() {
        for len in [768usize, 6, 4, 2] {
            let good = vec![3328u16; len];
            assert!(coefficients_below_q(&encode12(&good)), "{len} coefficients of q - 1");
            for at in 0..len {
                for bad_value in [3329u16, 3330, 4095] {
                    let mut c = good.clone();
                    c[at] = bad_value;
                    let e = encode12(&c);
                    assert!(!coefficients_below_q(&e), "{bad_value} at {at} of {len} not caught");
                    assert_eq!(coefficients_below_q(&e), reference_below_q(&e));
                }
            }
        }
    }

    #[test]
    fn modulus_check_agrees_with_the_plain_reading_on_arbitrary_bytes() {
        // A fixed xorshift stream: mostly bad keys, with runs of good ones
        // where the top nibble of every second byte is masked.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..2000 {
            let mut bytes = vec![0u8; 1152];
            for b in &mut bytes {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if round % 2 == 0 {
                // Clamp every coefficient below 3072 (< q) except maybe one.
                for c in bytes.chunks_exact_mut(3) {
                    c[1] &= 0xb7;
                    c[2] &= 0xbf;
                }
                let at = (x as usize) % 1152;
                bytes[at] |= 0xff;
            }
            assert_eq!(coefficients_below_q(&bytes), reference_below_q(&bytes), "round {round}");
        }
    }
}

//! Key exchanges: X25519, ECP-256/384, MODP-2048/3072/4096, ML-KEM-768.
//! Peer public values are checked as RFC 6989 asks.

use super::{CryptoError, KeGroup};
use zeroize::Zeroizing;

/// A shared secret (g^ir or the KEM shared secret), zeroized on drop.
pub type SharedSecret = Zeroizing<Vec<u8>>;

/// Our half of a key exchange, started by the initiator.
pub struct KeyExchange {
    _private: (),
}

impl KeyExchange {
    /// Generates an ephemeral key pair (or, for ML-KEM, a decapsulation key).
    pub fn generate(group: KeGroup) -> Result<Self, CryptoError> { todo!("crypto helper") }
    /// The group.
    pub fn group(&self) -> KeGroup { todo!("crypto helper") }
    /// The public value to put in our KE payload.
    pub fn public_value(&self) -> &[u8] { todo!("crypto helper") }
    /// Completes the exchange with the responder's KE data (initiator side).
    pub fn finish(self, peer_value: &[u8]) -> Result<SharedSecret, CryptoError> { todo!("crypto helper") }
    /// Responder side in one step: checks the initiator's value, returns our
    /// KE data (public value, or ML-KEM ciphertext) and the shared secret.
    pub fn respond(group: KeGroup, peer_value: &[u8]) -> Result<(Vec<u8>, SharedSecret), CryptoError> { todo!("crypto helper") }
}

//! The negotiated cryptography of IKE: algorithms, PRF and prf+, key
//! exchanges, key derivation, SK payload protection and AUTH computation.
//! Symmetric primitives on aws-lc-rs; randomness, key-exchange primitives,
//! legacy RSA signing and time from the injected [`CryptoProvider`]. Key
//! material is zeroized on drop.

pub mod algorithms;
pub mod auth;
pub mod ke;
pub mod keys;
pub mod prf;
pub mod provider;
pub mod sk;

pub use algorithms::{EncrAlg, IntegAlg, KeGroup, PrfAlg};
pub use ke::{KeyExchange, SharedSecret};
pub use keys::{ChildSaKeys, IkeSaKeys, IkeSuite};
pub use provider::{ActiveKeyExchange, CryptoProvider, random_u32, random_u64};
pub use sk::SkCipher;

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The algorithm or group is not implemented.
    #[error("unsupported algorithm: {0}")]
    Unsupported(String),
    /// A peer's public key-exchange value failed the RFC 6989 checks.
    #[error("invalid key exchange public value: {0}")]
    InvalidPublicValue(String),
    /// A key has the wrong length or was rejected by the library.
    #[error("key rejected: {0}")]
    KeyRejected(String),
    /// The random number generator failed.
    #[error("random number generator failure")]
    Rng,
    /// Decryption or integrity check failed.
    #[error("integrity check failed")]
    Integrity,
    /// Signature creation or verification failed.
    #[error("signature: {0}")]
    Signature(String),
}

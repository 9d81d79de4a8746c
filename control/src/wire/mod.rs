//! Wire codecs: IKEv2 (RFC 7296) and ISAKMP (RFC 2408, for IKEv1).
//!
//! Decoding never panics: every length is checked and every failure is a
//! [`WireError`] that says what was wrong and where.

pub mod ikev2;
pub mod ingress;
pub mod isakmp;

/// Why a datagram or payload could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than a structure needs.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A length field is inconsistent with the data around it.
    #[error("bad length in {what}: {detail}")]
    BadLength {
        /// The structure being decoded.
        what: &'static str,
        /// What is inconsistent.
        detail: String,
    },
    /// A field holds a value the protocol does not allow.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
    /// The IKE version is not 2.x.
    #[error("unsupported IKE major version {0}")]
    UnsupportedVersion(u8),
    /// An unknown payload marked critical.
    #[error("unsupported critical payload type {0}")]
    UnsupportedCriticalPayload(u8),
    /// Integrity check or decryption of an SK/SKF payload failed.
    #[error("integrity check failed on encrypted payload")]
    IntegrityCheckFailed,
    /// The message is larger than an IKE message may be.
    #[error("message too large: {0} bytes")]
    TooLarge(usize),
}

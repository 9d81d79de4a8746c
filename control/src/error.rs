//! The control crate's error type, mapped to IKE notify codes.

use crate::wire::ikev2::NotifyType;

/// Every way an IKE negotiation or message can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The datagram could not be decoded.
    #[error("malformed message: {0}")]
    Wire(#[from] crate::wire::WireError),
    /// A cryptographic operation failed (bad ICV, bad public value...).
    #[error("crypto: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// No proposal of the peer is acceptable.
    #[error("no proposal chosen: {0}")]
    NoProposalChosen(String),
    /// The peer used a key exchange group other than the one selected.
    #[error("invalid KE payload: peer sent group {offered}, we want group {wanted}")]
    InvalidKePayload {
        /// Group the peer's KE payload carries.
        offered: u16,
        /// Group we selected.
        wanted: u16,
    },
    /// AUTH payload did not verify, or identity not acceptable.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// Traffic selectors cannot be narrowed to anything acceptable.
    #[error("traffic selectors unacceptable: {0}")]
    TsUnacceptable(String),
    /// A required payload is missing or a payload is invalid in this exchange.
    #[error("invalid syntax: {0}")]
    InvalidSyntax(String),
    /// An unknown payload marked critical was received.
    #[error("unsupported critical payload type {0}")]
    UnsupportedCriticalPayload(u8),
    /// A configuration value is invalid.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The notify to send to the peer for this error, if one should be sent.
    pub fn notify(&self) -> Option<NotifyType> {
        match self {
            Error::Wire(_) | Error::InvalidSyntax(_) => Some(NotifyType::INVALID_SYNTAX),
            Error::Crypto(_) => None,
            Error::NoProposalChosen(_) => Some(NotifyType::NO_PROPOSAL_CHOSEN),
            Error::InvalidKePayload { .. } => Some(NotifyType::INVALID_KE_PAYLOAD),
            Error::AuthenticationFailed(_) => Some(NotifyType::AUTHENTICATION_FAILED),
            Error::TsUnacceptable(_) => Some(NotifyType::TS_UNACCEPTABLE),
            Error::UnsupportedCriticalPayload(_) => Some(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD),
            Error::Config(_) => None,
        }
    }
}

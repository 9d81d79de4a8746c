//! ESP (RFC 4303): ciphers, encapsulation, decapsulation and the replay window.

pub mod aead;
pub mod decap;
pub mod encap;
#[cfg(feature = "rustcrypto")]
pub mod oracle;
pub mod replay;

use crate::buf::BufError;
use thiserror::Error;

/// Length of the ESP header (SPI + sequence number).
pub const ESP_HEADER_LEN: usize = 8;
/// IP protocol number of ESP.
pub const IPPROTO_ESP: u8 = 50;
/// ESP next-header value of an inner IPv4 packet (tunnel mode).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// ESP next-header value of an inner IPv6 packet (tunnel mode).
pub const NEXT_HEADER_IPV6: u8 = 41;
/// ESP next-header value of a dummy (TFC) packet, RFC 4303 §2.6.
pub const NEXT_HEADER_NONE: u8 = 59;

/// IPsec mode of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The whole inner IP packet is protected; new outer header.
    Tunnel,
    /// Only the payload of the IP packet is protected; its header stays.
    Transport,
}

/// Why an ESP operation did not produce a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EspError {
    /// The packet is too short or its fields are inconsistent.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The sequence number was already seen or is left of the window.
    #[error("replayed or too old sequence number")]
    Replay,
    /// Integrity check failed (or the AEAD tag did not verify).
    #[error("integrity check failed")]
    IcvFailure,
    /// The ESP trailer's padding is not the monotonic 1, 2, 3, ... sequence.
    #[error("invalid ESP padding")]
    BadPadding,
    /// The result would exceed the buffer or the path MTU.
    #[error("packet too large: {0}")]
    Oversize(&'static str),
    /// The outbound sequence number space is used up; the SA must be rekeyed.
    #[error("sequence number space exhausted")]
    SeqExhausted,
    /// The SA's hard lifetime was reached.
    #[error("SA lifetime expired")]
    Expired,
    /// A dummy (next header 59) packet, discarded after verification.
    #[error("dummy packet")]
    Dummy,
    /// The decrypted inner packet does not match the SA's selectors.
    #[error("inner packet does not match the SA's traffic selectors")]
    PolicyMismatch,
    /// Our own cryptography failed (random generator, cipher): not the
    /// packet's fault, and counted apart so an operator sees it.
    #[error("local cryptographic failure: {0}")]
    CryptoFailure(&'static str),
}

impl From<BufError> for EspError {
    fn from(e: BufError) -> Self {
        match e {
            BufError::NoHeadroom { .. } => EspError::Oversize("not enough headroom"),
            BufError::NoTailroom { .. } => EspError::Oversize("not enough tailroom"),
            BufError::TooShort { .. } => EspError::Malformed("shorter than its headers"),
        }
    }
}

/// Reads the SPI and the low 32 bits of the sequence number of an ESP packet.
#[inline]
pub fn parse_header(esp: &[u8]) -> Result<(u32, u32), EspError> {
    match esp {
        [a, b, c, d, e, f, g, h, ..] => Ok((
            u32::from_be_bytes([*a, *b, *c, *d]),
            u32::from_be_bytes([*e, *f, *g, *h]),
        )),
        _ => Err(EspError::Malformed("shorter than the ESP header")),
    }
}

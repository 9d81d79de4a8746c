//! The Encrypted payload (SK, RFC 7296 §3.14) and Encrypted Fragments
//! (SKF, RFC 7383).

use super::types::*;
use crate::wire::WireError;

/// The negotiated protection of SK payloads in one direction pair, implemented
/// by the crypto module (AEAD or CBC + HMAC).
///
/// `seal` and `open` receive the associated data (the IKE header and the SK/SKF
/// payload header, plus for SKF the fragment number/total fields), the IV, the
/// padded plaintext/ciphertext in place, and the ICV. An AEAD authenticates
/// `aad` and encrypts `data`; CBC + HMAC encrypts `data` and MACs
/// `aad || iv || data` (RFC 7296 §3.14: the checksum covers the message from
/// the IKE header to the end of the ciphertext).
pub trait SkProtect {
    /// IV length in bytes (8 for AES-GCM and ChaCha20-Poly1305, 16 for AES-CBC).
    fn iv_len(&self) -> usize;
    /// ICV length in bytes.
    fn icv_len(&self) -> usize;
    /// Padding alignment of the plaintext (16 for AES-CBC, 1 for AEADs).
    fn block_len(&self) -> usize;
    /// Encrypts `data` in place, fills a fresh `iv` and writes the `icv`.
    fn seal(&self, aad: &[u8], iv: &mut [u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), WireError>;
    /// Checks the ICV and decrypts `data` in place.
    fn open(&self, aad: &[u8], iv: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), WireError>;
}

/// Encodes a message whose payloads are all inside one SK payload:
/// header, SK { inner payloads, padding, pad length }.
pub fn seal_message(header: &Header, inner: &[Payload], sk: &dyn SkProtect) -> Result<Vec<u8>, WireError> {
    todo!("wire helper")
}

/// Opens the SK payload of a message decoded from `datagram` and returns the
/// inner payloads. `datagram` must be the exact bytes `msg` was decoded from.
pub fn open_message(datagram: &[u8], sk: &dyn SkProtect) -> Result<Vec<Payload>, WireError> {
    todo!("wire helper")
}

/// Encodes a message as RFC 7383 fragments, each datagram at most
/// `max_datagram` bytes (IKE header included).
pub fn seal_fragments(
    header: &Header,
    inner: &[Payload],
    sk: &dyn SkProtect,
    max_datagram: usize,
) -> Result<Vec<Vec<u8>>, WireError> {
    todo!("wire helper")
}

/// Collects SKF fragments of one message until all have arrived (RFC 7383 §2.6).
#[derive(Debug, Default)]
pub struct FragmentReassembler {
    _private: (),
}

impl FragmentReassembler {
    /// A new, empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies and decrypts one SKF datagram. Returns the inner payloads once
    /// the last missing fragment of the message has arrived, `None` before.
    pub fn push(&mut self, datagram: &[u8], sk: &dyn SkProtect) -> Result<Option<Vec<Payload>>, WireError> {
        todo!("wire helper")
    }
}

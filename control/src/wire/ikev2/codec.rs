//! Decoding and encoding of IKEv2 messages and payload chains.

use super::types::*;
use crate::wire::WireError;

/// A decoded IKEv2 message: header and the outer payload chain. An SK or SKF
/// payload, if present, is the last one and is still protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The IKE header.
    pub header: Header,
    /// The payloads in order.
    pub payloads: Vec<Payload>,
}

/// Decodes a whole datagram (without the 4-byte non-ESP marker of port 4500).
pub fn decode_message(datagram: &[u8]) -> Result<Message, WireError> {
    todo!("wire helper")
}

/// Decodes a payload chain starting with a payload of type `first` (used for
/// the plaintext inside SK/SKF).
pub fn decode_payloads(first: PayloadType, buf: &[u8]) -> Result<Vec<Payload>, WireError> {
    todo!("wire helper")
}

/// Encodes a payload chain; returns the type of the first payload
/// ([`PayloadType::NONE`] for an empty chain).
pub fn encode_payloads(payloads: &[Payload], out: &mut Vec<u8>) -> PayloadType {
    todo!("wire helper")
}

/// Encodes a whole message; `header.next_payload` and `header.length` are
/// computed, the other header fields are taken as given.
pub fn encode_message(header: &Header, payloads: &[Payload]) -> Vec<u8> {
    todo!("wire helper")
}

//! IKEv2 message codec (RFC 7296 §3, RFC 7383 fragments).
//!
//! - [`types`]: the header, payload structures and numeric registries.
//! - [`codec`]: decode and encode of messages and payload chains.
//! - [`sk`]: building and opening the Encrypted (SK) and Encrypted Fragment
//!   (SKF) payloads over a negotiated [`SkProtect`] transform.

pub mod codec;
pub mod sk;
pub mod types;

pub use codec::{
    ENCODE_CAPACITY, Message, decode_header, decode_message, decode_payloads, encode_capacity, encode_message,
    encode_payloads, try_encode_message, try_encode_payloads,
};
pub use sk::{FragmentReassembler, SkProtect, open_message, seal_fragments, seal_message};
pub use types::*;

//! IKEv2 message codec (RFC 7296 §3, RFC 7383 fragments).
//!
//! - [`types`]: the header, payload structures and numeric registries.
//! - [`codec`]: decode and encode of messages and payload chains.
//! - [`sk`]: building and opening the Encrypted (SK) and Encrypted Fragment
//!   (SKF) payloads over a negotiated [`SkProtect`] transform.

pub mod codec;
pub mod sk;
pub mod types;

pub use codec::{decode_message, decode_payloads, encode_message, encode_payloads, Message};
pub use sk::{FragmentReassembler, SkProtect};
pub use types::*;

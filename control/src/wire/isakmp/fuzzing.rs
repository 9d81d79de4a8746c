//! The body of the `isakmp_decode` fuzz target, shared with the normal test
//! suite (which runs it over deterministic mutations of real messages).
//! It panics when an invariant breaks: that is what the fuzzer looks for.

use super::{
    HashAlg, IsakmpCipher, IvChain, PayloadType, decode_message, decode_payloads, encode_message, encode_payloads,
};

/// Decodes `data` as a message, as a decrypted chain whose first type is its
/// first byte, and as an encrypted message under a fixed key. Whatever
/// decodes must re-encode and decode to the same value.
///
/// # Panics
/// When a decoded value does not survive re-encoding: a codec bug.
pub fn decode_round_trip(data: &[u8]) {
    if let Ok(msg) = decode_message(data) {
        let mut bytes = Vec::new();
        encode_message(&msg.header, &msg.payloads, &mut bytes).expect("a decoded message must encode");
        let again = decode_message(&bytes).expect("re-encoded message must decode");
        assert_eq!(again, msg);
    }
    if let Some((&first, rest)) = data.split_first()
        && let Ok(payloads) = decode_payloads(PayloadType(first), rest, true)
    {
        let mut out = Vec::new();
        let ty = encode_payloads(&payloads, &mut out).expect("a decoded chain must encode");
        assert_eq!(
            decode_payloads(ty, &out, false).expect("re-encoded chain must decode"),
            payloads
        );
    }
    if let Ok(cipher) = IsakmpCipher::aes_cbc(&[0x5a; 32]) {
        let mut ivs = IvChain::new(HashAlg::Sha256, b"initiator", b"responder");
        let mut plain = Vec::new();
        if let Ok(h) = cipher.open(&mut ivs, data, &mut plain) {
            decode_payloads(h.next_payload, &plain, true).expect("open checks that the chain decodes");
        }
    }
}

//! Fuzzes the IKEv2 decoder: arbitrary bytes must never panic, and whatever
//! decodes must survive an encode/decode round trip unchanged.
#![no_main]

use control::wire::ikev2::{
    PayloadType, decode_message, decode_payloads, encode_message, encode_payloads,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_message(data) {
        let bytes = encode_message(&msg.header, &msg.payloads);
        let again = decode_message(&bytes).expect("re-encoded message must decode");
        assert_eq!(again, msg);
    }
    // Also treat the input as a decrypted inner chain whose first type is the first byte.
    if let Some((&first, rest)) = data.split_first() {
        if let Ok(payloads) = decode_payloads(PayloadType(first), rest) {
            let mut out = Vec::new();
            let ty = encode_payloads(&payloads, &mut out);
            assert_eq!(
                decode_payloads(ty, &out).expect("re-encoded chain must decode"),
                payloads
            );
        }
    }
});

//! Fuzzes the ISAKMP (IKEv1) decoder: arbitrary bytes must never panic;
//! whatever decodes must re-encode and decode to the same value; the bytes
//! opened as an encrypted message must give an error or a chain.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    control::wire::isakmp::fuzzing::decode_round_trip(data);
});

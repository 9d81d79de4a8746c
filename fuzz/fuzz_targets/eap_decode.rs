//! Arbitrary bytes as an EAP packet: a typed error or a packet that encodes
//! back to the same bytes; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    control::eap::fuzzing::eap_decode(data);
});

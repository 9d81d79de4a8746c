//! Arbitrary bytes as a RADIUS reply (`ironsa::aaa::radius::fuzz_decode`):
//! decoding, attribute and vendor-attribute lookup, EAP-Message reassembly,
//! MS-MPPE key decryption and authenticator verification; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironsa::aaa::radius::fuzz_decode(data);
});

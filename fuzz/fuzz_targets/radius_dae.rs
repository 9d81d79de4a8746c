//! Arbitrary bytes as a dynamic-authorization request (RFC 5176) from an
//! allowed RADIUS client (`ironsa::aaa::dae::fuzz_request`): decoding,
//! Request Authenticator, Message-Authenticator and Event-Timestamp
//! checks, session matching and the signed answer; never a panic, and
//! every answer verifies.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironsa::aaa::dae::fuzz_request(data);
});

//! Arbitrary EAP-MSCHAPv2 messages (split at 0xff, first byte the EAP
//! Identifier) fed as Requests and Responses to a gateway authenticator and a
//! client peer: no panic, and neither side ever authenticates.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    control::eap::fuzzing::mschapv2_sessions(data);
});

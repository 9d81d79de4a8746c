//! Arbitrary EAP-TLS frames (split at 0xff: Flags, optional TLS Message
//! Length, data) fed to a gateway authenticator as Responses and to a client
//! peer as Requests: fragment reassembly and the TLS decoder see them; no
//! panic, reassembly stays bounded, and neither side completes TLS.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    control::eap::fuzzing::eap_tls_frames(data);
});

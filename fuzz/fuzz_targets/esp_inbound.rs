//! Arbitrary bytes through the fastpath's inbound (UDP 4500 and raw ESP) and
//! outbound paths against installed SAs: never a panic, never a change to
//! another SA's state (checked inside `fastpath::fuzzing::inbound`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fastpath::fuzzing::inbound(data);
});

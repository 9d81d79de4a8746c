//! Fuzzes an IKEv1 responder: first datagrams of new Phase 1 exchanges,
//! datagrams aimed at an established ISAKMP SA, and mutations of real
//! encrypted Quick Mode and DPD messages. It must never panic, never take
//! the established SA down, and DPD must still work both ways after every
//! input. The harness is shared with control/tests/ikev1_fuzz.rs; see it
//! for the input layout.
#![no_main]

#[path = "../../control/tests/harness/ikev1_responder.rs"]
mod harness;

use std::cell::RefCell;

use harness::Ikev1ResponderHarness;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static HARNESS: RefCell<Ikev1ResponderHarness> = RefCell::new(Ikev1ResponderHarness::new());
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        h.borrow_mut().run(data);
    });
});

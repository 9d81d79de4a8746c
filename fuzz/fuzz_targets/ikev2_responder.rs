//! Fuzzes a responder `Endpoint`: raw datagrams, datagrams aimed at an
//! established SA, and messages sealed with the real keys of a scripted
//! initiator (IKE_AUTH, SKF fragments, requests on an established SA). It must
//! never panic, never leak an SA, and never disturb the other established SA,
//! on which a DPD exchange in each direction must still work after every input.
//! The harness is shared with control/tests/fuzz_regressions.rs; see it for
//! the input layout.
#![no_main]

#[path = "../../control/tests/harness/responder.rs"]
mod harness;

use std::cell::RefCell;

use harness::ResponderHarness;
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// Built once: establishing the anchor SA for every input would dominate the run.
    static HARNESS: RefCell<ResponderHarness> = RefCell::new(ResponderHarness::new());
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        h.borrow_mut().run(data);
    });
});

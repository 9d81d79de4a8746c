//! The `ikev1_responder` fuzz harness in the normal test suite: its seeds
//! reach the states they aim at, and deterministic mutations never panic,
//! never take the established SA down, never stop it answering DPD.

#[path = "harness/ikev1_responder.rs"]
mod harness;

use harness::Ikev1ResponderHarness;

/// A first Main Mode message of a real initiator.
fn main_mode_1() -> Vec<u8> {
    use control::config::{ConnectionConfig, IdentityMatch, parse_identity};
    use control::ike_sa::Context;
    use control::ikev1::Ikev1Sa;
    use std::sync::Arc;
    let mut c = ConnectionConfig::new(
        "a",
        parse_identity("a@test"),
        IdentityMatch::Any,
        b"a-long-random-test-secret",
    );
    c.ike_proposals = control::proposal::parse_ike_proposals("aes128-sha256-ecp256").unwrap();
    let c = Arc::new(c);
    let ctx = Context::new(vec![c.clone()], ironsa_crypto::AwsLcProvider::seeded(9).shared());
    let mut a = Ikev1Sa::initiate(
        &ctx,
        c,
        "192.0.2.1:500".parse().unwrap(),
        "192.0.2.2:500".parse().unwrap(),
        std::time::Instant::now(),
    )
    .unwrap();
    a.poll_transmit().unwrap().data
}

#[test]
fn seeds_reach_their_states() {
    let mut h = Ikev1ResponderHarness::new();
    let mut first = vec![0u8];
    first.extend_from_slice(&main_mode_1());
    assert!(
        h.run(&first).created,
        "mode 0 creates a responder from Main Mode message 1"
    );
    assert!(
        h.run(&[2, 0]).accepted,
        "mode 2 with nothing XORed is a real Quick Mode message 1"
    );
    assert!(h.run(&[2, 1]).accepted, "mode 2, odd: a real DPD request");
    assert!(!h.run(&[2, 0, 0xff]).accepted, "a flipped header byte is refused");
    assert!(!h.run(&[1, 1, 2, 3]).accepted);
}

#[test]
fn mutations_never_panic_nor_disturb_the_established_sa() {
    let mut h = Ikev1ResponderHarness::new();
    let mm1 = main_mode_1();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..300u32 {
        let mode = (i % 3) as u8;
        let mut input = vec![mode];
        match mode {
            0 => {
                let mut m = mm1.clone();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % m.len();
                    m[at] ^= next() as u8;
                }
                input.extend_from_slice(&m);
            }
            1 => {
                let mut m = mm1.clone();
                m[18] = [2u8, 4, 5, 6, 32][(next() % 5) as usize];
                m[19] = (next() % 2) as u8;
                m[20..24].copy_from_slice(&(next() as u32).to_be_bytes());
                let at = 28 + (next() as usize) % (m.len() - 28);
                m[at] ^= next() as u8;
                input.extend_from_slice(&m);
            }
            _ => {
                input.push((next() % 2) as u8);
                let mut x = vec![0u8; 300];
                let at = (next() as usize) % x.len();
                x[at] = (next() as u8) | 1;
                input.extend_from_slice(&x);
            }
        }
        h.run(&input);
    }
}

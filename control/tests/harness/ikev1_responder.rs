//! The IKEv1 responder fuzz harness, shared by fuzz/fuzz_targets/ikev1_responder.rs
//! and control/tests/ikev1_fuzz.rs.
//!
//! Input layout: the first byte picks the mode, the rest is the payload.
//! - mode 0: the rest is a first datagram for a new responder (Main or
//!   Aggressive Mode allowed), then fed again to what it created;
//! - mode 1: the rest is a datagram carrying an established SA's cookies;
//! - mode 2: the rest is XORed into a real Quick Mode message 1 (or a real
//!   DPD request, odd second byte) of the established initiator.
//!
//! After every input the established responder must still be up and answer
//! DPD in both directions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use control::config::{ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
use control::ike_sa::Context;
use control::ikev1::{Ikev1Policy, Ikev1Sa, MainModeState, starts_phase1};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use ironsa_crypto::AwsLcProvider;

fn conn(name: &str, local: &str, remote: &str, lts: &str, rts: &str) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(
        name,
        parse_identity(local),
        IdentityMatch::Exact(parse_identity(remote)),
        b"a-long-random-test-secret",
    );
    c.ike_proposals = parse_ike_proposals("aes128-sha256-ecp256").unwrap();
    c.ike_versions = control::config::IkeVersions::V1;
    c.children.push(ChildConfig {
        name: "c".into(),
        esp_proposals: parse_esp_proposals("aes128-sha256").unwrap(),
        local_ts: vec![parse_selector(lts).unwrap()],
        remote_ts: vec![parse_selector(rts).unwrap()],
        mode: IpsecMode::Tunnel,
        lifetime: Lifetime::rekey_after(std::time::Duration::from_secs(3600)),
    });
    c
}

/// An established initiator/responder pair and the responder's context.
pub struct Ikev1ResponderHarness {
    ctx_b: Context,
    policy: Ikev1Policy,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
}

/// What one input did, for the checks of the regression test.
#[derive(Debug, Default)]
pub struct Outcome {
    /// A new responder SA was created from the input (mode 0).
    pub created: bool,
    /// The input was accepted by the established responder.
    pub accepted: bool,
}

impl Ikev1ResponderHarness {
    /// Builds the contexts (SAs are established per input, from fixed seeds).
    pub fn new() -> Self {
        let b = conn("b", "b@test", "a@test", "10.2.0.0/24", "10.1.0.0/24");
        Ikev1ResponderHarness {
            ctx_b: Context::new(vec![Arc::new(b)], AwsLcProvider::seeded(2).shared()),
            policy: Ikev1Policy::aggressive_psk(),
            a_addr: "192.0.2.1:500".parse().unwrap(),
            b_addr: "192.0.2.2:500".parse().unwrap(),
        }
    }

    fn establish(&self) -> (Ikev1Sa, Ikev1Sa) {
        let a_conn = Arc::new(conn("a", "a@test", "b@test", "10.1.0.0/24", "10.2.0.0/24"));
        let ctx_a = Context::new(vec![a_conn.clone()], AwsLcProvider::seeded(1).shared());
        let now = Instant::now();
        let mut a = Ikev1Sa::initiate(&ctx_a, a_conn, self.a_addr, self.b_addr, now).unwrap();
        let first = a.poll_transmit().unwrap();
        let mut b = Ikev1Sa::respond(&self.ctx_b, &self.policy, self.b_addr, self.a_addr, &first.data, now).unwrap();
        exchange(&mut a, &mut b);
        assert_eq!((a.state(), b.state()), (MainModeState::Done, MainModeState::Done));
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        (a, b)
    }

    /// Runs one input and checks the invariants.
    pub fn run(&mut self, data: &[u8]) -> Outcome {
        let mut outcome = Outcome::default();
        let Some((&mode, rest)) = data.split_first() else {
            return outcome;
        };
        let now = Instant::now();
        match mode % 3 {
            0 => {
                if starts_phase1(rest)
                    && let Ok(mut fresh) =
                        Ikev1Sa::respond(&self.ctx_b, &self.policy, self.b_addr, self.a_addr, rest, now)
                {
                    outcome.created = true;
                    let _ = fresh.handle(now, rest);
                    while fresh.poll_transmit().is_some() {}
                    assert_ne!(fresh.state(), MainModeState::Done, "authenticated from one datagram");
                }
                return outcome;
            }
            1 => {
                let (mut a, mut b) = self.establish();
                let mut msg = rest.to_vec();
                if msg.len() >= 16 {
                    let (ci, cr) = b.cookies();
                    msg[..8].copy_from_slice(&ci.to_be_bytes());
                    msg[8..16].copy_from_slice(&cr.to_be_bytes());
                }
                outcome.accepted = b.handle(now, &msg).is_ok();
                while b.poll_transmit().is_some() {}
                check_alive(&mut a, &mut b);
            }
            _ => {
                let (mut a, mut b) = self.establish();
                if rest.first().is_some_and(|x| x & 1 == 1) {
                    a.send_dpd().unwrap();
                } else {
                    a.start_quick_mode(now, 0).unwrap();
                }
                let mut msg = a.poll_transmit().unwrap().data;
                for (i, x) in rest.iter().skip(1).enumerate() {
                    let at = i % msg.len();
                    msg[at] ^= x;
                }
                outcome.accepted = b.handle(now, &msg).is_ok();
                while b.poll_transmit().is_some() {}
                check_alive(&mut a, &mut b);
            }
        }
        outcome
    }
}

impl Default for Ikev1ResponderHarness {
    fn default() -> Self {
        Self::new()
    }
}

/// Delivers datagrams both ways until both are quiet.
fn exchange(a: &mut Ikev1Sa, b: &mut Ikev1Sa) -> usize {
    let now = Instant::now();
    let mut n = 0;
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            n += 1;
            let _ = b.handle(now, &t.data);
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            n += 1;
            let _ = a.handle(now, &t.data);
        }
        assert!(n < 100, "no rest");
        if !moved {
            return n;
        }
    }
}

/// The established responder is up and answers DPD both ways.
fn check_alive(a: &mut Ikev1Sa, b: &mut Ikev1Sa) {
    assert!(!b.is_down(), "a forged datagram took the SA down");
    exchange(a, b);
    a.send_dpd().unwrap();
    assert_eq!(exchange(a, b), 2, "R-U-THERE from the initiator is answered");
    b.send_dpd().unwrap();
    assert_eq!(exchange(a, b), 2, "R-U-THERE from the responder is answered");
    assert!(!b.is_down() && !a.is_down());
}

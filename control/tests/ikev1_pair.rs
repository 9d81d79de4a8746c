//! IKEv1 in memory: an initiator and a responder `Ikev1Sa` joined by a
//! virtual network with loss and duplication, on virtual time. Main Mode
//! with PSK, Quick Mode with and without PFS in both directions, DELETE,
//! DPD, retransmission and the failures an operator must see.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::config::{ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
use control::crypto::CryptoError;
use control::ike_sa::{ChildSaInstall, Context, DownReason, Event};
use control::ikev1::{Ikev1Error, Ikev1Policy, Ikev1Sa, MainModeState, QuickModeState, starts_phase1};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use ironsa_crypto::{AwsLcProvider, RandomSource};

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";

fn conn(
    name: &str,
    local: &str,
    remote: &str,
    ike: &str,
    esp: &str,
    psk: &[u8],
    (lts, rts): (&str, &str),
) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(
        name,
        parse_identity(local),
        IdentityMatch::Exact(parse_identity(remote)),
        psk,
    );
    c.ike_proposals = parse_ike_proposals(ike).unwrap();
    c.ike_versions = control::config::IkeVersions::V1;
    c.retransmit_timeout = Duration::from_secs(1);
    c.retransmit_tries = 6;
    c.children.push(ChildConfig {
        name: format!("{name}-child"),
        esp_proposals: parse_esp_proposals(esp).unwrap(),
        local_ts: vec![parse_selector(lts).unwrap()],
        remote_ts: vec![parse_selector(rts).unwrap()],
        mode: IpsecMode::Tunnel,
        lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
    });
    c
}

fn pair_configs(ike: &str, esp: &str) -> (ConnectionConfig, ConnectionConfig) {
    (
        conn(
            "a",
            "a@test",
            "b@test",
            ike,
            esp,
            b"a-long-random-test-secret",
            ("10.1.0.0/24", "10.2.0.0/24"),
        ),
        conn(
            "b",
            "b@test",
            "a@test",
            ike,
            esp,
            b"a-long-random-test-secret",
            ("10.2.0.0/24", "10.1.0.0/24"),
        ),
    )
}

/// Deterministic pseudo-random numbers for the lossy network.
struct XorShift(u64);
impl XorShift {
    fn chance(&mut self, percent: u64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 100 < percent
    }
}

#[derive(Default)]
struct Seen {
    up: usize,
    down: Vec<DownReason>,
    installed: Vec<ChildSaInstall>,
    deleted: Vec<(u32, u32)>,
    failed: Vec<String>,
}

impl Seen {
    fn take(&mut self, sa: &mut Ikev1Sa) {
        while let Some(e) = sa.poll_event() {
            match e {
                Event::IkeSaUp { .. } => self.up += 1,
                Event::IkeSaDown { reason, .. } => self.down.push(reason),
                Event::ChildSaInstalled(c) => self.installed.push(*c),
                Event::ChildSaDeleted { spi_in, spi_out } => self.deleted.push((spi_in, spi_out)),
                Event::ChildSaFailed { reason, .. } => self.failed.push(reason),
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
}

struct Pair {
    now: Instant,
    ctx_b: Context,
    policy: Ikev1Policy,
    a: Ikev1Sa,
    b: Option<Ikev1Sa>,
    a_seen: Seen,
    b_seen: Seen,
    loss: u64,
    dup: u64,
    rng: XorShift,
    datagrams: usize,
    b_errors: Vec<Ikev1Error>,
}

impl Pair {
    fn start(a_conn: ConnectionConfig, b_conn: ConnectionConfig, seed: u64) -> Pair {
        Pair::start_mode(a_conn, b_conn, seed, false, Ikev1Policy::main_mode_only())
    }

    fn start_mode(
        a_conn: ConnectionConfig,
        b_conn: ConnectionConfig,
        seed: u64,
        aggressive: bool,
        policy: Ikev1Policy,
    ) -> Pair {
        let now = Instant::now();
        let ctx_a = Context::new(vec![Arc::new(a_conn.clone())], AwsLcProvider::seeded(seed).shared());
        let ctx_b = Context::new(vec![Arc::new(b_conn)], AwsLcProvider::seeded(seed + 1).shared());
        let a = if aggressive {
            Ikev1Sa::initiate_aggressive(&ctx_a, Arc::new(a_conn), addr(A), addr(B), now).unwrap()
        } else {
            Ikev1Sa::initiate(&ctx_a, Arc::new(a_conn), addr(A), addr(B), now).unwrap()
        };
        Pair {
            now,
            ctx_b,
            policy,
            a,
            b: None,
            a_seen: Seen::default(),
            b_seen: Seen::default(),
            loss: 0,
            dup: 0,
            rng: XorShift(seed | 1),
            datagrams: 0,
            b_errors: Vec::new(),
        }
    }

    /// Delivers datagrams and fires timers until both sides are quiet or
    /// `limit` of virtual time has passed.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(
                rounds < 10_000,
                "the two ends never come to rest: {} datagrams",
                self.datagrams
            );
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.datagrams += 1;
                for _ in 0..self.copies() {
                    self.deliver_to_b(&t.data);
                }
            }
            while let Some(t) = self.b.as_mut().and_then(Ikev1Sa::poll_transmit) {
                moved = true;
                self.datagrams += 1;
                for _ in 0..self.copies() {
                    let _ = self.a.handle(self.now, &t.data);
                }
            }
            self.a_seen.take(&mut self.a);
            if let Some(b) = &mut self.b {
                self.b_seen.take(b);
            }
            if moved {
                continue;
            }
            let next = [self.a.poll_timeout(), self.b.as_ref().and_then(Ikev1Sa::poll_timeout)]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    if let Some(b) = &mut self.b {
                        b.handle_timeout(self.now);
                    }
                }
                _ => return,
            }
        }
    }

    fn copies(&mut self) -> usize {
        assert!(self.datagrams < 5_000, "the two ends never come to rest");
        if self.rng.chance(self.loss) {
            0
        } else if self.rng.chance(self.dup) {
            2
        } else {
            1
        }
    }

    fn deliver_to_b(&mut self, data: &[u8]) {
        match &mut self.b {
            Some(b) => {
                if let Err(e) = b.handle(self.now, data) {
                    self.b_errors.push(e);
                }
            }
            None if starts_phase1(data) => {
                match Ikev1Sa::respond(&self.ctx_b, &self.policy, addr(B), addr(A), data, self.now) {
                    Ok(b) => self.b = Some(b),
                    Err(e) => self.b_errors.push(e),
                }
            }
            None => {}
        }
    }

    fn b(&mut self) -> &mut Ikev1Sa {
        self.b.as_mut().expect("responder exists")
    }
}

/// True when the next deadline is no retransmission but a lifetime (the
/// test lifetimes are an hour and more).
fn no_retransmission_pending(next: Option<Instant>, now: Instant) -> bool {
    next.is_none_or(|t| t > now + Duration::from_secs(600))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn assert_children_match(a: &ChildSaInstall, b: &ChildSaInstall) {
    assert_eq!((a.spi_in, a.spi_out), (b.spi_out, b.spi_in));
    assert_eq!(a.inbound.encr, b.outbound.encr);
    assert_eq!(a.inbound.integ, b.outbound.integ);
    assert_eq!(a.outbound.encr, b.inbound.encr);
    assert_ne!(a.inbound.encr, a.outbound.encr, "each direction has its own keys");
    assert_eq!((a.encr, a.integ, a.pfs, a.mode), (b.encr, b.integ, b.pfs, b.mode));
    assert_eq!(a.local_ts, b.remote_ts);
    assert_eq!(a.remote_ts, b.local_ts);
}

fn established(ike: &str, esp: &str, seed: u64) -> Pair {
    let (a, b) = pair_configs(ike, esp);
    let mut p = Pair::start(a, b, seed);
    p.run(Duration::from_secs(60));
    assert_eq!(p.a.state(), MainModeState::Done, "initiator: {:?}", p.b_errors);
    assert_eq!(p.b().state(), MainModeState::Done, "responder: {:?}", p.b_errors);
    assert_eq!((p.a_seen.up, p.b_seen.up), (1, 1));
    assert_eq!(p.a_seen.installed.len(), 1, "initiator child: {:?}", p.a_seen.failed);
    assert_eq!(
        p.b_seen.installed.len(),
        1,
        "responder child: {:?} {:?}",
        p.b_seen.failed,
        p.b_errors
    );
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    p
}

#[test]
fn main_mode_psk_and_quick_mode_without_pfs_install_matching_esp_sas() {
    let mut p = established("aes256-sha256-modp2048", "aes256-sha256", 11);
    assert_eq!(p.datagrams, 9, "6 Main Mode + 3 Quick Mode messages");
    let c = &p.a_seen.installed[0];
    assert_eq!(c.pfs, None);
    assert_eq!(c.inbound.encr.len(), 32);
    assert_eq!(c.inbound.integ.len(), 32);
    assert_eq!(c.local_ts, vec![parse_selector("10.1.0.0/24").unwrap()]);
    assert_eq!(p.a.cookies(), p.b().cookies());
    let qm = p.a.quick_modes();
    assert_eq!(qm.len(), 1);
    assert_eq!(qm[0].1, QuickModeState::Done);
    assert_eq!(qm[0].1.to_string(), "QM_DONE");
    assert_eq!(p.a.state().to_string(), "MM_DONE");
}

#[test]
fn quick_mode_with_pfs_and_aead() {
    let p = established("aes128-sha384-ecp256", "aes256gcm16-modp2048", 21);
    let c = &p.a_seen.installed[0];
    assert_eq!(c.pfs, Some(control::crypto::KeGroup::Modp2048));
    assert_eq!(c.integ, None);
    assert_eq!(c.inbound.encr.len(), 36, "AES-256 key and 4-byte salt");
}

#[test]
fn responder_can_start_a_quick_mode_too() {
    let mut p = established("aes256-sha256-modp2048", "aes128-sha256-modp2048", 31);
    let now = p.now;
    p.b().start_quick_mode(now, 0).unwrap();
    p.run(Duration::from_secs(30));
    assert_eq!(p.a_seen.installed.len(), 2);
    assert_eq!(p.b_seen.installed.len(), 2);
    assert_children_match(&p.a_seen.installed[1], &p.b_seen.installed[1]);
    assert_ne!(p.a_seen.installed[0].spi_in, p.a_seen.installed[1].spi_in);
}

#[test]
fn lossy_duplicating_network_still_establishes() {
    for seed in [41u64, 42, 43, 44, 45, 46] {
        let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256-modp2048");
        let mut p = Pair::start(a, b, seed);
        p.loss = 25;
        p.dup = 25;
        p.run(Duration::from_secs(300));
        assert_eq!(p.a.state(), MainModeState::Done, "seed {seed}: {:?}", p.b_errors);
        assert_eq!(p.b().state(), MainModeState::Done, "seed {seed}");
        assert_eq!(p.a_seen.installed.len(), 1, "seed {seed}: {:?}", p.a_seen.failed);
        assert_eq!(p.b_seen.installed.len(), 1, "seed {seed}: {:?}", p.b_seen.failed);
        assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
        assert!(p.a_seen.down.is_empty() && p.b_seen.down.is_empty(), "seed {seed}");
        // Every exchange ends quiet: only lifetimes left, no ping-pong of repeats.
        let now = p.now;
        assert!(no_retransmission_pending(p.a.poll_timeout(), now), "seed {seed}");
        assert!(no_retransmission_pending(p.b().poll_timeout(), now), "seed {seed}");
    }
}

#[test]
fn duplicated_messages_are_answered_but_never_ping_pong() {
    let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let mut p = Pair::start(a, b, 47);
    p.dup = 60;
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.installed.len(), 1);
    assert_eq!(p.b_seen.installed.len(), 1);
    assert!(p.datagrams < 60, "{} datagrams for 9 messages", p.datagrams);
    let quiet = p.datagrams;
    p.run(Duration::from_secs(600));
    assert_eq!(p.datagrams, quiet, "nothing moves once both ends are done");
}

#[test]
fn lost_last_messages_are_recovered_by_retransmission() {
    // Drop exactly Main Mode message 6 once, and Quick Mode message 3 once.
    let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let mut p = Pair::start(a, b, 51);
    let mut sent_by_b = 0;
    let mut sent_by_a = 0;
    for _ in 0..200 {
        while let Some(t) = p.a.poll_transmit() {
            sent_by_a += 1;
            if sent_by_a != 5 {
                p.deliver_to_b(&t.data);
            }
        }
        if let Some(b) = &mut p.b {
            while let Some(t) = b.poll_transmit() {
                sent_by_b += 1;
                if sent_by_b != 3 {
                    let _ = p.a.handle(p.now, &t.data);
                }
            }
        }
        p.a_seen.take(&mut p.a);
        if let Some(b) = &mut p.b {
            p.b_seen.take(b);
        }
        let next = [p.a.poll_timeout(), p.b.as_ref().and_then(Ikev1Sa::poll_timeout)]
            .into_iter()
            .flatten()
            .min();
        let Some(t) = next.filter(|t| !no_retransmission_pending(Some(*t), p.now)) else {
            break;
        };
        p.now = p.now.max(t);
        p.a.handle_timeout(p.now);
        let now = p.now;
        p.b().handle_timeout(now);
    }
    assert_eq!(p.a_seen.installed.len(), 1);
    assert_eq!(p.b_seen.installed.len(), 1);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
}

#[test]
fn wrong_psk_fails_authentication() {
    let (a, mut b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    b.local_auth = ConnectionConfig::new(
        "x",
        parse_identity("b@test"),
        IdentityMatch::Any,
        b"another-secret-entirely",
    )
    .local_auth;
    let mut p = Pair::start(a, b, 61);
    p.run(Duration::from_secs(120));
    assert_eq!(p.b_seen.up, 0);
    assert_eq!(p.a_seen.up, 0);
    assert!(
        matches!(&p.b_seen.down[..], [DownReason::Failed(why)] if why.contains("pre-shared keys differ")),
        "{:?} {:?}",
        p.b_seen.down,
        p.b_errors
    );
    assert_eq!(p.a_seen.down, vec![DownReason::Timeout]);
    assert!(p.a_seen.installed.is_empty() && p.b_seen.installed.is_empty());
}

#[test]
fn half_open_responder_is_dropped_when_the_initiator_vanishes() {
    let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let mut p = Pair::start(a, b, 63);
    // Only Main Mode message 1 reaches the responder.
    let first = p.a.poll_transmit().unwrap();
    p.deliver_to_b(&first.data);
    assert_eq!(p.b().state(), MainModeState::SaRcvd);
    let deadline = p.b().poll_timeout().expect("a half-open responder has a deadline");
    p.now = deadline;
    let now = p.now;
    p.b().handle_timeout(now);
    let b = p.b.as_mut().unwrap();
    p.b_seen.take(b);
    assert_eq!(p.b_seen.down, vec![DownReason::Timeout]);
    assert!(p.b().is_down());
    assert_eq!(p.b().poll_timeout(), None);
}

#[test]
fn wrong_identity_is_refused() {
    let (a, mut b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    b.remote_id = IdentityMatch::Exact(parse_identity("someone-else@test"));
    let mut p = Pair::start(a, b, 62);
    p.run(Duration::from_secs(120));
    assert!(
        matches!(&p.b_seen.down[..], [DownReason::Failed(why)] if why.contains("identity")),
        "{:?}",
        p.b_seen.down
    );
}

#[test]
fn no_common_proposal_is_explained() {
    let (a, _) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let (_, b) = pair_configs("aes128-sha512-ecp384", "aes256-sha256");
    let mut p = Pair::start(a, b, 71);
    p.run(Duration::from_secs(5));
    assert!(p.b.is_none());
    assert!(
        matches!(&p.b_errors[0], Ikev1Error::NoProposalChosen(why) if why.contains("aes256")),
        "{:?}",
        p.b_errors
    );
    // The initiator gives up after its retransmissions.
    p.run(Duration::from_secs(600));
    assert_eq!(p.a_seen.down, vec![DownReason::Timeout]);
}

#[test]
fn quick_mode_selectors_outside_the_responders_are_refused() {
    let (a, mut b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    b.children[0].remote_ts = vec![parse_selector("10.9.0.0/24").unwrap()];
    let mut p = Pair::start(a, b, 81);
    p.run(Duration::from_secs(60));
    assert_eq!((p.a_seen.up, p.b_seen.up), (1, 1));
    assert!(p.b_seen.installed.is_empty() && p.a_seen.installed.is_empty());
    assert!(
        p.b_errors.iter().any(|e| matches!(e, Ikev1Error::TsUnacceptable(_))),
        "{:?}",
        p.b_errors
    );
    // The responder's notify ends the initiator's Quick Mode at once; the ISAKMP SA stays.
    assert!(
        matches!(&p.a_seen.failed[..], [why] if why.contains("INVALID_ID_INFORMATION")),
        "{:?}",
        p.a_seen.failed
    );
    assert!(p.a_seen.down.is_empty() && p.b_seen.down.is_empty());
    assert!(
        no_retransmission_pending(p.a.poll_timeout(), p.now),
        "no retransmission left"
    );
    assert_eq!(p.a.state(), MainModeState::Done);
}

#[test]
fn dpd_and_delete() {
    let mut p = established("aes256-sha256-modp2048", "aes256-sha256", 91);
    let before = p.datagrams;
    p.a.send_dpd().unwrap();
    p.run(Duration::from_secs(5));
    assert_eq!(p.datagrams, before + 2, "R-U-THERE and its ACK");
    assert!(p.b_errors.is_empty(), "{:?}", p.b_errors);
    p.a.delete().unwrap();
    p.run(Duration::from_secs(5));
    let a_child = &p.a_seen.installed[0];
    assert_eq!(p.a_seen.deleted, vec![(a_child.spi_in, a_child.spi_out)]);
    assert_eq!(p.b_seen.deleted, vec![(a_child.spi_out, a_child.spi_in)]);
    assert_eq!(p.a_seen.down, vec![DownReason::Deleted]);
    assert_eq!(p.b_seen.down, vec![DownReason::Deleted]);
    assert!(p.b().is_down());
}

#[test]
fn garbage_and_out_of_state_messages_do_not_disturb_the_sa() {
    let mut p = established("aes256-sha256-modp2048", "aes256-sha256", 101);
    let (ci, cr) = p.a.cookies();
    let now = p.now;
    // Truncated, not ISAKMP, wrong cookies, an exchange in the wrong state.
    assert!(matches!(p.b().handle(now, &[1, 2, 3]), Err(Ikev1Error::Wire(_))));
    let mut hdr = vec![0u8; 28];
    hdr[..8].copy_from_slice(&ci.to_be_bytes());
    hdr[8..16].copy_from_slice(&cr.to_be_bytes());
    hdr[17] = 0x10;
    hdr[18] = 4; // Aggressive Mode on an established SA
    hdr[27] = 28;
    assert!(matches!(
        p.b().handle(now, &hdr),
        Err(Ikev1Error::UnexpectedMessage { .. })
    ));
    hdr[18] = 200;
    assert!(matches!(p.b().handle(now, &hdr), Err(Ikev1Error::Wire(_))));
    hdr[18] = 32; // Quick Mode, encrypted flag, a body that is not ciphertext
    hdr[19] = 1;
    hdr[20..24].copy_from_slice(&7u32.to_be_bytes());
    hdr.extend_from_slice(&[0x55; 32]);
    hdr[27] = 60;
    assert!(p.b().handle(now, &hdr).is_err());
    let mut other = hdr.clone();
    other[0] ^= 1;
    assert!(p.b().handle(now, &other).is_err());
    // Still answering DPD, and Quick Mode still works.
    p.a.send_dpd().unwrap();
    p.a.start_quick_mode(now, 0).unwrap();
    p.run(Duration::from_secs(10));
    assert_eq!(p.b_seen.installed.len(), 2);
    assert_children_match(&p.a_seen.installed[1], &p.b_seen.installed[1]);
}

/// A random source that always fails.
struct BrokenRandom;

impl RandomSource for BrokenRandom {
    fn fill(&self, _: &mut [u8]) -> Result<(), CryptoError> {
        Err(CryptoError::Rng)
    }
}

#[test]
fn random_source_failure_is_an_error_not_a_fallback() {
    let (a, _) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let ctx = Context::new(vec![], AwsLcProvider::with_random(BrokenRandom).shared());
    let err = Ikev1Sa::initiate(&ctx, Arc::new(a), addr(A), addr(B), Instant::now()).unwrap_err();
    assert_eq!(err, Ikev1Error::Crypto(CryptoError::Rng));
}

#[test]
fn aggressive_mode_psk_when_enabled_then_quick_mode() {
    for seed in [111u64, 112] {
        let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256-modp2048");
        let mut p = Pair::start_mode(a, b, seed, true, Ikev1Policy::aggressive_psk());
        p.dup = 30;
        p.run(Duration::from_secs(60));
        assert_eq!(p.a.state_name(), "AM_DONE", "{:?}", p.b_errors);
        assert_eq!(p.b().state_name(), "AM_DONE");
        assert!(p.a.is_aggressive());
        assert_eq!((p.a_seen.up, p.b_seen.up), (1, 1));
        assert_eq!(p.a_seen.installed.len(), 1, "{:?}", p.a_seen.failed);
        assert_eq!(p.b_seen.installed.len(), 1, "{:?}", p.b_seen.failed);
        assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    }
}

#[test]
fn aggressive_mode_is_answered_for_the_connections_that_enable_it() {
    // The endpoint policy stays Main Mode only; the connection says aggressive.
    let (a, mut b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    b.aggressive = true;
    let mut p = Pair::start_mode(a.clone(), b, 221, true, Ikev1Policy::main_mode_only());
    p.run(Duration::from_secs(30));
    assert_eq!(p.b().state_name(), "AM_DONE", "{:?}", p.b_errors);
    assert_eq!(p.a_seen.installed.len(), 1, "{:?}", p.a_seen.failed);
    // Another connection of the responder, not enabled, is not chosen.
    let (_, mut other) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    other.name = "main-only".into();
    let (_, mut enabled) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    enabled.aggressive = true;
    enabled.remote_id = IdentityMatch::Exact(parse_identity("someone-else@test"));
    let ctx_b = Context::new(
        vec![Arc::new(other), Arc::new(enabled)],
        AwsLcProvider::seeded(223).shared(),
    );
    let ctx_a = Context::new(vec![Arc::new(a.clone())], AwsLcProvider::seeded(222).shared());
    let now = Instant::now();
    let mut init = Ikev1Sa::initiate_aggressive(&ctx_a, Arc::new(a), addr(A), addr(B), now).unwrap();
    let am1 = init.poll_transmit().unwrap();
    let refused = Ikev1Sa::respond(&ctx_b, &Ikev1Policy::main_mode_only(), addr(B), addr(A), &am1.data, now);
    assert!(
        matches!(&refused, Err(Ikev1Error::NoConnection(_))),
        "{:?}",
        refused.map(|sa| sa.state_name())
    );
}

#[test]
fn aggressive_mode_is_refused_by_default_and_with_a_wrong_psk() {
    let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let mut p = Pair::start_mode(a, b, 121, true, Ikev1Policy::main_mode_only());
    p.run(Duration::from_secs(5));
    assert!(p.b.is_none());
    assert!(
        matches!(&p.b_errors[0], Ikev1Error::NoConnection(why) if why.contains("Aggressive Mode is disabled")),
        "{:?}",
        p.b_errors
    );
    let (a, mut b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    b.local_auth = ConnectionConfig::new(
        "x",
        parse_identity("b@test"),
        IdentityMatch::Any,
        b"another-secret-entirely",
    )
    .local_auth;
    let mut p = Pair::start_mode(a, b, 122, true, Ikev1Policy::aggressive_psk());
    p.run(Duration::from_secs(60));
    assert!(
        matches!(&p.a_seen.down[..], [DownReason::Failed(why)] if why.contains("HASH_R does not verify")),
        "{:?}",
        p.a_seen.down
    );
    assert_eq!(p.b_seen.up, 0);
}

#[test]
fn endpoints_demultiplex_by_cookie_and_forget_deleted_sas() {
    use control::ikev1::Ikev1Endpoint;
    let (a_conn, b_conn) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let a_conn = Arc::new(a_conn);
    let ctx_a = Context::new(vec![a_conn.clone()], AwsLcProvider::seeded(131).shared());
    let ctx_b = Context::new(vec![Arc::new(b_conn)], AwsLcProvider::seeded(132).shared());
    let mut a = Ikev1Endpoint::new(ctx_a, Ikev1Policy::main_mode_only());
    let mut b = Ikev1Endpoint::new(ctx_b, Ikev1Policy::main_mode_only());
    let now = Instant::now();
    let (pa, pb) = (addr(A), addr(B));
    // Two SAs at once; every datagram to B is delivered twice.
    a.initiate(now, a_conn.clone(), pa, pb, false).unwrap();
    a.initiate(now, a_conn.clone(), pa, pb, false).unwrap();
    let mut installed = (0, 0);
    let pump = |a: &mut Ikev1Endpoint, b: &mut Ikev1Endpoint, installed: &mut (usize, usize)| {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(t) = a.poll_transmit() {
                moved = true;
                let _ = b.handle(now, pb, pa, &t.data);
                let _ = b.handle(now, pb, pa, &t.data);
            }
            while let Some(t) = b.poll_transmit() {
                moved = true;
                let _ = a.handle(now, pa, pb, &t.data);
            }
            while let Some(e) = a.poll_event() {
                installed.0 += usize::from(matches!(e, Event::ChildSaInstalled(_)));
            }
            while let Some(e) = b.poll_event() {
                installed.1 += usize::from(matches!(e, Event::ChildSaInstalled(_)));
            }
            if !moved {
                return;
            }
        }
        panic!("endpoints never came to rest");
    };
    pump(&mut a, &mut b, &mut installed);
    assert_eq!(installed, (2, 2));
    assert_eq!(
        b.sas().count(),
        2,
        "one responder SA per initiator, duplicates answered"
    );
    assert!(a.sas().chain(b.sas()).all(|sa| sa.state() == MainModeState::Done));
    assert!(no_retransmission_pending(a.poll_timeout(), now));
    let first = a.sas().next().unwrap().cookies().0;
    assert!(a.delete(first).unwrap());
    pump(&mut a, &mut b, &mut installed);
    assert_eq!(
        (a.sas().count(), b.sas().count()),
        (1, 1),
        "deleted SAs are forgotten on both sides"
    );
    // Unknown cookies and the half-open cap are refused with reasons.
    let mut c = Ikev1Endpoint::new(
        Context::new(vec![], AwsLcProvider::seeded(133).shared()),
        Ikev1Policy::main_mode_only(),
    );
    c.set_max_half_open(0);
    a.initiate(now, a_conn, pa, pb, false).unwrap();
    let mm1 = a.poll_transmit().unwrap();
    assert!(
        matches!(c.handle(now, pb, pa, &mm1.data), Err(Ikev1Error::NoConnection(why)) if why.contains("unauthenticated"))
    );
    let mut stray = mm1.data.clone();
    stray[8] = 1;
    assert!(matches!(
        b.handle(now, pb, pa, &stray),
        Err(Ikev1Error::InvalidMessage(_))
    ));
}

#[test]
fn an_ikev2_only_connection_is_not_offered_to_ikev1_peers() {
    let (a, mut b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    b.ike_versions = control::config::IkeVersions::V2;
    let mut p = Pair::start(a, b, 141);
    p.run(Duration::from_secs(3));
    assert!(p.b.is_none());
    assert!(
        matches!(&p.b_errors[0], Ikev1Error::NoConnection(_)),
        "{:?}",
        p.b_errors
    );
}

#[test]
fn endpoint_timers_retransmit_give_up_and_drop_half_open_sas() {
    use control::ikev1::Ikev1Endpoint;
    let (a_conn, b_conn) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let a_conn = Arc::new(a_conn);
    let mut a = Ikev1Endpoint::new(
        Context::new(vec![a_conn.clone()], AwsLcProvider::seeded(151).shared()),
        Ikev1Policy::main_mode_only(),
    );
    let mut b = Ikev1Endpoint::new(
        Context::new(vec![Arc::new(b_conn)], AwsLcProvider::seeded(152).shared()),
        Ikev1Policy::main_mode_only(),
    );
    let start = Instant::now();
    a.initiate(start, a_conn.clone(), addr(A), addr(B), false).unwrap();
    let mm1 = a.poll_transmit().unwrap();
    // Nobody answers: 6 retransmissions, then the SA is gone.
    let mut sent = 0;
    while let Some(t) = a.poll_timeout() {
        a.handle_timeout(t);
        sent += std::iter::from_fn(|| a.poll_transmit()).count();
    }
    assert_eq!(sent, 6);
    assert!(std::iter::from_fn(|| a.poll_event()).any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Timeout,
            ..
        }
    )));
    assert_eq!(a.sas().count(), 0);
    // A responder left after message 1 is dropped at its half-open deadline.
    b.handle(start, addr(B), addr(A), &mm1.data).unwrap();
    assert_eq!(b.sas().count(), 1);
    let deadline = b.poll_timeout().expect("half-open deadline");
    assert!(deadline > start);
    b.handle_timeout(deadline);
    assert_eq!(b.sas().count(), 0);
    assert_eq!(b.poll_timeout(), None);
}

fn with_child_lifetime(mut c: ConnectionConfig, seconds: u64) -> ConnectionConfig {
    c.children[0].lifetime = Lifetime::rekey_after(Duration::from_secs(seconds));
    c
}

/// The ESP SA pairs of `sa` that are established, as (in, out) SPIs.
fn established_pairs(sa: &Ikev1Sa) -> Vec<(u32, u32)> {
    sa.esp_sas()
        .iter()
        .filter(|e| e.state == QuickModeState::Done)
        .map(|e| (e.spi_in, e.spi_out))
        .collect()
}

#[test]
fn quick_mode_rekeys_before_the_hard_lifetime_whichever_side_is_shorter() {
    // First the Quick Mode responder's lifetime is the short one, then the
    // initiator's: each side's timer starts a rekey in its turn.
    for (seed, a_life, b_life) in [(161, 3600, 60), (171, 60, 3600)] {
        let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
        let (a, b) = (with_child_lifetime(a, a_life), with_child_lifetime(b, b_life));
        let mut p = Pair::start(a, b, seed);
        p.run(Duration::from_secs(5));
        assert_eq!(p.a_seen.installed.len(), 1, "{:?}", p.a_seen.failed);
        let start = p.now;
        // Past the soft lifetime (at most 60 s) and short of the hard one (66 s).
        p.run(Duration::from_secs(62));
        assert!(p.now < start + Duration::from_secs(66));
        assert_eq!(
            p.a_seen.installed.len(),
            2,
            "seed {seed}: {:?} {:?}",
            p.a_seen.failed,
            p.b_errors
        );
        assert_eq!(p.b_seen.installed.len(), 2, "seed {seed}: {:?}", p.b_seen.failed);
        let (a_new, b_new) = (&p.a_seen.installed[1], &p.b_seen.installed[1]);
        assert_children_match(a_new, b_new);
        assert_eq!(
            a_new.rekey_of,
            Some(p.a_seen.installed[0].spi_in),
            "the data plane moves the policies"
        );
        assert_eq!(b_new.rekey_of, Some(p.b_seen.installed[0].spi_in));
        // The side that rekeyed deleted the old pair, and told the other.
        let old_a = (p.a_seen.installed[0].spi_in, p.a_seen.installed[0].spi_out);
        let old_b = (p.b_seen.installed[0].spi_in, p.b_seen.installed[0].spi_out);
        assert_eq!(p.a_seen.deleted, vec![old_a], "seed {seed}");
        assert_eq!(p.b_seen.deleted, vec![old_b], "seed {seed}");
        assert_eq!(established_pairs(&p.a), vec![(a_new.spi_in, a_new.spi_out)]);
        assert_eq!(
            established_pairs(p.b.as_ref().unwrap()),
            vec![(b_new.spi_in, b_new.spi_out)]
        );
        // It goes on: five minutes later still one pair each, matching, and
        // never a hard expiry (every deleted pair was replaced first).
        p.run(Duration::from_secs(300));
        assert!(p.a_seen.installed.len() >= 6, "{}", p.a_seen.installed.len());
        assert!(p.a_seen.failed.is_empty() && p.b_seen.failed.is_empty());
        let (pa, pb) = (established_pairs(&p.a), established_pairs(p.b.as_ref().unwrap()));
        assert_eq!(pa.len(), 1, "{pa:?}");
        assert_eq!(pb, vec![(pa[0].1, pa[0].0)]);
        assert_eq!(p.a.state(), MainModeState::Done);
        assert!(p.a_seen.down.is_empty() && p.b_seen.down.is_empty());
    }
}

#[test]
fn an_esp_sa_that_cannot_be_rekeyed_is_deleted_at_its_hard_lifetime() {
    let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let mut p = Pair::start(with_child_lifetime(a, 60), with_child_lifetime(b, 3600), 181);
    p.run(Duration::from_secs(5));
    assert_eq!(p.a_seen.installed.len(), 1);
    let start = p.now;
    // The peer goes silent: the rekey is started and retransmitted.
    p.loss = 100;
    p.run(Duration::from_secs(65));
    assert!(p.now < start + Duration::from_secs(66));
    assert!(p.a_seen.deleted.is_empty(), "not before the hard lifetime");
    assert!(
        p.a.quick_modes().iter().any(|(_, s)| *s == QuickModeState::InitSent),
        "a rekey is under way: {:?}",
        p.a.quick_modes()
    );
    p.run(Duration::from_secs(5));
    let first = &p.a_seen.installed[0];
    assert_eq!(p.a_seen.deleted, vec![(first.spi_in, first.spi_out)]);
    assert!(established_pairs(&p.a).is_empty());
}

#[test]
fn quick_mode_with_the_commit_bit_installs_at_once_as_strongswan_does() {
    let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    let mut p = Pair::start(a, b, 191);
    // Main Mode first, without the child's Quick Mode going through.
    p.loss = 0;
    for _ in 0..3 {
        while let Some(t) = p.a.poll_transmit() {
            p.deliver_to_b(&t.data);
        }
        while let Some(t) = p.b.as_mut().and_then(Ikev1Sa::poll_transmit) {
            p.a.handle(p.now, &t.data).unwrap();
        }
    }
    assert_eq!(p.a.state(), MainModeState::Done);
    // Quick Mode message 1 is in a's queue; b's message 2 gets the commit
    // bit (outside the HASH, as an intermediate box could set it).
    while let Some(t) = p.a.poll_transmit() {
        p.deliver_to_b(&t.data);
    }
    let mut qm2 = p.b().poll_transmit().expect("Quick Mode message 2").data;
    qm2[19] |= control::wire::isakmp::FLAG_COMMIT;
    p.a.handle(p.now, &qm2).unwrap();
    p.a_seen.take(&mut p.a);
    assert_eq!(p.a_seen.installed.len(), 1, "installed without waiting for CONNECTED");
    p.run(Duration::from_secs(5));
    assert_eq!(p.b_seen.installed.len(), 1);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
}

/// Two endpoints on virtual time; returns the events each saw.
struct EndpointPair {
    now: Instant,
    a: control::ikev1::Ikev1Endpoint,
    b: control::ikev1::Ikev1Endpoint,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
}

impl EndpointPair {
    fn new(a_conn: Arc<ConnectionConfig>, b_conn: ConnectionConfig, seed: u64) -> Self {
        use control::ikev1::Ikev1Endpoint;
        let ctx_a = Context::new(vec![a_conn], AwsLcProvider::seeded(seed).shared());
        let ctx_b = Context::new(vec![Arc::new(b_conn)], AwsLcProvider::seeded(seed + 1).shared());
        EndpointPair {
            now: Instant::now(),
            a: Ikev1Endpoint::new(ctx_a, Ikev1Policy::main_mode_only()),
            b: Ikev1Endpoint::new(ctx_b, Ikev1Policy::main_mode_only()),
            a_events: Vec::new(),
            b_events: Vec::new(),
        }
    }

    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        let (pa, pb) = (addr(A), addr(B));
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                let _ = self.b.handle(self.now, pb, pa, &t.data);
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                let _ = self.a.handle(self.now, pa, pb, &t.data);
            }
            self.a_events.extend(std::iter::from_fn(|| self.a.poll_event()));
            self.b_events.extend(std::iter::from_fn(|| self.b.poll_event()));
            if moved {
                continue;
            }
            match [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
            {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => return,
            }
        }
        panic!("endpoints never came to rest");
    }
}

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

#[test]
fn phase1_is_reauthenticated_before_expiry_and_the_esp_sas_carry_over() {
    let (mut a, mut b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    a.ike_lifetime = Lifetime::rekey_after(Duration::from_secs(100));
    b.ike_lifetime = Lifetime::rekey_after(Duration::from_secs(3600));
    let (a, b) = (with_child_lifetime(a, 150), with_child_lifetime(b, 3600));
    let a = Arc::new(a);
    let mut p = EndpointPair::new(a.clone(), b, 201);
    p.a.initiate(p.now, a, addr(A), addr(B), false).unwrap();
    p.run(Duration::from_secs(5));
    let first = p.a.sas().next().unwrap().cookies();
    let child_a = established_pairs(p.a.sas().next().unwrap());
    assert_eq!(child_a.len(), 1);
    // Past the ISAKMP SA's soft lifetime (at most 100 s), short of its hard one.
    p.run(Duration::from_secs(105));
    let up = |e: &Event| matches!(e, Event::IkeSaUp { .. });
    let installed = |e: &Event| matches!(e, Event::ChildSaInstalled(_));
    let deleted = |e: &Event| matches!(e, Event::ChildSaDeleted { .. });
    assert_eq!((count(&p.a_events, up), count(&p.b_events, up)), (2, 2));
    assert_eq!(p.a.sas().count(), 1, "the old ISAKMP SA is deleted");
    assert_eq!(p.b.sas().count(), 1, "and the peer forgot it on our DELETE");
    let sa_a = p.a.sas().next().unwrap();
    let sa_b = p.b.sas().next().unwrap();
    assert_ne!(sa_a.cookies(), first);
    assert!(sa_a.is_reauth());
    assert_eq!(sa_a.cookies(), sa_b.cookies());
    // The ESP SAs were not renegotiated nor deleted: the new SA carries them.
    assert_eq!(count(&p.a_events, installed), 1);
    assert_eq!((count(&p.a_events, deleted), count(&p.b_events, deleted)), (0, 0));
    assert_eq!(established_pairs(sa_a), child_a);
    assert_eq!(established_pairs(sa_b), vec![(child_a[0].1, child_a[0].0)]);
    // And they are rekeyed under the new ISAKMP SA at their own lifetime.
    p.run(Duration::from_secs(50));
    assert_eq!(count(&p.a_events, installed), 2);
    let (sa_a, sa_b) = (p.a.sas().next().unwrap(), p.b.sas().next().unwrap());
    let now_a = established_pairs(sa_a);
    assert_eq!(now_a.len(), 1);
    assert_ne!(now_a, child_a);
    assert_eq!(established_pairs(sa_b), vec![(now_a[0].1, now_a[0].0)]);
}

#[test]
fn an_isakmp_sa_that_cannot_be_reauthenticated_is_deleted_at_its_hard_lifetime() {
    let (mut a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    a.ike_lifetime = Lifetime::rekey_after(Duration::from_secs(100));
    let a = Arc::new(a);
    let mut p = EndpointPair::new(a.clone(), b, 211);
    p.a.initiate(p.now, a, addr(A), addr(B), false).unwrap();
    p.run(Duration::from_secs(5));
    let start = p.now;
    let first = p.a.sas().next().unwrap().cookies();
    // b forgets everything (say, a restart): the reauthentication is refused
    // nowhere but simply never completes.
    p.b = control::ikev1::Ikev1Endpoint::new(
        Context::new(vec![], AwsLcProvider::seeded(212).shared()),
        Ikev1Policy::main_mode_only(),
    );
    p.run(Duration::from_secs(120));
    assert!(p.now >= start + Duration::from_secs(100));
    let states: Vec<_> = p.a.sas().map(|sa| (sa.cookies(), sa.state())).collect();
    assert!(
        p.a.sas()
            .all(|sa| sa.cookies() != first && sa.state() != MainModeState::Done),
        "the ISAKMP SA is gone at its hard lifetime, its replacement never came up: {states:?}"
    );
    assert_eq!(count(&p.a_events, |e| matches!(e, Event::ChildSaDeleted { .. })), 1);
}

/// Main Mode and Quick Mode through a NAT that maps A's ports 500 and
/// 4500 to 203.0.113.9:31000 and :31001, on two endpoints.
fn through_nat(force_udp_encap: bool, nat: bool, seed: u64) -> (EndpointPair, Vec<bool>) {
    through_nat_in(false, force_udp_encap, nat, seed)
}

fn through_nat_in(aggressive: bool, force_udp_encap: bool, nat: bool, seed: u64) -> (EndpointPair, Vec<bool>) {
    let (mut a, mut b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
    a.force_udp_encap = force_udp_encap;
    b.aggressive = aggressive;
    let a = Arc::new(a);
    let mut p = EndpointPair::new(a.clone(), b, seed);
    p.a.initiate(p.now, a, addr(A), addr(B), aggressive).unwrap();
    let public = |port: u16| -> SocketAddr {
        if !nat {
            return SocketAddr::new(addr(A).ip(), port);
        }
        SocketAddr::new("203.0.113.9".parse().unwrap(), if port == 500 { 31000 } else { 31001 })
    };
    let private = |s: SocketAddr| -> SocketAddr {
        if !nat {
            return s;
        }
        SocketAddr::new(addr(A).ip(), if s.port() == 31000 { 500 } else { 4500 })
    };
    let mut markers = Vec::new();
    for _ in 0..50 {
        let mut moved = false;
        while let Some(t) = p.a.poll_transmit() {
            moved = true;
            markers.push(t.non_esp_marker);
            assert_eq!(
                t.non_esp_marker,
                t.local.port() == 4500,
                "the marker goes with port 4500"
            );
            p.b.handle(p.now, t.remote, public(t.local.port()), &t.data).unwrap();
        }
        while let Some(t) = p.b.poll_transmit() {
            moved = true;
            assert_eq!(t.non_esp_marker, t.local.port() == 4500);
            p.a.handle(p.now, private(t.remote), t.local, &t.data).unwrap();
        }
        p.a_events.extend(std::iter::from_fn(|| p.a.poll_event()));
        p.b_events.extend(std::iter::from_fn(|| p.b.poll_event()));
        if !moved {
            break;
        }
    }
    (p, markers)
}

fn installs(events: &[Event]) -> Vec<&ChildSaInstall> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaInstalled(c) => Some(&**c),
            _ => None,
        })
        .collect()
}

#[test]
fn nat_traversal_floats_to_4500_and_encapsulates_esp() {
    let (p, markers) = through_nat(false, true, 231);
    let (sa_a, sa_b) = (p.a.sas().next().unwrap(), p.b.sas().next().unwrap());
    assert_eq!((sa_a.state(), sa_b.state()), (MainModeState::Done, MainModeState::Done));
    assert!(sa_a.behind_nat() && sa_b.behind_nat());
    // Messages 1-4 on port 500, the rest on 4500 with the marker.
    assert_eq!(&markers[..3], &[false, false, true]);
    assert_eq!(sa_a.local_addr(), "192.0.2.1:4500".parse().unwrap());
    assert_eq!(sa_a.remote_addr(), "192.0.2.2:4500".parse().unwrap());
    assert_eq!(sa_b.remote_addr(), "203.0.113.9:31001".parse().unwrap());
    assert_eq!(sa_b.local_addr().port(), 4500);
    let (ia, ib) = (installs(&p.a_events), installs(&p.b_events));
    assert_eq!((ia.len(), ib.len()), (1, 1));
    assert_children_match(ia[0], ib[0]);
    assert!(ia[0].udp_encap && ib[0].udp_encap, "ESP in UDP (RFC 3948)");
    assert_eq!((ia[0].local, ia[0].remote), (sa_a.local_addr(), sa_a.remote_addr()));
    assert_eq!(ib[0].remote, "203.0.113.9:31001".parse().unwrap());
}

#[test]
fn without_a_nat_nothing_moves_unless_encapsulation_is_forced() {
    let (p, markers) = through_nat(false, false, 241);
    let sa_a = p.a.sas().next().unwrap();
    assert_eq!(sa_a.state(), MainModeState::Done);
    assert!(!sa_a.behind_nat() && !p.b.sas().next().unwrap().behind_nat());
    assert!(markers.iter().all(|m| !m));
    assert!(!installs(&p.a_events)[0].udp_encap);
    // force_udp_encap makes our NAT-D lie, so both ends encapsulate.
    let (p, _) = through_nat(true, false, 251);
    let (sa_a, sa_b) = (p.a.sas().next().unwrap(), p.b.sas().next().unwrap());
    assert!(sa_a.behind_nat() && sa_b.behind_nat());
    assert_eq!(sa_a.local_addr().port(), 4500);
    assert!(installs(&p.a_events)[0].udp_encap && installs(&p.b_events)[0].udp_encap);
}

#[test]
fn aggressive_mode_nat_traversal_floats_message_3() {
    let (p, markers) = through_nat_in(true, false, true, 261);
    let (sa_a, sa_b) = (p.a.sas().next().unwrap(), p.b.sas().next().unwrap());
    assert_eq!(
        (sa_a.state_name(), sa_b.state_name()),
        ("AM_DONE".into(), "AM_DONE".into())
    );
    assert!(sa_a.behind_nat() && sa_b.behind_nat());
    // Message 1 on 500, message 3 and Quick Mode on 4500 with the marker.
    assert_eq!(&markers[..2], &[false, true]);
    assert_eq!(sa_b.remote_addr(), "203.0.113.9:31001".parse().unwrap());
    let (ia, ib) = (installs(&p.a_events), installs(&p.b_events));
    assert_eq!((ia.len(), ib.len()), (1, 1));
    assert_children_match(ia[0], ib[0]);
    assert!(ia[0].udp_encap && ib[0].udp_encap);
}

/// Main Mode with certificates (RFC 2409 §5.1): SIG over HASH_I/HASH_R,
/// CERT and CERTREQ payloads, IDs matched against the certificates.
mod certificates {
    use super::*;
    use control::config::{AuthConfig, LocalCert};
    use control::pki::{Certificate, PrivateKey, TrustStore};

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/pki/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// `conn` signing as `id` with the certificates `chain` and `key`,
    /// trusting the peer's certificate from `ca`.
    fn signing(mut c: ConnectionConfig, id: &str, chain: &[&str], key: &str, ca: &str, peer: &str) -> ConnectionConfig {
        c.local_id = parse_identity(id);
        c.remote_id = IdentityMatch::parse(peer);
        c.local_auth = AuthConfig::Cert(Arc::new(LocalCert {
            key: PrivateKey::load(&data(key)).unwrap(),
            chain: chain
                .iter()
                .map(|f| Certificate::load(&data(f)).unwrap().remove(0))
                .collect(),
        }));
        let mut trust = TrustStore::new();
        trust.add_pem_or_der(&data(ca)).unwrap();
        c.remote_auth = AuthConfig::PubKey(Arc::new(trust));
        c
    }

    /// Each end: identity, certificate chain, key and the CA it trusts.
    type End<'a> = (&'a str, &'a [&'a str], &'a str, &'a str);

    fn run(ike: &str, (a_id, a_chain, a_key, a_ca): End<'_>, (b_id, b_chain, b_key, b_ca): End<'_>, seed: u64) -> Pair {
        let (a, b) = pair_configs(ike, "aes256-sha256");
        let a = signing(a, a_id, a_chain, a_key, a_ca, b_id);
        let b = signing(b, b_id, b_chain, b_key, b_ca, a_id);
        let mut p = Pair::start(a, b, seed);
        p.run(Duration::from_secs(60));
        p
    }

    fn assert_established(p: &mut Pair) {
        assert_eq!(
            p.a.state(),
            MainModeState::Done,
            "initiator: {:?} {:?}",
            p.a_seen.down,
            p.b_errors
        );
        assert_eq!(p.b().state(), MainModeState::Done, "responder: {:?}", p.b_seen.down);
        assert_eq!(p.a_seen.installed.len(), 1, "{:?}", p.a_seen.failed);
        assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    }

    #[test]
    fn rsa_signatures_with_fqdn_and_email_identities() {
        let mut p = run(
            "aes256-sha256-modp2048",
            ("carol@example.com", &["ee-rsa.pem"], "ee-rsa.key", "ca-rsa.pem"),
            ("carol.example.com", &["ee-rsa.pem"], "ee-rsa.key", "ca-rsa.pem"),
            201,
        );
        assert_established(&mut p);
        assert_eq!(p.a.peer_id(), Some(&parse_identity("carol.example.com")));
        // PKCS#1 v1.5 is deterministic: a seeded pair replays bit for bit.
        let mut again = run(
            "aes256-sha256-modp2048",
            ("carol@example.com", &["ee-rsa.pem"], "ee-rsa.key", "ca-rsa.pem"),
            ("carol.example.com", &["ee-rsa.pem"], "ee-rsa.key", "ca-rsa.pem"),
            201,
        );
        assert_eq!(again.b().cookies(), p.b().cookies());
    }

    #[test]
    fn ecdsa_p256_through_an_intermediate_with_a_dn_identity() {
        let mut p = run(
            "aes256-sha256-ecp256",
            (
                "C=CH, O=ironsa, CN=moon.example.com",
                &["ee-p256.pem", "int.pem"],
                "ee-p256.key",
                "ca-rsa.pem",
            ),
            (
                "moon@example.com",
                &["ee-p256-reissued.pem", "int.pem"],
                "ee-p256.key",
                "ca-rsa.pem",
            ),
            202,
        );
        assert_established(&mut p);
        assert_eq!(
            p.b().peer_id(),
            Some(&parse_identity("C=CH, O=ironsa, CN=moon.example.com"))
        );
    }

    #[test]
    fn ecdsa_p384_signs_a_sha384_hash() {
        let mut p = run(
            "aes256-sha384-modp3072",
            ("sun.example.com", &["ee-p384.pem"], "ee-p384.key", "ca-ecdsa.pem"),
            ("sun@example.com", &["ee-p384.pem"], "ee-p384.key", "ca-ecdsa.pem"),
            203,
        );
        assert_established(&mut p);
    }

    #[test]
    fn an_untrusted_or_foreign_certificate_is_refused() {
        // The responder's certificate comes from a CA the initiator does not trust.
        let p = run(
            "aes256-sha256-ecp256",
            (
                "moon.example.com",
                &["ee-p256.pem", "int.pem"],
                "ee-p256.key",
                "ca-rsa.pem",
            ),
            (
                "mallory.example.com",
                &["ee-untrusted.pem"],
                "ee-p256.key",
                "ca-rsa.pem",
            ),
            204,
        );
        assert!(
            matches!(&p.a_seen.down[..], [DownReason::Failed(why)] if why.contains("not trusted")),
            "{:?}",
            p.a_seen.down
        );
        // An identity its certificate does not hold.
        let p = run(
            "aes256-sha256-modp2048",
            ("dave.example.com", &["ee-rsa.pem"], "ee-rsa.key", "ca-rsa.pem"),
            ("carol.example.com", &["ee-rsa.pem"], "ee-rsa.key", "ca-rsa.pem"),
            205,
        );
        assert!(
            p.b_seen
                .down
                .iter()
                .any(|d| matches!(d, DownReason::Failed(why) if why.contains("not in the certificate"))),
            "{:?} {:?}",
            p.b_seen.down,
            p.b_errors
        );
        // A peer proposing pre-shared keys finds no certificate connection.
        let (a, b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
        let b = signing(
            b,
            "carol.example.com",
            &["ee-rsa.pem"],
            "ee-rsa.key",
            "ca-rsa.pem",
            "a@test",
        );
        let mut p = Pair::start(a, b, 206);
        p.run(Duration::from_secs(5));
        assert!(p.b.is_none());
        assert!(
            p.b_errors.iter().any(|e| e
                .to_string()
                .contains("authentication method 1 (this connection uses 3)")),
            "{:?}",
            p.b_errors
        );
    }
}

/// XAUTH (draft-beaulieu-ike-xauth) after Main Mode PSK, the gateway
/// checking the local users, on a lossy and duplicating network.
mod xauth {
    use super::*;
    use control::config::XauthCredentials;
    use control::eap::{Credential, UserStore};
    use control::ikev1::XauthState;

    struct Users;
    impl UserStore for Users {
        fn credential(&self, identity: &[u8]) -> Option<Credential> {
            (identity == b"alice").then(|| Credential::Password(zeroize::Zeroizing::new("alice-secret-1".into())))
        }
    }

    fn run(user: &str, password: &str, seed: u64, loss: u64) -> Pair {
        let (mut a, mut b) = pair_configs("aes256-sha256-modp2048", "aes256-sha256");
        a.xauth_client = Some(Arc::new(XauthCredentials {
            user: user.into(),
            password: zeroize::Zeroizing::new(password.into()),
        }));
        b.xauth = true;
        let mut p = Pair::start(a, b, seed);
        p.ctx_b.eap_users = Some(Arc::new(Users));
        (p.loss, p.dup) = (loss, loss);
        p.run(Duration::from_secs(120));
        p
    }

    #[test]
    fn a_known_user_passes_then_quick_mode_runs() {
        for (seed, loss) in [(301, 0), (302, 15), (303, 15)] {
            let mut p = run("alice", "alice-secret-1", seed, loss);
            assert_eq!(
                p.b().xauth_state(),
                Some(XauthState::Done),
                "seed {seed}: {:?}",
                p.b_seen.down
            );
            assert_eq!(p.b().xauth_user(), Some("alice"));
            assert_eq!((p.a_seen.up, p.b_seen.up), (1, 1), "seed {seed}");
            assert_eq!(p.a_seen.installed.len(), 1, "seed {seed}: {:?}", p.a_seen.failed);
            assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
        }
    }

    #[test]
    fn a_wrong_password_or_unknown_user_ends_the_sa_before_it_is_up() {
        for (user, password, why) in [
            (
                "alice",
                "not-her-password",
                "XAUTH of user 'alice' failed: wrong password",
            ),
            (
                "mallory",
                "alice-secret-1",
                "XAUTH of user 'mallory' failed: unknown user",
            ),
        ] {
            let p = run(user, password, 311, 0);
            assert_eq!(p.b_seen.up, 0, "never up without XAUTH");
            assert!(
                matches!(&p.b_seen.down[..], [DownReason::Failed(w)] if w == why),
                "{:?}",
                p.b_seen.down
            );
            assert!(
                matches!(&p.a_seen.down[..], [DownReason::Failed(w)] if w.contains("refused XAUTH")),
                "{:?}",
                p.a_seen.down
            );
            assert!(p.a_seen.installed.is_empty() && p.b_seen.installed.is_empty());
        }
    }
}

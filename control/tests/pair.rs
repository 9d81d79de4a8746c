//! An in-memory initiator/responder pair with virtual time, loss,
//! duplication and reordering: the whole IKEv2 state machine without sockets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use control::config::{ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
use control::crypto::{CryptoError, CryptoProvider, KeGroup};
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::{ChildSaInstall, Context, DownReason, Event, Task, Transmit};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use ironsa_crypto::{AwsLcProvider, RandomSource, SeededRandom};

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";

/// Deterministic pseudo-random numbers for the lossy network.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Net {
    loss: u64,
    dup: u64,
    reorder: u64,
    rng: XorShift,
}

impl Net {
    fn perfect() -> Self {
        Net {
            loss: 0,
            dup: 0,
            reorder: 0,
            rng: XorShift(0x9e37_79b9_7f4a_7c15),
        }
    }
}

#[derive(Default)]
struct Seen {
    up: Vec<(u64, u64)>,
    down: Vec<DownReason>,
    installed: Vec<ChildSaInstall>,
    deleted: Vec<(u32, u32)>,
    failed: Vec<String>,
    rekeyed: usize,
    /// ChildSasMoved events: (inbound SPIs, local, remote, UDP encapsulation).
    moved: Vec<(Vec<u32>, SocketAddr, SocketAddr, bool)>,
}

struct Pair {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    a_seen: Seen,
    b_seen: Seen,
    net: Net,
    datagrams: u64,
    /// Every datagram put on the wire, in order: (from A, bytes).
    wire: Vec<(bool, Vec<u8>)>,
}

/// The seed of the initiator's random source (the responder's is the next one).
const SEED: u64 = 0x5eed_0001;

/// A seeded random source that can be made to fail, shared with the test.
struct Failing {
    inner: SeededRandom,
    fail: Arc<AtomicBool>,
}

impl RandomSource for Failing {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(CryptoError::Rng);
        }
        self.inner.fill(buf)
    }
}

/// A seeded provider and the switch that makes its random source fail.
fn failing_provider(seed: u64) -> (Arc<dyn CryptoProvider>, Arc<AtomicBool>) {
    let fail = Arc::new(AtomicBool::new(false));
    let random = Failing {
        inner: SeededRandom::new(seed),
        fail: fail.clone(),
    };
    (AwsLcProvider::with_random(random).shared(), fail)
}

fn conn(name: &str, local: &str, remote: &str, ike: &str, esp: &str, psk: &[u8]) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(
        name,
        parse_identity(local),
        IdentityMatch::Exact(parse_identity(remote)),
        psk,
    );
    c.ike_proposals = parse_ike_proposals(ike).unwrap();
    c.retransmit_timeout = Duration::from_secs(1);
    c.retransmit_tries = 6;
    c.children.push(ChildConfig {
        name: format!("{name}-child"),
        esp_proposals: parse_esp_proposals(esp).unwrap(),
        local_ts: vec![],
        remote_ts: vec![],
        mode: IpsecMode::Tunnel,
        lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
    });
    c
}

fn with_ts(mut c: ConnectionConfig, local: &str, remote: &str) -> ConnectionConfig {
    c.children[0].local_ts = vec![parse_selector(local).unwrap()];
    c.children[0].remote_ts = vec![parse_selector(remote).unwrap()];
    c
}

fn default_pair(ike: &str, esp: &str) -> (ConnectionConfig, ConnectionConfig) {
    let a = with_ts(
        conn("a", "a@test", "b@test", ike, esp, b"a-long-random-test-secret"),
        "10.1.0.0/24",
        "10.2.0.0/24",
    );
    let b = with_ts(
        conn("b", "b@test", "a@test", ike, esp, b"a-long-random-test-secret"),
        "10.2.0.0/24",
        "10.1.0.0/24",
    );
    (a, b)
}

impl Pair {
    fn new(a: ConnectionConfig, b: ConnectionConfig, admission_b: AdmissionConfig) -> (Self, Arc<ConnectionConfig>) {
        let crypto = |seed| AwsLcProvider::seeded(seed).shared();
        Self::with_crypto(a, b, admission_b, crypto(SEED), crypto(SEED + 1))
    }

    fn with_crypto(
        a: ConnectionConfig,
        b: ConnectionConfig,
        admission_b: AdmissionConfig,
        crypto_a: Arc<dyn CryptoProvider>,
        crypto_b: Arc<dyn CryptoProvider>,
    ) -> (Self, Arc<ConnectionConfig>) {
        let now = Instant::now();
        let a = Arc::new(a);
        let b = Arc::new(b);
        let ea = Endpoint::new(
            now,
            Context::new(vec![a.clone()], crypto_a),
            AdmissionConfig::default(),
            0,
            0,
        );
        let eb = Endpoint::new(now, Context::new(vec![b], crypto_b), admission_b, 0, 0);
        (
            Pair {
                now,
                a: ea,
                b: eb,
                a_seen: Seen::default(),
                b_seen: Seen::default(),
                net: Net::perfect(),
                datagrams: 0,
                wire: Vec::new(),
            },
            a,
        )
    }

    fn collect(ep: &mut Endpoint, seen: &mut Seen) {
        while let Some((_, e)) = ep.poll_event() {
            match e {
                Event::IkeSaUp { spis, .. } => seen.up.push(spis),
                Event::IkeSaDown { reason, .. } => seen.down.push(reason),
                Event::ChildSaInstalled(c) => seen.installed.push(*c),
                Event::ChildSaDeleted { spi_in, spi_out } => seen.deleted.push((spi_in, spi_out)),
                Event::ChildSaFailed { reason, .. } => seen.failed.push(reason),
                Event::IkeSaRekeyed { .. } => seen.rekeyed += 1,
                Event::ChildSasMoved {
                    spis_in,
                    local,
                    remote,
                    udp_encap,
                } => seen.moved.push((spis_in, local, remote, udp_encap)),
                Event::Refused { .. } => {}
                // The pairs authenticate with PSKs.
                Event::EapRelay(_) | Event::EapAuthenticated(_) => {}
            }
        }
    }

    /// Moves datagrams and time until nothing is left to do or `limit` passes.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        let mut in_flight: VecDeque<(bool, Transmit)> = VecDeque::new();
        loop {
            while let Some(t) = self.a.poll_transmit() {
                in_flight.push_back((true, t));
            }
            while let Some(t) = self.b.poll_transmit() {
                in_flight.push_back((false, t));
            }
            Self::collect(&mut self.a, &mut self.a_seen);
            Self::collect(&mut self.b, &mut self.b_seen);
            if let Some((from_a, t)) = in_flight.pop_front() {
                if self.net.rng.chance(self.net.reorder) && !in_flight.is_empty() {
                    in_flight.push_back((from_a, t));
                    continue;
                }
                if self.net.rng.chance(self.net.loss) {
                    continue;
                }
                let copies = if self.net.rng.chance(self.net.dup) { 2 } else { 1 };
                for _ in 0..copies {
                    self.datagrams += 1;
                    self.wire.push((from_a, t.data.clone()));
                    // A driver reads NAT keepalives off the NAT-T socket; they never reach IKE.
                    if t.is_nat_keepalive() {
                        continue;
                    }
                    let (to, local, remote) = if from_a {
                        (&mut self.b, t.remote, t.local)
                    } else {
                        (&mut self.a, t.remote, t.local)
                    };
                    to.handle(self.now, local, remote, &t.data);
                }
                continue;
            }
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    // Do not run far-future timers (rekeys) unless asked to.
                    if t > self.now + Duration::from_secs(120) && limit <= Duration::from_secs(120) {
                        return;
                    }
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => return,
            }
        }
    }

    fn a_spi(&self) -> u64 {
        self.a.sas().next().map(|s| s.local_spi()).expect("initiator SA")
    }
}

fn establish(ike: &str, esp: &str) -> Pair {
    let (a, b) = default_pair(ike, esp);
    let (mut p, conn) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
        .unwrap();
    p.run(Duration::from_secs(60));
    p
}

fn assert_children_match(a: &ChildSaInstall, b: &ChildSaInstall) {
    assert_eq!(a.spi_in, b.spi_out);
    assert_eq!(a.spi_out, b.spi_in);
    assert_eq!(*a.outbound.encr, *b.inbound.encr);
    assert_eq!(*a.inbound.encr, *b.outbound.encr);
    assert_eq!(*a.outbound.integ, *b.inbound.integ);
    assert_ne!(*a.inbound.encr, *a.outbound.encr, "directions must use different keys");
    assert_eq!(a.encr, b.encr);
    assert_eq!(a.local_ts, b.remote_ts);
    assert_eq!(a.remote_ts, b.local_ts);
}

#[test]
fn psk_x25519_aes256gcm_establishes_with_child() {
    let p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    assert_eq!(p.a_seen.up.len(), 1, "initiator up");
    assert_eq!(p.b_seen.up.len(), 1, "responder up");
    assert_eq!(p.a_seen.up[0], p.b_seen.up[0], "both agree on the IKE SPIs");
    assert_eq!(p.a_seen.installed.len(), 1);
    assert_eq!(p.b_seen.installed.len(), 1);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    assert_eq!(p.a_seen.installed[0].outbound.encr.len(), 36);
    assert!(p.a.sas().all(|s| s.is_established()));
    assert!(p.b.sas().all(|s| s.is_established()));
}

#[test]
fn force_udp_encap_moves_both_sides_to_nat_t() {
    // Without it (and without a NAT), ESP stays plain and IKE on port 500.
    let p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    assert!(!p.a_seen.installed[0].udp_encap && !p.b_seen.installed[0].udp_encap);
    // Either side forcing it is enough: both detect a NAT and use UDP 4500.
    for force_a in [true, false] {
        let (mut a, mut b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
        a.force_udp_encap = force_a;
        b.force_udp_encap = !force_a;
        let (mut p, conn) = Pair::new(a, b, AdmissionConfig::default());
        p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
            .unwrap();
        p.run(Duration::from_secs(60));
        assert_eq!(p.a_seen.installed.len(), 1, "force on a: {force_a}");
        assert_eq!(p.b_seen.installed.len(), 1);
        let (ca, cb) = (&p.a_seen.installed[0], &p.b_seen.installed[0]);
        assert!(ca.udp_encap && cb.udp_encap, "force on a: {force_a}");
        assert_eq!(ca.remote.port(), 4500);
        assert_eq!(cb.local.port(), 4500);
        assert_children_match(ca, cb);
    }
}

#[test]
fn modp2048_cbc_sha256_establishes() {
    let p = establish("aes128-sha256-modp2048", "aes128-sha256");
    assert_eq!(p.a_seen.installed.len(), 1);
    assert_eq!(p.b_seen.installed.len(), 1);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    assert_eq!(p.a_seen.installed[0].outbound.integ.len(), 32);
}

#[test]
fn wrong_psk_fails_authentication_on_both_sides() {
    let (a, _) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let b = conn(
        "b",
        "b@test",
        "a@test",
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        b"another-secret-entirely",
    );
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert!(p.a_seen.up.is_empty() && p.b_seen.up.is_empty());
    assert_eq!(
        p.a_seen.down,
        vec![DownReason::PeerError(
            control::wire::ikev2::NotifyType::AUTHENTICATION_FAILED
        )]
    );
    assert_eq!(p.b.len(), 0, "responder dropped the failed SA");
}

#[test]
fn no_common_proposal_is_reported() {
    let (a, _) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let (_, b) = default_pair("aes128-sha256-modp2048", "aes128-sha256");
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(
        p.a_seen.down,
        vec![DownReason::PeerError(
            control::wire::ikev2::NotifyType::NO_PROPOSAL_CHOSEN
        )]
    );
    assert_eq!(p.b.stats().init_rejected, 1);
}

#[test]
fn invalid_ke_payload_retry_with_the_responders_group() {
    let (mut a, mut b) = default_pair("aes256gcm16-prfsha256-ecp256-x25519", "aes256gcm16");
    a.ike_proposals = parse_ike_proposals("aes256gcm16-prfsha256-ecp256-x25519").unwrap();
    b.ike_proposals = parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap();
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.up.len(), 1);
    assert_eq!(p.b.stats().init_rejected, 1, "one INVALID_KE_PAYLOAD round");
}

#[test]
fn cookie_challenge_is_answered() {
    let (a, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let adm = AdmissionConfig {
        cookie_threshold: 0,
        ..AdmissionConfig::default()
    };
    let (mut p, c) = Pair::new(a, b, adm);
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.up.len(), 1);
    assert_eq!(p.b.stats().cookies_sent, 1);
    assert_eq!(p.b.stats().cookies_valid, 1);
}

#[test]
fn lossy_duplicating_reordering_network_still_establishes() {
    establishes_over_lossy_network("aes256gcm16-prfsha256-x25519", None, 20);
}

#[test]
fn traffic_selectors_are_narrowed() {
    let a = with_ts(
        conn(
            "a",
            "a@test",
            "b@test",
            "aes256gcm16-prfsha256-x25519",
            "aes256gcm16",
            b"a-long-random-test-secret",
        ),
        "0.0.0.0/0",
        "0.0.0.0/0",
    );
    let b = with_ts(
        conn(
            "b",
            "b@test",
            "a@test",
            "aes256gcm16-prfsha256-x25519",
            "aes256gcm16",
            b"a-long-random-test-secret",
        ),
        "10.2.0.0/24",
        "10.1.0.0/24",
    );
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    let ca = &p.a_seen.installed[0];
    assert_eq!(ca.local_ts, vec![parse_selector("10.1.0.0/24").unwrap()]);
    assert_eq!(ca.remote_ts, vec![parse_selector("10.2.0.0/24").unwrap()]);
}

#[test]
fn disjoint_selectors_give_ts_unacceptable_but_keep_ike() {
    let a = with_ts(
        conn(
            "a",
            "a@test",
            "b@test",
            "aes256gcm16-prfsha256-x25519",
            "aes256gcm16",
            b"a-long-random-test-secret",
        ),
        "10.9.0.0/24",
        "10.8.0.0/24",
    );
    let (_, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.up.len(), 1);
    assert!(p.a_seen.installed.is_empty());
    assert_eq!(p.a_seen.failed.len(), 1);
    assert!(p.a_seen.failed[0].contains("TS_UNACCEPTABLE"), "{:?}", p.a_seen.failed);
}

#[test]
fn child_rekey_with_pfs_replaces_the_child() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519");
    let old = p.a_seen.installed[0].spi_in;
    let spi = p.a_spi();
    p.a.queue(p.now, spi, Task::RekeyChild(old));
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.installed.len(), 2);
    assert_eq!(p.b_seen.installed.len(), 2);
    assert_children_match(&p.a_seen.installed[1], &p.b_seen.installed[1]);
    assert_eq!(p.a_seen.installed[1].pfs, Some(control::crypto::KeGroup::Curve25519));
    assert_eq!(p.a_seen.installed[1].rekey_of, Some(old));
    assert_ne!(
        *p.a_seen.installed[1].outbound.encr,
        *p.a_seen.installed[0].outbound.encr
    );
    assert_eq!(p.a_seen.deleted, vec![(old, p.a_seen.installed[0].spi_out)]);
    assert_eq!(p.b_seen.deleted.len(), 1);
    assert_eq!(p.a.sas().next().unwrap().children().len(), 1);
    assert_eq!(p.b.sas().next().unwrap().children().len(), 1);
}

#[test]
fn simultaneous_child_rekey_leaves_one_child() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let a_old = p.a_seen.installed[0].spi_in;
    let b_old = p.b_seen.installed[0].spi_in;
    let a_spi = p.a_spi();
    let b_spi = p.b.sas().next().unwrap().local_spi();
    p.a.queue(p.now, a_spi, Task::RekeyChild(a_old));
    p.b.queue(p.now, b_spi, Task::RekeyChild(b_old));
    p.run(Duration::from_secs(60));
    let ca = p.a.sas().next().unwrap().children();
    let cb = p.b.sas().next().unwrap().children();
    assert_eq!(ca.len(), 1, "initiator keeps exactly one child");
    assert_eq!(cb.len(), 1, "responder keeps exactly one child");
    assert_eq!(ca[0].spi_in, cb[0].spi_out);
    assert_eq!(ca[0].spi_out, cb[0].spi_in);
}

/// Both sides with a second child template (10.1.1.0/24 === 10.2.1.0/24).
fn pair_with_two_children() -> (Pair, Arc<ConnectionConfig>) {
    pair_with_two_children_of("aes256gcm16-prfsha256-x25519", "aes256gcm16")
}

/// The same with IKE proposal `ike` and ESP proposal `esp` on both sides.
fn pair_with_two_children_of(ike: &str, esp: &str) -> (Pair, Arc<ConnectionConfig>) {
    let (mut a, mut b) = default_pair(ike, esp);
    for (c, local, remote) in [
        (&mut a, "10.1.1.0/24", "10.2.1.0/24"),
        (&mut b, "10.2.1.0/24", "10.1.1.0/24"),
    ] {
        let mut second = c.children[0].clone();
        second.name = "second".into();
        second.local_ts = vec![parse_selector(local).unwrap()];
        second.remote_ts = vec![parse_selector(remote).unwrap()];
        c.children.push(second);
    }
    Pair::new(a, b, AdmissionConfig::default())
}

#[test]
fn every_child_template_comes_up_as_initiator() {
    let (mut p, conn) = pair_with_two_children();
    p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
        .unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(
        p.a_seen.installed.len(),
        2,
        "IKE_AUTH's child, then one by CREATE_CHILD_SA"
    );
    assert_eq!(p.b_seen.installed.len(), 2);
    for (a, b) in p.a_seen.installed.iter().zip(&p.b_seen.installed) {
        assert_children_match(a, b);
    }
    let names: Vec<&str> = p.a_seen.installed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a-child", "second"]);
    assert_eq!(
        p.a_seen.installed[1].local_ts,
        vec![parse_selector("10.1.1.0/24").unwrap()]
    );
    assert!(p.a_seen.failed.is_empty() && p.b_seen.failed.is_empty());
    assert_eq!(p.a.sas().next().unwrap().children().len(), 2);
}

#[test]
fn one_child_template_can_be_initiated_alone_or_added() {
    let (mut p, conn) = pair_with_two_children();
    let spi =
        p.a.initiate_child(p.now, conn.clone(), A.parse().unwrap(), B.parse().unwrap(), 1)
            .unwrap();
    p.run(Duration::from_secs(60));
    let names: Vec<&str> = p.a_seen.installed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["second"], "only the child asked for, in IKE_AUTH");
    assert_eq!(p.b_seen.installed.len(), 1);
    // The other one on the same IKE SA.
    assert!(p.a.queue(p.now, spi, Task::CreateChild(0)));
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.installed.len(), 2);
    assert_eq!(p.a_seen.installed[1].name, "a-child");
    assert_children_match(&p.a_seen.installed[1], &p.b_seen.installed[1]);
    assert!(
        p.a.initiate_child(p.now, conn, A.parse().unwrap(), B.parse().unwrap(), 2)
            .is_err(),
        "no third template"
    );
}

#[test]
fn ike_rekey_moves_children_to_the_new_sa() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let old = p.a_seen.up[0];
    let spi = p.a_spi();
    p.a.queue(p.now, spi, Task::RekeyIke);
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.rekeyed, 1);
    assert_eq!(p.b_seen.rekeyed, 1);
    assert_eq!(p.a.len(), 1, "old IKE SA gone after its DELETE");
    assert_eq!(p.b.len(), 1);
    let na = p.a.sas().next().unwrap();
    let nb = p.b.sas().next().unwrap();
    assert_ne!(na.spis(), old);
    assert_eq!(na.spis(), nb.spis());
    assert_eq!(na.children().len(), 1);
    assert_eq!(nb.children().len(), 1);
    assert!(p.a_seen.deleted.is_empty(), "children survive an IKE rekey");
    assert_eq!(
        p.a_seen.down,
        vec![DownReason::Rekeyed],
        "the old SA went as rekeyed, not deleted"
    );
    assert_eq!(p.b_seen.down, vec![DownReason::Rekeyed]);
    // The new SA works: a DPD exchange and a child rekey over it.
    rekey_a_child_over_the_new_sa(&mut p);
}

/// Rekeys A's first child over A's (only) IKE SA: works only if both sides
/// derived the same IKE SA keys.
fn rekey_a_child_over_the_new_sa(p: &mut Pair) {
    let na = p.a.sas().next().expect("IKE SA");
    let (child, spi) = (na.children()[0].spi_in, na.local_spi());
    p.a.queue(p.now, spi, Task::RekeyChild(child));
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.installed.len(), 2);
    assert_eq!(p.b_seen.installed.len(), 2);
}

#[test]
fn responder_can_rekey_the_ike_sa_too() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let b_spi = p.b.sas().next().unwrap().local_spi();
    p.b.queue(p.now, b_spi, Task::RekeyIke);
    p.run(Duration::from_secs(60));
    assert_eq!(p.a.len(), 1);
    assert_eq!(p.b.len(), 1);
    assert_eq!(p.a.sas().next().unwrap().spis(), p.b.sas().next().unwrap().spis());
}

#[test]
fn a_deleted_ike_sa_is_deleting_until_the_peer_answers() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spi = p.a_spi();
    assert!(!p.a.sa(spi).unwrap().is_deleting());
    p.net.loss = 100;
    assert!(p.a.delete(p.now, spi));
    p.run(Duration::from_secs(5));
    let sa = p.a.sa(spi).expect("kept while the DELETE is retransmitted");
    assert!(sa.is_deleting() && !sa.is_rekeyed());
    p.net.loss = 0;
    p.run(Duration::from_secs(60));
    assert!(p.a.sa(spi).is_none());
    assert_eq!(p.a_seen.down, vec![DownReason::Deleted]);
}

/// An IKE SA that reaches its hard lifetime (its rekey never happened)
/// tells the peer with a DELETE, so the peer does not keep a dead SA and
/// its CHILD_SAs until DPD finds out.
#[test]
fn hard_lifetime_expiry_sends_a_delete_to_the_peer() {
    let (a, mut b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    b.ike_lifetime = Lifetime {
        rekey: Duration::from_secs(600),
        jitter: Duration::ZERO,
        over: Duration::from_secs(60),
    };
    let (mut p, conn) = Pair::new(a, b, AdmissionConfig::default());
    let start = p.now;
    p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
        .unwrap();
    p.run(Duration::from_secs(5));
    assert_eq!((p.a_seen.up.len(), p.b_seen.up.len()), (1, 1));
    // Past B's hard lifetime in one step: the rekey never got its chance.
    p.now = start + Duration::from_secs(700);
    p.b.handle_timeout(p.now);
    p.run(Duration::from_secs(30));
    assert_eq!(p.b_seen.down, vec![DownReason::Expired]);
    assert_eq!(p.b.len(), 0);
    assert_eq!(p.a.len(), 0, "A learnt of the expiry from B's DELETE");
    assert_eq!(p.a_seen.down, vec![DownReason::Deleted]);
}

#[test]
fn a_session_limit_ends_the_sa_with_a_delete_to_the_peer() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spi = p.a_spi();
    assert!(p.a.limit_session(p.now, spi, Duration::from_secs(30)));
    p.run(Duration::from_secs(20));
    assert_eq!(p.a.len(), 1, "not before its time");
    p.run(Duration::from_secs(30));
    assert_eq!(p.a_seen.down, vec![DownReason::Expired]);
    assert_eq!(p.b.len(), 0, "the peer was told with a DELETE");
    assert_eq!(p.b_seen.down, vec![DownReason::Deleted]);
    assert_eq!(p.b_seen.deleted.len(), 1, "the peer's child went with it");
}

#[test]
fn delete_and_dpd() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spi = p.a_spi();
    let before = p.datagrams;
    p.a.queue(p.now, spi, Task::Dpd);
    p.run(Duration::from_secs(60));
    assert_eq!(p.datagrams, before + 2, "one DPD request and its response");
    assert!(p.a.sas().next().unwrap().is_established());
    p.a.delete(p.now, spi);
    p.run(Duration::from_secs(60));
    assert_eq!(p.a.len(), 0);
    assert_eq!(p.b.len(), 0);
    assert_eq!(p.a_seen.down, vec![DownReason::Deleted]);
    assert_eq!(p.b_seen.down, vec![DownReason::Deleted]);
    assert_eq!(p.a_seen.deleted.len(), 1);
    assert_eq!(p.b_seen.deleted.len(), 1);
}

#[test]
fn dead_peer_is_detected() {
    let (mut a, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    a.dpd_delay = Some(Duration::from_secs(10));
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(5));
    assert_eq!(p.a_seen.up.len(), 1);
    p.net.loss = 100;
    p.run(Duration::from_secs(400));
    assert_eq!(p.a_seen.down, vec![DownReason::Timeout]);
}

#[test]
fn large_ike_auth_is_fragmented() {
    let (mut a, mut b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    // Many selectors make IKE_AUTH large; a small fragment size forces SKF.
    for i in 0..40u8 {
        a.children[0]
            .local_ts
            .push(parse_selector(&format!("10.1.{i}.0/24")).unwrap());
        b.children[0]
            .remote_ts
            .push(parse_selector(&format!("10.1.{i}.0/24")).unwrap());
    }
    a.fragment_size = 400;
    b.fragment_size = 400;
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.installed.len(), 1);
    assert!(
        p.datagrams > 6,
        "IKE_AUTH went as several fragments ({} datagrams)",
        p.datagrams
    );
}

#[test]
fn garbage_never_disturbs_an_established_sa() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spis = p.a_seen.up[0];
    let mut rng = XorShift(7);
    let remote: SocketAddr = A.parse().unwrap();
    let local: SocketAddr = B.parse().unwrap();
    for len in 0..400usize {
        let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 28 && len % 2 == 0 {
            // Aim at the real SA: right SPIs, random rest.
            d[..8].copy_from_slice(&spis.0.to_be_bytes());
            d[8..16].copy_from_slice(&spis.1.to_be_bytes());
            d[17] = 0x20;
            d[24..28].copy_from_slice(&(len as u32).to_be_bytes());
        }
        p.b.handle(p.now, local, remote, &d);
    }
    p.run(Duration::from_secs(10));
    assert!(p.b.sas().next().unwrap().is_established());
    let spi = p.a_spi();
    p.a.queue(p.now, spi, Task::Dpd);
    p.run(Duration::from_secs(10));
    assert!(p.a.sas().next().unwrap().is_established());
    assert!(p.b_seen.down.is_empty());
}

mod certs {
    use super::*;
    use control::config::{AuthConfig, LocalCert};
    use control::pki::{Certificate, PrivateKey, TrustStore};

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/pki/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn local(cert: &[&str], key: &str) -> AuthConfig {
        let chain = cert
            .iter()
            .map(|c| Certificate::load(&data(c)).unwrap().remove(0))
            .collect();
        AuthConfig::Cert(Arc::new(LocalCert {
            key: PrivateKey::load(&data(key)).unwrap(),
            chain,
        }))
    }

    fn trust(cas: &[&str]) -> AuthConfig {
        let mut t = TrustStore::new();
        for c in cas {
            t.add_pem_or_der(&data(c)).unwrap();
        }
        AuthConfig::PubKey(Arc::new(t))
    }

    fn cert_pair(
        a_id: &str,
        a_auth: AuthConfig,
        a_trust: AuthConfig,
        b_id: &str,
        b_auth: AuthConfig,
        b_trust: AuthConfig,
    ) -> Pair {
        let crypto = |seed| AwsLcProvider::seeded(seed).shared();
        cert_pair_with(
            (a_id, a_auth, a_trust, crypto(SEED)),
            (b_id, b_auth, b_trust, crypto(SEED + 1)),
        )
    }

    /// One side: identity, local auth, trust, crypto provider.
    type Side<'a> = (&'a str, AuthConfig, AuthConfig, Arc<dyn CryptoProvider>);

    fn cert_pair_with(
        (a_id, a_auth, a_trust, crypto_a): Side<'_>,
        (b_id, b_auth, b_trust, crypto_b): Side<'_>,
    ) -> Pair {
        let (mut a, mut b) = default_pair("aes256gcm16-prfsha256-ecp256", "aes256gcm16");
        a.local_id = parse_identity(a_id);
        a.remote_id = IdentityMatch::parse(b_id);
        a.local_auth = a_auth;
        a.remote_auth = a_trust;
        b.local_id = parse_identity(b_id);
        b.remote_id = IdentityMatch::parse(a_id);
        b.local_auth = b_auth;
        b.remote_auth = b_trust;
        let (mut p, c) = Pair::with_crypto(a, b, AdmissionConfig::default(), crypto_a, crypto_b);
        p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
        p.run(Duration::from_secs(60));
        p
    }

    #[test]
    fn certificate_validity_follows_the_providers_clock() {
        // The test certificates are valid from 2026-11-25 to 2046-11-20.
        for (unix_time, valid) in [(1_893_456_000, true), (2_524_608_000, false), (1_700_000_000, false)] {
            let side = |id: &'static str, cert: &[&str], key: &str, seed: u64| -> Side<'static> {
                let crypto = AwsLcProvider::seeded(seed).at_unix_time(unix_time).shared();
                (id, local(cert, key), trust(&["ca-rsa.pem"]), crypto)
            };
            let p = cert_pair_with(
                side("moon.example.com", &["ee-p256.pem", "int.pem"], "ee-p256.key", SEED),
                side("carol@example.com", &["ee-rsa.pem"], "ee-rsa.key", SEED + 1),
            );
            assert_eq!(
                p.b_seen.up.len(),
                usize::from(valid),
                "at {unix_time}: {:?}",
                p.a_seen.down
            );
            if !valid {
                assert_eq!(
                    p.a_seen.down,
                    vec![DownReason::PeerError(
                        control::wire::ikev2::NotifyType::AUTHENTICATION_FAILED
                    )]
                );
            }
        }
    }

    #[test]
    fn ecdsa_and_rsa_certificates_with_an_intermediate() {
        let p = cert_pair(
            "moon.example.com",
            local(&["ee-p256.pem", "int.pem"], "ee-p256.key"),
            trust(&["ca-rsa.pem"]),
            "carol@example.com",
            local(&["ee-rsa.pem"], "ee-rsa.key"),
            trust(&["ca-rsa.pem"]),
        );
        assert_eq!(p.a_seen.up.len(), 1, "{:?}", p.a_seen.down);
        assert_eq!(p.b_seen.up.len(), 1);
        assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    }

    #[test]
    fn p384_and_ed25519_certificates_and_a_dn_identity() {
        let p = cert_pair(
            "C=CH, O=ironsa, CN=sun.example.com",
            local(&["ee-p384.pem"], "ee-p384.key"),
            trust(&["ca-ecdsa.pem"]),
            "dave.example.com",
            local(&["ee-ed25519.pem"], "ee-ed25519.key"),
            trust(&["ca-ecdsa.pem"]),
        );
        assert_eq!(p.a_seen.up.len(), 1, "{:?}", p.a_seen.down);
        assert_eq!(p.b_seen.up.len(), 1);
    }

    #[test]
    fn untrusted_certificate_is_refused() {
        let p = cert_pair(
            "mallory.example.com",
            local(&["ee-untrusted.pem"], "ee-p256.key"),
            trust(&["ca-ecdsa.pem"]),
            "sun.example.com",
            local(&["ee-p384.pem"], "ee-p384.key"),
            trust(&["ca-ecdsa.pem"]),
        );
        assert!(p.b_seen.up.is_empty());
        assert_eq!(
            p.a_seen.down,
            vec![DownReason::PeerError(
                control::wire::ikev2::NotifyType::AUTHENTICATION_FAILED
            )]
        );
    }

    #[test]
    fn identity_not_in_certificate_is_refused() {
        let p = cert_pair(
            "someone-else.example.com",
            local(&["ee-p256.pem", "int.pem"], "ee-p256.key"),
            trust(&["ca-rsa.pem"]),
            "sun.example.com",
            local(&["ee-p384.pem"], "ee-p384.key"),
            trust(&["ca-rsa.pem"]),
        );
        assert!(p.b_seen.up.is_empty());
    }
}

#[test]
fn simultaneous_ike_rekey_resolves() {
    simultaneous_ike_rekey("aes256gcm16-prfsha256-x25519");
    // With IKE_FOLLOWUP_KE exchanges in flight too.
    let p = simultaneous_ike_rekey("aes256gcm16-prfsha384-x25519-ke1_mlkem768");
    let (na, nb) = (p.a.sas().next().unwrap(), p.b.sas().next().unwrap());
    assert_eq!(na.additional_key_exchanges(), vec![(1, KeGroup::MlKem768)]);
    assert_eq!(nb.additional_key_exchanges(), vec![(1, KeGroup::MlKem768)]);
}

fn simultaneous_ike_rekey(ike: &str) -> Pair {
    let mut p = establish(ike, "aes256gcm16");
    let a_spi = p.a_spi();
    let b_spi = p.b.sas().next().unwrap().local_spi();
    p.a.queue(p.now, a_spi, Task::RekeyIke);
    p.b.queue(p.now, b_spi, Task::RekeyIke);
    // Both answer TEMPORARY_FAILURE and retry after random delays.
    p.run(Duration::from_secs(100));
    assert_eq!(p.a.len(), 1, "one IKE SA left");
    assert_eq!(p.b.len(), 1);
    let (na, nb) = (p.a.sas().next().unwrap(), p.b.sas().next().unwrap());
    assert_eq!(na.spis(), nb.spis());
    assert_ne!(na.spis(), p.a_seen.up[0], "rekeyed");
    assert_eq!(na.children().len(), 1);
    assert_eq!(nb.children().len(), 1);
    p
}

/// Establishes a pair with the given seeds, rekeys the child (with PFS) and
/// the IKE SA, and returns every datagram that crossed the wire.
fn seeded_scenario(ike: &str, esp: &str, seed_a: u64, seed_b: u64) -> Vec<(bool, Vec<u8>)> {
    let (a, b) = default_pair(ike, esp);
    let (mut p, conn) = Pair::with_crypto(
        a,
        b,
        AdmissionConfig::default(),
        AwsLcProvider::seeded(seed_a).shared(),
        AwsLcProvider::seeded(seed_b).shared(),
    );
    p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
        .unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.up.len(), 1, "{:?}", p.a_seen.down);
    let child = p.a_seen.installed[0].spi_in;
    let a_spi = p.a_spi();
    p.a.queue(p.now, a_spi, Task::RekeyChild(child));
    p.run(Duration::from_secs(60));
    p.a.queue(p.now, a_spi, Task::RekeyIke);
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.installed.len(), 2, "child rekeyed");
    assert_eq!(p.a_seen.rekeyed, 1, "IKE SA rekeyed");
    p.wire
}

#[test]
fn same_seeds_give_the_same_datagrams_bit_for_bit() {
    // Every group family and both SK cipher kinds (CBC draws an IV per message).
    for (ike, esp) in [
        ("aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519"),
        ("aes128-sha256-modp2048", "aes128gcm16-ecp256"),
        ("aes256gcm16-prfsha384-mlkem768", "aes256gcm16-ecp384"),
    ] {
        let first = seeded_scenario(ike, esp, 7, 8);
        let second = seeded_scenario(ike, esp, 7, 8);
        assert!(first.len() >= 8, "{ike}: {} datagrams", first.len());
        assert_eq!(first, second, "{ike}: the same seeds must replay the same datagrams");
    }
}

#[test]
fn different_seeds_give_different_datagrams() {
    let ike = "aes256gcm16-prfsha256-x25519";
    let esp = "aes256gcm16-x25519";
    let base = seeded_scenario(ike, esp, 7, 8);
    for (seed_a, seed_b) in [(9, 8), (7, 9)] {
        let other = seeded_scenario(ike, esp, seed_a, seed_b);
        assert_eq!(base.len(), other.len(), "same exchanges");
        // Every datagram of the side whose seed changed carries its fresh randomness.
        let changed_a = seed_a != 7;
        for (i, ((from_a, x), (_, y))) in base.iter().zip(&other).enumerate() {
            if *from_a == changed_a {
                assert_ne!(x, y, "datagram {i} (from {}) repeats", if *from_a { "A" } else { "B" });
            }
        }
    }
}

/// No datagram either side sent contains a nonce or SPI of the old fallbacks
/// (bytes 0..31, all zero): checked on the plaintext IKE_SA_INIT messages.
fn assert_no_fallback_values(wire: &[(bool, Vec<u8>)]) {
    let counting: Vec<u8> = (0..32).collect();
    for (_, d) in wire {
        let Ok(m) = control::wire::ikev2::decode_message(d) else {
            continue;
        };
        assert_ne!(m.header.spi_i, 0);
        for payload in &m.payloads {
            if let control::wire::ikev2::Payload::Nonce(n) = payload {
                assert_ne!(n, &counting, "counting nonce on the wire");
                assert!(n.iter().any(|&b| b != 0), "zero nonce on the wire");
            }
        }
    }
}

#[test]
fn failing_random_source_fails_initiation_with_a_typed_error() {
    let (a, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let (crypto_a, fail_a) = failing_provider(SEED);
    let (mut p, conn) = Pair::with_crypto(
        a,
        b,
        AdmissionConfig::default(),
        crypto_a,
        AwsLcProvider::seeded(2).shared(),
    );
    fail_a.store(true, Ordering::Relaxed);
    let r = p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap());
    assert!(matches!(r, Err(control::Error::Crypto(CryptoError::Rng))), "{r:?}");
    p.run(Duration::from_secs(60));
    assert!(p.wire.is_empty(), "nothing may be sent");
    assert!(p.a.is_empty());
}

#[test]
fn failing_random_source_of_a_responder_sends_nothing() {
    let (a, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let (crypto_b, fail_b) = failing_provider(SEED + 1);
    let (mut p, conn) = Pair::with_crypto(
        a,
        b,
        AdmissionConfig::default(),
        AwsLcProvider::seeded(1).shared(),
        crypto_b,
    );
    fail_b.store(true, Ordering::Relaxed);
    p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
        .unwrap();
    p.run(Duration::from_secs(120));
    assert!(p.wire.iter().all(|(from_a, _)| *from_a), "the responder answered");
    assert!(p.b.is_empty(), "no responder state");
    assert_eq!(p.b.stats().init_rejected, p.b.stats().init_requests);
    assert_eq!(p.a_seen.down, vec![DownReason::Timeout]);
    assert_no_fallback_values(&p.wire);
}

#[test]
fn failing_random_source_fails_create_child_sa_cleanly() {
    let (a, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let (crypto_a, fail_a) = failing_provider(SEED);
    let (crypto_b, fail_b) = failing_provider(SEED + 1);
    let (mut p, conn) = Pair::with_crypto(a, b, AdmissionConfig::default(), crypto_a, crypto_b);
    p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
        .unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.installed.len(), 1);
    assert_no_fallback_values(&p.wire);
    let child = p.a_seen.installed[0].spi_in;
    let a_spi = p.a_spi();

    // Our own source fails: no request leaves, the rekeys fail with the RNG error.
    fail_a.store(true, Ordering::Relaxed);
    let sent = p.wire.len();
    p.a.queue(p.now, a_spi, Task::RekeyChild(child));
    p.a.queue(p.now, a_spi, Task::CreateChild(0));
    p.a.queue(p.now, a_spi, Task::RekeyIke);
    p.run(Duration::from_secs(60));
    assert_eq!(p.wire.len(), sent, "no CREATE_CHILD_SA may be sent");
    assert_eq!(
        p.a_seen.failed,
        vec![CryptoError::Rng.to_string(), CryptoError::Rng.to_string()]
    );
    assert_eq!(p.a_seen.installed.len(), 1);
    assert_eq!(p.a_seen.rekeyed, 0);

    // The peer's source fails: it answers TEMPORARY_FAILURE, nothing is installed.
    fail_a.store(false, Ordering::Relaxed);
    fail_b.store(true, Ordering::Relaxed);
    p.a.queue(p.now, a_spi, Task::CreateChild(0));
    p.a.queue(p.now, a_spi, Task::RekeyIke);
    p.run(Duration::from_secs(60));
    assert!(p.wire.len() > sent, "requests went out");
    assert_eq!(p.a_seen.failed.len(), 3, "{:?}", p.a_seen.failed);
    assert!(
        p.a_seen.failed[2].contains("TEMPORARY_FAILURE"),
        "{:?}",
        p.a_seen.failed
    );
    assert_eq!(p.b_seen.installed.len(), 1);
    assert_eq!((p.a_seen.rekeyed, p.b_seen.rekeyed), (0, 0));
    assert!(p.a.sas().all(|s| s.is_established()) && p.b.sas().all(|s| s.is_established()));
    assert_eq!((p.a.len(), p.b.len()), (1, 1));
}

#[test]
fn responder_choosing_our_second_proposal_is_accepted() {
    // We prefer AES-128-GCM; the peer accepts only AES-256-GCM, our second
    // proposal in both the IKE and the ESP SA payload.
    let (a, _) = default_pair(
        "aes128gcm16-prfsha256-x25519, aes256gcm16-prfsha256-x25519",
        "aes128gcm16, aes256gcm16",
    );
    let (_, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.up.len(), 1, "initiator up: {:?}", p.a_seen.down);
    assert_eq!(p.a_seen.up, p.b_seen.up);
    let gcm256 = control::crypto::EncrAlg::AesGcm16 { key_bits: 256 };
    let sa = p.a.sas().next().expect("initiator SA");
    assert_eq!(sa.suite().map(|s| s.encr), Some(gcm256));
    assert_eq!(p.a_seen.installed.len(), 1, "child failed: {:?}", p.a_seen.failed);
    assert_eq!(p.a_seen.installed[0].encr, gcm256);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
}

/// A CHILD_SA whose hard lifetime passes while another exchange is still
/// outstanding (here a DPD the peer never answers) waits for its DELETE; the
/// endpoint's timer loop must not keep firing that past deadline (it spun
/// forever, hanging the daemon's shard and every SA on it).
#[test]
fn child_expiring_behind_an_outstanding_exchange_does_not_spin_the_timers() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut a, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
        a.children[0].lifetime = Lifetime::rekey_after(Duration::from_secs(60));
        a.retransmit_tries = 8;
        let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
        p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
        p.run(Duration::from_secs(5));
        assert_eq!(p.a_seen.installed.len(), 1);
        // The peer goes silent: the DPD is retransmitted for minutes, past
        // the child's rekey (60 s) and hard expiry (66 s).
        p.net.loss = 100;
        let spi = p.a_spi();
        p.a.queue(p.now, spi, Task::Dpd);
        p.run(Duration::from_secs(100));
        let sa = p.a.sas().next().expect("the SA is still retransmitting its DPD");
        let next = sa.poll_timeout().expect("a retransmission is due later");
        let _ = tx.send((p.now, next));
    });
    let (now, next) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("handle_timeout returned (it spun on a deadline in the past)");
    assert!(next > now, "the SA's next deadline is in the future");
}

#[test]
fn every_ml_kem_parameter_set_keys_the_ike_sa_and_child_pfs() {
    for group in ["mlkem512", "mlkem768", "mlkem1024"] {
        let mut p = establish(
            &format!("aes256gcm16-prfsha384-{group}"),
            &format!("aes256gcm16-{group}"),
        );
        assert_eq!(p.a_seen.up.len(), 1, "{group}: {:?}", p.a_seen.down);
        assert_eq!(p.a_seen.up[0], p.b_seen.up[0], "{group}");
        assert_eq!(
            (
                p.a.stats().established_post_quantum,
                p.b.stats().established_post_quantum
            ),
            (1, 1),
            "{group}: counted as post-quantum"
        );
        assert_eq!(
            p.a.sas().next().and_then(|s| s.suite()).map(|s| s.ke.name()),
            Some(group)
        );
        // A CHILD_SA rekey with ML-KEM as its PFS key exchange: the initiator
        // encapsulation key and the responder ciphertext in CREATE_CHILD_SA.
        let child = p.a_seen.installed[0].spi_in;
        let a_spi = p.a_spi();
        p.a.queue(p.now, a_spi, Task::RekeyChild(child));
        p.run(Duration::from_secs(60));
        assert_eq!(p.a_seen.installed.len(), 2, "{group}: child rekeyed");
        assert_eq!(p.b_seen.installed.len(), 2, "{group}");
        assert_children_match(&p.a_seen.installed[1], &p.b_seen.installed[1]);
        // And an IKE SA rekey with it.
        p.a.queue(p.now, a_spi, Task::RekeyIke);
        p.run(Duration::from_secs(60));
        assert_eq!(p.a_seen.rekeyed, 1, "{group}: IKE SA rekeyed");
    }
}

#[test]
fn additional_key_exchange_policy_against_a_classical_peer() {
    let classical = "aes256gcm16-prfsha384-x25519";
    // Optional (ke1_none): a classical responder is accepted, in both roles.
    for (ike_a, ike_b) in [
        ("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none", classical),
        (classical, "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none"),
    ] {
        let (a, _) = default_pair(ike_a, "aes256gcm16");
        let (_, b) = default_pair(ike_b, "aes256gcm16");
        let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
        p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
        p.run(Duration::from_secs(60));
        assert_eq!(p.a_seen.up.len(), 1, "{ike_a} -> {ike_b}: {:?}", p.a_seen.down);
        assert_eq!(p.b_seen.up.len(), 1);
        assert_eq!(p.b.stats().established, 1);
        assert_eq!(p.b.stats().established_post_quantum, 0, "x25519 alone is classical");
    }
    // Required: refused, in both roles.
    for (ike_a, ike_b) in [
        ("aes256gcm16-prfsha384-x25519-ke1_mlkem768", classical),
        (classical, "aes256gcm16-prfsha384-x25519-ke1_mlkem768"),
    ] {
        let (a, _) = default_pair(ike_a, "aes256gcm16");
        let (_, b) = default_pair(ike_b, "aes256gcm16");
        let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
        p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
        p.run(Duration::from_secs(60));
        assert!(p.a_seen.up.is_empty() && p.b_seen.up.is_empty(), "{ike_a} -> {ike_b}");
        assert_eq!(
            p.a_seen.down,
            vec![DownReason::PeerError(
                control::wire::ikev2::NotifyType::NO_PROPOSAL_CHOSEN
            )],
            "{ike_a} -> {ike_b}"
        );
    }
}

/// Establishes `ike` on both sides over a network with loss, duplication and
/// reordering, once per seed; returns how many seeds got through (the others
/// must have timed out, every retransmission lost).
fn establishes_over_lossy_network(ike: &str, fragment_size: Option<usize>, seeds: u64) -> u64 {
    establishes_over_lossy_network_with(ike, fragment_size, seeds, &|c| c)
}

/// [`establishes_over_lossy_network`] with both connections changed by `tweak`.
fn establishes_over_lossy_network_with(
    ike: &str,
    fragment_size: Option<usize>,
    seeds: u64,
    tweak: &dyn Fn(ConnectionConfig) -> ConnectionConfig,
) -> u64 {
    let mut up = 0;
    for seed in 1..=seeds {
        let (a, b) = default_pair(ike, "aes256gcm16");
        let (mut a, mut b) = (tweak(a), tweak(b));
        if let Some(size) = fragment_size {
            a.fragment_size = size;
            b.fragment_size = size;
        }
        let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
        p.net = Net {
            loss: 25,
            dup: 20,
            reorder: 20,
            rng: XorShift(seed.wrapping_mul(0x2545_f491_4f6c_dd1d)),
        };
        p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
        p.run(Duration::from_secs(110));
        if p.a_seen.up.len() == 1 {
            up += 1;
            assert_eq!(p.b_seen.up.len(), 1, "{ike} seed {seed}: {:?}", p.b_seen.down);
            assert_eq!(p.a_seen.installed.len(), 1, "{ike} seed {seed}");
            assert_eq!(p.b_seen.installed.len(), 1, "{ike} seed {seed}");
            assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
            let hybrid = ike.contains("-ke1_");
            assert_eq!(
                p.b.stats().established_post_quantum,
                u64::from(hybrid),
                "{ike} seed {seed}"
            );
        } else {
            assert_eq!(p.a_seen.down, vec![DownReason::Timeout], "{ike} seed {seed}");
        }
    }
    up
}

#[test]
fn hybrid_x25519_mlkem768_establishes_through_ike_intermediate() {
    let ike = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";
    let p = establish(ike, "aes256gcm16");
    assert_eq!(p.a_seen.up.len(), 1, "{:?}", p.a_seen.down);
    assert_eq!(p.b_seen.up.len(), 1, "{:?}", p.b_seen.down);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    // IKE_SA_INIT, one IKE_INTERMEDIATE and IKE_AUTH: three exchanges on the wire.
    assert_eq!(p.datagrams, 6);
    let intermediate: Vec<&Vec<u8>> = p
        .wire
        .iter()
        .filter(|(_, d)| d[18] == control::wire::ikev2::ExchangeType::IKE_INTERMEDIATE.0)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(intermediate.len(), 2);
    // Message IDs: IKE_INTERMEDIATE is 1, IKE_AUTH follows as 2.
    assert!(intermediate.iter().all(|d| d[20..24] == [0, 0, 0, 1]));
    for sa in [p.a.sas().next().unwrap(), p.b.sas().next().unwrap()] {
        assert_eq!(sa.key_exchanges(), ["x25519", "ke1_mlkem768"]);
        assert!(sa.is_post_quantum());
    }
    assert_eq!(
        (
            p.a.stats().established_post_quantum,
            p.b.stats().established_post_quantum
        ),
        (1, 1)
    );
    assert!(establishes_over_lossy_network(ike, None, 8) >= 4);
}

#[test]
fn hybrid_ecp384_mlkem1024_establishes_with_fragmented_intermediate() {
    let ike = "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024";
    let p = establish(ike, "aes256gcm16");
    assert_eq!(p.a_seen.up.len(), 1, "{:?}", p.a_seen.down);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    // A 1,568-byte encapsulation key does not fit 576-byte datagrams: SKF fragments.
    let (mut a, mut b) = default_pair(ike, "aes256gcm16");
    a.fragment_size = 576;
    b.fragment_size = 576;
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.up.len(), 1, "{:?}", p.a_seen.down);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    let intermediate = p
        .wire
        .iter()
        .filter(|(_, d)| d[18] == control::wire::ikev2::ExchangeType::IKE_INTERMEDIATE.0)
        .count();
    assert!(
        intermediate > 4,
        "IKE_INTERMEDIATE went as fragments ({intermediate} datagrams)"
    );
    assert!(p.wire.iter().all(|(_, d)| d.len() <= 576 - 28));
    assert!(establishes_over_lossy_network(ike, Some(576), 8) >= 4);
}

#[test]
fn three_key_exchanges_establish() {
    let ike = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024";
    let p = establish(ike, "aes256gcm16");
    assert_eq!(p.a_seen.up.len(), 1, "{:?}", p.a_seen.down);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    // Two IKE_INTERMEDIATE exchanges (message IDs 1 and 2), IKE_AUTH is 3.
    let ids: Vec<[u8; 4]> = p
        .wire
        .iter()
        .filter(|(_, d)| d[18] == control::wire::ikev2::ExchangeType::IKE_AUTH.0)
        .map(|(_, d)| [d[20], d[21], d[22], d[23]])
        .collect();
    assert_eq!(ids, vec![[0, 0, 0, 3]; 2]);
    assert!(establishes_over_lossy_network(ike, Some(1280), 8) >= 4);
}

/// A (initiator) with IKE proposal `ike_a`, B with `ike_b`, run until the
/// handshake is over.
fn establish_between(ike_a: &str, ike_b: &str) -> Pair {
    let (a, _) = default_pair(ike_a, "aes256gcm16");
    let (_, b) = default_pair(ike_b, "aes256gcm16");
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    p
}

#[test]
fn hybrid_with_optional_ke_completes_between_ironsa_peers() {
    // ke1_none on one side, required on the other: the exchange runs.
    let p = establish_between(
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none",
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
    );
    assert_eq!(p.a_seen.up.len(), 1, "{:?}", p.a_seen.down);
    assert_eq!(p.b.stats().established_post_quantum, 1);
}

/// Messages (requests and responses, fragments counted once) of `exchange`
/// seen on the wire so far.
fn messages_of(p: &Pair, exchange: control::wire::ikev2::ExchangeType) -> usize {
    let mut seen: Vec<(u8, &[u8])> = p
        .wire
        .iter()
        .filter(|(_, d)| d[18] == exchange.0)
        .map(|(_, d)| (d[19] & 0x20, &d[20..24]))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// Rekeys the IKE SA from A (or B) and checks that the new IKE SA ran
/// `additional` through IKE_FOLLOWUP_KE, agrees on both sides and works.
fn assert_hybrid_ike_rekey(mut p: Pair, from_b: bool, additional: &[(u8, KeGroup)]) {
    use control::wire::ikev2::ExchangeType;
    assert_eq!(p.a_seen.up.len(), 1, "{:?}", p.a_seen.down);
    let old = p.a_seen.up[0];
    if from_b {
        let b_spi = p.b.sas().next().unwrap().local_spi();
        p.b.queue(p.now, b_spi, Task::RekeyIke);
    } else {
        let a_spi = p.a_spi();
        p.a.queue(p.now, a_spi, Task::RekeyIke);
    }
    p.run(Duration::from_secs(60));
    assert_eq!((p.a_seen.rekeyed, p.b_seen.rekeyed), (1, 1));
    assert_eq!(
        messages_of(&p, ExchangeType::IKE_FOLLOWUP_KE),
        2 * additional.len(),
        "one IKE_FOLLOWUP_KE request and response per additional key exchange"
    );
    assert_eq!((p.a.len(), p.b.len()), (1, 1), "old IKE SA gone after its DELETE");
    let (na, nb) = (p.a.sas().next().unwrap(), p.b.sas().next().unwrap());
    assert_ne!(na.spis(), old);
    assert_eq!(na.spis(), nb.spis());
    assert_eq!(na.additional_key_exchanges(), additional);
    assert_eq!(nb.additional_key_exchanges(), additional);
    assert!(na.is_post_quantum() && nb.is_post_quantum());
    // Both sides derived the same keys: a child rekey over the new SA works.
    rekey_a_child_over_the_new_sa(&mut p);
}

#[test]
fn hybrid_ike_sa_rekey_runs_ike_followup_ke() {
    let ike = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";
    assert_hybrid_ike_rekey(establish(ike, "aes256gcm16"), false, &[(1, KeGroup::MlKem768)]);
    assert_hybrid_ike_rekey(establish(ike, "aes256gcm16"), true, &[(1, KeGroup::MlKem768)]);
}

#[test]
fn ike_sa_rekey_with_two_additional_key_exchanges() {
    let ike = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024";
    let both = [(1, KeGroup::MlKem768), (2, KeGroup::MlKem1024)];
    assert_hybrid_ike_rekey(establish(ike, "aes256gcm16"), false, &both);
    assert_hybrid_ike_rekey(establish(ike, "aes256gcm16"), true, &both);
}

#[test]
fn optional_addke_on_one_side_still_rekeys_hybrid() {
    let p = establish_between(
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none",
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
    );
    assert_hybrid_ike_rekey(p, false, &[(1, KeGroup::MlKem768)]);
}

#[test]
fn hybrid_ike_rekey_over_a_lossy_network_never_yields_a_classical_sa() {
    let mut rekeyed = 0;
    for seed in 1..=8u64 {
        let mut p = establish("aes256gcm16-prfsha384-x25519-ke1_mlkem768", "aes256gcm16");
        p.net = Net {
            loss: 25,
            dup: 20,
            reorder: 20,
            rng: XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        };
        let a_spi = p.a_spi();
        p.a.queue(p.now, a_spi, Task::RekeyIke);
        p.run(Duration::from_secs(200));
        for sa in p.a.sas().chain(p.b.sas()) {
            assert_eq!(
                sa.additional_key_exchanges(),
                vec![(1, KeGroup::MlKem768)],
                "seed {seed}"
            );
        }
        if p.a_seen.rekeyed == 1 && p.b_seen.rekeyed == 1 {
            rekeyed += 1;
            let (na, nb) = (p.a.sas().next().unwrap(), p.b.sas().next().unwrap());
            assert_eq!(na.spis(), nb.spis(), "seed {seed}");
        }
    }
    assert!(rekeyed >= 4, "{rekeyed} of 8 rekeys got through");
}

/// The exchange type byte of an IKE datagram (header offset 18).
fn exchange_type(datagram: &[u8]) -> u8 {
    datagram[18]
}

#[test]
fn a_resumed_ike_sa_continues_on_another_endpoint_without_a_new_ike_sa_init() {
    use control::ike_sa::resume::{ResumableIkeSa, ResumeError};
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spi = p.a_spi();
    p.a.queue(p.now, spi, Task::Dpd);
    p.run(Duration::from_secs(60));
    let child = p.a_seen.installed.pop().expect("A installed the child");
    // What A's driver checkpoints: the IKE SA's state plus the child's keys.
    let mut state = p.a.sa(spi).unwrap().resumable(p.now).expect("established and idle");
    // A answers two more DPDs of B's after the checkpoint, then dies.
    let b_spi = p.b.sas().next().unwrap().local_spi();
    for _ in 0..2 {
        p.b.queue(p.now, b_spi, Task::Dpd);
        p.run(Duration::from_secs(60));
    }
    assert_eq!(state.children.len(), 1);
    state.children[0].inbound = child.inbound.clone();
    state.children[0].outbound = child.outbound.clone();
    state.children[0].esp_seq_out = 1234;
    state.children[0].esp_seq_in = 5678;
    let bytes = state.encode();
    assert!(matches!(
        ResumableIkeSa::decode(&bytes[..bytes.len() - 1]),
        Err(ResumeError::Truncated)
    ));
    let state = ResumableIkeSa::decode(&bytes).unwrap();
    assert_eq!(
        (state.children[0].esp_seq_out, state.children[0].esp_seq_in),
        (1234, 5678)
    );

    // A dies; A2, another process with the same configuration, adopts the SA.
    let config = p.a.context().connections[0].clone();
    p.a = Endpoint::new(
        p.now,
        Context::new(vec![config], AwsLcProvider::seeded(SEED + 7).shared()),
        AdmissionConfig::default(),
        0,
        0,
    );
    assert_eq!(p.a.adopt(p.now, &state).unwrap(), spi);
    assert!(p.a.adopt(p.now, &state).is_err(), "an SPI is adopted once");
    let mut a_seen = Seen::default();
    Pair::collect(&mut p.a, &mut a_seen);
    assert_eq!(a_seen.up.len(), 1);
    assert_eq!(a_seen.installed.len(), 1);
    let resumed = &a_seen.installed[0];
    assert_eq!((resumed.spi_in, resumed.spi_out), (child.spi_in, child.spi_out));
    assert_eq!(
        (&resumed.local_ts, &resumed.remote_ts),
        (&child.local_ts, &child.remote_ts)
    );
    assert_eq!(*a_seen.installed[0].inbound.encr, *child.inbound.encr);

    // The peer's requests are answered, ours are accepted, and a CHILD_SA
    // rekey (keys from SK_d) works: the peer never sees a new IKE_SA_INIT.
    let wire_before = p.wire.len();
    p.b.queue(p.now, b_spi, Task::Dpd);
    p.run(Duration::from_secs(60));
    p.a.queue(p.now, spi, Task::Dpd);
    p.run(Duration::from_secs(60));
    assert_eq!(p.wire.len(), wire_before + 4, "two DPD exchanges");
    p.a.queue(p.now, spi, Task::RekeyChild(child.spi_in));
    p.run(Duration::from_secs(60));
    assert!(p.b_seen.down.is_empty(), "{:?}", p.b_seen.down);
    assert!(p.a_seen.down.is_empty(), "{:?}", p.a_seen.down);
    assert_eq!(p.b.sas().count(), 1);
    assert!(p.b.sas().next().unwrap().is_established());
    assert!(
        p.a_seen.installed.iter().any(|c| c.rekey_of == Some(child.spi_in)),
        "child rekeyed"
    );
    assert!(
        p.wire[wire_before..].iter().all(|(_, d)| exchange_type(d) != 34),
        "no IKE_SA_INIT after the takeover"
    );
}

/// Hands every datagram `from` has queued to `to` at once, as a network
/// would deliver them while `to` has not yet answered anything of its own.
fn deliver_queued(now: Instant, from: &mut Endpoint, to: &mut Endpoint) {
    while let Some(t) = from.poll_transmit() {
        to.handle(now, t.remote, t.local, &t.data);
    }
}

/// A deletes the IKE SA while B's rekey `task` is in flight: the two
/// requests cross. With the DELETE reaching B first or B's request reaching
/// A first, both sides end with no SA (RFC 7296 §2.25.2: a rekey of an IKE
/// SA being closed is refused with TEMPORARY_FAILURE), so A's DELETE is
/// answered and neither side keeps an SA the other does not know.
fn delete_crossing_a_peer_rekey(task: fn(&Pair) -> Task, delete_reaches_b_first: bool) {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let (a_spi, b_spi) = (p.a_spi(), p.b.sas().next().unwrap().local_spi());
    let task = task(&p);
    assert!(p.b.queue(p.now, b_spi, task.clone()));
    assert!(p.a.delete(p.now, a_spi));
    let now = p.now;
    if delete_reaches_b_first {
        deliver_queued(now, &mut p.a, &mut p.b);
        deliver_queued(now, &mut p.b, &mut p.a);
    } else {
        // Hold A's DELETE back while B's request reaches A.
        let held: Vec<Transmit> = std::iter::from_fn(|| p.a.poll_transmit()).collect();
        deliver_queued(now, &mut p.b, &mut p.a);
        for t in held {
            p.b.handle(now, t.remote, t.local, &t.data);
        }
    }
    p.run(Duration::from_secs(60));
    let case = format!("{task:?}, DELETE reaches B first: {delete_reaches_b_first}");
    assert_eq!(p.a.len(), 0, "A keeps an IKE SA ({case})");
    assert_eq!(p.b.len(), 0, "B keeps an IKE SA ({case})");
    assert_eq!(p.a_seen.down, vec![DownReason::Deleted], "{case}");
    assert_eq!(p.b_seen.down, vec![DownReason::Deleted], "{case}");
    assert_eq!(p.a_seen.rekeyed, 0, "A rekeyed an IKE SA it was deleting ({case})");
    assert_eq!(
        p.a_seen.installed.len() - p.a_seen.deleted.len(),
        0,
        "A keeps a child ({case})"
    );
}

#[test]
fn ike_delete_crossing_a_peer_ike_rekey_ends_both_sides() {
    for delete_reaches_b_first in [false, true] {
        delete_crossing_a_peer_rekey(|_| Task::RekeyIke, delete_reaches_b_first);
    }
}

#[test]
fn ike_delete_crossing_a_peer_child_rekey_ends_both_sides() {
    for delete_reaches_b_first in [true, false] {
        delete_crossing_a_peer_rekey(
            |p| Task::RekeyChild(p.b.sas().next().unwrap().children()[0].spi_in),
            delete_reaches_b_first,
        );
    }
}

/// B's IKE rekey crosses A's just before B's hard lifetime ends (the
/// soak's timers: rekey 15 s, 1.5 s to the hard lifetime). Both refuse with
/// TEMPORARY_FAILURE; B must retry before its IKE SA expires, which would
/// end it without the peer knowing.
#[test]
fn ike_rekey_collision_near_the_hard_lifetime_is_retried_in_time() {
    let (a, mut b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    b.ike_lifetime = Lifetime {
        rekey: Duration::from_secs(15),
        jitter: Duration::ZERO,
        over: Duration::from_millis(1500),
    };
    let (mut p, conn) = Pair::new(a, b, AdmissionConfig::default());
    let start = p.now;
    p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
        .unwrap();
    p.run(Duration::from_secs(10));
    assert!(p.now <= start + Duration::from_secs(1), "established at once");
    let a_spi = p.a_spi();
    // Past B's rekey time, before its hard lifetime, wherever in that second B's SA came up.
    p.now = start + Duration::from_secs(16);
    p.a.queue(p.now, a_spi, Task::RekeyIke);
    p.b.handle_timeout(p.now);
    p.run(Duration::from_secs(60));
    assert!(
        !p.b_seen.down.contains(&DownReason::Expired),
        "B's IKE SA expired: {:?}",
        p.b_seen.down
    );
    assert_eq!(p.a.len(), 1);
    assert_eq!(p.b.len(), 1);
    assert_eq!(p.a.sas().next().unwrap().spis(), p.b.sas().next().unwrap().spis());
}

const HYBRID_IKE: &str = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";

/// Rekeys the first child from A (or B) and checks that the new child ran
/// `additional` through IKE_FOLLOWUP_KE, has the same keys on both sides
/// and replaced the old one.
fn assert_hybrid_child_rekey(p: &mut Pair, from_b: bool, additional: &[(u8, KeGroup)]) {
    use control::wire::ikev2::ExchangeType;
    let before = messages_of(p, ExchangeType::IKE_FOLLOWUP_KE);
    let (a_n, b_n) = (p.a_seen.installed.len(), p.b_seen.installed.len());
    if from_b {
        let b_spi = p.b.sas().next().unwrap().local_spi();
        let old = p.b.sas().next().unwrap().children()[0].spi_in;
        p.b.queue(p.now, b_spi, Task::RekeyChild(old));
    } else {
        let a_spi = p.a_spi();
        let old = p.a.sas().next().unwrap().children()[0].spi_in;
        p.a.queue(p.now, a_spi, Task::RekeyChild(old));
    }
    p.run(Duration::from_secs(60));
    assert!(
        p.a_seen.failed.is_empty() && p.b_seen.failed.is_empty(),
        "{:?} {:?}",
        p.a_seen.failed,
        p.b_seen.failed
    );
    assert_eq!((p.a_seen.installed.len(), p.b_seen.installed.len()), (a_n + 1, b_n + 1));
    assert_eq!(
        messages_of(p, ExchangeType::IKE_FOLLOWUP_KE) - before,
        2 * additional.len(),
        "one IKE_FOLLOWUP_KE request and response per additional key exchange"
    );
    let (na, nb) = (p.a_seen.installed.last().unwrap(), p.b_seen.installed.last().unwrap());
    assert_children_match(na, nb);
    assert_eq!(na.pfs, Some(KeGroup::Curve25519));
    assert_eq!(na.additional_ke, additional);
    assert_eq!(nb.additional_ke, additional);
    assert!(na.rekey_of.is_some() && nb.rekey_of.is_some());
    let (ca, cb) = (
        p.a.sas().next().unwrap().children(),
        p.b.sas().next().unwrap().children(),
    );
    assert_eq!((ca.len(), cb.len()), (1, 1), "the old child is deleted");
    assert_eq!((ca[0].spi_in, ca[0].spi_out), (na.spi_in, na.spi_out));
    let names = control::proposal::key_exchange_names(Some(KeGroup::Curve25519), additional);
    assert_eq!(ca[0].key_exchanges(), names, "A's record of the child");
    assert_eq!(cb[0].key_exchanges(), names, "B's record of the child");
}

/// A hybrid IKE SA whose child was rekeyed with ML-KEM keeps every key
/// exchange, its own and its child's, when another endpoint adopts it.
#[test]
fn a_resumed_hybrid_sa_keeps_its_and_its_childs_key_exchanges() {
    use control::ike_sa::resume::ResumableIkeSa;
    let mut p = establish(HYBRID_IKE, "aes256gcm16-x25519-ke1_mlkem768");
    assert_hybrid_child_rekey(&mut p, false, &[(1, KeGroup::MlKem768)]);
    let spi = p.a_spi();
    let child = p.a_seen.installed.last().unwrap();
    let mut state = p.a.sa(spi).unwrap().resumable(p.now).expect("established and idle");
    state.children[0].inbound = child.inbound.clone();
    state.children[0].outbound = child.outbound.clone();
    let state = ResumableIkeSa::decode(&state.encode()).unwrap();
    let config = p.a.context().connections[0].clone();
    let mut adopter = Endpoint::new(
        p.now,
        Context::new(vec![config], AwsLcProvider::seeded(SEED + 9).shared()),
        AdmissionConfig::default(),
        0,
        0,
    );
    assert_eq!(adopter.adopt(p.now, &state).unwrap(), spi);
    let mut seen = Seen::default();
    Pair::collect(&mut adopter, &mut seen);
    assert_eq!(seen.installed.len(), 1);
    assert_eq!(seen.installed[0].additional_ke, [(1, KeGroup::MlKem768)]);
    let sa = adopter.sa(spi).unwrap();
    assert_eq!(sa.key_exchanges(), ["x25519", "ke1_mlkem768"]);
    assert_eq!(sa.children()[0].key_exchanges(), ["x25519", "ke1_mlkem768"]);
}

#[test]
fn child_sa_rekey_runs_additional_key_exchanges_in_both_roles() {
    let mut p = establish(HYBRID_IKE, "aes256gcm16-x25519-ke1_mlkem768");
    assert_eq!(
        p.a_seen.installed[0].additional_ke,
        [],
        "IKE_AUTH children have no key exchange"
    );
    assert_hybrid_child_rekey(&mut p, false, &[(1, KeGroup::MlKem768)]);
    assert_hybrid_child_rekey(&mut p, true, &[(1, KeGroup::MlKem768)]);
    // The new child's keys differ from those of a rekey without ML-KEM.
    assert_ne!(
        *p.a_seen.installed[1].outbound.encr,
        *p.a_seen.installed[2].outbound.encr
    );
}

#[test]
fn child_sa_rekey_with_two_additional_key_exchanges() {
    let mut p = establish(HYBRID_IKE, "aes256gcm16-x25519-ke1_mlkem768-ke2_mlkem1024");
    let both = [(1, KeGroup::MlKem768), (2, KeGroup::MlKem1024)];
    assert_hybrid_child_rekey(&mut p, false, &both);
    assert_hybrid_child_rekey(&mut p, true, &both);
}

#[test]
fn new_child_sa_with_additional_key_exchange_in_create_child_sa() {
    let (mut p, conn) = pair_with_two_children_of(HYBRID_IKE, "aes256gcm16-ecp384-ke1_mlkem1024");
    let spi =
        p.a.initiate_child(p.now, conn, A.parse().unwrap(), B.parse().unwrap(), 0)
            .unwrap();
    p.run(Duration::from_secs(60));
    assert!(p.a.queue(p.now, spi, Task::CreateChild(1)));
    p.run(Duration::from_secs(60));
    assert!(p.a_seen.failed.is_empty(), "{:?}", p.a_seen.failed);
    assert_eq!((p.a_seen.installed.len(), p.b_seen.installed.len()), (2, 2));
    let (na, nb) = (&p.a_seen.installed[1], &p.b_seen.installed[1]);
    assert_eq!(na.name, "second");
    assert_children_match(na, nb);
    assert_eq!((na.pfs, na.rekey_of), (Some(KeGroup::Ecp384), None));
    assert_eq!(nb.additional_ke, [(1, KeGroup::MlKem1024)]);
}

#[test]
fn simultaneous_hybrid_child_rekey_leaves_one_child_with_the_same_keys() {
    for (seed, reorder) in [(0u64, 0u64), (1, 30), (2, 30), (3, 30)] {
        let mut p = establish(HYBRID_IKE, "aes256gcm16-x25519-ke1_mlkem768");
        p.net = Net {
            loss: 0,
            dup: 0,
            reorder,
            rng: XorShift(0x9e37_79b9_7f4a_7c15 ^ seed),
        };
        let a_old = p.a_seen.installed[0].spi_in;
        let b_old = p.b_seen.installed[0].spi_in;
        let a_spi = p.a_spi();
        let b_spi = p.b.sas().next().unwrap().local_spi();
        p.a.queue(p.now, a_spi, Task::RekeyChild(a_old));
        p.b.queue(p.now, b_spi, Task::RekeyChild(b_old));
        p.run(Duration::from_secs(60));
        let ca = p.a.sas().next().unwrap().children();
        let cb = p.b.sas().next().unwrap().children();
        assert_eq!((ca.len(), cb.len()), (1, 1), "seed {seed}: one child on each side");
        assert_eq!(
            (ca[0].spi_in, ca[0].spi_out),
            (cb[0].spi_out, cb[0].spi_in),
            "seed {seed}"
        );
        assert_ne!(ca[0].spi_in, a_old, "seed {seed}: the child was replaced");
        let ia = p.a_seen.installed.iter().find(|c| c.spi_in == ca[0].spi_in).unwrap();
        let ib = p.b_seen.installed.iter().find(|c| c.spi_in == cb[0].spi_in).unwrap();
        assert_children_match(ia, ib);
        assert_eq!(ia.additional_ke, [(1, KeGroup::MlKem768)], "seed {seed}");
        // Settled at once: only the winner ran its IKE_FOLLOWUP_KE, nobody
        // failed and retried.
        assert!(p.a_seen.failed.is_empty() && p.b_seen.failed.is_empty(), "seed {seed}");
        assert_eq!(
            messages_of(&p, control::wire::ikev2::ExchangeType::IKE_FOLLOWUP_KE),
            2,
            "seed {seed}"
        );
        // Nothing of the abandoned exchange is left behind.
        for sa in p.a.sas().chain(p.b.sas()) {
            assert_eq!(sa.memory().queues, 0, "seed {seed}");
        }
    }
}

#[test]
fn optional_child_addke_against_a_classical_peer_and_required_refused() {
    // keN_none: a classical peer's rekey is accepted, no IKE_FOLLOWUP_KE.
    let (a, _) = default_pair(HYBRID_IKE, "aes256gcm16-x25519-ke1_mlkem768-ke1_none");
    let (_, b) = default_pair(HYBRID_IKE, "aes256gcm16-x25519");
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert_hybrid_child_rekey(&mut p, false, &[]);
    assert_hybrid_child_rekey(&mut p, true, &[]);
    // Required: the classical peer's rekey is refused, ours is not answered
    // with a classical child.
    let (a, _) = default_pair(HYBRID_IKE, "aes256gcm16-x25519-ke1_mlkem768");
    let (_, b) = default_pair(HYBRID_IKE, "aes256gcm16-x25519");
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    let a_spi = p.a_spi();
    let old = p.a_seen.installed[0].spi_in;
    p.a.queue(p.now, a_spi, Task::RekeyChild(old));
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.installed.len(), 1);
    assert!(
        p.a_seen.failed[0].contains("NO_PROPOSAL_CHOSEN"),
        "{:?}",
        p.a_seen.failed
    );
    let b_spi = p.b.sas().next().unwrap().local_spi();
    let old = p.b_seen.installed[0].spi_in;
    p.b.queue(p.now, b_spi, Task::RekeyChild(old));
    p.run(Duration::from_secs(60));
    assert_eq!(p.b_seen.installed.len(), 1);
    assert!(
        p.b_seen.failed[0].contains("NO_PROPOSAL_CHOSEN"),
        "{:?}",
        p.b_seen.failed
    );
}

#[test]
fn hybrid_child_rekey_over_a_lossy_network_never_yields_a_classical_child() {
    let mut rekeyed = 0;
    for seed in 1..=8u64 {
        let mut p = establish(HYBRID_IKE, "aes256gcm16-x25519-ke1_mlkem768");
        p.net = Net {
            loss: 25,
            dup: 20,
            reorder: 20,
            rng: XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        };
        let a_spi = p.a_spi();
        let old = p.a_seen.installed[0].spi_in;
        p.a.queue(p.now, a_spi, Task::RekeyChild(old));
        p.run(Duration::from_secs(200));
        for c in p.a_seen.installed.iter().chain(&p.b_seen.installed).skip(1) {
            if c.rekey_of.is_some() {
                assert_eq!(c.additional_ke, [(1, KeGroup::MlKem768)], "seed {seed}");
            }
        }
        if p.a_seen.installed.len() == 2 && p.b_seen.installed.len() == 2 {
            rekeyed += 1;
            assert_children_match(&p.a_seen.installed[1], &p.b_seen.installed[1]);
        }
    }
    assert!(rekeyed >= 4, "{rekeyed} of 8 rekeys got through");
}

/// Runs a hybrid rekey from A (the IKE SA's, or the first child's) with
/// every IKE_FOLLOWUP_KE request of A lost, and returns the pair and B's
/// SA memory in queues while it waits.
fn followup_never_arrives(rekey_child: bool) -> (Pair, usize) {
    use control::wire::ikev2::ExchangeType;
    let mut p = establish(HYBRID_IKE, "aes256gcm16-x25519-ke1_mlkem768");
    let a_spi = p.a_spi();
    let task = if rekey_child {
        Task::RekeyChild(p.a_seen.installed[0].spi_in)
    } else {
        Task::RekeyIke
    };
    p.a.queue(p.now, a_spi, task);
    // Deliver until A sends its first IKE_FOLLOWUP_KE, which is lost.
    let mut in_flight: VecDeque<(bool, Transmit)> = VecDeque::new();
    loop {
        while let Some(t) = p.a.poll_transmit() {
            in_flight.push_back((true, t));
        }
        while let Some(t) = p.b.poll_transmit() {
            in_flight.push_back((false, t));
        }
        let Some((from_a, t)) = in_flight.pop_front() else {
            break;
        };
        if from_a && t.data[18] == ExchangeType::IKE_FOLLOWUP_KE.0 {
            break;
        }
        let (to, local, remote) = if from_a {
            (&mut p.b, t.remote, t.local)
        } else {
            (&mut p.a, t.remote, t.local)
        };
        to.handle(p.now, local, remote, &t.data);
    }
    let waiting = p.b.sas().next().unwrap().memory().queues;
    (p, waiting)
}

#[test]
fn responder_gives_up_on_an_unfinished_ike_followup_ke() {
    for rekey_child in [false, true] {
        let (mut p, waiting) = followup_never_arrives(rekey_child);
        assert!(waiting > 0, "B keeps the exchange while it waits");
        let b = p.b.sas().next().unwrap().local_spi();
        // Half-open timeout (30 s) passes with A silent: B lets go of it
        // and keeps the IKE SA and its child.
        p.now += Duration::from_secs(31);
        p.b.handle_timeout(p.now);
        let sa = p.b.sas().find(|s| s.local_spi() == b).expect("IKE SA kept");
        assert_eq!(
            sa.memory().queues,
            0,
            "child {rekey_child}: the unfinished exchange is dropped"
        );
        assert_eq!(sa.children().len(), 1);
        // A's late IKE_FOLLOWUP_KE finds no state; its retried rekey then
        // completes on both sides alike.
        p.run(Duration::from_secs(60));
        assert_eq!(p.a_seen.rekeyed, p.b_seen.rekeyed);
        assert_eq!(p.a_seen.installed.len(), p.b_seen.installed.len());
    }
}

fn with_ppk(mut c: ConnectionConfig, id: &str, key: &[u8], required: bool) -> ConnectionConfig {
    c.ppk = Some(control::config::PpkConfig {
        id: id.as_bytes().to_vec(),
        key: Arc::new(zeroize::Zeroizing::new(key.to_vec())),
        required,
    });
    c
}

const PPK: &[u8] = b"a postquantum preshared key of 32+ bytes";

/// A and B with the default connections changed by `a` and `b`, run until
/// the handshake is over.
fn establish_with(
    a: impl FnOnce(ConnectionConfig) -> ConnectionConfig,
    b: impl FnOnce(ConnectionConfig) -> ConnectionConfig,
) -> Pair {
    let (ca, cb) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519");
    let (mut p, c) = Pair::new(a(ca), b(cb), AdmissionConfig::default());
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    p
}

/// The first child's keys agree on both sides and a PFS rekey over SK_d works.
fn assert_keys_agree(p: &mut Pair) -> Vec<u8> {
    assert_eq!(p.a_seen.up.len(), 1, "{:?} / {:?}", p.a_seen.down, p.b_seen.down);
    assert_children_match(&p.a_seen.installed[0], &p.b_seen.installed[0]);
    let key = p.a_seen.installed[0].outbound.encr.to_vec();
    let spi = p.a_spi();
    p.a.queue(p.now, spi, Task::RekeyChild(p.a_seen.installed[0].spi_in));
    p.run(Duration::from_secs(60));
    assert_children_match(&p.a_seen.installed[1], &p.b_seen.installed[1]);
    key
}

#[test]
fn ppk_is_mixed_into_the_keys_when_both_have_it() {
    let plain = assert_keys_agree(&mut establish_with(|a| a, |b| b));
    for (ra, rb) in [(true, true), (false, false), (true, false)] {
        let mut p = establish_with(|a| with_ppk(a, "ppk1", PPK, ra), |b| with_ppk(b, "ppk1", PPK, rb));
        let mixed = assert_keys_agree(&mut p);
        assert_ne!(mixed, plain, "required {ra}/{rb}: SK_d depends on the PPK");
    }
}

#[test]
fn optional_ppk_falls_back_to_no_ppk_auth() {
    let plain = assert_keys_agree(&mut establish_with(|a| a, |b| b));
    // The responder has no PPK (or another one): NO_PPK_AUTH authenticates
    // the initiator and the keys are those without a PPK.
    let mut p = establish_with(|a| with_ppk(a, "ppk1", PPK, false), |b| b);
    assert_eq!(assert_keys_agree(&mut p), plain);
    let mut p = establish_with(
        |a| with_ppk(a, "ppk1", PPK, false),
        |b| with_ppk(b, "other", PPK, false),
    );
    assert_eq!(assert_keys_agree(&mut p), plain);
    // The responder's PPK is optional and the initiator has none.
    let mut p = establish_with(|a| a, |b| with_ppk(b, "ppk1", PPK, false));
    assert_eq!(assert_keys_agree(&mut p), plain);
}

#[test]
fn required_ppk_with_a_hybrid_sa_establishes_over_a_lossy_network() {
    let ike = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";
    let up = establishes_over_lossy_network_with(ike, Some(1280), 8, &|c| with_ppk(c, "ppk1", PPK, true));
    assert!(up >= 4, "{up} of 8 seeds established");
}

#[test]
fn required_ppk_refuses_a_peer_without_it() {
    // Initiator requires it, responder has none.
    let p = establish_with(|a| with_ppk(a, "ppk1", PPK, true), |b| b);
    assert!(p.a_seen.up.is_empty() && p.b_seen.up.is_empty());
    // Responder requires it, initiator has none, another, or it optional.
    for a in [None, Some(("other", false)), Some(("other", true))] {
        let p = establish_with(
            |c| match a {
                Some((id, req)) => with_ppk(c, id, PPK, req),
                None => c,
            },
            |b| with_ppk(b, "ppk1", PPK, true),
        );
        assert!(p.a_seen.up.is_empty() && p.b_seen.up.is_empty(), "{a:?}");
        assert!(
            matches!(p.a_seen.down.first(), Some(DownReason::PeerError(_))),
            "{a:?}: {:?}",
            p.a_seen.down
        );
    }
    // The same PPK_ID with different keys: authentication fails.
    let p = establish_with(
        |a| with_ppk(a, "ppk1", PPK, true),
        |b| with_ppk(b, "ppk1", b"another postquantum preshared key", true),
    );
    assert!(p.a_seen.up.is_empty() && p.b_seen.up.is_empty());
}

/// An established pair where `a` forces UDP encapsulation: both sides then
/// see a NAT, `a` in front of itself (as behind a real NAT).
fn establish_behind_nat(keepalive_a: Option<Duration>) -> Pair {
    let (mut a, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    a.force_udp_encap = true;
    a.nat_keepalive = keepalive_a;
    let (mut p, conn) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
        .unwrap();
    p.run(Duration::from_secs(1));
    assert_eq!((p.a_seen.up.len(), p.b_seen.up.len()), (1, 1));
    p
}

fn keepalives(p: &Pair) -> (usize, usize) {
    let count = |from_a: bool| p.wire.iter().filter(|(a, d)| *a == from_a && d[..] == [0xff]).count();
    (count(true), count(false))
}

#[test]
fn nat_keepalives_are_sent_only_from_behind_a_nat() {
    let mut p = establish_behind_nat(Some(Duration::from_secs(20)));
    let sent = p.wire.len();
    p.run(Duration::from_secs(65));
    // Three keepalives from the side behind the NAT (at 20, 40 and 60 s), none from the other.
    assert_eq!(keepalives(&p), (3, 0));
    assert_eq!(p.wire.len(), sent + 3, "nothing but keepalives while idle");
    // Not without a NAT, and not when switched off.
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    p.run(Duration::from_secs(65));
    assert_eq!(keepalives(&p), (0, 0));
    let mut p = establish_behind_nat(None);
    p.run(Duration::from_secs(65));
    assert_eq!(keepalives(&p), (0, 0));
}

#[test]
fn esp_rebinding_moves_ike_and_children_only_with_a_nat() {
    let mut p = establish_behind_nat(None);
    let b_spi = p.b.sas().next().unwrap().local_spi();
    let spi_in = p.b_seen.installed[0].spi_in;
    let rebound: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    assert!(p.b.follow_peer(b_spi, rebound));
    p.run(Duration::from_secs(1));
    assert_eq!(p.b.sas().next().unwrap().remote_addr(), rebound);
    assert_eq!(p.b_seen.moved.len(), 1);
    let (spis, local, remote, udp) = p.b_seen.moved[0].clone();
    assert_eq!((spis, remote, udp), (vec![spi_in], rebound, true));
    assert_eq!(local.port(), 4500);
    // The same source again, or an SA without NAT: nothing moves.
    assert!(!p.b.follow_peer(b_spi, rebound));
    let mut plain = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spi = plain.b.sas().next().unwrap().local_spi();
    assert!(!plain.b.follow_peer(spi, rebound));
    plain.run(Duration::from_secs(1));
    assert!(plain.b_seen.moved.is_empty());
    assert_eq!(
        plain.b.sas().next().unwrap().remote_addr(),
        A.parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn ike_rebinding_moves_the_children_too() {
    let mut p = establish_behind_nat(None);
    let spi_in = p.b_seen.installed[0].spi_in;
    let a_spi = p.a_spi();
    p.a.queue(p.now, a_spi, Task::Dpd);
    // The NAT gives A a new external port: the DPD request arrives from it.
    let t = p.a.poll_transmit().expect("DPD request");
    let rebound: SocketAddr = "192.0.2.1:41000".parse().unwrap();
    p.b.handle(p.now, t.remote, rebound, &t.data);
    Pair::collect(&mut p.b, &mut p.b_seen);
    assert_eq!(p.b.sas().next().unwrap().remote_addr(), rebound);
    assert_eq!(p.b_seen.moved.len(), 1);
    assert_eq!(p.b_seen.moved[0].0, vec![spi_in]);
    assert_eq!(p.b_seen.moved[0].2, rebound);
    let answer = p.b.poll_transmit().expect("DPD answer");
    assert_eq!(answer.remote, rebound);
}

#[test]
fn mobike_is_negotiated_unless_a_side_turns_it_off() {
    let p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    assert!(p.a.sas().next().unwrap().mobike() && p.b.sas().next().unwrap().mobike());
    let (a, mut b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    b.mobike = false;
    let (mut p, conn) = Pair::new(a, b, AdmissionConfig::default());
    p.a.initiate(p.now, conn, A.parse().unwrap(), B.parse().unwrap())
        .unwrap();
    p.run(Duration::from_secs(5));
    let spi = p.a_spi();
    assert!(!p.a.sas().next().unwrap().mobike() && !p.b.sas().next().unwrap().mobike());
    // Without MOBIKE a client's new address is not announced.
    assert!(!p.a.update_local_address(p.now, "192.0.2.9:500".parse().unwrap(), spi));
}

#[test]
fn mobike_update_moves_ike_at_once_and_children_after_return_routability() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spi = p.a_spi();
    let spi_in_b = p.b_seen.installed[0].spi_in;
    let before = p.datagrams;
    let moved: SocketAddr = "192.0.2.9:500".parse().unwrap();
    assert!(p.a.update_local_address(p.now, moved, spi));
    p.run(Duration::from_secs(5));
    // UPDATE_SA_ADDRESSES and its answer, then the COOKIE2 check and its answer.
    assert_eq!(p.datagrams, before + 4);
    assert_eq!(p.b.sas().next().unwrap().remote_addr(), moved);
    assert_eq!(p.a.sas().next().unwrap().local_addr(), moved);
    assert!(p.a.sas().next().unwrap().is_established() && p.b.sas().next().unwrap().is_established());
    // Each side moves its ESP once: the client on the answer, the gateway after the check.
    assert_eq!(p.a_seen.moved.len(), 1);
    assert_eq!(p.a_seen.moved[0].1.ip(), moved.ip());
    assert_eq!(p.b_seen.moved.len(), 1);
    assert_eq!(p.b_seen.moved[0].0, vec![spi_in_b]);
    assert_eq!(p.b_seen.moved[0].2.ip(), moved.ip());
    // No new handshake, no rekey.
    assert_eq!(
        (p.a_seen.up.len(), p.b_seen.up.len(), p.a_seen.installed.len()),
        (1, 1, 1)
    );
    assert_eq!(p.b.stats().drops.total(), 0);
}

#[test]
fn forged_update_sa_addresses_is_dropped_and_counted() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spi = p.a_spi();
    assert!(p.a.update_local_address(p.now, "192.0.2.9:500".parse().unwrap(), spi));
    let mut t = p.a.poll_transmit().expect("UPDATE_SA_ADDRESSES");
    let last = t.data.len() - 1;
    t.data[last] ^= 0x55;
    let attacker: SocketAddr = "198.51.100.66:500".parse().unwrap();
    p.b.handle(p.now, t.remote, attacker, &t.data);
    Pair::collect(&mut p.b, &mut p.b_seen);
    assert_eq!(
        p.b.sas().next().unwrap().remote_addr(),
        A.parse::<SocketAddr>().unwrap()
    );
    assert!(p.b_seen.moved.is_empty());
    assert_eq!(p.b.stats().drops.get(control::drops::DropReason::Unauthenticated), 1);
    assert!(p.b.poll_transmit().is_none(), "nothing answers a forged request");
}

#[test]
fn mobike_client_moves_with_cookie2_and_announces_its_addresses() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spi = p.a_spi();
    let moved: SocketAddr = "192.0.2.9:500".parse().unwrap();
    let others: Vec<std::net::IpAddr> = vec![
        moved.ip(),
        "192.0.2.10".parse().unwrap(),
        "2001:db8::9".parse().unwrap(),
    ];
    // The responder decides nothing about addresses.
    let b_spi = p.b.sas().next().unwrap().local_spi();
    assert!(!p.b.local_addresses_changed(p.now, b_spi, B.parse().unwrap(), &others));
    let before = p.datagrams;
    assert!(p.a.local_addresses_changed(p.now, spi, moved, &others));
    p.run(Duration::from_secs(5));
    // UPDATE_SA_ADDRESSES (COOKIE2 echoed) and the gateway's own COOKIE2 check.
    assert_eq!(p.datagrams, before + 4);
    assert_eq!(p.b.sas().next().unwrap().remote_addr(), moved);
    assert_eq!(p.a_seen.moved.len(), 1, "the client moves once its COOKIE2 came back");
    assert_eq!(p.b_seen.moved.len(), 1);
    // Same address, another set: only the list is announced, nothing moves.
    let before = p.datagrams;
    assert!(p.a.local_addresses_changed(p.now, spi, moved, &[moved.ip()]));
    p.run(Duration::from_secs(5));
    assert_eq!(p.datagrams, before + 2);
    assert_eq!((p.a_seen.moved.len(), p.b_seen.moved.len()), (1, 1));
    assert_eq!(p.a.stats().drops.total() + p.b.stats().drops.total(), 0);
    assert_eq!((p.a_seen.up.len(), p.a_seen.installed.len()), (1, 1), "no new SAs");
}

#[test]
fn mobike_request_in_flight_is_resent_from_the_new_address_at_once() {
    let mut p = establish("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let spi = p.a_spi();
    let old: SocketAddr = A.parse().unwrap();
    let moved: SocketAddr = "192.0.2.9:500".parse().unwrap();
    // A new address appears: the list goes out from the old one...
    assert!(p.a.local_addresses_changed(p.now, spi, old, &[old.ip(), moved.ip()]));
    let announce = p.a.poll_transmit().expect("address list");
    assert_eq!(announce.local, old);
    p.b.handle(p.now, announce.local, announce.remote, &announce.data);
    // ...and its answer is lost with the old address, which goes away.
    assert!(p.b.poll_transmit().is_some());
    assert!(p.a.local_addresses_changed(p.now, spi, moved, &[moved.ip()]));
    let again = p.a.poll_transmit().expect("the request in flight, sent again at once");
    assert_eq!((again.local, &again.data), (moved, &announce.data));
    p.b.handle(p.now, again.local, again.remote, &again.data);
    p.run(Duration::from_millis(100));
    assert_eq!(
        p.b.sas().next().unwrap().remote_addr(),
        moved,
        "the update followed without a timeout"
    );
    assert_eq!((p.a_seen.moved.len(), p.b_seen.moved.len()), (1, 1));
}

/// RFC 5685: the responder redirects a new initiator at IKE_SA_INIT; the
/// initiator goes to the named gateway with REDIRECTED_FROM, which is never
/// redirected again, and the IKE SA comes up there.
#[test]
fn an_initiator_follows_a_redirect_at_ike_sa_init() {
    use control::wire::ikev2::{Message, NotifyType, Payload, decode_message};
    let (a, b) = default_pair("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let (mut p, c) = Pair::new(a, b, AdmissionConfig::default());
    // The pair delivers A's datagrams to B whatever their address: B plays
    // the gateway it redirects to as well.
    let elsewhere: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    p.b.set_redirect_policy(Some(Arc::new(move || Some(elsewhere))));
    p.a.initiate(p.now, c, A.parse().unwrap(), B.parse().unwrap()).unwrap();
    p.run(Duration::from_secs(60));
    assert_eq!(p.a_seen.up.len(), 1, "established after the redirect");
    assert_eq!(p.b.stats().redirected, 1);
    let sa = p.a.sas().next().unwrap();
    assert_eq!(sa.remote_addr(), SocketAddr::new(elsewhere, 500));
    let notifies = |m: &Message| -> Vec<(NotifyType, Vec<u8>)> {
        m.payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Notify(n) => Some((n.ty, n.data.clone())),
                _ => None,
            })
            .collect()
    };
    let inits: Vec<Vec<(NotifyType, Vec<u8>)>> = p
        .wire
        .iter()
        .filter(|(from_a, _)| *from_a)
        .filter_map(|(_, d)| decode_message(d).ok())
        .filter(|m| m.header.message_id == 0)
        .map(|m| notifies(&m))
        .collect();
    assert_eq!(inits.len(), 2, "one IKE_SA_INIT to each gateway");
    assert!(inits[0].iter().any(|(t, _)| *t == NotifyType::REDIRECT_SUPPORTED));
    let from = inits[1].iter().find(|(t, _)| *t == NotifyType::REDIRECTED_FROM);
    assert_eq!(
        from.map(|(_, d)| d.clone()),
        Some(vec![1, 4, 192, 0, 2, 2]),
        "REDIRECTED_FROM names the first gateway"
    );
    assert!(!inits[1].iter().any(|(t, _)| *t == NotifyType::REDIRECT_SUPPORTED));
}

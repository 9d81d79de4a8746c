//! IKEv1 against Debian's charon (strongSwan 5.9.8, `version = 1`): Main
//! Mode with PSK aes256-sha256-modp2048 in both roles, driven through the
//! sans-IO `control::ikev1::Ikev1Sa` over a loopback UDP socket.
//!
//! charon runs with kernel-netlink and this kernel has no ESP, so charon
//! cannot install the ESP SAs. As Quick Mode responder it still answers and
//! takes our HASH(3) (we install); as Quick Mode initiator it fails before
//! its message 3 and deletes the SAs, which we take from its INFORMATIONAL
//! messages.

#[path = "../support/mod.rs"]
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::config::{ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
use control::ike_sa::{Context, DownReason, Event};
use control::ikev1::{Ikev1Endpoint, Ikev1Policy, Ikev1Sa, MainModeState, starts_phase1};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use ironsa_crypto::AwsLcProvider;
use support::Need;
use support::util::free_udp_port_pair;
use support::{AuthRound, Charon, Child, Connection, IkeVersion, Secret, Target};

const PSK: &str = "a-long-random-test-secret-for-ironsa";
const MARKER: [u8; 4] = [0; 4];

/// True (after a one-line reason) when this machine cannot run the test.
/// Whether the test is skipped (needs root and charon; see `support::require`).
fn skip() -> bool {
    support::skip_unless(&[Need::Root, Need::Charon])
}

fn our_conn(charon: SocketAddr) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(
        "swan",
        parse_identity("ironsa@test"),
        IdentityMatch::Exact(parse_identity("swan@test")),
        PSK.as_bytes(),
    );
    c.remote_addrs = Some(vec![charon.ip()]);
    c.ike_proposals = parse_ike_proposals("aes256-sha256-modp2048").unwrap();
    c.ike_versions = control::config::IkeVersions::V1;
    c.retransmit_timeout = Duration::from_secs(1);
    c.retransmit_tries = 3;
    c.children.push(ChildConfig {
        name: "net".into(),
        esp_proposals: parse_esp_proposals("aes256-sha256").unwrap(),
        local_ts: vec![parse_selector("10.1.0.0/24").unwrap()],
        remote_ts: vec![parse_selector("10.2.0.0/24").unwrap()],
        mode: IpsecMode::Tunnel,
        lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
    });
    c
}

fn charon(port: u16, nat: u16, our_port: u16) -> Charon {
    charon_with(port, nat, our_port, false)
}

fn charon_with(port: u16, nat: u16, our_port: u16, aggressive: bool) -> Charon {
    charon_reauthenticating(port, nat, our_port, aggressive, None)
}

/// charon as above; `reauth` sets its IKE `rekey_time` (for IKEv1 a
/// reauthentication: a new Main Mode that takes over the ESP SAs).
fn charon_reauthenticating(port: u16, nat: u16, our_port: u16, aggressive: bool, reauth: Option<&str>) -> Charon {
    let mut conn = Connection::new("v1", "127.0.0.1", "127.0.0.1")
        .version(IkeVersion::V1)
        .aggressive(aggressive)
        .remote_port(our_port)
        .proposals(&["aes256-sha256-modp2048"])
        .local(AuthRound::psk("swan@test"))
        .remote(AuthRound::psk("ironsa@test"))
        .child(Child::new("net", "10.2.0.0/24", "10.1.0.0/24").esp_proposals(&["aes256-sha256"]));
    if let Some(t) = reauth {
        conn = conn.rekey_time(t);
    }
    Charon::builder("ikev1")
        .ports(port, nat)
        .setting(
            "i_dont_care_about_security_and_use_aggressive_mode_psk",
            if aggressive { "yes" } else { "no" },
        )
        .connection(conn)
        .secret(Secret::psk("s", &["swan@test", "ironsa@test"], PSK))
        .start()
        .unwrap()
}

/// Moves datagrams between `sa` (created by `first` when it is None) and
/// the socket until `done` or the deadline; returns the events seen.
fn drive(
    sock: &UdpSocket,
    peer: SocketAddr,
    sa: &mut Option<Ikev1Sa>,
    ctx: &Context,
    limit: Duration,
    done: impl Fn(&Ikev1Sa, &[Event]) -> bool,
) -> Vec<Event> {
    let local = sock.local_addr().unwrap();
    let end = Instant::now() + limit;
    let mut events = Vec::new();
    let mut buf = [0u8; 65536];
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while Instant::now() < end {
        if let Some(s) = sa.as_mut() {
            while let Some(t) = s.poll_transmit() {
                let mut out = MARKER.to_vec();
                out.extend_from_slice(&t.data);
                sock.send_to(&out, peer).unwrap();
            }
            while let Some(e) = s.poll_event() {
                events.push(e);
            }
            if done(s, &events) {
                return events;
            }
            if s.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                s.handle_timeout(Instant::now());
            }
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from != peer || n < 4 || buf[..4] != MARKER {
                continue;
            }
            let msg = &buf[4..n];
            match sa.as_mut() {
                Some(s) => {
                    if let Err(e) = s.handle(Instant::now(), msg) {
                        panic!("refused a message from charon: {e}");
                    }
                }
                None if starts_phase1(msg) => {
                    *sa = Some(
                        Ikev1Sa::respond(ctx, &Ikev1Policy::main_mode_only(), local, peer, msg, Instant::now())
                            .unwrap(),
                    );
                }
                None => {}
            }
        }
    }
    events
}

fn installed(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::ChildSaInstalled(_)))
}

fn up(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::IkeSaUp { .. }))
}

#[test]
fn main_mode_psk_with_charon_as_responder() {
    if skip() {
        return;
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let our = sock.local_addr().unwrap();
    let (port, nat) = free_udp_port_pair().unwrap();
    let swan = charon(port, nat, our.port());
    let peer: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let conn = Arc::new(our_conn(peer));
    let ctx = Context::new(vec![conn.clone()], AwsLcProvider::new().shared());
    let mut sa = Some(Ikev1Sa::initiate(&ctx, conn, our, peer, Instant::now()).unwrap());
    let events = drive(&sock, peer, &mut sa, &ctx, Duration::from_secs(15), |_, ev| {
        installed(ev)
    });
    let sa = sa.unwrap();
    if sa.state() != MainModeState::Done {
        swan.dump_log();
    }
    assert_eq!(sa.state(), MainModeState::Done, "{events:?}");
    assert!(up(&events));
    swan.wait_for_log("IKE_SA v1[1] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    // charon verified our HASH(1) and answered; we verified its HASH(2),
    // derived KEYMAT and installed; charon verified our HASH(3).
    assert!(installed(&events), "{events:?}\n{}", swan.log_tail(40));
    swan.wait_for_log("generating QUICK_MODE response", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    swan.wait_for_log("[ HASH ]", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
}

#[test]
fn main_mode_psk_with_charon_as_initiator() {
    if skip() {
        return;
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let our = sock.local_addr().unwrap();
    let (port, nat) = free_udp_port_pair().unwrap();
    let swan = charon(port, nat, our.port());
    let peer: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ctx = Context::new(vec![Arc::new(our_conn(peer))], AwsLcProvider::new().shared());
    let swanctl = swan.swanctl().clone();
    let initiator = std::thread::spawn(move || swanctl.initiate(Target::Child("net"), Duration::from_secs(10)));
    let mut sa = None;
    let events = drive(&sock, peer, &mut sa, &ctx, Duration::from_secs(15), |_, ev| {
        ev.iter()
            .any(|e| matches!(e, Event::IkeSaDown { .. } | Event::ChildSaFailed { .. }))
    });
    let _ = initiator.join();
    let Some(sa) = sa else {
        swan.dump_log();
        panic!("charon never sent Main Mode message 1");
    };
    assert_eq!(sa.state(), MainModeState::Done, "{events:?}\n{}", swan.log_tail(40));
    assert!(up(&events));
    swan.wait_for_log("IKE_SA v1[1] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    // charon's Quick Mode: it accepted our answer (HASH(2), SA, nonce, IDs),
    // failed to install ESP in this kernel and told us so in an
    // INFORMATIONAL message whose HASH we verified (N(NO_PROPOSAL_CHOSEN),
    // or DELETEs, depending on its timing).
    swan.wait_for_log("parsed QUICK_MODE response", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    assert!(swan.log_contains("unable to add SAD entry"), "{}", swan.log_tail(40));
    assert!(
        events.iter().any(|e| match e {
            Event::IkeSaDown { reason, .. } => *reason == DownReason::Deleted,
            Event::ChildSaFailed { reason, .. } => reason.contains("NO_PROPOSAL_CHOSEN"),
            _ => false,
        }),
        "{events:?}"
    );
}

#[test]
fn aggressive_mode_psk_with_charon_as_responder() {
    if skip() {
        return;
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let our = sock.local_addr().unwrap();
    let (port, nat) = free_udp_port_pair().unwrap();
    let swan = charon_with(port, nat, our.port(), true);
    let peer: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let conn = Arc::new(our_conn(peer));
    let ctx = Context::new(vec![conn.clone()], AwsLcProvider::new().shared());
    let mut sa = Some(Ikev1Sa::initiate_aggressive(&ctx, conn, our, peer, Instant::now()).unwrap());
    let events = drive(&sock, peer, &mut sa, &ctx, Duration::from_secs(15), |_, ev| {
        installed(ev)
    });
    let sa = sa.unwrap();
    assert_eq!(sa.state_name(), "AM_DONE", "{events:?}\n{}", swan.log_tail(40));
    swan.wait_for_log("IKE_SA v1[1] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    assert!(installed(&events), "{events:?}\n{}", swan.log_tail(40));
}

/// charon and the daemon, each with one `version = 1` PSK connection to
/// the other, in Aggressive Mode when `aggressive`.
fn daemon_and_charon(aggressive: bool) -> (Charon, support::Ironsa) {
    let (port, nat) = free_udp_port_pair().unwrap();
    let (ours, our_nat) = free_udp_port_pair().unwrap();
    let swan = Charon::builder(if aggressive { "ikev1-daemon-am" } else { "ikev1-daemon" })
        .ports(port, nat)
        .setting(
            "i_dont_care_about_security_and_use_aggressive_mode_psk",
            if aggressive { "yes" } else { "no" },
        )
        .connection(
            Connection::new("v1", "127.0.0.1", "127.0.0.1")
                .version(IkeVersion::V1)
                .aggressive(aggressive)
                .remote_port(ours)
                .proposals(&["aes256-sha256-modp2048"])
                .local(AuthRound::psk("swan@test"))
                .remote(AuthRound::psk("ironsa@test")),
        )
        .secret(Secret::psk("s", &["swan@test", "ironsa@test"], PSK))
        .start()
        .unwrap();
    let config = daemon_config(
        (ours, our_nat),
        (port, nat),
        &format!(
            r#"aggressive = {aggressive}
ike_proposals = "aes256-sha256-modp2048"
local_id = "ironsa@test"
remote_id = "swan@test"
auth = "psk"
psk = "{PSK}"
"#
        ),
    );
    (swan, support::Ironsa::start(&config, None))
}

/// A daemon configuration on the ports `ours` with one `version = 1`
/// connection "swan" to charon on `theirs`, completed by `connection`.
fn daemon_config(ours: (u16, u16), theirs: (u16, u16), connection: &str) -> String {
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {}
nat_port = {}
shards = 2
control_socket = "SOCKET"

[[connection]]
name = "swan"
version = 1
remote_addrs = ["127.0.0.1"]
remote_port = {}
remote_nat_port = {}
{connection}"#,
        ours.0, ours.1, theirs.0, theirs.1
    )
}

/// The daemon answers Main Mode for a `version = 1` connection on its
/// shards' sockets (charon initiates), and initiates it.
#[test]
fn daemon_speaks_main_mode_for_a_version_1_connection() {
    if skip() {
        return;
    }
    let (swan, ironsa) = daemon_and_charon(false);
    swan.swanctl()
        .initiate(Target::Ike("v1"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    swan.wait_for_log("IKE_SA v1[1] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    // `ironsa sas` lists it with its IKEv1 state.
    let sa = established_sa(&ironsa);
    assert_eq!(sa["version"], 1, "{sa}");
    assert_eq!(sa["phase1_state"], "MM_DONE", "{sa}");
    assert_eq!(sa["role"], "responder", "{sa}");
    assert_eq!(sa["algorithms"], "aes256-sha256-modp2048", "{sa}");
    assert_eq!(sa["peer_id"], "swan@test", "{sa}");
    // terminate deletes it with an INFORMATIONAL DELETE charon verifies
    // (initiate refuses a connection that is up).
    terminate_and_check(&swan, &ironsa, 1);
    // And the daemon initiates Main Mode for it.
    let reply = ironsa.call(serde_json::json!({"cmd": "initiate", "connection": "swan"}));
    assert!(reply.to_string().contains("initiating swan"), "{reply}");
    swan.wait_for_log("IKE_SA v1[2] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    terminate_and_check(&swan, &ironsa, 2);
}

/// The daemon's first established SA, once there is one.
fn established_sa(ironsa: &support::Ironsa) -> serde_json::Value {
    let sas = ironsa.wait_sas(Duration::from_secs(5), |s| {
        s.iter().any(|sa| sa["state"] == "ESTABLISHED")
    });
    let sa = sas.iter().find(|sa| sa["state"] == "ESTABLISHED");
    sa.cloned().unwrap_or_else(|| panic!("no established SA: {sas:?}"))
}

/// `terminate` of the connection; charon logs the DELETE of its IKE_SA v1[`n`].
fn terminate_and_check(swan: &Charon, ironsa: &support::Ironsa, n: u32) {
    ironsa.call(serde_json::json!({"cmd": "terminate", "connection": "swan"}));
    ironsa.wait_sas(Duration::from_secs(5), |s| s.is_empty());
    swan.wait_for_log(&format!("received DELETE for IKE_SA v1[{n}]"), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
}

/// Moves datagrams between an endpoint and the socket until `done` or the
/// deadline; returns the events seen.
fn drive_endpoint(
    sock: &UdpSocket,
    peer: SocketAddr,
    ep: &mut Ikev1Endpoint,
    limit: Duration,
    done: impl Fn(&Ikev1Endpoint, &[Event]) -> bool,
) -> Vec<Event> {
    let local = sock.local_addr().unwrap();
    let end = Instant::now() + limit;
    let mut events = Vec::new();
    let mut buf = [0u8; 65536];
    sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    while Instant::now() < end {
        while let Some(t) = ep.poll_transmit() {
            let mut out = MARKER.to_vec();
            out.extend_from_slice(&t.data);
            sock.send_to(&out, peer).unwrap();
        }
        events.extend(std::iter::from_fn(|| ep.poll_event()));
        if done(ep, &events) {
            return events;
        }
        if ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            ep.handle_timeout(Instant::now());
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && from == peer
            && n >= 4
            && buf[..4] == MARKER
        {
            // charon's DELETE of an SA we already retired is refused here; that is fine.
            let _ = ep.handle(Instant::now(), local, peer, &buf[4..n]);
        }
    }
    events
}

fn ike_ups(events: &[Event]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaUp { spis, .. } => Some(*spis),
            _ => None,
        })
        .collect()
}

#[test]
fn phase1_reauthentication_with_charon_as_responder() {
    if skip() {
        return;
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let our = sock.local_addr().unwrap();
    let (port, nat) = free_udp_port_pair().unwrap();
    let swan = charon(port, nat, our.port());
    let peer: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut conn = our_conn(peer);
    // IKE only (charon's kernel here cannot hold the ESP SAs); soft lifetime 4 s.
    conn.children.clear();
    conn.ike_lifetime = Lifetime {
        rekey: Duration::from_secs(4),
        jitter: Duration::ZERO,
        over: Duration::from_secs(60),
    };
    let conn = Arc::new(conn);
    let ctx = Context::new(vec![conn.clone()], AwsLcProvider::new().shared());
    let mut ep = Ikev1Endpoint::new(ctx, Ikev1Policy::main_mode_only());
    ep.initiate(Instant::now(), conn, our, peer, false).unwrap();
    let events = drive_endpoint(&sock, peer, &mut ep, Duration::from_secs(15), |ep, ev| {
        ike_ups(ev).len() == 2 && ep.sas().count() == 1
    });
    let ups = ike_ups(&events);
    assert_eq!(ups.len(), 2, "{events:?}\n{}", swan.log_tail(40));
    let sa = ep.sas().next().unwrap();
    assert!(sa.is_reauth() && sa.cookies() == ups[1], "{sa:?}");
    assert_eq!(sa.state(), MainModeState::Done);
    // charon established the second ISAKMP SA (no INITIAL_CONTACT, so it
    // kept the first until our DELETE, which it verified).
    swan.wait_for_log("IKE_SA v1[2] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    swan.wait_for_log("received DELETE for IKE_SA v1[1]", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    assert!(
        events.iter().all(|e| !matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::Failed(_) | DownReason::Timeout,
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn phase1_reauthentication_by_charon_replaces_our_responder_sa() {
    if skip() {
        return;
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let our = sock.local_addr().unwrap();
    let (port, nat) = free_udp_port_pair().unwrap();
    let swan = charon_reauthenticating(port, nat, our.port(), false, Some("5s"));
    let peer: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ctx = Context::new(vec![Arc::new(our_conn(peer))], AwsLcProvider::new().shared());
    let mut ep = Ikev1Endpoint::new(ctx, Ikev1Policy::main_mode_only());
    let swanctl = swan.swanctl().clone();
    let initiator = std::thread::spawn(move || swanctl.initiate(Target::Ike("v1"), Duration::from_secs(10)));
    let first_gone = |ev: &[Event]| {
        let ups = ike_ups(ev);
        ups.len() >= 2
            && ev
                .iter()
                .any(|e| matches!(e, Event::IkeSaDown { spis, reason: DownReason::Deleted } if *spis == ups[0]))
    };
    let events = drive_endpoint(&sock, peer, &mut ep, Duration::from_secs(20), |_, ev| first_gone(ev));
    initiator
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    assert!(first_gone(&events), "{events:?}\n{}", swan.log_tail(60));
    let ups = ike_ups(&events);
    swan.wait_for_log("IKE_SA v1[2] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    let sa = ep
        .sas()
        .find(|sa| sa.state() == MainModeState::Done)
        .expect("the new ISAKMP SA");
    assert_eq!(sa.cookies(), ups[1]);
    assert_eq!(ep.sas().count(), 1, "only the new ISAKMP SA is left");
}

/// `aggressive = true` on a daemon connection: the daemon initiates
/// Aggressive Mode and answers charon's.
#[test]
fn daemon_speaks_aggressive_mode_when_the_connection_enables_it() {
    if skip() {
        return;
    }
    let (swan, ironsa) = daemon_and_charon(true);
    // charon initiates Aggressive Mode: the daemon answers it.
    swan.swanctl()
        .initiate(Target::Ike("v1"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    swan.wait_for_log("IKE_SA v1[1] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    ironsa.wait_sas(Duration::from_secs(5), |s| {
        s.iter()
            .any(|sa| sa["phase1_state"] == "AM_DONE" && sa["role"] == "responder")
    });
    terminate_and_check(&swan, &ironsa, 1);
    // The daemon initiates Aggressive Mode for it.
    let reply = ironsa.call(serde_json::json!({"cmd": "initiate", "connection": "swan"}));
    assert!(reply.to_string().contains("initiating swan"), "{reply}");
    swan.wait_for_log("IKE_SA v1[2] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    assert!(
        swan.log_contains("parsed AGGRESSIVE request 0 [ SA KE No ID V V ]"),
        "{}",
        swan.log_tail(40)
    );
    ironsa.wait_sas(Duration::from_secs(5), |s| {
        s.iter()
            .any(|sa| sa["phase1_state"] == "AM_DONE" && sa["role"] == "initiator")
    });
}

/// The daemon in `ns.a` behind the NAT with one IKEv1 connection to
/// charon (kernel-libipsec) in `ns.b`; `extra_conn`/`extra_child` are
/// added to the daemon's connection and child.
fn natted_ikev1(ns: &support::NattedPair, extra_conn: &str, extra_child: &str) -> (Charon, support::Ironsa) {
    natted_ikev1_mode(ns, extra_conn, extra_child, false)
}

/// [`natted_ikev1`], in Aggressive Mode when `aggressive`.
fn natted_ikev1_mode(
    ns: &support::NattedPair,
    extra_conn: &str,
    extra_child: &str,
    aggressive: bool,
) -> (Charon, support::Ironsa) {
    use support::KernelBackend;
    use support::netns::{OUTER_A, OUTER_B, PRIVATE_A, SUBNET_A, SUBNET_B};
    let swan = Charon::builder("ikev1-natt")
        .ports(500, 4500)
        .setting(
            "i_dont_care_about_security_and_use_aggressive_mode_psk",
            if aggressive { "yes" } else { "no" },
        )
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .connection(
            // The router's outer address is all charon sees of the daemon.
            Connection::new("v1", OUTER_B, OUTER_A)
                .version(IkeVersion::V1)
                .aggressive(aggressive)
                .proposals(&["aes256-sha256-modp2048"])
                .local(AuthRound::psk("swan@test"))
                .remote(AuthRound::psk("ironsa@test"))
                .child(
                    Child::new("net", SUBNET_B, SUBNET_A)
                        .mode("tunnel")
                        .esp_proposals(&["aes256gcm16"]),
                ),
        )
        .secret(Secret::psk("s", &["swan@test", "ironsa@test"], PSK))
        .start()
        .unwrap();
    let config = format!(
        r#"
[daemon]
listen = ["{PRIVATE_A}"]
shards = 1
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[[connection]]
name = "swan"
version = 1
remote_addrs = ["{OUTER_B}"]
ike_proposals = "aes256-sha256-modp2048"
local_id = "ironsa@test"
remote_id = "swan@test"
auth = "psk"
psk = "{PSK}"
aggressive = {aggressive}
{extra_conn}

[[connection.child]]
name = "net"
local_ts = ["{SUBNET_A}"]
remote_ts = ["{SUBNET_B}"]
esp_proposals = "aes256gcm16"
{extra_child}
"#
    );
    let ironsa = support::Ironsa::start(&config, Some(ns.a.name()));
    ironsa.call(serde_json::json!({"cmd": "initiate", "connection": "swan"}));
    swan.swanctl()
        .wait_for_sas(Duration::from_secs(10), |s| {
            s.len() == 1 && s[0].installed_children().len() == 1
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(60)));
    (swan, ironsa)
}

fn nat_test_needs() -> bool {
    support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping"), Need::Tool("nft")])
}

/// Our established ESP SA pairs' inbound SPIs.
fn our_child_spis(ironsa: &support::Ironsa) -> Vec<String> {
    ironsa
        .sas()
        .iter()
        .flat_map(|sa| sa["children"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["state"] == "QM_DONE")
        .filter_map(|c| c["spi_in"].as_str().map(str::to_string))
        .collect()
}

/// NAT traversal with ESP: the daemon behind a masquerading nftables
/// router initiates IKEv1 to charon, whose user-space ESP
/// (kernel-libipsec) carries the traffic; both ends see the NAT in Main
/// Mode, move to UDP 4500 and encapsulate ESP (RFC 3948). Pings go both
/// ways through the tunnel and the NAT.
#[test]
fn nat_traversal_through_an_nftables_nat_carries_esp_with_charon() {
    use support::netns::{INNER_A, INNER_B, OUTER_A};
    if nat_test_needs() {
        return;
    }
    let ns = support::NattedPair::new().unwrap();
    let (swan, ironsa) = natted_ikev1(&ns, "", "");
    // charon saw the NAT in front of us and answered on 4500.
    assert!(swan.log_contains("remote host is behind NAT"), "{}", swan.log_tail(60));
    assert!(swan.log_contains(&format!("{OUTER_A}[4500]")), "{}", swan.log_tail(60));
    let sas = ironsa.wait_sas(Duration::from_secs(10), |s| {
        s.iter()
            .any(|sa| sa["children"].as_array().is_some_and(|c| !c.is_empty()))
    });
    assert_eq!(sas[0]["phase1_state"], "MM_DONE", "{sas:?}");
    let (sent, got) = support::traffic::ping(&ns.a, INNER_A, INNER_B, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping A -> B through the NAT and the tunnel");
    let (sent, got) = support::traffic::ping(&ns.b, INNER_B, INNER_A, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping B -> A");
    let list = ironsa.sas();
    let c = &list[0]["children"][0]["counters"];
    assert!(c["packets_in"].as_u64().unwrap_or(0) >= 10, "{c}");
}

/// Rekeys against charon with real ESP, through the NAT: charon rekeys
/// the Quick Mode SA, then our lifetime rekeys it, then our Phase 1
/// lifetime reauthenticates (charon adopts the ESP SAs); traffic passes
/// after each.
#[test]
fn quick_mode_rekeys_and_reauthentication_keep_traffic_with_charon() {
    use support::netns::{INNER_A, INNER_B};
    if nat_test_needs() {
        return;
    }
    let ns = support::NattedPair::new().unwrap();
    let (swan, ironsa) = natted_ikev1(&ns, "ike_rekey = \"20s\"", "rekey = \"8s\"");
    let ping = |what: &str| {
        let (sent, got) = support::traffic::ping(&ns.a, INNER_A, INNER_B, 3, "0.1");
        assert_eq!((sent, got), (3, 3), "ping {what}\n{}", swan.log_tail(60));
    };
    support::traffic::wait_for_path(&ns.a, INNER_A, INNER_B, Duration::from_secs(10));
    ping("after setup");
    let first = our_child_spis(&ironsa);
    assert_eq!(first.len(), 1, "{first:?}");
    // charon's rekey: we answer it and keep the old pair until charon drops it.
    swan.swanctl()
        .rekey(Target::Child("net"))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    ironsa.wait_sas(Duration::from_secs(5), |s| {
        s.iter()
            .flat_map(|sa| sa["children"].as_array().cloned().unwrap_or_default())
            .count()
            == 2
    });
    let seen = our_child_spis(&ironsa);
    ping("after charon's Quick Mode rekey");
    // Our lifetime (8 s) rekeys charon's pair and deletes the one it replaces.
    let started = Instant::now();
    let ours = loop {
        let spis = our_child_spis(&ironsa);
        if spis.iter().any(|s| !seen.contains(s)) {
            break spis;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no rekey of ours: {spis:?}\n{}",
            swan.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    swan.wait_for_log("received DELETE for ESP CHILD_SA", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(60)));
    // The new pair shows up a moment before the DELETE of the pair it
    // replaces is done: what counts is that the first pair goes.
    let started = Instant::now();
    loop {
        let now = our_child_spis(&ironsa);
        if !now.contains(&first[0]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first pair {} outlived our rekey ({ours:?}, now {now:?})\n{}",
            first[0],
            swan.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ping("after our Quick Mode rekey");
    // Phase 1 reauthentication at 18-20 s: a second ISAKMP SA, the ESP SAs carried over.
    swan.wait_for_log("IKE_SA v1[2] established", Duration::from_secs(25))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(60)));
    swan.wait_for_log("received DELETE for IKE_SA v1[1]", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(60)));
    let sas = ironsa.wait_sas(Duration::from_secs(5), |s| s.len() == 1);
    assert!(
        sas[0]["children"].as_array().is_some_and(|c| !c.is_empty()),
        "the ESP SAs moved to the new ISAKMP SA: {sas:?}"
    );
    ping("after the Phase 1 reauthentication");
}

/// Aggressive Mode through the NAT: message 3 already moves to 4500.
#[test]
fn aggressive_mode_nat_traversal_carries_esp_with_charon() {
    use support::netns::{INNER_A, INNER_B, OUTER_A};
    if nat_test_needs() {
        return;
    }
    let ns = support::NattedPair::new().unwrap();
    let (swan, ironsa) = natted_ikev1_mode(&ns, "", "", true);
    assert!(swan.log_contains("remote host is behind NAT"), "{}", swan.log_tail(60));
    assert!(swan.log_contains(&format!("{OUTER_A}[4500]")), "{}", swan.log_tail(60));
    let sas = ironsa.wait_sas(Duration::from_secs(10), |s| {
        s.iter()
            .any(|sa| sa["children"].as_array().is_some_and(|c| !c.is_empty()))
    });
    assert_eq!(sas[0]["phase1_state"], "AM_DONE", "{sas:?}");
    let (sent, got) = support::traffic::ping(&ns.a, INNER_A, INNER_B, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping A -> B through the NAT and the tunnel");
}

/// charon and the daemon authenticating Main Mode with certificates of
/// `key_type` from one `pki` root: charon as `sun.ironsa.test` (FQDN),
/// the daemon as the DN of its certificate.
fn certificate_peers(
    name: &str,
    key_type: support::KeyType,
    ike: &str,
) -> (Charon, support::Ironsa, support::Pki, String) {
    use support::{Pki, San};
    let (port, nat) = free_udp_port_pair().unwrap();
    let (ours, our_nat) = free_udp_port_pair().unwrap();
    let pki = Pki::new().unwrap();
    let root = pki.root_ca("root", key_type).unwrap();
    let moon = pki
        .end_entity(&root, "moon", key_type, &[San::Dns("moon.ironsa.test".into())])
        .unwrap();
    let sun = pki
        .end_entity(&root, "sun", key_type, &[San::Dns("sun.ironsa.test".into())])
        .unwrap();
    let swan = Charon::builder(name)
        .ports(port, nat)
        .identity(&sun)
        .ca(&root)
        .connection(
            Connection::new("v1", "127.0.0.1", "127.0.0.1")
                .version(IkeVersion::V1)
                .remote_port(ours)
                .proposals(&[ike])
                .local(AuthRound::pubkey("sun.ironsa.test").cert("sun.crt"))
                .remote(AuthRound::pubkey(&moon.dn).cacert("root.crt")),
        )
        .start()
        .unwrap();
    let config = daemon_config(
        (ours, our_nat),
        (port, nat),
        &format!(
            r#"ike_proposals = "{ike}"
local_id = "{dn}"
remote_id = "sun.ironsa.test"
auth = "pubkey"
cert = "{cert}"
key = "{key}"
cacerts = ["{ca}"]
"#,
            dn = moon.dn,
            cert = moon.cert_pem.display(),
            key = moon.key_pem.display(),
            ca = root.cert_pem.display(),
        ),
    );
    let ironsa = support::Ironsa::start(&config, None);
    (swan, ironsa, pki, moon.dn)
}

/// Main Mode with certificates in both roles against charon: charon
/// initiates, then the daemon does; each checks the other's SIG (RSA
/// PKCS#1 without DigestInfo, or ECDSA r||s over the hash) and chain.
fn main_mode_with_certificates(name: &str, key_type: support::KeyType, ike: &str, algorithms: &str, scheme: &str) {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("pki")]) {
        return;
    }
    let (swan, ironsa, _pki, our_dn) = certificate_peers(name, key_type, ike);
    swan.swanctl()
        .initiate(Target::Ike("v1"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", swan.log_tail(40), ironsa.log()));
    swan.wait_for_log("IKE_SA v1[1] established", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", swan.log_tail(40)));
    assert!(
        swan.log_contains(&format!("authentication of '{our_dn}' with {scheme} successful")),
        "{}",
        swan.log_tail(40)
    );
    let sa = established_sa(&ironsa);
    assert_eq!(sa["version"], 1, "{sa}");
    assert_eq!(sa["phase1_state"], "MM_DONE", "{sa}");
    assert_eq!(sa["role"], "responder", "{sa}");
    assert_eq!(sa["algorithms"], algorithms, "{sa}");
    assert_eq!(sa["peer_id"], "sun.ironsa.test", "{sa}");
    terminate_and_check(&swan, &ironsa, 1);
    let reply = ironsa.call(serde_json::json!({"cmd": "initiate", "connection": "swan"}));
    assert!(reply.to_string().contains("initiating swan"), "{reply}");
    swan.wait_for_log("IKE_SA v1[2] established", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", swan.log_tail(40), ironsa.log()));
    let sa = established_sa(&ironsa);
    assert_eq!(sa["role"], "initiator", "{sa}");
    assert_eq!(sa["peer_id"], "sun.ironsa.test", "{sa}");
    terminate_and_check(&swan, &ironsa, 2);
}

#[test]
fn main_mode_rsa_certificates_in_both_roles_with_charon() {
    main_mode_with_certificates(
        "ikev1-rsa",
        support::KeyType::Rsa(2048),
        "aes256-sha256-modp2048",
        "aes256-sha256-modp2048",
        "RSA_EMSA_PKCS1_NULL",
    );
}

#[test]
fn main_mode_ecdsa_certificates_in_both_roles_with_charon() {
    main_mode_with_certificates(
        "ikev1-ecdsa",
        support::KeyType::EcdsaP256,
        "aes256-sha256-ecp256",
        "aes256-sha256-ecp256",
        "ECDSA_WITH_NULL",
    );
}

/// The "Cisco IPsec" profile against charon road warriors (kernel-libipsec
/// in a namespace): Main Mode PSK + XAUTH against the daemon's local
/// users, then Mode Config hands out an address and the DNS server of
/// the daemon's `[[pool]]`, and the client pings from its virtual IP
/// through the tunnel. A wrong password and an unknown user are refused,
/// each with a log line naming the user.
#[test]
fn xauth_and_mode_config_give_charon_a_virtual_ip_it_pings_from() {
    use std::os::unix::fs::PermissionsExt;
    use support::netns::{INNER_A, OUTER_A, OUTER_B, SUBNET_A};
    use support::{KernelBackend, NetnsPair};
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping")]) {
        return;
    }
    const POOL: &str = "10.9.0.10-10.9.0.11";
    const DNS: &str = "10.1.0.53";
    let ns = NetnsPair::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        "[[user]]\nname = \"alice\"\npassword = \"alice-secret-1\"\n[[user]]\nname = \"bob\"\npassword = \"bob-real-password\"\n\
         [[user]]\nname = \"carol\"\npassword = \"carol-secret-3\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        r#"
[daemon]
listen = ["{OUTER_A}"]
shards = 2
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[eap]
users_file = "{users}"

[[pool]]
name = "rw"
addrs = ["{POOL}"]
dns = ["{DNS}"]

[[connection]]
name = "rw"
version = 1
local_id = "gw@test"
remote_id = "*@test"
psk = "{PSK}"
remote_auth2 = "xauth"
ike_proposals = "aes256-sha256-modp2048"
pools = ["rw"]

[[connection.child]]
name = "net"
local_ts = ["{SUBNET_A}"]
remote_ts = "dynamic"
esp_proposals = "aes256-sha256"

[[connection]]
name = "rw-push"
version = 1
local_id = "gw@test"
remote_id = "*@test"
psk = "{PSK}"
remote_auth2 = "xauth"
mode_config = "push"
ike_proposals = "aes128-sha256-modp2048"
pools = ["rw"]

[[connection.child]]
name = "net"
local_ts = ["{SUBNET_A}"]
remote_ts = "dynamic"
esp_proposals = "aes256-sha256"
"#,
        users = users.display()
    );
    let ironsa = support::Ironsa::start(&config, Some(ns.a.name()));
    let client = |name: &str, user: &str| {
        Connection::new(name, OUTER_B, OUTER_A)
            .version(IkeVersion::V1)
            .proposals(&[if name == "carol" {
                "aes128-sha256-modp2048"
            } else {
                "aes256-sha256-modp2048"
            }])
            .set("vips", "0.0.0.0")
            .local(AuthRound::psk(&format!("{name}@test")))
            .local2(AuthRound::default().set("auth", "xauth").set("xauth_id", user))
            .remote(AuthRound::psk("gw@test"))
            .child(Child::new(name, "dynamic", SUBNET_A).esp_proposals(&["aes256-sha256"]))
    };
    let charon = Charon::builder("xauth")
        .plugin("xauth-generic")
        .setting("install_virtual_ip", "yes")
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .connection(client("alice", "alice"))
        .connection(client("bob", "bob"))
        .connection(client("mallory", "mallory"))
        .connection(client("carol", "carol").set("pull", "no"))
        .secret(Secret::psk(
            "rw",
            &["alice@test", "bob@test", "mallory@test", "carol@test", "gw@test"],
            PSK,
        ))
        .secret(Secret::xauth("carol", "carol", "carol-secret-3"))
        .secret(Secret::xauth("alice", "alice", "alice-secret-1"))
        .secret(Secret::xauth("bob", "bob", "not-bobs-password"))
        .secret(Secret::xauth("mallory", "mallory", "whatever-password"))
        .start()
        .unwrap();

    // Connects charon's `name` and returns the virtual IP it got.
    let connect = |name: &str| {
        charon
            .swanctl()
            .initiate(Target::Child(name), Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{e}\n{}\n{}", charon.log_tail(60), ironsa.log()));
        let sas = charon.swanctl().list_sas().unwrap();
        sas.iter()
            .find(|s| s.name == name && s.state == "ESTABLISHED")
            .and_then(|s| s.local_vips.first().cloned())
            .unwrap_or_else(|| panic!("{name}: no virtual IP: {sas:?}\n{}", charon.log_tail(40)))
    };
    let vip = connect("alice");
    assert_eq!(vip, "10.9.0.10");
    assert!(
        charon.log_contains("XAuth authentication of 'alice' (myself) successful"),
        "{}",
        charon.log_tail(40)
    );
    assert!(charon.log_contains("INTERNAL_IP4_DNS"), "{}", charon.log_tail(40));
    let sa = established_sa(&ironsa);
    assert_eq!(sa["version"], 1, "{sa}");
    assert_eq!(sa["phase1_state"], "MM_DONE", "{sa}");
    assert_eq!(sa["xauth_state"], "XAUTH_DONE", "{sa}");
    assert_eq!(sa["xauth_user"], "alice", "{sa}");
    assert_eq!(sa["remote_vips"], serde_json::json!([vip]), "{sa}");
    assert_eq!(sa["children"][0]["state"], "QM_DONE", "{sa}");
    assert_eq!(
        sa["children"][0]["remote_ts"],
        serde_json::json!([format!("{vip}/32")]),
        "{sa}"
    );
    let (sent, got) = support::traffic::ping(&ns.b, &vip, INNER_A, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping from the virtual IP through the tunnel");

    // A wrong password and an unknown user: refused, with the reason in the log.
    for (name, why) in [("bob", "wrong password"), ("mallory", "unknown user")] {
        let refused = charon.swanctl().initiate(Target::Child(name), Duration::from_secs(15));
        assert!(refused.is_err(), "{name} refused: {refused:?}");
        let line = format!("IKEv1 XAUTH refused user '{name}': {why}");
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !ironsa.log().contains(&line) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = ironsa.log();
        assert!(log.contains(&line), "{line}:\n{log}");
    }
    let sas = ironsa.wait_sas(Duration::from_secs(10), |s| s.len() == 1);
    assert_eq!(sas[0]["xauth_user"], "alice", "{sas:?}");

    // A gateway connection that pushes Mode Config (charon with pull = no).
    assert_eq!(connect("carol"), "10.9.0.11");
    assert!(
        charon.log_contains("CPS(ADDR"),
        "a SET carried the address:\n{}",
        charon.log_tail(40)
    );
    let (sent, got) = support::traffic::ping(&ns.b, "10.9.0.11", INNER_A, 3, "0.1");
    assert_eq!((sent, got), (3, 3), "ping from the pushed virtual IP");
}

/// The daemon as an XAUTH client of a charon gateway (`remote-2 { auth =
/// xauth }`): Main Mode PSK, XAUTH with `xauth_user`/`xauth_password`,
/// then Quick Mode; a wrong password is refused by charon and the daemon
/// logs why.
#[test]
fn daemon_passes_xauth_of_a_charon_gateway() {
    if skip() {
        return;
    }
    let (port, nat) = free_udp_port_pair().unwrap();
    let (ours, our_nat) = free_udp_port_pair().unwrap();
    let swan = Charon::builder("ikev1-xauth-gw")
        .ports(port, nat)
        .plugin("xauth-generic")
        .connection(
            Connection::new("gw", "127.0.0.1", "127.0.0.1")
                .version(IkeVersion::V1)
                .remote_port(ours)
                .proposals(&["aes256-sha256-modp2048"])
                .local(AuthRound::psk("swan@test"))
                .remote(AuthRound::psk("ironsa@test"))
                .remote2(AuthRound::default().set("auth", "xauth"))
                .child(Child::new("net", "10.2.0.0/24", "10.1.0.0/24").esp_proposals(&["aes256-sha256"])),
        )
        .secret(Secret::psk("s", &["swan@test", "ironsa@test"], PSK))
        .secret(Secret::xauth("alice", "alice", "alice-secret-1"))
        .start()
        .unwrap();
    let daemon = |password: &str| {
        daemon_config(
            (ours, our_nat),
            (port, nat),
            &format!(
                r#"ike_proposals = "aes256-sha256-modp2048"
local_id = "ironsa@test"
remote_id = "swan@test"
auth = "psk"
psk = "{PSK}"
xauth_user = "alice"
xauth_password = "{password}"

[[connection.child]]
name = "net"
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = "aes256-sha256"
"#
            ),
        )
    };
    let ironsa = support::Ironsa::start(&daemon("alice-secret-1"), None);
    let reply = ironsa.call(serde_json::json!({"cmd": "initiate", "connection": "swan"}));
    assert!(reply.to_string().contains("initiating swan"), "{reply}");
    swan.wait_for_log("XAuth authentication of 'alice' successful", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", swan.log_tail(40), ironsa.log()));
    // Quick Mode after XAUTH: charon answered it (it cannot install ESP in
    // this kernel, which is why the child does not stay).
    swan.wait_for_log("generating QUICK_MODE response", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", swan.log_tail(40), ironsa.log()));
    drop(ironsa);

    let ironsa = support::Ironsa::start(&daemon("not-alices-password"), None);
    ironsa.call(serde_json::json!({"cmd": "initiate", "connection": "swan"}));
    let line = "IKEv1 XAUTH: the gateway refused user alice";
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !ironsa.log().contains(line) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ironsa.log().contains(line), "{}\n{}", ironsa.log(), swan.log_tail(40));
}

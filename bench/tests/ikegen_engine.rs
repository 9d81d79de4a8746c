//! ikegen as a library against in-process ironsa responders: a minimal UDP
//! loop around `control::endpoint::Endpoint` written here (independent of the
//! generator's own self-test responder), with and without COOKIE demands,
//! plus hold/rekey/teardown, floods, failure reasons and the JSON report.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::config::{ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
use control::endpoint::{AdmissionConfig, Endpoint, EndpointStats};
use control::ike_sa::{Context, Event};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use ironsa_bench::ikegen::options::{Mode, Settings};
use ironsa_bench::ikegen::report::Report;
use ironsa_bench::ikegen::run;

const PSK: &str = "ikegen-test-psk-0123456789";

#[derive(Default)]
struct Counts {
    established: AtomicU64,
    children: AtomicU64,
    deleted: AtomicU64,
    rekeyed: AtomicU64,
}

struct TestResponder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    thread: JoinHandle<EndpointStats>,
}

fn responder_conn(ike: &str, children: bool) -> ConnectionConfig {
    let mut c = ConnectionConfig::new("resp", parse_identity("gw@test"), IdentityMatch::Any, PSK.as_bytes());
    c.ike_proposals = parse_ike_proposals(ike).unwrap();
    if children {
        c.children.push(ChildConfig {
            name: "c".into(),
            esp_proposals: parse_esp_proposals("aes256gcm16").unwrap(),
            local_ts: vec![parse_selector("0.0.0.0/0").unwrap()],
            remote_ts: vec![parse_selector("0.0.0.0/0").unwrap()],
            mode: IpsecMode::Tunnel,
            lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
        });
    }
    c
}

/// A minimal std UDP loop around a responder Endpoint on 127.0.0.1:<free port>.
fn start_responder(conn: ConnectionConfig, admission: AdmissionConfig) -> TestResponder {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let (stop2, counts2) = (stop.clone(), counts.clone());
    let thread = std::thread::spawn(move || {
        let mut ep = Endpoint::new(
            Instant::now(),
            Context::new(vec![Arc::new(conn)], ironsa_crypto::AwsLcProvider::new().shared()),
            admission,
            0,
            0,
        );
        let mut buf = vec![0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((len, from)) = socket.recv_from(&mut buf) {
                let d = &buf[..len];
                let d = if d.len() >= 4 && d[..4] == [0; 4] { &d[4..] } else { d };
                ep.handle(Instant::now(), addr, from, d);
            }
            let now = Instant::now();
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
            while let Some(t) = ep.poll_transmit() {
                // strongSwan's rule: the non-ESP marker whenever the client's port is not 500.
                let mut out = Vec::with_capacity(t.data.len() + 4);
                if t.remote.port() != 500 {
                    out.extend_from_slice(&[0; 4]);
                }
                out.extend_from_slice(&t.data);
                let _ = socket.send_to(&out, t.remote);
            }
            while let Some((_, e)) = ep.poll_event() {
                let c = match e {
                    Event::IkeSaUp { .. } => &counts2.established,
                    Event::ChildSaInstalled(_) => &counts2.children,
                    Event::IkeSaDown {
                        reason: control::ike_sa::DownReason::Deleted,
                        ..
                    } => &counts2.deleted,
                    Event::IkeSaRekeyed { .. } => &counts2.rekeyed,
                    _ => continue,
                };
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        ep.stats().clone()
    });
    TestResponder {
        addr,
        stop,
        counts,
        thread,
    }
}

impl TestResponder {
    fn finish(self) -> (Arc<Counts>, EndpointStats) {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self.thread.join().unwrap();
        (self.counts, stats)
    }
}

fn settings(remote: SocketAddr, tunnels: u64) -> Settings {
    Settings {
        remote: Some(remote),
        source: Some(vec!["127.0.1.0/28".into()]),
        tunnels: Some(tunnels),
        concurrency: Some(64),
        psk: Some(PSK.into()),
        remote_id: Some("gw@test".into()),
        local_id: Some("user{n}@test".into()),
        local_ts: Some(vec!["10.128.{n/256}.{n%256}/32".into()]),
        retransmit_timeout: Some(0.5),
        timeout: Some(30.0),
        ..Settings::default()
    }
}

#[test]
fn establishes_200_tunnels_with_children() {
    let r = start_responder(
        responder_conn("aes256gcm16-prfsha256-x25519", true),
        AdmissionConfig::default(),
    );
    let cfg = settings(r.addr, 200).resolve().unwrap();
    let report = run(&cfg, None).unwrap();
    let (counts, stats) = r.finish();
    assert_eq!(report.attempted, 200, "{}", report.render_text());
    assert_eq!(report.established, 200, "{}", report.render_text());
    assert_eq!(counts.established.load(Ordering::Relaxed), 200);
    assert_eq!(stats.established, 200);
    assert_eq!(report.children_installed, 200);
    assert_eq!(counts.children.load(Ordering::Relaxed), 200);
    assert_eq!(report.failed, 0);
    assert_eq!(report.latency_ike_ms.count, 200);
    assert!(report.handshakes_per_sec > 0.0);
    assert!(report.cpu.user_secs + report.cpu.sys_secs > 0.0);
    assert!(!report.timeline.is_empty());
}

#[test]
fn cookie_demands_are_answered() {
    let adm = AdmissionConfig {
        cookie_threshold: 0,
        ..AdmissionConfig::default()
    };
    let r = start_responder(responder_conn("aes256gcm16-prfsha256-x25519", true), adm);
    let cfg = settings(r.addr, 100).resolve().unwrap();
    let report = run(&cfg, None).unwrap();
    let (counts, stats) = r.finish();
    assert_eq!(report.established, 100, "{}", report.render_text());
    assert_eq!(counts.established.load(Ordering::Relaxed), 100);
    assert!(report.cookies_received >= 100, "{}", report.cookies_received);
    assert!(stats.cookies_sent >= 100);
    assert_eq!(stats.cookies_valid, 100);
}

#[test]
fn json_report_parses_and_adds_up() {
    let r = start_responder(
        responder_conn("aes256gcm16-prfsha256-x25519", true),
        AdmissionConfig::default(),
    );
    let mut s = settings(r.addr, 60);
    s.threads = Some(2);
    s.rate = Some(400.0);
    s.hold = Some(1.0);
    s.dpd = Some(0.3);
    s.rekey_ike_rate = Some(20.0);
    s.rekey_child_rate = Some(20.0);
    s.teardown = Some(true);
    let report = run(&s.resolve().unwrap(), None).unwrap();
    let (counts, _) = r.finish();
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert!(back.is_consistent(), "{json}");
    assert_eq!(back.established + back.failed, back.attempted);
    assert_eq!(back.attempted, 60);
    assert_eq!(back.established, 60, "{json}");
    for p in [&back.latency_ike_ms, &back.latency_child_ms] {
        assert!(
            p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max,
            "{p:?}"
        );
        assert!(p.p50 > 0.0);
    }
    assert!(back.timeline.is_empty(), "timeline stays out of the JSON");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in [
        "attempted",
        "established",
        "failed",
        "failures",
        "children_installed",
        "handshakes_per_sec",
        "latency_ike_ms",
        "cookies_received",
        "retransmissions",
        "cpu",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let hold = back.hold.as_ref().unwrap();
    assert!(
        hold.rekeys_ike_done > 0 && hold.rekeys_ike_done <= hold.rekeys_ike_started,
        "{hold:?}"
    );
    assert!(
        hold.rekeys_child_done > 0 && hold.rekeys_child_done <= hold.rekeys_child_started,
        "{hold:?}"
    );
    assert!(hold.lost.is_empty(), "{hold:?}");
    assert_eq!(counts.rekeyed.load(Ordering::Relaxed), hold.rekeys_ike_done);
    let td = back.teardown.as_ref().unwrap();
    assert_eq!(td.requested, 60);
    assert_eq!(td.deleted, 60, "{td:?}");
    assert!(counts.deleted.load(Ordering::Relaxed) >= 60);
    // The text form mentions the same figures.
    let text = report.render_text();
    assert!(text.contains("established         60"), "{text}");
    assert!(text.contains("teardown: 60 of 60 deleted"), "{text}");
}

#[test]
fn failures_are_counted_by_reason() {
    // The responder only accepts AES-128: every negotiation gets NO_PROPOSAL_CHOSEN.
    let r = start_responder(
        responder_conn("aes128gcm16-prfsha256-x25519", true),
        AdmissionConfig::default(),
    );
    let report = run(&settings(r.addr, 20).resolve().unwrap(), None).unwrap();
    r.finish();
    assert_eq!(report.established, 0);
    assert_eq!(
        report.failures.get("NO_PROPOSAL_CHOSEN"),
        Some(&20),
        "{:?}",
        report.failures
    );
    assert!(report.is_consistent());

    // Wrong PSK: AUTHENTICATION_FAILED.
    let r = start_responder(
        responder_conn("aes256gcm16-prfsha256-x25519", true),
        AdmissionConfig::default(),
    );
    let mut s = settings(r.addr, 10);
    s.psk = Some("not-the-right-key".into());
    let report = run(&s.resolve().unwrap(), None).unwrap();
    r.finish();
    assert_eq!(
        report.failures.get("AUTHENTICATION_FAILED"),
        Some(&10),
        "{:?}",
        report.failures
    );

    // Nobody listening: retransmissions, then TIMEOUT.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut s = settings(silent.local_addr().unwrap(), 5);
    s.retransmit_timeout = Some(0.05);
    s.retransmit_tries = Some(2);
    let report = run(&s.resolve().unwrap(), None).unwrap();
    assert_eq!(report.failures.get("TIMEOUT"), Some(&5), "{:?}", report.failures);
    assert_eq!(report.retransmissions, 10);
    assert!(report.is_consistent());
}

#[test]
fn childless_ike_sas() {
    let r = start_responder(
        responder_conn("aes256gcm16-prfsha256-x25519", true),
        AdmissionConfig::default(),
    );
    let mut s = settings(r.addr, 50);
    s.childless = Some(true);
    let report = run(&s.resolve().unwrap(), None).unwrap();
    let (counts, _) = r.finish();
    assert_eq!(report.established, 50);
    assert_eq!(report.children_installed, 0);
    assert_eq!(counts.children.load(Ordering::Relaxed), 0);
}

#[test]
fn flood_and_mixed_modes() {
    // Flood: every request is answered with a cookie demand (threshold 0).
    let adm = AdmissionConfig {
        cookie_threshold: 0,
        ..AdmissionConfig::default()
    };
    let r = start_responder(responder_conn("aes256gcm16-prfsha256-x25519", true), adm);
    let mut s = settings(r.addr, 0);
    s.mode = Some(Mode::Flood);
    s.flood_rate = Some(2000.0);
    s.duration = Some(0.5);
    let report = run(&s.resolve().unwrap(), None).unwrap();
    let (_, stats) = r.finish();
    let f = report.flood.as_ref().unwrap();
    assert!(f.sent >= 500 && f.sent <= 1001, "{f:?}");
    assert!(f.cookies > 0, "{f:?}");
    assert_eq!(
        f.cookies + f.accepted + f.unanswered + f.rejected.values().sum::<u64>(),
        f.sent
    );
    assert!(stats.cookies_sent >= f.cookies);
    assert_eq!(report.attempted, 0);

    // Mixed: the flood creates half-open SAs; legitimate clients still get through.
    let r = start_responder(
        responder_conn("aes256gcm16-prfsha256-x25519", true),
        AdmissionConfig::default(),
    );
    let mut s = settings(r.addr, 100);
    s.mode = Some(Mode::Mixed);
    s.flood_source = Some(vec!["127.0.2.0/28".into()]);
    s.flood_rate = Some(1000.0);
    s.duration = Some(0.5);
    s.rate = Some(300.0);
    let report = run(&s.resolve().unwrap(), None).unwrap();
    let (counts, stats) = r.finish();
    let f = report.flood.as_ref().unwrap();
    assert!(f.accepted > 0, "{f:?}");
    assert_eq!(report.established, 100, "{}", report.render_text());
    assert!((report.success_rate - 1.0).abs() < 1e-9);
    assert_eq!(counts.established.load(Ordering::Relaxed), 100);
    assert!(stats.init_requests >= 100 + f.accepted);
}

/// EAP-MSCHAPv2 road warriors asking for virtual IPs, against the
/// generator's own responder (local users, a pool): every tunnel passes
/// EAP in four round trips (Identity, Challenge, Success, EAP-Success) and
/// gets its own address; the JSON report carries both sections.
#[test]
fn eap_mschapv2_clients_get_distinct_virtual_ips() {
    use ironsa_bench::ikegen::responder::Responder;
    let eap = |password: &str| Settings {
        eap_user: Some("user{n}".into()),
        eap_password: Some(password.into()),
        vip: Some(true),
        local_ts: None,
        ..settings("127.0.0.1:9".parse().unwrap(), 60)
    };
    let mut cfg = eap("eap-users-password-1").resolve().unwrap();
    let responder = Responder::for_generator(&cfg, "127.0.0.1:0".parse().unwrap(), 1).unwrap();
    cfg.remote = responder.addr();
    let report = run(&cfg, None).unwrap();
    let text = report.render_text();
    assert_eq!(report.established, 60, "{text}");
    assert_eq!(report.children_installed, 60, "{text}");
    assert!(report.is_consistent(), "{text}");
    let e = report.eap.as_ref().expect("EAP section");
    assert_eq!(e.round_trips, 4 * 60, "{text}");
    assert_eq!(e.latency_ms.count, 240);
    assert!(
        e.latency_ms.p50 > 0.0 && e.latency_ms.max <= report.latency_ike_ms.max,
        "{text}"
    );
    let a = report.addresses.as_ref().expect("address section");
    assert_eq!(
        (a.requested, a.assigned, a.unique, a.refused),
        (60, 60, 60, 0),
        "{text}"
    );
    assert!(
        text.contains("EAP round trips") && text.contains("virtual IPs: requested 60"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["eap"]["round_trips"], 240);
    assert_eq!(json["addresses"]["unique"], 60);

    // The same users with a wrong password: refused by the responder.
    let mut wrong = eap("not-the-users-password").resolve().unwrap();
    wrong.remote = responder.addr();
    wrong.tunnels = 5;
    let report = run(&wrong, None).unwrap();
    let stats = responder.stop().unwrap();
    assert_eq!(report.established, 0, "{}", report.render_text());
    assert_eq!(
        report.failures.get("AUTHENTICATION_FAILED"),
        Some(&5),
        "{}",
        report.render_text()
    );
    assert_eq!(report.addresses.as_ref().map(|a| a.assigned), Some(0));
    assert_eq!(stats.stats.established, 60);
}

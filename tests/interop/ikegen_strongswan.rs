//! ikegen (as a library) against a real strongSwan charon on loopback: N
//! childless IKE SAs (charon on this kernel cannot install CHILD_SAs with
//! kernel-netlink) from many 127.x source addresses, through charon's COOKIE
//! demands; `swanctl --list-sas` must show exactly the IKE SAs the generator
//! reports. Both non-ESP marker cases are covered: charon expects the marker
//! on IKE from any client port other than 500 and none from port 500.
//! Against strongSwan 6, hybrid IKE SAs (X25519 + ML-KEM-768 in
//! IKE_INTERMEDIATE), so that a post-quantum gateway can be load-tested.
//!
//! Needs root and Debian's strongswan-charon, strongswan-swanctl (and
//! strongSwan 6 for the hybrid test).

#[path = "../support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use ironsa_bench::ikegen::options::Settings;
use ironsa_bench::ikegen::run;
use support::Need;
use support::util::free_udp_port_pair;
use support::{AuthRound, Charon, Connection, Secret};

const PSK: &str = "a-long-random-test-secret-for-ikegen";

fn start_charon(name: &str) -> (Charon, u16) {
    start_charon_with(name, "aes256gcm16-prfsha256-x25519", None)
}

/// charon accepting `proposal`; strongSwan 6 when `strongswan6` names its prefix.
fn start_charon_with(name: &str, proposal: &str, strongswan6: Option<&std::path::Path>) -> (Charon, u16) {
    let (port, nat) = free_udp_port_pair().unwrap();
    let mut builder = Charon::builder(name);
    if let Some(prefix) = strongswan6 {
        builder = builder.strongswan6(prefix);
    }
    let charon = builder
        .ports(port, nat)
        // Room for all SAs in one burst; charon still demands cookies above its
        // cookie_threshold, which the generator must answer.
        .setting("block_threshold", "100")
        .setting("cookie_threshold", "10")
        .connection(
            Connection::new("gen", "127.0.0.1", "%any")
                .proposals(&[proposal])
                .local(AuthRound::psk("charon@ikegen.test"))
                .remote(AuthRound::psk("ikegen@ikegen.test")),
        )
        .secret(Secret::psk("gen", &["charon@ikegen.test", "ikegen@ikegen.test"], PSK))
        .start()
        .unwrap();
    (charon, port)
}

fn settings(port: u16, source: &str, tunnels: u64) -> Settings {
    let remote: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Settings {
        remote: Some(remote),
        source: Some(vec![source.into()]),
        tunnels: Some(tunnels),
        concurrency: Some(25),
        childless: Some(true),
        local_id: Some("ikegen@ikegen.test".into()),
        remote_id: Some("charon@ikegen.test".into()),
        psk: Some(PSK.into()),
        retransmit_timeout: Some(1.0),
        retransmit_tries: Some(3),
        timeout: Some(30.0),
        ..Settings::default()
    }
}

/// Runs the generator and checks its report against `swanctl --list-sas`.
fn establish_and_compare(charon: &Charon, port: u16, s: Settings, n: u64, source_prefix: &str) {
    let cfg = s.resolve().unwrap();
    assert!(!cfg.initial_contact, "a shared identity must not send INITIAL_CONTACT");
    let report = run(&cfg, None).unwrap();
    if report.established != n {
        charon.dump_log();
    }
    assert_eq!(report.attempted, n);
    assert_eq!(report.established, n, "{}", report.render_text());
    assert!(report.is_consistent());
    assert!(
        report.cookies_received > 0,
        "charon demands cookies above 10 half-open SAs"
    );
    let sas = charon
        .swanctl()
        .wait_for_sas(Duration::from_secs(5), |s| {
            s.iter().filter(|sa| sa.state == "ESTABLISHED").count() as u64 == n
        })
        .unwrap_or_else(|e| {
            charon.dump_log();
            panic!("{e}")
        });
    let established: Vec<_> = sas.iter().filter(|sa| sa.state == "ESTABLISHED").collect();
    assert_eq!(established.len() as u64, report.established);
    for sa in &established {
        assert!(!sa.initiator);
        assert_eq!(sa.remote_id, "ikegen@ikegen.test");
        assert_eq!(sa.local_port, port);
        assert!(sa.children.is_empty(), "childless IKE SAs");
        assert_eq!(sa.dh_group.as_deref(), Some("CURVE_25519"));
    }
    let sources: HashSet<_> = established.iter().map(|sa| sa.remote_host).collect();
    assert!(sources.len() > 1, "spread over several source addresses");
    assert!(sources.iter().all(|ip| ip.to_string().starts_with(source_prefix)));
}

#[test]
fn ikegen_establishes_50_childless_ike_sas_with_charon() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    // Ephemeral client ports: every datagram carries the non-ESP marker.
    let (charon, port) = start_charon("ikegen");
    establish_and_compare(&charon, port, settings(port, "127.0.1.0/26", 50), 50, "127.0.1.");
}

#[test]
fn ikegen_from_client_port_500_sends_no_marker() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    // Client port 500 on many addresses: charon wants no marker.
    let (charon, port) = start_charon("ikegen-500");
    let mut s = settings(port, "127.0.5.0/28", 30);
    s.source_port = Some(500);
    establish_and_compare(&charon, port, s, 30, "127.0.5.");
    let sas = charon.swanctl().list_sas().unwrap();
    assert!(sas.iter().all(|sa| sa.remote_port == 500));
}

#[test]
fn ikegen_accepts_charon_choosing_its_second_proposal() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    // We prefer AES-128-GCM; charon accepts only AES-256-GCM, our proposal 2.
    let (charon, port) = start_charon("ikegen-second");
    let mut s = settings(port, "127.0.6.0/29", 5);
    s.ike = Some("aes128gcm16-prfsha256-x25519, aes256gcm16-prfsha256-x25519".into());
    let report = run(&s.resolve().unwrap(), None).unwrap();
    if report.established != 5 {
        charon.dump_log();
    }
    assert_eq!(report.established, 5, "{}", report.render_text());
    let sas = charon
        .swanctl()
        .wait_for_sas(Duration::from_secs(5), |s| {
            s.iter().filter(|sa| sa.state == "ESTABLISHED").count() == 5
        })
        .unwrap();
    assert!(sas.iter().all(|sa| sa.encr_keysize == Some(256)), "{sas:#?}");
}

#[test]
fn ikegen_establishes_hybrid_ike_sas_with_strongswan6() {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6]) {
        return;
    }
    let prefix = support::strongswan6().expect("skip_unless checked it");
    let proposal = "aes256gcm16-prfsha256-x25519-ke1_mlkem768";
    let (charon, port) = start_charon_with("ikegen-pq", proposal, Some(&prefix));
    let mut s = settings(port, "127.0.7.0/28", 20);
    s.ike = Some(proposal.into());
    let report = run(&s.resolve().unwrap(), None).unwrap();
    if report.established != 20 {
        charon.dump_log();
    }
    assert_eq!(report.established, 20, "{}", report.render_text());
    let sas = charon
        .swanctl()
        .wait_for_sas(Duration::from_secs(5), |s| {
            s.iter().filter(|sa| sa.state == "ESTABLISHED").count() == 20
        })
        .unwrap();
    assert!(
        sas.iter().all(|sa| sa.dh_group.as_deref() == Some("CURVE_25519")),
        "{sas:#?}"
    );
    charon.wait_for_log("IKE_INTERMEDIATE", Duration::from_secs(5)).unwrap();
}

/// EAP-MSCHAPv2 road warriors with virtual IPs against a charon gateway
/// (eap-mschapv2 with its EAP-Identity round, a swanctl pool): every user
/// passes EAP in four round trips and gets its own address, as charon's
/// listing confirms.
#[test]
fn ikegen_eap_mschapv2_clients_get_virtual_ips_from_charon() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    const USERS: u64 = 20;
    const PASSWORD: &str = "ikegen-eap-users-password";
    let (port, nat) = free_udp_port_pair().unwrap();
    let mut builder = Charon::builder("ikegen-eap")
        .ports(port, nat)
        .plugin("eap-mschapv2")
        .plugin("eap-identity")
        .setting("block_threshold", "100")
        .setting("cookie_threshold", "100")
        .pool("rw", &[("addrs", "10.66.0.0/24")])
        .connection(
            Connection::new("rw", "127.0.0.1", "%any")
                .proposals(&["aes256gcm16-prfsha256-x25519"])
                .mobike(false)
                .set("pools", "rw")
                .local(AuthRound::psk("charon@ikegen.test"))
                .remote(
                    AuthRound {
                        auth: "eap-mschapv2".into(),
                        id: Some("%any".into()),
                        ..AuthRound::default()
                    }
                    .set("eap_id", "%any"),
                ),
        )
        .secret(Secret::psk("gen", &["charon@ikegen.test"], PSK));
    for n in 0..USERS {
        let user = format!("user{n}");
        builder = builder.secret(Secret::eap(&user, &user, PASSWORD));
    }
    let charon = builder.start().unwrap();
    let mut s = settings(port, "127.0.6.0/28", USERS);
    s.local_id = Some("road{n}@ikegen.test".into());
    s.eap_user = Some("user{n}".into());
    s.eap_password = Some(PASSWORD.into());
    s.vip = Some(true);
    let report = run(&s.resolve().unwrap(), None).unwrap();
    let text = report.render_text();
    if report.established != USERS {
        charon.dump_log();
    }
    assert_eq!(report.established, USERS, "{text}");
    assert!(report.is_consistent(), "{text}");
    assert_eq!(report.eap.as_ref().map(|e| e.round_trips), Some(4 * USERS), "{text}");
    let a = report.addresses.as_ref().expect("address section");
    assert_eq!((a.assigned, a.unique, a.refused), (USERS, USERS, 0), "{text}");
    let sas = charon
        .swanctl()
        .wait_for_sas(Duration::from_secs(10), |s| {
            s.iter().filter(|sa| sa.state == "ESTABLISHED").count() as u64 == USERS
        })
        .unwrap_or_else(|e| {
            charon.dump_log();
            panic!("{e}")
        });
    let ids: HashSet<_> = sas.iter().map(|sa| sa.remote_id.clone()).collect();
    assert_eq!(ids.len() as u64, USERS, "one IKE SA per road warrior: {ids:?}");
}

//! MOBIKE (RFC 4555) with strongSwan, in both roles. charon (`mobike =
//! yes`, user-space ESP through kernel-libipsec) is a client in a namespace
//! whose address changes while it pings through the tunnel, with ironsa the
//! gateway; then ironsa is the client of a charon gateway and its own
//! address changes. The IKE SA survives (same SPIs, no new IKE_SA_INIT),
//! ironsa moves its CHILD_SA in place (as a gateway after its return
//! routability check, COOKIE2), and less than a second of pings is lost.
//! (charon's user-space ESP cannot move an SA, so charon rekeys its side of
//! the child after a move.)
//!
//! Needs root, iproute2, iputils-ping and the strongSwan packages.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::IkeSaInfo;
use support::Need;
use support::netns::{INNER_A, INNER_B, OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::traffic::ping;
use support::{AuthRound, Charon, Child, Connection, Ironsa, KernelBackend, Netns, NetnsPair, Secret, Target};

const PSK: &str = "a-long-random-test-secret-for-mobike";
const T: Duration = Duration::from_secs(10);
/// The client's second address, on the same link.
const MOVED_B: &str = "10.99.0.3";
/// Pings every 50 ms for 6 s; the address changes after 1.5 s.
const PINGS: u32 = 120;
const PING_INTERVAL_MS: u64 = 50;

/// ironsa as the gateway: any client address, MOBIKE on (the default).
fn gateway() -> String {
    let conn = support::ironsa::peer_connection(OUTER_B, SUBNET_A, SUBNET_B, "a@test", "b@test", PSK)
        .replace(&format!("remote_addrs = [\"{OUTER_B}\"]\n"), "");
    support::ironsa::software_daemon(OUTER_A, 1, &conn)
}

fn one_child(s: &[Value]) -> bool {
    s.len() == 1 && s[0]["state"] == "ESTABLISHED" && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
}

/// charon in namespace B with kernel-libipsec, MOBIKE on, and `conn`
/// completed with PSK authentication and the tunnel child `net`.
fn charon_in_b(ns: &NetnsPair, name: &str, conn: Connection) -> Charon {
    Charon::builder(name)
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .connection(
            conn.mobike(true)
                .proposals(&["aes256gcm16-prfsha256-x25519"])
                .local(AuthRound::psk("b@test"))
                .remote(AuthRound::psk("a@test"))
                .child(
                    Child::new("net", SUBNET_B, SUBNET_A)
                        .mode("tunnel")
                        .esp_proposals(&["aes256gcm16"]),
                ),
        )
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap()
}

/// Prepares the namespaces for an address move on `veth` in `mover`: the
/// new address stays when the old one of its subnet is removed, and no
/// IPv6 link-local address appears on the way (charon answers each new
/// address of its own with an address-list INFORMATIONAL; one sent to the
/// old address just as it goes is retransmitted only after 2 s, and holds
/// up charon's CHILD_SA rekey after the move for as long).
fn prepare_move(ns: &NetnsPair, mover: &Netns, veth: &str) {
    for n in [&ns.a, &ns.b] {
        for scope in ["all", "default"] {
            n.exec(&["sysctl", "-q", "-w", &format!("net.ipv6.conf.{scope}.disable_ipv6=1")])
                .unwrap();
        }
    }
    mover
        .exec(&[
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv4.conf.{veth}.promote_secondaries=1"),
        ])
        .unwrap();
}

/// Pings `to` from `from` inside `ns` for 6 s; after 1.5 s the address of
/// `veth` there changes from `old` to `new`. Returns (sent, received).
fn ping_across_move(ns: &Netns, veth: &str, (from, to): (&str, &str), (old, new): (&str, &str)) -> (u32, u32) {
    let interval = format!("{:.3}", PING_INTERVAL_MS as f64 / 1000.0);
    std::thread::scope(|scope| {
        let pinger = scope.spawn(|| ping(ns, from, to, PINGS, &interval));
        std::thread::sleep(Duration::from_millis(1500));
        ns.exec(&["ip", "addr", "add", &format!("{new}/24"), "dev", veth])
            .unwrap();
        ns.exec(&["ip", "addr", "del", &format!("{old}/24"), "dev", veth])
            .unwrap();
        pinger.join().unwrap()
    })
}

/// The same IKE SA on ironsa's side, and its original CHILD_SA moved in
/// place; a new CHILD_SA only from charon's own rekey (its user-space ESP
/// cannot update an SA's addresses, so charon rekeys the child after a
/// move: CHILD_REKEY right after the MOBIKE exchange in its log).
fn assert_same_sas(ironsa: &Ironsa, charon: &Charon, before: &Value, after: &Value) {
    for key in ["spi_i", "spi_r"] {
        assert_eq!(after[key], before[key], "same IKE SA");
    }
    let first_child = before["children"][0]["spi_in"].as_str().unwrap_or_default();
    assert!(
        ironsa
            .log()
            .lines()
            .any(|l| l.contains("CHILD_SA moved to new outer addresses") && l.contains(first_child)),
        "the original CHILD_SA moved in place"
    );
    if after["children"][0]["spi_in"] != before["children"][0]["spi_in"] {
        assert!(
            charon.log_contains("queueing CHILD_REKEY"),
            "a new CHILD_SA only from charon's own rekey"
        );
    }
}

/// Less than a second of pings lost across a move.
fn assert_short_loss(what: &str, sent: u32, received: u32) {
    let lost = sent.saturating_sub(received);
    let lost_ms = u64::from(lost) * PING_INTERVAL_MS;
    eprintln!("{what}: {lost} of {sent} pings lost");
    assert!(lost_ms < 1000, "{what}: {lost} of {sent} pings lost ({lost_ms} ms)");
}

#[test]
fn charon_client_changes_address_and_keeps_its_sas() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping")]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    prepare_move(&ns, &ns.b, &ns.veth_b);
    let ironsa = Ironsa::start(&gateway(), Some(ns.a.name()));
    let charon = charon_in_b(&ns, "mobike", Connection::new("gw", "%any", OUTER_A));
    charon.swanctl().initiate(Target::Child("net"), T).unwrap();
    let before = ironsa.wait_sas(T, one_child);
    assert_eq!(before[0]["mobike"], json!(true), "MOBIKE negotiated: {before:#?}");
    assert_eq!(
        before[0]["remote"].as_str().unwrap_or_default().split(':').next(),
        Some(OUTER_B)
    );
    let swan_before = charon.swanctl().list_sas().unwrap();
    assert_eq!((swan_before.len(), swan_before[0].children.len()), (1, 1));

    let (sent, received) = ping_across_move(&ns.b, &ns.veth_b, (INNER_B, INNER_A), (OUTER_B, MOVED_B));

    let after = ironsa.wait_sas(T, |s| {
        one_child(s)
            && s[0]["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with(&format!("{MOVED_B}:")))
    });
    assert_same_sas(&ironsa, &charon, &before[0], &after[0]);
    let swan = charon.swanctl().list_sas().unwrap();
    assert_eq!(swan.len(), 1);
    assert_eq!(swan[0].initiator_spi, swan_before[0].initiator_spi);
    assert_eq!(swan[0].local_host.to_string(), MOVED_B);
    assert_eq!(
        ironsa.call(json!({"cmd": "stats"}))["shards"][0]["init_requests"],
        json!(1),
        "no new IKE_SA_INIT"
    );
    assert!(
        ironsa.log().contains("return routability verified"),
        "ESP moved after the COOKIE2 check"
    );
    assert_short_loss("MOBIKE move of charon", sent, received);
}

/// ironsa's new address when it is the client that moves.
const MOVED_A: &str = "10.99.0.4";

/// ironsa as a MOBIKE client of `OUTER_B`, listening on the wildcard
/// address (a moved client must send from an address it did not start with).
fn client() -> String {
    let conn = support::ironsa::peer_connection(OUTER_B, SUBNET_A, SUBNET_B, "a@test", "b@test", PSK);
    support::ironsa::software_daemon("0.0.0.0", 1, &conn)
}

fn charon_child(s: &[IkeSaInfo]) -> bool {
    s.len() == 1 && s[0].installed_children().len() == 1
}

#[test]
fn ironsa_client_changes_address_and_keeps_its_sas() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping")]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    prepare_move(&ns, &ns.a, &ns.veth_a);
    let charon = charon_in_b(&ns, "mobike-gw", Connection::new("roadwarrior", OUTER_B, "%any"));
    let ironsa = Ironsa::start(&client(), Some(ns.a.name()));
    ironsa.call(json!({"cmd": "initiate", "connection": "peer", "timeout": 10}));
    let before = ironsa.wait_sas(T, one_child);
    assert_eq!(before[0]["mobike"], json!(true), "MOBIKE negotiated: {before:#?}");
    assert_eq!(before[0]["role"], json!("initiator"));
    let swan_before = charon.swanctl().wait_for_sas(T, charon_child).unwrap();
    assert_eq!(swan_before[0].remote_host.to_string(), OUTER_A);

    let (sent, received) = ping_across_move(&ns.a, &ns.veth_a, (INNER_A, INNER_B), (OUTER_A, MOVED_A));

    let after = ironsa.wait_sas(T, |s| {
        one_child(s)
            && s[0]["local"]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("{MOVED_A}:")))
    });
    let log = ironsa.log();
    assert!(
        log.contains("our address changed: updating the peer (MOBIKE)")
            && log.contains("address update acknowledged (MOBIKE)"),
        "ironsa sent UPDATE_SA_ADDRESSES and the answer echoed its COOKIE2"
    );
    assert_same_sas(&ironsa, &charon, &before[0], &after[0]);
    let swan = charon
        .swanctl()
        .wait_for_sas(T, |s| charon_child(s) && s[0].remote_host.to_string() == MOVED_A)
        .unwrap();
    assert_eq!(
        swan[0].initiator_spi, swan_before[0].initiator_spi,
        "charon: same IKE SA"
    );
    assert_eq!(swan[0].responder_spi, swan_before[0].responder_spi);
    assert_eq!(
        charon.log().matches("parsed IKE_SA_INIT request").count(),
        1,
        "no new IKE_SA_INIT"
    );
    assert!(
        charon.log_contains("N(UPD_SA_ADDR)") && charon.log_contains("N(COOKIE2)"),
        "charon saw the address update with its COOKIE2"
    );
    if sent.saturating_sub(received) > 5 {
        ironsa.dump_log();
        charon.dump_log();
    }
    assert_short_loss("MOBIKE move of ironsa", sent, received);
}

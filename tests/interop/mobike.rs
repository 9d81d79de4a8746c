//! MOBIKE (RFC 4555) with strongSwan: charon (`mobike = yes`, user-space ESP
//! through kernel-libipsec) is a client in a namespace whose address changes
//! while it pings through the tunnel; ironsa is the gateway. The IKE SA
//! survives (same SPIs, no new IKE_SA_INIT), ironsa moves its CHILD_SA in
//! place after its return routability check (COOKIE2), and less than a
//! second of pings is lost. (charon's user-space ESP cannot move an SA, so
//! charon rekeys its side of the child after the move.)
//!
//! Needs root, iproute2, iputils-ping and the strongSwan packages.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Need;
use support::netns::{INNER_A, INNER_B, OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::traffic::ping;
use support::{AuthRound, Charon, Child, Connection, Ironsa, KernelBackend, NetnsPair, Secret, Target};

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

#[test]
fn charon_client_changes_address_and_keeps_its_sas() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping")]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    // The new address must survive the removal of the old one.
    ns.b.exec(&[
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv4.conf.{}.promote_secondaries=1", ns.veth_b),
    ])
    .unwrap();
    let ironsa = Ironsa::start(&gateway(), Some(ns.a.name()));
    let charon = Charon::builder("mobike")
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .connection(
            Connection::new("gw", "%any", OUTER_A)
                .mobike(true)
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
        .unwrap();
    charon.swanctl().initiate(Target::Child("net"), T).unwrap();
    let before = ironsa.wait_sas(T, one_child);
    assert_eq!(before[0]["mobike"], json!(true), "MOBIKE negotiated: {before:#?}");
    assert_eq!(
        before[0]["remote"].as_str().unwrap_or_default().split(':').next(),
        Some(OUTER_B)
    );
    let swan_before = charon.swanctl().list_sas().unwrap();
    assert_eq!((swan_before.len(), swan_before[0].children.len()), (1, 1));

    let interval = format!("{:.3}", PING_INTERVAL_MS as f64 / 1000.0);
    let (sent, received) = std::thread::scope(|scope| {
        let pinger = scope.spawn(|| ping(&ns.b, INNER_B, INNER_A, PINGS, &interval));
        std::thread::sleep(Duration::from_millis(1500));
        ns.b.exec(&["ip", "addr", "add", &format!("{MOVED_B}/24"), "dev", &ns.veth_b])
            .unwrap();
        ns.b.exec(&["ip", "addr", "del", &format!("{OUTER_B}/24"), "dev", &ns.veth_b])
            .unwrap();
        pinger.join().unwrap()
    });

    let after = ironsa.wait_sas(T, |s| {
        one_child(s)
            && s[0]["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with(&format!("{MOVED_B}:")))
    });
    for key in ["spi_i", "spi_r"] {
        assert_eq!(after[0][key], before[0][key], "same IKE SA");
    }
    // ironsa moved its CHILD_SA in place. charon's user-space ESP cannot
    // update an SA's addresses, so charon itself rekeys the child after a
    // move (its log: CHILD_REKEY right after the MOBIKE exchange); with
    // that backend only the IKE SA is guaranteed to stay.
    let first_child = before[0]["children"][0]["spi_in"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        ironsa
            .log()
            .lines()
            .any(|l| l.contains("CHILD_SA moved to new outer addresses") && l.contains(&first_child)),
        "the original CHILD_SA moved in place"
    );
    if after[0]["children"][0]["spi_in"] != before[0]["children"][0]["spi_in"] {
        assert!(
            charon.log_contains("queueing CHILD_REKEY"),
            "a new CHILD_SA only from charon's own rekey"
        );
    }
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
    let lost = sent.saturating_sub(received);
    let lost_ms = u64::from(lost) * PING_INTERVAL_MS;
    eprintln!("MOBIKE move: {lost} of {sent} pings lost");
    assert!(
        lost_ms < 1000,
        "{lost} of {sent} pings lost ({lost_ms} ms) across the move"
    );
}

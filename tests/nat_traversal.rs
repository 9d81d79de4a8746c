//! NAT traversal through a real NAT: an ironsa client in a namespace behind
//! a router namespace that masquerades with nftables (random ports, short
//! conntrack UDP timeouts), an ironsa gateway on the other side.
//!
//! - Both sides detect the NAT and say where it is (`ironsa sas --json`).
//! - The client's NAT keepalives keep its mapping through an idle period
//!   three times longer than the router's UDP timeout: afterwards the
//!   gateway's ESP still reaches the client.
//! - `conntrack -F` gives the client a new external port: the gateway
//!   follows the rebinding on the client's authenticated ESP, and the
//!   tunnel carries traffic both ways on the same IKE SA and CHILD_SA.
//!
//! Needs root, iproute2, iputils-ping, nftables and conntrack (skipped with a
//! reason otherwise).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::netns::{INNER_A, INNER_B, NattedPair, OUTER_A, OUTER_B, PRIVATE_A, SUBNET_A, SUBNET_B};
use support::traffic::ping;
use support::{Ironsa, Need};

const PSK: &str = "a-long-random-test-secret-for-nat-traversal";
const T: Duration = Duration::from_secs(10);
/// The router forgets idle UDP mappings after this many seconds.
const UDP_TIMEOUT_SECS: u32 = 3;

/// A software-plane daemon at `me`; `connection_extra` goes into its connection.
fn config(me: &str, peer: &str, mine: &str, theirs: &str, ids: (&str, &str), connection_extra: &str) -> String {
    support::ironsa::software_daemon(
        me,
        1,
        &support::ironsa::peer_connection(peer, mine, theirs, ids.0, ids.1, PSK)
            .replace("ike_proposals =", &format!("{connection_extra}\nike_proposals =")),
    )
}

fn one_child(s: &[Value]) -> bool {
    s.len() == 1 && s[0]["state"] == "ESTABLISHED" && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
}

/// (IKE SPIs, child inbound SPI) of the only SA: what must survive.
fn identity(s: &[Value]) -> (String, String, String) {
    (
        s[0]["spi_i"].to_string(),
        s[0]["spi_r"].to_string(),
        s[0]["children"][0]["spi_in"].to_string(),
    )
}

#[test]
fn keepalives_hold_the_mapping_and_esp_follows_a_rebinding() {
    if support::skip_unless(&[
        Need::Root,
        Need::Tool("ping"),
        Need::Tool("nft"),
        Need::Tool("conntrack"),
    ]) {
        return;
    }
    let net = NattedPair::new().unwrap();
    net.short_random_udp_mappings(UDP_TIMEOUT_SECS).unwrap();
    // The gateway takes the client from any address (it arrives as the router's).
    let gateway_conf = config(OUTER_B, PRIVATE_A, SUBNET_B, SUBNET_A, ("b@test", "a@test"), "")
        .replace(&format!("remote_addrs = [\"{PRIVATE_A}\"]\n"), "");
    let b = Ironsa::start(&gateway_conf, Some(net.b.name()));
    let a = Ironsa::start(
        &config(
            PRIVATE_A,
            OUTER_B,
            SUBNET_A,
            SUBNET_B,
            ("a@test", "b@test"),
            "nat_keepalive = \"1s\"",
        ),
        Some(net.a.name()),
    );
    a.call(json!({"cmd": "initiate", "connection": "peer"}));
    let sa_a = a.wait_sas(T, one_child);
    let sa_b = b.wait_sas(T, one_child);

    // Each side knows where the NAT is, and ESP travels in UDP.
    assert_eq!(
        (&sa_a[0]["nat_local"], &sa_a[0]["nat_remote"], &sa_a[0]["nat_t"]),
        (&json!(true), &json!(false), &json!(true)),
        "client: {sa_a:#?}"
    );
    assert_eq!(
        (&sa_b[0]["nat_local"], &sa_b[0]["nat_remote"]),
        (&json!(false), &json!(true)),
        "gateway: {sa_b:#?}"
    );
    let first_outer = sa_b[0]["remote"].as_str().unwrap_or_default().to_string();
    assert!(
        first_outer.starts_with(&format!("{OUTER_A}:")),
        "the gateway sees the router: {first_outer}"
    );
    let before = identity(&sa_b);
    assert_eq!(ping(&net.a, INNER_A, INNER_B, 3, "0.2"), (3, 3), "ping through the NAT");

    // Idle three times the UDP timeout: only keepalives cross the NAT. The
    // gateway's ESP then still reaches the client through the same mapping.
    std::thread::sleep(Duration::from_secs(u64::from(UDP_TIMEOUT_SECS) * 3));
    let mappings = net.udp_mappings().unwrap();
    assert!(
        mappings
            .iter()
            .any(|l| l.contains(&format!("src={PRIVATE_A}")) && l.contains("sport=4500")),
        "keepalives keep the client's NAT-T mapping: {mappings:#?}"
    );
    let seen = b.sas();
    assert_eq!(seen[0]["remote"], json!(first_outer), "same external port after idling");
    assert_eq!(
        ping(&net.b, INNER_B, INNER_A, 3, "0.2"),
        (3, 3),
        "gateway -> client after idling"
    );

    // A new external port: the client's next ESP arrives from it, authenticated;
    // the gateway follows, and answers reach the client on the new mapping.
    net.flush_mappings().unwrap();
    let (sent, received) = ping(&net.a, INNER_A, INNER_B, 10, "0.2");
    assert!(
        sent == 10 && received >= 9,
        "ping after the rebinding: {received}/{sent}"
    );
    let after = b.wait_sas(T, |s| one_child(s) && s[0]["remote"] != json!(first_outer));
    assert!(
        after[0]["remote"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{OUTER_A}:")),
        "{after:#?}"
    );
    assert_eq!(identity(&after), before, "same IKE SA and CHILD_SA: no rekey");
    assert!(
        b.log().contains("following it (ESP)"),
        "the gateway followed the client's ESP (no IKE crossed the NAT)"
    );
    assert_eq!(
        ping(&net.b, INNER_B, INNER_A, 3, "0.2"),
        (3, 3),
        "gateway -> client on the new mapping"
    );
}

//! Plain ESP (IP protocol 50) between two ironsa daemons: each runs the
//! software fastpath (multi-queue TUN with offloads, raw ESP socket) in its
//! own network namespace; without NAT between them IKEv2 negotiates no UDP
//! encapsulation, so ESP travels in raw IP packets. Ping and bulk TCP flow
//! both ways, the counters move on both sides, and a capture on the veth
//! shows only protocol-50 packets (no UDP 4500).
//!
//! With `force_udp_encap` on one side, the same pair uses ESP-in-UDP 4500
//! (sent with UDP GSO, received with UDP GRO): bulk TCP flows both ways and
//! the capture shows only UDP 4500.
//!
//! Needs root, iproute2, iputils-ping, iperf3 and tshark.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Need;
use support::netns::{INNER_A, INNER_B, OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::{Ironsa, NetnsPair};

const PSK: &str = "a-long-random-test-secret-for-raw-esp";
const T: Duration = Duration::from_secs(10);

fn config(me: &str, peer: &str, mine: &str, theirs: &str, lid: &str, rid: &str, force_udp_encap: bool) -> String {
    support::ironsa::software_daemon(
        me,
        2,
        &support::ironsa::peer_connection(peer, mine, theirs, lid, rid, PSK).replace(
            "ike_proposals =",
            &format!("force_udp_encap = {force_udp_encap}\nike_proposals ="),
        ),
    )
}

/// Starts both daemons; with `force_udp_encap`, only A asks for it (B must follow).
fn start_pair(ns: &NetnsPair, force_udp_encap: bool) -> (Ironsa, Ironsa) {
    let a = Ironsa::start(
        &config(
            OUTER_A,
            OUTER_B,
            SUBNET_A,
            SUBNET_B,
            "a@test",
            "b@test",
            force_udp_encap,
        ),
        Some(ns.a.name()),
    );
    let b = Ironsa::start(
        &config(OUTER_B, OUTER_A, SUBNET_B, SUBNET_A, "b@test", "a@test", false),
        Some(ns.b.name()),
    );
    a.call(json!({"cmd": "initiate", "connection": "peer"}));
    let one_child = |s: &[Value]| s.len() == 1 && s[0]["children"].as_array().is_some_and(|c| c.len() == 1);
    a.wait_sas(T, one_child);
    b.wait_sas(T, one_child);
    (a, b)
}

#[test]
fn plain_esp_between_two_ironsa_carries_ping_and_tcp_both_ways() {
    if support::skip_unless(&[Need::Root, Need::Tool("ping"), Need::Tool("iperf3")]) {
        return;
    }
    carries_ping_and_tcp_both_ways(false);
}

#[test]
fn forced_udp_encap_between_two_ironsa_carries_ping_and_tcp_both_ways() {
    if support::skip_unless(&[Need::Root, Need::Tool("ping"), Need::Tool("iperf3")]) {
        return;
    }
    carries_ping_and_tcp_both_ways(true);
}

fn carries_ping_and_tcp_both_ways(force_udp_encap: bool) {
    let ns = NetnsPair::new().unwrap();
    let (a, b) = start_pair(&ns, force_udp_encap);
    support::traffic::ping_both_ways(&ns, 5, "0.1");
    let ab = support::traffic::iperf(&ns, false, 2, 2);
    let ba = support::traffic::iperf(&ns, true, 2, 2);
    let kind = if force_udp_encap { "ESP-in-UDP" } else { "plain ESP" };
    eprintln!("{kind}, AES-256-GCM: TCP A->B {ab:.0} Mbit/s, B->A {ba:.0} Mbit/s");
    assert!(ab > 10.0 && ba > 10.0, "bulk TCP both ways: {ab} / {ba} Mbit/s");
    for (name, d) in [("A", &a), ("B", &b)] {
        let (pin, pout) = d.child_packets();
        assert!(pin > 1000 && pout > 1000, "{name} counters: in {pin}, out {pout}");
    }
}

/// ESP packets on A's veth while 4 pings go A -> B: (ip.src, ip.proto, udp.dstport, esp.spi) rows.
fn capture_esp(force_udp_encap: bool) -> Vec<Vec<String>> {
    let ns = NetnsPair::new().unwrap();
    let (a, _b) = start_pair(&ns, force_udp_encap);
    let pcap = a.dir().join("esp.pcap");
    let mut cap = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.a.name(),
            "tshark",
            "-q",
            "-i",
            &ns.veth_a,
            "-f",
            "ip proto 50 or udp port 4500",
            "-a",
            "duration:8",
            "-w",
        ])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    support::traffic::wait_capturing(&pcap);
    assert_eq!(support::traffic::ping(&ns.a, INNER_A, INNER_B, 4, "0.1"), (4, 4));
    let deadline = Instant::now() + Duration::from_secs(15);
    while cap.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = cap.kill();
    let _ = cap.wait();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args([
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.proto",
            "-e",
            "udp.dstport",
            "-e",
            "esp.spi",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn capture_shows_protocol_50_and_no_udp_encapsulation() {
    if support::skip_unless(&[Need::Root, Need::Tool("ping"), Need::Tool("tshark")]) {
        return;
    }
    let rows = capture_esp(false);
    let text = format!("{rows:?}");
    let from = |ip: &str| {
        rows.iter()
            .filter(|r| r.first().map(String::as_str) == Some(ip))
            .count()
    };
    let (from_a, from_b) = (from(OUTER_A), from(OUTER_B));
    assert!(
        from_a >= 4 && from_b >= 4,
        "4 echo requests and 4 replies as ESP: {text}"
    );
    for r in &rows {
        assert_eq!(
            r.get(1).map(String::as_str),
            Some("50"),
            "plain ESP (IP protocol 50), not UDP: {r:?}"
        );
        assert!(r.get(2).is_none_or(|p| p.is_empty()), "no UDP header: {r:?}");
        assert!(r.get(3).is_some_and(|s| s.starts_with("0x")), "ESP SPI decoded: {r:?}");
    }
}

#[test]
fn capture_shows_udp_4500_when_encapsulation_is_forced() {
    if support::skip_unless(&[Need::Root, Need::Tool("ping"), Need::Tool("tshark")]) {
        return;
    }
    let rows = capture_esp(true);
    let from = |ip: &str| {
        rows.iter()
            .filter(|r| r.first().map(String::as_str) == Some(ip))
            .count()
    };
    assert!(
        from(OUTER_A) >= 4 && from(OUTER_B) >= 4,
        "4 echo requests and 4 replies as ESP-in-UDP: {rows:?}"
    );
    for r in &rows {
        assert_eq!(r.get(1).map(String::as_str), Some("17"), "UDP, not protocol 50: {r:?}");
        assert_eq!(r.get(2).map(String::as_str), Some("4500"), "to port 4500: {r:?}");
    }
    assert!(
        rows.iter().any(|r| r.get(3).is_some_and(|s| s.starts_with("0x"))),
        "ESP inside UDP decoded: {rows:?}"
    );
}

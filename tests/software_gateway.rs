//! The software data plane as a gateway host sees it: two ironsa daemons in
//! network namespaces joined by a veth pair.
//!
//! - Transport mode with `install_routes = true`: the route to the peer's
//!   address points into the TUN device, yet the daemons' own IKE and ESP
//!   (marked sockets) bypass it; ping between the gateways' own addresses
//!   travels through the transport-mode SA. The policy rules are gone after
//!   shutdown.
//! - IKE on UDP 4500 larger than a packet buffer (an unfragmented IKE_AUTH
//!   with many traffic selectors) is answered.
//! - Overflows of the NAT-T socket's receive queue show in `ironsa stats`
//!   and the Prometheus metrics.
//!
//! Needs root, iproute2 and iputils-ping (skipped with a reason otherwise).

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Need;
use support::netns::{OUTER_A, OUTER_B};
use support::util::{free_udp_port_pair, http_get};
use support::{Ironsa, NetnsPair};

const PSK: &str = "a-long-random-test-secret-for-the-software-gateway";
const T: Duration = Duration::from_secs(10);

fn one_child(s: &[Value]) -> bool {
    s.len() == 1 && s[0]["state"] == "ESTABLISHED" && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
}

/// A gateway at `me` with one connection `peer` to `peer` and its child
/// `net` between selectors `mine` and `theirs` ([`support::ironsa::peer_connection`]);
/// `extra_conn` goes into the connection, `extra_child` into the child.
fn gateway(
    me: &str,
    peer: &str,
    (mine, theirs): (&str, &str),
    ids: (&str, &str),
    extra_conn: &str,
    extra_child: &str,
) -> String {
    let conn = support::ironsa::peer_connection(peer, mine, theirs, ids.0, ids.1, PSK)
        .replace("ike_proposals =", &format!("{extra_conn}\nike_proposals ="));
    format!(
        "[daemon]\nlisten = [\"{me}\"]\nshards = 1\ncontrol_socket = \"SOCKET\"\n\n[fastpath]\nbackend = \"software\"\ntun_name = \"ironsa0\"\n{conn}{extra_child}\n"
    )
}

/// Rules in namespace `ns` that point to ironsa's routing table.
fn ironsa_rules(ns: &support::Netns) -> String {
    let mut out = String::new();
    for family in ["-4", "-6"] {
        let o = ns.exec(&["ip", family, "rule", "show"]).expect("ip rule");
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out.lines()
        .filter(|l| l.contains("4500"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn transport_mode_with_routes_carries_traffic_between_the_gateways() {
    if support::skip_unless(&[Need::Root, Need::Tool("ping")]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let host = |a: &str| format!("{a}/32");
    let transport = "mode = \"transport\"";
    let mut a = Ironsa::start(
        &gateway(
            OUTER_A,
            OUTER_B,
            (&host(OUTER_A), &host(OUTER_B)),
            ("a@test", "b@test"),
            "",
            transport,
        ),
        Some(ns.a.name()),
    );
    let b = Ironsa::start(
        &gateway(
            OUTER_B,
            OUTER_A,
            (&host(OUTER_B), &host(OUTER_A)),
            ("b@test", "a@test"),
            "",
            transport,
        ),
        Some(ns.b.name()),
    );
    a.call(json!({"cmd": "initiate", "connection": "peer"}));
    a.wait_sas(T, one_child);
    b.wait_sas(T, one_child);
    assert!(
        ironsa_rules(&ns.a).contains("not from all fwmark 0x4500/0xffff lookup 4500"),
        "rule in A: {}",
        ironsa_rules(&ns.a)
    );
    let route = ns.a.exec(&["ip", "route", "show", "table", "4500"]).unwrap();
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    assert!(
        route.contains(&format!("{OUTER_B} dev ironsa0")) && route.contains(&format!("src {OUTER_A}")),
        "route to the peer into the TUN device, from our address: {route}"
    );

    // The gateways' own addresses talk through the transport-mode SA: the
    // kernel picks the source from the route.
    let o =
        ns.a.exec_bounded(
            &["ping", "-q", "-c", "5", "-i", "0.1", "-W", "2", OUTER_B],
            Duration::from_secs(30),
        )
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("5 packets transmitted, 5 received"), "ping A -> B: {out}");
    let (a_in, a_out) = a.child_packets();
    let (b_in, b_out) = b.child_packets();
    assert!(
        a_out >= 5 && a_in >= 5 && b_in >= 5 && b_out >= 5,
        "echoes went through the SA: A in/out {a_in}/{a_out}, B in/out {b_in}/{b_out}"
    );
    // No loop: a handful of IKE and ESP packets, not millions.
    assert!(a_out < 100 && b_out < 100, "A out {a_out}, B out {b_out}");
    // DPD-style liveness: the IKE SA still answers (an INFORMATIONAL round trip).
    assert!(one_child(&a.sas()) && one_child(&b.sas()));

    // The route goes with the last CHILD_SA that needs it; the rules stay until shutdown.
    a.call(json!({"cmd": "terminate", "connection": "peer"}));
    a.wait_sas(T, |s| s.is_empty());
    let deadline = Instant::now() + T;
    let routes = loop {
        let o = ns.a.exec(&["ip", "route", "show", "table", "4500"]).unwrap();
        let routes = String::from_utf8_lossy(&o.stdout).into_owned();
        if routes.trim().is_empty() || Instant::now() > deadline {
            break routes;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(routes.trim(), "", "route removed with the CHILD_SA");
    assert_ne!(ironsa_rules(&ns.a), "");
    a.stop();
    assert_eq!(ironsa_rules(&ns.a), "", "rules removed at shutdown");
}

#[test]
fn ike_auth_larger_than_a_packet_buffer_is_answered_on_port_4500() {
    if support::skip_unless(&[Need::Root]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    // 120 host selectors per side: IKE_AUTH carries ≈ 4 KB of TSi and TSr,
    // unfragmented, over UDP 4500 (A forces UDP encapsulation).
    // Selectors inside `["..."]`: "10.1.0.1/32", ... "10.1.0.120/32".
    let hosts = |net: u8| {
        (1..=120)
            .map(|h| format!("10.{net}.0.{h}/32"))
            .collect::<Vec<_>>()
            .join("\", \"")
    };
    let (a_hosts, b_hosts) = (hosts(1), hosts(2));
    let a = Ironsa::start(
        &gateway(
            OUTER_A,
            OUTER_B,
            (&a_hosts, &b_hosts),
            ("a@test", "b@test"),
            "force_udp_encap = true\nfragmentation = false",
            "",
        ),
        Some(ns.a.name()),
    );
    let b = Ironsa::start(
        &gateway(
            OUTER_B,
            OUTER_A,
            (&b_hosts, &a_hosts),
            ("b@test", "a@test"),
            "fragmentation = false",
            "",
        ),
        Some(ns.b.name()),
    );
    a.call(json!({"cmd": "initiate", "connection": "peer"}));
    let sas = b.wait_sas(T, one_child);
    assert_eq!(sas[0]["remote"], format!("{OUTER_A}:4500"), "IKE moved to port 4500");
    a.wait_sas(T, one_child);
}

#[test]
fn nat_t_receive_queue_overflows_are_counted() {
    if support::skip_unless(&[Need::Root]) {
        return;
    }
    // On loopback in this namespace (the test floods from its own socket),
    // with no routes and a TUN device of its own.
    let (ike, nat) = free_udp_port_pair().unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let config = gateway(
        "127.0.0.1",
        "127.0.0.2",
        ("10.2.0.0/24", "10.1.0.0/24"),
        ("b@test", "a@test"),
        "",
        "",
    )
    .replace(
        "[daemon]",
        &format!("[daemon]\nike_port = {ike}\nnat_port = {nat}\nmetrics = \"127.0.0.1:{metrics_port}\""),
    )
    .replace(
        "tun_name = \"ironsa0\"",
        "tun_name = \"ironsa-qd0\"\nsocket_buffer = \"64K\"\ninstall_routes = false",
    );
    let b = Ironsa::start(&config, None);
    let drops = |b: &Ironsa| -> u64 {
        let stats = b.call(json!({"cmd": "stats"}));
        stats["dataplane"]["receive_queue_drops"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|q| q["queue"] == "nat_t")
            .map(|q| q["drops"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(drops(&b), 0);
    // Bursts of ESP-in-UDP (unknown SPI), far faster than a 64 KiB queue
    // drains; the packet after each burst carries the kernel's count.
    let to: std::net::SocketAddr = ([127, 0, 0, 1], nat).into();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut esp = vec![0u8; 1400];
    esp[..4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let deadline = Instant::now() + Duration::from_secs(30);
    while drops(&b) == 0 && Instant::now() < deadline {
        for _ in 0..5000 {
            let _ = s.send_to(&esp, to);
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = s.send_to(&esp, to);
        std::thread::sleep(Duration::from_millis(200));
    }
    let n = drops(&b);
    assert!(n > 0, "receive-queue overflows counted in ironsa stats");
    let metrics = http_get(metrics_port, "/metrics");
    let series = format!("ironsa_receive_queue_drops_total{{queue=\"nat_t\",local=\"127.0.0.1:{nat}\"}} ");
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&series))
        .unwrap_or_else(|| panic!("no NAT-T queue drops in the metrics:\n{metrics}"));
    let counted: u64 = line[series.len()..].parse().unwrap_or(0);
    assert!(counted >= n, "{line} (stats said {n})");
    // The TUN device's queues are reported too.
    assert!(metrics.contains("queue=\"tun_read\",local=\"ironsa-qd0\""), "{metrics}");
}

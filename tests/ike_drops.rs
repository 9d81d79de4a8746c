//! What the daemon does with IKE it cannot use, at its default log level: a
//! flood of IKE_SA_INIT requests with a proposal it refuses is counted by
//! reason and logged as one WARN line per source (and one summary per
//! source when the rate-limit window ends), never a line per request; a
//! request of IKE major version 3 is answered INVALID_MAJOR_VERSION.
//! ironsa on loopback without a data plane: needs no root.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::config::{ConnectionConfig, IdentityMatch, parse_identity};
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::Context;
use control::proposal::parse_ike_proposals;
use control::wire::ikev2::{self, NotifyType, Payload};
use serde_json::{Value, json};
use support::Ironsa;
use support::util::free_udp_port_pair;

const PSK: &str = "Zq8#kP2!vR9@wX4$yT7&uN1*eB5^";
const SOURCES: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const PER_SOURCE: u64 = 1000;

fn gateway(ports: (u16, u16), metrics: u16) -> String {
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {}
nat_port = {}
shards = 2
control_socket = "SOCKET"
metrics = "127.0.0.1:{metrics}"

[[connection]]
name = "rw"
remote_addrs = ["%any"]
local_id = "gw@test"
remote_id = "*@test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"
"#,
        ports.0, ports.1
    )
}

/// An IKE_SA_INIT request offering only AES-128-CBC, which the gateway
/// refuses, after the non-ESP marker (ironsa, like charon, uses one on every
/// port but 500).
fn refused_init(gw: SocketAddr) -> Vec<u8> {
    let now = Instant::now();
    let mut c = ConnectionConfig::new(
        "flood",
        parse_identity("flood@test"),
        IdentityMatch::Any,
        PSK.as_bytes(),
    );
    c.ike_proposals = parse_ike_proposals("aes128-sha256-prfsha256-x25519").unwrap();
    let mut ep = Endpoint::new(
        now,
        Context::new(vec![], ironsa_crypto::AwsLcProvider::new().shared()),
        AdmissionConfig::default(),
        0,
        0,
    );
    ep.initiate(now, Arc::new(c), "127.0.0.1:500".parse().unwrap(), gw)
        .unwrap();
    let mut d = vec![0u8; 4];
    d.extend_from_slice(&ep.poll_transmit().expect("IKE_SA_INIT").data);
    d
}

fn drops(gw: &Ironsa, reason: &str) -> (u64, u64) {
    let stats = gw.call(json!({"cmd": "stats"}));
    let shards = stats["shards"].as_array().cloned().unwrap_or_default();
    let sum = |f: &dyn Fn(&Value) -> u64| shards.iter().map(f).sum::<u64>();
    (
        sum(&|s| s["drops"][reason].as_u64().unwrap_or(0)),
        sum(&|s| s["init_requests"].as_u64().unwrap_or(0)),
    )
}

#[test]
fn a_flood_of_refused_requests_is_counted_and_logged_once_per_source() {
    let ports = free_udp_port_pair().unwrap();
    let metrics = free_udp_port_pair().unwrap().0;
    let gw = Ironsa::start_logging(&gateway(ports, metrics), None, None);
    let target: SocketAddr = format!("127.0.0.1:{}", ports.0).parse().unwrap();
    let template = refused_init(target);
    let sockets: Vec<UdpSocket> = SOURCES.iter().map(|ip| UdpSocket::bind((*ip, 0)).unwrap()).collect();
    for n in 0..PER_SOURCE {
        for (i, s) in sockets.iter().enumerate() {
            // A fresh initiator SPI: every request is a new one.
            let mut d = template.clone();
            d[4..12].copy_from_slice(&(((i as u64 + 1) << 32) | (n + 1)).to_be_bytes());
            s.send_to(&d, target).unwrap();
        }
        if n % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let sent = PER_SOURCE * SOURCES.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (refused, requests) = loop {
        let (refused, requests) = drops(&gw, "no_proposal_chosen");
        if requests >= sent || Instant::now() > deadline {
            break (refused, requests);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(refused, requests, "every refused request is counted");
    assert!(requests >= sent * 9 / 10, "{requests} of {sent} requests arrived");

    // A request of a higher major version is answered INVALID_MAJOR_VERSION.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut v3 = template.clone();
    v3[4..12].copy_from_slice(&0x3333_0000_0000_0001u64.to_be_bytes());
    v3[4 + 17] = 0x30;
    probe.send_to(&v3, target).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = probe.recv_from(&mut buf).expect("an answer to version 3");
    assert_eq!(buf[..4], [0; 4], "non-ESP marker");
    let answer = ikev2::decode_message(&buf[4..n]).unwrap();
    assert_eq!(answer.header.spi_i, 0x3333_0000_0000_0001);
    assert!(answer.header.is_response());
    assert!(matches!(&answer.payloads[..], [Payload::Notify(n)] if n.ty == NotifyType::INVALID_MAJOR_VERSION));

    // One line per source at once, one summary per source when the window ends.
    std::thread::sleep(control::drops::DROP_LOG_WINDOW + Duration::from_secs(1));
    let log = gw.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("no_proposal_chosen")).collect();
    assert!(
        lines
            .iter()
            .all(|l| l.contains("WARN") && l.contains("refused IKE_SA_INIT")),
        "{lines:#?}"
    );
    for ip in SOURCES {
        let from: Vec<&&str> = lines.iter().filter(|l| l.contains(ip)).collect();
        assert!((2..=4).contains(&from.len()), "lines for {ip}: {from:#?}");
        assert!(
            from[0].contains("we accept [aes256gcm16-prfsha256-x25519]"),
            "{}",
            from[0]
        );
        assert!(from.iter().any(|l| l.contains("more in the last 10 s")), "{from:#?}");
    }
    assert!(
        lines.len() <= 3 * SOURCES.len(),
        "{} lines for {requests} requests",
        lines.len()
    );
    assert!(!log.contains("IKE_SA_INIT rejected"), "no second line per request");
    let (unsupported, _) = drops(&gw, "unsupported_version");
    assert_eq!(unsupported, 1);

    // Prometheus has the same counts by reason.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    let metric = |reason: &str| -> u64 {
        body.lines()
            .filter(|l| l.starts_with("ironsa_ike_dropped_total{") && l.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(metric("no_proposal_chosen"), refused, "{body}");
    assert_eq!(metric("unsupported_version"), 1, "{body}");
}

//! The daemon listening on wildcard addresses (`0.0.0.0`, `::`): initiators
//! (the bundled generator) reach it at 127.0.0.1, 127.0.0.2 and ::1; every
//! IKE SA records the address its requests were sent to, and the replies left
//! from that address: the initiators' NAT detection (which hashes the source
//! address of our IKE_SA_INIT response) found no NAT, so no SA moved to the
//! NAT-T port. A daemon on wildcards also initiates from the address the
//! routing table picks. Needs root (TUN device, raw ESP socket).

mod support;

use std::net::SocketAddr;

use ironsa_bench::ikegen::options::Settings;
use ironsa_bench::ikegen::run;
use serde_json::json;
use support::Ironsa;
use support::Need;
use support::util::free_udp_port_pair;

const PSK: &str = "wildcard-Zq8#kP2!vR9@wX4$yT7&uN1*";

fn gateway(ports: (u16, u16), tun: &str) -> Ironsa {
    Ironsa::start(
        &format!(
            r#"
[daemon]
listen = ["0.0.0.0", "::"]
ike_port = {}
nat_port = {}
shards = 2
control_socket = "SOCKET"
log_level = "info"

[fastpath]
backend = "software"
tun_name = "{tun}"
install_routes = false

[[connection]]
name = "rw"
remote_addrs = ["%any"]
local_id = "gw@wild.test"
remote_id = "*@wild.test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["10.0.0.0/8", "fd00::/16"]
remote_ts = ["0.0.0.0/0", "::/0"]
esp_proposals = "aes256gcm16"
"#,
            ports.0, ports.1
        ),
        None,
    )
}

/// `tunnels` IKE SAs from `source` to `remote`, as users `<user><n>@wild.test`.
fn connect(remote: SocketAddr, source: &str, tunnels: u64, user: &str) {
    let s = Settings {
        remote: Some(remote),
        source: Some(vec![source.into()]),
        tunnels: Some(tunnels),
        concurrency: Some(8),
        local_id: Some(format!("{user}{{n}}@wild.test")),
        remote_id: Some("gw@wild.test".into()),
        psk: Some(PSK.into()),
        retransmit_timeout: Some(1.0),
        retransmit_tries: Some(3),
        timeout: Some(30.0),
        ..Settings::default()
    };
    let report = run(&s.resolve().unwrap(), None).unwrap();
    assert_eq!(report.established, tunnels, "to {remote}: {}", report.render_text());
}

#[test]
fn wildcard_listen_answers_from_the_address_each_request_came_to() {
    if support::skip_unless(&[Need::Root]) {
        return;
    }
    let ports = free_udp_port_pair().unwrap();
    let gw = gateway(ports, "ironsa-wild0");
    let targets: Vec<(SocketAddr, &str)> = vec![
        (format!("127.0.0.1:{}", ports.0).parse().unwrap(), "127.0.8.0/29"),
        (format!("127.0.0.2:{}", ports.0).parse().unwrap(), "127.0.9.0/29"),
        (format!("[::1]:{}", ports.0).parse().unwrap(), "::1"),
    ];
    // Other users per address: INITIAL_CONTACT would replace the SAs of the same user.
    for (i, (remote, source)) in targets.iter().enumerate() {
        connect(*remote, source, 6, &format!("site{i}-user"));
    }
    let sas = gw.call(json!({"cmd": "sas"})).as_array().cloned().unwrap_or_default();
    assert_eq!(sas.len(), 18, "{sas:#?}");
    for (remote, _) in &targets {
        let here: Vec<_> = sas
            .iter()
            .filter(|sa| sa["local"].as_str() == Some(&remote.to_string()))
            .collect();
        assert_eq!(here.len(), 6, "SAs with local address {remote}: {sas:#?}");
        for sa in here {
            assert_eq!(sa["state"], "ESTABLISHED", "{sa:#?}");
            assert_eq!(sa["nat_t"], false, "no NAT seen by the initiator: {sa:#?}");
        }
    }
}

#[test]
fn wildcard_listen_initiates_from_the_routed_address() {
    if support::skip_unless(&[Need::Root]) {
        return;
    }
    let gw_ports = free_udp_port_pair().unwrap();
    let my_ports = free_udp_port_pair().unwrap();
    let gw = gateway(gw_ports, "ironsa-wild1");
    // A second daemon, also on wildcards and without a fastpath, initiates to 127.0.0.2.
    let me = Ironsa::start(
        &format!(
            r#"
[daemon]
listen = ["0.0.0.0"]
ike_port = {}
nat_port = {}
shards = 1
control_socket = "SOCKET"

[[connection]]
name = "out"
remote_addrs = ["127.0.0.2"]
remote_port = {}
remote_nat_port = {}
local_id = "out@wild.test"
remote_id = "gw@wild.test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["10.99.0.0/24"]
remote_ts = ["10.0.0.0/8"]
esp_proposals = "aes256gcm16"
"#,
            my_ports.0, my_ports.1, gw_ports.0, gw_ports.1
        ),
        None,
    );
    me.call(json!({"cmd": "initiate", "connection": "out"}));
    let timeout = std::time::Duration::from_secs(10);
    let ours = me.wait_sas(timeout, |s| s.iter().any(|s| s["state"] == "ESTABLISHED"));
    let ours = ours.iter().find(|s| s["state"] == "ESTABLISHED").unwrap();
    // Loopback routes 127.0.0.2 from 127.0.0.1.
    assert_eq!(ours["local"], format!("127.0.0.1:{}", my_ports.0), "{ours:#?}");
    assert_eq!(ours["nat_t"], false, "{ours:#?}");
    let theirs = gw.wait_sas(timeout, |s| s.iter().any(|s| s["state"] == "ESTABLISHED"));
    let theirs = theirs.iter().find(|s| s["state"] == "ESTABLISHED").unwrap();
    assert_eq!(theirs["local"], format!("127.0.0.2:{}", gw_ports.0), "{theirs:#?}");
    assert_eq!(theirs["remote"], format!("127.0.0.1:{}", my_ports.0), "{theirs:#?}");
    assert_eq!(theirs["nat_t"], false, "{theirs:#?}");
}

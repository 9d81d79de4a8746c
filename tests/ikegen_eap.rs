//! ikegen's EAP-MSCHAPv2 road warriors against the `ironsa` daemon: local
//! users from its users file, virtual IPs from a `[[pool]]` smaller than
//! the crowd. Every user passes EAP in its four round trips; those the pool
//! has room for get distinct addresses (the daemon's `pools` agrees), the
//! rest are refused with INTERNAL_ADDRESS_FAILURE, and the report says so
//! in text and JSON. Needs root (TUN device of the software fastpath).

mod support;

use std::os::unix::fs::PermissionsExt;

use ironsa_bench::ikegen::options::Settings;
use ironsa_bench::ikegen::run;
use serde_json::json;
use support::util::free_udp_port_pair;
use support::{Ironsa, Need};

const PSK: &str = "ikegen-eap-gateway-Zq8#kP2!vR9@wX4$yT7";
const PASSWORD: &str = "ikegen-eap-users-password-1";
const USERS: u64 = 60;
/// Fifty addresses for sixty users.
const POOL: &str = "10.77.0.1-10.77.0.50";

#[test]
fn eap_mschapv2_road_warriors_get_pool_addresses_until_the_pool_is_exhausted() {
    if support::skip_unless(&[Need::Root]) {
        return;
    }
    let secrets = tempfile::tempdir().unwrap();
    let users = secrets.path().join("users.toml");
    let table: String = (0..USERS)
        .map(|n| format!("[[user]]\nname = \"user{n}\"\npassword = \"{PASSWORD}\"\n"))
        .collect();
    std::fs::write(&users, table).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ports = free_udp_port_pair().unwrap();
    let gw = Ironsa::start(
        &format!(
            r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {ike}
nat_port = {nat}
shards = 2
control_socket = "SOCKET"
log_level = "info"

[fastpath]
backend = "software"
tun_name = "ironsa-eapgen"
install_routes = false

[eap]
users_file = "{users}"

[[pool]]
name = "rw"
addrs = ["{POOL}"]

[[connection]]
name = "rw"
remote_addrs = ["%any"]
local_id = "gw@eap.test"
remote_id = "%any"
psk = "{PSK}"
remote_auth = "eap-mschapv2"
eap_id = "%any"
ike_proposals = "aes256gcm16-prfsha256-x25519"
pools = ["rw"]

[[connection.child]]
name = "net"
local_ts = ["10.0.0.0/8"]
remote_ts = "dynamic"
esp_proposals = "aes256gcm16"
"#,
            ike = ports.0,
            nat = ports.1,
            users = users.display(),
        ),
        None,
    );
    let settings = Settings {
        remote: Some(format!("127.0.0.1:{}", ports.0).parse().unwrap()),
        source: Some(vec!["127.0.9.0/28".into()]),
        tunnels: Some(USERS),
        concurrency: Some(20),
        local_id: Some("road{n}@eap.test".into()),
        remote_id: Some("gw@eap.test".into()),
        psk: Some(PSK.into()),
        eap_user: Some("user{n}".into()),
        eap_password: Some(PASSWORD.into()),
        vip: Some(true),
        remote_ts: Some(vec!["10.0.0.0/8".into()]),
        retransmit_timeout: Some(2.0),
        retransmit_tries: Some(5),
        timeout: Some(90.0),
        ..Settings::default()
    };
    let report = run(&settings.resolve().unwrap(), None).unwrap();
    let text = report.render_text();
    eprintln!("{text}");
    assert!(report.is_consistent(), "{text}");
    assert_eq!(report.established, 50, "one IKE SA per pool address: {text}");
    assert_eq!(
        report.failures.get("INTERNAL_ADDRESS_FAILURE"),
        Some(&10),
        "the users the pool has no room for: {text}"
    );
    let e = report.eap.as_ref().expect("EAP section");
    // Refused users ran EAP too: all sixty, four round trips each.
    assert_eq!(e.round_trips, 4 * USERS, "{text}");
    assert!(e.latency_ms.p50 > 0.0 && e.latency_ms.is_monotonic(), "{text}");
    let a = report.addresses.as_ref().expect("address section");
    assert_eq!(
        (a.requested, a.assigned, a.unique, a.refused),
        (60, 50, 50, 10),
        "{text}"
    );
    assert!(
        text.contains("virtual IPs: requested 60  assigned 50  unique 50  refused 10"),
        "{text}"
    );
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["eap"]["method"], "eap-mschapv2");
    assert_eq!(v["addresses"]["refused"], 10);
    let pools = gw.call(json!({"cmd": "pools"}));
    let rw = &pools.as_array().unwrap()[0];
    assert_eq!(rw["name"], "rw");
    assert_eq!(
        rw["leases"].as_array().map(Vec::len),
        Some(50),
        "the daemon leased every address once: {rw}"
    );
}

//! Virtual IPs with a real strongSwan (charon + kernel-libipsec in a
//! network namespace, ironsa's software fastpath in the other):
//! - ironsa as gateway: charon road warriors with `vips = 0.0.0.0` get an
//!   address and the DNS server from an ironsa `[[pool]]`, ping from it to a
//!   host behind the gateway through the tunnel (one kernel route for the
//!   pool, none per client), get the same address back on reconnect, and
//!   are refused with INTERNAL_ADDRESS_FAILURE once the pool is exhausted;
//! - ironsa as client of a charon gateway with a pool: it shows the address
//!   and DNS server it got and sends from the virtual IP.
//!
//! Needs root, iproute2, iputils-ping, curl and the strongSwan packages.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Need;
use support::netns::{INNER_A, INNER_B, OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::{AuthRound, Charon, Child, Connection, Ironsa, KernelBackend, NetnsPair, Secret, Target};

const PSK: &str = "a-long-random-test-secret-for-ironsa";
const T: Duration = Duration::from_secs(10);
/// ironsa's pool: two addresses, one /31.
const POOL: &str = "10.9.0.10-10.9.0.11";
const DNS: &str = "10.1.0.53";
const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// Prometheus port of the gateway, inside its own namespace.
const METRICS_PORT: u16 = 9500;

fn gateway_config() -> String {
    format!(
        r#"
[daemon]
listen = ["{OUTER_A}"]
shards = 2
control_socket = "SOCKET"
metrics = "127.0.0.1:{METRICS_PORT}"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[[pool]]
name = "rw"
addrs = ["{POOL}"]
dns = ["{DNS}"]
subnets = ["{SUBNET_A}"]

[[connection]]
name = "rw"
local_id = "gw@test"
remote_id = "*@test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"
pools = ["rw"]

[[connection.child]]
name = "net"
local_ts = ["{SUBNET_A}"]
remote_ts = "dynamic"
esp_proposals = "aes256gcm16"
"#
    )
}

/// charon in B with one road-warrior connection per user, each asking for an address.
fn road_warriors(ns: &NetnsPair) -> Charon {
    let b = USERS.iter().fold(
        Charon::builder("rw")
            .setting("install_virtual_ip", "yes")
            .kernel(KernelBackend::Libipsec {
                netns: ns.b.name().into(),
            }),
        |b, user| {
            b.connection(
                Connection::new(user, OUTER_B, OUTER_A)
                    .proposals(&["aes256gcm16-prfsha256-x25519"])
                    .set("vips", "0.0.0.0")
                    .local(AuthRound::psk(&format!("{user}@test")))
                    .remote(AuthRound::psk("gw@test"))
                    .child(Child::new(user, "dynamic", SUBNET_A).esp_proposals(&["aes256gcm16"])),
            )
        },
    );
    let ids: Vec<String> = USERS
        .iter()
        .map(|u| format!("{u}@test"))
        .chain(["gw@test".into()])
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    b.secret(Secret::psk("rw", &ids, PSK)).start().unwrap()
}

fn vip_of(charon: &Charon, user: &str) -> Option<String> {
    let sas = charon.swanctl().list_sas().unwrap();
    sas.iter()
        .find(|s| s.name == user && s.state == "ESTABLISHED")
        .and_then(|s| s.local_vips.first().cloned())
}

fn connect(charon: &Charon, user: &str) -> Result<String, String> {
    charon
        .swanctl()
        .initiate(Target::Child(user), T)
        .map_err(|e| e.to_string())?;
    vip_of(charon, user).ok_or_else(|| format!("{user}: no virtual IP"))
}

fn pool_leases(ironsa: &Ironsa) -> Vec<(String, String)> {
    let pools = ironsa.call(json!({"cmd": "pools"}));
    let rw = &pools.as_array().unwrap()[0];
    assert_eq!(rw["name"], "rw");
    assert_eq!(rw["size"], 2);
    rw["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["identity"].as_str().unwrap().to_string(),
                l["address"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn charon_road_warriors_get_pool_addresses_and_dns_and_ping_through() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping"), Need::Tool("curl")]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let ironsa = Ironsa::start(&gateway_config(), Some(ns.a.name()));
    let charon = road_warriors(&ns);

    let alice = connect(&charon, "alice").unwrap_or_else(|e| {
        charon.dump_log();
        ironsa.dump_log();
        panic!("{e}")
    });
    assert_eq!(alice, "10.9.0.10");
    assert!(
        charon.log_contains(&format!("installing new virtual IP {alice}")),
        "charon installed the address"
    );
    assert!(
        charon.log_contains("INTERNAL_IP4_DNS"),
        "charon received the DNS server:\n{}",
        charon.log_tail(40)
    );
    let sas = ironsa.wait_sas(T, |s| s.len() == 1);
    assert_eq!(sas[0]["remote_vips"], json!([alice]));
    assert_eq!(
        sas[0]["children"][0]["remote_ts"],
        json!([format!("{alice}/32")]),
        "remote_ts = dynamic narrowed to the virtual IP"
    );

    // From the virtual IP to a host behind the gateway, through the tunnel.
    let (sent, got) = support::traffic::ping(&ns.b, &alice, INNER_A, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping from the virtual IP through the tunnel");
    let (packets_in, packets_out) = ironsa.child_packets();
    assert!(
        packets_in >= 5 && packets_out >= 5,
        "{packets_in} in, {packets_out} out"
    );
    // The pool is one route into the TUN device; the client has none of its own.
    let routes = ns.a.exec(&["ip", "route", "show", "table", "4500"]).unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(routes.contains("10.9.0.10/31 dev ironsa0"), "pool route: {routes}");
    assert!(!routes.contains("10.9.0.10 dev"), "no per-client route: {routes}");

    let bob = connect(&charon, "bob").unwrap();
    assert_eq!(bob, "10.9.0.11");
    assert_eq!(
        pool_leases(&ironsa),
        [("alice@test".into(), alice.clone()), ("bob@test".into(), bob.clone())]
    );

    // Alice leaves and comes back: her address again.
    charon.swanctl().terminate(Target::Ike("alice")).unwrap();
    ironsa.wait_sas(T, |s| s.len() == 1);
    assert_eq!(pool_leases(&ironsa), [("bob@test".into(), bob.clone())]);
    assert_eq!(connect(&charon, "alice").unwrap(), alice, "same address on reconnect");

    // Both addresses leased: carol is refused, with the reason on both sides.
    let refused = charon.swanctl().initiate(Target::Child("carol"), T);
    assert!(refused.is_err(), "carol refused: {refused:?}");
    assert_eq!(vip_of(&charon, "carol"), None);
    charon
        .wait_for_log("received INTERNAL_ADDRESS_FAILURE notify, no CHILD_SA built", T)
        .unwrap_or_else(|e| panic!("{e}:\n{}", charon.log_tail(30)));
    let log = ironsa.log();
    assert!(
        log.lines()
            .any(|l| l.contains("address pool 'rw' is exhausted") && l.contains("carol@test")),
        "one log line naming the pool and the client:\n{log}"
    );
    // charon keeps the childless IKE SA or deletes it; either way carol
    // got no address and no CHILD_SA.
    let sas = ironsa.sas();
    assert!(
        sas.iter()
            .all(|sa| sa["peer_id"] != "carol@test" || (sa["children"] == json!([]) && sa.get("remote_vips").is_none())),
        "{sas:?}"
    );

    assert_eq!(ironsa.call(json!({"cmd": "pools"}))[0]["used"], 2);
    let metrics =
        ns.a.exec(&["curl", "-sf", &format!("http://127.0.0.1:{METRICS_PORT}/metrics")])
            .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("ironsa_pool_size{pool=\"rw\"} 2"), "{metrics}");
    assert!(metrics.contains("ironsa_pool_used{pool=\"rw\"} 2"), "{metrics}");
}

#[test]
fn ironsa_client_gets_an_address_and_dns_from_a_charon_gateway() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping")]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let charon = Charon::builder("gw")
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .pool("rw", &[("addrs", "10.8.0.0/28"), ("dns", "10.2.0.53")])
        .connection(
            Connection::new("rw", OUTER_B, "%any")
                .proposals(&["aes256gcm16-prfsha256-x25519"])
                .set("pools", "rw")
                .local(AuthRound::psk("gw@test"))
                .remote(AuthRound::psk("client@test"))
                .child(Child::new("net", SUBNET_B, "dynamic").esp_proposals(&["aes256gcm16"])),
        )
        .secret(Secret::psk("rw", &["client@test", "gw@test"], PSK))
        .start()
        .unwrap();
    let config = format!(
        r#"
[daemon]
listen = ["{OUTER_A}"]
shards = 1
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[[connection]]
name = "home"
remote_addrs = ["{OUTER_B}"]
local_id = "client@test"
remote_id = "gw@test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"
vips = ["0.0.0.0"]

[[connection.child]]
name = "net"
local_ts = "dynamic"
remote_ts = ["{SUBNET_B}"]
esp_proposals = "aes256gcm16"
"#
    );
    let ironsa = Ironsa::start(&config, Some(ns.a.name()));
    let answer = ironsa.request(json!({"cmd": "initiate", "connection": "home", "timeout": 10}));
    assert_eq!(answer["ok"], true, "{answer}");
    let sas: Vec<Value> = ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
    });
    assert_eq!(sas[0]["local_vips"], json!(["10.8.0.1"]), "{}", sas[0]);
    assert_eq!(sas[0]["dns"], json!(["10.2.0.53"]));
    assert_eq!(sas[0]["children"][0]["local_ts"], json!(["10.8.0.1/32"]));
    let charon_sas = charon.swanctl().list_sas_text().unwrap();
    assert!(charon_sas.contains("10.8.0.1"), "{charon_sas}");

    // A host in A sends from the virtual IP ironsa installed.
    let (sent, got) = support::traffic::ping(&ns.a, "10.8.0.1", INNER_B, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping from the virtual IP through the tunnel");
}

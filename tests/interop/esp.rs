//! ESP interop with a real ESP peer: ironsa's software fastpath (TUN device,
//! UDP 4500 with batching) in one network namespace, strongSwan's user-space
//! ESP (charon + kernel-libipsec, which sends ESP only inside UDP 4500) in the
//! other. The CHILD_SA is negotiated by ironsa's IKEv2 core. Traffic (ping
//! and a bulk TCP transfer) flows both ways with AES-GCM-256 and with
//! AES-CBC-128 + HMAC-SHA-256, through CHILD_SA rekeys without loss; the
//! Wireshark key log lets tshark decrypt ironsa's ESP with a good ICV.
//!
//! Needs root, iproute2, iputils-ping, iperf3, tshark and the strongSwan packages.

#[path = "../support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Need;
use support::netns::{INNER_A, INNER_B, OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::{AuthRound, Charon, Child, Connection, Ironsa, KernelBackend, NetnsPair, Secret, Target};

const PSK: &str = "a-long-random-test-secret-for-ironsa";
const T: Duration = Duration::from_secs(10);

fn ironsa_config(esp: &str) -> String {
    ironsa_config_with(esp, "")
}

fn ironsa_config_with(esp: &str, child_extra: &str) -> String {
    format!(
        r#"
[daemon]
listen = ["{OUTER_A}"]
shards = 1
control_socket = "SOCKET"
keylog = "DIR/esp-keys.txt"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[[connection]]
name = "swan"
remote_addrs = ["{OUTER_B}"]
local_id = "a@test"
remote_id = "b@test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["{SUBNET_A}"]
remote_ts = ["{SUBNET_B}"]
esp_proposals = "{esp}"
{child_extra}
"#
    )
}

fn charon(ns: &NetnsPair, esp: &str) -> Charon {
    charon_with(ns, esp, &[])
}

/// charon with extra `charon.*` settings of strongswan.conf.
fn charon_with(ns: &NetnsPair, esp: &str, settings: &[(&str, &str)]) -> Charon {
    settings
        .iter()
        .fold(Charon::builder("esp"), |b, (k, v)| b.setting(k, v))
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .connection(
            Connection::new("ironsa", OUTER_B, OUTER_A)
                .proposals(&["aes256gcm16-prfsha256-x25519"])
                .local(AuthRound::psk("b@test"))
                .remote(AuthRound::psk("a@test"))
                .child(
                    Child::new("net", SUBNET_B, SUBNET_A)
                        .mode("tunnel")
                        .esp_proposals(&[esp]),
                ),
        )
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap()
}

fn up(ns: &NetnsPair, charon: &Charon, ironsa: &Ironsa) -> Value {
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    charon
        .swanctl()
        .wait_for_sas(T, |s| s.len() == 1 && s[0].installed_children().len() == 1)
        .unwrap();
    let sas = ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
    });
    let _ = ns;
    sas[0].clone()
}

fn exercise(esp: &str) {
    let ns = NetnsPair::new().unwrap();
    let charon = charon(&ns, esp);
    let ironsa = Ironsa::start(&ironsa_config(esp), Some(ns.a.name()));
    let sa = up(&ns, &charon, &ironsa);
    let (sent, got) = support::traffic::ping(&ns.a, INNER_A, INNER_B, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping through the tunnel");
    let down = support::traffic::iperf(&ns, false, 2, 1);
    let upl = support::traffic::iperf(&ns, true, 2, 1);
    eprintln!("{esp}: TCP A->B {down:.0} Mbit/s, B->A {upl:.0} Mbit/s");
    assert!(down > 10.0 && upl > 10.0, "bulk TCP both ways: {down} / {upl} Mbit/s");

    // Counters show the traffic on our side.
    let list = ironsa.sas();
    let c = &list[0]["children"][0]["counters"];
    assert!(
        c["packets_in"].as_u64().unwrap() > 100 && c["packets_out"].as_u64().unwrap() > 100,
        "{c}"
    );

    // Rekeys from both sides during a steady ping lose nothing.
    let pinger = {
        let name = ns.a.name().to_string();
        std::thread::spawn(move || {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", &name, "ping", "-q", "-c", "60", "-i", "0.05", "-W", "2", "-I", INNER_A, INNER_B,
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    charon.swanctl().rekey(Target::Child("net")).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let local_spi = if sa["role"] == "initiator" {
        sa["spi_i"].clone()
    } else {
        sa["spi_r"].clone()
    };
    let child = ironsa.sas()[0]["children"][0]["spi_in"].clone();
    ironsa.call(json!({"cmd": "rekey", "spi": local_spi, "child": child}));
    let out = pinger.join().unwrap();
    assert!(
        out.contains("60 packets transmitted, 60 received"),
        "no loss through two rekeys: {out}"
    );
    let after = ironsa.wait_sas(T, |s| s[0]["children"].as_array().is_some_and(|c| c.len() == 1));
    assert_ne!(
        after[0]["children"][0]["spi_in"], sa["children"][0]["spi_in"],
        "rekeyed"
    );
}

#[test]
fn aes256gcm_ping_bulk_and_rekey() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping"), Need::Tool("iperf3")]) {
        return;
    }
    exercise("aes256gcm16");
}

#[test]
fn aes128_cbc_hmac_sha256_ping_bulk_and_rekey() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping"), Need::Tool("iperf3")]) {
        return;
    }
    exercise("aes128-sha256");
}

#[test]
fn tshark_decrypts_ironsa_esp_with_the_key_log() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping"), Need::Tool("tshark")]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let charon = charon(&ns, "aes256gcm16");
    let ironsa = Ironsa::start(&ironsa_config("aes256gcm16"), Some(ns.a.name()));
    up(&ns, &charon, &ironsa);
    let pcap = ironsa.dir().join("esp.pcap");
    let veth =
        ns.a.exec(&[
            "sh",
            "-c",
            "ip -o link show type veth | head -1 | cut -d: -f2 | cut -d@ -f1",
        ])
        .unwrap();
    let veth = String::from_utf8_lossy(&veth.stdout).trim().to_string();
    let mut cap = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.a.name(),
            "tshark",
            "-q",
            "-i",
            &veth,
            "-f",
            "udp port 4500",
            "-c",
            "6",
            "-w",
        ])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    support::traffic::wait_capturing(&pcap);
    support::traffic::ping(&ns.a, INNER_A, INNER_B, 3, "0.2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cap.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = cap.kill();
    let keys = std::fs::read_to_string(ironsa.dir().join("esp-keys.txt")).unwrap();
    assert_eq!(keys.lines().count(), 2, "one line per direction: {keys}");
    let uat: Vec<String> = keys.lines().map(|l| format!("uat:esp_sa:{l}")).collect();
    let mut args = vec![
        "-r".to_string(),
        pcap.display().to_string(),
        "-o".into(),
        "esp.enable_encryption_decode:TRUE".into(),
        "-o".into(),
        "esp.enable_authentication_check:TRUE".into(),
    ];
    for u in &uat {
        args.push("-o".into());
        args.push(u.clone());
    }
    args.extend([
        "-Y".into(),
        "esp".into(),
        "-T".into(),
        "fields".into(),
        "-e".into(),
        "ip.src".into(),
        "-e".into(),
        "esp.icv_good".into(),
        "-e".into(),
        "icmp.type".into(),
    ]);
    let out = Command::new("tshark").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = text.lines().filter(|l| l.starts_with(OUTER_A)).collect();
    assert!(
        !ours.is_empty(),
        "captured ironsa's ESP: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for l in &ours {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.get(1).copied(), Some("1"), "ICV good: {l}");
        assert_eq!(f.get(2).copied(), Some("8"), "decrypted to an ICMP echo request: {l}");
    }
}

/// 100 echo requests and 100 replies cross the child's SAs: its soft packet
/// lifetime (60) makes the fastpath ask for a rekey, which loses nothing.
/// With `ike_rekey_first`, the IKE SA is rekeyed before: the request must
/// reach the child on the new IKE SA.
fn packet_lifetime_rekeys_the_child(ike_rekey_first: bool) {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping")]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let charon = charon(&ns, "aes256gcm16");
    let ironsa = Ironsa::start(
        &ironsa_config_with("aes256gcm16", "rekey_packets = 60"),
        Some(ns.a.name()),
    );
    let sa = up(&ns, &charon, &ironsa);
    let first = sa["children"][0]["spi_in"].clone();
    if ike_rekey_first {
        ironsa.call(json!({"cmd": "rekey", "target": "swan"}));
        ironsa.wait_sas(T, |s| {
            s.len() == 1 && s[0]["spi_i"] != sa["spi_i"] && s[0]["state"] == "ESTABLISHED"
        });
    }
    let (sent, got) = support::traffic::ping(&ns.a, INNER_A, INNER_B, 100, "0.01");
    assert_eq!((sent, got), (100, 100), "no loss across the lifetime-triggered rekey");
    ironsa.wait_sas(T, |s| {
        s[0]["children"]
            .as_array()
            .is_some_and(|c| c.len() == 1 && c[0]["spi_in"] != first)
    });
    assert!(
        ironsa.log().contains("fastpath lifetime reached"),
        "the fastpath asked for the rekey"
    );
}

#[test]
fn packet_lifetime_in_the_fastpath_triggers_a_rekey_without_loss() {
    packet_lifetime_rekeys_the_child(false);
}

#[test]
fn packet_lifetime_rekeys_the_child_after_an_ike_rekey() {
    packet_lifetime_rekeys_the_child(true);
}

/// Both sides rekey the CHILD_SA at once (RFC 7296 §2.8.1) until ironsa has
/// won and lost such a collision; after each, pings cross both ways and the
/// surviving child shows no drops. charon delays what it sends in
/// CREATE_CHILD_SA exchanges, so its rekey request and ours cross.
fn rekey_collisions_keep_traffic(esp: &str) {
    if !support::util::root_or_skip("rekey_collisions_keep_traffic") {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let charon = charon_with(&ns, esp, &[("send_delay", "700"), ("send_delay_type", "36")]);
    let ironsa = Ironsa::start(&ironsa_config(esp), Some(ns.a.name()));
    let sa = up(&ns, &charon, &ironsa);
    support::traffic::ping_both_ways(&ns, 2, "0.2");
    let local_spi = if sa["role"] == "initiator" {
        sa["spi_i"].clone()
    } else {
        sa["spi_r"].clone()
    };
    let (mut won, mut lost) = (0, 0);
    for round in 0..16 {
        let count = |what: &str| ironsa.log().matches(what).count();
        let (won_before, lost_before) = (count("rekey collision won"), count("rekey collision lost"));
        let old = ironsa.sas()[0]["children"][0]["spi_in"].clone();
        let theirs = std::thread::scope(|s| {
            let rekey = s.spawn(|| charon.swanctl().rekey(Target::Child("net")));
            // charon's request waits in its sender; ours reaches it meanwhile.
            std::thread::sleep(Duration::from_millis(200));
            ironsa.call(json!({"cmd": "rekey", "target": local_spi, "child": old}));
            rekey.join().unwrap()
        });
        theirs.unwrap();
        let settled = |s: &[Value]| {
            s.len() == 1
                && s[0]["children"]
                    .as_array()
                    .is_some_and(|c| c.len() == 1 && c[0]["state"] == "INSTALLED" && c[0]["spi_in"] != old)
        };
        let ours = ironsa.wait_sas(Duration::from_secs(20), settled);
        let child = ours[0]["children"][0].clone();
        charon
            .swanctl()
            .wait_for_sas(T, |s| {
                s.len() == 1
                    && s[0].installed_children().len() == 1
                    && format!("{:08x}", s[0].installed_children()[0].spi_out) == child["spi_in"].as_str().unwrap()
            })
            .unwrap();
        let (w, l) = (
            count("rekey collision won") - won_before,
            count("rekey collision lost") - lost_before,
        );
        // charon may refuse our request (TEMPORARY_FAILURE) rather than resolve
        // the collision: then no winner, but the traffic checks still apply.
        assert!(w + l <= 1, "round {round}: one collision, resolved once");
        won += w;
        lost += l;
        support::traffic::ping_both_ways(&ns, 3, "0.1");
        let k = &ironsa.sas()[0]["children"][0]["counters"];
        assert!(
            k["packets_out"].as_u64().unwrap() >= 3,
            "round {round}: sent on the survivor: {k}"
        );
        assert_eq!(k["drops"], 0, "round {round}: {k}");
        if won > 0 && lost > 0 {
            return;
        }
    }
    panic!("16 rekey collisions with charon without both outcomes ({won} won, {lost} lost)");
}

#[test]
fn rekey_collisions_won_and_lost_keep_traffic() {
    rekey_collisions_keep_traffic("aes256gcm16");
}

#[test]
fn rekey_collisions_won_and_lost_with_pfs_keep_traffic() {
    rekey_collisions_keep_traffic("aes256gcm16-x25519");
}

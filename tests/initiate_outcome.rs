//! `ironsa initiate` as an operator runs it, ironsa to ironsa on loopback:
//! it waits for the outcome and exits non-zero with the reason (a proposal
//! the peer refuses names what we offered), and an initiator listening on
//! several addresses sends from the one the route to the peer uses, or from
//! the connection's `local_addrs`. Needs no root (no data plane).

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use support::Ironsa;
use support::util::free_udp_port_pair;

const PSK: &str = "Zq8#kP2!vR9@wX4$yT7&uN1*eB5^";
const T: Duration = Duration::from_secs(10);

/// The gateway on 127.0.0.2 answers c1@test only from 127.0.0.1 and
/// c3@test only from 127.0.0.3.
fn gateway(ports: (u16, u16)) -> String {
    let conn = |name: &str, from: &str, id: &str| {
        format!(
            r#"
[[connection]]
name = "{name}"
remote_addrs = ["{from}"]
local_id = "gw@test"
remote_id = "{id}"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["10.0.0.0/8"]
remote_ts = ["10.99.0.0/16"]
esp_proposals = "aes256gcm16"
"#
        )
    };
    format!(
        "[daemon]\nlisten = [\"127.0.0.2\"]\nike_port = {}\nnat_port = {}\nshards = 2\ncontrol_socket = \"SOCKET\"\n{}{}",
        ports.0,
        ports.1,
        conn("from1", "127.0.0.1", "c1@test"),
        conn("from3", "127.0.0.3", "c3@test"),
    )
}

/// Listens on 127.0.0.3 first, then 127.0.0.1 (the routed source towards 127.0.0.2).
fn initiator(ports: (u16, u16), gw: (u16, u16)) -> String {
    let conn = |name: &str, id: &str, ike: &str, esp: &str, extra: &str, port: u16| {
        let psk = if name == "badpsk" {
            "another-long-random-secret"
        } else {
            PSK
        };
        format!(
            r#"
[[connection]]
name = "{name}"
remote_addrs = ["127.0.0.2"]
{extra}
remote_port = {port}
remote_nat_port = {gn}
local_id = "{id}"
remote_id = "gw@test"
psk = "{psk}"
ike_proposals = "{ike}"

[[connection.child]]
name = "net"
local_ts = ["10.99.1.0/24"]
remote_ts = ["10.0.0.0/8"]
esp_proposals = "{esp}"
"#,
            gn = gw.1
        )
    };
    let gcm = "aes256gcm16-prfsha256-x25519";
    format!(
        "[daemon]\nlisten = [\"127.0.0.3\", \"127.0.0.1\"]\nike_port = {}\nnat_port = {}\nshards = 1\ncontrol_socket = \"SOCKET\"\n{}{}{}{}{}{}",
        ports.0,
        ports.1,
        conn("c1", "c1@test", gcm, "aes256gcm16", "", gw.0),
        conn(
            "c3",
            "c3@test",
            gcm,
            "aes256gcm16",
            "local_addrs = [\"127.0.0.3\"]",
            gw.0
        ),
        conn(
            "badike",
            "c1@test",
            "aes128-sha256-prfsha256-x25519",
            "aes256gcm16",
            "",
            gw.0
        ),
        conn("badesp", "c1@test", gcm, "aes128-sha256", "", gw.0),
        // Nothing listens on the discard port.
        conn("nobody", "c1@test", gcm, "aes256gcm16", "", 9),
        conn("badpsk", "c1@test", gcm, "aes256gcm16", "", gw.0),
    )
}

fn initiate(me: &Ironsa, connection: &str, timeout: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args([
            "--socket",
            me.socket().to_str().unwrap(),
            "initiate",
            connection,
            "--timeout",
            timeout,
        ])
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn initiate_waits_for_the_outcome_and_sends_from_the_right_address() {
    let (gw_ports, my_ports) = (free_udp_port_pair().unwrap(), free_udp_port_pair().unwrap());
    let gw = Ironsa::start(&gateway(gw_ports), None);
    let me = Ironsa::start(&initiator(my_ports, gw_ports), None);

    // Several listen addresses: the routed source (127.0.0.1), not the first listed.
    let out = initiate(&me, "c1", "10");
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        text(&out.stdout).contains("CHILD_SA 'net' established"),
        "{}",
        text(&out.stdout)
    );
    // local_addrs picks the source.
    let out = initiate(&me, "c3", "10");
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let sas = me.wait_sas(T, |s| s.iter().filter(|s| s["state"] == "ESTABLISHED").count() == 2);
    let local_of = |c: &str| {
        sas.iter()
            .find(|s| s["connection"] == c)
            .map(|s| s["local"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(local_of("c1"), format!("127.0.0.1:{}", my_ports.0));
    // Initiating a connection that is up starts no second IKE SA.
    let out = initiate(&me, "c1", "10");
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("c1 is already up"), "{}", text(&out.stdout));
    std::thread::sleep(Duration::from_millis(300));
    let now = me.sas();
    assert_eq!(now.iter().filter(|s| s["connection"] == "c1").count(), 1, "{now:#?}");
    assert_eq!(local_of("c3"), format!("127.0.0.3:{}", my_ports.0));
    let theirs = gw.wait_sas(T, |s| s.iter().filter(|s| s["state"] == "ESTABLISHED").count() == 2);
    for (conn, from) in [("from1", "127.0.0.1"), ("from3", "127.0.0.3")] {
        let sa = theirs.iter().find(|s| s["connection"] == conn).expect(conn);
        assert_eq!(sa["remote"], format!("{from}:{}", my_ports.0), "{sa:#?}");
    }

    // Our IKE rekey retires the old SA: neither side reads it as a deletion.
    let old = sas.iter().find(|s| s["connection"] == "c3").unwrap()["spi_i"].clone();
    me.call(json!({"cmd": "rekey", "spi": old}));
    me.wait_sas(T, |s| {
        s.iter().filter(|s| s["state"] == "ESTABLISHED").count() == 2 && !s.iter().any(|s| s["spi_i"] == old)
    });
    gw.wait_sas(T, |s| !s.iter().any(|s| s["spi_i"] == old));
    let mine = me.log();
    assert!(mine.contains("old IKE SA retired after its rekey"), "initiator log");
    let old_spi = old.as_str().unwrap();
    let gws = gw.log();
    let retired = gws
        .lines()
        .find(|l| l.contains("peer retired the old IKE SA after its rekey"))
        .expect("responder log names the retirement");
    assert!(retired.contains(old_spi), "{retired}");
    assert!(!gws.contains("peer deleted the IKE SA"), "not a deletion");

    // The peer refuses our IKE proposal: exit 1, naming what we offered.
    let out = initiate(&me, "badike", "10");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("peer answered NO_PROPOSAL_CHOSEN; we offered [aes128-sha256-prfsha256-x25519]"),
        "{err}"
    );
    assert!(
        me.log().contains(
            "IKE_SA_INIT rejected: peer answered NO_PROPOSAL_CHOSEN; we offered [aes128-sha256-prfsha256-x25519]"
        ),
        "the log says it too"
    );
    // The peer refuses our ESP proposal: the IKE SA is up, the tunnel is not.
    let out = initiate(&me, "badesp", "10");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("CHILD_SA 'net' failed: peer answered NO_PROPOSAL_CHOSEN; we offered [aes128-sha256]"),
        "{err}"
    );
    // A wrong PSK: the notify reads as its name.
    let out = initiate(&me, "badpsk", "10");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("peer answered AUTHENTICATION_FAILED"),
        "{}",
        text(&out.stderr)
    );
    let line = me
        .log()
        .lines()
        .find(|l| l.contains("IKE_AUTH failed"))
        .map(str::to_string)
        .expect("IKE_AUTH failure logged");
    assert!(
        line.contains("peer answered AUTHENTICATION_FAILED") && !line.contains("Some("),
        "{line}"
    );
    // Nobody answers: the timeout ends the wait.
    let out = initiate(&me, "nobody", "1");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no outcome within 1 s"),
        "{}",
        text(&out.stderr)
    );
}

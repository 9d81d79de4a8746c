//! The operator's verbs on SAs, ironsa to ironsa on loopback (no data plane,
//! no root): every child template comes up as initiator; `rekey` takes
//! either SPI of an IKE SA or of a CHILD_SA, or a connection name;
//! `initiate --child` and `terminate --child` add and delete one CHILD_SA;
//! `sas` shows DELETING while the DELETE of a terminated SA is unanswered.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::Ironsa;
use support::util::free_udp_port_pair;

const T: Duration = Duration::from_secs(10);
const PSK: &str = "Zq8#kP2!vR9@wX4$yT7&uN1*eB5^";

fn gateway(port: (u16, u16)) -> String {
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {}
nat_port = {}
shards = 2
control_socket = "SOCKET"

[[connection]]
name = "rw"
remote_addrs = ["%any"]
local_id = "gw@test"
remote_id = "*@test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["10.0.0.0/8"]
remote_ts = ["0.0.0.0/0"]
esp_proposals = "aes256gcm16"
"#,
        port.0, port.1
    )
}

/// Connection `c1` with two children, `net` and `more`.
fn branch(port: (u16, u16), gw: (u16, u16)) -> String {
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {}
nat_port = {}
shards = 2
control_socket = "SOCKET"

[[connection]]
name = "c1"
remote_addrs = ["127.0.0.1"]
remote_port = {}
remote_nat_port = {}
local_id = "c1@test"
remote_id = "gw@test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["10.99.1.0/24"]
remote_ts = ["10.0.0.0/8"]
esp_proposals = "aes256gcm16"

[[connection.child]]
name = "more"
local_ts = ["10.98.1.0/24"]
remote_ts = ["10.0.0.0/8"]
esp_proposals = "aes256gcm16"
"#,
        port.0, port.1, gw.0, gw.1
    )
}

/// The installed children of the only IKE SA, by name: (spi_in, spi_out).
fn children(sas: &[Value]) -> Vec<(String, String, String)> {
    sas.first()
        .and_then(|sa| sa["children"].as_array())
        .map(|c| {
            c.iter()
                .filter(|c| c["state"] == "INSTALLED")
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["spi_in"].as_str().unwrap_or_default().to_string(),
                        c["spi_out"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn spi_of(sas: &[Value], name: &str) -> (String, String) {
    children(sas)
        .into_iter()
        .find(|c| c.0 == name)
        .map(|c| (c.1, c.2))
        .unwrap_or_else(|| panic!("no installed child {name}: {sas:#?}"))
}

/// Both sides settled: one established IKE SA each with exactly `names` installed.
fn settled(me: &Ironsa, gw: &Ironsa, names: &[&str]) -> Vec<Value> {
    let want = |sas: &[Value]| {
        let mut got: Vec<String> = children(sas).into_iter().map(|c| c.0).collect();
        got.sort();
        let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        want.sort();
        sas.len() == 1 && sas[0]["state"] == "ESTABLISHED" && got == want
    };
    gw.wait_sas(T, |s| s.len() == 1 && children(s).len() == names.len());
    me.wait_sas(T, want)
}

fn ike_spis(sas: &[Value]) -> (String, String) {
    (
        sas[0]["spi_i"].as_str().unwrap().to_string(),
        sas[0]["spi_r"].as_str().unwrap().to_string(),
    )
}

#[test]
fn children_come_up_and_rekey_terminate_initiate_take_any_spi() {
    let (gw_ports, my_ports) = (free_udp_port_pair().unwrap(), free_udp_port_pair().unwrap());
    let gw = Ironsa::start(&gateway(gw_ports), None);
    let me = Ironsa::start(&branch(my_ports, gw_ports), None);
    me.call(json!({"cmd": "initiate", "connection": "c1"}));
    // The second child follows IKE_AUTH's with CREATE_CHILD_SA.
    let sas = settled(&me, &gw, &["net", "more"]);
    let (spi_i, spi_r) = ike_spis(&sas);
    let peer_spi = if sas[0]["role"] == "initiator" { &spi_r } else { &spi_i };

    // The IKE SA by the peer's SPI.
    let said = me.call(json!({"cmd": "rekey", "target": peer_spi}));
    assert!(said.as_str().unwrap().starts_with("rekeying IKE SA c1"), "{said}");
    let sas = me.wait_sas(T, |s| {
        s.len() == 1 && s[0]["state"] == "ESTABLISHED" && ike_spis(s) != (spi_i.clone(), spi_r.clone())
    });
    assert_eq!(children(&sas).len(), 2, "children moved to the new IKE SA");
    assert!(
        me.log().contains("old IKE SA retired after its rekey"),
        "the old SA's DELETE is logged as the rekey it is"
    );

    // A CHILD_SA by its outbound SPI (the peer's), then by its inbound one.
    for pick in [|c: (String, String)| c.1, |c: (String, String)| c.0] {
        let before = spi_of(&sas_now(&me), "more");
        me.call(json!({"cmd": "rekey", "target": pick(before.clone())}));
        let after = me.wait_sas(T, |s| {
            children(s).len() == 2 && children(s).iter().all(|c| c.0 != "more" || c.1 != before.0)
        });
        assert_ne!(spi_of(&after, "more"), before);
    }

    // A connection name, with a child by name; with a child by SPI through the CLI.
    let net = spi_of(&sas_now(&me), "net");
    me.call(json!({"cmd": "rekey", "target": "c1", "child": "net"}));
    me.wait_sas(T, |s| children(s).len() == 2 && spi_of(s, "net").0 != net.0);
    let net = spi_of(&sas_now(&me), "net");
    let sock = me.dir().join("ironsa.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args(["--socket", sock.to_str().unwrap(), "rekey", "c1", "--child", &net.1])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rekeying CHILD_SA net"));
    me.wait_sas(T, |s| children(s).len() == 2 && spi_of(s, "net").0 != net.0);

    // Names that match nothing are refused, with the reason.
    for bad in [
        json!({"cmd": "rekey", "target": "nope"}),
        json!({"cmd": "rekey", "target": "12345678"}),
        json!({"cmd": "rekey", "target": "c1", "child": "nope"}),
        json!({"cmd": "terminate", "child": "12345678"}),
        json!({"cmd": "initiate", "connection": "c1", "child": "nope"}),
    ] {
        let v = me.answer(&bad);
        assert_eq!(v["ok"], false, "{bad} -> {v}");
        assert!(!v["error"].as_str().unwrap_or_default().is_empty());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args(["--socket", sock.to_str().unwrap(), "rekey", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'nope' is neither a connection nor a hex SPI"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One CHILD_SA deleted by its inbound SPI: the IKE SA and the other child stay.
    let ike_before = ike_spis(&sas_now(&me));
    let more = spi_of(&sas_now(&me), "more");
    let said = me.call(json!({"cmd": "terminate", "child": more.0}));
    assert!(said.as_str().unwrap().starts_with("deleting CHILD_SA more"), "{said}");
    let sas = settled(&me, &gw, &["net"]);
    assert_eq!(ike_spis(&sas), ike_before);

    // ... and brought back on the same IKE SA.
    let said = me.call(json!({"cmd": "initiate", "connection": "c1", "child": "more"}));
    assert!(said.as_str().unwrap().starts_with("creating CHILD_SA more"), "{said}");
    let sas = settled(&me, &gw, &["net", "more"]);
    assert_eq!(ike_spis(&sas), ike_before);
}

#[test]
fn initiate_child_alone_and_terminate_shows_deleting() {
    let (gw_ports, my_ports) = (free_udp_port_pair().unwrap(), free_udp_port_pair().unwrap());
    let gw = Ironsa::start(&gateway(gw_ports), None);
    let me = Ironsa::start(&branch(my_ports, gw_ports), None);
    let sock = me.dir().join("ironsa.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args(["--socket", sock.to_str().unwrap(), "initiate", "c1", "--child", "more"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sas = settled(&me, &gw, &["more"]);
    let (spi_i, _) = ike_spis(&sas);

    // The gateway stops answering: our DELETE is retransmitted meanwhile.
    let pid = gw.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    wait_stopped(&pid);
    let said = me.call(json!({"cmd": "terminate", "spi": spi_i}));
    assert_eq!(said["deleted"], 1);
    let shown = me.wait_sas(T, |s| s.len() == 1 && s[0]["state"] == "DELETING");
    assert_eq!(shown[0]["spi_i"], spi_i.as_str());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sas_now(&me)[0]["state"], "DELETING", "until the peer answers");
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    me.wait_sas(Duration::from_secs(30), |s| s.is_empty());
    gw.wait_sas(T, |s| s.is_empty());
}

/// Waits until every thread of process `pid` is stopped (SIGSTOP reaches
/// the threads one by one).
fn wait_stopped(pid: &str) {
    let deadline = std::time::Instant::now() + T;
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let running = tasks.filter_map(Result::ok).any(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| s.rsplit(") ").next().map(|rest| !rest.starts_with('T')))
                .unwrap_or(false)
        });
        if !running {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sas_now(me: &Ironsa) -> Vec<Value> {
    me.sas()
}

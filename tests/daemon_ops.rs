//! Operations of the `ironsa` daemon through its real sockets, ironsa to
//! ironsa on loopback: `check` errors, SIGHUP/`reload` that keeps SAs of
//! unchanged connections, `terminate`, Prometheus metrics, and graceful
//! shutdown that deletes the SAs at the peer.

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::Ironsa;
use support::ironsa::{metric, metrics};
use support::util::free_udp_port_pair;

const T: Duration = Duration::from_secs(10);
const PSK: &str = "Zq8#kP2!vR9@wX4$yT7&uN1*eB5^";

fn responder(port: (u16, u16), metrics: u16) -> String {
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {}
nat_port = {}
shards = 2
# Sizes the shards' tables and pre-faults their allocator memory at start.
expected_tunnels = 1000
control_socket = "SOCKET"
metrics = "127.0.0.1:{metrics}"

[[connection]]
name = "rw"
remote_addrs = ["%any"]
local_id = "gw@test"
remote_id = "*@test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519, aes128-sha256-modp2048"

[[connection.child]]
name = "net"
local_ts = ["10.0.0.0/8"]
remote_ts = ["0.0.0.0/0"]
esp_proposals = "aes256gcm16, aes128-sha256"
"#,
        port.0, port.1
    )
}

fn initiator(port: (u16, u16), gw: (u16, u16), c2_ike: &str, extra: &str) -> String {
    let conn = |name: &str, ike: &str, n: u8| {
        format!(
            r#"
[[connection]]
name = "{name}"
remote_addrs = ["127.0.0.1"]
remote_port = {gp}
remote_nat_port = {gn}
local_id = "{name}@test"
remote_id = "gw@test"
psk = "{PSK}"
ike_proposals = "{ike}"

[[connection.child]]
name = "net"
local_ts = ["10.99.{n}.0/24"]
remote_ts = ["10.0.0.0/8"]
esp_proposals = "aes256gcm16"
"#,
            gp = gw.0,
            gn = gw.1
        )
    };
    format!(
        "[daemon]\nlisten = [\"127.0.0.1\"]\nike_port = {}\nnat_port = {}\nshards = 1\ncontrol_socket = \"SOCKET\"\n{}{}{}",
        port.0,
        port.1,
        conn("c1", "aes256gcm16-prfsha256-x25519", 1),
        conn("c2", c2_ike, 2),
        extra
    )
}

fn established(sas: &[serde_json::Value], conn: &str) -> Option<(String, String)> {
    sas.iter()
        .find(|s| {
            s["connection"] == conn
                && s["state"] == "ESTABLISHED"
                && s["children"].as_array().is_some_and(|c| c.len() == 1)
        })
        .map(|s| {
            (
                s["spi_i"].as_str().unwrap().to_string(),
                s["spi_r"].as_str().unwrap().to_string(),
            )
        })
}

#[test]
fn reload_keeps_unchanged_sas_and_shutdown_deletes_at_the_peer() {
    let (gw_ports, my_ports) = (free_udp_port_pair().unwrap(), free_udp_port_pair().unwrap());
    let metrics_port = free_udp_port_pair().unwrap().0;
    let gw = Ironsa::start(&responder(gw_ports, metrics_port), None);
    let mut me = Ironsa::start(&initiator(my_ports, gw_ports, "aes256gcm16-prfsha256-x25519", ""), None);
    me.call(json!({"cmd": "initiate", "connection": "c1"}));
    me.call(json!({"cmd": "initiate", "connection": "c2"}));
    let sas = me.wait_sas(T, |s| established(s, "c1").is_some() && established(s, "c2").is_some());
    let c1 = established(&sas, "c1").unwrap();
    gw.wait_sas(T, |s| s.iter().filter(|s| s["state"] == "ESTABLISHED").count() == 2);

    // Change c2, keep c1, and reload through the CLI (SIGHUP does the same).
    let cfg = me.dir().join("ironsa.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replacen(
        "ike_proposals = \"aes256gcm16-prfsha256-x25519\"\n\n[[connection.child]]\nname = \"net\"\nlocal_ts = [\"10.99.2.0/24\"]",
        "ike_proposals = \"aes128-sha256-modp2048\"\n\n[[connection.child]]\nname = \"net\"\nlocal_ts = [\"10.99.2.0/24\"]",
        1,
    );
    assert!(text.contains("aes128-sha256-modp2048"));
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args(["--socket", me.dir().join("ironsa.sock").to_str().unwrap(), "reload"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sas = me.wait_sas(T, |s| established(s, "c2").is_none());
    assert_eq!(
        established(&sas, "c1"),
        Some(c1.clone()),
        "the unchanged connection's SA is untouched"
    );
    // The changed connection negotiates its new proposal.
    me.call(json!({"cmd": "initiate", "connection": "c2"}));
    let sas = me.wait_sas(T, |s| established(s, "c2").is_some());
    let c2 = sas.iter().find(|s| s["connection"] == "c2").unwrap();
    assert_eq!(c2["algorithms"], "aes128-sha256-prfsha256-modp2048");
    assert_eq!(established(&sas, "c1"), Some(c1));

    // Metrics count what happened on the gateway.
    let body = metrics(metrics_port);
    assert_eq!(metric(&body, "ironsa_ike_established_total"), 3, "{body}");
    assert!(body.contains("ironsa_half_open_sas{shard=\"0\"}"));

    // Graceful shutdown deletes the SAs at the gateway.
    me.stop();
    gw.wait_sas(T, |s| s.is_empty());
}

/// The hybrid IKE proposal of the post-quantum test.
const HYBRID_IKE: &str = "aes256gcm16-prfsha256-x25519-ke1_mlkem768";

/// Every key exchange of an SA shows in `ironsa sas` (JSON and text),
/// children rekeyed with IKE_FOLLOWUP_KE included, and the gateway's
/// metrics count post-quantum and classical IKE SAs apart.
#[test]
fn sas_and_metrics_show_every_key_exchange() {
    let (gw_ports, my_ports) = (free_udp_port_pair().unwrap(), free_udp_port_pair().unwrap());
    let metrics_port = free_udp_port_pair().unwrap().0;
    let gw_config = responder(gw_ports, metrics_port)
        .replace(
            "ike_proposals = \"aes256gcm16-prfsha256-x25519, aes128-sha256-modp2048\"",
            &format!("ike_proposals = \"{HYBRID_IKE}, aes256gcm16-prfsha256-x25519\""),
        )
        .replace(
            "esp_proposals = \"aes256gcm16, aes128-sha256\"",
            "esp_proposals = \"aes256gcm16-x25519-ke1_mlkem768, aes256gcm16\"",
        );
    assert!(gw_config.contains("ke1_mlkem768, aes256gcm16\""), "{gw_config}");
    let gw = Ironsa::start(&gw_config, None);
    // c1 classical; c2 hybrid, its child rekeyed with X25519 + ML-KEM-768.
    let my_config = initiator(my_ports, gw_ports, HYBRID_IKE, "").replace(
        "local_ts = [\"10.99.2.0/24\"]\nremote_ts = [\"10.0.0.0/8\"]\nesp_proposals = \"aes256gcm16\"",
        "local_ts = [\"10.99.2.0/24\"]\nremote_ts = [\"10.0.0.0/8\"]\nesp_proposals = \"aes256gcm16-x25519-ke1_mlkem768\"",
    );
    assert!(my_config.contains("aes256gcm16-x25519-ke1_mlkem768"), "{my_config}");
    let me = Ironsa::start(&my_config, None);
    me.call(json!({"cmd": "initiate", "connection": "c1"}));
    me.call(json!({"cmd": "initiate", "connection": "c2"}));
    let sas = me.wait_sas(T, |s| established(s, "c1").is_some() && established(s, "c2").is_some());
    let of = |sas: &[serde_json::Value], conn: &str| sas.iter().find(|s| s["connection"] == conn).unwrap().clone();
    let (c1, c2) = (of(&sas, "c1"), of(&sas, "c2"));
    assert_eq!(c1["key_exchanges"], json!(["x25519"]), "{c1:#}");
    assert_eq!(c1["post_quantum"], false, "{c1:#}");
    assert_eq!(c2["key_exchanges"], json!(["x25519", "ke1_mlkem768"]), "{c2:#}");
    assert_eq!(c2["post_quantum"], true, "{c2:#}");
    assert_eq!(c2["algorithms"], HYBRID_IKE, "{c2:#}");
    assert_eq!(
        c2["children"][0]["key_exchanges"],
        json!([]),
        "an IKE_AUTH child is keyed from SK_d alone: {c2:#}"
    );

    // Rekey c2's child: PFS with X25519, then ML-KEM-768 in IKE_FOLLOWUP_KE.
    let old = c2["children"][0]["spi_in"].clone();
    let local_spi = if c2["role"] == "initiator" {
        &c2["spi_i"]
    } else {
        &c2["spi_r"]
    };
    me.call(json!({"cmd": "rekey", "spi": local_spi, "child": old}));
    let rekeyed = |s: &[serde_json::Value]| {
        s.iter().any(|sa| {
            sa["connection"] == "c2"
                && sa["children"]
                    .as_array()
                    .is_some_and(|c| c.len() == 1 && c[0]["state"] == "INSTALLED" && c[0]["spi_in"] != old)
        })
    };
    let sas = me.wait_sas(T, rekeyed);
    let child = of(&sas, "c2")["children"][0].clone();
    assert_eq!(child["key_exchanges"], json!(["x25519", "ke1_mlkem768"]), "{child:#}");
    assert_eq!(child["pfs"], "x25519", "{child:#}");
    let gw_sas = gw.wait_sas(T, |s| {
        s.iter().any(|sa| {
            sa["children"]
                .as_array()
                .is_some_and(|c| c.len() == 1 && c[0]["spi_out"] == child["spi_in"])
        })
    });
    let gw_child = gw_sas
        .iter()
        .flat_map(|sa| sa["children"].as_array().unwrap())
        .find(|c| c["spi_out"] == child["spi_in"])
        .unwrap();
    assert_eq!(
        gw_child["key_exchanges"],
        json!(["x25519", "ke1_mlkem768"]),
        "{gw_child:#}"
    );

    // The text listing names them as a proposal would.
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args(["--socket", me.socket().to_str().unwrap(), "sas"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("  {HYBRID_IKE}")), "{text}");
    assert!(text.contains(" aes256gcm16/x25519-ke1_mlkem768\n"), "{text}");

    let body = metrics(metrics_port);
    assert_eq!(metric(&body, "ironsa_ike_established_post_quantum_total"), 1, "{body}");
    assert_eq!(metric(&body, "ironsa_ike_established_classical_total"), 1, "{body}");
}

#[test]
fn check_explains_a_proposal_a_peer_could_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let conf = |proposals: &str| {
        let path = dir.path().join("pq.toml");
        std::fs::write(
            &path,
            format!("[daemon]\nlisten = [\"127.0.0.1\"]\n\n[[connection]]\nname = \"x\"\nlocal_id = \"a@test\"\nremote_id = \"b@test\"\npsk = \"Zq8vN3rT6yB1mK4wP7sD0fH2\"\nike_proposals = \"{proposals}\"\n"),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = conf("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none");
    assert!(
        err.contains("pq.toml:9: connection.x.ike_proposals: proposal 'aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none' can be downgraded: additional key exchange 1 is optional"),
        "{err}"
    );
    let err = conf("aes256gcm16-prfsha384-x25519-mlkem768");
    assert!(err.contains("a peer may choose x25519 alone"), "{err}");
    assert_eq!(conf("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024"), "");
}

#[test]
fn check_reports_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[daemon]\nlisten = [\"127.0.0.1\"]\n\n[[connection]]\nname = \"x\"\nlocal_id = \"a@test\"\nremote_id = \"b@test\"\npsk = \"secret\"\nike_proposals = \"aes256gcm16-prfsha256-x99999\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:9: connection.x.ike_proposals:", bad.display())),
        "{err}"
    );
    assert!(err.contains("x99999"), "{err}");

    let weak = dir.path().join("weak.toml");
    std::fs::write(
        &weak,
        "[daemon]\nlisten = [\"127.0.0.1\"]\n\n[[connection]]\nname = \"x\"\nlocal_id = \"a@test\"\nremote_id = \"b@test\"\npsk = \"secret\"\nike_proposals = \"aes256gcm16-prfsha256-x25519\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args(["check", "--config", weak.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("weak.toml:8: connection.x.psk: pre-shared key is weak"),
        "{err}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args(["check", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.toml: cannot read"));
}

#[test]
fn check_refuses_an_eap_users_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "[[user]]\nname = \"alice\"\npassword = \"alice-secret-1\"\n").unwrap();
    let conf = dir.path().join("eap.toml");
    std::fs::write(
        &conf,
        "[daemon]\nlisten = [\"127.0.0.1\"]\n\n[eap]\nusers_file = \"users.toml\"\n\n[[connection]]\nname = \"rw\"\nlocal_id = \"gw@test\"\nremote_id = \"%any\"\npsk = \"Zq8vN3rT6yB1mK4wP7sD0fH2\"\nremote_auth = \"eap-mschapv2\"\neap_id = \"%any\"\nike_proposals = \"aes256gcm16-prfsha256-x25519\"\n",
    )
    .unwrap();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_ironsa"))
            .args(["check", "--config", conf.to_str().unwrap()])
            .output()
            .unwrap()
    };
    for mode in [0o644, 0o640, 0o606] {
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = check();
        assert!(!out.status.success(), "mode {mode:o} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("eap.toml:5: eap.users_file:"), "{err}");
        assert!(err.contains("readable by its group or others"), "{err}");
        assert!(!err.contains("alice-secret-1"), "{err}");
    }
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = check();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A daemon with one responder connection and `extra` in `[daemon]`.
fn minimal(extra: &str) -> String {
    let port = free_udp_port_pair().unwrap();
    responder(port, free_udp_port_pair().unwrap().0).replace(
        "control_socket = \"SOCKET\"",
        &format!("control_socket = \"SOCKET\"\n{extra}"),
    )
}

/// Runs the CLI against `socket` as uid/gid 65534 (nobody/nogroup).
fn as_nobody(socket: &std::path::Path, verb: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_ironsa"),
        ])
        .args(["--socket", socket.to_str().unwrap(), verb])
        .output()
        .unwrap()
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn control_socket_is_private_and_checks_peer_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let gw = Ironsa::start(&minimal(""), None);
    let socket = gw.dir().join("ironsa.sock");
    assert_eq!(mode_of(&socket), 0o600);
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped the peer-credential half: needs root to act as another user");
        return;
    }
    std::fs::set_permissions(gw.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody(&socket, "sas");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Permission denied") && err.contains("control_socket_group"),
        "{err}"
    );
    // Widened by hand, the socket lets anyone connect: reading is allowed,
    // changing state is not.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&socket, "sas");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = as_nobody(&socket, "reload");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied: only root may do this"), "{err}");
    assert!(gw.log().contains("refused a request that changes state"));
    // Root may.
    gw.call(json!({"cmd": "reload"}));
}

#[test]
fn control_socket_group_may_change_state() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to give the socket to a group and act as its member");
        return;
    }
    let gw = Ironsa::start(&minimal("control_socket_group = \"nogroup\""), None);
    let socket = gw.dir().join("ironsa.sock");
    assert_eq!(mode_of(&socket), 0o660);
    assert_eq!(std::fs::metadata(&socket).unwrap().gid(), 65534);
    std::fs::set_permissions(gw.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody(&socket, "reload");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_refuses_an_empty_file_and_a_misspelt_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
            .args(["check", "--config", f.to_str().unwrap()])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, err) = check("empty.toml", "");
    assert!(!ok && err.contains("empty.toml:1: (file): the file is empty"), "{err}");
    let (ok, err) = check("verbose.toml", &minimal("log_level = \"verbose\""));
    assert!(
        !ok && err.contains("daemon.log_level: 'verbose' is not a log level"),
        "{err}"
    );
}

#[test]
fn metrics_answers_and_closes_cleanly() {
    let port = free_udp_port_pair().unwrap();
    let metrics_port = free_udp_port_pair().unwrap().0;
    let _gw = Ironsa::start(&responder(port, metrics_port), None);
    // Headers as long as a browser's or Prometheus' with its Accept list:
    // read only in part, the rest of the request made the close a reset.
    let long = "a".repeat(3000);
    for request in [
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain;{long}\r\nUser-Agent: Prometheus/2\r\n\r\n"),
        format!("GET /other HTTP/1.1\r\nHost: x\r\nX-Pad: {long}\r\n\r\n"),
        "GET /metrics HTTP/1.0\r\n\r\n".to_string(),
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .unwrap_or_else(|e| panic!("reading the answer to EOF: {e} (after {} bytes)", answer.len()));
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length, "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        if request.starts_with("GET /metrics") {
            assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
            assert!(body.contains("ironsa_ike_sas{shard=\"0\"} 0"), "{body}");
        } else {
            assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        }
    }
    // And curl, as an operator checks it, is content.
    match Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        Err(e) => eprintln!("skipped the curl half: cannot run curl ({e})"),
    }
}

/// IKE datagrams a daemon has sent, over all shards.
fn sent(d: &Ironsa) -> u64 {
    d.call(json!({"cmd": "stats"}))["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tx_datagrams"].as_u64().unwrap())
        .sum()
}

#[test]
fn reload_applies_dpd_and_lifetimes_in_place() {
    let (gw_ports, my_ports) = (free_udp_port_pair().unwrap(), free_udp_port_pair().unwrap());
    let _gw = Ironsa::start(&responder(gw_ports, free_udp_port_pair().unwrap().0), None);
    let me = Ironsa::start(&initiator(my_ports, gw_ports, "aes256gcm16-prfsha256-x25519", ""), None);
    me.call(json!({"cmd": "initiate", "connection": "c1"}));
    let sas = me.wait_sas(T, |s| established(s, "c1").is_some());
    let c1 = established(&sas, "c1").unwrap();

    let quiet = sent(&me);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(sent(&me), quiet, "no DPD configured: nothing is sent");

    // DPD and the child's lifetime change: the SA is kept and follows them.
    let cfg = me.dir().join("ironsa.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text
        .replacen("name = \"c1\"\n", "name = \"c1\"\ndpd_delay = \"1s\"\n", 1)
        .replacen(
            "esp_proposals = \"aes256gcm16\"\n",
            "esp_proposals = \"aes256gcm16\"\nrekey = \"30m\"\n",
            1,
        );
    std::fs::write(&cfg, text).unwrap();
    let answer = me.call(json!({"cmd": "reload"}));
    assert!(answer.as_str().unwrap().contains("c1: updated in place"), "{answer}");
    let before = sent(&me);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(sent(&me) >= before + 2, "DPD every second on the kept SA");
    assert_eq!(established(&me.sas(), "c1"), Some(c1), "the SA is kept");
}

#[test]
fn tshark_decrypts_ike_auth_with_the_key_log() {
    use std::os::unix::fs::PermissionsExt;
    let (gw_ports, my_ports) = (free_udp_port_pair().unwrap(), free_udp_port_pair().unwrap());
    let gw = Ironsa::start(
        &responder(gw_ports, free_udp_port_pair().unwrap().0).replace(
            "control_socket = \"SOCKET\"",
            "control_socket = \"SOCKET\"\nkeylog = \"DIR/keys\"",
        ),
        None,
    );
    let keys = gw.dir().join("keys.ikev2");
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o600);
    if !nix::unistd::geteuid().is_root() || Command::new("tshark").arg("-v").output().is_err() {
        eprintln!("skipped the decryption half: needs root and tshark to capture on loopback");
        return;
    }
    let pcap = gw.dir().join("ike.pcap");
    let mut cap = Command::new("tshark")
        .args(["-q", "-i", "lo", "-f", &format!("udp port {}", gw_ports.0), "-w"])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    support::traffic::wait_capturing(&pcap);
    let me = Ironsa::start(&initiator(my_ports, gw_ports, "aes256gcm16-prfsha256-x25519", ""), None);
    me.call(json!({"cmd": "initiate", "connection": "c1"}));
    me.wait_sas(T, |s| established(s, "c1").is_some());
    std::thread::sleep(Duration::from_millis(500));
    let _ = cap.kill();
    let _ = cap.wait();

    let table = std::fs::read_to_string(&keys).unwrap();
    assert_eq!(table.lines().count(), 1, "one IKE SA: {table}");
    // ironsa marks IKE on ports other than 500 with the non-ESP marker, as on 4500.
    let decode = |uat: Option<&str>| {
        let mut c = Command::new("tshark");
        c.arg("-r").arg(&pcap);
        c.args(["-d", &format!("udp.port=={},udpencap", gw_ports.0)]);
        if let Some(line) = uat {
            c.args(["-o", &format!("uat:ikev2_decryption_table:{line}")]);
        }
        c.args([
            "-Y",
            "isakmp.exchangetype == 35",
            "-T",
            "fields",
            "-e",
            "isakmp.id.data.user_fqdn",
        ]);
        let out = c.output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let plain = decode(None);
    assert!(!plain.contains("c1@test"), "without keys nothing decrypts: {plain}");
    let decrypted = decode(Some(table.trim_end()));
    assert!(
        decrypted.contains("c1@test") && decrypted.contains("gw@test"),
        "IKE_AUTH request and response decrypted, IDi c1@test read: {decrypted}"
    );
}

#[test]
fn log_level_at_run_time_refuses_words_that_are_not_levels() {
    let gw = Ironsa::start(&minimal(""), None);
    let socket = gw.dir().join("ironsa.sock");
    let cli = |filter: &str| {
        Command::new(env!("CARGO_BIN_EXE_ironsa"))
            .args(["--socket", socket.to_str().unwrap(), "log-level", filter])
            .output()
            .unwrap()
    };
    let out = cli("verbose");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'verbose' is not a log level"), "{err}");
    assert!(cli("info,control=debug").status.success());
}

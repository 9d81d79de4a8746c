//! Remote access with EAP inside IKE_AUTH: strongSwan's charon (Debian
//! 5.9.8) as the road-warrior client with EAP-MSCHAPv2 against the `ironsa`
//! daemon, which proves itself with a certificate and checks the user
//! against its local users file, or relays EAP to a FreeRADIUS started by
//! the test. A wrong password is refused with AUTHENTICATION_FAILED and one
//! log line naming user, method and reason. charon uses kernel-netlink, so
//! the exchanges are IKE-only (RFC 6023 childless).
//!
//! Needs root, strongSwan with the eap-mschapv2 plugin and FreeRADIUS
//! (scripts/install-deps.sh).

#[path = "../support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::Need;
use support::freeradius::{SECRET, start_freeradius};
use support::util::free_udp_port_pair;
use support::{AuthRound, CertFiles, Charon, Connection, Ironsa, KeyType, Pki, San, Secret, Target};

const T: Duration = Duration::from_secs(15);
const IKE: &str = "aes256gcm16-prfsha256-x25519";
const GATEWAY_ID: &str = "moon.ironsa.test";

struct Gateway {
    pki: Pki,
    root: CertFiles,
    moon: CertFiles,
    /// Holds the users file and the RADIUS secret.
    secrets: tempfile::TempDir,
}

fn gateway_pki() -> Gateway {
    let pki = Pki::new().unwrap();
    let root = pki.root_ca("root", KeyType::EcdsaP256).unwrap();
    let moon = pki
        .end_entity(&root, "moon", KeyType::EcdsaP256, &[San::Dns(GATEWAY_ID.into())])
        .unwrap();
    Gateway {
        pki,
        root,
        moon,
        secrets: tempfile::tempdir().unwrap(),
    }
}

fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The gateway's configuration: one road-warrior connection with
/// `remote_auth` and the tables it needs.
fn ironsa_config(g: &Gateway, ports: (u16, u16), remote_auth: &str, tables: &str) -> String {
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {ip}
nat_port = {np}
shards = 2
control_socket = "SOCKET"
{tables}

[[connection]]
name = "rw"
local_id = "{GATEWAY_ID}"
remote_id = "%any"
auth = "pubkey"
cert = "{cert}"
key = "{key}"
remote_auth = "{remote_auth}"
eap_id = "%any"
ike_proposals = "{IKE}"
"#,
        ip = ports.0,
        np = ports.1,
        cert = g.moon.cert_pem.display(),
        key = g.moon.key_pem.display(),
    )
}

fn local_users(g: &Gateway) -> String {
    let users = g.secrets.path().join("users.toml");
    private_file(
        &users,
        "[[user]]\nname = \"alice\"\npassword = \"alice-secret-1\"\n[[user]]\nname = \"bob\"\nnt_hash = \"8846f7eaee8fb117ad06bdd830b7586c\"\n",
    );
    format!("[eap]\nusers_file = \"{}\"\n", users.display())
}

/// charon as a road warrior: EAP-MSCHAPv2 as `user`, the gateway by certificate.
fn road_warrior(g: &Gateway, name: &str, ironsa: (u16, u16), user: &str, password: &str) -> Charon {
    let (port, nat) = free_udp_port_pair().unwrap();
    Charon::builder(name)
        .ports(port, nat)
        .plugin("eap-mschapv2")
        .plugin("eap-identity")
        .ca(&g.root)
        .connection(
            Connection::new("gw", "127.0.0.1", "127.0.0.1")
                .local_port(port)
                .remote_port(ironsa.0)
                .proposals(&[IKE])
                .mobike(false)
                .local(
                    AuthRound {
                        auth: "eap-mschapv2".into(),
                        id: Some(format!("{user}@road.test")),
                        ..AuthRound::default()
                    }
                    .set("eap_id", user),
                )
                .remote(AuthRound::pubkey(GATEWAY_ID).cacert("root.crt")),
        )
        .secret(Secret::eap(user, user, password))
        .start()
        .unwrap()
}

/// charon and ironsa agree on one established IKE SA with peer `peer_id`;
/// ironsa logged `user`'s EAP success.
fn established(ironsa: &Ironsa, charon: &Charon, user: &str, peer_id: &str) {
    charon.swanctl().initiate(Target::Ike("gw"), T).unwrap_or_else(|e| {
        charon.dump_log();
        ironsa.dump_log();
        panic!("charon could not bring up the IKE SA: {e}");
    });
    let sas = charon
        .swanctl()
        .wait_for_sas(T, |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))
        .unwrap();
    assert_eq!(sas.len(), 1, "{sas:#?}");
    let list = ironsa.wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(
        list[0]["spi_i"].as_str().unwrap(),
        format!("{:016x}", sas[0].initiator_spi)
    );
    assert_eq!(list[0]["peer_id"], peer_id);
    assert!(
        ironsa
            .log()
            .lines()
            .any(|l| l.contains("EAP authentication succeeded") && l.contains(user)),
        "{}",
        ironsa.log()
    );
}

fn refused(ironsa: &Ironsa, charon: &Charon, user: &str, method: &str, reason: &str) {
    let before = ironsa.sas().len();
    let r = charon.swanctl().initiate(Target::Ike("gw"), T);
    assert!(r.is_err(), "a wrong password must not establish: {r:?}");
    charon
        .wait_for_log("AUTH_FAILED", T)
        .unwrap_or_else(|e| panic!("{e}: {}", charon.log_tail(40)));
    std::thread::sleep(Duration::from_millis(200));
    let log = ironsa.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("EAP authentication failed"))
        .collect();
    assert_eq!(lines.len(), 1, "one log line for the refusal:\n{log}");
    for needle in [user, method, reason] {
        assert!(lines[0].contains(needle), "'{needle}' missing in: {}", lines[0]);
    }
    assert_eq!(ironsa.sas().len(), before, "the refused SA is gone: {:?}", ironsa.sas());
}

fn metric(ironsa: &Ironsa, name: &str, method: &str) -> u64 {
    let stats = ironsa.call(serde_json::json!({"cmd": "stats"}));
    let shards = stats["shards"].as_array().cloned().unwrap_or_default();
    shards.iter().filter_map(|s| s["eap"][name][method].as_u64()).sum()
}

#[test]
fn charon_eap_mschapv2_with_local_users() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-mschapv2"),
        Need::Tool("pki"),
    ]) {
        return;
    }
    let g = gateway_pki();
    let ports = free_udp_port_pair().unwrap();
    let ironsa = Ironsa::start(&ironsa_config(&g, ports, "eap-mschapv2", &local_users(&g)), None);
    let alice = road_warrior(&g, "alice", ports, "alice", "alice-secret-1");
    established(&ironsa, &alice, "alice", "alice@road.test");
    // A user stored as an NT hash.
    let bob = road_warrior(&g, "bob", ports, "bob", "password");
    bob.swanctl().initiate(Target::Ike("gw"), T).unwrap();
    ironsa.wait_sas(T, |s| s.iter().filter(|sa| sa["state"] == "ESTABLISHED").count() == 2);
    assert_eq!(metric(&ironsa, "successes", "eap-mschapv2"), 2);
}

#[test]
fn charon_eap_mschapv2_wrong_password_is_refused() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-mschapv2"),
        Need::Tool("pki"),
    ]) {
        return;
    }
    let g = gateway_pki();
    let ports = free_udp_port_pair().unwrap();
    let ironsa = Ironsa::start(&ironsa_config(&g, ports, "eap-mschapv2", &local_users(&g)), None);
    let alice = road_warrior(&g, "mallory", ports, "alice", "not-alices-password");
    refused(&ironsa, &alice, "alice", "eap-mschapv2", "wrong password");
    assert_eq!(metric(&ironsa, "failures", "eap-mschapv2"), 1);
}

#[test]
fn charon_eap_mschapv2_relayed_to_freeradius_with_failover() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-mschapv2"),
        Need::Tool("pki"),
        Need::Tool("freeradius"),
    ]) {
        return;
    }
    let fr = start_freeradius();
    // The first server never answers: the client fails over to FreeRADIUS.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let g = gateway_pki();
    let secret = g.secrets.path().join("radius.secret");
    private_file(&secret, &format!("{SECRET}\n"));
    let tables = format!(
        "[radius]\ntimeout = 1\ntries = 1\n[[radius.server]]\naddress = \"{}\"\nsecret_file = \"{s}\"\n[[radius.server]]\naddress = \"127.0.0.1:{}\"\nsecret_file = \"{s}\"\n",
        silent.local_addr().unwrap(),
        fr.port,
        s = secret.display(),
    );
    let ports = free_udp_port_pair().unwrap();
    let ironsa = Ironsa::start(&ironsa_config(&g, ports, "eap-radius", &tables), None);
    let alice = road_warrior(&g, "alice", ports, "alice", "alice-secret-1");
    established(&ironsa, &alice, "alice", "alice@road.test");
    assert_eq!(metric(&ironsa, "successes", "eap-radius"), 1);
    let mallory = road_warrior(&g, "mallory", ports, "bob", "not-bobs-password");
    refused(
        &ironsa,
        &mallory,
        "bob",
        "eap-radius",
        "rejected the user (Access-Reject)",
    );
    assert_eq!(metric(&ironsa, "failures", "eap-radius"), 1);
}

#[test]
fn charon_certificate_then_eap_mschapv2_in_two_rounds() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-mschapv2"),
        Need::Tool("pki"),
    ]) {
        return;
    }
    let g = gateway_pki();
    let sun = g
        .pki
        .end_entity(
            &g.root,
            "sun",
            KeyType::EcdsaP256,
            &[San::Email("sun@ironsa.test".into())],
        )
        .unwrap();
    let ports = free_udp_port_pair().unwrap();
    let config = ironsa_config(&g, ports, "pubkey", &local_users(&g)).replace(
        "eap_id = \"%any\"",
        &format!(
            "remote_auth2 = \"eap-mschapv2\"\neap_id = \"%any\"\nremote_id = \"sun@ironsa.test\"\ncacerts = [\"{}\"]",
            g.root.cert_pem.display()
        ),
    );
    let config = config.replace("remote_id = \"%any\"\n", "");
    let ironsa = Ironsa::start(&config, None);
    let (port, nat) = free_udp_port_pair().unwrap();
    let charon = Charon::builder("sun")
        .ports(port, nat)
        .plugin("eap-mschapv2")
        .plugin("eap-identity")
        .identity(&sun)
        .ca(&g.root)
        .connection(
            Connection::new("gw", "127.0.0.1", "127.0.0.1")
                .local_port(port)
                .remote_port(ports.0)
                .proposals(&[IKE])
                .local(AuthRound::pubkey("sun@ironsa.test").cert("sun.crt"))
                .local2(
                    AuthRound {
                        auth: "eap-mschapv2".into(),
                        ..AuthRound::default()
                    }
                    .set("eap_id", "alice"),
                )
                .remote(AuthRound::pubkey(GATEWAY_ID).cacert("root.crt")),
        )
        .secret(Secret::eap("alice", "alice", "alice-secret-1"))
        .start()
        .unwrap();
    established(&ironsa, &charon, "alice", "sun@ironsa.test");
}

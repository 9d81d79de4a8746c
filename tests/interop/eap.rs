//! Remote access with EAP inside IKE_AUTH: strongSwan's charon (Debian
//! 5.9.8) as the road-warrior client with EAP-MSCHAPv2 against the `ironsa`
//! daemon, which proves itself with a certificate and checks the user
//! against its local users file, or relays EAP to a FreeRADIUS started by
//! the test. A wrong password is refused with AUTHENTICATION_FAILED and one
//! log line naming user, method and reason. charon uses kernel-netlink, so
//! the exchanges are IKE-only (RFC 6023 childless), except in the
//! accounting test, where charon (kernel-libipsec) and the gateway run in
//! network namespaces and traffic goes through the tunnel: FreeRADIUS's
//! detail file shows the session's Start, Interim-Updates and Stop with
//! its bytes, and
//! `radclient` disconnects the user through RFC 5176.
//!
//! Needs root, strongSwan with the eap-mschapv2 plugin and FreeRADIUS
//! (scripts/install-deps.sh).

#[path = "../support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::Need;
use support::freeradius::{ALICE_CLASS, SECRET, start_freeradius, start_freeradius_in};
use support::netns::{INNER_A, INNER_B, OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::util::free_udp_port_pair;
use support::{
    AuthRound, CertFiles, Charon, CharonBuilder, Child, Connection, Ironsa, KernelBackend, KeyType, NetnsPair, Pki,
    San, Secret, Target,
};

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

/// charon on loopback as a road warrior of ironsa (IKE ports `ironsa`)
/// that authenticates with `local` and the gateway by certificate;
/// `setup` adds plugins, credentials and secrets.
fn loopback_road_warrior(
    g: &Gateway,
    name: &str,
    ironsa: (u16, u16),
    local: AuthRound,
    setup: impl FnOnce(CharonBuilder) -> CharonBuilder,
) -> Charon {
    let (port, nat) = free_udp_port_pair().unwrap();
    setup(
        Charon::builder(name)
            .ports(port, nat)
            .plugin("eap-identity")
            .ca(&g.root),
    )
    .connection(
        Connection::new("gw", "127.0.0.1", "127.0.0.1")
            .local_port(port)
            .remote_port(ironsa.0)
            .proposals(&[IKE])
            .mobike(false)
            .local(local)
            .remote(AuthRound::pubkey(GATEWAY_ID).cacert("root.crt")),
    )
    .start()
    .unwrap()
}

/// charon as a road warrior: EAP-MSCHAPv2 as `user`, the gateway by certificate.
fn road_warrior(g: &Gateway, name: &str, ironsa: (u16, u16), user: &str, password: &str) -> Charon {
    let local = AuthRound {
        auth: "eap-mschapv2".into(),
        id: Some(format!("{user}@road.test")),
        ..AuthRound::default()
    }
    .set("eap_id", user);
    loopback_road_warrior(g, name, ironsa, local, |b| {
        b.plugin("eap-mschapv2").secret(Secret::eap(user, user, password))
    })
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

/// The gateway for EAP-TLS road warriors in namespace A: its certificate
/// and key serve IKE and TLS, `cacerts` signs the clients' certificates,
/// addresses come from a pool.
fn eap_tls_gateway_config(g: &Gateway) -> String {
    format!(
        r#"
[daemon]
listen = ["{OUTER_A}"]
shards = 2
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[[pool]]
name = "rw"
addrs = ["10.9.0.0/28"]
dns = ["10.1.0.53"]

[[connection]]
name = "rw"
local_id = "{GATEWAY_ID}"
remote_id = "%any"
auth = "pubkey"
cert = "{cert}"
key = "{key}"
remote_auth = "eap-tls"
cacerts = ["{ca}"]
eap_id = "%any"
ike_proposals = "{IKE}"
pools = ["rw"]

[[connection.child]]
name = "net"
local_ts = ["{SUBNET_A}"]
remote_ts = "dynamic"
esp_proposals = "aes256gcm16"
"#,
        cert = g.moon.cert_pem.display(),
        key = g.moon.key_pem.display(),
        ca = g.root.cert_pem.display(),
    )
}

/// charon in namespace B as an EAP-TLS road warrior with `client`'s
/// certificate, asking for a virtual IP; `tls_max` caps its TLS version,
/// `strongswan6` runs strongSwan 6 instead of Debian's charon.
fn eap_tls_road_warrior(
    ns: &NetnsPair,
    g: &Gateway,
    client: &CertFiles,
    tls_max: &str,
    strongswan6: Option<&Path>,
) -> Charon {
    let builder = Charon::builder(&format!("tls-{}", client.name));
    let builder = match strongswan6 {
        Some(prefix) => builder.strongswan6(prefix),
        None => builder,
    };
    let id = format!("{}@road.test", client.name);
    builder
        .setting("install_virtual_ip", "yes")
        .setting("tls.version_max", tls_max)
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .plugin("eap-tls")
        .plugin("eap-identity")
        .identity(client)
        .ca(&g.root)
        .connection(
            Connection::new("gw", OUTER_B, OUTER_A)
                .proposals(&[IKE])
                .set("vips", "0.0.0.0")
                .local(
                    AuthRound {
                        auth: "eap-tls".into(),
                        id: Some(id),
                        ..AuthRound::default()
                    }
                    .cert(&format!("{}.crt", client.name)),
                )
                .remote(AuthRound::pubkey(GATEWAY_ID).cacert("root.crt"))
                .child(Child::new("net", "dynamic", SUBNET_A).esp_proposals(&["aes256gcm16"])),
        )
        .start()
        .unwrap()
}

/// An EAP-TLS road warrior `user` with TLS up to `tls_max` gets a pool
/// address and pings a host behind the gateway from it.
fn eap_tls_road_warrior_pings_through(user: &str, tls_max: &str, strongswan6: Option<&Path>) {
    let g = gateway_pki();
    let ns = NetnsPair::new().unwrap();
    let ironsa = Ironsa::start(&eap_tls_gateway_config(&g), Some(ns.a.name()));
    let id = format!("{user}@road.test");
    let cert = g
        .pki
        .end_entity(&g.root, user, KeyType::EcdsaP256, &[San::Email(id.clone())])
        .unwrap();
    let charon = eap_tls_road_warrior(&ns, &g, &cert, tls_max, strongswan6);
    charon.swanctl().initiate(Target::Child("net"), T).unwrap_or_else(|e| {
        charon.dump_log();
        ironsa.dump_log();
        panic!("TLS {tls_max}: charon could not bring up the tunnel: {e}");
    });
    let sas = ironsa.wait_sas(T, |s| {
        s.iter()
            .any(|sa| sa["peer_id"] == id.as_str() && sa["children"].as_array().is_some_and(|c| c.len() == 1))
    });
    let sa = &sas[0];
    let vip = sa["remote_vips"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no virtual IP: {sa}"))
        .to_string();
    assert!(vip.starts_with("10.9.0."), "{sa}");
    assert!(
        charon.log_contains(&format!("negotiated TLS {tls_max}")),
        "charon ran TLS {tls_max}:\n{}",
        charon.log_tail(40)
    );
    assert!(
        ironsa
            .log()
            .lines()
            .any(|l| l.contains("EAP authentication succeeded") && l.contains("eap-tls") && l.contains(&id)),
        "{}",
        ironsa.log()
    );
    let (sent, got) = support::traffic::ping(&ns.b, &vip, INNER_A, 3, "0.1");
    assert_eq!((sent, got), (3, 3), "TLS {tls_max}: ping from {vip} through the tunnel");
    assert_eq!(metric(&ironsa, "successes", "eap-tls"), 1);
}

#[test]
fn charon_eap_tls_road_warrior_gets_a_virtual_ip_and_pings_through() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-tls"),
        Need::Tool("pki"),
        Need::Tool("ping"),
    ]) {
        return;
    }
    // Debian's strongSwan 5.9.8 predates RFC 9190: it runs EAP-TLS over TLS 1.2 only.
    eap_tls_road_warrior_pings_through("alice", "1.2", None);
}

#[test]
fn strongswan6_eap_tls_over_tls13_gets_a_virtual_ip_and_pings_through() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::StrongSwan6,
        Need::Tool("pki"),
        Need::Tool("ping"),
    ]) {
        return;
    }
    let prefix = support::strongswan6().unwrap();
    eap_tls_road_warrior_pings_through("carol", "1.3", Some(&prefix));
}

#[test]
fn charon_eap_tls_client_certificate_from_another_ca_is_refused() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-tls"),
        Need::Tool("pki"),
    ]) {
        return;
    }
    let g = gateway_pki();
    let other = g.pki.root_ca("other", KeyType::EcdsaP256).unwrap();
    let mallory = g
        .pki
        .end_entity(
            &other,
            "mallory",
            KeyType::EcdsaP256,
            &[San::Email("mallory@road.test".into())],
        )
        .unwrap();
    let ports = free_udp_port_pair().unwrap();
    let config = ironsa_config(&g, ports, "eap-tls", "").replace(
        "eap_id = \"%any\"",
        &format!("eap_id = \"%any\"\ncacerts = [\"{}\"]", g.root.cert_pem.display()),
    );
    let ironsa = Ironsa::start(&config, None);
    let local = AuthRound {
        auth: "eap-tls".into(),
        id: Some("mallory@road.test".into()),
        ..AuthRound::default()
    }
    .cert("mallory.crt");
    let charon = loopback_road_warrior(&g, "mallory", ports, local, |b| {
        b.plugin("eap-tls").identity(&mallory).ca(&other)
    });
    refused(&ironsa, &charon, "mallory@road.test", "eap-tls", "certificate");
    assert_eq!(metric(&ironsa, "failures", "eap-tls"), 1);
}

#[test]
fn ironsa_client_of_charon_gateway_with_eap_mschapv2_and_vip() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-mschapv2"),
        Need::Tool("pki"),
        Need::Tool("ping"),
    ]) {
        return;
    }
    ironsa_client_of_charon_gateway("eap-mschapv2", "EAP_MSCHAPV2");
}

#[test]
fn ironsa_client_of_charon_gateway_with_eap_md5_and_vip() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-md5"),
        Need::Tool("pki"),
        Need::Tool("ping"),
    ]) {
        return;
    }
    ironsa_client_of_charon_gateway("eap-md5", "EAP_MD5");
}

#[test]
fn ironsa_client_of_charon_gateway_with_eap_tls_and_vip() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-tls"),
        Need::Tool("pki"),
        Need::Tool("ping"),
    ]) {
        return;
    }
    ironsa_client_of_charon_gateway("eap-tls", "EAP_TLS");
}

/// ironsa in namespace A authenticates to a charon gateway in B with EAP
/// `method` (charon's name for it: `charon_method`), gets a virtual IP and
/// DNS server from charon's pool and pings through the tunnel from it.
/// With a password method ironsa is `alice` with her password from its
/// users file; with EAP-TLS it is alice@road.test by certificate.
fn ironsa_client_of_charon_gateway(method: &str, charon_method: &str) {
    let g = gateway_pki();
    let ns = NetnsPair::new().unwrap();
    // charon in B: the gateway by certificate, users by EAP-MSCHAPv2, a pool.
    let charon = Charon::builder("eap-gw")
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .plugin(method)
        .plugin("eap-identity")
        .identity(&g.moon)
        .ca(&g.root)
        .pool("rw", &[("addrs", "10.8.0.0/28"), ("dns", "10.2.0.53")])
        .connection(
            Connection::new("rw", OUTER_B, "%any")
                .proposals(&[IKE])
                .set("pools", "rw")
                .local(AuthRound::pubkey(GATEWAY_ID).cert("moon.crt"))
                .remote(
                    AuthRound {
                        auth: method.into(),
                        ..AuthRound::default()
                    }
                    .set("eap_id", "%any"),
                )
                .child(Child::new("net", SUBNET_B, "dynamic").esp_proposals(&["aes256gcm16"])),
        )
        .secret(Secret::eap("alice", "alice", "alice-secret-1"))
        .start()
        .unwrap();
    // ironsa in A: the client, with alice's password in its secrets file.
    let config = format!(
        r#"
[daemon]
listen = ["{OUTER_A}"]
shards = 1
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"

{users}
[[connection]]
name = "home"
remote_addrs = ["{OUTER_B}"]
local_id = "alice@road.test"
remote_id = "{GATEWAY_ID}"
auth = "{method}"
{credentials}
remote_auth = "pubkey"
cacerts = ["{ca}"]
ike_proposals = "{IKE}"
vips = ["0.0.0.0"]

[[connection.child]]
name = "net"
local_ts = "dynamic"
remote_ts = ["{SUBNET_B}"]
esp_proposals = "aes256gcm16"
"#,
        users = local_users(&g),
        credentials = if method == "eap-tls" {
            let alice = g
                .pki
                .end_entity(
                    &g.root,
                    "alice",
                    KeyType::EcdsaP256,
                    &[San::Email("alice@road.test".into())],
                )
                .unwrap();
            format!(
                "cert = \"{}\"\nkey = \"{}\"",
                alice.cert_pem.display(),
                alice.key_pem.display()
            )
        } else {
            "eap_id = \"alice\"".to_string()
        },
        ca = g.root.cert_pem.display(),
    );
    let ironsa = Ironsa::start(&config, Some(ns.a.name()));
    let answer = ironsa.request(serde_json::json!({"cmd": "initiate", "connection": "home", "timeout": 10}));
    assert_eq!(
        answer["ok"],
        true,
        "{answer}\n{}\n{}",
        ironsa.log(),
        charon.log_tail(40)
    );
    let sas = ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
    });
    assert_eq!(sas[0]["local_vips"], serde_json::json!(["10.8.0.1"]), "{}", sas[0]);
    assert_eq!(sas[0]["dns"], serde_json::json!(["10.2.0.53"]));
    assert_eq!(sas[0]["children"][0]["local_ts"], serde_json::json!(["10.8.0.1/32"]));
    assert!(
        charon.log_contains(&format!("EAP method {charon_method} succeeded")),
        "charon authenticated alice by {method}:\n{}",
        charon.log_tail(40)
    );
    assert!(
        ironsa
            .log()
            .lines()
            .any(|l| l.contains("EAP authentication as client succeeded") && l.contains("alice") && l.contains(method)),
        "{}",
        ironsa.log()
    );
    // A host in A sends from the virtual IP ironsa installed.
    let (sent, got) = support::traffic::ping(&ns.a, "10.8.0.1", INNER_B, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping from the virtual IP through the tunnel");
}

/// The dynamic-authorization port of the gateway (in its own namespace).
const DAE_PORT: u16 = 3799;
const DAE_SECRET: &str = "dae-test-secret";

/// The gateway in namespace A: EAP relayed to FreeRADIUS on A's loopback,
/// accounting to it, Disconnect-Requests from it; virtual IPs from a pool
/// that holds the address FreeRADIUS assigns alice.
fn accounting_gateway(g: &Gateway, fr: &support::freeradius::FreeRadius) -> String {
    let secret = g.secrets.path().join("radius.secret");
    private_file(&secret, &format!("{SECRET}\n"));
    let dae_secret = g.secrets.path().join("dae.secret");
    private_file(&dae_secret, &format!("{DAE_SECRET}\n"));
    format!(
        r#"
[daemon]
listen = ["{OUTER_A}"]
shards = 2
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[radius]
timeout = 1
tries = 2
nas_identifier = "moon"
dae_listen = "127.0.0.1:{DAE_PORT}"
[[radius.server]]
address = "127.0.0.1:{port}"
secret_file = "{s}"
[[radius.accounting_server]]
address = "127.0.0.1:{acct_port}"
secret_file = "{s}"
[[radius.dae_client]]
address = "127.0.0.1"
secret_file = "{d}"

[[pool]]
name = "rw"
addrs = ["10.9.0.1-10.9.0.20"]

[[connection]]
name = "rw"
local_id = "{GATEWAY_ID}"
remote_id = "%any"
auth = "pubkey"
cert = "{cert}"
key = "{key}"
remote_auth = "eap-radius"
eap_id = "%any"
ike_proposals = "{IKE}"
pools = ["rw"]

[[connection.child]]
name = "net"
local_ts = ["{SUBNET_A}"]
remote_ts = "dynamic"
esp_proposals = "aes256gcm16"
"#,
        port = fr.port,
        acct_port = fr.acct_port,
        s = secret.display(),
        d = dae_secret.display(),
        cert = g.moon.cert_pem.display(),
        key = g.moon.key_pem.display(),
    )
}

/// `radclient` in `ns` sends a Disconnect-Request with `attrs` signed with
/// `secret`; returns its output, or why it got no answer.
fn radclient_disconnect(ns: &support::Netns, attrs: &str, secret: &str) -> Result<String, String> {
    radclient(ns, "disconnect", attrs, secret)
}

/// `radclient` in `ns` sends a `kind` (disconnect, coa) request.
fn radclient(ns: &support::Netns, kind: &str, attrs: &str, secret: &str) -> Result<String, String> {
    let script = format!("echo '{attrs}' | radclient -x -t 2 -r 1 127.0.0.1:{DAE_PORT} {kind} '{secret}'");
    ns.exec_bounded(&["sh", "-c", &script], Duration::from_secs(20))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .map_err(|e| e.to_string())
}

/// Polls FreeRADIUS's detail file of NAS 127.0.0.1 until `done` holds.
fn wait_detail(fr: &support::freeradius::FreeRadius, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + T;
    loop {
        let detail = fr.detail("127.0.0.1");
        if done(&detail) {
            return detail;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {what} in the detail file after {T:?}:\n{detail}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dae_stat(ironsa: &Ironsa, name: &str) -> u64 {
    ironsa.call(serde_json::json!({"cmd": "stats"}))["radius"]["dae"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no radius.dae.{name} in the stats"))
}

#[test]
fn eap_radius_session_accounted_and_disconnected_by_radius() {
    if support::skip_unless(&[
        Need::Root,
        Need::Charon,
        Need::CharonPlugin("eap-mschapv2"),
        Need::Tool("pki"),
        Need::Tool("freeradius"),
        Need::Tool("radclient"),
        Need::Tool("ping"),
    ]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let fr = start_freeradius_in(ns.a.name());
    let g = gateway_pki();
    let mut ironsa = Ironsa::start(&accounting_gateway(&g, &fr), Some(ns.a.name()));
    let charon = Charon::builder("alice")
        .setting("install_virtual_ip", "yes")
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .plugin("eap-mschapv2")
        .plugin("eap-identity")
        .ca(&g.root)
        .connection(
            Connection::new("gw", OUTER_B, OUTER_A)
                .proposals(&[IKE])
                .mobike(false)
                .set("vips", "0.0.0.0")
                .local(
                    AuthRound {
                        auth: "eap-mschapv2".into(),
                        id: Some("alice@road.test".into()),
                        ..AuthRound::default()
                    }
                    .set("eap_id", "alice"),
                )
                .remote(AuthRound::pubkey(GATEWAY_ID).cacert("root.crt"))
                .child(Child::new("net", "dynamic", SUBNET_A).esp_proposals(&["aes256gcm16"])),
        )
        .secret(Secret::eap("alice", "alice", "alice-secret-1"))
        .start()
        .unwrap();
    charon.swanctl().initiate(Target::Child("net"), T).unwrap_or_else(|e| {
        charon.dump_log();
        ironsa.dump_log();
        panic!("charon could not bring up the tunnel: {e}");
    });
    let sas = ironsa.wait_sas(T, |s| s.len() == 1);
    assert_eq!(
        sas[0]["remote_vips"],
        serde_json::json!(["10.9.0.7"]),
        "RADIUS Framed-IP-Address"
    );
    let start = wait_detail(&fr, "Start", |d| d.contains("Acct-Status-Type = Start"));
    assert!(start.contains("User-Name = \"alice\""), "{start}");

    // Traffic through the tunnel, then a forged Disconnect-Request
    // (wrong secret): dropped, counted, the session stays.
    let (sent, got) = support::traffic::ping(&ns.b, "10.9.0.7", INNER_A, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping from the virtual IP through the tunnel");
    // Alice's Access-Accept asks for Interim-Updates every second: one
    // reports the traffic so far.
    let interim = wait_detail(&fr, "Interim-Update with the pings", |d| {
        d.split("Acct-Status-Type = Interim-Update").skip(1).any(|rec| {
            rec.lines()
                .find_map(|l| l.trim().strip_prefix("Acct-Input-Packets = "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n >= 5)
        })
    });
    assert!(interim.contains("Acct-Session-Time = "), "{interim}");
    // charon rekeys the IKE SA: the session, its CHILD_SA and its counters
    // go on under the new SA.
    let first_spi = sas[0]["spi_i"].clone();
    charon.swanctl().rekey(Target::Ike("gw")).unwrap();
    ironsa.wait_sas(T, |s| s.len() == 1 && s[0]["spi_i"] != first_spi);
    let forged = radclient_disconnect(&ns.a, "User-Name = alice", "not-the-dae-secret");
    assert!(forged.is_err(), "a forged Disconnect-Request was answered: {forged:?}");
    assert!(dae_stat(&ironsa, "dropped_bad_authenticator") >= 1);
    assert_eq!(ironsa.sas().len(), 1, "the forged request ended nothing");
    // No session of bob: NAK.
    // (radclient reports a NAK as a failure or not, by version: the
    // gateway's counter says what it answered.)
    let nak = radclient_disconnect(&ns.a, "User-Name = bob", DAE_SECRET);
    assert_eq!(dae_stat(&ironsa, "disconnect_naks"), 1, "{nak:?}");
    assert!(format!("{nak:?}").contains("Session-Context-Not-Found"), "{nak:?}");
    assert_eq!(ironsa.sas().len(), 1);

    // The real thing: by user name and virtual IP, with a fresh
    // Event-Timestamp and a Message-Authenticator.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ack = radclient_disconnect(
        &ns.a,
        &format!(
            "User-Name = alice, Framed-IP-Address = 10.9.0.7, Event-Timestamp = {now}, Message-Authenticator = 0x00"
        ),
        DAE_SECRET,
    )
    .unwrap_or_else(|e| panic!("no Disconnect-ACK: {e}\n{}", ironsa.log()));
    assert!(ack.contains("Disconnect-ACK"), "{ack}");
    charon
        .wait_for_log("received DELETE for IKE_SA", T)
        .unwrap_or_else(|e| panic!("{e}:\n{}", charon.log_tail(40)));
    charon
        .swanctl()
        .wait_for_sas(T, |s| s.is_empty())
        .unwrap_or_else(|e| panic!("charon still lists SAs: {e}"));
    ironsa.wait_sas(T, |s| s.is_empty());
    assert_eq!(dae_stat(&ironsa, "disconnect_acks"), 1);

    let detail = wait_detail(&fr, "Stop", |d| d.contains("Acct-Status-Type = Stop"));
    let stop = &detail[detail.find("Acct-Status-Type = Stop").unwrap_or(0)..];
    let value = |name: &str| -> u64 {
        stop.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name} = ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the Stop:\n{stop}"))
    };
    // Five echo requests in, five replies out, 84 bytes of IP each.
    assert!(value("Acct-Input-Packets") >= 5, "{stop}");
    assert!(value("Acct-Output-Packets") >= 5, "{stop}");
    assert!(value("Acct-Input-Octets") >= 5 * 84, "{stop}");
    assert!(value("Acct-Output-Octets") >= 5 * 84, "{stop}");
    assert!(stop.contains("Acct-Terminate-Cause = Admin-Reset"), "{stop}");
    assert!(stop.contains("Framed-IP-Address = 10.9.0.7"), "{stop}");
    let class_hex: String = ALICE_CLASS.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        stop.contains(&format!("Class = 0x{class_hex}")),
        "the Access-Accept's Class echoed:\n{stop}"
    );
    let session = |text: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Acct-Session-Id = "))
            .map(str::to_string)
    };
    assert_eq!(session(&start), session(stop), "Start and Stop of one session");

    // Alice again; a CoA-Request gives her one more second.
    let reconnect = |ironsa: &Ironsa, n: usize| {
        charon.swanctl().initiate(Target::Child("net"), T).unwrap_or_else(|e| {
            charon.dump_log();
            panic!("charon could not reconnect: {e}");
        });
        ironsa.wait_sas(T, |s| s.len() == 1);
        wait_detail(&fr, "another Start", |d| {
            d.matches("Acct-Status-Type = Start").count() == n
        });
    };
    reconnect(&ironsa, 2);
    let coa = radclient(&ns.a, "coa", "User-Name = alice, Session-Timeout = 1", DAE_SECRET)
        .unwrap_or_else(|e| panic!("no CoA-ACK: {e}"));
    assert!(coa.contains("CoA-ACK"), "{coa}");
    let detail = wait_detail(&fr, "Stop at the CoA's Session-Timeout", |d| {
        d.matches("Acct-Status-Type = Stop").count() == 2
    });
    assert!(detail.contains("Acct-Terminate-Cause = Session-Timeout"), "{detail}");
    ironsa.wait_sas(T, |s| s.is_empty());
    assert_eq!(dae_stat(&ironsa, "coa_acks"), 1);

    // Alice once more; the gateway shuts down: her Stop says why.
    reconnect(&ironsa, 3);
    ironsa.stop();
    let detail = wait_detail(&fr, "Stop at shutdown", |d| {
        d.matches("Acct-Status-Type = Stop").count() == 3
    });
    assert!(detail.contains("Acct-Terminate-Cause = NAS-Reboot"), "{detail}");
}

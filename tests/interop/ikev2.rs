//! IKEv2 interop between the `ironsa` daemon and a real strongSwan charon
//! on loopback ports, both roles: PSK (x25519/AES-GCM, MODP/CBC+HMAC),
//! ECDSA and RSA certificates, a chain large enough for IKE fragmentation,
//! IKE SA rekey, DELETE, and DPD. Each test checks through
//! `swanctl --list-sas` and `ironsa sas` that both sides agree on SPIs and
//! algorithms. charon uses kernel-netlink here, which on this kernel cannot
//! install CHILD_SAs, so these exchanges are IKE-only (RFC 6023 childless or
//! a refused child); CHILD_SAs are proven in `child.rs` (`interop_child`).
//!
//! Needs root and the strongSwan packages (scripts/install-deps.sh).

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Need;
use support::util::free_udp_port_pair;
use support::{AuthRound, CertFiles, Charon, Child, Connection, IkeSaInfo, Ironsa, KeyType, Pki, San, Secret, Target};

const PSK: &str = "a-long-random-test-secret-for-ironsa";
const T: Duration = Duration::from_secs(10);

struct Ports {
    charon: (u16, u16),
    ironsa: (u16, u16),
}

fn ports() -> Ports {
    Ports {
        charon: free_udp_port_pair().unwrap(),
        ironsa: free_udp_port_pair().unwrap(),
    }
}

/// An ironsa config with one connection to/from charon.
fn ironsa_config(p: &Ports, ike: &str, auth: &str, extra: &str) -> String {
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {ip}
nat_port = {np}
shards = 2
control_socket = "SOCKET"

[[connection]]
name = "swan"
remote_addrs = ["127.0.0.1"]
remote_port = {cp}
remote_nat_port = {cn}
ike_proposals = "{ike}"
fragmentation = true
{auth}
{extra}
"#,
        ip = p.ironsa.0,
        np = p.ironsa.1,
        cp = p.charon.0,
        cn = p.charon.1,
    )
}

fn psk_auth(local: &str, remote: &str) -> String {
    format!("local_id = \"{local}\"\nremote_id = \"{remote}\"\nauth = \"psk\"\npsk = \"{PSK}\"\n")
}

fn charon_conn(p: &Ports, ike: &str) -> Connection {
    Connection::new("ironsa", "127.0.0.1", "127.0.0.1")
        .local_port(p.charon.0)
        .remote_port(p.ironsa.0)
        .proposals(&[ike])
}

fn the_sa(list: &[Value]) -> &Value {
    let est: Vec<&Value> = list.iter().filter(|s| s["state"] == "ESTABLISHED").collect();
    assert_eq!(est.len(), 1, "exactly one established ironsa SA: {list:#?}");
    est[0]
}

/// Both sides describe the same IKE SA.
fn assert_agree(ours: &Value, theirs: &IkeSaInfo, algs: &str, encr: &str, keysize: u16, dh: &str) {
    assert_eq!(theirs.state, "ESTABLISHED");
    assert_eq!(
        ours["spi_i"].as_str().unwrap(),
        format!("{:016x}", theirs.initiator_spi),
        "initiator SPI"
    );
    assert_eq!(
        ours["spi_r"].as_str().unwrap(),
        format!("{:016x}", theirs.responder_spi),
        "responder SPI"
    );
    assert_eq!(ours["algorithms"].as_str().unwrap(), algs);
    assert_eq!(theirs.encr_alg.as_deref(), Some(encr));
    assert_eq!(theirs.encr_keysize, Some(keysize as _));
    assert_eq!(theirs.dh_group.as_deref(), Some(dh));
    assert_eq!(ours["role"] == "initiator", !theirs.initiator, "roles are opposite");
}

fn one_charon_sa(c: &Charon) -> IkeSaInfo {
    let sas = c
        .swanctl()
        .wait_for_sas(T, |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))
        .unwrap();
    let est: Vec<IkeSaInfo> = sas.into_iter().filter(|s| s.state == "ESTABLISHED").collect();
    assert_eq!(est.len(), 1, "{est:#?}");
    est.into_iter().next().unwrap()
}

#[test]
fn ironsa_initiates_psk_x25519_aes256gcm() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    let p = ports();
    let ike = "aes256gcm16-prfsha256-x25519";
    let charon = Charon::builder("psk-x25519")
        .ports(p.charon.0, p.charon.1)
        .connection(
            charon_conn(&p, ike)
                .local(AuthRound::psk("b@test"))
                .remote(AuthRound::psk("a@test")),
        )
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap();
    let ironsa = Ironsa::start(&ironsa_config(&p, ike, &psk_auth("a@test", "b@test"), ""), None);
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    let ours = ironsa.wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    let theirs = one_charon_sa(&charon);
    assert_agree(
        the_sa(&ours),
        &theirs,
        "aes256gcm16-prfsha256-x25519",
        "AES_GCM_16",
        256,
        "CURVE_25519",
    );
    assert_eq!(theirs.remote_id, "a@test");

    // DELETE from ironsa removes the SA on both sides.
    ironsa.call(json!({"cmd": "terminate", "connection": "swan"}));
    ironsa.wait_sas(T, |s| s.is_empty());
    charon.swanctl().wait_for_sas(T, |s| s.is_empty()).unwrap();
}

#[test]
fn charon_initiates_psk_modp2048_aes128_sha256_and_deletes() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    let p = ports();
    let ike = "aes128-sha256-modp2048";
    let charon = Charon::builder("psk-modp")
        .ports(p.charon.0, p.charon.1)
        .connection(
            charon_conn(&p, ike)
                .local(AuthRound::psk("b@test"))
                .remote(AuthRound::psk("a@test"))
                .child(Child::new("c", "10.2.0.0/24", "10.1.0.0/24").esp_proposals(&["aes128-sha256"])),
        )
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap();
    let ironsa = Ironsa::start(
        &ironsa_config(
            &p,
            ike,
            &psk_auth("a@test", "b@test"),
            "[[connection.child]]\nname = \"c\"\nlocal_ts = [\"10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/24\"]\nesp_proposals = \"aes128-sha256\"\n",
        ),
        None,
    );
    charon.swanctl().initiate(Target::Ike("ironsa"), T).unwrap();
    let theirs = one_charon_sa(&charon);
    let ours = ironsa.wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    assert_agree(
        the_sa(&ours),
        &theirs,
        "aes128-sha256-prfsha256-modp2048",
        "AES_CBC",
        128,
        "MODP_2048",
    );
    assert_eq!(theirs.integ_alg.as_deref(), Some("HMAC_SHA2_256_128"));
    assert_eq!(theirs.prf_alg.as_deref(), Some("PRF_HMAC_SHA2_256"));

    // DELETE from charon removes the SA on both sides.
    charon.swanctl().terminate(Target::Ike("ironsa")).unwrap();
    ironsa.wait_sas(T, |s| s.is_empty());
}

#[test]
fn ike_rekey_both_directions_and_dpd() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    let p = ports();
    let ike = "aes256gcm16-prfsha384-ecp256";
    let charon = Charon::builder("rekey")
        .ports(p.charon.0, p.charon.1)
        .connection(
            charon_conn(&p, ike)
                .local(AuthRound::psk("b@test"))
                .remote(AuthRound::psk("a@test"))
                .dpd_delay("1s"),
        )
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap();
    let ironsa = Ironsa::start(
        &ironsa_config(&p, ike, &psk_auth("a@test", "b@test"), "dpd_delay = \"1s\""),
        None,
    );
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    let first = one_charon_sa(&charon);

    // charon rekeys the IKE SA.
    charon.swanctl().rekey(Target::Ike("ironsa")).unwrap();
    let second = charon
        .swanctl()
        .wait_for_sas(T, |s| {
            s.len() == 1 && s[0].state == "ESTABLISHED" && s[0].initiator_spi != first.initiator_spi
        })
        .unwrap()
        .remove(0);
    let ours = ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["spi_i"] == format!("{:016x}", second.initiator_spi)
    });
    assert_agree(
        &ours[0],
        &second,
        "aes256gcm16-prfsha384-ecp256",
        "AES_GCM_16",
        256,
        "ECP_256",
    );

    // ironsa rekeys it.
    let spi = if ours[0]["role"] == "initiator" {
        ours[0]["spi_i"].clone()
    } else {
        ours[0]["spi_r"].clone()
    };
    ironsa.call(json!({"cmd": "rekey", "spi": spi}));
    let ours = ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["spi_i"] != format!("{:016x}", second.initiator_spi)
    });
    let third = charon
        .swanctl()
        .wait_for_sas(T, |s| {
            s.len() == 1 && format!("{:016x}", s[0].initiator_spi) == ours[0]["spi_i"].as_str().unwrap()
        })
        .unwrap()
        .remove(0);
    assert_agree(
        &ours[0],
        &third,
        "aes256gcm16-prfsha384-ecp256",
        "AES_GCM_16",
        256,
        "ECP_256",
    );

    // Both sides run DPD every second over the rekeyed SA and it stays up.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(charon.log_contains("sending DPD request"), "charon sends DPD");
    assert_eq!(one_charon_sa(&charon).initiator_spi, third.initiator_spi);
    ironsa.wait_sas(T, |s| s.len() == 1 && s[0]["state"] == "ESTABLISHED");
}

fn cert_config(me: &CertFiles, ca: &CertFiles, my_id: &str, peer_id: &str, chain: &[&CertFiles]) -> String {
    // ironsa reads one file with the end-entity certificate followed by intermediates.
    let mut pem = std::fs::read_to_string(&me.cert_pem).unwrap();
    for c in chain {
        pem.push_str(&std::fs::read_to_string(&c.cert_pem).unwrap());
    }
    let bundle = me.cert_pem.with_extension("bundle.pem");
    std::fs::write(&bundle, pem).unwrap();
    format!(
        "local_id = \"{my_id}\"\nremote_id = \"{peer_id}\"\nauth = \"pubkey\"\ncert = \"{}\"\nkey = \"{}\"\ncacerts = [\"{}\"]\n",
        bundle.display(),
        me.key_pem.display(),
        ca.cert_pem.display()
    )
}

#[test]
fn ecdsa_certificates_charon_initiates() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("pki")]) {
        return;
    }
    let p = ports();
    let pki = Pki::new().unwrap();
    let root = pki.root_ca("root", KeyType::EcdsaP256).unwrap();
    let ours = pki
        .end_entity(
            &root,
            "moon",
            KeyType::EcdsaP256,
            &[San::Dns("moon.ironsa.test".into())],
        )
        .unwrap();
    let theirs = pki
        .end_entity(
            &root,
            "sun",
            KeyType::EcdsaP256,
            &[San::Email("sun@ironsa.test".into())],
        )
        .unwrap();
    let ike = "aes256gcm16-prfsha256-ecp256";
    let charon = Charon::builder("ecdsa")
        .ports(p.charon.0, p.charon.1)
        .identity(&theirs)
        .ca(&root)
        .connection(
            charon_conn(&p, ike)
                .local(AuthRound::pubkey("sun@ironsa.test").cert("sun.crt"))
                .remote(AuthRound::pubkey("moon.ironsa.test").cacert("root.crt")),
        )
        .start()
        .unwrap();
    let ironsa = Ironsa::start(
        &ironsa_config(
            &p,
            ike,
            &cert_config(&ours, &root, "moon.ironsa.test", "sun@ironsa.test", &[]),
            "",
        ),
        None,
    );
    charon.swanctl().initiate(Target::Ike("ironsa"), T).unwrap();
    let sa = one_charon_sa(&charon);
    let list = ironsa.wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    assert_agree(
        the_sa(&list),
        &sa,
        "aes256gcm16-prfsha256-ecp256",
        "AES_GCM_16",
        256,
        "ECP_256",
    );
    assert_eq!(the_sa(&list)["peer_id"], "sun@ironsa.test");
}

#[test]
fn rsa_certificates_ironsa_initiates() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("pki")]) {
        return;
    }
    let p = ports();
    let pki = Pki::new().unwrap();
    let root = pki.root_ca("root", KeyType::Rsa(2048)).unwrap();
    let ours = pki
        .end_entity(
            &root,
            "moon",
            KeyType::Rsa(2048),
            &[San::Dns("moon.ironsa.test".into())],
        )
        .unwrap();
    let theirs = pki
        .end_entity(&root, "sun", KeyType::Rsa(2048), &[San::Dns("sun.ironsa.test".into())])
        .unwrap();
    let ike = "aes128gcm16-prfsha256-x25519";
    let charon = Charon::builder("rsa")
        .ports(p.charon.0, p.charon.1)
        .identity(&theirs)
        .ca(&root)
        .connection(
            charon_conn(&p, ike)
                .local(AuthRound::pubkey("sun.ironsa.test").cert("sun.crt"))
                .remote(AuthRound::pubkey("moon.ironsa.test").cacert("root.crt")),
        )
        .start()
        .unwrap();
    let ironsa = Ironsa::start(
        &ironsa_config(
            &p,
            ike,
            &cert_config(&ours, &root, "moon.ironsa.test", "sun.ironsa.test", &[]),
            "",
        ),
        None,
    );
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    let sa = one_charon_sa(&charon);
    let list = ironsa.wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    assert_agree(
        the_sa(&list),
        &sa,
        "aes128gcm16-prfsha256-x25519",
        "AES_GCM_16",
        128,
        "CURVE_25519",
    );
}

#[test]
fn big_certificate_chains_are_fragmented_both_ways() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("pki")]) {
        return;
    }
    let p = ports();
    let pki = Pki::new().unwrap();
    let (root, chain, theirs) = pki.big_chain("big", 1, &[San::Dns("sun.ironsa.test".into())]).unwrap();
    let ours = pki
        .end_entity(
            &chain[0],
            "moon",
            KeyType::Rsa(3072),
            &[San::Dns("moon.ironsa.test".into())],
        )
        .unwrap();
    let ike = "aes256gcm16-prfsha256-x25519";
    let charon = Charon::builder("bigchain")
        .ports(p.charon.0, p.charon.1)
        .identity(&theirs)
        .cert(&chain[0])
        .ca(&root)
        .setting("fragment_size", "1280")
        .connection(
            charon_conn(&p, ike)
                .fragmentation("yes")
                .local(AuthRound::pubkey("sun.ironsa.test").cert(&format!("{}.crt", theirs.name)))
                .remote(AuthRound::pubkey("moon.ironsa.test")),
        )
        .start()
        .unwrap();
    let cfg = cert_config(&ours, &root, "moon.ironsa.test", "sun.ironsa.test", &[&chain[0]]);
    let ironsa = Ironsa::start(&ironsa_config(&p, ike, &cfg, "fragment_size = 1280"), None);
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    let sa = one_charon_sa(&charon);
    let list = ironsa.wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    assert_agree(
        the_sa(&list),
        &sa,
        "aes256gcm16-prfsha256-x25519",
        "AES_GCM_16",
        256,
        "CURVE_25519",
    );
    assert!(
        charon.log_contains("reassembled fragmented IKE message"),
        "charon reassembled our fragmented IKE_AUTH"
    );
    assert!(
        charon.log_contains("splitting IKE message"),
        "charon fragmented its IKE_AUTH response"
    );
}

#[test]
fn rsa_auth_method_1_with_a_peer_without_rfc7427() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("pki")]) {
        return;
    }
    // charon with signature_authentication = no sends no SIGNATURE_HASH_ALGORITHMS
    // and signs with RSA_SIG (auth method 1); so must we.
    let p = ports();
    let pki = Pki::new().unwrap();
    let root = pki.root_ca("root", KeyType::Rsa(2048)).unwrap();
    let ours = pki
        .end_entity(
            &root,
            "moon",
            KeyType::Rsa(2048),
            &[San::Dns("moon.ironsa.test".into())],
        )
        .unwrap();
    let theirs = pki
        .end_entity(&root, "sun", KeyType::Rsa(2048), &[San::Dns("sun.ironsa.test".into())])
        .unwrap();
    let ike = "aes256gcm16-prfsha256-x25519";
    let charon = Charon::builder("rsa-sig")
        .ports(p.charon.0, p.charon.1)
        .setting("signature_authentication", "no")
        .log_level("ike", 2)
        .identity(&theirs)
        .ca(&root)
        .connection(
            charon_conn(&p, ike)
                .local(AuthRound::pubkey("sun.ironsa.test").cert("sun.crt"))
                .remote(AuthRound::pubkey("moon.ironsa.test").cacert("root.crt")),
        )
        .start()
        .unwrap();
    let ironsa = Ironsa::start(
        &ironsa_config(
            &p,
            ike,
            &cert_config(&ours, &root, "moon.ironsa.test", "sun.ironsa.test", &[]),
            "",
        ),
        None,
    );
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    let sa = one_charon_sa(&charon);
    let list = ironsa.wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    assert_agree(
        the_sa(&list),
        &sa,
        "aes256gcm16-prfsha256-x25519",
        "AES_GCM_16",
        256,
        "CURVE_25519",
    );
    assert!(
        charon.log_contains("authentication of 'moon.ironsa.test' with RSA signature successful"),
        "charon verified our method-1 RSA signature"
    );
}

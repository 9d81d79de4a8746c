//! Self-test of the strongSwan harness in `tests/support`: two real charons talk
//! to each other (IKE only on loopback, with PSK and with certificates; ESP with
//! kernel-libipsec between two network namespaces), and the `--list-sas` parser
//! is checked against output captured from real runs.
//!
//! Needs root and Debian's strongswan-charon, strongswan-swanctl, strongswan-pki,
//! libstrongswan-standard-plugins, libcharon-extra-plugins, iproute2, iputils-ping.

#[path = "../support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use support::Need;
use support::netns::{INNER_A, INNER_B, OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::util::free_udp_port_pair;
use support::{
    AuthRound, Charon, Child, Connection, IkeSaInfo, KernelBackend, KeyType, NetnsPair, Pki, San, Secret, Target,
    parse_list_sas,
};

const PSK: &str = "a-long-random-test-secret-for-ironsa";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs `body`; on error prints the logs of the given charons and panics.
fn check(charons: &[&Charon], body: impl FnOnce() -> support::Result<()>) {
    if let Err(e) = body() {
        for c in charons {
            c.dump_log();
        }
        panic!("{e}");
    }
}

/// The only IKE SA in `sas`, which must be ESTABLISHED.
fn single_established(sas: &[IkeSaInfo]) -> &IkeSaInfo {
    assert_eq!(sas.len(), 1, "expected exactly one IKE SA: {sas:#?}");
    assert_eq!(sas[0].state, "ESTABLISHED", "{sas:#?}");
    &sas[0]
}

/// Both sides must describe the same IKE SA from opposite ends.
fn assert_mirror(init: &IkeSaInfo, resp: &IkeSaInfo) {
    assert!(init.initiator && !resp.initiator);
    assert_ne!(init.initiator_spi, 0);
    assert_ne!(init.responder_spi, 0);
    assert_eq!(init.initiator_spi, resp.initiator_spi);
    assert_eq!(init.responder_spi, resp.responder_spi);
    assert_eq!(init.local_spi(), resp.remote_spi());
    assert_eq!(init.remote_spi(), resp.local_spi());
    assert_eq!((init.local_host, init.local_port), (resp.remote_host, resp.remote_port));
    assert_eq!((init.remote_host, init.remote_port), (resp.local_host, resp.local_port));
    assert_eq!(init.local_id, resp.remote_id);
    assert_eq!(init.remote_id, resp.local_id);
    assert_eq!(init.encr_alg, resp.encr_alg);
    assert_eq!(init.encr_keysize, resp.encr_keysize);
    assert_eq!(init.integ_alg, resp.integ_alg);
    assert_eq!(init.prf_alg, resp.prf_alg);
    assert_eq!(init.dh_group, resp.dh_group);
}

#[test]
fn ikev2_psk_x25519_aes256gcm_between_two_charons_on_loopback() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    let started = Instant::now();
    let (port_a, nat_a) = free_udp_port_pair().unwrap();
    let (port_b, nat_b) = free_udp_port_pair().unwrap();
    let proposals = ["aes256gcm16-prfsha256-x25519"];
    let conn = |local_port, remote_port, me: &str, peer: &str| {
        Connection::new("psk", "127.0.0.1", "127.0.0.1")
            .local_port(local_port)
            .remote_port(remote_port)
            .proposals(&proposals)
            .local(AuthRound::psk(me))
            .remote(AuthRound::psk(peer))
            .child(Child::new("c", "10.1.0.0/24", "10.2.0.0/24").esp_proposals(&["aes256gcm16"]))
    };
    let secret = || Secret::psk("ab", &["a@ironsa.test", "b@ironsa.test"], PSK);
    let a = Charon::builder("psk-a")
        .ports(port_a, nat_a)
        .connection(conn(port_a, port_b, "a@ironsa.test", "b@ironsa.test"))
        .secret(secret())
        .start()
        .unwrap();
    let b = Charon::builder("psk-b")
        .ports(port_b, nat_b)
        .connection(conn(port_b, port_a, "b@ironsa.test", "a@ironsa.test"))
        .secret(secret())
        .start()
        .unwrap();
    let up = Instant::now();
    check(&[&a, &b], || {
        a.swanctl().initiate(Target::Ike("psk"), Duration::from_secs(10))?;
        let sas_a = a.swanctl().list_sas()?;
        let sas_b = b
            .swanctl()
            .wait_for_sas(Duration::from_secs(3), |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))?;
        let (ia, ib) = (single_established(&sas_a), single_established(&sas_b));
        assert_mirror(ia, ib);
        assert_eq!(ia.version, 2);
        assert_eq!((ia.local_host, ia.local_port), (LOOPBACK, port_a));
        assert_eq!((ia.remote_host, ia.remote_port), (LOOPBACK, port_b));
        assert_eq!(ia.encr_alg.as_deref(), Some("AES_GCM_16"));
        assert_eq!(ia.encr_keysize, Some(256));
        assert_eq!(ia.integ_alg, None);
        assert_eq!(ia.prf_alg.as_deref(), Some("PRF_HMAC_SHA2_256"));
        assert_eq!(ia.dh_group.as_deref(), Some("CURVE_25519"));
        assert!(ia.children.is_empty(), "IKE-only initiate must not create children");

        // Terminating on one side removes the SA on both.
        a.swanctl().terminate(Target::Ike("psk"))?;
        assert!(a.swanctl().list_sas()?.is_empty());
        b.swanctl().wait_for_sas(Duration::from_secs(3), |s| s.is_empty())?;
        Ok(())
    });
    eprintln!("timing: start {:?}, initiate+checks {:?}", up - started, up.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn ikev2_ecdsa_certificates_from_pki_helper() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("pki")]) {
        return;
    }
    let started = Instant::now();
    let pki = Pki::new().unwrap();
    let root = pki.root_ca("root", KeyType::EcdsaP256).unwrap();
    let a_cert = pki
        .end_entity(&root, "a-ee", KeyType::EcdsaP256, &[San::Email("a@ironsa.test".into())])
        .unwrap();
    let b_cert = pki
        .end_entity(
            &root,
            "b-ee",
            KeyType::EcdsaP384,
            &[San::Dns("b.ironsa.test".into()), San::Ip(LOOPBACK)],
        )
        .unwrap();
    for f in [&root, &a_cert, &b_cert] {
        assert!(
            std::fs::read_to_string(&f.cert_pem)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----\n")
        );
        assert!(
            std::fs::read_to_string(&f.key_pem)
                .unwrap()
                .starts_with("-----BEGIN EC PRIVATE KEY-----\n")
        );
        assert_eq!(std::fs::read(&f.cert_der).unwrap()[0], 0x30, "DER SEQUENCE");
    }
    let gen_done = Instant::now();

    let (port_a, nat_a) = free_udp_port_pair().unwrap();
    let (port_b, nat_b) = free_udp_port_pair().unwrap();
    let a = Charon::builder("ecdsa-a")
        .ports(port_a, nat_a)
        .identity(&a_cert)
        .ca(&root)
        .connection(
            Connection::new("cert", "127.0.0.1", "127.0.0.1")
                .local_port(port_a)
                .remote_port(port_b)
                .proposals(&["aes128gcm16-prfsha256-ecp256"])
                .local(AuthRound::pubkey("a@ironsa.test").cert("a-ee.crt"))
                .remote(AuthRound::pubkey(&b_cert.dn)),
        )
        .start()
        .unwrap();
    let b = Charon::builder("ecdsa-b")
        .ports(port_b, nat_b)
        .identity(&b_cert)
        .ca(&root)
        .connection(
            Connection::new("cert", "127.0.0.1", "127.0.0.1")
                .local_port(port_b)
                .remote_port(port_a)
                .proposals(&["aes128gcm16-prfsha256-ecp256"])
                .local(AuthRound::pubkey(&b_cert.dn).cert("b-ee.crt"))
                .remote(AuthRound::pubkey("a@ironsa.test").cacert("root.crt")),
        )
        .start()
        .unwrap();
    check(&[&a, &b], || {
        a.swanctl().initiate(Target::Ike("cert"), Duration::from_secs(10))?;
        let sas_a = a.swanctl().list_sas()?;
        let sas_b = b
            .swanctl()
            .wait_for_sas(Duration::from_secs(3), |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))?;
        let (ia, ib) = (single_established(&sas_a), single_established(&sas_b));
        assert_mirror(ia, ib);
        assert_eq!(ia.local_id, "a@ironsa.test");
        assert_eq!(ia.remote_id, "C=CH, O=ironsa test, CN=b-ee");
        assert_eq!(ia.encr_alg.as_deref(), Some("AES_GCM_16"));
        assert_eq!(ia.encr_keysize, Some(128));
        assert_eq!(ia.dh_group.as_deref(), Some("ECP_256"));
        assert!(
            a.log_contains("authentication of 'C=CH, O=ironsa test, CN=b-ee' with ECDSA"),
            "B signs with its P-384 key"
        );
        assert!(
            b.log_contains("authentication of 'a@ironsa.test' with ECDSA"),
            "A signs with its P-256 key"
        );
        if std::env::var_os("IRONSA_PRINT_SAS").is_some() {
            eprintln!("{}", a.swanctl().list_sas_text()?);
        }
        Ok(())
    });
    eprintln!(
        "timing: pki {:?}, charons+IKE {:?}",
        gen_done - started,
        gen_done.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn libipsec_child_sa_between_two_namespaces_carries_ping() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("ping")]) {
        return;
    }
    let started = Instant::now();
    // Declared first so it is dropped last, after both charons stopped.
    let ns = NetnsPair::new().unwrap();
    let secret = || Secret::psk("ab", &["a@ironsa.test", "b@ironsa.test"], PSK);
    let conn = |me_addr: &str, peer_addr: &str, me: &str, peer: &str, lts: &str, rts: &str| {
        Connection::new("tun", me_addr, peer_addr)
            .proposals(&["aes256-sha256-x25519"])
            .local(AuthRound::psk(me))
            .remote(AuthRound::psk(peer))
            .child(
                Child::new("tun", lts, rts)
                    .mode("tunnel")
                    .esp_proposals(&["aes256gcm16-x25519", "aes128-sha256"]),
            )
    };
    let a = Charon::builder("libipsec-a")
        .kernel(KernelBackend::Libipsec {
            netns: ns.a.name().into(),
        })
        .connection(conn(
            OUTER_A,
            OUTER_B,
            "a@ironsa.test",
            "b@ironsa.test",
            SUBNET_A,
            SUBNET_B,
        ))
        .secret(secret())
        .start()
        .unwrap();
    let b = Charon::builder("libipsec-b")
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .connection(conn(
            OUTER_B,
            OUTER_A,
            "b@ironsa.test",
            "a@ironsa.test",
            SUBNET_B,
            SUBNET_A,
        ))
        .secret(secret())
        .start()
        .unwrap();
    let charons_up = Instant::now();
    let ping = || {
        ns.a.exec_bounded(
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", INNER_A, INNER_B],
            Duration::from_secs(8),
        )
    };
    check(&[&a, &b], || {
        a.swanctl().initiate(Target::Child("tun"), Duration::from_secs(10))?;
        let tunnel_up = charons_up.elapsed();
        ping()?;
        let sas_a = a.swanctl().list_sas()?;
        let sas_b = b.swanctl().list_sas()?;
        let (ia, ib) = (single_established(&sas_a), single_established(&sas_b));
        assert_mirror(ia, ib);
        assert_eq!(ia.local_port, 4500, "libipsec forces NAT-T");
        let (ca, cb) = (ia.installed_children(), ib.installed_children());
        assert_eq!((ca.len(), cb.len()), (1, 1), "{sas_a:#?} {sas_b:#?}");
        let (ca, cb) = (ca[0], cb[0]);
        assert_eq!(
            (ca.name.as_str(), ca.mode.as_str(), ca.protocol.as_str()),
            ("tun", "TUNNEL", "ESP")
        );
        assert!(ca.encap);
        assert_eq!(ca.spi_in, cb.spi_out);
        assert_eq!(ca.spi_out, cb.spi_in);
        assert_eq!(ca.encr_alg.as_deref(), Some("AES_GCM_16"));
        assert_eq!(ca.encr_keysize, Some(256));
        assert_eq!(ca.dh_group, None, "the first CHILD_SA comes from IKE_AUTH, without PFS");
        assert_eq!(ca.local_ts, vec![SUBNET_A.to_string()]);
        assert_eq!(ca.remote_ts, vec![SUBNET_B.to_string()]);
        assert!(
            ca.packets_out >= 3 && ca.packets_in >= 3,
            "ping went through the tunnel: {ca:#?}"
        );
        assert_eq!(cb.packets_in, ca.packets_out);

        // Rekey with PFS: new SPIs, x25519, traffic keeps flowing.
        a.swanctl().rekey(Target::Child("tun"))?;
        let sas_a = a.swanctl().wait_for_sas(Duration::from_secs(3), |s| {
            s.iter()
                .flat_map(|sa| sa.installed_children())
                .any(|c| c.spi_in != ca.spi_in)
        })?;
        let fresh = sas_a[0]
            .installed_children()
            .into_iter()
            .find(|c| c.spi_in != ca.spi_in)
            .cloned();
        let fresh = fresh.ok_or_else(|| support::HarnessError::Usage("no rekeyed child".into()))?;
        assert_eq!(fresh.dh_group.as_deref(), Some("CURVE_25519"));
        ping()?;
        let sas_b = b.swanctl().list_sas()?;
        let cb2 = sas_b[0].children.iter().find(|c| c.spi_in == fresh.spi_out).cloned();
        let cb2 = cb2.ok_or_else(|| support::HarnessError::Usage(format!("B lacks the rekeyed child: {sas_b:#?}")))?;
        assert_eq!(cb2.state, "INSTALLED");
        assert!(cb2.packets_in >= 3, "{cb2:#?}");
        eprintln!(
            "timing: charons up {:?}, tunnel up {:?}, total {:?}",
            charons_up - started,
            tunnel_up,
            started.elapsed()
        );
        Ok(())
    });
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn parser_reads_libipsec_initiator_fixture() {
    let sas = parse_list_sas(include_str!("../support/fixtures/list_sas_libipsec_initiator.txt")).unwrap();
    assert_eq!(sas.len(), 1);
    let sa = &sas[0];
    assert_eq!(sa.name, "c");
    assert_eq!((sa.unique_id, sa.version, sa.state.as_str()), (1, 2, "ESTABLISHED"));
    assert_eq!(sa.local_host, "10.99.0.1".parse::<IpAddr>().unwrap());
    assert_eq!((sa.local_port, sa.remote_port), (4500, 4500));
    assert_eq!(sa.remote_host, "10.99.0.2".parse::<IpAddr>().unwrap());
    assert_eq!((sa.local_id.as_str(), sa.remote_id.as_str()), ("a@test", "b@test"));
    assert!(sa.initiator);
    assert_eq!(sa.initiator_spi, 0x6e45af10edb776e3);
    assert_eq!(sa.responder_spi, 0x40a2dea494fd381d);
    assert_eq!(sa.local_spi(), 0x6e45af10edb776e3);
    assert_eq!(sa.remote_spi(), 0x40a2dea494fd381d);
    assert_eq!(sa.encr_alg.as_deref(), Some("AES_CBC"));
    assert_eq!(sa.encr_keysize, Some(256));
    assert_eq!(sa.integ_alg.as_deref(), Some("HMAC_SHA2_256_128"));
    assert_eq!(sa.prf_alg.as_deref(), Some("PRF_HMAC_SHA2_256"));
    assert_eq!(sa.dh_group.as_deref(), Some("CURVE_25519"));
    assert_eq!(sa.children.len(), 1);
    let c = &sa.children[0];
    assert_eq!(
        (c.key.as_str(), c.name.as_str(), c.unique_id, c.reqid),
        ("ch-1", "ch", 1, 1)
    );
    assert_eq!(
        (c.state.as_str(), c.mode.as_str(), c.protocol.as_str()),
        ("INSTALLED", "TUNNEL", "ESP")
    );
    assert!(c.encap);
    assert_eq!((c.spi_in, c.spi_out), (0x25444ab0, 0x0c786cd8));
    assert_eq!(
        (c.encr_alg.as_deref(), c.encr_keysize, c.integ_alg.as_deref()),
        (Some("AES_GCM_16"), Some(256), None)
    );
    assert_eq!(c.dh_group, None);
    assert_eq!((c.bytes_in, c.packets_in, c.bytes_out, c.packets_out), (252, 3, 252, 3));
    assert_eq!(c.local_ts, vec!["10.1.0.0/24"]);
    assert_eq!(c.remote_ts, vec!["10.2.0.0/24"]);
}

#[test]
fn parser_reads_rekeyed_responder_fixture() {
    let sas = parse_list_sas(include_str!(
        "../support/fixtures/list_sas_libipsec_responder_rekeyed.txt"
    ))
    .unwrap();
    assert_eq!(sas.len(), 1);
    let sa = &sas[0];
    assert!(!sa.initiator);
    assert_eq!(sa.local_spi(), sa.responder_spi);
    assert_eq!(sa.children.len(), 2);
    let (old, new) = (&sa.children[0], &sa.children[1]);
    assert_eq!(
        (old.key.as_str(), old.state.as_str(), old.spi_in, old.spi_out),
        ("ch-1", "DELETED", 0x0c786cd8, 0x25444ab0)
    );
    assert_eq!(
        (new.key.as_str(), new.state.as_str(), new.spi_in, new.spi_out),
        ("ch-2", "INSTALLED", 0x3370e741, 0x7f32b4b2)
    );
    assert_eq!(new.dh_group.as_deref(), Some("CURVE_25519"));
    assert_eq!((new.packets_in, new.bytes_in), (2, 168));
    assert_eq!(sa.installed_children().len(), 1);
    assert_eq!(new.local_ts, vec!["10.2.0.0/24"]);
}

#[test]
fn parser_reads_certificate_fixture_with_dn_identities() {
    let sas = parse_list_sas(include_str!("../support/fixtures/list_sas_ecdsa_ike_only.txt")).unwrap();
    assert_eq!(sas.len(), 1);
    let sa = &sas[0];
    assert_eq!(sa.name, "cert");
    assert_eq!(sa.remote_id, "C=CH, O=ironsa test, CN=b-ee");
    assert_eq!(sa.local_id, "a@ironsa.test");
    assert_eq!(sa.dh_group.as_deref(), Some("ECP_256"));
    assert!(sa.children.is_empty());
}

#[test]
fn parser_handles_empty_and_rejects_malformed_output() {
    assert!(parse_list_sas("list-sas reply {\n}\n").unwrap().is_empty());
    assert!(parse_list_sas("").unwrap().is_empty());
    let good = include_str!("../support/fixtures/list_sas_libipsec_initiator.txt");
    // Truncated output: unterminated sections.
    assert!(parse_list_sas(&good[..good.len() / 2]).is_err());
    // Unbalanced closing brace.
    assert!(parse_list_sas("}\n").is_err());
    // Non-hex SPI.
    assert!(parse_list_sas(&good.replace("initiator-spi = 6e45af10edb776e3", "initiator-spi = zz")).is_err());
    // SPI too large for u32.
    assert!(parse_list_sas(&good.replace("spi-in = 25444ab0", "spi-in = 125444ab0")).is_err());
    // Missing required field.
    assert!(parse_list_sas(&good.replace("    state = ESTABLISHED\n", "")).is_err());
    // Garbage line.
    assert!(parse_list_sas("list-sa event {\n  what is this\n}\n").is_err());
}

/// Two IKE-only charons on loopback with the given connection factory
/// `conn(local_port, remote_port, is_a)`; returns (a, b) after start.
fn loopback_pair(
    name: &str,
    conn: impl Fn(u16, u16, bool) -> Connection,
    setup_a: impl FnOnce(support::CharonBuilder) -> support::CharonBuilder,
    setup_b: impl FnOnce(support::CharonBuilder) -> support::CharonBuilder,
) -> (Charon, Charon) {
    let (port_a, nat_a) = free_udp_port_pair().unwrap();
    let (port_b, nat_b) = free_udp_port_pair().unwrap();
    let a = setup_a(
        Charon::builder(&format!("{name}-a"))
            .ports(port_a, nat_a)
            .connection(conn(port_a, port_b, true)),
    )
    .start()
    .unwrap();
    let b = setup_b(
        Charon::builder(&format!("{name}-b"))
            .ports(port_b, nat_b)
            .connection(conn(port_b, port_a, false)),
    )
    .start()
    .unwrap();
    (a, b)
}

#[test]
fn ikev1_aggressive_psk_needs_the_responder_setting() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    let started = Instant::now();
    let conn = |lp, rp, is_a: bool| {
        let (me, peer) = if is_a {
            ("a@ironsa.test", "b@ironsa.test")
        } else {
            ("b@ironsa.test", "a@ironsa.test")
        };
        Connection::new("v1", "127.0.0.1", "127.0.0.1")
            .version(support::IkeVersion::V1)
            .aggressive(true)
            .local_port(lp)
            .remote_port(rp)
            .proposals(&["aes256-sha256-modp2048"])
            .local(AuthRound::psk(me))
            .remote(AuthRound::psk(peer))
    };
    let secret = || Secret::psk("ab", &["a@ironsa.test", "b@ironsa.test"], PSK);
    let (a, b) = loopback_pair(
        "v1aggr",
        conn,
        |b| b.secret(secret()),
        |b| {
            b.secret(secret())
                .setting("i_dont_care_about_security_and_use_aggressive_mode_psk", "yes")
        },
    );
    check(&[&a, &b], || {
        a.swanctl().initiate(Target::Ike("v1"), Duration::from_secs(10))?;
        let sas_a = a.swanctl().list_sas()?;
        let sas_b = b
            .swanctl()
            .wait_for_sas(Duration::from_secs(3), |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))?;
        let (ia, ib) = (single_established(&sas_a), single_established(&sas_b));
        assert_mirror(ia, ib);
        assert_eq!((ia.version, ib.version), (1, 1));
        assert_eq!(ia.encr_alg.as_deref(), Some("AES_CBC"));
        assert_eq!(ia.integ_alg.as_deref(), Some("HMAC_SHA2_256_128"));
        assert_eq!(ia.dh_group.as_deref(), Some("MODP_2048"));
        assert!(a.log_contains("AGGRESSIVE"), "aggressive mode was used");
        Ok(())
    });
    drop((a, b));

    // Without the setting a strongSwan responder refuses aggressive mode PSK (both
    // connections still need `aggressive = yes`).
    let (a, b) = loopback_pair("v1refuse", conn, |b| b.secret(secret()), |b| b.secret(secret()));
    let refused = a.swanctl().initiate(Target::Ike("v1"), Duration::from_secs(4));
    if refused.is_ok() {
        a.dump_log();
        b.dump_log();
        panic!("aggressive mode PSK must be refused without the responder setting");
    }
    assert!(
        b.swanctl()
            .list_sas()
            .unwrap()
            .iter()
            .all(|sa| sa.state != "ESTABLISHED")
    );
    assert!(
        b.log_contains("Aggressive Mode PSK disabled for security reasons"),
        "{}",
        b.log_tail(30)
    );
    eprintln!("timing: total {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn ed25519_and_rsa_certificates_through_an_intermediate_chain() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("pki")]) {
        return;
    }
    let started = Instant::now();
    let pki = Pki::new().unwrap();
    let root = pki.root_ca("root", KeyType::Rsa(3072)).unwrap();
    let chain = pki.intermediate_chain(&root, "int", 2, KeyType::EcdsaP384).unwrap();
    assert_eq!(chain.len(), 2);
    assert!(chain.iter().all(|c| c.is_ca));
    let a_cert = pki
        .end_entity(
            &chain[1],
            "a-ee",
            KeyType::Ed25519,
            &[San::Dns("a.ironsa.test".into()), San::Email("a@ironsa.test".into())],
        )
        .unwrap();
    let b_cert = pki
        .end_entity(&root, "b-ee", KeyType::Rsa(2048), &[San::Dns("b.ironsa.test".into())])
        .unwrap();
    assert!(
        std::fs::read_to_string(&a_cert.key_pem)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert!(
        std::fs::read_to_string(&b_cert.key_pem)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n")
    );
    let gen_done = Instant::now();
    let conn = |lp, rp, is_a: bool| {
        let (me, peer, cert) = if is_a {
            ("a.ironsa.test", "b.ironsa.test", "a-ee.crt")
        } else {
            ("b.ironsa.test", "a.ironsa.test", "b-ee.crt")
        };
        Connection::new("chain", "127.0.0.1", "127.0.0.1")
            .local_port(lp)
            .remote_port(rp)
            .proposals(&["aes256gcm16-prfsha384-ecp384"])
            .local(AuthRound::pubkey(me).cert(cert))
            .remote(AuthRound::pubkey(peer))
    };
    // A holds the intermediates and must send them; B trusts only the root.
    let (a, b) = loopback_pair(
        "chain",
        conn,
        |b| b.identity(&a_cert).ca(&root).cert(&chain[0]).cert(&chain[1]),
        |b| b.identity(&b_cert).ca(&root),
    );
    check(&[&a, &b], || {
        a.swanctl().initiate(Target::Ike("chain"), Duration::from_secs(10))?;
        let sas_a = a.swanctl().list_sas()?;
        let sas_b = b
            .swanctl()
            .wait_for_sas(Duration::from_secs(3), |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))?;
        let (ia, ib) = (single_established(&sas_a), single_established(&sas_b));
        assert_mirror(ia, ib);
        assert_eq!(ia.dh_group.as_deref(), Some("ECP_384"));
        assert_eq!(ia.prf_alg.as_deref(), Some("PRF_HMAC_SHA2_384"));
        assert!(
            b.log_contains("authentication of 'a.ironsa.test' with ED25519 successful"),
            "Ed25519 signature checked"
        );
        assert!(b.log_contains("CN=int-2"), "B saw the intermediate sent by A");
        assert!(
            a.log_contains("authentication of 'b.ironsa.test' with RSA"),
            "RSA signature checked"
        );
        Ok(())
    });
    eprintln!(
        "timing: pki {:?}, charons+IKE {:?}",
        gen_done - started,
        gen_done.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn big_rsa_chain_forces_ike_fragmentation() {
    if support::skip_unless(&[Need::Root, Need::Charon, Need::Tool("pki")]) {
        return;
    }
    let started = Instant::now();
    let pki = Pki::new().unwrap();
    let (root, chain, ee) = pki.big_chain("big", 1, &[San::Dns("a.ironsa.test".into())]).unwrap();
    let cert_bytes: u64 = [&chain[0], &ee]
        .iter()
        .map(|c| std::fs::metadata(&c.cert_der).unwrap().len())
        .sum();
    assert!(cert_bytes > 1500, "chain certificates are {cert_bytes} bytes");
    let gen_done = Instant::now();
    let secret = || Secret::psk("ab", &["a.ironsa.test", "b@ironsa.test"], PSK);
    let conn = |lp, rp, is_a: bool| {
        let c = Connection::new("big", "127.0.0.1", "127.0.0.1")
            .local_port(lp)
            .remote_port(rp)
            .proposals(&["aes256gcm16-prfsha256-x25519"])
            .fragmentation("yes");
        if is_a {
            c.local(AuthRound::pubkey("a.ironsa.test").cert("big-ee.crt"))
                .remote(AuthRound::psk("b@ironsa.test"))
        } else {
            c.local(AuthRound::psk("b@ironsa.test"))
                .remote(AuthRound::pubkey("a.ironsa.test"))
        }
    };
    let (a, b) = loopback_pair(
        "big",
        conn,
        |b| {
            b.identity(&ee)
                .cert(&chain[0])
                .ca(&root)
                .secret(secret())
                .setting("fragment_size", "1280")
        },
        |b| b.ca(&root).secret(secret()),
    );
    check(&[&a, &b], || {
        a.swanctl().initiate(Target::Ike("big"), Duration::from_secs(10))?;
        let sas_b = b
            .swanctl()
            .wait_for_sas(Duration::from_secs(3), |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))?;
        single_established(&sas_b);
        assert!(
            a.log_contains("sending issuer cert \"C=CH, O=ironsa test, CN=big-int-1\"")
                && a.log_contains("splitting IKE message"),
            "IKE_AUTH was fragmented"
        );
        assert!(
            b.log_contains("reassembled fragmented IKE message"),
            "B reassembled IKE_AUTH"
        );
        Ok(())
    });
    eprintln!(
        "timing: pki {:?}, charons+IKE {:?}",
        gen_done - started,
        gen_done.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn drop_during_panic_stops_charon_deletes_namespaces_and_keeps_the_log() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = NetnsPair::new().unwrap();
        let c = Charon::builder("doomed")
            .kernel(KernelBackend::Libipsec {
                netns: ns.a.name().into(),
            })
            .start()
            .unwrap();
        *seen.lock().unwrap() = Some((
            c.pid().unwrap(),
            ns.a.name().to_string(),
            ns.b.name().to_string(),
            c.log_path(),
        ));
        panic!("deliberate failure to exercise cleanup");
    }));
    assert!(result.is_err());
    let (pid, ns_a, ns_b, log) = seen.lock().unwrap().take().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "charon {pid} still running"
    );
    let list = String::from_utf8(support::util::run("ip", &["netns", "list"]).unwrap().stdout).unwrap();
    assert!(
        !list.contains(&ns_a) && !list.contains(&ns_b),
        "namespaces left: {list}"
    );
    assert!(log.exists(), "log kept after a panic");
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("charon"),
        "log has content"
    );
    std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
}

/// What `skip_unless` checks: a tool on PATH is found, one that is not is
/// named with where to get it, and root is reported with the uid the test
/// runs as.
#[test]
fn require_names_what_is_missing() {
    use support::require::missing;
    assert_eq!(missing(Need::Tool("sh")), None);
    let absent = missing(Need::Tool("ironsa-no-such-tool")).expect("an absent tool is missing");
    assert!(
        absent.starts_with("ironsa-no-such-tool (not on PATH; scripts/install-deps.sh)"),
        "{absent}"
    );
    let euid = nix::unistd::geteuid();
    match missing(Need::Root) {
        None => assert!(euid.is_root()),
        Some(why) => assert_eq!(why, format!("root (running as uid {euid})")),
    }
}

#[test]
fn strongswan_conf_rendering_applies_settings_and_log_levels() {
    let builder = Charon::builder("render")
        .kernel(KernelBackend::Libipsec { netns: "unused".into() })
        .setting("dos_protection", "yes")
        .setting("cookie_threshold", "3")
        .setting("retransmit_tries", "5")
        .setting("plugins.kernel-libipsec.allow_peer_ts", "yes")
        .log_level("chd", 4)
        .log_level("ike", 1);
    let text = builder.strongswan_conf(std::path::Path::new("/x"), Some((5500, 5501)));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "dos_protection = yes",
        "cookie_threshold = 3",
        "retransmit_tries = 5",
        "allow_peer_ts = yes",
        "kernel-libipsec {",
        "vici {",
        "socket = unix:///x/charon.vici",
        "chd = 4",
        "ike = 1",
        "port = 5500",
        "port_nat_t = 5501",
        "install_routes = yes",
        "path = /x/charon.log",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in\n{text}");
    }
    assert!(
        !lines.contains(&"retransmit_tries = 2"),
        "setting overrides the default"
    );
    assert!(!lines.contains(&"ike = 2"), "log level overrides the default");
    let load = lines.iter().find(|l| l.starts_with("load = ")).unwrap();
    assert!(
        load.contains("kernel-libipsec kernel-netlink"),
        "libipsec listed before netlink: {load}"
    );
    assert_eq!(text.matches('{').count(), text.matches('}').count());

    let conf = support::SwanctlConf {
        connections: vec![
            Connection::new("c", "10.99.0.1", "10.99.0.2")
                .version(support::IkeVersion::V1)
                .aggressive(true)
                .proposals(&["aes128-sha256-modp2048", "aes256-sha384-ecp384"])
                .rekey_time("30s")
                .dpd_delay("5s")
                .local(AuthRound::psk("a@x"))
                .remote(AuthRound::pubkey("C=CH, CN=b").cacert("ca.crt"))
                .child(
                    Child::new("k", "10.1.0.0/24", "10.2.0.0/24")
                        .start_action("trap")
                        .rekey_time("10s"),
                ),
        ],
        secrets: vec![Secret::psk("s", &["a@x", "b@x"], "p\"w")],
        pools: Vec::new(),
    };
    let text = conf.render();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "version = 1",
        "aggressive = yes",
        "mobike = no",
        "fragmentation = yes",
        "proposals = aes128-sha256-modp2048,aes256-sha384-ecp384",
        "rekey_time = 30s",
        "dpd_delay = 5s",
        "id = \"C=CH, CN=b\"",
        "cacerts = ca.crt",
        "start_action = trap",
        "rekey_time = 10s",
        "ike-s {",
        "id-0 = a@x",
        "secret = \"p\\\"w\"",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in\n{text}");
    }
    assert_eq!(text.matches('{').count(), text.matches('}').count());
}

/// Documents charon 5.9.8's framing on non-500 ports, which any peer of a
/// custom-port charon must follow: on every port other than 500 charon sends
/// and expects the 4-byte non-ESP marker (RFC 3948), like on port 4500.
/// A datagram from a non-500 source port without the marker is read as ESP
/// and silently dropped; from port 500 it must come without the marker.
#[test]
fn charon_uses_non_esp_marker_on_every_port_but_500() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    use std::net::UdpSocket;
    let started = Instant::now();
    // A fake peer socket receives a real IKE_SA_INIT from charon A.
    let fake = UdpSocket::bind("127.0.0.1:0").unwrap();
    fake.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let fake_port = fake.local_addr().unwrap().port();
    let (port_a, nat_a) = free_udp_port_pair().unwrap();
    let (port_b, nat_b) = free_udp_port_pair().unwrap();
    let conn = |lp: u16, rp: u16, me: &str, peer: &str| {
        Connection::new("m", "127.0.0.1", "127.0.0.1")
            .local_port(lp)
            .remote_port(rp)
            .proposals(&["aes256gcm16-prfsha256-x25519"])
            .local(AuthRound::psk(me))
            .remote(AuthRound::psk(peer))
    };
    let secret = || Secret::psk("ab", &["a@ironsa.test", "b@ironsa.test"], PSK);
    let a = Charon::builder("marker-a")
        .ports(port_a, nat_a)
        .connection(conn(port_a, fake_port, "a@ironsa.test", "b@ironsa.test"))
        .secret(secret())
        .start()
        .unwrap();
    let b = Charon::builder("marker-b")
        .ports(port_b, nat_b)
        .connection(conn(port_b, port_a, "b@ironsa.test", "a@ironsa.test"))
        .secret(secret())
        .start()
        .unwrap();
    // Fire and forget: the initiation fails since nobody answers.
    let swanctl = a.swanctl().clone();
    let initiator = std::thread::spawn(move || swanctl.initiate(Target::Ike("m"), Duration::from_secs(2)));
    let mut buf = [0u8; 4096];
    let (len, from) = fake.recv_from(&mut buf).unwrap();
    assert_eq!(from.port(), port_a);
    assert_eq!(
        &buf[..4],
        &[0, 0, 0, 0],
        "charon prepends the non-ESP marker towards port {fake_port}"
    );
    let ike = buf[4..len].to_vec();
    assert_eq!((ike[17], ike[18]), (0x20, 34), "IKEv2 IKE_SA_INIT");

    // Replay it (fresh initiator SPIs) to B from an ephemeral port.
    let probe = |n: u8, marker: bool| -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        let mut pkt = if marker { vec![0u8; 4] } else { Vec::new() };
        let mut msg = ike.clone();
        msg[..8].copy_from_slice(&[0x42, n, 1, 2, 3, 4, 5, 6]);
        pkt.extend_from_slice(&msg);
        sock.send_to(&pkt, ("127.0.0.1", port_b)).unwrap();
        let mut resp = [0u8; 4096];
        match sock.recv_from(&mut resp) {
            Ok((rlen, _)) => {
                assert!(rlen > 4 && resp[..4] == [0, 0, 0, 0], "reply carries the marker");
                assert_eq!(resp[4..12], msg[..8], "reply to our SPI");
                true
            }
            Err(_) => false,
        }
    };
    let with_marker = probe(1, true);
    let without_marker = probe(2, false);
    let _ = initiator.join();
    if !with_marker || without_marker {
        a.dump_log();
        b.dump_log();
    }
    assert!(
        with_marker,
        "charon answers a marked IKE_SA_INIT from an ephemeral port"
    );
    assert!(
        !without_marker,
        "charon drops an unmarked IKE_SA_INIT from an ephemeral port"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

//! ikegen (as a library) against a real strongSwan charon on loopback: N
//! childless IKE SAs (charon on this kernel cannot install CHILD_SAs with
//! kernel-netlink), from many 127.0.1.x source addresses on ephemeral ports
//! with the non-ESP marker (charon only answers IKE from port 500 or with the
//! marker), through charon's COOKIE demands; `swanctl --list-sas` must show
//! exactly the IKE SAs the generator reports.
//!
//! Needs root and Debian's strongswan-charon, strongswan-swanctl.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ironsa_bench::ikegen::options::Settings;
use ironsa_bench::ikegen::run;
use support::util::free_udp_port_pair;
use support::{AuthRound, Charon, Connection, Secret};

const PSK: &str = "a-long-random-test-secret-for-ikegen";
const N: u64 = 50;

#[test]
fn ikegen_establishes_50_childless_ike_sas_with_charon() {
    let (port, nat) = free_udp_port_pair().unwrap();
    let charon = Charon::builder("ikegen")
        .ports(port, nat)
        // Room for all SAs in one burst; charon still demands cookies above its
        // cookie_threshold, which the generator must answer.
        .setting("block_threshold", "100")
        .setting("cookie_threshold", "10")
        .connection(
            Connection::new("gen", "127.0.0.1", "%any")
                .proposals(&["aes256gcm16-prfsha256-x25519"])
                .local(AuthRound::psk("charon@ikegen.test"))
                .remote(AuthRound::psk("ikegen@ikegen.test")),
        )
        .secret(Secret::psk("gen", &["charon@ikegen.test", "ikegen@ikegen.test"], PSK))
        .start()
        .unwrap();
    let remote: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = Settings {
        remote: Some(remote),
        source: Some(vec!["127.0.1.0/26".into()]),
        tunnels: Some(N),
        concurrency: Some(25),
        childless: Some(true),
        local_id: Some("ikegen@ikegen.test".into()),
        remote_id: Some("charon@ikegen.test".into()),
        psk: Some(PSK.into()),
        retransmit_timeout: Some(1.0),
        retransmit_tries: Some(3),
        timeout: Some(30.0),
        ..Settings::default()
    }
    .resolve()
    .unwrap();
    assert!(!cfg.initial_contact, "a shared identity must not send INITIAL_CONTACT");
    let report = run(&cfg, None).unwrap();
    if report.established != N {
        charon.dump_log();
    }
    assert_eq!(report.attempted, N);
    assert_eq!(report.established, N, "{}", report.render_text());
    assert!(report.is_consistent());
    assert!(
        report.cookies_received > 0,
        "charon demands cookies above 10 half-open SAs"
    );
    let sas = charon
        .swanctl()
        .wait_for_sas(Duration::from_secs(5), |s| {
            s.iter().filter(|sa| sa.state == "ESTABLISHED").count() as u64 == N
        })
        .unwrap_or_else(|e| {
            charon.dump_log();
            panic!("{e}")
        });
    let established: Vec<_> = sas.iter().filter(|sa| sa.state == "ESTABLISHED").collect();
    assert_eq!(established.len() as u64, report.established);
    for sa in &established {
        assert!(!sa.initiator);
        assert_eq!(sa.remote_id, "ikegen@ikegen.test");
        assert_eq!(sa.local_port, port);
        assert!(sa.children.is_empty(), "childless IKE SAs");
        assert_eq!(sa.dh_group.as_deref(), Some("CURVE_25519"));
    }
    // Every SA came from one of the generator's source addresses.
    let sources: std::collections::HashSet<_> = established.iter().map(|sa| sa.remote_host).collect();
    assert!(sources.len() > 1, "spread over several source addresses");
    assert!(sources.iter().all(|ip| ip.to_string().starts_with("127.0.1.")));
}

//! The RADIUS client against a real FreeRADIUS 3.2, started by the test from
//! a configuration generated into a temporary directory: EAP-MSCHAPv2
//! relayed end to end with the client-side EAP state machine as the user,
//! failover from a silent server, forged replies dropped and counted, and
//! accounting Start/Stop in FreeRADIUS's detail file; ironsa's EAP-TLS peer
//! against FreeRADIUS's EAP-TLS (TLS 1.2 and 1.3) with the same MSK.

#[path = "../support/mod.rs"]
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use control::eap::{self, Code as EapCode, Method, Packet, Payload, Peer, PeerConfig, PeerStep, SystemRng};
use ironsa::aaa::client::{ClientConfig, Purpose, RadiusClient, RadiusServer, Reply, Request};
use ironsa::aaa::radius::{self, Code};
use support::Need;
use support::freeradius::{SECRET, start_freeradius, start_freeradius_with};
use zeroize::Zeroizing;

fn server(port: u16) -> RadiusServer {
    RadiusServer {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        secret: Zeroizing::new(SECRET.as_bytes().to_vec()),
    }
}

fn client(ports: &[u16]) -> RadiusClient {
    client_for(ports, Purpose::Authentication)
}

fn client_for(ports: &[u16], purpose: Purpose) -> RadiusClient {
    RadiusClient::start(ClientConfig {
        servers: ports.iter().map(|&p| server(p)).collect(),
        timeout: Duration::from_millis(300),
        tries_per_server: 2,
        max_outstanding: 16,
        bind: "127.0.0.1:0".parse().expect("address"),
        purpose,
    })
    .expect("client starts")
}

/// Relays one EAP conversation through `client`; returns the final reply
/// and the peer's outcome.
fn relay(client: &RadiusClient, user: &str, password: &str) -> (Reply, PeerStep) {
    let mut rng = SystemRng;
    let mut peer = Peer::new(PeerConfig {
        identity: user.as_bytes().to_vec(),
        password: Zeroizing::new(password.into()),
        methods: vec![Method::MsChapV2],
    });
    let identity_request = Packet {
        code: EapCode::Request,
        identifier: 0,
        payload: Some(Payload::Identity(b"")),
    };
    let PeerStep::Send(mut eap_out) = peer
        .handle(&identity_request.to_bytes().expect("encodes"), &mut rng)
        .expect("identity")
    else {
        panic!("peer did not answer the Identity request")
    };
    let mut state = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let reply = client
            .access(Request {
                user_name: user.as_bytes().to_vec(),
                eap_message: Some(eap_out.clone()),
                state: state.take(),
                attributes: vec![(radius::Attr::NAS_IDENTIFIER, b"ironsa-test".to_vec())],
            })
            .expect("a verified reply");
        let eap_in = reply.eap_message.clone().expect("EAP-Message in the reply");
        match peer.handle(&eap_in, &mut rng).expect("peer accepts the server's EAP") {
            PeerStep::Send(next) => {
                assert_eq!(reply.code, Code::AccessChallenge);
                eap_out = next;
                state = reply.state.clone();
            }
            outcome => return (reply, outcome),
        }
    }
    panic!("EAP conversation did not finish in 20 s");
}

/// A RADIUS "server" that answers every request with a forged Response
/// Authenticator and with an unknown identifier.
fn forger() -> (u16, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = sock.local_addr().expect("addr").port();
    sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut reply = buf[..20.min(n)].to_vec();
            reply[0] = 2;
            reply[2..4].copy_from_slice(&20u16.to_be_bytes());
            reply[4..20].fill(0x5a);
            let _ = sock.send_to(&reply, from);
            reply[1] = reply[1].wrapping_add(7);
            let _ = sock.send_to(&reply, from);
        }
    });
    (port, t)
}

#[test]
fn eap_mschapv2_relayed_through_freeradius_with_failover_and_forgeries() {
    if support::skip_unless(&[Need::Tool("freeradius")]) {
        return;
    }
    let fr = start_freeradius();

    // The first server is silent (bound, never answers): failover.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let c = client(&[silent_port, fr.port]);
    let (accept, outcome) = relay(&c, "alice", "alice-secret-1");
    assert_eq!(accept.code, Code::AccessAccept);
    assert_eq!(accept.server.port(), fr.port);
    let PeerStep::Success { msk: Some(peer_msk) } = outcome else {
        panic!("peer outcome {outcome:?}")
    };
    let radius_msk = accept.msk().expect("MS-MPPE keys in the Access-Accept");
    assert_eq!(
        radius_msk[..],
        peer_msk[..],
        "MSK from MS-MPPE keys differs from the peer's"
    );
    assert_eq!(accept.framed_ip_address, Some("10.9.0.7".parse().expect("address")));
    let s = c.stats();
    assert!(s.failovers.load(Ordering::Relaxed) >= 1, "no failover counted");
    assert!(
        s.retransmitted.load(Ordering::Relaxed) >= 1,
        "no retransmission to the silent server"
    );

    // Wrong password: MSCHAPv2 failure, then Access-Reject with EAP-Failure.
    let (reject, outcome) = relay(&c, "bob", "not-bobs");
    assert_eq!(reject.code, Code::AccessReject);
    assert!(matches!(outcome, PeerStep::Failure { .. }), "{outcome:?}");
    assert!(
        eap::decode(&reject.eap_message.expect("EAP-Failure"))
            .map(|p| p.code == EapCode::Failure)
            .unwrap_or(false)
    );

    // A forging server first: its replies are dropped and counted, and the
    // real server still answers.
    let (forger_port, forger_thread) = forger();
    let c2 = client(&[forger_port, fr.port]);
    let (accept, outcome) = relay(&c2, "alice", "alice-secret-1");
    assert_eq!(accept.code, Code::AccessAccept);
    assert!(matches!(outcome, PeerStep::Success { msk: Some(_) }));
    let s = c2.stats();
    assert!(
        s.dropped_bad_authenticator.load(Ordering::Relaxed) >= 2,
        "forged authenticators not counted: {s:?}"
    );
    assert!(
        s.dropped_unknown_identifier.load(Ordering::Relaxed) >= 2,
        "unknown identifiers not counted: {s:?}"
    );
    drop(c2);
    let _ = forger_thread.join();

    // Accounting Start and Stop with counters land in the detail file.
    let acct = client_for(&[silent_port, fr.acct_port], Purpose::Accounting);
    for (status, octets) in [(radius::AcctStatus::START, 0u32), (radius::AcctStatus::STOP, 123_456)] {
        let reply = acct
            .access(Request {
                user_name: b"alice".to_vec(),
                attributes: vec![
                    (radius::Attr::ACCT_STATUS_TYPE, status.to_be_bytes().to_vec()),
                    (radius::Attr::ACCT_SESSION_ID, b"ike-sa-0001".to_vec()),
                    (radius::Attr::ACCT_INPUT_OCTETS, octets.to_be_bytes().to_vec()),
                    (radius::Attr::ACCT_OUTPUT_OCTETS, (octets / 2).to_be_bytes().to_vec()),
                ],
                ..Default::default()
            })
            .expect("Accounting-Response");
        assert_eq!(reply.code, Code::AccountingResponse);
    }
    let detail = fr.detail("127.0.0.1");
    assert!(
        detail.contains("Acct-Status-Type = Start") && detail.contains("Acct-Status-Type = Stop"),
        "{detail}"
    );
    assert!(
        detail.contains("Acct-Input-Octets = 123456") && detail.contains("Acct-Session-Id = \"ike-sa-0001\""),
        "{detail}"
    );
    drop(silent);
}

#[test]
fn outage_cannot_grow_the_outstanding_table() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let c = RadiusClient::start(ClientConfig {
        servers: vec![server(port)],
        timeout: Duration::from_millis(200),
        tries_per_server: 1,
        max_outstanding: 4,
        bind: "127.0.0.1:0".parse().expect("address"),
        purpose: Purpose::Authentication,
    })
    .expect("client");
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..4 {
        let tx = tx.clone();
        c.submit(
            Request {
                user_name: b"alice".to_vec(),
                ..Default::default()
            },
            Box::new(move |r| drop(tx.send(r))),
        )
        .expect("within the limit");
    }
    let refused = c.submit(
        Request {
            user_name: b"alice".to_vec(),
            ..Default::default()
        },
        Box::new(|_| {}),
    );
    assert!(matches!(
        refused,
        Err(ironsa::aaa::client::ClientError::Overloaded { limit: 4 })
    ));
    for _ in 0..4 {
        let r = rx.recv_timeout(Duration::from_secs(5)).expect("each request completes");
        assert!(matches!(
            r,
            Err(ironsa::aaa::client::ClientError::AllServersDown { .. })
        ));
    }
    // Capacity is back once they timed out.
    c.submit(
        Request {
            user_name: b"alice".to_vec(),
            ..Default::default()
        },
        Box::new(|_| {}),
    )
    .expect("capacity back");
    assert_eq!(c.stats().overloaded.load(Ordering::Relaxed), 1);
    assert_eq!(c.stats().timed_out.load(Ordering::Relaxed), 4);
}

/// FreeRADIUS's EAP-TLS with certificates made here, TLS `version` only.
fn eap_tls_module(server: &support::pki::CertFiles, ca: &support::pki::CertFiles, version: &str) -> String {
    format!(
        "eap {{\n default_eap_type = tls\n timer_expire = 60\n ignore_unknown_eap_types = no\n max_sessions = 1024\n \
         tls-config tls-common {{\n  private_key_file = \"{}\"\n  certificate_file = \"{}\"\n  ca_file = \"{}\"\n  \
         cipher_list = \"DEFAULT\"\n  tls_min_version = \"{version}\"\n  tls_max_version = \"{version}\"\n  fragment_size = 1024\n }}\n \
         tls {{\n  tls = tls-common\n }}\n}}\n",
        server.key_pem.display(),
        server.cert_pem.display(),
        ca.cert_pem.display(),
    )
}

/// ironsa's EAP-TLS peer through the RADIUS client to FreeRADIUS's EAP-TLS:
/// the MSK the peer derives equals the one FreeRADIUS sends in its
/// MS-MPPE keys, for TLS 1.2 and 1.3.
#[test]
fn eap_tls_peer_against_freeradius() {
    use control::eap::tls::{EapTlsPeer, PeerStep as TlsStep, TlsCredentials, TlsVersion, peer_config};
    use support::pki::{KeyType, Pki, San};
    if support::skip_unless(&[Need::Tool("freeradius"), Need::Tool("pki")]) {
        return;
    }
    let pki = Pki::new().expect("pki workspace");
    let ca = pki.root_ca("eap-ca", KeyType::EcdsaP256).expect("CA");
    let server = pki
        .end_entity(
            &ca,
            "radius",
            KeyType::EcdsaP256,
            &[San::Dns("radius.example.org".into())],
        )
        .expect("server certificate");
    let carol = pki
        .end_entity(
            &ca,
            "carol",
            KeyType::EcdsaP256,
            &[San::Email("carol@example.org".into())],
        )
        .expect("client certificate");
    let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ours = TlsCredentials {
        chain: vec![read(&carol.cert_der)],
        key: Zeroizing::new(read(&carol.key_der)),
    };
    for (version, name) in [(TlsVersion::V1_2, "1.2"), (TlsVersion::V1_3, "1.3")] {
        let fr = start_freeradius_with(&eap_tls_module(&server, &ca, name));
        let c = client(&[fr.port]);
        let config = peer_config(&ours, &[read(&ca.cert_der)], &[version]).expect("peer config");
        let server_name = rustls_server_name("radius.example.org");
        let mut peer = EapTlsPeer::new(config, server_name, 1000).expect("peer");
        let mut eap_out = Packet {
            code: EapCode::Response,
            identifier: 0,
            payload: Some(Payload::Identity(b"carol")),
        }
        .to_bytes()
        .expect("identity");
        let mut state = None;
        let mut rounds = 0;
        let (reply, msk) = loop {
            rounds += 1;
            assert!(rounds < 50, "TLS {name}: no end after 50 round trips");
            let reply = c
                .access(Request {
                    user_name: b"carol".to_vec(),
                    eap_message: Some(eap_out.clone()),
                    state: state.take(),
                    attributes: vec![(radius::Attr::NAS_IDENTIFIER, b"ironsa-test".to_vec())],
                })
                .expect("a verified reply");
            let eap_in = reply.eap_message.clone().expect("EAP-Message in the reply");
            match peer.handle(&eap_in).unwrap_or_else(|e| panic!("TLS {name}: {e}")) {
                TlsStep::Response(next) => {
                    assert_eq!(reply.code, Code::AccessChallenge, "TLS {name}");
                    eap_out = next;
                    state = reply.state.clone();
                }
                TlsStep::Success(msk) => break (reply, msk),
            }
        };
        assert_eq!(reply.code, Code::AccessAccept, "TLS {name}");
        let radius_msk = reply.msk().expect("MS-MPPE keys in the Access-Accept");
        assert_eq!(radius_msk[..], msk[..], "TLS {name}: MSK differs from FreeRADIUS's");
        assert!(rounds > 3, "TLS {name}: fragments were relayed ({rounds} round trips)");
    }
}

fn rustls_server_name(name: &str) -> control::eap::tls::ServerName<'static> {
    control::eap::tls::ServerName::try_from(name.to_string()).expect("server name")
}

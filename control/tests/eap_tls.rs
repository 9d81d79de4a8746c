//! EAP-TLS between ironsa's peer and authenticator in memory, TLS 1.2 and
//! 1.3, with fragmentation; certificates generated here.

use std::sync::Arc;

use control::eap::tls::{
    EapTlsError, EapTlsPeer, EapTlsServer, PeerStep, ServerStep, TlsVersion, peer_config, server_config,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig};

#[path = "harness/tls_pki.rs"]
mod tls_pki;
use tls_pki::{Pki, credentials, pki};

fn configs(
    pki: &Pki,
    client: &(CertificateDer<'static>, PrivateKeyDer<'static>),
    version: TlsVersion,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let cas = [pki.ca.to_vec()];
    (
        server_config(&credentials(&pki.server), &cas, &[version]).expect("server config"),
        peer_config(&credentials(client), &cas, &[version]).expect("peer config"),
    )
}

/// What one run shows: the authenticator's MSK, the peer's, the peer
/// certificate the authenticator saw, and the EAP round trips.
#[derive(Debug)]
struct Outcome {
    server_msk: [u8; 64],
    peer_msk: [u8; 64],
    peer_certificate: Vec<u8>,
    rounds: usize,
}

/// Runs the exchange; returns both MSKs, the peer's certificate as the
/// authenticator saw it, and the number of EAP round trips.
fn run(server_cfg: Arc<ServerConfig>, client_cfg: Arc<ClientConfig>, fragment: usize) -> Result<Outcome, EapTlsError> {
    let mut server = EapTlsServer::new(server_cfg, fragment)?;
    let name = ServerName::try_from("radius.example.org").expect("name");
    let mut peer = EapTlsPeer::new(client_cfg, name, fragment)?;
    let mut request = server.start(2)?;
    for round in 1..100 {
        let response = match peer.handle(&request)? {
            PeerStep::Response(r) => r,
            PeerStep::Success(_) => panic!("success before the authenticator said so"),
        };
        match server.handle(&response)? {
            ServerStep::Request(r) => request = r,
            ServerStep::Success {
                packet,
                msk,
                peer_certificates,
            } => {
                let PeerStep::Success(peer_msk) = peer.handle(&packet)? else {
                    panic!("peer did not accept EAP-Success");
                };
                return Ok(Outcome {
                    server_msk: *msk,
                    peer_msk: *peer_msk,
                    peer_certificate: peer_certificates[0].clone(),
                    rounds: round,
                });
            }
        }
    }
    panic!("no end after 100 rounds");
}

#[test]
fn tls12_and_tls13_agree_on_the_msk_with_fragments() {
    let pki = pki();
    for version in [TlsVersion::V1_2, TlsVersion::V1_3] {
        let (s, c) = configs(&pki, &pki.client, version);
        let Outcome {
            server_msk,
            peer_msk,
            peer_certificate: cert,
            rounds,
        } = run(s, c, 200).expect("EAP-TLS");
        assert_eq!(server_msk, peer_msk, "{version:?}");
        assert_ne!(server_msk, [0; 64]);
        assert_eq!(cert, pki.client.0.as_ref(), "the authenticator saw our certificate");
        assert!(
            rounds > 5,
            "{version:?}: 200-byte fragments need several rounds, took {rounds}"
        );
        // Large fragments: fewer rounds, a fresh MSK.
        let (s, c) = configs(&pki, &pki.client, version);
        let Outcome {
            server_msk: again,
            rounds: few,
            ..
        } = run(s, c, 4000).expect("EAP-TLS");
        assert!(few < rounds, "{version:?}: {few} rounds with large fragments");
        assert_ne!(again, server_msk, "each session has its own MSK");
    }
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let pki = pki();
    for version in [TlsVersion::V1_2, TlsVersion::V1_3] {
        let (s, c) = configs(&pki, &pki.stranger, version);
        match run(s, c, 1000) {
            Err(EapTlsError::Tls(e)) => assert!(e.to_string().contains("certificate"), "{e}"),
            other => panic!("{version:?}: expected a TLS error, got {other:?}"),
        }
    }
}

#[test]
fn malformed_and_oversized_frames_are_errors() {
    let pki = pki();
    let (s, _) = configs(&pki, &pki.client, TlsVersion::V1_3);
    let mut server = EapTlsServer::new(s, 1000).expect("server");
    let _ = server.start(7).expect("start");
    // Response, id 7, type 13, flags L|M, length 1 MiB.
    let oversized = [2, 7, 0, 10, 13, 0xc0, 0, 0x10, 0, 0];
    assert!(matches!(server.handle(&oversized), Err(EapTlsError::TooLarge(_))));
    let no_flags = [2, 7, 0, 5, 13];
    assert!(matches!(server.handle(&no_flags), Err(EapTlsError::Malformed(_))));
    let wrong_id = [2, 9, 0, 6, 13, 0];
    assert!(matches!(server.handle(&wrong_id), Err(EapTlsError::Unexpected(_))));
    let truncated_length = [2, 7, 0, 8, 13, 0x80, 0, 0];
    assert!(matches!(
        server.handle(&truncated_length),
        Err(EapTlsError::Malformed(_))
    ));
    let garbage_tls = [2, 7, 0, 10, 13, 0, 0x16, 0x03, 0x03, 0xff];
    assert!(server.handle(&garbage_tls).is_err());
}

/// An EAP-TLS Response numbered `id` with `body` (Flags, [length], data).
fn response(id: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![2, id, 0, 0, 13];
    p.extend_from_slice(body);
    let len = (p.len() as u16).to_be_bytes();
    p[2..4].copy_from_slice(&len);
    p
}

#[test]
fn a_fragment_flood_ends_at_the_message_bound() {
    let pki = pki();
    let (s, _) = configs(&pki, &pki.client, TlsVersion::V1_2);
    let mut server = EapTlsServer::new(s, 1000).expect("server");
    let _ = server.start(7).expect("start");
    let mut id = 7u8;
    let mut chunk = vec![0x40];
    chunk.extend_from_slice(&[0x16; 1000]);
    let mut acked = 0;
    let err = loop {
        match server.handle(&response(id, &chunk)) {
            Ok(ServerStep::Request(ack)) => {
                assert_eq!(&ack[4..], &[13, 0], "each fragment is acknowledged with an empty frame");
                id = ack[1];
                acked += 1;
                assert!(
                    acked <= control::eap::tls::MAX_TLS_MESSAGE / 1000,
                    "no bound after {acked} fragments"
                );
            }
            other => break other,
        }
    };
    assert!(matches!(err, Err(EapTlsError::TooLarge(_))), "{err:?}");
    assert_eq!(acked, control::eap::tls::MAX_TLS_MESSAGE / 1000);
    assert!(server.buffered() <= control::eap::tls::MAX_TLS_MESSAGE);
}

#[test]
fn fragments_must_match_the_announced_length() {
    let pki = pki();
    let (s, _) = configs(&pki, &pki.client, TlsVersion::V1_3);
    let mut server = EapTlsServer::new(s, 1000).expect("server");
    let _ = server.start(1).expect("start");
    // L|M announcing 100 bytes, with 60.
    let mut first = vec![0xc0, 0, 0, 0, 100];
    first.extend_from_slice(&[0x16; 60]);
    let Ok(ServerStep::Request(ack)) = server.handle(&response(1, &first)) else {
        panic!("first fragment acknowledged");
    };
    let id = ack[1];
    // More than announced, a last fragment short of it, another length: dropped.
    let mut over = vec![0x40];
    over.extend_from_slice(&[0x16; 41]);
    let mut short = vec![0x00];
    short.extend_from_slice(&[0x16; 39]);
    let mut relabelled = vec![0xc0, 0, 0, 0, 120];
    relabelled.extend_from_slice(&[0x16; 10]);
    for bad in [over, short, relabelled] {
        let r = server.handle(&response(id, &bad));
        assert!(matches!(r, Err(EapTlsError::Malformed(_))), "{r:?}");
        assert_eq!(server.buffered(), 60, "a rejected fragment changes nothing");
    }
}

#[test]
fn truncated_and_out_of_order_input_to_the_peer_is_an_error() {
    let pki = pki();
    let (_, c) = configs(&pki, &pki.client, TlsVersion::V1_3);
    let name = ServerName::try_from("radius.example.org").expect("name");
    let mut peer = EapTlsPeer::new(c, name, 1000).expect("peer");
    // EAP-Success before any TLS.
    assert!(matches!(peer.handle(&[3, 1, 0, 4]), Err(EapTlsError::Incomplete(_))));
    // Shorter than its EAP Length.
    assert!(matches!(
        peer.handle(&[1, 1, 0, 9, 13, 0x20]),
        Err(EapTlsError::Malformed(_))
    ));
    let start = [1, 1, 0, 6, 13, 0x20];
    assert!(matches!(peer.handle(&start), Ok(PeerStep::Response(_))));
    assert!(
        matches!(peer.handle(&start), Err(EapTlsError::Unexpected(_))),
        "a second Start"
    );
    // A TLS record that is not a ServerHello.
    let alert = [1, 2, 0, 13, 13, 0, 0x15, 3, 3, 0, 2, 2, 40];
    assert!(peer.handle(&alert).is_err());
}

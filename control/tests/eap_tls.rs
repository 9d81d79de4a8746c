//! EAP-TLS between ironsa's peer and authenticator in memory, TLS 1.2 and
//! 1.3, with fragmentation; certificates generated here.

use std::sync::Arc;

use control::eap::tls::{
    EapTlsError, EapTlsPeer, EapTlsServer, PeerStep, ServerStep, TlsCredentials, TlsVersion, peer_config, server_config,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use zeroize::Zeroizing;

struct Pki {
    ca: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
    stranger: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("CA");
    (cert.der().clone(), Issuer::new(p, key))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut p = CertificateParams::new(vec![name.to_string()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("leaf");
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

fn pki() -> Pki {
    let (ca_der, issuer) = ca("EAP test CA");
    let (_, other) = ca("another CA");
    Pki {
        ca: ca_der,
        server: leaf(&issuer, "radius.example.org", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf(&issuer, "carol.example.org", ExtendedKeyUsagePurpose::ClientAuth),
        stranger: leaf(&other, "mallory.example.org", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

fn credentials(c: &(CertificateDer<'static>, PrivateKeyDer<'static>)) -> TlsCredentials {
    TlsCredentials {
        chain: vec![c.0.to_vec()],
        key: Zeroizing::new(c.1.secret_der().to_vec()),
    }
}

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

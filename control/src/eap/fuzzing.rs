//! Entry points shared by the fuzz targets and the corpus test, so both run
//! exactly the same code.

use super::codec::{self, Code};
use super::{Authenticator, AuthenticatorConfig, Credential, Method, Peer, PeerConfig, RngFailure, UserStore};

/// Decodes arbitrary bytes; whatever decodes must encode back to the same
/// bytes (the codec is strict, so there is one encoding per packet).
pub fn eap_decode(data: &[u8]) {
    if let Ok(p) = codec::decode(data) {
        let again = codec::encode(&p).expect("a decoded packet encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
    }
}

struct OneUser;

impl UserStore for OneUser {
    fn credential(&self, identity: &[u8]) -> Option<Credential> {
        (identity == b"alice").then(|| Credential::Password(zeroize::Zeroizing::new("alice-secret".into())))
    }
}

/// Feeds arbitrary EAP-MSCHAPv2 payloads (the bytes after the EAP Type) to
/// both state machines, framed with consistent lengths so the MSCHAPv2
/// decoder itself is reached: no panic, and neither side authenticates.
pub fn mschapv2_sessions(data: &[u8]) {
    let mut counter = 0u8;
    let mut rng = |b: &mut [u8]| -> Result<(), RngFailure> {
        for x in b.iter_mut() {
            counter = counter.wrapping_add(1);
            *x = counter;
        }
        Ok(())
    };
    let config = AuthenticatorConfig {
        methods: vec![Method::MsChapV2, Method::Md5],
        ..Default::default()
    };
    let Ok((mut auth, _)) = Authenticator::start(config, Some(b"alice"), &OneUser, &mut rng) else {
        return;
    };
    let mut peer = Peer::new(PeerConfig {
        identity: b"alice".to_vec(),
        password: zeroize::Zeroizing::new("alice-secret".into()),
        methods: vec![Method::MsChapV2, Method::Md5],
    });
    for chunk in data.split(|&b| b == 0xff).take(8) {
        for code in [Code::Request as u8, Code::Response as u8] {
            let Some(&id) = chunk.first() else { continue };
            let mut pkt = vec![code, id, 0, 0, 26];
            pkt.extend_from_slice(&chunk[1..]);
            let Ok(len) = u16::try_from(pkt.len()) else { continue };
            pkt[2..4].copy_from_slice(&len.to_be_bytes());
            if pkt.len() >= 9 {
                pkt[7..9].copy_from_slice(&len.wrapping_sub(5).to_be_bytes());
            }
            let a = auth.handle(&pkt, &OneUser, &mut rng);
            assert!(
                !matches!(a, Ok(super::AuthenticatorStep::Success { .. })),
                "authenticated without the password"
            );
            let p = peer.handle(&pkt, &mut rng);
            assert!(
                !matches!(p, Ok(super::PeerStep::Success { .. })),
                "peer accepted an unproven server"
            );
        }
    }
}

/// TLS configurations of both roles from the test PKI, built once.
fn tls_configs() -> &'static (
    std::sync::Arc<rustls::ServerConfig>,
    std::sync::Arc<rustls::ClientConfig>,
) {
    use super::tls::{TlsCredentials, TlsVersion, peer_config, server_config};
    static CONFIGS: std::sync::OnceLock<(
        std::sync::Arc<rustls::ServerConfig>,
        std::sync::Arc<rustls::ClientConfig>,
    )> = std::sync::OnceLock::new();
    CONFIGS.get_or_init(|| {
        let chain =
            crate::pki::Certificate::load(include_bytes!("../../tests/data/pki/ee-p256.pem")).expect("test cert");
        let ca = crate::pki::Certificate::load(include_bytes!("../../tests/data/pki/ca-ecdsa.pem")).expect("test CA");
        let ours = TlsCredentials::from_files(&chain, include_bytes!("../../tests/data/pki/ee-p256.key")).expect("key");
        let cas = [ca[0].der().to_vec()];
        let versions = [TlsVersion::V1_3, TlsVersion::V1_2];
        (
            server_config(&ours, &cas, &versions).expect("server config"),
            peer_config(&ours, &cas, &versions).expect("peer config"),
        )
    })
}

/// Feeds arbitrary EAP-TLS frames (split at 0xff; each the Flags byte, an
/// optional TLS Message Length and data) to an authenticator, as Responses
/// to its outstanding Request, and to a peer, as Requests: fragment
/// reassembly and rustls see them. No panic, reassembly stays within its
/// bound, and neither side completes.
pub fn eap_tls_frames(data: &[u8]) {
    use super::tls::{EAP_TLS, EapTlsPeer, EapTlsServer, PeerStep, ServerName, ServerStep};
    let (server_config, client_config) = tls_configs();
    let (Ok(mut server), Ok(mut peer)) = (
        EapTlsServer::new(server_config.clone(), 256),
        EapTlsPeer::new(
            client_config.clone(),
            ServerName::try_from("ironsa.test").expect("name"),
            256,
        ),
    ) else {
        return;
    };
    if server.start(1).is_err() {
        return;
    }
    for frame in data.split(|&b| b == 0xff).take(32) {
        for code in [Code::Response, Code::Request] {
            let id = match code {
                Code::Response => server.identifier(),
                _ => frame.first().copied().unwrap_or(0),
            };
            let mut pkt = vec![code as u8, id, 0, 0, EAP_TLS];
            pkt.extend_from_slice(frame);
            let Ok(len) = u16::try_from(pkt.len()) else { continue };
            pkt[2..4].copy_from_slice(&len.to_be_bytes());
            if code == Code::Response {
                let step = server.handle(&pkt);
                assert!(
                    !matches!(step, Ok(ServerStep::Success { .. })),
                    "authenticator completed TLS with arbitrary frames"
                );
            } else {
                let step = peer.handle(&pkt);
                assert!(
                    !matches!(step, Ok(PeerStep::Success(_))),
                    "peer completed TLS with arbitrary frames"
                );
            }
        }
    }
    assert!(server.buffered() <= super::tls::MAX_TLS_MESSAGE);
    assert!(peer.buffered() <= super::tls::MAX_TLS_MESSAGE);
}

/// Every truncation of `seed`, then `count` copies with one byte flipped at
/// a position a xorshift picks (some with 8 bytes appended): a fixed corpus
/// for running fuzz targets in the normal test suite.
pub fn deterministic_mutations(seed: &[u8], count: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..seed.len()).map(|n| seed[..n].to_vec()).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.len() as u64;
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut m = seed.to_vec();
        if !m.is_empty() {
            let at = (x as usize) % m.len();
            m[at] ^= (x >> 32) as u8 | 1;
        }
        if x & 0x100 != 0 {
            m.extend_from_slice(&x.to_le_bytes());
        }
        out.push(m);
    }
    out
}

//! EAP sessions end to end: the gateway's authenticator against the client's
//! peer, plus hostile packets in every state.

use control::eap::{
    AuthFailure, Authenticator, AuthenticatorConfig, AuthenticatorError, AuthenticatorStep, Code, Credential, Method,
    MsChapV2Packet, Packet, Payload, Peer, PeerConfig, PeerError, PeerStep, RngFailure, SystemRng, UserStore, mschapv2,
};
use zeroize::Zeroizing;

struct Users;

impl UserStore for Users {
    fn credential(&self, identity: &[u8]) -> Option<Credential> {
        match identity {
            b"alice" => Some(Credential::Password(Zeroizing::new("alice-secret-1".into()))),
            b"bob" => Some(Credential::NtHash(mschapv2::nt_password_hash("bob-secret"))),
            _ => None,
        }
    }
}

fn peer(identity: &str, password: &str, methods: &[Method]) -> Peer {
    Peer::new(PeerConfig {
        identity: identity.as_bytes().to_vec(),
        password: Zeroizing::new(password.into()),
        methods: methods.to_vec(),
    })
}

fn send(step: PeerStep) -> Vec<u8> {
    match step {
        PeerStep::Send(b) => b,
        other => panic!("expected a Response, got {other:?}"),
    }
}

fn request(step: AuthenticatorStep) -> Vec<u8> {
    match step {
        AuthenticatorStep::Send(b) => b,
        other => panic!("expected a Request, got {other:?}"),
    }
}

/// Runs a whole conversation; returns both outcomes.
fn converse(config: AuthenticatorConfig, known: Option<&[u8]>, mut p: Peer) -> (AuthenticatorStep, PeerStep) {
    let mut rng = SystemRng;
    let (mut a, mut req) = Authenticator::start(config, known, &Users, &mut rng).expect("start");
    for _ in 0..10 {
        let resp = send(p.handle(&req, &mut rng).expect("peer accepts"));
        match a.handle(&resp, &Users, &mut rng).expect("authenticator accepts") {
            AuthenticatorStep::Send(r) => req = r,
            done => {
                let final_packet = match &done {
                    AuthenticatorStep::Success { packet, .. } | AuthenticatorStep::Failure { packet, .. } => {
                        packet.clone()
                    }
                    _ => unreachable!(),
                };
                let peer_outcome = p.handle(&final_packet, &mut rng).expect("peer accepts the result");
                return (done, peer_outcome);
            }
        }
    }
    panic!("conversation did not end");
}

#[test]
fn mschapv2_round_trip_gives_both_sides_the_same_msk() {
    for (user, pw) in [("alice", "alice-secret-1"), ("bob", "bob-secret")] {
        let (a, p) = converse(
            AuthenticatorConfig::default(),
            None,
            peer(user, pw, &[Method::MsChapV2]),
        );
        let AuthenticatorStep::Success {
            identity,
            msk: Some(a_msk),
            packet,
        } = a
        else {
            panic!("{a:?}")
        };
        assert_eq!(identity, user.as_bytes());
        assert_eq!(packet[0], Code::Success as u8);
        let PeerStep::Success { msk: Some(p_msk) } = p else {
            panic!("{p:?}")
        };
        assert_eq!(a_msk[..], p_msk[..]);
        assert_ne!(a_msk[..32], [0u8; 32]);
        assert_eq!(a_msk[32..], [0u8; 32]);
    }
}

#[test]
fn identity_from_ike_skips_the_identity_exchange() {
    let (a, p) = converse(
        AuthenticatorConfig::default(),
        Some(b"alice"),
        peer("alice", "alice-secret-1", &[Method::MsChapV2]),
    );
    assert!(matches!(a, AuthenticatorStep::Success { .. }));
    assert!(matches!(p, PeerStep::Success { msk: Some(_) }));
}

#[test]
fn wrong_password_and_unknown_user_fail_with_their_reason() {
    let (a, p) = converse(
        AuthenticatorConfig::default(),
        None,
        peer("alice", "nope", &[Method::MsChapV2]),
    );
    let AuthenticatorStep::Failure {
        reason,
        identity,
        packet,
    } = a
    else {
        panic!("{a:?}")
    };
    assert_eq!(
        (reason, identity.as_slice(), packet[0]),
        (AuthFailure::WrongPassword, &b"alice"[..], Code::Failure as u8)
    );
    let PeerStep::Failure { detail: Some(d) } = p else {
        panic!("{p:?}")
    };
    assert!(d.starts_with("E=691 R=0 C="), "{d}");
    let (a, _) = converse(
        AuthenticatorConfig::default(),
        None,
        peer("mallory", "x", &[Method::MsChapV2]),
    );
    assert!(matches!(
        a,
        AuthenticatorStep::Failure {
            reason: AuthFailure::UnknownUser,
            ..
        }
    ));
}

#[test]
fn md5_only_when_configured_and_nak_selects_it() {
    let config = AuthenticatorConfig {
        methods: vec![Method::MsChapV2, Method::Md5],
        ..Default::default()
    };
    let (a, p) = converse(config.clone(), None, peer("alice", "alice-secret-1", &[Method::Md5]));
    assert!(matches!(a, AuthenticatorStep::Success { msk: None, .. }), "{a:?}");
    assert!(matches!(p, PeerStep::Success { msk: None }));
    let (a, _) = converse(config, None, peer("alice", "wrong", &[Method::Md5]));
    assert!(matches!(
        a,
        AuthenticatorStep::Failure {
            reason: AuthFailure::WrongPassword,
            ..
        }
    ));
    // MD5 is not offered by default: the Nak ends the session.
    let (a, _) = converse(
        AuthenticatorConfig::default(),
        None,
        peer("alice", "alice-secret-1", &[Method::Md5]),
    );
    assert!(matches!(a, AuthenticatorStep::Failure { reason: AuthFailure::NoCommonMethod(ref t), .. } if t == &[4]));
    // An NT hash cannot answer MD5.
    let config = AuthenticatorConfig {
        methods: vec![Method::Md5],
        ..Default::default()
    };
    let (a, _) = converse(config, None, peer("bob", "bob-secret", &[Method::Md5]));
    assert!(matches!(
        a,
        AuthenticatorStep::Failure {
            reason: AuthFailure::NoCleartextPassword,
            ..
        }
    ));
}

#[test]
fn hostile_packets_are_dropped_and_leave_the_session_intact() {
    let mut rng = SystemRng;
    let (mut a, req) = Authenticator::start(AuthenticatorConfig::default(), None, &Users, &mut rng).expect("start");
    let mut p = peer("alice", "alice-secret-1", &[Method::MsChapV2]);
    let id_resp = send(p.handle(&req, &mut rng).expect("identity"));
    // Wrong identifier.
    let mut bad = id_resp.clone();
    bad[1] = bad[1].wrapping_add(1);
    assert!(matches!(
        a.handle(&bad, &Users, &mut rng),
        Err(AuthenticatorError::WrongIdentifier { .. })
    ));
    // A Request sent to the authenticator, an MSCHAPv2 Success out of order.
    let mut as_request = id_resp.clone();
    as_request[0] = Code::Request as u8;
    assert!(matches!(
        a.handle(&as_request, &Users, &mut rng),
        Err(AuthenticatorError::WrongState { .. })
    ));
    let early_success = Packet {
        code: Code::Response,
        identifier: id_resp[1],
        payload: Some(Payload::MsChapV2(MsChapV2Packet::SuccessResponse)),
    };
    assert!(matches!(
        a.handle(&early_success.to_bytes().expect("encodes"), &Users, &mut rng),
        Err(AuthenticatorError::WrongState { .. })
    ));
    // A 64 KiB identity cannot even be framed; the largest framable one is refused.
    let mut huge = vec![Code::Response as u8, id_resp[1], 0xff, 0xff, 1];
    huge.resize(65535, b'a');
    assert!(matches!(
        a.handle(&huge, &Users, &mut rng),
        Err(AuthenticatorError::Decode(_))
    ));
    for cut in 0..id_resp.len() {
        assert!(a.handle(&id_resp[..cut], &Users, &mut rng).is_err());
    }
    // None of it disturbed the session: the real exchange still succeeds.
    let challenge = request(a.handle(&id_resp, &Users, &mut rng).expect("identity accepted"));
    // The peer refuses a Success before the server proved itself, and a
    // Success Request with a wrong authenticator response.
    let resp = send(p.handle(&challenge, &mut rng).expect("challenge"));
    assert_eq!(
        p.handle(&[Code::Success as u8, resp[1], 0, 4], &mut rng).unwrap_err(),
        PeerError::UnauthenticatedSuccess
    );
    let forged = Packet {
        code: Code::Request,
        identifier: resp[1].wrapping_add(1),
        payload: Some(Payload::MsChapV2(MsChapV2Packet::SuccessRequest {
            ms_chap_id: challenge[6],
            message: b"S=0000000000000000000000000000000000000000 M=hi",
        })),
    };
    assert_eq!(
        p.handle(&forged.to_bytes().expect("encodes"), &mut rng).unwrap_err(),
        PeerError::BadAuthenticatorResponse
    );
    // A Response whose MS-CHAPv2-ID does not match the Challenge's.
    let mut wrong_ms_id = resp.clone();
    wrong_ms_id[6] = wrong_ms_id[6].wrapping_add(1);
    assert!(matches!(
        a.handle(&wrong_ms_id, &Users, &mut rng),
        Err(AuthenticatorError::WrongMsChapId { .. })
    ));
    let success_req = request(a.handle(&resp, &Users, &mut rng).expect("response accepted"));
    let ack = send(p.handle(&success_req, &mut rng).expect("server verified"));
    let done = a.handle(&ack, &Users, &mut rng).expect("ack");
    let AuthenticatorStep::Success { packet, .. } = done else {
        panic!("{done:?}")
    };
    assert!(matches!(
        p.handle(&packet, &mut rng),
        Ok(PeerStep::Success { msk: Some(_) })
    ));
    // Finished sessions accept nothing more.
    assert_eq!(
        a.handle(&ack, &Users, &mut rng).unwrap_err(),
        AuthenticatorError::Finished
    );
    assert_eq!(p.handle(&packet, &mut rng).unwrap_err(), PeerError::Finished);
}

#[test]
fn an_oversized_ike_identity_is_refused() {
    let huge = vec![b'a'; 64 * 1024];
    let e = Authenticator::start(AuthenticatorConfig::default(), Some(&huge), &Users, &mut SystemRng).unwrap_err();
    assert_eq!(e, AuthenticatorError::IdentityTooLong(64 * 1024));
}

#[test]
fn rng_failure_is_an_error() {
    let mut broken = |_: &mut [u8]| -> Result<(), RngFailure> { Err(RngFailure) };
    let e = Authenticator::start(AuthenticatorConfig::default(), None, &Users, &mut broken).unwrap_err();
    assert_eq!(e, AuthenticatorError::Rng(RngFailure));
}

//! What an endpoint does with datagrams it cannot use: other IKE versions
//! (RFC 7296 §1.5, §2.5), junk and refused requests counted by reason, and
//! an initiator that gives up naming why its answers were dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::config::{ConnectionConfig, IdentityMatch, parse_identity};
use control::drops::DropReason;
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::{Context, DownReason, Event};
use control::proposal::parse_ike_proposals;
use control::wire::ikev2::{
    self, ExchangeType, FLAG_INITIATOR, FLAG_RESPONSE, HEADER_LEN, Header, NotifyType, Payload, PayloadType,
};
use control::wire::ingress::{IkeVersion, Ingress, classify};
use ironsa_crypto::AwsLcProvider;

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";

fn conn(ike: &str) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(
        "c",
        parse_identity("a@test"),
        IdentityMatch::Exact(parse_identity("b@test")),
        b"a-long-random-test-secret",
    );
    c.ike_proposals = parse_ike_proposals(ike).unwrap();
    c.retransmit_timeout = Duration::from_secs(1);
    c.retransmit_tries = 2;
    c
}

fn endpoint(now: Instant, ike: &str) -> (Endpoint, Arc<ConnectionConfig>) {
    let c = Arc::new(conn(ike));
    let ep = Endpoint::new(
        now,
        Context::new(vec![c.clone()], AwsLcProvider::new().shared()),
        AdmissionConfig::default(),
        0,
        0,
    );
    (ep, c)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IKE_SA_INIT-sized message with `major` version and `flags`.
fn versioned(major: u8, flags: u8) -> Vec<u8> {
    let header = Header {
        spi_i: 0x1122_3344_5566_7788,
        spi_r: 0,
        next_payload: PayloadType::NONE,
        major_version: major,
        minor_version: 0,
        exchange: ExchangeType::IKE_SA_INIT,
        flags,
        message_id: 0,
        length: 0,
    };
    ikev2::encode_message(&header, &[Payload::Nonce(vec![7; 32])])
}

#[test]
fn a_request_of_a_higher_major_version_is_answered_invalid_major_version() {
    let now = Instant::now();
    let (mut ep, _) = endpoint(now, "aes256gcm16-prfsha256-x25519");
    let mut request = versioned(3, FLAG_INITIATOR);
    request[17] = 0x31; // version 3.1
    request[20..24].copy_from_slice(&7u32.to_be_bytes());
    ep.handle(now, addr(B), addr(A), &request);
    let t = ep.poll_transmit().expect("INVALID_MAJOR_VERSION answer");
    assert!(ep.poll_transmit().is_none());
    assert_eq!(t.remote, addr(A));
    let answer = ikev2::decode_message(&t.data).expect("answer decodes as IKEv2");
    let h = answer.header;
    assert_eq!((h.major_version, h.minor_version), (2, 0), "our version");
    assert_eq!((h.spi_i, h.spi_r), (0x1122_3344_5566_7788, 0), "the request's SPIs");
    assert_eq!(h.message_id, 7, "the request's message ID");
    assert_eq!(h.exchange, ExchangeType::IKE_SA_INIT);
    assert_eq!(h.flags, FLAG_RESPONSE, "a response from the responder");
    match &answer.payloads[..] {
        [Payload::Notify(n)] => {
            assert_eq!(n.ty, NotifyType::INVALID_MAJOR_VERSION);
            assert!(n.data.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ep.len(), 0, "no state kept");
    assert_eq!(ep.stats().drops.get(DropReason::UnsupportedVersion), 1);
}

#[test]
fn a_response_of_a_higher_major_version_or_ikev1_is_not_answered() {
    let now = Instant::now();
    let (mut ep, _) = endpoint(now, "aes256gcm16-prfsha256-x25519");
    // A response is never answered (RFC 7296 §1.5: only requests get the notify).
    ep.handle(now, addr(B), addr(A), &versioned(3, FLAG_RESPONSE));
    // IKEv1 is a lower version: dropped.
    ep.handle(now, addr(B), addr(A), &versioned(1, 0));
    // A header alone is shorter than the answer would be: no amplification.
    ep.handle(now, addr(B), addr(A), &versioned(3, FLAG_INITIATOR)[..HEADER_LEN]);
    assert!(ep.poll_transmit().is_none());
    assert_eq!(ep.stats().drops.get(DropReason::UnsupportedVersion), 3);
}

#[test]
fn classify_tells_ike_esp_and_keepalives_apart() {
    let ike = versioned(2, FLAG_INITIATOR);
    let mut marked = vec![0u8; 4];
    marked.extend_from_slice(&ike);
    for (datagram, nat_t, offset) in [(&ike, false, 0), (&marked, false, 4), (&marked, true, 4)] {
        match classify(datagram, nat_t) {
            Ingress::Ike { header, offset: o } => {
                assert_eq!(o, offset);
                assert_eq!(header.version(), IkeVersion::V2);
                assert_eq!(header.spi_i, 0x1122_3344_5566_7788);
                assert_eq!(
                    header.recipient_spi(),
                    0,
                    "first IKE_SA_INIT: no SPI of the recipient yet"
                );
                assert!(header.is_initiator() && !header.is_response());
                assert_eq!(header.exchange, ExchangeType::IKE_SA_INIT);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(classify(&ike, true), Ingress::Esp { spi: 0x1122_3344 });
    assert_eq!(classify(&[0xff], true), Ingress::NatKeepalive);
    assert_eq!(classify(&[0xff], false), Ingress::Runt);
    assert_eq!(classify(&marked[..20], true), Ingress::Runt);
    assert_eq!(classify(&[1, 2, 3], true), Ingress::Runt);
    match classify(&versioned(1, 0), false) {
        Ingress::Ike { header, .. } => assert_eq!(header.version(), IkeVersion::V1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn junk_and_refused_requests_are_counted_by_reason() {
    let now = Instant::now();
    let (mut responder, _) = endpoint(now, "aes128-sha256-modp2048");
    let (mut initiator, c) = endpoint(now, "aes256gcm16-prfsha256-x25519");
    for i in 0..50u16 {
        let from = SocketAddr::new(addr(A).ip(), 1000 + i);
        initiator.initiate(now, c.clone(), from, addr(B)).unwrap();
    }
    while let Some(t) = initiator.poll_transmit() {
        responder.handle(now, t.remote, t.local, &t.data);
    }
    responder.handle(now, addr(B), addr(A), &[0u8; 10]);
    let mut unknown = versioned(2, FLAG_INITIATOR);
    unknown[8..16].copy_from_slice(&0x99u64.to_be_bytes());
    unknown[18] = ExchangeType::INFORMATIONAL.0;
    responder.handle(now, addr(B), addr(A), &unknown);
    let drops = responder.stats().drops;
    assert_eq!(drops.get(DropReason::NoProposalChosen), 50);
    assert_eq!(drops.get(DropReason::Undecodable), 1);
    assert_eq!(drops.get(DropReason::UnknownSa), 1);
    assert_eq!(drops.total(), 52);
    assert_eq!(responder.len(), 0);
}

/// How an initiator ends when every answer of the responder is altered by `alter`.
fn give_up_with_altered_answers(alter: impl Fn(&mut Vec<u8>)) -> (Option<DownReason>, Endpoint) {
    let mut now = Instant::now();
    let (mut responder, _) = endpoint(now, "aes256gcm16-prfsha256-x25519");
    let (mut initiator, c) = endpoint(now, "aes256gcm16-prfsha256-x25519");
    initiator.initiate(now, c, addr(A), addr(B)).unwrap();
    let mut down = None;
    for _ in 0..10 {
        while let Some(t) = initiator.poll_transmit() {
            responder.handle(now, t.remote, t.local, &t.data);
        }
        while let Some(mut t) = responder.poll_transmit() {
            alter(&mut t.data);
            initiator.handle(now, t.remote, t.local, &t.data);
        }
        while let Some((_, e)) = initiator.poll_event() {
            if let Event::IkeSaDown { reason, .. } = e {
                down = Some(reason);
            }
        }
        if down.is_some() {
            break;
        }
        now = initiator.poll_timeout().expect("retransmission timer");
        initiator.handle_timeout(now);
        responder.handle_timeout(now);
    }
    (down, initiator)
}

#[test]
fn an_initiator_whose_answers_are_all_dropped_says_so_when_it_gives_up() {
    // The payload chain claims a byte more than there is.
    let (down, initiator) = give_up_with_altered_answers(|d| {
        d.truncate(d.len() - 1);
        let len = d.len() as u32;
        d[24..28].copy_from_slice(&len.to_be_bytes());
    });
    match down {
        Some(DownReason::Failed(why)) => {
            assert!(why.contains("answer was dropped"), "{why}");
            assert!(why.contains("bad length"), "{why}");
        }
        other => panic!("expected a failure naming the dropped answers, got {other:?}"),
    }
    assert!(initiator.stats().drops.get(DropReason::Undecodable) >= 1);
    // Answers of another major version.
    let (down, _) = give_up_with_altered_answers(|d| d[17] = 0x30);
    match down {
        Some(DownReason::Failed(why)) => assert!(why.contains("IKE major version 3"), "{why}"),
        other => panic!("expected a failure naming the version, got {other:?}"),
    }
}

#[test]
fn a_responder_matches_local_addrs_to_the_address_a_request_came_to() {
    let now = Instant::now();
    let mut c = conn("aes256gcm16-prfsha256-x25519");
    c.local_addrs = Some(vec!["192.0.2.9".parse().unwrap()]);
    let mut responder = Endpoint::new(
        now,
        Context::new(vec![Arc::new(c)], AwsLcProvider::new().shared()),
        AdmissionConfig::default(),
        0,
        0,
    );
    let (mut initiator, c) = endpoint(now, "aes256gcm16-prfsha256-x25519");
    initiator.initiate(now, c.clone(), addr(A), addr(B)).unwrap();
    let request = initiator.poll_transmit().unwrap().data;
    responder.handle(now, addr(B), addr(A), &request);
    assert_eq!(responder.len(), 0, "not one of the connection's addresses");
    assert_eq!(responder.stats().drops.get(DropReason::NoProposalChosen), 1);
    responder.handle(now, addr("192.0.2.9:500"), addr(A), &request);
    assert_eq!(responder.len(), 1, "sent to the connection's address");
}

//! Decodes an IKE_SA_INIT request captured from strongSwan 5.9.8 (charon,
//! proposals `aes256gcm16-prfsha256-x25519, aes128-aes256-sha256-sha384-modp2048-ecp256`),
//! non-ESP marker stripped, and selects from it.

use control::proposal::{parse_ike_proposals, select_ike};
use control::wire::ikev2::*;

const CAPTURE: &[u8] = include_bytes!("data/strongswan-5.9.8-ike_sa_init.bin");

#[test]
fn decodes_strongswan_ike_sa_init() {
    let msg = decode_message(CAPTURE).unwrap();
    assert_eq!(msg.header.exchange, ExchangeType::IKE_SA_INIT);
    assert_eq!(msg.header.flags, FLAG_INITIATOR);
    assert_eq!(msg.header.spi_r, 0);
    assert_eq!(msg.header.message_id, 0);
    let types: Vec<PayloadType> = msg.payloads.iter().map(Payload::payload_type).collect();
    assert_eq!(
        types,
        vec![
            PayloadType::SA,
            PayloadType::KE,
            PayloadType::NONCE,
            PayloadType::NOTIFY,
            PayloadType::NOTIFY,
            PayloadType::NOTIFY,
            PayloadType::NOTIFY,
            PayloadType::NOTIFY
        ]
    );
    let Payload::Sa(proposals) = &msg.payloads[0] else {
        panic!("SA")
    };
    assert_eq!(proposals.len(), 2);
    assert_eq!((proposals[0].number, proposals[1].number), (1, 2));
    assert!(
        proposals
            .iter()
            .all(|p| p.protocol == ProtocolId::IKE && p.spi.is_empty())
    );
    let ids = |p: &Proposal, ty| {
        p.transforms
            .iter()
            .filter(|t| t.ty == ty)
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&proposals[0], TransformType::ENCR), vec![20]);
    assert_eq!(ids(&proposals[0], TransformType::KE), vec![31]);
    assert_eq!(ids(&proposals[1], TransformType::ENCR), vec![12, 12]);
    assert_eq!(ids(&proposals[1], TransformType::INTEG), vec![12, 13]);
    assert_eq!(ids(&proposals[1], TransformType::KE), vec![14, 19]);
    assert!(matches!(&msg.payloads[1], Payload::Ke { group: 31, data } if data.len() == 32));
    let notifies: Vec<NotifyType> = msg
        .payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Notify(n) => Some(n.ty),
            _ => None,
        })
        .collect();
    assert_eq!(
        &notifies[..3],
        &[
            NotifyType::NAT_DETECTION_SOURCE_IP,
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            NotifyType::IKEV2_FRAGMENTATION_SUPPORTED
        ]
    );
    assert_eq!(notifies[3], NotifyType::SIGNATURE_HASH_ALGORITHMS);
    // Re-encoding reproduces the capture byte for byte.
    assert_eq!(encode_message(&msg.header, &msg.payloads), CAPTURE);

    // Our preference (ecp256 first, CBC) picks strongSwan's second proposal.
    let ours = parse_ike_proposals("aes256-sha384-ecp256-modp2048").unwrap();
    let s = select_ike(&ours, proposals).unwrap();
    assert_eq!(s.proposal.number, 2);
    assert_eq!(s.suite.ke.number(), 19);
    assert_eq!(s.suite.integ.map(|i| i.transform_id()), Some(13));
}

#[test]
fn prefixes_and_overlong_lengths_of_capture_never_panic() {
    for n in 0..CAPTURE.len() {
        assert!(decode_message(&CAPTURE[..n]).is_err());
        if n >= HEADER_LEN {
            let mut p = CAPTURE[..n].to_vec();
            p[24..28].copy_from_slice(&(n as u32).to_be_bytes());
            let _ = decode_message(&p);
        }
    }
    // Every 16-bit length-like position forced to 0xFFFF and 0.
    for i in HEADER_LEN..CAPTURE.len() - 1 {
        for v in [[0xff, 0xff], [0, 0]] {
            let mut b = CAPTURE.to_vec();
            b[i..i + 2].copy_from_slice(&v);
            if let Ok(m) = decode_message(&b) {
                assert_eq!(decode_message(&encode_message(&m.header, &m.payloads)).unwrap(), m);
            }
        }
    }
}

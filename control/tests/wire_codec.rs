//! IKEv2 codec tests: a hand-assembled IKE_SA_INIT, round trips of every
//! payload type, and malformed inputs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use control::wire::WireError;
use control::wire::ikev2::*;
use proptest::prelude::*;

/// An IKE_SA_INIT request assembled byte by byte from RFC 7296 §3: SA with one
/// IKE proposal (AES-GCM-16/256, PRF-HMAC-SHA256, x25519), KE (group 31),
/// Nonce (32 bytes), two Notifies (NAT-D source, fragmentation supported).
fn ike_sa_init_bytes() -> Vec<u8> {
    let mut m = hex::decode(concat!(
        "0102030405060708", // SPIi
        "0000000000000000", // SPIr
        "21",               // next payload SA
        "20",               // version 2.0
        "22",               // IKE_SA_INIT
        "08",               // flags: initiator
        "00000000",         // message id
        "00000000",         // length (patched)
        // SA payload: next KE, length 4 + 36
        "22000028",
        // proposal: last, len 36, #1, IKE, SPI size 0, 3 transforms
        "0000002401010003",
        // ENCR 20, keylen 256 (TV): len 12
        "0300000c01000014800e0100",
        // PRF 5: len 8
        "0300000802000005",
        // KE 31: len 8 (last)
        "000000080400001f",
        // KE payload: next Nonce, len 4+4+32
        "28000028001f0000",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        // Nonce payload: next Notify, len 4+32
        "29000024",
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
        // Notify NAT_DETECTION_SOURCE_IP (16388), next Notify, len 8+20
        "2900001c00004004",
        "1111111111111111111111111111111111111111",
        // Notify IKEV2_FRAGMENTATION_SUPPORTED (16430), last, len 8
        "000000080000402e",
    ))
    .unwrap();
    let len = m.len() as u32;
    m[24..28].copy_from_slice(&len.to_be_bytes());
    m
}

#[test]
fn decodes_hand_assembled_ike_sa_init() {
    let bytes = ike_sa_init_bytes();
    let msg = decode_message(&bytes).unwrap();
    assert_eq!(msg.header.spi_i, 0x0102030405060708);
    assert_eq!(msg.header.spi_r, 0);
    assert_eq!(msg.header.exchange, ExchangeType::IKE_SA_INIT);
    assert!(msg.header.is_initiator());
    assert!(!msg.header.is_response());
    assert_eq!(msg.header.length as usize, bytes.len());
    assert_eq!(msg.payloads.len(), 5);
    let Payload::Sa(props) = &msg.payloads[0] else {
        panic!("SA first")
    };
    assert_eq!(props.len(), 1);
    assert_eq!(props[0].number, 1);
    assert_eq!(props[0].protocol, ProtocolId::IKE);
    assert!(props[0].spi.is_empty());
    assert_eq!(
        props[0].transforms,
        vec![
            Transform {
                ty: TransformType::ENCR,
                id: 20,
                attributes: vec![TransformAttribute::KeyLength(256)]
            },
            Transform {
                ty: TransformType::PRF,
                id: 5,
                attributes: vec![]
            },
            Transform {
                ty: TransformType::KE,
                id: 31,
                attributes: vec![]
            },
        ]
    );
    assert!(matches!(&msg.payloads[1], Payload::Ke { group: 31, data } if data.len() == 32));
    assert!(matches!(&msg.payloads[2], Payload::Nonce(n) if n.len() == 32));
    let Payload::Notify(n) = &msg.payloads[3] else {
        panic!("notify")
    };
    assert_eq!(n.ty, NotifyType::NAT_DETECTION_SOURCE_IP);
    assert_eq!(n.protocol, ProtocolId::NONE);
    assert_eq!(n.data, vec![0x11; 20]);
    let Payload::Notify(n) = &msg.payloads[4] else {
        panic!("notify")
    };
    assert_eq!(n.ty, NotifyType::IKEV2_FRAGMENTATION_SUPPORTED);
    assert!(n.data.is_empty());
    // Encoding gives back the very same bytes.
    assert_eq!(encode_message(&msg.header, &msg.payloads), bytes);
}

#[test]
fn every_prefix_and_every_truncation_fails_cleanly() {
    let bytes = ike_sa_init_bytes();
    for n in 0..bytes.len() {
        assert!(decode_message(&bytes[..n]).is_err(), "prefix {n} decoded");
        // Prefix with a consistent header length: must not panic either.
        let mut p = bytes[..n].to_vec();
        if n >= HEADER_LEN {
            p[24..28].copy_from_slice(&(n as u32).to_be_bytes());
            let _ = decode_message(&p);
        }
    }
}

#[test]
fn single_byte_corruptions_never_panic() {
    let bytes = ike_sa_init_bytes();
    for i in 0..bytes.len() {
        for v in [0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] = v;
            if let Ok(msg) = decode_message(&b) {
                let again = decode_message(&encode_message(&msg.header, &msg.payloads)).unwrap();
                assert_eq!(again, msg);
            }
        }
    }
}

#[test]
fn header_checks() {
    let mut b = ike_sa_init_bytes();
    b[17] = 0x30;
    assert_eq!(decode_message(&b), Err(WireError::UnsupportedVersion(3)));
    b[17] = 0x10;
    assert_eq!(decode_message(&b), Err(WireError::UnsupportedVersion(1)));
    let mut b = ike_sa_init_bytes();
    b[17] = 0x21; // minor version 1 is accepted
    assert_eq!(decode_message(&b).unwrap().header.minor_version, 1);
    let mut b = ike_sa_init_bytes();
    b.push(0);
    assert!(
        matches!(decode_message(&b), Err(WireError::BadLength { .. })),
        "length field != datagram"
    );
    let mut b = ike_sa_init_bytes();
    b[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode_message(&b), Err(WireError::BadLength { .. })));
    assert!(matches!(decode_message(&[0u8; 10]), Err(WireError::Truncated { .. })));
}

fn header() -> Header {
    Header {
        spi_i: 0x1122334455667788,
        spi_r: 0x99aabbccddeeff00,
        next_payload: PayloadType::NONE,
        major_version: 2,
        minor_version: 0,
        exchange: ExchangeType::INFORMATIONAL,
        flags: FLAG_INITIATOR,
        message_id: 7,
        length: 0,
    }
}

/// A message with one raw payload body of type `ty`, for malformed-body tests.
fn raw_message(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    let len = HEADER_LEN + 4 + body.len();
    m.extend_from_slice(&encode_message(&header(), &[])[..HEADER_LEN]);
    m[16] = ty;
    m[24..28].copy_from_slice(&(len as u32).to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
    m.extend_from_slice(body);
    m
}

#[test]
fn payload_length_errors() {
    // Zero-length payload.
    let mut m = raw_message(41, &[0, 0, 0x40, 0x2e]);
    m[30..32].copy_from_slice(&0u16.to_be_bytes());
    assert!(matches!(decode_message(&m), Err(WireError::BadLength { .. })));
    // Length 0xFFFF points past the end.
    m[30..32].copy_from_slice(&0xffffu16.to_be_bytes());
    assert!(matches!(decode_message(&m), Err(WireError::BadLength { .. })));
    // Trailing bytes after the last payload.
    let mut m = raw_message(41, &[0, 0, 0x40, 0x2e, 0xaa]);
    m[30..32].copy_from_slice(&8u16.to_be_bytes());
    assert!(decode_message(&m).is_err());
    // Next payload promised but missing.
    let mut m = raw_message(41, &[0, 0, 0x40, 0x2e]);
    m[28] = 41;
    assert!(matches!(decode_message(&m), Err(WireError::Truncated { .. })));
}

#[test]
fn nonce_length_limits() {
    assert!(decode_message(&raw_message(40, &[1; 15])).is_err());
    assert!(decode_message(&raw_message(40, &[1; 16])).is_ok());
    assert!(decode_message(&raw_message(40, &[1; 256])).is_ok());
    assert!(decode_message(&raw_message(40, &[1; 257])).is_err());
}

#[test]
fn unknown_payloads_are_kept_with_critical_bit() {
    let mut m = raw_message(200, b"hello");
    m[29] = 0x80;
    let msg = decode_message(&m).unwrap();
    assert_eq!(
        msg.payloads,
        vec![Payload::Unknown {
            ty: PayloadType(200),
            critical: true,
            body: b"hello".to_vec()
        }]
    );
    assert_eq!(encode_message(&msg.header, &msg.payloads), m);
    // Reserved bits of known payloads are ignored.
    let mut m = raw_message(43, b"vid");
    m[29] = 0xff;
    assert_eq!(
        decode_message(&m).unwrap().payloads,
        vec![Payload::VendorId(b"vid".to_vec())]
    );
}

fn sa_body(proposals: &[Proposal]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_payloads(&[Payload::Sa(proposals.to_vec())], &mut out);
    out[4..].to_vec()
}

fn esp_proposal(number: u8) -> Proposal {
    Proposal {
        number,
        protocol: ProtocolId::ESP,
        spi: vec![1, 2, 3, 4],
        transforms: vec![
            Transform {
                ty: TransformType::ENCR,
                id: 20,
                attributes: vec![TransformAttribute::KeyLength(128)],
            },
            Transform {
                ty: TransformType::ESN,
                id: 0,
                attributes: vec![],
            },
        ],
    }
}

#[test]
fn sa_substructure_checks() {
    let good = sa_body(&[esp_proposal(1), esp_proposal(2)]);
    assert!(decode_message(&raw_message(33, &good)).is_ok());
    // Empty SA.
    assert!(decode_message(&raw_message(33, &[])).is_err());
    // First proposal marked last although another follows.
    let mut b = good.clone();
    b[0] = 0;
    assert!(decode_message(&raw_message(33, &b)).is_err());
    // Bad proposal marker.
    let mut b = good.clone();
    b[0] = 3;
    assert!(decode_message(&raw_message(33, &b)).is_err());
    // Last proposal marked 'more'.
    let one = sa_body(&[esp_proposal(1)]);
    let mut b = one.clone();
    b[0] = 2;
    assert!(decode_message(&raw_message(33, &b)).is_err());
    // Transform marker: first transform marked last.
    let mut b = one.clone();
    b[8 + 4] = 0;
    assert!(decode_message(&raw_message(33, &b)).is_err());
    // Last transform marked more.
    let mut b = one.clone();
    b[8 + 4 + 12] = 3;
    assert!(decode_message(&raw_message(33, &b)).is_err());
    // Numbering must not skip; an answer keeps the number of the proposal it chose.
    assert!(decode_message(&raw_message(33, &sa_body(&[esp_proposal(0)]))).is_err());
    let chosen = decode_message(&raw_message(33, &sa_body(&[esp_proposal(2)]))).expect("second proposal chosen");
    assert!(matches!(&chosen.payloads[..], [Payload::Sa(p)] if p[0].number == 2));
    assert!(decode_message(&raw_message(33, &sa_body(&[esp_proposal(2), esp_proposal(3)]))).is_ok());
    assert!(decode_message(&raw_message(33, &sa_body(&[esp_proposal(1), esp_proposal(3)]))).is_err());
    assert!(decode_message(&raw_message(33, &sa_body(&[esp_proposal(1), esp_proposal(1)]))).is_ok());
    // SPI size 8 for ESP is invalid.
    let mut p = esp_proposal(1);
    p.spi = vec![0; 8];
    assert!(decode_message(&raw_message(33, &sa_body(&[p]))).is_err());
    // IKE with 0 or 8 byte SPI, not 4.
    let mut p = esp_proposal(1);
    p.protocol = ProtocolId::IKE;
    assert!(decode_message(&raw_message(33, &sa_body(std::slice::from_ref(&p)))).is_err());
    p.spi = vec![];
    assert!(decode_message(&raw_message(33, &sa_body(std::slice::from_ref(&p)))).is_ok());
    // Transform count larger than the transforms present.
    let mut b = one.clone();
    b[7] = 3;
    assert!(decode_message(&raw_message(33, &b)).is_err());
    // Transform count smaller: bytes left over.
    let mut b = one.clone();
    b[7] = 1;
    assert!(decode_message(&raw_message(33, &b)).is_err());
    // Attribute TLV length past the transform.
    let mut b = one;
    b[8 + 4 + 8] = 0x00; // clear AF bit: TLV with length 128
    assert!(decode_message(&raw_message(33, &b)).is_err());
}

#[test]
fn traffic_selector_checks() {
    let ts = TrafficSelector {
        ip_protocol: 6,
        start_port: 0,
        end_port: 65535,
        start_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
        end_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 255)),
    };
    let mut out = Vec::new();
    encode_payloads(&[Payload::TsI(vec![ts.clone()])], &mut out);
    let body = out[4..].to_vec();
    assert_eq!(
        decode_message(&raw_message(44, &body)).unwrap().payloads,
        vec![Payload::TsI(vec![ts])]
    );
    let mut b = body.clone();
    b[4] = 9; // unknown TS type
    assert!(decode_message(&raw_message(44, &b)).is_err());
    let mut b = body.clone();
    b[4] = 8; // IPv6 type with IPv4 length
    assert!(decode_message(&raw_message(44, &b)).is_err());
    let mut b = body.clone();
    b[0] = 2; // count says two
    assert!(decode_message(&raw_message(44, &b)).is_err());
    let mut b = body;
    b[0] = 0;
    assert!(decode_message(&raw_message(44, &b)).is_err());
    // Mixed families cannot be encoded by the checked encoder.
    let mixed = TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: 0,
        start_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        end_addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    assert!(try_encode_payloads(&[Payload::TsR(vec![mixed])], &mut Vec::new()).is_err());
}

#[test]
fn delete_and_notify_checks() {
    // ESP delete with two SPIs.
    let body = [3, 4, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8];
    let msg = decode_message(&raw_message(42, &body)).unwrap();
    assert_eq!(
        msg.payloads,
        vec![Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]]
        })]
    );
    assert!(decode_message(&raw_message(42, &body[..11])).is_err());
    assert!(decode_message(&raw_message(42, &[3, 4, 0xff, 0xff, 1, 2, 3, 4])).is_err());
    assert!(decode_message(&raw_message(42, &[1, 0, 0, 0])).is_ok());
    assert!(decode_message(&raw_message(42, &[1, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])).is_err());
    // Notify SPI size past the end, and an odd SPI size.
    assert!(decode_message(&raw_message(41, &[3, 4, 0, 11, 1, 2])).is_err());
    assert!(decode_message(&raw_message(41, &[3, 3, 0, 11, 1, 2, 3])).is_err());
}

#[test]
fn sk_must_be_last() {
    let h = header();
    let sk = Payload::Sk {
        first_inner: PayloadType::IDI,
        body: vec![0; 40],
    };
    let m = encode_message(&h, &[Payload::VendorId(b"x".to_vec()), sk.clone()]);
    let msg = decode_message(&m).unwrap();
    assert_eq!(msg.payloads[1], sk);
    // SK followed by another payload.
    let mut bad = encode_message(&h, std::slice::from_ref(&sk));
    bad.extend_from_slice(&[0, 0, 0, 4]);
    let len = bad.len() as u32;
    bad[24..28].copy_from_slice(&len.to_be_bytes());
    assert!(decode_message(&bad).is_err());
    // SK inside a decrypted chain.
    let mut inner = Vec::new();
    let first = encode_payloads(&[sk], &mut inner);
    assert!(decode_payloads(first, &inner).is_err());
}

#[test]
fn skf_number_checks() {
    let h = header();
    for (number, total, ok) in [(1, 1, true), (2, 3, true), (0, 1, false), (1, 0, false), (4, 3, false)] {
        let m = encode_message(
            &h,
            &[Payload::Skf {
                first_inner: PayloadType::NONE,
                number,
                total,
                body: vec![0; 30],
            }],
        );
        assert_eq!(decode_message(&m).is_ok(), ok, "{number}/{total}");
    }
}

// ------------------------------------------------------------ property tests

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn attribute() -> impl Strategy<Value = TransformAttribute> {
    prop_oneof![
        any::<u16>().prop_map(TransformAttribute::KeyLength),
        (
            (0u16..0x8000).prop_filter("not key length", |t| *t != 14),
            any::<[u8; 2]>()
        )
            .prop_map(|(ty, v)| TransformAttribute::Other {
                ty,
                tv: true,
                value: v.to_vec()
            }),
        (0u16..0x8000, bytes(20)).prop_map(|(ty, value)| TransformAttribute::Other { ty, tv: false, value }),
    ]
}

fn transform() -> impl Strategy<Value = Transform> {
    (1u8..8, any::<u16>(), proptest::collection::vec(attribute(), 0..3)).prop_map(|(ty, id, attributes)| Transform {
        ty: TransformType(ty),
        id,
        attributes,
    })
}

fn proposals() -> impl Strategy<Value = Vec<Proposal>> {
    proptest::collection::vec(
        (
            prop_oneof![
                Just((ProtocolId::IKE, 0)),
                Just((ProtocolId::IKE, 8)),
                Just((ProtocolId::ESP, 4)),
                Just((ProtocolId::AH, 4))
            ],
            any::<u64>(),
            proptest::collection::vec(transform(), 0..6),
            any::<bool>(),
        ),
        1..5,
    )
    .prop_map(|v| {
        let mut number = 0u8;
        v.into_iter()
            .map(|((protocol, spi_len), spi, transforms, same)| {
                if number == 0 || !same {
                    number += 1;
                }
                Proposal {
                    number,
                    protocol,
                    spi: spi.to_be_bytes()[..spi_len].to_vec(),
                    transforms,
                }
            })
            .collect()
    })
}

fn ts() -> impl Strategy<Value = TrafficSelector> {
    (
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
        prop_oneof![
            (any::<u32>(), any::<u32>())
                .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
            (any::<u128>(), any::<u128>())
                .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
        ],
    )
        .prop_map(
            |(ip_protocol, start_port, end_port, (start_addr, end_addr))| TrafficSelector {
                ip_protocol,
                start_port,
                end_port,
                start_addr,
                end_addr,
            },
        )
}

fn id() -> impl Strategy<Value = Identification> {
    (any::<u8>(), bytes(40)).prop_map(|(t, data)| Identification {
        id_type: IdType(t),
        data,
    })
}

const KNOWN: [u8; 18] = [0, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 53];

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        proposals().prop_map(Payload::Sa),
        (any::<u16>(), bytes(300)).prop_map(|(group, data)| Payload::Ke { group, data }),
        id().prop_map(Payload::IdI),
        id().prop_map(Payload::IdR),
        (any::<u8>(), bytes(100)).prop_map(|(e, data)| Payload::Cert {
            encoding: CertEncoding(e),
            data
        }),
        (any::<u8>(), bytes(100)).prop_map(|(e, data)| Payload::CertReq {
            encoding: CertEncoding(e),
            data
        }),
        (any::<u8>(), bytes(100)).prop_map(|(m, data)| Payload::Auth {
            method: AuthMethod(m),
            data
        }),
        proptest::collection::vec(any::<u8>(), 16..=256).prop_map(Payload::Nonce),
        (
            any::<u8>(),
            prop_oneof![Just(0usize), Just(4), Just(8)],
            any::<u64>(),
            any::<u16>(),
            bytes(64)
        )
            .prop_map(|(p, spi_len, spi, ty, data)| Payload::Notify(Notify {
                protocol: ProtocolId(p),
                spi: spi.to_be_bytes()[..spi_len].to_vec(),
                ty: NotifyType(ty),
                data
            })),
        prop_oneof![
            Just(Delete {
                protocol: ProtocolId::IKE,
                spi_size: 0,
                spis: vec![]
            }),
            proptest::collection::vec(any::<[u8; 4]>(), 0..10).prop_map(|s| Delete {
                protocol: ProtocolId::ESP,
                spi_size: 4,
                spis: s.into_iter().map(|x| x.to_vec()).collect()
            }),
        ]
        .prop_map(Payload::Delete),
        bytes(64).prop_map(Payload::VendorId),
        proptest::collection::vec(ts(), 1..6).prop_map(Payload::TsI),
        proptest::collection::vec(ts(), 1..6).prop_map(Payload::TsR),
        (any::<u8>(), proptest::collection::vec((0u16..0x8000, bytes(20)), 0..5)).prop_map(|(c, a)| Payload::Cp {
            cfg_type: CfgType(c),
            attributes: a.into_iter().map(|(ty, value)| ConfigAttribute { ty, value }).collect()
        }),
        bytes(100).prop_map(Payload::Eap),
        (
            any::<u8>().prop_filter("unknown type", |t| !KNOWN.contains(t)),
            any::<bool>(),
            bytes(50)
        )
            .prop_map(|(ty, critical, body)| Payload::Unknown {
                ty: PayloadType(ty),
                critical,
                body
            }),
    ]
}

fn encrypted() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (any::<u8>(), bytes(100)).prop_map(|(f, body)| Payload::Sk {
            first_inner: PayloadType(f),
            body
        }),
        (any::<u8>(), 1u16..100, bytes(100)).prop_map(|(f, total, body)| Payload::Skf {
            first_inner: PayloadType(f),
            number: 1 + total / 2,
            total,
            body
        }),
    ]
}

fn any_header() -> impl Strategy<Value = Header> {
    (
        any::<u64>(),
        any::<u64>(),
        0u8..16,
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
    )
        .prop_map(|(spi_i, spi_r, minor_version, exchange, flags, message_id)| Header {
            spi_i,
            spi_r,
            next_payload: PayloadType::NONE,
            major_version: 2,
            minor_version,
            exchange: ExchangeType(exchange),
            flags,
            message_id,
            length: 0,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn payload_round_trip(p in payload()) {
        let mut out = Vec::new();
        let first = try_encode_payloads(std::slice::from_ref(&p), &mut out).unwrap();
        prop_assert_eq!(first, p.payload_type());
        prop_assert_eq!(decode_payloads(first, &out).unwrap(), vec![p]);
    }

    #[test]
    fn message_round_trip(
        h in any_header(),
        mut payloads in proptest::collection::vec(payload(), 0..8),
        sk in proptest::option::of(encrypted()),
    ) {
        payloads.extend(sk);
        let bytes = encode_message(&h, &payloads);
        let msg = decode_message(&bytes).unwrap();
        prop_assert_eq!(msg.header.length as usize, bytes.len());
        prop_assert_eq!(msg.header.next_payload, payloads.first().map_or(PayloadType::NONE, Payload::payload_type));
        prop_assert_eq!(&msg.payloads, &payloads);
        prop_assert_eq!(encode_message(&msg.header, &msg.payloads), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut data in bytes(400), ty in any::<u8>()) {
        if data.len() >= HEADER_LEN {
            data[17] = 0x20;
            let len = data.len() as u32;
            data[24..28].copy_from_slice(&len.to_be_bytes());
        }
        if let Ok(msg) = decode_message(&data) {
            prop_assert_eq!(decode_message(&encode_message(&msg.header, &msg.payloads)).unwrap(), msg);
        }
        let _ = decode_payloads(PayloadType(ty), &data);
    }
}

/// Messages with bulk values (an ML-KEM-1024 key share, a certificate, EAP)
/// encode into one buffer sized up front: no regrowth, which would copy the
/// message and, for SK plaintext, leave a copy of it in freed memory.
#[test]
fn large_messages_encode_without_regrowing() {
    let payloads = vec![
        Payload::Ke {
            group: 37,
            data: vec![0x5a; 1568],
        },
        Payload::Nonce(vec![1; 32]),
        Payload::Cert {
            encoding: CertEncoding::X509_SIGNATURE,
            data: vec![0x30; 1800],
        },
        Payload::Eap(vec![2; 600]),
    ];
    let capacity = encode_capacity(&payloads);
    let message = encode_message(&header(), &payloads);
    assert!(message.len() <= capacity, "{} > {capacity}", message.len());
    assert_eq!(message.capacity(), capacity, "the buffer never grew");
    let mut plain = Vec::with_capacity(capacity);
    try_encode_payloads(&payloads, &mut plain).unwrap();
    assert_eq!(plain.capacity(), capacity, "the SK plaintext buffer never grows");
    // Small messages keep the default capacity.
    assert_eq!(encode_capacity(&[Payload::Nonce(vec![1; 32])]), ENCODE_CAPACITY);
}

//! ISAKMP message codec (RFC 2408) for IKEv1 (RFC 2409).
//!
//! - [`types`]: the header, payload structures and registries.
//! - [`codec`]: strict decoding (borrowing from the datagram) and encoding
//!   into a caller's buffer.
//! - [`crypt`]: AES-CBC encryption of the payload chain with the IKEv1 IV
//!   chaining rules, and the IKEv1 hash/PRF algorithms.
//!
//! A received datagram is told IKEv1 from IKEv2 by
//! [`crate::wire::ingress::classify`] (its header's major version).

pub mod codec;
pub mod crypt;
pub mod fuzzing;
pub mod types;

pub use codec::{
    MAX_MESSAGE_LEN, decode_attributes, decode_header, decode_message, decode_payloads, encode_attributes,
    encode_message, encode_payloads, payload_spans, split_message,
};
pub use crypt::{HashAlg, IsakmpCipher, IvChain};
pub use types::*;

/// Why an ISAKMP message or payload could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IsakmpError {
    /// Fewer bytes than a structure needs.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A length field is inconsistent with the data around it.
    #[error("bad length in {what}: {detail}")]
    BadLength {
        /// The structure being decoded.
        what: &'static str,
        /// What is inconsistent.
        detail: String,
    },
    /// A field holds a value the protocol does not allow.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
    /// The major version is not 1.
    #[error("unsupported ISAKMP major version {0}")]
    UnsupportedVersion(u8),
    /// An exchange type this implementation does not know.
    #[error("unknown ISAKMP exchange type {0}")]
    UnknownExchange(u8),
    /// A payload type this implementation does not know.
    #[error("unknown ISAKMP payload type {0}")]
    UnknownPayload(u8),
    /// A message that must be encrypted arrived in the clear.
    #[error("message is not encrypted")]
    NotEncrypted,
    /// The message is larger than an ISAKMP message may be.
    #[error("message too large: {0} bytes")]
    TooLarge(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ingress::{IkeVersion, Ingress, classify};

    fn header(exchange: ExchangeType) -> Header {
        Header {
            cookie_i: 0x1122_3344_5566_7788,
            cookie_r: 0,
            next_payload: PayloadType::NONE,
            version: VERSION,
            exchange,
            flags: 0,
            message_id: 0,
            length: 0,
        }
    }

    fn every_payload<'a>(ke: &'a [u8], nonce: &'a [u8]) -> Vec<Payload<'a>> {
        vec![
            Payload::Sa(SecurityAssociation {
                situation: SIT_IDENTITY_ONLY,
                proposals: vec![
                    Proposal {
                        number: 1,
                        protocol: ProtocolId::ISAKMP,
                        spi: &[],
                        transforms: vec![
                            Transform {
                                number: 1,
                                id: 1,
                                attributes: vec![
                                    Attribute::basic(1, 7),
                                    Attribute::basic(14, 256),
                                    Attribute::variable(12, &[0, 1, 0x51, 0x80]),
                                ],
                            },
                            Transform {
                                number: 2,
                                id: 1,
                                attributes: vec![Attribute::basic(2, 4)],
                            },
                        ],
                    },
                    Proposal {
                        number: 2,
                        protocol: ProtocolId::ESP,
                        spi: &[1, 2, 3, 4],
                        transforms: vec![Transform {
                            number: 1,
                            id: 12,
                            attributes: vec![],
                        }],
                    },
                ],
            }),
            Payload::Ke(ke),
            Payload::Nonce(nonce),
            Payload::Id(Identification {
                id_type: IdType::FQDN,
                protocol: 17,
                port: 500,
                data: b"gw.example",
            }),
            Payload::Cert {
                encoding: 4,
                data: &[0x30, 0x00],
            },
            Payload::CertReq {
                cert_type: 4,
                authority: &[],
            },
            Payload::Hash(&[9; 32]),
            Payload::Sig(&[8; 64]),
            Payload::Notify(Notification {
                doi: DOI_IPSEC,
                protocol: 1,
                ty: NotifyType::DPD_R_U_THERE,
                spi: &[7; 16],
                data: &[0, 0, 0, 5],
            }),
            Payload::Delete(Delete {
                doi: DOI_IPSEC,
                protocol: ProtocolId::ESP,
                spis: vec![&[1, 1, 1, 1], &[2, 2, 2, 2]],
            }),
            Payload::VendorId(&[0xaf, 0xca, 0xd7, 0x13]),
            Payload::Attributes(ConfigAttributes {
                ty: ConfigType::REQUEST,
                identifier: 77,
                attributes: vec![Attribute::variable(1, &[]), Attribute::basic(16520, 0)],
            }),
            Payload::NatD(&[5; 32]),
            Payload::NatOa(NatOriginalAddress {
                id_type: IdType::IPV4_ADDR,
                address: &[192, 0, 2, 1],
            }),
        ]
    }

    #[test]
    fn every_payload_round_trips_and_borrows_from_the_datagram() {
        let ke = [3u8; 256];
        let nonce = [4u8; 32];
        let payloads = every_payload(&ke, &nonce);
        let mut out = Vec::new();
        encode_message(&header(ExchangeType::IDENTITY_PROTECTION), &payloads, &mut out).unwrap();
        let msg = decode_message(&out).unwrap();
        assert_eq!(msg.payloads, payloads);
        assert_eq!(msg.header.length as usize, out.len());
        assert_eq!(msg.header.next_payload, PayloadType::SA);
        let Payload::Ke(k) = msg.payloads[1] else {
            panic!("KE expected")
        };
        assert!(
            out.as_ptr_range().contains(&k.as_ptr()),
            "KE data borrows from the datagram"
        );
        match classify(&out, false) {
            Ingress::Ike { header, offset: 0 } => assert_eq!(header.version(), IkeVersion::V1),
            other => panic!("classified as {other:?}"),
        }
    }

    fn encoded(payloads: &[Payload<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_message(&header(ExchangeType::IDENTITY_PROTECTION), payloads, &mut out).unwrap();
        out
    }

    fn set_len(msg: &mut [u8]) {
        let n = msg.len() as u32;
        msg[24..28].copy_from_slice(&n.to_be_bytes());
    }

    #[test]
    fn every_truncation_of_a_message_is_an_error() {
        let ke = [3u8; 64];
        let nonce = [4u8; 16];
        let good = encoded(&every_payload(&ke, &nonce));
        for cut in 0..good.len() {
            let mut m = good[..cut].to_vec();
            if m.len() >= HEADER_LEN {
                set_len(&mut m);
            }
            assert!(decode_message(&m).is_err(), "truncated to {cut} bytes decoded");
        }
    }

    #[test]
    fn bad_lengths_versions_and_types_are_typed_errors() {
        let nonce = [4u8; 16];
        let good = encoded(&[Payload::Nonce(&nonce), Payload::VendorId(b"v")]);
        // Header length disagreeing with the datagram.
        let mut m = good.clone();
        m[27] += 1;
        assert!(matches!(decode_message(&m), Err(IsakmpError::BadLength { .. })));
        // A payload length beyond the chain.
        let mut m = good.clone();
        m[HEADER_LEN + 3] = 200;
        assert!(matches!(decode_message(&m), Err(IsakmpError::BadLength { .. })));
        // A payload length below its header.
        let mut m = good.clone();
        m[HEADER_LEN + 3] = 3;
        assert!(matches!(decode_message(&m), Err(IsakmpError::BadLength { .. })));
        // Trailing bytes after the chain in a cleartext message.
        let mut m = good.clone();
        m.push(0);
        set_len(&mut m);
        assert!(matches!(decode_message(&m), Err(IsakmpError::BadLength { .. })));
        // Unknown exchange type.
        let mut m = good.clone();
        m[18] = 99;
        assert_eq!(decode_message(&m), Err(IsakmpError::UnknownExchange(99)));
        // IKEv2 header.
        let mut m = good.clone();
        m[17] = 0x20;
        assert_eq!(decode_message(&m), Err(IsakmpError::UnsupportedVersion(2)));
        // Unknown payload type in the chain.
        let mut m = good.clone();
        m[16] = 99;
        assert_eq!(decode_message(&m), Err(IsakmpError::UnknownPayload(99)));
        // A proposal outside an SA payload.
        let mut m = good.clone();
        m[16] = PayloadType::PROPOSAL.0;
        assert!(matches!(decode_message(&m), Err(IsakmpError::Invalid { .. })));
        // Undefined flag bits.
        let mut m = good.clone();
        m[19] = 0x80;
        assert!(matches!(decode_message(&m), Err(IsakmpError::Invalid { .. })));
        // A nonce shorter than 8 bytes.
        let short = encoded(&[Payload::VendorId(b"v")]);
        let mut m = short.clone();
        m[16] = PayloadType::NONCE.0;
        assert!(matches!(decode_message(&m), Err(IsakmpError::BadLength { .. })));
    }

    #[test]
    fn sa_payload_structure_is_checked() {
        let ke = [3u8; 16];
        let nonce = [4u8; 16];
        let sa = every_payload(&ke, &nonce).remove(0);
        let good = encoded(&[sa]);
        // Transform count one more than carried.
        let mut m = good.clone();
        let count_at = HEADER_LEN + 4 + 8 + 4 + 3;
        assert_eq!(m[count_at], 2);
        m[count_at] = 3;
        assert!(matches!(decode_message(&m), Err(IsakmpError::BadLength { .. })));
        // Another DOI.
        let mut m = good.clone();
        m[HEADER_LEN + 7] = 2;
        assert!(matches!(decode_message(&m), Err(IsakmpError::Invalid { .. })));
        // Another situation.
        let mut m = good.clone();
        m[HEADER_LEN + 11] = 2;
        assert!(matches!(decode_message(&m), Err(IsakmpError::Invalid { .. })));
        // A TLV attribute whose value runs past the transform.
        let attrs = [0x00, 0x0c, 0x00, 0x09, 1, 2];
        assert!(matches!(decode_attributes(&attrs), Err(IsakmpError::Truncated { .. })));
        // Encoding refuses types with the format bit.
        assert!(encode_attributes(&[Attribute::basic(0x8001, 1)], &mut Vec::new()).is_err());
    }

    #[test]
    fn encrypted_chains_follow_the_iv_chaining_rules() {
        let key = [0x42u8; 32];
        let a = IsakmpCipher::aes_cbc(&key).unwrap();
        let b = IsakmpCipher::aes_cbc(&key).unwrap();
        let (gi, gr) = ([1u8; 256], [2u8; 256]);
        let mut ivs_a = IvChain::new(HashAlg::Sha256, &gi, &gr);
        let mut ivs_b = IvChain::new(HashAlg::Sha256, &gi, &gr);
        let mut wire = Vec::new();
        let mut plain = Vec::new();
        let id = [Payload::Id(Identification {
            id_type: IdType::FQDN,
            protocol: 0,
            port: 0,
            data: b"a.example",
        })];
        // Phase 1 messages 5 and 6, then a Quick Mode exchange, then Phase 1 again.
        for (mid, from_a) in [(0, true), (0, false), (7, true), (7, false), (7, true), (9, false)] {
            let (tx, tx_ivs, rx, rx_ivs) = if from_a {
                (&a, &mut ivs_a, &b, &mut ivs_b)
            } else {
                (&b, &mut ivs_b, &a, &mut ivs_a)
            };
            let h = Header {
                message_id: mid,
                ..header(ExchangeType::QUICK)
            };
            tx.seal(tx_ivs, &h, &id, &mut wire).unwrap();
            assert_eq!((wire.len() - HEADER_LEN) % crypt::BLOCK_LEN, 0);
            assert!(!wire.windows(9).any(|w| w == b"a.example"), "ciphertext on the wire");
            let rh = rx.open(rx_ivs, &wire, &mut plain).unwrap();
            assert!(rh.is_encrypted());
            let payloads = decode_payloads(rh.next_payload, &plain, true).unwrap();
            assert_eq!(payloads, id);
        }
        // A retransmission is opened with a moved IV: it no longer decodes to the same chain.
        let h = Header {
            message_id: 7,
            ..header(ExchangeType::QUICK)
        };
        a.seal(&mut ivs_a, &h, &id, &mut wire).unwrap();
        b.open(&mut ivs_b.clone(), &wire, &mut plain).unwrap();
        let mut stale = ivs_b.clone();
        stale.update(7, [0; 16]);
        let garbled = b
            .open(&mut stale, &wire, &mut plain)
            .map(|h| decode_payloads(h.next_payload, &plain, true).map_or(true, |p| p != id))
            .unwrap_or(true);
        assert!(garbled, "a stale IV must not give back the chain");
        // A cleartext message where ciphertext is expected, and a body not a multiple of the block.
        let clear = encoded(&id);
        assert_eq!(b.open(&mut ivs_b, &clear, &mut plain), Err(IsakmpError::NotEncrypted));
        let mut odd = wire.clone();
        odd.push(0);
        set_len(&mut odd);
        assert!(matches!(
            b.open(&mut ivs_b, &odd, &mut plain),
            Err(IsakmpError::BadLength { .. })
        ));
        assert!(IsakmpCipher::aes_cbc(&[0; 15]).is_err());
    }

    /// The fuzz target's body over deterministic mutations of a message
    /// carrying every payload: byte changes, length-field changes, cuts.
    #[test]
    fn mutated_messages_never_panic_and_round_trip() {
        let ke = [3u8; 32];
        let nonce = [4u8; 16];
        let good = encoded(&every_payload(&ke, &nonce));
        fuzzing::decode_round_trip(&good);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..4000 {
            let mut m = good.clone();
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % m.len();
                match next() % 4 {
                    0 => m[at] = next() as u8,
                    1 => m[at] ^= 1 << (next() % 8),
                    2 => m.truncate(at.max(1)),
                    _ => m.insert(at, next() as u8),
                }
            }
            if m.len() >= HEADER_LEN && next() % 2 == 0 {
                set_len(&mut m);
            }
            fuzzing::decode_round_trip(&m);
        }
    }
}

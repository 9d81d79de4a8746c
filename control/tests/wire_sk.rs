//! SK and SKF tests over two test-only transforms: AES-256-GCM (block 1) and
//! AES-256-CBC with HMAC-SHA-256-128 (block 16).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::{constant_time, hmac, rand};
use control::wire::WireError;
use control::wire::ikev2::sk::{MAX_FRAGMENTS, MAX_REASSEMBLED_LEN};
use control::wire::ikev2::*;
use proptest::prelude::*;

/// AES-256-GCM with an 8-byte explicit IV and 4-byte salt (RFC 5282).
struct Gcm {
    key: LessSafeKey,
    salt: [u8; 4],
}

impl Gcm {
    fn new(seed: u8) -> Self {
        Gcm {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[seed; 32]).unwrap()),
            salt: [seed, 1, 2, 3],
        }
    }
    fn nonce(&self, iv: &[u8]) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(iv);
        Nonce::assume_unique_for_key(n)
    }
}

impl SkProtect for Gcm {
    fn iv_len(&self) -> usize {
        8
    }
    fn icv_len(&self) -> usize {
        16
    }
    fn block_len(&self) -> usize {
        1
    }
    fn seal(&self, aad: &[u8], iv: &mut [u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), WireError> {
        rand::fill(iv).map_err(|_| WireError::IntegrityCheckFailed)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(iv), Aad::from(aad), data)
            .map_err(|_| WireError::IntegrityCheckFailed)?;
        icv.copy_from_slice(tag.as_ref());
        Ok(())
    }
    fn open(&self, aad: &[u8], iv: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), WireError> {
        let mut buf = data.to_vec();
        buf.extend_from_slice(icv);
        let plain = self
            .key
            .open_in_place(self.nonce(iv), Aad::from(aad), &mut buf)
            .map_err(|_| WireError::IntegrityCheckFailed)?;
        data.copy_from_slice(plain);
        Ok(())
    }
}

/// AES-256-CBC with HMAC-SHA-256-128 over `aad || iv || ciphertext`.
struct CbcHmac {
    enc: [u8; 32],
    mac: hmac::Key,
}

impl CbcHmac {
    fn new(seed: u8) -> Self {
        CbcHmac {
            enc: [seed; 32],
            mac: hmac::Key::new(hmac::HMAC_SHA256, &[seed ^ 0x5a; 32]),
        }
    }
    fn tag(&self, aad: &[u8], iv: &[u8], data: &[u8]) -> [u8; 16] {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(aad);
        ctx.update(iv);
        ctx.update(data);
        let mut out = [0u8; 16];
        out.copy_from_slice(&ctx.sign().as_ref()[..16]);
        out
    }
}

impl SkProtect for CbcHmac {
    fn iv_len(&self) -> usize {
        16
    }
    fn icv_len(&self) -> usize {
        16
    }
    fn block_len(&self) -> usize {
        16
    }
    fn seal(&self, aad: &[u8], iv: &mut [u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), WireError> {
        rand::fill(iv).map_err(|_| WireError::IntegrityCheckFailed)?;
        let key = EncryptingKey::cbc(UnboundCipherKey::new(&AES_256, &self.enc).unwrap()).unwrap();
        let iv16: [u8; 16] = iv.try_into().unwrap();
        key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv16)))
            .map_err(|_| WireError::IntegrityCheckFailed)?;
        icv.copy_from_slice(&self.tag(aad, iv, data));
        Ok(())
    }
    fn open(&self, aad: &[u8], iv: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), WireError> {
        constant_time::verify_slices_are_equal(&self.tag(aad, iv, data), icv)
            .map_err(|_| WireError::IntegrityCheckFailed)?;
        let key = DecryptingKey::cbc(UnboundCipherKey::new(&AES_256, &self.enc).unwrap()).unwrap();
        let iv16: [u8; 16] = iv.try_into().unwrap();
        key.decrypt(data, DecryptionContext::Iv128(FixedLength::from(iv16)))
            .map_err(|_| WireError::IntegrityCheckFailed)?;
        Ok(())
    }
}

fn header() -> Header {
    Header {
        spi_i: 0x0102030405060708,
        spi_r: 0x1112131415161718,
        next_payload: PayloadType::NONE,
        major_version: 2,
        minor_version: 0,
        exchange: ExchangeType::IKE_AUTH,
        flags: FLAG_INITIATOR,
        message_id: 1,
        length: 0,
    }
}

fn inner(n: usize) -> Vec<Payload> {
    let mut v = vec![
        Payload::IdI(Identification {
            id_type: IdType::FQDN,
            data: b"initiator.example".to_vec(),
        }),
        Payload::Auth {
            method: AuthMethod::SHARED_KEY_MIC,
            data: vec![0xab; 32],
        },
    ];
    for i in 0..n {
        v.push(Payload::Cert {
            encoding: CertEncoding::X509_SIGNATURE,
            data: vec![i as u8; 700],
        });
    }
    v.push(Payload::Notify(Notify {
        protocol: ProtocolId::NONE,
        spi: vec![],
        ty: NotifyType::INITIAL_CONTACT,
        data: vec![],
    }));
    v
}

fn transforms() -> Vec<Box<dyn SkProtect>> {
    vec![Box::new(Gcm::new(7)), Box::new(CbcHmac::new(7))]
}

#[test]
fn sk_round_trip_and_layout() {
    for sk in transforms() {
        for n in 0..3 {
            let payloads = inner(n);
            let bytes = seal_message(&header(), &payloads, sk.as_ref()).unwrap();
            let msg = decode_message(&bytes).unwrap();
            assert_eq!(msg.header.next_payload, PayloadType::SK);
            let Some(Payload::Sk { first_inner, body }) = msg.payloads.last() else {
                panic!("SK")
            };
            assert_eq!(*first_inner, PayloadType::IDI);
            let data_len = body.len() - sk.iv_len() - sk.icv_len();
            assert_eq!(data_len % sk.block_len(), 0);
            assert_eq!(open_message(&bytes, sk.as_ref()).unwrap(), payloads);
        }
    }
}

#[test]
fn empty_inner_chain() {
    for sk in transforms() {
        let bytes = seal_message(&header(), &[], sk.as_ref()).unwrap();
        assert_eq!(decode_message(&bytes).unwrap().payloads[0], {
            let Payload::Sk { body, .. } = &decode_message(&bytes).unwrap().payloads[0] else {
                panic!()
            };
            Payload::Sk {
                first_inner: PayloadType::NONE,
                body: body.clone(),
            }
        });
        assert_eq!(open_message(&bytes, sk.as_ref()).unwrap(), vec![]);
    }
}

#[test]
fn every_bit_flip_fails_integrity() {
    for sk in transforms() {
        let bytes = seal_message(&header(), &inner(0), sk.as_ref()).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            // Header/length changes may fail decoding first; anything else is an ICV failure.
            assert!(open_message(&b, sk.as_ref()).is_err(), "flip at {i} accepted");
            if i >= HEADER_LEN + 4 {
                assert_eq!(
                    open_message(&b, sk.as_ref()),
                    Err(WireError::IntegrityCheckFailed),
                    "byte {i}"
                );
            }
        }
        // Wrong key.
        let other: Box<dyn SkProtect> = if sk.block_len() == 1 {
            Box::new(Gcm::new(8))
        } else {
            Box::new(CbcHmac::new(8))
        };
        assert_eq!(
            open_message(&bytes, other.as_ref()),
            Err(WireError::IntegrityCheckFailed)
        );
    }
}

#[test]
fn bad_pad_length_is_rejected() {
    // Seal a plaintext whose last byte (the pad length) exceeds the plaintext.
    let sk = Gcm::new(1);
    let mut m = encode_message(
        &header(),
        &[Payload::Sk {
            first_inner: PayloadType::NONE,
            body: vec![0; 8 + 3 + 16],
        }],
    );
    let n = m.len();
    let (aad, rest) = m.split_at_mut(HEADER_LEN + 4);
    let (iv, rest) = rest.split_at_mut(8);
    let (data, icv) = rest.split_at_mut(3);
    data.copy_from_slice(&[0, 0, 5]);
    sk.seal(aad, iv, data, icv).unwrap();
    assert_eq!(m.len(), n);
    assert!(matches!(open_message(&m, &sk), Err(WireError::Invalid { .. })));
}

#[test]
fn short_sk_bodies() {
    for sk in transforms() {
        for len in 0..(sk.iv_len() + sk.icv_len() + 1) {
            let m = encode_message(
                &header(),
                &[Payload::Sk {
                    first_inner: PayloadType::NONE,
                    body: vec![0; len],
                }],
            );
            assert!(open_message(&m, sk.as_ref()).is_err());
        }
    }
    let m = encode_message(&header(), &[Payload::VendorId(vec![1])]);
    assert!(open_message(&m, &Gcm::new(1)).is_err());
}

#[test]
fn fragments_round_trip_in_any_order() {
    for sk in transforms() {
        let payloads = inner(4);
        let frags = seal_fragments(&header(), &payloads, sk.as_ref(), 576).unwrap();
        assert!(frags.len() > 4);
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 576);
            let msg = decode_message(f).unwrap();
            let Payload::Skf {
                first_inner,
                number,
                total,
                ..
            } = &msg.payloads[0]
            else {
                panic!()
            };
            assert_eq!(usize::from(*number), i + 1);
            assert_eq!(usize::from(*total), frags.len());
            assert_eq!(*first_inner, if i == 0 { PayloadType::IDI } else { PayloadType::NONE });
        }
        // In order.
        let mut r = FragmentReassembler::new();
        for (i, f) in frags.iter().enumerate() {
            let out = r.push(f, sk.as_ref()).unwrap();
            assert_eq!(out.is_some(), i + 1 == frags.len());
            if let Some(p) = out {
                assert_eq!(p, payloads);
            }
        }
        // Reverse order with duplicates.
        let mut r = FragmentReassembler::new();
        for f in frags.iter().skip(1).rev() {
            assert_eq!(r.push(f, sk.as_ref()).unwrap(), None);
            assert_eq!(r.push(f, sk.as_ref()).unwrap(), None);
        }
        assert_eq!(r.push(&frags[0], sk.as_ref()).unwrap(), Some(payloads));
        assert_eq!(r.pending_message_id(), None);
    }
}

#[test]
fn single_fragment_and_tiny_limits() {
    let sk = Gcm::new(3);
    let frags = seal_fragments(&header(), &inner(0), &sk, 1280).unwrap();
    assert_eq!(frags.len(), 1);
    assert_eq!(FragmentReassembler::new().push(&frags[0], &sk).unwrap(), Some(inner(0)));
    // No room for data.
    assert!(seal_fragments(&header(), &inner(0), &sk, 28 + 8 + 8 + 16 + 1).is_err());
    let frags = seal_fragments(&header(), &inner(0), &sk, 28 + 8 + 8 + 16 + 2).unwrap();
    assert!(frags.iter().all(|f| f.len() <= 62));
}

#[test]
fn higher_total_restarts_lower_total_ignored() {
    let sk = CbcHmac::new(9);
    let payloads = inner(2);
    let small = seal_fragments(&header(), &payloads, &sk, 1000).unwrap();
    let big = seal_fragments(&header(), &payloads, &sk, 500).unwrap();
    assert!(big.len() > small.len());
    let mut r = FragmentReassembler::new();
    assert_eq!(r.push(&small[0], &sk).unwrap(), None);
    // The peer re-fragmented with a smaller size: the old set is discarded.
    for f in &big[..big.len() - 1] {
        assert_eq!(r.push(f, &sk).unwrap(), None);
    }
    // Fragments of the old (lower total) set are ignored now.
    for f in &small {
        assert_eq!(r.push(f, &sk).unwrap(), None);
    }
    assert_eq!(r.push(&big[big.len() - 1], &sk).unwrap(), Some(payloads));
}

#[test]
fn new_message_id_replaces_pending_set() {
    let sk = Gcm::new(2);
    let a = seal_fragments(&header(), &inner(2), &sk, 600).unwrap();
    let mut h2 = header();
    h2.message_id = 2;
    let b = seal_fragments(&h2, &inner(3), &sk, 600).unwrap();
    let mut r = FragmentReassembler::new();
    r.push(&a[0], &sk).unwrap();
    assert_eq!(r.pending_message_id(), Some(1));
    let mut out = None;
    for f in &b {
        out = r.push(f, &sk).unwrap();
    }
    assert_eq!(out, Some(inner(3)));
}

#[test]
fn forged_and_oversized_fragments_are_rejected() {
    let sk = Gcm::new(4);
    let frags = seal_fragments(&header(), &inner(2), &sk, 600).unwrap();
    let mut r = FragmentReassembler::new();
    r.push(&frags[0], &sk).unwrap();
    let mut forged = frags[1].clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(r.push(&forged, &sk), Err(WireError::IntegrityCheckFailed));
    // The forged fragment left no trace: the genuine one still completes the set.
    let mut out = None;
    for f in &frags[1..] {
        out = r.push(f, &sk).unwrap();
    }
    assert_eq!(out, Some(inner(2)));

    // More than MAX_FRAGMENTS.
    let many = seal_fragments(&header(), &inner(40), &sk, 400).unwrap();
    assert!(many.len() > usize::from(MAX_FRAGMENTS));
    assert!(matches!(
        FragmentReassembler::new().push(&many[0], &sk),
        Err(WireError::Invalid { .. })
    ));

    // More than MAX_REASSEMBLED_LEN bytes in 64 fragments.
    let huge = seal_fragments(&header(), &inner(100), &sk, 1500).unwrap();
    assert!(huge.len() <= usize::from(MAX_FRAGMENTS));
    let mut r = FragmentReassembler::new();
    let mut res = Ok(None);
    for f in &huge {
        res = r.push(f, &sk);
        if res.is_err() {
            break;
        }
    }
    assert!(inner(100).iter().map(|_| 700).sum::<usize>() > MAX_REASSEMBLED_LEN);
    assert!(matches!(res, Err(WireError::TooLarge(_))));

    // A plain SK message is not a fragment.
    let plain = seal_message(&header(), &inner(0), &sk).unwrap();
    assert!(FragmentReassembler::new().push(&plain, &sk).is_err());
    // And a fragment cannot be opened as SK.
    assert!(open_message(&frags[0], &sk).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fragmentation_round_trip(n in 0usize..8, max in 100usize..2000, cbc in any::<bool>(), seed in any::<u64>()) {
        let sk: Box<dyn SkProtect> = if cbc { Box::new(CbcHmac::new(5)) } else { Box::new(Gcm::new(5)) };
        let payloads = inner(n);
        let frags = seal_fragments(&header(), &payloads, sk.as_ref(), max).unwrap();
        prop_assume!(frags.len() <= usize::from(MAX_FRAGMENTS));
        let mut order: Vec<usize> = (0..frags.len()).collect();
        // Deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut r = FragmentReassembler::new();
        let mut out = None;
        for (k, &i) in order.iter().enumerate() {
            prop_assert!(frags[i].len() <= max);
            let res = r.push(&frags[i], sk.as_ref()).unwrap();
            prop_assert_eq!(res.is_some(), k + 1 == order.len());
            out = res.or(out);
        }
        prop_assert_eq!(out, Some(payloads));
    }
}

//! Private keys and AUTH payload signatures (RFC 7296 §2.15, RFC 7427,
//! RFC 4754), including signatures made by openssl over a fixed message.

use control::pki::{
    Certificate, HASH_IDENTITY, HASH_SHA256, HASH_SHA384, HASH_SHA512, KeyType, PkiError, PrivateKey, sign_auth,
    supported_hash_algorithms, verify_auth,
};
use control::wire::ikev2::types::AuthMethod;
use ironsa_crypto::AwsLcProvider;
use proptest::prelude::*;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/pki/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn cert(name: &str) -> Certificate {
    Certificate::load(&data(name)).unwrap().remove(0)
}

fn key(name: &str) -> PrivateKey {
    PrivateKey::load(&data(name)).unwrap()
}

/// (key file, certificate file, key type) of every end entity.
const ENTITIES: &[(&str, &str, KeyType)] = &[
    ("ee-p256.key", "ee-p256.pem", KeyType::EcdsaP256),
    ("ee-p384.key", "ee-p384.pem", KeyType::EcdsaP384),
    ("ee-rsa.key", "ee-rsa.pem", KeyType::Rsa(2048)),
    ("ee-ed25519.key", "ee-ed25519.pem", KeyType::Ed25519),
];

const OCTETS: &[u8] = b"IKE_SA_INIT request || Nr || prf(SK_pi, IDi')";
const ALL: &[u16] = &[HASH_SHA256, HASH_SHA384, HASH_SHA512, HASH_IDENTITY];

/// RFC 7427 AUTH data from an AlgorithmIdentifier (hex) and a signature.
fn ds_auth(alg_id_hex: &str, sig: &[u8]) -> Vec<u8> {
    let alg = hex::decode(alg_id_hex).unwrap();
    let mut out = vec![alg.len() as u8];
    out.extend(alg);
    out.extend_from_slice(sig);
    out
}

#[test]
fn loads_every_key_format() {
    for (k, c, ty) in ENTITIES {
        let key = key(k);
        assert_eq!(key.key_type(), *ty, "{k}");
        assert!(key.matches_certificate(&cert(c)), "{k}");
        assert!(!key.matches_certificate(&cert("ca-rsa.pem")), "{k}");
    }
    // strongSwan writes PKCS#1 and SEC1; openssl converted them to PKCS#8.
    assert!(
        String::from_utf8(data("ee-rsa.key"))
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    assert!(
        String::from_utf8(data("ee-p256.key"))
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    assert_eq!(key("ee-rsa.pk8.pem").public_key(), key("ee-rsa.key").public_key());
    assert_eq!(key("ee-p256.pk8.pem").public_key(), key("ee-p256.key").public_key());
    assert_eq!(key("ee-p256.pk8.der").public_key(), key("ee-p256.key").public_key());
    assert_eq!(key("ca-rsa.key").key_type(), KeyType::Rsa(3072));
    assert_eq!(key("ca-ecdsa.key").key_type(), KeyType::EcdsaP384);
    // Debug output never shows key material.
    assert_eq!(
        format!("{:?}", key("ee-p256.key")),
        "PrivateKey(ECDSA P-256, rsa_pss: false)"
    );
}

#[test]
fn malformed_keys_are_errors() {
    assert!(PrivateKey::load(b"").is_err());
    assert!(PrivateKey::load(b"garbage").is_err());
    assert!(
        PrivateKey::load(&data("ee-p256.pem")).is_err(),
        "a certificate is not a key"
    );
    assert!(PrivateKey::load(&data("truncated.der")).is_err());
    let der = data("ee-p256.pk8.der");
    for len in 0..der.len() {
        assert!(PrivateKey::from_der(&der[..len]).is_err());
    }
    assert!(matches!(
        PrivateKey::load(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n"),
        Err(PkiError::KeyRejected(_))
    ));
    assert!(PrivateKey::load(b"-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n").is_err());
    assert!(PrivateKey::load(b"-----BEGIN RSA PRIVATE KEY-----\nMAMCAQA=\n-----END RSA PRIVATE KEY-----\n").is_err());
}

#[test]
fn digital_signature_round_trips() {
    for (k, c, _) in ENTITIES {
        let (key, cert) = (key(k), cert(c));
        let (method, auth) = sign_auth(&key, &AwsLcProvider::new(), OCTETS, ALL).unwrap();
        assert_eq!(method, AuthMethod::DIGITAL_SIGNATURE, "{k}");
        verify_auth(&cert, method, &auth, OCTETS).unwrap();
        // Different octets, a flipped signature bit, the wrong certificate.
        assert!(verify_auth(&cert, method, &auth, b"other octets").is_err(), "{k}");
        let mut bad = auth.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(verify_auth(&cert, method, &bad, OCTETS).is_err(), "{k}");
        for (_, other, _) in ENTITIES.iter().filter(|(_, o, _)| o != c) {
            assert!(
                verify_auth(&self::cert(other), method, &auth, OCTETS).is_err(),
                "{k} vs {other}"
            );
        }
    }
}

#[test]
fn rsa_hash_choice_and_pss() {
    let (key, cert) = (key("ee-rsa.key"), cert("ee-rsa.pem"));
    for (peer, alg_id) in [
        (&[HASH_SHA256][..], "300d06092a864886f70d01010b0500"),
        (&[HASH_SHA384][..], "300d06092a864886f70d01010c0500"),
        (&[HASH_SHA512, HASH_IDENTITY][..], "300d06092a864886f70d01010d0500"),
    ] {
        let (method, auth) = sign_auth(&key, &AwsLcProvider::new(), OCTETS, peer).unwrap();
        assert_eq!(method, AuthMethod::DIGITAL_SIGNATURE);
        assert_eq!(hex::encode(&auth[1..1 + auth[0] as usize]), alg_id);
        assert_eq!(auth.len(), 1 + alg_id.len() / 2 + 256);
        verify_auth(&cert, method, &auth, OCTETS).unwrap();
    }
    let pss = key.with_rsa_pss(true);
    for peer in [&[HASH_SHA256][..], &[HASH_SHA384][..], &[HASH_SHA512][..]] {
        let (method, auth) = sign_auth(&pss, &AwsLcProvider::new(), OCTETS, peer).unwrap();
        assert_eq!(method, AuthMethod::DIGITAL_SIGNATURE);
        assert_eq!(
            &auth[3..14],
            hex::decode("06092a864886f70d01010a").unwrap(),
            "RSASSA-PSS OID"
        );
        verify_auth(&cert, method, &auth, OCTETS).unwrap();
    }
    // Peer without RFC 7427: RSA_SIG (auth method 1, PKCS#1 v1.5 with SHA-1).
    let (method, auth) = sign_auth(&pss, &AwsLcProvider::new(), OCTETS, &[]).unwrap();
    assert_eq!(method, AuthMethod::RSA_SIG);
    verify_auth(&cert, method, &auth, OCTETS).unwrap();
    assert!(verify_auth(&cert, method, &auth, b"other octets").is_err());
    // A peer announcing only Identity (Ed25519) gets RSA_SIG from an RSA key too.
    assert_eq!(
        sign_auth(&pss, &AwsLcProvider::new(), OCTETS, &[HASH_IDENTITY])
            .unwrap()
            .0,
        AuthMethod::RSA_SIG
    );
}

#[test]
fn legacy_ecdsa_methods_without_signature_hash_algorithms() {
    for (k, c, method, len) in [
        ("ee-p256.key", "ee-p256.pem", AuthMethod::ECDSA_SHA256_P256, 64),
        ("ee-p384.key", "ee-p384.pem", AuthMethod::ECDSA_SHA384_P384, 96),
    ] {
        let (key, cert) = (key(k), cert(c));
        let (m, auth) = sign_auth(&key, &AwsLcProvider::new(), OCTETS, &[]).unwrap();
        assert_eq!((m, auth.len()), (method, len), "{k}");
        verify_auth(&cert, m, &auth, OCTETS).unwrap();
        assert!(verify_auth(&cert, m, &auth[1..], OCTETS).is_err());
        assert!(verify_auth(&cert, m, &auth, b"x").is_err());
        // The peer announced only hashes that do not fit the curve: legacy method too.
        let (m2, _) = sign_auth(&key, &AwsLcProvider::new(), OCTETS, &[HASH_SHA512]).unwrap();
        assert_eq!(m2, method);
    }
    // Method / key mismatches.
    let (_, raw) = sign_auth(&key("ee-p256.key"), &AwsLcProvider::new(), OCTETS, &[]).unwrap();
    assert!(verify_auth(&cert("ee-p384.pem"), AuthMethod::ECDSA_SHA256_P256, &raw, OCTETS).is_err());
    assert!(verify_auth(&cert("ee-p256.pem"), AuthMethod::ECDSA_SHA384_P384, &raw, OCTETS).is_err());
    assert!(verify_auth(&cert("ee-rsa.pem"), AuthMethod::ECDSA_SHA256_P256, &raw, OCTETS).is_err());
    // Ed25519 has no legacy method.
    assert!(matches!(
        sign_auth(&key("ee-ed25519.key"), &AwsLcProvider::new(), OCTETS, &[HASH_SHA256]),
        Err(PkiError::NoCommonHash(_))
    ));
}

#[test]
fn rsa_sig_method_1_matches_openssl_byte_for_byte() {
    // PKCS#1 v1.5 is deterministic: our RSA_SIG equals `openssl dgst -sha1 -sign`.
    let (method, auth) = sign_auth(&key("ee-rsa.key"), &AwsLcProvider::new(), &data("message.bin"), &[]).unwrap();
    assert_eq!(method, AuthMethod::RSA_SIG);
    assert_eq!(auth, data("sig-rsa-pkcs1-sha1.bin"));
}

#[test]
fn verifies_openssl_signatures() {
    let msg = data("message.bin");
    let rsa = cert("ee-rsa.pem");
    verify_auth(&rsa, AuthMethod::RSA_SIG, &data("sig-rsa-pkcs1-sha1.bin"), &msg).unwrap();
    let pkcs1 = ds_auth("300d06092a864886f70d01010b0500", &data("sig-rsa-pkcs1-sha256.bin"));
    verify_auth(&rsa, AuthMethod::DIGITAL_SIGNATURE, &pkcs1, &msg).unwrap();
    // RSA-PSS AlgorithmIdentifier as strongSwan sends it: SHA-256, MGF1-SHA-256, salt 32.
    let pss_alg = "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120";
    let pss = ds_auth(pss_alg, &data("sig-rsa-pss-sha256.bin"));
    verify_auth(&rsa, AuthMethod::DIGITAL_SIGNATURE, &pss, &msg).unwrap();
    // The same parameters with absent (rather than NULL) hash parameters.
    let pss_no_null = "303d06092a864886f70d01010a3030a00d300b0609608648016503040201a11a301806092a864886f70d010108300b0609608648016503040201a203020120";
    let pss2 = ds_auth(pss_no_null, &data("sig-rsa-pss-sha256.bin"));
    verify_auth(&rsa, AuthMethod::DIGITAL_SIGNATURE, &pss2, &msg).unwrap();
    // PKCS#1 v1.5 signature presented as PSS, and vice versa.
    let swapped = ds_auth(pss_alg, &data("sig-rsa-pkcs1-sha256.bin"));
    assert!(verify_auth(&rsa, AuthMethod::DIGITAL_SIGNATURE, &swapped, &msg).is_err());
    let swapped = ds_auth("300d06092a864886f70d01010b0500", &data("sig-rsa-pss-sha256.bin"));
    assert!(verify_auth(&rsa, AuthMethod::DIGITAL_SIGNATURE, &swapped, &msg).is_err());
    // SHA-1 signature claimed as SHA-256.
    let wrong_hash = ds_auth("300d06092a864886f70d01010b0500", &data("sig-rsa-pkcs1-sha1.bin"));
    assert!(verify_auth(&rsa, AuthMethod::DIGITAL_SIGNATURE, &wrong_hash, &msg).is_err());

    let p256 = cert("ee-p256.pem");
    let der = ds_auth("300a06082a8648ce3d040302", &data("sig-p256-sha256.der"));
    verify_auth(&p256, AuthMethod::DIGITAL_SIGNATURE, &der, &msg).unwrap();
    verify_auth(&p256, AuthMethod::ECDSA_SHA256_P256, &data("sig-p256-sha256.raw"), &msg).unwrap();
    assert!(verify_auth(&p256, AuthMethod::ECDSA_SHA256_P256, &data("sig-p256-sha256.der"), &msg).is_err());

    let p384 = cert("ee-p384.pem");
    let der = ds_auth("300a06082a8648ce3d040303", &data("sig-p384-sha384.der"));
    verify_auth(&p384, AuthMethod::DIGITAL_SIGNATURE, &der, &msg).unwrap();
    verify_auth(&p384, AuthMethod::ECDSA_SHA384_P384, &data("sig-p384-sha384.raw"), &msg).unwrap();

    let ed = cert("ee-ed25519.pem");
    let auth = ds_auth("300506032b6570", &data("sig-ed25519.bin"));
    verify_auth(&ed, AuthMethod::DIGITAL_SIGNATURE, &auth, &msg).unwrap();
    assert!(verify_auth(&ed, AuthMethod::DIGITAL_SIGNATURE, &auth, b"other").is_err());
}

#[test]
fn malformed_auth_data_is_rejected() {
    let c = cert("ee-p256.pem");
    let (_, good) = sign_auth(&key("ee-p256.key"), &AwsLcProvider::new(), OCTETS, ALL).unwrap();
    for bad in [
        &[][..],
        &[0u8][..],
        &[12u8, 0x30][..],
        &good[..good[0] as usize + 1],
        &[5u8, 0x30, 0x03, 0x06, 0x01, 0x00, 0xaa][..],
    ] {
        assert!(
            verify_auth(&c, AuthMethod::DIGITAL_SIGNATURE, bad, OCTETS).is_err(),
            "{bad:02x?}"
        );
    }
    // Unsupported methods.
    assert!(matches!(
        verify_auth(&c, AuthMethod::SHARED_KEY_MIC, &good, OCTETS),
        Err(PkiError::UnsupportedAuthMethod { .. })
    ));
    assert!(verify_auth(&c, AuthMethod::ECDSA_SHA512_P521, &good, OCTETS).is_err());
    assert!(verify_auth(&c, AuthMethod::RSA_SIG, &good, OCTETS).is_err());
    // ecdsa-with-SHA1 in RFC 7427 data is refused (we never announce SHA-1).
    let sha1 = ds_auth("300906072a8648ce3d0401", &good[1 + good[0] as usize..]);
    assert!(verify_auth(&c, AuthMethod::DIGITAL_SIGNATURE, &sha1, OCTETS).is_err());
}

#[test]
fn announced_hash_algorithms() {
    assert_eq!(supported_hash_algorithms(), vec![2, 3, 4, 5]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_auth_data_never_panics(method in 0u8..20, data in proptest::collection::vec(any::<u8>(), 0..300)) {
        for c in ["ee-p256.pem", "ee-rsa.pem", "ee-ed25519.pem"] {
            prop_assert!(verify_auth(&cert(c), AuthMethod(method), &data, OCTETS).is_err());
        }
    }

    #[test]
    fn mutated_auth_data_never_panics(pos in 0usize..200, xor in 1u8..=255) {
        let (m, mut auth) = sign_auth(&key("ee-p256.key"), &AwsLcProvider::new(), OCTETS, ALL).unwrap();
        let i = pos % auth.len();
        auth[i] ^= xor;
        prop_assert!(verify_auth(&cert("ee-p256.pem"), m, &auth, OCTETS).is_err());
    }
}

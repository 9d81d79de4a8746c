//! Certificate parsing and path validation against fixtures made with
//! strongSwan's `pki` (see tests/data/pki/regenerate.sh).

use std::net::IpAddr;

use control::pki::{
    Certificate, DistinguishedName, Identity, MAX_PATH_DEPTH, PkiError, PublicKey, SubjectAltName, TrustStore,
    certreq_hashes, select_by_certreq, verify_chain,
};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/pki/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn cert(name: &str) -> Certificate {
    let mut certs = Certificate::load(&data(name)).unwrap();
    assert_eq!(certs.len(), 1, "{name}");
    certs.remove(0)
}

fn store() -> TrustStore {
    let mut s = TrustStore::new();
    s.add(cert("ca-rsa.pem")).unwrap();
    s.add(cert("ca-ecdsa.pem")).unwrap();
    s
}

/// A day after the fixtures were issued: inside every 20-year validity.
fn now() -> u64 {
    (cert("ca-rsa.pem").not_before() + 86_400) as u64
}

#[test]
fn parses_fields() {
    let ee = cert("ee-p256.pem");
    assert_eq!(ee.subject().to_string(), "C=CH, O=ironsa, CN=moon.example.com");
    assert_eq!(
        ee.issuer().to_string(),
        "C=CH, O=ironsa, OU=Intermediate, CN=ironsa Intermediate CA"
    );
    assert_eq!(
        ee.subject_alt_names(),
        &[
            SubjectAltName::Dns("moon.example.com".into()),
            SubjectAltName::Email("moon@example.com".into()),
            SubjectAltName::Ip("192.0.2.1".parse::<IpAddr>().unwrap()),
            SubjectAltName::Ip("2001:db8::1".parse::<IpAddr>().unwrap()),
        ]
    );
    assert!(!ee.is_ca());
    assert!(matches!(ee.public_key().unwrap(), PublicKey::EcP256(p) if p.len() == 65));
    assert!(ee.not_after() - ee.not_before() >= 7300 * 86_400 - 1);

    let int = cert("int.pem");
    assert!(int.is_ca());
    assert_eq!(int.path_len(), Some(0));
    assert!(int.may_sign_certificates());
    assert_eq!(
        int.signature_algorithm().unwrap(),
        control::pki::SignatureAlgorithm::RsaPss(control::pki::HashAlg::Sha256)
    );

    let ca = cert("ca-rsa.pem");
    assert!(matches!(ca.public_key().unwrap(), PublicKey::Rsa { bits: 3072, .. }));
    assert!(matches!(
        cert("ee-rsa.pem").public_key().unwrap(),
        PublicKey::Rsa { bits: 2048, .. }
    ));
    assert!(matches!(
        cert("ee-p384.pem").public_key().unwrap(),
        PublicKey::EcP384(_)
    ));
    assert!(matches!(
        cert("ee-ed25519.pem").public_key().unwrap(),
        PublicKey::Ed25519(_)
    ));
    // strongSwan's pki sets authorityKeyIdentifier = SHA-1 of the issuer's subjectPublicKey.
    assert_eq!(int.authority_key_id().unwrap(), ca.public_key_sha1());
}

#[test]
fn der_and_pem_agree() {
    assert_eq!(cert("ca-rsa.der"), cert("ca-rsa.pem"));
    assert_eq!(cert("ee-p256.der").der(), data("ee-p256.der").as_slice());
    let many = Certificate::load(&data("deep-chain.pem")).unwrap();
    assert_eq!(many.len(), 9);
    // A file mixing a key and certificates yields just the certificates.
    let mut mixed = data("ee-p256.key");
    mixed.extend(data("ee-p256.pem"));
    mixed.extend(data("int.pem"));
    let certs = Certificate::load(&mixed).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[1], cert("int.pem"));
    let mut s = TrustStore::new();
    assert_eq!(s.add_pem_or_der(&data("ca-rsa.pem")).unwrap(), 1);
    assert_eq!(s.add_pem_or_der(&data("ca-rsa.der")).unwrap(), 1);
    assert_eq!(s.certificates().len(), 1, "duplicates are stored once");
}

#[test]
fn dn_string_encodes_like_strongswan() {
    // pki --self --dn "C=CH, O=ironsa, CN=ironsa RSA Root CA" produced this subject.
    let ca = cert("ca-rsa.pem");
    let dn = DistinguishedName::parse("C=CH, O=ironsa, CN=ironsa RSA Root CA").unwrap();
    assert_eq!(dn.as_der(), ca.subject().as_der());
    assert!(dn.semantic_eq(ca.subject()));
}

#[test]
fn certreq_hash_matches_openssl() {
    for name in ["ca-rsa", "ca-ecdsa"] {
        let expected = String::from_utf8(data(&format!("{name}.certreq.hex"))).unwrap();
        assert_eq!(
            hex::encode(cert(&format!("{name}.pem")).public_key_sha1()),
            expected.trim(),
            "{name}"
        );
    }
    let hashes = certreq_hashes(&store());
    assert_eq!(hashes.len(), 40);
    assert_eq!(&hashes[..20], cert("ca-rsa.pem").public_key_sha1());
}

#[test]
fn select_certificate_by_certreq() {
    let ee_p256 = cert("ee-p256.pem");
    let ee_p384 = cert("ee-p384.pem");
    let candidates = [ee_p256.clone(), ee_p384.clone()];
    let intermediates = [cert("int.pem")];
    let rsa_ca = cert("ca-rsa.pem").public_key_sha1();
    let ec_ca = cert("ca-ecdsa.pem").public_key_sha1();
    assert_eq!(select_by_certreq(&rsa_ca, &candidates, &intermediates), Some(&ee_p256));
    assert_eq!(select_by_certreq(&ec_ca, &candidates, &intermediates), Some(&ee_p384));
    let mut both = ec_ca.to_vec();
    both.extend_from_slice(&rsa_ca);
    assert_eq!(select_by_certreq(&both, &candidates, &intermediates), Some(&ee_p256));
    assert_eq!(select_by_certreq(&[0u8; 20], &candidates, &intermediates), None);
    assert_eq!(select_by_certreq(&[], &candidates, &intermediates), None);
    assert_eq!(select_by_certreq(&rsa_ca[..19], &candidates, &intermediates), None);
}

#[test]
fn valid_chains() {
    let s = store();
    let int = [cert("int.pem")];
    verify_chain(&s, &cert("ee-p256.pem"), &int, now()).unwrap();
    verify_chain(&s, &cert("ee-p384.pem"), &[], now()).unwrap();
    verify_chain(&s, &cert("ee-rsa.pem"), &int, now()).unwrap();
    verify_chain(&s, &cert("ee-ed25519.pem"), &[], now()).unwrap();
    verify_chain(&s, &cert("int.pem"), &[], now()).unwrap();
    s.verify_chain(&cert("ee-rsa.pem"), &int, now()).unwrap();
    // A trust anchor presented as the end entity.
    verify_chain(&s, &cert("ca-ecdsa.pem"), &[], now()).unwrap();
}

#[test]
fn missing_intermediate() {
    let err = verify_chain(&store(), &cert("ee-p256.pem"), &[], now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no trusted CA for issuer 'C=CH, O=ironsa, OU=Intermediate, CN=ironsa Intermediate CA'"
    );
}

#[test]
fn expired() {
    let err = verify_chain(&store(), &cert("ee-expired.pem"), &[], now()).unwrap_err();
    assert!(matches!(err, PkiError::Expired { .. }));
    assert_eq!(
        err.to_string(),
        "certificate 'C=CH, O=ironsa, CN=expired.example.com' expired on 2002-01-01 00:00:00 UTC"
    );
    // Before the start of validity.
    let early = verify_chain(&store(), &cert("ee-p256.pem"), &[cert("int.pem")], 1_000_000_000).unwrap_err();
    assert!(matches!(early, PkiError::NotYetValid { .. }), "{early}");
    // Long after the CA expired: the end entity fails first, with its own name.
    let late = verify_chain(&store(), &cert("ee-p384.pem"), &[], now() + 30 * 365 * 86_400).unwrap_err();
    assert!(late.to_string().contains("CN=sun.example.com' expired on"), "{late}");
}

#[test]
fn untrusted_ca() {
    let err = verify_chain(&store(), &cert("ee-untrusted.pem"), &[], now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no trusted CA for issuer 'C=XX, O=Evil, CN=Untrusted CA'"
    );
    // Supplying the untrusted root as an "intermediate" does not help.
    let err = verify_chain(&store(), &cert("ee-untrusted.pem"), &[cert("untrusted-ca.pem")], now()).unwrap_err();
    assert!(matches!(err, PkiError::NoTrustedCa { .. }), "{err}");
    // Empty store.
    let err = verify_chain(&TrustStore::new(), &cert("ee-p384.pem"), &[], now()).unwrap_err();
    assert!(matches!(err, PkiError::NoTrustedCa { .. }));
}

#[test]
fn wrong_signature() {
    // Same issuer DN as the trusted RSA root, but signed by another key.
    let err = verify_chain(&store(), &cert("ee-impostor.pem"), &[], now()).unwrap_err();
    assert!(matches!(err, PkiError::BadCertificateSignature { .. }), "{err}");
    // A flipped bit in the signature of a genuine certificate.
    let mut der = data("ee-p256.der");
    let n = der.len();
    der[n - 5] ^= 0x01;
    let tampered = Certificate::from_der(&der).unwrap();
    let err = verify_chain(&store(), &tampered, &[cert("int.pem")], now()).unwrap_err();
    assert!(matches!(err, PkiError::BadCertificateSignature { .. }), "{err}");
    // A flipped bit inside the signed TBS (in the subject CN).
    let mut der = data("ee-p384.pem");
    let text = String::from_utf8(der.clone()).unwrap();
    let orig = Certificate::load(text.as_bytes()).unwrap().remove(0);
    let mut raw = orig.der().to_vec();
    let pos = raw.windows(3).position(|w| w == b"sun").unwrap();
    raw[pos] = b'S';
    der.clear();
    let err = verify_chain(&store(), &Certificate::from_der(&raw).unwrap(), &[], now()).unwrap_err();
    assert!(matches!(err, PkiError::BadCertificateSignature { .. }), "{err}");
}

#[test]
fn too_deep() {
    let mut s = TrustStore::new();
    s.add(cert("deep-0.pem")).unwrap();
    let chain = Certificate::load(&data("deep-chain.pem")).unwrap();
    assert!(chain.len() > MAX_PATH_DEPTH);
    let err = verify_chain(&s, &cert("deep-leaf.pem"), &chain, now()).unwrap_err();
    assert_eq!(err, PkiError::PathTooDeep { max: MAX_PATH_DEPTH });
    // The same path is fine when it starts at an intermediate closer to the root.
    verify_chain(&s, &chain[6], &chain[..6], now()).unwrap();
    // Order of the supplied intermediates does not matter.
    let mut reversed = chain[..6].to_vec();
    reversed.reverse();
    verify_chain(&s, &chain[6], &reversed, now()).unwrap();
}

#[test]
fn path_len_and_ca_flag() {
    // int has pathLenConstraint 0, yet issued sub-ca, which issued ee-pathlen.
    let err = verify_chain(
        &store(),
        &cert("ee-pathlen.pem"),
        &[cert("sub-ca.pem"), cert("int.pem")],
        now(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        PkiError::PathLenExceeded {
            subject: "C=CH, O=ironsa, OU=Intermediate, CN=ironsa Intermediate CA".into(),
            path_len: 0
        }
    );
    // With sub-ca itself trusted the path is fine.
    let mut s = TrustStore::new();
    s.add(cert("sub-ca.pem")).unwrap();
    verify_chain(&s, &cert("ee-pathlen.pem"), &[], now()).unwrap();

    // An end entity cannot act as a CA, neither in a path nor as an anchor.
    let err = verify_chain(
        &store(),
        &cert("ee-by-non-ca.pem"),
        &[cert("ee-p256.pem"), cert("int.pem")],
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::NotCa { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("'C=CH, O=ironsa, CN=moon.example.com' is not a CA"),
        "{err}"
    );
    let mut s = TrustStore::new();
    assert!(matches!(s.add(cert("ee-p256.pem")), Err(PkiError::NotCa { .. })));
    s.add(cert("int.pem")).unwrap();
    verify_chain(&s, &cert("ee-p256.pem"), &[], now()).unwrap();
}

#[test]
fn certificate_matches_identity() {
    let ee = cert("ee-p256.pem");
    for (id, ok) in [
        ("moon.example.com", true),
        ("@MOON.example.com", true),
        ("moon@example.com", true),
        ("192.0.2.1", true),
        ("2001:db8::1", true),
        ("C=CH, O=ironsa, CN=moon.example.com", true),
        ("c=ch, o=IRONSA, cn=Moon.Example.Com", true),
        ("C=CH, O=ironsa, CN=sun.example.com", false),
        ("sun.example.com", false),
        ("192.0.2.2", false),
        ("example.com", false),
    ] {
        let wire = Identity::parse(id).unwrap().to_wire().unwrap();
        assert_eq!(ee.matches_identity(&wire), ok, "{id}");
    }
    let keyid = Identity::KeyId(ee.public_key_sha1().to_vec()).to_wire().unwrap();
    assert!(ee.matches_identity(&keyid));
}

#[test]
fn malformed_certificates_are_errors() {
    assert!(Certificate::from_der(&data("truncated.der")).is_err());
    assert!(Certificate::load(&data("truncated.der")).is_err());
    assert!(Certificate::from_der(&[]).is_err());
    assert!(Certificate::from_der(&[0x30, 0x00]).is_err());
    assert!(Certificate::from_der(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    let mut trailing = data("ee-p256.der");
    trailing.push(0);
    assert!(Certificate::from_der(&trailing).is_err());
    assert!(Certificate::load(b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n").is_err());
    assert!(Certificate::load(b"-----BEGIN CERTIFICATE-----\nMIIB\n").is_err());
    assert!(Certificate::load(b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n").is_err());
    assert!(
        Certificate::from_pem(&data("ee-p256.key")).is_err(),
        "a key is not a certificate"
    );
    assert!(TrustStore::new().add_pem_or_der(b"garbage").is_err());
}

#[test]
fn mutated_certificates_never_panic() {
    let der = data("ee-p256.der");
    // Every single-byte truncation and a deterministic spread of bit flips.
    for len in 0..der.len() {
        let _ = Certificate::from_der(&der[..len]);
    }
    let s = store();
    let int = [cert("int.pem")];
    for i in 0..der.len() {
        for bit in [0x01u8, 0x80] {
            let mut m = der.clone();
            m[i] ^= bit;
            if let Ok(c) = Certificate::from_der(&m) {
                let _ = verify_chain(&s, &c, &int, now());
                let _ = c.subject().to_string();
            }
        }
    }
}

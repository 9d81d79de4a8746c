//! AUTH payload signatures (RFC 7296 §2.15), RFC 7427 digital signatures,
//! RFC 4754 ECDSA methods, SIGNATURE_HASH_ALGORITHMS and CERTREQ hashes.

use aws_lc_rs::signature::{self, UnparsedPublicKey};

use super::PkiError;
use super::cert::{Certificate, PublicKey};
use super::chain::{MAX_PATH_DEPTH, TrustStore};
use super::key::{KeyType, PrivateKey};
use super::sigalg::{HashAlg, SignatureAlgorithm};
use crate::crypto::CryptoProvider;
use crate::wire::ikev2::types::AuthMethod;

/// RFC 7427 hash algorithm identifier: SHA1.
pub const HASH_SHA1: u16 = 1;
/// RFC 7427 hash algorithm identifier: SHA2-256.
pub const HASH_SHA256: u16 = 2;
/// RFC 7427 hash algorithm identifier: SHA2-384.
pub const HASH_SHA384: u16 = 3;
/// RFC 7427 hash algorithm identifier: SHA2-512.
pub const HASH_SHA512: u16 = 4;
/// RFC 8420 hash algorithm identifier: Identity (for EdDSA).
pub const HASH_IDENTITY: u16 = 5;

/// The hash algorithms we announce in SIGNATURE_HASH_ALGORITHMS.
pub fn supported_hash_algorithms() -> Vec<u16> {
    vec![HASH_SHA256, HASH_SHA384, HASH_SHA512, HASH_IDENTITY]
}

/// RFC 7427 AUTH data: 1-byte length, AlgorithmIdentifier DER, signature.
fn digital_signature(
    key: &PrivateKey,
    legacy: &dyn CryptoProvider,
    alg: SignatureAlgorithm,
    octets: &[u8],
) -> Result<(AuthMethod, Vec<u8>), PkiError> {
    let alg_id = alg.to_der();
    let len = u8::try_from(alg_id.len())
        .map_err(|_| PkiError::UnsupportedAlgorithm("AlgorithmIdentifier longer than 255 bytes".into()))?;
    let sig = key.sign(legacy, alg, octets)?;
    let mut data = Vec::with_capacity(1 + alg_id.len() + sig.len());
    data.push(len);
    data.extend_from_slice(&alg_id);
    data.extend_from_slice(&sig);
    Ok((AuthMethod::DIGITAL_SIGNATURE, data))
}

/// Signs the AUTH `octets` (RFC 7296 §2.15) with `key`.
///
/// With a hash the peer announced in `peer_hashes` (its
/// SIGNATURE_HASH_ALGORITHMS; empty if none was sent) this produces an
/// RFC 7427 DIGITAL_SIGNATURE: RSA PKCS#1 v1.5 (or RSA-PSS when the key is
/// configured for it) with SHA-256/384/512 in that preference, ECDSA with the
/// curve's hash, or Ed25519. Otherwise it falls back to ECDSA_SHA256_P256 /
/// ECDSA_SHA384_P384 (raw r||s) and, for RSA keys, RSA_SIG (auth method 1:
/// PKCS#1 v1.5 with SHA-1, made by the [`CryptoProvider`] since aws-lc-rs
/// creates no SHA-1 signatures). Ed25519 needs the peer to announce Identity.
pub fn sign_auth(
    key: &PrivateKey,
    legacy: &dyn CryptoProvider,
    octets: &[u8],
    peer_hashes: &[u16],
) -> Result<(AuthMethod, Vec<u8>), PkiError> {
    match key.key_type() {
        KeyType::Ed25519 => {
            if peer_hashes.contains(&HASH_IDENTITY) {
                digital_signature(key, legacy, SignatureAlgorithm::Ed25519, octets)
            } else {
                Err(PkiError::NoCommonHash(
                    "Ed25519 (peer did not announce the Identity hash)".into(),
                ))
            }
        }
        KeyType::EcdsaP256 => {
            if peer_hashes.contains(&HASH_SHA256) {
                digital_signature(key, legacy, SignatureAlgorithm::Ecdsa(HashAlg::Sha256), octets)
            } else {
                Ok((AuthMethod::ECDSA_SHA256_P256, key.sign_ecdsa_fixed(octets)?))
            }
        }
        KeyType::EcdsaP384 => {
            if peer_hashes.contains(&HASH_SHA384) {
                digital_signature(key, legacy, SignatureAlgorithm::Ecdsa(HashAlg::Sha384), octets)
            } else {
                Ok((AuthMethod::ECDSA_SHA384_P384, key.sign_ecdsa_fixed(octets)?))
            }
        }
        KeyType::Rsa(_) => {
            let hash = [
                (HASH_SHA256, HashAlg::Sha256),
                (HASH_SHA384, HashAlg::Sha384),
                (HASH_SHA512, HashAlg::Sha512),
            ]
            .into_iter()
            .find(|(id, _)| peer_hashes.contains(id));
            match hash {
                Some((_, h)) if key.rsa_pss() => digital_signature(key, legacy, SignatureAlgorithm::RsaPss(h), octets),
                Some((_, h)) => digital_signature(key, legacy, SignatureAlgorithm::RsaPkcs1(h), octets),
                None => Ok((
                    AuthMethod::RSA_SIG,
                    key.sign(legacy, SignatureAlgorithm::RsaPkcs1(HashAlg::Sha1), octets)?,
                )),
            }
        }
    }
}

/// Verifies an AUTH payload made with `cert`'s key over `octets`.
///
/// Handles RSA_SIG (PKCS#1 v1.5 SHA-1), ECDSA_SHA256_P256 and
/// ECDSA_SHA384_P384 (raw r||s, RFC 4754) and DIGITAL_SIGNATURE (RFC 7427:
/// RSA PKCS#1 v1.5 and RSA-PSS with SHA-2, ECDSA with SHA-2, Ed25519). Any
/// malformed input or mismatch is an error; it never panics.
pub fn verify_auth(cert: &Certificate, method: AuthMethod, auth_data: &[u8], octets: &[u8]) -> Result<(), PkiError> {
    let key = cert.public_key()?;
    let wrong_key = || PkiError::UnsupportedAuthMethod {
        method: method.to_string(),
        key: key.kind(),
    };
    match method {
        AuthMethod::RSA_SIG => match key {
            PublicKey::Rsa { .. } => SignatureAlgorithm::RsaPkcs1(HashAlg::Sha1).verify(key, octets, auth_data),
            _ => Err(wrong_key()),
        },
        AuthMethod::ECDSA_SHA256_P256 | AuthMethod::ECDSA_SHA384_P384 => {
            let (alg, point, len): (&'static signature::EcdsaVerificationAlgorithm, _, usize) = match (method, key) {
                (AuthMethod::ECDSA_SHA256_P256, PublicKey::EcP256(p)) => (&signature::ECDSA_P256_SHA256_FIXED, p, 64),
                (AuthMethod::ECDSA_SHA384_P384, PublicKey::EcP384(p)) => (&signature::ECDSA_P384_SHA384_FIXED, p, 96),
                _ => return Err(wrong_key()),
            };
            if auth_data.len() != len {
                return Err(PkiError::BadSignature(format!(
                    "{method} signature must be {len} bytes, got {}",
                    auth_data.len()
                )));
            }
            UnparsedPublicKey::new(alg, point)
                .verify(octets, auth_data)
                .map_err(|_| PkiError::BadSignature(format!("{method} signature does not verify")))
        }
        AuthMethod::DIGITAL_SIGNATURE => {
            let (&len, rest) = auth_data
                .split_first()
                .ok_or_else(|| PkiError::BadSignature("empty DIGITAL_SIGNATURE AUTH data".into()))?;
            let len = usize::from(len);
            if rest.len() <= len {
                return Err(PkiError::BadSignature(
                    "DIGITAL_SIGNATURE AUTH data shorter than its AlgorithmIdentifier".into(),
                ));
            }
            let (alg_id, sig) = rest.split_at(len);
            let alg = SignatureAlgorithm::from_der(alg_id)?;
            if matches!(
                alg,
                SignatureAlgorithm::RsaPkcs1(HashAlg::Sha1) | SignatureAlgorithm::Ecdsa(HashAlg::Sha1)
            ) {
                return Err(PkiError::UnsupportedAlgorithm(
                    "SHA-1 in DIGITAL_SIGNATURE (not announced)".into(),
                ));
            }
            alg.verify(key, octets, sig)
        }
        _ => Err(wrong_key()),
    }
}

/// CERTREQ contents for our trust anchors: the concatenated SHA-1 hashes of
/// their subjectPublicKeys (RFC 7296 §3.7).
pub fn certreq_hashes(store: &TrustStore) -> Vec<u8> {
    store.certificates().iter().flat_map(|c| c.public_key_sha1()).collect()
}

/// Picks the first of `candidates` whose chain (through `intermediates`,
/// matched by issuer name, or by authorityKeyIdentifier) leads to a CA the
/// peer named in its CERTREQ `certreq` (concatenated 20-byte SHA-1 hashes).
/// Returns `None` when nothing matches (the caller may send its default).
pub fn select_by_certreq<'a>(
    certreq: &[u8],
    candidates: &'a [Certificate],
    intermediates: &[Certificate],
) -> Option<&'a Certificate> {
    let wanted: Vec<&[u8]> = certreq.chunks_exact(20).collect();
    if wanted.is_empty() {
        return None;
    }
    candidates.iter().find(|cand| {
        let mut current: &Certificate = cand;
        for _ in 0..=MAX_PATH_DEPTH {
            if current.authority_key_id().is_some_and(|aki| wanted.contains(&aki)) {
                return true;
            }
            let Some(issuer) = intermediates
                .iter()
                .find(|i| i.subject().semantic_eq(current.issuer()) && i.der() != current.der())
            else {
                return false;
            };
            if wanted.contains(&issuer.public_key_sha1().as_slice()) {
                return true;
            }
            current = issuer;
        }
        false
    })
}

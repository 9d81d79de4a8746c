//! Signature algorithms as named by X.509 / RFC 7427 AlgorithmIdentifiers,
//! and verification of signatures with a certificate's public key.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

use super::PkiError;
use super::cert::PublicKey;
use super::der;

pub(crate) const OID_RSA_ENCRYPTION: &[u32] = &[1, 2, 840, 113549, 1, 1, 1];
pub(crate) const OID_RSASSA_PSS: &[u32] = &[1, 2, 840, 113549, 1, 1, 10];
const OID_MGF1: &[u32] = &[1, 2, 840, 113549, 1, 1, 8];
const OID_SHA1_WITH_RSA: &[u32] = &[1, 2, 840, 113549, 1, 1, 5];
const OID_SHA256_WITH_RSA: &[u32] = &[1, 2, 840, 113549, 1, 1, 11];
const OID_SHA384_WITH_RSA: &[u32] = &[1, 2, 840, 113549, 1, 1, 12];
const OID_SHA512_WITH_RSA: &[u32] = &[1, 2, 840, 113549, 1, 1, 13];
const OID_SHA1: &[u32] = &[1, 3, 14, 3, 2, 26];
const OID_SHA256: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
const OID_SHA384: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
const OID_SHA512: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 2, 3];
const OID_ECDSA_SHA256: &[u32] = &[1, 2, 840, 10045, 4, 3, 2];
const OID_ECDSA_SHA384: &[u32] = &[1, 2, 840, 10045, 4, 3, 3];
const OID_ECDSA_SHA512: &[u32] = &[1, 2, 840, 10045, 4, 3, 4];
pub(crate) const OID_ED25519: &[u32] = &[1, 3, 101, 112];
pub(crate) const OID_EC_PUBLIC_KEY: &[u32] = &[1, 2, 840, 10045, 2, 1];
pub(crate) const OID_P256: &[u32] = &[1, 2, 840, 10045, 3, 1, 7];
pub(crate) const OID_P384: &[u32] = &[1, 3, 132, 0, 34];

/// A hash function used in a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-1 (only for the legacy RSA_SIG AUTH method).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    fn oid(self) -> &'static [u32] {
        match self {
            HashAlg::Sha1 => OID_SHA1,
            HashAlg::Sha256 => OID_SHA256,
            HashAlg::Sha384 => OID_SHA384,
            HashAlg::Sha512 => OID_SHA512,
        }
    }

    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    fn from_oid(oid: &[u8]) -> Option<Self> {
        [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512]
            .into_iter()
            .find(|h| der::oid_content(h.oid()) == oid)
    }

    /// `SEQUENCE { hash OID, NULL }`.
    fn algorithm_identifier(self) -> Vec<u8> {
        let mut c = der::tlv(der::TAG_OID, &der::oid_content(self.oid()));
        c.extend(der::tlv(der::TAG_NULL, &[]));
        der::tlv(der::TAG_SEQUENCE, &c)
    }
}

/// `hash` as the digest an ECDSA key on P-256 (`p384` false) or P-384
/// signs with: its length must be that curve's hash length.
pub(crate) fn import_curve_digest(p384: bool, hash: &[u8]) -> Result<aws_lc_rs::digest::Digest, PkiError> {
    let (alg, curve) = if p384 {
        (&aws_lc_rs::digest::SHA384, "P-384")
    } else {
        (&aws_lc_rs::digest::SHA256, "P-256")
    };
    aws_lc_rs::digest::Digest::import_less_safe(hash, alg).map_err(|_| {
        unsupported(format!(
            "ECDSA {curve} over a {}-byte hash (the negotiated hash must be SHA-{})",
            hash.len(),
            if p384 { 384 } else { 256 }
        ))
    })
}

/// Checks a signature of `hash` itself (no hashing, no DigestInfo), as
/// IKEv1 Main Mode signs HASH_I/HASH_R (RFC 2409 §5.1): RSA PKCS#1 v1.5
/// checked by `provider`, ECDSA raw r||s (RFC 4754) over a hash of the
/// curve's length.
pub fn verify_prehashed(
    key: &PublicKey,
    provider: &dyn crate::crypto::CryptoProvider,
    hash: &[u8],
    signature: &[u8],
) -> Result<(), PkiError> {
    let bad = || PkiError::BadSignature(format!("{} signature over the hash does not verify", key.kind()));
    match key {
        PublicKey::Rsa { pkcs1, .. } => {
            match provider
                .verify_rsa_pkcs1_raw(pkcs1, hash, signature)
                .map_err(|e| PkiError::BadSignature(format!("RSA public key: {e}")))?
            {
                true => Ok(()),
                false => Err(bad()),
            }
        }
        PublicKey::EcP256(point) | PublicKey::EcP384(point) => {
            let p384 = matches!(key, PublicKey::EcP384(_));
            let alg = if p384 {
                &signature::ECDSA_P384_SHA384_FIXED
            } else {
                &signature::ECDSA_P256_SHA256_FIXED
            };
            let digest = import_curve_digest(p384, hash)?;
            UnparsedPublicKey::new(alg, point)
                .verify_digest(&digest, signature)
                .map_err(|_| bad())
        }
        PublicKey::Ed25519(_) => Err(unsupported("Ed25519 signatures of an IKEv1 hash")),
    }
}

/// A signature algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// RSASSA-PKCS1-v1_5 with the given hash.
    RsaPkcs1(HashAlg),
    /// RSASSA-PSS with MGF1 of the same hash and salt length = hash length.
    RsaPss(HashAlg),
    /// ECDSA with the given hash, DER-encoded `Ecdsa-Sig-Value`.
    Ecdsa(HashAlg),
    /// Ed25519 (pure).
    Ed25519,
}

fn is_oid(content: &[u8], arcs: &[u32]) -> bool {
    content == der::oid_content(arcs).as_slice()
}

fn unsupported(detail: impl Into<String>) -> PkiError {
    PkiError::UnsupportedAlgorithm(detail.into())
}

impl SignatureAlgorithm {
    /// Parses a DER AlgorithmIdentifier (X.509 signatureAlgorithm or RFC 7427 AUTH data).
    pub fn from_der(alg_id: &[u8]) -> Result<Self, PkiError> {
        let seq = der::expect_only(alg_id, der::TAG_SEQUENCE, "AlgorithmIdentifier")?;
        let (oid, params) = der::expect(seq.content, der::TAG_OID, "algorithm OID")?;
        let oid = oid.content;
        let no_params = params.is_empty() || params == [der::TAG_NULL, 0];
        let simple = [
            (OID_SHA1_WITH_RSA, SignatureAlgorithm::RsaPkcs1(HashAlg::Sha1)),
            (OID_SHA256_WITH_RSA, SignatureAlgorithm::RsaPkcs1(HashAlg::Sha256)),
            (OID_SHA384_WITH_RSA, SignatureAlgorithm::RsaPkcs1(HashAlg::Sha384)),
            (OID_SHA512_WITH_RSA, SignatureAlgorithm::RsaPkcs1(HashAlg::Sha512)),
            (OID_ECDSA_SHA256, SignatureAlgorithm::Ecdsa(HashAlg::Sha256)),
            (OID_ECDSA_SHA384, SignatureAlgorithm::Ecdsa(HashAlg::Sha384)),
            (OID_ECDSA_SHA512, SignatureAlgorithm::Ecdsa(HashAlg::Sha512)),
            (OID_ED25519, SignatureAlgorithm::Ed25519),
        ];
        if let Some((_, alg)) = simple.iter().find(|(arcs, _)| is_oid(oid, arcs)) {
            if !no_params {
                return Err(PkiError::Malformed {
                    what: "AlgorithmIdentifier",
                    detail: "unexpected parameters".into(),
                });
            }
            return Ok(*alg);
        }
        if is_oid(oid, OID_RSASSA_PSS) {
            return parse_pss_params(params);
        }
        Err(unsupported(format!("signature algorithm {}", der::oid_to_string(oid))))
    }

    /// The DER AlgorithmIdentifier, as used in RFC 7427 AUTH data; RSA-PSS
    /// carries explicit parameters (hash, MGF1 with the same hash, salt length).
    pub fn to_der(self) -> Vec<u8> {
        let (oid, params): (&[u32], Option<Vec<u8>>) = match self {
            SignatureAlgorithm::RsaPkcs1(h) => (
                match h {
                    HashAlg::Sha1 => OID_SHA1_WITH_RSA,
                    HashAlg::Sha256 => OID_SHA256_WITH_RSA,
                    HashAlg::Sha384 => OID_SHA384_WITH_RSA,
                    HashAlg::Sha512 => OID_SHA512_WITH_RSA,
                },
                Some(der::tlv(der::TAG_NULL, &[])),
            ),
            SignatureAlgorithm::Ecdsa(h) => (
                match h {
                    HashAlg::Sha1 | HashAlg::Sha256 => OID_ECDSA_SHA256,
                    HashAlg::Sha384 => OID_ECDSA_SHA384,
                    HashAlg::Sha512 => OID_ECDSA_SHA512,
                },
                None,
            ),
            SignatureAlgorithm::Ed25519 => (OID_ED25519, None),
            SignatureAlgorithm::RsaPss(h) => {
                let mut mgf = der::tlv(der::TAG_OID, &der::oid_content(OID_MGF1));
                mgf.extend(h.algorithm_identifier());
                let mut p = der::tlv(0xa0, &h.algorithm_identifier());
                p.extend(der::tlv(0xa1, &der::tlv(der::TAG_SEQUENCE, &mgf)));
                p.extend(der::tlv(0xa2, &der::tlv(der::TAG_INTEGER, &[h.output_len() as u8])));
                (OID_RSASSA_PSS, Some(der::tlv(der::TAG_SEQUENCE, &p)))
            }
        };
        let mut c = der::tlv(der::TAG_OID, &der::oid_content(oid));
        if let Some(p) = params {
            c.extend(p);
        }
        der::tlv(der::TAG_SEQUENCE, &c)
    }

    /// Verifies `sig` over `msg` with `key`. Any mismatch between key and
    /// algorithm, or a bad signature, is an error; never panics.
    pub fn verify(self, key: &PublicKey, msg: &[u8], sig: &[u8]) -> Result<(), PkiError> {
        use HashAlg::*;
        let (alg, key_bytes): (&'static dyn VerificationAlgorithm, &[u8]) = match (self, key) {
            (SignatureAlgorithm::RsaPkcs1(h), PublicKey::Rsa { pkcs1, .. }) => (
                match h {
                    Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                    Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                },
                pkcs1,
            ),
            (SignatureAlgorithm::RsaPss(h), PublicKey::Rsa { pkcs1, .. }) => (
                match h {
                    Sha1 => return Err(unsupported("RSA-PSS with SHA-1")),
                    Sha256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Sha384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Sha512 => &signature::RSA_PSS_2048_8192_SHA512,
                },
                pkcs1,
            ),
            (SignatureAlgorithm::Ecdsa(h), PublicKey::EcP256(point)) => (
                match h {
                    Sha1 => &signature::ECDSA_P256_SHA1_ASN1,
                    Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
                    Sha384 => &signature::ECDSA_P256_SHA384_ASN1,
                    Sha512 => &signature::ECDSA_P256_SHA512_ASN1,
                },
                point,
            ),
            (SignatureAlgorithm::Ecdsa(h), PublicKey::EcP384(point)) => (
                match h {
                    Sha1 => return Err(unsupported("ECDSA P-384 with SHA-1")),
                    Sha256 => &signature::ECDSA_P384_SHA256_ASN1,
                    Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
                    Sha512 => &signature::ECDSA_P384_SHA512_ASN1,
                },
                point,
            ),
            (SignatureAlgorithm::Ed25519, PublicKey::Ed25519(k)) => (&signature::ED25519, k),
            (alg, key) => {
                return Err(PkiError::BadSignature(format!(
                    "{alg:?} signature cannot be made by a {} key",
                    key.kind()
                )));
            }
        };
        UnparsedPublicKey::new(alg, key_bytes)
            .verify(msg, sig)
            .map_err(|_| PkiError::BadSignature(format!("{self:?} signature does not verify")))
    }
}

/// RSASSA-PSS-params (RFC 4055): accepted when the MGF1 hash equals the
/// message hash, the salt length equals the hash length and trailerField is 1.
fn parse_pss_params(params: &[u8]) -> Result<SignatureAlgorithm, PkiError> {
    let bad = |d: &str| PkiError::Malformed {
        what: "RSASSA-PSS parameters",
        detail: d.to_string(),
    };
    let seq = der::expect_only(params, der::TAG_SEQUENCE, "RSASSA-PSS parameters")?;
    let mut hash = HashAlg::Sha1;
    let mut mgf_hash = HashAlg::Sha1;
    let mut salt_len: u32 = 20;
    let mut rest = seq.content;
    let mut last_tag = 0u8;
    while !rest.is_empty() {
        let (field, tail) = der::read_tlv(rest, "RSASSA-PSS parameter")?;
        rest = tail;
        if field.tag <= last_tag {
            return Err(bad("fields out of order"));
        }
        last_tag = field.tag;
        match field.tag {
            0xa0 => hash = parse_hash_alg_id(field.content)?,
            0xa1 => {
                let mgf = der::expect_only(field.content, der::TAG_SEQUENCE, "maskGenAlgorithm")?;
                let (oid, mgf_params) = der::expect(mgf.content, der::TAG_OID, "maskGenAlgorithm OID")?;
                if !is_oid(oid.content, OID_MGF1) {
                    return Err(unsupported(format!(
                        "mask generation function {}",
                        der::oid_to_string(oid.content)
                    )));
                }
                mgf_hash = parse_hash_alg_id(mgf_params)?;
            }
            0xa2 => {
                let (int, trailing) = der::read_tlv(field.content, "saltLength")?;
                if !trailing.is_empty() {
                    return Err(bad("trailing data after saltLength"));
                }
                salt_len = der::read_small_uint(&int, "saltLength")?;
            }
            0xa3 => {
                let (int, trailing) = der::read_tlv(field.content, "trailerField")?;
                if !trailing.is_empty() || der::read_small_uint(&int, "trailerField")? != 1 {
                    return Err(bad("trailerField must be 1"));
                }
            }
            _ => return Err(bad("unknown field")),
        }
    }
    if hash == HashAlg::Sha1 {
        return Err(unsupported("RSA-PSS with SHA-1"));
    }
    if mgf_hash != hash {
        return Err(unsupported(format!(
            "RSA-PSS with MGF1 hash {mgf_hash:?} differing from {hash:?}"
        )));
    }
    if salt_len as usize != hash.output_len() {
        return Err(unsupported(format!(
            "RSA-PSS salt length {salt_len} (only the hash length is supported)"
        )));
    }
    Ok(SignatureAlgorithm::RsaPss(hash))
}

fn parse_hash_alg_id(data: &[u8]) -> Result<HashAlg, PkiError> {
    let seq = der::expect_only(data, der::TAG_SEQUENCE, "hash AlgorithmIdentifier")?;
    let (oid, params) = der::expect(seq.content, der::TAG_OID, "hash OID")?;
    if !(params.is_empty() || params == [der::TAG_NULL, 0]) {
        return Err(PkiError::Malformed {
            what: "hash AlgorithmIdentifier",
            detail: "unexpected parameters".into(),
        });
    }
    HashAlg::from_oid(oid.content).ok_or_else(|| unsupported(format!("hash {}", der::oid_to_string(oid.content))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_identifiers_round_trip() {
        for alg in [
            SignatureAlgorithm::RsaPkcs1(HashAlg::Sha256),
            SignatureAlgorithm::RsaPkcs1(HashAlg::Sha512),
            SignatureAlgorithm::RsaPss(HashAlg::Sha256),
            SignatureAlgorithm::RsaPss(HashAlg::Sha384),
            SignatureAlgorithm::Ecdsa(HashAlg::Sha384),
            SignatureAlgorithm::Ed25519,
        ] {
            assert_eq!(SignatureAlgorithm::from_der(&alg.to_der()).unwrap(), alg);
        }
    }

    #[test]
    fn rfc7427_appendix_a_encodings() {
        // RFC 7427 A.1.3 sha256WithRSAEncryption, A.3.1 ecdsa-with-sha256, Ed25519 (RFC 8420).
        assert_eq!(
            der::hex(&SignatureAlgorithm::RsaPkcs1(HashAlg::Sha256).to_der()),
            "300d06092a864886f70d01010b0500"
        );
        assert_eq!(
            der::hex(&SignatureAlgorithm::Ecdsa(HashAlg::Sha256).to_der()),
            "300a06082a8648ce3d040302"
        );
        assert_eq!(der::hex(&SignatureAlgorithm::Ed25519.to_der()), "300506032b6570");
        // RSA-PSS SHA-256, salt 32 (the RFC 7427 A.4.3 example uses the same layout).
        assert_eq!(
            der::hex(&SignatureAlgorithm::RsaPss(HashAlg::Sha256).to_der()),
            "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120"
        );
    }

    #[test]
    fn rejects_odd_pss_parameters() {
        // Default (SHA-1) parameters: empty SEQUENCE.
        let mut c = der::tlv(der::TAG_OID, &der::oid_content(OID_RSASSA_PSS));
        c.extend(der::tlv(der::TAG_SEQUENCE, &[]));
        assert!(SignatureAlgorithm::from_der(&der::tlv(der::TAG_SEQUENCE, &c)).is_err());
        assert!(SignatureAlgorithm::from_der(&[0x30, 0x03, 0x06, 0x01, 0x00]).is_err());
        assert!(SignatureAlgorithm::from_der(&[]).is_err());
    }
}

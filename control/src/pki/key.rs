//! Private keys for AUTH signatures: RSA, ECDSA (P-256, P-384) and Ed25519,
//! loaded from PEM or DER in PKCS#8, PKCS#1 (`RSA PRIVATE KEY`) or SEC1
//! (`EC PRIVATE KEY`) form, as strongSwan's `pki --gen` and openssl write them.
//!
//! Decoded key bytes live in `Zeroizing` buffers; the key objects are
//! aws-lc-rs key pairs, whose memory aws-lc cleanses when they are freed.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use super::PkiError;
use super::cert::{Certificate, PublicKey};
use super::der;
use super::sigalg::{self, HashAlg, SignatureAlgorithm};
use crate::crypto::CryptoProvider;

/// The kind of a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA with the given modulus size in bits.
    Rsa(usize),
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa(bits) => write!(f, "RSA-{bits}"),
            KeyType::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyType::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyType::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

enum KeyPairs {
    Rsa(RsaKeyPair),
    Ecdsa {
        p384: bool,
        /// Signs with DER `Ecdsa-Sig-Value` (RFC 7427).
        asn1: EcdsaKeyPair,
        /// Signs with raw r||s (RFC 4754).
        fixed: EcdsaKeyPair,
    },
    Ed25519(Ed25519KeyPair),
}

/// A private signing key.
pub struct PrivateKey {
    pairs: KeyPairs,
    rsa_pss: bool,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, rsa_pss: {})", self.key_type(), self.rsa_pss)
    }
}

fn rejected(what: &str, e: impl fmt::Display) -> PkiError {
    PkiError::KeyRejected(format!("{what}: {e}"))
}

impl PrivateKey {
    /// Loads a key from PEM (first private-key block) or DER.
    pub fn load(data: &[u8]) -> Result<Self, PkiError> {
        if der::looks_like_pem(data) {
            Self::from_pem(data)
        } else {
            Self::from_der(data)
        }
    }

    /// Loads the first `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` PEM block.
    pub fn from_pem(data: &[u8]) -> Result<Self, PkiError> {
        for block in der::parse_pem(data)? {
            match block.label.as_str() {
                "PRIVATE KEY" => return Self::from_pkcs8(&block.der),
                "RSA PRIVATE KEY" => return Self::from_pkcs1(&block.der),
                "EC PRIVATE KEY" => return Self::from_sec1(&block.der),
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(PkiError::KeyRejected("encrypted private keys are not supported".into()));
                }
                _ => {}
            }
        }
        Err(PkiError::Pem("no private key block found".into()))
    }

    /// Loads a DER key, detecting PKCS#8, PKCS#1 or SEC1 from its structure.
    pub fn from_der(data: &[u8]) -> Result<Self, PkiError> {
        let seq = der::expect_only(data, der::TAG_SEQUENCE, "private key")?;
        let (_version, rest) = der::expect(seq.content, der::TAG_INTEGER, "private key version")?;
        let (next, _) = der::read_tlv(rest, "private key")?;
        match next.tag {
            der::TAG_SEQUENCE => Self::from_pkcs8(data),
            der::TAG_INTEGER => Self::from_pkcs1(data),
            der::TAG_OCTET_STRING => Self::from_sec1(data),
            t => Err(PkiError::Malformed {
                what: "private key",
                detail: format!("unrecognised structure (tag 0x{t:02x})"),
            }),
        }
    }

    /// Loads a PKCS#8 `PrivateKeyInfo` (RSA, EC or Ed25519).
    pub fn from_pkcs8(data: &[u8]) -> Result<Self, PkiError> {
        let seq = der::expect_only(data, der::TAG_SEQUENCE, "PKCS#8 PrivateKeyInfo")?;
        let (_version, rest) = der::expect(seq.content, der::TAG_INTEGER, "PKCS#8 version")?;
        let (alg, _) = der::expect(rest, der::TAG_SEQUENCE, "PKCS#8 algorithm")?;
        let (oid, params) = der::expect(alg.content, der::TAG_OID, "PKCS#8 algorithm OID")?;
        let is = |arcs: &[u32]| oid.content == der::oid_content(arcs).as_slice();
        let pairs = if is(sigalg::OID_RSA_ENCRYPTION) {
            KeyPairs::Rsa(RsaKeyPair::from_pkcs8(data).map_err(|e| rejected("RSA PKCS#8", e))?)
        } else if is(sigalg::OID_EC_PUBLIC_KEY) {
            let curve = der::expect_only(params, der::TAG_OID, "EC curve")?;
            Self::ecdsa(data, curve_is_p384(curve.content)?)?
        } else if is(sigalg::OID_ED25519) {
            KeyPairs::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(data).map_err(|e| rejected("Ed25519 PKCS#8", e))?,
            )
        } else {
            return Err(PkiError::UnsupportedAlgorithm(format!(
                "private key algorithm {}",
                der::oid_to_string(oid.content)
            )));
        };
        Ok(Self { pairs, rsa_pss: false })
    }

    /// Loads a PKCS#1 `RSAPrivateKey`.
    pub fn from_pkcs1(data: &[u8]) -> Result<Self, PkiError> {
        let pair = RsaKeyPair::from_der(data).map_err(|e| rejected("RSA private key", e))?;
        Ok(Self {
            pairs: KeyPairs::Rsa(pair),
            rsa_pss: false,
        })
    }

    /// Loads a SEC1 `ECPrivateKey` (curve P-256 or P-384, named in the key).
    pub fn from_sec1(data: &[u8]) -> Result<Self, PkiError> {
        // ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING, [0] parameters, [1] publicKey }
        let seq = der::expect_only(data, der::TAG_SEQUENCE, "EC private key")?;
        let (_, rest) = der::expect(seq.content, der::TAG_INTEGER, "EC private key version")?;
        let (secret, mut rest) = der::expect(rest, der::TAG_OCTET_STRING, "EC private key")?;
        let mut p384 = None;
        while !rest.is_empty() {
            let (field, tail) = der::read_tlv(rest, "EC private key field")?;
            rest = tail;
            if field.tag == 0xa0 {
                let curve = der::expect_only(field.content, der::TAG_OID, "EC curve")?;
                p384 = Some(curve_is_p384(curve.content)?);
            }
        }
        let p384 = match p384 {
            Some(p) => p,
            None => match secret.content.len() {
                32 => false,
                48 => true,
                n => {
                    return Err(PkiError::KeyRejected(format!(
                        "EC private key of {n} bytes without curve"
                    )));
                }
            },
        };
        Ok(Self {
            pairs: Self::ecdsa(data, p384)?,
            rsa_pss: false,
        })
    }

    fn ecdsa(data: &[u8], p384: bool) -> Result<KeyPairs, PkiError> {
        let (asn1_alg, fixed_alg) = if p384 {
            (
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            )
        } else {
            (
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            )
        };
        let asn1 = EcdsaKeyPair::from_private_key_der(asn1_alg, data).map_err(|e| rejected("EC private key", e))?;
        let fixed = EcdsaKeyPair::from_private_key_der(fixed_alg, data).map_err(|e| rejected("EC private key", e))?;
        Ok(KeyPairs::Ecdsa { p384, asn1, fixed })
    }

    /// Makes RSA keys sign RFC 7427 AUTH payloads with RSA-PSS instead of PKCS#1 v1.5.
    pub fn with_rsa_pss(mut self, rsa_pss: bool) -> Self {
        self.rsa_pss = rsa_pss;
        self
    }

    /// Whether RSA-PSS is configured.
    pub fn rsa_pss(&self) -> bool {
        self.rsa_pss
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        match &self.pairs {
            KeyPairs::Rsa(k) => KeyType::Rsa(k.public_modulus_len() * 8),
            KeyPairs::Ecdsa { p384: false, .. } => KeyType::EcdsaP256,
            KeyPairs::Ecdsa { p384: true, .. } => KeyType::EcdsaP384,
            KeyPairs::Ed25519(_) => KeyType::Ed25519,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match &self.pairs {
            KeyPairs::Rsa(k) => PublicKey::Rsa {
                pkcs1: k.public_key().as_ref().to_vec(),
                bits: k.public_modulus_len() * 8,
            },
            KeyPairs::Ecdsa { p384: false, asn1, .. } => PublicKey::EcP256(asn1.public_key().as_ref().to_vec()),
            KeyPairs::Ecdsa { p384: true, asn1, .. } => PublicKey::EcP384(asn1.public_key().as_ref().to_vec()),
            KeyPairs::Ed25519(k) => PublicKey::Ed25519(k.public_key().as_ref().to_vec()),
        }
    }

    /// Whether `cert` certifies this key's public key.
    pub fn matches_certificate(&self, cert: &Certificate) -> bool {
        cert.public_key().is_ok_and(|k| *k == self.public_key())
    }

    /// Signs `msg` with `alg` (which must suit the key). ECDSA hashes follow
    /// the curve: SHA-256 on P-256, SHA-384 on P-384. RSA with SHA-1 (IKEv2
    /// auth method 1), which aws-lc-rs does not create, comes from `legacy`.
    /// ECDSA nonces and PSS salts come from aws-lc's own generator (aws-lc-rs
    /// takes a generator argument and ignores it), so those signatures are
    /// not reproducible under a seeded provider.
    pub fn sign(&self, legacy: &dyn CryptoProvider, alg: SignatureAlgorithm, msg: &[u8]) -> Result<Vec<u8>, PkiError> {
        let fail = |e: aws_lc_rs::error::Unspecified| PkiError::Signing(format!("{alg:?}: {e}"));
        match (&self.pairs, alg) {
            (KeyPairs::Rsa(k), SignatureAlgorithm::RsaPkcs1(h) | SignatureAlgorithm::RsaPss(h)) => {
                let pss = matches!(alg, SignatureAlgorithm::RsaPss(_));
                let encoding: &'static dyn signature::RsaEncoding = match (h, pss) {
                    (HashAlg::Sha256, false) => &signature::RSA_PKCS1_SHA256,
                    (HashAlg::Sha384, false) => &signature::RSA_PKCS1_SHA384,
                    (HashAlg::Sha512, false) => &signature::RSA_PKCS1_SHA512,
                    (HashAlg::Sha256, true) => &signature::RSA_PSS_SHA256,
                    (HashAlg::Sha384, true) => &signature::RSA_PSS_SHA384,
                    (HashAlg::Sha512, true) => &signature::RSA_PSS_SHA512,
                    (HashAlg::Sha1, false) => {
                        // IKEv2 auth method 1 (RSA_SIG) for peers without RFC 7427.
                        use aws_lc_rs::encoding::AsDer;
                        let der = k.as_der().map_err(fail)?;
                        return legacy
                            .sign_rsa_pkcs1_sha1(der.as_ref(), msg)
                            .map_err(|e| PkiError::Signing(format!("{alg:?}: {e}")));
                    }
                    (HashAlg::Sha1, true) => {
                        return Err(PkiError::UnsupportedAlgorithm(
                            "RSA-PSS with SHA-1 is not offered".into(),
                        ));
                    }
                };
                let mut sig = Zeroizing::new(vec![0u8; k.public_modulus_len()]);
                k.sign(encoding, &SystemRandom::new(), msg, &mut sig).map_err(fail)?;
                Ok(sig.to_vec())
            }
            (KeyPairs::Ecdsa { p384, asn1, .. }, SignatureAlgorithm::Ecdsa(h))
                if h == if *p384 { HashAlg::Sha384 } else { HashAlg::Sha256 } =>
            {
                Ok(asn1.sign(&SystemRandom::new(), msg).map_err(fail)?.as_ref().to_vec())
            }
            (KeyPairs::Ed25519(k), SignatureAlgorithm::Ed25519) => Ok(k.sign(msg).as_ref().to_vec()),
            _ => Err(PkiError::UnsupportedAlgorithm(format!(
                "{alg:?} with a {} key",
                self.key_type()
            ))),
        }
    }

    /// Signs `hash`, already the digest to sign, as IKEv1 Main Mode does
    /// with HASH_I/HASH_R (RFC 2409 §5.1): RSA with PKCS#1 v1.5 padding and
    /// no DigestInfo (made by `provider`, which aws-lc-rs does not offer),
    /// ECDSA as raw r||s over the hash (RFC 4754), whose length must be the
    /// curve's hash length (32 bytes on P-256, 48 on P-384).
    pub fn sign_prehashed(&self, provider: &dyn CryptoProvider, hash: &[u8]) -> Result<Vec<u8>, PkiError> {
        match &self.pairs {
            KeyPairs::Rsa(k) => {
                use aws_lc_rs::encoding::AsDer;
                let der = k
                    .as_der()
                    .map_err(|e| PkiError::Signing(format!("RSA key encoding: {e}")))?;
                provider
                    .sign_rsa_pkcs1_raw(der.as_ref(), hash)
                    .map_err(|e| PkiError::Signing(format!("RSA PKCS#1 without DigestInfo: {e}")))
            }
            KeyPairs::Ecdsa { p384, fixed, .. } => {
                let digest = sigalg::import_curve_digest(*p384, hash)?;
                Ok(fixed
                    .sign_digest(&digest)
                    .map_err(|e| PkiError::Signing(format!("ECDSA over a hash: {e}")))?
                    .as_ref()
                    .to_vec())
            }
            KeyPairs::Ed25519(_) => Err(PkiError::UnsupportedAlgorithm(
                "Ed25519 cannot sign an IKEv1 hash".into(),
            )),
        }
    }

    /// Signs `msg` with ECDSA producing raw r||s (RFC 4754); ECDSA keys only.
    pub(crate) fn sign_ecdsa_fixed(&self, msg: &[u8]) -> Result<Vec<u8>, PkiError> {
        match &self.pairs {
            KeyPairs::Ecdsa { fixed, .. } => Ok(fixed
                .sign(&SystemRandom::new(), msg)
                .map_err(|e| PkiError::Signing(format!("ECDSA: {e}")))?
                .as_ref()
                .to_vec()),
            _ => Err(PkiError::UnsupportedAlgorithm(format!(
                "raw ECDSA with a {} key",
                self.key_type()
            ))),
        }
    }
}

fn curve_is_p384(oid: &[u8]) -> Result<bool, PkiError> {
    if oid == der::oid_content(sigalg::OID_P256).as_slice() {
        Ok(false)
    } else if oid == der::oid_content(sigalg::OID_P384).as_slice() {
        Ok(true)
    } else {
        Err(PkiError::UnsupportedAlgorithm(format!(
            "EC curve {}",
            der::oid_to_string(oid)
        )))
    }
}

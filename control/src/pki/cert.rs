//! X.509 certificates: parsing (DER or PEM) and the fields IKEv2 needs.

use std::net::IpAddr;

use aws_lc_rs::digest;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::PkiError;
use super::der;
use super::dn::DistinguishedName;
use super::identity::Identity;
use super::sigalg::{self, SignatureAlgorithm};
use crate::wire::ikev2::types::Identification;

/// A subject public key usable for signature verification.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// RSA: the PKCS#1 `RSAPublicKey` DER and the modulus size.
    Rsa {
        /// `RSAPublicKey` DER (the subjectPublicKey BIT STRING contents).
        pkcs1: Vec<u8>,
        /// Modulus length in bits.
        bits: usize,
    },
    /// ECDSA on P-256: the uncompressed point.
    EcP256(Vec<u8>),
    /// ECDSA on P-384: the uncompressed point.
    EcP384(Vec<u8>),
    /// Ed25519: the 32-byte public key.
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki(spki: &[u8]) -> Result<Self, PkiError> {
        let seq = der::expect_only(spki, der::TAG_SEQUENCE, "SubjectPublicKeyInfo")?;
        let (alg, rest) = der::expect(seq.content, der::TAG_SEQUENCE, "SubjectPublicKeyInfo algorithm")?;
        let bits = der::expect_only(rest, der::TAG_BIT_STRING, "subjectPublicKey")?;
        let key = match bits.content.split_first() {
            Some((0, key)) => key,
            _ => {
                return Err(PkiError::Malformed {
                    what: "subjectPublicKey",
                    detail: "bad BIT STRING".into(),
                });
            }
        };
        let (oid, params) = der::expect(alg.content, der::TAG_OID, "public key algorithm")?;
        let is = |arcs: &[u32]| oid.content == der::oid_content(arcs).as_slice();
        if is(sigalg::OID_RSA_ENCRYPTION) || is(sigalg::OID_RSASSA_PSS) {
            let rsa = der::expect_only(key, der::TAG_SEQUENCE, "RSAPublicKey")?;
            let (n, _) = der::expect(rsa.content, der::TAG_INTEGER, "RSA modulus")?;
            let n = n.content.iter().skip_while(|&&b| b == 0).count();
            return Ok(PublicKey::Rsa {
                pkcs1: key.to_vec(),
                bits: n * 8,
            });
        }
        if is(sigalg::OID_ED25519) {
            if key.len() != 32 || !params.is_empty() {
                return Err(PkiError::Malformed {
                    what: "Ed25519 public key",
                    detail: "expected 32 bytes".into(),
                });
            }
            return Ok(PublicKey::Ed25519(key.to_vec()));
        }
        if is(sigalg::OID_EC_PUBLIC_KEY) {
            let curve = der::expect_only(params, der::TAG_OID, "EC curve")?;
            let (expected_len, make): (usize, fn(Vec<u8>) -> PublicKey) =
                if curve.content == der::oid_content(sigalg::OID_P256).as_slice() {
                    (65, PublicKey::EcP256)
                } else if curve.content == der::oid_content(sigalg::OID_P384).as_slice() {
                    (97, PublicKey::EcP384)
                } else {
                    return Err(PkiError::UnsupportedAlgorithm(format!(
                        "EC curve {}",
                        der::oid_to_string(curve.content)
                    )));
                };
            if key.len() != expected_len || key[0] != 0x04 {
                return Err(PkiError::Malformed {
                    what: "EC public key",
                    detail: "expected an uncompressed point".into(),
                });
            }
            return Ok(make(key.to_vec()));
        }
        Err(PkiError::UnsupportedAlgorithm(format!(
            "public key algorithm {}",
            der::oid_to_string(oid.content)
        )))
    }

    /// The raw key bytes (the subjectPublicKey BIT STRING contents).
    pub fn raw(&self) -> &[u8] {
        match self {
            PublicKey::Rsa { pkcs1, .. } => pkcs1,
            PublicKey::EcP256(k) | PublicKey::EcP384(k) | PublicKey::Ed25519(k) => k,
        }
    }

    /// A short description such as `RSA-2048` or `ECDSA P-256`.
    pub fn kind(&self) -> String {
        match self {
            PublicKey::Rsa { bits, .. } => format!("RSA-{bits}"),
            PublicKey::EcP256(_) => "ECDSA P-256".into(),
            PublicKey::EcP384(_) => "ECDSA P-384".into(),
            PublicKey::Ed25519(_) => "Ed25519".into(),
        }
    }
}

/// A subjectAltName entry IKE identities can match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    /// dNSName.
    Dns(String),
    /// rfc822Name.
    Email(String),
    /// iPAddress.
    Ip(IpAddr),
}

/// Extensions we process or that are harmless to ignore when critical.
const KNOWN_EXTENSIONS: &[&[u32]] = &[
    &[2, 5, 29, 14], // subjectKeyIdentifier
    &[2, 5, 29, 15], // keyUsage
    &[2, 5, 29, 17], // subjectAltName
    &[2, 5, 29, 19], // basicConstraints
    &[2, 5, 29, 35], // authorityKeyIdentifier
    &[2, 5, 29, 37], // extendedKeyUsage
    &[2, 5, 29, 31], // cRLDistributionPoints
    &[2, 5, 29, 32], // certificatePolicies
];
const OID_AUTHORITY_KEY_ID: &[u32] = &[2, 5, 29, 35];

/// A parsed X.509 certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    tbs_range: (usize, usize),
    signature_algorithm: Result<SignatureAlgorithm, PkiError>,
    signature: Vec<u8>,
    subject: DistinguishedName,
    issuer: DistinguishedName,
    sans: Vec<SubjectAltName>,
    not_before: i64,
    not_after: i64,
    ca: bool,
    path_len: Option<u32>,
    key_usage: Option<u16>,
    spki: Vec<u8>,
    public_key: Result<PublicKey, PkiError>,
    authority_key_id: Option<Vec<u8>>,
    unhandled_critical: Vec<String>,
}

fn x509_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Malformed {
        what: "X.509 certificate",
        detail: e.to_string(),
    }
}

impl Certificate {
    /// Parses one DER certificate (no trailing data allowed).
    pub fn from_der(data: &[u8]) -> Result<Self, PkiError> {
        // Outer structure by hand: we need the exact TBS and signature bytes.
        let outer = der::expect_only(data, der::TAG_SEQUENCE, "X.509 certificate")?;
        let (tbs, rest) = der::expect(outer.content, der::TAG_SEQUENCE, "TBSCertificate")?;
        let (sig_alg, rest) = der::expect(rest, der::TAG_SEQUENCE, "signatureAlgorithm")?;
        let sig = der::expect_only(rest, der::TAG_BIT_STRING, "signatureValue")?;
        let signature = match sig.content.split_first() {
            Some((0, s)) => s.to_vec(),
            _ => {
                return Err(PkiError::Malformed {
                    what: "signatureValue",
                    detail: "bad BIT STRING".into(),
                });
            }
        };
        // The TBS is the first element of the outer content, which ends the input.
        let tbs_start = data.len() - outer.content.len();

        let (trailing, x509) = X509Certificate::from_der(data).map_err(x509_err)?;
        if !trailing.is_empty() {
            return Err(x509_err("trailing data"));
        }
        let subject = DistinguishedName::from_der(x509.subject().as_raw())?;
        let issuer = DistinguishedName::from_der(x509.issuer().as_raw())?;
        let validity = x509.validity();
        let (ca, path_len) = match x509.basic_constraints().map_err(x509_err)? {
            Some(bc) => (bc.value.ca, bc.value.path_len_constraint),
            None => (false, None),
        };
        let key_usage = x509.key_usage().map_err(x509_err)?.map(|ku| ku.value.flags);
        let mut sans = Vec::new();
        if let Some(san) = x509.subject_alternative_name().map_err(x509_err)? {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(s) => sans.push(SubjectAltName::Dns((*s).to_string())),
                    GeneralName::RFC822Name(s) => sans.push(SubjectAltName::Email((*s).to_string())),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            sans.push(SubjectAltName::Ip(IpAddr::from(a)));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            sans.push(SubjectAltName::Ip(IpAddr::from(a)));
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut unhandled_critical = Vec::new();
        let mut authority_key_id = None;
        for ext in x509.extensions() {
            let oid = ext.oid.as_bytes();
            if oid == der::oid_content(OID_AUTHORITY_KEY_ID).as_slice() {
                if let x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) = ext.parsed_extension() {
                    authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
            }
            if ext.critical && !KNOWN_EXTENSIONS.iter().any(|k| der::oid_content(k).as_slice() == oid) {
                unhandled_critical.push(der::oid_to_string(oid));
            }
        }
        let spki = x509.public_key().raw.to_vec();
        Ok(Self {
            der: data.to_vec(),
            tbs_range: (tbs_start, tbs_start + tbs.raw.len()),
            signature_algorithm: SignatureAlgorithm::from_der(sig_alg.raw),
            signature,
            subject,
            issuer,
            sans,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            ca,
            path_len,
            key_usage,
            public_key: PublicKey::from_spki(&spki),
            spki,
            authority_key_id,
            unhandled_critical,
        })
    }

    /// Parses every `CERTIFICATE` block of a PEM file (at least one required).
    pub fn from_pem(data: &[u8]) -> Result<Vec<Self>, PkiError> {
        let certs = der::parse_pem(data)?
            .into_iter()
            .filter(|b| b.label == "CERTIFICATE" || b.label == "X509 CERTIFICATE")
            .map(|b| Certificate::from_der(&b.der))
            .collect::<Result<Vec<_>, _>>()?;
        if certs.is_empty() {
            return Err(PkiError::Pem("no CERTIFICATE block found".into()));
        }
        Ok(certs)
    }

    /// Parses a file that holds either PEM (one or more certificates) or one DER certificate.
    pub fn load(data: &[u8]) -> Result<Vec<Self>, PkiError> {
        if der::looks_like_pem(data) {
            Certificate::from_pem(data)
        } else {
            Ok(vec![Certificate::from_der(data)?])
        }
    }

    /// The DER encoding (for CERT payloads).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The signed TBSCertificate bytes.
    pub fn tbs_der(&self) -> &[u8] {
        &self.der[self.tbs_range.0..self.tbs_range.1]
    }

    /// Subject DN.
    pub fn subject(&self) -> &DistinguishedName {
        &self.subject
    }

    /// Issuer DN.
    pub fn issuer(&self) -> &DistinguishedName {
        &self.issuer
    }

    /// dNSName, rfc822Name and iPAddress subjectAltNames.
    pub fn subject_alt_names(&self) -> &[SubjectAltName] {
        &self.sans
    }

    /// Start of validity (Unix seconds).
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// End of validity (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// basicConstraints cA flag.
    pub fn is_ca(&self) -> bool {
        self.ca
    }

    /// basicConstraints pathLenConstraint.
    pub fn path_len(&self) -> Option<u32> {
        self.path_len
    }

    /// keyUsage bits if present: bit n is RFC 5280 KeyUsage bit n
    /// (0 = digitalSignature, 5 = keyCertSign, 6 = cRLSign).
    pub fn key_usage(&self) -> Option<u16> {
        self.key_usage
    }

    /// Whether keyUsage is absent or includes keyCertSign.
    pub fn may_sign_certificates(&self) -> bool {
        self.key_usage.is_none_or(|ku| ku & (1 << 5) != 0)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The subject public key, or why it is unsupported.
    pub fn public_key(&self) -> Result<&PublicKey, PkiError> {
        self.public_key.as_ref().map_err(Clone::clone)
    }

    /// The certificate's signature algorithm, or why it is unsupported.
    pub fn signature_algorithm(&self) -> Result<SignatureAlgorithm, PkiError> {
        self.signature_algorithm.clone()
    }

    /// SHA-1 of the subjectPublicKey BIT STRING contents, as used in CERTREQ
    /// payloads (RFC 7296 §3.7) and by strongSwan as subjectKeyIdentifier.
    pub fn public_key_sha1(&self) -> [u8; 20] {
        let raw: &[u8] = match &self.public_key {
            Ok(k) => k.raw(),
            // Unsupported key types still get a hash of their BIT STRING contents.
            Err(_) => spki_key_bits(&self.spki).unwrap_or(&[]),
        };
        let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, raw);
        let mut out = [0u8; 20];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// authorityKeyIdentifier keyIdentifier, if present.
    pub fn authority_key_id(&self) -> Option<&[u8]> {
        self.authority_key_id.as_deref()
    }

    /// Critical extensions this implementation does not understand (dotted OIDs).
    pub fn unhandled_critical_extensions(&self) -> &[String] {
        &self.unhandled_critical
    }

    /// Checks that `now_unix` lies within the validity period.
    pub fn check_validity(&self, now_unix: u64) -> Result<(), PkiError> {
        let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
        if now < self.not_before {
            return Err(PkiError::NotYetValid {
                subject: self.subject.to_string(),
                not_before: der::format_unix_time(self.not_before),
            });
        }
        if now > self.not_after {
            return Err(PkiError::Expired {
                subject: self.subject.to_string(),
                not_after: der::format_unix_time(self.not_after),
            });
        }
        Ok(())
    }

    /// Verifies this certificate's signature with `issuer`'s public key.
    pub fn verify_signed_by(&self, issuer: &Certificate) -> Result<(), PkiError> {
        let alg = self.signature_algorithm()?;
        let key = issuer.public_key()?;
        alg.verify(key, self.tbs_der(), &self.signature)
            .map_err(|_| PkiError::BadCertificateSignature {
                subject: self.subject.to_string(),
                issuer: issuer.subject.to_string(),
            })
    }

    /// Whether the certificate is bound to `id`, as strongSwan requires: a
    /// DN must equal the subject; FQDN, RFC822 and IP IDs must equal a
    /// subjectAltName (names case-insensitively); a KEY_ID must equal the
    /// SHA-1 of the public key.
    pub fn matches_identity(&self, id: &Identification) -> bool {
        let Ok(identity) = Identity::from_wire(id) else {
            return false;
        };
        match identity {
            Identity::Dn(dn) => dn.semantic_eq(&self.subject),
            Identity::Fqdn(name) => self
                .sans
                .iter()
                .any(|s| matches!(s, SubjectAltName::Dns(d) if d.eq_ignore_ascii_case(&name))),
            Identity::Email(name) => self
                .sans
                .iter()
                .any(|s| matches!(s, SubjectAltName::Email(e) if e.eq_ignore_ascii_case(&name))),
            Identity::Ipv4(a) => self.sans.contains(&SubjectAltName::Ip(IpAddr::V4(a))),
            Identity::Ipv6(a) => self.sans.contains(&SubjectAltName::Ip(IpAddr::V6(a))),
            Identity::KeyId(k) => k == self.public_key_sha1(),
            Identity::Any | Identity::Other { .. } => false,
        }
    }
}

fn spki_key_bits(spki: &[u8]) -> Option<&[u8]> {
    let seq = der::expect_only(spki, der::TAG_SEQUENCE, "SubjectPublicKeyInfo").ok()?;
    let (_, rest) = der::expect(seq.content, der::TAG_SEQUENCE, "algorithm").ok()?;
    let bits = der::expect_only(rest, der::TAG_BIT_STRING, "subjectPublicKey").ok()?;
    bits.content.get(1..)
}

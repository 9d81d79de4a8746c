//! Certificates, identities and signature authentication for IKEv2.
//!
//! - [`Identity`]: configured identities parsed the way strongSwan does, with
//!   wire conversion and matching (wildcards, semantic DN comparison).
//! - [`Certificate`]: X.509 parsing (DER/PEM) and the fields IKE needs.
//! - [`TrustStore`] and [`verify_chain`]: path validation to a trusted CA.
//! - [`PrivateKey`]: RSA, ECDSA and Ed25519 keys from PEM/DER.
//! - [`sign_auth`] / [`verify_auth`]: AUTH payload signatures (RFC 7296
//!   §2.15, RFC 7427, RFC 4754), CERTREQ hashes (RFC 7296 §3.7).
//!
//! All signature math is aws-lc-rs; X.509 structure parsing is `x509-parser`.

mod auth;
mod cert;
mod chain;
pub mod der;
mod dn;
mod identity;
mod key;
mod sigalg;

pub use auth::{
    HASH_IDENTITY, HASH_SHA1, HASH_SHA256, HASH_SHA384, HASH_SHA512, certreq_hashes, select_by_certreq, sign_auth,
    supported_hash_algorithms, verify_auth,
};
pub use cert::{Certificate, PublicKey, SubjectAltName};
pub use chain::{MAX_PATH_DEPTH, TrustStore, trusted_peer_certificate, verify_chain};
pub use dn::DistinguishedName;
pub use identity::Identity;
pub use key::{KeyType, PrivateKey};
pub use sigalg::{HashAlg, SignatureAlgorithm, verify_prehashed};

/// Why a PKI operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// DER structure could not be decoded.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// The structure being decoded.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// PEM armour could not be decoded.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A configured identity string or a received ID payload is invalid.
    #[error("invalid identity: {0}")]
    InvalidIdentity(String),
    /// A signature or public key algorithm is not supported.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// A private key could not be loaded.
    #[error("private key rejected: {0}")]
    KeyRejected(String),
    /// A certificate's validity period ended before the check time.
    #[error("certificate '{subject}' expired on {not_after}")]
    Expired {
        /// Subject DN of the certificate.
        subject: String,
        /// End of validity, formatted.
        not_after: String,
    },
    /// A certificate's validity period starts after the check time.
    #[error("certificate '{subject}' is not valid before {not_before}")]
    NotYetValid {
        /// Subject DN of the certificate.
        subject: String,
        /// Start of validity, formatted.
        not_before: String,
    },
    /// No trust anchor or intermediate issued the certificate.
    #[error("no trusted CA for issuer '{issuer}'")]
    NoTrustedCa {
        /// Issuer DN that could not be found.
        issuer: String,
    },
    /// The signature on a certificate does not verify with its issuer's key.
    #[error("signature on certificate '{subject}' does not verify with the key of '{issuer}'")]
    BadCertificateSignature {
        /// Subject DN of the certificate.
        subject: String,
        /// Issuer DN whose key was tried.
        issuer: String,
    },
    /// An issuing certificate is not a CA (basicConstraints).
    #[error("certificate '{subject}' is not a CA but issued '{issued}'")]
    NotCa {
        /// Subject DN of the would-be CA.
        subject: String,
        /// The certificate it signed.
        issued: String,
    },
    /// A CA's pathLenConstraint is exceeded.
    #[error("path length constraint {path_len} of CA '{subject}' exceeded")]
    PathLenExceeded {
        /// Subject DN of the CA.
        subject: String,
        /// Its pathLenConstraint.
        path_len: u32,
    },
    /// A CA's keyUsage does not allow keyCertSign.
    #[error("key usage of CA '{subject}' does not allow certificate signing")]
    KeyUsage {
        /// Subject DN of the CA.
        subject: String,
    },
    /// The path is longer than [`MAX_PATH_DEPTH`].
    #[error("certificate path exceeds the maximum depth of {max}")]
    PathTooDeep {
        /// The limit.
        max: usize,
    },
    /// A critical extension this implementation does not process.
    #[error("certificate '{subject}' has unsupported critical extension {oid}")]
    UnsupportedCriticalExtension {
        /// Subject DN.
        subject: String,
        /// Dotted OID.
        oid: String,
    },
    /// The AUTH payload uses a method that cannot be handled with this key.
    #[error("authentication method {method} not supported with {key}")]
    UnsupportedAuthMethod {
        /// The method, e.g. `RSA_SIG`.
        method: String,
        /// The key type.
        key: String,
    },
    /// No signature hash algorithm is shared with the peer.
    #[error("no signature hash algorithm in common with the peer for {0}")]
    NoCommonHash(String),
    /// The AUTH signature did not verify.
    #[error("signature verification failed: {0}")]
    BadSignature(String),
    /// Signing failed in the crypto library.
    #[error("signing failed: {0}")]
    Signing(String),
}

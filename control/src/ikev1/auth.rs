//! Phase 1 authentication methods (RFC 2409 §5, Appendix A; RFC 4754 for
//! ECDSA): pre-shared keys, or signatures with certificates, where both
//! ends sign HASH_I/HASH_R with the key of a certificate they send in
//! messages 5 and 6, having asked for the other's with CERTREQ in
//! messages 3 and 4.
//!
//! IKEv1 signs the hash itself: RSA with PKCS#1 v1.5 padding and no
//! DigestInfo, ECDSA as raw r||s over the hash. The method is one
//! transform attribute for both ends, so a connection's own key decides
//! it and the peer's certificate must hold a key of the same kind.

use crate::config::{AuthConfig, ConnectionConfig, LocalCert};
use crate::crypto::CryptoProvider;
use crate::pki::{KeyType, PublicKey, TrustStore, trusted_peer_certificate, verify_prehashed};
use crate::wire::ikev2;

/// Authentication method numbers of the Phase 1 attribute class 3.
pub mod method {
    /// Pre-shared key.
    pub const PSK: u16 = 1;
    /// RSA signatures.
    pub const RSA_SIG: u16 = 3;
    /// ECDSA with SHA-256 on P-256 (RFC 4754).
    pub const ECDSA_256: u16 = 9;
    /// ECDSA with SHA-384 on P-384 (RFC 4754).
    pub const ECDSA_384: u16 = 10;
    /// Pre-shared key, then XAUTH of the initiator (draft-beaulieu-ike-xauth).
    pub const XAUTH_INIT_PSK: u16 = 65001;
    /// RSA signatures, then XAUTH of the initiator.
    pub const XAUTH_INIT_RSA: u16 = 65005;
}

/// Certificate encoding of CERT and CERTREQ payloads: X.509 signature.
pub const CERT_X509_SIGNATURE: u8 = 4;

/// How the two ends of a Phase 1 prove their identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase1Auth {
    /// Both know the same pre-shared key.
    Psk,
    /// Both sign with certificates; the key kind our certificate has.
    Signature(SignatureKind),
}

/// The key kind of a signature method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureKind {
    /// RSA.
    Rsa,
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
}

impl Phase1Auth {
    /// The method `conn` authenticates with over IKEv1, or why it cannot.
    pub fn of(conn: &ConnectionConfig) -> Result<Self, String> {
        match (&conn.local_auth, &conn.remote_auth) {
            (AuthConfig::Psk(_), AuthConfig::Psk(_)) => Ok(Phase1Auth::Psk),
            (AuthConfig::Cert(c), AuthConfig::PubKey(_)) => match c.key.key_type() {
                KeyType::Rsa(_) => Ok(Phase1Auth::Signature(SignatureKind::Rsa)),
                KeyType::EcdsaP256 => Ok(Phase1Auth::Signature(SignatureKind::EcdsaP256)),
                KeyType::EcdsaP384 => Ok(Phase1Auth::Signature(SignatureKind::EcdsaP384)),
                other => Err(format!(
                    "connection {}: IKEv1 signs with RSA or ECDSA P-256/P-384 keys, not {other}",
                    conn.name
                )),
            },
            _ => Err(format!(
                "connection {}: IKEv1 authenticates both ends with a pre-shared key or both with certificates",
                conn.name
            )),
        }
    }

    /// The attribute value announcing this method.
    pub fn number(self) -> u16 {
        match self {
            Phase1Auth::Psk => method::PSK,
            Phase1Auth::Signature(SignatureKind::Rsa) => method::RSA_SIG,
            Phase1Auth::Signature(SignatureKind::EcdsaP256) => method::ECDSA_256,
            Phase1Auth::Signature(SignatureKind::EcdsaP384) => method::ECDSA_384,
        }
    }

    /// The attribute value `conn` proposes and accepts: this method, or
    /// its XAUTH variant when the connection makes the initiator pass XAUTH.
    pub fn number_for(self, conn: &ConnectionConfig) -> Result<u16, String> {
        match (self, conn.xauth || conn.xauth_client.is_some()) {
            (_, false) => Ok(self.number()),
            (Phase1Auth::Psk, true) => Ok(method::XAUTH_INIT_PSK),
            (Phase1Auth::Signature(SignatureKind::Rsa), true) => Ok(method::XAUTH_INIT_RSA),
            (Phase1Auth::Signature(_), true) => Err(format!(
                "connection {}: IKEv1 has no XAUTH method with ECDSA (use a pre-shared key or RSA)",
                conn.name
            )),
        }
    }

    /// True for certificate methods.
    pub fn is_signature(self) -> bool {
        matches!(self, Phase1Auth::Signature(_))
    }
}

impl SignatureKind {
    fn matches(self, key: &PublicKey) -> bool {
        matches!(
            (self, key),
            (SignatureKind::Rsa, PublicKey::Rsa { .. })
                | (SignatureKind::EcdsaP256, PublicKey::EcP256(_))
                | (SignatureKind::EcdsaP384, PublicKey::EcP384(_))
        )
    }
}

/// Our certificate and key, and the CAs we accept the peer's from.
pub(crate) fn credentials(conn: &ConnectionConfig) -> Option<(&LocalCert, &TrustStore)> {
    match (&conn.local_auth, &conn.remote_auth) {
        (AuthConfig::Cert(c), AuthConfig::PubKey(t)) => Some((c, t)),
        _ => None,
    }
}

/// The CERTREQ authorities we send: the DER subject names of our trusted
/// CAs (an empty authority when there are none).
pub(crate) fn certreq_authorities(trust: &TrustStore) -> Vec<Vec<u8>> {
    let names: Vec<Vec<u8>> = trust
        .certificates()
        .iter()
        .map(|c| c.subject().as_der().to_vec())
        .collect();
    if names.is_empty() { vec![Vec::new()] } else { names }
}

/// Checks the peer's signature `sig` of `hash` (its HASH_I or HASH_R):
/// its end-entity certificate (the first of `certs`, the rest
/// intermediates) must hold `peer`'s identity, chain to a CA of `trust`
/// at `now` (Unix seconds), hold a key of `kind` and verify `sig`.
pub(crate) fn verify_peer_signature(
    provider: &dyn CryptoProvider,
    trust: &TrustStore,
    kind: SignatureKind,
    peer: &ikev2::Identification,
    certs: &[&[u8]],
    hash: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    let ee = trusted_peer_certificate(trust, peer, certs, provider.unix_time())?;
    let key = ee.public_key().map_err(|e| format!("peer certificate key: {e}"))?;
    if !kind.matches(key) {
        return Err(format!(
            "peer certificate holds a {} key, but the negotiated method signs with {kind:?}",
            key.kind()
        ));
    }
    verify_prehashed(key, provider, hash, sig).map_err(|e| format!("signature does not verify: {e}"))
}

//! Key exchanges: X25519, ECP-256/384, MODP-2048/3072/4096, ML-KEM-768.
//! Peer public values are checked as RFC 6989 asks.

use super::{CryptoError, KeGroup};
use aws_lc_rs::agreement::{self, UnparsedPublicKey};
use aws_lc_rs::kem::{self, Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_768};
use ffi::modp::{ModpError, ModpGroup, ModpPrime};
use zeroize::Zeroizing;

/// A shared secret (g^ir or the KEM shared secret), zeroized on drop.
pub type SharedSecret = Zeroizing<Vec<u8>>;

/// ML-KEM-768 ciphertext length (the responder's KE data), FIPS 203.
pub const ML_KEM_768_CIPHERTEXT_LEN: usize = 1088;

/// Our half of a key exchange, started by the initiator.
pub struct KeyExchange {
    group: KeGroup,
    secret: Secret,
    public: Vec<u8>,
}

/// The private part of a key exchange. aws-lc wipes its own key objects when
/// they are freed; the MODP exponent is ours and zeroized on drop.
enum Secret {
    Ecdh(agreement::PrivateKey),
    Modp {
        group: &'static ModpGroup,
        exponent: Zeroizing<Vec<u8>>,
    },
    MlKem(DecapsulationKey<kem::AlgorithmId>),
}

impl std::fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyExchange")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// The aws-lc-rs agreement algorithm of an elliptic-curve group.
fn agreement_algorithm(group: KeGroup) -> Option<&'static agreement::Algorithm> {
    match group {
        KeGroup::Curve25519 => Some(&agreement::X25519),
        KeGroup::Ecp256 => Some(&agreement::ECDH_P256),
        KeGroup::Ecp384 => Some(&agreement::ECDH_P384),
        _ => None,
    }
}

/// The MODP prime of a group and the private exponent length in bytes
/// (about twice the group's symmetric strength, RFC 3526 §8).
fn modp_params(group: KeGroup) -> Option<(ModpPrime, usize)> {
    match group {
        KeGroup::Modp2048 => Some((ModpPrime::Modp2048, 32)),
        KeGroup::Modp3072 => Some((ModpPrime::Modp3072, 40)),
        KeGroup::Modp4096 => Some((ModpPrime::Modp4096, 48)),
        _ => None,
    }
}

fn modp_group(prime: ModpPrime) -> Result<&'static ModpGroup, CryptoError> {
    ModpGroup::get(prime).map_err(|e| CryptoError::Unsupported(format!("MODP group setup: {e}")))
}

fn modp_error(e: ModpError) -> CryptoError {
    match e {
        ModpError::OutOfRange | ModpError::Length { .. } => CryptoError::InvalidPublicValue(e.to_string()),
        ModpError::Alloc | ModpError::Library(_) => CryptoError::KeyRejected(e.to_string()),
    }
}

fn check_len(what: &str, got: usize, expected: usize) -> Result<(), CryptoError> {
    if got == expected {
        Ok(())
    } else {
        Err(CryptoError::InvalidPublicValue(format!(
            "{what}: {got} bytes, expected {expected}"
        )))
    }
}

/// IKE's encoding of our public key: raw u for X25519, x || y without the
/// 0x04 prefix for ECP (RFC 5903 §7).
fn ecdh_public_value(group: KeGroup, key: &agreement::PrivateKey) -> Result<Vec<u8>, CryptoError> {
    let public = key
        .compute_public_key()
        .map_err(|_| CryptoError::KeyRejected("public key".into()))?;
    let bytes = public.as_ref();
    match group {
        KeGroup::Curve25519 => Ok(bytes.to_vec()),
        _ => match bytes.split_first() {
            Some((0x04, xy)) if xy.len() == group.public_len() => Ok(xy.to_vec()),
            _ => Err(CryptoError::KeyRejected("unexpected EC point encoding".into())),
        },
    }
}

/// ECDH / X25519 agreement with the peer's IKE-encoded public value.
fn ecdh_agree(group: KeGroup, key: &agreement::PrivateKey, peer: &[u8]) -> Result<SharedSecret, CryptoError> {
    let alg = agreement_algorithm(group).ok_or_else(|| CryptoError::Unsupported(group.name().into()))?;
    check_len(group.name(), peer.len(), group.public_len())?;
    let invalid = || CryptoError::InvalidPublicValue(format!("{} public value rejected", group.name()));
    let secret = if group == KeGroup::Curve25519 {
        agreement::agree(key, UnparsedPublicKey::new(alg, peer), invalid(), |s| {
            Ok(Zeroizing::new(s.to_vec()))
        })?
    } else {
        // SEC1 uncompressed point: 0x04 || x || y. aws-lc checks it is on the curve.
        let mut point = [0u8; 1 + 96];
        point[0] = 0x04;
        point[1..=peer.len()].copy_from_slice(peer);
        let unparsed = UnparsedPublicKey::new(alg, &point[..=peer.len()]);
        agreement::agree(key, unparsed, invalid(), |s| Ok(Zeroizing::new(s.to_vec())))?
    };
    // RFC 7748 §6.1 / RFC 8031 §2.3: reject the all-zero output (small-order peer point).
    if group == KeGroup::Curve25519 && secret.iter().fold(0u8, |acc, b| acc | b) == 0 {
        return Err(CryptoError::InvalidPublicValue(
            "X25519 shared secret is all zero".into(),
        ));
    }
    Ok(secret)
}

/// FIPS 203 §7.2 modulus check on an ML-KEM-768 encapsulation key: every
/// 12-bit coefficient of the encoded vector is below q = 3329.
fn ml_kem_768_modulus_check(ek: &[u8]) -> Result<(), CryptoError> {
    check_len("ML-KEM-768 encapsulation key", ek.len(), KeGroup::MlKem768.public_len())?;
    let encoded_t = &ek[..384 * 3];
    let mut bad = false;
    for c in encoded_t.chunks_exact(3) {
        let a = u16::from(c[0]) | (u16::from(c[1] & 0x0f) << 8);
        let b = u16::from(c[1] >> 4) | (u16::from(c[2]) << 4);
        bad |= a >= 3329 || b >= 3329;
    }
    if bad {
        return Err(CryptoError::InvalidPublicValue(
            "ML-KEM-768 encapsulation key fails the modulus check".into(),
        ));
    }
    Ok(())
}

fn random_exponent(len: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut exponent = Zeroizing::new(vec![0u8; len]);
    loop {
        super::random::fill(&mut exponent)?;
        if exponent.iter().any(|&b| b != 0) {
            return Ok(exponent);
        }
    }
}

impl KeyExchange {
    /// Generates an ephemeral key pair (or, for ML-KEM, a decapsulation key).
    pub fn generate(group: KeGroup) -> Result<Self, CryptoError> {
        if let Some(alg) = agreement_algorithm(group) {
            let key = agreement::PrivateKey::generate(alg).map_err(|_| CryptoError::Rng)?;
            return Self::from_ecdh_key(group, key);
        }
        if let Some((prime, exp_len)) = modp_params(group) {
            return Self::from_modp_exponent(group, modp_group(prime)?, random_exponent(exp_len)?);
        }
        match group {
            KeGroup::MlKem768 => {
                let dk = DecapsulationKey::generate(&ML_KEM_768).map_err(|_| CryptoError::Rng)?;
                Self::from_decapsulation_key(dk)
            }
            _ => Err(CryptoError::Unsupported(group.name().into())),
        }
    }

    /// Builds a key exchange from a fixed private value, for known-answer
    /// tests only: the private scalar (X25519, ECP, big-endian), the MODP
    /// exponent (big-endian), or the ML-KEM-768 decapsulation key bytes.
    #[doc(hidden)]
    pub fn from_private_for_test(group: KeGroup, private: &[u8]) -> Result<Self, CryptoError> {
        if let Some(alg) = agreement_algorithm(group) {
            let key = agreement::PrivateKey::from_private_key(alg, private)
                .map_err(|e| CryptoError::KeyRejected(e.to_string()))?;
            return Self::from_ecdh_key(group, key);
        }
        if let Some((prime, _)) = modp_params(group) {
            return Self::from_modp_exponent(group, modp_group(prime)?, Zeroizing::new(private.to_vec()));
        }
        match group {
            KeGroup::MlKem768 => {
                let dk =
                    DecapsulationKey::new(&ML_KEM_768, private).map_err(|e| CryptoError::KeyRejected(e.to_string()))?;
                Self::from_decapsulation_key(dk)
            }
            _ => Err(CryptoError::Unsupported(group.name().into())),
        }
    }

    fn from_ecdh_key(group: KeGroup, key: agreement::PrivateKey) -> Result<Self, CryptoError> {
        let public = ecdh_public_value(group, &key)?;
        Ok(KeyExchange {
            group,
            secret: Secret::Ecdh(key),
            public,
        })
    }

    fn from_modp_exponent(
        group: KeGroup,
        modp: &'static ModpGroup,
        exponent: Zeroizing<Vec<u8>>,
    ) -> Result<Self, CryptoError> {
        let public = modp.pow_g(&exponent).map_err(modp_error)?;
        Ok(KeyExchange {
            group,
            secret: Secret::Modp { group: modp, exponent },
            public,
        })
    }

    fn from_decapsulation_key(dk: DecapsulationKey<kem::AlgorithmId>) -> Result<Self, CryptoError> {
        let ek = dk
            .encapsulation_key()
            .map_err(|_| CryptoError::KeyRejected("ML-KEM encapsulation key".into()))?;
        let public = ek
            .key_bytes()
            .map_err(|_| CryptoError::KeyRejected("ML-KEM encapsulation key bytes".into()))?
            .as_ref()
            .to_vec();
        Ok(KeyExchange {
            group: KeGroup::MlKem768,
            secret: Secret::MlKem(dk),
            public,
        })
    }

    /// The group.
    pub fn group(&self) -> KeGroup {
        self.group
    }

    /// The public value to put in our KE payload.
    pub fn public_value(&self) -> &[u8] {
        &self.public
    }

    /// Length of the KE data the responder answers with: the public value
    /// length, or the ML-KEM ciphertext length.
    pub fn response_len(group: KeGroup) -> usize {
        match group {
            KeGroup::MlKem768 => ML_KEM_768_CIPHERTEXT_LEN,
            g => g.public_len(),
        }
    }

    /// Completes the exchange with the responder's KE data (initiator side).
    pub fn finish(self, peer_value: &[u8]) -> Result<SharedSecret, CryptoError> {
        match &self.secret {
            Secret::Ecdh(key) => ecdh_agree(self.group, key, peer_value),
            Secret::Modp { group, exponent } => {
                let mut shared = Zeroizing::new(vec![0u8; group.byte_len()]);
                group.pow_into(peer_value, exponent, &mut shared).map_err(modp_error)?;
                Ok(shared)
            }
            Secret::MlKem(dk) => {
                check_len("ML-KEM-768 ciphertext", peer_value.len(), ML_KEM_768_CIPHERTEXT_LEN)?;
                let ss = dk
                    .decapsulate(Ciphertext::from(peer_value))
                    .map_err(|_| CryptoError::InvalidPublicValue("ML-KEM-768 decapsulation failed".into()))?;
                Ok(Zeroizing::new(ss.as_ref().to_vec()))
            }
        }
    }

    /// Responder side in one step: checks the initiator's value, returns our
    /// KE data (public value, or ML-KEM ciphertext) and the shared secret.
    pub fn respond(group: KeGroup, peer_value: &[u8]) -> Result<(Vec<u8>, SharedSecret), CryptoError> {
        if group == KeGroup::MlKem768 {
            ml_kem_768_modulus_check(peer_value)?;
            let ek = EncapsulationKey::new(&ML_KEM_768, peer_value)
                .map_err(|e| CryptoError::InvalidPublicValue(format!("ML-KEM-768 encapsulation key: {e}")))?;
            let (ct, ss) = ek.encapsulate().map_err(|_| CryptoError::Rng)?;
            return Ok((ct.as_ref().to_vec(), Zeroizing::new(ss.as_ref().to_vec())));
        }
        // Check the peer's value before spending a key generation on it.
        if let Some((prime, _)) = modp_params(group) {
            modp_group(prime)?.check_public(peer_value).map_err(modp_error)?;
        } else {
            check_len(group.name(), peer_value.len(), group.public_len())?;
        }
        let ours = Self::generate(group)?;
        let public = ours.public.clone();
        let shared = ours.finish(peer_value)?;
        Ok((public, shared))
    }
}

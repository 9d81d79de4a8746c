//! Key exchanges on aws-lc: X25519 and ECP-256/384 (aws-lc-rs), MODP
//! 2048/3072/4096 (`ffi::modp`, constant-time), ML-KEM-512/768/1024
//! (`ffi::mlkem` from seeds, aws-lc-rs decapsulation). Every private value is drawn from
//! the provider's random source. `control` checks lengths and the RFC 6989 /
//! FIPS 203 rules before and after; aws-lc checks points are on the curve
//! and `ffi::modp` that MODP values lie in 2..p-2.

use aws_lc_rs::agreement::{self, UnparsedPublicKey};
use aws_lc_rs::kem::{self, Ciphertext, DecapsulationKey, ML_KEM_512, ML_KEM_768, ML_KEM_1024};
use control::crypto::{ActiveKeyExchange, CryptoError, KeGroup, SharedSecret};
use ffi::mlkem::{self, MlKemParams};
use ffi::modp::{ModpError, ModpGroup, ModpPrime};
use zeroize::Zeroizing;

use crate::RandomSource;

/// Largest IKE public value of an elliptic-curve group (ECP-384: x || y).
const ECDH_MAX_PUBLIC: usize = 96;
/// Largest MODP exponent (MODP-4096).
const MODP_MAX_EXPONENT: usize = 48;
/// Tries at a private scalar before giving up: a random 256-bit string is
/// at or above the P-256 order with probability about 2^-32.
const SCALAR_TRIES: usize = 8;

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
        _ => CryptoError::KeyRejected(e.to_string()),
    }
}

fn mlkem_error(e: mlkem::MlKemError) -> CryptoError {
    match e {
        mlkem::MlKemError::BadKey => CryptoError::InvalidPublicValue(e.to_string()),
        _ => CryptoError::KeyRejected(e.to_string()),
    }
}

/// An X25519 or ECP private key and its IKE-encoded public value.
struct Ecdh {
    group: KeGroup,
    key: agreement::PrivateKey,
    public: [u8; ECDH_MAX_PUBLIC],
    public_len: usize,
}

impl Ecdh {
    fn new(group: KeGroup, key: agreement::PrivateKey) -> Result<Self, CryptoError> {
        let public = key
            .compute_public_key()
            .map_err(|_| CryptoError::KeyRejected("public key".into()))?;
        // IKE's encoding: raw u for X25519, x || y without the 0x04 prefix for ECP (RFC 5903 §7).
        let bytes = match (group == KeGroup::Curve25519, public.as_ref().split_first()) {
            (true, _) => public.as_ref(),
            (false, Some((0x04, xy))) => xy,
            _ => return Err(CryptoError::KeyRejected("unexpected EC point encoding".into())),
        };
        if bytes.len() != group.public_len() || bytes.len() > ECDH_MAX_PUBLIC {
            return Err(CryptoError::KeyRejected(format!("{} public key length", group.name())));
        }
        let mut out = [0u8; ECDH_MAX_PUBLIC];
        out[..bytes.len()].copy_from_slice(bytes);
        Ok(Ecdh {
            group,
            key,
            public: out,
            public_len: bytes.len(),
        })
    }

    fn generate(
        random: &dyn RandomSource,
        group: KeGroup,
        alg: &'static agreement::Algorithm,
    ) -> Result<Self, CryptoError> {
        let mut scalar = Zeroizing::new([0u8; 48]);
        let scalar = &mut scalar[..alg_private_len(group)];
        for _ in 0..SCALAR_TRIES {
            random.fill(scalar)?;
            // Zero or at/above the group order: draw again.
            if let Ok(key) = agreement::PrivateKey::from_private_key(alg, scalar) {
                return Self::new(group, key);
            }
        }
        Err(CryptoError::KeyRejected(format!(
            "no valid {} scalar drawn",
            group.name()
        )))
    }

    fn agree(&self, peer: &[u8]) -> Result<SharedSecret, CryptoError> {
        let alg = agreement_algorithm(self.group).ok_or_else(|| CryptoError::Unsupported(self.group.name().into()))?;
        let invalid = || CryptoError::InvalidPublicValue(format!("{} public value rejected", self.group.name()));
        if self.group == KeGroup::Curve25519 {
            return agreement::agree(&self.key, UnparsedPublicKey::new(alg, peer), invalid(), |s| {
                Ok(Zeroizing::new(s.to_vec()))
            });
        }
        if peer.len() > ECDH_MAX_PUBLIC {
            return Err(invalid());
        }
        // SEC1 uncompressed point: 0x04 || x || y. aws-lc checks it is on the curve.
        let mut point = [0u8; 1 + ECDH_MAX_PUBLIC];
        point[0] = 0x04;
        point[1..=peer.len()].copy_from_slice(peer);
        let unparsed = UnparsedPublicKey::new(alg, &point[..=peer.len()]);
        agreement::agree(&self.key, unparsed, invalid(), |s| Ok(Zeroizing::new(s.to_vec())))
    }
}

/// Private scalar length of an elliptic-curve group.
fn alg_private_len(group: KeGroup) -> usize {
    match group {
        KeGroup::Ecp384 => 48,
        _ => 32,
    }
}

impl ActiveKeyExchange for Ecdh {
    fn public_value(&self) -> &[u8] {
        &self.public[..self.public_len]
    }

    fn finish(self: Box<Self>, peer_value: &[u8]) -> Result<SharedSecret, CryptoError> {
        self.agree(peer_value)
    }
}

/// A MODP exponent (ours, zeroized on drop) and g^x.
struct Modp {
    group: &'static ModpGroup,
    exponent: Zeroizing<[u8; MODP_MAX_EXPONENT]>,
    exponent_len: usize,
    public: Vec<u8>,
}

impl Modp {
    fn from_exponent(prime: ModpPrime, exponent: &[u8]) -> Result<Self, CryptoError> {
        let group = modp_group(prime)?;
        if exponent.is_empty() || exponent.len() > MODP_MAX_EXPONENT {
            return Err(CryptoError::KeyRejected(format!(
                "MODP exponent of {} bytes",
                exponent.len()
            )));
        }
        let mut stored = Zeroizing::new([0u8; MODP_MAX_EXPONENT]);
        stored[..exponent.len()].copy_from_slice(exponent);
        let public = group.pow_g(exponent).map_err(modp_error)?;
        Ok(Modp {
            group,
            exponent: stored,
            exponent_len: exponent.len(),
            public,
        })
    }

    fn generate(random: &dyn RandomSource, prime: ModpPrime, len: usize) -> Result<Self, CryptoError> {
        let mut exponent = Zeroizing::new([0u8; MODP_MAX_EXPONENT]);
        let exponent = &mut exponent[..len];
        loop {
            random.fill(exponent)?;
            if exponent.iter().any(|&b| b != 0) {
                return Self::from_exponent(prime, exponent);
            }
        }
    }
}

impl ActiveKeyExchange for Modp {
    fn public_value(&self) -> &[u8] {
        &self.public
    }

    fn finish(self: Box<Self>, peer_value: &[u8]) -> Result<SharedSecret, CryptoError> {
        let mut shared = Zeroizing::new(vec![0u8; self.group.byte_len()]);
        self.group
            .pow_into(peer_value, &self.exponent[..self.exponent_len], &mut shared)
            .map_err(modp_error)?;
        Ok(shared)
    }
}

/// The ML-KEM parameter set of a group, or None for Diffie-Hellman groups.
fn ml_kem_params(group: KeGroup) -> Option<MlKemParams> {
    match group {
        KeGroup::MlKem512 => Some(MlKemParams::MlKem512),
        KeGroup::MlKem768 => Some(MlKemParams::MlKem768),
        KeGroup::MlKem1024 => Some(MlKemParams::MlKem1024),
        _ => None,
    }
}

fn ml_kem_algorithm(params: MlKemParams) -> &'static kem::Algorithm<kem::AlgorithmId> {
    match params {
        MlKemParams::MlKem512 => &ML_KEM_512,
        MlKemParams::MlKem768 => &ML_KEM_768,
        MlKemParams::MlKem1024 => &ML_KEM_1024,
    }
}

/// An ML-KEM decapsulation key and its encapsulation key (the initiator's
/// side of a KEM: it sends `ek` and decapsulates the responder's ciphertext).
struct MlKem {
    params: MlKemParams,
    dk: DecapsulationKey<kem::AlgorithmId>,
    ek: [u8; mlkem::MAX_EK_LEN],
}

impl MlKem {
    fn generate(random: &dyn RandomSource, params: MlKemParams) -> Result<Self, CryptoError> {
        let mut seed = Zeroizing::new([0u8; mlkem::KEYGEN_SEED_LEN]);
        random.fill(&mut *seed)?;
        let mut dk = Zeroizing::new([0u8; mlkem::MAX_DK_LEN]);
        let mut ek = [0u8; mlkem::MAX_EK_LEN];
        let (dk, ek_out) = (&mut dk[..params.dk_len()], &mut ek[..params.ek_len()]);
        mlkem::keypair(params, &seed, dk, ek_out).map_err(mlkem_error)?;
        Self::from_dk_bytes(params, dk)
    }

    /// From the FIPS 203 decapsulation key dk = dk_PKE || ek || H(ek) || z,
    /// which carries the encapsulation key at offset 384 k.
    fn from_dk_bytes(params: MlKemParams, dk_bytes: &[u8]) -> Result<Self, CryptoError> {
        let wrong = || {
            CryptoError::KeyRejected(format!(
                "{} decapsulation key of {} bytes",
                params.name(),
                dk_bytes.len()
            ))
        };
        if dk_bytes.len() != params.dk_len() {
            return Err(wrong());
        }
        let offset = 384 * params.k();
        let ek_bytes = dk_bytes.get(offset..offset + params.ek_len()).ok_or_else(wrong)?;
        let mut ek = [0u8; mlkem::MAX_EK_LEN];
        ek[..ek_bytes.len()].copy_from_slice(ek_bytes);
        let dk = DecapsulationKey::new(ml_kem_algorithm(params), dk_bytes)
            .map_err(|e| CryptoError::KeyRejected(e.to_string()))?;
        Ok(MlKem { params, dk, ek })
    }

    /// The responder's side: a ciphertext to `ek` and the shared secret.
    fn encapsulate(
        random: &dyn RandomSource,
        params: MlKemParams,
        ek: &[u8],
    ) -> Result<(Vec<u8>, SharedSecret), CryptoError> {
        let mut seed = Zeroizing::new([0u8; mlkem::ENCAPS_SEED_LEN]);
        random.fill(&mut *seed)?;
        let mut ct = vec![0u8; params.ct_len()];
        let mut ss = Zeroizing::new([0u8; mlkem::SS_LEN]);
        mlkem::encapsulate(params, ek, &seed, &mut ct, &mut ss).map_err(mlkem_error)?;
        Ok((ct, Zeroizing::new(ss.to_vec())))
    }
}

impl ActiveKeyExchange for MlKem {
    fn public_value(&self) -> &[u8] {
        &self.ek[..self.params.ek_len()]
    }

    fn finish(self: Box<Self>, peer_value: &[u8]) -> Result<SharedSecret, CryptoError> {
        let ss = self
            .dk
            .decapsulate(Ciphertext::from(peer_value))
            .map_err(|_| CryptoError::InvalidPublicValue(format!("{} decapsulation failed", self.params.name())))?;
        Ok(Zeroizing::new(ss.as_ref().to_vec()))
    }
}

/// A fresh key exchange in `group` with private values from `random`.
pub(crate) fn generate(random: &dyn RandomSource, group: KeGroup) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
    if let Some(alg) = agreement_algorithm(group) {
        return Ok(Box::new(Ecdh::generate(random, group, alg)?));
    }
    if let Some((prime, exponent_len)) = modp_params(group) {
        return Ok(Box::new(Modp::generate(random, prime, exponent_len)?));
    }
    match ml_kem_params(group) {
        Some(params) => Ok(Box::new(MlKem::generate(random, params)?)),
        None => Err(CryptoError::Unsupported(group.name().into())),
    }
}

/// A key exchange from a fixed private value (known-answer tests).
pub(crate) fn from_private(group: KeGroup, private: &[u8]) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
    if let Some(alg) = agreement_algorithm(group) {
        let key = agreement::PrivateKey::from_private_key(alg, private)
            .map_err(|e| CryptoError::KeyRejected(e.to_string()))?;
        return Ok(Box::new(Ecdh::new(group, key)?));
    }
    if let Some((prime, _)) = modp_params(group) {
        return Ok(Box::new(Modp::from_exponent(prime, private)?));
    }
    match ml_kem_params(group) {
        Some(params) => Ok(Box::new(MlKem::from_dk_bytes(params, private)?)),
        None => Err(CryptoError::Unsupported(group.name().into())),
    }
}

/// The responder's KE data and shared secret for the initiator's `peer_value`.
pub(crate) fn respond(
    random: &dyn RandomSource,
    group: KeGroup,
    peer_value: &[u8],
) -> Result<(Vec<u8>, SharedSecret), CryptoError> {
    if let Some(params) = ml_kem_params(group) {
        return MlKem::encapsulate(random, params, peer_value);
    }
    // Check the peer's value before spending a key generation on it.
    if let Some((prime, _)) = modp_params(group) {
        modp_group(prime)?.check_public(peer_value).map_err(modp_error)?;
    }
    let ours = generate(random, group)?;
    let public = ours.public_value().to_vec();
    let shared = ours.finish(peer_value)?;
    Ok((public, shared))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededRandom;

    #[test]
    fn ml_kem_public_value_is_the_generated_encapsulation_key() {
        for group in [KeGroup::MlKem512, KeGroup::MlKem768, KeGroup::MlKem1024] {
            let params = ml_kem_params(group).unwrap();
            let kx = MlKem::generate(&SeededRandom::new(3), params).unwrap();
            let mut seed = [0u8; mlkem::KEYGEN_SEED_LEN];
            SeededRandom::new(3).fill(&mut seed).unwrap();
            let (mut dk, mut ek) = (vec![0u8; params.dk_len()], vec![0u8; params.ek_len()]);
            mlkem::keypair(params, &seed, &mut dk, &mut ek).unwrap();
            assert_eq!(kx.public_value(), &ek[..], "{group:?}");
            // A ciphertext to it decapsulates to the encapsulated secret.
            let (ct, ss) = respond(&SeededRandom::new(4), group, &ek).unwrap();
            assert_eq!(ct.len(), group.response_len());
            assert_eq!(Box::new(kx).finish(&ct).unwrap(), ss, "{group:?}");
        }
    }

    #[test]
    fn same_random_stream_same_key_exchange() {
        for group in [
            KeGroup::Curve25519,
            KeGroup::Ecp256,
            KeGroup::Ecp384,
            KeGroup::Modp2048,
            KeGroup::MlKem512,
            KeGroup::MlKem768,
            KeGroup::MlKem1024,
        ] {
            let a = generate(&SeededRandom::new(5), group).unwrap();
            let b = generate(&SeededRandom::new(5), group).unwrap();
            let c = generate(&SeededRandom::new(6), group).unwrap();
            assert_eq!(a.public_value(), b.public_value(), "{group:?}");
            assert_ne!(a.public_value(), c.public_value(), "{group:?}");
        }
    }
}

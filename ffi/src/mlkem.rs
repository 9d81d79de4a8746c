//! ML-KEM-768 (FIPS 203) key generation and encapsulation from caller-given
//! seeds, on aws-lc's deterministic KEM API. aws-lc-rs draws these seeds
//! from aws-lc's own generator; taking them from the caller lets the IKE
//! core's crypto provider own all randomness (a seeded run is reproducible).
//! Decapsulation needs no randomness and stays with aws-lc-rs.

use std::ptr;

use aws_lc_sys as sys;

/// ML-KEM-768 encapsulation key length.
pub const EK_LEN: usize = 1184;
/// ML-KEM-768 decapsulation key length.
pub const DK_LEN: usize = 2400;
/// ML-KEM-768 ciphertext length.
pub const CT_LEN: usize = 1088;
/// Shared secret length.
pub const SS_LEN: usize = 32;
/// Key generation seed length (d || z).
pub const KEYGEN_SEED_LEN: usize = 64;
/// Encapsulation seed length (m).
pub const ENCAPS_SEED_LEN: usize = 32;

/// Why an ML-KEM operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MlKemError {
    /// aws-lc could not set up the key or context.
    #[error("aws-lc ML-KEM setup failed")]
    Setup,
    /// The encapsulation key was refused (wrong length or encoding).
    #[error("ML-KEM-768 encapsulation key rejected")]
    BadKey,
    /// aws-lc's key generation or encapsulation failed.
    #[error("aws-lc ML-KEM {0} failed")]
    Library(&'static str),
}

/// Owns an `EVP_PKEY`.
struct Pkey(*mut sys::EVP_PKEY);

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: non-null, owned by us (from keygen or kem_new_raw_public_key), freed once.
        unsafe { sys::EVP_PKEY_free(self.0) }
    }
}

/// Owns an `EVP_PKEY_CTX`.
struct Ctx(*mut sys::EVP_PKEY_CTX);

impl Ctx {
    fn new(ctx: *mut sys::EVP_PKEY_CTX) -> Result<Self, MlKemError> {
        if ctx.is_null() {
            Err(MlKemError::Setup)
        } else {
            Ok(Ctx(ctx))
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: non-null (checked in `new`), owned by us, freed once.
        unsafe { sys::EVP_PKEY_CTX_free(self.0) }
    }
}

/// Generates the ML-KEM-768 key pair of `seed` into `dk` and `ek`.
pub fn ml_kem_768_keypair(
    seed: &[u8; KEYGEN_SEED_LEN],
    dk: &mut [u8; DK_LEN],
    ek: &mut [u8; EK_LEN],
) -> Result<(), MlKemError> {
    // SAFETY: plain constructor; the result is checked for null.
    let ctx = Ctx::new(unsafe { sys::EVP_PKEY_CTX_new_id(sys::EVP_PKEY_KEM, ptr::null_mut()) })?;
    // SAFETY: `ctx.0` is a valid KEM context.
    if unsafe { sys::EVP_PKEY_CTX_kem_set_params(ctx.0, sys::NID_MLKEM768) } != 1 {
        return Err(MlKemError::Setup);
    }
    // SAFETY: as above.
    if unsafe { sys::EVP_PKEY_keygen_init(ctx.0) } != 1 {
        return Err(MlKemError::Setup);
    }
    let mut raw: *mut sys::EVP_PKEY = ptr::null_mut();
    let mut seed_len = seed.len();
    // SAFETY: `seed` is `seed_len` readable bytes; `raw` receives a new EVP_PKEY on success.
    let ok = unsafe { sys::EVP_PKEY_keygen_deterministic(ctx.0, &mut raw, seed.as_ptr(), &mut seed_len) };
    if raw.is_null() {
        return Err(MlKemError::Library("key generation"));
    }
    let pkey = Pkey(raw);
    if ok != 1 {
        return Err(MlKemError::Library("key generation"));
    }
    let (mut dk_len, mut ek_len) = (dk.len(), ek.len());
    // SAFETY: `pkey.0` is a valid ML-KEM key; each buffer is writable for the length passed.
    let ok = unsafe {
        sys::EVP_PKEY_get_raw_private_key(pkey.0, dk.as_mut_ptr(), &mut dk_len) == 1
            && sys::EVP_PKEY_get_raw_public_key(pkey.0, ek.as_mut_ptr(), &mut ek_len) == 1
    };
    if !ok || dk_len != DK_LEN || ek_len != EK_LEN {
        return Err(MlKemError::Library("key export"));
    }
    Ok(())
}

/// Encapsulates to the ML-KEM-768 encapsulation key `ek` with `seed`:
/// writes the ciphertext and the shared secret.
pub fn ml_kem_768_encapsulate(
    ek: &[u8],
    seed: &[u8; ENCAPS_SEED_LEN],
    ct: &mut [u8; CT_LEN],
    ss: &mut [u8; SS_LEN],
) -> Result<(), MlKemError> {
    if ek.len() != EK_LEN {
        return Err(MlKemError::BadKey);
    }
    // SAFETY: `ek` is `ek.len()` readable bytes; the result is null or an owned EVP_PKEY.
    let raw = unsafe { sys::EVP_PKEY_kem_new_raw_public_key(sys::NID_MLKEM768, ek.as_ptr(), ek.len()) };
    if raw.is_null() {
        return Err(MlKemError::BadKey);
    }
    let pkey = Pkey(raw);
    // SAFETY: `pkey.0` is valid; the context takes its own reference to it.
    let ctx = Ctx::new(unsafe { sys::EVP_PKEY_CTX_new(pkey.0, ptr::null_mut()) })?;
    let (mut ct_len, mut ss_len, mut seed_len) = (ct.len(), ss.len(), seed.len());
    // SAFETY: the output buffers are writable and the seed readable for the lengths passed.
    let ok = unsafe {
        sys::EVP_PKEY_encapsulate_deterministic(
            ctx.0,
            ct.as_mut_ptr(),
            &mut ct_len,
            ss.as_mut_ptr(),
            &mut ss_len,
            seed.as_ptr(),
            &mut seed_len,
        )
    };
    if ok != 1 || ct_len != CT_LEN || ss_len != SS_LEN {
        return Err(MlKemError::Library("encapsulation"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seeds_same_keys_and_ciphertexts() {
        let (mut dk1, mut ek1) = ([0u8; DK_LEN], [0u8; EK_LEN]);
        let (mut dk2, mut ek2) = ([0u8; DK_LEN], [0u8; EK_LEN]);
        ml_kem_768_keypair(&[7; 64], &mut dk1, &mut ek1).unwrap();
        ml_kem_768_keypair(&[7; 64], &mut dk2, &mut ek2).unwrap();
        assert_eq!(dk1, dk2);
        assert_eq!(ek1, ek2);
        ml_kem_768_keypair(&[8; 64], &mut dk2, &mut ek2).unwrap();
        assert_ne!(ek1, ek2);
        let (mut ct1, mut ss1, mut ct2, mut ss2) = ([0u8; CT_LEN], [0u8; SS_LEN], [0u8; CT_LEN], [0u8; SS_LEN]);
        ml_kem_768_encapsulate(&ek1, &[1; 32], &mut ct1, &mut ss1).unwrap();
        ml_kem_768_encapsulate(&ek1, &[1; 32], &mut ct2, &mut ss2).unwrap();
        assert_eq!((ct1, ss1), (ct2, ss2));
        assert_eq!(
            ml_kem_768_encapsulate(&ek1[1..], &[1; 32], &mut ct1, &mut ss1),
            Err(MlKemError::BadKey)
        );
    }
}

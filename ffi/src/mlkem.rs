//! ML-KEM-512/768/1024 (FIPS 203) key generation and encapsulation from
//! caller-given seeds, on aws-lc's deterministic KEM API. aws-lc-rs draws
//! these seeds from aws-lc's own generator; taking them from the caller lets
//! the IKE core's crypto provider own all randomness (a seeded run is
//! reproducible). Decapsulation needs no randomness and stays with aws-lc-rs.

use std::ptr;

use aws_lc_sys as sys;

/// Shared secret length (every parameter set).
pub const SS_LEN: usize = 32;
/// Key generation seed length (d || z).
pub const KEYGEN_SEED_LEN: usize = 64;
/// Encapsulation seed length (m).
pub const ENCAPS_SEED_LEN: usize = 32;
/// Largest encapsulation key (ML-KEM-1024).
pub const MAX_EK_LEN: usize = 1568;
/// Largest decapsulation key (ML-KEM-1024).
pub const MAX_DK_LEN: usize = 3168;
/// Largest ciphertext (ML-KEM-1024).
pub const MAX_CT_LEN: usize = 1568;

/// An ML-KEM parameter set (FIPS 203 §8, Table 2 and 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MlKemParams {
    /// ML-KEM-512: k = 2.
    MlKem512,
    /// ML-KEM-768: k = 3.
    MlKem768,
    /// ML-KEM-1024: k = 4.
    MlKem1024,
}

impl MlKemParams {
    /// The module rank k.
    pub fn k(self) -> usize {
        match self {
            MlKemParams::MlKem512 => 2,
            MlKemParams::MlKem768 => 3,
            MlKemParams::MlKem1024 => 4,
        }
    }

    /// Encapsulation key length: 384 k + 32.
    pub fn ek_len(self) -> usize {
        384 * self.k() + 32
    }

    /// Decapsulation key length: 768 k + 96.
    pub fn dk_len(self) -> usize {
        768 * self.k() + 96
    }

    /// Ciphertext length: 32 (d_u k + d_v).
    pub fn ct_len(self) -> usize {
        match self {
            MlKemParams::MlKem512 => 768,
            MlKemParams::MlKem768 => 1088,
            MlKemParams::MlKem1024 => 1568,
        }
    }

    /// The FIPS 203 name, e.g. `ML-KEM-768`.
    pub fn name(self) -> &'static str {
        match self {
            MlKemParams::MlKem512 => "ML-KEM-512",
            MlKemParams::MlKem768 => "ML-KEM-768",
            MlKemParams::MlKem1024 => "ML-KEM-1024",
        }
    }

    fn nid(self) -> i32 {
        match self {
            MlKemParams::MlKem512 => sys::NID_MLKEM512,
            MlKemParams::MlKem768 => sys::NID_MLKEM768,
            MlKemParams::MlKem1024 => sys::NID_MLKEM1024,
        }
    }
}

/// Why an ML-KEM operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MlKemError {
    /// aws-lc could not set up the key or context.
    #[error("aws-lc ML-KEM setup failed")]
    Setup,
    /// The encapsulation key was refused (wrong length or encoding).
    #[error("ML-KEM encapsulation key rejected")]
    BadKey,
    /// An output buffer does not have the parameter set's length.
    #[error("ML-KEM output buffer of the wrong length")]
    BufferLength,
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

/// Generates the `params` key pair of `seed` (d || z) into `dk` and `ek`,
/// which must have the parameter set's lengths.
pub fn keypair(
    params: MlKemParams,
    seed: &[u8; KEYGEN_SEED_LEN],
    dk: &mut [u8],
    ek: &mut [u8],
) -> Result<(), MlKemError> {
    if dk.len() != params.dk_len() || ek.len() != params.ek_len() {
        return Err(MlKemError::BufferLength);
    }
    // SAFETY: plain constructor; the result is checked for null.
    let ctx = Ctx::new(unsafe { sys::EVP_PKEY_CTX_new_id(sys::EVP_PKEY_KEM, ptr::null_mut()) })?;
    // SAFETY: `ctx.0` is a valid KEM context.
    if unsafe { sys::EVP_PKEY_CTX_kem_set_params(ctx.0, params.nid()) } != 1 {
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
    if !ok || dk_len != params.dk_len() || ek_len != params.ek_len() {
        return Err(MlKemError::Library("key export"));
    }
    Ok(())
}

/// Encapsulates to the `params` encapsulation key `ek` with `seed` (m):
/// writes the ciphertext (`ct` of the parameter set's length) and the
/// shared secret.
pub fn encapsulate(
    params: MlKemParams,
    ek: &[u8],
    seed: &[u8; ENCAPS_SEED_LEN],
    ct: &mut [u8],
    ss: &mut [u8; SS_LEN],
) -> Result<(), MlKemError> {
    if ek.len() != params.ek_len() {
        return Err(MlKemError::BadKey);
    }
    if ct.len() != params.ct_len() {
        return Err(MlKemError::BufferLength);
    }
    // SAFETY: `ek` is `ek.len()` readable bytes; the result is null or an owned EVP_PKEY.
    let raw = unsafe { sys::EVP_PKEY_kem_new_raw_public_key(params.nid(), ek.as_ptr(), ek.len()) };
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
    if ok != 1 || ct_len != params.ct_len() || ss_len != SS_LEN {
        return Err(MlKemError::Library("encapsulation"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [MlKemParams; 3] = [MlKemParams::MlKem512, MlKemParams::MlKem768, MlKemParams::MlKem1024];

    #[test]
    fn same_seeds_same_keys_and_ciphertexts() {
        for params in ALL {
            let (mut dk1, mut ek1) = (vec![0u8; params.dk_len()], vec![0u8; params.ek_len()]);
            let (mut dk2, mut ek2) = (dk1.clone(), ek1.clone());
            keypair(params, &[7; 64], &mut dk1, &mut ek1).unwrap();
            keypair(params, &[7; 64], &mut dk2, &mut ek2).unwrap();
            assert_eq!((&dk1, &ek1), (&dk2, &ek2), "{params:?}");
            keypair(params, &[8; 64], &mut dk2, &mut ek2).unwrap();
            assert_ne!(ek1, ek2);
            let (mut ct1, mut ct2) = (vec![0u8; params.ct_len()], vec![0u8; params.ct_len()]);
            let (mut ss1, mut ss2) = ([0u8; SS_LEN], [0u8; SS_LEN]);
            encapsulate(params, &ek1, &[1; 32], &mut ct1, &mut ss1).unwrap();
            encapsulate(params, &ek1, &[1; 32], &mut ct2, &mut ss2).unwrap();
            assert_eq!((ct1, ss1), (ct2.clone(), ss2));
            assert_eq!(
                encapsulate(params, &ek1[1..], &[1; 32], &mut ct2, &mut ss2),
                Err(MlKemError::BadKey)
            );
            assert_eq!(
                encapsulate(params, &ek1, &[1; 32], &mut ct2[1..], &mut ss2),
                Err(MlKemError::BufferLength)
            );
            assert_eq!(
                keypair(params, &[7; 64], &mut dk1[1..], &mut ek1),
                Err(MlKemError::BufferLength)
            );
        }
    }
}

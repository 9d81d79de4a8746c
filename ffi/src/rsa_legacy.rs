//! RSA PKCS#1 v1.5 signatures aws-lc-rs deliberately does not make: over
//! SHA-1, IKEv2 authentication method 1 (RFC 7296 §3.8, "RSA Digital
//! Signature"), which peers without RFC 7427 still require; and over raw
//! data without a DigestInfo, the RSA signatures of IKEv1 Main Mode (RFC
//! 2409 §5.1 signs HASH_I/HASH_R as they are, strongSwan's
//! `RSA_EMSA_PKCS1_NULL`), made and checked here. A small safe wrapper over
//! aws-lc's `RSA_sign`, `RSA_sign_raw` and `RSA_verify_raw`; not behind the
//! `dpdk` feature.

use aws_lc_sys as sys;

/// Why a signature could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RsaSignError {
    /// The key is not a PKCS#8 RSA private key.
    #[error("not a PKCS#8 RSA private key")]
    BadKey,
    /// aws-lc refused to sign.
    #[error("RSA_sign failed")]
    SignFailed,
    /// The public key is not a PKCS#1 `RSAPublicKey`.
    #[error("not a PKCS#1 RSA public key")]
    BadPublicKey,
    /// The data to sign does not fit the modulus with PKCS#1 v1.5 padding.
    #[error("{len} bytes do not fit a PKCS#1 v1.5 signature of a {modulus}-byte modulus")]
    TooLong {
        /// Length of the data.
        len: usize,
        /// Modulus length in bytes.
        modulus: usize,
    },
}

/// The largest modulus accepted, in bytes (16,384 bits).
const MAX_MODULUS: usize = 2048;

/// Owns an `EVP_PKEY` and frees it on drop.
struct Pkey(*mut sys::EVP_PKEY);

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_parse_private_key, is non-null and is freed once.
        unsafe { sys::EVP_PKEY_free(self.0) }
    }
}

/// Owns an `RSA` reference and releases it on drop.
struct Rsa(*mut sys::RSA);

impl Drop for Rsa {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_PKEY_get1_RSA (which took a reference), non-null, released once.
        unsafe { sys::RSA_free(self.0) }
    }
}

/// The RSA key of a PKCS#8 (or PKCS#1) DER private key, and its modulus length.
fn private_key(der: &[u8]) -> Result<(Rsa, usize), RsaSignError> {
    // SAFETY: CBS is a plain struct of a pointer and a length; CBS_init fills it to
    // borrow `der`, which outlives every use of `cbs` below.
    let mut cbs: sys::CBS = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    unsafe { sys::CBS_init(&mut cbs, der.as_ptr(), der.len()) };
    // SAFETY: `cbs` borrows valid memory; the result is null or an owned EVP_PKEY.
    let pkey = unsafe { sys::EVP_parse_private_key(&mut cbs) };
    let rsa = if pkey.is_null() {
        // SAFETY: reads `der.len()` bytes of a valid slice; the result is null or an owned RSA.
        let rsa = unsafe { sys::RSA_private_key_from_bytes(der.as_ptr(), der.len()) };
        if rsa.is_null() {
            return Err(RsaSignError::BadKey);
        }
        Rsa(rsa)
    } else {
        let pkey = Pkey(pkey);
        // SAFETY: `pkey.0` is a valid EVP_PKEY; the result is null (not RSA) or a new reference.
        let rsa = unsafe { sys::EVP_PKEY_get1_RSA(pkey.0) };
        if rsa.is_null() {
            return Err(RsaSignError::BadKey);
        }
        Rsa(rsa)
    };
    // SAFETY: `rsa.0` is a valid RSA key.
    let size = unsafe { sys::RSA_size(rsa.0) } as usize;
    if size == 0 || size > MAX_MODULUS {
        return Err(RsaSignError::BadKey);
    }
    Ok((rsa, size))
}

/// Signs SHA-1(`msg`) with PKCS#1 v1.5 padding using the RSA key in `pkcs8` (DER).
pub fn sign_pkcs1_sha1(pkcs8: &[u8], msg: &[u8]) -> Result<Vec<u8>, RsaSignError> {
    let mut digest = [0u8; 20];
    // SAFETY: SHA1 reads `msg.len()` bytes from a valid slice and writes 20 bytes into `digest`.
    unsafe { sys::SHA1(msg.as_ptr(), msg.len(), digest.as_mut_ptr()) };
    let (rsa, size) = private_key(pkcs8)?;
    let mut out = vec![0u8; size];
    let mut out_len: std::os::raw::c_uint = 0;
    // SAFETY: `digest` is 20 readable bytes, `out` has RSA_size writable bytes as RSA_sign
    // requires, `out_len` is a valid pointer, `rsa.0` a valid key.
    let ok = unsafe {
        sys::RSA_sign(
            sys::NID_sha1,
            digest.as_ptr(),
            digest.len(),
            out.as_mut_ptr(),
            &mut out_len,
            rsa.0,
        )
    };
    if ok != 1 || out_len as usize > size {
        return Err(RsaSignError::SignFailed);
    }
    out.truncate(out_len as usize);
    Ok(out)
}

/// Signs `data` as it is (no hash, no DigestInfo) with PKCS#1 v1.5 type 1
/// padding using the RSA key in `key_der` (PKCS#8 or PKCS#1 DER).
pub fn sign_pkcs1_raw(key_der: &[u8], data: &[u8]) -> Result<Vec<u8>, RsaSignError> {
    let (rsa, size) = private_key(key_der)?;
    // PKCS#1 v1.5 needs 11 bytes of padding.
    if data.len() + 11 > size {
        return Err(RsaSignError::TooLong {
            len: data.len(),
            modulus: size,
        });
    }
    let mut out = vec![0u8; size];
    let mut out_len: usize = 0;
    // SAFETY: `out` has `size` (= RSA_size) writable bytes, `data` is readable for its
    // length, `out_len` is a valid pointer, `rsa.0` a valid private key.
    let ok = unsafe {
        sys::RSA_sign_raw(
            rsa.0,
            &mut out_len,
            out.as_mut_ptr(),
            out.len(),
            data.as_ptr(),
            data.len(),
            sys::RSA_PKCS1_PADDING,
        )
    };
    if ok != 1 || out_len > size {
        return Err(RsaSignError::SignFailed);
    }
    out.truncate(out_len);
    Ok(out)
}

/// Whether `signature` is a PKCS#1 v1.5 type 1 signature of `data` as it is
/// (no DigestInfo) by the PKCS#1 `RSAPublicKey` DER `public_key`. The
/// recovered data is compared in constant time.
pub fn verify_pkcs1_raw(public_key: &[u8], data: &[u8], signature: &[u8]) -> Result<bool, RsaSignError> {
    // SAFETY: reads `public_key.len()` bytes of a valid slice; the result is null or an owned RSA.
    let rsa = unsafe { sys::RSA_public_key_from_bytes(public_key.as_ptr(), public_key.len()) };
    if rsa.is_null() {
        return Err(RsaSignError::BadPublicKey);
    }
    let rsa = Rsa(rsa);
    // SAFETY: `rsa.0` is a valid RSA key.
    let size = unsafe { sys::RSA_size(rsa.0) } as usize;
    if size == 0 || size > MAX_MODULUS {
        return Err(RsaSignError::BadPublicKey);
    }
    if signature.len() != size {
        return Ok(false);
    }
    let mut out = vec![0u8; size];
    let mut out_len: usize = 0;
    // SAFETY: `out` has RSA_size writable bytes, `signature` is readable for its length,
    // `out_len` is a valid pointer, `rsa.0` a valid public key.
    let ok = unsafe {
        sys::RSA_verify_raw(
            rsa.0,
            &mut out_len,
            out.as_mut_ptr(),
            out.len(),
            signature.as_ptr(),
            signature.len(),
            sys::RSA_PKCS1_PADDING,
        )
    };
    if ok != 1 || out_len != data.len() {
        return Ok(false);
    }
    // SAFETY: CRYPTO_memcmp reads `data.len()` bytes of two valid buffers of at least that length.
    let diff = unsafe { sys::CRYPTO_memcmp(out.as_ptr().cast(), data.as_ptr().cast(), data.len()) };
    Ok(diff == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_an_rsa_key() {
        assert_eq!(sign_pkcs1_sha1(b"", b"x"), Err(RsaSignError::BadKey));
        assert_eq!(
            sign_pkcs1_sha1(&[0x30, 0x03, 0x02, 0x01, 0x00], b"x"),
            Err(RsaSignError::BadKey)
        );
        assert_eq!(sign_pkcs1_raw(b"", b"x"), Err(RsaSignError::BadKey));
        assert_eq!(verify_pkcs1_raw(b"", b"x", b"y"), Err(RsaSignError::BadPublicKey));
    }
}

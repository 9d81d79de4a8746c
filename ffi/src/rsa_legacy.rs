//! RSA PKCS#1 v1.5 signatures over SHA-1: IKEv2 authentication method 1
//! (RFC 7296 §3.8, "RSA Digital Signature"), which peers without RFC 7427
//! still require and which aws-lc-rs deliberately does not create. A small
//! safe wrapper over aws-lc's `RSA_sign`; not behind the `dpdk` feature.

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
}

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

/// Signs SHA-1(`msg`) with PKCS#1 v1.5 padding using the RSA key in `pkcs8` (DER).
pub fn sign_pkcs1_sha1(pkcs8: &[u8], msg: &[u8]) -> Result<Vec<u8>, RsaSignError> {
    let mut digest = [0u8; 20];
    // SAFETY: SHA1 reads `msg.len()` bytes from a valid slice and writes 20 bytes into `digest`.
    unsafe { sys::SHA1(msg.as_ptr(), msg.len(), digest.as_mut_ptr()) };
    // SAFETY: CBS is a plain struct of a pointer and a length; CBS_init fills it to
    // borrow `pkcs8`, which outlives every use of `cbs` below.
    let mut cbs: sys::CBS = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    unsafe { sys::CBS_init(&mut cbs, pkcs8.as_ptr(), pkcs8.len()) };
    // SAFETY: `cbs` borrows valid memory; the result is null or an owned EVP_PKEY.
    let pkey = unsafe { sys::EVP_parse_private_key(&mut cbs) };
    if pkey.is_null() {
        return Err(RsaSignError::BadKey);
    }
    let pkey = Pkey(pkey);
    // SAFETY: `pkey.0` is a valid EVP_PKEY; the result is null (not RSA) or a new reference.
    let rsa = unsafe { sys::EVP_PKEY_get1_RSA(pkey.0) };
    if rsa.is_null() {
        return Err(RsaSignError::BadKey);
    }
    let rsa = Rsa(rsa);
    // SAFETY: `rsa.0` is a valid RSA key.
    let size = unsafe { sys::RSA_size(rsa.0) } as usize;
    if size == 0 || size > 2048 {
        return Err(RsaSignError::BadKey);
    }
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
    }
}

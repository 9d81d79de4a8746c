//! An AEAD key context stored inline in its owner (the SA entry).
//!
//! aws-lc-rs keeps each key's `EVP_AEAD_CTX` (AES round keys and GHASH
//! powers, ~570 bytes) in its own heap allocation behind a private pointer, so
//! a packet of a cold SA pays a second dependent cache/TLB miss after the SA
//! entry, and the worker cannot prefetch it. [`InlineAeadCtx`] holds the
//! `EVP_AEAD_CTX` by value (through `aws-lc-sys`, the same library aws-lc-rs
//! uses), so the key schedule sits at a fixed offset inside the SA entry and
//! [`InlineAeadCtx::prefetch`] can pull it in ahead of use.
//!
//! Moving the context is sound: the AEADs used here (AES-GCM, ChaCha20-Poly1305)
//! keep their whole state inside `EVP_AEAD_CTX::state` with no pointer into
//! it (aws-lc copies them with `aead_ctx_copy_state_trivial`, a plain
//! `memcpy`); AES-GCM-SIV, whose state depends on its address, is not offered.

use aws_lc_sys as aws_lc;
use zeroize::Zeroize;

/// AEADs that can be held in an [`InlineAeadCtx`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlineAead {
    /// AES-128-GCM, 16-byte tag.
    Aes128Gcm,
    /// AES-256-GCM, 16-byte tag.
    Aes256Gcm,
    /// ChaCha20-Poly1305, 16-byte tag.
    ChaCha20Poly1305,
}

/// Tag length of every [`InlineAead`].
pub const TAG_LEN: usize = 16;
/// Nonce length of every [`InlineAead`].
pub const NONCE_LEN: usize = 12;

/// aws-lc refused a key or an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("aws-lc AEAD operation failed")]
pub struct AeadCtxError;

/// A keyed AEAD context held by value (not padded to a cache line: with
/// 100,000s of SAs, memory matters more than one extra line to prefetch).
#[repr(C)]
pub struct InlineAeadCtx {
    ctx: aws_lc::EVP_AEAD_CTX,
}

// SAFETY: after initialisation the context is only read (seal/open take
// `*const EVP_AEAD_CTX`; aws-lc's AEAD state is immutable once keyed), so it
// may be shared and sent between threads like aws-lc-rs's own `LessSafeKey`.
unsafe impl Send for InlineAeadCtx {}
// SAFETY: see `Send`: concurrent seal/open calls only read the context.
unsafe impl Sync for InlineAeadCtx {}

impl InlineAeadCtx {
    /// Keys a context; `key` must be 16 (AES-128), 32 (AES-256, ChaCha20) bytes.
    pub fn new(alg: InlineAead, key: &[u8]) -> Result<Self, AeadCtxError> {
        let need = match alg {
            InlineAead::Aes128Gcm => 16,
            InlineAead::Aes256Gcm | InlineAead::ChaCha20Poly1305 => 32,
        };
        if key.len() != need {
            return Err(AeadCtxError);
        }
        // SAFETY: all-zero bytes are the state EVP_AEAD_CTX_zero produces
        // (null `aead`, zeroed union), valid input for EVP_AEAD_CTX_init.
        let ctx = unsafe { std::mem::zeroed() };
        let mut me = Self { ctx };
        // SAFETY: the EVP_aead_* functions return pointers to static tables;
        // `me.ctx` is a zeroed context and `key` is valid for `key.len()` bytes.
        let ok = unsafe {
            let aead = match alg {
                InlineAead::Aes128Gcm => aws_lc::EVP_aead_aes_128_gcm(),
                InlineAead::Aes256Gcm => aws_lc::EVP_aead_aes_256_gcm(),
                InlineAead::ChaCha20Poly1305 => aws_lc::EVP_aead_chacha20_poly1305(),
            };
            aws_lc::EVP_AEAD_CTX_init(
                &mut me.ctx,
                aead,
                key.as_ptr(),
                key.len(),
                TAG_LEN,
                std::ptr::null_mut(),
            )
        };
        if ok != 1 {
            // Drop runs cleanup, which accepts a context whose init failed.
            return Err(AeadCtxError);
        }
        Ok(me)
    }

    /// Encrypts `in_out` in place and writes the tag to `tag`.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), AeadCtxError> {
        let mut tag_len = 0usize;
        let (data, len) = (in_out.as_mut_ptr(), in_out.len());
        // SAFETY: the context is keyed (constructor); aws-lc allows `out` to
        // equal `in` exactly (in-place); every pointer is valid for its length
        // and `tag` has room for TAG_LEN bytes.
        let ok = unsafe {
            aws_lc::EVP_AEAD_CTX_seal_scatter(
                &self.ctx,
                data,
                tag.as_mut_ptr(),
                &mut tag_len,
                TAG_LEN,
                nonce.as_ptr(),
                NONCE_LEN,
                data,
                len,
                std::ptr::null(),
                0,
                aad.as_ptr(),
                aad.len(),
            )
        };
        if ok == 1 && tag_len == TAG_LEN {
            Ok(())
        } else {
            Err(AeadCtxError)
        }
    }

    /// Verifies `tag` (in constant time, inside aws-lc) and decrypts `in_out`
    /// in place. On failure `in_out` must be treated as garbage.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadCtxError> {
        let (data, len) = (in_out.as_mut_ptr(), in_out.len());
        // SAFETY: as in `seal_in_place`; open_gather also permits out == in.
        let ok = unsafe {
            aws_lc::EVP_AEAD_CTX_open_gather(
                &self.ctx,
                data,
                nonce.as_ptr(),
                NONCE_LEN,
                data,
                len,
                tag.as_ptr(),
                TAG_LEN,
                aad.as_ptr(),
                aad.len(),
            )
        };
        if ok == 1 { Ok(()) } else { Err(AeadCtxError) }
    }

    /// Starts loading the whole context into the cache (a hint; no effect on results).
    #[inline]
    pub fn prefetch(&self) {
        crate::prefetch::prefetch_bytes(self as *const Self as *const u8, std::mem::size_of::<Self>());
    }
}

impl Drop for InlineAeadCtx {
    fn drop(&mut self) {
        // SAFETY: the context is zeroed or keyed; cleanup handles both.
        unsafe { aws_lc::EVP_AEAD_CTX_cleanup(&mut self.ctx) };
        // SAFETY: the union's bytes are plain data; nothing reads them after this.
        let state = unsafe { &mut self.ctx.state.opaque };
        state.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::aead;

    fn both(alg: InlineAead, key: &[u8]) {
        let ring_alg = match alg {
            InlineAead::Aes128Gcm => &aead::AES_128_GCM,
            InlineAead::Aes256Gcm => &aead::AES_256_GCM,
            InlineAead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        let reference = aead::LessSafeKey::new(aead::UnboundKey::new(ring_alg, key).unwrap());
        // Moved after keying, as it is when it goes into an SA entry.
        let ctx = Box::new(InlineAeadCtx::new(alg, key).unwrap());
        let ctx = *ctx;
        let nonce = [9u8; NONCE_LEN];
        let aad = [1u8, 2, 3, 4, 5, 6, 7, 8];
        for len in [0usize, 1, 15, 16, 17, 64, 1420] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = plain.clone();
            let mut tag = [0u8; TAG_LEN];
            ctx.seal_in_place(&nonce, &aad, &mut ours, &mut tag).unwrap();
            let mut theirs = plain.clone();
            let t = reference
                .seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(&aad),
                    &mut theirs,
                )
                .unwrap();
            assert_eq!(ours, theirs);
            assert_eq!(&tag[..], t.as_ref());
            let mut back = ours.clone();
            ctx.open_in_place(&nonce, &aad, &mut back, &tag).unwrap();
            assert_eq!(back, plain);
            let mut bad = tag;
            bad[0] ^= 1;
            let mut back = ours.clone();
            assert_eq!(ctx.open_in_place(&nonce, &aad, &mut back, &bad), Err(AeadCtxError));
        }
    }

    #[test]
    fn matches_aws_lc_rs() {
        both(InlineAead::Aes128Gcm, &[7u8; 16]);
        both(InlineAead::Aes256Gcm, &[8u8; 32]);
        both(InlineAead::ChaCha20Poly1305, &[9u8; 32]);
    }

    #[test]
    fn rejects_wrong_key_length() {
        assert!(InlineAeadCtx::new(InlineAead::Aes128Gcm, &[0u8; 32]).is_err());
        assert!(InlineAeadCtx::new(InlineAead::Aes256Gcm, &[0u8; 16]).is_err());
    }

    #[test]
    fn shared_across_threads() {
        let ctx = std::sync::Arc::new(InlineAeadCtx::new(InlineAead::Aes128Gcm, &[3u8; 16]).unwrap());
        let tags: Vec<[u8; TAG_LEN]> = (0..2)
            .map(|_| {
                let c = ctx.clone();
                std::thread::spawn(move || {
                    let mut data = [5u8; 100];
                    let mut tag = [0u8; TAG_LEN];
                    c.seal_in_place(&[0u8; NONCE_LEN], &[], &mut data, &mut tag).unwrap();
                    tag
                })
            })
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(tags[0], tags[1]);
    }
}

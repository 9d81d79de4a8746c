//! AES-GCM on intel-ipsec-mb's direct API (the functions behind
//! `IMB_AESxxx_GCM_ENC/DEC`, resolved once per key by `csrc/imb.c` and called
//! from here), on caller buffers and the calling core, with no DPDK
//! device. Decryption gets the tag computed over the ciphertext back from
//! intel-ipsec-mb and compares it here in constant time, where DPDK's
//! ipsec_mb PMDs use `memcmp`.

use crate::cpu_crypto::CpuCryptoError;
use crate::error::{Error, Result};
use crate::sys;
use std::ptr::NonNull;

/// AES-GCM nonce length (salt || IV in ESP).
pub const IMB_GCM_NONCE_LEN: usize = 12;
/// AES-GCM tag (ICV) length.
pub const IMB_GCM_TAG_LEN: usize = 16;

/// The key schedule of one AES-128/256-GCM key in intel-ipsec-mb's layout,
/// held in C memory that is wiped (`imb_clear_mem`) when dropped. Never
/// printed: `Debug` shows the key size only.
///
/// Two words (it lives inline in each SA): the key schedule, which is also
/// the key data intel-ipsec-mb's functions take (first member of the C
/// struct, checked at setup), and the functions of its key size.
pub struct ImbGcm {
    raw: NonNull<sys::ironsa_imb_gcm>,
    fns: &'static GcmFns,
}

/// intel-ipsec-mb's functions for one key size, resolved once per process
/// (the C side's manager is process-wide).
struct GcmFns {
    enc: GcmFn,
    dec: GcmFn,
    key_len: usize,
}

static GCM128_FNS: std::sync::OnceLock<GcmFns> = std::sync::OnceLock::new();
static GCM256_FNS: std::sync::OnceLock<GcmFns> = std::sync::OnceLock::new();

/// intel-ipsec-mb's one-shot AES-GCM function (`aes_gcm_enc_dec_t`): key
/// data, context, out, in, len, iv, aad, aad_len, tag, tag_len.
type GcmFn = unsafe extern "C" fn(
    *const std::ffi::c_void,
    *mut std::ffi::c_void,
    *mut u8,
    *const u8,
    u64,
    *const u8,
    *const u8,
    u64,
    *mut u8,
    u64,
);

/// Room for intel-ipsec-mb's `struct gcm_context_data` (88 bytes, 8-byte
/// aligned in 1.x; checked against the C side's `sizeof` and `alignof` at
/// key setup). The GCM functions write it before reading it, so it is left
/// uninitialised.
#[repr(C, align(16))]
struct GcmCtx(std::mem::MaybeUninit<[u8; GCM_CTX_MAX]>);

const GCM_CTX_MAX: usize = 128;

impl GcmCtx {
    #[inline(always)]
    fn new() -> Self {
        GcmCtx(std::mem::MaybeUninit::uninit())
    }
}

// SAFETY: the key schedule is written once in `new` and only read afterwards;
// intel-ipsec-mb's direct GCM functions keep per-call state in a context on
// the caller's stack, so concurrent calls on one key are sound.
unsafe impl Send for ImbGcm {}
// SAFETY: as for Send: shared use only reads the key schedule.
unsafe impl Sync for ImbGcm {}

impl std::fmt::Debug for ImbGcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImbGcm")
            .field("key_bits", &(self.fns.key_len * 8))
            .finish()
    }
}

impl Drop for ImbGcm {
    fn drop(&mut self) {
        // SAFETY: `raw` came from ironsa_imb_gcm_new and is freed only here.
        unsafe { sys::ironsa_imb_gcm_free(self.raw.as_ptr()) }
    }
}

/// Whether the tag intel-ipsec-mb computed equals the received ICV, compared
/// in constant time (an ICV of another length never matches): the two
/// 16-byte values are XORed as whole words and only the outcome (public)
/// is branched on, so the time taken does not depend on where they differ.
#[inline]
pub(crate) fn icv_matches(computed: &[u8; IMB_GCM_TAG_LEN], received: &[u8]) -> bool {
    let Ok(received) = <&[u8; IMB_GCM_TAG_LEN]>::try_from(received) else {
        return false;
    };
    let diff = u128::from_ne_bytes(*computed) ^ u128::from_ne_bytes(*received);
    // The difference is opaque to the optimiser: no early exit is derived from it.
    std::hint::black_box(diff) == 0
}

impl ImbGcm {
    /// Expands a 16-byte (AES-128) or 32-byte (AES-256) key.
    pub fn new(key: &[u8]) -> Result<ImbGcm> {
        if key.len() != 16 && key.len() != 32 {
            return Err(Error::InvalidArgument(format!(
                "AES-GCM key of {} bytes (16 or 32)",
                key.len()
            )));
        }
        // SAFETY: `key` is valid for key.len() bytes (16 or 32) during the
        // call; the C side copies the expanded key into its own allocation.
        let raw = unsafe { sys::ironsa_imb_gcm_new(key.as_ptr(), key.len() as u32) };
        let Some(raw) = NonNull::new(raw) else {
            return Err(Error::Unsupported(format!(
                "intel-ipsec-mb AES-GCM key setup failed: {}",
                std::io::Error::last_os_error()
            )));
        };
        let mut direct = sys::ironsa_imb_gcm_direct::default();
        // SAFETY: `raw` is a live key schedule and `direct` a writable struct.
        unsafe { sys::ironsa_imb_gcm_direct(raw.as_ptr(), &mut direct) };
        let fits = direct.ctx_size as usize <= GCM_CTX_MAX
            && direct.ctx_align as usize <= std::mem::align_of::<GcmCtx>()
            && std::ptr::eq(direct.key, raw.as_ptr().cast());
        match (direct.enc, direct.dec) {
            (Some(enc), Some(dec)) if fits => {
                let fns = if key.len() == 16 { &GCM128_FNS } else { &GCM256_FNS };
                // Same signature as ironsa_imb_gcm_fn: no conversion.
                let fns = fns.get_or_init(|| GcmFns {
                    enc,
                    dec,
                    key_len: key.len(),
                });
                Ok(ImbGcm { raw, fns })
            }
            _ => {
                // SAFETY: `raw` came from ironsa_imb_gcm_new and is not used again.
                unsafe { sys::ironsa_imb_gcm_free(raw.as_ptr()) };
                Err(Error::Unsupported(format!(
                    "intel-ipsec-mb AES-GCM: no direct functions or a context of {} bytes (align {})",
                    direct.ctx_size, direct.ctx_align
                )))
            }
        }
    }

    /// Key length in bytes (16 or 32).
    pub fn key_len(&self) -> usize {
        self.fns.key_len
    }

    /// Encrypts `data` in place and returns the ICV.
    #[inline]
    pub fn seal(&self, nonce: &[u8; IMB_GCM_NONCE_LEN], aad: &[u8], data: &mut [u8]) -> [u8; IMB_GCM_TAG_LEN] {
        let mut tag = [0u8; IMB_GCM_TAG_LEN];
        self.seal_into(nonce, aad, data, &mut tag);
        tag
    }

    /// Encrypts `data` in place and writes the ICV into `icv` (e.g. straight
    /// into the packet).
    #[inline]
    pub fn seal_into(
        &self,
        nonce: &[u8; IMB_GCM_NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        icv: &mut [u8; IMB_GCM_TAG_LEN],
    ) {
        let mut ctx = GcmCtx::new();
        let data_ptr = data.as_mut_ptr();
        // SAFETY: the key data (`raw`) is alive while `self` is; the context has the
        // size and alignment checked in `new` (the call initialises it);
        // nonce is 12 bytes, aad and data are valid for their lengths (data
        // writable, in place is supported), icv has the 16 bytes written.
        unsafe {
            (self.fns.enc)(
                self.raw.as_ptr().cast(),
                ctx.0.as_mut_ptr().cast(),
                data_ptr,
                data_ptr,
                data.len() as u64,
                nonce.as_ptr(),
                aad.as_ptr(),
                aad.len() as u64,
                icv.as_mut_ptr(),
                IMB_GCM_TAG_LEN as u64,
            )
        };
    }

    /// Verifies `icv` over `aad` and `data` (constant-time comparison) and
    /// decrypts `data` in place. On [`CpuCryptoError::AuthFailed`] `data` is
    /// the ciphertext again (re-encrypted with the same keystream), and an
    /// ICV that is not 16 bytes long is refused before `data` is touched.
    #[inline]
    pub fn open(
        &self,
        nonce: &[u8; IMB_GCM_NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        icv: &[u8],
    ) -> std::result::Result<(), CpuCryptoError> {
        let Ok(icv) = <&[u8; IMB_GCM_TAG_LEN]>::try_from(icv) else {
            return Err(Error::InvalidArgument(format!("ICV of {} bytes (16)", icv.len())).into());
        };
        if self.open_icv(nonce, aad, data, icv) {
            Ok(())
        } else {
            Err(CpuCryptoError::AuthFailed)
        }
    }

    /// [`ImbGcm::open`] with a 16-byte ICV: `true` when it verified (constant-time
    /// comparison) and `data` is decrypted in place; `false` leaves `data` the
    /// ciphertext it was (re-encrypted with the same keystream).
    #[inline]
    #[must_use]
    pub fn open_icv(
        &self,
        nonce: &[u8; IMB_GCM_NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        icv: &[u8; IMB_GCM_TAG_LEN],
    ) -> bool {
        let mut ctx = GcmCtx::new();
        let mut computed = std::mem::MaybeUninit::<[u8; IMB_GCM_TAG_LEN]>::uninit();
        let data_ptr = data.as_mut_ptr();
        // SAFETY: as in `seal_into`; the call decrypts data in place and
        // writes the 16-byte tag computed over the ciphertext into `computed`.
        let computed = unsafe {
            (self.fns.dec)(
                self.raw.as_ptr().cast(),
                ctx.0.as_mut_ptr().cast(),
                data_ptr,
                data_ptr,
                data.len() as u64,
                nonce.as_ptr(),
                aad.as_ptr(),
                aad.len() as u64,
                computed.as_mut_ptr().cast(),
                IMB_GCM_TAG_LEN as u64,
            );
            computed.assume_init()
        };
        if icv_matches(&computed, icv) {
            return true;
        }
        self.forgery_restore(nonce, aad, data);
        false
    }

    /// CTR mode: encrypting the plaintext again restores the ciphertext, so
    /// a forgery leaves the packet as it came. Off the hot path.
    #[cold]
    #[inline(never)]
    fn forgery_restore(&self, nonce: &[u8; IMB_GCM_NONCE_LEN], aad: &[u8], data: &mut [u8]) {
        self.seal(nonce, aad, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn icv_comparison_is_exact() {
        let tag: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        assert!(icv_matches(&tag, &tag));
        for byte in 0..16 {
            for bit in 0..8 {
                let mut other = tag;
                other[byte] ^= 1 << bit;
                assert!(!icv_matches(&tag, &other), "flip of bit {bit} in byte {byte} matched");
            }
        }
        assert!(!icv_matches(&tag, &tag[..15]), "truncated ICV matched");
        assert!(!icv_matches(&tag, &[]), "empty ICV matched");
        assert!(
            !icv_matches(&tag, &[tag.as_slice(), &[0]].concat()),
            "longer ICV matched"
        );
    }

    /// McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 2
    /// (AES-128) and 14 (AES-256): zero key, IV and one zero block.
    #[test]
    fn gcm_spec_vectors() {
        for (key_len, ct, tag) in [
            (
                16,
                "0388dace60b6a392f328c2b971b2fe78",
                "ab6e47d42cec13bdf53a67b21257bddf",
            ),
            (
                32,
                "cea7403d4d606b6e074ec5d3baf39d18",
                "d0d1c8a799996bf0265b98b5d48ab919",
            ),
        ] {
            let g = ImbGcm::new(&vec![0; key_len]).unwrap();
            let mut data = [0u8; 16];
            let t = g.seal(&[0; 12], &[], &mut data);
            assert_eq!((data.to_vec(), t.to_vec()), (hex(ct), hex(tag)), "key {key_len}");
            g.open(&[0; 12], &[], &mut data, &t).unwrap();
            assert_eq!(data, [0; 16]);
        }
    }

    #[test]
    fn same_bytes_as_aws_lc_and_forgeries_leave_data_untouched() {
        for key_len in [16usize, 32] {
            let key: Vec<u8> = (0..key_len as u8).map(|i| i.wrapping_mul(29) ^ 0xa5).collect();
            let alg = if key_len == 16 { &AES_128_GCM } else { &AES_256_GCM };
            let aws = LessSafeKey::new(UnboundKey::new(alg, &key).unwrap());
            let g = ImbGcm::new(&key).unwrap();
            assert_eq!(format!("{g:?}"), format!("ImbGcm {{ key_bits: {} }}", key_len * 8));
            for len in [0usize, 1, 15, 16, 17, 64, 255, 1420, 1500] {
                for aad_len in [8usize, 12] {
                    let nonce: [u8; 12] = std::array::from_fn(|i| (len + i * 5) as u8);
                    let aad: Vec<u8> = (0..aad_len as u8).map(|i| i ^ len as u8).collect();
                    let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                    let mut ours = plain.clone();
                    let icv = g.seal(&nonce, &aad, &mut ours);
                    let mut theirs = plain.clone();
                    let tag = aws
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(&aad[..]),
                            &mut theirs,
                        )
                        .unwrap();
                    assert_eq!((&ours, &icv[..]), (&theirs, tag.as_ref()), "seal {len} B key {key_len}");
                    for byte in 0..16 {
                        for bit in 0..8 {
                            let mut forged = icv;
                            forged[byte] ^= 1 << bit;
                            let mut data = ours.clone();
                            assert!(matches!(
                                g.open(&nonce, &aad, &mut data, &forged),
                                Err(CpuCryptoError::AuthFailed)
                            ));
                            assert_eq!(data, ours, "forgery changed the data");
                        }
                    }
                    let mut data = ours.clone();
                    assert!(matches!(
                        g.open(&nonce, &aad, &mut data, &icv[..12]),
                        Err(CpuCryptoError::Dpdk(Error::InvalidArgument(_)))
                    ));
                    assert_eq!(data, ours, "short ICV changed the data");
                    if len > 0 {
                        let mut tampered = ours.clone();
                        tampered[len / 2] ^= 1;
                        let before = tampered.clone();
                        assert!(g.open(&nonce, &aad, &mut tampered, &icv).is_err());
                        assert_eq!(tampered, before, "tampered ciphertext changed");
                    }
                    g.open(&nonce, &aad, &mut data, &icv).unwrap();
                    assert_eq!(data, plain, "open {len} B key {key_len}");
                }
            }
        }
    }

    #[test]
    fn bad_key_lengths_are_refused() {
        for len in [0usize, 15, 24, 33] {
            assert!(matches!(ImbGcm::new(&vec![1; len]), Err(Error::InvalidArgument(_))));
        }
    }
}

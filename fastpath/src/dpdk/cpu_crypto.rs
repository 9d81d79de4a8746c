//! The `cpu-ipsec-mb` crypto mode: AES-GCM SAs run on intel-ipsec-mb's
//! direct API ([`ffi::ImbGcm`]) on the poll loop's own core, with no DPDK
//! crypto device, session or enqueue/dequeue: seal and open are one
//! `IMB_AESxxx_GCM_ENC/DEC` call each on the mbuf data.
//!
//! Only the AEAD moves: ESP framing, replay window, lifetimes and counters
//! stay in the shared ESP code, which calls the SA's [`DirectGcm`] instead
//! of aws-lc (same nonce, AAD and ICV, so the same bytes): the poll loops'
//! workers are `Worker<ImbGcmAead>`, so the call is static. SAs of other
//! algorithms stay on aws-lc.
//!
//! Opening gets the tag intel-ipsec-mb computed back and compares it with
//! the received ICV in constant time ([`ImbGcm::open`]); a forgery leaves
//! the packet and the SA (replay window, counters) as they were. (DPDK's
//! ipsec_mb PMDs compare ICVs with `memcmp`, and sealing through
//! `rte_cryptodev_sym_cpu_crypto_process` on a `crypto_aesni_gcm` vdev
//! costs more than this direct call.)

use super::DpdkError;
use crate::esp::EspError;
use crate::esp::aead::{AeadAccelerator, CipherKeys, DirectGcm, EncAlg, EspCipher};
use ffi::ImbGcm;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One attached SA direction, counted in [`IpsecMbCrypto::attached`]
/// until the SA's cipher (and so its accelerator) goes.
struct Attached(Arc<AtomicUsize>);

impl Attached {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An SA direction on intel-ipsec-mb's direct API: the key schedule (wiped
/// when dropped) and the constant-time ICV check of [`ImbGcm::open`].
pub(crate) struct ImbGcmAead {
    gcm: ImbGcm,
    _attached: Attached,
}

impl DirectGcm for ImbGcmAead {
    /// The ICV goes straight into the packet.
    #[inline(always)]
    fn seal_icv(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &mut [u8; 16]) {
        self.gcm.seal_into(nonce, aad, data, icv);
    }

    #[inline(always)]
    fn open_icv(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &[u8; 16]) -> Result<(), EspError> {
        if self.gcm.open_icv(nonce, aad, data, icv) {
            Ok(())
        } else {
            Err(EspError::IcvFailure)
        }
    }
}

impl AeadAccelerator for ImbGcmAead {
    #[inline]
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), EspError> {
        let icv: &mut [u8; ffi::IMB_GCM_TAG_LEN] =
            icv.try_into().map_err(|_| EspError::Malformed("ICV is not 16 bytes"))?;
        // The tag goes straight into the packet.
        self.seal_icv(nonce, aad, data, icv);
        Ok(())
    }

    #[inline]
    fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), EspError> {
        let Ok(icv) = <&[u8; ffi::IMB_GCM_TAG_LEN]>::try_from(icv) else {
            return Err(EspError::Malformed("intel-ipsec-mb refused the packet"));
        };
        self.open_icv(nonce, aad, data, icv)
    }
}

/// intel-ipsec-mb for the AES-GCM SAs of a `cpu-ipsec-mb` profile.
pub struct IpsecMbCrypto {
    attached: Arc<AtomicUsize>,
}

impl std::fmt::Debug for IpsecMbCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpsecMbCrypto")
            .field("attached", &self.attached.load(Ordering::Relaxed))
            .finish()
    }
}

impl IpsecMbCrypto {
    /// Checks that intel-ipsec-mb runs on this CPU (a key schedule can be
    /// built); a clear error otherwise.
    pub fn new() -> Result<Self, DpdkError> {
        ImbGcm::new(&[0; 16])
            .map_err(|e| DpdkError::Config(format!("cpu-ipsec-mb: intel-ipsec-mb AES-GCM is not usable here: {e}")))?;
        Ok(Self {
            attached: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Hands `cipher` (the SA's, either direction) to intel-ipsec-mb.
    /// `Ok(false)`: the SA stays on aws-lc (not AES-GCM).
    pub fn attach(&self, cipher: &EspCipher, keys: &CipherKeys) -> Result<bool, DpdkError> {
        let Some(key) = aes_gcm_key(keys)? else {
            return Ok(false);
        };
        Ok(cipher.attach_accelerator(Box::new(ImbGcmAead {
            gcm: ImbGcm::new(key)?,
            _attached: Attached::new(&self.attached),
        })))
    }

    /// SA directions currently on intel-ipsec-mb (removed SAs are not counted).
    pub fn attached(&self) -> usize {
        self.attached.load(Ordering::Relaxed)
    }
}

/// The AES key (key material without the 4-byte salt) of an AES-GCM-128/256
/// SA, `None` for other algorithms.
pub(super) fn aes_gcm_key(keys: &CipherKeys) -> Result<Option<&[u8]>, DpdkError> {
    if !matches!(keys.enc, EncAlg::AesGcm16_128 | EncAlg::AesGcm16_256) {
        return Ok(None);
    }
    let material = &keys.enc_key[..];
    if material.len() != keys.enc.key_material_len() {
        return Err(DpdkError::Config(format!(
            "{:?} needs {} bytes of key material, got {}",
            keys.enc,
            keys.enc.key_material_len(),
            material.len()
        )));
    }
    Ok(Some(&material[..material.len() - 4]))
}

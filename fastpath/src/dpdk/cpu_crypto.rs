//! The `cpu-ipsec-mb` crypto mode: AES-GCM SAs run on intel-ipsec-mb on the
//! poll loop's own core with no enqueue/dequeue. Outbound SAs seal through
//! DPDK's synchronous CPU crypto API (`rte_cryptodev_sym_cpu_crypto_process`)
//! on a `crypto_aesni_gcm` / `crypto_aesni_mb` device; inbound SAs open with
//! intel-ipsec-mb's direct API ([`ffi::ImbGcm`]), which hands back the tag it
//! computed so that the ICV is compared here, in constant time.
//!
//! Only the AEAD moves: ESP framing, replay window, lifetimes and counters
//! stay in the shared ESP code, which calls the SA's [`AeadAccelerator`]
//! instead of aws-lc (same nonce, AAD and ICV, so the same bytes). SAs the
//! device cannot take (other algorithms, unsupported sizes) stay on aws-lc.
//!
//! DPDK's ipsec_mb PMDs compare the ICV with `memcmp`, hence no decryption
//! through them: a forged ICV is rejected in constant time and leaves the
//! packet and the SA (replay window, counters) as they were.

use super::DpdkError;
use crate::esp::EspError;
use crate::esp::aead::{AeadAccelerator, AeadJob, CipherKeys, EncAlg, EspCipher};
use crate::sad::Direction;
use ffi::{
    AeadDirection, CpuAeadOp, CpuAeadSession, CpuCryptoError, CpuOpStatus, CryptoDev, Eal, ImbGcm, SessionPool,
    SymSession,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// IV of an RFC 4106 nonce (salt || IV), as the device sees it.
const NONCE_LEN: u16 = 12;
/// AES-GCM ICV length in ESP.
const ICV_LEN: u16 = 16;
/// Descriptors of the (unused) queue pair the device must have.
const QUEUE_DESCRIPTORS: u32 = 128;
/// Sessions in the pool (two per SA pair).
const SESSIONS: u32 = 16384;

/// One attached SA direction, counted in [`CpuCryptoSessions::attached`]
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

/// An outbound SA on intel-ipsec-mb through DPDK's CPU crypto.
struct IpsecMbGcm {
    session: CpuAeadSession,
    _attached: Attached,
}

/// An inbound SA on intel-ipsec-mb's direct API: the ICV is compared in
/// constant time by [`ImbGcm::open`], which restores the ciphertext of a
/// forgery.
struct ImbGcmOpen {
    gcm: ImbGcm,
    _attached: Attached,
}

impl AeadAccelerator for ImbGcmOpen {
    #[inline]
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), EspError> {
        let icv: &mut [u8; ffi::IMB_GCM_TAG_LEN] =
            icv.try_into().map_err(|_| EspError::Malformed("ICV is not 16 bytes"))?;
        *icv = self.gcm.seal(nonce, aad, data);
        Ok(())
    }

    #[inline]
    fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), EspError> {
        self.gcm.open(nonce, aad, data, icv).map_err(|e| match e {
            CpuCryptoError::AuthFailed => EspError::IcvFailure,
            CpuCryptoError::Dpdk(_) => EspError::Malformed("intel-ipsec-mb refused the packet"),
        })
    }
}

impl AeadAccelerator for IpsecMbGcm {
    #[inline]
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), EspError> {
        self.session
            .seal(nonce, aad, data, icv)
            .map_err(|_| EspError::Malformed("CPU crypto refused the packet"))
    }

    #[inline]
    fn open(&self, _nonce: &[u8; 12], _aad: &[u8], _data: &mut [u8], _icv: &[u8]) -> Result<(), EspError> {
        // Attached to outbound SAs only: the PMD's ICV check is not constant-time.
        Err(EspError::Malformed("outbound SA cannot open"))
    }

    fn seal_batch(&self, jobs: &mut [AeadJob<'_>]) {
        self.seal_bulk(jobs);
    }
}

impl IpsecMbGcm {
    /// One `rte_cryptodev_sym_cpu_crypto_process` call (per 64 jobs) for a batch.
    fn seal_bulk(&self, jobs: &mut [AeadJob<'_>]) {
        let mut ops: Vec<CpuAeadOp<'_>> = jobs
            .iter_mut()
            .map(|j| CpuAeadOp {
                iv: &j.nonce,
                aad: &j.aad[..j.aad_len],
                data: &mut *j.data,
                digest: &mut *j.icv,
                status: CpuOpStatus::Pending,
            })
            .collect();
        let run = self.session.seal_bulk(&mut ops);
        let statuses: Vec<CpuOpStatus> = ops.into_iter().map(|o| o.status).collect();
        for (j, st) in jobs.iter_mut().zip(statuses) {
            j.result = match (&run, st) {
                (Ok(()), CpuOpStatus::Done) => Ok(()),
                _ => Err(EspError::Malformed("CPU crypto refused the packet")),
            };
        }
    }
}

/// The CPU-crypto device and the sessions of the SAs it runs.
pub struct CpuCryptoSessions {
    dev: CryptoDev,
    pool: SessionPool,
    attached: Arc<AtomicUsize>,
}

impl std::fmt::Debug for CpuCryptoSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuCryptoSessions")
            .field("device", &self.dev.name())
            .field("attached", &self.attached.load(Ordering::Relaxed))
            .finish()
    }
}

impl CpuCryptoSessions {
    /// Opens crypto device `name` for CPU crypto (configuring and starting it,
    /// once per process); a clear error when it is missing, has no AES-GCM
    /// or no synchronous CPU crypto.
    pub fn open(eal: &Eal, name: &str, pool_name: &str) -> Result<Self, DpdkError> {
        let dev = CryptoDev::by_name(eal, name).map_err(|_| {
            DpdkError::Config(format!(
                "crypto device {name} not found (add --vdev={name} to eal_args; crypto_aesni_gcm or crypto_aesni_mb)"
            ))
        })?;
        if dev.aes_gcm_caps().is_none() {
            return Err(DpdkError::Config(format!("crypto device {name} has no AES-GCM")));
        }
        if !dev.has_cpu_crypto() {
            return Err(DpdkError::Config(format!(
                "crypto device {name} ({}) has no synchronous CPU crypto; cpu-ipsec-mb needs crypto_aesni_gcm or crypto_aesni_mb",
                dev.info().driver
            )));
        }
        let pool = SessionPool::new(eal, pool_name, SESSIONS, &[dev], -1)?;
        // The PMD configures sessions only on a configured device; its one
        // queue pair stays unused (no enqueue/dequeue in this mode).
        dev.configure_and_start(1, QUEUE_DESCRIPTORS, &pool)?;
        Ok(Self {
            dev,
            pool,
            attached: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The crypto device.
    pub fn device(&self) -> CryptoDev {
        self.dev
    }

    /// Hands `cipher` (the SA's) to intel-ipsec-mb: a CPU-crypto session
    /// for an outbound SA, a direct-API key schedule ([`ImbGcm`]) for an
    /// inbound one. `Ok(false)`: the SA stays on aws-lc (not AES-GCM, or
    /// sizes the device does not take; both directions are judged alike).
    pub fn attach(
        &self,
        cipher: &EspCipher,
        direction: Direction,
        esn: bool,
        keys: &CipherKeys,
    ) -> Result<bool, DpdkError> {
        let accelerator: Box<dyn AeadAccelerator> = match direction {
            Direction::Outbound => match self.session(direction, esn, keys)? {
                Some(session) => Box::new(IpsecMbGcm {
                    session,
                    _attached: Attached::new(&self.attached),
                }),
                None => return Ok(false),
            },
            Direction::Inbound => match self.supported_key(esn, keys)? {
                Some(key) => Box::new(ImbGcmOpen {
                    gcm: ImbGcm::new(key)?,
                    _attached: Attached::new(&self.attached),
                }),
                None => return Ok(false),
            },
        };
        Ok(cipher.attach_accelerator(accelerator))
    }

    /// The CPU-crypto session for `keys`, or `None` when the device cannot
    /// take them. Inbound SAs do not use these sessions (see [`Self::attach`]).
    pub fn session(
        &self,
        direction: Direction,
        esn: bool,
        keys: &CipherKeys,
    ) -> Result<Option<CpuAeadSession>, DpdkError> {
        let Some(key) = self.supported_key(esn, keys)? else {
            return Ok(None);
        };
        let aad_len: u16 = if esn { 12 } else { 8 };
        let dir = match direction {
            Direction::Outbound => AeadDirection::Encrypt,
            Direction::Inbound => AeadDirection::Decrypt,
        };
        let s = SymSession::aes_gcm(&self.dev, &self.pool, dir, key, NONCE_LEN, aad_len, ICV_LEN)?;
        Ok(Some(CpuAeadSession::new(&self.dev, s)?))
    }

    /// The AES key (key material without the salt) of an AES-GCM SA whose
    /// sizes the device takes, or `None`.
    fn supported_key<'k>(&self, esn: bool, keys: &'k CipherKeys) -> Result<Option<&'k [u8]>, DpdkError> {
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
        let Some(caps) = self.dev.aes_gcm_caps() else {
            return Ok(None);
        };
        let key = &material[..material.len() - 4];
        let aad_len: u16 = if esn { 12 } else { 8 };
        if !caps.key_size.contains(key.len() as u16)
            || !caps.aad_size.contains(aad_len)
            || !caps.iv_size.contains(NONCE_LEN)
            || !caps.digest_size.contains(ICV_LEN)
        {
            return Ok(None);
        }
        Ok(Some(key))
    }

    /// SA directions currently on CPU crypto (removed SAs are not counted).
    pub fn attached(&self) -> usize {
        self.attached.load(Ordering::Relaxed)
    }
}

//! Synchronous CPU crypto (`rte_cryptodev_sym_cpu_crypto_process`): a crypto
//! device's AEAD run on the calling core, on caller buffers, with no
//! enqueue/dequeue (`crypto_aesni_gcm` and `crypto_aesni_mb` run
//! intel-ipsec-mb; DPDK's ipsec-secgw calls this "cpu-crypto").

use crate::cryptodev::{AeadDirection, CryptoDev, SymSession};
use crate::error::{Error, Result};
use crate::sys;

/// `EBADMSG`: what the PMDs report when an ICV does not verify.
const EBADMSG: i32 = 74;

/// Why a CPU crypto operation produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum CpuCryptoError {
    /// The ICV did not verify (decryption); the data is unspecified.
    #[error("ICV verification failed")]
    AuthFailed,
    /// The arguments or the device were refused.
    #[error(transparent)]
    Dpdk(#[from] Error),
}

/// An AES-GCM session usable with synchronous CPU crypto.
#[derive(Debug, Clone)]
pub struct CpuAeadSession {
    session: SymSession,
    dev: u8,
    iv_len: usize,
    aad_len: usize,
    digest_len: usize,
}

impl CryptoDev {
    /// Whether the device has synchronous CPU crypto (`RTE_CRYPTODEV_FF_SYM_CPU_CRYPTO`).
    pub fn has_cpu_crypto(&self) -> bool {
        // SAFETY: self.id() is a valid device id; the shim only reads its info.
        unsafe { sys::ironsa_cryptodev_has_cpu_crypto(self.id()) == 1 }
    }
}

impl CpuAeadSession {
    /// Uses `session` (created on `dev`) for CPU crypto; fails with
    /// [`Error::Unsupported`] when the device has no CPU crypto.
    pub fn new(dev: &CryptoDev, session: SymSession) -> Result<CpuAeadSession> {
        if session.device() != dev.id() {
            return Err(Error::InvalidArgument(format!(
                "session of device {} used with {}",
                session.device(),
                dev.name()
            )));
        }
        if !dev.has_cpu_crypto() {
            return Err(Error::Unsupported(format!(
                "{} has no synchronous CPU crypto (RTE_CRYPTODEV_FF_SYM_CPU_CRYPTO); use crypto_aesni_gcm or crypto_aesni_mb",
                dev.name()
            )));
        }
        Ok(CpuAeadSession {
            dev: dev.id(),
            iv_len: usize::from(session.iv_len()),
            aad_len: usize::from(session.aad_len()),
            digest_len: usize::from(session.digest_len()),
            session,
        })
    }

    /// Direction of the session.
    pub fn direction(&self) -> AeadDirection {
        self.session.direction()
    }

    fn check(&self, want: AeadDirection, iv: &[u8], aad: &[u8], data: &[u8], digest: &[u8]) -> Result<u32> {
        if self.session.direction() != want {
            return Err(Error::InvalidArgument(format!(
                "{want:?} with a {:?} session",
                self.session.direction()
            )));
        }
        if iv.len() != self.iv_len || aad.len() != self.aad_len || digest.len() != self.digest_len {
            return Err(Error::InvalidArgument(format!(
                "IV/AAD/ICV of {}/{}/{} bytes for a session of {}/{}/{}",
                iv.len(),
                aad.len(),
                digest.len(),
                self.iv_len,
                self.aad_len,
                self.digest_len
            )));
        }
        u32::try_from(data.len()).map_err(|_| Error::InvalidArgument(format!("{} bytes of data", data.len())))
    }

    fn run(&self, data: &mut [u8], len: u32, iv: &[u8], aad: &[u8], digest: *mut u8) -> i32 {
        // The PMD reads IV and AAD through mutable pointers but does not write them.
        let (iv, aad) = (iv.as_ptr().cast_mut(), aad.as_ptr().cast_mut());
        // SAFETY: the session is alive (self holds it) and belongs to `dev`;
        // data/iv/aad/digest point at buffers of the lengths the session and
        // `len` state (checked by `check`), valid for the call; the PMD works
        // in place on `data` and writes (encrypt) or reads (decrypt) `digest`.
        unsafe { sys::ironsa_cpu_aead(self.dev, self.session.as_raw(), data.as_mut_ptr(), len, iv, aad, digest) }
    }

    /// Encrypts `data` in place and writes the ICV into `digest`.
    pub fn seal(&self, iv: &[u8], aad: &[u8], data: &mut [u8], digest: &mut [u8]) -> Result<()> {
        let len = self.check(AeadDirection::Encrypt, iv, aad, data, digest)?;
        match self.run(data, len, iv, aad, digest.as_mut_ptr()) {
            0 => Ok(()),
            code => Err(Error::from_code("rte_cryptodev_sym_cpu_crypto_process", code.abs())),
        }
    }

    /// Verifies `digest` over `aad` and `data` and decrypts `data` in place.
    /// The ICV comparison is the PMD's.
    pub fn open(
        &self,
        iv: &[u8],
        aad: &[u8],
        data: &mut [u8],
        digest: &[u8],
    ) -> std::result::Result<(), CpuCryptoError> {
        let len = self.check(AeadDirection::Decrypt, iv, aad, data, digest)?;
        // The PMD only reads the digest when decrypting.
        match self.run(data, len, iv, aad, digest.as_ptr().cast_mut()) {
            0 => Ok(()),
            EBADMSG => Err(CpuCryptoError::AuthFailed),
            code => Err(Error::from_code("rte_cryptodev_sym_cpu_crypto_process", code.abs()).into()),
        }
    }
}

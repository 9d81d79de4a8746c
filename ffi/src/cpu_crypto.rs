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
#[non_exhaustive]
pub enum CpuCryptoError {
    /// The ICV did not verify (decryption); the data is unspecified.
    #[error("ICV verification failed")]
    AuthFailed,
    /// The arguments or the device were refused.
    #[error(transparent)]
    Dpdk(#[from] Error),
}

/// Largest number of operations the C shim takes in one call.
const MAX_BULK: usize = 64;

/// One operation of a bulk call ([`CpuAeadSession::seal_bulk`], [`CpuAeadSession::open_bulk`]).
#[derive(Debug)]
pub struct CpuAeadOp<'a> {
    /// IV (nonce), of the session's length.
    pub iv: &'a [u8],
    /// AAD, of the session's length.
    pub aad: &'a [u8],
    /// Data, encrypted or decrypted in place.
    pub data: &'a mut [u8],
    /// ICV: written when sealing, verified when opening.
    pub digest: &'a mut [u8],
    /// Outcome, set by the call.
    pub status: CpuOpStatus,
}

/// Outcome of one bulk operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuOpStatus {
    /// Not run (yet).
    Pending,
    /// Done.
    Done,
    /// Decryption: the ICV did not verify.
    AuthFailed,
    /// The PMD refused it (positive errno).
    Failed(i32),
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

    /// Seals every op (one DPDK call per 64 ops); each op's `status` says how
    /// it went. Ops with wrong IV/AAD/ICV lengths are refused as a whole.
    pub fn seal_bulk(&self, ops: &mut [CpuAeadOp<'_>]) -> Result<()> {
        self.bulk(AeadDirection::Encrypt, ops)
    }

    /// Verifies and opens every op (one DPDK call per 64 ops); each op's
    /// `status` says how it went ([`CpuOpStatus::AuthFailed`] for a bad ICV).
    /// As with [`Self::open`], the ICV comparison is the PMD's.
    pub fn open_bulk(&self, ops: &mut [CpuAeadOp<'_>]) -> Result<()> {
        self.bulk(AeadDirection::Decrypt, ops)
    }

    fn bulk(&self, dir: AeadDirection, ops: &mut [CpuAeadOp<'_>]) -> Result<()> {
        let mut lens = [0u32; MAX_BULK];
        for op in ops.iter() {
            self.check(dir, op.iv, op.aad, op.data, op.digest)?;
        }
        for chunk in ops.chunks_mut(MAX_BULK) {
            let n = chunk.len();
            let mut data = [std::ptr::null_mut::<u8>(); MAX_BULK];
            let mut iv = [std::ptr::null_mut::<u8>(); MAX_BULK];
            let mut aad = [std::ptr::null_mut::<u8>(); MAX_BULK];
            let mut digest = [std::ptr::null_mut::<u8>(); MAX_BULK];
            let mut status = [0i32; MAX_BULK];
            for (i, op) in chunk.iter_mut().enumerate() {
                // Lengths were checked above (they fit u32).
                lens[i] = op.data.len() as u32;
                data[i] = op.data.as_mut_ptr();
                // The PMD reads IV and AAD through mutable pointers but does not write them.
                iv[i] = op.iv.as_ptr().cast_mut();
                aad[i] = op.aad.as_ptr().cast_mut();
                digest[i] = op.digest.as_mut_ptr();
            }
            // SAFETY: the session is alive and belongs to `dev`; for i < n every
            // pointer refers to a live buffer of the checked length (data: lens[i],
            // iv/aad/digest: the session's lengths), buffers of different ops do
            // not overlap (distinct &mut borrows); status has n entries.
            unsafe {
                sys::ironsa_cpu_aead_bulk(
                    self.dev,
                    self.session.as_raw(),
                    n as u32,
                    data.as_ptr(),
                    lens.as_ptr(),
                    iv.as_ptr(),
                    aad.as_ptr(),
                    digest.as_ptr(),
                    status.as_mut_ptr(),
                )
            };
            for (op, st) in chunk.iter_mut().zip(status) {
                op.status = match st {
                    0 => CpuOpStatus::Done,
                    EBADMSG if dir == AeadDirection::Decrypt => CpuOpStatus::AuthFailed,
                    code => CpuOpStatus::Failed(code.abs()),
                };
            }
        }
        Ok(())
    }

    /// Verifies `digest` over `aad` and `data` and decrypts `data` in place.
    /// The ICV comparison is the PMD's (`memcmp` in the ipsec_mb PMDs, not
    /// constant-time): open with [`crate::ImbGcm`] where timing matters.
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

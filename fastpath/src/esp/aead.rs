//! ESP ciphers on aws-lc-rs: AES-GCM-16 (RFC 4106), ChaCha20-Poly1305
//! (RFC 7634) and AES-CBC (RFC 3602) with HMAC-SHA2 (RFC 4868).
//!
//! A cipher works on a whole ESP packet laid out as
//! `SPI | SEQ | IV | ciphertext | ICV`, in place.

use super::{ESP_HEADER_LEN, EspError};
use crate::sys::aead_ctx::{InlineAead, InlineAeadCtx, NONCE_LEN, TAG_LEN};
use aws_lc_rs::{cipher, constant_time, hmac, iv::FixedLength};
use std::any::Any;
use std::sync::OnceLock;
use thiserror::Error;
use zeroize::Zeroizing;

/// ESP encryption transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncAlg {
    /// AES-GCM with a 16-byte ICV and a 128-bit key (key material: 16 + 4 salt bytes).
    AesGcm16_128,
    /// AES-GCM with a 16-byte ICV and a 256-bit key (key material: 32 + 4 salt bytes).
    AesGcm16_256,
    /// ChaCha20-Poly1305 (key material: 32 + 4 salt bytes).
    ChaCha20Poly1305,
    /// AES-CBC with a 128-bit key; needs an integrity algorithm.
    AesCbc128,
    /// AES-CBC with a 256-bit key; needs an integrity algorithm.
    AesCbc256,
}

/// ESP integrity transform (only with AES-CBC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegAlg {
    /// None: the encryption algorithm is an AEAD.
    None,
    /// HMAC-SHA-256 truncated to 128 bits (32-byte key).
    HmacSha256_128,
    /// HMAC-SHA-384 truncated to 192 bits (48-byte key).
    HmacSha384_192,
    /// HMAC-SHA-512 truncated to 256 bits (64-byte key).
    HmacSha512_256,
}

impl EncAlg {
    /// The algorithm of an IKEv2 ENCR transform (IANA transform ID and Key
    /// Length attribute in bits, RFC 7296 §3.3.2/§3.3.5), if ESP here has it.
    pub fn from_ikev2(transform_id: u16, key_bits: Option<u16>) -> Option<Self> {
        match (transform_id, key_bits) {
            (20, Some(128)) => Some(EncAlg::AesGcm16_128),
            (20, Some(256)) => Some(EncAlg::AesGcm16_256),
            (28, None) => Some(EncAlg::ChaCha20Poly1305),
            (12, Some(128)) => Some(EncAlg::AesCbc128),
            (12, Some(256)) => Some(EncAlg::AesCbc256),
            _ => None,
        }
    }

    /// Bytes of encryption key material, salt included for AEADs.
    pub fn key_material_len(self) -> usize {
        match self {
            EncAlg::AesGcm16_128 => 20,
            EncAlg::AesGcm16_256 | EncAlg::ChaCha20Poly1305 => 36,
            EncAlg::AesCbc128 => 16,
            EncAlg::AesCbc256 => 32,
        }
    }

    /// True for the combined-mode algorithms.
    pub fn is_aead(self) -> bool {
        !matches!(self, EncAlg::AesCbc128 | EncAlg::AesCbc256)
    }
}

impl IntegAlg {
    /// The algorithm of an IKEv2 INTEG transform (IANA transform ID; `None`
    /// for no integrity transform, as with an AEAD), if ESP here has it.
    pub fn from_ikev2(transform_id: Option<u16>) -> Option<Self> {
        match transform_id {
            None => Some(IntegAlg::None),
            Some(12) => Some(IntegAlg::HmacSha256_128),
            Some(13) => Some(IntegAlg::HmacSha384_192),
            Some(14) => Some(IntegAlg::HmacSha512_256),
            _ => None,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            IntegAlg::None => 0,
            IntegAlg::HmacSha256_128 => 32,
            IntegAlg::HmacSha384_192 => 48,
            IntegAlg::HmacSha512_256 => 64,
        }
    }

    /// Truncated ICV length in bytes.
    pub fn icv_len(self) -> usize {
        match self {
            IntegAlg::None => 0,
            IntegAlg::HmacSha256_128 => 16,
            IntegAlg::HmacSha384_192 => 24,
            IntegAlg::HmacSha512_256 => 32,
        }
    }
}

/// Algorithms and keys of one direction of a Child SA (zeroized on drop).
#[derive(Clone)]
pub struct CipherKeys {
    /// Encryption transform.
    pub enc: EncAlg,
    /// Integrity transform ([`IntegAlg::None`] for AEADs).
    pub integ: IntegAlg,
    /// Encryption key material as taken from KEYMAT (AEAD: key followed by the 4-byte salt).
    pub enc_key: Zeroizing<Vec<u8>>,
    /// Integrity key (empty for AEADs).
    pub integ_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CipherKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CipherKeys")
            .field("enc", &self.enc)
            .field("integ", &self.integ)
            .finish_non_exhaustive()
    }
}

/// Invalid algorithm/key combination in [`CipherKeys`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Encryption key material of the wrong length.
    #[error("{alg:?} needs {need} bytes of key material, got {got}")]
    EncKeyLength {
        /// The algorithm.
        alg: EncAlg,
        /// Expected length.
        need: usize,
        /// Given length.
        got: usize,
    },
    /// Integrity key of the wrong length.
    #[error("{alg:?} needs a {need}-byte key, got {got}")]
    IntegKeyLength {
        /// The algorithm.
        alg: IntegAlg,
        /// Expected length.
        need: usize,
        /// Given length.
        got: usize,
    },
    /// AEAD with an integrity algorithm, or CBC without one.
    #[error("{enc:?} cannot be combined with {integ:?}")]
    Combination {
        /// Encryption transform.
        enc: EncAlg,
        /// Integrity transform.
        integ: IntegAlg,
    },
    /// aws-lc-rs refused the key.
    #[error("the crypto library rejected the key")]
    Rejected,
}

/// Per-worker source of random CBC IVs: aws-lc-rs randomness drawn in batches.
pub struct IvSource {
    pool: Box<[u8; IV_POOL_LEN]>,
    pos: usize,
}

const IV_POOL_LEN: usize = 16 * 256;

impl IvSource {
    /// An empty pool; it is filled on first use.
    pub fn new() -> Self {
        Self {
            pool: Box::new([0u8; IV_POOL_LEN]),
            pos: IV_POOL_LEN,
        }
    }

    /// The next 16 unpredictable bytes.
    pub fn next_iv(&mut self) -> Result<[u8; 16], EspError> {
        if self.pos + 16 > IV_POOL_LEN {
            aws_lc_rs::rand::fill(&mut self.pool[..])
                .map_err(|_| EspError::CryptoFailure("random generator failed"))?;
            self.pos = 0;
        }
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.pool[self.pos..self.pos + 16]);
        // Used IV bytes are not kept around.
        self.pool[self.pos..self.pos + 16].fill(0);
        self.pos += 16;
        Ok(iv)
    }
}

impl Default for IvSource {
    fn default() -> Self {
        Self::new()
    }
}

// The AEAD variant is large on purpose: its key context lives inside the SA entry.
#[allow(clippy::large_enum_variant)]
enum Engine {
    /// Key context inline (no pointer to follow from the SA entry).
    Aead { salt: [u8; 4], key: InlineAeadCtx },
    /// Boxed: much larger than the AEAD state, and off the hot path.
    Cbc(Box<CbcEngine>),
}

struct CbcEngine {
    enc: cipher::EncryptingKey,
    dec: cipher::DecryptingKey,
    mac: hmac::Key,
    icv_len: usize,
}

/// Another implementation of an SA's AES-GCM (RFC 4106 framing stays here),
/// attached to the SA's cipher with [`EspCipher::attach_accelerator`]: e.g.
/// intel-ipsec-mb on the poll loop's core, or a crypto device. It must
/// produce the same bytes as aws-lc (nonce = salt || IV, the given AAD,
/// 16-byte ICV).
pub trait AeadAccelerator: AsAny + Send + Sync {
    /// Encrypts `data` in place and writes the ICV into `icv`.
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), EspError>;
    /// Verifies `icv` and decrypts `data` in place; [`EspError::IcvFailure`]
    /// when it does not verify.
    fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), EspError>;

    /// Whether [`AeadAccelerator::seal_batch`] and [`AeadAccelerator::open_batch`]
    /// do better than one call per job (e.g. one device call for the batch).
    /// When `false` (the default) the worker seals and opens packet by
    /// packet, which needs no per-run job lists.
    fn batches(&self) -> bool {
        false
    }

    /// Seals every job (setting its `result`); one call per packet unless
    /// the implementation batches.
    fn seal_batch(&self, jobs: &mut [AeadJob<'_>]) {
        for j in jobs {
            j.result = self.seal(&j.nonce, &j.aad[..j.aad_len], j.data, j.icv);
        }
    }

    /// Opens every job (setting its `result`); one call per packet unless
    /// the implementation batches.
    fn open_batch(&self, jobs: &mut [AeadJob<'_>]) {
        for j in jobs {
            j.result = self.open(&j.nonce, &j.aad[..j.aad_len], j.data, j.icv);
        }
    }
}

/// One packet's AEAD operation in a batch ([`EspCipher::seal_job`],
/// [`EspCipher::open_job`]): RFC 4106 nonce and AAD, the payload and ICV of
/// the ESP packet.
#[derive(Debug)]
pub struct AeadJob<'a> {
    /// salt || IV.
    pub nonce: [u8; 12],
    /// SPI || (SEQ-high ||) SEQ.
    pub aad: [u8; 12],
    /// 8, or 12 with ESN.
    pub aad_len: usize,
    /// The payload (encrypted or decrypted in place).
    pub data: &'a mut [u8],
    /// The ICV (written by seal, verified by open).
    pub icv: &'a mut [u8],
    /// Outcome, set by the batch call.
    pub result: Result<(), EspError>,
}

/// A value as [`Any`], so that [`EspCipher::direct_gcm`] can recover an
/// accelerator's concrete type. Implemented for every type.
pub trait AsAny {
    /// `self` as [`Any`].
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An [`AeadAccelerator`] for AES-GCM with the 16-byte ICV written and
/// checked in place, which the packet path calls directly, without dynamic
/// dispatch: a worker created for it ([`crate::worker::Worker::for_direct_gcm`])
/// finds it once per run of packets of an SA ([`EspCipher::direct_gcm`]) and
/// then seals and opens each packet with a static call. This is the hook a
/// data plane's own AES-GCM attaches to (the DPDK backend's intel-ipsec-mb).
pub trait DirectGcm: AeadAccelerator + Sized + 'static {
    /// `false` only for [`NoDirectGcm`]: the direct path is compiled out.
    const PRESENT: bool = true;

    /// Encrypts `data` in place and writes the ICV into `icv`.
    fn seal_icv(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], data: &mut [u8], icv: &mut [u8; TAG_LEN]);

    /// Verifies `icv` in constant time and decrypts `data` in place;
    /// [`EspError::IcvFailure`] leaves `data` as it was.
    fn open_icv(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        icv: &[u8; TAG_LEN],
    ) -> Result<(), EspError>;
}

/// No [`DirectGcm`]: the type of workers whose data plane attaches none
/// (it has no values, so its direct path is never taken).
#[derive(Debug, Clone, Copy)]
pub enum NoDirectGcm {}

impl AeadAccelerator for NoDirectGcm {
    fn seal(&self, _: &[u8; 12], _: &[u8], _: &mut [u8], _: &mut [u8]) -> Result<(), EspError> {
        match *self {}
    }

    fn open(&self, _: &[u8; 12], _: &[u8], _: &mut [u8], _: &[u8]) -> Result<(), EspError> {
        match *self {}
    }
}

impl DirectGcm for NoDirectGcm {
    const PRESENT: bool = false;

    fn seal_icv(&self, _: &[u8; NONCE_LEN], _: &[u8], _: &mut [u8], _: &mut [u8; TAG_LEN]) {
        match *self {}
    }

    fn open_icv(&self, _: &[u8; NONCE_LEN], _: &[u8], _: &mut [u8], _: &[u8; TAG_LEN]) -> Result<(), EspError> {
        match *self {}
    }
}

/// A keyed ESP cipher for one SA.
pub struct EspCipher {
    engine: Engine,
    enc: EncAlg,
    integ: IntegAlg,
    /// IV, ICV and block lengths (fixed by the algorithms; read per packet).
    lens: [u8; 3],
    /// Set once when a faster AES-GCM takes over this SA (see [`EspCipher::attach_accelerator`]).
    accel: OnceLock<Box<dyn AeadAccelerator>>,
}

impl std::fmt::Debug for EspCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EspCipher")
            .field("enc", &self.enc)
            .field("integ", &self.integ)
            .field("accelerated", &self.accel.get().is_some())
            .finish_non_exhaustive()
    }
}

impl EspCipher {
    /// Keys a cipher, checking algorithm combination and key lengths.
    pub fn new(keys: &CipherKeys) -> Result<Self, KeyError> {
        let need = keys.enc.key_material_len();
        if keys.enc_key.len() != need {
            return Err(KeyError::EncKeyLength {
                alg: keys.enc,
                need,
                got: keys.enc_key.len(),
            });
        }
        if keys.enc.is_aead() != (keys.integ == IntegAlg::None) {
            return Err(KeyError::Combination {
                enc: keys.enc,
                integ: keys.integ,
            });
        }
        let engine = if keys.enc.is_aead() {
            let alg = match keys.enc {
                EncAlg::AesGcm16_128 => InlineAead::Aes128Gcm,
                EncAlg::AesGcm16_256 => InlineAead::Aes256Gcm,
                _ => InlineAead::ChaCha20Poly1305,
            };
            let (k, s) = keys.enc_key.split_at(need - 4);
            let key = InlineAeadCtx::new(alg, k).map_err(|_| KeyError::Rejected)?;
            let mut salt = [0u8; 4];
            salt.copy_from_slice(s);
            Engine::Aead { key, salt }
        } else {
            let need_i = keys.integ.key_len();
            if keys.integ_key.len() != need_i {
                return Err(KeyError::IntegKeyLength {
                    alg: keys.integ,
                    need: need_i,
                    got: keys.integ_key.len(),
                });
            }
            let alg = if keys.enc == EncAlg::AesCbc128 {
                &cipher::AES_128
            } else {
                &cipher::AES_256
            };
            let mk = || cipher::UnboundCipherKey::new(alg, &keys.enc_key);
            let enc =
                cipher::EncryptingKey::cbc(mk().map_err(|_| KeyError::Rejected)?).map_err(|_| KeyError::Rejected)?;
            let dec =
                cipher::DecryptingKey::cbc(mk().map_err(|_| KeyError::Rejected)?).map_err(|_| KeyError::Rejected)?;
            let hash = match keys.integ {
                IntegAlg::HmacSha384_192 => hmac::HMAC_SHA384,
                IntegAlg::HmacSha512_256 => hmac::HMAC_SHA512,
                _ => hmac::HMAC_SHA256,
            };
            Engine::Cbc(Box::new(CbcEngine {
                enc,
                dec,
                mac: hmac::Key::new(hash, &keys.integ_key),
                icv_len: keys.integ.icv_len(),
            }))
        };
        let lens = match &engine {
            Engine::Aead { .. } => [8, TAG_LEN as u8, 4],
            Engine::Cbc(c) => [16, c.icv_len as u8, 16],
        };
        Ok(Self {
            engine,
            enc: keys.enc,
            integ: keys.integ,
            lens,
            accel: OnceLock::new(),
        })
    }

    /// Hands this SA's AES-GCM to `a` from now on (packets in flight may
    /// still use aws-lc: both produce the same bytes). Returns `false` (and
    /// keeps aws-lc) for other algorithms or when one is attached already.
    pub fn attach_accelerator(&self, a: Box<dyn AeadAccelerator>) -> bool {
        matches!(self.enc, EncAlg::AesGcm16_128 | EncAlg::AesGcm16_256) && self.accel.set(a).is_ok()
    }

    /// The SA's accelerator if it is a `G`, with the SA's salt: looked up
    /// once per run of packets, then called directly per packet.
    #[inline(always)]
    pub fn direct_gcm<G: DirectGcm>(&self) -> Option<(&G, &[u8; 4])> {
        if !G::PRESENT {
            return None;
        }
        match (self.accel.get(), &self.engine) {
            (Some(a), Engine::Aead { salt, .. }) => Some(((**a).as_any().downcast_ref::<G>()?, salt)),
            _ => None,
        }
    }

    /// The seal job of an ESP packet framed for this SA (writes the IV, as
    /// [`EspCipher::seal`]); `None` when this SA has no accelerator (seal
    /// packets one by one then).
    pub fn seal_job<'a>(&self, esp: &'a mut [u8], seq: u64, esn: bool) -> Option<Result<AeadJob<'a>, EspError>> {
        let Engine::Aead { salt, .. } = &self.engine else {
            return None;
        };
        self.accel.get()?;
        if esp.len() < ESP_HEADER_LEN + 8 + 16 {
            return Some(Err(EspError::Malformed("ESP buffer shorter than its overhead")));
        }
        let iv = seq.to_be_bytes();
        esp[ESP_HEADER_LEN..ESP_HEADER_LEN + 8].copy_from_slice(&iv);
        Some(Ok(self.job(esp, *salt, iv, seq, esn)))
    }

    /// The open job of a received ESP packet of this SA; `None` without an
    /// accelerator (open packets one by one then).
    pub fn open_job<'a>(&self, esp: &'a mut [u8], seq: u64, esn: bool) -> Option<Result<AeadJob<'a>, EspError>> {
        let Engine::Aead { salt, .. } = &self.engine else {
            return None;
        };
        self.accel.get()?;
        if esp.len() < ESP_HEADER_LEN + 8 + 16 {
            return Some(Err(EspError::Malformed("shorter than ESP overhead")));
        }
        let mut iv = [0u8; 8];
        iv.copy_from_slice(&esp[ESP_HEADER_LEN..ESP_HEADER_LEN + 8]);
        Some(Ok(self.job(esp, *salt, iv, seq, esn)))
    }

    fn job<'a>(&self, esp: &'a mut [u8], salt: [u8; 4], iv: [u8; 8], seq: u64, esn: bool) -> AeadJob<'a> {
        let (aad, aad_len) = make_aad(esp, seq, esn);
        let body_end = esp.len() - 16;
        let (front, icv) = esp.split_at_mut(body_end);
        AeadJob {
            nonce: make_nonce(&salt, &iv),
            aad,
            aad_len,
            data: &mut front[ESP_HEADER_LEN + 8..],
            icv,
            result: Err(EspError::Malformed("not run")),
        }
    }

    /// Runs seal jobs of this SA through its accelerator (one call for the
    /// batch when it batches).
    pub fn seal_batch(&self, jobs: &mut [AeadJob<'_>]) {
        match self.accel.get() {
            Some(a) => a.seal_batch(jobs),
            None => jobs
                .iter_mut()
                .for_each(|j| j.result = Err(EspError::Malformed("no accelerator"))),
        }
    }

    /// Runs open jobs of this SA through its accelerator.
    pub fn open_batch(&self, jobs: &mut [AeadJob<'_>]) {
        match self.accel.get() {
            Some(a) => a.open_batch(jobs),
            None => jobs
                .iter_mut()
                .for_each(|j| j.result = Err(EspError::Malformed("no accelerator"))),
        }
    }

    /// Whether an [`AeadAccelerator`] does this SA's AES-GCM.
    pub fn is_accelerated(&self) -> bool {
        self.accel.get().is_some()
    }

    /// Whether this SA's [`AeadAccelerator`] takes packets in batches
    /// ([`AeadAccelerator::batches`]).
    pub fn batches(&self) -> bool {
        self.accel.get().is_some_and(|a| a.batches())
    }

    /// Encryption transform.
    pub fn enc_alg(&self) -> EncAlg {
        self.enc
    }

    /// Integrity transform.
    pub fn integ_alg(&self) -> IntegAlg {
        self.integ
    }

    /// IV length carried in each packet.
    #[inline]
    pub fn iv_len(&self) -> usize {
        usize::from(self.lens[0])
    }

    /// ICV length carried in each packet.
    #[inline]
    pub fn icv_len(&self) -> usize {
        usize::from(self.lens[1])
    }

    /// Starts loading the key schedule into the cache (AEADs: it is inline
    /// in the cipher, so no dependent load is needed). A hint only.
    #[inline]
    pub fn prefetch_key(&self) {
        if let Engine::Aead { key, .. } = &self.engine {
            key.prefetch();
        }
    }

    /// Alignment of `payload | padding | pad length | next header` (a power of two).
    #[inline]
    pub fn block_len(&self) -> usize {
        usize::from(self.lens[2])
    }

    /// Encrypts and authenticates `esp` (`SPI | SEQ | IV space | plaintext | ICV space`) in place.
    ///
    /// `seq` is the full 64-bit sequence number; with `esn` its high half is
    /// authenticated too. AEAD IVs are the 64-bit sequence number (RFC 4106 §3.1);
    /// CBC IVs come from `ivs`.
    #[inline]
    pub fn seal(&self, esp: &mut [u8], seq: u64, esn: bool, ivs: &mut IvSource) -> Result<(), EspError> {
        self.seal_other(esp, seq, esn, ivs)
    }

    /// This cipher's [`EspCipher::seal`] with the choice of implementation
    /// made once (for a run of packets of one SA): its accelerator called
    /// directly when it is a `G`.
    #[inline]
    pub fn sealer<G: DirectGcm>(&self) -> RunSealer<'_, G> {
        RunSealer {
            cipher: self,
            direct: self.direct_gcm::<G>().map(|(g, salt)| (g, *salt)),
        }
    }

    /// [`EspCipher::seal`] without a [`DirectGcm`]: aws-lc, CBC, or an accelerator.
    fn seal_other(&self, esp: &mut [u8], seq: u64, esn: bool, ivs: &mut IvSource) -> Result<(), EspError> {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        if esp.len() < ESP_HEADER_LEN + iv_len + icv_len {
            return Err(EspError::Malformed("ESP buffer shorter than its overhead"));
        }
        let body_end = esp.len() - icv_len;
        match &self.engine {
            Engine::Aead { key, salt } => {
                let iv = seq.to_be_bytes();
                let (hdr, body, icv) = split_aead(esp, body_end);
                hdr[ESP_HEADER_LEN..].copy_from_slice(&iv);
                let nonce = make_nonce(salt, &iv);
                let mut esn_buf = [0u8; 12];
                let aad = aad_of(hdr, seq, esn, &mut esn_buf);
                if let Some(a) = self.accel.get() {
                    return a.seal(&nonce, aad, body, icv);
                }
                let mut tag = [0u8; TAG_LEN];
                key.seal_in_place(&nonce, aad, body, &mut tag)
                    .map_err(|_| EspError::Oversize("AEAD input too long"))?;
                icv.copy_from_slice(&tag);
            }
            Engine::Cbc(c) => {
                let (enc, mac) = (&c.enc, &c.mac);
                let iv = ivs.next_iv()?;
                esp[ESP_HEADER_LEN..ESP_HEADER_LEN + 16].copy_from_slice(&iv);
                let ct = &mut esp[ESP_HEADER_LEN + 16..body_end];
                if ct.len() % 16 != 0 {
                    return Err(EspError::Malformed("CBC plaintext not block aligned"));
                }
                enc.less_safe_encrypt(ct, cipher::EncryptionContext::Iv128(FixedLength::from(iv)))
                    .map_err(|_| EspError::CryptoFailure("CBC encryption failed"))?;
                let tag = hmac_tag(mac, &esp[..body_end], seq, esn);
                esp[body_end..].copy_from_slice(&tag.as_ref()[..icv_len]);
            }
        }
        Ok(())
    }

    /// Verifies (in constant time) and decrypts `esp` in place.
    ///
    /// `seq` is the full 64-bit sequence number inferred by the replay window.
    /// On success the plaintext is at `esp[8 + iv_len .. len - icv_len]`.
    #[inline(always)]
    pub fn open(&self, esp: &mut [u8], seq: u64, esn: bool) -> Result<(), EspError> {
        self.open_other(esp, seq, esn)
    }

    /// The SA's [`DirectGcm`] for decryption when it is a `G`: a caller
    /// decrypting a run of packets looks it up once and calls
    /// [`DirectOpen::open`] per packet.
    #[inline(always)]
    pub fn direct_open<G: DirectGcm>(&self) -> Option<DirectOpen<'_, G>> {
        self.direct_gcm::<G>().map(|(aead, salt)| DirectOpen { aead, salt })
    }

    /// [`EspCipher::open`] without a [`DirectGcm`]: aws-lc, CBC, or an accelerator.
    fn open_other(&self, esp: &mut [u8], seq: u64, esn: bool) -> Result<(), EspError> {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        if esp.len() < ESP_HEADER_LEN + iv_len + icv_len {
            return Err(EspError::Malformed("shorter than ESP overhead"));
        }
        let body_end = esp.len() - icv_len;
        match &self.engine {
            Engine::Aead { key, salt } => {
                let (hdr, body, icv) = split_aead(esp, body_end);
                let mut iv = [0u8; 8];
                iv.copy_from_slice(&hdr[ESP_HEADER_LEN..]);
                let nonce = make_nonce(salt, &iv);
                let mut esn_buf = [0u8; 12];
                let aad = aad_of(hdr, seq, esn, &mut esn_buf);
                if let Some(a) = self.accel.get() {
                    return a.open(&nonce, aad, body, icv);
                }
                let mut tag = [0u8; TAG_LEN];
                tag.copy_from_slice(icv);
                key.open_in_place(&nonce, aad, body, &tag)
                    .map_err(|_| EspError::IcvFailure)?;
            }
            Engine::Cbc(c) => {
                let (dec, mac) = (&c.dec, &c.mac);
                let tag = hmac_tag(mac, &esp[..body_end], seq, esn);
                constant_time::verify_slices_are_equal(&tag.as_ref()[..icv_len], &esp[body_end..])
                    .map_err(|_| EspError::IcvFailure)?;
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&esp[ESP_HEADER_LEN..ESP_HEADER_LEN + 16]);
                let ct = &mut esp[ESP_HEADER_LEN + 16..body_end];
                if ct.len() % 16 != 0 {
                    return Err(EspError::Malformed("CBC ciphertext not block aligned"));
                }
                dec.decrypt(ct, cipher::DecryptionContext::Iv128(FixedLength::from(iv)))
                    .map_err(|_| EspError::Malformed("CBC decryption failed"))?;
            }
        }
        Ok(())
    }
}

/// An SA's [`DirectGcm`] and salt ([`EspCipher::direct_open`]).
pub struct DirectOpen<'a, G> {
    aead: &'a G,
    salt: &'a [u8; 4],
}

impl<G> Clone for DirectOpen<'_, G> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<G> Copy for DirectOpen<'_, G> {}

impl<G: DirectGcm> DirectOpen<'_, G> {
    /// [`EspCipher::open`] of the SA this came from.
    #[inline(always)]
    pub fn open(self, esp: &mut [u8], seq: u64, esn: bool) -> Result<(), EspError> {
        self.open_staged(esp, seq, esn, None)
    }

    /// The nonce of a received ESP packet of this SA (salt ‖ the packet's
    /// IV), for [`DirectOpen::open_staged`]; `None` when `esp` is too short.
    #[inline(always)]
    pub fn nonce_of(self, esp: &[u8]) -> Option<[u8; NONCE_LEN]> {
        let iv = esp.get(ESP_HEADER_LEN..ESP_HEADER_LEN + 8)?;
        Some(make_nonce(self.salt, iv.try_into().ok()?))
    }

    /// [`DirectOpen::open`] with the packet's nonce built beforehand by
    /// [`DirectOpen::nonce_of`] (see [`StagedNonces`]; `None`: built here).
    #[inline(always)]
    pub fn open_staged(
        self,
        esp: &mut [u8],
        seq: u64,
        esn: bool,
        staged: Option<&[u8; NONCE_LEN]>,
    ) -> Result<(), EspError> {
        let Some((hdr, body, icv)) = split_aead_fixed(esp) else {
            return Err(EspError::Malformed("shorter than ESP overhead"));
        };
        let built;
        let nonce = match staged {
            Some(n) => n,
            None => {
                built = make_nonce(self.salt, hdr.last_chunk().expect("16-byte header"));
                &built
            }
        };
        let mut esn_buf = [0u8; 12];
        let aad = aad_of(hdr, seq, esn, &mut esn_buf);
        self.aead.open_icv(nonce, aad, body, icv)
    }
}

/// [`EspCipher::seal`] with the implementation chosen once ([`EspCipher::sealer`]):
/// the per-packet seal of a run tests one option instead of the cipher's
/// accelerator and engine.
pub struct RunSealer<'a, G> {
    cipher: &'a EspCipher,
    /// The SA's [`DirectGcm`] and salt, when they seal.
    direct: Option<(&'a G, [u8; 4])>,
}

impl<G> Clone for RunSealer<'_, G> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<G> Copy for RunSealer<'_, G> {}

impl<G: DirectGcm> RunSealer<'_, G> {
    /// [`EspCipher::seal`] of `esp` (the same bytes).
    #[inline(always)]
    pub fn seal(&self, esp: &mut [u8], seq: u64, esn: bool, ivs: &mut IvSource) -> Result<(), EspError> {
        self.seal_staged(esp, seq, esn, ivs, &StagedNonces::EMPTY)
    }

    /// The nonces and AADs of sequence numbers `first_seq..first_seq + n`
    /// (at most [`RUN_NONCES`] of them) of the SA with SPI `spi` for
    /// [`RunSealer::seal_staged`]: none unless a [`DirectGcm`] seals (aws-lc
    /// takes its nonce by value).
    #[inline]
    pub fn stage_nonces(&self, first_seq: u64, n: usize, spi: u32, esn: bool) -> StagedNonces {
        if let Some((_, salt)) = &self.direct {
            let mut staged = StagedNonces::EMPTY;
            staged.first = first_seq;
            staged.len = n.min(RUN_NONCES);
            let spi = spi.to_be_bytes();
            for (k, (nonce, aad)) in staged.nonces[..staged.len]
                .iter_mut()
                .zip(staged.aads[..staged.len].iter_mut())
                .enumerate()
            {
                let seq = first_seq.wrapping_add(k as u64);
                *nonce = make_nonce(salt, &seq.to_be_bytes());
                let [s0, s1, s2, s3] = spi;
                let [h0, h1, h2, h3] = ((seq >> 32) as u32).to_be_bytes();
                let [l0, l1, l2, l3] = (seq as u32).to_be_bytes();
                *aad = if esn {
                    [s0, s1, s2, s3, h0, h1, h2, h3, l0, l1, l2, l3]
                } else {
                    [s0, s1, s2, s3, l0, l1, l2, l3, 0, 0, 0, 0]
                };
            }
            staged.aad_len = if esn { 12 } else { ESP_HEADER_LEN };
            return staged;
        }
        StagedNonces::EMPTY
    }

    /// [`RunSealer::seal`] using the nonce `staged` holds for `seq`, if any
    /// (the same bytes either way).
    #[inline(always)]
    pub fn seal_staged(
        &self,
        esp: &mut [u8],
        seq: u64,
        esn: bool,
        ivs: &mut IvSource,
        staged: &StagedNonces,
    ) -> Result<(), EspError> {
        if let Some((a, salt)) = &self.direct {
            let Some((hdr, body, icv)) = split_aead_fixed(esp) else {
                return Err(EspError::Malformed("ESP buffer shorter than its overhead"));
            };
            let iv = seq.to_be_bytes();
            hdr[ESP_HEADER_LEN..].copy_from_slice(&iv);
            if let Some((nonce, aad)) = staged.get(seq) {
                // Staged: the nonce and AAD were written well before this call.
                a.seal_icv(nonce, &aad[..staged.aad_len], body, icv);
                return Ok(());
            }
            let nonce = &make_nonce(salt, &iv);
            let mut esn_buf = [0u8; 12];
            let aad = aad_of(hdr, seq, esn, &mut esn_buf);
            a.seal_icv(nonce, aad, body, icv);
            return Ok(());
        }
        // Only a direct seal reads staged nonces.
        self.cipher.seal_other(esp, seq, esn, ivs)
    }
}

impl<G> std::fmt::Debug for RunSealer<'_, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSealer")
            .field("cipher", self.cipher)
            .finish_non_exhaustive()
    }
}

/// Nonces a run can have built ahead ([`StagedNonces`]).
pub const RUN_NONCES: usize = 32;

/// RFC 4106 nonces (salt ‖ IV), and for sealing AADs, of a run's packets,
/// built before the run's first AEAD call. intel-ipsec-mb reads the 12-byte
/// nonce and the AAD with single loads; a value written just before the
/// call with smaller stores (a 4-byte salt and an 8-byte IV; the SPI and the
/// sequence number of the ESP header) cannot be forwarded to such a load
/// from the store buffer, so the call waits until the stores reach the
/// cache, which costs small packets much of their AEAD time. Values written
/// a few packets earlier have long reached it.
#[derive(Clone)]
pub struct StagedNonces {
    nonces: [[u8; NONCE_LEN]; RUN_NONCES],
    /// Sealing: the AAD of each nonce's packet (SPI ‖ SEQ, or with ESN SPI ‖
    /// SEQ-high ‖ SEQ-low), `aad_len` bytes of it.
    aads: [[u8; 12]; RUN_NONCES],
    aad_len: usize,
    /// Sequence number of `nonces[0]` (sealing; opening indexes by packet).
    first: u64,
    len: usize,
}

impl StagedNonces {
    /// No nonce staged.
    pub const EMPTY: StagedNonces = StagedNonces {
        nonces: [[0; NONCE_LEN]; RUN_NONCES],
        aads: [[0; 12]; RUN_NONCES],
        aad_len: 0,
        first: 0,
        len: 0,
    };

    /// The staged nonce and AAD of sequence number `seq` (sealing).
    #[inline(always)]
    fn get(&self, seq: u64) -> Option<(&[u8; NONCE_LEN], &[u8; 12])> {
        let k = seq.wrapping_sub(self.first);
        if k < self.len as u64 {
            Some((self.nonces.get(k as usize)?, self.aads.get(k as usize)?))
        } else {
            None
        }
    }

    /// Stages `nonce` as the `k`-th (a packet's index in an inbound run);
    /// `false` when full.
    #[inline(always)]
    pub fn push(&mut self, nonce: [u8; NONCE_LEN]) -> bool {
        match self.nonces.get_mut(self.len) {
            Some(slot) => {
                *slot = nonce;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The `k`-th nonce [`StagedNonces::push`]ed.
    #[inline(always)]
    pub fn at(&self, k: usize) -> Option<&[u8; NONCE_LEN]> {
        if k < self.len { self.nonces.get(k) } else { None }
    }
}

/// RFC 4106 nonce: salt || IV.
#[inline]
fn make_nonce(salt: &[u8; 4], iv: &[u8; 8]) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(iv);
    n
}

/// [`aad_of`] as an owned array and its length (for batch jobs).
fn make_aad(esp: &[u8], seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut esn_buf = [0u8; 12];
    let a = aad_of(esp, seq, esn, &mut esn_buf);
    let mut aad = [0u8; 12];
    aad[..a.len()].copy_from_slice(a);
    (aad, a.len())
}

/// An AEAD ESP packet of `len - 16 == body_end` split into its header
/// (SPI | SEQ | IV), payload and ICV (the caller checked the length).
#[inline]
fn split_aead(esp: &mut [u8], body_end: usize) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let (front, icv) = esp.split_at_mut(body_end);
    let (hdr, body) = front.split_at_mut(ESP_HEADER_LEN + 8);
    (hdr, body, icv)
}

/// An AEAD ESP packet split into its header (SPI | SEQ | IV), payload and
/// 16-byte ICV; `None` when it is shorter than header and ICV.
#[inline(always)]
#[allow(clippy::type_complexity)]
fn split_aead_fixed(esp: &mut [u8]) -> Option<(&mut [u8; ESP_HEADER_LEN + 8], &mut [u8], &mut [u8; TAG_LEN])> {
    if esp.len() < ESP_HEADER_LEN + 8 + TAG_LEN {
        return None;
    }
    let (front, icv) = esp.split_last_chunk_mut::<TAG_LEN>()?;
    let (hdr, body) = front.split_first_chunk_mut::<{ ESP_HEADER_LEN + 8 }>()?;
    Some((hdr, body, icv))
}

/// AAD of RFC 4106 §5 for the ESP header `hdr` (starting at the SPI): SPI |
/// SEQ as it stands in the packet, or with ESN SPI | SEQ-high | SEQ-low,
/// built in `esn_buf`.
#[inline(always)]
fn aad_of<'a>(hdr: &'a [u8], seq: u64, esn: bool, esn_buf: &'a mut [u8; 12]) -> &'a [u8] {
    if !esn {
        return &hdr[..ESP_HEADER_LEN];
    }
    esn_buf[..4].copy_from_slice(&hdr[..4]);
    esn_buf[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
    esn_buf[8..].copy_from_slice(&hdr[4..8]);
    esn_buf
}

/// HMAC over `SPI | SEQ | IV | ciphertext`, plus the high sequence half with ESN (RFC 4303 §2.2.1).
fn hmac_tag(mac: &hmac::Key, covered: &[u8], seq: u64, esn: bool) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(mac);
    ctx.update(covered);
    if esn {
        ctx.update(&((seq >> 32) as u32).to_be_bytes());
    }
    ctx.sign()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_nonces_answer_only_for_what_was_staged() {
        let mut s = StagedNonces::EMPTY;
        assert!(s.get(0).is_none() && s.at(0).is_none());
        s.first = 100;
        s.len = 3;
        s.nonces[2] = [7; NONCE_LEN];
        s.aads[2] = [8; 12];
        assert_eq!(s.get(102), Some((&[7; NONCE_LEN], &[8; 12])));
        // Outside the staged range, including wrap-around below `first`.
        assert!(s.get(103).is_none() && s.get(99).is_none() && s.get(u64::MAX).is_none());
        // Inbound use: pushed in packet order, full after RUN_NONCES.
        let mut s = StagedNonces::EMPTY;
        for k in 0..RUN_NONCES {
            assert!(s.push([k as u8; NONCE_LEN]));
        }
        assert!(!s.push([0xff; NONCE_LEN]), "a full stage takes no more");
        assert_eq!(s.at(5), Some(&[5; NONCE_LEN]));
        assert!(s.at(RUN_NONCES).is_none());
    }

    #[test]
    fn ikev2_transforms_map_to_esp_algorithms() {
        // IANA: ENCR_AES_CBC 12, ENCR_AES_GCM_16 20, ENCR_CHACHA20_POLY1305 28.
        assert_eq!(EncAlg::from_ikev2(20, Some(128)), Some(EncAlg::AesGcm16_128));
        assert_eq!(EncAlg::from_ikev2(20, Some(256)), Some(EncAlg::AesGcm16_256));
        assert_eq!(EncAlg::from_ikev2(28, None), Some(EncAlg::ChaCha20Poly1305));
        assert_eq!(EncAlg::from_ikev2(12, Some(128)), Some(EncAlg::AesCbc128));
        assert_eq!(EncAlg::from_ikev2(12, Some(256)), Some(EncAlg::AesCbc256));
        // Sizes and transforms ESP here does not do are refused, not guessed.
        for (id, bits) in [
            (20, Some(192)),
            (20, None),
            (12, Some(192)),
            (28, Some(256)),
            (3, None),
            (18, Some(128)),
        ] {
            assert_eq!(EncAlg::from_ikev2(id, bits), None, "{id} {bits:?}");
        }
        // AUTH_HMAC_SHA2_256_128 12, _384_192 13, _512_256 14.
        assert_eq!(IntegAlg::from_ikev2(None), Some(IntegAlg::None));
        assert_eq!(IntegAlg::from_ikev2(Some(12)), Some(IntegAlg::HmacSha256_128));
        assert_eq!(IntegAlg::from_ikev2(Some(13)), Some(IntegAlg::HmacSha384_192));
        assert_eq!(IntegAlg::from_ikev2(Some(14)), Some(IntegAlg::HmacSha512_256));
        assert_eq!(IntegAlg::from_ikev2(Some(2)), None, "HMAC-SHA1-96 is not offered");
    }
    use aws_lc_rs::aead;

    fn keys(enc: EncAlg, integ: IntegAlg) -> CipherKeys {
        CipherKeys {
            enc,
            integ,
            enc_key: Zeroizing::new((0..enc.key_material_len() as u8).collect()),
            integ_key: Zeroizing::new(vec![7u8; integ.key_len()]),
        }
    }

    #[test]
    fn rejects_bad_combinations_and_lengths() {
        assert!(matches!(
            EspCipher::new(&keys(EncAlg::AesGcm16_128, IntegAlg::HmacSha256_128)),
            Err(KeyError::Combination { .. })
        ));
        assert!(matches!(
            EspCipher::new(&keys(EncAlg::AesCbc128, IntegAlg::None)),
            Err(KeyError::Combination { .. })
        ));
        let mut k = keys(EncAlg::AesGcm16_256, IntegAlg::None);
        k.enc_key.pop();
        assert!(matches!(
            EspCipher::new(&k),
            Err(KeyError::EncKeyLength { need: 36, .. })
        ));
        let mut k = keys(EncAlg::AesCbc256, IntegAlg::HmacSha512_256);
        k.integ_key.pop();
        assert!(matches!(
            EspCipher::new(&k),
            Err(KeyError::IntegKeyLength { need: 64, .. })
        ));
    }

    #[test]
    fn seal_open_every_suite_and_tamper_detection() {
        let suites = [
            (EncAlg::AesGcm16_128, IntegAlg::None),
            (EncAlg::AesGcm16_256, IntegAlg::None),
            (EncAlg::ChaCha20Poly1305, IntegAlg::None),
            (EncAlg::AesCbc128, IntegAlg::HmacSha256_128),
            (EncAlg::AesCbc256, IntegAlg::HmacSha384_192),
            (EncAlg::AesCbc256, IntegAlg::HmacSha512_256),
        ];
        let mut ivs = IvSource::new();
        for (enc, integ) in suites {
            for esn in [false, true] {
                let c = EspCipher::new(&keys(enc, integ)).unwrap();
                let body = 32;
                let mut pkt = vec![0u8; 8 + c.iv_len() + body + c.icv_len()];
                pkt[..8].copy_from_slice(&[0, 0, 1, 0, 0, 0, 0, 5]);
                for (i, b) in pkt[8 + c.iv_len()..8 + c.iv_len() + body].iter_mut().enumerate() {
                    *b = i as u8;
                }
                let seq = (3u64 << 32) | 5;
                c.seal(&mut pkt, seq, esn, &mut ivs).unwrap();
                let mut copy = pkt.clone();
                c.open(&mut copy, seq, esn).unwrap();
                let pt = &copy[8 + c.iv_len()..8 + c.iv_len() + body];
                assert!(pt.iter().enumerate().all(|(i, b)| *b == i as u8));
                // Tampering anywhere, or the wrong ESN high half, fails.
                for pos in [0, 5, 8, pkt.len() / 2, pkt.len() - 1] {
                    let mut t = pkt.clone();
                    t[pos] ^= 1;
                    assert_eq!(c.open(&mut t, seq, esn), Err(EspError::IcvFailure));
                }
                if esn {
                    let mut t = pkt.clone();
                    assert_eq!(c.open(&mut t, seq + (1 << 32), esn), Err(EspError::IcvFailure));
                }
            }
        }
    }

    /// aws-lc through the accelerator hook, counting calls.
    struct CountingGcm {
        key: aead::LessSafeKey,
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AeadAccelerator for CountingGcm {
        fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), EspError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let n = aead::Nonce::assume_unique_for_key(*nonce);
            let tag = self
                .key
                .seal_in_place_separate_tag(n, aead::Aad::from(aad), data)
                .map_err(|_| EspError::CryptoFailure("AEAD seal failed"))?;
            icv.copy_from_slice(tag.as_ref());
            Ok(())
        }

        fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), EspError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let n = aead::Nonce::assume_unique_for_key(*nonce);
            let mut joined = [data, icv].concat();
            let pt = self
                .key
                .open_in_place(n, aead::Aad::from(aad), &mut joined)
                .map_err(|_| EspError::IcvFailure)?;
            data.copy_from_slice(pt);
            Ok(())
        }
    }

    #[test]
    fn accelerator_takes_over_gcm_with_identical_bytes() {
        let k = keys(EncAlg::AesGcm16_128, IntegAlg::None);
        let plain = EspCipher::new(&k).unwrap();
        let fast = EspCipher::new(&k).unwrap();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acc = || {
            Box::new(CountingGcm {
                key: aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &k.enc_key[..16]).unwrap()),
                calls: calls.clone(),
            })
        };
        assert!(fast.attach_accelerator(acc()));
        assert!(!fast.attach_accelerator(acc()), "attached twice");
        assert!(fast.is_accelerated() && !plain.is_accelerated());
        let cbc = EspCipher::new(&keys(EncAlg::AesCbc128, IntegAlg::HmacSha256_128)).unwrap();
        assert!(!cbc.attach_accelerator(acc()));
        let mut ivs = IvSource::new();
        for esn in [false, true] {
            let mut a = vec![0u8; 8 + 8 + 40 + 16];
            a[..8].copy_from_slice(&[0, 0, 1, 0, 0, 0, 0, 7]);
            a[16..56].fill(0x5a);
            let mut b = a.clone();
            let seq = (2u64 << 32) | 7;
            plain.seal(&mut a, seq, esn, &mut ivs).unwrap();
            fast.seal(&mut b, seq, esn, &mut ivs).unwrap();
            assert_eq!(a, b);
            fast.open(&mut b, seq, esn).unwrap();
            assert!(b[16..56].iter().all(|x| *x == 0x5a));
            a[20] ^= 1;
            assert_eq!(fast.open(&mut a, seq, esn), Err(EspError::IcvFailure));
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 6);
    }

    #[test]
    fn cbc_ivs_are_fresh() {
        let mut ivs = IvSource::new();
        let a = ivs.next_iv().unwrap();
        let b = ivs.next_iv().unwrap();
        assert_ne!(a, b);
        for _ in 0..1000 {
            ivs.next_iv().unwrap();
        }
    }
}

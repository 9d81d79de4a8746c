//! SK payload protection over the negotiated cipher: implements [`SkProtect`].
//!
//! AEADs (AES-GCM-16, RFC 5282; ChaCha20-Poly1305, RFC 7634) use the nonce
//! salt (last 4 bytes of SK_e) || IV (8 bytes); the IV is a per-SA counter that
//! starts at a random value and is never reused. AES-CBC uses a random 16-byte
//! IV and HMAC-SHA2 over aad || iv || ciphertext, truncated (RFC 4868).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CryptoError, CryptoProvider, EncrAlg, IntegAlg};
use crate::wire::WireError;
use crate::wire::ikev2::SkProtect;
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

/// AEAD explicit IV length (RFC 5282 §3, RFC 7634 §2).
const AEAD_IV_LEN: usize = 8;
/// AEAD salt length taken from the end of SK_e.
const AEAD_SALT_LEN: usize = 4;
/// AEAD ICV length (16-octet tag).
const AEAD_ICV_LEN: usize = 16;
/// Largest AEAD key (AES-256, ChaCha20).
const AEAD_MAX_KEY_LEN: usize = 32;
/// AES block and CBC IV length.
const AES_BLOCK_LEN: usize = 16;

/// The cipher (and MAC) protecting SK payloads in one direction.
pub struct SkCipher {
    mode: Mode,
}

enum Mode {
    /// The key is kept as bytes and the aws-lc context (≈ 600 bytes of key
    /// schedule and GHASH table) is built per message: an established IKE SA
    /// protects a message every few minutes at most, and tens of thousands of
    /// idle SAs would otherwise each keep two contexts.
    Aead {
        alg: &'static aead::Algorithm,
        key: Zeroizing<[u8; AEAD_MAX_KEY_LEN]>,
        key_len: u8,
        salt: Zeroizing<[u8; AEAD_SALT_LEN]>,
        /// IV of the first message, random.
        iv_start: u64,
        /// Messages sealed so far; IV = iv_start + sealed (mod 2^64).
        sealed: AtomicU64,
    },
    /// Boxed: the AES key schedules are large and CBC is the rare case.
    Cbc(Box<CbcKeys>),
}

/// AES-CBC encryption and decryption key schedules plus the HMAC key, and
/// the provider that draws each message's IV.
struct CbcKeys {
    encrypt: EncryptingKey,
    decrypt: DecryptingKey,
    mac: hmac::Key,
    icv_len: usize,
    random: Arc<dyn CryptoProvider>,
}

impl std::fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Aead { .. } => "aead",
            Mode::Cbc(_) => "cbc+hmac",
        };
        f.debug_struct("SkCipher").field("mode", &mode).finish_non_exhaustive()
    }
}

fn key_error(what: &str, got: usize, expected: usize) -> CryptoError {
    CryptoError::KeyRejected(format!("{what} key: {got} bytes, expected {expected}"))
}

fn length_error(what: &'static str, got: usize, expected: usize) -> WireError {
    WireError::BadLength {
        what,
        detail: format!("{got} bytes, expected {expected}"),
    }
}

impl SkCipher {
    /// Heap bytes behind this cipher that its owner accounts for (key material kept by ironsa).
    pub fn heap_bytes(&self) -> usize {
        match &self.mode {
            Mode::Aead { .. } => 0,
            Mode::Cbc(_) => std::mem::size_of::<CbcKeys>(),
        }
    }

    /// Builds the cipher from SK_e (with salt for AEADs) and SK_a (empty for
    /// AEADs); `random` draws the first AEAD IV and every CBC IV.
    pub fn new(
        encr: EncrAlg,
        integ: Option<IntegAlg>,
        encr_key: &[u8],
        integ_key: &[u8],
        random: &Arc<dyn CryptoProvider>,
    ) -> Result<Self, CryptoError> {
        if encr_key.len() != encr.keymat_len() {
            return Err(key_error(&encr.name(), encr_key.len(), encr.keymat_len()));
        }
        let mode = match encr {
            EncrAlg::AesGcm16 { .. } | EncrAlg::ChaCha20Poly1305 => {
                if let Some(i) = integ {
                    return Err(CryptoError::Unsupported(format!(
                        "integrity {} with AEAD {}",
                        i.name(),
                        encr.name()
                    )));
                }
                if !integ_key.is_empty() {
                    return Err(key_error("AEAD integrity", integ_key.len(), 0));
                }
                let alg = match encr {
                    EncrAlg::AesGcm16 { key_bits: 128 } => &aead::AES_128_GCM,
                    EncrAlg::AesGcm16 { key_bits: 192 } => &aead::AES_192_GCM,
                    EncrAlg::AesGcm16 { key_bits: 256 } => &aead::AES_256_GCM,
                    EncrAlg::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
                    _ => return Err(CryptoError::Unsupported(encr.name())),
                };
                let (key, salt) = encr_key.split_at(encr.key_len());
                // The length was checked above (key_len of `alg`), which is all
                // aws-lc checks: building a context here only to validate it
                // would cost a key schedule and a GHASH table per direction.
                if key.len() != alg.key_len() || key.len() > AEAD_MAX_KEY_LEN {
                    return Err(key_error(&encr.name(), key.len(), alg.key_len()));
                }
                let mut key_bytes = Zeroizing::new([0u8; AEAD_MAX_KEY_LEN]);
                key_bytes[..key.len()].copy_from_slice(key);
                let mut salt_bytes = Zeroizing::new([0u8; AEAD_SALT_LEN]);
                salt_bytes.copy_from_slice(salt);
                Mode::Aead {
                    alg,
                    key: key_bytes,
                    key_len: key.len() as u8,
                    salt: salt_bytes,
                    iv_start: super::random_u64(&**random)?,
                    sealed: AtomicU64::new(0),
                }
            }
            EncrAlg::AesCbc { key_bits } => {
                let integ = integ.ok_or_else(|| CryptoError::Unsupported("AES-CBC without integrity".into()))?;
                if integ_key.len() != integ.key_len() {
                    return Err(key_error(integ.name(), integ_key.len(), integ.key_len()));
                }
                let alg = match key_bits {
                    128 => &cipher::AES_128,
                    192 => &cipher::AES_192,
                    256 => &cipher::AES_256,
                    _ => return Err(CryptoError::Unsupported(encr.name())),
                };
                let rejected = |_| CryptoError::KeyRejected(encr.name());
                let encrypt =
                    EncryptingKey::cbc(UnboundCipherKey::new(alg, encr_key).map_err(rejected)?).map_err(rejected)?;
                let decrypt =
                    DecryptingKey::cbc(UnboundCipherKey::new(alg, encr_key).map_err(rejected)?).map_err(rejected)?;
                let hash = match integ {
                    IntegAlg::HmacSha256_128 => hmac::HMAC_SHA256,
                    IntegAlg::HmacSha384_192 => hmac::HMAC_SHA384,
                    IntegAlg::HmacSha512_256 => hmac::HMAC_SHA512,
                };
                Mode::Cbc(Box::new(CbcKeys {
                    encrypt,
                    decrypt,
                    mac: hmac::Key::new(hash, integ_key),
                    icv_len: integ.icv_len(),
                    random: random.clone(),
                }))
            }
        };
        Ok(SkCipher { mode })
    }

    /// SK_e with its salt, as [`SkCipher::new`] takes it, for an AEAD
    /// cipher (`None` for AES-CBC, whose keys live only in aws-lc's key
    /// schedules): what another node needs to continue the IKE SA.
    pub fn aead_keymat(&self) -> Option<Zeroizing<Vec<u8>>> {
        match &self.mode {
            Mode::Aead { key, key_len, salt, .. } => {
                let mut out = Zeroizing::new(Vec::with_capacity(usize::from(*key_len) + AEAD_SALT_LEN));
                out.extend_from_slice(&key[..usize::from(*key_len)]);
                out.extend_from_slice(&salt[..]);
                Some(out)
            }
            Mode::Cbc(_) => None,
        }
    }

    /// Builds an AEAD cipher whose first IV is `iv_start`, for known-answer
    /// tests only (normal ciphers start at a random IV).
    #[doc(hidden)]
    pub fn with_iv_start_for_test(
        encr: EncrAlg,
        encr_key: &[u8],
        iv_start: u64,
        random: &Arc<dyn CryptoProvider>,
    ) -> Result<Self, CryptoError> {
        let mut sk = Self::new(encr, None, encr_key, &[], random)?;
        if let Mode::Aead { iv_start: start, .. } = &mut sk.mode {
            *start = iv_start;
        }
        Ok(sk)
    }
}

/// The aws-lc AEAD context for one message.
fn aead_key(alg: &'static aead::Algorithm, key: &[u8]) -> Result<LessSafeKey, WireError> {
    UnboundKey::new(alg, key)
        .map(LessSafeKey::new)
        .map_err(|_| WireError::Invalid {
            what: "SK payload",
            detail: "AEAD key rejected".into(),
        })
}

/// salt || iv: the 12-byte AEAD nonce.
fn aead_nonce(salt: &[u8; AEAD_SALT_LEN], iv: &[u8]) -> Result<Nonce, WireError> {
    if iv.len() != AEAD_IV_LEN {
        return Err(length_error("SK payload IV", iv.len(), AEAD_IV_LEN));
    }
    let mut nonce = [0u8; AEAD_SALT_LEN + AEAD_IV_LEN];
    nonce[..AEAD_SALT_LEN].copy_from_slice(salt);
    nonce[AEAD_SALT_LEN..].copy_from_slice(iv);
    Ok(Nonce::assume_unique_for_key(nonce))
}

/// HMAC(aad || iv || ciphertext), full length.
fn cbc_mac(mac: &hmac::Key, aad: &[u8], iv: &[u8], data: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(mac);
    ctx.update(aad);
    ctx.update(iv);
    ctx.update(data);
    ctx.sign()
}

fn check_blocks(data: &[u8]) -> Result<(), WireError> {
    if data.len() % AES_BLOCK_LEN != 0 {
        return Err(WireError::BadLength {
            what: "SK payload ciphertext",
            detail: format!("{} bytes is not a multiple of the AES block size", data.len()),
        });
    }
    Ok(())
}

impl SkProtect for SkCipher {
    fn iv_len(&self) -> usize {
        match self.mode {
            Mode::Aead { .. } => AEAD_IV_LEN,
            Mode::Cbc(_) => AES_BLOCK_LEN,
        }
    }

    fn icv_len(&self) -> usize {
        match self.mode {
            Mode::Aead { .. } => AEAD_ICV_LEN,
            Mode::Cbc(ref cbc) => cbc.icv_len,
        }
    }

    fn block_len(&self) -> usize {
        match self.mode {
            Mode::Aead { .. } => 1,
            Mode::Cbc(_) => AES_BLOCK_LEN,
        }
    }

    fn seal(&self, aad: &[u8], iv: &mut [u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), WireError> {
        if icv.len() != self.icv_len() {
            return Err(length_error("SK payload ICV", icv.len(), self.icv_len()));
        }
        match &self.mode {
            Mode::Aead {
                alg,
                key,
                key_len,
                salt,
                iv_start,
                sealed,
            } => {
                if iv.len() != AEAD_IV_LEN {
                    return Err(length_error("SK payload IV", iv.len(), AEAD_IV_LEN));
                }
                let n = sealed.fetch_add(1, Ordering::Relaxed);
                if n == u64::MAX {
                    // 2^64 messages: the IV space is exhausted; never wrap.
                    sealed.store(u64::MAX, Ordering::Relaxed);
                    return Err(WireError::Invalid {
                        what: "SK payload IV",
                        detail: "IV space exhausted".into(),
                    });
                }
                iv.copy_from_slice(&iv_start.wrapping_add(n).to_be_bytes());
                let nonce = aead_nonce(salt, iv)?;
                let tag = aead_key(alg, &key[..usize::from(*key_len)])?
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), data)
                    .map_err(|_| WireError::Invalid {
                        what: "SK payload",
                        detail: "AEAD seal failed".into(),
                    })?;
                icv.copy_from_slice(tag.as_ref());
                Ok(())
            }
            Mode::Cbc(cbc) => {
                let CbcKeys {
                    encrypt,
                    mac,
                    icv_len,
                    random,
                    ..
                } = &**cbc;
                if iv.len() != AES_BLOCK_LEN {
                    return Err(length_error("SK payload IV", iv.len(), AES_BLOCK_LEN));
                }
                check_blocks(data)?;
                let mut fresh = [0u8; AES_BLOCK_LEN];
                random.fill_random(&mut fresh).map_err(|_| WireError::Invalid {
                    what: "SK payload IV",
                    detail: "RNG failure".into(),
                })?;
                iv.copy_from_slice(&fresh);
                encrypt
                    .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(fresh)))
                    .map_err(|_| WireError::Invalid {
                        what: "SK payload",
                        detail: "CBC encryption failed".into(),
                    })?;
                let tag = cbc_mac(mac, aad, iv, data);
                icv.copy_from_slice(&tag.as_ref()[..*icv_len]);
                Ok(())
            }
        }
    }

    fn open(&self, aad: &[u8], iv: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), WireError> {
        if icv.len() != self.icv_len() {
            return Err(length_error("SK payload ICV", icv.len(), self.icv_len()));
        }
        match &self.mode {
            Mode::Aead {
                alg,
                key,
                key_len,
                salt,
                ..
            } => {
                let nonce = aead_nonce(salt, iv)?;
                aead_key(alg, &key[..usize::from(*key_len)])?
                    .open_in_place_separate_tag(nonce, Aad::from(aad), icv, data)
                    .map_err(|_| WireError::IntegrityCheckFailed)?;
                Ok(())
            }
            Mode::Cbc(cbc) => {
                let CbcKeys {
                    decrypt, mac, icv_len, ..
                } = &**cbc;
                let iv: [u8; AES_BLOCK_LEN] = iv
                    .try_into()
                    .map_err(|_| length_error("SK payload IV", iv.len(), AES_BLOCK_LEN))?;
                check_blocks(data)?;
                let tag = cbc_mac(mac, aad, &iv, data);
                verify_slices_are_equal(&tag.as_ref()[..*icv_len], icv).map_err(|_| WireError::IntegrityCheckFailed)?;
                decrypt
                    .decrypt(data, DecryptionContext::Iv128(FixedLength::from(iv)))
                    .map_err(|_| WireError::IntegrityCheckFailed)?;
                Ok(())
            }
        }
    }
}

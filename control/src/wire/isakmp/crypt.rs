//! Encryption of ISAKMP payload chains (RFC 2409 Appendix B): AES-CBC over
//! the whole chain after the header, zero-padded to the block size, with
//! the IKEv1 IV chaining rules.
//!
//! IKEv1 has no integrity check on this layer (the HASH payloads inside
//! provide it), so the IVs are state shared by both ends: Phase 1 starts
//! from hash(g^xi | g^xr) and then continues with the last ciphertext block
//! of the previous Phase 1 message; each Phase 2 or informational exchange
//! (one message ID) starts from hash(last Phase 1 block | message ID) and
//! continues with the last block of its own previous message.

use aws_lc_rs::cipher::{self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::{digest, hmac};
use zeroize::Zeroizing;

use super::IsakmpError;
use super::codec::{MAX_MESSAGE_LEN, decode_payloads, encode_payloads, split_message, write_header};
use super::types::{FLAG_ENCRYPTION, HEADER_LEN, Header, Payload};
use crate::crypto::CryptoError;
pub use crate::pki::HashAlg;

/// AES block size, the CBC IV length.
pub const BLOCK_LEN: usize = 16;

/// Phase 2 IVs kept at once: the exchanges in progress on one ISAKMP SA.
const MAX_PHASE2_IVS: usize = 16;

/// IKEv1's use of the hash algorithms (RFC 2409 Appendix A, attribute
/// class 2): the PRF is HMAC with the hash, the IV derivation uses it plain.
impl HashAlg {
    /// The IKEv1 attribute value.
    pub fn ikev1_number(self) -> u16 {
        match self {
            HashAlg::Sha1 => 2,
            HashAlg::Sha256 => 4,
            HashAlg::Sha384 => 5,
            HashAlg::Sha512 => 6,
        }
    }

    /// Parses an IKEv1 attribute value.
    pub fn from_ikev1_number(n: u16) -> Option<Self> {
        match n {
            2 => Some(HashAlg::Sha1),
            4 => Some(HashAlg::Sha256),
            5 => Some(HashAlg::Sha384),
            6 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// strongSwan-style name.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            HashAlg::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => hmac::HMAC_SHA256,
            HashAlg::Sha384 => hmac::HMAC_SHA384,
            HashAlg::Sha512 => hmac::HMAC_SHA512,
        }
    }

    /// hash(data[0] | data[1] | ...).
    pub fn hash(self, data: &[&[u8]]) -> Vec<u8> {
        let mut ctx = digest::Context::new(self.digest_alg());
        for d in data {
            ctx.update(d);
        }
        ctx.finish().as_ref().to_vec()
    }

    /// prf(key, data[0] | data[1] | ...) = HMAC with this hash.
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(self.hmac_alg(), key));
        for d in data {
            ctx.update(d);
        }
        Zeroizing::new(ctx.sign().as_ref().to_vec())
    }
}

/// The IV state of one ISAKMP SA (see the module documentation).
#[derive(Clone, Debug)]
pub struct IvChain {
    hash: HashAlg,
    phase1: [u8; BLOCK_LEN],
    phase2: Vec<(u32, [u8; BLOCK_LEN])>,
}

fn first_block(bytes: &[u8]) -> [u8; BLOCK_LEN] {
    let mut b = [0u8; BLOCK_LEN];
    b.copy_from_slice(&bytes[..BLOCK_LEN]);
    b
}

impl IvChain {
    /// The Phase 1 IV: hash(g^xi | g^xr) truncated to the block size.
    pub fn new(hash: HashAlg, ke_i: &[u8], ke_r: &[u8]) -> Self {
        IvChain {
            hash,
            phase1: first_block(&hash.hash(&[ke_i, ke_r])),
            phase2: Vec::new(),
        }
    }

    /// The IV for the next message of exchange `message_id`.
    pub fn iv(&mut self, message_id: u32) -> [u8; BLOCK_LEN] {
        if message_id == 0 {
            return self.phase1;
        }
        if let Some((_, iv)) = self.phase2.iter().find(|(m, _)| *m == message_id) {
            return *iv;
        }
        let iv = first_block(&self.hash.hash(&[&self.phase1, &message_id.to_be_bytes()]));
        if self.phase2.len() == MAX_PHASE2_IVS {
            self.phase2.remove(0);
        }
        self.phase2.push((message_id, iv));
        iv
    }

    /// Records the last ciphertext block of a message of exchange `message_id`.
    pub fn update(&mut self, message_id: u32, last_block: [u8; BLOCK_LEN]) {
        if message_id == 0 {
            self.phase1 = last_block;
        } else if let Some(e) = self.phase2.iter_mut().find(|(m, _)| *m == message_id) {
            e.1 = last_block;
        } else {
            if self.phase2.len() == MAX_PHASE2_IVS {
                self.phase2.remove(0);
            }
            self.phase2.push((message_id, last_block));
        }
    }

    /// Forgets a finished exchange's IV.
    pub fn forget(&mut self, message_id: u32) {
        self.phase2.retain(|(m, _)| *m != message_id);
    }
}

/// AES-CBC keyed with the ISAKMP SA's encryption key (RFC 2409 Appendix B).
pub struct IsakmpCipher {
    encrypt: EncryptingKey,
    decrypt: DecryptingKey,
}

impl std::fmt::Debug for IsakmpCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsakmpCipher").finish_non_exhaustive()
    }
}

fn cipher_error(what: &'static str) -> IsakmpError {
    IsakmpError::Invalid {
        what,
        detail: "AES-CBC operation failed".into(),
    }
}

impl IsakmpCipher {
    /// AES-CBC with a 16-, 24- or 32-byte key.
    pub fn aes_cbc(key: &[u8]) -> Result<Self, CryptoError> {
        let alg = match key.len() {
            16 => &cipher::AES_128,
            24 => &cipher::AES_192,
            32 => &cipher::AES_256,
            n => return Err(CryptoError::KeyRejected(format!("AES-CBC key of {n} bytes"))),
        };
        let rejected = |e: aws_lc_rs::error::Unspecified| CryptoError::KeyRejected(e.to_string());
        Ok(IsakmpCipher {
            encrypt: EncryptingKey::cbc(UnboundCipherKey::new(alg, key).map_err(rejected)?).map_err(rejected)?,
            decrypt: DecryptingKey::cbc(UnboundCipherKey::new(alg, key).map_err(rejected)?).map_err(rejected)?,
        })
    }

    /// Encodes `payloads` under `header` (encryption flag set, next payload
    /// and length filled in) into `out`, encrypting the chain with the IV of
    /// the header's message ID and advancing `ivs`.
    pub fn seal(
        &self,
        ivs: &mut IvChain,
        header: &Header,
        payloads: &[Payload<'_>],
        out: &mut Vec<u8>,
    ) -> Result<(), IsakmpError> {
        out.clear();
        out.resize(HEADER_LEN, 0);
        let first = encode_payloads(payloads, out)?;
        let padded = HEADER_LEN + (out.len() - HEADER_LEN).div_ceil(BLOCK_LEN) * BLOCK_LEN;
        out.resize(padded, 0);
        if out.len() > MAX_MESSAGE_LEN {
            return Err(IsakmpError::TooLarge(out.len()));
        }
        let iv = ivs.iv(header.message_id);
        self.encrypt
            .less_safe_encrypt(&mut out[HEADER_LEN..], EncryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| cipher_error("ISAKMP encryption"))?;
        ivs.update(header.message_id, first_block(&out[out.len() - BLOCK_LEN..]));
        let h = Header {
            next_payload: first,
            flags: header.flags | FLAG_ENCRYPTION,
            length: out.len() as u32,
            ..*header
        };
        write_header(&h, out)
    }

    /// Decrypts an encrypted message into `plain` (a caller's buffer, which
    /// then holds the payload chain and its padding, to decode with
    /// [`decode_payloads`] from the returned header's next payload);
    /// advances `ivs` only when the chain decodes. A wrong key or IV shows
    /// as a malformed chain, or later as a HASH payload that does not verify.
    pub fn open(&self, ivs: &mut IvChain, datagram: &[u8], plain: &mut Vec<u8>) -> Result<Header, IsakmpError> {
        let (header, body) = split_message(datagram)?;
        if !header.is_encrypted() {
            return Err(IsakmpError::NotEncrypted);
        }
        if body.is_empty() || body.len() % BLOCK_LEN != 0 {
            return Err(IsakmpError::BadLength {
                what: "encrypted ISAKMP body",
                detail: format!("{} bytes is not a positive multiple of {BLOCK_LEN}", body.len()),
            });
        }
        let last = first_block(&body[body.len() - BLOCK_LEN..]);
        plain.clear();
        plain.extend_from_slice(body);
        let iv = ivs.iv(header.message_id);
        self.decrypt
            .decrypt(plain, DecryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| cipher_error("ISAKMP decryption"))?;
        decode_payloads(header.next_payload, plain, true)?;
        ivs.update(header.message_id, last);
        Ok(header)
    }
}

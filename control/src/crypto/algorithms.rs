//! Algorithm identifiers with their IANA transform numbers and sizes.

/// Encryption algorithms (transform type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncrAlg {
    /// AES-CBC (ENCR_AES_CBC = 12) with a 128/192/256-bit key.
    AesCbc {
        /// Key size in bits.
        key_bits: u16,
    },
    /// AES-GCM with a 16-octet ICV (ENCR_AES_GCM_16 = 20), RFC 5282 / RFC 4106.
    AesGcm16 {
        /// Key size in bits (salt not included).
        key_bits: u16,
    },
    /// ChaCha20-Poly1305 (ENCR_CHACHA20_POLY1305 = 28), RFC 7634.
    ChaCha20Poly1305,
}

/// Integrity algorithms (transform type 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntegAlg {
    /// AUTH_HMAC_SHA2_256_128 (12).
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192 (13).
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256 (14).
    HmacSha512_256,
}

/// Pseudo-random functions (transform type 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrfAlg {
    /// PRF_HMAC_SHA2_256 (5).
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (6).
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (7).
    HmacSha512,
}

/// Key exchange methods (transform type 4, and 6..=12 for RFC 9370).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeGroup {
    /// 2048-bit MODP group (14).
    Modp2048,
    /// 3072-bit MODP group (15).
    Modp3072,
    /// 4096-bit MODP group (16).
    Modp4096,
    /// 256-bit random ECP group (19).
    Ecp256,
    /// 384-bit random ECP group (20).
    Ecp384,
    /// Curve25519 (31).
    Curve25519,
    /// ML-KEM-768 (35), RFC 9370 additional key exchange.
    MlKem768,
}

impl EncrAlg {
    /// IANA transform ID.
    pub fn transform_id(self) -> u16 { todo!("crypto helper") }
    /// Value of the Key Length attribute to send (None for fixed-key ciphers).
    pub fn key_length_attribute(self) -> Option<u16> { todo!("crypto helper") }
    /// Parses a transform ID and optional Key Length attribute.
    pub fn from_transform(id: u16, key_length: Option<u16>) -> Option<Self> { todo!("crypto helper") }
    /// True for AEAD ciphers (no separate integrity transform).
    pub fn is_aead(self) -> bool { todo!("crypto helper") }
    /// Bytes of key material taken from prf+ / KEYMAT (key plus salt for AEADs:
    /// AES-GCM 16/24/32 + 4, ChaCha20-Poly1305 32 + 4).
    pub fn keymat_len(self) -> usize { todo!("crypto helper") }
}

impl IntegAlg {
    /// IANA transform ID.
    pub fn transform_id(self) -> u16 { todo!("crypto helper") }
    /// Parses a transform ID.
    pub fn from_transform(id: u16) -> Option<Self> { todo!("crypto helper") }
    /// Key length in bytes.
    pub fn key_len(self) -> usize { todo!("crypto helper") }
    /// Truncated ICV length in bytes.
    pub fn icv_len(self) -> usize { todo!("crypto helper") }
}

impl PrfAlg {
    /// IANA transform ID.
    pub fn transform_id(self) -> u16 { todo!("crypto helper") }
    /// Parses a transform ID.
    pub fn from_transform(id: u16) -> Option<Self> { todo!("crypto helper") }
    /// Output (and preferred key) length in bytes.
    pub fn output_len(self) -> usize { todo!("crypto helper") }
}

impl KeGroup {
    /// IANA transform ID (group number).
    pub fn number(self) -> u16 { todo!("crypto helper") }
    /// Parses a group number.
    pub fn from_number(n: u16) -> Option<Self> { todo!("crypto helper") }
    /// Length of the initiator's public value in bytes.
    pub fn public_len(self) -> usize { todo!("crypto helper") }
}

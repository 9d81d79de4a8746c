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
    /// ML-KEM-512 (35), FIPS 203; usually an RFC 9370 additional key exchange.
    MlKem512,
    /// ML-KEM-768 (36).
    MlKem768,
    /// ML-KEM-1024 (37).
    MlKem1024,
}

impl EncrAlg {
    /// IANA transform ID.
    pub fn transform_id(self) -> u16 {
        match self {
            EncrAlg::AesCbc { .. } => 12,
            EncrAlg::AesGcm16 { .. } => 20,
            EncrAlg::ChaCha20Poly1305 => 28,
        }
    }

    /// Value of the Key Length attribute to send (None for fixed-key ciphers).
    pub fn key_length_attribute(self) -> Option<u16> {
        match self {
            EncrAlg::AesCbc { key_bits } | EncrAlg::AesGcm16 { key_bits } => Some(key_bits),
            EncrAlg::ChaCha20Poly1305 => None,
        }
    }

    /// Parses a transform ID and optional Key Length attribute. AES requires
    /// the attribute (RFC 7296 §3.3.5) with 128, 192 or 256.
    pub fn from_transform(id: u16, key_length: Option<u16>) -> Option<Self> {
        match (id, key_length) {
            (12, Some(k @ (128 | 192 | 256))) => Some(EncrAlg::AesCbc { key_bits: k }),
            (20, Some(k @ (128 | 192 | 256))) => Some(EncrAlg::AesGcm16 { key_bits: k }),
            (28, None) => Some(EncrAlg::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// True for AEAD ciphers (no separate integrity transform).
    pub fn is_aead(self) -> bool {
        !matches!(self, EncrAlg::AesCbc { .. })
    }

    /// Bytes of the cipher key proper (without salt).
    pub fn key_len(self) -> usize {
        match self {
            EncrAlg::AesCbc { key_bits } | EncrAlg::AesGcm16 { key_bits } => usize::from(key_bits) / 8,
            EncrAlg::ChaCha20Poly1305 => 32,
        }
    }

    /// Bytes of key material taken from prf+ / KEYMAT (key plus 4-byte salt
    /// for AEADs: RFC 5282 §7.1, RFC 7634 §2).
    pub fn keymat_len(self) -> usize {
        if self.is_aead() {
            self.key_len() + 4
        } else {
            self.key_len()
        }
    }

    /// strongSwan-style name, e.g. `aes256gcm16`.
    pub fn name(self) -> String {
        match self {
            EncrAlg::AesCbc { key_bits } => format!("aes{key_bits}"),
            EncrAlg::AesGcm16 { key_bits } => format!("aes{key_bits}gcm16"),
            EncrAlg::ChaCha20Poly1305 => "chacha20poly1305".to_string(),
        }
    }
}

impl IntegAlg {
    /// IANA transform ID.
    pub fn transform_id(self) -> u16 {
        match self {
            IntegAlg::HmacSha256_128 => 12,
            IntegAlg::HmacSha384_192 => 13,
            IntegAlg::HmacSha512_256 => 14,
        }
    }

    /// Parses a transform ID.
    pub fn from_transform(id: u16) -> Option<Self> {
        match id {
            12 => Some(IntegAlg::HmacSha256_128),
            13 => Some(IntegAlg::HmacSha384_192),
            14 => Some(IntegAlg::HmacSha512_256),
            _ => None,
        }
    }

    /// Key length in bytes (RFC 4868 §2.1.1: the hash output size).
    pub fn key_len(self) -> usize {
        match self {
            IntegAlg::HmacSha256_128 => 32,
            IntegAlg::HmacSha384_192 => 48,
            IntegAlg::HmacSha512_256 => 64,
        }
    }

    /// Truncated ICV length in bytes.
    pub fn icv_len(self) -> usize {
        match self {
            IntegAlg::HmacSha256_128 => 16,
            IntegAlg::HmacSha384_192 => 24,
            IntegAlg::HmacSha512_256 => 32,
        }
    }

    /// strongSwan-style name, e.g. `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            IntegAlg::HmacSha256_128 => "sha256",
            IntegAlg::HmacSha384_192 => "sha384",
            IntegAlg::HmacSha512_256 => "sha512",
        }
    }
}

impl PrfAlg {
    /// IANA transform ID.
    pub fn transform_id(self) -> u16 {
        match self {
            PrfAlg::HmacSha256 => 5,
            PrfAlg::HmacSha384 => 6,
            PrfAlg::HmacSha512 => 7,
        }
    }

    /// Parses a transform ID.
    pub fn from_transform(id: u16) -> Option<Self> {
        match id {
            5 => Some(PrfAlg::HmacSha256),
            6 => Some(PrfAlg::HmacSha384),
            7 => Some(PrfAlg::HmacSha512),
            _ => None,
        }
    }

    /// Output (and preferred key) length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            PrfAlg::HmacSha256 => 32,
            PrfAlg::HmacSha384 => 48,
            PrfAlg::HmacSha512 => 64,
        }
    }

    /// strongSwan-style name, e.g. `prfsha256`.
    pub fn name(self) -> &'static str {
        match self {
            PrfAlg::HmacSha256 => "prfsha256",
            PrfAlg::HmacSha384 => "prfsha384",
            PrfAlg::HmacSha512 => "prfsha512",
        }
    }

    /// The PRF that pairs with an integrity algorithm (strongSwan derives the
    /// PRF this way when a proposal string names none).
    pub fn for_integ(integ: IntegAlg) -> Self {
        match integ {
            IntegAlg::HmacSha256_128 => PrfAlg::HmacSha256,
            IntegAlg::HmacSha384_192 => PrfAlg::HmacSha384,
            IntegAlg::HmacSha512_256 => PrfAlg::HmacSha512,
        }
    }
}

impl KeGroup {
    /// IANA transform ID (group number).
    pub fn number(self) -> u16 {
        match self {
            KeGroup::Modp2048 => 14,
            KeGroup::Modp3072 => 15,
            KeGroup::Modp4096 => 16,
            KeGroup::Ecp256 => 19,
            KeGroup::Ecp384 => 20,
            KeGroup::Curve25519 => 31,
            KeGroup::MlKem512 => 35,
            KeGroup::MlKem768 => 36,
            KeGroup::MlKem1024 => 37,
        }
    }

    /// Parses a group number.
    pub fn from_number(n: u16) -> Option<Self> {
        match n {
            14 => Some(KeGroup::Modp2048),
            15 => Some(KeGroup::Modp3072),
            16 => Some(KeGroup::Modp4096),
            19 => Some(KeGroup::Ecp256),
            20 => Some(KeGroup::Ecp384),
            31 => Some(KeGroup::Curve25519),
            35 => Some(KeGroup::MlKem512),
            36 => Some(KeGroup::MlKem768),
            37 => Some(KeGroup::MlKem1024),
            _ => None,
        }
    }

    /// Length of the initiator's public value in bytes (for ML-KEM the
    /// encapsulation key, 384 k + 32; see [`KeGroup::response_len`]).
    pub fn public_len(self) -> usize {
        match self {
            KeGroup::Modp2048 => 256,
            KeGroup::Modp3072 => 384,
            KeGroup::Modp4096 => 512,
            KeGroup::Ecp256 => 64,
            KeGroup::Ecp384 => 96,
            KeGroup::Curve25519 => 32,
            KeGroup::MlKem512 => 800,
            KeGroup::MlKem768 => 1184,
            KeGroup::MlKem1024 => 1568,
        }
    }

    /// Length of the responder's KE data: the public value length, or for
    /// ML-KEM the ciphertext length (FIPS 203 Table 3).
    pub fn response_len(self) -> usize {
        match self {
            KeGroup::MlKem512 => 768,
            KeGroup::MlKem768 => 1088,
            KeGroup::MlKem1024 => 1568,
            g => g.public_len(),
        }
    }

    /// The ML-KEM module rank k, or None for a Diffie-Hellman group. A KEM's
    /// initiator sends an encapsulation key and its responder a ciphertext,
    /// so the two KE payloads differ in meaning and length.
    pub fn ml_kem_rank(self) -> Option<usize> {
        match self {
            KeGroup::MlKem512 => Some(2),
            KeGroup::MlKem768 => Some(3),
            KeGroup::MlKem1024 => Some(4),
            _ => None,
        }
    }

    /// True for the post-quantum methods (ML-KEM).
    pub fn is_post_quantum(self) -> bool {
        self.ml_kem_rank().is_some()
    }

    /// strongSwan-style name, e.g. `x25519`, `modp2048`, `ecp256`, `mlkem768`.
    pub fn name(self) -> &'static str {
        match self {
            KeGroup::Modp2048 => "modp2048",
            KeGroup::Modp3072 => "modp3072",
            KeGroup::Modp4096 => "modp4096",
            KeGroup::Ecp256 => "ecp256",
            KeGroup::Ecp384 => "ecp384",
            KeGroup::Curve25519 => "x25519",
            KeGroup::MlKem512 => "mlkem512",
            KeGroup::MlKem768 => "mlkem768",
            KeGroup::MlKem1024 => "mlkem1024",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_ids_round_trip() {
        for e in [
            EncrAlg::AesCbc { key_bits: 128 },
            EncrAlg::AesCbc { key_bits: 256 },
            EncrAlg::AesGcm16 { key_bits: 128 },
            EncrAlg::AesGcm16 { key_bits: 256 },
            EncrAlg::ChaCha20Poly1305,
        ] {
            assert_eq!(
                EncrAlg::from_transform(e.transform_id(), e.key_length_attribute()),
                Some(e)
            );
        }
        assert_eq!(
            EncrAlg::from_transform(20, None),
            None,
            "AES without key length is invalid"
        );
        assert_eq!(EncrAlg::from_transform(12, Some(100)), None);
        for i in [
            IntegAlg::HmacSha256_128,
            IntegAlg::HmacSha384_192,
            IntegAlg::HmacSha512_256,
        ] {
            assert_eq!(IntegAlg::from_transform(i.transform_id()), Some(i));
        }
        for p in [PrfAlg::HmacSha256, PrfAlg::HmacSha384, PrfAlg::HmacSha512] {
            assert_eq!(PrfAlg::from_transform(p.transform_id()), Some(p));
        }
        for n in [14, 15, 16, 19, 20, 31, 35, 36, 37] {
            assert_eq!(KeGroup::from_number(n).map(KeGroup::number), Some(n));
        }
        assert_eq!(EncrAlg::AesGcm16 { key_bits: 256 }.keymat_len(), 36);
    }
}

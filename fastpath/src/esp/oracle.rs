//! Pure-Rust AES-GCM-16 ESP (RustCrypto `aes-gcm`), independent of aws-lc-rs:
//! a differential-test oracle for [`super::aead::EspCipher`] (feature `rustcrypto`).

use super::{ESP_HEADER_LEN, EspError};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce, Tag};

enum Gcm {
    A128(Box<Aes128Gcm>),
    A256(Box<Aes256Gcm>),
}

/// AES-GCM-16 keyed from ESP key material (key || 4-byte salt).
pub struct OracleGcm {
    gcm: Gcm,
    salt: [u8; 4],
}

impl OracleGcm {
    /// Keys from 20 (AES-128) or 36 (AES-256) bytes of key material.
    pub fn new(key_material: &[u8]) -> Result<Self, EspError> {
        let bad = || EspError::Malformed("oracle key length");
        let (k, s) = key_material
            .split_at_checked(key_material.len().saturating_sub(4))
            .ok_or_else(bad)?;
        let gcm = match k.len() {
            16 => Gcm::A128(Box::new(Aes128Gcm::new_from_slice(k).map_err(|_| bad())?)),
            32 => Gcm::A256(Box::new(Aes256Gcm::new_from_slice(k).map_err(|_| bad())?)),
            _ => return Err(bad()),
        };
        let mut salt = [0u8; 4];
        salt.copy_from_slice(s);
        Ok(Self { gcm, salt })
    }

    /// Seals `esp` (`SPI | SEQ | IV space | plaintext | ICV space`) like
    /// [`super::aead::EspCipher::seal`]: IV = 64-bit sequence number.
    pub fn seal(&self, esp: &mut [u8], seq: u64, esn: bool) -> Result<(), EspError> {
        if esp.len() < ESP_HEADER_LEN + 8 + 16 {
            return Err(EspError::Malformed("shorter than ESP overhead"));
        }
        esp[ESP_HEADER_LEN..ESP_HEADER_LEN + 8].copy_from_slice(&seq.to_be_bytes());
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(&seq.to_be_bytes());
        let nonce = Nonce::from(n);
        let mut aad = Vec::with_capacity(12);
        aad.extend_from_slice(&esp[..4]);
        if esn {
            aad.extend_from_slice(&((seq >> 32) as u32).to_be_bytes());
        }
        aad.extend_from_slice(&esp[4..8]);
        let body_end = esp.len() - 16;
        let body = &mut esp[ESP_HEADER_LEN + 8..body_end];
        let tag = match &self.gcm {
            Gcm::A128(g) => g.encrypt_inout_detached(&nonce, &aad, body.into()),
            Gcm::A256(g) => g.encrypt_inout_detached(&nonce, &aad, body.into()),
        }
        .map_err(|_| EspError::Oversize("oracle input too long"))?;
        esp[body_end..].copy_from_slice(tag.as_slice());
        Ok(())
    }

    /// Verifies and decrypts like [`super::aead::EspCipher::open`].
    pub fn open(&self, esp: &mut [u8], seq: u64, esn: bool) -> Result<(), EspError> {
        if esp.len() < ESP_HEADER_LEN + 8 + 16 {
            return Err(EspError::Malformed("shorter than ESP overhead"));
        }
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(&esp[ESP_HEADER_LEN..ESP_HEADER_LEN + 8]);
        let nonce = Nonce::from(n);
        let mut aad = Vec::with_capacity(12);
        aad.extend_from_slice(&esp[..4]);
        if esn {
            aad.extend_from_slice(&((seq >> 32) as u32).to_be_bytes());
        }
        aad.extend_from_slice(&esp[4..8]);
        let body_end = esp.len() - 16;
        let mut t = [0u8; 16];
        t.copy_from_slice(&esp[body_end..]);
        let tag = Tag::from(t);
        let body = &mut esp[ESP_HEADER_LEN + 8..body_end];
        match &self.gcm {
            Gcm::A128(g) => g.decrypt_inout_detached(&nonce, &aad, body.into(), &tag),
            Gcm::A256(g) => g.decrypt_inout_detached(&nonce, &aad, body.into(), &tag),
        }
        .map_err(|_| EspError::IcvFailure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::{PacketBuf, PacketBuffer};
    use crate::esp::Mode;
    use crate::esp::aead::{CipherKeys, EncAlg, EspCipher, IntegAlg, IvSource};
    use crate::esp::encap::{EncapParams, encap};
    use zeroize::Zeroizing;

    /// aws-lc-rs encapsulation and the RustCrypto oracle agree byte for byte,
    /// and each opens what the other sealed.
    #[test]
    fn aws_lc_and_rustcrypto_agree() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ivs = IvSource::new();
        for (enc, klen) in [(EncAlg::AesGcm16_128, 20), (EncAlg::AesGcm16_256, 36)] {
            for round in 0..200 {
                let key: Vec<u8> = (0..klen).map(|_| next() as u8).collect();
                let c = EspCipher::new(&CipherKeys {
                    enc,
                    integ: IntegAlg::None,
                    enc_key: Zeroizing::new(key.clone()),
                    integ_key: Zeroizing::new(Vec::new()),
                })
                .unwrap();
                let o = OracleGcm::new(&key).unwrap();
                let size = 20 + (next() as usize % 1400);
                let mut inner = vec![0u8; size];
                inner.iter_mut().for_each(|b| *b = next() as u8);
                inner[0] = 0x45;
                let esn = round % 2 == 0;
                let seq = if esn {
                    next() >> 1
                } else {
                    next() & 0xffff_ffff
                } | 1;
                let mut buf = PacketBuf::from_slice(&inner).unwrap();
                let p = EncapParams {
                    cipher: &c,
                    spi: next() as u32 | 0x100,
                    seq,
                    esn,
                    mode: Mode::Tunnel,
                    max_esp_len: 4096,
                };
                encap(&mut buf, &p, &mut ivs).unwrap();
                let aws = buf.data().to_vec();
                // Re-seal the same plaintext frame with the oracle.
                let mut frame = aws.clone();
                c.open(&mut frame, seq, esn).unwrap();
                let mut via_oracle = frame.clone();
                o.seal(&mut via_oracle, seq, esn).unwrap();
                assert_eq!(via_oracle, aws, "{enc:?} size {size} esn {esn}");
                let mut opened = aws.clone();
                o.open(&mut opened, seq, esn).unwrap();
                assert_eq!(opened[16..opened.len() - 16], frame[16..frame.len() - 16]);
                let mut bad = aws.clone();
                let i = next() as usize % bad.len();
                bad[i] ^= 0x01;
                // Flipping a bit of the sequence number only matters to the AAD without ESN
                // or through the inferred high half; the oracle must agree with aws-lc-rs.
                assert_eq!(
                    o.open(&mut bad.clone(), seq, esn).is_ok(),
                    c.open(&mut bad, seq, esn).is_ok()
                );
            }
        }
    }
}

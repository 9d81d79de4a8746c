//! AUTH payload computation for shared keys (RFC 7296 §2.15).

use std::sync::OnceLock;

use super::PrfAlg;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

/// The pad string of the shared-key AUTH (RFC 7296 §2.15).
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// The octets an AUTH covers: RealMessage | NonceData of the peer | prf(SK_p, RestOfIDPayload).
/// `id_body` is the ID payload body after the generic header (ID type, 3 reserved bytes, data).
pub fn signed_octets(real_message: &[u8], peer_nonce: &[u8], prf: PrfAlg, sk_p: &[u8], id_body: &[u8]) -> Vec<u8> {
    let maced_id = prf.prf(sk_p, &[id_body]);
    let mut out = Vec::with_capacity(real_message.len() + peer_nonce.len() + maced_id.len());
    out.extend_from_slice(real_message);
    out.extend_from_slice(peer_nonce);
    out.extend_from_slice(&maced_id);
    out
}

/// The octets an AUTH covers (as [`signed_octets`]), kept as their three
/// parts so that a shared-key AUTH is computed without copying the message.
pub struct SignedOctets<'a> {
    real_message: &'a [u8],
    peer_nonce: &'a [u8],
    maced_id: Zeroizing<Vec<u8>>,
    int_auth: Vec<u8>,
}

impl<'a> SignedOctets<'a> {
    /// RealMessage | `peer_nonce` | prf(`sk_p`, ID type | 3 reserved bytes | `id_data`).
    pub fn new(
        real_message: &'a [u8],
        peer_nonce: &'a [u8],
        prf: PrfAlg,
        sk_p: &[u8],
        id_type: u8,
        id_data: &[u8],
    ) -> Self {
        let maced_id = prf.prf(sk_p, &[&[id_type, 0, 0, 0], id_data]);
        Self {
            real_message,
            peer_nonce,
            maced_id,
            int_auth: Vec::new(),
        }
    }

    /// Appends IntAuth (RFC 9242 §3.3.2), which binds the IKE_INTERMEDIATE
    /// exchanges; empty when there were none.
    pub fn with_int_auth(mut self, int_auth: Vec<u8>) -> Self {
        self.int_auth = int_auth;
        self
    }

    /// The parts, in order.
    pub fn parts(&self) -> [&[u8]; 4] {
        [self.real_message, self.peer_nonce, &self.maced_id, &self.int_auth]
    }

    /// The octets in one buffer (what a signature covers).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

/// AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), signed octets).
pub fn psk_auth(prf: PrfAlg, psk: &[u8], octets: &[u8]) -> Vec<u8> {
    let padded_key = prf.prf(psk, &[KEY_PAD]);
    prf.prf(&padded_key, &[octets]).to_vec()
}

/// Verifies a received shared-key AUTH in constant time.
pub fn verify_psk_auth(prf: PrfAlg, psk: &[u8], octets: &[u8], received: &[u8]) -> bool {
    let expected = psk_auth(prf, psk, octets);
    verify_slices_are_equal(&expected, received).is_ok()
}

/// A pre-shared key, with the key its AUTH payloads are computed with,
/// prf(Shared Secret, "Key Pad for IKEv2"), derived once per PRF on first use
/// and kept as a ready HMAC key (it depends on nothing but the secret and the
/// PRF). The secret is zeroized on drop, and so are the HMAC key schedules
/// (aws-lc cleanses HMAC contexts when they are freed).
pub struct PresharedKey {
    secret: Zeroizing<Vec<u8>>,
    /// By PRF: HMAC-SHA-256, -384, -512.
    auth_keys: [OnceLock<hmac::Key>; 3],
}

impl PresharedKey {
    /// Wraps the shared secret.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: Zeroizing::new(secret.to_vec()),
            auth_keys: Default::default(),
        }
    }

    /// The shared secret.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The HMAC key prf(Shared Secret, "Key Pad for IKEv2") of `prf`.
    fn auth_key(&self, prf: PrfAlg) -> &hmac::Key {
        let slot = match prf {
            PrfAlg::HmacSha256 => &self.auth_keys[0],
            PrfAlg::HmacSha384 => &self.auth_keys[1],
            PrfAlg::HmacSha512 => &self.auth_keys[2],
        };
        slot.get_or_init(|| prf.key(&prf.prf(&self.secret, &[KEY_PAD])))
    }

    /// AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), signed octets).
    pub fn auth(&self, prf: PrfAlg, octets: &SignedOctets<'_>) -> Vec<u8> {
        PrfAlg::prf_with_key(self.auth_key(prf), &octets.parts()).to_vec()
    }

    /// Verifies a received AUTH in constant time.
    pub fn verify(&self, prf: PrfAlg, octets: &SignedOctets<'_>, received: &[u8]) -> bool {
        let expected = PrfAlg::prf_with_key(self.auth_key(prf), &octets.parts());
        verify_slices_are_equal(&expected, received).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_auth_round_trip_and_rejects() {
        let octets = signed_octets(b"msg", b"nonce", PrfAlg::HmacSha256, b"skp", &[1, 0, 0, 0, 10, 0, 0, 1]);
        assert_eq!(octets.len(), 3 + 5 + 32);
        let auth = psk_auth(PrfAlg::HmacSha256, b"secret", &octets);
        assert!(verify_psk_auth(PrfAlg::HmacSha256, b"secret", &octets, &auth));
        assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"secreT", &octets, &auth));
        assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"secret", &octets, &auth[..31]));
        let mut bad = auth.clone();
        bad[0] ^= 1;
        assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"secret", &octets, &bad));
    }

    #[test]
    fn preshared_key_matches_the_one_shot_computation_for_every_prf() {
        let key = PresharedKey::new(b"secret");
        for prf in [PrfAlg::HmacSha256, PrfAlg::HmacSha384, PrfAlg::HmacSha512] {
            let parts = SignedOctets::new(b"message", b"nonce", prf, b"sk_p", 1, &[10, 0, 0, 1]);
            let flat = signed_octets(b"message", b"nonce", prf, b"sk_p", &[1, 0, 0, 0, 10, 0, 0, 1]);
            assert_eq!(parts.to_vec(), flat);
            let expected = psk_auth(prf, b"secret", &flat);
            // Twice: the second use takes the kept key.
            for _ in 0..2 {
                assert_eq!(key.auth(prf, &parts), expected);
                assert!(key.verify(prf, &parts, &expected));
            }
            let mut bad = expected.clone();
            bad[5] ^= 0x40;
            assert!(!key.verify(prf, &parts, &bad));
            assert!(!key.verify(prf, &parts, &expected[..expected.len() - 1]));
            assert!(!PresharedKey::new(b"secreT").verify(prf, &parts, &expected));
        }
        assert_eq!(key.secret(), b"secret");
    }
}

//! AUTH payload computation for shared keys (RFC 7296 §2.15).

use super::PrfAlg;
use aws_lc_rs::constant_time::verify_slices_are_equal;

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
}

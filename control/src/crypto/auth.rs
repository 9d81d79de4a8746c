//! AUTH payload computation for shared keys (RFC 7296 §2.15).

use super::PrfAlg;

/// The octets an AUTH covers: RealMessage | NonceData of the peer | prf(SK_p, RestOfIDPayload).
/// `id_body` is the ID payload body after the generic header (ID type, 3 reserved bytes, data).
pub fn signed_octets(real_message: &[u8], peer_nonce: &[u8], prf: PrfAlg, sk_p: &[u8], id_body: &[u8]) -> Vec<u8> {
    todo!("crypto helper")
}

/// AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), signed octets).
pub fn psk_auth(prf: PrfAlg, psk: &[u8], octets: &[u8]) -> Vec<u8> {
    todo!("crypto helper")
}

/// Verifies a received shared-key AUTH in constant time.
pub fn verify_psk_auth(prf: PrfAlg, psk: &[u8], octets: &[u8], received: &[u8]) -> bool {
    todo!("crypto helper")
}

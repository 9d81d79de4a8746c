//! MS-CHAPv2 (RFC 2759) and its MPPE key derivation (RFC 3079), as EAP-MSCHAPv2
//! uses them.
//!
//! The MSK is `MasterReceiveKey || MasterSendKey || 32 zero octets`, both keys
//! named from the authenticator's side: that is what Windows, strongSwan and
//! hostapd derive, and what a RADIUS server returns as MS-MPPE-Recv-Key and
//! MS-MPPE-Send-Key (RFC 2548).

use aws_lc_rs::digest;
use des::cipher::{BlockCipherEncrypt, KeyInit};
use md4::{Digest, Md4};
use zeroize::Zeroizing;

use super::Msk;

/// An NT password hash, MD4(UTF-16LE(password)).
pub type NtHash = Zeroizing<[u8; 16]>;

/// RFC 2759 §8.7 Magic1.
const AUTH_MAGIC1: &[u8] = b"Magic server to client signing constant";
/// RFC 2759 §8.7 Magic2.
const AUTH_MAGIC2: &[u8] = b"Pad to make it do more than one iteration";
/// RFC 3079 §3.4 Magic1.
const MPPE_MAGIC1: &[u8] = b"This is the MPPE Master Key";
/// RFC 3079 §3.4 Magic2: the authenticator's receive key.
const MPPE_MAGIC2: &[u8] = b"On the client side, this is the send key; on the server side, it is the receive key.";
/// RFC 3079 §3.4 Magic3: the authenticator's send key.
const MPPE_MAGIC3: &[u8] = b"On the client side, this is the receive key; on the server side, it is the send key.";

/// The length of the "S=" authenticator response string (RFC 2759 §5).
pub const AUTH_RESPONSE_LEN: usize = 42;

/// Hashes a password the way Windows stores it (RFC 2759 §8.3). The
/// password's UTF-8 is converted to UTF-16LE.
pub fn nt_password_hash(password: &str) -> NtHash {
    let unicode: Zeroizing<Vec<u8>> = Zeroizing::new(password.encode_utf16().flat_map(u16::to_le_bytes).collect());
    Zeroizing::new(Md4::digest(&unicode[..]).into())
}

/// RFC 2759 §8.4: MD4 of the NT hash.
pub fn hash_nt_password_hash(hash: &[u8; 16]) -> Zeroizing<[u8; 16]> {
    Zeroizing::new(Md4::digest(hash).into())
}

/// The user name without a "DOMAIN\" prefix, as the challenge hash uses it
/// (RFC 2759 §4: "the user name ... without any domain").
pub fn username_for_hash(identity: &[u8]) -> &[u8] {
    match identity.iter().rposition(|&b| b == b'\\') {
        Some(i) => &identity[i + 1..],
        None => identity,
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// RFC 2759 §8.2: the 8-byte challenge both DES and the authenticator
/// response are computed over.
pub fn challenge_hash(peer_challenge: &[u8; 16], authenticator_challenge: &[u8; 16], username: &[u8]) -> [u8; 8] {
    let d = sha1(&[peer_challenge, authenticator_challenge, username_for_hash(username)]);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// Spreads 7 key bytes over 8 DES key bytes (RFC 2759 §8.6); parity bits are
/// ignored by DES.
fn des_key(seven: &[u8]) -> Zeroizing<[u8; 8]> {
    let mut k = Zeroizing::new([0u8; 8]);
    let mut bits: u64 = 0;
    for &b in seven {
        bits = (bits << 8) | u64::from(b);
    }
    for (i, byte) in k.iter_mut().enumerate() {
        *byte = (((bits >> (49 - 7 * i)) & 0x7f) as u8) << 1;
    }
    k
}

/// RFC 2759 §8.5: the 24-byte NT-Response.
pub fn challenge_response(challenge: &[u8; 8], password_hash: &[u8; 16]) -> [u8; 24] {
    let mut z = Zeroizing::new([0u8; 21]);
    z[..16].copy_from_slice(password_hash);
    let mut out = [0u8; 24];
    for i in 0..3 {
        let key = des_key(&z[7 * i..7 * i + 7]);
        let cipher = des::Des::new(&(*key).into());
        let mut block = (*challenge).into();
        cipher.encrypt_block(&mut block);
        let block: [u8; 8] = block.into();
        out[8 * i..8 * i + 8].copy_from_slice(&block);
    }
    out
}

/// RFC 2759 §8.1: the peer's NT-Response for a challenge.
pub fn generate_nt_response(
    authenticator_challenge: &[u8; 16],
    peer_challenge: &[u8; 16],
    username: &[u8],
    password_hash: &[u8; 16],
) -> [u8; 24] {
    challenge_response(
        &challenge_hash(peer_challenge, authenticator_challenge, username),
        password_hash,
    )
}

/// RFC 2759 §8.7: "S=" followed by 40 upper-case hex digits.
pub fn authenticator_response(
    password_hash: &[u8; 16],
    nt_response: &[u8; 24],
    peer_challenge: &[u8; 16],
    authenticator_challenge: &[u8; 16],
    username: &[u8],
) -> [u8; AUTH_RESPONSE_LEN] {
    let hash_hash = hash_nt_password_hash(password_hash);
    let digest = sha1(&[&hash_hash[..], nt_response, AUTH_MAGIC1]);
    let challenge = challenge_hash(peer_challenge, authenticator_challenge, username);
    let digest = sha1(&[&digest, &challenge, AUTH_MAGIC2]);
    let mut out = [0u8; AUTH_RESPONSE_LEN];
    out[0] = b'S';
    out[1] = b'=';
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, b) in digest.iter().enumerate() {
        out[2 + 2 * i] = HEX[usize::from(b >> 4)];
        out[3 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// RFC 3079 §3.4 GetMasterKey.
pub fn master_key(password_hash_hash: &[u8; 16], nt_response: &[u8; 24]) -> Zeroizing<[u8; 16]> {
    let d = Zeroizing::new(sha1(&[password_hash_hash, nt_response, MPPE_MAGIC1]));
    let mut out = Zeroizing::new([0u8; 16]);
    out.copy_from_slice(&d[..16]);
    out
}

/// RFC 3079 §3.4 GetAsymmetricStartKey for a 128-bit key; `magic` picks the
/// direction.
fn asymmetric_start_key(master: &[u8; 16], magic: &[u8]) -> Zeroizing<[u8; 16]> {
    let d = Zeroizing::new(sha1(&[master, &[0u8; 40], magic, &[0xf2u8; 40]]));
    let mut out = Zeroizing::new([0u8; 16]);
    out.copy_from_slice(&d[..16]);
    out
}

/// The authenticator's MPPE keys (MasterSendKey, MasterReceiveKey), which
/// RADIUS carries as MS-MPPE-Send-Key and MS-MPPE-Recv-Key.
pub fn mppe_keys(password_hash: &[u8; 16], nt_response: &[u8; 24]) -> (Zeroizing<[u8; 16]>, Zeroizing<[u8; 16]>) {
    let master = master_key(&hash_nt_password_hash(password_hash), nt_response);
    (
        asymmetric_start_key(&master, MPPE_MAGIC3),
        asymmetric_start_key(&master, MPPE_MAGIC2),
    )
}

/// The EAP-MSCHAPv2 MSK from the two MPPE keys: receive key, send key, then
/// zeros to 64 bytes. A RADIUS relay builds the same value from
/// MS-MPPE-Recv-Key and MS-MPPE-Send-Key.
pub fn msk_from_mppe(recv_key: &[u8], send_key: &[u8]) -> Msk {
    let mut msk = Zeroizing::new([0u8; 64]);
    let recv = &recv_key[..recv_key.len().min(32)];
    let send = &send_key[..send_key.len().min(64 - recv.len())];
    msk[..recv.len()].copy_from_slice(recv);
    msk[recv.len()..recv.len() + send.len()].copy_from_slice(send);
    msk
}

/// The EAP-MSCHAPv2 MSK (same value on both sides).
pub fn msk(password_hash: &[u8; 16], nt_response: &[u8; 24]) -> Msk {
    let (send, recv) = mppe_keys(password_hash, nt_response);
    msk_from_mppe(&recv[..], &send[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    // RFC 2759 §9.2.
    const USER: &[u8] = b"User";
    const PASSWORD: &str = "clientPass";
    const AUTH_CHALLENGE: &str = "5B5D7C7D7B3F2F3E3C2C602132262628";
    const PEER_CHALLENGE: &str = "21402324255E262A28295F2B3A337C7E";

    fn arr<const N: usize>(v: Vec<u8>) -> [u8; N] {
        v.try_into().expect("length")
    }

    #[test]
    fn rfc2759_known_answers() {
        let ac: [u8; 16] = arr(h(AUTH_CHALLENGE));
        let pc: [u8; 16] = arr(h(PEER_CHALLENGE));
        assert_eq!(challenge_hash(&pc, &ac, USER).to_vec(), h("D02E4386BCE91226"));
        let ph = nt_password_hash(PASSWORD);
        assert_eq!(ph.to_vec(), h("44EBBA8D5312B8D611474411F56989AE"));
        let nt = generate_nt_response(&ac, &pc, USER, &ph);
        assert_eq!(nt.to_vec(), h("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF"));
        assert_eq!(
            hash_nt_password_hash(&ph).to_vec(),
            h("41C00C584BD2D91C4017A2A12FA59F3F")
        );
        assert_eq!(
            &authenticator_response(&ph, &nt, &pc, &ac, USER)[..],
            b"S=407A5589115FD0D6209F510FE9C04566932CDA56"
        );
    }

    #[test]
    fn domain_prefix_is_not_hashed() {
        let ac: [u8; 16] = arr(h(AUTH_CHALLENGE));
        let pc: [u8; 16] = arr(h(PEER_CHALLENGE));
        assert_eq!(challenge_hash(&pc, &ac, b"CORP\\User"), challenge_hash(&pc, &ac, USER));
    }

    #[test]
    fn rfc3079_known_answers() {
        // RFC 3079 §3.5.3 (128-bit keys).
        let ph = nt_password_hash(PASSWORD);
        let nt: [u8; 24] = arr(h("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF"));
        let master = master_key(&hash_nt_password_hash(&ph), &nt);
        assert_eq!(master.to_vec(), h("FDECE3717A8C838CB388E527AE3CDD31"));
        // The RFC's SendStartKey128 is computed with IsServer = TRUE (Magic3):
        // the authenticator's send key, the MSK's second half.
        let (send, recv) = mppe_keys(&ph, &nt);
        assert_eq!(send.to_vec(), h("8B7CDC149B993A1BA118CB153F56DCCB"));
        let m = msk(&ph, &nt);
        assert_eq!(&m[..16], &recv[..]);
        assert_eq!(&m[16..32], &send[..]);
        assert_eq!(&m[32..], &[0u8; 32]);
    }
}

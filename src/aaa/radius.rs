//! The RADIUS packet format (RFC 2865 §3, §5) with what an EAP relay needs:
//! Message-Authenticator and EAP-Message fragments (RFC 3579 §3),
//! Response Authenticator verification and MS-MPPE key decryption
//! (RFC 2548 §2.4).
//!
//! Decoding borrows from the input and checks every length; the security
//! checks need the shared secret and the request, so they are separate
//! ([`verify_response`]).

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use zeroize::Zeroizing;

/// RFC 2865 §3: 20 to 4096 octets.
pub const MAX_PACKET_LEN: usize = 4096;
const HEADER_LEN: usize = 20;
/// The most value bytes one attribute carries.
pub const MAX_ATTR_VALUE: usize = 253;

/// RADIUS codes used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    AccessRequest,
    AccessAccept,
    AccessReject,
    AccessChallenge,
    AccountingRequest,
    AccountingResponse,
    DisconnectRequest,
    DisconnectAck,
    DisconnectNak,
    CoaRequest,
    CoaAck,
    CoaNak,
    Other(u8),
}

impl Code {
    pub fn to_u8(self) -> u8 {
        match self {
            Code::AccessRequest => 1,
            Code::AccessAccept => 2,
            Code::AccessReject => 3,
            Code::AccessChallenge => 11,
            Code::AccountingRequest => 4,
            Code::AccountingResponse => 5,
            Code::DisconnectRequest => 40,
            Code::DisconnectAck => 41,
            Code::DisconnectNak => 42,
            Code::CoaRequest => 43,
            Code::CoaAck => 44,
            Code::CoaNak => 45,
            Code::Other(c) => c,
        }
    }

    pub fn from_u8(c: u8) -> Self {
        match c {
            1 => Code::AccessRequest,
            2 => Code::AccessAccept,
            3 => Code::AccessReject,
            11 => Code::AccessChallenge,
            4 => Code::AccountingRequest,
            5 => Code::AccountingResponse,
            40 => Code::DisconnectRequest,
            41 => Code::DisconnectAck,
            42 => Code::DisconnectNak,
            43 => Code::CoaRequest,
            44 => Code::CoaAck,
            45 => Code::CoaNak,
            c => Code::Other(c),
        }
    }
}

/// Attribute types used here (RFC 2865, 2869, 3579).
#[derive(Debug)]
#[non_exhaustive]
pub struct Attr;

impl Attr {
    pub const USER_NAME: u8 = 1;
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const NAS_PORT: u8 = 5;
    pub const SERVICE_TYPE: u8 = 6;
    pub const FRAMED_IP_ADDRESS: u8 = 8;
    pub const STATE: u8 = 24;
    pub const CLASS: u8 = 25;
    pub const VENDOR_SPECIFIC: u8 = 26;
    pub const SESSION_TIMEOUT: u8 = 27;
    pub const CALLED_STATION_ID: u8 = 30;
    pub const CALLING_STATION_ID: u8 = 31;
    pub const NAS_IDENTIFIER: u8 = 32;
    pub const PROXY_STATE: u8 = 33;
    pub const ACCT_STATUS_TYPE: u8 = 40;
    pub const ACCT_DELAY_TIME: u8 = 41;
    pub const ACCT_INPUT_OCTETS: u8 = 42;
    pub const ACCT_OUTPUT_OCTETS: u8 = 43;
    pub const ACCT_SESSION_ID: u8 = 44;
    pub const ACCT_SESSION_TIME: u8 = 46;
    pub const ACCT_INPUT_PACKETS: u8 = 47;
    pub const ACCT_OUTPUT_PACKETS: u8 = 48;
    pub const ACCT_TERMINATE_CAUSE: u8 = 49;
    pub const ACCT_MULTI_SESSION_ID: u8 = 50;
    pub const ACCT_INPUT_GIGAWORDS: u8 = 52;
    pub const ACCT_OUTPUT_GIGAWORDS: u8 = 53;
    pub const EVENT_TIMESTAMP: u8 = 55;
    pub const NAS_PORT_TYPE: u8 = 61;
    pub const EAP_MESSAGE: u8 = 79;
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
    pub const ACCT_INTERIM_INTERVAL: u8 = 85;
    pub const FRAMED_POOL: u8 = 88;
    pub const NAS_IPV6_ADDRESS: u8 = 95;
    pub const ERROR_CAUSE: u8 = 101;
}

/// Microsoft's vendor id and its MPPE key attributes (RFC 2548).
pub const VENDOR_MICROSOFT: u32 = 311;
pub const MS_MPPE_SEND_KEY: u8 = 16;
pub const MS_MPPE_RECV_KEY: u8 = 17;

/// Why a RADIUS packet was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RadiusError {
    #[error("RADIUS packet truncated: {have} bytes, at least {need} needed")]
    Truncated { need: usize, have: usize },
    #[error("RADIUS Length field says {field} bytes, the datagram has {actual}")]
    LengthMismatch { field: usize, actual: usize },
    #[error("RADIUS attribute {attr} at offset {offset} has length {len}")]
    BadAttributeLength { attr: u8, offset: usize, len: usize },
    #[error("RADIUS packet of {0} bytes exceeds 4096")]
    TooLong(usize),
    #[error("RADIUS Response Authenticator does not verify")]
    BadResponseAuthenticator,
    #[error("RADIUS Request Authenticator does not verify (wrong shared secret?)")]
    BadRequestAuthenticator,
    #[error("RADIUS Message-Authenticator does not verify")]
    BadMessageAuthenticator,
    #[error("RADIUS Message-Authenticator missing from a packet with EAP-Message")]
    MissingMessageAuthenticator,
    #[error("RADIUS Message-Authenticator has {0} bytes, not 16")]
    MessageAuthenticatorLength(usize),
    #[error("MS-MPPE key attribute malformed: {0}")]
    BadMppeKey(&'static str),
}

/// A decoded packet; attributes borrow from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub code: Code,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub attributes: Vec<(u8, &'a [u8])>,
}

/// Decodes one RADIUS datagram (lengths only; see [`verify_response`]).
pub fn decode(buf: &[u8]) -> Result<Packet<'_>, RadiusError> {
    if buf.len() < HEADER_LEN {
        return Err(RadiusError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        });
    }
    if buf.len() > MAX_PACKET_LEN {
        return Err(RadiusError::TooLong(buf.len()));
    }
    let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    // RFC 2865 §3 lets a receiver ignore padding beyond Length, but a
    // shorter datagram is malformed; this client accepts exact lengths only.
    if length != buf.len() {
        return Err(RadiusError::LengthMismatch {
            field: length,
            actual: buf.len(),
        });
    }
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(&buf[4..20]);
    let mut attributes = Vec::new();
    let mut off = HEADER_LEN;
    while off < buf.len() {
        let rest = &buf[off..];
        if rest.len() < 2 {
            return Err(RadiusError::BadAttributeLength {
                attr: rest[0],
                offset: off,
                len: rest.len(),
            });
        }
        let len = usize::from(rest[1]);
        if len < 2 || len > rest.len() {
            return Err(RadiusError::BadAttributeLength {
                attr: rest[0],
                offset: off,
                len,
            });
        }
        attributes.push((rest[0], &rest[2..len]));
        off += len;
    }
    Ok(Packet {
        code: Code::from_u8(buf[0]),
        identifier: buf[1],
        authenticator,
        attributes,
    })
}

impl<'a> Packet<'a> {
    /// The first attribute of type `t`.
    pub fn attr(&self, t: u8) -> Option<&'a [u8]> {
        self.attributes.iter().find(|(a, _)| *a == t).map(|(_, v)| *v)
    }

    /// All attributes of type `t`, in order.
    pub fn attrs(&self, t: u8) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attributes.iter().filter(move |(a, _)| *a == t).map(|(_, v)| *v)
    }

    /// The EAP packet reassembled from every EAP-Message (RFC 3579 §3.1).
    pub fn eap_message(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut any = false;
        for v in self.attrs(Attr::EAP_MESSAGE) {
            out.extend_from_slice(v);
            any = true;
        }
        any.then_some(out)
    }

    /// Vendor-Specific sub-attributes of `vendor` with type `t` (RFC 2865
    /// §5.26, in the usual one-octet type/length layout).
    pub fn vendor_attr(&self, vendor: u32, t: u8) -> Option<&'a [u8]> {
        self.attrs(Attr::VENDOR_SPECIFIC).find_map(|v| {
            let (id, mut sub) = (v.get(..4)?, v.get(4..)?);
            if u32::from_be_bytes(id.try_into().ok()?) != vendor {
                return None;
            }
            while sub.len() >= 2 {
                let len = usize::from(sub[1]);
                if len < 2 || len > sub.len() {
                    return None;
                }
                if sub[0] == t {
                    return Some(&sub[2..len]);
                }
                sub = &sub[len..];
            }
            None
        })
    }
}

fn hmac_md5(secret: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Builds a request: attributes in order, then the Message-Authenticator.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    buf: Vec<u8>,
}

impl RequestBuilder {
    pub fn new(code: Code, identifier: u8, authenticator: &[u8; 16]) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[code.to_u8(), identifier, 0, 0]);
        buf.extend_from_slice(authenticator);
        RequestBuilder { buf }
    }

    /// Adds one attribute; values over 253 bytes are an error.
    pub fn attr(&mut self, t: u8, value: &[u8]) -> Result<&mut Self, RadiusError> {
        if value.len() > MAX_ATTR_VALUE {
            return Err(RadiusError::BadAttributeLength {
                attr: t,
                offset: self.buf.len(),
                len: value.len() + 2,
            });
        }
        self.buf.extend_from_slice(&[t, (value.len() + 2) as u8]);
        self.buf.extend_from_slice(value);
        Ok(self)
    }

    /// Adds an EAP packet as EAP-Message attributes of up to 253 bytes.
    pub fn eap_message(&mut self, eap: &[u8]) -> Result<&mut Self, RadiusError> {
        for chunk in eap.chunks(MAX_ATTR_VALUE) {
            self.attr(Attr::EAP_MESSAGE, chunk)?;
        }
        Ok(self)
    }

    /// Appends the Message-Authenticator (RFC 3579 §3.2) and returns the
    /// datagram.
    pub fn finish(mut self, secret: &[u8]) -> Result<Vec<u8>, RadiusError> {
        let at = self.buf.len() + 2;
        self.attr(Attr::MESSAGE_AUTHENTICATOR, &[0; 16])?;
        let len = self.buf.len();
        if len > MAX_PACKET_LEN {
            return Err(RadiusError::TooLong(len));
        }
        self.buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        let mac = hmac_md5(secret, &[&self.buf]);
        self.buf[at..at + 16].copy_from_slice(&mac);
        Ok(self.buf)
    }
}

impl RequestBuilder {
    /// Finishes an Accounting-Request: its Request Authenticator is MD5 over
    /// the packet with a zero authenticator and the secret (RFC 2866 §3).
    pub fn finish_accounting(mut self, secret: &[u8]) -> Result<Vec<u8>, RadiusError> {
        let len = self.buf.len();
        if len > MAX_PACKET_LEN {
            return Err(RadiusError::TooLong(len));
        }
        self.buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        self.buf[4..20].fill(0);
        let mut h = Md5::new();
        h.update(&self.buf);
        h.update(secret);
        let auth: [u8; 16] = h.finalize().into();
        self.buf[4..20].copy_from_slice(&auth);
        Ok(self.buf)
    }
}

/// Checks a request whose Request Authenticator is MD5 over the packet
/// with a zero authenticator and the secret: Accounting-Request (RFC 2866
/// §3), Disconnect-Request and CoA-Request (RFC 5176 §2.3); and its
/// Message-Authenticator when present, computed over the packet with a
/// zero authenticator (RFC 5176 §3.5, RFC 3579 §3.2).
pub fn verify_request(packet: &[u8], secret: &[u8]) -> Result<(), RadiusError> {
    let p = decode(packet)?;
    let mut zeroed = packet.to_vec();
    zeroed[4..20].fill(0);
    let mut h = Md5::new();
    h.update(&zeroed);
    h.update(secret);
    let expected: [u8; 16] = h.finalize().into();
    if !ct_eq(&expected, &packet[4..20]) {
        return Err(RadiusError::BadRequestAuthenticator);
    }
    let mut off = HEADER_LEN;
    for (t, v) in &p.attributes {
        if *t == Attr::MESSAGE_AUTHENTICATOR {
            if v.len() != 16 {
                return Err(RadiusError::MessageAuthenticatorLength(v.len()));
            }
            let at = off + 2;
            zeroed[at..at + 16].fill(0);
            if !ct_eq(&hmac_md5(secret, &[&zeroed]), v) {
                return Err(RadiusError::BadMessageAuthenticator);
            }
        }
        off += v.len() + 2;
    }
    Ok(())
}

/// A reply to `request`: `code`, the request's identifier, `attributes`,
/// a Message-Authenticator and the Response Authenticator (RFC 2865 §3)
/// over the request's authenticator and the secret.
pub fn sign_reply(
    code: Code,
    request: &Packet<'_>,
    attributes: &[(u8, Vec<u8>)],
    secret: &[u8],
) -> Result<Vec<u8>, RadiusError> {
    let mut b = RequestBuilder::new(code, request.identifier, &request.authenticator);
    for (t, v) in attributes {
        b.attr(*t, v)?;
    }
    let mut pkt = b.finish(secret)?;
    let mut h = Md5::new();
    h.update(&pkt);
    h.update(secret);
    let resp: [u8; 16] = h.finalize().into();
    pkt[4..20].copy_from_slice(&resp);
    Ok(pkt)
}

/// Acct-Status-Type values (RFC 2866 §5.1).
#[derive(Debug)]
#[non_exhaustive]
pub struct AcctStatus;

impl AcctStatus {
    pub const START: u32 = 1;
    pub const STOP: u32 = 2;
    pub const INTERIM_UPDATE: u32 = 3;
}

/// Checks a reply against the request it answers: the Response
/// Authenticator (RFC 2865 §3) and the Message-Authenticator, which must be
/// present when the reply carries EAP (RFC 3579 §3.2).
pub fn verify_response(reply: &[u8], request_authenticator: &[u8; 16], secret: &[u8]) -> Result<(), RadiusError> {
    let p = decode(reply)?;
    let mut h = Md5::new();
    h.update(&reply[..4]);
    h.update(request_authenticator);
    h.update(&reply[HEADER_LEN..]);
    h.update(secret);
    let expected: [u8; 16] = h.finalize().into();
    if !ct_eq(&expected, &reply[4..20]) {
        return Err(RadiusError::BadResponseAuthenticator);
    }
    // Locate the Message-Authenticator by offset to zero it in a copy.
    let mut off = HEADER_LEN;
    let mut ma_at = None;
    for (t, v) in &p.attributes {
        if *t == Attr::MESSAGE_AUTHENTICATOR {
            if v.len() != 16 {
                return Err(RadiusError::MessageAuthenticatorLength(v.len()));
            }
            ma_at = Some(off + 2);
        }
        off += v.len() + 2;
    }
    match ma_at {
        None if p.attr(Attr::EAP_MESSAGE).is_some() => Err(RadiusError::MissingMessageAuthenticator),
        None => Ok(()),
        Some(at) => {
            let mut copy = reply.to_vec();
            copy[4..20].copy_from_slice(request_authenticator);
            copy[at..at + 16].fill(0);
            let mac = hmac_md5(secret, &[&copy]);
            if ct_eq(&mac, &reply[at..at + 16]) {
                Ok(())
            } else {
                Err(RadiusError::BadMessageAuthenticator)
            }
        }
    }
}

/// Decrypts an MS-MPPE-Send-Key or MS-MPPE-Recv-Key value (RFC 2548
/// §2.4.2): Salt, then the key length, key and padding, hidden with MD5
/// over the secret, the request authenticator and the salt.
pub fn decrypt_mppe_key(
    value: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; 16],
) -> Result<Zeroizing<Vec<u8>>, RadiusError> {
    if value.len() < 2 + 16 || (value.len() - 2) % 16 != 0 {
        return Err(RadiusError::BadMppeKey(
            "length is not a salt plus whole 16-byte blocks",
        ));
    }
    let (salt, cipher) = value.split_at(2);
    if salt[0] & 0x80 == 0 {
        return Err(RadiusError::BadMppeKey("salt without its high bit"));
    }
    let mut plain = Zeroizing::new(Vec::with_capacity(cipher.len()));
    let mut prev: &[u8] = &[];
    for (i, block) in cipher.chunks(16).enumerate() {
        let mut h = Md5::new();
        h.update(secret);
        if i == 0 {
            h.update(request_authenticator);
            h.update(salt);
        } else {
            h.update(prev);
        }
        let b: [u8; 16] = h.finalize().into();
        plain.extend(block.iter().zip(b.iter()).map(|(c, k)| c ^ k));
        prev = block;
    }
    let key_len = usize::from(plain[0]);
    if key_len + 1 > plain.len() {
        return Err(RadiusError::BadMppeKey("key length exceeds the value"));
    }
    Ok(Zeroizing::new(plain[1..=key_len].to_vec()))
}

/// Encrypts an MPPE key the way a RADIUS server does (for tests and the
/// fuzz corpus).
pub fn encrypt_mppe_key(key: &[u8], salt: [u8; 2], secret: &[u8], request_authenticator: &[u8; 16]) -> Vec<u8> {
    let mut plain = vec![key.len() as u8];
    plain.extend_from_slice(key);
    plain.resize(plain.len().div_ceil(16) * 16, 0);
    let mut out = salt.to_vec();
    for (i, block) in plain.chunks(16).enumerate() {
        let mut h = Md5::new();
        h.update(secret);
        if i == 0 {
            h.update(request_authenticator);
            h.update(salt);
        } else {
            h.update(&out[out.len() - 16..]);
        }
        let b: [u8; 16] = h.finalize().into();
        let c: Vec<u8> = block.iter().zip(b.iter()).map(|(p, k)| p ^ k).collect();
        out.extend_from_slice(&c);
    }
    out
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// The fuzz targets' entry point: decode arbitrary bytes, read every
/// attribute accessor, and run the reply and request verifiers and MPPE
/// decryption over them; never a panic.
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(p) = decode(data) {
        let _ = p.eap_message();
        let _ = p.vendor_attr(VENDOR_MICROSOFT, MS_MPPE_SEND_KEY);
        if let Some(v) = p.vendor_attr(VENDOR_MICROSOFT, MS_MPPE_RECV_KEY) {
            let _ = decrypt_mppe_key(v, b"secret", &[0; 16]);
        }
        let _ = verify_response(data, &[0; 16], b"secret");
        let _ = verify_request(data, b"secret");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"testing123";

    /// Signs `attrs` as a server would answer a request with `req_auth`.
    fn reply(code: u8, id: u8, req_auth: &[u8; 16], attrs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut b = RequestBuilder::new(Code::from_u8(code), id, req_auth);
        for (t, v) in attrs {
            b.attr(*t, v).expect("attr");
        }
        let mut pkt = b.finish(SECRET).expect("finish");
        let mut h = Md5::new();
        h.update(&pkt);
        h.update(SECRET);
        let resp: [u8; 16] = h.finalize().into();
        pkt[4..20].copy_from_slice(&resp);
        pkt
    }

    #[test]
    fn rfc2865_access_accept_example_verifies() {
        // RFC 2865 §7.1: Access-Accept for id 0 with Service-Type, Login-Service,
        // Login-IP-Host; secret "xyzzy5461".
        let req_auth: [u8; 16] = hex::decode("0f403f9473978057bd83d5cb98f4227a")
            .expect("hex")
            .try_into()
            .expect("16");
        let accept = hex::decode(
            "02000026 86fe220e7624ba2a1005f6bf9b55e0b2 06060000000 10f06000000 000e06c0a80103".replace(' ', ""),
        )
        .expect("hex");
        verify_response(&accept, &req_auth, b"xyzzy5461").expect("RFC example verifies");
        assert_eq!(
            verify_response(&accept, &req_auth, b"xyzzy5462"),
            Err(RadiusError::BadResponseAuthenticator)
        );
    }

    #[test]
    fn message_authenticator_and_eap_fragments() {
        let req_auth = [7u8; 16];
        let eap = vec![0x42u8; 600];
        let mut b = RequestBuilder::new(Code::AccessRequest, 9, &req_auth);
        b.attr(Attr::USER_NAME, b"alice")
            .expect("attr")
            .eap_message(&eap)
            .expect("eap");
        let req = b.finish(SECRET).expect("finish");
        let p = decode(&req).expect("decodes");
        assert_eq!(p.attrs(Attr::EAP_MESSAGE).count(), 3);
        assert_eq!(p.eap_message(), Some(eap.clone()));
        let challenge = reply(11, 9, &req_auth, &[(Attr::EAP_MESSAGE, vec![1, 2, 0, 6, 1, 0])]);
        verify_response(&challenge, &req_auth, SECRET).expect("verifies");
        // A flipped bit in the Message-Authenticator (Response Authenticator re-signed).
        let mut bad = challenge.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        bad[4..20].copy_from_slice(&req_auth);
        let mut h = Md5::new();
        h.update(&bad);
        h.update(SECRET);
        let r: [u8; 16] = h.finalize().into();
        bad[4..20].copy_from_slice(&r);
        assert_eq!(
            verify_response(&bad, &req_auth, SECRET),
            Err(RadiusError::BadMessageAuthenticator)
        );
        // EAP without a Message-Authenticator.
        let mut h = Md5::new();
        let mut raw = vec![11, 9, 0, 28];
        raw.extend_from_slice(&req_auth);
        raw.extend_from_slice(&[79, 8, 1, 2, 0, 6, 1, 0]);
        h.update(&raw);
        h.update(SECRET);
        let r: [u8; 16] = h.finalize().into();
        raw[4..20].copy_from_slice(&r);
        assert_eq!(
            verify_response(&raw, &req_auth, SECRET),
            Err(RadiusError::MissingMessageAuthenticator)
        );
    }

    #[test]
    fn mppe_keys_round_trip_and_reject_garbage() {
        let req_auth = [3u8; 16];
        let key = [0x5au8; 32];
        let enc = encrypt_mppe_key(&key, [0x80, 0x01], SECRET, &req_auth);
        assert_eq!(enc.len(), 2 + 48);
        assert_eq!(
            &decrypt_mppe_key(&enc, SECRET, &req_auth).expect("decrypts")[..],
            &key[..]
        );
        assert!(decrypt_mppe_key(&enc[..20], SECRET, &req_auth).is_err());
        let mut no_high_bit = enc.clone();
        no_high_bit[0] = 0;
        assert!(decrypt_mppe_key(&no_high_bit, SECRET, &req_auth).is_err());
        let mut vsa = VENDOR_MICROSOFT.to_be_bytes().to_vec();
        vsa.push(MS_MPPE_RECV_KEY);
        vsa.push((enc.len() + 2) as u8);
        vsa.extend_from_slice(&enc);
        let accept = reply(2, 1, &req_auth, &[(Attr::VENDOR_SPECIFIC, vsa)]);
        let p = decode(&accept).expect("decodes");
        assert_eq!(p.vendor_attr(VENDOR_MICROSOFT, MS_MPPE_RECV_KEY), Some(&enc[..]));
        assert_eq!(p.vendor_attr(VENDOR_MICROSOFT, MS_MPPE_SEND_KEY), None);
    }

    #[test]
    fn accounting_request_authenticator() {
        let mut b = RequestBuilder::new(Code::AccountingRequest, 4, &[0xaa; 16]);
        b.attr(Attr::ACCT_STATUS_TYPE, &AcctStatus::START.to_be_bytes())
            .expect("attr");
        let pkt = b.finish_accounting(SECRET).expect("finish");
        let mut zeroed = pkt.clone();
        zeroed[4..20].fill(0);
        let mut h = Md5::new();
        h.update(&zeroed);
        h.update(SECRET);
        let expected: [u8; 16] = h.finalize().into();
        assert_eq!(&pkt[4..20], &expected);
        assert_eq!(decode(&pkt).expect("decodes").code, Code::AccountingRequest);
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        assert!(matches!(decode(&[2, 0, 0, 20]), Err(RadiusError::Truncated { .. })));
        let mut p = vec![2, 0, 0, 24];
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&[1, 1, 0, 0]);
        assert!(matches!(
            decode(&p),
            Err(RadiusError::BadAttributeLength { len: 1, .. })
        ));
        p[21] = 9;
        assert!(matches!(
            decode(&p),
            Err(RadiusError::BadAttributeLength { len: 9, .. })
        ));
        p[3] = 30;
        assert!(matches!(decode(&p), Err(RadiusError::LengthMismatch { .. })));
        assert!(matches!(decode(&vec![0u8; 5000]), Err(RadiusError::TooLong(5000))));
        for cut in 0..p.len() {
            fuzz_decode(&p[..cut]);
        }
    }
}

//! The EAP packet format (RFC 3748 §4, §5) with EAP-MSCHAPv2 framing
//! (draft-kamath-pppext-eap-mschapv2-01 §2).
//!
//! Decoding is strict: the Length field must equal the buffer length, every
//! type-specific length must match, and nothing may trail. Decoded packets
//! borrow from the input.

/// EAP Code field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Request = 1,
    Response = 2,
    Success = 3,
    Failure = 4,
}

impl Code {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Code::Request,
            2 => Code::Response,
            3 => Code::Success,
            4 => Code::Failure,
            _ => return None,
        })
    }
}

/// EAP Type numbers this crate knows (IANA "Method Types").
#[derive(Debug)]
#[non_exhaustive]
pub struct EapType;

impl EapType {
    pub const IDENTITY: u8 = 1;
    pub const NOTIFICATION: u8 = 2;
    pub const NAK: u8 = 3;
    pub const MD5_CHALLENGE: u8 = 4;
    pub const MSCHAPV2: u8 = 26;
}

/// The longest identity accepted: it must fit a RADIUS User-Name (RFC 2865
/// §5.1), and no real user name is longer.
pub const MAX_IDENTITY_LEN: usize = 253;

const HEADER_LEN: usize = 4;
/// MSCHAPv2 challenge and peer-challenge length (RFC 2759 §4).
pub(crate) const CHALLENGE_LEN: usize = 16;
/// The Response's Value: Peer-Challenge, 8 reserved zero octets,
/// NT-Response and Flags (RFC 2759 §4).
const RESPONSE_VALUE_LEN: usize = 49;

const OP_CHALLENGE: u8 = 1;
const OP_RESPONSE: u8 = 2;
const OP_SUCCESS: u8 = 3;
const OP_FAILURE: u8 = 4;

/// One EAP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub code: Code,
    pub identifier: u8,
    /// `None` for Success and Failure, which carry no data.
    pub payload: Option<Payload<'a>>,
}

/// The Type and Type-Data of a Request or Response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload<'a> {
    /// Identity (type 1): the peer's identity in a Response, an optional
    /// displayable message in a Request.
    Identity(&'a [u8]),
    /// Notification (type 2): a displayable message.
    Notification(&'a [u8]),
    /// Legacy Nak (type 3, Response only): the types the peer wants instead.
    Nak(&'a [u8]),
    /// MD5-Challenge (type 4): the challenge in a Request, the digest in a
    /// Response, and an optional name.
    Md5 { value: &'a [u8], name: &'a [u8] },
    /// EAP-MSCHAPv2 (type 26).
    MsChapV2(MsChapV2Packet<'a>),
    /// Any other type, undecoded (the state machines answer it with a Nak).
    Other { eap_type: u8, data: &'a [u8] },
}

/// The EAP-MSCHAPv2 messages. Success and Failure exist twice: the
/// authenticator's Request carries a message, the peer's Response is only
/// the OpCode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MsChapV2Packet<'a> {
    Challenge {
        ms_chap_id: u8,
        challenge: &'a [u8; CHALLENGE_LEN],
        name: &'a [u8],
    },
    Response {
        ms_chap_id: u8,
        peer_challenge: &'a [u8; 16],
        nt_response: &'a [u8; 24],
        flags: u8,
        name: &'a [u8],
    },
    /// "S=<40 hex digits> M=<message>" (RFC 2759 §5).
    SuccessRequest {
        ms_chap_id: u8,
        message: &'a [u8],
    },
    /// "E=eeee R=r C=<32 hex digits> V=vvvv M=<message>" (RFC 2759 §6).
    FailureRequest {
        ms_chap_id: u8,
        message: &'a [u8],
    },
    SuccessResponse,
    FailureResponse,
}

/// Why an EAP packet was rejected. Each one means "silently discard" to the
/// state machines (RFC 3748 §4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("EAP packet truncated: {have} bytes, at least {need} needed")]
    Truncated { need: usize, have: usize },
    #[error("EAP Length field says {field} bytes but the packet has {actual}")]
    LengthMismatch { field: usize, actual: usize },
    #[error("unknown EAP code {0}")]
    UnknownCode(u8),
    #[error("EAP {0:?} without a Type field")]
    MissingType(Code),
    #[error("EAP {0:?} carries data")]
    DataOnSuccessOrFailure(Code),
    #[error("EAP Nak in a Request")]
    NakInRequest,
    #[error("EAP Identity of {0} bytes is longer than {MAX_IDENTITY_LEN}")]
    IdentityTooLong(usize),
    #[error("EAP-MD5 Value-Size {value_size} exceeds the {available} bytes present")]
    Md5ValueSize { value_size: usize, available: usize },
    #[error("EAP-MSCHAPv2 MS-Length {ms_length} does not match EAP length {eap_length} minus 5")]
    MsLengthMismatch { ms_length: usize, eap_length: usize },
    #[error("EAP-MSCHAPv2 {what}: Value-Size {got}, expected {expected}")]
    MsChapValueSize {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("EAP-MSCHAPv2 Response with non-zero Reserved octets")]
    MsChapReserved,
    #[error("EAP-MSCHAPv2 Response with non-zero Flags {0:#04x}")]
    MsChapFlags(u8),
    #[error("EAP-MSCHAPv2 OpCode {opcode} is not valid in a {code:?}")]
    MsChapOpcode { opcode: u8, code: Code },
    #[error("EAP-MSCHAPv2 {0} Response has trailing data")]
    MsChapTrailing(&'static str),
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("EAP packet of {0} bytes exceeds the 65535-byte Length field")]
    TooLong(usize),
    #[error("EAP {0:?} needs a payload")]
    MissingPayload(Code),
    #[error("EAP {0:?} cannot carry a payload")]
    UnexpectedPayload(Code),
    #[error("EAP-MD5 value of {0} bytes exceeds 255")]
    Md5ValueTooLong(usize),
}

/// Decodes one EAP packet; the result borrows from `buf`.
pub fn decode(buf: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        });
    }
    let code = Code::from_u8(buf[0]).ok_or(DecodeError::UnknownCode(buf[0]))?;
    let identifier = buf[1];
    let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if length != buf.len() {
        return Err(DecodeError::LengthMismatch {
            field: length,
            actual: buf.len(),
        });
    }
    let payload = match code {
        Code::Success | Code::Failure => {
            if length != HEADER_LEN {
                return Err(DecodeError::DataOnSuccessOrFailure(code));
            }
            None
        }
        Code::Request | Code::Response => {
            let Some((&eap_type, data)) = buf[HEADER_LEN..].split_first() else {
                return Err(DecodeError::MissingType(code));
            };
            Some(decode_payload(code, eap_type, data, length)?)
        }
    };
    Ok(Packet {
        code,
        identifier,
        payload,
    })
}

fn decode_payload(code: Code, eap_type: u8, data: &[u8], eap_length: usize) -> Result<Payload<'_>, DecodeError> {
    Ok(match eap_type {
        EapType::IDENTITY => {
            if data.len() > MAX_IDENTITY_LEN {
                return Err(DecodeError::IdentityTooLong(data.len()));
            }
            Payload::Identity(data)
        }
        EapType::NOTIFICATION => Payload::Notification(data),
        EapType::NAK => {
            if code == Code::Request {
                return Err(DecodeError::NakInRequest);
            }
            Payload::Nak(data)
        }
        EapType::MD5_CHALLENGE => {
            let Some((&size, rest)) = data.split_first() else {
                return Err(DecodeError::Truncated {
                    need: HEADER_LEN + 2,
                    have: HEADER_LEN + 1,
                });
            };
            let size = usize::from(size);
            if size > rest.len() {
                return Err(DecodeError::Md5ValueSize {
                    value_size: size,
                    available: rest.len(),
                });
            }
            let (value, name) = rest.split_at(size);
            Payload::Md5 { value, name }
        }
        EapType::MSCHAPV2 => Payload::MsChapV2(decode_mschapv2(code, data, eap_length)?),
        other => Payload::Other { eap_type: other, data },
    })
}

fn decode_mschapv2(code: Code, data: &[u8], eap_length: usize) -> Result<MsChapV2Packet<'_>, DecodeError> {
    let Some((&opcode, rest)) = data.split_first() else {
        return Err(DecodeError::Truncated {
            need: HEADER_LEN + 2,
            have: HEADER_LEN + 1,
        });
    };
    // The peer's Success and Failure Responses are the OpCode alone.
    if code == Code::Response && (opcode == OP_SUCCESS || opcode == OP_FAILURE) {
        let name = if opcode == OP_SUCCESS { "Success" } else { "Failure" };
        if !rest.is_empty() {
            return Err(DecodeError::MsChapTrailing(name));
        }
        return Ok(if opcode == OP_SUCCESS {
            MsChapV2Packet::SuccessResponse
        } else {
            MsChapV2Packet::FailureResponse
        });
    }
    if rest.len() < 3 {
        return Err(DecodeError::Truncated {
            need: HEADER_LEN + 5,
            have: HEADER_LEN + 2 + rest.len(),
        });
    }
    let ms_chap_id = rest[0];
    let ms_length = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
    if ms_length + 5 != eap_length {
        return Err(DecodeError::MsLengthMismatch { ms_length, eap_length });
    }
    let body = &rest[3..];
    match (code, opcode) {
        (Code::Request, OP_CHALLENGE) => {
            let (value, name) = value_field(body, CHALLENGE_LEN, "Challenge")?;
            let challenge = value.try_into().map_err(|_| DecodeError::Truncated {
                need: CHALLENGE_LEN,
                have: value.len(),
            })?;
            Ok(MsChapV2Packet::Challenge {
                ms_chap_id,
                challenge,
                name,
            })
        }
        (Code::Response, OP_RESPONSE) => {
            let (value, name) = value_field(body, RESPONSE_VALUE_LEN, "Response")?;
            let flags = value[48];
            if flags != 0 {
                return Err(DecodeError::MsChapFlags(flags));
            }
            if value[16..24].iter().any(|&b| b != 0) {
                return Err(DecodeError::MsChapReserved);
            }
            let peer_challenge = value[..16]
                .try_into()
                .map_err(|_| DecodeError::Truncated { need: 16, have: 0 })?;
            let nt_response = value[24..48]
                .try_into()
                .map_err(|_| DecodeError::Truncated { need: 24, have: 0 })?;
            Ok(MsChapV2Packet::Response {
                ms_chap_id,
                peer_challenge,
                nt_response,
                flags,
                name,
            })
        }
        (Code::Request, OP_SUCCESS) => Ok(MsChapV2Packet::SuccessRequest {
            ms_chap_id,
            message: body,
        }),
        (Code::Request, OP_FAILURE) => Ok(MsChapV2Packet::FailureRequest {
            ms_chap_id,
            message: body,
        }),
        _ => Err(DecodeError::MsChapOpcode { opcode, code }),
    }
}

/// Splits `Value-Size, Value, Name`, requiring the fixed value size.
fn value_field<'a>(body: &'a [u8], expected: usize, what: &'static str) -> Result<(&'a [u8], &'a [u8]), DecodeError> {
    let Some((&size, rest)) = body.split_first() else {
        return Err(DecodeError::Truncated { need: 1, have: 0 });
    };
    if usize::from(size) != expected {
        return Err(DecodeError::MsChapValueSize {
            what,
            got: usize::from(size),
            expected,
        });
    }
    if rest.len() < expected {
        return Err(DecodeError::Truncated {
            need: expected,
            have: rest.len(),
        });
    }
    Ok(rest.split_at(expected))
}

/// Encodes `packet`, the inverse of [`decode`].
pub fn encode(packet: &Packet<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[packet.code as u8, packet.identifier, 0, 0]);
    match (packet.code, &packet.payload) {
        (Code::Success | Code::Failure, None) => {}
        (Code::Success | Code::Failure, Some(_)) => return Err(EncodeError::UnexpectedPayload(packet.code)),
        (Code::Request | Code::Response, None) => return Err(EncodeError::MissingPayload(packet.code)),
        (Code::Request | Code::Response, Some(p)) => encode_payload(p, &mut out)?,
    }
    let len = u16::try_from(out.len()).map_err(|_| EncodeError::TooLong(out.len()))?;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    if let Some(Payload::MsChapV2(m)) = &packet.payload
        && !matches!(m, MsChapV2Packet::SuccessResponse | MsChapV2Packet::FailureResponse)
    {
        out[7..9].copy_from_slice(&(len - 5).to_be_bytes());
    }
    Ok(out)
}

fn encode_payload(p: &Payload<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match p {
        Payload::Identity(d) => typed(out, EapType::IDENTITY, d),
        Payload::Notification(d) => typed(out, EapType::NOTIFICATION, d),
        Payload::Nak(d) => typed(out, EapType::NAK, d),
        Payload::Md5 { value, name } => {
            let size = u8::try_from(value.len()).map_err(|_| EncodeError::Md5ValueTooLong(value.len()))?;
            out.extend_from_slice(&[EapType::MD5_CHALLENGE, size]);
            out.extend_from_slice(value);
            out.extend_from_slice(name);
        }
        Payload::MsChapV2(m) => {
            out.push(EapType::MSCHAPV2);
            // MS-Length (bytes 7..9) is patched once the total is known.
            match m {
                MsChapV2Packet::Challenge {
                    ms_chap_id,
                    challenge,
                    name,
                } => {
                    out.extend_from_slice(&[OP_CHALLENGE, *ms_chap_id, 0, 0, CHALLENGE_LEN as u8]);
                    out.extend_from_slice(&challenge[..]);
                    out.extend_from_slice(name);
                }
                MsChapV2Packet::Response {
                    ms_chap_id,
                    peer_challenge,
                    nt_response,
                    flags,
                    name,
                } => {
                    out.extend_from_slice(&[OP_RESPONSE, *ms_chap_id, 0, 0, RESPONSE_VALUE_LEN as u8]);
                    out.extend_from_slice(&peer_challenge[..]);
                    out.extend_from_slice(&[0; 8]);
                    out.extend_from_slice(&nt_response[..]);
                    out.push(*flags);
                    out.extend_from_slice(name);
                }
                MsChapV2Packet::SuccessRequest { ms_chap_id, message } => {
                    out.extend_from_slice(&[OP_SUCCESS, *ms_chap_id, 0, 0]);
                    out.extend_from_slice(message);
                }
                MsChapV2Packet::FailureRequest { ms_chap_id, message } => {
                    out.extend_from_slice(&[OP_FAILURE, *ms_chap_id, 0, 0]);
                    out.extend_from_slice(message);
                }
                MsChapV2Packet::SuccessResponse => out.push(OP_SUCCESS),
                MsChapV2Packet::FailureResponse => out.push(OP_FAILURE),
            }
        }
        Payload::Other { eap_type, data } => typed(out, *eap_type, data),
    }
    Ok(())
}

fn typed(out: &mut Vec<u8>, eap_type: u8, data: &[u8]) {
    out.push(eap_type);
    out.extend_from_slice(data);
}

impl Packet<'_> {
    /// Encodes this packet; see [`encode`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(p: Packet<'_>) {
        let bytes = encode(&p).expect("encodes");
        assert_eq!(decode(&bytes).expect("decodes"), p);
    }

    #[test]
    fn every_kind_round_trips() {
        roundtrip(Packet {
            code: Code::Success,
            identifier: 7,
            payload: None,
        });
        roundtrip(Packet {
            code: Code::Failure,
            identifier: 0,
            payload: None,
        });
        roundtrip(Packet {
            code: Code::Request,
            identifier: 1,
            payload: Some(Payload::Identity(b"")),
        });
        roundtrip(Packet {
            code: Code::Response,
            identifier: 1,
            payload: Some(Payload::Identity(b"alice")),
        });
        roundtrip(Packet {
            code: Code::Request,
            identifier: 2,
            payload: Some(Payload::Notification(b"hi")),
        });
        roundtrip(Packet {
            code: Code::Response,
            identifier: 2,
            payload: Some(Payload::Nak(&[26])),
        });
        roundtrip(Packet {
            code: Code::Request,
            identifier: 3,
            payload: Some(Payload::Md5 {
                value: &[9; 16],
                name: b"gw",
            }),
        });
        let ch = [5u8; 16];
        roundtrip(Packet {
            code: Code::Request,
            identifier: 4,
            payload: Some(Payload::MsChapV2(MsChapV2Packet::Challenge {
                ms_chap_id: 4,
                challenge: &ch,
                name: b"ironsa",
            })),
        });
        let nt = [6u8; 24];
        roundtrip(Packet {
            code: Code::Response,
            identifier: 4,
            payload: Some(Payload::MsChapV2(MsChapV2Packet::Response {
                ms_chap_id: 4,
                peer_challenge: &ch,
                nt_response: &nt,
                flags: 0,
                name: b"alice",
            })),
        });
        for m in [
            MsChapV2Packet::SuccessRequest {
                ms_chap_id: 4,
                message: b"S=00 M=ok",
            },
            MsChapV2Packet::FailureRequest {
                ms_chap_id: 4,
                message: b"E=691 R=0",
            },
        ] {
            roundtrip(Packet {
                code: Code::Request,
                identifier: 5,
                payload: Some(Payload::MsChapV2(m)),
            });
        }
        for m in [MsChapV2Packet::SuccessResponse, MsChapV2Packet::FailureResponse] {
            roundtrip(Packet {
                code: Code::Response,
                identifier: 5,
                payload: Some(Payload::MsChapV2(m)),
            });
        }
        roundtrip(Packet {
            code: Code::Request,
            identifier: 6,
            payload: Some(Payload::Other {
                eap_type: 13,
                data: &[0x20],
            }),
        });
    }

    #[test]
    fn strongswan_challenge_bytes_decode() {
        // A Challenge as charon's eap-mschapv2 sends it (name "strongSwan").
        let mut b = vec![1, 0x2a, 0, 0, 26, 1, 0x2a, 0, 0, 16];
        b.extend_from_slice(&[0xab; 16]);
        b.extend_from_slice(b"strongSwan");
        let len = b.len() as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        b[7..9].copy_from_slice(&(len - 5).to_be_bytes());
        let p = decode(&b).expect("decodes");
        assert_eq!(
            p.payload,
            Some(Payload::MsChapV2(MsChapV2Packet::Challenge {
                ms_chap_id: 0x2a,
                challenge: &[0xab; 16],
                name: b"strongSwan"
            }))
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let ch = [5u8; 16];
        let nt = [6u8; 24];
        let full = encode(&Packet {
            code: Code::Response,
            identifier: 4,
            payload: Some(Payload::MsChapV2(MsChapV2Packet::Response {
                ms_chap_id: 4,
                peer_challenge: &ch,
                nt_response: &nt,
                flags: 0,
                name: b"",
            })),
        })
        .expect("encodes");
        for cut in 0..full.len() {
            let mut t = full[..cut].to_vec();
            if t.len() >= 4 {
                // A consistent Length field, so the inner checks are reached.
                let l = t.len() as u16;
                t[2..4].copy_from_slice(&l.to_be_bytes());
            }
            assert!(decode(&t).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn malformed_packets_are_typed_errors() {
        assert_eq!(decode(&[9, 0, 0, 4]), Err(DecodeError::UnknownCode(9)));
        assert_eq!(
            decode(&[1, 0, 0, 9, 1]),
            Err(DecodeError::LengthMismatch { field: 9, actual: 5 })
        );
        assert_eq!(decode(&[1, 0, 0, 4]), Err(DecodeError::MissingType(Code::Request)));
        assert_eq!(
            decode(&[3, 0, 0, 5, 1]),
            Err(DecodeError::DataOnSuccessOrFailure(Code::Success))
        );
        assert_eq!(decode(&[1, 0, 0, 6, 3, 26]), Err(DecodeError::NakInRequest));
        assert_eq!(
            decode(&[1, 0, 0, 7, 4, 9, 1]),
            Err(DecodeError::Md5ValueSize {
                value_size: 9,
                available: 1
            })
        );
        // MS-Length off by one.
        assert_eq!(
            decode(&[1, 0, 0, 10, 26, 3, 0, 0, 6, 0x53]),
            Err(DecodeError::MsLengthMismatch {
                ms_length: 6,
                eap_length: 10
            })
        );
        // A Challenge with an 8-byte value.
        let mut b = vec![1, 0, 0, 18, 26, 1, 0, 0, 13, 8];
        b.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(&b),
            Err(DecodeError::MsChapValueSize {
                what: "Challenge",
                got: 8,
                expected: 16
            })
        );
        // A Challenge in a Response, a Response in a Request.
        assert!(matches!(
            decode(&[2, 0, 0, 9, 26, 1, 0, 0, 4]),
            Err(DecodeError::MsChapOpcode { opcode: 1, .. })
        ));
        assert!(matches!(
            decode(&[1, 0, 0, 9, 26, 2, 0, 0, 4]),
            Err(DecodeError::MsChapOpcode { opcode: 2, .. })
        ));
        assert_eq!(
            decode(&[2, 0, 0, 7, 26, 3, 0]),
            Err(DecodeError::MsChapTrailing("Success"))
        );
    }

    #[test]
    fn a_64_kib_identity_is_refused_both_ways() {
        let identity = vec![b'a'; 64 * 1024];
        let p = Packet {
            code: Code::Response,
            identifier: 1,
            payload: Some(Payload::Identity(&identity)),
        };
        assert_eq!(encode(&p), Err(EncodeError::TooLong(64 * 1024 + 5)));
        // The largest packet the Length field allows, all identity.
        let mut b = vec![2, 1, 0xff, 0xff, 1];
        b.resize(65535, b'a');
        assert_eq!(decode(&b), Err(DecodeError::IdentityTooLong(65530)));
        // 64 KiB of bytes behind a short Length field.
        let mut b = vec![2, 1, 0, 10, 1];
        b.resize(64 * 1024, b'a');
        assert_eq!(
            decode(&b),
            Err(DecodeError::LengthMismatch {
                field: 10,
                actual: 65536
            })
        );
    }
}

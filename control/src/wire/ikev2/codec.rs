//! Decoding and encoding of IKEv2 messages and payload chains.
//!
//! Decoding is strict (every length field is checked against the bytes that
//! surround it, substructure markers and counts must agree) but ignores
//! reserved bits as RFC 7296 §3 requires. Nothing is allocated beyond what the
//! datagram itself holds, and nothing panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::types::*;
use crate::wire::WireError;

/// A decoded IKEv2 message: header and the outer payload chain. An SK or SKF
/// payload, if present, is the last one and is still protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The IKE header.
    pub header: Header,
    /// The payloads in order.
    pub payloads: Vec<Payload>,
}

/// Shortest nonce RFC 7296 §3.9 allows.
pub const NONCE_MIN_LEN: usize = 16;
/// Longest nonce RFC 7296 §3.9 allows.
pub const NONCE_MAX_LEN: usize = 256;
/// Initial capacity of an encoding buffer: a whole IKE_SA_INIT or IKE_AUTH
/// message of a PSK or ECDH handshake fits without regrowing.
pub const ENCODE_CAPACITY: usize = 512;

/// Capacity of a buffer that `payloads` encode into without regrowing:
/// [`ENCODE_CAPACITY`] for the small fields plus the bulk values (key
/// shares, certificates, EAP, encrypted bodies), which exceed it with
/// ML-KEM keys or certificate chains. A regrown buffer costs a copy and,
/// for SK plaintext, leaves a copy of it in freed memory.
pub fn encode_capacity(payloads: &[Payload]) -> usize {
    let bulk: usize = payloads
        .iter()
        .map(|p| match p {
            Payload::Ke { data, .. } | Payload::Cert { data, .. } | Payload::Eap(data) => data.len(),
            Payload::Sk { body, .. } | Payload::Skf { body, .. } => body.len(),
            _ => 0,
        })
        .sum();
    ENCODE_CAPACITY + bulk
}

/// Substructure marker: last proposal / transform.
const LAST: u8 = 0;
/// Substructure marker: more proposals follow.
const MORE_PROPOSALS: u8 = 2;
/// Substructure marker: more transforms follow.
const MORE_TRANSFORMS: u8 = 3;
/// Attribute format bit (TV when set).
const AF_BIT: u16 = 0x8000;
/// Transform attribute type of Key Length.
const ATTR_KEY_LENGTH: u16 = 14;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn need(what: &'static str, buf: &[u8], n: usize) -> Result<(), WireError> {
    if buf.len() < n {
        Err(WireError::Truncated {
            what,
            need: n,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

fn invalid(what: &'static str, detail: impl Into<String>) -> WireError {
    WireError::Invalid {
        what,
        detail: detail.into(),
    }
}

fn bad_len(what: &'static str, detail: impl Into<String>) -> WireError {
    WireError::BadLength {
        what,
        detail: detail.into(),
    }
}

/// Decodes the fixed 28-byte header (no check against the datagram length).
pub fn decode_header(buf: &[u8]) -> Result<Header, WireError> {
    let header = crate::wire::ingress::peek_header(buf).ok_or(WireError::Truncated {
        what: "IKE header",
        need: HEADER_LEN,
        have: buf.len(),
    })?;
    if header.major_version != 2 {
        return Err(WireError::UnsupportedVersion(header.major_version));
    }
    Ok(header)
}

/// Decodes a whole datagram (without the 4-byte non-ESP marker of port 4500).
pub fn decode_message(datagram: &[u8]) -> Result<Message, WireError> {
    let header = decode_header(datagram)?;
    if header.length as usize != datagram.len() {
        return Err(bad_len(
            "IKE header",
            format!(
                "length field says {} bytes, datagram has {}",
                header.length,
                datagram.len()
            ),
        ));
    }
    let payloads = decode_chain(header.next_payload, &datagram[HEADER_LEN..], true)?;
    Ok(Message { header, payloads })
}

/// Decodes a payload chain starting with a payload of type `first` (used for
/// the plaintext inside SK/SKF).
pub fn decode_payloads(first: PayloadType, buf: &[u8]) -> Result<Vec<Payload>, WireError> {
    decode_chain(first, buf, false)
}

fn decode_chain(first: PayloadType, mut buf: &[u8], outer: bool) -> Result<Vec<Payload>, WireError> {
    // Room for a typical IKE_SA_INIT or IKE_AUTH chain without regrowing.
    let mut payloads = Vec::with_capacity(if buf.is_empty() { 0 } else { 8 });
    let mut next = first;
    while next != PayloadType::NONE {
        need("generic payload header", buf, GENERIC_PAYLOAD_HEADER_LEN)?;
        let following = PayloadType(buf[0]);
        let critical = buf[1] & 0x80 != 0;
        let len = usize::from(be16(buf, 2));
        if len < GENERIC_PAYLOAD_HEADER_LEN {
            return Err(bad_len(
                "generic payload header",
                format!("payload {next} has length {len} < 4"),
            ));
        }
        if len > buf.len() {
            return Err(bad_len(
                "generic payload header",
                format!("payload {next} has length {len}, only {} bytes remain", buf.len()),
            ));
        }
        let body = &buf[GENERIC_PAYLOAD_HEADER_LEN..len];
        buf = &buf[len..];
        if next == PayloadType::SK || next == PayloadType::SKF {
            if !outer {
                return Err(invalid(
                    "payload chain",
                    format!("{next} payload inside an encrypted payload"),
                ));
            }
            if !buf.is_empty() {
                return Err(invalid(
                    "payload chain",
                    format!("{next} payload is not the last payload"),
                ));
            }
            payloads.push(decode_encrypted(next, following, body)?);
            return Ok(payloads);
        }
        payloads.push(decode_body(next, critical, body)?);
        next = following;
    }
    if !buf.is_empty() {
        return Err(bad_len(
            "payload chain",
            format!("{} bytes after the last payload", buf.len()),
        ));
    }
    Ok(payloads)
}

fn decode_encrypted(ty: PayloadType, first_inner: PayloadType, body: &[u8]) -> Result<Payload, WireError> {
    if ty == PayloadType::SK {
        return Ok(Payload::Sk {
            first_inner,
            body: body.to_vec(),
        });
    }
    need("SKF payload", body, 4)?;
    let number = be16(body, 0);
    let total = be16(body, 2);
    if number == 0 || total == 0 || number > total {
        return Err(invalid(
            "SKF payload",
            format!("fragment number {number} of total {total}"),
        ));
    }
    Ok(Payload::Skf {
        first_inner,
        number,
        total,
        body: body[4..].to_vec(),
    })
}

fn decode_body(ty: PayloadType, critical: bool, body: &[u8]) -> Result<Payload, WireError> {
    Ok(match ty {
        PayloadType::SA => Payload::Sa(decode_sa(body)?),
        PayloadType::KE => {
            need("KE payload", body, 4)?;
            Payload::Ke {
                group: be16(body, 0),
                data: body[4..].to_vec(),
            }
        }
        PayloadType::IDI => Payload::IdI(decode_id(body)?),
        PayloadType::IDR => Payload::IdR(decode_id(body)?),
        PayloadType::CERT => {
            need("CERT payload", body, 1)?;
            Payload::Cert {
                encoding: CertEncoding(body[0]),
                data: body[1..].to_vec(),
            }
        }
        PayloadType::CERTREQ => {
            need("CERTREQ payload", body, 1)?;
            Payload::CertReq {
                encoding: CertEncoding(body[0]),
                data: body[1..].to_vec(),
            }
        }
        PayloadType::AUTH => {
            need("AUTH payload", body, 4)?;
            Payload::Auth {
                method: AuthMethod(body[0]),
                data: body[4..].to_vec(),
            }
        }
        PayloadType::NONCE => {
            if !(NONCE_MIN_LEN..=NONCE_MAX_LEN).contains(&body.len()) {
                return Err(bad_len(
                    "Nonce payload",
                    format!("nonce of {} bytes, must be 16..=256", body.len()),
                ));
            }
            Payload::Nonce(body.to_vec())
        }
        PayloadType::NOTIFY => Payload::Notify(decode_notify(body)?),
        PayloadType::DELETE => Payload::Delete(decode_delete(body)?),
        PayloadType::VENDOR_ID => Payload::VendorId(body.to_vec()),
        PayloadType::TSI => Payload::TsI(decode_ts(body)?),
        PayloadType::TSR => Payload::TsR(decode_ts(body)?),
        PayloadType::CP => decode_cp(body)?,
        PayloadType::EAP => Payload::Eap(body.to_vec()),
        _ => Payload::Unknown {
            ty,
            critical,
            body: body.to_vec(),
        },
    })
}

fn decode_id(body: &[u8]) -> Result<Identification, WireError> {
    need("ID payload", body, 4)?;
    Ok(Identification {
        id_type: IdType(body[0]),
        data: body[4..].to_vec(),
    })
}

fn expected_spi_size(protocol: ProtocolId, size: usize) -> bool {
    match protocol {
        ProtocolId::IKE => size == 0 || size == 8,
        ProtocolId::ESP | ProtocolId::AH => size == 4,
        _ => true,
    }
}

fn decode_sa(mut body: &[u8]) -> Result<Vec<Proposal>, WireError> {
    if body.is_empty() {
        return Err(invalid("SA payload", "no proposals"));
    }
    let mut proposals: Vec<Proposal> = Vec::new();
    loop {
        need("proposal", body, 8)?;
        let marker = body[0];
        let len = usize::from(be16(body, 2));
        let number = body[4];
        let protocol = ProtocolId(body[5]);
        let spi_size = usize::from(body[6]);
        let num_transforms = usize::from(body[7]);
        if marker != LAST && marker != MORE_PROPOSALS {
            return Err(invalid(
                "proposal",
                format!("substructure marker {marker}, expected 0 or 2"),
            ));
        }
        if len < 8 + spi_size || len > body.len() {
            return Err(bad_len(
                "proposal",
                format!("length {len} with SPI size {spi_size}, {} bytes remain", body.len()),
            ));
        }
        // An offer numbers its proposals from 1; an answer carries the one
        // proposal it chose under that proposal's number (RFC 7296 §3.3.1),
        // so the first number is any non-zero one and later ones follow it.
        let expected = match proposals.last() {
            None => number != 0,
            Some(prev) => number == prev.number || Some(number) == prev.number.checked_add(1),
        };
        if !expected {
            return Err(invalid("proposal", format!("proposal number {number} out of sequence")));
        }
        if !expected_spi_size(protocol, spi_size) {
            return Err(invalid(
                "proposal",
                format!("SPI size {spi_size} for protocol {protocol}"),
            ));
        }
        let spi = body[8..8 + spi_size].to_vec();
        let transforms = decode_transforms(&body[8 + spi_size..len], num_transforms)?;
        proposals.push(Proposal {
            number,
            protocol,
            spi,
            transforms,
        });
        body = &body[len..];
        match (marker, body.is_empty()) {
            (LAST, true) => return Ok(proposals),
            (MORE_PROPOSALS, false) => {}
            (LAST, false) => {
                return Err(invalid("proposal", "bytes follow the proposal marked last"));
            }
            _ => {
                return Err(invalid("proposal", "proposal marked 'more' is the last one"));
            }
        }
    }
}

fn decode_transforms(mut buf: &[u8], count: usize) -> Result<Vec<Transform>, WireError> {
    let mut transforms = Vec::with_capacity(count.min(buf.len() / 8));
    for i in 0..count {
        need("transform", buf, 8)?;
        let marker = buf[0];
        let len = usize::from(be16(buf, 2));
        let last = i + 1 == count;
        let expected_marker = if last { LAST } else { MORE_TRANSFORMS };
        if marker != expected_marker {
            return Err(invalid(
                "transform",
                format!("substructure marker {marker} on transform {} of {count}", i + 1),
            ));
        }
        if len < 8 || len > buf.len() {
            return Err(bad_len(
                "transform",
                format!("length {len}, {} bytes remain", buf.len()),
            ));
        }
        transforms.push(Transform {
            ty: TransformType(buf[4]),
            id: be16(buf, 6),
            attributes: decode_attributes(&buf[8..len])?,
        });
        buf = &buf[len..];
    }
    if !buf.is_empty() {
        return Err(bad_len(
            "proposal",
            format!("{} bytes after {count} transforms", buf.len()),
        ));
    }
    Ok(transforms)
}

fn decode_attributes(mut buf: &[u8]) -> Result<Vec<TransformAttribute>, WireError> {
    let mut attributes = Vec::new();
    while !buf.is_empty() {
        need("transform attribute", buf, 4)?;
        let raw = be16(buf, 0);
        let ty = raw & !AF_BIT;
        if raw & AF_BIT != 0 {
            let value = be16(buf, 2);
            attributes.push(if ty == ATTR_KEY_LENGTH {
                TransformAttribute::KeyLength(value)
            } else {
                TransformAttribute::Other {
                    ty,
                    tv: true,
                    value: value.to_be_bytes().to_vec(),
                }
            });
            buf = &buf[4..];
        } else {
            let len = usize::from(be16(buf, 2));
            need("transform attribute value", &buf[4..], len)?;
            attributes.push(TransformAttribute::Other {
                ty,
                tv: false,
                value: buf[4..4 + len].to_vec(),
            });
            buf = &buf[4 + len..];
        }
    }
    Ok(attributes)
}

fn decode_notify(body: &[u8]) -> Result<Notify, WireError> {
    need("Notify payload", body, 4)?;
    let spi_size = usize::from(body[1]);
    if !matches!(spi_size, 0 | 4 | 8) {
        return Err(invalid("Notify payload", format!("SPI size {spi_size}")));
    }
    need("Notify payload SPI", &body[4..], spi_size)?;
    Ok(Notify {
        protocol: ProtocolId(body[0]),
        spi: body[4..4 + spi_size].to_vec(),
        ty: NotifyType(be16(body, 2)),
        data: body[4 + spi_size..].to_vec(),
    })
}

fn decode_delete(body: &[u8]) -> Result<Delete, WireError> {
    need("Delete payload", body, 4)?;
    let protocol = ProtocolId(body[0]);
    let spi_size = body[1];
    let count = usize::from(be16(body, 2));
    match protocol {
        ProtocolId::IKE if spi_size == 0 && count == 0 => {}
        ProtocolId::ESP | ProtocolId::AH if spi_size == 4 => {}
        _ => {
            return Err(invalid(
                "Delete payload",
                format!("protocol {protocol} with SPI size {spi_size} and {count} SPIs"),
            ));
        }
    }
    let size = usize::from(spi_size);
    let spis_bytes = &body[4..];
    if spis_bytes.len() != count * size {
        return Err(bad_len(
            "Delete payload",
            format!("{count} SPIs of {size} bytes, but {} bytes follow", spis_bytes.len()),
        ));
    }
    let spis = if size == 0 {
        Vec::new()
    } else {
        spis_bytes.chunks(size).map(<[u8]>::to_vec).collect()
    };
    Ok(Delete {
        protocol,
        spi_size,
        spis,
    })
}

fn decode_ts(body: &[u8]) -> Result<Vec<TrafficSelector>, WireError> {
    need("TS payload", body, 4)?;
    let count = usize::from(body[0]);
    if count == 0 {
        return Err(invalid("TS payload", "no traffic selectors"));
    }
    let mut buf = &body[4..];
    let mut selectors = Vec::with_capacity(count.min(buf.len() / 16));
    for _ in 0..count {
        need("traffic selector", buf, 4)?;
        let ts_type = TsType(buf[0]);
        let len = usize::from(be16(buf, 2));
        let expected = match ts_type {
            TsType::IPV4_ADDR_RANGE => 16,
            TsType::IPV6_ADDR_RANGE => 40,
            other => {
                return Err(invalid("traffic selector", format!("unknown TS type {}", other.0)));
            }
        };
        if len != expected {
            return Err(bad_len(
                "traffic selector",
                format!("{ts_type} with length {len}, must be {expected}"),
            ));
        }
        need("traffic selector", buf, len)?;
        let (start_addr, end_addr) = if expected == 16 {
            let a: [u8; 4] = [buf[8], buf[9], buf[10], buf[11]];
            let b: [u8; 4] = [buf[12], buf[13], buf[14], buf[15]];
            (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))
        } else {
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a.copy_from_slice(&buf[8..24]);
            b.copy_from_slice(&buf[24..40]);
            (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))
        };
        selectors.push(TrafficSelector {
            ip_protocol: buf[1],
            start_port: be16(buf, 4),
            end_port: be16(buf, 6),
            start_addr,
            end_addr,
        });
        buf = &buf[len..];
    }
    if !buf.is_empty() {
        return Err(bad_len(
            "TS payload",
            format!("{} bytes after {count} selectors", buf.len()),
        ));
    }
    Ok(selectors)
}

fn decode_cp(body: &[u8]) -> Result<Payload, WireError> {
    need("CP payload", body, 4)?;
    let cfg_type = CfgType(body[0]);
    let mut buf = &body[4..];
    let mut attributes = Vec::new();
    while !buf.is_empty() {
        need("configuration attribute", buf, 4)?;
        let ty = be16(buf, 0) & 0x7fff;
        let len = usize::from(be16(buf, 2));
        need("configuration attribute value", &buf[4..], len)?;
        attributes.push(ConfigAttribute {
            ty,
            value: buf[4..4 + len].to_vec(),
        });
        buf = &buf[4 + len..];
    }
    Ok(Payload::Cp { cfg_type, attributes })
}

// ---------------------------------------------------------------- encoding

/// Collects length overflows while encoding: the infallible encoders write a
/// saturated length, the checked ones report [`WireError::TooLarge`].
#[derive(Default)]
struct Encoder {
    overflow: Option<WireError>,
}

impl Encoder {
    fn put_u16_len(&mut self, out: &mut [u8], at: usize, len: usize, what: &'static str) {
        let v = u16::try_from(len).unwrap_or_else(|_| {
            self.overflow
                .get_or_insert(bad_len(what, format!("{len} bytes do not fit a 16-bit length")));
            u16::MAX
        });
        out[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn count_u8(&mut self, n: usize, what: &'static str) -> u8 {
        u8::try_from(n).unwrap_or_else(|_| {
            self.overflow
                .get_or_insert(invalid(what, format!("{n} entries do not fit an 8-bit count")));
            u8::MAX
        })
    }

    fn count_u16(&mut self, n: usize, what: &'static str) -> u16 {
        u16::try_from(n).unwrap_or_else(|_| {
            self.overflow
                .get_or_insert(invalid(what, format!("{n} entries do not fit a 16-bit count")));
            u16::MAX
        })
    }

    fn payloads(&mut self, payloads: &[Payload], out: &mut Vec<u8>) -> PayloadType {
        for (i, p) in payloads.iter().enumerate() {
            let next = match p {
                Payload::Sk { first_inner, .. } | Payload::Skf { first_inner, .. } => *first_inner,
                _ => payloads.get(i + 1).map_or(PayloadType::NONE, Payload::payload_type),
            };
            let start = out.len();
            let critical = match p {
                Payload::Unknown { critical: true, .. } => 0x80,
                _ => 0,
            };
            out.extend_from_slice(&[next.0, critical, 0, 0]);
            self.body(p, out);
            let len = out.len() - start;
            self.put_u16_len(out, start + 2, len, "payload");
        }
        payloads.first().map_or(PayloadType::NONE, Payload::payload_type)
    }

    fn body(&mut self, p: &Payload, out: &mut Vec<u8>) {
        match p {
            Payload::Sa(proposals) => self.sa(proposals, out),
            Payload::Ke { group, data } => {
                out.extend_from_slice(&group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Payload::IdI(id) | Payload::IdR(id) => {
                out.extend_from_slice(&[id.id_type.0, 0, 0, 0]);
                out.extend_from_slice(&id.data);
            }
            Payload::Cert { encoding, data } | Payload::CertReq { encoding, data } => {
                out.push(encoding.0);
                out.extend_from_slice(data);
            }
            Payload::Auth { method, data } => {
                out.extend_from_slice(&[method.0, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Payload::Nonce(data) | Payload::VendorId(data) | Payload::Eap(data) => out.extend_from_slice(data),
            Payload::Notify(n) => {
                let spi_size = self.count_u8(n.spi.len(), "Notify SPI");
                out.push(n.protocol.0);
                out.push(spi_size);
                out.extend_from_slice(&n.ty.0.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Payload::Delete(d) => {
                let count = self.count_u16(d.spis.len(), "Delete SPIs");
                out.extend_from_slice(&[d.protocol.0, d.spi_size]);
                out.extend_from_slice(&count.to_be_bytes());
                for spi in &d.spis {
                    out.extend_from_slice(spi);
                }
            }
            Payload::TsI(ts) | Payload::TsR(ts) => self.ts(ts, out),
            Payload::Sk { body, .. } | Payload::Unknown { body, .. } => out.extend_from_slice(body),
            Payload::Skf {
                number, total, body, ..
            } => {
                out.extend_from_slice(&number.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(body);
            }
            Payload::Cp { cfg_type, attributes } => {
                out.extend_from_slice(&[cfg_type.0, 0, 0, 0]);
                for a in attributes {
                    let at = out.len();
                    out.extend_from_slice(&(a.ty & 0x7fff).to_be_bytes());
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&a.value);
                    self.put_u16_len(out, at + 2, a.value.len(), "configuration attribute");
                }
            }
        }
    }

    fn sa(&mut self, proposals: &[Proposal], out: &mut Vec<u8>) {
        for (i, p) in proposals.iter().enumerate() {
            let start = out.len();
            let marker = if i + 1 == proposals.len() { LAST } else { MORE_PROPOSALS };
            let spi_size = self.count_u8(p.spi.len(), "proposal SPI");
            let count = self.count_u8(p.transforms.len(), "proposal transforms");
            out.extend_from_slice(&[marker, 0, 0, 0, p.number, p.protocol.0, spi_size, count]);
            out.extend_from_slice(&p.spi);
            for (j, t) in p.transforms.iter().enumerate() {
                let tstart = out.len();
                let tmarker = if j + 1 == p.transforms.len() {
                    LAST
                } else {
                    MORE_TRANSFORMS
                };
                out.extend_from_slice(&[tmarker, 0, 0, 0, t.ty.0, 0]);
                out.extend_from_slice(&t.id.to_be_bytes());
                for a in &t.attributes {
                    self.attribute(a, out);
                }
                let len = out.len() - tstart;
                self.put_u16_len(out, tstart + 2, len, "transform");
            }
            let len = out.len() - start;
            self.put_u16_len(out, start + 2, len, "proposal");
        }
    }

    fn attribute(&mut self, a: &TransformAttribute, out: &mut Vec<u8>) {
        match a {
            TransformAttribute::KeyLength(k) => {
                out.extend_from_slice(&(AF_BIT | ATTR_KEY_LENGTH).to_be_bytes());
                out.extend_from_slice(&k.to_be_bytes());
            }
            TransformAttribute::Other { ty, tv: true, value } => {
                if value.len() != 2 {
                    self.overflow
                        .get_or_insert(invalid("transform attribute", "TV attribute value must be 2 bytes"));
                }
                out.extend_from_slice(&(AF_BIT | (ty & 0x7fff)).to_be_bytes());
                let mut v = [0u8; 2];
                for (d, s) in v.iter_mut().zip(value.iter()) {
                    *d = *s;
                }
                out.extend_from_slice(&v);
            }
            TransformAttribute::Other { ty, tv: false, value } => {
                let at = out.len();
                out.extend_from_slice(&(ty & 0x7fff).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(value);
                self.put_u16_len(out, at + 2, value.len(), "transform attribute");
            }
        }
    }

    fn ts(&mut self, selectors: &[TrafficSelector], out: &mut Vec<u8>) {
        let count = self.count_u8(selectors.len(), "traffic selectors");
        out.extend_from_slice(&[count, 0, 0, 0]);
        for ts in selectors {
            let ports = |out: &mut Vec<u8>| {
                out.extend_from_slice(&ts.start_port.to_be_bytes());
                out.extend_from_slice(&ts.end_port.to_be_bytes());
            };
            match (ts.start_addr, ts.end_addr) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    out.extend_from_slice(&[TsType::IPV4_ADDR_RANGE.0, ts.ip_protocol, 0, 16]);
                    ports(out);
                    out.extend_from_slice(&a.octets());
                    out.extend_from_slice(&b.octets());
                }
                (a, b) => {
                    if a.is_ipv4() != b.is_ipv4() {
                        self.overflow
                            .get_or_insert(invalid("traffic selector", "start and end address families differ"));
                    }
                    let v6 = |ip: IpAddr| match ip {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                        IpAddr::V6(v6) => v6,
                    };
                    out.extend_from_slice(&[TsType::IPV6_ADDR_RANGE.0, ts.ip_protocol, 0, 40]);
                    ports(out);
                    out.extend_from_slice(&v6(a).octets());
                    out.extend_from_slice(&v6(b).octets());
                }
            }
        }
    }
}

fn encode_header(header: &Header, next_payload: PayloadType, length: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&header.spi_i.to_be_bytes());
    out.extend_from_slice(&header.spi_r.to_be_bytes());
    out.push(next_payload.0);
    out.push((header.major_version << 4) | (header.minor_version & 0x0f));
    out.push(header.exchange.0);
    out.push(header.flags);
    out.extend_from_slice(&header.message_id.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

/// Writes `header` with the given next payload and length (used by the SK code).
pub(crate) fn write_header(header: &Header, next_payload: PayloadType, length: usize, out: &mut Vec<u8>) {
    encode_header(header, next_payload, u32::try_from(length).unwrap_or(u32::MAX), out);
}

/// Encodes a payload chain; returns the type of the first payload
/// ([`PayloadType::NONE`] for an empty chain).
///
/// Encoding cannot fail; a payload whose body exceeds 64 KiB (or a count that
/// overflows its field) is written with a saturated field and will not
/// decode. Use [`try_encode_payloads`] to get an error instead.
pub fn encode_payloads(payloads: &[Payload], out: &mut Vec<u8>) -> PayloadType {
    Encoder::default().payloads(payloads, out)
}

/// Like [`encode_payloads`], but reports fields that do not fit or values
/// that cannot be represented (TV attribute not 2 bytes, mixed-family TS).
/// `out` is left unchanged on error.
pub fn try_encode_payloads(payloads: &[Payload], out: &mut Vec<u8>) -> Result<PayloadType, WireError> {
    let mut enc = Encoder::default();
    let start = out.len();
    let first = enc.payloads(payloads, out);
    match enc.overflow {
        Some(e) => {
            out.truncate(start);
            Err(e)
        }
        None => Ok(first),
    }
}

/// Encodes a whole message; `header.next_payload` and `header.length` are
/// computed, the other header fields are taken as given.
pub fn encode_message(header: &Header, payloads: &[Payload]) -> Vec<u8> {
    // Encoded in place after the header, whose length field is set at the end.
    let first = payloads.first().map_or(PayloadType::NONE, Payload::payload_type);
    let mut out = Vec::with_capacity(encode_capacity(payloads));
    write_header(header, first, HEADER_LEN, &mut out);
    encode_payloads(payloads, &mut out);
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out
}

/// Like [`encode_message`], but fails instead of writing fields that do not fit.
pub fn try_encode_message(header: &Header, payloads: &[Payload]) -> Result<Vec<u8>, WireError> {
    let mut body = Vec::new();
    let first = try_encode_payloads(payloads, &mut body)?;
    let total = HEADER_LEN + body.len();
    if u32::try_from(total).is_err() {
        return Err(WireError::TooLarge(total));
    }
    let mut out = Vec::with_capacity(total);
    write_header(header, first, total, &mut out);
    out.extend_from_slice(&body);
    Ok(out)
}

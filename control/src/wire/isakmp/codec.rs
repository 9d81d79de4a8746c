//! Strict decoding and encoding of ISAKMP messages and payload chains.
//!
//! Every length field is checked against the bytes around it; proposals and
//! transforms may appear only inside an SA payload; an unknown payload or
//! exchange type is an error (RFC 2408 §5.1 answers it with
//! INVALID-PAYLOAD-TYPE / INVALID-EXCHANGE-TYPE, it is never skipped).

use super::IsakmpError;
use super::types::*;

/// Largest ISAKMP message we decode or build: IKEv1 has no fragmentation
/// in this implementation, and a UDP datagram cannot carry more.
pub const MAX_MESSAGE_LEN: usize = 65_535;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn need(what: &'static str, buf: &[u8], n: usize) -> Result<(), IsakmpError> {
    if buf.len() < n {
        return Err(IsakmpError::Truncated {
            what,
            need: n,
            have: buf.len(),
        });
    }
    Ok(())
}

fn bad_len(what: &'static str, detail: impl Into<String>) -> IsakmpError {
    IsakmpError::BadLength {
        what,
        detail: detail.into(),
    }
}

fn invalid(what: &'static str, detail: impl Into<String>) -> IsakmpError {
    IsakmpError::Invalid {
        what,
        detail: detail.into(),
    }
}

/// Decodes and checks the fixed header: version 1.x, a known exchange type.
/// The length field is checked against the datagram by [`decode_message`].
pub fn decode_header(buf: &[u8]) -> Result<Header, IsakmpError> {
    need("ISAKMP header", buf, HEADER_LEN)?;
    let header = Header {
        cookie_i: u64::from_be_bytes(buf[0..8].try_into().map_err(|_| invalid("ISAKMP header", "cookie"))?),
        cookie_r: u64::from_be_bytes(buf[8..16].try_into().map_err(|_| invalid("ISAKMP header", "cookie"))?),
        next_payload: PayloadType(buf[16]),
        version: buf[17],
        exchange: ExchangeType(buf[18]),
        flags: buf[19],
        message_id: be32(buf, 20),
        length: be32(buf, 24),
    };
    if header.version >> 4 != 1 {
        return Err(IsakmpError::UnsupportedVersion(header.version >> 4));
    }
    if !header.exchange.is_known() {
        return Err(IsakmpError::UnknownExchange(header.exchange.0));
    }
    if header.cookie_i == 0 {
        return Err(invalid("ISAKMP header", "initiator cookie is zero"));
    }
    if header.flags & !(FLAG_ENCRYPTION | FLAG_COMMIT | FLAG_AUTH_ONLY) != 0 {
        return Err(invalid(
            "ISAKMP header",
            format!("undefined flags {:#04x}", header.flags),
        ));
    }
    Ok(header)
}

/// The header and the bytes after it, with the length field checked against
/// the datagram (without a non-ESP marker). The body is the payload chain,
/// or its ciphertext when the header's encryption flag is set.
pub fn split_message(datagram: &[u8]) -> Result<(Header, &[u8]), IsakmpError> {
    let header = decode_header(datagram)?;
    if datagram.len() > MAX_MESSAGE_LEN {
        return Err(IsakmpError::TooLarge(datagram.len()));
    }
    if header.length as usize != datagram.len() {
        return Err(bad_len(
            "ISAKMP header",
            format!(
                "length field says {} bytes, datagram has {}",
                header.length,
                datagram.len()
            ),
        ));
    }
    Ok((header, &datagram[HEADER_LEN..]))
}

/// Decodes an unencrypted message. An encrypted one is an error here: its
/// body is opened with [`super::crypt::IsakmpCipher`] and decoded with
/// [`decode_payloads`].
pub fn decode_message(datagram: &[u8]) -> Result<Message<'_>, IsakmpError> {
    let (header, body) = split_message(datagram)?;
    if header.is_encrypted() {
        return Err(invalid("ISAKMP header", "message is encrypted"));
    }
    let payloads = decode_chain(header.next_payload, body, false)?;
    Ok(Message { header, payloads })
}

/// Decodes a payload chain starting with a payload of type `first`. With
/// `padded` (a decrypted body), bytes after the last payload are CBC padding
/// and are ignored; without it they are an error.
pub fn decode_payloads(first: PayloadType, buf: &[u8], padded: bool) -> Result<Vec<Payload<'_>>, IsakmpError> {
    decode_chain(first, buf, padded)
}

fn decode_chain(first: PayloadType, mut buf: &[u8], padded: bool) -> Result<Vec<Payload<'_>>, IsakmpError> {
    let mut payloads = Vec::with_capacity(if buf.is_empty() { 0 } else { 6 });
    let mut next = first;
    while next != PayloadType::NONE {
        need("generic payload header", buf, GENERIC_HEADER_LEN)?;
        let following = PayloadType(buf[0]);
        if buf[1] != 0 {
            return Err(invalid(
                "generic payload header",
                format!("reserved octet {} in {next}", buf[1]),
            ));
        }
        let len = usize::from(be16(buf, 2));
        if len < GENERIC_HEADER_LEN {
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
        let body = &buf[GENERIC_HEADER_LEN..len];
        buf = &buf[len..];
        payloads.push(decode_payload(next, body)?);
        next = following;
    }
    if !buf.is_empty() && !padded {
        return Err(bad_len(
            "payload chain",
            format!("{} bytes after the last payload", buf.len()),
        ));
    }
    Ok(payloads)
}

/// Where each payload of an already decoded chain lies in `buf`, header
/// included: the bytes that IKEv1 hashes (SAi_b, the Quick Mode HASH input).
pub fn payload_spans(first: PayloadType, buf: &[u8]) -> Result<Vec<std::ops::Range<usize>>, IsakmpError> {
    let mut spans = Vec::new();
    let (mut at, mut next) = (0usize, first);
    while next != PayloadType::NONE {
        let rest = &buf[at.min(buf.len())..];
        need("generic payload header", rest, GENERIC_HEADER_LEN)?;
        let len = usize::from(be16(rest, 2));
        if len < GENERIC_HEADER_LEN || len > rest.len() {
            return Err(bad_len(
                "generic payload header",
                format!("payload {next} has length {len}"),
            ));
        }
        spans.push(at..at + len);
        next = PayloadType(rest[0]);
        at += len;
    }
    Ok(spans)
}

fn decode_payload(ty: PayloadType, body: &[u8]) -> Result<Payload<'_>, IsakmpError> {
    Ok(match ty {
        PayloadType::SA => Payload::Sa(decode_sa(body)?),
        PayloadType::KE => Payload::Ke(non_empty("KE payload", body)?),
        PayloadType::ID => {
            need("ID payload", body, 4)?;
            Payload::Id(Identification {
                id_type: IdType(body[0]),
                protocol: body[1],
                port: be16(body, 2),
                data: &body[4..],
            })
        }
        PayloadType::CERT => {
            need("CERT payload", body, 1)?;
            Payload::Cert {
                encoding: body[0],
                data: &body[1..],
            }
        }
        PayloadType::CERTREQ => {
            need("CERTREQ payload", body, 1)?;
            Payload::CertReq {
                cert_type: body[0],
                authority: &body[1..],
            }
        }
        PayloadType::HASH => Payload::Hash(non_empty("HASH payload", body)?),
        PayloadType::SIG => Payload::Sig(non_empty("SIG payload", body)?),
        PayloadType::NONCE => {
            // RFC 2409 §5: nonces are 8 to 256 bytes.
            if !(8..=256).contains(&body.len()) {
                return Err(bad_len(
                    "NONCE payload",
                    format!("{} bytes, allowed 8..=256", body.len()),
                ));
            }
            Payload::Nonce(body)
        }
        PayloadType::NOTIFY => {
            need("N payload", body, 8)?;
            let spi_len = usize::from(body[5]);
            need("N payload SPI", &body[8..], spi_len)?;
            Payload::Notify(Notification {
                doi: be32(body, 0),
                protocol: body[4],
                ty: NotifyType(be16(body, 6)),
                spi: &body[8..8 + spi_len],
                data: &body[8 + spi_len..],
            })
        }
        PayloadType::DELETE => {
            need("D payload", body, 8)?;
            let spi_len = usize::from(body[5]);
            let count = usize::from(be16(body, 6));
            let spis = &body[8..];
            if spi_len == 0 || spis.len() != spi_len * count {
                return Err(bad_len(
                    "D payload",
                    format!("{count} SPIs of {spi_len} bytes in {} bytes", spis.len()),
                ));
            }
            Payload::Delete(Delete {
                doi: be32(body, 0),
                protocol: ProtocolId(body[4]),
                spis: spis.chunks_exact(spi_len).collect(),
            })
        }
        PayloadType::VENDOR_ID => Payload::VendorId(non_empty("VID payload", body)?),
        PayloadType::ATTRIBUTE => {
            need("attribute payload", body, 4)?;
            if body[1] != 0 {
                return Err(invalid("attribute payload", "reserved octet is not zero"));
            }
            Payload::Attributes(ConfigAttributes {
                ty: ConfigType(body[0]),
                identifier: be16(body, 2),
                attributes: decode_attributes(&body[4..])?,
            })
        }
        PayloadType::NAT_D | PayloadType::NAT_D_DRAFT => Payload::NatD(non_empty("NAT-D payload", body)?),
        PayloadType::NAT_OA | PayloadType::NAT_OA_DRAFT => {
            need("NAT-OA payload", body, 4)?;
            let id_type = IdType(body[0]);
            let address = &body[4..];
            let expected = match id_type {
                IdType::IPV4_ADDR => 4,
                IdType::IPV6_ADDR => 16,
                other => return Err(invalid("NAT-OA payload", format!("ID type {other}"))),
            };
            if address.len() != expected {
                return Err(bad_len(
                    "NAT-OA payload",
                    format!("{id_type} of {} bytes", address.len()),
                ));
            }
            Payload::NatOa(NatOriginalAddress { id_type, address })
        }
        PayloadType::PROPOSAL | PayloadType::TRANSFORM => {
            return Err(invalid("payload chain", format!("{ty} outside an SA payload")));
        }
        other => return Err(IsakmpError::UnknownPayload(other.0)),
    })
}

fn non_empty<'a>(what: &'static str, body: &'a [u8]) -> Result<&'a [u8], IsakmpError> {
    if body.is_empty() {
        return Err(bad_len(what, "empty"));
    }
    Ok(body)
}

fn decode_sa(body: &[u8]) -> Result<SecurityAssociation<'_>, IsakmpError> {
    need("SA payload", body, 8)?;
    let doi = be32(body, 0);
    if doi != DOI_IPSEC {
        return Err(invalid("SA payload", format!("DOI {doi} (only the IPsec DOI, 1)")));
    }
    let situation = be32(body, 4);
    if situation != SIT_IDENTITY_ONLY {
        return Err(invalid(
            "SA payload",
            format!("situation {situation:#x} (only SIT_IDENTITY_ONLY)"),
        ));
    }
    let mut rest = &body[8..];
    let mut proposals = Vec::with_capacity(1);
    let mut next = PayloadType::PROPOSAL;
    while next != PayloadType::NONE {
        if next != PayloadType::PROPOSAL {
            return Err(invalid("SA payload", format!("{next} where a proposal belongs")));
        }
        let (following, pbody, after) = sub_payload("proposal payload", rest)?;
        rest = after;
        proposals.push(decode_proposal(pbody)?);
        next = following;
    }
    if proposals.is_empty() {
        return Err(invalid("SA payload", "no proposal"));
    }
    if !rest.is_empty() {
        return Err(bad_len(
            "SA payload",
            format!("{} bytes after the last proposal", rest.len()),
        ));
    }
    Ok(SecurityAssociation { situation, proposals })
}

/// One generic-header-framed sub-payload: (next, body, rest).
fn sub_payload<'a>(what: &'static str, buf: &'a [u8]) -> Result<(PayloadType, &'a [u8], &'a [u8]), IsakmpError> {
    need(what, buf, GENERIC_HEADER_LEN)?;
    let len = usize::from(be16(buf, 2));
    if len < GENERIC_HEADER_LEN || len > buf.len() {
        return Err(bad_len(
            what,
            format!("length {len} with {} bytes available", buf.len()),
        ));
    }
    if buf[1] != 0 {
        return Err(invalid(what, "reserved octet is not zero"));
    }
    Ok((PayloadType(buf[0]), &buf[GENERIC_HEADER_LEN..len], &buf[len..]))
}

fn decode_proposal(body: &[u8]) -> Result<Proposal<'_>, IsakmpError> {
    need("proposal payload", body, 4)?;
    let spi_len = usize::from(body[2]);
    let count = usize::from(body[3]);
    need("proposal SPI", &body[4..], spi_len)?;
    let spi = &body[4..4 + spi_len];
    let mut rest = &body[4 + spi_len..];
    let mut transforms = Vec::with_capacity(count);
    let mut next = if count == 0 {
        PayloadType::NONE
    } else {
        PayloadType::TRANSFORM
    };
    while next != PayloadType::NONE {
        if next != PayloadType::TRANSFORM {
            return Err(invalid("proposal payload", format!("{next} where a transform belongs")));
        }
        let (following, tbody, after) = sub_payload("transform payload", rest)?;
        rest = after;
        need("transform payload", tbody, 4)?;
        if be16(tbody, 2) != 0 {
            return Err(invalid("transform payload", "reserved field is not zero"));
        }
        transforms.push(Transform {
            number: tbody[0],
            id: tbody[1],
            attributes: decode_attributes(&tbody[4..])?,
        });
        next = following;
    }
    if transforms.len() != count || count == 0 {
        return Err(bad_len(
            "proposal payload",
            format!("says {count} transforms, carries {}", transforms.len()),
        ));
    }
    if !rest.is_empty() {
        return Err(bad_len(
            "proposal payload",
            format!("{} bytes after the last transform", rest.len()),
        ));
    }
    Ok(Proposal {
        number: body[0],
        protocol: ProtocolId(body[1]),
        spi,
        transforms,
    })
}

/// Decodes a run of data attributes (TV and TLV, RFC 2408 §3.3).
pub fn decode_attributes(mut buf: &[u8]) -> Result<Vec<Attribute<'_>>, IsakmpError> {
    let mut out = Vec::with_capacity(buf.len() / 4);
    while !buf.is_empty() {
        need("data attribute", buf, 4)?;
        let word = be16(buf, 0);
        let ty = word & !ATTRIBUTE_FORMAT_TV;
        if word & ATTRIBUTE_FORMAT_TV != 0 {
            out.push(Attribute::basic(ty, be16(buf, 2)));
            buf = &buf[4..];
        } else {
            let len = usize::from(be16(buf, 2));
            need("data attribute value", &buf[4..], len)?;
            out.push(Attribute::variable(ty, &buf[4..4 + len]));
            buf = &buf[4 + len..];
        }
    }
    Ok(out)
}

/// Appends the encoding of `attributes`. A variable value longer than
/// 65,535 bytes cannot be encoded.
pub fn encode_attributes(attributes: &[Attribute<'_>], out: &mut Vec<u8>) -> Result<(), IsakmpError> {
    for a in attributes {
        if a.ty & ATTRIBUTE_FORMAT_TV != 0 {
            return Err(invalid(
                "data attribute",
                format!("type {:#06x} uses the format bit", a.ty),
            ));
        }
        match a.value {
            AttributeValue::Basic(v) => {
                out.extend_from_slice(&(a.ty | ATTRIBUTE_FORMAT_TV).to_be_bytes());
                out.extend_from_slice(&v.to_be_bytes());
            }
            AttributeValue::Variable(v) => {
                out.extend_from_slice(&a.ty.to_be_bytes());
                out.extend_from_slice(&len16("data attribute", v.len())?.to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    Ok(())
}

fn len16(what: &'static str, n: usize) -> Result<u16, IsakmpError> {
    u16::try_from(n).map_err(|_| IsakmpError::TooLarge(n).with_context(what))
}

impl IsakmpError {
    fn with_context(self, what: &'static str) -> Self {
        match self {
            IsakmpError::TooLarge(n) => bad_len(what, format!("{n} bytes do not fit a 16-bit length")),
            other => other,
        }
    }
}

/// Starts a generic-header-framed structure; returns where its length goes.
fn open_frame(out: &mut Vec<u8>, next: PayloadType) -> usize {
    let at = out.len();
    out.extend_from_slice(&[next.0, 0, 0, 0]);
    at
}

fn close_frame(out: &mut [u8], at: usize, what: &'static str) -> Result<(), IsakmpError> {
    let len = len16(what, out.len() - at)?;
    out[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn encode_body(p: &Payload<'_>, out: &mut Vec<u8>) -> Result<(), IsakmpError> {
    match p {
        Payload::Sa(sa) => {
            out.extend_from_slice(&DOI_IPSEC.to_be_bytes());
            out.extend_from_slice(&sa.situation.to_be_bytes());
            for (i, prop) in sa.proposals.iter().enumerate() {
                let next = if i + 1 < sa.proposals.len() {
                    PayloadType::PROPOSAL
                } else {
                    PayloadType::NONE
                };
                let at = open_frame(out, next);
                let spi_len = u8::try_from(prop.spi.len()).map_err(|_| bad_len("proposal payload", "SPI too long"))?;
                let count = u8::try_from(prop.transforms.len())
                    .map_err(|_| bad_len("proposal payload", "more than 255 transforms"))?;
                out.extend_from_slice(&[prop.number, prop.protocol.0, spi_len, count]);
                out.extend_from_slice(prop.spi);
                for (j, t) in prop.transforms.iter().enumerate() {
                    let next = if j + 1 < prop.transforms.len() {
                        PayloadType::TRANSFORM
                    } else {
                        PayloadType::NONE
                    };
                    let tat = open_frame(out, next);
                    out.extend_from_slice(&[t.number, t.id, 0, 0]);
                    encode_attributes(&t.attributes, out)?;
                    close_frame(out, tat, "transform payload")?;
                }
                close_frame(out, at, "proposal payload")?;
            }
        }
        Payload::Ke(d)
        | Payload::Hash(d)
        | Payload::Sig(d)
        | Payload::Nonce(d)
        | Payload::VendorId(d)
        | Payload::NatD(d) => out.extend_from_slice(d),
        Payload::Id(id) => {
            out.extend_from_slice(&[id.id_type.0, id.protocol]);
            out.extend_from_slice(&id.port.to_be_bytes());
            out.extend_from_slice(id.data);
        }
        Payload::Cert { encoding, data } => {
            out.push(*encoding);
            out.extend_from_slice(data);
        }
        Payload::CertReq { cert_type, authority } => {
            out.push(*cert_type);
            out.extend_from_slice(authority);
        }
        Payload::Notify(n) => {
            let spi_len = u8::try_from(n.spi.len()).map_err(|_| bad_len("N payload", "SPI too long"))?;
            out.extend_from_slice(&n.doi.to_be_bytes());
            out.extend_from_slice(&[n.protocol, spi_len]);
            out.extend_from_slice(&n.ty.0.to_be_bytes());
            out.extend_from_slice(n.spi);
            out.extend_from_slice(n.data);
        }
        Payload::Delete(d) => {
            let spi_len = d.spis.first().map_or(0, |s| s.len());
            if spi_len == 0 || d.spis.iter().any(|s| s.len() != spi_len) {
                return Err(invalid("D payload", "SPIs must be non-empty and of one size"));
            }
            let spi_len = u8::try_from(spi_len).map_err(|_| bad_len("D payload", "SPI too long"))?;
            out.extend_from_slice(&d.doi.to_be_bytes());
            out.extend_from_slice(&[d.protocol.0, spi_len]);
            out.extend_from_slice(&len16("D payload", d.spis.len())?.to_be_bytes());
            for s in &d.spis {
                out.extend_from_slice(s);
            }
        }
        Payload::Attributes(c) => {
            out.extend_from_slice(&[c.ty.0, 0]);
            out.extend_from_slice(&c.identifier.to_be_bytes());
            encode_attributes(&c.attributes, out)?;
        }
        Payload::NatOa(oa) => {
            out.extend_from_slice(&[oa.id_type.0, 0, 0, 0]);
            out.extend_from_slice(oa.address);
        }
    }
    Ok(())
}

/// Appends the payload chain to `out` (a caller's buffer, reused across
/// messages) and returns the type of its first payload.
pub fn encode_payloads(payloads: &[Payload<'_>], out: &mut Vec<u8>) -> Result<PayloadType, IsakmpError> {
    for (i, p) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(PayloadType::NONE, Payload::payload_type);
        let at = open_frame(out, next);
        encode_body(p, out)?;
        close_frame(out, at, "payload")?;
    }
    Ok(payloads.first().map_or(PayloadType::NONE, Payload::payload_type))
}

/// Writes the 28-byte header for a message of `length` bytes at the start
/// of `out` (which must hold at least [`HEADER_LEN`] bytes).
pub fn write_header(header: &Header, out: &mut [u8]) -> Result<(), IsakmpError> {
    need("header buffer", out, HEADER_LEN)?;
    out[0..8].copy_from_slice(&header.cookie_i.to_be_bytes());
    out[8..16].copy_from_slice(&header.cookie_r.to_be_bytes());
    out[16] = header.next_payload.0;
    out[17] = header.version;
    out[18] = header.exchange.0;
    out[19] = header.flags;
    out[20..24].copy_from_slice(&header.message_id.to_be_bytes());
    out[24..28].copy_from_slice(&header.length.to_be_bytes());
    Ok(())
}

/// Encodes an unencrypted message into `out` (cleared first): the header's
/// next-payload and length fields are set from the payloads.
pub fn encode_message(header: &Header, payloads: &[Payload<'_>], out: &mut Vec<u8>) -> Result<(), IsakmpError> {
    out.clear();
    out.resize(HEADER_LEN, 0);
    let first = encode_payloads(payloads, out)?;
    if out.len() > MAX_MESSAGE_LEN {
        return Err(IsakmpError::TooLarge(out.len()));
    }
    let h = Header {
        next_payload: first,
        length: out.len() as u32,
        ..*header
    };
    write_header(&h, out)
}

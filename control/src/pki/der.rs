//! Minimal DER reading and writing, PEM armour and UTC time formatting:
//! the small pieces of ASN.1 plumbing the PKI module needs beyond what
//! `x509-parser` offers (DN encoding, AlgorithmIdentifier building, key
//! container sniffing). Every reader checks lengths and never panics.

use super::PkiError;

/// ASN.1 universal tag: BOOLEAN.
pub const TAG_BOOLEAN: u8 = 0x01;
/// ASN.1 universal tag: INTEGER.
pub const TAG_INTEGER: u8 = 0x02;
/// ASN.1 universal tag: BIT STRING.
pub const TAG_BIT_STRING: u8 = 0x03;
/// ASN.1 universal tag: OCTET STRING.
pub const TAG_OCTET_STRING: u8 = 0x04;
/// ASN.1 universal tag: NULL.
pub const TAG_NULL: u8 = 0x05;
/// ASN.1 universal tag: OBJECT IDENTIFIER.
pub const TAG_OID: u8 = 0x06;
/// ASN.1 universal tag: UTF8String.
pub const TAG_UTF8_STRING: u8 = 0x0c;
/// ASN.1 universal tag: PrintableString.
pub const TAG_PRINTABLE_STRING: u8 = 0x13;
/// ASN.1 universal tag: T61String (TeletexString).
pub const TAG_T61_STRING: u8 = 0x14;
/// ASN.1 universal tag: IA5String.
pub const TAG_IA5_STRING: u8 = 0x16;
/// ASN.1 universal tag: UniversalString.
pub const TAG_UNIVERSAL_STRING: u8 = 0x1c;
/// ASN.1 universal tag: BMPString.
pub const TAG_BMP_STRING: u8 = 0x1e;
/// ASN.1 constructed SEQUENCE.
pub const TAG_SEQUENCE: u8 = 0x30;
/// ASN.1 constructed SET.
pub const TAG_SET: u8 = 0x31;

/// One decoded tag-length-value element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The (single-byte) tag.
    pub tag: u8,
    /// The content octets.
    pub content: &'a [u8],
    /// The whole element, header included.
    pub raw: &'a [u8],
}

fn malformed(what: &'static str, detail: impl Into<String>) -> PkiError {
    PkiError::Malformed {
        what,
        detail: detail.into(),
    }
}

/// Reads one DER element from the front of `input`; returns it and the rest.
/// Only definite lengths up to 4 length octets and single-byte tags are accepted.
pub fn read_tlv<'a>(input: &'a [u8], what: &'static str) -> Result<(Tlv<'a>, &'a [u8]), PkiError> {
    let (&tag, after_tag) = input
        .split_first()
        .ok_or_else(|| malformed(what, "unexpected end of data"))?;
    if tag & 0x1f == 0x1f {
        return Err(malformed(what, "multi-byte tags are not supported"));
    }
    let (&first, mut rest) = after_tag
        .split_first()
        .ok_or_else(|| malformed(what, "missing length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(malformed(what, "indefinite or oversized length"));
        }
        if rest.len() < n {
            return Err(malformed(what, "truncated length"));
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        if len < 0x80 || (n > 1 && rest[0] == 0) {
            return Err(malformed(what, "non-minimal length encoding"));
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(malformed(
            what,
            format!("element needs {len} bytes, {} available", rest.len()),
        ));
    }
    let header_len = input.len() - rest.len();
    let (content, tail) = rest.split_at(len);
    Ok((
        Tlv {
            tag,
            content,
            raw: &input[..header_len + len],
        },
        tail,
    ))
}

/// Reads one element that must carry `tag`.
pub fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(Tlv<'a>, &'a [u8]), PkiError> {
    let (tlv, rest) = read_tlv(input, what)?;
    if tlv.tag != tag {
        return Err(malformed(
            what,
            format!("expected tag 0x{tag:02x}, found 0x{:02x}", tlv.tag),
        ));
    }
    Ok((tlv, rest))
}

/// Reads exactly one element with `tag` spanning all of `input`.
pub fn expect_only<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<Tlv<'a>, PkiError> {
    let (tlv, rest) = expect(input, tag, what)?;
    if !rest.is_empty() {
        return Err(malformed(what, format!("{} trailing bytes", rest.len())));
    }
    Ok(tlv)
}

/// Reads a small non-negative INTEGER (up to 32 bits).
pub fn read_small_uint(tlv: &Tlv<'_>, what: &'static str) -> Result<u32, PkiError> {
    if tlv.tag != TAG_INTEGER || tlv.content.is_empty() || tlv.content.len() > 5 {
        return Err(malformed(what, "expected a small INTEGER"));
    }
    if tlv.content[0] & 0x80 != 0 {
        return Err(malformed(what, "negative INTEGER"));
    }
    let mut v: u64 = 0;
    for &b in tlv.content {
        v = (v << 8) | u64::from(b);
    }
    u32::try_from(v).map_err(|_| malformed(what, "INTEGER too large"))
}

/// Encodes a DER element.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes the content octets of an OBJECT IDENTIFIER from its arcs.
pub fn oid_content(arcs: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    if arcs.len() < 2 {
        return out;
    }
    let mut push = |mut v: u32| {
        let mut tmp = [0u8; 5];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = (v & 0x7f) as u8 | if i == tmp.len() - 1 { 0 } else { 0x80 };
            v >>= 7;
            if v == 0 {
                break;
            }
        }
        out.extend_from_slice(&tmp[i..]);
    };
    push(arcs[0] * 40 + arcs[1]);
    for &a in &arcs[2..] {
        push(a);
    }
    out
}

/// Renders OID content octets in dotted form (for messages).
pub fn oid_to_string(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    for &b in content {
        v = (v << 7) | u64::from(b & 0x7f);
        if v > u64::from(u32::MAX) {
            return format!("<invalid OID {}>", hex(content));
        }
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    arcs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(".")
}

/// Lower-case hex of `data`.
pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// One PEM block: its label and decoded contents.
#[derive(Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label after `BEGIN`, e.g. `CERTIFICATE`.
    pub label: String,
    /// Decoded DER; zeroized on drop since it may hold a private key.
    pub der: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PemBlock({}, {} bytes)", self.label, self.der.len())
    }
}

/// Whether `data` looks like PEM (has a `-----BEGIN ` line).
pub fn looks_like_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Parses every PEM block in `data`. Headers inside blocks (`Proc-Type:`)
/// are rejected since encrypted PEM is not supported.
pub fn parse_pem(data: &[u8]) -> Result<Vec<PemBlock>, PkiError> {
    let text = std::str::from_utf8(data).map_err(|_| PkiError::Pem("PEM input is not valid UTF-8".into()))?;
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = zeroize::Zeroizing::new(String::new());
        let mut closed = false;
        for body in lines.by_ref() {
            let body = body.trim();
            if body == end {
                closed = true;
                break;
            }
            if body.contains(':') {
                return Err(PkiError::Pem(format!(
                    "encrypted or annotated PEM block '{label}' is not supported"
                )));
            }
            b64.push_str(body);
        }
        if !closed {
            return Err(PkiError::Pem(format!("PEM block '{label}' has no END line")));
        }
        let der =
            base64_decode(&b64).ok_or_else(|| PkiError::Pem(format!("PEM block '{label}' has invalid base64")))?;
        blocks.push(PemBlock {
            label: label.to_string(),
            der,
        });
    }
    if blocks.is_empty() {
        return Err(PkiError::Pem("no PEM block found".into()));
    }
    Ok(blocks)
}

/// Decodes standard base64 (with optional padding); `None` on bad input.
pub fn base64_decode(s: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let s = s.trim_end_matches('=');
    let bytes = s.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(bytes.len() * 3 / 4));
    for chunk in bytes.chunks(4) {
        let mut acc: u32 = 0;
        for &c in chunk {
            acc = (acc << 6) | val(c)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
            2 => out.push((acc >> 4) as u8),
            _ => return None,
        }
    }
    Some(out)
}

/// Formats a Unix time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_unix_time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_round_trip_and_long_lengths() {
        let content = vec![7u8; 300];
        let enc = tlv(TAG_OCTET_STRING, &content);
        assert_eq!(&enc[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let t = expect_only(&enc, TAG_OCTET_STRING, "x").unwrap();
        assert_eq!(t.content, &content[..]);
        assert!(read_tlv(&enc[..100], "x").is_err());
        assert!(
            read_tlv(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0], "x").is_err(),
            "non-minimal"
        );
        assert!(read_tlv(&[0x30, 0x80], "x").is_err(), "indefinite");
        assert!(read_tlv(&[], "x").is_err());
    }

    #[test]
    fn oid_encoding() {
        assert_eq!(
            oid_content(&[1, 2, 840, 113549, 1, 1, 11]),
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 11]
        );
        assert_eq!(oid_to_string(&oid_content(&[2, 5, 4, 3])), "2.5.4.3");
    }

    #[test]
    fn base64_and_time() {
        assert_eq!(&base64_decode("aXJvbnNh").unwrap()[..], b"ironsa");
        assert_eq!(&base64_decode("aXJvbnM=").unwrap()[..], b"irons");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a*==").is_none());
        assert_eq!(format_unix_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix_time(1_009_843_200), "2002-01-01 00:00:00 UTC");
        assert_eq!(format_unix_time(951_825_600), "2000-02-29 12:00:00 UTC");
    }
}

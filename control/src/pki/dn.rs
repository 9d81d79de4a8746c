//! X.501 distinguished names: parsing strongSwan-style strings
//! (`C=CH, O=strongSwan, CN=moon`) to DER, printing DER the strongSwan way,
//! and semantic comparison (attribute types by OID, string values
//! case-insensitively regardless of their ASN.1 string type).

use std::fmt;

use super::PkiError;
use super::der::{self, Tlv};

/// A known attribute type: display name, accepted aliases, OID arcs and the
/// string type used when encoding it. Like strongSwan, PrintableString
/// falls back to UTF8String when the value has other characters.
struct AttrType {
    name: &'static str,
    aliases: &'static [&'static str],
    arcs: &'static [u32],
    string_tag: u8,
}

const ATTR_TYPES: &[AttrType] = &[
    AttrType {
        name: "C",
        aliases: &["C", "countryName"],
        arcs: &[2, 5, 4, 6],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "ST",
        aliases: &["ST", "S", "stateOrProvinceName"],
        arcs: &[2, 5, 4, 8],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "L",
        aliases: &["L", "localityName"],
        arcs: &[2, 5, 4, 7],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "O",
        aliases: &["O", "organizationName"],
        arcs: &[2, 5, 4, 10],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "OU",
        aliases: &["OU", "organizationalUnitName"],
        arcs: &[2, 5, 4, 11],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "CN",
        aliases: &["CN", "commonName"],
        arcs: &[2, 5, 4, 3],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "E",
        aliases: &["E", "Email", "emailAddress"],
        arcs: &[1, 2, 840, 113549, 1, 9, 1],
        string_tag: der::TAG_IA5_STRING,
    },
    AttrType {
        name: "DC",
        aliases: &["DC", "domainComponent"],
        arcs: &[0, 9, 2342, 19200300, 100, 1, 25],
        string_tag: der::TAG_IA5_STRING,
    },
    AttrType {
        name: "serialNumber",
        aliases: &["serialNumber"],
        arcs: &[2, 5, 4, 5],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "SN",
        aliases: &["SN", "surname"],
        arcs: &[2, 5, 4, 4],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "G",
        aliases: &["G", "givenName"],
        arcs: &[2, 5, 4, 42],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "T",
        aliases: &["T", "title"],
        arcs: &[2, 5, 4, 12],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
    AttrType {
        name: "UID",
        aliases: &["UID", "userid"],
        arcs: &[0, 9, 2342, 19200300, 100, 1, 1],
        string_tag: der::TAG_PRINTABLE_STRING,
    },
];

/// One attribute type-and-value of an RDN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Atv {
    oid: Vec<u8>,
    tag: u8,
    value: Vec<u8>,
}

impl Atv {
    /// The value as text if it is one of the ASN.1 string types.
    fn text(&self) -> Option<String> {
        match self.tag {
            der::TAG_UTF8_STRING | der::TAG_PRINTABLE_STRING | der::TAG_IA5_STRING => {
                String::from_utf8(self.value.clone()).ok()
            }
            // T61 in practice carries Latin-1.
            der::TAG_T61_STRING => Some(self.value.iter().map(|&b| char::from(b)).collect()),
            der::TAG_BMP_STRING => {
                if self.value.len() % 2 != 0 {
                    return None;
                }
                let units: Vec<u16> = self.value.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                String::from_utf16(&units).ok()
            }
            der::TAG_UNIVERSAL_STRING => {
                if self.value.len() % 4 != 0 {
                    return None;
                }
                self.value
                    .chunks(4)
                    .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect()
            }
            _ => None,
        }
    }

    fn type_name(&self) -> String {
        ATTR_TYPES
            .iter()
            .find(|t| der::oid_content(t.arcs) == self.oid)
            .map(|t| t.name.to_string())
            .unwrap_or_else(|| der::oid_to_string(&self.oid))
    }

    /// Semantic equality; with `wildcard`, a value of `*` in `self` matches anything.
    fn matches(&self, other: &Atv, wildcard: bool) -> bool {
        if self.oid != other.oid {
            return false;
        }
        match (self.text(), other.text()) {
            (Some(a), _) if wildcard && a == "*" => true,
            (Some(a), Some(b)) => normalize(&a) == normalize(&b),
            _ => self.tag == other.tag && self.value == other.value,
        }
    }
}

/// Case-folds and collapses internal whitespace (RFC 5280 §7.1, simplified).
fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// A distinguished name: its DER encoding plus the parsed RDN sequence.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DistinguishedName {
    der: Vec<u8>,
    rdns: Vec<Vec<Atv>>,
}

impl DistinguishedName {
    /// Parses a DER-encoded `Name` (SEQUENCE OF SET OF AttributeTypeAndValue).
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, PkiError> {
        let name = der::expect_only(der_bytes, der::TAG_SEQUENCE, "distinguished name")?;
        let mut rdns = Vec::new();
        let mut rest = name.content;
        while !rest.is_empty() {
            let (set, tail) = der::expect(rest, der::TAG_SET, "relative distinguished name")?;
            rest = tail;
            let mut atvs = Vec::new();
            let mut inner = set.content;
            if inner.is_empty() {
                return Err(PkiError::Malformed {
                    what: "relative distinguished name",
                    detail: "empty RDN".into(),
                });
            }
            while !inner.is_empty() {
                let (seq, tail): (Tlv<'_>, _) = der::expect(inner, der::TAG_SEQUENCE, "attribute type and value")?;
                inner = tail;
                let (oid, value_rest) = der::expect(seq.content, der::TAG_OID, "attribute type")?;
                let (value, trailing) = der::read_tlv(value_rest, "attribute value")?;
                if !trailing.is_empty() || oid.content.is_empty() {
                    return Err(PkiError::Malformed {
                        what: "attribute type and value",
                        detail: "bad structure".into(),
                    });
                }
                atvs.push(Atv {
                    oid: oid.content.to_vec(),
                    tag: value.tag,
                    value: value.content.to_vec(),
                });
            }
            rdns.push(atvs);
        }
        Ok(Self {
            der: der_bytes.to_vec(),
            rdns,
        })
    }

    /// Parses a strongSwan-style DN string such as `C=CH, O=strongSwan, CN=moon`
    /// (RDNs in encoding order, `,` separated, `\,` escapes a comma).
    pub fn parse(s: &str) -> Result<Self, PkiError> {
        let invalid = |detail: String| PkiError::InvalidIdentity(format!("distinguished name '{s}': {detail}"));
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) => current.push(n),
                    None => return Err(invalid("dangling escape".into())),
                },
                ',' | ';' => parts.push(std::mem::take(&mut current)),
                _ => current.push(c),
            }
        }
        parts.push(current);
        let mut content = Vec::new();
        let mut rdns = Vec::new();
        for part in parts {
            let part = part.trim();
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| invalid(format!("'{part}' is not TYPE=value")))?;
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                return Err(invalid(format!("empty value for '{key}'")));
            }
            let attr = ATTR_TYPES
                .iter()
                .find(|t| t.aliases.iter().any(|a| a.eq_ignore_ascii_case(key)))
                .ok_or_else(|| invalid(format!("unknown attribute type '{key}'")))?;
            let mut tag = attr.string_tag;
            let printable = value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
            if tag == der::TAG_PRINTABLE_STRING && !printable {
                tag = der::TAG_UTF8_STRING;
            }
            if tag == der::TAG_IA5_STRING && !value.is_ascii() {
                return Err(invalid(format!("'{key}' must be ASCII")));
            }
            let oid = der::oid_content(attr.arcs);
            let mut atv = der::tlv(der::TAG_OID, &oid);
            atv.extend(der::tlv(tag, value.as_bytes()));
            content.extend(der::tlv(der::TAG_SET, &der::tlv(der::TAG_SEQUENCE, &atv)));
            rdns.push(vec![Atv {
                oid,
                tag,
                value: value.as_bytes().to_vec(),
            }]);
        }
        Ok(Self {
            der: der::tlv(der::TAG_SEQUENCE, &content),
            rdns,
        })
    }

    /// The DER encoding.
    pub fn as_der(&self) -> &[u8] {
        &self.der
    }

    /// Whether the name has no RDNs.
    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }

    /// Semantic equality: same attribute types in the same order, string
    /// values equal ignoring case, whitespace runs and string type.
    pub fn semantic_eq(&self, other: &DistinguishedName) -> bool {
        self.compare(other, false)
    }

    /// Like [`semantic_eq`](Self::semantic_eq), but a value of `*` in `self`
    /// matches any value of that attribute type in `presented`.
    pub fn matches_pattern(&self, presented: &DistinguishedName) -> bool {
        self.compare(presented, true)
    }

    /// Whether any attribute value is the wildcard `*`.
    pub fn has_wildcards(&self) -> bool {
        self.rdns.iter().flatten().any(|a| a.text().as_deref() == Some("*"))
    }

    fn compare(&self, other: &DistinguishedName, wildcard: bool) -> bool {
        self.rdns.len() == other.rdns.len()
            && self
                .rdns
                .iter()
                .zip(&other.rdns)
                .all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.matches(y, wildcard)))
    }
}

impl fmt::Display for DistinguishedName {
    /// strongSwan's format: `C=CH, O=strongSwan, CN=moon`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for atv in self.rdns.iter().flatten() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match atv.text() {
                Some(t) => {
                    // Like strongSwan, unprintable characters become '?'.
                    let shown: String = t.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
                    write!(f, "{}={}", atv.type_name(), shown)?
                }
                None => write!(f, "{}=#{}", atv.type_name(), der::hex(&atv.value))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_encode_display() {
        let dn = DistinguishedName::parse("C=CH, O=strongSwan, CN=moon.strongswan.org").unwrap();
        assert_eq!(dn.to_string(), "C=CH, O=strongSwan, CN=moon.strongswan.org");
        let again = DistinguishedName::from_der(dn.as_der()).unwrap();
        assert_eq!(again, dn);
        // Printable values are PrintableStrings, others UTF8Strings (as strongSwan does).
        assert_eq!(
            &dn.as_der()[..13],
            &[
                0x30, 0x40, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02
            ]
        );
        let utf8 = DistinguishedName::parse("CN=M\u{fc}ller").unwrap();
        assert_eq!(utf8.as_der()[11], 0x0c);
        let wild = DistinguishedName::parse("CN=*").unwrap();
        assert_eq!(wild.as_der()[11], 0x0c);
    }

    #[test]
    fn aliases_and_escapes() {
        let dn = DistinguishedName::parse("emailAddress=a@b.c, DC=org, serialNumber=42, OU=a\\, b").unwrap();
        assert_eq!(dn.to_string(), "E=a@b.c, DC=org, serialNumber=42, OU=a, b");
        assert!(DistinguishedName::parse("XX=1").is_err());
        assert!(DistinguishedName::parse("CN=").is_err());
        assert!(DistinguishedName::parse("CN").is_err());
        assert!(DistinguishedName::parse("CN=a\\").is_err());
    }

    #[test]
    fn semantic_compare() {
        let a = DistinguishedName::parse("C=CH, O=strongSwan, CN=Moon").unwrap();
        let b = DistinguishedName::parse("c=ch,o=STRONGSWAN,  cn=moon").unwrap();
        assert!(a.semantic_eq(&b));
        let c = DistinguishedName::parse("O=strongSwan, C=CH, CN=moon").unwrap();
        assert!(!a.semantic_eq(&c));
        let w = DistinguishedName::parse("C=CH, O=strongSwan, CN=*").unwrap();
        assert!(w.matches_pattern(&a));
        assert!(!w.semantic_eq(&a));
        assert!(!w.matches_pattern(&DistinguishedName::parse("C=CH, O=strongSwan").unwrap()));
    }

    #[test]
    fn malformed_der() {
        assert!(DistinguishedName::from_der(&[]).is_err());
        assert!(DistinguishedName::from_der(&[0x30, 0x02, 0x31, 0x00]).is_err());
        assert!(DistinguishedName::from_der(&[0x30, 0x05, 0x31, 0x03, 0x30, 0x01, 0x06]).is_err());
    }
}

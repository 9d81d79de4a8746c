//! Configured IKE identities (RFC 7296 §3.5), parsed from operator strings
//! the way strongSwan does, converted to and from ID payloads, and matched
//! against what a peer presents.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::PkiError;
use super::der;
use super::dn::DistinguishedName;
use crate::wire::ikev2::types::{IdType, Identification};

/// An identity: ours to send, or a pattern the peer's must match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// `%any`: matches every identity; cannot be sent.
    Any,
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_FQDN; may contain `*` wildcards when used as a pattern.
    Fqdn(String),
    /// ID_RFC822_ADDR; may contain `*` wildcards when used as a pattern.
    Email(String),
    /// ID_DER_ASN1_DN; attribute values of `*` are wildcards.
    Dn(DistinguishedName),
    /// ID_KEY_ID (opaque bytes, written `@#hex`).
    KeyId(Vec<u8>),
    /// Any other ID type, kept verbatim.
    Other {
        /// The ID type.
        id_type: IdType,
        /// The raw identification data.
        data: Vec<u8>,
    },
}

impl Identity {
    /// Parses an operator string like strongSwan: `%any`, `a@test` (RFC822),
    /// `@fqdn` or `host.example.com` (FQDN), `10.0.0.1` / `::1` (addresses),
    /// `C=CH, O=strongSwan, CN=moon` (DN), `@#0a0b` (KEY_ID), `@@user`
    /// (RFC822 without further parsing). Wildcards: `*.example.com`, `*@example.com`.
    pub fn parse(s: &str) -> Result<Self, PkiError> {
        let s = s.trim();
        if s.is_empty() || s == "%any" || s == "%any6" {
            return Ok(Identity::Any);
        }
        if let Some(hex) = s.strip_prefix("@#") {
            return decode_hex(hex)
                .filter(|b| !b.is_empty())
                .map(Identity::KeyId)
                .ok_or_else(|| PkiError::InvalidIdentity(format!("'{s}': KEY_ID needs an even number of hex digits")));
        }
        if let Some(email) = s.strip_prefix("@@") {
            return non_empty(email, s).map(|e| Identity::Email(e.to_string()));
        }
        if let Some(fqdn) = s.strip_prefix('@') {
            return non_empty(fqdn, s).map(|f| Identity::Fqdn(f.to_string()));
        }
        if s.contains('=') {
            return DistinguishedName::parse(s).map(Identity::Dn);
        }
        if s.contains('@') {
            return Ok(Identity::Email(s.to_string()));
        }
        match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ok(Identity::Ipv4(a)),
            Ok(IpAddr::V6(a)) => Ok(Identity::Ipv6(a)),
            Err(_) => Ok(Identity::Fqdn(s.to_string())),
        }
    }

    /// Decodes a received ID payload. Fails on wrong address lengths,
    /// non-UTF-8 names and malformed DNs.
    pub fn from_wire(id: &Identification) -> Result<Self, PkiError> {
        let bad = |what: &str| PkiError::InvalidIdentity(format!("{} payload: {what}", id.id_type));
        let text = || String::from_utf8(id.data.clone()).map_err(|_| bad("not valid UTF-8"));
        match id.id_type {
            IdType::IPV4_ADDR => <[u8; 4]>::try_from(id.data.as_slice())
                .map(|a| Identity::Ipv4(a.into()))
                .map_err(|_| bad("expected 4 bytes")),
            IdType::IPV6_ADDR => <[u8; 16]>::try_from(id.data.as_slice())
                .map(|a| Identity::Ipv6(a.into()))
                .map_err(|_| bad("expected 16 bytes")),
            IdType::FQDN => Ok(Identity::Fqdn(text()?)),
            IdType::RFC822_ADDR => Ok(Identity::Email(text()?)),
            IdType::DER_ASN1_DN => DistinguishedName::from_der(&id.data).map(Identity::Dn),
            IdType::KEY_ID => Ok(Identity::KeyId(id.data.clone())),
            other => Ok(Identity::Other {
                id_type: other,
                data: id.data.clone(),
            }),
        }
    }

    /// Encodes the identity as ID payload contents. `%any` has no encoding.
    pub fn to_wire(&self) -> Result<Identification, PkiError> {
        let (id_type, data) = match self {
            Identity::Any => {
                return Err(PkiError::InvalidIdentity("%any cannot be sent as an identity".into()));
            }
            Identity::Ipv4(a) => (IdType::IPV4_ADDR, a.octets().to_vec()),
            Identity::Ipv6(a) => (IdType::IPV6_ADDR, a.octets().to_vec()),
            Identity::Fqdn(s) => (IdType::FQDN, s.as_bytes().to_vec()),
            Identity::Email(s) => (IdType::RFC822_ADDR, s.as_bytes().to_vec()),
            Identity::Dn(dn) => (IdType::DER_ASN1_DN, dn.as_der().to_vec()),
            Identity::KeyId(k) => (IdType::KEY_ID, k.clone()),
            Identity::Other { id_type, data } => (*id_type, data.clone()),
        };
        Ok(Identification { id_type, data })
    }

    /// Whether the identity contains wildcards (and so is only a pattern).
    pub fn is_wildcard(&self) -> bool {
        match self {
            Identity::Any => true,
            Identity::Fqdn(s) | Identity::Email(s) => s.contains('*'),
            Identity::Dn(dn) => dn.has_wildcards(),
            _ => false,
        }
    }

    /// Whether a presented ID payload satisfies this identity: `%any` matches
    /// all; FQDN and RFC822 compare case-insensitively with `*` wildcards;
    /// DNs compare semantically (`*` values match anything); others exactly.
    pub fn matches(&self, presented: &Identification) -> bool {
        if let Identity::Any = self {
            return true;
        }
        let Ok(other) = Identity::from_wire(presented) else {
            return false;
        };
        match (self, &other) {
            (Identity::Fqdn(p), Identity::Fqdn(v)) | (Identity::Email(p), Identity::Email(v)) => glob_match(p, v),
            (Identity::Dn(p), Identity::Dn(v)) => p.matches_pattern(v),
            (a, b) => a == b,
        }
    }
}

fn non_empty<'a>(v: &'a str, whole: &str) -> Result<&'a str, PkiError> {
    if v.is_empty() {
        Err(PkiError::InvalidIdentity(format!(
            "'{whole}' is empty after its prefix"
        )))
    } else {
        Ok(v)
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| *c != ':').collect();
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Case-insensitive match where `*` in `pattern` matches any run of characters.
fn glob_match(pattern: &str, value: &str) -> bool {
    // Identities are almost always ASCII: match their bytes without allocating
    // (this runs for every IKE_AUTH against a wildcard peer identity).
    if pattern.is_ascii() && value.is_ascii() {
        return glob_match_by(
            pattern.as_bytes(),
            value.as_bytes(),
            |a, b| a.eq_ignore_ascii_case(b),
            b'*',
        );
    }
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let v: Vec<char> = value.to_lowercase().chars().collect();
    glob_match_by(&p, &v, |a, b| a == b, '*')
}

/// [`glob_match`] over already case-folded (or case-insensitively compared) units.
fn glob_match_by<T: Copy + PartialEq>(p: &[T], v: &[T], eq: impl Fn(&T, &T) -> bool, any: T) -> bool {
    let (mut pi, mut vi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == any {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && eq(&p[pi], &v[vi]) {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == any)
}

impl fmt::Display for Identity {
    /// strongSwan's rendering: `%any`, addresses, names, DNs, `@#hex`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Any => f.write_str("%any"),
            Identity::Ipv4(a) => write!(f, "{a}"),
            Identity::Ipv6(a) => write!(f, "{a}"),
            Identity::Fqdn(s) | Identity::Email(s) => f.write_str(s),
            Identity::Dn(dn) => write!(f, "{dn}"),
            Identity::KeyId(k) => write!(f, "@#{}", der::hex(k)),
            Identity::Other { id_type, data } => write!(f, "({id_type})#{}", der::hex(data)),
        }
    }
}

impl std::str::FromStr for Identity {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Identity::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("*.example.com", "a.b.EXAMPLE.com"));
        assert!(!glob_match("*.example.com", "example.com"));
        assert!(glob_match("*", ""));
        // Non-ASCII names are compared after Unicode lower-casing.
        assert!(glob_match("*@bücher.example", "Anna@BÜCHER.example"));
        assert!(!glob_match("*@bücher.example", "anna@bucher.example"));
        assert!(glob_match("a*c", "ABBC"));
        assert!(!glob_match("a*c", "abcd"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b", "aXbY"));
    }
}

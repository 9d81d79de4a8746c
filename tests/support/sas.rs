//! Parser for `swanctl --list-sas --pretty` output into [`IkeSaInfo`] structs.
//!
//! The pretty format is used rather than `--raw` because it puts one key per line:
//! values with spaces (e.g. distinguished names used as identities) stay
//! unambiguous, whereas `--raw` prints them unquoted.

use std::collections::HashMap;
use std::net::IpAddr;

use super::util::{HarnessError, Result};

/// A node of the VICI message tree as printed by swanctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViciNode {
    /// `key = value`.
    Value(String),
    /// `key = [ item ... ]`.
    List(Vec<String>),
    /// `key { ... }`, in order.
    Section(Vec<(String, ViciNode)>),
}

impl ViciNode {
    fn section(&self) -> Option<&[(String, ViciNode)]> {
        match self {
            Self::Section(s) => Some(s),
            _ => None,
        }
    }
}

/// Parses swanctl's pretty VICI output into a list of top-level `(name, section)`
/// pairs (e.g. `("list-sa event", ...)`, `("list-sas reply", ...)`).
pub fn parse_vici_pretty(text: &str) -> Result<Vec<(String, ViciNode)>> {
    enum Frame {
        Section(String, Vec<(String, ViciNode)>),
        List(String, Vec<String>),
    }
    let mut stack: Vec<Frame> = vec![Frame::Section(String::new(), Vec::new())];
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let lineno = n + 1;
        if line.is_empty() {
            continue;
        }
        let err = |msg: &str| HarnessError::Parse(format!("line {lineno}: {msg}: {raw:?}"));
        if let Some(Frame::List(_, items)) = stack.last_mut() {
            if line == "]" {
                let Some(Frame::List(name, items)) = stack.pop() else {
                    return Err(err("internal: list frame vanished"));
                };
                match stack.last_mut() {
                    Some(Frame::Section(_, entries)) => entries.push((name, ViciNode::List(items))),
                    _ => return Err(err("list outside a section")),
                }
            } else {
                items.push(line.to_string());
            }
            continue;
        }
        if line == "}" {
            if stack.len() < 2 {
                return Err(err("unbalanced '}'"));
            }
            let Some(Frame::Section(name, entries)) = stack.pop() else {
                return Err(err("'}' closes a list"));
            };
            match stack.last_mut() {
                Some(Frame::Section(_, parent)) => parent.push((name, ViciNode::Section(entries))),
                _ => return Err(err("section outside a section")),
            }
        } else if let Some(name) = line.strip_suffix(" {").or_else(|| line.strip_suffix('{')) {
            stack.push(Frame::Section(name.trim().to_string(), Vec::new()));
        } else if let Some((key, value)) = line.split_once(" = ") {
            if value == "[" {
                stack.push(Frame::List(key.to_string(), Vec::new()));
            } else {
                match stack.last_mut() {
                    Some(Frame::Section(_, entries)) => {
                        entries.push((key.to_string(), ViciNode::Value(value.to_string())))
                    }
                    _ => return Err(err("value outside a section")),
                }
            }
        } else if let Some(key) = line.strip_suffix(" =") {
            // An empty value prints as `key = ` (trailing space trimmed above).
            match stack.last_mut() {
                Some(Frame::Section(_, entries)) => entries.push((key.to_string(), ViciNode::Value(String::new()))),
                _ => return Err(err("value outside a section")),
            }
        } else {
            return Err(err("unrecognised line"));
        }
    }
    if stack.len() != 1 {
        return Err(HarnessError::Parse(
            "unterminated section or list at end of input".into(),
        ));
    }
    match stack.pop() {
        Some(Frame::Section(_, entries)) => Ok(entries),
        _ => Err(HarnessError::Parse("internal: root is not a section".into())),
    }
}

/// One CHILD_SA as listed by swanctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaInfo {
    /// Key of the child entry (`<name>-<uniqueid>`).
    pub key: String,
    /// Configured child name.
    pub name: String,
    /// charon's unique id.
    pub unique_id: u32,
    /// reqid of the policies.
    pub reqid: u32,
    /// `INSTALLED`, `REKEYED`, `DELETED`, ...
    pub state: String,
    /// `TUNNEL`, `TRANSPORT`, ...
    pub mode: String,
    /// `ESP` or `AH`.
    pub protocol: String,
    /// UDP encapsulation in use.
    pub encap: bool,
    /// Inbound SPI (what the peer puts in packets sent to us).
    pub spi_in: u32,
    /// Outbound SPI.
    pub spi_out: u32,
    /// Encryption algorithm (e.g. `AES_GCM_16`).
    pub encr_alg: Option<String>,
    /// Encryption key size in bits.
    pub encr_keysize: Option<u32>,
    /// Integrity algorithm (absent for AEAD).
    pub integ_alg: Option<String>,
    /// PFS DH group of the last (re)key, if any.
    pub dh_group: Option<String>,
    /// Inbound bytes.
    pub bytes_in: u64,
    /// Inbound packets.
    pub packets_in: u64,
    /// Outbound bytes.
    pub bytes_out: u64,
    /// Outbound packets.
    pub packets_out: u64,
    /// Local traffic selectors.
    pub local_ts: Vec<String>,
    /// Remote traffic selectors.
    pub remote_ts: Vec<String>,
}

/// One IKE SA as listed by swanctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSaInfo {
    /// Connection name.
    pub name: String,
    /// charon's unique id.
    pub unique_id: u32,
    /// IKE version (1 or 2).
    pub version: u8,
    /// `ESTABLISHED`, `CONNECTING`, `REKEYING`, ...
    pub state: String,
    /// Local address.
    pub local_host: IpAddr,
    /// Local UDP port.
    pub local_port: u16,
    /// Local identity.
    pub local_id: String,
    /// Remote address.
    pub remote_host: IpAddr,
    /// Remote UDP port.
    pub remote_port: u16,
    /// Remote identity.
    pub remote_id: String,
    /// Whether this side initiated the IKE SA.
    pub initiator: bool,
    /// Initiator SPI (IKEv1: initiator cookie).
    pub initiator_spi: u64,
    /// Responder SPI (0 while half-open).
    pub responder_spi: u64,
    /// Encryption algorithm (e.g. `AES_GCM_16`).
    pub encr_alg: Option<String>,
    /// Encryption key size in bits.
    pub encr_keysize: Option<u32>,
    /// Integrity algorithm (absent for AEAD).
    pub integ_alg: Option<String>,
    /// PRF.
    pub prf_alg: Option<String>,
    /// DH group.
    pub dh_group: Option<String>,
    /// CHILD_SAs.
    pub children: Vec<ChildSaInfo>,
    /// Virtual IPs the peer assigned us.
    pub local_vips: Vec<String>,
}

impl IkeSaInfo {
    /// Our SPI.
    pub fn local_spi(&self) -> u64 {
        if self.initiator {
            self.initiator_spi
        } else {
            self.responder_spi
        }
    }

    /// The peer's SPI.
    pub fn remote_spi(&self) -> u64 {
        if self.initiator {
            self.responder_spi
        } else {
            self.initiator_spi
        }
    }

    /// Children in state `INSTALLED`.
    pub fn installed_children(&self) -> Vec<&ChildSaInfo> {
        self.children.iter().filter(|c| c.state == "INSTALLED").collect()
    }
}

struct Fields<'a> {
    ctx: String,
    values: HashMap<&'a str, &'a ViciNode>,
}

impl<'a> Fields<'a> {
    fn new(ctx: String, entries: &'a [(String, ViciNode)]) -> Self {
        Self {
            ctx,
            values: entries.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }

    fn opt(&self, key: &str) -> Option<&'a str> {
        match self.values.get(key) {
            Some(ViciNode::Value(v)) => Some(v.as_str()),
            _ => None,
        }
    }

    fn req(&self, key: &str) -> Result<&'a str> {
        self.opt(key)
            .ok_or_else(|| HarnessError::Parse(format!("{}: missing `{key}`", self.ctx)))
    }

    fn num<T: TryFrom<u64>>(&self, key: &str, radix16: bool) -> Result<Option<T>> {
        let Some(v) = self.opt(key) else {
            return Ok(None);
        };
        let parsed = if radix16 {
            u64::from_str_radix(v, 16)
        } else {
            v.parse::<u64>()
        };
        let n = parsed.map_err(|e| HarnessError::Parse(format!("{}: `{key}` = {v:?}: {e}", self.ctx)))?;
        T::try_from(n)
            .map(Some)
            .map_err(|_| HarnessError::Parse(format!("{}: `{key}` = {v:?} out of range", self.ctx)))
    }

    fn req_num<T: TryFrom<u64>>(&self, key: &str, radix16: bool) -> Result<T> {
        self.num(key, radix16)?
            .ok_or_else(|| HarnessError::Parse(format!("{}: missing `{key}`", self.ctx)))
    }

    fn ip(&self, key: &str) -> Result<IpAddr> {
        let v = self.req(key)?;
        v.parse()
            .map_err(|e| HarnessError::Parse(format!("{}: `{key}` = {v:?}: {e}", self.ctx)))
    }

    fn list(&self, key: &str) -> Vec<String> {
        match self.values.get(key) {
            Some(ViciNode::List(items)) => items.clone(),
            Some(ViciNode::Value(v)) => vec![v.clone()],
            _ => Vec::new(),
        }
    }

    fn owned(&self, key: &str) -> Option<String> {
        self.opt(key).map(str::to_string)
    }
}

fn parse_child(key: &str, entries: &[(String, ViciNode)]) -> Result<ChildSaInfo> {
    let f = Fields::new(format!("CHILD_SA {key}"), entries);
    Ok(ChildSaInfo {
        key: key.to_string(),
        name: f.req("name")?.to_string(),
        unique_id: f.req_num("uniqueid", false)?,
        reqid: f.num("reqid", false)?.unwrap_or(0),
        state: f.req("state")?.to_string(),
        mode: f.req("mode")?.to_string(),
        protocol: f.req("protocol")?.to_string(),
        encap: f.opt("encap") == Some("yes"),
        spi_in: f.num("spi-in", true)?.unwrap_or(0),
        spi_out: f.num("spi-out", true)?.unwrap_or(0),
        encr_alg: f.owned("encr-alg"),
        encr_keysize: f.num("encr-keysize", false)?,
        integ_alg: f.owned("integ-alg"),
        dh_group: f.owned("dh-group"),
        bytes_in: f.num("bytes-in", false)?.unwrap_or(0),
        packets_in: f.num("packets-in", false)?.unwrap_or(0),
        bytes_out: f.num("bytes-out", false)?.unwrap_or(0),
        packets_out: f.num("packets-out", false)?.unwrap_or(0),
        local_ts: f.list("local-ts"),
        remote_ts: f.list("remote-ts"),
    })
}

fn parse_ike(name: &str, entries: &[(String, ViciNode)]) -> Result<IkeSaInfo> {
    let f = Fields::new(format!("IKE_SA {name}"), entries);
    let mut children = Vec::new();
    if let Some(node) = f.values.get("child-sas") {
        let section = node
            .section()
            .ok_or_else(|| HarnessError::Parse(format!("IKE_SA {name}: child-sas is not a section")))?;
        for (key, child) in section {
            let child = child
                .section()
                .ok_or_else(|| HarnessError::Parse(format!("IKE_SA {name}: child {key} is not a section")))?;
            children.push(parse_child(key, child)?);
        }
    }
    Ok(IkeSaInfo {
        name: name.to_string(),
        unique_id: f.req_num("uniqueid", false)?,
        version: f.req_num("version", false)?,
        state: f.req("state")?.to_string(),
        local_host: f.ip("local-host")?,
        local_port: f.req_num("local-port", false)?,
        local_id: f.opt("local-id").unwrap_or_default().to_string(),
        remote_host: f.ip("remote-host")?,
        remote_port: f.req_num("remote-port", false)?,
        remote_id: f.opt("remote-id").unwrap_or_default().to_string(),
        initiator: f.opt("initiator") == Some("yes"),
        initiator_spi: f.req_num("initiator-spi", true)?,
        responder_spi: f.num("responder-spi", true)?.unwrap_or(0),
        encr_alg: f.owned("encr-alg"),
        encr_keysize: f.num("encr-keysize", false)?,
        integ_alg: f.owned("integ-alg"),
        prf_alg: f.owned("prf-alg"),
        dh_group: f.owned("dh-group"),
        children,
        local_vips: f.list("local-vips"),
    })
}

/// Parses the output of `swanctl --list-sas --pretty` into IKE SAs, in the order
/// listed.
pub fn parse_list_sas(text: &str) -> Result<Vec<IkeSaInfo>> {
    let mut out = Vec::new();
    for (name, node) in parse_vici_pretty(text)? {
        if name != "list-sa event" {
            continue;
        }
        let section = node
            .section()
            .ok_or_else(|| HarnessError::Parse("list-sa event is not a section".into()))?;
        for (ike_name, ike) in section {
            let ike = ike
                .section()
                .ok_or_else(|| HarnessError::Parse(format!("IKE_SA {ike_name} is not a section")))?;
            out.push(parse_ike(ike_name, ike)?);
        }
    }
    Ok(out)
}

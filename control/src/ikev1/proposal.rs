//! IKEv1 proposals: our configured IKE/ESP proposals as ISAKMP transforms,
//! and the choice among a peer's transforms.
//!
//! An IKEv1 transform is a whole suite (cipher, hash, group, ...) where an
//! IKEv2 proposal lists alternatives per transform type. Each offered IKEv1
//! transform is turned into a single-suite IKEv2 proposal and the choice is
//! made by [`crate::proposal::select_ike`] / [`crate::proposal::select_esp`],
//! so IKEv1 gets the same downgrade-safe rule: our preference order wins,
//! never the order of the peer's offer.

use std::time::Duration;

use crate::config::{IpsecMode, Lifetime};
use crate::crypto::{EncrAlg, IntegAlg, KeGroup, PrfAlg};
use crate::proposal::{EspProposal, IkeProposal, Mismatch, accept_ike_response, select_esp, select_ike};
use crate::wire::ikev2::{self, TransformAttribute, TransformType};
use crate::wire::isakmp::{Attribute, HashAlg, Proposal, ProtocolId, Transform};

/// Phase 1 attribute classes (RFC 2409 Appendix A).
mod p1 {
    pub const ENCRYPTION: u16 = 1;
    pub const HASH: u16 = 2;
    pub const AUTH_METHOD: u16 = 3;
    pub const GROUP: u16 = 4;
    pub const LIFE_TYPE: u16 = 11;
    pub const LIFE_DURATION: u16 = 12;
    pub const KEY_LENGTH: u16 = 14;
    /// Encryption algorithm AES-CBC (RFC 3602 §5.1 registry value).
    pub const AES_CBC: u16 = 7;
}

/// IPsec DOI SA attributes (RFC 2407 §4.5).
mod p2 {
    pub const LIFE_TYPE: u16 = 1;
    pub const LIFE_DURATION: u16 = 2;
    pub const GROUP: u16 = 3;
    pub const ENCAPSULATION: u16 = 4;
    pub const AUTH_ALG: u16 = 5;
    pub const KEY_LENGTH: u16 = 6;
    pub const TUNNEL: u16 = 1;
    pub const TRANSPORT: u16 = 2;
    pub const UDP_TUNNEL: u16 = 3;
    pub const UDP_TRANSPORT: u16 = 4;
}

/// Life type seconds, in both attribute classes.
const LIFE_SECONDS: u16 = 1;
/// The Phase 1 transform ID (RFC 2409 §5).
pub const KEY_IKE: u8 = 1;

/// The negotiated ISAKMP SA suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase1Suite {
    /// Cipher (AES-CBC).
    pub encr: EncrAlg,
    /// Hash and PRF.
    pub hash: HashAlg,
    /// The IKEv2 PRF with the same hash (for the shared suite reporting).
    pub prf: PrfAlg,
    /// Diffie-Hellman group.
    pub group: KeGroup,
    /// Lifetime in seconds the transform carried, if any.
    pub lifetime: Option<u32>,
}

/// The negotiated ESP suite of a Quick Mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase2Suite {
    /// Cipher.
    pub encr: EncrAlg,
    /// Integrity (None with AEAD).
    pub integ: Option<IntegAlg>,
    /// PFS group.
    pub pfs: Option<KeGroup>,
    /// Tunnel or transport.
    pub mode: IpsecMode,
    /// Lifetime in seconds the transform carried, if any.
    pub lifetime: Option<u32>,
}

fn hash_of(prf: PrfAlg) -> HashAlg {
    match prf {
        PrfAlg::HmacSha256 => HashAlg::Sha256,
        PrfAlg::HmacSha384 => HashAlg::Sha384,
        PrfAlg::HmacSha512 => HashAlg::Sha512,
    }
}

/// The IKEv2 integrity transform with the same hash: our IKE proposals
/// name one beside the PRF for CBC ciphers.
fn integ_of(hash: HashAlg) -> IntegAlg {
    match hash {
        HashAlg::Sha384 => IntegAlg::HmacSha384_192,
        HashAlg::Sha512 => IntegAlg::HmacSha512_256,
        HashAlg::Sha256 | HashAlg::Sha1 => IntegAlg::HmacSha256_128,
    }
}

fn prf_of(hash: HashAlg) -> Option<PrfAlg> {
    match hash {
        HashAlg::Sha256 => Some(PrfAlg::HmacSha256),
        HashAlg::Sha384 => Some(PrfAlg::HmacSha384),
        HashAlg::Sha512 => Some(PrfAlg::HmacSha512),
        HashAlg::Sha1 => None,
    }
}

/// The IPsec DOI authentication algorithm number of an integrity algorithm.
fn esp_auth_number(i: IntegAlg) -> u16 {
    match i {
        IntegAlg::HmacSha256_128 => 5,
        IntegAlg::HmacSha384_192 => 6,
        IntegAlg::HmacSha512_256 => 7,
    }
}

fn integ_of_esp_auth(n: u16) -> Option<IntegAlg> {
    match n {
        5 => Some(IntegAlg::HmacSha256_128),
        6 => Some(IntegAlg::HmacSha384_192),
        7 => Some(IntegAlg::HmacSha512_256),
        _ => None,
    }
}

fn clamp16(seconds: u64) -> u16 {
    u16::try_from(seconds).unwrap_or(u16::MAX)
}

/// Our Phase 1 offer: one transform per combination of our algorithms, in
/// our preference order, with authentication method `auth` (an attribute
/// value of [`super::auth::method`]) and the lifetime in seconds (capped
/// at 65,535 so it fits a basic attribute: shorter is safe).
pub fn phase1_transforms(ours: &[IkeProposal], lifetime_s: u64, auth: u16) -> Vec<Transform<'static>> {
    let mut out = Vec::new();
    for p in ours {
        for e in p.encr.iter().filter(|e| matches!(e, EncrAlg::AesCbc { .. })) {
            for prf in &p.prf {
                for g in p.ke.iter().filter(|g| **g != KeGroup::MlKem768) {
                    if out.len() == usize::from(u8::MAX) {
                        return out;
                    }
                    out.push(Transform {
                        number: (out.len() + 1) as u8,
                        id: KEY_IKE,
                        attributes: vec![
                            Attribute::basic(p1::ENCRYPTION, p1::AES_CBC),
                            Attribute::basic(p1::KEY_LENGTH, e.key_len() as u16 * 8),
                            Attribute::basic(p1::HASH, hash_of(*prf).ikev1_number()),
                            Attribute::basic(p1::AUTH_METHOD, auth),
                            Attribute::basic(p1::GROUP, g.number()),
                            Attribute::basic(p1::LIFE_TYPE, LIFE_SECONDS),
                            Attribute::basic(p1::LIFE_DURATION, clamp16(lifetime_s)),
                        ],
                    });
                }
            }
        }
    }
    out
}

/// A Phase 1 transform with authentication method `auth` as a
/// single-suite IKEv2 proposal, or why not.
fn phase1_as_ikev2(number: u8, t: &Transform<'_>, auth: u16) -> Result<(ikev2::Proposal, Option<u32>), String> {
    if t.id != KEY_IKE {
        return Err(format!("transform ID {} is not KEY_IKE", t.id));
    }
    let (mut encr, mut key_len, mut hash, mut group, mut method, mut life, mut life_type) =
        (None, None, None, None, None, None, LIFE_SECONDS);
    for a in &t.attributes {
        let v = a.as_u32();
        match a.ty {
            p1::ENCRYPTION => encr = v,
            p1::KEY_LENGTH => key_len = v,
            p1::HASH => hash = v,
            p1::GROUP => group = v,
            p1::AUTH_METHOD => method = v,
            p1::LIFE_TYPE => life_type = v.and_then(|v| u16::try_from(v).ok()).unwrap_or(0),
            p1::LIFE_DURATION => life = v,
            other => return Err(format!("unsupported attribute class {other}")),
        }
    }
    if method != Some(u32::from(auth)) {
        let what = method.map_or_else(|| "none".to_string(), |m| m.to_string());
        return Err(format!("authentication method {what} (this connection uses {auth})"));
    }
    if encr != Some(u32::from(p1::AES_CBC)) {
        return Err(format!("encryption algorithm {encr:?} (only AES-CBC)"));
    }
    let hash = hash
        .and_then(|h| HashAlg::from_ikev1_number(u16::try_from(h).ok()?))
        .ok_or_else(|| format!("hash {hash:?}"))?;
    let prf = prf_of(hash).ok_or_else(|| format!("hash {}", hash.name()))?;
    let group = group.ok_or("no group")?;
    let key_bits = key_len
        .and_then(|k| u16::try_from(k).ok())
        .ok_or("AES without a key length")?;
    let transforms = vec![
        ikev2::Transform {
            ty: TransformType::ENCR,
            id: 12,
            attributes: vec![TransformAttribute::KeyLength(key_bits)],
        },
        plain(TransformType::PRF, prf.transform_id()),
        plain(TransformType::INTEG, integ_of(hash).transform_id()),
        plain(TransformType::KE, u16::try_from(group).unwrap_or(0)),
    ];
    let life = if life_type == LIFE_SECONDS { life } else { None };
    Ok((
        ikev2::Proposal {
            number,
            protocol: ikev2::ProtocolId::IKE,
            spi: Vec::new(),
            transforms,
        },
        life,
    ))
}

fn plain(ty: TransformType, id: u16) -> ikev2::Transform {
    ikev2::Transform {
        ty,
        id,
        attributes: Vec::new(),
    }
}

fn suite_of(sel: &crate::crypto::IkeSuite, lifetime: Option<u32>) -> Phase1Suite {
    Phase1Suite {
        encr: sel.encr,
        hash: hash_of(sel.prf),
        prf: sel.prf,
        group: sel.ke,
        lifetime,
    }
}

/// Responder: the index of the transform to accept in the peer's Phase 1
/// proposal, by our preference order, among those with authentication
/// method `auth`, and its suite.
pub fn select_phase1(
    ours: &[IkeProposal],
    offered: &Proposal<'_>,
    auth: u16,
) -> Result<(usize, Phase1Suite), Mismatch> {
    let mut converted = Vec::new();
    let mut lifetimes = Vec::new();
    let mut skipped = Vec::new();
    if offered.protocol == ProtocolId::ISAKMP {
        for (i, t) in offered.transforms.iter().enumerate().take(usize::from(u8::MAX)) {
            match phase1_as_ikev2((i + 1) as u8, t, auth) {
                Ok((p, life)) => {
                    converted.push(p);
                    lifetimes.push((i, life));
                }
                Err(why) => skipped.push(format!("transform {}: {why}", t.number)),
            }
        }
    }
    let mut sel = select_ike(ours, &converted).map_err(|mut m| {
        if !skipped.is_empty() {
            m.reason = format!("{}; unusable: {}", m.reason, skipped.join(", "));
        }
        m
    })?;
    let at = usize::from(sel.proposal.number) - 1;
    let life = lifetimes.iter().find(|(i, _)| *i == at).and_then(|(_, l)| *l);
    sel.suite.integ = None;
    Ok((at, suite_of(&sel.suite, life)))
}

/// A mismatch for a malformed answer: our proposals and the reason.
fn refusal<P: std::fmt::Display>(ours: &[P], reason: String) -> Mismatch {
    Mismatch {
        offered: Vec::new(),
        accepted: ours.iter().map(ToString::to_string).collect(),
        reason,
    }
}

/// Initiator: the responder's single transform must be one we offered
/// (with our authentication method `auth`).
pub fn accept_phase1(ours: &[IkeProposal], chosen: &Proposal<'_>, auth: u16) -> Result<Phase1Suite, Mismatch> {
    let bad = |reason: String| refusal(ours, reason);
    let [t] = chosen.transforms.as_slice() else {
        return Err(bad(format!(
            "responder returned {} transforms, not one",
            chosen.transforms.len()
        )));
    };
    if chosen.protocol != ProtocolId::ISAKMP {
        return Err(bad(format!("responder chose protocol {}", chosen.protocol)));
    }
    let (p, life) = phase1_as_ikev2(1, t, auth).map_err(bad)?;
    let sel = accept_ike_response(ours, &p)?;
    Ok(suite_of(&sel.suite, life))
}

/// The PFS group our Quick Modes use: the first group of our first ESP
/// proposal that names one (IKEv1 sends one KE payload, so one group).
pub fn pfs_group(ours: &[EspProposal]) -> Option<KeGroup> {
    ours.iter().find_map(|p| p.ke.first().copied())
}

/// Our Quick Mode offer: one ESP proposal whose transforms are our
/// algorithm combinations in preference order; `udp` asks for the
/// UDP-encapsulated modes (RFC 3947 §5) when a NAT was detected.
pub fn phase2_transforms(
    ours: &[EspProposal],
    pfs: Option<KeGroup>,
    mode: IpsecMode,
    udp: bool,
    lifetime_s: u64,
) -> Vec<Transform<'static>> {
    let mut out = Vec::new();
    for p in ours {
        if pfs.is_some_and(|g| !p.ke.contains(&g)) || (pfs.is_none() && !p.ke.is_empty()) {
            continue;
        }
        for e in &p.encr {
            let integs: Vec<Option<IntegAlg>> = if e.is_aead() {
                vec![None]
            } else {
                p.integ.iter().copied().map(Some).collect()
            };
            if matches!(e, EncrAlg::ChaCha20Poly1305) {
                continue;
            }
            for i in integs {
                if out.len() == usize::from(u8::MAX) {
                    return out;
                }
                let mut attributes = vec![
                    Attribute::basic(p2::LIFE_TYPE, LIFE_SECONDS),
                    Attribute::basic(p2::LIFE_DURATION, clamp16(lifetime_s)),
                    Attribute::basic(
                        p2::ENCAPSULATION,
                        match (mode, udp) {
                            (IpsecMode::Tunnel, false) => p2::TUNNEL,
                            (IpsecMode::Transport, false) => p2::TRANSPORT,
                            (IpsecMode::Tunnel, true) => p2::UDP_TUNNEL,
                            (IpsecMode::Transport, true) => p2::UDP_TRANSPORT,
                        },
                    ),
                    Attribute::basic(p2::KEY_LENGTH, e.key_len() as u16 * 8),
                ];
                if let Some(i) = i {
                    attributes.push(Attribute::basic(p2::AUTH_ALG, esp_auth_number(i)));
                }
                if let Some(g) = pfs {
                    attributes.push(Attribute::basic(p2::GROUP, g.number()));
                }
                out.push(Transform {
                    number: (out.len() + 1) as u8,
                    id: e.transform_id() as u8,
                    attributes,
                });
            }
        }
    }
    out
}

/// An ESP transform as a single-suite IKEv2 proposal, its mode and lifetime.
fn phase2_as_ikev2(
    number: u8,
    spi: &[u8],
    t: &Transform<'_>,
) -> Result<(ikev2::Proposal, IpsecMode, Option<u32>), String> {
    let (mut key_len, mut auth, mut group, mut mode, mut life, mut life_type) =
        (None, None, None, p2::TUNNEL, None, LIFE_SECONDS);
    for a in &t.attributes {
        let v = a.as_u32();
        match a.ty {
            p2::KEY_LENGTH => key_len = v.and_then(|v| u16::try_from(v).ok()),
            p2::AUTH_ALG => auth = v.and_then(|v| u16::try_from(v).ok()),
            p2::GROUP => group = v.and_then(|v| u16::try_from(v).ok()),
            p2::ENCAPSULATION => mode = v.and_then(|v| u16::try_from(v).ok()).unwrap_or(0),
            p2::LIFE_TYPE => life_type = v.and_then(|v| u16::try_from(v).ok()).unwrap_or(0),
            p2::LIFE_DURATION => life = v,
            other => return Err(format!("unsupported attribute {other}")),
        }
    }
    let encr = EncrAlg::from_transform(u16::from(t.id), key_len).ok_or_else(|| format!("ESP transform {}", t.id))?;
    let mode = match mode {
        p2::TUNNEL | p2::UDP_TUNNEL => IpsecMode::Tunnel,
        p2::TRANSPORT | p2::UDP_TRANSPORT => IpsecMode::Transport,
        other => return Err(format!("encapsulation mode {other}")),
    };
    let mut transforms = vec![ikev2::Transform {
        ty: TransformType::ENCR,
        id: u16::from(t.id),
        attributes: key_len.map(TransformAttribute::KeyLength).into_iter().collect(),
    }];
    match (encr.is_aead(), auth) {
        (false, Some(a)) => {
            let i = integ_of_esp_auth(a).ok_or_else(|| format!("authentication algorithm {a}"))?;
            transforms.push(plain(TransformType::INTEG, i.transform_id()));
        }
        (true, None) => {}
        (aead, a) => {
            return Err(format!(
                "authentication algorithm {a:?} with {} (AEAD: {aead})",
                encr.name()
            ));
        }
    }
    if let Some(g) = group {
        transforms.push(plain(TransformType::KE, g));
    }
    transforms.push(plain(TransformType::ESN, 0));
    let life = if life_type == LIFE_SECONDS { life } else { None };
    Ok((
        ikev2::Proposal {
            number,
            protocol: ikev2::ProtocolId::ESP,
            spi: spi.to_vec(),
            transforms,
        },
        mode,
        life,
    ))
}

/// The lifetime in seconds of a RESPONDER-LIFETIME notify (RFC 2407
/// §4.6.3.1): its data is IPsec DOI SA attributes, life type then
/// duration. A kilobyte lifetime is not one we schedule by, so it is skipped.
pub fn responder_lifetime_seconds(data: &[u8]) -> Option<u32> {
    let attributes = crate::wire::isakmp::decode_attributes(data).ok()?;
    let mut life_type = LIFE_SECONDS;
    let mut seconds = None;
    for a in &attributes {
        match a.ty {
            p2::LIFE_TYPE => life_type = a.as_u32().and_then(|v| u16::try_from(v).ok()).unwrap_or(0),
            p2::LIFE_DURATION if life_type == LIFE_SECONDS => seconds = a.as_u32(),
            _ => {}
        }
    }
    seconds
}

/// The schedule of an SA whose negotiated lifetime (seconds, from the
/// peer's transform or its RESPONDER-LIFETIME) may be shorter than ours:
/// the shorter one wins, so neither side uses an SA past its peer's
/// expiry; rekeying then starts a tenth of it early.
pub fn effective_lifetime(ours: &Lifetime, negotiated: Option<u32>) -> Lifetime {
    let hard = ours.rekey + ours.over;
    match negotiated.map(|s| Duration::from_secs(u64::from(s))) {
        Some(theirs) if !theirs.is_zero() && theirs < hard => {
            let over = (theirs / 10).min(ours.over);
            let rekey = theirs - over;
            Lifetime {
                rekey,
                jitter: ours.jitter.min(rekey / 10),
                over,
            }
        }
        _ => *ours,
    }
}

/// The choice of an ESP transform in a Quick Mode SA payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase2Choice {
    /// Index of the proposal.
    pub proposal: usize,
    /// Index of the transform in it.
    pub transform: usize,
    /// The suite.
    pub suite: Phase2Suite,
    /// The peer's inbound SPI.
    pub peer_spi: u32,
}

/// Responder: the ESP transform to accept by our preference order; the
/// PFS group must be the one the KE payload uses (`pfs`, None without KE).
pub fn select_phase2(
    ours: &[EspProposal],
    offered: &[Proposal<'_>],
    pfs: Option<KeGroup>,
) -> Result<Phase2Choice, Mismatch> {
    let mut converted = Vec::new();
    let mut meta = Vec::new();
    for (pi, p) in offered.iter().enumerate() {
        // Proposals that AND several protocols (ESP with AH or IPComp) are not supported.
        let bundled = offered.iter().filter(|q| q.number == p.number).count() > 1;
        if p.protocol != ProtocolId::ESP || bundled {
            continue;
        }
        for (ti, t) in p.transforms.iter().enumerate() {
            if converted.len() == usize::from(u8::MAX) {
                break;
            }
            if let Ok((prop, mode, life)) = phase2_as_ikev2((converted.len() + 1) as u8, p.spi, t) {
                let group = prop.transforms.iter().find(|t| t.ty == TransformType::KE).map(|t| t.id);
                if group != pfs.map(KeGroup::number) {
                    continue;
                }
                converted.push(prop);
                meta.push((pi, ti, mode, life));
            }
        }
    }
    let sel = select_esp(ours, &converted)?;
    let (pi, ti, mode, lifetime) = meta[usize::from(sel.proposal.number) - 1];
    Ok(Phase2Choice {
        proposal: pi,
        transform: ti,
        suite: Phase2Suite {
            encr: sel.encr,
            integ: sel.integ,
            pfs: sel.ke,
            mode,
            lifetime,
        },
        peer_spi: sel.peer_spi,
    })
}

/// Initiator: the responder's one ESP transform must be acceptable to us.
pub fn accept_phase2(
    ours: &[EspProposal],
    chosen: &[Proposal<'_>],
    pfs: Option<KeGroup>,
) -> Result<Phase2Choice, Mismatch> {
    let total: usize = chosen.iter().map(|p| p.transforms.len()).sum();
    let choice = select_phase2(ours, chosen, pfs)?;
    if total != 1 {
        return Err(refusal(ours, format!("responder returned {total} transforms, not one")));
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ikev1::auth::method::{self, PSK};
    use crate::proposal::{parse_esp_proposals, parse_ike_proposals};

    #[test]
    fn responder_lifetime_is_read_in_seconds_only() {
        let mut data = Vec::new();
        crate::wire::isakmp::encode_attributes(
            &[
                Attribute::basic(p2::LIFE_TYPE, LIFE_SECONDS),
                Attribute::basic(p2::LIFE_DURATION, 1200),
                Attribute::basic(p2::LIFE_TYPE, 2),
                Attribute::basic(p2::LIFE_DURATION, 50_000),
            ],
            &mut data,
        )
        .unwrap();
        assert_eq!(responder_lifetime_seconds(&data), Some(1200));
        assert_eq!(responder_lifetime_seconds(&data[..3]), None, "truncated");
        assert_eq!(responder_lifetime_seconds(&[]), None);
    }

    #[test]
    fn the_shorter_lifetime_wins() {
        let ours = Lifetime::rekey_after(Duration::from_secs(3600));
        assert_eq!(effective_lifetime(&ours, None), ours);
        assert_eq!(
            effective_lifetime(&ours, Some(28_800)),
            ours,
            "a longer one changes nothing"
        );
        assert_eq!(effective_lifetime(&ours, Some(0)), ours);
        let short = effective_lifetime(&ours, Some(600));
        assert_eq!(short.rekey + short.over, Duration::from_secs(600));
        assert_eq!(short.rekey, Duration::from_secs(540));
        assert!(short.jitter <= short.rekey / 10);
    }

    #[test]
    fn our_preference_wins_over_the_peer_order() {
        let ours = parse_ike_proposals("aes256-sha256-modp2048,aes128-sha256-modp2048").unwrap();
        let peer = parse_ike_proposals("aes128-sha256-modp2048,aes256-sha256-modp2048,aes128-sha512-modp3072").unwrap();
        let offered = Proposal {
            number: 1,
            protocol: ProtocolId::ISAKMP,
            spi: &[],
            transforms: phase1_transforms(&peer, 10800, PSK),
        };
        let (at, suite) = select_phase1(&ours, &offered, PSK).unwrap();
        assert_eq!(at, 1, "the peer's second transform is our first choice");
        assert_eq!(suite.encr, EncrAlg::AesCbc { key_bits: 256 });
        assert_eq!(
            (suite.hash, suite.group, suite.lifetime),
            (HashAlg::Sha256, KeGroup::Modp2048, Some(10800))
        );
        let echoed = Proposal {
            transforms: vec![offered.transforms[at].clone()],
            ..offered.clone()
        };
        assert_eq!(accept_phase1(&ours, &echoed, PSK).unwrap(), suite);
        // A weaker transform we do not accept is refused, with the reason.
        let weak = parse_ike_proposals("aes128-sha512-modp3072").unwrap();
        let err = accept_phase1(
            &ours,
            &Proposal {
                transforms: phase1_transforms(&weak, 60, PSK),
                ..offered.clone()
            },
            PSK,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no acceptable proposal"), "{err}");
        // A transform with another authentication method is skipped with its reason.
        let rsa = Proposal {
            transforms: phase1_transforms(&ours, 60, method::RSA_SIG),
            ..offered
        };
        let err = select_phase1(&ours, &rsa, PSK).unwrap_err();
        assert!(err.reason.contains("authentication method 3"), "{}", err.reason);
        assert_eq!(select_phase1(&ours, &rsa, method::RSA_SIG).unwrap().0, 0);
    }

    #[test]
    fn esp_selection_with_and_without_pfs() {
        let ours = parse_esp_proposals("aes256gcm16-modp2048,aes128-sha256-modp2048").unwrap();
        let peer = parse_esp_proposals("aes128-sha256-modp2048,aes256gcm16-modp2048").unwrap();
        let spi = 0x1122_3344u32.to_be_bytes();
        let pfs = pfs_group(&peer);
        assert_eq!(pfs, Some(KeGroup::Modp2048));
        let offer = vec![Proposal {
            number: 1,
            protocol: ProtocolId::ESP,
            spi: &spi,
            transforms: phase2_transforms(&peer, pfs, IpsecMode::Tunnel, false, 3600),
        }];
        let c = select_phase2(&ours, &offer, pfs).unwrap();
        assert_eq!((c.transform, c.peer_spi), (1, 0x1122_3344));
        assert_eq!(c.suite.encr, EncrAlg::AesGcm16 { key_bits: 256 });
        assert_eq!(
            (c.suite.integ, c.suite.pfs, c.suite.mode),
            (None, Some(KeGroup::Modp2048), IpsecMode::Tunnel)
        );
        // The group of the KE payload must be the transforms' group.
        assert!(select_phase2(&ours, &offer, None).is_err());
        // Without PFS.
        let ours = parse_esp_proposals("aes256-sha256").unwrap();
        let offer = vec![Proposal {
            number: 1,
            protocol: ProtocolId::ESP,
            spi: &spi,
            transforms: phase2_transforms(&ours, None, IpsecMode::Transport, false, 3600),
        }];
        let c = accept_phase2(&ours, &offer, None).unwrap();
        assert_eq!(
            (c.suite.integ, c.suite.pfs, c.suite.mode),
            (Some(IntegAlg::HmacSha256_128), None, IpsecMode::Transport)
        );
    }
}

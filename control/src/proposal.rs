//! Proposals: strongSwan-style proposal strings, conversion to SA payload
//! proposals, and downgrade-safe selection that explains mismatches.
//!
//! Syntax (as in strongSwan's `proposals =` / `esp_proposals =`): proposals
//! separated by `,`, algorithms of one proposal separated by `-`, e.g.
//! `aes256gcm16-prfsha256-x25519, aes128-sha256-modp2048` for IKE and
//! `aes256gcm16, aes128-sha256-esn` for ESP. Every listed algorithm of a
//! proposal is acceptable; earlier ones are preferred.
//!
//! Selection walks *our* proposals in our order and, per transform type,
//! picks *our* most preferred algorithm that the peer offers, so a peer that
//! lists weak algorithms first cannot steer the choice.
//!
//! RFC 9370 additional key exchanges are written as strongSwan 6 does:
//! `aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024`; `keN_none`
//! makes exchange N optional. A type we list without `none` is required: a
//! peer that leaves it out, or offers only NONE for it, is not accepted.

use std::collections::BTreeSet;
use std::fmt;

use crate::crypto::{EncrAlg, IkeSuite, IntegAlg, KeGroup, PrfAlg};
use crate::wire::ikev2::{Proposal, ProtocolId, Transform, TransformAttribute, TransformType};

/// One configured IKE proposal: all listed algorithms are acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeProposal {
    /// Encryption algorithms, most preferred first.
    pub encr: Vec<EncrAlg>,
    /// Integrity algorithms (empty with AEAD encryption).
    pub integ: Vec<IntegAlg>,
    /// Pseudo-random functions.
    pub prf: Vec<PrfAlg>,
    /// Key exchange groups.
    pub ke: Vec<KeGroup>,
    /// RFC 9370 additional key exchanges: index N-1 holds the methods of
    /// ADDKE N (transform type 5+N) in preference order, `None` for NONE
    /// (the exchange is optional). An empty list means we do not do it.
    pub additional_ke: [Vec<Option<KeGroup>>; MAX_ADDITIONAL_KE],
}

/// Number of additional key exchange transform types (ADDKE1..ADDKE7).
pub const MAX_ADDITIONAL_KE: usize = 7;

/// The additional key exchanges that went into a set of keys, as SA records
/// keep them: index N-1 holds ADDKE N's method (a byte each, where a list
/// would cost a pointer and a heap block per SA).
pub type AdditionalKeSlots = [Option<KeGroup>; MAX_ADDITIONAL_KE];

/// `(ADDKE number, method)` pairs as [`AdditionalKeSlots`]; numbers outside
/// 1..=7 are left out.
pub fn additional_ke_slots(list: &[(u8, KeGroup)]) -> AdditionalKeSlots {
    let mut slots = [None; MAX_ADDITIONAL_KE];
    for &(n, g) in list {
        if let Some(slot) = slots.get_mut(usize::from(n).wrapping_sub(1)) {
            *slot = Some(g);
        }
    }
    slots
}

/// The `(ADDKE number, method)` pairs of `slots`, in order.
pub fn additional_ke_list(slots: &AdditionalKeSlots) -> Vec<(u8, KeGroup)> {
    (1u8..).zip(slots).filter_map(|(n, g)| Some((n, (*g)?))).collect()
}

/// The names of a set of key exchanges as strongSwan 6 proposals write
/// them: the first method, then `keN_method` for each additional one
/// (`["x25519", "ke1_mlkem768"]`).
pub fn key_exchange_names(first: Option<KeGroup>, additional: &[(u8, KeGroup)]) -> Vec<String> {
    first
        .map(|g| g.name().to_string())
        .into_iter()
        .chain(additional.iter().map(|(n, g)| format!("ke{n}_{}", g.name())))
        .collect()
}

/// One configured ESP proposal. `ke` empty means no PFS. `esn` lists the
/// acceptable Extended Sequence Number settings in preference order
/// (`[false]` unless the string says `esn` and/or `noesn`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspProposal {
    /// Encryption algorithms, most preferred first.
    pub encr: Vec<EncrAlg>,
    /// Integrity algorithms (empty with AEAD encryption).
    pub integ: Vec<IntegAlg>,
    /// Key exchange groups for PFS; empty = no PFS.
    pub ke: Vec<KeGroup>,
    /// RFC 9370 additional key exchanges of a CREATE_CHILD_SA, run in
    /// IKE_FOLLOWUP_KE exchanges, as in [`IkeProposal::additional_ke`].
    pub additional_ke: [Vec<Option<KeGroup>>; MAX_ADDITIONAL_KE],
    /// Acceptable ESN settings, preferred first.
    pub esn: Vec<bool>,
}

/// Why a proposal string could not be parsed. Every variant names the
/// offending proposal (and token where there is one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalError {
    /// The string, or one comma-separated proposal, or one token is empty.
    #[error("empty proposal or algorithm in '{0}'")]
    Empty(String),
    /// A token names no algorithm we know.
    #[error("unknown algorithm '{token}' in proposal '{proposal}'")]
    UnknownToken {
        /// The token.
        token: String,
        /// The proposal it appeared in.
        proposal: String,
    },
    /// A known token that this kind of proposal cannot contain.
    #[error("'{token}' is not allowed in {kind} proposal '{proposal}'")]
    NotAllowed {
        /// The token.
        token: String,
        /// `IKE` or `ESP`.
        kind: &'static str,
        /// The proposal it appeared in.
        proposal: String,
    },
    /// AEAD and non-AEAD encryption mixed in one proposal.
    #[error("proposal '{0}' mixes AEAD and non-AEAD encryption algorithms")]
    MixedAead(String),
    /// No encryption algorithm.
    #[error("proposal '{0}' has no encryption algorithm")]
    MissingEncr(String),
    /// Non-AEAD encryption without an integrity algorithm.
    #[error("proposal '{0}' needs an integrity algorithm")]
    MissingInteg(String),
    /// An integrity algorithm with AEAD encryption in an ESP proposal.
    #[error("integrity algorithm '{token}' is not allowed with AEAD encryption in proposal '{proposal}'")]
    IntegWithAead {
        /// The token.
        token: String,
        /// The proposal.
        proposal: String,
    },
    /// AEAD IKE proposal with neither a PRF nor an integrity algorithm to derive one from.
    #[error("AEAD IKE proposal needs a PRF: '{0}'")]
    AeadNeedsPrf(String),
    /// IKE proposal without a key exchange group.
    #[error("IKE proposal '{0}' needs a key exchange group")]
    MissingKe(String),
    /// Additional key exchanges in an ESP proposal without a PFS group: RFC
    /// 9370 runs them after the CREATE_CHILD_SA's own key exchange.
    #[error("additional key exchange '{token}' needs a PFS key exchange group in ESP proposal '{proposal}'")]
    AdditionalKeWithoutPfs {
        /// The token.
        token: String,
        /// The proposal.
        proposal: String,
    },
}

/// One parsed token.
enum Token {
    Encr(EncrAlg),
    Integ(IntegAlg),
    Prf(PrfAlg),
    Ke(KeGroup),
    /// `keN_method` or `keN_none`: ADDKE N (index N-1).
    AddKe(usize, Option<KeGroup>),
    Esn(bool),
}

/// `keN_method` / `keN_none` with N in 1..=7.
fn parse_additional_ke(lower: &str) -> Option<Token> {
    let rest = lower.strip_prefix("ke")?;
    let (n, method) = rest.split_once('_')?;
    let n: usize = n.parse().ok()?;
    if !(1..=MAX_ADDITIONAL_KE).contains(&n) {
        return None;
    }
    let method = match method {
        "none" => None,
        m => match parse_token(m)? {
            Token::Ke(g) => Some(g),
            _ => return None,
        },
    };
    Some(Token::AddKe(n - 1, method))
}

fn parse_token(t: &str) -> Option<Token> {
    let lower = t.to_ascii_lowercase();
    Some(match lower.as_str() {
        "aes128" => Token::Encr(EncrAlg::AesCbc { key_bits: 128 }),
        "aes192" => Token::Encr(EncrAlg::AesCbc { key_bits: 192 }),
        "aes256" => Token::Encr(EncrAlg::AesCbc { key_bits: 256 }),
        "aes128gcm16" | "aes128gcm128" => Token::Encr(EncrAlg::AesGcm16 { key_bits: 128 }),
        "aes192gcm16" | "aes192gcm128" => Token::Encr(EncrAlg::AesGcm16 { key_bits: 192 }),
        "aes256gcm16" | "aes256gcm128" => Token::Encr(EncrAlg::AesGcm16 { key_bits: 256 }),
        "chacha20poly1305" => Token::Encr(EncrAlg::ChaCha20Poly1305),
        "sha256" | "sha2_256" => Token::Integ(IntegAlg::HmacSha256_128),
        "sha384" | "sha2_384" => Token::Integ(IntegAlg::HmacSha384_192),
        "sha512" | "sha2_512" => Token::Integ(IntegAlg::HmacSha512_256),
        "prfsha256" | "prfsha2_256" => Token::Prf(PrfAlg::HmacSha256),
        "prfsha384" | "prfsha2_384" => Token::Prf(PrfAlg::HmacSha384),
        "prfsha512" | "prfsha2_512" => Token::Prf(PrfAlg::HmacSha512),
        "modp2048" => Token::Ke(KeGroup::Modp2048),
        "modp3072" => Token::Ke(KeGroup::Modp3072),
        "modp4096" => Token::Ke(KeGroup::Modp4096),
        "ecp256" => Token::Ke(KeGroup::Ecp256),
        "ecp384" => Token::Ke(KeGroup::Ecp384),
        "x25519" | "curve25519" => Token::Ke(KeGroup::Curve25519),
        "mlkem512" => Token::Ke(KeGroup::MlKem512),
        "mlkem768" => Token::Ke(KeGroup::MlKem768),
        "mlkem1024" => Token::Ke(KeGroup::MlKem1024),
        "esn" => Token::Esn(true),
        "noesn" => Token::Esn(false),
        other => return parse_additional_ke(other),
    })
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// The algorithms of one proposal string, before per-protocol validation.
#[derive(Default)]
struct Parsed {
    encr: Vec<EncrAlg>,
    integ: Vec<IntegAlg>,
    prf: Vec<PrfAlg>,
    ke: Vec<KeGroup>,
    esn: Vec<bool>,
    additional_ke: [Vec<Option<KeGroup>>; MAX_ADDITIONAL_KE],
    first_addke_token: Option<String>,
    first_integ_token: Option<String>,
    first_prf_token: Option<String>,
    first_esn_token: Option<String>,
}

fn split_proposals(s: &str) -> Result<Vec<&str>, ProposalError> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ProposalError::Empty(s.to_string()));
    }
    Ok(parts)
}

fn parse_one(p: &str) -> Result<Parsed, ProposalError> {
    let mut out = Parsed::default();
    for token in p.split('-') {
        if token.is_empty() {
            return Err(ProposalError::Empty(p.to_string()));
        }
        match parse_token(token) {
            None => {
                return Err(ProposalError::UnknownToken {
                    token: token.to_string(),
                    proposal: p.to_string(),
                });
            }
            Some(Token::Encr(e)) => push_unique(&mut out.encr, e),
            Some(Token::Integ(i)) => {
                out.first_integ_token.get_or_insert_with(|| token.to_string());
                push_unique(&mut out.integ, i);
            }
            Some(Token::Prf(f)) => {
                out.first_prf_token.get_or_insert_with(|| token.to_string());
                push_unique(&mut out.prf, f);
            }
            Some(Token::Ke(k)) => push_unique(&mut out.ke, k),
            Some(Token::AddKe(i, k)) => {
                out.first_addke_token.get_or_insert_with(|| token.to_string());
                push_unique(&mut out.additional_ke[i], k);
            }
            Some(Token::Esn(e)) => {
                out.first_esn_token.get_or_insert_with(|| token.to_string());
                push_unique(&mut out.esn, e);
            }
        }
    }
    if out.encr.is_empty() {
        return Err(ProposalError::MissingEncr(p.to_string()));
    }
    let aead = out.encr[0].is_aead();
    if out.encr.iter().any(|e| e.is_aead() != aead) {
        return Err(ProposalError::MixedAead(p.to_string()));
    }
    Ok(out)
}

/// Parses a comma-separated list of IKE proposals.
///
/// Without a PRF token the PRFs are derived from the integrity algorithms
/// (as strongSwan does). In an AEAD proposal integrity tokens only serve
/// that derivation and are then dropped; an AEAD proposal with neither is
/// an error.
pub fn parse_ike_proposals(s: &str) -> Result<Vec<IkeProposal>, ProposalError> {
    split_proposals(s)?
        .into_iter()
        .map(|p| {
            let mut parsed = parse_one(p)?;
            if let Some(token) = parsed.first_esn_token {
                return Err(ProposalError::NotAllowed {
                    token,
                    kind: "IKE",
                    proposal: p.to_string(),
                });
            }
            let aead = parsed.encr[0].is_aead();
            if parsed.prf.is_empty() {
                if aead && parsed.integ.is_empty() {
                    return Err(ProposalError::AeadNeedsPrf(p.to_string()));
                }
                for i in &parsed.integ {
                    push_unique(&mut parsed.prf, PrfAlg::for_integ(*i));
                }
            }
            if aead {
                parsed.integ.clear();
            } else if parsed.integ.is_empty() {
                return Err(ProposalError::MissingInteg(p.to_string()));
            }
            if parsed.ke.is_empty() {
                return Err(ProposalError::MissingKe(p.to_string()));
            }
            Ok(IkeProposal {
                encr: parsed.encr,
                integ: parsed.integ,
                prf: parsed.prf,
                ke: parsed.ke,
                additional_ke: parsed.additional_ke,
            })
        })
        .collect()
}

/// An integrity token in an AEAD IKE proposal: 1-based proposal number, the
/// token, and whether it chose the PRF (no PRF token) or was dropped. Both
/// are legal strongSwan syntax that an operator may read as "integrity".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AeadIntegToken {
    /// 1-based number of the proposal in the string.
    pub proposal: usize,
    /// The token as written.
    pub token: String,
    /// The AEAD cipher it follows.
    pub cipher: EncrAlg,
    /// True when it selected the PRF, false when it is ignored.
    pub selects_prf: bool,
}

/// The integrity tokens of the AEAD proposals in an IKE proposal string (see
/// [`parse_ike_proposals`] for what becomes of them); proposals that do not
/// parse are skipped.
pub fn ike_aead_integrity_tokens(s: &str) -> Vec<AeadIntegToken> {
    let Ok(parts) = split_proposals(s) else {
        return Vec::new();
    };
    parts
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let parsed = parse_one(p).ok()?;
            let cipher = *parsed.encr.first()?;
            (cipher.is_aead()).then_some(())?;
            Some(AeadIntegToken {
                proposal: i + 1,
                token: parsed.first_integ_token?,
                cipher,
                selects_prf: parsed.prf.is_empty(),
            })
        })
        .collect()
}

/// Parses a comma-separated list of ESP proposals. Key exchange groups
/// request PFS; `esn` / `noesn` select Extended Sequence Numbers (default
/// `noesn`).
pub fn parse_esp_proposals(s: &str) -> Result<Vec<EspProposal>, ProposalError> {
    split_proposals(s)?
        .into_iter()
        .map(|p| {
            let parsed = parse_one(p)?;
            if let Some(token) = parsed.first_prf_token {
                return Err(ProposalError::NotAllowed {
                    token,
                    kind: "ESP",
                    proposal: p.to_string(),
                });
            }
            if let Some(token) = parsed.first_addke_token.filter(|_| parsed.ke.is_empty()) {
                return Err(ProposalError::AdditionalKeWithoutPfs {
                    token,
                    proposal: p.to_string(),
                });
            }
            let aead = parsed.encr[0].is_aead();
            if aead {
                if let Some(token) = parsed.first_integ_token {
                    return Err(ProposalError::IntegWithAead {
                        token,
                        proposal: p.to_string(),
                    });
                }
            } else if parsed.integ.is_empty() {
                return Err(ProposalError::MissingInteg(p.to_string()));
            }
            let esn = if parsed.esn.is_empty() { vec![false] } else { parsed.esn };
            Ok(EspProposal {
                encr: parsed.encr,
                integ: parsed.integ,
                ke: parsed.ke,
                additional_ke: parsed.additional_ke,
                esn,
            })
        })
        .collect()
}

fn encr_transform(e: EncrAlg) -> Transform {
    Transform {
        ty: TransformType::ENCR,
        id: e.transform_id(),
        attributes: e
            .key_length_attribute()
            .map(TransformAttribute::KeyLength)
            .into_iter()
            .collect(),
    }
}

fn plain_transform(ty: TransformType, id: u16) -> Transform {
    Transform {
        ty,
        id,
        attributes: Vec::new(),
    }
}

fn esn_id(esn: bool) -> u16 {
    u16::from(esn)
}

/// The transform type of ADDKE index `i` (ADDKE1 is type 6).
fn addke_type(i: usize) -> TransformType {
    TransformType(6 + u8::try_from(i).unwrap_or(u8::MAX - 6))
}

/// The ADDKE transforms of `additional` (index N-1 = ADDKE N, NONE as ID 0).
fn additional_transforms(
    additional: &[Vec<Option<KeGroup>>; MAX_ADDITIONAL_KE],
) -> impl Iterator<Item = Transform> + '_ {
    additional.iter().enumerate().flat_map(|(i, methods)| {
        methods
            .iter()
            .map(move |k| plain_transform(addke_type(i), k.map_or(0, KeGroup::number)))
    })
}

fn additional_ke_name(i: usize, k: Option<KeGroup>) -> String {
    format!("ke{}_{}", i + 1, k.map_or("none", KeGroup::name))
}

impl IkeProposal {
    /// True if every key exchange this proposal can end up with includes a
    /// post-quantum one: a peer cannot negotiate it down to classical only.
    pub fn requires_post_quantum(&self) -> bool {
        let primary_pq = self.ke.iter().all(|k| k.is_post_quantum());
        let required_pq = self
            .additional_ke
            .iter()
            .any(|m| !m.is_empty() && m.iter().all(|k| k.is_some_and(KeGroup::is_post_quantum)));
        primary_pq || required_pq
    }

    /// Where a peer could steer this proposal to a weaker result than its
    /// first choice: one line per way (empty when there is none). This is
    /// what `ironsa check` prints for each IKE proposal.
    pub fn downgrade_risks(&self) -> Vec<String> {
        let mut out = Vec::new();
        let pq_offered = self.ke.iter().any(|k| k.is_post_quantum())
            || self
                .additional_ke
                .iter()
                .flatten()
                .flatten()
                .any(|k| k.is_post_quantum());
        if !pq_offered {
            return out;
        }
        let classical: Vec<&str> = self
            .ke
            .iter()
            .filter(|k| !k.is_post_quantum())
            .map(|k| k.name())
            .collect();
        if self.ke.iter().any(|k| k.is_post_quantum()) && !classical.is_empty() {
            out.push(format!(
                "the key exchange is either of {}: a peer may choose {} alone (write ke1_<method> for both)",
                self.ke.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
                classical.join(", ")
            ));
        }
        for (i, methods) in self.additional_ke.iter().enumerate() {
            if methods.contains(&None) && methods.iter().flatten().any(|k| k.is_post_quantum()) {
                out.push(format!(
                    "additional key exchange {} is optional ({}): a peer may skip it",
                    i + 1,
                    additional_ke_name(i, None)
                ));
            } else if methods.iter().flatten().any(|k| !k.is_post_quantum())
                && methods.iter().flatten().any(|k| k.is_post_quantum())
            {
                out.push(format!(
                    "additional key exchange {} may be classical: a peer may choose {}",
                    i + 1,
                    methods
                        .iter()
                        .flatten()
                        .filter(|k| !k.is_post_quantum())
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if !self.requires_post_quantum() && out.is_empty() {
            out.push("a peer may negotiate without any post-quantum key exchange".into());
        }
        out
    }
}

impl IkeProposal {
    /// The SA payload proposal (protocol IKE) offering all algorithms.
    pub fn to_wire(&self, number: u8, spi: &[u8]) -> Proposal {
        let mut transforms: Vec<Transform> = self.encr.iter().map(|e| encr_transform(*e)).collect();
        transforms.extend(
            self.prf
                .iter()
                .map(|p| plain_transform(TransformType::PRF, p.transform_id())),
        );
        transforms.extend(
            self.integ
                .iter()
                .map(|i| plain_transform(TransformType::INTEG, i.transform_id())),
        );
        transforms.extend(self.ke.iter().map(|k| plain_transform(TransformType::KE, k.number())));
        transforms.extend(additional_transforms(&self.additional_ke));
        Proposal {
            number,
            protocol: ProtocolId::IKE,
            spi: spi.to_vec(),
            transforms,
        }
    }
}

impl EspProposal {
    /// The SA payload proposal (protocol ESP) offering all algorithms; the
    /// ESN transform is always present.
    pub fn to_wire(&self, number: u8, spi: u32) -> Proposal {
        let mut transforms: Vec<Transform> = self.encr.iter().map(|e| encr_transform(*e)).collect();
        transforms.extend(
            self.integ
                .iter()
                .map(|i| plain_transform(TransformType::INTEG, i.transform_id())),
        );
        transforms.extend(self.ke.iter().map(|k| plain_transform(TransformType::KE, k.number())));
        transforms.extend(additional_transforms(&self.additional_ke));
        let esn = if self.esn.is_empty() {
            vec![false]
        } else {
            self.esn.clone()
        };
        transforms.extend(esn.into_iter().map(|e| plain_transform(TransformType::ESN, esn_id(e))));
        Proposal {
            number,
            protocol: ProtocolId::ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }
    }

    /// The same proposal without PFS groups and additional key exchanges
    /// (CHILD_SAs created with IKE_AUTH have no KE payload, RFC 7296 §1.2,
    /// RFC 9370 §2.2.3).
    pub fn without_pfs(&self) -> EspProposal {
        EspProposal {
            ke: Vec::new(),
            additional_ke: Default::default(),
            ..self.clone()
        }
    }
}

fn join_names<T>(out: &mut Vec<String>, items: &[T], name: impl Fn(&T) -> String) {
    out.extend(items.iter().map(name));
}

impl fmt::Display for IkeProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        join_names(&mut parts, &self.encr, |e| e.name());
        join_names(&mut parts, &self.integ, |i| i.name().to_string());
        join_names(&mut parts, &self.prf, |p| p.name().to_string());
        join_names(&mut parts, &self.ke, |k| k.name().to_string());
        join_additional(&mut parts, &self.additional_ke);
        f.write_str(&parts.join("-"))
    }
}

fn join_additional(parts: &mut Vec<String>, additional: &[Vec<Option<KeGroup>>; MAX_ADDITIONAL_KE]) {
    for (i, methods) in additional.iter().enumerate() {
        join_names(parts, methods, |k| additional_ke_name(i, *k));
    }
}

impl fmt::Display for EspProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        join_names(&mut parts, &self.encr, |e| e.name());
        join_names(&mut parts, &self.integ, |i| i.name().to_string());
        join_names(&mut parts, &self.ke, |k| k.name().to_string());
        join_additional(&mut parts, &self.additional_ke);
        if self.esn != [false] {
            join_names(
                &mut parts,
                &self.esn,
                |e| {
                    if *e { "esn".into() } else { "noesn".into() }
                },
            );
        }
        f.write_str(&parts.join("-"))
    }
}

/// Our proposals as a log line shows what we offered:
/// `[aes128gcm16-prfsha256-x25519, aes256gcm16-prfsha256-x25519]`.
pub fn offered<P: fmt::Display>(ours: &[P]) -> String {
    let list: Vec<String> = ours.iter().map(ToString::to_string).collect();
    format!("[{}]", list.join(", "))
}

/// The negotiated IKE suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedIke {
    /// The algorithms.
    pub suite: IkeSuite,
    /// The RFC 9370 additional key exchanges to run in IKE_INTERMEDIATE, in
    /// order: (ADDKE number 1..=7, method). Types negotiated as NONE are left out.
    pub additional_ke: Vec<(u8, KeGroup)>,
    /// Single-transform-per-type proposal to echo, with the peer's number and SPI.
    pub proposal: Proposal,
}

/// The negotiated ESP suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedEsp {
    /// Encryption.
    pub encr: EncrAlg,
    /// Integrity (None with an AEAD).
    pub integ: Option<IntegAlg>,
    /// PFS group, if any.
    pub ke: Option<KeGroup>,
    /// The RFC 9370 additional key exchanges to run in IKE_FOLLOWUP_KE, in
    /// order: (ADDKE number 1..=7, method). Types negotiated as NONE are left out.
    pub additional_ke: Vec<(u8, KeGroup)>,
    /// Extended Sequence Numbers.
    pub esn: bool,
    /// The peer's SPI from its proposal.
    pub peer_spi: u32,
    /// Single-transform-per-type proposal to echo, with the peer's number and SPI.
    pub proposal: Proposal,
}

/// Mismatch: offered and accepted rendered in strongSwan syntax, plus which
/// transform types had no overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The peer's proposals.
    pub offered: Vec<String>,
    /// Our proposals.
    pub accepted: Vec<String>,
    /// Why nothing matched.
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no acceptable proposal: {}; peer offered [{}], we accept [{}]",
            self.reason,
            self.offered.join(", "),
            self.accepted.join(", ")
        )
    }
}

impl std::error::Error for Mismatch {}

/// What one peer proposal offers, per transform type, in the peer's order.
/// Transforms with unknown IDs or attributes are left out; `raw_*` keep the
/// IDs for messages and for the NONE checks.
#[derive(Default)]
struct Offer {
    encr: Vec<EncrAlg>,
    integ: Vec<IntegAlg>,
    prf: Vec<PrfAlg>,
    ke: Vec<KeGroup>,
    esn: Vec<bool>,
    /// KE transform IDs as sent (0 = NONE).
    ke_ids: Vec<u16>,
    /// ADDKE transform IDs as sent, per type (0 = NONE); unknown IDs kept
    /// so that an unknown method never reads as "not offered".
    addke_ids: [Vec<u16>; MAX_ADDITIONAL_KE],
    /// Transform types that make the proposal unacceptable (unknown types,
    /// additional key exchanges without NONE).
    blocking: Vec<String>,
}

fn offer_of(p: &Proposal) -> Offer {
    let mut o = Offer::default();
    for t in &p.transforms {
        if t.ty == TransformType::KE {
            o.ke_ids.push(t.id);
        }
        if t.has_unknown_attributes() {
            continue;
        }
        match t.ty {
            TransformType::ENCR => o.encr.extend(EncrAlg::from_transform(t.id, t.key_length())),
            TransformType::PRF => o.prf.extend(PrfAlg::from_transform(t.id)),
            TransformType::INTEG => o.integ.extend(IntegAlg::from_transform(t.id)),
            TransformType::KE => o.ke.extend(KeGroup::from_number(t.id)),
            TransformType::ESN => match t.id {
                0 => o.esn.push(false),
                1 => o.esn.push(true),
                _ => {}
            },
            TransformType(ty @ 6..=12) => o.addke_ids[usize::from(ty - 6)].push(t.id),
            other => o.blocking.push(format!("unknown transform type {}", other.0)),
        }
    }
    o
}

/// RFC 9370 §2.2.2 for one ADDKE type: our most preferred method the peer
/// offers. A type the peer leaves out counts as NONE. Returns None when
/// there is no agreement (we require the exchange and the peer does not
/// offer one of ours, or the peer requires one we do not do), else the
/// choice (`Some(None)` = NONE).
fn choose_additional(ours: &[Option<KeGroup>], peer_ids: &[u16]) -> Option<Option<KeGroup>> {
    let peer_offers = |k: Option<KeGroup>| match k {
        None => peer_ids.is_empty() || peer_ids.contains(&0),
        Some(g) => peer_ids.contains(&g.number()),
    };
    if ours.is_empty() {
        return peer_offers(None).then_some(None);
    }
    ours.iter().copied().find(|k| peer_offers(*k))
}

fn first_common<T: PartialEq + Copy>(ours: &[T], theirs: &[T]) -> Option<T> {
    ours.iter().copied().find(|a| theirs.contains(a))
}

fn encr_name(id: u16, key: Option<u16>) -> String {
    let bits = key.map(|k| k.to_string()).unwrap_or_default();
    match id {
        3 => "3des".into(),
        12 => format!("aes{bits}"),
        13 => format!("aes{bits}ctr"),
        14 => format!("aes{bits}ccm8"),
        15 => format!("aes{bits}ccm12"),
        16 => format!("aes{bits}ccm16"),
        18 => format!("aes{bits}gcm8"),
        19 => format!("aes{bits}gcm12"),
        20 => format!("aes{bits}gcm16"),
        28 => "chacha20poly1305".into(),
        _ => format!("ENCR_{id}"),
    }
}

fn transform_name(ty: TransformType, id: u16, key: Option<u16>) -> String {
    match ty {
        TransformType::ENCR => encr_name(id, key),
        TransformType::PRF => match (PrfAlg::from_transform(id), id) {
            (Some(p), _) => p.name().into(),
            (None, 1) => "prfmd5".into(),
            (None, 2) => "prfsha1".into(),
            (None, 4) => "prfaesxcbc".into(),
            _ => format!("PRF_{id}"),
        },
        TransformType::INTEG => match (IntegAlg::from_transform(id), id) {
            (Some(i), _) => i.name().into(),
            (None, 0) => "none".into(),
            (None, 1) => "md5".into(),
            (None, 2) => "sha1".into(),
            (None, 5) => "aesxcbc".into(),
            _ => format!("INTEG_{id}"),
        },
        TransformType::KE => match (KeGroup::from_number(id), id) {
            (Some(k), _) => k.name().into(),
            (None, 0) => "none".into(),
            (None, 1) => "modp768".into(),
            (None, 2) => "modp1024".into(),
            (None, 5) => "modp1536".into(),
            (None, 21) => "ecp521".into(),
            (None, 32) => "x448".into(),
            _ => format!("KE_{id}"),
        },
        TransformType::ESN => match id {
            0 => "noesn".into(),
            1 => "esn".into(),
            _ => format!("ESN_{id}"),
        },
        // Additional key exchanges use the KE registry (RFC 9370 §2.2).
        TransformType(n @ 6..=12) => format!("ke{}_{}", n - 5, transform_name(TransformType::KE, id, None)),
        TransformType(n) => format!("T{n}_{id}"),
    }
}

/// Renders a peer proposal in strongSwan syntax (unknown IDs as `TYPE_id`).
fn render_peer(p: &Proposal) -> String {
    let names: Vec<String> = p
        .transforms
        .iter()
        .map(|t| transform_name(t.ty, t.id, t.key_length()))
        .collect();
    let body = if names.is_empty() {
        "(no transforms)".to_string()
    } else {
        names.join("-")
    };
    if p.protocol == ProtocolId::IKE || p.protocol == ProtocolId::ESP {
        body
    } else {
        format!("{}:{body}", p.protocol)
    }
}

fn names_of_type(offered: &[&Proposal], ty: TransformType) -> Vec<String> {
    let mut v = Vec::new();
    for p in offered {
        for t in p.transforms.iter().filter(|t| t.ty == ty) {
            push_unique(&mut v, transform_name(t.ty, t.id, t.key_length()));
        }
    }
    v
}

/// A transform type on which our proposals and some peer offers do not overlap.
struct Gap {
    label: &'static str,
    ty: TransformType,
    ours: Vec<String>,
}

fn mismatch<P: fmt::Display>(offered: &[Proposal], ours: &[P], reason: String) -> Mismatch {
    Mismatch {
        offered: offered.iter().map(render_peer).collect(),
        accepted: ours.iter().map(ToString::to_string).collect(),
        reason,
    }
}

fn unique_names<T: Copy + PartialEq>(items: impl Iterator<Item = T>, name: impl Fn(T) -> String) -> Vec<String> {
    let mut v = Vec::new();
    for i in items {
        push_unique(&mut v, name(i));
    }
    v
}

/// True if any algorithm of `ours` appears in any of the offers' lists.
fn overlaps<T: PartialEq + Copy>(ours: impl Iterator<Item = T>, offers: &[&Offer], list: fn(&Offer) -> &[T]) -> bool {
    let ours: Vec<T> = ours.collect();
    offers.iter().any(|o| list(o).iter().any(|x| ours.contains(x)))
}

/// Explains why nothing matched: first the types without any overlap over
/// all peer proposals; if every type overlaps somewhere, what each peer
/// proposal lacks.
fn explain(usable: &[&Proposal], offers: &[Offer], gaps: impl Fn(&[&Offer]) -> Vec<Gap>) -> String {
    let all: Vec<&Offer> = offers.iter().collect();
    let mut parts: Vec<String> = gaps(&all)
        .into_iter()
        .map(|g| {
            let peer = names_of_type(usable, g.ty);
            let peer = if peer.is_empty() {
                "nothing".to_string()
            } else {
                peer.join(", ")
            };
            format!("no common {}: peer {peer}, we {}", g.label, g.ours.join(", "))
        })
        .collect();
    if parts.is_empty() {
        for (p, o) in usable.iter().zip(offers) {
            let labels: Vec<&str> = gaps(&[o]).iter().map(|g| g.label).collect();
            if !labels.is_empty() {
                parts.push(format!(
                    "peer proposal {} has no common {}",
                    p.number,
                    labels.join(", ")
                ));
            }
        }
    }
    for o in offers {
        for b in &o.blocking {
            push_unique(&mut parts, format!("peer proposal has {b}"));
        }
    }
    if parts.is_empty() {
        "no single proposal of ours matches a single proposal of the peer".to_string()
    } else {
        parts.join("; ")
    }
}

fn ike_spi_ok(spi: &[u8]) -> bool {
    spi.is_empty() || spi.len() == 8
}

fn index_of<T: PartialEq>(list: &[T], x: &T) -> usize {
    list.iter().position(|a| a == x).unwrap_or(usize::MAX)
}

/// Chooses every ADDKE type (RFC 9370 §2.2.2) of one of our proposals
/// against one peer offer: the exchanges to run and the choice's rank.
fn match_additional(
    ours: &[Vec<Option<KeGroup>>; MAX_ADDITIONAL_KE],
    o: &Offer,
) -> Option<(Vec<(u8, KeGroup)>, usize)> {
    let mut additional = Vec::new();
    let mut rank = 0;
    for (i, (mine, theirs)) in ours.iter().zip(&o.addke_ids).enumerate() {
        let choice = choose_additional(mine, theirs)?;
        rank += index_of(mine, &choice).min(MAX_ADDITIONAL_KE);
        if let Some(g) = choice {
            additional.push((u8::try_from(i + 1).unwrap_or(u8::MAX), g));
        }
    }
    Some((additional, rank))
}

/// Matches one of our IKE proposals against one peer offer; returns the
/// suite and its rank (our preference index per type, lower is better).
/// A matched IKE suite with its additional key exchanges (ADDKE number, method).
type IkeMatch = (IkeSuite, Vec<(u8, KeGroup)>);

fn match_ike(ours: &IkeProposal, o: &Offer) -> Option<(IkeMatch, [usize; 5])> {
    if !o.blocking.is_empty() {
        return None;
    }
    let encr = first_common(&ours.encr, &o.encr)?;
    let integ = if encr.is_aead() {
        None
    } else {
        Some(first_common(&ours.integ, &o.integ)?)
    };
    let prf = first_common(&ours.prf, &o.prf)?;
    let ke = first_common(&ours.ke, &o.ke)?;
    let (additional, addke_rank) = match_additional(&ours.additional_ke, o)?;
    let rank = [
        index_of(&ours.encr, &encr),
        integ.map_or(0, |i| index_of(&ours.integ, &i)),
        index_of(&ours.prf, &prf),
        index_of(&ours.ke, &ke),
        addke_rank,
    ];
    Some(((IkeSuite { encr, integ, prf, ke }, additional), rank))
}

fn ike_wire(suite: &IkeSuite, additional: &[(u8, KeGroup)], number: u8, spi: &[u8]) -> Proposal {
    let mut transforms = vec![
        encr_transform(suite.encr),
        plain_transform(TransformType::PRF, suite.prf.transform_id()),
    ];
    if let Some(i) = suite.integ {
        transforms.push(plain_transform(TransformType::INTEG, i.transform_id()));
    }
    transforms.push(plain_transform(TransformType::KE, suite.ke.number()));
    transforms.extend(
        additional
            .iter()
            .map(|(n, g)| plain_transform(TransformType(5 + n), g.number())),
    );
    Proposal {
        number,
        protocol: ProtocolId::IKE,
        spi: spi.to_vec(),
        transforms,
    }
}

/// Picks, for one of our proposals, the peer proposal giving our most
/// preferred algorithms (ties: the peer's earlier proposal).
fn best<'a, M, R: Ord>(
    usable: &[&'a Proposal],
    offers: &[Offer],
    matcher: impl Fn(&Offer) -> Option<(M, R)>,
) -> Option<(M, &'a Proposal)> {
    let mut found: Option<(M, R, &Proposal)> = None;
    for (p, o) in usable.iter().zip(offers) {
        if let Some((m, rank)) = matcher(o) {
            if found.as_ref().is_none_or(|(_, r, _)| rank < *r) {
                found = Some((m, rank, p));
            }
        }
    }
    found.map(|(m, _, p)| (m, p))
}

/// ENCR and INTEG gaps, shared by IKE and ESP. Integrity matters only if both
/// sides have a non-AEAD cipher.
fn cipher_gaps<E, I>(encr: impl Fn() -> E, integ: impl Fn() -> I, offers: &[&Offer]) -> Vec<Gap>
where
    E: Iterator<Item = EncrAlg>,
    I: Iterator<Item = IntegAlg>,
{
    let mut gaps = Vec::new();
    if !overlaps(encr(), offers, |o| &o.encr) {
        gaps.push(Gap {
            label: "ENCR",
            ty: TransformType::ENCR,
            ours: unique_names(encr(), EncrAlg::name),
        });
    }
    let peer_classic = offers.iter().any(|o| o.encr.iter().any(|e| !e.is_aead()));
    if encr().any(|e| !e.is_aead()) && peer_classic && !overlaps(integ(), offers, |o| &o.integ) {
        gaps.push(Gap {
            label: "INTEG",
            ty: TransformType::INTEG,
            ours: unique_names(integ(), |i| i.name().into()),
        });
    }
    gaps
}

fn ike_gaps(ours: &[IkeProposal], offers: &[&Offer]) -> Vec<Gap> {
    let prf = || ours.iter().flat_map(|p| p.prf.iter().copied());
    let ke = || ours.iter().flat_map(|p| p.ke.iter().copied());
    let mut gaps = cipher_gaps(
        || ours.iter().flat_map(|p| p.encr.iter().copied()),
        || ours.iter().flat_map(|p| p.integ.iter().copied()),
        offers,
    );
    if !overlaps(prf(), offers, |o| &o.prf) {
        gaps.push(Gap {
            label: "PRF",
            ty: TransformType::PRF,
            ours: unique_names(prf(), |p| p.name().into()),
        });
    }
    if !overlaps(ke(), offers, |o| &o.ke) {
        gaps.push(Gap {
            label: "KE",
            ty: TransformType::KE,
            ours: unique_names(ke(), |k| k.name().into()),
        });
    }
    additional_gaps(ours.iter().map(|p| &p.additional_ke), offers, &mut gaps);
    gaps
}

/// The ADDKE types on which none of our proposals agrees with any offer.
fn additional_gaps<'a>(
    ours: impl Iterator<Item = &'a [Vec<Option<KeGroup>>; MAX_ADDITIONAL_KE]> + Clone,
    offers: &[&Offer],
    gaps: &mut Vec<Gap>,
) {
    for (i, label) in ADDKE_LABELS.iter().enumerate() {
        let agree = ours.clone().any(|p| {
            offers
                .iter()
                .any(|o| choose_additional(&p[i], &o.addke_ids[i]).is_some())
        });
        if !agree {
            let mut names = Vec::new();
            for p in ours.clone() {
                for k in &p[i] {
                    push_unique(&mut names, additional_ke_name(i, *k));
                }
            }
            if names.is_empty() {
                names.push(additional_ke_name(i, None));
            }
            gaps.push(Gap {
                label,
                ty: addke_type(i),
                ours: names,
            });
        }
    }
}

const ADDKE_LABELS: [&str; MAX_ADDITIONAL_KE] = [
    "additional key exchange 1 (ADDKE1)",
    "additional key exchange 2 (ADDKE2)",
    "additional key exchange 3 (ADDKE3)",
    "additional key exchange 4 (ADDKE4)",
    "additional key exchange 5 (ADDKE5)",
    "additional key exchange 6 (ADDKE6)",
    "additional key exchange 7 (ADDKE7)",
];

/// Responder side: picks the IKE suite from the peer's SA payload proposals.
///
/// Our proposals are tried in our order; for each, every peer proposal is
/// matched by taking our most preferred algorithm of each type that it
/// contains, and the peer proposal that gives our most preferred result wins.
pub fn select_ike(ours: &[IkeProposal], offered: &[Proposal]) -> Result<SelectedIke, Mismatch> {
    let usable: Vec<&Proposal> = offered
        .iter()
        .filter(|p| p.protocol == ProtocolId::IKE && ike_spi_ok(&p.spi))
        .collect();
    let offers: Vec<Offer> = usable.iter().map(|p| offer_of(p)).collect();
    for our in ours {
        if let Some(((suite, additional_ke), p)) = best(&usable, &offers, |o| match_ike(our, o)) {
            return Ok(SelectedIke {
                proposal: ike_wire(&suite, &additional_ke, p.number, &p.spi),
                suite,
                additional_ke,
            });
        }
    }
    let reason = if usable.is_empty() {
        "peer offered no IKE proposal (protocol IKE, SPI of 0 or 8 bytes)".to_string()
    } else {
        explain(&usable, &offers, |o| ike_gaps(ours, o))
    };
    Err(mismatch(offered, ours, reason))
}

/// The algorithms of a matched ESP proposal.
struct EspMatch {
    encr: EncrAlg,
    integ: Option<IntegAlg>,
    ke: Option<KeGroup>,
    additional: Vec<(u8, KeGroup)>,
    esn: bool,
}

/// Matches one of our ESP proposals against one peer offer, with its rank.
fn match_esp(ours: &EspProposal, o: &Offer) -> Option<(EspMatch, [usize; 5])> {
    if !o.blocking.is_empty() {
        return None;
    }
    let encr = first_common(&ours.encr, &o.encr)?;
    let integ = if encr.is_aead() {
        None
    } else {
        Some(first_common(&ours.integ, &o.integ)?)
    };
    let ke = if ours.ke.is_empty() {
        // No PFS: fine if the peer offers no KE, or offers NONE among others.
        if !o.ke_ids.is_empty() && !o.ke_ids.contains(&0) {
            return None;
        }
        None
    } else {
        Some(first_common(&ours.ke, &o.ke)?)
    };
    let esn = first_common(&ours.esn, &o.esn)?;
    // Without PFS there is no key exchange to add to (the parser refuses
    // ADDKEs without a PFS group): only NONE is acceptable then.
    let none = Default::default();
    let mine = if ke.is_some() { &ours.additional_ke } else { &none };
    let (additional, addke_rank) = match_additional(mine, o)?;
    let rank = [
        index_of(&ours.encr, &encr),
        integ.map_or(0, |i| index_of(&ours.integ, &i)),
        ke.map_or(0, |k| index_of(&ours.ke, &k)),
        addke_rank,
        index_of(&ours.esn, &esn),
    ];
    Some((
        EspMatch {
            encr,
            integ,
            ke,
            additional,
            esn,
        },
        rank,
    ))
}

fn esp_wire(m: &EspMatch, number: u8, spi: &[u8]) -> Proposal {
    let mut transforms = vec![encr_transform(m.encr)];
    if let Some(i) = m.integ {
        transforms.push(plain_transform(TransformType::INTEG, i.transform_id()));
    }
    if let Some(k) = m.ke {
        transforms.push(plain_transform(TransformType::KE, k.number()));
    }
    transforms.extend(
        m.additional
            .iter()
            .map(|(n, g)| plain_transform(TransformType(5 + n), g.number())),
    );
    transforms.push(plain_transform(TransformType::ESN, esn_id(m.esn)));
    Proposal {
        number,
        protocol: ProtocolId::ESP,
        spi: spi.to_vec(),
        transforms,
    }
}

fn esp_spi(spi: &[u8]) -> Option<u32> {
    let b: [u8; 4] = spi.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

fn esp_gaps(ours: &[EspProposal], offers: &[&Offer]) -> Vec<Gap> {
    let ke = || ours.iter().flat_map(|p| p.ke.iter().copied());
    let esn = || ours.iter().flat_map(|p| p.esn.iter().copied());
    let mut gaps = cipher_gaps(
        || ours.iter().flat_map(|p| p.encr.iter().copied()),
        || ours.iter().flat_map(|p| p.integ.iter().copied()),
        offers,
    );
    let no_pfs = ours.iter().any(|p| p.ke.is_empty());
    let ke_ok = overlaps(ke(), offers, |o| &o.ke)
        || (no_pfs && offers.iter().any(|o| o.ke_ids.is_empty() || o.ke_ids.contains(&0)));
    if !ke_ok {
        let mut names = unique_names(ke(), |k| k.name().into());
        if no_pfs {
            names.push("none".into());
        }
        gaps.push(Gap {
            label: "KE",
            ty: TransformType::KE,
            ours: names,
        });
    }
    if !overlaps(esn(), offers, |o| &o.esn) {
        let names = unique_names(esn(), |e| if e { "esn".into() } else { "noesn".into() });
        gaps.push(Gap {
            label: "ESN",
            ty: TransformType::ESN,
            ours: names,
        });
    }
    additional_gaps(ours.iter().map(|p| &p.additional_ke), offers, &mut gaps);
    gaps
}

/// Responder side: picks the ESP suite from the peer's SA payload proposals,
/// with the same preference rules as [`select_ike`].
pub fn select_esp(ours: &[EspProposal], offered: &[Proposal]) -> Result<SelectedEsp, Mismatch> {
    let usable: Vec<&Proposal> = offered
        .iter()
        .filter(|p| p.protocol == ProtocolId::ESP && esp_spi(&p.spi).is_some())
        .collect();
    let offers: Vec<Offer> = usable.iter().map(|p| offer_of(p)).collect();
    for our in ours {
        if let Some((m, p)) = best(&usable, &offers, |o| match_esp(our, o)) {
            let peer_spi = esp_spi(&p.spi).unwrap_or_default();
            let proposal = esp_wire(&m, p.number, &p.spi);
            return Ok(SelectedEsp {
                encr: m.encr,
                integ: m.integ,
                ke: m.ke,
                additional_ke: m.additional,
                esn: m.esn,
                peer_spi,
                proposal,
            });
        }
    }
    let reason = if usable.is_empty() {
        "peer offered no ESP proposal (protocol ESP, 4-byte SPI)".to_string()
    } else {
        explain(&usable, &offers, |o| esp_gaps(ours, o))
    };
    Err(mismatch(offered, ours, reason))
}

/// Checks that a responder's proposal holds exactly one transform of each
/// type it uses, with known IDs and no unknown attributes.
fn check_single(chosen: &Proposal) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for t in &chosen.transforms {
        if !seen.insert(t.ty) {
            return Err(format!("responder chose more than one {} transform", t.ty));
        }
        if t.has_unknown_attributes() {
            return Err(format!("responder's {} transform has unknown attributes", t.ty));
        }
    }
    Ok(())
}

/// True if a transform of a responder's proposal names an algorithm we know
/// (INTEG NONE is tolerated; KE NONE only for ESP).
fn recognized(t: &Transform, esp: bool) -> bool {
    match t.ty {
        TransformType::ENCR => EncrAlg::from_transform(t.id, t.key_length()).is_some(),
        TransformType::PRF => !esp && PrfAlg::from_transform(t.id).is_some(),
        TransformType::INTEG => t.id == 0 || IntegAlg::from_transform(t.id).is_some(),
        TransformType::KE => (esp && t.id == 0) || KeGroup::from_number(t.id).is_some(),
        TransformType::ESN => esp && t.id <= 1,
        TransformType(6..=12) => t.id == 0 || KeGroup::from_number(t.id).is_some(),
        _ => false,
    }
}

/// Initiator side: check that the responder's single chosen proposal is one we offered.
pub fn accept_ike_response(ours: &[IkeProposal], chosen: &Proposal) -> Result<SelectedIke, Mismatch> {
    let fail = |reason: String| Err(mismatch(std::slice::from_ref(chosen), ours, reason));
    if chosen.protocol != ProtocolId::IKE || !ike_spi_ok(&chosen.spi) {
        return fail(format!(
            "responder chose protocol {} with a {}-byte SPI",
            chosen.protocol,
            chosen.spi.len()
        ));
    }
    if let Err(e) = check_single(chosen) {
        return fail(e);
    }
    let o = offer_of(chosen);
    if o.encr.len() != 1
        || o.prf.len() != 1
        || o.ke.len() != 1
        || chosen.transforms.iter().any(|t| !recognized(t, false))
    {
        return fail(
            "responder's proposal does not hold exactly one known ENCR, PRF and KE (and INTEG unless AEAD)".into(),
        );
    }
    let our = match offered_as(ours, chosen.number) {
        Ok(p) => p,
        Err(why) => return fail(why),
    };
    let integ = o.integ.first().copied();
    let integ_ok = match (o.encr[0].is_aead(), integ) {
        (true, None) => true,
        (false, Some(i)) => our.integ.contains(&i),
        _ => false,
    };
    if our.encr.contains(&o.encr[0]) && integ_ok && our.prf.contains(&o.prf[0]) && our.ke.contains(&o.ke[0]) {
        let additional_ke = match accept_additional(&our.additional_ke, &o, chosen.number, our) {
            Ok(a) => a,
            Err(why) => return fail(why),
        };
        let suite = IkeSuite {
            encr: o.encr[0],
            integ,
            prf: o.prf[0],
            ke: o.ke[0],
        };
        return Ok(SelectedIke {
            suite,
            additional_ke,
            proposal: chosen.clone(),
        });
    }
    fail(not_in_proposal(chosen.number, our))
}

/// Initiator side: the ADDKE methods the responder chose in its proposal
/// `number`, each one our proposal `our` lists; a required exchange it
/// dropped is named.
fn accept_additional<P: fmt::Display>(
    mine: &[Vec<Option<KeGroup>>; MAX_ADDITIONAL_KE],
    o: &Offer,
    number: u8,
    our: &P,
) -> Result<Vec<(u8, KeGroup)>, String> {
    let mut additional_ke = Vec::new();
    for (i, (mine, theirs)) in mine.iter().zip(&o.addke_ids).enumerate() {
        let chosen_method = match theirs.first().copied() {
            None | Some(0) => None,
            Some(id) => KeGroup::from_number(id),
        };
        let acceptable = mine.contains(&chosen_method) || (mine.is_empty() && chosen_method.is_none());
        if !acceptable {
            return Err(if chosen_method.is_none() {
                format!(
                    "responder dropped additional key exchange {} that our proposal {number} ({our}) requires",
                    i + 1,
                )
            } else {
                not_in_proposal(number, our)
            });
        }
        if let Some(g) = chosen_method {
            additional_ke.push((u8::try_from(i + 1).unwrap_or(u8::MAX), g));
        }
    }
    Ok(additional_ke)
}

/// Our proposal that carried `number` in our offer (numbered from 1 in our
/// order): a responder answers with the number of the proposal it chose
/// (RFC 7296 §3.3.1).
fn offered_as<P>(ours: &[P], number: u8) -> Result<&P, String> {
    usize::from(number)
        .checked_sub(1)
        .and_then(|i| ours.get(i))
        .ok_or_else(|| {
            format!(
                "responder chose proposal {number}, we offered proposals 1 to {}",
                ours.len()
            )
        })
}

fn not_in_proposal<P: fmt::Display>(number: u8, ours: &P) -> String {
    format!("responder chose algorithms that our proposal {number} ({ours}) does not contain")
}

/// Initiator side: check that the responder's chosen ESP proposal is one we offered.
pub fn accept_esp_response(ours: &[EspProposal], chosen: &Proposal) -> Result<SelectedEsp, Mismatch> {
    let fail = |reason: String| Err(mismatch(std::slice::from_ref(chosen), ours, reason));
    let Some(peer_spi) = esp_spi(&chosen.spi).filter(|_| chosen.protocol == ProtocolId::ESP) else {
        return fail(format!(
            "responder chose protocol {} with a {}-byte SPI",
            chosen.protocol,
            chosen.spi.len()
        ));
    };
    if let Err(e) = check_single(chosen) {
        return fail(e);
    }
    let o = offer_of(chosen);
    if o.encr.len() != 1 || o.esn.len() != 1 || chosen.transforms.iter().any(|t| !recognized(t, true)) {
        return fail("responder's proposal does not hold exactly one known ENCR and ESN transform".into());
    }
    let (encr, integ, ke, esn) = (o.encr[0], o.integ.first().copied(), o.ke.first().copied(), o.esn[0]);
    let our = match offered_as(ours, chosen.number) {
        Ok(p) => p,
        Err(why) => return fail(why),
    };
    let integ_ok = match (encr.is_aead(), integ) {
        (true, None) => true,
        (false, Some(i)) => our.integ.contains(&i),
        _ => false,
    };
    let ke_ok = match ke {
        Some(k) => our.ke.contains(&k),
        None => our.ke.is_empty(),
    };
    if our.encr.contains(&encr) && our.esn.contains(&esn) && integ_ok && ke_ok {
        let additional_ke = match accept_additional(&our.additional_ke, &o, chosen.number, our) {
            Ok(a) => a,
            Err(why) => return fail(why),
        };
        if ke.is_none() && !additional_ke.is_empty() {
            return fail("responder chose additional key exchanges without a PFS key exchange".into());
        }
        return Ok(SelectedEsp {
            encr,
            integ,
            ke,
            additional_ke,
            esn,
            peer_spi,
            proposal: chosen.clone(),
        });
    }
    fail(not_in_proposal(chosen.number, our))
}

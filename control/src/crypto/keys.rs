//! SKEYSEED, the IKE SA keys and CHILD_SA keying material (RFC 7296 §2.14, §2.17, §2.18).

use super::{EncrAlg, IntegAlg, KeGroup, PrfAlg};
use zeroize::Zeroizing;

/// The algorithms of an IKE SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeSuite {
    /// Encryption.
    pub encr: EncrAlg,
    /// Integrity (None with an AEAD).
    pub integ: Option<IntegAlg>,
    /// PRF.
    pub prf: PrfAlg,
    /// Key exchange group.
    pub ke: KeGroup,
}

/// The seven keys of an IKE SA, zeroized on drop.
pub struct IkeSaKeys {
    /// SK_d: derives CHILD_SA keys and rekeyed IKE SA keys.
    pub sk_d: Zeroizing<Vec<u8>>,
    /// SK_ai: integrity, initiator to responder.
    pub sk_ai: Zeroizing<Vec<u8>>,
    /// SK_ar: integrity, responder to initiator.
    pub sk_ar: Zeroizing<Vec<u8>>,
    /// SK_ei: encryption (with salt for AEADs), initiator to responder.
    pub sk_ei: Zeroizing<Vec<u8>>,
    /// SK_er: encryption (with salt for AEADs), responder to initiator.
    pub sk_er: Zeroizing<Vec<u8>>,
    /// SK_pi: for the initiator's AUTH.
    pub sk_pi: Zeroizing<Vec<u8>>,
    /// SK_pr: for the responder's AUTH.
    pub sk_pr: Zeroizing<Vec<u8>>,
}

/// CHILD_SA keying material, zeroized on drop. "i" keys protect traffic from
/// the initiator of the exchange to the responder.
pub struct ChildSaKeys {
    /// Encryption key (+ salt for AEADs), initiator to responder.
    pub encr_i: Zeroizing<Vec<u8>>,
    /// Integrity key (empty with an AEAD), initiator to responder.
    pub integ_i: Zeroizing<Vec<u8>>,
    /// Encryption key (+ salt), responder to initiator.
    pub encr_r: Zeroizing<Vec<u8>>,
    /// Integrity key (empty with an AEAD), responder to initiator.
    pub integ_r: Zeroizing<Vec<u8>>,
}

/// SKEYSEED = prf(Ni | Nr, g^ir), then {SK_d, SK_ai, ...} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
pub fn derive_ike_sa_keys(suite: &IkeSuite, shared: &[u8], ni: &[u8], nr: &[u8], spi_i: u64, spi_r: u64) -> IkeSaKeys {
    todo!("crypto helper")
}

/// IKE SA rekey (§2.18): SKEYSEED = prf(SK_d(old), g^ir(new) | Ni | Nr) with the
/// old SA's PRF, then prf+ with the new suite's PRF.
pub fn derive_rekeyed_ike_sa_keys(
    suite: &IkeSuite,
    old_prf: PrfAlg,
    old_sk_d: &[u8],
    shared: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeSaKeys {
    todo!("crypto helper")
}

/// KEYMAT = prf+(SK_d, [g^ir(new) |] Ni | Nr), split as encr_i, integ_i, encr_r, integ_r (§2.17).
pub fn derive_child_sa_keys(
    prf: PrfAlg,
    sk_d: &[u8],
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    encr: EncrAlg,
    integ: Option<IntegAlg>,
) -> ChildSaKeys {
    todo!("crypto helper")
}

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

impl IkeSuite {
    /// Total bytes of prf+ output for the seven IKE SA keys.
    fn keymat_len(&self) -> usize {
        let p = self.prf.output_len();
        let a = self.integ.map_or(0, IntegAlg::key_len);
        let e = self.encr.keymat_len();
        3 * p + 2 * a + 2 * e
    }
}

/// Splits prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) into the seven keys.
fn ike_sa_keys_from_skeyseed(
    suite: &IkeSuite,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeSaKeys {
    let p = suite.prf.output_len();
    let a = suite.integ.map_or(0, IntegAlg::key_len);
    let e = suite.encr.keymat_len();
    let keymat = suite.prf.prf_plus(
        skeyseed,
        &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
        suite.keymat_len(),
    );
    let mut rest: &[u8] = &keymat;
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Zeroizing::new(head.to_vec())
    };
    IkeSaKeys {
        sk_d: take(p),
        sk_ai: take(a),
        sk_ar: take(a),
        sk_ei: take(e),
        sk_er: take(e),
        sk_pi: take(p),
        sk_pr: take(p),
    }
}

/// SKEYSEED = prf(Ni | Nr, g^ir), then {SK_d, SK_ai, ...} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
pub fn derive_ike_sa_keys(suite: &IkeSuite, shared: &[u8], ni: &[u8], nr: &[u8], spi_i: u64, spi_r: u64) -> IkeSaKeys {
    let mut nonces = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
    nonces.extend_from_slice(ni);
    nonces.extend_from_slice(nr);
    let skeyseed = suite.prf.prf(&nonces, &[shared]);
    ike_sa_keys_from_skeyseed(suite, &skeyseed, ni, nr, spi_i, spi_r)
}

/// IKE SA rekey (§2.18): SKEYSEED = prf(SK_d(old), g^ir(new) | Ni | Nr) with the
/// old SA's PRF, then prf+ with the new suite's PRF.
#[allow(clippy::too_many_arguments)]
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
    derive_rekeyed_ike_sa_keys_multi(suite, old_prf, old_sk_d, &[shared], ni, nr, spi_i, spi_r)
}

/// IKE SA rekey with RFC 9370 additional key exchanges (§2.2.4): SKEYSEED =
/// prf(SK_d(old), SK(0) | Ni | Nr | SK(1) | ... | SK(n)), where SK(0) is the
/// CREATE_CHILD_SA exchange's shared secret and SK(1..n) those of the
/// IKE_FOLLOWUP_KE exchanges; `shared` holds them in that order.
#[allow(clippy::too_many_arguments)]
pub fn derive_rekeyed_ike_sa_keys_multi(
    suite: &IkeSuite,
    old_prf: PrfAlg,
    old_sk_d: &[u8],
    shared: &[&[u8]],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeSaKeys {
    let (first, rest) = shared.split_first().map_or((&[][..], &[][..]), |(f, r)| (*f, r));
    let mut data: Vec<&[u8]> = Vec::with_capacity(shared.len() + 2);
    data.extend([first, ni, nr]);
    data.extend_from_slice(rest);
    let skeyseed = old_prf.prf(old_sk_d, &data);
    ike_sa_keys_from_skeyseed(suite, &skeyseed, ni, nr, spi_i, spi_r)
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
    derive_child_sa_keys_multi(prf, sk_d, shared.as_slice(), ni, nr, encr, integ)
}

/// KEYMAT = prf+(SK_d, [SK(0) |] Ni | Nr [| SK(1) | ... | SK(n)]) with the
/// secrets of every key exchange (RFC 9370 §2.2.4), split as in
/// [`derive_child_sa_keys`].
pub fn derive_child_sa_keys_multi(
    prf: PrfAlg,
    sk_d: &[u8],
    shared: &[&[u8]],
    ni: &[u8],
    nr: &[u8],
    encr: EncrAlg,
    integ: Option<IntegAlg>,
) -> ChildSaKeys {
    let e = encr.keymat_len();
    let a = integ.map_or(0, IntegAlg::key_len);
    let (first, rest) = shared.split_first().map_or((&[][..], &[][..]), |(f, r)| (*f, r));
    let mut seed: Vec<&[u8]> = Vec::with_capacity(shared.len() + 2);
    seed.extend([first, ni, nr]);
    seed.extend_from_slice(rest);
    let keymat = prf.prf_plus(sk_d, &seed, 2 * (e + a));
    let mut rest: &[u8] = &keymat;
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Zeroizing::new(head.to_vec())
    };
    ChildSaKeys {
        encr_i: take(e),
        integ_i: take(a),
        encr_r: take(e),
        integ_r: take(a),
    }
}

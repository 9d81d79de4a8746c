//! Postquantum preshared keys (RFC 8784): after IKE_SA_INIT (and any
//! IKE_INTERMEDIATE), SK_d, SK_pi and SK_pr are replaced by prf+(PPK, key),
//! so the IKE SA, its AUTH payloads and every key derived from SK_d depend
//! on a secret that no key exchange reveals. Both sides announce support
//! with USE_PPK; the initiator names its key with PPK_IDENTITY and, when the
//! key is optional, adds the AUTH value computed without it (NO_PPK_AUTH) so
//! that a responder without the key can still authenticate it.

use zeroize::Zeroizing;

use super::{IkeSa, notify};
use crate::config::{ConnectionConfig, PpkConfig};
use crate::wire::ikev2::{Notify, NotifyType, Payload};

/// PPK_ID type of an identity both peers know by configuration (RFC 8784 §3).
const PPK_ID_FIXED: u8 = 2;
/// PPK_ID type of an opaque identity.
const PPK_ID_OPAQUE: u8 = 1;

/// Our PPK_IDENTITY notify for `ppk`.
pub(crate) fn identity_notify(ppk: &PpkConfig) -> Payload {
    let mut data = Vec::with_capacity(1 + ppk.id.len());
    data.push(PPK_ID_FIXED);
    data.extend_from_slice(&ppk.id);
    notify(NotifyType::PPK_IDENTITY, data)
}

/// The PPK_ID a PPK_IDENTITY notify carries (None for an unknown type).
fn identity_of(n: &Notify) -> Option<&[u8]> {
    match n.data.split_first() {
        Some((&(PPK_ID_FIXED | PPK_ID_OPAQUE), id)) if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// SK_d and SK_pr as they were before the PPK was mixed in: an initiator
/// whose optional PPK the responder does not have goes on with them.
pub(crate) struct PlainKeys {
    sk_d: Zeroizing<Box<[u8]>>,
    sk_pr: Zeroizing<Vec<u8>>,
}

/// Mixes `ppk` into SK_d, SK_pi and SK_pr (RFC 8784 §3: each becomes
/// prf+(PPK, key), of the key's length); returns the keys it replaced.
pub(crate) fn mix(sa: &mut IkeSa, ppk: &PpkConfig) -> Option<Box<PlainKeys>> {
    let keys = sa.keys.as_mut()?;
    let prf = keys.suite.prf;
    let mixed = |k: &[u8]| prf.prf_plus(&ppk.key, &[k], k.len());
    let sk_d = Zeroizing::new(Box::<[u8]>::from(&mixed(&keys.sk_d)[..]));
    let old_d = std::mem::replace(&mut keys.sk_d, sk_d);
    let auth = keys.auth.as_mut()?;
    auth.sk_pi = mixed(&auth.sk_pi);
    let sk_pr = mixed(&auth.sk_pr);
    let old_pr = std::mem::replace(&mut auth.sk_pr, sk_pr);
    Some(Box::new(PlainKeys {
        sk_d: old_d,
        sk_pr: old_pr,
    }))
}

/// Puts back the keys [`mix`] replaced (SK_pi is no longer needed).
pub(crate) fn restore(sa: &mut IkeSa, plain: PlainKeys) {
    let Some(keys) = sa.keys.as_mut() else { return };
    let PlainKeys { sk_d, sk_pr } = plain;
    keys.sk_d = sk_d;
    if let Some(auth) = keys.auth.as_mut() {
        auth.sk_pr = sk_pr;
    }
}

/// Initiator: the PPK to use with a peer that did (or did not) send
/// USE_PPK; an error when the connection requires one the peer cannot use.
pub(crate) fn initiator_choice(cfg: &ConnectionConfig, peer_use_ppk: bool) -> Result<Option<&PpkConfig>, String> {
    match &cfg.ppk {
        Some(p) if peer_use_ppk => Ok(Some(p)),
        Some(p) if p.required => Err(format!(
            "PPK '{}' is required but the peer did not send USE_PPK",
            String::from_utf8_lossy(&p.id)
        )),
        _ => Ok(None),
    }
}

/// Responder: how the initiator's AUTH is to be checked.
pub(crate) enum ResponderChoice<'a> {
    /// No PPK on either side.
    None,
    /// With this PPK mixed in.
    Use(&'a PpkConfig),
    /// Without a PPK, against the NO_PPK_AUTH value.
    NoPpkAuth(&'a [u8]),
}

/// Responder: what the IKE_AUTH request `inner` and the connection `cfg`
/// make of PPK, or why the initiator is refused.
pub(crate) fn responder_choice<'a>(
    cfg: &'a ConnectionConfig,
    peer_use_ppk: bool,
    inner: &'a [Payload],
) -> Result<ResponderChoice<'a>, String> {
    let ppk_id = peer_use_ppk
        .then(|| super::find_notify(inner, NotifyType::PPK_IDENTITY))
        .flatten()
        .and_then(identity_of);
    let no_ppk_auth = super::find_notify(inner, NotifyType::NO_PPK_AUTH).map(|n| n.data.as_slice());
    match (&cfg.ppk, ppk_id) {
        (Some(p), Some(id)) if p.id == id => Ok(ResponderChoice::Use(p)),
        (Some(p), id) if p.required => Err(match id {
            Some(id) => format!(
                "PPK '{}' is required, the initiator used PPK_ID '{}'",
                String::from_utf8_lossy(&p.id),
                String::from_utf8_lossy(id)
            ),
            None => format!(
                "PPK '{}' is required, the initiator used none",
                String::from_utf8_lossy(&p.id)
            ),
        }),
        (_, Some(id)) => match no_ppk_auth {
            Some(auth) => Ok(ResponderChoice::NoPpkAuth(auth)),
            None => Err(format!(
                "the initiator requires PPK_ID '{}', which this connection does not have",
                String::from_utf8_lossy(id)
            )),
        },
        (_, None) => Ok(ResponderChoice::None),
    }
}

//! Steps the exchanges that set an IKE SA up share: IKE_SA_INIT, IKE_AUTH,
//! IKE_INTERMEDIATE and CREATE_CHILD_SA each call these, and none of those
//! modules calls another for them.

use zeroize::Zeroizing;

use super::{AuthKeys, IkeSa, Role, SaKeys, State};
use crate::Error;
use crate::crypto::{self, CryptoError, CryptoProvider, SkCipher};
use crate::wire::ikev2::{self, NotifyType, Payload};

/// Nonce length we send (RFC 7296 §2.10: at least half the PRF key size, at least 16).
pub const NONCE_LEN: usize = 32;

/// A fresh nonce; a failing random source fails the exchange.
pub(crate) fn random_nonce(random: &dyn CryptoProvider) -> Result<Vec<u8>, CryptoError> {
    let mut n = vec![0u8; NONCE_LEN];
    random.fill_random(&mut n)?;
    Ok(n)
}

/// Builds the SK ciphers from fresh IKE SA keys for our role.
pub(crate) fn install_keys(sa: &mut IkeSa, suite: crypto::IkeSuite, keys: crypto::IkeSaKeys) -> Result<(), Error> {
    if let Some(log) = &sa.ctx.key_log {
        log.ike_sa_keys((sa.spi_i, sa.spi_r), &suite, &keys);
    }
    let (out_e, out_a, in_e, in_a) = match sa.role {
        Role::Initiator => (&keys.sk_ei, &keys.sk_ai, &keys.sk_er, &keys.sk_ar),
        Role::Responder => (&keys.sk_er, &keys.sk_ar, &keys.sk_ei, &keys.sk_ai),
    };
    let outbound = SkCipher::new(suite.encr, suite.integ, out_e, out_a, &sa.ctx.crypto)?;
    let inbound = SkCipher::new(suite.encr, suite.integ, in_e, in_a, &sa.ctx.crypto)?;
    // SK_pi/SK_pr only serve IKE_AUTH: a rekeyed IKE SA (born established) does not keep them.
    let crypto::IkeSaKeys { sk_pi, sk_pr, sk_d, .. } = keys;
    let auth = (!matches!(sa.state, State::Established(_))).then(|| Box::new(AuthKeys { sk_pi, sk_pr }));
    sa.keys = Some(SaKeys {
        suite,
        sk_d: Zeroizing::new(sk_d.as_slice().into()),
        auth,
        outbound,
        inbound,
        additional_ke: Default::default(),
    });
    Ok(())
}

/// Records the peer's SIGNATURE_HASH_ALGORITHMS and CERTREQ.
pub(crate) fn note_auth_hints(sa: &mut IkeSa, payloads: &[Payload]) {
    for p in payloads {
        match p {
            Payload::Notify(n) if n.ty == NotifyType::SIGNATURE_HASH_ALGORITHMS => {
                sa.scratch().peer_sig_hashes = n
                    .data
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
            }
            Payload::CertReq { encoding, data } if *encoding == ikev2::CertEncoding::X509_SIGNATURE => {
                sa.scratch().peer_certreq.extend_from_slice(data);
            }
            _ => {}
        }
    }
}

//! Trust anchors and certificate path validation.

use super::PkiError;
use super::cert::Certificate;

/// Maximum number of CA certificates (intermediates plus trust anchor) above an end entity.
pub const MAX_PATH_DEPTH: usize = 8;

/// The trusted CA certificates.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    cas: Vec<Certificate>,
}

impl TrustStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a trust anchor. It must be a CA (basicConstraints cA) so that an
    /// end-entity certificate is never configured as a CA by mistake.
    pub fn add(&mut self, ca: Certificate) -> Result<(), PkiError> {
        if !ca.is_ca() {
            return Err(PkiError::NotCa {
                subject: ca.subject().to_string(),
                issued: "(trust store)".into(),
            });
        }
        if !self.cas.iter().any(|c| c.der() == ca.der()) {
            self.cas.push(ca);
        }
        Ok(())
    }

    /// Parses PEM or DER data and adds every certificate in it.
    pub fn add_pem_or_der(&mut self, data: &[u8]) -> Result<usize, PkiError> {
        let certs = Certificate::load(data)?;
        let n = certs.len();
        for c in certs {
            self.add(c)?;
        }
        Ok(n)
    }

    /// The trust anchors.
    pub fn certificates(&self) -> &[Certificate] {
        &self.cas
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// Validates `end_entity` against this store; see [`verify_chain`].
    pub fn verify_chain(
        &self,
        end_entity: &Certificate,
        intermediates: &[Certificate],
        now_unix: u64,
    ) -> Result<(), PkiError> {
        verify_chain(self, end_entity, intermediates, now_unix)
    }
}

/// The end-entity certificate a peer authenticates with, checked: the
/// first of `certs` (DER, the rest intermediates) must hold the identity
/// `id` and chain to a CA of `store` at `now_unix`. The error says which
/// check failed, for the log.
pub fn trusted_peer_certificate(
    store: &TrustStore,
    id: &crate::wire::ikev2::Identification,
    certs: &[&[u8]],
    now_unix: u64,
) -> Result<Certificate, String> {
    let Some(ee) = certs.first() else {
        return Err("peer sent no certificate".into());
    };
    let ee = Certificate::from_der(ee).map_err(|e| format!("peer certificate: {e}"))?;
    let intermediates: Vec<Certificate> = certs[1..]
        .iter()
        .filter_map(|c| Certificate::from_der(c).ok())
        .collect();
    if !ee.matches_identity(id) {
        return Err(format!(
            "identity {} is not in the certificate of '{}'",
            crate::config::display_identity(id),
            ee.subject()
        ));
    }
    verify_chain(store, &ee, &intermediates, now_unix).map_err(|e| format!("certificate not trusted: {e}"))?;
    Ok(ee)
}

/// Checks that `ca` may have issued `issued`, which sits `below` CA
/// certificates under it (0 when `issued` is the end entity).
fn check_issuer(ca: &Certificate, issued: &Certificate, below: usize, now_unix: u64) -> Result<(), PkiError> {
    issued.verify_signed_by(ca)?;
    ca.check_validity(now_unix)?;
    if !ca.is_ca() {
        return Err(PkiError::NotCa {
            subject: ca.subject().to_string(),
            issued: issued.subject().to_string(),
        });
    }
    if !ca.may_sign_certificates() {
        return Err(PkiError::KeyUsage {
            subject: ca.subject().to_string(),
        });
    }
    if let Some(path_len) = ca.path_len()
        && below > path_len as usize
    {
        return Err(PkiError::PathLenExceeded {
            subject: ca.subject().to_string(),
            path_len,
        });
    }
    if let Some(oid) = ca.unhandled_critical_extensions().first() {
        return Err(PkiError::UnsupportedCriticalExtension {
            subject: ca.subject().to_string(),
            oid: oid.clone(),
        });
    }
    Ok(())
}

/// Builds and validates a path from `end_entity` through `intermediates`
/// to a trust anchor in `store`: issuer/subject names must match, each
/// signature must verify with the issuer's key, every certificate must be
/// valid at `now_unix`, issuers must be CAs allowed to sign certificates
/// (keyUsage) within their pathLenConstraint, and at most
/// [`MAX_PATH_DEPTH`] CA certificates may be used.
pub fn verify_chain(
    store: &TrustStore,
    end_entity: &Certificate,
    intermediates: &[Certificate],
    now_unix: u64,
) -> Result<(), PkiError> {
    end_entity.check_validity(now_unix)?;
    if let Some(oid) = end_entity.unhandled_critical_extensions().first() {
        return Err(PkiError::UnsupportedCriticalExtension {
            subject: end_entity.subject().to_string(),
            oid: oid.clone(),
        });
    }
    // A directly trusted certificate needs no path.
    if store.cas.iter().any(|c| c.der() == end_entity.der()) {
        return Ok(());
    }
    let mut used = vec![false; intermediates.len()];
    let mut current = end_entity;
    for depth in 0..MAX_PATH_DEPTH {
        // The most informative failure seen for an issuer candidate at this level.
        let mut failure: Option<PkiError> = None;
        for anchor in store.cas.iter().filter(|c| c.subject().semantic_eq(current.issuer())) {
            match check_issuer(anchor, current, depth, now_unix) {
                Ok(()) => return Ok(()),
                Err(e) => failure = Some(e),
            }
        }
        let mut next = None;
        for (i, cand) in intermediates.iter().enumerate() {
            if used[i] || !cand.subject().semantic_eq(current.issuer()) || cand.der() == current.der() {
                continue;
            }
            match check_issuer(cand, current, depth, now_unix) {
                Ok(()) => {
                    next = Some(i);
                    break;
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        match next {
            Some(i) => {
                used[i] = true;
                current = &intermediates[i];
                // A self-issued intermediate that is not trusted cannot lead further.
                if current.subject().semantic_eq(current.issuer()) {
                    return Err(PkiError::NoTrustedCa {
                        issuer: current.issuer().to_string(),
                    });
                }
            }
            None => {
                return Err(failure.unwrap_or_else(|| PkiError::NoTrustedCa {
                    issuer: current.issuer().to_string(),
                }));
            }
        }
    }
    Err(PkiError::PathTooDeep { max: MAX_PATH_DEPTH })
}

//! IKEv1 key derivation (RFC 2409 §5, §5.5 and Appendix B): SKEYID and its
//! three children, the Phase 1 encryption key, HASH_I/HASH_R, the Quick
//! Mode hashes and KEYMAT.

use zeroize::Zeroizing;

use crate::wire::isakmp::HashAlg;

/// The keys of an ISAKMP SA, zeroized on drop.
pub struct Phase1Keys {
    /// The negotiated hash (the PRF is HMAC with it).
    pub hash: HashAlg,
    /// SKEYID: authenticates Phase 1 (HASH_I, HASH_R).
    pub skeyid: Zeroizing<Vec<u8>>,
    /// SKEYID_d: derives Phase 2 keys.
    pub skeyid_d: Zeroizing<Vec<u8>>,
    /// SKEYID_a: authenticates Phase 2 and informational messages.
    pub skeyid_a: Zeroizing<Vec<u8>>,
    /// The encryption key of the ISAKMP SA (from SKEYID_e).
    pub encryption_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Phase1Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phase1Keys")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl Phase1Keys {
    /// Derives the keys for pre-shared-key authentication:
    /// SKEYID = prf(PSK, Ni_b | Nr_b), then as [`Phase1Keys::from_skeyid`].
    pub fn derive_psk(
        hash: HashAlg,
        psk: &[u8],
        nonce_i: &[u8],
        nonce_r: &[u8],
        shared: &[u8],
        cookies: (u64, u64),
        key_len: usize,
    ) -> Self {
        let skeyid = hash.prf(psk, &[nonce_i, nonce_r]);
        Self::from_skeyid(hash, skeyid, shared, cookies, key_len)
    }

    /// Derives the keys for signature authentication (RFC 2409 §5):
    /// SKEYID = prf(Ni_b | Nr_b, g^xy), then as [`Phase1Keys::from_skeyid`].
    pub fn derive_signature(
        hash: HashAlg,
        nonce_i: &[u8],
        nonce_r: &[u8],
        shared: &[u8],
        cookies: (u64, u64),
        key_len: usize,
    ) -> Self {
        let mut nonces = Zeroizing::new(Vec::with_capacity(nonce_i.len() + nonce_r.len()));
        nonces.extend_from_slice(nonce_i);
        nonces.extend_from_slice(nonce_r);
        let skeyid = hash.prf(&nonces, &[shared]);
        Self::from_skeyid(hash, skeyid, shared, cookies, key_len)
    }

    /// SKEYID_d, _a, _e from SKEYID, g^xy and the cookies, and the
    /// encryption key of `key_len` bytes from SKEYID_e (expanded as
    /// K1 = prf(SKEYID_e, 0), Kn = prf(SKEYID_e, Kn-1) when SKEYID_e is too
    /// short).
    fn from_skeyid(
        hash: HashAlg,
        skeyid: Zeroizing<Vec<u8>>,
        shared: &[u8],
        (cookie_i, cookie_r): (u64, u64),
        key_len: usize,
    ) -> Self {
        let (ci, cr) = (cookie_i.to_be_bytes(), cookie_r.to_be_bytes());
        let skeyid_d = hash.prf(&skeyid, &[shared, &ci, &cr, &[0]]);
        let skeyid_a = hash.prf(&skeyid, &[&skeyid_d, shared, &ci, &cr, &[1]]);
        let skeyid_e = hash.prf(&skeyid, &[&skeyid_a, shared, &ci, &cr, &[2]]);
        let encryption_key = if skeyid_e.len() >= key_len {
            Zeroizing::new(skeyid_e[..key_len].to_vec())
        } else {
            let mut out = Zeroizing::new(Vec::with_capacity(key_len + hash.output_len()));
            let mut block = hash.prf(&skeyid_e, &[&[0]]);
            loop {
                out.extend_from_slice(&block);
                if out.len() >= key_len {
                    break;
                }
                block = hash.prf(&skeyid_e, &[&block]);
            }
            out.truncate(key_len);
            out
        };
        Phase1Keys {
            hash,
            skeyid,
            skeyid_d,
            skeyid_a,
            encryption_key,
        }
    }

    /// HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b),
    /// and HASH_R with the KE values and cookies swapped and IDir_b.
    pub fn phase1_hash(
        &self,
        initiator: bool,
        ke_i: &[u8],
        ke_r: &[u8],
        (cookie_i, cookie_r): (u64, u64),
        sa_i_body: &[u8],
        id_body: &[u8],
    ) -> Zeroizing<Vec<u8>> {
        let (ci, cr) = (cookie_i.to_be_bytes(), cookie_r.to_be_bytes());
        if initiator {
            self.hash.prf(&self.skeyid, &[ke_i, ke_r, &ci, &cr, sa_i_body, id_body])
        } else {
            self.hash.prf(&self.skeyid, &[ke_r, ke_i, &cr, &ci, sa_i_body, id_body])
        }
    }

    /// prf(SKEYID_a, parts...): HASH(1), HASH(2), HASH(3) of Quick Mode and
    /// the HASH of informational exchanges.
    pub fn auth_hash(&self, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        self.hash.prf(&self.skeyid_a, parts)
    }

    /// KEYMAT for one direction of an ESP SA (RFC 2409 §5.5):
    /// K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
    /// Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
    /// truncated to `len` bytes. `spi` is the SPI of the receiving end.
    pub fn keymat(
        &self,
        pfs_shared: Option<&[u8]>,
        protocol: u8,
        spi: u32,
        nonce_i: &[u8],
        nonce_r: &[u8],
        len: usize,
    ) -> Zeroizing<Vec<u8>> {
        let spi = spi.to_be_bytes();
        let shared = pfs_shared.unwrap_or(&[]);
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.hash.output_len()));
        let mut block = self
            .hash
            .prf(&self.skeyid_d, &[shared, &[protocol], &spi, nonce_i, nonce_r]);
        loop {
            out.extend_from_slice(&block);
            if out.len() >= len {
                break;
            }
            block = self
                .hash
                .prf(&self.skeyid_d, &[&block, shared, &[protocol], &spi, nonce_i, nonce_r]);
        }
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_skeyid_e_is_expanded_and_keymat_chains_blocks() {
        let k = Phase1Keys::derive_psk(HashAlg::Sha256, b"psk", b"ni", b"nr", b"gxy", (1, 2), 48);
        assert_eq!(k.encryption_key.len(), 48);
        let skeyid = HashAlg::Sha256.prf(b"psk", &[b"ni", b"nr"]);
        assert_eq!(k.skeyid, skeyid);
        let d = HashAlg::Sha256.prf(&skeyid, &[b"gxy", &1u64.to_be_bytes(), &2u64.to_be_bytes(), &[0]]);
        assert_eq!(k.skeyid_d, d);
        let a = HashAlg::Sha256.prf(&skeyid, &[&d, b"gxy", &1u64.to_be_bytes(), &2u64.to_be_bytes(), &[1]]);
        let e = HashAlg::Sha256.prf(&skeyid, &[&a, b"gxy", &1u64.to_be_bytes(), &2u64.to_be_bytes(), &[2]]);
        let k1 = HashAlg::Sha256.prf(&e, &[&[0]]);
        let k2 = HashAlg::Sha256.prf(&e, &[&k1]);
        assert_eq!(&k.encryption_key[..32], &k1[..]);
        assert_eq!(&k.encryption_key[32..], &k2[..16]);
        let short = Phase1Keys::derive_psk(HashAlg::Sha256, b"psk", b"ni", b"nr", b"gxy", (1, 2), 32);
        assert_eq!(&short.encryption_key[..], &e[..]);
        let km = k.keymat(None, 3, 0x1234, b"ni", b"nr", 80);
        let b1 = HashAlg::Sha256.prf(&d, &[&[3], &0x1234u32.to_be_bytes(), b"ni", b"nr"]);
        let b2 = HashAlg::Sha256.prf(&d, &[&b1, &[3], &0x1234u32.to_be_bytes(), b"ni", b"nr"]);
        assert_eq!(&km[..32], &b1[..]);
        assert_eq!(&km[32..64], &b2[..]);
        assert_ne!(
            k.keymat(Some(b"pfs"), 3, 0x1234, b"ni", b"nr", 32),
            k.keymat(None, 3, 0x1234, b"ni", b"nr", 32)
        );
        // Signatures: SKEYID = prf(Ni_b | Nr_b, g^xy), the rest alike.
        let sig = Phase1Keys::derive_signature(HashAlg::Sha256, b"ni", b"nr", b"gxy", (1, 2), 32);
        let skeyid = HashAlg::Sha256.prf(b"ninr", &[b"gxy"]);
        assert_eq!(sig.skeyid, skeyid);
        let d = HashAlg::Sha256.prf(&skeyid, &[b"gxy", &1u64.to_be_bytes(), &2u64.to_be_bytes(), &[0]]);
        assert_eq!(sig.skeyid_d, d);
    }
}

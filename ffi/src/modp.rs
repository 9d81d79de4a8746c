//! Finite-field Diffie-Hellman over the RFC 3526 MODP groups, on aws-lc's
//! constant-time Montgomery exponentiation (`BN_mod_exp_mont_consttime`).
//!
//! aws-lc-rs has no finite-field DH API, so this is a small safe wrapper over
//! the `aws-lc-sys` bignum functions. Each group holds its prime and a cached
//! Montgomery context, built once per process ([`ModpGroup::get`]).

use std::ptr::NonNull;
use std::sync::OnceLock;

use aws_lc_sys as sys;

/// Why a MODP operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModpError {
    /// aws-lc could not allocate a bignum or context.
    #[error("aws-lc allocation failed")]
    Alloc,
    /// An aws-lc bignum operation failed.
    #[error("aws-lc bignum operation failed: {0}")]
    Library(&'static str),
    /// An input or output buffer has the wrong length.
    #[error("wrong length: expected {expected} bytes, got {got}")]
    Length {
        /// Required length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A public value is outside 1 < y < p-1 (RFC 6989 §2.1).
    #[error("public value out of range (must satisfy 1 < y < p-1)")]
    OutOfRange,
}

/// The RFC 3526 MODP primes supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModpPrime {
    /// 2048-bit MODP group (IKE group 14).
    Modp2048,
    /// 3072-bit MODP group (IKE group 15).
    Modp3072,
    /// 4096-bit MODP group (IKE group 16).
    Modp4096,
}

impl ModpPrime {
    /// Length of the prime (and of every public value and shared secret) in bytes.
    pub fn byte_len(self) -> usize {
        match self {
            ModpPrime::Modp2048 => 256,
            ModpPrime::Modp3072 => 384,
            ModpPrime::Modp4096 => 512,
        }
    }
}

/// An owned aws-lc `BIGNUM`, cleared and freed on drop.
struct Bn(NonNull<sys::BIGNUM>);

impl Bn {
    fn new() -> Result<Self, ModpError> {
        // SAFETY: BN_new has no preconditions; a null return is handled.
        let p = unsafe { sys::BN_new() };
        NonNull::new(p).map(Bn).ok_or(ModpError::Alloc)
    }

    /// A bignum from big-endian bytes.
    fn from_be(bytes: &[u8]) -> Result<Self, ModpError> {
        let bn = Bn::new()?;
        // SAFETY: `bytes` is a valid slice of `bytes.len()` bytes, and `bn.0` is a
        // valid BIGNUM we own; BN_bin2bn writes into it and returns it or null.
        let r = unsafe { sys::BN_bin2bn(bytes.as_ptr(), bytes.len(), bn.0.as_ptr()) };
        if r.is_null() {
            return Err(ModpError::Library("BN_bin2bn"));
        }
        Ok(bn)
    }

    fn as_ptr(&self) -> *const sys::BIGNUM {
        self.0.as_ptr()
    }

    /// Writes the value big-endian, left-padded with zeros to `out.len()` bytes.
    fn write_be_padded(&self, out: &mut [u8]) -> Result<(), ModpError> {
        // SAFETY: `out` is a valid writable buffer of `out.len()` bytes and
        // `self.0` a valid BIGNUM; BN_bn2bin_padded returns 0 if it does not fit.
        let ok = unsafe { sys::BN_bn2bin_padded(out.as_mut_ptr(), out.len(), self.as_ptr()) };
        if ok == 1 {
            Ok(())
        } else {
            Err(ModpError::Library("BN_bn2bin_padded"))
        }
    }

    /// `self` compared with `other`: -1, 0 or 1.
    fn cmp(&self, other: &Bn) -> i32 {
        // SAFETY: both pointers are valid BIGNUMs owned by live `Bn`s.
        unsafe { sys::BN_cmp(self.as_ptr(), other.as_ptr()) }
    }
}

impl Drop for Bn {
    fn drop(&mut self) {
        // SAFETY: we own the BIGNUM, it was allocated by aws-lc and is freed
        // exactly once; BN_clear_free wipes it first (exponents are secret).
        unsafe { sys::BN_clear_free(self.0.as_ptr()) }
    }
}

/// An owned aws-lc `BN_CTX` (scratch space), freed on drop.
struct BnCtx(NonNull<sys::BN_CTX>);

impl BnCtx {
    fn new() -> Result<Self, ModpError> {
        // SAFETY: BN_CTX_new has no preconditions; a null return is handled.
        let p = unsafe { sys::BN_CTX_new() };
        NonNull::new(p).map(BnCtx).ok_or(ModpError::Alloc)
    }
}

impl Drop for BnCtx {
    fn drop(&mut self) {
        // SAFETY: we own the BN_CTX, allocated by BN_CTX_new, freed exactly once.
        unsafe { sys::BN_CTX_free(self.0.as_ptr()) }
    }
}

/// An owned aws-lc `BN_MONT_CTX`, freed on drop.
struct MontCtx(NonNull<sys::BN_MONT_CTX>);

impl Drop for MontCtx {
    fn drop(&mut self) {
        // SAFETY: we own the context, allocated by BN_MONT_CTX_new_consttime,
        // freed exactly once.
        unsafe { sys::BN_MONT_CTX_free(self.0.as_ptr()) }
    }
}

/// A MODP group: its prime p, p - 1, the generator 2 and a cached Montgomery
/// context for p. Immutable after construction, so shareable across threads.
pub struct ModpGroup {
    prime: Bn,
    prime_minus_one: Bn,
    generator: Bn,
    mont: MontCtx,
    len: usize,
}

// SAFETY: after construction a ModpGroup is never mutated: every aws-lc call
// takes its BIGNUMs and BN_MONT_CTX through const pointers, which aws-lc
// documents as safe for concurrent use. Per-call scratch (BN_CTX) is never shared.
unsafe impl Send for ModpGroup {}
// SAFETY: see the Send impl: shared access is read-only.
unsafe impl Sync for ModpGroup {}

static MODP2048: OnceLock<Result<ModpGroup, ModpError>> = OnceLock::new();
static MODP3072: OnceLock<Result<ModpGroup, ModpError>> = OnceLock::new();
static MODP4096: OnceLock<Result<ModpGroup, ModpError>> = OnceLock::new();

impl ModpGroup {
    /// The process-wide instance of a group, built on first use.
    pub fn get(prime: ModpPrime) -> Result<&'static ModpGroup, ModpError> {
        let cell = match prime {
            ModpPrime::Modp2048 => &MODP2048,
            ModpPrime::Modp3072 => &MODP3072,
            ModpPrime::Modp4096 => &MODP4096,
        };
        cell.get_or_init(|| ModpGroup::new(prime)).as_ref().map_err(|e| *e)
    }

    /// Builds a group from aws-lc's copy of the RFC 3526 prime.
    pub fn new(prime: ModpPrime) -> Result<Self, ModpError> {
        let p = Bn::new()?;
        // SAFETY: `p.0` is a valid BIGNUM we own; the BN_get_rfc3526_prime_*
        // functions set it to the constant and return it, or null on failure.
        let r = unsafe {
            match prime {
                ModpPrime::Modp2048 => sys::BN_get_rfc3526_prime_2048(p.0.as_ptr()),
                ModpPrime::Modp3072 => sys::BN_get_rfc3526_prime_3072(p.0.as_ptr()),
                ModpPrime::Modp4096 => sys::BN_get_rfc3526_prime_4096(p.0.as_ptr()),
            }
        };
        if r.is_null() {
            return Err(ModpError::Library("BN_get_rfc3526_prime"));
        }
        Self::from_prime(p, prime.byte_len())
    }

    fn from_prime(prime: Bn, len: usize) -> Result<Self, ModpError> {
        let ctx = BnCtx::new()?;
        // SAFETY: `prime` is a valid odd modulus and `ctx` valid scratch; a null
        // return is handled.
        let mont = unsafe { sys::BN_MONT_CTX_new_consttime(prime.as_ptr(), ctx.0.as_ptr()) };
        let mont = MontCtx(NonNull::new(mont).ok_or(ModpError::Library("BN_MONT_CTX_new_consttime"))?);
        let prime_minus_one = Bn::new()?;
        // SAFETY: both BIGNUMs are valid and distinct; BN_copy returns null on failure.
        if unsafe { sys::BN_copy(prime_minus_one.0.as_ptr(), prime.as_ptr()) }.is_null() {
            return Err(ModpError::Library("BN_copy"));
        }
        // SAFETY: `prime_minus_one` is a valid BIGNUM we own exclusively.
        if unsafe { sys::BN_sub_word(prime_minus_one.0.as_ptr(), 1) } != 1 {
            return Err(ModpError::Library("BN_sub_word"));
        }
        let generator = Bn::from_be(&[2])?;
        Ok(ModpGroup {
            prime,
            prime_minus_one,
            generator,
            mont,
            len,
        })
    }

    /// Length of the prime, public values and shared secrets in bytes.
    pub fn byte_len(&self) -> usize {
        self.len
    }

    /// The prime, big-endian, `len()` bytes.
    pub fn prime(&self) -> Result<Vec<u8>, ModpError> {
        let mut out = vec![0u8; self.len];
        self.prime.write_be_padded(&mut out)?;
        Ok(out)
    }

    /// Parses a peer's public value: exactly `len()` bytes with 1 < y < p-1
    /// (RFC 6989 §2.1).
    fn parse_public(&self, y: &[u8]) -> Result<Bn, ModpError> {
        if y.len() != self.len {
            return Err(ModpError::Length {
                expected: self.len,
                got: y.len(),
            });
        }
        let bn = Bn::from_be(y)?;
        let one = Bn::from_be(&[1])?;
        if bn.cmp(&one) <= 0 || bn.cmp(&self.prime_minus_one) >= 0 {
            return Err(ModpError::OutOfRange);
        }
        Ok(bn)
    }

    /// Checks a peer's public value: exactly `len()` bytes and 1 < y < p-1.
    pub fn check_public(&self, y: &[u8]) -> Result<(), ModpError> {
        self.parse_public(y).map(|_| ())
    }

    /// `out = base^exp mod p` in constant time with respect to `exp`.
    fn modexp(&self, base: &Bn, exp: &[u8], out: &mut [u8]) -> Result<(), ModpError> {
        if out.len() != self.len {
            return Err(ModpError::Length {
                expected: self.len,
                got: out.len(),
            });
        }
        let exp = Bn::from_be(exp)?;
        let result = Bn::new()?;
        let ctx = BnCtx::new()?;
        // SAFETY: all pointers are valid for the call: `result` is owned and
        // distinct from the inputs, `base` < p (the generator or a checked
        // public value), `self.mont` is the Montgomery context of `self.prime`,
        // and `ctx` is scratch used by this call only.
        let ok = unsafe {
            sys::BN_mod_exp_mont_consttime(
                result.0.as_ptr(),
                base.as_ptr(),
                exp.as_ptr(),
                self.prime.as_ptr(),
                ctx.0.as_ptr(),
                self.mont.0.as_ptr(),
            )
        };
        if ok != 1 {
            return Err(ModpError::Library("BN_mod_exp_mont_consttime"));
        }
        result.write_be_padded(out)
    }

    /// Our public value `g^exp mod p` into `out` (`len()` bytes, zero-padded).
    pub fn pow_g_into(&self, exp: &[u8], out: &mut [u8]) -> Result<(), ModpError> {
        self.modexp(&self.generator, exp, out)
    }

    /// The shared secret `peer^exp mod p` into `out` (`len()` bytes,
    /// zero-padded), after checking `peer` as [`check_public`](Self::check_public) does.
    pub fn pow_into(&self, peer: &[u8], exp: &[u8], out: &mut [u8]) -> Result<(), ModpError> {
        let base = self.parse_public(peer)?;
        self.modexp(&base, exp, out)
    }

    /// `g^exp mod p`, `len()` bytes.
    pub fn pow_g(&self, exp: &[u8]) -> Result<Vec<u8>, ModpError> {
        let mut out = vec![0u8; self.len];
        self.pow_g_into(exp, &mut out)?;
        Ok(out)
    }

    /// `peer^exp mod p`, `len()` bytes, after the RFC 6989 range check on
    /// `peer`. The caller should zeroize the result (it is a shared secret).
    pub fn pow(&self, peer: &[u8], exp: &[u8]) -> Result<Vec<u8>, ModpError> {
        let mut out = vec![0u8; self.len];
        self.pow_into(peer, exp, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_checks_apply() {
        let g = ModpGroup::get(ModpPrime::Modp2048).unwrap();
        let a = [0x11u8; 32];
        let b = [0x5au8; 32];
        let ya = g.pow_g(&a).unwrap();
        let yb = g.pow_g(&b).unwrap();
        assert_eq!(ya.len(), 256);
        assert_eq!(g.pow(&yb, &a).unwrap(), g.pow(&ya, &b).unwrap());
        let p = g.prime().unwrap();
        let mut pm1 = p.clone();
        pm1[255] -= 1;
        let mut one = vec![0u8; 256];
        one[255] = 1;
        for bad in [vec![0u8; 256], one, pm1, p, vec![0xff; 256]] {
            assert_eq!(g.pow(&bad, &a), Err(ModpError::OutOfRange));
        }
        assert!(matches!(g.pow(&ya[1..], &a), Err(ModpError::Length { .. })));
    }
}

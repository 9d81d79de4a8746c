//! Stateless cookies (RFC 7296 §2.6) with a versioned, rotating secret.
//!
//! Cookie = version (1 byte) | HMAC-SHA256(secret[version], Ni | IPi | SPIi)
//! truncated to 16 bytes. The previous secret stays valid for a grace period
//! after a rotation so initiators mid-exchange are not refused. The first
//! secret is drawn when the first cookie is needed; a random source that
//! fails makes no cookie at all (a guessable secret would not be noticed).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::{constant_time, hmac};

use crate::crypto::{CryptoError, CryptoProvider};

const COOKIE_MAC_LEN: usize = 16;

struct Secret {
    version: u8,
    key: hmac::Key,
    created: Instant,
}

/// Creates and checks COOKIE notify data.
pub struct CookieJar {
    current: Option<Secret>,
    previous: Option<Secret>,
    rotate_every: Duration,
    grace: Duration,
}

fn new_secret(version: u8, now: Instant, random: &dyn CryptoProvider) -> Result<Secret, CryptoError> {
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    random.fill_random(&mut *k)?;
    Ok(Secret {
        version,
        key: hmac::Key::new(hmac::HMAC_SHA256, &*k),
        created: now,
    })
}

impl CookieJar {
    /// A jar whose secret rotates every `rotate_every`, the previous one being accepted for `grace`.
    pub fn new(rotate_every: Duration, grace: Duration) -> Self {
        Self {
            current: None,
            previous: None,
            rotate_every,
            grace,
        }
    }

    /// The current secret, drawn or rotated first when due.
    fn current(&mut self, now: Instant, random: &dyn CryptoProvider) -> Result<&Secret, CryptoError> {
        self.rotate(now, random)?;
        self.current.as_ref().ok_or(CryptoError::Rng)
    }

    /// Draws the first secret, or the next one when the current one is due.
    fn rotate(&mut self, now: Instant, random: &dyn CryptoProvider) -> Result<(), CryptoError> {
        let version = match &self.current {
            None => Some(0),
            Some(c) if now.duration_since(c.created) >= self.rotate_every => Some(c.version.wrapping_add(1)),
            Some(_) => None,
        };
        if let Some(version) = version {
            let next = new_secret(version, now, random)?;
            self.previous = self.current.replace(next);
        }
        Ok(())
    }

    fn mac(secret: &Secret, ni: &[u8], ip: IpAddr, spi_i: u64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&secret.key);
        ctx.update(ni);
        match ip {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&spi_i.to_be_bytes());
        ctx.sign()
    }

    /// The cookie to demand from an initiator.
    pub fn make(
        &mut self,
        now: Instant,
        random: &dyn CryptoProvider,
        ni: &[u8],
        ip: IpAddr,
        spi_i: u64,
    ) -> Result<Vec<u8>, CryptoError> {
        let current = self.current(now, random)?;
        let tag = Self::mac(current, ni, ip, spi_i);
        let mut c = Vec::with_capacity(1 + COOKIE_MAC_LEN);
        c.push(current.version);
        c.extend_from_slice(&tag.as_ref()[..COOKIE_MAC_LEN]);
        Ok(c)
    }

    /// True if `cookie` was made by us for these values, with the current or a recent secret.
    /// A secret that cannot be rotated fails the check with the error.
    pub fn verify(
        &mut self,
        now: Instant,
        random: &dyn CryptoProvider,
        cookie: &[u8],
        ni: &[u8],
        ip: IpAddr,
        spi_i: u64,
    ) -> Result<bool, CryptoError> {
        self.rotate(now, random)?;
        let current = self.current.as_ref().ok_or(CryptoError::Rng)?;
        if cookie.len() != 1 + COOKIE_MAC_LEN {
            return Ok(false);
        }
        let secret = if cookie[0] == current.version {
            current
        } else {
            match &self.previous {
                Some(p) if p.version == cookie[0] && now.duration_since(current.created) < self.grace => p,
                _ => return Ok(false),
            }
        };
        let tag = Self::mac(secret, ni, ip, spi_i);
        Ok(constant_time::verify_slices_are_equal(&tag.as_ref()[..COOKIE_MAC_LEN], &cookie[1..]).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::provider::test_support::CountingRandom;
    use std::sync::atomic::Ordering;

    #[test]
    fn cookies_verify_rotate_and_expire() {
        let r = CountingRandom::default();
        let t0 = Instant::now();
        let mut jar = CookieJar::new(Duration::from_secs(60), Duration::from_secs(10));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let n = b"nonce-nonce-nonce";
        let c = jar.make(t0, &r, n, ip, 42).unwrap();
        assert!(jar.verify(t0, &r, &c, n, ip, 42).unwrap());
        assert!(!jar.verify(t0, &r, &c, b"nonce-nonce-noncf", ip, 42).unwrap());
        assert!(!jar.verify(t0, &r, &c, n, "192.0.2.8".parse().unwrap(), 42).unwrap());
        assert!(!jar.verify(t0, &r, &c, n, ip, 43).unwrap());
        assert!(!jar.verify(t0, &r, &c[..5], n, ip, 42).unwrap());
        // After a rotation the old cookie is accepted during the grace period only.
        let t1 = t0 + Duration::from_secs(61);
        assert!(jar.verify(t1, &r, &c, n, ip, 42).unwrap());
        assert!(!jar.verify(t1 + Duration::from_secs(11), &r, &c, n, ip, 42).unwrap());
        let c2 = jar.make(t1, &r, n, ip, 42).unwrap();
        assert_ne!(c[0], c2[0]);
        assert!(jar.verify(t1, &r, &c2, n, ip, 42).unwrap());
    }

    #[test]
    fn failing_random_source_makes_no_cookie() {
        let r = CountingRandom::default();
        r.fail.store(true, Ordering::Relaxed);
        let mut jar = CookieJar::new(Duration::from_secs(60), Duration::from_secs(10));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            jar.make(Instant::now(), &r, b"nonce-nonce-nonce", ip, 42),
            Err(CryptoError::Rng)
        );
        // Once the source recovers, cookies are made with a real secret.
        r.fail.store(false, Ordering::Relaxed);
        let c = jar.make(Instant::now(), &r, b"nonce-nonce-nonce", ip, 42).unwrap();
        assert!(
            jar.verify(Instant::now(), &r, &c, b"nonce-nonce-nonce", ip, 42)
                .unwrap()
        );
    }
}

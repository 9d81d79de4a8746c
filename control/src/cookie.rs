//! Stateless cookies (RFC 7296 §2.6) with a versioned, rotating secret.
//!
//! Cookie = version (1 byte) | HMAC-SHA256(secret[version], Ni | IPi | SPIi)
//! truncated to 16 bytes. The previous secret stays valid for a grace period
//! after a rotation so initiators mid-exchange are not refused.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::{constant_time, hmac};

use crate::crypto::random;

const COOKIE_MAC_LEN: usize = 16;

struct Secret {
    version: u8,
    key: hmac::Key,
    created: Instant,
}

/// Creates and checks COOKIE notify data.
pub struct CookieJar {
    current: Secret,
    previous: Option<Secret>,
    rotate_every: Duration,
    grace: Duration,
}

fn new_secret(version: u8, now: Instant) -> Secret {
    let mut k = [0u8; 32];
    // An RNG failure leaves a zero key; cookies then still work but are guessable,
    // which only weakens DoS protection. aws-lc's RNG does not fail in practice.
    let _ = random::fill(&mut k);
    Secret {
        version,
        key: hmac::Key::new(hmac::HMAC_SHA256, &k),
        created: now,
    }
}

impl CookieJar {
    /// A jar whose secret rotates every `rotate_every`, the previous one being accepted for `grace`.
    pub fn new(now: Instant, rotate_every: Duration, grace: Duration) -> Self {
        Self {
            current: new_secret(0, now),
            previous: None,
            rotate_every,
            grace,
        }
    }

    fn maybe_rotate(&mut self, now: Instant) {
        if now.duration_since(self.current.created) >= self.rotate_every {
            let next = new_secret(self.current.version.wrapping_add(1), now);
            self.previous = Some(std::mem::replace(&mut self.current, next));
        }
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
    pub fn make(&mut self, now: Instant, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        self.maybe_rotate(now);
        let tag = Self::mac(&self.current, ni, ip, spi_i);
        let mut c = Vec::with_capacity(1 + COOKIE_MAC_LEN);
        c.push(self.current.version);
        c.extend_from_slice(&tag.as_ref()[..COOKIE_MAC_LEN]);
        c
    }

    /// True if `cookie` was made by us for these values, with the current or a recent secret.
    pub fn verify(&mut self, now: Instant, cookie: &[u8], ni: &[u8], ip: IpAddr, spi_i: u64) -> bool {
        self.maybe_rotate(now);
        if cookie.len() != 1 + COOKIE_MAC_LEN {
            return false;
        }
        let secret = if cookie[0] == self.current.version {
            &self.current
        } else {
            match &self.previous {
                Some(p) if p.version == cookie[0] && now.duration_since(self.current.created) < self.grace => p,
                _ => return false,
            }
        };
        let tag = Self::mac(secret, ni, ip, spi_i);
        constant_time::verify_slices_are_equal(&tag.as_ref()[..COOKIE_MAC_LEN], &cookie[1..]).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_verify_rotate_and_expire() {
        let t0 = Instant::now();
        let mut jar = CookieJar::new(t0, Duration::from_secs(60), Duration::from_secs(10));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let c = jar.make(t0, b"nonce-nonce-nonce", ip, 42);
        assert!(jar.verify(t0, &c, b"nonce-nonce-nonce", ip, 42));
        assert!(!jar.verify(t0, &c, b"nonce-nonce-noncf", ip, 42));
        assert!(!jar.verify(t0, &c, b"nonce-nonce-nonce", "192.0.2.8".parse().unwrap(), 42));
        assert!(!jar.verify(t0, &c, b"nonce-nonce-nonce", ip, 43));
        assert!(!jar.verify(t0, &c[..5], b"nonce-nonce-nonce", ip, 42));
        // After a rotation the old cookie is accepted during the grace period only.
        let t1 = t0 + Duration::from_secs(61);
        assert!(jar.verify(t1, &c, b"nonce-nonce-nonce", ip, 42));
        assert!(!jar.verify(t1 + Duration::from_secs(11), &c, b"nonce-nonce-nonce", ip, 42));
        let c2 = jar.make(t1, b"nonce-nonce-nonce", ip, 42);
        assert_ne!(c[0], c2[0]);
        assert!(jar.verify(t1, &c2, b"nonce-nonce-nonce", ip, 42));
    }
}

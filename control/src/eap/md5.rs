//! EAP-MD5 (RFC 3748 §5.4, CHAP as in RFC 1994): kept for test clients that
//! ask for it. It has no MSK and no mutual authentication, so a gateway
//! should only offer it deliberately.

use md5::{Digest, Md5};

/// The MD5-Challenge response value: MD5(Identifier || secret || challenge).
pub fn response(identifier: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([identifier]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc1994_style_known_answer() {
        // MD5(0x01 || "password" || 16 x 0x00), computed independently with
        // `(printf "\x01password"; head -c16 /dev/zero) | md5sum`.
        let r = super::response(1, b"password", &[0u8; 16]);
        assert_eq!(hex::encode(r), "ae88b6c2fe68bc923ae994f652508d12");
    }
}

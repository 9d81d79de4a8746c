//! NAT detection (RFC 7296 §2.23): NAT_DETECTION_*_IP hashes.

use std::net::{IpAddr, SocketAddr};

use aws_lc_rs::digest;

/// A NAT detection hash (SHA-1, 20 bytes).
pub type NatHash = [u8; 20];

/// SHA-1(SPIi | SPIr | IP | Port), the data of a NAT_DETECTION_*_IP notify.
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> NatHash {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_input() {
        let a: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:4500".parse().unwrap();
        let h = nat_detection_hash(1, 2, a);
        assert_eq!(h.len(), 20);
        assert_ne!(h, nat_detection_hash(1, 2, b));
        assert_ne!(h, nat_detection_hash(1, 3, a));
        assert_eq!(h, nat_detection_hash(1, 2, a));
    }
}

//! NAT detection (RFC 7296 §2.23): NAT_DETECTION_*_IP hashes.

use std::net::{IpAddr, SocketAddr};

use aws_lc_rs::digest;

/// A NAT detection hash (SHA-1, 20 bytes).
pub type NatHash = [u8; 20];

/// SHA-1(SPIi | SPIr | IP | Port), the data of a NAT_DETECTION_*_IP notify.
/// The input is at most 34 bytes: it is laid out on the stack and hashed in
/// one call (this runs four times per IKE_SA_INIT on either side).
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> NatHash {
    let mut input = [0u8; 8 + 8 + 16 + 2];
    input[..8].copy_from_slice(&spi_i.to_be_bytes());
    input[8..16].copy_from_slice(&spi_r.to_be_bytes());
    let ip_len = match addr.ip() {
        IpAddr::V4(a) => {
            input[16..20].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            input[16..32].copy_from_slice(&a.octets());
            16
        }
    };
    let end = 16 + ip_len + 2;
    input[16 + ip_len..end].copy_from_slice(&addr.port().to_be_bytes());
    let mut out = [0u8; 20];
    out.copy_from_slice(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &input[..end]).as_ref());
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

    /// The hash over exactly SPIi | SPIr | IP | Port for both address
    /// families, computed independently with an incremental SHA-1.
    #[test]
    fn hash_covers_exactly_spis_address_and_port() {
        for addr in ["192.0.2.1:4500", "[2001:db8::1]:500"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
            ctx.update(&0x0102_0304_0506_0708u64.to_be_bytes());
            ctx.update(&0x1112_1314_1516_1718u64.to_be_bytes());
            match addr.ip() {
                IpAddr::V4(a) => ctx.update(&a.octets()),
                IpAddr::V6(a) => ctx.update(&a.octets()),
            }
            ctx.update(&addr.port().to_be_bytes());
            assert_eq!(
                nat_detection_hash(0x0102_0304_0506_0708, 0x1112_1314_1516_1718, addr).as_slice(),
                ctx.finish().as_ref(),
                "{addr}"
            );
        }
    }
}

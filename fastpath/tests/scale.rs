//! The SAD holds a million SAs while lookups keep working; memory per SA is reported.

use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::sad::{Direction, SaParams, Sad};
use std::net::IpAddr;
use zeroize::Zeroizing;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn one_million_inbound_sas() {
    const N: u32 = 1_000_000;
    let (sad, _rx) = Sad::new(2);
    let local: IpAddr = "192.0.2.1".parse().unwrap();
    let remote: IpAddr = "198.51.100.1".parse().unwrap();
    let before = rss_bytes();
    let t = std::time::Instant::now();
    let mut p = SaParams::new(
        0,
        Direction::Inbound,
        CipherKeys {
            enc: EncAlg::AesGcm16_256,
            integ: IntegAlg::None,
            enc_key: Zeroizing::new(vec![0u8; 36]),
            integ_key: Zeroizing::new(Vec::new()),
        },
        local,
        remote,
    );
    for i in 0..N {
        p.spi = 0x1000_0000 + i;
        p.keys.enc_key[..4].copy_from_slice(&i.to_be_bytes());
        sad.install_inbound(&p).unwrap();
    }
    let elapsed = t.elapsed();
    let after = rss_bytes();
    assert_eq!(sad.len().0, N as usize);
    for i in (0..N).step_by(9973) {
        let sa = sad.inbound(0x1000_0000 + i, Some(local)).unwrap();
        assert_eq!(sa.spi, 0x1000_0000 + i);
    }
    assert!(sad.inbound(0x0fff_ffff, None).is_none());
    assert!(sad.inbound(0x1000_0000, Some(remote)).is_none());
    let per_sa = after.saturating_sub(before) / u64::from(N);
    eprintln!(
        "SAD: {N} inbound AES-256-GCM SAs (window 1024) installed in {elapsed:?}, \
         RSS +{} MiB, {per_sa} bytes per SA",
        after.saturating_sub(before) >> 20
    );
    assert!(per_sa < 4096, "{per_sa} bytes per SA");
}

#[test]
fn cipher_context_memory() {
    use fastpath::esp::aead::EspCipher;
    const N: usize = 100_000;
    let before = rss_bytes();
    let t = std::time::Instant::now();
    let keys = CipherKeys {
        enc: EncAlg::AesGcm16_256,
        integ: IntegAlg::None,
        enc_key: Zeroizing::new(vec![1u8; 36]),
        integ_key: Zeroizing::new(Vec::new()),
    };
    let v: Vec<EspCipher> = (0..N).map(|_| EspCipher::new(&keys).unwrap()).collect();
    let per = rss_bytes().saturating_sub(before) / N as u64;
    eprintln!(
        "aws-lc AES-256-GCM key context: {per} bytes each, {:?} per key setup",
        t.elapsed() / N as u32
    );
    assert_eq!(v.len(), N);
}

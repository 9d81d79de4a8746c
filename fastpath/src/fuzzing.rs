//! Entry points for fuzz targets (wired into `fuzz/` by the workspace).
//!
//! Each function must never panic on any input.

use crate::buf::{PacketBuf, PacketBuffer};
use crate::esp::Mode;
use crate::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use crate::sad::{Direction, SaParams, Sad, UdpEncap};
use crate::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use crate::worker::{InboundKind, PacketMeta, Worker};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use zeroize::Zeroizing;

/// SPIs of the inbound SAs installed by the fuzz harness; a fuzzer that finds
/// them reaches the ICV check of each cipher family and mode.
pub const FUZZ_SPIS: [u32; 4] = [0x1000, 0x1001, 0x1002, 0x1003];

fn harness() -> &'static Mutex<Worker> {
    static H: OnceLock<Mutex<Worker>> = OnceLock::new();
    H.get_or_init(|| {
        let (sad, _rx) = Sad::new(1);
        let local: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([192, 0, 2, 1]));
        let remote: IpAddr = IpAddr::from([192, 0, 2, 2]);
        let suites = [
            (EncAlg::AesGcm16_128, IntegAlg::None, Mode::Tunnel, false),
            (
                EncAlg::ChaCha20Poly1305,
                IntegAlg::None,
                Mode::Transport,
                true,
            ),
            (
                EncAlg::AesCbc128,
                IntegAlg::HmacSha256_128,
                Mode::Tunnel,
                true,
            ),
            (
                EncAlg::AesCbc256,
                IntegAlg::HmacSha512_256,
                Mode::Transport,
                false,
            ),
        ];
        let spd = Spd::new();
        for (spi, (enc, integ, mode, esn)) in FUZZ_SPIS.iter().zip(suites) {
            let keys = CipherKeys {
                enc,
                integ,
                enc_key: Zeroizing::new(vec![0x42; enc.key_material_len()]),
                integ_key: Zeroizing::new(vec![0x24; integ.key_len()]),
            };
            let mut p = SaParams::new(*spi, Direction::Inbound, keys, local, remote);
            p.mode = mode;
            p.esn = esn;
            p.udp_encap = Some(UdpEncap {
                local_port: 4500,
                remote_port: 4500,
            });
            let _ = sad.install_inbound(&p);
            p.direction = Direction::Outbound;
            if let Ok(id) = sad.install_outbound(&p)
                && let (Ok(any), Ok(any6)) = (
                    TrafficSelector::prefix(IpAddr::from([0, 0, 0, 0]), 0),
                    TrafficSelector::prefix(IpAddr::from([0u8; 16]), 0),
                )
            {
                let _ = spd.insert(&Policy {
                    local: any,
                    remote: any,
                    action: PolicyAction::Protect(id),
                    priority: *spi,
                });
                let _ = spd.insert(&Policy {
                    local: any6,
                    remote: any6,
                    action: PolicyAction::Protect(id),
                    priority: *spi,
                });
            }
        }
        Mutex::new(Worker::new(0, Arc::new(sad), Arc::new(spd)).without_pinning())
    })
}

/// Feeds `data` through the inbound path (as UDP-4500 payload and as raw ESP)
/// and the outbound path (as an inner IP packet).
pub fn inbound(data: &[u8]) {
    let mut w = harness().lock().unwrap_or_else(|e| e.into_inner());
    let meta = PacketMeta {
        src: IpAddr::from([192, 0, 2, 2]),
        dst: None,
        src_port: 4500,
    };
    let Ok(mut buf) = PacketBuf::from_slice(data) else {
        return;
    };
    let _ = w.inbound_packet(InboundKind::Udp, &mut buf, &meta);
    if buf.set_data(data).is_ok() {
        let _ = w.inbound_packet(InboundKind::RawEsp, &mut buf, &meta);
    }
    if buf.set_data(data).is_ok() {
        let _ = w.outbound_packet(&mut buf);
        let _ = buf.len();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn arbitrary_inputs_do_not_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in 0..600 {
            let mut v = vec![0u8; len % 200 + len / 3];
            for b in v.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            if v.len() >= 4 && len % 3 == 0 {
                v[..4].copy_from_slice(&super::FUZZ_SPIS[len % 4].to_be_bytes());
            }
            if !v.is_empty() && len % 5 == 0 {
                v[0] = 0x45;
            }
            super::inbound(&v);
        }
        super::inbound(&[]);
        super::inbound(&[0xff]);
        super::inbound(&[0, 0, 0, 0]);
        super::inbound(&vec![0u8; 5000]);
    }
}

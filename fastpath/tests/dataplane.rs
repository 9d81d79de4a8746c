//! End-to-end data plane tests: two SADs (A sends, B receives) joined by
//! workers, for every cipher, mode, family, ESN and NAT-T combination, plus
//! replay, lifetimes, rekey, sequence exhaustion and hostile input.

use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::esp::Mode;
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::ip;
use fastpath::sad::{Direction, Lifetime, OuterPath, SaEvent, SaId, SaParams, Sad, SadError, UdpEncap};
use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use fastpath::stats::DropReason;
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use zeroize::Zeroizing;

const SUITES: [(EncAlg, IntegAlg); 7] = [
    (EncAlg::AesGcm16_128, IntegAlg::None),
    (EncAlg::AesGcm16_256, IntegAlg::None),
    (EncAlg::ChaCha20Poly1305, IntegAlg::None),
    (EncAlg::AesCbc128, IntegAlg::HmacSha256_128),
    (EncAlg::AesCbc256, IntegAlg::HmacSha256_128),
    (EncAlg::AesCbc128, IntegAlg::HmacSha384_192),
    (EncAlg::AesCbc256, IntegAlg::HmacSha512_256),
];

fn keys(enc: EncAlg, integ: IntegAlg, seed: u8) -> CipherKeys {
    CipherKeys {
        enc,
        integ,
        enc_key: Zeroizing::new((0..enc.key_material_len()).map(|i| i as u8 ^ seed).collect()),
        integ_key: Zeroizing::new((0..integ.key_len()).map(|i| i as u8 ^ !seed).collect()),
    }
}

/// An IPv4/IPv6 UDP packet with correct checksums, TTL 64 and zero ID/flow label,
/// the header our transport-mode decapsulation rebuilds.
fn udp_packet(src: IpAddr, dst: IpAddr, payload_len: usize) -> Vec<u8> {
    let mut b = PacketBuf::new(128, 4096);
    b.set_data(&[0u8; 8]).unwrap();
    b.append(payload_len)
        .unwrap()
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = i as u8);
    let len = b.len() as u16;
    let d = b.data_mut();
    d[0..2].copy_from_slice(&1234u16.to_be_bytes());
    d[2..4].copy_from_slice(&5678u16.to_be_bytes());
    d[4..6].copy_from_slice(&len.to_be_bytes());
    let c = ip::l4_checksum(src, dst, 17, d);
    d[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    ip::prepend_ip_header(&mut b, src, dst, 17).unwrap();
    b.data().to_vec()
}

struct Pair {
    a: Worker,
    b: Worker,
    sad_a: Arc<Sad>,
    sad_b: Arc<Sad>,
    spd_a: Arc<Spd>,
    ev_a: Receiver<SaEvent>,
    ev_b: Receiver<SaEvent>,
    out_id: SaId,
    in_id: SaId,
    a_addr: IpAddr,
    b_addr: IpAddr,
}

fn any_ts(v6: bool) -> TrafficSelector {
    let a: IpAddr = if v6 {
        "::".parse().unwrap()
    } else {
        "0.0.0.0".parse().unwrap()
    };
    TrafficSelector::prefix(a, 0).unwrap()
}

fn pair(p: impl Fn(&mut SaParams), v6: bool) -> Pair {
    let (a_addr, b_addr): (IpAddr, IpAddr) = if v6 {
        ("2001:db8::a".parse().unwrap(), "2001:db8::b".parse().unwrap())
    } else {
        ("192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap())
    };
    let (sad_a, ev_a) = Sad::new(1);
    let (sad_b, ev_b) = Sad::new(1);
    let mut out = SaParams::new(
        0xc0de_0001,
        Direction::Outbound,
        keys(EncAlg::AesGcm16_128, IntegAlg::None, 1),
        a_addr,
        b_addr,
    );
    p(&mut out);
    let mut inb = out.clone();
    inb.direction = Direction::Inbound;
    inb.local = b_addr;
    inb.remote = a_addr;
    let out_id = sad_a.install_outbound(&out).unwrap();
    let in_id = sad_b.install_inbound(&inb).unwrap();
    let spd_a = Spd::new();
    spd_a
        .insert(&Policy {
            local: any_ts(v6),
            remote: any_ts(v6),
            action: PolicyAction::Protect(out_id),
            priority: 100,
        })
        .unwrap();
    let (sad_a, sad_b, spd_a) = (Arc::new(sad_a), Arc::new(sad_b), Arc::new(spd_a));
    Pair {
        a: Worker::new(0, sad_a.clone(), spd_a.clone()),
        b: Worker::new(0, sad_b.clone(), Arc::new(Spd::new())),
        sad_a,
        sad_b,
        spd_a,
        ev_a,
        ev_b,
        out_id,
        in_id,
        a_addr,
        b_addr,
    }
}

impl Pair {
    /// A → ESP bytes.
    fn send(&mut self, inner: &[u8]) -> Result<Vec<u8>, Verdict> {
        let mut buf = PacketBuf::from_slice(inner).unwrap();
        match self.a.outbound_packet(&mut buf) {
            Verdict::ToPeer { src, dst, .. } => {
                assert_eq!((src, dst), (self.a_addr, self.b_addr));
                Ok(buf.data().to_vec())
            }
            v => Err(v),
        }
    }

    /// ESP bytes → B.
    fn recv(&mut self, esp: &[u8], kind: InboundKind) -> Result<Vec<u8>, Verdict> {
        let mut buf = PacketBuf::from_slice(esp).unwrap();
        let meta = PacketMeta {
            src: self.a_addr,
            dst: Some(self.b_addr),
            src_port: 4500,
        };
        match self.b.inbound_packet(kind, &mut buf, &meta) {
            Verdict::ToTunnel => Ok(buf.data().to_vec()),
            v => Err(v),
        }
    }
}

#[test]
fn round_trip_every_cipher_mode_family_esn_natt() {
    let mut n = 0;
    for (enc, integ) in SUITES {
        for mode in [Mode::Tunnel, Mode::Transport] {
            for v6 in [false, true] {
                for esn in [false, true] {
                    for natt in [false, true] {
                        let mut p = pair(
                            |p| {
                                p.keys = keys(enc, integ, 7);
                                p.mode = mode;
                                p.esn = esn;
                                p.udp_encap = natt.then_some(UdpEncap {
                                    local_port: 4500,
                                    remote_port: 4500,
                                });
                            },
                            v6,
                        );
                        let kind = if natt { InboundKind::Udp } else { InboundKind::RawEsp };
                        for size in [0usize, 1, 13, 100, 1000] {
                            // Transport mode protects traffic between the gateways themselves.
                            let (s, d): (IpAddr, IpAddr) = if mode == Mode::Transport {
                                (p.a_addr, p.b_addr)
                            } else if v6 {
                                ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
                            } else {
                                ("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap())
                            };
                            let inner = udp_packet(s, d, size);
                            let esp = p.send(&inner).unwrap();
                            assert_eq!(&esp[..4], &0xc0de_0001u32.to_be_bytes());
                            let got = p.recv(&esp, kind).unwrap();
                            assert_eq!(got, inner, "{enc:?} {integ:?} {mode:?} v6={v6} esn={esn}");
                            n += 1;
                        }
                        let s = p.sad_b.inbound_by_id(p.in_id).unwrap().counters.snapshot();
                        assert_eq!((s.packets, s.total_drops()), (5, 0));
                        assert!(p.ev_a.try_recv().is_err() && p.ev_b.try_recv().is_err());
                        assert!(p.sad_a.outbound(p.out_id).is_some());
                        assert_eq!(p.spd_a.len(), 1);
                    }
                }
            }
        }
    }
    eprintln!("{n} round trips");
}

#[test]
fn replay_and_reorder_through_worker() {
    let mut p = pair(|p| p.replay_window = 64, false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 20);
    let pkts: Vec<Vec<u8>> = (0..100).map(|_| p.send(&inner).unwrap()).collect();
    // Newest first, then the window edge: seq 100 accepted, 37 is the oldest allowed.
    p.recv(&pkts[99], InboundKind::RawEsp).unwrap();
    assert_eq!(
        p.recv(&pkts[35], InboundKind::RawEsp),
        Err(Verdict::Drop(DropReason::Replay))
    );
    p.recv(&pkts[36], InboundKind::RawEsp).unwrap();
    assert_eq!(
        p.recv(&pkts[36], InboundKind::RawEsp),
        Err(Verdict::Drop(DropReason::Replay))
    );
    for s in (37..99).rev() {
        p.recv(&pkts[s], InboundKind::RawEsp).unwrap();
    }
    let c = p.b.counters().inbound.snapshot();
    assert_eq!(c.packets, 64);
    assert_eq!(c.dropped(DropReason::Replay), 2);
}

#[test]
fn esn_wrap_across_2_pow_32_through_worker() {
    let mut p = pair(|p| p.esn = true, false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 20);
    let sa = p.sad_a.outbound(p.out_id).unwrap();
    // Walk the receiver's window up to the wrap in legal jumps.
    for start in [1u64, 1 << 31, (1 << 32) - 3] {
        sa.set_next_seq(start);
        let esp = p.send(&inner).unwrap();
        p.recv(&esp, InboundKind::RawEsp).unwrap();
    }
    // (1<<32)-2 .. (1<<32)+3 crosses the wrap; low halves 0xfffffffe, 0xffffffff, 0, 1, ...
    let mut sent = Vec::new();
    for _ in 0..6 {
        sent.push(p.send(&inner).unwrap());
    }
    assert_eq!(&sent[2][4..8], &[0, 0, 0, 0]);
    // Deliver out of order across the wrap.
    for i in [3usize, 0, 5, 1, 2, 4] {
        assert_eq!(p.recv(&sent[i], InboundKind::RawEsp).unwrap(), inner);
    }
    let w = p.sad_b.inbound_by_id(p.in_id).unwrap();
    assert_eq!(w.replay.lock().unwrap().top(), (1u64 << 32) + 3);
    assert_eq!(
        p.recv(&sent[2], InboundKind::RawEsp),
        Err(Verdict::Drop(DropReason::Replay))
    );
}

#[test]
fn lifetime_events_soft_then_hard() {
    let mut p = pair(
        |p| {
            p.lifetime = Lifetime {
                soft_packets: 3,
                hard_packets: 5,
                soft_bytes: 0,
                hard_bytes: 0,
            }
        },
        false,
    );
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 20);
    let mut esps = Vec::new();
    for _ in 0..5 {
        esps.push(p.send(&inner).unwrap());
    }
    assert_eq!(p.send(&inner), Err(Verdict::Drop(DropReason::Expired)));
    let ev: Vec<SaEvent> = p.ev_a.try_iter().collect();
    assert_eq!(
        ev,
        vec![
            SaEvent::SoftExpired { sa: p.out_id },
            SaEvent::HardExpired { sa: p.out_id }
        ]
    );
    for e in &esps {
        p.recv(e, InboundKind::RawEsp).unwrap();
    }
    let ev: Vec<SaEvent> = p.ev_b.try_iter().collect();
    assert_eq!(
        ev,
        vec![
            SaEvent::SoftExpired { sa: p.in_id },
            SaEvent::HardExpired { sa: p.in_id }
        ]
    );
    // Byte lifetimes too.
    let mut q = pair(
        |p| {
            p.lifetime = Lifetime {
                soft_bytes: 100,
                ..Lifetime::default()
            }
        },
        false,
    );
    q.send(&inner).unwrap();
    assert!(q.ev_a.try_recv().is_err());
    q.send(&inner).unwrap();
    q.send(&inner).unwrap();
    assert_eq!(q.ev_a.try_recv(), Ok(SaEvent::SoftExpired { sa: q.out_id }));
}

#[test]
fn sequence_exhaustion_without_esn() {
    let mut p = pair(|_| {}, false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 20);
    p.sad_a.outbound(p.out_id).unwrap().set_next_seq(u64::from(u32::MAX));
    let last = p.send(&inner).unwrap();
    assert_eq!(&last[4..8], &[0xff; 4]);
    for _ in 0..3 {
        assert_eq!(p.send(&inner), Err(Verdict::Drop(DropReason::SeqExhausted)));
    }
    assert_eq!(
        p.ev_a.try_iter().collect::<Vec<_>>(),
        vec![SaEvent::SeqExhausted { sa: p.out_id }]
    );
}

#[test]
fn rekey_without_loss() {
    let mut p = pair(|_| {}, false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 64);
    let in_flight: Vec<Vec<u8>> = (0..10).map(|_| p.send(&inner).unwrap()).collect();
    // New SA pair with new SPI and keys; old inbound stays.
    let mut out2 = SaParams::new(
        0xc0de_0002,
        Direction::Outbound,
        keys(EncAlg::AesGcm16_256, IntegAlg::None, 9),
        p.a_addr,
        p.b_addr,
    );
    out2.replay_window = 2048;
    let mut in2 = out2.clone();
    in2.direction = Direction::Inbound;
    in2.local = p.b_addr;
    in2.remote = p.a_addr;
    let new_in = p.sad_b.install_inbound(&in2).unwrap();
    let new_out = p.sad_a.replace_outbound(p.out_id, &out2, &p.spd_a).unwrap();
    assert!(p.sad_a.outbound(p.out_id).is_none());
    assert_eq!(p.spd_a.replace_sa(p.out_id, new_out), 0);
    let after: Vec<Vec<u8>> = (0..10).map(|_| p.send(&inner).unwrap()).collect();
    assert!(after.iter().all(|e| e[..4] == 0xc0de_0002u32.to_be_bytes()));
    // Interleave old in-flight and new packets: nothing is lost.
    for (o, n) in in_flight.iter().zip(&after) {
        assert_eq!(p.recv(n, InboundKind::RawEsp).unwrap(), inner);
        assert_eq!(p.recv(o, InboundKind::RawEsp).unwrap(), inner);
    }
    assert_eq!(p.sad_b.len().0, 2);
    p.sad_b.remove(p.in_id).unwrap();
    assert_eq!(
        p.recv(&in_flight[0], InboundKind::RawEsp),
        Err(Verdict::Drop(DropReason::NoSa))
    );
    assert_eq!(p.sad_b.inbound_by_id(new_in).unwrap().counters.snapshot().packets, 10);
}

#[test]
fn hostile_packets_never_panic_nor_touch_other_sas() {
    let mut p = pair(|p| p.keys = keys(EncAlg::AesCbc128, IntegAlg::HmacSha256_128, 3), false);
    // A second, unrelated inbound SA on B.
    let other = SaParams::new(
        0x0bad_0001,
        Direction::Inbound,
        keys(EncAlg::ChaCha20Poly1305, IntegAlg::None, 5),
        p.b_addr,
        p.a_addr,
    );
    let other_id = p.sad_b.install_inbound(&other).unwrap();
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 40);
    let good = p.send(&inner).unwrap();
    // Every truncation, and every single-bit flip, of a valid packet.
    for cut in 0..good.len() {
        let r = p.recv(&good[..cut], InboundKind::RawEsp);
        assert!(matches!(r, Err(Verdict::Drop(_))), "cut {cut}");
    }
    for i in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(matches!(p.recv(&bad, InboundKind::RawEsp), Err(Verdict::Drop(_))));
    }
    // Forged packets with the other SA's SPI and huge sequence numbers.
    for len in [0usize, 8, 24, 40, 200] {
        let mut f = vec![0xee; len.max(8)];
        f[..4].copy_from_slice(&0x0bad_0001u32.to_be_bytes());
        f[4..8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert!(matches!(p.recv(&f, InboundKind::Udp), Err(Verdict::Drop(_))));
    }
    let sa = p.sad_b.inbound_by_id(p.in_id).unwrap();
    assert_eq!(sa.replay.lock().unwrap().top(), 0);
    let o = p.sad_b.inbound_by_id(other_id).unwrap();
    assert_eq!(o.replay.lock().unwrap().top(), 0);
    // The genuine packet still goes through afterwards.
    assert_eq!(p.recv(&good, InboundKind::RawEsp).unwrap(), inner);
    let c = sa.counters.snapshot();
    assert!(c.dropped(DropReason::IcvFailure) > 0 && c.dropped(DropReason::Malformed) > 0);
}

#[test]
fn udp_4500_classification_and_keepalive() {
    let mut p = pair(|_| {}, false);
    let meta = PacketMeta {
        src: p.a_addr,
        dst: None,
        src_port: 4500,
    };
    let mut ka = PacketBuf::with_defaults();
    fastpath::worker::write_nat_keepalive(&mut ka).unwrap();
    assert_eq!(ka.data(), &[0xff]);
    assert_eq!(p.b.inbound_packet(InboundKind::Udp, &mut ka, &meta), Verdict::Keepalive);
    let mut ike = PacketBuf::from_slice(b"IKE-message").unwrap();
    fastpath::worker::add_non_esp_marker(&mut ike).unwrap();
    assert_eq!(p.b.inbound_packet(InboundKind::Udp, &mut ike, &meta), Verdict::Ike);
    assert_eq!(ike.data(), b"IKE-message");
    let mut unknown = PacketBuf::from_slice(&[1, 2, 3, 4, 0, 0, 0, 1, 9, 9]).unwrap();
    assert_eq!(
        p.b.inbound_packet(InboundKind::Udp, &mut unknown, &meta),
        Verdict::Drop(DropReason::NoSa)
    );
}

#[test]
fn policy_checks_and_pmtu() {
    let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
    let mut p = pair(
        |p| {
            p.path_mtu = 400;
            p.local_ts = vec![TrafficSelector::prefix("10.2.0.0".parse().unwrap(), 16).unwrap()];
            p.remote_ts = vec![TrafficSelector::prefix("10.1.0.0".parse().unwrap(), 16).unwrap()];
        },
        false,
    );
    let ok = udp_packet(v4("10.1.0.1"), v4("10.2.0.1"), 20);
    let esp = p.send(&ok).unwrap();
    p.recv(&esp, InboundKind::RawEsp).unwrap();
    // A peer tunnelling traffic outside the negotiated selectors.
    let spoof = udp_packet(v4("10.9.0.1"), v4("10.2.0.1"), 20);
    let esp = p.send(&spoof).unwrap();
    assert_eq!(
        p.recv(&esp, InboundKind::RawEsp),
        Err(Verdict::Drop(DropReason::PolicyMismatch))
    );
    // Too big for the path MTU.
    let big = udp_packet(v4("10.1.0.1"), v4("10.2.0.1"), 400);
    assert_eq!(p.send(&big), Err(Verdict::Drop(DropReason::Oversize)));
    // No policy for IPv6, malformed input.
    let v6 = udp_packet("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 10);
    assert_eq!(p.send(&v6), Err(Verdict::Drop(DropReason::NoPolicy)));
    assert_eq!(p.send(&[0x45, 0]), Err(Verdict::Drop(DropReason::Malformed)));
    let c = p.a.counters().outbound.snapshot();
    assert_eq!(c.dropped(DropReason::Oversize), 1);
    assert_eq!(c.dropped(DropReason::NoPolicy), 1);
}

#[test]
fn outbound_sa_pinning_redirects() {
    let (sad, _rx) = Sad::new(2);
    let mk = |spi| {
        SaParams::new(
            spi,
            Direction::Outbound,
            keys(EncAlg::AesGcm16_128, IntegAlg::None, 1),
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
        )
    };
    let id1 = sad.install_outbound(&mk(0x1000)).unwrap();
    let id2 = sad.install_outbound(&mk(0x1001)).unwrap();
    let sad = Arc::new(sad);
    let w1 = sad.outbound(id1).unwrap().worker;
    assert_ne!(w1, sad.outbound(id2).unwrap().worker);
    let spd = Spd::new();
    spd.insert(&Policy {
        local: any_ts(false),
        remote: any_ts(false),
        action: PolicyAction::Protect(id1),
        priority: 1,
    })
    .unwrap();
    let spd = Arc::new(spd);
    let mut other = Worker::new(1 - w1, sad.clone(), spd.clone());
    let mut owner = Worker::new(w1, sad, spd);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 5);
    let mut b = PacketBuf::from_slice(&inner).unwrap();
    assert_eq!(other.outbound_packet(&mut b), Verdict::Redirect(w1));
    assert_eq!(b.data(), &inner[..]);
    assert!(matches!(owner.outbound_packet(&mut b), Verdict::ToPeer { .. }));
}

#[test]
fn burst_api_matches_single_packets() {
    let mut p = pair(|_| {}, true);
    let inner = udp_packet("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 100);
    let mut bufs: Vec<PacketBuf> = (0..32).map(|_| PacketBuf::from_slice(&inner).unwrap()).collect();
    let mut v = vec![Verdict::Keepalive; 32];
    p.a.outbound_burst(&mut bufs, &mut v);
    assert!(v.iter().all(|v| matches!(v, Verdict::ToPeer { .. })));
    let meta = vec![
        PacketMeta {
            src: p.a_addr,
            dst: Some(p.b_addr),
            src_port: 0
        };
        32
    ];
    p.b.inbound_burst(InboundKind::RawEsp, &mut bufs, &meta, &mut v);
    assert!(v.iter().all(|v| *v == Verdict::ToTunnel));
    assert!(bufs.iter().all(|b| b.data() == &inner[..]));
}

#[test]
fn hard_lifetime_is_exact_within_a_burst() {
    let mut p = pair(
        |p| {
            p.lifetime = Lifetime {
                hard_packets: 5,
                ..Lifetime::default()
            }
        },
        false,
    );
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 10);
    let mut bufs: Vec<PacketBuf> = (0..8).map(|_| PacketBuf::from_slice(&inner).unwrap()).collect();
    let mut v = vec![Verdict::Keepalive; 8];
    p.a.outbound_burst(&mut bufs, &mut v);
    let sent = v.iter().filter(|v| matches!(v, Verdict::ToPeer { .. })).count();
    assert_eq!(sent, 5);
    assert!(v[5..].iter().all(|v| *v == Verdict::Drop(DropReason::Expired)));
    assert_eq!(p.ev_a.try_recv(), Ok(SaEvent::HardExpired { sa: p.out_id }));
    // The receiver, also limited to 5, takes the 5 sent packets in one burst.
    let meta = vec![
        PacketMeta {
            src: p.a_addr,
            dst: Some(p.b_addr),
            src_port: 0
        };
        5
    ];
    p.b.inbound_burst(InboundKind::RawEsp, &mut bufs[..5], &meta, &mut v[..5]);
    assert!(v[..5].iter().all(|v| *v == Verdict::ToTunnel));
    assert_eq!(p.ev_b.try_recv(), Ok(SaEvent::HardExpired { sa: p.in_id }));
}

#[test]
fn worker_builds_outer_headers_for_raw_ports() {
    for (v6, natt) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut p = pair(
            |p| {
                p.udp_encap = natt.then_some(UdpEncap {
                    local_port: 4500,
                    remote_port: 4501,
                })
            },
            v6,
        );
        let mut a = Worker::new(0, p.sad_a.clone(), p.spd_a.clone()).with_outer_headers(true);
        let inner = udp_packet(
            if v6 { "fd00::1" } else { "10.1.0.1" }.parse().unwrap(),
            if v6 { "fd00::2" } else { "10.2.0.1" }.parse().unwrap(),
            50,
        );
        let mut b = PacketBuf::from_slice(&inner).unwrap();
        assert!(matches!(a.outbound_packet(&mut b), Verdict::ToPeer { .. }));
        let outer = ip::flow_key(b.data()).unwrap();
        assert_eq!((outer.src, outer.dst), (p.a_addr, p.b_addr));
        let ip_len = if v6 { 40 } else { 20 };
        if natt {
            assert_eq!((outer.proto, outer.src_port, outer.dst_port), (17, 4500, 4501));
            let l4 = &b.data()[ip_len..];
            if v6 {
                assert_eq!(ip::l4_checksum(p.a_addr, p.b_addr, 17, l4), 0);
            }
        } else {
            assert_eq!(outer.proto, 50);
        }
        if !v6 {
            assert_eq!(ip::checksum(&b.data()[..20]), 0);
        }
        let skip = ip_len + if natt { 8 } else { 0 };
        let kind = if natt { InboundKind::Udp } else { InboundKind::RawEsp };
        let esp = b.data()[skip..].to_vec();
        assert_eq!(p.recv(&esp, kind).unwrap(), inner);
    }
}

/// The worker's flow cache never outlives a change of the SAD or SPD, and
/// colliding flows each get their own policy's SA.
#[test]
fn flow_cache_releases_removed_sas() {
    let mut p = pair(|_| {}, false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 64);
    p.send(&inner).unwrap();
    let sa = p.sad_a.outbound(p.out_id).unwrap();
    assert!(Arc::strong_count(&sa) >= 3, "SAD, flow cache and this test hold it");
    p.sad_a.remove(p.out_id).unwrap();
    // Bursts (even empty ones) sweep the stale entries away.
    let sweeps = fastpath::worker::FLOW_CACHE_SLOTS / fastpath::worker::FLOW_CACHE_SWEEP;
    for _ in 0..sweeps {
        p.a.outbound_burst::<PacketBuf>(&mut [], &mut []);
    }
    // The SAD's own reference goes through epoch reclamation: released once
    // no thread (other tests run in parallel) is pinned from before the removal.
    for _ in 0..100_000 {
        if Arc::strong_count(&sa) == 1 {
            break;
        }
        fastpath::epoch_table::reclaim();
        std::thread::yield_now();
    }
    assert_eq!(Arc::strong_count(&sa), 1, "only this test holds the removed SA");
}

#[test]
fn flow_cache_follows_sa_and_policy_changes() {
    let mut p = pair(|_| {}, false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 64);
    for _ in 0..3 {
        let esp = p.send(&inner).unwrap();
        assert_eq!(p.recv(&esp, InboundKind::RawEsp).unwrap(), inner);
    }
    // Removing the cached SA: the next packet is not encrypted with it.
    p.sad_a.remove(p.out_id).unwrap();
    assert_eq!(p.send(&inner), Err(Verdict::Drop(DropReason::NoSa)));

    // A new SA and a more specific policy; then the policy goes away again.
    let out2 = SaParams::new(
        0xc0de_0003,
        Direction::Outbound,
        keys(EncAlg::AesGcm16_128, IntegAlg::None, 3),
        p.a_addr,
        p.b_addr,
    );
    let id2 = p.sad_a.install_outbound(&out2).unwrap();
    let pol = p
        .spd_a
        .insert(&Policy {
            local: any_ts(false),
            remote: TrafficSelector::prefix("10.2.0.0".parse().unwrap(), 16).unwrap(),
            action: PolicyAction::Protect(id2),
            priority: 10,
        })
        .unwrap();
    assert_eq!(p.send(&inner).unwrap()[..4], 0xc0de_0003u32.to_be_bytes());
    assert_eq!(p.send(&inner).unwrap()[..4], 0xc0de_0003u32.to_be_bytes());
    p.spd_a.remove(pol).unwrap();
    // Back to the catch-all policy, whose SA is gone.
    assert_eq!(p.send(&inner), Err(Verdict::Drop(DropReason::NoSa)));

    // Many flows over two SAs (more flows than cache slots): each packet
    // goes out under its own policy's SA, in bursts.
    let (sad, _ev) = Sad::new(1);
    let spd = Spd::new();
    let mut ids = Vec::new();
    for spi in [0x1111_0000u32, 0x2222_0000] {
        let o = SaParams::new(
            spi,
            Direction::Outbound,
            keys(EncAlg::AesGcm16_128, IntegAlg::None, (spi >> 24) as u8),
            p.a_addr,
            p.b_addr,
        );
        ids.push(sad.install_outbound(&o).unwrap());
    }
    for (k, id) in ids.iter().enumerate() {
        let net = if k == 0 { "10.3.0.0" } else { "10.4.0.0" };
        spd.insert(&Policy {
            local: any_ts(false),
            remote: TrafficSelector::prefix(net.parse().unwrap(), 16).unwrap(),
            action: PolicyAction::Protect(*id),
            priority: 1,
        })
        .unwrap();
    }
    let mut w = Worker::new(0, Arc::new(sad), Arc::new(spd));
    let flows: Vec<(Vec<u8>, u32)> = (0..10_000u32)
        .map(|i| {
            let (net, spi) = if i % 3 == 0 {
                (0x0a03_0000, 0x1111_0000)
            } else {
                (0x0a04_0000, 0x2222_0000)
            };
            let dst = IpAddr::from(std::net::Ipv4Addr::from(net + (i & 0xffff)));
            (udp_packet("10.1.0.1".parse().unwrap(), dst, 16), spi)
        })
        .collect();
    for round in 0..2 {
        for chunk in flows.chunks(32) {
            let mut bufs: Vec<PacketBuf> = chunk
                .iter()
                .map(|(pkt, _)| PacketBuf::from_slice(pkt).unwrap())
                .collect();
            let mut v = vec![Verdict::Keepalive; bufs.len()];
            w.outbound_burst(&mut bufs, &mut v);
            for ((b, (_, spi)), v) in bufs.iter().zip(chunk).zip(&v) {
                assert!(matches!(v, Verdict::ToPeer { .. }), "round {round}: {v:?}");
                assert_eq!(b.data()[..4], spi.to_be_bytes());
            }
        }
    }
}

/// A burst mixing runs of one SA with keepalives, IKE, runts, unknown SPIs,
/// other destinations (known, unknown), replays and forgeries, over several
/// planning chunks: every verdict, output and counter is what the same
/// packets get one at a time.
#[test]
fn mixed_burst_matches_packet_by_packet() {
    let setup = |p: &mut SaParams| {
        p.udp_encap = Some(UdpEncap {
            local_port: 4500,
            remote_port: 4500,
        });
    };
    let mut src = pair(setup, false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 40);
    let esp: Vec<Vec<u8>> = (0..60).map(|_| src.send(&inner).unwrap()).collect();
    let other: IpAddr = "192.0.2.99".parse().unwrap();
    let (a_addr, b_addr) = (src.a_addr, src.b_addr);
    let meta = |dst: Option<IpAddr>| PacketMeta {
        src: a_addr,
        dst,
        src_port: 4500,
    };
    let mut burst: Vec<(Vec<u8>, PacketMeta)> = Vec::new();
    for (k, e) in esp.iter().enumerate() {
        burst.push((e.clone(), meta(Some(b_addr))));
        match k % 9 {
            1 => burst.push((vec![0xff], meta(Some(b_addr)))),
            2 => burst.push((vec![0, 0, 0, 0, 1, 2, 3], meta(Some(b_addr)))),
            3 => burst.push((vec![1, 2, 3], meta(Some(b_addr)))),
            4 => {
                let mut u = e.clone();
                u[0] ^= 0x40;
                burst.push((u, meta(Some(b_addr))));
            }
            5 => burst.push((esp[(k + 1) % esp.len()].clone(), meta(Some(other)))),
            6 => burst.push((esp[k / 2].clone(), meta(None))),
            7 => {
                let mut f = e.clone();
                let last = f.len() - 1;
                f[last] ^= 1;
                burst.push((f, meta(Some(b_addr))));
            }
            _ => {}
        }
        if k % 13 == 0 {
            burst.push((e.clone(), meta(Some(b_addr))));
        }
    }
    assert!(burst.len() > 100);
    let mut one = pair(setup, false);
    let mut all = pair(setup, false);
    let mut bufs: Vec<PacketBuf> = burst.iter().map(|(b, _)| PacketBuf::from_slice(b).unwrap()).collect();
    let metas: Vec<PacketMeta> = burst.iter().map(|(_, m)| *m).collect();
    let mut verdicts = vec![Verdict::Keepalive; bufs.len()];
    all.b.inbound_burst(InboundKind::Udp, &mut bufs, &metas, &mut verdicts);
    let mut kinds = std::collections::BTreeSet::new();
    for (k, (bytes, m)) in burst.iter().enumerate() {
        let mut b = PacketBuf::from_slice(bytes).unwrap();
        let v = one.b.inbound_packet(InboundKind::Udp, &mut b, m);
        assert_eq!(verdicts[k], v, "packet {k}");
        assert_eq!(bufs[k].data(), b.data(), "packet {k}");
        kinds.insert(format!("{v:?}"));
    }
    assert!(kinds.len() >= 6, "{kinds:?}");
    let (s1, s2) = (
        one.sad_b.inbound_by_id(one.in_id).unwrap().counters.snapshot(),
        all.sad_b.inbound_by_id(all.in_id).unwrap().counters.snapshot(),
    );
    assert_eq!(format!("{s1:?}"), format!("{s2:?}"));
    assert_eq!(format!("{:?}", one.b.counters()), format!("{:?}", all.b.counters()));
}

/// Sends `inner` from A; returns the ESP bytes and where the verdict sends them.
fn send_to(p: &mut Pair, inner: &[u8]) -> (Vec<u8>, IpAddr, IpAddr, Option<UdpEncap>) {
    let mut buf = PacketBuf::from_slice(inner).unwrap();
    match p.a.outbound_packet(&mut buf) {
        Verdict::ToPeer { src, dst, udp } => (buf.data().to_vec(), src, dst, udp),
        v => panic!("not sent: {v:?}"),
    }
}

/// Receives ESP-in-UDP at B from `src`:`port` sent to `dst`.
fn recv_from(p: &mut Pair, esp: &[u8], src: IpAddr, port: u16, dst: IpAddr) -> Verdict {
    let mut buf = PacketBuf::from_slice(esp).unwrap();
    let meta = PacketMeta {
        src,
        dst: Some(dst),
        src_port: port,
    };
    p.b.inbound_packet(InboundKind::Udp, &mut buf, &meta)
}

#[test]
fn move_path_in_place_keeps_sequence_window_and_counters() {
    let natt = UdpEncap {
        local_port: 4500,
        remote_port: 4500,
    };
    let mut p = pair(|p| p.udp_encap = Some(natt), false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 64);
    let (a, b) = (p.a_addr, p.b_addr);
    let before: Vec<Vec<u8>> = (0..5).map(|_| send_to(&mut p, &inner).0).collect();
    // Both ends move: A to a new address and port behind a NAT, B to a new address.
    let (a2, b2): (IpAddr, IpAddr) = ("198.51.100.7".parse().unwrap(), "203.0.113.9".parse().unwrap());
    let moved = UdpEncap {
        local_port: 4500,
        remote_port: 4500,
    };
    p.sad_a
        .move_path(
            p.out_id,
            &OuterPath {
                local: a2,
                remote: b2,
                udp_encap: Some(moved),
            },
        )
        .unwrap();
    p.sad_b
        .move_path(
            p.in_id,
            &OuterPath {
                local: b2,
                remote: a2,
                udp_encap: Some(UdpEncap {
                    local_port: 4500,
                    remote_port: 61000,
                }),
            },
        )
        .unwrap();
    let (esp, src, dst, udp) = send_to(&mut p, &inner);
    assert_eq!((src, dst, udp), (a2, b2, Some(moved)));
    // The same SA: the sequence number goes on (6, not 1) and the SPI is the same.
    assert_eq!(&esp[..4], &0xc0de_0001u32.to_be_bytes());
    assert_eq!(u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]), 6);
    // B takes packets at its new address only; the replay window carried on.
    assert_eq!(recv_from(&mut p, &esp, a2, 61000, b2), Verdict::ToTunnel);
    assert_eq!(
        recv_from(&mut p, &before[4], a2, 61000, b),
        Verdict::Drop(DropReason::NoSa)
    );
    assert_eq!(recv_from(&mut p, &before[4], a2, 61000, b2), Verdict::ToTunnel);
    assert_eq!(
        recv_from(&mut p, &before[4], a2, 61000, b2),
        Verdict::Drop(DropReason::Replay)
    );
    let s = p.sad_b.inbound_by_id(p.in_id).unwrap();
    assert_eq!(s.path().local, b2);
    assert_eq!(s.counters.snapshot().packets, 2);
    assert_eq!(p.sad_a.outbound(p.out_id).unwrap().counters.snapshot().packets, 6);
    // Moving keeps the SAD's contents and raises no lifetime event.
    assert_eq!((p.sad_a.len(), p.sad_b.len()), ((0, 1), (1, 0)));
    assert!(p.ev_a.try_recv().is_err() && p.ev_b.try_recv().is_err());
    let _ = a;
}

#[test]
fn move_path_to_another_family_and_refusals() {
    let mut p = pair(|_| {}, false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 64);
    let out = p.sad_a.outbound(p.out_id).unwrap();
    let v4_max = out.max_esp_len();
    let (l6, r6): (IpAddr, IpAddr) = ("2001:db8::a".parse().unwrap(), "2001:db8::b".parse().unwrap());
    let v6 = OuterPath {
        local: l6,
        remote: r6,
        udp_encap: None,
    };
    p.sad_a.move_path(p.out_id, &v6).unwrap();
    assert_eq!(out.max_esp_len(), v4_max - 20, "IPv6 outer header is 20 bytes longer");
    let (_, src, dst, udp) = send_to(&mut p, &inner);
    assert_eq!((src, dst, udp), (l6, r6, None));
    let mixed = OuterPath {
        local: l6,
        remote: p.b_addr,
        udp_encap: None,
    };
    assert_eq!(p.sad_a.move_path(p.out_id, &mixed), Err(SadError::FamilyMismatch));
    assert_eq!(
        p.sad_a.move_path(SaId(0xdead), &v6),
        Err(SadError::NotFound(SaId(0xdead)))
    );
}

#[test]
fn esp_rebinding_is_reported_once_and_only_for_authentic_packets() {
    let mut p = pair(
        |p| {
            p.udp_encap = Some(UdpEncap {
                local_port: 4500,
                remote_port: 4500,
            })
        },
        false,
    );
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 64);
    let (a, b) = (p.a_addr, p.b_addr);
    let e1 = send_to(&mut p, &inner).0;
    assert_eq!(recv_from(&mut p, &e1, a, 4500, b), Verdict::ToTunnel);
    assert!(p.ev_b.try_recv().is_err(), "no report from the known source");
    // A forged packet from a new source: refused, nothing reported.
    let mut forged = send_to(&mut p, &inner).0;
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        recv_from(&mut p, &forged, a, 40000, b),
        Verdict::Drop(DropReason::IcvFailure)
    );
    assert!(
        p.ev_b.try_recv().is_err(),
        "an unauthenticated source is never reported"
    );
    // Authentic packets from a new NAT port: reported once.
    for _ in 0..3 {
        let e = send_to(&mut p, &inner).0;
        assert_eq!(recv_from(&mut p, &e, a, 40000, b), Verdict::ToTunnel);
    }
    assert_eq!(
        p.ev_b.try_recv().unwrap(),
        SaEvent::PeerMoved {
            sa: p.in_id,
            source: std::net::SocketAddr::new(a, 40000)
        }
    );
    assert!(p.ev_b.try_recv().is_err(), "reported once");
}

/// ESP without an SA here whose SPI range another node serves is handed
/// back unchanged as [`Verdict::Foreign`], not dropped; an SA here wins over
/// the range, and other unknown SPIs are still dropped as `NoSa`.
#[test]
fn unknown_spis_of_foreign_ranges_are_handed_back_for_forwarding() {
    use fastpath::worker::ForeignRanges;
    let mut p = pair(|_| {}, false);
    let inner = udp_packet("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap(), 40);
    let esp = p.send(&inner).unwrap();
    // 0xc0de_0001 is in range 48 (top six bits); these are ranges 32 and 33.
    let mut foreign_spi = esp.clone();
    foreign_spi[0] ^= 0x40;
    let mut unknown_spi = esp.clone();
    unknown_spi[0] ^= 0x44;
    let ranges = Arc::new(ForeignRanges::new(6));
    ranges.set((1 << 32) | (1 << 48));
    let mut b = Worker::new(9, p.sad_b.clone(), Arc::new(Spd::new())).with_foreign_ranges(ranges.clone());
    let meta = PacketMeta {
        src: p.a_addr,
        dst: Some(p.b_addr),
        src_port: 0,
    };
    let mut buf = PacketBuf::from_slice(&foreign_spi).unwrap();
    assert_eq!(b.inbound_packet(InboundKind::RawEsp, &mut buf, &meta), Verdict::Foreign);
    assert_eq!(buf.data(), &foreign_spi[..], "handed back unchanged");
    let mut buf = PacketBuf::from_slice(&unknown_spi).unwrap();
    assert_eq!(
        b.inbound_packet(InboundKind::RawEsp, &mut buf, &meta),
        Verdict::Drop(DropReason::NoSa)
    );
    let mut buf = PacketBuf::from_slice(&esp).unwrap();
    assert_eq!(
        b.inbound_packet(InboundKind::RawEsp, &mut buf, &meta),
        Verdict::ToTunnel
    );
    assert_eq!(b.counters().inbound.snapshot().dropped(DropReason::NoSa), 1);
    // The set changes while the worker runs.
    ranges.set(0);
    let mut buf = PacketBuf::from_slice(&foreign_spi).unwrap();
    assert_eq!(
        b.inbound_packet(InboundKind::RawEsp, &mut buf, &meta),
        Verdict::Drop(DropReason::NoSa)
    );
}

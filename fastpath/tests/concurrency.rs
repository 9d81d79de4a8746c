//! The SAD's lock-free read path under concurrent control-plane writes: a
//! worker thread decrypts a continuous stream while the control plane rekeys
//! the tunnel (old and new inbound SAs side by side) and churns thousands of
//! unrelated SAs through the table (growing, tombstones, rebuilds). No packet
//! of an installed SA may be dropped, and the outbound side keeps finding its
//! SA across `replace_outbound`.

use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::sad::{Direction, SaId, SaParams, Sad};
use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use zeroize::Zeroizing;

fn keys(seed: u8) -> CipherKeys {
    let enc = EncAlg::AesGcm16_128;
    CipherKeys {
        enc,
        integ: IntegAlg::None,
        enc_key: Zeroizing::new((0..enc.key_material_len()).map(|i| i as u8 ^ seed).collect()),
        integ_key: Zeroizing::new(Vec::new()),
    }
}

/// Minimal IPv4 UDP packet (the tunnel does not check inner checksums).
fn inner_packet(n: u32) -> Vec<u8> {
    let mut p = vec![0u8; 28 + 16];
    p[0] = 0x45;
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 1, 0, 1]);
    p[16..20].copy_from_slice(&[10, 2, 0, 1]);
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[24..26].copy_from_slice(&24u16.to_be_bytes());
    p[28..32].copy_from_slice(&n.to_be_bytes());
    p
}

fn params(spi: u32, dir: Direction, seed: u8, a: IpAddr, b: IpAddr) -> SaParams {
    let (local, remote) = if dir == Direction::Outbound { (a, b) } else { (b, a) };
    SaParams::new(spi, dir, keys(seed), local, remote)
}

#[test]
fn rekeys_and_churn_under_traffic_lose_nothing() {
    let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let (sad_a, _ev_a) = Sad::new(1);
    let (sad_b, _ev_b) = Sad::new(1);
    let (sad_a, sad_b) = (Arc::new(sad_a), Arc::new(sad_b));
    let spd_a = Arc::new(Spd::new());
    let mut out_id = sad_a
        .install_outbound(&params(0x1000, Direction::Outbound, 1, a, b))
        .unwrap();
    let mut in_id = sad_b
        .install_inbound(&params(0x1000, Direction::Inbound, 1, a, b))
        .unwrap();
    let any = TrafficSelector::prefix("0.0.0.0".parse().unwrap(), 0).unwrap();
    spd_a
        .insert(&Policy {
            local: any,
            remote: any,
            action: PolicyAction::Protect(out_id),
            priority: 1,
        })
        .unwrap();
    let mut sender = Worker::new(0, sad_a.clone(), spd_a.clone());

    // Receiver thread: bursts of 8 ESP packets; counts what it processed.
    let (tx, rx) = sync_channel::<Vec<Vec<u8>>>(64);
    let processed = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (sad_b, processed) = (sad_b.clone(), processed.clone());
        std::thread::spawn(move || {
            let mut w = Worker::new(0, sad_b, Arc::new(Spd::new()));
            let meta = PacketMeta {
                src: a,
                dst: Some(b),
                src_port: 0,
            };
            let mut bad = 0u64;
            for burst in rx {
                let mut bufs: Vec<PacketBuf> = burst.iter().map(|e| PacketBuf::from_slice(e).unwrap()).collect();
                let metas = vec![meta; bufs.len()];
                let mut verdicts = vec![Verdict::Keepalive; bufs.len()];
                w.inbound_burst(InboundKind::RawEsp, &mut bufs, &metas, &mut verdicts);
                bad += verdicts.iter().filter(|v| **v != Verdict::ToTunnel).count() as u64;
                processed.fetch_add(bufs.len() as u64, Ordering::Release);
            }
            bad
        })
    };

    // Churn thread: unrelated inbound SAs come and go (table growth, tombstones, rebuilds).
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (sad_b, stop) = (sad_b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<SaId> = (0..500u32)
                    .map(|i| {
                        let spi = 0x10_0000 + (rounds % 4) * 1000 + i;
                        sad_b
                            .install_inbound(&params(spi, Direction::Inbound, 7, a, b))
                            .unwrap()
                    })
                    .collect();
                for id in ids {
                    sad_b.remove(id).unwrap();
                }
                rounds += 1;
            }
            rounds
        })
    };

    let mut sent = 0u64;
    let send_round = |sender: &mut Worker, sent: &mut u64| {
        for _ in 0..25 {
            let burst: Vec<Vec<u8>> = (0..8)
                .map(|k| {
                    let mut buf = PacketBuf::from_slice(&inner_packet(k)).unwrap();
                    match sender.outbound_packet(&mut buf) {
                        Verdict::ToPeer { .. } => buf.data().to_vec(),
                        v => panic!("outbound verdict {v:?}"),
                    }
                })
                .collect();
            *sent += burst.len() as u64;
            tx.send(burst).unwrap();
        }
    };
    for rekey in 0..20u32 {
        send_round(&mut sender, &mut sent);
        // Rekey: new inbound SA beside the old one, outbound switched, old
        // inbound removed only once everything sent under it was processed.
        let spi = 0x2000 + rekey;
        let seed = 2 + rekey as u8;
        let new_in = sad_b
            .install_inbound(&params(spi, Direction::Inbound, seed, a, b))
            .unwrap();
        out_id = sad_a
            .replace_outbound(out_id, &params(spi, Direction::Outbound, seed, a, b), &spd_a)
            .unwrap();
        while processed.load(Ordering::Acquire) < sent {
            std::thread::yield_now();
        }
        sad_b.remove(in_id).unwrap();
        in_id = new_in;
    }
    send_round(&mut sender, &mut sent);
    drop(tx);
    let bad = receiver.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let rounds = churn.join().unwrap();
    assert_eq!(bad, 0, "packets dropped during rekeys");
    assert_eq!(processed.load(Ordering::Relaxed), sent);
    assert!(rounds > 0);
    assert_eq!(sad_b.len(), (1, 0));
    assert_eq!(sad_b.inbound_by_id(in_id).unwrap().counters.snapshot().packets, 200);
}

/// SPD lookups without locks: a flow whose policy is rekeyed back and forth
/// always finds it (old or new SA, never nothing) while unrelated policies
/// are added and removed around it.
#[test]
fn spd_lookups_during_rekeys_and_churn() {
    use fastpath::ip::FlowKey;
    let spd = Arc::new(Spd::new());
    let any = TrafficSelector::prefix("0.0.0.0".parse().unwrap(), 0).unwrap();
    let stable = TrafficSelector::prefix("10.9.0.0".parse().unwrap(), 16).unwrap();
    spd.insert(&Policy {
        local: any,
        remote: stable,
        action: PolicyAction::Protect(SaId(1)),
        priority: 5,
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (spd, stop) = (spd.clone(), stop.clone());
        std::thread::spawn(move || {
            let flow = FlowKey {
                src: "192.168.1.1".parse().unwrap(),
                dst: "10.9.3.4".parse().unwrap(),
                proto: 17,
                src_port: 1,
                dst_port: 2,
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = spd.lookup(&flow).expect("stable policy missing");
                assert!(matches!(m.action, PolicyAction::Protect(SaId(1 | 2))), "{m:?}");
                n += 1;
            }
            n
        })
    };
    for round in 0..300u64 {
        let (old, new) = if round % 2 == 0 { (1, 2) } else { (2, 1) };
        assert_eq!(spd.replace_sa(SaId(old), SaId(new)), 1);
        let ids: Vec<_> = (0..50u32)
            .map(|i| {
                let net = std::net::Ipv4Addr::from(0x0a09_0000 + (i << 8));
                spd.insert(&Policy {
                    local: any,
                    remote: TrafficSelector::prefix(IpAddr::V4(net), 24).unwrap(),
                    action: PolicyAction::Protect(SaId(1000 + u64::from(i))),
                    priority: 9,
                })
                .unwrap()
            })
            .collect();
        for id in ids {
            spd.remove(id).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(spd.len(), 1);
}

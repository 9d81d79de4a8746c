//! Socket and TUN backends, each test in its own network namespace
//! (needs root: CAP_SYS_ADMIN and CAP_NET_ADMIN; without it each test says
//! it is skipped and passes, unless `IRONSA_TESTS_REQUIRE_ALL=1`).

use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::io::netns::unshare_network_namespace;
use fastpath::io::raw::RawEspIo;
use fastpath::io::tun::Tun;
use fastpath::io::udp::UdpIo;
use fastpath::ip;
use fastpath::sad::{Direction, SaParams, Sad, UdpEncap};
use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// Moves the test's thread into a new network namespace with loopback up;
/// `false` (the test returns) when this user may not create one.
fn fresh_netns() -> bool {
    match unshare_network_namespace() {
        Ok(()) => {
            sh("ip link set lo up");
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let test = std::thread::current().name().unwrap_or("test").to_string();
            assert_ne!(
                std::env::var("IRONSA_TESTS_REQUIRE_ALL").as_deref(),
                Ok("1"),
                "{test}: needs root for a network namespace ({e})"
            );
            // Straight to stderr (the test harness captures `eprintln!` of
            // passing tests), in one write so that parallel tests do not cut the line.
            let line = format!("skipped: {test}: needs root (a network namespace: {e})\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            false
        }
        Err(e) => panic!("unshare(CLONE_NEWNET): {e}"),
    }
}

fn meta0() -> PacketMeta {
    PacketMeta {
        src: IpAddr::from([0, 0, 0, 0]),
        dst: None,
        src_port: 0,
    }
}

#[test]
fn udp_batches_on_loopback() {
    if !fresh_netns() {
        return;
    }
    let mut a = UdpIo::bind("127.0.0.1:0".parse().unwrap(), 64).unwrap();
    let mut b = UdpIo::bind("127.0.0.1:0".parse().unwrap(), 64).unwrap();
    b.socket().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let payloads: Vec<Vec<u8>> = (0..48u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
    let dst = b.local_addr();
    let sent = a.send_burst(payloads.iter().map(|p| (&p[..], dst))).unwrap();
    assert_eq!(sent, 48);
    let mut bufs: Vec<PacketBuf> = (0..64).map(|_| PacketBuf::with_defaults()).collect();
    let mut meta = vec![meta0(); 64];
    let mut got = 0;
    while got < 48 {
        let n = b.recv_burst(&mut bufs[got..], &mut meta[got..], true).unwrap();
        assert!(n > 0);
        got += n;
    }
    for (i, (buf, m)) in bufs[..48].iter().zip(&meta).enumerate() {
        assert_eq!(buf.data(), &payloads[i][..]);
        assert_eq!(SocketAddr::new(m.src, m.src_port), a.local_addr());
        assert_eq!(m.dst, Some(IpAddr::from([127, 0, 0, 1])));
    }
    // Nothing more queued: non-blocking receive says so.
    let e = b.recv_burst(&mut bufs, &mut meta, false).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
}

#[test]
fn udp_gso_send_and_gro_receive_keep_datagrams_apart() {
    if !fresh_netns() {
        return;
    }
    let mut a = UdpIo::bind("127.0.0.1:0".parse().unwrap(), 256).unwrap();
    let mut b = UdpIo::bind("127.0.0.1:0".parse().unwrap(), 64).unwrap();
    a.enable_gso();
    b.enable_gro(2).unwrap();
    b.socket().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dst = b.local_addr();
    // Trains of equal-size datagrams with a shorter last one (as the
    // segments of a TCP super-packet), a lone odd size, and a train longer
    // than one GSO message.
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for i in 0..40u8 {
        payloads.push(vec![i; 1200]);
    }
    payloads.push(vec![0xaa; 300]);
    payloads.push(vec![0xbb; 77]);
    for i in 0..100u8 {
        payloads.push(vec![i ^ 0x55; 64]);
    }
    let mut sent = 0;
    while sent < payloads.len() {
        let n = a.send_burst(payloads[sent..].iter().map(|p| (&p[..], dst))).unwrap();
        assert!(n > 0);
        sent += n;
    }
    let mut bufs: Vec<PacketBuf> = (0..64).map(|_| PacketBuf::with_defaults()).collect();
    let mut meta = vec![meta0(); 64];
    let mut got: Vec<Vec<u8>> = Vec::new();
    while got.len() < payloads.len() {
        let n = b.recv_burst(&mut bufs, &mut meta, true).unwrap();
        assert!(n > 0);
        for (buf, m) in bufs[..n].iter().zip(&meta) {
            assert_eq!(SocketAddr::new(m.src, m.src_port), a.local_addr());
            got.push(buf.data().to_vec());
        }
    }
    assert_eq!(got, payloads);
    let e = b.recv_burst(&mut bufs, &mut meta, false).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
}

#[test]
fn raw_esp_on_loopback() {
    if !fresh_netns() {
        return;
    }
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut rx = RawEspIo::open(lo, 16).unwrap();
    let mut tx = RawEspIo::open(lo, 16).unwrap();
    rx.socket().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let esp = [0x11u8, 0x22, 0x33, 0x44, 0, 0, 0, 1, 0xaa, 0xbb];
    assert_eq!(tx.send_burst([(&esp[..], lo), (&esp[..], lo)]).unwrap(), 2);
    let mut bufs: Vec<PacketBuf> = (0..16).map(|_| PacketBuf::with_defaults()).collect();
    let mut meta = vec![meta0(); 16];
    let mut got = 0;
    while got < 2 {
        got += rx.recv_burst(&mut bufs[got..], &mut meta[got..], true).unwrap();
    }
    assert_eq!(bufs[0].data(), &esp);
    assert_eq!((meta[0].src, meta[0].dst), (lo, Some(lo)));
}

#[test]
fn tun_to_esp_over_udp_and_back() {
    if !fresh_netns() {
        return;
    }
    let mut tun = Tun::open("ironsa-t0", false).unwrap();
    assert_eq!(tun.name(), "ironsa-t0");
    sh("ip addr add 10.77.0.1/24 dev ironsa-t0 && ip link set ironsa-t0 up");
    // Gateway A encrypts what the kernel routes into the TUN, B decrypts.
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut udp_a = UdpIo::bind("127.0.0.1:0".parse().unwrap(), 32).unwrap();
    let mut udp_b = UdpIo::bind("127.0.0.1:0".parse().unwrap(), 32).unwrap();
    udp_b.socket().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let keys = CipherKeys {
        enc: EncAlg::AesGcm16_256,
        integ: IntegAlg::None,
        enc_key: Zeroizing::new(vec![3u8; 36]),
        integ_key: Zeroizing::new(Vec::new()),
    };
    let mut out = SaParams::new(0x4500_0001, Direction::Outbound, keys, lo, lo);
    out.udp_encap = Some(UdpEncap {
        local_port: udp_a.local_addr().port(),
        remote_port: udp_b.local_addr().port(),
    });
    let mut inb = out.clone();
    inb.direction = Direction::Inbound;
    let (sad_a, _ea) = Sad::new(1);
    let (sad_b, _eb) = Sad::new(1);
    let id = sad_a.install_outbound(&out).unwrap();
    sad_b.install_inbound(&inb).unwrap();
    let spd = Spd::new();
    spd.insert(&Policy {
        local: TrafficSelector::prefix("10.77.0.0".parse().unwrap(), 24).unwrap(),
        remote: TrafficSelector::prefix("10.77.0.0".parse().unwrap(), 24).unwrap(),
        action: PolicyAction::Protect(id),
        priority: 1,
    })
    .unwrap();
    let mut wa = Worker::new(0, Arc::new(sad_a), Arc::new(spd));
    let mut wb = Worker::new(0, Arc::new(sad_b), Arc::new(Spd::new()));

    let app = UdpSocket::bind("10.77.0.1:0").unwrap();
    for i in 0..5u8 {
        app.send_to(&[i; 100], "10.77.0.2:9999").unwrap();
    }
    // Read the five datagrams from the TUN (the kernel may interleave other
    // packets such as IPv6 router solicitations; skip those).
    let mut bufs: Vec<PacketBuf> = Vec::new();
    while bufs.len() < 5 {
        let mut b = PacketBuf::with_defaults();
        tun.recv(&mut b).unwrap();
        if ip::flow_key(b.data()).is_some_and(|k| k.dst_port == 9999) {
            bufs.push(b);
        }
    }
    let originals: Vec<Vec<u8>> = bufs.iter().map(|b| b.data().to_vec()).collect();
    let mut v = vec![Verdict::Keepalive; 5];
    wa.outbound_burst(&mut bufs, &mut v);
    assert!(v.iter().all(|v| matches!(v, Verdict::ToPeer { udp: Some(_), .. })));
    assert_eq!(udp_a.send_verdicts(&bufs, &v).unwrap(), 5);

    let mut rbufs: Vec<PacketBuf> = (0..8).map(|_| PacketBuf::with_defaults()).collect();
    let mut meta = vec![meta0(); 8];
    let mut got = 0;
    while got < 5 {
        got += udp_b.recv_burst(&mut rbufs[got..], &mut meta[got..], true).unwrap();
    }
    let mut v = vec![Verdict::Keepalive; 5];
    wb.inbound_burst(InboundKind::Udp, &mut rbufs[..5], &meta[..5], &mut v);
    assert!(v.iter().all(|v| *v == Verdict::ToTunnel));
    for (b, o) in rbufs.iter().zip(&originals) {
        assert_eq!(b.data(), &o[..]);
    }
    // Deliver a reply through the TUN to the application socket.
    let reply = {
        let mut b = PacketBuf::with_defaults();
        b.set_data(&[0, 0, 0, 0, 0, 0, 0, 0, b'o', b'k']).unwrap();
        let app_port = app.local_addr().unwrap().port();
        let (s, d): (IpAddr, IpAddr) = ("10.77.0.2".parse().unwrap(), "10.77.0.1".parse().unwrap());
        let dd = b.data_mut();
        dd[0..2].copy_from_slice(&9999u16.to_be_bytes());
        dd[2..4].copy_from_slice(&app_port.to_be_bytes());
        dd[4..6].copy_from_slice(&10u16.to_be_bytes());
        let c = ip::l4_checksum(s, d, 17, dd);
        dd[6..8].copy_from_slice(&c.to_be_bytes());
        ip::prepend_ip_header(&mut b, s, d, 17).unwrap();
        b.data().to_vec()
    };
    tun.send(&reply).unwrap();
    app.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = [0u8; 16];
    let (n, from) = app.recv_from(&mut r).unwrap();
    assert_eq!(&r[..n], b"ok");
    assert_eq!(from, "10.77.0.2:9999".parse().unwrap());
}

#[test]
fn tun_multi_queue_opens_several_queues() {
    if !fresh_netns() {
        return;
    }
    let q1 = Tun::open("ironsa-mq", true).unwrap();
    let q2 = Tun::open("ironsa-mq", true).unwrap();
    assert_eq!(q1.name(), q2.name());
    q1.set_nonblocking(true).unwrap();
    let mut q1 = q1;
    let mut b = [PacketBuf::with_defaults()];
    let e = q1.recv_burst(&mut b).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    assert!(Tun::open("", false).is_err());
    assert!(Tun::open("a-name-that-is-too-long", false).is_err());
}

//! DPDK backend integration test (`harness = false`): EAL initialises once
//! per process, so every case runs in sequence here; prints `N passed, M
//! failed` and exits non-zero on failure.
//!
//! EAL runs without hugepages, PCI or shared files, on virtual devices:
//! `net_ring` loopback ports (what a port sends comes back on its receive
//! queue), `net_af_packet` on a veth pair whose other end is in a network
//! namespace created here (needs root), `crypto_aesni_gcm`, `crypto_aesni_mb`
//! and `crypto_openssl` crypto devices (lookaside and synchronous CPU crypto).

use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::dpdk::backend::{DpdkBackend, IkeDatagram, PollLoop, Started};
use fastpath::dpdk::frame::{ETH_HDR_LEN, ETHERTYPE_IPV4};
use fastpath::dpdk::probe::probe_with;
use fastpath::dpdk::profile::HwProfile;
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::ip;
use fastpath::sad::{Direction, SaParams, Sad, UdpEncap};
use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use fastpath::stats::DropReason;
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker};
use ffi::{Eal, Mbuf};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

type CaseResult = Result<(), String>;
/// A test case body.
type Case = Box<dyn Fn() -> CaseResult>;

fn ensure(cond: bool, msg: impl Into<String>) -> CaseResult {
    if cond { Ok(()) } else { Err(msg.into()) }
}

fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

fn ipa(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Names of the veth pair and namespace of this run.
struct NetNs {
    ns: String,
    dp: String,
    peer: String,
}

impl NetNs {
    fn new() -> Self {
        let pid = std::process::id() % 100_000;
        Self {
            ns: format!("isa-t{pid}"),
            dp: format!("isd{pid}"),
            peer: format!("isn{pid}"),
        }
    }

    fn setup(&self) -> CaseResult {
        let (ns, dp, peer) = (&self.ns, &self.dp, &self.peer);
        for cmd in [
            format!("ip netns add {ns}"),
            format!("ip link add {dp} type veth peer name {peer}"),
            format!("ip link set {peer} netns {ns}"),
            // Less noise on the DPDK side (router solicitations); optional.
            format!("echo 1 > /proc/sys/net/ipv6/conf/{dp}/disable_ipv6 || true"),
            format!("ip link set {dp} up"),
            format!("ip -n {ns} link set lo up"),
            format!("ip -n {ns} addr add 192.168.77.2/24 dev {peer}"),
            format!("ip -n {ns} link set {peer} up"),
            format!("ip -n {ns} route add 10.2.0.0/16 via 192.168.77.1"),
        ] {
            sh(&cmd)?;
        }
        Ok(())
    }

    fn cleanup(&self) {
        let _ = sh(&format!("ip link del {}", self.dp));
        let _ = sh(&format!("ip netns del {}", self.ns));
    }

    /// Runs `f` on a thread inside the namespace (sockets it creates stay there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).map_err(e)?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a valid namespace fd; affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "netns thread panicked".to_string())?
    }
}

fn sh(cmd: &str) -> CaseResult {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(e)?;
    ensure(
        out.status.success(),
        format!("`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
    )
}

fn gcm_keys(seed: u8) -> CipherKeys {
    CipherKeys {
        enc: EncAlg::AesGcm16_128,
        integ: IntegAlg::None,
        enc_key: Zeroizing::new((0..20).map(|i| seed.wrapping_mul(31).wrapping_add(i)).collect()),
        integ_key: Zeroizing::new(Vec::new()),
    }
}

fn gcm256_keys(seed: u8) -> CipherKeys {
    CipherKeys {
        enc: EncAlg::AesGcm16_256,
        integ: IntegAlg::None,
        enc_key: Zeroizing::new((0..36).map(|i| seed ^ (i * 7)).collect()),
        integ_key: Zeroizing::new(Vec::new()),
    }
}

fn cbc_keys(seed: u8) -> CipherKeys {
    CipherKeys {
        enc: EncAlg::AesCbc128,
        integ: IntegAlg::HmacSha256_128,
        enc_key: Zeroizing::new(vec![seed; 16]),
        integ_key: Zeroizing::new(vec![seed ^ 0x5a; 32]),
    }
}

/// An inner IPv4/UDP packet of `len` bytes with a valid checksum.
fn udp_packet(src: &str, dst: &str, sport: u16, dport: u16, len: usize, fill: u8) -> Vec<u8> {
    let body: Vec<u8> = (0..len.saturating_sub(28))
        .map(|i| fill.wrapping_add(i as u8))
        .collect();
    let mut b = PacketBuf::from_slice(&body).expect("buffer");
    ip::prepend_udp_header(&mut b, sport, dport).expect("udp");
    let c = ip::l4_checksum(ipa(src), ipa(dst), ip::IPPROTO_UDP, b.data());
    b.data_mut()[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    ip::prepend_ip_header(&mut b, ipa(src), ipa(dst), ip::IPPROTO_UDP).expect("ip");
    b.data().to_vec()
}

/// An Ethernet frame around an IP packet.
fn eth(dst: [u8; 6], ip_pkt: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f.extend_from_slice(ip_pkt);
    f
}

/// A DPDK profile for one port and crypto mode.
fn profile(name: &str, port: &str, addr: &str, crypto: &str) -> Result<HwProfile, String> {
    HwProfile::from_toml(&format!(
        r#"
        name = "{name}"
        backend = "dpdk"
        eal_args = ["-l", "0"]
        queues = 1
        [[ports]]
        name = "{port}"
        role = "both"
        addresses = ["{addr}"]
        [offloads]
        rss = false
        [crypto]
        {crypto}
        [sizing]
        mbufs = 4095
        mbuf_cache = 64
        descriptors = 512
        ring = 1024
        "#
    ))
    .map_err(e)
}

/// One started single-loop backend with its SAD/SPD.
struct Rig {
    backend: DpdkBackend,
    lp: PollLoop,
    ike: Receiver<IkeDatagram>,
    tap: Receiver<(u16, Vec<u8>)>,
    port: u16,
    mac: [u8; 6],
    sad: Arc<Sad>,
    spd: Arc<Spd>,
}

impl Rig {
    fn start(eal: Eal, p: &HwProfile) -> Result<Rig, String> {
        let (sad, _events) = Sad::new(1);
        let (sad, spd) = (Arc::new(sad), Arc::new(Spd::new()));
        let Started {
            backend,
            mut loops,
            ike,
        } = DpdkBackend::start(eal, p, sad.clone(), spd.clone()).map_err(e)?;
        let lp = loops.pop().ok_or("no poll loop")?;
        let tap = backend.tap();
        let name = &p.ports[0].name;
        let port = ffi::EthPort::by_name(&eal, name).map_err(e)?.id();
        let mac = backend.port_mac(name).ok_or("no port mac")?;
        Ok(Rig {
            backend,
            lp,
            ike,
            tap,
            port,
            mac,
            sad,
            spd,
        })
    }

    /// Transmits frames on the port (the loopback brings them back).
    fn inject(&mut self, frames: &[Vec<u8>]) -> CaseResult {
        let mut v: Vec<Mbuf> = Vec::new();
        for f in frames {
            let mut m = self.backend.pool().alloc().map_err(e)?;
            m.extend_from_slice(f).map_err(e)?;
            v.push(m);
        }
        let n = self.lp.transmit(self.port, &mut v);
        ensure(n == frames.len(), "inject: not all frames queued")
    }

    /// Sends IKE `payload` back to the sender of `to` (through the backend's
    /// IKE queue), after dropping the frames tapped so far.
    fn reply(&mut self, to: &IkeDatagram, payload: Vec<u8>) -> CaseResult {
        while self.tap.try_recv().is_ok() {}
        self.backend
            .ike_sender()
            .send(IkeDatagram {
                local: to.local,
                remote: to.remote,
                payload,
            })
            .map_err(e)
    }

    /// Polls until `want` transmitted frames match `pred` (or 3 s pass);
    /// returns them without their Ethernet header, in order.
    fn collect(&mut self, want: usize, pred: impl Fn(&[u8]) -> bool) -> Result<Vec<Vec<u8>>, String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while got.len() < want && Instant::now() < deadline {
            self.lp.poll_once();
            while let Ok((_, f)) = self.tap.try_recv() {
                if f.len() > ETH_HDR_LEN && pred(&f[ETH_HDR_LEN..]) {
                    got.push(f[ETH_HDR_LEN..].to_vec());
                }
            }
        }
        ensure(got.len() == want, format!("collected {} of {want} frames", got.len()))?;
        // Let the loopback copies drain.
        for _ in 0..20 {
            self.lp.poll_once();
        }
        while self.tap.try_recv().is_ok() {}
        Ok(got)
    }
}

fn ipv4_src_dst_proto(p: &[u8]) -> Option<(IpAddr, IpAddr, u8)> {
    let k = ip::flow_key(p)?;
    Some((k.src, k.dst, k.proto))
}

/// SA pair of one suite: `(backend outbound, backend inbound, reference sad/worker...)`.
struct Suite {
    keys_out: CipherKeys,
    keys_in: CipherKeys,
    spi_out: u32,
    spi_in: u32,
    inner_net: &'static str,
    udp: bool,
    esn: bool,
}

const LOCAL: &str = "192.0.2.1";
const PEER: &str = "198.51.100.7";

fn out_params(s: &Suite, local: &str, remote: &str) -> SaParams {
    let mut p = SaParams::new(
        s.spi_out,
        Direction::Outbound,
        s.keys_out.clone(),
        ipa(local),
        ipa(remote),
    );
    p.esn = s.esn;
    if s.udp {
        p.udp_encap = Some(UdpEncap {
            local_port: 4500,
            remote_port: 4500,
        });
    }
    p
}

fn in_params(s: &Suite, local: &str, remote: &str) -> SaParams {
    let mut p = SaParams::new(s.spi_in, Direction::Inbound, s.keys_in.clone(), ipa(local), ipa(remote));
    p.esn = s.esn;
    if s.udp {
        p.udp_encap = Some(UdpEncap {
            local_port: 4500,
            remote_port: 4500,
        });
    }
    p
}

fn protect(spd: &Spd, local_net: &str, remote_net: &str, sa: fastpath::sad::SaId) -> CaseResult {
    spd.insert(&Policy {
        local: TrafficSelector::prefix(ipa(local_net), 16).map_err(e)?,
        remote: TrafficSelector::prefix(ipa(remote_net), 16).map_err(e)?,
        action: PolicyAction::Protect(sa),
        priority: 100,
    })
    .map(|_| ())
    .map_err(e)
}

/// Encap and decap of `s` through the rig, against the software fastpath.
/// Returns how many SAs were offloaded to a crypto device.
fn check_suite(rig: &mut Rig, s: &Suite, sizes: &[usize]) -> Result<usize, String> {
    // Backend SAs and policy: 10.1.0.0/16 (local) <-> inner_net (remote).
    let (out_id, off_out) = rig.backend.install_sa(&out_params(s, LOCAL, PEER)).map_err(e)?;
    let (_, off_in) = rig.backend.install_sa(&in_params(s, LOCAL, PEER)).map_err(e)?;
    protect(&rig.spd, "10.1.0.0", s.inner_net, out_id)?;

    // Reference: the same SAs in a software fastpath, and the peer's mirror.
    let (rsad, _ev) = Sad::new(1);
    let (rsad, rspd) = (Arc::new(rsad), Arc::new(Spd::new()));
    let r_out = rsad.install_outbound(&out_params(s, LOCAL, PEER)).map_err(e)?;
    protect(&rspd, "10.1.0.0", s.inner_net, r_out)?;
    let mut reference = Worker::new(0, rsad.clone(), rspd.clone())
        .with_outer_headers(true)
        .without_pinning();
    let (psad, _pev) = Sad::new(1);
    let (psad, pspd) = (Arc::new(psad), Arc::new(Spd::new()));
    let mut peer_out = SaParams::new(s.spi_in, Direction::Outbound, s.keys_in.clone(), ipa(PEER), ipa(LOCAL));
    peer_out.esn = s.esn;
    peer_out.udp_encap = in_params(s, LOCAL, PEER).udp_encap;
    let p_out = psad.install_outbound(&peer_out).map_err(e)?;
    protect(&pspd, s.inner_net, "10.1.0.0", p_out)?;
    let mut peer_in = SaParams::new(s.spi_out, Direction::Inbound, s.keys_out.clone(), ipa(PEER), ipa(LOCAL));
    peer_in.esn = s.esn;
    let p_in = psad.install_inbound(&peer_in).map_err(e)?;
    let mut peer = Worker::new(0, psad.clone(), pspd.clone())
        .with_outer_headers(true)
        .without_pinning();
    if s.esn {
        // Cross a 2^32 boundary so the high sequence half is exercised.
        let start = (1u64 << 32) - 2;
        rig.sad.outbound(out_id).ok_or("backend sa")?.set_next_seq(start);
        rsad.outbound(r_out).ok_or("ref sa")?.set_next_seq(start);
        // The peer's window must know the high half it starts from.
        let w = &psad.inbound_by_id(p_in).ok_or("peer sa")?.replay;
        w.lock().map_err(e)?.accept(start - 1).map_err(e)?;
    }

    // Encap: cleartext in through the port, ESP out.
    let inner_base = ipa(s.inner_net);
    let IpAddr::V4(base) = inner_base else {
        return Err("IPv4 test nets only".into());
    };
    let dst = IpAddr::from([base.octets()[0], base.octets()[1], 0, 1]).to_string();
    let inners: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| udp_packet("10.1.0.5", &dst, 1000 + i as u16, 53, n, i as u8))
        .collect();
    let frames: Vec<Vec<u8>> = inners.iter().map(|p| eth(rig.mac, p)).collect();
    rig.inject(&frames)?;
    let esp = rig.collect(inners.len(), |p| {
        ipv4_src_dst_proto(p).is_some_and(|(a, b, _)| a == ipa(LOCAL) && b == ipa(PEER))
    })?;
    for (i, inner) in inners.iter().enumerate() {
        let mut b = PacketBuf::from_slice(inner).map_err(e)?;
        let v = reference.outbound_packet(&mut b);
        ensure(matches!(v, Verdict::ToPeer { .. }), format!("reference verdict {v:?}"))?;
        if s.keys_out.enc.is_aead() {
            ensure(
                b.data() == esp[i].as_slice(),
                format!(
                    "ESP packet {i} ({} B inner) differs from the software fastpath",
                    inner.len()
                ),
            )?;
        } else {
            ensure(b.len() == esp[i].len(), format!("CBC packet {i}: length differs"))?;
        }
        // The peer decapsulates what the port sent.
        let mut got = PacketBuf::from_slice(&esp[i]).map_err(e)?;
        let hl = if s.udp { 28 } else { 20 };
        got.trim_front(hl).map_err(e)?;
        let meta = PacketMeta {
            src: ipa(LOCAL),
            dst: Some(ipa(PEER)),
            src_port: if s.udp { 4500 } else { 0 },
        };
        let kind = if s.udp { InboundKind::Udp } else { InboundKind::RawEsp };
        let v = peer.inbound_packet(kind, &mut got, &meta);
        ensure(v == Verdict::ToTunnel, format!("peer decap of packet {i}: {v:?}"))?;
        ensure(
            got.data() == inner.as_slice(),
            format!("peer decap of packet {i} differs"),
        )?;
    }

    // Decap: the peer's ESP in through the port, inner packets out.
    let replies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| udp_packet(&dst, "10.1.0.5", 53, 2000 + i as u16, n, 0x80 ^ i as u8))
        .collect();
    let mut esp_in = Vec::new();
    for r in &replies {
        let mut b = PacketBuf::from_slice(r).map_err(e)?;
        let v = peer.outbound_packet(&mut b);
        ensure(matches!(v, Verdict::ToPeer { .. }), format!("peer encap {v:?}"))?;
        esp_in.push(eth(rig.mac, b.data()));
    }
    // One forged packet with a fresh sequence number: a flipped ciphertext byte.
    let mut b = PacketBuf::from_slice(&replies[0]).map_err(e)?;
    ensure(
        matches!(peer.outbound_packet(&mut b), Verdict::ToPeer { .. }),
        "peer encap",
    )?;
    let mut forged = eth(rig.mac, b.data());
    let last = forged.len() - 20;
    forged[last] ^= 1;
    let before = rig.backend.counters();
    rig.inject(&esp_in)?;
    let dst_ip = ipa(&dst);
    let plain = rig.collect(replies.len(), |p| {
        ipv4_src_dst_proto(p).is_some_and(|(a, _, pr)| a == dst_ip && pr == ip::IPPROTO_UDP)
    })?;
    for (i, r) in replies.iter().enumerate() {
        ensure(
            plain[i] == *r,
            format!("decapsulated packet {i} differs from the original"),
        )?;
    }
    // Replays and forgeries are dropped and counted.
    rig.inject(&[esp_in[0].clone(), forged])?;
    for _ in 0..50 {
        rig.lp.poll_once();
    }
    while rig.tap.try_recv().is_ok() {}
    let after = rig.backend.counters();
    let drops = |c: &fastpath::dpdk::counters::DpdkCounters, r: DropReason| -> u64 {
        c.loops.iter().map(|l| l.inbound.dropped(r)).sum()
    };
    let replay = drops(&after, DropReason::Replay) - drops(&before, DropReason::Replay);
    let icv = drops(&after, DropReason::IcvFailure) - drops(&before, DropReason::IcvFailure);
    ensure(
        replay == 1 && icv == 1,
        format!("{replay} replay and {icv} ICV drops, expected 1 + 1"),
    )?;
    Ok(usize::from(off_out) + usize::from(off_in))
}

/// ESP to the peer leaves towards the MAC the peer was last heard from: the
/// loop reuses the Ethernet header it built for a next hop only until the
/// neighbour table changes.
fn next_hop_mac_follows_learning(rig: &mut Rig) -> CaseResult {
    let esp_dst_macs = |rig: &mut Rig, n: usize| -> Result<Vec<[u8; 6]>, String> {
        let clear: Vec<Vec<u8>> = (0..n)
            .map(|i| eth(rig.mac, &udp_packet("10.1.0.5", "10.2.0.1", 3000 + i as u16, 53, 64, 7)))
            .collect();
        rig.inject(&clear)?;
        let mut macs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while macs.len() < n && Instant::now() < deadline {
            rig.lp.poll_once();
            while let Ok((_, f)) = rig.tap.try_recv() {
                let to_peer = f.len() > ETH_HDR_LEN
                    && ipv4_src_dst_proto(&f[ETH_HDR_LEN..])
                        .is_some_and(|(a, b, pr)| a == ipa(LOCAL) && b == ipa(PEER) && pr == 50);
                if to_peer {
                    macs.push(<[u8; 6]>::try_from(&f[..6]).map_err(e)?);
                }
            }
        }
        ensure(macs.len() == n, format!("{} of {n} ESP frames", macs.len()))?;
        for _ in 0..20 {
            rig.lp.poll_once();
        }
        while rig.tap.try_recv().is_ok() {}
        Ok(macs)
    };
    // The suites' ESP from the peer came from eth()'s source MAC.
    let old_mac = [0x02, 0, 0, 0, 0, 0x99];
    ensure(
        esp_dst_macs(rig, 3)?.iter().all(|m| *m == old_mac),
        "ESP not sent to the peer's learned MAC",
    )?;
    // The peer moves: an IKE message from its address arrives from a new MAC.
    let new_mac = [0x02, 0, 0, 0, 0, 0x77];
    let mut ike = PacketBuf::from_slice(&[0x11; 28]).map_err(e)?;
    ip::prepend_outer(&mut ike, ipa(PEER), ipa(LOCAL), Some((500, 500))).map_err(e)?;
    let mut frame = eth(rig.mac, ike.data());
    frame[6..12].copy_from_slice(&new_mac);
    rig.inject(&[frame])?;
    for _ in 0..20 {
        rig.lp.poll_once();
    }
    while rig.ike.try_recv().is_ok() {}
    while rig.tap.try_recv().is_ok() {}
    let macs = esp_dst_macs(rig, 3)?;
    ensure(
        macs.iter().all(|m| *m == new_mac),
        format!("ESP still sent to {macs:02x?} after the peer moved"),
    )
}

fn suites() -> Vec<Suite> {
    vec![
        Suite {
            keys_out: gcm_keys(1),
            keys_in: gcm_keys(2),
            spi_out: 0x1001,
            spi_in: 0x2001,
            inner_net: "10.2.0.0",
            udp: false,
            esn: false,
        },
        Suite {
            keys_out: gcm256_keys(3),
            keys_in: gcm256_keys(4),
            spi_out: 0x1002,
            spi_in: 0x2002,
            inner_net: "10.3.0.0",
            udp: true,
            esn: false,
        },
        Suite {
            keys_out: gcm_keys(7),
            keys_in: gcm_keys(8),
            spi_out: 0x1004,
            spi_in: 0x2004,
            inner_net: "10.5.0.0",
            udp: false,
            esn: true,
        },
        Suite {
            keys_out: cbc_keys(5),
            keys_in: cbc_keys(6),
            spi_out: 0x1003,
            spi_in: 0x2003,
            inner_net: "10.4.0.0",
            udp: false,
            esn: false,
        },
    ]
}

const SIZES: [usize; 8] = [64, 65, 100, 128, 576, 1000, 1420, 1436];

fn case_cpu_ring(eal: &Eal) -> CaseResult {
    let p = profile("ring-cpu", "net_ring0", LOCAL, "mode = \"cpu\"")?;
    let mut rig = Rig::start(*eal, &p)?;
    for s in suites() {
        let off = check_suite(&mut rig, &s, &SIZES).map_err(|m| format!("SPI {:#x}: {m}", s.spi_out))?;
        ensure(off == 0, "CPU mode offloaded an SA")?;
    }
    // IKE: in on 4500 behind the marker (handed over without it), keepalives
    // counted, replies out with the marker.
    let mut ike = PacketBuf::from_slice(&[0, 0, 0, 0, 0xaa, 0xbb, 0xcc]).map_err(e)?;
    ip::prepend_outer(&mut ike, ipa(PEER), ipa(LOCAL), Some((4501, 4500))).map_err(e)?;
    let mut ka = PacketBuf::from_slice(&[0xff]).map_err(e)?;
    ip::prepend_outer(&mut ka, ipa(PEER), ipa(LOCAL), Some((4501, 4500))).map_err(e)?;
    rig.inject(&[eth(rig.mac, ike.data()), eth(rig.mac, ka.data())])?;
    for _ in 0..20 {
        rig.lp.poll_once();
    }
    let d = rig.ike.try_recv().map_err(|_| "no IKE datagram handed over")?;
    ensure(d.payload == [0xaa, 0xbb, 0xcc], format!("IKE payload {:?}", d.payload))?;
    ensure(
        d.remote == SocketAddr::new(ipa(PEER), 4501) && d.local == SocketAddr::new(ipa(LOCAL), 4500),
        format!("IKE addresses {d:?}"),
    )?;
    rig.reply(&d, vec![1, 2, 3])?;
    let out = rig.collect(1, |p| {
        ipv4_src_dst_proto(p).is_some_and(|(a, b, pr)| a == ipa(LOCAL) && b == ipa(PEER) && pr == 17)
    })?;
    ensure(
        out[0][20..] == [17, 148, 17, 149, 0, 15, 0, 0, 0, 0, 0, 0, 1, 2, 3],
        format!("IKE reply {:?}", &out[0][20..]),
    )?;
    let c = rig.backend.counters();
    ensure(c.total(|l| l.keepalives) == 1, "keepalive not counted")?;
    ensure(
        c.total(|l| l.ike_rx) == 1 && c.total(|l| l.ike_tx) == 1,
        "IKE not counted",
    )?;
    let text = c.prometheus();
    ensure(
        text.contains("ironsa_dpdk_port_tx_packets_total{port=\"net_ring0\"}")
            && text.contains("ironsa_dpdk_esp_outbound_packets_total{loop=\"0\"} 32"),
        format!("prometheus text:\n{text}"),
    )?;
    ike_larger_than_the_link(&mut rig)?;
    next_hop_mac_follows_learning(&mut rig)
}

/// IKE on 4500 larger than the link (an unfragmented IKE_AUTH with a
/// certificate chain): the IP fragments it arrives in are reassembled and
/// the message handed over whole; a reply as large leaves as IP fragments.
fn ike_larger_than_the_link(rig: &mut Rig) -> CaseResult {
    let message: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8 | 1).collect();
    let mut whole = PacketBuf::new(64, 64 + 28 + 4 + message.len());
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&message);
    whole.set_data(&body).map_err(e)?;
    ip::prepend_outer(&mut whole, ipa(PEER), ipa(LOCAL), Some((4501, 4500))).map_err(e)?;
    let frags = ip::fragment(whole.data(), 1500, 4242).map_err(e)?;
    ensure(frags.len() == 14, format!("{} fragments", frags.len()))?;
    // Out of order, as a network may deliver them.
    let mut frames: Vec<Vec<u8>> = frags.iter().map(|f| eth(rig.mac, f)).collect();
    frames.swap(0, 5);
    rig.inject(&frames)?;
    for _ in 0..40 {
        rig.lp.poll_once();
    }
    let d = rig.ike.try_recv().map_err(|_| "large IKE not handed over")?;
    ensure(
        d.payload == message,
        format!("large IKE: {} bytes handed over", d.payload.len()),
    )?;
    ensure(d.local == SocketAddr::new(ipa(LOCAL), 4500), format!("{d:?}"))?;
    rig.reply(&d, message.clone())?;
    let out = rig.collect(14, |p| {
        ipv4_src_dst_proto(p).is_some_and(|(a, b, _)| a == ipa(LOCAL) && b == ipa(PEER))
    })?;
    ensure(out.iter().all(|f| f.len() <= 1500), "a fragment above the link MTU")?;
    let mut r = fastpath::reassembly::Reassembly::new();
    let mut done = None;
    for f in &out {
        done = r.add(f, Instant::now()).map_err(e)?.or(done);
    }
    let reply = done.ok_or("reply fragments do not reassemble")?;
    ensure(
        reply.payload.get(8..12) == Some(&[0, 0, 0, 0][..]) && reply.payload.get(12..) == Some(&message[..]),
        "large IKE reply reassembled differently",
    )
}

fn case_lookaside(eal: &Eal, port: &str, device: &str) -> CaseResult {
    let crypto = format!("mode = \"lookaside\"\ndevice = \"{device}\"");
    let p = profile(&format!("ring-{device}"), port, LOCAL, &crypto)?;
    let mut rig = Rig::start(*eal, &p)?;
    let mut offloaded = 0;
    for s in suites() {
        let n = check_suite(&mut rig, &s, &SIZES).map_err(|m| format!("SPI {:#x}: {m}", s.spi_out))?;
        if s.keys_out.enc.is_aead() {
            ensure(n == 2, format!("{device}: AES-GCM SAs not offloaded ({n})"))?;
        } else {
            ensure(n == 0, format!("{device}: CBC SA offloaded"))?;
        }
        offloaded += n;
    }
    ensure(rig.backend.offloaded_sas() == offloaded, "offloaded SA count")?;
    let c = rig.backend.counters();
    let enq = c.total(|l| l.crypto_enqueued);
    let deq = c.total(|l| l.crypto_dequeued);
    ensure(
        enq > 0 && enq == deq,
        format!("crypto ops enqueued {enq}, dequeued {deq}"),
    )?;
    ensure(c.total(|l| l.crypto_errors) == 0, "crypto errors")?;
    ensure(
        c.total(|l| l.crypto_cpu_fallback) >= 2 * SIZES.len() as u64,
        "CBC packets not counted as CPU fallbacks",
    )?;
    ensure(
        c.prometheus().contains(&format!(
            "ironsa_dpdk_cryptodev_enqueued_total{{device=\"{device}\"}} {enq}"
        )),
        "crypto device counters missing from the Prometheus text",
    )?;
    Ok(())
}

/// Forged ICVs on an inbound SA (each of the 128 tag bits flipped in turn,
/// ahead of the genuine packet with the same fresh sequence number): all are
/// dropped as ICV failures and leave the SA as it was (replay window top,
/// counters), so the genuine packet still decapsulates, byte for byte.
fn check_forged_icvs(rig: &mut Rig, keys: CipherKeys, spi: u32, inner_net: &str) -> Result<bool, String> {
    let mut params = SaParams::new(spi, Direction::Inbound, keys.clone(), ipa(LOCAL), ipa(PEER));
    params.esn = false;
    let (in_id, offloaded) = rig.backend.install_sa(&params).map_err(e)?;
    let (psad, _pev) = Sad::new(1);
    let (psad, pspd) = (Arc::new(psad), Arc::new(Spd::new()));
    let p_out = psad
        .install_outbound(&SaParams::new(spi, Direction::Outbound, keys, ipa(PEER), ipa(LOCAL)))
        .map_err(e)?;
    protect(&pspd, inner_net, "10.1.0.0", p_out)?;
    let mut peer = Worker::new(0, psad, pspd).with_outer_headers(true).without_pinning();
    let IpAddr::V4(base) = ipa(inner_net) else {
        return Err("IPv4 test nets only".into());
    };
    let src = IpAddr::from([base.octets()[0], base.octets()[1], 0, 9]);
    let inner = udp_packet(&src.to_string(), "10.1.0.5", 53, 3000, 300, 0x3c);
    let mut b = PacketBuf::from_slice(&inner).map_err(e)?;
    let v = peer.outbound_packet(&mut b);
    ensure(matches!(v, Verdict::ToPeer { .. }), format!("peer encap {v:?}"))?;
    let genuine = eth(rig.mac, b.data());
    let sa_state = |rig: &Rig| -> Result<(u64, (u64, u64)), String> {
        let sa = rig.sad.inbound_by_id(in_id).ok_or("backend inbound SA")?;
        let top = sa.replay.lock().map_err(e)?.top();
        Ok((top, sa.counters.totals()))
    };
    let drops = |c: &fastpath::dpdk::counters::DpdkCounters, r: DropReason| -> u64 {
        c.loops.iter().map(|l| l.inbound.dropped(r)).sum()
    };
    let before = rig.backend.counters();
    let state = sa_state(rig)?;
    let icv_at = genuine.len() - 16;
    for chunk in (0..128).collect::<Vec<usize>>().chunks(32) {
        let forged: Vec<Vec<u8>> = chunk
            .iter()
            .map(|&bit| {
                let mut f = genuine.clone();
                f[icv_at + bit / 8] ^= 1 << (bit % 8);
                f
            })
            .collect();
        rig.inject(&forged)?;
        for _ in 0..50 {
            rig.lp.poll_once();
        }
    }
    while rig.tap.try_recv().is_ok() {}
    let after = rig.backend.counters();
    let icv = drops(&after, DropReason::IcvFailure) - drops(&before, DropReason::IcvFailure);
    ensure(icv == 128, format!("{icv} ICV drops for 128 forged ICVs"))?;
    ensure(
        sa_state(rig)? == state,
        "forged ICVs changed the SA's replay window or counters",
    )?;
    rig.inject(&[genuine])?;
    let got = rig.collect(1, |p| {
        ipv4_src_dst_proto(p).is_some_and(|(a, _, pr)| a == src && pr == ip::IPPROTO_UDP)
    })?;
    ensure(got[0] == inner, "the genuine packet after the forgeries differs")?;
    Ok(offloaded)
}

/// `cpu-ipsec-mb` (intel-ipsec-mb's direct API, no crypto device): the
/// backend's ESP is byte-for-byte the software fastpath's (aws-lc) for every
/// AES-GCM suite, ESN included, CBC stays on aws-lc, and forged ICVs are
/// refused without touching the SA; a profile naming a device is refused.
fn case_cpu_ipsec_mb(eal: &Eal, port: &str) -> CaseResult {
    let device = "intel-ipsec-mb";
    let refused = profile(
        "ring-cpu-dev",
        port,
        LOCAL,
        "mode = \"cpu-ipsec-mb\"\ndevice = \"crypto_aesni_gcm1\"",
    );
    ensure(
        refused.as_ref().is_err_and(|m| m.contains("takes no crypto.device")),
        format!("cpu-ipsec-mb with a device: {:?}", refused.map(|p| p.name)),
    )?;
    let p = profile("ring-cpu-imb", port, LOCAL, "mode = \"cpu-ipsec-mb\"")?;
    let mut rig = Rig::start(*eal, &p)?;
    let mut offloaded = 0;
    for s in suites() {
        let n = check_suite(&mut rig, &s, &SIZES).map_err(|m| format!("SPI {:#x}: {m}", s.spi_out))?;
        if s.keys_out.enc.is_aead() {
            ensure(n == 2, format!("{device}: AES-GCM SAs not on CPU crypto ({n})"))?;
        } else {
            ensure(n == 0, format!("{device}: CBC SA on CPU crypto"))?;
        }
        offloaded += n;
    }
    ensure(
        rig.backend.offloaded_sas() == offloaded,
        format!("offloaded SA count {} != {offloaded}", rig.backend.offloaded_sas()),
    )?;
    let c = rig.backend.counters();
    ensure(
        c.crypto_device.is_none(),
        format!("crypto device {:?} in cpu-ipsec-mb mode", c.crypto_device),
    )?;
    ensure(
        c.total(|l| l.crypto_enqueued) == 0,
        "CPU crypto went through a queue pair",
    )?;
    for (keys, spi, net) in [(gcm_keys(9), 0x2101, "10.6.0.0"), (gcm256_keys(10), 0x2102, "10.7.0.0")] {
        let on_imb = check_forged_icvs(&mut rig, keys, spi, net)?;
        ensure(on_imb, format!("{device}: inbound SA {spi:#x} not on intel-ipsec-mb"))?;
    }
    Ok(())
}

/// DPDK's synchronous CPU crypto binding ([`ffi::CpuAeadSession`], no longer
/// used by the backend) on `device`: seals exactly as aws-lc and opens
/// aws-lc's output.
fn case_ffi_cpu_aead(eal: &Eal, device: &str) -> CaseResult {
    let dev = ffi::CryptoDev::by_name(eal, device).map_err(e)?;
    let pool = ffi::SessionPool::new(eal, &format!("t_cc_{device}"), 64, &[dev], -1).map_err(e)?;
    // The PMD configures sessions only on a configured device; its queue pair stays unused.
    dev.configure_and_start(1, 128, &pool).map_err(e)?;
    for (key_len, aad_len) in [(16usize, 8usize), (32, 12)] {
        let key: Vec<u8> = (0..key_len as u8).map(|i| i.wrapping_mul(13) ^ 0x5c).collect();
        let alg = if key_len == 16 {
            &aws_lc_rs::aead::AES_128_GCM
        } else {
            &aws_lc_rs::aead::AES_256_GCM
        };
        let aws = aws_lc_rs::aead::LessSafeKey::new(aws_lc_rs::aead::UnboundKey::new(alg, &key).map_err(e)?);
        let mk = |d| {
            let s = ffi::SymSession::aes_gcm(&dev, &pool, d, &key, 12, aad_len as u16, 16).map_err(e)?;
            ffi::CpuAeadSession::new(&dev, s).map_err(e)
        };
        let (enc, dec) = (mk(ffi::AeadDirection::Encrypt)?, mk(ffi::AeadDirection::Decrypt)?);
        for len in [0usize, 1, 15, 16, 17, 64, 255, 1420, 1500] {
            let nonce: [u8; 12] = std::array::from_fn(|i| (len + i * 7) as u8);
            let aad: Vec<u8> = (0..aad_len as u8).map(|i| i ^ len as u8).collect();
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let mut ours = plain.clone();
            let mut icv = [0u8; 16];
            enc.seal(&nonce, &aad, &mut ours, &mut icv).map_err(e)?;
            let mut theirs = plain.clone();
            let tag = aws
                .seal_in_place_separate_tag(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                    aws_lc_rs::aead::Aad::from(&aad[..]),
                    &mut theirs,
                )
                .map_err(e)?;
            ensure(
                ours == theirs && icv == tag.as_ref(),
                format!("{device}: seal of {len} B (key {key_len}, AAD {aad_len}) differs from aws-lc"),
            )?;
            dec.open(&nonce, &aad, &mut theirs, tag.as_ref()).map_err(e)?;
            ensure(theirs == plain, format!("{device}: open of {len} B differs"))?;
            let mut bad = ours.clone();
            icv[len % 16] ^= 0x80;
            ensure(
                matches!(
                    dec.open(&nonce, &aad, &mut bad, &icv),
                    Err(ffi::CpuCryptoError::AuthFailed)
                ),
                format!("{device}: forged ICV accepted"),
            )?;
        }
        // Wrong direction and wrong lengths are refused, not passed to DPDK.
        let mut buf = [0u8; 32];
        let mut icv = [0u8; 16];
        ensure(
            dec.seal(&[0; 12], &vec![0; aad_len], &mut buf, &mut icv).is_err()
                && enc.seal(&[0; 12], &vec![0; aad_len + 1], &mut buf, &mut icv).is_err()
                && enc.seal(&[0; 11], &vec![0; aad_len], &mut buf, &mut icv).is_err(),
            "bad CPU crypto arguments accepted",
        )?;
    }
    Ok(())
}

/// A crypto device without synchronous CPU crypto is refused with a clear error.
fn case_cpu_crypto_refused(eal: &Eal) -> CaseResult {
    let dev = ffi::CryptoDev::by_name(eal, "crypto_openssl0").map_err(e)?;
    ensure(!dev.has_cpu_crypto(), "crypto_openssl claims CPU crypto")?;
    let pool = ffi::SessionPool::new(eal, "t_cc_openssl", 8, &[dev], -1).map_err(e)?;
    if !dev.is_started() {
        dev.configure_and_start(1, 64, &pool).map_err(e)?;
    }
    let s = ffi::SymSession::aes_gcm(&dev, &pool, ffi::AeadDirection::Encrypt, &[7; 16], 12, 8, 16).map_err(e)?;
    match ffi::CpuAeadSession::new(&dev, s) {
        Err(ffi::Error::Unsupported(m)) if m.contains("CPU crypto") => Ok(()),
        other => Err(format!("crypto_openssl CPU session: {other:?}")),
    }
}

/// Inline mode on a vdev: the capability check says no, every SA goes to
/// software without error (counted), and ESP is still the software fastpath's.
fn case_inline_fallback(eal: &Eal, port: &str) -> CaseResult {
    let p = profile("ring-inline", port, LOCAL, "mode = \"inline\"")?;
    let mut rig = Rig::start(*eal, &p)?;
    ensure(
        rig.backend.inline_status().iter().all(|s| !s.capable),
        "net_ring claims inline crypto",
    )?;
    let ethport = ffi::EthPort::by_name(eal, port).map_err(e)?;
    match ethport.inline_session_pool(eal, "t_inline_pool", 64) {
        Err(ffi::Error::Unsupported(m)) if m.contains("rte_security") => {}
        other => return Err(format!("inline session pool on a vdev: {other:?}")),
    }
    // The flow rule an inline SA needs: the vdev has no flow API, and every
    // ingress fate is refused with an error naming the port, SPI and cause.
    let sp = SaParams::new(0xabcd_0001, Direction::Inbound, gcm_keys(21), ipa(LOCAL), ipa(PEER));
    let isa = fastpath::dpdk::inline::inline_sa(&sp).ok_or("no inline SA")?;
    match ethport.validate_inline_flow(&isa, 0) {
        Err(ffi::Error::Unsupported(m))
            if m.contains("rte_flow_validate")
                && m.contains(&format!("port {}", ethport.id()))
                && m.contains("0xabcd0001") => {}
        other => return Err(format!("flow rule validated on a vdev: {other:?}")),
    }
    let mut n = 0;
    for s in suites() {
        let off = check_suite(&mut rig, &s, &SIZES[..3]).map_err(|m| format!("SPI {:#x}: {m}", s.spi_out))?;
        ensure(off == 0, "an SA was offloaded to a port without inline IPsec")?;
        n += 2;
    }
    let c = rig.backend.counters();
    ensure(
        c.inline_sas_offloaded == 0 && c.inline_sas_fallback == n,
        format!(
            "inline SAs offloaded {} / fallback {} (expected 0 / {n})",
            c.inline_sas_offloaded, c.inline_sas_fallback
        ),
    )?;
    ensure(rig.backend.offloaded_sas() == 0, "offloaded SA count")?;
    ensure(
        c.total(|l| l.inline_cpu_fallback) >= 2 * 3 * suites().len() as u64,
        format!("inline CPU fallback packets {}", c.total(|l| l.inline_cpu_fallback)),
    )?;
    ensure(
        c.prometheus()
            .lines()
            .any(|l| l == format!("ironsa_dpdk_inline_sas_fallback_total {n}")),
        "inline SA counters missing from the Prometheus text",
    )?;
    Ok(())
}

/// The rte_security session configuration built for an SA: every field
/// from `SaParams`, read back from the C structure DPDK would get.
fn case_inline_conf() -> CaseResult {
    use fastpath::dpdk::inline::inline_sa;
    let mut p = SaParams::new(
        0xc001_0203,
        Direction::Outbound,
        gcm_keys(11),
        ipa("192.0.2.1"),
        ipa("198.51.100.7"),
    );
    let keys = gcm_keys(11);
    let v = inline_sa(&p)
        .ok_or("no inline SA for AES-GCM")?
        .conf_view()
        .map_err(e)?;
    let want = ffi::InlineConfView {
        inline_crypto: true,
        ipsec: true,
        spi: 0xc001_0203,
        salt: keys.enc_key[16..20].try_into().map_err(e)?,
        egress: true,
        esp: true,
        tunnel: true,
        esn: false,
        esn_value: 0,
        udp: None,
        replay_window: 0,
        tunnel_src: Some(ipa("192.0.2.1")),
        tunnel_dst: Some(ipa("198.51.100.7")),
        ttl: 64,
        aes_gcm: true,
        encrypt: true,
        key_len: 16,
        iv_len: 12,
        icv_len: 16,
        aad_len: 8,
    };
    ensure(v == want, format!("egress conf {v:?}"))?;
    // The egress rule: IPv4 us → peer, the SPI, SECURITY only (the fate is ignored).
    let f = inline_sa(&p)
        .ok_or("no inline SA")?
        .flow_view(ffi::IngressFate::Queue(5))
        .map_err(e)?;
    ensure(
        f.egress
            && !f.ingress
            && f.items == [ffi::FlowPart::Eth, ffi::FlowPart::Ipv4, ffi::FlowPart::Esp]
            && f.addresses == Some((ipa("192.0.2.1"), ipa("198.51.100.7")))
            && f.udp_dst.is_none()
            && f.spi == 0xc001_0203
            && f.spi_exact
            && f.actions == [ffi::FlowPart::Security],
        format!("egress flow {f:?}"),
    )?;
    // Ingress, AES-256, ESN, NAT-T, IPv6: direction, key, AAD, ports and
    // tunnel endpoints (peer → us) follow.
    p.direction = Direction::Inbound;
    p.keys = gcm256_keys(12);
    p.esn = true;
    p.udp_encap = Some(UdpEncap {
        local_port: 4500,
        remote_port: 31000,
    });
    p.local = ipa("2001:db8::1");
    p.remote = ipa("2001:db8::2");
    let v = inline_sa(&p).ok_or("no inline SA")?.conf_view().map_err(e)?;
    let salt: [u8; 4] = gcm256_keys(12).enc_key[32..36].try_into().map_err(e)?;
    ensure(
        !v.egress
            && !v.encrypt
            && v.esn
            && v.key_len == 32
            && v.aad_len == 12
            && v.salt == salt
            && v.udp == Some((31000, 4500))
            && v.tunnel_src == Some(ipa("2001:db8::2"))
            && v.tunnel_dst == Some(ipa("2001:db8::1")),
        format!("ingress conf {v:?}"),
    )?;
    // Its flow rule: IPv6 peer → us, UDP to our NAT-T port, the SPI; the
    // SECURITY action, then the fate.
    use ffi::{FlowPart as F, IngressFate};
    let isa = inline_sa(&p).ok_or("no inline SA")?;
    let f = isa.flow_view(IngressFate::Queue(3)).map_err(e)?;
    ensure(
        f.ingress
            && !f.egress
            && f.items == [F::Eth, F::Ipv6, F::Udp, F::Esp]
            && f.addresses == Some((ipa("2001:db8::2"), ipa("2001:db8::1")))
            && f.udp_dst == Some(4500)
            && f.spi == 0xc001_0203
            && f.spi_exact
            && f.actions == [F::Security, F::Queue]
            && f.queue == 3,
        format!("ingress flow {f:?}"),
    )?;
    let f = isa.flow_view(IngressFate::Passthru).map_err(e)?;
    ensure(f.actions == [F::Security, F::Passthru], format!("passthru flow {f:?}"))?;
    let f = isa.flow_view(IngressFate::Unspecified).map_err(e)?;
    ensure(f.actions == [F::Security], format!("fate-less flow {f:?}"))?;
    ensure(
        fastpath::dpdk::inline::rule_queue(0xc001_0203, 4) == 3 && fastpath::dpdk::inline::rule_queue(7, 1) == 0,
        "rule queue is not the SPI's steering loop",
    )?;
    p.mode = fastpath::esp::Mode::Transport;
    let v = inline_sa(&p).ok_or("no inline SA")?.conf_view().map_err(e)?;
    ensure(!v.tunnel && v.tunnel_src.is_none(), format!("transport conf {v:?}"))?;
    // Transport mode: no addresses to match, IPv6 and the SPI still are.
    let f = inline_sa(&p)
        .ok_or("no inline SA")?
        .flow_view(IngressFate::Queue(0))
        .map_err(e)?;
    ensure(
        f.items == [F::Eth, F::Ipv6, F::Udp, F::Esp] && f.addresses.is_none(),
        format!("transport flow {f:?}"),
    )?;
    // Outer addresses of two families: an error, not a session or a rule.
    p.mode = fastpath::esp::Mode::Tunnel;
    p.remote = ipa("198.51.100.7");
    let mixed = inline_sa(&p).ok_or("no inline SA")?;
    ensure(
        mixed.conf_view().is_err() && mixed.flow_view(IngressFate::Passthru).is_err(),
        "mixed-family tunnel described",
    )?;
    // Not AES-GCM: no inline SA at all.
    p.keys = cbc_keys(13);
    ensure(inline_sa(&p).is_none(), "CBC SA described for inline crypto")?;
    Ok(())
}

fn case_mbuf(eal: &Eal) -> CaseResult {
    let pool = ffi::Mempool::new(eal, "t_mbuf", 63, 0, ffi::DEFAULT_DATA_ROOM, -1).map_err(e)?;
    let mut m = pool.alloc().map_err(e)?;
    ensure(PacketBuffer::is_empty(&m), "fresh mbuf not empty")?;
    let head = PacketBuffer::headroom(&m);
    let tail = PacketBuffer::tailroom(&m);
    ensure(head >= 128 && tail >= 2048, format!("headroom {head}, tailroom {tail}"))?;
    PacketBuffer::append(&mut m, 7).map_err(e)?.copy_from_slice(b"payload");
    PacketBuffer::prepend(&mut m, 3).map_err(e)?.copy_from_slice(b"hdr");
    PacketBuffer::append(&mut m, 4).map_err(e)?.copy_from_slice(b"tail");
    ensure(PacketBuffer::data(&m) == b"hdrpayloadtail", "contents")?;
    // DPDK's own view agrees with the trait's.
    ensure(
        m.pkt_len() == 14 && ffi::Mbuf::data(&m) == b"hdrpayloadtail",
        "DPDK view",
    )?;
    ensure(usize::from(ffi::Mbuf::headroom(&m)) == head - 3, "DPDK headroom")?;
    ensure(usize::from(ffi::Mbuf::tailroom(&m)) == tail - 11, "DPDK tailroom")?;
    PacketBuffer::trim_front(&mut m, 3).map_err(e)?;
    PacketBuffer::trim_back(&mut m, 4).map_err(e)?;
    ensure(PacketBuffer::data(&m) == b"payload" && m.pkt_len() == 7, "after trims")?;
    // Limits are errors, not panics or corruption.
    ensure(
        PacketBuffer::prepend(&mut m, head + 1).is_err(),
        "prepend past headroom",
    )?;
    ensure(PacketBuffer::append(&mut m, tail + 1).is_err(), "append past tailroom")?;
    ensure(PacketBuffer::append(&mut m, 1 << 20).is_err(), "huge append")?;
    ensure(
        PacketBuffer::trim_front(&mut m, 8).is_err() && PacketBuffer::trim_back(&mut m, 8).is_err(),
        "over-trim",
    )?;
    ensure(
        PacketBuffer::data(&m) == b"payload" && m.pkt_len() == 7,
        "state after failed edits",
    )?;
    // keep_range: one header update, same result as the two trims.
    ensure(
        PacketBuffer::keep_range(&mut m, 5, 3).is_err() && PacketBuffer::data(&m) == b"payload",
        "keep_range past the end",
    )?;
    PacketBuffer::keep_range(&mut m, 2, 3).map_err(e)?;
    ensure(
        PacketBuffer::data(&m) == b"ylo" && m.pkt_len() == 3 && usize::from(ffi::Mbuf::headroom(&m)) == head + 2,
        "after keep_range",
    )?;
    PacketBuffer::prepend(&mut m, 2).map_err(e)?.copy_from_slice(b"pa");
    PacketBuffer::append(&mut m, 2).map_err(e)?.copy_from_slice(b"ad");
    // ESP in place on the mbuf equals ESP on a heap buffer.
    let (sad, _ev) = Sad::new(1);
    let id = sad
        .install_outbound(&SaParams::new(
            0x777,
            Direction::Outbound,
            gcm_keys(3),
            ipa(LOCAL),
            ipa(PEER),
        ))
        .map_err(e)?;
    let sa = sad.outbound(id).ok_or("sa")?;
    let pkt = udp_packet("10.1.0.1", "10.2.0.1", 1, 2, 100, 0);
    let mut ivs = fastpath::esp::aead::IvSource::new();
    let params = fastpath::esp::encap::EncapParams {
        cipher: &sa.cipher,
        spi: 0x777,
        seq: 5,
        esn: false,
        mode: fastpath::esp::Mode::Tunnel,
        max_esp_len: 1480,
    };
    let mut m = pool.alloc().map_err(e)?;
    m.extend_from_slice(&pkt).map_err(e)?;
    let mut h = PacketBuf::from_slice(&pkt).map_err(e)?;
    fastpath::esp::encap::encap(&mut m, &params, &mut ivs).map_err(e)?;
    fastpath::esp::encap::encap(&mut h, &params, &mut ivs).map_err(e)?;
    ensure(
        PacketBuffer::data(&m) == h.data() && m.pkt_len() as usize == h.len(),
        "ESP on mbuf differs",
    )?;
    Ok(())
}

fn case_steering(eal: &Eal) -> CaseResult {
    // Two loops on a port without RSS: loop 0 receives everything, steers ESP
    // by SPI, and hands cleartext of an SA pinned to worker 1 over.
    let p = HwProfile::from_toml(
        r#"
        name = "ring-2loops"
        backend = "dpdk"
        eal_args = ["-l", "0"]
        queues = 2
        [[ports]]
        name = "net_ring3"
        addresses = ["192.0.2.1"]
        [sizing]
        mbufs = 4095
        mbuf_cache = 64
        descriptors = 512
        ring = 1024
        "#,
    )
    .map_err(e)?;
    let (sad, _ev) = Sad::new(2);
    let (sad, spd) = (Arc::new(sad), Arc::new(Spd::new()));
    let Started { backend, mut loops, .. } = DpdkBackend::start(*eal, &p, sad.clone(), spd.clone()).map_err(e)?;
    ensure(loops.len() == 2, "two loops")?;
    let tap = backend.tap();
    let port = ffi::EthPort::by_name(eal, "net_ring3").map_err(e)?.id();
    let mac = backend.port_mac("net_ring3").ok_or("mac")?;
    let s = Suite {
        keys_out: gcm_keys(11),
        keys_in: gcm_keys(12),
        spi_out: 0x6001,
        spi_in: 0x7001, // odd: steered to loop 1
        inner_net: "10.2.0.0",
        udp: false,
        esn: false,
    };
    let (out_id, _) = backend.install_sa(&out_params(&s, LOCAL, PEER)).map_err(e)?;
    let owner = sad.outbound(out_id).ok_or("sa")?.worker;
    ensure(owner == 1, format!("SA pinned to worker {owner}, the test expects 1"))?;
    backend.install_sa(&in_params(&s, LOCAL, PEER)).map_err(e)?;
    protect(&spd, "10.1.0.0", "10.2.0.0", out_id)?;
    // The peer's ESP (SPI 0x7001) and our cleartext.
    let (psad, _pev) = Sad::new(1);
    let (psad, pspd) = (Arc::new(psad), Arc::new(Spd::new()));
    let pid = psad
        .install_outbound(&SaParams::new(
            0x7001,
            Direction::Outbound,
            gcm_keys(12),
            ipa(PEER),
            ipa(LOCAL),
        ))
        .map_err(e)?;
    protect(&pspd, "10.2.0.0", "10.1.0.0", pid)?;
    let mut peer = Worker::new(0, psad, pspd).with_outer_headers(true).without_pinning();
    let n = 16;
    let mut frames = Vec::new();
    let mut replies = Vec::new();
    for i in 0..n {
        frames.push(eth(
            mac,
            &udp_packet("10.1.0.5", "10.2.0.1", 3000 + i, 53, 100, i as u8),
        ));
        let r = udp_packet("10.2.0.1", "10.1.0.5", 53, 4000 + i, 120, i as u8);
        let mut b = PacketBuf::from_slice(&r).map_err(e)?;
        ensure(
            matches!(peer.outbound_packet(&mut b), Verdict::ToPeer { .. }),
            "peer encap",
        )?;
        frames.push(eth(mac, b.data()));
        replies.push(r);
    }
    let mut v = Vec::new();
    for f in &frames {
        let mut m = backend.pool().alloc().map_err(e)?;
        m.extend_from_slice(f).map_err(e)?;
        v.push(m);
    }
    let l0_in = loops[0].counters();
    let l1_in = loops[1].counters();
    loops[0].transmit(port, &mut v);
    let (mut esp, mut plain) = (0usize, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(3);
    while (esp < n as usize || plain.len() < n as usize) && Instant::now() < deadline {
        for l in loops.iter_mut() {
            l.poll_once();
        }
        while let Ok((_, f)) = tap.try_recv() {
            let ipk = &f[ETH_HDR_LEN..];
            match ipv4_src_dst_proto(ipk) {
                Some((a, b, 50)) if a == ipa(LOCAL) && b == ipa(PEER) => esp += 1,
                Some((a, _, 17)) if a == ipa("10.2.0.1") => plain.push(ipk.to_vec()),
                _ => {}
            }
        }
    }
    ensure(esp == n as usize, format!("{esp} of {n} ESP packets sent"))?;
    ensure(
        plain.len() == n as usize,
        format!("{} of {n} packets decapsulated", plain.len()),
    )?;
    plain.sort();
    replies.sort();
    ensure(plain == replies, "decapsulated packets differ")?;
    let (c0, c1) = (l0_in.snapshot(), l1_in.snapshot());
    ensure(
        c0.steered_out == 2 * n as u64 && c1.steered_in == 2 * n as u64,
        format!("steered out {} / in {}", c0.steered_out, c1.steered_in),
    )?;
    let c = backend.counters();
    ensure(
        c.loops[1].outbound.packets == n as u64 && c.loops[1].inbound.packets == n as u64,
        "worker 1 did not process the SA's packets",
    )?;
    ensure(
        c.loops[0].outbound.packets == 0 && c.loops[0].inbound.packets == 0,
        "worker 0 processed packets of worker 1's SAs",
    )?;
    Ok(())
}

fn case_probe(eal: &Eal) -> CaseResult {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles");
    let profiles = HwProfile::load_dir(&dir).map_err(e)?;
    let report = probe_with(eal, &profiles).map_err(e)?;
    let text = report.to_string();
    ensure(
        text.contains("net_ring0") && text.contains("net_af_packet0"),
        format!("ports missing:\n{text}"),
    )?;
    ensure(
        text.contains("crypto_aesni_gcm0"),
        format!("crypto device missing:\n{text}"),
    )?;
    ensure(
        text.contains("inline ipsec: none"),
        format!("inline capability on vdevs?\n{text}"),
    )?;
    for p in &report.devices.ports {
        ensure(
            !p.security.has_inline_ipsec(),
            format!("{} claims inline IPsec", p.name),
        )?;
    }
    let fit = |n: &str| report.candidates.iter().find(|(c, _)| c == n).map(|(_, f)| f.is_ok());
    ensure(
        fit("mlx5-inline") == Some(false) && fit("intel-inline") == Some(false),
        "inline profiles fit vdevs",
    )?;
    ensure(fit("qat-lookaside") == Some(false), "QAT profile fits without QAT")?;
    ensure(
        fit("ci-vdev") == Some(true) && fit("software") == Some(true),
        "ci-vdev/software do not fit",
    )?;
    // Software lookaside fits too, but ranks below CPU crypto on
    // intel-ipsec-mb (and aws-lc), which dpdk-bench measures faster.
    ensure(fit("dpdk-aesni") == Some(true), "dpdk-aesni does not fit")?;
    ensure(
        report.best.as_deref() == Some("dpdk-ipsec-mb"),
        format!("best profile {:?}", report.best),
    )?;
    println!("{text}");
    Ok(())
}

fn case_af_packet(eal: &Eal, ns: &NetNs) -> CaseResult {
    // Inline mode on a vdev: no capability, CPU fallback, no error.
    let p = profile("veth-inline", "net_af_packet0", "192.168.77.1", "mode = \"inline\"")?;
    let mut rig = Rig::start(*eal, &p)?;
    ensure(
        rig.backend.inline_status().iter().all(|s| !s.capable),
        "af_packet claims inline crypto",
    )?;
    let (dp, ns_ip) = ("192.168.77.1", "192.168.77.2");
    let s_out = Suite {
        keys_out: gcm_keys(9),
        keys_in: gcm_keys(10),
        spi_out: 0x3001,
        spi_in: 0x4001,
        inner_net: "10.2.0.0",
        udp: false,
        esn: false,
    };
    let (out_id, _) = rig.backend.install_sa(&out_params(&s_out, dp, ns_ip)).map_err(e)?;
    rig.backend.install_sa(&in_params(&s_out, dp, ns_ip)).map_err(e)?;
    rig.spd
        .insert(&Policy {
            local: TrafficSelector::prefix(ipa("192.168.77.0"), 24).map_err(e)?,
            remote: TrafficSelector::prefix(ipa("10.2.0.0"), 16).map_err(e)?,
            action: PolicyAction::Protect(out_id),
            priority: 100,
        })
        .map_err(e)?;

    // Sockets in the namespace: UDP sender, raw ESP receiver, UDP receiver, IKE.
    let socks = ns.run(|| -> std::io::Result<_> {
        use socket2::{Domain, Protocol, Socket, Type};
        let udp = std::net::UdpSocket::bind("192.168.77.2:0")?;
        let esp = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(50)))?;
        esp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let sink = std::net::UdpSocket::bind("0.0.0.0:9999")?;
        sink.set_read_timeout(Some(Duration::from_millis(50)))?;
        let ike = std::net::UdpSocket::bind("192.168.77.2:500")?;
        ike.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok((udp, esp, sink, ike))
    })?;
    let (udp, esp, sink, ike) = socks.map_err(e)?;

    // 1. Real cleartext from the namespace (ARP answered by the loop) comes
    //    back as ESP, which the software fastpath decapsulates.
    let payload: Vec<u8> = (0..200u8).collect();
    udp.send_to(&payload, "10.2.0.1:7777").map_err(e)?;
    let (isad, _ev) = Sad::new(1);
    let isad = Arc::new(isad);
    isad.install_inbound(&SaParams::new(
        0x3001,
        Direction::Inbound,
        gcm_keys(9),
        ipa(ns_ip),
        ipa(dp),
    ))
    .map_err(e)?;
    let mut sw = Worker::new(0, isad, Arc::new(Spd::new())).without_pinning();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut decapped = None;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    while decapped.is_none() && Instant::now() < deadline {
        for _ in 0..200 {
            rig.lp.poll_once();
        }
        if let Ok(n) = esp.recv(&mut buf) {
            // SAFETY: recv initialised the first n bytes.
            let pkt: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let mut b = PacketBuf::from_slice(&pkt[ihl..]).map_err(e)?;
            let meta = PacketMeta {
                src: ipa(dp),
                dst: Some(ipa(ns_ip)),
                src_port: 0,
            };
            let v = sw.inbound_packet(InboundKind::RawEsp, &mut b, &meta);
            ensure(v == Verdict::ToTunnel, format!("software decap of DPDK's ESP: {v:?}"))?;
            decapped = Some(b.data().to_vec());
        }
        // The kernel retransmits nothing: resend once ARP had time to resolve.
        let _ = udp.send_to(&payload, "10.2.0.1:7777");
    }
    let inner = decapped.ok_or("no ESP from the DPDK port reached the namespace")?;
    let k = ip::flow_key(&inner).ok_or("bad inner packet")?;
    ensure(
        k.src == ipa(ns_ip) && k.dst == ipa("10.2.0.1") && k.dst_port == 7777,
        format!("inner flow {k:?}"),
    )?;
    ensure(inner[28..] == payload[..], "inner payload differs")?;

    // 2. Real ESP from the namespace is decapsulated by DPDK and the inner
    //    packet delivered to a socket in the namespace.
    let (psad, _pev) = Sad::new(1);
    let psad = Arc::new(psad);
    let pspd = Arc::new(Spd::new());
    let pid = psad
        .install_outbound(&SaParams::new(
            0x4001,
            Direction::Outbound,
            gcm_keys(10),
            ipa(ns_ip),
            ipa(dp),
        ))
        .map_err(e)?;
    protect(&pspd, "10.2.0.0", "192.168.0.0", pid)?;
    let mut peer = Worker::new(0, psad, pspd).without_pinning();
    let reply = udp_packet("10.2.0.1", ns_ip, 7777, 9999, 300, 0x33);
    let mut b = PacketBuf::from_slice(&reply).map_err(e)?;
    let v = peer.outbound_packet(&mut b);
    ensure(matches!(v, Verdict::ToPeer { .. }), format!("peer encap {v:?}"))?;
    let esp_bytes = b.data().to_vec();
    let dest = socket2::SockAddr::from(SocketAddr::new(ipa(dp), 0));
    esp.send_to(&esp_bytes, &dest).map_err(e)?;
    let mut got = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut delivered = None;
    while delivered.is_none() && Instant::now() < deadline {
        for _ in 0..200 {
            rig.lp.poll_once();
        }
        if let Ok((n, from)) = sink.recv_from(&mut got) {
            delivered = Some((got[..n].to_vec(), from));
        }
    }
    let (data, from) = delivered.ok_or("decapsulated packet not delivered in the namespace")?;
    ensure(data == reply[28..], "delivered payload differs")?;
    ensure(from == SocketAddr::new(ipa("10.2.0.1"), 7777), format!("from {from}"))?;

    // 3. IKE from the namespace to the control plane and back.
    ike.send_to(b"IKE_SA_INIT?", "192.168.77.1:500").map_err(e)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut d = None;
    while d.is_none() && Instant::now() < deadline {
        rig.lp.poll_once();
        d = rig.ike.try_recv().ok();
    }
    let d = d.ok_or("IKE from the namespace not handed over")?;
    ensure(
        d.payload == b"IKE_SA_INIT?" && d.remote == SocketAddr::new(ipa(ns_ip), 500),
        format!("{d:?}"),
    )?;
    rig.backend
        .ike_sender()
        .send(IkeDatagram {
            local: d.local,
            remote: d.remote,
            payload: b"IKE_SA_INIT!".to_vec(),
        })
        .map_err(e)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut answer = None;
    while answer.is_none() && Instant::now() < deadline {
        for _ in 0..100 {
            rig.lp.poll_once();
        }
        if let Ok((n, from)) = ike.recv_from(&mut got) {
            answer = Some((got[..n].to_vec(), from));
        }
    }
    let (a, from) = answer.ok_or("IKE reply not received in the namespace")?;
    ensure(
        a == b"IKE_SA_INIT!" && from == SocketAddr::new(ipa(dp), 500),
        format!("IKE reply from {from}"),
    )?;

    let c = rig.backend.counters();
    ensure(c.total(|l| l.arp_replies) >= 1, "no ARP reply counted")?;
    ensure(c.total(|l| l.inline_cpu_fallback) >= 2, "inline fallbacks not counted")?;
    ensure(c.total(|l| l.crypto_errors) == 0, "crypto errors")?;
    Ok(())
}

fn main() {
    let started = Instant::now();
    let ns = NetNs::new();
    ns.cleanup();
    let veth = ns.setup();
    let mut args: Vec<String> = [
        "-l",
        "0",
        "--no-huge",
        "-m",
        "512",
        "--no-shconf",
        "--no-pci",
        "--log-level=lib.eal:error",
        "--log-level=pmd.net.af_packet:error",
        "--vdev=net_ring0",
        "--vdev=net_ring1",
        "--vdev=net_ring2",
        "--vdev=net_ring3",
        "--vdev=net_ring4",
        "--vdev=crypto_aesni_gcm0",
        "--vdev=crypto_openssl0",
        "--vdev=crypto_aesni_mb0",
        "--vdev=net_ring5",
        "--vdev=net_ring6",
        "--vdev=net_ring7",
        "--vdev=crypto_aesni_gcm1",
        "--vdev=crypto_aesni_mb1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if veth.is_ok() {
        args.push(format!("--vdev=net_af_packet0,iface={}", ns.dp));
    }
    let eal = match Eal::init(&args) {
        Ok(eal) => eal,
        Err(err) => {
            ns.cleanup();
            eprintln!("EAL init failed: {err}");
            std::process::exit(1);
        }
    };
    let cases: Vec<(&str, Case)> = vec![
        (
            "hw_probe_and_profiles",
            Box::new(move || {
                veth.clone()?;
                case_probe(&eal)
            }),
        ),
        ("mbuf_packet_buffer", Box::new(move || case_mbuf(&eal))),
        (
            "two_loops_spi_steering_and_sa_pinning",
            Box::new(move || case_steering(&eal)),
        ),
        (
            "cpu_crypto_on_net_ring_equals_software",
            Box::new(move || case_cpu_ring(&eal)),
        ),
        (
            "lookaside_crypto_aesni_gcm_equals_cpu",
            Box::new(move || case_lookaside(&eal, "net_ring1", "crypto_aesni_gcm0")),
        ),
        (
            "lookaside_crypto_openssl_equals_cpu",
            Box::new(move || case_lookaside(&eal, "net_ring2", "crypto_openssl0")),
        ),
        (
            "lookaside_crypto_aesni_mb_equals_cpu",
            Box::new(move || case_lookaside(&eal, "net_ring4", "crypto_aesni_mb0")),
        ),
        (
            "cpu_ipsec_mb_equals_aws_lc",
            Box::new(move || case_cpu_ipsec_mb(&eal, "net_ring5")),
        ),
        (
            "ffi_cpu_aead_aesni_gcm_equals_aws_lc",
            Box::new(move || case_ffi_cpu_aead(&eal, "crypto_aesni_gcm1")),
        ),
        (
            "ffi_cpu_aead_aesni_mb_equals_aws_lc",
            Box::new(move || case_ffi_cpu_aead(&eal, "crypto_aesni_mb1")),
        ),
        (
            "cpu_crypto_refused_without_the_feature",
            Box::new(move || case_cpu_crypto_refused(&eal)),
        ),
        ("inline_session_conf_from_sa_params", Box::new(case_inline_conf)),
        (
            "inline_mode_on_vdev_falls_back_per_sa",
            Box::new(move || case_inline_fallback(&eal, "net_ring7")),
        ),
        (
            "af_packet_veth_namespace_inline_fallback",
            Box::new({
                let ns = NetNs::new();
                move || case_af_packet(&eal, &ns)
            }),
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        let t = Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)) {
            Ok(Ok(())) => {
                passed += 1;
                println!("ok   {name} ({} ms)", t.elapsed().as_millis());
            }
            Ok(Err(msg)) => {
                failed += 1;
                println!("FAIL {name}: {msg}");
            }
            Err(_) => {
                failed += 1;
                println!("FAIL {name}: panicked");
            }
        }
    }
    ns.cleanup();
    println!(
        "dpdk: {passed} passed, {failed} failed ({} ms)",
        started.elapsed().as_millis()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

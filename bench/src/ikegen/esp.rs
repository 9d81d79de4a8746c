//! ESP traffic through the generator's tunnels: every CHILD_SA the generator
//! establishes gets an outbound SA in a private fastpath SAD/SPD, and during
//! the hold phase the worker sends inner UDP packets (our selector → the
//! gateway's selector) encrypted with those SAs, plain ESP over a raw socket
//! or ESP-in-UDP when NAT-T was negotiated. A rekeyed CHILD_SA's flow moves to
//! the new outbound SA as soon as the new SA is installed (the gateway deletes
//! the old one right after), and a deleted CHILD_SA's flow stops. The
//! gateway's own counters tell how much it decrypted (see [`super::gateway`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};

use control::ike_sa::ChildSaInstall;
use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::io::raw::RawEspIo;
use fastpath::sad::{Direction, SaId, SaParams, Sad, UdpEncap};
use fastpath::spd::{Policy, PolicyAction, PolicyId, Spd, TrafficSelector};
use fastpath::worker::{Verdict, Worker};
use std::sync::Arc;

const BURST: usize = 32;

/// Counters of the ESP load, per worker; with `--gateway-metrics`, also what
/// the gateway received.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct EspReport {
    /// Tunnels carrying traffic.
    pub tunnels: u64,
    /// ESP packets sent.
    pub packets: u64,
    /// Inner bytes sent.
    pub bytes: u64,
    /// Packets the fastpath refused (e.g. SA rekeyed away) or the socket refused.
    pub errors: u64,
    /// Seconds spent sending (with `--esp-rate`: the whole hold).
    pub secs: f64,
    /// Inner packet size.
    pub size: usize,
    /// Inner Mbit/s sent.
    pub mbps: f64,
    /// Flows moved to a new outbound SA by a CHILD_SA rekey.
    #[serde(default)]
    pub rekeys_followed: u64,
    /// ESP packets the gateway decrypted during the run (its
    /// `ironsa_esp_packets_total{direction="in"}` grew by this much).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// Packets sent that the gateway did not decrypt (`packets - delivered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// Inbound ESP drops the gateway counted during the run, by reason
    /// (`ironsa_esp_drops_total{direction="in"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gateway_drops: BTreeMap<String, u64>,
}

/// One tunnel's traffic: its inner addresses and the CHILD_SA carrying it now.
#[derive(Clone, Copy, Debug)]
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    /// Our inbound SPI of the current CHILD_SA (how the IKE core names it).
    spi_in: u32,
    /// The current outbound SA.
    sa: SaId,
    /// The policy steering the flow into `sa`.
    policy: PolicyId,
}

/// One worker's ESP sender.
pub struct EspLoad {
    sad: Arc<Sad>,
    spd: Arc<Spd>,
    worker: Worker,
    raw: Option<RawEspIo>,
    udp: Option<UdpSocket>,
    flows: Vec<Flow>,
    /// Index into `flows` by the current CHILD_SA's inbound SPI.
    by_child: HashMap<u32, usize>,
    /// Rekeys the responder started, by the old child's inbound SPI: the new
    /// child's inbound SPI and outbound SA, used once the old child is deleted.
    deferred: HashMap<u32, (u32, SaParams)>,
    next: usize,
    size: usize,
    bufs: Vec<PacketBuf>,
    verdicts: Vec<Verdict>,
    /// What was sent.
    pub report: EspReport,
}

fn keys(c: &ChildSaInstall) -> Option<CipherKeys> {
    let enc = EncAlg::from_ikev2(c.encr.transform_id(), c.encr.key_length_attribute())?;
    let integ = IntegAlg::from_ikev2(c.integ.map(|i| i.transform_id()))?;
    Some(CipherKeys {
        enc,
        integ,
        enc_key: c.outbound.encr.clone(),
        integ_key: c.outbound.integ.clone(),
    })
}

/// A host address inside a selector (its start, or start + 1 for a network address range).
fn host_in(ts: &control::wire::ikev2::TrafficSelector) -> IpAddr {
    match (ts.start_addr, ts.end_addr) {
        (IpAddr::V4(s), IpAddr::V4(e)) if u32::from(e) > u32::from(s) => IpAddr::V4((u32::from(s) + 1).into()),
        (IpAddr::V6(s), IpAddr::V6(e)) if u128::from(e) > u128::from(s) => IpAddr::V6((u128::from(s) + 1).into()),
        (s, _) => s,
    }
}

impl EspLoad {
    /// A sender of inner packets of `size` bytes (IPv4 + UDP + payload).
    pub fn new(size: usize) -> Self {
        let (sad, _events) = Sad::new(1);
        let sad = Arc::new(sad);
        let spd = Arc::new(Spd::new());
        let worker = Worker::new(0, sad.clone(), spd.clone()).without_pinning();
        Self {
            sad,
            spd,
            worker,
            raw: RawEspIo::open(IpAddr::from([0u8, 0, 0, 0]), BURST).ok(),
            udp: None,
            flows: Vec::new(),
            by_child: HashMap::new(),
            deferred: HashMap::new(),
            next: 0,
            size: size.clamp(28, 1400),
            bufs: (0..BURST).map(|_| PacketBuf::with_defaults()).collect(),
            verdicts: vec![Verdict::Keepalive; BURST],
            report: EspReport {
                size: size.clamp(28, 1400),
                ..EspReport::default()
            },
        }
    }

    /// The outbound SA parameters of `c` (`None` for ciphers the fastpath lacks).
    fn outbound_params(&mut self, c: &ChildSaInstall, udp_socket: Option<&UdpSocket>) -> Option<SaParams> {
        let k = keys(c)?;
        let mut p = SaParams::new(c.spi_out, Direction::Outbound, k, c.local.ip(), c.remote.ip());
        p.esn = c.esn;
        if c.udp_encap {
            p.udp_encap = Some(UdpEncap {
                local_port: c.local.port(),
                remote_port: c.remote.port(),
            });
            if self.udp.is_none() {
                self.udp = udp_socket.and_then(|s| s.try_clone().ok());
            }
        }
        Some(p)
    }

    /// A rekey the responder started: we answered it, but the responder
    /// installs the new inbound SA only when our answer arrives. The flow
    /// stays on the old SA until the responder deletes the old child
    /// ([`EspLoad::remove_child`]), as strongSwan does as rekey responder.
    pub fn add_peer_rekey(&mut self, c: &ChildSaInstall, udp_socket: Option<&UdpSocket>) {
        let Some(old) = c.rekey_of.filter(|old| self.by_child.contains_key(old)) else {
            self.add_child(c, udp_socket);
            return;
        };
        if let Some(p) = self.outbound_params(c, udp_socket) {
            self.deferred.insert(old, (c.spi_in, p));
        }
    }

    /// Installs the outbound half of a CHILD_SA the generator negotiated. For
    /// a rekey (`rekey_of` names a child carrying a flow) the flow switches
    /// to the new SA at once and the old outbound SA is removed.
    pub fn add_child(&mut self, c: &ChildSaInstall, udp_socket: Option<&UdpSocket>) {
        let (Some(p), Some(l), Some(r)) = (
            self.outbound_params(c, udp_socket),
            c.local_ts.first(),
            c.remote_ts.first(),
        ) else {
            return;
        };
        if let Some(i) = c.rekey_of.and_then(|old| self.by_child.remove(&old)) {
            self.switch(i, c.spi_in, &p);
            return;
        }
        let Ok(sa) = self.sad.install_outbound(&p) else { return };
        let (src, dst) = (host_in(l), host_in(r));
        let (Ok(ls), Ok(rs)) = (
            TrafficSelector::prefix(src, if src.is_ipv4() { 32 } else { 128 }),
            TrafficSelector::prefix(dst, if dst.is_ipv4() { 32 } else { 128 }),
        ) else {
            let _ = self.sad.remove(sa);
            return;
        };
        match self.spd.insert(&Policy {
            local: ls,
            remote: rs,
            action: PolicyAction::Protect(sa),
            priority: 100,
        }) {
            Ok(policy) => {
                self.by_child.insert(c.spi_in, self.flows.len());
                self.flows.push(Flow {
                    src,
                    dst,
                    spi_in: c.spi_in,
                    sa,
                    policy,
                });
                // A rekey of a child we no longer follow (the loser of a
                // rekey collision) carries an existing tunnel's traffic.
                if c.rekey_of.is_none() {
                    self.report.tunnels += 1;
                }
            }
            Err(_) => {
                let _ = self.sad.remove(sa);
            }
        }
    }

    /// Moves the outbound SAs of these children to the IKE SA's new peer
    /// address in place (the gateway's address changed behind a NAT).
    pub fn move_children(&mut self, spis_in: &[u32], remote: std::net::SocketAddr, udp_encap: bool) {
        for spi in spis_in {
            let Some(&i) = self.by_child.get(spi) else { continue };
            let sa = self.flows[i].sa;
            let Some(old) = self.sad.outbound(sa).map(|o| o.path()) else {
                continue;
            };
            let path = fastpath::sad::OuterPath {
                local: old.local,
                remote: remote.ip(),
                udp_encap: if udp_encap {
                    old.udp_encap.map(|u| UdpEncap {
                        local_port: u.local_port,
                        remote_port: remote.port(),
                    })
                } else {
                    None
                },
            };
            let _ = self.sad.move_path(sa, &path);
        }
    }

    /// Moves flow `i` to a new outbound SA with parameters `p` (a rekey of its child).
    fn switch(&mut self, i: usize, spi_in: u32, p: &SaParams) {
        let flow = self.flows[i];
        match self.sad.install_outbound(p) {
            Ok(sa) => {
                self.spd.replace_sa_of(&[flow.policy], flow.sa, sa);
                let _ = self.sad.remove(flow.sa);
                self.flows[i].sa = sa;
                self.flows[i].spi_in = spi_in;
                self.by_child.insert(spi_in, i);
                self.report.rekeys_followed += 1;
            }
            Err(_) => {
                // The new SA cannot be used: the flow ends with the old child.
                self.by_child.insert(flow.spi_in, i);
            }
        }
    }

    /// The CHILD_SA with inbound SPI `spi_in` is gone: its flow moves to the
    /// child that replaces it (a rekey the responder started) or stops.
    pub fn remove_child(&mut self, spi_in: u32) {
        // A replacement that is itself gone (the redundant child of a collision).
        self.deferred.retain(|_, (new, _)| *new != spi_in);
        let replacement = self.deferred.remove(&spi_in);
        let Some(i) = self.by_child.remove(&spi_in) else { return };
        if let Some((new, p)) = replacement {
            self.switch(i, new, &p);
            return;
        }
        let flow = self.flows.swap_remove(i);
        let _ = self.spd.remove(flow.policy);
        let _ = self.sad.remove(flow.sa);
        if let Some(moved) = self.flows.get(i) {
            self.by_child.insert(moved.spi_in, i);
        }
    }

    fn fill(buf: &mut PacketBuf, src: IpAddr, dst: IpAddr, size: usize) -> bool {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
            return false;
        };
        buf.reset();
        let Ok(pkt) = buf.append(size) else { return false };
        pkt[..28].fill(0);
        pkt[0] = 0x45;
        pkt[2..4].copy_from_slice(&(size as u16).to_be_bytes());
        pkt[8] = 64;
        pkt[9] = 17;
        pkt[12..16].copy_from_slice(&s.octets());
        pkt[16..20].copy_from_slice(&d.octets());
        let c = fastpath::ip::checksum(&pkt[..20]);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
        pkt[20..22].copy_from_slice(&40000u16.to_be_bytes());
        pkt[22..24].copy_from_slice(&9u16.to_be_bytes()); // discard
        pkt[24..26].copy_from_slice(&((size - 20) as u16).to_be_bytes());
        true
    }

    /// Encrypts and sends one burst of at most `max` packets (round-robin
    /// over the tunnels); returns the packets tried (sent or counted as errors).
    pub fn send_burst(&mut self, max: usize) -> usize {
        if self.flows.is_empty() {
            return 0;
        }
        let n = BURST.min(self.flows.len() * 4).min(max);
        if n == 0 {
            return 0;
        }
        for i in 0..n {
            let f = self.flows[self.next % self.flows.len()];
            self.next = self.next.wrapping_add(1);
            let (s, d) = (f.src, f.dst);
            if !Self::fill(&mut self.bufs[i], s, d, self.size) {
                return 0;
            }
        }
        self.worker.outbound_burst(&mut self.bufs[..n], &mut self.verdicts[..n]);
        let mut sent = 0;
        // Plain ESP goes out in one sendmmsg batch.
        let plain = self.verdicts[..n]
            .iter()
            .filter(|v| matches!(v, Verdict::ToPeer { udp: None, .. }))
            .count();
        if plain > 0 {
            match self
                .raw
                .as_mut()
                .map(|r| r.send_verdicts(&self.bufs[..n], &self.verdicts[..n]))
            {
                Some(Ok(k)) => {
                    sent += k;
                    self.report.errors += (plain - k) as u64;
                }
                _ => self.report.errors += plain as u64,
            }
        }
        for i in 0..n {
            match self.verdicts[i] {
                Verdict::ToPeer { udp: None, .. } => {}
                Verdict::ToPeer { dst, udp: Some(u), .. } => {
                    let ok = self.udp.as_ref().is_some_and(|s| {
                        s.send_to(self.bufs[i].data(), SocketAddr::new(dst, u.remote_port))
                            .is_ok()
                    });
                    if ok { sent += 1 } else { self.report.errors += 1 }
                }
                _ => self.report.errors += 1,
            }
        }
        self.report.packets += sent as u64;
        self.report.bytes += (sent * self.size) as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::crypto::EncrAlg;
    use control::ike_sa::DirectionKeys;
    use control::ts::parse_selector;
    use zeroize::Zeroizing;

    /// A CHILD_SA of tunnel 10.128.0.1 ↔ 10.0.0.0/8 with inbound SPI `spi_in`
    /// (outbound `spi_in + 1000`), replacing `rekey_of`.
    fn child(spi_in: u32, rekey_of: Option<u32>) -> ChildSaInstall {
        let keys = || DirectionKeys {
            encr: Zeroizing::new(vec![7u8; 36]),
            integ: Zeroizing::new(Vec::new()),
        };
        ChildSaInstall {
            ike_spis: (1, 2),
            connection: "ikegen".into(),
            name: "ikegen".into(),
            spi_in,
            spi_out: spi_in + 1000,
            encr: EncrAlg::AesGcm16 { key_bits: 256 },
            integ: None,
            pfs: None,
            additional_ke: Vec::new(),
            esn: false,
            mode: control::config::IpsecMode::Tunnel,
            local_ts: vec![parse_selector("10.128.0.1/32").unwrap()],
            remote_ts: vec![parse_selector("10.0.0.0/8").unwrap()],
            local: "127.0.0.1:500".parse().unwrap(),
            remote: "127.0.0.2:500".parse().unwrap(),
            udp_encap: false,
            inbound: keys(),
            outbound: keys(),
            rekey_of,
            local_vips: Vec::new(),
        }
    }

    /// The peer's SPI of the SA the one flow is sent on, and the outbound SAs installed.
    fn sending_on(load: &EspLoad) -> (u32, usize) {
        assert_eq!(load.flows.len(), 1, "one flow");
        let spi = load
            .sad
            .outbound(load.flows[0].sa)
            .expect("the flow's SA is installed")
            .spi;
        (spi, load.sad.len().1)
    }

    #[test]
    fn our_rekeys_switch_at_once_the_responders_when_it_deletes_the_old_child() {
        let mut load = EspLoad::new(100);
        load.add_child(&child(100, None), None);
        assert_eq!(sending_on(&load), (1100, 1));
        // Our rekey: the responder installed the new SA before answering.
        load.add_child(&child(101, Some(100)), None);
        assert_eq!(sending_on(&load), (1101, 1), "old outbound SA removed");
        load.remove_child(100);
        assert_eq!(
            sending_on(&load),
            (1101, 1),
            "deleting the replaced child changes nothing"
        );
        // The responder's rekey: the old SA until the responder deletes it.
        load.add_peer_rekey(&child(102, Some(101)), None);
        assert_eq!(sending_on(&load), (1101, 1));
        load.remove_child(101);
        assert_eq!(sending_on(&load), (1102, 1));
        // A collision: the responder's new child is the redundant one and goes first.
        load.add_peer_rekey(&child(103, Some(102)), None);
        load.add_child(&child(104, Some(102)), None);
        assert_eq!(sending_on(&load), (1104, 1));
        load.remove_child(103);
        load.remove_child(102);
        assert_eq!(sending_on(&load), (1104, 1));
        assert!(load.deferred.is_empty());
        assert_eq!(load.report.tunnels, 1);
        assert_eq!(load.report.rekeys_followed, 3);
        // The tunnel goes away: no flow, no SA.
        load.remove_child(104);
        assert!(load.flows.is_empty());
        assert_eq!(load.sad.len().1, 0);
        assert_eq!(load.send_burst(usize::MAX), 0);
    }
}

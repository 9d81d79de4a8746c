//! Ethernet frames on the DPDK ports: classification of received frames
//! (ARP, IKE, ESP, NAT keepalives, cleartext IP) and Ethernet/ARP headers
//! for transmitted ones. No VLAN tags, no outer-IP reassembly.

use crate::buf::{BufError, PacketBuffer};
use crate::worker::{NAT_KEEPALIVE, NAT_T_PORT, NON_ESP_MARKER_LEN};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ethernet header length (no VLAN tag).
pub const ETH_HDR_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// UDP port of IKE.
pub const IKE_PORT: u16 = 500;
/// The broadcast MAC address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// What a received frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameClass {
    /// An ARP packet.
    Arp,
    /// IKE on UDP 500, or on UDP 4500 behind the non-ESP marker; the message
    /// is at `payload_off..payload_end` (marker excluded).
    Ike {
        /// Offset of the IKE message.
        payload_off: usize,
        /// End of the IKE message.
        payload_end: usize,
        /// UDP source port (the peer's); its address is [`ip_addrs`]`.0`.
        src_port: u16,
        /// UDP destination port (ours); our address is [`ip_addrs`]`.1`.
        dst_port: u16,
    },
    /// A NAT keepalive (UDP 4500, one 0xFF byte).
    Keepalive,
    /// ESP: UDP-encapsulated (`udp`) or raw protocol 50, at `payload_off..payload_end`.
    Esp {
        /// Offset of the SPI.
        payload_off: usize,
        /// End of the ESP packet (before Ethernet padding).
        payload_end: usize,
        /// Arrived in UDP (RFC 3948).
        udp: bool,
        /// UDP source port (0 for raw ESP). The outer addresses are [`ip_addrs`].
        src_port: u16,
    },
    /// An IP fragment addressed to us at `ETH_HDR_LEN..ip_end`: for reassembly
    /// (IKE larger than the link MTU arrives so).
    Fragment {
        /// End of the IP packet (before Ethernet padding).
        ip_end: usize,
    },
    /// Another IP packet at `ETH_HDR_LEN..ip_end`: to the outbound policy.
    Ip {
        /// End of the IP packet (before Ethernet padding).
        ip_end: usize,
    },
    /// Anything else (other EtherTypes, VLAN, truncated or fragmented IPsec).
    Other,
}

/// The IKE message in a UDP datagram (header included) of IP protocol
/// `protocol`: on port 500, or on 4500 behind the non-ESP marker (removed).
/// Returns (source port, destination port, message).
pub fn ike_in_udp(protocol: u8, udp: &[u8]) -> Option<(u16, u16, &[u8])> {
    if protocol != crate::ip::IPPROTO_UDP || udp.len() < 8 {
        return None;
    }
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let body = udp.get(8..ulen)?;
    match dport {
        IKE_PORT => Some((sport, dport, body)),
        NAT_T_PORT => body
            .strip_prefix(&[0u8; NON_ESP_MARKER_LEN])
            .map(|ike| (sport, dport, ike)),
        _ => None,
    }
}

/// IPv6 next-header value of the fragment header.
const IPV6_FRAGMENT_HEADER: u8 = 44;

/// A fragment addressed to us is reassembled; another one is cleartext for the policy.
#[inline]
fn fragment_class(dst: &IpAddr, ip_end: usize, ours: impl Fn(&IpAddr) -> bool) -> FrameClass {
    if ours(dst) {
        FrameClass::Fragment { ip_end }
    } else {
        FrameClass::Ip { ip_end }
    }
}

/// Classifies a received Ethernet frame. `ours` tells whether an address is
/// one of ours (IKE and UDP-encapsulated ESP are only taken when addressed to us).
#[inline(always)]
pub fn classify(frame: &[u8], ours: impl Fn(&IpAddr) -> bool) -> FrameClass {
    if frame.len() < ETH_HDR_LEN {
        return FrameClass::Other;
    }
    let l3 = &frame[ETH_HDR_LEN..];
    let (dst, proto, l4_off, ip_end) = match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_ARP => return FrameClass::Arp,
        ETHERTYPE_IPV4 => {
            if l3.len() < 20 || l3[0] >> 4 != 4 {
                return FrameClass::Other;
            }
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([l3[2], l3[3]]));
            if ihl < 20 || total < ihl || total > l3.len() {
                return FrameClass::Other;
            }
            let fragmented = u16::from_be_bytes([l3[6], l3[7]]) & 0x3fff != 0;
            let dst = IpAddr::from(<[u8; 4]>::try_from(&l3[16..20]).unwrap_or_default());
            let ip_end = ETH_HDR_LEN + total;
            if fragmented {
                // Ours are reassembled; others go to the policy path as they are.
                return fragment_class(&dst, ip_end, ours);
            }
            (dst, l3[9], ETH_HDR_LEN + ihl, ip_end)
        }
        ETHERTYPE_IPV6 => {
            if l3.len() < 40 || l3[0] >> 4 != 6 {
                return FrameClass::Other;
            }
            let total = 40 + usize::from(u16::from_be_bytes([l3[4], l3[5]]));
            if total > l3.len() {
                return FrameClass::Other;
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&l3[24..40]);
            let dst = IpAddr::from(Ipv6Addr::from(a));
            if l3[6] == IPV6_FRAGMENT_HEADER {
                return fragment_class(&dst, ETH_HDR_LEN + total, ours);
            }
            (dst, l3[6], ETH_HDR_LEN + 40, ETH_HDR_LEN + total)
        }
        _ => return FrameClass::Other,
    };
    match proto {
        crate::esp::IPPROTO_ESP => FrameClass::Esp {
            payload_off: l4_off,
            payload_end: ip_end,
            udp: false,
            src_port: 0,
        },
        crate::ip::IPPROTO_UDP => {
            let udp = &frame[l4_off..ip_end];
            // Only IKE and NAT-T to one of our addresses are ours; other UDP
            // (the protected networks' traffic) is cleartext for the policy.
            // The port is checked first: it is cheaper than the address search.
            if let Some(p) = udp.get(2..4)
                && !matches!(u16::from_be_bytes([p[0], p[1]]), IKE_PORT | NAT_T_PORT)
            {
                return FrameClass::Ip { ip_end };
            }
            if !ours(&dst) {
                return FrameClass::Ip { ip_end };
            }
            if udp.len() < 8 {
                return FrameClass::Other;
            }
            let sport = u16::from_be_bytes([udp[0], udp[1]]);
            let dport = u16::from_be_bytes([udp[2], udp[3]]);
            let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            if ulen < 8 || ulen > udp.len() {
                return FrameClass::Other;
            }
            let body = &udp[8..ulen];
            let (off, end) = (l4_off + 8, l4_off + ulen);
            match dport {
                IKE_PORT => FrameClass::Ike {
                    payload_off: off,
                    payload_end: end,
                    src_port: sport,
                    dst_port: dport,
                },
                NAT_T_PORT if body == [NAT_KEEPALIVE] => FrameClass::Keepalive,
                NAT_T_PORT
                    if body.len() >= NON_ESP_MARKER_LEN && body[..NON_ESP_MARKER_LEN] == [0; NON_ESP_MARKER_LEN] =>
                {
                    FrameClass::Ike {
                        payload_off: off + NON_ESP_MARKER_LEN,
                        payload_end: end,
                        src_port: sport,
                        dst_port: dport,
                    }
                }
                NAT_T_PORT => FrameClass::Esp {
                    payload_off: off,
                    payload_end: end,
                    udp: true,
                    src_port: sport,
                },
                _ => FrameClass::Ip { ip_end },
            }
        }
        _ => FrameClass::Ip { ip_end },
    }
}

/// Prepends an Ethernet header (`dst`, `src`, the EtherType of IPv6 or
/// IPv4). The caller knows the family from the next hop: reading it back
/// from the packet would wait on the header writes just made.
#[inline]
pub fn prepend_ethernet<B: PacketBuffer>(buf: &mut B, dst: [u8; 6], src: [u8; 6], ipv6: bool) -> Result<(), BufError> {
    let h = ethernet_header(dst, src, ipv6);
    buf.prepend(ETH_HDR_LEN)?.copy_from_slice(&h);
    Ok(())
}

/// The Ethernet header `dst`, `src`, EtherType of IPv6 or IPv4.
#[inline]
pub fn ethernet_header(dst: [u8; 6], src: [u8; 6], ipv6: bool) -> [u8; ETH_HDR_LEN] {
    let ethertype = if ipv6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    let mut h = [0u8; ETH_HDR_LEN];
    h[..6].copy_from_slice(&dst);
    h[6..12].copy_from_slice(&src);
    h[12..14].copy_from_slice(&ethertype.to_be_bytes());
    h
}

/// Destination address of the IP packet `pkt` (the next hop's key), or
/// `None` when it is not a whole IPv4/IPv6 header. Cheaper than a flow key:
/// transmission only needs the destination.
#[inline]
pub fn ip_dst(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            let a: [u8; 4] = pkt[16..20].try_into().ok()?;
            Some(IpAddr::from(a))
        }
        6 if pkt.len() >= 40 => {
            let a: [u8; 16] = pkt[24..40].try_into().ok()?;
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

/// Source and destination IP addresses of an Ethernet frame carrying IPv4
/// or IPv6, read straight from the frame. [`classify`] does not return them:
/// building them here, where they are used, keeps the per-packet path free of
/// copies of just-written addresses (each a store-forwarding stall).
#[inline(always)]
pub fn ip_addrs(frame: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        ETHERTYPE_IPV4 => {
            let a: [u8; 8] = frame.get(ETH_HDR_LEN + 12..ETH_HDR_LEN + 20)?.try_into().ok()?;
            let a = u64::from_be_bytes(a);
            Some((
                IpAddr::V4(Ipv4Addr::from((a >> 32) as u32)),
                IpAddr::V4(Ipv4Addr::from(a as u32)),
            ))
        }
        ETHERTYPE_IPV6 => {
            let a: [u8; 32] = frame.get(ETH_HDR_LEN + 8..ETH_HDR_LEN + 40)?.try_into().ok()?;
            let (s, d) = a.split_at(16);
            let word = |b: &[u8]| u128::from_be_bytes(b.try_into().unwrap_or_default());
            Some((IpAddr::V6(Ipv6Addr::from(word(s))), IpAddr::V6(Ipv6Addr::from(word(d)))))
        }
        _ => None,
    }
}

/// The outer addressing of an ESP frame ([`classify`] said `Esp`; `src_port`
/// is its UDP source port, 0 for raw ESP): [`ip_addrs`] straight into a
/// [`PacketMeta`], with no intermediate copies.
#[inline(always)]
pub fn esp_meta(frame: &[u8], src_port: u16) -> Option<crate::worker::PacketMeta> {
    let (src, dst) = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        ETHERTYPE_IPV4 => {
            let a = frame.get(ETH_HDR_LEN + 12..ETH_HDR_LEN + 20)?;
            (
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                IpAddr::V4(Ipv4Addr::new(a[4], a[5], a[6], a[7])),
            )
        }
        _ => ip_addrs(frame)?,
    };
    Some(crate::worker::PacketMeta {
        src,
        dst: Some(dst),
        src_port,
    })
}

/// Source IP address of an Ethernet frame carrying IPv4 or IPv6 (the
/// neighbour to learn): see [`ip_addrs`].
#[inline(always)]
pub fn ip_src(frame: &[u8]) -> Option<IpAddr> {
    ip_addrs(frame).map(|(s, _)| s)
}

/// Source MAC of a frame (callers checked it is at least an Ethernet header).
#[inline]
pub fn src_mac(frame: &[u8]) -> [u8; 6] {
    let mut m = [0u8; 6];
    if frame.len() >= ETH_HDR_LEN {
        m.copy_from_slice(&frame[6..12]);
    }
    m
}

/// An ARP request for one of our addresses: `(requester IP, requester MAC, asked IP)`.
pub fn arp_request(frame: &[u8]) -> Option<(Ipv4Addr, [u8; 6], Ipv4Addr)> {
    let a = frame.get(ETH_HDR_LEN..ETH_HDR_LEN + 28)?;
    // Ethernet/IPv4, hlen 6, plen 4, operation 1 (request).
    if a[..8] != [0, 1, 8, 0, 6, 4, 0, 1] {
        return None;
    }
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&a[8..14]);
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    Some((spa, sha, tpa))
}

/// Turns the ARP request in `frame` into the reply "`asked` is at `mac`", in place.
pub fn make_arp_reply(frame: &mut [u8], mac: [u8; 6]) -> bool {
    let Some((spa, sha, tpa)) = arp_request(frame) else {
        return false;
    };
    frame[..6].copy_from_slice(&sha);
    frame[6..12].copy_from_slice(&mac);
    let a = &mut frame[ETH_HDR_LEN..ETH_HDR_LEN + 28];
    a[7] = 2;
    a[8..14].copy_from_slice(&mac);
    a[14..18].copy_from_slice(&tpa.octets());
    a[18..24].copy_from_slice(&sha);
    a[24..28].copy_from_slice(&spa.octets());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::PacketBuf;

    #[test]
    fn ip_dst_of_v4_v6_and_junk() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[10, 2, 0, 1]);
        assert_eq!(ip_dst(&v4), Some("10.2.0.1".parse().unwrap()));
        assert_eq!(ip_dst(&v4[..19]), None);
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[39] = 1;
        assert_eq!(ip_dst(&v6), Some("::1".parse().unwrap()));
        assert_eq!(ip_dst(&[0x50; 40]), None);
        assert_eq!(ip_dst(&[]), None);
    }

    #[test]
    fn ip_src_and_prepended_ethernet_of_v4_v6_and_junk() {
        let mut f4 = vec![0u8; ETH_HDR_LEN + 20];
        f4[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f4[ETH_HDR_LEN] = 0x45;
        f4[ETH_HDR_LEN + 12..ETH_HDR_LEN + 16].copy_from_slice(&[192, 0, 2, 7]);
        assert_eq!(ip_src(&f4), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(ip_src(&f4[..ETH_HDR_LEN + 15]), None);
        let mut f6 = vec![0u8; ETH_HDR_LEN + 40];
        f6[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f6[ETH_HDR_LEN + 8] = 0x20;
        f6[ETH_HDR_LEN + 9] = 0x01;
        f6[ETH_HDR_LEN + 23] = 9;
        assert_eq!(ip_src(&f6), Some("2001::9".parse().unwrap()));
        assert_eq!(ip_src(&f6[..ETH_HDR_LEN + 23]), None);
        f6[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(ip_src(&f6), None);
        assert_eq!(ip_src(&[0u8; 13]), None);

        let mut b = PacketBuf::from_slice(&[0x60; 40]).unwrap();
        prepend_ethernet(&mut b, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], true).unwrap();
        assert_eq!(&b.data()[..14], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd]);
        let mut b = PacketBuf::from_slice(&[0x45; 20]).unwrap();
        prepend_ethernet(&mut b, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], false).unwrap();
        assert_eq!(&b.data()[12..15], &[0x08, 0x00, 0x45]);
    }

    /// The invariants the poll loop relies on (also checked by the
    /// `dpdk_frame` fuzz target): offsets inside the frame, addresses readable.
    fn check_invariants(f: &[u8], ours: impl Fn(&IpAddr) -> bool) {
        match classify(f, ours) {
            FrameClass::Esp {
                payload_off,
                payload_end,
                ..
            }
            | FrameClass::Ike {
                payload_off,
                payload_end,
                ..
            } => {
                assert!(ETH_HDR_LEN <= payload_off && payload_off <= payload_end && payload_end <= f.len());
                assert!(ip_addrs(f).is_some());
            }
            FrameClass::Ip { ip_end } | FrameClass::Fragment { ip_end } => {
                assert!(ETH_HDR_LEN <= ip_end && ip_end <= f.len());
                assert!(ip_dst(&f[ETH_HDR_LEN..ip_end]).is_some());
            }
            _ => {}
        }
    }

    #[test]
    fn truncated_corrupted_and_oversized_frames_keep_offsets_inside() {
        let ours = |a: &IpAddr| *a == "192.0.2.1".parse::<IpAddr>().unwrap();
        let mut samples = vec![
            frame(&udp_v4(500, b"ike!")),
            frame(&udp_v4(4500, &[0, 0, 0, 0, 1, 2])),
            frame(&udp_v4(4500, &[0xff])),
            frame(&udp_v4(4500, &[1, 2, 3, 4, 0, 0, 0, 1, 9, 9, 9, 9])),
        ];
        let mut esp = PacketBuf::from_slice(&[7u8; 40]).unwrap();
        crate::ip::prepend_ip_header(
            &mut esp,
            "198.51.100.7".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            50,
        )
        .unwrap();
        samples.push(frame(esp.data()));
        let mut v6 = PacketBuf::from_slice(&[0u8; 12]).unwrap();
        crate::ip::prepend_outer(
            &mut v6,
            "2001:db8::7".parse().unwrap(),
            "::1".parse().unwrap(),
            Some((4500, 4500)),
        )
        .unwrap();
        let mut f6 = vec![0u8; 12];
        f6.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f6.extend_from_slice(v6.data());
        samples.push(f6);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for f in &samples {
            // Every truncation, and the frame with trailing garbage.
            for n in 0..=f.len() {
                check_invariants(&f[..n], ours);
                check_invariants(&f[..n], |_| true);
            }
            let mut long = f.clone();
            long.resize(9000, 0xa5);
            check_invariants(&long, ours);
            // Length, header-length and port fields set to hostile values.
            for _ in 0..2000 {
                let mut g = f.clone();
                for _ in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let i = (seed as usize) % g.len();
                    g[i] = (seed >> 32) as u8;
                }
                check_invariants(&g, ours);
                check_invariants(&g, |_| true);
            }
        }
    }

    fn frame(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(ip);
        f.extend_from_slice(&[0u8; 6]); // Ethernet padding
        f
    }

    fn udp_v4(dport: u16, body: &[u8]) -> Vec<u8> {
        let mut b = PacketBuf::from_slice(body).unwrap();
        crate::ip::prepend_outer(
            &mut b,
            "198.51.100.7".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            Some((4501, dport)),
        )
        .unwrap();
        b.data().to_vec()
    }

    #[test]
    fn classifies_ike_esp_keepalive_and_cleartext() {
        let ours = |a: &IpAddr| *a == "192.0.2.1".parse::<IpAddr>().unwrap();
        let f = frame(&udp_v4(500, b"ike!"));
        assert!(matches!(
            classify(&f, ours),
            FrameClass::Ike {
                payload_off: 42,
                payload_end: 46,
                src_port: 4501,
                dst_port: 500
            }
        ));
        assert_eq!(
            ip_addrs(&f),
            Some(("198.51.100.7".parse().unwrap(), "192.0.2.1".parse().unwrap()))
        );
        let f = frame(&udp_v4(4500, &[0, 0, 0, 0, 1, 2]));
        assert!(matches!(
            classify(&f, ours),
            FrameClass::Ike {
                payload_off: 46,
                payload_end: 48,
                ..
            }
        ));
        assert_eq!(classify(&frame(&udp_v4(4500, &[0xff])), ours), FrameClass::Keepalive);
        let f = frame(&udp_v4(4500, &[0, 0, 1, 0, 0, 0, 0, 1, 9, 9]));
        assert!(matches!(
            classify(&f, ours),
            FrameClass::Esp {
                payload_off: 42,
                payload_end: 52,
                udp: true,
                src_port: 4501,
                ..
            }
        ));
        // Not to us: cleartext for the policy.
        assert!(matches!(classify(&f, |_| false), FrameClass::Ip { ip_end: 52, .. }));
        let mut raw = udp_v4(4500, &[0; 12]);
        raw[9] = 50;
        assert!(matches!(
            classify(&frame(&raw), ours),
            FrameClass::Esp {
                payload_off: 34,
                udp: false,
                ..
            }
        ));
        // Fragments: reassembled when they are ours, else cleartext.
        let mut frag = udp_v4(4500, &[0u8; 64]);
        frag[6] = 0x20; // more fragments
        let fl = frag.len();
        assert_eq!(
            classify(&frame(&frag), ours),
            FrameClass::Fragment {
                ip_end: ETH_HDR_LEN + fl
            }
        );
        assert_eq!(
            classify(&frame(&frag), |_| false),
            FrameClass::Ip {
                ip_end: ETH_HDR_LEN + fl
            }
        );
        // IPv6 fragments (a fragment header right after the fixed one).
        let mut big = PacketBuf::new(64, 4096);
        big.set_data(&[0u8; 3000]).unwrap();
        let (peer6, ours6): (IpAddr, IpAddr) = ("2001:db8::7".parse().unwrap(), "2001:db8::1".parse().unwrap());
        crate::ip::prepend_outer(&mut big, peer6, ours6, Some((4500, 4500))).unwrap();
        let frags = crate::ip::fragment(big.data(), 1500, 9).unwrap();
        let mut f6 = vec![0u8; 12];
        f6.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f6.extend_from_slice(&frags[1]);
        let end = f6.len();
        assert_eq!(classify(&f6, |a| *a == ours6), FrameClass::Fragment { ip_end: end });
        assert_eq!(classify(&f6, |_| false), FrameClass::Ip { ip_end: end });
        // IKE in a reassembled UDP datagram.
        let udp = |dport: u16, body: &[u8]| udp_v4(dport, body)[20..].to_vec();
        assert_eq!(ike_in_udp(17, &udp(500, b"ike!")), Some((4501, 500, &b"ike!"[..])));
        assert_eq!(
            ike_in_udp(17, &udp(4500, &[0, 0, 0, 0, 7])),
            Some((4501, 4500, &[7u8][..]))
        );
        assert_eq!(ike_in_udp(17, &udp(4500, &[0, 0, 1, 0, 7])), None, "ESP");
        assert_eq!(ike_in_udp(17, &udp(53, b"dns")), None);
        assert_eq!(ike_in_udp(50, &udp(500, b"ike!")), None);
        assert_eq!(ike_in_udp(17, &udp(500, b"ike!")[..6]), None, "truncated");
        // Truncated and unknown frames.
        assert_eq!(classify(&f[..30], ours), FrameClass::Other);
        assert_eq!(classify(&[0u8; 10], ours), FrameClass::Other);
        let mut v = f.clone();
        v[12] = 0x81;
        assert_eq!(classify(&v, ours), FrameClass::Other);
    }

    #[test]
    fn arp_reply_in_place() {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
        f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 9, 10, 0, 0, 9]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 0, 1]);
        assert_eq!(classify(&f, |_| true), FrameClass::Arp);
        let (spa, _, tpa) = arp_request(&f).unwrap();
        assert_eq!((spa, tpa), ("10.0.0.9".parse().unwrap(), "10.0.0.1".parse().unwrap()));
        assert!(make_arp_reply(&mut f, [2, 0, 0, 0, 0, 1]));
        assert_eq!(&f[..6], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(f[ETH_HDR_LEN + 7], 2);
        assert_eq!(&f[ETH_HDR_LEN + 14..ETH_HDR_LEN + 18], &[10, 0, 0, 1]);
        assert!(!make_arp_reply(&mut f, [2, 0, 0, 0, 0, 1]), "a reply is not a request");
    }
}

//! Minimal IPv4/IPv6/UDP header handling: flow keys for policy lookup,
//! header construction for transport-mode decapsulation and outer headers.

use crate::buf::{BufError, PacketBuffer};
use std::net::IpAddr;

/// Protocol numbers used here.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// Addresses, protocol and ports of an IP packet, as traffic selectors see them.
///
/// For ICMP the "ports" are `type << 8 | code` (RFC 7296 §3.13.1); for
/// protocols without ports, and non-first fragments, they are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol.
    pub proto: u8,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

/// The flow key of a well-formed IPv4 packet packed into two words, cheap to
/// build and to compare: two packets have equal `V4Flow`s exactly when their
/// [`flow_key`]s are equal ([`V4Flow::key`] is that key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct V4Flow {
    /// Source then destination address, as stored in the header.
    addrs: [u8; 8],
    /// Protocol (bits 32..40), source port (16..32), destination port (0..16).
    rest: u64,
}

impl V4Flow {
    /// The [`FlowKey`] this stands for.
    #[inline]
    pub(crate) fn key(self) -> FlowKey {
        let a = self.addrs;
        FlowKey {
            src: IpAddr::from([a[0], a[1], a[2], a[3]]),
            dst: IpAddr::from([a[4], a[5], a[6], a[7]]),
            proto: (self.rest >> 32) as u8,
            src_port: (self.rest >> 16) as u16,
            dst_port: self.rest as u16,
        }
    }
}

impl V4Flow {
    /// A raw header test for further packets of this flow when it is a TCP,
    /// UDP or SCTP flow (whose ports are the 4 bytes after the header).
    #[inline]
    pub(crate) fn quick_match(self) -> Option<V4QuickMatch> {
        let proto = (self.rest >> 32) as u8;
        matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP).then(|| V4QuickMatch {
            addrs: u64::from_ne_bytes(self.addrs),
            proto,
            ports: (self.rest as u32).to_be_bytes(),
        })
    }
}

/// See [`V4Flow::quick_match`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct V4QuickMatch {
    /// Source and destination as stored, read as one native word.
    addrs: u64,
    proto: u8,
    /// Source and destination ports as stored.
    ports: [u8; 4],
}

impl V4QuickMatch {
    /// True when `pkt` is a well-formed IPv4 packet without options, not a
    /// non-first fragment, of this flow: then its [`v4_flow`] is the flow's.
    /// False says nothing (the packet may still be of the flow): test it
    /// with `v4_flow`.
    #[inline(always)]
    pub(crate) fn matches(&self, pkt: &[u8]) -> bool {
        let Some(h) = pkt.first_chunk::<24>() else {
            return false;
        };
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let [.., s0, s1, s2, s3, d0, d1, d2, d3, p0, p1, p2, p3] = *h;
        h[0] == 0x45
            && total >= 24
            && total <= pkt.len()
            && h[6] & 0x1f == 0
            && h[7] == 0
            && h[9] == self.proto
            && u64::from_ne_bytes([s0, s1, s2, s3, d0, d1, d2, d3]) == self.addrs
            && [p0, p1, p2, p3] == self.ports
    }
}

/// [`flow_key`] of an IPv4 packet that has one, packed ([`V4Flow`]); `None`
/// for anything else (IPv6, or malformed: then `flow_key` is `None` too).
///
/// One length check, then reads at fixed offsets of the 20-byte header.
#[inline(always)]
pub(crate) fn v4_flow(pkt: &[u8]) -> Option<V4Flow> {
    // The usual packet: no options, and room for the ports.
    if let Some(h) = pkt.first_chunk::<24>()
        && h[0] == 0x45
    {
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if total >= 24 && total <= pkt.len() {
            let first_fragment = u16::from_be_bytes([h[6], h[7]]) & 0x1fff == 0;
            let proto = h[9];
            let ports = match proto {
                IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP if first_fragment => {
                    u32::from_be_bytes([h[20], h[21], h[22], h[23]])
                }
                IPPROTO_ICMP | IPPROTO_ICMPV6 if first_fragment => {
                    let tc = u32::from(u16::from_be_bytes([h[20], h[21]]));
                    tc << 16 | tc
                }
                _ => 0,
            };
            let [.., s0, s1, s2, s3, d0, d1, d2, d3, _, _, _, _] = *h;
            return Some(V4Flow {
                addrs: [s0, s1, s2, s3, d0, d1, d2, d3],
                rest: u64::from(proto) << 32 | u64::from(ports),
            });
        }
    }
    let h: &[u8; 20] = pkt.first_chunk()?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if ihl < 20 || total < ihl || total > pkt.len() {
        return None;
    }
    let first_fragment = u16::from_be_bytes([h[6], h[7]]) & 0x1fff == 0;
    let proto = h[9];
    let l4_len = total - ihl;
    let ports = match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP if first_fragment && l4_len >= 4 => {
            let p: [u8; 4] = pkt.get(ihl..ihl + 4)?.try_into().ok()?;
            u32::from_be_bytes(p)
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if first_fragment && l4_len >= 2 => {
            let tc = u32::from(u16::from_be_bytes([*pkt.get(ihl)?, *pkt.get(ihl + 1)?]));
            tc << 16 | tc
        }
        _ => 0,
    };
    let [.., s0, s1, s2, s3, d0, d1, d2, d3] = *h;
    Some(V4Flow {
        addrs: [s0, s1, s2, s3, d0, d1, d2, d3],
        rest: u64::from(proto) << 32 | u64::from(ports),
    })
}

/// Parses the flow key of an IPv4 or IPv6 packet; `None` when malformed.
pub fn flow_key(pkt: &[u8]) -> Option<FlowKey> {
    if let Some(f) = v4_flow(pkt) {
        return Some(f.key());
    }
    let (src, dst, proto, l4, first_fragment) = match pkt.first()? >> 4 {
        4 => {
            if pkt.len() < 20 {
                return None;
            }
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            if ihl < 20 || total < ihl || total > pkt.len() {
                return None;
            }
            let frag_off = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
            let src: [u8; 4] = pkt[12..16].try_into().ok()?;
            let dst: [u8; 4] = pkt[16..20].try_into().ok()?;
            (
                IpAddr::from(src),
                IpAddr::from(dst),
                pkt[9],
                &pkt[ihl..total],
                frag_off == 0,
            )
        }
        6 => {
            if pkt.len() < 40 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if 40 + plen > pkt.len() {
                return None;
            }
            let src: [u8; 16] = pkt[8..24].try_into().ok()?;
            let dst: [u8; 16] = pkt[24..40].try_into().ok()?;
            (IpAddr::from(src), IpAddr::from(dst), pkt[6], &pkt[40..40 + plen], true)
        }
        _ => return None,
    };
    let (src_port, dst_port) = match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP if first_fragment && l4.len() >= 4 => {
            (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]))
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if first_fragment && l4.len() >= 2 => {
            let tc = u16::from_be_bytes([l4[0], l4[1]]);
            (tc, tc)
        }
        _ => (0, 0),
    };
    Some(FlowKey {
        src,
        dst,
        proto,
        src_port,
        dst_port,
    })
}

/// Internet checksum (RFC 1071) of `data`, folded and complemented.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// [`checksum`] of a 20-byte IPv4 header (checksum field zero), as five
/// 32-bit big-endian words (the oracle of [`ipv4_header_checksum_of`]).
#[cfg(test)]
fn ipv4_header_checksum(h: &[u8]) -> u16 {
    let mut acc = 0u64;
    for w in h[..20].chunks_exact(4) {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    !fold(acc)
}

/// TTL of the headers [`prepend_ip_header`] writes.
const IPV4_TTL: u8 = 64;

/// Checksum of the IPv4 header [`prepend_ip_header`] writes (version 4, IHL
/// 5, TOS 0, ID 0, no flags, TTL 64), computed from its variable fields.
#[inline]
fn ipv4_header_checksum_of(total: u16, proto: u8, src: u32, dst: u32) -> u16 {
    let acc = 0x4500u64
        + u64::from(total)
        + (u64::from(IPV4_TTL) << 8 | u64::from(proto))
        + u64::from(src >> 16)
        + u64::from(src & 0xffff)
        + u64::from(dst >> 16)
        + u64::from(dst & 0xffff);
    !fold32(acc)
}

fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// [`fold`] of a sum below 2^32: two steps, no loop.
#[inline]
fn fold32(acc: u64) -> u16 {
    debug_assert!(acc < 1 << 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    ((acc & 0xffff) + (acc >> 16)) as u16
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Prepends an IP header (`src` → `dst`, protocol `proto`, TTL 64) to the
/// packet in `buf`, whose current bytes become the payload.
///
/// Returns an error if the families differ, the buffer lacks headroom or the
/// payload is too long for the header's length field.
pub fn prepend_ip_header<B: PacketBuffer>(buf: &mut B, src: IpAddr, dst: IpAddr, proto: u8) -> Result<(), IpError> {
    let payload = buf.len();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(payload + 20).map_err(|_| IpError::TooLong)?;
            // The checksum comes from the field values, not from re-reading
            // the header just written (a load that waits on those stores).
            let c = ipv4_header_checksum_of(total, proto, s.to_bits(), d.to_bits());
            let mut hdr = [0u8; 20];
            hdr[0] = 0x45;
            hdr[2..4].copy_from_slice(&total.to_be_bytes());
            hdr[8] = IPV4_TTL;
            hdr[9] = proto;
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
            hdr[12..16].copy_from_slice(&s.octets());
            hdr[16..20].copy_from_slice(&d.octets());
            buf.prepend(20)?.copy_from_slice(&hdr);
            Ok(())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let plen = u16::try_from(payload).map_err(|_| IpError::TooLong)?;
            let h = buf.prepend(40)?;
            h[..4].copy_from_slice(&[0x60, 0, 0, 0]);
            h[4..6].copy_from_slice(&plen.to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            Ok(())
        }
        _ => Err(IpError::FamilyMismatch),
    }
}

/// Prepends a UDP header (checksum 0 for IPv4, computed for IPv6 by
/// [`prepend_outer`]).
pub fn prepend_udp_header<B: PacketBuffer>(buf: &mut B, src_port: u16, dst_port: u16) -> Result<(), IpError> {
    let len = u16::try_from(buf.len() + 8).map_err(|_| IpError::TooLong)?;
    let h = buf.prepend(8)?;
    h[0..2].copy_from_slice(&src_port.to_be_bytes());
    h[2..4].copy_from_slice(&dst_port.to_be_bytes());
    h[4..6].copy_from_slice(&len.to_be_bytes());
    h[6..8].fill(0);
    Ok(())
}

/// Prepends the outer headers of an ESP packet: UDP (RFC 3948) if `udp_ports`
/// is `Some((src, dst))`, then IP.
pub fn prepend_outer<B: PacketBuffer>(
    buf: &mut B,
    src: IpAddr,
    dst: IpAddr,
    udp_ports: Option<(u16, u16)>,
) -> Result<(), IpError> {
    match udp_ports {
        Some((sp, dp)) => {
            prepend_udp_header(buf, sp, dp)?;
            if let (IpAddr::V6(_), IpAddr::V6(_)) = (src, dst) {
                // IPv6 requires a UDP checksum.
                let c = l4_checksum(src, dst, IPPROTO_UDP, buf.data());
                let c = if c == 0 { 0xffff } else { c };
                buf.data_mut()[6..8].copy_from_slice(&c.to_be_bytes());
            }
            prepend_ip_header(buf, src, dst, IPPROTO_UDP)
        }
        None => prepend_ip_header(buf, src, dst, crate::esp::IPPROTO_ESP),
    }
}

/// The outer headers [`prepend_outer`] writes for one SA, prepared once for
/// a run of packets: an IPv4 header without UDP (the common raw-port case) is
/// a template whose constant fields' checksum is summed in advance.
#[derive(Debug, Clone, Copy)]
pub struct OuterHeaders {
    kind: OuterKind,
}

#[derive(Debug, Clone, Copy)]
enum OuterKind {
    /// IPv4, protocol ESP: the header with zero length and checksum, and the
    /// one's-complement sum of its other fields, folded to 16 bits (nonzero).
    V4Esp { hdr: [u8; 20], sum: u64 },
    /// Anything else: [`prepend_outer`] per packet.
    Other {
        src: IpAddr,
        dst: IpAddr,
        udp_ports: Option<(u16, u16)>,
    },
}

impl OuterHeaders {
    /// The headers of [`prepend_outer`]`(_, src, dst, udp_ports)`.
    pub fn new(src: IpAddr, dst: IpAddr, udp_ports: Option<(u16, u16)>) -> Self {
        let kind = match (src, dst, udp_ports) {
            (IpAddr::V4(s), IpAddr::V4(d), None) => {
                let proto = crate::esp::IPPROTO_ESP;
                let mut hdr = [0u8; 20];
                hdr[0] = 0x45;
                hdr[8] = IPV4_TTL;
                hdr[9] = proto;
                hdr[12..16].copy_from_slice(&s.octets());
                hdr[16..20].copy_from_slice(&d.octets());
                // ipv4_header_checksum_of without the total length.
                let (s, d) = (s.to_bits(), d.to_bits());
                let sum = 0x4500u64
                    + (u64::from(IPV4_TTL) << 8 | u64::from(proto))
                    + u64::from(s >> 16)
                    + u64::from(s & 0xffff)
                    + u64::from(d >> 16)
                    + u64::from(d & 0xffff);
                // Folded now, so one fold per packet is enough (see ipv4_esp).
                let sum = u64::from(fold32(sum));
                OuterKind::V4Esp { hdr, sum }
            }
            _ => OuterKind::Other { src, dst, udp_ports },
        };
        Self { kind }
    }

    /// Prepends the headers to the ESP packet in `buf`, as [`prepend_outer`] does.
    #[inline]
    pub fn prepend<B: PacketBuffer>(&self, buf: &mut B) -> Result<(), IpError> {
        match self.kind {
            OuterKind::V4Esp { .. } => {
                let hdr = self.ipv4_esp(buf.len()).ok_or(IpError::TooLong)?;
                buf.prepend(20)?.copy_from_slice(&hdr);
                Ok(())
            }
            OuterKind::Other { src, dst, udp_ports } => prepend_outer(buf, src, dst, udp_ports),
        }
    }

    /// The 20-byte IPv4 header [`OuterHeaders::prepend`] writes in front of an
    /// ESP packet of `esp_len` bytes, when it is one (IPv4 without UDP) and
    /// the length fits; `None` otherwise.
    #[inline]
    pub fn ipv4_esp(&self, esp_len: usize) -> Option<[u8; 20]> {
        match self.kind {
            OuterKind::V4Esp { mut hdr, sum } => {
                let total = u16::try_from(esp_len + 20).ok()?;
                // sum (folded, nonzero) and total are at most 0xffff, so one
                // end-around carry gives what fold32 does: a sum of at most 0xffff.
                let x = sum + u64::from(total);
                let c = !(((x & 0xffff) + (x >> 16)) as u16);
                hdr[2..4].copy_from_slice(&total.to_be_bytes());
                hdr[10..12].copy_from_slice(&c.to_be_bytes());
                Some(hdr)
            }
            OuterKind::Other { .. } => None,
        }
    }
}

/// Checksum of a TCP/UDP segment `l4` (checksum field included as stored) with its pseudo-header.
pub fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> u16 {
    let mut acc = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum_words(&s.octets(), acc);
            acc = sum_words(&d.octets(), acc);
        }
        (s, d) => {
            let s6 = match s {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            let d6 = match d {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            acc = sum_words(&s6, acc);
            acc = sum_words(&d6, acc);
        }
    }
    acc += u64::from(proto) + l4.len() as u64;
    !fold(sum_words(l4, acc))
}

/// Header construction errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpError {
    /// Source and destination are of different families.
    #[error("source and destination address families differ")]
    FamilyMismatch,
    /// The payload does not fit the length field.
    #[error("payload too long for the header")]
    TooLong,
    /// Buffer limits.
    #[error(transparent)]
    Buf(#[from] BufError),
    /// Not an IPv4 packet with a plain 20-byte header, or an MTU too small to fragment for.
    #[error("cannot fragment this packet for MTU {mtu}")]
    NotFragmentable {
        /// The MTU asked for.
        mtu: usize,
    },
}

/// Cuts an IP packet as [`prepend_ip_header`] writes it (IPv4 with a
/// 20-byte header, IPv6 without extension headers) into fragments of at
/// most `mtu` bytes with identification `id` (RFC 791; RFC 8200 §4.5); a
/// packet that fits comes back whole. For messages of our own too large for
/// the link, such as IKE with a certificate chain.
pub fn fragment(packet: &[u8], mtu: usize, id: u32) -> Result<Vec<Vec<u8>>, IpError> {
    match packet.first().map(|b| b >> 4) {
        Some(6) => fragment_ipv6(packet, mtu, id),
        _ => fragment_ipv4(packet, mtu, id as u16),
    }
}

/// [`fragment`] of an IPv6 packet: each fragment repeats the fixed header,
/// followed by a fragment header.
fn fragment_ipv6(packet: &[u8], mtu: usize, id: u32) -> Result<Vec<Vec<u8>>, IpError> {
    const HDR: usize = 40;
    const FRAG: usize = 8;
    /// Next-header value of the fragment header.
    const FRAGMENT_HEADER: u8 = 44;
    if packet.len() <= mtu {
        return Ok(vec![packet.to_vec()]);
    }
    if packet.len() < HDR || packet[0] >> 4 != 6 || mtu < HDR + FRAG + 8 {
        return Err(IpError::NotFragmentable { mtu });
    }
    let (hdr, payload) = packet.split_at(HDR);
    let next = hdr[6];
    let step = (mtu - HDR - FRAG) & !7;
    let mut out = Vec::with_capacity(payload.len().div_ceil(step));
    for (k, chunk) in payload.chunks(step).enumerate() {
        let offset = u16::try_from(k * step).map_err(|_| IpError::TooLong)?;
        let more = (k + 1) * step < payload.len();
        let plen = u16::try_from(FRAG + chunk.len()).map_err(|_| IpError::TooLong)?;
        let mut f = Vec::with_capacity(HDR + FRAG + chunk.len());
        f.extend_from_slice(hdr);
        f[4..6].copy_from_slice(&plen.to_be_bytes());
        f[6] = FRAGMENT_HEADER;
        f.extend_from_slice(&[next, 0]);
        f.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(chunk);
        out.push(f);
    }
    Ok(out)
}

/// [`fragment`] of an IPv4 packet.
fn fragment_ipv4(packet: &[u8], mtu: usize, id: u16) -> Result<Vec<Vec<u8>>, IpError> {
    const HDR: usize = 20;
    if packet.len() <= mtu {
        return Ok(vec![packet.to_vec()]);
    }
    if packet.len() < HDR || packet[0] != 0x45 || mtu < HDR + 8 {
        return Err(IpError::NotFragmentable { mtu });
    }
    let (hdr, payload) = packet.split_at(HDR);
    // Every fragment but the last carries a multiple of 8 bytes.
    let step = (mtu - HDR) & !7;
    let mut out = Vec::with_capacity(payload.len().div_ceil(step));
    for (k, chunk) in payload.chunks(step).enumerate() {
        let offset = u16::try_from(k * step / 8).map_err(|_| IpError::TooLong)?;
        let more = (k + 1) * step < payload.len();
        let total = u16::try_from(HDR + chunk.len()).map_err(|_| IpError::TooLong)?;
        let mut f = Vec::with_capacity(HDR + chunk.len());
        f.extend_from_slice(hdr);
        f[2..4].copy_from_slice(&total.to_be_bytes());
        f[4..6].copy_from_slice(&id.to_be_bytes());
        f[6..8].copy_from_slice(&(offset | if more { 0x2000 } else { 0 }).to_be_bytes());
        f[10..12].fill(0);
        let c = checksum(&f[..HDR]);
        f[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(chunk);
        out.push(f);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_reassemble_to_the_packet() {
        for (src, dst, hdr) in [("192.0.2.1", "192.0.2.2", 20), ("2001:db8::1", "2001:db8::2", 40)] {
            let mut b = crate::buf::PacketBuf::new(64, 70_000);
            let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
            b.set_data(&data).unwrap();
            prepend_outer(&mut b, src.parse().unwrap(), dst.parse().unwrap(), Some((4500, 4500))).unwrap();
            let frags = fragment(b.data(), 1500, 77).unwrap();
            assert_eq!(frags.len(), 4, "{src}");
            assert!(frags.iter().all(|f| f.len() <= 1500));
            if hdr == 20 {
                assert!(frags.iter().all(|f| checksum(&f[..20]) == 0));
            }
            let mut r = crate::reassembly::Reassembly::new();
            let now = std::time::Instant::now();
            let mut done = None;
            for f in frags.iter().rev() {
                done = r.add(f, now).unwrap();
            }
            let d = done.expect("reassembled");
            assert_eq!(d.payload, b.data()[hdr..], "{src}");
            assert_eq!(d.protocol, IPPROTO_UDP);
            assert_eq!(
                fragment(&b.data()[..1000], 1500, 1).unwrap(),
                vec![b.data()[..1000].to_vec()]
            );
        }
    }

    #[test]
    fn ipv4_header_checksum_matches_rfc1071() {
        let mut h = [0u8; 20];
        for seed in 0u32..500 {
            for (i, b) in h.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2_654_435_761).rotate_left(i as u32 * 3) >> 7) as u8
                    ^ (i as u8).wrapping_mul(37);
            }
            h[10] = 0;
            h[11] = 0;
            assert_eq!(ipv4_header_checksum(&h), checksum(&h));
            // The header prepend_ip_header writes, with these addresses and length.
            h[..2].copy_from_slice(&[0x45, 0]);
            h[4..9].copy_from_slice(&[0, 0, 0, 0, IPV4_TTL]);
            let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            let total = u16::from_be_bytes([h[2], h[3]]);
            assert_eq!(ipv4_header_checksum_of(total, h[9], word(12), word(16)), checksum(&h));
        }
        h.fill(0xff);
        h[10..12].fill(0);
        assert_eq!(ipv4_header_checksum(&h), checksum(&h));
    }
    use crate::buf::PacketBuf;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let mut b = PacketBuf::from_slice(&[1, 2, 3, 4]).unwrap();
        prepend_ip_header(&mut b, "10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 17).unwrap();
        assert_eq!(checksum(&b.data()[..20]), 0);
        assert_eq!(b.len(), 24);
        let k = flow_key(b.data()).unwrap();
        assert_eq!(k.proto, 17);
        assert_eq!((k.src_port, k.dst_port), (0x0102, 0x0304));
    }

    #[test]
    fn udp_over_ipv6_checksum_verifies() {
        let mut b = PacketBuf::from_slice(&[9u8; 33]).unwrap();
        let s: IpAddr = "2001:db8::1".parse().unwrap();
        let d: IpAddr = "2001:db8::2".parse().unwrap();
        prepend_outer(&mut b, s, d, Some((4500, 4500))).unwrap();
        assert_eq!(l4_checksum(s, d, 17, &b.data()[40..]), 0);
        let k = flow_key(b.data()).unwrap();
        assert_eq!((k.src, k.dst, k.dst_port), (s, d, 4500));
        assert!(prepend_outer(&mut b, s, "1.2.3.4".parse().unwrap(), None).is_err());
    }

    /// Pseudo-random bytes (xorshift), deterministic.
    fn noise(seed: &mut u64, out: &mut [u8]) {
        for b in out {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *b = (*seed >> 24) as u8;
        }
    }

    /// The flow key of the general parser (IPv4 path kept here as the oracle).
    fn flow_key_oracle(pkt: &[u8]) -> Option<FlowKey> {
        if pkt.first()? >> 4 != 4 {
            return flow_key(pkt);
        }
        if pkt.len() < 20 {
            return None;
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        if ihl < 20 || total < ihl || total > pkt.len() {
            return None;
        }
        let first_fragment = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff == 0;
        let l4 = &pkt[ihl..total];
        let (src_port, dst_port) = match pkt[9] {
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP if first_fragment && l4.len() >= 4 => {
                (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]))
            }
            IPPROTO_ICMP | IPPROTO_ICMPV6 if first_fragment && l4.len() >= 2 => {
                let tc = u16::from_be_bytes([l4[0], l4[1]]);
                (tc, tc)
            }
            _ => (0, 0),
        };
        let src: [u8; 4] = pkt[12..16].try_into().unwrap();
        let dst: [u8; 4] = pkt[16..20].try_into().unwrap();
        Some(FlowKey {
            src: IpAddr::from(src),
            dst: IpAddr::from(dst),
            proto: pkt[9],
            src_port,
            dst_port,
        })
    }

    #[test]
    fn v4_flow_matches_flow_key() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u8; 80];
        let protos = [
            IPPROTO_TCP,
            IPPROTO_UDP,
            IPPROTO_SCTP,
            IPPROTO_ICMP,
            IPPROTO_ICMPV6,
            50,
            0,
        ];
        for n in 0..200_000u32 {
            noise(&mut seed, &mut buf);
            let len = buf[40] as usize % 81;
            // Mostly IPv4 with plausible lengths, some anything.
            if n % 8 != 0 {
                buf[0] = 0x40 | (buf[0] & 0x0f);
                if n % 4 != 0 {
                    buf[0] = 0x45 + (buf[0] & 1) * (buf[1] & 3);
                }
                if n % 3 != 0 {
                    let t = (buf[2] as usize % (len + 4)) as u16;
                    buf[2..4].copy_from_slice(&t.to_be_bytes());
                }
                if n % 2 == 0 {
                    buf[6] &= 0xe0;
                    buf[7] = if n % 5 == 0 { 1 } else { 0 };
                }
                buf[9] = protos[buf[9] as usize % protos.len()];
            }
            let pkt = &buf[..len];
            let want = flow_key_oracle(pkt);
            assert_eq!(flow_key(pkt), want, "{pkt:02x?}");
            let v4 = v4_flow(pkt);
            if pkt.first().is_some_and(|b| b >> 4 == 4) {
                assert_eq!(v4.map(V4Flow::key), want, "{pkt:02x?}");
            } else {
                assert!(v4.is_none());
            }
        }
        // Equal keys, equal packed forms (and the converse, by `key` being injective).
        let a = v4_flow(&[
            0x45, 0, 0, 24, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1, 2, 3, 4,
        ]);
        let mut p = [
            0x45, 0, 0, 24, 9, 9, 0x40, 0, 1, 17, 7, 7, 10, 0, 0, 1, 10, 0, 0, 2, 1, 2, 3, 4,
        ];
        assert_eq!(a, v4_flow(&p));
        p[23] = 5;
        assert_ne!(a, v4_flow(&p));
    }

    #[test]
    fn quick_match_implies_the_same_flow() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let protos = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP, 50];
        let mut base = [0u8; 64];
        let (mut quick, mut hits) = (0, 0);
        for n in 0..100_000u32 {
            noise(&mut seed, &mut base);
            base[0] = 0x45;
            base[2..4].copy_from_slice(&64u16.to_be_bytes());
            base[6] = 0;
            base[7] = 0;
            base[9] = protos[n as usize % protos.len()];
            let f = v4_flow(&base).unwrap();
            let Some(q) = f.quick_match() else {
                assert!(!matches!(base[9], IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP));
                continue;
            };
            quick += 1;
            // A variant of the packet: some header bytes and the length changed.
            let mut p = base;
            let mut r = [0u8; 4];
            noise(&mut seed, &mut r);
            match r[0] % 8 {
                0 => p[usize::from(r[1]) % 24] = r[2],
                1 => p[6] = r[2] & 0x3f,
                2 => p[7] = r[2] & 1,
                3 => p[2..4].copy_from_slice(&u16::from(r[2] % 70).to_be_bytes()),
                4 => p[usize::from(r[1]) % 8 + 12] ^= 1 << (r[2] % 8),
                5 => p[usize::from(r[1]) % 4 + 20] ^= 1 << (r[2] % 8),
                _ => p[24 + usize::from(r[1]) % 40] = r[2],
            }
            let len = if r[3] % 4 == 0 { usize::from(r[3]) % 65 } else { 64 };
            let pkt = &p[..len];
            if q.matches(pkt) {
                hits += 1;
                assert_eq!(v4_flow(pkt), Some(f), "{pkt:02x?}");
            }
        }
        assert!(quick > 50_000 && hits > 10_000, "{quick} {hits}");
    }

    #[test]
    fn outer_headers_match_prepend_outer() {
        let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let cases = [
            (v4("10.0.0.1"), v4("192.168.200.254"), None),
            (v4("255.255.255.255"), v4("255.255.255.254"), None),
            (v4("0.0.0.0"), v4("0.0.0.1"), None),
            (v4("10.0.0.1"), v4("10.0.0.2"), Some((4500, 4500))),
            (v4("2001:db8::1"), v4("2001:db8::2"), None),
            (v4("2001:db8::1"), v4("2001:db8::2"), Some((4501, 4500))),
            (v4("2001:db8::1"), v4("10.0.0.2"), None),
        ];
        for (src, dst, ports) in cases {
            let outer = OuterHeaders::new(src, dst, ports);
            for len in [0usize, 1, 64, 1419, 1500, 65515, 65516, 70000] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut a = PacketBuf::new(128, len + 256);
                a.set_data(&payload).unwrap();
                let mut b = a.clone();
                let ra = prepend_outer(&mut a, src, dst, ports);
                let rb = outer.prepend(&mut b);
                assert_eq!(ra, rb, "{src} {dst} {ports:?} {len}");
                assert_eq!(a.data(), b.data(), "{src} {dst} {ports:?} {len}");
            }
        }
        // No headroom.
        let mut a = PacketBuf::new(10, 100);
        a.set_data(&[1, 2, 3]).unwrap();
        let mut b = a.clone();
        let (s, d) = (v4("10.0.0.1"), v4("10.0.0.2"));
        assert_eq!(
            prepend_outer(&mut a, s, d, None),
            OuterHeaders::new(s, d, None).prepend(&mut b)
        );
        assert_eq!(a.data(), b.data());
    }

    #[test]
    fn fold32_matches_fold() {
        let mut seed = 1u64;
        let mut b = [0u8; 4];
        for _ in 0..100_000 {
            noise(&mut seed, &mut b);
            let acc = u64::from(u32::from_le_bytes(b));
            assert_eq!(fold32(acc), fold(acc));
        }
        for acc in [0, 0xffff, 0x10000, 0x1fffe, 0xffff_ffff, 0xffff_0000, 0x0001_ffff] {
            assert_eq!(fold32(acc), fold(acc));
        }
    }

    #[test]
    fn malformed_flow_keys() {
        assert!(flow_key(&[]).is_none());
        assert!(flow_key(&[0x45; 19]).is_none());
        assert!(flow_key(&[0x60; 39]).is_none());
        assert!(flow_key(&[0x10; 60]).is_none());
    }
}

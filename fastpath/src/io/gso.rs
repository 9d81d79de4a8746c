//! Segmentation and coalescing offloads for TUN devices with a virtio-net
//! header (`IFF_VNET_HDR` + `TUNSETOFFLOAD`).
//!
//! Outbound, the kernel hands over TCP/UDP "super-packets" of up to 64 KiB
//! with a [`VirtioNetHdr`] saying how to cut them ([`segment`]: GSO in user
//! space, every segment gets correct IP/TCP/UDP headers and checksums).
//! Inbound, consecutive in-order TCP segments of one flow are merged back
//! into one super-packet ([`TcpCoalescer`]: GRO), so the kernel takes one
//! write per burst instead of one per segment.
//!
//! All parsing is bounds-checked; malformed packets are errors, never panics.

use crate::buf::{PacketBuf, PacketBuffer};
use thiserror::Error;

/// Size of `struct virtio_net_hdr` (no `num_buffers`), the TUN default.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit of `gso_type`.
pub const GSO_ECN: u8 = 0x80;
/// Largest IP packet a super-packet may be.
pub const MAX_SUPER_PACKET: usize = 65535;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a super-packet could not be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GsoError {
    /// Shorter than its virtio-net header or its IP/L4 headers.
    #[error("packet truncated")]
    Truncated,
    /// Not IPv4/IPv6 carrying TCP/UDP directly, or headers inconsistent with the GSO type.
    #[error("unsupported packet for GSO type {0}")]
    Unsupported(u8),
    /// `gso_size` of zero for a GSO packet.
    #[error("GSO size is zero")]
    ZeroGsoSize,
    /// The checksum offsets point outside the packet.
    #[error("checksum offsets outside the packet")]
    BadCsumOffsets,
    /// More segments than output buffers, or a segment larger than a buffer.
    #[error("output buffers too small or too few")]
    NoRoom,
}

/// `struct virtio_net_hdr` (host byte order, as TUN uses it on little-endian hosts by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*` flags.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` type (with the ECN bit).
    pub gso_type: u8,
    /// Length of the headers to copy into every segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Parses the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, GsoError> {
        if b.len() < VNET_HDR_LEN {
            return Err(GsoError::Truncated);
        }
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header in wire form.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Ones' complement sum of `data` (unfolded, big-endian 16-bit words) added to `acc`.
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        acc += u64::from(u32::from_be_bytes([c[4], c[5], c[6], c[7]]));
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a ones' complement sum to 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Unfolded pseudo-header sum of an IPv4/IPv6 packet `ip` (header at the
/// start) for an L4 segment of `l4_len` bytes and protocol `proto`.
fn pseudo_sum(ip: &[u8], proto: u8, l4_len: usize) -> u64 {
    let acc = if ip[0] >> 4 == 4 {
        sum(&ip[12..20], 0)
    } else {
        sum(&ip[8..40], 0)
    };
    acc + u64::from(proto) + l4_len as u64
}

/// Layout of a TCP or UDP packet directly over IPv4/IPv6.
#[derive(Debug, Clone, Copy)]
struct L4Layout {
    v4: bool,
    ip_len: usize,
    proto: u8,
    /// IP + L4 header length.
    hdr_len: usize,
}

fn l4_layout(p: &[u8]) -> Option<L4Layout> {
    let first = *p.first()?;
    let (v4, ip_len, proto) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl {
                return None;
            }
            // A fragment has no L4 header to work on.
            if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
                return None;
            }
            (true, ihl, p[9])
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            (false, 40, p[6])
        }
        _ => return None,
    };
    let l4_hdr = match proto {
        PROTO_TCP => {
            let off = *p.get(ip_len + 12)?;
            let doff = usize::from(off >> 4) * 4;
            if doff < 20 {
                return None;
            }
            doff
        }
        PROTO_UDP => 8,
        _ => return None,
    };
    let hdr_len = ip_len + l4_hdr;
    (p.len() >= hdr_len).then_some(L4Layout {
        v4,
        ip_len,
        proto,
        hdr_len,
    })
}

/// Sets the IP length field of `pkt` (whole packet) and, for IPv4, the header checksum.
fn fix_ip_header(pkt: &mut [u8], l: &L4Layout, ip_id: Option<u16>) {
    let total = pkt.len();
    if l.v4 {
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        if let Some(id) = ip_id {
            pkt[4..6].copy_from_slice(&id.to_be_bytes());
        }
        pkt[10..12].copy_from_slice(&[0, 0]);
        let c = !fold(sum(&pkt[..l.ip_len], 0));
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        pkt[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    }
}

/// Writes the full TCP/UDP checksum of `pkt`.
fn fix_l4_checksum(pkt: &mut [u8], l: &L4Layout) {
    let l4_len = pkt.len() - l.ip_len;
    let at = l.ip_len + if l.proto == PROTO_TCP { 16 } else { 6 };
    pkt[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = !fold(sum(&pkt[l.ip_len..], pseudo_sum(pkt, l.proto, l4_len)));
    if l.proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// How many packets [`segment`] makes of `pkt` (IP packet after the header `h`).
pub fn segment_count(h: &VirtioNetHdr, pkt: &[u8]) -> Result<usize, GsoError> {
    if h.gso_type & !GSO_ECN == GSO_NONE {
        return Ok(1);
    }
    let l = l4_layout(pkt).ok_or(GsoError::Unsupported(h.gso_type))?;
    if h.gso_size == 0 {
        return Err(GsoError::ZeroGsoSize);
    }
    let payload = pkt.len() - l.hdr_len;
    Ok(payload.div_ceil(usize::from(h.gso_size)).max(1))
}

/// Cuts the IP packet `pkt` (which followed header `h` on the TUN device)
/// into MTU-sized packets in `out`, each with correct IP and TCP/UDP headers
/// and checksums; a non-GSO packet is copied once with its checksum completed.
/// Returns how many buffers were filled.
pub fn segment(h: &VirtioNetHdr, pkt: &[u8], out: &mut [PacketBuf]) -> Result<usize, GsoError> {
    let gso = h.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        let b = out.first_mut().ok_or(GsoError::NoRoom)?;
        b.set_data(pkt).map_err(|_| GsoError::NoRoom)?;
        if h.flags & F_NEEDS_CSUM != 0 {
            complete_checksum(b.data_mut(), h)?;
        }
        return Ok(1);
    }
    let l = l4_layout(pkt).ok_or(GsoError::Unsupported(h.gso_type))?;
    let expected_proto = match gso {
        GSO_TCPV4 if l.v4 => PROTO_TCP,
        GSO_TCPV6 if !l.v4 => PROTO_TCP,
        GSO_UDP_L4 => PROTO_UDP,
        _ => return Err(GsoError::Unsupported(h.gso_type)),
    };
    if l.proto != expected_proto {
        return Err(GsoError::Unsupported(h.gso_type));
    }
    let mss = usize::from(h.gso_size);
    if mss == 0 {
        return Err(GsoError::ZeroGsoSize);
    }
    let (headers, payload) = pkt.split_at(l.hdr_len);
    let count = payload.len().div_ceil(mss).max(1);
    if count > out.len() {
        return Err(GsoError::NoRoom);
    }
    let ip_id = if l.v4 { u16::from_be_bytes([pkt[4], pkt[5]]) } else { 0 };
    let tcp_seq = (l.proto == PROTO_TCP).then(|| {
        let s = l.ip_len + 4;
        u32::from_be_bytes([pkt[s], pkt[s + 1], pkt[s + 2], pkt[s + 3]])
    });
    for (i, b) in out.iter_mut().take(count).enumerate() {
        let start = (i * mss).min(payload.len());
        let chunk = &payload[start..(start + mss).min(payload.len())];
        b.reset();
        let seg = b.append(headers.len() + chunk.len()).map_err(|_| GsoError::NoRoom)?;
        seg[..headers.len()].copy_from_slice(headers);
        seg[headers.len()..].copy_from_slice(chunk);
        let t = l.ip_len;
        if let Some(seq) = tcp_seq {
            let seq = seq.wrapping_add(start as u32);
            seg[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
            let mut flags = seg[t + 13];
            if i + 1 < count {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                flags &= !TCP_CWR;
            }
            seg[t + 13] = flags;
        } else {
            let ulen = (8 + chunk.len()) as u16;
            seg[t + 4..t + 6].copy_from_slice(&ulen.to_be_bytes());
        }
        fix_ip_header(seg, &l, l.v4.then(|| ip_id.wrapping_add(i as u16)));
        fix_l4_checksum(seg, &l);
    }
    Ok(count)
}

/// Completes a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) in place.
pub fn complete_checksum(pkt: &mut [u8], h: &VirtioNetHdr) -> Result<(), GsoError> {
    let start = usize::from(h.csum_start);
    let at = start + usize::from(h.csum_offset);
    if start > pkt.len() || at + 2 > pkt.len() {
        return Err(GsoError::BadCsumOffsets);
    }
    // The field holds the pseudo-header sum; summing over it completes the checksum.
    let mut c = !fold(sum(&pkt[start..], 0));
    let udp = pkt.first().is_some_and(|v| {
        (v >> 4 == 4 && pkt.get(9) == Some(&PROTO_UDP)) || (v >> 4 == 6 && pkt.get(6) == Some(&PROTO_UDP))
    });
    if udp && c == 0 {
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// A TCP segment's identity for coalescing.
#[derive(Debug, Clone, Copy)]
struct TcpSeg {
    l: L4Layout,
    seq: u32,
    flags: u8,
    payload: usize,
}

fn tcp_seg(p: &[u8]) -> Option<TcpSeg> {
    let l = l4_layout(p)?;
    if l.proto != PROTO_TCP {
        return None;
    }
    // The IP length must match the buffer (no trailing bytes).
    let ip_total = if l.v4 {
        usize::from(u16::from_be_bytes([p[2], p[3]]))
    } else {
        40 + usize::from(u16::from_be_bytes([p[4], p[5]]))
    };
    if ip_total != p.len() {
        return None;
    }
    let t = l.ip_len;
    Some(TcpSeg {
        l,
        seq: u32::from_be_bytes([p[t + 4], p[t + 5], p[t + 6], p[t + 7]]),
        flags: p[t + 13],
        payload: p.len() - l.hdr_len,
    })
}

/// True when `next` continues `first`'s flow right after `prev` and may join
/// the same super-packet (same addresses, ports, ACK, window, options and
/// IP fields; plain ACK segments; `prev` was a full-sized segment).
fn continues(first: &[u8], f: &TcpSeg, prev: &TcpSeg, next: &[u8], n: &TcpSeg) -> bool {
    let (fl, nl) = (&f.l, &n.l);
    if fl.v4 != nl.v4 || fl.ip_len != nl.ip_len || fl.hdr_len != nl.hdr_len {
        return false;
    }
    if prev.payload != f.payload || n.payload == 0 || n.payload > f.payload {
        return false;
    }
    if prev.flags & !TCP_PSH != 0x10 || n.flags & !TCP_PSH != 0x10 || prev.flags & TCP_PSH != 0 {
        return false;
    }
    if prev.seq.wrapping_add(prev.payload as u32) != n.seq {
        return false;
    }
    let t = fl.ip_len;
    if fl.v4 {
        // Version/IHL, TOS, flags/fragment, TTL, protocol, addresses.
        if first[0..2] != next[0..2] || first[6..10] != next[6..10] || first[12..20] != next[12..20] {
            return false;
        }
    } else if first[0..4] != next[0..4] || first[6..40] != next[6..40] {
        return false;
    }
    // Ports, ACK number, data offset, window, then the options.
    first[t..t + 4] == next[t..t + 4]
        && first[t + 8..t + 12] == next[t + 8..t + 12]
        && first[t + 12] == next[t + 12]
        && first[t + 14..t + 16] == next[t + 14..t + 16]
        && first[t + 20..fl.hdr_len] == next[t + 20..nl.hdr_len]
}

/// Merges runs of consecutive TCP segments into super-packets for a TUN
/// device with a virtio-net header (GRO in user space).
#[derive(Debug, Default)]
pub struct TcpCoalescer {
    head: Vec<u8>,
}

/// One packet to write to the TUN device: a virtio-net header plus headers,
/// then payload pieces (write them with `writev`).
#[derive(Debug)]
pub struct Coalesced<'a> {
    /// virtio-net header followed by the (fixed-up) IP and L4 headers.
    pub head: &'a [u8],
    /// Payload slices of the merged segments, in order.
    pub payloads: Vec<&'a [u8]>,
}

impl TcpCoalescer {
    /// A coalescer with its header scratch allocated.
    pub fn new() -> Self {
        Self {
            head: Vec::with_capacity(VNET_HDR_LEN + 128),
        }
    }

    /// Length of the run of packets at the start of `pkts` that merge with
    /// `pkts[0]` (1 when it merges with nothing).
    pub fn run_len(pkts: &[&[u8]]) -> usize {
        let Some(first) = pkts.first() else { return 0 };
        let Some(f) = tcp_seg(first) else { return 1 };
        if f.payload == 0 {
            return 1;
        }
        let mut prev = f;
        let mut total = first.len();
        let mut k = 1;
        while let Some(next) = pkts.get(k) {
            let Some(n) = tcp_seg(next) else { break };
            if total + n.payload > MAX_SUPER_PACKET || !continues(first, &f, &prev, next, &n) {
                break;
            }
            total += n.payload;
            prev = n;
            k += 1;
        }
        k
    }

    /// Builds the TUN write for `run` (a run found by [`TcpCoalescer::run_len`]).
    /// A single packet gets a plain virtio-net header.
    pub fn build<'a>(&'a mut self, run: &[&'a [u8]]) -> Coalesced<'a> {
        self.head.clear();
        let Some(first) = run.first() else {
            self.head.extend_from_slice(&VirtioNetHdr::default().to_bytes());
            return Coalesced {
                head: &self.head,
                payloads: Vec::new(),
            };
        };
        let seg = if run.len() > 1 { tcp_seg(first) } else { None };
        let Some(f) = seg else {
            self.head.extend_from_slice(&VirtioNetHdr::default().to_bytes());
            return Coalesced {
                head: &self.head,
                payloads: vec![*first],
            };
        };
        let l = f.l;
        let total: usize = l.hdr_len + run.iter().map(|p| p.len() - l.hdr_len).sum::<usize>();
        let vh = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if l.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
            hdr_len: l.hdr_len as u16,
            gso_size: f.payload as u16,
            csum_start: l.ip_len as u16,
            csum_offset: 16,
        };
        self.head.extend_from_slice(&vh.to_bytes());
        self.head.extend_from_slice(&first[..l.hdr_len]);
        let hdr = &mut self.head[VNET_HDR_LEN..];
        let t = l.ip_len;
        // PSH of the last segment carries over.
        if run.iter().any(|p| p.get(t + 13).is_some_and(|fl| fl & TCP_PSH != 0)) {
            hdr[t + 13] |= TCP_PSH;
        }
        if l.v4 {
            hdr[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            hdr[10..12].copy_from_slice(&[0, 0]);
            let c = !fold(sum(&hdr[..l.ip_len], 0));
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            hdr[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        }
        // Partial checksum: the pseudo-header sum, which the receiver completes.
        let ps = fold(pseudo_sum(hdr, PROTO_TCP, total - l.ip_len));
        hdr[t + 16..t + 18].copy_from_slice(&ps.to_be_bytes());
        let payloads = run.iter().map(|p| &p[l.hdr_len..]).collect();
        Coalesced {
            head: &self.head,
            payloads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::{checksum, l4_checksum};
    use std::net::IpAddr;

    fn tcp4(payload: usize, seq: u32, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 32 + payload];
        p[0] = 0x45;
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 1, 0, 1]);
        p[16..20].copy_from_slice(&[10, 2, 0, 1]);
        p[20..22].copy_from_slice(&5201u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&77u32.to_be_bytes());
        p[32] = 8 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&500u16.to_be_bytes());
        p[40..52].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        for (i, b) in p[52..].iter_mut().enumerate() {
            *b = (i * 7 + seq as usize) as u8;
        }
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let c = l4_checksum(ip(&p, 12), ip(&p, 16), 6, &p[20..]);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn ip(p: &[u8], at: usize) -> IpAddr {
        IpAddr::from([p[at], p[at + 1], p[at + 2], p[at + 3]])
    }

    fn bufs(n: usize) -> Vec<PacketBuf> {
        (0..n).map(|_| PacketBuf::with_defaults()).collect()
    }

    fn assert_valid_tcp4(p: &[u8]) {
        assert_eq!(checksum(&p[..20]), 0, "IPv4 header checksum");
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(l4_checksum(ip(p, 12), ip(p, 16), 6, &p[20..]), 0, "TCP checksum");
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VirtioNetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 52,
            gso_size: 1348,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(VirtioNetHdr::parse(&h.to_bytes()).unwrap(), h);
        assert_eq!(VirtioNetHdr::parse(&[0; 9]), Err(GsoError::Truncated));
    }

    #[test]
    fn tcp_super_packet_is_cut_into_valid_segments() {
        let mss = 1348;
        let sup = tcp4(mss * 3 + 100, 1000, 0x18 | TCP_FIN);
        let h = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: mss as u16,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(segment_count(&h, &sup).unwrap(), 4);
        let mut out = bufs(4);
        assert_eq!(segment(&h, &sup, &mut out).unwrap(), 4);
        let mut joined = Vec::new();
        for (i, b) in out.iter().enumerate() {
            let p = b.data();
            assert_valid_tcp4(p);
            let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
            assert_eq!(seq, 1000 + (i * mss) as u32);
            assert_eq!(u16::from_be_bytes([p[4], p[5]]), 0x1234 + i as u16);
            let last = i == 3;
            assert_eq!(p[33] & (TCP_FIN | TCP_PSH) != 0, last, "FIN/PSH only on the last");
            assert_eq!(p.len(), 52 + if last { 100 } else { mss });
            joined.extend_from_slice(&p[52..]);
        }
        assert_eq!(joined, &sup[52..]);
        assert_eq!(segment(&h, &sup, &mut bufs(3)), Err(GsoError::NoRoom));
    }

    #[test]
    fn udp_super_packet_segments_have_lengths_and_checksums() {
        let mut p = vec![0u8; 28 + 3000];
        p[0] = 0x45;
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 1, 0, 1]);
        p[16..20].copy_from_slice(&[10, 2, 0, 1]);
        p[20..22].copy_from_slice(&53u16.to_be_bytes());
        p[22..24].copy_from_slice(&54u16.to_be_bytes());
        for (i, b) in p[28..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let h = VirtioNetHdr {
            gso_type: GSO_UDP_L4,
            gso_size: 1200,
            ..Default::default()
        };
        let mut out = bufs(3);
        assert_eq!(segment(&h, &p, &mut out).unwrap(), 3);
        for b in &out {
            let s = b.data();
            assert_eq!(checksum(&s[..20]), 0);
            assert_eq!(usize::from(u16::from_be_bytes([s[24], s[25]])), s.len() - 20);
            assert_eq!(l4_checksum(ip(s, 12), ip(s, 16), 17, &s[20..]), 0);
        }
    }

    #[test]
    fn partial_checksum_is_completed() {
        let mut p = tcp4(300, 5, 0x18);
        // Replace the checksum by the pseudo-header sum, as the kernel hands it over.
        let ps = fold(pseudo_sum(&p, 6, p.len() - 20));
        p[36..38].copy_from_slice(&ps.to_be_bytes());
        let h = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..Default::default()
        };
        let mut out = bufs(1);
        assert_eq!(segment(&h, &p, &mut out).unwrap(), 1);
        assert_valid_tcp4(out[0].data());
        let bad = VirtioNetHdr { csum_start: 2000, ..h };
        assert_eq!(segment(&bad, &p, &mut out), Err(GsoError::BadCsumOffsets));
    }

    #[test]
    fn malformed_super_packets_are_errors() {
        let h = VirtioNetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 100,
            ..Default::default()
        };
        let mut out = bufs(4);
        assert!(segment(&h, &[0x45, 0, 0], &mut out).is_err());
        assert!(segment(&h, &[], &mut out).is_err());
        let p = tcp4(50, 1, 0x10);
        assert!(segment(&h, &p[..30], &mut out).is_err());
        let z = VirtioNetHdr { gso_size: 0, ..h };
        assert_eq!(segment(&z, &p, &mut out), Err(GsoError::ZeroGsoSize));
        let v6 = VirtioNetHdr {
            gso_type: GSO_TCPV6,
            ..h
        };
        assert!(segment(&v6, &p, &mut out).is_err());
    }

    #[test]
    fn in_order_segments_coalesce_and_resegment_to_the_same_packets() {
        let mss = 1000;
        let segs: Vec<Vec<u8>> = (0..5)
            .map(|i| tcp4(if i == 4 { 300 } else { mss }, 1 + (i * mss) as u32, 0x10))
            .collect();
        let mut refs: Vec<&[u8]> = segs.iter().map(|v| v.as_slice()).collect();
        let other = tcp4(mss, 999_999, 0x10);
        refs.push(&other);
        assert_eq!(TcpCoalescer::run_len(&refs), 5);
        assert_eq!(TcpCoalescer::run_len(&refs[5..]), 1);
        let mut c = TcpCoalescer::new();
        let w = c.build(&refs[..5]);
        let vh = VirtioNetHdr::parse(w.head).unwrap();
        assert_eq!((vh.gso_type, vh.gso_size, vh.hdr_len), (GSO_TCPV4, mss as u16, 52));
        let mut sup = w.head[VNET_HDR_LEN..].to_vec();
        for p in &w.payloads {
            sup.extend_from_slice(p);
        }
        assert_eq!(checksum(&sup[..20]), 0);
        // The kernel would segment it back: the result must equal the input.
        let mut out = bufs(8);
        assert_eq!(segment(&vh, &sup, &mut out).unwrap(), 5);
        for (o, s) in out.iter().zip(&segs) {
            assert_eq!(&o.data()[20..], &s[20..]);
        }
    }

    #[test]
    fn gaps_and_flags_stop_a_run() {
        let a = tcp4(1000, 1, 0x10);
        let gap = tcp4(1000, 5000, 0x10);
        assert_eq!(TcpCoalescer::run_len(&[&a, &gap]), 1);
        let syn = tcp4(1000, 1001, 0x12);
        assert_eq!(TcpCoalescer::run_len(&[&a, &syn]), 1);
        let short = tcp4(10, 1, 0x10);
        let after_short = tcp4(1000, 11, 0x10);
        assert_eq!(TcpCoalescer::run_len(&[&short, &after_short]), 1);
        let mut c = TcpCoalescer::new();
        let w = c.build(&[&a]);
        assert_eq!(w.head, &[0u8; VNET_HDR_LEN][..]);
        assert_eq!(w.payloads, vec![&a[..]]);
    }
}

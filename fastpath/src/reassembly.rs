//! Reassembly of IP fragments addressed to the gateway itself: an IKE
//! message larger than the link MTU (an unfragmented IKE_AUTH with a
//! certificate chain, up to 64 KiB) arrives as IP fragments, and a DPDK port
//! has no kernel to put them together.
//!
//! The fragment arithmetic is etherparse's ([`IpDefragBuf`]); this module
//! bounds what unauthenticated senders can make it hold: at most
//! [`MAX_IN_PROGRESS`] datagrams at a time, each given up
//! [`REASSEMBLY_TIMEOUT`] after its first fragment.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use etherparse::defrag::{IpDefragBuf, IpDefragError};
use etherparse::{IpFragOffset, IpNumber, IpSlice, Ipv6ExtensionSlice};

/// Datagrams reassembled at the same time; fragments of further ones are refused.
pub const MAX_IN_PROGRESS: usize = 64;
/// How long a datagram's fragments are kept waiting for the rest (RFC 791 suggests 15 s; IKE retransmits sooner).
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a fragment was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// Not an IP packet, or a malformed one.
    #[error("malformed IP packet: {0}")]
    Malformed(String),
    /// The fragment does not fit with the others (overlap, past the end, over 64 KiB).
    #[error("inconsistent fragment: {0}")]
    Inconsistent(String),
    /// [`MAX_IN_PROGRESS`] datagrams are already being reassembled.
    #[error("too many datagrams in reassembly")]
    Full,
}

/// A reassembled datagram: the payload of the IP packet its fragments formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol of the payload (17 for UDP).
    pub protocol: u8,
    /// The payload (for UDP: header and data).
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    protocol: u8,
}

/// Datagrams being reassembled from their fragments.
#[derive(Debug, Default)]
pub struct Reassembly {
    active: HashMap<Key, (IpDefragBuf, Instant)>,
}

/// A fragment's place in its datagram.
struct Fragment<'a> {
    key: Key,
    offset: IpFragOffset,
    more: bool,
    payload: &'a [u8],
}

fn fragment(packet: &[u8]) -> Result<Option<Fragment<'_>>, ReassemblyError> {
    let ip = IpSlice::from_slice(packet).map_err(|e| ReassemblyError::Malformed(e.to_string()))?;
    Ok(match &ip {
        IpSlice::Ipv4(v4) => {
            let h = v4.header();
            if !h.is_fragmenting_payload() {
                return Ok(None);
            }
            Some(Fragment {
                key: Key {
                    src: IpAddr::V4(h.source_addr()),
                    dst: IpAddr::V4(h.destination_addr()),
                    id: u32::from(h.identification()),
                    protocol: v4.payload().ip_number.0,
                },
                offset: h.fragments_offset(),
                more: h.more_fragments(),
                payload: v4.payload().payload,
            })
        }
        IpSlice::Ipv6(v6) => {
            let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                Ipv6ExtensionSlice::Fragment(f) if f.is_fragmenting_payload() => Some(f.to_header()),
                _ => None,
            });
            let Some(f) = frag else { return Ok(None) };
            Some(Fragment {
                key: Key {
                    src: IpAddr::V6(v6.header().source_addr()),
                    dst: IpAddr::V6(v6.header().destination_addr()),
                    id: f.identification,
                    protocol: v6.payload().ip_number.0,
                },
                offset: f.fragment_offset,
                more: f.more_fragments,
                payload: v6.payload().payload,
            })
        }
    })
}

impl Reassembly {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Datagrams in progress.
    pub fn in_progress(&self) -> usize {
        self.active.len()
    }

    /// Adds one fragment (a whole IP packet); returns its datagram once all
    /// fragments are in. A packet that is not a fragment is ignored (`None`).
    pub fn add(&mut self, packet: &[u8], now: Instant) -> Result<Option<Datagram>, ReassemblyError> {
        let Some(f) = fragment(packet)? else { return Ok(None) };
        if !self.active.contains_key(&f.key) {
            self.expire(now);
            if self.active.len() >= MAX_IN_PROGRESS {
                return Err(ReassemblyError::Full);
            }
        }
        let (buf, _) = self
            .active
            .entry(f.key)
            .or_insert_with(|| (IpDefragBuf::new(IpNumber(f.key.protocol), Vec::new(), Vec::new()), now));
        if let Err(e) = buf.add(f.offset, f.more, f.payload) {
            self.active.remove(&f.key);
            return Err(inconsistent(e));
        }
        if !buf.is_complete() {
            return Ok(None);
        }
        let Some((buf, _)) = self.active.remove(&f.key) else {
            return Ok(None);
        };
        let (payload, _) = buf.take_bufs();
        Ok(Some(Datagram {
            src: f.key.src,
            dst: f.key.dst,
            protocol: f.key.protocol,
            payload,
        }))
    }

    /// Drops the datagrams whose first fragment came [`REASSEMBLY_TIMEOUT`] ago.
    pub fn expire(&mut self, now: Instant) {
        self.active
            .retain(|_, (_, first)| now.saturating_duration_since(*first) < REASSEMBLY_TIMEOUT);
    }
}

fn inconsistent(e: IpDefragError) -> ReassemblyError {
    ReassemblyError::Inconsistent(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    /// A UDP datagram from 10.0.0.2:4500 to 10.0.0.1:4500 with `len` bytes
    /// of data, cut into IPv4 fragments of at most `frag` payload bytes.
    fn fragments(len: usize, frag: usize, id: u16) -> (Vec<u8>, Vec<Vec<u8>>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut whole = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .udp(4500, 4500)
            .write(&mut whole, &data)
            .unwrap();
        let ihl = usize::from(whole[0] & 0x0f) * 4;
        let udp = whole[ihl..].to_vec();
        let mut out = Vec::new();
        for (k, chunk) in udp.chunks(frag).enumerate() {
            let off = k * frag;
            let more = off + chunk.len() < udp.len();
            let mut h = etherparse::Ipv4Header::new(
                u16::try_from(chunk.len()).unwrap(),
                64,
                IpNumber::UDP,
                [10, 0, 0, 2],
                [10, 0, 0, 1],
            )
            .unwrap();
            h.identification = id;
            h.more_fragments = more;
            h.fragment_offset = IpFragOffset::try_new(u16::try_from(off / 8).unwrap()).unwrap();
            h.header_checksum = h.calc_header_checksum();
            let mut p = Vec::new();
            h.write(&mut p).unwrap();
            p.extend_from_slice(chunk);
            out.push(p);
        }
        (udp, out)
    }

    #[test]
    fn fragments_in_any_order_make_the_datagram() {
        let (udp, mut frags) = fragments(60_000, 1480, 7);
        frags.reverse();
        let mut r = Reassembly::new();
        let now = Instant::now();
        let last = frags.pop().unwrap();
        for f in &frags {
            assert_eq!(r.add(f, now).unwrap(), None);
        }
        let d = r.add(&last, now).unwrap().expect("complete");
        assert_eq!(
            (d.src, d.dst, d.protocol),
            ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap(), 17)
        );
        assert_eq!(d.payload, udp);
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn unfragmented_packets_are_ignored_and_junk_refused() {
        let (_, frags) = fragments(100, 1480, 1);
        let mut r = Reassembly::new();
        assert_eq!(frags.len(), 1);
        assert_eq!(r.add(&frags[0], Instant::now()).unwrap(), None);
        assert!(matches!(
            r.add(&[0x45, 0, 0], Instant::now()),
            Err(ReassemblyError::Malformed(_))
        ));
    }

    #[test]
    fn holding_is_bounded_in_count_and_time() {
        let mut r = Reassembly::new();
        let t0 = Instant::now();
        for id in 0..MAX_IN_PROGRESS {
            let (_, frags) = fragments(3000, 1480, id as u16);
            assert_eq!(r.add(&frags[0], t0).unwrap(), None);
        }
        let (_, more) = fragments(3000, 1480, 999);
        assert_eq!(r.add(&more[0], t0), Err(ReassemblyError::Full));
        // After the timeout the old ones make room.
        let later = t0 + REASSEMBLY_TIMEOUT;
        assert_eq!(r.add(&more[0], later).unwrap(), None);
        assert_eq!(r.in_progress(), 1);
    }
}

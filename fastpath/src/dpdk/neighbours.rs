//! A poll loop's neighbour cache (IP → MAC, learned from received frames)
//! with a small direct-mapped front cache, so the per-packet learning and
//! next-hop lookups of busy neighbours cost a compare instead of a hash
//! table probe.

use std::collections::HashMap;
use std::net::IpAddr;

/// Largest neighbour cache (entries learned from received frames).
pub const MAX_NEIGHBOURS: usize = 65536;
/// Slots of the front cache.
const FRONT_SLOTS: usize = 16;

/// IP → MAC of the hosts a loop has heard from.
pub struct Neighbours {
    table: HashMap<IpAddr, [u8; 6], NeighbourHashing>,
    /// What `table` says about recent addresses, absence included
    /// (direct-mapped by address; an address is only ever in its own slot).
    front: [FrontEntry; FRONT_SLOTS],
    /// Moves whenever an answer of [`Neighbours::get`] may change (an address
    /// learned, moved or forgotten): callers may keep what they built from
    /// an answer while the version stays.
    version: u64,
    /// The IPv4 source and the source MAC + EtherType word of the IPv4 frame
    /// learned last, and the version then: the frames of a burst mostly come from one
    /// neighbour, whose learning then costs one compare.
    last_v4: (u32, u64, u64),
}

/// A front-cache entry in integer form, so a hit costs two compares.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FrontEntry {
    /// The address's bits (an IPv4 address in the low 32).
    addr: u128,
    /// MAC in the low 48 bits, [`KNOWN`] when the table has one, [`V6`] for
    /// an IPv6 address; [`EMPTY`] for a slot not filled yet.
    tag: u64,
}

/// Flag of a [`FrontEntry`] whose address has a MAC.
const KNOWN: u64 = 1 << 48;
/// Flag of an unused [`FrontEntry`].
const EMPTY: u64 = 1 << 49;
/// Flag of a [`FrontEntry`] of an IPv6 address.
const V6: u64 = 1 << 50;
const UNUSED: FrontEntry = FrontEntry { addr: 0, tag: EMPTY };

/// An address in integer form: its bits and its family flag.
#[inline]
fn key(ip: &IpAddr) -> (u128, u64) {
    match ip {
        IpAddr::V4(a) => (u128::from(a.to_bits()), 0),
        IpAddr::V6(a) => (a.to_bits(), V6),
    }
}

#[inline]
fn pack(mac: [u8; 6]) -> u64 {
    KNOWN | u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

#[inline]
fn unpack(m: u64) -> Option<[u8; 6]> {
    if m & KNOWN == 0 {
        return None;
    }
    let b = m.to_le_bytes();
    Some([b[0], b[1], b[2], b[3], b[4], b[5]])
}

impl Neighbours {
    /// An empty cache, hashed with a per-loop random seed. Fails when the
    /// random generator does: a guessable seed would let the wire collide keys.
    pub fn new() -> Result<Self, aws_lc_rs::error::Unspecified> {
        Ok(Self {
            table: HashMap::with_hasher(NeighbourHashing::random()?),
            front: [UNUSED; FRONT_SLOTS],
            version: 0,
            last_v4: (0, 0, u64::MAX),
        })
    }

    /// The current version (see the field): unchanged means every answer
    /// of [`Neighbours::get`] is unchanged.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Learns the source of an Ethernet frame carrying IPv4 or IPv6 (its IP
    /// source at its source MAC), reading both straight from the frame. A
    /// frame from the same IPv4 neighbour as the last one costs one compare.
    #[inline(always)]
    pub fn learn_frame(&mut self, frame: &[u8]) {
        use super::frame::{ETH_HDR_LEN, ETHERTYPE_IPV4};
        if let Some(f) = frame.get(..ETH_HDR_LEN + 20) {
            // Source MAC and EtherType as one word, the IPv4 source as another.
            let mac_type = u64::from_le_bytes([f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13]]);
            let src = u32::from_ne_bytes([f[26], f[27], f[28], f[29]]);
            if self.last_v4 == (src, mac_type, self.version) {
                return;
            }
            if u16::from_be_bytes([f[12], f[13]]) == ETHERTYPE_IPV4 {
                self.learn_v4_slow(src, mac_type, super::frame::src_mac(f));
                return;
            }
        }
        if let Some(ip) = super::frame::ip_src(frame) {
            self.learn(ip, super::frame::src_mac(frame));
        }
    }

    /// [`Neighbours::learn_frame`] of an IPv4 frame from another neighbour
    /// than the last (`src` and `mac_type` as read there).
    #[inline(never)]
    fn learn_v4_slow(&mut self, src: u32, mac_type: u64, mac: [u8; 6]) {
        self.learn(IpAddr::from(src.to_ne_bytes()), mac);
        self.last_v4 = (src, mac_type, self.version);
    }

    /// Front slot of `ip` (its last byte: hosts of one subnet spread out).
    #[inline]
    fn slot(ip: &IpAddr) -> usize {
        let last = match ip {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(a) => a.octets()[15],
        };
        usize::from(last) % FRONT_SLOTS
    }

    /// Records that `ip` is at `mac` (multicast/broadcast sources are ignored).
    #[inline]
    pub fn learn(&mut self, ip: IpAddr, mac: [u8; 6]) {
        if mac[0] & 1 != 0 {
            return;
        }
        let s = Self::slot(&ip);
        let (addr, family) = key(&ip);
        let e = self.front[s];
        if e.addr == addr && e.tag == pack(mac) | family {
            return;
        }
        self.learn_slow(ip, mac, s);
    }

    #[cold]
    fn learn_slow(&mut self, ip: IpAddr, mac: [u8; 6], s: usize) {
        if self.table.get(&ip) != Some(&mac) {
            if self.table.len() >= MAX_NEIGHBOURS && !self.table.contains_key(&ip) {
                // A flood of sources: start over rather than grow.
                self.table.clear();
                self.front = [UNUSED; FRONT_SLOTS];
            }
            self.table.insert(ip, mac);
            self.version += 1;
        }
        let (addr, family) = key(&ip);
        self.front[s] = FrontEntry {
            addr,
            tag: pack(mac) | family,
        };
    }

    /// The MAC of `ip`, if learned.
    #[inline]
    pub fn get(&mut self, ip: &IpAddr) -> Option<[u8; 6]> {
        let s = Self::slot(ip);
        let (addr, family) = key(ip);
        let e = self.front[s];
        if e.addr == addr && e.tag & (EMPTY | V6) == family {
            return unpack(e.tag);
        }
        // Unknown next hops (sent to the gateway) are remembered too.
        let m = self.table.get(ip).copied();
        self.front[s] = FrontEntry {
            addr,
            tag: m.map_or(0, pack) | family,
        };
        m
    }

    /// Number of neighbours known.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }
}

/// Keyed hashing for the neighbour table: fast (one multiply per word) and
/// seeded per loop from aws-lc randomness, since its keys come from the wire.
#[derive(Clone, Copy)]
struct NeighbourHashing {
    seed: u64,
}

impl NeighbourHashing {
    fn random() -> Result<Self, aws_lc_rs::error::Unspecified> {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b)?;
        Ok(Self {
            seed: u64::from_ne_bytes(b) | 1,
        })
    }
}

impl std::hash::BuildHasher for NeighbourHashing {
    type Hasher = NeighbourHasher;
    fn build_hasher(&self) -> NeighbourHasher {
        NeighbourHasher(self.seed)
    }
}

/// The hasher of [`NeighbourHashing`].
struct NeighbourHasher(u64);

impl std::hash::Hasher for NeighbourHasher {
    fn finish(&self) -> u64 {
        let x = self.0;
        (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0 = (self.0 ^ u64::from_le_bytes(w))
                .wrapping_mul(0xff51_afd7_ed55_8ccd)
                .rotate_left(29);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_updates_and_ignores_multicast() {
        let mut n = Neighbours::new().expect("random seed");
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.1.1".parse().unwrap(); // same front slot as `a`
        n.learn(a, [2, 0, 0, 0, 0, 1]);
        n.learn(b, [2, 0, 0, 0, 0, 2]);
        assert_eq!(n.get(&a), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(n.get(&b), Some([2, 0, 0, 0, 0, 2]));
        // A new MAC for a known address replaces the old one, front cache included.
        n.learn(a, [2, 0, 0, 0, 0, 3]);
        assert_eq!(n.get(&a), Some([2, 0, 0, 0, 0, 3]));
        n.learn("10.0.0.9".parse().unwrap(), [1, 0, 0x5e, 0, 0, 1]);
        assert_eq!(n.get(&"10.0.0.9".parse().unwrap()), None);
        // An address looked up before it is learned is found once learned.
        let c: IpAddr = "10.0.0.4".parse().unwrap();
        assert_eq!(n.get(&c), None);
        n.learn(c, [2, 0, 0, 0, 0, 4]);
        assert_eq!(n.get(&c), Some([2, 0, 0, 0, 0, 4]));
        assert_eq!(n.len(), 3);
        // 0.0.0.1 and ::1 share a slot and their low bits, not their entry.
        let (v4, v6): (IpAddr, IpAddr) = ("0.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        n.learn(v4, [2, 0, 0, 0, 0, 5]);
        assert_eq!(n.get(&v6), None);
        n.learn(v6, [2, 0, 0, 0, 0, 6]);
        assert_eq!(n.get(&v4), Some([2, 0, 0, 0, 0, 5]));
        assert_eq!(n.get(&v6), Some([2, 0, 0, 0, 0, 6]));
    }

    /// An Ethernet frame from `mac` carrying an IPv4 (or IPv6) header from `src`.
    fn frame_from(mac: [u8; 6], src: IpAddr) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[6..12].copy_from_slice(&mac);
        match src {
            IpAddr::V4(a) => {
                f[12..14].copy_from_slice(&[0x08, 0x00]);
                let mut h = [0u8; 20];
                h[0] = 0x45;
                h[12..16].copy_from_slice(&a.octets());
                f.extend_from_slice(&h);
            }
            IpAddr::V6(a) => {
                f[12..14].copy_from_slice(&[0x86, 0xdd]);
                let mut h = [0u8; 40];
                h[0] = 0x60;
                h[8..24].copy_from_slice(&a.octets());
                f.extend_from_slice(&h);
            }
        }
        f
    }

    #[test]
    fn learns_frames_and_versions_changes_only() {
        let mut n = Neighbours::new().expect("random seed");
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let v0 = n.version();
        n.learn_frame(&frame_from([2, 0, 0, 0, 0, 1], a));
        assert_eq!(n.get(&a), Some([2, 0, 0, 0, 0, 1]));
        let v1 = n.version();
        assert_ne!(v0, v1, "a new neighbour changes the version");
        // The same neighbour again, by frame or by address: no change.
        n.learn_frame(&frame_from([2, 0, 0, 0, 0, 1], a));
        n.learn(a, [2, 0, 0, 0, 0, 1]);
        assert_eq!(n.version(), v1);
        // It moves to another MAC: learned, and the version moves.
        n.learn_frame(&frame_from([2, 0, 0, 0, 0, 2], a));
        assert_eq!(n.get(&a), Some([2, 0, 0, 0, 0, 2]));
        assert_ne!(n.version(), v1);
        // Back to the first MAC right after (the one-entry memo must not hide it).
        n.learn(a, [2, 0, 0, 0, 0, 1]);
        n.learn_frame(&frame_from([2, 0, 0, 0, 0, 2], a));
        assert_eq!(n.get(&a), Some([2, 0, 0, 0, 0, 2]));
        // IPv6 sources, multicast sources and runts.
        let b: IpAddr = "2001:db8::9".parse().unwrap();
        n.learn_frame(&frame_from([2, 0, 0, 0, 0, 3], b));
        assert_eq!(n.get(&b), Some([2, 0, 0, 0, 0, 3]));
        let c: IpAddr = "192.0.2.8".parse().unwrap();
        n.learn_frame(&frame_from([1, 0, 0x5e, 0, 0, 1], c));
        assert_eq!(n.get(&c), None);
        let v = n.version();
        n.learn_frame(&frame_from([2, 0, 0, 0, 0, 4], c)[..30]);
        n.learn_frame(&[]);
        assert_eq!((n.get(&c), n.version()), (None, v));
        // Looking up unknown addresses changes no answer.
        assert_eq!(n.get(&"10.9.9.9".parse().unwrap()), None);
        assert_eq!(n.version(), v);
    }

    #[test]
    fn bounded() {
        let mut n = Neighbours::new().expect("random seed");
        for i in 0..(MAX_NEIGHBOURS as u32 + 10) {
            n.learn(IpAddr::from(i.to_be_bytes()), [2, 0, 0, 0, 0, 1]);
        }
        assert!(n.len() <= MAX_NEIGHBOURS);
    }
}

//! Virtual-IP address pools for the configuration payload (RFC 7296 §3.15).
//!
//! A [`Pool`] is a named set of IPv4 or IPv6 ranges. Leases are keyed by the
//! peer's identity: an identity that reconnects gets the address it had
//! before as long as nobody else took it in between, which is why a
//! released address keeps its last owner and fresh addresses are handed out
//! before released ones. An address requested from outside (a RADIUS
//! Framed-IP-Address) wins over the pool through [`Pool::reserve`].
//!
//! Per-address state grows only as addresses are first handed out, so an
//! IPv6 /64 costs nothing until it is used. The per-lease cost is the
//! owner's identity, one hash-table slot and a few bytes of per-address
//! state; allocate and release are O(1).

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashTable;

/// The most addresses one pool manages; per-address indices are `u32`.
pub const MAX_POOL_ADDRESSES: u64 = u32::MAX as u64 - 1;

/// Why a pool operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    #[error("address pool '{pool}' is exhausted ({size} addresses, all leased)")]
    Exhausted { pool: String, size: u64 },
    #[error("address pool '{pool}': {addr} is leased to another identity")]
    InUse { pool: String, addr: IpAddr },
    #[error("address pool '{pool}': {addr} is not leased")]
    NotLeased { pool: String, addr: IpAddr },
    #[error("address pool '{pool}': {addr} is not in the pool")]
    NotInPool { pool: String, addr: IpAddr },
    #[error("address pool '{pool}': {identity} holds {addr} more than 255 times")]
    TooManyLeases {
        pool: String,
        identity: String,
        addr: IpAddr,
    },
    #[error("address pool '{pool}': {reason}")]
    BadRange { pool: String, reason: String },
}

/// A contiguous range of addresses, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl AddrRange {
    /// A prefix such as `10.3.0.0/16`. For IPv4 prefixes up to /30 the
    /// network and broadcast addresses are left out.
    pub fn prefix(addr: IpAddr, len: u8) -> Result<Self, String> {
        let (bits, value) = match addr {
            IpAddr::V4(a) => (32u32, u128::from(u32::from(a))),
            IpAddr::V6(a) => (128u32, u128::from(a)),
        };
        if u32::from(len) > bits {
            return Err(format!("prefix length /{len} is longer than {bits}"));
        }
        let host_bits = bits - u32::from(len);
        let mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let (mut first, mut last) = (value & !mask, value | mask);
        if bits == 32 && host_bits >= 2 {
            first += 1;
            last -= 1;
        }
        Ok(AddrRange {
            first: to_ip(addr.is_ipv4(), first),
            last: to_ip(addr.is_ipv4(), last),
        })
    }

    /// Parses `A.B.C.D/N`, `A.B.C.D-E.F.G.H` or a single address (and their
    /// IPv6 forms).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((a, n)) = s.split_once('/') {
            let addr: IpAddr = a.trim().parse().map_err(|_| format!("'{a}' is not an IP address"))?;
            let len: u8 = n.trim().parse().map_err(|_| format!("'{n}' is not a prefix length"))?;
            return Self::prefix(addr, len);
        }
        if let Some((a, b)) = s.split_once('-') {
            let first: IpAddr = a.trim().parse().map_err(|_| format!("'{a}' is not an IP address"))?;
            let last: IpAddr = b.trim().parse().map_err(|_| format!("'{b}' is not an IP address"))?;
            return Ok(AddrRange { first, last });
        }
        let one: IpAddr = s
            .parse()
            .map_err(|_| format!("'{s}' is not an address, range or prefix"))?;
        Ok(AddrRange { first: one, last: one })
    }
}

fn to_ip(v4: bool, v: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// One range as the pool indexes it: addresses `first ..` map to indices
/// `base ..`.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: u128,
    len: u64,
    base: u64,
}

const NO_OWNER: Option<Box<str>> = None;

/// A lease the pool handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub addr: IpAddr,
    /// The identity had this address before (a reconnect).
    pub reused: bool,
}

/// Pool occupancy, for `ironsa pools` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub size: u64,
    pub leased: u64,
}

/// One named pool.
#[derive(Debug)]
pub struct Pool {
    name: String,
    v4: bool,
    spans: Vec<Span>,
    size: u64,
    /// The identity that holds or last held each address handed out so far
    /// (index order); grows with `fresh`.
    owner: Vec<Option<Box<str>>>,
    /// Leases per address (the same identity may hold its address on more
    /// than one SA, e.g. while a reconnect replaces the old SA).
    refs: Vec<u8>,
    /// Indices below this have been handed out at least once.
    fresh: u32,
    /// Released indices, oldest first (reusing the longest-free address keeps
    /// recent owners' addresses for their reconnect); an entry may be stale
    /// (taken back by its owner), in which case it is skipped.
    free: VecDeque<u32>,
    queued: Vec<u64>,
    /// Address indices, found by their owner's identity.
    by_identity: HashTable<u32>,
    hasher: RandomState,
    leased: u64,
}

impl Pool {
    /// A pool over `ranges`, all of one address family, not overlapping.
    pub fn new(name: &str, ranges: &[AddrRange]) -> Result<Self, PoolError> {
        let bad = |reason: String| PoolError::BadRange {
            pool: name.to_string(),
            reason,
        };
        let Some(v4) = ranges.first().map(|r| r.first.is_ipv4()) else {
            return Err(bad("no address ranges".into()));
        };
        let mut sorted: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.first.is_ipv4() != v4 || r.last.is_ipv4() != v4 {
                return Err(bad(format!("{}-{} mixes IPv4 and IPv6", r.first, r.last)));
            }
            let (a, b) = (to_u128(r.first), to_u128(r.last));
            if a > b {
                return Err(bad(format!("range {}-{} ends before it starts", r.first, r.last)));
            }
            sorted.push((a, b));
        }
        sorted.sort_unstable();
        let mut spans = Vec::with_capacity(sorted.len());
        let mut size: u64 = 0;
        for (i, &(a, b)) in sorted.iter().enumerate() {
            if i > 0 && a <= sorted[i - 1].1 {
                return Err(bad(format!("range starting at {} overlaps another", to_ip(v4, a))));
            }
            let len = u64::try_from(b - a).unwrap_or(u64::MAX).saturating_add(1);
            let len = len.min(MAX_POOL_ADDRESSES - size);
            if len == 0 {
                break;
            }
            spans.push(Span {
                first: a,
                len,
                base: size,
            });
            size += len;
        }
        Ok(Pool {
            name: name.to_string(),
            v4,
            spans,
            size,
            owner: Vec::new(),
            refs: Vec::new(),
            fresh: 0,
            free: VecDeque::new(),
            queued: Vec::new(),
            by_identity: HashTable::new(),
            hasher: RandomState::new(),
            leased: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_ipv4(&self) -> bool {
        self.v4
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.size,
            leased: self.leased,
        }
    }

    fn addr_of(&self, index: u32) -> IpAddr {
        let i = u64::from(index);
        let span = self.spans.iter().rev().find(|s| s.base <= i).unwrap_or(&self.spans[0]);
        to_ip(self.v4, span.first + u128::from(i - span.base))
    }

    fn index_of(&self, addr: IpAddr) -> Option<u32> {
        if addr.is_ipv4() != self.v4 {
            return None;
        }
        let v = to_u128(addr);
        let span = self.spans.iter().rev().find(|s| s.first <= v)?;
        let off = u64::try_from(v - span.first).ok().filter(|&o| o < span.len)?;
        u32::try_from(span.base + off).ok()
    }

    fn find(&self, identity: &str) -> Option<u32> {
        let h = self.hasher.hash_one(identity);
        let owner = &self.owner;
        self.by_identity
            .find(h, |&i| owner[i as usize].as_deref() == Some(identity))
            .copied()
    }

    fn is_queued(&self, i: u32) -> bool {
        self.queued[i as usize / 64] & (1 << (i % 64)) != 0
    }

    fn set_queued(&mut self, i: u32, on: bool) {
        let w = &mut self.queued[i as usize / 64];
        if on {
            *w |= 1 << (i % 64)
        } else {
            *w &= !(1 << (i % 64))
        }
    }

    /// Gives `index` to `identity`, forgetting its previous owner.
    fn take(&mut self, index: u32, identity: &str) {
        let i = index as usize;
        if let Some(old) = self.owner[i].take() {
            let h = self.hasher.hash_one(&*old);
            if let Ok(e) = self.by_identity.find_entry(h, |&x| x == index) {
                e.remove();
            }
        }
        self.owner[i] = Some(identity.into());
        let h = self.hasher.hash_one(identity);
        let (owner, hasher) = (&self.owner, &self.hasher);
        self.by_identity.insert_unique(h, index, |&x| {
            hasher.hash_one(owner[x as usize].as_deref().unwrap_or(""))
        });
        self.refs[i] = 1;
        self.leased += 1;
    }

    /// The next address never handed out, or the oldest-queued released one.
    fn next_free(&mut self) -> Option<u32> {
        if u64::from(self.fresh) < self.size {
            let i = self.fresh;
            self.fresh += 1;
            self.owner.push(NO_OWNER);
            self.refs.push(0);
            if self.queued.len() * 64 < self.owner.len() {
                self.queued.push(0);
            }
            return Some(i);
        }
        while let Some(i) = self.free.pop_front() {
            self.set_queued(i, false);
            if self.refs[i as usize] == 0 {
                return Some(i);
            }
        }
        None
    }

    /// One more lease of `i`, which `identity` holds or last held.
    fn add_lease(&mut self, i: u32, identity: &str) -> Result<Lease, PoolError> {
        let addr = self.addr_of(i);
        let refs = &mut self.refs[i as usize];
        if *refs == u8::MAX {
            return Err(PoolError::TooManyLeases {
                pool: self.name.clone(),
                identity: identity.into(),
                addr,
            });
        }
        if *refs == 0 {
            self.leased += 1;
        }
        *refs += 1;
        Ok(Lease { addr, reused: true })
    }

    /// Drops what `identity` is remembered by, before it moves to another
    /// address; a free address it leaves loses its owner.
    fn forget(&mut self, identity: &str) {
        let Some(previous) = self.find(identity) else { return };
        let h = self.hasher.hash_one(identity);
        if let Ok(e) = self.by_identity.find_entry(h, |&x| x == previous) {
            e.remove();
        }
        if self.refs[previous as usize] == 0 {
            self.owner[previous as usize] = None;
        }
    }

    /// Leases an address to `identity`: the one it holds or last held if
    /// that is free, else a new one.
    pub fn allocate(&mut self, identity: &str) -> Result<Lease, PoolError> {
        if let Some(i) = self.find(identity) {
            return self.add_lease(i, identity);
        }
        let Some(i) = self.next_free() else {
            return Err(PoolError::Exhausted {
                pool: self.name.clone(),
                size: self.size,
            });
        };
        self.take(i, identity);
        Ok(Lease {
            addr: self.addr_of(i),
            reused: false,
        })
    }

    /// Leases exactly `addr` to `identity` (an address the AAA server chose).
    pub fn reserve(&mut self, identity: &str, addr: IpAddr) -> Result<Lease, PoolError> {
        let Some(i) = self.index_of(addr) else {
            return Err(PoolError::NotInPool {
                pool: self.name.clone(),
                addr,
            });
        };
        if u64::from(i) >= u64::from(self.fresh) {
            // Hand out everything before it as fresh-but-free first, so the
            // per-address state covers `i`; those addresses go to the free list.
            while self.fresh <= i {
                let Some(j) = self.next_free() else { break };
                if j != i {
                    self.free.push_back(j);
                    self.set_queued(j, true);
                }
            }
            self.forget(identity);
            self.take(i, identity);
            return Ok(Lease { addr, reused: false });
        }
        let held_by_other = self.refs[i as usize] > 0 && self.owner[i as usize].as_deref() != Some(identity);
        if held_by_other {
            return Err(PoolError::InUse {
                pool: self.name.clone(),
                addr,
            });
        }
        if self.owner[i as usize].as_deref() == Some(identity) {
            // Its own address (held or remembered): same as a reconnect.
            return self.add_lease(i, identity);
        }
        // Free, remembered for someone else: the reservation wins. Its stale
        // free-list entry is skipped when popped (refs > 0).
        self.forget(identity);
        self.take(i, identity);
        Ok(Lease { addr, reused: false })
    }

    /// Ends one lease of `addr`. The owner stays remembered so that it gets
    /// the same address back if it returns before the address is reused.
    pub fn release(&mut self, addr: IpAddr) -> Result<(), PoolError> {
        let not_leased = || PoolError::NotLeased {
            pool: self.name.clone(),
            addr,
        };
        let i = self.index_of(addr).filter(|&i| i < self.fresh).ok_or_else(not_leased)?;
        let refs = &mut self.refs[i as usize];
        if *refs == 0 {
            return Err(not_leased());
        }
        *refs -= 1;
        if *refs == 0 {
            self.leased -= 1;
            if !self.is_queued(i) {
                self.free.push_back(i);
                self.set_queued(i, true);
            }
        }
        Ok(())
    }

    /// The identity holding `addr`, if leased.
    pub fn holder(&self, addr: IpAddr) -> Option<&str> {
        let i = self.index_of(addr).filter(|&i| i < self.fresh)? as usize;
        if self.refs[i] == 0 {
            None
        } else {
            self.owner[i].as_deref()
        }
    }

    /// Current leases as (address, identity), for `ironsa pools`.
    pub fn leases(&self) -> impl Iterator<Item = (IpAddr, &str)> + '_ {
        (0..self.fresh).filter_map(move |i| {
            let idx = i as usize;
            if self.refs[idx] == 0 {
                None
            } else {
                self.owner[idx].as_deref().map(|o| (self.addr_of(i), o))
            }
        })
    }
}

/// The configured pools, by name: what the IKE layer asks for an address.
#[derive(Debug, Default)]
pub struct Pools {
    pools: Vec<Pool>,
}

impl Pools {
    /// The pools; names must be unique and ranges must not overlap across
    /// pools (an address must have one owner).
    pub fn new(pools: Vec<Pool>) -> Result<Self, PoolError> {
        for (i, a) in pools.iter().enumerate() {
            for b in &pools[..i] {
                if a.name == b.name {
                    return Err(PoolError::BadRange {
                        pool: a.name.clone(),
                        reason: "pool name defined twice".into(),
                    });
                }
                let overlap = a.v4 == b.v4
                    && a.spans.iter().any(|x| {
                        b.spans.iter().any(|y| {
                            x.first <= y.first + u128::from(y.len - 1) && y.first <= x.first + u128::from(x.len - 1)
                        })
                    });
                if overlap {
                    return Err(PoolError::BadRange {
                        pool: a.name.clone(),
                        reason: format!("overlaps pool '{}'", b.name),
                    });
                }
            }
        }
        Ok(Pools { pools })
    }

    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.pools.iter()
    }

    /// An address of one family for `identity` from the first of `names`
    /// (in order) that has one. `requested` is an address the AAA server
    /// assigned (Framed-IP-Address): it wins, reserved in the pool that
    /// contains it, or returned untracked when no pool does.
    pub fn assign(
        &mut self,
        names: &[&str],
        identity: &str,
        v4: bool,
        requested: Option<IpAddr>,
    ) -> Result<Option<Lease>, PoolError> {
        if let Some(addr) = requested.filter(|a| a.is_ipv4() == v4) {
            return match self.pools.iter_mut().find(|p| p.index_of(addr).is_some()) {
                Some(p) => p.reserve(identity, addr).map(Some),
                None => Ok(Some(Lease { addr, reused: false })),
            };
        }
        let mut last_err = None;
        for name in names {
            let Some(p) = self.pools.iter_mut().find(|p| p.name == *name && p.v4 == v4) else {
                continue;
            };
            match p.allocate(identity) {
                Ok(l) => return Ok(Some(l)),
                Err(e @ PoolError::Exhausted { .. }) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        last_err.map_or(Ok(None), Err)
    }

    /// Ends one lease of `addr` in the pool that contains it; an address
    /// from no pool (assigned by RADIUS) needs nothing.
    pub fn release(&mut self, addr: IpAddr) -> Result<(), PoolError> {
        match self.pools.iter_mut().find(|p| p.index_of(addr).is_some()) {
            Some(p) => p.release(addr),
            None => Ok(()),
        }
    }
}

/// Where the IKE layer gets virtual IPs from, shared by every shard's IKE
/// SAs (the pools are one per gateway, the SAs are spread over shards).
pub trait AddressAllocator: Send + Sync + std::fmt::Debug {
    /// An address of one family for `identity` from the first of `pools`
    /// that has one; `requested` (an AAA server's Framed-IP-Address) wins.
    fn assign(
        &self,
        pools: &[String],
        identity: &str,
        v4: bool,
        requested: Option<IpAddr>,
    ) -> Result<Option<Lease>, PoolError>;
    /// Ends one lease of `addr`.
    fn release(&self, addr: IpAddr) -> Result<(), PoolError>;
}

/// [`Pools`] behind a mutex: allocate and release are O(1) and short, so
/// one lock serves all shards.
#[derive(Debug, Default)]
pub struct SharedPools {
    pools: std::sync::Mutex<Pools>,
}

impl SharedPools {
    pub fn new(pools: Pools) -> Self {
        SharedPools {
            pools: std::sync::Mutex::new(pools),
        }
    }

    /// Runs `f` on the pools (for listings and metrics).
    pub fn with<R>(&self, f: impl FnOnce(&Pools) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pools> {
        // A panic while holding the lock leaves the pools consistent: every
        // mutation completes before it can fail.
        self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl AddressAllocator for SharedPools {
    fn assign(
        &self,
        pools: &[String],
        identity: &str,
        v4: bool,
        requested: Option<IpAddr>,
    ) -> Result<Option<Lease>, PoolError> {
        let names: Vec<&str> = pools.iter().map(String::as_str).collect();
        self.lock().assign(&names, identity, v4, requested)
    }

    fn release(&self, addr: IpAddr) -> Result<(), PoolError> {
        self.lock().release(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn pool(ranges: &[&str]) -> Pool {
        let r: Vec<_> = ranges.iter().map(|s| AddrRange::parse(s).expect("range")).collect();
        Pool::new("rw", &r).expect("pool")
    }

    #[test]
    fn prefixes_and_ranges_parse() {
        assert_eq!(
            AddrRange::parse("10.0.0.0/30").expect("p"),
            AddrRange {
                first: v4("10.0.0.1"),
                last: v4("10.0.0.2")
            }
        );
        assert_eq!(
            AddrRange::parse("10.0.0.5/32").expect("p"),
            AddrRange {
                first: v4("10.0.0.5"),
                last: v4("10.0.0.5")
            }
        );
        assert_eq!(AddrRange::parse("fd00::/126").expect("p").last, v4("fd00::3"));
        assert_eq!(
            AddrRange::parse("10.0.0.9 - 10.0.0.20").expect("r").first,
            v4("10.0.0.9")
        );
        assert!(AddrRange::parse("10.0.0.0/33").is_err());
        assert!(AddrRange::parse("nonsense").is_err());
        let mixed = [
            AddrRange::parse("10.0.0.0/24").expect("r"),
            AddrRange::parse("fd00::/120").expect("r"),
        ];
        assert!(matches!(Pool::new("x", &mixed), Err(PoolError::BadRange { .. })));
        let overlap = [
            AddrRange::parse("10.0.0.0/24").expect("r"),
            AddrRange::parse("10.0.0.7").expect("r"),
        ];
        assert!(matches!(Pool::new("x", &overlap), Err(PoolError::BadRange { .. })));
    }

    #[test]
    fn reconnect_gets_the_same_address_while_it_is_free() {
        let mut p = pool(&["10.1.0.1-10.1.0.3"]);
        let a = p.allocate("alice").expect("a").addr;
        let b = p.allocate("bob").expect("b").addr;
        assert_ne!(a, b);
        p.release(a).expect("release");
        // carol gets a fresh address, not alice's.
        let c = p.allocate("carol").expect("c").addr;
        assert_ne!(c, a);
        assert_eq!(p.allocate("alice").expect("again"), Lease { addr: a, reused: true });
        assert_eq!(p.stats(), PoolStats { size: 3, leased: 3 });
        assert_eq!(
            p.allocate("dave"),
            Err(PoolError::Exhausted {
                pool: "rw".into(),
                size: 3
            })
        );
        // Once another identity took it, alice gets another one.
        p.release(a).expect("release");
        assert_eq!(p.allocate("dave").expect("d").addr, a);
        p.release(b).expect("release");
        assert_eq!(p.allocate("alice").expect("moved"), Lease { addr: b, reused: false });
        assert_eq!(p.holder(b), Some("alice"));
        assert_eq!(p.leases().count(), 3);
    }

    #[test]
    fn release_errors_and_double_leases() {
        let mut p = pool(&["fd00::/125"]);
        let a = p.allocate("alice").expect("a").addr;
        // A second SA of the same identity shares the address.
        assert_eq!(p.allocate("alice").expect("a2").addr, a);
        p.release(a).expect("first");
        assert_eq!(p.holder(a), Some("alice"));
        p.release(a).expect("second");
        assert_eq!(p.holder(a), None);
        assert!(matches!(p.release(a), Err(PoolError::NotLeased { .. })));
        assert!(matches!(p.release(v4("fd00::9")), Err(PoolError::NotLeased { .. })));
        assert!(matches!(p.release(v4("10.0.0.1")), Err(PoolError::NotLeased { .. })));
    }

    #[test]
    fn a_reserved_address_wins_over_the_pool() {
        let mut p = pool(&["10.2.0.0/29"]);
        let far = v4("10.2.0.5");
        assert_eq!(
            p.reserve("alice", far).expect("reserve"),
            Lease {
                addr: far,
                reused: false
            }
        );
        // The addresses before it stay available, and it is not handed out twice.
        let mut got: Vec<_> = (0..5)
            .map(|i| p.allocate(&format!("u{i}")).expect("alloc").addr)
            .collect();
        got.sort();
        assert!(!got.contains(&far));
        assert_eq!(p.stats().leased, 6);
        assert!(matches!(p.allocate("x"), Err(PoolError::Exhausted { .. })));
        assert!(matches!(p.reserve("bob", far), Err(PoolError::InUse { .. })));
        assert!(matches!(
            p.reserve("bob", v4("10.3.0.1")),
            Err(PoolError::NotInPool { .. })
        ));
        // A free address remembered for bob goes to alice when RADIUS says so.
        let b = p.holder(got[0]).map(str::to_string).expect("holder");
        p.release(got[0]).expect("release");
        assert_eq!(p.reserve("zed", got[0]).expect("reserve").addr, got[0]);
        p.release(far).expect("release");
        // The previous owner of got[0] no longer finds it.
        assert_eq!(p.allocate(&b).expect("b").addr, far);
    }

    #[test]
    fn a_reservation_moves_a_remembered_identity() {
        let mut p = pool(&["10.4.0.0/28"]);
        let a = p.allocate("alice").expect("a").addr;
        p.release(a).expect("release");
        let far = v4("10.4.0.12");
        assert_eq!(p.reserve("alice", far).expect("reserve").addr, far);
        p.release(far).expect("release");
        // One memory per identity: alice returns to the reserved address.
        assert_eq!(
            p.allocate("alice").expect("again"),
            Lease {
                addr: far,
                reused: true
            }
        );
        assert_eq!(p.by_identity.len(), 1);
    }

    #[test]
    fn pools_by_name_family_and_radius_address() {
        let mk = |name: &str, r: &str| Pool::new(name, &[AddrRange::parse(r).expect("range")]).expect("pool");
        let mut pools = Pools::new(vec![
            mk("small", "10.5.0.1-10.5.0.1"),
            mk("big", "10.6.0.0/24"),
            mk("v6", "fd00::/120"),
        ])
        .expect("pools");
        let a = pools
            .assign(&["small", "big"], "alice", true, None)
            .expect("a")
            .expect("lease");
        assert_eq!(a.addr, v4("10.5.0.1"));
        // small is full: the next pool in the list.
        let b = pools
            .assign(&["small", "big"], "bob", true, None)
            .expect("b")
            .expect("lease");
        assert_eq!(pools.get("big").and_then(|p| p.holder(b.addr)), Some("bob"));
        let c = pools
            .assign(&["small", "v6"], "carol", false, None)
            .expect("c")
            .expect("lease");
        assert!(c.addr.is_ipv6());
        assert_eq!(
            pools.assign(&["small"], "dave", true, None),
            Err(PoolError::Exhausted {
                pool: "small".into(),
                size: 1
            })
        );
        assert_eq!(pools.assign(&["v6"], "dave", true, None), Ok(None));
        // RADIUS wins: inside a pool it is reserved there, outside it is passed on.
        let r = pools
            .assign(&["small"], "erin", true, Some(v4("10.6.0.77")))
            .expect("r")
            .expect("lease");
        assert_eq!(pools.get("big").and_then(|p| p.holder(r.addr)), Some("erin"));
        let ext = pools
            .assign(&["small"], "fay", true, Some(v4("192.0.2.9")))
            .expect("x")
            .expect("lease");
        assert_eq!(ext.addr, v4("192.0.2.9"));
        pools.release(ext.addr).expect("untracked");
        pools.release(a.addr).expect("release");
        assert!(matches!(
            Pools::new(vec![mk("a", "10.0.0.0/24"), mk("b", "10.0.0.128/25")]),
            Err(PoolError::BadRange { .. })
        ));
        assert!(matches!(
            Pools::new(vec![mk("a", "10.0.0.0/24"), mk("a", "10.1.0.0/24")]),
            Err(PoolError::BadRange { .. })
        ));
    }

    #[test]
    fn a_huge_ipv6_prefix_costs_nothing_until_used() {
        let mut p = pool(&["2001:db8::/64"]);
        assert_eq!(p.stats().size, MAX_POOL_ADDRESSES);
        let a = p.allocate("alice").expect("a").addr;
        assert_eq!(a, v4("2001:db8::"));
        assert!(p.owner.capacity() < 16);
    }
}

//! Security policy database: traffic selectors → action (protect with an
//! outbound SA, bypass, discard).
//!
//! Each policy's destination range is split into CIDR prefixes and indexed in
//! one hash table keyed by (family, prefix length, masked address). A lookup
//! probes only the prefix lengths in use, longest first, so its cost depends
//! on the number of distinct prefix lengths (at most 33 + 129), not on the
//! number of tunnels. The index is a lock-free table ([`crate::epoch_table`])
//! whose buckets hold the policies themselves (selectors, priority, action),
//! so a lookup takes no lock and is one probe per prefix length with no
//! further pointer to follow. Writers (serialised by a mutex) publish a new
//! copy of a bucket; a rekey repoints a policy by replacing its buckets.

use crate::epoch_table::EpochTable;
use crate::ip::FlowKey;
use crate::sad::SaId;
use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// A traffic selector: an address range, an IP protocol (0 = any) and a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// First address.
    pub start: IpAddr,
    /// Last address (same family as `start`).
    pub end: IpAddr,
    /// IP protocol, 0 for any.
    pub proto: u8,
    /// First port (ICMP: `type << 8 | code`).
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
}

/// Invalid selectors or policies.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SpdError {
    /// Start and end of different families, or local and remote of different families.
    #[error("address families differ")]
    FamilyMismatch,
    /// Start after end.
    #[error("empty range")]
    EmptyRange,
    /// Prefix length beyond the address size.
    #[error("prefix length {0} too long")]
    PrefixLength(u8),
    /// No such policy.
    #[error("no policy {0}")]
    NotFound(u64),
}

fn addr_bits(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(v) => (false, u128::from(u32::from(v))),
        IpAddr::V6(v) => (true, u128::from(v)),
    }
}

impl TrafficSelector {
    /// A selector with explicit ranges.
    pub fn new(start: IpAddr, end: IpAddr, proto: u8, start_port: u16, end_port: u16) -> Result<Self, SpdError> {
        let (f1, s) = addr_bits(start);
        let (f2, e) = addr_bits(end);
        if f1 != f2 {
            return Err(SpdError::FamilyMismatch);
        }
        if s > e || start_port > end_port {
            return Err(SpdError::EmptyRange);
        }
        Ok(Self {
            start,
            end,
            proto,
            start_port,
            end_port,
        })
    }

    /// All protocols and ports of the prefix `addr/len`.
    pub fn prefix(addr: IpAddr, len: u8) -> Result<Self, SpdError> {
        let (v6, a) = addr_bits(addr);
        let bits = if v6 { 128 } else { 32 };
        if len > bits {
            return Err(SpdError::PrefixLength(len));
        }
        let host = host_mask(bits, len);
        let (s, e) = (a & !host, a | host);
        let mk = |x: u128| {
            if v6 {
                IpAddr::from(x.to_be_bytes())
            } else {
                IpAddr::from((x as u32).to_be_bytes())
            }
        };
        Self::new(mk(s), mk(e), 0, 0, u16::MAX)
    }

    /// True when `addr`, `proto` and `port` fall inside the selector.
    #[inline]
    pub fn matches(&self, addr: IpAddr, proto: u8, port: u16) -> bool {
        let (f, a) = addr_bits(addr);
        let (fs, s) = addr_bits(self.start);
        let (_, e) = addr_bits(self.end);
        f == fs
            && a >= s
            && a <= e
            && (self.proto == 0 || self.proto == proto)
            && port >= self.start_port
            && port <= self.end_port
    }

    /// True when `addr` and `proto` fall inside the selector, whatever the port.
    #[inline]
    pub fn covers(&self, addr: IpAddr, proto: u8) -> bool {
        let (f, a) = addr_bits(addr);
        let (fs, s) = addr_bits(self.start);
        let (_, e) = addr_bits(self.end);
        f == fs && a >= s && a <= e && (self.proto == 0 || self.proto == proto)
    }

    fn is_v6(&self) -> bool {
        self.start.is_ipv6()
    }
}

fn host_mask(bits: u8, len: u8) -> u128 {
    let host_bits = u32::from(bits - len);
    if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// Splits `[lo, hi]` of a `bits`-bit space into CIDR prefixes `(network, length)`.
pub fn range_to_prefixes(lo: u128, hi: u128, bits: u8) -> Vec<(u128, u8)> {
    let mut out = Vec::new();
    let mut lo = lo;
    loop {
        if lo > hi {
            break;
        }
        let mut size = if lo == 0 {
            u32::from(bits)
        } else {
            lo.trailing_zeros().min(u32::from(bits))
        };
        loop {
            let span = if size == 128 { u128::MAX } else { (1u128 << size) - 1 };
            if span <= hi - lo {
                break;
            }
            size -= 1;
        }
        out.push((lo, bits - size as u8));
        let span = if size == 128 { u128::MAX } else { (1u128 << size) - 1 };
        match lo.checked_add(span).and_then(|x| x.checked_add(1)) {
            Some(n) => lo = n,
            None => break,
        }
    }
    out
}

/// What to do with packets matching a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    /// Encrypt with this outbound SA.
    Protect(SaId),
    /// Send in the clear.
    Bypass,
    /// Drop.
    Discard,
}

/// An outbound policy: inner source in `local`, inner destination in `remote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Selector of inner source address/protocol/port.
    pub local: TrafficSelector,
    /// Selector of inner destination address/protocol/port.
    pub remote: TrafficSelector,
    /// The action.
    pub action: PolicyAction,
    /// Lower wins when several policies match.
    pub priority: u32,
}

/// Identifier of an installed policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyId(pub u64);

/// A policy as stored in the index: everything a lookup reads, inline in
/// the hash table's bucket, so a lookup costs one probe and no pointer chase.
#[derive(Debug, Clone, Copy)]
struct Indexed {
    id: u64,
    priority: u32,
    action: PolicyAction,
    local: TrafficSelector,
    remote: TrafficSelector,
}

/// The policies indexed under one key; the first inline (nearly always the
/// only one), the others behind one thin pointer (a bucket with its `Arc`
/// header then fits 160 bytes). Immutable once published: writers replace
/// the whole bucket.
#[derive(Debug, Clone)]
struct Bucket {
    key: IndexKey,
    first: Indexed,
    /// A thin pointer on purpose (a `Vec` or boxed slice would take 24 or 16 bytes).
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<Indexed>>>,
}

/// Tag of an index key in the lock-free table (never 0 or `u64::MAX`, which it reserves).
fn key_tag(k: &IndexKey) -> u64 {
    let (v6, len, [lo, hi]) = *k;
    let mut h = lo ^ hi.rotate_left(29) ^ (u64::from(len) << 56) ^ u64::from(v6);
    h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)).clamp(1, u64::MAX - 1)
}

impl Bucket {
    fn iter(&self) -> impl Iterator<Item = &Indexed> {
        std::iter::once(&self.first).chain(self.more.iter().flat_map(|m| m.iter()))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Indexed> {
        // (Writers modify a private copy, then publish it.)
        std::iter::once(&mut self.first).chain(self.more.iter_mut().flat_map(|m| m.iter_mut()))
    }

    fn push(&mut self, e: Indexed) {
        self.more.get_or_insert_with(Box::default).push(e);
    }

    /// Removes policy `id`; returns false when the bucket is left empty.
    fn remove(&mut self, id: u64) -> bool {
        if let Some(m) = self.more.as_mut() {
            m.retain(|e| e.id != id);
        }
        if self.first.id == id {
            match self.more.as_mut().and_then(|m| m.pop()) {
                Some(e) => self.first = e,
                None => return false,
            }
        }
        if self.more.as_ref().is_some_and(|m| m.is_empty()) {
            self.more = None;
        }
        true
    }
}

/// Result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyMatch {
    /// The policy.
    pub id: PolicyId,
    /// Its action now.
    pub action: PolicyAction,
}

/// (IPv6, prefix length, network as two 64-bit words): 24 bytes with 8-byte
/// alignment, where a `u128` would align (and pad) it and its map entries to 16.
type IndexKey = (bool, u8, [u64; 2]);

fn index_key(v6: bool, len: u8, net: u128) -> IndexKey {
    (v6, len, [net as u64, (net >> 64) as u64])
}

/// A small list kept inline when it has one element (nearly always: a
/// policy is usually one prefix, an SA usually protects one policy).
#[derive(Debug, Clone)]
enum OneOrMore<T> {
    One(T),
    More(Vec<T>),
}

impl<T: Copy + PartialEq> OneOrMore<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Self::One(t) => std::slice::from_ref(t),
            Self::More(v) => v,
        }
    }

    fn from_vec(mut v: Vec<T>) -> Self {
        if v.len() == 1 {
            Self::One(v[0])
        } else {
            v.shrink_to_fit();
            Self::More(v)
        }
    }
}

/// What removal and rekey need to know about an installed policy (the
/// lookup copy lives in the index).
#[derive(Debug, Clone)]
struct Installed {
    action: PolicyAction,
    keys: OneOrMore<IndexKey>,
}

/// Flows kept in [`Spd`]'s table of policy misses: beyond it, misses of new
/// flows are counted only in the workers' totals.
pub const MISS_FLOWS: usize = 4096;

/// (source, destination, protocol) of outbound packets that matched no policy.
type MissKey = (IpAddr, IpAddr, u8);

/// The policy database.
#[derive(Debug, Default)]
pub struct Spd {
    /// Buckets by index key, read without locks ([`crate::epoch_table`]).
    index: EpochTable<Bucket>,
    /// Installed policies (current action) and their index keys.
    policies: DashMap<u64, Installed>,
    /// Bit `len` set when some prefix of that length is indexed (v4: word 0; v6: words 1..=3).
    len_mask: [AtomicU64; 4],
    writer: Mutex<WriterState>,
    next_id: AtomicU64,
    /// Bumped after every change, so workers can drop cached lookups.
    generation: AtomicU64,
    /// Outbound packets that matched no policy, by flow without ports (at most
    /// [`MISS_FLOWS`]): a tunnel that lost its policies shows them on its
    /// CHILD_SA ([`Spd::misses_within`]), not only in a global counter.
    misses: DashMap<MissKey, AtomicU64>,
}

#[derive(Debug)]
struct WriterState {
    len_count_v4: [u32; 33],
    len_count_v6: [u32; 129],
}

impl Default for WriterState {
    fn default() -> Self {
        Self {
            len_count_v4: [0; 33],
            len_count_v6: [0; 129],
        }
    }
}

impl Spd {
    /// An empty SPD.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a policy.
    pub fn insert(&self, p: &Policy) -> Result<PolicyId, SpdError> {
        if p.local.is_v6() != p.remote.is_v6() {
            return Err(SpdError::FamilyMismatch);
        }
        let v6 = p.remote.is_v6();
        let bits = if v6 { 128 } else { 32 };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Indexed {
            id,
            priority: p.priority,
            action: p.action,
            local: p.local,
            remote: p.remote,
        };
        let (_, lo) = addr_bits(p.remote.start);
        let (_, hi) = addr_bits(p.remote.end);
        let keys: Vec<IndexKey> = range_to_prefixes(lo, hi, bits)
            .into_iter()
            .map(|(net, len)| index_key(v6, len, net))
            .collect();
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for k in &keys {
            self.update_bucket(k, |b| match b {
                Some(mut b) => {
                    b.push(entry);
                    Some(b)
                }
                None => Some(Bucket {
                    key: *k,
                    first: entry,
                    more: None,
                }),
            });
            self.bump_len(&mut w, k.0, k.1, true);
        }
        self.policies.insert(
            id,
            Installed {
                action: p.action,
                keys: OneOrMore::from_vec(keys),
            },
        );
        self.generation.fetch_add(1, Ordering::Release);
        Ok(PolicyId(id))
    }

    /// Replaces the bucket of `k` by `f(copy of it)` (`None`: no bucket);
    /// readers see the old or the new bucket, never a half-made one. Called
    /// with the writer lock held.
    fn update_bucket(&self, k: &IndexKey, f: impl FnOnce(Option<Bucket>) -> Option<Bucket>) {
        let tag = key_tag(k);
        let same = |b: &Bucket| b.key == *k;
        let old = {
            let guard = &crate::epoch_table::pin();
            self.index.get(tag, same, guard).cloned()
        };
        let existed = old.is_some();
        match (existed, f(old)) {
            (true, Some(b)) => {
                self.index.replace(tag, Arc::new(b), same);
            }
            (true, None) => {
                self.index.remove(tag, same);
            }
            (false, Some(b)) => {
                // The writer lock is held: nobody inserted it meanwhile.
                let _ = self.index.insert(tag, Arc::new(b), same);
            }
            (false, None) => {}
        }
    }

    fn bump_len(&self, w: &mut WriterState, v6: bool, len: u8, add: bool) {
        let count = if v6 {
            &mut w.len_count_v6[usize::from(len)]
        } else {
            &mut w.len_count_v4[usize::from(len)]
        };
        if add {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
        let (word, bit) = if v6 {
            (1 + usize::from(len) / 64, len % 64)
        } else {
            (0, len)
        };
        if *count > 0 {
            self.len_mask[word].fetch_or(1 << bit, Ordering::Release);
        } else {
            self.len_mask[word].fetch_and(!(1 << bit), Ordering::Release);
        }
    }

    /// Removes a policy.
    pub fn remove(&self, id: PolicyId) -> Result<(), SpdError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (_, installed) = self.policies.remove(&id.0).ok_or(SpdError::NotFound(id.0))?;
        for k in installed.keys.as_slice() {
            self.update_bucket(k, |b| b.and_then(|mut b| b.remove(id.0).then_some(b)));
            self.bump_len(&mut w, k.0, k.1, false);
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Repoints every policy protecting with `old` to `new` (outbound rekey);
    /// returns how many policies moved. It looks at every policy (there is
    /// no index by SA, which would cost every tunnel a map entry): callers
    /// that know their policies use [`Spd::replace_sa_of`].
    pub fn replace_sa(&self, old: SaId, new: SaId) -> usize {
        let ids: Vec<PolicyId> = self
            .policies
            .iter()
            .filter(|p| p.action == PolicyAction::Protect(old))
            .map(|p| PolicyId(*p.key()))
            .collect();
        self.replace_sa_of(&ids, old, new)
    }

    /// Repoints those of policies `ids` that protect with `old` to `new`
    /// (outbound rekey of an SA whose policies the caller tracks); returns
    /// how many policies moved.
    pub fn replace_sa_of(&self, ids: &[PolicyId], old: SaId, new: SaId) -> usize {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for PolicyId(id) in ids {
            let Some(mut p) = self.policies.get_mut(id) else {
                continue;
            };
            if p.action != PolicyAction::Protect(old) {
                continue;
            }
            n += 1;
            p.action = PolicyAction::Protect(new);
            for k in p.keys.as_slice() {
                self.update_bucket(k, |b| {
                    b.map(|mut b| {
                        for e in b.iter_mut().filter(|e| e.id == *id) {
                            e.action = PolicyAction::Protect(new);
                        }
                        b
                    })
                });
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
        n
    }

    /// Changes after every insert, removal or rekey: a worker that caches
    /// lookup results drops them when it sees a new value.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// True when no policy is installed.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Counts `packets` outbound packets of `flow` that matched no policy
    /// (the drop path: never called for protected traffic).
    pub fn note_misses(&self, flow: &FlowKey, packets: u64) {
        let key = (flow.src, flow.dst, flow.proto);
        if let Some(c) = self.misses.get(&key) {
            c.fetch_add(packets, Ordering::Relaxed);
        } else if self.misses.len() < MISS_FLOWS {
            self.misses
                .entry(key)
                .or_default()
                .fetch_add(packets, Ordering::Relaxed);
        }
    }

    /// Outbound packets that matched no policy from inside one of `local` to
    /// inside one of `remote` (ports are not kept: a selector narrowed to
    /// ports counts the misses of its whole address range).
    pub fn misses_within(&self, local: &[TrafficSelector], remote: &[TrafficSelector]) -> u64 {
        if self.misses.is_empty() {
            return 0;
        }
        self.misses
            .iter()
            .filter(|e| {
                let (src, dst, proto) = *e.key();
                local.iter().any(|l| l.covers(src, proto)) && remote.iter().any(|r| r.covers(dst, proto))
            })
            .map(|e| e.value().load(Ordering::Relaxed))
            .sum()
    }

    /// The best (lowest priority value, then longest destination prefix)
    /// policy matching `flow`.
    pub fn lookup(&self, flow: &FlowKey) -> Option<PolicyMatch> {
        let (v6, dst) = addr_bits(flow.dst);
        // No lock and no reference counting on the lookup path.
        let guard = &crate::epoch_table::pin();
        let mut best: Option<(u32, PolicyMatch)> = None;
        let words: &[usize] = if v6 { &[3, 2, 1] } else { &[0] };
        for &wi in words {
            let mut mask = self.len_mask[wi].load(Ordering::Acquire);
            while mask != 0 {
                let bit = 63 - mask.leading_zeros() as u8;
                mask &= !(1u64 << bit);
                let len = if v6 { (wi as u8 - 1) * 64 + bit } else { bit };
                let bits = if v6 { 128 } else { 32 };
                let net = dst & !host_mask(bits, len);
                let key = index_key(v6, len, net);
                let Some(bucket) = self.index.get(key_tag(&key), |b| b.key == key, guard) else {
                    continue;
                };
                for e in bucket.iter() {
                    if best.as_ref().is_some_and(|(p, _)| *p <= e.priority) {
                        continue;
                    }
                    if e.remote.matches(flow.dst, flow.proto, flow.dst_port)
                        && e.local.matches(flow.src, flow.proto, flow.src_port)
                    {
                        let m = PolicyMatch {
                            id: PolicyId(e.id),
                            action: e.action,
                        };
                        best = Some((e.priority, m));
                    }
                }
            }
        }
        best.map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: &str, dst: &str, proto: u8, sp: u16, dp: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            src_port: sp,
            dst_port: dp,
        }
    }

    fn pfx(s: &str, l: u8) -> TrafficSelector {
        TrafficSelector::prefix(s.parse().unwrap(), l).unwrap()
    }

    #[test]
    fn range_split_covers_exactly() {
        assert_eq!(range_to_prefixes(0, u128::from(u32::MAX), 32), vec![(0, 0)]);
        assert_eq!(range_to_prefixes(0, u128::MAX, 128), vec![(0, 0)]);
        let v = range_to_prefixes(1, 6, 32);
        assert_eq!(v, vec![(1, 32), (2, 31), (4, 31), (6, 32)]);
        let v = range_to_prefixes(10, 10, 32);
        assert_eq!(v, vec![(10, 32)]);
    }

    #[test]
    fn longest_prefix_priority_ports_and_families() {
        let spd = Spd::new();
        let any4 = pfx("0.0.0.0", 0);
        let wide = spd
            .insert(&Policy {
                local: any4,
                remote: pfx("10.0.0.0", 8),
                action: PolicyAction::Protect(SaId(1)),
                priority: 10,
            })
            .unwrap();
        let narrow = spd
            .insert(&Policy {
                local: any4,
                remote: pfx("10.1.2.0", 24),
                action: PolicyAction::Protect(SaId(2)),
                priority: 10,
            })
            .unwrap();
        let web =
            TrafficSelector::new("10.1.2.0".parse().unwrap(), "10.1.2.255".parse().unwrap(), 6, 443, 443).unwrap();
        spd.insert(&Policy {
            local: any4,
            remote: web,
            action: PolicyAction::Bypass,
            priority: 5,
        })
        .unwrap();
        spd.insert(&Policy {
            local: pfx("::", 0),
            remote: pfx("2001:db8::", 32),
            action: PolicyAction::Discard,
            priority: 1,
        })
        .unwrap();
        let m = |f: FlowKey| spd.lookup(&f);
        assert_eq!(m(flow("1.1.1.1", "10.9.9.9", 17, 1, 2)).unwrap().id, wide);
        assert_eq!(m(flow("1.1.1.1", "10.1.2.3", 17, 1, 2)).unwrap().id, narrow);
        assert_eq!(
            m(flow("1.1.1.1", "10.1.2.3", 6, 1, 443)).unwrap().action,
            PolicyAction::Bypass
        );
        assert!(m(flow("1.1.1.1", "11.0.0.1", 6, 1, 443)).is_none());
        assert_eq!(
            m(flow("2001:db8::1", "2001:db8:1::1", 6, 1, 2)).unwrap().action,
            PolicyAction::Discard
        );
        assert!(m(flow("::1", "2001:db9::1", 6, 1, 2)).is_none());
        // Rekey repoints; removal un-indexes.
        assert_eq!(spd.replace_sa(SaId(2), SaId(7)), 1);
        assert_eq!(
            m(flow("1.1.1.1", "10.1.2.3", 17, 1, 2)).unwrap().action,
            PolicyAction::Protect(SaId(7))
        );
        spd.remove(narrow).unwrap();
        assert_eq!(m(flow("1.1.1.1", "10.1.2.3", 17, 1, 2)).unwrap().id, wide);
        assert!(spd.remove(narrow).is_err());
    }

    #[test]
    fn misses_are_counted_by_flow_and_found_by_selectors() {
        let spd = Spd::new();
        let (lan, remote) = (pfx("10.1.0.0", 24), pfx("10.2.0.0", 24));
        assert_eq!(spd.misses_within(&[lan], &[remote]), 0);
        spd.note_misses(&flow("10.1.0.1", "10.2.0.1", 1, 0, 0), 3);
        spd.note_misses(&flow("10.1.0.1", "10.2.0.1", 1, 0, 0), 2);
        spd.note_misses(&flow("10.1.0.7", "10.2.0.9", 6, 40000, 443), 1);
        spd.note_misses(&flow("10.1.0.1", "10.3.0.1", 17, 1, 2), 10);
        assert_eq!(spd.misses_within(&[lan], &[remote]), 6);
        assert_eq!(spd.misses_within(&[lan], &[pfx("10.3.0.0", 24)]), 10);
        assert_eq!(spd.misses_within(&[pfx("10.9.0.0", 16)], &[remote]), 0);
        let udp_only = TrafficSelector::new(
            "10.2.0.0".parse().unwrap(),
            "10.2.0.255".parse().unwrap(),
            17,
            0,
            u16::MAX,
        )
        .unwrap();
        assert_eq!(spd.misses_within(&[lan], &[udp_only]), 0, "the protocol is kept");
        // The table is bounded; flows already in it keep counting.
        for i in 0..MISS_FLOWS as u32 {
            let dst = std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string();
            spd.note_misses(&flow("10.1.0.1", &dst, 17, 1, 2), 1);
        }
        assert_eq!(spd.misses.len(), MISS_FLOWS);
        spd.note_misses(&flow("10.1.0.1", "10.2.0.1", 1, 0, 0), 1);
        assert_eq!(spd.misses_within(&[lan], &[remote]), 7);
    }

    #[test]
    fn many_tunnels_lookup_each() {
        let spd = Spd::new();
        let any4 = pfx("0.0.0.0", 0);
        let n = 50_000u32;
        for i in 0..n {
            let net = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
            spd.insert(&Policy {
                local: any4,
                remote: pfx(&net.to_string(), 24),
                action: PolicyAction::Protect(SaId(u64::from(i))),
                priority: 1,
            })
            .unwrap();
        }
        let t = std::time::Instant::now();
        for i in 0..n {
            let dst = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8) + 7);
            let f = FlowKey {
                src: "192.168.0.1".parse().unwrap(),
                dst: IpAddr::V4(dst),
                proto: 17,
                src_port: 1,
                dst_port: 2,
            };
            assert_eq!(
                spd.lookup(&f).unwrap().action,
                PolicyAction::Protect(SaId(u64::from(i)))
            );
        }
        eprintln!("SPD: {n} lookups among {n} tunnels in {:?}", t.elapsed());
    }
}

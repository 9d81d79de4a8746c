//! A lock-free, read-mostly hash table of `Arc<V>` for the SAD.
//!
//! Readers (workers) never lock and never write shared memory: a lookup hashes
//! its 64-bit tag to a slot of an open-addressing array (16-byte slots, four
//! per cache line, linear probing) and follows the slot's pointer. Because the
//! slot's address is computable from the tag alone, a burst can prefetch the
//! slots of all its packets before looking any of them up
//! ([`EpochTable::prefetch_slot`]).
//!
//! Writers (the control plane) are serialised by a mutex. Removed values and
//! replaced slot arrays are reclaimed with epoch-based reclamation
//! (`crossbeam-epoch`): their memory stays valid until every reader that
//! could have seen them has unpinned. A reader pins once per burst, so the
//! lookups of a burst cost no atomic read-modify-write at all.
//!
//! Tags are chosen by the caller (an SPI or an SA id); 0 and `u64::MAX` are
//! reserved. Tag equality is checked again on the value (`matches`), so a slot
//! reused by another value between a reader's two loads is never mistaken for
//! the one it looked for.

use crate::huge::HugeArray;
pub use crossbeam_epoch::Guard;
use crossbeam_epoch::{self as epoch, Atomic, Owned};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Tag of a slot never used.
const EMPTY: u64 = 0;
/// Tag of a slot whose value was removed (probes continue past it).
const TOMBSTONE: u64 = u64::MAX;
/// Smallest slot array.
const MIN_SLOTS: usize = 64;

/// One slot: the value's tag and a pointer from `Arc::into_raw`.
struct Slot<V> {
    tag: AtomicU64,
    value: AtomicPtr<V>,
}

/// A slot array; `mask` = length − 1 (a power of two).
struct Slots<V> {
    mask: usize,
    /// On huge pages of its own when large (lookups land anywhere in it).
    slots: HugeArray<Slot<V>>,
}

impl<V> Slots<V> {
    fn new(len: usize) -> Self {
        let slots = HugeArray::new(len, |_| Slot {
            tag: AtomicU64::new(EMPTY),
            value: AtomicPtr::new(std::ptr::null_mut()),
        });
        Self { mask: len - 1, slots }
    }

    #[inline]
    fn home(&self, tag: u64) -> usize {
        let x = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((x ^ (x >> 32)) as usize) & self.mask
    }
}

/// Writer bookkeeping: live values and slots ever used (live + tombstones).
#[derive(Default)]
struct WriterState {
    live: usize,
    used: usize,
}

/// A concurrent map from 64-bit tags to `Arc<V>` with lock-free reads.
pub(crate) struct EpochTable<V: Send + Sync + 'static> {
    slots: Atomic<Slots<V>>,
    writer: Mutex<WriterState>,
    len: AtomicUsize,
}

impl<V: Send + Sync + 'static> std::fmt::Debug for EpochTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochTable").field("len", &self.len()).finish()
    }
}

impl<V: Send + Sync + 'static> Default for EpochTable<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Retires one strong reference of a value unlinked from the table.
fn retire_value<V: Send + Sync + 'static>(p: *mut V, guard: &Guard) {
    let addr = p as usize;
    // SAFETY: `p` came from `Arc::into_raw` and the table no longer links it;
    // the deferred drop runs after every reader pinned before the unlink has
    // unpinned, so no reader still dereferences it.
    unsafe {
        guard.defer_unchecked(move || drop(Arc::from_raw(addr as *const V)));
    }
}

impl<V: Send + Sync + 'static> EpochTable<V> {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self {
            slots: Atomic::new(Slots::new(MIN_SLOTS)),
            writer: Mutex::new(WriterState::default()),
            len: AtomicUsize::new(0),
        }
    }

    /// Number of values.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    #[inline]
    fn array<'g>(&self, guard: &'g Guard) -> &'g Slots<V> {
        // SAFETY: the array pointer is never null (set in `new`, replaced by
        // non-null arrays) and replaced arrays are reclaimed through the epoch.
        unsafe { self.slots.load(Ordering::Acquire, guard).deref() }
    }

    /// Starts loading the home slot of `tag` into the cache.
    #[inline]
    pub(crate) fn prefetch_slot(&self, tag: u64, guard: &Guard) {
        let a = self.array(guard);
        let i = a.home(tag);
        crate::prefetch::prefetch_line(&a.slots[i] as *const Slot<V> as *const u8);
    }

    /// Starts loading the value stored under `tag` (and the `Arc` reference
    /// count just before it) without dereferencing anything but slots: the
    /// value's own key is checked by the lookup that follows, once its line
    /// has arrived, so cold lookups of a burst overlap.
    #[inline]
    pub(crate) fn prefetch_value(&self, tag: u64, guard: &Guard) {
        let a = self.array(guard);
        let mut i = a.home(tag);
        for _ in 0..=a.mask {
            let s = &a.slots[i];
            match s.tag.load(Ordering::Acquire) {
                EMPTY => return,
                t if t == tag => {
                    let p = s.value.load(Ordering::Acquire) as *const u8;
                    if !p.is_null() {
                        crate::prefetch::prefetch_line(p.wrapping_sub(2 * std::mem::size_of::<usize>()));
                        crate::prefetch::prefetch_bytes(p, std::mem::size_of::<V>());
                        return;
                    }
                }
                _ => {}
            }
            i = (i + 1) & a.mask;
        }
    }

    /// The value of `tag` for which `matches` holds, valid while `guard` is held.
    #[inline]
    pub(crate) fn get<'g>(&self, tag: u64, matches: impl Fn(&V) -> bool, guard: &'g Guard) -> Option<&'g V> {
        let a = self.array(guard);
        let mut i = a.home(tag);
        for _ in 0..=a.mask {
            let s = &a.slots[i];
            match s.tag.load(Ordering::Acquire) {
                EMPTY => return None,
                t if t == tag => {
                    let p = s.value.load(Ordering::Acquire);
                    if !p.is_null() {
                        // SAFETY: a non-null slot pointer is a live `Arc`
                        // (strong count held by the table) or one retired
                        // after this guard was pinned, so still allocated.
                        let v = unsafe { &*p };
                        if matches(v) {
                            return Some(v);
                        }
                    }
                }
                _ => {}
            }
            i = (i + 1) & a.mask;
        }
        None
    }

    /// Like [`EpochTable::get`], returning a new strong reference.
    #[inline]
    pub(crate) fn get_arc(&self, tag: u64, matches: impl Fn(&V) -> bool, guard: &Guard) -> Option<Arc<V>> {
        let v = self.get(tag, matches, guard)?;
        let p = v as *const V;
        // SAFETY: `p` came from `Arc::into_raw` and its allocation is alive
        // (see `get`), so its strong count is at least 1 while we add one.
        unsafe {
            Arc::increment_strong_count(p);
            Some(Arc::from_raw(p))
        }
    }

    /// Inserts `value` under `tag` unless a value for which `matches` holds
    /// is present (then `value` is handed back).
    pub(crate) fn insert(&self, tag: u64, value: Arc<V>, matches: impl Fn(&V) -> bool) -> Result<(), Arc<V>> {
        assert!(tag != EMPTY && tag != TOMBSTONE, "reserved tag");
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let guard = &epoch::pin();
        if self.get(tag, &matches, guard).is_some() {
            return Err(value);
        }
        // Keep the load factor (live + tombstones) at most 3/4; 16-byte
        // slots, four per cache line, so probes rarely leave the home line.
        let a = self.array(guard);
        if (w.used + 1) * 4 > (a.mask + 1) * 3 {
            let want = (w.live + 1) * 2;
            self.rebuild(&mut w, want, guard);
        }
        let a = self.array(guard);
        let mut i = a.home(tag);
        loop {
            let s = &a.slots[i];
            let t = s.tag.load(Ordering::Relaxed);
            if t == EMPTY || t == TOMBSTONE {
                if t == EMPTY {
                    w.used += 1;
                }
                // Pointer first, then the tag that makes readers look at it.
                s.value.store(Arc::into_raw(value) as *mut V, Ordering::Release);
                s.tag.store(tag, Ordering::Release);
                break;
            }
            i = (i + 1) & a.mask;
        }
        w.live += 1;
        self.len.store(w.live, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the value of `tag` for which `matches` holds with `value`
    /// (readers see the old or the new one); false when there is none.
    pub(crate) fn replace(&self, tag: u64, value: Arc<V>, matches: impl Fn(&V) -> bool) -> bool {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let guard = &epoch::pin();
        let Some(s) = self.find_slot(tag, &matches, guard) else {
            return false;
        };
        let old = s.value.swap(Arc::into_raw(value) as *mut V, Ordering::AcqRel);
        retire_value(old, guard);
        true
    }

    /// Removes the value of `tag` for which `matches` holds and returns it;
    /// readers that found it before keep a valid reference until they unpin.
    pub(crate) fn remove(&self, tag: u64, matches: impl Fn(&V) -> bool) -> Option<Arc<V>> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let guard = &epoch::pin();
        let s = self.find_slot(tag, &matches, guard)?;
        let p = s.value.swap(std::ptr::null_mut(), Ordering::AcqRel);
        s.tag.store(TOMBSTONE, Ordering::Release);
        w.live -= 1;
        self.len.store(w.live, Ordering::Relaxed);
        // SAFETY: `p` is the table's strong reference (non-null: `find_slot`
        // checked it under the writer lock); one more for the caller.
        let out = unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        };
        retire_value(p, guard);
        Some(out)
    }

    /// The slot holding `tag`'s matching value (writer lock held).
    fn find_slot<'g>(&self, tag: u64, matches: &impl Fn(&V) -> bool, guard: &'g Guard) -> Option<&'g Slot<V>> {
        let a = self.array(guard);
        let mut i = a.home(tag);
        for _ in 0..=a.mask {
            let s = &a.slots[i];
            match s.tag.load(Ordering::Relaxed) {
                EMPTY => return None,
                t if t == tag => {
                    let p = s.value.load(Ordering::Relaxed);
                    // SAFETY: under the writer lock a linked pointer stays linked.
                    if !p.is_null() && matches(unsafe { &*p }) {
                        return Some(s);
                    }
                }
                _ => {}
            }
            i = (i + 1) & a.mask;
        }
        None
    }

    /// Moves every value into a new array of at least `want` slots (writer lock held).
    fn rebuild(&self, w: &mut WriterState, want: usize, guard: &Guard) {
        let old = self.slots.load(Ordering::Acquire, guard);
        // SAFETY: see `array`.
        let a = unsafe { old.deref() };
        let new = Slots::new(want.max(MIN_SLOTS).next_power_of_two());
        let mut used = 0;
        for s in a.slots.iter() {
            let p = s.value.load(Ordering::Relaxed);
            if p.is_null() {
                continue;
            }
            let tag = s.tag.load(Ordering::Relaxed);
            let mut i = new.home(tag);
            while new.slots[i].tag.load(Ordering::Relaxed) != EMPTY {
                i = (i + 1) & new.mask;
            }
            // The strong reference moves to the new array.
            new.slots[i].value.store(p, Ordering::Relaxed);
            new.slots[i].tag.store(tag, Ordering::Relaxed);
            used += 1;
        }
        w.used = used;
        self.slots.store(Owned::new(new), Ordering::Release);
        // SAFETY: the old array is unlinked; readers pinned before may still
        // probe it (its pointers stay valid: values removed later are retired
        // through the epoch too), so it is freed after they unpin. Its slots
        // own nothing any more (dropping `Slots` does not touch the pointers).
        unsafe { guard.defer_destroy(old) };
    }
}

impl<V: Send + Sync + 'static> Drop for EpochTable<V> {
    fn drop(&mut self) {
        // Readers pinned now may still hold values borrowed from this table
        // (borrows last as long as their guard): everything goes through the epoch.
        let guard = &epoch::pin();
        let a = self.slots.load(Ordering::Acquire, guard);
        // SAFETY: see `array`; `&mut self` leaves no writer.
        for s in unsafe { a.deref() }.slots.iter() {
            let p = s.value.load(Ordering::Relaxed);
            if !p.is_null() {
                retire_value(p, guard);
            }
        }
        // SAFETY: unlinked with the table itself; freed after current readers unpin.
        unsafe { guard.defer_destroy(a) };
    }
}

/// Pins the current thread: values read from an [`EpochTable`] stay valid
/// until the guard is dropped. Cheap when the thread is already pinned.
#[inline]
pub fn pin() -> Guard {
    epoch::pin()
}

/// Lets memory retired by earlier removals go as soon as no reader can see
/// it (normally that happens in the background as threads pin and unpin).
pub fn reclaim() {
    for _ in 0..4 {
        epoch::pin().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Item {
        tag: u64,
        n: u64,
    }

    fn item(tag: u64, n: u64) -> Arc<Item> {
        Arc::new(Item { tag, n })
    }

    #[test]
    fn insert_get_remove_grow_and_tombstones() {
        let t = EpochTable::<Item>::new();
        for k in 1..=10_000u64 {
            t.insert(k, item(k, k * 2), |v| v.tag == k).unwrap();
        }
        assert!(t.insert(5, item(5, 0), |v| v.tag == 5).is_err());
        assert_eq!(t.len(), 10_000);
        let g = &pin();
        for k in 1..=10_000u64 {
            assert_eq!(t.get(k, |v| v.tag == k, g).unwrap().n, k * 2);
        }
        assert!(t.get(10_001, |v| v.tag == 10_001, g).is_none());
        for k in (1..=10_000u64).step_by(2) {
            assert_eq!(t.remove(k, |v| v.tag == k).unwrap().n, k * 2);
        }
        assert!(t.remove(1, |v| v.tag == 1).is_none());
        // Churn: tombstones get reused or rebuilt away.
        for round in 0..20u64 {
            for k in 20_001..20_500u64 {
                t.insert(k, item(k, round), |v| v.tag == k).unwrap();
            }
            for k in 20_001..20_500u64 {
                t.remove(k, |v| v.tag == k).unwrap();
            }
        }
        for k in 1..=10_000u64 {
            assert_eq!(t.get(k, |v| v.tag == k, g).is_some(), k % 2 == 0);
        }
        assert_eq!(t.get_arc(2, |v| v.tag == 2, g).unwrap().n, 4);
        assert!(t.replace(2, item(2, 99), |v| v.tag == 2));
        assert!(!t.replace(3, item(3, 99), |v| v.tag == 3));
        assert_eq!(t.get(2, |v| v.tag == 2, g).unwrap().n, 99);
        assert_eq!(t.len(), 5_000);
    }

    #[test]
    fn removed_values_are_released() {
        let t = EpochTable::<Item>::new();
        let v = item(7, 1);
        t.insert(7, v.clone(), |x| x.tag == 7).unwrap();
        let out = t.remove(7, |x| x.tag == 7).unwrap();
        drop(out);
        // Other tests' threads may stay pinned for a while on a loaded machine:
        // retry for a bounded time rather than a bounded number of tries.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&v) != 1 && std::time::Instant::now() < deadline {
            reclaim();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn readers_during_inserts_removals_and_rebuilds() {
        let t = Arc::new(EpochTable::<Item>::new());
        // Stable values that must always be found.
        for k in 1..=1000u64 {
            t.insert(k, item(k, k), |v| v.tag == k).unwrap();
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (t, stop) = (t.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let g = &pin();
                        for k in 1..=1000u64 {
                            let v = t.get(k, |v| v.tag == k, g).expect("stable value missing");
                            assert_eq!(v.n, k);
                            t.prefetch_slot(k + 5000, g);
                            if let Some(v) = t.get(k + 5000, |v| v.tag == k + 5000, g) {
                                assert_eq!(v.tag, k + 5000);
                                seen += 1;
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        for round in 0..200u64 {
            for k in 5001..6001u64 {
                t.insert(k, item(k, round), |v| v.tag == k).unwrap();
            }
            for k in 5001..6001u64 {
                t.remove(k, |v| v.tag == k).unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(t.len(), 1000);
    }
}

//! The flow table: a slab of slots, a hash index by canonical key, and a recency list.
//!
//! Invariants:
//! - a slot is *free* (on the free list), *live* (in the index and on the recency list), or
//!   *detached* (holding a connection that has ended but whose state may still be read until
//!   the caller frees it: out of the index and the recency list);
//! - the recency list holds exactly the live slots, least recently used first, so the idle
//!   timeout and eviction both look only at its head;
//! - a slot's generation changes each time it is freed, so a handle kept past reuse is
//!   recognised as stale.
//!
//! Room for `capacity` slots is reserved at creation (address space only: pages are taken as
//! slots are first used), slots are created on demand up to `capacity` and then reused from
//! the free list, so a large limit costs nothing until traffic needs it, the steady state
//! allocates nothing, and the table never holds more than [`FlowTable::memory_bound`] bytes.
//!
//! The index is an open-addressing table of 8-byte entries (the key's 32-bit hash and a slot
//! number) rather than a map holding whole keys: it stays small enough to sit in cache with
//! many connections, the key is hashed once per packet (by [`FlowKey::new`]), and a probe
//! reads a slot's key only when the hash already matches.

use super::key::FlowKey;
use core::mem::size_of;

const NIL: u32 = u32::MAX;

/// The hash index: linear probing over a power-of-two array, at most half full, with
/// backward-shift deletion (no tombstones, so probe lengths stay short under churn).
#[derive(Debug, Default)]
struct Index {
    /// `hash << 32 | slot`, or [`Index::EMPTY`].
    entries: Vec<u64>,
    len: usize,
}

impl Index {
    /// An empty entry (slot number `NIL`, which no slot has).
    const EMPTY: u64 = u64::MAX;
    const MIN_SIZE: usize = 64;

    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    fn home(hash: u32, mask: usize) -> usize {
        hash as usize & mask
    }

    fn entry(hash: u32, slot: u32) -> u64 {
        u64::from(hash) << 32 | u64::from(slot)
    }

    /// The slot whose entry has `hash` and for which `is_key` holds.
    #[inline]
    fn find(&self, hash: u32, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = Self::home(hash, mask);
        loop {
            let e = self.entries[i];
            if e == Self::EMPTY {
                return None;
            }
            if (e >> 32) as u32 == hash && is_key(e as u32) {
                return Some(e as u32);
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, hash: u32, slot: u32) {
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow();
        }
        self.place(Self::entry(hash, slot));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mask = self.mask();
        let mut i = Self::home((e >> 32) as u32, mask);
        while self.entries[i] != Self::EMPTY {
            i = (i + 1) & mask;
        }
        self.entries[i] = e;
    }

    fn grow(&mut self) {
        let size = (self.entries.len() * 2).max(Self::MIN_SIZE);
        let old = std::mem::replace(&mut self.entries, vec![Self::EMPTY; size]);
        for e in old.into_iter().filter(|&e| e != Self::EMPTY) {
            self.place(e);
        }
    }

    /// Removes the entry of `slot` (hashed `hash`), if present.
    fn remove(&mut self, hash: u32, slot: u32) {
        if self.entries.is_empty() {
            return;
        }
        let mask = self.mask();
        let target = Self::entry(hash, slot);
        let mut i = Self::home(hash, mask);
        loop {
            match self.entries[i] {
                Self::EMPTY => return,
                e if e == target => break,
                _ => i = (i + 1) & mask,
            }
        }
        // Backward shift: pull later entries of the run into the hole when their home is not
        // between the hole and themselves (cyclically), so every entry stays reachable.
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = self.entries[j];
            if e == Self::EMPTY {
                break;
            }
            let home = Self::home((e >> 32) as u32, mask);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                self.entries[i] = e;
                i = j;
            }
        }
        self.entries[i] = Self::EMPTY;
        self.len -= 1;
    }

    /// Forgets every entry (keeping the memory).
    fn clear(&mut self) {
        self.entries.fill(Self::EMPTY);
        self.len = 0;
    }
}

#[derive(Debug)]
struct Slot<V> {
    /// The key while live or detached (stale once free; the index never points at it then).
    key: FlowKey,
    value: Option<V>,
    last_ns: u64,
    prev: u32,
    next: u32,
    generation: u32,
    live: bool,
}

/// Slots, index and recency list for up to `capacity` connections.
#[derive(Debug)]
pub struct FlowTable<V> {
    slots: Vec<Slot<V>>,
    capacity: usize,
    index: Index,
    /// Free slots, linked through their `next` field (most recently freed first).
    free_head: u32,
    free_len: usize,
    lru_head: u32,
    lru_tail: u32,
    live: usize,
}

impl<V> FlowTable<V> {
    /// A table of `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity > 0 && capacity < NIL as usize,
            "flow table capacity out of range"
        );
        FlowTable {
            // Reserved whole, so the slab never doubles past the limit (nor copies itself).
            slots: Vec::with_capacity(capacity),
            capacity,
            index: Index::default(),
            free_head: NIL,
            free_len: 0,
            lru_head: NIL,
            lru_tail: NIL,
            live: 0,
        }
    }

    /// The most heap bytes a table of `capacity` slots uses while at most `max_live` of them
    /// are live at once: the slab (reserved at creation), the index at its
    /// largest (the smallest power of two at least twice `max_live`) plus the half-size array
    /// it held while growing to that size, and the list [`FlowTable::detach_all`] returns.
    pub fn memory_bound(capacity: usize, max_live: usize) -> usize {
        let index = max_live
            .saturating_mul(2)
            .max(Index::MIN_SIZE)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX);
        capacity
            .saturating_mul(size_of::<Slot<V>>() + size_of::<u32>())
            .saturating_add((index.saturating_mul(size_of::<u64>()) / 2).saturating_mul(3))
    }

    /// Bytes of one slot (with its value) in the slab.
    pub fn slot_bytes() -> usize {
        size_of::<Slot<V>>()
    }

    /// Number of live slots.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Number of slots not free (live and detached).
    pub fn used(&self) -> usize {
        self.slots.len() - self.free_len
    }

    /// The most slots the table will hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The live slot for `key`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.index
            .find(key.hash32(), |slot| self.slots[slot as usize].key == *key)
    }

    /// Whether `slot` is live and still of `generation`: then it holds the key it held when it
    /// was found with that generation (a slot takes another key only after it is freed, which
    /// changes its generation), and that key's lookup still finds it.
    #[inline]
    pub fn is_live(&self, slot: u32, generation: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.live && s.generation == generation)
    }

    /// Takes a free slot for `key` (which must not be live) and makes it live and most recent.
    /// `None` when no slot is free.
    pub fn insert(&mut self, key: FlowKey, value: V, now_ns: u64) -> Option<u32> {
        let slot = match self.free_head {
            NIL if self.slots.len() >= self.capacity => return None,
            NIL => {
                self.slots.push(Slot {
                    key: FlowKey::default(),
                    value: None,
                    last_ns: 0,
                    prev: NIL,
                    next: NIL,
                    generation: 0,
                    live: false,
                });
                (self.slots.len() - 1) as u32
            }
            slot => {
                self.free_head = self.slots[slot as usize].next;
                self.free_len -= 1;
                slot
            }
        };
        let s = &mut self.slots[slot as usize];
        s.key = key;
        s.value = Some(value);
        s.last_ns = now_ns;
        s.live = true;
        debug_assert!(
            self.lookup(&key).is_none(),
            "insert of a key that is already live"
        );
        self.index.insert(key.hash32(), slot);
        self.link_tail(slot);
        self.live += 1;
        Some(slot)
    }

    /// The generation of a slot.
    pub fn generation(&self, slot: u32) -> u32 {
        self.slots[slot as usize].generation
    }

    /// The value in a live or detached slot.
    pub fn get(&self, slot: u32) -> Option<&V> {
        self.slots.get(slot as usize)?.value.as_ref()
    }

    /// The value in a live or detached slot, mutably.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut V> {
        self.slots.get_mut(slot as usize)?.value.as_mut()
    }

    /// Marks a live slot as used at `now_ns` (moves it to the recent end).
    pub fn touch(&mut self, slot: u32, now_ns: u64) {
        let s = &mut self.slots[slot as usize];
        s.last_ns = now_ns;
        if s.live && self.lru_tail != slot {
            self.unlink(slot);
            self.link_tail(slot);
        }
    }

    /// When `slot` was last touched (inserted or [`FlowTable::touch`]ed); 0 for a slot that
    /// does not exist.
    pub fn last_touched(&self, slot: u32) -> u64 {
        self.slots.get(slot as usize).map_or(0, |s| s.last_ns)
    }

    /// The least recently used live slot and its last-use time.
    pub fn oldest(&self) -> Option<(u32, u64)> {
        (self.lru_head != NIL).then(|| (self.lru_head, self.slots[self.lru_head as usize].last_ns))
    }

    /// Takes a live slot out of the index and the recency list, keeping its value readable
    /// until [`FlowTable::free`].
    pub fn detach(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if !s.live {
            return;
        }
        s.live = false;
        // Only live slots are indexed, so the entry found is this slot's own.
        self.index.remove(s.key.hash32(), slot);
        self.unlink(slot);
        self.live -= 1;
    }

    /// Detaches every live slot at once (as [`FlowTable::detach`] on each), returning them
    /// least recent first.
    pub fn detach_all(&mut self) -> Vec<u32> {
        let slots = self.live_slots();
        for &slot in &slots {
            let s = &mut self.slots[slot as usize];
            s.live = false;
            s.prev = NIL;
            s.next = NIL;
        }
        self.index.clear();
        self.lru_head = NIL;
        self.lru_tail = NIL;
        self.live = 0;
        slots
    }

    /// Returns a slot to the free list, dropping its value and changing its generation.
    pub fn free(&mut self, slot: u32) -> Option<V> {
        self.detach(slot);
        let s = &mut self.slots[slot as usize];
        let value = s.value.take()?;
        s.generation = s.generation.wrapping_add(1);
        // Detached above, so `next` is free to link it.
        s.next = self.free_head;
        self.free_head = slot;
        self.free_len += 1;
        Some(value)
    }

    /// Slots in recency order, least recent first (for end-of-input flushes and tests).
    pub fn live_slots(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.live);
        let mut at = self.lru_head;
        while at != NIL {
            out.push(at);
            at = self.slots[at as usize].next;
        }
        out
    }

    fn link_tail(&mut self, slot: u32) {
        let tail = self.lru_tail;
        {
            let s = &mut self.slots[slot as usize];
            s.prev = tail;
            s.next = NIL;
        }
        if tail == NIL {
            self.lru_head = slot;
        } else {
            self.slots[tail as usize].next = slot;
        }
        self.lru_tail = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let s = &self.slots[slot as usize];
            (s.prev, s.next)
        };
        if prev == NIL {
            self.lru_head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.lru_tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        let s = &mut self.slots[slot as usize];
        s.prev = NIL;
        s.next = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::super::key::Endpoint;
    use super::*;
    use proptest::prelude::*;

    fn key(n: u16) -> FlowKey {
        let a = Endpoint {
            addr: "10.0.0.1".parse().unwrap(),
            port: n,
        };
        let b = Endpoint {
            addr: "10.0.0.2".parse().unwrap(),
            port: 80,
        };
        FlowKey::new(a, b).0
    }

    #[test]
    fn is_live_holds_until_the_slot_is_detached_or_reused() {
        let mut t = FlowTable::new(4);
        let a = t.insert(key(1), "a", 10).unwrap();
        let b = t.insert(key(2), "b", 20).unwrap();
        let (ga, gb) = (t.generation(a), t.generation(b));
        assert!(t.is_live(a, ga) && t.is_live(b, gb));
        // Another generation, and slots out of range, are not live.
        assert!(!t.is_live(a, ga.wrapping_add(1)));
        assert!(!t.is_live(99, 0) && !t.is_live(u32::MAX, ga));
        // Detached: its value is still readable, but it is not live.
        t.detach(a);
        assert!(!t.is_live(a, ga));
        assert_eq!(t.get(a), Some(&"a"));
        // Freed and taken by another key: the old generation is not believed.
        t.free(a);
        let c = t.insert(key(3), "c", 30).unwrap();
        assert_eq!(c, a, "the freed slot is reused first");
        assert!(!t.is_live(a, ga));
        assert!(t.is_live(c, t.generation(c)));
        assert_eq!(t.lookup(&key(3)), Some(c));
        assert!(t.is_live(b, gb));
    }

    #[test]
    fn insert_lookup_touch_and_free() {
        let mut t = FlowTable::new(3);
        let a = t.insert(key(1), "a", 10).unwrap();
        let b = t.insert(key(2), "b", 20).unwrap();
        assert_eq!(t.lookup(&key(1)), Some(a));
        assert_eq!(t.oldest(), Some((a, 10)));
        t.touch(a, 30);
        assert_eq!(t.oldest(), Some((b, 20)));
        let g = t.generation(b);
        assert_eq!(t.free(b), Some("b"));
        assert_ne!(t.generation(b), g);
        assert_eq!(t.lookup(&key(2)), None);
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn detached_value_stays_readable_and_key_can_be_reused() {
        let mut t = FlowTable::new(2);
        let a = t.insert(key(1), 1u32, 0).unwrap();
        t.detach(a);
        assert_eq!(t.lookup(&key(1)), None);
        assert_eq!(t.get(a), Some(&1));
        let b = t.insert(key(1), 2u32, 1).unwrap();
        assert_eq!(t.lookup(&key(1)), Some(b));
        // Freeing the old slot must not drop the new slot's index entry.
        t.free(a);
        assert_eq!(t.lookup(&key(1)), Some(b));
        assert_eq!(t.used(), 1);
    }

    #[test]
    fn full_table_refuses_insert() {
        let mut t = FlowTable::new(1);
        t.insert(key(1), (), 0).unwrap();
        assert!(t.insert(key(2), (), 0).is_none());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u64),
        Touch(u16, u64),
        Free(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..16, 0u64..1000).prop_map(|(k, t)| Op::Insert(k, t)),
            (0u16..16, 0u64..1000).prop_map(|(k, t)| Op::Touch(k, t)),
            (0u16..16).prop_map(Op::Free),
        ]
    }

    proptest! {
        /// The index against a map, with hashes from a tiny range so that runs collide, wrap
        /// around the end of the array and get shifted back by removals.
        #[test]
        fn index_matches_map(ops in proptest::collection::vec((any::<bool>(), 0u32..40), 1..400)) {
            let mut idx = Index::default();
            let mut model = std::collections::HashMap::new();
            for (add, slot) in ops {
                // Hashes near the top of the 64-entry array wrap to its start.
                let hash = 60 + slot % 9;
                if add && !model.contains_key(&slot) {
                    idx.insert(hash, slot);
                    model.insert(slot, hash);
                } else if let Some(h) = model.remove(&slot) {
                    idx.remove(h, slot);
                }
                prop_assert_eq!(idx.len, model.len());
                for (&slot, &hash) in &model {
                    prop_assert_eq!(idx.find(hash, |s| s == slot), Some(slot));
                }
                for slot in 0..40u32 {
                    if !model.contains_key(&slot) {
                        prop_assert_eq!(idx.find(60 + slot % 9, |s| s == slot), None);
                    }
                }
            }
        }

        /// The table against a model: a list of live keys in recency order.
        #[test]
        fn matches_recency_model(ops in proptest::collection::vec(op(), 1..200)) {
            let mut t = FlowTable::new(8);
            let mut model: Vec<(u16, u64)> = Vec::new();
            for o in ops {
                match o {
                    Op::Insert(k, ts) => {
                        if model.iter().any(|m| m.0 == k) { continue; }
                        let got = t.insert(key(k), k, ts);
                        if model.len() < 8 {
                            prop_assert!(got.is_some());
                            model.push((k, ts));
                        } else {
                            prop_assert!(got.is_none());
                        }
                    }
                    Op::Touch(k, ts) => {
                        if let Some(pos) = model.iter().position(|m| m.0 == k) {
                            t.touch(t.lookup(&key(k)).unwrap(), ts);
                            model.remove(pos);
                            model.push((k, ts));
                        }
                    }
                    Op::Free(k) => {
                        if let Some(pos) = model.iter().position(|m| m.0 == k) {
                            let slot = t.lookup(&key(k)).unwrap();
                            prop_assert_eq!(t.free(slot), Some(k));
                            model.remove(pos);
                        }
                    }
                }
                let order: Vec<u16> = t.live_slots().iter().map(|&s| *t.get(s).unwrap()).collect();
                let want: Vec<u16> = model.iter().map(|m| m.0).collect();
                prop_assert_eq!(order, want);
                prop_assert_eq!(t.oldest().map(|(_, ts)| ts), model.first().map(|m| m.1));
            }
        }
    }
}

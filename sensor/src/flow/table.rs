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
//! Slots are created on demand up to `capacity` and then reused from the free list, so a
//! large limit costs nothing until traffic needs it, and the steady state allocates nothing.

use super::key::FlowKey;
use rustc_hash::FxBuildHasher;
use std::collections::HashMap;

const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Slot<V> {
    key: Option<FlowKey>,
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
    index: HashMap<FlowKey, u32, FxBuildHasher>,
    free: Vec<u32>,
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
            slots: Vec::new(),
            capacity,
            index: HashMap::with_hasher(FxBuildHasher),
            free: Vec::new(),
            lru_head: NIL,
            lru_tail: NIL,
            live: 0,
        }
    }

    /// Number of live slots.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Number of slots not free (live and detached).
    pub fn used(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The most slots the table will hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The live slot for `key`.
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// Takes a free slot for `key` (which must not be live) and makes it live and most recent.
    /// `None` when no slot is free.
    pub fn insert(&mut self, key: FlowKey, value: V, now_ns: u64) -> Option<u32> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots.len() < self.capacity => {
                self.slots.push(Slot {
                    key: None,
                    value: None,
                    last_ns: 0,
                    prev: NIL,
                    next: NIL,
                    generation: 0,
                    live: false,
                });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let s = &mut self.slots[slot as usize];
        s.key = Some(key);
        s.value = Some(value);
        s.last_ns = now_ns;
        s.live = true;
        let previous = self.index.insert(key, slot);
        debug_assert!(previous.is_none(), "insert of a key that is already live");
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
        if let Some(key) = s.key {
            if self.index.get(&key) == Some(&slot) {
                self.index.remove(&key);
            }
        }
        self.unlink(slot);
        self.live -= 1;
    }

    /// Returns a slot to the free list, dropping its value and changing its generation.
    pub fn free(&mut self, slot: u32) -> Option<V> {
        self.detach(slot);
        let s = &mut self.slots[slot as usize];
        let value = s.value.take()?;
        s.key = None;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
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

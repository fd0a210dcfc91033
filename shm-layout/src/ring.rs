//! The event ring protocol: one producer (a sensor worker), one consumer (an analyzer).
//!
//! Free-running 64-bit indices: record `i` lives in slot `i % capacity`. The producer writes a
//! record's words, then publishes with a release store of its index; the consumer observes the
//! index with an acquire load, copies the record, and after handling it stores its own index
//! (release) in its analyzer page. The producer reads that index (acquire) before reusing a
//! slot, and clamps it: an analyzer that writes garbage there can only make its own ring look
//! full or empty, never make the producer write outside the ring. The producer also takes the
//! index only forward: a value below one it accepted before is ignored, so moving the index
//! back and forth never counts as progress and never makes consumed slots look unconsumed.

use crate::layout::{ConsumerIndex, EventRecord, EventRingHeader, EventSlot};
use crate::pod::Words;
use crate::sync::{own_load, Ordering};

/// A producer's indices between uses, so that it can be rebuilt cheaply per batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerState {
    /// Records published.
    pub published: u64,
    /// The consumer index as last read.
    pub consumed: u64,
}

/// The producer end of one ring.
#[derive(Debug)]
pub struct Producer<'a> {
    hdr: &'a EventRingHeader,
    slots: &'a [EventSlot],
    cons: &'a ConsumerIndex,
    mask: u64,
    prod: u64,
    /// The consumer index as last read (clamped).
    seen_cons: u64,
}

impl<'a> Producer<'a> {
    /// The producer of a ring whose header, slots and consumer index the caller mapped. `None`
    /// if the slot count is not the header's power-of-two capacity.
    pub fn new(
        hdr: &'a EventRingHeader,
        slots: &'a [EventSlot],
        cons: &'a ConsumerIndex,
    ) -> Option<Self> {
        let prod = own_load(&hdr.producer);
        // From the lowest index the ring allows, so that the first read takes the consumer's.
        let mut p = Self::resume(
            hdr,
            slots,
            cons,
            ProducerState {
                published: prod,
                consumed: prod.saturating_sub(hdr.capacity),
            },
        )?;
        p.refresh_consumer();
        Some(p)
    }

    /// A producer that goes on from a saved [`ProducerState`] (the producer is the only writer
    /// of its index, so it need not read the header back), without reading the consumer's
    /// index, which lives on another process's cache line.
    pub fn resume(
        hdr: &'a EventRingHeader,
        slots: &'a [EventSlot],
        cons: &'a ConsumerIndex,
        state: ProducerState,
    ) -> Option<Self> {
        let cap = hdr.capacity;
        if !cap.is_power_of_two() || slots.len() as u64 != cap {
            return None;
        }
        Some(Producer {
            hdr,
            slots,
            cons,
            mask: cap - 1,
            prod: state.published,
            seen_cons: state
                .consumed
                .clamp(state.published.saturating_sub(cap), state.published),
        })
    }

    /// What [`Producer::resume`] needs to go on later.
    #[inline]
    pub fn state(&self) -> ProducerState {
        ProducerState {
            published: self.prod,
            consumed: self.seen_cons,
        }
    }

    /// Records the ring holds.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Records published so far.
    #[inline]
    pub fn published(&self) -> u64 {
        self.prod
    }

    /// Reads the consumer's index (once), clamped to `[published - capacity, published]` and
    /// never below what was accepted before: the result only moves forward.
    #[inline]
    pub fn refresh_consumer(&mut self) -> u64 {
        let c = self.cons.index.load(Ordering::Acquire);
        let low = self.prod.saturating_sub(self.capacity());
        self.seen_cons = c.clamp(low, self.prod).max(self.seen_cons);
        self.seen_cons
    }

    /// The consumer index as last read by [`Producer::refresh_consumer`] or a push.
    #[inline]
    pub fn consumed(&self) -> u64 {
        self.seen_cons
    }

    /// Publishes one record; `false` (nothing written) if the ring is full.
    #[inline]
    pub fn try_push(&mut self, rec: &EventRecord) -> bool {
        if self.prod - self.seen_cons >= self.capacity() {
            self.refresh_consumer();
            if self.prod - self.seen_cons >= self.capacity() {
                return false;
            }
        }
        rec.store(&self.slots[(self.prod & self.mask) as usize].words);
        self.prod += 1;
        self.hdr.producer.store(self.prod, Ordering::Release);
        true
    }

    /// Writes one record without making it visible: the consumer sees it (and every record
    /// written before it) at the next [`Producer::publish`]. `false` (nothing written) if the
    /// ring is full, counting the records written and not yet published. One release store
    /// per batch instead of one per record keeps the line the consumer polls from moving
    /// between cores on every event.
    #[inline]
    pub fn push_unpublished(&mut self, rec: &EventRecord, pending: &mut u64) -> bool {
        let next = self.prod + *pending;
        if next - self.seen_cons >= self.capacity() {
            self.refresh_consumer();
            if next - self.seen_cons >= self.capacity() {
                return false;
            }
        }
        rec.store(&self.slots[(next & self.mask) as usize].words);
        *pending += 1;
        true
    }

    /// Makes the `pending` records written by [`Producer::push_unpublished`] visible to the
    /// consumer, with one release store of the producer index.
    #[inline]
    pub fn publish(&mut self, pending: &mut u64) {
        if *pending > 0 {
            self.prod += std::mem::take(pending);
            self.hdr.producer.store(self.prod, Ordering::Release);
        }
    }

    /// The record of index `i`, if it is still in the ring (`published - capacity <= i <
    /// published`). The producer reads back what it wrote, e.g. the first record an analyzer
    /// has not consumed.
    pub fn record(&self, i: u64) -> Option<EventRecord> {
        if i >= self.prod || i + self.capacity() < self.prod {
            return None;
        }
        Some(EventRecord::load(
            &self.slots[(i & self.mask) as usize].words,
        ))
    }

    /// Counts one event dropped for a full ring (live mode); the analyzer reads the count.
    pub fn count_drop(&self) {
        self.hdr.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Tells the consumer it is detached, and why.
    pub fn mark_detached(&self, reason: u64) {
        self.hdr.detached.store(reason, Ordering::Release);
    }
}

/// The consumer end of one ring.
#[derive(Debug)]
pub struct Consumer<'a> {
    hdr: &'a EventRingHeader,
    slots: &'a [EventSlot],
    cons: &'a ConsumerIndex,
    mask: u64,
    next: u64,
}

impl<'a> Consumer<'a> {
    /// The consumer of a mapped ring; `None` if the header's capacity does not match the slots.
    ///
    /// It starts at the index its page holds, clamped as the producer clamps it (to the records
    /// still in the ring), and writes the clamped index back, so that an index left over from
    /// another run or overwritten by mistake costs at most the records it skips.
    pub fn new(
        hdr: &'a EventRingHeader,
        slots: &'a [EventSlot],
        cons: &'a ConsumerIndex,
    ) -> Option<Self> {
        let cap = hdr.capacity;
        if !cap.is_power_of_two() || slots.len() as u64 != cap {
            return None;
        }
        let prod = hdr.producer.load(Ordering::Acquire);
        let held = cons.index.load(Ordering::Relaxed);
        let next = held.clamp(prod.saturating_sub(cap), prod);
        if next != held {
            cons.index.store(next, Ordering::Release);
        }
        Some(Consumer {
            hdr,
            slots,
            cons,
            mask: cap - 1,
            next,
        })
    }

    /// Records published and not yet consumed.
    #[inline]
    pub fn pending(&self) -> u64 {
        self.hdr
            .producer
            .load(Ordering::Acquire)
            .saturating_sub(self.next)
    }

    /// Copies the next record without consuming it; `None` when the ring is empty.
    #[inline]
    pub fn peek(&self) -> Option<EventRecord> {
        let prod = self.hdr.producer.load(Ordering::Acquire);
        if self.next >= prod {
            return None;
        }
        Some(EventRecord::load(
            &self.slots[(self.next & self.mask) as usize].words,
        ))
    }

    /// [`Consumer::peek`], copying the record word by word straight into the value
    /// ([`crate::pod::load_direct`]): the same record, at less cost per event.
    #[inline]
    pub fn peek_direct(&self) -> Option<EventRecord> {
        let prod = self.hdr.producer.load(Ordering::Acquire);
        if self.next >= prod {
            return None;
        }
        Some(crate::pod::load_direct(
            &self.slots[(self.next & self.mask) as usize].words,
        ))
    }

    /// Copies the record `k` places past the next one ([`Consumer::peek`] is `k == 0`), if it
    /// is published, without consuming anything: for a reader that prepares its work on later
    /// records (prefetching what they refer to) while it handles the current one.
    #[inline]
    pub fn peek_ahead(&self, k: u64) -> Option<EventRecord> {
        let i = self.next.checked_add(k)?;
        let prod = self.hdr.producer.load(Ordering::Acquire);
        if i >= prod {
            return None;
        }
        Some(crate::pod::load_direct(
            &self.slots[(i & self.mask) as usize].words,
        ))
    }

    /// Consumes the record [`Consumer::peek`] returned: the producer may reuse its slot, and
    /// whatever it refers to may be reused by the sensor (lossless mode's rule). Does nothing
    /// when no record is published past the consumer's index (an `advance` without a `peek`
    /// that returned a record), so the index never runs ahead of the producer.
    #[inline]
    pub fn advance(&mut self) {
        if self.next >= self.hdr.producer.load(Ordering::Acquire) {
            return;
        }
        self.next += 1;
        self.cons.index.store(self.next, Ordering::Release);
    }

    /// [`Consumer::advance`] without telling the producer yet: the record counts as consumed
    /// here, but the producer may reuse its slot (and the sensor what it refers to) only after
    /// [`Consumer::commit`]. A batch of records then costs one store to the shared index
    /// instead of one per record.
    #[inline]
    pub fn advance_deferred(&mut self) {
        if self.next < self.hdr.producer.load(Ordering::Acquire) {
            self.next += 1;
        }
    }

    /// Tells the producer about every record consumed so far (one release store, skipped when
    /// the index already says so).
    #[inline]
    pub fn commit(&mut self) {
        if own_load(&self.cons.index) != self.next {
            self.cons.index.store(self.next, Ordering::Release);
        }
    }

    /// Records consumed so far.
    #[inline]
    pub fn consumed(&self) -> u64 {
        self.next
    }

    /// Events dropped for this consumer (live mode).
    pub fn dropped(&self) -> u64 {
        self.hdr.dropped.load(Ordering::Relaxed)
    }

    /// Non-zero once the sensor detached this consumer ([`crate::layout::detach_reason`]).
    pub fn detached(&self) -> u64 {
        self.hdr.detached.load(Ordering::Acquire)
    }
}

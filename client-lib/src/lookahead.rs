//! Prefetching for the run loop. A `peek` in a callback reads a flow slot, its ring's
//! metadata, a chunk map entry and the stream bytes, each found through the one before, each
//! written moments ago by the sensor on another core: a chain of cache misses that the copy
//! itself is a small part of. While the run loop dispatches one event, the events queued
//! behind it in the ring say which slots and stream offsets the next callbacks will read, so
//! the loop brings them into the cache a few events ahead, one link of the chain per event:
//! the slot three events ahead, the ring's metadata and chunk map entry two ahead (through the
//! ring index the slot names now), the stream bytes one ahead (through the map entries).
//!
//! Everything read here is a hint: words are loaded without the seqlock and decide nothing but
//! which addresses to prefetch (a prefetch reads nothing the program sees and never faults).
//! `peek` copies and validates exactly as it would without them.

use crate::views::WorkerView;
use shm_layout::layout::{event_kind, EventRecord, NO_RING};
use shm_layout::ring::Consumer;

/// How many events ahead the slot is prefetched (then the map, then the bytes).
const AHEAD: u64 = 3;
/// The most stream bytes prefetched for one event (a larger event's first bytes only).
const MAX_BYTES: u64 = 4096;
/// Window entries: a power of two above [`AHEAD`].
const WINDOW: usize = 4;

/// What is known of an event ahead that announced new stream bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Ahead {
    /// The record's index plus one (0: no entry).
    tag: u64,
    slot: u32,
    side: u8,
    /// The bytes it announced (the last `payload_len` before its tail, cut to [`MAX_BYTES`]).
    start: u64,
    end: u64,
    /// The ring its side named when the map was prefetched ([`NO_RING`] before).
    ring: u32,
}

/// One worker ring's prefetch window.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lookahead {
    win: [Ahead; WINDOW],
}

impl Lookahead {
    /// Called with record `cur` (the consumer's next) about to be dispatched: moves each
    /// event ahead one link further down its chain.
    pub fn step(&mut self, view: &WorkerView<'_>, cons: &Consumer<'_>, cur: u64) {
        let at = |i: u64| (i % WINDOW as u64) as usize;
        // The bytes of the next event, through the map entries prefetched last step.
        let e = self.win[at(cur + 1)];
        if e.tag == cur + 2 && e.ring != NO_RING {
            view.prefetch_stream(e.ring, e.start, e.end);
        }
        // The metadata and map of the one after, through the slot prefetched last step.
        let e = &mut self.win[at(cur + 2)];
        if e.tag == cur + 3 {
            e.ring = view
                .prefetch_ring(e.slot, usize::from(e.side), e.start, e.end)
                .unwrap_or(NO_RING);
        }
        // The slot of the third.
        let e = &mut self.win[at(cur + AHEAD)];
        *e = Ahead::default();
        if let Some(rec) = cons.peek_ahead(AHEAD).filter(announces_bytes) {
            view.prefetch_slot(rec.slot);
            let len = u64::from(rec.payload_len).min(MAX_BYTES);
            *e = Ahead {
                tag: cur + AHEAD + 1,
                slot: rec.slot,
                side: rec.side,
                start: rec.tail.saturating_sub(len),
                end: rec.tail,
                ring: NO_RING,
            };
        }
    }
}

/// Whether a record announces new bytes of a flow's side (what a callback then peeks).
fn announces_bytes(rec: &EventRecord) -> bool {
    rec.kind == event_kind::CONN_NEW_DATA
        && rec.slot != u32::MAX
        && rec.side < 2
        && rec.payload_len > 0
}

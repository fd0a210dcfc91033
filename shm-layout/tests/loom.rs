//! Model checks of the lock-free protocols with loom: every interleaving (up to a preemption
//! bound) and every value the C++11 memory model lets a relaxed load return.
//!
//! The models: the seqlock and the flow-slot reads built on it; the event ring (in order,
//! with deferred commits, with a consumer index far behind or garbage); the packet log; the
//! stream chunks (chunks taken and chained, a chunk reused by another flow or for a later
//! offset of the same stream, with readers that meet `NO_CHUNK`; lossless mode's rule that a
//! chunk goes back only once its event is passed; and two writer orders that defeat the
//! readers' validation, expected to fail).
//!
//! Run (takes seconds):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p shm-layout --release --test loom
//! ```
//!
//! The preemption bound is 3 unless `LOOM_MAX_PREEMPTIONS` says otherwise; every model here is
//! small enough to run unbounded too, only slower.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use shm_layout::flow::read_flow;
use shm_layout::layout::{
    flow_flags, ConsumerIndex, EventRecord, EventRingHeader, EventSlot, FlowData, FlowSlot,
    PktInfo, PktLogEntry, PktLogHeader, EVENT_WORDS, FLOW_WORDS, NO_CHUNK, NO_RING, PKT_WORDS,
};
use shm_layout::pktlog::{read_packet, PktLogWriter};
use shm_layout::ring::{Consumer, Producer};
use shm_layout::seqlock::{load_words, store_words, Stamp};
use shm_layout::Words;

/// Runs `f` under loom with a preemption bound of 3 by default, and prints how many
/// executions it explored (shown with `--nocapture`).
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    model_bounded(3, f)
}

/// [`model`] with another default preemption bound.
fn model_bounded<F: Fn() + Sync + Send + 'static>(bound: usize, f: F) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    b.check(move || {
        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    println!(
        "{} executions explored (preemption bound {:?})",
        runs.load(std::sync::atomic::Ordering::Relaxed),
        b.preemption_bound
    );
}

fn atomics(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

// ---------------------------------------------------------------------------------------------
// Seqlock

struct Guarded {
    stamp: Stamp,
    words: Vec<AtomicU64>,
}

/// The writer publishes [k, k, k] for k = 1, 2; a reader that validates sees one whole version,
/// the one its token's stamp names (version k is published at stamp 2k).
#[test]
fn seqlock_reader_never_sees_a_torn_value() {
    model(|| {
        let g = Arc::new(Guarded {
            stamp: Stamp::new(),
            words: atomics(3),
        });
        let w = g.clone();
        let writer = thread::spawn(move || {
            for k in 1..=2u64 {
                w.stamp.begin_write();
                store_words(&w.words, &[k; 3]);
                w.stamp.end_write();
            }
        });
        let mut validated = 0;
        for _ in 0..3 {
            if let Some(tok) = g.stamp.begin_read() {
                let mut v = [u64::MAX; 3];
                load_words(&g.words, &mut v);
                if g.stamp.validate(tok) {
                    assert!(v[0] == v[1] && v[1] == v[2], "torn read {v:?}");
                    assert_eq!(v[0] * 2, tok.stamp(), "value does not match its stamp");
                    validated += 1;
                }
            }
            thread::yield_now();
        }
        writer.join().unwrap();
        // With the writer gone, a read always validates and sees the last version.
        let tok = g.stamp.begin_read().expect("no write in progress");
        let mut v = [0; 3];
        load_words(&g.words, &mut v);
        assert!(g.stamp.validate(tok));
        assert_eq!(v, [2; 3]);
        let _ = validated;
    });
}

/// `read_flow` on a real slot: the snapshot is one version and its `stamp` is the stamp that
/// version was published at (the writer only touches the first three words, to keep the model
/// small; the other 22 words have a single value).
#[test]
fn read_flow_returns_a_consistent_snapshot_with_its_own_stamp() {
    model(|| {
        let slot = Arc::new(FlowSlot {
            stamp: Stamp::new(),
            words: core::array::from_fn::<_, FLOW_WORDS, _>(|_| AtomicU64::new(0)),
        });
        let w = slot.clone();
        let writer = thread::spawn(move || {
            for k in 1..=2u64 {
                w.stamp.begin_write();
                store_words(&w.words[..3], &[k; 3]);
                w.stamp.end_write();
            }
        });
        if let Some(snap) = read_flow(&slot, 3) {
            let mut v = [0u64; FLOW_WORDS];
            FlowData::to_words(&snap.data, &mut v);
            assert!(v[0] == v[1] && v[1] == v[2], "torn snapshot {:?}", &v[..3]);
            assert!(v[3..].iter().all(|&x| x == 0));
            assert_eq!(snap.stamp % 2, 0, "snapshot stamped while a write was open");
            assert_eq!(
                v[0] * 2,
                snap.stamp,
                "snapshot carries another version's stamp"
            );
        }
        writer.join().unwrap();
    });
}

/// `read_side_at` (what `Ctx::peek` copies of a slot) on a real slot and ring metadata: the
/// extent, the offset `from` picked and the gap it returns are one version, and its `stamp` is
/// that version's. Version k of side 0 has head and tail k, its ring's `unknown_below` k and
/// one gap of 1 byte at k; the reader starts at `unknown_below`, so the gap is just ahead of it.
#[test]
fn read_side_at_returns_a_consistent_copy_with_its_own_stamp() {
    use shm_layout::flow::read_side_at;
    use shm_layout::layout::{RingMetaSlot, MAX_FRAGMENTS, RING_META_WORDS};
    model(|| {
        let slot = Arc::new(FlowSlot {
            stamp: Stamp::new(),
            words: core::array::from_fn::<_, FLOW_WORDS, _>(|_| AtomicU64::new(0)),
        });
        let metas = Arc::new(vec![RingMetaSlot {
            words: core::array::from_fn::<_, RING_META_WORDS, _>(|_| AtomicU64::new(0)),
        }]);
        // Side 0's first words: head, tail (its ring, word 4, stays 0: metadata 0). The
        // metadata's word 0 holds the gap count (high half), word 1 `unknown_below`, and the
        // gap records (offset, len, kind) start past the fragments.
        let side0 = core::mem::offset_of!(FlowData, sides) / 8;
        let gap0 = 2 + 2 * MAX_FRAGMENTS;
        metas[0].words[0].store(1 << 32, Ordering::Relaxed);
        metas[0].words[gap0 + 1].store(1, Ordering::Relaxed);
        let (w, m) = (slot.clone(), metas.clone());
        let writer = thread::spawn(move || {
            for k in 1..=2u64 {
                w.stamp.begin_write();
                store_words(&w.words[side0..side0 + 2], &[k; 2]);
                m[0].words[1].store(k, Ordering::Relaxed);
                m[0].words[gap0].store(k, Ordering::Relaxed);
                w.stamp.end_write();
            }
        });
        if let Some(v) = read_side_at(&slot, &metas, 0, |e| e.unknown_below.unwrap(), 3) {
            let e = v.extent;
            let k = e.tail;
            assert!(
                e.head == k
                    && e.unknown_below == Some(k)
                    && v.offset == k
                    && v.gap.map(|g| (g.offset, g.len)) == Some((k, 1)),
                "torn copy: {v:?}"
            );
            assert_eq!(e.ring, 0);
            assert_eq!(
                e.head * 2,
                v.stamp,
                "the copy carries another version's stamp"
            );
        }
        writer.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Event ring

struct Ring {
    hdr: EventRingHeader,
    slots: Vec<EventSlot>,
    cons: ConsumerIndex,
}

impl Ring {
    /// A ring of `cap` records whose producer index is `published`; the slots hold records
    /// `published - cap .. published` and the consumer index is `consumer`.
    fn new(cap: u64, published: u64, consumer: u64) -> Ring {
        let r = Ring {
            hdr: EventRingHeader {
                producer: AtomicU64::new(published),
                _pad0: [0; 7],
                capacity: cap,
                dropped: AtomicU64::new(0),
                detached: AtomicU64::new(0),
                _pad1: [0; 5],
            },
            slots: (0..cap)
                .map(|_| EventSlot {
                    words: core::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
            cons: ConsumerIndex {
                index: AtomicU64::new(consumer),
                _pad: [0; 7],
            },
        };
        for i in published.saturating_sub(cap)..published {
            rec(i).store(&r.slots[(i % cap) as usize].words);
        }
        r
    }
}

/// Record `k`: every word is `k`, so a torn copy shows.
fn rec(k: u64) -> EventRecord {
    EventRecord::from_words(&[k; EVENT_WORDS])
}

/// The index a record carries; panics if its words disagree (a torn copy).
fn index_of(r: &EventRecord) -> u64 {
    let mut w = [0; EVENT_WORDS];
    r.to_words(&mut w);
    assert!(w.iter().all(|&x| x == w[0]), "torn record {w:?}");
    w[0]
}

/// A producer thread that pushes records 0..n into `ring` in turn, retrying while it is full.
fn push_in_turn(ring: &Arc<Ring>, n: u64) -> thread::JoinHandle<()> {
    let r = ring.clone();
    thread::spawn(move || {
        let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
        for k in 0..n {
            while !p.try_push(&rec(k)) {
                thread::yield_now();
            }
        }
        assert_eq!(p.published(), n);
    })
}

/// Capacity 2, four pushes: the producer retries while the ring is full; the consumer gets
/// every record once, in order, intact.
#[test]
fn ring_delivers_every_record_once_in_order() {
    const N: u64 = 4;
    model(|| {
        let ring = Arc::new(Ring::new(2, 0, 0));
        let producer = push_in_turn(&ring, N);
        let mut c = Consumer::new(&ring.hdr, &ring.slots, &ring.cons).unwrap();
        let mut next = 0;
        while next < N {
            match c.peek() {
                Some(r) => {
                    assert_eq!(index_of(&r), next);
                    c.advance();
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(c.pending(), 0);
        assert!(c.peek().is_none());
        assert_eq!(ring.cons.index.load(Ordering::Relaxed), N);
    });
}

/// Batched publication, as the sensor's fan-out does per packet: records 0..n written in
/// batches of two with `push_unpublished` and made visible with one `publish` each. When the
/// ring is full mid-batch, the producer publishes what it wrote before it retries (else the
/// consumer could never make room).
#[test]
fn ring_with_batched_publication_delivers_every_record_once_in_order() {
    const N: u64 = 5;
    model(|| {
        let ring = Arc::new(Ring::new(2, 0, 0));
        let r = ring.clone();
        let producer = thread::spawn(move || {
            let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
            let mut pending = 0;
            let mut k = 0;
            while k < N {
                if p.push_unpublished(&rec(k), &mut pending) {
                    k += 1;
                    if k % 2 == 0 {
                        p.publish(&mut pending);
                    }
                } else {
                    p.publish(&mut pending);
                    thread::yield_now();
                }
            }
            p.publish(&mut pending);
            assert_eq!(p.published(), N);
        });
        let mut c = Consumer::new(&ring.hdr, &ring.slots, &ring.cons).unwrap();
        let mut next = 0;
        while next < N {
            match c.peek() {
                Some(r) => {
                    assert_eq!(index_of(&r), next);
                    c.advance();
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert!(c.peek().is_none());
    });
}

/// The same with batched consumption: the consumer advances locally through what it finds and
/// commits once per batch, as `Mos::run` does. The producer must never overwrite a record the
/// consumer has advanced past but not yet committed while it is still copying it.
#[test]
fn ring_with_deferred_commits_delivers_every_record_once_in_order() {
    const N: u64 = 4;
    model(|| {
        let ring = Arc::new(Ring::new(2, 0, 0));
        let producer = push_in_turn(&ring, N);
        let mut c = Consumer::new(&ring.hdr, &ring.slots, &ring.cons).unwrap();
        let mut next = 0;
        while next < N {
            let mut batch = 0;
            while let Some(r) = c.peek() {
                assert_eq!(index_of(&r), next);
                c.advance_deferred();
                next += 1;
                batch += 1;
            }
            c.commit();
            if batch == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(c.pending(), 0);
        assert_eq!(ring.cons.index.load(Ordering::Relaxed), N);
    });
}

/// A consumer index far behind (0 while 10 records are published): the producer clamps it to
/// `published - capacity`, so the ring looks full and nothing unconsumed is overwritten; a
/// consumer started over it resumes at the oldest record still held.
#[test]
fn ring_consumer_index_far_behind_is_clamped() {
    model(|| {
        let ring = Arc::new(Ring::new(2, 10, 0));
        let r = ring.clone();
        let producer = thread::spawn(move || {
            let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
            assert!(
                p.consumed() >= 8,
                "the producer would overwrite records 8 and 9"
            );
            for k in 10..12 {
                while !p.try_push(&rec(k)) {
                    thread::yield_now();
                }
            }
        });
        let mut c = Consumer::new(&ring.hdr, &ring.slots, &ring.cons).unwrap();
        assert!(c.consumed() >= 8);
        let mut next = c.consumed();
        while next < 12 {
            match c.peek() {
                Some(r) => {
                    assert_eq!(index_of(&r), next);
                    c.advance();
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(c.pending(), 0);
    });
}

/// A buggy analyzer thread writes garbage into its consumer index while a well-behaved consumer
/// reads and the producer publishes (live mode: a push that finds the ring full is dropped
/// after one retry). Whatever the garbage, nothing panics and the producer never claims more
/// than `capacity` records unconsumed. A garbage index far behind only makes the ring look
/// full: the consumer still gets intact records in order, and every record is either delivered
/// or counted as dropped. A garbage index past `published` makes the ring look empty, so the
/// producer may overwrite this analyzer's own unread records; what the consumer copies then
/// may mix two records, each word of it still one the producer wrote. Only this analyzer's
/// ring is affected.
///
/// Three threads make this the largest model: it runs with a preemption bound of 2 (unless
/// `LOOM_MAX_PREEMPTIONS` is set). With an index past `published` the consumer follows the
/// indices only: a copy of a record being overwritten may mix words of two records, and loom
/// would explore every mix (4096 per copy); the unit tests show that overwrite directly.
fn ring_with_garbage_index(garbage: u64, bound: usize) {
    const N: u64 = 3;
    model_bounded(bound, move || {
        let ring = Arc::new(Ring::new(2, 0, 0));
        let r = ring.clone();
        let producer = thread::spawn(move || {
            let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
            let mut dropped = 0;
            for k in 0..N {
                if !p.try_push(&rec(k)) {
                    thread::yield_now();
                    if !p.try_push(&rec(k)) {
                        p.count_drop();
                        dropped += 1;
                    }
                }
                assert!(p.published() - p.consumed() <= p.capacity());
            }
            dropped
        });
        let r = ring.clone();
        let rogue = thread::spawn(move || {
            r.cons.index.store(garbage, Ordering::Release);
        });
        let mut c = Consumer::new(&ring.hdr, &ring.slots, &ring.cons).unwrap();
        let mut got: Vec<u64> = Vec::new();
        for _ in 0..N + 1 {
            if garbage > N {
                // Past `published`: the records themselves may be overwritten mid-copy (the
                // model of every mix of words is too large to explore); follow the indices.
                if c.pending() > 0 {
                    c.advance();
                } else {
                    thread::yield_now();
                }
                assert!(c.consumed() <= ring.hdr.producer.load(Ordering::Acquire));
                continue;
            }
            match c.peek() {
                Some(r) => {
                    let mut w = [0; EVENT_WORDS];
                    r.to_words(&mut w);
                    assert!(w.iter().all(|&x| x < N), "a word nobody wrote: {w:?}");
                    if garbage <= N {
                        // Far behind: never torn, in order.
                        assert_eq!(index_of(&r), c.consumed());
                    }
                    got.push(w[0]);
                    c.advance();
                }
                None => thread::yield_now(),
            }
        }
        let dropped = producer.join().unwrap();
        rogue.join().unwrap();
        while c.peek().is_some() {
            c.advance();
        }
        assert_eq!(c.pending(), 0);
        if garbage <= N {
            assert_eq!(c.consumed() + dropped, N);
            assert!(got.windows(2).all(|w| w[0] < w[1]));
        }
    });
}

#[test]
fn ring_garbage_index_behind() {
    ring_with_garbage_index(0, 2);
}

#[test]
fn ring_garbage_index_past_published() {
    ring_with_garbage_index(u64::MAX, 2);
}

// ---------------------------------------------------------------------------------------------
// Packet log
//
// `PktLogWriter::append` copies frame bytes through the `&mut [u8]` it holds, and a reader in
// another process copies the same bytes at the same time: loom cannot model that plain copy
// (in one process it would be a data race on `&mut` memory). So the writer below is a faithful
// copy of `append` over a byte ring of atomic bytes (one `AtomicU64` per byte, relaxed, in the
// same order as `append`: move `bytes_head` past what will be overwritten, release fence, copy,
// publish the entry under its stamp, release `bytes_tail` and `next_seq`). Where it starts a
// frame comes from the real `PktLogWriter::plan`. The reader is the real `read_packet`, whose
// copy closure loads the atomic bytes. Keep the two in step if `append` changes.

const LOG_BYTES: usize = 4;

struct Log {
    hdr: PktLogHeader,
    entries: Vec<PktLogEntry>,
    bytes: Vec<AtomicU64>,
}

impl Log {
    fn new(entries: usize) -> Log {
        Log {
            hdr: PktLogHeader {
                next_seq: AtomicU64::new(0),
                bytes_head: AtomicU64::new(0),
                bytes_tail: AtomicU64::new(0),
                _pad: [0; 5],
            },
            entries: (0..entries)
                .map(|_| PktLogEntry {
                    stamp: Stamp::new(),
                    words: core::array::from_fn::<_, PKT_WORDS, _>(|_| AtomicU64::new(0)),
                })
                .collect(),
            bytes: atomics(LOG_BYTES),
        }
    }

    /// The model of `PktLogWriter::append` (see above). `w` is the writer's own state, as
    /// `PktLogWriter` keeps it: `(next_seq, bytes_tail, bytes_head)`.
    fn append(&self, w: &mut (u64, u64, u64), frame: &[u8]) -> u64 {
        // The real planner, over a scratch header and buffer of the log's size that only this
        // thread sees (so that its loads are not mistaken for accesses to the shared header).
        let shadow = PktLogHeader {
            next_seq: AtomicU64::new(w.0),
            bytes_tail: AtomicU64::new(w.1),
            bytes_head: AtomicU64::new(w.2),
            _pad: [0; 5],
        };
        let mut scratch = [0u8; LOG_BYTES];
        let planner = PktLogWriter::new(&shadow, &self.entries, &mut scratch).unwrap();
        let (pos, head) = planner.plan(frame.len());
        let seq = w.0;
        let cap = LOG_BYTES as u64;
        if head > w.2 {
            w.2 = head;
            self.hdr.bytes_head.store(head, Ordering::Relaxed);
            loom::sync::atomic::fence(Ordering::Release);
        }
        let at = (pos % cap) as usize;
        for (i, b) in frame.iter().enumerate() {
            self.bytes[at + i].store(u64::from(*b), Ordering::Relaxed);
        }
        w.1 = pos + frame.len() as u64;
        let info = PktInfo {
            seq,
            data_pos: pos,
            caplen: frame.len() as u32,
            ..Default::default()
        };
        let e = &self.entries[(seq % self.entries.len() as u64) as usize];
        e.stamp.begin_write();
        info.store(&e.words);
        e.stamp.end_write();
        w.0 = seq + 1;
        self.hdr.bytes_tail.store(w.1, Ordering::Release);
        self.hdr.next_seq.store(w.0, Ordering::Release);
        seq
    }

    fn read(&self, seq: u64) -> Option<Vec<u8>> {
        let mut dst = [0u8; LOG_BYTES];
        let (info, k) = read_packet(
            &self.hdr,
            &self.entries,
            LOG_BYTES as u64,
            seq,
            &mut dst,
            |pos, d| {
                let pos = pos as usize;
                if pos + d.len() > self.bytes.len() {
                    return false;
                }
                for (i, b) in d.iter_mut().enumerate() {
                    *b = self.bytes[pos + i].load(Ordering::Relaxed) as u8;
                }
                true
            },
        )?;
        assert_eq!(info.seq, seq);
        Some(dst[..k].to_vec())
    }
}

/// Frame `s` is `len(s)` bytes of value `s + 1`.
fn frame(s: u64) -> Vec<u8> {
    vec![s as u8 + 1; [3, 2, 2][s as usize]]
}

/// Three frames through a 4-byte ring with 2 entries: frame 1 does not fit after frame 0 and
/// starts over at the beginning, overwriting frame 0's bytes; frame 2 takes frame 0's entry.
/// A reader racing the writer for frames 0 and 1 gets the right frame or `None`, never wrong
/// bytes.
#[test]
fn pktlog_reader_gets_the_frame_or_none() {
    model(|| {
        let log = Arc::new(Log::new(2));
        let l = log.clone();
        let writer = thread::spawn(move || {
            let mut w = (0, 0, 0);
            for s in 0..3 {
                assert_eq!(l.append(&mut w, &frame(s)), s);
            }
        });
        for s in 0..2 {
            if let Some(bytes) = log.read(s) {
                assert_eq!(bytes, frame(s), "frame {s} read back wrong");
            }
        }
        writer.join().unwrap();
        // Once the writer is done: frame 0 is gone, frames 1 and 2 are there.
        assert_eq!(log.read(0), None);
        assert_eq!(log.read(1), Some(frame(1)));
        assert_eq!(log.read(2), Some(frame(2)));
    });
}

// ---------------------------------------------------------------------------------------------
// Stream chunks
//
// A side's bytes live in chunks of a per-worker pool, found through its buffer's chunk map
// (`AtomicU32` entries, `NO_CHUNK` for none). The sensor writes the chunk bytes with a plain
// copy through `&mut [u8]` and the analyzer copies them with a plain copy through a pointer
// (`Mapping::read_bytes`), which loom cannot model: as in the packet-log model, the bytes are
// atomics here (one `AtomicU64` per byte, relaxed) and both ends are faithful copies of the
// real code, kept in step by hand:
//
// - `Sensor` copies what the sensor does: `RingPool::chunk_for` (the map entry, release,
//   before the bytes), `RingPool::release_chunk`/`release_entry` (`NO_CHUNK`, release; the
//   chunk goes on top of the free stack, so the next `chunk_for` takes it back first),
//   `write_chunks` (pieces split at chunk boundaries), and `SlotPublisher::begin`/`publish`
//   (the tracker opens the slot's write section when a packet's update starts, changes maps
//   and bytes, then stores the slot's words and closes it). `publish` stores only the words
//   that changed; the real one stores every side word, which only multiplies the stores a
//   load may read here.
// - `peek` copies `Ctx::peek` of client-lib (`ctx.rs`): the slot copy (`load_flow_stamped`,
//   which waits for the writer as `patiently` does; the real one copies the buffer's
//   metadata too, which here never holds a gap), the decision of `stream::chunk_in_order`, the copy of
//   `WorkerView::copy_stream` (each entry with an acquire load; an entry that names no chunk
//   stops the copy as `Copied::Torn`), then the validation: `Stamp::unchanged_since`, or else
//   a second slot copy and `intact`. A copy that stands with `Copied::Torn` is `EPROTO`; one
//   that does not counts in `torn_copies` and is tried again, `COPY_TRIES` times. The early
//   `NoData` test through `read_side_tail` is left out: it only ever answers `NoData`.
//
// Chunks of 2 bytes, maps of 2 entries (a side spans 4 bytes), 2 chunks in the pool.
//
// What the validation needs from the writer: a chunk is given back (`NO_CHUNK`) and reused
// only inside a write section of the flow's slot that publishes the head moved past it, or
// after that section. The sensor moves its private head, releases the chunks below it, and
// publishes the head at the end of the same section; its release fence orders the
// `NO_CHUNK` store and any byte stores of the chunk's next use after the odd stamp, so a
// reader that met either finds the stamp changed and, reading the slot again, the head past
// its copy. A release or a reuse while the stamp is still even and the head not yet moved
// is not safe; the two `should_panic` models below show what it costs.
//
// Besides the mutations named at each model: removing the acquire fence of
// `Stamp::unchanged_since` or the release fence of `Stamp::begin_write` fails the models too.
// Loading the map entries relaxed instead of acquire is not caught, and need not be: the
// slot copy's acquire of the stamp orders the entries stored before the published tail, and
// the validation's acquire fence orders any later entry store the load saw. A relaxed store of
// the consumer index is not caught by the lossless model either: loom does not explore loads
// that read a store the other thread makes only after it saw this thread's later store
// (load buffering).

const CHUNK: u64 = 2;
const MAP_LEN: usize = 2;
const CHUNKS: usize = 2;
/// What a chunk holds before a buffer writes it: its previous user's bytes.
const JUNK: u8 = 0xee;
/// The generation every model slot has.
const GEN: u32 = 1;
/// `ctx.rs`'s `COPY_TRIES`.
const COPY_TRIES: u32 = 8;

/// Bytes `range` of the stream of flow `f` (side 0): byte `o` is `0x10 * (f + 1) + o`, so a
/// byte of another flow, of another offset or a chunk's junk shows.
fn stream_bytes(f: usize, range: core::ops::Range<u64>) -> Vec<u8> {
    range.map(|o| 0x10 * (f as u8 + 1) + o as u8).collect()
}

/// The shared part: one flow slot per flow (flow `f` uses buffer `f`), the buffers' chunk
/// maps, the chunks' bytes.
struct Streams {
    slots: Vec<FlowSlot>,
    maps: Vec<AtomicU32>,
    bytes: Vec<AtomicU64>,
}

impl Streams {
    fn new(flows: usize) -> Arc<Streams> {
        let s = Streams {
            slots: (0..flows)
                .map(|_| FlowSlot {
                    stamp: Stamp::new(),
                    words: core::array::from_fn::<_, FLOW_WORDS, _>(|_| AtomicU64::new(0)),
                })
                .collect(),
            maps: (0..flows * MAP_LEN)
                .map(|_| AtomicU32::new(NO_CHUNK))
                .collect(),
            bytes: (0..CHUNKS as u64 * CHUNK)
                .map(|_| AtomicU64::new(u64::from(JUNK)))
                .collect(),
        };
        for slot in &s.slots {
            idle_flow().store(&slot.words);
        }
        Arc::new(s)
    }
}

/// A live connection whose sides hold no buffer yet.
fn idle_flow() -> FlowData {
    let mut d = FlowData {
        generation: GEN,
        flags: flow_flags::LIVE,
        ..Default::default()
    };
    d.sides[0].ring = NO_RING;
    d.sides[1].ring = NO_RING;
    d
}

/// The model of the sensor's side (see above): its private state and the stores it makes.
struct Sensor {
    s: Arc<Streams>,
    /// The free chunks, a stack (`RingPool::free_chunks`).
    free: Vec<u32>,
    /// The maps as this writer last stored them (`RingPool::map_entry` reads them back).
    map: Vec<u32>,
    /// Each slot's words as last published.
    published: Vec<[u64; FLOW_WORDS]>,
    /// The slot whose write section is open (`SlotPublisher::open`).
    open: Option<usize>,
}

impl Sensor {
    /// A sensor over `s` whose pool hands out the chunks of `free` from the end.
    fn new(s: &Arc<Streams>, free: &[u32]) -> Sensor {
        let mut w = [0; FLOW_WORDS];
        idle_flow().to_words(&mut w);
        Sensor {
            s: s.clone(),
            free: free.to_vec(),
            map: vec![NO_CHUNK; s.maps.len()],
            published: vec![w; s.slots.len()],
            open: None,
        }
    }

    /// `SlotPublisher::begin`: opens `slot`'s write section (closing another one's).
    fn begin(&mut self, slot: usize) {
        if self.open == Some(slot) {
            return;
        }
        self.close();
        self.s.slots[slot].stamp.begin_write();
        self.open = Some(slot);
    }

    fn close(&mut self) {
        if let Some(o) = self.open.take() {
            self.s.slots[o].stamp.end_write();
        }
    }

    /// `SlotPublisher::publish` of side 0 of flow `slot` (buffer `slot`): stores what changed
    /// and closes the write section, opening it first if it is not open.
    fn publish(&mut self, slot: usize, head: u64, tail: u64) {
        if self.open != Some(slot) {
            self.close();
            self.s.slots[slot].stamp.begin_write();
            self.open = Some(slot);
        }
        let mut d = FlowData::from_words(&self.published[slot]);
        d.sides[0].head = head;
        d.sides[0].tail = tail;
        d.sides[0].ring = slot as u32;
        let mut w = [0; FLOW_WORDS];
        d.to_words(&mut w);
        for (i, (new, old)) in w.iter().zip(&self.published[slot]).enumerate() {
            if new != old {
                self.s.slots[slot].words[i].store(*new, Ordering::Relaxed);
            }
        }
        self.published[slot] = w;
        self.close();
    }

    /// `RingPool::chunk_for`: buffer `buf`'s chunk for chunk index `idx`, taken from the pool
    /// (map entry stored, release) if it has none there yet.
    fn chunk_for(&mut self, buf: usize, idx: u64) -> u32 {
        let e = buf * MAP_LEN + idx as usize % MAP_LEN;
        if self.map[e] != NO_CHUNK {
            return self.map[e];
        }
        let c = self
            .free
            .pop()
            .expect("the model's pool has the chunks it needs");
        self.map[e] = c;
        self.s.maps[e].store(c, Ordering::Release);
        c
    }

    /// `RingPool::release_chunk`: gives back buffer `buf`'s chunk for chunk index `idx`.
    fn release(&mut self, buf: usize, idx: u64) {
        let e = buf * MAP_LEN + idx as usize % MAP_LEN;
        let c = self.map[e];
        if c != NO_CHUNK {
            self.s.maps[e].store(NO_CHUNK, Ordering::Release);
            self.map[e] = NO_CHUNK;
            self.free.push(c);
        }
    }

    /// `write_chunks`: flow `f`'s stream bytes `[off, off + len)` into buffer `f`.
    fn write(&mut self, f: usize, off: u64, len: u64) {
        let data = stream_bytes(f, off..off + len);
        for (k, b) in data.iter().enumerate() {
            let o = off + k as u64;
            let c = self.chunk_for(f, o / CHUNK);
            self.s.bytes[(u64::from(c) * CHUNK + o % CHUNK) as usize]
                .store(u64::from(*b), Ordering::Relaxed);
        }
    }
}

/// `regions::Copied`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copied {
    Whole,
    Torn { offset: u64, entry: u32 },
}

/// `WorkerView::copy_stream` (client-lib) for buffer `buffer`.
fn copy_stream(s: &Streams, buffer: u32, offset: u64, dst: &mut [u8]) -> Copied {
    assert!((buffer as usize) < s.slots.len() && dst.len() as u64 <= CHUNK * MAP_LEN as u64);
    let map = &s.maps[buffer as usize * MAP_LEN..][..MAP_LEN];
    let mut done = 0;
    while done < dst.len() {
        let o = offset + done as u64;
        let within = o & (CHUNK - 1);
        let n = (CHUNK - within).min((dst.len() - done) as u64) as usize;
        let entry = map[(o / CHUNK) as usize & (MAP_LEN - 1)].load(Ordering::Acquire);
        if entry as usize >= CHUNKS {
            return Copied::Torn { offset: o, entry };
        }
        let at = (u64::from(entry) * CHUNK + within) as usize;
        for (i, b) in dst[done..done + n].iter_mut().enumerate() {
            *b = s.bytes[at + i].load(Ordering::Relaxed) as u8;
        }
        done += n;
    }
    Copied::Whole
}

/// What `Ctx::peek` returns.
#[derive(Debug, PartialEq, Eq)]
enum Peeked {
    Data(Vec<u8>),
    NoData,
    Overrun {
        lost: u64,
    },
    /// `EPROTO`: a copy stood although the map named no chunk for some of its bytes.
    NoChunk,
    /// `EAGAIN`: every try was torn.
    KeptChanging,
}

/// A `peek` and the copies it threw away (`torn_copies`), with what they held.
#[derive(Debug)]
struct PeekTrace {
    result: Peeked,
    torn: Vec<(Copied, Vec<u8>)>,
}

/// `load_flow_stamped`: a consistent copy of the slot and its stamp, waiting for the writer
/// (`patiently`), with the handle's check.
fn load_flow(slot: &FlowSlot) -> (FlowData, u64) {
    let snap = read_flow(slot, u32::MAX).expect("the writer always closes its section");
    assert!(
        snap.data.flags & flow_flags::LIVE != 0 && snap.data.generation == GEN,
        "stale handle"
    );
    (snap.data, snap.stamp)
}

/// `Ctx::peek` of side 0 of flow `f` from offset `at` with room for `room` bytes.
fn peek(s: &Streams, f: usize, at: u64, room: usize) -> PeekTrace {
    let slot = &s.slots[f];
    let mut torn = Vec::new();
    for _ in 0..COPY_TRIES {
        let (d, stamp) = load_flow(slot);
        let sd = d.sides[0];
        // `stream::chunk_in_order`, for metadata without gaps (`unknown_below` 0).
        if at >= sd.tail {
            return PeekTrace {
                result: Peeked::NoData,
                torn,
            };
        }
        if sd.ring == NO_RING || at < sd.head {
            let lost = if sd.ring == NO_RING {
                sd.head.saturating_sub(at).max(sd.tail - at)
            } else {
                sd.head.min(sd.tail) - at
            };
            return PeekTrace {
                result: Peeked::Overrun { lost },
                torn,
            };
        }
        let len = (room as u64).min(sd.tail - at) as usize;
        let mut buf = vec![0u8; len];
        let copied = copy_stream(s, sd.ring, at, &mut buf);
        // `intact`: same buffer, head not past the copy (`unknown_below` is 0).
        let unchanged = slot.stamp.unchanged_since(stamp);
        if unchanged || {
            let (d2, _) = load_flow(slot);
            d2.sides[0].ring == sd.ring && d2.sides[0].head <= at
        } {
            let result = match copied {
                Copied::Whole => Peeked::Data(buf),
                Copied::Torn { .. } => Peeked::NoChunk,
            };
            return PeekTrace { result, torn };
        }
        torn.push((copied, buf));
    }
    PeekTrace {
        result: Peeked::KeptChanging,
        torn,
    }
}

/// Whether some execution of a model took a path (checked once loom has explored them all,
/// so that a model that never reaches the case it is about fails).
#[derive(Default)]
struct Reached(std::sync::atomic::AtomicBool);

impl Reached {
    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn check(&self, what: &str) {
        assert!(
            self.0.load(std::sync::atomic::Ordering::Relaxed),
            "no execution {what}"
        );
    }
}

/// Allocation and chaining: the sensor takes a buffer's chunks as the stream needs them
/// (the pool hands out chunk 1 first, so stream order and chunk order differ) and writes two
/// segments, `[0, 3)` across the chunk boundary and `[3, 4)` into the second chunk. A reader
/// peeking all along gets exactly the bytes written, in order, never a chunk's junk or a
/// zero, and never throws a copy away (nothing is freed).
///
/// Mutations this catches: the slot's tail published before the bytes are written (the
/// `write` after `publish`: a copy takes the chunk's junk); `copy_stream` taking the chunk
/// index for the chunk instead of the map entry (wrong bytes).
#[test]
fn chunks_taken_in_turn_hold_exactly_the_bytes_written() {
    let data = std::sync::Arc::new(Reached::default());
    let d = data.clone();
    model(move || {
        let s = Streams::new(1);
        let mut w = Sensor::new(&s, &[0, 1]);
        let writer = thread::spawn(move || {
            w.begin(0);
            w.write(0, 0, 3);
            w.publish(0, 0, 3);
            w.begin(0);
            w.write(0, 3, 1);
            w.publish(0, 0, 4);
        });
        let mut at = 0;
        for _ in 0..2 {
            let p = peek(&s, 0, at, 4);
            assert!(p.torn.is_empty(), "a copy thrown away: {p:?}");
            match p.result {
                Peeked::Data(b) => {
                    assert_eq!(b, stream_bytes(0, at..at + b.len() as u64), "at {at}");
                    at += b.len() as u64;
                    d.set();
                }
                Peeked::NoData => thread::yield_now(),
                other => panic!("peek at {at}: {other:?}"),
            }
        }
        writer.join().unwrap();
        if at < 4 {
            let p = peek(&s, 0, at, 4);
            assert_eq!(p.result, Peeked::Data(stream_bytes(0, at..4)));
        }
        assert_eq!(peek(&s, 0, 4, 4).result, Peeked::NoData);
    });
    data.check("read bytes while the writer ran");
}

/// Flow 0 holds `[0, 4)` in chunks 0 and 1 (stream offset `o` in chunk `o / 2`); flow 1 holds
/// nothing. `run` is the writer; the main thread reads flow 0 from offset 0 with room for 4
/// bytes. A copy that stands holds flow 0's bytes; otherwise the reader is told of the
/// overrun (after throwing torn copies away). `reached` records which paths the copies took:
/// `[0]` met a `NO_CHUNK` entry, `[1]` copied bytes that are not flow 0's, `[2]` stood.
fn reuse_model(
    run: impl Fn(&mut Sensor) + Sync + Send + 'static,
    reached: &std::sync::Arc<[Reached; 3]>,
) {
    let r = reached.clone();
    let run = std::sync::Arc::new(run);
    model(move || {
        let s = Streams::new(2);
        let mut w = Sensor::new(&s, &[1, 0]);
        w.begin(0);
        w.write(0, 0, 4);
        w.publish(0, 0, 4);
        let run = run.clone();
        let writer = thread::spawn(move || run(&mut w));
        let p = peek(&s, 0, 0, 4);
        match &p.result {
            Peeked::Data(b) => assert_eq!(*b, stream_bytes(0, 0..4), "wrong bytes: {p:?}"),
            Peeked::Overrun { lost: 2 } => {}
            _ => panic!("unexpected: {p:?}"),
        }
        for (copied, bytes) in &p.torn {
            if matches!(
                copied,
                Copied::Torn {
                    entry: NO_CHUNK,
                    ..
                }
            ) {
                r[0].set();
            }
            if *copied == Copied::Whole && bytes[..2] != stream_bytes(0, 0..2)[..] {
                r[1].set();
            }
        }
        if matches!(p.result, Peeked::Data(_)) {
            r[2].set();
        }
        writer.join().unwrap();
    });
}

/// Reuse by another buffer: the sensor trims flow 0's history (`Stream::trim`: in one write
/// section, its first chunk goes back to the pool and the head moves past it), then flow 1's
/// first segment takes that chunk and overwrites it. A reader of flow 0 that keeps its copy
/// got flow 0's bytes; one whose copy met the `NO_CHUNK` entry or flow 1's bytes throws it
/// away and, trying again, learns of the overrun. Some execution reaches each case.
///
/// Mutations this catches: `peek` keeping every copy (no validation: flow 1's bytes kept, or
/// `EPROTO` for `NO_CHUNK`); `intact` without its head test (the same); flow 1's reuse moved
/// before flow 0's write section (flow 1's bytes kept). The release alone moved before that
/// section is `a_chunk_released_before_the_flows_section_opens_is_a_protocol_error`.
#[test]
fn a_chunk_reused_by_another_flow_is_never_read_as_the_first_flows() {
    let reached: std::sync::Arc<[Reached; 3]> = Default::default();
    reuse_model(
        |w| {
            w.begin(0);
            w.release(0, 0);
            w.publish(0, 2, 4);
            w.begin(1);
            w.write(1, 0, 2);
            w.publish(1, 0, 2);
        },
        &reached,
    );
    reached[0].check("met a NO_CHUNK entry");
    reached[1].check("copied the other flow's bytes");
    reached[2].check("kept a copy");
}

/// Reuse within the same buffer: a segment more than a span ahead (`[4, 6)`) makes the
/// sensor move flow 0's head to 2 (`advance_head` gives back the chunk of `[0, 2)`) and store
/// the new bytes, whose chunk index 2 has the same map entry as index 0: `chunk_for` takes
/// the same chunk back and stores the same value in the entry. The entry alone cannot tell
/// the reader; the stamp and the head do.
///
/// Mutations this catches: no validation (bytes 4 and 5 read as 0 and 1); the write section
/// closed before the release (the model after the next one).
#[test]
fn a_chunk_reused_for_a_later_offset_of_the_same_stream_is_never_read_as_the_old_one() {
    let reached: std::sync::Arc<[Reached; 3]> = Default::default();
    reuse_model(
        |w| {
            w.begin(0);
            w.release(0, 0);
            w.write(0, 4, 2);
            w.publish(0, 2, 6);
        },
        &reached,
    );
    reached[0].check("met a NO_CHUNK entry");
    reached[1].check("copied the new bytes");
    reached[2].check("kept a copy");
}

/// What the validation relies on, shown by breaking it: the tracker's pool-empty path
/// (`Tracker::make_room`) reclaims another flow's chunks and publishes that flow, which closes
/// the write section `update` opened for the current flow; `update` then inserts the
/// current segment without reopening it. A release and reuse of the current flow's chunk in
/// that insert (here the same-buffer reuse of the model above) happens while the flow's stamp
/// is even and unchanged, and its head is not yet published: a copy taken meanwhile validates
/// with the new bytes in it.
#[test]
#[should_panic(expected = "wrong bytes")]
fn a_chunk_reused_while_the_flows_section_is_closed_passes_validation() {
    let reached: std::sync::Arc<[Reached; 3]> = Default::default();
    reuse_model(
        |w| {
            w.begin(0);
            w.close();
            w.release(0, 0);
            w.write(0, 4, 2);
            w.publish(0, 2, 6);
        },
        &reached,
    );
}

/// The same for a release alone: `make_room` gives back the victim flow's chunks
/// (`Stream::reclaim`) before it opens the victim's write section, and so do
/// `Tracker::reclaim_ended` (`Stream::release` before `publish`) and `Tracker::free_slot`
/// (before `SlotPublisher::free`). The chunk is reused only later, after that section, so no
/// wrong byte is kept; but a copy that meets the `NO_CHUNK` entry in between validates (the
/// stamp has not moved), and the analyzer gets `EPROTO`, "the sensor published bytes it does
/// not hold".
#[test]
#[should_panic(expected = "NoChunk")]
fn a_chunk_released_before_the_flows_section_opens_is_a_protocol_error() {
    let reached: std::sync::Arc<[Reached; 3]> = Default::default();
    reuse_model(
        |w| {
            w.release(0, 0);
            w.publish(0, 2, 4);
            w.begin(1);
            w.write(1, 0, 2);
            w.publish(1, 0, 2);
        },
        &reached,
    );
}

/// An event of publication sequence `pseq` that announces flow 0's bytes up to `tail`.
fn announce(pseq: u64, tail: u64) -> EventRecord {
    EventRecord {
        slot: 0,
        generation: GEN,
        pseq,
        tail,
        ..Default::default()
    }
}

/// `Member::passed` of the sensor's fanout: every event of publication sequence `<= result`
/// has been consumed (all of them once the consumer index reaches the producer's).
fn passed(p: &mut Producer<'_>) -> u64 {
    let c = p.refresh_consumer();
    if c >= p.published() {
        u64::MAX
    } else {
        p.record(c).map_or(u64::MAX, |r| r.pseq.saturating_sub(1))
    }
}

/// Lossless mode's rule, per chunk: a chunk goes back to the pool only once every analyzer
/// has passed the event of the call that completed it (`RingPool::done_at <= passed` in
/// `Stream::trim`), `passed` coming from the consumer indices the analyzers store (release)
/// after handling their events and the sensor reads (acquire, `Fanout::wait_passed`).
///
/// Flow 0 holds `[0, 4)`: call 1 completed its first chunk and raised an event announcing the
/// tail 2, call 2 the second chunk and an event announcing 4. The sensor waits until the
/// analyzer has passed call 1, then trims the first chunk and flow 1 reuses it, as in the
/// reuse model above. The analyzer handles each event by peeking the bytes it announces,
/// then moves its consumer index: it gets them all, never an overrun, never a torn copy,
/// although the first chunk may be reused while it reads the second.
///
/// Mutations this catches: the sensor not waiting (or waiting for `passed >= 0`); the
/// analyzer moving its index before it peeks (an overrun or a torn copy of announced bytes).
#[test]
fn lossless_a_chunk_goes_back_only_once_its_event_is_passed() {
    let overlap = std::sync::Arc::new(Reached::default());
    let o = overlap.clone();
    model(move || {
        let s = Streams::new(2);
        let mut w = Sensor::new(&s, &[1, 0]);
        w.begin(0);
        w.write(0, 0, 4);
        w.publish(0, 0, 4);
        let ring = Arc::new(Ring::new(2, 0, 0));
        {
            let mut p = Producer::new(&ring.hdr, &ring.slots, &ring.cons).unwrap();
            for (pseq, tail) in [(1, 2), (2, 4)] {
                assert!(p.try_push(&announce(pseq, tail)));
            }
        }
        let r = ring.clone();
        // Set once the first chunk is reused: that may happen before the analyzer is done.
        let flag = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let reused = flag.clone();
        let writer = thread::spawn(move || {
            let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
            while passed(&mut p) < 1 {
                thread::yield_now();
            }
            w.begin(0);
            w.release(0, 0);
            w.publish(0, 2, 4);
            w.begin(1);
            w.write(1, 0, 2);
            w.publish(1, 0, 2);
            reused.store(true, Ordering::Relaxed);
        });
        let mut c = Consumer::new(&ring.hdr, &ring.slots, &ring.cons).unwrap();
        let mut at = 0;
        for _ in 0..2 {
            let ev = c.peek().expect("both events are published");
            let p = peek(&s, 0, at, (ev.tail - at) as usize);
            assert!(p.torn.is_empty(), "announced bytes torn: {p:?}");
            assert_eq!(p.result, Peeked::Data(stream_bytes(0, at..ev.tail)));
            at = ev.tail;
            if at == 4 && flag.load(Ordering::Relaxed) {
                o.set();
            }
            c.advance();
        }
        writer.join().unwrap();
    });
    overlap.check("reused the first chunk before the analyzer was done with the second");
}

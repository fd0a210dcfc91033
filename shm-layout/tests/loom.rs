//! Model checks of the lock-free protocols with loom: every interleaving (up to a preemption
//! bound) and every value the C++11 memory model lets a relaxed load return.
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

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use shm_layout::flow::read_flow;
use shm_layout::layout::{
    ConsumerIndex, EventRecord, EventRingHeader, EventSlot, FlowData, FlowSlot, PktInfo,
    PktLogEntry, PktLogHeader, EVENT_WORDS, FLOW_WORDS, PKT_WORDS,
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

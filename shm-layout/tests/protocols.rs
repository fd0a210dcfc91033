//! Single-threaded tests of the event ring, the packet log and the header check: the cases the
//! loom models (`tests/loom.rs`) leave out, such as clamping arithmetic, wrap-around and refusals.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicU64, Ordering};

use shm_layout::layout::{
    ConfigInfo, ConsumerIndex, EventRecord, EventRingHeader, EventSlot, Header, PktInfo,
    PktLogEntry, PktLogHeader, WorkerInfo, ABI_MAJOR, ABI_MINOR, EVENT_WORDS, MAGIC, PKT_WORDS,
};
use shm_layout::pktlog::{read_packet, PktLogWriter};
use shm_layout::plan::MainPlan;
use shm_layout::ring::{Consumer, Producer};
use shm_layout::seqlock::Stamp;
use shm_layout::Words;

// ---------------------------------------------------------------------------------------------
// Event ring

struct Ring {
    hdr: EventRingHeader,
    slots: Vec<EventSlot>,
    cons: ConsumerIndex,
}

fn ring(cap: u64) -> Ring {
    Ring {
        hdr: EventRingHeader {
            producer: AtomicU64::new(0),
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
            index: AtomicU64::new(0),
            _pad: [0; 7],
        },
    }
}

fn rec(k: u64) -> EventRecord {
    EventRecord::from_words(&[k; EVENT_WORDS])
}

fn idx(r: &EventRecord) -> u64 {
    let mut w = [0; EVENT_WORDS];
    r.to_words(&mut w);
    assert!(w.iter().all(|&x| x == w[0]));
    w[0]
}

#[test]
fn ring_refuses_a_capacity_that_does_not_match() {
    let r = ring(4);
    assert!(Producer::new(&r.hdr, &r.slots[..3], &r.cons).is_none());
    assert!(Consumer::new(&r.hdr, &r.slots[..3], &r.cons).is_none());
    let r = ring(3);
    assert!(Producer::new(&r.hdr, &r.slots, &r.cons).is_none());
}

#[test]
fn producer_stops_when_full_and_resumes_after_the_consumer() {
    let r = ring(4);
    let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    for k in 0..4 {
        assert!(p.try_push(&rec(k)));
    }
    assert!(!p.try_push(&rec(4)), "a full ring takes nothing");
    assert_eq!(r.hdr.producer.load(Ordering::Relaxed), 4);
    let mut c = Consumer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    assert_eq!(idx(&c.peek().unwrap()), 0);
    c.advance();
    assert!(p.try_push(&rec(4)));
    assert!(!p.try_push(&rec(5)));
    assert_eq!(p.consumed(), 1);
    p.count_drop();
    assert_eq!(c.dropped(), 1);
}

#[test]
fn producer_clamps_a_garbage_consumer_index() {
    let r = ring(4);
    let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    for k in 0..6 {
        if !p.try_push(&rec(k)) {
            r.cons.index.store(k - 3, Ordering::Release);
            assert!(p.try_push(&rec(k)));
        }
    }
    assert_eq!(p.published(), 6);
    // Past what was published: the ring looks empty, never "more than empty".
    r.cons.index.store(u64::MAX, Ordering::Release);
    assert_eq!(p.refresh_consumer(), 6);
    // Back again: ignored, the producer takes the index only forward.
    r.cons.index.store(0, Ordering::Release);
    assert_eq!(p.refresh_consumer(), 6);
    // Past again: the producer may write 4 more records, then stops; no index arithmetic
    // overflows and no slot outside the ring is touched.
    r.cons.index.store(u64::MAX, Ordering::Release);
    for k in 6..10 {
        assert!(p.try_push(&rec(k)));
    }
    r.cons.index.store(3, Ordering::Release);
    assert!(!p.try_push(&rec(10)));
    assert_eq!(p.consumed(), 6);
}

#[test]
fn producer_takes_the_consumer_index_only_forward() {
    let r = ring(8);
    let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    for k in 0..8 {
        assert!(p.try_push(&rec(k)));
    }
    // An index moved back and forth between two values: only the first move forward counts.
    let mut seen = Vec::new();
    for i in 0..10 {
        r.cons
            .index
            .store(if i % 2 == 0 { 5 } else { 2 }, Ordering::Release);
        seen.push(p.refresh_consumer());
    }
    assert!(seen.iter().all(|&c| c == 5), "{seen:?}");
    // Room for exactly the 5 records consumed, however the index moves afterwards.
    r.cons.index.store(1, Ordering::Release);
    for k in 8..13 {
        assert!(p.try_push(&rec(k)), "record {k}");
    }
    assert!(!p.try_push(&rec(13)));
    // A producer made afresh over the same ring starts from what the consumer says, clamped:
    // far behind, the ring is full.
    r.cons.index.store(0, Ordering::Release);
    let mut q = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    assert_eq!(q.consumed(), 5);
    assert!(!q.try_push(&rec(13)));
}

#[test]
fn producer_reads_back_records_still_in_the_ring() {
    let r = ring(4);
    let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    assert!(p.record(0).is_none());
    for k in 0..6 {
        r.cons.index.store(k, Ordering::Release);
        assert!(p.try_push(&rec(100 + k)));
    }
    assert!(p.record(1).is_none(), "overwritten by record 5");
    for i in 2..6 {
        assert_eq!(idx(&p.record(i).unwrap()), 100 + i);
    }
    assert!(p.record(6).is_none(), "not published yet");
    assert!(p.record(u64::MAX).is_none());
}

#[test]
fn a_new_producer_does_not_overwrite_unconsumed_records() {
    let r = ring(2);
    let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    assert!(p.try_push(&rec(0)));
    assert!(p.try_push(&rec(1)));
    // A second producer object over the same ring (the first is no longer used).
    let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    assert_eq!(p.published(), 2);
    assert!(!p.try_push(&rec(2)), "records 0 and 1 are not consumed");
    let c = Consumer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    assert_eq!(idx(&c.peek().unwrap()), 0);
}

#[test]
fn consumer_pending_peek_advance() {
    let r = ring(4);
    let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    let mut c = Consumer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    assert_eq!(c.pending(), 0);
    assert!(c.peek().is_none());
    c.advance();
    assert_eq!(
        c.consumed(),
        0,
        "advance with nothing published does nothing"
    );
    p.try_push(&rec(7));
    p.try_push(&rec(8));
    assert_eq!(c.pending(), 2);
    assert_eq!(idx(&c.peek().unwrap()), 7);
    assert_eq!(idx(&c.peek().unwrap()), 7, "peek does not consume");
    c.advance();
    assert_eq!(c.pending(), 1);
    assert_eq!(
        r.cons.index.load(Ordering::Relaxed),
        1,
        "the index is published"
    );
    assert_eq!(idx(&c.peek().unwrap()), 8);
    c.advance();
    c.advance();
    assert_eq!(c.consumed(), 2);
    assert_eq!(c.pending(), 0);
    assert_eq!(c.detached(), 0);
    p.mark_detached(shm_layout::layout::detach_reason::STALLED);
    assert_eq!(c.detached(), shm_layout::layout::detach_reason::STALLED);
}

#[test]
fn deferred_advances_reach_the_producer_at_commit() {
    let r = ring(2);
    let mut p = Producer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    let mut c = Consumer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    c.advance_deferred();
    assert_eq!(c.consumed(), 0, "nothing published: nothing to consume");
    assert!(p.try_push(&rec(1)) && p.try_push(&rec(2)));
    assert!(!p.try_push(&rec(3)), "full");
    assert_eq!(idx(&c.peek().unwrap()), 1);
    c.advance_deferred();
    assert_eq!(idx(&c.peek().unwrap()), 2);
    c.advance_deferred();
    c.advance_deferred();
    assert_eq!((c.consumed(), c.pending()), (2, 0));
    // Not committed: the producer still sees both records unconsumed.
    assert_eq!(r.cons.index.load(Ordering::Relaxed), 0);
    assert!(
        !p.try_push(&rec(3)),
        "the slots are not free before the commit"
    );
    c.commit();
    assert_eq!(r.cons.index.load(Ordering::Relaxed), 2);
    assert!(p.try_push(&rec(3)));
    c.commit();
    assert_eq!(r.cons.index.load(Ordering::Relaxed), 2);
}

#[test]
fn consumer_clamps_the_index_it_starts_from() {
    let r = ring(4);
    r.hdr.producer.store(10, Ordering::Relaxed);
    r.cons.index.store(u64::MAX, Ordering::Relaxed);
    let c = Consumer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    assert_eq!(c.consumed(), 10);
    assert_eq!(r.cons.index.load(Ordering::Relaxed), 10, "written back");
    r.cons.index.store(1, Ordering::Relaxed);
    let c = Consumer::new(&r.hdr, &r.slots, &r.cons).unwrap();
    assert_eq!(c.consumed(), 6, "the oldest record still in the ring");
    assert_eq!(c.pending(), 4);
}

// ---------------------------------------------------------------------------------------------
// Packet log

struct Log {
    hdr: PktLogHeader,
    entries: Vec<PktLogEntry>,
    bytes: Vec<u8>,
}

fn log(entries: usize, bytes: usize) -> Log {
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
        bytes: vec![0; bytes],
    }
}

impl Log {
    /// Appends frames with a writer that resumes from the header (as a restarted writer would).
    fn append(&mut self, frames: &[&[u8]]) -> Vec<u64> {
        let mut w = PktLogWriter::new(&self.hdr, &self.entries, &mut self.bytes).unwrap();
        frames
            .iter()
            .map(|f| w.append(PktInfo::default(), f))
            .collect()
    }

    fn read(&self, seq: u64, dst_len: usize) -> Option<(PktInfo, Vec<u8>)> {
        let mut dst = vec![0; dst_len];
        let (info, k) = read_packet(
            &self.hdr,
            &self.entries,
            self.bytes.len() as u64,
            seq,
            &mut dst,
            |pos, d| {
                let pos = pos as usize;
                match self.bytes.get(pos..pos + d.len()) {
                    Some(src) => {
                        d.copy_from_slice(src);
                        true
                    }
                    None => false,
                }
            },
        )?;
        dst.truncate(k);
        Some((info, dst))
    }
}

#[test]
fn pktlog_refuses_an_empty_log() {
    let mut l = log(0, 16);
    assert!(PktLogWriter::new(&l.hdr, &l.entries, &mut l.bytes).is_none());
    let mut l = log(4, 0);
    assert!(PktLogWriter::new(&l.hdr, &l.entries, &mut l.bytes).is_none());
    assert!(read_packet(&l.hdr, &l.entries, 0, 0, &mut [], |_, _| true).is_none());
}

#[test]
fn pktlog_plan_starts_a_frame_that_does_not_fit_over() {
    let mut l = log(4, 16);
    let mut w = PktLogWriter::new(&l.hdr, &l.entries, &mut l.bytes).unwrap();
    assert_eq!(w.plan(10), (0, 0));
    assert_eq!(w.plan(16), (0, 0), "a frame of the whole ring fits at 0");
    w.append(PktInfo::default(), &[1; 10]);
    assert_eq!(w.plan(6), (10, 0), "fits exactly before the end");
    assert_eq!(w.plan(7), (16, 7), "starts over, overwriting [0, 7)");
    assert_eq!(w.plan(100), (16, 16), "cut to the ring's size");
    assert_eq!(w.next_seq(), 1);
    assert_eq!(w.entries(), 4);
}

#[test]
fn pktlog_wraps_and_forgets_overwritten_frames() {
    let mut l = log(4, 16);
    assert_eq!(l.append(&[&[1; 10], &[2; 10]]), vec![0, 1]);
    let (i1, b1) = l.read(1, 64).unwrap();
    assert_eq!(i1.data_pos, 16, "frame 1 started over at the beginning");
    assert_eq!(i1.caplen, 10);
    assert_eq!(b1, vec![2; 10]);
    assert_eq!(l.hdr.bytes_head.load(Ordering::Relaxed), 10);
    assert!(l.read(0, 64).is_none(), "frame 0's bytes were overwritten");
    // Frame 2 fits after frame 1 and overwrites nothing of it.
    assert_eq!(l.append(&[&[3; 6]]), vec![2]);
    assert_eq!(l.read(1, 64).unwrap().1, vec![2; 10]);
    assert_eq!(l.read(2, 64).unwrap().0.data_pos, 26);
    // A short destination gets a prefix; caplen says how long the frame is.
    let (i2, b2) = l.read(2, 4).unwrap();
    assert_eq!((i2.caplen, b2), (6, vec![3; 4]));
    assert!(l.read(3, 64).is_none(), "not logged yet");
}

#[test]
fn pktlog_forgets_frames_whose_entry_was_reused() {
    let mut l = log(2, 64);
    l.append(&[&[1; 4], &[2; 4], &[3; 4]]);
    assert!(l.read(0, 8).is_none(), "entry 0 now holds frame 2");
    assert_eq!(l.read(1, 8).unwrap().1, vec![2; 4]);
    assert_eq!(l.read(2, 8).unwrap().1, vec![3; 4]);
    let w = PktLogWriter::new(&l.hdr, &l.entries, &mut l.bytes).unwrap();
    assert!(w.info(0).is_none());
    assert_eq!(w.info(2).unwrap().data_pos, 8);
}

#[test]
fn pktlog_cuts_a_frame_longer_than_the_ring() {
    let mut l = log(2, 8);
    l.append(&[&[9; 20]]);
    let (info, b) = l.read(0, 64).unwrap();
    assert_eq!(info.caplen, 8);
    assert_eq!(b, vec![9; 8]);
}

#[test]
fn pktlog_read_fails_when_the_copy_fails() {
    let mut l = log(2, 8);
    l.append(&[&[1; 4]]);
    assert!(read_packet(&l.hdr, &l.entries, 8, 0, &mut [0; 4], |_, _| false).is_none());
}

// ---------------------------------------------------------------------------------------------
// Header check

fn cfg() -> ConfigInfo {
    ConfigInfo {
        chunk_size: 4096,
        buffers_per_worker: 2,
        chunks_per_worker: 2,
        chunk_map_len: 2,
        slots_per_worker: 16,
        pktlog_entries: 8,
        pktlog_bytes: 4096,
        event_ring_len: 64,
        ..Default::default()
    }
}

/// A header as the sensor publishes it for two workers.
fn header() -> (Box<Header>, u64) {
    let plan = MainPlan::new(&cfg(), 2, 4096).unwrap();
    let mut h = Box::new(Header {
        magic: MAGIC,
        abi_major: ABI_MAJOR,
        abi_minor: ABI_MINOR,
        header_size: core::mem::size_of::<Header>() as u32,
        features: 0,
        epoch: 1,
        sensor_pid: 1,
        nworkers: 2,
        region_len: plan.len,
        state: AtomicU64::new(0),
        clock_ns: AtomicU64::new(0),
        config: cfg(),
        workers: core::array::from_fn(|_| WorkerInfo {
            slots_off: 0,
            ring_meta_off: 0,
            chunk_map_off: 0,
            chunks_off: 0,
            pktlog_off: 0,
            counters: core::array::from_fn(|_| AtomicU64::new(0)),
        }),
        input: Default::default(),
    });
    for (i, w) in plan.workers.iter().enumerate() {
        h.workers[i].slots_off = w.slots_off;
        h.workers[i].ring_meta_off = w.ring_meta_off;
        h.workers[i].chunk_map_off = w.chunk_map_off;
        h.workers[i].chunks_off = w.chunks_off;
        h.workers[i].pktlog_off = w.pktlog_off;
    }
    (h, plan.len)
}

#[test]
fn check_header_accepts_what_the_sensor_lays_out() {
    let (h, len) = header();
    let plan = MainPlan::check_header(&h, len).unwrap();
    assert_eq!(plan.workers.len(), 2);
    // A newer minor version is fine.
    let (mut h, len) = header();
    h.abi_minor = ABI_MINOR + 1;
    assert!(MainPlan::check_header(&h, len).is_ok());
}

#[test]
fn check_header_refuses_what_does_not_add_up() {
    let refuse = |f: &dyn Fn(&mut Header), mapped: Option<u64>, what: &str| {
        let (mut h, len) = header();
        f(&mut h);
        let e = MainPlan::check_header(&h, mapped.unwrap_or(len)).unwrap_err();
        assert!(e.0.contains(what), "{e} does not say {what}");
    };
    refuse(&|h| h.magic ^= 1, None, "bad magic");
    refuse(&|h| h.abi_major = ABI_MAJOR + 1, None, "ABI major");
    refuse(&|h| h.abi_major = 0, None, "ABI major");
    refuse(&|h| h.header_size = 64, None, "header of 64 bytes");
    refuse(&|_| {}, Some(4096), "mapped");
    refuse(&|h| h.nworkers = 0, None, "workers");
    refuse(&|h| h.nworkers = 33, None, "workers");
    refuse(
        &|h| h.workers[1].chunks_off += 4096,
        None,
        "worker 1's offsets",
    );
    refuse(&|h| h.workers[0].slots_off = 0, None, "worker 0's offsets");
    refuse(&|h| h.config.chunk_size = 5000, None, "power of two");
    refuse(&|h| h.config.pktlog_bytes = u64::MAX - 10, None, "overflow");
    // A region shorter than its workers (both lengths agree, the workers do not fit).
    refuse(
        &|h| h.region_len = h.workers[1].pktlog_off,
        None,
        "ends past the region",
    );
}

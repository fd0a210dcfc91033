//! A sender that respects its receiver's window (which the receiver moves between a quarter
//! of its maximum and all of it), over a path that loses, duplicates and reorders segments
//! before the capture point, against one chunked stream: every byte arrives in order
//! and exact (checked against the sent bytes), nothing is lost, and the stream never holds
//! more chunks than the window needs plus the one its tail sits in (with no history, and a
//! reader that keeps up).

use mos_sensor::tcp::overlap::OverlapPolicy;
use mos_sensor::tcp::reassembly::{ReadChunk, Stream};
use mos_sensor::tcp::ring_pool::{PoolShape, RingPool};
use proptest::prelude::*;

/// xorshift64*: the run comes from one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Run {
    len: usize,
    window: u64,
    mss: u64,
    chunk: usize,
    loss_pct: u64,
    dup_pct: u64,
    reorder: usize,
}

fn run(seed: u64, r: &Run) {
    let mut rng = Rng(seed | 1);
    let truth: Vec<u8> = (0..r.len).map(|_| rng.next() as u8).collect();
    let mut pool = RingPool::new(PoolShape {
        chunk_size: r.chunk,
        chunks: 4096,
        buffers: 1,
        map_len: (16 << 20) / r.chunk,
    })
    .unwrap();
    // No history: a chunk goes back as soon as the tail has left it and the reader has passed
    // the call that completed it (each call is one publication sequence; the reader reads
    // after each call, as a lossless analyzer does).
    pool.history = 0;
    let isn = rng.next() as u32;
    let mut s = Stream::new();
    s.anchor(isn);
    let len = r.len as u64;
    // The sender's state: everything before `base` is acknowledged, `next` is the next new
    // byte; segments in flight wait in `net`, delivered in a random order among the first
    // `reorder` of them.
    let (mut base, mut next) = (0u64, 0u64);
    let mut net: Vec<(u64, u64)> = Vec::new();
    let mut reader = 0u64;
    let mut buf = vec![0u8; 4096];
    let bound = r.window.div_ceil(r.chunk as u64) as usize + 1;
    let mut steps = 0;
    while base < len {
        steps += 1;
        assert!(steps < 10_000_000, "no progress");
        // Send what the window allows: the receiver advertises between a quarter of the
        // largest window and all of it.
        let window = r.window / 4 + rng.below(r.window - r.window / 4 + 1);
        while next < len.min(base + window) {
            let end = (next + r.mss).min(len).min(base + window);
            if rng.below(100) >= r.loss_pct {
                net.push((next, end));
                if rng.below(100) < r.dup_pct {
                    net.push((next, end));
                }
            }
            next = end;
        }
        if net.is_empty() {
            // A retransmission timeout: go back to the first unacknowledged byte.
            next = base;
            continue;
        }
        let i = rng.below(net.len().min(r.reorder) as u64) as usize;
        let (from, to) = net.remove(i);
        pool.pseq = steps;
        pool.passed = steps - 1;
        let seq = isn.wrapping_add(from as u32);
        let o = s.insert(
            &mut pool,
            seq,
            &truth[from as usize..to as usize],
            (to - from) as u32,
            OverlapPolicy::First,
        );
        // The pool never runs short; a new island past the fragment cap may be dropped (the
        // retransmission brings its bytes again), but nothing is skipped.
        assert!(!o.pool_empty);
        assert_eq!((o.overflow, o.gap), (None, None));
        // The receiver acknowledges everything in order (the capture sees all it gets).
        base = s.tail();
        assert!(s.ack(&mut pool, isn.wrapping_add(base as u32)).is_none());
        let held = pool.chunks_in_use();
        assert!(
            held <= bound,
            "{held} chunks held for a window of {} in chunks of {}",
            r.window,
            r.chunk
        );
        // A reader keeps up, as an analyzer does, and checks every byte.
        loop {
            match s.read(&pool, reader, &mut buf) {
                ReadChunk::NoData => break,
                ReadChunk::Data(n) => {
                    let at = reader as usize;
                    assert_eq!(&buf[..n], &truth[at..at + n], "bytes at {at}");
                    reader += n as u64;
                }
                other => panic!("{other:?} at {reader}"),
            }
        }
    }
    assert_eq!((s.tail(), s.lost(), reader), (len, 0, len));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn a_window_respecting_sender_loses_nothing_and_holds_at_most_a_window_and_a_chunk(
        seed in any::<u64>(),
        len in 1usize..300_000,
        window in prop_oneof![Just(4u64 << 10), Just(16 << 10), Just(64 << 10), Just(256 << 10)],
        mss in prop_oneof![Just(536u64), Just(1448), Just(9000)],
        chunk in prop_oneof![Just(1usize << 10), Just(4 << 10), Just(32 << 10)],
        loss_pct in 0u64..20,
        dup_pct in 0u64..10,
        reorder in 1usize..16,
    ) {
        run(seed, &Run { len, window, mss, chunk, loss_pct, dup_pct, reorder });
    }
}

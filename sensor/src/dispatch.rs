//! Spreading one input over several workers by a symmetric flow hash.
//!
//! Each worker owns a tracker (its own flow table and rings) and an event sink, and runs on its
//! own thread. Both directions of a connection hash to the same worker, and one reader hands
//! frames to the workers in input order, so each connection sees exactly the frames, in
//! exactly the order, that a single worker would: what a worker does with a connection does not
//! depend on how many workers there are. The clock is the capture's: every batch carries the
//! latest capture time read, so a worker that sees few frames still times out its idle
//! connections, and at the end every worker ends its connections at the same capture time.
//!
//! IP fragments are reassembled here, in the reader, before the hash: a non-first fragment
//! has no ports, so it would hash elsewhere than its connection. A fragment goes to no worker;
//! the datagram it completes goes, as one raw IP frame with the fragment's time and position,
//! to the worker of its connection. So reassembly, like the rest, does not depend on the
//! number of workers. (The reader's fragment counters are reported as worker 0's.)
//!
//! Frames are copied once into per-worker batches (a file backend's frame lives only until its
//! next read). Batches go back to the reader once processed and are reused: no allocation per
//! frame. The channels are bounded, so a worker that waits for slow analyzers (lossless mode)
//! holds the reader back rather than growing a queue.

use crate::capture::{CaptureBackend, CaptureError, LinkType, RawPacket};
use crate::defrag::Defragmenter;
use crate::flow::key::{FlowKey, HashKeys};
use crate::parse::{parse_packet, ParseError, Parsed};
use crate::replay::{
    self, pace, ChecksumPolicy, EventSink, Position, ReplayOptions, ReplayStats, StepState,
};
use crate::tracker::Tracker;
use anyhow::{anyhow, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::Instant;

/// Most workers (as many as the shared-memory layout has room for).
pub const MAX_WORKERS: usize = shm_layout::layout::MAX_WORKERS;

/// Frames per batch.
const BATCH_FRAMES: usize = 256;
/// Bytes of frames per batch (a batch is sent once either limit is reached).
const BATCH_BYTES: usize = 512 * 1024;
/// Batches in flight to each worker.
const QUEUE: usize = 8;

/// Picks a worker for each frame so that both directions of a connection get the same one.
///
/// The hash is the flow key's (which orders the two endpoints before hashing, so it is
/// symmetric) with fixed multipliers: the same capture always splits the same way. Frames
/// that are not IP, or cannot be parsed, go to worker 0 (which counts them).
#[derive(Clone, Copy, Debug)]
pub struct DispatchHash {
    keys: HashKeys,
}

impl Default for DispatchHash {
    fn default() -> Self {
        // Not the flow table's multipliers, so a worker's table does not see hashes that all
        // share the bits that chose the worker.
        DispatchHash {
            keys: HashKeys::from_seed(0x6d6f_735f_6469_7370),
        }
    }
}

impl DispatchHash {
    /// The symmetric hash of a frame's connection (addresses only for IP that is not TCP, and
    /// for IP fragments).
    pub fn hash(&self, pkt: &RawPacket<'_>) -> Option<u32> {
        self.hash_parsed(&parse_packet(pkt, false))
    }

    /// [`Self::hash`] of a frame already parsed.
    pub fn hash_parsed(&self, parsed: &Result<Parsed<'_>, ParseError>) -> Option<u32> {
        let (src, sport, dst, dport) = match *parsed {
            Ok(Parsed::Tcp(ref seg)) => (seg.src, seg.sport, seg.dst, seg.dport),
            Ok(Parsed::OtherIp { src, dst, .. } | Parsed::Fragment { src, dst, .. }) => {
                (src, 0, dst, 0)
            }
            _ => return None,
        };
        Some(
            FlowKey::of_packet(&src, sport, &dst, dport, &self.keys)
                .0
                .hash32(),
        )
    }

    /// The worker, of `n`, that takes this frame.
    #[inline]
    pub fn worker_of(&self, pkt: &RawPacket<'_>, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        Self::pick(self.hash(pkt), n)
    }

    /// The worker, of `n`, that takes a frame already parsed.
    #[inline]
    pub fn worker_of_parsed(&self, parsed: &Result<Parsed<'_>, ParseError>, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        Self::pick(self.hash_parsed(parsed), n)
    }

    fn pick(hash: Option<u32>, n: usize) -> usize {
        match hash {
            Some(h) => ((u64::from(h) * n as u64) >> 32) as usize,
            None => 0,
        }
    }
}

/// Where a frame of a batch lies in the batch's bytes.
#[derive(Clone, Copy, Debug)]
struct FrameRef {
    pos: u64,
    ts_ns: u64,
    /// Capture time to advance the worker's clock to before this frame (0: none): the latest
    /// time among other workers' frames since this worker's previous one, when it is later
    /// than this frame's own (capture time went backwards).
    tick_ns: u64,
    link: LinkType,
    orig_len: u32,
    start: u32,
    len: u32,
    /// A datagram the reader reassembled (not a frame of the input).
    whole: bool,
}

/// The most bytes the batches to `workers` workers hold: each worker's queue, the batch it
/// works on, the one being filled and the one coming back, each at most 512 KiB of frames
/// plus one more frame (counted as 512 KiB again: real frames are far shorter) and 256 frame
/// references.
pub fn memory_bound(workers: usize) -> usize {
    workers.saturating_mul(
        (QUEUE + 3) * (2 * BATCH_BYTES + 2 * BATCH_FRAMES * core::mem::size_of::<FrameRef>()),
    )
}

/// Frames on their way to one worker.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    frames: Vec<FrameRef>,
    /// Capture time to advance the worker's clock to after the batch (0: none): the latest
    /// time among other workers' frames read since this worker's last frame.
    now_ns: u64,
}

impl Batch {
    fn push(&mut self, pos: u64, pkt: &RawPacket<'_>, tick_ns: u64, whole: bool) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(pkt.data);
        self.frames.push(FrameRef {
            pos,
            ts_ns: pkt.ts_ns,
            tick_ns,
            link: pkt.link,
            orig_len: pkt.orig_len,
            start,
            len: pkt.data.len() as u32,
            whole,
        });
    }

    fn full(&self) -> bool {
        self.frames.len() >= BATCH_FRAMES || self.bytes.len() >= BATCH_BYTES
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
    }
}

/// One worker's state: its tracker and where its events go.
#[derive(Debug)]
pub struct Lane<'a, S: EventSink> {
    /// The worker's connection tracker.
    pub tracker: &'a mut Tracker,
    /// The worker's event sink.
    pub sink: &'a mut S,
}

/// What a replay over several workers did.
#[derive(Debug)]
pub struct ParallelOutcome {
    /// Every worker's counters added up.
    pub stats: ReplayStats,
    /// Each worker's counters.
    pub per_worker: Vec<ReplayStats>,
    /// The stop flag ended the replay before the input did.
    pub stopped: bool,
    /// A truncated or malformed capture: the replay stopped there; what came before counts.
    pub capture_error: Option<CaptureError>,
}

/// The reader's end of one worker's queue.
struct Outlet {
    tx: Option<SyncSender<Batch>>,
    back: Receiver<Batch>,
    filling: Batch,
    /// The latest capture time among frames that went to other workers since this worker's
    /// last frame (0: none).
    pending_ns: u64,
}

impl Outlet {
    /// Sends the batch being filled (if it holds frames, or `always`); false if the worker is
    /// gone (it failed: its error is reported when it is joined).
    fn flush(&mut self, always: bool) -> bool {
        if self.filling.frames.is_empty() && !always {
            return true;
        }
        let fresh = self.back.try_recv().unwrap_or_default();
        let mut b = std::mem::replace(&mut self.filling, fresh);
        self.filling.clear();
        b.now_ns = std::mem::take(&mut self.pending_ns);
        match &self.tx {
            Some(tx) => tx.send(b).is_ok(),
            None => false,
        }
    }
}

/// Replays `backend` over `lanes.len()` workers, each on its own thread. Frames are numbered
/// in input order (events carry that position whatever worker raised them). `progress` gets
/// the reader's counters (frames read) and the backend's position.
pub fn replay_parallel<S: EventSink + Send>(
    backend: &mut dyn CaptureBackend,
    lanes: Vec<Lane<'_, S>>,
    opts: &ReplayOptions,
    progress: &mut dyn FnMut(&ReplayStats, Position),
) -> Result<ParallelOutcome> {
    let n = lanes.len();
    if n == 0 || n > MAX_WORKERS {
        return Err(anyhow!("between 1 and {MAX_WORKERS} workers, not {n}"));
    }
    let hash = DispatchHash::default();
    // The capture time every worker ends its connections at.
    let end_ns = AtomicU64::new(0);
    let checksums = opts.checksums;
    std::thread::scope(|scope| {
        let mut outlets = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for (w, lane) in lanes.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUE);
            let (back_tx, back_rx) = mpsc::channel::<Batch>();
            outlets.push(Outlet {
                tx: Some(tx),
                back: back_rx,
                filling: Batch::default(),
                pending_ns: 0,
            });
            let end_ns = &end_ns;
            let h = std::thread::Builder::new()
                .name(format!("mos-worker-{w}"))
                .spawn_scoped(scope, move || {
                    run_worker(lane, rx, back_tx, checksums, end_ns)
                })
                .map_err(|e| anyhow!("cannot start worker {w}: {e}"))?;
            handles.push(h);
        }

        let mut read = ReplayStats::default();
        // Frames that reached no worker (fragments): counted as worker 0's.
        let mut unsent = ReplayStats::default();
        let mut defrag = opts.defrag.map(Defragmenter::new);
        let mut stopped = false;
        let mut capture_error = None;
        let mut worker_gone = false;
        let mut pacing: Option<(Instant, u64)> = None;
        let mut next_report = opts.progress_every.map(|d| (Instant::now() + d, d));
        'read: loop {
            if read.frames % 1024 == 0 {
                if let Some(stop) = &opts.stop {
                    if stop.load(Ordering::Relaxed) {
                        stopped = true;
                        break;
                    }
                }
            }
            let pkt = match backend.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => {
                    // An input that waits for its writer ends when the flag is set (stopped).
                    stopped = replay::stop_set(opts);
                    break;
                }
                Err(e) => {
                    capture_error = Some(e);
                    break;
                }
            };
            let slept = opts
                .speed
                .is_some_and(|speed| pace(&mut pacing, pkt.ts_ns, speed));
            // A paced replay has time to spare: a signal is seen after each pause rather than
            // 1024 frames later (the frame in hand is not replayed, as if the input ended).
            if slept
                && opts
                    .stop
                    .as_ref()
                    .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                stopped = true;
                break;
            }
            let pos = read.frames;
            read.frames += 1;
            read.frame_bytes += pkt.data.len() as u64;
            read.last_ts_ns = read.last_ts_ns.max(pkt.ts_ns);
            let parsed = parse_packet(&pkt, false);
            let (w, whole) = match (&parsed, defrag.as_mut()) {
                (Ok(Parsed::Fragment { ip, .. }), Some(d)) => {
                    unsent.frames += 1;
                    unsent.frame_bytes += pkt.data.len() as u64;
                    let datagram = d
                        .push(pkt.ts_ns, ip)
                        .map(|dg| replay::reassembled(pkt.ts_ns, dg));
                    let w = datagram
                        .as_ref()
                        .map(|dg| hash.worker_of_parsed(&parse_packet(dg, false), n));
                    (w, datagram)
                }
                (parsed, d) => {
                    if let Some(d) = d {
                        d.expire(pkt.ts_ns);
                    }
                    (Some(hash.worker_of_parsed(parsed, n)), None)
                }
            };
            // A single worker would have advanced its clock to every frame's time: each worker
            // hears of the others' frames' times, as the latest one since its own last frame,
            // so its connections time out exactly as they would with one worker.
            for (v, out) in outlets.iter_mut().enumerate() {
                if Some(v) != w {
                    out.pending_ns = out.pending_ns.max(pkt.ts_ns);
                }
            }
            if let Some(w) = w {
                let out = &mut outlets[w];
                let tick_ns = std::mem::take(&mut out.pending_ns);
                let tick_ns = if tick_ns > pkt.ts_ns { tick_ns } else { 0 };
                match &whole {
                    Some(dg) => out.filling.push(pos, dg, tick_ns, true),
                    None => out.filling.push(pos, &pkt, tick_ns, false),
                }
                if out.filling.full() && !out.flush(false) {
                    worker_gone = true;
                    break;
                }
            }
            if slept {
                // A paced replay is watched as it goes: nothing waits in a half-full batch.
                for out in &mut outlets {
                    if !out.flush(false) {
                        worker_gone = true;
                        break 'read;
                    }
                }
            }
            if let Some((at, every)) = next_report {
                if read.frames % 4096 == 0 && Instant::now() >= at {
                    progress(&read, backend.progress());
                    next_report = Some((Instant::now() + every, every));
                }
            }
        }
        if let Some(d) = defrag.as_mut() {
            d.finish();
            unsent.defrag = *d.stats();
        }
        end_ns.store(read.last_ts_ns, Ordering::Relaxed);
        for out in &mut outlets {
            if !worker_gone {
                // Every worker hears of the frames after its last one.
                let _ = out.flush(true);
            }
            out.tx = None;
        }
        let mut stats = ReplayStats::default();
        let mut per_worker = Vec::with_capacity(n);
        let mut first_error = None;
        for (w, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(Ok(s)) => {
                    stats.add(&s);
                    per_worker.push(s);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e.context(format!("worker {w}")));
                    per_worker.push(ReplayStats::default());
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow!("worker {w} panicked"));
                    per_worker.push(ReplayStats::default());
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        per_worker[0].add(&unsent);
        stats.add(&unsent);
        stats.last_ts_ns = read.last_ts_ns;
        Ok(ParallelOutcome {
            stats,
            per_worker,
            stopped,
            capture_error,
        })
    })
}

/// A worker: every batch's frames through its tracker, then the end of its connections.
fn run_worker<S: EventSink + Send>(
    lane: Lane<'_, S>,
    rx: Receiver<Batch>,
    back: Sender<Batch>,
    checksums: ChecksumPolicy,
    end_ns: &AtomicU64,
) -> Result<ReplayStats> {
    let Lane { tracker, sink } = lane;
    // No defragmenter: the reader reassembles fragments before they reach a worker.
    let mut st = StepState::new(checksums, None);
    let mut next_checkpoint = Instant::now() + replay::CHECKPOINT_EVERY;
    while let Ok(batch) = rx.recv() {
        for f in &batch.frames {
            if f.tick_ns != 0 {
                replay::tick(tracker, sink, &mut st, f.tick_ns)?;
            }
            let pkt = RawPacket {
                ts_ns: f.ts_ns,
                link: f.link,
                data: &batch.bytes[f.start as usize..(f.start + f.len) as usize],
                orig_len: f.orig_len,
            };
            if f.whole {
                replay::step_datagram(tracker, sink, &mut st, f.pos, &pkt)?;
            } else {
                replay::step(tracker, sink, &mut st, f.pos, &pkt)?;
            }
        }
        if batch.now_ns != 0 {
            replay::tick(tracker, sink, &mut st, batch.now_ns)?;
        }
        // The reader may have stopped taking batches back; that is fine.
        let _ = back.send(batch);
        // Once a batch (up to 256 frames), the clock; about once a second, the counters.
        if Instant::now() >= next_checkpoint {
            sink.checkpoint(tracker, &st.stats);
            next_checkpoint = Instant::now() + replay::CHECKPOINT_EVERY;
        }
    }
    let end = end_ns.load(Ordering::Relaxed).max(st.stats.last_ts_ns);
    replay::finish(tracker, sink, &mut st, end)?;
    Ok(st.stats)
}

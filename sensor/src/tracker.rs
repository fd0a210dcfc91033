//! The TCP core: packets and time in, events out.
//!
//! For each TCP segment the tracker finds or creates the connection, updates the sender's
//! emulated stack, then the receiver's (mOS's order), places the payload in the receiver's
//! stream, and reports what happened as [`Event`] values in the caller's vector. It does no
//! I/O and reads no clock: the packet's capture time is the only time it knows.
//!
//! Reclamation is deferred by one call: a connection that ends in one call keeps its slot and
//! its rings until the next call, so whoever handles the events (the dump, the shared-memory
//! publisher) can still read its final state and bytes. In lossless mode it is deferred until
//! every analyzer has passed the connection's last event ([`Tracker::set_passed`]).
//!
//! The same holds for stream chunks: a chunk whose bytes came into order in one call (and so
//! were announced by that call's `CONN_NEW_DATA`) is never given back in that call, whatever
//! the history: it goes at the start of the next call (in lossless mode, once every analyzer
//! has passed that call and the stream moves again). With little or no history kept, a
//! segment that crosses a chunk boundary, or one that fills a hole before out-of-order bytes,
//! would otherwise give back the chunks it completed before whoever handles the events (the
//! dump) could read them.
//!
//! With a [`SlotSink`] attached (the shared-memory publisher implements it), every change to a
//! connection is published into its slot: the slot's write section opens before the
//! connection's state or ring bytes change and closes once the new state is written. The core
//! knows publication only through that trait, as it knows event handling only through the
//! events it returns.

use crate::event::{EndReason, ErrorKind, Event, EventKind, FlowHandle, NO_FLOW};
use crate::flow::{Endpoint, FlowKey, FlowTable, HashKeys, TunnelTable};
use crate::parse::flags::{ACK, FIN, RST, SYN};
use crate::parse::{TcpSegment, Tunnel};
use crate::tcp::conn::{Conn, Stack};
use crate::tcp::overlap::OverlapPolicy;
use crate::tcp::reassembly::{InsertOutcome, Stream};
use crate::tcp::ring_pool::{PoolError, PoolShape, RingId, RingPool, MAX_GAPS};
use crate::tcp::state::{self, SegmentFacts};
use shm_layout::{EventMask, Hook, Side, TcpState};
use std::cell::Cell;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::AtomicU32;

/// Where the tracker publishes connections, slot by slot (implemented by the shared-memory
/// publisher, `publish::slots::SlotPublisher`). The tracker calls [`SlotSink::begin`] before
/// it changes a connection's state or stream chunks, and [`SlotSink::publish`] or
/// [`SlotSink::free`] once the change is done.
pub trait SlotSink: std::fmt::Debug + Send {
    /// Opens `slot`'s write section (a no-op if it is the one open), closing any other.
    fn begin(&mut self, slot: u32);
    /// Publishes `conn`, the connection in `slot` of `generation` (first packet through
    /// `tunnel`), with its streams' chunks and metadata in `pool`, and closes the write
    /// section. The stack on side `received_by`, if any, received the frame being processed.
    fn publish(
        &mut self,
        slot: u32,
        generation: u32,
        conn: &Conn,
        tunnel: Option<&Tunnel>,
        pool: &mut RingPool,
        received_by: Option<Side>,
    );
    /// Marks `slot` free (its connection is gone), now of `new_generation`.
    fn free(&mut self, slot: u32, new_generation: u32);
    /// The packet-log reference of the frame about to be processed, which becomes the
    /// last-packet reference of the stack that receives it.
    fn set_pkt_ref(&mut self, pkt_ref: u64);
}

/// The most connections one [`Tracker::advance`] or [`Tracker::finish_some`] call ends, so
/// that no single call's events grow with the table (a jump in capture time past the idle
/// timeout, or the end of the input, can end every connection at once). The caller repeats
/// the call while [`Tracker::ends_due`] says more are due.
pub const MAX_ENDS_PER_CALL: usize = 1024;

/// The default chunk size, bytes.
pub const DEFAULT_CHUNK_SIZE: usize = 32 << 10;

/// The most buffers one pool-empty reclaim looks at: bounds the work of one packet when
/// nothing can be taken (every side holds only out-of-order bytes, or, in lossless mode,
/// bytes analyzers have not passed).
const RECLAIM_SCAN: usize = 64;

impl TrackerConfig {
    /// The pool's shape.
    pub fn pool_shape(&self) -> PoolShape {
        PoolShape {
            chunk_size: self.chunk_size,
            chunks: self.chunks,
            buffers: self.chunks,
            map_len: (self.stream_max / self.chunk_size.max(1)).max(1),
        }
    }
}

/// Tracker settings.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// Most connections tracked at once; a new one beyond it evicts the least recently used.
    pub max_flows: usize,
    /// A connection with no packet for this long ends with `TIMEOUT`, ns.
    pub idle_timeout_ns: u64,
    /// How long a closed connection (FIN handshake done, or reset) lingers, still taking late
    /// segments (the last ACK, retransmitted FINs, data sent after a reset), before its
    /// `CONN_END`, ns. Each late segment starts the wait again.
    pub linger_ns: u64,
    /// Bytes per stream chunk (a power of two): a side's bytes are held in chunks of this
    /// size taken from the worker's pool as the stream needs them.
    pub chunk_size: usize,
    /// Chunks in the worker's pool, and stream buffers (a side holding bytes takes one; it
    /// cannot hold bytes without a chunk, so there are as many buffers as chunks).
    pub chunks: usize,
    /// The most bytes one side holds from its head (a power-of-two multiple of `chunk_size`):
    /// what the sender may have in flight beyond a hole, and then some.
    pub stream_max: usize,
    /// In-order bytes a side keeps behind its tail for analyzers that read late, while the
    /// pool has room (an empty pool takes them back, least recently active sides first).
    pub history: u64,
    /// Track connections whose handshake was not seen; when off, their packets are orphans.
    pub track_midstream: bool,
    /// Which copy stays when a segment overlaps held out-of-order data.
    pub overlap: OverlapPolicy,
    /// The events to produce; others are not even built.
    pub events: EventMask,
    /// Multipliers of the flow hash; random per process by default, so crafted tuples cannot
    /// be aimed at one index position.
    pub hash_keys: HashKeys,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_flows: 1 << 20,
            idle_timeout_ns: 3600 * 1_000_000_000,
            linger_ns: 5 * 1_000_000_000,
            chunk_size: DEFAULT_CHUNK_SIZE,
            chunks: 6144,
            stream_max: 16 << 20,
            history: 256 << 10,
            track_midstream: true,
            overlap: OverlapPolicy::First,
            events: EventMask(u64::MAX),
            hash_keys: HashKeys::random(),
        }
    }
}

/// The most heap bytes one tracker uses ([`Tracker::memory_bound`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerMemory {
    /// The flow table (slab, index, free list, reserved whole or grown to a bounded size) and
    /// the queues of closing and ended connections.
    pub flows: usize,
    /// The stream-buffer pool: its bookkeeping, and the chunks and chunk maps themselves
    /// when private.
    pub rings: usize,
    /// The events of one call.
    pub events: usize,
}

/// Counters of what the tracker did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// TCP segments processed.
    pub segments: u64,
    /// Connections created.
    pub conns_created: u64,
    /// Of those, picked up midstream (roles guessed).
    pub conns_midstream: u64,
    /// Connections ended by FIN handshake or reset.
    pub conns_closed: u64,
    /// Connections ended by the idle timeout.
    pub conns_timed_out: u64,
    /// Connections evicted because the table was full.
    pub conns_evicted: u64,
    /// Connections open when the input ended.
    pub conns_open_at_end: u64,
    /// Segments that arrived after their connection closed (FIN handshake done or reset),
    /// while it lingered; their payload is still stored.
    pub late_segments: u64,
    /// Segments that belong to no connection and started none (a lone RST, or midstream
    /// tracking off).
    pub orphan_segments: u64,
    /// Payload bytes placed in streams for the first time.
    pub payload_bytes: u64,
    /// Payload bytes that were retransmissions of held bytes.
    pub rexmit_bytes: u64,
    /// Bytes skipped as gaps (acknowledged but never captured, or cut by the snap length).
    pub gap_bytes: u64,
    /// Bytes lost to ring overflow or dropped for lack of room.
    pub overflow_bytes: u64,
    /// Of those, bytes dropped because the pool had no chunk or buffer left for them, even
    /// after taking back other sides' history.
    pub pool_empty_bytes: u64,
    /// In-order bytes taken back from sides' history before analyzers may have read them,
    /// because the pool ran empty (an analyzer behind on them sees an overrun).
    pub reclaimed_bytes: u64,
    /// Chunks taken back that way.
    pub reclaimed_chunks: u64,
    /// Retransmissions whose bytes differed from the buffered ones.
    pub conflicts: u64,
    /// Keep-alive probes (at most one byte, one before the next byte expected); their byte
    /// is not stored.
    pub keepalives: u64,
}

impl TrackerStats {
    /// Adds another worker's counters to these.
    pub fn add(&mut self, o: &TrackerStats) {
        self.segments += o.segments;
        self.conns_created += o.conns_created;
        self.conns_midstream += o.conns_midstream;
        self.conns_closed += o.conns_closed;
        self.conns_timed_out += o.conns_timed_out;
        self.conns_evicted += o.conns_evicted;
        self.conns_open_at_end += o.conns_open_at_end;
        self.late_segments += o.late_segments;
        self.orphan_segments += o.orphan_segments;
        self.payload_bytes += o.payload_bytes;
        self.rexmit_bytes += o.rexmit_bytes;
        self.gap_bytes += o.gap_bytes;
        self.overflow_bytes += o.overflow_bytes;
        self.pool_empty_bytes += o.pool_empty_bytes;
        self.reclaimed_bytes += o.reclaimed_bytes;
        self.reclaimed_chunks += o.reclaimed_chunks;
        self.conflicts += o.conflicts;
        self.keepalives += o.keepalives;
    }
}

/// The connection tracker of one worker.
#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    table: FlowTable<Conn>,
    /// The publication sequence at which `located` was found (`u64::MAX`: never): it
    /// answers for the next call only.
    located_at: Cell<u64>,
    /// The live slot (and its generation) that [`Tracker::discard_needs_split`] or
    /// [`Tracker::payload_offset`] found last, where [`Tracker::process`] starts instead of
    /// building the key and probing the index again (see [`Tracker::locate`]).
    located: Cell<(u32, u32)>,
    pool: RingPool,
    /// Slots whose connection ended in the previous call, to free at the start of the next.
    reclaim: Vec<u32>,
    /// Connections that closed in the previous call: their rings go back to the pool at the
    /// start of the next (a lingering connection holds no ring unless late data comes).
    release: Vec<FlowHandle>,
    /// Closed connections and when their linger ends, in closing order.
    closing: VecDeque<(FlowHandle, u64)>,
    serial: u64,
    /// What the serial grows by per connection (the number of workers).
    serial_step: u64,
    stats: TrackerStats,
    /// Publication sequence: one per call (packet or clock tick); events carry it.
    pseq: u64,
    /// The latest capture time seen (a packet's or a tick's). Timeouts and the recency list
    /// run on it, never on a time that went backwards, so a capture whose clock jumps back
    /// and forth ends each connection at one well-defined point, whatever else the tracker
    /// holds (and, with several workers, whichever worker holds it).
    clock_ns: u64,
    /// No connection is due to end, and no closing entry to be looked at, before this capture
    /// time: a lower bound, exact after each look, which whatever could bring that time
    /// forward lowers (a new connection on an empty table, a connection that closes), so that
    /// a packet with nothing due only compares its time with it.
    next_due: u64,
    /// The tunnel each connection's first packet came through, by slot.
    tunnels: TunnelTable,
    /// Where connection state is published, if anywhere.
    publisher: Option<Box<dyn SlotSink>>,
    /// Lossless mode: rings and slots of ended connections are kept until every analyzer has
    /// passed their last event.
    lossless: bool,
    /// Every analyzer has passed every event of publication sequence `<= passed`.
    passed: u64,
    /// The connection the previous call updated: its streams may hold chunks that call
    /// completed, which could not go back before its events were handled (see
    /// [`Tracker::trim_previous`]).
    retrim: Option<FlowHandle>,
    /// Lossless mode: ended connections waiting for `passed` to reach their last event.
    held: VecDeque<(u32, u64)>,
    /// Lossless mode: closed connections whose rings go back to the pool once `passed`
    /// reaches the call that closed them.
    held_rings: VecDeque<(FlowHandle, u64)>,
    /// Lossless mode: per ring, the latest call that stored bytes in it after its connection
    /// closed (a held ring still takes late segments; it may go only once those are passed).
    ring_written: Vec<u64>,
    /// Lossless mode: by slot, the generation (+1) of a connection no analyzer gets (their
    /// filters took none of its sockets): its slot and rings are not held for analyzers when
    /// it ends. Grown as slots are used; 0 where nothing is known (held as usual).
    unwatched: Vec<u32>,
    /// Build no event for unwatched connections (nobody but analyzers takes events).
    quiet_unwatched: bool,
}

/// The packet-level facts every event of one segment shares.
#[derive(Clone, Copy)]
struct PacketCtx {
    ts_ns: u64,
    pos: u64,
    flags: u8,
    seq: u32,
    ack: u32,
    payload_len: u32,
}

impl PacketCtx {
    const NONE_POS: u64 = u64::MAX;

    fn tick(ts_ns: u64) -> Self {
        PacketCtx {
            ts_ns,
            pos: Self::NONE_POS,
            flags: 0,
            seq: 0,
            ack: 0,
            payload_len: 0,
        }
    }
}

impl Tracker {
    /// A tracker with these settings; fails when the ring pool cannot be laid out.
    pub fn new(cfg: TrackerConfig) -> Result<Self, PoolError> {
        let mut pool = RingPool::new(cfg.pool_shape())?;
        pool.history = cfg.history;
        // Two slots beyond the limit: one for a connection ended this call and not yet
        // reclaimed, one for its successor on the same tuple.
        let table = FlowTable::new(cfg.max_flows + 2);
        // Stale entries are pruned once it holds two per slot, so it never grows past that.
        let closing = VecDeque::with_capacity(2 * table.capacity());
        Ok(Tracker {
            cfg,
            table,
            pool,
            reclaim: Vec::new(),
            release: Vec::new(),
            closing,
            serial: 0,
            serial_step: 1,
            stats: TrackerStats::default(),
            pseq: 0,
            clock_ns: 0,
            next_due: 0,
            tunnels: TunnelTable::default(),
            publisher: None,
            lossless: false,
            passed: u64::MAX,
            retrim: None,
            located_at: Cell::new(u64::MAX),
            located: Cell::new((u32::MAX, 0)),
            held: VecDeque::new(),
            held_rings: VecDeque::new(),
            ring_written: Vec::new(),
            unwatched: Vec::new(),
            quiet_unwatched: false,
        })
    }

    /// A tracker whose stream chunks are `chunk_bytes` and whose chunk maps are `chunk_map`
    /// (shared memory), and whose connections are published through `publisher`.
    pub fn with_publisher(
        cfg: TrackerConfig,
        chunk_bytes: &'static mut [u8],
        chunk_map: &'static [AtomicU32],
        publisher: Box<dyn SlotSink>,
    ) -> Result<Self, PoolError> {
        let shape = cfg.pool_shape();
        let mut pool =
            RingPool::in_shared(shape.chunk_size, shape.map_len, chunk_bytes, chunk_map)?;
        pool.history = cfg.history;
        let mut t = Tracker::new(TrackerConfig {
            chunks: 1,
            stream_max: cfg.chunk_size,
            ..cfg.clone()
        })?;
        t.cfg = cfg;
        t.pool = pool;
        t.publisher = Some(publisher);
        Ok(t)
    }

    /// Numbers this tracker's connections `first`, `first + step`, ... (worker `w` of `n`
    /// takes `w` and `n`, so serials are unique across workers).
    pub fn set_serials(&mut self, first: u64, step: u64) {
        self.serial = first;
        self.serial_step = step.max(1);
    }

    /// Lossless mode: keep what ended connections refer to until [`Tracker::set_passed`]
    /// says every analyzer is past it.
    pub fn set_lossless(&mut self, on: bool) {
        self.lossless = on;
        if on {
            // Each holds at most one entry per slot: reserved now, they never reallocate.
            let n = self.table.capacity();
            self.held.reserve(n);
            self.held_rings.reserve(n);
            self.ring_written = vec![0; self.pool.capacity()];
        }
        // Without analyzers to wait for, the calls made so far have had their events handled.
        self.pool.passed = if on { self.passed } else { self.pseq };
    }

    /// The most heap bytes a tracker with these settings uses, by part. Nothing the tracker
    /// allocates grows past it, whatever the traffic.
    pub fn memory_bound(cfg: &TrackerConfig, lossless: bool, private_rings: bool) -> TrackerMemory {
        use core::mem::size_of;
        let slots = cfg.max_flows.saturating_add(2);
        let queues = 2 * size_of::<(FlowHandle, u64)>() // closing
            + 2 * (size_of::<u32>() + size_of::<FlowHandle>()) // reclaim, release
            + if lossless {
                size_of::<(u32, u64)>() + size_of::<(FlowHandle, u64)>()
            } else {
                0
            };
        let ring_marks = if lossless {
            cfg.chunks.saturating_mul(size_of::<u64>())
        } else {
            0
        };
        TrackerMemory {
            flows: FlowTable::<Conn>::memory_bound(slots, cfg.max_flows)
                .saturating_add(slots.saturating_mul(queues)),
            rings: RingPool::memory_bound(&cfg.pool_shape(), private_rings)
                .saturating_add(ring_marks),
            // TIMEOUT and CONN_END on both sides for each connection one call ends, plus a
            // segment's own; the vector doubles as it fills.
            events: 2 * 4 * (MAX_ENDS_PER_CALL + 16) * size_of::<Event>(),
        }
    }

    /// Every analyzer has passed every event of publication sequence `<= pseq` (`u64::MAX`
    /// with no analyzer attached, or when each has drained its ring).
    ///
    /// Kept no later than the latest call: an analyzer with nothing left to read has passed
    /// the calls made so far, not the ones to come. Without this, the calls made before the
    /// next `set_passed` (those that end connections at the end of the input, or the ticks
    /// before a packet) would free slots whose `CONN_END` no analyzer had read yet.
    pub fn set_passed(&mut self, pseq: u64) {
        self.passed = pseq.min(self.pseq);
        if self.lossless {
            self.pool.passed = self.passed;
        }
        self.pool.flow_passed = None;
    }

    /// Lossless mode: the analyzers that get the connection in `slot` have passed every event
    /// of publication sequence `<= pseq` (the others never had its events): that connection's
    /// own bytes may go up to there, for the next call only. `None` (or a value below
    /// [`Tracker::set_passed`]'s) changes nothing.
    pub fn set_flow_passed(&mut self, flow: Option<(u32, u64)>) {
        self.pool.flow_passed = flow
            .filter(|_| self.lossless)
            .map(|(slot, p)| (slot, p.min(self.pseq).max(self.pool.passed)));
    }

    /// Changes which events are built (analyzers subscribe and unsubscribe as it runs).
    pub fn set_events(&mut self, mask: EventMask) {
        self.cfg.events = mask;
    }

    /// The publication sequence of the latest call.
    pub fn pseq(&self) -> u64 {
        self.pseq
    }

    /// The publisher, if connections are published.
    pub fn publisher_mut(&mut self) -> Option<&mut (dyn SlotSink + 'static)> {
        self.publisher.as_deref_mut()
    }

    /// Lossless mode: the publication sequence every analyzer must pass before the next call
    /// can be made safely, because held connections use up the slots or rings a packet may
    /// need (`None`: go ahead).
    pub fn must_wait(&self) -> Option<u64> {
        let slot_p = self.held.front().map(|h| h.1).filter(|&p| p > self.passed);
        let ring_p = self
            .held_rings
            .front()
            .map(|h| h.1)
            .filter(|&p| p > self.passed);
        let free_slots = self.table.capacity() - self.table.used();
        let free_rings = self.pool.capacity() - self.pool.in_use();
        let slots_short = free_slots <= 2;
        let rings_short = free_rings <= 2;

        match (slot_p, ring_p) {
            (Some(a), Some(b)) if slots_short || rings_short => {
                Some(if rings_short { a.min(b) } else { a })
            }
            (Some(a), None) if slots_short || rings_short => Some(a),
            (None, Some(b)) if rings_short => Some(b),
            _ => None,
        }
    }

    /// Where `seg`'s payload lands in its receiver's stream (for the packet log's `offset`):
    /// from the stream's anchor, or 0 for the payload that will start a stream (a connection
    /// picked up midstream is not tracked yet when its first frame is logged). `None` for a
    /// packet without payload whose stream has no anchor.
    pub fn payload_offset(&self, seg: &TcpSegment<'_>) -> Option<u64> {
        // A stream with no byte yet (a connection picked up midstream, or a side that has not
        // sent) starts at the first byte seen: this payload's, at offset 0.
        let first = (seg.payload_len > 0).then_some(0);
        let Some((c, src_is_lo)) = self
            .locate(seg)
            .and_then(|(slot, lo)| Some((self.table.get(slot)?, lo)))
        else {
            return first;
        };
        let recv = &c.stack(c.side_of_lo_sender(src_is_lo).peer()).recv;
        if !recv.is_anchored() && seg.flags & SYN == 0 {
            return first;
        }
        recv.seq_to_offset(seg.seq.wrapping_add(u32::from(seg.flags & SYN != 0)))
    }

    /// Lossless mode: the publication sequence every analyzer must pass before `seg` may be
    /// processed, because it would make ring bytes unreadable (overwrite them, skip the head
    /// past them, or evict the gap record that tells them from skipped bytes) that earlier
    /// events announced. 0 when nothing is at stake.
    pub fn discard_needs(&self, seg: &TcpSegment<'_>) -> u64 {
        let (global, flow) = self.discard_needs_split(seg);
        global.max(flow.map_or(0, |f| f.2))
    }

    /// [`Tracker::discard_needs`] in two parts: what every analyzer must pass (the pool has
    /// no room: other flows' history is taken back), and what only the analyzers that get
    /// `seg`'s own flow must pass (its own bytes), with the flow's slot and generation.
    pub fn discard_needs_split(&self, seg: &TcpSegment<'_>) -> (u64, Option<(u32, u32, u64)>) {
        if self.publisher.is_none() {
            return (0, None);
        }
        // The pool has no room for the payload: the history analyzers have not passed can be
        // taken back once they have, so wait for them to pass every call so far.
        if seg.payload_len > 0 {
            let need = seg.payload.len() / self.pool.chunk_size() + 2;
            if !self.pool.can_take(need) || self.pool.in_use() == self.pool.capacity() {
                return (self.pseq, None);
            }
        }
        // The packet's own call starts from this lookup (see `Tracker::locate`).
        let Some((slot, src_is_lo)) = self.locate(seg) else {
            return (0, None);
        };
        let Some(c) = self.table.get(slot) else {
            return (0, None);
        };
        let (r, cs) = (self.pool.span(), self.pool.chunk_size() as u64);
        let snd = c.side_of_lo_sender(src_is_lo);
        let mut need = 0;
        // A stream whose gap list is full evicts its oldest record with the next gap it
        // records (data past a hole, or an ACK of one): below that record's end bytes can no
        // longer be told from skipped ones, so readers that have not passed them would be told
        // they were lost. Which segment records a gap is not known beforehand: whenever the
        // list is full, wait for readers to be past the oldest record.
        //
        // One segment can record several gaps: a hole before each out-of-order island an ACK
        // skips, plus one at the tail. So the records it may push out are as many as the list
        // would overflow by if every island's hole and the tail's became a record: wait for
        // readers to be past the newest of those.
        let gaps_full = |ring: u32| {
            let meta = self.pool.meta(RingId(ring));
            let n = meta.gaps().count();
            let adds = meta.fragments().len() + 1;
            let evicted = (n + adds).saturating_sub(MAX_GAPS).min(n);
            let newest = meta.gaps().nth(evicted.checked_sub(1)?)?;
            Some(newest.offset + newest.len)
        };
        // The receiver's stream takes the payload: bytes more than a ring behind its end go.
        let recv = &c.stack(snd.peer()).recv;
        if let (true, Some(ring)) = (seg.payload_len > 0, recv.ring_index()) {
            if let Some(end) = gaps_full(ring) {
                need = need.max(self.pool.announced_by(RingId(ring), end));
            }
        }
        if seg.payload_len > 0 {
            if let (Some(ring), Some(o)) = (
                recv.ring_index(),
                recv.seq_to_offset(seg.seq.wrapping_add(u32::from(seg.flags & SYN != 0))),
            ) {
                // Storing up to `end` moves the head (to a chunk boundary) when `end` is past
                // the limit, a span beyond the head's chunk.
                let end = o + u64::from(seg.payload_len);
                let upto = end.saturating_sub(r);
                if end > recv.head() / cs * cs + r {
                    need = need.max(self.pool.announced_by(RingId(ring), upto));
                }
            }
        }
        // The sender's own stream: an ACK can skip a hole and move its tail, and so its head.
        if seg.flags & ACK != 0 {
            let own = &c.stack(snd).recv;
            if let Some((ring, end)) = own.ring_index().and_then(|r| Some((r, gaps_full(r)?))) {
                need = need.max(self.pool.announced_by(RingId(ring), end));
            }
            if let (Some(ring), Some(a)) = (own.ring_index(), own.seq_to_offset(seg.ack)) {
                let upto = a.saturating_sub(r);
                if a > own.head() / cs * cs + r {
                    need = need.max(self.pool.announced_by(RingId(ring), upto));
                }
            }
        }
        (0, Some((slot, self.table.generation(slot), need)))
    }

    /// The live slot holding `seg`'s flow, and whether `seg`'s source is the key's lower
    /// endpoint. [`Tracker::discard_needs_split`] and [`Tracker::payload_offset`], which run
    /// before the segment's own [`Tracker::process`], keep the slot found (and its
    /// generation) for that call, which starts from it instead of building the key and probing
    /// the index again. Whoever starts from it checks that the slot is still live and of that
    /// generation (the start of a call may end connections) and that its connection's
    /// endpoints are the segment's: then it is the slot the index would find, since live keys
    /// are unique and a slot's key changes only when it is freed.
    #[inline]
    fn locate(&self, seg: &TcpSegment<'_>) -> Option<(u32, bool)> {
        // A second lookup for the segment before its call (the packet log's, after the lossless
        // check's) starts from the first.
        if self.located_at.get() == self.pseq {
            if let Some(found) = self.start_from_located(seg) {
                return Some(found);
            }
        }
        let (key, src_is_lo) = self.key_of(seg);
        let slot = self.table.lookup(&key)?;
        self.located.set((slot, self.table.generation(slot)));
        self.located_at.set(self.pseq);
        Some((slot, src_is_lo))
    }

    /// The slot [`Tracker::locate`] kept for `seg` before this call (`located_at` is the
    /// call's publication sequence before it starts), if it still holds `seg`'s connection, and
    /// `seg`'s direction in it.
    #[inline]
    fn start_from_located(&self, seg: &TcpSegment<'_>) -> Option<(u32, bool)> {
        let (slot, generation) = self.located.get();
        if !self.table.is_live(slot, generation) {
            return None;
        }
        let c = self.table.get(slot)?;
        let [cli, svr] = &c.endpoints;
        let at = |e: &Endpoint, addr: &IpAddr, port: u16| e.port == port && e.addr == *addr;
        // The client is the lower endpoint when `client_is_lo`; a connection between one
        // endpoint and itself is always taken from the client (as its key's lower end).
        if at(cli, &seg.src, seg.sport) && at(svr, &seg.dst, seg.dport) {
            Some((slot, c.client_is_lo))
        } else if at(svr, &seg.src, seg.sport) && at(cli, &seg.dst, seg.dport) {
            Some((slot, !c.client_is_lo))
        } else {
            None
        }
    }

    /// `seg`'s flow key, and whether its source is the key's lower endpoint.
    #[inline]
    fn key_of(&self, seg: &TcpSegment<'_>) -> (FlowKey, bool) {
        FlowKey::of_packet(
            &seg.src,
            seg.sport,
            &seg.dst,
            seg.dport,
            &self.cfg.hash_keys,
        )
    }

    /// The settings.
    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// What the tracker has counted so far.
    pub fn stats(&self) -> &TrackerStats {
        &self.stats
    }

    /// The ring pool (for readers of the streams).
    pub fn pool(&self) -> &RingPool {
        &self.pool
    }

    /// Connections currently tracked (not ended).
    pub fn live_conns(&self) -> usize {
        self.table.live()
    }

    /// The connection a handle names, unless its slot has been reused since.
    pub fn conn(&self, h: FlowHandle) -> Option<&Conn> {
        let c = self.table.get(h.slot)?;
        (self.table.generation(h.slot) == h.generation).then_some(c)
    }

    /// The tunnel a connection's first packet came through (`None`: no tunnel, or a stale
    /// handle).
    pub fn tunnel(&self, h: FlowHandle) -> Option<&Tunnel> {
        self.conn(h)?;
        self.tunnels.get(h.slot)
    }

    /// Processes one TCP segment captured at `ts_ns`, the `pos`-th frame of the input.
    pub fn process(&mut self, ts_ns: u64, pos: u64, seg: &TcpSegment<'_>, out: &mut Vec<Event>) {
        // Whether a lookup was made before this call (see `Tracker::locate`).
        let located = self.located_at.get() == self.pseq;
        self.next_call();
        self.reclaim_ended();
        let now = self.advance_clock(ts_ns);
        self.expire(now, usize::MAX, out);
        self.stats.segments += 1;

        // The key is built here only when no lookup before the call found the connection;
        // a connection found that way needs it only to restart.
        let (found, src_is_lo, key) = match located.then(|| self.start_from_located(seg)).flatten()
        {
            Some((slot, src_is_lo)) => (Some(slot), src_is_lo, None),
            None => {
                let (key, src_is_lo) = self.key_of(seg);
                (self.table.lookup(&key), src_is_lo, Some(key))
            }
        };
        let ctx = PacketCtx {
            ts_ns,
            pos,
            flags: seg.flags,
            seq: seg.seq,
            ack: seg.ack,
            payload_len: seg.payload_len,
        };
        let pure_syn = seg.flags & (SYN | ACK | RST) == SYN;

        let slot = match found {
            Some(slot) => {
                let c = self.table.get(slot).expect("live slot holds a connection");
                let sender = c.side_of_lo_sender(src_is_lo);
                let st = c.stack(sender);
                // A SYN opens a new connection on this tuple when the old one is over (closed,
                // or the sender's stack done after it took part), or when it carries another
                // ISN after data flowed. A SYN that merely arrives after its SYN/ACK (capture
                // reordering) or retransmits one continues the connection.
                let restart = pure_syn
                    && (c.closed.is_some()
                        || (st.packets > 0 && state::is_done(st.state))
                        || (st.isn.is_some_and(|isn| isn != seg.seq)
                            && (c.stack(Side::Svr).recv.tail() > 0
                                || c.stack(Side::Cli).recv.tail() > 0)));
                if restart {
                    self.end_conn(slot, EndReason::Reused, &ctx, out);
                    self.table.detach(slot);
                    self.retire(slot);
                    let key = key.unwrap_or_else(|| self.key_of(seg).0);
                    match self.create(key, src_is_lo, seg, &ctx, out) {
                        Some(slot) => slot,
                        None => return,
                    }
                } else {
                    if c.closed.is_some() {
                        self.stats.late_segments += 1;
                    }
                    slot
                }
            }
            None => {
                if seg.flags & RST != 0 || (!self.cfg.track_midstream && seg.flags & SYN == 0) {
                    self.stats.orphan_segments += 1;
                    self.orphan(&ctx, out);
                    return;
                }
                let key = key.unwrap_or_else(|| self.key_of(seg).0);
                match self.create(key, src_is_lo, seg, &ctx, out) {
                    Some(slot) => slot,
                    None => return,
                }
            }
        };
        self.table.touch(slot, now);
        self.update(slot, src_is_lo, seg, &ctx, out);
    }

    /// Advances the clock without a packet: ends connections idle past the timeout (at most
    /// [`MAX_ENDS_PER_CALL`]; call again while [`Tracker::ends_due`] holds).
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        self.next_call();
        self.reclaim_ended();
        let now = self.advance_clock(now_ns);
        self.expire(now, MAX_ENDS_PER_CALL, out);
    }

    /// Whether some connection is due to end (or a closing entry to be looked at) at capture
    /// time `now_ns`: a caller that bounds its events per call ([`Tracker::advance`]) repeats
    /// the call until this is false before it hands the tracker a packet of that time, so the
    /// packet finds the table as one unbounded call would have left it.
    pub fn ends_due(&self, now_ns: u64) -> bool {
        let now = self.clock_ns.max(now_ns);
        if now < self.next_due {
            return false;
        }
        if self.closing.front().is_some_and(|&(_, due)| now >= due) {
            return true;
        }
        self.table.oldest().is_some_and(|(slot, last)| {
            let limit = match self.table.get(slot).and_then(|c| c.closed) {
                Some(_) => self.cfg.linger_ns,
                None => self.cfg.idle_timeout_ns,
            };
            now.saturating_sub(last) >= limit
        })
    }

    /// Moves the tracker's clock to `ts_ns` if that is later, and returns the clock.
    fn advance_clock(&mut self, ts_ns: u64) -> u64 {
        self.clock_ns = self.clock_ns.max(ts_ns);
        self.clock_ns
    }

    /// Reports a packet that belongs to no connection (non-TCP IP traffic, for instance).
    pub fn orphan_packet(&mut self, ts_ns: u64, pos: u64, out: &mut Vec<Event>) {
        self.next_call();
        let mut ctx = PacketCtx::tick(ts_ns);
        ctx.pos = pos;
        self.orphan(&ctx, out);
    }

    /// Ends up to `max` open connections, least recently active first, as
    /// [`Tracker::finish`] ends them all; returns whether some remain. Calling it until it
    /// returns false ends the input with events bounded per call.
    pub fn finish_some(&mut self, now_ns: u64, max: usize, out: &mut Vec<Event>) -> bool {
        self.next_call();
        self.reclaim_ended();
        let ctx = PacketCtx::tick(now_ns);
        self.closing.clear();
        for _ in 0..max {
            let Some((slot, _)) = self.table.oldest() else {
                break;
            };
            let closed = self.table.get(slot).and_then(|c| c.closed);
            if closed.is_none() {
                self.stats.conns_open_at_end += 1;
            }
            self.end_conn(slot, closed.unwrap_or(EndReason::EndOfInput), &ctx, out);
            self.table.detach(slot);
            self.retire(slot);
        }
        self.table.live() > 0
    }

    /// Ends every open connection (`CONN_END` with [`EndReason::EndOfInput`]).
    pub fn finish(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        self.next_call();
        self.reclaim_ended();
        let ctx = PacketCtx::tick(now_ns);
        self.closing.clear();
        // Every live connection ends: detaching them all at once clears the index in one
        // sweep instead of one removal per connection.
        let slots = self.table.detach_all();
        for &slot in &slots {
            let closed = self.table.get(slot).and_then(|c| c.closed);
            if closed.is_none() {
                self.stats.conns_open_at_end += 1;
            }
            self.end_conn(slot, closed.unwrap_or(EndReason::EndOfInput), &ctx, out);
        }
        for &slot in &slots {
            self.retire(slot);
        }
    }

    fn next_call(&mut self) {
        self.pseq += 1;
        self.pool.pseq = self.pseq;
        // Whoever handles the events (the dump) has handled every earlier call's, and reads
        // this call's after it returns: chunks this call completes stay until then. (In
        // lossless mode `set_passed` never goes past the latest call: this only matters
        // before its first call.)
        self.pool.passed = if self.lossless {
            self.pool.passed.min(self.pseq - 1)
        } else {
            self.pseq - 1
        };
    }

    /// The pool is (nearly) empty: takes back the in-order bytes of the least recently active
    /// sides (all of them, or in lossless mode those every analyzer has passed), never their
    /// out-of-order bytes, until `need` chunks and a buffer are free or [`RECLAIM_SCAN`] sides
    /// have been looked at. The current connection was touched last, so its sides come last;
    /// they are looked at too, since a connection whose history fills the whole pool must
    /// still make progress. Each side it takes from is published at once, before the segment
    /// is stored, so analyzers see its new head.
    #[cold]
    fn make_room(&mut self, current: u32, need: usize) {
        let all = !self.lossless;
        let mut at = self.pool.lru_first();
        let mut looked = 0;
        while let Some(id) = at {
            if looked == RECLAIM_SCAN
                || (self.pool.can_take(need) && self.pool.in_use() < self.pool.capacity())
            {
                break;
            }
            looked += 1;
            at = self.pool.lru_next(id);
            let owner = self.pool.owner(id);
            let (slot, side) = (owner / 2, owner % 2);
            if owner == u32::MAX {
                continue;
            }
            let Some(conn) = self.table.get_mut(slot) else {
                continue;
            };
            let side = if side == 0 { Side::Cli } else { Side::Svr };
            let recv = &mut conn.stack_mut(side).recv;
            if recv.ring_index() != Some(id.0) {
                continue;
            }
            // The side's chunks go back inside its flow's write section (which closes the
            // current connection's), so that a reader copying them meanwhile discards its copy.
            if let Some(p) = self.publisher.as_mut() {
                p.begin(slot);
            }
            let head0 = recv.head();
            let freed = recv.reclaim(&mut self.pool, all);
            if freed == 0 && recv.head() == head0 {
                continue;
            }
            self.stats.reclaimed_chunks += freed as u64;
            self.stats.reclaimed_bytes += recv.head() - head0;
            self.publish(slot, None);
        }
        // The segment about to be stored changes the current connection's chunks: its write
        // section, which the other flows' publications closed, opens again.
        if let Some(p) = self.publisher.as_mut() {
            p.begin(current);
        }
    }

    /// Lossless mode: whether the connection in `slot` (of `generation`) is one some analyzer
    /// gets. A connection marked unwatched has its slot and rings freed when it ends as in
    /// live mode: no analyzer has an event of it to read. Analyzers whose subscriptions change
    /// call [`Tracker::forget_watched`], after which every connection is held again.
    pub fn set_watched(&mut self, slot: u32, generation: u32, watched: bool) {
        let i = slot as usize;
        if i >= self.table.capacity() {
            return;
        }
        if i >= self.unwatched.len() {
            if watched {
                return;
            }
            let len = (i + 1)
                .next_power_of_two()
                .max(1024)
                .min(self.table.capacity());
            self.unwatched.resize(len, 0);
        }
        self.unwatched[i] = if watched {
            0
        } else {
            generation.wrapping_add(1)
        };
    }

    /// Whether unwatched connections raise no events at all: when analyzers are the only
    /// takers of events (no in-process dump), what no analyzer gets need not be built.
    pub fn set_quiet_unwatched(&mut self, on: bool) {
        self.quiet_unwatched = on;
    }

    /// Forgets every [`Tracker::set_watched`]: each connection is held for analyzers again.
    pub fn forget_watched(&mut self) {
        self.unwatched.iter_mut().for_each(|g| *g = 0);
    }

    /// Whether something of the connection in `slot` is held for analyzers when it ends.
    #[inline]
    fn watched(&self, slot: u32) -> bool {
        self.unwatched
            .get(slot as usize)
            .is_none_or(|&g| g == 0 || g != self.table.generation(slot).wrapping_add(1))
    }

    /// A detached connection's slot (and rings) are to be freed: at the next call, or in
    /// lossless mode once every analyzer has passed this call's events.
    #[inline]
    fn retire(&mut self, slot: u32) {
        if self.lossless && self.watched(slot) {
            self.held.push_back((slot, self.pseq));
        } else {
            self.reclaim.push(slot);
        }
    }

    /// Publishes a connection's current state (no-op without a publisher).
    #[inline]
    fn publish(&mut self, slot: u32, received_by: Option<Side>) {
        if let Some(p) = self.publisher.as_mut() {
            if let Some(c) = self.table.get(slot) {
                p.publish(
                    slot,
                    self.table.generation(slot),
                    c,
                    self.tunnels.get(slot),
                    &mut self.pool,
                    received_by,
                );
            }
        }
    }

    /// Frees the rings of connections that closed, and the slots and rings of connections
    /// that ended, in the previous call (whoever handled its events has read them by now).
    /// Most calls follow one that ended nothing and left no chunk to trim: they only look at
    /// the queues here, and the work is out of line.
    #[inline]
    fn reclaim_ended(&mut self) {
        let due = |p: Option<u64>| p.is_some_and(|p| p <= self.passed);
        if self.retrim.is_some()
            || !self.release.is_empty()
            || !self.reclaim.is_empty()
            || due(self.held_rings.front().map(|h| h.1))
            || due(self.held.front().map(|h| h.1))
        {
            self.reclaim_ended_now();
        }
    }

    /// [`Tracker::reclaim_ended`]'s work, when there is some.
    #[inline(never)]
    fn reclaim_ended_now(&mut self) {
        self.trim_previous();
        let mut release = std::mem::take(&mut self.release);
        while let Some(&(h, p)) = self.held_rings.front() {
            if p > self.passed {
                break;
            }
            self.held_rings.pop_front();
            // Segments that came after the close may have stored bytes in these rings that
            // an analyzer has not reached yet: then they wait for those calls instead.
            let written = self
                .table
                .get(h.slot)
                .filter(|_| self.table.generation(h.slot) == h.generation)
                .into_iter()
                .flat_map(|c| c.stacks.iter())
                .filter_map(|st| st.recv.ring_index())
                .map(|r| self.ring_written[r as usize])
                .max()
                .unwrap_or(0);
            if written > self.passed {
                self.held_rings.push_back((h, written));
            } else {
                release.push(h);
            }
        }
        for h in release.drain(..) {
            let generation = self.table.generation(h.slot);
            if let Some(c) = self
                .table
                .get_mut(h.slot)
                .filter(|_| generation == h.generation)
            {
                // Chunks change inside the slot's write section only.
                if let Some(p) = self.publisher.as_mut() {
                    p.begin(h.slot);
                }
                for st in &mut c.stacks {
                    // Out-of-order bytes still wait for the hole before them to fill (a late
                    // segment may bring it): that ring stays until the connection ends. Whether
                    // it holds any does not depend on when this runs (late bytes go to a fresh
                    // ring after a release), so results do not depend on analyzer timing.
                    if st.recv.fragments(&self.pool).next().is_none() {
                        st.recv.release(&mut self.pool);
                    }
                }
                self.publish(h.slot, None);
            }
        }
        self.release = release;
        let mut reclaim = std::mem::take(&mut self.reclaim);
        for slot in reclaim.drain(..) {
            self.free_slot(slot);
        }
        self.reclaim = reclaim;
        while let Some(&(slot, p)) = self.held.front() {
            if p > self.passed {
                break;
            }
            self.held.pop_front();
            self.free_slot(slot);
        }
    }

    /// Gives back the chunks the previous call's connection completed and kept until that
    /// call's events were handled (its streams keep `history` bytes as usual). Without it, a
    /// side that goes quiet after crossing a chunk boundary would hold that chunk until its
    /// next byte. Lossless mode leaves them to the stream's next move, as every other chunk
    /// analyzers were behind on.
    fn trim_previous(&mut self) {
        let Some(h) = self.retrim.take() else {
            return;
        };
        if self.lossless || self.table.generation(h.slot) != h.generation {
            return;
        }
        let Some(c) = self.table.get(h.slot) else {
            return;
        };
        if !c.stacks.iter().any(|st| st.recv.trimmable(&self.pool)) {
            return;
        }
        // Chunks change inside the slot's write section only.
        if let Some(p) = self.publisher.as_mut() {
            p.begin(h.slot);
        }
        let c = self.table.get_mut(h.slot).expect("live slot");
        for st in &mut c.stacks {
            st.recv.trim(&mut self.pool);
        }
        self.publish(h.slot, None);
    }

    /// Whether a stream of the connection in `slot` holds a chunk wholly below `history` bytes
    /// behind its tail, the first condition of [`Stream::trimmable`] (which also asks whether
    /// readers have passed it, known only at the next call). Neither the streams nor the
    /// history change between calls, so when this is false, so is `trimmable` then.
    #[inline]
    fn may_trim(&self, slot: u32) -> bool {
        let pool = &self.pool;
        self.table.get(slot).is_some_and(|c| {
            c.stacks.iter().any(|st| {
                let r = &st.recv;
                r.has_ring()
                    && pool.index_of(r.tail().saturating_sub(pool.history))
                        > pool.index_of(r.head())
            })
        })
    }

    fn free_slot(&mut self, slot: u32) {
        if let Some(mut c) = self.table.free(slot) {
            // Chunks change inside the slot's write section only (`free` closes it).
            if let Some(p) = self.publisher.as_mut() {
                p.begin(slot);
            }
            for st in &mut c.stacks {
                st.recv.release(&mut self.pool);
            }
            if let Some(p) = self.publisher.as_mut() {
                p.free(slot, self.table.generation(slot));
            }
        }
    }

    /// Ends connections idle past the timeout, and forgets ended ones past their linger time.
    /// Ends at most `limit` connections (late-segment re-queues do not count). Before
    /// `next_due` nothing is due: only the comparison is made.
    #[inline]
    fn expire(&mut self, now_ns: u64, limit: usize, out: &mut Vec<Event>) {
        if now_ns >= self.next_due {
            self.expire_due(now_ns, limit, out);
        }
    }

    /// The earliest capture time at which [`Tracker::expire`] has something to look at: the
    /// first closing entry's due time, or the least recently used connection's end of idle
    /// time or of linger (the others were used later, and wait as long or longer once they
    /// close, which lowers the bound then).
    fn due_bound(&self) -> u64 {
        let closing = self.closing.front().map_or(u64::MAX, |&(_, due)| due);
        let oldest = self.table.oldest().map_or(u64::MAX, |(slot, last)| {
            let wait = match self.table.get(slot).and_then(|c| c.closed) {
                Some(_) => self.cfg.linger_ns,
                None => self.cfg.idle_timeout_ns,
            };
            last.saturating_add(wait)
        });
        closing.min(oldest)
    }

    /// Brings `next_due` forward to `due` if that is earlier.
    #[inline]
    fn due_by(&mut self, due: u64) {
        self.next_due = self.next_due.min(due);
    }

    /// [`Tracker::expire`]'s work, when something may be due.
    #[inline(never)]
    fn expire_due(&mut self, now_ns: u64, limit: usize, out: &mut Vec<Event>) {
        let mut ended = 0;
        // Closed connections, in the order they closed: an open connection that is older in
        // the recency list must not hold back their (much shorter) linger.
        while let Some(&(h, due)) = self.closing.front() {
            if now_ns < due || ended == limit {
                break;
            }
            self.closing.pop_front();
            let Some(c) = self.conn(h) else { continue };
            let (Some(reason), false) = (c.closed, c.ended) else {
                continue;
            };
            let again = self
                .table
                .last_touched(h.slot)
                .saturating_add(self.cfg.linger_ns);
            if now_ns < again {
                // A late segment restarted the wait.
                self.closing.push_back((h, again));
                continue;
            }
            self.end_conn(h.slot, reason, &PacketCtx::tick(now_ns), out);
            self.table.detach(h.slot);
            self.retire(h.slot);
            ended += 1;
        }
        while let Some((slot, last)) = self.table.oldest() {
            let closed = self.table.get(slot).and_then(|c| c.closed);
            let wait = if closed.is_some() {
                self.cfg.linger_ns
            } else {
                self.cfg.idle_timeout_ns
            };
            if now_ns.saturating_sub(last) < wait || ended == limit {
                break;
            }
            ended += 1;
            let ctx = PacketCtx::tick(now_ns);
            match closed {
                Some(reason) => self.end_conn(slot, reason, &ctx, out),
                None => {
                    self.stats.conns_timed_out += 1;
                    for side in [Side::Cli, Side::Svr] {
                        self.emit(slot, Some(side), Hook::Null, EventKind::Timeout, &ctx, out);
                    }
                    self.end_conn(slot, EndReason::Timeout, &ctx, out);
                }
            }
            self.table.detach(slot);
            self.retire(slot);
        }
        // Exact again; at or before `now_ns` when `limit` stopped the loops early.
        self.next_due = self.due_bound();
    }

    /// Creates a connection for a segment of an unknown (or restarted) tuple. Roles: the SYN
    /// sender is the client; else the SYN/ACK receiver; else the side on the lower, well-known
    /// port is guessed to be the server.
    fn create(
        &mut self,
        key: FlowKey,
        src_is_lo: bool,
        seg: &TcpSegment<'_>,
        ctx: &PacketCtx,
        out: &mut Vec<Event>,
    ) -> Option<u32> {
        let src = Endpoint {
            addr: seg.src,
            port: seg.sport,
        };
        let dst = Endpoint {
            addr: seg.dst,
            port: seg.dport,
        };
        if self.table.live() >= self.cfg.max_flows {
            if let Some((victim, _)) = self.table.oldest() {
                match self.table.get(victim).and_then(|c| c.closed) {
                    // A closed connection only lingered: it ends as what it was.
                    Some(reason) => self.end_conn(victim, reason, ctx, out),
                    None => {
                        self.stats.conns_evicted += 1;
                        self.end_conn(victim, EndReason::Evicted, ctx, out);
                    }
                }
                self.table.detach(victim);
                self.retire(victim);
            }
        }
        let (client, server, guessed) = if seg.flags & SYN != 0 && seg.flags & ACK == 0 {
            (src, dst, false)
        } else if seg.flags & SYN != 0 {
            (dst, src, false)
        } else if server_port_guess(src.port, dst.port) {
            (dst, src, true)
        } else {
            (src, dst, true)
        };
        let mut conn = Conn {
            endpoints: [client, server],
            client_is_lo: if client == src { src_is_lo } else { !src_is_lo },
            stacks: [Stack::default(), Stack::default()],
            guessed,
            start_ns: ctx.ts_ns,
            last_ns: ctx.ts_ns,
            closed: None,
            ended: false,
            serial: self.serial,
        };
        self.serial += self.serial_step;
        if guessed {
            // Neither handshake segment was seen: both stacks are assumed established.
            conn.stacks[0].state = TcpState::Established;
            conn.stacks[1].state = TcpState::Established;
        } else {
            conn.stacks[Side::Svr.index()].state = TcpState::Listen;
            if seg.flags & ACK != 0 {
                // First seen a SYN/ACK: the client must have sent the SYN we missed.
                conn.stacks[Side::Cli.index()].state = TcpState::SynSent;
            }
        }
        let last = self.clock_ns.max(ctx.ts_ns);
        let slot = self.table.insert(key, conn, last)?;
        // It may be the least recently used (the table held no other).
        self.due_by(last.saturating_add(self.cfg.idle_timeout_ns));
        self.tunnels.set(slot, &seg.tunnel);
        self.stats.conns_created += 1;
        if guessed {
            self.stats.conns_midstream += 1;
            let sender = if client == src { Side::Cli } else { Side::Svr };
            self.emit(
                slot,
                Some(sender),
                Hook::Snd,
                EventKind::ConnStart,
                ctx,
                out,
            );
            self.emit(
                slot,
                Some(sender.peer()),
                Hook::Rcv,
                EventKind::ConnStart,
                ctx,
                out,
            );
        }
        Some(slot)
    }

    /// The sender's then the receiver's update for one segment of a live connection.
    fn update(
        &mut self,
        slot: u32,
        src_is_lo: bool,
        seg: &TcpSegment<'_>,
        ctx: &PacketCtx,
        out: &mut Vec<Event>,
    ) {
        if let Some(p) = self.publisher.as_mut() {
            p.begin(slot);
        }
        let conn = self.table.get_mut(slot).expect("live slot");
        conn.last_ns = ctx.ts_ns;
        let snd = conn.side_of_lo_sender(src_is_lo);
        let rcv = snd.peer();
        let syn = seg.flags & SYN != 0;
        // The first sequence number after this segment's SYN (which takes one number).
        let data_seq = seg.seq.wrapping_add(u32::from(syn));

        // --- Sender side: what sending this segment does to the sender's stack. A SYN with
        // the ISN already seen, or a FIN at the sequence number already seen, is a
        // retransmission (`REXMIT` below, like retransmitted data).
        let mut control_rexmit = false;
        {
            let st = conn.stack_mut(snd);
            st.packets += 1;
            if syn {
                control_rexmit |= st.isn == Some(seg.seq);
            }
            if seg.flags & FIN != 0 {
                let fin = data_seq.wrapping_add(seg.payload_len);
                control_rexmit |= st.fin_seq == Some(fin);
                st.fin_seq = Some(fin);
            }
        }
        // The receiver's stream holds what the sender sends: anchor it on the SYN (offset 0 is
        // ISN+1) or, midstream, on the first sequence number the sender is seen using. A SYN
        // with another ISN once bytes are held keeps the first numbering (and the first ISN).
        // Before that, a second ISN becomes the sender's ISN but does not move offset 0: the
        // peer's next ACK decides which of the two it took (see the ACK below).
        {
            let recv = &conn.stack(rcv).recv;
            let empty = !(recv.has_ring() || recv.tail() > 0);
            let prev_isn = conn.stack(snd).isn;
            if syn && empty {
                conn.stack_mut(snd).isn = Some(seg.seq);
            }
            let recv = &mut conn.stack_mut(rcv).recv;
            if syn {
                if prev_isn.is_none_or(|p| p == seg.seq) {
                    recv.reanchor(data_seq);
                }
            } else if !recv.is_anchored() && seg.flags & RST == 0 {
                recv.anchor(seg.seq);
            }
        }
        // A SYN/ACK tells where the client's bytes start even when the client's SYN was missed.
        if syn && seg.flags & ACK != 0 {
            conn.stack_mut(snd).recv.reanchor(seg.ack);
        }
        let old = conn.stack(snd).state;
        let new = state::on_send(
            old,
            SegmentFacts {
                flags: seg.flags,
                acks_receiver_fin: false,
            },
        );
        conn.stack_mut(snd).state = new;

        // The sender's ACK says how much of the receiver's bytes it holds: bytes it
        // acknowledges that the capture never had become a gap in the sender's own stream.
        let mut gap = None;
        if seg.flags & ACK != 0 && seg.flags & RST == 0 {
            // Of two ISNs the peer offered before sending a byte, the one this ACK names wins.
            if let Some(peer_isn) = conn.stack(rcv).isn {
                let own = &conn.stack(snd).recv;
                if own.is_anchored() && !own.has_ring() && own.tail() == 0 {
                    let (latest, anchor) = (peer_isn.wrapping_add(1), own.offset_to_seq(0));
                    if latest != anchor {
                        if seg.ack == latest {
                            conn.stack_mut(snd).recv.reanchor(latest);
                        } else if seg.ack == anchor {
                            conn.stack_mut(rcv).isn = Some(anchor.wrapping_sub(1));
                        }
                    }
                }
            }
            let peer_fin = conn.stack(rcv).fin_seq;
            let own = &mut conn.stack_mut(snd).recv;
            if own.is_anchored() {
                // The peer's FIN takes a sequence number that is not a byte of data.
                let ack = match peer_fin {
                    Some(fin) if seq_after(seg.ack, fin) => fin,
                    _ => seg.ack,
                };
                gap = own.ack(&mut self.pool, ack);
            }
        }

        // mOS raises CONN_START for the client when it enters SYN_SENT and for the server
        // when it enters SYN_RCVD (here on sending a SYN/ACK whose SYN was not captured).
        if old != new && matches!(new, TcpState::SynSent | TcpState::SynRcvd) {
            self.emit(slot, Some(snd), Hook::Snd, EventKind::ConnStart, ctx, out);
        }
        self.emit(slot, Some(snd), Hook::Snd, EventKind::PktIn, ctx, out);
        if old != new {
            self.emit(
                slot,
                Some(snd),
                Hook::Snd,
                EventKind::StateChange { old, new },
                ctx,
                out,
            );
        }
        if let Some(g) = gap {
            self.stats.gap_bytes += g.len;
            let kind = EventKind::Error {
                kind: ErrorKind::Gap,
                offset: g.offset,
                len: g.len,
            };
            self.emit(slot, Some(snd), Hook::Snd, kind, ctx, out);
            self.emit(
                slot,
                Some(snd),
                Hook::Null,
                EventKind::ConnNewData,
                ctx,
                out,
            );
        }

        // --- Receiver side: the payload lands in the receiver's stream, then its state moves.
        if seg.payload_len > 0 {
            // Chunks for the payload: a segment spans at most this many, two partial ones
            // included.
            let need = seg.payload.len() / self.pool.chunk_size() + 2;
            if !self.pool.can_take(need) || self.pool.in_use() == self.pool.capacity() {
                self.make_room(slot, need);
            }
        }
        let watched = self.watched(slot);
        let conn = self.table.get_mut(slot).expect("live slot");
        let mut outcome = InsertOutcome::default();
        // Where the segment's first byte lands in the stream (for ERROR offsets).
        let mut seg_offset = 0;
        let keepalive = seg.payload_len <= 1
            && seg.flags & (SYN | FIN | RST) == 0
            && is_keepalive(&conn.stack(rcv).recv, &self.pool, data_seq);
        if keepalive {
            // Its byte (if any) is filler, often not the byte it repeats: neither stored nor
            // compared, so it raises no `REXMIT` and no conflict.
            self.stats.keepalives += 1;
        } else if seg.payload_len > 0 {
            let mark_ring = self.lossless && watched && conn.closed.is_some();
            let recv = &mut conn.stack_mut(rcv).recv;
            if recv.is_anchored() {
                seg_offset = recv.seq_to_offset(data_seq).unwrap_or(0);
                outcome = recv.insert(
                    &mut self.pool,
                    data_seq,
                    seg.payload,
                    seg.payload_len,
                    self.cfg.overlap,
                );
                if let Some(r) = recv.ring_index() {
                    self.pool.touch(RingId(r), slot * 2 + rcv.index() as u32);
                    if mark_ring {
                        self.ring_written[r as usize] = self.pseq;
                    }
                }
            }
        }
        outcome.rexmit |= control_rexmit;
        let acks_fin = seg.flags & ACK != 0
            && conn
                .stack(rcv)
                .fin_seq
                .is_some_and(|fin| seq_after(seg.ack, fin));
        let old = conn.stack(rcv).state;
        let new = state::on_receive(
            old,
            SegmentFacts {
                flags: seg.flags,
                acks_receiver_fin: acks_fin,
            },
        );
        conn.stack_mut(rcv).state = new;

        if old != TcpState::SynRcvd && new == TcpState::SynRcvd {
            self.emit(slot, Some(rcv), Hook::Rcv, EventKind::ConnStart, ctx, out);
        }
        self.emit(slot, Some(rcv), Hook::Rcv, EventKind::PktIn, ctx, out);
        if old != new {
            self.emit(
                slot,
                Some(rcv),
                Hook::Rcv,
                EventKind::StateChange { old, new },
                ctx,
                out,
            );
        }
        self.report_insert(
            slot,
            rcv,
            &outcome,
            seg_offset,
            seg.payload.len() as u64,
            ctx,
            out,
        );
        // The receive stream moved: its tail may have completed a chunk.
        let moved = outcome.new_bytes > 0
            || outcome.lost_snap > 0
            || outcome.overflow.is_some()
            || outcome.gap.is_some();
        if moved {
            self.emit(
                slot,
                Some(rcv),
                Hook::Null,
                EventKind::ConnNewData,
                ctx,
                out,
            );
        }

        // --- The connection is closed once both stacks are done, or on a reset; it ends
        // (CONN_END) after lingering, so late segments still count.
        let conn = self.table.get_mut(slot).expect("live slot");
        if conn.closed.is_none() {
            let reason = if seg.flags & RST != 0 {
                Some(EndReason::Reset)
            } else if state::is_done(conn.stacks[0].state) && state::is_done(conn.stacks[1].state) {
                Some(EndReason::Closed)
            } else {
                None
            };
            if reason.is_some() {
                conn.closed = reason;
                self.stats.conns_closed += 1;
                let generation = self.table.generation(slot);
                let h = FlowHandle { slot, generation };
                // Lossless mode keeps the rings until every analyzer has passed this call's
                // events: one behind may still read them.
                if self.lossless && self.watched(slot) {
                    self.held_rings.push_back((h, self.pseq));
                } else {
                    self.release.push(h);
                }
                self.queue_closing(h);
            }
        }
        self.publish(slot, Some(rcv));
        // Only a stream that moved can hold a chunk this call completed (and lossless mode
        // leaves such chunks to the stream's next move): other packets add no work here. Nor
        // do streams whose bytes all lie within `history` of their tail: nothing of theirs can
        // be trimmed before they move again (and set this again).
        if moved && !self.lossless && self.may_trim(slot) {
            self.retrim = Some(FlowHandle {
                slot,
                generation: self.table.generation(slot),
            });
        }
    }

    /// Queues a connection that just closed for the end of its linger. Entries of connections
    /// ended some other way (evicted, timed out behind it) stay queued until due, so a burst
    /// of short connections could pile them up: once the queue holds two per slot, the stale
    /// ones go (at most one entry per slot is current, so this runs at most once per slot's
    /// worth of closes, and the queue never reallocates).
    fn queue_closing(&mut self, h: FlowHandle) {
        if self.closing.len() >= 2 * self.table.capacity() {
            let table = &self.table;
            self.closing.retain(|&(h, _)| {
                table.generation(h.slot) == h.generation
                    && table
                        .get(h.slot)
                        .is_some_and(|c| c.closed.is_some() && !c.ended)
            });
        }
        let due = self.clock_ns.saturating_add(self.cfg.linger_ns);
        self.closing.push_back((h, due));
        // Its linger ends then; as the least recently used connection it may end from its
        // last use (a packet of this call, so no earlier).
        let lru_due = self
            .table
            .last_touched(h.slot)
            .saturating_add(self.cfg.linger_ns);
        self.due_by(due.min(lru_due));
    }

    /// Counts what an insert did and raises its `REXMIT` and `ERROR` events. `seg_offset` is
    /// the stream offset of the segment's first byte, `present` the bytes the frame held.
    #[allow(clippy::too_many_arguments)]
    fn report_insert(
        &mut self,
        slot: u32,
        rcv: Side,
        o: &InsertOutcome,
        seg_offset: u64,
        present: u64,
        ctx: &PacketCtx,
        out: &mut Vec<Event>,
    ) {
        self.stats.payload_bytes += o.new_bytes;
        if o.rexmit {
            self.stats.rexmit_bytes += u64::from(ctx.payload_len);
            self.emit(slot, Some(rcv), Hook::Rcv, EventKind::Rexmit, ctx, out);
        }
        // Most inserts report no error: that takes one test of the outcome.
        if o.conflict.is_none()
            && o.overflow.is_none()
            && o.gap.is_none()
            && o.dropped_bytes == 0
            && o.lost_snap == 0
        {
            return;
        }
        let errors = [
            o.conflict
                .map(|(off, len)| (ErrorKind::Conflict, off, u64::from(len))),
            o.overflow.map(|g| (ErrorKind::Overflow, g.offset, g.len)),
            o.gap.map(|g| (ErrorKind::Gap, g.offset, g.len)),
            (o.dropped_bytes > 0)
                .then(|| (ErrorKind::Dropped, seg_offset, u64::from(o.dropped_bytes))),
            (o.lost_snap > 0).then(|| {
                (
                    ErrorKind::SnapTruncated,
                    seg_offset + present,
                    u64::from(o.lost_snap),
                )
            }),
        ];
        for (kind, offset, len) in errors.into_iter().flatten() {
            match kind {
                ErrorKind::Conflict => self.stats.conflicts += 1,
                ErrorKind::Overflow => self.stats.overflow_bytes += len,
                ErrorKind::Dropped => {
                    self.stats.overflow_bytes += len;
                    if o.pool_empty {
                        self.stats.pool_empty_bytes += len;
                    }
                }
                ErrorKind::Gap | ErrorKind::SnapTruncated => self.stats.gap_bytes += len,
            }
            let ev = EventKind::Error { kind, offset, len };
            self.emit(slot, Some(rcv), Hook::Rcv, ev, ctx, out);
        }
    }

    /// Raises `CONN_END` on both sides and marks the connection ended (its slot is reclaimed
    /// when it is detached and the next call begins).
    fn end_conn(&mut self, slot: u32, reason: EndReason, ctx: &PacketCtx, out: &mut Vec<Event>) {
        let Some(c) = self.table.get_mut(slot) else {
            return;
        };
        if c.ended {
            return;
        }
        c.ended = true;
        self.publish(slot, None);
        for side in [Side::Cli, Side::Svr] {
            self.emit(
                slot,
                Some(side),
                Hook::Null,
                EventKind::ConnEnd { reason },
                ctx,
                out,
            );
        }
    }

    fn orphan(&mut self, ctx: &PacketCtx, out: &mut Vec<Event>) {
        if self.cfg.events.contains(EventMask::ORPHAN) {
            out.push(Event {
                flow: NO_FLOW,
                pseq: self.pseq,
                side: None,
                hook: Hook::Null,
                kind: EventKind::Orphan,
                ts_ns: ctx.ts_ns,
                pkt_pos: ctx.pos,
                tcp_flags: ctx.flags,
                seq: ctx.seq,
                ack: ctx.ack,
                payload_len: ctx.payload_len,
                head: 0,
                tail: 0,
            });
        }
    }

    /// Raises an event of `kind` if it is one to build. Whether it is, is tested where it is
    /// raised (the kind is mostly known there, so the test is one instruction): an event
    /// nobody takes costs a branch, not a call.
    #[inline(always)]
    fn emit(
        &self,
        slot: u32,
        side: Option<Side>,
        hook: Hook,
        kind: EventKind,
        ctx: &PacketCtx,
        out: &mut Vec<Event>,
    ) {
        if self.cfg.events.contains(kind.mask()) {
            self.push_event(slot, side, hook, kind, ctx, out);
        }
    }

    /// [`Tracker::emit`]'s event, built and added to `out` (unless its connection is one no
    /// analyzer gets and nobody else takes events).
    #[inline(never)]
    fn push_event(
        &self,
        slot: u32,
        side: Option<Side>,
        hook: Hook,
        kind: EventKind,
        ctx: &PacketCtx,
        out: &mut Vec<Event>,
    ) {
        if self.quiet_unwatched && !self.watched(slot) {
            return;
        }
        let (head, tail) = match (side, self.table.get(slot)) {
            (Some(s), Some(c)) => (c.stack(s).recv.head(), c.stack(s).recv.tail()),
            _ => (0, 0),
        };
        out.push(Event {
            flow: FlowHandle {
                slot,
                generation: self.table.generation(slot),
            },
            pseq: self.pseq,
            side,
            hook,
            kind,
            ts_ns: ctx.ts_ns,
            pkt_pos: ctx.pos,
            tcp_flags: ctx.flags,
            seq: ctx.seq,
            ack: ctx.ack,
            payload_len: ctx.payload_len,
            head,
            tail,
        });
    }
}

/// Whether a segment of at most one byte starting at `seq` is a keep-alive for the stream
/// `recv`: it sits one before the next byte expected (one past the highest byte received),
/// which a sender probing an idle peer uses so that the peer answers with an ACK.
fn is_keepalive(recv: &Stream, pool: &RingPool, seq: u32) -> bool {
    if !recv.is_anchored() {
        return false;
    }
    let end = recv.recv_end(pool);
    end > 0 && seq == recv.offset_to_seq(end).wrapping_sub(1)
}

/// Whether `a` comes after `b` in sequence space (`a - b` in `(0, 2^31)`).
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Whether the *source* port looks like the server's: the lower, well-known port serves.
fn server_port_guess(sport: u16, dport: u16) -> bool {
    match (sport < 1024, dport < 1024) {
        (true, false) => true,
        (false, true) => false,
        _ => sport < dport,
    }
}

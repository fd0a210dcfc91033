//! Robustness and invariant tests of the TCP core (`Tracker`): random sequences of segments
//! (random flags, plausible or random sequence numbers around the 2^32 wrap, snap-cut payloads,
//! timestamps that jump past the linger and the idle timeout), clock ticks and the final
//! `finish`, on small tables and pools so eviction, pool exhaustion and overflow happen.
//!
//! After every call the checker verifies what the tracker promises whatever its input:
//! - it does not panic, and never tracks more than `max_flows` connections;
//! - every event's flow resolves with `Tracker::conn` when the events are returned;
//! - per flow, events are well formed (`CONN_END` once per side, client first, nothing after;
//!   `TCP_STATE_CHANGE` chains from the stack's previous state to its current one);
//! - every stream keeps its invariants (`head <= tail`, `lost <= tail`, fragments beyond the
//!   tail within the ring) and reads from its head to its tail in Data/Gap chunks (an Overrun
//!   only at the head) whose bytes are the ones the sender sent at those sequence numbers;
//! - rings in use are exactly the rings the tracked streams hold (none leak);
//! - at the end, the counters agree with the events.
//!
//! The harness (everything above the `proptest!` block) is duplicated in
//! `fuzz/fuzz_targets/tracker.rs`, which decodes fuzz input into the same operations.

use mos_sensor::event::{EndReason, Event, EventKind, FlowHandle, NO_FLOW};
use mos_sensor::flow::Endpoint;
use mos_sensor::parse::flags::{ACK, FIN, PSH, SYN};
use mos_sensor::parse::{ChecksumStatus, TcpSegment};
use mos_sensor::tcp::reassembly::{ReadChunk, Stream};
use mos_sensor::tcp::ring_pool::RingPool;
use mos_sensor::tracker::{Tracker, TrackerConfig};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// XOR-ed into a segment's bytes to make a retransmission that conflicts with the first copy.
const CONFLICT_TAG: u8 = 0x5a;

// `Side` indices and mOS `TCP_*` state codes, by number: the fuzz crate that includes this file
// does not depend on `shm-layout` (`props::codes_match_shm_layout` checks them).
const CLI: usize = 0;
const SVR: usize = 1;
const CLOSED: u8 = 0;
const LISTEN: u8 = 1;
const SYN_SENT: u8 = 2;
const ESTABLISHED: u8 = 4;

/// The tracker settings a run uses (the rest are the defaults).
#[derive(Clone, Debug)]
struct Setup {
    max_flows: usize,
    /// A side's most bytes (`stream_max`), in four chunks.
    ring_size: usize,
    /// Chunks (and so buffers) in the pool.
    max_rings: usize,
    midstream: bool,
    linger_ns: u64,
    idle_ns: u64,
    /// Initial sequence numbers of the per-direction counters are drawn from this.
    seq_seed: u32,
    /// Start the counters a few thousand numbers below 2^32.
    near_wrap: bool,
}

impl Setup {
    fn config(&self) -> TrackerConfig {
        TrackerConfig {
            max_flows: self.max_flows,
            idle_timeout_ns: self.idle_ns,
            linger_ns: self.linger_ns,
            chunk_size: self.ring_size / 4,
            stream_max: self.ring_size,
            chunks: self.max_rings,
            track_midstream: self.midstream,
            // Every event (the default mask).
            ..TrackerConfig::default()
        }
    }
}

/// A sequence or acknowledgment number: near the direction's counter, or anything.
#[derive(Clone, Copy, Debug)]
enum SeqGen {
    Near(i32),
    Any(u32),
}

/// How far the clock moves before an operation.
#[derive(Clone, Copy, Debug)]
enum Dt {
    Fwd(u64),
    Back(u64),
    PastLinger,
    PastIdle,
}

#[derive(Clone, Debug)]
enum Op {
    Seg {
        /// Index into the tuple set (see [`tuple`]).
        tuple: u8,
        /// From the tuple's second endpoint to its first.
        rev: bool,
        flags: u8,
        seq: SeqGen,
        ack: SeqGen,
        /// Bytes the frame holds.
        len: u16,
        /// Bytes the snap length cut (added to `payload_len`).
        cut: u16,
        conflict: bool,
        dt: Dt,
    },
    Advance(Dt),
}

/// Tuples: 2 addresses x 3 ports on each side, IPv4 and IPv6. The address sets overlap, so a
/// few tuples have identical endpoints (a self-connection).
const TUPLES: u8 = 72;

fn tuple(i: u8) -> (Endpoint, Endpoint) {
    let i = i % TUPLES;
    let (b_port, i) = (i % 3, i / 3);
    let (a_port, i) = (i % 3, i / 3);
    let (b_addr, i) = (i % 2, i / 2);
    let (a_addr, v6) = (i % 2, i / 2 == 1);
    let addr = |n: u8| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n)))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
        }
    };
    let a = Endpoint {
        addr: addr(1 + a_addr),
        port: [40000, 80, 5000][usize::from(a_port)],
    };
    let b = Endpoint {
        addr: addr(2 + b_addr),
        port: [80, 443, 5000][usize::from(b_port)],
    };
    (a, b)
}

/// The byte a sender puts at sequence number `seq` (a conflicting copy XORs [`CONFLICT_TAG`]).
fn pattern(key: u8, seq: u32) -> u8 {
    (seq as u8) ^ ((seq >> 8) as u8).rotate_left(3) ^ key
}

/// A per-direction tag mixed into the bytes, so bytes of another stream are caught.
fn dir_key(src: &Endpoint, dst: &Endpoint) -> u8 {
    let mut h: u32 = 0x9e37_79b9;
    for ep in [src, dst] {
        let ip = match ep.addr {
            IpAddr::V4(a) => u128::from(a.to_bits()),
            IpAddr::V6(a) => a.to_bits().rotate_left(64) ^ 0x66,
        };
        for x in [ip as u32, (ip >> 64) as u32, u32::from(ep.port)] {
            h = (h.rotate_left(5) ^ x).wrapping_mul(0x0100_0193);
        }
    }
    (h >> 24) as u8
}

fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// A well-behaved exchange on one tuple, as segments at the direction counters, 1 ms apart.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// SYN, SYN/ACK, ACK from the side `rev` names.
    Handshake,
    /// FIN/ACK, ACK, FIN/ACK, ACK.
    Close,
    /// `n` in-order data segments of `len` bytes (plus `cut` bytes cut by the snap length).
    Burst { n: u8, len: u16, cut: u16 },
}

fn script(what: Script, tuple: u8, rev: bool) -> Vec<Op> {
    let seg = |rev: bool, flags: u8, len: u16, cut: u16| Op::Seg {
        tuple,
        rev,
        flags,
        seq: SeqGen::Near(0),
        ack: SeqGen::Near(0),
        len,
        cut,
        conflict: false,
        dt: Dt::Fwd(MS),
    };
    match what {
        Script::Handshake => vec![
            seg(rev, SYN, 0, 0),
            seg(!rev, SYN | ACK, 0, 0),
            seg(rev, ACK, 0, 0),
        ],
        Script::Close => vec![
            seg(rev, FIN | ACK, 0, 0),
            seg(!rev, ACK, 0, 0),
            seg(!rev, FIN | ACK, 0, 0),
            seg(rev, ACK, 0, 0),
        ],
        Script::Burst { n, len, cut } => (0..n).map(|_| seg(rev, PSH | ACK, len, cut)).collect(),
    }
}

/// What the checker remembers of one flow handle.
#[derive(Debug, Default)]
struct FlowState {
    /// `CONN_END` events seen (0, 1 or 2).
    ends: u8,
    /// The last `TCP_STATE_CHANGE` `new` of each side.
    state: [Option<u8>; 2],
    timeouts: u8,
    guessed: bool,
}

/// Runs operations against a tracker and checks its invariants after every call.
struct Harness {
    setup: Setup,
    tr: Tracker,
    now: u64,
    pos: u64,
    /// Next sequence number of each (tuple, direction).
    counters: HashMap<(u8, bool), u32>,
    flows: HashMap<FlowHandle, FlowState>,
    /// Handles seen and not yet ended in an earlier call: they must resolve.
    alive: Vec<FlowHandle>,
    calls: u64,
    segments: u64,
    orphans: u64,
    /// `CONN_END` pairs by reason code.
    ends_by_reason: [u64; 8],
    ended_closed: u64,
    buf: Vec<u8>,
}

impl Harness {
    fn new(setup: Setup) -> Self {
        let tr = Tracker::new(setup.config()).expect("tracker");
        Harness {
            setup,
            tr,
            now: SEC,
            pos: 0,
            counters: HashMap::new(),
            flows: HashMap::new(),
            alive: Vec::new(),
            calls: 0,
            segments: 0,
            orphans: 0,
            ends_by_reason: [0; 8],
            ended_closed: 0,
            buf: vec![0; 1024],
        }
    }

    fn tick(&mut self, dt: Dt) {
        self.now = match dt {
            Dt::Fwd(d) => self.now + d,
            Dt::Back(d) => self.now.saturating_sub(d),
            Dt::PastLinger => self.now + self.setup.linger_ns + 1,
            Dt::PastIdle => self.now + self.setup.idle_ns + 1,
        };
    }

    fn counter(&mut self, tuple: u8, rev: bool) -> u32 {
        let (seed, wrap) = (self.setup.seq_seed, self.setup.near_wrap);
        *self.counters.entry((tuple, rev)).or_insert_with(|| {
            let x = seed
                .wrapping_add(u32::from(tuple).wrapping_mul(0x9e37_79b9))
                .wrapping_add(u32::from(rev).wrapping_mul(0x85eb_ca6b))
                .rotate_left(13)
                .wrapping_mul(0xc2b2_ae35);
            if wrap {
                u32::MAX - x % 3000
            } else {
                x
            }
        })
    }

    fn run(&mut self, ops: &[Op]) {
        for op in ops {
            self.apply(op);
        }
        self.finish();
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Advance(dt) => {
                self.tick(dt);
                let mut out = Vec::new();
                self.tr.advance(self.now, &mut out);
                self.check(&out, None);
            }
            Op::Seg {
                tuple: t,
                rev,
                flags,
                seq,
                ack,
                len,
                cut,
                conflict,
                dt,
            } => {
                self.tick(dt);
                let t = t % TUPLES;
                let (a, b) = tuple(t);
                let (src, dst) = if rev { (b, a) } else { (a, b) };
                let mine = self.counter(t, rev);
                let theirs = self.counter(t, !rev);
                let seq = match seq {
                    SeqGen::Near(d) => mine.wrapping_add(d as u32),
                    SeqGen::Any(s) => s,
                };
                let ack = match ack {
                    SeqGen::Near(d) => theirs.wrapping_add(d as u32),
                    SeqGen::Any(s) => s,
                };
                let syn = u32::from(flags & SYN != 0);
                let data_seq = seq.wrapping_add(syn);
                let key = dir_key(&src, &dst);
                let tag = if conflict { CONFLICT_TAG } else { 0 };
                let payload: Vec<u8> = (0..u32::from(len))
                    .map(|i| pattern(key, data_seq.wrapping_add(i)) ^ tag)
                    .collect();
                let payload_len = u32::from(len) + u32::from(cut);
                let end = data_seq
                    .wrapping_add(payload_len)
                    .wrapping_add(u32::from(flags & FIN != 0));
                if seq_after(end, mine) {
                    self.counters.insert((t, rev), end);
                }
                let seg = TcpSegment {
                    src: src.addr,
                    dst: dst.addr,
                    sport: src.port,
                    dport: dst.port,
                    seq,
                    ack,
                    flags,
                    window: 65535,
                    payload: &payload,
                    payload_len,
                    checksum: ChecksumStatus::Unchecked,
                    header_off: [0, 0],
                    tunnel: Default::default(),
                };
                self.pos += 1;
                self.segments += 1;
                let mut out = Vec::new();
                self.tr.process(self.now, self.pos, &seg, &mut out);
                self.check(&out, Some(self.pos));
            }
        }
    }

    fn finish(&mut self) {
        self.now += MS;
        let mut out = Vec::new();
        self.tr.finish(self.now, &mut out);
        self.check(&out, None);
        assert_eq!(self.tr.live_conns(), 0, "connections left after finish");
        for (h, f) in &self.flows {
            assert_eq!(f.ends, 2, "{h:?} did not end with two CONN_END");
        }
        let st = self.tr.stats().clone();
        let reason = |r: EndReason| self.ends_by_reason[r as usize];
        assert_eq!(st.conns_created, self.flows.len() as u64, "{st:?}");
        assert_eq!(st.segments, self.segments, "{st:?}");
        assert_eq!(st.orphan_segments, self.orphans, "{st:?}");
        assert_eq!(st.conns_timed_out, reason(EndReason::Timeout), "{st:?}");
        assert_eq!(st.conns_evicted, reason(EndReason::Evicted), "{st:?}");
        assert_eq!(
            st.conns_open_at_end,
            reason(EndReason::EndOfInput),
            "{st:?}"
        );
        assert_eq!(st.conns_closed, self.ended_closed, "{st:?}");
        let guessed = self.flows.values().filter(|f| f.guessed).count() as u64;
        assert_eq!(st.conns_midstream, guessed, "{st:?}");
        // The next call reclaims what ended in `finish`: every ring is back in the pool.
        let mut out = Vec::new();
        self.tr.advance(self.now, &mut out);
        assert!(out.is_empty(), "events after finish: {out:?}");
        assert_eq!(self.tr.pool().in_use(), 0, "rings leaked");
    }

    /// Checks the events one call returned and the tracker's state after it. `seg_pos` is the
    /// position of the segment processed, if the call was `process`.
    fn check(&mut self, out: &[Event], seg_pos: Option<u64>) {
        self.calls += 1;
        let cfg_max = self.setup.max_flows;
        for (i, e) in out.iter().enumerate() {
            assert!(e.head <= e.tail, "event snapshot head > tail: {e:?}");
            if e.kind == EventKind::Orphan {
                assert_eq!(e.flow, NO_FLOW, "{e:?}");
                assert!(e.side.is_none(), "{e:?}");
                self.orphans += 1;
                continue;
            }
            assert_ne!(e.flow, NO_FLOW, "flow event without a flow: {e:?}");
            let side = e.side.expect("flow event without a side").index();
            let c = self
                .tr
                .conn(e.flow)
                .unwrap_or_else(|| panic!("event's flow does not resolve: {e:?}"));
            let f = self.flows.entry(e.flow).or_insert_with(|| {
                self.alive.push(e.flow);
                FlowState {
                    guessed: c.guessed,
                    ..FlowState::default()
                }
            });
            assert!(f.ends < 2, "event after both CONN_END: {e:?}");
            match e.kind {
                EventKind::ConnEnd { reason } => {
                    if f.ends == 0 {
                        assert_eq!(side, CLI, "first CONN_END not the client's: {e:?}");
                        let next = out.get(i + 1);
                        assert!(
                            next.is_some_and(|n| n.flow == e.flow
                                && n.side.map(|s| s.index()) == Some(SVR)
                                && n.kind == e.kind),
                            "CONN_END {e:?} not followed by the server's: {next:?}"
                        );
                        self.ends_by_reason[reason as usize] += 1;
                        if let Some(closed) = c.closed {
                            self.ended_closed += 1;
                            assert!(
                                reason == closed || reason == EndReason::Reused,
                                "closed as {closed:?} but ended as {reason:?}"
                            );
                        }
                        assert_eq!(
                            f.timeouts,
                            if reason == EndReason::Timeout { 2 } else { 0 },
                            "TIMEOUT events before CONN_END {e:?}"
                        );
                    }
                    f.ends += 1;
                }
                EventKind::ConnStart => assert_eq!(f.ends, 0, "CONN_START after CONN_END"),
                EventKind::StateChange { old, new } => {
                    assert_ne!(old, new, "state change to the same state: {e:?}");
                    let (old, new) = (old as u8, new as u8);
                    match f.state[side] {
                        Some(prev) => assert_eq!(old, prev, "state change does not chain: {e:?}"),
                        None => assert!(
                            initial_states(side, f.guessed).contains(&old),
                            "first state change from an impossible state: {e:?}"
                        ),
                    }
                    f.state[side] = Some(new);
                }
                EventKind::Timeout => f.timeouts += 1,
                EventKind::Error { len, .. } => assert!(len > 0, "empty ERROR: {e:?}"),
                _ => {}
            }
        }
        if let Some(pos) = seg_pos {
            let count = |k: EventKind| {
                out.iter()
                    .filter(|e| e.pkt_pos == pos && e.kind == k)
                    .count()
            };
            let (pkt_in, orphan) = (count(EventKind::PktIn), count(EventKind::Orphan));
            assert!(
                (pkt_in, orphan) == (2, 0) || (pkt_in, orphan) == (0, 1),
                "segment {pos} raised {pkt_in} PKT_IN and {orphan} ORPHAN: {out:?}"
            );
        }

        let live = self.tr.live_conns();
        assert!(live <= cfg_max, "{live} live connections, max {cfg_max}");
        let open = self
            .alive
            .iter()
            .filter(|h| self.flows[h].ends == 0)
            .count();
        assert_eq!(live, open, "live_conns disagrees with the flows not ended");

        let pool = self.tr.pool();
        let mut rings = 0;
        for h in &self.alive {
            let c = self
                .tr
                .conn(*h)
                .unwrap_or_else(|| panic!("{h:?} not ended (or ended this call) but gone"));
            let f = &self.flows[h];
            for side in [CLI, SVR] {
                let st = &c.stacks[side];
                let state = st.state as u8;
                match f.state[side] {
                    Some(s) => assert_eq!(state, s, "{h:?} {side:?} changed state silently"),
                    None => assert!(
                        initial_states(side, f.guessed).contains(&state),
                        "{h:?} {side:?} in {:?} without a state change",
                        st.state
                    ),
                }
                rings += usize::from(st.recv.has_ring());
                let sender = &c.endpoints[SVR - side];
                let receiver = &c.endpoints[side];
                check_stream(pool, &st.recv, dir_key(sender, receiver), &mut self.buf)
                    .unwrap_or_else(|m| panic!("{h:?} {side:?} stream: {m}: {:?}", st.recv));
            }
        }
        assert_eq!(pool.in_use(), rings, "rings in use vs rings held");
        assert!(pool.in_use() <= self.setup.max_rings);
        let flows = &self.flows;
        self.alive.retain(|h| flows[h].ends < 2);
    }
}

/// The states a side may be in before its first `TCP_STATE_CHANGE`.
fn initial_states(side: usize, guessed: bool) -> &'static [u8] {
    match (guessed, side) {
        (true, _) => &[ESTABLISHED],
        (false, CLI) => &[CLOSED, SYN_SENT],
        (false, _) => &[LISTEN],
    }
}

/// A stream's invariants, and a read from its head to its tail.
fn check_stream(pool: &RingPool, st: &Stream, key: u8, buf: &mut [u8]) -> Result<(), String> {
    let (head, tail, r) = (st.head(), st.tail(), pool.span());
    let limit = (head & !(pool.chunk_size() as u64 - 1)) + r;
    if head > tail {
        return Err("head > tail".into());
    }
    if st.lost() > tail {
        return Err("lost > tail".into());
    }
    if !st.has_ring() && head != tail {
        return Err("no ring but head != tail".into());
    }
    if tail - head > r {
        return Err("tail beyond head + span".into());
    }
    let mut prev_end = tail;
    for (start, len) in st.fragments(pool) {
        let end = start + u64::from(len);
        if len == 0 || start <= prev_end || end > limit {
            return Err(format!("bad fragment {start}+{len}"));
        }
        prev_end = end;
    }
    let mut off = head;
    loop {
        match st.read(pool, off, buf) {
            ReadChunk::NoData => {
                return if off == tail {
                    Ok(())
                } else {
                    Err(format!("NoData at {off}"))
                };
            }
            ReadChunk::Data(n) => {
                if n == 0 || off + n as u64 > tail {
                    return Err(format!("Data({n}) at {off}"));
                }
                for (i, &b) in buf[..n].iter().enumerate() {
                    let o = off + i as u64;
                    let want = pattern(key, st.offset_to_seq(o));
                    if b != want && b != want ^ CONFLICT_TAG {
                        return Err(format!("byte {o} is {b:#x}, sent {want:#x}"));
                    }
                }
                off += n as u64;
            }
            ReadChunk::Gap { offset, len } => {
                if offset != off || len == 0 || off + len > tail {
                    return Err(format!("Gap {offset}+{len} at {off}"));
                }
                off += len;
            }
            ReadChunk::Overrun { lost } => {
                if off != head || lost == 0 || off + lost > tail {
                    return Err(format!("Overrun {lost} at {off}"));
                }
                off += lost;
            }
        }
    }
}

/// Reads fuzz input a byte at a time; past its end every byte reads as 0.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn seq(&mut self) -> SeqGen {
        let m = self.u8();
        match m >> 6 {
            0 => SeqGen::Near(0),
            1 => SeqGen::Near(i32::from(m & 0x3f) * 12 - 384),
            2 => SeqGen::Near(i32::from(self.u8() as i8) * 550),
            _ => SeqGen::Any(self.u32()),
        }
    }

    fn dt(&mut self) -> Dt {
        match self.u8() {
            d @ 0..=239 => Dt::Fwd(u64::from(d) * 50_000),
            d @ 240..=247 => Dt::Back(u64::from(d - 239) * 400 * MS),
            248..=251 => Dt::PastLinger,
            252..=253 => Dt::PastIdle,
            d => Dt::Fwd(u64::from(d - 253) * 3 * SEC),
        }
    }
}

/// Decodes fuzz input: four bytes of settings, then operations (at most `max_ops`).
fn decode(data: &[u8], max_ops: usize) -> (Setup, Vec<Op>) {
    let mut b = Bytes(data);
    let (s0, s1) = (b.u8(), b.u8());
    let setup = Setup {
        max_flows: if s0 & 0x80 != 0 {
            1 << 10
        } else {
            1 + usize::from(s0 & 3)
        },
        ring_size: 1024 << ((s0 >> 2) & 3),
        max_rings: if s1 & 0x80 != 0 {
            256
        } else {
            1 + usize::from(s1 & 7)
        },
        midstream: s0 & 0x40 == 0,
        linger_ns: if s1 & 0x10 != 0 { MS } else { 5 * SEC },
        idle_ns: if s1 & 0x20 != 0 { 2 * SEC } else { 60 * SEC },
        seq_seed: b.u32(),
        near_wrap: s1 & 0x40 != 0,
    };
    let mut ops = Vec::new();
    while !b.0.is_empty() && ops.len() < max_ops {
        let k = b.u8();
        match k & 7 {
            5 => ops.push(Op::Advance(b.dt())),
            6 => {
                let t = b.u8();
                let what = match k >> 6 {
                    0 => Script::Handshake,
                    1 => Script::Close,
                    _ => Script::Burst {
                        n: b.u8() % 40 + 1,
                        len: u16::from(b.u8() % 16) + 1,
                        cut: u16::from(b.u8() % 8),
                    },
                };
                ops.extend(script(what, t % 4, t & 0x80 != 0));
            }
            _ => {
                let t = b.u8();
                let flags = b.u8() & 0x3f;
                let (seq, ack) = (b.seq(), b.seq());
                let l = b.u8();
                let len = match l >> 6 {
                    0 => 0,
                    1 => u16::from(l & 15),
                    _ => u16::from(l & 0x7f) * 2 + 46,
                };
                let cut = if k & 0x10 != 0 {
                    u16::from(b.u8()) * 2
                } else {
                    0
                };
                ops.push(Op::Seg {
                    tuple: if t & 0x80 == 0 { t % 4 } else { t % TUPLES },
                    rev: k & 0x08 != 0,
                    flags,
                    seq,
                    ack,
                    len,
                    cut,
                    conflict: k & 0xe0 == 0xe0,
                    dt: b.dt(),
                });
            }
        }
    }
    ops.truncate(max_ops);
    (setup, ops)
}

/// The fuzz target's entry: decodes `data` into settings and operations, runs them with every
/// check, then `finish`. Panics on any violated invariant.
pub(crate) fn run_bytes(data: &[u8]) {
    let (setup, ops) = decode(data, 400);
    Harness::new(setup).run(&ops);
}

/// The property tests (left out when `fuzz/fuzz_targets/tracker.rs` includes this file).
#[cfg(test)]
mod props {
    use super::*;
    use mos_sensor::parse::flags::RST;
    use proptest::prelude::*;
    use shm_layout::{Side, TcpState};

    #[test]
    fn codes_match_shm_layout() {
        assert_eq!((Side::Cli.index(), Side::Svr.index()), (CLI, SVR));
        assert_eq!(TcpState::Closed as u8, CLOSED);
        assert_eq!(TcpState::Listen as u8, LISTEN);
        assert_eq!(TcpState::SynSent as u8, SYN_SENT);
        assert_eq!(TcpState::Established as u8, ESTABLISHED);
    }

    fn setup_strategy() -> impl Strategy<Value = Setup> {
        let small = (1usize..=4, 0u32..3, 1usize..=8);
        let roomy = (Just(1usize << 10), Just(3u32), Just(256usize));
        (
            prop_oneof![3 => small, 1 => roomy],
            prop::bool::weighted(0.8),
            prop_oneof![3 => Just(5 * SEC), 1 => Just(MS)],
            prop_oneof![3 => Just(60 * SEC), 1 => Just(2 * SEC)],
            any::<u32>(),
            any::<bool>(),
        )
            .prop_map(
                |(
                    (max_flows, ring_shift, max_rings),
                    mid,
                    linger_ns,
                    idle_ns,
                    seq_seed,
                    near_wrap,
                )| {
                    Setup {
                        max_flows,
                        ring_size: 1024 << ring_shift,
                        max_rings,
                        midstream: mid,
                        linger_ns,
                        idle_ns,
                        seq_seed,
                        near_wrap,
                    }
                },
            )
    }

    fn seq_strategy() -> impl Strategy<Value = SeqGen> {
        prop_oneof![
            6 => Just(SeqGen::Near(0)),
            4 => (-400i32..400).prop_map(SeqGen::Near),
            1 => (-70_000i32..70_000).prop_map(SeqGen::Near),
            1 => any::<u32>().prop_map(SeqGen::Any),
        ]
    }

    fn dt_strategy() -> impl Strategy<Value = Dt> {
        prop_oneof![
            40 => (0u64..10 * MS).prop_map(Dt::Fwd),
            2 => (0u64..3 * SEC).prop_map(Dt::Back),
            2 => Just(Dt::PastLinger),
            1 => Just(Dt::PastIdle),
        ]
    }

    fn flags_strategy() -> impl Strategy<Value = u8> {
        prop_oneof![
            2 => Just(SYN),
            2 => Just(SYN | ACK),
            6 => Just(ACK),
            6 => Just(PSH | ACK),
            2 => Just(FIN | ACK),
            1 => Just(RST),
            1 => Just(RST | ACK),
            3 => any::<u8>().prop_map(|f| f & 0x3f),
        ]
    }

    /// Segments on the first `hot` tuples (now and then on any), a snap cut in one of `cut_every`.
    fn op_strategy(hot: u8, cut_every: u32) -> impl Strategy<Value = Op> {
        let seg = (
            prop_oneof![3 => 0u8..hot, 1 => 0u8..TUPLES],
            any::<bool>(),
            flags_strategy(),
            seq_strategy(),
            seq_strategy(),
            prop_oneof![3 => Just(0u16), 2 => 1u16..=16, 3 => 1u16..=300],
            prop_oneof![cut_every - 1 => Just(0u16), 1 => 1u16..16, 1 => 1u16..400],
            prop::bool::weighted(0.05),
            dt_strategy(),
        )
            .prop_map(
                |(tuple, rev, flags, seq, ack, len, cut, conflict, dt)| Op::Seg {
                    tuple,
                    rev,
                    flags,
                    seq,
                    ack,
                    len,
                    cut,
                    conflict,
                    dt,
                },
            );
        prop_oneof![20 => seg, 1 => dt_strategy().prop_map(Op::Advance)]
    }

    /// Single operations mixed with scripted exchanges, at most `max` operations in all.
    fn ops_strategy(hot: u8, cut_every: u32, max: usize) -> impl Strategy<Value = Vec<Op>> {
        let what = prop_oneof![
            Just(Script::Handshake),
            Just(Script::Close),
            (1u8..40, 1u16..=16, prop_oneof![Just(0u16), 1u16..8])
                .prop_map(|(n, len, cut)| Script::Burst { n, len, cut }),
        ];
        let scripted = (what, 0u8..hot, any::<bool>()).prop_map(|(w, t, rev)| script(w, t, rev));
        let chunk =
            prop_oneof![12 => op_strategy(hot, cut_every).prop_map(|o| vec![o]), 1 => scripted];
        prop::collection::vec(chunk, 0..max).prop_map(move |v| {
            let mut ops: Vec<Op> = v.into_iter().flatten().collect();
            ops.truncate(max);
            ops
        })
    }

    proptest! {
        // The default case count (PROPTEST_CASES overrides it); no regression files are written;
        // XorShift because ChaCha in a debug build takes most of the run's time.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            rng_algorithm: prop::test_runner::RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        })]

        /// Random segments and clock ticks on small tables and pools, then `finish`: every
        /// invariant holds after every call.
        #[test]
        fn random_traffic_keeps_invariants(
            setup in setup_strategy(),
            ops in ops_strategy(4, 9, 300),
        ) {
            Harness::new(setup).run(&ops);
        }

        /// Most segments on one or two tuples, a third of them snap-cut: long streams with many
        /// gaps, so gap records are evicted and readers at the head are overrun.
        #[test]
        fn busy_connections_keep_invariants(
            setup in setup_strategy(),
            ops in ops_strategy(2, 3, 300),
        ) {
            Harness::new(setup).run(&ops);
        }

        /// Random bytes through the fuzz target's decoder (a smoke test of `fuzz/.../tracker.rs`).
        #[test]
        fn fuzz_decoder_input_keeps_invariants(data in prop::collection::vec(any::<u8>(), 0..1500)) {
            run_bytes(&data);
        }
    }
}

//! The tracker's limits (docs/REASSEMBLY.md, "Limits"): what happens when the stream-buffer pool is
//! empty, how many connections one call ends, and that the closing queue stays bounded.

use mos_sensor::event::{EndReason, ErrorKind, Event, EventKind};
use mos_sensor::flow::Endpoint;
use mos_sensor::parse::flags::{ACK, PSH, RST, SYN};
use mos_sensor::parse::{ChecksumStatus, TcpSegment};
use mos_sensor::tracker::{Tracker, TrackerConfig, MAX_ENDS_PER_CALL};
use std::net::{IpAddr, Ipv4Addr};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

fn ep(host: u32, port: u16) -> Endpoint {
    Endpoint {
        addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + host)),
        port,
    }
}

/// Feeds one segment from client `c` (to the server, or back with `rev`) at `ts`.
#[allow(clippy::too_many_arguments)]
fn send(
    tr: &mut Tracker,
    ts: u64,
    c: u32,
    rev: bool,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<Event> {
    let (mut src, mut dst) = (ep(c + 1, 40000), ep(0, 80));
    if rev {
        std::mem::swap(&mut src, &mut dst);
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
        payload: data,
        payload_len: data.len() as u32,
        checksum: ChecksumStatus::Unchecked,
        header_off: [0, 0],
        tunnel: Default::default(),
    };
    let mut out = Vec::new();
    tr.process(ts, 0, &seg, &mut out);
    out
}

fn handshake(tr: &mut Tracker, ts: u64, c: u32) {
    send(tr, ts, c, false, SYN, 100, 0, b"");
    send(tr, ts, c, true, SYN | ACK, 900, 101, b"");
    send(tr, ts, c, false, ACK, 101, 901, b"");
}

fn ends(ev: &[Event]) -> usize {
    ev.iter()
        .filter(|e| matches!(e.kind, EventKind::ConnEnd { .. }))
        .count()
        / 2
}

fn one_chunk() -> Tracker {
    Tracker::new(TrackerConfig {
        chunks: 1,
        chunk_size: 4096,
        stream_max: 4096,
        ..TrackerConfig::default()
    })
    .unwrap()
}

fn dropped(ev: &[Event]) -> Vec<(u64, u64)> {
    ev.iter()
        .filter_map(|e| match e.kind {
            EventKind::Error {
                kind: ErrorKind::Dropped,
                offset,
                len,
            } => Some((offset, len)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_empty_pool_takes_back_the_history_of_the_least_recently_active_side() {
    let mut tr = one_chunk();
    handshake(&mut tr, SEC, 0);
    handshake(&mut tr, SEC, 1);
    // The first side with payload takes the only chunk.
    send(&mut tr, SEC + MS, 0, false, PSH | ACK, 101, 901, b"first");
    assert_eq!((tr.pool().in_use(), tr.pool().chunks_in_use()), (1, 1));
    let ev = send(
        &mut tr,
        SEC + 2 * MS,
        1,
        false,
        PSH | ACK,
        101,
        901,
        b"second",
    );
    assert_eq!(dropped(&ev), vec![]);
    let s = tr.stats();
    assert_eq!((s.reclaimed_bytes, s.reclaimed_chunks), (5, 1));
    assert_eq!(
        (s.payload_bytes, s.overflow_bytes, s.pool_empty_bytes),
        (11, 0, 0)
    );
    // The first connection's side gave back its buffer too; the second holds the chunk.
    assert_eq!((tr.pool().in_use(), tr.pool().chunks_in_use()), (1, 1));
}

#[test]
fn an_empty_pool_never_takes_out_of_order_bytes_it_drops_new_ones_counts_them_and_raises_dropped() {
    let mut tr = one_chunk();
    handshake(&mut tr, SEC, 0);
    handshake(&mut tr, SEC, 1);
    // Out of order (a hole of 5 bytes before it): the only chunk holds bytes nobody may take.
    send(&mut tr, SEC + MS, 0, false, PSH | ACK, 106, 901, b"first");
    assert_eq!(tr.pool().chunks_in_use(), 1);
    let ev = send(
        &mut tr,
        SEC + 2 * MS,
        1,
        false,
        PSH | ACK,
        101,
        901,
        b"second",
    );
    assert_eq!(dropped(&ev), vec![(0, 6)]);
    let s = tr.stats();
    assert_eq!((s.reclaimed_bytes, s.reclaimed_chunks), (0, 0));
    assert_eq!((s.overflow_bytes, s.pool_empty_bytes), (6, 6));
    assert_eq!(tr.pool().in_use(), 1);
}

#[test]
fn advance_ends_a_bounded_number_per_call_until_none_is_due() {
    let n = 3 * MAX_ENDS_PER_CALL as u32 + 7;
    let cfg = TrackerConfig {
        idle_timeout_ns: 10 * SEC,
        ..TrackerConfig::default()
    };
    let mut tr = Tracker::new(cfg).unwrap();
    for c in 0..n {
        send(&mut tr, SEC, c, false, SYN, 100, 0, b"");
    }
    let later = 20 * SEC;
    assert!(tr.ends_due(later));
    assert!(!tr.ends_due(5 * SEC));
    let mut calls = 0;
    let mut ended = 0;
    while tr.ends_due(later) {
        let mut out = Vec::new();
        tr.advance(later, &mut out);
        let e = ends(&out);
        assert!(e <= MAX_ENDS_PER_CALL, "{e} ends in one call");
        ended += e;
        calls += 1;
    }
    assert_eq!(ended, n as usize);
    assert_eq!(calls, n as usize / MAX_ENDS_PER_CALL + 1);
    assert_eq!(tr.stats().conns_timed_out, u64::from(n));
    assert_eq!(tr.live_conns(), 0);
}

#[test]
fn finish_some_ends_everything_in_bounded_calls() {
    let mut tr = Tracker::new(TrackerConfig::default()).unwrap();
    for c in 0..2500 {
        send(&mut tr, SEC, c, false, SYN, 100, 0, b"");
    }
    let mut ended = 0;
    loop {
        let mut out = Vec::new();
        let more = tr.finish_some(2 * SEC, 1000, &mut out);
        assert!(ends(&out) <= 1000);
        ended += ends(&out);
        if !more {
            break;
        }
    }
    assert_eq!(ended, 2500);
    assert_eq!(tr.stats().conns_open_at_end, 2500);
    assert_eq!(tr.live_conns(), 0);
}

#[test]
fn a_burst_of_resets_on_a_full_table_keeps_every_connection_accounted_for() {
    // Each connection is reset (closed, lingering) and then evicted by the next ones long
    // before its linger ends: its closing entry goes stale. Many times the table's size of
    // them must neither grow memory without bound nor lose an end.
    let max_flows = 64;
    let mut tr = Tracker::new(TrackerConfig {
        max_flows,
        ..TrackerConfig::default()
    })
    .unwrap();
    let total = 50 * max_flows as u32;
    let mut ended = 0;
    for c in 0..total {
        let ts = SEC + u64::from(c) * 1000;
        ended += ends(&send(&mut tr, ts, c, false, SYN, 100, 0, b""));
        ended += ends(&send(&mut tr, ts, c, true, RST | ACK, 0, 101, b""));
    }
    let mut out = Vec::new();
    tr.finish(10 * SEC, &mut out);
    ended += ends(&out);
    assert_eq!(ended, total as usize);
    let s = tr.stats();
    assert_eq!(s.conns_closed, u64::from(total));
    // A closed connection that is pushed out ends as what it was (reset), not as evicted.
    assert_eq!(s.conns_evicted, 0);
    let resets = out
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::ConnEnd {
                    reason: EndReason::Reset
                }
            )
        })
        .count();
    assert_eq!(resets, 2 * max_flows);
}

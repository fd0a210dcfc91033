//! Integration tests of the TCP core's public API (`Tracker`): segments built by hand go in,
//! events, connection state and stream bytes are checked against `docs/REASSEMBLY.md`.

use mos_sensor::event::{EndReason, ErrorKind, Event, EventKind, FlowHandle, NO_FLOW};
use mos_sensor::flow::Endpoint;
use mos_sensor::parse::flags::{ACK, FIN, PSH, RST, SYN};
use mos_sensor::parse::{ChecksumStatus, TcpSegment};
use mos_sensor::tcp::overlap::OverlapPolicy;
use mos_sensor::tcp::reassembly::ReadChunk;
use mos_sensor::tracker::{Tracker, TrackerConfig, TrackerStats};
use shm_layout::{EventMask, Hook, Side, TcpState};
use std::net::{IpAddr, Ipv4Addr};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const CISN: u32 = 1_000;
const SISN: u32 = 700_000;

/// A tracker, the capture clock and the frame counter.
#[derive(Debug)]
struct Sim {
    tr: Tracker,
    now: u64,
    pos: u64,
}

impl Sim {
    fn new(cfg: TrackerConfig) -> Self {
        Sim {
            tr: Tracker::new(cfg).expect("tracker"),
            now: SEC,
            pos: 0,
        }
    }

    fn default_cfg() -> Self {
        Self::new(TrackerConfig::default())
    }

    /// Feeds one segment captured 1 ms after the previous one.
    fn send(
        &mut self,
        from: Endpoint,
        to: Endpoint,
        flags: u8,
        seq: u32,
        ack: u32,
        data: &[u8],
    ) -> Vec<Event> {
        self.now += MS;
        self.pos += 1;
        let seg = TcpSegment {
            src: from.addr,
            dst: to.addr,
            sport: from.port,
            dport: to.port,
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
        self.tr.process(self.now, self.pos, &seg, &mut out);
        out
    }

    /// Moves the clock to `t` without a packet.
    fn advance_to(&mut self, t: u64) -> Vec<Event> {
        self.now = t;
        let mut out = Vec::new();
        self.tr.advance(t, &mut out);
        out
    }

    fn finish(&mut self) -> Vec<Event> {
        self.now += MS;
        let mut out = Vec::new();
        self.tr.finish(self.now, &mut out);
        out
    }

    fn stats(&self) -> TrackerStats {
        self.tr.stats().clone()
    }

    fn stream_tail(&self, h: FlowHandle, side: Side) -> u64 {
        self.tr.conn(h).expect("conn").stack(side).recv.tail()
    }

    fn stream_lost(&self, h: FlowHandle, side: Side) -> u64 {
        self.tr.conn(h).expect("conn").stack(side).recv.lost()
    }

    /// Reads a side's stream from `from` to its tail as data runs and gaps.
    fn chunks(&self, h: FlowHandle, side: Side, from: u64) -> Vec<Chunk> {
        let st = &self.tr.conn(h).expect("conn").stack(side).recv;
        let mut off = from;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match st.read(self.tr.pool(), off, &mut buf) {
                ReadChunk::NoData => break,
                ReadChunk::Data(n) => {
                    assert!(n > 0, "empty Data chunk at {off}");
                    out.push(Chunk::Data(buf[..n].to_vec()));
                    off += n as u64;
                }
                ReadChunk::Gap { offset, len } => {
                    assert_eq!(offset, off);
                    out.push(Chunk::Gap { offset, len });
                    off += len;
                }
                ReadChunk::Overrun { lost } => panic!("overrun of {lost} at {off}"),
            }
        }
        out
    }

    /// A side's stream from `from` to its tail, which must hold no gap.
    fn bytes(&self, h: FlowHandle, side: Side, from: u64) -> Vec<u8> {
        let mut v = Vec::new();
        for c in self.chunks(h, side, from) {
            match c {
                Chunk::Data(d) => v.extend_from_slice(&d),
                Chunk::Gap { offset, len } => panic!("unexpected gap {offset}+{len}"),
            }
        }
        v
    }
}

/// What reading a stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    Data(Vec<u8>),
    Gap { offset: u64, len: u64 },
}

/// One conversation: a client and a server endpoint.
#[derive(Debug, Clone, Copy)]
struct Conv {
    cli: Endpoint,
    svr: Endpoint,
}

impl Conv {
    fn new(cport: u16, sport: u16) -> Self {
        Conv {
            cli: ep([10, 0, 0, 1], cport),
            svr: ep([10, 0, 0, 2], sport),
        }
    }

    fn c2s(&self, sim: &mut Sim, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<Event> {
        sim.send(self.cli, self.svr, flags, seq, ack, data)
    }

    fn s2c(&self, sim: &mut Sim, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<Event> {
        sim.send(self.svr, self.cli, flags, seq, ack, data)
    }

    /// SYN, SYN/ACK, ACK with the default ISNs; returns the events and the flow handle.
    fn handshake(&self, sim: &mut Sim) -> (Vec<Event>, FlowHandle) {
        self.handshake_isn(sim, CISN, SISN)
    }

    fn handshake_isn(&self, sim: &mut Sim, cisn: u32, sisn: u32) -> (Vec<Event>, FlowHandle) {
        let mut ev = self.c2s(sim, SYN, cisn, 0, b"");
        ev.extend(self.s2c(sim, SYN | ACK, sisn, cisn.wrapping_add(1), b""));
        ev.extend(self.c2s(sim, ACK, cisn.wrapping_add(1), sisn.wrapping_add(1), b""));
        let h = ev[0].flow;
        assert!(ev.iter().all(|e| e.flow == h), "handshake split: {ev:?}");
        (ev, h)
    }

    /// A client-initiated FIN handshake after `c` client bytes and `s` server bytes.
    fn close(&self, sim: &mut Sim, cisn: u32, sisn: u32, c: u32, s: u32) -> Vec<Event> {
        let cfin = cisn.wrapping_add(1).wrapping_add(c);
        let sfin = sisn.wrapping_add(1).wrapping_add(s);
        let mut ev = self.c2s(sim, FIN | ACK, cfin, sfin, b"");
        ev.extend(self.s2c(sim, ACK, sfin, cfin.wrapping_add(1), b""));
        ev.extend(self.s2c(sim, FIN | ACK, sfin, cfin.wrapping_add(1), b""));
        ev.extend(self.c2s(sim, ACK, cfin.wrapping_add(1), sfin.wrapping_add(1), b""));
        ev
    }
}

fn ep(ip: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        addr: IpAddr::V4(Ipv4Addr::from(ip)),
        port,
    }
}

/// (side, hook, kind) of each event, in order.
fn shape(ev: &[Event]) -> Vec<(Option<Side>, Hook, EventKind)> {
    ev.iter().map(|e| (e.side, e.hook, e.kind)).collect()
}

/// The events of one kind (compared by discriminant).
fn of_kind(ev: &[Event], kind: EventKind) -> Vec<Event> {
    ev.iter()
        .filter(|e| std::mem::discriminant(&e.kind) == std::mem::discriminant(&kind))
        .copied()
        .collect()
}

/// (side, hook) of each event of one kind.
fn sides(ev: &[Event], kind: EventKind) -> Vec<(Option<Side>, Hook)> {
    of_kind(ev, kind).iter().map(|e| (e.side, e.hook)).collect()
}

/// (flow, side, reason) of each `CONN_END`.
fn ends(ev: &[Event]) -> Vec<(FlowHandle, Option<Side>, EndReason)> {
    ev.iter()
        .filter_map(|e| match e.kind {
            EventKind::ConnEnd { reason } => {
                assert_eq!(e.hook, Hook::Null, "CONN_END hook");
                Some((e.flow, e.side, reason))
            }
            _ => None,
        })
        .collect()
}

/// (side, hook, old, new) of each `TCP_STATE_CHANGE`.
fn state_changes(ev: &[Event]) -> Vec<(Side, Hook, TcpState, TcpState)> {
    ev.iter()
        .filter_map(|e| match e.kind {
            EventKind::StateChange { old, new } => Some((e.side.unwrap(), e.hook, old, new)),
            _ => None,
        })
        .collect()
}

/// (side, kind, offset, len) of each `ERROR`.
fn errors(ev: &[Event]) -> Vec<(Option<Side>, Hook, ErrorKind, u64, u64)> {
    ev.iter()
        .filter_map(|e| match e.kind {
            EventKind::Error { kind, offset, len } => Some((e.side, e.hook, kind, offset, len)),
            _ => None,
        })
        .collect()
}

fn both_ends(h: FlowHandle, reason: EndReason) -> Vec<(FlowHandle, Option<Side>, EndReason)> {
    vec![(h, Some(Side::Cli), reason), (h, Some(Side::Svr), reason)]
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt))
        .collect()
}

// 1. ------------------------------------------------------------------------------------------

#[test]
fn handshake_data_and_fin_close() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let linger = sim.tr.config().linger_ns;
    let mut all = Vec::new();

    // SYN: CONN_START for the client at SND, then for the server at RCV.
    let syn = cv.c2s(&mut sim, SYN, CISN, 0, b"");
    let h = syn[0].flow;
    assert_eq!(
        sides(&syn, EventKind::ConnStart),
        vec![(Some(Side::Cli), Hook::Snd), (Some(Side::Svr), Hook::Rcv)]
    );
    let cli_start = syn
        .iter()
        .position(|e| e.kind == EventKind::ConnStart && e.side == Some(Side::Cli))
        .unwrap();
    let svr_start = syn
        .iter()
        .position(|e| e.kind == EventKind::ConnStart && e.side == Some(Side::Svr))
        .unwrap();
    assert!(cli_start < svr_start);
    all.extend(syn);

    all.extend(cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b""));
    all.extend(cv.c2s(&mut sim, ACK, CISN + 1, SISN + 1, b""));

    {
        let c = sim.tr.conn(h).expect("conn");
        assert_eq!(c.client(), cv.cli);
        assert_eq!(c.server(), cv.svr);
        assert!(!c.guessed);
        assert_eq!(c.stack(Side::Cli).isn, Some(CISN));
        assert_eq!(c.stack(Side::Svr).isn, Some(SISN));
        assert_eq!(c.stack(Side::Cli).state, TcpState::Established);
        assert_eq!(c.stack(Side::Svr).state, TcpState::Established);
    }

    let req = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    let (c, s) = (req.len() as u32, resp.len() as u32);

    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, req);
    assert_eq!(
        sides(&ev, EventKind::ConnNewData),
        vec![(Some(Side::Svr), Hook::Null)]
    );
    let nd = of_kind(&ev, EventKind::ConnNewData);
    assert_eq!((nd[0].head, nd[0].tail), (0, u64::from(c)));
    all.extend(ev);

    let ev = cv.s2c(&mut sim, PSH | ACK, SISN + 1, CISN + 1 + c, resp);
    assert_eq!(
        sides(&ev, EventKind::ConnNewData),
        vec![(Some(Side::Cli), Hook::Null)]
    );
    all.extend(ev);
    all.extend(cv.c2s(&mut sim, ACK, CISN + 1 + c, SISN + 1 + s, b""));

    let ev = cv.close(&mut sim, CISN, SISN, c, s);
    assert!(ends(&ev).is_empty(), "CONN_END before the linger: {ev:?}");
    all.extend(ev);

    // Streams: SVR's holds the client's bytes, CLI's the server's. Read before the next call
    // (the rings go back to the pool once the connection has closed).
    assert_eq!(sim.bytes(h, Side::Svr, 0), req.to_vec());
    assert_eq!(sim.bytes(h, Side::Cli, 0), resp.to_vec());
    assert_eq!(sim.stream_lost(h, Side::Svr), 0);
    assert_eq!(sim.stream_lost(h, Side::Cli), 0);

    use TcpState::*;
    assert_eq!(
        state_changes(&all),
        vec![
            (Side::Cli, Hook::Snd, Closed, SynSent),
            (Side::Svr, Hook::Rcv, Listen, SynRcvd),
            (Side::Cli, Hook::Rcv, SynSent, Established),
            (Side::Svr, Hook::Rcv, SynRcvd, Established),
            (Side::Cli, Hook::Snd, Established, FinWait1),
            (Side::Svr, Hook::Rcv, Established, CloseWait),
            (Side::Cli, Hook::Rcv, FinWait1, FinWait2),
            (Side::Svr, Hook::Snd, CloseWait, LastAck),
            (Side::Cli, Hook::Rcv, FinWait2, TimeWait),
            (Side::Svr, Hook::Rcv, LastAck, Closed),
        ]
    );
    {
        let conn = sim.tr.conn(h).expect("conn");
        assert_eq!(conn.stack(Side::Cli).state, TimeWait);
        assert_eq!(conn.stack(Side::Svr).state, Closed);
        assert_eq!(conn.closed, Some(EndReason::Closed));
    }
    assert_eq!(of_kind(&all, EventKind::ConnStart).len(), 2);
    assert!(all.iter().all(|e| e.flow == h));

    // No CONN_END until the linger has passed; then both sides, client first.
    let last = sim.now;
    let ev = sim.advance_to(last + linger - 1);
    assert!(ev.is_empty(), "{ev:?}");
    assert!(sim.tr.conn(h).is_some());
    assert_eq!(sim.tr.live_conns(), 1);
    let ev = sim.advance_to(last + linger + 1);
    assert_eq!(ends(&ev), both_ends(h, EndReason::Closed));
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev.iter().all(|e| e.pkt_pos == u64::MAX));
    assert_eq!(sim.tr.live_conns(), 0);
    let ev = sim.advance_to(last + linger + 2);
    assert!(ev.is_empty());
    assert!(sim.tr.conn(h).is_none());

    assert_eq!(
        sim.stats(),
        TrackerStats {
            segments: 10,
            conns_created: 1,
            conns_closed: 1,
            payload_bytes: u64::from(c + s),
            ..TrackerStats::default()
        }
    );
}

// 2. ------------------------------------------------------------------------------------------

#[test]
fn pkt_in_sender_then_receiver() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);

    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"ping");
    assert_eq!(
        sides(&ev, EventKind::PktIn),
        vec![(Some(Side::Cli), Hook::Snd), (Some(Side::Svr), Hook::Rcv)]
    );
    assert_eq!(
        shape(&ev),
        vec![
            (Some(Side::Cli), Hook::Snd, EventKind::PktIn),
            (Some(Side::Svr), Hook::Rcv, EventKind::PktIn),
            (Some(Side::Svr), Hook::Null, EventKind::ConnNewData),
        ]
    );
    assert!(ev.iter().all(|e| e.flow == h && e.seq == CISN + 1));
    assert!(ev
        .iter()
        .all(|e| e.payload_len == 4 && e.tcp_flags == PSH | ACK));

    let ev = cv.s2c(&mut sim, PSH | ACK, SISN + 1, CISN + 5, b"pong!");
    assert_eq!(
        sides(&ev, EventKind::PktIn),
        vec![(Some(Side::Svr), Hook::Snd), (Some(Side::Cli), Hook::Rcv)]
    );
}

// 3. ------------------------------------------------------------------------------------------

#[test]
fn midstream_pickup_guesses_roles() {
    let mut sim = Sim::default_cfg();
    // The first packet goes from the high port to port 80.
    let cv = Conv::new(40000, 80);
    let first = b"GET / HTTP/1.1\r\n";
    let ev = cv.c2s(&mut sim, PSH | ACK, 5000, 9000, first);
    let h = ev[0].flow;
    assert_eq!(
        sides(&ev, EventKind::ConnStart),
        vec![(Some(Side::Cli), Hook::Snd), (Some(Side::Svr), Hook::Rcv)]
    );
    {
        let c = sim.tr.conn(h).expect("conn");
        assert_eq!(c.server().port, 80);
        assert_eq!(c.client().port, 40000);
        assert!(c.guessed);
        assert_eq!(c.stack(Side::Cli).state, TcpState::Established);
        assert_eq!(c.stack(Side::Svr).state, TcpState::Established);
        assert_eq!(c.stack(Side::Cli).isn, None);
        assert_eq!(c.stack(Side::Svr).isn, None);
    }
    assert!(state_changes(&ev).is_empty());
    // Offset 0 is the first sequence number seen.
    assert_eq!(sim.stream_tail(h, Side::Svr), first.len() as u64);
    assert_eq!(sim.bytes(h, Side::Svr, 0), first.to_vec());

    // The server's first bytes anchor the client side's stream the same way.
    let ev = cv.s2c(
        &mut sim,
        PSH | ACK,
        9000,
        5000 + first.len() as u32,
        b"HTTP/1.1",
    );
    assert_eq!(
        sides(&ev, EventKind::ConnNewData),
        vec![(Some(Side::Cli), Hook::Null)]
    );
    assert_eq!(sim.bytes(h, Side::Cli, 0), b"HTTP/1.1".to_vec());

    // A retransmission of older bytes (before offset 0) is ignored.
    let ev = cv.c2s(&mut sim, PSH | ACK, 4990, 9008, b"0123456789");
    assert!(of_kind(&ev, EventKind::ConnNewData).is_empty(), "{ev:?}");
    assert!(errors(&ev).is_empty(), "{ev:?}");
    assert_eq!(sim.stream_tail(h, Side::Svr), first.len() as u64);
    assert_eq!(sim.bytes(h, Side::Svr, 0), first.to_vec());

    assert_eq!(sim.stats().conns_created, 1);
    assert_eq!(sim.stats().conns_midstream, 1);
}

#[test]
fn midstream_pickup_from_the_server_side() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let ev = cv.s2c(&mut sim, PSH | ACK, 9000, 5000, b"response");
    let h = ev[0].flow;
    assert_eq!(
        sides(&ev, EventKind::ConnStart),
        vec![(Some(Side::Svr), Hook::Snd), (Some(Side::Cli), Hook::Rcv)]
    );
    let c = sim.tr.conn(h).expect("conn");
    assert_eq!(c.server(), cv.svr);
    assert_eq!(c.client(), cv.cli);
    assert!(c.guessed);
    assert_eq!(sim.bytes(h, Side::Cli, 0), b"response".to_vec());
}

// 4. ------------------------------------------------------------------------------------------

#[test]
fn syn_missed_syn_ack_seen() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let ev = cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b"");
    let h = ev[0].flow;
    assert_eq!(
        sides(&ev, EventKind::ConnStart),
        vec![(Some(Side::Svr), Hook::Snd)]
    );
    {
        let c = sim.tr.conn(h).expect("conn");
        assert_eq!(c.client(), cv.cli, "client = receiver of the SYN/ACK");
        assert_eq!(c.server(), cv.svr);
        assert!(!c.guessed);
        assert_eq!(c.stack(Side::Svr).isn, Some(SISN));
        assert_eq!(c.stack(Side::Cli).isn, None);
        assert_eq!(c.stack(Side::Svr).state, TcpState::SynRcvd);
    }
    assert_eq!(sim.stats().conns_midstream, 0);

    // The client's data is anchored at the SYN/ACK's ack: offset 0 is CISN + 1.
    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"abc");
    assert_eq!(
        sides(&ev, EventKind::ConnNewData),
        vec![(Some(Side::Svr), Hook::Null)]
    );
    assert!(ev.iter().all(|e| e.flow == h));
    assert_eq!(sim.stream_tail(h, Side::Svr), 3);
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"abc".to_vec());
    // ... and the server's at its ISN + 1.
    cv.s2c(&mut sim, PSH | ACK, SISN + 1, CISN + 4, b"xyz!");
    assert_eq!(sim.bytes(h, Side::Cli, 0), b"xyz!".to_vec());
    assert_eq!(
        sim.tr.conn(h).unwrap().stack(Side::Svr).state,
        TcpState::Established
    );
    assert_eq!(sim.stats().conns_created, 1);
}

#[test]
fn syn_missed_client_data_before_its_ack_offset_is_anchored_at_syn_ack_ack() {
    // The client's first data segment is out of order (its second segment arrives first):
    // offsets still count from the SYN/ACK's ack.
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let h = cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b"")[0].flow;
    cv.c2s(&mut sim, PSH | ACK, CISN + 4, SISN + 1, b"def");
    assert_eq!(sim.stream_tail(h, Side::Svr), 0);
    cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"abc");
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"abcdef".to_vec());
}

// 5. ------------------------------------------------------------------------------------------

#[test]
fn late_syn_stays_one_connection() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let mut ev = cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b"");
    let h = ev[0].flow;
    ev.extend(cv.c2s(&mut sim, SYN, CISN, 0, b""));
    ev.extend(cv.c2s(&mut sim, ACK, CISN + 1, SISN + 1, b""));
    ev.extend(cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"data"));
    assert!(ev.iter().all(|e| e.flow == h), "{ev:?}");
    assert!(ends(&ev).is_empty());
    assert_eq!(sim.stats().conns_created, 1);
    assert_eq!(sim.tr.live_conns(), 1);
    let c = sim.tr.conn(h).expect("conn");
    assert_eq!(c.client(), cv.cli);
    assert_eq!(c.stack(Side::Cli).isn, Some(CISN));
    assert_eq!(c.stack(Side::Svr).isn, Some(SISN));
    assert_eq!(c.stack(Side::Cli).state, TcpState::Established);
    assert_eq!(c.stack(Side::Svr).state, TcpState::Established);
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"data".to_vec());
}

#[test]
fn retransmitted_syn_stays_one_connection() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let mut ev = cv.c2s(&mut sim, SYN, CISN, 0, b"");
    let h = ev[0].flow;
    ev.extend(cv.c2s(&mut sim, SYN, CISN, 0, b""));
    ev.extend(cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b""));
    ev.extend(cv.c2s(&mut sim, SYN, CISN, 0, b""));
    ev.extend(cv.c2s(&mut sim, ACK, CISN + 1, SISN + 1, b""));
    assert!(ev.iter().all(|e| e.flow == h), "{ev:?}");
    assert_eq!(sim.stats().conns_created, 1);
    assert_eq!(of_kind(&ev, EventKind::ConnStart).len(), 2);
}

// 6. ------------------------------------------------------------------------------------------

#[test]
fn data_after_reset_is_kept_during_linger() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let linger = sim.tr.config().linger_ns;
    let (_, h) = cv.handshake(&mut sim);
    cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"before");

    let ev = cv.s2c(&mut sim, RST | ACK, SISN + 1, CISN + 7, b"");
    assert!(ends(&ev).is_empty(), "{ev:?}");
    assert_eq!(sim.tr.conn(h).unwrap().closed, Some(EndReason::Reset));
    assert_eq!(
        state_changes(&ev),
        vec![
            (
                Side::Svr,
                Hook::Snd,
                TcpState::Established,
                TcpState::Closed
            ),
            (
                Side::Cli,
                Hook::Rcv,
                TcpState::Established,
                TcpState::Closed
            ),
        ]
    );

    // Data the client sent before it saw the reset.
    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 7, SISN + 1, b"after reset");
    assert!(ev.iter().all(|e| e.flow == h));
    assert_eq!(
        sides(&ev, EventKind::ConnNewData),
        vec![(Some(Side::Svr), Hook::Null)]
    );
    assert!(ends(&ev).is_empty());
    assert_eq!(sim.stream_tail(h, Side::Svr), 6 + 11);
    assert_eq!(sim.bytes(h, Side::Svr, 6), b"after reset".to_vec());
    assert_eq!(sim.stats().late_segments, 1);
    assert_eq!(sim.stats().payload_bytes, 17);

    // CONN_END { Reset } only after the linger, counted from the late segment.
    let last = sim.now;
    assert!(sim.advance_to(last + linger - 1).is_empty());
    let ev = sim.advance_to(last + linger + 1);
    assert_eq!(ends(&ev), both_ends(h, EndReason::Reset));
    assert_eq!(sim.stats().conns_closed, 1);
}

// 7. ------------------------------------------------------------------------------------------

#[test]
fn new_syn_on_closed_tuple_starts_a_new_connection() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, old) = cv.handshake(&mut sim);
    cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"one");
    cv.close(&mut sim, CISN, SISN, 3, 0);
    assert_eq!(sim.tr.conn(old).unwrap().closed, Some(EndReason::Closed));

    let cisn2 = CISN + 100_000;
    let ev = cv.c2s(&mut sim, SYN, cisn2, 0, b"");
    assert_eq!(ends(&ev), both_ends(old, EndReason::Reused));
    // The old connection's CONN_END comes before anything of the new one.
    assert!(matches!(ev[0].kind, EventKind::ConnEnd { .. }));
    assert!(matches!(ev[1].kind, EventKind::ConnEnd { .. }));
    let new = ev[2].flow;
    assert_ne!(new, old);
    assert!(ev[2..].iter().all(|e| e.flow == new));
    assert_eq!(
        sides(&ev[2..], EventKind::ConnStart),
        vec![(Some(Side::Cli), Hook::Snd), (Some(Side::Svr), Hook::Rcv)]
    );
    assert_eq!(sim.tr.conn(new).unwrap().stack(Side::Cli).isn, Some(cisn2));

    let ev = cv.s2c(&mut sim, SYN | ACK, SISN + 5, cisn2 + 1, b"");
    assert!(ev.iter().all(|e| e.flow == new));
    assert!(sim.tr.conn(old).is_none());
    assert!(sim.tr.conn(new).is_some());
    assert_eq!(sim.tr.live_conns(), 1);
    assert_eq!(sim.stats().conns_created, 2);
}

// 8. ------------------------------------------------------------------------------------------

#[test]
fn idle_timeout() {
    let mut sim = Sim::new(TrackerConfig {
        idle_timeout_ns: SEC,
        ..TrackerConfig::default()
    });
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);
    let last = sim.now;
    assert!(sim.advance_to(last + SEC - 1).is_empty());
    let ev = sim.advance_to(last + SEC + 1);
    assert_eq!(
        ev.iter()
            .map(|e| (e.flow, e.side, e.hook, e.kind))
            .collect::<Vec<_>>(),
        vec![
            (h, Some(Side::Cli), Hook::Null, EventKind::Timeout),
            (h, Some(Side::Svr), Hook::Null, EventKind::Timeout),
            (
                h,
                Some(Side::Cli),
                Hook::Null,
                EventKind::ConnEnd {
                    reason: EndReason::Timeout
                }
            ),
            (
                h,
                Some(Side::Svr),
                Hook::Null,
                EventKind::ConnEnd {
                    reason: EndReason::Timeout
                }
            ),
        ]
    );
    assert_eq!(sim.stats().conns_timed_out, 1);
    assert_eq!(sim.tr.live_conns(), 0);
    assert!(sim.advance_to(last + 3 * SEC).is_empty());
}

// 9. ------------------------------------------------------------------------------------------

#[test]
fn eviction_of_least_recently_active() {
    let mut sim = Sim::new(TrackerConfig {
        max_flows: 2,
        ..TrackerConfig::default()
    });
    let a = Conv::new(40001, 80);
    let b = Conv::new(40002, 80);
    let c = Conv::new(40003, 80);
    let d = Conv::new(40004, 80);
    let (_, ha) = a.handshake(&mut sim);
    let (_, hb) = b.handshake(&mut sim);

    // A third connection evicts A, the least recently active.
    let ev = c.c2s(&mut sim, SYN, CISN, 0, b"");
    assert_eq!(ends(&ev), both_ends(ha, EndReason::Evicted));
    assert_eq!(sim.stats().conns_evicted, 1);
    assert_eq!(sim.tr.live_conns(), 2);
    let hc = ev.last().unwrap().flow;
    assert_ne!(hc, ha);

    // Touch B: now C is the least recently active, and D evicts it.
    b.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"keep me");
    let ev = d.c2s(&mut sim, SYN, CISN, 0, b"");
    assert_eq!(ends(&ev), both_ends(hc, EndReason::Evicted));
    assert_eq!(sim.stats().conns_evicted, 2);
    assert_eq!(sim.tr.live_conns(), 2);
    assert_eq!(sim.bytes(hb, Side::Svr, 0), b"keep me".to_vec());
    let ev = b.c2s(&mut sim, ACK, CISN + 8, SISN + 1, b"");
    assert!(ev.iter().all(|e| e.flow == hb));
}

#[test]
fn eviction_single_step() {
    let mut sim = Sim::new(TrackerConfig {
        max_flows: 2,
        ..TrackerConfig::default()
    });
    let a = Conv::new(40001, 80);
    let b = Conv::new(40002, 80);
    let c = Conv::new(40003, 80);
    let (_, ha) = a.handshake(&mut sim);
    let (_, hb) = b.handshake(&mut sim);
    // Touch A: B becomes the least recently active.
    a.c2s(&mut sim, ACK, CISN + 1, SISN + 1, b"");
    let ev = c.c2s(&mut sim, SYN, CISN, 0, b"");
    assert_eq!(ends(&ev), both_ends(hb, EndReason::Evicted));
    assert_eq!(sim.stats().conns_evicted, 1);
    assert!(sim.tr.conn(ha).is_some());
}

// 10. -----------------------------------------------------------------------------------------

#[test]
fn acknowledged_hole_becomes_a_gap() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);
    let a = [b'a'; 10];
    let c = [b'c'; 10];
    let d = [b'd'; 10];

    cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, &a);
    // B (offsets 10..20) is lost; C arrives out of order and is held back.
    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 21, SISN + 1, &c);
    assert!(of_kind(&ev, EventKind::ConnNewData).is_empty(), "{ev:?}");
    assert_eq!(sim.stream_tail(h, Side::Svr), 10);

    // The server acknowledges 30: the hole is skipped.
    let ev = cv.s2c(&mut sim, ACK, SISN + 1, CISN + 31, b"");
    assert_eq!(
        errors(&ev),
        vec![(Some(Side::Svr), Hook::Snd, ErrorKind::Gap, 10, 10)]
    );
    assert_eq!(
        sides(&ev, EventKind::ConnNewData),
        vec![(Some(Side::Svr), Hook::Null)]
    );
    assert_eq!(sim.stream_tail(h, Side::Svr), 30);
    assert_eq!(sim.stream_lost(h, Side::Svr), 10);
    assert_eq!(
        sim.chunks(h, Side::Svr, 0),
        vec![
            Chunk::Data(a.to_vec()),
            Chunk::Gap {
                offset: 10,
                len: 10
            },
            Chunk::Data(c.to_vec()),
        ]
    );
    assert_eq!(sim.stats().gap_bytes, 10);

    // An ACK beyond the end with nothing held after it skips nothing.
    let ev = cv.s2c(&mut sim, ACK, SISN + 1, CISN + 41, b"");
    assert!(errors(&ev).is_empty(), "{ev:?}");
    assert!(of_kind(&ev, EventKind::ConnNewData).is_empty(), "{ev:?}");
    assert_eq!(sim.stream_tail(h, Side::Svr), 30);
    assert_eq!(sim.stream_lost(h, Side::Svr), 10);

    // Its bytes may still come (the ACK was captured first): they extend the stream.
    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 31, SISN + 1, &d);
    assert!(errors(&ev).is_empty(), "{ev:?}");
    assert_eq!(sim.stream_tail(h, Side::Svr), 40);
    assert_eq!(sim.stream_lost(h, Side::Svr), 10);
    assert_eq!(sim.bytes(h, Side::Svr, 30), d.to_vec());
    assert_eq!(sim.stats().gap_bytes, 10);
}

#[test]
fn unacknowledged_hole_holds_data_back() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);
    cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, &[1; 10]);
    cv.c2s(&mut sim, PSH | ACK, CISN + 21, SISN + 1, &[3; 10]);
    // An ACK that covers only the first segment skips nothing.
    let ev = cv.s2c(&mut sim, ACK, SISN + 1, CISN + 11, b"");
    assert!(errors(&ev).is_empty());
    assert_eq!(sim.stream_tail(h, Side::Svr), 10);
    // The missing bytes arrive: the held fragment joins.
    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 11, SISN + 1, &[2; 10]);
    assert_eq!(
        of_kind(&ev, EventKind::ConnNewData)[0].tail,
        30,
        "NEW_DATA snapshot tail"
    );
    let mut want = vec![1; 10];
    want.extend([2; 10]);
    want.extend([3; 10]);
    assert_eq!(sim.bytes(h, Side::Svr, 0), want);
    assert_eq!(sim.stream_lost(h, Side::Svr), 0);
}

// 11. -----------------------------------------------------------------------------------------

#[test]
fn retransmission_and_conflict() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);

    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"0123456789");
    assert_eq!(of_kind(&ev, EventKind::ConnNewData).len(), 1);
    assert!(of_kind(&ev, EventKind::Rexmit).is_empty());

    // The same segment again.
    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"0123456789");
    assert_eq!(
        sides(&ev, EventKind::Rexmit),
        vec![(Some(Side::Svr), Hook::Rcv)]
    );
    assert!(of_kind(&ev, EventKind::ConnNewData).is_empty(), "{ev:?}");
    assert!(errors(&ev).is_empty(), "{ev:?}");
    assert_eq!(sim.stats().rexmit_bytes, 10);

    // A retransmission with different bytes (offsets 2..5 differ).
    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"01XYZ56789");
    assert_eq!(
        sides(&ev, EventKind::Rexmit),
        vec![(Some(Side::Svr), Hook::Rcv)]
    );
    assert_eq!(
        errors(&ev),
        vec![(Some(Side::Svr), Hook::Rcv, ErrorKind::Conflict, 2, 3)]
    );
    assert!(of_kind(&ev, EventKind::ConnNewData).is_empty(), "{ev:?}");
    // The first copy is kept.
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"0123456789".to_vec());
    assert_eq!(sim.stats().conflicts, 1);
    assert_eq!(sim.stats().payload_bytes, 10);

    // A retransmission overlapping the tail: the old part is a REXMIT, the new part data.
    let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 6, SISN + 1, b"56789abc");
    assert_eq!(of_kind(&ev, EventKind::Rexmit).len(), 1);
    assert_eq!(of_kind(&ev, EventKind::ConnNewData).len(), 1);
    assert!(errors(&ev).is_empty());
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"0123456789abc".to_vec());
}

#[test]
fn overlap_policy_decides_held_data_and_conflicts_raise_errors_under_every_policy() {
    for policy in OverlapPolicy::ALL {
        let mut sim = Sim::new(TrackerConfig {
            overlap: policy,
            ..TrackerConfig::default()
        });
        let cv = Conv::new(40000, 80);
        let (_, h) = cv.handshake(&mut sim);
        // Out of order: offsets 4..8, then the segment that fills the hole and overlaps two
        // of them with other bytes.
        let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 5, SISN + 1, b"WXYZ");
        assert!(errors(&ev).is_empty(), "{policy:?}: {ev:?}");
        let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"abcdef");
        assert_eq!(
            errors(&ev),
            vec![(Some(Side::Svr), Hook::Rcv, ErrorKind::Conflict, 4, 2)],
            "{policy:?}"
        );
        let want: &[u8] = match policy {
            OverlapPolicy::First => b"abcdWXYZ",
            _ => b"abcdefYZ",
        };
        assert_eq!(sim.bytes(h, Side::Svr, 0), want, "{policy:?}");
        // In order now: a differing copy is reported and changes nothing, under any policy.
        let ev = cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"ABC");
        assert_eq!(
            errors(&ev),
            vec![(Some(Side::Svr), Hook::Rcv, ErrorKind::Conflict, 0, 3)],
            "{policy:?}"
        );
        assert_eq!(sim.bytes(h, Side::Svr, 0), want, "{policy:?}");
        assert_eq!(sim.stats().conflicts, 2);
    }
}

// 12. -----------------------------------------------------------------------------------------

#[test]
fn event_mask_conn_end_only() {
    let mut sim = Sim::new(TrackerConfig {
        events: EventMask::CONN_END,
        ..TrackerConfig::default()
    });
    let linger = sim.tr.config().linger_ns;
    let cv = Conv::new(40000, 80);
    let mut all = Vec::new();
    let ev = cv.c2s(&mut sim, SYN, CISN, 0, b"");
    assert!(ev.is_empty(), "{ev:?}");
    all.extend(cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b""));
    all.extend(cv.c2s(&mut sim, ACK, CISN + 1, SISN + 1, b""));
    all.extend(cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"hello"));
    all.extend(cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"hellx"));
    all.extend(cv.c2s(&mut sim, PSH | ACK, CISN + 21, SISN + 1, b"later"));
    all.extend(cv.s2c(&mut sim, ACK, SISN + 1, CISN + 26, b""));
    all.extend(cv.close(&mut sim, CISN, SISN, 25, 0));
    assert!(all.is_empty(), "{all:?}");
    let ev = sim.advance_to(sim.now + linger + 1);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev.iter().all(|e| e.kind
        == EventKind::ConnEnd {
            reason: EndReason::Closed
        }));
    assert_eq!(ev[0].side, Some(Side::Cli));
    assert_eq!(ev[1].side, Some(Side::Svr));
    // Orphans are masked too.
    let mut out = Vec::new();
    sim.tr.orphan_packet(sim.now + 1, 99, &mut out);
    assert!(out.is_empty());
}

// 13. -----------------------------------------------------------------------------------------

#[test]
fn sequence_wrap() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let isn = u32::MAX - 5;
    let (_, h) = cv.handshake_isn(&mut sim, isn, isn);
    let cdata = pattern(100, 1);
    let sdata = pattern(100, 101);
    for (i, chunk) in cdata.chunks(10).enumerate() {
        let off = (i * 10) as u32;
        let ev = cv.c2s(
            &mut sim,
            PSH | ACK,
            isn.wrapping_add(1).wrapping_add(off),
            isn.wrapping_add(1),
            chunk,
        );
        assert_eq!(of_kind(&ev, EventKind::ConnNewData).len(), 1, "{ev:?}");
    }
    for (i, chunk) in sdata.chunks(10).enumerate() {
        let off = (i * 10) as u32;
        cv.s2c(
            &mut sim,
            PSH | ACK,
            isn.wrapping_add(1).wrapping_add(off),
            isn.wrapping_add(101),
            chunk,
        );
    }
    let ev = cv.close(&mut sim, isn, isn, 100, 100);
    assert!(errors(&ev).is_empty(), "{ev:?}");
    assert_eq!(sim.stream_tail(h, Side::Svr), 100);
    assert_eq!(sim.stream_tail(h, Side::Cli), 100);
    assert_eq!(sim.bytes(h, Side::Svr, 0), cdata);
    assert_eq!(sim.bytes(h, Side::Cli, 0), sdata);
    assert_eq!(sim.stream_lost(h, Side::Svr), 0);
    assert_eq!(sim.stream_lost(h, Side::Cli), 0);
    let c = sim.tr.conn(h).unwrap();
    assert_eq!(c.stack(Side::Cli).state, TcpState::TimeWait);
    assert_eq!(c.stack(Side::Svr).state, TcpState::Closed);
    assert_eq!(c.closed, Some(EndReason::Closed));
    assert_eq!(sim.stats().payload_bytes, 200);
    assert_eq!(sim.stats().gap_bytes, 0);
}

// 14. -----------------------------------------------------------------------------------------

#[test]
fn orphans() {
    let mut sim = Sim::default_cfg();
    let mut out = Vec::new();
    sim.tr.orphan_packet(5 * SEC, 42, &mut out);
    assert_eq!(out.len(), 1);
    let e = out[0];
    assert_eq!(e.kind, EventKind::Orphan);
    assert_eq!(e.side, None);
    assert_eq!(e.hook, Hook::Null);
    assert_eq!(e.flow, NO_FLOW);
    assert_eq!(e.pkt_pos, 42);
    assert_eq!(e.ts_ns, 5 * SEC);

    let cv = Conv::new(40000, 80);
    sim.now = 6 * SEC;
    let ev = cv.c2s(&mut sim, RST | ACK, 1234, 5678, b"");
    assert_eq!(shape(&ev), vec![(None, Hook::Null, EventKind::Orphan)]);
    assert_eq!(ev[0].flow, NO_FLOW);
    assert_eq!(ev[0].seq, 1234);
    assert_eq!(ev[0].tcp_flags, RST | ACK);
    assert_eq!(sim.tr.live_conns(), 0);
    assert_eq!(sim.stats().conns_created, 0);
    assert_eq!(sim.stats().orphan_segments, 1);
    // A bare RST too.
    let ev = cv.s2c(&mut sim, RST, 1, 0, b"");
    assert_eq!(shape(&ev), vec![(None, Hook::Null, EventKind::Orphan)]);
    assert_eq!(sim.tr.live_conns(), 0);
}

#[test]
fn midstream_off_makes_orphans() {
    let mut sim = Sim::new(TrackerConfig {
        track_midstream: false,
        ..TrackerConfig::default()
    });
    let cv = Conv::new(40000, 80);
    let ev = cv.c2s(&mut sim, PSH | ACK, 5000, 9000, b"data");
    assert_eq!(shape(&ev), vec![(None, Hook::Null, EventKind::Orphan)]);
    assert_eq!(sim.tr.live_conns(), 0);
    // A handshake is still tracked.
    let (_, h) = cv.handshake(&mut sim);
    assert!(sim.tr.conn(h).is_some());
    assert_eq!(sim.tr.live_conns(), 1);
}

// 15. -----------------------------------------------------------------------------------------

#[test]
fn finish_ends_everything() {
    let mut sim = Sim::default_cfg();
    let open = Conv::new(40001, 80);
    let closed = Conv::new(40002, 80);
    let (_, ho) = open.handshake(&mut sim);
    open.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"still open");
    let (_, hc) = closed.handshake(&mut sim);
    closed.close(&mut sim, CISN, SISN, 0, 0);
    assert_eq!(sim.tr.live_conns(), 2);

    let ev = sim.finish();
    let all = ends(&ev);
    assert_eq!(all.len(), 4, "{ev:?}");
    let of = |h: FlowHandle| -> Vec<_> { all.iter().copied().filter(|e| e.0 == h).collect() };
    assert_eq!(of(ho), both_ends(ho, EndReason::EndOfInput));
    assert_eq!(of(hc), both_ends(hc, EndReason::Closed));
    assert_eq!(ev.len(), 4);
    assert_eq!(sim.stats().conns_open_at_end, 1);
    assert_eq!(sim.tr.live_conns(), 0);
    // Nothing ends twice.
    assert!(sim.finish().is_empty());
}

// Beyond the list: linger and timeout ordering between connections. ----------------------------

/// A closed connection ends after its linger even when an older connection is still open and
/// within its idle timeout (docs: "It then lingers for 5 s of capture time ... `CONN_END` is
/// raised when the linger ends").
#[test]
fn linger_ends_behind_an_older_open_connection() {
    let mut sim = Sim::default_cfg();
    let linger = sim.tr.config().linger_ns;
    let open = Conv::new(40001, 80);
    let closed = Conv::new(40002, 80);
    let (_, ho) = open.handshake(&mut sim);
    let (_, hc) = closed.handshake(&mut sim);
    closed.close(&mut sim, CISN, SISN, 0, 0);
    let last = sim.now;
    let ev = sim.advance_to(last + linger + 1);
    assert_eq!(
        ends(&ev),
        both_ends(hc, EndReason::Closed),
        "the closed connection must end after its linger"
    );
    assert!(sim.tr.conn(ho).is_some());
}

/// The idle timeout counts from each connection's own last packet.
#[test]
fn idle_timeout_is_per_connection() {
    let mut sim = Sim::new(TrackerConfig {
        idle_timeout_ns: 10 * SEC,
        ..TrackerConfig::default()
    });
    let a = Conv::new(40001, 80);
    let b = Conv::new(40002, 80);
    let (_, ha) = a.handshake(&mut sim);
    sim.now += 5 * SEC;
    let (_, hb) = b.handshake(&mut sim);
    let b_last = sim.now;
    let ev = sim.advance_to(b_last + 6 * SEC);
    assert_eq!(ends(&ev), both_ends(ha, EndReason::Timeout));
    let ev = sim.advance_to(b_last + 10 * SEC + 1);
    assert_eq!(ends(&ev), both_ends(hb, EndReason::Timeout));
    assert_eq!(sim.stats().conns_timed_out, 2);
}

/// A SYN captured after its SYN/ACK *and* after the client's ACK (capture reordering between
/// two links) still belongs to the same connection (docs: "A SYN that arrives after its own
/// SYN/ACK (capture reordering), or that retransmits, belongs to the same connection").
#[test]
fn syn_after_syn_ack_and_ack_stays_one_connection() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let mut ev = cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b"");
    let h = ev[0].flow;
    ev.extend(cv.c2s(&mut sim, ACK, CISN + 1, SISN + 1, b""));
    ev.extend(cv.c2s(&mut sim, SYN, CISN, 0, b""));
    ev.extend(cv.c2s(&mut sim, PSH | ACK, CISN + 1, SISN + 1, b"data"));
    assert!(ends(&ev).is_empty(), "{:?}", ends(&ev));
    assert!(ev.iter().all(|e| e.flow == h), "{ev:?}");
    assert_eq!(sim.stats().conns_created, 1);
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"data".to_vec());
}

/// Timeouts run on the latest capture time seen, never on a time that went backwards: a
/// connection whose packets come after the capture's clock jumped ahead counts its idle time
/// from the jumped clock, so it ends at one well-defined point whatever else the tracker
/// holds (and so several workers, each holding some connections, end each one where a single
/// worker does).
#[test]
fn timeouts_run_on_the_latest_time_seen() {
    let mut sim = Sim::new(TrackerConfig {
        idle_timeout_ns: 10 * SEC,
        ..TrackerConfig::default()
    });
    let (a, c) = (Conv::new(40001, 80), Conv::new(40003, 80));
    let t0 = sim.now;
    let (_, ha) = a.handshake(&mut sim);
    // The clock jumps 100 s ahead: a, idle since t0, ends there.
    let ev = sim.advance_to(t0 + 100 * SEC);
    assert_eq!(ends(&ev), both_ends(ha, EndReason::Timeout));
    // Then the capture's time goes back: c's packets say t0 + 1 s, but the tracker's clock
    // stays at the jump, so c is idle from there, not from t0 + 1 s.
    sim.now = t0 + SEC;
    let (_, hc) = c.handshake(&mut sim);
    let ev = sim.advance_to(t0 + 109 * SEC);
    assert!(
        ends(&ev).is_empty(),
        "c is not idle 10 s yet: {:?}",
        ends(&ev)
    );
    let ev = sim.advance_to(t0 + 110 * SEC + 1);
    assert_eq!(ends(&ev), both_ends(hc, EndReason::Timeout));
}

// Edge cases: one documented behaviour each (docs/REASSEMBLY.md, "Edge cases"). -------------

#[test]
fn syn_carrying_data_is_stored_at_offset_zero() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    // A SYN with data (TCP Fast Open): its bytes are the stream's first.
    let ev = cv.c2s(&mut sim, SYN, CISN, 0, b"early");
    let h = ev[0].flow;
    assert_eq!(
        sides(&ev, EventKind::ConnNewData),
        vec![(Some(Side::Svr), Hook::Null)]
    );
    cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 6, b"");
    cv.c2s(&mut sim, ACK | PSH, CISN + 6, SISN + 1, b" and late");
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"early and late".to_vec());
    // A retransmitted SYN with the same data is a retransmission, not new bytes.
    let ev = cv.c2s(&mut sim, SYN, CISN, 0, b"early");
    assert_eq!(
        sides(&ev, EventKind::Rexmit),
        vec![(Some(Side::Svr), Hook::Rcv)]
    );
    assert!(errors(&ev).is_empty(), "{ev:?}");
    assert_eq!(sim.stats().conns_created, 1);
}

#[test]
fn retransmitted_syn_syn_ack_and_fin_raise_rexmit() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let ev = cv.c2s(&mut sim, SYN, CISN, 0, b"");
    assert!(of_kind(&ev, EventKind::Rexmit).is_empty());
    let ev = cv.c2s(&mut sim, SYN, CISN, 0, b"");
    assert_eq!(
        sides(&ev, EventKind::Rexmit),
        vec![(Some(Side::Svr), Hook::Rcv)]
    );
    let ev = cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b"");
    assert!(of_kind(&ev, EventKind::Rexmit).is_empty());
    let ev = cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b"");
    assert_eq!(
        sides(&ev, EventKind::Rexmit),
        vec![(Some(Side::Cli), Hook::Rcv)]
    );
    let h = ev[0].flow;
    cv.c2s(&mut sim, ACK, CISN + 1, SISN + 1, b"");
    // A FIN carrying data, then the same FIN again.
    let ev = cv.c2s(&mut sim, FIN | ACK | PSH, CISN + 1, SISN + 1, b"last");
    assert!(of_kind(&ev, EventKind::Rexmit).is_empty());
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"last".to_vec());
    assert_eq!(
        sim.tr.conn(h).unwrap().stack(Side::Cli).state,
        TcpState::FinWait1
    );
    let ev = cv.c2s(&mut sim, FIN | ACK | PSH, CISN + 1, SISN + 1, b"last");
    // One REXMIT for the segment, though both its bytes and its FIN were seen before.
    assert_eq!(
        sides(&ev, EventKind::Rexmit),
        vec![(Some(Side::Svr), Hook::Rcv)]
    );
    let ev = cv.c2s(&mut sim, FIN | ACK, CISN + 5, SISN + 1, b"");
    assert_eq!(of_kind(&ev, EventKind::Rexmit).len(), 1);
    assert_eq!(sim.stats().conns_created, 1);
}

#[test]
fn a_second_syn_ack_with_another_isn() {
    // Before the server sent data, the client's ACK decides between two SYN/ACK ISNs: here it
    // takes the second.
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    cv.c2s(&mut sim, SYN, CISN, 0, b"");
    let ev = cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b"");
    let h = ev[0].flow;
    cv.s2c(&mut sim, SYN | ACK, 5_000_000, CISN + 1, b"");
    cv.c2s(&mut sim, ACK, CISN + 1, 5_000_001, b"");
    cv.s2c(&mut sim, ACK | PSH, 5_000_001, CISN + 1, b"hello");
    assert_eq!(sim.bytes(h, Side::Cli, 0), b"hello".to_vec());
    assert_eq!(
        sim.tr.conn(h).unwrap().stack(Side::Svr).isn,
        Some(5_000_000)
    );

    // Here it takes the first (as in ndpi's KakaoTalk captures): the ISN goes back to it.
    let mut sim = Sim::default_cfg();
    cv.c2s(&mut sim, SYN, CISN, 0, b"");
    let ev = cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b"");
    let h = ev[0].flow;
    cv.s2c(&mut sim, SYN | ACK, 5_000_000, CISN + 1, b"");
    assert_eq!(
        sim.tr.conn(h).unwrap().stack(Side::Svr).isn,
        Some(5_000_000)
    );
    cv.c2s(&mut sim, ACK, CISN + 1, SISN + 1, b"");
    cv.s2c(&mut sim, ACK | PSH, SISN + 1, CISN + 1, b"hello");
    assert_eq!(sim.bytes(h, Side::Cli, 0), b"hello".to_vec());
    assert_eq!(sim.tr.conn(h).unwrap().stack(Side::Svr).isn, Some(SISN));

    // Once the server has sent data, the first numbering stays: the second SYN/ACK neither
    // renumbers the stream nor replaces the ISN, and data continues where it was.
    let mut sim = Sim::default_cfg();
    let (_, h) = cv.handshake(&mut sim);
    cv.s2c(&mut sim, ACK | PSH, SISN + 1, CISN + 1, b"abc");
    let ev = cv.s2c(&mut sim, SYN | ACK, 9_000_000, CISN + 1, b"");
    assert!(ends(&ev).is_empty());
    cv.s2c(&mut sim, ACK | PSH, SISN + 4, CISN + 1, b"def");
    assert_eq!(sim.bytes(h, Side::Cli, 0), b"abcdef".to_vec());
    assert_eq!(sim.tr.conn(h).unwrap().stack(Side::Svr).isn, Some(SISN));
    assert_eq!(sim.stats().conns_created, 1);
}

#[test]
fn data_carried_by_a_reset_is_stored() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);
    cv.s2c(&mut sim, ACK | PSH, SISN + 1, CISN + 1, b"abc");
    let ev = cv.s2c(&mut sim, RST | ACK, SISN + 4, CISN + 1, b"bye");
    assert_eq!(
        sides(&ev, EventKind::ConnNewData),
        vec![(Some(Side::Cli), Hook::Null)]
    );
    assert_eq!(sim.bytes(h, Side::Cli, 0), b"abcbye".to_vec());
    assert_eq!(sim.tr.conn(h).unwrap().closed, Some(EndReason::Reset));
}

#[test]
fn urgent_data_stays_in_the_stream() {
    const URG: u8 = 0x20;
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 23);
    let (_, h) = cv.handshake(&mut sim);
    cv.c2s(&mut sim, ACK | PSH, CISN + 1, SISN + 1, b"ls");
    let ev = cv.c2s(
        &mut sim,
        ACK | PSH | URG,
        CISN + 3,
        SISN + 1,
        b"\xff\xf4\xff\xf2",
    );
    assert!(errors(&ev).is_empty());
    cv.c2s(&mut sim, ACK | PSH, CISN + 7, SISN + 1, b"\r\n");
    assert_eq!(
        sim.bytes(h, Side::Svr, 0),
        b"ls\xff\xf4\xff\xf2\r\n".to_vec()
    );
}

#[test]
fn simultaneous_open_is_one_connection() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 40001);
    let ev = cv.c2s(&mut sim, SYN, CISN, 0, b"");
    let h = ev[0].flow;
    cv.s2c(&mut sim, SYN, SISN, 0, b"");
    cv.c2s(&mut sim, SYN | ACK, CISN, SISN + 1, b"");
    cv.s2c(&mut sim, SYN | ACK, SISN, CISN + 1, b"");
    cv.c2s(&mut sim, ACK | PSH, CISN + 1, SISN + 1, b"from a");
    cv.s2c(&mut sim, ACK | PSH, SISN + 1, CISN + 7, b"from b");
    let c = sim.tr.conn(h).expect("one connection");
    // The first SYN's sender is the client.
    assert_eq!(c.client().port, 40000);
    assert!(!c.guessed);
    assert_eq!(c.stack(Side::Cli).isn, Some(CISN));
    assert_eq!(c.stack(Side::Svr).isn, Some(SISN));
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"from a".to_vec());
    assert_eq!(sim.bytes(h, Side::Cli, 0), b"from b".to_vec());
    assert_eq!(sim.stats().conns_created, 1);
    let ev = cv.close(&mut sim, CISN, SISN, 6, 6);
    assert!(ends(&ev).is_empty());
    assert_eq!(sim.tr.conn(h).unwrap().closed, Some(EndReason::Closed));
}

#[test]
fn keepalives_are_neither_stored_nor_retransmissions() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);
    cv.c2s(&mut sim, ACK | PSH, CISN + 1, SISN + 1, b"abc");
    // A probe one before the next byte, with a filler byte unlike the one it repeats.
    let ev = cv.c2s(&mut sim, ACK, CISN + 3, SISN + 1, b"\0");
    assert!(of_kind(&ev, EventKind::Rexmit).is_empty(), "{ev:?}");
    assert!(errors(&ev).is_empty(), "{ev:?}");
    // And one without a byte.
    let ev = cv.c2s(&mut sim, ACK, CISN + 3, SISN + 1, b"");
    assert!(of_kind(&ev, EventKind::Rexmit).is_empty(), "{ev:?}");
    assert_eq!(sim.stats().keepalives, 2);
    assert_eq!(sim.stats().conflicts, 0);
    cv.c2s(&mut sim, ACK | PSH, CISN + 4, SISN + 1, b"def");
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"abcdef".to_vec());
}

#[test]
fn zero_window_probe_then_the_same_byte_again() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);
    cv.c2s(&mut sim, ACK | PSH, CISN + 1, SISN + 1, b"abc");
    // The server's window is closed; the client probes with the next byte, which the server
    // does not take (its ACK stays), and sends it again with more once the window opens.
    cv.s2c(&mut sim, ACK, SISN + 1, CISN + 4, b"");
    let ev = cv.c2s(&mut sim, ACK, CISN + 4, SISN + 1, b"d");
    assert!(errors(&ev).is_empty());
    cv.s2c(&mut sim, ACK, SISN + 1, CISN + 4, b"");
    let ev = cv.c2s(&mut sim, ACK | PSH, CISN + 4, SISN + 1, b"def");
    assert_eq!(of_kind(&ev, EventKind::Rexmit).len(), 1);
    assert!(errors(&ev).is_empty(), "{ev:?}");
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"abcdef".to_vec());
    assert_eq!(sim.stats().keepalives, 0);
}

#[test]
fn a_new_syn_after_a_reset_starts_a_new_connection() {
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, old) = cv.handshake(&mut sim);
    cv.c2s(&mut sim, ACK | PSH, CISN + 1, SISN + 1, b"one");
    cv.s2c(&mut sim, RST | ACK, SISN + 1, CISN + 4, b"");
    let ev = cv.c2s(&mut sim, SYN, 77_000, 0, b"");
    // Ended as reused, as after a FIN handshake: the tuple was taken by a new connection
    // before the old one's linger ran out.
    assert_eq!(ends(&ev), both_ends(old, EndReason::Reused));
    let new = ev.last().unwrap().flow;
    assert_ne!(new, old);
    cv.s2c(&mut sim, SYN | ACK, 88_000, 77_001, b"");
    cv.c2s(&mut sim, ACK | PSH, 77_001, 88_001, b"two");
    assert_eq!(sim.bytes(new, Side::Svr, 0), b"two".to_vec());
    assert_eq!(sim.stats().conns_created, 2);
}

/// Runs a connection that is reset while it holds out-of-order bytes and then receives the
/// missing ones late, in lossless mode with
/// analyzers that pass nothing until the end, or in lossy mode; returns the client-to-server
/// bytes as a dump collects them (each call's new bytes, lost ones as zeros) and the lost count.
fn replay_reset_script(lossless: bool) -> (Vec<u8>, u64) {
    let mut sim = Sim::default_cfg();
    sim.tr.set_lossless(lossless);
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);
    let mut bytes = Vec::new();
    let mut collect = |sim: &Sim| {
        for c in sim.chunks(h, Side::Svr, bytes.len() as u64) {
            match c {
                Chunk::Data(d) => bytes.extend_from_slice(&d),
                Chunk::Gap { len, .. } => bytes.extend(std::iter::repeat_n(0, len as usize)),
            }
        }
    };
    cv.c2s(&mut sim, ACK | PSH, CISN + 1, SISN + 1, b"aaaa");
    collect(&sim);
    // A reset carrying bytes beyond a hole (out of order when the connection closes), an
    // unrelated packet, then the hole's bytes, late.
    cv.c2s(&mut sim, RST | ACK, CISN + 9, SISN + 1, b"cccc");
    collect(&sim);
    Conv::new(40001, 80).c2s(&mut sim, ACK, 1, 1, b"");
    cv.c2s(&mut sim, ACK | PSH, CISN + 5, SISN + 1, b"bbbb");
    collect(&sim);
    (bytes, sim.stream_lost(h, Side::Svr))
}

#[test]
fn late_data_after_a_close_does_not_depend_on_when_analyzers_pass() {
    // A closed connection gives its rings back early, except a ring that holds out-of-order
    // bytes: whether analyzers have passed the close yet must not change the stream.
    let lossy = replay_reset_script(false);
    let lossless = replay_reset_script(true);
    assert_eq!(lossy, lossless);
    assert_eq!(lossy, (b"aaaabbbbcccc".to_vec(), 0));
}

#[test]
fn a_reset_in_any_state_closes_the_connection() {
    // The connection's segments in order; a RST (from either side) after each prefix.
    let script: [(bool, u8, u32, u32); 7] = [
        (true, SYN, CISN, 0),
        (false, SYN | ACK, SISN, CISN + 1),
        (true, ACK, CISN + 1, SISN + 1),
        (true, FIN | ACK, CISN + 1, SISN + 1),
        (false, ACK, SISN + 1, CISN + 2),
        (false, FIN | ACK, SISN + 1, CISN + 2),
        (true, ACK, CISN + 2, SISN + 2),
    ];
    for cut in 1..script.len() {
        for rst_from_client in [true, false] {
            let mut sim = Sim::default_cfg();
            let cv = Conv::new(40000, 80);
            let mut h = None;
            for &(c2s, flags, seq, ack) in &script[..cut] {
                let ev = if c2s {
                    cv.c2s(&mut sim, flags, seq, ack, b"")
                } else {
                    cv.s2c(&mut sim, flags, seq, ack, b"")
                };
                h = h.or(ev.first().map(|e| e.flow));
            }
            let h = h.expect("a connection");
            let before = sim.tr.conn(h).unwrap().closed;
            let ev = if rst_from_client {
                cv.c2s(&mut sim, RST | ACK, CISN + 1, SISN + 1, b"")
            } else {
                cv.s2c(&mut sim, RST | ACK, SISN + 1, CISN + 1, b"")
            };
            let c = sim.tr.conn(h).expect("still lingering");
            let what = format!("RST from client {rst_from_client} after {cut} segments");
            assert!(ev.iter().all(|e| e.flow == h), "{what}: {ev:?}");
            // Both stacks end CLOSED; a connection already closed keeps its first reason.
            assert_eq!(c.stack(Side::Cli).state, TcpState::Closed, "{what}");
            assert_eq!(c.stack(Side::Svr).state, TcpState::Closed, "{what}");
            assert_eq!(c.closed, before.or(Some(EndReason::Reset)), "{what}");
            let reason = c.closed.unwrap();
            let ev = sim.advance_to(sim.now + sim.tr.config().linger_ns + 1);
            assert_eq!(ends(&ev), both_ends(h, reason), "{what}");
        }
    }
}

#[test]
fn data_after_the_senders_fin_never_opens_a_gap() {
    // Invalid TCP (zeek's modbus fuzz-72): bytes sent past the sender's own FIN. The peer's
    // ACKs count at most up to that FIN, so a hole after it is never declared lost and the
    // bytes past it stay out of order.
    let mut sim = Sim::default_cfg();
    let cv = Conv::new(40000, 80);
    let (_, h) = cv.handshake(&mut sim);
    cv.c2s(&mut sim, FIN | ACK | PSH, CISN + 1, SISN + 1, b"abc");
    let ev = cv.c2s(&mut sim, ACK | PSH, CISN + 10, SISN + 1, b"zzz");
    assert!(errors(&ev).is_empty(), "{ev:?}");
    let ev = cv.s2c(&mut sim, ACK, SISN + 1, CISN + 13, b"");
    assert!(errors(&ev).is_empty(), "{ev:?}");
    assert_eq!(sim.bytes(h, Side::Svr, 0), b"abc".to_vec());
    assert_eq!(sim.stream_lost(h, Side::Svr), 0);
    let c = sim.tr.conn(h).unwrap();
    assert_eq!(
        c.stack(Side::Svr)
            .recv
            .fragments(sim.tr.pool())
            .collect::<Vec<_>>(),
        vec![(9, 3)]
    );
}

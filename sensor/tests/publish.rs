//! Integration tests of the sensor's publication side: flow slots and rings written by the
//! tracker into the main region, lossless retention, the fanout of events to analyzers' rings,
//! the packet log, and the control server. Everything is read back the way an analyzer reads
//! it: through `shm-layout`'s readers, over read-only mappings of the descriptors the sensor
//! hands out where that is possible.

use mos_sensor::capture::{LinkType, RawPacket};
use mos_sensor::control::{self, Allowed, ControlConfig, ControlServer};
use mos_sensor::event::{EndReason, Event, EventKind, FlowHandle};
use mos_sensor::flow::Endpoint;
use mos_sensor::parse::flags::{ACK, FIN, PSH, RST, SYN};
use mos_sensor::parse::{ChecksumStatus, TcpSegment, Tunnel, TunnelId};
use mos_sensor::publish::region::WorkerParts;
use mos_sensor::publish::{
    create_analyzer, create_main, AnalyzerRegions, Attached, Fanout, FanoutOptions, HugePages,
    MainRegion, SlotPublisher, ToControl, ToWorker,
};
use mos_sensor::tracker::{Tracker, TrackerConfig};
use shm_layout::control::{decode, encode, ClientMsg, SensorMsg, Subscription, MAX_MESSAGE};
use shm_layout::flow::{read_flow, read_flow_with_meta, read_flow_with_tunnel};
use shm_layout::layout::{
    counter, detach_reason, event_kind, features, flow_flags, gap_kind, side_flags, tunnel_flags,
    tunnel_id, tunnel_kind, AnalyzerPage, ConfigInfo, EventRecord, EventRingHeader, EventSlot,
    FlowData, FlowSlot, Header, PktLogEntry, PktLogHeader, RingMeta, RingMetaSlot, TunnelData,
    TunnelSlot, WorkerInfo, ABI_MAJOR, ABI_MINOR, MAGIC, NO_PKT, NO_RING,
};
use shm_layout::plan::{MainPlan, WorkerPlan};
use shm_layout::region::Mapping;
use shm_layout::ring::Consumer;
use shm_layout::{EventMask, Hook, Side, TcpState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const CISN: u32 = 1_000;
const SISN: u32 = 700_000;
/// A side's span: four chunks.
const RING: u64 = 4096;
const CHUNK: u64 = 1024;

// ---------------------------------------------------------------------------------------------
// The main region and an analyzer's view of it.

/// `chunks` chunks of [`CHUNK`] bytes, and as many stream buffers.
fn config(chunks: u64, slots: u64, pktlog_entries: u64) -> ConfigInfo {
    ConfigInfo {
        chunk_size: CHUNK,
        buffers_per_worker: chunks,
        chunks_per_worker: chunks,
        chunk_map_len: RING / CHUNK,
        slots_per_worker: slots,
        pktlog_entries,
        pktlog_bytes: 64 * 1024,
        event_ring_len: 64,
        idle_timeout_ns: 3600 * SEC,
        overlap_policy: 0,
    }
}

/// A main region of one worker (its mapping is leaked by design: it lives as long as the
/// sensor, here the test process).
fn main_region(cfg: &ConfigInfo) -> (MainRegion, WorkerParts) {
    let mut lines = Vec::new();
    let (region, mut parts) = create_main(
        cfg,
        &Default::default(),
        1,
        EPOCH,
        HugePages::Off,
        false,
        &mut |l| lines.push(l),
    )
    .expect("main region");
    assert_eq!(
        lines.len(),
        1,
        "one line says how the region is backed: {lines:?}"
    );
    assert!(!region.hugepages);
    assert_eq!(parts.len(), 1);
    (region, parts.remove(0))
}

/// The main region as an analyzer maps it: read-only, from the read-only descriptor.
#[derive(Debug)]
struct Reader {
    map: Mapping,
    w: WorkerPlan,
    cfg: ConfigInfo,
}

impl Reader {
    fn new(region: &MainRegion) -> Self {
        let map = Mapping::map(region.ro_fd.as_fd(), region.len as usize, false, false)
            .expect("read-only map");
        let h: &Header = map.get(0).expect("header");
        assert_eq!(h.magic, MAGIC);
        let plan = MainPlan::check_header(h, region.len).expect("header adds up");
        let cfg = h.config;
        Reader {
            w: plan.workers[0],
            cfg,
            map,
        }
    }

    fn slots(&self) -> &[FlowSlot] {
        self.map
            .slice(
                self.w.slots_off as usize,
                self.cfg.slots_per_worker as usize,
            )
            .expect("slots")
    }

    fn metas(&self) -> &[RingMetaSlot] {
        self.map
            .slice(
                self.w.ring_meta_off as usize,
                self.cfg.buffers_per_worker as usize,
            )
            .expect("metas")
    }

    fn tunnel(&self, slot: u32) -> (FlowData, Option<TunnelData>) {
        let h: &Header = self.map.get(0).expect("header");
        assert_ne!(h.features & features::TUNNELS, 0);
        let tunnels: &[TunnelSlot] = self
            .map
            .slice(
                self.w.tunnels_off as usize,
                self.cfg.slots_per_worker as usize,
            )
            .expect("tunnel records");
        let (snap, t) = read_flow_with_tunnel(
            &self.slots()[slot as usize],
            Some(&tunnels[slot as usize]),
            1000,
        )
        .expect("consistent copy");
        (snap.data, t)
    }

    fn flow(&self, slot: u32) -> FlowData {
        read_flow(&self.slots()[slot as usize], 1000)
            .expect("consistent copy")
            .data
    }

    fn flow_meta(&self, slot: u32, side: Side) -> (FlowData, Option<RingMeta>) {
        let (snap, meta) = read_flow_with_meta(
            &self.slots()[slot as usize],
            self.metas(),
            side.index(),
            1000,
        )
        .expect("consistent copy");
        (snap.data, meta)
    }

    /// `len` bytes of stream offset `offset` of the side using buffer `ring`, where an
    /// analyzer finds them: through the buffer's chunk map.
    fn ring_bytes(&self, ring: u32, offset: u64, len: usize) -> Vec<u8> {
        let (cs, ml) = (self.cfg.chunk_size, self.cfg.chunk_map_len);
        let map: &[AtomicU32] = self
            .map
            .slice(
                (self.w.chunk_map_off + u64::from(ring) * ml * 4) as usize,
                ml as usize,
            )
            .expect("chunk map");
        let mut out = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let o = offset + done as u64;
            let chunk = map[((o / cs) % ml) as usize].load(Ordering::Acquire);
            assert!(
                u64::from(chunk) < self.cfg.chunks_per_worker,
                "offset {o} of buffer {ring} has no chunk ({chunk:#x})"
            );
            let pos = o % cs;
            let n = (len - done).min((cs - pos) as usize);
            let at = self.w.chunks_off + u64::from(chunk) * cs + pos;
            assert!(self.map.read_bytes(at as usize, &mut out[done..done + n]));
            done += n;
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// A tracker publishing into a main region.

#[derive(Debug)]
struct PubSim {
    tr: Tracker,
    rd: Reader,
    now: u64,
    pos: u64,
    _region: MainRegion,
}

impl PubSim {
    fn new(tcfg: TrackerConfig, rings: u64) -> Self {
        let cfg = config(rings, tcfg.max_flows as u64 + 2, 64);
        let (region, part) = main_region(&cfg);
        let publisher = SlotPublisher::new(part.slots, part.metas, part.tunnels);
        let tr =
            Tracker::with_publisher(tcfg, part.chunk_bytes, part.chunk_map, Box::new(publisher))
                .expect("tracker");
        PubSim {
            tr,
            rd: Reader::new(&region),
            now: SEC,
            pos: 0,
            _region: region,
        }
    }

    fn small() -> Self {
        Self::new(tracker_cfg(128, 100 * MS), 64)
    }

    fn send(
        &mut self,
        from: Endpoint,
        to: Endpoint,
        flags: u8,
        seq: u32,
        ack: u32,
        data: &[u8],
    ) -> Vec<Event> {
        self.send_through(Tunnel::default(), from, to, flags, seq, ack, data)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_through(
        &mut self,
        tunnel: Tunnel,
        from: Endpoint,
        to: Endpoint,
        flags: u8,
        seq: u32,
        ack: u32,
        data: &[u8],
    ) -> Vec<Event> {
        self.now += MS;
        self.pos += 1;
        let mut seg = segment(from, to, flags, seq, ack, data);
        seg.tunnel = tunnel;
        let mut out = Vec::new();
        self.tr.process(self.now, self.pos, &seg, &mut out);
        out
    }

    fn tick(&mut self, dt: u64) -> Vec<Event> {
        self.now += dt;
        let mut out = Vec::new();
        self.tr.advance(self.now, &mut out);
        out
    }

    /// Checks the published slot of `h` against the tracker's connection, field by field,
    /// and returns it.
    fn check(&self, h: FlowHandle) -> FlowData {
        let c = self.tr.conn(h).expect("tracked");
        let d = self.rd.flow(h.slot);
        assert_ne!(d.flags & flow_flags::LIVE, 0, "slot {} not LIVE", h.slot);
        assert_eq!(d.generation, h.generation);
        assert_eq!(d.serial, c.serial);
        assert_eq!(d.start_ns, c.start_ns);
        assert_eq!(d.last_ns, c.last_ns);
        assert_eq!(d.flags & flow_flags::GUESSED != 0, c.guessed);
        assert_eq!(d.flags & flow_flags::CLOSED != 0, c.closed.is_some());
        assert_eq!(d.flags & flow_flags::ENDED != 0, c.ended);
        for side in [Side::Cli, Side::Svr] {
            let st = c.stack(side);
            let sd = d.sides[side.index()];
            let what = format!("{side:?} of slot {}", h.slot);
            assert_eq!(sd.state, st.state.code(), "{what}: state");
            assert_eq!(sd.head, st.recv.head(), "{what}: head");
            assert_eq!(sd.tail, st.recv.tail(), "{what}: tail");
            assert_eq!(sd.lost, st.recv.lost(), "{what}: lost");
            assert_eq!(u64::from(sd.packets), st.packets, "{what}: packets");
            assert_eq!(
                sd.ring,
                st.recv.ring_index().unwrap_or(NO_RING),
                "{what}: ring"
            );
            assert_eq!(
                sd.flags & side_flags::HAS_ISN != 0,
                st.isn.is_some(),
                "{what}"
            );
            if let Some(isn) = st.isn {
                assert_eq!(sd.isn, isn, "{what}: isn");
            }
            assert_eq!(sd.flags & side_flags::HAS_FIN != 0, st.fin_seq.is_some());
            if let Some(fin) = st.fin_seq {
                assert_eq!(sd.fin_seq, fin, "{what}: fin_seq");
            }
            assert_eq!(
                sd.flags & side_flags::ANCHORED != 0,
                st.recv.is_anchored(),
                "{what}: anchored"
            );
            if st.recv.is_anchored() {
                assert_eq!(sd.base_seq, st.recv.offset_to_seq(0), "{what}: base_seq");
            }
        }
        d
    }
}

fn tracker_cfg(max_flows: usize, linger_ns: u64) -> TrackerConfig {
    TrackerConfig {
        max_flows,
        linger_ns,
        chunk_size: CHUNK as usize,
        stream_max: RING as usize,
        ..TrackerConfig::default()
    }
}

fn segment<'a>(
    from: Endpoint,
    to: Endpoint,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &'a [u8],
) -> TcpSegment<'a> {
    TcpSegment {
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
        header_off: [0, 20],
        tunnel: Default::default(),
    }
}

#[derive(Debug, Clone, Copy)]
struct Conv {
    cli: Endpoint,
    svr: Endpoint,
}

impl Conv {
    fn v4(cport: u16, sport: u16) -> Self {
        Conv {
            cli: Endpoint {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                port: cport,
            },
            svr: Endpoint {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                port: sport,
            },
        }
    }

    fn c2s(&self, s: &mut PubSim, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<Event> {
        s.send(self.cli, self.svr, flags, seq, ack, data)
    }

    fn s2c(&self, s: &mut PubSim, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<Event> {
        s.send(self.svr, self.cli, flags, seq, ack, data)
    }

    fn handshake(&self, s: &mut PubSim) -> FlowHandle {
        let ev = self.c2s(s, SYN, CISN, 0, b"");
        let h = ev[0].flow;
        self.s2c(s, SYN | ACK, SISN, CISN + 1, b"");
        self.c2s(s, ACK, CISN + 1, SISN + 1, b"");
        h
    }

    /// A client-initiated FIN exchange after `c` client and `s` server bytes; returns the
    /// events of its last segment (the one that closes the connection).
    fn close(&self, sim: &mut PubSim, c: u32, s: u32) -> Vec<Event> {
        let cfin = CISN + 1 + c;
        let sfin = SISN + 1 + s;
        self.c2s(sim, FIN | ACK, cfin, sfin, b"");
        self.s2c(sim, ACK, sfin, cfin + 1, b"");
        self.s2c(sim, FIN | ACK, sfin, cfin + 1, b"");
        self.c2s(sim, ACK, cfin + 1, sfin + 1, b"")
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt))
        .collect()
}

fn v4(d: &FlowData, i: usize) -> [u8; 4] {
    d.addr[i][..4].try_into().unwrap()
}

// 1. Flow slots and rings ---------------------------------------------------------------------

#[test]
fn v4_connection_is_published_at_every_step() {
    let mut s = PubSim::small();
    let cv = Conv::v4(40000, 80);

    let ev = cv.c2s(&mut s, SYN, CISN, 0, b"");
    let h = ev[0].flow;
    let d = s.check(h);
    assert_eq!(d.port, [40000, 80]);
    assert_eq!(v4(&d, 0), [10, 0, 0, 1]);
    assert_eq!(v4(&d, 1), [10, 0, 0, 2]);
    assert_eq!(d.addr[0][4..], [0; 12]);
    assert_eq!(d.flags & flow_flags::IPV6, 0);
    assert_eq!(d.flags & flow_flags::GUESSED, 0);
    let (cli, svr) = (d.sides[0], d.sides[1]);
    assert_eq!(cli.state, TcpState::SynSent.code());
    assert_eq!(svr.state, TcpState::SynRcvd.code());
    assert_eq!(cli.isn, CISN);
    assert_ne!(cli.flags & side_flags::HAS_ISN, 0);
    assert_eq!(svr.flags & side_flags::HAS_ISN, 0);
    // The server's stream holds what the client sends: offset 0 is the client's ISN + 1.
    assert_ne!(svr.flags & side_flags::ANCHORED, 0);
    assert_eq!(svr.base_seq, CISN + 1);
    assert_eq!(cli.flags & side_flags::ANCHORED, 0);
    assert_eq!((cli.ring, svr.ring), (NO_RING, NO_RING));
    // The server's stack received the SYN; no frame was logged, so its reference is NO_PKT.
    assert_eq!((cli.last_pkt, svr.last_pkt), (NO_PKT, NO_PKT));

    cv.s2c(&mut s, SYN | ACK, SISN, CISN + 1, b"");
    let d = s.check(h);
    assert_eq!(d.sides[1].isn, SISN);
    assert_ne!(d.sides[0].flags & side_flags::ANCHORED, 0);
    assert_eq!(d.sides[0].base_seq, SISN + 1);
    assert_eq!(d.sides[0].state, TcpState::Established.code());

    cv.c2s(&mut s, ACK, CISN + 1, SISN + 1, b"");
    let d = s.check(h);
    assert_eq!(d.sides[1].state, TcpState::Established.code());
    assert_eq!(d.sides[0].packets, 2);
    assert_eq!(d.sides[1].packets, 1);

    // Client data: the server's side gets a ring holding it.
    let req = pattern(100, 1);
    cv.c2s(&mut s, PSH | ACK, CISN + 1, SISN + 1, &req);
    let d = s.check(h);
    let svr = d.sides[1];
    assert_ne!(svr.ring, NO_RING);
    assert_eq!((svr.head, svr.tail, svr.lost), (0, 100, 0));
    assert_eq!(
        d.sides[0].ring, NO_RING,
        "no byte for the client yet: no ring"
    );
    assert_eq!(s.rd.ring_bytes(svr.ring, 0, 100), req);

    // Server data: the client's side gets its own ring.
    let resp = pattern(300, 2);
    cv.s2c(&mut s, PSH | ACK, SISN + 1, CISN + 101, &resp);
    let d = s.check(h);
    let cli = d.sides[0];
    assert_ne!(cli.ring, NO_RING);
    assert_ne!(cli.ring, d.sides[1].ring);
    assert_eq!((cli.head, cli.tail), (0, 300));
    assert_eq!(s.rd.ring_bytes(cli.ring, 0, 300), resp);
    assert_eq!(d.sides[1].tail, 100, "the server's stream did not move");

    // More client data than the ring holds: the head moves and the bytes wrap around.
    let a = pattern(3000, 3);
    let b = pattern(3000, 4);
    cv.c2s(&mut s, ACK, CISN + 101, SISN + 301, &a);
    cv.c2s(&mut s, ACK, CISN + 3101, SISN + 301, &b);
    let d = s.check(h);
    let svr = d.sides[1];
    // The head moves to the chunk boundary that keeps the newest byte within a span of it.
    assert_eq!(
        (svr.head, svr.tail),
        ((6100 - RING).div_ceil(CHUNK) * CHUNK, 6100)
    );
    assert_eq!(s.rd.ring_bytes(svr.ring, 3100, 3000), b);
    assert_eq!(
        s.rd.ring_bytes(svr.ring, svr.head, 3100 - svr.head as usize),
        a[(svr.head - 100) as usize..]
    );

    // FIN exchange.
    cv.c2s(&mut s, FIN | ACK, CISN + 6101, SISN + 301, b"");
    let d = s.check(h);
    assert_eq!(d.sides[0].state, TcpState::FinWait1.code());
    assert_ne!(d.sides[0].flags & side_flags::HAS_FIN, 0);
    assert_eq!(d.sides[0].fin_seq, CISN + 6101);
    assert_eq!(d.sides[1].state, TcpState::CloseWait.code());
    cv.s2c(&mut s, ACK, SISN + 301, CISN + 6102, b"");
    cv.s2c(&mut s, FIN | ACK, SISN + 301, CISN + 6102, b"");
    let d = s.check(h);
    assert_eq!(d.sides[1].fin_seq, SISN + 301);
    assert_eq!(d.flags & flow_flags::CLOSED, 0);
    cv.c2s(&mut s, ACK, CISN + 6102, SISN + 302, b"");
    let d = s.check(h);
    assert_ne!(d.flags & flow_flags::CLOSED, 0);
    assert_eq!(d.end_reason, EndReason::Closed as u8);
    assert_eq!(d.flags & flow_flags::ENDED, 0);

    // The next call gives the rings back (lossy mode): the slot says so.
    s.tick(MS);
    let d = s.check(h);
    assert_eq!((d.sides[0].ring, d.sides[1].ring), (NO_RING, NO_RING));
    assert_eq!(s.tr.pool().in_use(), 0);

    // After the linger CONN_END is raised: the slot is still live in that call...
    let ev = s.tick(200 * MS);
    assert!(ev
        .iter()
        .any(|e| matches!(e.kind, EventKind::ConnEnd { .. }) && e.flow == h));
    let d = s.rd.flow(h.slot);
    assert_ne!(d.flags & flow_flags::LIVE, 0);
    assert_ne!(d.flags & flow_flags::ENDED, 0);
    assert_eq!(d.generation, h.generation);

    // ...and reclaimed at the next: not live, another generation (a stale handle: EBADF).
    s.tick(MS);
    assert!(s.tr.conn(h).is_none());
    let d = s.rd.flow(h.slot);
    assert_eq!(d.flags & flow_flags::LIVE, 0);
    assert_ne!(d.generation, h.generation);
    assert_eq!(d.port, [0, 0], "a freed slot publishes no connection");
}

#[test]
fn tunnel_of_the_first_packet_is_published_with_the_slot() {
    let mut s = PubSim::small();
    let gre = Tunnel {
        kinds: tunnel_kind::MPLS | tunnel_kind::GRE,
        depth: 2,
        outer: Some([
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)),
        ]),
        id: Some(TunnelId::MplsLabel(1000)),
    };
    let cv = Conv::v4(40000, 80);
    let ev = s.send_through(gre, cv.cli, cv.svr, SYN, CISN, 0, b"");
    let h = ev[0].flow;
    // Later packets, through another tunnel or none, are the same connection and do not
    // change the record.
    cv.s2c(&mut s, SYN | ACK, SISN, CISN + 1, b"");
    cv.c2s(&mut s, ACK, CISN + 1, SISN + 1, b"hello");
    let (d, t) = s.rd.tunnel(h.slot);
    assert_ne!(d.flags & flow_flags::TUNNEL, 0);
    let t = t.expect("a tunnel record");
    assert_eq!(t.kinds, tunnel_kind::MPLS | tunnel_kind::GRE);
    assert_eq!(t.depth, 2);
    assert_eq!((t.id_kind, t.id), (tunnel_id::MPLS_LABEL, 1000));
    assert_eq!(t.flags, tunnel_flags::OUTER | tunnel_flags::OUTER_IPV6);
    assert_eq!(
        t.outer[1],
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9).octets()
    );
    assert_eq!(s.tr.tunnel(h), Some(&gre));

    // A plain connection has none.
    let plain = Conv::v4(40001, 80);
    let hp = plain.handshake(&mut s);
    let (d, t) = s.rd.tunnel(hp.slot);
    assert_eq!(d.flags & flow_flags::TUNNEL, 0);
    assert_eq!(t, None);
    assert_eq!(s.tr.tunnel(hp), None);
}

#[test]
fn v6_connection_is_published_with_its_addresses() {
    let mut s = PubSim::small();
    let ca = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let sa = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xbeef, 2);
    let cv = Conv {
        cli: Endpoint {
            addr: IpAddr::V6(ca),
            port: 51000,
        },
        svr: Endpoint {
            addr: IpAddr::V6(sa),
            port: 443,
        },
    };
    let h = cv.handshake(&mut s);
    let data = pattern(500, 9);
    cv.c2s(&mut s, ACK, CISN + 1, SISN + 1, &data);
    let d = s.check(h);
    assert_ne!(d.flags & flow_flags::IPV6, 0);
    assert_eq!(d.addr, [ca.octets(), sa.octets()]);
    assert_eq!(d.port, [51000, 443]);
    assert_eq!(d.sides[1].tail, 500);
    assert_eq!(s.rd.ring_bytes(d.sides[1].ring, 0, 500), data);

    // A v4 flow next to it is not marked v6.
    let cv4 = Conv::v4(40001, 80);
    let h4 = cv4.handshake(&mut s);
    assert_ne!(h4.slot, h.slot);
    let d4 = s.check(h4);
    assert_eq!(d4.flags & flow_flags::IPV6, 0);
    assert_eq!(v4(&d4, 1), [10, 0, 0, 2]);
}

#[test]
fn out_of_order_data_is_published_as_fragments_then_a_gap() {
    let mut s = PubSim::small();
    let cv = Conv::v4(40002, 80);
    let h = cv.handshake(&mut s);

    // [10, 20) and [30, 35) arrive before [0, 10).
    let x = pattern(10, 5);
    let y = pattern(5, 6);
    cv.c2s(&mut s, ACK, CISN + 11, SISN + 1, &x);
    cv.c2s(&mut s, ACK, CISN + 31, SISN + 1, &y);
    s.check(h);
    let (d, meta) = s.rd.flow_meta(h.slot, Side::Svr);
    let meta = meta.expect("the server's side holds a ring");
    assert_eq!(d.sides[1].tail, 0);
    assert_eq!(meta.nfrags, 2);
    assert_eq!((meta.frags[0].start, meta.frags[0].len), (10, 10));
    assert_eq!((meta.frags[1].start, meta.frags[1].len), (30, 5));
    assert_eq!(meta.ngaps, 0);
    assert_eq!(s.rd.ring_bytes(d.sides[1].ring, 10, 10), x);
    assert_eq!(s.rd.ring_bytes(d.sides[1].ring, 30, 5), y);
    // The client's side holds no ring: no metadata.
    assert_eq!(s.rd.flow_meta(h.slot, Side::Cli).1, None);

    // The server acknowledges up to 20: [0, 10) was sent and never captured.
    cv.s2c(&mut s, ACK, SISN + 1, CISN + 21, b"");
    s.check(h);
    let (d, meta) = s.rd.flow_meta(h.slot, Side::Svr);
    let meta = meta.unwrap();
    assert_eq!((d.sides[1].tail, d.sides[1].lost), (20, 10));
    assert_eq!(meta.ngaps, 1);
    assert_eq!(
        (meta.gaps[0].offset, meta.gaps[0].len, meta.gaps[0].kind),
        (0, 10, gap_kind::MISSED)
    );
    assert_eq!(meta.nfrags, 1);
    assert_eq!((meta.frags[0].start, meta.frags[0].len), (30, 5));
}

// 2. Lossless retention -----------------------------------------------------------------------

/// Handshake, 100 bytes each way; returns the handle.
fn conversation(s: &mut PubSim, cv: &Conv) -> FlowHandle {
    let h = cv.handshake(s);
    cv.c2s(s, ACK, CISN + 1, SISN + 1, &pattern(100, 1));
    cv.s2c(s, ACK, SISN + 1, CISN + 101, &pattern(100, 2));
    h
}

#[test]
fn lossless_close_holds_rings_and_slot_until_analyzers_pass() {
    let mut s = PubSim::small();
    s.tr.set_lossless(true);
    s.tr.set_passed(0);
    let cv = Conv::v4(40010, 80);
    let h = conversation(&mut s, &cv);
    assert_eq!(s.tr.pool().in_use(), 2);

    let ev = cv.close(&mut s, 100, 100);
    let p_close = s.tr.pseq();
    assert!(!ev.is_empty());
    assert!(ev.iter().all(|e| e.pseq == p_close), "{ev:?}");
    assert_ne!(s.rd.flow(h.slot).flags & flow_flags::CLOSED, 0);

    // Not passed yet: the rings stay, and the slot still names them.
    for passed in [0, p_close - 1] {
        s.tr.set_passed(passed);
        s.tick(MS);
        assert_eq!(s.tr.pool().in_use(), 2, "passed {passed}");
        let d = s.check(h);
        assert_ne!(d.sides[0].ring, NO_RING);
        assert_ne!(d.sides[1].ring, NO_RING);
    }
    s.tr.set_passed(p_close);
    s.tick(MS);
    assert_eq!(s.tr.pool().in_use(), 0);
    let d = s.check(h);
    assert_eq!((d.sides[0].ring, d.sides[1].ring), (NO_RING, NO_RING));

    // CONN_END after the linger; its slot is held until the analyzers pass it.
    let ev = s.tick(200 * MS);
    let p_end = s.tr.pseq();
    let ends: Vec<&Event> = ev
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ConnEnd { .. }))
        .collect();
    assert_eq!(ends.len(), 2);
    assert!(ends.iter().all(|e| e.pseq == p_end && e.flow == h));
    for _ in 0..3 {
        s.tick(MS);
        let d = s.rd.flow(h.slot);
        assert_ne!(d.flags & flow_flags::LIVE, 0, "held slot freed too early");
        assert_ne!(d.flags & flow_flags::ENDED, 0);
        assert_eq!(d.generation, h.generation);
    }
    s.tr.set_passed(p_end - 1);
    s.tick(MS);
    assert_ne!(s.rd.flow(h.slot).flags & flow_flags::LIVE, 0);
    s.tr.set_passed(p_end);
    s.tick(MS);
    let d = s.rd.flow(h.slot);
    assert_eq!(d.flags & flow_flags::LIVE, 0);
    assert_ne!(d.generation, h.generation);
}

/// Bytes that arrive after a reset, while an analyzer is still behind the reset's events, go
/// into the ring the reset left held; the ring must outlive them until the analyzers pass the
/// call that wrote them (seen in suricata-verify security-4710-02 when an analyzer lagged).
#[test]
fn lossless_bytes_after_a_reset_are_held_until_analyzers_pass_them() {
    let mut s = PubSim::small();
    s.tr.set_lossless(true);
    s.tr.set_passed(0);
    let cv = Conv::v4(40013, 80);
    let h = cv.handshake(&mut s);
    cv.s2c(&mut s, ACK, SISN + 1, CISN + 1, &pattern(100, 2));
    cv.c2s(&mut s, RST | ACK, CISN + 1, SISN + 101, b"");
    let p_rst = s.tr.pseq();
    assert_ne!(s.rd.flow(h.slot).flags & flow_flags::CLOSED, 0);
    let late = pattern(54, 3);
    cv.c2s(&mut s, PSH | ACK, CISN + 1, SISN + 101, &late);
    let p_late = s.tr.pseq();
    assert!(p_late > p_rst);
    let d = s.check(h);
    assert_eq!(d.sides[1].tail, 54);
    assert_eq!(s.rd.ring_bytes(d.sides[1].ring, 0, 54), late);

    // The analyzers pass the reset but not the late bytes: both rings stay readable.
    s.tr.set_passed(p_rst);
    s.tick(MS);
    let d = s.check(h);
    assert_ne!(
        d.sides[1].ring, NO_RING,
        "late bytes freed before they were read"
    );
    assert_eq!(d.sides[1].head, 0);
    assert_eq!(s.rd.ring_bytes(d.sides[1].ring, 0, 54), late);
    s.tr.set_passed(p_late - 1);
    s.tick(MS);
    assert_ne!(s.check(h).sides[1].ring, NO_RING);

    // Once they pass the late bytes, the rings go.
    s.tr.set_passed(p_late);
    s.tick(MS);
    assert_eq!(s.tr.pool().in_use(), 0);
    let d = s.check(h);
    assert_eq!((d.sides[0].ring, d.sides[1].ring), (NO_RING, NO_RING));
    assert_eq!(s.tr.must_wait(), None);
}

#[test]
fn lossless_end_of_input_keeps_rings_with_the_slot() {
    // A connection that ends without closing (here at the end of the input) keeps its rings
    // with its slot.
    let mut s = PubSim::small();
    s.tr.set_lossless(true);
    s.tr.set_passed(0);
    let cv = Conv::v4(40011, 80);
    let h = conversation(&mut s, &cv);
    let mut out = Vec::new();
    s.tr.finish(s.now + MS, &mut out);
    let p_end = s.tr.pseq();
    assert!(out.iter().all(|e| e.pseq == p_end));
    s.tick(MS);
    assert_eq!(s.tr.pool().in_use(), 2);
    assert_ne!(s.rd.flow(h.slot).flags & flow_flags::LIVE, 0);
    s.tr.set_passed(p_end);
    s.tick(MS);
    assert_eq!(s.tr.pool().in_use(), 0);
    assert_eq!(s.rd.flow(h.slot).flags & flow_flags::LIVE, 0);
}

/// An analyzer that had drained its ring when the sensor last looked (`set_passed(u64::MAX)`)
/// has not read what later calls raise: connections those calls end keep their slots until it
/// passes their `CONN_END`. (A paced replay, whose analyzers keep up, ended the input with a
/// string of calls after the last look, and freed slots under analyzers about to read them.)
#[test]
fn lossless_a_drained_analyzer_has_not_passed_later_calls() {
    let mut s = PubSim::small();
    s.tr.set_lossless(true);
    let cv = Conv::v4(40014, 80);
    let h = conversation(&mut s, &cv);
    s.tr.set_passed(u64::MAX);
    let mut out = Vec::new();
    assert!(!s.tr.finish_some(s.now + MS, 1, &mut out));
    let p_end = s.tr.pseq();
    assert!(out
        .iter()
        .any(|e| e.flow == h && matches!(e.kind, EventKind::ConnEnd { .. })));
    s.tick(MS);
    s.tick(MS);
    let d = s.rd.flow(h.slot);
    assert_ne!(
        d.flags & flow_flags::LIVE,
        0,
        "slot freed before CONN_END was read"
    );
    assert_eq!(d.generation, h.generation);
    s.tr.set_passed(p_end);
    s.tick(MS);
    assert_eq!(s.rd.flow(h.slot).flags & flow_flags::LIVE, 0);
}

#[test]
fn lossy_close_frees_rings_and_slot_at_the_next_call() {
    let mut s = PubSim::small();
    s.tr.set_lossless(false);
    s.tr.set_passed(0);
    let cv = Conv::v4(40012, 80);
    let h = conversation(&mut s, &cv);
    cv.close(&mut s, 100, 100);
    assert_eq!(
        s.tr.pool().in_use(),
        2,
        "rings stay for the closing call's readers"
    );
    s.tick(MS);
    assert_eq!(s.tr.pool().in_use(), 0);
    let ev = s.tick(200 * MS);
    assert!(ev
        .iter()
        .any(|e| matches!(e.kind, EventKind::ConnEnd { .. })));
    assert_ne!(s.rd.flow(h.slot).flags & flow_flags::LIVE, 0);
    s.tick(MS);
    let d = s.rd.flow(h.slot);
    assert_eq!(d.flags & flow_flags::LIVE, 0);
    assert_ne!(d.generation, h.generation);
    assert_eq!(s.tr.must_wait(), None);
}

#[test]
fn must_wait_when_held_slots_fill_the_table() {
    // Two flows at most: the table has 4 slots.
    let mut s = PubSim::new(tracker_cfg(2, 100 * MS), 16);
    s.tr.set_lossless(true);
    s.tr.set_passed(0);
    let a = Conv::v4(40020, 80);
    a.handshake(&mut s);
    a.close(&mut s, 0, 0);
    assert_eq!(s.tr.must_wait(), None, "room enough");
    s.tick(200 * MS);
    let p_end = s.tr.pseq();
    assert_eq!(s.tr.live_conns(), 0);
    assert_eq!(s.tr.must_wait(), None, "one held slot of four");

    let b = Conv::v4(40021, 80);
    b.handshake(&mut s);
    assert_eq!(s.tr.must_wait(), Some(p_end));
    s.tr.set_passed(p_end - 1);
    assert_eq!(s.tr.must_wait(), Some(p_end));
    s.tr.set_passed(p_end);
    assert_eq!(s.tr.must_wait(), None);
    // The next call frees the held slot.
    s.tick(MS);
    s.tr.set_passed(0);
    assert_eq!(s.tr.must_wait(), None);
}

#[test]
fn must_wait_when_held_rings_fill_the_pool() {
    // Four rings; a conversation takes two.
    let mut s = PubSim::new(tracker_cfg(64, 100 * MS), 4);
    s.tr.set_lossless(true);
    s.tr.set_passed(0);
    let cv = Conv::v4(40030, 80);
    conversation(&mut s, &cv);
    assert_eq!(s.tr.pool().in_use(), 2);
    assert_eq!(s.tr.must_wait(), None, "rings in use but none held");
    cv.close(&mut s, 100, 100);
    let p_close = s.tr.pseq();
    assert_eq!(s.tr.must_wait(), Some(p_close));
    s.tr.set_passed(p_close);
    assert_eq!(s.tr.must_wait(), None);
    s.tick(MS);
    assert_eq!(s.tr.pool().in_use(), 0);
}

#[test]
fn discard_needs_names_the_call_that_announced_the_bytes() {
    let mut s = PubSim::small();
    s.tr.set_lossless(true);
    s.tr.set_passed(0);
    let cv = Conv::v4(40040, 80);
    let h = cv.handshake(&mut s);
    let seq = |off: u64| CISN + 1 + off as u32;
    let seg_at =
        |off: u64, data: &'static [u8]| segment(cv.cli, cv.svr, ACK, seq(off), SISN + 1, data);
    static BIG: [u8; 1100] = [7; 1100];
    static SMALL: [u8; 100] = [8; 100];

    // Four chunks of the span, one call each.
    let mut pseqs = Vec::new();
    for q in 0..4u64 {
        if q == 2 {
            // Half full: nothing the next segment writes is announced and unread.
            assert_eq!(s.tr.discard_needs(&seg_at(2048, &BIG)), 0);
        }
        cv.c2s(
            &mut s,
            ACK,
            seq(q * 1024),
            SISN + 1,
            &pattern(1024, q as u8),
        );
        pseqs.push(s.tr.pseq());
    }
    // Full: 100 more bytes push the head past bytes announced by the first quarter's call.
    assert_eq!(s.tr.discard_needs(&seg_at(4096, &SMALL)), pseqs[0]);
    // 1100 more bytes go past the first quarter: the second quarter's call announced them.
    assert_eq!(s.tr.discard_needs(&seg_at(4096, &BIG)), pseqs[1]);
    // A retransmission overwrites nothing, and neither does an ACK of the server.
    assert_eq!(s.tr.discard_needs(&seg_at(0, &SMALL)), 0);
    let ack = segment(cv.svr, cv.cli, ACK, SISN + 1, seq(4096), &[]);
    assert_eq!(s.tr.discard_needs(&ack), 0);
    // An unknown connection needs nothing.
    let other = Conv::v4(40041, 80);
    let seg = segment(other.cli, other.svr, ACK, 5, 5, &SMALL);
    assert_eq!(s.tr.discard_needs(&seg), 0);

    // Once the first chunk is passed, the 100 bytes go in and move the head past it.
    s.tr.set_passed(pseqs[0]);
    cv.c2s(&mut s, ACK, seq(4096), SISN + 1, &SMALL);
    let d = s.check(h);
    assert_eq!((d.sides[1].head, d.sides[1].tail), (1024, 4196));
    // The next 100 bytes fit within a span of the head's chunk; 1100 reach into the second
    // chunk, which the second call filled.
    assert_eq!(s.tr.discard_needs(&seg_at(4196, &SMALL)), 0);
    assert_eq!(s.tr.discard_needs(&seg_at(4196, &BIG)), pseqs[1]);
}

/// A full gap list evicts its oldest record with the next gap, and below the evicted record's
/// end a reader can no longer tell held bytes from skipped ones: lossless mode waits until
/// every analyzer is past the call that announced the bytes after that gap.
#[test]
fn discard_needs_holds_the_oldest_gap_record_of_a_full_list() {
    use mos_sensor::tcp::ring_pool::{RingId, MAX_GAPS};
    let mut s = PubSim::small();
    s.tr.set_lossless(true);
    s.tr.set_passed(0);
    let cv = Conv::v4(40042, 80);
    let h = cv.handshake(&mut s);
    let seq = |off: u64| CISN + 1 + off as u32;
    // 50 bytes every 60: each 10-byte hole becomes a gap once the server acknowledges past it.
    let data = pattern(50, 1);
    cv.c2s(&mut s, ACK, seq(0), SISN + 1, &data);
    let mut acks = Vec::new();
    for i in 1..=MAX_GAPS as u64 {
        cv.c2s(&mut s, ACK, seq(i * 60), SISN + 1, &data);
        cv.s2c(&mut s, ACK, SISN + 1, seq(i * 60 + 50), b"");
        acks.push(s.tr.pseq());
    }
    let d = s.check(h);
    assert_eq!(d.sides[1].tail, MAX_GAPS as u64 * 60 + 50);
    assert_eq!(d.sides[1].lost, MAX_GAPS as u64 * 10);
    // The list is full: the next data or ACK on the stream may evict the gap at [50, 60),
    // whose bytes after it the first ACK announced (or, as the ring keeps checkpoints only at
    // quarter marks, a later call). Nothing is overwritten, so only the gap is at stake.
    let next = MAX_GAPS as u64 * 60 + 60;
    let more = segment(cv.cli, cv.svr, ACK, seq(next), SISN + 1, &data);
    let need = s.tr.discard_needs(&more);
    assert!((acks[0]..=s.tr.pseq()).contains(&need), "{need} {acks:?}");
    let ack = segment(cv.svr, cv.cli, ACK, SISN + 1, seq(next + 50), b"");
    assert_eq!(s.tr.discard_needs(&ack), need);
    // Data into the other direction, which has no gap, needs nothing (without an ACK, which
    // would concern the full stream).
    let back = segment(cv.svr, cv.cli, 0, SISN + 1, 0, &data);
    assert_eq!(s.tr.discard_needs(&back), 0);
    // Past it, the record goes with the next gap; then the second one is at stake.
    s.tr.set_passed(need);
    cv.c2s(&mut s, ACK, seq(next), SISN + 1, &data);
    cv.s2c(&mut s, ACK, SISN + 1, seq(next + 50), b"");
    assert_eq!(
        s.tr.pool().meta(RingId(d.sides[1].ring)).unknown_below(),
        60
    );
    let need = s.tr.discard_needs(&more);
    assert!((acks[1]..=s.tr.pseq()).contains(&need), "{need} {acks:?}");
}

/// One ACK that skips several out-of-order islands records a gap before each: with a list
/// two short of full and four islands held, it pushes out the two oldest records, so it must
/// wait until every analyzer is past the call that announced the bytes after the second.
#[test]
fn discard_needs_counts_every_gap_one_ack_may_record() {
    use mos_sensor::tcp::ring_pool::MAX_GAPS;
    let mut s = PubSim::small();
    s.tr.set_lossless(true);
    s.tr.set_passed(0);
    let cv = Conv::v4(40043, 80);
    cv.handshake(&mut s);
    let seq = |off: u64| CISN + 1 + off as u32;
    let data = pattern(50, 2);
    cv.c2s(&mut s, ACK, seq(0), SISN + 1, &data);
    let mut acks = Vec::new();
    let records = MAX_GAPS as u64 - 2;
    for i in 1..=records {
        cv.c2s(&mut s, ACK, seq(i * 60), SISN + 1, &data);
        cv.s2c(&mut s, ACK, SISN + 1, seq(i * 60 + 50), b"");
        acks.push(s.tr.pseq());
    }
    // Four islands past the tail, each after a 10-byte hole, none acknowledged yet.
    let tail = records * 60 + 50;
    for k in 0..4 {
        cv.c2s(&mut s, ACK, seq(tail + 10 + k * 60), SISN + 1, &data);
    }
    let ack = segment(cv.svr, cv.cli, ACK, SISN + 1, seq(tail + 4 * 60), b"");
    let need = s.tr.discard_needs(&ack);
    assert!((acks[1]..=s.tr.pseq()).contains(&need), "{need} {acks:?}");
}

#[test]
fn a_reused_slot_and_ring_start_afresh() {
    // Lossless: A fills a ring in four calls, closes, ends, and is reclaimed; B, picked up
    // midstream, then gets the same slot and the same ring with its first segment. B's
    // announcements must be B's own, and B's side that received nothing names no packet.
    let mut s = PubSim::small();
    s.tr.set_lossless(true);
    s.tr.set_passed(u64::MAX);
    let quarters = |s: &mut PubSim, cv: &Conv| -> (Vec<u64>, FlowHandle) {
        let mut h = None;
        let p = (0..4u32)
            .map(|q| {
                let data = pattern(1024, q as u8);
                let ev = cv.c2s(s, ACK, CISN + 1 + q * 1024, SISN + 1, &data);
                h = h.or(Some(ev[0].flow));
                s.tr.pseq()
            })
            .collect();
        (p, h.unwrap())
    };
    let a = Conv::v4(40050, 80);
    let ha = a.handshake(&mut s);
    quarters(&mut s, &a);
    let ring_a = s.rd.flow(ha.slot).sides[1].ring;
    a.close(&mut s, 4096, 0);
    // The analyzers keep up: before each call they have read everything raised so far.
    s.tr.set_passed(u64::MAX);
    s.tick(200 * MS);
    s.tr.set_passed(u64::MAX);
    s.tick(MS);
    assert_eq!(s.rd.flow(ha.slot).flags & flow_flags::LIVE, 0);
    assert_eq!(s.tr.pool().in_use(), 0);

    let b = Conv::v4(40051, 80);
    let (pb, hb) = quarters(&mut s, &b);
    let d = s.check(hb);
    assert_ne!(d.flags & flow_flags::GUESSED, 0);
    assert_eq!(
        (hb.slot, d.sides[1].ring),
        (ha.slot, ring_a),
        "B reuses A's slot and ring (the case under test)"
    );
    assert_eq!(
        d.sides[0].last_pkt, NO_PKT,
        "B's client side received nothing"
    );
    s.tr.set_passed(0);
    let more = pattern(100, 9);
    let seg = segment(b.cli, b.svr, ACK, CISN + 1 + 4096, SISN + 1, &more);
    assert_eq!(s.tr.discard_needs(&seg), pb[0]);
}

/// What one call of [`lookups_before_a_call_change_nothing`]'s traffic does: a segment (tuple,
/// direction, flags, payload length, time step) and which lookups the sensor makes before it.
#[derive(Clone, Copy, Debug)]
struct LookupOp {
    tuple: u16,
    rev: bool,
    flags: u8,
    len: usize,
    dt: u64,
    /// 0: none; 1: this segment's; 2: this segment's, then another tuple's; 3: another
    /// tuple's only.
    lookups: u8,
    /// Whether connections due by the segment's time end in calls of their own first (as
    /// the replay does), else at the start of the segment's call, after the lookups.
    ends_first: bool,
}

/// The flow lookups the sensor makes before a call (`discard_needs`, `payload_offset`), which
/// the call takes over, must leave the call exactly as without them: for the segment's own
/// flow when the call's start ends that flow (its linger or idle time ran out), when the
/// lookup found none and the call creates it, when another segment was looked up last, and in
/// lossless mode. Two trackers get the same traffic, one with lookups before each call and one
/// without; their events, counters and published slots must agree.
#[test]
fn lookups_before_a_call_change_nothing() {
    // A fixed pseudo-random script (xorshift): a few tuples, every kind of segment, and time
    // steps past the linger (100 ms) and the idle timeout (1 s) among the short ones.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let flags = [
        SYN,
        SYN | ACK,
        ACK,
        ACK | PSH,
        FIN | ACK,
        RST,
        RST | ACK,
        ACK,
    ];
    let script: Vec<LookupOp> = (0..3000)
        .map(|_| LookupOp {
            tuple: next(5) as u16,
            rev: next(2) == 1,
            flags: flags[next(flags.len() as u64) as usize],
            len: [0, 0, 1, 100, 700][next(5) as usize],
            dt: [MS, MS, MS, 10 * MS, 150 * MS, 1500 * MS][next(6) as usize],
            lookups: next(4) as u8,
            ends_first: next(2) == 1,
        })
        .collect();
    for lossless in [false, true] {
        let cfg = || TrackerConfig {
            idle_timeout_ns: SEC,
            ..tracker_cfg(3, 100 * MS)
        };
        let (mut with, mut without) = (PubSim::new(cfg(), 16), PubSim::new(cfg(), 16));
        for s in [&mut with, &mut without] {
            s.tr.set_lossless(lossless);
        }
        // Sequence numbers per direction, advanced by what each segment sends.
        let mut seqs = std::collections::HashMap::new();
        for (i, op) in script.iter().enumerate() {
            let cv = Conv::v4(41000 + op.tuple, 80);
            let (from, to) = if op.rev {
                (cv.svr, cv.cli)
            } else {
                (cv.cli, cv.svr)
            };
            let ack = *seqs.get(&(op.tuple, !op.rev)).unwrap_or(&SISN);
            let seq: &mut u32 = seqs.entry((op.tuple, op.rev)).or_insert(CISN);
            let data = pattern(op.len, i as u8);
            let seg = segment(from, to, op.flags, *seq, ack, &data);
            *seq = seq
                .wrapping_add(op.len as u32)
                .wrapping_add(u32::from(op.flags & (SYN | FIN) != 0));
            let other = Conv::v4(41000 + (op.tuple + 1) % 5, 80);
            let decoy = segment(other.cli, other.svr, ACK, CISN, SISN, b"x");
            let mut outs = Vec::new();
            for (k, s) in [&mut with, &mut without].into_iter().enumerate() {
                s.now += op.dt;
                s.pos += 1;
                let mut out = Vec::new();
                while op.ends_first && s.tr.ends_due(s.now) {
                    s.tr.advance(s.now, &mut out);
                }
                // Analyzers a call behind: lossless mode holds what they have not passed.
                let pseq = s.tr.pseq();
                s.tr.set_passed(pseq.saturating_sub(1));
                let looked = k == 0;
                if looked && matches!(op.lookups, 1 | 2) {
                    s.tr.discard_needs(&seg);
                    s.tr.payload_offset(&seg);
                }
                if looked && matches!(op.lookups, 2 | 3) {
                    s.tr.discard_needs(&decoy);
                }
                while let Some(p) = s.tr.must_wait() {
                    s.tr.set_passed(p);
                }
                s.tr.process(s.now, s.pos, &seg, &mut out);
                outs.push(format!("{out:?}"));
            }
            assert_eq!(
                outs[0], outs[1],
                "lossless {lossless}, call {i} ({op:?}): the events differ"
            );
            assert_eq!(with.tr.stats(), without.tr.stats(), "call {i}");
            for slot in 0..5 {
                assert_eq!(
                    with.rd.flow(slot),
                    without.rd.flow(slot),
                    "lossless {lossless}, call {i}: slot {slot} published differently"
                );
            }
        }
        let st = with.tr.stats();
        // The script reaches the cases under test.
        assert!(st.conns_created > 100, "{st:?}");
        assert!(st.conns_closed > 10 && st.conns_timed_out > 10, "{st:?}");
        assert!(st.late_segments > 10 && st.orphan_segments > 10, "{st:?}");
    }
}

// 3. Fanout -----------------------------------------------------------------------------------

/// A worker's fanout over a main region, with the control thread's ends of its channels.
#[derive(Debug)]
struct Rig {
    fo: Fanout,
    to_w: Sender<ToWorker>,
    from_w: Receiver<ToControl>,
    info: &'static WorkerInfo,
    rd: Reader,
    _region: MainRegion,
}

fn rig(lossless: bool, stall: Duration, pktlog_entries: u64) -> Rig {
    let cfg = config(4, 8, pktlog_entries);
    let (region, part) = main_region(&cfg);
    let (to_w, rx) = mpsc::channel();
    let (tx, from_w) = mpsc::channel();
    let fo = Fanout::new(
        0,
        FanoutOptions {
            lossless,
            stall_timeout_ns: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
                stall.as_nanos() as u64,
            )),
            stop: None,
            slots: cfg.slots_per_worker as usize,
        },
        rx,
        tx,
        part.info,
        part.pktlog,
    );
    Rig {
        fo,
        to_w,
        from_w,
        info: part.info,
        rd: Reader::new(&region),
        _region: region,
    }
}

#[test]
fn an_analyzers_page_cannot_change_size_and_its_regions_cannot_be_written() {
    // Whether the event rings got hugepages (when asked, and the host has them free) or
    // ordinary pages, the seals hold.
    for hugepages in [false, true] {
        let (r, fds) = create_analyzer(16, 1, hugepages).expect("analyzer regions");
        // The page is passed writable: it may be written, never resized.
        let same = r.page.len() as u64;
        for len in [0, 1, same - 1, same + 1, 1 << 30] {
            assert_eq!(
                rustix::fs::ftruncate(&fds.page_fd, len),
                Err(rustix::io::Errno::PERM),
                "ftruncate to {len}"
            );
        }
        assert!(r.page.get::<AnalyzerPage>(0).is_some());
        // The read-only events region, reopened through /proc for writing, can be neither
        // resized nor written.
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fds.events_ro)
        );
        if let Ok(rw) = rustix::fs::open(
            path.as_str(),
            rustix::fs::OFlags::RDWR,
            rustix::fs::Mode::empty(),
        ) {
            assert!(rustix::fs::ftruncate(&rw, 0).is_err());
            assert!(rustix::io::write(&rw, b"x").is_err());
        }
    }
}

const STALL: Duration = Duration::from_millis(200);
const LONG: Duration = Duration::from_secs(30);

fn sub(mask: EventMask) -> Subscription {
    Subscription {
        events: mask.0,
        packets: false,
    }
}

impl Rig {
    /// Attaches analyzer `id` with rings of `capacity` records, subscribes it, marks it ready.
    fn attach(&mut self, id: u32, capacity: u64, s: Subscription) -> AnalyzerRegions {
        let (r, _fds) = create_analyzer(capacity, 1, false).expect("analyzer regions");
        let a = Attached {
            id,
            name: format!("test-{id}"),
            pid: 4242,
            regions: r.clone(),
        };
        self.to_w.send(ToWorker::Attach(Box::new(a))).unwrap();
        self.to_w.send(ToWorker::Subscribe(id, s)).unwrap();
        self.to_w.send(ToWorker::Ready(id)).unwrap();
        assert!(self.fo.poll_control());
        r
    }

    fn control(&mut self, m: ToWorker) {
        self.to_w.send(m).unwrap();
        assert!(self.fo.poll_control());
    }

    fn counter(&self, c: usize) -> u64 {
        self.info.counters[c].load(Ordering::Relaxed)
    }
}

/// The analyzer's end of its ring for worker 0.
fn consumer(r: &AnalyzerRegions) -> (Consumer<'_>, &EventRingHeader) {
    let hdr: &EventRingHeader = r.events.get(r.plan.ring_off(0) as usize).unwrap();
    let slots: &[EventSlot] = r
        .events
        .slice(r.plan.records_off(0) as usize, r.plan.capacity as usize)
        .unwrap();
    let page: &AnalyzerPage = r.page.get(0).unwrap();
    (Consumer::new(hdr, slots, &page.consumer[0]).unwrap(), hdr)
}

fn drain(c: &mut Consumer<'_>) -> Vec<EventRecord> {
    let mut v = Vec::new();
    while let Some(r) = c.peek() {
        c.advance();
        v.push(r);
    }
    v
}

fn event(kind: EventKind, pseq: u64, side: Option<Side>, hook: Hook) -> Event {
    Event {
        flow: FlowHandle {
            slot: 3,
            generation: 7,
        },
        pseq,
        side,
        hook,
        kind,
        ts_ns: pseq * 1000,
        pkt_pos: pseq,
        tcp_flags: ACK | PSH,
        seq: 100,
        ack: 200,
        payload_len: 10,
        head: 5,
        tail: 15,
    }
}

fn pkt_in(pseq: u64) -> Event {
    event(EventKind::PktIn, pseq, Some(Side::Cli), Hook::Snd)
}

fn pseqs(recs: &[EventRecord]) -> Vec<u64> {
    recs.iter().map(|r| r.pseq).collect()
}

#[test]
fn events_reach_only_the_analyzers_that_subscribed_to_them() {
    use mos_sensor::event::ErrorKind;
    let mut rig = rig(true, LONG, 64);
    let ra = rig.attach(
        1,
        64,
        sub(EventMask::CONN_NEW_DATA | EventMask::CONN_END | EventMask::ERROR),
    );
    let rb = rig.attach(2, 64, sub(EventMask::PKT_IN | EventMask::TCP_STATE_CHANGE));
    let (mut ca, _) = consumer(&ra);
    let (mut cb, _) = consumer(&rb);
    assert_eq!((rig.fo.attached(), rig.fo.ready()), (2, 2));
    assert!(rig.fo.wants(EventMask::PKT_IN));
    assert!(rig.fo.wants(EventMask::CONN_END));
    assert!(!rig.fo.wants(EventMask::REXMIT));

    let state = EventKind::StateChange {
        old: TcpState::Established,
        new: TcpState::FinWait1,
    };
    let error = EventKind::Error {
        kind: ErrorKind::Gap,
        offset: 10,
        len: 20,
    };
    rig.fo.publish(
        &[
            pkt_in(5),
            event(state, 5, Some(Side::Cli), Hook::Snd),
            event(EventKind::Rexmit, 5, Some(Side::Svr), Hook::Rcv),
            event(error, 5, Some(Side::Svr), Hook::Rcv),
            event(EventKind::ConnNewData, 5, Some(Side::Svr), Hook::Null),
        ],
        NO_PKT,
        None,
    );
    let a = drain(&mut ca);
    assert_eq!(a.len(), 2, "{a:?}");
    let (e, nd) = (a[0], a[1]);
    assert_eq!(
        (e.kind, e.side, e.hook),
        (event_kind::ERROR, 1, Hook::Rcv as u8)
    );
    assert_eq!(
        (e.aux0, e.err_offset, e.err_len),
        (ErrorKind::Gap as u8, 10, 20)
    );
    assert_eq!(
        (nd.kind, nd.side, nd.hook),
        (
            event_kind::CONN_NEW_DATA,
            Side::Svr.code(),
            Hook::Null as u8
        )
    );
    assert_eq!((nd.slot, nd.generation, nd.worker), (3, 7, 0));
    assert_eq!((nd.pseq, nd.ts_ns, nd.pkt_pos), (5, 5000, 5));
    assert_eq!((nd.head, nd.tail), (5, 15));
    assert_eq!((nd.seq, nd.ack, nd.payload_len), (100, 200, 10));
    assert_eq!(nd.tcp_flags, ACK | PSH);
    assert_eq!(nd.pkt_ref, NO_PKT);
    let b = drain(&mut cb);
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(
        (b[0].kind, b[0].side, b[0].hook),
        (event_kind::PKT_IN, Side::Cli.code(), Hook::Snd as u8)
    );
    assert_eq!(b[1].kind, event_kind::TCP_STATE_CHANGE);
    assert_eq!(
        (b[1].aux0, b[1].aux1),
        (TcpState::Established.code(), TcpState::FinWait1.code())
    );

    let end = EventKind::ConnEnd {
        reason: EndReason::Reset,
    };
    rig.fo.publish(
        &[
            event(end, 6, Some(Side::Cli), Hook::Null),
            event(end, 6, Some(Side::Svr), Hook::Null),
        ],
        NO_PKT,
        None,
    );
    let a = drain(&mut ca);
    assert_eq!(a.len(), 2);
    assert!(a
        .iter()
        .all(|r| r.kind == event_kind::CONN_END && r.aux0 == EndReason::Reset as u8));
    assert_eq!((a[0].side, a[1].side), (0, 1));
    assert!(drain(&mut cb).is_empty());
    assert_eq!(rig.counter(counter::EVENTS), 6);

    // A new subscription replaces the old one; a detached analyzer gets nothing more.
    rig.control(ToWorker::Subscribe(1, sub(EventMask::PKT_IN)));
    rig.control(ToWorker::Detach(2));
    assert_eq!(rig.fo.attached(), 1);
    assert!(!rig.fo.wants(EventMask::CONN_NEW_DATA));
    rig.fo.publish(
        &[
            pkt_in(7),
            event(EventKind::ConnNewData, 7, Some(Side::Svr), Hook::Null),
        ],
        NO_PKT,
        None,
    );
    assert_eq!(pseqs(&drain(&mut ca)), [7]);
    assert_eq!(ca.consumed(), 5);
    assert!(drain(&mut cb).is_empty());
}

#[test]
fn passed_is_max_when_drained_else_before_the_first_unconsumed_record() {
    let mut rig = rig(true, LONG, 64);
    assert_eq!(rig.fo.passed(), u64::MAX, "no analyzer");
    let r = rig.attach(1, 64, sub(EventMask::PKT_IN));
    let (mut c, _) = consumer(&r);
    assert_eq!(rig.fo.passed(), u64::MAX, "nothing pending");
    rig.fo.publish(&[pkt_in(5)], NO_PKT, None);
    rig.fo.publish(&[pkt_in(6), pkt_in(6)], NO_PKT, None);
    rig.fo.publish(&[pkt_in(7)], NO_PKT, None);
    assert_eq!(rig.fo.passed(), 4);
    let steps = [(1, 5), (1, 5), (1, 6), (1, u64::MAX)];
    for (n, want) in steps {
        for _ in 0..n {
            c.peek().unwrap();
            c.advance();
        }
        assert_eq!(rig.fo.passed(), want, "after {} consumed", c.consumed());
    }
    // An analyzer that writes garbage into its page only fools itself: clamped, no panic.
    let page: &AnalyzerPage = r.page.get(0).unwrap();
    rig.fo.publish(&[pkt_in(8)], NO_PKT, None);
    page.consumer[0].index.store(1 << 40, Ordering::Release);
    assert_eq!(rig.fo.passed(), u64::MAX);
    // Nor can it take back what it claimed: an index moves only forward.
    page.consumer[0].index.store(0, Ordering::Release);
    assert_eq!(rig.fo.passed(), u64::MAX, "an index moved back is ignored");
}

#[test]
fn lossy_full_ring_drops_and_counts() {
    let mut rig = rig(false, STALL, 64);
    let r = rig.attach(1, 4, sub(EventMask::PKT_IN));
    let (mut c, hdr) = consumer(&r);
    let evs: Vec<Event> = (1..=10).map(pkt_in).collect();
    let t = Instant::now();
    rig.fo.publish(&evs, NO_PKT, None);
    assert!(t.elapsed() < STALL, "lossy mode never waits");
    assert_eq!(hdr.dropped.load(Ordering::Relaxed), 6);
    assert_eq!(c.dropped(), 6);
    assert_eq!(rig.counter(counter::EVENTS_DROPPED), 6);
    assert_eq!(rig.counter(counter::EVENTS), 4);
    assert_eq!(pseqs(&drain(&mut c)), [1, 2, 3, 4]);
    // Room again: delivered.
    rig.fo.publish(&[pkt_in(11)], NO_PKT, None);
    assert_eq!(pseqs(&drain(&mut c)), [11]);
    assert_eq!(
        hdr.detached.load(Ordering::Relaxed),
        detach_reason::ATTACHED
    );
    assert_eq!(rig.fo.attached(), 1);
}

/// Consumes `n` records on another thread, pausing `pause` after each, once `start` says so;
/// returns their pseqs.
fn slow_consumer(
    r: &AnalyzerRegions,
    n: usize,
    pause: Duration,
    start: impl Fn(&Consumer<'_>) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Vec<u64>> {
    let r = r.clone();
    std::thread::spawn(move || {
        let (mut c, hdr) = consumer(&r);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !start(&c) {
            assert!(Instant::now() < deadline, "never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut got = Vec::new();
        while got.len() < n {
            if hdr.detached.load(Ordering::Acquire) != 0 {
                break;
            }
            assert!(Instant::now() < deadline, "got only {got:?}");
            match c.peek() {
                Some(rec) => {
                    c.advance();
                    got.push(rec.pseq);
                    std::thread::sleep(pause);
                }
                None => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        got
    })
}

#[test]
fn lossless_full_ring_with_a_slow_consumer_loses_nothing() {
    let mut rig = rig(true, LONG, 64);
    let r = rig.attach(1, 4, sub(EventMask::PKT_IN));
    let t = slow_consumer(&r, 200, Duration::from_micros(300), |_| true);
    for p in 1..=50u64 {
        rig.fo
            .publish(&[pkt_in(p), pkt_in(p), pkt_in(p), pkt_in(p)], NO_PKT, None);
    }
    let got = t.join().unwrap();
    let want: Vec<u64> = (1..=50u64).flat_map(|p| [p; 4]).collect();
    assert_eq!(got, want);
    let (_, hdr) = consumer(&r);
    assert_eq!(hdr.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(rig.counter(counter::EVENTS), 200);
    assert_eq!(rig.counter(counter::EVENTS_DROPPED), 0);
    assert_eq!(rig.fo.attached(), 1);
    assert!(rig.from_w.try_recv().is_err());
}

#[test]
fn a_consumer_that_never_advances_is_detached_after_the_stall_timeout() {
    let mut rig = rig(true, STALL, 64);
    let r = rig.attach(1, 2, sub(EventMask::PKT_IN));
    let (mut c, hdr) = consumer(&r);
    let t = Instant::now();
    rig.fo
        .publish(&(1..=5).map(pkt_in).collect::<Vec<_>>(), NO_PKT, None);
    let took = t.elapsed();
    assert!(took >= STALL, "detached after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(hdr.detached.load(Ordering::Acquire), detach_reason::STALLED);
    assert_eq!(c.detached(), detach_reason::STALLED);
    match rig.from_w.try_recv() {
        Ok(ToControl::Detached(1, why)) => assert!(why.contains("no progress"), "{why}"),
        other => panic!("expected Detached(1, _), got {other:?}"),
    }
    assert_eq!(rig.fo.attached(), 0);
    assert_eq!(rig.counter(counter::STALLED_DETACHED), 1);
    assert_eq!(
        pseqs(&drain(&mut c)),
        [1, 2],
        "what fitted before the stall"
    );
    assert_eq!(rig.fo.passed(), u64::MAX);
}

#[test]
fn waiting_for_a_consumer_that_never_advances_detaches_it() {
    let mut rig = rig(true, STALL, 64);
    let r = rig.attach(1, 16, sub(EventMask::PKT_IN));
    let (_, hdr) = consumer(&r);
    rig.fo.publish(&[pkt_in(9)], NO_PKT, None);
    let t = Instant::now();
    assert_eq!(rig.fo.wait_passed(9), u64::MAX);
    assert!(t.elapsed() >= STALL);
    assert_eq!(hdr.detached.load(Ordering::Acquire), detach_reason::STALLED);
    assert!(matches!(
        rig.from_w.try_recv(),
        Ok(ToControl::Detached(1, _))
    ));
    assert_eq!(rig.counter(counter::WAITS), 1);
}

#[test]
fn an_idle_consumer_is_not_detached_when_events_arrive() {
    let mut rig = rig(true, STALL, 64);
    let r = rig.attach(1, 2, sub(EventMask::PKT_IN));
    // Idle (nothing pending) for longer than the stall timeout.
    std::thread::sleep(STALL + Duration::from_millis(100));
    assert_eq!(rig.fo.passed(), u64::MAX);
    std::thread::sleep(STALL + Duration::from_millis(100));
    // Events fill the ring; the analyzer wakes up a little later and reads them all.
    let t = slow_consumer(&r, 6, Duration::ZERO, |c| {
        if c.pending() >= 2 {
            std::thread::sleep(Duration::from_millis(50));
            true
        } else {
            false
        }
    });
    rig.fo
        .publish(&(1..=6).map(pkt_in).collect::<Vec<_>>(), NO_PKT, None);
    assert_eq!(t.join().unwrap(), [1, 2, 3, 4, 5, 6]);
    let (_, hdr) = consumer(&r);
    assert_eq!(
        hdr.detached.load(Ordering::Acquire),
        detach_reason::ATTACHED
    );
    assert_eq!(rig.fo.attached(), 1);

    // Idle again; then one event, and a wait for it that the analyzer ends 50 ms later.
    std::thread::sleep(STALL + Duration::from_millis(100));
    let t = slow_consumer(&r, 1, Duration::ZERO, |c| {
        if c.pending() >= 1 {
            std::thread::sleep(Duration::from_millis(50));
            true
        } else {
            false
        }
    });
    rig.fo.publish(&[pkt_in(7)], NO_PKT, None);
    assert_eq!(rig.fo.wait_passed(7), u64::MAX);
    assert_eq!(t.join().unwrap(), [7]);
    assert_eq!(
        hdr.detached.load(Ordering::Acquire),
        detach_reason::ATTACHED
    );
    assert_eq!(rig.fo.attached(), 1);
    assert!(rig.from_w.try_recv().is_err());
}

#[test]
fn detaching_a_stalled_analyzer_does_not_cut_off_the_next_one() {
    // A (first) has a ring exactly as large as the batch and never reads; B (second) has a
    // small ring and reads slowly, so the worker waits on B for longer than the stall
    // timeout, and meanwhile detaches A (full, no progress).
    let mut rig = rig(true, STALL, 64);
    let ra = rig.attach(1, 8, sub(EventMask::PKT_IN));
    let rb = rig.attach(2, 2, sub(EventMask::PKT_IN));
    let t = slow_consumer(&rb, 8, Duration::from_millis(60), |_| true);
    rig.fo
        .publish(&(1..=8).map(pkt_in).collect::<Vec<_>>(), NO_PKT, None);
    assert_eq!(t.join().unwrap(), [1, 2, 3, 4, 5, 6, 7, 8], "B lost events");
    let (_, hb) = consumer(&rb);
    assert_eq!(hb.detached.load(Ordering::Acquire), detach_reason::ATTACHED);
    let (_, ha) = consumer(&ra);
    assert_eq!(ha.detached.load(Ordering::Acquire), detach_reason::STALLED);
    assert_eq!(rig.fo.attached(), 1);
    assert!(matches!(
        rig.from_w.try_recv(),
        Ok(ToControl::Detached(1, _))
    ));
    // B goes on receiving.
    rig.fo.publish(&[pkt_in(9)], NO_PKT, None);
    let (mut cb, _) = consumer(&rb);
    assert_eq!(pseqs(&drain(&mut cb)), [9]);
}

/// Reads packet `seq` from the main region's packet log as an analyzer does.
fn read_logged(rd: &Reader, seq: u64) -> Option<(shm_layout::layout::PktInfo, Vec<u8>)> {
    let hdr: &PktLogHeader = rd.map.get(rd.w.pktlog_off as usize).unwrap();
    let entries: &[PktLogEntry] = rd
        .map
        .slice(
            rd.w.pktlog_off as usize + std::mem::size_of::<PktLogHeader>(),
            rd.cfg.pktlog_entries as usize,
        )
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let bytes_off = rd.w.pktlog_bytes_off as usize;
    let (info, n) = shm_layout::pktlog::read_packet(
        hdr,
        entries,
        rd.cfg.pktlog_bytes,
        seq,
        &mut buf,
        |pos, dst| rd.map.read_bytes(bytes_off + pos as usize, dst),
    )?;
    buf.truncate(n);
    Some((info, buf))
}

fn raw(frame: &[u8], ts_ns: u64) -> RawPacket<'_> {
    RawPacket {
        ts_ns,
        link: LinkType::Raw,
        data: frame,
        orig_len: frame.len() as u32 + 20,
    }
}

#[test]
fn the_packet_log_is_kept_only_while_an_analyzer_reads_packets() {
    let mut rig = rig(false, STALL, 64);
    let frame = pattern(90, 11);
    assert_eq!(rig.fo.log_packet(&raw(&frame, 1), None, 0, 1), NO_PKT);
    let r = rig.attach(1, 64, sub(EventMask::PKT_IN));
    assert_eq!(rig.fo.log_packet(&raw(&frame, 1), None, 0, 1), NO_PKT);
    assert_eq!(rig.fo.logged, 0);

    rig.control(ToWorker::Subscribe(
        1,
        Subscription {
            events: EventMask::PKT_IN.0,
            packets: true,
        },
    ));
    let cli = Conv::v4(1234, 80);
    let seg = segment(cli.cli, cli.svr, ACK | PSH, 5, 6, &frame[40..]);
    let s0 = rig.fo.log_packet(&raw(&frame, 777), Some(&seg), 12345, 2);
    assert_ne!(s0, NO_PKT);
    let s1 = rig
        .fo
        .log_packet(&raw(&frame[..50], 778), None, u64::MAX, 3);
    assert_eq!(s1, s0 + 1);
    assert_eq!(rig.fo.logged, 2);

    let (info, bytes) = read_logged(&rig.rd, s0).expect("logged frame");
    assert_eq!(bytes, frame);
    assert_eq!(info.seq, s0);
    assert_eq!((info.ts_ns, info.caplen, info.wirelen), (777, 90, 110));
    assert_eq!(info.offset, 12345);
    assert_eq!(u32::from(info.linktype), LinkType::Raw.code());
    assert_eq!((info.ip_off, info.tcp_off, info.payload_off), (0, 20, 40));
    assert_eq!(info.payload_len, 50);
    let (info, bytes) = read_logged(&rig.rd, s1).unwrap();
    assert_eq!(bytes, frame[..50]);
    assert_eq!(info.ts_ns, 778);
    assert!(read_logged(&rig.rd, s1 + 1).is_none(), "not logged yet");

    // Events name the frame that raised them; events of no frame name none.
    let mut tick = pkt_in(3);
    tick.pkt_pos = u64::MAX;
    rig.fo.publish(&[pkt_in(3), tick], s1, None);
    let (mut c, _) = consumer(&r);
    let recs = drain(&mut c);
    assert_eq!((recs[0].pkt_ref, recs[1].pkt_ref), (s1, NO_PKT));

    // Nobody reads packets any more: the log stops.
    rig.control(ToWorker::Subscribe(1, sub(EventMask::PKT_IN)));
    assert_eq!(rig.fo.log_packet(&raw(&frame, 1), None, 0, 4), NO_PKT);
    assert_eq!(rig.fo.logged, 2);
}

#[test]
fn lossless_packet_log_waits_before_reusing_an_unpassed_frame() {
    // Four entries: the fifth frame reuses the first one's entry.
    let mut rig = rig(true, LONG, 4);
    let r = rig.attach(
        1,
        64,
        Subscription {
            events: EventMask::PKT_IN.0,
            packets: true,
        },
    );
    let frame = pattern(60, 3);
    for p in 1..=4u64 {
        let s = rig.fo.log_packet(&raw(&frame, p), None, 0, p);
        rig.fo.publish(&[pkt_in(p)], s, None);
    }
    assert_eq!(rig.counter(counter::WAITS), 0);
    let t = slow_consumer(&r, 1, Duration::ZERO, |_| {
        std::thread::sleep(Duration::from_millis(100));
        true
    });
    let start = Instant::now();
    let s = rig.fo.log_packet(&raw(&frame, 5), None, 0, 5);
    assert!(
        start.elapsed() >= Duration::from_millis(90),
        "frame 1 was overwritten before the analyzer passed it"
    );
    assert_eq!(t.join().unwrap(), [1]);
    assert_eq!(s, 4);
    assert_eq!(rig.counter(counter::WAITS), 1);
    assert!(read_logged(&rig.rd, 0).is_none(), "entry reused");
    assert!(read_logged(&rig.rd, 4).is_some());
    assert_eq!(rig.fo.attached(), 1);
}

// 4. Control server ---------------------------------------------------------------------------

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use std::io::IoSliceMut;
use std::mem::MaybeUninit;

/// A fresh directory for one test's socket.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mos-pubtest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    // Whatever the umask: another user must reach the socket (one test connects as nobody).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A control server with channels in place of the worker.
#[derive(Debug)]
struct Ctl {
    server: Option<ControlServer>,
    worker: Receiver<ToWorker>,
    to_ctl: Sender<ToControl>,
    path: PathBuf,
    region: MainRegion,
}

const EPOCH: u64 = 0x5eed;

fn ctl_config(path: &Path, region: &MainRegion, allowed: Allowed) -> ControlConfig {
    ControlConfig {
        path: path.to_path_buf(),
        allowed: std::sync::Arc::new(std::sync::Mutex::new(allowed)),
        main_ro: region.ro_fd.try_clone().unwrap(),
        main_len: region.len,
        epoch: EPOCH,
        nworkers: 1,
        event_capacity: 16,
        max_analyzers: 4,
        limits: control::Limits::default(),
        header: region.header,
        info: control::SensorInfo {
            input: "test".into(),
            lossless: true,
            ..control::SensorInfo::default()
        },
    }
}

fn start_ctl(name: &str, allowed: Allowed) -> Ctl {
    let path = temp_dir(name).join("control.sock");
    let (region, _part) = main_region(&config(4, 8, 4));
    let (wtx, worker) = mpsc::channel();
    let (to_ctl, crx) = mpsc::channel();
    let server =
        control::start(ctl_config(&path, &region, allowed), vec![wtx], crx).expect("server");
    Ctl {
        server: Some(server),
        worker,
        to_ctl,
        path,
        region,
    }
}

impl Ctl {
    fn worker_msg(&self) -> ToWorker {
        self.worker
            .recv_timeout(Duration::from_secs(5))
            .expect("a message for the worker")
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(d) = self.path.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn connect(path: &Path) -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(5)),
    )?;
    Ok(fd)
}

fn send_msg(fd: &OwnedFd, m: &ClientMsg) {
    let bytes = encode(m);
    let n = rustix::net::send(fd, &bytes, SendFlags::NOSIGNAL).unwrap();
    assert_eq!(n, bytes.len());
}

/// The next message and the descriptors that came with it; `None` when the sensor closed
/// the socket.
fn recv_msg(fd: &OwnedFd) -> Option<(SensorMsg, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = rustix::net::recvmsg(
        fd,
        &mut [IoSliceMut::new(&mut buf)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("recvmsg (timed out?)");
    let mut fds = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if r.bytes == 0 {
        return None;
    }
    Some((decode(&buf[..r.bytes]).expect("a sensor message"), fds))
}

fn hello(name: &str) -> ClientMsg {
    ClientMsg::Hello {
        abi_major: ABI_MAJOR,
        abi_minor: ABI_MINOR,
        name: name.into(),
    }
}

fn assert_read_only(fd: &OwnedFd, len: u64, what: &str) {
    let m = Mapping::map(fd.as_fd(), len as usize, false, false)
        .unwrap_or_else(|e| panic!("{what}: read-only map: {e}"));
    let probe = m.probe_write(fd.as_fd());
    let eacces = |r: &std::io::Result<()>| {
        r.as_ref().err().and_then(std::io::Error::raw_os_error) == Some(libc::EACCES)
    };
    assert!(
        eacces(&probe.mprotect),
        "{what}: mprotect: {:?}",
        probe.mprotect
    );
    assert!(eacces(&probe.mmap), "{what}: mmap: {:?}", probe.mmap);
    assert!(
        Mapping::map(fd.as_fd(), len as usize, true, false).is_err(),
        "{what}: mapped writable"
    );
}

#[test]
fn a_status_request_is_answered_without_attaching() {
    let ctl = start_ctl("status", Allowed::default());
    // An analyzer attaches and subscribes.
    let a = connect(&ctl.path).unwrap();
    send_msg(&a, &hello("watched"));
    assert!(matches!(recv_msg(&a), Some((SensorMsg::Welcome { .. }, _))));
    assert!(matches!(ctl.worker_msg(), ToWorker::Attach(_)));
    let sub = Subscription {
        events: (EventMask::CONN_START | EventMask::CONN_END).0,
        packets: true,
    };
    send_msg(&a, &ClientMsg::Subscribe(sub));
    assert!(matches!(recv_msg(&a), Some((SensorMsg::Subscribed, _))));
    assert!(matches!(ctl.worker_msg(), ToWorker::Subscribe(1, _)));
    // A status client gets the report, no descriptors, and the socket closes.
    let s = connect(&ctl.path).unwrap();
    send_msg(&s, &ClientMsg::Status);
    let (msg, fds) = recv_msg(&s).expect("an answer");
    assert!(fds.is_empty());
    let SensorMsg::Status(report) = msg else {
        panic!("expected Status, got {msg:?}");
    };
    assert_eq!(report.epoch, EPOCH);
    assert_eq!(report.input, "test");
    assert_eq!(report.mode, "lossless");
    assert_eq!(report.sensor_pid, std::process::id());
    assert_eq!(report.analyzers.len(), 1);
    let w = &report.analyzers[0];
    assert_eq!((w.id, w.name.as_str()), (1, "watched"));
    assert_eq!(w.pid, std::process::id());
    assert_eq!(w.events, ["CONN_START", "CONN_END"]);
    assert!(w.packets && !w.ready);
    assert_eq!((w.published, w.delivered, w.lag, w.dropped), (0, 0, 0, 0));
    assert!(recv_msg(&s).is_none(), "the status socket stays open");
    // The workers never heard of it, and it took no analyzer's place.
    assert!(ctl.worker.try_recv().is_err());
    let b = connect(&ctl.path).unwrap();
    send_msg(&b, &hello("second"));
    assert!(matches!(
        recv_msg(&b),
        Some((SensorMsg::Welcome { analyzer_id: 2, .. }, _))
    ));
}

#[test]
fn hello_is_welcomed_with_three_descriptors_read_only_but_the_page() {
    let ctl = start_ctl("welcome", Allowed::default());
    let c = connect(&ctl.path).unwrap();
    send_msg(&c, &hello("pubtest"));
    let (msg, fds) = recv_msg(&c).expect("an answer");
    let SensorMsg::Welcome {
        analyzer_id,
        epoch,
        main_len,
        events_len,
        event_capacity,
        nworkers,
        page_len,
    } = msg
    else {
        panic!("expected Welcome, got {msg:?}");
    };
    assert_eq!(fds.len(), 3);
    assert_eq!((epoch, main_len), (EPOCH, ctl.region.len));
    assert_eq!((event_capacity, nworkers), (16, 1));
    assert_eq!(page_len, shm_layout::plan::PAGE_LEN);
    let attached = match ctl.worker_msg() {
        ToWorker::Attach(a) => a,
        other => panic!("expected Attach, got {other:?}"),
    };
    assert_eq!(attached.id, analyzer_id);
    assert_eq!(attached.name, "pubtest");
    assert_eq!(attached.pid, std::process::id());
    assert_eq!(attached.regions.plan.len, events_len);

    // Main region and event rings: read-only, enforced by the kernel.
    assert_read_only(&fds[0], main_len, "main region");
    assert_read_only(&fds[1], events_len, "event region");
    let main = Mapping::map(fds[0].as_fd(), main_len as usize, false, false).unwrap();
    let h: &Header = main.get(0).unwrap();
    assert_eq!((h.magic, h.epoch), (MAGIC, EPOCH));
    let events = Mapping::map(fds[1].as_fd(), events_len as usize, false, false).unwrap();
    let eh: &EventRingHeader = events.get(0).unwrap();
    assert_eq!(eh.capacity, 16);
    // The sensor's producer index shows through the analyzer's mapping.
    let sensor_side: &EventRingHeader = attached.regions.events.get(0).unwrap();
    sensor_side.producer.store(3, Ordering::Release);
    assert_eq!(eh.producer.load(Ordering::Acquire), 3);

    // The page: writable, and what the analyzer writes is what the sensor reads.
    let page = Mapping::map(fds[2].as_fd(), page_len as usize, true, false).expect("page rw");
    let p: &AnalyzerPage = page.get(0).unwrap();
    p.consumer[0].index.store(2, Ordering::Release);
    let sensor_page: &AnalyzerPage = attached.regions.page.get(0).unwrap();
    assert_eq!(sensor_page.consumer[0].index.load(Ordering::Acquire), 2);

    // Subscribe, Ready, then the socket closes: detach.
    let s = Subscription {
        events: EventMask::CONN_NEW_DATA.0,
        packets: true,
    };
    send_msg(&c, &ClientMsg::Subscribe(s));
    assert!(matches!(recv_msg(&c), Some((SensorMsg::Subscribed, _))));
    match ctl.worker_msg() {
        ToWorker::Subscribe(id, got) => assert_eq!((id, got), (analyzer_id, s)),
        other => panic!("expected Subscribe, got {other:?}"),
    }
    send_msg(&c, &ClientMsg::Ready);
    assert!(matches!(ctl.worker_msg(), ToWorker::Ready(id) if id == analyzer_id));
    drop(c);
    assert!(matches!(ctl.worker_msg(), ToWorker::Detach(id) if id == analyzer_id));

    // A second analyzer gets another number.
    let c2 = connect(&ctl.path).unwrap();
    send_msg(&c2, &hello("second"));
    match recv_msg(&c2) {
        Some((
            SensorMsg::Welcome {
                analyzer_id: id2, ..
            },
            fds,
        )) => {
            assert_ne!(id2, analyzer_id);
            assert_eq!(fds.len(), 3);
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    send_msg(&c2, &ClientMsg::Detach);
    assert!(matches!(ctl.worker_msg(), ToWorker::Attach(_)));
    assert!(matches!(ctl.worker_msg(), ToWorker::Detach(_)));
}

#[test]
fn another_abi_major_is_refused_with_eproto() {
    let ctl = start_ctl("eproto", Allowed::default());
    let c = connect(&ctl.path).unwrap();
    send_msg(
        &c,
        &ClientMsg::Hello {
            abi_major: ABI_MAJOR + 1,
            abi_minor: 0,
            name: "future".into(),
        },
    );
    match recv_msg(&c) {
        Some((SensorMsg::Refused { errno, reason }, fds)) => {
            assert_eq!(errno, "EPROTO");
            assert!(
                reason.contains(&format!("ABI {}", ABI_MAJOR + 1)),
                "{reason}"
            );
            assert!(fds.is_empty());
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(recv_msg(&c).is_none(), "the sensor closes the socket");
    assert!(ctl.worker.try_recv().is_err(), "no worker hears of it");
}

#[test]
fn socket_file_is_0660_exclusive_replaces_a_stale_one_and_goes_on_drop() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut ctl = start_ctl("socketfile", Allowed::default());
    let meta = std::fs::metadata(&ctl.path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // A second server on the same path is refused while the first runs.
    let (wtx, _w) = mpsc::channel();
    let (_t, crx) = mpsc::channel();
    let err = control::start(
        ctl_config(&ctl.path, &ctl.region, Allowed::default()),
        vec![wtx],
        crx,
    )
    .expect_err("a second server on a live socket");
    let msg = format!("{err:#}");
    assert!(msg.contains(&ctl.path.display().to_string()), "{msg}");
    // The first still serves.
    let c = connect(&ctl.path).unwrap();
    send_msg(&c, &hello("still"));
    assert!(matches!(recv_msg(&c), Some((SensorMsg::Welcome { .. }, _))));
    drop(c);

    // Dropping the server removes the socket file.
    drop(ctl.server.take());
    assert!(!ctl.path.exists(), "socket file left behind");

    // A stale socket file (bound, nobody listening) is replaced.
    let stale = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
    rustix::net::bind(&stale, &SocketAddrUnix::new(&ctl.path).unwrap()).unwrap();
    drop(stale);
    assert!(ctl.path.exists());
    assert!(connect(&ctl.path).is_err(), "nobody listens");
    let (wtx, worker) = mpsc::channel();
    let (to_ctl, crx) = mpsc::channel();
    ctl.server = Some(
        control::start(
            ctl_config(&ctl.path, &ctl.region, Allowed::default()),
            vec![wtx],
            crx,
        )
        .expect("a stale socket is replaced"),
    );
    ctl.worker = worker;
    ctl.to_ctl = to_ctl;
    let c = connect(&ctl.path).unwrap();
    send_msg(&c, &hello("after-stale"));
    assert!(matches!(recv_msg(&c), Some((SensorMsg::Welcome { .. }, _))));
    assert!(matches!(ctl.worker_msg(), ToWorker::Attach(_)));
}

/// An analyzer started as soon as the socket file appears must find a listener behind it,
/// never ECONNREFUSED from a socket bound but not yet listening.
#[test]
fn the_socket_file_appears_only_once_it_listens() {
    let dir = temp_dir("listens");
    let path = dir.join("control.sock");
    let mut refused = 0;
    for _ in 0..200 {
        let watcher = {
            let addr = SocketAddrUnix::new(&path).unwrap();
            let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
            // Connecting in a tight loop until the path exists: the first answer other than
            // ENOENT tells whether a listener was there.
            std::thread::spawn(move || loop {
                match rustix::net::connect(&fd, &addr) {
                    Err(rustix::io::Errno::NOENT) => std::hint::spin_loop(),
                    r => return r,
                }
            })
        };
        let listener = control::Listener::bind(&path, &Allowed::default()).expect("bind");
        if watcher.join().expect("watcher").is_err() {
            refused += 1;
        }
        drop(listener);
        assert!(!path.exists());
    }
    assert_eq!(refused, 0, "connections refused out of 200 starts");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn done_and_detached_reach_the_analyzer() {
    let ctl = start_ctl("done", Allowed::default());
    let a = connect(&ctl.path).unwrap();
    send_msg(&a, &hello("a"));
    let Some((
        SensorMsg::Welcome {
            analyzer_id: ida, ..
        },
        _,
    )) = recv_msg(&a)
    else {
        panic!("no welcome");
    };
    let b = connect(&ctl.path).unwrap();
    send_msg(&b, &hello("b"));
    let Some((
        SensorMsg::Welcome {
            analyzer_id: idb, ..
        },
        _,
    )) = recv_msg(&b)
    else {
        panic!("no welcome");
    };
    assert!(matches!(ctl.worker_msg(), ToWorker::Attach(_)));
    assert!(matches!(ctl.worker_msg(), ToWorker::Attach(_)));

    // The worker detaches A: A is told why, its socket closes, the worker is told.
    ctl.to_ctl
        .send(ToControl::Detached(ida, "made no progress".into()))
        .unwrap();
    match recv_msg(&a) {
        Some((SensorMsg::Detached { reason }, _)) => assert_eq!(reason, "made no progress"),
        other => panic!("expected Detached, got {other:?}"),
    }
    assert!(recv_msg(&a).is_none());
    assert!(matches!(ctl.worker_msg(), ToWorker::Detach(id) if id == ida));

    // The input ends: B is told.
    ctl.to_ctl.send(ToControl::Done).unwrap();
    assert!(matches!(recv_msg(&b), Some((SensorMsg::Done, _))));
    // An analyzer attaching afterwards is welcomed, then told at once.
    let c = connect(&ctl.path).unwrap();
    send_msg(&c, &hello("late"));
    let Some((
        SensorMsg::Welcome {
            analyzer_id: idc, ..
        },
        _,
    )) = recv_msg(&c)
    else {
        panic!("no welcome");
    };
    assert!(idc != ida && idc != idb);
    assert!(matches!(recv_msg(&c), Some((SensorMsg::Done, _))));
}

/// Set in the environment of this test binary when it is re-run as an unprivileged client.
const CLIENT_ENV: &str = "MOS_PUBTEST_CLIENT_SOCKET";

/// Connects to the socket, says hello, and prints the answer's errno (or `WELCOME`).
fn client_answer(path: &Path) -> String {
    let c = match connect(path) {
        Ok(c) => c,
        Err(e) => return format!("connect: {e}"),
    };
    send_msg(&c, &hello("unprivileged"));
    match recv_msg(&c) {
        Some((SensorMsg::Refused { errno, .. }, _)) => errno,
        Some((SensorMsg::Welcome { .. }, _)) => "WELCOME".into(),
        other => format!("{other:?}"),
    }
}

#[test]
fn a_user_not_allowed_is_refused_with_eacces() {
    if let Ok(path) = std::env::var(CLIENT_ENV) {
        // The re-run client (see below): answer on stdout, nothing else.
        use std::io::Write;
        let answer = client_answer(Path::new(&path));
        let mut out = std::io::stdout();
        writeln!(out, "ANSWER={answer}").unwrap();
        out.flush().unwrap();
        std::process::exit(0);
    }
    let ctl = start_ctl("eacces", Allowed::default());
    let euid = rustix::process::geteuid();
    let answer = if euid.is_root() {
        // Root always may attach: re-run this test binary as `nobody` in root's group (so the
        // socket's mode lets it connect, and only the sensor's check can refuse it).
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "a_user_not_allowed_is_refused_with_eacces",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CLIENT_ENV, &ctl.path)
            .uid(65534)
            .gid(0)
            .output()
            .expect("re-run as nobody");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.split("ANSWER=").nth(1))
            .unwrap_or_else(|| panic!("no answer from the client: {stdout} {out:?}"))
            .to_string()
    } else {
        // Not root, and not in the (empty) allowed list.
        client_answer(&ctl.path)
    };
    assert_eq!(answer, "EACCES");
    assert!(ctl.worker.try_recv().is_err());
    // Root (or this user once allowed) is welcomed on the same server.
    if euid.is_root() {
        assert_eq!(client_answer(&ctl.path), "WELCOME");
    }
}

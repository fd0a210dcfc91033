//! The library end to end against [`crate::fake_sensor`]: attach through the control socket,
//! then every call of the API on regions written by hand.

use crate::ctx::{AFTER_COPY, BEFORE_COPY};
use crate::fake_sensor::{Answer, FakeConfig, FakeSensor, MainWriter};
use crate::*;
use shm_layout::control::SensorMsg;
use shm_layout::layout::{
    detach_reason, event_kind, flow_flags, gap_kind, sensor_state, side_flags, EventRecord,
    FlowData, FragRec, GapRec, PktInfo, RingMeta, SideData, NO_PKT, NO_RING,
};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

const W: usize = 0;
const SLOT: u32 = 3;
const GEN: u32 = 5;
const FLOW: FlowId = FlowId {
    worker: 0,
    slot: SLOT,
    generation: GEN,
};

fn opts(path: &Path, packets: bool) -> AttachOptions {
    AttachOptions {
        control: path.to_path_buf(),
        name: "api-test".into(),
        packets,
        ..AttachOptions::default()
    }
}

#[test]
fn attach_waits_for_a_missing_sensor_as_long_as_told() {
    let dir = std::env::temp_dir().join(format!("mos-api-wait-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut o = opts(&dir.join("none.sock"), false);
    o.wait = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    let e = Mos::attach(&o).unwrap_err();
    assert!(started.elapsed() >= o.wait, "{:?}", started.elapsed());
    assert_eq!(e.errno(), Errno::ENOENT);
    assert!(e.message().ends_with("(waited 0.3 s)"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn attach(fake: &FakeSensor) -> Mos {
    Mos::attach(&opts(fake.path(), false)).unwrap()
}

fn side(head: u64, tail: u64, ring: u32) -> SideData {
    SideData {
        head,
        tail,
        ring,
        last_pkt: NO_PKT,
        flags: side_flags::ANCHORED,
        ..Default::default()
    }
}

fn flow_data(generation: u32, cli: SideData, svr: SideData) -> FlowData {
    let mut d = FlowData {
        generation,
        flags: flow_flags::LIVE,
        serial: 42,
        port: [40000, 80],
        start_ns: 1_000,
        last_ns: 2_000,
        sides: [cli, svr],
        ..Default::default()
    };
    d.addr[0][..4].copy_from_slice(&[10, 0, 0, 1]);
    d.addr[1][..4].copy_from_slice(&[10, 0, 0, 2]);
    d
}

fn meta(unknown_below: u64, gaps: &[(u64, u64)], frags: &[(u64, u32)]) -> RingMeta {
    let mut m = RingMeta {
        unknown_below,
        ngaps: gaps.len() as u32,
        nfrags: frags.len() as u32,
        ..Default::default()
    };
    for (i, &(offset, len)) in gaps.iter().enumerate() {
        m.gaps[i] = GapRec {
            offset,
            len,
            kind: gap_kind::MISSED,
        };
    }
    for (i, &(start, len)) in frags.iter().enumerate() {
        m.frags[i] = FragRec {
            start,
            len,
            _pad: 0,
        };
    }
    m
}

/// The byte the client sent at stream offset `o` in these tests: different from the byte a
/// span (256 bytes: 4 chunks of 64) before it, so a byte from a reused chunk never passes for
/// the right one.
fn byte(o: u64) -> u8 {
    (o.wrapping_mul(7) + 3 + (o >> 8).wrapping_mul(29)) as u8
}

fn bytes(range: std::ops::Range<u64>) -> Vec<u8> {
    range.map(byte).collect()
}

/// Publishes the server side (what the client sent) of `FLOW` in buffer 1 with these
/// positions, its bytes `[from, to)` written.
fn publish(fake: &FakeSensor, svr: SideData, m: RingMeta, from: u64, to: u64) {
    fake.main.write_ring(W, 1, from, &bytes(from..to));
    fake.main.set_flow(
        W,
        SLOT,
        &flow_data(GEN, side(0, 0, NO_RING), svr),
        &[(1, m)],
    );
}

fn rec(kind: u8, side: u8, hook: u8) -> EventRecord {
    EventRecord {
        slot: SLOT,
        generation: GEN,
        kind,
        side,
        hook,
        pkt_pos: u64::MAX,
        pkt_ref: NO_PKT,
        socks: u32::MAX,
        ..Default::default()
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn attach_says_hello_maps_read_only_and_detaches_on_drop() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mos = attach(&fake);
    assert_eq!(mos.analyzer_id(), 7);
    assert_eq!(mos.nworkers(), 2);
    assert_eq!(
        fake.log().hello,
        Some((
            shm_layout::layout::ABI_MAJOR,
            shm_layout::layout::ABI_MINOR,
            "api-test".into()
        ))
    );
    assert_ne!(
        fake.page().pid.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let probes = mos.probe_write_protection();
    assert_eq!(probes.len(), 2);
    for (name, p) in &probes {
        let m = p.mprotect.as_ref().expect_err(name);
        assert_eq!(m.raw_os_error(), Some(13), "{name}: mprotect {m}");
        let e = p.mmap.as_ref().expect_err(name);
        assert_eq!(e.raw_os_error(), Some(13), "{name}: mmap {e}");
    }
    drop(mos);
    wait_for("detach", || fake.log().detach == 1);
}

/// Bound, listening sockets that nobody accepts on: with room in its queue the connect
/// succeeds and no welcome comes; with its queue full the connect itself waits. Either way
/// attach gives up with `ETIMEDOUT` within its timeout and a second.
#[test]
fn attach_gives_up_on_a_socket_nobody_accepts_on() {
    use rustix::net::*;
    let dir = tempfile::tempdir().unwrap();
    let listening = |name: &str| {
        let path = dir.path().join(name);
        let l = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        bind(&l, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        listen(&l, 0).unwrap();
        (path, l)
    };
    let (roomy, _l1) = listening("roomy.sock");
    let (full, _l2) = listening("full.sock");
    // Fill the second one's queue with connections of ours.
    let mut held = Vec::new();
    for _ in 0..64 {
        let s = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        if connect(&s, &SocketAddrUnix::new(&full).unwrap()).is_err() {
            break;
        }
        held.push(s);
    }
    // Both attach at once, each on a thread of its own, so that a hang fails the test instead
    // of hanging it.
    let started = Instant::now();
    let tries: Vec<_> = [roomy, full]
        .into_iter()
        .map(|path| {
            let (tx, rx) = std::sync::mpsc::channel();
            let o = opts(&path, false);
            std::thread::spawn(move || {
                let _ = tx.send(Mos::attach(&o).map(|_| ()));
            });
            rx
        })
        .collect();
    let limit = started + crate::mos::REPLY_TIMEOUT + Duration::from_secs(1);
    let mut errors = tries.into_iter().map(|rx| {
        rx.recv_timeout(limit.saturating_duration_since(Instant::now()))
            .expect("attach hung")
            .unwrap_err()
    });
    let e = errors.next().unwrap();
    assert_eq!(e.errno(), Errno::ETIMEDOUT, "{e}");
    assert!(e.to_string().contains("did not answer within 10 s"), "{e}");
    let e = errors.next().unwrap();
    assert_eq!(e.errno(), Errno::ETIMEDOUT, "{e}");
    assert!(
        e.to_string()
            .contains("did not take the connection within 10 s"),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn attach_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.sock");
    let e = Mos::attach(&opts(&missing, false)).unwrap_err();
    assert_eq!(e.errno(), Errno::ENOENT);
    assert_eq!(
        e.to_string(),
        format!(
            "ENOENT: no sensor control socket at {}: is mos-sensor running?",
            missing.display()
        )
    );

    // A socket file nobody listens on any more: the sensor is not running.
    let stale = dir.path().join("stale.sock");
    {
        use rustix::net::*;
        let s = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        bind(&s, &SocketAddrUnix::new(&stale).unwrap()).unwrap();
    }
    let e = Mos::attach(&opts(&stale, false)).unwrap_err();
    assert_eq!(e.errno(), Errno::ECONNREFUSED, "{e}");
    assert!(e.to_string().contains("mos-sensor is not running"), "{e}");
    assert!(!e.to_string().contains('\n'));

    let fake = FakeSensor::with(
        FakeConfig::default(),
        Answer::Refuse("EACCES".into(), "uid 65534 is not allowed".into()),
        |_| {},
    );
    let e = Mos::attach(&opts(fake.path(), false)).unwrap_err();
    assert_eq!(e.errno(), Errno::EACCES);
    assert_eq!(
        e.to_string(),
        "EACCES: the sensor refused to attach: uid 65534 is not allowed"
    );

    // A sensor of the fixed-ring ABI (major 1) is refused.
    let fake = FakeSensor::with(FakeConfig::default(), Answer::Welcome, |h| h.abi_major = 1);
    let e = Mos::attach(&opts(fake.path(), false)).unwrap_err();
    assert_eq!(e.errno(), Errno::EPROTO);
    assert!(e.to_string().contains("ABI major version 1"), "{e}");

    let fake = FakeSensor::with(FakeConfig::default(), Answer::WrongEpoch, |_| {});
    let e = Mos::attach(&opts(fake.path(), false)).unwrap_err();
    assert_eq!(e.errno(), Errno::EPROTO);
    assert!(e.to_string().contains("epoch"), "{e}");
}

#[test]
fn peek_reads_gaps_and_overruns_like_the_sensors_reader() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let mut buf = [0u8; 4];
    let mut big = [0u8; 1000];
    publish(&fake, side(0, 10, 1), meta(0, &[], &[]), 0, 10);
    mos.with_ctx(|c| {
        assert_eq!(c.peek_offset(s, FLOW, Side::Svr).unwrap(), 0);
        assert_eq!(c.peek(s, FLOW, Side::Svr, &mut buf).unwrap(), Peek::Data(4));
        assert_eq!(buf.to_vec(), bytes(0..4));
        assert_eq!(c.peek(s, FLOW, Side::Svr, &mut big).unwrap(), Peek::Data(6));
        assert_eq!(big[..6].to_vec(), bytes(4..10));
        assert_eq!(c.peek(s, FLOW, Side::Svr, &mut big).unwrap(), Peek::NoData);
        // The client side has no stream at all.
        assert_eq!(c.peek(s, FLOW, Side::Cli, &mut big).unwrap(), Peek::NoData);
    });

    // Bytes [20, 25) were never captured; the stream went on to 30.
    publish(&fake, side(0, 30, 1), meta(0, &[(20, 5)], &[]), 10, 30);
    mos.with_ctx(|c| {
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut big).unwrap(),
            Peek::Data(10)
        );
        assert_eq!(big[..10].to_vec(), bytes(10..20));
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut big).unwrap(),
            Peek::Gap { offset: 20, len: 5 }
        );
        assert_eq!(c.peek(s, FLOW, Side::Svr, &mut big).unwrap(), Peek::Data(5));
        assert_eq!(big[..5].to_vec(), bytes(25..30));
    });

    // The stream (at most 256 bytes) moved on to [100, 300) before this reader came back: an
    // overrun, then the bytes from the head, across four chunks.
    publish(&fake, side(100, 300, 1), meta(0, &[(20, 5)], &[]), 100, 300);
    mos.with_ctx(|c| {
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut big).unwrap(),
            Peek::Overrun { lost: 70 }
        );
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut big).unwrap(),
            Peek::Data(200)
        );
        assert_eq!(big[..200].to_vec(), bytes(100..300));
        let n = c.counters();
        assert_eq!(
            (n.overruns, n.overrun_bytes, n.gaps, n.gap_bytes),
            (1, 70, 1, 5)
        );
    });

    // A second socket sees the flow for the first time now: it starts at the oldest byte
    // held, and its pointer is its own.
    let s2 = mos.socket().unwrap();
    mos.with_ctx(|c| {
        assert_eq!(c.peek_offset(s2, FLOW, Side::Svr).unwrap(), 100);
        assert_eq!(
            c.peek(s2, FLOW, Side::Svr, &mut buf).unwrap(),
            Peek::Data(4)
        );
        assert_eq!(c.peek_offset(s2, FLOW, Side::Svr).unwrap(), 104);
        assert_eq!(c.peek_offset(s, FLOW, Side::Svr).unwrap(), 300);
        let e = c.peek(SockId(9), FLOW, Side::Svr, &mut buf).unwrap_err();
        assert_eq!(e.errno(), Errno::EBADF);
    });

    // Gap records evicted: below `unknown_below` the ring cannot tell bytes from gaps.
    let s3 = mos.socket().unwrap();
    publish(&fake, side(100, 300, 1), meta(150, &[], &[]), 100, 300);
    mos.with_ctx(|c| {
        assert_eq!(c.peek_offset(s3, FLOW, Side::Svr).unwrap(), 150);
        assert_eq!(
            c.peek(s2, FLOW, Side::Svr, &mut big).unwrap(),
            Peek::Overrun { lost: 46 }
        );
    });

    // The side lost its ring (the connection closed): a reader behind the tail is overrun.
    publish(&fake, side(300, 300, NO_RING), meta(0, &[], &[]), 0, 0);
    mos.with_ctx(|c| {
        assert_eq!(
            c.peek(s3, FLOW, Side::Svr, &mut big).unwrap(),
            Peek::Overrun { lost: 150 }
        );
        assert_eq!(c.peek(s3, FLOW, Side::Svr, &mut big).unwrap(), Peek::NoData);
    });
}

#[test]
fn a_copy_the_sensor_overwrote_meanwhile_is_an_overrun_not_data() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    publish(&fake, side(0, 100, 1), meta(0, &[], &[]), 0, 100);
    let first = fake.main.chunk_of(W, 1, 0);
    // While the library copies [0, 100), the sensor moves the head past the first chunk, frees
    // it, and reuses it for [256, 296) of the same stream.
    let sensor = fake.main.another();
    let mut fired = false;
    AFTER_COPY.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            if !fired {
                fired = true;
                let svr = |head, tail| flow_data(GEN, side(0, 0, NO_RING), side(head, tail, 1));
                sensor.set_flow(W, SLOT, &svr(64, 100), &[(1, meta(0, &[], &[]))]);
                sensor.write_ring(W, 1, 100, &bytes(100..296));
                sensor.set_flow(W, SLOT, &svr(64, 296), &[(1, meta(0, &[], &[]))]);
            }
        }))
    });
    let mut buf = [0u8; 1000];
    let got = mos.with_ctx(|c| c.peek(s, FLOW, Side::Svr, &mut buf));
    AFTER_COPY.with(|h| *h.borrow_mut() = None);
    assert!(
        [128, 192, 256]
            .map(|o| fake.main.chunk_of(W, 1, o))
            .contains(&first),
        "the chunk was reused"
    );
    assert_eq!(got.unwrap(), Peek::Overrun { lost: 64 });
    assert_eq!(mos.counters().torn_copies, 1);
    mos.with_ctx(|c| {
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut buf).unwrap(),
            Peek::Data(232)
        );
        assert_eq!(buf[..232].to_vec(), bytes(64..296));
    });
}

#[test]
fn ppeek_of_held_data_the_sensor_rewrote_meanwhile_is_copied_again() {
    // Under the linux policy the sensor may rewrite held out-of-order bytes in place: a copy
    // taken while it did is torn, and the library takes it again.
    let fake = FakeSensor::new(FakeConfig {
        overlap_policy: shm_layout::layout::overlap_policy::LINUX,
        ..FakeConfig::default()
    });
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    publish(&fake, side(0, 100, 1), meta(0, &[], &[(150, 10)]), 0, 100);
    fake.main.write_ring(W, 1, 150, b"oooooooooo");
    let sensor = fake.main.another();
    let mut fired = false;
    AFTER_COPY.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            if !fired {
                fired = true;
                // A segment that starts before the island wins over its first 4 bytes.
                sensor.write_ring(W, 1, 146, b"NNNNNNNN");
                sensor.set_flow(
                    W,
                    SLOT,
                    &flow_data(GEN, side(0, 0, NO_RING), side(0, 100, 1)),
                    &[(1, meta(0, &[], &[(146, 14)]))],
                );
            }
        }))
    });
    let mut buf = [0u8; 10];
    let got = mos.with_ctx(|c| c.ppeek(s, FLOW, Side::Svr, &mut buf, 150));
    AFTER_COPY.with(|h| *h.borrow_mut() = None);
    assert_eq!(got.unwrap(), 10);
    assert_eq!(&buf, b"NNNNoooooo");
    assert_eq!(mos.counters().torn_copies, 1);
}

#[test]
fn ppeek_reads_fragments_without_moving_the_pointer() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    // In order [0, 50) with a gap at [10, 20); an island at [80, 100).
    let m = meta(0, &[(10, 10)], &[(80, 20)]);
    fake.main.write_ring(W, 1, 0, &bytes(0..100));
    publish(&fake, side(0, 50, 1), m, 0, 50);
    let mut buf = [0u8; 64];
    mos.with_ctx(|c| {
        assert_eq!(c.ppeek(s, FLOW, Side::Svr, &mut buf, 85).unwrap(), 15);
        assert_eq!(buf[..15].to_vec(), bytes(85..100));
        assert_eq!(c.ppeek(s, FLOW, Side::Svr, &mut buf, 2).unwrap(), 8);
        assert_eq!(buf[..8].to_vec(), bytes(2..10));
        assert_eq!(c.ppeek(s, FLOW, Side::Svr, &mut buf[..3], 30).unwrap(), 3);
        for off in [12, 60, 100] {
            let e = c.ppeek(s, FLOW, Side::Svr, &mut buf, off).unwrap_err();
            assert_eq!(e.errno(), Errno::ENODATA, "offset {off}: {e}");
        }
        assert_eq!(c.peek_offset(s, FLOW, Side::Svr).unwrap(), 0);
        let frags = c.fragments(FLOW, Side::Svr).unwrap();
        assert_eq!(frags.len(), 1);
        assert_eq!((frags[0].offset, frags[0].len), (80, 20));
    });
}

/// A second flow of worker `W` (slot 4), whose server side uses buffer 2.
const OTHER: FlowId = FlowId {
    worker: 0,
    slot: 4,
    generation: 9,
};

/// What the other flow's client sent: nothing like [`byte`].
fn other_bytes(range: std::ops::Range<u64>) -> Vec<u8> {
    range.map(|o| 0xe0 | (o % 16) as u8).collect()
}

/// Publishes the other flow's server side in buffer 2, its bytes `[from, to)` written.
fn publish_other(fake: &MainWriter, head: u64, from: u64, to: u64) {
    fake.write_ring(W, 2, from, &other_bytes(from..to));
    fake.set_flow(
        W,
        OTHER.slot,
        &flow_data(OTHER.generation, side(0, 0, NO_RING), side(head, to, 2)),
        &[(2, meta(0, &[], &[]))],
    );
}

#[test]
fn reads_cross_chunk_boundaries_through_the_chunk_map() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    // Two flows written in turns: their chunks interleave in the pool.
    publish(&fake, side(0, 40, 1), meta(0, &[], &[]), 0, 40);
    publish_other(&fake.main, 0, 0, 70);
    publish(&fake, side(0, 140, 1), meta(0, &[], &[]), 40, 140);
    publish_other(&fake.main, 0, 70, 130);
    publish(&fake, side(0, 250, 1), meta(0, &[], &[]), 140, 250);
    let chunks = [0, 64, 128, 192].map(|o| fake.main.chunk_of(W, 1, o));
    assert!(
        chunks.windows(2).all(|p| p[1] != p[0] + 1),
        "stream chunks are not neighbours: {chunks:?}"
    );
    let mut buf = [0u8; 50];
    let mut big = [0u8; 1000];
    mos.with_ctx(|c| {
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut buf).unwrap(),
            Peek::Data(50)
        );
        assert_eq!(buf.to_vec(), bytes(0..50));
        // [50, 100) crosses from the first chunk into the second.
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut buf).unwrap(),
            Peek::Data(50)
        );
        assert_eq!(buf.to_vec(), bytes(50..100));
        // [100, 250): three chunks.
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut big).unwrap(),
            Peek::Data(150)
        );
        assert_eq!(big[..150].to_vec(), bytes(100..250));
        assert_eq!(c.ppeek(s, FLOW, Side::Svr, &mut buf[..10], 60).unwrap(), 10);
        assert_eq!(buf[..10].to_vec(), bytes(60..70));
        // The other flow's bytes, across its own boundary.
        assert_eq!(c.ppeek(s, OTHER, Side::Svr, &mut buf, 40).unwrap(), 50);
        assert_eq!(buf.to_vec(), other_bytes(40..90));
    });

    // The head moves to 128: the first two chunks are freed. An island at [300, 330) crosses
    // into the sixth stream chunk, whose map entry is the second's, in a reused chunk.
    fake.main.write_ring(W, 1, 300, &bytes(300..330));
    fake.main.set_flow(
        W,
        SLOT,
        &flow_data(GEN, side(0, 0, NO_RING), side(128, 250, 1)),
        &[(1, meta(0, &[], &[(300, 30)]))],
    );
    mos.with_ctx(|c| {
        assert_eq!(c.ppeek(s, FLOW, Side::Svr, &mut big, 300).unwrap(), 30);
        assert_eq!(big[..30].to_vec(), bytes(300..330));
    });

    // The stream fills the whole span from the head's chunk, [128, 384): a new reader gets it
    // in one peek, through all four map entries.
    publish(&fake, side(128, 384, 1), meta(0, &[], &[]), 250, 384);
    let s2 = mos.socket().unwrap();
    mos.with_ctx(|c| {
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut big).unwrap(),
            Peek::Data(134)
        );
        assert_eq!(big[..134].to_vec(), bytes(250..384));
        assert_eq!(
            c.peek(s2, FLOW, Side::Svr, &mut big).unwrap(),
            Peek::Data(256)
        );
        assert_eq!(big[..256].to_vec(), bytes(128..384));
    });
}

#[test]
fn a_chunk_map_that_names_no_chunk_for_held_bytes_is_a_protocol_error() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    publish(&fake, side(0, 200, 1), meta(0, &[], &[]), 0, 200);
    let good = fake.main.chunk_of(W, 1, 70);
    let mut buf = [0u8; 1000];
    for entry in [shm_layout::layout::NO_CHUNK, 16, 0x7fff_ffff] {
        fake.main.spoil_chunk_map(W, 1, 70, entry);
        let s = mos.socket().unwrap();
        mos.with_ctx(|c| {
            let e = c.peek(s, FLOW, Side::Svr, &mut buf).unwrap_err();
            assert_eq!(e.errno(), Errno::EPROTO, "entry {entry:#x}: {e}");
            assert!(e.to_string().contains("chunk map"), "{e}");
            let e = c.ppeek(s, FLOW, Side::Svr, &mut buf[..20], 60).unwrap_err();
            assert_eq!(e.errno(), Errno::EPROTO, "entry {entry:#x}: {e}");
            // Bytes of the other chunks are still read, and the pointer did not move.
            assert_eq!(c.ppeek(s, FLOW, Side::Svr, &mut buf[..10], 0).unwrap(), 10);
            assert_eq!(buf[..10].to_vec(), bytes(0..10));
            assert_eq!(c.peek_offset(s, FLOW, Side::Svr).unwrap(), 0);
        });
    }
    // The slot is rewritten during the copy but the head does not move: the copy still
    // stands, so the missing chunk is still the sensor's error, not an overrun.
    let sensor = fake.main.another();
    AFTER_COPY.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            sensor.set_flow(
                W,
                SLOT,
                &flow_data(GEN, side(0, 0, NO_RING), side(0, 200, 1)),
                &[(1, meta(0, &[], &[]))],
            );
        }))
    });
    let s = mos.socket().unwrap();
    let got = mos.with_ctx(|c| c.peek(s, FLOW, Side::Svr, &mut buf));
    AFTER_COPY.with(|h| *h.borrow_mut() = None);
    assert_eq!(got.unwrap_err().errno(), Errno::EPROTO);
    assert_eq!(mos.counters().torn_copies, 0);
    assert_eq!(mos.counters().overruns, 0);
    // Mended, the same read succeeds.
    fake.main.spoil_chunk_map(W, 1, 70, good);
    mos.with_ctx(|c| {
        assert_eq!(
            c.peek(s, FLOW, Side::Svr, &mut buf).unwrap(),
            Peek::Data(200)
        );
        assert_eq!(buf[..200].to_vec(), bytes(0..200));
    });
}

#[test]
fn a_chunk_another_buffer_reuses_under_the_reader_is_an_overrun() {
    // The sensor moves the head past the first chunk, frees it, and gives it to another
    // flow, whose bytes it writes there: during the copy, then before it.
    for before in [false, true] {
        let fake = FakeSensor::new(FakeConfig::default());
        let mut mos = attach(&fake);
        let s = mos.socket().unwrap();
        publish(&fake, side(0, 100, 1), meta(0, &[], &[]), 0, 100);
        let first = fake.main.chunk_of(W, 1, 0);
        let sensor = fake.main.another();
        let mut fired = false;
        let hook: Box<dyn FnMut()> = Box::new(move || {
            if !fired {
                fired = true;
                sensor.set_flow(
                    W,
                    SLOT,
                    &flow_data(GEN, side(0, 0, NO_RING), side(64, 100, 1)),
                    &[(1, meta(0, &[], &[]))],
                );
                publish_other(&sensor, 0, 0, 64);
            }
        });
        let at = if before { &BEFORE_COPY } else { &AFTER_COPY };
        at.with(|h| *h.borrow_mut() = Some(hook));
        let mut buf = [0u8; 1000];
        let got = mos.with_ctx(|c| c.peek(s, FLOW, Side::Svr, &mut buf));
        at.with(|h| *h.borrow_mut() = None);
        assert_eq!(
            fake.main.chunk_of(W, 2, 0),
            first,
            "the chunk went to buffer 2"
        );
        assert_eq!(fake.main.chunk_of(W, 1, 0), shm_layout::layout::NO_CHUNK);
        assert_eq!(got.unwrap(), Peek::Overrun { lost: 64 }, "before: {before}");
        assert_eq!(mos.counters().torn_copies, 1);
        mos.with_ctx(|c| {
            assert_eq!(
                c.peek(s, FLOW, Side::Svr, &mut buf).unwrap(),
                Peek::Data(36)
            );
            assert_eq!(buf[..36].to_vec(), bytes(64..100));
            assert_eq!(c.ppeek(s, OTHER, Side::Svr, &mut buf, 0).unwrap(), 64);
            assert_eq!(buf[..64].to_vec(), other_bytes(0..64));
        });
    }
}

#[test]
fn a_stale_handle_is_ebadf_never_another_flows_data() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    publish(&fake, side(0, 10, 1), meta(0, &[], &[]), 0, 10);
    fake.main.set_flow(
        W,
        SLOT,
        &flow_data(GEN + 1, side(0, 0, NO_RING), side(0, 10, 1)),
        &[(1, meta(0, &[], &[]))],
    );
    let mut buf = [0u8; 16];
    mos.with_ctx(|c| {
        let e = c.peek(s, FLOW, Side::Svr, &mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            "EBADF: flow handle 0/3/5 is stale (slot reused)"
        );
        assert_eq!(
            c.ppeek(s, FLOW, Side::Svr, &mut buf, 0)
                .unwrap_err()
                .errno(),
            Errno::EBADF
        );
        assert_eq!(c.getpeername(FLOW, 2).unwrap_err().errno(), Errno::EBADF);
        assert_eq!(
            c.tcp_state(FLOW, Side::Cli).unwrap_err().errno(),
            Errno::EBADF
        );
        let far = FlowId { slot: 99, ..FLOW };
        assert_eq!(c.flow_info(far).unwrap_err().errno(), Errno::EBADF);
        let other_worker = FlowId { worker: 9, ..FLOW };
        assert_eq!(c.flow_info(other_worker).unwrap_err().errno(), Errno::EBADF);
    });
    let mut gone = flow_data(GEN, side(0, 0, NO_RING), side(0, 10, 1));
    gone.flags = 0;
    fake.main.set_flow(W, SLOT, &gone, &[]);
    mos.with_ctx(|c| {
        let e = c.peek(s, FLOW, Side::Svr, &mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            "EBADF: flow handle 0/3/5 is stale (connection gone)"
        );
    });
}

#[test]
fn getsockopt_gives_sequence_numbers_states_and_the_overlap_policy() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let mut svr = side(0, 300, 1);
    svr.base_seq = 0xffff_fff0;
    svr.state = TcpState::Established.code();
    let mut cli = side(0, 0, NO_RING);
    cli.flags = 0;
    cli.state = TcpState::FinWait1.code();
    fake.main.set_flow(
        W,
        SLOT,
        &flow_data(GEN, cli, svr),
        &[(1, meta(0, &[], &[(310, 10), (400, 4)]))],
    );
    mos.with_ctx(|c| {
        let info = c.buf_info(FLOW, Side::Svr).unwrap();
        assert_eq!(
            info,
            TcpBufInfo {
                init_seq: 0xffff_fff0,
                last_byte_read: 300 - 16,
                next_byte_expected: 300 - 16,
                last_byte_received: 404 - 16,
            }
        );
        assert_eq!(
            c.getsockopt(FLOW, SockOpt::InfoSvrBuf).unwrap(),
            OptValue::BufInfo(info)
        );
        assert_eq!(
            c.getsockopt(FLOW, SockOpt::FragInfoSvrBuf).unwrap(),
            OptValue::Fragments(vec![
                RingFragment {
                    seq: 310 - 16,
                    offset: 310,
                    len: 10
                },
                RingFragment {
                    seq: 400 - 16,
                    offset: 400,
                    len: 4
                },
            ])
        );
        let e = c.getsockopt(FLOW, SockOpt::InfoCliBuf).unwrap_err();
        assert_eq!(e.errno(), Errno::ENODATA, "{e}");
        assert_eq!(
            c.getsockopt(FLOW, SockOpt::TcpStateCli).unwrap(),
            OptValue::State(TcpState::FinWait1)
        );
        assert_eq!(
            c.getsockopt(FLOW, SockOpt::TcpStateSvr).unwrap(),
            OptValue::State(TcpState::Established)
        );
        assert_eq!(
            c.getsockopt(FLOW, SockOpt::CliOverlap).unwrap(),
            OptValue::Overlap(OverlapPolicy::FirstCopy)
        );
        c.set_overlap_policy(s, OverlapPolicy::FirstCopy).unwrap();
        let e = c
            .set_overlap_policy(s, OverlapPolicy::LastCopy)
            .unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        assert!(e.to_string().contains("first copy wins"), "{e}");
    });
}

#[test]
fn overlap_policy_is_the_sensors_for_both_sides() {
    use shm_layout::layout::overlap_policy;
    let cases = [
        (overlap_policy::FIRST, OverlapPolicy::FirstCopy),
        (overlap_policy::LAST, OverlapPolicy::LastCopy),
        (overlap_policy::LINUX, OverlapPolicy::Linux),
        (overlap_policy::BSD, OverlapPolicy::Bsd),
        (overlap_policy::WINDOWS, OverlapPolicy::Windows),
        (9, OverlapPolicy::Other(9)),
    ];
    for (code, policy) in cases {
        assert_eq!(OverlapPolicy::from_code(code), policy);
        assert_eq!(policy.code(), code);
        let fake = FakeSensor::new(FakeConfig {
            overlap_policy: code,
            ..FakeConfig::default()
        });
        let mut mos = attach(&fake);
        let s = mos.socket().unwrap();
        publish(&fake, side(0, 0, NO_RING), meta(0, &[], &[]), 0, 0);
        mos.with_ctx(|c| {
            assert_eq!(c.overlap_policy(), policy);
            for opt in [SockOpt::CliOverlap, SockOpt::SvrOverlap] {
                assert_eq!(c.getsockopt(FLOW, opt).unwrap(), OptValue::Overlap(policy));
            }
            // Asking for the sensor's own policy is accepted; any other is refused, saying
            // which one the sensor applies.
            c.set_overlap_policy(s, policy).unwrap();
            for other in cases.map(|(_, p)| p).into_iter().filter(|&p| p != policy) {
                let e = c.set_overlap_policy(s, other).unwrap_err();
                assert_eq!(e.errno(), Errno::EINVAL, "{e}");
                let msg = e.to_string();
                assert!(msg.contains(&policy.describe()), "{msg}");
                assert!(msg.contains(&other.describe()), "{msg}");
                assert!(msg.contains("--overlap"), "{msg}");
            }
        });
    }
}

#[test]
fn getpeername_gives_client_then_server_for_v4_and_v6() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    publish(&fake, side(0, 0, NO_RING), meta(0, &[], &[]), 0, 0);
    let mut v6 = flow_data(1, side(0, 0, NO_RING), side(0, 0, NO_RING));
    v6.flags |= flow_flags::IPV6;
    v6.addr[0] = "2001:db8::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    v6.addr[1] = "2001:db8::2"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    v6.port = [50000, 443];
    fake.main.set_flow(1, 0, &v6, &[]);
    let flow6 = FlowId {
        worker: 1,
        slot: 0,
        generation: 1,
    };
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    mos.with_ctx(|c| {
        assert_eq!(
            c.getpeername(FLOW, MOS_SIDE_BOTH).unwrap(),
            vec![a("10.0.0.1:40000"), a("10.0.0.2:80")]
        );
        assert_eq!(
            c.getpeername(FLOW, Side::Svr.code()).unwrap(),
            vec![a("10.0.0.2:80")]
        );
        assert_eq!(
            c.getpeername(flow6, MOS_SIDE_BOTH).unwrap(),
            vec![a("[2001:db8::1]:50000"), a("[2001:db8::2]:443")]
        );
        assert_eq!(
            c.getpeername(flow6, Side::Cli.code()).unwrap(),
            vec![a("[2001:db8::1]:50000")]
        );
        assert_eq!(c.getpeername(FLOW, 3).unwrap_err().errno(), Errno::EINVAL);
        let info = c.flow_info(flow6).unwrap();
        assert_eq!(
            (info.serial, info.client, info.guessed),
            (42, a("[2001:db8::1]:50000"), false)
        );
    });
}

fn frame(tag: u8) -> (PktInfo, Vec<u8>) {
    let mut f = vec![tag; 14 + 20];
    f.extend_from_slice(&[
        0, 1, 0, 2, 0, 0, 0, tag, 0, 0, 0, 0, 0x50, 0x10, 0, 0, 0, 0, 0, 0,
    ]);
    f.extend_from_slice(b"payload");
    let info = PktInfo {
        ts_ns: u64::from(tag),
        ip_off: 14,
        tcp_off: 34,
        payload_off: 54,
        payload_len: 7,
        ..Default::default()
    };
    (info, f)
}

#[test]
fn getlastpkt_gives_the_raising_frame_in_callbacks_and_enodata_once_overwritten() {
    let fake = Rc::new(FakeSensor::new(FakeConfig::default()));
    let mut mos = Mos::attach(&opts(fake.path(), true)).unwrap();
    assert!(fake.log().subscriptions.last().unwrap().packets);
    let s = mos.socket().unwrap();
    let seqs: Vec<u64> = (0..2u8)
        .map(|t| {
            let (i, f) = frame(t);
            fake.main.log_packet(W, i, &f)
        })
        .collect();
    assert_eq!(seqs, [0, 1]);
    let mut svr = side(0, 0, NO_RING);
    svr.last_pkt = 1;
    fake.main
        .set_flow(W, SLOT, &flow_data(GEN, side(0, 0, NO_RING), svr), &[]);
    mos.with_ctx(|c| {
        let p = c.getlastpkt(FLOW, Side::Svr).unwrap();
        assert_eq!((p.seq, p.ts_ns, p.tcp_seq()), (1, 1, Some(1)));
        assert_eq!(p.payload(), b"payload");
        let e = c.getlastpkt(FLOW, Side::Cli).unwrap_err();
        assert_eq!(e.errno(), Errno::ENODATA, "{e}");
    });
    let seen = Rc::new(RefCell::new(Vec::new()));
    {
        let seen = seen.clone();
        let fake = fake.clone();
        mos.register_callback(s, EventMask::PKT_IN, Hook::Rcv, move |c, ev| {
            let first = c.getlastpkt(FLOW, Side::Svr).map(|p| p.seq);
            // The log holds 4 frames: 4 more push frame 0 out.
            for t in 10..14 {
                let (i, f) = frame(t);
                fake.main.log_packet(W, i, &f);
            }
            let again = c.getlastpkt(FLOW, Side::Svr).map_err(|e| e.errno());
            seen.borrow_mut().push((ev.pkt_ref, first.unwrap(), again));
        })
        .unwrap();
    }
    let mut r = rec(event_kind::PKT_IN, 1, 1);
    r.pkt_ref = 0;
    assert!(fake.push_event(W, r));
    fake.set_state(sensor_state::DONE);
    assert_eq!(mos.run().unwrap(), RunEnd::Done);
    assert_eq!(
        seen.borrow().clone(),
        vec![(Some(0), 0, Err(Errno::ENODATA))]
    );

    // Without `packets`, getlastpkt says so.
    drop(mos);
    let mut plain = attach(&fake);
    let e = plain
        .with_ctx(|c| c.getlastpkt(FLOW, Side::Svr))
        .unwrap_err();
    assert_eq!(e.errno(), Errno::ENODATA);
    assert!(e.to_string().contains("did not ask for packets"), "{e}");
}

type Seen = Rc<RefCell<Vec<(char, u8, Option<Side>)>>>;

fn recorder(seen: &Seen, tag: char) -> impl FnMut(&mut Ctx<'_>, &Event) + 'static {
    let seen = seen.clone();
    move |_, ev| seen.borrow_mut().push((tag, ev.record.kind, ev.side))
}

#[test]
fn events_go_to_the_callbacks_whose_mask_hook_and_side_match() {
    let fake = Rc::new(FakeSensor::new(FakeConfig::default()));
    let mut mos = attach(&fake);
    let a = mos.socket().unwrap();
    let b = mos.socket().unwrap();
    let seen: Seen = Rc::default();
    mos.register_callback(a, EventMask::CONN_NEW_DATA, Hook::Rcv, recorder(&seen, 'a'))
        .unwrap();
    mos.register_callback(
        a,
        EventMask::TCP_STATE_CHANGE,
        Hook::Snd,
        recorder(&seen, 'a'),
    )
    .unwrap();
    mos.register_filtered(
        b,
        Filter {
            events: EventMask::CONN_START,
            hook: None,
            side: Some(Side::Svr),
        },
        recorder(&seen, 'b'),
    )
    .unwrap();
    // The consumer index moves only after an event's callbacks returned.
    {
        let fake = fake.clone();
        mos.register_callback(b, EventMask::REXMIT, Hook::Rcv, move |_, _| {
            let c = fake.page().consumer[1]
                .index
                .load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(c, 0, "consumed before the callback returned");
        })
        .unwrap();
    }
    mos.register_callback(b, EventMask::PKT_IN, Hook::Rcv, recorder(&seen, 'b'))
        .unwrap();
    assert_eq!(
        mos.unregister_callback(b, EventMask::PKT_IN, Hook::Rcv)
            .unwrap(),
        1
    );
    let want = EventMask::CONN_NEW_DATA.0
        | EventMask::TCP_STATE_CHANGE.0
        | EventMask::CONN_START.0
        | EventMask::REXMIT.0
        | EventMask::CONN_END.0;
    assert_eq!(fake.log().subscriptions.last().unwrap().events, want);

    publish(&fake, side(0, 10, 1), meta(0, &[], &[]), 0, 10);
    let mut change = rec(event_kind::TCP_STATE_CHANGE, 0, 1);
    change.aux0 = TcpState::SynSent.code();
    change.aux1 = TcpState::Established.code();
    let events = [
        rec(event_kind::CONN_START, 0, 2),
        rec(event_kind::CONN_START, 1, 1),
        change,
        EventRecord { hook: 2, ..change },
        rec(event_kind::CONN_NEW_DATA, 1, 0),
        rec(event_kind::PKT_IN, 1, 1),
        EventRecord {
            kind: 1,
            ..rec(0, 1, 1)
        },
    ];
    for e in events {
        assert!(fake.push_event(W, e));
    }
    let mut rexmit = rec(event_kind::REXMIT, 1, 1);
    rexmit.slot = 0;
    assert!(fake.push_event(1, rexmit));
    fake.set_state(sensor_state::DONE);
    assert_eq!(mos.run().unwrap(), RunEnd::Done);
    wait_for("ready", || fake.log().ready == 1);
    assert_eq!(
        seen.borrow().clone(),
        vec![
            ('b', event_kind::CONN_START, Some(Side::Svr)),
            ('a', event_kind::TCP_STATE_CHANGE, Some(Side::Cli)),
            ('a', event_kind::CONN_NEW_DATA, Some(Side::Svr)),
        ]
    );
    let n = mos.counters();
    assert_eq!((n.events, n.events_malformed, n.callbacks), (8, 1, 4));
    let consumed = |w: usize| {
        fake.page().consumer[w]
            .index
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!((consumed(0), consumed(1)), (7, 1));
}

#[test]
fn read_pointers_are_dropped_after_conn_end() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let read = Rc::new(RefCell::new(Vec::new()));
    {
        let read = read.clone();
        mos.register_callback(s, EventMask::CONN_NEW_DATA, Hook::Null, move |c, ev| {
            let flow = ev.flow.unwrap();
            let side = ev.side.unwrap();
            let mut buf = [0u8; 64];
            while let Ok(Peek::Data(n)) = c.peek(s, flow, side, &mut buf) {
                read.borrow_mut().extend_from_slice(&buf[..n]);
            }
        })
        .unwrap();
    }
    publish(&fake, side(0, 10, 1), meta(0, &[], &[]), 0, 10);
    // The event announced the ten bytes: in its callback, peek reads up to there.
    assert!(fake.push_event(
        W,
        EventRecord {
            tail: 10,
            ..rec(event_kind::CONN_NEW_DATA, 1, 0)
        }
    ));
    assert!(fake.push_event(W, rec(event_kind::CONN_END, 0, 0)));
    fake.set_state(sensor_state::DONE);
    // CONN_END is subscribed to though no callback wants it: it ends the read pointers.
    assert_eq!(
        fake.log().subscriptions.last().unwrap().events,
        EventMask::CONN_NEW_DATA.0 | EventMask::CONN_END.0
    );
    assert_eq!(mos.run().unwrap(), RunEnd::Done);
    assert_eq!(read.borrow().clone(), bytes(0..10));
    // After the client's CONN_END the pointer is still there...
    assert_eq!(
        mos.with_ctx(|c| c.peek_offset(s, FLOW, Side::Svr)).unwrap(),
        10
    );
    // ...and after the server's it is gone: a new reader would start over.
    assert!(fake.push_event(W, rec(event_kind::CONN_END, 1, 0)));
    assert_eq!(mos.run().unwrap(), RunEnd::Done);
    assert_eq!(
        mos.with_ctx(|c| c.peek_offset(s, FLOW, Side::Svr)).unwrap(),
        0
    );
}

#[test]
fn the_run_loop_ends_on_done_and_fails_when_the_sensor_goes() {
    // Done said on the socket, the header still running.
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    fake.send(SensorMsg::Done);
    assert_eq!(mos.run().unwrap(), RunEnd::Done);

    // The sensor dies: the socket closes without Done.
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    fake.hang_up();
    let e = mos.run().unwrap_err();
    assert_eq!(
        e.to_string(),
        "ENOTCONN: the sensor went away (control socket closed)"
    );

    // The sensor detached this analyzer.
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    fake.mark_detached(1, detach_reason::STALLED);
    let e = mos.run().unwrap_err();
    assert_eq!(e.errno(), Errno::ENOTCONN);
    assert!(
        e.to_string()
            .contains("made no progress for the stall timeout"),
        "{e}"
    );

    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    fake.send(SensorMsg::Detached {
        reason: "shutting down".into(),
    });
    let e = mos.run().unwrap_err();
    assert!(e.to_string().contains("shutting down"), "{e}");

    // A stop from a callback ends the loop after that event, which is consumed.
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    mos.register_callback(s, EventMask::CONN_START, Hook::Snd, |c, _| c.stop())
        .unwrap();
    fake.count_drop(0, 3);
    assert!(fake.push_event(W, rec(event_kind::CONN_START, 0, 2)));
    assert!(fake.push_event(W, rec(event_kind::CONN_START, 0, 2)));
    assert_eq!(mos.run().unwrap(), RunEnd::Stopped);
    assert_eq!(
        fake.page().consumer[0]
            .index
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(mos.counters().events_dropped, 3);
    // And a stop handle ends it from outside.
    let h = mos.stop_handle();
    h.stop();
    assert_eq!(mos.run().unwrap(), RunEnd::Stopped);
    assert_ne!(
        fake.page()
            .heartbeat_ns
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// A sensor that dies while the analyzer has a backlog: the loop notices while it is busy,
/// takes what was published for a bounded time, and fails well within a second, saying how
/// many events it left (a slow callback would have taken seconds to take them all).
#[test]
fn a_sensor_gone_with_a_backlog_ends_the_run_loop_within_a_second() {
    let fake = FakeSensor::new(FakeConfig {
        event_capacity: 1024,
        ..FakeConfig::default()
    });
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    let seen = Rc::new(RefCell::new(0u64));
    let count = seen.clone();
    mos.register_callback(s, EventMask::CONN_START, Hook::Snd, move |_, _| {
        *count.borrow_mut() += 1;
        std::thread::sleep(Duration::from_millis(2));
    })
    .unwrap();
    let total = 2 * 1024;
    for w in 0..2 {
        for _ in 0..1024 {
            assert!(fake.push_event(w, rec(event_kind::CONN_START, 0, 2)));
        }
    }
    fake.hang_up();
    let t = Instant::now();
    let e = mos.run().unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.errno(), Errno::ENOTCONN, "{e}");
    assert!(took < Duration::from_secs(1), "{took:?}: {e}");
    let seen = *seen.borrow();
    let left = format!(
        "the sensor went away (control socket closed); {} events it had published were left unread",
        total - seen
    );
    assert!(e.to_string().contains(&left), "{e} ({seen} seen)");
    assert!(seen > 0 && seen < total, "{seen}");
}

/// A slot the sensor was writing when it died stays busy: once the sensor is known gone, a
/// read of it fails at once (`EAGAIN`) instead of waiting for the writer.
#[test]
fn a_slot_a_dead_sensor_left_busy_fails_at_once() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    fake.main.set_flow(
        W,
        SLOT,
        &flow_data(GEN, side(0, 0, NO_RING), side(0, 0, NO_RING)),
        &[],
    );
    assert!(mos.with_ctx(|c| c.flow_info(FLOW)).is_ok());
    fake.main.leave_busy(W, SLOT);
    fake.hang_up();
    assert_eq!(mos.run().unwrap_err().errno(), Errno::ENOTCONN);
    let t = Instant::now();
    let e = mos.with_ctx(|c| c.flow_info(FLOW)).unwrap_err();
    assert_eq!(e.errno(), Errno::EAGAIN, "{e}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn concurrent_overwrites_never_come_back_as_data() {
    // A writer thread streams bytes through a buffer of 4 chunks of 64 bytes as the sensor
    // must: it publishes the new head (which frees the chunks below it), then writes the bytes
    // (into chunks taken from the pool, the freed ones first), then publishes the new tail.
    // The reader peeks with small buffers at the same time; every byte it gets must be the
    // byte sent at that offset, and what it does not get must be reported as lost.
    const END: u64 = 200_000;
    let fake = FakeSensor::new(FakeConfig::default());
    let mut mos = attach(&fake);
    let s = mos.socket().unwrap();
    publish(&fake, side(0, 0, 1), meta(0, &[], &[]), 0, 0);
    let sensor = fake.main.another();
    // The writer stays at most 300 bytes ahead of the reader, so the two keep meeting where
    // chunks are freed and reused (as the lossless sensor keeps pace with a slow analyzer,
    // but closer).
    let reader_at = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pace = reader_at.clone();
    let writer = std::thread::spawn(move || {
        let (mut head, mut tail, mut step) = (0u64, 0u64, 1u64);
        let put = |head: u64, tail: u64| {
            sensor.set_flow(
                W,
                SLOT,
                &flow_data(GEN, side(0, 0, NO_RING), side(head, tail, 1)),
                &[(1, meta(0, &[], &[]))],
            )
        };
        while tail < END {
            step = step * 7 % 97 + 1;
            let new_tail = (tail + step).min(END);
            // The side holds at most 4 chunks from the one its head is in.
            head = head.max(new_tail.div_ceil(64).saturating_sub(4) * 64);
            put(head, tail);
            sensor.write_ring(W, 1, tail, &bytes(tail..new_tail));
            tail = new_tail;
            put(head, tail);
            while tail.saturating_sub(pace.load(std::sync::atomic::Ordering::Relaxed)) > 300 {
                std::hint::spin_loop();
            }
        }
    });
    let (mut got, mut lost) = (0u64, 0u64);
    let mut buf = [0u8; 250];
    while got + lost < END {
        let (at, tail) = mos.with_ctx(|c| {
            let at = c.peek_offset(s, FLOW, Side::Svr).unwrap();
            (at, c.flow_info(FLOW).unwrap().side(Side::Svr).tail)
        });
        reader_at.store(at, std::sync::atomic::Ordering::Relaxed);
        // Lag most of a span behind, so copies and chunk reuse meet.
        if tail < END && tail - at < 230 {
            std::hint::spin_loop();
            continue;
        }
        match mos
            .with_ctx(|c| c.peek(s, FLOW, Side::Svr, &mut buf))
            .unwrap()
        {
            Peek::Data(n) => {
                assert_eq!(buf[..n].to_vec(), bytes(at..at + n as u64), "at {at}");
                got += n as u64;
            }
            Peek::Overrun { lost: n } => lost += n,
            Peek::NoData => std::thread::yield_now(),
            Peek::Gap { .. } => panic!("no gap was published"),
        }
    }
    writer.join().unwrap();
    assert_eq!(got + lost, END);
    assert!(got > 0);
}

#[test]
fn a_share_of_the_workers_is_sent_once_attached_and_covers_each_worker_once() {
    // Worker w goes to share w % count: every worker to exactly one share.
    for nworkers in 1..=8 {
        for count in 1..=5u32 {
            let masks: Vec<u32> = (0..count).map(|i| share_mask(i, count, nworkers)).collect();
            let all = masks.iter().fold(0u32, |a, m| {
                assert_eq!(a & m, 0, "{nworkers} workers, {count} shares: {masks:?}");
                a | m
            });
            assert_eq!(
                all,
                (1u32 << nworkers) - 1,
                "{nworkers} workers, {count} shares"
            );
        }
    }
    assert_eq!(share_mask(0, 2, 3), 0b101);
    assert_eq!(share_mask(1, 2, 3), 0b010);
    assert_eq!(share_mask(3, 4, 2), 0);
    let fake = FakeSensor::new(FakeConfig {
        nworkers: 3,
        ..FakeConfig::default()
    });
    let mut o = opts(fake.path(), false);
    o.share = Some((1, 2));
    let mos = Mos::attach(&o).unwrap();
    assert_eq!(fake.log().workers, vec![0b010]);
    drop(mos);
    o.share = Some((2, 2));
    assert_eq!(Mos::attach(&o).unwrap_err().errno(), Errno::EINVAL);
    // Without a share, no Workers message: every worker's connections.
    let _plain = attach(&fake);
    assert_eq!(fake.log().workers, vec![0b010]);
}

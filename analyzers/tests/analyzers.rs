//! `mos-dump` and `mos-flowstat` as processes, attached to the library's fake sensor: what
//! they write, print and exit with.

use mos_client::dump::{DumpWriter, FlowEnd};
use mos_client::fake_sensor::{FakeConfig, FakeSensor};
use mos_client::{FlowId, Side};
use shm_layout::layout::{
    event_kind, flow_flags, sensor_state, side_flags, EventRecord, FlowData, GapRec, RingMeta,
    SideData, NO_PKT, NO_RING,
};
use shm_layout::TcpState;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn byte(o: u64) -> u8 {
    (o.wrapping_mul(13) + 1) as u8
}

fn bytes(r: std::ops::Range<u64>) -> Vec<u8> {
    r.map(byte).collect()
}

fn side(head: u64, tail: u64, ring: u32, isn: Option<u32>) -> SideData {
    SideData {
        head,
        tail,
        ring,
        last_pkt: NO_PKT,
        isn: isn.unwrap_or(0),
        flags: side_flags::ANCHORED
            | if isn.is_some() {
                side_flags::HAS_ISN
            } else {
                0
            },
        state: TcpState::Established.code(),
        ..Default::default()
    }
}

fn flow(
    generation: u32,
    serial: u64,
    client: [u8; 4],
    port: u16,
    sides: [SideData; 2],
) -> FlowData {
    let mut d = FlowData {
        generation,
        flags: flow_flags::LIVE,
        serial,
        port: [port, 80],
        start_ns: 1_700_000_000_000_000_000 + serial,
        last_ns: 1_700_000_001_500_000_000,
        sides,
        ..Default::default()
    };
    d.addr[0][..4].copy_from_slice(&client);
    d.addr[1][..4].copy_from_slice(&[10, 0, 0, 100]);
    d
}

fn rec(slot: u32, generation: u32, kind: u8, side: u8, hook: u8) -> EventRecord {
    EventRecord {
        slot,
        generation,
        kind,
        side,
        hook,
        pkt_pos: u64::MAX,
        pkt_ref: NO_PKT,
        socks: u32::MAX,
        ..Default::default()
    }
}

fn gap_meta(offset: u64, len: u64) -> RingMeta {
    let mut m = RingMeta {
        ngaps: 1,
        ..Default::default()
    };
    m.gaps[0] = GapRec {
        offset,
        len,
        kind: 0,
    };
    m
}

fn finish(mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("the analyzer did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn spawn(bin: &str, args: &[&str]) -> Child {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn mos_dump_writes_what_the_shared_writer_writes() {
    let fake = FakeSensor::new(FakeConfig {
        nworkers: 1,
        ..FakeConfig::default()
    });
    // Flow A (slot 3): 30 bytes client to server with a gap at [10, 15), 5 bytes back.
    fake.main.write_ring(0, 1, 0, &bytes(0..30));
    fake.main.write_ring(0, 2, 0, b"hello");
    let a = flow(
        5,
        1,
        [10, 0, 0, 1],
        40000,
        [side(0, 5, 2, Some(1000)), side(0, 30, 1, Some(7))],
    );
    fake.main
        .set_flow(0, 3, &a, &[(1, gap_meta(10, 5)), (2, RingMeta::default())]);
    // Flow B (slot 4), picked up late: its ring moved on to [100, 120) before the analyzer
    // first saw it.
    fake.main.write_ring(0, 3, 100, &bytes(100..120));
    let b = flow(
        2,
        2,
        [10, 0, 0, 2],
        40001,
        [side(0, 0, NO_RING, None), side(100, 120, 3, None)],
    );
    fake.main.set_flow(0, 4, &b, &[(3, RingMeta::default())]);
    for r in [
        rec(3, 5, event_kind::CONN_START, 0, 2),
        // Each announces its side's stream up to its tail: peek in its callback reads to there.
        EventRecord {
            tail: 30,
            ..rec(3, 5, event_kind::CONN_NEW_DATA, 1, 0)
        },
        EventRecord {
            tail: 120,
            ..rec(4, 2, event_kind::CONN_NEW_DATA, 1, 0)
        },
        EventRecord {
            tail: 5,
            ..rec(3, 5, event_kind::CONN_NEW_DATA, 0, 0)
        },
        rec(3, 5, event_kind::CONN_END, 0, 0),
        rec(3, 5, event_kind::CONN_END, 1, 0),
        rec(4, 2, event_kind::CONN_END, 0, 0),
        rec(4, 2, event_kind::CONN_END, 1, 0),
    ] {
        assert!(fake.push_event(0, r));
    }
    fake.set_state(sensor_state::DONE);

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("dump");
    let child = spawn(
        env!("CARGO_BIN_EXE_mos-dump"),
        &[
            "--out",
            dir.to_str().unwrap(),
            "--control",
            fake.path().to_str().unwrap(),
        ],
    );
    let o = finish(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 connections written") && stderr.contains("8 events, 0 dropped"),
        "{stderr}"
    );

    // The same connections through the writer by hand.
    let want = out.path().join("want");
    let mut w = DumpWriter::<FlowId>::create(&want).unwrap();
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let (fa, fb) = (
        FlowId {
            worker: 0,
            slot: 3,
            generation: 5,
        },
        FlowId {
            worker: 0,
            slot: 4,
            generation: 2,
        },
    );
    w.open(fa, 1, addr("10.0.0.1:40000"), addr("10.0.0.100:80"));
    w.open(fb, 2, addr("10.0.0.2:40001"), addr("10.0.0.100:80"));
    w.data(&fa, Side::Svr, &bytes(0..10)).unwrap();
    w.lost(&fa, Side::Svr, 5).unwrap();
    w.data(&fa, Side::Svr, &bytes(15..30)).unwrap();
    w.data(&fa, Side::Cli, b"hello").unwrap();
    w.lost(&fb, Side::Svr, 100).unwrap();
    w.data(&fb, Side::Svr, &bytes(100..120)).unwrap();
    for (f, d, isns) in [(fa, &a, (Some(1000), Some(7))), (fb, &b, (None, None))] {
        w.close(
            &f,
            FlowEnd {
                client_isn: isns.0,
                server_isn: isns.1,
                guessed: false,
                start_ns: d.start_ns,
                last_ns: d.last_ns,
                tunnel: None,
                cut_short: false,
            },
        )
        .unwrap();
    }
    w.finish().unwrap();
    let got = files(&dir);
    assert_eq!(
        got.len(),
        4,
        "{:?}",
        got.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert_eq!(got, files(&want));
}

#[test]
fn mos_flowstat_prints_connections_and_how_they_ended() {
    let fake = FakeSensor::new(FakeConfig::default());
    let mut a = flow(1, 1, [10, 0, 0, 3], 40003, [side(0, 0, NO_RING, None); 2]);
    a.sides[0].state = TcpState::SynSent.code();
    a.sides[1].state = TcpState::Listen.code();
    fake.main.set_flow(1, 0, &a, &[]);
    let b = flow(1, 2, [10, 0, 0, 4], 40004, [side(0, 0, NO_RING, None); 2]);
    fake.main.set_flow(0, 1, &b, &[]);
    let mut change = rec(0, 1, event_kind::TCP_STATE_CHANGE, 0, 2);
    change.aux0 = TcpState::SynSent.code();
    change.aux1 = TcpState::Established.code();
    let mut end = rec(1, 1, event_kind::CONN_END, 0, 0);
    end.aux0 = 2;
    for (w, r) in [
        (1, rec(0, 1, event_kind::CONN_START, 0, 2)),
        (1, change),
        (0, rec(1, 1, event_kind::CONN_START, 0, 2)),
        (0, end),
        (0, EventRecord { side: 1, ..end }),
    ] {
        assert!(fake.push_event(w, r));
    }
    let child = spawn(
        env!("CARGO_BIN_EXE_mos-flowstat"),
        &[
            "--interval",
            "0.05",
            "--control",
            fake.path().to_str().unwrap(),
        ],
    );
    let t = Instant::now();
    while fake.log().ready == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "never ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    fake.set_state(sensor_state::DONE);
    let o = finish(child, Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("10.0.0.3:40003"))
        .unwrap_or_else(|| panic!("no line for the live connection in:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "1",
            "10.0.0.3:40003",
            "TCP_ESTABLISHED",
            "10.0.0.100:80",
            "TCP_LISTEN"
        ]
    );
    assert!(
        stdout.contains("1 live connections (2 seen, 1 ended)"),
        "{stdout}"
    );
    assert_eq!(
        stderr.trim(),
        "mos-flowstat: 2 connections seen, 1 ended: 1 reset; 1 still open"
    );
}

#[test]
fn analyzers_fail_in_one_line_when_the_sensor_goes_and_detach_on_sigterm() {
    let fake = FakeSensor::new(FakeConfig::default());
    let out = tempfile::tempdir().unwrap();
    let args = [
        "--out",
        out.path().to_str().unwrap(),
        "--control",
        fake.path().to_str().unwrap(),
    ];
    let wait_ready = |n: u32| {
        let t = Instant::now();
        while fake.log().ready < n {
            assert!(t.elapsed() < Duration::from_secs(10), "never ready");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let child = spawn(env!("CARGO_BIN_EXE_mos-dump"), &args);
    wait_ready(1);
    fake.hang_up();
    let o = finish(child, Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(1));
    // It still writes what it has (nothing here).
    let flows = out.path().join("flows.jsonl");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "mos-dump: ENOTCONN: the sensor went away (control socket closed); 0 connections written to {}, 0 of them cut short\n",
            flows.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&flows).unwrap(), "");
    std::fs::remove_file(&flows).unwrap();

    let child = spawn(env!("CARGO_BIN_EXE_mos-dump"), &args);
    wait_ready(2);
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let o = finish(child, Duration::from_secs(20));
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = Instant::now();
    while fake.log().detach == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no detach");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(out.path().join("flows.jsonl").exists());
}

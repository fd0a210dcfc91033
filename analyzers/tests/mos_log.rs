//! `mos-log` as a process, attached to the library's fake sensor: the records it writes from
//! events and stream bytes written by hand, its command line, and how it exits.

use mos_analyzers::conn::uid;
use mos_client::fake_sensor::{FakeConfig, FakeSensor};
use mos_client::{FlowId, FlowInfo, SideInfo};
use serde_json::Value;
use shm_layout::layout::{
    end_reason, error_kind, event_kind, flow_flags, sensor_state, side_flags, EventRecord,
    FlowData, RingMeta, SideData, NO_PKT, NO_RING,
};
use shm_layout::TcpState;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

const START_NS: u64 = 1_700_000_000_123_456_789;
const LAST_NS: u64 = 1_700_000_002_623_456_789;

fn config() -> FakeConfig {
    FakeConfig {
        nworkers: 1,
        event_capacity: 256,
        ..FakeConfig::default()
    }
}

fn side(tail: u64, ring: u32, isn: Option<u32>, state: TcpState, packets: u32) -> SideData {
    SideData {
        head: 0,
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
        state: state.code(),
        packets,
        ..Default::default()
    }
}

fn flow(generation: u32, serial: u64, client: ([u8; 4], u16), sides: [SideData; 2]) -> FlowData {
    let mut d = FlowData {
        generation,
        flags: flow_flags::LIVE,
        serial,
        port: [client.1, 80],
        start_ns: START_NS + serial,
        last_ns: LAST_NS,
        sides,
        ..Default::default()
    };
    d.addr[0][..4].copy_from_slice(&client.0);
    d.addr[1][..4].copy_from_slice(&[10, 0, 0, 100]);
    d
}

/// The uid every analyzer gives the connection of `d` in slot `slot` of worker 0.
fn uid_of(d: &FlowData, slot: u32) -> String {
    let s = SideInfo {
        state: None,
        isn: None,
        head: 0,
        tail: 0,
        lost: 0,
        packets: 0,
    };
    let a = d.addr[0];
    uid(&FlowInfo {
        id: FlowId {
            worker: 0,
            slot,
            generation: d.generation,
        },
        serial: d.serial,
        client: format!("{}.{}.{}.{}:{}", a[0], a[1], a[2], a[3], d.port[0])
            .parse()
            .unwrap(),
        server: format!("10.0.0.100:{}", d.port[1]).parse().unwrap(),
        guessed: false,
        closed: false,
        ended: false,
        end_reason: None,
        start_ns: d.start_ns,
        last_ns: 0,
        sides: [s, s],
        tunnel: None,
    })
}

fn rec(slot: u32, generation: u32, kind: u8, side: u8, hook: u8) -> EventRecord {
    EventRecord {
        slot,
        generation,
        kind,
        side,
        hook,
        ts_ns: START_NS,
        pkt_pos: u64::MAX,
        pkt_ref: NO_PKT,
        socks: u32::MAX,
        ..Default::default()
    }
}

/// A packet sent by `side` (0 client, 1 server): `PKT_IN` at the sender's hook.
fn pkt(slot: u32, generation: u32, side: u8, flags: u8, seq: u32, len: u32) -> EventRecord {
    EventRecord {
        tcp_flags: flags,
        seq,
        payload_len: len,
        ..rec(slot, generation, event_kind::PKT_IN, side, 2)
    }
}

/// The same packet as its receiver sees it (`PKT_IN` at the receiver's hook), which mos-log
/// must not count twice.
fn pkt_rcv(slot: u32, generation: u32, sender: u8, flags: u8, seq: u32, len: u32) -> EventRecord {
    EventRecord {
        hook: 1,
        side: 1 - sender,
        ..pkt(slot, generation, sender, flags, seq, len)
    }
}

fn new_data(slot: u32, generation: u32, side: u8, tail: u64, ts_ns: u64) -> EventRecord {
    EventRecord {
        tail,
        ts_ns,
        ..rec(slot, generation, event_kind::CONN_NEW_DATA, side, 0)
    }
}

fn ends(slot: u32, generation: u32, reason: u8) -> [EventRecord; 2] {
    let e = EventRecord {
        aux0: reason,
        ts_ns: LAST_NS + 5_000_000_000,
        ..rec(slot, generation, event_kind::CONN_END, 0, 0)
    };
    [e, EventRecord { side: 1, ..e }]
}

fn finish(mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("mos-log did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mos-log"))
        .args(args)
        .env_remove("MOS_ANALYZER_FILTER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn read_log(dir: &Path, log: &str) -> Vec<Value> {
    lines(&std::fs::read_to_string(dir.join(format!("{log}.jsonl"))).unwrap_or_default())
}

/// Waits until mos-log has consumed `n` events of worker 0's ring.
fn wait_consumed(fake: &FakeSensor, n: u64) {
    let t = Instant::now();
    while fake.page().consumer[0]
        .index
        .load(std::sync::atomic::Ordering::Acquire)
        < n
    {
        assert!(t.elapsed() < Duration::from_secs(20), "events not consumed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn conn_records_follow_the_packets_and_the_slot() {
    let fake = FakeSensor::new(config());
    // A: a whole connection, 30 bytes from the client (5 of them never captured, 10 sent
    // twice, 4 of those contradicting the first copy), 5 back, closed by both.
    let mut a = flow(
        5,
        1,
        ([10, 0, 0, 1], 40000),
        [
            side(5, NO_RING, Some(1000), TcpState::TimeWait, 7),
            side(30, NO_RING, Some(7), TcpState::Closed, 4),
        ],
    );
    a.sides[1].lost = 5;
    a.flags |= flow_flags::CLOSED | flow_flags::ENDED;
    a.end_reason = end_reason::CLOSED;
    fake.main.set_flow(0, 3, &a, &[]);
    // B: picked up midstream (roles guessed), the server's bytes seen first; it never ends
    // before the input does.
    let mut b = flow(
        2,
        2,
        ([10, 0, 0, 2], 40001),
        [
            side(10, NO_RING, None, TcpState::Established, 1),
            side(5, NO_RING, None, TcpState::Established, 1),
        ],
    );
    b.flags |= flow_flags::GUESSED;
    fake.main.set_flow(0, 4, &b, &[]);

    let mut rexmit = rec(3, 5, event_kind::REXMIT, 1, 1);
    rexmit.payload_len = 10;
    let mut conflict = rec(3, 5, event_kind::ERROR, 1, 1);
    conflict.aux0 = error_kind::CONFLICT;
    conflict.err_len = 4;
    let mut gap = rec(3, 5, event_kind::ERROR, 1, 1);
    gap.aux0 = error_kind::GAP;
    gap.err_len = 5;
    let mut events = vec![
        rec(3, 5, event_kind::CONN_START, 0, 2),
        pkt(3, 5, 0, SYN, 1000, 0),
        pkt_rcv(3, 5, 0, SYN, 1000, 0),
        pkt(3, 5, 1, SYN | ACK, 7, 0),
        pkt(3, 5, 0, ACK, 1001, 0),
        pkt(3, 5, 0, PSH | ACK, 1001, 20),
        pkt(3, 5, 0, PSH | ACK, 1001, 10),
        rexmit,
        conflict,
        gap,
        pkt(4, 2, 1, PSH | ACK, 90_000, 10),
        pkt(4, 2, 0, ACK, 5_000, 5),
        pkt(3, 5, 1, PSH | ACK, 8, 5),
        pkt(3, 5, 0, FIN | ACK, 1031, 0),
        pkt(3, 5, 1, FIN | ACK, 13, 0),
        pkt(3, 5, 0, ACK, 1032, 0),
    ];
    events.extend(ends(3, 5, end_reason::CLOSED));
    for r in events {
        assert!(fake.push_event(0, r));
    }
    fake.set_state(sensor_state::DONE);

    let child = spawn(&["--logs", "conn", "--control", fake.path().to_str().unwrap()]);
    let o = finish(child, Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "mos-log: 2 connections (1 still open, written as far as they got); records: conn 2; 0 weirds; 18 events, 0 dropped by the sensor; 0 records dropped by the output"
    );
    let raw: Vec<&str> = stdout.lines().collect();
    assert_eq!(raw.len(), 2, "{stdout}");
    // The common fields first, in Zeek's order.
    let first = raw[0];
    let at = |k: &str| first.find(&format!("\"{k}\"")).unwrap_or(usize::MAX);
    let order = [
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "proto",
    ];
    assert!(
        order.windows(2).all(|w| at(w[0]) < at(w[1])) && at("proto") != usize::MAX,
        "{first}"
    );
    let recs = lines(&stdout);
    let ra = &recs[0];
    let want_a = serde_json::json!({
        "ts": 1_700_000_000.123_456,
        "uid": uid_of(&a, 3),
        "id.orig_h": "10.0.0.1",
        "id.orig_p": 40000,
        "id.resp_h": "10.0.0.100",
        "id.resp_p": 80,
        "proto": "tcp",
        "duration": 2.5,
        "orig_bytes": 30,
        "resp_bytes": 5,
        "conn_state": "SF",
        "missed_bytes": 5,
        "history": "ShADTGdFf",
        "orig_pkts": 7,
        "resp_pkts": 4,
        "orig_tcp_state": "TCP_TIME_WAIT",
        "resp_tcp_state": "TCP_CLOSED",
        "midstream": false,
        "roles_guessed": false,
        "orig_rexmit_bytes": 10,
        "resp_rexmit_bytes": 0,
        "orig_conflict_bytes": 4,
        "resp_conflict_bytes": 0,
        "end_reason": "closed",
    });
    assert_eq!(ra, &want_a);
    // B: written at the end of the input, as far as it got: no end reason.
    let rb = &recs[1];
    assert_eq!(rb["uid"], uid_of(&b, 4));
    assert_eq!(rb["history"], "^dD");
    assert_eq!(rb["conn_state"], "OTH");
    assert_eq!(rb["midstream"], true);
    assert_eq!(rb["roles_guessed"], true);
    assert_eq!(
        (rb["orig_bytes"].as_u64(), rb["resp_bytes"].as_u64()),
        (Some(5), Some(10))
    );
    assert!(
        rb.get("end_reason").is_none() && rb.get("service").is_none(),
        "{rb}"
    );
}

#[test]
fn bad_logs_are_one_line_and_status_1() {
    for (value, says) in [
        ("conn,dns", "no log named \"dns\""),
        ("", "an empty log name"),
        ("http,,tls", "an empty log name"),
        ("CONN", "no log named \"CONN\""),
    ] {
        let o = finish(
            spawn(&["--logs", value, "--control", "/nonexistent/mos.sock"]),
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{value:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("mos-log: ") && stderr.contains(says),
            "{value:?}: {stderr}"
        );
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn help_names_every_log_and_option() {
    let o = finish(spawn(&["--help"]), Duration::from_secs(20));
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for word in [
        "--logs",
        "--out",
        "--control",
        "--wait",
        "--filter",
        "--name",
        "conn",
        "http",
        "tls",
        "ssh",
        "weird",
    ] {
        assert!(help.contains(word), "{word} not in:\n{help}");
    }
}

/// Writes `bytes` into ring `ring` from offset 0.
fn fill(fake: &FakeSensor, ring: u32, bytes: &[u8]) {
    fake.main.write_ring(0, ring, 0, bytes);
}

#[test]
fn http_and_ssh_records_come_from_the_streams() {
    let fake = FakeSensor::new(FakeConfig {
        chunks: 32,
        map_len: 8,
        buffers: 8,
        ..config()
    });
    // A: an HTTP exchange on port 8080 (found by content, not port).
    let req = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    fill(&fake, 1, req);
    fill(&fake, 2, resp);
    let mut a = flow(
        5,
        1,
        ([10, 0, 0, 1], 40000),
        [
            side(resp.len() as u64, 2, Some(1000), TcpState::TimeWait, 4),
            side(req.len() as u64, 1, Some(7), TcpState::Closed, 4),
        ],
    );
    a.port[1] = 8080;
    fake.main.set_flow(
        0,
        3,
        &a,
        &[(1, RingMeta::default()), (2, RingMeta::default())],
    );
    // B: SSH banners each way, then the connection ends.
    let cli = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";
    let svr = b"SSH-2.0-OpenSSH_8.4\r\n";
    fill(&fake, 3, cli);
    fill(&fake, 4, svr);
    let b = flow(
        2,
        2,
        ([10, 0, 0, 2], 40001),
        [
            side(svr.len() as u64, 4, Some(1), TcpState::Established, 2),
            side(cli.len() as u64, 3, Some(2), TcpState::Established, 2),
        ],
    );
    fake.main.set_flow(
        0,
        4,
        &b,
        &[(3, RingMeta::default()), (4, RingMeta::default())],
    );
    // C: RTSP, which starts like an HTTP request: the HTTP parser gives up with a weird, and
    // the connection has no service.
    let rtsp = b"OPTIONS rtsp://10.0.0.100:554/ RTSP/1.0\r\nCSeq: 1\r\n\r\n";
    fill(&fake, 5, rtsp);
    let c = flow(
        3,
        3,
        ([10, 0, 0, 3], 40002),
        [
            side(0, NO_RING, Some(1), TcpState::Established, 1),
            side(rtsp.len() as u64, 5, Some(2), TcpState::Established, 1),
        ],
    );
    fake.main.set_flow(0, 5, &c, &[(5, RingMeta::default())]);
    let t_req = START_NS + 1_000_000;
    let mut events = vec![
        new_data(3, 5, 1, req.len() as u64, t_req),
        new_data(4, 2, 0, svr.len() as u64, START_NS + 2_000_000),
        new_data(3, 5, 0, resp.len() as u64, START_NS + 3_000_000),
        new_data(4, 2, 1, cli.len() as u64, START_NS + 4_000_000),
    ];
    events.extend(ends(3, 5, end_reason::CLOSED));
    events.extend(ends(4, 2, end_reason::RESET));
    events.push(new_data(5, 3, 1, rtsp.len() as u64, START_NS + 5_000_000));
    events.extend(ends(5, 3, end_reason::TIMEOUT));
    for r in events {
        assert!(fake.push_event(0, r));
    }
    fake.set_state(sensor_state::DONE);

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("logs");
    let child = spawn(&[
        "--out",
        dir.to_str().unwrap(),
        "--control",
        fake.path().to_str().unwrap(),
    ]);
    let o = finish(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(o.stdout.is_empty());

    let conn = read_log(&dir, "conn");
    assert_eq!(conn.len(), 3, "{conn:?}");
    let (ua, ub) = (uid_of(&a, 3), uid_of(&b, 4));
    assert_eq!(conn[0]["uid"], ua);
    assert_eq!(conn[0]["service"], "http");
    assert_eq!(conn[0]["id.resp_p"], 8080);
    assert_eq!(conn[1]["uid"], ub);
    assert_eq!(conn[1]["service"], "ssh");
    assert_eq!(conn[1]["end_reason"], "reset");

    let ssh = read_log(&dir, "ssh");
    assert_eq!(ssh.len(), 1, "{ssh:?}");
    assert_eq!(ssh[0]["uid"], ub);
    assert_eq!(ssh[0]["client"], "SSH-2.0-OpenSSH_9.2p1 Debian-2");
    assert_eq!(ssh[0]["server"], "SSH-2.0-OpenSSH_8.4");
    assert_eq!(ssh[0]["version"], 2);
    // Stamped with the first banner's time.
    assert_eq!(ssh[0]["ts"], 1_700_000_000.125_456);

    let http = read_log(&dir, "http");
    assert_eq!(http.len(), 1, "{http:?}");
    let h = &http[0];
    assert_eq!(h["uid"], ua);
    assert_eq!(h["id.orig_p"], 40000);
    assert_eq!(h["ts"], 1_700_000_000.124_456);
    assert_eq!(h["trans_depth"], 1);
    assert_eq!(h["method"], "GET");
    assert_eq!(h["host"], "example.com");
    assert_eq!(h["uri"], "/index.html");
    assert_eq!(h["version"], "1.1");
    assert_eq!(h["user_agent"], "t/1");
    assert_eq!(h["status_code"], 200);
    assert_eq!(h["status_msg"], "OK");
    assert_eq!(h["response_body_len"], 5);
    let uc = uid_of(&c, 5);
    assert_eq!(conn[2]["uid"], uc);
    assert!(conn[2].get("service").is_none(), "{}", conn[2]);
    assert_eq!(conn[2]["end_reason"], "timeout");
    let weird = read_log(&dir, "weird");
    assert_eq!(weird.len(), 1, "{weird:?}");
    assert_eq!(weird[0]["uid"], uc);
    assert_eq!(weird[0]["source"], "HTTP");
    assert_eq!(weird[0]["peer"], "orig");
    assert_eq!(weird[0]["ts"], 1_700_000_000.128_456);
    assert!(weird[0]["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(
        stderr.contains("records: conn 3, http 1, tls 0, ssh 1, weird 1; 1 weirds;"),
        "{stderr}"
    );
}

#[test]
fn without_protocol_logs_no_stream_is_read() {
    let fake = FakeSensor::new(config());
    let a = flow(
        1,
        1,
        ([10, 0, 0, 1], 40000),
        [
            side(0, NO_RING, Some(1), TcpState::Established, 1),
            side(3, 1, Some(2), TcpState::Established, 1),
        ],
    );
    fill(&fake, 1, b"GET");
    fake.main.set_flow(0, 0, &a, &[(1, RingMeta::default())]);
    let mut events = vec![
        pkt(0, 1, 0, PSH | ACK, 1, 3),
        new_data(0, 1, 1, 3, START_NS),
    ];
    events.extend(ends(0, 1, end_reason::END_OF_INPUT));
    for r in events {
        assert!(fake.push_event(0, r));
    }
    fake.set_state(sensor_state::DONE);
    let o = finish(
        spawn(&["--logs", "conn", "--control", fake.path().to_str().unwrap()]),
        Duration::from_secs(20),
    );
    assert!(o.status.success());
    let recs = lines(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["end_reason"], "end of input");
    assert!(recs[0].get("service").is_none());
    // One socket, and it never asked for new data.
    let log = fake.log();
    let subs = log.socket_subscriptions.last().expect("a subscription");
    assert_eq!(subs.1.len(), 1, "{:?}", subs.1);
    assert_eq!(
        subs.1[0].events & mos_client::EventMask::CONN_NEW_DATA.0,
        0,
        "{:?}",
        subs.1
    );
}

#[test]
fn without_its_sensor_it_writes_what_it_has_and_exits_1_and_130_on_sigterm() {
    let fake = FakeSensor::new(config());
    let a = flow(
        1,
        1,
        ([10, 0, 0, 1], 40000),
        [
            side(0, NO_RING, Some(1), TcpState::SynSent, 1),
            side(0, NO_RING, None, TcpState::Listen, 0),
        ],
    );
    fake.main.set_flow(0, 0, &a, &[]);
    assert!(fake.push_event(0, pkt(0, 1, 0, SYN, 1, 0)));
    let child = spawn(&["--logs", "conn", "--control", fake.path().to_str().unwrap()]);
    wait_consumed(&fake, 1);
    fake.hang_up();
    let o = finish(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("mos-log: ENOTCONN: ")
            && stderr.contains(
                "; 1 connections (1 still open, written as far as they got); records: conn 1;"
            ),
        "{stderr}"
    );
    let recs = lines(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["history"], "S");
    assert_eq!(recs[0]["conn_state"], "S0");
    assert!(recs[0].get("end_reason").is_none());

    // SIGTERM: detaches, writes the connection still open, status 130.
    let fake = FakeSensor::new(config());
    fake.main.set_flow(0, 0, &a, &[]);
    assert!(fake.push_event(0, pkt(0, 1, 0, SYN, 1, 0)));
    assert!(fake.push_event(0, pkt(0, 1, 1, RST | ACK, 0, 0)));
    let child = spawn(&["--logs", "conn", "--control", fake.path().to_str().unwrap()]);
    wait_consumed(&fake, 2);
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let o = finish(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("mos-log: stopped by a signal"), "{stderr}");
    let recs = lines(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["history"], "Sr");
    assert_eq!(recs[0]["conn_state"], "REJ");
}

#[test]
fn records_are_flushed_while_the_run_goes_on() {
    use std::io::BufRead;
    let fake = FakeSensor::new(config());
    let a = flow(
        1,
        1,
        ([10, 0, 0, 1], 40000),
        [
            side(0, NO_RING, Some(1), TcpState::Closed, 1),
            side(0, NO_RING, Some(2), TcpState::Closed, 1),
        ],
    );
    fake.main.set_flow(0, 0, &a, &[]);
    let mut events = vec![pkt(0, 1, 0, SYN, 1, 0), pkt(0, 1, 1, RST | ACK, 0, 0)];
    events.extend(ends(0, 1, end_reason::RESET));
    for r in events {
        assert!(fake.push_event(0, r));
    }
    let mut child = spawn(&["--logs", "conn", "--control", fake.path().to_str().unwrap()]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().map(|l| l.unwrap());
        tx.send(first).unwrap();
        lines.map(|l| l.unwrap()).collect::<Vec<_>>()
    });
    // The input has not ended: the line comes from the output's flush about once a second.
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no record while running")
        .expect("stdout closed");
    let r: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(r["conn_state"], "REJ");
    assert_eq!(r["end_reason"], "reset");
    assert!(child.try_wait().unwrap().is_none(), "it exited early");
    fake.set_state(sensor_state::DONE);
    let o = finish(child, Duration::from_secs(20));
    assert!(o.status.success());
    assert!(reader.join().unwrap().is_empty());
}

#[test]
fn what_a_connect_tunnel_carries_is_parsed_too() {
    let fake = FakeSensor::new(FakeConfig {
        buffers: 8,
        chunks: 32,
        map_len: 8,
        ..config()
    });
    let connect = b"CONNECT git.example:22 HTTP/1.1\r\nHost: git.example:22\r\n\r\n";
    let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let (cli, svr) = (b"SSH-2.0-client_1.0\r\n", b"SSH-2.0-server_2.0\r\n");
    let orig = [&connect[..], &cli[..]].concat();
    let resp = [&ok[..], &svr[..]].concat();
    fill(&fake, 1, &orig);
    fill(&fake, 2, &resp);
    let mut a = flow(
        4,
        1,
        ([10, 0, 0, 1], 40000),
        [
            side(resp.len() as u64, 2, Some(1), TcpState::Established, 3),
            side(orig.len() as u64, 1, Some(2), TcpState::Established, 3),
        ],
    );
    a.port[1] = 3128;
    fake.main.set_flow(
        0,
        2,
        &a,
        &[(1, RingMeta::default()), (2, RingMeta::default())],
    );
    let mut events = vec![
        new_data(2, 4, 1, connect.len() as u64, START_NS + 1_000),
        new_data(2, 4, 0, ok.len() as u64, START_NS + 2_000),
        new_data(2, 4, 1, orig.len() as u64, START_NS + 3_000),
        new_data(2, 4, 0, resp.len() as u64, START_NS + 4_000),
    ];
    events.extend(ends(2, 4, end_reason::CLOSED));
    for r in events {
        assert!(fake.push_event(0, r));
    }
    fake.set_state(sensor_state::DONE);
    let o = finish(
        spawn(&["--control", fake.path().to_str().unwrap()]),
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let recs = lines(&String::from_utf8_lossy(&o.stdout));
    let ua = uid_of(&a, 2);
    assert!(recs.iter().all(|r| r["uid"] == ua), "{recs:?}");
    let http: Vec<_> = recs.iter().filter(|r| r.get("method").is_some()).collect();
    assert_eq!(http.len(), 1, "{recs:?}");
    assert_eq!(http[0]["method"], "CONNECT");
    assert_eq!(http[0]["status_code"], 200);
    let ssh: Vec<_> = recs.iter().filter(|r| r.get("client").is_some()).collect();
    assert_eq!(ssh.len(), 1, "{recs:?}");
    assert_eq!(ssh[0]["client"], "SSH-2.0-client_1.0");
    assert_eq!(ssh[0]["server"], "SSH-2.0-server_2.0");
    let conn: Vec<_> = recs.iter().filter(|r| r.get("proto").is_some()).collect();
    assert_eq!(conn.len(), 1, "{recs:?}");
    assert_eq!(conn[0]["service"], "http");
    assert!(
        stderr.contains("records: conn 1, http 1, tls 0, ssh 1, weird 0;"),
        "{stderr}"
    );
}

/// A TLS record of type 22 around the handshake message `msg_type` with `body`.
fn handshake_record(version: [u8; 2], msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut msg = vec![msg_type];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(body);
    let mut r = vec![0x16, version[0], version[1]];
    r.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    r.extend_from_slice(&msg);
    r
}

/// A TLS 1.2 ClientHello naming `sni`, offering two suites.
fn client_hello(sni: &str) -> Vec<u8> {
    let mut b = vec![0x03, 0x03];
    b.extend_from_slice(&[0x11; 32]);
    b.push(0); // no session id
    b.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2f, 0x00, 0x9c]);
    b.extend_from_slice(&[0x01, 0x00]); // null compression
    let name = sni.as_bytes();
    let mut list = vec![0];
    list.extend_from_slice(&(name.len() as u16).to_be_bytes());
    list.extend_from_slice(name);
    let mut ext = vec![0x00, 0x00];
    ext.extend_from_slice(&(list.len() as u16 + 2).to_be_bytes());
    ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
    ext.extend_from_slice(&list);
    b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    b.extend_from_slice(&ext);
    handshake_record([0x03, 0x01], 1, &b)
}

/// A TLS 1.2 ServerHello choosing TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.
fn server_hello() -> Vec<u8> {
    let mut b = vec![0x03, 0x03];
    b.extend_from_slice(&[0x22; 32]);
    b.push(0);
    b.extend_from_slice(&[0xc0, 0x2f, 0x00]);
    handshake_record([0x03, 0x03], 2, &b)
}

/// An SSL 2.0 CLIENT-HELLO (2-byte header) offering TLS 1.0, as old clients open.
fn sslv2_client_hello() -> Vec<u8> {
    let mut body = vec![0x01, 0x03, 0x01, 0x00, 0x06, 0x00, 0x00, 0x00, 0x10];
    body.extend_from_slice(&[0x00, 0x00, 0x2f, 0x01, 0x00, 0x80]);
    body.extend_from_slice(&[0x33; 16]);
    let mut r = vec![0x80 | (body.len() >> 8) as u8, body.len() as u8];
    r.extend_from_slice(&body);
    r
}

/// The protocol records of a run written to stdout (all but `conn`), and the `conn` ones.
fn split_conn(recs: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    recs.into_iter().partition(|r| r.get("proto").is_none())
}

#[test]
fn roles_guessed_the_wrong_way_round_are_swapped_for_the_protocol_records() {
    let fake = FakeSensor::new(FakeConfig {
        buffers: 8,
        chunks: 32,
        map_len: 8,
        ..config()
    });
    // A: picked up midstream, the guessed client (port 80) sends HTTP responses and the
    // guessed server (port 40000) the requests; the requests' bytes come first.
    let req =
        b"GET /a HTTP/1.1\r\nHost: h.example\r\n\r\nGET /b HTTP/1.1\r\nHost: h.example\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 No\r\nContent-Length: 0\r\n\r\n";
    fill(&fake, 1, resp);
    fill(&fake, 2, req);
    let mut a = flow(
        3,
        1,
        ([10, 0, 0, 1], 80),
        [
            side(req.len() as u64, 2, None, TcpState::Established, 2),
            side(resp.len() as u64, 1, None, TcpState::Established, 2),
        ],
    );
    a.port[1] = 40000;
    a.flags |= flow_flags::GUESSED;
    fake.main.set_flow(
        0,
        2,
        &a,
        &[(1, RingMeta::default()), (2, RingMeta::default())],
    );
    // B: the same for TLS, the guessed client's first bytes a ServerHello (read first), the
    // guessed server's a ClientHello.
    let (ch, sh) = (client_hello("swapped.example"), server_hello());
    fill(&fake, 3, &sh);
    fill(&fake, 4, &ch);
    let mut b = flow(
        2,
        2,
        ([10, 0, 0, 2], 443),
        [
            side(ch.len() as u64, 4, None, TcpState::Established, 1),
            side(sh.len() as u64, 3, None, TcpState::Established, 1),
        ],
    );
    b.port[1] = 50000;
    b.flags |= flow_flags::GUESSED;
    fake.main.set_flow(
        0,
        3,
        &b,
        &[(3, RingMeta::default()), (4, RingMeta::default())],
    );
    // C: guessed roles that are right (the guessed client requests): nothing swapped.
    let req_c = b"GET /c HTTP/1.1\r\nHost: c.example\r\n\r\n";
    let resp_c = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    fill(&fake, 5, req_c);
    fill(&fake, 6, resp_c);
    let mut c = flow(
        4,
        3,
        ([10, 0, 0, 3], 40003),
        [
            side(resp_c.len() as u64, 6, None, TcpState::Established, 1),
            side(req_c.len() as u64, 5, None, TcpState::Established, 1),
        ],
    );
    c.flags |= flow_flags::GUESSED;
    fake.main.set_flow(
        0,
        4,
        &c,
        &[(5, RingMeta::default()), (6, RingMeta::default())],
    );
    let mut events = vec![
        new_data(2, 3, 0, req.len() as u64, START_NS + 1_000),
        new_data(2, 3, 1, resp.len() as u64, START_NS + 2_000),
        new_data(3, 2, 1, sh.len() as u64, START_NS + 3_000),
        new_data(3, 2, 0, ch.len() as u64, START_NS + 4_000),
        new_data(4, 4, 1, req_c.len() as u64, START_NS + 5_000),
        new_data(4, 4, 0, resp_c.len() as u64, START_NS + 6_000),
    ];
    events.extend(ends(2, 3, end_reason::CLOSED));
    events.extend(ends(3, 2, end_reason::CLOSED));
    events.extend(ends(4, 4, end_reason::CLOSED));
    for r in events {
        assert!(fake.push_event(0, r));
    }
    fake.set_state(sensor_state::DONE);
    let o = finish(
        spawn(&["--control", fake.path().to_str().unwrap()]),
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let (recs, conns) = split_conn(lines(&String::from_utf8_lossy(&o.stdout)));
    assert!(
        stderr.contains("records: conn 3, http 3, tls 1, ssh 0, weird 0;"),
        "{stderr}\n{recs:?}"
    );
    let (ua, ub, uc) = (uid_of(&a, 2), uid_of(&b, 3), uid_of(&c, 4));

    // The conn records keep the sensor's roles.
    let conn = |u: &str| conns.iter().find(|r| r["uid"] == u).unwrap().clone();
    let (ca, cb) = (conn(&ua), conn(&ub));
    assert_eq!(
        (&ca["id.orig_p"], &ca["id.resp_p"]),
        (&80.into(), &40000.into())
    );
    assert_eq!(ca["service"], "http");
    assert_eq!(ca["roles_guessed"], true);
    assert_eq!(
        (&cb["id.orig_p"], &cb["id.resp_p"]),
        (&443.into(), &50000.into())
    );
    assert_eq!(cb["service"], "ssl");

    // The protocol records name the real client as the originator.
    let http: Vec<&Value> = recs.iter().filter(|r| r["uid"] == ua).collect();
    assert_eq!(http.len(), 2, "{recs:?}");
    for (h, (uri, code)) in http.iter().zip([("/a", 200), ("/b", 404)]) {
        assert_eq!(h["id.orig_h"], "10.0.0.100");
        assert_eq!(h["id.orig_p"], 40000);
        assert_eq!(h["id.resp_h"], "10.0.0.1");
        assert_eq!(h["id.resp_p"], 80);
        assert_eq!(h["method"], "GET");
        assert_eq!(h["uri"], uri);
        assert_eq!(h["host"], "h.example");
        assert_eq!(h["status_code"], code);
    }
    let tls: Vec<&Value> = recs.iter().filter(|r| r["uid"] == ub).collect();
    assert_eq!(tls.len(), 1, "{recs:?}");
    assert_eq!(tls[0]["server_name"], "swapped.example");
    assert_eq!(tls[0]["version"], "TLSv12");
    assert_eq!(tls[0]["cipher"], "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
    assert_eq!(
        (&tls[0]["id.orig_p"], &tls[0]["id.resp_p"]),
        (&50000.into(), &443.into())
    );

    let hc: Vec<&Value> = recs.iter().filter(|r| r["uid"] == uc).collect();
    assert_eq!(hc.len(), 1, "{recs:?}");
    assert_eq!(
        (&hc[0]["id.orig_p"], &hc[0]["id.resp_p"]),
        (&40003.into(), &80.into())
    );
    assert_eq!(
        (&hc[0]["uri"], &hc[0]["status_code"]),
        (&"/c".into(), &200.into())
    );
}

#[test]
fn an_sslv2_client_hello_opens_tls() {
    let fake = FakeSensor::new(FakeConfig {
        buffers: 8,
        chunks: 32,
        map_len: 8,
        ..config()
    });
    let (v2, sh) = (sslv2_client_hello(), server_hello());
    fill(&fake, 1, &v2);
    fill(&fake, 2, &sh);
    let mut a = flow(
        6,
        1,
        ([10, 0, 0, 1], 40000),
        [
            side(sh.len() as u64, 2, Some(1), TcpState::Established, 1),
            side(v2.len() as u64, 1, Some(2), TcpState::Established, 1),
        ],
    );
    a.port[1] = 8443;
    fake.main.set_flow(
        0,
        1,
        &a,
        &[(1, RingMeta::default()), (2, RingMeta::default())],
    );
    let mut events = vec![
        new_data(1, 6, 1, v2.len() as u64, START_NS + 1_000),
        new_data(1, 6, 0, sh.len() as u64, START_NS + 2_000),
    ];
    events.extend(ends(1, 6, end_reason::CLOSED));
    for r in events {
        assert!(fake.push_event(0, r));
    }
    fake.set_state(sensor_state::DONE);
    let o = finish(
        spawn(&["--control", fake.path().to_str().unwrap()]),
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let (recs, conns) = split_conn(lines(&String::from_utf8_lossy(&o.stdout)));
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["service"], "ssl");
    let tls: Vec<&Value> = recs.iter().filter(|r| r.get("name").is_none()).collect();
    assert_eq!(tls.len(), 1, "{recs:?}");
    assert_eq!(tls[0]["uid"], uid_of(&a, 1));
    assert_eq!(tls[0]["version"], "TLSv12");
    assert_eq!(tls[0]["id.orig_p"], 40000);
    // No server name or JA3: an SSL 2.0 hello has no extensions.
    assert!(tls[0].get("server_name").is_none(), "{}", tls[0]);
}

/// Sets the two sides' tails of flow `d` (slot `slot`, client ring 1 and server ring 2) and
/// announces the new bytes of `side` at `ts_ns`; waits until mos-log consumed event `n`.
#[allow(clippy::too_many_arguments)]
fn grow(
    fake: &FakeSensor,
    d: &mut FlowData,
    slot: u32,
    orig_tail: u64,
    resp_tail: u64,
    side: u8,
    ts_ns: u64,
    n: u64,
) {
    d.sides[1].tail = orig_tail;
    d.sides[0].tail = resp_tail;
    fake.main.set_flow(
        0,
        slot,
        d,
        &[(1, RingMeta::default()), (2, RingMeta::default())],
    );
    let tail = if side == 1 { orig_tail } else { resp_tail };
    assert!(fake.push_event(0, new_data(slot, d.generation, side, tail, ts_ns)));
    wait_consumed(fake, n);
}

#[test]
fn tls_after_a_starttls_exchange_is_found() {
    let fake = FakeSensor::new(FakeConfig {
        buffers: 8,
        chunks: 32,
        map_len: 8,
        ..config()
    });
    // FTP's AUTH TLS: the server's hello is read before the client's (the sensor ran ahead
    // of the reader), and the client's record header comes in two pieces.
    let banner = b"220 ftp.example ready\r\n".to_vec();
    let auth = b"AUTH TLS\r\n".to_vec();
    let ok = b"234 AUTH TLS successful\r\n".to_vec();
    let (ch, sh) = (client_hello("ftp.example"), server_hello());
    let orig = [&auth[..], &ch[..]].concat();
    let resp = [&banner[..], &ok[..], &sh[..]].concat();
    fill(&fake, 1, &orig);
    fill(&fake, 2, &resp);
    let mut a = flow(
        7,
        1,
        ([10, 0, 0, 1], 40000),
        [
            side(0, 2, Some(1), TcpState::Established, 3),
            side(0, 1, Some(2), TcpState::Established, 3),
        ],
    );
    a.port[1] = 21;
    let (o0, r0) = (auth.len() as u64, banner.len() as u64);
    let t = |k: u64| START_NS + k * 1_000;
    let child = spawn(&["--control", fake.path().to_str().unwrap()]);
    grow(&fake, &mut a, 1, 0, r0, 0, t(1), 1);
    grow(&fake, &mut a, 1, o0, r0, 1, t(2), 2);
    let all_resp = resp.len() as u64;
    grow(&fake, &mut a, 1, o0, all_resp, 0, t(3), 3);
    grow(&fake, &mut a, 1, o0 + 3, all_resp, 1, t(4), 4);
    grow(&fake, &mut a, 1, orig.len() as u64, all_resp, 1, t(5), 5);
    for r in ends(1, 7, end_reason::CLOSED) {
        assert!(fake.push_event(0, r));
    }
    fake.set_state(sensor_state::DONE);
    let o = finish(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let (recs, conns) = split_conn(lines(&String::from_utf8_lossy(&o.stdout)));
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["service"], "ssl");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["uid"], uid_of(&a, 1));
    assert_eq!(r["server_name"], "ftp.example");
    assert_eq!(r["version"], "TLSv12");
    assert_eq!(r["cipher"], "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
    assert!(r["ja3"].as_str().is_some_and(|j| j.len() == 32), "{r}");
}

#[test]
fn a_hello_past_the_watched_bytes_is_not_looked_for() {
    let fake = FakeSensor::new(FakeConfig {
        buffers: 8,
        chunk_size: 4096,
        chunks: 48,
        map_len: 32,
        ..config()
    });
    // An SMTP session sends 64 KiB of mail before a STARTTLS and its hellos (as no client
    // does): no TLS is looked for so late. A second one reaches its STARTTLS within them.
    let greeting = b"220 mail.example ESMTP\r\n".to_vec();
    let ready = b"220 go ahead\r\n".to_vec();
    let (ch, sh) = (client_hello("mail.example"), server_hello());
    let mut late = b"EHLO c\r\nDATA\r\n".to_vec();
    late.resize(64 * 1024, b'x');
    late.extend_from_slice(b"\r\n.\r\nSTARTTLS\r\n");
    late.extend_from_slice(&ch);
    let early = [&b"EHLO c\r\nSTARTTLS\r\n"[..], &ch[..]].concat();
    let resp = [&greeting[..], &ready[..], &sh[..]].concat();
    let mut flows = Vec::new();
    for (k, orig) in [&late, &early].into_iter().enumerate() {
        let (ro, rr) = (2 * k as u32 + 1, 2 * k as u32 + 2);
        fill(&fake, ro, orig);
        fill(&fake, rr, &resp);
        let mut f = flow(
            1,
            k as u64 + 1,
            ([10, 0, 0, 1], 40000 + k as u16),
            [
                side(resp.len() as u64, rr, Some(1), TcpState::Established, 3),
                side(orig.len() as u64, ro, Some(2), TcpState::Established, 3),
            ],
        );
        f.port[1] = 25;
        let slot = k as u32 + 1;
        fake.main.set_flow(
            0,
            slot,
            &f,
            &[(ro, RingMeta::default()), (rr, RingMeta::default())],
        );
        for (side, tail) in [(0, resp.len()), (1, orig.len())] {
            assert!(fake.push_event(0, new_data(slot, 1, side, tail as u64, START_NS)));
        }
        for r in ends(slot, 1, end_reason::CLOSED) {
            assert!(fake.push_event(0, r));
        }
        flows.push(f);
    }
    fake.set_state(sensor_state::DONE);
    let o = finish(
        spawn(&["--control", fake.path().to_str().unwrap()]),
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let (recs, conns) = split_conn(lines(&String::from_utf8_lossy(&o.stdout)));
    assert_eq!(conns.len(), 2);
    assert!(conns[0].get("service").is_none(), "{}", conns[0]);
    assert_eq!(conns[1]["service"], "ssl");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["uid"], uid_of(&flows[1], 2));
    assert_eq!(recs[0]["server_name"], "mail.example");
}

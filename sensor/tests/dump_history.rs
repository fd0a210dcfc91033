//! The in-process dump gets every byte whatever `--history-kib` says (docs/REASSEMBLY.md,
//! "History"): the dump reads each call's bytes after the call returns, so a chunk whose bytes
//! came into order in a call must not go back to the pool in that same call. With no history
//! (or less than one call brings into order) a segment that crosses a chunk boundary, or one
//! that fills a hole before out-of-order bytes, used to give back the chunks it completed
//! before the dump read them: their bytes reached the dump as zeros, counted lost in
//! `flows.jsonl` but in no tracker counter.

use mos_sensor::capture::FileCapture;
use mos_sensor::defrag::DefragConfig;
use mos_sensor::event::Event;
use mos_sensor::flow::Endpoint;
use mos_sensor::output::{FlowRecord, StreamDump};
use mos_sensor::parse::flags::{ACK, FIN, PSH, SYN};
use mos_sensor::parse::{ChecksumStatus, TcpSegment};
use mos_sensor::replay::{replay, ChecksumPolicy, EventSink, ReplayOptions};
use mos_sensor::tracker::{Tracker, TrackerConfig, TrackerStats};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

const MS: u64 = 1_000_000;
const CHUNK: usize = 4096;
const CLIENT_ISN: u32 = 1000;
const SERVER_ISN: u32 = 5000;

fn ep(host: u32, port: u16) -> Endpoint {
    Endpoint {
        addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + host)),
        port,
    }
}

/// One tracker and the dump that handles its events after every call, as `--dump` runs.
struct Rig {
    tr: Tracker,
    dump: StreamDump,
    ts: u64,
}

impl Rig {
    fn new(history: u64, dir: &Path) -> Rig {
        let tr = Tracker::new(TrackerConfig {
            chunk_size: CHUNK,
            chunks: 64,
            stream_max: 16 * CHUNK,
            history,
            ..TrackerConfig::default()
        })
        .unwrap();
        Rig {
            tr,
            dump: StreamDump::create(dir).unwrap(),
            ts: 1_000 * MS,
        }
    }

    fn handle(&mut self, events: &[Event]) {
        self.dump.handle(&self.tr, events).unwrap();
    }

    /// A segment from the client (`to_server`) or the server, its data at stream offset `off`
    /// of the sender's stream.
    fn send(&mut self, to_server: bool, flags: u8, off: u32, ack_off: u32, data: &[u8]) {
        let (c, s) = (ep(1, 40000), ep(2, 80));
        let (src, dst, isn, peer_isn) = if to_server {
            (c, s, CLIENT_ISN, SERVER_ISN)
        } else {
            (s, c, SERVER_ISN, CLIENT_ISN)
        };
        let syn = flags & SYN != 0;
        let seq = if syn { isn } else { isn + 1 + off };
        let seg = TcpSegment {
            src: src.addr,
            dst: dst.addr,
            sport: src.port,
            dport: dst.port,
            seq,
            ack: if flags & ACK != 0 {
                peer_isn + 1 + ack_off
            } else {
                0
            },
            flags,
            window: 65535,
            payload: data,
            payload_len: data.len() as u32,
            checksum: ChecksumStatus::Unchecked,
            header_off: [0, 0],
            tunnel: Default::default(),
        };
        self.ts += MS;
        let mut out = Vec::new();
        self.tr.process(self.ts, 0, &seg, &mut out);
        self.handle(&out);
    }

    fn handshake(&mut self) {
        self.send(true, SYN, 0, 0, b"");
        self.send(false, SYN | ACK, 0, 0, b"");
        self.send(true, ACK, 0, 0, b"");
    }

    /// The client sends `data[from..to]`.
    fn client_data(&mut self, data: &[u8], from: usize, to: usize) {
        self.send(true, PSH | ACK, from as u32, 0, &data[from..to]);
    }

    /// The server acknowledges the client's first `upto` bytes.
    fn server_ack(&mut self, upto: usize) {
        self.send(false, ACK, 0, upto as u32, b"");
    }

    /// Ends the input and returns the one connection's record, its client-to-server file's
    /// bytes, and the tracker's counters.
    fn finish(mut self, dir: &Path) -> (FlowRecord, Vec<u8>, TrackerStats) {
        let mut out = Vec::new();
        self.tr.finish(self.ts, &mut out);
        self.handle(&out);
        let stats = self.tr.stats().clone();
        let records = self.dump.into_records();
        assert_eq!(records.len(), 1);
        let rec = records.into_iter().next().unwrap();
        let file = std::fs::read(dir.join(rec.c2s_file.as_ref().unwrap())).unwrap();
        (rec, file, stats)
    }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Checks the dump holds `data` whole, and that nothing was lost anywhere.
fn assert_whole(rec: &FlowRecord, file: &[u8], stats: &TrackerStats, data: &[u8], what: &str) {
    assert_eq!(
        (rec.c2s_bytes, rec.c2s_lost),
        (data.len() as u64, 0),
        "{what}: the dump's record"
    );
    let first_bad = file.iter().zip(data).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "{what}: the stream file differs");
    assert_eq!(file.len(), data.len(), "{what}: the stream file's length");
    assert_eq!(
        (stats.gap_bytes, stats.overflow_bytes, stats.reclaimed_bytes),
        (0, 0, 0),
        "{what}: the tracker's counters"
    );
}

#[test]
fn in_order_segments_across_chunk_boundaries_reach_the_dump_without_history() {
    for history in [0, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let mut rig = Rig::new(history, dir.path());
        rig.handshake();
        // Segments of 1460 bytes: every few of them crosses a chunk boundary, and its bytes
        // before the boundary complete a chunk that the tail leaves in that same call (more
        // than 1000 bytes past the boundary at 16 KiB).
        let data = payload(5 * CHUNK + 123);
        let mut at = 0;
        while at < data.len() {
            let end = (at + 1460).min(data.len());
            rig.client_data(&data, at, end);
            if at / CHUNK != end / CHUNK {
                // The chunk the tail left stays for the dump until the call after.
                assert_eq!(rig.tr.pool().chunks_in_use(), 2, "history {history}");
            }
            rig.server_ack(end);
            // ... and goes back then: with no history a side holds its tail's chunk alone.
            if history == 0 {
                assert_eq!(rig.tr.pool().chunks_in_use(), 1, "history {history}");
            }
            at = end;
        }
        let (rec, file, stats) = rig.finish(dir.path());
        assert_whole(&rec, &file, &stats, &data, &format!("history {history}"));
    }
}

#[test]
fn a_hole_filled_before_several_chunks_of_out_of_order_bytes_reaches_the_dump() {
    // The hole's segment brings more bytes into order than the history keeps (all of them,
    // and then some, with 4 KiB): the chunks it completes must still reach the dump.
    for history in [0, CHUNK as u64] {
        let dir = tempfile::tempdir().unwrap();
        let mut rig = Rig::new(history, dir.path());
        rig.handshake();
        let data = payload(4 * CHUNK + 500);
        // The first 1000 bytes are late; everything after them comes out of order first.
        let mut at = 1000;
        while at < data.len() {
            let end = (at + 1400).min(data.len());
            rig.client_data(&data, at, end);
            at = end;
        }
        rig.client_data(&data, 0, 1000);
        rig.server_ack(data.len());
        let (rec, file, stats) = rig.finish(dir.path());
        assert_whole(&rec, &file, &stats, &data, &format!("history {history}"));
    }
}

#[test]
fn a_connection_that_closes_as_its_last_segment_crosses_a_boundary_keeps_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::new(0, dir.path());
    rig.handshake();
    let data = payload(CHUNK + 300);
    rig.client_data(&data, 0, CHUNK - 200);
    // The last segment crosses the boundary and carries the FIN.
    rig.send(
        true,
        PSH | ACK | FIN,
        (CHUNK - 200) as u32,
        0,
        &data[CHUNK - 200..],
    );
    rig.send(false, FIN | ACK, 0, data.len() as u32 + 1, b"");
    rig.send(true, ACK, data.len() as u32 + 1, 1, b"");
    let (rec, file, stats) = rig.finish(dir.path());
    assert_whole(&rec, &file, &stats, &data, "closing");
}

/// MOS_CORPUS_DIR names the corpus root (pcaps/ and truth/), as for the tests package; by
/// default the workspace's sibling `shared/corpus`. Missing is a failure, never a skip.
fn corpus_pcaps() -> PathBuf {
    let dir = std::env::var_os("MOS_CORPUS_DIR")
        .map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus")),
            PathBuf::from,
        )
        .join("pcaps");
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "capture corpus not found at {} (set MOS_CORPUS_DIR)",
        dir.display()
    );
    dir
}

/// Replays `pcap` with `--history-kib` `history_kib` into a dump, as `mos-sensor --no-publish
/// --dump` does with one worker; returns the records by serial, and the tracker's counters.
fn dump_capture(pcap: &Path, history_kib: u64) -> (Vec<FlowRecord>, TrackerStats) {
    let dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::new(TrackerConfig {
        history: history_kib * 1024,
        ..TrackerConfig::default()
    })
    .unwrap();
    let mut dump = StreamDump::create(dir.path()).unwrap();
    let mut input = FileCapture::open(pcap).unwrap();
    let opts = ReplayOptions {
        checksums: ChecksumPolicy::Count,
        progress_every: None,
        stop: None,
        speed: None,
        defrag: Some(DefragConfig::default()),
    };
    let outcome = replay(&mut input, &mut tracker, &mut dump, opts, &mut |_, _| {}).unwrap();
    assert!(outcome.capture_error.is_none());
    let mut records = dump.into_records();
    records.sort_by(|a, b| {
        (a.start_ts, &a.client, &a.server)
            .partial_cmp(&(b.start_ts, &b.client, &b.server))
            .unwrap()
    });
    (records, tracker.stats().clone())
}

#[test]
fn a_corpus_capture_dumps_the_same_streams_with_no_history_as_with_the_default() {
    let pcap = corpus_pcaps().join("ndpi__1kxun.pcapng");
    let (with, with_stats) = dump_capture(&pcap, 256);
    let (without, without_stats) = dump_capture(&pcap, 0);
    assert_eq!(with.len(), without.len());
    let held = |r: &[FlowRecord]| -> u64 {
        r.iter()
            .map(|f| f.c2s_bytes - f.c2s_lost + f.s2c_bytes - f.s2c_lost)
            .sum()
    };
    // 493257 stream bytes; with no history 6583 of them used to reach the dump as zeros
    // (the bytes before a 32 KiB chunk boundary of the segments that crossed one).
    assert_eq!(held(&with), with_stats.payload_bytes);
    assert_eq!(held(&without), held(&with), "stream bytes held in the dump");
    for (a, b) in with.iter().zip(&without) {
        let who = format!("{} -> {}", a.client, a.server);
        assert_eq!((&a.client, &a.server), (&b.client, &b.server));
        assert_eq!(
            (a.c2s_bytes, a.c2s_lost, &a.c2s_sha256),
            (b.c2s_bytes, b.c2s_lost, &b.c2s_sha256),
            "{who}: client to server"
        );
        assert_eq!(
            (a.s2c_bytes, a.s2c_lost, &a.s2c_sha256),
            (b.s2c_bytes, b.s2c_lost, &b.s2c_sha256),
            "{who}: server to client"
        );
    }
    assert_eq!(with_stats, without_stats);
}

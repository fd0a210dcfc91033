//! The stream dump: each connection's two byte streams to files, and `flows.jsonl`.
//!
//! It reads the streams the way an analyzer will with `peek`: on `CONN_NEW_DATA` it copies
//! everything from its read pointer to the stream's tail, writing zeros for bytes the capture
//! never held (gaps) or that the ring overwrote before it read them (overruns), and counting
//! them as lost. On the first `CONN_END` of a connection it writes the connection's record.

use crate::event::{Event, EventKind, FlowHandle};
use crate::flow::Endpoint;
use crate::replay::EventSink;
use crate::tcp::reassembly::ReadChunk;
use crate::tracker::Tracker;
use anyhow::{Context, Result};
use rustc_hash::FxHashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use shm_layout::Side;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes a side buffers in memory before appending to its file.
const SPILL_AT: usize = 256 * 1024;

/// One line of `flows.jsonl`.
#[derive(Debug, Serialize)]
pub struct FlowRecord {
    /// Client endpoint, `ip:port` or `[ip]:port`.
    pub client: String,
    /// Server endpoint.
    pub server: String,
    /// Client's initial sequence number, when its SYN was seen.
    pub client_isn: Option<u32>,
    /// Server's initial sequence number, when its SYN/ACK was seen.
    pub server_isn: Option<u32>,
    /// Roles guessed (no handshake seen).
    pub client_guessed: bool,
    /// First packet, seconds since the epoch.
    pub start_ts: f64,
    /// Last packet, seconds since the epoch.
    pub end_ts: f64,
    /// Bytes of the client-to-server stream file, lost bytes included as zeros.
    pub c2s_bytes: u64,
    /// Bytes of the server-to-client stream file.
    pub s2c_bytes: u64,
    /// SHA-256 of the client-to-server stream file.
    pub c2s_sha256: String,
    /// SHA-256 of the server-to-client stream file.
    pub s2c_sha256: String,
    /// Bytes of the client-to-server stream the capture did not hold (written as zeros).
    pub c2s_lost: u64,
    /// Bytes of the server-to-client stream the capture did not hold.
    pub s2c_lost: u64,
    /// The client-to-server stream file, relative to the dump directory (null when empty).
    pub c2s_file: Option<String>,
    /// The server-to-client stream file (null when empty).
    pub s2c_file: Option<String>,
    #[serde(skip)]
    start_ns: u64,
    #[serde(skip)]
    serial: u64,
}

#[derive(Debug)]
struct Direction {
    /// The stream file's name in the dump directory (created on the first byte).
    name: String,
    /// Next stream offset to read.
    read_at: u64,
    bytes: u64,
    lost: u64,
    sha: Sha256,
    pending: Vec<u8>,
    /// The file exists (a byte or a hole was written).
    written: bool,
}

impl Direction {
    /// The direction into `side`'s receive stream of a connection (`serial`, `client`,
    /// `server`).
    fn new(serial: u64, side: Side, client: Endpoint, server: Endpoint) -> Self {
        let (from, to, tag) = match side {
            Side::Svr => (client, server, "c2s"),
            Side::Cli => (server, client, "s2c"),
        };
        Direction {
            name: format!("{serial:07}-{}-{}.{tag}", file_part(from), file_part(to)),
            read_at: 0,
            bytes: 0,
            lost: 0,
            sha: Sha256::new(),
            pending: Vec::new(),
            written: false,
        }
    }
}

#[derive(Debug)]
struct Open {
    /// Indexed by the side whose receive stream it reads: `[Cli]` is server-to-client.
    dirs: [Direction; 2],
    serial: u64,
}

/// Writes streams and records into a directory.
#[derive(Debug)]
pub struct StreamDump {
    dir: PathBuf,
    open: FxHashMap<FlowHandle, Open>,
    records: Vec<FlowRecord>,
    scratch: Vec<u8>,
}

impl StreamDump {
    /// A dump into `dir`, created if missing.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create dump directory {}", dir.display()))?;
        Ok(StreamDump {
            dir: dir.to_path_buf(),
            open: FxHashMap::default(),
            records: Vec::new(),
            scratch: vec![0; 64 * 1024],
        })
    }

    /// Connections recorded so far.
    pub fn records(&self) -> &[FlowRecord] {
        &self.records
    }

    /// Writes `flows.jsonl` (ordered by start time, then tuple) and returns its path.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.records.sort_by(|a, b| {
            (a.start_ns, &a.client, &a.server, a.serial)
                .cmp(&(b.start_ns, &b.client, &b.server, b.serial))
        });
        let path = self.dir.join("flows.jsonl");
        let mut out = std::io::BufWriter::new(
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?,
        );
        for r in &self.records {
            serde_json::to_writer(&mut out, r)?;
            out.write_all(b"\n")?;
        }
        out.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    fn ensure_open(&mut self, tracker: &Tracker, h: FlowHandle) {
        if let Some(conn) = tracker.conn(h) {
            self.open.entry(h).or_insert_with(|| Open {
                dirs: [Side::Cli, Side::Svr]
                    .map(|side| Direction::new(conn.serial, side, conn.client(), conn.server())),
                serial: conn.serial,
            });
        }
    }

    fn drain(&mut self, tracker: &Tracker, h: FlowHandle, side: Side) -> Result<()> {
        let Some(conn) = tracker.conn(h) else {
            return Ok(());
        };
        let Some(open) = self.open.get_mut(&h) else {
            return Ok(());
        };
        let stream = &conn.stack(side).recv;
        let d = &mut open.dirs[side.index()];
        loop {
            match stream.read(tracker.pool(), d.read_at, &mut self.scratch) {
                ReadChunk::NoData => break,
                ReadChunk::Data(n) => {
                    d.pending.extend_from_slice(&self.scratch[..n]);
                    d.read_at += n as u64;
                    d.bytes += n as u64;
                }
                ReadChunk::Gap { offset, len } => {
                    // Skip to the gap's start if the reader was before it, then past it.
                    let skip = offset.saturating_sub(d.read_at) + len;
                    d.read_at += skip;
                    zeros(&self.dir, d, skip)?;
                }
                ReadChunk::Overrun { lost } => {
                    d.read_at += lost;
                    zeros(&self.dir, d, lost)?;
                }
            }
            if d.pending.len() >= SPILL_AT {
                spill(&self.dir, d)?;
            }
        }
        Ok(())
    }

    fn close(&mut self, tracker: &Tracker, h: FlowHandle) -> Result<()> {
        let Some(conn) = tracker.conn(h) else {
            return Ok(());
        };
        let Some(mut open) = self.open.remove(&h) else {
            return Ok(());
        };
        for side in [Side::Cli, Side::Svr] {
            let d = &mut open.dirs[side.index()];
            spill(&self.dir, d)?;
        }
        let [s2c, c2s] = open.dirs;
        self.records.push(FlowRecord {
            client: conn.client().to_string(),
            server: conn.server().to_string(),
            client_isn: conn.stack(Side::Cli).isn,
            server_isn: conn.stack(Side::Svr).isn,
            client_guessed: conn.guessed,
            start_ts: conn.start_ns as f64 / 1e9,
            end_ts: conn.last_ns as f64 / 1e9,
            c2s_bytes: c2s.bytes,
            s2c_bytes: s2c.bytes,
            c2s_sha256: hex::encode(c2s.sha.finalize()),
            s2c_sha256: hex::encode(s2c.sha.finalize()),
            c2s_lost: c2s.lost,
            s2c_lost: s2c.lost,
            c2s_file: c2s.written.then_some(c2s.name),
            s2c_file: s2c.written.then_some(s2c.name),
            start_ns: conn.start_ns,
            serial: open.serial,
        });
        Ok(())
    }
}

/// Appends `n` lost bytes to a direction as zeros: hashed as zeros, but stored as a hole in a
/// sparse file, so a capture that lost gigabytes does not fill the disk or the memory.
fn zeros(dir: &Path, d: &mut Direction, n: u64) -> Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    spill(dir, d)?;
    let mut left = n;
    while left > 0 {
        let k = left.min(ZEROS.len() as u64) as usize;
        d.sha.update(&ZEROS[..k]);
        left -= k as u64;
    }
    let path = dir.join(&d.name);
    d.written = true;
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.set_len(d.bytes + n)
        .with_context(|| format!("cannot extend {}", path.display()))?;
    d.bytes += n;
    d.lost += n;
    Ok(())
}

/// Appends a direction's buffered bytes to its file (created on first use).
fn spill(dir: &Path, d: &mut Direction) -> Result<()> {
    if d.pending.is_empty() {
        return Ok(());
    }
    d.sha.update(&d.pending);
    let path = dir.join(&d.name);
    d.written = true;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(&d.pending)
        .with_context(|| format!("cannot write {}", path.display()))?;
    d.pending.clear();
    Ok(())
}

/// An endpoint as a file-name part: `10.0.0.1_80`, `fe80--1_443` (no `:` or brackets).
fn file_part(e: Endpoint) -> String {
    format!("{}_{}", e.addr.to_string().replace(':', "-"), e.port)
}

impl EventSink for StreamDump {
    fn handle(&mut self, tracker: &Tracker, events: &[Event]) -> Result<()> {
        for ev in events {
            let Some(side) = ev.side else { continue };
            match ev.kind {
                EventKind::ConnNewData => {
                    self.ensure_open(tracker, ev.flow);
                    self.drain(tracker, ev.flow, side)?;
                }
                // The tracker raises CONN_END for both sides, the client's first: the
                // connection is written once, on that one.
                EventKind::ConnEnd { .. } if side == Side::Cli => {
                    self.ensure_open(tracker, ev.flow);
                    self.drain(tracker, ev.flow, Side::Cli)?;
                    self.drain(tracker, ev.flow, Side::Svr)?;
                    self.close(tracker, ev.flow)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

//! The stream dump: each connection's two byte streams to files, and `flows.jsonl`.
//!
//! It reads the streams the way an analyzer does with `peek`: on `CONN_NEW_DATA` it copies
//! everything from its read pointer to the stream's tail, writing zeros for bytes the capture
//! never held (gaps) or that the ring overwrote before it read them (overruns), and counting
//! them as lost. On the first `CONN_END` of a connection it writes the connection's record.
//!
//! The files are written by `mos_client::dump::DumpWriter`, which the `mos-dump` analyzer uses
//! too, so the in-process dump and the analyzer's write the same bytes by construction. This
//! module only feeds it from the tracker.

use crate::event::{Event, EventKind, FlowHandle};
use crate::flow::Endpoint;
use crate::publish::slots::tunnel_data;
use crate::replay::EventSink;
use crate::tcp::reassembly::ReadChunk;
use crate::tracker::Tracker;
use anyhow::Result;
use mos_client::dump::{DumpWriter, FlowEnd};
use shm_layout::Side;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use mos_client::dump::FlowRecord;

/// Writes streams and records into a directory.
#[derive(Debug)]
pub struct StreamDump {
    writer: DumpWriter<FlowHandle>,
    scratch: Vec<u8>,
}

fn addr(e: Endpoint) -> SocketAddr {
    SocketAddr::new(e.addr, e.port)
}

impl StreamDump {
    /// A dump into `dir`, created if missing.
    pub fn create(dir: &Path) -> Result<Self> {
        Ok(StreamDump {
            writer: DumpWriter::create(dir)?,
            scratch: vec![0; 64 * 1024],
        })
    }

    /// Connections recorded so far.
    pub fn records(&self) -> &[FlowRecord] {
        self.writer.records()
    }

    /// Writes `flows.jsonl` (ordered by start time, then tuple) and returns its path.
    pub fn finish(self) -> Result<PathBuf> {
        Ok(self.writer.finish()?)
    }

    /// The connections recorded, without writing `flows.jsonl` (one dump per worker into one
    /// directory; [`write_index`] writes their records together).
    pub fn into_records(self) -> Vec<FlowRecord> {
        self.writer.into_records()
    }
}

/// Writes `dir/flows.jsonl` from the records of every worker's dump and returns its path.
pub fn write_index(dir: &Path, records: Vec<FlowRecord>) -> Result<PathBuf> {
    Ok(mos_client::dump::write_index(dir, records)?)
}

impl StreamDump {
    fn ensure_open(&mut self, tracker: &Tracker, h: FlowHandle) {
        if let Some(conn) = tracker.conn(h) {
            self.writer
                .open(h, conn.serial, addr(conn.client()), addr(conn.server()));
        }
    }

    fn drain(&mut self, tracker: &Tracker, h: FlowHandle, side: Side) -> Result<()> {
        let Some(conn) = tracker.conn(h) else {
            return Ok(());
        };
        let Some(mut out) = self.writer.stream(&h, side) else {
            return Ok(());
        };
        let stream = &conn.stack(side).recv;
        // The file's length is the reader's stream offset: lost bytes are written as zeros.
        loop {
            match stream.read(tracker.pool(), out.position(), &mut self.scratch) {
                ReadChunk::NoData => break,
                ReadChunk::Data(n) => out.data(&self.scratch[..n])?,
                ReadChunk::Gap { offset, len } => {
                    // Skip to the gap's start if the reader was before it, then past it.
                    out.lost(offset.saturating_sub(out.position()) + len)?;
                }
                ReadChunk::Overrun { lost } => out.lost(lost)?,
            }
        }
        Ok(())
    }

    fn close(&mut self, tracker: &Tracker, h: FlowHandle) -> Result<()> {
        let Some(conn) = tracker.conn(h) else {
            return Ok(());
        };
        self.writer.close(
            &h,
            FlowEnd {
                client_isn: conn.stack(Side::Cli).isn,
                server_isn: conn.stack(Side::Svr).isn,
                guessed: conn.guessed,
                start_ns: conn.start_ns,
                last_ns: conn.last_ns,
                tunnel: tracker.tunnel(h).map(tunnel_data),
                cut_short: false,
            },
        )?;
        Ok(())
    }
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

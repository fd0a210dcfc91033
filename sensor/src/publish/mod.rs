//! Publication: what the sensor shares with analyzers.
//!
//! - [`region`] creates the shared regions;
//! - [`slots`] writes each connection's state into its flow slot (called by the tracker);
//! - [`subscription`] holds each analyzer's sockets and their filters, and which sockets each
//!   flow is for;
//! - [`fanout`] turns the tracker's events into records in each attached analyzer's event
//!   ring, keeps the packet log, and in lossless mode waits for analyzers before anything
//!   they may still read is reused.

pub mod fanout;
pub mod region;
pub mod slots;
pub mod subscription;

pub use fanout::{Attached, Fanout, FanoutOptions, PublishSink, ToControl, ToWorker};
pub use region::{
    analyzer_bytes, analyzer_hugepages, create_analyzer, create_main, main_hugepages, AnalyzerFds,
    AnalyzerRegions, HugePages, MainRegion,
};
pub use slots::SlotPublisher;

use crate::replay::ReplayStats;
use crate::tracker::Tracker;
use shm_layout::layout::{counter, WorkerInfo};
use std::sync::atomic::Ordering;

/// Copies a worker's frame and connection counters into its part of the shared header (at
/// the end of the input, and about once a second while a live capture runs).
pub fn store_counters(info: &WorkerInfo, s: &ReplayStats, tracker: &Tracker) {
    let t = tracker.stats();
    let set = |i: usize, v: u64| info.counters[i].store(v, Ordering::Relaxed);
    set(counter::FRAMES, s.frames);
    set(counter::FRAME_BYTES, s.frame_bytes);
    set(counter::TCP, s.tcp);
    set(counter::OTHER_IP, s.other_ip);
    set(counter::NOT_IP, s.not_ip);
    set(counter::TRUNCATED, s.truncated);
    set(counter::MALFORMED, s.malformed);
    set(counter::UNSUPPORTED_LINK, s.unsupported_link);
    set(counter::BAD_CHECKSUM, s.bad_checksum);
    set(counter::SNAP_CUT, s.snap_cut);
    set(counter::FRAGMENTS, s.defrag.fragments);
    set(counter::FRAGMENTS_DROPPED, s.defrag.fragments_dropped);
    set(counter::FLOWS_TOTAL, t.conns_created);
    set(counter::FLOWS_LIVE, tracker.live_conns() as u64);
    set(counter::FLOWS_EVICTED, t.conns_evicted);
    set(counter::PAYLOAD_BYTES, t.payload_bytes);
    set(counter::PSEQ, tracker.pseq());
    set(counter::STREAM_OVERFLOW_BYTES, t.overflow_bytes);
    set(counter::POOL_EMPTY_BYTES, t.pool_empty_bytes);
    set(counter::RECLAIMED_BYTES, t.reclaimed_bytes);
    set(
        counter::CHUNKS_IN_USE,
        tracker.pool().chunks_in_use() as u64,
    );
}

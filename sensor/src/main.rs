//! `mos-sensor`: reads packets, emulates both TCP endpoints of every connection, reassembles
//! each side's byte stream, and (for now) writes the streams to a directory.

use anyhow::{bail, Context, Result};
use clap::Parser;
use mos_sensor::capture::FileCapture;
use mos_sensor::output::StreamDump;
use mos_sensor::replay::{replay, CountingSink, EventSink, ReplayOptions, ReplayStats};
use mos_sensor::tracker::{Tracker, TrackerConfig};
use shm_layout::EventMask;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// mos sensor: TCP connection tracking, endpoint emulation and stream reassembly.
///
/// Reads a pcap or pcapng capture, follows every TCP connection in it (both endpoints' state
/// machines, each side's byte stream reassembled in order, retransmissions and overlaps
/// resolved first-copy-wins, bytes the capture never held recorded as gaps), and with --dump
/// writes each connection's two streams and a flows.jsonl index to a directory.
///
/// A capture that is truncated or malformed part-way ends the replay with one message naming
/// the byte offset; everything before it is processed and written as usual, and the exit
/// status is 2. Other errors exit with 1.
///
/// Publishing to analyzer processes over shared memory, DPDK and live capture are not
/// implemented yet.
#[derive(Debug, Parser)]
#[command(name = "mos-sensor", version, about, long_about)]
struct Args {
    /// Capture file to replay (pcap or pcapng; Ethernet, Linux cooked v1/v2, BSD loopback,
    /// raw IP, PPP, Cisco HDLC and NFLOG link types).
    #[arg(long, value_name = "FILE")]
    pcap: PathBuf,

    /// Write each connection's streams and DIR/flows.jsonl into DIR (created if missing).
    /// Bytes the receiver acknowledged but the capture never held, and bytes cut by the snap
    /// length, are written as zeros (holes in sparse files) and counted as lost.
    #[arg(long, value_name = "DIR")]
    dump: Option<PathBuf>,

    /// Size of each side's receive ring in KiB (a power of two); out-of-order data must fit
    /// in it, and in-order data older than this is overwritten once read.
    #[arg(long, value_name = "KIB", default_value_t = 256)]
    ring_kib: usize,

    /// Most receive rings in use at once (one per direction carrying data, returned when the
    /// connection closes); bytes that find no free ring are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 16384)]
    max_rings: usize,

    /// Most connections tracked at once; beyond it the least recently active is evicted.
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    max_flows: usize,

    /// A connection idle this many seconds (capture time) ends with a timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    idle_timeout: u64,

    /// Do not track connections whose handshake was not captured (their packets become
    /// orphans).
    #[arg(long)]
    no_midstream: bool,

    /// Do not verify TCP checksums (by default bad ones are counted; they are never dropped).
    #[arg(long)]
    no_checksum: bool,

    /// Print no progress line and no summary.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mos-sensor: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    if !args.ring_kib.is_power_of_two() || args.ring_kib > 1 << 20 {
        bail!(
            "--ring-kib must be a power of two between 1 and 1048576, not {}",
            args.ring_kib
        );
    }
    if args.max_flows == 0 || args.max_flows > u32::MAX as usize / 2 {
        bail!("--max-flows must be between 1 and {}", u32::MAX / 2);
    }
    if args.max_rings == 0 || args.max_rings > u32::MAX as usize / 2 {
        bail!("--max-rings must be between 1 and {}", u32::MAX / 2);
    }
    let mut events = EventMask::CONN_NEW_DATA | EventMask::CONN_END;
    if args.dump.is_none() {
        events = EventMask(0);
    }
    let cfg = TrackerConfig {
        max_flows: args.max_flows,
        idle_timeout_ns: args.idle_timeout.saturating_mul(1_000_000_000),
        ring_size: args.ring_kib * 1024,
        max_rings: args.max_rings,
        track_midstream: !args.no_midstream,
        events,
        ..TrackerConfig::default()
    };
    let mut capture = FileCapture::open(&args.pcap)?;
    let mut tracker = Tracker::new(cfg).context("cannot lay out the ring pool")?;
    let mut dump = match &args.dump {
        Some(dir) => Some(StreamDump::create(dir)?),
        None => None,
    };
    let mut counter = CountingSink::default();
    let sink: &mut dyn EventSink = match dump.as_mut() {
        Some(d) => d,
        None => &mut counter,
    };
    let show_progress = !args.quiet;
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let opts = ReplayOptions {
        verify_checksums: !args.no_checksum,
        progress_every: show_progress.then_some(Duration::from_secs(1)),
    };
    let mut progress = |s: &ReplayStats, (done, total): (u64, Option<u64>)| {
        let pct = total
            .filter(|&t| t > 0)
            .map(|t| format!(" {:5.1}%", done as f64 * 100.0 / t as f64));
        let line = format!(
            "mos-sensor: {}{} frames, {} MB read",
            s.frames,
            pct.unwrap_or_default(),
            done / 1_000_000
        );
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    };
    let outcome = replay(&mut capture, &mut tracker, sink, opts, &mut progress)
        .with_context(|| format!("replaying {}", args.pcap.display()))?;
    if show_progress && tty {
        eprintln!();
    }
    let written = match dump {
        Some(d) => Some((d.records().len(), d.finish()?)),
        None => None,
    };
    if let Some(e) = &outcome.capture_error {
        eprintln!(
            "mos-sensor: {e}; the replay stopped there, results cover the {} frames before it",
            outcome.stats.frames
        );
    }
    if !args.quiet {
        let s = &outcome.stats;
        let t = tracker.stats();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "mos-sensor: {} frames ({} TCP, {} other IP, {} not IP) in {:.2} s",
            s.frames, s.tcp, s.other_ip, s.not_ip, secs
        );
        eprintln!(
            "mos-sensor: skipped {} truncated, {} malformed, {} of unsupported link type; kept {} with bad TCP checksums, {} cut by the snap length (rest counted as a gap), {} shorter than their IP length",
            s.truncated,
            s.malformed,
            s.unsupported_link,
            s.bad_checksum,
            s.snap_cut,
            s.ip_length_exceeds_frame
        );
        eprintln!(
            "mos-sensor: {} connections ({} midstream, {} closed, {} timed out, {} evicted, {} open at end); {} payload bytes, {} retransmitted, {} lost to gaps, {} lost to overflow, {} conflicting retransmissions",
            t.conns_created,
            t.conns_midstream,
            t.conns_closed,
            t.conns_timed_out,
            t.conns_evicted,
            t.conns_open_at_end,
            t.payload_bytes,
            t.rexmit_bytes,
            t.gap_bytes,
            t.overflow_bytes,
            t.conflicts
        );
        if let Some((n, path)) = &written {
            eprintln!("mos-sensor: {n} connections written to {}", path.display());
        }
    }
    Ok(if outcome.capture_error.is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

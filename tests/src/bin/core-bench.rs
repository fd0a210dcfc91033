//! Throughput of the sensor core on captures held in memory, against a memcpy of the same
//! payload bytes.
//!
//! core-bench [--runs N] [--no-checksum] [--warm-tracker] CAPTURE...
//!
//! For each capture the file is read into memory once. Then, `N` times and interleaved so that
//! noise from other tenants hits both alike:
//! - core: `FileCapture::from_bytes` over a copy of the bytes, a fresh `Tracker` that builds no
//!   events, and `replay` with a `CountingSink`; only the replay is timed (with
//!   `--warm-tracker`, one tracker per capture is reused by every run instead, so its ring
//!   pool pages are already resident, as in a long-running sensor);
//! - memcpy: every TCP segment's captured payload (found by one untimed parse beforehand) is
//!   copied, in capture order, into a 256 KiB scratch buffer that wraps around.
//!
//! Prints the raw per-run numbers, then one markdown table row per capture: medians (with min
//! and max) of packets/s and payload Gbit/s for the core, the memcpy median, and their ratio.
//! For `scripts/bench.sh`, two `result` lines per capture (see `mos_tests::bench`):
//! `core_mpps` (the core's Mpps) and `core_memcpy` (the core's payload bandwidth over
//! memcpy's, run by run), each as median, minimum and maximum over the runs.
//! The timing lives here, never in the sensor crate.

use anyhow::{bail, ensure, Context, Result};
use mos_sensor::capture::FileCapture;
use mos_sensor::flow::FlowKey;
use mos_sensor::replay::{replay, ChecksumPolicy, CountingSink, ReplayOptions, ReplayStats};
use mos_sensor::tcp::conn::Conn;
use mos_sensor::tracker::{Tracker, TrackerConfig};
use mos_tests::bench::{
    gbps, med_min_max, mpps, payload_segments, result_line, run_memcpy, Spread, SCRATCH,
};
use shm_layout::EventMask;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: core-bench [--runs N (default 7)] [--no-checksum] [--warm-tracker] CAPTURE...";

/// What one capture holds, from the untimed walk and the first core run.
#[derive(Debug)]
struct Shape {
    frames: u64,
    tcp: u64,
    payload_bytes: u64,
    conns: u64,
    bad_checksum: u64,
}

/// The per-run results of one capture.
#[derive(Debug, Default)]
struct Runs {
    core: Vec<Duration>,
    memcpy: Vec<Duration>,
}

fn main() -> Result<()> {
    let mut runs = 7usize;
    let mut verify = true;
    let mut warm = false;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .with_context(|| format!("--runs needs a value\n{USAGE}"))?
                    .parse()
                    .context("--runs")?;
            }
            "--no-checksum" => verify = false,
            "--warm-tracker" => warm = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown argument {s:?}\n{USAGE}"),
            _ => files.push(PathBuf::from(a)),
        }
    }
    ensure!(runs > 0, "--runs must be at least 1");
    ensure!(!files.is_empty(), "{USAGE}");

    println!(
        "# core-bench: runs={runs}, checksums {}, {} tracker per run, events none, \
         CountingSink, single thread",
        if verify { "verified" } else { "not verified" },
        if warm { "reused (warm)" } else { "fresh" },
    );
    let mut rows = Vec::new();
    for path in &files {
        let (shape, r) = bench_one(path, runs, verify, warm)?;
        rows.push(row(path, &shape, &r));
    }
    println!();
    println!(
        "| capture | frames | TCP segs | payload MB | conns | core Mpps med (min-max) \
         | core Gbit/s med (min-max) | memcpy Gbit/s med | core/memcpy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    println!();
    if let Some(hwm) = vm_hwm_kib() {
        println!("peak RSS (VmHWM): {:.1} MiB", hwm as f64 / 1024.0);
    }
    println!(
        "state per tracked connection (estimate, static sizes): {} B \
         (table slot {} B holding a {} B Conn, + hash index entry ~{} B); stream rings not included",
        per_conn_bytes(),
        slot_bytes(),
        std::mem::size_of::<Conn>(),
        index_entry_bytes(),
    );
    Ok(())
}

/// Reads `path`, walks it once, then times `runs` interleaved core and memcpy runs.
fn bench_one(path: &Path, runs: usize, verify: bool, warm: bool) -> Result<(Shape, Runs)> {
    let mut bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let segments = payload_segments(&name, &bytes, verify)?;
    let payload_bytes: u64 = segments.iter().map(|&(_, len)| len as u64).sum();

    let mut scratch = vec![0u8; SCRATCH];
    let mut result = Runs::default();
    let mut first: Option<(ReplayStats, u64)> = None;
    let mut capture_error = None;
    let mut reused = if warm { Some(tracker()?) } else { None };
    // One untimed warm-up of each, so the first timed run does not pay for cold caches alone.
    run_core(
        &name,
        &mut bytes,
        verify,
        reused.as_mut(),
        &mut capture_error,
    )?;
    run_memcpy(&bytes, &segments, &mut scratch);
    for i in 0..runs {
        let (t, stats, conns) = run_core(
            &name,
            &mut bytes,
            verify,
            reused.as_mut(),
            &mut capture_error,
        )?;
        let m = run_memcpy(&bytes, &segments, &mut scratch);
        println!(
            "raw {name} run {i}: core {:.3} ms ({:.3} Mpps, {:.3} Gbit/s), memcpy {:.3} ms ({:.3} Gbit/s)",
            ms(t),
            mpps(stats.frames, t),
            gbps(payload_bytes, t),
            ms(m),
            gbps(payload_bytes, m),
        );
        match &first {
            None => first = Some((stats, conns)),
            Some((s, c)) => ensure!(
                *s == stats && *c == conns,
                "{name}: runs disagree on what the capture holds"
            ),
        }
        result.core.push(t);
        result.memcpy.push(m);
    }
    let (stats, conns) = first.expect("runs > 0");
    if let Some(e) = capture_error {
        println!("note {name}: the capture ends early: {e}");
    }
    let shape = Shape {
        frames: stats.frames,
        tcp: stats.tcp,
        payload_bytes,
        conns,
        bad_checksum: stats.bad_checksum,
    };
    if shape.bad_checksum > 0 {
        println!(
            "note {name}: {} segments with a bad checksum",
            shape.bad_checksum
        );
    }
    Ok((shape, result))
}

/// A tracker that builds no events ("writing nothing"), otherwise the sensor's defaults.
fn tracker() -> Result<Tracker> {
    Tracker::new(TrackerConfig {
        events: EventMask(0),
        ..TrackerConfig::default()
    })
    .context("cannot lay out the ring pool")
}

fn opts(verify: bool) -> ReplayOptions {
    ReplayOptions {
        checksums: if verify {
            ChecksumPolicy::Count
        } else {
            ChecksumPolicy::Ignore
        },
        progress_every: None,
        stop: None,
        speed: None,
        defrag: Some(mos_sensor::defrag::DefragConfig::default()),
    }
}

/// One core run: returns the replay time, the frame counters and the connections created.
/// With `reuse`, that tracker (empty after its previous replay) is used instead of a fresh one.
fn run_core(
    name: &str,
    bytes: &mut Vec<u8>,
    verify: bool,
    reuse: Option<&mut Tracker>,
    capture_error: &mut Option<String>,
) -> Result<(Duration, ReplayStats, u64)> {
    let mut cap = FileCapture::from_bytes(name, std::mem::take(bytes))?;
    let mut fresh;
    let tr = match reuse {
        Some(t) => t,
        None => {
            fresh = tracker()?;
            &mut fresh
        }
    };
    ensure!(tr.live_conns() == 0, "a reused tracker must be empty");
    let conns0 = tr.stats().conns_created;
    let mut sink = CountingSink::default();
    let start = Instant::now();
    let out = replay(&mut cap, tr, &mut sink, opts(verify), &mut |_, _| {})?;
    let t = start.elapsed();
    black_box(&sink);
    *bytes = cap.into_bytes();
    *capture_error = out.capture_error.map(|e| e.to_string());
    Ok((t, out.stats, tr.stats().conns_created - conns0))
}

fn row(path: &Path, s: &Shape, r: &Runs) -> String {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let core_pps: Vec<f64> = r.core.iter().map(|&t| mpps(s.frames, t)).collect();
    let core_gb: Vec<f64> = r.core.iter().map(|&t| gbps(s.payload_bytes, t)).collect();
    let mem_gb: Vec<f64> = r.memcpy.iter().map(|&t| gbps(s.payload_bytes, t)).collect();
    let paired: Vec<f64> = r
        .core
        .iter()
        .zip(&r.memcpy)
        .map(|(c, m)| m.as_secs_f64() / c.as_secs_f64())
        .collect();
    let (pm, plo, phi) = med_min_max(&core_pps);
    let (gm, glo, ghi) = med_min_max(&core_gb);
    let (mm, _, _) = med_min_max(&mem_gb);
    let (rm, _, _) = med_min_max(&paired);
    let stem = path
        .file_stem()
        .map_or_else(|| name.clone(), |n| n.to_string_lossy().into());
    if let (Some(p), Some(r)) = (Spread::of(&core_pps), Spread::of(&paired)) {
        println!("{}", result_line("core_mpps", &stem, &p));
        println!("{}", result_line("core_memcpy", &stem, &r));
    }
    println!(
        "summary {name}: frames={} tcp={} payload_bytes={} conns={} core_mpps_med={pm:.4} \
         core_gbps_med={gm:.4} memcpy_gbps_med={mm:.4} ratio_of_medians={:.4} \
         median_paired_ratio={rm:.4}",
        s.frames,
        s.tcp,
        s.payload_bytes,
        s.conns,
        gm / mm
    );
    format!(
        "| {name} | {} | {} | {:.1} | {} | {pm:.3} ({plo:.3}-{phi:.3}) | {gm:.3} ({glo:.3}-{ghi:.3}) \
         | {mm:.2} | {:.1} % |",
        s.frames,
        s.tcp,
        s.payload_bytes as f64 / 1e6,
        s.conns,
        100.0 * gm / mm
    )
}

fn ms(t: Duration) -> f64 {
    t.as_secs_f64() * 1e3
}

/// Peak resident set size of this process, KiB.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A flow-table slot as `FlowTable` lays it out (key, value, last time, links, generation).
fn slot_bytes() -> usize {
    std::mem::size_of::<(FlowKey, Option<Conn>, u64, u32, u32, u32, bool)>()
}

/// A hash index entry (32-bit hash and slot number, 8 bytes) at the index's highest load
/// (1/2; it is between 1/4 and 1/2 full).
fn index_entry_bytes() -> usize {
    std::mem::size_of::<u64>() * 2
}

fn per_conn_bytes() -> usize {
    slot_bytes() + index_entry_bytes()
}

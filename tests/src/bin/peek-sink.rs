//! `peek-sink`: a benchmark analyzer. It attaches to a sensor, registers `CONN_NEW_DATA` on
//! both sides, and on each event peeks every new byte of that side into a 64 KiB scratch
//! buffer, counting bytes, overruns, gaps and events and timing its `peek` calls.
//!
//! When the sensor's input is done it copies the same chunk sizes, in the same groups (one
//! group per callback), from a 256 KiB source into the same scratch buffer with `memcpy`, timed
//! the same way, and prints one JSON line on stdout with both figures (`pub-bench` reads it).
//!
//! With `--filter EXPR` the socket takes only the connections whose first packet the libpcap
//! expression matches (its SYN filter): the sensor runs it, and the sink sees nothing of the
//! other connections. The JSON line then names the filter.
//!
//! With `--events-only` it takes the same events and peeks nothing (it reads neither the flow
//! slots nor the streams): what delivering the events alone costs the sensor. Its JSON line
//! then counts callbacks and no bytes.
//!
//! usage: peek-sink --control PATH [--name NAME] [--filter EXPR] [--events-only]

use anyhow::{bail, Context, Result};
use mos_client::{AttachOptions, Errno, EventMask, Filter, MonitorFilter, Mos, Peek, RunEnd, Side};
use std::cell::RefCell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: peek-sink --control PATH [--name NAME] [--filter EXPR] [--events-only]";
/// The analyzer's scratch buffer.
const SCRATCH: usize = 64 * 1024;
/// The memcpy baseline's source (the sensor's default ring size).
const SOURCE: usize = 256 * 1024;
/// How long to keep trying to attach while the sensor starts.
const ATTACH_FOR: Duration = Duration::from_secs(20);

#[derive(Debug, Default)]
struct Tally {
    callbacks: u64,
    bytes: u64,
    /// `peek` calls, and those that returned data.
    peeks: u64,
    data_peeks: u64,
    overruns: u64,
    overrun_bytes: u64,
    gaps: u64,
    gap_bytes: u64,
    errors: u64,
    /// The first error `peek` returned.
    first_error: Option<String>,
    /// Time inside the peek loops (one clock pair per callback).
    peek_time: Duration,
    /// The size of every data chunk, in order, and where each callback's group of chunks ends.
    chunks: Vec<u32>,
    group_ends: Vec<u32>,
}

fn attach(control: &Path, name: &str) -> Result<Mos> {
    let opts = AttachOptions {
        control: control.to_path_buf(),
        name: name.into(),
        packets: false,
        ..AttachOptions::default()
    };
    let deadline = Instant::now() + ATTACH_FOR;
    loop {
        match Mos::attach(&opts) {
            Ok(m) => return Ok(m),
            Err(e)
                if matches!(e.errno(), Errno::ENOENT | Errno::ECONNREFUSED)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => bail!("cannot attach at {}: {e}", control.display()),
        }
    }
}

fn main() -> Result<()> {
    let mut control = None;
    let mut name = "peek-sink".to_string();
    let mut syn_filter = None;
    let mut events_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--control" => control = Some(PathBuf::from(args.next().context(USAGE)?)),
            "--name" => name = args.next().context(USAGE)?,
            "--filter" => syn_filter = Some(args.next().context(USAGE)?),
            "--events-only" => events_only = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    let control = control.context(USAGE)?;
    let mut mos = attach(&control, &name)?;
    let sock = mos.socket()?;
    if let Some(expr) = syn_filter.as_deref() {
        mos.bind_monitor_filter(
            sock,
            &MonitorFilter {
                stream_syn_filter: Some(expr),
                ..MonitorFilter::default()
            },
        )
        .with_context(|| format!("the SYN filter {expr:?}"))?;
    }
    let tally = Rc::new(RefCell::new(Tally {
        chunks: Vec::with_capacity(1 << 20),
        group_ends: Vec::with_capacity(1 << 20),
        ..Tally::default()
    }));
    for side in [Side::Cli, Side::Svr] {
        let tally = tally.clone();
        let mut scratch = vec![0u8; SCRATCH];
        let filter = Filter {
            events: EventMask::CONN_NEW_DATA,
            hook: None,
            side: Some(side),
        };
        mos.register_filtered(sock, filter, move |ctx, ev| {
            let (Some(flow), Some(side)) = (ev.flow, ev.side) else {
                return;
            };
            let mut t = tally.borrow_mut();
            t.callbacks += 1;
            if events_only {
                return;
            }
            let start = Instant::now();
            loop {
                let r = ctx.peek(sock, flow, side, &mut scratch);
                t.peeks += 1;
                match r {
                    Ok(Peek::Data(n)) => {
                        t.data_peeks += 1;
                        t.bytes += n as u64;
                        t.chunks.push(n as u32);
                    }
                    Ok(Peek::NoData) => break,
                    Ok(Peek::Overrun { lost }) => {
                        t.overruns += 1;
                        t.overrun_bytes += lost;
                    }
                    Ok(Peek::Gap { len, .. }) => {
                        t.gaps += 1;
                        t.gap_bytes += len;
                    }
                    Err(e) => {
                        t.errors += 1;
                        if t.first_error.is_none() {
                            t.first_error = Some(e.to_string());
                        }
                        break;
                    }
                }
            }
            t.peek_time += start.elapsed();
            black_box(&scratch);
            let end = t.chunks.len() as u32;
            t.group_ends.push(end);
        })?;
    }
    let end = mos.run()?;
    if end != RunEnd::Done {
        bail!("the run ended with {end:?}, not Done");
    }
    let c = mos.counters();
    let t = tally.borrow();
    let (grouped, flat) = memcpy_baseline(&t.chunks, &t.group_ends);
    let mut sizes = t.chunks.clone();
    sizes.sort_unstable();
    let pct = |p: usize| sizes.get(sizes.len().saturating_sub(1) * p / 100).copied();
    let mean = if sizes.is_empty() {
        0.0
    } else {
        t.bytes as f64 / sizes.len() as f64
    };
    println!(
        "{}",
        serde_json::json!({
            "name": name,
            "filter": syn_filter,
            "events_only": events_only,
            "events": c.events,
            "callbacks": t.callbacks,
            "events_dropped": c.events_dropped,
            "events_malformed": c.events_malformed,
            "bytes": t.bytes,
            "peeks": t.peeks,
            "data_peeks": t.data_peeks,
            "overruns": t.overruns,
            "overrun_bytes": t.overrun_bytes,
            "gaps": t.gaps,
            "gap_bytes": t.gap_bytes,
            "torn_copies": c.torn_copies,
            "errors": t.errors,
            "first_error": t.first_error,
            "peek_ns": t.peek_time.as_nanos() as u64,
            "memcpy_grouped_ns": grouped.as_nanos() as u64,
            "memcpy_flat_ns": flat.as_nanos() as u64,
            "chunk_mean": mean,
            "chunk_p50": pct(50),
            "chunk_p90": pct(90),
            "chunk_max": sizes.last(),
        })
    );
    Ok(())
}

/// `memcpy` of the same chunk sizes, in order, from a 256 KiB source (read sequentially,
/// wrapping) into the 64 KiB scratch buffer: timed with one clock pair per group, as the
/// peeks were, and as one flat loop.
fn memcpy_baseline(chunks: &[u32], group_ends: &[u32]) -> (Duration, Duration) {
    let src: Vec<u8> = (0..SOURCE).map(|i| (i * 131 + 7) as u8).collect();
    let mut scratch = vec![0u8; SCRATCH];
    let mut pos = 0usize;
    let mut copy = |n: usize, scratch: &mut [u8]| {
        let n = n.min(SCRATCH);
        if pos + n > SOURCE {
            pos = 0;
        }
        scratch[..n].copy_from_slice(&src[pos..pos + n]);
        pos += n;
        black_box(&mut *scratch);
    };
    // One untimed pass, so the source and the scratch buffer are in cache as the sink's were
    // in its steady state.
    for &n in chunks.iter().take(4096) {
        copy(n as usize, &mut scratch);
    }
    let mut grouped = Duration::ZERO;
    let mut from = 0usize;
    for &end in group_ends {
        let start = Instant::now();
        for &n in &chunks[from..end as usize] {
            copy(n as usize, &mut scratch);
        }
        grouped += start.elapsed();
        from = end as usize;
    }
    let start = Instant::now();
    for &n in chunks {
        copy(n as usize, &mut scratch);
    }
    let flat = start.elapsed();
    black_box(&scratch);
    (grouped, flat)
}

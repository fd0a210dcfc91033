//! `pub-bench`: the sensor with publication, as a process, against `memcpy` in the same run.
//!
//! For each capture it runs the release `mos-sensor` N times in each of three modes, alternating
//! the modes so that noise from other tenants hits all of them alike:
//! - `nopub`: `--no-publish` (no shared memory, no control socket);
//! - `pub0`: publishing, with no analyzer attached;
//! - `pub2`: publishing to two `peek-sink` analyzers (`--wait-analyzers 2`), each of which
//!   registers `CONN_NEW_DATA` on both sides and peeks every byte.
//!
//! The sensor's time is its own `replay_s` (its `stats` line): from the start of the replay,
//! after the analyzers are ready, to the end of the lossless drain. After each round the
//! driver copies the capture's TCP payload (every segment's, in capture order) with `memcpy`
//! into a 256 KiB buffer, as `core-bench` does. Every run is checked: no event dropped, no
//! byte overwritten before an analyzer read it, every analyzer got the same bytes, and the
//! analyzers' bytes plus the capture's own gaps make up every stream byte; a run that fails
//! a check fails the benchmark.
//!
//! With `--idle SMALL BIG` it measures memory per idle connection instead: the sensor's
//! `RssAnon` and `RssShmem` when the input ended, on two `mkpcap idle` captures of different
//! sizes, with and without publication; the growth divided by the extra connections.
//!
//! usage: pub-bench [--runs N] [--modes nopub,pub0,pub2] CAPTURE...
//!        pub-bench --idle SMALL.pcap BIG.pcap

use anyhow::{bail, ensure, Context, Result};
use mos_sensor::flow::{Endpoint, FlowKey};
use mos_sensor::tcp::conn::{Conn, Stack};
use mos_sensor::tcp::reassembly::Stream;
use mos_tests::bench::{gbps, med_min_max, mpps, payload_segments, run_memcpy, SCRATCH};
use mos_tests::locate;
use mos_tests::synth::{expected_path, read_expected};
use serde_json::Value;
use shm_layout::layout::FlowSlot;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const USAGE: &str =
    "usage: pub-bench [--runs N (default 5)] [--modes nopub,pub0,pub2] CAPTURE...\n       \
                     pub-bench [--runs N (default 3)] --idle SMALL.pcap BIG.pcap";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    NoPub,
    Pub0,
    Pub2,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::NoPub => "nopub",
            Mode::Pub0 => "pub0",
            Mode::Pub2 => "pub2",
        }
    }

    fn parse(s: &str) -> Result<Mode> {
        Ok(match s {
            "nopub" => Mode::NoPub,
            "pub0" => Mode::Pub0,
            "pub2" => Mode::Pub2,
            _ => bail!("unknown mode {s:?} (nopub, pub0, pub2)"),
        })
    }

    fn analyzers(self) -> usize {
        if self == Mode::Pub2 {
            2
        } else {
            0
        }
    }
}

/// The sensor's `stats` line.
#[derive(Clone, Debug, Default)]
struct SensorStats {
    replay_s: f64,
    frames: u64,
    conns: u64,
    payload_bytes: u64,
    gap_bytes: u64,
    overflow_bytes: u64,
    events: u64,
    events_dropped: u64,
    waits: u64,
    rss_anon_kib: u64,
    rss_shmem_kib: u64,
}

fn parse_stats(stderr: &str) -> Result<SensorStats> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("mos-sensor: stats "))
        .context("the sensor printed no stats line")?;
    let kv: BTreeMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    let u = |k: &str| -> Result<u64> {
        kv.get(k)
            .with_context(|| format!("stats line without {k}: {line}"))?
            .parse()
            .with_context(|| format!("stats {k}"))
    };
    Ok(SensorStats {
        replay_s: kv
            .get("replay_s")
            .context("stats line without replay_s")?
            .parse()?,
        frames: u("frames")?,
        conns: u("conns")?,
        payload_bytes: u("payload_bytes")?,
        gap_bytes: u("gap_bytes")?,
        overflow_bytes: u("overflow_bytes")?,
        events: u("events")?,
        events_dropped: u("events_dropped")?,
        waits: u("waits")?,
        rss_anon_kib: u("rss_anon_kib")?,
        rss_shmem_kib: u("rss_shmem_kib")?,
    })
}

/// One sensor run in one mode: its stats and the analyzers' JSON lines.
#[derive(Debug)]
struct Run {
    sensor: SensorStats,
    sinks: Vec<Value>,
}

struct Bins {
    sensor: PathBuf,
    sink: PathBuf,
    tmp: PathBuf,
}

fn run_sensor(bins: &Bins, pcap: &Path, mode: Mode, tag: &str) -> Result<Run> {
    let control = bins.tmp.join(format!("{tag}.sock"));
    let mut cmd = Command::new(&bins.sensor);
    cmd.arg("--pcap").arg(pcap);
    match mode {
        Mode::NoPub => {
            cmd.arg("--no-publish");
        }
        _ => {
            cmd.arg("--control").arg(&control);
        }
    }
    let n = mode.analyzers();
    if n > 0 {
        cmd.arg("--wait-analyzers").arg(n.to_string());
    }
    let sensor = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bins.sensor.display()))?;
    let mut sinks = Vec::new();
    for i in 0..n {
        sinks.push(
            Command::new(&bins.sink)
                .arg("--control")
                .arg(&control)
                .arg("--name")
                .arg(format!("peek-sink-{i}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", bins.sink.display()))?,
        );
    }
    let out = sensor.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut values = Vec::new();
    let mut sink_errors = Vec::new();
    for s in sinks {
        let o = s.wait_with_output()?;
        let text = String::from_utf8_lossy(&o.stdout);
        match (o.status.success(), text.lines().last()) {
            (true, Some(l)) => values.push(serde_json::from_str(l).context("peek-sink JSON")?),
            _ => sink_errors.push(format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        }
    }
    ensure!(
        out.status.success(),
        "{tag}: the sensor failed ({}):\n{stderr}",
        out.status
    );
    ensure!(
        sink_errors.is_empty(),
        "{tag}: peek-sink failed: {}",
        sink_errors.join("; ")
    );
    Ok(Run {
        sensor: parse_stats(&stderr).with_context(|| format!("{tag}:\n{stderr}"))?,
        sinks: values,
    })
}

fn field(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX)
}

/// The losslessness checks of one run; `reference` is the first `nopub` run of the capture,
/// `expected_bytes` what its streams hold (from `mkpcap`'s `.expected.tsv`, or the first
/// analyzer run's count).
fn check(
    tag: &str,
    mode: Mode,
    r: &Run,
    reference: &SensorStats,
    expected_bytes: Option<u64>,
) -> Result<()> {
    let s = &r.sensor;
    ensure!(
        s.frames == reference.frames
            && s.payload_bytes == reference.payload_bytes
            && s.gap_bytes == reference.gap_bytes,
        "{tag}: the sensor saw another capture ({s:?} against {reference:?})"
    );
    // Bytes that never fit a ring (out-of-order data past a hole wider than the ring) are a
    // property of the capture and the ring size, the same without publication; publishing
    // must not add any.
    ensure!(
        s.overflow_bytes == reference.overflow_bytes,
        "{tag}: {} bytes lost to ring overflow, {} without publication",
        s.overflow_bytes,
        reference.overflow_bytes
    );
    ensure!(
        s.events_dropped == 0,
        "{tag}: the sensor dropped {} events",
        s.events_dropped
    );
    ensure!(
        r.sinks.len() == mode.analyzers(),
        "{tag}: {} analyzer reports",
        r.sinks.len()
    );
    for v in &r.sinks {
        for k in [
            "events_dropped",
            "events_malformed",
            "overruns",
            "overrun_bytes",
            "torn_copies",
            "errors",
        ] {
            ensure!(
                field(v, k) == 0,
                "{tag}: analyzer {k} = {}: {v}",
                field(v, k)
            );
        }
        // Every stream byte reached the analyzer as data, except the bytes the sensor
        // itself never held (the capture's gaps and the ring overflow above), which it was
        // told of as gaps.
        ensure!(
            field(v, "gap_bytes") == s.gap_bytes + s.overflow_bytes,
            "{tag}: analyzer skipped {} bytes as gaps, the sensor lacked {}: {v}",
            field(v, "gap_bytes"),
            s.gap_bytes + s.overflow_bytes
        );
        if let Some(want) = expected_bytes {
            ensure!(
                field(v, "bytes") == want,
                "{tag}: analyzer read {} bytes, the capture's streams hold {want}",
                field(v, "bytes")
            );
        }
        ensure!(
            field(v, "bytes") == field(&r.sinks[0], "bytes"),
            "{tag}: the analyzers read different byte counts"
        );
        ensure!(
            field(v, "events") <= s.events,
            "{tag}: analyzer saw more events than published"
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut runs = None;
    let mut modes = vec![Mode::NoPub, Mode::Pub0, Mode::Pub2];
    let mut idle = false;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = Some(args.next().context(USAGE)?.parse::<usize>()?),
            "--modes" => {
                modes = args
                    .next()
                    .context(USAGE)?
                    .split(',')
                    .map(Mode::parse)
                    .collect::<Result<_>>()?
            }
            "--idle" => idle = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown argument {s:?}\n{USAGE}"),
            _ => files.push(PathBuf::from(a)),
        }
    }
    let tmp = std::env::temp_dir().join(format!("pub-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let bins = Bins {
        sensor: locate::bin("mos-sensor")?,
        sink: locate::bin("peek-sink")?,
        tmp: tmp.clone(),
    };
    let r = if idle {
        ensure!(files.len() == 2, "{USAGE}");
        idle_memory(&bins, &files[0], &files[1], runs.unwrap_or(3))
    } else {
        ensure!(!files.is_empty() && !modes.is_empty(), "{USAGE}");
        throughput(&bins, &files, &modes, runs.unwrap_or(5))
    };
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

fn throughput(bins: &Bins, files: &[PathBuf], modes: &[Mode], runs: usize) -> Result<()> {
    ensure!(runs > 0, "--runs must be at least 1");
    println!(
        "# pub-bench: runs={runs}, modes {}, sensor {}, analyzers peek-sink; unpinned, \
         {} CPUs online",
        modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(","),
        bins.sensor.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut table = Vec::new();
    let mut peek_rows = Vec::new();
    for path in files {
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let segments = payload_segments(&name, &bytes, true)?;
        let payload: u64 = segments.iter().map(|&(_, l)| l as u64).sum();
        let mut scratch = vec![0u8; SCRATCH];
        // Untimed warm-up: the capture in the page cache, the binaries loaded.
        let reference = run_sensor(bins, path, Mode::NoPub, &format!("{name}-warm"))?.sensor;
        run_memcpy(&bytes, &segments, &mut scratch);
        let exp = expected_path(path);
        let mut expected_bytes = if exp.is_file() {
            Some(read_expected(&exp)?.iter().map(|d| d.bytes).sum::<u64>())
        } else {
            None
        };
        let mut times: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
        let mut memcpy = Vec::new();
        let mut sinks: Vec<Value> = Vec::new();
        let mut waits = Vec::new();
        for i in 0..runs {
            for k in 0..modes.len() {
                let mode = modes[(i + k) % modes.len()];
                let tag = format!("{name}-{}-{i}", mode.name());
                let r = run_sensor(bins, path, mode, &tag)?;
                check(&tag, mode, &r, &reference, expected_bytes)?;
                if expected_bytes.is_none() {
                    expected_bytes = r.sinks.first().map(|v| field(v, "bytes"));
                }
                println!(
                    "raw {tag}: {:.3} ms ({:.3} Mpps, {:.3} Gbit/s), {} events, {} waits{}",
                    r.sensor.replay_s * 1e3,
                    r.sensor.frames as f64 / r.sensor.replay_s / 1e6,
                    payload as f64 * 8.0 / r.sensor.replay_s / 1e9,
                    r.sensor.events,
                    r.sensor.waits,
                    r.sinks
                        .iter()
                        .map(|v| format!(
                            "; sink {} B in {} callbacks, peek {:.3} ms, memcpy {:.3} ms",
                            field(v, "bytes"),
                            field(v, "callbacks"),
                            field(v, "peek_ns") as f64 / 1e6,
                            field(v, "memcpy_grouped_ns") as f64 / 1e6
                        ))
                        .collect::<String>()
                );
                if mode == Mode::Pub2 {
                    waits.push(r.sensor.waits as f64);
                    sinks.extend(r.sinks);
                }
                times.entry(mode).or_default().push(r.sensor.replay_s);
            }
            let m = run_memcpy(&bytes, &segments, &mut scratch);
            println!(
                "raw {name} run {i}: memcpy {:.3} ms ({:.3} Gbit/s)",
                m.as_secs_f64() * 1e3,
                gbps(payload, m)
            );
            memcpy.push(gbps(payload, m));
        }
        let (mm, _, _) = med_min_max(&memcpy);
        for (&mode, ts) in &times {
            let pps: Vec<f64> = ts
                .iter()
                .map(|&t| mpps(reference.frames, Duration::from_secs_f64(t)))
                .collect();
            let gb: Vec<f64> = ts
                .iter()
                .map(|&t| gbps(payload, Duration::from_secs_f64(t)))
                .collect();
            let (pm, plo, phi) = med_min_max(&pps);
            let (gm, glo, ghi) = med_min_max(&gb);
            let vs_nopub = times
                .get(&Mode::NoPub)
                .map(|n| {
                    let (nm, _, _) = med_min_max(n);
                    let (me, _, _) = med_min_max(ts);
                    format!("{:.2}", nm / me)
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "summary {name} {}: frames={} payload_bytes={payload} mpps_med={pm:.4} \
                 gbps_med={gm:.4} memcpy_gbps_med={mm:.4} ratio={:.4}",
                mode.name(),
                reference.frames,
                gm / mm
            );
            table.push(format!(
                "| {name} | {} | {pm:.2} ({plo:.2}-{phi:.2}) | {gm:.2} ({glo:.2}-{ghi:.2}) | {mm:.1} | {:.1} % | {vs_nopub} |",
                mode.name(),
                100.0 * gm / mm
            ));
        }
        if !sinks.is_empty() {
            let f = |k: &str| -> Vec<f64> { sinks.iter().map(|v| field(v, k) as f64).collect() };
            let bytes: Vec<f64> = f("bytes");
            let peek: Vec<f64> = bytes
                .iter()
                .zip(f("peek_ns"))
                .map(|(b, ns)| b * 8.0 / ns)
                .collect();
            let mc: Vec<f64> = bytes
                .iter()
                .zip(f("memcpy_grouped_ns"))
                .map(|(b, ns)| b * 8.0 / ns)
                .collect();
            let flat: Vec<f64> = bytes
                .iter()
                .zip(f("memcpy_flat_ns"))
                .map(|(b, ns)| b * 8.0 / ns)
                .collect();
            let paired: Vec<f64> = peek.iter().zip(&mc).map(|(p, m)| p / m).collect();
            let (pk, pklo, pkhi) = med_min_max(&peek);
            let (m, _, _) = med_min_max(&mc);
            let (fl, _, _) = med_min_max(&flat);
            let (pr, _, _) = med_min_max(&paired);
            let (w, _, _) = med_min_max(&waits);
            let v = &sinks[0];
            println!(
                "summary {name} peek: sink_bytes={} callbacks={} data_peeks={} chunk_mean={:.0} \
                 chunk_p50={} peek_gbps_med={pk:.3} memcpy_same_chunks_gbps_med={m:.3} \
                 memcpy_flat_gbps_med={fl:.3} median_paired_ratio={pr:.4} sensor_waits_med={w}",
                field(v, "bytes"),
                field(v, "callbacks"),
                field(v, "data_peeks"),
                v.get("chunk_mean").and_then(Value::as_f64).unwrap_or(0.0),
                field(v, "chunk_p50"),
            );
            peek_rows.push(format!(
                "| {name} | {:.1} MB | {} | {:.0} B ({}) | {pk:.2} ({pklo:.2}-{pkhi:.2}) | {m:.1} | {:.1} % |",
                field(v, "bytes") as f64 / 1e6,
                field(v, "data_peeks"),
                v.get("chunk_mean").and_then(Value::as_f64).unwrap_or(0.0),
                field(v, "chunk_p50"),
                100.0 * pr
            ));
        }
    }
    println!();
    println!(
        "| capture | mode | Mpps med (min-max) | payload Gbit/s med (min-max) | memcpy Gbit/s med | sensor/memcpy | speed vs nopub |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &table {
        println!("{r}");
    }
    if !peek_rows.is_empty() {
        println!();
        println!(
            "| capture | bytes per sink | data peeks | chunk mean (median) | peek Gbit/s med (min-max) | memcpy same chunks Gbit/s med | peek/memcpy (median of paired) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in &peek_rows {
            println!("{r}");
        }
    }
    Ok(())
}

fn idle_memory(bins: &Bins, small: &Path, big: &Path, runs: usize) -> Result<()> {
    ensure!(runs > 0, "--runs must be at least 1");
    println!("# pub-bench --idle: runs={runs}; RssAnon and RssShmem when the input ended");
    let mut rows = Vec::new();
    for mode in [Mode::NoPub, Mode::Pub0] {
        let mut at = Vec::new();
        for path in [small, big] {
            let mut anon = Vec::new();
            let mut shmem = Vec::new();
            let mut conns = 0;
            for i in 0..runs {
                let tag = format!("idle-{}-{i}", mode.name());
                let r = run_sensor(bins, path, mode, &tag)?;
                println!(
                    "raw {} {}: {} conns, RssAnon {} KiB, RssShmem {} KiB",
                    path.display(),
                    mode.name(),
                    r.sensor.conns,
                    r.sensor.rss_anon_kib,
                    r.sensor.rss_shmem_kib
                );
                conns = r.sensor.conns;
                anon.push(r.sensor.rss_anon_kib as f64);
                shmem.push(r.sensor.rss_shmem_kib as f64);
            }
            at.push((conns, med_min_max(&anon).0, med_min_max(&shmem).0));
        }
        let (c0, a0, s0) = at[0];
        let (c1, a1, s1) = at[1];
        ensure!(c1 > c0, "the second capture must hold more connections");
        let per = |x0: f64, x1: f64| (x1 - x0) * 1024.0 / (c1 - c0) as f64;
        let (pa, ps) = (per(a0, a1), per(s0, s1));
        println!(
            "summary idle {}: conns {c0} -> {c1}, RssAnon {a0} -> {a1} KiB, RssShmem {s0} -> {s1} KiB; \
             per idle connection: private {pa:.1} B + shared {ps:.1} B = {:.1} B",
            mode.name(),
            pa + ps
        );
        rows.push(format!(
            "| {} | {c0} -> {c1} | {pa:.0} B | {ps:.0} B | {:.0} B |",
            mode.name(),
            pa + ps
        ));
    }
    println!();
    println!("| mode | idle connections | private (RssAnon) per flow | shared (RssShmem) per flow | total |");
    println!("|---|---|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!(
        "static sizes: Conn {} B (2 endpoints {} B, 2 stacks of {} B each holding a {} B stream, \
         times, serial, flags), flow-table slot {} B (key {} B + Option<Conn> + last_ns, links, \
         generation, live), index entry 8 B at load 1/4-1/2 (16-32 B per flow), FlowSlot {} B",
        std::mem::size_of::<Conn>(),
        std::mem::size_of::<[Endpoint; 2]>(),
        std::mem::size_of::<Stack>(),
        std::mem::size_of::<Stream>(),
        std::mem::size_of::<(FlowKey, Option<Conn>, u64, u32, u32, u32, bool)>(),
        std::mem::size_of::<FlowKey>(),
        std::mem::size_of::<FlowSlot>(),
    );
    Ok(())
}
